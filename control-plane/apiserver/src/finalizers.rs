//! Deletion through finalizers, as kube-apiserver does it: `propagationPolicy: Foreground`
//! and `Orphan` add the `foregroundDeletion` / `orphan` finalizer (the garbage collector
//! removes it once the dependents are deleted or orphaned), Namespaces carry the `kubernetes`
//! finalizer in `spec.finalizers` (the namespace controller removes it through
//! `namespaces/<name>/finalize` once the namespace is empty), and a terminating object whose
//! last finalizer is removed, with no grace period left, is deleted by that update.

use keelson_store::Store;
use serde_json::{Value, json};

use crate::{
    ApiError,
    object::{meta_str, metadata_mut},
    registry::Resource,
};

/// `metadata.finalizers` entry of a foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";
/// `metadata.finalizers` entry of an orphaning deletion.
pub const ORPHAN: &str = "orphan";

/// `DeleteOptions.propagationPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Propagation {
    /// Delete now; the garbage collector deletes the dependents afterwards (the default).
    Background,
    /// Delete the dependents first, then the object.
    Foreground,
    /// Keep the dependents, without the owner reference.
    Orphan,
}

/// The propagation policy from the query (`propagationPolicy`, `orphanDependents`) and the
/// `DeleteOptions` body; `None` when not given.
pub(crate) fn propagation(
    query: Option<&str>,
    body: Option<&Value>,
) -> Result<Option<Propagation>, ApiError> {
    let policy = query
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .or_else(|| {
            body.and_then(|b| b.get("propagationPolicy")?.as_str())
                .map(str::to_owned)
        });
    let orphan = body.and_then(|b| b.get("orphanDependents")?.as_bool());
    match (policy.as_deref(), orphan) {
        (Some("Background"), _) => Ok(Some(Propagation::Background)),
        (Some("Foreground"), _) => Ok(Some(Propagation::Foreground)),
        (Some("Orphan"), _) | (None, Some(true)) => Ok(Some(Propagation::Orphan)),
        (None, _) => Ok(None),
        (Some(other), _) => Err(ApiError::bad_request(format!(
            "propagationPolicy: Unsupported value: \"{other}\": supported values: \
             \"Foreground\", \"Background\", \"Orphan\""
        ))),
    }
}

fn finalizers(object: &Value) -> Vec<&str> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| f.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// On a delete: adds the finalizer `propagation` asks for (nothing for Background).
pub(crate) fn on_delete(object: &mut Value, propagation: Option<Propagation>) {
    let finalizer = match propagation {
        Some(Propagation::Foreground) => FOREGROUND,
        Some(Propagation::Orphan) => ORPHAN,
        _ => return,
    };
    if finalizers(object).contains(&finalizer) {
        return;
    }
    if let Some(meta) = metadata_mut(object) {
        let list = meta.entry("finalizers").or_insert_with(|| json!([]));
        if let Some(list) = list.as_array_mut() {
            list.push(json!(finalizer));
        } else {
            *list = json!([finalizer]);
        }
    }
}

/// On a create: Namespaces get `spec.finalizers: ["kubernetes"]`.
pub(crate) fn on_create(resource: &Resource, object: &mut Value) {
    if resource.kind != "Namespace" {
        return;
    }
    if let Some(root) = object.as_object_mut() {
        let spec = root.entry("spec").or_insert_with(|| json!({}));
        if let Some(spec) = spec.as_object_mut() {
            spec.entry("finalizers")
                .or_insert_with(|| json!(["kubernetes"]));
        }
    }
}

/// Whether a stored object is terminating with nothing left to wait for.
fn finalized(object: &Value) -> bool {
    let spec_finalizers = object
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    meta_str(object, "deletionTimestamp").is_some()
        && finalizers(object).is_empty()
        && !spec_finalizers
        && object
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0)
            == 0
}

/// After an update was written: deletes the object when it is [`finalized`]. Returns whether
/// it did.
pub(crate) async fn finish(
    store: &dyn Store,
    resource: &Resource,
    key: &str,
    stored: &Value,
) -> Result<bool, ApiError> {
    if !finalized(stored) {
        return Ok(false);
    }
    let name = meta_str(stored, "name").unwrap_or_default();
    let revision = crate::object::requested_revision(stored, resource, name)?;
    match store.delete(key, revision).await {
        Ok(_) => {
            tracing::debug!(name, "finalized and deleted");
            crate::allocator::release(store, resource, stored, None).await;
            Ok(true)
        }
        // Changed again (the next writer finishes it) or gone already.
        Err(
            keelson_store::StoreError::Conflict { .. } | keelson_store::StoreError::NotFound { .. },
        ) => Ok(false),
        Err(e) => Err(ApiError::from_store(e, resource, name)),
    }
}

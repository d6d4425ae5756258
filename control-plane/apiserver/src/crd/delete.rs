//! Deleting a CustomResourceDefinition deletes its objects first, as kube's
//! `customresourcecleanup.apiextensions.k8s.io` finalizer does: the DELETE marks the CRD
//! (deletion timestamp, the finalizer, condition `Terminating`), a background task deletes
//! every custom resource (waiting for their own finalizers), then drops the finalizer and the
//! CRD goes.

use std::{sync::Arc, time::Duration};

use keelson_store::{ListOptions, Store, StoreError};
use serde_json::{Value, json};

use super::Registry;
use crate::{
    ApiError,
    handlers::Written,
    object::{decode_kv, encode, meta_str, metadata_mut, now_rfc3339},
    read::get_kv,
    request::{Params, Selectors, Target},
};

/// The finalizer that holds a CRD until its objects are gone.
pub(crate) const CLEANUP_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";

/// How often the cleanup looks again while custom resources wait for their finalizers.
const CLEANUP_INTERVAL: Duration = Duration::from_millis(500);
/// How many times it looks before giving up (the next DELETE of the CRD starts it again).
const CLEANUP_ROUNDS: u32 = 600;
/// Read-modify-write attempts when the CRD changes underneath.
const ATTEMPTS: u32 = 5;

fn set_condition(crd: &mut Value, status: &str, reason: &str, message: &str) {
    let Some(root) = crd.as_object_mut() else {
        return;
    };
    let status_field = root.entry("status").or_insert_with(|| json!({}));
    let Some(status_map) = status_field.as_object_mut() else {
        return;
    };
    let conditions = status_map.entry("conditions").or_insert_with(|| json!([]));
    let Some(list) = conditions.as_array_mut() else {
        return;
    };
    let condition = json!({
        "type": "Terminating",
        "status": status,
        "lastTransitionTime": now_rfc3339(0),
        "reason": reason,
        "message": message,
    });
    match list.iter_mut().find(|c| c["type"] == "Terminating") {
        Some(slot) => *slot = condition,
        None => list.push(condition),
    }
}

/// `DELETE` of one CRD (see the module documentation).
pub(crate) async fn delete(
    store: &Arc<dyn Store>,
    registry: &Arc<Registry>,
    target: &Target,
    name: &str,
    dry_run: bool,
) -> Result<Written, ApiError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let kv = get_kv(store.as_ref(), target, name).await?;
        let mut crd = decode_kv(&kv)?;
        if meta_str(&crd, "deletionTimestamp").is_some() {
            if !dry_run {
                spawn_cleanup(store, registry, target.key(name));
            }
            return Ok(Written::ok(crd));
        }
        if let Some(meta) = metadata_mut(&mut crd) {
            meta.insert("deletionTimestamp".into(), json!(now_rfc3339(0)));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            let finalizers = meta.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(list) = finalizers.as_array_mut()
                && !list.iter().any(|f| f == CLEANUP_FINALIZER)
            {
                list.push(json!(CLEANUP_FINALIZER));
            }
        }
        set_condition(
            &mut crd,
            "True",
            "InstanceDeletionPending",
            "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
        );
        if dry_run {
            return Ok(Written::ok(crd));
        }
        match store
            .update(&target.key(name), encode(&crd), kv.mod_revision)
            .await
        {
            Ok(revision) => {
                crate::object::set_resource_version(&mut crd, revision);
                spawn_cleanup(store, registry, target.key(name));
                return Ok(Written::ok(crd));
            }
            Err(StoreError::Conflict { .. }) if attempt < ATTEMPTS => {}
            Err(e) => return Err(ApiError::from_store(e, target.resource, name)),
        }
    }
}

/// `DELETE` of the CRD collection: each selected CRD as [`delete`] deletes it.
pub(crate) async fn delete_collection(
    store: &Arc<dyn Store>,
    registry: &Arc<Registry>,
    target: &Target,
    params: &Params,
    dry_run: bool,
) -> Result<Written, ApiError> {
    let selectors = Selectors::parse(target.resource, params, None)?;
    let listed = store
        .list(&target.prefix(), ListOptions::default())
        .await
        .map_err(|e| ApiError::from_store(e, target.resource, ""))?;
    let mut items = Vec::new();
    for kv in &listed.items {
        let crd = decode_kv(kv)?;
        if !selectors.matches(&crd) {
            continue;
        }
        let name = meta_str(&crd, "name").unwrap_or_default().to_owned();
        match delete(store, registry, target, &name, dry_run).await {
            Ok(written) => items.push(written.body),
            Err(e) if e.reason == "NotFound" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Written::ok(json!({
        "kind": "CustomResourceDefinitionList",
        "apiVersion": target.resource.api_version(),
        "metadata": {"resourceVersion": listed.revision.to_string()},
        "items": items,
    })))
}

fn spawn_cleanup(store: &Arc<dyn Store>, registry: &Arc<Registry>, key: String) {
    let (store, registry) = (Arc::clone(store), Arc::clone(registry));
    tokio::spawn(async move {
        if let Err(e) = cleanup(store.as_ref(), &registry, &key).await {
            tracing::warn!(key, error = %e.message, "CustomResourceDefinition cleanup");
        }
        if let Err(e) = registry.rebuild(store.as_ref()).await {
            tracing::warn!(error = %e.message, "rebuilding the custom resource registry");
        }
    });
}

/// Reads the CRD at `key`, changes it with `change` and writes it back, retrying conflicts.
/// `None` when it is gone.
async fn modify(
    store: &dyn Store,
    key: &str,
    change: impl Fn(&mut Value),
) -> Result<Option<Value>, ApiError> {
    let definitions = super::definitions()?;
    for _ in 0..ATTEMPTS {
        let Some(kv) = store
            .get(key, None)
            .await
            .map_err(|e| ApiError::from_store(e, definitions, ""))?
        else {
            return Ok(None);
        };
        let mut crd = decode_kv(&kv)?;
        change(&mut crd);
        match store.update(key, encode(&crd), kv.mod_revision).await {
            Ok(revision) => {
                crate::object::set_resource_version(&mut crd, revision);
                return Ok(Some(crd));
            }
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(ApiError::from_store(e, definitions, "")),
        }
    }
    Err(ApiError::conflict(definitions, key))
}

async fn cleanup(store: &dyn Store, registry: &Registry, key: &str) -> Result<(), ApiError> {
    // Stop serving creates first.
    registry.rebuild(store).await?;
    let Some(crd) = modify(store, key, |crd| {
        set_condition(
            crd,
            "True",
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress",
        );
    })
    .await?
    else {
        return Ok(());
    };
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .unwrap_or("");
    let plural = crd
        .pointer("/status/acceptedNames/plural")
        .or_else(|| crd.pointer("/spec/names/plural"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if !group.is_empty() && !plural.is_empty() {
        delete_instances(store, &format!("/registry/{group}/{plural}/")).await?;
    }
    let Some(crd) = modify(store, key, |crd| {
        set_condition(
            crd,
            "False",
            "InstanceDeletionCompleted",
            "removed all instances",
        );
        if let Some(list) = crd
            .pointer_mut("/metadata/finalizers")
            .and_then(Value::as_array_mut)
        {
            list.retain(|f| f != CLEANUP_FINALIZER);
        }
    })
    .await?
    else {
        return Ok(());
    };
    let done = crd
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    if done {
        let revision = meta_str(&crd, "resourceVersion").and_then(|rv| rv.parse().ok());
        match store.delete(key, revision).await {
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            // Changed meanwhile: its next writer's finalizer check deletes it.
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(ApiError::from_store(e, super::definitions()?, "")),
        }
    }
    Ok(())
}

/// Deletes every object under `prefix`: those without finalizers at once, the others marked
/// for deletion and waited for.
async fn delete_instances(store: &dyn Store, prefix: &str) -> Result<(), ApiError> {
    let definitions = super::definitions()?;
    for round in 0..CLEANUP_ROUNDS {
        if round > 0 {
            tokio::time::sleep(CLEANUP_INTERVAL).await;
        }
        let listed = store
            .list(prefix, ListOptions::default())
            .await
            .map_err(|e| ApiError::from_store(e, definitions, ""))?;
        if listed.items.is_empty() {
            return Ok(());
        }
        for kv in &listed.items {
            let mut object = decode_kv(kv)?;
            let has_finalizers = object
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|f| !f.is_empty());
            let result = if !has_finalizers {
                store
                    .delete(&kv.key, Some(kv.mod_revision))
                    .await
                    .map(|_| ())
            } else if meta_str(&object, "deletionTimestamp").is_none() {
                if let Some(meta) = metadata_mut(&mut object) {
                    meta.insert("deletionTimestamp".into(), json!(now_rfc3339(0)));
                    meta.insert("deletionGracePeriodSeconds".into(), json!(0));
                }
                store
                    .update(&kv.key, encode(&object), kv.mod_revision)
                    .await
                    .map(|_| ())
            } else {
                Ok(())
            };
            match result {
                Ok(()) | Err(StoreError::NotFound { .. } | StoreError::Conflict { .. }) => {}
                Err(e) => return Err(ApiError::from_store(e, definitions, "")),
            }
        }
    }
    Err(ApiError::service_unavailable(format!(
        "custom resources under {prefix} are still waiting for their finalizers"
    )))
}

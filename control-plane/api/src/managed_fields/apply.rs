//! Server-side apply: an applied configuration merged into the live object, with the field
//! ownership `metadata.managedFields` records, as structured-merge-diff's `Updater.Apply`
//! (`merge/update.go`, `typed/merge.go`, `typed/tofieldset.go`, `typed/remove.go`) and
//! kube-apiserver's field manager (`k8s.io/apimachinery/pkg/util/managedfields/internal`:
//! `fieldmanager.go`, `structuredmerge.go`, `conflict.go`, `stripmeta.go`,
//! `managedfieldsupdater.go`, `versioncheck.go`) do it:
//!
//! - the configuration's field set: every scalar, atomic value and list item it holds, keyed
//!   lists by their key fields, set lists by value; a struct field that holds an object is not
//!   a member itself (its members are), a Go map's keys are;
//! - the configuration is merged into the live object: objects member by member, keyed and
//!   set lists item by item (the live order kept, new items where the configuration puts
//!   them), atomic values replaced whole;
//! - what the manager applied last time and no longer applies is removed from the object,
//!   unless another manager owns it;
//! - the live object and the result are compared: a field added or changed that another
//!   manager owns is a conflict, and every conflict is reported at once; with `force` the
//!   fields are taken from those managers instead;
//! - the manager's `Apply` entry is replaced by the applied set, with a new time when the
//!   object changed; an apply that changes neither the object nor the ownership changes
//!   nothing.
//!
//! The walks over objects (field sets, merge, removal, path printing) are in `typed.rs`. Left
//! out: conversion between versions (each kind is served in one version).

use std::collections::HashSet;

use serde_json::{Value, json};

use super::compare::{compare, materialize};
use super::entries::{Entry, Managed, Who};
use super::fieldset::write_go_json;
use super::schema::SchemaRef;
use super::typed::{field_set, go_quote, merge, path_string, prune, without_subtrees};
use super::{MAX_UPDATE_MANAGERS, NEVER_OWNED, Update, reset_fields, without_managed_fields};

/// One server-side apply (`PATCH` with `application/apply-patch+yaml`).
#[derive(Debug, Clone, Copy)]
pub struct Apply<'a> {
    /// The field manager (`fieldManager`, required for apply).
    pub manager: &'a str,
    /// The apiVersion the endpoint serves, e.g. `apps/v1`; the configuration must be in it.
    pub api_version: &'a str,
    /// The kind the endpoint serves; the configuration must be of it.
    pub kind: &'a str,
    /// Now, RFC 3339 in seconds.
    pub time: &'a str,
    /// The subresource applied to (`status`), `None` for the main resource.
    pub subresource: Option<&'a str>,
    /// Whether the resource serves a `status` subresource.
    pub has_status: bool,
    /// `force=true`: take conflicting fields from their managers instead of failing.
    pub force: bool,
    /// The kind's schema: [`SchemaRef::builtin`] (or [`SchemaRef::of`]) for a built-in kind,
    /// the CRD version's compiled schema for a custom resource.
    pub schema: SchemaRef<'a>,
}

/// A field the configuration changes and another manager owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The other manager as kube-apiserver names it: `"a"` for an applier, `"kubectl-edit"
    /// using apps/v1` for an updater, `... with subresource "status"` for a subresource.
    pub manager: String,
    /// The field as structured-merge-diff prints paths: `.spec.replicas`,
    /// `.spec.containers[name="web"].image`.
    pub field: String,
}

/// Why an apply is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The configuration's apiVersion and kind are not those of the endpoint (a 400).
    #[error("invalid object type: {0}")]
    ObjectType(String),
    /// The configuration carries `metadata.managedFields` (a 400).
    #[error("metadata.managedFields must be nil")]
    ManagedFieldsSet,
    /// The configuration does not fit the kind's list types: a keyed item without its key,
    /// an item given twice.
    #[error("{0}")]
    Invalid(String),
    /// Fields owned by other managers would change (a 409 with one cause per conflict).
    #[error("{}", conflict_message(.0))]
    Conflicts(Vec<Conflict>),
}

/// kube-apiserver's message for a failed apply (`getConflictMessage`).
fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [only] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            only.manager, only.field
        );
    }
    let mut lines = Vec::new();
    let mut current: Option<&str> = None;
    for conflict in conflicts {
        if current != Some(conflict.manager.as_str()) {
            lines.push(format!("conflicts with {}:", conflict.manager));
            current = Some(&conflict.manager);
        }
        lines.push(format!("- {}", conflict.field));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// What kube-apiserver checks of a configuration before anything else
/// (`versioncheck.go`, then `structuredmerge.go`): it is of the endpoint's apiVersion and kind,
/// and carries no `metadata.managedFields` (`null` is none).
pub fn check_configuration(
    config: &Value,
    api_version: &str,
    kind: &str,
) -> Result<(), ApplyError> {
    let sent_version = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let sent_kind = config
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if sent_version != api_version || sent_kind != kind {
        return Err(ApplyError::ObjectType(group_version_kind(
            sent_version,
            sent_kind,
        )));
    }
    if config
        .pointer("/metadata/managedFields")
        .is_some_and(|m| !m.is_null())
    {
        return Err(ApplyError::ManagedFieldsSet);
    }
    Ok(())
}

/// Applies `config` to `live` (`None`: the object does not exist yet) and returns the object
/// to store, its `metadata.managedFields` updated. Defaults and validation are the caller's,
/// after this, as kube-apiserver runs them after the field manager.
///
/// For the manager `kubectl` two more rules hold, so that an object managed by client-side
/// `kubectl apply` moves to server-side apply smoothly (`lastappliedmanager.go`,
/// `lastappliedupdater.go`): conflicts over fields that the
/// `kubectl.kubernetes.io/last-applied-configuration` annotation holds with their live values
/// are not conflicts, and that annotation, when the object has it, is rewritten from the
/// configuration.
pub fn apply(live: Option<&Value>, config: &Value, apply: &Apply<'_>) -> Result<Value, ApplyError> {
    check_configuration(config, apply.api_version, apply.kind)?;
    let mut object = match apply_once(live, config, apply) {
        Err(ApplyError::Conflicts(conflicts)) if apply.manager == KUBECTL => {
            let allowed = live
                .and_then(|live| allowed_by_last_applied(live, apply))
                .unwrap_or_default();
            let left: Vec<Conflict> = conflicts
                .into_iter()
                .filter(|c| !allowed.contains(&c.field))
                .collect();
            if !left.is_empty() {
                return Err(ApplyError::Conflicts(left));
            }
            apply_once(
                live,
                config,
                &Apply {
                    force: true,
                    ..*apply
                },
            )?
        }
        result => result?,
    };
    if apply.manager == KUBECTL
        && let Some(Value::String(annotation)) = object.pointer_mut(LAST_APPLIED_POINTER)
        && !annotation.is_empty()
    {
        *annotation = last_applied(config);
    }
    Ok(object)
}

/// The manager whose applies keep client-side apply's annotation in step.
const KUBECTL: &str = "kubectl";
/// Client-side apply's record of the last configuration applied.
const LAST_APPLIED_POINTER: &str =
    "/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration";

/// The annotation's value for `config`: the configuration without the annotation, as Go's
/// encoder writes it, with its newline (`buildLastApplied`).
fn last_applied(config: &Value) -> String {
    let mut config = config.clone();
    if let Some(Value::Object(annotations)) = config.pointer_mut("/metadata/annotations") {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
    let mut out = String::new();
    write_go_json(&config, &mut out);
    out.push('\n');
    out
}

/// The fields (printed as in conflicts) of the live object's last-applied configuration whose
/// values are the live ones: client-side apply set them, so the `kubectl` manager may take
/// them over (`allowedConflictsFromLastApplied`). `None` without a usable annotation.
fn allowed_by_last_applied(live: &Value, apply: &Apply<'_>) -> Option<HashSet<String>> {
    let text = live.pointer(LAST_APPLIED_POINTER)?.as_str()?;
    let last: Value = serde_json::from_str(text).ok()?;
    if last.get("apiVersion").and_then(Value::as_str) != Some(apply.api_version) {
        return None;
    }
    let root = apply.schema;
    let fields = field_set(&last, root.shape, false).ok()?;
    let mut last = last;
    materialize(&mut last, root);
    let mut live = without_managed_fields(live);
    materialize(&mut live, root);
    let comparison = compare(Some(&last), Some(&live), root.shape, &[]);
    let allowed = fields
        .difference(&comparison.modified)
        .difference(&comparison.added)
        .difference(&comparison.removed);
    Some(allowed.paths().iter().map(|p| path_string(p)).collect())
}

/// One pass of the apply (without client-side apply's allowances).
fn apply_once(
    live: Option<&Value>,
    config: &Value,
    apply: &Apply<'_>,
) -> Result<Value, ApplyError> {
    let root = apply.schema;
    let shape = root.shape;
    let update = Update {
        manager: apply.manager,
        api_version: apply.api_version,
        time: apply.time,
        subresource: apply.subresource,
        has_status: apply.has_status,
        schema: apply.schema,
    };
    let ignored = reset_fields(apply.kind, &update);
    let applied = without_subtrees(
        field_set(config, shape, true).map_err(ApplyError::Invalid)?,
        &ignored,
    );

    let mut managed = live
        .and_then(|o| o.pointer("/metadata/managedFields"))
        .map_or_else(|| Ok(Managed::default()), Managed::decode)
        .unwrap_or_default();
    let live = live.map_or_else(
        || json!({"apiVersion": apply.api_version, "kind": apply.kind}),
        without_managed_fields,
    );
    let who = Who::apply(apply.manager, apply.subresource.unwrap_or_default());
    let key = who.key();

    let merged = merge(Some(&live), config, shape);
    let mut object = match managed.entries.get(&key) {
        Some(last) if !last.set.is_empty() => {
            let mut owned = applied.clone();
            for (_, entry) in managed.entries.iter().filter(|(k, _)| **k != key) {
                owned.union_with(&entry.set);
            }
            prune(&merged, &last.set, &owned, shape)
        }
        _ => merged,
    };

    let mut before = live.clone();
    materialize(&mut before, root);
    let mut after = object.clone();
    materialize(&mut after, root);
    let comparison = compare(Some(&before), Some(&after), shape, &ignored);
    let mut changed = comparison.added.clone();
    changed.union_with(&comparison.modified);
    let conflicts: Vec<Conflict> = managed
        .entries
        .iter()
        .filter(|(k, _)| **k != key)
        .flat_map(|(_, entry)| {
            let manager = describe(&entry.who);
            entry
                .set
                .intersection(&changed)
                .paths()
                .into_iter()
                .map(move |path| Conflict {
                    manager: manager.clone(),
                    field: path_string(&path),
                })
        })
        .collect();
    if !conflicts.is_empty() && !apply.force {
        return Err(ApplyError::Conflicts(conflicts));
    }
    for (_, entry) in managed.entries.iter_mut().filter(|(k, _)| **k != key) {
        entry.set = entry
            .set
            .difference(&changed)
            .difference(&comparison.removed);
    }
    let previous_time = managed.entries.remove(&key).and_then(|entry| entry.time);
    managed.entries.retain(|_, entry| !entry.set.is_empty());
    let owned = applied.difference(&NEVER_OWNED);
    if !owned.is_empty() {
        let time = if before == after {
            previous_time
        } else {
            Some(Value::from(apply.time))
        };
        managed.entries.insert(
            key,
            Entry {
                who,
                api_version: apply.api_version.to_owned(),
                set: owned,
                time,
            },
        );
    }
    managed.cap(MAX_UPDATE_MANAGERS);
    if let Some(Value::Object(meta)) = object.get_mut("metadata") {
        match managed.encode() {
            Some(entries) => meta.insert("managedFields".to_owned(), entries),
            None => meta.remove("managedFields"),
        };
    } else if let (Some(entries), Some(root)) = (managed.encode(), object.as_object_mut()) {
        root.insert("metadata".to_owned(), json!({"managedFields": entries}));
    }
    Ok(object)
}

/// `schema.GroupVersionKind.String()` of what a configuration says it is:
/// `apps/v1, Kind=Deployment`, `/v1, Kind=Pod`.
fn group_version_kind(api_version: &str, kind: &str) -> String {
    let (group, version) = match api_version.split('/').collect::<Vec<_>>().as_slice() {
        [version] => ("", *version),
        [group, version] => (*group, *version),
        _ => ("", ""),
    };
    format!("{group}/{version}, Kind={kind}")
}

/// A manager as a conflict names it (`printManager`).
fn describe(who: &Who) -> String {
    let mut out = go_quote(&who.manager);
    if !who.subresource.is_empty() {
        out.push_str(" with subresource ");
        out.push_str(&go_quote(&who.subresource));
    }
    if who.operation == "Update" {
        out.push_str(" using ");
        out.push_str(&who.api_version);
    }
    out
}

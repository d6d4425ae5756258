//! `metadata.managedFields` as kube-apiserver writes it for Update operations (create, update
//! and every patch that is not a server-side apply).
//!
//! The rules are those of `k8s.io/apimachinery/pkg/util/managedfields/internal` and of
//! structured-merge-diff's `merge.Updater.Update`:
//!
//! - the live object is compared with the new one (on create, with the empty object of the
//!   kind) and the paths added or modified go to the writer's entry, keyed by manager,
//!   operation `Update`, apiVersion and subresource; those paths and the removed ones leave
//!   every other entry, and entries left empty are dropped (`structuredmerge.go`,
//!   `merge/update.go`);
//! - the writer's entry gets a new `time` only when the write gave it a field; a write that
//!   only removes fields, or changes nothing, leaves every time as it was
//!   (`managedfieldsupdater.go`);
//! - `apiVersion`, `kind`, `metadata` itself and `metadata.{name, namespace, creationTimestamp,
//!   selfLink, uid, clusterName, generation, managedFields, resourceVersion}` are never owned
//!   (`stripmeta.go`); an update of the main resource owns nothing under `status` when the
//!   resource has a status subresource, and a status update nothing under `spec` (plus
//!   `metadata.labels` for Deployments, `metadata.deletionTimestamp` and
//!   `metadata.ownerReferences` for Pods): the strategies' `GetResetFields`;
//! - at most 10 Update entries are kept: the oldest are merged, per apiVersion, into an
//!   `ancient-changes` entry (`capmanagers.go`);
//! - entries are sorted by operation, time (seconds), manager, apiVersion and subresource
//!   (`managedfields.go`).
//!
//! What a client sends in `metadata.managedFields` is kept when it decodes and is not empty;
//! `[]` or `[{}]` clears the history; anything else (absent, `null`, invalid) keeps the live
//! object's entries. Subresource writes always keep the live entries (`fieldmanager.go`). An
//! update of an object that has no entries starts none (`skipnonapplied.go`); a create always
//! does.
//!
//! Server-side apply (`Apply` entries, conflicts, `force`) is in `apply.rs`, on the walks over
//! typed objects in `typed.rs`.
//!
//! Which lists are keyed, which are sets and which values are atomic comes from the kind's
//! OpenAPI schema (`schema.rs`): the built-in definitions with their `x-kubernetes-*` facts, or
//! a custom resource version's `openAPIV3Schema`; kinds without a schema are deduced from their
//! JSON, `metadata` aside. What Go always writes is in `go_zero.rs`.

mod apply;
#[cfg(test)]
mod apply_tests;
mod compare;
#[cfg(test)]
mod custom_tests;
mod entries;
mod fieldset;
mod go_zero;
mod scale;
mod schema;
#[cfg(test)]
mod tests;
mod typed;

use serde_json::{Map, Value};

pub use apply::{Apply, ApplyError, Conflict, apply, check_configuration};
use compare::{Comparison, compare, materialize};
use entries::{Managed, Who};
use fieldset::{FieldSet, field_element};
pub use scale::{parent_managed_fields, scale_managed_fields};
pub use schema::{Schema, SchemaRef};

/// At most this many Update entries are kept (`DefaultMaxUpdateManagers`).
const MAX_UPDATE_MANAGERS: usize = 10;

/// The longest field manager name, in bytes (`FieldManagerMaxLength`).
pub const FIELD_MANAGER_MAX_LENGTH: usize = 128;

/// One write through the Update path (create, update, non-apply patch).
#[derive(Debug, Clone, Copy)]
pub struct Update<'a> {
    /// The field manager: the request's `fieldManager`, else [`manager_from_user_agent`];
    /// empty means `unknown`.
    pub manager: &'a str,
    /// The apiVersion the request was made in, e.g. `apps/v1`.
    pub api_version: &'a str,
    /// Now, RFC 3339 in seconds (`2024-05-01T10:00:00Z`).
    pub time: &'a str,
    /// The subresource written (`status`, `scale`), `None` for the main resource.
    pub subresource: Option<&'a str>,
    /// Whether the resource serves a `status` subresource: then a write of the main resource
    /// owns nothing under `status`.
    pub has_status: bool,
    /// The kind's schema: [`SchemaRef::builtin`] (or [`SchemaRef::of`]) for a built-in kind,
    /// the CRD version's compiled schema for a custom resource.
    pub schema: SchemaRef<'a>,
}

/// The field manager kube-apiserver names after a request's `User-Agent` when the request has
/// no `fieldManager`: what comes before the first `/`, without unprintable characters, cut
/// to 128 bytes (`prefixFromUserAgent` in `endpoints/handlers/create.go`).
/// `kubectl/v1.33.0 (linux/amd64) kubernetes/abc` gives `kubectl`.
pub fn manager_from_user_agent(user_agent: &str) -> String {
    let prefix = user_agent.split('/').next().unwrap_or_default();
    let mut out = String::new();
    for c in prefix.chars().filter(|c| is_print(*c)) {
        if out.len() + c.len_utf8() > FIELD_MANAGER_MAX_LENGTH {
            break;
        }
        out.push(c);
    }
    out
}

/// Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols and the ASCII space.
fn is_print(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    // Format characters and private use areas.
    !matches!(u32::from(c),
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x890..=0x891 | 0x8E2 | 0x180E
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF
        | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F | 0xE000..=0xF8FF
        | 0xF0000..=0x10FFFF)
}

/// The FieldsV1 of every field set in `object`: what its creator would own, as
/// `{"f:metadata":{"f:labels":{".":{},"f:app":{}}},"f:spec":{...}}`. The fields that are never
/// owned (`apiVersion`, `kind`, `metadata.name`, `metadata.uid`, ...) are left out.
pub fn fields_v1(object: &Value) -> Value {
    let root = root_of(object);
    let zero = zero_object(root);
    let mut new = without_managed_fields(object);
    materialize(&mut new, root);
    let comparison = compare(Some(&zero), Some(&new), root.shape, &[]);
    owned_by_writer(&comparison).to_fields_v1()
}

/// Records a write in `new`'s `metadata.managedFields` (see the module documentation). `old` is
/// the live object, `None` on create; `new` is the object about to be stored, with whatever
/// `managedFields` the client sent. When nothing changed, the entries come out as they were.
pub fn record_update(old: Option<&Value>, new: &mut Value, update: &Update<'_>) {
    if !new.get("metadata").is_some_and(Value::is_object) {
        return;
    }
    let live = old
        .and_then(|o| o.pointer("/metadata/managedFields"))
        .map_or_else(|| Ok(Managed::default()), Managed::decode)
        .unwrap_or_default();
    let sent = new.pointer("/metadata/managedFields");
    let mut managed = if update.subresource.is_some() {
        live
    } else if sent.is_some_and(is_reset) {
        Managed::default()
    } else {
        match sent.map(Managed::decode) {
            Some(Ok(sent)) if !sent.entries.is_empty() => sent,
            _ => live,
        }
    };
    if let Some(Value::Object(meta)) = new.get_mut("metadata") {
        meta.remove("managedFields");
    }
    if managed.entries.is_empty() && old.is_some() {
        return;
    }

    let root = update.schema;
    let comparison = match update.subresource {
        Some("scale") => replicas_comparison(old, new),
        _ => {
            let mut before = old.map_or_else(|| zero_object(root), without_managed_fields);
            materialize(&mut before, root);
            let mut after = new.clone();
            materialize(&mut after, root);
            let kind = new.get("kind").and_then(Value::as_str).unwrap_or_default();
            compare(
                Some(&before),
                Some(&after),
                root.shape,
                &reset_fields(kind, update),
            )
        }
    };

    managed.take(&comparison);
    let owned = owned_by_writer(&comparison);
    if !owned.is_empty() {
        let manager = if update.manager.is_empty() {
            "unknown"
        } else {
            update.manager
        };
        let who = Who::update(
            manager,
            update.api_version,
            update.subresource.unwrap_or_default(),
        );
        // kube-apiserver's scale handler hands the parent entries back without a time.
        let time = (update.subresource != Some("scale")).then(|| Value::from(update.time));
        managed.give(who, update.api_version, owned, time);
    }
    managed.cap(MAX_UPDATE_MANAGERS);
    if let Some(entries) = managed.encode()
        && let Some(Value::Object(meta)) = new.get_mut("metadata")
    {
        meta.insert("managedFields".to_owned(), entries);
    }
}

/// The fields an update of `kind` through `update`'s (sub)resource never owns.
fn reset_fields(kind: &str, update: &Update<'_>) -> Vec<&'static [&'static str]> {
    match update.subresource {
        None if update.has_status => vec![&["status"]],
        Some("status") => {
            let mut fields: Vec<&'static [&'static str]> = vec![&["spec"]];
            match kind {
                "Deployment" => fields.push(&["metadata", "labels"]),
                "Pod" => {
                    fields.push(&["metadata", "deletionTimestamp"]);
                    fields.push(&["metadata", "ownerReferences"]);
                }
                _ => {}
            }
            fields
        }
        _ => Vec::new(),
    }
}

/// A scale write owns `spec.replicas` and nothing else.
fn replicas_comparison(old: Option<&Value>, new: &Value) -> Comparison {
    let path = [field_element("spec"), field_element("replicas")];
    let before = old.and_then(|o| o.pointer("/spec/replicas"));
    let after = new.pointer("/spec/replicas");
    let mut comparison = Comparison::default();
    match (before, after) {
        (None, Some(_)) => comparison.added.insert(&path),
        (Some(_), None) => comparison.removed.insert(&path),
        (Some(b), Some(a)) if b != a => comparison.modified.insert(&path),
        _ => {}
    }
    comparison
}

/// The paths the writer gets: added or modified, less the ones never owned.
fn owned_by_writer(comparison: &Comparison) -> FieldSet {
    let mut owned = comparison.added.clone();
    owned.union_with(&comparison.modified);
    owned
        .difference(&comparison.removed)
        .difference(&NEVER_OWNED)
}

/// The fields no manager owns (`stripmeta.go`), built once.
static NEVER_OWNED: std::sync::LazyLock<FieldSet> = std::sync::LazyLock::new(never_owned);

fn never_owned() -> FieldSet {
    let mut set = FieldSet::new();
    set.insert(&[field_element("apiVersion")]);
    set.insert(&[field_element("kind")]);
    set.insert(&[field_element("metadata")]);
    for name in [
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    ] {
        set.insert(&[field_element("metadata"), field_element(name)]);
    }
    set
}

/// The schema of `object`'s built-in kind, else the deduced one.
fn root_of(object: &Value) -> SchemaRef<'static> {
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    SchemaRef::of(api_version, kind)
}

/// The object kube-apiserver compares a created object with: the kind's zero value.
fn zero_object(root: SchemaRef<'_>) -> Value {
    let mut zero = Value::Object(Map::new());
    materialize(&mut zero, root);
    zero
}

fn without_managed_fields(object: &Value) -> Value {
    let mut copy = object.clone();
    if let Some(Value::Object(meta)) = copy.get_mut("metadata") {
        meta.remove("managedFields");
    }
    copy
}

/// Whether a client's `managedFields` asks for the history to be cleared: `[]` or one entry
/// with every member empty (`isResetManagedFields`).
fn is_reset(sent: &Value) -> bool {
    match sent.as_array().map(Vec::as_slice) {
        Some([]) => true,
        Some([Value::Object(entry)]) => entry.iter().all(|(name, value)| {
            let known = [
                "manager",
                "operation",
                "apiVersion",
                "time",
                "fieldsType",
                "fieldsV1",
                "subresource",
            ];
            match value {
                _ if !known.contains(&name.as_str()) => true,
                Value::Null => true,
                Value::String(s) => s.is_empty() && name != "fieldsV1",
                _ => false,
            }
        }),
        _ => false,
    }
}

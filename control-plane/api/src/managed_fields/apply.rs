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
//! Left out: conversion between versions (each kind is served in one version).

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde_json::{Map, Value, json};

use super::compare::{compare, materialize, path_element};
use super::entries::{Entry, Managed, Who};
use super::fieldset::{FieldSet, field_element, value_element, write_go_json};
use super::schema::{self, Shape, key_default};
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
    let root = schema::root(apply.api_version, apply.kind);
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
    let root = schema::root(apply.api_version, apply.kind);
    let shape = root.shape;
    let update = Update {
        manager: apply.manager,
        api_version: apply.api_version,
        time: apply.time,
        subresource: apply.subresource,
        has_status: apply.has_status,
    };
    let ignored = reset_fields(apply.kind, &update);
    let applied = without_subtrees(field_set(config, shape, true)?, &ignored);

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

/// Go's `%q` of a string.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A path as structured-merge-diff prints it: `.spec.replicas`,
/// `.spec.containers[name="web"].ports[containerPort=80,protocol="TCP"]`, `.finalizers[="a"]`.
pub(crate) fn path_string(path: &[String]) -> String {
    path.iter().map(|pe| PathElement(pe).to_string()).collect()
}

struct PathElement<'a>(&'a str);

impl fmt::Display for PathElement<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, body) = self.0.split_at(self.0.len().min(2));
        match kind {
            "f:" => write!(f, ".{body}"),
            "i:" => write!(f, "[{body}]"),
            "v:" => match serde_json::from_str::<Value>(body) {
                Ok(value) => write!(f, "[={}]", ValueText(&value)),
                Err(_) => write!(f, "[={body}]"),
            },
            "k:" => match serde_json::from_str::<Map<String, Value>>(body) {
                Ok(keys) => {
                    let mut keys: Vec<(&String, &Value)> = keys.iter().collect();
                    keys.sort_by(|a, b| a.0.cmp(b.0));
                    f.write_str("[")?;
                    for (i, (name, value)) in keys.into_iter().enumerate() {
                        if i > 0 {
                            f.write_str(",")?;
                        }
                        write!(f, "{name}={}", ValueText(value))?;
                    }
                    f.write_str("]")
                }
                Err(_) => write!(f, "[{body}]"),
            },
            _ => f.write_str("{{invalid path element}}"),
        }
    }
}

/// structured-merge-diff's `value.ToString`.
struct ValueText<'a>(&'a Value);

impl fmt::Display for ValueText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::String(s) => f.write_str(&go_quote(s)),
            Value::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}", ValueText(item))?;
                }
                f.write_str("]")
            }
            Value::Object(map) => {
                f.write_str("{")?;
                for (i, (name, item)) in map.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{name}={}", ValueText(item))?;
                }
                f.write_str("}")
            }
            other => write!(f, "{other}"),
        }
    }
}

/// Whether the members of a value of this shape are named struct fields (not a Go map's
/// keys, which are members themselves).
fn named_members(shape: Shape) -> bool {
    !matches!(shape, Shape::Map | Shape::AtomicMap)
}

/// The shape of the items of a list of this shape.
fn item_shape(shape: Shape) -> Shape {
    match shape {
        Shape::Keyed(_, item) => *item,
        Shape::Set => Shape::Atomic,
        _ => Shape::Deduced,
    }
}

/// `EnsureNamedFieldsAreMembers`: every named struct field in `set` becomes a member.
fn with_named(set: &FieldSet, shape: Shape) -> FieldSet {
    set.with_members(
        shape,
        &|shape: Shape, pe: &str| match pe.strip_prefix("f:") {
            Some(name) => (shape.member(name), named_members(shape)),
            None => (item_shape(shape), false),
        },
    )
}

/// The path element of a list item; `Err` says why the item has none.
fn list_element(item: &Value, shape: Shape) -> Result<String, String> {
    if let Shape::Keyed(keys, _) = shape {
        let Some(fields) = item.as_object() else {
            return Err("associative list with keys has an element that is not a map".into());
        };
        if let Some(missing) = keys
            .iter()
            .find(|k| !fields.contains_key(**k) && key_default(k).is_none())
        {
            return Err(format!(
                "associative list with keys has an element that omits key field {} (and \
                 doesn't have default value)",
                go_quote(missing)
            ));
        }
        return path_element(item, shape).ok_or_else(|| "element has no key".into());
    }
    Ok(value_element(item))
}

/// The field set of a value (`ToFieldSet`). `strict` (the applied configuration) refuses list
/// items without a path element and items given twice; the live object is read leniently.
fn field_set(value: &Value, shape: Shape, strict: bool) -> Result<FieldSet, ApplyError> {
    let mut out = FieldSet::new();
    collect(value, shape, strict, &mut Vec::new(), &mut out).map_err(ApplyError::Invalid)?;
    Ok(out)
}

fn collect(
    value: &Value,
    shape: Shape,
    strict: bool,
    path: &mut Vec<String>,
    out: &mut FieldSet,
) -> Result<(), String> {
    match (shape, value) {
        (Shape::Atomic | Shape::AtomicMap, _) => out.insert(path),
        (_, Value::Object(map)) => {
            for (name, child) in map {
                path.push(field_element(name));
                collect(child, shape.member(name), strict, path, out)?;
                let empty = child.is_null() || child.as_object().is_some_and(Map::is_empty);
                if empty || !named_members(shape) {
                    out.insert(path);
                }
                path.pop();
            }
        }
        (Shape::Set | Shape::Keyed(..), Value::Array(items)) => {
            let mut seen = HashSet::new();
            for item in items {
                let pe = match list_element(item, shape) {
                    Ok(pe) => pe,
                    Err(why) if strict => return Err(format!("{}: {why}", path_string(path))),
                    Err(_) => continue,
                };
                if !seen.insert(pe.clone()) {
                    if strict {
                        return Err(format!(
                            "{}: duplicate entries for key {}",
                            path_string(path),
                            PathElement(&pe)
                        ));
                    }
                    continue;
                }
                path.push(pe);
                collect(item, item_shape(shape), strict, path, out)?;
                out.insert(path);
                path.pop();
            }
        }
        _ => out.insert(path),
    }
    Ok(())
}

/// `set` without the paths under any of `prefixes` (the fields the endpoint resets).
fn without_subtrees(set: FieldSet, prefixes: &[&[&str]]) -> FieldSet {
    let mut drop = FieldSet::new();
    for prefix in prefixes {
        let prefix: Vec<String> = prefix.iter().map(|name| field_element(name)).collect();
        for path in set.paths() {
            if path.starts_with(&prefix) {
                drop.insert(&path);
            }
        }
    }
    set.difference(&drop)
}

/// Merges `config` into `live` (`typed.Merge` with the configuration winning).
fn merge(live: Option<&Value>, config: &Value, shape: Shape) -> Value {
    match (shape, live, config) {
        (Shape::Atomic | Shape::AtomicMap, _, _) => without_nulls(config),
        (_, Some(Value::Object(lhs)), Value::Object(rhs)) => {
            let mut out = lhs.clone();
            for (name, value) in rhs {
                // A field applied as `null` is owned and unset: Go leaves it out.
                if value.is_null() {
                    out.remove(name);
                    continue;
                }
                let merged = merge(lhs.get(name), value, shape.member(name));
                out.insert(name.clone(), merged);
            }
            Value::Object(out)
        }
        (Shape::Set | Shape::Keyed(..), Some(Value::Array(lhs)), Value::Array(rhs)) => {
            Value::Array(merge_list(lhs, rhs, shape))
        }
        _ => without_nulls(config),
    }
}

/// `value` without the object members set to `null` (Go leaves unset fields out).
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

/// Merges two keyed or set lists item by item (`mergingWalker.visitListItems`): live items
/// keep their order, items only in the configuration go where it puts them relative to the
/// items both have, and an item in both takes the configuration's place when the two orders
/// disagree.
fn merge_list(lhs: &[Value], rhs: &[Value], shape: Shape) -> Vec<Value> {
    let item = item_shape(shape);
    let lpes: Vec<Option<String>> = lhs.iter().map(|v| list_element(v, shape).ok()).collect();
    let rpes: Vec<String> = rhs
        .iter()
        .enumerate()
        .map(|(i, v)| list_element(v, shape).unwrap_or_else(|_| format!("i:{i}")))
        .collect();
    let mut observed_l: HashMap<&str, usize> = HashMap::new();
    for (i, pe) in lpes.iter().enumerate() {
        if let Some(pe) = pe {
            observed_l.entry(pe.as_str()).or_insert(i);
        }
    }
    let mut observed_r: HashMap<&str, usize> = HashMap::new();
    for (i, pe) in rpes.iter().enumerate() {
        observed_r.entry(pe.as_str()).or_insert(i);
    }
    let mut shared = rpes
        .iter()
        .filter(|pe| observed_l.contains_key(pe.as_str()))
        .map(String::as_str);
    let mut next_shared = shared.next();
    let mut merged_r: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(lhs.len().max(rhs.len()));
    let (mut li, mut ri) = (0, 0);
    while li < lhs.len() || ri < rhs.len() {
        if li < lhs.len() && ri < rhs.len() {
            if lpes[li].as_deref() == Some(rpes[ri].as_str()) {
                let pe = rpes[ri].as_str();
                merged_r.insert(pe);
                out.push(merge(
                    observed_l.get(pe).map(|i| &lhs[*i]),
                    &rhs[observed_r[pe]],
                    item,
                ));
                li += 1;
                ri += 1;
                next_shared = shared.next();
                continue;
            }
            if let Some(pe) = lpes[li].as_deref()
                && observed_r.contains_key(pe)
                && next_shared.is_some_and(|next| next != pe)
            {
                li += 1;
                continue;
            }
        }
        if li < lhs.len() {
            match lpes[li].as_deref() {
                Some(pe) if observed_r.contains_key(pe) => {
                    if merged_r.contains(pe) {
                        li += 1;
                        continue;
                    }
                }
                _ => {
                    out.push(lhs[li].clone());
                    li += 1;
                    continue;
                }
            }
        }
        if ri < rhs.len() {
            let pe = rpes[ri].as_str();
            merged_r.insert(pe);
            out.push(merge(
                observed_l.get(pe).map(|i| &lhs[*i]),
                &rhs[observed_r[pe]],
                item,
            ));
            ri += 1;
            if next_shared == Some(pe) {
                next_shared = shared.next();
            }
        }
    }
    out
}

/// Removes what the manager applied last time (`last`) and nobody owns now (`owned`, the
/// applier's new set included) from the merged object (`Updater.prune`, with
/// `addBackOwnedItems` and `addBackDanglingItems`).
fn prune(merged: &Value, last: &FieldSet, owned: &FieldSet, shape: Shape) -> Value {
    let set_of =
        |value: &Value| with_named(&field_set(value, shape, false).unwrap_or_default(), shape);
    let last = with_named(last, shape);
    let merged_set = set_of(merged);

    let mut pruned = merged.clone();
    remove(&mut pruned, &last, shape, false);
    let mut kept = set_of(&pruned);
    kept.union_with(&with_named(owned, shape));

    let mut owned_back = merged.clone();
    remove(&mut owned_back, &merged_set.difference(&kept), shape, false);
    let dangling = merged_set
        .difference(&set_of(&owned_back))
        .intersection(&last);

    let mut out = merged.clone();
    remove(&mut out, &dangling, shape, true);
    out
}

/// Removes the paths of `set` from `value` (`RemoveItems`): a member goes with everything
/// under it. A Go map or list emptied this way is dropped from its parent when `tidy` (the
/// object to store; Go leaves such fields out), kept empty otherwise.
fn remove(value: &mut Value, set: &FieldSet, shape: Shape, tidy: bool) {
    if matches!(shape, Shape::Atomic | Shape::AtomicMap) {
        return;
    }
    match value {
        Value::Object(map) => {
            map.retain(|name, _| !set.has_member(&field_element(name)));
            let mut emptied = Vec::new();
            for (name, child) in map.iter_mut() {
                let Some(under) = set.under(&field_element(name)) else {
                    continue;
                };
                let child_shape = shape.member(name);
                remove(child, under, child_shape, tidy);
                let empty_map = child.as_object().is_some_and(Map::is_empty)
                    && matches!(child_shape, Shape::Map | Shape::AtomicMap);
                let empty_list = child.as_array().is_some_and(Vec::is_empty);
                if tidy && (empty_map || empty_list) {
                    emptied.push(name.clone());
                }
            }
            for name in emptied {
                map.remove(&name);
            }
        }
        Value::Array(items) if matches!(shape, Shape::Set | Shape::Keyed(..)) => {
            let item = item_shape(shape);
            items.retain(|it| list_element(it, shape).map_or(true, |pe| !set.has_member(&pe)));
            for it in items.iter_mut() {
                if let Ok(pe) = list_element(it, shape)
                    && let Some(under) = set.under(&pe)
                {
                    remove(it, under, item, tidy);
                }
            }
        }
        _ => {}
    }
}

//! Operations on objects whose shape is known (structured-merge-diff's `typed` package):
//! an object's field set (`tofieldset.go`), merging a configuration into an object
//! (`merge.go`), removing a field set from an object (`remove.go`), making named fields members
//! (`fieldpath.Set.EnsureNamedFieldsAreMembers`) and printing paths (`fieldpath/path.go`).

use std::collections::{HashMap, HashSet};
use std::fmt;

use serde_json::{Map, Value};

use super::compare::path_element;
use super::fieldset::{FieldSet, field_element, value_element};
use super::schema::Shape;

/// Go's `%q` of a string.
pub(super) fn go_quote(s: &str) -> String {
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

/// `EnsureNamedFieldsAreMembers`: every named struct field in `set` becomes a member.
pub(super) fn with_named(set: &FieldSet, shape: Shape<'_>) -> FieldSet {
    set.with_members(
        shape,
        &|shape: Shape<'_>, pe: &str| match pe.strip_prefix("f:") {
            Some(name) => (shape.member(name), shape.named_members()),
            None => (shape.item(), false),
        },
    )
}

/// The path element of a list item; `Err` says why the item has none.
pub(super) fn list_element(item: &Value, shape: Shape<'_>) -> Result<String, String> {
    if let Some(keys) = shape.keys() {
        let Some(fields) = item.as_object() else {
            return Err("associative list with keys has an element that is not a map".into());
        };
        if let Some(missing) = keys
            .iter()
            .find(|(k, default)| !fields.contains_key(k) && default.is_none())
        {
            return Err(format!(
                "associative list with keys has an element that omits key field {} (and \
                 doesn't have default value)",
                go_quote(&missing.0)
            ));
        }
        return path_element(item, shape).ok_or_else(|| "element has no key".into());
    }
    Ok(value_element(item))
}

/// The field set of a value (`ToFieldSet`). `strict` (the applied configuration) refuses list
/// items without a path element and items given twice; the live object is read leniently.
pub(super) fn field_set(value: &Value, shape: Shape<'_>, strict: bool) -> Result<FieldSet, String> {
    let mut out = FieldSet::new();
    collect(value, shape, strict, &mut Vec::new(), &mut out)?;
    Ok(out)
}

fn collect(
    value: &Value,
    shape: Shape<'_>,
    strict: bool,
    path: &mut Vec<String>,
    out: &mut FieldSet,
) -> Result<(), String> {
    match (shape, value) {
        _ if shape.is_atomic() => out.insert(path),
        (_, Value::Object(map)) => {
            for (name, child) in map {
                path.push(field_element(name));
                collect(child, shape.member(name), strict, path, out)?;
                let empty = child.is_null() || child.as_object().is_some_and(Map::is_empty);
                if empty || !shape.named_members() {
                    out.insert(path);
                }
                path.pop();
            }
        }
        (_, Value::Array(items)) if shape.is_list() => {
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
                collect(item, shape.item(), strict, path, out)?;
                out.insert(path);
                path.pop();
            }
        }
        _ => out.insert(path),
    }
    Ok(())
}

/// `set` without the paths under any of `prefixes` (the fields the endpoint resets).
pub(super) fn without_subtrees(set: FieldSet, prefixes: &[&[&str]]) -> FieldSet {
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
pub(super) fn merge(live: Option<&Value>, config: &Value, shape: Shape<'_>) -> Value {
    match (live, config) {
        _ if shape.is_atomic() => without_nulls(config),
        (Some(Value::Object(lhs)), Value::Object(rhs)) => {
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
        (Some(Value::Array(lhs)), Value::Array(rhs)) if shape.is_list() => {
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
fn merge_list(lhs: &[Value], rhs: &[Value], shape: Shape<'_>) -> Vec<Value> {
    let item = shape.item();
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
pub(super) fn prune(merged: &Value, last: &FieldSet, owned: &FieldSet, shape: Shape<'_>) -> Value {
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
fn remove(value: &mut Value, set: &FieldSet, shape: Shape<'_>, tidy: bool) {
    if shape.is_atomic() {
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
                    && child_shape.omitted_when_empty();
                let empty_list = child.as_array().is_some_and(Vec::is_empty);
                if tidy && (empty_map || empty_list) {
                    emptied.push(name.clone());
                }
            }
            for name in emptied {
                map.remove(&name);
            }
        }
        Value::Array(items) if shape.is_list() => {
            let item = shape.item();
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

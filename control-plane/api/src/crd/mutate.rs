//! Pruning and defaulting of custom resources (`pkg/apiserver/schema/pruning` and
//! `pkg/apiserver/schema/defaulting`).

use serde_json::Value;

use super::path::{child, index};
use super::schema::{Additional, Node};

/// The fields of `ObjectMeta` (meta/v1).
const OBJECT_META_FIELDS: [&str; 15] = [
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// Drops the fields `s` does not specify, appending their paths to `dropped`.
/// `resource` is true at the root and in embedded resources, whose `apiVersion`, `kind` and
/// `metadata` are always kept.
pub(crate) fn prune(
    v: &mut Value,
    s: &Node,
    resource: bool,
    path: &str,
    dropped: &mut Vec<String>,
) {
    match v {
        Value::Object(map) => {
            // The root's metadata is the API server's to decode; an embedded resource's is
            // pruned to ObjectMeta's fields here, as kube's `objectmeta.Coerce` does.
            if s.embedded
                && !resource
                && let Some(Value::Object(meta)) = map.get_mut("metadata")
            {
                let unknown: Vec<String> = meta
                    .keys()
                    .filter(|k| !OBJECT_META_FIELDS.contains(&k.as_str()))
                    .cloned()
                    .collect();
                for k in unknown {
                    meta.remove(&k);
                    dropped.push(child(&child(path, "metadata"), &k));
                }
            }
            let resource = resource || s.embedded;
            let keys: Vec<String> = map.keys().cloned().collect();
            for k in keys {
                if resource && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                let at = child(path, &k);
                let sub = s.properties.get(&k).or_else(|| s.additional_schema());
                match sub {
                    Some(sub) => {
                        if let Some(field) = map.get_mut(&k) {
                            prune(field, sub, false, &at, dropped);
                        }
                    }
                    None => {
                        let kept = s.preserve_unknown
                            || matches!(s.additional, Some(Additional::Allows(true)));
                        if !kept {
                            map.remove(&k);
                            dropped.push(at);
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = &s.items {
                for (i, x) in items.iter_mut().enumerate() {
                    prune(x, item, false, &index(path, i), dropped);
                }
            }
        }
        _ => {}
    }
}

/// Removes `null` fields whose schema is not nullable and has no default, then applies the
/// defaults of absent (or such `null`) fields, top-down, into list items and map values.
pub(crate) fn default(v: &mut Value, s: &Node, depth: usize) {
    if depth > 1000 {
        return;
    }
    match v {
        Value::Object(map) => {
            for (k, p) in &s.properties {
                let absent = match map.get(k) {
                    None => true,
                    Some(Value::Null) => !p.nullable,
                    Some(_) => false,
                };
                if absent {
                    match &p.default {
                        Some(d) => {
                            map.insert(k.clone(), d.clone());
                        }
                        None => {
                            if map.get(k) == Some(&Value::Null) {
                                map.remove(k);
                            }
                        }
                    }
                }
            }
            for (k, field) in map.iter_mut() {
                if let Some(sub) = s.properties.get(k).or_else(|| s.additional_schema()) {
                    default(field, sub, depth + 1);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = &s.items {
                for x in items.iter_mut() {
                    if x.is_null()
                        && !item.nullable
                        && let Some(d) = &item.default
                    {
                        *x = d.clone();
                    }
                    default(x, item, depth + 1);
                }
            }
        }
        _ => {}
    }
}

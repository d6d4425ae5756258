//! Patches on raw JSON objects: JSON merge patch (RFC 7386) and the subset of Kubernetes'
//! strategic merge patch that `kubectl apply`, `label`, `annotate`, `scale` and `edit` send.
//!
//! Strategic merge patch is a merge patch where some lists are merged element by element on a
//! key (containers by `name`, container ports by `containerPort`, ...) and where `$`-directives
//! say what a plain merge cannot: `$patch: replace|delete|merge`, `$retainKeys`,
//! `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>`. Kubernetes takes the merge
//! keys from struct tags; here they come from the field name (see [`merge_key`]), which is what
//! those tags say for every built-in type keelson serves.

use serde_json::{Map, Value};

/// Why a strategic merge patch could not be applied. `Display` is the message for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The patch document is not a JSON object.
    #[error("a strategic merge patch must be a JSON object")]
    NotAnObject,
    /// A `$patch` directive with a value other than `replace`, `delete` or `merge`.
    #[error("unknown patch type: {0}")]
    UnknownDirective(String),
    /// A `$retainKeys` or `$deleteFromPrimitiveList` directive whose value is not a list.
    #[error("the {0} directive must be a list")]
    DirectiveNotAList(String),
}

/// Applies a JSON merge patch (RFC 7386) to `target`: objects merge recursively, `null`
/// removes a member, anything else (lists included) replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// The key that a strategic merge patch merges the list in field `field` by, or `None` when
/// the list is replaced as a whole. `items` are the patch's elements (container ports and
/// service ports are both called `ports` and differ in their key).
pub fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "schedulingGates" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// Applies a strategic merge patch to `target` (see the module documentation).
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::NotAnObject);
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        merge_map(target, patch)?;
    }
    Ok(())
}

fn directive(map: &Map<String, Value>) -> Result<Option<&str>, PatchError> {
    match map.get("$patch") {
        None => Ok(None),
        Some(Value::String(s)) if matches!(s.as_str(), "replace" | "delete" | "merge") => {
            Ok(Some(s.as_str()))
        }
        Some(other) => Err(PatchError::UnknownDirective(other.to_string())),
    }
}

fn string_list(value: &Value, name: &str) -> Result<Vec<Value>, PatchError> {
    value
        .as_array()
        .cloned()
        .ok_or_else(|| PatchError::DirectiveNotAList(name.to_owned()))
}

fn merge_map(
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<(), PatchError> {
    match directive(patch)? {
        Some("replace") => {
            let mut replaced = patch.clone();
            replaced.remove("$patch");
            *target = strip_directives_map(&replaced);
            return Ok(());
        }
        Some("delete") => {
            target.clear();
            return Ok(());
        }
        _ => {}
    }
    for (key, value) in patch {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            let remove = string_list(value, key)?;
            if let Some(Value::Array(list)) = target.get_mut(field) {
                list.retain(|v| !remove.contains(v));
            }
            continue;
        }
        if value.is_null() {
            target.remove(key);
            continue;
        }
        match (target.get_mut(key), value) {
            (Some(Value::Object(existing)), Value::Object(p)) => {
                if directive(p)? == Some("delete") {
                    target.remove(key);
                } else {
                    merge_map(existing, p)?;
                }
            }
            (Some(Value::Array(existing)), Value::Array(p)) => merge_list(key, existing, p)?,
            (_, Value::Object(p)) if directive(p)? == Some("delete") => {
                target.remove(key);
            }
            (_, value) => {
                target.insert(key.clone(), strip_directives(value));
            }
        }
    }
    if let Some(retain) = patch.get("$retainKeys") {
        let retain = string_list(retain, "$retainKeys")?;
        target.retain(|k, _| retain.iter().any(|r| r.as_str() == Some(k)));
    }
    Ok(())
}

fn merge_list(field: &str, target: &mut Vec<Value>, patch: &[Value]) -> Result<(), PatchError> {
    let replace = patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
    let key = merge_key(field, patch);
    let Some(key) = key.filter(|_| !replace) else {
        *target = patch
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .map(strip_directives)
            .collect();
        return Ok(());
    };
    for item in patch {
        let Value::Object(item_map) = item else {
            target.push(item.clone());
            continue;
        };
        let id = item_map.get(key);
        if directive(item_map)? == Some("delete") {
            target.retain(|t| t.get(key) != id);
            continue;
        }
        match target.iter_mut().find(|t| id.is_some() && t.get(key) == id) {
            Some(Value::Object(existing)) => merge_map(existing, item_map)?,
            _ => target.push(strip_directives(item)),
        }
    }
    Ok(())
}

/// A patch value as it lands in the object when nothing is there to merge with: without
/// `$`-directives and `null` members.
fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(strip_directives_map(map)),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn strip_directives_map(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(k, v)| !k.starts_with('$') && !v.is_null())
        .map(|(k, v)| (k.clone(), strip_directives(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(
            &mut doc,
            &json!({"a": "z", "c": {"f": null}, "l": [3], "n": {"x": 1}}),
        );
        assert_eq!(
            doc,
            json!({"a": "z", "c": {"d": "e"}, "l": [3], "n": {"x": 1}})
        );
    }

    #[test]
    fn strategic_patch_merges_containers_by_name() {
        let mut doc = json!({"spec": {"containers": [
            {"name": "app", "image": "a:1", "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "s:1"}
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "app"}, {"name": "new"}],
            "containers": [
                {"name": "app", "image": "a:2"},
                {"name": "side", "$patch": "delete"},
                {"name": "new", "image": "n:1"}
            ]
        }});
        strategic_merge_patch(&mut doc, &patch).expect("valid patch");
        assert_eq!(
            doc,
            json!({"spec": {"containers": [
                {"name": "app", "image": "a:2", "ports": [{"containerPort": 80}]},
                {"name": "new", "image": "n:1"}
            ]}})
        );
    }

    #[test]
    fn strategic_patch_handles_retain_keys_and_primitive_deletes() {
        let mut doc = json!({
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}},
            "metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}}
        });
        let patch = json!({
            "strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null},
            "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "labels": {"y": null}}
        });
        strategic_merge_patch(&mut doc, &patch).expect("valid patch");
        assert_eq!(
            doc,
            json!({
                "strategy": {"type": "Recreate"},
                "metadata": {"finalizers": ["b"], "labels": {"x": "1"}}
            })
        );
    }

    #[test]
    fn strategic_patch_rejects_unknown_directives() {
        let mut doc = json!({});
        assert_eq!(
            strategic_merge_patch(&mut doc, &json!({"a": {"$patch": "explode"}})),
            Err(PatchError::UnknownDirective("\"explode\"".into()))
        );
        assert_eq!(
            strategic_merge_patch(&mut doc, &json!([1])),
            Err(PatchError::NotAnObject)
        );
    }
}

//! Patches on raw JSON objects: JSON merge patch (RFC 7386) and the subset of Kubernetes'
//! strategic merge patch that `kubectl apply`, `label`, `annotate`, `scale` and `edit` send.
//!
//! Strategic merge patch is a merge patch where some lists are merged element by element on a
//! key (containers by `name`, container ports by `containerPort`, ...) or as sets (finalizers),
//! and where `$`-directives say what a plain merge cannot: `$patch: replace|delete|merge`,
//! `$retainKeys`, `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>`. Which lists
//! merge, and on which key, is what Kubernetes' `patchStrategy`/`patchMergeKey` tags say: the
//! `x-kubernetes-patch-strategy` and `x-kubernetes-patch-merge-key` facts that
//! [`crate::schema`] writes into the kind's OpenAPI definitions, which the patch walks down
//! with the object. Where the schema says nothing (or for a kind without one), lists are
//! replaced and maps merged, as Kubernetes does for untyped fields.

use serde_json::{Map, Value};

use crate::schema;

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

/// A place in a kind's OpenAPI v3 schema ([`schema::builtin_definitions`]), or nowhere when
/// the schema does not describe the value.
#[derive(Debug, Clone, Copy)]
struct At(Option<&'static Value>);

impl At {
    /// The definition `definition`.
    fn definition(definition: &str) -> Self {
        Self(schema::builtin_definitions().get(definition))
    }

    /// The schema a node stands for: `$ref`s (bare or as the one member of an `allOf`)
    /// followed to their definition.
    fn resolved(self) -> Option<&'static Value> {
        let mut node = self.0?;
        // Definitions refer to each other one level deep; the bound only guards a cycle.
        for _ in 0..8 {
            let reference = node.get("$ref").or_else(|| match node.get("allOf") {
                Some(Value::Array(all)) if all.len() == 1 => all[0].get("$ref"),
                _ => None,
            });
            let Some(name) = reference
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix(schema::V3_REF_PREFIX))
            else {
                return Some(node);
            };
            node = schema::builtin_definitions().get(name)?;
        }
        None
    }

    /// The node of member `key` of an object here (a struct's property or a map's values).
    fn member(self, key: &str) -> Self {
        let Some(node) = self.resolved() else {
            return Self(None);
        };
        Self(
            node.get("properties")
                .and_then(|p| p.get(key))
                .or_else(|| node.get("additionalProperties").filter(|a| a.is_object())),
        )
    }

    /// The node of a list's items.
    fn items(self) -> Self {
        Self(self.resolved().and_then(|n| n.get("items")))
    }

    /// How a list here merges: `None` when it is replaced, else its merge key (`None` inside
    /// for lists of scalars, merged as sets).
    fn list_merge(self) -> Option<Option<&'static str>> {
        let node = self.0?;
        let strategy = node.get("x-kubernetes-patch-strategy")?.as_str()?;
        strategy.split(',').any(|s| s == "merge").then(|| {
            node.get("x-kubernetes-patch-merge-key")
                .and_then(Value::as_str)
        })
    }
}

/// The OpenAPI definition name of a built-in kind, e.g. `io.k8s.api.apps.v1.Deployment` for
/// (`apps`, `v1`, `Deployment`): what [`strategic_merge_patch`] walks.
pub fn kind_definition(group: &str, version: &str, kind: &str) -> Option<&'static str> {
    schema::builtin_kinds()
        .iter()
        .find(|k| k.group == group && k.version == version && k.kind == kind)
        .map(|k| k.definition.as_str())
}

/// Applies a strategic merge patch to `target`, an object of the kind whose OpenAPI
/// definition is `definition` ([`kind_definition`]; `None`: no list merges by key).
pub fn strategic_merge_patch(
    target: &mut Value,
    patch: &Value,
    definition: Option<&str>,
) -> Result<(), PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::NotAnObject);
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let at = definition.map_or(At(None), At::definition);
    if let Value::Object(target) = target {
        merge_map(target, patch, at)?;
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
    at: At,
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
                    merge_map(existing, p, at.member(key))?;
                }
            }
            (Some(Value::Array(existing)), Value::Array(p)) => {
                merge_list(existing, p, at.member(key))?;
            }
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

fn merge_list(target: &mut Vec<Value>, patch: &[Value], at: At) -> Result<(), PatchError> {
    let replace = patch
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"));
    let Some(key) = at.list_merge().filter(|_| !replace) else {
        *target = patch
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .map(strip_directives)
            .collect();
        return Ok(());
    };
    let Some(key) = key else {
        // A list of scalars with the merge strategy is a set: the patch's values join it.
        for item in patch {
            if !target.contains(item) {
                target.push(item.clone());
            }
        }
        return Ok(());
    };
    let items = at.items();
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
            Some(Value::Object(existing)) => merge_map(existing, item_map, items)?,
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

    const POD: &str = "io.k8s.api.core.v1.Pod";
    const DEPLOYMENT: &str = "io.k8s.api.apps.v1.Deployment";
    const SERVICE: &str = "io.k8s.api.core.v1.Service";

    #[test]
    fn kinds_name_their_definitions() {
        assert_eq!(
            kind_definition("apps", "v1", "Deployment"),
            Some(DEPLOYMENT)
        );
        assert_eq!(kind_definition("", "v1", "Pod"), Some(POD));
        assert_eq!(kind_definition("example.com", "v1", "Widget"), None);
    }

    /// Each list merges as its field's tags say, wherever it sits: the same name `ports`
    /// merges on `containerPort` in a container and on `port` in a Service; tolerations
    /// (no strategy) are replaced; finalizers (merge, scalars) are a set; a Deployment's
    /// pod template merges like a Pod.
    #[test]
    fn lists_merge_as_the_schema_says() {
        type Case = (&'static str, Value, Value, Value);
        let table: Vec<Case> = vec![
            (
                SERVICE,
                json!({"spec": {"ports": [{"port": 80, "name": "http"}]}}),
                json!({"spec": {"ports": [{"port": 443, "name": "https"}]}}),
                json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]}}),
            ),
            (
                POD,
                json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80}]}]}}),
                json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 81}]}]}}),
                json!({"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80}, {"containerPort": 81}]}]}}),
            ),
            (
                POD,
                json!({"spec": {"tolerations": [{"key": "a", "operator": "Exists"}]}}),
                json!({"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}),
                json!({"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}),
            ),
            (
                POD,
                json!({"metadata": {"finalizers": ["a", "b"]}}),
                json!({"metadata": {"finalizers": ["b", "c"]}}),
                json!({"metadata": {"finalizers": ["a", "b", "c"]}}),
            ),
            (
                DEPLOYMENT,
                json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "a", "volumeMounts": [{"mountPath": "/x", "name": "v"}]}
                ]}}}}),
                json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "a", "volumeMounts": [{"mountPath": "/y", "name": "w"}]}
                ]}}}}),
                json!({"spec": {"template": {"spec": {"containers": [
                    {"name": "a", "volumeMounts": [{"mountPath": "/x", "name": "v"}, {"mountPath": "/y", "name": "w"}]}
                ]}}}}),
            ),
            (
                // A field the schema does not describe: replaced.
                DEPLOYMENT,
                json!({"spec": {"extra": [{"name": "a"}]}}),
                json!({"spec": {"extra": [{"name": "b"}]}}),
                json!({"spec": {"extra": [{"name": "b"}]}}),
            ),
        ];
        for (definition, mut doc, patch, want) in table {
            strategic_merge_patch(&mut doc, &patch, Some(definition)).expect("valid patch");
            assert_eq!(doc, want, "{definition}: {patch}");
        }
        // Without a schema nothing merges by key.
        let mut doc = json!({"spec": {"containers": [{"name": "a"}]}});
        strategic_merge_patch(
            &mut doc,
            &json!({"spec": {"containers": [{"name": "b"}]}}),
            None,
        )
        .expect("valid patch");
        assert_eq!(doc, json!({"spec": {"containers": [{"name": "b"}]}}));
    }

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
        strategic_merge_patch(&mut doc, &patch, Some(POD)).expect("valid patch");
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
            "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}},
            "metadata": {"finalizers": ["a", "b"], "labels": {"x": "1", "y": "2"}}
        });
        let patch = json!({
            "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}},
            "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "labels": {"y": null}}
        });
        strategic_merge_patch(&mut doc, &patch, Some(DEPLOYMENT)).expect("valid patch");
        assert_eq!(
            doc,
            json!({
                "spec": {"strategy": {"type": "Recreate"}},
                "metadata": {"finalizers": ["b"], "labels": {"x": "1"}}
            })
        );
    }

    #[test]
    fn strategic_patch_rejects_unknown_directives() {
        let mut doc = json!({});
        assert_eq!(
            strategic_merge_patch(&mut doc, &json!({"a": {"$patch": "explode"}}), None),
            Err(PatchError::UnknownDirective("\"explode\"".into()))
        );
        assert_eq!(
            strategic_merge_patch(&mut doc, &json!([1]), None),
            Err(PatchError::NotAnObject)
        );
    }
}

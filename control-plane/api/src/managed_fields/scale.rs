//! `managedFields` across the `/scale` subresource, for server-side apply of a Scale
//! (`k8s.io/apiserver/pkg/endpoints/handlers/fieldmanager/scalehandler.go` in older trees,
//! `managedfields.ScaleHandler` today): the Scale's entries are the parent's entries that own
//! `spec.replicas`, each owning the Scale's `spec.replicas` in `autoscaling/v1`; after the
//! write, the parent gets them back, the replicas taken from entries the Scale's write took
//! them from, and given (with no time, as kube-apiserver does) to the Scale's new owners.

use serde_json::Value;

use super::entries::{Entry, Managed};
use super::fieldset::{FieldSet, field_element};

/// The apiVersion of the Scale subresource.
const SCALE_VERSION: &str = "autoscaling/v1";

fn replicas() -> FieldSet {
    let mut set = FieldSet::new();
    set.insert(&[field_element("spec"), field_element("replicas")]);
    set
}

fn owns_replicas(entry: &Entry) -> bool {
    !entry.set.intersection(&replicas()).is_empty()
}

fn decode(object: &Value) -> Managed {
    object
        .pointer("/metadata/managedFields")
        .map_or_else(|| Ok(Managed::default()), Managed::decode)
        .unwrap_or_default()
}

/// The `managedFields` of `parent`'s Scale (`ToSubresource`); `None` when no entry owns
/// `spec.replicas`.
pub fn scale_managed_fields(parent: &Value) -> Option<Value> {
    let mut managed = decode(parent);
    managed.entries.retain(|_, entry| owns_replicas(entry));
    for entry in managed.entries.values_mut() {
        entry.set = replicas();
        entry.api_version = SCALE_VERSION.to_owned();
    }
    managed.encode()
}

/// `parent`'s `managedFields` after a write of its Scale left the Scale with `scale`'s entries
/// (`ToParent`); `parent_version` is the parent's apiVersion (`apps/v1`).
pub fn parent_managed_fields(parent: &Value, scale: &Value, parent_version: &str) -> Option<Value> {
    let mut managed = decode(parent);
    let mut from_scale = decode(scale);
    let mut out = Managed::default();
    for (key, mut entry) in std::mem::take(&mut managed.entries) {
        if owns_replicas(&entry) && !from_scale.entries.contains_key(&key) {
            // The Scale's write took the replicas from this entry.
            entry.set = entry.set.difference(&replicas());
            if entry.set.is_empty() {
                continue;
            }
        } else {
            from_scale.entries.remove(&key);
        }
        out.entries.insert(key, entry);
    }
    for (key, entry) in from_scale.entries {
        if !owns_replicas(&entry) {
            continue;
        }
        out.entries.insert(
            key,
            Entry {
                who: entry.who,
                api_version: parent_version.to_owned(),
                set: replicas(),
                time: None,
            },
        );
    }
    out.encode()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(manager: &str, operation: &str, fields: Value, subresource: &str) -> Value {
        let mut e = json!({"manager": manager, "operation": operation, "apiVersion": "apps/v1",
            "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": fields});
        if !subresource.is_empty() {
            e["subresource"] = json!(subresource);
        }
        e
    }

    #[test]
    fn the_scale_sees_the_owners_of_replicas_and_hands_back_what_it_took() {
        let parent = json!({"metadata": {"managedFields": [
            entry("a", "Apply", json!({"f:spec": {"f:replicas": {}, "f:paused": {}}}), ""),
            entry("edit", "Update", json!({"f:spec": {"f:minReadySeconds": {}}}), ""),
        ]}});
        let scale = scale_managed_fields(&parent).expect("a owns replicas");
        assert_eq!(
            scale,
            json!([{"manager": "a", "operation": "Apply", "apiVersion": "autoscaling/v1",
                "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:replicas": {}}}}])
        );
        // b forced the replicas through the Scale: a keeps the rest, b owns replicas, with no
        // time (sorted first).
        let after = json!({"metadata": {"managedFields": [
            {"manager": "b", "operation": "Apply", "apiVersion": "autoscaling/v1",
             "time": "2026-01-01T00:05:00Z", "fieldsType": "FieldsV1",
             "fieldsV1": {"f:spec": {"f:replicas": {}}}, "subresource": "scale"},
        ]}});
        let entries = parent_managed_fields(&parent, &after, "apps/v1").expect("entries");
        assert_eq!(
            entries,
            json!([
                {"manager": "b", "operation": "Apply", "apiVersion": "apps/v1",
                 "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}},
                 "subresource": "scale"},
                {"manager": "a", "operation": "Apply", "apiVersion": "apps/v1",
                 "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:spec": {"f:paused": {}}}},
                {"manager": "edit", "operation": "Update", "apiVersion": "apps/v1",
                 "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                 "fieldsV1": {"f:spec": {"f:minReadySeconds": {}}}},
            ])
        );
        // A Scale write that left a's ownership alone leaves the parent's entries as they were.
        let shared = json!({"metadata": {"managedFields": [scale[0].clone()]}});
        assert_eq!(
            parent_managed_fields(&parent, &shared, "apps/v1"),
            parent.pointer("/metadata/managedFields").cloned()
        );
    }
}

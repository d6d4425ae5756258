//! The DefaultStorageClass admission plugin (kube 1.33's
//! `plugin/pkg/admission/storage/storageclass/setdefault/admission.go`): a claim created
//! without `spec.storageClassName` (and without the beta class annotation) gets the default
//! StorageClass, the one annotated `storageclass.kubernetes.io/is-default-class: "true"` (the
//! newest when several are, then by name). An explicit `""` asks for no class and is kept.
//! Also the built-in default class keelson creates at start ([`local_path_class`]).

use keelson_api::storage::{
    ANN_BETA_STORAGE_CLASS, ANN_DEFAULT_CLASS, LOCAL_PATH_CLASS, LOCAL_PATH_PROVISIONER,
};
use keelson_store::ListOptions;
use serde_json::{Value, json};

use super::Admit;
use crate::{ApiError, object::decode_kv, request::Target};

/// The beta twin of the default-class annotation, still honoured by kube.
const BETA_DEFAULT_CLASS: &str = "storageclass.beta.kubernetes.io/is-default-class";

/// The StorageClass every cluster starts with (k3s's `local-path`): keelson's local-path
/// provisioner, binding delayed until a pod uses the claim, volumes deleted with their claim.
pub fn local_path_class() -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": LOCAL_PATH_CLASS,
            "annotations": {ANN_DEFAULT_CLASS: "true"},
        },
        "provisioner": LOCAL_PATH_PROVISIONER,
        "volumeBindingMode": "WaitForFirstConsumer",
        "reclaimPolicy": "Delete",
    })
}

fn is_default(class: &Value) -> bool {
    let annotation = |key: &str| {
        class
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            == Some("true")
    };
    annotation(ANN_DEFAULT_CLASS) || annotation(BETA_DEFAULT_CLASS)
}

/// The name of the default class among `classes` (kube's `GetDefaultClass`): the newest
/// default one, ties broken by name.
pub fn default_class(classes: &[Value]) -> Option<&str> {
    classes
        .iter()
        .filter(|c| is_default(c))
        .max_by(|a, b| {
            let created = |c: &Value| {
                c.pointer("/metadata/creationTimestamp")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            let name = |c: &Value| {
                c.pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            // Newest first; among equals the smallest name wins the max.
            created(a)
                .cmp(&created(b))
                .then_with(|| name(b).cmp(&name(a)))
        })
        .and_then(|c| c.pointer("/metadata/name").and_then(Value::as_str))
}

/// Whether a claim asks for a class already: `spec.storageClassName` present (even `""`) or
/// the beta annotation.
fn has_class(claim: &Value) -> bool {
    claim
        .pointer("/spec/storageClassName")
        .is_some_and(|c| !c.is_null())
        || claim
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(ANN_BETA_STORAGE_CLASS))
            .is_some()
}

/// Sets the default class on `claim` when it asks for none (pure part of [`admit`]).
pub fn set_default(claim: &mut Value, classes: &[Value]) {
    if has_class(claim) {
        return;
    }
    let Some(name) = default_class(classes) else {
        return;
    };
    if let Some(spec) = claim.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("storageClassName".into(), json!(name));
    }
}

/// The plugin on PersistentVolumeClaim creates.
pub(crate) async fn admit(
    admit: &Admit<'_>,
    target: &Target,
    claim: &mut Value,
) -> Result<(), ApiError> {
    if target.custom.is_some()
        || !target.resource.group.is_empty()
        || target.resource.plural != "persistentvolumeclaims"
        || has_class(claim)
    {
        return Ok(());
    }
    let Some(resource) = crate::registry::find("storage.k8s.io", "v1", "storageclasses") else {
        return Ok(());
    };
    let listed = admit
        .store
        .list(&resource.prefix(), ListOptions::default())
        .await
        .map_err(|e| ApiError::internal("listing StorageClasses", &e))?;
    let classes: Vec<Value> = listed
        .items
        .iter()
        .filter_map(|kv| decode_kv(kv).ok())
        .collect();
    set_default(claim, &classes);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, created: &str, default: Option<&str>) -> Value {
        let mut class = json!({"metadata": {"name": name, "creationTimestamp": created}});
        if let Some(value) = default {
            class["metadata"]["annotations"] = json!({ANN_DEFAULT_CLASS: value});
        }
        class
    }

    #[test]
    fn claims_without_a_class_get_the_default() {
        let classes = vec![
            class("fast", "2026-01-01T00:00:00Z", None),
            local_path_class(),
            class("off", "2026-01-03T00:00:00Z", Some("false")),
        ];
        let cases = [
            (json!({"spec": {}}), Some(json!("local-path"))),
            (
                json!({"spec": {"storageClassName": "fast"}}),
                Some(json!("fast")),
            ),
            // "" asks for no class (static volumes only).
            (json!({"spec": {"storageClassName": ""}}), Some(json!(""))),
            (
                json!({"metadata": {"annotations": {ANN_BETA_STORAGE_CLASS: "fast"}}, "spec": {}}),
                None,
            ),
        ];
        for (mut claim, want) in cases {
            set_default(&mut claim, &classes);
            assert_eq!(claim.pointer("/spec/storageClassName").cloned(), want);
        }
        let mut claim = json!({"spec": {}});
        set_default(&mut claim, &classes[..1]);
        assert_eq!(claim, json!({"spec": {}}), "no default class: nothing set");
    }

    #[test]
    fn the_newest_default_wins() {
        let classes = vec![
            class("old", "2026-01-01T00:00:00Z", Some("true")),
            class("new-b", "2026-02-01T00:00:00Z", Some("true")),
            class("new-a", "2026-02-01T00:00:00Z", Some("true")),
        ];
        assert_eq!(default_class(&classes), Some("new-a"));
        assert_eq!(default_class(&classes[..1]), Some("old"));
    }

    #[test]
    fn the_builtin_class_is_k3s_like() {
        let class = local_path_class();
        assert_eq!(class["provisioner"], "keelson.io/local-path");
        assert_eq!(class["volumeBindingMode"], "WaitForFirstConsumer");
        assert_eq!(
            class["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"],
            "true"
        );
    }
}

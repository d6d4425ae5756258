//! The ServiceAccount admission plugin for pod creates (kube 1.33's
//! `plugin/pkg/admission/serviceaccount/admission.go`): `spec.serviceAccountName` defaults to
//! `default`, the ServiceAccount must exist, and unless `automountServiceAccountToken` is false
//! (the pod's setting wins over the ServiceAccount's) the projected volume
//! `kube-api-access-<5 chars>` (token, `kube-root-ca.crt`'s `ca.crt`, the namespace) is added
//! and mounted read-only at [`MOUNT_PATH`] in every container and init container that has no
//! mount there yet. Mirror pods are left alone.

use std::time::Duration;

use serde_json::{Value, json};

use super::Admit;
use crate::{ApiError, auth::serviceaccount::WARN_ONLY_EXPIRATION_SECONDS, request::Target};

/// Where the token, CA and namespace appear in containers (kube's `DefaultAPITokenMountPath`).
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The volume name prefix (kube's `ServiceAccountVolumeName`).
pub const VOLUME_PREFIX: &str = "kube-api-access";
/// The service account pods without one run as.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// The ConfigMap the root-ca-cert-publisher keeps in every namespace.
pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// The annotation of mirror pods (static pods' API objects).
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// How often the `default` ServiceAccount is looked for before the pod is refused: its
/// controller may not have created it yet (kube tries ten times too).
const DEFAULT_ATTEMPTS: u32 = 10;

/// The projected volume kube's `TokenVolumeSource` describes, named `name`.
pub fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "sources": [
                {"serviceAccountToken": {
                    "expirationSeconds": WARN_ONLY_EXPIRATION_SECONDS,
                    "path": "token",
                }},
                {"configMap": {
                    "name": ROOT_CA_CONFIGMAP,
                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                }},
                {"downwardAPI": {
                    "items": [{
                        "path": "namespace",
                        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"},
                    }],
                }},
            ],
            "defaultMode": 420,
        },
    })
}

/// Whether the token is mounted: the pod's `automountServiceAccountToken`, else the
/// ServiceAccount's, else yes.
fn should_automount(pod: &Value, service_account: &Value) -> bool {
    pod.pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            service_account
                .get("automountServiceAccountToken")
                .and_then(Value::as_bool)
        })
        .unwrap_or(true)
}

/// Adds the token volume (named `generated` unless the pod has a `kube-api-access-*` volume
/// already) and its mounts to `pod` (kube's `mountServiceAccountToken`).
pub fn mount_token(pod: &mut Value, generated: &str) {
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let existing = spec
        .get("volumes")
        .and_then(Value::as_array)
        .and_then(|volumes| {
            volumes.iter().find_map(|v| {
                v.get("name")
                    .and_then(Value::as_str)
                    .filter(|n| n.starts_with(&format!("{VOLUME_PREFIX}-")))
                    .map(str::to_owned)
            })
        });
    let name = existing.clone().unwrap_or_else(|| generated.to_owned());
    let mount = json!({"name": name, "readOnly": true, "mountPath": MOUNT_PATH});
    let mut needed = false;
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers {
            let Some(container) = container.as_object_mut() else {
                continue;
            };
            let mounts = container.entry("volumeMounts").or_insert_with(|| json!([]));
            let Some(mounts) = mounts.as_array_mut() else {
                continue;
            };
            let mounted = mounts
                .iter()
                .any(|m| m.get("mountPath").and_then(Value::as_str) == Some(MOUNT_PATH));
            if !mounted {
                mounts.push(mount.clone());
                needed = true;
            }
        }
    }
    if existing.is_none()
        && needed
        && let Some(volumes) = spec
            .entry("volumes")
            .or_insert_with(|| json!([]))
            .as_array_mut()
    {
        volumes.push(token_volume(&name));
    }
}

/// The admission of a pod create (`object` in storage form, already named).
pub(crate) async fn admit(
    admit: &Admit<'_>,
    target: &Target,
    name: &str,
    object: &mut Value,
) -> Result<(), ApiError> {
    if !admit.service_accounts
        || target.custom.is_some()
        || !target.resource.group.is_empty()
        || target.resource.plural != "pods"
    {
        return Ok(());
    }
    if object
        .pointer(&format!(
            "/metadata/annotations/{}",
            MIRROR_ANNOTATION.replace('/', "~1")
        ))
        .is_some()
    {
        return Ok(());
    }
    let namespace = target.namespace.as_deref().unwrap_or_default();
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    let account = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .or_else(|| {
            spec.get("serviceAccount")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
        })
        .unwrap_or(DEFAULT_SERVICE_ACCOUNT)
        .to_owned();
    spec.insert("serviceAccountName".into(), json!(account));
    spec.insert("serviceAccount".into(), json!(account));
    let service_account = lookup(admit, namespace, &account).await.map_err(|cause| {
        ApiError::forbidden(format!(
            "pods \"{name}\" is forbidden: error looking up service account \
             {namespace}/{account}: {cause}"
        ))
    })?;
    if should_automount(object, &service_account) {
        mount_token(
            object,
            &crate::object::generated_name(&format!("{VOLUME_PREFIX}-")),
        );
    }
    if object
        .pointer("/spec/imagePullSecrets")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
        && let Some(secrets) = service_account
            .get("imagePullSecrets")
            .filter(|s| s.as_array().is_some_and(|a| !a.is_empty()))
            .cloned()
        && let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut)
    {
        spec.insert("imagePullSecrets".into(), secrets);
    }
    Ok(())
}

/// The ServiceAccount `namespace/name`, or kube's reason it cannot be had.
async fn lookup(admit: &Admit<'_>, namespace: &str, name: &str) -> Result<Value, String> {
    let resource = crate::registry::find("", "v1", "serviceaccounts")
        .ok_or_else(|| "serviceaccounts are not served".to_owned())?;
    let key = resource.key(Some(namespace), name);
    let attempts = if name == DEFAULT_SERVICE_ACCOUNT {
        DEFAULT_ATTEMPTS
    } else {
        1
    };
    for attempt in 0..attempts {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
        match admit.store.get(&key, None).await {
            Ok(Some(kv)) => {
                return serde_json::from_slice(&kv.value).map_err(|e| e.to_string());
            }
            Ok(None) => {}
            Err(error) => return Err(error.to_string()),
        }
    }
    Err(format!("serviceaccount \"{name}\" not found"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn every_container_mounts_the_projected_token_volume() {
        let mut p = pod(json!({
            "initContainers": [{"name": "init"}],
            "containers": [
                {"name": "a"},
                {"name": "b", "volumeMounts": [{"name": "mine", "mountPath": MOUNT_PATH}]},
            ],
        }));
        mount_token(&mut p, "kube-api-access-x2b4z");
        let mount =
            json!({"name": "kube-api-access-x2b4z", "readOnly": true, "mountPath": MOUNT_PATH});
        assert_eq!(
            p["spec"]["initContainers"][0]["volumeMounts"],
            json!([mount])
        );
        assert_eq!(p["spec"]["containers"][0]["volumeMounts"], json!([mount]));
        assert_eq!(
            p["spec"]["containers"][1]["volumeMounts"],
            json!([{"name": "mine", "mountPath": MOUNT_PATH}])
        );
        assert_eq!(
            p["spec"]["volumes"],
            json!([token_volume("kube-api-access-x2b4z")])
        );
        let sources = &p["spec"]["volumes"][0]["projected"]["sources"];
        assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
        assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
        assert_eq!(
            sources[2]["downwardAPI"]["items"][0]["fieldRef"]["fieldPath"],
            "metadata.namespace"
        );
        assert_eq!(p["spec"]["volumes"][0]["projected"]["defaultMode"], 420);
    }

    #[test]
    fn an_existing_volume_is_reused_and_full_mounts_add_nothing() {
        let mut p = pod(json!({
            "containers": [{"name": "a"}],
            "volumes": [{"name": "kube-api-access-abcde", "emptyDir": {}}],
        }));
        mount_token(&mut p, "kube-api-access-zzzzz");
        assert_eq!(p["spec"]["volumes"].as_array().map(Vec::len), Some(1));
        assert_eq!(
            p["spec"]["containers"][0]["volumeMounts"][0]["name"],
            "kube-api-access-abcde"
        );
        let mut mounted = pod(json!({
            "containers": [{"name": "a", "volumeMounts": [{"name": "m", "mountPath": MOUNT_PATH}]}],
        }));
        mount_token(&mut mounted, "kube-api-access-zzzzz");
        assert!(mounted["spec"].get("volumes").is_none());
    }

    #[test]
    fn the_pod_setting_wins_over_the_service_account() {
        let cases = [
            (None, None, true),
            (None, Some(false), false),
            (Some(true), Some(false), true),
            (Some(false), Some(true), false),
            (Some(false), None, false),
        ];
        for (on_pod, on_sa, expected) in cases {
            let mut p = pod(json!({}));
            if let Some(v) = on_pod {
                p["spec"]["automountServiceAccountToken"] = json!(v);
            }
            let mut sa = json!({"metadata": {"name": "default"}});
            if let Some(v) = on_sa {
                sa["automountServiceAccountToken"] = json!(v);
            }
            assert_eq!(should_automount(&p, &sa), expected, "{on_pod:?} {on_sa:?}");
        }
    }
}

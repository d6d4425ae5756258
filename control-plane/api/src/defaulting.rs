//! Defaulting: the values Kubernetes fills in on every write when a client leaves them out,
//! for the fields clients and controllers read back (`kubectl describe`, `scale`, rollouts).
//!
//! Only absent fields are filled; a value the client sent is never changed.

use serde_json::{Map, Value, json};

/// Fills the defaults of an object of kind `kind` (e.g. `Deployment`) in place.
pub fn apply_defaults(kind: &str, object: &mut Value) {
    let Some(root) = object.as_object_mut() else {
        return;
    };
    match kind {
        "Deployment" => {
            let spec = child(root, "spec");
            default(spec, "replicas", json!(1));
            default(spec, "revisionHistoryLimit", json!(10));
            default(spec, "progressDeadlineSeconds", json!(600));
            let strategy = child(spec, "strategy");
            default(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let rolling = child(strategy, "rollingUpdate");
                default(rolling, "maxSurge", json!("25%"));
                default(rolling, "maxUnavailable", json!("25%"));
            }
            pod_template(spec);
        }
        "ReplicaSet" => {
            let spec = child(root, "spec");
            default(spec, "replicas", json!(1));
            pod_template(spec);
        }
        "Pod" => pod_spec(child(root, "spec")),
        "Service" => {
            let spec = child(root, "spec");
            default(spec, "type", json!("ClusterIP"));
            default(spec, "sessionAffinity", json!("None"));
            if let Some(Value::Array(ports)) = spec.get_mut("ports") {
                for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                    default(port, "protocol", json!("TCP"));
                    if let Some(number) = port.get("port").cloned() {
                        default(port, "targetPort", number);
                    }
                }
            }
        }
        "Secret" => {
            default(root, "type", json!("Opaque"));
            fold_string_data(root);
        }
        _ => {}
    }
}

/// Secrets: `stringData` is write-only; its entries are base64-encoded into `data` (replacing
/// entries of the same key) and it is dropped, as Kubernetes does.
fn fold_string_data(root: &mut Map<String, Value>) {
    let Some(Value::Object(strings)) = root.remove("stringData") else {
        return;
    };
    let data = child(root, "data");
    for (key, value) in strings {
        if let Value::String(text) = value {
            data.insert(key, Value::String(base64(text.as_bytes())));
        }
    }
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn child<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let value = map
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    match value {
        Value::Object(map) => map,
        _ => unreachable!("replaced by an object above"),
    }
}

fn default(map: &mut Map<String, Value>, key: &str, value: Value) {
    map.entry(key.to_owned()).or_insert(value);
}

fn pod_template(spec: &mut Map<String, Value>) {
    if let Some(Value::Object(template)) = spec.get_mut("template") {
        pod_spec(child(template, "spec"));
    }
}

fn pod_spec(spec: &mut Map<String, Value>) {
    default(spec, "restartPolicy", json!("Always"));
    default(spec, "terminationGracePeriodSeconds", json!(30));
    default(spec, "dnsPolicy", json!("ClusterFirst"));
    default(spec, "schedulerName", json!("default-scheduler"));
    default(spec, "securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        if let Some(Value::Array(containers)) = spec.get_mut(list) {
            for container in containers.iter_mut().filter_map(Value::as_object_mut) {
                let latest = container
                    .get("image")
                    .and_then(Value::as_str)
                    .is_none_or(|image| {
                        let tag = image.rsplit('/').next().unwrap_or(image);
                        !tag.contains(':') || tag.ends_with(":latest")
                    });
                let policy = if latest { "Always" } else { "IfNotPresent" };
                default(container, "imagePullPolicy", json!(policy));
                default(
                    container,
                    "terminationMessagePath",
                    json!("/dev/termination-log"),
                );
                default(container, "terminationMessagePolicy", json!("File"));
                if let Some(Value::Array(ports)) = container.get_mut("ports") {
                    for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                        default(port, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::apply_defaults;

    #[test]
    fn deployment_gets_replicas_strategy_and_pod_defaults() {
        let mut d = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}
        ]}}}});
        apply_defaults("Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    }

    #[test]
    fn secret_string_data_becomes_base64_data() {
        let mut s =
            json!({"data": {"a": "eA=="}, "stringData": {"password": "hunter2", "b": "ab"}});
        apply_defaults("Secret", &mut s);
        assert_eq!(
            s,
            json!({"type": "Opaque", "data": {"a": "eA==", "password": "aHVudGVyMg==", "b": "YWI="}})
        );
    }

    #[test]
    fn explicit_values_are_kept() {
        let mut s =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "targetPort": 8080}]}});
        apply_defaults("Service", &mut s);
        assert_eq!(s["spec"]["type"], "NodePort");
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 8080);
        assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
    }
}

//! `pods/ephemeralcontainers` (what `kubectl debug` writes): an update of a pod that changes
//! `spec.ephemeralContainers` only, as kube-apiserver's ephemeral-containers strategy does
//! (everything else is kept from the stored pod) and validated as
//! `ValidatePodEphemeralContainersUpdate` validates it.

use std::collections::HashSet;

use keelson_api::validation::FieldError;
use serde_json::Value;

/// The container fields an ephemeral container may not set (kube allows a list of fields;
/// these are the ones of `Container` outside it).
const FORBIDDEN_FIELDS: &[&str] = &[
    "ports",
    "resources",
    "resizePolicy",
    "lifecycle",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "restartPolicy",
];

/// The annotation of a mirror (static) pod.
const MIRROR_POD: &str = "kubernetes.io/config.mirror";

fn containers<'a>(pod: &'a Value, list: &str) -> &'a [Value] {
    pod.get("spec")
        .and_then(|s| s.get(list))
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn name_of(container: &Value) -> &str {
    container
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `old` with the ephemeral containers of `new`: nothing else an update of this subresource
/// sends is kept.
pub(crate) fn merge(old: &Value, new: &Value) -> Value {
    let mut merged = old.clone();
    let ephemeral = new
        .pointer("/spec/ephemeralContainers")
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(spec) = merged.get_mut("spec").and_then(Value::as_object_mut) {
        if ephemeral.is_null() {
            spec.remove("ephemeralContainers");
        } else {
            spec.insert("ephemeralContainers".into(), ephemeral);
        }
    }
    merged
}

/// Whether a JSON value is Go's zero value (an absent field).
fn is_set(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(fields) => fields.values().any(is_set),
        Value::Number(_) | Value::Bool(true) => true,
    }
}

/// Whether `name` is a DNS-1123 label (what container names must be).
fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !name.is_empty()
        && name.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

/// `ValidatePodEphemeralContainersUpdate` of `new` (the merged pod) against `old`.
pub(crate) fn validate(old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if old
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(MIRROR_POD))
        .is_some()
    {
        return vec![FieldError::forbidden(
            "",
            "static pods do not support ephemeral containers",
        )];
    }
    let others: HashSet<&str> = containers(new, "containers")
        .iter()
        .chain(containers(new, "initContainers"))
        .map(name_of)
        .collect();
    let mut all = others.clone();
    for (index, container) in containers(new, "ephemeralContainers").iter().enumerate() {
        let path = format!("spec.ephemeralContainers[{index}]");
        let name = name_of(container);
        if name.is_empty() {
            errors.push(FieldError::required(&format!("{path}.name"), ""));
        } else if !is_dns_label(name) {
            errors.push(FieldError::invalid(
                &format!("{path}.name"),
                name,
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters \
                 or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  \
                 or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            ));
        } else if !all.insert(name) {
            errors.push(FieldError::duplicate(&format!("{path}.name"), name));
        }
        if container
            .get("image")
            .and_then(Value::as_str)
            .is_none_or(|i| i.trim().is_empty())
        {
            errors.push(FieldError::required(&format!("{path}.image"), ""));
        }
        if let Some(target) = container
            .get("targetContainerName")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty() && !others.contains(t))
        {
            errors.push(FieldError::not_found(
                &format!("{path}.targetContainerName"),
                target,
            ));
        }
        for field in FORBIDDEN_FIELDS {
            if container.get(*field).is_some_and(is_set) {
                errors.push(FieldError::forbidden(
                    &format!("{path}.{field}"),
                    "cannot be set for an Ephemeral Container",
                ));
            }
        }
        let mounts = container
            .get("volumeMounts")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice);
        for (i, mount) in mounts.iter().enumerate() {
            for field in ["subPath", "subPathExpr"] {
                if mount.get(field).is_some_and(is_set) {
                    errors.push(FieldError::forbidden(
                        &format!("{path}.volumeMounts[{i}].{field}"),
                        "cannot be set for an Ephemeral Container",
                    ));
                }
            }
        }
    }
    // Existing ephemeral containers stay as they are (a patch may reorder them).
    let new_ephemeral = containers(new, "ephemeralContainers");
    for existing in containers(old, "ephemeralContainers") {
        let name = name_of(existing);
        match new_ephemeral.iter().find(|c| name_of(c) == name) {
            None => errors.push(FieldError::forbidden(
                "spec.ephemeralContainers",
                format!("existing ephemeral containers {name:?} may not be removed\n"),
            )),
            Some(now) if now != existing => errors.push(FieldError::forbidden(
                &format!("spec.ephemeralContainers[{name}]"),
                format!("existing ephemeral containers {name:?} may not be changed\n"),
            )),
            Some(_) => {}
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(ephemeral: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "d"},
               "spec": {"containers": [{"name": "app", "image": "nginx"}],
                        "initContainers": [{"name": "setup", "image": "busybox"}],
                        "ephemeralContainers": ephemeral}})
    }

    fn debugger() -> Value {
        json!({"name": "debugger", "image": "busybox", "targetContainerName": "app",
               "stdin": true, "tty": true})
    }

    #[test]
    fn ephemeral_container_updates_are_validated_as_kube_validates_them() {
        let mut with_ports = debugger();
        with_ports["ports"] = json!([{"containerPort": 80}]);
        with_ports["readinessProbe"] = json!({"exec": {"command": ["true"]}});
        let mut changed = debugger();
        changed["image"] = json!("alpine");
        let mut subpath = debugger();
        subpath["volumeMounts"] = json!([{"name": "v", "mountPath": "/v", "subPath": "x"}]);
        let cases: [(&str, Value, Value, &[&str]); 8] = [
            ("adding one", json!([]), json!([debugger()]), &[]),
            (
                "keeping one and adding another",
                json!([debugger()]),
                json!([{"name": "second", "image": "busybox"}, debugger()]),
                &[],
            ),
            (
                "a name taken by a container",
                json!([]),
                json!([{"name": "app", "image": "busybox"}]),
                &["spec.ephemeralContainers[0].name: Duplicate value: \"app\""],
            ),
            (
                "a target that does not exist",
                json!([]),
                json!([{"name": "d", "image": "busybox", "targetContainerName": "nope"}]),
                &["spec.ephemeralContainers[0].targetContainerName: Not found: \"nope\""],
            ),
            (
                "ports and probes",
                json!([]),
                json!([with_ports]),
                &[
                    "spec.ephemeralContainers[0].ports: Forbidden: cannot be set for an \
                     Ephemeral Container",
                    "spec.ephemeralContainers[0].readinessProbe: Forbidden: cannot be set for \
                     an Ephemeral Container",
                ],
            ),
            (
                "a subPath",
                json!([]),
                json!([subpath]),
                &[
                    "spec.ephemeralContainers[0].volumeMounts[0].subPath: Forbidden: cannot be \
                   set for an Ephemeral Container",
                ],
            ),
            (
                "removing one",
                json!([debugger()]),
                json!([]),
                &[
                    "spec.ephemeralContainers: Forbidden: existing ephemeral containers \
                   \"debugger\" may not be removed\n",
                ],
            ),
            (
                "changing one",
                json!([debugger()]),
                json!([changed]),
                &[
                    "spec.ephemeralContainers[debugger]: Forbidden: existing ephemeral \
                   containers \"debugger\" may not be changed\n",
                ],
            ),
        ];
        for (what, old, new, want) in cases {
            let old = pod(old);
            let merged = merge(&old, &pod(new));
            let got: Vec<String> = validate(&old, &merged)
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message()))
                .collect();
            assert_eq!(got, want, "{what}");
        }
    }

    #[test]
    fn only_the_ephemeral_containers_change() {
        let old = pod(json!([]));
        let mut new = pod(json!([debugger()]));
        new["spec"]["containers"][0]["image"] = json!("evil");
        new["metadata"]["labels"] = json!({"a": "b"});
        let merged = merge(&old, &new);
        assert_eq!(merged["spec"]["containers"][0]["image"], "nginx");
        assert_eq!(merged["metadata"].get("labels"), None);
        assert_eq!(merged["spec"]["ephemeralContainers"][0]["name"], "debugger");
    }

    #[test]
    fn static_pods_take_no_ephemeral_containers() {
        let mut old = pod(json!([]));
        old["metadata"]["annotations"] = json!({MIRROR_POD: "x"});
        let merged = merge(&old, &pod(json!([debugger()])));
        let got: Vec<String> = validate(&old, &merged)
            .iter()
            .map(FieldError::message)
            .collect();
        assert_eq!(
            got,
            ["Forbidden: static pods do not support ephemeral containers"]
        );
    }
}

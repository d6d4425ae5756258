//! Pods: pod spec, containers, probes, volumes, tolerations, conversions.

use serde_json::{Value, json};

use super::{Case, container, default_tolerations, run, with_spec_defaults};
use crate::defaulting::apply_defaults;

/// A Pod whose spec is `spec`.
fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": spec})
}

/// What a Pod spec holding `fields` becomes: the pod spec defaults, `enableServiceLinks`, and
/// the default tolerations.
fn pod_defaults(fields: Value) -> Value {
    let mut spec = with_spec_defaults(fields);
    if let Some(spec) = spec.as_object_mut() {
        spec.entry("enableServiceLinks").or_insert(json!(true));
        spec.entry("tolerations").or_insert(default_tolerations());
    }
    pod(spec)
}

fn case(name: &'static str, input: Value, expected: Value) -> Case {
    Case {
        name,
        group: "",
        kind: "Pod",
        input,
        expected,
    }
}

#[test]
fn pods() {
    run(vec![
        case(
            "a bare container gets every pod and container default",
            pod(json!({"containers": [{"name": "web", "image": "nginx:1.27"}]})),
            pod_defaults(json!({"containers": [container("web", "nginx:1.27", "IfNotPresent")]})),
        ),
        case(
            "values the client set are kept, zero values of plain fields are not",
            pod(json!({
                "containers": [{"name": "c", "image": "app", "imagePullPolicy": "",
                    "terminationMessagePolicy": "FallbackToLogsOnError"}],
                "restartPolicy": "Never", "dnsPolicy": "", "terminationGracePeriodSeconds": 0,
                "enableServiceLinks": false, "schedulerName": null, "securityContext": {"runAsUser": 1000},
            })),
            pod(json!({
                "containers": [{"name": "c", "image": "app", "imagePullPolicy": "Always",
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "FallbackToLogsOnError"}],
                "restartPolicy": "Never", "dnsPolicy": "ClusterFirst", "terminationGracePeriodSeconds": 0,
                "enableServiceLinks": false, "schedulerName": "default-scheduler",
                "securityContext": {"runAsUser": 1000}, "tolerations": default_tolerations(),
            })),
        ),
        case(
            "probes of every handler type, and lifecycle hooks",
            pod(json!({"containers": [
                {"name": "a", "image": "a:1",
                 "livenessProbe": {"exec": {"command": ["true"]}},
                 "readinessProbe": {"httpGet": {"port": 8080}},
                 "startupProbe": {"tcpSocket": {"port": 8080}, "failureThreshold": 30, "periodSeconds": 0},
                 "lifecycle": {"postStart": {"httpGet": {"port": 80}}, "preStop": {"exec": {"command": ["stop"]}}}},
                {"name": "b", "image": "b:1",
                 "livenessProbe": {"grpc": {"port": 2379}, "timeoutSeconds": 5},
                 "readinessProbe": {"grpc": {"port": 2379, "service": "etcd"}},
                 "startupProbe": {"httpGet": {"port": "http", "path": "/healthz", "scheme": "HTTPS"}}},
            ]})),
            pod_defaults(json!({"containers": [
                merge(container("a", "a:1", "IfNotPresent"), json!({
                    "livenessProbe": probe(json!({"exec": {"command": ["true"]}})),
                    "readinessProbe": probe(json!({"httpGet": {"port": 8080, "path": "/", "scheme": "HTTP"}})),
                    "startupProbe": probe(json!({"tcpSocket": {"port": 8080}, "failureThreshold": 30})),
                    "lifecycle": {"postStart": {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}},
                                  "preStop": {"exec": {"command": ["stop"]}}},
                })),
                merge(container("b", "b:1", "IfNotPresent"), json!({
                    "livenessProbe": probe(json!({"grpc": {"port": 2379, "service": ""}, "timeoutSeconds": 5})),
                    "readinessProbe": probe(json!({"grpc": {"port": 2379, "service": "etcd"}})),
                    "startupProbe": probe(json!({"httpGet": {"port": "http", "path": "/healthz", "scheme": "HTTPS"}})),
                })),
            ]})),
        ),
        case(
            "requests default to limits in pods, init containers included, not ephemeral ones",
            pod(json!({
                "containers": [{"name": "c", "image": "c:1",
                    "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m"}}}],
                "initContainers": [{"name": "i", "image": "i:1", "resources": {"limits": {"cpu": "1"}}}],
                "ephemeralContainers": [{"name": "e", "image": "e:1", "resources": {"limits": {"cpu": "1"}}}],
            })),
            pod_defaults(json!({
                "containers": [merge(container("c", "c:1", "IfNotPresent"), json!({
                    "resources": {"limits": {"cpu": "500m", "memory": "128Mi"},
                                  "requests": {"cpu": "100m", "memory": "128Mi"}}}))],
                "initContainers": [merge(container("i", "i:1", "IfNotPresent"), json!({
                    "resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}}))],
                "ephemeralContainers": [merge(container("e", "e:1", "IfNotPresent"), json!({
                    "resources": {"limits": {"cpu": "1"}}}))],
            })),
        ),
        case(
            "ports are TCP; with host networking, host ports default to container ports",
            pod(
                json!({"hostNetwork": true, "containers": [{"name": "c", "image": "c:1", "ports": [
                {"containerPort": 8080}, {"containerPort": 53, "protocol": "UDP", "hostPort": 5353}]}]}),
            ),
            pod_defaults(
                json!({"hostNetwork": true, "containers": [merge(container("c", "c:1", "IfNotPresent"), json!({"ports": [
                {"containerPort": 8080, "hostPort": 8080, "protocol": "TCP"},
                {"containerPort": 53, "protocol": "UDP", "hostPort": 5353}]}))]}),
            ),
        ),
        case(
            "no host ports without host networking; env field references are v1",
            pod(
                json!({"containers": [{"name": "c", "image": "c:1", "ports": [{"containerPort": 80}],
                "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                        {"name": "PLAIN", "value": "x"}]}]}),
            ),
            pod_defaults(
                json!({"containers": [merge(container("c", "c:1", "IfNotPresent"), json!({
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                "env": [{"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName", "apiVersion": "v1"}}},
                        {"name": "PLAIN", "value": "x"}]}))]}),
            ),
        ),
        case(
            "volume sources",
            pod(json!({"containers": [], "volumes": [
                {"name": "scratch"},
                {"name": "s", "secret": {"secretName": "x"}},
                {"name": "cm", "configMap": {"name": "x", "defaultMode": 256}},
                {"name": "d", "downwardAPI": {"items": [{"path": "n", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                {"name": "p", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token"}},
                    {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
                    {"configMap": {"name": "ca"}}]}},
                {"name": "h", "hostPath": {"path": "/var/log"}},
                {"name": "e", "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"]}}}},
                {"name": "r", "rbd": {"monitors": ["m"], "image": "i"}},
                {"name": "i", "iscsi": {"targetPortal": "t", "iqn": "q", "lun": 0}},
                {"name": "az", "azureDisk": {"diskName": "d", "diskURI": "u"}},
                {"name": "sc", "scaleIO": {"gateway": "g", "system": "s", "secretRef": {"name": "x"}}},
                {"name": "pvc", "persistentVolumeClaim": {"claimName": "data"}},
            ]})),
            pod_defaults(json!({"containers": [], "volumes": [
                {"name": "scratch", "emptyDir": {}},
                {"name": "s", "secret": {"secretName": "x", "defaultMode": 420}},
                {"name": "cm", "configMap": {"name": "x", "defaultMode": 256}},
                {"name": "d", "downwardAPI": {"defaultMode": 420, "items": [
                    {"path": "n", "fieldRef": {"fieldPath": "metadata.name", "apiVersion": "v1"}}]}},
                {"name": "p", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
                    {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace", "apiVersion": "v1"}}]}},
                    {"configMap": {"name": "ca"}}]}},
                {"name": "h", "hostPath": {"path": "/var/log", "type": ""}},
                {"name": "e", "ephemeral": {"volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem"}}}},
                {"name": "r", "rbd": {"monitors": ["m"], "image": "i", "pool": "rbd", "user": "admin", "keyring": "/etc/ceph/keyring"}},
                {"name": "i", "iscsi": {"targetPortal": "t", "iqn": "q", "lun": 0, "iscsiInterface": "default"}},
                {"name": "az", "azureDisk": {"diskName": "d", "diskURI": "u", "cachingMode": "ReadWrite", "fsType": "ext4", "readOnly": false, "kind": "Shared"}},
                {"name": "sc", "scaleIO": {"gateway": "g", "system": "s", "secretRef": {"name": "x"}, "storageMode": "ThinProvisioned", "fsType": "xfs"}},
                {"name": "pvc", "persistentVolumeClaim": {"claimName": "data"}},
            ]})),
        ),
        case(
            "a toleration of one default taint keeps it; the other is added",
            pod(json!({"containers": [], "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}]})),
            pod_defaults(json!({"containers": [], "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]})),
        ),
        case(
            "a toleration with no key and no effect tolerates both default taints",
            pod(json!({"containers": [], "tolerations": [{"operator": "Exists"}]})),
            pod_defaults(json!({"containers": [], "tolerations": [{"operator": "Exists"}]})),
        ),
        case(
            "a NoSchedule toleration of a default taint does not count",
            pod(json!({"containers": [], "tolerations": [
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoSchedule"}]})),
            pod_defaults(json!({"containers": [], "tolerations": [
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoSchedule"},
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]})),
        ),
        case(
            "serviceAccount is an alias of serviceAccountName, which wins",
            pod(json!({"containers": [], "serviceAccount": "old", "serviceAccountName": "new"})),
            pod_defaults(
                json!({"containers": [], "serviceAccount": "new", "serviceAccountName": "new"}),
            ),
        ),
        case(
            "serviceAccount alone sets serviceAccountName",
            pod(json!({"containers": [], "serviceAccount": "builder"})),
            pod_defaults(
                json!({"containers": [], "serviceAccount": "builder", "serviceAccountName": "builder"}),
            ),
        ),
    ]);
}

/// `probe` with the four probe-level defaults filled where it has none.
fn probe(fields: Value) -> Value {
    merge(
        json!({"timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}),
        fields,
    )
}

/// `base` with the fields of `extra` added or replaced.
fn merge(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

#[test]
fn image_pull_policy_follows_the_image_tag() {
    let digest = "sha256:9b7c3e1f0a2d4c6e8f0a1b3c5d7e9f1a2b4c6d8e0f1a3b5c7d9e1f2a4b6c8d0e";
    let cases = [
        ("nginx", "Always"),
        ("nginx:latest", "Always"),
        ("nginx:1.27", "IfNotPresent"),
        ("registry.local:5000/team/app", "Always"),
        (&format!("nginx@{digest}"), "IfNotPresent"),
        (&format!("nginx:latest@{digest}"), "Always"),
        ("Not/A/Valid/Reference", "IfNotPresent"),
    ];
    for (image, policy) in cases {
        let mut object = pod(json!({"containers": [{"name": "c", "image": image}]}));
        apply_defaults("", "Pod", &mut object);
        assert_eq!(
            object["spec"]["containers"][0]["imagePullPolicy"], policy,
            "image {image:?}"
        );
    }
    let mut explicit =
        pod(json!({"containers": [{"name": "c", "image": "nginx", "imagePullPolicy": "Never"}]}));
    apply_defaults("", "Pod", &mut explicit);
    assert_eq!(
        explicit["spec"]["containers"][0]["imagePullPolicy"],
        "Never"
    );
    let mut missing = pod(json!({"containers": [{"name": "c"}]}));
    apply_defaults("", "Pod", &mut missing);
    assert_eq!(
        missing["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent",
        "no image: Kubernetes' parser fails and reports no tag"
    );
}

#[test]
fn pod_ip_and_pod_ips_mirror_each_other() {
    let cases = [
        (
            json!({"phase": "Running", "podIP": "10.244.1.5"}),
            json!({"phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}]}),
        ),
        (
            json!({"podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}]}),
            json!({"podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}]}),
        ),
        (
            json!({"podIP": "10.244.1.6", "podIPs": [{"ip": "10.244.1.5"}]}),
            json!({"podIP": "10.244.1.6", "podIPs": [{"ip": "10.244.1.6"}]}),
        ),
        (json!({"phase": "Pending"}), json!({"phase": "Pending"})),
    ];
    for (status, expected) in cases {
        let mut object = pod(json!({"containers": []}));
        object["status"] = status.clone();
        apply_defaults("", "Pod", &mut object);
        assert_eq!(object["status"], expected, "status {status}");
    }
}

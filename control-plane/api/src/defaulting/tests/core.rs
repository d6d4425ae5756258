//! The core group apart from Pods and Services.

use serde_json::{Value, json};

use super::{Case, container, run, with_spec_defaults};

fn case(name: &'static str, kind: &'static str, input: Value, expected: Value) -> Case {
    Case {
        name,
        group: "",
        kind,
        input,
        expected,
    }
}

/// A kind without defaults: the object is stored as sent.
fn unchanged(kind: &'static str, object: Value) -> Case {
    case("no defaults", kind, object.clone(), object)
}

#[test]
fn core_kinds() {
    run(vec![
        case(
            "Namespace: name label and Active phase",
            "Namespace",
            json!({"metadata": {"name": "team-a", "labels": {"kubernetes.io/metadata.name": "other", "env": "dev"}}}),
            json!({"metadata": {"name": "team-a", "labels": {"kubernetes.io/metadata.name": "team-a", "env": "dev"}},
                   "status": {"phase": "Active"}}),
        ),
        case(
            "Namespace without a name (generateName): no label",
            "Namespace",
            json!({"metadata": {"generateName": "ns-"}, "status": {"phase": "Terminating"}}),
            json!({"metadata": {"generateName": "ns-"}, "status": {"phase": "Terminating"}}),
        ),
        case(
            "Node: allocatable from capacity, podCIDRs from podCIDR",
            "Node",
            json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.1.0/24"},
                   "status": {"capacity": {"cpu": "2", "pods": "110"}}}),
            json!({"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]},
                   "status": {"capacity": {"cpu": "2", "pods": "110"}, "allocatable": {"cpu": "2", "pods": "110"}}}),
        ),
        case(
            "Node: podCIDR from podCIDRs; allocatable kept",
            "Node",
            json!({"spec": {"podCIDRs": ["10.244.2.0/24", "fd00:2::/64"]},
                   "status": {"capacity": {"cpu": "2"}, "allocatable": {"cpu": "1900m"}}}),
            json!({"spec": {"podCIDR": "10.244.2.0/24", "podCIDRs": ["10.244.2.0/24", "fd00:2::/64"]},
                   "status": {"capacity": {"cpu": "2"}, "allocatable": {"cpu": "1900m"}}}),
        ),
        case(
            "PersistentVolume",
            "PersistentVolume",
            json!({"spec": {"capacity": {"storage": "1Gi"}, "hostPath": {"path": "/data"}}}),
            json!({"spec": {"capacity": {"storage": "1Gi"}, "hostPath": {"path": "/data", "type": ""},
                            "persistentVolumeReclaimPolicy": "Retain", "volumeMode": "Filesystem"},
                   "status": {"phase": "Pending"}}),
        ),
        case(
            "PersistentVolume: the client's policy and mode are kept",
            "PersistentVolume",
            json!({"spec": {"persistentVolumeReclaimPolicy": "Delete", "volumeMode": "Block"}, "status": {"phase": "Bound"}}),
            json!({"spec": {"persistentVolumeReclaimPolicy": "Delete", "volumeMode": "Block"}, "status": {"phase": "Bound"}}),
        ),
        case(
            "PersistentVolumeClaim",
            "PersistentVolumeClaim",
            json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
            json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                            "volumeMode": "Filesystem"},
                   "status": {"phase": "Pending"}}),
        ),
        case(
            "ReplicationController: selector, labels and replicas from the template",
            "ReplicationController",
            json!({"metadata": {"name": "rc"}, "spec": {"template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}),
            json!({"metadata": {"name": "rc", "labels": {"app": "web"}}, "spec": {
                "replicas": 1, "selector": {"app": "web"}, "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": with_spec_defaults(json!({"containers": [container("web", "nginx", "Always")]}))}}}),
        ),
        case(
            "ReplicationController: the client's selector, labels and zero replicas are kept",
            "ReplicationController",
            json!({"metadata": {"labels": {"tier": "x"}}, "spec": {"replicas": 0, "selector": {"app": "web", "v": "1"},
                "template": {"metadata": {"labels": {"app": "web", "v": "1"}}, "spec": {"containers": []}}}}),
            json!({"metadata": {"labels": {"tier": "x"}}, "spec": {"replicas": 0, "selector": {"app": "web", "v": "1"},
                "template": {"metadata": {"labels": {"app": "web", "v": "1"}},
                             "spec": with_spec_defaults(json!({"containers": []}))}}}),
        ),
        case(
            "PodTemplate: pod spec defaults, not the Pod-only ones",
            "PodTemplate",
            json!({"template": {"spec": {"containers": [{"name": "c", "image": "busybox:1.36",
                "resources": {"limits": {"cpu": "1"}}}]}}}),
            json!({"template": {"spec": with_spec_defaults(json!({"containers": [{"name": "c", "image": "busybox:1.36",
                "imagePullPolicy": "IfNotPresent", "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File", "resources": {"limits": {"cpu": "1"}}}]}))}}),
        ),
        case(
            "Endpoints: ports are TCP",
            "Endpoints",
            json!({"subsets": [{"addresses": [{"ip": "10.244.1.5"}], "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]}]}),
            json!({"subsets": [{"addresses": [{"ip": "10.244.1.5"}], "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}]}]}),
        ),
        case(
            "LimitRange: container defaults from max, requests from the defaults then min",
            "LimitRange",
            json!({"spec": {"limits": [
                {"type": "Container", "max": {"cpu": "2", "memory": "1Gi"}, "min": {"cpu": "100m", "ephemeral-storage": "1Gi"},
                 "default": {"memory": "512Mi"}},
                {"type": "Pod", "max": {"cpu": "4"}}]}}),
            json!({"spec": {"limits": [
                {"type": "Container", "max": {"cpu": "2", "memory": "1Gi"}, "min": {"cpu": "100m", "ephemeral-storage": "1Gi"},
                 "default": {"cpu": "2", "memory": "512Mi"},
                 "defaultRequest": {"cpu": "2", "memory": "512Mi", "ephemeral-storage": "1Gi"}},
                {"type": "Pod", "max": {"cpu": "4"}}]}}),
        ),
        case(
            "Secret: type Opaque, stringData folded into data",
            "Secret",
            json!({"data": {"a": "eA=="}, "stringData": {"password": "hunter2", "b": "ab", "a": "y"}}),
            json!({"type": "Opaque", "data": {"a": "eQ==", "password": "aHVudGVyMg==", "b": "YWI="}}),
        ),
        case(
            "Secret: the client's type is kept",
            "Secret",
            json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}),
            json!({"type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}),
        ),
        unchanged("ConfigMap", json!({"metadata": {"name": "c"}})),
        unchanged("ServiceAccount", json!({"metadata": {"name": "default"}})),
        unchanged(
            "Event",
            json!({"metadata": {"name": "e"}, "involvedObject": {"kind": "Pod"}, "reason": "Started"}),
        ),
        unchanged("ResourceQuota", json!({"spec": {"hard": {"pods": "10"}}})),
    ]);
}

#[test]
fn secret_string_data_becomes_base64_data() {
    let mut s = json!({"data": {"a": "eA=="}, "stringData": {"password": "hunter2", "b": "ab"}});
    crate::defaulting::apply_defaults("", "Secret", &mut s);
    assert_eq!(
        s,
        json!({"type": "Opaque", "data": {"a": "eA==", "password": "aHVudGVyMg==", "b": "YWI="}})
    );
}

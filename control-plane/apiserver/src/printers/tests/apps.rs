//! DaemonSet, StatefulSet and ControllerRevision.

use serde_json::json;

use super::{CREATED, cells_of};

#[test]
fn daemon_set_row() {
    let daemon_set = json!({
        "metadata": {"name": "node-exporter", "namespace": "monitoring", "creationTimestamp": CREATED},
        "spec": {
            "selector": {"matchLabels": {"app": "node-exporter"}},
            "template": {
                "metadata": {"labels": {"app": "node-exporter"}},
                "spec": {
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "containers": [{"name": "exporter", "image": "prom/node-exporter:v1.8.0"}],
                },
            },
        },
        "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                   "updatedNumberScheduled": 3, "numberAvailable": 2, "numberMisscheduled": 0},
    });
    assert_eq!(
        cells_of("apps", "DaemonSet", &daemon_set),
        row![
            "node-exporter",
            3,
            3,
            2,
            3,
            2,
            "kubernetes.io/os=linux",
            "5m",
            "exporter",
            "prom/node-exporter:v1.8.0",
            "app=node-exporter"
        ]
    );
    let mut anywhere = daemon_set.clone();
    anywhere["spec"]["template"]["spec"]
        .as_object_mut()
        .expect("pod spec")
        .remove("nodeSelector");
    assert_eq!(cells_of("apps", "DaemonSet", &anywhere)[6], "<none>");
}

#[test]
fn stateful_set_shows_ready_of_desired() {
    let stateful_set = json!({
        "metadata": {"name": "db", "creationTimestamp": CREATED},
        "spec": {
            "replicas": 3,
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {"spec": {"containers": [{"name": "postgres", "image": "postgres:16"}]}},
        },
        "status": {"replicas": 3, "readyReplicas": 1},
    });
    assert_eq!(
        cells_of("apps", "StatefulSet", &stateful_set),
        row!["db", "1/3", "5m", "postgres", "postgres:16"]
    );
    let fresh =
        json!({"metadata": {"name": "one"}, "spec": {"template": {"spec": {"containers": []}}}});
    assert_eq!(
        cells_of("apps", "StatefulSet", &fresh)[1],
        "0/1",
        "replicas default to 1"
    );
}

#[test]
fn controller_revision_names_its_controller() {
    let revision = json!({
        "metadata": {
            "name": "web-7d4b9c",
            "creationTimestamp": CREATED,
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "1"},
                {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "2",
                 "controller": true},
            ],
        },
        "data": {},
        "revision": 2,
    });
    assert_eq!(
        cells_of("apps", "ControllerRevision", &revision),
        row!["web-7d4b9c", "statefulset.apps/web", 2, "5m"]
    );
    let mut core_owner = revision.clone();
    core_owner["metadata"]["ownerReferences"][1]["apiVersion"] = json!("v1");
    core_owner["metadata"]["ownerReferences"][1]["kind"] = json!("Pod");
    assert_eq!(
        cells_of("apps", "ControllerRevision", &core_owner)[1],
        "pod/web"
    );
    let orphan = json!({"metadata": {"name": "r"}, "revision": 1});
    assert_eq!(cells_of("apps", "ControllerRevision", &orphan)[1], "<none>");
}

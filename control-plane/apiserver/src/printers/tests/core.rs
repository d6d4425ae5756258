//! ServiceAccount, ReplicationController, PodTemplate, ResourceQuota and LimitRange.

use serde_json::json;

use super::{CREATED, cells_of};

#[test]
fn service_account_counts_its_secrets() {
    let account = json!({
        "metadata": {"name": "builder", "namespace": "ci", "creationTimestamp": CREATED},
        "secrets": [{"name": "builder-token"}, {"name": "registry"}],
    });
    assert_eq!(
        cells_of("", "ServiceAccount", &account),
        row!["builder", 2, "5m"]
    );
    let default = json!({"metadata": {"name": "default", "creationTimestamp": CREATED}});
    assert_eq!(cells_of("", "ServiceAccount", &default)[1], 0);
}

#[test]
fn replication_controller_row() {
    let controller = json!({
        "metadata": {"name": "frontend", "creationTimestamp": CREATED},
        "spec": {
            "replicas": 3,
            "selector": {"tier": "front", "app": "guestbook"},
            "template": {
                "metadata": {"labels": {"app": "guestbook", "tier": "front"}},
                "spec": {"containers": [{"name": "php", "image": "gb-frontend:v4"}]},
            },
        },
        "status": {"replicas": 3, "readyReplicas": 2},
    });
    assert_eq!(
        cells_of("", "ReplicationController", &controller),
        row![
            "frontend",
            3,
            3,
            2,
            "5m",
            "php",
            "gb-frontend:v4",
            "app=guestbook,tier=front"
        ]
    );
    // Kubernetes defaults the replicas to 1 and an empty selector to the template's labels.
    let mut defaulted = controller.clone();
    defaulted["spec"]
        .as_object_mut()
        .expect("spec")
        .retain(|k, _| k == "template");
    let c = cells_of("", "ReplicationController", &defaulted);
    assert_eq!(
        (c[1].clone(), c[7].clone()),
        (json!(1), json!("app=guestbook,tier=front"))
    );
}

#[test]
fn pod_template_row_has_no_age() {
    let template = json!({
        "metadata": {"name": "batch-worker", "creationTimestamp": CREATED},
        "template": {
            "metadata": {"labels": {"role": "worker"}},
            "spec": {"containers": [
                {"name": "worker", "image": "busybox:1.36"},
                {"name": "sidecar", "image": "envoy:v1.30"},
            ]},
        },
    });
    assert_eq!(
        cells_of("", "PodTemplate", &template),
        row![
            "batch-worker",
            "worker,sidecar",
            "busybox:1.36,envoy:v1.30",
            "role=worker"
        ]
    );
    let unlabelled = json!({"metadata": {"name": "t"}, "template": {"spec": {"containers": []}}});
    assert_eq!(
        cells_of("", "PodTemplate", &unlabelled),
        row!["t", "", "", "<none>"]
    );
}

#[test]
fn resource_quota_splits_requests_and_limits() {
    let quota = json!({
        "metadata": {"name": "compute", "creationTimestamp": CREATED},
        "spec": {"hard": {"pods": "10"}},
        "status": {
            "hard": {"requests.cpu": "1", "pods": "10", "limits.memory": "2Gi",
                     "requests.memory": "1Gi", "limits.cpu": "2"},
            "used": {"requests.cpu": "500m", "pods": "3", "limits.cpu": "1",
                     "requests.memory": "256Mi"},
        },
    });
    assert_eq!(
        cells_of("", "ResourceQuota", &quota),
        row![
            "compute",
            "pods: 3/10, requests.cpu: 500m/1, requests.memory: 256Mi/1Gi",
            "limits.cpu: 1/2, limits.memory: 0/2Gi",
            "5m"
        ]
    );
    let fresh = json!({"metadata": {"name": "q", "creationTimestamp": CREATED},
                       "spec": {"hard": {"pods": "10"}}});
    assert_eq!(
        cells_of("", "ResourceQuota", &fresh),
        row!["q", "", "", "5m"],
        "nothing until the quota controller fills the status"
    );
}

#[test]
fn limit_range_gets_the_default_table() {
    let range = json!({
        "metadata": {"name": "cpu-defaults", "creationTimestamp": CREATED},
        "spec": {"limits": [{"type": "Container", "default": {"cpu": "500m"}}]},
    });
    assert_eq!(
        cells_of("", "LimitRange", &range),
        row!["cpu-defaults", "2024-05-01T10:00:00Z"]
    );
}

//! HorizontalPodAutoscaler and PodDisruptionBudget.

use serde_json::{Value, json};

use super::{CREATED, cells_of};

fn autoscaler(metrics: Value, current: Value) -> Value {
    json!({
        "metadata": {"name": "web", "creationTimestamp": CREATED},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 2,
            "maxReplicas": 10,
            "metrics": metrics,
        },
        "status": {"currentReplicas": 3, "desiredReplicas": 3, "currentMetrics": current},
    })
}

fn cpu_utilization(target: i64) -> Value {
    json!({"type": "Resource",
           "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}})
}

#[test]
fn autoscaler_row() {
    let hpa = autoscaler(
        json!([cpu_utilization(80)]),
        json!([{"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": 40, "averageValue": "120m"}}}]),
    );
    assert_eq!(
        cells_of("autoscaling", "HorizontalPodAutoscaler", &hpa),
        row!["web", "Deployment/web", "cpu: 40%/80%", "2", 10, 3, "5m"]
    );
}

#[test]
fn autoscaler_targets() {
    let targets = |metrics: Value, current: Value| {
        cells_of(
            "autoscaling",
            "HorizontalPodAutoscaler",
            &autoscaler(metrics, current),
        )[2]
        .clone()
    };
    assert_eq!(
        targets(json!([cpu_utilization(80)]), json!([])),
        "cpu: <unknown>/80%",
        "not measured yet"
    );
    assert_eq!(
        targets(json!([]), json!(null)),
        "cpu: <unknown>/80%",
        "no metrics defaults to 80% CPU"
    );
    let memory_value = json!({"type": "Resource", "resource": {"name": "memory",
        "target": {"type": "AverageValue", "averageValue": "500Mi"}}});
    let pods = json!({"type": "Pods", "pods": {"metric": {"name": "requests_per_second"},
        "target": {"type": "AverageValue", "averageValue": "1k"}}});
    let external = json!({"type": "External", "external": {"metric": {"name": "queue_depth"},
        "target": {"type": "AverageValue", "averageValue": "30"}}});
    let object = json!({"type": "Object", "object": {"metric": {"name": "hits"},
        "describedObject": {"kind": "Ingress", "name": "main"},
        "target": {"type": "Value", "value": "2k"}}});
    let container = json!({"type": "ContainerResource", "containerResource": {"name": "cpu",
        "container": "app", "target": {"type": "Utilization", "averageUtilization": 60}}});
    assert_eq!(
        targets(
            json!([memory_value, pods]),
            json!([{"type": "Resource", "resource": {"name": "memory",
                    "current": {"averageValue": "300Mi"}}},
                   {"type": "Pods", "pods": {"metric": {"name": "requests_per_second"},
                    "current": {"averageValue": "800"}}}])
        ),
        "memory: 300Mi/500Mi, 800/1k"
    );
    assert_eq!(
        targets(
            json!([external, object]),
            json!([{"type": "External", "external": {"metric": {"name": "queue_depth"},
                    "current": {"averageValue": "12"}}}])
        ),
        "12/30 (avg), <unknown>/2k"
    );
    assert_eq!(
        targets(
            json!([container, cpu_utilization(70), cpu_utilization(90)]),
            json!([{"type": "ContainerResource", "containerResource": {"name": "cpu",
                    "container": "app", "current": {"averageUtilization": 55}}}])
        ),
        "cpu: 55%/60%, cpu: <unknown>/70% + 1 more..."
    );
    assert_eq!(
        targets(json!([{"type": "Custom"}]), json!([])),
        "<unknown type>"
    );
}

#[test]
fn autoscaler_min_pods_default_to_one() {
    let mut hpa = autoscaler(json!([cpu_utilization(50)]), json!([]));
    hpa["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("minReplicas");
    assert_eq!(
        cells_of("autoscaling", "HorizontalPodAutoscaler", &hpa)[3],
        "1"
    );
}

#[test]
fn pod_disruption_budget_rows() {
    let budget = json!({
        "metadata": {"name": "zk", "creationTimestamp": CREATED},
        "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "zookeeper"}}},
        "status": {"disruptionsAllowed": 1, "currentHealthy": 3, "desiredHealthy": 2,
                   "expectedPods": 3},
    });
    assert_eq!(
        cells_of("policy", "PodDisruptionBudget", &budget),
        row!["zk", "2", "N/A", 1, "5m"]
    );
    let percent = json!({"metadata": {"name": "web", "creationTimestamp": CREATED},
                         "spec": {"maxUnavailable": "25%"}});
    assert_eq!(
        cells_of("policy", "PodDisruptionBudget", &percent),
        row!["web", "N/A", "25%", 0, "5m"]
    );
}

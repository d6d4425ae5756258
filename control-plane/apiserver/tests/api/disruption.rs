//! `pods/eviction` against PodDisruptionBudgets, ResourceQuota and LimitRange admission: the
//! answers kubectl shows.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Server, server};

const PODS: &str = "/api/v1/namespaces/default/pods";
const BUDGETS: &str = "/apis/policy/v1/namespaces/default/poddisruptionbudgets";

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": {"app": "web"}},
           "spec": {"containers": [{"name": "web", "image": "keelson/busybox:1"}]}})
}

/// A running, ready pod (a pending one is evicted without looking at budgets).
async fn running_pod(s: &Server, name: &str) {
    let mut created = s.ok(Method::POST, PODS, Some(pod(name))).await;
    created["status"] = json!({"phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}]});
    s.ok(Method::PUT, &format!("{PODS}/{name}/status"), Some(created))
        .await;
}

/// A budget over `app=web` whose controller has reported `allowed` disruptions.
async fn budget(s: &Server, name: &str, allowed: i64) {
    let mut created = s
        .ok(
            Method::POST,
            BUDGETS,
            Some(
                json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": name},
                "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}}),
            ),
        )
        .await;
    created["status"] = json!({"currentHealthy": 2 + allowed, "desiredHealthy": 2,
        "expectedPods": 2 + allowed, "disruptionsAllowed": allowed,
        "observedGeneration": created["metadata"]["generation"]});
    s.ok(
        Method::PUT,
        &format!("{BUDGETS}/{name}/status"),
        Some(created),
    )
    .await;
}

fn eviction(name: &str) -> Value {
    json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": name}})
}

async fn evict(s: &Server, name: &str) -> (StatusCode, Value) {
    s.call(
        Method::POST,
        &format!("{PODS}/{name}/eviction"),
        Some(eviction(name)),
    )
    .await
}

#[tokio::test]
async fn discovery_names_the_eviction_subresource_as_kubectl_drain_looks_for_it() {
    let s = server().await;
    let (_, list) = s.call(Method::GET, "/api/v1", None).await;
    let entry = list["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "pods/eviction")
        .cloned();
    assert_eq!(
        entry,
        Some(
            json!({"name": "pods/eviction", "singularName": "", "namespaced": true,
            "kind": "Eviction", "verbs": ["create"], "group": "policy", "version": "v1"})
        )
    );
}

#[tokio::test]
async fn an_exhausted_budget_refuses_with_429_and_a_spent_one_lets_the_pod_go() {
    let s = server().await;
    running_pod(&s, "web-1").await;
    budget(&s, "web", 0).await;
    let (status, body) = evict(&s, "web-1").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "Cannot evict pod as it would violate the pod's disruption budget.",
            "reason": "TooManyRequests",
            "details": {"causes": [{"reason": "DisruptionBudget",
                "message": "The disruption budget web needs 2 healthy pods and has 2 currently"}]},
            "code": 429})
    );
    s.ok(Method::GET, &format!("{PODS}/web-1"), None).await;

    // One disruption allowed: spent, recorded, and the pod is deleted.
    s.ok(Method::DELETE, &format!("{BUDGETS}/web"), None).await;
    budget(&s, "web", 1).await;
    let (status, body) = evict(&s, "web-1").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"], "Success");
    let (status, _) = s.call(Method::GET, &format!("{PODS}/web-1"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let spent = s.ok(Method::GET, &format!("{BUDGETS}/web"), None).await;
    assert_eq!(spent["status"]["disruptionsAllowed"], 0);
    assert!(
        spent["status"]["disruptedPods"]["web-1"].is_string(),
        "{spent}"
    );
    assert_eq!(
        spent["status"]["conditions"][0]["reason"],
        "InsufficientPods"
    );
}

#[tokio::test]
async fn without_a_budget_eviction_deletes_and_two_budgets_are_a_500() {
    let s = server().await;
    running_pod(&s, "lone").await;
    let (status, body) = evict(&s, "lone").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = s.call(Method::GET, &format!("{PODS}/lone"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    running_pod(&s, "twice").await;
    budget(&s, "a", 1).await;
    budget(&s, "b", 1).await;
    let (status, body) = evict(&s, "twice").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(
        body["message"],
        "This pod has more than one PodDisruptionBudget, which the eviction subresource does \
         not support."
    );
    let (status, body) = s
        .call(
            Method::POST,
            &format!("{PODS}/twice/eviction"),
            Some(eviction("other")),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn quota_refuses_the_pod_past_its_hard_limit_with_kubes_message() {
    let s = server().await;
    let quotas = "/api/v1/namespaces/default/resourcequotas";
    let mut quota = s
        .ok(
            Method::POST,
            quotas,
            Some(json!({"apiVersion": "v1", "kind": "ResourceQuota",
                "metadata": {"name": "compute"}, "spec": {"hard": {"pods": "2"}}})),
        )
        .await;
    // Before its controller has counted (no status.hard), a quota restricts nothing, as in kube.
    s.ok(Method::POST, PODS, Some(pod("early"))).await;
    // Hard but not yet used: refused until the count is there.
    quota["status"] = json!({"hard": {"pods": "2"}});
    quota = s
        .ok(
            Method::PUT,
            &format!("{quotas}/compute/status"),
            Some(quota),
        )
        .await;
    let (status, body) = s.call(Method::POST, PODS, Some(pod("unknown"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body["message"],
        "pods \"unknown\" is forbidden: status unknown for quota: compute, resources: pods"
    );
    quota["status"] = json!({"hard": {"pods": "2"}, "used": {"pods": "1"}});
    s.ok(
        Method::PUT,
        &format!("{quotas}/compute/status"),
        Some(quota),
    )
    .await;
    s.ok(Method::POST, PODS, Some(pod("first"))).await;
    let charged = s.ok(Method::GET, &format!("{quotas}/compute"), None).await;
    assert_eq!(charged["status"]["used"], json!({"pods": "2"}));
    let (status, body) = s.call(Method::POST, PODS, Some(pod("second"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "pods \"second\" is forbidden: exceeded quota: compute, requested: pods=1, \
                        used: pods=2, limited: pods=2",
            "reason": "Forbidden",
            "details": {"name": "second", "kind": "pods"}, "code": 403})
    );
    // Other kinds are not charged to a pods quota.
    s.ok(
        Method::POST,
        "/api/v1/namespaces/default/configmaps",
        Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})),
    )
    .await;
}

#[tokio::test]
async fn limit_ranges_default_container_resources_and_refuse_past_max() {
    let s = server().await;
    s.ok(
        Method::POST,
        "/api/v1/namespaces/default/limitranges",
        Some(
            json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "limits"},
            "spec": {"limits": [{"type": "Container",
                "default": {"cpu": "500m", "memory": "128Mi"},
                "defaultRequest": {"cpu": "100m", "memory": "64Mi"},
                "max": {"cpu": "1"}}]}}),
        ),
    )
    .await;
    let created = s.ok(Method::POST, PODS, Some(pod("defaulted"))).await;
    assert_eq!(
        created["spec"]["containers"][0]["resources"],
        json!({"limits": {"cpu": "500m", "memory": "128Mi"},
               "requests": {"cpu": "100m", "memory": "64Mi"}})
    );
    assert_eq!(
        created["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container web; cpu, memory limit for \
         container web"
    );
    let mut big = pod("big");
    big["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "2"}});
    let (status, body) = s.call(Method::POST, PODS, Some(big)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body["message"],
        "pods \"big\" is forbidden: maximum cpu usage per Container is 1, but limit is 2"
    );
}

#[tokio::test]
async fn a_budget_awaiting_its_controller_answers_429_with_retry_after() {
    let s = server().await;
    running_pod(&s, "web-1").await;
    let mut created = s
        .ok(
            Method::POST,
            BUDGETS,
            Some(
                json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                "metadata": {"name": "stale"},
                "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}}),
            ),
        )
        .await;
    created["status"] = json!({"currentHealthy": 3, "desiredHealthy": 1, "expectedPods": 3,
        "disruptionsAllowed": 2, "observedGeneration": 0});
    s.ok(
        Method::PUT,
        &format!("{BUDGETS}/stale/status"),
        Some(created),
    )
    .await;
    let (status, headers, body) = s
        .exchange(
            super::ADMIN_TOKEN,
            Method::POST,
            &format!("{PODS}/web-1/eviction"),
            &[(axum::http::header::CONTENT_TYPE, "application/json")],
            eviction("web-1").to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("10")
    );
    assert_eq!(body["details"]["retryAfterSeconds"], 10, "{body}");
}

/// A quota `name` with `hard` whose controller has counted `used`.
async fn counted_quota(s: &Server, name: &str, spec: Value, used: Value) {
    let quotas = "/api/v1/namespaces/default/resourcequotas";
    let mut quota = s
        .ok(
            Method::POST,
            quotas,
            Some(json!({"apiVersion": "v1", "kind": "ResourceQuota",
                "metadata": {"name": name}, "spec": spec.clone()})),
        )
        .await;
    quota["status"] = json!({"hard": spec["hard"], "used": used});
    s.ok(Method::PUT, &format!("{quotas}/{name}/status"), Some(quota))
        .await;
}

#[tokio::test]
async fn scoped_quotas_charge_only_pods_in_scope() {
    let s = server().await;
    counted_quota(
        &s,
        "best-effort",
        json!({"hard": {"pods": "1"}, "scopes": ["BestEffort"]}),
        json!({"pods": "0"}),
    )
    .await;
    let mut sized = pod("sized");
    sized["spec"]["containers"][0]["resources"] = json!({"requests": {"cpu": "100m"}});
    s.ok(Method::POST, PODS, Some(sized)).await;
    s.ok(Method::POST, PODS, Some(pod("first"))).await;
    let (status, body) = s.call(Method::POST, PODS, Some(pod("second"))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body["message"],
        "pods \"second\" is forbidden: exceeded quota: best-effort, requested: pods=1, used: \
         pods=1, limited: pods=1"
    );
}

#[tokio::test]
async fn a_service_turning_nodeport_is_charged_on_update() {
    let s = server().await;
    counted_quota(
        &s,
        "ports",
        json!({"hard": {"services.nodeports": "1"}}),
        json!({"services.nodeports": "0"}),
    )
    .await;
    let services = "/api/v1/namespaces/default/services";
    s.ok(
        Method::POST,
        services,
        Some(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"},
                "ports": [{"name": "a", "port": 80}, {"name": "b", "port": 81}]}}),
        ),
    )
    .await;
    let (status, body) = s
        .patch(
            &format!("{services}/web"),
            "application/merge-patch+json",
            json!({"spec": {"type": "NodePort"}}),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body["message"],
        "services \"web\" is forbidden: exceeded quota: ports, requested: services.nodeports=2, \
         used: services.nodeports=0, limited: services.nodeports=1"
    );
}

#[tokio::test]
async fn pod_and_claim_limit_ranges_refuse_with_kubes_messages() {
    let s = server().await;
    s.ok(
        Method::POST,
        "/api/v1/namespaces/default/limitranges",
        Some(
            json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "limits"},
            "spec": {"limits": [
                {"type": "Pod", "max": {"cpu": "1"}},
                {"type": "PersistentVolumeClaim", "max": {"storage": "2Gi"}}]}}),
        ),
    )
    .await;
    let mut two = pod("two");
    let container = |name: &str| {
        json!({"name": name, "image": "keelson/busybox:1",
            "resources": {"requests": {"cpu": "600m"}, "limits": {"cpu": "600m"}}})
    };
    two["spec"]["containers"] = json!([container("a"), container("b")]);
    let (status, body) = s.call(Method::POST, PODS, Some(two)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body["message"],
        "pods \"two\" is forbidden: maximum cpu usage per Pod is 1, but limit is 1200m"
    );
    let (status, body) = s
        .call(
            Method::POST,
            "/api/v1/namespaces/default/persistentvolumeclaims",
            Some(json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": "big"},
                "spec": {"accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "5Gi"}}}})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body["message"],
        "persistentvolumeclaims \"big\" is forbidden: maximum storage usage per \
         PersistentVolumeClaim is 2Gi, but request is 5Gi"
    );
}

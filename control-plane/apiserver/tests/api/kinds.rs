//! Every served kind through the API (created, read, listed, patched, deleted, and refused with
//! a 4xx when mistyped), discovery as kubectl reads it, and Events in both event APIs.

use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::{ADMIN_TOKEN, assert_status, server};

/// A PEM certificate request for CN=alice (`openssl req -new`), base64-encoded as the API
/// carries bytes.
const CSR_PEM_BASE64: &str = "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0KTUlITE1ISUNBUUF3RURFT01Bd0dBMVVFQXd3RllXeHBZMlV3V1RBVEJnY3Foa2pPUFFJQkJnZ3Foa2pPUFFNQgpCd05DQUFTRlhiakNtb2RSeXBTMkdlcnRpSXZQRGtWcVlIcTQ3aksxSFJyMjlKVVZRTFRpTDBFdnhFNHNKVDhnCkpWNW9QejVSU2NrV0tqb0oxa29vS29sWVRDbkJvQUF3Q2dZSUtvWkl6ajBFQXdJRFNRQXdSZ0loQU9wVTN6ZFEKWHVDMU9qaG9yQS9VbkpRY2F2WXg0Z0JFbFp1NWxLWWsxa0dLQWlFQW1qUHYxd1lUaGFCVms3d01xdEhlUi9IZwpNdEloRnVtdXQ2dnZNanJPcjJNPQotLS0tLUVORCBDRVJUSUZJQ0FURSBSRVFVRVNULS0tLS0K";

/// A minimal valid object of each served kind, by (group version, plural): what a user
/// would write, with the fields Kubernetes requires.
fn fixtures() -> Vec<(&'static str, &'static str, Value)> {
    let pod_template = json!({
        "metadata": {"labels": {"app": "w"}},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
    });
    let selector = json!({"matchLabels": {"app": "w"}});
    vec![
        ("v1", "serviceaccounts", json!({})),
        ("v1", "podtemplates", json!({"template": pod_template})),
        (
            "v1",
            "replicationcontrollers",
            json!({"spec": {"replicas": 1, "selector": {"app": "w"}, "template": pod_template}}),
        ),
        (
            "v1",
            "persistentvolumes",
            json!({"spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "hostPath": {"path": "/tmp/pv"}}}),
        ),
        (
            "v1",
            "persistentvolumeclaims",
            json!({"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}),
        ),
        (
            "v1",
            "limitranges",
            json!({"spec": {"limits": [{"type": "Container", "default": {"cpu": "500m"}}]}}),
        ),
        (
            "v1",
            "resourcequotas",
            json!({"spec": {"hard": {"pods": "10"}}}),
        ),
        (
            "apps/v1",
            "daemonsets",
            json!({"spec": {"selector": selector, "template": pod_template}}),
        ),
        (
            "apps/v1",
            "statefulsets",
            json!({"spec": {"serviceName": "w", "selector": selector, "template": pod_template}}),
        ),
        (
            "apps/v1",
            "controllerrevisions",
            json!({"revision": 1, "data": {"spec": {}}}),
        ),
        (
            "batch/v1",
            "jobs",
            json!({"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox:1.36"}]}}}}),
        ),
        (
            "batch/v1",
            "cronjobs",
            json!({"spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "busybox:1.36"}]}}}}}}),
        ),
        (
            "autoscaling/v2",
            "horizontalpodautoscalers",
            json!({"spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "w"}, "maxReplicas": 3}}),
        ),
        (
            "autoscaling/v1",
            "horizontalpodautoscalers",
            json!({"spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "w"}, "maxReplicas": 3, "targetCPUUtilizationPercentage": 50}}),
        ),
        (
            "policy/v1",
            "poddisruptionbudgets",
            json!({"spec": {"minAvailable": 1, "selector": selector}}),
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "roles",
            json!({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "rolebindings",
            json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}, "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}]}),
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "clusterroles",
            json!({"rules": [{"nonResourceURLs": ["/healthz"], "verbs": ["get"]}]}),
        ),
        (
            "rbac.authorization.k8s.io/v1",
            "clusterrolebindings",
            json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}]}),
        ),
        (
            "networking.k8s.io/v1",
            "networkpolicies",
            json!({"spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}),
        ),
        (
            "networking.k8s.io/v1",
            "ingresses",
            json!({"spec": {"rules": [{"host": "a.example.com", "http": {"paths": [{"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "w", "port": {"number": 80}}}}]}}]}}),
        ),
        (
            "networking.k8s.io/v1",
            "ingressclasses",
            json!({"spec": {"controller": "keelson.io/ingress"}}),
        ),
        (
            "storage.k8s.io/v1",
            "storageclasses",
            json!({"provisioner": "keelson.io/local-path"}),
        ),
        ("storage.k8s.io/v1", "csidrivers", json!({"spec": {}})),
        (
            "storage.k8s.io/v1",
            "csinodes",
            json!({"spec": {"drivers": []}}),
        ),
        (
            "storage.k8s.io/v1",
            "volumeattachments",
            json!({"spec": {"attacher": "csi.example.com", "nodeName": "n1", "source": {"persistentVolumeName": "pv1"}}}),
        ),
        (
            "storage.k8s.io/v1",
            "csistoragecapacities",
            json!({"storageClassName": "standard"}),
        ),
        (
            "admissionregistration.k8s.io/v1",
            "validatingwebhookconfigurations",
            json!({"webhooks": [{"name": "check.example.com", "clientConfig": {"url": "https://check.example.com/"}, "sideEffects": "None", "admissionReviewVersions": ["v1"]}]}),
        ),
        (
            "admissionregistration.k8s.io/v1",
            "mutatingwebhookconfigurations",
            json!({"webhooks": [{"name": "mutate.example.com", "clientConfig": {"url": "https://mutate.example.com/"}, "sideEffects": "None", "admissionReviewVersions": ["v1"]}]}),
        ),
        (
            "admissionregistration.k8s.io/v1",
            "validatingadmissionpolicies",
            json!({"spec": {"validations": [{"expression": "object.spec.replicas <= 5"}], "matchConstraints": {"resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["deployments"]}]}}}),
        ),
        (
            "admissionregistration.k8s.io/v1",
            "validatingadmissionpolicybindings",
            json!({"spec": {"policyName": "p", "validationActions": ["Deny"]}}),
        ),
        (
            "apiregistration.k8s.io/v1",
            "apiservices",
            json!({"spec": {"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100, "versionPriority": 100, "service": {"namespace": "kube-system", "name": "metrics-server"}, "insecureSkipTLSVerify": true}}),
        ),
        (
            "certificates.k8s.io/v1",
            "certificatesigningrequests",
            json!({"spec": {"request": CSR_PEM_BASE64, "signerName": "example.com/signer", "usages": ["digital signature"]}}),
        ),
        (
            "scheduling.k8s.io/v1",
            "priorityclasses",
            json!({"value": 1000, "description": "high"}),
        ),
        (
            "node.k8s.io/v1",
            "runtimeclasses",
            json!({"handler": "runc"}),
        ),
        (
            "events.k8s.io/v1",
            "events",
            json!({"eventTime": "2026-01-01T00:00:00.000000Z", "reportingController": "example.com/c", "reportingInstance": "c-1", "action": "Started", "reason": "Started", "regarding": {"kind": "Pod", "name": "p", "namespace": "default"}, "note": "started", "type": "Normal"}),
        ),
        (
            "flowcontrol.apiserver.k8s.io/v1",
            "prioritylevelconfigurations",
            json!({"spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": 5, "limitResponse": {"type": "Reject"}}}}),
        ),
        (
            "flowcontrol.apiserver.k8s.io/v1",
            "flowschemas",
            json!({"spec": {"priorityLevelConfiguration": {"name": "p"}, "matchingPrecedence": 1000, "rules": [{"subjects": [{"kind": "User", "user": {"name": "alice"}}], "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "namespaces": ["*"]}]}]}}),
        ),
        (
            "networking.k8s.io/v1",
            "servicecidrs",
            json!({"spec": {"cidrs": ["10.200.0.0/16"]}}),
        ),
        (
            "networking.k8s.io/v1",
            "ipaddresses",
            json!({"spec": {"parentRef": {"group": "", "resource": "services", "namespace": "default", "name": "w"}}}),
        ),
    ]
}

/// The collection path of `plural` in `api_version`, in `default` when namespaced.
fn collection(discovered: &Value, api_version: &str, plural: &str) -> String {
    let root = if api_version == "v1" { "/api" } else { "/apis" };
    let namespaced = discovered["resources"]
        .as_array()
        .and_then(|r| r.iter().find(|e| e["name"] == plural))
        .and_then(|e| e["namespaced"].as_bool())
        .unwrap_or_else(|| panic!("{plural} is not in the discovery of {api_version}"));
    if namespaced {
        format!("{root}/{api_version}/namespaces/default/{plural}")
    } else {
        format!("{root}/{api_version}/{plural}")
    }
}

#[tokio::test]
async fn every_new_kind_is_created_read_listed_updated_and_deleted() {
    let s = server().await;
    for (api_version, plural, mut object) in fixtures() {
        let root = if api_version == "v1" { "/api" } else { "/apis" };
        let discovered = s
            .ok(Method::GET, &format!("{root}/{api_version}"), None)
            .await;
        let kind = discovered["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|e| e["name"] == plural))
            .map(|e| e["kind"].clone())
            .unwrap_or_default();
        let path = collection(&discovered, api_version, plural);
        // An APIService's name is its version and group, an IPAddress's its address.
        let name = match plural {
            "apiservices" => "v1beta1.metrics.k8s.io".to_owned(),
            "ipaddresses" => "10.200.0.7".to_owned(),
            _ => format!("x-{}", plural.len()),
        };
        object["metadata"] = json!({"name": name, "labels": {"fixture": "yes"}});
        let created = s.ok(Method::POST, &path, Some(object.clone())).await;
        assert_eq!(created["kind"], kind, "{plural}: {created}");
        assert_eq!(created["apiVersion"], api_version, "{plural}: {created}");
        assert!(
            created["metadata"]["uid"].is_string(),
            "{plural}: {created}"
        );
        let got = s.ok(Method::GET, &format!("{path}/{name}"), None).await;
        assert_eq!(got["metadata"]["name"], name.as_str(), "{plural}");
        let listed = s
            .ok(
                Method::GET,
                &format!("{path}?labelSelector=fixture%3Dyes"),
                None,
            )
            .await;
        assert_eq!(
            listed["kind"],
            format!("{}List", kind.as_str().unwrap_or_default()),
            "{plural}"
        );
        assert_eq!(
            listed["items"].as_array().map(Vec::len),
            Some(1),
            "{plural}: {listed}"
        );
        let patched = s
            .patch(
                &format!("{path}/{name}"),
                "application/merge-patch+json",
                json!({"metadata": {"labels": {"patched": "yes"}}}),
            )
            .await;
        assert_eq!(patched.0, StatusCode::OK, "{plural}: {}", patched.1);
        assert_eq!(patched.1["metadata"]["labels"]["patched"], "yes");
        let (status, body) = s
            .call(Method::DELETE, &format!("{path}/{name}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{plural}: {body}");
        // Claims and volumes carry their in-use protection finalizer (StorageObjectInUseProtection):
        // deleted, they stay terminating until the protection controller lets them go.
        let protection = match plural {
            "persistentvolumeclaims" => Some("kubernetes.io/pvc-protection"),
            "persistentvolumes" => Some("kubernetes.io/pv-protection"),
            _ => None,
        };
        if let Some(finalizer) = protection {
            assert_eq!(
                created["metadata"]["finalizers"],
                json!([finalizer]),
                "{plural}"
            );
            let terminating = s.ok(Method::GET, &format!("{path}/{name}"), None).await;
            assert!(
                terminating["metadata"]["deletionTimestamp"].is_string(),
                "{plural}: {terminating}"
            );
            s.patch(
                &format!("{path}/{name}"),
                "application/merge-patch+json",
                json!({"metadata": {"finalizers": null}}),
            )
            .await;
        }
        let (status, _) = s.call(Method::GET, &format!("{path}/{name}"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{plural} is gone");
    }
}

#[tokio::test]
async fn the_system_priority_classes_exist_from_the_start() {
    let s = server().await;
    let list = s
        .ok(
            Method::GET,
            "/apis/scheduling.k8s.io/v1/priorityclasses",
            None,
        )
        .await;
    let classes: Vec<(String, i64)> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|c| {
            (
                c["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                c["value"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        classes,
        [
            ("system-cluster-critical".to_owned(), 2_000_000_000),
            ("system-node-critical".to_owned(), 2_000_001_000),
        ]
    );
}

#[tokio::test]
async fn legacy_discovery_lists_kinds_as_kube_apiserver_does() {
    let s = server().await;
    let core = s.ok(Method::GET, "/api/v1", None).await;
    let entry = |list: &Value, name: &str| {
        list["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|e| e["name"] == name).cloned())
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    assert_eq!(
        entry(&core, "serviceaccounts"),
        json!({
            "name": "serviceaccounts", "singularName": "serviceaccount", "namespaced": true,
            "kind": "ServiceAccount",
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "shortNames": ["sa"], "storageVersionHash": "pbx9ZvyFpBE=",
        })
    );
    assert_eq!(
        entry(&core, "replicationcontrollers/scale"),
        json!({
            "name": "replicationcontrollers/scale", "singularName": "", "namespaced": true,
            "group": "autoscaling", "version": "v1", "kind": "Scale",
            "verbs": ["get", "patch", "update"],
        })
    );
    let batch = s.ok(Method::GET, "/apis/batch/v1", None).await;
    assert_eq!(entry(&batch, "cronjobs")["shortNames"], json!(["cj"]));
    assert_eq!(entry(&batch, "jobs")["categories"], json!(["all"]));
    assert_eq!(entry(&batch, "jobs/status")["kind"], "Job");
    let names: Vec<&str> = batch["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["cronjobs", "cronjobs/status", "jobs", "jobs/status"]
    );
    let group = s.ok(Method::GET, "/apis/autoscaling", None).await;
    assert_eq!(
        group["preferredVersion"],
        json!({"groupVersion": "autoscaling/v2", "version": "v2"})
    );
}

#[tokio::test]
async fn aggregated_discovery_is_served_in_v2_and_v2beta1() {
    let s = server().await;
    for (version, accept) in [
        (
            "v2",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
        ),
        (
            "v2beta1",
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json",
        ),
    ] {
        let (status, headers, apis) = s
            .exchange(
                ADMIN_TOKEN,
                Method::GET,
                "/apis",
                &[(header::ACCEPT, accept)],
                Vec::new(),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers[header::CONTENT_TYPE],
            format!("application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList")
        );
        assert_eq!(apis["kind"], "APIGroupDiscoveryList");
        assert_eq!(apis["apiVersion"], format!("apidiscovery.k8s.io/{version}"));
        let apps = apis["items"]
            .as_array()
            .and_then(|items| items.iter().find(|g| g["metadata"]["name"] == "apps"))
            .expect("apps");
        let deployments = apps["versions"][0]["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|e| e["resource"] == "deployments"))
            .expect("deployments");
        assert_eq!(
            *deployments,
            json!({
                "resource": "deployments",
                "responseKind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                "scope": "Namespaced", "singularResource": "deployment",
                "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                "shortNames": ["deploy"], "categories": ["all"],
                "subresources": [
                    {"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"}, "verbs": ["get", "patch", "update"]},
                    {"subresource": "status", "responseKind": {"group": "apps", "version": "v1", "kind": "Deployment"}, "verbs": ["get", "patch", "update"]},
                ],
            })
        );
        assert_eq!(apps["versions"][0]["freshness"], "Current");
        let (_, _, api) = s
            .exchange(
                ADMIN_TOKEN,
                Method::GET,
                "/api",
                &[(header::ACCEPT, accept)],
                Vec::new(),
            )
            .await;
        let core = &api["items"][0];
        assert_eq!(core["metadata"], json!({"creationTimestamp": null}));
        let pods = core["versions"][0]["resources"]
            .as_array()
            .and_then(|r| r.iter().find(|e| e["resource"] == "pods"))
            .expect("pods");
        assert_eq!(pods["scope"], "Namespaced");
        assert_eq!(pods["categories"], json!(["all"]));
    }
    // A client that does not ask for it gets the legacy document.
    let plain = s.ok(Method::GET, "/apis", None).await;
    assert_eq!(plain["kind"], "APIGroupList");
}

#[tokio::test]
async fn horizontal_pod_autoscalers_are_one_collection_in_v1_and_v2() {
    let s = server().await;
    // What `kubectl autoscale deployment web --cpu-percent=50 --min=1 --max=5` (1.27 to 1.33)
    // sends.
    let created = s
        .ok(
            Method::POST,
            "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers",
            Some(json!({
                "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
                "metadata": {"name": "web"},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                    "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50,
                },
                "status": {"currentReplicas": 0, "desiredReplicas": 0},
            })),
        )
        .await;
    assert_eq!(created["apiVersion"], "autoscaling/v1");
    assert_eq!(created["spec"]["targetCPUUtilizationPercentage"], 50);
    let v2 = s
        .ok(
            Method::GET,
            "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/web",
            None,
        )
        .await;
    assert_eq!(
        v2["spec"]["metrics"],
        json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": 50}}}])
    );
    // A memory metric added in v2 shows in v1 in the alpha annotation, not as a field.
    let mut updated = v2.clone();
    updated["spec"]["metrics"]
        .as_array_mut()
        .expect("metrics")
        .push(json!({"type": "Resource", "resource": {"name": "memory",
            "target": {"type": "AverageValue", "averageValue": "100Mi"}}}));
    s.ok(
        Method::PUT,
        "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/web",
        Some(updated),
    )
    .await;
    let v1 = s
        .ok(
            Method::GET,
            "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/web",
            None,
        )
        .await;
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
    assert_eq!(
        v1["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/metrics"],
        r#"[{"resource":{"name":"memory","targetAverageValue":"100Mi"},"type":"Resource"}]"#
    );
    let groups = s.ok(Method::GET, "/apis/autoscaling", None).await;
    assert_eq!(groups["preferredVersion"]["version"], "v2");
    assert_eq!(
        groups["versions"],
        json!([
            {"groupVersion": "autoscaling/v2", "version": "v2"},
            {"groupVersion": "autoscaling/v1", "version": "v1"},
        ])
    );
}

#[tokio::test]
async fn events_are_one_collection_in_both_event_apis() {
    let s = server().await;
    s.ok(
        Method::POST,
        "/api/v1/namespaces/default/events",
        Some(json!({
            "metadata": {"name": "core-event"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "reason": "Pulled", "message": "pulled the image", "type": "Normal",
            "source": {"component": "kubelet", "host": "n1"}, "count": 2,
        })),
    )
    .await;
    let seen = s
        .ok(
            Method::GET,
            "/apis/events.k8s.io/v1/namespaces/default/events/core-event",
            None,
        )
        .await;
    assert_eq!(seen["apiVersion"], "events.k8s.io/v1");
    assert_eq!(seen["regarding"]["name"], "p");
    assert_eq!(seen["note"], "pulled the image");
    assert_eq!(seen["deprecatedCount"], 2);
    assert_eq!(seen["deprecatedSource"]["component"], "kubelet");
    s.ok(
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/default/events",
        Some(json!({
            "metadata": {"name": "new-event"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "example.com/c", "reportingInstance": "c-1",
            "action": "Scaled", "reason": "Scaled", "note": "scaled up", "type": "Normal",
            "regarding": {"kind": "Deployment", "name": "d", "namespace": "default"},
        })),
    )
    .await;
    let core = s
        .ok(
            Method::GET,
            "/api/v1/namespaces/default/events/new-event",
            None,
        )
        .await;
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["involvedObject"]["name"], "d");
    assert_eq!(core["message"], "scaled up");
    assert_eq!(core["reportingComponent"], "example.com/c");
    let both = s
        .ok(
            Method::GET,
            "/apis/events.k8s.io/v1/namespaces/default/events",
            None,
        )
        .await;
    assert_eq!(both["items"].as_array().map(Vec::len), Some(2));
    assert!(
        both["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|e| e["apiVersion"] == "events.k8s.io/v1")
    );
}

#[tokio::test]
async fn mistyped_fields_of_every_kind_are_4xx_statuses_never_5xx() {
    let s = server().await;
    let wrong = [
        json!(42),
        json!("x"),
        json!([1]),
        json!({"a": 1}),
        json!(true),
        json!(-1),
    ];
    let mut requests = 0;
    for (api_version, plural, fixture) in fixtures() {
        let root = if api_version == "v1" { "/api" } else { "/apis" };
        let discovered = s
            .ok(Method::GET, &format!("{root}/{api_version}"), None)
            .await;
        let path = collection(&discovered, api_version, plural);
        // Every field of the fixture, one level into objects: `spec.replicas`, `rules`, ...
        let mut paths: Vec<Vec<String>> = Vec::new();
        for (key, value) in fixture.as_object().into_iter().flatten() {
            paths.push(vec![key.clone()]);
            for inner in value.as_object().into_iter().flat_map(|o| o.keys()) {
                paths.push(vec![key.clone(), inner.clone()]);
            }
        }
        for field in &paths {
            for bad in &wrong {
                let mut object = fixture.clone();
                let slot = field
                    .iter()
                    .try_fold(&mut object, |node, key| node.get_mut(key.as_str()))
                    .expect("the field exists");
                *slot = bad.clone();
                object["metadata"] = json!({"generateName": "bad-"});
                let (status, body) = s.call(Method::POST, &path, Some(object.clone())).await;
                requests += 1;
                assert!(
                    status.is_success() || status.is_client_error(),
                    "{plural} with {} = {bad}: {status} {body}",
                    field.join(".")
                );
                if status.is_client_error() {
                    assert_status(
                        &body,
                        status.as_u16(),
                        body["reason"].as_str().unwrap_or("?"),
                    );
                    assert!(
                        matches!(status.as_u16(), 400 | 422),
                        "{plural} with {} = {bad}: {status} {body}",
                        field.join(".")
                    );
                }
            }
        }
    }
    assert!(requests > 500, "only {requests} requests");
}

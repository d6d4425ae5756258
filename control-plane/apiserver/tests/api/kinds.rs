//! Every served kind through the API, discovery as kubectl reads it, and the write options:
//! dryRun, fieldValidation, YAML bodies, resourceVersionMatch, warnings.

use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::{ADMIN_TOKEN, CONFIGMAPS, Server, assert_status, configmap, server};

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

fn warnings(headers: &header::HeaderMap) -> Vec<String> {
    headers
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

async fn post_raw(
    s: &Server,
    uri: &str,
    content_type: &str,
    body: &str,
) -> (StatusCode, header::HeaderMap, Value) {
    s.exchange(
        ADMIN_TOKEN,
        Method::POST,
        uri,
        &[(header::CONTENT_TYPE, content_type)],
        body.as_bytes().to_vec(),
    )
    .await
}

#[tokio::test]
async fn field_validation_strict_warn_and_ignore() {
    let s = server().await;
    let body = |name: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {{"name": "{name}", "name": "{name}"}}, "dta": {{"a": "b"}}, "data": {{"k": "v"}}}}"#
        )
    };
    let (status, _, refused) = post_raw(
        &s,
        &format!("{CONFIGMAPS}?fieldValidation=Strict"),
        "application/json",
        &body("s"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_status(&refused, 400, "BadRequest");
    assert_eq!(
        refused["message"],
        r#"ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: duplicate field "metadata.name", unknown field "dta""#
    );
    let (status, headers, created) = post_raw(
        &s,
        &format!("{CONFIGMAPS}?fieldValidation=Warn"),
        "application/json",
        &body("w"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        warnings(&headers),
        [
            r#"299 - "duplicate field \"metadata.name\"""#,
            r#"299 - "unknown field \"dta\"""#
        ]
    );
    assert_eq!(created["dta"], Value::Null, "the unknown field is dropped");
    // Warn is the default.
    let (_, headers, _) = post_raw(&s, CONFIGMAPS, "application/json", &body("d")).await;
    assert_eq!(warnings(&headers).len(), 2);
    let (status, headers, created) = post_raw(
        &s,
        &format!("{CONFIGMAPS}?fieldValidation=Ignore"),
        "application/json",
        &body("i"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(warnings(&headers).is_empty());
    assert_eq!(created["dta"], Value::Null);
    let (status, _, body) = post_raw(
        &s,
        &format!("{CONFIGMAPS}?fieldValidation=Loose"),
        "application/json",
        &body("l"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // A strict patch names the unknown field of the patched object.
    let (status, body) = s
        .patch(
            &format!("{CONFIGMAPS}/w?fieldValidation=Strict"),
            "application/merge-patch+json",
            json!({"spec": {"x": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        r#"ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: unknown field "spec""#
    );
}

#[tokio::test]
async fn dry_run_runs_everything_but_stores_nothing() {
    let s = server().await;
    let cm = configmap("dry", json!({"a": "b"}));
    let (status, created) = s
        .call(
            Method::POST,
            &format!("{CONFIGMAPS}?dryRun=All"),
            Some(cm.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created["metadata"]["uid"].is_string());
    assert_eq!(created["metadata"]["resourceVersion"], Value::Null);
    let (status, _) = s
        .call(Method::GET, &format!("{CONFIGMAPS}/dry"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing stored");

    s.ok(Method::POST, CONFIGMAPS, Some(cm.clone())).await;
    // A dry-run create of an existing object is still a conflict.
    let (status, body) = s
        .call(Method::POST, &format!("{CONFIGMAPS}?dryRun=All"), Some(cm))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_status(&body, 409, "AlreadyExists");
    let (status, patched) = s
        .patch(
            &format!("{CONFIGMAPS}/dry?dryRun=All"),
            "application/merge-patch+json",
            json!({"data": {"k": "changed"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["data"]["k"], "changed");
    let (status, deleted) = s
        .call(
            Method::DELETE,
            &format!("{CONFIGMAPS}/dry?dryRun=All"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    let stored = s.ok(Method::GET, &format!("{CONFIGMAPS}/dry"), None).await;
    assert_eq!(
        stored["data"]["k"], "v",
        "neither the patch nor the delete was stored"
    );
}

#[tokio::test]
async fn yaml_bodies_and_bad_bodies() {
    let s = server().await;
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  k: v\n";
    let (status, _, created) = post_raw(&s, CONFIGMAPS, "application/yaml", yaml).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["data"]["k"], "v");

    for (content_type, body, code, reason) in [
        ("application/yaml", "a: [", 400, "BadRequest"),
        ("application/json", "{\"a\": ", 400, "BadRequest"),
        ("application/json", "[1, 2]", 400, "BadRequest"),
        (
            "application/json",
            &format!("{}{}", "[".repeat(500), "]".repeat(500)),
            400,
            "BadRequest",
        ),
        (
            "application/json",
            r#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}"#,
            400,
            "BadRequest",
        ),
        (
            "application/json",
            r#"{"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "s"}}"#,
            400,
            "BadRequest",
        ),
        (
            "application/json",
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"a": 1}}"#,
            400,
            "BadRequest",
        ),
        ("text/plain", "hello", 415, "UnsupportedMediaType"),
    ] {
        let (status, _, body) = post_raw(&s, CONFIGMAPS, content_type, body).await;
        assert_eq!(status.as_u16(), code, "{content_type} {body}");
        assert_status(&body, code, reason);
    }
    let (_, _, body) = post_raw(
        &s,
        CONFIGMAPS,
        "application/json",
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"a": 1}}"#,
    )
    .await;
    assert_eq!(
        body["message"],
        r#"ConfigMap in version "v1" cannot be handled as a ConfigMap: invalid type: integer `1`, expected a string"#
    );
}

#[tokio::test]
async fn stored_but_not_enforced_kinds_say_so_on_writes() {
    let s = server().await;
    let (status, headers, _) = post_raw(
        &s,
        "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies",
        "application/json",
        r#"{"metadata": {"name": "deny"}, "spec": {"podSelector": {}}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        warnings(&headers),
        [
            r#"299 - "keelson stores NetworkPolicy objects but does not enforce them yet: traffic is not filtered""#
        ]
    );
    let (_, headers, _) = post_raw(
        &s,
        CONFIGMAPS,
        "application/json",
        &configmap("quiet", json!({})).to_string(),
    )
    .await;
    assert!(
        warnings(&headers).is_empty(),
        "enforced kinds carry no warning"
    );
}

#[tokio::test]
async fn lists_at_an_exact_resource_version() {
    let s = server().await;
    let first = s
        .ok(Method::POST, CONFIGMAPS, Some(configmap("one", json!({}))))
        .await;
    let rv = first["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_owned();
    s.ok(Method::POST, CONFIGMAPS, Some(configmap("two", json!({}))))
        .await;
    let then = s
        .ok(
            Method::GET,
            &format!("{CONFIGMAPS}?resourceVersion={rv}&resourceVersionMatch=Exact"),
            None,
        )
        .await;
    assert_eq!(then["metadata"]["resourceVersion"], rv.as_str());
    assert_eq!(then["items"].as_array().map(Vec::len), Some(1));
    let now = s
        .ok(
            Method::GET,
            &format!("{CONFIGMAPS}?resourceVersion={rv}&resourceVersionMatch=NotOlderThan"),
            None,
        )
        .await;
    assert_eq!(now["items"].as_array().map(Vec::len), Some(2));
    let (status, body) = s
        .call(
            Method::GET,
            &format!("{CONFIGMAPS}?resourceVersionMatch=Exact"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_status(&body, 422, "Invalid");
}

#[tokio::test]
async fn watches_ignore_the_timeout_parameter() {
    let s = server().await;
    let uri = format!("{CONFIGMAPS}?watch=true&timeoutSeconds=2&timeout=1ms");
    let watch = s.exchange(ADMIN_TOKEN, Method::GET, &uri, &[], Vec::new());
    let later = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        s.ok(
            Method::POST,
            CONFIGMAPS,
            Some(configmap("later", json!({}))),
        )
        .await
    };
    let ((status, _, body), _) = tokio::join!(watch, later);
    assert_eq!(status, StatusCode::OK);
    // The stream outlived `timeout=1ms` and carried a write made 500 ms in.
    // One event line parses as JSON by itself; several stay raw text.
    let raw = body["raw"]
        .as_str()
        .map_or_else(|| body.to_string(), str::to_owned);
    assert!(
        raw.lines()
            .any(|l| l.contains(r#""type":"ADDED""#) && l.contains(r#""name":"later""#)),
        "{body}"
    );
}

#[tokio::test]
async fn writes_record_managed_fields_by_field_manager() {
    let s = server().await;
    let created = s
        .ok(
            Method::POST,
            &format!("{CONFIGMAPS}?fieldManager=kubectl-create"),
            Some(configmap("managed", json!({"a": "b"}))),
        )
        .await;
    let entries = &created["metadata"]["managedFields"];
    assert_eq!(entries.as_array().map(Vec::len), Some(1), "{created}");
    assert_eq!(entries[0]["manager"], "kubectl-create");
    assert_eq!(entries[0]["operation"], "Update");
    assert_eq!(entries[0]["apiVersion"], "v1");
    assert_eq!(entries[0]["fieldsType"], "FieldsV1");
    assert_eq!(
        entries[0]["fieldsV1"],
        json!({"f:data": {".": {}, "f:k": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
    );
    // Another manager (the User-Agent's product name) takes the field it changed.
    let (status, _, patched) = s
        .exchange(
            ADMIN_TOKEN,
            Method::PATCH,
            &format!("{CONFIGMAPS}/managed"),
            &[
                (header::CONTENT_TYPE, "application/merge-patch+json"),
                (
                    header::USER_AGENT,
                    "kubectl/v1.33.0 (linux/amd64) kubernetes/abc",
                ),
            ],
            br#"{"data": {"k": "changed"}}"#.to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let managers: Vec<(&str, &Value)> = patched["metadata"]["managedFields"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| (e["manager"].as_str().unwrap_or_default(), &e["fieldsV1"]))
        .collect();
    assert_eq!(
        managers,
        [
            ("kubectl", &json!({"f:data": {"f:k": {}}})),
            (
                "kubectl-create",
                // Still the owner of `data` itself: a member without children is `{}`.
                &json!({"f:data": {}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
            ),
        ]
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
async fn invalid_objects_are_422_naming_every_field_as_kube_apiserver_does() {
    let s = server().await;
    let (status, body) = s
        .call(
            Method::POST,
            "/apis/apps/v1/namespaces/default/deployments",
            Some(json!({
                "metadata": {"name": "web"},
                "spec": {
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "other"}},
                        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
                    },
                },
            })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_status(&body, 422, "Invalid");
    assert_eq!(
        body["message"],
        r#"Deployment.apps "web" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{"app":"other"}: `selector` does not match template `labels`"#
    );
    assert_eq!(
        body["details"],
        json!({
            "name": "web", "group": "apps", "kind": "Deployment",
            "causes": [{
                "reason": "FieldValueInvalid",
                "message": r#"Invalid value: map[string]string{"app":"other"}: `selector` does not match template `labels`"#,
                "field": "spec.template.metadata.labels",
            }],
        })
    );
    // Several invalid fields are listed together.
    let (status, body) = s
        .call(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(json!({
                "metadata": {"name": "p"},
                "spec": {"containers": [
                    {"name": "Bad_Name", "image": "busybox"},
                    {"name": "b", "image": "", "ports": [{"containerPort": 70000}]},
                ]},
            })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields: Vec<&str> = body["details"]["causes"]
        .as_array()
        .expect("causes")
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "spec.containers[0].name",
            "spec.containers[1].image",
            "spec.containers[1].ports[0].containerPort",
        ],
        "{body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| m.starts_with(
            r#"Pod "p" is invalid: [spec.containers[0].name: Invalid value: "Bad_Name": "#
        )),
        "{body}"
    );
    // An update that changes an immutable field.
    s.ok(
        Method::POST,
        "/apis/apps/v1/namespaces/default/deployments",
        Some(json!({
            "metadata": {"name": "ok"},
            "spec": {
                "selector": {"matchLabels": {"app": "ok"}},
                "template": {
                    "metadata": {"labels": {"app": "ok", "v": "1"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
                },
            },
        })),
    )
    .await;
    let (status, body) = s
        .patch(
            "/apis/apps/v1/namespaces/default/deployments/ok",
            "application/merge-patch+json",
            json!({"spec": {"selector": {"matchLabels": {"app": "ok", "v": "1"}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec.selector: Invalid value: ")
                && m.ends_with("field is immutable")),
        "{body}"
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

#[tokio::test]
async fn objects_stored_before_a_default_existed_still_update() {
    let s = server().await;
    // A pod as an older keelson stored it: none of today's defaults.
    let key = "/registry/pods/default/old";
    let stored = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "old", "namespace": "default", "uid": "u-1",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
        "status": {"phase": "Pending"},
    });
    s.store
        .create(key, stored.to_string().into())
        .await
        .expect("store the old pod");
    let (status, body) = s
        .patch(
            "/api/v1/namespaces/default/pods/old",
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"touched": "yes"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["spec"]["enableServiceLinks"], true,
        "defaulted on the way"
    );
}

//! The API server through `app(..).oneshot(..)` on a temporary SQLite store: what a client sees.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use futures_util::StreamExt;
use keelson_apiserver::{AppState, Authenticator, UserInfo, app, auth::MASTERS_GROUP, bootstrap};
use keelson_store::{SqliteOptions, SqliteStore, Store};
use serde_json::{Value, json};
use tower::ServiceExt;

/// The administrator's bearer token in these tests.
const ADMIN_TOKEN: &str = "admin-token";
/// Node n1's bearer token.
const NODE_TOKEN: &str = "n1-token";
/// A user that is neither administrator nor node.
const ALICE_TOKEN: &str = "alice-token";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

struct Server {
    store: Arc<dyn Store>,
    router: Router,
    _dir: tempfile::TempDir,
}

/// A SQLite store in `dir`, with the system namespaces and the bootstrap RBAC policy.
async fn bootstrapped_store(dir: &std::path::Path) -> Arc<dyn Store> {
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.join("state.db"), SqliteOptions::default())
            .await
            .expect("open the SQLite store"),
    );
    bootstrap(store.as_ref()).await.expect("bootstrap");
    store
}

async fn server() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = bootstrapped_store(dir.path()).await;
    let authenticator = Authenticator::default()
        .with_token(
            ADMIN_TOKEN,
            UserInfo::new("kubernetes-admin", &[MASTERS_GROUP]),
        )
        .with_token(NODE_TOKEN, UserInfo::node("n1"))
        .with_token(ALICE_TOKEN, UserInfo::new("alice", &["developers"]));
    let router = app(AppState::new(Arc::clone(&store)).with_authenticator(authenticator));
    Server {
        store,
        router,
        _dir: dir,
    }
}

impl Server {
    async fn raw(
        &self,
        method: Method,
        uri: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        self.raw_as(ADMIN_TOKEN, method, uri, content_type, body)
            .await
    }

    async fn raw_as(
        &self,
        token: &str,
        method: Method,
        uri: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let (status, _, value) = self
            .exchange(
                token,
                method,
                uri,
                &[(header::CONTENT_TYPE, content_type)],
                body,
            )
            .await;
        (status, value)
    }

    /// One request as the administrator or `token`, with `headers`: the status, the
    /// response headers and the body (JSON, or `{"raw": text}`).
    async fn exchange(
        &self,
        token: &str,
        method: Method,
        uri: &str,
        headers: &[(header::HeaderName, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, header::HeaderMap, Value) {
        let mut request = Request::builder().method(method.clone()).uri(uri);
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        if !token.is_empty() {
            request = request.header(header::AUTHORIZATION, bearer(token));
        }
        let request = request.body(Body::from(body)).expect("request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router answers");
        let status = response.status();
        let response_headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
        (status, response_headers, value)
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        self.raw(method, uri, "application/json", bytes).await
    }

    async fn ok(&self, method: Method, uri: &str, body: Option<Value>) -> Value {
        let (status, value) = self.call(method.clone(), uri, body).await;
        assert!(
            status.is_success(),
            "{method} {uri} should succeed, got {status}: {value}"
        );
        value
    }

    async fn patch(&self, uri: &str, content_type: &str, patch: Value) -> (StatusCode, Value) {
        self.raw(
            Method::PATCH,
            uri,
            content_type,
            patch.to_string().into_bytes(),
        )
        .await
    }
}

fn deployment(name: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}, "x-unknown": "kept?"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}
            }
        },
        "futureField": {"survives": true}
    })
}

fn configmap(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}})
}

fn assert_status(value: &Value, code: u16, reason: &str) {
    assert_eq!(value["kind"], "Status", "not a Status: {value}");
    assert_eq!(value["apiVersion"], "v1", "{value}");
    assert_eq!(value["status"], "Failure", "{value}");
    assert_eq!(value["code"], code, "{value}");
    assert_eq!(value["reason"], reason, "{value}");
    assert!(
        value["message"].as_str().is_some_and(|m| !m.is_empty()),
        "no message: {value}"
    );
}

mod admission;
mod admission_policy;
mod aggregation;
mod apply;
mod audit;
mod bootstrap;
mod crd;
mod crd_apply;
mod crd_conversion;
mod disruption;
mod health;
mod https;
mod kinds;
mod node_authz;
mod openapi;
mod overload;
mod rbac;
mod relay;
mod reviews;
mod serviceaccount;
mod services;
mod watchcache;
mod writes;

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn discovery_serves_what_kubectl_reads() {
    let s = server().await;
    let version = s.ok(Method::GET, "/version", None).await;
    assert_eq!(version["gitVersion"], "v1.33.0-keelson");
    let api = s.ok(Method::GET, "/api", None).await;
    assert_eq!(api["versions"], json!(["v1"]));
    let groups = s.ok(Method::GET, "/apis", None).await;
    let names: Vec<&str> = groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "apiregistration.k8s.io",
            "apps",
            "events.k8s.io",
            "authentication.k8s.io",
            "authorization.k8s.io",
            "autoscaling",
            "batch",
            "certificates.k8s.io",
            "networking.k8s.io",
            "policy",
            "rbac.authorization.k8s.io",
            "storage.k8s.io",
            "admissionregistration.k8s.io",
            "apiextensions.k8s.io",
            "scheduling.k8s.io",
            "coordination.k8s.io",
            "node.k8s.io",
            "discovery.k8s.io",
            "flowcontrol.apiserver.k8s.io",
            "metrics.k8s.io",
        ]
    );
    let (status, review) = s
        .call(
            Method::POST,
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            Some(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{review}");
    assert_eq!(
        review["status"]["userInfo"],
        json!({"username": "kubernetes-admin",
               "groups": ["system:masters", "system:authenticated"]})
    );
    let apps = s.ok(Method::GET, "/apis/apps/v1", None).await;
    let scale = apps["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "deployments/scale")
        .expect("deployments/scale listed");
    assert_eq!(
        (&scale["group"], &scale["version"], &scale["kind"]),
        (&json!("autoscaling"), &json!("v1"), &json!("Scale"))
    );
    let core = s.ok(Method::GET, "/api/v1", None).await;
    let pods = core["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "pods")
        .expect("pods listed");
    assert_eq!(pods["shortNames"], json!(["po"]));
    assert_eq!(pods["namespaced"], true);
    let (status, _) = s.call(Method::GET, "/openapi/v2", None).await;
    assert_eq!(status, StatusCode::OK);
    let index = s.ok(Method::GET, "/openapi/v3", None).await;
    assert!(index["paths"].get("apis/apps/v1").is_some(), "{index}");
    let namespaces = s.ok(Method::GET, "/api/v1/namespaces", None).await;
    assert_eq!(
        namespaces["items"].as_array().map(Vec::len),
        Some(4),
        "system namespaces: {namespaces}"
    );
}

#[tokio::test]
async fn create_get_update_delete_with_kubernetes_metadata() {
    let s = server().await;
    let created = s
        .ok(Method::POST, DEPLOYMENTS, Some(deployment("web", 2)))
        .await;
    let meta = &created["metadata"];
    assert_eq!(meta["namespace"], "default");
    assert_eq!(meta["generation"], 1);
    assert!(
        meta["uid"].as_str().is_some_and(|u| u.len() == 36),
        "uid: {meta}"
    );
    assert!(
        meta["creationTimestamp"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 20),
        "{meta}"
    );
    let rv: i64 = meta["resourceVersion"]
        .as_str()
        .expect("rv")
        .parse()
        .expect("numeric rv");
    assert_eq!(
        created["futureField"],
        Value::Null,
        "unknown fields are dropped, as kube-apiserver's decoder drops them"
    );
    assert_eq!(created["status"], json!({}), "status is reset on create");

    let got = s.ok(Method::GET, &format!("{DEPLOYMENTS}/web"), None).await;
    assert_eq!(got, created);

    // Update with the current RV bumps generation when spec changes.
    let mut changed = got.clone();
    changed["spec"]["replicas"] = json!(5);
    changed["status"] = json!({"replicas": 99});
    let updated = s
        .ok(
            Method::PUT,
            &format!("{DEPLOYMENTS}/web"),
            Some(changed.clone()),
        )
        .await;
    assert_eq!(updated["metadata"]["generation"], 2);
    assert_eq!(updated["spec"]["replicas"], 5);
    assert_eq!(updated["status"], json!({}), "main updates ignore status");
    let new_rv: i64 = updated["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .parse()
        .expect("numeric");
    assert!(new_rv > rv);
    assert_eq!(updated["metadata"]["uid"], meta["uid"]);

    // Metadata-only change: no generation bump.
    let mut labelled = updated.clone();
    labelled["metadata"]["labels"]["extra"] = json!("yes");
    let labelled = s
        .ok(Method::PUT, &format!("{DEPLOYMENTS}/web"), Some(labelled))
        .await;
    assert_eq!(labelled["metadata"]["generation"], 2);

    // Stale RV -> 409 Conflict.
    let (status, body) = s
        .call(Method::PUT, &format!("{DEPLOYMENTS}/web"), Some(changed))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_status(&body, 409, "Conflict");
    assert_eq!(
        body["details"],
        json!({"name": "web", "group": "apps", "kind": "deployments"})
    );

    // Delete returns the object; then 404.
    let deleted = s
        .ok(
            Method::DELETE,
            &format!("{DEPLOYMENTS}/web"),
            Some(json!({"propagationPolicy": "Foreground"})),
        )
        .await;
    assert_eq!(deleted["metadata"]["name"], "web");
    // Foreground: the object waits (terminating, with the finalizer) for the garbage collector,
    // and goes when its last finalizer is removed.
    assert_eq!(
        deleted["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    assert!(deleted["metadata"]["deletionTimestamp"].is_string());
    let (status, _) = s
        .patch(
            &format!("{DEPLOYMENTS}/web"),
            "application/merge-patch+json",
            json!({"metadata": {"finalizers": null}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = s
        .call(Method::GET, &format!("{DEPLOYMENTS}/web"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_status(&body, 404, "NotFound");
    assert_eq!(body["message"], "deployments.apps \"web\" not found");
}

#[tokio::test]
async fn client_mistakes_are_4xx_statuses() {
    let s = server().await;
    s.ok(Method::POST, CONFIGMAPS, Some(configmap("cfg", json!({}))))
        .await;
    let (status, body) = s
        .call(Method::POST, CONFIGMAPS, Some(configmap("cfg", json!({}))))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_status(&body, 409, "AlreadyExists");
    assert_eq!(body["details"]["name"], "cfg");

    let (status, body) = s
        .call(
            Method::POST,
            CONFIGMAPS,
            Some(configmap("Not_Valid", json!({}))),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_status(&body, 422, "Invalid");

    let (status, body) = s
        .raw(
            Method::POST,
            CONFIGMAPS,
            "application/json",
            b"{not json".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_status(&body, 400, "BadRequest");

    let (status, body) = s
        .call(
            Method::POST,
            CONFIGMAPS,
            Some(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "kind mismatch: {body}");
    assert_status(&body, 400, "BadRequest");

    let (status, body) = s
        .call(
            Method::POST,
            CONFIGMAPS,
            Some(json!({"metadata": {"name": "typed"}, "data": {"k": 5}})),
        )
        .await;
    assert!(
        status.is_client_error(),
        "wrong field type must be 4xx, got {status}: {body}"
    );

    let (status, body) = s
        .call(Method::GET, "/api/v1/namespaces/default/widgets", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_status(&body, 404, "NotFound");

    let big = json!({"metadata": {"name": "big"}, "data": {"k": "x".repeat(4 * 1024 * 1024)}});
    let (status, body) = s.call(Method::POST, CONFIGMAPS, Some(big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_status(&body, 413, "RequestEntityTooLarge");

    let (status, body) = s
        .call(
            Method::POST,
            "/api/v1/namespaces/nowhere/configmaps",
            Some(configmap("a", json!({}))),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_status(&body, 404, "NotFound");

    let (status, body) = s
        .call(
            Method::POST,
            &format!("{CONFIGMAPS}?dryRun=Some"),
            Some(configmap("b", json!({}))),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_status(&body, 422, "Invalid");
    assert_eq!(
        body["message"],
        "CreateOptions.meta.k8s.io \"\" is invalid: dryRun: Unsupported value: []string{\"Some\"}: supported values: \"All\""
    );

    let (status, body) = s
        .call(
            Method::GET,
            &format!("{CONFIGMAPS}?labelSelector=a%20in%20(b"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = s
        .call(
            Method::GET,
            &format!("{CONFIGMAPS}?fieldSelector=spec.nodeName%3Dx"),
            None,
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "unsupported field on configmaps: {body}"
    );
}

#[tokio::test]
async fn generate_name_and_name_rules() {
    let s = server().await;
    let created = s
        .ok(
            Method::POST,
            CONFIGMAPS,
            Some(json!({"metadata": {"generateName": "job-"}})),
        )
        .await;
    let name = created["metadata"]["name"].as_str().expect("name");
    assert!(
        name.starts_with("job-") && name.len() == 9,
        "generated name {name}"
    );
    // Services need a DNS-1123 label: dots are not allowed.
    let (status, body) = s
        .call(
            Method::POST,
            "/api/v1/namespaces/default/services",
            Some(json!({"metadata": {"name": "a.b"}, "spec": {"ports": [{"port": 80}]}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test]
async fn lists_filter_by_labels_and_fields_and_page() {
    let s = server().await;
    for (name, tier) in [("a", "fe"), ("b", "be"), ("c", "fe")] {
        s.ok(
            Method::POST,
            CONFIGMAPS,
            Some(configmap(name, json!({"tier": tier}))),
        )
        .await;
    }
    s.ok(
        Method::POST,
        "/api/v1/namespaces",
        Some(json!({"metadata": {"name": "other"}})),
    )
    .await;
    s.ok(
        Method::POST,
        "/api/v1/namespaces/other/configmaps",
        Some(configmap("d", json!({"tier": "fe"}))),
    )
    .await;

    let names = |list: &Value| -> Vec<String> {
        list["items"]
            .as_array()
            .expect("items is a list")
            .iter()
            .map(|i| {
                format!(
                    "{}/{}",
                    i["metadata"]["namespace"].as_str().unwrap_or(""),
                    i["metadata"]["name"].as_str().unwrap_or("")
                )
            })
            .collect()
    };
    let list = s
        .ok(
            Method::GET,
            &format!("{CONFIGMAPS}?labelSelector=tier%3Dfe"),
            None,
        )
        .await;
    assert_eq!(list["kind"], "ConfigMapList");
    assert_eq!(list["apiVersion"], "v1");
    assert!(
        list["metadata"]["resourceVersion"]
            .as_str()
            .is_some_and(|rv| rv.parse::<i64>().is_ok())
    );
    assert_eq!(names(&list), ["default/a", "default/c"]);

    let all = s
        .ok(
            Method::GET,
            "/api/v1/configmaps?labelSelector=tier%20in%20(fe)",
            None,
        )
        .await;
    assert_eq!(names(&all), ["default/a", "default/c", "other/d"]);

    let by_name = s
        .ok(
            Method::GET,
            "/api/v1/configmaps?fieldSelector=metadata.name%21%3Da,metadata.namespace%3Ddefault",
            None,
        )
        .await;
    assert_eq!(names(&by_name), ["default/b", "default/c"]);

    let empty = s
        .ok(Method::GET, "/api/v1/namespaces/default/pods", None)
        .await;
    assert_eq!(empty["items"], json!([]), "an empty list is [] not null");

    let page = s
        .ok(Method::GET, &format!("{CONFIGMAPS}?limit=2"), None)
        .await;
    assert_eq!(names(&page), ["default/a", "default/b"]);
    let token = page["metadata"]["continue"]
        .as_str()
        .expect("continue token");
    let rest = s
        .ok(
            Method::GET,
            &format!("{CONFIGMAPS}?limit=2&continue={token}"),
            None,
        )
        .await;
    assert_eq!(names(&rest), ["default/c"]);
    assert!(rest["metadata"].get("continue").is_none());

    // Pod field selectors: spec.nodeName and status.phase with !=.
    for (name, node) in [("p1", "n1"), ("p2", "")] {
        let mut pod = json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        if !node.is_empty() {
            pod["spec"]["nodeName"] = json!(node);
        }
        s.ok(Method::POST, "/api/v1/namespaces/default/pods", Some(pod))
            .await;
    }
    let on_n1 = s
        .ok(
            Method::GET,
            "/api/v1/pods?fieldSelector=spec.nodeName%3Dn1",
            None,
        )
        .await;
    assert_eq!(names(&on_n1), ["default/p1"]);
    let not_running = s
        .ok(
            Method::GET,
            "/api/v1/pods?fieldSelector=status.phase%21%3DRunning",
            None,
        )
        .await;
    assert_eq!(names(&not_running), ["default/p1", "default/p2"]);
}

/// Reads watch lines until `count` events arrived (or panics after a few seconds).
async fn watch_events(router: &Router, uri: &str, count: usize) -> (StatusCode, Vec<Value>, Body) {
    watch_events_accepting(router, uri, "application/json", count).await
}

/// [`watch_events`] with an `Accept` header.
async fn watch_events_accepting(
    router: &Router,
    uri: &str,
    accept: &str,
    count: usize,
) -> (StatusCode, Vec<Value>, Body) {
    let request = Request::builder()
        .uri(uri)
        .header(header::AUTHORIZATION, bearer(ADMIN_TOKEN))
        .header(header::ACCEPT, accept)
        .body(Body::empty())
        .expect("request");
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("the router answers");
    let status = response.status();
    let body = response.into_body();
    let mut stream = body.into_data_stream();
    let mut buffer = Vec::new();
    let mut events = Vec::new();
    while events.len() < count {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "watch {uri}: only {} of {count} events after 5 s: {events:?}",
                    events.len()
                )
            })
            .unwrap_or_else(|| {
                panic!(
                    "watch {uri} ended after {} of {count} events: {events:?}",
                    events.len()
                )
            })
            .expect("watch chunk");
        buffer.extend_from_slice(&chunk);
        while let Some(pos) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=pos).collect();
            events.push(serde_json::from_slice(&line).expect("each watch line is JSON"));
        }
    }
    (status, events, Body::from_stream(stream))
}

fn summary(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_owned(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn watch_streams_added_modified_deleted_in_order() {
    let s = server().await;
    s.ok(
        Method::POST,
        CONFIGMAPS,
        Some(configmap("before", json!({}))),
    )
    .await;
    let list = s.ok(Method::GET, CONFIGMAPS, None).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_owned();

    // From the list's RV: only changes after it.
    let watcher = {
        let router = s.router.clone();
        let uri = format!("{CONFIGMAPS}?watch=true&resourceVersion={rv}&timeoutSeconds=10");
        tokio::spawn(async move {
            let (status, events, _) = watch_events(&router, &uri, 3).await;
            (status, events)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let created = s
        .ok(Method::POST, CONFIGMAPS, Some(configmap("w", json!({}))))
        .await;
    let mut changed = created.clone();
    changed["data"]["k"] = json!("v2");
    s.ok(Method::PUT, &format!("{CONFIGMAPS}/w"), Some(changed))
        .await;
    s.ok(Method::DELETE, &format!("{CONFIGMAPS}/w"), None).await;
    let (status, events) = watcher.await.expect("watcher task");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        summary(&events),
        [
            ("ADDED".into(), "w".into()),
            ("MODIFIED".into(), "w".into()),
            ("DELETED".into(), "w".into())
        ]
    );
    assert_eq!(events[1]["object"]["data"]["k"], "v2");
    let rvs: Vec<i64> = events
        .iter()
        .map(|e| {
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .expect("rv")
                .parse()
                .expect("numeric")
        })
        .collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "RVs grow: {rvs:?}");

    // Without RV: synthetic ADDED for what exists.
    let (_, events, _) = watch_events(&s.router, &format!("{CONFIGMAPS}?watch=1"), 1).await;
    assert_eq!(summary(&events), [("ADDED".into(), "before".into())]);

    // Legacy /watch/ path with a name.
    let (_, events, _) = watch_events(
        &s.router,
        "/api/v1/watch/namespaces/default/configmaps/before",
        1,
    )
    .await;
    assert_eq!(summary(&events), [("ADDED".into(), "before".into())]);
}

#[tokio::test]
async fn watch_from_a_compacted_revision_is_410_expired() {
    let s = server().await;
    let first = s
        .ok(Method::POST, CONFIGMAPS, Some(configmap("c", json!({}))))
        .await;
    let old_rv = first["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_owned();
    let mut current = first;
    for i in 0..3 {
        current["data"]["k"] = json!(format!("v{i}"));
        current = s
            .ok(
                Method::PUT,
                &format!("{CONFIGMAPS}/c"),
                Some(current.clone()),
            )
            .await;
    }
    let now = s.store.current_revision().await.expect("revision");
    s.store.compact(now).await.expect("compact");
    let (status, events, _) = watch_events(
        &s.router,
        &format!("{CONFIGMAPS}?watch=true&resourceVersion={old_rv}"),
        1,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(events[0]["type"], "ERROR");
    assert_status(&events[0]["object"], 410, "Expired");
}

#[tokio::test]
async fn watch_honours_timeout_seconds() {
    let s = server().await;
    let request = Request::builder()
        .uri(format!("{CONFIGMAPS}?watch=true&timeoutSeconds=1"))
        .header(header::AUTHORIZATION, bearer(ADMIN_TOKEN))
        .body(Body::empty())
        .expect("request");
    let response = s.router.clone().oneshot(request).await.expect("answer");
    let started = std::time::Instant::now();
    let body = tokio::time::timeout(
        Duration::from_secs(5),
        axum::body::to_bytes(response.into_body(), usize::MAX),
    )
    .await
    .expect("the watch ends after timeoutSeconds")
    .expect("body");
    assert!(body.is_empty(), "no events: {body:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn status_subresource_changes_only_status() {
    let s = server().await;
    let created = s
        .ok(Method::POST, DEPLOYMENTS, Some(deployment("web", 1)))
        .await;
    let mut body = created.clone();
    body["spec"]["replicas"] = json!(7);
    body["status"] = json!({"replicas": 1, "observedGeneration": 1});
    let updated = s
        .ok(
            Method::PUT,
            &format!("{DEPLOYMENTS}/web/status"),
            Some(body),
        )
        .await;
    assert_eq!(updated["status"]["replicas"], 1);
    assert_eq!(updated["spec"]["replicas"], 1, "status updates ignore spec");
    assert_eq!(updated["metadata"]["generation"], 1);
    let (status, patched) = s
        .patch(
            &format!("{DEPLOYMENTS}/web/status"),
            "application/merge-patch+json",
            json!({"status": {"availableReplicas": 1}, "spec": {"replicas": 9}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["status"]["availableReplicas"], 1);
    assert_eq!(patched["spec"]["replicas"], 1);
}

/// `status.selector` is the selector's query text, as kube-apiserver's scale storage writes it:
/// `LabelSelectorAsSelector` for the apps kinds, `SelectorFromSet` for a ReplicationController
/// (whose `spec.selector` is a plain map).
#[tokio::test]
async fn scale_selector_is_the_query_text() {
    let s = server().await;
    let mut web = deployment("web", 1);
    web["spec"]["selector"] = json!({
        "matchLabels": {"tier": "fe", "app": "web"},
        "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["qa", "dev"]}],
    });
    web["spec"]["template"]["metadata"]["labels"] = json!({"app": "web", "tier": "fe"});
    s.ok(Method::POST, DEPLOYMENTS, Some(web)).await;
    let scale = s
        .ok(Method::GET, &format!("{DEPLOYMENTS}/web/scale"), None)
        .await;
    assert_eq!(
        scale["status"]["selector"],
        "app=web,env notin (dev,qa),tier=fe"
    );
    let rcs = "/api/v1/namespaces/default/replicationcontrollers";
    let rc = json!({
        "apiVersion": "v1", "kind": "ReplicationController",
        "metadata": {"name": "legacy"},
        "spec": {
            "replicas": 2,
            "selector": {"tier": "be", "app": "legacy"},
            "template": {
                "metadata": {"labels": {"app": "legacy", "tier": "be"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]}
            }
        }
    });
    s.ok(Method::POST, rcs, Some(rc)).await;
    let scale = s
        .ok(Method::GET, &format!("{rcs}/legacy/scale"), None)
        .await;
    assert_eq!(scale["spec"]["replicas"], 2);
    assert_eq!(scale["status"]["selector"], "app=legacy,tier=be");
}

#[tokio::test]
async fn scale_subresource_reads_and_writes_replicas() {
    let s = server().await;
    s.ok(Method::POST, DEPLOYMENTS, Some(deployment("web", 2)))
        .await;
    let scale = s
        .ok(Method::GET, &format!("{DEPLOYMENTS}/web/scale"), None)
        .await;
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["apiVersion"], "autoscaling/v1");
    assert_eq!(scale["spec"]["replicas"], 2);
    assert_eq!(scale["status"]["selector"], "app=web");
    let (status, patched) = s
        .patch(
            &format!("{DEPLOYMENTS}/web/scale"),
            "application/merge-patch+json",
            json!({"spec": {"replicas": 4}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["kind"], "Scale");
    assert_eq!(patched["spec"]["replicas"], 4);
    let mut put = patched.clone();
    put["spec"]["replicas"] = json!(6);
    let put = s
        .ok(Method::PUT, &format!("{DEPLOYMENTS}/web/scale"), Some(put))
        .await;
    assert_eq!(put["spec"]["replicas"], 6);
    let deployment = s.ok(Method::GET, &format!("{DEPLOYMENTS}/web"), None).await;
    assert_eq!(deployment["spec"]["replicas"], 6);
    assert_eq!(deployment["metadata"]["generation"], 3);
    // A stale Scale -> 409.
    let (status, body) = s
        .call(
            Method::PUT,
            &format!("{DEPLOYMENTS}/web/scale"),
            Some(patched),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_status(&body, 409, "Conflict");
}

#[tokio::test]
async fn merge_json_and_strategic_patches() {
    let s = server().await;
    s.ok(Method::POST, DEPLOYMENTS, Some(deployment("web", 1)))
        .await;
    let uri = format!("{DEPLOYMENTS}/web");
    let (status, merged) = s
        .patch(
            &uri,
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"team": "a"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{merged}");
    assert_eq!(
        merged["metadata"]["labels"],
        json!({"app": "web", "team": "a"})
    );

    let (status, jsonp) = s
        .patch(
            &uri,
            "application/json-patch+json",
            json!([{"op": "replace", "path": "/spec/replicas", "value": 3}]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{jsonp}");
    assert_eq!(jsonp["spec"]["replicas"], 3);
    assert_eq!(jsonp["metadata"]["generation"], 2);

    let (status, failed) = s
        .patch(
            &uri,
            "application/json-patch+json",
            json!([{"op": "test", "path": "/spec/replicas", "value": 99}]),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{failed}");

    // kubectl apply's re-apply: containers merged by name, a sidecar added.
    let (status, smp) = s
        .patch(
            &uri,
            "application/strategic-merge-patch+json",
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
                "containers": [{"name": "web", "image": "nginx:1.28"}, {"name": "side", "image": "busybox"}]
            }}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{smp}");
    let containers = &smp["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers[0]["image"], "nginx:1.28");
    assert_eq!(
        containers[0]["ports"][0]["containerPort"], 80,
        "merged, not replaced: {containers}"
    );
    assert_eq!(containers[1]["name"], "side");

    // Server-side apply has its own tests (apply.rs); without a fieldManager it is refused.
    let (status, body) = s
        .patch(&uri, "application/apply-patch+yaml", json!({}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, body) = s
        .patch(
            &format!("{DEPLOYMENTS}/nope"),
            "application/merge-patch+json",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test]
async fn bound_pods_and_namespaces_delete_gracefully() {
    let s = server().await;
    let pods = "/api/v1/namespaces/default/pods";
    let pod = |name: &str| json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    s.ok(Method::POST, pods, Some(pod("free"))).await;
    s.ok(Method::POST, pods, Some(pod("bound"))).await;
    let (status, body) = s
        .call(Method::POST, &format!("{pods}/bound/binding"), Some(json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "bound"}, "target": {"kind": "Node", "name": "n1"}})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = s
        .call(
            Method::POST,
            &format!("{pods}/bound/binding"),
            Some(json!({"target": {"name": "n2"}})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "binding twice: {body}");

    s.ok(Method::DELETE, &format!("{pods}/free"), None).await;
    let (status, _) = s.call(Method::GET, &format!("{pods}/free"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "unscheduled pods go at once");

    let terminating = s.ok(Method::DELETE, &format!("{pods}/bound"), None).await;
    assert!(
        terminating["metadata"]["deletionTimestamp"].is_string(),
        "{terminating}"
    );
    assert_eq!(terminating["metadata"]["deletionGracePeriodSeconds"], 30);
    s.ok(Method::GET, &format!("{pods}/bound"), None).await;
    s.ok(
        Method::DELETE,
        &format!("{pods}/bound?gracePeriodSeconds=0"),
        None,
    )
    .await;
    let (status, _) = s.call(Method::GET, &format!("{pods}/bound"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "grace 0 removes it");

    s.ok(
        Method::POST,
        "/api/v1/namespaces",
        Some(json!({"metadata": {"name": "gone"}})),
    )
    .await;
    let ns = s.ok(Method::DELETE, "/api/v1/namespaces/gone", None).await;
    assert_eq!(ns["status"]["phase"], "Terminating");
    assert!(ns["metadata"]["deletionTimestamp"].is_string());
    let (status, body) = s
        .call(
            Method::POST,
            "/api/v1/namespaces/gone/configmaps",
            Some(configmap("x", json!({}))),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test]
async fn bad_tokens_are_401_anonymous_requests_403_and_health_stays_open() {
    let s = server().await;
    let (status, body) = s
        .raw_as(
            "not-a-token",
            Method::GET,
            "/api/v1/namespaces",
            "",
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_status(&body, 401, "Unauthorized");
    let (status, _) = s
        .raw_as("not-a-token", Method::GET, "/apis", "", Vec::new())
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "discovery needs valid credentials"
    );
    // Without credentials a request is system:anonymous's, which RBAC grants nothing here.
    let (status, body) = s
        .raw_as("", Method::GET, "/api/v1/namespaces", "", Vec::new())
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_status(&body, 403, "Forbidden");
    assert_eq!(
        body["message"],
        "namespaces is forbidden: User \"system:anonymous\" cannot list resource \"namespaces\" \
         in API group \"\" at the cluster scope"
    );
    let (status, _) = s.raw_as("", Method::GET, "/apis", "", Vec::new()).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "discovery is for authenticated users"
    );
    for path in ["/healthz", "/readyz", "/livez", "/version"] {
        let (status, body) = s.raw_as("", Method::GET, path, "", Vec::new()).await;
        assert_eq!(status, StatusCode::OK, "{path} is public: {body}");
    }
}

#[tokio::test]
async fn users_without_rights_get_discovery_only() {
    let s = server().await;
    let (status, _) = s
        .raw_as(ALICE_TOKEN, Method::GET, "/api/v1", "", Vec::new())
        .await;
    assert_eq!(status, StatusCode::OK, "discovery is open to every user");
    let (status, body) = s
        .raw_as(ALICE_TOKEN, Method::GET, CONFIGMAPS, "", Vec::new())
        .await;
    assert_status(&body, 403, "Forbidden");
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("User \"alice\"")),
        "{body}"
    );
}

#[tokio::test]
async fn node_credentials_change_only_their_node_lease_and_bound_pods() {
    let s = server().await;
    let node = |name: &str| json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
    let as_node = |method: Method, uri: String, body: Value| {
        let s = &s;
        async move {
            s.raw_as(
                NODE_TOKEN,
                method,
                &uri,
                "application/json",
                body.to_string().into_bytes(),
            )
            .await
        }
    };
    let (status, body) = as_node(Method::POST, "/api/v1/nodes".into(), node("n1")).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a node registers itself: {body}"
    );
    let (status, body) = as_node(Method::POST, "/api/v1/nodes".into(), node("n2")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_status(&body, 403, "Forbidden");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("User \"system:node:n1\" cannot create resource \"nodes\"")),
        "{body}"
    );
    s.ok(Method::POST, "/api/v1/nodes", Some(node("n2"))).await;
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let (status, body) = s
        .raw_as(
            NODE_TOKEN,
            Method::PATCH,
            "/api/v1/nodes/n1/status",
            "application/merge-patch+json",
            ready.to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "own node status: {body}");
    let (status, _) = s
        .raw_as(
            NODE_TOKEN,
            Method::PATCH,
            "/api/v1/nodes/n2/status",
            "application/merge-patch+json",
            ready.to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another node's status");

    let leases = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases";
    let lease = |name: &str| json!({"metadata": {"name": name}, "spec": {"holderIdentity": name}});
    let (status, body) = as_node(Method::POST, leases.into(), lease("n1")).await;
    assert_eq!(status, StatusCode::CREATED, "own lease: {body}");
    let (status, _) = as_node(Method::POST, leases.into(), lease("n2")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another node's lease");

    let pods = "/api/v1/namespaces/default/pods";
    let pod = |name: &str| json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
    let (status, _) = as_node(Method::POST, pods.into(), pod("mine")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "nodes do not create pods");
    for (name, node) in [("mine", "n1"), ("theirs", "n2")] {
        s.ok(Method::POST, pods, Some(pod(name))).await;
        s.ok(
            Method::POST,
            &format!("{pods}/{name}/binding"),
            Some(json!({"target": {"kind": "Node", "name": node}})),
        )
        .await;
    }
    let running = json!({"status": {"phase": "Running", "podIP": "10.244.1.5"}});
    let (status, body) = as_node(
        Method::PATCH,
        format!("{pods}/mine/status"),
        running.clone(),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "JSON body on PATCH is not a patch type: {body}"
    );
    let (status, body) = s
        .raw_as(
            NODE_TOKEN,
            Method::PATCH,
            &format!("{pods}/mine/status"),
            "application/merge-patch+json",
            running.to_string().into_bytes(),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "status of a pod bound to it: {body}"
    );
    assert_eq!(body["status"]["podIP"], "10.244.1.5");
    let (status, body) = s
        .raw_as(
            NODE_TOKEN,
            Method::PATCH,
            &format!("{pods}/theirs/status"),
            "application/merge-patch+json",
            running.to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.ends_with(
            "node \"n1\" can only update pod status for pods with spec.nodeName set to itself"
        )),
        "{body}"
    );
    let (status, _) = s
        .raw_as(
            NODE_TOKEN,
            Method::DELETE,
            &format!("{pods}/theirs?gracePeriodSeconds=0"),
            "",
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "deleting another node's pod");
    let (status, body) = s
        .raw_as(
            NODE_TOKEN,
            Method::DELETE,
            &format!("{pods}/mine?gracePeriodSeconds=0"),
            "",
            Vec::new(),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "confirming deletion of its own pod: {body}"
    );
    let (status, _) = s
        .raw_as(
            NODE_TOKEN,
            Method::GET,
            &format!("{pods}/theirs"),
            "",
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "nodes read");
    let (status, _) = as_node(Method::POST, CONFIGMAPS.into(), configmap("x", json!({}))).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "nodes write nothing else");
}

/// `GET /metrics` as text.
async fn metrics_text(s: &Server) -> String {
    let (status, value) = s.call(Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK, "{value}");
    value["raw"]
        .as_str()
        .unwrap_or_else(|| panic!("/metrics is not text: {value}"))
        .to_owned()
}

/// The value of the sample line `series` (name and labels exactly as exposed).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_watches_and_store_latency() {
    let s = server().await;
    s.ok(Method::POST, CONFIGMAPS, Some(configmap("m1", json!({}))))
        .await;
    s.ok(Method::GET, &format!("{CONFIGMAPS}/m1"), None).await;
    s.ok(Method::GET, &format!("{CONFIGMAPS}/m1"), None).await;
    s.ok(Method::GET, CONFIGMAPS, None).await;
    let (status, _) = s
        .call(Method::GET, &format!("{CONFIGMAPS}/nope"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = s
        .patch(
            &format!("{DEPLOYMENTS}/nope/scale"),
            "application/merge-patch+json",
            json!({"spec": {"replicas": 2}}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    s.ok(Method::DELETE, &format!("{CONFIGMAPS}/m1"), None)
        .await;

    // An open watch is counted until its client goes away.
    let (status, _, open_watch) =
        watch_events(&s.router, &format!("{CONFIGMAPS}?watch=true"), 0).await;
    assert_eq!(status, StatusCode::OK);
    let text = metrics_text(&s).await;
    keelson_testbed::exposition::check(&text).unwrap_or_else(|e| panic!("{e} in:\n{text}"));
    // kube-apiserver's labels: verb, dry_run, group, version, resource, subresource, scope,
    // component, code.
    let request = |verb: &str, group: &str, resource: &str, sub: &str, scope: &str, code: u16| {
        format!(
            "apiserver_request_total{{verb=\"{verb}\",dry_run=\"\",group=\"{group}\",\
             version=\"v1\",resource=\"{resource}\",subresource=\"{sub}\",scope=\"{scope}\",\
             component=\"apiserver\",code=\"{code}\"}}"
        )
    };
    for (series, want) in [
        (request("POST", "", "configmaps", "", "resource", 201), 1.0),
        (request("GET", "", "configmaps", "", "resource", 200), 2.0),
        (request("LIST", "", "configmaps", "", "namespace", 200), 1.0),
        (request("GET", "", "configmaps", "", "resource", 404), 1.0),
        (
            request("PATCH", "apps", "deployments", "scale", "resource", 404),
            1.0,
        ),
        (request("DELETE", "", "configmaps", "", "resource", 200), 1.0),
        (request("WATCH", "", "configmaps", "", "namespace", 200), 1.0),
        (
            r#"apiserver_request_duration_seconds_count{verb="GET",dry_run="",group="",version="v1",resource="configmaps",subresource="",scope="resource",component="apiserver"}"#.to_owned(),
            3.0,
        ),
        (
            r#"apiserver_registered_watchers{group="",version="v1",kind="ConfigMap"}"#.to_owned(),
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, &series), Some(want), "{series} in:\n{text}");
    }
    // Store latency: the create wrote once; gets and the list read the store.
    let creates = sample(
        &text,
        r#"keelson_store_operation_duration_seconds_count{operation="create"}"#,
    );
    assert!(
        creates.is_some_and(|c| c >= 1.0),
        "store create series in:\n{text}"
    );
    for operation in ["get", "list", "delete", "watch"] {
        let series =
            format!(r#"keelson_store_operation_duration_seconds_count{{operation="{operation}"}}"#);
        assert!(
            sample(&text, &series).is_some_and(|c| c >= 1.0),
            "{series} in:\n{text}"
        );
    }
    assert!(
        text.contains(r#"apiserver_request_duration_seconds_bucket{le="0.005",verb="GET",dry_run="",group="",version="v1",resource="configmaps",subresource="",scope="resource",component="apiserver"}"#),
        "kube-apiserver's latency buckets in:\n{text}"
    );

    drop(open_watch);
    let text = metrics_text(&s).await;
    assert_eq!(
        sample(
            &text,
            r#"apiserver_registered_watchers{group="",version="v1",kind="ConfigMap"}"#
        ),
        Some(0.0),
        "the closed watch is no longer counted:\n{text}"
    );
}

/// What `kubectl get` sends: a Table if the server can, plain JSON otherwise.
const KUBECTL_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,\
                              application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

impl Server {
    async fn get_accepting(&self, uri: &str, accept: &str) -> (StatusCode, Value) {
        let request = Request::builder()
            .uri(uri)
            .header(header::AUTHORIZATION, bearer(ADMIN_TOKEN))
            .header(header::ACCEPT, accept)
            .body(Body::empty())
            .expect("request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router answers");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, serde_json::from_slice(&bytes).expect("a JSON body"))
    }
}

fn column_names(table: &Value) -> Vec<&str> {
    table["columnDefinitions"]
        .as_array()
        .expect("columnDefinitions")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect()
}

#[tokio::test]
async fn kubectl_get_receives_tables_with_kubernetes_columns() {
    let s = server().await;
    s.ok(Method::POST, CONFIGMAPS, Some(configmap("a", json!({}))))
        .await;
    s.ok(
        Method::POST,
        "/api/v1/namespaces/default/services",
        Some(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                    "spec": {"type": "NodePort", "selector": {"app": "web"},
                             "ports": [{"port": 80, "targetPort": 80}]}}),
        ),
    )
    .await;

    // List: a Table with the printer's columns and a PartialObjectMetadata per row.
    let (status, table) = s.get_accepting(CONFIGMAPS, KUBECTL_ACCEPT).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(table["kind"], "Table", "{table}");
    assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
    assert!(table["metadata"]["resourceVersion"].is_string(), "{table}");
    assert_eq!(column_names(&table), ["Name", "Data", "Age"]);
    assert_eq!(table["rows"][0]["cells"][0], "a");
    assert_eq!(table["rows"][0]["cells"][1], 1);
    let object = &table["rows"][0]["object"];
    assert_eq!(object["kind"], "PartialObjectMetadata");
    assert_eq!(object["metadata"]["namespace"], "default");
    assert!(object.get("data").is_none(), "metadata only: {object}");

    // Get of one object, v1beta1 when that is what is asked for, the whole object on request.
    let (_, one) = s
        .get_accepting(
            "/api/v1/namespaces/default/services/web?includeObject=Object",
            "application/json;as=Table;v=v1beta1;g=meta.k8s.io",
        )
        .await;
    assert_eq!(one["apiVersion"], "meta.k8s.io/v1beta1", "{one}");
    assert_eq!(
        column_names(&one),
        [
            "Name",
            "Type",
            "Cluster-IP",
            "External-IP",
            "Port(s)",
            "Age",
            "Selector"
        ]
    );
    let cells = one["rows"][0]["cells"].as_array().expect("cells");
    assert_eq!(cells[1], "NodePort");
    let ports = cells[4].as_str().expect("ports");
    assert!(
        ports.starts_with("80:3") && ports.ends_with("/TCP"),
        "node port shown: {ports}"
    );
    assert_eq!(one["rows"][0]["object"]["kind"], "Service");
    assert_eq!(
        one["metadata"]["resourceVersion"],
        one["rows"][0]["object"]["metadata"]["resourceVersion"]
    );

    // A client that does not ask for a Table sees no change; a bad includeObject is a 400.
    let (_, plain) = s.get_accepting(CONFIGMAPS, "application/json").await;
    assert_eq!(plain["kind"], "ConfigMapList");
    let (status, _) = s
        .get_accepting(
            &format!("{CONFIGMAPS}?includeObject=Everything"),
            KUBECTL_ACCEPT,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Watch: one-row Tables; only the first event carries the column definitions.
    let watcher = {
        let router = s.router.clone();
        tokio::spawn(async move {
            let (_, events, _) = watch_events_accepting(
                &router,
                &format!("{CONFIGMAPS}?watch=true&timeoutSeconds=10"),
                KUBECTL_ACCEPT,
                2,
            )
            .await;
            events
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.ok(Method::POST, CONFIGMAPS, Some(configmap("b", json!({}))))
        .await;
    let events = watcher.await.expect("watcher task");
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["kind"], "Table", "{}", events[0]);
    assert_eq!(column_names(&events[0]["object"]), ["Name", "Data", "Age"]);
    assert_eq!(events[0]["object"]["rows"][0]["cells"][0], "a");
    assert_eq!(events[1]["type"], "ADDED");
    assert!(
        events[1]["object"].get("columnDefinitions").is_none(),
        "headers only once: {}",
        events[1]
    );
    assert_eq!(events[1]["object"]["rows"][0]["cells"][0], "b");
    assert_eq!(
        events[1]["object"]["rows"].as_array().map(Vec::len),
        Some(1)
    );
}

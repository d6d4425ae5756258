//! Overload protection: in-flight limits, open watches per user and request deadlines, as a
//! client sees them (429 + `Retry-After`, 504), and the exempt administrator and nodes passing
//! while a user floods the server.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use keelson_apiserver::overload::Limits;
use keelson_store::{
    Deleted, KeyValue, ListOptions, ListResult, Revision, StoreError, WatchStream,
};
use tokio::sync::Semaphore;

use super::*;

/// A store whose reads of ConfigMaps wait until the test opens the gate: requests that stay
/// in flight for as long as a test needs.
#[derive(Debug)]
struct GatedStore {
    inner: Arc<dyn Store>,
    gate: Arc<Semaphore>,
}

const GATED: &str = "/registry/configmaps/";

impl GatedStore {
    async fn pass(&self, key: &str) {
        if key.starts_with(GATED) {
            let permit = self.gate.acquire().await.expect("gate open");
            permit.forget();
            self.gate.add_permits(1);
        }
    }
}

#[async_trait]
impl Store for GatedStore {
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision, StoreError> {
        self.inner.create(key, value).await
    }
    async fn get(&self, key: &str, rev: Option<Revision>) -> Result<Option<KeyValue>, StoreError> {
        self.pass(key).await;
        self.inner.get(key, rev).await
    }
    async fn update(&self, key: &str, value: Bytes, rev: Revision) -> Result<Revision, StoreError> {
        self.inner.update(key, value, rev).await
    }
    async fn delete(&self, key: &str, rev: Option<Revision>) -> Result<Deleted, StoreError> {
        self.inner.delete(key, rev).await
    }
    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult, StoreError> {
        self.pass(prefix).await;
        self.inner.list(prefix, options).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, from).await
    }
    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.inner.current_revision().await
    }
}

struct Limited {
    server: Server,
    state: AppState,
    /// Closed (0 permits) until a test opens it.
    gate: Arc<Semaphore>,
}

/// A server with `limits` over a gated store, where alice may do everything (bound to
/// `cluster-admin`) but is no administrator, so she is limited.
async fn limited(limits: Limits) -> Limited {
    let dir = tempfile::tempdir().expect("temp dir");
    let inner = bootstrapped_store(dir.path()).await;
    let gate = Arc::new(Semaphore::new(0));
    let store: Arc<dyn Store> = Arc::new(GatedStore {
        inner,
        gate: Arc::clone(&gate),
    });
    let authenticator = Authenticator::default()
        .with_token(
            ADMIN_TOKEN,
            UserInfo::new("kubernetes-admin", &[MASTERS_GROUP]),
        )
        .with_token(NODE_TOKEN, UserInfo::node("n1"))
        .with_token(ALICE_TOKEN, UserInfo::new("alice", &["developers"]));
    // Held lists must reach the gated store: no watch cache in front of it.
    let state = AppState::new(Arc::clone(&store))
        .with_watch_cache(false)
        .with_authenticator(authenticator)
        .with_limits(limits);
    let server = Server {
        store,
        router: app(state.clone()),
        _dir: dir,
    };
    server
        .ok(
            Method::POST,
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            Some(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "alice-admin"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]
            })),
        )
        .await;
    Limited {
        server,
        state,
        gate,
    }
}

fn request_as(token: &str, method: Method, uri: &str, body: Option<Value>) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, bearer(token))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .expect("request")
}

/// Sends a request in the background; the handle yields its status.
fn spawn_request(router: &Router, request: Request<Body>) -> tokio::task::JoinHandle<StatusCode> {
    let router = router.clone();
    tokio::spawn(async move {
        let response = router.oneshot(request).await.expect("the router answers");
        let status = response.status();
        let _ = axum::body::to_bytes(response.into_body(), usize::MAX).await;
        status
    })
}

/// Waits (up to 5 s) until `(reads, writes)` are in flight.
async fn wait_in_flight(state: &AppState, want: (usize, usize)) {
    let start = Instant::now();
    while state.overload().in_flight() != want {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "in flight: {:?}, want {want:?}",
            state.overload().in_flight()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn assert_too_many_requests(status: StatusCode, headers: &header::HeaderMap, body: &Value) {
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(
        headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()),
        Some("1"),
        "Retry-After: {headers:?}"
    );
    assert_status(body, 429, "TooManyRequests");
    assert_eq!(
        body["message"],
        "Too many requests, please try again later."
    );
    assert_eq!(body["details"]["retryAfterSeconds"], 1, "{body}");
}

#[tokio::test]
async fn requests_over_the_in_flight_limits_are_429_while_admins_and_nodes_pass() {
    let limits = Limits {
        max_requests_inflight: 2,
        max_mutating_requests_inflight: 1,
        ..Limits::default()
    };
    let l = limited(limits).await;
    let router = &l.server.router;
    let list = "/api/v1/namespaces/default/configmaps";
    // Two reads of alice's fill the read pool (they wait at the gate).
    let held: Vec<_> = (0..2)
        .map(|_| spawn_request(router, request_as(ALICE_TOKEN, Method::GET, list, None)))
        .collect();
    wait_in_flight(&l.state, (2, 0)).await;

    let (status, headers, body) = l
        .server
        .exchange(
            ALICE_TOKEN,
            Method::GET,
            "/api/v1/namespaces/default/pods",
            &[],
            vec![],
        )
        .await;
    assert_too_many_requests(status, &headers, &body);

    // The administrator's `kubectl get pods` and a node's reads are not limited.
    for token in [ADMIN_TOKEN, NODE_TOKEN] {
        let started = Instant::now();
        let (status, _, body) = l
            .server
            .exchange(
                token,
                Method::GET,
                "/api/v1/namespaces/default/pods",
                &[],
                vec![],
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{token}: {body}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    // Writes have their own pool: alice's create passes while reads are full...
    let (status, body) = l
        .server
        .raw_as(
            ALICE_TOKEN,
            Method::POST,
            list,
            "application/json",
            configmap("one", json!({})).to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // ...and health probes answer anyone.
    let (status, _, _) = l
        .server
        .exchange("", Method::GET, "/readyz", &[], vec![])
        .await;
    assert_eq!(status, StatusCode::OK);

    l.gate.add_permits(1);
    for handle in held {
        assert_eq!(handle.await.expect("request task"), StatusCode::OK);
    }
    wait_in_flight(&l.state, (0, 0)).await;
    let (status, body) = l
        .server
        .raw_as(ALICE_TOKEN, Method::GET, list, "", vec![])
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "alice is served again once the pool drains: {body}"
    );
    assert_eq!(body["items"][0]["metadata"]["name"], "one");
}

#[tokio::test]
async fn mutating_requests_have_their_own_limit() {
    let limits = Limits {
        max_requests_inflight: 0,
        max_mutating_requests_inflight: 1,
        ..Limits::default()
    };
    let l = limited(limits).await;
    let router = &l.server.router;
    l.server
        .ok(
            Method::POST,
            "/api/v1/namespaces/default/configmaps",
            Some(configmap("held", json!({}))),
        )
        .await;
    // A patch reads the ConfigMap first: it waits at the gate, holding the one write seat.
    let patch = Request::builder()
        .method(Method::PATCH)
        .uri("/api/v1/namespaces/default/configmaps/held")
        .header(header::AUTHORIZATION, bearer(ALICE_TOKEN))
        .header(header::CONTENT_TYPE, "application/merge-patch+json")
        .body(Body::from(r#"{"data":{"k":"patched"}}"#))
        .expect("request");
    let held = spawn_request(router, patch);
    wait_in_flight(&l.state, (0, 1)).await;
    let (status, headers, body) = l
        .server
        .exchange(
            ALICE_TOKEN,
            Method::POST,
            "/api/v1/namespaces/default/secrets",
            &[(header::CONTENT_TYPE, "application/json")],
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}})
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_too_many_requests(status, &headers, &body);
    // Reads are unlimited here (0), the administrator's writes exempt.
    let (status, _) = l
        .server
        .raw_as(
            ALICE_TOKEN,
            Method::GET,
            "/api/v1/namespaces/default/secrets",
            "",
            vec![],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    l.server
        .ok(
            Method::POST,
            "/api/v1/namespaces/default/secrets",
            Some(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "admin"}})),
        )
        .await;
    l.gate.add_permits(1);
    assert_eq!(held.await.expect("patch task"), StatusCode::OK);
}

/// Opens a watch as `token`: its status, body (the open stream) and the Status if refused.
async fn open_watch(
    router: &Router,
    token: &str,
    uri: &str,
) -> (StatusCode, header::HeaderMap, Body) {
    let response = router
        .clone()
        .oneshot(request_as(token, Method::GET, uri, None))
        .await
        .expect("the router answers");
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.into_body())
}

#[tokio::test]
async fn each_user_may_hold_a_limited_number_of_watches() {
    let limits = Limits {
        max_requests_inflight: 1,
        max_watches_per_user: 2,
        ..Limits::default()
    };
    let l = limited(limits).await;
    let router = &l.server.router;
    let watch = "/api/v1/namespaces/default/pods?watch=true";
    let (s1, _, first) = open_watch(router, ALICE_TOKEN, watch).await;
    let (s2, _, _second) = open_watch(
        router,
        ALICE_TOKEN,
        "/api/v1/watch/namespaces/default/services",
    )
    .await;
    assert_eq!((s1, s2), (StatusCode::OK, StatusCode::OK));
    assert_eq!(l.state.overload().open_watches("alice"), 2);

    let (status, headers, body) = open_watch(router, ALICE_TOKEN, watch).await;
    let body: Value =
        serde_json::from_slice(&axum::body::to_bytes(body, usize::MAX).await.expect("body"))
            .expect("a Status");
    assert_too_many_requests(status, &headers, &body);

    // Watches do not take read seats: alice's one read seat is free for a list.
    let (status, _) = l
        .server
        .raw_as(
            ALICE_TOKEN,
            Method::GET,
            "/api/v1/namespaces/default/pods",
            "",
            vec![],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // The administrator and nodes watch without limit.
    let mut exempt = Vec::new();
    for token in [
        ADMIN_TOKEN,
        ADMIN_TOKEN,
        ADMIN_TOKEN,
        NODE_TOKEN,
        NODE_TOKEN,
        NODE_TOKEN,
    ] {
        let (status, _, body) = open_watch(router, token, watch).await;
        assert_eq!(status, StatusCode::OK, "{token}");
        exempt.push(body);
    }
    // Closing one of alice's watches gives its seat back.
    drop(first);
    assert_eq!(l.state.overload().open_watches("alice"), 1);
    let (status, _, _third) = open_watch(router, ALICE_TOKEN, watch).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn slow_requests_end_in_a_504_timeout_status() {
    let l = limited(Limits {
        request_timeout: Duration::from_secs(2),
        ..Limits::default()
    })
    .await;
    let list = "/api/v1/namespaces/default/configmaps";
    // `?timeout=` shortens the deadline...
    let started = Instant::now();
    let (status, body) = l
        .server
        .raw_as(
            ALICE_TOKEN,
            Method::GET,
            &format!("{list}?timeout=300ms"),
            "",
            vec![],
        )
        .await;
    let took = started.elapsed();
    assert_status(&body, 504, "Timeout");
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        body["message"],
        "Timeout: request did not complete within the allotted timeout"
    );
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // ...but never beyond --request-timeout, which also binds administrators.
    let started = Instant::now();
    let (status, _) = l
        .server
        .raw(Method::GET, &format!("{list}?timeout=1h"), "", vec![])
        .await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // A malformed timeout is the client's mistake.
    let (status, body) = l
        .server
        .raw(Method::GET, &format!("{list}?timeout=soon"), "", vec![])
        .await;
    assert_status(&body, 400, "BadRequest");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "invalid timeout specified in the request URL - time: invalid duration \"soon\""
    );
    // Watches are long-running: no deadline cuts them.
    let (status, _, body) = open_watch(
        &l.server.router,
        ALICE_TOKEN,
        "/api/v1/namespaces/default/pods?watch=1",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let mut stream = body.into_data_stream();
    assert!(
        tokio::time::timeout(Duration::from_millis(2500), stream.next())
            .await
            .is_err(),
        "the watch stays open past --request-timeout"
    );
    // Requests that finish in time are untouched; once the gate opens lists answer.
    l.gate.add_permits(1);
    let (status, _) = l
        .server
        .raw_as(
            ALICE_TOKEN,
            Method::GET,
            &format!("{list}?timeout=5s"),
            "",
            vec![],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

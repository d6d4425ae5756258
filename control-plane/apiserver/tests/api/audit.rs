//! The audit log: a policy file decides what is recorded, and each request's events are JSON
//! lines of `audit.k8s.io/v1` `Event`s in the log file.

use std::sync::Arc;

use keelson_apiserver::audit::{Auditor, LogOptions, Mode, Policy};

use super::*;

const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: None
    users: ["system:node:n1"]
  - level: Metadata
    resources:
      - group: ""
        resources: ["secrets"]
  - level: RequestResponse
    resources:
      - group: ""
        resources: ["configmaps"]
"#;

struct Audited {
    server: Server,
    auditor: Arc<Auditor>,
    log: std::path::PathBuf,
    metrics: Arc<keelson_apiserver::Metrics>,
}

async fn audited() -> Audited {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = bootstrapped_store(dir.path()).await;
    let authenticator = Authenticator::default()
        .with_token(
            ADMIN_TOKEN,
            UserInfo::new("kubernetes-admin", &[MASTERS_GROUP]),
        )
        .with_token(NODE_TOKEN, UserInfo::node("n1"));
    let state = AppState::new(Arc::clone(&store)).with_authenticator(authenticator);
    let log = dir.path().join("audit").join("audit.log");
    let auditor = Auditor::start(
        Policy::parse(POLICY).expect("the policy"),
        &LogOptions {
            path: log.clone(),
            max_size_mb: 0,
            max_backups: 0,
            max_age_days: 0,
            buffer: 100,
            mode: Mode::Blocking,
        },
        state.metrics(),
    )
    .expect("start the audit log");
    let metrics = Arc::clone(state.metrics());
    let router = app(state.with_auditor(Arc::clone(&auditor)));
    Audited {
        server: Server {
            store,
            router,
            _dir: dir,
        },
        auditor,
        log,
        metrics,
    }
}

impl Audited {
    /// The events written so far.
    async fn events(&self) -> Vec<Value> {
        self.auditor.flush().await;
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("each line is JSON"))
            .collect()
    }
}

fn stages(events: &[&Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["stage"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn the_policy_decides_what_each_request_leaves_on_record() {
    let audited = audited().await;
    let server = &audited.server;

    // A Secret at Metadata: who, what, the name from the body, no bodies.
    let (status, headers, _) = server
        .exchange(
            ADMIN_TOKEN,
            Method::POST,
            "/api/v1/namespaces/default/secrets",
            &[
                (header::CONTENT_TYPE, "application/json"),
                (header::USER_AGENT, "kubectl/v1.33.0"),
                (header::HeaderName::from_static("audit-id"), "my-audit-id"),
            ],
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"},
                   "stringData": {"password": "hunter2"}})
            .to_string()
            .into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        headers["audit-id"], "my-audit-id",
        "the client's ID is kept"
    );
    let events = audited.events().await;
    let secret: Vec<&Value> = events
        .iter()
        .filter(|e| e["auditID"] == "my-audit-id")
        .collect();
    assert_eq!(stages(&secret), ["RequestReceived", "ResponseComplete"]);
    let complete = secret[1];
    assert_eq!(complete["kind"], "Event");
    assert_eq!(complete["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(complete["level"], "Metadata");
    assert_eq!(complete["verb"], "create");
    assert_eq!(complete["requestURI"], "/api/v1/namespaces/default/secrets");
    assert_eq!(
        complete["user"],
        json!({"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]})
    );
    assert_eq!(complete["userAgent"], "kubectl/v1.33.0");
    assert_eq!(
        complete["objectRef"],
        json!({"resource": "secrets", "namespace": "default", "name": "s1", "apiVersion": "v1"})
    );
    assert_eq!(
        complete["responseStatus"],
        json!({"metadata": {}, "code": 201})
    );
    assert!(complete.get("requestObject").is_none(), "{complete}");
    assert!(complete.get("responseObject").is_none(), "{complete}");
    assert!(
        !events.iter().any(|e| e.to_string().contains("hunter2")),
        "no secret data at Metadata"
    );
    let received = complete["requestReceivedTimestamp"]
        .as_str()
        .expect("a timestamp");
    // RFC 3339 with microseconds, in UTC.
    assert_eq!(
        received.len(),
        "2026-12-06T22:05:07.123456Z".len(),
        "{received}"
    );
    assert_eq!(
        secret[0]["stageTimestamp"], received,
        "RequestReceived happens when the request arrives"
    );

    // A ConfigMap at RequestResponse: both bodies.
    let (status, headers, created) = server
        .exchange(
            ADMIN_TOKEN,
            Method::POST,
            CONFIGMAPS,
            &[(header::CONTENT_TYPE, "application/json")],
            configmap("c1", json!({})).to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let id = headers["audit-id"].to_str().expect("an Audit-ID header");
    assert_eq!(id.len(), 36, "a generated UUID: {id}");
    let events = audited.events().await;
    let configmap_events: Vec<&Value> = events.iter().filter(|e| e["auditID"] == id).collect();
    assert_eq!(
        stages(&configmap_events),
        ["RequestReceived", "ResponseComplete"]
    );
    let complete = configmap_events[1];
    assert_eq!(complete["level"], "RequestResponse");
    assert_eq!(complete["requestObject"]["data"], json!({"k": "v"}));
    assert_eq!(complete["responseObject"]["data"], json!({"k": "v"}));
    assert_eq!(
        complete["responseObject"]["metadata"]["uid"],
        created["metadata"]["uid"]
    );

    // A failure carries the Status' reason and message.
    let (status, headers, _) = server
        .exchange(
            ADMIN_TOKEN,
            Method::GET,
            &format!("{CONFIGMAPS}/missing"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let id = headers["audit-id"].to_str().expect("an Audit-ID header");
    let events = audited.events().await;
    let missing = events
        .iter()
        .find(|e| e["auditID"] == id && e["stage"] == "ResponseComplete")
        .expect("the 404 is recorded");
    assert_eq!(missing["verb"], "get");
    assert_eq!(missing["responseStatus"]["code"], 404);
    assert_eq!(missing["responseStatus"]["reason"], "NotFound");
    assert_eq!(missing["responseStatus"]["status"], "Failure");
    assert_eq!(
        missing["responseStatus"]["message"],
        "configmaps \"missing\" not found"
    );

    // The node's requests match the `None` rule first: nothing is written.
    let before = audited.events().await.len();
    let (status, _, _) = server
        .exchange(
            NODE_TOKEN,
            Method::GET,
            &format!("{CONFIGMAPS}/c1"),
            &[],
            vec![],
        )
        .await;
    // (Refused by the Node authorizer: no pod of n1 uses c1. Recorded or not is the policy's.)
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Nor for what no rule names (namespaces).
    let (status, _, _) = server
        .exchange(ADMIN_TOKEN, Method::GET, "/api/v1/namespaces", &[], vec![])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(audited.events().await.len(), before);

    // A bad token: one ResponseStarted event without a user.
    let (status, headers, _) = server
        .exchange("wrong", Method::GET, CONFIGMAPS, &[], vec![])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let id = headers["audit-id"].to_str().expect("an Audit-ID header");
    let events = audited.events().await;
    let refused: Vec<&Value> = events.iter().filter(|e| e["auditID"] == id).collect();
    assert_eq!(stages(&refused), ["ResponseStarted"]);
    assert_eq!(refused[0]["verb"], "list");
    assert_eq!(refused[0]["user"], json!({}));
    assert_eq!(
        refused[0]["responseStatus"],
        json!({"metadata": {}, "message": "Authentication failed, attempted: bearer", "code": 401})
    );

    let metrics = audited.metrics.render();
    let written = audited.events().await.len();
    assert!(
        metrics.contains(&format!("apiserver_audit_event_total {written}")),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_watch_is_recorded_when_it_starts_and_when_it_ends() {
    let audited = audited().await;
    let request = Request::builder()
        .method(Method::GET)
        .uri(format!("{CONFIGMAPS}?watch=true&timeoutSeconds=1"))
        .header(header::AUTHORIZATION, bearer(ADMIN_TOKEN))
        .body(Body::empty())
        .expect("request");
    let response = audited
        .server
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("the router answers");
    assert_eq!(response.status(), StatusCode::OK);
    let id = response.headers()["audit-id"]
        .to_str()
        .expect("an Audit-ID header")
        .to_owned();
    let started: Vec<Value> = audited
        .events()
        .await
        .into_iter()
        .filter(|e| e["auditID"] == id.as_str())
        .collect();
    let refs: Vec<&Value> = started.iter().collect();
    assert_eq!(stages(&refs), ["RequestReceived", "ResponseStarted"]);
    assert_eq!(started[1]["verb"], "watch");
    // The stream ends after timeoutSeconds; then the watch is complete.
    let _ = tokio::time::timeout(
        Duration::from_secs(10),
        axum::body::to_bytes(response.into_body(), usize::MAX),
    )
    .await
    .expect("the watch ends");
    let all: Vec<Value> = audited
        .events()
        .await
        .into_iter()
        .filter(|e| e["auditID"] == id.as_str())
        .collect();
    let refs: Vec<&Value> = all.iter().collect();
    assert_eq!(
        stages(&refs),
        ["RequestReceived", "ResponseStarted", "ResponseComplete"]
    );
    assert_eq!(all[2]["responseStatus"]["code"], 200);
    assert!(
        all[2].get("responseObject").is_none(),
        "watches have no response object"
    );
}

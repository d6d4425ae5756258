//! `metrics.k8s.io` through `app(..).oneshot(..)`, with a stand-in kubelet on loopback that
//! answers `/stats/summary` over TLS and insists on the API server's client certificate.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use axum::{
    Router,
    http::{Request, StatusCode, header},
    routing::get,
};
use keelson_store::{SqliteOptions, SqliteStore, Store};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tower::ServiceExt as _;

use crate::{AppState, Authenticator, KubeletClient, UserInfo, app, auth::MASTERS_GROUP};

const ADMIN: &str = "admin-token";
const ALICE: &str = "alice-token";

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca() -> Ca {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params
        .distinguished_name
        .push(DnType::CommonName, "cluster-ca");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).expect("CA certificate").pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

fn issue(ca: &Ca, cn: &str, ip: bool) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    if ip {
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
    }
    params.distinguished_name.push(DnType::CommonName, cn);
    let cert = params.signed_by(&key, &ca.issuer).expect("certificate");
    (cert.pem(), key.serialize_pem())
}

/// What the stand-in kubelet of node n1 reports: pod `default/web` with two containers (one
/// rate each), pod `default/fresh` whose container was sampled once.
fn summary() -> Value {
    let stats = |nano_cores: Option<u64>, working_set: u64| {
        let mut cpu =
            json!({"time": "2026-12-07T11:00:00.25Z", "usageCoreNanoSeconds": 1_000_000u64});
        if let Some(n) = nano_cores {
            cpu["usageNanoCores"] = json!(n);
        }
        (
            cpu,
            json!({"time": "2026-12-07T11:00:00.25Z", "workingSetBytes": working_set, "usageBytes": working_set}),
        )
    };
    let (node_cpu, node_memory) = stats(Some(1_250_000_000), 3 * 1024 * 1024 * 1024);
    let (app_cpu, app_memory) = stats(Some(5_000_000), 20 * 1024 * 1024);
    let (side_cpu, side_memory) = stats(Some(123_456), 1_000_000);
    let (fresh_cpu, fresh_memory) = stats(None, 4096);
    json!({
        "node": {"nodeName": "n1", "cpu": node_cpu, "memory": node_memory},
        "pods": [
            {"podRef": {"name": "web", "namespace": "default", "uid": "uid-web"},
             "cpu": app_cpu, "memory": app_memory,
             "containers": [{"name": "app", "cpu": app_cpu, "memory": app_memory},
                            {"name": "sidecar", "cpu": side_cpu, "memory": side_memory}]},
            {"podRef": {"name": "fresh", "namespace": "default", "uid": "uid-fresh"},
             "cpu": fresh_cpu, "memory": fresh_memory,
             "containers": [{"name": "app", "cpu": fresh_cpu, "memory": fresh_memory}]},
        ]
    })
}

struct Kubelet {
    port: u16,
    scrapes: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

async fn kubelet(ca: &Ca) -> Kubelet {
    let (cert, key) = issue(ca, "n1", true);
    let config = crate::tls::server_config(cert.as_bytes(), key.as_bytes(), ca.pem.as_bytes())
        .expect("kubelet TLS");
    let scrapes = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&scrapes);
    let router = Router::new().route(
        "/stats/summary",
        get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    summary().to_string(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(crate::tls::serve(listener, router, config, async move {
        let _ = stopped.await;
    }));
    Kubelet {
        port,
        scrapes,
        _stop: stop,
    }
}

fn node(name: &str, port: u16, ready: bool) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": name, "uid": format!("uid-{name}"), "labels": {"kubernetes.io/hostname": name}},
           "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                      "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
                      "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
}

fn pod(name: &str, node: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": labels},
           "spec": {"nodeName": node, "containers": [{"name": "app", "image": "nginx"}]},
           "status": {"phase": "Running"}})
}

struct Cluster {
    router: Router,
    kubelet: Kubelet,
    _dir: tempfile::TempDir,
}

async fn cluster() -> Cluster {
    let ca = ca();
    let kubelet = kubelet(&ca).await;
    let (client_cert, client_key) = issue(&ca, "kube-apiserver-kubelet-client", false);
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("s.db"), SqliteOptions::default())
            .await
            .expect("store"),
    );
    crate::bootstrap(store.as_ref()).await.expect("bootstrap");
    let objects = [
        ("/registry/nodes/n1", node("n1", kubelet.port, true)),
        // Not Ready: never scraped (its port is closed anyway).
        ("/registry/nodes/n2", node("n2", 1, false)),
        (
            "/registry/pods/default/web",
            pod("web", "n1", json!({"app": "web"})),
        ),
        (
            "/registry/pods/default/fresh",
            pod("fresh", "n1", json!({"app": "fresh"})),
        ),
        (
            "/registry/pods/default/elsewhere",
            pod("elsewhere", "n2", json!({"app": "web"})),
        ),
    ];
    for (key, object) in objects {
        store
            .create(key, object.to_string().into_bytes().into())
            .await
            .expect("store an object");
    }
    let state = AppState::new(store)
        .with_authenticator(
            Authenticator::default()
                .with_token(ADMIN, UserInfo::new("kubernetes-admin", &[MASTERS_GROUP]))
                .with_token(ALICE, UserInfo::new("alice", &["developers"])),
        )
        .with_kubelet_client(
            KubeletClient::new(
                client_cert.as_bytes(),
                client_key.as_bytes(),
                ca.pem.as_bytes(),
            )
            .expect("kubelet client"),
        );
    Cluster {
        router: app(state),
        kubelet,
        _dir: dir,
    }
}

impl Cluster {
    async fn get_with(&self, token: &str, uri: &str, accept: &str) -> (StatusCode, Value) {
        let request = Request::get(uri)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::ACCEPT, accept)
            .body(axum::body::Body::empty())
            .expect("request");
        let response = self.router.clone().oneshot(request).await.expect("answer");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)})),
        )
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.get_with(ADMIN, uri, "application/json").await
    }
}

#[tokio::test]
async fn kubectl_top_nodes_and_pods() {
    let c = cluster().await;

    let (status, nodes) = c.get("/apis/metrics.k8s.io/v1beta1/nodes").await;
    assert_eq!(status, StatusCode::OK, "{nodes}");
    assert_eq!(nodes["kind"], "NodeMetricsList");
    assert_eq!(nodes["apiVersion"], "metrics.k8s.io/v1beta1");
    let items = nodes["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "n2 is not Ready: {nodes}");
    assert_eq!(items[0]["metadata"]["name"], "n1");
    assert_eq!(
        items[0]["metadata"]["labels"],
        json!({"kubernetes.io/hostname": "n1"})
    );
    assert_eq!(items[0]["timestamp"], "2026-12-07T11:00:00Z");
    assert_eq!(items[0]["window"], "10s");
    assert_eq!(items[0]["usage"], json!({"cpu": "1250m", "memory": "3Gi"}));

    let (status, one) = c.get("/apis/metrics.k8s.io/v1beta1/nodes/n1").await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["kind"], "NodeMetrics");
    assert_eq!(one["usage"]["cpu"], "1250m");

    // All namespaces; `fresh` has no CPU rate yet and `elsewhere` is on a node not scraped.
    let (status, pods) = c.get("/apis/metrics.k8s.io/v1beta1/pods").await;
    assert_eq!(status, StatusCode::OK, "{pods}");
    assert_eq!(pods["kind"], "PodMetricsList");
    assert_eq!(
        pods["items"],
        json!([{
            "kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
            "metadata": {"name": "web", "namespace": "default",
                         "creationTimestamp": pods["items"][0]["metadata"]["creationTimestamp"],
                         "labels": {"app": "web"}},
            "timestamp": "2026-12-07T11:00:00Z", "window": "10s",
            "containers": [
                {"name": "app", "usage": {"cpu": "5m", "memory": "20Mi"}},
                {"name": "sidecar", "usage": {"cpu": "123456n", "memory": "1000000"}},
            ],
        }])
    );
    let (_, namespaced) = c
        .get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dweb")
        .await;
    assert_eq!(
        namespaced["items"].as_array().map(Vec::len),
        Some(1),
        "{namespaced}"
    );
    let (_, none) = c
        .get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dfresh")
        .await;
    assert_eq!(none["items"], json!([]), "{none}");
    let (_, other_ns) = c
        .get("/apis/metrics.k8s.io/v1beta1/namespaces/kube-system/pods")
        .await;
    assert_eq!(other_ns["items"], json!([]));

    let (status, web) = c
        .get("/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/web")
        .await;
    assert_eq!(status, StatusCode::OK, "{web}");
    assert_eq!(web["containers"][0]["usage"]["memory"], "20Mi");

    // Everything above came from one scrape (the cache).
    assert_eq!(c.kubelet.scrapes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn missing_objects_and_missing_metrics() {
    let c = cluster().await;
    let cases = [
        (
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/fresh",
            "podmetrics.metrics.k8s.io \"default/fresh\" not found",
        ),
        (
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nope",
            "pods \"nope\" not found",
        ),
        (
            "/apis/metrics.k8s.io/v1beta1/nodes/n2",
            "nodemetrics.metrics.k8s.io \"n2\" not found",
        ),
        (
            "/apis/metrics.k8s.io/v1beta1/nodes/n9",
            "nodes \"n9\" not found",
        ),
    ];
    for (uri, message) in cases {
        let (status, body) = c.get(uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {body}");
        assert_eq!(body["kind"], "Status", "{uri}");
        assert_eq!(body["reason"], "NotFound", "{uri}");
        assert_eq!(body["message"], message, "{uri}");
    }
    let (status, body) = c
        .get("/apis/metrics.k8s.io/v1beta1/pods?labelSelector=a%20in%20(")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = c.get("/apis/metrics.k8s.io/v1beta1/services").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let request = Request::post("/apis/metrics.k8s.io/v1beta1/nodes")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .body(axum::body::Body::from("{}"))
        .expect("request");
    let response = c.router.clone().oneshot(request).await.expect("answer");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn discovery_lists_the_group() {
    let c = cluster().await;
    let (status, groups) = c.get("/apis").await;
    assert_eq!(status, StatusCode::OK);
    let metrics = groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["name"] == "metrics.k8s.io")
        .cloned();
    assert_eq!(
        metrics,
        Some(json!({"name": "metrics.k8s.io",
                    "versions": [{"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"}],
                    "preferredVersion": {"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"}}))
    );

    let (_, aggregated) = c
        .get_with(
            ADMIN,
            "/apis",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )
        .await;
    assert_eq!(aggregated["kind"], "APIGroupDiscoveryList", "{aggregated}");
    let group = aggregated["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|g| g["metadata"]["name"] == "metrics.k8s.io")
        .cloned()
        .expect("the metrics group in aggregated discovery");
    let resources = &group["versions"][0]["resources"];
    assert_eq!(group["versions"][0]["version"], "v1beta1");
    assert_eq!(resources[0]["resource"], "nodes");
    assert_eq!(resources[0]["scope"], "Cluster");
    assert_eq!(resources[0]["responseKind"]["kind"], "NodeMetrics");
    assert_eq!(resources[1]["resource"], "pods");
    assert_eq!(resources[1]["scope"], "Namespaced");
    assert_eq!(resources[1]["verbs"], json!(["get", "list"]));

    let (status, group) = c.get("/apis/metrics.k8s.io").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(group["kind"], "APIGroup");
    let (status, list) = c.get("/apis/metrics.k8s.io/v1beta1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["kind"], "APIResourceList");
    assert_eq!(list["resources"][1]["kind"], "PodMetrics");
}

#[tokio::test]
async fn rbac_decides_who_reads_metrics() {
    let c = cluster().await;
    let (status, body) = c
        .get_with(
            ALICE,
            "/apis/metrics.k8s.io/v1beta1/nodes",
            "application/json",
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body["message"],
        "nodes.metrics.k8s.io is forbidden: User \"alice\" cannot list resource \"nodes\" in API group \"metrics.k8s.io\" at the cluster scope"
    );
    assert_eq!(c.kubelet.scrapes.load(Ordering::SeqCst), 0);
}

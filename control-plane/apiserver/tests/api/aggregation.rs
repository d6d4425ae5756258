//! API aggregation: an APIService backed by a tiny HTTPS API server on loopback (reached
//! through its Service's EndpointSlice), which insists on the front-proxy client certificate
//! and echoes the identity headers it got.

use std::sync::Arc;

use axum::{
    Extension, Router,
    http::{HeaderMap, Method, StatusCode, header},
    routing::get,
};
use base64::Engine as _;
use keelson_apiserver::{
    AggregatorClient, AppState, Authenticator, UserInfo,
    aggregation::{available, publish_authentication},
    app,
    auth::{ClientCertificate, MASTERS_GROUP},
    bootstrap,
};
use keelson_store::{SqliteOptions, SqliteStore, Store};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::json;
use tokio::sync::oneshot;

use super::{ADMIN_TOKEN, ALICE_TOKEN, Server};

const GROUP_VERSION: &str = "/apis/metrics.keelson.test/v1beta1";

/// A CA: its certificate (PEM) and what signs with it.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).expect("CA certificate").pem();
    Ca {
        pem,
        issuer: Issuer::new(params, key),
    }
}

/// A certificate from `ca` for `names` with common name `cn`: (certificate, key) in PEM.
fn issue(ca: &Ca, cn: &str, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    let cert = params.signed_by(&key, &ca.issuer).expect("certificate");
    (cert.pem(), key.serialize_pem())
}

async fn discovery() -> String {
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "metrics.keelson.test/v1beta1",
           "resources": [{"name": "nodes", "singularName": "", "namespaced": false,
                          "kind": "NodeMetrics", "verbs": ["get", "list"]}]})
    .to_string()
}

/// Echoes who the request came from: the client certificate and the identity headers.
async fn nodes(
    client: Option<Extension<ClientCertificate>>,
    headers: HeaderMap,
) -> (StatusCode, String) {
    let Some(Extension(ClientCertificate(client))) = client else {
        return (StatusCode::UNAUTHORIZED, "no client certificate".to_owned());
    };
    let all = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    };
    let body = json!({"kind": "NodeMetricsList", "apiVersion": "metrics.keelson.test/v1beta1",
        "items": [], "client": client.name, "user": all("x-remote-user"),
        "groups": all("x-remote-group"), "authorization": all("authorization")});
    (StatusCode::OK, body.to_string())
}

struct Backend {
    port: u16,
    ca_bundle: String,
    _stop: oneshot::Sender<()>,
}

async fn backend(front_proxy_ca: &str) -> Backend {
    let serving_ca = ca("backend-ca");
    let (cert, key) = issue(&serving_ca, "api", &["api.default.svc", "127.0.0.1"]);
    let config = keelson_apiserver::tls::server_config(
        cert.as_bytes(),
        key.as_bytes(),
        front_proxy_ca.as_bytes(),
    )
    .expect("backend TLS");
    let router = Router::new()
        .route(GROUP_VERSION, get(discovery))
        .route(&format!("{GROUP_VERSION}/nodes"), get(nodes));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(keelson_apiserver::tls::serve(
        listener,
        router,
        config,
        async move {
            let _ = stopped.await;
        },
    ));
    Backend {
        port,
        ca_bundle: base64::engine::general_purpose::STANDARD.encode(serving_ca.pem),
        _stop: stop,
    }
}

const SLICE_KEY: &str = "/registry/endpointslices/default/api-1";

#[tokio::test]
async fn an_api_service_is_proxied_with_the_users_identity_and_merged_into_discovery() {
    let front_proxy = ca("front-proxy-ca");
    let (client_cert, client_key) = issue(&front_proxy, "front-proxy-client", &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("state.db"), SqliteOptions::default())
            .await
            .expect("store"),
    );
    bootstrap(store.as_ref()).await.expect("bootstrap");
    let state = AppState::new(Arc::clone(&store))
        .with_authenticator(
            Authenticator::default()
                .with_token(
                    ADMIN_TOKEN,
                    UserInfo::new("kubernetes-admin", &[MASTERS_GROUP]),
                )
                .with_token(ALICE_TOKEN, UserInfo::new("alice", &["developers"])),
        )
        .with_aggregator_client(
            AggregatorClient::new(client_cert.as_bytes(), client_key.as_bytes())
                .expect("front-proxy client"),
        );
    let s = Server {
        store,
        router: app(state.clone()),
        _dir: dir,
    };
    let api = backend(&front_proxy.pem).await;
    s.ok(
        Method::POST,
        "/api/v1/namespaces/default/services",
        Some(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "api"},
                    "spec": {"ports": [{"name": "https", "port": 443, "targetPort": api.port}]}}),
        ),
    )
    .await;
    // Loopback endpoints are refused by validation, so the slice goes into the store.
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "api-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "api"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": api.port, "protocol": "TCP"}]});
    s.store
        .create(SLICE_KEY, slice.to_string().into_bytes().into())
        .await
        .expect("store the EndpointSlice");
    s.ok(
        Method::POST,
        "/apis/apiregistration.k8s.io/v1/apiservices",
        Some(json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": {"name": "v1beta1.metrics.keelson.test"},
            "spec": {"group": "metrics.keelson.test", "version": "v1beta1",
                     "service": {"namespace": "default", "name": "api", "port": 443},
                     "caBundle": api.ca_bundle, "groupPriorityMinimum": 100, "versionPriority": 100}})),
    )
    .await;

    // Proxied: as the aggregator, the user in the requestheader headers, no bearer token.
    let listed = s
        .ok(Method::GET, &format!("{GROUP_VERSION}/nodes"), None)
        .await;
    assert_eq!(listed["kind"], "NodeMetricsList", "{listed}");
    assert_eq!(listed["client"], "front-proxy-client");
    assert_eq!(listed["user"], json!(["kubernetes-admin"]));
    assert_eq!(
        listed["groups"],
        json!(["system:masters", "system:authenticated"])
    );
    assert_eq!(listed["authorization"], json!([]));
    let (status, body) = s
        .raw_as(
            ALICE_TOKEN,
            Method::GET,
            &format!("{GROUP_VERSION}/nodes"),
            "application/json",
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // Available after a check.
    available::refresh(&state).await.expect("refresh");
    let stored = s
        .ok(
            Method::GET,
            "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.keelson.test",
            None,
        )
        .await;
    let condition = &stored["status"]["conditions"][0];
    assert_eq!(
        (
            &condition["type"],
            &condition["status"],
            &condition["reason"],
            &condition["message"]
        ),
        (
            &json!("Available"),
            &json!("True"),
            &json!("Passed"),
            &json!("all checks passed")
        ),
        "{stored}"
    );

    // Discovery: the legacy list, the group, and the aggregated document.
    let groups = s.ok(Method::GET, "/apis", None).await;
    let group = groups["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == "metrics.keelson.test"))
        .cloned()
        .expect("the aggregated group is listed");
    assert_eq!(
        group["preferredVersion"],
        json!({"groupVersion": "metrics.keelson.test/v1beta1", "version": "v1beta1"})
    );
    let one = s.ok(Method::GET, "/apis/metrics.keelson.test", None).await;
    assert_eq!(one["kind"], "APIGroup");
    let (status, _, aggregated) = s
        .exchange(
            ADMIN_TOKEN,
            Method::GET,
            "/apis",
            &[(
                header::ACCEPT,
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
            )],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let item = aggregated["items"]
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .find(|i| i["metadata"]["name"] == "metrics.keelson.test")
        })
        .cloned()
        .expect("the aggregated group is in the aggregated document");
    assert_eq!(item["versions"][0]["version"], "v1beta1");
    assert_eq!(item["versions"][0]["resources"][0]["resource"], "nodes");
    assert_eq!(item["versions"][0]["resources"][0]["scope"], "Cluster");

    // Without endpoints: unavailable, in kube's words, and a 503 for clients.
    s.store
        .delete(SLICE_KEY, None)
        .await
        .expect("delete the slice");
    available::refresh(&state).await.expect("refresh");
    let stored = s
        .ok(
            Method::GET,
            "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.metrics.keelson.test",
            None,
        )
        .await;
    let condition = &stored["status"]["conditions"][0];
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "MissingEndpoints");
    assert_eq!(
        condition["message"],
        "endpointslices for service/api in \"default\" have no addresses with port name \"https\""
    );
    let (status, body) = s
        .call(Method::GET, &format!("{GROUP_VERSION}/nodes"), None)
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
}

#[tokio::test]
async fn the_authentication_configmap_tells_backends_whom_to_trust() {
    let s = super::server().await;
    publish_authentication(
        s.store.as_ref(),
        "CLUSTER CA",
        "FRONT PROXY CA",
        &["front-proxy-client"],
    )
    .await
    .expect("publish");
    // Publishing again with the same content changes nothing.
    publish_authentication(
        s.store.as_ref(),
        "CLUSTER CA",
        "FRONT PROXY CA",
        &["front-proxy-client"],
    )
    .await
    .expect("publish again");
    let config = s
        .ok(
            Method::GET,
            "/api/v1/namespaces/kube-system/configmaps/extension-apiserver-authentication",
            None,
        )
        .await;
    assert_eq!(
        config["data"],
        json!({
            "client-ca-file": "CLUSTER CA",
            "requestheader-allowed-names": "[\"front-proxy-client\"]",
            "requestheader-client-ca-file": "FRONT PROXY CA",
            "requestheader-extra-headers-prefix": "[\"X-Remote-Extra-\"]",
            "requestheader-group-headers": "[\"X-Remote-Group\"]",
            "requestheader-username-headers": "[\"X-Remote-User\"]",
        })
    );
}

#[tokio::test]
async fn a_group_nobody_serves_is_still_a_404() {
    let s = super::server().await;
    let (status, body) = s
        .call(Method::GET, "/apis/nobody.example/v1/things", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

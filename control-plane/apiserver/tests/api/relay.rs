//! The relayed subresources: `pods/exec` through the API server to a kubelet stand-in on
//! loopback (HTTPS, certificates from a test cluster CA), the refusals a user sees before
//! anything is relayed, `services/proxy` to an endpoint, and `pods/ephemeralcontainers`.

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    extract::Request,
    http::{HeaderValue, Method, StatusCode, header},
    response::Response,
    routing::any,
};
use hyper_util::rt::TokioIo;
use keelson_apiserver::{
    AppState, Authenticator, KubeletClient, UserInfo, app,
    auth::{ClientCertificate, MASTERS_GROUP},
};
use keelson_store::Store;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::oneshot,
};
use tower::ServiceExt as _;

use super::{ADMIN_TOKEN, ALICE_TOKEN, assert_status, bearer};

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

/// A certificate from `ca` (or self-signed without one) for `names`: (certificate, key).
fn issue(ca: Option<&Ca>, cn: &str, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().expect("key");
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("params");
    params.distinguished_name.push(DnType::CommonName, cn);
    let cert = match ca {
        Some(ca) => params.signed_by(&key, &ca.issuer),
        None => params.self_signed(&key),
    }
    .expect("certificate");
    (cert.pem(), key.serialize_pem())
}

/// Serves `router` over HTTPS on loopback with `cert`/`key`, verifying client certificates
/// against `client_ca`; the port, and what stops it when dropped.
async fn serve(
    router: Router,
    (cert, key): &(String, String),
    client_ca: &str,
) -> (u16, oneshot::Sender<()>) {
    let config = keelson_apiserver::tls::server_config(
        cert.as_bytes(),
        key.as_bytes(),
        client_ca.as_bytes(),
    )
    .expect("TLS");
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
    (port, stop)
}

/// The kubelet stand-in's exec: answers `101` with the protocol the client offered, writes
/// the path and query it was asked for, then echoes every byte upper-cased.
async fn kubelet_exec(mut request: Request) -> Response {
    let asked = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let protocol = request
        .headers()
        .get("x-stream-protocol-version")
        .cloned()
        .unwrap_or(HeaderValue::from_static("none"));
    let authorization = request.headers().contains_key(header::AUTHORIZATION);
    let client = client_name(&request);
    let upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        let hello = format!("{asked} authorization={authorization} client={client}\n");
        if io.write_all(hello.as_bytes()).await.is_err() {
            return;
        }
        let mut buf = [0u8; 64];
        for _ in 0..16 {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let upper = buf[..n].to_ascii_uppercase();
                    if io.write_all(&upper).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    headers.insert("x-stream-protocol-version", protocol);
    response
}

/// Who the kubelet stand-in's client authenticated as with its certificate.
fn client_name(request: &Request) -> String {
    request
        .extensions()
        .get::<ClientCertificate>()
        .map_or_else(|| "none".to_owned(), |c| c.0.name.clone())
}

/// The kubelet stand-in's other endpoints: the path and query asked and the client.
async fn kubelet_other(request: Request) -> String {
    format!("{} client={}", request.uri(), client_name(&request))
}

/// A cluster: an API server (its router, and served over HTTPS when `https`) whose kubelet
/// client trusts `cluster`, a node `n1` whose kubelet is at `kubelet_port` on loopback.
struct Cluster {
    router: Router,
    store: Arc<dyn Store>,
    api_port: Option<u16>,
    _stops: Vec<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

const ADMIN: &str = "kubernetes-admin";
/// A user RBAC lets `get` `pods/exec` but not `create` it.
const READER_TOKEN: &str = "reader-token";

async fn cluster(cluster_ca: &Ca, kubelet_port: u16, https: bool) -> Cluster {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = super::bootstrapped_store(dir.path()).await;
    let (client_cert, client_key) = issue(Some(cluster_ca), "kube-apiserver-kubelet-client", &[]);
    let kubelet = KubeletClient::new(
        client_cert.as_bytes(),
        client_key.as_bytes(),
        cluster_ca.pem.as_bytes(),
    )
    .expect("kubelet client");
    let authenticator = Authenticator::default()
        .with_token(ADMIN_TOKEN, UserInfo::new(ADMIN, &[MASTERS_GROUP]))
        .with_token(ALICE_TOKEN, UserInfo::new("alice", &["developers"]))
        .with_token(READER_TOKEN, UserInfo::new("reader", &[]));
    let router = app(AppState::new(Arc::clone(&store))
        .with_authenticator(authenticator)
        .with_kubelet_client(kubelet));
    let mut stops = Vec::new();
    let api_port = if https {
        let serving = issue(Some(cluster_ca), "kube-apiserver", &["127.0.0.1"]);
        let (port, stop) = serve(router.clone(), &serving, &cluster_ca.pem).await;
        stops.push(stop);
        Some(port)
    } else {
        None
    };
    let cluster = Cluster {
        router,
        store,
        api_port,
        _stops: stops,
        _dir: dir,
    };
    cluster
        .ok(
            Method::POST,
            "/api/v1/nodes",
            json!({"metadata": {"name": "n1"}}),
        )
        .await;
    cluster
        .ok(
            Method::PATCH,
            "/api/v1/nodes/n1/status",
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                              "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}}}}),
        )
        .await;
    let pod = |name: &str, containers: Value, node: Option<&str>| {
        json!({"metadata": {"name": name},
               "spec": {"containers": containers, "nodeName": node}})
    };
    let one = json!([{"name": "app", "image": "busybox"}]);
    let two = json!([{"name": "app", "image": "busybox"}, {"name": "side", "image": "busybox"}]);
    for body in [
        pod("p", one.clone(), Some("n1")),
        pod("two", two, Some("n1")),
        pod("pending", one.clone(), None),
        pod("done", one, Some("n1")),
    ] {
        cluster
            .ok(Method::POST, "/api/v1/namespaces/default/pods", body)
            .await;
    }
    cluster
        .ok(
            Method::PATCH,
            "/api/v1/namespaces/default/pods/done/status",
            json!({"status": {"phase": "Succeeded"}}),
        )
        .await;
    // `reader` may get pods/exec (what a WebSocket exec was authorized as before 1.35) but
    // not create it.
    cluster
        .ok(
            Method::POST,
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles",
            json!({"metadata": {"name": "exec-reader"},
                   "rules": [{"apiGroups": [""], "resources": ["pods", "pods/exec"],
                              "verbs": ["get"]}]}),
        )
        .await;
    cluster
        .ok(
            Method::POST,
            "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings",
            json!({"metadata": {"name": "exec-reader"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                               "name": "exec-reader"},
                   "subjects": [{"kind": "User", "name": "reader",
                                 "apiGroup": "rbac.authorization.k8s.io"}]}),
        )
        .await;
    cluster
}

impl Cluster {
    async fn send(
        &self,
        token: &str,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, bearer(token));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let content_type = if uri.contains("ephemeralcontainers") {
            "application/strategic-merge-patch+json"
        } else {
            "application/merge-patch+json"
        };
        let body = match body {
            Some(body) => {
                let media = match request.method_ref() {
                    Some(&Method::PATCH) => content_type,
                    _ => "application/json",
                };
                request = request.header(header::CONTENT_TYPE, media);
                Body::from(body.to_string())
            }
            None => Body::empty(),
        };
        let response = self
            .router
            .clone()
            .oneshot(request.body(body).expect("request"))
            .await
            .expect("the router answers");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
        (status, value)
    }

    async fn ok(&self, method: Method, uri: &str, body: Value) -> Value {
        let (status, value) = self
            .send(ADMIN_TOKEN, method.clone(), uri, &[], Some(body))
            .await;
        assert!(status.is_success(), "{method} {uri}: {status} {value}");
        value
    }
}

/// Request headers.
type Headers = &'static [(&'static str, &'static str)];

const UPGRADE: Headers = &[
    ("connection", "Upgrade"),
    ("upgrade", "SPDY/3.1"),
    ("x-stream-protocol-version", "v4.channel.k8s.io"),
];

#[tokio::test]
async fn an_exec_is_upgraded_and_its_bytes_relayed_both_ways() {
    let cluster_ca = ca("cluster-ca");
    let kubelet_cert = issue(Some(&cluster_ca), "n1", &["127.0.0.1"]);
    let kubelet = Router::new()
        .route("/exec/{ns}/{pod}/{container}", any(kubelet_exec))
        .fallback(any(kubelet_other));
    let (kubelet_port, _kubelet) = serve(kubelet, &kubelet_cert, &cluster_ca.pem).await;
    let cluster = cluster(&cluster_ca, kubelet_port, true).await;
    let api_port = cluster.api_port.expect("served");

    // The user's side: TLS to the API server, an HTTP/1.1 upgrade request.
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(cluster_ca.pem.as_bytes()) {
        roots.add(cert.expect("CA")).expect("add CA");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", api_port))
        .await
        .expect("connect");
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name"),
            tcp,
        )
        .await
        .expect("TLS to the API server");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP");
    tokio::spawn(connection.with_upgrades());
    let mut request = hyper::Request::post(
        "/api/v1/namespaces/default/pods/p/exec?command=sh&command=-c&command=echo%20hi&stdin=true&stdout=true&tty=false",
    )
    .header(header::HOST, format!("127.0.0.1:{api_port}"))
    .header(header::AUTHORIZATION, bearer(ADMIN_TOKEN));
    for (name, value) in UPGRADE {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Body::empty()).expect("request"))
        .await
        .expect("an answer");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        response.headers()["x-stream-protocol-version"],
        "v4.channel.k8s.io"
    );
    let upgraded = hyper::upgrade::on(response).await.expect("upgraded");
    let mut io = TokioIo::new(upgraded);
    let mut line = Vec::new();
    let read_line = async {
        let mut byte = [0u8; 1];
        while io.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
            line.push(byte[0]);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read_line)
        .await
        .expect("the kubelet's first line");
    // The kubelet's own query names; the client's credentials stay with the API server.
    assert_eq!(
        String::from_utf8_lossy(&line),
        "/exec/default/p/app?input=1&output=1&command=sh&command=-c&command=echo%20hi \
         authorization=false client=kube-apiserver-kubelet-client"
    );
    io.write_all(b"hello").await.expect("write");
    let mut echoed = [0u8; 5];
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        io.read_exact(&mut echoed),
    )
    .await
    .expect("the echo in time")
    .expect("read");
    assert_eq!(&echoed, b"HELLO");

    // nodes/proxy reaches the same kubelet, as the API server's kubelet client.
    let (status, body) = cluster
        .send(
            ADMIN_TOKEN,
            Method::GET,
            "/api/v1/nodes/n1/proxy/metrics/cadvisor?x=1",
            &[],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["raw"],
        "/metrics/cadvisor?x=1 client=kube-apiserver-kubelet-client"
    );
}

#[tokio::test]
async fn a_kubelet_with_a_certificate_the_cluster_ca_did_not_sign_is_refused() {
    let cluster_ca = ca("cluster-ca");
    let self_signed = issue(None, "n1", &["127.0.0.1"]);
    let kubelet = Router::new().route("/exec/{ns}/{pod}/{container}", any(kubelet_exec));
    let (kubelet_port, _kubelet) = serve(kubelet, &self_signed, &cluster_ca.pem).await;
    let cluster = cluster(&cluster_ca, kubelet_port, false).await;
    let (status, body) = cluster
        .send(
            ADMIN_TOKEN,
            Method::POST,
            "/api/v1/namespaces/default/pods/p/exec?command=ls&stdout=1",
            UPGRADE,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_status(&body, 503, "ServiceUnavailable");
    assert_eq!(
        body["message"],
        format!(
            "cannot reach the kubelet of node n1 at 127.0.0.1:{kubelet_port}: tls: failed to \
             verify certificate: x509: certificate signed by unknown authority"
        )
    );
}

#[tokio::test]
async fn bad_stream_requests_are_refused_before_anything_is_relayed() {
    let cluster_ca = ca("cluster-ca");
    // Nothing listens at the kubelet port: every case must fail before connecting.
    let cluster = cluster(&cluster_ca, 1, false).await;
    let pods = "/api/v1/namespaces/default/pods";
    let cases: &[(&str, Headers, &str)] = &[
        (
            "two/exec?command=ls&stdout=true",
            UPGRADE,
            "a container name must be specified for pod two, choose one of: [app side]",
        ),
        (
            "p/exec?command=ls&stdout=true&container=nope",
            UPGRADE,
            "container nope is not valid for pod p",
        ),
        (
            "p/exec?command=ls",
            UPGRADE,
            "you must specify at least 1 of stdin, stdout, stderr",
        ),
        (
            "p/exec?command=ls&stdout=false&stdin=0",
            UPGRADE,
            "you must specify at least 1 of stdin, stdout, stderr",
        ),
        (
            "p/exec?stdout=true",
            UPGRADE,
            "you must specify at least one command for the container",
        ),
        (
            "done/exec?command=ls&stdout=true",
            UPGRADE,
            "cannot exec into a container in a completed pod; current phase is Succeeded",
        ),
        (
            "pending/exec?command=ls&stdout=true",
            UPGRADE,
            "pod pending does not have a host assigned",
        ),
        (
            "pending/portforward?ports=80",
            UPGRADE,
            "pod pending does not have a host assigned",
        ),
        ("p/attach?stdout=true", &[], "Upgrade request required"),
        (
            "p/portforward?ports=http",
            UPGRADE,
            "invalid port \"http\": ports must be numbers from 1 to 65535",
        ),
    ];
    for (path, headers, message) in cases {
        let uri = format!("{pods}/{path}");
        let (status, body) = cluster
            .send(ADMIN_TOKEN, Method::POST, &uri, headers, None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_status(&body, 400, "BadRequest");
        assert_eq!(body["message"], *message, "{uri}");
    }
}

#[tokio::test]
async fn exec_needs_create_even_as_a_websocket_get() {
    let cluster_ca = ca("cluster-ca");
    let cluster = cluster(&cluster_ca, 1, false).await;
    let uri = "/api/v1/namespaces/default/pods/p/exec?command=ls&stdout=true";
    let websocket = &[("connection", "Upgrade"), ("upgrade", "websocket")];
    let cases = [
        (
            ALICE_TOKEN,
            Method::POST,
            "pods \"p\" is forbidden: User \"alice\" cannot create resource \"pods/exec\" in \
             API group \"\" in the namespace \"default\"",
        ),
        (
            ALICE_TOKEN,
            Method::GET,
            "pods \"p\" is forbidden: User \"alice\" cannot get resource \"pods/exec\" in API \
             group \"\" in the namespace \"default\"",
        ),
        (
            READER_TOKEN,
            Method::GET,
            "pods \"p\" is forbidden: User \"reader\" cannot create resource \"pods/exec\" in \
             API group \"\" in the namespace \"default\"",
        ),
    ];
    for (token, method, message) in cases {
        let (status, body) = cluster
            .send(token, method.clone(), uri, websocket, None)
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method}: {body}");
        assert_status(&body, 403, "Forbidden");
        assert_eq!(body["message"], message, "{method}");
    }
}

/// What the Service's endpoint answers: the method, path and query it got.
async fn echo_request(request: Request) -> String {
    format!(
        "{} {} host={}",
        request.method(),
        request.uri(),
        request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default()
    )
}

#[tokio::test]
async fn a_service_is_reached_through_its_proxy_subresource() {
    let cluster_ca = ca("cluster-ca");
    let cluster = cluster(&cluster_ca, 1, false).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    let web = Router::new().fallback(any(echo_request));
    tokio::spawn(async move { axum::serve(listener, web).await });
    cluster
        .ok(
            Method::POST,
            "/api/v1/namespaces/default/services",
            json!({"metadata": {"name": "web"},
                   "spec": {"ports": [{"name": "http", "port": 80, "targetPort": port}]}}),
        )
        .await;
    cluster
        .ok(
            Method::POST,
            "/api/v1/namespaces/default/services",
            json!({"metadata": {"name": "empty"}, "spec": {"ports": [{"port": 80}]}}),
        )
        .await;
    // Straight into the store: validation refuses loopback endpoint addresses, and the test
    // endpoint is on loopback.
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}]});
    cluster
        .store
        .create(
            "/registry/endpointslices/default/web-1",
            slice.to_string().into_bytes().into(),
        )
        .await
        .expect("store the EndpointSlice");
    let services = "/api/v1/namespaces/default/services";
    let cases = [
        (
            Method::GET,
            format!("{services}/web:80/proxy/"),
            "GET / ".to_owned(),
        ),
        (
            Method::GET,
            format!("{services}/web:http/proxy/a/b?x=1&y=2"),
            "GET /a/b?x=1&y=2 ".to_owned(),
        ),
        (
            Method::POST,
            format!("{services}/http:web:80/proxy/submit"),
            "POST /submit ".to_owned(),
        ),
    ];
    for (method, uri, want) in cases {
        let (status, body) = cluster
            .send(ADMIN_TOKEN, method.clone(), &uri, &[], None)
            .await;
        assert_eq!(status, StatusCode::OK, "{method} {uri}: {body}");
        assert_eq!(
            body["raw"],
            format!("{want}host=127.0.0.1:{port}"),
            "{method} {uri}"
        );
    }
    let refusals = [
        (
            format!("{services}/web:8080/proxy/"),
            "no service port 8080 found for service \"web\"",
        ),
        (
            format!("{services}/empty/proxy/"),
            "no endpoints available for service \"empty\"",
        ),
    ];
    for (uri, message) in refusals {
        let (status, body) = cluster
            .send(ADMIN_TOKEN, Method::GET, &uri, &[], None)
            .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{uri}: {body}");
        assert_eq!(body["message"], message, "{uri}");
    }
    // A pod on loopback is not proxied to (kube allows only global unicast pod IPs).
    cluster
        .ok(
            Method::PATCH,
            "/api/v1/namespaces/default/pods/p/status",
            json!({"status": {"podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}}),
        )
        .await;
    let (status, body) = cluster
        .send(
            ADMIN_TOKEN,
            Method::GET,
            &format!("/api/v1/namespaces/default/pods/p:{port}/proxy/"),
            &[],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["message"], "address not allowed");
}

#[tokio::test]
async fn kubectl_debug_adds_an_ephemeral_container_and_nothing_else() {
    let cluster_ca = ca("cluster-ca");
    let cluster = cluster(&cluster_ca, 1, false).await;
    let uri = "/api/v1/namespaces/default/pods/p/ephemeralcontainers";
    let (status, pod) = cluster
        .send(
            ADMIN_TOKEN,
            Method::PATCH,
            uri,
            &[],
            Some(json!({"metadata": {"labels": {"sneaky": "yes"}},
                        "spec": {"containers": [{"name": "app", "image": "evil"}],
                                 "ephemeralContainers": [{"name": "debugger-x",
                                    "image": "busybox", "targetContainerName": "app",
                                    "stdin": true, "tty": true}]}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{pod}");
    assert_eq!(pod["spec"]["ephemeralContainers"][0]["name"], "debugger-x");
    assert_eq!(pod["spec"]["containers"][0]["image"], "busybox");
    assert_eq!(pod["metadata"]["labels"].get("sneaky"), None, "{pod}");
    let (status, got) = cluster.send(ADMIN_TOKEN, Method::GET, uri, &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["spec"]["ephemeralContainers"][0]["name"], "debugger-x");

    let mut replaced = got.clone();
    replaced["spec"]["ephemeralContainers"] = json!([]);
    let (status, body) = cluster
        .send(ADMIN_TOKEN, Method::PUT, uri, &[], Some(replaced))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["message"],
        "Pod \"p\" is invalid: spec.ephemeralContainers: Forbidden: existing ephemeral \
         containers \"debugger-x\" may not be removed\n"
    );
}

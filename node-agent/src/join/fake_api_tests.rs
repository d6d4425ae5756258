//! `join` against a fake API server over real TLS on loopback: the parts of the protocol the
//! control plane answers (cluster-info, CSR create and read) with a CA made here, so discovery,
//! the CA pin, the bearer token, the CSR and the files are exercised end to end.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use base64::Engine as _;
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use k8s_openapi::{
    ByteString,
    api::certificates::v1::{
        CertificateSigningRequest, CertificateSigningRequestCondition,
        CertificateSigningRequestStatus,
    },
};
use keelson_api::bootstrap_token::{self, BootstrapToken};
use serde_json::json;

use super::*;

/// A JSON response.
fn json_response(code: StatusCode, body: &impl serde::Serialize) -> Response {
    (
        code,
        [("content-type", "application/json")],
        serde_json::to_vec(body).expect("JSON"),
    )
        .into_response()
}

/// How the fake decides CSRs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Approve,
    Deny,
    /// Refuses every bearer (the token's Secret is gone).
    Unauthorized,
}

struct Fake {
    token: BootstrapToken,
    mode: Mode,
    ca_pem: String,
    ca_key: rcgen::KeyPair,
    ca_params: rcgen::CertificateParams,
    /// The signed cluster-info (None: the token's signature is missing).
    signed: bool,
    csrs: Mutex<BTreeMap<String, CertificateSigningRequest>>,
}

/// A client certificate a connection presented: its common name and DER.
type Shown = (String, Vec<u8>);

struct Server {
    url: String,
    ca_hash: String,
    /// The client certificates connections presented.
    presented: Arc<Mutex<Vec<Shown>>>,
}

fn status(code: u16, reason: &str, message: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "code": code, "reason": reason, "message": message});
    json_response(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &body,
    )
}

async fn cluster_info(State(fake): State<Arc<Fake>>) -> Response {
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: \"\"\n  cluster:\n    \
         certificate-authority-data: {}\n    server: https://127.0.0.1:6443\n",
        base64::engine::general_purpose::STANDARD.encode(&fake.ca_pem)
    );
    let mut data = BTreeMap::from([("kubeconfig".to_owned(), kubeconfig.clone())]);
    if fake.signed {
        data.insert(
            format!("jws-kubeconfig-{}", fake.token.id),
            bootstrap_token::sign_detached(&fake.token, kubeconfig.as_bytes()),
        );
    }
    json_response(
        StatusCode::OK,
        &json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cluster-info", "namespace": "kube-public", "resourceVersion": "1"},
            "data": data}),
    )
}

/// The common name of the client certificate a connection presented.
#[derive(Clone)]
struct Presented(Option<String>);

async fn create_csr(
    State(fake): State<Arc<Fake>>,
    axum::Extension(presented): axum::Extension<Presented>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut csr: CertificateSigningRequest = serde_json::from_slice(&body).expect("a CSR");
    let bearer = format!("Bearer {}", fake.token);
    let token_ok = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&bearer);
    // A node may ask for its own next certificate.
    let node_ok = presented.0.is_some_and(|cn| cn.starts_with("system:node:"));
    if fake.mode == Mode::Unauthorized || !(token_ok || node_ok) {
        return status(401, "Unauthorized", "Unauthorized");
    }
    let name = csr.metadata.name.clone().unwrap_or_default();
    let request = String::from_utf8(csr.spec.request.0.clone()).unwrap_or_default();
    let condition = |type_: &str, reason: &str| CertificateSigningRequestCondition {
        type_: type_.to_owned(),
        status: "True".to_owned(),
        reason: Some(reason.to_owned()),
        message: Some("decided by the fake".to_owned()),
        ..CertificateSigningRequestCondition::default()
    };
    csr.metadata.resource_version = Some("2".to_owned());
    csr.status = Some(match fake.mode {
        Mode::Approve => {
            let params = rcgen::CertificateSigningRequestParams::from_pem(&request)
                .expect("a PKCS#10 request");
            let issuer = rcgen::Issuer::new(fake.ca_params.clone(), &fake.ca_key);
            let cert = params.signed_by(&issuer).expect("signed");
            CertificateSigningRequestStatus {
                certificate: Some(ByteString(cert.pem().into_bytes())),
                conditions: Some(vec![condition("Approved", "AutoApproved")]),
            }
        }
        Mode::Deny | Mode::Unauthorized => CertificateSigningRequestStatus {
            certificate: None,
            conditions: Some(vec![condition("Denied", "NotAllowed")]),
        },
    });
    fake.csrs.lock().expect("lock").insert(name, csr.clone());
    json_response(StatusCode::CREATED, &csr)
}

async fn get_csr(State(fake): State<Arc<Fake>>, Path(name): Path<String>) -> Response {
    match fake.csrs.lock().expect("lock").get(&name) {
        Some(csr) => json_response(StatusCode::OK, csr),
        None => status(404, "NotFound", "not found"),
    }
}

/// Serves the fake on a loopback port with a certificate for 127.0.0.1 from its CA.
async fn serve(mode: Mode, signed: bool, token: &BootstrapToken) -> Server {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fake-ca");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let ca_hash = bootstrap_token::ca_cert_hash(ca.der()).expect("hash");
    let server_key = rcgen::KeyPair::generate().expect("server key");
    let server_params =
        rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).expect("params");
    let issuer = rcgen::Issuer::new(ca_params.clone(), &ca_key);
    let server_cert = server_params
        .signed_by(&server_key, &issuer)
        .expect("server cert");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).expect("CA root");
    // A client certificate is verified when given; discovery and the token come without one.
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .allow_unauthenticated()
        .build()
        .expect("client verifier");
    let tls = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(server_key.serialize_der())
                .expect("key der"),
        )
        .expect("server TLS");
    let fake = Arc::new(Fake {
        token: token.clone(),
        mode,
        ca_pem: ca.pem(),
        ca_key,
        ca_params,
        signed,
        csrs: Mutex::default(),
    });
    let router = Router::new()
        .route(
            "/api/v1/namespaces/kube-public/configmaps/cluster-info",
            axum::routing::get(cluster_info),
        )
        .route(
            "/apis/certificates.k8s.io/v1/certificatesigningrequests",
            axum::routing::post(create_csr),
        )
        .route(
            "/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}",
            axum::routing::get(get_csr),
        )
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("https://{}", listener.local_addr().expect("addr"));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let presented = Arc::new(Mutex::new(Vec::new()));
    let seen = presented.clone();
    tokio::spawn(async move {
        // Ends with the test's runtime.
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let router = router.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut who = None;
                if let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                    let (_, cert) = x509_parser::parse_x509_certificate(leaf).expect("X.509");
                    let cn = cert.subject().iter_common_name().next();
                    let cn = cn.and_then(|cn| cn.as_str().ok()).unwrap_or_default();
                    seen.lock()
                        .expect("lock")
                        .push((cn.to_owned(), leaf.to_vec()));
                    who = Some(cn.to_owned());
                }
                let service = tower::ServiceExt::map_request(
                    router,
                    move |request: axum::http::Request<hyper::body::Incoming>| {
                        let mut request = request.map(axum::body::Body::new);
                        request.extensions_mut().insert(Presented(who.clone()));
                        request
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    // One request per connection: each shows the certificate presented now.
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
                    .await;
            });
        }
    });
    Server {
        url,
        ca_hash,
        presented,
    }
}

fn options(server: &Server, token: &str, hash: &str, dir: &std::path::Path) -> JoinOptions {
    JoinOptions {
        server: server.url.clone(),
        token: token.parse().expect("token"),
        ca_cert_hash: hash.to_owned(),
        node_name: "worker-1".to_owned(),
        config_dir: dir.to_owned(),
        timeout: Duration::from_secs(20),
    }
}

const TOKEN: &str = "abcdef.0123456789abcdef";

#[tokio::test]
async fn join_writes_a_working_node_kubeconfig_and_keeps_the_packaged_config() {
    let token: BootstrapToken = TOKEN.parse().expect("token");
    let server = serve(Mode::Approve, true, &token).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("node-agent.yaml"),
        "# packaged\nuplink: [eth0]\n",
    )
    .expect("packaged config");
    let joined = join(&options(&server, TOKEN, &server.ca_hash, dir.path()))
        .await
        .unwrap_or_else(|e| panic!("join failed: {e:#}"));
    assert!(joined.csr.starts_with("node-csr-"), "{}", joined.csr);
    let config = std::fs::read_to_string(&joined.agent_config).expect("config");
    assert_eq!(
        config,
        format!(
            "# packaged\nuplink: [eth0]\nkubeconfig: \"{}\"\nnode-name: \"worker-1\"\n",
            joined.kubeconfig.display()
        )
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&joined.kubeconfig)
            .expect("kubeconfig")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // The kubeconfig holds this node's certificate and key, the server given, the CA, and the
    // rotation finds it.
    let (found, pems) = rotate::node_certificate(&joined.kubeconfig)
        .expect("readable")
        .expect("a node certificate");
    assert_eq!(found.node, "worker-1");
    identity::SwappableIdentity::new(&pems.cert_pem, &pems.key_pem).expect("key matches cert");
    let text = std::fs::read_to_string(&joined.kubeconfig).expect("kubeconfig");
    assert!(
        text.contains(&format!("server: \"{}\"", server.url)),
        "{text}"
    );
    // And it talks to the server, trusting the CA, presenting the certificate.
    let kubeconfig = kube::config::Kubeconfig::read_from(&joined.kubeconfig).expect("parse");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    let (client, rotation) = rotate::client(config, &joined.kubeconfig).expect("client");
    assert!(rotation.is_some(), "a node certificate is rotated");
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::namespaced(client.clone(), "kube-public");
    assert!(server.presented.lock().expect("lock").is_empty());
    api.get("cluster-info")
        .await
        .expect("read over the verified TLS");
    // The swappable identity is what the connection presented.
    let first = server.presented.lock().expect("lock").clone();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].0, "system:node:worker-1");
    assert_eq!(
        first[0].1,
        discovery::pem_certificates(&pems.cert_pem).expect("PEM")[0]
    );

    // Rotation: a CSR made with the node's certificate, the kubeconfig rewritten, and the
    // running client's next connection presents the new certificate.
    let rotation = rotation.expect("a rotation");
    let rotating = tokio::spawn(rotation.run_now(client.clone()));
    let mut renewed = None;
    for _ in 0..100 {
        let (_, now_pems) = rotate::node_certificate(&joined.kubeconfig)
            .expect("readable")
            .expect("a node certificate");
        if now_pems.cert_pem != pems.cert_pem {
            renewed = Some(now_pems);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let renewed = renewed.expect("the kubeconfig's certificate renewed within 10 s");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&joined.kubeconfig)
            .expect("kubeconfig")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "still private after rotation");
    // The swap follows the write; give it a moment, then a new connection shows it.
    let new_der = discovery::pem_certificates(&renewed.cert_pem).expect("PEM")[0].clone();
    let mut presented_new = false;
    for _ in 0..50 {
        api.get("cluster-info").await.expect("read after rotation");
        let last = server.presented.lock().expect("lock").last().cloned();
        if last.is_some_and(|(_, der)| der == new_der) {
            presented_new = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        presented_new,
        "the running client presents the renewed certificate"
    );
    rotating.abort();
}

#[tokio::test]
async fn refusals_are_one_line_and_write_nothing() {
    let token: BootstrapToken = TOKEN.parse().expect("token");
    let approve = serve(Mode::Approve, true, &token).await;
    let unsigned = serve(Mode::Approve, false, &token).await;
    let deny = serve(Mode::Deny, true, &token).await;
    let unauthorized = serve(Mode::Unauthorized, true, &token).await;
    let wrong_hash = format!("sha256:{}", "0".repeat(64));
    // The same ID, another secret: cluster-info's signature does not verify.
    let other_secret = "abcdef.ffffffffffffffff";
    let cases: [(&Server, &str, &str, String); 5] = [
        (
            &approve,
            TOKEN,
            &wrong_hash,
            format!(
                "the cluster CA's hash is {}, not the --ca-cert-hash given",
                approve.ca_hash
            ),
        ),
        (
            &unsigned,
            TOKEN,
            &unsigned.ca_hash,
            format!(
                "the token ID is not known to {}: no signature in cluster-info (expired or \
                 deleted token?)",
                unsigned.url
            ),
        ),
        (
            &approve,
            other_secret,
            &approve.ca_hash,
            format!(
                "cluster-info from {} is not signed with this token's secret (wrong secret, or \
                 cluster-info was altered on the way)",
                approve.url
            ),
        ),
        (
            &deny,
            TOKEN,
            &deny.ca_hash,
            "was denied: NotAllowed: decided by the fake".to_owned(),
        ),
        (
            &unauthorized,
            TOKEN,
            &unauthorized.ca_hash,
            "the API server refused the credentials (401 Unauthorized) creating \
             CertificateSigningRequest node-csr-"
                .to_owned(),
        ),
    ];
    for (server, token, hash, expected) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let error = join(&options(server, token, hash, dir.path()))
            .await
            .expect_err("refused");
        let line = cli::one_line(&error);
        assert!(line.contains(&expected), "{line}\nwanted: {expected}");
        assert!(!line.contains('\n'));
        let written: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert!(written.is_empty(), "{written:?}");
    }
}

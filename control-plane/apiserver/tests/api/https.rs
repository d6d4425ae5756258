//! A tiny HTTPS server on 127.0.0.1 for tests that play a webhook: its own CA, a serving
//! certificate for 127.0.0.1 (and any DNS names asked for), served by keelson's own TLS
//! stack until dropped.

use axum::Router;
use base64::Engine as _;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::sync::oneshot;

/// A running server; it stops when this is dropped.
pub(crate) struct HttpsServer {
    pub(crate) port: u16,
    /// `https://127.0.0.1:<port>`.
    pub(crate) base: String,
    /// The CA's PEM, base64-encoded as `caBundle` fields want it.
    pub(crate) ca_bundle: String,
    _stop: oneshot::Sender<()>,
}

/// Serves `router` over HTTPS with a certificate for 127.0.0.1 and `dns_names`.
pub(crate) async fn serve(router: Router, dns_names: &[&str]) -> HttpsServer {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::new(ca_params, &ca_key);
    let key = KeyPair::generate().expect("serving key");
    let names: Vec<String> = std::iter::once("127.0.0.1")
        .chain(dns_names.iter().copied())
        .map(str::to_owned)
        .collect();
    let serving = CertificateParams::new(names)
        .expect("serving params")
        .signed_by(&key, &issuer)
        .expect("serving certificate");
    let config = keelson_apiserver::tls::server_config(
        serving.pem().as_bytes(),
        key.serialize_pem().as_bytes(),
        ca.pem().as_bytes(),
    )
    .expect("TLS config");
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
    HttpsServer {
        port,
        base: format!("https://127.0.0.1:{port}"),
        ca_bundle: base64::engine::general_purpose::STANDARD.encode(ca.pem()),
        _stop: stop,
    }
}

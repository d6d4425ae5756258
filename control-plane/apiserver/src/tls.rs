//! Serving the router over HTTPS (rustls with ring) with optional client certificates.
//!
//! Client certificates are verified against the cluster CA during the handshake; a client
//! without one still connects (it may authenticate with a bearer token, or is anonymous and
//! gets 401 from [`crate::auth`]). The verified identity travels into every request of the
//! connection as a [`ClientCertificate`] extension.

use std::{future::Future, sync::Arc, time::Duration};

use axum::{Router, extract::Request};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::auth::{ClientCertificate, UserInfo};

mod reload;

pub use reload::{ServingCertificate, reloadable_server_config};

/// How long a client may take for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections (watches end at once) get to finish at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM input holds no usable certificate or key.
    #[error("{what}: {cause}")]
    Pem {
        /// Which input.
        what: &'static str,
        /// The cause.
        cause: String,
    },
    /// rustls rejected the certificates or the key.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA cannot be used to verify certificates.
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// A client identity from PEM: the certificate chain of `cert_pem` and the key of `key_pem`,
/// with `what` ("kubelet client", ...) naming them in errors.
pub(crate) fn client_identity(
    cert_pem: &[u8],
    key_pem: &[u8],
    what: &'static str,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let pem = |cause: rustls::pki_types::pem::Error| TlsError::Pem {
        what,
        cause: cause.to_string(),
    };
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(pem)?;
    Ok((chain, key))
}

/// A rustls server configuration for `cert_chain`/`key` (PEM) that verifies optional client
/// certificates against `client_ca` (PEM), speaking HTTP/1.1.
pub fn server_config(
    cert_chain: &[u8],
    key: &[u8],
    client_ca: &[u8],
) -> Result<Arc<ServerConfig>, TlsError> {
    let pem = |what, cause: rustls::pki_types::pem::Error| TlsError::Pem {
        what,
        cause: cause.to_string(),
    };
    let chain = CertificateDer::pem_slice_iter(cert_chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem("serving certificate", e))?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| pem("serving key", e))?;
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca) {
        roots.add(ca.map_err(|e| pem("client CA", e))?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The user a verified client certificate names: common name = user, organizations = groups.
pub fn certificate_user(der: &[u8]) -> Option<UserInfo> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = certificate.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Some(UserInfo {
        name,
        groups,
        uid: String::new(),
        extra: std::collections::BTreeMap::new(),
    })
}

/// Serves `router` on `listener` over TLS until `shutdown` completes, then stops accepting,
/// lets open requests finish (up to a few seconds) and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    config: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = TlsAcceptor::from(config);
    // hyper-util's GracefulShutdown cannot watch connections served with upgrades: at
    // shutdown every connection is told through `stopping`, and each holds a clone of
    // `open` until it ends, so `drained` ends when the last one has.
    let (stopping, _) = tokio::sync::watch::channel(false);
    let (open, mut drained) = tokio::sync::mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let mut stop = stopping.subscribe();
        let open = open.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let user = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| certificate_user(leaf))
                .map(|user| ClientCertificate(crate::auth::in_authenticated_group(Arc::new(user))));
            let service = router.map_request(move |mut request: Request<_>| {
                if let Some(user) = &user {
                    request.extensions_mut().insert(user.clone());
                }
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request.map(axum::body::Body::new)
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
                // `pods/exec` and the other relayed subresources switch protocols.
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            let stopped = async {
                while !*stop.borrow_and_update() {
                    if stop.changed().await.is_err() {
                        break;
                    }
                }
            };
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stopped => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = ended {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(open);
        });
    }
    drop(listener);
    stopping.send_replace(true);
    drop(open);
    tokio::select! {
        _ = drained.recv() => {},
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::info!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
        }
    }
    Ok(())
}

//! The agent's kubelet endpoint: HTTPS with the node's serving certificate from the cluster CA
//! (self-signed until it is issued: [`crate::join::serving`]), accepting only
//! clients with a certificate from the cluster CA that names the API server
//! (`kube-apiserver-kubelet-client`, or a `system:masters` identity). It serves
//! `GET /containerLogs/{namespace}/{pod}/{container}` with kubelet's query parameters (`follow`,
//! `previous`, `tailLines`, `timestamps`, `sinceSeconds`), which the API server proxies
//! `pods/<name>/log` to, `/healthz` (the agent's health checks, see [`crate::health`]), and the streaming endpoints of [`super::stream`] (`/exec`,
//! `/attach`, `/portForward`).

use std::{collections::HashMap, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    extract::{Path, Query, Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use rustls::{
    RootCertStore, ServerConfig, pki_types::CertificateDer, server::WebPkiClientVerifier,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use super::runtime::{ContainerRuntime, LogOptions};

/// The API server's identity towards kubelets (Kubernetes' convention).
pub const APISERVER_CLIENT: &str = "kube-apiserver-kubelet-client";

/// Why the endpoint cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// rustls refused the configuration.
    #[error("TLS configuration")]
    Rustls(#[source] rustls::Error),
    /// The CA cannot verify client certificates.
    #[error("client certificate verifier")]
    Verifier(#[source] rustls::server::VerifierBuilderError),
}

/// A TLS configuration presenting `certificate` (self-signed until the cluster CA issues one,
/// see [`crate::join::serving`]) that requires client certificates from `client_ca` (DER).
pub fn tls_config(
    certificate: Arc<crate::join::serving::ServingCertificate>,
    client_ca: &[Vec<u8>],
) -> Result<Arc<ServerConfig>, ServerError> {
    let mut roots = RootCertStore::empty();
    for ca in client_ca {
        roots
            .add(CertificateDer::from(ca.clone()))
            .map_err(ServerError::Rustls)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(ServerError::Verifier)?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ServerError::Rustls)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Common name and organizations of a client certificate.
fn identity(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = certificate.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_owned();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect();
    Some((name, groups))
}

/// Whether this client may use the endpoint: the API server, or a cluster administrator.
fn allowed(name: &str, groups: &[String]) -> bool {
    name == APISERVER_CLIENT || groups.iter().any(|g| g == "system:masters")
}

#[derive(Clone)]
struct AppState {
    runtime: Arc<dyn ContainerRuntime>,
}

/// What the endpoint serves besides logs.
#[derive(Debug, Clone)]
pub struct Serving {
    /// The cgroup sampler `/stats/summary` and `/metrics/resource` read.
    pub stats: Option<Arc<super::stats::Sampler>>,
    /// How long a streaming connection may stay idle (zero: no limit).
    pub streaming_idle_timeout: Duration,
    /// The agent's health checks, served at `/healthz`, `/livez` and `/readyz`.
    pub health: keelson_daemon::health::Health,
}

/// Serves the endpoint on `listener` until the process stops.
pub async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    runtime: Arc<dyn ContainerRuntime>,
    serving: Serving,
) {
    let router = Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            axum::routing::get(container_logs),
        )
        .with_state(AppState {
            runtime: runtime.clone(),
        })
        .merge(super::stream::router(super::stream::StreamState {
            runtime,
            dialer: Arc::new(super::stream::dial::NetnsDialer),
            idle_timeout: serving.streaming_idle_timeout,
        }))
        .merge(super::stats::routes(serving.stats))
        .merge(serving.health.routes());
    let acceptor = TlsAcceptor::from(config);
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                .await
            {
                Ok(Ok(tls)) => tls,
                _ => {
                    tracing::debug!(%peer, "kubelet endpoint: TLS handshake failed");
                    return;
                }
            };
            let who = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(|leaf| identity(leaf));
            let permitted = who.as_ref().is_some_and(|(n, g)| allowed(n, g));
            let user = who.map(|(n, _)| n).unwrap_or_default();
            let service = router.map_request(move |request: Request<_>| request.map(Body::new));
            let service = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
                let service = service.clone();
                let user = user.clone();
                async move {
                    if permitted {
                        service.oneshot(request).await
                    } else {
                        Ok((
                            StatusCode::FORBIDDEN,
                            format!("user \"{user}\" may not use the kubelet API of this node\n"),
                        )
                            .into_response())
                    }
                }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(service))
                .with_upgrades();
            if let Err(error) = connection.await {
                tracing::debug!(%peer, %error, "kubelet endpoint connection");
            }
        });
    }
}

async fn container_logs(
    State(state): State<AppState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let flag = |key: &str| {
        query
            .get(key)
            .is_some_and(|v| v == "true" || v == "1" || v.is_empty())
    };
    let number = |key: &str| query.get(key).and_then(|v| v.parse::<i64>().ok());
    let previous = flag("previous");
    let containers = match state.runtime.list_named(&namespace, &pod).await {
        Ok(list) => list,
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{}\n", crate::error_chain(&e)),
            )
                .into_response();
        }
    };
    let mut instances: Vec<_> = containers
        .into_iter()
        .filter(|c| c.name == container && c.role != "sandbox")
        .collect();
    instances.sort_by_key(|c| std::cmp::Reverse(c.attempt));
    let chosen = if previous {
        instances.get(1)
    } else {
        instances.first()
    };
    let Some(chosen) = chosen else {
        let message = if previous && !instances.is_empty() {
            format!("previous terminated container \"{container}\" in pod \"{pod}\" not found\n")
        } else {
            format!("container \"{container}\" in pod \"{pod}\" is not available\n")
        };
        return (StatusCode::NOT_FOUND, message).into_response();
    };
    let since =
        number("sinceSeconds").map(|s| k8s_openapi::jiff::Timestamp::now().as_second() - s.max(0));
    let options = LogOptions {
        follow: flag("follow"),
        tail: number("tailLines"),
        timestamps: flag("timestamps"),
        since,
    };
    let stream = if previous {
        state.runtime.logs(&chosen.id, options)
    } else {
        // `-f` goes on with the container's next attempts when this one ends.
        super::log_follow::stream(
            state.runtime.clone(),
            super::log_follow::Followed {
                namespace,
                pod,
                container,
            },
            chosen.id.clone(),
            chosen.attempt,
            options,
        )
    };
    let limit = number("limitBytes").map(|l| l.max(0) as usize);
    let body = match limit {
        Some(limit) => {
            use futures_util::StreamExt as _;
            let mut left = limit;
            Body::from_stream(stream.take_while(move |chunk| {
                let go = left > 0;
                if let Ok(c) = chunk {
                    left = left.saturating_sub(c.len());
                }
                std::future::ready(go)
            }))
        }
        None => Body::from_stream(stream),
    };
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "text/plain")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_api_server_and_administrators_are_allowed() {
        assert!(allowed(APISERVER_CLIENT, &[]));
        assert!(allowed("kubernetes-admin", &["system:masters".to_owned()]));
        assert!(!allowed("system:node:n1", &["system:nodes".to_owned()]));
    }
}

//! The upgrade-aware reverse proxy under every relayed subresource (kube's
//! `UpgradeAwareHandler`): one request sent on to a backend (a kubelet over TLS with the
//! API server's client certificate, or a pod over plain HTTP or unverified HTTPS); a `101
//! Switching Protocols` answer is returned to the client and the two upgraded connections
//! are spliced, anything else is passed back as it came.

use std::sync::Arc;

use axum::{
    body::Body,
    http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header},
    response::Response,
};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, pki_types::ServerName};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};
use tokio_rustls::TlsConnector;

use crate::{
    ApiError,
    pod_log::{AnyKubeletCertificate, KubeletClient, join_host_port},
};

/// A byte stream to a backend.
trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// Where a relayed request goes.
#[derive(Debug)]
pub(crate) enum Backend<'a> {
    /// The kubelet endpoint of `node`, with the kubelet client and its certificate checks.
    Kubelet {
        client: &'a KubeletClient,
        node: String,
        ip: String,
        port: u16,
    },
    /// `ip:port` over plain HTTP (`http:` pod and Service proxying, the default).
    Http { ip: String, port: u16 },
    /// `ip:port` over HTTPS without verifying its certificate (`https:` pod and Service
    /// proxying, as kube-apiserver's proxy transport does).
    Https { ip: String, port: u16 },
}

impl Backend<'_> {
    /// `host:port`, for the Host header and messages.
    pub(crate) fn address(&self) -> String {
        match self {
            Backend::Kubelet { ip, port, .. }
            | Backend::Http { ip, port }
            | Backend::Https { ip, port } => join_host_port(ip, *port),
        }
    }

    async fn connect(&self) -> Result<Box<dyn Io>, ApiError> {
        let address = self.address();
        let unreachable = |cause: String| {
            ApiError::service_unavailable(format!("error trying to reach {address}: {cause}"))
        };
        match self {
            Backend::Kubelet {
                client,
                node,
                ip,
                port,
            } => Ok(Box::new(client.connect(node, ip, *port).await?)),
            Backend::Http { .. } | Backend::Https { .. } => {
                let tcp = tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    tokio::net::TcpStream::connect(&address),
                )
                .await
                .map_err(|_| unreachable(format!("dial tcp {address}: i/o timeout")))?
                .map_err(|e| unreachable(crate::admission::call::dial_error(&address, &e)))?;
                let _ = tcp.set_nodelay(true);
                let Backend::Https { ip, .. } = self else {
                    return Ok(Box::new(tcp));
                };
                let server_name = ServerName::try_from(ip.clone())
                    .map_err(|e| unreachable(format!("bad address: {e}")))?;
                let config = insecure_config().map_err(|e| unreachable(format!("tls: {e}")))?;
                let tls = TlsConnector::from(config)
                    .connect(server_name, tcp)
                    .await
                    .map_err(|e| unreachable(format!("tls: {e}")))?;
                Ok(Box::new(tls))
            }
        }
    }
}

/// A TLS client that accepts any server certificate (for `https:` proxying).
fn insecure_config() -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyKubeletCertificate(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// What is relayed of the client's request.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) method: Method,
    /// Path and query at the backend.
    pub(crate) path: String,
    /// The client's headers (connection-level and credential headers are not passed on).
    pub(crate) headers: HeaderMap,
    pub(crate) body: Body,
    /// The client connection's upgrade, when the server serves with upgrades.
    pub(crate) upgrade: Option<OnUpgrade>,
    /// Whether only an upgrade request makes sense (exec, attach, portforward).
    pub(crate) upgrade_required: bool,
}

/// Whether `headers` ask for a protocol upgrade (`Connection: upgrade` and an `Upgrade`).
pub(crate) fn wants_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade && headers.contains_key(header::UPGRADE)
}

/// Headers about one connection (RFC 9110 7.6.1), the client's credentials and the
/// impersonation request: none of them reaches the backend or comes back from it.
fn hop_by_hop(name: &HeaderName) -> bool {
    let name = name.as_str();
    matches!(
        name,
        "authorization"
            | "host"
            | "connection"
            | "keep-alive"
            | "proxy-authorization"
            | "proxy-authenticate"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    ) || name.starts_with("impersonate-")
}

/// Sends `outgoing` to `backend` and answers what it answered (see the module docs).
pub(crate) async fn forward(
    backend: &Backend<'_>,
    outgoing: Outgoing,
) -> Result<Response, ApiError> {
    let upgrade = wants_upgrade(&outgoing.headers);
    if outgoing.upgrade_required && !upgrade {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let address = backend.address();
    let io = backend.connect().await?;
    let failed = |cause: &dyn std::fmt::Display| {
        ApiError::service_unavailable(format!("error trying to reach {address}: {cause}"))
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| failed(&e))?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "relayed connection ended");
        }
    });
    let mut request = Request::builder()
        .method(outgoing.method)
        .uri(&outgoing.path)
        .body(outgoing.body)
        .map_err(|e| ApiError::bad_request(format!("cannot relay the request: {e}")))?;
    let headers = request.headers_mut();
    for (name, value) in &outgoing.headers {
        if !hop_by_hop(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        for value in outgoing.headers.get_all(header::UPGRADE) {
            headers.append(header::UPGRADE, value.clone());
        }
    }
    if let Ok(host) = HeaderValue::from_str(&address) {
        headers.insert(header::HOST, host);
    }
    let mut response = sender.send_request(request).await.map_err(|e| failed(&e))?;
    let status = response.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client) = outgoing.upgrade else {
            return Err(ApiError::service_unavailable(
                "the backend switched protocols but this connection cannot be upgraded",
            ));
        };
        let backend_side = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            match tokio::try_join!(client, backend_side) {
                Ok((client, backend)) => splice(TokioIo::new(client), TokioIo::new(backend)).await,
                Err(error) => tracing::debug!(%error, "upgrading a relayed connection"),
            }
        });
        let mut out = Response::new(Body::empty());
        *out.status_mut() = status;
        *out.headers_mut() = response.headers().clone();
        return Ok(out);
    }
    let (parts, incoming) = response.into_parts();
    let mut out = Response::new(Body::new(incoming));
    *out.status_mut() = parts.status;
    for (name, value) in &parts.headers {
        if !hop_by_hop(name) {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    Ok(out)
}

/// Copies bytes both ways between `a` and `b` until either side ends, then closes both.
pub(crate) async fn splice<A, B>(a: A, b: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let ended = tokio::select! {
        copied = tokio::io::copy(&mut a_read, &mut b_write) => copied.map(|_| "client"),
        copied = tokio::io::copy(&mut b_read, &mut a_write) => copied.map(|_| "backend"),
    };
    match ended {
        Ok(side) => tracing::debug!(side, "relayed stream ended"),
        Err(error) => tracing::debug!(%error, "relayed stream failed"),
    }
    let _ = a_write.shutdown().await;
    let _ = b_write.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_spliced_stream_carries_bytes_both_ways_and_ends_both_sides() {
        let (client, relay_client) = tokio::io::duplex(64);
        let (relay_backend, backend) = tokio::io::duplex(64);
        let relay = tokio::spawn(splice(relay_client, relay_backend));
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let (mut backend_read, mut backend_write) = tokio::io::split(backend);
        use tokio::io::AsyncReadExt as _;
        client_write.write_all(b"ping").await.expect("write");
        let mut got = [0u8; 4];
        backend_read.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"ping");
        backend_write.write_all(b"pong").await.expect("write");
        client_read.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"pong");
        // The backend hangs up: the client sees the end too.
        drop(backend_write);
        drop(backend_read);
        let mut rest = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client_read.read_to_end(&mut rest),
        )
        .await
        .expect("the client's side ends")
        .expect("read");
        assert!(rest.is_empty());
        relay.await.expect("the relay ends");
    }

    #[test]
    fn upgrades_need_both_connection_and_upgrade_headers() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut map = HeaderMap::new();
            for (k, v) in pairs {
                map.append(
                    HeaderName::from_bytes(k.as_bytes()).expect("name"),
                    HeaderValue::from_str(v).expect("value"),
                );
            }
            map
        };
        assert!(wants_upgrade(&headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "SPDY/3.1"),
        ])));
        assert!(!wants_upgrade(&headers(&[("upgrade", "websocket")])));
        assert!(!wants_upgrade(&headers(&[("connection", "upgrade")])));
    }
}

//! The network actions probes and lifecycle hooks share, as the kubelet runs them from the node
//! to the pod's address: `httpGet` over HTTP or HTTPS (the server's certificate is not
//! verified, as the kubelet does not), `tcpSocket`, and gRPC's `grpc.health.v1.Health/Check`.
//! Failures carry the kubelet's wording, which users read in events and conditions.

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::{api::core::v1::HTTPGetAction, apimachinery::pkg::util::intstr::IntOrString};
use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

/// Why a probe or hook action failed; its text is what the kubelet reports.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// A port given as a number out of range.
    #[error("invalid port {0}")]
    InvalidPort(i32),
    /// A named port the container does not declare.
    #[error("no port named {0:?}")]
    NoNamedPort(String),
    /// The pod has no address yet.
    #[error("the pod has no address yet")]
    NoAddress,
    /// The TCP connection failed.
    #[error("dial tcp {addr}: {reason}")]
    Dial {
        /// Where to.
        addr: SocketAddr,
        /// The socket's error or `i/o timeout`.
        reason: String,
    },
    /// The HTTP exchange failed (connection, TLS, read) or ran out of time.
    #[error("Get \"{url}\": {reason}")]
    Http {
        /// The URL asked for.
        url: String,
        /// What went wrong (`context deadline exceeded` for a timeout).
        reason: String,
    },
    /// The answer was not an HTTP status line.
    #[error("malformed HTTP response {0:?}")]
    MalformedHttp(String),
    /// A status outside 200..400.
    #[error("HTTP probe failed with statuscode: {0}")]
    HttpStatus(u16),
    /// gRPC: no connection within the timeout.
    #[error("timeout: failed to connect service {addr:?} within {timeout:?}: {reason}")]
    GrpcConnect {
        /// The probed address.
        addr: String,
        /// The probe's timeout.
        timeout: Duration,
        /// The transport's error.
        reason: String,
    },
    /// gRPC: the server has no health service.
    #[error("this server does not implement the grpc health protocol (grpc.health.v1.Health): {0}")]
    GrpcUnimplemented(String),
    /// gRPC: the call did not finish within the timeout.
    #[error("timeout: health rpc did not complete within {0:?}")]
    GrpcTimeout(Duration),
    /// gRPC: another call failure.
    #[error("error: health rpc probe failed: {0}")]
    GrpcFailed(String),
    /// gRPC: the service answered, not `SERVING`.
    #[error("service unhealthy (responded with {0:?})")]
    GrpcUnhealthy(&'static str),
    /// An exec action exited non-zero.
    #[error("command exited with {code}: {output}")]
    ExecExit {
        /// Its exit code.
        code: i64,
        /// Its output, trimmed.
        output: String,
    },
    /// An exec action could not be run.
    #[error("{0}")]
    Exec(String),
}

/// The port a probe or hook names: a number, or one of the container's named ports.
pub fn port_of(port: &IntOrString, container_ports: &[(String, i32)]) -> Result<u16, ActionError> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).map_err(|_| ActionError::InvalidPort(*p)),
        IntOrString::String(name) => container_ports
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, p)| u16::try_from(*p).ok())
            .or_else(|| name.parse().ok())
            .ok_or_else(|| ActionError::NoNamedPort(name.clone())),
    }
}

/// Connects to `ip:port` within `timeout`.
pub async fn tcp(ip: Ipv4Addr, port: u16, timeout: Duration) -> Result<(), ActionError> {
    let addr = SocketAddr::from((ip, port));
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(ActionError::Dial {
            addr,
            reason: e.to_string(),
        }),
        Err(_) => Err(ActionError::Dial {
            addr,
            reason: "i/o timeout".into(),
        }),
    }
}

/// Whether an `httpGet` action asks for HTTPS.
pub fn is_https(action: &HTTPGetAction) -> bool {
    action
        .scheme
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"))
}

/// The request line and headers the kubelet sends (`User-Agent: kube-probe/<version>`).
pub fn http_request(action: &HTTPGetAction, ip: Ipv4Addr) -> String {
    let path = action.path.clone().unwrap_or_else(|| "/".into());
    let host = action.host.clone().unwrap_or_else(|| ip.to_string());
    let mut request = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\n"
    );
    for header in action.http_headers.iter().flatten() {
        request.push_str(&format!("{}: {}\r\n", header.name, header.value));
    }
    request.push_str("\r\n");
    request
}

/// The status code of an HTTP answer's first bytes.
pub fn status_code(head: &[u8]) -> Result<u16, ActionError> {
    let line = String::from_utf8_lossy(head).into_owned();
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or(ActionError::MalformedHttp(line))
}

/// An `httpGet` to the pod (or the action's `host`): 200..400 passes. HTTPS does not verify
/// the server's certificate.
pub async fn http_get(
    action: &HTTPGetAction,
    ip: Ipv4Addr,
    ports: &[(String, i32)],
    timeout: Duration,
) -> Result<(), ActionError> {
    let port = port_of(&action.port, ports)?;
    let target: Ipv4Addr = action
        .host
        .as_deref()
        .and_then(|h| h.parse().ok())
        .unwrap_or(ip);
    let addr = SocketAddr::from((target, port));
    let https = is_https(action);
    let path = action.path.clone().unwrap_or_else(|| "/".into());
    let url = format!("{}://{addr}{path}", if https { "https" } else { "http" });
    let request = http_request(action, target);
    let failed = |reason: String| ActionError::Http {
        url: url.clone(),
        reason,
    };
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| failed(e.to_string()))?;
        if https {
            let config = insecure_tls().map_err(|e| failed(e.to_string()))?;
            let connector = tokio_rustls::TlsConnector::from(config);
            let stream = connector
                .connect(ServerName::IpAddress(target.into()), stream)
                .await
                .map_err(|e| failed(e.to_string()))?;
            exchange(stream, &request)
                .await
                .map_err(|e| failed(e.to_string()))
        } else {
            exchange(stream, &request)
                .await
                .map_err(|e| failed(e.to_string()))
        }
    };
    let code = tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| Err(failed("context deadline exceeded".into())))??;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(ActionError::HttpStatus(code))
    }
}

/// Sends `request` and reads the status line; the inner `Err` is a malformed answer.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &str,
) -> std::io::Result<Result<u16, ActionError>> {
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0u8; 64];
    let mut n = 0;
    // Enough for `HTTP/1.x NNN`, however the answer is split.
    while n < 12 {
        let read = stream.read(&mut head[n..]).await?;
        if read == 0 {
            break;
        }
        n += read;
    }
    Ok(status_code(&head[..n]))
}

/// A TLS client that accepts any server certificate (the kubelet's probes and hooks skip
/// verification) but still checks the handshake signatures.
fn insecure_tls() -> Result<Arc<ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Accepts whatever certificate the pod presents.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse` (status: 0 UNKNOWN, 1 SERVING, 2 NOT_SERVING,
/// 3 SERVICE_UNKNOWN).
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// The name of a `HealthCheckResponse.ServingStatus` value.
pub fn serving_status(status: i32) -> &'static str {
    match status {
        1 => "SERVING",
        2 => "NOT_SERVING",
        3 => "SERVICE_UNKNOWN",
        _ => "UNKNOWN",
    }
}

/// `grpc.health.v1.Health/Check` for `service` (empty: the server as a whole) on `ip:port`
/// over plaintext HTTP/2; passes on `SERVING`.
pub async fn grpc_check(
    ip: Ipv4Addr,
    port: u16,
    service: &str,
    timeout: Duration,
) -> Result<(), ActionError> {
    let addr = format!("{ip}:{port}");
    let connect_failed = |reason: String| ActionError::GrpcConnect {
        addr: addr.clone(),
        timeout,
        reason,
    };
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| connect_failed(e.to_string()))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .user_agent("kube-probe/1.33")
        .map_err(|e| connect_failed(e.to_string()))?;
    let channel = match tokio::time::timeout(timeout, endpoint.connect()).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) => return Err(connect_failed(crate::error_chain(&e))),
        Err(_) => return Err(connect_failed("context deadline exceeded".into())),
    };
    let mut grpc = tonic::client::Grpc::new(channel);
    let call = async {
        grpc.ready()
            .await
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let path =
            tonic::codegen::http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
        let codec: tonic_prost::ProstCodec<HealthCheckRequest, HealthCheckResponse> =
            tonic_prost::ProstCodec::default();
        grpc.unary(
            tonic::Request::new(HealthCheckRequest {
                service: service.to_owned(),
            }),
            path,
            codec,
        )
        .await
    };
    let response = match tokio::time::timeout(timeout, call).await {
        Err(_) => return Err(ActionError::GrpcTimeout(timeout)),
        Ok(Err(status)) => {
            return Err(match status.code() {
                tonic::Code::Unimplemented => {
                    ActionError::GrpcUnimplemented(status.message().to_owned())
                }
                tonic::Code::DeadlineExceeded => ActionError::GrpcTimeout(timeout),
                _ => ActionError::GrpcFailed(format!(
                    "rpc error: code = {:?} desc = {}",
                    status.code(),
                    status.message()
                )),
            });
        }
        Ok(Ok(response)) => response.into_inner(),
    };
    if response.status == 1 {
        Ok(())
    } else {
        Err(ActionError::GrpcUnhealthy(serving_status(response.status)))
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::HTTPHeader;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[test]
    fn ports_by_number_and_name_with_the_kubelet_wording() {
        let ports = [("http".to_owned(), 8080)];
        let cases = [
            (IntOrString::Int(80), Ok(80)),
            (IntOrString::String("http".into()), Ok(8080)),
            (IntOrString::String("9090".into()), Ok(9090)),
            (
                IntOrString::String("grpc".into()),
                Err("no port named \"grpc\"".to_owned()),
            ),
            (
                IntOrString::Int(70000),
                Err("invalid port 70000".to_owned()),
            ),
        ];
        for (port, want) in cases {
            assert_eq!(
                port_of(&port, &ports).map_err(|e| e.to_string()),
                want,
                "{port:?}"
            );
        }
    }

    #[test]
    fn requests_carry_host_path_and_headers() {
        let action = HTTPGetAction {
            path: Some("/healthz".into()),
            http_headers: Some(vec![HTTPHeader {
                name: "X-Probe".into(),
                value: "1".into(),
            }]),
            scheme: Some("https".into()),
            ..HTTPGetAction::default()
        };
        assert!(is_https(&action));
        assert_eq!(
            http_request(&action, Ipv4Addr::new(10, 0, 0, 5)),
            "GET /healthz HTTP/1.0\r\nHost: 10.0.0.5\r\nUser-Agent: kube-probe/1.33\r\n\
             Accept: */*\r\nX-Probe: 1\r\n\r\n"
        );
        assert!(!is_https(&HTTPGetAction::default()));
    }

    #[test]
    fn status_lines_and_failure_wording() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n"), Ok(204));
        assert_eq!(
            status_code(b"garbage").map_err(|e| e.to_string()),
            Err("malformed HTTP response \"garbage\"".to_owned())
        );
        assert_eq!(
            ActionError::HttpStatus(503).to_string(),
            "HTTP probe failed with statuscode: 503"
        );
        assert_eq!(
            ActionError::GrpcUnhealthy(serving_status(2)).to_string(),
            "service unhealthy (responded with \"NOT_SERVING\")"
        );
    }

    /// A TLS server with a self-signed certificate answers the probe: HTTPS passes without
    /// verification, and a 500 over TLS fails with the status code.
    #[tokio::test]
    async fn https_probes_skip_certificate_verification() {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("a certificate");
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der())
                .expect("a key"),
        )
        .expect("a server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            for answer in ["HTTP/1.0 200 OK\r\n\r\n", "HTTP/1.0 500 Oops\r\n\r\n"] {
                let (stream, _) = listener.accept().await.expect("accept");
                let mut tls = acceptor.accept(stream).await.expect("handshake");
                let mut buf = [0u8; 512];
                let _ = tls.read(&mut buf).await;
                tls.write_all(answer.as_bytes()).await.expect("write");
                tls.shutdown().await.ok();
            }
        });
        let action = HTTPGetAction {
            port: IntOrString::Int(i32::from(port)),
            scheme: Some("HTTPS".into()),
            ..HTTPGetAction::default()
        };
        let ip = Ipv4Addr::LOCALHOST;
        let timeout = Duration::from_secs(5);
        assert_eq!(http_get(&action, ip, &[], timeout).await, Ok(()));
        assert_eq!(
            http_get(&action, ip, &[], timeout).await,
            Err(ActionError::HttpStatus(500))
        );
    }

    #[tokio::test]
    async fn grpc_to_a_closed_port_fails_to_connect() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        let error = grpc_check(Ipv4Addr::LOCALHOST, port, "", Duration::from_secs(1))
            .await
            .expect_err("nothing listens");
        assert!(
            error.to_string().starts_with(&format!(
                "timeout: failed to connect service \"127.0.0.1:{port}\" within 1s"
            )),
            "{error}"
        );
    }
}

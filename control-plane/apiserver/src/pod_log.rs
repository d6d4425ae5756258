//! `GET .../pods/<name>/log`: `kubectl logs`, proxied to the kubelet endpoint of the pod's node
//! (`status.daemonEndpoints.kubeletEndpoint` at its InternalIP) as kube-apiserver does, with the
//! API server's `kube-apiserver-kubelet-client` certificate.
//!
//! Like kube-apiserver with `--kubelet-certificate-authority`, the kubelet's serving
//! certificate must chain to the cluster CA and name the node's InternalIP; the kubelet in
//! turn verifies the API server's client certificate against the same CA.

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{HeaderValue, Request, StatusCode, header},
    response::Response,
};
use hyper_util::rt::TokioIo;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

use crate::{ApiError, request::Params, tls::TlsError};

/// The kubelet's default port, when a Node does not report its endpoint.
const KUBELET_PORT: i64 = 10250;
/// Query parameters of `pods/log` passed on to the kubelet.
const PASSED: &[&str] = &[
    "follow",
    "previous",
    "tailLines",
    "timestamps",
    "sinceSeconds",
    "limitBytes",
];

/// The API server's TLS client for kubelet endpoints.
#[derive(Debug, Clone)]
pub struct KubeletClient {
    config: Arc<ClientConfig>,
}

/// How long connecting to a kubelet (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl KubeletClient {
    /// A client authenticating with `cert_pem`/`key_pem` (the API server's kubelet client
    /// certificate, common name `kube-apiserver-kubelet-client`) that accepts only kubelet
    /// serving certificates issued by `ca_pem` (the cluster CA) for the node's InternalIP.
    pub fn new(cert_pem: &[u8], key_pem: &[u8], ca_pem: &[u8]) -> Result<Self, TlsError> {
        let (chain, key) =
            crate::tls::client_identity(cert_pem, key_pem, "kubelet client certificate and key")?;
        let mut roots = RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(ca_pem) {
            let certificate = certificate.map_err(|e| TlsError::Pem {
                what: "cluster CA",
                cause: e.to_string(),
            })?;
            roots.add(certificate)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .build()?;
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(chain, key)?;
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// A TLS connection to the kubelet of `node` at `ip:port`, its certificate verified;
    /// failures are 503s naming the node, the address and the cause.
    pub(crate) async fn connect(
        &self,
        node: &str,
        ip: &str,
        port: u16,
    ) -> Result<TlsStream<TcpStream>, ApiError> {
        let address = join_host_port(ip, port);
        let fail = |cause: String| {
            unavailable(format!(
                "cannot reach the kubelet of node {node} at {address}: {cause}"
            ))
        };
        let server_name = ServerName::try_from(ip.to_owned())
            .map_err(|e| fail(format!("bad address {ip:?}: {e}")))?;
        let connect = async {
            let tcp = TcpStream::connect(&address)
                .await
                .map_err(|e| fail(crate::admission::call::dial_error(&address, &e)))?;
            let _ = tcp.set_nodelay(true);
            TlsConnector::from(Arc::clone(&self.config))
                .connect(server_name, tcp)
                .await
                .map_err(|e| fail(tls_cause(&e, ip)))
        };
        tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| fail(format!("dial tcp {address}: i/o timeout")))?
    }

    /// A TLS connector with this client's configuration, for other kubelet requests.
    pub(crate) fn connector(&self) -> TlsConnector {
        TlsConnector::from(Arc::clone(&self.config))
    }
}

/// `host:port`, with an IPv6 host in brackets.
pub(crate) fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Why a TLS handshake with a kubelet failed, in the words of Go's crypto/x509 where the
/// certificate was the reason (what kube-apiserver's users know).
fn tls_cause(error: &std::io::Error, ip: &str) -> String {
    let certificate = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .and_then(|e| match e {
            rustls::Error::InvalidCertificate(c) => Some(c),
            _ => None,
        });
    match certificate {
        Some(CertificateError::UnknownIssuer | CertificateError::BadSignature) => {
            "tls: failed to verify certificate: x509: certificate signed by unknown authority"
                .to_owned()
        }
        Some(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => {
            format!("tls: failed to verify certificate: x509: certificate is not valid for {ip}")
        }
        Some(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => "tls: failed to verify certificate: x509: certificate has expired or is not yet valid"
            .to_owned(),
        Some(other) => format!("tls: failed to verify certificate: {other:?}"),
        None => format!("tls: {error}"),
    }
}

/// Accepts a server certificate whatever signed it, but still checks the handshake signatures
/// with it: for aggregated APIs with `insecureSkipTLSVerify` and for `https:` pod and Service
/// proxying (kube-apiserver's proxy transport does not verify either).
#[derive(Debug)]
pub(crate) struct AnyKubeletCertificate(pub(crate) Arc<CryptoProvider>);

impl ServerCertVerifier for AnyKubeletCertificate {
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

/// Which container of `pod` the request means: `?container=` (a container, init or ephemeral
/// container), or the only one.
pub(crate) fn container_of(pod: &Value, name: &str, params: &Params) -> Result<String, ApiError> {
    let names: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name")?.as_str())
        .collect();
    match params.get("container").filter(|c| !c.is_empty()) {
        Some(container) => {
            let init = ["/spec/initContainers", "/spec/ephemeralContainers"]
                .iter()
                .filter_map(|list| pod.pointer(list)?.as_array())
                .flatten()
                .any(|c| c.get("name").and_then(Value::as_str) == Some(container.as_str()));
            if names.contains(&container.as_str()) || init {
                Ok(container.clone())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {container} is not valid for pod {name}"
                )))
            }
        }
        None => match names.as_slice() {
            [only] => Ok((*only).to_owned()),
            _ => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            ))),
        },
    }
}

/// The kubelet endpoint (`InternalIP:port`) of `node`.
pub(crate) fn endpoint_of(node: &Value, node_name: &str) -> Result<(String, u16), ApiError> {
    let ip = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
        .and_then(|a| a.get("address")?.as_str())
        .ok_or_else(|| {
            ApiError::bad_request(format!("node {node_name} reports no InternalIP address"))
        })?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .filter(|p| *p > 0)
        .unwrap_or(KUBELET_PORT);
    let port = u16::try_from(port)
        .map_err(|_| ApiError::bad_request(format!("node {node_name}: bad kubelet port")))?;
    Ok((ip.to_owned(), port))
}

fn unavailable(message: String) -> ApiError {
    ApiError::service_unavailable(message)
}

/// Streams the logs of a container of `pod` (already read) from its node's kubelet.
pub(crate) async fn proxy(
    client: Option<&KubeletClient>,
    pod: &Value,
    node: Option<&Value>,
    namespace: &str,
    name: &str,
    params: &Params,
) -> Result<Response, ApiError> {
    let container = container_of(pod, name, params)?;
    let Some(node_name) = pod.pointer("/spec/nodeName").and_then(Value::as_str) else {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let node = node.ok_or_else(|| {
        ApiError::bad_request(format!("pod {name}'s node {node_name} does not exist"))
    })?;
    let client = client.ok_or_else(|| {
        unavailable("this API server has no kubelet client certificate".to_owned())
    })?;
    let (ip, port) = endpoint_of(node, node_name)?;
    let mut query: Vec<String> = PASSED
        .iter()
        .filter_map(|key| params.get(*key).map(|v| format!("{key}={v}")))
        .collect();
    query.retain(|q| !q.ends_with('='));
    let path = format!(
        "/containerLogs/{namespace}/{name}/{container}{}{}",
        if query.is_empty() { "" } else { "?" },
        query.join("&")
    );
    let address = join_host_port(&ip, port);
    let fail = |what: &str, cause: &dyn std::fmt::Display| {
        unavailable(format!(
            "cannot reach the kubelet of node {node_name} at {address} ({what}: {cause})"
        ))
    };
    let tls = client.connect(node_name, &ip, port).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| fail("HTTP", &e))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "kubelet log connection ended");
        }
    });
    let request = Request::get(&path)
        .header(header::HOST, &address)
        .body(Body::empty())
        .map_err(|e| fail("request", &e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| fail("request", &e))?;
    let status = response.status();
    if status != StatusCode::OK {
        let body = axum::body::to_bytes(Body::new(response.into_body()), 64 * 1024)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&body).trim().to_owned();
        return Err(if status == StatusCode::NOT_FOUND {
            ApiError::bad_request(format!(
                "container {container} in pod {name} has no logs on node {node_name}: {text}"
            ))
        } else {
            unavailable(format!(
                "the kubelet of node {node_name} answered {status}: {text}"
            ))
        });
    }
    let mut out = Response::new(Body::new(response.into_body()));
    out.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(out)
}

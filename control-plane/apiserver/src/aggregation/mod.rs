//! API aggregation, as kube-apiserver's aggregator (`k8s.io/kube-aggregator/pkg/apiserver`)
//! does it: a request under `/apis/<group>/<version>` that keelson does not serve itself goes
//! to the APIService `<version>.<group>`, and when that names a `spec.service`, it is proxied
//! there unchanged, authenticated with the front-proxy client certificate
//! ([`AggregatorClient`]) and carrying the requesting user in `X-Remote-User`,
//! `X-Remote-Group` (kube's requestheader authentication, which the backend trusts through
//! the `extension-apiserver-authentication` ConfigMap: [`publish_authentication`]).
//!
//! The backend is reached at a ready endpoint of its Service (kube's
//! `--enable-aggregator-routing=true`), for the reason given in
//! [`crate::admission::call`]: keelson's ClusterIPs exist only where a node agent runs. The
//! backend's certificate is checked against `spec.caBundle` for the name
//! `<service>.<namespace>.svc` (or not at all with `insecureSkipTLSVerify`).
//!
//! [`available`] maintains the APIServices' `Available` condition; [`discovery`] adds the
//! aggregated groups to `/apis` (both the legacy list and the aggregated document).

use std::{fmt, sync::Arc, time::Duration};

use axum::{
    body::Body,
    http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, header},
    response::Response,
};
use base64::Engine as _;
use hyper_util::rt::TokioIo;
use keelson_store::Store;
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
};
use serde_json::{Value, json};
use tokio_rustls::TlsConnector;

use crate::{
    ApiError, AppState, UserInfo, admission::call, object::decode_kv,
    pod_log::AnyKubeletCertificate, registry, tls::TlsError,
};

pub mod available;
pub(crate) mod discovery;

/// The group of APIServices.
const GROUP: &str = "apiregistration.k8s.io";
/// How long connecting to a backend (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The client certificate the API server presents to aggregated API servers (kube-apiserver's
/// `--proxy-client-cert-file`), issued by the front-proxy CA.
#[derive(Clone)]
pub struct AggregatorClient {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl fmt::Debug for AggregatorClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggregatorClient")
            .field("certificates", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl AggregatorClient {
    /// A client authenticating with `cert_pem`/`key_pem` (common name `front-proxy-client`).
    pub fn new(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        let (chain, key) = crate::tls::client_identity(
            cert_pem,
            key_pem,
            "front-proxy client certificate and key",
        )?;
        // Checked once here, so building a configuration per backend cannot fail on it.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(RootCertStore::empty())
            .with_client_auth_cert(chain.clone(), key.clone_key())?;
        Ok(Self {
            chain,
            key: Arc::new(key),
        })
    }

    /// A TLS client configuration for a backend: its certificate checked against `ca_bundle`
    /// (PEM), or not at all when `insecure`.
    fn tls_config(&self, ca_bundle: &[u8], insecure: bool) -> Result<Arc<ClientConfig>, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = if insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyKubeletCertificate(provider)))
        } else {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca_bundle) {
                let cert = cert.map_err(|e| format!("caBundle: {e}"))?;
                roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
            }
            builder.with_root_certificates(roots)
        };
        builder
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map(Arc::new)
            .map_err(|e| e.to_string())
    }
}

/// An APIService served by a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backend {
    /// The APIService's name (`<version>.<group>`).
    pub(crate) name: String,
    pub(crate) group: String,
    pub(crate) version: String,
    pub(crate) namespace: String,
    pub(crate) service: String,
    pub(crate) port: u16,
    pub(crate) ca_bundle: Vec<u8>,
    pub(crate) insecure: bool,
    pub(crate) group_priority: i64,
    pub(crate) version_priority: i64,
}

/// The backend of a stored APIService; `None` for a local one (no `spec.service`).
pub(crate) fn backend_of(api_service: &Value) -> Option<Backend> {
    let spec = api_service.get("spec")?;
    let service = spec.get("service").filter(|s| s.is_object())?;
    let text = |value: Option<&Value>| value.and_then(Value::as_str).unwrap_or_default().to_owned();
    Some(Backend {
        name: text(api_service.pointer("/metadata/name")),
        group: text(spec.get("group")),
        version: text(spec.get("version")),
        namespace: text(service.get("namespace")),
        service: text(service.get("name")),
        port: service
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(443),
        ca_bundle: spec
            .get("caBundle")
            .and_then(Value::as_str)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .unwrap_or_default(),
        insecure: spec
            .get("insecureSkipTLSVerify")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        group_priority: spec
            .get("groupPriorityMinimum")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        version_priority: spec
            .get("versionPriority")
            .and_then(Value::as_i64)
            .unwrap_or(0),
    })
}

/// Whether `resource` is APIServices.
pub(crate) fn is_api_service(resource: &registry::Resource) -> bool {
    resource.group == GROUP && resource.plural == "apiservices"
}

fn api_services() -> Result<&'static registry::Resource, ApiError> {
    registry::find(GROUP, "v1", "apiservices").ok_or_else(ApiError::no_route)
}

/// The stored APIService `<version>.<group>`, if any.
async fn lookup(store: &dyn Store, group: &str, version: &str) -> Result<Option<Value>, ApiError> {
    let resource = api_services()?;
    let name = format!("{version}.{group}");
    store
        .get(&resource.key(None, &name), None)
        .await
        .map_err(|e| ApiError::from_store(e, resource, &name))?
        .map(|kv| decode_kv(&kv))
        .transpose()
}

/// Every stored APIService.
pub(crate) async fn list(
    store: &dyn Store,
) -> Result<Vec<(keelson_store::Revision, Value)>, ApiError> {
    let resource = api_services()?;
    let listed = store
        .list(&resource.prefix(), keelson_store::ListOptions::default())
        .await
        .map_err(|e| ApiError::from_store(e, resource, ""))?;
    listed
        .items
        .iter()
        .map(|kv| decode_kv(kv).map(|v| (kv.mod_revision, v)))
        .collect()
}

/// Headers that are about one connection, not the request (RFC 9110 7.6.1), and the
/// identity headers only the aggregator may set.
fn passes_through(name: &HeaderName) -> bool {
    let name = name.as_str();
    !(matches!(
        name,
        "authorization"
            | "host"
            | "connection"
            | "keep-alive"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    ) || name.starts_with("x-remote-")
        || name.starts_with("impersonate-"))
}

/// The identity headers of kube's requestheader authentication for `user`.
pub(crate) fn identity_headers(user: &UserInfo) -> Vec<(HeaderName, String)> {
    let mut headers = vec![(HeaderName::from_static("x-remote-user"), user.name.clone())];
    let mut groups = user.groups.clone();
    if !groups.iter().any(|g| g == "system:authenticated") {
        groups.push("system:authenticated".to_owned());
    }
    for group in groups {
        headers.push((HeaderName::from_static("x-remote-group"), group));
    }
    headers
}

/// Sends `request` (path and query only in its URI) to `backend`, returning the response
/// head with its body still streaming.
pub(crate) async fn send(
    client: &AggregatorClient,
    store: &dyn Store,
    backend: &Backend,
    mut request: Request<Body>,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let destination = call::service_destination(
        store,
        &backend.namespace,
        &backend.service,
        "/",
        backend.port,
    )
    .await?;
    let config = client.tls_config(&backend.ca_bundle, backend.insecure)?;
    let server_name = ServerName::try_from(destination.server_name.clone())
        .map_err(|e| format!("server name {:?}: {e}", destination.server_name))?;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(&destination.address)
            .await
            .map_err(|e| call::dial_error(&destination.address, &e))?;
        TlsConnector::from(config)
            .connect(server_name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))
    };
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| format!("dial tcp {}: i/o timeout", destination.address))??;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "aggregated API connection ended");
        }
    });
    request.headers_mut().insert(
        header::HOST,
        HeaderValue::from_str(&destination.host).map_err(|e| e.to_string())?,
    );
    sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())
}

/// Proxies a request for `/apis/<group>/<version>/...` to its APIService's backend; `None`
/// when no APIService with a Service backs the group version (the caller answers 404).
#[expect(
    clippy::too_many_arguments,
    reason = "the parts of the request being proxied, passed through once"
)]
pub(crate) async fn proxy(
    state: &AppState,
    user: &UserInfo,
    group: &str,
    version: &str,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Option<Response>, ApiError> {
    let store = state.store.as_ref();
    let Some(backend) = lookup(store, group, version)
        .await?
        .as_ref()
        .and_then(backend_of)
    else {
        return Ok(None);
    };
    let client = state.aggregator.as_ref().ok_or_else(|| {
        ApiError::service_unavailable("this API server has no front-proxy client certificate")
    })?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = Request::builder()
        .method(method.clone())
        .uri(path)
        .body(body)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    for (name, value) in headers {
        if passes_through(name) {
            request.headers_mut().append(name.clone(), value.clone());
        }
    }
    for (name, value) in identity_headers(user) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            request.headers_mut().append(name, value);
        }
    }
    let response = send(client, store, &backend, request)
        .await
        .map_err(|cause| {
            tracing::debug!(
                apiservice = backend.name,
                cause,
                "aggregated API unreachable"
            );
            ApiError::service_unavailable(format!("error trying to reach service: {cause}"))
        })?;
    let (parts, incoming) = response.into_parts();
    let mut out = Response::new(Body::new(incoming));
    *out.status_mut() = parts.status;
    for (name, value) in &parts.headers {
        if passes_through(name) {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    Ok(Some(out))
}

/// `/apis/<group>` for a group only APIServices serve: its `APIGroup`.
pub(crate) async fn group_info(
    state: &AppState,
    group: &str,
) -> Result<Option<Response>, ApiError> {
    let groups = discovery::aggregated_groups(&list(state.store.as_ref()).await?);
    Ok(groups
        .into_iter()
        .find(|g| g["name"] == group)
        .map(|mut g| {
            g["kind"] = json!("APIGroup");
            g["apiVersion"] = json!("v1");
            crate::discovery::json_response(axum::http::StatusCode::OK, &g)
        }))
}

/// The `kube-system/extension-apiserver-authentication` ConfigMap as kube-apiserver publishes
/// it: the client CA (`client_ca_pem`), and what a backend needs to trust the aggregator's
/// requests: the front-proxy CA, the client certificate names it may present, the identity
/// headers. Created, or updated when it differs.
pub async fn publish_authentication(
    store: &dyn Store,
    client_ca_pem: &str,
    front_proxy_ca_pem: &str,
    allowed_names: &[&str],
) -> Result<(), ApiError> {
    let resource = registry::find("", "v1", "configmaps").ok_or_else(ApiError::no_route)?;
    let name = "extension-apiserver-authentication";
    let list = |items: &[&str]| serde_json::to_string(items).unwrap_or_default();
    let data = json!({
        "client-ca-file": client_ca_pem,
        "requestheader-allowed-names": list(allowed_names),
        "requestheader-client-ca-file": front_proxy_ca_pem,
        "requestheader-extra-headers-prefix": list(&["X-Remote-Extra-"]),
        "requestheader-group-headers": list(&["X-Remote-Group"]),
        "requestheader-username-headers": list(&["X-Remote-User"]),
    });
    let key = resource.key(Some("kube-system"), name);
    let existing = store
        .get(&key, None)
        .await
        .map_err(|e| ApiError::from_store(e, resource, name))?;
    match existing {
        Some(kv) => {
            let mut current = decode_kv(&kv)?;
            if current.get("data") == Some(&data) {
                return Ok(());
            }
            current["data"] = data;
            store
                .update(&key, crate::object::encode(&current), kv.mod_revision)
                .await
                .map_err(|e| ApiError::from_store(e, resource, name))?;
        }
        None => {
            let mut object = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "kube-system"}, "data": data});
            crate::object::prepare_create(&mut object, resource, Some("kube-system"))?;
            store
                .create(&key, crate::object::encode(&object))
                .await
                .map_err(|e| ApiError::from_store(e, resource, name))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_end_to_end_headers_reach_the_backend() {
        for (name, passes) in [
            ("accept", true),
            ("content-type", true),
            ("user-agent", true),
            ("authorization", false),
            ("connection", false),
            ("x-remote-user", false),
            ("x-remote-extra-scopes", false),
            ("impersonate-user", false),
        ] {
            assert_eq!(
                passes_through(&HeaderName::from_static(name)),
                passes,
                "{name}"
            );
        }
    }

    #[test]
    fn the_user_travels_in_kubes_requestheader_headers() {
        let headers = identity_headers(&UserInfo::new("alice", &["developers"]));
        let rendered: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            rendered,
            [
                ("x-remote-user", "alice"),
                ("x-remote-group", "developers"),
                ("x-remote-group", "system:authenticated"),
            ]
        );
    }

    #[test]
    fn api_services_without_a_service_are_local() {
        assert_eq!(
            backend_of(
                &json!({"metadata": {"name": "v1.apps"}, "spec": {"group": "apps", "version": "v1"}})
            ),
            None
        );
        let backend = backend_of(&json!({"metadata": {"name": "v1beta1.metrics.k8s.io"},
            "spec": {"group": "metrics.k8s.io", "version": "v1beta1",
                     "service": {"namespace": "kube-system", "name": "metrics-server"},
                     "caBundle": "Y2E=", "versionPriority": 100}}))
        .expect("a backend");
        assert_eq!(
            (
                backend.service.as_str(),
                backend.port,
                backend.ca_bundle.as_slice(),
                backend.version_priority
            ),
            ("metrics-server", 443, b"ca".as_slice(), 100)
        );
    }
}

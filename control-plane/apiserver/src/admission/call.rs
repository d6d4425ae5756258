//! Calling one webhook: the `AdmissionReview` request, the HTTPS POST (trusting only
//! `clientConfig.caBundle` when set, else the system's roots), the response checks of
//! kube-apiserver's `VerifyAdmissionResponse`, and where a `clientConfig.service` is served.
//!
//! A Service is reached at one of its ready endpoints (kube-apiserver's
//! `--enable-aggregator-routing` way), not at its ClusterIP: keelson's ClusterIPs exist only
//! where a node agent's socket load balancer runs, and the control plane may run on a host
//! without one; endpoint addresses are routed by every node. The TLS server name is still
//! `<service>.<namespace>.svc`, as kube-apiserver checks it.

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use base64::Engine as _;
use hyper_util::rt::TokioIo;
use keelson_store::{ListOptions, Store};
use rustls::{
    ClientConfig, RootCertStore,
    pki_types::{CertificateDer, ServerName, pem::PemObject},
};
use serde_json::{Value, json};
use tokio_rustls::TlsConnector;

use super::matching::Endpoint;
use crate::{object::decode_kv, registry};

/// The largest webhook response read (kube-apiserver reads at most 3 MiB too, the request
/// body limit).
const MAX_RESPONSE_BYTES: usize = crate::MAX_BODY_BYTES;

/// Why a webhook could not be called, or answered something unusable: kube's
/// `ErrCallingWebhook`, whose text follows `failed calling webhook "<name>": `.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallError(pub(crate) String);

/// The AdmissionReview versions keelson sends, in its order of preference (both have the
/// same JSON form).
const REVIEW_VERSIONS: &[&str] = &["v1", "v1beta1"];

/// The first version of the webhook's `admissionReviewVersions` keelson speaks.
pub(crate) fn review_version(accepted: &[String]) -> Result<&'static str, CallError> {
    accepted
        .iter()
        .find_map(|v| REVIEW_VERSIONS.iter().find(|known| **known == v.as_str()))
        .copied()
        .ok_or_else(|| {
            CallError(format!(
                "webhook does not accept known AdmissionReview versions: accepted {accepted:?}, \
                 supported {REVIEW_VERSIONS:?}"
            ))
        })
}

/// What a webhook answered, checked.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Verdict {
    pub(crate) allowed: bool,
    /// `response.status` (a `Status`) when present.
    pub(crate) result: Option<Value>,
    /// The decoded JSON patch, when the response had one.
    pub(crate) patch: Option<Value>,
    pub(crate) warnings: Vec<String>,
}

/// Checks an AdmissionReview response as kube-apiserver does: the kind and version sent,
/// the request's uid, and a patch only from mutating webhooks, only as `JSONPatch`.
pub(crate) fn verify(
    review: &Value,
    version: &str,
    uid: &str,
    mutating: bool,
) -> Result<Verdict, CallError> {
    let api_version = format!("admission.k8s.io/{version}");
    let got_version = review.get("apiVersion").and_then(Value::as_str);
    let got_kind = review.get("kind").and_then(Value::as_str);
    if got_version != Some(api_version.as_str()) || got_kind != Some("AdmissionReview") {
        return Err(CallError(format!(
            "expected webhook response of {api_version}, Kind=AdmissionReview, got {}, Kind={}",
            got_version.unwrap_or_default(),
            got_kind.unwrap_or_default()
        )));
    }
    let Some(response) = review.get("response").filter(|r| r.is_object()) else {
        return Err(CallError("webhook response was absent".to_owned()));
    };
    let got_uid = response
        .get("uid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if got_uid != uid {
        return Err(CallError(format!(
            "expected response.uid={uid:?}, got {got_uid:?}"
        )));
    }
    let patch_text = response
        .get("patch")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty());
    let patch = match patch_text {
        None => None,
        Some(_) if !mutating => {
            return Err(CallError(
                "validating webhook may not return response.patch".to_owned(),
            ));
        }
        Some(text) => {
            match response.get("patchType").and_then(Value::as_str) {
                Some("JSONPatch") => {}
                None => {
                    return Err(CallError(
                        "webhook returned response.patch but not response.patchType".to_owned(),
                    ));
                }
                Some(other) => {
                    return Err(CallError(format!(
                        "webhook returned invalid response.patchType of {other:?}"
                    )));
                }
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| {
                    CallError(format!(
                        "received undecodable patch in webhook response: {e}"
                    ))
                })?;
            Some(serde_json::from_slice(&bytes).map_err(|e| {
                CallError(format!(
                    "received undecodable patch in webhook response: {e}"
                ))
            })?)
        }
    };
    Ok(Verdict {
        allowed: response
            .get("allowed")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        result: response.get("status").filter(|s| s.is_object()).cloned(),
        patch,
        warnings: response
            .get("warnings")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|w| w.as_str().map(str::to_owned))
            .collect(),
    })
}

/// The roots a webhook without `caBundle` is checked against: the system's, read once.
static SYSTEM_ROOTS: LazyLock<Arc<RootCertStore>> = LazyLock::new(|| {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(%error, "reading the system's CA certificates");
    }
    let (added, ignored) = roots.add_parsable_certificates(found.certs);
    tracing::debug!(added, ignored, "system CA certificates for webhooks");
    Arc::new(roots)
});

fn tls_config(ca_bundle: Option<&[u8]>) -> Result<Arc<ClientConfig>, String> {
    let roots = match ca_bundle {
        None => Arc::clone(&SYSTEM_ROOTS),
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| format!("caBundle: {e}"))?;
                roots.add(cert).map_err(|e| format!("caBundle: {e}"))?;
            }
            if roots.is_empty() {
                return Err("caBundle holds no PEM certificate".to_owned());
            }
            Arc::new(roots)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Where to connect and what to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Destination {
    /// `host:port` to connect to.
    pub(crate) address: String,
    /// The name the server's certificate must carry.
    pub(crate) server_name: String,
    /// The Host header.
    pub(crate) host: String,
    /// Path and query.
    pub(crate) path: String,
    /// The URL as messages name it.
    pub(crate) url: String,
}

/// Splits an `https://host[:port]/path` URL.
pub(crate) fn url_destination(url: &str) -> Result<Destination, String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("webhook URL {url:?} is not https"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("webhook URL {url:?} has no usable host"));
    }
    let bad_port = || format!("webhook URL {url:?} has a bad port");
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let (host, after) = inner
            .split_once(']')
            .ok_or_else(|| format!("webhook URL {url:?} has a bad IPv6 host"))?;
        match after.strip_prefix(':') {
            Some(port) => (host, port.parse::<u16>().map_err(|_| bad_port())?),
            None if after.is_empty() => (host, 443),
            None => return Err(bad_port()),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().map_err(|_| bad_port())?),
            None => (authority, 443),
        }
    };
    let address = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok(Destination {
        address,
        server_name: host.to_owned(),
        host: authority.to_owned(),
        path: path.to_owned(),
        url: url.to_owned(),
    })
}

/// The address of a ready endpoint of `service`'s port `port`, from the Service and its
/// EndpointSlices (kube's endpoint routing): `Err` says why there is none, in kube's words.
pub(crate) fn pick_endpoint(
    service: &Value,
    slices: &[Value],
    port: u16,
) -> Result<(String, u16), String> {
    let name = service
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let service_port = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|p| p.get("port").and_then(Value::as_i64) == Some(i64::from(port)))
        .ok_or_else(|| format!("no service port {port} found for service {name:?}"))?;
    let port_name = service_port
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    ready_endpoint(slices, port_name)
        .ok_or_else(|| format!("no endpoints available for service {name:?}"))
}

/// The first ready address among `slices` (a Service's EndpointSlices) with the target port of
/// the Service port named `port_name` (`""` for an unnamed one); endpoints without a `ready`
/// condition count as ready, as kube's endpoint routing counts them.
pub(crate) fn ready_endpoint<'a>(
    slices: impl IntoIterator<Item = &'a Value>,
    port_name: &str,
) -> Option<(String, u16)> {
    slices.into_iter().find_map(|slice| {
        let target = slice
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p.get("name").and_then(Value::as_str).unwrap_or_default() == port_name)
            .and_then(|p| p.get("port")?.as_i64())
            .and_then(|p| u16::try_from(p).ok())?;
        slice
            .get("endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|e| e.pointer("/conditions/ready").and_then(Value::as_bool) != Some(false))
            .find_map(|e| e.pointer("/addresses/0").and_then(Value::as_str))
            .map(|address| (address.to_owned(), target))
    })
}

/// Where `service`'s port `port` is served ([`pick_endpoint`] over the stored Service and
/// EndpointSlices), with `path`.
pub(crate) async fn service_destination(
    store: &dyn Store,
    namespace: &str,
    name: &str,
    path: &str,
    port: u16,
) -> Result<Destination, String> {
    let services = registry::find("", "v1", "services").ok_or("services are not served")?;
    let slices = registry::find("discovery.k8s.io", "v1", "endpointslices")
        .ok_or("endpointslices are not served")?;
    let service = store
        .get(&services.key(Some(namespace), name), None)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("service \"{name}\" not found"))?;
    let service = decode_kv(&service).map_err(|e| e.message)?;
    let listed = store
        .list(
            &slices.collection_prefix(Some(namespace)),
            ListOptions::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let owned: Vec<Value> = listed
        .items
        .iter()
        .filter_map(|kv| decode_kv(kv).ok())
        .filter(|s| {
            s.pointer("/metadata/labels/kubernetes.io~1service-name")
                .and_then(Value::as_str)
                == Some(name)
        })
        .collect();
    let (ip, target) = pick_endpoint(&service, &owned, port)?;
    let address = if ip.contains(':') {
        format!("[{ip}]:{target}")
    } else {
        format!("{ip}:{target}")
    };
    let host = format!("{name}.{namespace}.svc");
    let path = if path.is_empty() { "/" } else { path };
    Ok(Destination {
        address,
        url: format!("https://{host}:{port}{path}"),
        server_name: host.clone(),
        host: format!("{host}:{port}"),
        path: path.to_owned(),
    })
}

/// Posts `review` to the webhook at `endpoint` and returns the answer (its JSON), all within
/// `timeout`; the path gets kube-apiserver's `timeout` query parameter.
pub(crate) async fn post(
    store: &dyn Store,
    endpoint: &Endpoint,
    ca_bundle: Option<&[u8]>,
    review: &Value,
    timeout: Duration,
) -> Result<Value, CallError> {
    let mut destination = match endpoint {
        Endpoint::Url(url) => url_destination(url),
        Endpoint::Service {
            namespace,
            name,
            path,
            port,
        } => service_destination(store, namespace, name, path, *port).await,
    }
    .map_err(|e| CallError(format!("failed to call webhook: {e}")))?;
    let separator = if destination.path.contains('?') {
        '&'
    } else {
        '?'
    };
    let query = format!("{separator}timeout={}s", timeout.as_secs().max(1));
    destination.path.push_str(&query);
    destination.url.push_str(&query);
    let url = destination.url.clone();
    let fail = |cause: String| CallError(format!("failed to call webhook: Post {url:?}: {cause}"));
    match tokio::time::timeout(timeout, exchange(&destination, ca_bundle, review)).await {
        Err(_) => Err(fail("context deadline exceeded".to_owned())),
        Ok(Err(cause)) => Err(fail(cause)),
        Ok(Ok((status, body))) => {
            if status != StatusCode::OK {
                let text = String::from_utf8_lossy(&body);
                return Err(CallError(format!(
                    "failed to call webhook: the server responded with the status code {} \
                     but did not return more information: {}",
                    status.as_u16(),
                    text.trim()
                )));
            }
            serde_json::from_slice(&body).map_err(|e| {
                CallError(format!(
                    "failed to call webhook: the response is not an AdmissionReview: {e}"
                ))
            })
        }
    }
}

async fn exchange(
    destination: &Destination,
    ca_bundle: Option<&[u8]>,
    review: &Value,
) -> Result<(StatusCode, bytes::Bytes), String> {
    let config = tls_config(ca_bundle)?;
    let server_name = ServerName::try_from(destination.server_name.clone())
        .map_err(|e| format!("server name {:?}: {e}", destination.server_name))?;
    let tcp = tokio::net::TcpStream::connect(&destination.address)
        .await
        .map_err(|e| dial_error(&destination.address, &e))?;
    let tls = TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("tls: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "webhook connection ended");
        }
    });
    let request = Request::post(&destination.path)
        .header(header::HOST, &destination.host)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json")
        .body(Body::from(review.to_string()))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = axum::body::to_bytes(Body::new(response.into_body()), MAX_RESPONSE_BYTES)
        .await
        .map_err(|e| format!("reading the response: {e}"))?;
    Ok((status, body))
}

/// A failed dial as Go's net package words it, which kube's messages carry.
pub(crate) fn dial_error(address: &str, error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let cause = match error.kind() {
        ErrorKind::ConnectionRefused => "connect: connection refused".to_owned(),
        ErrorKind::HostUnreachable => "connect: no route to host".to_owned(),
        ErrorKind::NetworkUnreachable => "connect: network is unreachable".to_owned(),
        ErrorKind::TimedOut => "i/o timeout".to_owned(),
        _ => error.to_string(),
    };
    format!("dial tcp {address}: {cause}")
}

/// The `AdmissionReview` request body (`request` as kube-apiserver's
/// `CreateAdmissionObjects` fills it).
pub(crate) fn review(version: &str, request: Value) -> Value {
    json!({
        "apiVersion": format!("admission.k8s.io/{version}"),
        "kind": "AdmissionReview",
        "request": request,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_address_name_and_path() {
        for (url, address, name, path) in [
            (
                "https://127.0.0.1:8443/validate",
                "127.0.0.1:8443",
                "127.0.0.1",
                "/validate",
            ),
            (
                "https://hooks.example.com/x?y=1",
                "hooks.example.com:443",
                "hooks.example.com",
                "/x?y=1",
            ),
            ("https://[::1]:9443", "[::1]:9443", "::1", "/"),
        ] {
            let d = url_destination(url).expect(url);
            assert_eq!(
                (d.address.as_str(), d.server_name.as_str(), d.path.as_str()),
                (address, name, path),
                "{url}"
            );
        }
        for bad in [
            "http://127.0.0.1/",
            "https:///x",
            "https://u@h/",
            "https://h:x/",
        ] {
            assert!(url_destination(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn review_versions_pick_the_first_known() {
        let v = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(review_version(&v(&["v2", "v1beta1", "v1"])), Ok("v1beta1"));
        assert_eq!(review_version(&v(&["v1"])), Ok("v1"));
        assert!(review_version(&v(&["v2"])).is_err());
    }

    #[test]
    fn responses_are_checked_as_kube_apiserver_checks_them() {
        let ok = |response: Value| json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response});
        let patch = base64::engine::general_purpose::STANDARD
            .encode(br#"[{"op":"add","path":"/metadata/labels/a","value":"b"}]"#);
        let verdict = verify(
            &ok(json!({"uid": "u", "allowed": true, "patchType": "JSONPatch", "patch": patch, "warnings": ["w"]})),
            "v1",
            "u",
            true,
        )
        .expect("valid");
        assert!(verdict.allowed);
        assert_eq!(verdict.warnings, ["w"]);
        assert_eq!(
            verdict.patch,
            Some(json!([{"op": "add", "path": "/metadata/labels/a", "value": "b"}]))
        );
        for (review, mutating, message) in [
            (
                ok(json!({"uid": "other", "allowed": true})),
                false,
                "expected response.uid=\"u\", got \"other\"",
            ),
            (
                json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
                false,
                "webhook response was absent",
            ),
            (
                json!({"apiVersion": "v1", "kind": "AdmissionReview", "response": {"uid": "u"}}),
                false,
                "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got v1, Kind=AdmissionReview",
            ),
            (
                ok(json!({"uid": "u", "allowed": true, "patch": patch})),
                true,
                "webhook returned response.patch but not response.patchType",
            ),
            (
                ok(json!({"uid": "u", "allowed": true, "patchType": "JSONPatch", "patch": patch})),
                false,
                "validating webhook may not return response.patch",
            ),
        ] {
            assert_eq!(
                verify(&review, "v1", "u", mutating),
                Err(CallError(message.to_owned()))
            );
        }
    }

    #[test]
    fn services_resolve_to_a_ready_endpoint_of_the_named_port() {
        let service = json!({"metadata": {"name": "hook"}, "spec": {"ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "https", "port": 443, "targetPort": 8443},
        ]}});
        let slice = |ready: bool, ip: &str| {
            json!({"ports": [{"name": "http", "port": 8080}, {"name": "https", "port": 8443}],
                   "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}}]})
        };
        assert_eq!(
            pick_endpoint(
                &service,
                &[slice(false, "10.0.0.1"), slice(true, "10.0.0.2")],
                443
            ),
            Ok(("10.0.0.2".to_owned(), 8443))
        );
        assert_eq!(
            pick_endpoint(&service, &[slice(false, "10.0.0.1")], 443),
            Err("no endpoints available for service \"hook\"".to_owned())
        );
        assert_eq!(
            pick_endpoint(&service, &[], 444),
            Err("no service port 444 found for service \"hook\"".to_owned())
        );
    }
}

//! The subresources the API server relays rather than serves, as kube-apiserver's pod,
//! Service and Node `Connecter`s do:
//!
//! - `pods/exec`, `pods/attach` (GET and POST) and `pods/portforward`: checked like
//!   `ExecLocation`, `AttachLocation` and `PortForwardLocation` (`pkg/registry/core/pod/
//!   strategy.go`), then sent to the kubelet of the pod's node (`/exec/<ns>/<pod>/<container>`,
//!   `/attach/...`, `/portForward/<ns>/<pod>`, with the query in the kubelet's names:
//!   `input`, `output`, `error`, `tty`, `command`, `port`); only upgrade requests are relayed
//!   and the upgraded streams are spliced ([`forward`]).
//! - `pods/[scheme:]name[:port]/proxy/...` to the pod's IP (`pod.ResourceLocation`),
//!   `services/[scheme:]name[:port]/proxy/...` to a ready endpoint of the Service's port (the
//!   Service's `ResourceLocation`: connected directly, not through the ClusterIP), and
//!   `nodes/name[:port]/proxy/...` to the kubelet endpoint (or another port of the node): any
//!   method, the rest of the path and the query passed on, the answer streamed back.
//!
//! Authorization happened before (RBAC on `pods/exec` and so on, `create` for POST; a GET on
//! exec, attach and portforward also needs `create`: [`crate::auth::authorize`]).

use axum::{
    body::Body,
    http::{HeaderMap, Method, Uri},
    response::Response,
};
use hyper::upgrade::OnUpgrade;
use serde_json::Value;

use crate::{
    ApiError, AppState,
    pod_log::{container_of, endpoint_of},
    read,
    request::{Params, Target},
};

pub(crate) mod forward;

use forward::{Backend, Outgoing};

/// The client's request, as far as relaying needs it.
#[derive(Debug)]
pub(crate) struct Incoming<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) params: &'a Params,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: Body,
    pub(crate) upgrade: Option<OnUpgrade>,
}

/// The query of `uri` as its raw (still percent-encoded) pairs.
fn raw_pairs(uri: &Uri) -> Vec<(&str, &str)> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .collect()
}

/// A boolean connect option as kube decodes one from the query: present and not `0` or
/// `false` (any case).
fn flag(params: &Params, key: &str) -> bool {
    params
        .get(key)
        .is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// `GET|POST pods/<name>/{exec,attach,portforward}`.
pub(crate) async fn pod_stream(
    state: &AppState,
    target: &Target,
    name: &str,
    subresource: &str,
    incoming: Incoming<'_>,
) -> Result<Response, ApiError> {
    let (pod, node) = read::pod_and_node(state.store.as_ref(), target, name).await?;
    let namespace = target.namespace.as_deref().unwrap_or("default");
    let params = incoming.params;
    let container = match subresource {
        "portforward" => None,
        _ => Some(container_of(&pod, name, params)?),
    };
    let Some(node_name) = pod.pointer("/spec/nodeName").and_then(Value::as_str) else {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    };
    let pairs = raw_pairs(incoming.uri);
    let mut query: Vec<String> = Vec::new();
    let path = match (subresource, container) {
        ("exec" | "attach", Some(container)) => {
            let streams = [
                ("stdin", "input"),
                ("stdout", "output"),
                ("stderr", "error"),
            ];
            if !streams.iter().any(|(option, _)| flag(params, option)) {
                return Err(ApiError::bad_request(
                    "you must specify at least 1 of stdin, stdout, stderr",
                ));
            }
            for (option, kubelet) in streams.into_iter().chain([("tty", "tty")]) {
                if flag(params, option) {
                    query.push(format!("{kubelet}=1"));
                }
            }
            if subresource == "exec" {
                let commands: Vec<&str> = pairs
                    .iter()
                    .filter(|(key, _)| *key == "command")
                    .map(|(_, value)| *value)
                    .collect();
                if commands.is_empty() {
                    return Err(ApiError::bad_request(
                        "you must specify at least one command for the container",
                    ));
                }
                let phase = pod
                    .pointer("/status/phase")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if matches!(phase, "Succeeded" | "Failed") {
                    return Err(ApiError::bad_request(format!(
                        "cannot exec into a container in a completed pod; current phase is {phase}"
                    )));
                }
                query.extend(commands.iter().map(|c| format!("command={c}")));
            }
            format!("/{subresource}/{namespace}/{name}/{container}")
        }
        _ => {
            let ports: Vec<&str> = pairs
                .iter()
                .filter(|(key, _)| *key == "ports")
                .flat_map(|(_, value)| value.split("%2C").flat_map(|v| v.split(',')))
                .filter(|p| !p.is_empty())
                .collect();
            if let Some(bad) = ports.iter().find(|p| p.parse::<u16>().is_err()) {
                return Err(ApiError::bad_request(format!(
                    "invalid port {bad:?}: ports must be numbers from 1 to 65535"
                )));
            }
            if !ports.is_empty() {
                query.push(format!("port={}", ports.join(",")));
            }
            format!("/portForward/{namespace}/{name}")
        }
    };
    let node = node.ok_or_else(|| {
        ApiError::bad_request(format!("pod {name}'s node {node_name} does not exist"))
    })?;
    let client = state.kubelet.as_ref().ok_or_else(|| {
        ApiError::service_unavailable("this API server has no kubelet client certificate")
    })?;
    let (ip, port) = endpoint_of(&node, node_name)?;
    let backend = Backend::Kubelet {
        client,
        node: node_name.to_owned(),
        ip,
        port,
    };
    let path = if query.is_empty() {
        path
    } else {
        format!("{path}?{}", query.join("&"))
    };
    forward::forward(&backend, outgoing(incoming, path, true)).await
}

fn outgoing(incoming: Incoming<'_>, path: String, upgrade_required: bool) -> Outgoing {
    Outgoing {
        method: incoming.method.clone(),
        path,
        headers: incoming.headers.clone(),
        body: incoming.body,
        upgrade: incoming.upgrade,
        upgrade_required,
    }
}

/// kube's `SplitSchemeNamePort`: `name`, `name:port` or `scheme:name:port`, the scheme `http`,
/// `https` or empty.
fn split_scheme_name_port(id: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => return None,
    };
    (!name.is_empty() && matches!(scheme, "" | "http" | "https")).then_some((scheme, name, port))
}

/// The path after `.../<plural>/<id>/proxy` in `path`, cleaned as Go's `path.Join` cleans
/// it, keeping a trailing slash (kube's proxy handler keeps it too).
fn proxy_path(path: &str, plural: &str, id: &str) -> String {
    let marker = format!("/{plural}/{id}/proxy");
    let rest = path
        .find(&marker)
        .map_or("", |at| &path[at + marker.len()..]);
    let mut cleaned: Vec<&str> = Vec::new();
    for segment in rest.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                cleaned.pop();
            }
            other => cleaned.push(other),
        }
    }
    let mut out = format!("/{}", cleaned.join("/"));
    if rest.ends_with('/') && !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// `<any method> {pods,services,nodes}/<id>/proxy[/<path>]`.
pub(crate) async fn proxy(
    state: &AppState,
    target: &Target,
    id: &str,
    incoming: Incoming<'_>,
) -> Result<Response, ApiError> {
    let plural = target.resource.plural;
    let Some((scheme, name, port)) = split_scheme_name_port(id) else {
        let kind = target.resource.singular;
        return Err(ApiError::bad_request(format!(
            "invalid {kind} request {id:?}"
        )));
    };
    let mut path = proxy_path(incoming.uri.path(), plural, id);
    if let Some(query) = incoming.uri.query() {
        path = format!("{path}?{query}");
    }
    let store = state.store.as_ref();
    let plain = |ip: String, port: u16| match scheme {
        "https" => Backend::Https { ip, port },
        _ => Backend::Http { ip, port },
    };
    let backend = match plural {
        "pods" => {
            let pod = crate::object::decode_kv(&read::get_kv(store, target, name).await?)?;
            let (ip, port) = pod_location(&pod, port)?;
            plain(ip, port)
        }
        "services" => {
            let namespace = target.namespace.as_deref().unwrap_or("default");
            let (ip, port) = service_location(store, namespace, id, name, port).await?;
            plain(ip, port)
        }
        "nodes" => {
            let node = read::node(store, name)
                .await?
                .ok_or_else(|| ApiError::not_found(target.resource, name))?;
            let (ip, kubelet_port) = endpoint_of(&node, name)?;
            let requested =
                match port {
                    "" => None,
                    port => Some(port.parse::<u16>().map_err(|_| {
                        ApiError::bad_request(format!("invalid node request {id:?}"))
                    })?),
                };
            match requested {
                Some(port) if port != kubelet_port => plain(ip, port),
                _ => Backend::Kubelet {
                    client: state.kubelet.as_ref().ok_or_else(|| {
                        ApiError::service_unavailable(
                            "this API server has no kubelet client certificate",
                        )
                    })?,
                    node: name.to_owned(),
                    ip,
                    port: kubelet_port,
                },
            }
        }
        _ => return Err(ApiError::no_route()),
    };
    forward::forward(&backend, outgoing(incoming, path, false)).await
}

/// Where `pods/<name>:<port>/proxy` goes: the pod's IP (which must be a global unicast
/// address) and `port`, or the first declared container port.
fn pod_location(pod: &Value, port: &str) -> Result<(String, u16), ApiError> {
    let port = match port {
        "" => pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find_map(|c| c.pointer("/ports/0/containerPort")?.as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(80),
        port => port
            .parse::<u16>()
            .map_err(|_| ApiError::bad_request(format!("invalid port {port:?}")))?,
    };
    let ip = pod
        .pointer("/status/podIPs/0/ip")
        .or_else(|| pod.pointer("/status/podIP"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let global_unicast = match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(v4)) => {
            !(v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || v4.is_link_local())
        }
        Ok(std::net::IpAddr::V6(v6)) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unicast_link_local())
        }
        Err(_) => false,
    };
    if !global_unicast {
        return Err(ApiError::bad_request("address not allowed"));
    }
    Ok((ip.to_owned(), port))
}

/// Where `services/<id>/proxy` goes: a ready endpoint of the Service port named `port` (or
/// numbered `port`, or the unnamed port), from the Service's EndpointSlices.
async fn service_location(
    store: &dyn keelson_store::Store,
    namespace: &str,
    id: &str,
    name: &str,
    port: &str,
) -> Result<(String, u16), ApiError> {
    let services = crate::registry::find("", "v1", "services").ok_or_else(ApiError::no_route)?;
    let slices = crate::registry::find("discovery.k8s.io", "v1", "endpointslices")
        .ok_or_else(ApiError::no_route)?;
    let service = store
        .get(&services.key(Some(namespace), name), None)
        .await
        .map_err(|e| ApiError::from_store(e, services, name))?
        .ok_or_else(|| ApiError::not_found(services, name))?;
    let service = crate::object::decode_kv(&service)?;
    let mut port_name = port.to_owned();
    if let Ok(number) = port.parse::<i64>() {
        port_name = service
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| p.get("port").and_then(Value::as_i64) == Some(number))
            .map(|p| {
                p.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            })
            .ok_or_else(|| {
                ApiError::service_unavailable(format!(
                    "no service port {number} found for service {name:?}"
                ))
            })?;
    }
    let listed = store
        .list(
            &slices.collection_prefix(Some(namespace)),
            keelson_store::ListOptions::default(),
        )
        .await
        .map_err(|e| ApiError::from_store(e, slices, ""))?;
    let owned = listed
        .items
        .iter()
        .filter_map(|kv| crate::object::decode_kv(kv).ok())
        .filter(|s| {
            s.pointer("/metadata/labels/kubernetes.io~1service-name")
                .and_then(Value::as_str)
                == Some(name)
        });
    let owned: Vec<Value> = owned.collect();
    crate::admission::call::ready_endpoint(&owned, &port_name).ok_or_else(|| {
        ApiError::service_unavailable(format!("no endpoints available for service {id:?}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_ids_split_as_kube_splits_them() {
        let cases = [
            ("web", Some(("", "web", ""))),
            ("web:80", Some(("", "web", "80"))),
            ("web:http", Some(("", "web", "http"))),
            ("https:web:443", Some(("https", "web", "443"))),
            ("https:web:", Some(("https", "web", ""))),
            ("ftp:web:21", None),
            (":80", None),
            ("a:b:c:d", None),
        ];
        for (id, want) in cases {
            assert_eq!(split_scheme_name_port(id), want, "{id}");
        }
    }

    #[test]
    fn the_proxied_path_is_what_follows_proxy() {
        let cases = [
            ("/api/v1/namespaces/d/services/web:80/proxy/", "/"),
            ("/api/v1/namespaces/d/services/web:80/proxy", "/"),
            ("/api/v1/namespaces/d/pods/p/proxy/a/b", "/a/b"),
            ("/api/v1/namespaces/d/pods/p/proxy/a/b/", "/a/b/"),
            ("/api/v1/namespaces/d/pods/p/proxy/a/../../etc", "/etc"),
            (
                "/api/v1/nodes/n1/proxy/metrics/cadvisor",
                "/metrics/cadvisor",
            ),
        ];
        for (path, want) in cases {
            let (plural, id) = if path.contains("/services/") {
                ("services", "web:80")
            } else if path.contains("/pods/") {
                ("pods", "p")
            } else {
                ("nodes", "n1")
            };
            assert_eq!(proxy_path(path, plural, id), want, "{path}");
        }
    }

    #[test]
    fn pods_are_proxied_to_their_ip_and_first_port_unless_the_address_is_not_allowed() {
        let pod = |ip: &str| {
            serde_json::json!({"spec": {"containers": [{"name": "a"},
                {"name": "b", "ports": [{"containerPort": 8080}]}]},
              "status": {"podIP": ip, "podIPs": [{"ip": ip}]}})
        };
        assert_eq!(
            pod_location(&pod("10.244.1.5"), "").expect("location"),
            ("10.244.1.5".to_owned(), 8080)
        );
        assert_eq!(
            pod_location(&pod("10.244.1.5"), "9090").expect("location"),
            ("10.244.1.5".to_owned(), 9090)
        );
        for ip in ["127.0.0.1", "", "169.254.1.1", "::1"] {
            assert_eq!(
                pod_location(&pod(ip), "").expect_err("not allowed").message,
                "address not allowed",
                "{ip:?}"
            );
        }
    }
}

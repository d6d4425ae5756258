//! kube-proxy's service health server (pkg/proxy/healthcheck `service_health.go`): for every
//! `type: LoadBalancer` Service with `externalTrafficPolicy: Local`, an HTTP server on its
//! `spec.healthCheckNodePort` (all addresses, as kube-proxy's default `nodePortAddresses`)
//! that tells a load balancer whether this node has endpoints of it: any path answers `200`
//! when the node has ready local endpoints and the service proxy is healthy, `503` otherwise,
//! with the count in `X-Load-Balancing-Endpoint-Weight` and the body (indented with tabs, as
//! kube-proxy writes it)
//!
//! ```text
//! {
//!     "service": {
//!         "namespace": "default",
//!         "name": "web"
//!     },
//!     "localEndpoints": 1,
//!     "serviceProxyHealthy": true
//! }
//! ```
//!
//! Fed by the agent's one Services/EndpointSlices cache ([`crate::service_sync`]): each changed
//! Service updates its entry ([`HealthServers::update`]), O(changed Services).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr},
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::http::{HeaderValue, StatusCode, header};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::ResourceExt as _;

/// What one health-check port reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// The port (`spec.healthCheckNodePort`).
    pub port: u16,
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// Ready, not terminating endpoints of the Service on this node (distinct addresses).
    pub local_endpoints: usize,
}

/// The health check `service` needs on node `node_name`, with its EndpointSlices: `None` unless
/// it is a LoadBalancer with `externalTrafficPolicy: Local` and a `healthCheckNodePort`.
pub fn health_check(
    service: &Service,
    slices: &[&EndpointSlice],
    node_name: &str,
) -> Option<HealthCheck> {
    let spec = service.spec.as_ref()?;
    if spec.type_.as_deref() != Some("LoadBalancer")
        || spec.external_traffic_policy.as_deref() != Some("Local")
    {
        return None;
    }
    let port = u16::try_from(spec.health_check_node_port?)
        .ok()
        .filter(|p| *p != 0)?;
    let local: BTreeSet<&str> = slices
        .iter()
        .filter(|s| s.address_type == "IPv4")
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.node_name.as_deref() == Some(node_name))
        .filter(|e| {
            let conditions = e.conditions.as_ref();
            // Kubernetes: nil `ready` means ready.
            conditions.and_then(|c| c.ready).unwrap_or(true)
                && !conditions.and_then(|c| c.terminating).unwrap_or(false)
        })
        .filter_map(|e| e.addresses.first().map(String::as_str))
        .collect();
    Some(HealthCheck {
        port,
        namespace: service.namespace().unwrap_or_default(),
        name: service.name_any(),
        local_endpoints: local.len(),
    })
}

/// kube-proxy's answer for `check`: the status, the endpoint-weight header value and the body.
pub fn answer(check: &HealthCheck, proxy_healthy: bool) -> (StatusCode, String, String) {
    let status = if check.local_endpoints != 0 && proxy_healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let quote = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let body = format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {},\n\t\t\"name\": {}\n\t}},\n\t\
         \"localEndpoints\": {},\n\t\"serviceProxyHealthy\": {proxy_healthy}\n}}",
        quote(&check.namespace),
        quote(&check.name),
        check.local_endpoints
    );
    (status, check.local_endpoints.to_string(), body)
}

/// A served port: what it reports (shared with its server task) and the task.
struct Served {
    check: Arc<RwLock<HealthCheck>>,
    id: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The health-check servers of this node, by port.
pub struct HealthServers {
    bind: Ipv4Addr,
    served: BTreeMap<u16, Served>,
    /// Ports by Service id, to close a Service's port when it changes or goes.
    ports: BTreeMap<String, u16>,
    healthy: Arc<AtomicBool>,
    /// Ports whose bind failure was logged (logged once each).
    failed: BTreeSet<u16>,
}

impl std::fmt::Debug for HealthServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthServers")
            .field("bind", &self.bind)
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

impl HealthServers {
    /// Servers listening on `bind` (kube-proxy: every address) once ports are added.
    pub fn new(bind: Ipv4Addr) -> Self {
        Self {
            bind,
            served: BTreeMap::new(),
            ports: BTreeMap::new(),
            healthy: Arc::new(AtomicBool::new(false)),
            failed: BTreeSet::new(),
        }
    }

    /// Sets `serviceProxyHealthy` (the datapath holds the cache's state).
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Release);
    }

    /// The ports served now.
    pub fn ports(&self) -> Vec<u16> {
        self.served.keys().copied().collect()
    }

    /// Service `id` (`namespace/name`) now needs `check` (`None`: no health check): opens,
    /// moves, updates or closes its port. A port that cannot be bound is logged once and tried
    /// again on the next update. Call within a tokio runtime.
    pub fn update(&mut self, id: &str, check: Option<HealthCheck>) {
        let old_port = self.ports.get(id).copied();
        if old_port.is_some() && old_port != check.as_ref().map(|c| c.port) {
            if let Some(port) = old_port
                && self.served.get(&port).is_some_and(|s| s.id == id)
            {
                self.served.remove(&port);
                tracing::info!(service = id, port, "health check port closed");
            }
            self.ports.remove(id);
        }
        let Some(check) = check else {
            return;
        };
        let port = check.port;
        self.ports.insert(id.to_owned(), port);
        if let Some(served) = self.served.get(&port) {
            *served
                .check
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = check;
            return;
        }
        let listener = match std::net::TcpListener::bind(SocketAddr::from((self.bind, port)))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
        {
            Ok(listener) => listener,
            Err(error) => {
                if self.failed.insert(port) {
                    tracing::warn!(service = id, port, %error, "cannot serve the health check port");
                }
                return;
            }
        };
        self.failed.remove(&port);
        let shared = Arc::new(RwLock::new(check));
        let healthy = self.healthy.clone();
        let for_task = shared.clone();
        let app = axum::Router::new().fallback(move || {
            let check = for_task
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone();
            let healthy = healthy.load(Ordering::Acquire);
            async move {
                let (status, weight, body) = answer(&check, healthy);
                let weight =
                    HeaderValue::from_str(&weight).unwrap_or(HeaderValue::from_static("0"));
                (
                    status,
                    [
                        (
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        ),
                        (
                            header::X_CONTENT_TYPE_OPTIONS,
                            HeaderValue::from_static("nosniff"),
                        ),
                        (
                            header::HeaderName::from_static("x-load-balancing-endpoint-weight"),
                            weight,
                        ),
                    ],
                    body,
                )
            }
        });
        let task = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::warn!(port, %error, "health check server stopped");
            }
        });
        tracing::info!(service = id, port, "serving the health check port");
        self.served.insert(
            port,
            Served {
                check: shared,
                id: id.to_owned(),
                task,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(
            json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec}),
        )
        .unwrap()
    }

    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(
            json!({"metadata": {"name": "web-x", "namespace": "default"},
            "addressType": "IPv4", "endpoints": endpoints}),
        )
        .unwrap()
    }

    #[test]
    fn only_local_load_balancers_have_a_health_check_counting_local_ready_endpoints() {
        let endpoints = slice(json!([
            {"addresses": ["10.0.0.1"], "nodeName": "n1", "conditions": {"ready": true}},
            {"addresses": ["10.0.0.2"], "nodeName": "n1"},
            {"addresses": ["10.0.0.3"], "nodeName": "n1", "conditions": {"ready": false}},
            {"addresses": ["10.0.0.4"], "nodeName": "n1",
             "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.0.0.5"], "nodeName": "n2", "conditions": {"ready": true}},
        ]));
        let dup = slice(json!([{"addresses": ["10.0.0.1"], "nodeName": "n1"}]));
        let local = json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                           "healthCheckNodePort": 31000});
        for (spec, node, want) in [
            (local.clone(), "n1", Some(2)),
            (local.clone(), "n2", Some(1)),
            (local.clone(), "n3", Some(0)),
            (
                json!({"type": "LoadBalancer", "externalTrafficPolicy": "Cluster"}),
                "n1",
                None,
            ),
            (
                json!({"type": "NodePort", "externalTrafficPolicy": "Local"}),
                "n1",
                None,
            ),
            (
                json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local"}),
                "n1",
                None,
            ),
        ] {
            let got = health_check(&service(spec.clone()), &[&endpoints, &dup], node);
            assert_eq!(
                got.as_ref().map(|c| c.local_endpoints),
                want,
                "{spec} on {node}"
            );
            if let Some(check) = got {
                assert_eq!((check.port, check.name.as_str()), (31000, "web"));
            }
        }
    }

    #[test]
    fn answers_like_kube_proxy() {
        let check = |n| HealthCheck {
            port: 31000,
            namespace: "default".into(),
            name: "web".into(),
            local_endpoints: n,
        };
        let (status, weight, body) = answer(&check(1), true);
        assert_eq!((status, weight.as_str()), (StatusCode::OK, "1"));
        assert_eq!(
            body,
            "{\n\t\"service\": {\n\t\t\"namespace\": \"default\",\n\t\t\"name\": \"web\"\n\t},\n\t\
             \"localEndpoints\": 1,\n\t\"serviceProxyHealthy\": true\n}"
        );
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            parsed,
            json!({"service": {"namespace": "default", "name": "web"}, "localEndpoints": 1,
                   "serviceProxyHealthy": true})
        );
        assert_eq!(answer(&check(0), true).0, StatusCode::SERVICE_UNAVAILABLE);
        let (status, _, body) = answer(&check(2), false);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("\"serviceProxyHealthy\": false"), "{body}");
    }

    #[tokio::test]
    async fn a_port_opens_follows_the_count_and_closes() {
        // An ephemeral loopback port picked by the kernel, then released for the server.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut servers = HealthServers::new(Ipv4Addr::LOCALHOST);
        servers.set_healthy(true);
        let check = |n| HealthCheck {
            port,
            namespace: "default".into(),
            name: "web".into(),
            local_endpoints: n,
        };
        let get = || async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            stream
                .write_all(b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n")
                .await?;
            let mut text = String::new();
            stream.read_to_string(&mut text).await?;
            Ok::<_, std::io::Error>(text)
        };
        servers.update("default/web", Some(check(1)));
        assert_eq!(servers.ports(), [port]);
        let text = get().await.expect("the port answers");
        assert!(text.starts_with("HTTP/1.0 200"), "{text}");
        assert!(
            text.contains("x-load-balancing-endpoint-weight: 1"),
            "{text}"
        );
        servers.update("default/web", Some(check(0)));
        let text = get().await.expect("the port answers");
        assert!(text.starts_with("HTTP/1.0 503"), "{text}");
        assert!(text.contains("\"localEndpoints\": 0"), "{text}");
        servers.update("default/web", None);
        assert!(servers.ports().is_empty());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(get().await.is_err(), "the closed port refuses");
    }
}

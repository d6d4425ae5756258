//! From Kubernetes objects to load-balancer frontends: which address:port/proto pairs a Service
//! answers on in this node's datapath, and which backends each may use. Pure: no IO, no maps.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use keelson_ebpf_common::{ServiceKey, ServiceValue, backend_state, proto, scope, service_flags};

/// Default `sessionAffinityConfig.clientIP.timeoutSeconds` (Kubernetes: 3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT_S: u32 = 10_800;

/// What the node knows about itself when it turns Services into frontends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeContext {
    /// This node's name: endpoints with this `nodeName` are local.
    pub node_name: String,
    /// Addresses NodePorts answer on.
    pub node_addresses: Vec<Ipv4Addr>,
}

/// A backend as one frontend sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAddr {
    /// Pod address.
    pub address: Ipv4Addr,
    /// Target port.
    pub port: u16,
    /// [`proto`] number.
    pub proto: u8,
    /// [`backend_state`].
    pub state: u8,
    /// The pod runs on this node.
    pub local: bool,
}

/// Identity of a frontend: the `SERVICES` header key without the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrontendKey {
    /// Address clients use.
    pub address: Ipv4Addr,
    /// Port clients use.
    pub port: u16,
    /// [`proto`] number.
    pub proto: u8,
    /// [`scope`].
    pub scope: u8,
}

impl FrontendKey {
    /// The `SERVICES` key of this frontend's header (slot 0) or of one of its backend slots.
    pub fn service_key(&self, slot: u16) -> ServiceKey {
        ServiceKey {
            address_be: u32::from(self.address).to_be(),
            port_be: self.port.to_be(),
            proto: self.proto,
            scope: self.scope,
            slot,
            _pad: 0,
        }
    }

    /// The frontend a `SERVICES` key belongs to.
    pub fn of(key: &ServiceKey) -> Self {
        Self {
            address: Ipv4Addr::from(u32::from_be(key.address_be)),
            port: u16::from_be(key.port_be),
            proto: key.proto,
            scope: key.scope,
        }
    }
}

/// Groups a dump of the `SERVICES` map by frontend: each header with its backend ids in slot
/// order (slots beyond the header's count, left by an interrupted update, are dropped).
pub(super) fn group_services(
    entries: impl IntoIterator<Item = (ServiceKey, ServiceValue)>,
) -> BTreeMap<FrontendKey, (ServiceValue, Vec<(u16, u32)>)> {
    let mut headers = BTreeMap::new();
    let mut slots: BTreeMap<FrontendKey, BTreeMap<u16, u32>> = BTreeMap::new();
    for (key, value) in entries {
        let frontend = FrontendKey::of(&key);
        if key.slot == 0 {
            headers.insert(frontend, value);
        } else {
            slots
                .entry(frontend)
                .or_default()
                .insert(key.slot, value.backend_id);
        }
    }
    headers
        .into_iter()
        .map(|(frontend, header)| {
            let ids = slots
                .remove(&frontend)
                .unwrap_or_default()
                .into_iter()
                .filter(|(slot, _)| *slot <= header.count)
                .collect();
            (frontend, (header, ids))
        })
        .collect()
}

/// One frontend with the backends it balances over, in a stable (sorted) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frontend {
    /// Where it answers.
    pub key: FrontendKey,
    /// [`service_flags`].
    pub flags: u16,
    /// Affinity timeout when [`service_flags::AFFINITY`] is set.
    pub affinity_timeout_s: u32,
    /// Backends new connections may use: the ready ones, or the serving-terminating ones when
    /// none is ready. Empty: the frontend refuses connections.
    pub backends: Vec<BackendAddr>,
}

/// Computes the frontends of one Service from it and its EndpointSlices.
///
/// Services without a virtual IP (headless, ExternalName) have none. Only IPv4 and TCP/UDP are
/// handled; other ports are left to the kernel untouched.
pub fn frontends(
    service: &Service,
    slices: &[&EndpointSlice],
    node: &NodeContext,
) -> Vec<Frontend> {
    let Some(spec) = service.spec.as_ref() else {
        return Vec::new();
    };
    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    if service_type == "ExternalName" {
        return Vec::new();
    }
    let cluster_ips: Vec<Ipv4Addr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|ip| ip.parse().ok())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let external_ips: BTreeSet<Ipv4Addr> = spec
        .external_ips
        .iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .chain(
            service
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|ingress| ingress.ip.as_deref()?.parse().ok()),
        )
        .collect();
    let node_ports_enabled = matches!(service_type, "NodePort" | "LoadBalancer");
    let (mut flags, affinity_timeout_s) = if spec.session_affinity.as_deref() == Some("ClientIP") {
        let timeout = spec
            .session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_S);
        (service_flags::AFFINITY, timeout)
    } else {
        (0, 0)
    };
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    if external_local {
        flags |= service_flags::EXTERNAL_LOCAL;
    }

    let mut out = Vec::new();
    for port in spec.ports.iter().flatten() {
        let Some(protocol) = protocol_number(port.protocol.as_deref()) else {
            continue;
        };
        let Ok(service_port) = u16::try_from(port.port) else {
            continue;
        };
        let all = backends_for_port(slices, port.name.as_deref(), protocol, node);
        let local: Vec<BackendAddr> = all.iter().copied().filter(|b| b.local).collect();
        let internal = if internal_local { &local } else { &all };
        let external = if external_local { &local } else { &all };
        let frontend = |address, port, scope, extra_flags, backends: &Vec<BackendAddr>| Frontend {
            key: FrontendKey {
                address,
                port,
                proto: protocol,
                scope,
            },
            flags: flags | extra_flags,
            affinity_timeout_s,
            backends: backends.clone(),
        };
        for &ip in &cluster_ips {
            out.push(frontend(ip, service_port, scope::INTERNAL, 0, internal));
        }
        // Traffic from outside the node (TC on the uplink) uses the external scope and Maglev, so
        // every node sends a flow to the same backend; in-node clients use the internal scope.
        for &ip in &external_ips {
            let extra = service_flags::EXTERNAL;
            out.push(frontend(
                ip,
                service_port,
                scope::EXTERNAL,
                extra | service_flags::MAGLEV,
                external,
            ));
            out.push(frontend(ip, service_port, scope::INTERNAL, extra, &all));
        }
        if node_ports_enabled
            && let Some(node_port) = port.node_port.and_then(|p| u16::try_from(p).ok())
        {
            let extra = service_flags::NODE_PORT;
            for &ip in &node.node_addresses {
                out.push(frontend(
                    ip,
                    node_port,
                    scope::EXTERNAL,
                    extra | service_flags::MAGLEV,
                    external,
                ));
                out.push(frontend(ip, node_port, scope::INTERNAL, extra, &all));
            }
        }
    }
    out.sort_by_key(|f| f.key);
    out.dedup_by_key(|f| f.key);
    out
}

/// `TCP`/`UDP` (default TCP) to its protocol number; `None` for SCTP and unknown values.
fn protocol_number(protocol: Option<&str>) -> Option<u8> {
    match protocol.unwrap_or("TCP") {
        "TCP" => Some(proto::TCP),
        "UDP" => Some(proto::UDP),
        _ => None,
    }
}

/// The backends of one service port: the EndpointSlice port with the same name and protocol
/// supplies the target port (this is how named `targetPort`s resolve). Ready endpoints when there
/// are any; otherwise the serving-terminating ones.
fn backends_for_port(
    slices: &[&EndpointSlice],
    port_name: Option<&str>,
    protocol: u8,
    node: &NodeContext,
) -> Vec<BackendAddr> {
    let wanted_name = port_name.unwrap_or("");
    let mut ready = BTreeSet::new();
    let mut terminating = BTreeSet::new();
    for slice in slices {
        if slice.address_type != "IPv4" {
            continue;
        }
        let Some(port) = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == wanted_name
                && protocol_number(p.protocol.as_deref()) == Some(protocol)
        }) else {
            continue;
        };
        let Some(target_port) = port.port.and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let conditions = endpoint.conditions.as_ref();
            // Kubernetes: nil `ready` means ready; nil `serving` means the same as `ready`.
            let is_ready = conditions.and_then(|c| c.ready).unwrap_or(true);
            let is_terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
            let is_serving = conditions.and_then(|c| c.serving).unwrap_or(is_ready);
            let local = endpoint.node_name.as_deref() == Some(node.node_name.as_str());
            let Some(address) = endpoint
                .addresses
                .iter()
                .find_map(|a| a.parse::<Ipv4Addr>().ok())
            else {
                continue;
            };
            let backend = |state| BackendAddr {
                address,
                port: target_port,
                proto: protocol,
                state,
                local,
            };
            if is_ready && !is_terminating {
                ready.insert(backend(backend_state::ACTIVE));
            } else if is_serving && is_terminating {
                terminating.insert(backend(backend_state::TERMINATING));
            }
        }
    }
    if ready.is_empty() {
        terminating.into_iter().collect()
    } else {
        ready.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use keelson_ebpf_common::{backend_state, proto, scope, service_flags};
    use serde_json::json;

    use super::*;

    fn node() -> NodeContext {
        NodeContext {
            node_name: "node-a".into(),
            node_addresses: vec![Ipv4Addr::new(192, 168, 0, 10)],
        }
    }

    fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": spec,
        }))
        .expect("valid Service")
    }

    /// Endpoints as (address, node, ready, serving, terminating).
    fn slice(
        address_type: &str,
        ports: serde_json::Value,
        endpoints: &[(&str, &str, bool, bool, bool)],
    ) -> EndpointSlice {
        let endpoints: Vec<_> = endpoints
            .iter()
            .map(|(ip, node, ready, serving, terminating)| {
                json!({"addresses": [ip], "nodeName": node,
                       "conditions": {"ready": ready, "serving": serving, "terminating": terminating}})
            })
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "default"},
            "addressType": address_type,
            "ports": ports,
            "endpoints": endpoints,
        }))
        .expect("valid EndpointSlice")
    }

    fn addresses(frontend: &Frontend) -> Vec<String> {
        frontend
            .backends
            .iter()
            .map(|b| format!("{}:{}", b.address, b.port))
            .collect()
    }

    #[test]
    fn cluster_ip_resolves_named_target_ports_through_the_slice() {
        let svc = service(json!({
            "clusterIP": "10.96.0.10",
            "ports": [{"name": "http", "port": 80, "targetPort": "web"}],
        }));
        let s = slice(
            "IPv4",
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
            &[
                ("10.244.0.5", "node-a", true, true, false),
                ("10.244.1.5", "node-b", true, true, false),
            ],
        );
        let f = frontends(&svc, &[&s], &node());
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].key,
            FrontendKey {
                address: Ipv4Addr::new(10, 96, 0, 10),
                port: 80,
                proto: proto::TCP,
                scope: scope::INTERNAL
            }
        );
        assert_eq!(addresses(&f[0]), ["10.244.0.5:8080", "10.244.1.5:8080"]);
        assert!(f[0].backends[0].local && !f[0].backends[1].local);
        assert_eq!(f[0].flags, 0);
    }

    #[test]
    fn headless_external_name_sctp_and_ipv6_produce_nothing() {
        let ports = json!([{"name": "", "port": 80, "protocol": "TCP"}]);
        let eps = [("10.244.0.5", "node-a", true, true, false)];
        for spec in [
            json!({"clusterIP": "None", "ports": [{"port": 80}]}),
            json!({"type": "ExternalName", "externalName": "example.com"}),
            json!({"clusterIP": "10.96.0.1", "ports": [{"port": 80, "protocol": "SCTP"}]}),
        ] {
            let s = slice("IPv4", ports.clone(), &eps);
            assert_eq!(
                frontends(&service(spec.clone()), &[&s], &node()),
                vec![],
                "{spec}"
            );
        }
        let v6 = slice("IPv6", ports, &[("fd00::5", "node-a", true, true, false)]);
        let f = frontends(
            &service(json!({"clusterIP": "10.96.0.1", "ports": [{"port": 80}]})),
            &[&v6],
            &node(),
        );
        assert_eq!(f.len(), 1);
        assert!(
            f[0].backends.is_empty(),
            "IPv6 endpoints are not IPv4 backends"
        );
    }

    #[test]
    fn ready_endpoints_win_and_serving_terminating_ones_are_the_fallback() {
        let svc = service(json!({"clusterIP": "10.96.0.1", "ports": [{"port": 80}]}));
        let ports = json!([{"port": 80, "protocol": "TCP"}]);
        let mixed = slice(
            "IPv4",
            ports.clone(),
            &[
                ("10.0.0.1", "node-a", true, true, false),
                ("10.0.0.2", "node-a", false, true, true),
                ("10.0.0.3", "node-a", false, false, false),
            ],
        );
        let f = frontends(&svc, &[&mixed], &node());
        assert_eq!(addresses(&f[0]), ["10.0.0.1:80"]);
        let draining = slice(
            "IPv4",
            ports,
            &[
                ("10.0.0.2", "node-a", false, true, true),
                ("10.0.0.4", "node-a", false, false, true),
            ],
        );
        let f = frontends(&svc, &[&draining], &node());
        assert_eq!(addresses(&f[0]), ["10.0.0.2:80"]);
        assert_eq!(f[0].backends[0].state, backend_state::TERMINATING);
    }

    #[test]
    fn node_ports_answer_on_node_addresses_with_traffic_policies() {
        let svc = service(json!({
            "type": "NodePort",
            "clusterIP": "10.96.0.20",
            "externalTrafficPolicy": "Local",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "UDP"}],
        }));
        let s = slice(
            "IPv4",
            json!([{"port": 53, "protocol": "UDP"}]),
            &[
                ("10.244.0.5", "node-a", true, true, false),
                ("10.244.1.5", "node-b", true, true, false),
            ],
        );
        let f = frontends(&svc, &[&s], &node());
        let keys: Vec<_> = f
            .iter()
            .map(|f| (f.key.address.to_string(), f.key.port, f.key.scope))
            .collect();
        assert_eq!(
            keys,
            [
                ("10.96.0.20".to_owned(), 80, scope::INTERNAL),
                ("192.168.0.10".to_owned(), 30080, scope::INTERNAL),
                ("192.168.0.10".to_owned(), 30080, scope::EXTERNAL),
            ]
        );
        let external = f
            .iter()
            .find(|f| f.key.scope == scope::EXTERNAL)
            .expect("external");
        assert_eq!(
            addresses(external),
            ["10.244.0.5:53"],
            "Local: only this node's pods"
        );
        assert!(external.flags & service_flags::NODE_PORT != 0);
        assert!(external.flags & service_flags::EXTERNAL_LOCAL != 0);
        assert!(external.flags & service_flags::MAGLEV != 0);
        let internal = f
            .iter()
            .find(|f| f.key.port == 30080 && f.key.scope == scope::INTERNAL)
            .expect("internal");
        assert_eq!(internal.flags & service_flags::MAGLEV, 0);
        assert_eq!(
            internal.backends.len(),
            2,
            "in-node clients reach every backend"
        );
    }

    #[test]
    fn internal_traffic_policy_local_keeps_cluster_ip_traffic_on_the_node() {
        let svc = service(json!({
            "clusterIP": "10.96.0.1",
            "internalTrafficPolicy": "Local",
            "ports": [{"port": 80}],
        }));
        let s = slice(
            "IPv4",
            json!([{"port": 80}]),
            &[
                ("10.244.0.5", "node-a", true, true, false),
                ("10.244.1.5", "node-b", true, true, false),
            ],
        );
        let f = frontends(&svc, &[&s], &node());
        assert_eq!(addresses(&f[0]), ["10.244.0.5:80"]);
    }

    #[test]
    fn affinity_external_ips_and_load_balancer_ingress() {
        let mut svc = service(json!({
            "type": "LoadBalancer",
            "clusterIP": "10.96.0.30",
            "externalIPs": ["203.0.113.7"],
            "sessionAffinity": "ClientIP",
            "ports": [{"port": 443}],
        }));
        svc.status = Some(
            serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}]}}))
                .expect("valid status"),
        );
        let f = frontends(&svc, &[], &node());
        let external: Vec<String> = f
            .iter()
            .filter(|f| f.flags & service_flags::EXTERNAL != 0 && f.key.scope == scope::EXTERNAL)
            .map(|f| f.key.address.to_string())
            .collect();
        assert_eq!(external, ["198.51.100.9", "203.0.113.7"]);
        assert!(f.iter().all(|f| f.flags & service_flags::AFFINITY != 0));
        assert!(
            f.iter()
                .all(|f| f.affinity_timeout_s == DEFAULT_AFFINITY_TIMEOUT_S)
        );
        assert!(f.iter().all(|f| f.backends.is_empty()), "no slices: refuse");
    }
}

//! `hostPort`s of this node's pods, served by the load balancer as Cilium does: each mapping is
//! a frontend on the node's address(es) whose one backend is the pod's `IP:containerPort`, in
//! both scopes (socket-LB and pods' veths for clients on the node, `tc_from_netdev` for clients
//! outside it). No iptables, no proxy process.
//!
//! [`host_port_mappings`] and [`host_port_frontends`] are pure; [`HostPorts`] is the pod runner's
//! handle: it keeps each pod's mappings and applies the difference to the shared
//! [`LoadBalancer`] under the owner [`owner`]`(uid)`, so a pod's frontends are added, changed and
//! removed like one Service's.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::{Arc, Mutex, OnceLock, PoisonError},
};

use k8s_openapi::api::core::v1::Pod;
use keelson_ebpf_common::{backend_state, proto, scope, service_flags};

use super::{BackendAddr, Frontend, FrontendKey, LoadBalancer};

/// One `hostPort` of a pod on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPortMapping {
    /// `hostIP`; `None` when unset or `0.0.0.0`: every address of the node.
    pub host_ip: Option<Ipv4Addr>,
    /// `hostPort`.
    pub host_port: u16,
    /// [`proto`] number.
    pub proto: u8,
    /// The pod's address.
    pub pod_ip: Ipv4Addr,
    /// `containerPort`.
    pub container_port: u16,
}

/// The load balancer owner of pod `uid`'s host-port frontends. Service owners are
/// `namespace/name` and never contain `:`, so the two never collide.
pub fn owner(uid: &str) -> String {
    format!("hostport:{uid}")
}

/// The `hostPort` mappings of `pod` at `pod_ip`, sorted and without duplicates. A pod on the
/// node's network (`hostNetwork`) binds its ports on the node itself and needs none; ports
/// without a `hostPort`, SCTP ports and IPv6 `hostIP`s are not served.
pub fn host_port_mappings(pod: &Pod, pod_ip: Ipv4Addr) -> Vec<HostPortMapping> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    if spec.host_network == Some(true) {
        return Vec::new();
    }
    let mut out = BTreeSet::new();
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    for port in containers.flat_map(|c| c.ports.iter().flatten()) {
        let Some(host_port) = port
            .host_port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0)
        else {
            continue;
        };
        let Ok(container_port) = u16::try_from(port.container_port) else {
            continue;
        };
        let protocol = match port.protocol.as_deref().unwrap_or("TCP") {
            "TCP" => proto::TCP,
            "UDP" => proto::UDP,
            _ => continue,
        };
        let host_ip = match port.host_ip.as_deref().unwrap_or("") {
            "" => None,
            text => match text.parse::<Ipv4Addr>() {
                Ok(ip) if ip.is_unspecified() => None,
                Ok(ip) => Some(ip),
                Err(_) => continue,
            },
        };
        out.insert(HostPortMapping {
            host_ip,
            host_port,
            proto: protocol,
            pod_ip,
            container_port,
        });
    }
    out.into_iter().collect()
}

/// The frontends serving `mappings` on a node with `node_addresses`: per address, an internal
/// one (clients on the node) and an external one (clients outside it, which keep their own
/// address: the backend is on this node, so its replies come back through it anyway).
pub fn host_port_frontends(
    mappings: &[HostPortMapping],
    node_addresses: &[Ipv4Addr],
) -> Vec<Frontend> {
    let mut out = Vec::new();
    for mapping in mappings {
        let backend = BackendAddr {
            address: mapping.pod_ip,
            port: mapping.container_port,
            proto: mapping.proto,
            state: backend_state::ACTIVE,
            local: true,
        };
        let addresses = match mapping.host_ip {
            Some(ip) => vec![ip],
            None => node_addresses.to_vec(),
        };
        for address in addresses {
            for (frontend_scope, extra) in [
                (scope::INTERNAL, 0),
                (scope::EXTERNAL, service_flags::EXTERNAL_LOCAL),
            ] {
                out.push(Frontend {
                    key: FrontendKey {
                        address,
                        port: mapping.host_port,
                        proto: mapping.proto,
                        scope: frontend_scope,
                    },
                    flags: service_flags::HOST_PORT | extra,
                    affinity_timeout_s: 0,
                    backends: vec![backend],
                });
            }
        }
    }
    out.sort_by_key(|f| f.key);
    out.dedup_by_key(|f| f.key);
    out
}

/// Where host-port frontends go: the agent's load balancer and the node's addresses.
#[derive(Debug)]
struct Target {
    lb: Arc<Mutex<LoadBalancer>>,
    node_addresses: Vec<Ipv4Addr>,
}

/// The pod runner's handle on this node's host ports: what each pod asks for, applied to the
/// load balancer once [`Self::connect`]ed (before that, or without a datapath, only recorded).
#[derive(Debug, Default)]
pub struct HostPorts {
    target: OnceLock<Target>,
    pods: Mutex<BTreeMap<String, Vec<HostPortMapping>>>,
}

impl HostPorts {
    /// Applies host ports to `lb` from now on (the ones recorded so far at once), answering on
    /// `node_addresses` for mappings without a `hostIP`. Only the first call has an effect.
    pub fn connect(&self, lb: Arc<Mutex<LoadBalancer>>, node_addresses: Vec<Ipv4Addr>) {
        if self.target.set(Target { lb, node_addresses }).is_err() {
            return;
        }
        let pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        for (uid, mappings) in pods.iter() {
            self.apply(uid, mappings);
        }
    }

    /// Pod `uid` runs with address `pod_ip` (`None`: it has none yet, or shares the node's):
    /// serves its host ports there. Cheap when nothing changed, so it may be called on every
    /// sync of the pod.
    pub fn publish(&self, uid: &str, pod: &Pod, pod_ip: Option<Ipv4Addr>) {
        let mappings = pod_ip
            .map(|ip| host_port_mappings(pod, ip))
            .unwrap_or_default();
        let mut pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        let unchanged = match pods.get(uid) {
            Some(current) => *current == mappings,
            None => mappings.is_empty(),
        };
        if unchanged {
            return;
        }
        self.apply(uid, &mappings);
        if mappings.is_empty() {
            pods.remove(uid);
        } else {
            pods.insert(uid.to_owned(), mappings);
        }
    }

    /// Pod `uid` stopped: its host ports no longer answer. Idempotent.
    pub fn withdraw(&self, uid: &str) {
        let mut pods = self.pods.lock().unwrap_or_else(PoisonError::into_inner);
        if pods.remove(uid).is_some() {
            self.apply(uid, &[]);
        }
    }

    /// The mappings of pod `uid` as last published.
    pub fn of(&self, uid: &str) -> Vec<HostPortMapping> {
        self.pods
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(uid)
            .cloned()
            .unwrap_or_default()
    }

    fn apply(&self, uid: &str, mappings: &[HostPortMapping]) {
        let Some(target) = self.target.get() else {
            return;
        };
        let frontends = host_port_frontends(mappings, &target.node_addresses);
        let updated = target
            .lb
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .update(&owner(uid), frontends);
        match updated {
            Ok(writes) if writes > 0 => {
                tracing::info!(
                    pod = uid,
                    ports = mappings.len(),
                    writes,
                    "host ports updated"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::error!(
                pod = uid,
                error = %crate::error_chain(&error),
                "host ports update failed"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 7);
    const NODE: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 168, 0, 10), Ipv4Addr::new(10, 0, 0, 10)];

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "web", "uid": "u1"}, "spec": spec}))
            .expect("valid Pod")
    }

    fn with_ports(ports: serde_json::Value) -> Pod {
        pod(json!({"containers": [{"name": "c", "image": "i", "ports": ports}]}))
    }

    fn mapping(
        host_ip: Option<[u8; 4]>,
        host_port: u16,
        protocol: u8,
        container_port: u16,
    ) -> HostPortMapping {
        HostPortMapping {
            host_ip: host_ip.map(Ipv4Addr::from),
            host_port,
            proto: protocol,
            pod_ip: POD_IP,
            container_port,
        }
    }

    #[test]
    fn mappings_of_a_pod() {
        let cases = [
            (
                "hostPort with defaults: TCP on every node address",
                json!([{"containerPort": 80, "hostPort": 8080}]),
                vec![mapping(None, 8080, proto::TCP, 80)],
            ),
            (
                "hostIP 0.0.0.0 is every address; a specific hostIP only itself; UDP",
                json!([
                    {"containerPort": 53, "hostPort": 5353, "protocol": "UDP", "hostIP": "0.0.0.0"},
                    {"containerPort": 80, "hostPort": 80, "hostIP": "192.168.0.10"},
                ]),
                vec![
                    mapping(None, 5353, proto::UDP, 53),
                    mapping(Some([192, 168, 0, 10]), 80, proto::TCP, 80),
                ],
            ),
            (
                "no hostPort, hostPort 0, SCTP and an IPv6 hostIP are not served",
                json!([
                    {"containerPort": 80},
                    {"containerPort": 81, "hostPort": 0},
                    {"containerPort": 82, "hostPort": 82, "protocol": "SCTP"},
                    {"containerPort": 83, "hostPort": 83, "hostIP": "fd00::1"},
                ]),
                vec![],
            ),
        ];
        for (what, ports, expected) in cases {
            assert_eq!(
                host_port_mappings(&with_ports(ports), POD_IP),
                expected,
                "{what}"
            );
        }
    }

    #[test]
    fn host_network_pods_and_init_containers() {
        let host_network = pod(json!({
            "hostNetwork": true,
            "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80, "hostPort": 80}]}],
        }));
        assert_eq!(host_port_mappings(&host_network, POD_IP), vec![]);
        let sidecar = pod(json!({
            "initContainers": [{"name": "s", "image": "i", "restartPolicy": "Always",
                                "ports": [{"containerPort": 9000, "hostPort": 9000}]}],
            "containers": [{"name": "c", "image": "i"}],
        }));
        assert_eq!(
            host_port_mappings(&sidecar, POD_IP),
            vec![mapping(None, 9000, proto::TCP, 9000)]
        );
    }

    #[test]
    fn frontends_per_node_address_in_both_scopes() {
        let f = host_port_frontends(
            &[
                mapping(None, 8080, proto::TCP, 80),
                mapping(Some([192, 168, 0, 10]), 5353, proto::UDP, 53),
            ],
            &NODE,
        );
        let keys: Vec<String> = f
            .iter()
            .map(|f| {
                format!(
                    "{}:{}/{} scope {} -> {}",
                    f.key.address,
                    f.key.port,
                    f.key.proto,
                    f.key.scope,
                    f.backends
                        .iter()
                        .map(|b| format!("{}:{}", b.address, b.port))
                        .collect::<Vec<_>>()
                        .join(",")
                )
            })
            .collect();
        assert_eq!(
            keys,
            [
                "10.0.0.10:8080/6 scope 0 -> 10.244.0.7:80",
                "10.0.0.10:8080/6 scope 1 -> 10.244.0.7:80",
                "192.168.0.10:5353/17 scope 0 -> 10.244.0.7:53",
                "192.168.0.10:5353/17 scope 1 -> 10.244.0.7:53",
                "192.168.0.10:8080/6 scope 0 -> 10.244.0.7:80",
                "192.168.0.10:8080/6 scope 1 -> 10.244.0.7:80",
            ]
        );
        for frontend in &f {
            assert_ne!(frontend.flags & service_flags::HOST_PORT, 0);
            assert_eq!(frontend.flags & service_flags::MAGLEV, 0);
            let external = frontend.key.scope == scope::EXTERNAL;
            assert_eq!(
                frontend.flags & service_flags::EXTERNAL_LOCAL != 0,
                external,
                "clients from outside keep their address (no SNAT)"
            );
            assert!(frontend.backends.iter().all(|b| b.local));
        }
        assert_eq!(host_port_frontends(&[], &NODE), vec![]);
    }

    #[test]
    fn publish_and_withdraw_record_what_the_pod_asks_for() {
        let ports = HostPorts::default();
        let web = with_ports(json!([{"containerPort": 80, "hostPort": 8080}]));
        ports.publish("u1", &web, None);
        assert_eq!(ports.of("u1"), vec![], "no address yet: nothing served");
        ports.publish("u1", &web, Some(POD_IP));
        assert_eq!(ports.of("u1"), vec![mapping(None, 8080, proto::TCP, 80)]);
        let moved = Ipv4Addr::new(10, 244, 0, 9);
        ports.publish("u1", &web, Some(moved));
        assert_eq!(ports.of("u1")[0].pod_ip, moved, "a new sandbox address");
        ports.withdraw("u1");
        assert_eq!(ports.of("u1"), vec![]);
        ports.withdraw("u1");
    }
}

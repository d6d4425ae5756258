//! Test-only: two independent answers to "is this packet allowed?".
//!
//! [`allowed`] is written from Kubernetes' NetworkPolicy semantics alone: it iterates the
//! policies (raw k8s-openapi objects) for the source pod's egress and the destination pod's
//! ingress, with no identities and none of the compiler's code. [`simulate`] answers from
//! compiled map contents the way the eBPF side looks them up: at the source's node (if the
//! source is a policed pod there) IPCACHE for the destination's identity (a miss is WORLD,
//! HOST is always allowed), then POLICY with that identity and then with ANY, longest prefix
//! first; at the destination's node the same for ingress.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::util::intstr::IntOrString,
};
use keelson_api::{cidr::Ipv4Cidr, selectors::label_selector_matches};
use keelson_ebpf_common::{
    POLICY_PREFIX_ANY_PORT, POLICY_PREFIX_ANY_PROTO, POLICY_PREFIX_FULL, endpoint_flags, identity,
};

use super::{
    compile::{Desired, PolicyKey},
    identity::IpcacheKey,
    model::{PodInfo, PolicyModel},
    rules::Direction,
};

/// The cluster: the model's pods, namespaces and policies, and every node's addresses.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Pods, namespaces and policies (its `node` is ignored).
    pub model: PolicyModel,
    /// Each node's addresses, by node name.
    pub nodes: BTreeMap<String, Vec<Ipv4Addr>>,
}

impl Cluster {
    /// The model as node `name` compiles it.
    pub fn node_model(&self, name: &str) -> PolicyModel {
        PolicyModel {
            node: super::model::NodeInfo {
                name: name.to_owned(),
                addresses: self.nodes.get(name).cloned().unwrap_or_default(),
            },
            ..self.model.clone()
        }
    }

    fn pod(&self, ip: Ipv4Addr) -> Option<&PodInfo> {
        self.model.pods.iter().find(|p| p.ip == ip)
    }
}

fn cidr_contains(text: &str, ip: Ipv4Addr) -> bool {
    let Some((address, _)) = text.split_once('/') else {
        return false;
    };
    if !matches!(address.parse::<IpAddr>(), Ok(IpAddr::V4(_))) {
        return false;
    }
    Ipv4Cidr::parse_clearing_host_bits(text).is_ok_and(|c| c.contains(ip))
}

fn peer_matches(
    cluster: &Cluster,
    policy_namespace: &str,
    peer: &NetworkPolicyPeer,
    ip: Ipv4Addr,
) -> bool {
    if let Some(block) = &peer.ip_block {
        return cidr_contains(&block.cidr, ip)
            && !block.except.iter().flatten().any(|e| cidr_contains(e, ip));
    }
    let Some(pod) = cluster.pod(ip) else {
        return false;
    };
    if peer.pod_selector.is_none() && peer.namespace_selector.is_none() {
        return false;
    }
    let namespace_ok = match &peer.namespace_selector {
        Some(s) => label_selector_matches(Some(s), &cluster.model.namespace_labels(&pod.namespace)),
        None => pod.namespace == policy_namespace,
    };
    namespace_ok
        && peer
            .pod_selector
            .as_ref()
            .is_none_or(|s| label_selector_matches(Some(s), &pod.labels))
}

fn port_matches(port: &NetworkPolicyPort, dst: Option<&PodInfo>, proto: u8, number: u16) -> bool {
    let protocol = match port.protocol.as_deref().unwrap_or("TCP") {
        "TCP" => keelson_ebpf_common::proto::TCP,
        "UDP" => keelson_ebpf_common::proto::UDP,
        "SCTP" => keelson_ebpf_common::proto::SCTP,
        _ => return false,
    };
    if protocol != proto {
        return false;
    }
    match &port.port {
        None => true,
        Some(IntOrString::Int(n)) => match port.end_port {
            Some(end) => *n <= i32::from(number) && i32::from(number) <= end,
            None => *n == i32::from(number),
        },
        Some(IntOrString::String(name)) => {
            dst.and_then(|d| d.named_port(name, proto)) == Some(number)
        }
    }
}

/// A rule's peers and ports.
type RuleParts = (
    Option<Vec<NetworkPolicyPeer>>,
    Option<Vec<NetworkPolicyPort>>,
);

fn types(policy: &NetworkPolicy) -> (bool, bool) {
    let spec = policy.spec.clone().unwrap_or_default();
    match spec.policy_types.filter(|t| !t.is_empty()) {
        Some(t) => (
            t.iter().any(|t| t == "Ingress"),
            t.iter().any(|t| t == "Egress"),
        ),
        None => (true, spec.egress.is_some_and(|e| !e.is_empty())),
    }
}

/// Whether `pod`'s traffic in `direction` with `peer` is allowed by the policies selecting it.
fn direction_allows(
    cluster: &Cluster,
    pod: &PodInfo,
    direction: Direction,
    peer: Ipv4Addr,
    proto: u8,
    port: u16,
) -> bool {
    let dst = match direction {
        Direction::Ingress => Some(pod),
        Direction::Egress => cluster.pod(peer),
    };
    let mut isolated = false;
    for policy in &cluster.model.policies {
        let namespace = policy.metadata.namespace.as_deref().unwrap_or_default();
        let spec = policy.spec.clone().unwrap_or_default();
        if namespace != pod.namespace
            || !label_selector_matches(Some(&spec.pod_selector.unwrap_or_default()), &pod.labels)
        {
            continue;
        }
        let (ingress, egress) = types(policy);
        let rules: Vec<RuleParts> = match direction {
            Direction::Ingress if ingress => spec
                .ingress
                .into_iter()
                .flatten()
                .map(|r| (r.from, r.ports))
                .collect(),
            Direction::Egress if egress => spec
                .egress
                .into_iter()
                .flatten()
                .map(|r| (r.to, r.ports))
                .collect(),
            _ => continue,
        };
        isolated = true;
        for (peers, ports) in rules {
            let peer_ok = match peers.filter(|p| !p.is_empty()) {
                None => true,
                Some(peers) => peers
                    .iter()
                    .any(|p| peer_matches(cluster, namespace, p, peer)),
            };
            let port_ok = match ports.filter(|p| !p.is_empty()) {
                None => true,
                Some(ports) => ports.iter().any(|p| port_matches(p, dst, proto, port)),
            };
            if peer_ok && port_ok {
                return true;
            }
        }
    }
    !isolated
}

fn own_node(cluster: &Cluster, pod: &PodInfo, address: Ipv4Addr) -> bool {
    cluster
        .nodes
        .get(&pod.node)
        .is_some_and(|a| a.contains(&address))
}

/// The source side: whether the policies selecting `src` (if a pod) let it send this.
pub fn egress_allowed(
    cluster: &Cluster,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    port: u16,
) -> bool {
    match cluster.pod(src) {
        Some(pod) if !own_node(cluster, pod, dst) => {
            direction_allows(cluster, pod, Direction::Egress, dst, proto, port)
        }
        _ => true,
    }
}

/// The destination side: whether the policies selecting `dst` (if a pod) let it receive this.
pub fn ingress_allowed(
    cluster: &Cluster,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    port: u16,
) -> bool {
    match cluster.pod(dst) {
        Some(pod) if !own_node(cluster, pod, src) => {
            direction_allows(cluster, pod, Direction::Ingress, src, proto, port)
        }
        _ => true,
    }
}

/// Kubernetes' answer (with keelson's rule that a pod and its own node may always talk:
/// Kubernetes requires it for ingress from the node, keelson also allows egress to it).
pub fn allowed(cluster: &Cluster, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, port: u16) -> bool {
    egress_allowed(cluster, src, dst, proto, port)
        && ingress_allowed(cluster, src, dst, proto, port)
}

/// IPCACHE's longest prefix match; a miss is WORLD.
pub fn ipcache_lookup(maps: &Desired, address: Ipv4Addr) -> u32 {
    (0..=32u8)
        .rev()
        .filter_map(|len| {
            let cidr = Ipv4Cidr::containing(address, len)?;
            maps.ipcache.get(&IpcacheKey::cidr(cidr)).copied()
        })
        .next()
        .unwrap_or(identity::WORLD)
}

/// POLICY's longest prefix match for a full key: the rule id of the entry found.
pub fn policy_lookup(
    maps: &Desired,
    endpoint: Ipv4Addr,
    peer: u32,
    direction: Direction,
    proto: u8,
    port: u16,
) -> Option<u32> {
    (POLICY_PREFIX_ANY_PORT..=POLICY_PREFIX_FULL)
        .rev()
        .chain([POLICY_PREFIX_ANY_PROTO])
        .find_map(|prefix| {
            let key = PolicyKey::new(endpoint, peer, direction, proto, port, prefix);
            maps.policy.get(&key).copied()
        })
}

/// One node's verdict for `endpoint` (a pod of that node) in `direction` with `peer`.
fn node_allows(
    maps: &Desired,
    endpoint: Ipv4Addr,
    direction: Direction,
    peer: Ipv4Addr,
    proto: u8,
    port: u16,
) -> bool {
    let Some(ep) = maps.endpoints.get(&endpoint) else {
        return true;
    };
    let flag = match direction {
        Direction::Ingress => endpoint_flags::INGRESS_ENFORCED,
        Direction::Egress => endpoint_flags::EGRESS_ENFORCED,
    };
    if ep.flags & flag == 0 {
        return true;
    }
    let id = ipcache_lookup(maps, peer);
    id == identity::HOST
        || policy_lookup(maps, endpoint, id, direction, proto, port).is_some()
        || policy_lookup(maps, endpoint, identity::ANY, direction, proto, port).is_some()
}

/// The datapath's answer from each node's map contents.
pub fn simulate(
    nodes: &BTreeMap<String, Desired>,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    port: u16,
) -> bool {
    nodes.values().all(|maps| {
        node_allows(maps, src, Direction::Egress, dst, proto, port)
            && node_allows(maps, dst, Direction::Ingress, src, proto, port)
    })
}

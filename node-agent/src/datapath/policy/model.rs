//! The compiler's inputs as plain data: the pods of every node, the namespaces and their labels,
//! the NetworkPolicies (k8s-openapi types, as the API serves them) and this node.
//!
//! [`PodInfo::from_pod`] and [`namespace_labels`] turn API objects into this form; everything
//! downstream ([`super::compile`], the reference evaluator) reads only these types.

use std::{
    borrow::Cow,
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
};

use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    networking::v1::NetworkPolicy,
};
use keelson_ebpf_common::proto;

/// The label the API server puts on every namespace, holding its name (Kubernetes'
/// `NamespaceDefaultLabelName`, GA since 1.22): what `namespaceSelector`s written for one
/// namespace match.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// A named container port of a pod (what a NetworkPolicy's `port: <name>` resolves to).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NamedPort {
    /// `ports[].name`.
    pub name: String,
    /// [`proto`] number of `ports[].protocol` (TCP when unset).
    pub proto: u8,
    /// `ports[].containerPort`.
    pub port: u16,
}

/// A pod with an address, as policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// The node it runs on (`spec.nodeName`).
    pub node: String,
    /// `status.podIP` (IPv4).
    pub ip: Ipv4Addr,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// The named ports of its containers.
    pub ports: Vec<NamedPort>,
}

impl PodInfo {
    /// The pod as policy sees it, or `None` when policy has nothing to say about its address:
    /// no IPv4 `status.podIP` yet, `hostNetwork` (its address is the node's, which is always
    /// [`keelson_ebpf_common::identity::HOST`] on its own node), or finished (`Succeeded`,
    /// `Failed`: its address may already belong to another pod).
    pub fn from_pod(pod: &Pod) -> Option<Self> {
        let spec = pod.spec.as_ref()?;
        if spec.host_network == Some(true) {
            return None;
        }
        let status = pod.status.as_ref()?;
        if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
            return None;
        }
        let ip = match status.pod_ip.as_deref()?.parse::<IpAddr>().ok()? {
            IpAddr::V4(ip) => ip,
            IpAddr::V6(_) => return None,
        };
        let mut ports: Vec<NamedPort> = spec
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                Some(NamedPort {
                    name: p.name.clone().filter(|n| !n.is_empty())?,
                    proto: protocol_number(p.protocol.as_deref())?,
                    port: u16::try_from(p.container_port).ok()?,
                })
            })
            .collect();
        ports.sort();
        ports.dedup();
        Some(Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            node: spec.node_name.clone().unwrap_or_default(),
            ip,
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            ports,
        })
    }

    /// The port number the pod's container port `name` has for protocol `proto`.
    pub fn named_port(&self, name: &str, proto: u8) -> Option<u16> {
        self.ports
            .iter()
            .find(|p| p.name == name && p.proto == proto)
            .map(|p| p.port)
    }
}

/// The [`proto`] number of a Kubernetes `protocol` (`TCP` when absent); `None` for a name
/// Kubernetes does not know.
pub fn protocol_number(protocol: Option<&str>) -> Option<u8> {
    match protocol.unwrap_or("TCP") {
        "TCP" => Some(proto::TCP),
        "UDP" => Some(proto::UDP),
        "SCTP" => Some(proto::SCTP),
        _ => None,
    }
}

/// A namespace's labels as selectors see them: its `metadata.labels` plus
/// [`NAMESPACE_NAME_LABEL`] (which the API server always sets).
pub fn namespace_labels(namespace: &Namespace) -> BTreeMap<String, String> {
    let name = namespace.metadata.name.clone().unwrap_or_default();
    let mut labels = namespace.metadata.labels.clone().unwrap_or_default();
    labels.insert(NAMESPACE_NAME_LABEL.to_owned(), name);
    labels
}

/// This node: whose pods are local, and which addresses are its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's name: pods with this [`PodInfo::node`] are local.
    pub name: String,
    /// Addresses of this node ([`keelson_ebpf_common::identity::HOST`]): its InternalIPs and
    /// the gateway address of its pod CIDR, which the host side of every pod's veth carries.
    /// Pods reach cluster DNS there (`--cluster-dns gateway`), and the node's own probes come
    /// from it.
    pub addresses: Vec<Ipv4Addr>,
}

/// Everything the compiler reads.
#[derive(Debug, Clone, Default)]
pub struct PolicyModel {
    /// Pods of every node with an address ([`PodInfo::from_pod`]). Two pods with one address:
    /// the first in the list is taken.
    pub pods: Vec<PodInfo>,
    /// Labels of each namespace by name ([`namespace_labels`]); a namespace not listed (not
    /// seen yet) has only [`NAMESPACE_NAME_LABEL`].
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Every NetworkPolicy of the cluster.
    pub policies: Vec<NetworkPolicy>,
    /// This node.
    pub node: NodeInfo,
}

impl PolicyModel {
    /// The labels of namespace `name` ([`Self::namespaces`], or only its name label).
    pub fn namespace_labels(&self, name: &str) -> BTreeMap<String, String> {
        labels_of(&self.namespaces, name).into_owned()
    }

    /// Whether `pod` runs on this node.
    pub fn is_local(&self, pod: &PodInfo) -> bool {
        pod.node == self.node.name
    }
}

/// The labels of namespace `name` in `namespaces` (as [`PolicyModel::namespaces`]), or only its
/// [`NAMESPACE_NAME_LABEL`] when it is not listed.
pub(super) fn labels_of<'a>(
    namespaces: &'a BTreeMap<String, BTreeMap<String, String>>,
    name: &str,
) -> Cow<'a, BTreeMap<String, String>> {
    namespaces.get(name).map_or_else(
        || {
            Cow::Owned(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_owned(),
                name.to_owned(),
            )]))
        },
        Cow::Borrowed,
    )
}

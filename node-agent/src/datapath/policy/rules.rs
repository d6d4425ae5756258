//! NetworkPolicies normalised for compilation: defaults applied (`policyTypes`, `protocol`),
//! selectors parsed once, ports and peers in the few shapes the datapath distinguishes.
//!
//! Anything a validated object cannot hold (an unknown protocol, an IPv6 or unparsable CIDR, a
//! selector Kubernetes would refuse) matches nothing: it is dropped from its list, and a list
//! that ends up empty allows nothing (never "everything", which an empty list means in the API).

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::{apis::meta::v1 as metav1, util::intstr::IntOrString},
};
use keelson_api::{cidr::Ipv4Cidr, selectors::LabelSelector};

use super::model::protocol_number;

/// Which way a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Traffic into the selected pods (`spec.ingress`, peers in `from`).
    Ingress,
    /// Traffic out of the selected pods (`spec.egress`, peers in `to`).
    Egress,
}

impl Direction {
    /// The [`keelson_ebpf_common::policy_direction`] value.
    pub const fn map_value(self) -> u8 {
        match self {
            Self::Ingress => keelson_ebpf_common::policy_direction::INGRESS,
            Self::Egress => keelson_ebpf_common::policy_direction::EGRESS,
        }
    }
}

impl std::fmt::Display for Direction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        })
    }
}

/// Which pods a selector peer's namespace part admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NamespaceMatch {
    /// Only the policy's own namespace (a peer with `podSelector` alone).
    Own(String),
    /// Namespaces whose labels the selector matches.
    Selector(LabelSelector),
}

/// A `podSelector` / `namespaceSelector` peer (either or both).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SelectorPeer {
    /// Canonical text: equal texts select the same pods (the identity feature's name).
    pub key: Arc<str>,
    pub namespaces: NamespaceMatch,
    /// `None`: every pod of the admitted namespaces.
    pub pods: Option<LabelSelector>,
}

impl SelectorPeer {
    /// Whether a pod of namespace `namespace` (labels `namespace_labels`) with `labels`
    /// is selected.
    pub fn matches(
        &self,
        namespace: &str,
        namespace_labels: &BTreeMap<String, String>,
        labels: &BTreeMap<String, String>,
    ) -> bool {
        let namespace_ok = match &self.namespaces {
            NamespaceMatch::Own(own) => own == namespace,
            NamespaceMatch::Selector(s) => s.matches(namespace_labels),
        };
        namespace_ok && self.pods.as_ref().is_none_or(|s| s.matches(labels))
    }
}

/// An `ipBlock` peer (IPv4).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct IpBlock {
    pub cidr: Ipv4Cidr,
    pub except: Vec<Ipv4Cidr>,
}

/// One peer of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Peer {
    Selector(Arc<SelectorPeer>),
    Block(Arc<IpBlock>),
}

/// One entry of a rule's `ports`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Port {
    /// Every port of the protocol (`port` unset).
    Every(u8),
    /// `port` (..=`endPort`), inclusive.
    Range(u8, u16, u16),
    /// A named container port.
    Named(u8, Arc<str>),
}

/// One rule of a policy.
#[derive(Debug, Clone)]
pub(super) struct Rule {
    /// Position in `spec.ingress` / `spec.egress`.
    pub index: usize,
    /// `None`: any peer (`from`/`to` empty or missing).
    pub peers: Option<Vec<Peer>>,
    /// `None`: every protocol and port (`ports` empty or missing).
    pub ports: Option<Vec<Port>>,
}

/// A NetworkPolicy, normalised.
#[derive(Debug, Clone)]
pub(super) struct Policy {
    pub namespace: String,
    pub name: String,
    /// `None`: a selector Kubernetes would refuse (selects nothing).
    pub target: Option<LabelSelector>,
    /// `Some` when `Ingress` is among the (defaulted) policy types.
    pub ingress: Option<Vec<Rule>>,
    /// `Some` when `Egress` is among the (defaulted) policy types.
    pub egress: Option<Vec<Rule>>,
}

impl Policy {
    /// The rules of `direction`, if the policy isolates that way.
    pub fn rules(&self, direction: Direction) -> Option<&[Rule]> {
        match direction {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }
}

/// Interns selector peers, so equal peers of different policies share one [`SelectorPeer`].
#[derive(Debug, Default)]
pub(super) struct Normaliser {
    peers: BTreeMap<Arc<str>, Arc<SelectorPeer>>,
    blocks: BTreeMap<(Ipv4Cidr, Vec<Ipv4Cidr>), Arc<IpBlock>>,
}

impl Normaliser {
    /// Every distinct selector peer seen.
    pub fn selector_peers(&self) -> impl Iterator<Item = &Arc<SelectorPeer>> {
        self.peers.values()
    }

    /// Every distinct ipBlock seen.
    pub fn blocks(&self) -> impl Iterator<Item = &Arc<IpBlock>> {
        self.blocks.values()
    }

    /// `policy`, normalised.
    pub fn policy(&mut self, policy: &NetworkPolicy) -> Policy {
        let namespace = policy.metadata.namespace.clone().unwrap_or_default();
        let name = policy.metadata.name.clone().unwrap_or_default();
        let spec = policy.spec.clone().unwrap_or_default();
        // An absent podSelector is the empty one (a value, not a pointer, in Kubernetes' Go
        // types): every pod of the namespace.
        let target =
            LabelSelector::from_label_selector(&spec.pod_selector.unwrap_or_default()).ok();
        let has_egress = spec.egress.as_ref().is_some_and(|e| !e.is_empty());
        // Kubernetes' SetDefaults_NetworkPolicy: Ingress always, Egress when there are egress
        // rules.
        let types = match spec.policy_types.filter(|t| !t.is_empty()) {
            Some(types) => types,
            None if has_egress => vec!["Ingress".to_owned(), "Egress".to_owned()],
            None => vec!["Ingress".to_owned()],
        };
        let ingress = types.iter().any(|t| t == "Ingress").then(|| {
            spec.ingress
                .iter()
                .flatten()
                .enumerate()
                .map(|(index, r)| {
                    self.rule(index, r.from.as_deref(), r.ports.as_deref(), &namespace)
                })
                .collect()
        });
        let egress = types.iter().any(|t| t == "Egress").then(|| {
            spec.egress
                .iter()
                .flatten()
                .enumerate()
                .map(|(index, r)| self.rule(index, r.to.as_deref(), r.ports.as_deref(), &namespace))
                .collect()
        });
        Policy {
            namespace,
            name,
            target,
            ingress,
            egress,
        }
    }

    fn rule(
        &mut self,
        index: usize,
        peers: Option<&[NetworkPolicyPeer]>,
        ports: Option<&[NetworkPolicyPort]>,
        namespace: &str,
    ) -> Rule {
        let peers = peers.filter(|p| !p.is_empty()).map(|peers| {
            peers
                .iter()
                .filter_map(|p| self.peer(p, namespace))
                .collect()
        });
        let ports = ports
            .filter(|p| !p.is_empty())
            .map(|ports| ports.iter().filter_map(port).collect());
        Rule {
            index,
            peers,
            ports,
        }
    }

    fn peer(&mut self, peer: &NetworkPolicyPeer, namespace: &str) -> Option<Peer> {
        if let Some(block) = &peer.ip_block {
            let cidr = ipv4_cidr(&block.cidr)?;
            let mut except = Vec::new();
            for e in block.except.iter().flatten() {
                except.push(ipv4_cidr(e)?);
            }
            except.sort();
            except.dedup();
            let block = self
                .blocks
                .entry((cidr, except.clone()))
                .or_insert_with(|| Arc::new(IpBlock { cidr, except }))
                .clone();
            return Some(Peer::Block(block));
        }
        let parse = |s: &metav1::LabelSelector| LabelSelector::from_label_selector(s).ok();
        let pods = match &peer.pod_selector {
            Some(s) => Some(parse(s)?),
            None => None,
        };
        let (namespaces, key) = match &peer.namespace_selector {
            Some(s) => {
                let s = parse(s)?;
                let key = format!("ns:{s}");
                (NamespaceMatch::Selector(s), key)
            }
            None => {
                // Neither selector: Kubernetes' validation refuses such a peer.
                pods.as_ref()?;
                (
                    NamespaceMatch::Own(namespace.to_owned()),
                    format!("in:{namespace}"),
                )
            }
        };
        let key: Arc<str> = match &pods {
            Some(p) => format!("{key}|pod:{p}").into(),
            None => key.into(),
        };
        let peer = self
            .peers
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(SelectorPeer {
                    key,
                    namespaces,
                    pods,
                })
            })
            .clone();
        Some(Peer::Selector(peer))
    }
}

/// An IPv4 CIDR as Kubernetes parses an ipBlock's (host bits cleared, as Go's
/// `net.ParseCIDR` returns the network); `None` for IPv6 or garbage.
pub(super) fn ipv4_cidr(text: &str) -> Option<Ipv4Cidr> {
    Ipv4Cidr::parse_clearing_host_bits(text).ok()
}

fn port(port: &NetworkPolicyPort) -> Option<Port> {
    let proto = protocol_number(port.protocol.as_deref())?;
    Some(match &port.port {
        None => Port::Every(proto),
        Some(IntOrString::String(name)) => Port::Named(proto, name.as_str().into()),
        Some(IntOrString::Int(n)) => {
            let start = u16::try_from(*n).ok().filter(|p| *p > 0)?;
            let end = match port.end_port {
                Some(e) => u16::try_from(e).ok().filter(|e| *e >= start)?,
                None => start,
            };
            Port::Range(proto, start, end)
        }
    })
}

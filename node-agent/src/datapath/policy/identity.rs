//! Security identities: the classes of peer addresses that no policy tells apart.
//!
//! An address's *features* are what any policy could judge it by: the selector peers
//! (`podSelector` / `namespaceSelector` / both, [`super::rules::SelectorPeer`]) that select it
//! when it is a pod, the ipBlock CIDRs and `except` CIDRs it lies in, and, for pods, the numbers
//! of the named ports egress rules name. Two addresses get the same identity exactly when their
//! features are equal: this is the coarsest partition no peer selector, ipBlock or named port
//! splits, so a policy map needs one entry per (class, port) however many pods a class holds.
//!
//! Pods get a `/32` entry each. The address space outside pods is covered by one LPM entry per
//! distinct ipBlock CIDR (`cidr` or `except`): an address's longest matching CIDR fixes every
//! CIDR it lies in (CIDRs nest or are disjoint), so that entry maps to the class "inside these
//! CIDRs". Addresses no entry covers are [`identity::WORLD`]; this node's addresses are
//! [`identity::HOST`].
//!
//! # Stable numbers
//!
//! [`IdentityAllocator`] numbers the classes so that incremental updates stay small: a class
//! keeps the number most of its members (IPCACHE keys) had in the previous compile, even when
//! its features changed (a selector edit that keeps a class's members renumbers nothing). A
//! number released in one compile is handed out again only in a later one, after the map writes
//! that stopped using it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::Ipv4Addr,
    sync::Arc,
};

use keelson_api::cidr::Ipv4Cidr;
use keelson_ebpf_common::identity;

use super::{
    model::PolicyModel,
    rules::{Normaliser, Port, Rule},
};

/// A key of the IPCACHE LPM trie: `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpcacheKey {
    /// The network address (host bits clear).
    pub address: Ipv4Addr,
    /// The prefix length (32: one address).
    pub prefix: u8,
}

impl IpcacheKey {
    /// One address.
    pub const fn host(address: Ipv4Addr) -> Self {
        Self {
            address,
            prefix: 32,
        }
    }

    /// The entry of CIDR `cidr`.
    pub fn cidr(cidr: Ipv4Cidr) -> Self {
        Self {
            address: cidr.network(),
            prefix: cidr.prefix_len(),
        }
    }
}

/// What a class of addresses can be judged by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Feature {
    /// A selector peer selects it (canonical text of the peer).
    Selector(Arc<str>),
    /// It lies in this ipBlock `cidr` or `except` CIDR.
    Cidr(Ipv4Cidr),
    /// A pod whose named port (name, protocol) has this number.
    NamedPort(Arc<str>, u8, u16),
}

/// One class: its features, its number and the IPCACHE keys mapping to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentityClass {
    /// The identity number.
    pub id: u32,
    /// The features (sorted).
    pub features: Vec<Feature>,
    /// The IPCACHE keys with this identity (sorted).
    pub members: Vec<IpcacheKey>,
    /// How many of the members are pods.
    pub pods: usize,
}

/// The identities of one compile.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    /// Every class, by number.
    pub classes: BTreeMap<u32, IdentityClass>,
    /// The identity of each pod address.
    pub pods: HashMap<Ipv4Addr, u32>,
    /// Classes by feature.
    pub(super) by_feature: HashMap<Feature, Vec<u32>>,
}

impl Identities {
    /// The desired IPCACHE contents: every class's members, and this node's addresses as
    /// [`identity::HOST`] (which wins over any pod or CIDR entry of the same key).
    pub fn ipcache(&self, node_addresses: &[Ipv4Addr]) -> BTreeMap<IpcacheKey, u32> {
        let mut out: BTreeMap<IpcacheKey, u32> = self
            .classes
            .values()
            .flat_map(|c| c.members.iter().map(|m| (*m, c.id)))
            .collect();
        for address in node_addresses {
            out.insert(IpcacheKey::host(*address), identity::HOST);
        }
        out
    }

    /// The classes holding `feature`.
    pub fn with_feature(&self, feature: &Feature) -> &[u32] {
        self.by_feature.get(feature).map_or(&[], Vec::as_slice)
    }
}

/// Hands out identity numbers, keeping each class's number across compiles where it can.
#[derive(Debug, Clone)]
pub struct IdentityAllocator {
    /// Each IPCACHE key's number after the last compile.
    previous: HashMap<IpcacheKey, u32>,
    /// Numbers released by an earlier compile, free to hand out again.
    free: BTreeSet<u32>,
    /// The lowest number never handed out.
    next: u32,
}

impl Default for IdentityAllocator {
    fn default() -> Self {
        Self {
            previous: HashMap::new(),
            free: BTreeSet::new(),
            next: identity::FIRST_ALLOCATED,
        }
    }
}

impl IdentityAllocator {
    /// An allocator that continues from IPCACHE contents found in the maps (an agent restart):
    /// classes keep the numbers their members have there.
    pub fn adopt(entries: impl IntoIterator<Item = (IpcacheKey, u32)>) -> Self {
        let previous: HashMap<IpcacheKey, u32> = entries
            .into_iter()
            .filter(|(_, id)| *id >= identity::FIRST_ALLOCATED)
            .collect();
        let next = previous
            .values()
            .max()
            .map_or(identity::FIRST_ALLOCATED, |m| m + 1);
        Self {
            previous,
            free: BTreeSet::new(),
            next,
        }
    }

    /// A number for a class split off between compiles (an incremental update), remembered
    /// for its `members`.
    pub(super) fn split(&mut self, members: &[IpcacheKey]) -> u32 {
        let id = self.free.pop_first().unwrap_or_else(|| {
            self.next += 1;
            self.next - 1
        });
        for m in members {
            self.previous.insert(*m, id);
        }
        id
    }

    /// Numbers `classes` (features, members; sorted by features), and remembers the result
    /// for the next compile.
    fn assign(&mut self, classes: &[(Vec<Feature>, Vec<IpcacheKey>)]) -> Vec<u32> {
        // Each class's candidate: the number most of its members had (ties: the lower).
        let mut claims: Vec<(usize, u32, usize)> = Vec::new();
        for (index, (_, members)) in classes.iter().enumerate() {
            let mut tally: BTreeMap<u32, usize> = BTreeMap::new();
            for m in members {
                if let Some(id) = self.previous.get(m) {
                    *tally.entry(*id).or_default() += 1;
                }
            }
            if let Some((id, count)) = tally
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            {
                claims.push((count, id, index));
            }
        }
        // Largest claims first; a number goes to one class only.
        claims.sort_by(|a, b| b.0.cmp(&a.0).then(a.2.cmp(&b.2)));
        let mut ids: Vec<Option<u32>> = vec![None; classes.len()];
        let mut taken: HashSet<u32> = HashSet::new();
        for (_, id, index) in claims {
            if taken.insert(id) {
                ids[index] = Some(id);
            }
        }
        let released: Vec<u32> = self
            .previous
            .values()
            .copied()
            .collect::<BTreeSet<u32>>()
            .into_iter()
            .filter(|id| !taken.contains(id))
            .collect();
        let ids: Vec<u32> = ids
            .into_iter()
            .map(|id| {
                id.unwrap_or_else(|| match self.free.pop_first() {
                    Some(free) => free,
                    None => {
                        self.next += 1;
                        self.next - 1
                    }
                })
            })
            .collect();
        // Released numbers wait for the next compile: this one's writes still remove them.
        self.free.extend(released);
        for id in &ids {
            self.free.remove(id);
        }
        self.previous = classes
            .iter()
            .zip(&ids)
            .flat_map(|((_, members), id)| members.iter().map(move |m| (*m, *id)))
            .collect();
        ids
    }
}

/// The named ports (name, protocol) egress rules name: a pod's numbers for them are features.
pub(super) fn egress_named_ports<'a>(
    egress: impl Iterator<Item = &'a Rule>,
) -> BTreeSet<(Arc<str>, u8)> {
    egress
        .flat_map(|r| r.ports.iter().flatten())
        .filter_map(|p| match p {
            Port::Named(proto, name) => Some((name.clone(), *proto)),
            _ => None,
        })
        .collect()
}

/// Every CIDR of `cidrs` holding `address` with a prefix of at most `max_prefix`.
fn cidrs_holding(cidrs: &HashSet<Ipv4Cidr>, address: Ipv4Addr, max_prefix: u8) -> Vec<Ipv4Cidr> {
    (0..=max_prefix)
        .filter_map(|len| Ipv4Cidr::containing(address, len))
        .filter(|c| cidrs.contains(c))
        .collect()
}

/// Classifies every pod address of `model` and the CIDR space of the policies' ipBlocks.
pub(super) fn classify(
    model: &PolicyModel,
    normaliser: &Normaliser,
    egress_rules: &[&Rule],
    allocator: &mut IdentityAllocator,
) -> Identities {
    let named_ports = egress_named_ports(egress_rules.iter().copied());
    let cidrs: HashSet<Ipv4Cidr> = normaliser
        .blocks()
        .flat_map(|b| std::iter::once(b.cidr).chain(b.except.iter().copied()))
        .collect();
    let peers: Vec<_> = normaliser.selector_peers().collect();
    let node_addresses: HashSet<Ipv4Addr> = model.node.addresses.iter().copied().collect();

    // Selector features once per (namespace, labels): replicas share them.
    let mut by_labels: HashMap<(&str, &BTreeMap<String, String>), Vec<Feature>> = HashMap::new();
    let mut namespace_labels: HashMap<&str, BTreeMap<String, String>> = HashMap::new();
    let mut classes: HashMap<Vec<Feature>, Vec<IpcacheKey>> = HashMap::new();
    let mut pod_addresses: HashSet<Ipv4Addr> = HashSet::new();
    let mut pod_count: HashMap<Vec<Feature>, usize> = HashMap::new();
    for pod in &model.pods {
        if node_addresses.contains(&pod.ip) || !pod_addresses.insert(pod.ip) {
            continue;
        }
        let selected = by_labels
            .entry((pod.namespace.as_str(), &pod.labels))
            .or_insert_with(|| {
                let ns_labels = namespace_labels
                    .entry(pod.namespace.as_str())
                    .or_insert_with(|| model.namespace_labels(&pod.namespace));
                peers
                    .iter()
                    .filter(|p| p.matches(&pod.namespace, ns_labels, &pod.labels))
                    .map(|p| Feature::Selector(p.key.clone()))
                    .collect()
            });
        let mut features = selected.clone();
        features.extend(
            cidrs_holding(&cidrs, pod.ip, 32)
                .into_iter()
                .map(Feature::Cidr),
        );
        for (name, proto) in &named_ports {
            if let Some(port) = pod.named_port(name, *proto) {
                features.push(Feature::NamedPort(name.clone(), *proto, port));
            }
        }
        features.sort();
        *pod_count.entry(features.clone()).or_default() += 1;
        classes
            .entry(features)
            .or_default()
            .push(IpcacheKey::host(pod.ip));
    }
    for cidr in &cidrs {
        let key = IpcacheKey::cidr(*cidr);
        // A /32 of a pod or of this node: that entry says more.
        if key.prefix == 32
            && (pod_addresses.contains(&key.address) || node_addresses.contains(&key.address))
        {
            continue;
        }
        let mut features: Vec<Feature> = cidrs_holding(&cidrs, cidr.network(), cidr.prefix_len())
            .into_iter()
            .map(Feature::Cidr)
            .collect();
        features.sort();
        classes.entry(features).or_default().push(key);
    }
    let mut classes: Vec<(Vec<Feature>, Vec<IpcacheKey>)> = classes
        .into_iter()
        .map(|(f, mut m)| {
            m.sort();
            (f, m)
        })
        .collect();
    classes.sort();
    let ids = allocator.assign(&classes);
    let mut out = Identities::default();
    for ((features, members), id) in classes.into_iter().zip(ids) {
        for m in &members {
            if m.prefix == 32 && pod_addresses.contains(&m.address) {
                out.pods.insert(m.address, id);
            }
        }
        for f in &features {
            out.by_feature.entry(f.clone()).or_default().push(id);
        }
        let pods = pod_count.get(&features).copied().unwrap_or(0);
        out.classes.insert(
            id,
            IdentityClass {
                id,
                features,
                members,
                pods,
            },
        );
    }
    out
}

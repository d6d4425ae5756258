//! The pure compiler: a [`PolicyModel`] in, the desired contents of the three policy maps out
//! (IPCACHE, ENDPOINTS, POLICY), with Kubernetes' NetworkPolicy semantics:
//!
//! - a pod is isolated for ingress (egress) when any policy of its namespace whose
//!   `podSelector` matches it has `Ingress` (`Egress`) among its policy types (defaulted:
//!   `Ingress` always, `Egress` when there are egress rules); it then accepts only what some
//!   rule of some of those policies allows (their union); a pod no policy selects gets no
//!   ENDPOINTS entry and is not policed;
//! - a rule with no `from`/`to` allows every peer ([`identity::ANY`]); with no `ports`, every
//!   protocol and port (prefix [`POLICY_PREFIX_ANY_PROTO`]); a port without `protocol` is TCP;
//!   a protocol without `port` is every port of it ([`POLICY_PREFIX_ANY_PORT`]); `port`..
//!   `endPort` is covered exactly by the fewest aligned power-of-two blocks (LPM prefixes);
//! - named ports: on ingress the selected (local) pod's own container port of that name and
//!   protocol; on egress each destination pod's. Pods whose numbers differ get different
//!   identities ([`super::identity`]), so this is exact: no pod is opened on a number that is
//!   only another pod's named port. A named port never matches a non-pod address, and an
//!   egress rule with a named port and no `to` expands to the pod classes having that port;
//! - peers: [`super::identity`] classes; traffic from and to this node's addresses
//!   ([`identity::HOST`]) is allowed by the datapath without entries.
//!
//! Every entry carries the id of one rule that allows it (the lowest, when several do),
//! resolvable through [`Compiled::rules`]; rule ids are stable across compiles.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::Ipv4Addr,
    sync::Arc,
};

use keelson_ebpf_common::{
    EndpointPolicy, POLICY_PREFIX_ANY_PORT, POLICY_PREFIX_ANY_PROTO, POLICY_PREFIX_FULL,
    PolicyKeyData, endpoint_flags, identity,
};

use super::{
    identity::{Feature, Identities, IdentityAllocator, IpcacheKey, classify},
    model::{PodInfo, PolicyModel},
    rules::{Direction, Normaliser, Peer, Policy, Port, Rule},
};

/// A key of the POLICY LPM trie: the key data (bits past `prefix` zero) and its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    /// The prefix length in bits ([`POLICY_PREFIX_ANY_PROTO`] ..= [`POLICY_PREFIX_FULL`]).
    pub prefix: u32,
    /// The key data.
    pub data: PolicyKeyData,
}

impl PolicyKey {
    /// The entry for `endpoint`, `peer` identity and `direction`, allowing protocol `proto`
    /// ports `port`.. covered by `prefix` (bits past the prefix are cleared).
    pub fn new(
        endpoint: Ipv4Addr,
        peer: u32,
        direction: Direction,
        proto: u8,
        port: u16,
        prefix: u32,
    ) -> Self {
        let (proto, port) = match prefix {
            p if p <= POLICY_PREFIX_ANY_PROTO => (0, 0),
            p if p <= POLICY_PREFIX_ANY_PORT => (proto, 0),
            p => {
                let bits = p - POLICY_PREFIX_ANY_PORT;
                (proto, port & (u16::MAX << (16 - bits)))
            }
        };
        Self {
            prefix,
            data: PolicyKeyData {
                endpoint_be: u32::from_ne_bytes(endpoint.octets()),
                identity_be: peer.to_be(),
                direction: direction.map_value(),
                proto,
                dport_be: port.to_be(),
            },
        }
    }

    /// The endpoint's address.
    pub fn endpoint(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.data.endpoint_be.to_ne_bytes())
    }

    /// The peer identity.
    pub fn identity(&self) -> u32 {
        u32::from_be(self.data.identity_be)
    }

    /// The port (host order).
    pub fn port(&self) -> u16 {
        u16::from_be(self.data.dport_be)
    }
}

/// Which rule an entry came from (the flow view's answer to "allowed by what").
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleRef {
    /// The policy's namespace.
    pub namespace: String,
    /// The policy's name.
    pub name: String,
    /// `spec.ingress` or `spec.egress`.
    pub direction: Direction,
    /// Position of the rule in that list.
    pub index: usize,
}

impl std::fmt::Display for RuleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} {}[{}]",
            self.namespace, self.name, self.direction, self.index
        )
    }
}

/// The desired contents of the three maps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// IPCACHE: address/prefix -> identity.
    pub ipcache: BTreeMap<IpcacheKey, u32>,
    /// ENDPOINTS: local pod address -> flags and identity.
    pub endpoints: BTreeMap<Ipv4Addr, EndpointPolicy>,
    /// POLICY: key -> rule id.
    pub policy: HashMap<PolicyKey, u32>,
}

/// One compile's result.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    /// What the maps should hold.
    pub desired: Desired,
    /// The classes behind the identity numbers.
    pub identities: Identities,
    /// Rule ids in use.
    pub rules: BTreeMap<u32, RuleRef>,
    /// For each local pod with an ENDPOINTS entry, the policies (`namespace/name`) that select
    /// it and isolate it in each direction ([`Direction`]): what the flow view names for a drop
    /// (no single policy drops a packet; together they leave it unallowed).
    pub selected_by: BTreeMap<(Ipv4Addr, Direction), Vec<String>>,
}

/// Stable rule ids: a rule keeps its id while it exists; a freed id is reused by a later
/// compile only.
#[derive(Debug, Clone, Default)]
struct RuleIds {
    ids: HashMap<RuleRef, u32>,
    free: BTreeSet<u32>,
    next: u32,
}

impl RuleIds {
    fn assign(&mut self, rules: &BTreeSet<RuleRef>) -> HashMap<RuleRef, u32> {
        let mut released: Vec<u32> = Vec::new();
        self.ids.retain(|rule, id| {
            let keep = rules.contains(rule);
            if !keep {
                released.push(*id);
            }
            keep
        });
        for rule in rules {
            if !self.ids.contains_key(rule) {
                let id = self.free.pop_first().unwrap_or_else(|| {
                    self.next += 1;
                    self.next
                });
                self.ids.insert(rule.clone(), id);
            }
        }
        self.free.extend(released);
        self.ids.clone()
    }
}

/// The compiler and what it keeps between compiles (identity and rule numbering).
#[derive(Debug, Clone, Default)]
pub struct PolicyCompiler {
    identities: IdentityAllocator,
    rule_ids: RuleIds,
}

/// The smallest set of aligned blocks covering `start..=end`: (first port, prefix length).
pub fn port_blocks(start: u16, end: u16) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    let (mut at, end) = (u32::from(start), u32::from(end));
    while at <= end {
        // The largest block aligned at `at` that does not run past `end`.
        let mut size = if at == 0 {
            1 << 16
        } else {
            1u32 << at.trailing_zeros().min(16)
        };
        while at + size - 1 > end {
            size >>= 1;
        }
        out.push((at as u16, POLICY_PREFIX_FULL - size.trailing_zeros()));
        at += size;
    }
    out
}

/// One entry a rule contributes to every endpoint it applies to.
#[derive(Debug, Clone, Copy)]
struct Grant {
    peer: u32,
    proto: u8,
    port: u16,
    prefix: u32,
}

impl PolicyCompiler {
    /// A compiler continuing from the IPCACHE contents found in the maps (an agent restart).
    pub fn adopt(ipcache: impl IntoIterator<Item = (IpcacheKey, u32)>) -> Self {
        Self {
            identities: IdentityAllocator::adopt(ipcache),
            rule_ids: RuleIds::default(),
        }
    }

    /// Compiles `model`. The cost is one pass over the pods per distinct peer selector (per
    /// distinct namespace and label set), one per local pod over its namespace's policies, and
    /// the size of the output.
    pub fn compile(&mut self, model: &PolicyModel) -> Compiled {
        let mut normaliser = Normaliser::default();
        let mut policies: Vec<Policy> = model
            .policies
            .iter()
            .map(|p| normaliser.policy(p))
            .collect();
        policies.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let egress: Vec<&Rule> = policies
            .iter()
            .flat_map(|p| p.egress.iter().flatten())
            .collect();
        let identities = classify(model, &normaliser, &egress, &mut self.identities);
        let all_rules: BTreeSet<RuleRef> = policies
            .iter()
            .flat_map(|p| {
                [Direction::Ingress, Direction::Egress]
                    .into_iter()
                    .flat_map(move |d| {
                        p.rules(d).into_iter().flatten().map(move |r| RuleRef {
                            namespace: p.namespace.clone(),
                            name: p.name.clone(),
                            direction: d,
                            index: r.index,
                        })
                    })
            })
            .collect();
        let rule_ids = self.rule_ids.assign(&all_rules);
        let mut grants = GrantCache::new(&identities);
        let mut by_namespace: HashMap<&str, Vec<&Policy>> = HashMap::new();
        for p in &policies {
            by_namespace
                .entry(p.namespace.as_str())
                .or_default()
                .push(p);
        }
        let mut desired = Desired {
            ipcache: identities.ipcache(&model.node.addresses),
            ..Desired::default()
        };
        let mut selected_by: BTreeMap<(Ipv4Addr, Direction), Vec<String>> = BTreeMap::new();
        let mut seen: BTreeSet<Ipv4Addr> = model.node.addresses.iter().copied().collect();
        for pod in model.pods.iter().filter(|p| model.is_local(p)) {
            if !seen.insert(pod.ip) {
                continue;
            }
            let Some(&own) = identities.pods.get(&pod.ip) else {
                continue;
            };
            let mut flags = 0;
            for policy in by_namespace
                .get(pod.namespace.as_str())
                .into_iter()
                .flatten()
            {
                if !policy
                    .target
                    .as_ref()
                    .is_some_and(|s| s.matches(&pod.labels))
                {
                    continue;
                }
                for direction in [Direction::Ingress, Direction::Egress] {
                    let Some(rules) = policy.rules(direction) else {
                        continue;
                    };
                    flags |= match direction {
                        Direction::Ingress => endpoint_flags::INGRESS_ENFORCED,
                        Direction::Egress => endpoint_flags::EGRESS_ENFORCED,
                    };
                    selected_by
                        .entry((pod.ip, direction))
                        .or_default()
                        .push(format!("{}/{}", policy.namespace, policy.name));
                    for rule in rules {
                        let rule_ref = RuleRef {
                            namespace: policy.namespace.clone(),
                            name: policy.name.clone(),
                            direction,
                            index: rule.index,
                        };
                        let rule_id = rule_ids.get(&rule_ref).copied().unwrap_or(0);
                        for grant in grants.of(direction, rule, pod) {
                            let entry = PolicyKey::new(
                                pod.ip,
                                grant.peer,
                                direction,
                                grant.proto,
                                grant.port,
                                grant.prefix,
                            );
                            desired
                                .policy
                                .entry(entry)
                                .and_modify(|id| *id = (*id).min(rule_id))
                                .or_insert(rule_id);
                        }
                    }
                }
            }
            if flags != 0 {
                desired.endpoints.insert(
                    pod.ip,
                    EndpointPolicy {
                        flags,
                        identity: own,
                    },
                );
            }
        }
        let rules = rule_ids.into_iter().map(|(r, id)| (id, r)).collect();
        Compiled {
            desired,
            identities,
            rules,
            selected_by,
        }
    }
}

/// What each rule grants, computed once per compile and shared by every endpoint it applies
/// to (only ingress named ports depend on the endpoint).
struct GrantCache<'a> {
    identities: &'a Identities,
    peers: HashMap<usize, Arc<Vec<u32>>>,
    rules: HashMap<usize, Arc<Vec<Grant>>>,
    /// (name, protocol) -> identity -> port number, for egress named ports.
    named: HashMap<(Arc<str>, u8), BTreeMap<u32, u16>>,
}

impl<'a> GrantCache<'a> {
    fn new(identities: &'a Identities) -> Self {
        let mut named: HashMap<(Arc<str>, u8), BTreeMap<u32, u16>> = HashMap::new();
        for class in identities.classes.values() {
            for f in &class.features {
                if let Feature::NamedPort(name, proto, port) = f {
                    named
                        .entry((name.clone(), *proto))
                        .or_default()
                        .insert(class.id, *port);
                }
            }
        }
        Self {
            identities,
            peers: HashMap::new(),
            rules: HashMap::new(),
            named,
        }
    }

    /// The identities one peer selects.
    fn peer(&mut self, peer: &Peer) -> Arc<Vec<u32>> {
        let key = match peer {
            Peer::Selector(s) => Arc::as_ptr(s) as usize,
            Peer::Block(b) => Arc::as_ptr(b) as usize,
        };
        if let Some(ids) = self.peers.get(&key) {
            return ids.clone();
        }
        let ids: Vec<u32> = match peer {
            Peer::Selector(s) => self
                .identities
                .with_feature(&Feature::Selector(s.key.clone()))
                .to_vec(),
            Peer::Block(b) => self
                .identities
                .with_feature(&Feature::Cidr(b.cidr))
                .iter()
                .copied()
                .filter(|id| {
                    let features = &self.identities.classes[id].features;
                    !b.except
                        .iter()
                        .any(|e| features.binary_search(&Feature::Cidr(*e)).is_ok())
                })
                .collect(),
        };
        let ids = Arc::new(ids);
        self.peers.insert(key, ids.clone());
        ids
    }

    /// The peers of `rule`: `None` for any peer.
    fn targets(&mut self, rule: &Rule) -> Option<Vec<u32>> {
        let peers = rule.peers.as_ref()?;
        let mut ids: BTreeSet<u32> = BTreeSet::new();
        for peer in peers {
            ids.extend(self.peer(peer).iter().copied());
        }
        Some(ids.into_iter().collect())
    }

    /// Everything `rule` (of `direction`) grants to `pod`.
    fn of(&mut self, direction: Direction, rule: &Rule, pod: &PodInfo) -> Vec<Grant> {
        let key = std::ptr::from_ref(rule) as usize;
        let fixed = match self.rules.get(&key) {
            Some(grants) => grants.clone(),
            None => {
                let grants = Arc::new(self.fixed(direction, rule));
                self.rules.insert(key, grants.clone());
                grants
            }
        };
        let mut out: Vec<Grant> = fixed.to_vec();
        if direction == Direction::Ingress {
            let named: Vec<(u8, u16)> = rule
                .ports
                .iter()
                .flatten()
                .filter_map(|p| match p {
                    Port::Named(proto, name) => Some((*proto, pod.named_port(name, *proto)?)),
                    _ => None,
                })
                .collect();
            if !named.is_empty() {
                let targets = self.targets(rule).unwrap_or_else(|| vec![identity::ANY]);
                for peer in targets {
                    for (proto, port) in &named {
                        out.push(Grant {
                            peer,
                            proto: *proto,
                            port: *port,
                            prefix: POLICY_PREFIX_FULL,
                        });
                    }
                }
            }
        }
        out
    }

    /// What `rule` grants whatever the endpoint.
    fn fixed(&mut self, direction: Direction, rule: &Rule) -> Vec<Grant> {
        let targets = self.targets(rule);
        let peers: Vec<u32> = targets.clone().unwrap_or_else(|| vec![identity::ANY]);
        let mut out = Vec::new();
        let Some(ports) = &rule.ports else {
            for &peer in &peers {
                out.push(Grant {
                    peer,
                    proto: 0,
                    port: 0,
                    prefix: POLICY_PREFIX_ANY_PROTO,
                });
            }
            return out;
        };
        for port in ports {
            match port {
                Port::Every(proto) => out.extend(peers.iter().map(|&peer| Grant {
                    peer,
                    proto: *proto,
                    port: 0,
                    prefix: POLICY_PREFIX_ANY_PORT,
                })),
                Port::Range(proto, start, end) => {
                    let blocks = port_blocks(*start, *end);
                    for &peer in &peers {
                        out.extend(blocks.iter().map(|&(port, prefix)| Grant {
                            peer,
                            proto: *proto,
                            port,
                            prefix,
                        }));
                    }
                }
                Port::Named(proto, name) if direction == Direction::Egress => {
                    let Some(numbers) = self.named.get(&(name.clone(), *proto)) else {
                        continue;
                    };
                    let grant = |(&peer, &port): (&u32, &u16)| Grant {
                        peer,
                        proto: *proto,
                        port,
                        prefix: POLICY_PREFIX_FULL,
                    };
                    match &targets {
                        None => out.extend(numbers.iter().map(grant)),
                        Some(ids) => out.extend(
                            ids.iter()
                                .filter_map(|id| numbers.get_key_value(id))
                                .map(grant),
                        ),
                    }
                }
                // Ingress named ports depend on the endpoint: see `of`.
                Port::Named(..) => {}
            }
        }
        out
    }
}

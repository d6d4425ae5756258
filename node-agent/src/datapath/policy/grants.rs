//! What a rule grants: the (peer identity, protocol, port block) entries it contributes to each
//! endpoint it applies to, computed once per rule and shared by every endpoint (only ingress
//! named ports depend on the endpoint), and kept between compiles for incremental updates.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use keelson_ebpf_common::{
    POLICY_PREFIX_ANY_PORT, POLICY_PREFIX_ANY_PROTO, POLICY_PREFIX_FULL, identity,
};

use super::{
    identity::{Feature, Identities},
    model::PodInfo,
    rules::{Direction, Peer, Policy, Port, Rule},
};

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
pub(super) struct Grant {
    pub peer: u32,
    pub proto: u8,
    pub port: u16,
    pub prefix: u32,
}

/// Each rule's and each peer's grants, keyed by the address of the interned peer or of the rule
/// (the session keeps both alive; [`GrantCache::forget`] drops a policy's rules before the
/// policy itself goes, so an address is never reused while its entry lives).
#[derive(Debug, Default)]
pub(super) struct GrantCache {
    peers: HashMap<usize, Arc<Vec<u32>>>,
    rules: HashMap<usize, Arc<Vec<Grant>>>,
    /// Each rule's id ([`super::compile::RuleIds`]), looked up once.
    ids: HashMap<usize, u32>,
    /// (name, protocol) -> identity -> port number, for egress named ports.
    named: HashMap<(Arc<str>, u8), BTreeMap<u32, u16>>,
}

impl GrantCache {
    /// An empty cache for the classes of `identities`.
    pub fn new(identities: &Identities) -> Self {
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
            peers: HashMap::new(),
            rules: HashMap::new(),
            ids: HashMap::new(),
            named,
        }
    }

    /// Drops what the rules of `policy` granted (the policy is being replaced or removed).
    pub fn forget(&mut self, policy: &Policy) {
        for direction in [Direction::Ingress, Direction::Egress] {
            for rule in policy.rules(direction).into_iter().flatten() {
                let key = std::ptr::from_ref(rule) as usize;
                self.rules.remove(&key);
                self.ids.remove(&key);
            }
        }
    }

    /// The identities one peer selects.
    fn peer(&mut self, identities: &Identities, peer: &Peer) -> Arc<Vec<u32>> {
        let key = match peer {
            Peer::Selector(s) => Arc::as_ptr(s) as usize,
            Peer::Block(b) => Arc::as_ptr(b) as usize,
        };
        if let Some(ids) = self.peers.get(&key) {
            return ids.clone();
        }
        let ids: Vec<u32> = match peer {
            Peer::Selector(s) => identities
                .with_feature(&Feature::Selector(s.key.clone()))
                .to_vec(),
            Peer::Block(b) => identities
                .with_feature(&Feature::Cidr(b.cidr))
                .iter()
                .copied()
                .filter(|id| {
                    let features = &identities.classes[id].features;
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
    fn targets(&mut self, identities: &Identities, rule: &Rule) -> Option<Vec<u32>> {
        let peers = rule.peers.as_ref()?;
        let mut ids: BTreeSet<u32> = BTreeSet::new();
        for peer in peers {
            ids.extend(self.peer(identities, peer).iter().copied());
        }
        Some(ids.into_iter().collect())
    }

    /// The id of `rule`: `lookup`'s answer, kept until the rule's policy is forgotten.
    pub fn rule_id(&mut self, rule: &Rule, lookup: impl FnOnce() -> u32) -> u32 {
        *self
            .ids
            .entry(std::ptr::from_ref(rule) as usize)
            .or_insert_with(lookup)
    }

    /// Calls `each` with everything `rule` (of `direction`) grants to `pod`.
    pub fn of(
        &mut self,
        identities: &Identities,
        direction: Direction,
        rule: &Rule,
        pod: &PodInfo,
        mut each: impl FnMut(&Grant),
    ) {
        let key = std::ptr::from_ref(rule) as usize;
        let fixed = match self.rules.get(&key) {
            Some(grants) => grants.clone(),
            None => {
                let grants = Arc::new(self.fixed(identities, direction, rule));
                self.rules.insert(key, grants.clone());
                grants
            }
        };
        fixed.iter().for_each(&mut each);
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
                let targets = self
                    .targets(identities, rule)
                    .unwrap_or_else(|| vec![identity::ANY]);
                for peer in targets {
                    for (proto, port) in &named {
                        each(&Grant {
                            peer,
                            proto: *proto,
                            port: *port,
                            prefix: POLICY_PREFIX_FULL,
                        });
                    }
                }
            }
        }
    }

    /// What `rule` grants whatever the endpoint.
    fn fixed(&mut self, identities: &Identities, direction: Direction, rule: &Rule) -> Vec<Grant> {
        let targets = self.targets(identities, rule);
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

//! The pure compiler: a [`PolicyModel`] in, the desired contents of the three policy maps out
//! (IPCACHE, ENDPOINTS, POLICY), with Kubernetes' NetworkPolicy semantics:
//!
//! - a pod is isolated for ingress (egress) when any policy of its namespace whose
//!   `podSelector` matches it has `Ingress` (`Egress`) among its policy types (defaulted:
//!   `Ingress` always, `Egress` when there are egress rules); it then accepts only what some
//!   rule of some of those policies allows (their union); a pod no policy selects gets no
//!   ENDPOINTS entry and is not policed;
//! - a rule with no `from`/`to` allows every peer ([`keelson_ebpf_common::identity::ANY`]);
//!   with no `ports`, every protocol and port (prefix [`POLICY_PREFIX_ANY_PROTO`]); a port
//!   without `protocol` is TCP; a protocol without `port` is every port of it
//!   ([`POLICY_PREFIX_ANY_PORT`]); `port`..`endPort` is covered exactly by the fewest aligned power-of-two blocks (LPM prefixes);
//! - named ports: on ingress the selected (local) pod's own container port of that name and
//!   protocol; on egress each destination pod's. Pods whose numbers differ get different
//!   identities ([`super::identity`]), so this is exact: no pod is opened on a number that is
//!   only another pod's named port. A named port never matches a non-pod address, and an
//!   egress rule with a named port and no `to` expands to the pod classes having that port;
//! - peers: [`super::identity`] classes; traffic from and to this node's addresses
//!   ([`keelson_ebpf_common::identity::HOST`]) is allowed by the datapath without entries.
//!
//! Every entry carries the id of one rule that allows it (the lowest, when several do),
//! resolvable through [`Compiled::rules`]; rule ids are stable across compiles.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::Ipv4Addr,
    sync::Arc,
};

use keelson_ebpf_common::{
    EndpointPolicy, POLICY_PREFIX_ANY_PORT, POLICY_PREFIX_ANY_PROTO, PolicyKeyData, endpoint_flags,
};

use super::{
    grants::GrantCache,
    identity::{Identities, IdentityAllocator, IpcacheKey, classify, egress_named_ports},
    incremental::Session,
    model::{PodInfo, PolicyModel},
    rules::{Direction, Normaliser, Policy, Rule},
};

/// A key of the POLICY LPM trie: the key data (bits past `prefix` zero) and its prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    /// The prefix length in bits ([`POLICY_PREFIX_ANY_PROTO`] ..=
    /// [`keelson_ebpf_common::POLICY_PREFIX_FULL`]).
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
    /// Which compile of its compiler this is (incremental updates apply to the latest only).
    pub(super) generation: u64,
}

/// Stable rule ids: a rule keeps its id while it exists; a freed id is reused by a later
/// compile (or update) only.
#[derive(Debug, Clone, Default)]
pub(super) struct RuleIds {
    ids: HashMap<RuleRef, u32>,
    free: BTreeSet<u32>,
    next: u32,
}

impl RuleIds {
    /// Numbers exactly `rules`.
    fn assign(&mut self, rules: &BTreeSet<RuleRef>) {
        let mut released: Vec<u32> = Vec::new();
        self.ids.retain(|rule, id| {
            let keep = rules.contains(rule);
            if !keep {
                released.push(*id);
            }
            keep
        });
        for rule in rules {
            self.number(rule);
        }
        self.free.extend(released);
    }

    fn number(&mut self, rule: &RuleRef) -> u32 {
        if let Some(id) = self.ids.get(rule) {
            return *id;
        }
        let id = self.free.pop_first().unwrap_or_else(|| {
            self.next += 1;
            self.next
        });
        self.ids.insert(rule.clone(), id);
        id
    }

    /// One policy's rules change from `old` to `new`: the ids released and those handed out.
    pub(super) fn replace(
        &mut self,
        old: &[RuleRef],
        new: &[RuleRef],
    ) -> (Vec<u32>, Vec<(u32, RuleRef)>) {
        let mut added = Vec::new();
        for rule in new {
            if !self.ids.contains_key(rule) {
                added.push((self.number(rule), rule.clone()));
            }
        }
        let released: Vec<u32> = old
            .iter()
            .filter(|r| !new.contains(r))
            .filter_map(|r| self.ids.remove(r))
            .collect();
        self.free.extend(released.iter().copied());
        (released, added)
    }

    /// The id of `rule` (0 when unnumbered, which no rule is after `assign`/`replace`).
    pub(super) fn get(&self, rule: &RuleRef) -> u32 {
        self.ids.get(rule).copied().unwrap_or(0)
    }

    fn table(&self) -> BTreeMap<u32, RuleRef> {
        self.ids.iter().map(|(r, id)| (*id, r.clone())).collect()
    }
}

/// The rules of `policy` as [`RuleRef`]s.
pub(super) fn rule_refs(policy: &Policy) -> Vec<RuleRef> {
    [Direction::Ingress, Direction::Egress]
        .into_iter()
        .flat_map(|d| {
            policy.rules(d).into_iter().flatten().map(move |r| RuleRef {
                namespace: policy.namespace.clone(),
                name: policy.name.clone(),
                direction: d,
                index: r.index,
            })
        })
        .collect()
}

/// The compiler and what it keeps between compiles: identity and rule numbering, and the
/// last compile's inputs in the form [`PolicyCompiler::update_policy`] works on.
#[derive(Debug, Default)]
pub struct PolicyCompiler {
    pub(super) identities: IdentityAllocator,
    pub(super) rule_ids: RuleIds,
    pub(super) session: Option<Session>,
    generation: u64,
}

/// One local pod's part of the maps.
#[derive(Debug, Default)]
pub(super) struct EndpointOut {
    /// Its ENDPOINTS flags (0: not policed, no entry).
    pub flags: u32,
    /// Its POLICY entries.
    pub entries: HashMap<PolicyKey, u32>,
    /// The policies isolating it, per direction.
    pub selected_by: Vec<(Direction, Vec<String>)>,
}

/// Compiles one local pod: its entries from the rules of the `policies` (of its namespace, in
/// name order) that select it.
pub(super) fn endpoint<'p>(
    pod: &PodInfo,
    policies: impl Iterator<Item = &'p Policy>,
    rule_ids: &RuleIds,
    grants: &mut GrantCache,
    identities: &Identities,
) -> EndpointOut {
    let mut out = EndpointOut::default();
    let mut selected: [Vec<String>; 2] = [Vec::new(), Vec::new()];
    for policy in policies {
        if !policy
            .target
            .as_ref()
            .is_some_and(|s| s.matches(&pod.labels))
        {
            continue;
        }
        for (slot, direction) in [Direction::Ingress, Direction::Egress]
            .into_iter()
            .enumerate()
        {
            let Some(rules) = policy.rules(direction) else {
                continue;
            };
            out.flags |= match direction {
                Direction::Ingress => endpoint_flags::INGRESS_ENFORCED,
                Direction::Egress => endpoint_flags::EGRESS_ENFORCED,
            };
            selected[slot].push(format!("{}/{}", policy.namespace, policy.name));
            for rule in rules {
                let rule_id = grants.rule_id(rule, || {
                    rule_ids.get(&RuleRef {
                        namespace: policy.namespace.clone(),
                        name: policy.name.clone(),
                        direction,
                        index: rule.index,
                    })
                });
                grants.of(identities, direction, rule, pod, |grant| {
                    let entry = PolicyKey::new(
                        pod.ip,
                        grant.peer,
                        direction,
                        grant.proto,
                        grant.port,
                        grant.prefix,
                    );
                    out.entries
                        .entry(entry)
                        .and_modify(|id| *id = (*id).min(rule_id))
                        .or_insert(rule_id);
                });
            }
        }
    }
    let [ingress, egress] = selected;
    for (direction, names) in [(Direction::Ingress, ingress), (Direction::Egress, egress)] {
        if !names.is_empty() {
            out.selected_by.push((direction, names));
        }
    }
    out
}

impl PolicyCompiler {
    /// A compiler continuing from the IPCACHE contents found in the maps (an agent restart).
    pub fn adopt(ipcache: impl IntoIterator<Item = (IpcacheKey, u32)>) -> Self {
        Self {
            identities: IdentityAllocator::adopt(ipcache),
            ..Self::default()
        }
    }

    /// Compiles `model`. The cost is one pass over the pods per distinct peer selector (per
    /// distinct namespace and label set), one per local pod over its namespace's policies, and
    /// the size of the output. The compiler keeps what [`Self::update_policy`] needs to apply a
    /// later change of one policy to this result.
    pub fn compile(&mut self, model: &PolicyModel) -> Compiled {
        let mut normaliser = Normaliser::default();
        let mut policies: HashMap<String, BTreeMap<String, Arc<Policy>>> = HashMap::new();
        for p in &model.policies {
            let p = normaliser.policy(p);
            policies
                .entry(p.namespace.clone())
                .or_default()
                .insert(p.name.clone(), Arc::new(p));
        }
        let all = || policies.values().flat_map(BTreeMap::values);
        let egress: Vec<&Rule> = all().flat_map(|p| p.egress.iter().flatten()).collect();
        let identities = classify(model, &normaliser, &egress, &mut self.identities);
        let all_rules: BTreeSet<RuleRef> = all().flat_map(|p| rule_refs(p)).collect();
        self.rule_ids.assign(&all_rules);
        let mut grants = GrantCache::new(&identities);
        let mut desired = Desired {
            ipcache: identities.ipcache(&model.node.addresses),
            ..Desired::default()
        };
        let mut selected_by: BTreeMap<(Ipv4Addr, Direction), Vec<String>> = BTreeMap::new();
        let mut seen: BTreeSet<Ipv4Addr> = model.node.addresses.iter().copied().collect();
        let mut local: HashMap<String, Vec<PodInfo>> = HashMap::new();
        for pod in model.pods.iter().filter(|p| model.is_local(p)) {
            if !seen.insert(pod.ip) || !identities.pods.contains_key(&pod.ip) {
                continue;
            }
            local
                .entry(pod.namespace.clone())
                .or_default()
                .push(pod.clone());
            let namespace_policies = policies.get(&pod.namespace).into_iter().flatten();
            let out = endpoint(
                pod,
                namespace_policies.map(|(_, p)| &**p),
                &self.rule_ids,
                &mut grants,
                &identities,
            );
            if out.flags == 0 {
                continue;
            }
            desired.endpoints.insert(
                pod.ip,
                EndpointPolicy {
                    flags: out.flags,
                    identity: identities.pods[&pod.ip],
                },
            );
            desired.policy.extend(out.entries);
            for (direction, names) in out.selected_by {
                selected_by.insert((pod.ip, direction), names);
            }
        }
        let named_ports = egress_named_ports(egress.into_iter());
        self.generation += 1;
        self.session = Some(Session::new(
            model,
            normaliser,
            policies,
            local,
            named_ports,
            grants,
            self.generation,
        ));
        Compiled {
            desired,
            identities,
            rules: self.rule_ids.table(),
            selected_by,
            generation: self.generation,
        }
    }
}

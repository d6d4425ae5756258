//! One NetworkPolicy's change applied to the last compile without compiling the rest.
//!
//! A policy only contributes entries to the local pods of its own namespace its `podSelector`
//! matches, so a change of one policy recompiles exactly the local pods the old or the new
//! version selects, from their namespace's policies (kept normalised from the last compile, with
//! what each rule grants). The identities follow the peers the new version names:
//! - a selector peer the last compile classified: nothing to do;
//! - a new selector peer: it becomes a feature of the classes whose members it all selects;
//!   a class it selects only part of is split, the selected members moving to a new class
//!   with the old one's features plus this one. Every peer set that held the old class holds
//!   the new one too, so each POLICY entry naming the old class gets a twin naming the new one
//!   (written before the members' IPCACHE entries move, so no allowed flow is cut);
//! - ipBlock CIDRs and `except` CIDRs, and named ports of egress rules, the last compile already
//!   classified (their IPCACHE entries exist).
//!
//! Anything else (a new CIDR, a new egress named port) changes the IPCACHE's CIDR entries or
//! every pod's features: [`PolicyCompiler::update_policy`] says so and the caller compiles the
//! whole model. Classes a removed peer no longer tells apart stay split until the next full
//! compile: classes finer than necessary give the same verdicts.
//!
//! Cost: normalising the one policy, one selector match per pod for a new selector peer, one
//! match per policy of its namespace for each pod it selects, the grants of the rules involved,
//! and a pass over the POLICY entries when a class splits; independent of the number of
//! policies elsewhere.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::Ipv4Addr,
    sync::Arc,
};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use keelson_ebpf_common::EndpointPolicy;

use super::{
    compile::{Compiled, Desired, PolicyCompiler, PolicyKey, RuleRef, endpoint, rule_refs},
    grants::GrantCache,
    identity::{
        Feature, Identities, IdentityAllocator, IdentityClass, IpcacheKey, egress_named_ports,
    },
    model::{PodInfo, PolicyModel, labels_of},
    rules::{Direction, Normaliser, Peer, Policy, SelectorPeer},
};

/// What the compiler keeps of its last full compile.
#[derive(Debug)]
pub(crate) struct Session {
    normaliser: Normaliser,
    /// Normalised policies: namespace -> name -> policy.
    policies: HashMap<String, BTreeMap<String, Arc<Policy>>>,
    /// Local pods with an identity, by namespace.
    local: HashMap<String, Vec<PodInfo>>,
    /// Every classified pod (all nodes): (namespace, labels) by address.
    pods: Vec<(Ipv4Addr, String, BTreeMap<String, String>)>,
    /// Namespace labels ([`PolicyModel::namespaces`]).
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// Selector and CIDR features the identities tell apart.
    classified: HashSet<Feature>,
    /// Egress named ports (name, protocol) the identities tell apart.
    named_ports: BTreeSet<(Arc<str>, u8)>,
    grants: GrantCache,
    generation: u64,
}

impl Session {
    pub(super) fn new(
        model: &PolicyModel,
        normaliser: Normaliser,
        policies: HashMap<String, BTreeMap<String, Arc<Policy>>>,
        local: HashMap<String, Vec<PodInfo>>,
        named_ports: BTreeSet<(Arc<str>, u8)>,
        grants: GrantCache,
        generation: u64,
    ) -> Self {
        let node: HashSet<Ipv4Addr> = model.node.addresses.iter().copied().collect();
        let mut seen = HashSet::new();
        let pods = model
            .pods
            .iter()
            .filter(|p| !node.contains(&p.ip) && seen.insert(p.ip))
            .map(|p| (p.ip, p.namespace.clone(), p.labels.clone()))
            .collect();
        let mut classified: HashSet<Feature> = normaliser
            .selector_peers()
            .map(|p| Feature::Selector(p.key.clone()))
            .collect();
        classified.extend(
            normaliser
                .blocks()
                .flat_map(|b| std::iter::once(b.cidr).chain(b.except.iter().copied()))
                .map(Feature::Cidr),
        );
        Self {
            named_ports,
            normaliser,
            policies,
            local,
            pods,
            namespaces: model.namespaces.clone(),
            classified,
            grants,
            generation,
        }
    }

    /// Makes `peer` a feature of the classes whose members it selects, splitting the classes
    /// it selects only part of (numbers from `allocator`); returns the splits (old class, new
    /// class).
    fn classify_selector(
        &mut self,
        identities: &mut Identities,
        allocator: &mut IdentityAllocator,
        peer: &SelectorPeer,
        added: &mut bool,
    ) -> Vec<(u32, u32)> {
        let feature = Feature::Selector(peer.key.clone());
        if !self.classified.insert(feature.clone()) {
            return Vec::new();
        }
        *added = true;
        let mut selected: BTreeMap<u32, Vec<IpcacheKey>> = BTreeMap::new();
        for (ip, namespace, labels) in &self.pods {
            if peer.matches(namespace, &labels_of(&self.namespaces, namespace), labels)
                && let Some(id) = identities.pods.get(ip)
            {
                selected.entry(*id).or_default().push(IpcacheKey::host(*ip));
            }
        }
        let mut splits = Vec::new();
        let mut holders = Vec::new();
        for (id, mut members) in selected {
            let Some(class) = identities.classes.get_mut(&id) else {
                continue;
            };
            if class.members.len() == members.len() {
                let at = class
                    .features
                    .binary_search(&feature)
                    .unwrap_or_else(|at| at);
                class.features.insert(at, feature.clone());
                holders.push(id);
                continue;
            }
            // A split: the selected members move to a new class.
            members.sort();
            class.members.retain(|m| members.binary_search(m).is_err());
            class.pods -= members.len();
            let mut features = class.features.clone();
            let at = features.binary_search(&feature).unwrap_or_else(|at| at);
            features.insert(at, feature.clone());
            let new = allocator.split(&members);
            for f in &features {
                identities
                    .by_feature
                    .entry(f.clone())
                    .or_default()
                    .push(new);
            }
            for m in &members {
                identities.pods.insert(m.address, new);
            }
            identities.classes.insert(
                new,
                IdentityClass {
                    id: new,
                    features,
                    pods: members.len(),
                    members,
                },
            );
            splits.push((id, new));
        }
        identities
            .by_feature
            .entry(feature)
            .or_default()
            .extend(holders);
        splits
    }

    /// Whether the identities tell apart every peer `policy` names, after classifying its new
    /// selector peers (`splits` collects the classes split, `added` says whether any
    /// identity changed).
    fn covers(
        &mut self,
        identities: &mut Identities,
        allocator: &mut IdentityAllocator,
        policy: &Policy,
        splits: &mut Vec<(u32, u32)>,
        added: &mut bool,
    ) -> bool {
        for direction in [Direction::Ingress, Direction::Egress] {
            for rule in policy.rules(direction).into_iter().flatten() {
                for peer in rule.peers.iter().flatten() {
                    match peer {
                        Peer::Selector(s) => {
                            splits.extend(self.classify_selector(identities, allocator, s, added));
                        }
                        Peer::Block(b) => {
                            if !std::iter::once(&b.cidr)
                                .chain(&b.except)
                                .all(|c| self.classified.contains(&Feature::Cidr(*c)))
                            {
                                return false;
                            }
                        }
                    }
                }
                if direction == Direction::Egress
                    && !egress_named_ports(std::iter::once(rule)).is_subset(&self.named_ports)
                {
                    return false;
                }
            }
        }
        true
    }
}

/// Why [`PolicyCompiler::update_policy`] could not apply a change alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeedsCompile {
    /// `last` is not this compiler's latest compile (or there was none).
    NoSession,
    /// The policy names an ipBlock CIDR or an egress named port no identity tells apart.
    NewIdentities,
}

/// What one policy's change did to the last compile.
#[derive(Debug, Clone, Default)]
pub struct EndpointUpdate {
    /// The local pods whose entries may have changed: those the policy selects (recompiled)
    /// and those with entries for a class that split.
    pub endpoints: Vec<Ipv4Addr>,
    /// Their ENDPOINTS and POLICY entries now, and the IPCACHE entries that changed.
    pub desired: Desired,
    /// Rule ids released.
    pub rules_removed: Vec<u32>,
    /// Rule ids handed out.
    pub rules_added: Vec<(u32, RuleRef)>,
    /// Whether identity classes changed (a selector peer no other policy names: new
    /// features, split classes).
    pub features_added: bool,
    /// Classes split: (old number, new number).
    pub splits: Vec<(u32, u32)>,
}

impl PolicyCompiler {
    /// Applies the change of NetworkPolicy `namespace`/`name` to `policy` (`None`: deleted) to
    /// `last`, which must be this compiler's latest compile (as updated by earlier calls), and
    /// returns the endpoints it recompiled with their new entries. `Err` when the change needs
    /// a full [`Self::compile`] (nothing has been changed then but identities gaining
    /// features, which a full compile redoes anyway).
    pub fn update_policy(
        &mut self,
        last: &mut Compiled,
        namespace: &str,
        name: &str,
        policy: Option<&NetworkPolicy>,
    ) -> Result<EndpointUpdate, NeedsCompile> {
        let session = match self.session.as_mut() {
            Some(s) if s.generation == last.generation => s,
            _ => return Err(NeedsCompile::NoSession),
        };
        let new = policy.map(|p| session.normaliser.policy(p));
        let mut features_added = false;
        let mut splits = Vec::new();
        if let Some(new) = &new
            && !session.covers(
                &mut last.identities,
                &mut self.identities,
                new,
                &mut splits,
                &mut features_added,
            )
        {
            self.session = None;
            return Err(NeedsCompile::NewIdentities);
        }
        // Split classes: every entry naming the old class gets a twin naming the new one, the
        // moved members' IPCACHE (and, for local pods, ENDPOINTS) entries follow.
        let mut touched: HashSet<Ipv4Addr> = HashSet::new();
        let mut ipcache_changed: Vec<IpcacheKey> = Vec::new();
        if !splits.is_empty() {
            let twins: HashMap<u32, Vec<u32>> =
                splits.iter().fold(HashMap::new(), |mut m, (old, new)| {
                    m.entry(*old).or_insert_with(Vec::new).push(*new);
                    m
                });
            let copies: Vec<(PolicyKey, u32)> = last
                .desired
                .policy
                .iter()
                .flat_map(|(key, rule)| {
                    twins.get(&key.identity()).into_iter().flatten().map(|new| {
                        let mut twin = *key;
                        twin.data.identity_be = new.to_be();
                        (twin, *rule)
                    })
                })
                .collect();
            for (key, rule) in copies {
                touched.insert(key.endpoint());
                last.desired.policy.insert(key, rule);
            }
            for (_, new) in &splits {
                for m in &last.identities.classes[new].members {
                    last.desired.ipcache.insert(*m, *new);
                    ipcache_changed.push(*m);
                    if let Some(e) = last.desired.endpoints.get_mut(&m.address) {
                        e.identity = *new;
                        touched.insert(m.address);
                    }
                }
            }
            session.grants = GrantCache::new(&last.identities);
        }
        let in_namespace = session.policies.entry(namespace.to_owned()).or_default();
        let old = in_namespace.get(name).cloned();
        let selects = |p: &Option<Arc<Policy>>, pod: &PodInfo| {
            p.as_ref()
                .and_then(|p| p.target.as_ref())
                .is_some_and(|s| s.matches(&pod.labels))
        };
        let new = new.map(Arc::new);
        let pods: Vec<&PodInfo> = session
            .local
            .get(namespace)
            .into_iter()
            .flatten()
            .filter(|pod| selects(&old, pod) || selects(&new, pod))
            .collect();
        if let Some(old) = &old {
            session.grants.forget(old);
        }
        let old_rules = old.as_deref().map(rule_refs).unwrap_or_default();
        let new_rules = new.as_deref().map(rule_refs).unwrap_or_default();
        match &new {
            Some(p) => in_namespace.insert(name.to_owned(), p.clone()),
            None => in_namespace.remove(name),
        };
        let (rules_removed, rules_added) = self.rule_ids.replace(&old_rules, &new_rules);
        let recompiled: Vec<Ipv4Addr> = pods.iter().map(|p| p.ip).collect();
        let mut entries: HashMap<PolicyKey, u32> = HashMap::new();
        let mut values: BTreeMap<Ipv4Addr, EndpointPolicy> = BTreeMap::new();
        for pod in pods {
            let out = endpoint(
                pod,
                in_namespace.values().map(|p| &**p),
                &self.rule_ids,
                &mut session.grants,
                &last.identities,
            );
            for direction in [Direction::Ingress, Direction::Egress] {
                last.selected_by.remove(&(pod.ip, direction));
            }
            if out.flags == 0 {
                continue;
            }
            values.insert(
                pod.ip,
                EndpointPolicy {
                    flags: out.flags,
                    identity: last.identities.pods[&pod.ip],
                },
            );
            entries.extend(out.entries);
            for (direction, names) in out.selected_by {
                last.selected_by.insert((pod.ip, direction), names);
            }
        }
        // `last` follows: the recompiled endpoints' entries replaced, the rule table updated.
        let recompiled_set: HashSet<Ipv4Addr> = recompiled.iter().copied().collect();
        last.desired
            .policy
            .retain(|key, _| !recompiled_set.contains(&key.endpoint()));
        last.desired.policy.extend(entries);
        last.desired
            .endpoints
            .retain(|ip, _| !recompiled_set.contains(ip));
        last.desired.endpoints.extend(values);
        for id in &rules_removed {
            last.rules.remove(id);
        }
        last.rules.extend(rules_added.iter().cloned());
        // The update: every touched endpoint's entries as `last` now holds them.
        touched.extend(recompiled);
        let desired = Desired {
            ipcache: ipcache_changed
                .iter()
                .filter_map(|k| last.desired.ipcache.get(k).map(|v| (*k, *v)))
                .collect(),
            endpoints: last
                .desired
                .endpoints
                .iter()
                .filter(|(ip, _)| touched.contains(ip))
                .map(|(ip, v)| (*ip, *v))
                .collect(),
            policy: last
                .desired
                .policy
                .iter()
                .filter(|(k, _)| touched.contains(&k.endpoint()))
                .map(|(k, v)| (*k, *v))
                .collect(),
        };
        let update = EndpointUpdate {
            endpoints: touched.into_iter().collect(),
            desired,
            rules_removed,
            rules_added,
            features_added,
            splits,
        };
        Ok(update)
    }
}

//! One NetworkPolicy's change applied to the last compile without compiling the rest.
//!
//! A policy only contributes entries to the local pods of its own namespace its `podSelector`
//! matches, so a change of one policy recompiles exactly the local pods the old or the new
//! version selects, from their namespace's policies (kept normalised from the last compile, with
//! what each rule grants). The identities stay as they are, which is exact as long as they
//! already tell apart every peer the new version names:
//! - a selector peer classified by the last compile, or one whose selected pods are whole
//!   classes (every member of each class is a pod it selects, or none is): it becomes a feature
//!   of those classes, without a number changing;
//! - ipBlock CIDRs and `except` CIDRs, and named ports of egress rules, the last compile already
//!   classified (their IPCACHE entries exist).
//!
//! Anything else (a new CIDR, a selector that splits a class, a new egress named port) needs
//! new identities: [`PolicyCompiler::update_policy`] says so and the caller compiles the whole
//! model. Identities a removed peer no longer needs stay split until the next full compile:
//! classes finer than necessary give the same verdicts.
//!
//! Cost: normalising the one policy, one selector match per policy of its namespace for each
//! pod it selects, the grants of the rules involved, and one pass over the endpoints' entries
//! in the diff; independent of the number of policies elsewhere.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::Ipv4Addr,
    sync::Arc,
};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use keelson_ebpf_common::EndpointPolicy;

use super::{
    compile::{Compiled, Desired, PolicyCompiler, RuleRef, endpoint, rule_refs},
    grants::GrantCache,
    identity::{Feature, Identities, egress_named_ports},
    model::{NAMESPACE_NAME_LABEL, PodInfo, PolicyModel},
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

    /// Makes `peer` a feature of the classes whose members it selects, if it selects whole
    /// classes; `false` when it would split one.
    fn classify_selector(
        &mut self,
        identities: &mut Identities,
        peer: &SelectorPeer,
        added: &mut bool,
    ) -> bool {
        let feature = Feature::Selector(peer.key.clone());
        if self.classified.contains(&feature) {
            return true;
        }
        *added = true;
        let mut selected: BTreeMap<u32, usize> = BTreeMap::new();
        for (ip, namespace, labels) in &self.pods {
            let default_labels;
            let namespace_labels = match self.namespaces.get(namespace) {
                Some(l) => l,
                None => {
                    default_labels =
                        BTreeMap::from([(NAMESPACE_NAME_LABEL.to_owned(), namespace.clone())]);
                    &default_labels
                }
            };
            if peer.matches(namespace, namespace_labels, labels) {
                let Some(id) = identities.pods.get(ip) else {
                    return false;
                };
                *selected.entry(*id).or_default() += 1;
            }
        }
        if selected.iter().any(|(id, n)| {
            identities
                .classes
                .get(id)
                .is_none_or(|c| c.members.len() != *n)
        }) {
            return false;
        }
        for id in selected.keys() {
            if let Some(class) = identities.classes.get_mut(id) {
                let at = class
                    .features
                    .binary_search(&feature)
                    .unwrap_or_else(|at| at);
                class.features.insert(at, feature.clone());
            }
        }
        identities
            .by_feature
            .insert(feature.clone(), selected.into_keys().collect());
        self.classified.insert(feature);
        true
    }

    /// Whether the identities tell apart every peer `policy` names (classifying new selector
    /// peers that select whole classes, and then setting `added`).
    fn covers(&mut self, identities: &mut Identities, policy: &Policy, added: &mut bool) -> bool {
        for direction in [Direction::Ingress, Direction::Egress] {
            for rule in policy.rules(direction).into_iter().flatten() {
                for peer in rule.peers.iter().flatten() {
                    let known = match peer {
                        Peer::Selector(s) => self.classify_selector(identities, s, added),
                        Peer::Block(b) => std::iter::once(&b.cidr)
                            .chain(&b.except)
                            .all(|c| self.classified.contains(&Feature::Cidr(*c))),
                    };
                    if !known {
                        return false;
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
    /// The policy names a peer the identities do not tell apart.
    NewIdentities,
}

/// What one policy's change did to the last compile.
#[derive(Debug, Clone, Default)]
pub struct EndpointUpdate {
    /// The local pods recompiled.
    pub endpoints: Vec<Ipv4Addr>,
    /// Their ENDPOINTS and POLICY entries now (IPCACHE: empty, unchanged).
    pub desired: Desired,
    /// Rule ids released.
    pub rules_removed: Vec<u32>,
    /// Rule ids handed out.
    pub rules_added: Vec<(u32, RuleRef)>,
    /// Whether identity classes gained features (a selector peer no other policy names).
    pub features_added: bool,
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
        if let Some(new) = &new
            && !session.covers(&mut last.identities, new, &mut features_added)
        {
            self.session = None;
            return Err(NeedsCompile::NewIdentities);
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
        let mut update = EndpointUpdate {
            endpoints: pods.iter().map(|p| p.ip).collect(),
            rules_removed,
            rules_added,
            features_added,
            ..EndpointUpdate::default()
        };
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
            update.desired.endpoints.insert(
                pod.ip,
                EndpointPolicy {
                    flags: out.flags,
                    identity: last.identities.pods[&pod.ip],
                },
            );
            update.desired.policy.extend(out.entries);
            for (direction, names) in out.selected_by {
                last.selected_by.insert((pod.ip, direction), names);
            }
        }
        // `last` follows: the endpoints' entries replaced, the rule table updated.
        let touched: HashSet<Ipv4Addr> = update.endpoints.iter().copied().collect();
        last.desired
            .policy
            .retain(|key, _| !touched.contains(&key.endpoint()));
        last.desired
            .policy
            .extend(update.desired.policy.iter().map(|(k, v)| (*k, *v)));
        last.desired.endpoints.retain(|ip, _| !touched.contains(ip));
        last.desired.endpoints.extend(&update.desired.endpoints);
        for id in &update.rules_removed {
            last.rules.remove(id);
        }
        last.rules.extend(update.rules_added.iter().cloned());
        Ok(update)
    }
}

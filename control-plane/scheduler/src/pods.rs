//! What the scheduler keeps of every pod bound to a node (Kubernetes' `framework.PodInfo`):
//! enough to count it for inter-pod affinity, topology spreading and preemption without
//! holding the whole object.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Pod, PodAffinityTerm, WeightedPodAffinityTerm},
    apimachinery::pkg::apis::meta::v1 as metav1,
};
use keelson_api::selectors::{LabelRequirement, LabelSelector};

use crate::plugins::{self, HostPort, Resources};

/// The labels of every namespace, by name (for `namespaceSelector`).
pub type NamespaceLabels = BTreeMap<String, BTreeMap<String, String>>;

/// The priority of pods without one (kube's `DefaultPriorityWhenNoDefaultClassExists`).
pub const DEFAULT_PRIORITY: i32 = 0;

/// One bound (or assumed) pod.
#[derive(Debug, Clone, Default)]
pub struct PodInfo {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `spec.priority` (0 when absent).
    pub priority: i32,
    /// Being deleted (`metadata.deletionTimestamp` set).
    pub terminating: bool,
    /// What it requests ([`plugins::pod_requests`]).
    pub requests: Resources,
    /// The host ports it holds.
    pub host_ports: Vec<HostPort>,
    /// Its controller owner's uid.
    pub owner: Option<String>,
    /// Its required pod anti-affinity terms (which other pods must respect too).
    pub required_anti_affinity: Vec<PodAffinityTerm>,
    /// Its preferred pod affinity terms (counted symmetrically when scoring).
    pub preferred_affinity: Vec<WeightedPodAffinityTerm>,
    /// Its preferred pod anti-affinity terms (counted symmetrically when scoring).
    pub preferred_anti_affinity: Vec<WeightedPodAffinityTerm>,
}

/// The pod's `spec.priority`, or [`DEFAULT_PRIORITY`].
pub fn priority(pod: &Pod) -> i32 {
    pod.spec
        .as_ref()
        .and_then(|s| s.priority)
        .unwrap_or(DEFAULT_PRIORITY)
}

impl PodInfo {
    /// What the scheduler keeps of `pod`.
    pub fn new(pod: &Pod) -> Self {
        let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
        let anti = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let with = affinity.and_then(|a| a.pod_affinity.as_ref());
        Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            labels: pod.metadata.labels.clone().unwrap_or_default(),
            priority: priority(pod),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            requests: plugins::pod_requests(pod),
            host_ports: plugins::pod_host_ports(pod),
            owner: plugins::owner_uid(pod).map(str::to_owned),
            required_anti_affinity: anti
                .and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .clone()
                })
                .unwrap_or_default(),
            preferred_affinity: with
                .and_then(|a| {
                    a.preferred_during_scheduling_ignored_during_execution
                        .clone()
                })
                .unwrap_or_default(),
            preferred_anti_affinity: anti
                .and_then(|a| {
                    a.preferred_during_scheduling_ignored_during_execution
                        .clone()
                })
                .unwrap_or_default(),
        }
    }
}

/// A pod affinity term made ready to match pods: the namespaces it covers and its selector
/// (Kubernetes' `framework.AffinityTerm`).
#[derive(Debug, Clone)]
pub struct Term {
    /// The topology key.
    pub topology_key: String,
    /// Namespaces named in `namespaces` (or the owner's when neither list nor selector).
    namespaces: Vec<String>,
    /// `namespaceSelector`, parsed (`Some(empty)` matches every namespace).
    namespace_selector: Option<LabelSelector>,
    /// `labelSelector` with `matchLabelKeys`/`mismatchLabelKeys` merged in; `None` matches no
    /// pod (an absent or invalid selector).
    selector: Option<LabelSelector>,
}

impl Term {
    /// Prepares `term` of a pod in `namespace` with `labels`: an absent `labelSelector`
    /// matches no pod; `matchLabelKeys` add `key in (owner's value)` and
    /// `mismatchLabelKeys` `key notin (owner's value)` for keys the owner has.
    pub fn new(term: &PodAffinityTerm, namespace: &str, labels: &BTreeMap<String, String>) -> Self {
        let mut selector = term
            .label_selector
            .as_ref()
            .and_then(|s| LabelSelector::from_label_selector(s).ok());
        if let Some(selector) = selector.as_mut() {
            for key in term.match_label_keys.iter().flatten() {
                if let Some(value) = labels.get(key) {
                    selector
                        .requirements
                        .push(LabelRequirement::In(key.clone(), vec![value.clone()]));
                }
            }
            for key in term.mismatch_label_keys.iter().flatten() {
                if let Some(value) = labels.get(key) {
                    selector
                        .requirements
                        .push(LabelRequirement::NotIn(key.clone(), vec![value.clone()]));
                }
            }
        }
        let namespace_selector = term
            .namespace_selector
            .as_ref()
            .map(|s| LabelSelector::from_label_selector(s).unwrap_or_else(|_| nothing()));
        let mut namespaces = term.namespaces.clone().unwrap_or_default();
        if namespaces.is_empty() && namespace_selector.is_none() {
            namespaces.push(namespace.to_owned());
        }
        Self {
            topology_key: term.topology_key.clone(),
            namespaces,
            namespace_selector,
            selector,
        }
    }

    /// Whether `pod` is one of the pods the term is about.
    pub fn matches(&self, pod: &PodInfo, namespaces: &NamespaceLabels) -> bool {
        let Some(selector) = &self.selector else {
            return false;
        };
        let in_namespace = self.namespaces.contains(&pod.namespace)
            || self.namespace_selector.as_ref().is_some_and(|s| {
                let empty = BTreeMap::new();
                s.matches(namespaces.get(&pod.namespace).unwrap_or(&empty))
            });
        in_namespace && selector.matches(&pod.labels)
    }
}

/// A selector that matches nothing (for an invalid `namespaceSelector`).
fn nothing() -> LabelSelector {
    LabelSelector {
        requirements: vec![
            LabelRequirement::Exists(String::new()),
            LabelRequirement::DoesNotExist(String::new()),
        ],
    }
}

/// A typed label selector as [`LabelSelector`]: `None` (matches nothing) when absent or
/// invalid.
pub fn selector_of(selector: Option<&metav1::LabelSelector>) -> Option<LabelSelector> {
    selector.and_then(|s| LabelSelector::from_label_selector(s).ok())
}

/// Why a plugin rejects a node: Kubernetes' wording, and whether evicting pods could change
/// it (kube's `Unschedulable`, as opposed to `UnschedulableAndUnresolvable`: preemption only
/// tries nodes whose rejections are all resolvable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// What `kubectl describe pod` shows, counted per node.
    pub reason: &'static str,
    /// Whether removing pods from the node could make it fit.
    pub resolvable: bool,
}

/// Kube's `DefaultNormalizeScore`: scales scores so the highest is 100 (all stay 0 when every
/// score is 0); `reverse` turns the scale round (the highest raw score gets 0).
pub fn normalize(scores: &mut [f64], reverse: bool) {
    let max = scores.iter().copied().fold(0.0_f64, f64::max);
    if max <= 0.0 {
        if reverse {
            scores.iter_mut().for_each(|s| *s = 100.0);
        }
        return;
    }
    for score in scores.iter_mut() {
        let scaled = *score * 100.0 / max;
        *score = if reverse { 100.0 - scaled } else { scaled };
    }
}

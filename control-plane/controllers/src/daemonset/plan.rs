//! The DaemonSet controller's decisions, without IO, after Kubernetes'
//! `pkg/controller/daemon` (`daemon_controller.go`, `update.go`, `util/daemonset_util.go`):
//! which nodes should run a daemon pod ([`node_should_run`]), the pods to create and delete on
//! each node ([`manage`]), the rolling update's next step within `maxUnavailable` and
//! `maxSurge` ([`rolling_update`]), the pod each node gets ([`pod_template`],
//! [`pin_to_node`]) and the status ([`status`]).
//!
//! Daemon pods are placed by the scheduler, as in Kubernetes: a pod's node is a required node
//! affinity term `matchFields metadata.name In [<node>]`, and `spec.nodeName` stays empty until
//! the scheduler binds it.

use std::{cmp::Ordering, collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{
            Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
            Pod, PodSpec, PodTemplateSpec, Taint, Toleration,
        },
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use keelson_api::{
    selectors::{LabelSelector, node_selector_matches},
    tolerations::{NO_EXECUTE, NO_SCHEDULE, blocks_scheduling, find_untolerated},
};

use crate::{pods, replicaset};

/// The pod label holding the hash of the revision a daemon pod was made from.
pub const REVISION_HASH_LABEL: &str = "controller-revision-hash";
/// The pod label holding the DaemonSet's template generation (when the API server keeps one).
pub const TEMPLATE_GENERATION_LABEL: &str = "pod-template-generation";
/// The DaemonSet annotation the API server keeps its template generation in.
pub const TEMPLATE_GENERATION_ANNOTATION: &str = "deprecated.daemonset.template.generation";
/// The node field a daemon pod's affinity pins it with.
const NAME_FIELD: &str = "metadata.name";

/// The tolerations every daemon pod gets (`AddOrUpdateDaemonPodTolerations`): node problems
/// neither evict it nor keep it off a node.
const DEFAULT_TOLERATIONS: [(&str, &str); 6] = [
    ("node.kubernetes.io/not-ready", NO_EXECUTE),
    ("node.kubernetes.io/unreachable", NO_EXECUTE),
    ("node.kubernetes.io/disk-pressure", NO_SCHEDULE),
    ("node.kubernetes.io/memory-pressure", NO_SCHEDULE),
    ("node.kubernetes.io/pid-pressure", NO_SCHEDULE),
    ("node.kubernetes.io/unschedulable", NO_SCHEDULE),
];
/// The extra toleration of host-network daemon pods.
const NETWORK_UNAVAILABLE: &str = "node.kubernetes.io/network-unavailable";

/// Adds the daemon pods' default tolerations to `spec`, replacing one that matches a default's
/// key, operator, value and effect (Kubernetes' `AddOrUpdateTolerationInPodSpec`, so a
/// `tolerationSeconds` there is dropped).
pub fn add_default_tolerations(spec: &mut PodSpec) {
    let host_network = spec.host_network == Some(true);
    let list = spec.tolerations.get_or_insert_with(Vec::new);
    let extra = host_network.then_some((NETWORK_UNAVAILABLE, NO_SCHEDULE));
    for (key, effect) in DEFAULT_TOLERATIONS.into_iter().chain(extra) {
        let toleration = Toleration {
            key: Some(key.to_owned()),
            operator: Some("Exists".to_owned()),
            effect: Some(effect.to_owned()),
            ..Toleration::default()
        };
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let same = |t: &Toleration| {
            text(&t.key) == key
                && text(&t.operator) == "Exists"
                && text(&t.value).is_empty()
                && text(&t.effect) == effect
        };
        match list.iter_mut().find(|t| same(t)) {
            Some(existing) => *existing = toleration,
            None => list.push(toleration),
        }
    }
}

/// The template generation the API server recorded on the DaemonSet, if any (an unparsable
/// one counts as none).
pub fn template_generation(ds: &DaemonSet) -> Option<i64> {
    ds.metadata
        .annotations
        .as_ref()?
        .get(TEMPLATE_GENERATION_ANNOTATION)?
        .parse()
        .ok()
}

/// Whether a pod was made from the current revision: its hash label is `hash`, or its
/// generation label is the DaemonSet's template generation (`IsPodUpdated`).
pub fn is_pod_updated(pod: &Pod, hash: &str, generation: Option<i64>) -> bool {
    let labels = pod.metadata.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    let hash_matches = !hash.is_empty() && label(REVISION_HASH_LABEL) == Some(hash);
    let generation_matches = generation
        .is_some_and(|g| label(TEMPLATE_GENERATION_LABEL) == Some(g.to_string().as_str()));
    hash_matches || generation_matches
}

/// The template new daemon pods are made from (`CreatePodTemplate`): the DaemonSet's, with the
/// default tolerations, the revision hash label and, when known, the generation label.
pub fn pod_template(ds: &DaemonSet, hash: &str) -> PodTemplateSpec {
    let mut template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    add_default_tolerations(template.spec.get_or_insert_with(PodSpec::default));
    let labels = template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(BTreeMap::new);
    if let Some(generation) = template_generation(ds) {
        labels.insert(TEMPLATE_GENERATION_LABEL.to_owned(), generation.to_string());
    }
    if !hash.is_empty() {
        labels.insert(REVISION_HASH_LABEL.to_owned(), hash.to_owned());
    }
    template
}

/// `affinity` with its required node affinity replaced by the single term
/// `matchFields metadata.name In [node]` (`ReplaceDaemonSetPodNodeNameNodeAffinity`); the
/// preferred terms and pod (anti-)affinity are kept.
pub fn pin_to_node(affinity: Option<Affinity>, node: &str) -> Affinity {
    let selector = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: NAME_FIELD.to_owned(),
                operator: "In".to_owned(),
                values: Some(vec![node.to_owned()]),
            }]),
            match_expressions: None,
        }],
    };
    let mut affinity = affinity.unwrap_or_default();
    affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default)
        .required_during_scheduling_ignored_during_execution = Some(selector);
    affinity
}

/// The node a daemon pod is for: its `spec.nodeName`, or before it is bound, the one value of
/// a `matchFields metadata.name In` requirement of its required node affinity
/// (`GetTargetNodeName`).
pub fn target_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(name) = spec.node_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(name.clone());
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms;
    terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == NAME_FIELD && r.operator == "In")
        .and_then(|r| match r.values.as_deref() {
            Some([one]) => Some(one.clone()),
            _ => None,
        })
}

fn node_name(node: &Node) -> &str {
    node.metadata.name.as_deref().unwrap_or_default()
}

fn node_taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default()
}

/// Whether `ds` should run a pod on `node` (`NodeShouldRunDaemonPod`): `(should_run,
/// should_continue_running)`. A node fits when the template's `nodeName` (if any) is the node,
/// its `nodeSelector` and required node affinity match the node, and the template's tolerations
/// with the daemon defaults tolerate every `NoSchedule`/`NoExecute` taint. A pod already on a
/// node that only fails the taints keeps running unless a `NoExecute` taint is not tolerated.
pub fn node_should_run(node: &Node, ds: &DaemonSet) -> (bool, bool) {
    let name = node_name(node);
    let mut spec = ds
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    if spec
        .node_name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != name)
    {
        return (false, false);
    }
    add_default_tolerations(&mut spec);
    let empty = BTreeMap::new();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let selector_fits = spec
        .node_selector
        .as_ref()
        .is_none_or(|s| LabelSelector::from_set(s).matches(labels));
    let affinity_fits = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .is_none_or(|required| node_selector_matches(required, name, labels));
    if !selector_fits || !affinity_fits {
        return (false, false);
    }
    let tolerations = spec.tolerations.as_deref().unwrap_or_default();
    let taints = node_taints(node);
    if find_untolerated(taints, tolerations, blocks_scheduling).is_some() {
        let evicted = find_untolerated(taints, tolerations, |t| t.effect == NO_EXECUTE).is_some();
        return (false, !evicted);
    }
    (true, true)
}

/// Oldest first, bound pods before unbound ones, then by name (`podByCreationTimestampAndPhase`).
pub fn by_age(a: &Pod, b: &Pod) -> Ordering {
    let bound = |p: &Pod| {
        p.spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty())
    };
    bound(b)
        .cmp(&bound(a))
        .then_with(|| {
            let time = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
            time(a).cmp(&time(b))
        })
        .then_with(|| a.metadata.name.cmp(&b.metadata.name))
}

/// The DaemonSet's pods by the node they are for; pods for no node are left out, and so are
/// finished (Succeeded/Failed) pods already being deleted.
pub fn pods_by_node(pods: &[Pod]) -> BTreeMap<String, Vec<&Pod>> {
    let mut map: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
    for pod in pods {
        let finished = matches!(pods::phase(pod), "Succeeded" | "Failed");
        if finished && pods::is_terminating(&pod.metadata) {
            continue;
        }
        if let Some(node) = target_node(pod) {
            map.entry(node).or_default().push(pod);
        }
    }
    map
}

/// `maxSurge`/`maxUnavailable` against `total`: an integer as is, a percentage rounded up
/// (`GetScaledValueFromIntOrPercent(.., true)`); absent or malformed is 0.
pub fn scaled(value: Option<&IntOrString>, total: i32) -> i32 {
    match value {
        None => 0,
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(text)) => text
            .strip_suffix('%')
            .and_then(|p| p.parse::<i64>().ok())
            .map_or(0, |percent| {
                let scaled = (percent * i64::from(total) + 99).div_euclid(100);
                i32::try_from(scaled).unwrap_or(i32::MAX)
            }),
    }
}

fn rolling(ds: &DaemonSet) -> Option<&k8s_openapi::api::apps::v1::RollingUpdateDaemonSet> {
    let strategy = ds.spec.as_ref()?.update_strategy.as_ref()?;
    if strategy.type_.as_deref().unwrap_or("RollingUpdate") != "RollingUpdate" {
        return None;
    }
    strategy.rolling_update.as_ref()
}

/// Whether the update strategy is `RollingUpdate` (the default) rather than `OnDelete`.
pub fn is_rolling_update(ds: &DaemonSet) -> bool {
    ds.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
}

/// `maxSurge` against `total` (0 unless the strategy is a rolling update).
pub fn surge_count(ds: &DaemonSet, total: i32) -> i32 {
    rolling(ds).map_or(0, |r| scaled(r.max_surge.as_ref(), total))
}

/// `maxUnavailable` against `total` (0 unless the strategy is a rolling update).
pub fn unavailable_count(ds: &DaemonSet, total: i32) -> i32 {
    rolling(ds).map_or(0, |r| scaled(r.max_unavailable.as_ref(), total))
}

/// Whether a node may briefly hold an old and a new pod (`AllowsSurge`).
pub fn allows_surge(ds: &DaemonSet) -> bool {
    surge_count(ds, 1) > 0
}

fn min_ready_seconds(ds: &DaemonSet) -> i32 {
    ds.spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0)
}

fn name_of(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

/// What [`manage`] decided.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Nodes that get a new daemon pod.
    pub create_on: Vec<String>,
    /// Pods to delete (excess, finished, misplaced).
    pub delete: Vec<String>,
    /// Failed pods, `(node, pod)`: deleted (and so replaced) subject to a back-off per node.
    pub failed: Vec<(String, String)>,
}

/// Per node, the pods to create and delete so each eligible node runs one daemon pod
/// (`podsShouldBeOnNode` over every node, `manage`): a missing pod is created; succeeded pods
/// and, when surging is not allowed, all but the oldest running pod are deleted (with surge,
/// an old and a new pod may share a node until the new one is available); pods on nodes that
/// should not run them are deleted, and so are unbound pods for nodes that no longer exist.
pub fn manage(
    ds: &DaemonSet,
    nodes: &[Node],
    by_node: &BTreeMap<String, Vec<&Pod>>,
    hash: &str,
    now: i64,
) -> Placement {
    let mut plan = Placement::default();
    let surge = allows_surge(ds);
    for node in nodes {
        let name = node_name(node);
        let (should_run, should_continue) = node_should_run(node, ds);
        let pods = by_node.get(name);
        match pods {
            None if should_run => plan.create_on.push(name.to_owned()),
            Some(pods) if should_continue => {
                let mut running: Vec<&Pod> = Vec::new();
                for pod in pods.iter().filter(|p| !pods::is_terminating(&p.metadata)) {
                    match pods::phase(pod) {
                        "Failed" => plan.failed.push((name.to_owned(), name_of(pod))),
                        "Succeeded" => plan.delete.push(name_of(pod)),
                        _ => running.push(pod),
                    }
                }
                running.sort_by(|a, b| by_age(a, b));
                if !surge {
                    plan.delete
                        .extend(running.iter().skip(1).map(|p| name_of(p)));
                    continue;
                }
                if running.is_empty() {
                    if should_run {
                        plan.create_on.push(name.to_owned());
                    }
                    continue;
                }
                if running.len() == 1 {
                    continue;
                }
                // Keep the oldest new and the oldest old pod; the old one goes once it is not
                // ready or the new one is available.
                let (mut oldest_new, mut oldest_old) = (None, None);
                for pod in running {
                    let slot = if pod
                        .metadata
                        .labels
                        .as_ref()
                        .and_then(|l| l.get(REVISION_HASH_LABEL))
                        .is_some_and(|h| h == hash)
                    {
                        &mut oldest_new
                    } else {
                        &mut oldest_old
                    };
                    if slot.is_none() {
                        *slot = Some(pod);
                    } else {
                        plan.delete.push(name_of(pod));
                    }
                }
                if let (Some(new), Some(old)) = (oldest_new, oldest_old)
                    && (!pods::is_ready(old)
                        || replicaset::is_available(new, min_ready_seconds(ds), now))
                {
                    plan.delete.push(name_of(old));
                }
            }
            Some(pods) if !should_continue => plan.delete.extend(
                pods.iter()
                    .filter(|p| !pods::is_terminating(&p.metadata))
                    .map(|p| name_of(p)),
            ),
            _ => {}
        }
    }
    // Unbound pods for nodes that are gone would never be scheduled.
    for (node, pods) in by_node {
        if nodes.iter().any(|n| node_name(n) == node) {
            continue;
        }
        plan.delete.extend(
            pods.iter()
                .filter(|p| {
                    p.spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_deref())
                        .is_none_or(str::is_empty)
                })
                .map(|p| name_of(p)),
        );
    }
    plan
}

/// The one new and one old (not terminating) pod of a node; `None` when it holds more than one
/// of either (`manage` prunes those first).
fn updated_and_old<'a>(
    pods: &[&'a Pod],
    hash: &str,
    generation: Option<i64>,
) -> Option<(Option<&'a Pod>, Option<&'a Pod>)> {
    let (mut new, mut old) = (None, None);
    for pod in pods.iter().filter(|p| !pods::is_terminating(&p.metadata)) {
        let slot = if is_pod_updated(pod, hash, generation) {
            &mut new
        } else {
            &mut old
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(*pod);
    }
    Some((new, old))
}

/// One rolling-update step (`rollingUpdate`): `(pods to delete, nodes to create a pod on)`.
///
/// Without surge, old pods are deleted (and `manage` replaces them) while fewer than
/// `maxUnavailable` of the nodes are without an available pod; unavailable old pods are
/// replaced regardless. With surge, a new pod is started beside up to `maxSurge` available
/// old ones (beside every unavailable one), and an old pod goes when the new one on its node
/// is available.
pub fn rolling_update(
    ds: &DaemonSet,
    nodes: &[Node],
    by_node: &BTreeMap<String, Vec<&Pod>>,
    hash: &str,
    now: i64,
) -> (Vec<String>, Vec<String>) {
    let generation = template_generation(ds);
    let min_ready = min_ready_seconds(ds);
    let available = |p: &Pod| replicaset::is_available(p, min_ready, now);
    let should_run = |name: &str| {
        nodes
            .iter()
            .find(|n| node_name(n) == name)
            .is_some_and(|n| node_should_run(n, ds).0)
    };
    let mut by_node: BTreeMap<String, Vec<&Pod>> = by_node.clone();
    let mut desired = 0;
    for node in nodes {
        if node_should_run(node, ds).0 {
            desired += 1;
            by_node.entry(node_name(node).to_owned()).or_default();
        }
    }
    let max_surge = surge_count(ds, desired);
    let mut max_unavailable = unavailable_count(ds, desired);
    if desired > 0 && max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }

    if max_surge == 0 {
        let mut unavailable = 0;
        let mut replace = Vec::new();
        let mut candidates = Vec::new();
        for pods in by_node.values() {
            let Some((new, old)) = updated_and_old(pods, hash, generation) else {
                unavailable += 1;
                continue;
            };
            match (new, old) {
                (None, None) | (Some(_), Some(_)) => unavailable += 1,
                (Some(new), None) => {
                    if !available(new) {
                        unavailable += 1;
                    }
                }
                (None, Some(old)) => {
                    if !available(old) {
                        replace.push(name_of(old));
                        unavailable += 1;
                    } else if unavailable < max_unavailable {
                        candidates.push(name_of(old));
                    }
                }
            }
        }
        let room = usize::try_from((max_unavailable - unavailable).max(0)).unwrap_or(0);
        replace.extend(candidates.into_iter().take(room));
        return (replace, Vec::new());
    }

    let mut delete = Vec::new();
    let mut misplaced = Vec::new();
    let mut replace_on = Vec::new();
    let mut candidate_nodes = Vec::new();
    let mut surging = 0;
    let mut available_count = 0;
    for (node, pods) in &by_node {
        let Some((new, old)) = updated_and_old(pods, hash, generation) else {
            surging += 1;
            continue;
        };
        if old.or(new).is_some_and(available) {
            available_count += 1;
        }
        match (new, old) {
            (_, None) => {}
            (None, Some(old)) if !available(old) => {
                if should_run(node) {
                    replace_on.push(node.clone());
                } else {
                    delete.push(name_of(old));
                }
            }
            (None, Some(old)) => {
                if !should_run(node) {
                    misplaced.push(name_of(old));
                } else if surging < max_surge {
                    candidate_nodes.push(node.clone());
                }
            }
            (Some(new), Some(old)) => {
                if available(new) {
                    delete.push(name_of(old));
                } else {
                    surging += 1;
                }
            }
        }
    }
    // Pods on nodes that no longer fit go only while enough others are available.
    let deletable = usize::try_from((available_count - desired).max(0)).unwrap_or(0);
    delete.extend(misplaced.into_iter().take(deletable));
    let room = usize::try_from((max_surge - surging).max(0)).unwrap_or(0);
    replace_on.extend(candidate_nodes.into_iter().take(room));
    (delete, replace_on)
}

/// The counts of a DaemonSet's status (`updateDaemonSetStatus`), from the oldest pod of each
/// node.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Nodes that should run a daemon pod.
    pub desired: i32,
    /// Of those, nodes that have one.
    pub current: i32,
    /// Nodes that have one but should not.
    pub misscheduled: i32,
    /// Nodes whose pod is ready.
    pub ready: i32,
    /// Nodes whose pod is of the current revision.
    pub updated: i32,
    /// Nodes whose pod has been ready for `minReadySeconds`.
    pub available: i32,
    /// `desired - available`.
    pub unavailable: i32,
}

/// The status counts of `ds` over `nodes`.
pub fn status(
    ds: &DaemonSet,
    nodes: &[Node],
    by_node: &BTreeMap<String, Vec<&Pod>>,
    hash: &str,
    now: i64,
) -> Counts {
    let generation = template_generation(ds);
    let mut counts = Counts::default();
    for node in nodes {
        let (should_run, _) = node_should_run(node, ds);
        let pods = by_node.get(node_name(node)).filter(|p| !p.is_empty());
        match pods {
            Some(pods) if should_run => {
                counts.desired += 1;
                counts.current += 1;
                let mut sorted = pods.clone();
                sorted.sort_by(|a, b| by_age(a, b));
                let pod = sorted[0];
                if pods::is_ready(pod) {
                    counts.ready += 1;
                    if replicaset::is_available(pod, min_ready_seconds(ds), now) {
                        counts.available += 1;
                    }
                }
                if is_pod_updated(pod, hash, generation) {
                    counts.updated += 1;
                }
            }
            None if should_run => counts.desired += 1,
            Some(_) => counts.misscheduled += 1,
            None => {}
        }
    }
    counts.unavailable = counts.desired - counts.available;
    counts
}

/// The back-off before a node's failed daemon pod is deleted again (Kubernetes'
/// `flowcontrol.Backoff` as the DaemonSet controller uses it: 1 s doubling to 15 min, forgotten
/// after twice the maximum without failures).
#[derive(Debug, Default, Clone)]
pub struct Backoff {
    entries: BTreeMap<String, (Duration, i64)>,
}

impl Backoff {
    const INITIAL: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(15 * 60);

    fn millis(d: Duration) -> i64 {
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }

    /// Whether `key` is still waiting at `now_ms` (milliseconds): the last failure was less
    /// than the current delay ago. `Some(delay)` when it is.
    pub fn waiting(&self, key: &str, now_ms: i64) -> Option<Duration> {
        let (delay, last) = self.entries.get(key)?;
        (now_ms - last < Self::millis(*delay)).then_some(*delay)
    }

    /// Records a failure of `key` at `now_ms`: the delay starts at 1 s and doubles up to 15
    /// min; an entry idle for more than twice the maximum starts over.
    pub fn next(&mut self, key: &str, now_ms: i64) {
        let delay = match self.entries.get(key) {
            Some((delay, last)) if now_ms - last <= 2 * Self::millis(Self::MAX) => {
                (*delay * 2).min(Self::MAX)
            }
            _ => Self::INITIAL,
        };
        self.entries.insert(key.to_owned(), (delay, now_ms));
    }

    /// Forgets entries idle for more than twice the maximum delay.
    pub fn gc(&mut self, now_ms: i64) {
        let max = 2 * Self::millis(Self::MAX);
        self.entries.retain(|_, (_, last)| now_ms - *last <= max);
    }
}

/// The back-off key of a node's failed pods: the DaemonSet, its observed generation, the node.
pub fn backoff_key(ds: &DaemonSet, node: &str) -> String {
    format!(
        "{}/{}/{node}",
        ds.metadata.uid.as_deref().unwrap_or_default(),
        ds.status
            .as_ref()
            .and_then(|s| s.observed_generation)
            .unwrap_or(0)
    )
}

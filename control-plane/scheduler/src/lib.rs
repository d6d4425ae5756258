//! keelson's scheduler: an ordinary kube-rs client that watches Pods and Nodes, places each
//! unscheduled pod (`spec.schedulerName` empty or `default-scheduler`) on the best node that
//! passes every filter in [`plugins`], and binds it through `pods/<name>/binding`. A pod that
//! fits nowhere gets a `PodScheduled=False` condition with the reason and a `FailedScheduling`
//! Event, and is tried again whenever a pod or a node changes.
#![forbid(unsafe_code)]

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use futures_util::StreamExt;
use k8s_openapi::{
    api::core::v1::{Binding, Event, EventSource, Namespace, Node, ObjectReference, Pod},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams, PostParams},
    runtime::{WatchStreamExt, reflector, watcher},
};
use serde_json::json;
use tokio::sync::Notify;

pub mod feasibility;
pub mod interpodaffinity;
pub mod nodeaffinity;
pub mod plugins;
pub mod pods;
pub mod podtopologyspread;
pub mod preemption;
#[cfg(test)]
mod tests_support;
pub mod volume_binding;

use feasibility::{Feasibility, Rejected};
use plugins::NodeInfo;
use pods::NamespaceLabels;

/// The name pods ask for in `spec.schedulerName` (or leave empty).
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often pending pods are retried without any change seen.
    pub resync: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            resync: Duration::from_secs(10),
        }
    }
}

fn is_pending_for_us(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.node_name.as_deref().is_none_or(str::is_empty)
        && spec
            .scheduler_name
            .as_deref()
            .is_none_or(|s| s.is_empty() || s == SCHEDULER_NAME)
        && pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
}

/// The outcome of placing one pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// The chosen node.
    Node(String),
    /// No node fits; the message says why.
    Unschedulable(String),
}

/// How many feasible nodes are enough to pick from among `total` (Kubernetes' adaptive
/// `percentageOfNodesToScore`): all below 100 nodes, else 50% less 1% per 125 nodes, at
/// least 5% and at least 100 nodes. At 5000 nodes: 500.
pub fn feasible_nodes_to_find(total: usize) -> usize {
    if total < 100 {
        return total;
    }
    let percent = 50usize.saturating_sub(total / 125).max(5);
    (total * percent / 100).max(100)
}

/// How many bindings are in flight at once.
const BIND_CONCURRENCY: usize = 64;

/// Picks a node for `pod` among `nodes` (pure): [`place_in`] with no namespace labels.
pub fn place(pod: &Pod, nodes: &[NodeInfo], tie_break: usize) -> Placement {
    place_in(pod, nodes, &NamespaceLabels::new(), tie_break).0
}

/// Picks a node for `pod` among `nodes` (pure): filters nodes starting at `tie_break` (mod the
/// node count) until [`feasible_nodes_to_find`] fit, then takes the highest weighted sum of
/// the scores (kube's default profile: least-allocated 1, node affinity 2, topology spread 2,
/// inter-pod affinity 2, owner spread 2); ties go to the first found, so equal nodes take
/// turns as `tie_break` moves. Also returns each rejected node's rejection by index (for
/// preemption).
pub fn place_in(
    pod: &Pod,
    nodes: &[NodeInfo],
    namespaces: &NamespaceLabels,
    tie_break: usize,
) -> (Placement, BTreeMap<usize, Rejected>) {
    let check = Feasibility::new(pod, nodes, namespaces);
    let request = check.request;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut rejections = BTreeMap::new();
    let mut feasible: Vec<&NodeInfo> = Vec::new();
    let enough = feasible_nodes_to_find(nodes.len());
    let start = tie_break.checked_rem(nodes.len()).unwrap_or(0);
    for index in (start..nodes.len()).chain(0..start) {
        let node = &nodes[index];
        match check.check(node) {
            Ok(()) => {
                feasible.push(node);
                if feasible.len() >= enough {
                    break;
                }
            }
            Err(rejected) => {
                *reasons.entry(rejected.reason.clone()).or_default() += 1;
                rejections.insert(index, rejected);
            }
        }
    }
    if feasible.is_empty() {
        let message = plugins::unschedulable_message(nodes.len(), &reasons);
        return (Placement::Unschedulable(message), rejections);
    }
    let owner = plugins::owner_uid(pod);
    let max = owner
        .map(|o| {
            feasible
                .iter()
                .map(|n| n.owners.get(o).copied().unwrap_or(0))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    let preferred = nodeaffinity::scores(pod, &feasible);
    let spread = check.spread.scores(&feasible);
    let affinity = check.affinity.scores(&feasible);
    let mut best: Option<(f64, usize)> = None;
    for (index, node) in feasible.iter().enumerate() {
        let score = plugins::score_least_allocated(&request, node)
            + plugins::score_spread(owner, node, max) * 2.0
            + (preferred[index] + spread[index] + affinity[index]) * 2.0;
        if best.is_none_or(|(s, _)| score > s + 1e-9) {
            best = Some((score, index));
        }
    }
    let index = best.map_or(0, |(_, i)| i);
    (Placement::Node(feasible[index].name.clone()), rejections)
}

/// Runs the scheduler until its watches end.
pub async fn run(client: Client, options: Options) -> anyhow::Result<()> {
    let notify = Arc::new(Notify::new());
    let (pods, pod_writer) = reflector::store::<Pod>();
    let (nodes, node_writer) = reflector::store::<Node>();
    let (namespaces, namespace_writer) = reflector::store::<Namespace>();
    let pod_stream = reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default()).default_backoff(),
    )
    .touched_objects();
    let node_stream = reflector(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).default_backoff(),
    )
    .touched_objects();
    let (volumes, volume_feeds) = volume_binding::watch(&client);
    let (budgets, budget_feed) = preemption::watch_budgets(&client);
    let namespace_stream = reflector(
        namespace_writer,
        watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff(),
    )
    .touched_objects();
    // The watch feeders end with this function (e.g. when leadership is lost).
    let mut feeders = tokio::task::JoinSet::new();
    for (name, stream) in [
        ("pods", pod_stream.map(|r| r.map(drop)).boxed()),
        ("nodes", node_stream.map(|r| r.map(drop)).boxed()),
        ("namespaces", namespace_stream.map(|r| r.map(drop)).boxed()),
    ]
    .into_iter()
    .chain(volume_feeds)
    .chain([budget_feed])
    {
        let notify = Arc::clone(&notify);
        feeders.spawn(async move {
            let mut stream = stream;
            while let Some(event) = stream.next().await {
                if let Err(error) = event {
                    tracing::debug!(watch = name, %error, "scheduler watch error");
                }
                notify.notify_one();
            }
        });
    }
    pods.wait_until_ready().await?;
    nodes.wait_until_ready().await?;
    volumes.wait_until_ready().await?;
    namespaces.wait_until_ready().await?;
    budgets.wait_until_ready().await?;
    tracing::info!("scheduler started");
    let mut scheduler = Scheduler {
        client,
        assumed: HashMap::new(),
        reported: HashMap::new(),
        turn: 0,
        volumes,
        budgets,
    };
    loop {
        let labels: NamespaceLabels = namespaces
            .state()
            .iter()
            .map(|n| (n.name_any(), n.labels().clone()))
            .collect();
        scheduler.pass(&pods.state(), &nodes.state(), &labels).await;
        tokio::select! {
            () = notify.notified() => {}
            () = tokio::time::sleep(options.resync) => {}
        }
    }
}

struct Scheduler {
    client: Client,
    /// Pods bound by us that the cache does not show bound yet: uid -> node.
    assumed: HashMap<String, String>,
    /// The last unschedulable message reported per pod uid.
    reported: HashMap<String, String>,
    turn: usize,
    /// Claims, volumes and classes ([`volume_binding`]).
    volumes: volume_binding::Volumes,
    /// PodDisruptionBudgets (preemption spares the pods they protect where it can).
    budgets: reflector::Store<k8s_openapi::api::policy::v1::PodDisruptionBudget>,
}

impl Scheduler {
    async fn pass(&mut self, pods: &[Arc<Pod>], nodes: &[Arc<Node>], namespaces: &NamespaceLabels) {
        let mut infos: Vec<NodeInfo> = nodes.iter().map(|n| NodeInfo::from_node(n)).collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        let index: HashMap<String, usize> = infos
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();
        let mut pending = Vec::new();
        let mut seen_bound = Vec::new();
        for pod in pods {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            let node = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty())
                .or_else(|| self.assumed.get(&uid).cloned());
            match node {
                Some(node) => {
                    if self.assumed.contains_key(&uid)
                        && pod
                            .spec
                            .as_ref()
                            .and_then(|s| s.node_name.as_deref())
                            .is_some()
                    {
                        seen_bound.push(uid.clone());
                    }
                    let finished = matches!(
                        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                        Some("Succeeded" | "Failed")
                    );
                    if let (Some(&i), false) = (index.get(&node), finished) {
                        infos[i].add_pod(pod);
                    }
                }
                None if is_pending_for_us(pod) => pending.push(Arc::clone(pod)),
                None => {}
            }
        }
        for uid in seen_bound {
            self.assumed.remove(&uid);
        }
        let live: std::collections::HashSet<&str> = pods
            .iter()
            .filter_map(|p| p.metadata.uid.as_deref())
            .collect();
        self.assumed.retain(|uid, _| live.contains(uid.as_str()));
        self.reported.retain(|uid, _| live.contains(uid.as_str()));
        // kube's PrioritySort: higher priority first, then older first.
        pending.sort_by_key(|p| {
            (
                std::cmp::Reverse(pods::priority(p)),
                p.metadata.creation_timestamp.clone().map(|t| t.0),
            )
        });
        // Place every pending pod, assuming each placement at once so the next pod sees it,
        // then bind them concurrently; a failed binding is forgotten and retried next pass.
        let mut binds = Vec::new();
        let mut unschedulable = Vec::new();
        let mut preemptions = Vec::new();
        for pod in pending {
            self.turn = self.turn.wrapping_add(1);
            // Pods with claims go through volume binding first (no preemption for them).
            let (placement, rejections) = if volume_binding::claim_names(&pod).is_empty() {
                place_in(&pod, &infos, namespaces, self.turn)
            } else {
                let placement =
                    volume_binding::place(&pod, &infos, namespaces, self.turn, &self.volumes);
                (placement, preemption::unresolvable_everywhere(infos.len()))
            };
            match placement {
                Placement::Node(node) => {
                    if let Some(&i) = index.get(&node) {
                        infos[i].add_pod(&pod);
                    }
                    self.assumed
                        .insert(pod.metadata.uid.clone().unwrap_or_default(), node.clone());
                    binds.push((pod, node));
                }
                Placement::Unschedulable(message) => {
                    let budgets = self.budgets.state();
                    let (message, nominate) =
                        preempt_decision(&pod, &infos, &rejections, namespaces, &budgets, message);
                    // A pod waiting for its victims to leave keeps its place on the node, so
                    // that lower-priority pods placed after it cannot take the room.
                    let reserved = nominate.as_ref().map(|c| c.node.clone()).or_else(|| {
                        pod.status
                            .as_ref()
                            .and_then(|s| s.nominated_node_name.clone())
                    });
                    if let Some(&i) = reserved.as_ref().and_then(|n| index.get(n)) {
                        infos[i].add_pod(&pod);
                    }
                    if let Some(candidate) = nominate {
                        preemptions.push((Arc::clone(&pod), candidate));
                    }
                    unschedulable.push((pod, message));
                }
            }
        }
        let (client, volumes) = (&self.client, &self.volumes);
        let failed: Vec<String> = futures_util::stream::iter(binds)
            .map(|(pod, node)| async move {
                let bound = volume_binding::bind(client, volumes, &pod, &node).await;
                (!bound).then(|| pod.metadata.uid.clone().unwrap_or_default())
            })
            .buffer_unordered(BIND_CONCURRENCY)
            .filter_map(std::future::ready)
            .collect()
            .await;
        for uid in failed {
            self.assumed.remove(&uid);
        }
        for (pod, candidate) in preemptions {
            preempt(&self.client, &pod, &candidate).await;
        }
        for (pod, message) in unschedulable {
            self.report(&pod, &message).await;
        }
    }

    /// Marks the pod unschedulable (condition + Event) when the reason is new.
    async fn report(&mut self, pod: &Pod, message: &str) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        if self.reported.get(&uid).is_some_and(|m| m == message) {
            return;
        }
        let namespace = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let condition = json!({"status": {"conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": message, "lastTransitionTime": Time(jiff::Timestamp::now()),
        }]}});
        if let Err(error) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(condition))
            .await
        {
            tracing::debug!(pod = %format!("{namespace}/{name}"), %error, "cannot mark unschedulable");
            return;
        }
        event(&self.client, pod, "Warning", "FailedScheduling", message).await;
        tracing::info!(pod = %format!("{namespace}/{name}"), message, "unschedulable");
        self.reported.insert(uid, message.to_owned());
    }
}

/// What preemption makes of a pod that fits nowhere: the unschedulable message (with kube's
/// `preemption: ...` part when no victims can make room) and the node to nominate.
fn preempt_decision(
    pod: &Pod,
    nodes: &[NodeInfo],
    rejections: &BTreeMap<usize, Rejected>,
    namespaces: &NamespaceLabels,
    budgets: &[Arc<k8s_openapi::api::policy::v1::PodDisruptionBudget>],
    message: String,
) -> (String, Option<preemption::Candidate>) {
    if let Err(why) = preemption::eligible(pod, nodes) {
        return (format!("{message} preemption: {why}"), None);
    }
    match preemption::select(pod, nodes, rejections, namespaces, budgets) {
        Ok(candidate) => (message, Some(candidate)),
        Err(why) => (format!("{message} preemption: {why}"), None),
    }
}

/// Deletes the victims (gracefully, with a `Preempted` Event each) and sets the pod's
/// `status.nominatedNodeName`; the pod is bound in a later pass, once they are gone.
async fn preempt(client: &Client, pod: &Pod, candidate: &preemption::Candidate) {
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    for (victim_namespace, victim, victim_uid) in &candidate.victims {
        let api: Api<Pod> = Api::namespaced(client.clone(), victim_namespace);
        let params = kube::api::DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                uid: Some(victim_uid.clone()),
                resource_version: None,
            }),
            ..kube::api::DeleteParams::default()
        };
        match api.delete(victim, &params).await {
            Ok(deleted) => {
                tracing::info!(
                    pod = %format!("{namespace}/{name}"), node = candidate.node,
                    victim = %format!("{victim_namespace}/{victim}"), "preempting"
                );
                if let Some(victim_pod) = deleted.left() {
                    let message = format!("Preempted by pod {uid} on node {}", candidate.node);
                    event(client, &victim_pod, "Normal", "Preempted", &message).await;
                }
            }
            Err(error) => {
                tracing::debug!(victim = %format!("{victim_namespace}/{victim}"), %error, "cannot preempt");
            }
        }
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let status = json!({"status": {"nominatedNodeName": candidate.node}});
    if let Err(error) = api
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await
    {
        tracing::debug!(pod = %format!("{namespace}/{name}"), %error, "cannot nominate a node");
    }
}

/// Binds `pod` to `node` through `pods/<name>/binding` and records a `Scheduled` Event.
async fn bind(client: &Client, pod: &Pod, node: &str) -> bool {
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            uid: pod.metadata.uid.clone(),
            ..ObjectMeta::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.to_owned()),
            ..ObjectReference::default()
        },
    };
    let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    match api
        .create_subresource::<Binding, serde_json::Value>(
            "binding",
            &name,
            &PostParams::default(),
            &binding,
        )
        .await
    {
        Ok(_) => {
            tracing::debug!(pod = %format!("{namespace}/{name}"), node, "bound");
            let message = format!("Successfully assigned {namespace}/{name} to {node}");
            event(client, pod, "Normal", "Scheduled", &message).await;
            true
        }
        Err(error) => {
            tracing::debug!(pod = %format!("{namespace}/{name}"), node, %error, "bind failed");
            false
        }
    }
}

/// Records an Event about `pod`.
async fn event(client: &Client, pod: &Pod, type_: &str, reason: &str, message: &str) {
    let namespace = pod.namespace().unwrap_or_default();
    let now = Time(jiff::Timestamp::now());
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", pod.name_any())),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(pod.name_any()),
            namespace: Some(namespace.clone()),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        source: Some(EventSource {
            component: Some(SCHEDULER_NAME.into()),
            host: None,
        }),
        reporting_component: Some(SCHEDULER_NAME.into()),
        reporting_instance: Some(SCHEDULER_NAME.into()),
        ..Event::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
    if let Err(error) = api.create(&PostParams::default(), &event).await {
        tracing::debug!(%error, "cannot record an event");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{
        api::core::v1::{NodeCondition, NodeSpec, NodeStatus, PodSpec},
        apimachinery::pkg::apis::meta::v1::OwnerReference,
    };

    fn node(name: &str) -> NodeInfo {
        NodeInfo::from_node(&Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..NodeCondition::default()
                }]),
                ..NodeStatus::default()
            }),
        })
    }

    fn replica() -> Pod {
        Pod {
            metadata: ObjectMeta {
                owner_references: Some(vec![OwnerReference {
                    uid: "rs-1".into(),
                    controller: Some(true),
                    ..OwnerReference::default()
                }]),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec::default()),
            ..Pod::default()
        }
    }

    #[test]
    fn replicas_spread_over_nodes() {
        let mut nodes = vec![node("a"), node("b"), node("c")];
        let mut placed = BTreeMap::<String, u32>::new();
        for turn in 0..6 {
            let Placement::Node(name) = place(&replica(), &nodes, turn) else {
                panic!("no node");
            };
            let info = nodes.iter_mut().find(|n| n.name == name).unwrap();
            info.add_pod(&replica());
            *placed.entry(name).or_default() += 1;
        }
        assert_eq!(placed.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
    }

    #[test]
    fn no_fit_explains_why() {
        let mut nodes = vec![node("a"), node("b")];
        nodes[0].ready = false;
        nodes[1].unschedulable = true;
        assert_eq!(
            place(&replica(), &nodes, 0),
            Placement::Unschedulable(
                "0/2 nodes are available: 1 node(s) were not ready, 1 node(s) were \
                 unschedulable."
                    .into()
            )
        );
    }

    #[test]
    fn anti_affine_replicas_take_one_node_each() {
        use k8s_openapi::{
            api::core::v1::{Affinity, PodAffinityTerm, PodAntiAffinity},
            apimachinery::pkg::apis::meta::v1::LabelSelector,
        };
        let affinity = Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                    label_selector: Some(LabelSelector {
                        match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                        ..LabelSelector::default()
                    }),
                    topology_key: "kubernetes.io/hostname".into(),
                    ..PodAffinityTerm::default()
                }]),
                ..PodAntiAffinity::default()
            }),
            ..Affinity::default()
        };
        let mut nodes: Vec<NodeInfo> = ["a", "b", "c"]
            .into_iter()
            .map(|n| tests_support::labelled_node(n, &[]))
            .collect();
        let mut outcomes = Vec::new();
        for i in 0..4 {
            let pod = tests_support::pod_with(
                "default",
                &format!("web-{i}"),
                &[("app", "web")],
                Some(affinity.clone()),
            );
            let (placement, _) = place_in(&pod, &nodes, &NamespaceLabels::new(), i);
            if let Placement::Node(name) = &placement {
                let node = nodes.iter_mut().find(|n| &n.name == name).expect("node");
                node.add_pod(&pod);
            }
            outcomes.push(placement);
        }
        let placed: std::collections::BTreeSet<_> = outcomes[..3]
            .iter()
            .map(|p| match p {
                Placement::Node(n) => n.clone(),
                Placement::Unschedulable(m) => panic!("unschedulable: {m}"),
            })
            .collect();
        assert_eq!(placed.len(), 3);
        assert_eq!(
            outcomes[3],
            Placement::Unschedulable(
                "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules.".into()
            )
        );
    }
}

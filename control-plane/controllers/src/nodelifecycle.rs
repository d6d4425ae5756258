//! Node lifecycle: a Node whose heartbeat (its Lease in `kube-node-lease`, `spec.renewTime`, or
//! its own `Ready` condition's `lastHeartbeatTime`) has not changed for the grace period
//! (`--node-monitor-grace-period`, 40 s) gets `Ready=Unknown` (`NodeStatusUnknown`) and the
//! `node.kubernetes.io/unreachable` taints (`NoSchedule` and `NoExecute`, as in Kubernetes); its pods get `Ready=False`, so Services stop
//! sending them traffic, and are deleted once their toleration of the taint runs out (the pod's
//! `tolerationSeconds`, or Kubernetes' default of 300 s for pods that do not mention the taint).
//! When the heartbeat moves again the taint goes, and the `Ready` condition the node had
//! before is restored, as are the pods' `Ready` conditions this controller set.
//!
//! Like Kubernetes, heartbeats are timed by when this controller *observes* them change, not by
//! the timestamps they carry, so clock skew between nodes and the control plane does not matter
//! and a freshly started controller (after a restart or a leader change) gives every node a
//! full grace period.

use std::{collections::HashMap, sync::Arc, time::Duration};

use jiff::Timestamp;
use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Node, NodeCondition, Pod, Taint},
};
use keelson_api::tolerations::{self, NO_EXECUTE, NoExecuteTolerance};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::{WatchStreamExt, reflector, reflector::Store, watcher},
};
use serde_json::json;

use crate::pods;

/// The taint an unreachable node gets.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";
/// The `Ready` condition reason of a node whose heartbeat stopped.
pub const NODE_STATUS_UNKNOWN: &str = "NodeStatusUnknown";
/// The pod `Ready` condition reason this controller sets.
pub const NODE_UNREACHABLE_POD_REASON: &str = "NodeUnreachable";
/// The namespace of node Leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";
/// The annotation holding the node's own `Ready` condition while it is unreachable.
pub const SAVED_READY_ANNOTATION: &str = "keelson.io/ready-before-unreachable";

/// The controller's timings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How long a heartbeat may stand still before the node is unreachable.
    pub grace_period: Duration,
    /// How often nodes are checked.
    pub period: Duration,
    /// How long pods that do not tolerate the unreachable taint explicitly stay on an
    /// unreachable node (Kubernetes' `DefaultTolerationSeconds`, 300 s).
    pub default_toleration: Duration,
}

/// What a node's heartbeat looked like when last observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// The Lease's `spec.renewTime`, as sent.
    pub lease_renew: Option<String>,
    /// The `Ready` condition's `lastHeartbeatTime`, as sent.
    pub status: Option<String>,
}

impl Heartbeat {
    /// The heartbeat of `node` with its `lease`.
    pub fn of(node: &Node, lease: Option<&Lease>) -> Self {
        let time = |t: &Timestamp| t.to_string();
        Self {
            lease_renew: lease
                .and_then(|l| l.spec.as_ref())
                .and_then(|s| s.renew_time.as_ref())
                .map(|t| time(&t.0)),
            status: ready_condition(node)
                .and_then(|c| c.last_heartbeat_time.as_ref())
                .map(|t| time(&t.0)),
        }
    }
}

/// A heartbeat and when it was first seen with that value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The heartbeat.
    pub heartbeat: Heartbeat,
    /// When this controller first saw it.
    pub observed_at: Timestamp,
}

/// The probe after observing `heartbeat` at `now`: unchanged if the heartbeat did not move.
pub fn observe(previous: Option<&Probe>, heartbeat: Heartbeat, now: Timestamp) -> Probe {
    match previous {
        Some(p) if p.heartbeat == heartbeat => p.clone(),
        _ => Probe {
            heartbeat,
            observed_at: now,
        },
    }
}

/// Whether a node whose heartbeat is `probe` is unreachable at `now`.
pub fn is_unreachable(probe: &Probe, now: Timestamp, grace: Duration) -> bool {
    now.duration_since(probe.observed_at).unsigned_abs() >= grace && now > probe.observed_at
}

/// The node's `Ready` condition.
pub fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// The node's unreachable taint, if it has one.
pub fn unreachable_taint(node: &Node) -> Option<&Taint> {
    node.spec
        .as_ref()?
        .taints
        .as_ref()?
        .iter()
        .find(|t| t.key == UNREACHABLE_TAINT && t.effect == NO_EXECUTE)
}

/// What a node needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeAction {
    /// Nothing.
    None,
    /// Ready=Unknown and the taint (whichever is missing).
    MarkUnreachable,
    /// Taint off, the node's own Ready condition back.
    Recover,
}

/// The action for `node`, given whether its heartbeat stopped.
pub fn node_action(node: &Node, unreachable: bool) -> NodeAction {
    let tainted = unreachable_taint(node).is_some();
    let ready = ready_condition(node);
    let marked_unknown = ready.is_some_and(|c| c.status == "Unknown");
    let ours = ready.is_some_and(|c| c.reason.as_deref() == Some(NODE_STATUS_UNKNOWN))
        && node.annotations().contains_key(SAVED_READY_ANNOTATION);
    if unreachable && !(tainted && marked_unknown) {
        NodeAction::MarkUnreachable
    } else if !unreachable && (tainted || ours) {
        NodeAction::Recover
    } else {
        NodeAction::None
    }
}

/// The `NoSchedule` taint each pressure condition puts on its node while `True` (Kubernetes'
/// taint-nodes-by-condition, `nodeConditionToTaintKeyStatusMap` in its node lifecycle
/// controller).
pub const CONDITION_TAINTS: [(&str, &str); 3] = [
    ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "node.kubernetes.io/pid-pressure"),
];

/// The node's taints with the pressure taints matching its conditions (added for a `True`
/// condition, removed otherwise), or `None` when they already match.
pub fn condition_taints(node: &Node) -> Option<Vec<Taint>> {
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let holds = |kind: &str| {
        node.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == kind && c.status == "True")
    };
    let has = |key: &str| {
        current
            .iter()
            .any(|t| t.key == key && t.effect == "NoSchedule")
    };
    let wrong = CONDITION_TAINTS
        .iter()
        .any(|(kind, key)| holds(kind) != has(key));
    if !wrong {
        return None;
    }
    let mut taints: Vec<Taint> = current
        .into_iter()
        .filter(|t| !CONDITION_TAINTS.iter().any(|(_, key)| t.key == *key))
        .collect();
    for (kind, key) in CONDITION_TAINTS {
        if holds(kind) {
            taints.push(Taint {
                key: key.into(),
                effect: "NoSchedule".into(),
                time_added: None,
                value: None,
            });
        }
    }
    Some(taints)
}

/// How long `pod` tolerates the NoExecute `taint`, by Kubernetes' taint-eviction rules
/// ([`tolerations::no_execute_tolerance`]: the first toleration that matches decides): `None`
/// for ever (it has no `tolerationSeconds`), its `tolerationSeconds` (negative counts as 0), or
/// `default` when no toleration matches (what Kubernetes' `DefaultTolerationSeconds` admission
/// plugin gives every pod).
pub fn toleration(pod: &Pod, taint: &Taint, default: Duration) -> Option<Duration> {
    let pod_tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    match tolerations::no_execute_tolerance(pod_tolerations, std::slice::from_ref(taint)) {
        NoExecuteTolerance::Evict => Some(default),
        NoExecuteTolerance::For(duration) => Some(duration),
        NoExecuteTolerance::Forever => None,
    }
}

/// Whether `pod`, on a node tainted unreachable since `tainted_at`, is due for eviction at `now`.
pub fn eviction_due(
    pod: &Pod,
    taint: &Taint,
    tainted_at: Timestamp,
    now: Timestamp,
    default: Duration,
) -> bool {
    let Some(tolerated) = toleration(pod, taint, default) else {
        return false;
    };
    let elapsed = now.duration_since(tainted_at);
    elapsed.is_positive() && elapsed.unsigned_abs() >= tolerated || tolerated.is_zero()
}

/// Runs the controller.
pub async fn run(client: Client, settings: Settings) -> anyhow::Result<()> {
    let nodes = watched::<Node>(Api::all(client.clone()));
    let leases = watched::<Lease>(Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE));
    let pods = watched::<Pod>(Api::all(client.clone()));
    let _tasks = [nodes.1, leases.1, pods.1];
    let (nodes, leases, pods) = (nodes.0, leases.0, pods.0);
    nodes.wait_until_ready().await?;
    leases.wait_until_ready().await?;
    pods.wait_until_ready().await?;
    tracing::info!(
        grace_period = ?settings.grace_period,
        default_toleration = ?settings.default_toleration,
        "node lifecycle controller started"
    );
    let mut probes: HashMap<String, Probe> = HashMap::new();
    let mut interval = tokio::time::interval(settings.period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        check(&client, &settings, &nodes, &leases, &pods, &mut probes).await;
    }
}

/// A reflector store of `api`, and the task feeding it (aborted when dropped).
fn watched<K>(api: Api<K>) -> (Store<K>, crate::AbortOnDrop)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    )
    .touched_objects();
    let task = tokio::spawn(crate::drive("nodelifecycle-watch", stream));
    (reader, crate::AbortOnDrop(task))
}

async fn check(
    client: &Client,
    settings: &Settings,
    nodes: &Store<Node>,
    leases: &Store<Lease>,
    pods: &Store<Pod>,
    probes: &mut HashMap<String, Probe>,
) {
    let now = Timestamp::now();
    let leases: HashMap<String, Arc<Lease>> = leases
        .state()
        .into_iter()
        .map(|l| (l.name_any(), l))
        .collect();
    let nodes = nodes.state();
    probes.retain(|name, _| nodes.iter().any(|n| n.name_any() == *name));
    let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
    for pod in pods.state() {
        if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
            by_node.entry(node).or_default().push(pod);
        }
    }
    for node in nodes {
        let name = node.name_any();
        let heartbeat = Heartbeat::of(&node, leases.get(&name).map(AsRef::as_ref));
        let probe = observe(probes.get(&name), heartbeat, now);
        let unreachable = is_unreachable(&probe, now, settings.grace_period);
        probes.insert(name.clone(), probe);
        let node_pods = by_node.remove(&name).unwrap_or_default();
        let result = match node_action(&node, unreachable) {
            NodeAction::MarkUnreachable => mark_unreachable(client, &node, now).await,
            NodeAction::Recover => recover(client, &node, &node_pods).await,
            // Taints from the pressure conditions (after the unreachable handling, which
            // rewrites the taints, has settled).
            NodeAction::None => match condition_taints(&node) {
                Some(taints) => taint_by_conditions(client, &node, taints).await,
                None => Ok(()),
            },
        };
        if let Err(error) = result {
            tracing::warn!(node = %name, error = %crate::error_chain(&error), "node update failed");
            continue;
        }
        if unreachable {
            for pod in &node_pods {
                if let Err(error) = handle_pod(client, settings, &node, pod, now).await {
                    tracing::warn!(
                        pod = %format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()),
                        error = %crate::error_chain(&error),
                        "pod update failed"
                    );
                }
            }
        }
    }
}

async fn taint_by_conditions(
    client: &Client,
    node: &Node,
    taints: Vec<Taint>,
) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let patch = json!({"spec": {"taints": if taints.is_empty() { serde_json::Value::Null } else { json!(taints) }}});
    api.patch(
        &node.name_any(),
        &PatchParams::default(),
        &Patch::Merge(patch),
    )
    .await?;
    tracing::info!(node = %node.name_any(), taints = ?taints.iter().map(|t| &t.key).collect::<Vec<_>>(), "node taints follow its pressure conditions");
    Ok(())
}

fn timestamp(t: Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

async fn mark_unreachable(client: &Client, node: &Node, now: Timestamp) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let name = node.name_any();
    let own_ready = ready_condition(node)
        .filter(|c| c.reason.as_deref() != Some(NODE_STATUS_UNKNOWN))
        .cloned();
    if unreachable_taint(node).is_none() {
        let mut taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.clone())
            .unwrap_or_default();
        taints.retain(|t| t.key != UNREACHABLE_TAINT);
        for effect in ["NoSchedule", "NoExecute"] {
            taints.push(Taint {
                key: UNREACHABLE_TAINT.into(),
                effect: effect.into(),
                time_added: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
                value: None,
            });
        }
        let mut patch = json!({"spec": {"taints": taints}});
        if let Some(ready) = &own_ready {
            patch["metadata"] = json!({"annotations": {
                SAVED_READY_ANNOTATION: serde_json::to_string(ready).unwrap_or_default()
            }});
        }
        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }
    if ready_condition(node).is_none_or(|c| c.status != "Unknown") {
        let stamp = timestamp(now);
        let unknown = json!({
            "type": "Ready", "status": "Unknown", "reason": NODE_STATUS_UNKNOWN,
            "message": "Kubelet stopped posting node status.",
            "lastHeartbeatTime": own_ready.as_ref().and_then(|c| c.last_heartbeat_time.clone()),
            "lastTransitionTime": stamp,
        });
        let conditions = replace_condition(node, unknown);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": conditions}})),
        )
        .await?;
    }
    tracing::warn!(node = %name, "node unreachable: its lease stopped renewing");
    Ok(())
}

/// The node's conditions with `Ready` replaced by `ready`.
fn replace_condition(node: &Node, ready: serde_json::Value) -> Vec<serde_json::Value> {
    let mut conditions: Vec<serde_json::Value> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.type_ != "Ready")
        .map(|c| serde_json::to_value(c).unwrap_or_default())
        .collect();
    conditions.push(ready);
    conditions
}

async fn recover(client: &Client, node: &Node, node_pods: &[Arc<Pod>]) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let name = node.name_any();
    let saved: Option<NodeCondition> = node
        .annotations()
        .get(SAVED_READY_ANNOTATION)
        .and_then(|s| serde_json::from_str(s).ok());
    if ready_condition(node).is_some_and(|c| c.reason.as_deref() == Some(NODE_STATUS_UNKNOWN))
        && let Some(mut ready) = saved
    {
        ready.last_transition_time = Some(pods::now());
        let conditions = replace_condition(node, serde_json::to_value(ready).unwrap_or_default());
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": conditions}})),
        )
        .await?;
    }
    let taints: Vec<&Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.key != UNREACHABLE_TAINT)
        .collect();
    let patch = json!({
        "metadata": {"annotations": {SAVED_READY_ANNOTATION: null}},
        "spec": {"taints": if taints.is_empty() { serde_json::Value::Null } else { json!(taints) }},
    });
    api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    for pod in node_pods {
        let ours = pods::condition(pod, "Ready")
            .is_some_and(|c| c.reason.as_deref() == Some(NODE_UNREACHABLE_POD_REASON));
        let containers_ready =
            pods::condition(pod, "ContainersReady").is_none_or(|c| c.status == "True");
        if ours && containers_ready && !pods::is_terminating(&pod.metadata) {
            set_pod_ready(
                client,
                pod,
                json!({"type": "Ready", "status": "True",
                "lastTransitionTime": pods::now()}),
            )
            .await?;
        }
    }
    tracing::info!(node = %name, "node reachable again");
    Ok(())
}

async fn set_pod_ready(
    client: &Client,
    pod: &Pod,
    ready: serde_json::Value,
) -> Result<(), kube::Error> {
    let mut conditions: Vec<serde_json::Value> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.type_ != "Ready")
        .map(|c| serde_json::to_value(c).unwrap_or_default())
        .collect();
    conditions.push(ready);
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    api.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"conditions": conditions}})),
    )
    .await?;
    Ok(())
}

/// On an unreachable node: marks the pod not ready, and deletes it once its toleration of the
/// taint is over.
async fn handle_pod(
    client: &Client,
    settings: &Settings,
    node: &Node,
    pod: &Pod,
    now: Timestamp,
) -> Result<(), kube::Error> {
    if pods::is_terminating(&pod.metadata) || !pods::is_active(pod) {
        return Ok(());
    }
    if pods::condition(pod, "Ready").is_none_or(|c| c.status != "False") {
        set_pod_ready(
            client,
            pod,
            json!({"type": "Ready", "status": "False", "reason": NODE_UNREACHABLE_POD_REASON,
                   "message": "The pod's node stopped posting status.",
                   "lastTransitionTime": pods::now()}),
        )
        .await?;
    }
    let Some(taint) = unreachable_taint(node) else {
        return Ok(());
    };
    let tainted_at = taint.time_added.as_ref().map_or(now, |t| t.0);
    if eviction_due(pod, taint, tainted_at, now, settings.default_toleration) {
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        match api.delete(&pod.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(error) if crate::is_status(&error, 404) => {}
            Err(error) => return Err(error),
        }
        tracing::info!(
            pod = %format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()),
            node = %node.name_any(),
            "evicted: its node is unreachable"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus, PodSpec, Toleration};

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    fn heartbeat(lease: &str) -> Heartbeat {
        Heartbeat {
            lease_renew: Some(lease.into()),
            status: None,
        }
    }

    #[test]
    fn heartbeats_are_timed_when_they_change() {
        let grace = Duration::from_secs(40);
        let first = observe(None, heartbeat("a"), at(0));
        assert!(!is_unreachable(&first, at(39), grace));
        let same = observe(Some(&first), heartbeat("a"), at(30));
        assert_eq!(
            same.observed_at,
            at(0),
            "an unchanged heartbeat keeps its time"
        );
        assert!(is_unreachable(&same, at(40), grace));
        let renewed = observe(Some(&same), heartbeat("b"), at(41));
        assert_eq!(renewed.observed_at, at(41));
        assert!(!is_unreachable(&renewed, at(42), grace));
    }

    fn node(ready: &str, reason: &str, tainted: bool) -> Node {
        Node {
            metadata: Default::default(),
            spec: Some(NodeSpec {
                taints: tainted.then(|| {
                    vec![Taint {
                        key: UNREACHABLE_TAINT.into(),
                        effect: "NoExecute".into(),
                        ..Taint::default()
                    }]
                }),
                ..NodeSpec::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    reason: Some(reason.into()),
                    ..NodeCondition::default()
                }]),
                ..NodeStatus::default()
            }),
        }
    }

    #[test]
    fn node_actions() {
        use NodeAction::*;
        assert_eq!(
            node_action(&node("True", "KubeletReady", false), false),
            None
        );
        assert_eq!(
            node_action(&node("True", "KubeletReady", false), true),
            MarkUnreachable
        );
        assert_eq!(
            node_action(&node("Unknown", NODE_STATUS_UNKNOWN, false), true),
            MarkUnreachable,
            "a missing taint is added"
        );
        assert_eq!(
            node_action(&node("Unknown", NODE_STATUS_UNKNOWN, true), true),
            None
        );
        assert_eq!(
            node_action(&node("Unknown", NODE_STATUS_UNKNOWN, true), false),
            Recover
        );
        assert_eq!(
            node_action(&node("True", "KubeletReady", true), false),
            Recover,
            "the node posted its status; the taint still goes"
        );
    }

    fn pod(tolerations: Vec<Toleration>) -> Pod {
        Pod {
            spec: Some(PodSpec {
                tolerations: Some(tolerations),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    fn unreachable() -> Taint {
        Taint {
            key: UNREACHABLE_TAINT.into(),
            effect: "NoExecute".into(),
            ..Taint::default()
        }
    }

    #[test]
    fn pressure_conditions_become_no_schedule_taints() {
        let with = |conditions: &[(&str, &str)], taints: &[(&str, &str)]| -> Node {
            serde_json::from_value(json!({
                "metadata": {"name": "n1"},
                "spec": {"taints": taints.iter().map(|(k, e)| json!({"key": k, "effect": e})).collect::<Vec<_>>()},
                "status": {"conditions": conditions.iter().map(|(t, s)| json!({"type": t, "status": s})).collect::<Vec<_>>()},
            }))
            .expect("node")
        };
        let keys = |taints: Option<Vec<Taint>>| {
            taints.map(|t| {
                t.into_iter()
                    .map(|t| format!("{}:{}", t.key, t.effect))
                    .collect::<Vec<_>>()
            })
        };
        let cases = [
            (
                with(&[("MemoryPressure", "False"), ("Ready", "True")], &[]),
                None,
            ),
            (
                with(
                    &[("MemoryPressure", "True"), ("PIDPressure", "True")],
                    &[("dedicated", "NoSchedule")],
                ),
                Some(vec![
                    "dedicated:NoSchedule".to_owned(),
                    "node.kubernetes.io/memory-pressure:NoSchedule".to_owned(),
                    "node.kubernetes.io/pid-pressure:NoSchedule".to_owned(),
                ]),
            ),
            (
                with(
                    &[("DiskPressure", "True")],
                    &[("node.kubernetes.io/disk-pressure", "NoSchedule")],
                ),
                None,
            ),
            (
                with(
                    &[("DiskPressure", "False")],
                    &[
                        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
                        (UNREACHABLE_TAINT, "NoExecute"),
                    ],
                ),
                Some(vec![format!("{UNREACHABLE_TAINT}:NoExecute")]),
            ),
        ];
        for (node, want) in cases {
            assert_eq!(keys(condition_taints(&node)), want, "{:?}", node.status);
        }
    }

    #[test]
    fn tolerations_decide_when_pods_go() {
        let default = Duration::from_secs(300);
        let taint = unreachable();
        assert_eq!(toleration(&pod(vec![]), &taint, default), Some(default));
        let for_ever = Toleration {
            key: Some(UNREACHABLE_TAINT.into()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            ..Toleration::default()
        };
        assert_eq!(
            toleration(&pod(vec![for_ever.clone()]), &taint, default),
            None
        );
        let short = Toleration {
            toleration_seconds: Some(5),
            ..for_ever.clone()
        };
        let shorter = Toleration {
            key: None,
            toleration_seconds: Some(2),
            ..for_ever.clone()
        };
        assert_eq!(
            toleration(&pod(vec![short.clone(), shorter.clone()]), &taint, default),
            Some(Duration::from_secs(5)),
            "the first matching toleration decides, as in Kubernetes"
        );
        assert_eq!(
            toleration(&pod(vec![shorter, short.clone()]), &taint, default),
            Some(Duration::from_secs(2))
        );
        let empty_key_equal = Toleration {
            key: None,
            operator: None,
            effect: Some("NoExecute".into()),
            ..Toleration::default()
        };
        assert_eq!(
            toleration(&pod(vec![empty_key_equal]), &taint, default),
            None,
            "an empty key with Equal matches the taint's empty value"
        );
        let other = Toleration {
            key: Some("node.kubernetes.io/not-ready".into()),
            toleration_seconds: Some(1),
            ..for_ever
        };
        assert_eq!(
            toleration(&pod(vec![other]), &taint, default),
            Some(default),
            "a toleration of another taint does not count"
        );
        let p = pod(vec![short]);
        assert!(!eviction_due(&p, &taint, at(0), at(4), default));
        assert!(eviction_due(&p, &taint, at(0), at(5), default));
        assert!(!eviction_due(&pod(vec![]), &taint, at(0), at(299), default));
        assert!(eviction_due(&pod(vec![]), &taint, at(0), at(300), default));
    }
}

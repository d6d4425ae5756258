//! Preemption (Kubernetes' `defaultpreemption` plugin): when a pod fits nowhere, find a node
//! where evicting pods of lower priority makes it fit, evicting as few and as unimportant
//! pods as possible.
//!
//! For each node whose rejection could be resolved by removing pods (not readiness, taints or
//! node affinity), every lower-priority pod is removed in simulation; if the pod then fits,
//! the removed pods are put back one by one, most important first, as long as the pod still
//! fits: those that cannot be put back are the victims. Among the candidate nodes the one
//! whose most important victim has the lowest priority wins, then the lowest sum of victim
//! priorities, then the fewest victims, then the first. Pods already being deleted are never
//! victims (they are leaving anyway). PodDisruptionBudgets are not consulted.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::{
    feasibility::{Feasibility, Rejected},
    plugins::{self, NodeInfo, Resources},
    pods::{NamespaceLabels, PodInfo, priority},
};

/// kube's message for a node where removing pods would not help.
pub const NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// kube's message for a node where even removing every lower-priority pod is not enough.
pub const NO_VICTIMS: &str = "No preemption victims found for incoming pod";

/// Where the pod goes and whom it evicts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The node to nominate.
    pub node: String,
    /// The pods to delete, as (namespace, name, uid).
    pub victims: Vec<(String, String, String)>,
}

/// Whether the pod may preempt at all: `preemptionPolicy: Never` may not, and neither may a
/// pod whose nominated node still has lower-priority pods terminating (its earlier preemption
/// is still under way). `Err` is kube's message after `preemption: `.
pub fn eligible(pod: &Pod, nodes: &[NodeInfo]) -> Result<(), &'static str> {
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.preemption_policy.as_deref()) == Some("Never") {
        return Err("not eligible due to preemptionPolicy=Never.");
    }
    let nominated = pod
        .status
        .as_ref()
        .and_then(|s| s.nominated_node_name.as_deref())
        .filter(|n| !n.is_empty());
    let me = priority(pod);
    if let Some(node) = nominated.and_then(|n| nodes.iter().find(|i| i.name == n))
        && node.pods.iter().any(|p| p.terminating && p.priority < me)
    {
        return Err("not eligible due to a terminating pod on the nominated node.");
    }
    Ok(())
}

/// `base` holding exactly `pods` (requests, host ports and owners recounted).
fn rebuild(base: &NodeInfo, pods: Vec<PodInfo>) -> NodeInfo {
    let mut node = base.clone();
    node.requested = Resources::default();
    node.host_ports.clear();
    node.owners.clear();
    for pod in &pods {
        let r = pod.requests;
        node.requested.milli_cpu = node.requested.milli_cpu.saturating_add(r.milli_cpu);
        node.requested.memory = node.requested.memory.saturating_add(r.memory);
        node.requested.pods = node.requested.pods.saturating_add(r.pods);
        node.host_ports.extend(pod.host_ports.iter().cloned());
        if let Some(owner) = &pod.owner {
            *node.owners.entry(owner.clone()).or_default() += 1;
        }
    }
    node.pods = pods;
    node
}

/// Whether `pod` fits on `nodes[index]` once that node holds exactly `pods`.
fn fits_with(
    pod: &Pod,
    nodes: &[NodeInfo],
    index: usize,
    pods: Vec<PodInfo>,
    namespaces: &NamespaceLabels,
) -> bool {
    let mut nodes = nodes.to_vec();
    nodes[index] = rebuild(&nodes[index], pods);
    Feasibility::new(pod, &nodes, namespaces)
        .check(&nodes[index])
        .is_ok()
}

/// The victims on `nodes[index]`, or `None` when removing every lower-priority pod is not
/// enough.
fn victims_on(
    pod: &Pod,
    nodes: &[NodeInfo],
    index: usize,
    namespaces: &NamespaceLabels,
) -> Option<Vec<PodInfo>> {
    let me = priority(pod);
    let (mut lower, kept): (Vec<PodInfo>, Vec<PodInfo>) = nodes[index]
        .pods
        .iter()
        .cloned()
        .partition(|p| p.priority < me);
    lower.retain(|p| !p.terminating);
    if lower.is_empty() || !fits_with(pod, nodes, index, kept.clone(), namespaces) {
        return None;
    }
    lower.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)));
    let mut staying = kept;
    let mut victims = Vec::new();
    for candidate in lower {
        let mut trial = staying.clone();
        trial.push(candidate.clone());
        if fits_with(pod, nodes, index, trial.clone(), namespaces) {
            staying = trial;
        } else {
            victims.push(candidate);
        }
    }
    (!victims.is_empty()).then_some(victims)
}

/// How many candidate nodes are examined at most (kube's `minCandidateNodesAbsolute`).
const MAX_CANDIDATES: usize = 100;

/// Picks a node and victims for `pod`, given why each node rejected it (`rejections`, by
/// node index). `Err` is kube's message after `preemption: `.
pub fn select(
    pod: &Pod,
    nodes: &[NodeInfo],
    rejections: &BTreeMap<usize, Rejected>,
    namespaces: &NamespaceLabels,
) -> Result<Candidate, String> {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    // (highest victim priority, sum of priorities, count), node index, victims.
    type Best = ((i32, i64, usize), usize, Vec<PodInfo>);
    let mut best: Option<Best> = None;
    let mut tried = 0;
    for (&index, rejection) in rejections {
        if !rejection.resolvable {
            *reasons.entry(NOT_HELPFUL.to_owned()).or_default() += 1;
            continue;
        }
        if tried >= MAX_CANDIDATES {
            *reasons.entry(NO_VICTIMS.to_owned()).or_default() += 1;
            continue;
        }
        tried += 1;
        let Some(victims) = victims_on(pod, nodes, index, namespaces) else {
            *reasons.entry(NO_VICTIMS.to_owned()).or_default() += 1;
            continue;
        };
        let key = (
            victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN),
            victims.iter().map(|v| i64::from(v.priority)).sum::<i64>(),
            victims.len(),
        );
        if best.as_ref().is_none_or(|(k, _, _)| key < *k) {
            best = Some((key, index, victims));
        }
    }
    match best {
        Some((_, index, victims)) => Ok(Candidate {
            node: nodes[index].name.clone(),
            victims: victims
                .into_iter()
                .map(|v| (v.namespace, v.name, v.uid))
                .collect(),
        }),
        None => Err(plugins::unschedulable_message(nodes.len(), &reasons)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_support::{labelled_node, pod_with};
    use k8s_openapi::{
        api::core::v1::{Container, ResourceRequirements},
        apimachinery::pkg::api::resource::Quantity,
    };

    fn sized(name: &str, cpu: &str, priority: i32) -> Pod {
        let mut pod = pod_with("default", name, &[], None);
        if let Some(spec) = pod.spec.as_mut() {
            spec.priority = Some(priority);
            spec.containers = vec![Container {
                name: "c".into(),
                resources: Some(ResourceRequirements {
                    requests: Some(BTreeMap::from([("cpu".into(), Quantity(cpu.into()))])),
                    ..ResourceRequirements::default()
                }),
                ..Container::default()
            }];
        }
        pod
    }

    fn rejections(pod: &Pod, nodes: &[NodeInfo]) -> BTreeMap<usize, Rejected> {
        let f = Feasibility::new(pod, nodes, &NamespaceLabels::new());
        nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| f.check(n).err().map(|r| (i, r)))
            .collect()
    }

    /// Node a: 2+1 CPUs at priorities 10 and 5; node b: 3 CPUs at priority 1; c: not ready.
    fn cluster() -> Vec<NodeInfo> {
        let mut nodes = vec![
            labelled_node("a", &[]),
            labelled_node("b", &[]),
            labelled_node("c", &[]),
        ];
        nodes[0].add_pod(&sized("a-10", "2", 10));
        nodes[0].add_pod(&sized("a-5", "2", 5));
        nodes[1].add_pod(&sized("b-1", "3", 1));
        nodes[1].add_pod(&sized("b-2", "1", 2));
        nodes[2].ready = false;
        nodes
    }

    #[test]
    fn picks_the_cheapest_victims() {
        let nodes = cluster();
        let names = |c: Candidate| {
            (
                c.node,
                c.victims.into_iter().map(|v| v.1).collect::<Vec<_>>(),
            )
        };
        type Case = (
            &'static str,
            Pod,
            Result<(String, Vec<&'static str>), String>,
        );
        let cases: Vec<Case> = vec![
            (
                "the lowest-priority victim wins: b's priority-2 pod stays (1 CPU is enough)",
                sized("new", "2", 100),
                Ok(("b".into(), vec!["b-1"])),
            ),
            (
                "needing 4 CPUs: b's two pods (max priority 2) beat a's (10)",
                sized("new", "4", 100),
                Ok(("b".into(), vec!["b-2", "b-1"])),
            ),
            (
                "same priority evicts nobody",
                sized("new", "2", 1),
                Err("0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.".into()),
            ),
            (
                "too big for any node",
                sized("new", "5", 100),
                Err("0/3 nodes are available: 1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod.".into()),
            ),
        ];
        for (name, pod, expected) in cases {
            let got = select(
                &pod,
                &nodes,
                &rejections(&pod, &nodes),
                &NamespaceLabels::new(),
            )
            .map(names);
            let expected = expected.map(|(n, v)| (n, v.into_iter().map(str::to_owned).collect()));
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn eligibility() {
        let nodes = cluster();
        let mut never = sized("new", "1", 100);
        if let Some(spec) = never.spec.as_mut() {
            spec.preemption_policy = Some("Never".into());
        }
        assert_eq!(
            eligible(&never, &nodes),
            Err("not eligible due to preemptionPolicy=Never.")
        );
        let mut nominated = sized("new", "1", 100);
        nominated.status = Some(k8s_openapi::api::core::v1::PodStatus {
            nominated_node_name: Some("b".into()),
            ..Default::default()
        });
        assert_eq!(eligible(&nominated, &nodes), Ok(()));
        let mut nodes = nodes;
        nodes[1].pods[0].terminating = true;
        assert_eq!(
            eligible(&nominated, &nodes),
            Err("not eligible due to a terminating pod on the nominated node.")
        );
    }
}

//! Preemption (Kubernetes' `defaultpreemption` plugin): when a pod fits nowhere, find a node
//! where evicting pods of lower priority makes it fit, evicting as few and as unimportant
//! pods as possible.
//!
//! For each node whose rejection could be resolved by removing pods (not readiness, taints or
//! node affinity), every lower-priority pod is removed in simulation; if the pod then fits,
//! the removed pods are put back one by one, most important first, as long as the pod still
//! fits: those that cannot be put back are the victims. Pods whose eviction would violate a
//! PodDisruptionBudget are put back first, so they are evicted only when nothing else makes
//! room. Among the candidate nodes the one with the fewest such violations wins, then the one
//! whose most important victim has the lowest priority, then the lowest sum of victim
//! priorities, then the fewest victims, then the first. Pods already being deleted are never
//! victims (they are leaving anyway). Budgets are respected as far as possible, not enforced:
//! victims are deleted, not evicted (as in kube).

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::api::{core::v1::Pod, policy::v1::PodDisruptionBudget};

use crate::{
    feasibility::{Feasibility, Rejected},
    plugins::{self, NodeInfo, Resources},
    pods::{NamespaceLabels, PodInfo, priority, selector_of},
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

/// Starts caching PodDisruptionBudgets: the cache, and the watch to drive.
pub fn watch_budgets(
    client: &kube::Client,
) -> (
    kube::runtime::reflector::Store<PodDisruptionBudget>,
    crate::volume_binding::Feed,
) {
    let api = kube::Api::<PodDisruptionBudget>::all(client.clone());
    let (store, stream) = crate::volume_binding::feed(api);
    (store, ("poddisruptionbudgets", stream))
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

/// Splits `pods` (most important first) into those whose eviction would violate a budget and
/// the rest (kube's `filterPodsWithPDBViolation`): each matching budget's
/// `status.disruptionsAllowed` is spent pod by pod, and a pod that overdraws any budget
/// violates it. A budget with no or an empty selector matches nothing, and pods already in
/// its `status.disruptedPods` are not counted again.
pub fn split_by_budget(
    pods: Vec<PodInfo>,
    budgets: &[Arc<PodDisruptionBudget>],
) -> (Vec<PodInfo>, Vec<PodInfo>) {
    let mut allowed: Vec<i32> = budgets
        .iter()
        .map(|b| b.status.as_ref().map_or(0, |s| s.disruptions_allowed))
        .collect();
    let selectors: Vec<_> = budgets
        .iter()
        .map(|b| {
            let selector = b.spec.as_ref().and_then(|s| s.selector.as_ref());
            let empty = selector.is_none_or(|s| {
                s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
                    && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
            });
            if empty { None } else { selector_of(selector) }
        })
        .collect();
    let (mut violating, mut fine) = (Vec::new(), Vec::new());
    for pod in pods {
        let mut violated = false;
        if !pod.labels.is_empty() {
            for (i, budget) in budgets.iter().enumerate() {
                let same_namespace = budget.metadata.namespace.as_deref() == Some(&pod.namespace);
                let matches = selectors[i]
                    .as_ref()
                    .is_some_and(|s| s.matches(&pod.labels));
                let disrupted = budget
                    .status
                    .as_ref()
                    .and_then(|s| s.disrupted_pods.as_ref())
                    .is_some_and(|d| d.contains_key(&pod.name));
                if !same_namespace || !matches || disrupted {
                    continue;
                }
                allowed[i] -= 1;
                violated |= allowed[i] < 0;
            }
        }
        if violated {
            violating.push(pod);
        } else {
            fine.push(pod);
        }
    }
    (violating, fine)
}

/// The victims on `nodes[index]` and how many of them violate a budget, or `None` when
/// removing every lower-priority pod is not enough.
fn victims_on(
    pod: &Pod,
    nodes: &[NodeInfo],
    index: usize,
    namespaces: &NamespaceLabels,
    budgets: &[Arc<PodDisruptionBudget>],
) -> Option<(Vec<PodInfo>, usize)> {
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
    let (violating, fine) = split_by_budget(lower, budgets);
    let violating_count = violating.len();
    let mut staying = kept;
    let mut victims = Vec::new();
    let mut violations = 0;
    for (position, candidate) in violating.into_iter().chain(fine).enumerate() {
        let mut trial = staying.clone();
        trial.push(candidate.clone());
        if fits_with(pod, nodes, index, trial.clone(), namespaces) {
            staying = trial;
        } else {
            violations += usize::from(position < violating_count);
            victims.push(candidate);
        }
    }
    (!victims.is_empty()).then_some((victims, violations))
}

/// How many candidate nodes are examined at most (kube's `minCandidateNodesAbsolute`).
const MAX_CANDIDATES: usize = 100;

/// Every node of `count` as rejected beyond what preemption can help with (kube's
/// `UnschedulableAndUnresolvable`), e.g. for a pod whose volumes rule the nodes out.
pub fn unresolvable_everywhere(count: usize) -> BTreeMap<usize, Rejected> {
    (0..count)
        .map(|i| {
            let rejected = Rejected {
                reason: String::new(),
                resolvable: false,
            };
            (i, rejected)
        })
        .collect()
}

/// Picks a node and victims for `pod`, given why each node rejected it (`rejections`, by
/// node index) and the cluster's PodDisruptionBudgets. `Err` is kube's message after
/// `preemption: `.
pub fn select(
    pod: &Pod,
    nodes: &[NodeInfo],
    rejections: &BTreeMap<usize, Rejected>,
    namespaces: &NamespaceLabels,
    budgets: &[Arc<PodDisruptionBudget>],
) -> Result<Candidate, String> {
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    // (budget violations, highest victim priority, sum of priorities, count), node index,
    // victims.
    type Best = ((usize, i32, i64, usize), usize, Vec<PodInfo>);
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
        let Some((victims, violations)) = victims_on(pod, nodes, index, namespaces, budgets) else {
            *reasons.entry(NO_VICTIMS.to_owned()).or_default() += 1;
            continue;
        };
        let key = (
            violations,
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
                &[],
            )
            .map(names);
            let expected = expected.map(|(n, v)| (n, v.into_iter().map(str::to_owned).collect()));
            assert_eq!(got, expected, "{name}");
        }
    }

    fn labelled(name: &str, cpu: &str, priority: i32, app: &str) -> Pod {
        let mut pod = sized(name, cpu, priority);
        if !app.is_empty() {
            pod.metadata.labels = Some(BTreeMap::from([("app".into(), app.into())]));
        }
        pod
    }

    /// A budget in `default` over `app=<app>` (every pod when `app` is empty: an empty
    /// selector) allowing `allowed` disruptions, with `disrupted` already counted.
    fn budget(app: &str, allowed: i32, disrupted: &[&str]) -> Arc<PodDisruptionBudget> {
        use k8s_openapi::{
            api::policy::v1::{PodDisruptionBudgetSpec, PodDisruptionBudgetStatus},
            apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time},
        };
        let match_labels = (!app.is_empty()).then(|| BTreeMap::from([("app".into(), app.into())]));
        Arc::new(PodDisruptionBudget {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(format!("pdb-{app}")),
                ..ObjectMeta::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                selector: Some(LabelSelector {
                    match_labels,
                    ..LabelSelector::default()
                }),
                ..PodDisruptionBudgetSpec::default()
            }),
            status: Some(PodDisruptionBudgetStatus {
                disruptions_allowed: allowed,
                disrupted_pods: Some(
                    disrupted
                        .iter()
                        .map(|p| ((*p).to_owned(), Time(jiff::Timestamp::UNIX_EPOCH)))
                        .collect(),
                ),
                ..PodDisruptionBudgetStatus::default()
            }),
        })
    }

    #[test]
    fn budgets_steer_victims() {
        // Node a: a-db (app=db, priority 1) and a-cache (no labels, priority 5), 2 CPUs each;
        // node b: b-web (app=web, priority 1), 3 CPUs. The new pod needs 2 CPUs.
        let mut nodes = vec![labelled_node("a", &[]), labelled_node("b", &[])];
        nodes[0].add_pod(&labelled("a-db", "2", 1, "db"));
        nodes[0].add_pod(&labelled("a-cache", "2", 5, ""));
        nodes[1].add_pod(&labelled("b-web", "3", 1, "web"));
        let new = sized("new", "2", 100);
        type Case = (
            &'static str,
            Vec<Arc<PodDisruptionBudget>>,
            (&'static str, Vec<&'static str>),
        );
        let cases: Vec<Case> = vec![
            (
                "no budgets: both nodes evict one priority-1 pod, the first wins",
                vec![],
                ("a", vec!["a-db"]),
            ),
            (
                "db protected: b evicts without violating a budget",
                vec![budget("db", 0, &[])],
                ("b", vec!["b-web"]),
            ),
            (
                "db has a disruption to spare: no violation, a again",
                vec![budget("db", 1, &[])],
                ("a", vec!["a-db"]),
            ),
            (
                "both protected: a spares its protected pod and evicts the higher-priority one",
                vec![budget("db", 0, &[]), budget("web", 0, &[])],
                ("a", vec!["a-cache"]),
            ),
            (
                "a pod already disrupted is not counted again",
                vec![budget("db", 0, &["a-db"])],
                ("a", vec!["a-db"]),
            ),
            (
                "an empty selector protects nothing",
                vec![budget("", 0, &[])],
                ("a", vec!["a-db"]),
            ),
        ];
        for (name, budgets, (node, victims)) in cases {
            let got = select(
                &new,
                &nodes,
                &rejections(&new, &nodes),
                &NamespaceLabels::new(),
                &budgets,
            )
            .map(|c| {
                (
                    c.node,
                    c.victims.into_iter().map(|v| v.1).collect::<Vec<_>>(),
                )
            });
            let victims = victims.into_iter().map(str::to_owned).collect();
            assert_eq!(got, Ok((node.to_owned(), victims)), "{name}");
        }
    }

    #[test]
    fn volume_rejections_are_not_helped_by_preemption() {
        let nodes = cluster();
        let got = select(
            &sized("new", "1", 100),
            &nodes,
            &unresolvable_everywhere(nodes.len()),
            &NamespaceLabels::new(),
            &[],
        );
        assert_eq!(
            got,
            Err("0/3 nodes are available: 3 Preemption is not helpful for scheduling.".into())
        );
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

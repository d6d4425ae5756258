//! `topologySpreadConstraints` (Kubernetes' `podtopologyspread` plugin).
//!
//! For each constraint the pods matching its `labelSelector` (plus `key in (value)` for each
//! of `matchLabelKeys` the incoming pod carries), in the pod's namespace and not being
//! deleted, are counted per topology domain over the eligible nodes: those with every
//! constraint's topology label, matching the pod's node affinity unless
//! `nodeAffinityPolicy: Ignore` (default Honor), and tolerated unless `nodeTaintsPolicy` is
//! not `Honor` (default Ignore).
//!
//! - Filter (`DoNotSchedule`): placing the pod in the node's domain must keep
//!   `count + self - min <= maxSkew`, where `min` is the smallest domain count (0 when fewer
//!   domains than `minDomains` exist). A node without the topology label is rejected.
//! - Score (`ScheduleAnyway`): the domain counts weighted by `ln(domains + 2)`, fewer is better,
//!   scaled so the best node gets 100.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, TopologySpreadConstraint};
use keelson_api::selectors::{LabelRequirement, LabelSelector};

use crate::{
    plugins::{self, NodeInfo},
    pods::{Rejection, selector_of},
};

/// kube's `ErrReasonConstraintsNotMatch`.
pub const CONSTRAINTS_NOT_MATCH: &str = "node(s) didn't match pod topology spread constraints";
/// kube's `ErrReasonNodeLabelNotMatch` (the constraints' reason plus this suffix).
pub const MISSING_LABEL: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

/// One constraint, prepared.
#[derive(Debug, Clone)]
struct Constraint {
    key: String,
    max_skew: i64,
    min_domains: usize,
    hard: bool,
    selector: Option<LabelSelector>,
    honor_affinity: bool,
    honor_taints: bool,
    self_match: i64,
    /// Matching pods per domain value (every eligible domain present, possibly 0).
    counts: BTreeMap<String, i64>,
}

/// The incoming pod's spread state over the cluster.
#[derive(Debug, Clone, Default)]
pub struct State {
    constraints: Vec<Constraint>,
}

fn prepare(pod: &Pod, c: &TopologySpreadConstraint) -> Constraint {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let mut selector = selector_of(c.label_selector.as_ref());
    if let Some(selector) = selector.as_mut() {
        for key in c.match_label_keys.iter().flatten() {
            if let Some(value) = labels.get(key) {
                selector
                    .requirements
                    .push(LabelRequirement::In(key.clone(), vec![value.clone()]));
            }
        }
    }
    let self_match = i64::from(selector.as_ref().is_some_and(|s| s.matches(&labels)));
    Constraint {
        key: c.topology_key.clone(),
        max_skew: i64::from(c.max_skew.max(1)),
        min_domains: usize::try_from(c.min_domains.unwrap_or(1).max(1)).unwrap_or(1),
        hard: c.when_unsatisfiable != "ScheduleAnyway",
        selector,
        honor_affinity: c.node_affinity_policy.as_deref() != Some("Ignore"),
        honor_taints: c.node_taints_policy.as_deref() == Some("Honor"),
        self_match,
        counts: BTreeMap::new(),
    }
}

impl State {
    /// Counts the pods each constraint of `pod` selects per domain over `nodes`.
    pub fn new(pod: &Pod, nodes: &[NodeInfo]) -> Self {
        let namespace = pod.metadata.namespace.clone().unwrap_or_default();
        let mut constraints: Vec<Constraint> = pod
            .spec
            .as_ref()
            .and_then(|s| s.topology_spread_constraints.as_ref())
            .into_iter()
            .flatten()
            .map(|c| prepare(pod, c))
            .collect();
        let keys: BTreeSet<String> = constraints.iter().map(|c| c.key.clone()).collect();
        for node in nodes {
            if !keys.iter().all(|k| node.labels.contains_key(k)) {
                continue;
            }
            let affinity_ok = plugins::filter_node_affinity(pod, node).is_ok();
            let taints_ok = plugins::filter_taints(pod, node).is_ok();
            for c in &mut constraints {
                if (c.honor_affinity && !affinity_ok) || (c.honor_taints && !taints_ok) {
                    continue;
                }
                let Some(value) = node.labels.get(&c.key) else {
                    continue;
                };
                let matching = node
                    .pods
                    .iter()
                    .filter(|p| {
                        !p.terminating
                            && p.namespace == namespace
                            && c.selector.as_ref().is_some_and(|s| s.matches(&p.labels))
                    })
                    .count();
                *c.counts.entry(value.clone()).or_default() +=
                    i64::try_from(matching).unwrap_or(i64::MAX);
            }
        }
        Self { constraints }
    }

    /// Whether the pod has hard constraints.
    pub fn filters(&self) -> bool {
        self.constraints.iter().any(|c| c.hard)
    }

    /// The filter for one node.
    pub fn filter(&self, node: &NodeInfo) -> Result<(), Rejection> {
        for c in self.constraints.iter().filter(|c| c.hard) {
            let Some(value) = node.labels.get(&c.key) else {
                return Err(Rejection {
                    reason: MISSING_LABEL,
                    resolvable: false,
                });
            };
            let min = if c.counts.len() < c.min_domains {
                0
            } else {
                c.counts.values().copied().min().unwrap_or(0)
            };
            let count = c.counts.get(value).copied().unwrap_or(0);
            if count + c.self_match - min > c.max_skew {
                return Err(Rejection {
                    reason: CONSTRAINTS_NOT_MATCH,
                    resolvable: true,
                });
            }
        }
        Ok(())
    }

    /// Scores for `nodes` (the feasible ones), 0..=100; 100 each without soft constraints.
    pub fn scores(&self, nodes: &[&NodeInfo]) -> Vec<f64> {
        let soft: Vec<&Constraint> = self.constraints.iter().filter(|c| !c.hard).collect();
        if soft.is_empty() {
            return vec![100.0; nodes.len()];
        }
        let raw: Vec<Option<f64>> = nodes
            .iter()
            .map(|node| {
                let mut total = 0.0;
                for c in &soft {
                    let value = node.labels.get(&c.key)?;
                    // The hostname domain counts the nodes being scored, as kube does.
                    let domains = if c.key == "kubernetes.io/hostname" {
                        nodes.len()
                    } else {
                        c.counts.len()
                    };
                    let weight = ((domains + 2) as f64).ln();
                    let count = c.counts.get(value).copied().unwrap_or(0) as f64;
                    total += count * weight + (c.max_skew - 1) as f64;
                }
                Some(total)
            })
            .collect();
        let known = raw.iter().flatten().copied();
        let max = known.clone().fold(0.0_f64, f64::max);
        let min = known.fold(f64::INFINITY, f64::min);
        raw.iter()
            .map(|s| match s {
                None => 0.0,
                Some(_) if max <= 0.0 => 100.0,
                Some(s) => 100.0 * (max + min - s) / max,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_support::{labelled_node, pod_with};
    use k8s_openapi::{
        api::core::v1::Taint, apimachinery::pkg::apis::meta::v1::LabelSelector as Selector,
    };

    fn constraint(key: &str, max_skew: i32, hard: bool) -> TopologySpreadConstraint {
        TopologySpreadConstraint {
            label_selector: Some(Selector {
                match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..Selector::default()
            }),
            max_skew,
            topology_key: key.into(),
            when_unsatisfiable: if hard {
                "DoNotSchedule"
            } else {
                "ScheduleAnyway"
            }
            .into(),
            ..TopologySpreadConstraint::default()
        }
    }

    fn spread(constraints: Vec<TopologySpreadConstraint>) -> Pod {
        let mut pod = pod_with("default", "new", &[("app", "web"), ("v", "2")], None);
        if let Some(spec) = pod.spec.as_mut() {
            spec.topology_spread_constraints = Some(constraints);
        }
        pod
    }

    /// Nodes a, b (zone 1), c (zone 2) holding `counts` web pods.
    fn cluster(counts: [usize; 3]) -> Vec<NodeInfo> {
        let mut nodes = vec![
            labelled_node("a", &[("zone", "1")]),
            labelled_node("b", &[("zone", "1")]),
            labelled_node("c", &[("zone", "2")]),
        ];
        for (node, count) in nodes.iter_mut().zip(counts) {
            for i in 0..count {
                let name = format!("{}-{i}", node.name);
                node.add_pod(&pod_with(
                    "default",
                    &name,
                    &[("app", "web"), ("v", "1")],
                    None,
                ));
            }
        }
        nodes
    }

    fn verdicts(pod: &Pod, nodes: &[NodeInfo]) -> Vec<&'static str> {
        let state = State::new(pod, nodes);
        nodes
            .iter()
            .map(|n| state.filter(n).map_or_else(|r| r.reason, |()| "ok"))
            .collect()
    }

    #[test]
    fn hard_constraints() {
        let hostname = "kubernetes.io/hostname";
        let with_min_domains = {
            let mut c = constraint(hostname, 1, true);
            c.min_domains = Some(4);
            c
        };
        let by_version = {
            let mut c = constraint(hostname, 1, true);
            c.match_label_keys = Some(vec!["v".into()]);
            c
        };
        type Case = (
            &'static str,
            [usize; 3],
            Vec<TopologySpreadConstraint>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "empty cluster: anywhere",
                [0, 0, 0],
                vec![constraint(hostname, 1, true)],
                vec!["ok"; 3],
            ),
            (
                "skew 1 over hosts: only the emptiest",
                [1, 1, 0],
                vec![constraint(hostname, 1, true)],
                vec![CONSTRAINTS_NOT_MATCH, CONSTRAINTS_NOT_MATCH, "ok"],
            ),
            (
                "skew 2 tolerates one more",
                [1, 1, 0],
                vec![constraint(hostname, 2, true)],
                vec!["ok"; 3],
            ),
            (
                "zones: zone 1 has 2, zone 2 has 0",
                [1, 1, 0],
                vec![constraint("zone", 1, true)],
                vec![CONSTRAINTS_NOT_MATCH, CONSTRAINTS_NOT_MATCH, "ok"],
            ),
            (
                "minDomains above the domain count makes the minimum 0",
                [1, 1, 1],
                vec![with_min_domains],
                vec![CONSTRAINTS_NOT_MATCH; 3],
            ),
            (
                "a missing topology label rejects the node",
                [0, 0, 0],
                vec![constraint("rack", 1, true)],
                vec![MISSING_LABEL; 3],
            ),
            (
                "matchLabelKeys count only the same version",
                [1, 1, 0],
                vec![by_version],
                vec!["ok"; 3],
            ),
            (
                "ScheduleAnyway never filters",
                [3, 0, 0],
                vec![constraint(hostname, 1, false)],
                vec!["ok"; 3],
            ),
        ];
        for (name, counts, constraints, expected) in cases {
            assert_eq!(
                verdicts(&spread(constraints), &cluster(counts)),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn node_policies_choose_the_counted_nodes() {
        // c is tainted and does not match the pod's node affinity; with both honoured it is
        // not a domain, so a and b (1 pod each) are balanced.
        let mut nodes = cluster([1, 1, 0]);
        nodes[2].taints = vec![Taint {
            key: "dedicated".into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        }];
        let mut honour = constraint("kubernetes.io/hostname", 1, true);
        honour.node_taints_policy = Some("Honor".into());
        let pod = spread(vec![honour.clone()]);
        assert_eq!(verdicts(&pod, &nodes)[..2], ["ok", "ok"]);
        // Default (Ignore taints): c counts with 0, so a and b are too full.
        let pod = spread(vec![constraint("kubernetes.io/hostname", 1, true)]);
        assert_eq!(
            verdicts(&pod, &nodes)[..2],
            [CONSTRAINTS_NOT_MATCH, CONSTRAINTS_NOT_MATCH]
        );
        // Node affinity honoured by default: a pod selecting zone 1 ignores c.
        let nodes = cluster([1, 1, 0]);
        let mut pod = spread(vec![constraint("kubernetes.io/hostname", 1, true)]);
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_selector = Some(BTreeMap::from([("zone".into(), "1".into())]));
        }
        assert_eq!(verdicts(&pod, &nodes)[..2], ["ok", "ok"]);
    }

    #[test]
    fn soft_constraints_score_emptier_domains_higher() {
        let nodes = cluster([2, 1, 0]);
        let pod = spread(vec![constraint("kubernetes.io/hostname", 1, false)]);
        let state = State::new(&pod, &nodes);
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let scores = state.scores(&refs);
        assert!(scores[2] > scores[1] && scores[1] > scores[0], "{scores:?}");
        assert_eq!(scores[2], 100.0);
        let plain = spread(Vec::new());
        assert_eq!(State::new(&plain, &nodes).scores(&refs), vec![100.0; 3]);
    }
}

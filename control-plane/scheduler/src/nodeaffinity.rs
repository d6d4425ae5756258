//! Preferred node affinity (the scoring half of Kubernetes' `nodeaffinity` plugin; the
//! required half is [`crate::plugins::filter_node_affinity`]): the weights of the
//! `preferredDuringSchedulingIgnoredDuringExecution` terms a node matches, scaled so the best
//! node gets 100.

use k8s_openapi::api::core::v1::Pod;
use keelson_api::selectors;

use crate::{plugins::NodeInfo, pods::normalize};

/// The summed weights of the pod's preferred terms that `node` matches.
pub fn raw_score(pod: &Pod, node: &NodeInfo) -> i64 {
    pod.spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .into_iter()
        .flatten()
        .filter(|t| selectors::node_selector_term_matches(&t.preference, &node.name, &node.labels))
        .map(|t| i64::from(t.weight))
        .sum()
}

/// Scores for `nodes`, 0..=100 (all 0 when the pod prefers nothing they have).
pub fn scores(pod: &Pod, nodes: &[&NodeInfo]) -> Vec<f64> {
    let mut scores: Vec<f64> = nodes.iter().map(|n| raw_score(pod, n) as f64).collect();
    normalize(&mut scores, false);
    scores
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_support::{labelled_node, pod_with};
    use k8s_openapi::api::core::v1::{
        Affinity, NodeAffinity, NodeSelectorRequirement, NodeSelectorTerm, PreferredSchedulingTerm,
    };

    fn prefer(terms: &[(&str, &str, i32)]) -> Pod {
        let preferred = terms
            .iter()
            .map(|(key, value, weight)| PreferredSchedulingTerm {
                weight: *weight,
                preference: NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: (*key).into(),
                        operator: "In".into(),
                        values: Some(vec![(*value).into()]),
                    }]),
                    ..NodeSelectorTerm::default()
                },
            })
            .collect();
        pod_with(
            "default",
            "p",
            &[],
            Some(Affinity {
                node_affinity: Some(NodeAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(preferred),
                    ..NodeAffinity::default()
                }),
                ..Affinity::default()
            }),
        )
    }

    #[test]
    fn weights_add_up_and_scale() {
        let nodes = [
            labelled_node("a", &[("disk", "ssd"), ("zone", "1")]),
            labelled_node("b", &[("disk", "ssd")]),
            labelled_node("c", &[]),
        ];
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        let cases: Vec<(&str, Pod, Vec<f64>)> = vec![
            (
                "no preference",
                pod_with("default", "p", &[], None),
                vec![0.0, 0.0, 0.0],
            ),
            (
                "one term",
                prefer(&[("disk", "ssd", 10)]),
                vec![100.0, 100.0, 0.0],
            ),
            (
                "two terms add up",
                prefer(&[("disk", "ssd", 20), ("zone", "1", 80)]),
                vec![100.0, 20.0, 0.0],
            ),
            (
                "nothing matches",
                prefer(&[("gpu", "yes", 50)]),
                vec![0.0, 0.0, 0.0],
            ),
        ];
        for (name, pod, expected) in cases {
            assert_eq!(scores(&pod, &refs), expected, "{name}");
        }
        assert_eq!(
            raw_score(
                &prefer(&[("disk", "ssd", 20), ("zone", "1", 80)]),
                &nodes[0]
            ),
            100
        );
    }
}

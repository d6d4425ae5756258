//! Inter-pod affinity and anti-affinity (Kubernetes' `interpodaffinity` plugin), computed once
//! per pod over every node ([`State::new`], kube's PreFilter/PreScore) and then checked or
//! scored per node.
//!
//! - Filter, in kube's order: a node fails when its domains hold no pod matching all of the
//!   pod's required affinity terms (unless no pod in the cluster matches them and the pod
//!   matches them itself: the first of a group), when a pod matching one of its required
//!   anti-affinity terms runs in the node's domain for that term, or when a pod already
//!   running in the node's domain has a required anti-affinity term matching the incoming
//!   pod (symmetry). A node without a term's topology label fails affinity and passes anti-affinity.
//! - Score: preferred terms of the incoming pod add (affinity) or subtract (anti-affinity)
//!   their weight per matching pod in the domain, and so do the preferred terms of running
//!   pods that match the incoming one; scores are then scaled to 0..=100 between the lowest
//!   and the highest node.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Pod, PodAffinityTerm, WeightedPodAffinityTerm};

use crate::{
    plugins::NodeInfo,
    pods::{NamespaceLabels, PodInfo, Rejection, Term},
};

/// kube's `ErrReasonExistingAntiAffinityRulesNotMatch`.
pub const EXISTING_ANTI_AFFINITY: &str = "node(s) didn't satisfy existing pods anti-affinity rules";
/// kube's `ErrReasonAffinityRulesNotMatch`.
pub const AFFINITY: &str = "node(s) didn't match pod affinity rules";
/// kube's `ErrReasonAntiAffinityRulesNotMatch`.
pub const ANTI_AFFINITY: &str = "node(s) didn't match pod anti-affinity rules";

/// A topology domain: a label key and value.
type Pair = (String, String);

/// The incoming pod's view of the cluster.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// Domains where a running pod's required anti-affinity matches the incoming pod.
    existing_anti: BTreeSet<Pair>,
    /// The incoming pod's required anti-affinity terms.
    anti: Vec<Term>,
    /// Domains holding a pod that matches one of the incoming anti-affinity terms.
    anti_pairs: BTreeSet<Pair>,
    /// The incoming pod's required affinity terms.
    affinity: Vec<Term>,
    /// Domains holding a pod that matches all of them.
    affinity_pairs: BTreeSet<Pair>,
    /// Whether the incoming pod matches all its own affinity terms.
    self_affinity: bool,
    /// Preferred score per domain.
    preferred: BTreeMap<Pair, i64>,
}

fn terms(
    pod: &Pod,
    anti: bool,
    required: bool,
) -> (Vec<PodAffinityTerm>, Vec<WeightedPodAffinityTerm>) {
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let (req, pref) = if anti {
        let a = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        (
            a.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .clone()
            }),
            a.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .clone()
            }),
        )
    } else {
        let a = affinity.and_then(|a| a.pod_affinity.as_ref());
        (
            a.and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .clone()
            }),
            a.and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .clone()
            }),
        )
    };
    if required {
        (req.unwrap_or_default(), Vec::new())
    } else {
        (Vec::new(), pref.unwrap_or_default())
    }
}

fn pair(node: &NodeInfo, key: &str) -> Option<Pair> {
    node.labels
        .get(key)
        .map(|value| (key.to_owned(), value.clone()))
}

impl State {
    /// Counts what `pod` needs to know about the pods bound to `nodes`.
    pub fn new(pod: &Pod, nodes: &[NodeInfo], namespaces: &NamespaceLabels) -> Self {
        let me = PodInfo::new(pod);
        let prepare = |ts: Vec<PodAffinityTerm>| -> Vec<Term> {
            ts.iter()
                .map(|t| Term::new(t, &me.namespace, &me.labels))
                .collect()
        };
        let anti = prepare(terms(pod, true, true).0);
        let affinity = prepare(terms(pod, false, true).0);
        let preferred_affinity = terms(pod, false, false).1;
        let preferred_anti = terms(pod, true, false).1;
        let weighted = |ts: &[WeightedPodAffinityTerm], sign: i64, owner: &PodInfo| {
            ts.iter()
                .map(|w| {
                    (
                        Term::new(&w.pod_affinity_term, &owner.namespace, &owner.labels),
                        sign * i64::from(w.weight),
                    )
                })
                .collect::<Vec<_>>()
        };
        let mut incoming_preferred = weighted(&preferred_affinity, 1, &me);
        incoming_preferred.extend(weighted(&preferred_anti, -1, &me));
        let mut state = Self {
            self_affinity: affinity.iter().all(|t| t.matches(&me, namespaces)),
            anti,
            affinity,
            ..Self::default()
        };
        for node in nodes {
            for other in &node.pods {
                if other.uid == me.uid && !me.uid.is_empty() {
                    continue;
                }
                for term in &other.required_anti_affinity {
                    let term = Term::new(term, &other.namespace, &other.labels);
                    if term.matches(&me, namespaces)
                        && let Some(p) = pair(node, &term.topology_key)
                    {
                        state.existing_anti.insert(p);
                    }
                }
                for term in &state.anti {
                    if term.matches(other, namespaces)
                        && let Some(p) = pair(node, &term.topology_key)
                    {
                        state.anti_pairs.insert(p);
                    }
                }
                if !state.affinity.is_empty()
                    && state.affinity.iter().all(|t| t.matches(other, namespaces))
                {
                    for term in &state.affinity {
                        if let Some(p) = pair(node, &term.topology_key) {
                            state.affinity_pairs.insert(p);
                        }
                    }
                }
                for (term, weight) in &incoming_preferred {
                    if term.matches(other, namespaces)
                        && let Some(p) = pair(node, &term.topology_key)
                    {
                        *state.preferred.entry(p).or_default() += weight;
                    }
                }
                let mut theirs = weighted(&other.preferred_affinity, 1, other);
                theirs.extend(weighted(&other.preferred_anti_affinity, -1, other));
                for (term, weight) in theirs {
                    if term.matches(&me, namespaces)
                        && let Some(p) = pair(node, &term.topology_key)
                    {
                        *state.preferred.entry(p).or_default() += weight;
                    }
                }
            }
        }
        state
    }

    /// Whether the state can reject anything (a pod without terms among pods without
    /// anti-affinity passes every node).
    pub fn filters(&self) -> bool {
        !self.existing_anti.is_empty() || !self.anti.is_empty() || !self.affinity.is_empty()
    }

    /// The filter for one node.
    pub fn filter(&self, node: &NodeInfo) -> Result<(), Rejection> {
        let mut pods_exist = true;
        for term in &self.affinity {
            match pair(node, &term.topology_key) {
                Some(p) => pods_exist &= self.affinity_pairs.contains(&p),
                None => {
                    return Err(Rejection {
                        reason: AFFINITY,
                        resolvable: false,
                    });
                }
            }
        }
        let first_of_group = self.affinity_pairs.is_empty() && self.self_affinity;
        if !pods_exist && !first_of_group {
            return Err(Rejection {
                reason: AFFINITY,
                resolvable: false,
            });
        }
        if self
            .anti
            .iter()
            .filter_map(|t| pair(node, &t.topology_key))
            .any(|p| self.anti_pairs.contains(&p))
        {
            return Err(Rejection {
                reason: ANTI_AFFINITY,
                resolvable: true,
            });
        }
        if node
            .labels
            .iter()
            .any(|(k, v)| self.existing_anti.contains(&(k.clone(), v.clone())))
        {
            return Err(Rejection {
                reason: EXISTING_ANTI_AFFINITY,
                resolvable: true,
            });
        }
        Ok(())
    }

    /// Raw preferred score of one node: the sum over its domains.
    fn raw_score(&self, node: &NodeInfo) -> i64 {
        node.labels
            .iter()
            .filter_map(|(k, v)| self.preferred.get(&(k.clone(), v.clone())))
            .sum()
    }

    /// Scores for `nodes`, 0..=100 between the lowest and the highest (all 0 when equal).
    pub fn scores(&self, nodes: &[&NodeInfo]) -> Vec<f64> {
        let raw: Vec<i64> = nodes.iter().map(|n| self.raw_score(n)).collect();
        let min = raw.iter().copied().min().unwrap_or(0);
        let max = raw.iter().copied().max().unwrap_or(0);
        let diff = max - min;
        raw.iter()
            .map(|&s| {
                if diff > 0 {
                    (s - min) as f64 * 100.0 / diff as f64
                } else {
                    0.0
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests_support::{labelled_node, pod_with};
    use k8s_openapi::{
        api::core::v1::{Affinity, PodAffinity, PodAntiAffinity},
        apimachinery::pkg::apis::meta::v1::LabelSelector,
    };

    fn term(app: &str, key: &str) -> PodAffinityTerm {
        PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_labels: Some(BTreeMap::from([("app".into(), app.into())])),
                ..LabelSelector::default()
            }),
            topology_key: key.into(),
            ..PodAffinityTerm::default()
        }
    }

    fn anti(app: &str, key: &str) -> Affinity {
        Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![term(app, key)]),
                ..PodAntiAffinity::default()
            }),
            ..Affinity::default()
        }
    }

    fn with(app: &str, key: &str) -> Affinity {
        Affinity {
            pod_affinity: Some(PodAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![term(app, key)]),
                ..PodAffinity::default()
            }),
            ..Affinity::default()
        }
    }

    fn preferred(app: &str, weight: i32, against: bool) -> Affinity {
        let w = vec![WeightedPodAffinityTerm {
            weight,
            pod_affinity_term: term(app, "zone"),
        }];
        if against {
            Affinity {
                pod_anti_affinity: Some(PodAntiAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(w),
                    ..PodAntiAffinity::default()
                }),
                ..Affinity::default()
            }
        } else {
            Affinity {
                pod_affinity: Some(PodAffinity {
                    preferred_during_scheduling_ignored_during_execution: Some(w),
                    ..PodAffinity::default()
                }),
                ..Affinity::default()
            }
        }
    }

    /// Three nodes a (zone 1), b (zone 1), c (zone 2); `web` runs on a.
    fn cluster(running: Pod) -> Vec<NodeInfo> {
        let mut nodes = vec![
            labelled_node("a", &[("zone", "1")]),
            labelled_node("b", &[("zone", "1")]),
            labelled_node("c", &[("zone", "2")]),
        ];
        nodes[0].add_pod(&running);
        nodes
    }

    fn verdicts(pod: &Pod, nodes: &[NodeInfo], namespaces: &NamespaceLabels) -> Vec<&'static str> {
        let state = State::new(pod, nodes, namespaces);
        nodes
            .iter()
            .map(|n| state.filter(n).map_or_else(|r| r.reason, |()| "ok"))
            .collect()
    }

    #[test]
    fn required_terms() {
        let web = pod_with("default", "w", &[("app", "web")], None);
        let none = NamespaceLabels::new();
        let cases: Vec<(&str, Pod, Pod, Vec<&str>)> = vec![
            (
                "anti-affinity on hostname keeps off the node",
                web.clone(),
                pod_with(
                    "default",
                    "x",
                    &[("app", "web")],
                    Some(anti("web", "kubernetes.io/hostname")),
                ),
                vec![ANTI_AFFINITY, "ok", "ok"],
            ),
            (
                "anti-affinity on zone keeps off the whole zone",
                web.clone(),
                pod_with("default", "x", &[], Some(anti("web", "zone"))),
                vec![ANTI_AFFINITY, ANTI_AFFINITY, "ok"],
            ),
            (
                "a running pod's anti-affinity is respected by the newcomer",
                pod_with("default", "w", &[("app", "web")], Some(anti("db", "zone"))),
                pod_with("default", "x", &[("app", "db")], None),
                vec![EXISTING_ANTI_AFFINITY, EXISTING_ANTI_AFFINITY, "ok"],
            ),
            (
                "anti-affinity looks only in the pod's namespace by default",
                pod_with("other", "w", &[("app", "web")], None),
                pod_with("default", "x", &[], Some(anti("web", "zone"))),
                vec!["ok", "ok", "ok"],
            ),
            (
                "affinity needs a matching pod in the domain",
                web.clone(),
                pod_with("default", "x", &[], Some(with("web", "zone"))),
                vec!["ok", "ok", AFFINITY],
            ),
            (
                "affinity without a node label fails",
                web.clone(),
                pod_with("default", "x", &[], Some(with("web", "rack"))),
                vec![AFFINITY, AFFINITY, AFFINITY],
            ),
            (
                "the first pod of a self-affine group goes anywhere",
                pod_with("default", "w", &[("app", "other")], None),
                pod_with("default", "x", &[("app", "web")], Some(with("web", "zone"))),
                vec!["ok", "ok", "ok"],
            ),
            (
                "nothing matches and the pod is not self-affine",
                pod_with("default", "w", &[("app", "other")], None),
                pod_with("default", "x", &[], Some(with("web", "zone"))),
                vec![AFFINITY, AFFINITY, AFFINITY],
            ),
        ];
        for (name, running, incoming, expected) in cases {
            assert_eq!(
                verdicts(&incoming, &cluster(running), &none),
                expected,
                "{name}"
            );
        }
    }

    #[test]
    fn namespace_selector_picks_namespaces_by_label() {
        let running = pod_with("team-a", "w", &[("app", "web")], None);
        let mut affinity = anti("web", "zone");
        let terms = affinity
            .pod_anti_affinity
            .as_mut()
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_mut()
            })
            .expect("terms");
        terms[0].namespace_selector = Some(LabelSelector {
            match_labels: Some(BTreeMap::from([("team".into(), "a".into())])),
            ..LabelSelector::default()
        });
        let incoming = pod_with("default", "x", &[], Some(affinity.clone()));
        let labels = NamespaceLabels::from([(
            "team-a".to_owned(),
            BTreeMap::from([("team".to_owned(), "a".to_owned())]),
        )]);
        assert_eq!(
            verdicts(&incoming, &cluster(running.clone()), &labels),
            vec![ANTI_AFFINITY, ANTI_AFFINITY, "ok"]
        );
        assert_eq!(
            verdicts(
                &incoming,
                &cluster(running.clone()),
                &NamespaceLabels::new()
            ),
            vec!["ok", "ok", "ok"],
            "the namespace lacks the label"
        );
        // An empty selector means every namespace.
        let terms = affinity
            .pod_anti_affinity
            .as_mut()
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_mut()
            })
            .expect("terms");
        terms[0].namespace_selector = Some(LabelSelector::default());
        let incoming = pod_with("default", "x", &[], Some(affinity));
        assert_eq!(
            verdicts(&incoming, &cluster(running), &NamespaceLabels::new()),
            vec![ANTI_AFFINITY, ANTI_AFFINITY, "ok"]
        );
    }

    #[test]
    fn preferred_terms_score_domains() {
        let none = NamespaceLabels::new();
        let web = pod_with("default", "w", &[("app", "web")], None);
        let cases = [
            (
                "affinity prefers the zone with web",
                preferred("web", 10, false),
                [100.0, 100.0, 0.0],
            ),
            (
                "anti-affinity prefers the other zone",
                preferred("web", 10, true),
                [0.0, 0.0, 100.0],
            ),
            (
                "no match: all equal",
                preferred("db", 10, false),
                [0.0, 0.0, 0.0],
            ),
        ];
        for (name, affinity, expected) in cases {
            let nodes = cluster(web.clone());
            let pod = pod_with("default", "x", &[], Some(affinity));
            let state = State::new(&pod, &nodes, &none);
            let refs: Vec<&NodeInfo> = nodes.iter().collect();
            assert_eq!(state.scores(&refs), expected.to_vec(), "{name}");
        }
        // Symmetric: a running pod preferring away from `db` pushes a db pod off its zone.
        let nodes = cluster(pod_with(
            "default",
            "w",
            &[],
            Some(preferred("db", 5, true)),
        ));
        let pod = pod_with("default", "x", &[("app", "db")], None);
        let state = State::new(&pod, &nodes, &none);
        let refs: Vec<&NodeInfo> = nodes.iter().collect();
        assert_eq!(state.scores(&refs), vec![0.0, 0.0, 100.0]);
    }
}

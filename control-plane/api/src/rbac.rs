//! Pure RBAC helpers shared by the API server and the controllers: aggregated ClusterRoles
//! (Kubernetes' `clusterroleaggregation` controller rule).

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};

use crate::selectors::label_selector_matches;

/// The API group of the RBAC kinds.
pub const GROUP: &str = "rbac.authorization.k8s.io";

/// The annotation that lets the API server's bootstrap reconcile add missing rules and
/// subjects to an object at every start.
pub const AUTOUPDATE_ANNOTATION: &str = "rbac.authorization.kubernetes.io/autoupdate";

/// The rules an aggregated ClusterRole should hold, or `None` when `role` has no
/// `aggregationRule`: for each of its `clusterRoleSelectors` in order, the rules of the other
/// ClusterRoles the selector matches, taken in name order, each rule once (the first time it
/// is seen), as Kubernetes' clusterroleaggregation controller computes them.
pub fn aggregated_rules(role: &ClusterRole, all: &[ClusterRole]) -> Option<Vec<PolicyRule>> {
    let selectors = role
        .aggregation_rule
        .as_ref()?
        .cluster_role_selectors
        .as_ref();
    let name = role.metadata.name.as_deref().unwrap_or_default();
    let mut sorted: Vec<&ClusterRole> = all.iter().collect();
    sorted.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let empty = BTreeMap::new();
    let mut rules: Vec<PolicyRule> = Vec::new();
    for selector in selectors.into_iter().flatten() {
        for other in &sorted {
            if other.metadata.name.as_deref() == Some(name) {
                continue;
            }
            let labels = other.metadata.labels.as_ref().unwrap_or(&empty);
            if !label_selector_matches(Some(selector), labels) {
                continue;
            }
            for rule in other.rules.iter().flatten() {
                if !rules.contains(rule) {
                    rules.push(rule.clone());
                }
            }
        }
    }
    Some(rules)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::rbac::v1::AggregationRule,
        apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
    };

    use super::*;

    fn rule(verb: &str, resource: &str) -> PolicyRule {
        PolicyRule {
            verbs: vec![verb.into()],
            api_groups: Some(vec![String::new()]),
            resources: Some(vec![resource.into()]),
            ..PolicyRule::default()
        }
    }

    fn role(name: &str, label: Option<&str>, rules: Vec<PolicyRule>) -> ClusterRole {
        ClusterRole {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: label.map(|l| BTreeMap::from([(l.to_owned(), "true".to_owned())])),
                ..ObjectMeta::default()
            },
            rules: Some(rules),
            ..ClusterRole::default()
        }
    }

    fn aggregating(name: &str, labels: &[&str]) -> ClusterRole {
        ClusterRole {
            aggregation_rule: Some(AggregationRule {
                cluster_role_selectors: Some(
                    labels
                        .iter()
                        .map(|l| LabelSelector {
                            match_labels: Some(BTreeMap::from([(
                                (*l).to_owned(),
                                "true".to_owned(),
                            )])),
                            ..LabelSelector::default()
                        })
                        .collect(),
                ),
            }),
            ..role(name, None, vec![rule("stale", "old")])
        }
    }

    #[test]
    fn aggregation_takes_the_selected_roles_rules_once_in_name_order() {
        let monitoring = aggregating("monitoring", &["to-mon", "to-mon-2"]);
        let all = vec![
            role("z-pods", Some("to-mon"), vec![rule("get", "pods")]),
            role(
                "a-svc",
                Some("to-mon"),
                vec![rule("get", "services"), rule("get", "pods")],
            ),
            role("other", Some("elsewhere"), vec![rule("delete", "pods")]),
            role(
                "b-nodes",
                Some("to-mon-2"),
                vec![rule("get", "pods"), rule("list", "nodes")],
            ),
            monitoring.clone(),
        ];
        let cases: [(&ClusterRole, Option<Vec<PolicyRule>>); 3] = [
            (
                &monitoring,
                Some(vec![
                    rule("get", "services"),
                    rule("get", "pods"),
                    rule("list", "nodes"),
                ]),
            ),
            (&all[0], None),
            (
                &aggregating("nothing", &["no-such-label"]),
                Some(Vec::new()),
            ),
        ];
        for (role, want) in cases {
            assert_eq!(
                aggregated_rules(role, &all),
                want,
                "{:?}",
                role.metadata.name
            );
        }
    }

    #[test]
    fn an_aggregated_role_does_not_select_itself() {
        let mut selfish = aggregating("selfish", &["to-self"]);
        selfish.metadata.labels = Some(BTreeMap::from([("to-self".into(), "true".into())]));
        let all = vec![selfish.clone()];
        assert_eq!(aggregated_rules(&selfish, &all), Some(Vec::new()));
    }
}

//! ClusterRole aggregation: a ClusterRole with an `aggregationRule` holds the union of the
//! rules of the ClusterRoles its `clusterRoleSelectors` select (Kubernetes'
//! `pkg/controller/clusterroleaggregation`). Any ClusterRole change re-reconciles every
//! aggregated one.

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule};
use keelson_api::rbac::aggregated_rules;
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher},
};

use crate::{ApiContext, Result};

/// The field manager of the controller's writes (kube's).
const FIELD_MANAGER: &str = "clusterrole-aggregation-controller";

/// The rules to write to `role` given every ClusterRole, or `None` when it is not aggregated
/// or already holds them (an absent list and an empty one are the same).
pub fn desired(role: &ClusterRole, all: &[ClusterRole]) -> Option<Vec<PolicyRule>> {
    let rules = aggregated_rules(role, all)?;
    let current = role.rules.as_deref().unwrap_or_default();
    (rules != current).then_some(rules)
}

struct Ctx {
    client: Client,
    roles: kube::runtime::reflector::Store<ClusterRole>,
}

/// Runs the controller over every ClusterRole.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let api = Api::<ClusterRole>::all(client.clone());
    let controller = Controller::new(api.clone(), watcher::Config::default());
    let roles = controller.store();
    let aggregated = roles.clone();
    let controller = controller.watches(api, watcher::Config::default(), move |_changed| {
        aggregated
            .state()
            .into_iter()
            .filter(|r| r.aggregation_rule.is_some())
            .map(|r| ObjectRef::from_obj(&*r))
            .collect::<Vec<_>>()
    });
    let ctx = Arc::new(Ctx { client, roles });
    crate::drive(
        "clusterroleaggregation",
        controller.run(reconcile, crate::retry, ctx),
    )
    .await;
    Ok(())
}

async fn reconcile(role: Arc<ClusterRole>, ctx: Arc<Ctx>) -> Result<Action> {
    let all: Vec<ClusterRole> = ctx.roles.state().iter().map(|r| (**r).clone()).collect();
    let Some(rules) = desired(&role, &all) else {
        return Ok(Action::await_change());
    };
    let name = role.name_any();
    let api = Api::<ClusterRole>::all(ctx.client.clone());
    api.patch(
        &name,
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        },
        &Patch::Merge(serde_json::json!({"rules": rules})),
    )
    .await
    .action(|| format!("set the aggregated rules of ClusterRole {name}"))?;
    tracing::info!(clusterrole = name, rules = rules.len(), "aggregated");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

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

    fn role(name: &str, label: Option<&str>, rules: Option<Vec<PolicyRule>>) -> ClusterRole {
        ClusterRole {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: label.map(|l| BTreeMap::from([(l.to_owned(), "true".to_owned())])),
                ..ObjectMeta::default()
            },
            rules,
            aggregation_rule: None,
        }
    }

    fn aggregating(rules: Option<Vec<PolicyRule>>) -> ClusterRole {
        ClusterRole {
            aggregation_rule: Some(AggregationRule {
                cluster_role_selectors: Some(vec![LabelSelector {
                    match_labels: Some(BTreeMap::from([("to-view".into(), "true".into())])),
                    ..LabelSelector::default()
                }]),
            }),
            ..role("view", None, rules)
        }
    }

    #[test]
    fn aggregated_roles_get_the_union_and_others_are_left_alone() {
        let parts = [
            role(
                "b",
                Some("to-view"),
                Some(vec![rule("get", "pods"), rule("list", "pods")]),
            ),
            role(
                "a",
                Some("to-view"),
                Some(vec![rule("get", "services"), rule("get", "pods")]),
            ),
            role("c", Some("to-edit"), Some(vec![rule("delete", "pods")])),
        ];
        let union = vec![
            rule("get", "services"),
            rule("get", "pods"),
            rule("list", "pods"),
        ];
        let cases = [
            (
                "empty aggregated role",
                aggregating(None),
                Some(union.clone()),
            ),
            (
                "stale rules replaced",
                aggregating(Some(vec![rule("delete", "pods")])),
                Some(union.clone()),
            ),
            ("already current", aggregating(Some(union.clone())), None),
            ("not aggregated", role("plain", None, None), None),
        ];
        for (case, subject, want) in cases {
            let mut all = parts.to_vec();
            all.push(subject.clone());
            assert_eq!(desired(&subject, &all), want, "{case}");
        }
        let lonely = aggregating(Some(vec![rule("get", "pods")]));
        assert_eq!(
            desired(&lonely, std::slice::from_ref(&lonely)),
            Some(Vec::new()),
            "nothing selected: no rules"
        );
        assert_eq!(desired(&aggregating(None), &[aggregating(None)]), None);
    }
}

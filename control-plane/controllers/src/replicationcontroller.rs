//! The ReplicationController controller: kube runs its ReplicaSet controller's logic for
//! ReplicationControllers (`pkg/controller/replication` converts and delegates), and so does
//! this one through [`replicaset::sync_pods`]. The only differences are the selector (a label
//! map, defaulted from the template's labels) and the status type.

use std::{collections::BTreeMap, sync::Arc};

use k8s_openapi::{
    api::core::v1::{Pod, ReplicationController, ReplicationControllerStatus},
    apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::{
    Api, Client,
    runtime::{Controller, controller::Action, watcher},
};

use crate::{
    Result,
    replicaset::{self, Counts, Replicated},
};

struct Ctx {
    client: Client,
}

/// Runs the controller.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let controller = Controller::new(
        Api::<ReplicationController>::all(client.clone()),
        watcher::Config::default(),
    );
    let controllers = controller.store();
    let controller = controller.watches(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        crate::claim::owners_of(controllers, |rc: &ReplicationController| {
            let selector = selector_of(rc);
            let any = selector
                .match_labels
                .as_ref()
                .is_some_and(|m| !m.is_empty());
            any.then(|| crate::claim::selector_of(&selector)).flatten()
        }),
    );
    let ctx = Arc::new(Ctx { client });
    crate::drive(
        "replicationcontroller",
        controller.run(reconcile, crate::retry, ctx),
    )
    .await;
    Ok(())
}

/// A ReplicationController's `spec.selector` as a label selector: its map, or the template's
/// labels when the map is empty (the API server's defaulting does the same).
pub fn selector_of(rc: &ReplicationController) -> LabelSelector {
    let spec = rc.spec.as_ref();
    let labels = spec
        .and_then(|s| s.selector.clone())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            spec.and_then(|s| s.template.as_ref())
                .and_then(|t| t.metadata.as_ref())
                .and_then(|m| m.labels.clone())
        })
        .unwrap_or_default();
    LabelSelector {
        match_labels: Some(labels),
        match_expressions: None,
    }
}

/// The status a ReplicationController reports for `counts`, keeping its conditions.
pub fn status_of(rc: &ReplicationController, counts: Counts) -> ReplicationControllerStatus {
    ReplicationControllerStatus {
        replicas: counts.replicas,
        fully_labeled_replicas: Some(counts.fully_labeled),
        ready_replicas: Some(counts.ready),
        available_replicas: Some(counts.available),
        observed_generation: rc.metadata.generation,
        conditions: rc.status.as_ref().and_then(|s| s.conditions.clone()),
    }
}

async fn reconcile(rc: Arc<ReplicationController>, ctx: Arc<Ctx>) -> Result<Action> {
    let Some(spec) = rc.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let selector = selector_of(&rc);
    if selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
    {
        // An empty selector would take every pod of the namespace; validation refuses it.
        return Ok(Action::await_change());
    }
    let workload = Replicated {
        api_version: "v1",
        kind: "ReplicationController",
        meta: &rc.metadata,
        selector,
        replicas: spec.replicas.unwrap_or(1),
        template: spec.template.as_ref(),
        min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
    };
    let (counts, requeue) = replicaset::sync_pods(&ctx.client, rc.as_ref(), &workload).await?;
    let status = status_of(&rc, counts);
    if rc.status.as_ref() != Some(&status) {
        crate::status::patch(&ctx.client, rc.as_ref(), &status).await?;
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::core::v1::{PodTemplateSpec, ReplicationControllerSpec},
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };
    use serde_json::json;

    use super::*;

    fn rc(selector: &[(&str, &str)], template: &[(&str, &str)]) -> ReplicationController {
        let map = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        ReplicationController {
            metadata: ObjectMeta {
                generation: Some(3),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicationControllerSpec {
                selector: Some(map(selector)),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(map(template)),
                        ..ObjectMeta::default()
                    }),
                    spec: None,
                }),
                ..ReplicationControllerSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn selectors_come_from_the_map_or_else_the_template() {
        let cases = [
            (
                rc(&[("app", "web")], &[("app", "web"), ("v", "1")]),
                "app=web",
            ),
            (rc(&[], &[("app", "db")]), "app=db"),
            (rc(&[], &[]), ""),
        ];
        for (rc, want) in cases {
            let query = crate::pods::selector_query(&selector_of(&rc), || "rc".into()).unwrap();
            assert_eq!(query, want);
        }
    }

    #[test]
    fn status_carries_the_counts_and_generation() {
        let status = status_of(
            &rc(&[("a", "b")], &[("a", "b")]),
            Counts {
                replicas: 3,
                fully_labeled: 2,
                ready: 2,
                available: 1,
            },
        );
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            json!({"replicas": 3, "fullyLabeledReplicas": 2, "readyReplicas": 2,
                   "availableReplicas": 1, "observedGeneration": 3})
        );
    }
}

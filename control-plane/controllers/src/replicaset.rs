//! The ReplicaSet controller: keeps `spec.replicas` active pods (owned through a controller
//! owner reference, named from `generateName`), deletes the least valuable ones first on scale
//! down (unscheduled, then pending, then not ready, then the newest), and reports `replicas`,
//! `fullyLabeledReplicas`, `readyReplicas`, `availableReplicas` and `observedGeneration`.
//!
//! Reconciles read pods with a fresh list rather than from a cache, so pods created a moment
//! ago are always counted and a scale-up never overshoots.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::{ReplicaSet, ReplicaSetStatus},
        core::v1::Pod,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use keelson_api::selectors::LabelSelector;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::json;

use crate::{ApiContext, Result, is_status, pods};

/// Pods created or deleted per reconcile at most (the rest follow on the requeue).
const BURST: usize = 500;

struct Ctx {
    client: Client,
}

/// Runs the controller.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let controller = Controller::new(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Pod>::all(client.clone()), watcher::Config::default());
    let ctx = Arc::new(Ctx { client });
    crate::drive("replicaset", controller.run(reconcile, crate::retry, ctx)).await;
    Ok(())
}

/// The order pods are deleted in on scale down: smaller first.
pub fn deletion_rank(pod: &Pod) -> (bool, u8, bool, std::cmp::Reverse<i64>) {
    let assigned = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let phase = match pods::phase(pod) {
        "Pending" => 0,
        "Unknown" => 1,
        _ => 2,
    };
    (
        assigned,
        phase,
        pods::is_ready(pod),
        std::cmp::Reverse(pods::seconds(pod.metadata.creation_timestamp.as_ref())),
    )
}

/// Whether a ready pod has been ready for `min_ready_seconds`.
pub fn is_available(pod: &Pod, min_ready_seconds: i32, now: i64) -> bool {
    pods::condition(pod, "Ready").is_some_and(|c| {
        c.status == "True"
            && (min_ready_seconds <= 0
                || pods::seconds(c.last_transition_time.as_ref()) + i64::from(min_ready_seconds)
                    <= now)
    })
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action> {
    let namespace = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let Some(spec) = rs.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let query = pods::selector_query(&spec.selector, || format!("ReplicaSet {namespace}/{name}"))?;
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let owned: Vec<Pod> = pod_api
        .list(&ListParams::default().labels(&query))
        .await
        .action(|| format!("list the pods of ReplicaSet {namespace}/{name}"))?
        .items
        .into_iter()
        .filter(|p| pods::controlled_by(&p.metadata, &uid))
        .collect();
    let mut active: Vec<&Pod> = owned.iter().filter(|p| pods::is_active(p)).collect();
    let want = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or_default();
    let terminating_rs = rs.metadata.deletion_timestamp.is_some();
    let mut requeue = None;
    if !terminating_rs && active.len() < want {
        let template = spec.template.clone().unwrap_or_default();
        let count = (want - active.len()).min(BURST);
        for _ in 0..count {
            let template_meta = template.metadata.clone().unwrap_or_default();
            let pod = Pod {
                metadata: ObjectMeta {
                    generate_name: Some(format!("{name}-")),
                    namespace: Some(namespace.clone()),
                    labels: template_meta.labels,
                    annotations: template_meta.annotations,
                    owner_references: Some(vec![pods::owner_reference(
                        "apps/v1",
                        "ReplicaSet",
                        &rs.metadata,
                    )]),
                    ..ObjectMeta::default()
                },
                spec: template.spec.clone(),
                status: None,
            };
            match pod_api.create(&PostParams::default(), &pod).await {
                Ok(_) => {}
                // The namespace is going away: nothing to create in it.
                Err(e) if is_status(&e, 403) => break,
                Err(e) => {
                    return Err(e)
                        .action(|| format!("create a pod for ReplicaSet {namespace}/{name}"));
                }
            }
        }
        if count < want - active.len() {
            requeue = Some(Duration::from_millis(100));
        }
    } else if active.len() > want {
        active.sort_by_key(|p| deletion_rank(p));
        let excess = active.len() - want;
        for pod in active.into_iter().take(excess).take(BURST) {
            match pod_api
                .delete(&pod.name_any(), &DeleteParams::default())
                .await
            {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => {
                    return Err(e).action(|| format!("delete pod {namespace}/{}", pod.name_any()));
                }
            }
        }
    }
    // Status from a fresh look after the writes.
    let owned: Vec<Pod> = pod_api
        .list(&ListParams::default().labels(&query))
        .await
        .action(|| format!("list the pods of ReplicaSet {namespace}/{name}"))?
        .items
        .into_iter()
        .filter(|p| pods::controlled_by(&p.metadata, &uid) && pods::is_active(p))
        .collect();
    let now = jiff::Timestamp::now().as_second();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_selector = LabelSelector::from_set(
        spec.template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .unwrap_or(&BTreeMap::new()),
    );
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(owned.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let status = ReplicaSetStatus {
        replicas: count(&|_| true),
        fully_labeled_replicas: Some(count(&|p| template_selector.matches(p.labels()))),
        ready_replicas: Some(count(&pods::is_ready)),
        available_replicas: Some(count(&|p| is_available(p, min_ready, now))),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        terminating_replicas: None,
    };
    let waiting_for_available = status.ready_replicas != status.available_replicas;
    if rs.status.as_ref() != Some(&status) {
        Api::<ReplicaSet>::namespaced(ctx.client.clone(), &namespace)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .map(drop)
            .or_else(|e| if is_status(&e, 404) { Ok(()) } else { Err(e) })
            .action(|| format!("update the status of ReplicaSet {namespace}/{name}"))?;
    }
    if waiting_for_available {
        requeue = requeue.or(Some(Duration::from_secs(1)));
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};

    fn pod(node: Option<&str>, phase: &str, ready: bool, created: i64) -> Pod {
        Pod {
            metadata: ObjectMeta {
                creation_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    jiff::Timestamp::from_second(created).unwrap(),
                )),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_owned),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn scale_down_takes_the_least_valuable_pods_first() {
        let mut pods = [
            pod(Some("n"), "Running", true, 100),
            pod(Some("n"), "Running", false, 100),
            pod(None, "Pending", false, 50),
            pod(Some("n"), "Running", true, 200),
            pod(Some("n"), "Pending", false, 10),
        ];
        pods.sort_by_key(deletion_rank);
        let order: Vec<(bool, &str, bool, i64)> = pods
            .iter()
            .map(|p| {
                (
                    p.spec.as_ref().unwrap().node_name.is_some(),
                    pods::phase(p),
                    pods::is_ready(p),
                    pods::seconds(p.metadata.creation_timestamp.as_ref()),
                )
            })
            .collect();
        assert_eq!(
            order,
            vec![
                (false, "Pending", false, 50),
                (true, "Pending", false, 10),
                (true, "Running", false, 100),
                (true, "Running", true, 200),
                (true, "Running", true, 100),
            ]
        );
    }
}

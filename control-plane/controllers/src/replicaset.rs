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
        core::v1::{Pod, PodTemplateSpec},
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector as LabelSelectorSpec, ObjectMeta},
};
use keelson_api::selectors::LabelSelector;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::{Controller, controller::Action, watcher},
};

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
    );
    let sets = controller.store();
    let controller = controller.watches(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        crate::claim::owners_of(sets, |rs: &ReplicaSet| {
            crate::claim::selector_of(&rs.spec.as_ref()?.selector)
        }),
    );
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

/// What the ReplicaSet logic needs from a workload that keeps `replicas` copies of a pod
/// template: a ReplicaSet, or a ReplicationController (kube runs the same controller code for
/// both, `pkg/controller/replication` wrapping `pkg/controller/replicaset`).
#[derive(Debug)]
pub struct Replicated<'a> {
    /// `apps/v1` or `v1`, for the pods' owner reference.
    pub api_version: &'static str,
    /// `ReplicaSet` or `ReplicationController`.
    pub kind: &'static str,
    /// The workload's metadata.
    pub meta: &'a ObjectMeta,
    /// Its selector (a ReplicationController's label map as `matchLabels`).
    pub selector: LabelSelectorSpec,
    /// `spec.replicas` (1 when unset).
    pub replicas: i32,
    /// `spec.template`.
    pub template: Option<&'a PodTemplateSpec>,
    /// `spec.minReadySeconds`.
    pub min_ready_seconds: i32,
}

/// The counts a ReplicaSet or ReplicationController status reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Active pods.
    pub replicas: i32,
    /// Active pods whose labels match the template's.
    pub fully_labeled: i32,
    /// Active ready pods.
    pub ready: i32,
    /// Active pods ready for `minReadySeconds`.
    pub available: i32,
}

/// The status counts of a workload's active pods (pure).
pub fn counts(
    active: &[Pod],
    template_labels: &BTreeMap<String, String>,
    min_ready_seconds: i32,
    now: i64,
) -> Counts {
    let template_selector = LabelSelector::from_set(template_labels);
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(active.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    Counts {
        replicas: count(&|_| true),
        fully_labeled: count(&|p| template_selector.matches(p.labels())),
        ready: count(&pods::is_ready),
        available: count(&|p| is_available(p, min_ready_seconds, now)),
    }
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action> {
    let Some(spec) = rs.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let workload = Replicated {
        api_version: "apps/v1",
        kind: "ReplicaSet",
        meta: &rs.metadata,
        selector: spec.selector.clone(),
        replicas: spec.replicas.unwrap_or(1),
        template: spec.template.as_ref(),
        min_ready_seconds: spec.min_ready_seconds.unwrap_or(0),
    };
    let (counts, requeue) = sync_pods(&ctx.client, rs.as_ref(), &workload).await?;
    let status = ReplicaSetStatus {
        replicas: counts.replicas,
        fully_labeled_replicas: Some(counts.fully_labeled),
        ready_replicas: Some(counts.ready),
        available_replicas: Some(counts.available),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        terminating_replicas: None,
    };
    if rs.status.as_ref() != Some(&status) {
        crate::status::patch(&ctx.client, rs.as_ref(), &status).await?;
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Creates or deletes the workload's pods towards `replicas` (at most [`BURST`] a call) and
/// counts them afterwards; the duration is when to look again (more to do, or pods becoming
/// available).
pub async fn sync_pods<K>(
    client: &Client,
    owner: &K,
    workload: &Replicated<'_>,
) -> Result<(Counts, Option<Duration>)>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let meta = workload.meta;
    let kind = workload.kind;
    let namespace = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let uid = meta.uid.clone().unwrap_or_default();
    let query = pods::selector_query(&workload.selector, || format!("{kind} {namespace}/{name}"))?;
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let selector =
        pods::parse_selector(&workload.selector, || format!("{kind} {namespace}/{name}"))?;
    // Every pod of the namespace: orphans the selector matches are adopted, own pods it no
    // longer matches released (finished pods are left as they are, as Kubernetes does).
    let candidates: Vec<Pod> = pod_api
        .list(&ListParams::default())
        .await
        .action(|| format!("list the pods of {kind} {namespace}/{name}"))?
        .items
        .into_iter()
        .filter(pods::is_active)
        .collect();
    let owned = crate::claim::claim(client, owner, candidates, |p: &Pod| {
        selector.matches(p.labels())
    })
    .await?;
    let mut active: Vec<&Pod> = owned.iter().collect();
    let want = usize::try_from(workload.replicas.max(0)).unwrap_or_default();
    let mut requeue = None;
    if meta.deletion_timestamp.is_none() && active.len() < want {
        let template = workload.template.cloned().unwrap_or_default();
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
                        workload.api_version,
                        kind,
                        meta,
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
                    return Err(e).action(|| format!("create a pod for {kind} {namespace}/{name}"));
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
    let active: Vec<Pod> = pod_api
        .list(&ListParams::default().labels(&query))
        .await
        .action(|| format!("list the pods of {kind} {namespace}/{name}"))?
        .items
        .into_iter()
        .filter(|p| pods::controlled_by(&p.metadata, &uid) && pods::is_active(p))
        .collect();
    let template_labels = workload
        .template
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let counts = counts(
        &active,
        &template_labels,
        workload.min_ready_seconds,
        jiff::Timestamp::now().as_second(),
    );
    if counts.ready != counts.available {
        requeue = requeue.or(Some(Duration::from_secs(1)));
    }
    Ok((counts, requeue))
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
    fn counts_are_what_the_status_reports() {
        let now = 1_000;
        let mut labeled = pod(Some("n"), "Running", true, 100);
        labeled.metadata.labels = Some(BTreeMap::from([("app".into(), "web".into())]));
        // Ready since 990: available with minReadySeconds 5, not with 30.
        let mut recent = labeled.clone();
        recent.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].last_transition_time =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::from_second(990).unwrap(),
            ));
        let pods = [labeled, recent, pod(Some("n"), "Running", false, 100)];
        let template = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
        let cases = [(0, 3, 2, 2, 2), (5, 3, 2, 2, 2), (30, 3, 2, 2, 1)];
        for (min_ready, replicas, labeled, ready, available) in cases {
            assert_eq!(
                counts(&pods, &template, min_ready, now),
                Counts {
                    replicas,
                    fully_labeled: labeled,
                    ready,
                    available
                },
                "minReadySeconds {min_ready}"
            );
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

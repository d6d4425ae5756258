//! The Deployment controller: one ReplicaSet per pod template (named `<deployment>-<hash>`,
//! labelled `pod-template-hash`), rolled over with `RollingUpdate` within `maxSurge` and
//! `maxUnavailable` (or `Recreate`), old ReplicaSets beyond `revisionHistoryLimit` removed, and
//! a status (`observedGeneration`, `replicas`, `updatedReplicas`, `readyReplicas`,
//! `availableReplicas`, `Available` and `Progressing` conditions) that lets
//! `kubectl rollout status` finish.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec},
        core::v1::PodTemplateSpec,
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::json;

use crate::{ApiContext, Result, is_status, pods};

/// The label that ties a ReplicaSet and its pods to one pod template.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The annotation with a ReplicaSet's revision.
pub const REVISION: &str = "deployment.kubernetes.io/revision";

struct Ctx {
    client: Client,
}

/// Runs the controller.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let controller = Controller::new(
        Api::<Deployment>::all(client.clone()),
        watcher::Config::default(),
    );
    let deployments = controller.store();
    // Its ReplicaSets, and orphans its selector matches (adopted, as kube's controller does).
    let controller = controller.watches(
        Api::<ReplicaSet>::all(client.clone()),
        watcher::Config::default(),
        crate::claim::owners_of(deployments, |d: &Deployment| {
            crate::claim::selector_of(&d.spec.as_ref()?.selector)
        }),
    );
    let ctx = Arc::new(Ctx { client });
    crate::drive("deployment", controller.run(reconcile, crate::retry, ctx)).await;
    Ok(())
}

/// The `pod-template-hash` of a template: FNV-1a (32 bit) of its JSON (keys sorted), written
/// with Kubernetes' safe alphabet (no vowels, no look-alikes).
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let text = serde_json::to_value(template)
        .map(|v| v.to_string())
        .unwrap_or_default();
    crate::history::safe_hash(text.as_bytes())
}

/// `maxSurge`/`maxUnavailable` against `replicas`: percentages round up for surge and down for
/// unavailability, as Kubernetes does; if both come to 0, one pod may be unavailable.
pub fn resolve_limits(
    replicas: i32,
    max_surge: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
) -> (i32, i32) {
    let resolve = |value: Option<&IntOrString>, round_up: bool| match value {
        None => {
            let quarter = f64::from(replicas) * 0.25;
            if round_up {
                quarter.ceil()
            } else {
                quarter.floor()
            }
        }
        Some(IntOrString::Int(n)) => f64::from(*n),
        Some(IntOrString::String(text)) => {
            let percent: f64 = text.trim_end_matches('%').parse().unwrap_or(25.0);
            let value = f64::from(replicas) * percent / 100.0;
            if round_up {
                value.ceil()
            } else {
                value.floor()
            }
        }
    } as i32;
    let surge = resolve(max_surge, true).max(0);
    let unavailable = resolve(max_unavailable, false).max(0);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable.min(replicas))
    }
}

/// One ReplicaSet as the rollout sees it: desired replicas and available pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// `spec.replicas`.
    pub spec: i32,
    /// `status.availableReplicas`.
    pub available: i32,
}

/// One rolling-update step: the new ReplicaSet's and the old ones' (oldest first) next
/// `spec.replicas`.
pub fn rolling_step(
    replicas: i32,
    max_surge: i32,
    max_unavailable: i32,
    new: Sizes,
    olds: &[Sizes],
) -> (i32, Vec<i32>) {
    let total: i32 = new.spec + olds.iter().map(|o| o.spec).sum::<i32>();
    // Scale up the new one within the surge.
    let mut new_spec = new.spec;
    if new_spec < replicas {
        let room = (replicas + max_surge - total).max(0);
        new_spec += room.min(replicas - new_spec);
    } else if new_spec > replicas {
        new_spec = replicas;
    }
    let total = total - new.spec + new_spec;
    // Scale down old ones while keeping replicas - maxUnavailable available.
    let min_available = replicas - max_unavailable;
    let new_unavailable = (new_spec - new.available).max(0);
    let mut budget = (total - min_available - new_unavailable).max(0);
    let mut next: Vec<i32> = olds.iter().map(|o| o.spec).collect();
    // First the old pods that are not available anyway.
    for (slot, old) in next.iter_mut().zip(olds) {
        let unhealthy = (old.spec - old.available).max(0).min(budget);
        *slot -= unhealthy;
        budget -= unhealthy;
    }
    // Then available ones, as long as enough stay available overall.
    let available: i32 = new.available + olds.iter().map(|o| o.available.min(o.spec)).sum::<i32>();
    let mut removable = (available - min_available).max(0).min(budget);
    for slot in &mut next {
        let take = (*slot).min(removable);
        *slot -= take;
        removable -= take;
    }
    (new_spec, next)
}

fn rs_sizes(rs: &ReplicaSet) -> Sizes {
    Sizes {
        spec: rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
        available: rs
            .status
            .as_ref()
            .and_then(|s| s.available_replicas)
            .unwrap_or(0),
    }
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations()
        .get(REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn condition(type_: &str, status: bool, reason: &str, message: String) -> DeploymentCondition {
    let now = pods::now();
    DeploymentCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

async fn reconcile(deployment: Arc<Deployment>, ctx: Arc<Ctx>) -> Result<Action> {
    let namespace = deployment.namespace().unwrap_or_default();
    let name = deployment.name_any();
    let Some(spec) = deployment.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    if deployment.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &namespace);
    // Refuses a selector Kubernetes would refuse, with the Deployment named.
    pods::selector_query(&spec.selector, || format!("Deployment {namespace}/{name}"))?;
    let selector = crate::claim::selector_of(&spec.selector);
    // Every ReplicaSet of the namespace: orphans that match are adopted, owned ones that no
    // longer match are released (kube's `ClaimReplicaSets`).
    let candidates = rs_api
        .list(&ListParams::default())
        .await
        .action(|| format!("list the ReplicaSets of Deployment {namespace}/{name}"))?
        .items;
    let mut owned: Vec<ReplicaSet> =
        crate::claim::claim(&ctx.client, deployment.as_ref(), candidates, |rs| {
            selector.as_ref().is_some_and(|s| s.matches(rs.labels()))
        })
        .await?;
    owned.sort_by_key(|rs| {
        (
            revision(rs),
            pods::seconds(rs.metadata.creation_timestamp.as_ref()),
        )
    });
    let hash = template_hash(&spec.template);
    let replicas = spec.replicas.unwrap_or(1);
    let new_index = owned
        .iter()
        .position(|rs| rs.labels().get(POD_TEMPLATE_HASH) == Some(&hash));
    let paused = spec.paused == Some(true);
    let strategy = spec.strategy.clone().unwrap_or_default();
    let recreate = strategy.type_.as_deref() == Some("Recreate");
    let (max_surge, max_unavailable) = if recreate {
        (0, replicas)
    } else {
        let rolling = strategy.rolling_update.unwrap_or_default();
        resolve_limits(
            replicas,
            rolling.max_surge.as_ref(),
            rolling.max_unavailable.as_ref(),
        )
    };
    let mut created_new = false;
    let new_rs = match new_index {
        Some(i) => owned.remove(i),
        None if paused => {
            return update_status(&ctx, &deployment, None, &owned, max_unavailable, false).await;
        }
        None => {
            let next_revision = owned.iter().map(revision).max().unwrap_or(0) + 1;
            let mut template = spec.template.clone();
            let mut template_meta = template.metadata.clone().unwrap_or_default();
            template_meta
                .labels
                .get_or_insert_with(BTreeMap::new)
                .insert(POD_TEMPLATE_HASH.into(), hash.clone());
            template.metadata = Some(template_meta.clone());
            let mut selector = spec.selector.clone();
            selector
                .match_labels
                .get_or_insert_with(BTreeMap::new)
                .insert(POD_TEMPLATE_HASH.into(), hash.clone());
            let first = owned.is_empty();
            let rs = ReplicaSet {
                metadata: ObjectMeta {
                    name: Some(format!("{name}-{hash}")),
                    namespace: Some(namespace.clone()),
                    labels: template_meta.labels.clone(),
                    annotations: Some(BTreeMap::from([(
                        REVISION.to_owned(),
                        next_revision.to_string(),
                    )])),
                    owner_references: Some(vec![pods::owner_reference(
                        "apps/v1",
                        "Deployment",
                        &deployment.metadata,
                    )]),
                    ..ObjectMeta::default()
                },
                spec: Some(ReplicaSetSpec {
                    replicas: Some(if first { replicas } else { 0 }),
                    min_ready_seconds: spec.min_ready_seconds,
                    selector,
                    template: Some(template),
                }),
                status: None,
            };
            created_new = true;
            match rs_api.create(&PostParams::default(), &rs).await {
                Ok(rs) => rs,
                Err(e) if is_status(&e, 409) => {
                    return Ok(Action::requeue(Duration::from_millis(200)));
                }
                Err(e) if is_status(&e, 403) => return Ok(Action::await_change()),
                Err(e) => {
                    return Err(e).action(|| {
                        format!("create a ReplicaSet for Deployment {namespace}/{name}")
                    });
                }
            }
        }
    };
    let mut new_rs = new_rs;
    if !paused {
        let olds: Vec<Sizes> = owned.iter().map(rs_sizes).collect();
        let (new_spec, old_specs) = if recreate {
            let old_pods: i32 = owned
                .iter()
                .map(|rs| rs.status.as_ref().map_or(0, |s| s.replicas))
                .sum();
            let old_spec: i32 = olds.iter().map(|o| o.spec).sum();
            let new_spec = if old_pods == 0 && old_spec == 0 {
                replicas
            } else {
                0
            };
            (new_spec, vec![0; olds.len()])
        } else {
            rolling_step(
                replicas,
                max_surge,
                max_unavailable,
                rs_sizes(&new_rs),
                &olds,
            )
        };
        if new_spec != rs_sizes(&new_rs).spec {
            new_rs = scale(&rs_api, &new_rs, new_spec).await?;
        }
        for (rs, next) in owned.iter_mut().zip(old_specs) {
            if next != rs_sizes(rs).spec {
                *rs = scale(&rs_api, rs, next).await?;
            }
        }
        // Revision history: old, empty ReplicaSets beyond the limit go (oldest first).
        let limit = usize::try_from(spec.revision_history_limit.unwrap_or(10).max(0)).unwrap_or(0);
        let empty: Vec<&ReplicaSet> = owned
            .iter()
            .filter(|rs| {
                rs_sizes(rs).spec == 0 && rs.status.as_ref().is_none_or(|s| s.replicas == 0)
            })
            .collect();
        for rs in empty.iter().take(empty.len().saturating_sub(limit)) {
            match rs_api
                .delete(&rs.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) => {}
                Err(e) => {
                    return Err(e)
                        .action(|| format!("delete old ReplicaSet {namespace}/{}", rs.name_any()));
                }
            }
        }
    }
    update_status(
        &ctx,
        &deployment,
        Some(&new_rs),
        &owned,
        max_unavailable,
        created_new,
    )
    .await
}

async fn scale(api: &Api<ReplicaSet>, rs: &ReplicaSet, replicas: i32) -> Result<ReplicaSet> {
    let name = rs.name_any();
    api.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"replicas": replicas}})),
    )
    .await
    .action(|| format!("scale ReplicaSet {name} to {replicas}"))
}

async fn update_status(
    ctx: &Ctx,
    deployment: &Deployment,
    new_rs: Option<&ReplicaSet>,
    olds: &[ReplicaSet],
    max_unavailable: i32,
    created_new: bool,
) -> Result<Action> {
    let replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let all: Vec<&ReplicaSet> = new_rs.into_iter().chain(olds).collect();
    let sum = |f: &dyn Fn(&ReplicaSet) -> i32| all.iter().map(|rs| f(rs)).sum::<i32>();
    let status_of = |rs: &ReplicaSet| rs.status.clone().unwrap_or_default();
    let total = sum(&|rs| status_of(rs).replicas);
    let ready = sum(&|rs| status_of(rs).ready_replicas.unwrap_or(0));
    let available = sum(&|rs| status_of(rs).available_replicas.unwrap_or(0));
    let updated = new_rs.map_or(0, |rs| status_of(rs).replicas);
    let new_available = new_rs.map_or(0, |rs| status_of(rs).available_replicas.unwrap_or(0));
    let complete = updated == replicas && total == replicas && new_available == replicas;
    let old = deployment.status.clone().unwrap_or_default();
    let keep = |type_: &str, next: DeploymentCondition| {
        // Keep the transition time when the status does not change.
        match old.conditions.iter().flatten().find(|c| c.type_ == type_) {
            Some(prev) if prev.status == next.status && prev.reason == next.reason => prev.clone(),
            Some(prev) if prev.status == next.status => DeploymentCondition {
                last_transition_time: prev.last_transition_time.clone(),
                ..next
            },
            _ => next,
        }
    };
    let is_available = available >= replicas - max_unavailable;
    let available_condition = keep(
        "Available",
        condition(
            "Available",
            is_available,
            if is_available {
                "MinimumReplicasAvailable"
            } else {
                "MinimumReplicasUnavailable"
            },
            if is_available {
                "Deployment has minimum availability.".into()
            } else {
                "Deployment does not have minimum availability.".into()
            },
        ),
    );
    let rs_name = new_rs.map(ResourceExt::name_any).unwrap_or_default();
    let (reason, message) = if complete {
        (
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
        )
    } else if created_new {
        (
            "NewReplicaSetCreated",
            format!("Created new replica set \"{rs_name}\""),
        )
    } else {
        (
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{rs_name}\" is progressing."),
        )
    };
    let progressing = keep(
        "Progressing",
        condition("Progressing", true, reason, message),
    );
    let status = DeploymentStatus {
        observed_generation: deployment.metadata.generation,
        replicas: Some(total),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((replicas - available).max(0)),
        conditions: Some(vec![available_condition, progressing]),
        collision_count: old.collision_count,
        terminating_replicas: None,
    };
    if deployment.status.as_ref() != Some(&status) {
        crate::status::patch(&ctx.client, deployment, &status).await?;
    }
    Ok(if complete {
        Action::await_change()
    } else {
        Action::requeue(Duration::from_secs(5))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(spec: i32, available: i32) -> Sizes {
        Sizes { spec, available }
    }

    #[test]
    fn limits_round_like_kubernetes() {
        let pct = |p: &str| Some(IntOrString::String(p.into()));
        assert_eq!(
            resolve_limits(10, pct("25%").as_ref(), pct("25%").as_ref()),
            (3, 2)
        );
        assert_eq!(
            resolve_limits(1, pct("25%").as_ref(), pct("25%").as_ref()),
            (1, 0)
        );
        assert_eq!(
            resolve_limits(5, Some(&IntOrString::Int(0)), Some(&IntOrString::Int(0))),
            (0, 1)
        );
    }

    #[test]
    fn a_rollout_stays_within_surge_and_unavailability() {
        // 4 replicas, maxSurge 1, maxUnavailable 1; simulate pods becoming available at once.
        let (replicas, surge, unavailable) = (4, 1, 1);
        let mut new = s(0, 0);
        let mut old = vec![s(4, 4)];
        for _ in 0..20 {
            let (n, o) = rolling_step(replicas, surge, unavailable, new, &old);
            let total = n + o.iter().sum::<i32>();
            assert!(total <= replicas + surge, "surge exceeded: {n} + {o:?}");
            // Available right after the step: what was available and not scaled away.
            let avail = new.available.min(n)
                + o.iter()
                    .zip(&old)
                    .map(|(x, y)| y.available.min(*x))
                    .sum::<i32>();
            assert!(
                avail >= replicas - unavailable,
                "too few available: {n} {o:?}"
            );
            new = s(n, n);
            old = o.iter().map(|x| s(*x, *x)).collect();
            if n == replicas && old.iter().all(|o| o.spec == 0) {
                return;
            }
        }
        panic!("the rollout did not finish: {new:?} {old:?}");
    }

    #[test]
    fn hashes_are_stable_and_template_dependent() {
        let a = PodTemplateSpec::default();
        let b = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "x".into())])),
                ..ObjectMeta::default()
            }),
            ..PodTemplateSpec::default()
        };
        assert_eq!(template_hash(&a), template_hash(&a));
        assert_ne!(template_hash(&a), template_hash(&b));
        assert!(
            template_hash(&b)
                .chars()
                .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c))
        );
    }
}

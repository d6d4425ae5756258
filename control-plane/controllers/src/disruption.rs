//! The disruption controller (kube's `pkg/controller/disruption/disruption.go`): keeps each
//! PodDisruptionBudget's status true, which the API server's `pods/eviction` reads and spends.
//!
//! - The budget's pods: those of its namespace its selector matches (an empty selector matches
//!   none). Healthy ones are ready, not being deleted and not recently evicted (a
//!   `status.disruptedPods` entry younger than two minutes).
//! - `minAvailable` as a number: `desiredHealthy` is it and `expectedPods` the pods counted.
//!   As a percentage, or `maxUnavailable` either way: `expectedPods` is the summed scale of the
//!   pods' controllers (a Deployment for its ReplicaSets, ReplicaSets, ReplicationControllers,
//!   StatefulSets), the percentage rounded up against it, and `desiredHealthy` is
//!   `minAvailable`, or `expectedPods - maxUnavailable` (at least 0).
//! - `disruptionsAllowed = currentHealthy - desiredHealthy` (0 when negative or when no pod is
//!   expected), and the `DisruptionAllowed` condition: `True`/`SufficientPods` while positive,
//!   `False`/`InsufficientPods` otherwise. When the budget cannot be computed (a controller
//!   missing, a bad percentage), nothing is allowed: `False`/`SyncFailed` with the cause.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, ReplicaSet, StatefulSet},
        core::v1::{Pod, ReplicationController},
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus},
    },
    apimachinery::pkg::{
        apis::meta::v1::{Condition, Time},
        util::intstr::IntOrString,
    },
};
use keelson_api::selectors::LabelSelector;
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, PostParams},
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher},
};

use crate::{ApiContext, Result, is_status, pods};

/// How long an evicted pod may take to go before it counts again (kube's `DeletionTimeout`).
pub const DELETION_TIMEOUT: i64 = 120;

struct Ctx {
    client: Client,
}

/// Runs the controller: budgets are reconciled when they or any pod of their namespace change.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let controller = Controller::new(
        Api::<PodDisruptionBudget>::all(client.clone()),
        watcher::Config::default(),
    );
    let budgets = controller.store();
    let controller = controller.watches(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        move |pod: Pod| {
            let namespace = pod.namespace();
            budgets
                .state()
                .into_iter()
                .filter(|b| b.namespace() == namespace)
                .map(|b| ObjectRef::from_obj(&*b))
                .collect::<Vec<_>>()
        },
    );
    let ctx = Arc::new(Ctx { client });
    crate::drive("disruption", controller.run(reconcile, crate::retry, ctx)).await;
    Ok(())
}

/// Whether the budget's numbers need its pods' controllers' scale.
pub fn needs_scale(budget: &PodDisruptionBudget) -> bool {
    let spec = budget.spec.as_ref();
    spec.and_then(|s| s.max_unavailable.as_ref()).is_some()
        || matches!(
            spec.and_then(|s| s.min_available.as_ref()),
            Some(IntOrString::String(_))
        )
}

/// `value` against `total` (kube's `GetScaledValueFromIntOrPercent`, rounding up).
pub fn scaled(value: &IntOrString, total: i32) -> Result<i32, String> {
    match value {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(text) => {
            let percent: i64 = text
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("invalid value for IntOrString: invalid value {text:?}"))?;
            let scaled = (percent * i64::from(total) + 99).div_euclid(100);
            Ok(i32::try_from(scaled).unwrap_or(i32::MAX))
        }
    }
}

/// The budget's pods: its namespace's pods its selector matches; none for an empty or invalid
/// selector.
pub fn selected<'a>(budget: &PodDisruptionBudget, pods: &'a [Pod]) -> Vec<&'a Pod> {
    let Some(selector) = budget
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .and_then(|s| LabelSelector::from_label_selector(s).ok())
        .filter(|s| !s.is_empty())
    else {
        return Vec::new();
    };
    pods.iter()
        .filter(|p| selector.matches(p.labels()))
        .collect()
}

/// The budget's status from its pods (`pods`, already [`selected`]), the summed scale of
/// their controllers (asked only when [`needs_scale`]), at `now` (seconds); also when to look
/// again for a `disruptedPods` entry to expire.
pub fn status(
    budget: &PodDisruptionBudget,
    pods: &[&Pod],
    scale: Option<Result<i32, String>>,
    now: i64,
) -> (PodDisruptionBudgetStatus, Option<Duration>) {
    let old = budget.status.clone().unwrap_or_default();
    let spec = budget.spec.clone().unwrap_or_default();
    let expected = match (&spec.max_unavailable, &spec.min_available) {
        (Some(max), _) => scale
            .unwrap_or(Ok(0))
            .and_then(|total| Ok((total, (total - scaled(max, total)?).max(0)))),
        (None, Some(IntOrString::Int(min))) => {
            Ok((i32::try_from(pods.len()).unwrap_or(i32::MAX), *min))
        }
        (None, Some(min)) => scale
            .unwrap_or(Ok(0))
            .and_then(|total| Ok((total, scaled(min, total)?))),
        (None, None) => Ok((i32::try_from(pods.len()).unwrap_or(i32::MAX), 0)),
    };
    let (expected, desired) = match expected {
        Ok(pair) => pair,
        Err(cause) => {
            let mut failed = PodDisruptionBudgetStatus {
                disruptions_allowed: 0,
                ..old.clone()
            };
            set_condition(&mut failed, "False", "SyncFailed", &cause, now);
            return (failed, None);
        }
    };
    let recorded = old.disrupted_pods.clone().unwrap_or_default();
    let mut disrupted = BTreeMap::new();
    let mut recheck: Option<i64> = None;
    for pod in pods {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let Some(at) = recorded.get(&pod.name_any()) else {
            continue;
        };
        let expires = at.0.as_second() + DELETION_TIMEOUT;
        if expires >= now {
            recheck = Some(recheck.map_or(expires, |r| r.min(expires)));
            disrupted.insert(pod.name_any(), at.clone());
        }
    }
    let healthy = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && !disrupted.contains_key(&p.name_any())
                && pods::is_ready(p)
        })
        .count();
    let healthy = i32::try_from(healthy).unwrap_or(i32::MAX);
    let allowed = if expected <= 0 {
        0
    } else {
        (healthy - desired).max(0)
    };
    let mut status = PodDisruptionBudgetStatus {
        current_healthy: healthy,
        desired_healthy: desired,
        expected_pods: expected,
        disruptions_allowed: allowed,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        observed_generation: budget.metadata.generation,
        conditions: old.conditions.clone(),
    };
    if allowed > 0 {
        set_condition(&mut status, "True", "SufficientPods", "", now);
    } else {
        set_condition(&mut status, "False", "InsufficientPods", "", now);
    }
    let recheck = recheck.map(|at| Duration::from_secs((at - now).max(0).unsigned_abs() + 1));
    (status, recheck)
}

/// Sets the `DisruptionAllowed` condition as kube's `SetStatusCondition` does: the transition
/// time moves only when the status changes.
fn set_condition(
    status: &mut PodDisruptionBudgetStatus,
    value: &str,
    reason: &str,
    message: &str,
    now: i64,
) {
    let observed = status.observed_generation;
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let time = Time(jiff::Timestamp::from_second(now).unwrap_or(jiff::Timestamp::UNIX_EPOCH));
    match conditions
        .iter_mut()
        .find(|c| c.type_ == "DisruptionAllowed")
    {
        Some(condition) => {
            if condition.status != value {
                condition.last_transition_time = time;
            }
            value.clone_into(&mut condition.status);
            reason.clone_into(&mut condition.reason);
            message.clone_into(&mut condition.message);
            condition.observed_generation = observed;
        }
        None => conditions.push(Condition {
            type_: "DisruptionAllowed".into(),
            status: value.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: observed,
            last_transition_time: time,
        }),
    }
}

/// The scale of the controller of `pod` (kube's finders), by the controller's uid (so each
/// counts once); `None` for a pod without a controller.
async fn controller_scale(client: &Client, pod: &Pod) -> Result<Option<(String, i32)>, String> {
    let Some(owner) = pods::controller_of(&pod.metadata) else {
        return Ok(None);
    };
    let namespace = pod.namespace().unwrap_or_default();
    let missing = || format!("found no controllers for pod {:?}", pod.name_any());
    let fetch_error = |e: kube::Error| e.to_string();
    let found = match (owner.api_version.as_str(), owner.kind.as_str()) {
        ("apps/v1", "ReplicaSet") => {
            let rs = Api::<ReplicaSet>::namespaced(client.clone(), &namespace)
                .get_opt(&owner.name)
                .await
                .map_err(fetch_error)?
                .filter(|rs| rs.metadata.uid.as_deref() == Some(owner.uid.as_str()))
                .ok_or_else(missing)?;
            match pods::controller_of(&rs.metadata).filter(|o| o.kind == "Deployment") {
                Some(deployment) => {
                    let deployment = Api::<Deployment>::namespaced(client.clone(), &namespace)
                        .get_opt(&deployment.name)
                        .await
                        .map_err(fetch_error)?
                        .ok_or_else(missing)?;
                    (
                        deployment.metadata.uid.clone().unwrap_or_default(),
                        deployment.spec.and_then(|s| s.replicas).unwrap_or(1),
                    )
                }
                None => (
                    owner.uid.clone(),
                    rs.spec.and_then(|s| s.replicas).unwrap_or(1),
                ),
            }
        }
        ("v1", "ReplicationController") => {
            let rc = Api::<ReplicationController>::namespaced(client.clone(), &namespace)
                .get_opt(&owner.name)
                .await
                .map_err(fetch_error)?
                .ok_or_else(missing)?;
            (
                owner.uid.clone(),
                rc.spec.and_then(|s| s.replicas).unwrap_or(1),
            )
        }
        ("apps/v1", "StatefulSet") => {
            let sts = Api::<StatefulSet>::namespaced(client.clone(), &namespace)
                .get_opt(&owner.name)
                .await
                .map_err(fetch_error)?
                .ok_or_else(missing)?;
            (
                owner.uid.clone(),
                sts.spec.and_then(|s| s.replicas).unwrap_or(1),
            )
        }
        _ => return Err(missing()),
    };
    Ok(Some(found))
}

async fn expected_scale(client: &Client, pods: &[&Pod]) -> Result<i32, String> {
    let mut scales = BTreeMap::new();
    for pod in pods {
        if let Some((uid, scale)) = controller_scale(client, pod).await? {
            scales.insert(uid, scale);
        }
    }
    Ok(scales.values().sum())
}

async fn reconcile(budget: Arc<PodDisruptionBudget>, ctx: Arc<Ctx>) -> Result<Action> {
    let namespace = budget.namespace().unwrap_or_default();
    let name = budget.name_any();
    let all: Vec<Pod> = Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
        .list(&ListParams::default())
        .await
        .action(|| format!("list the pods of PodDisruptionBudget {namespace}/{name}"))?
        .items;
    let pods = selected(&budget, &all);
    let scale = if needs_scale(&budget) {
        Some(expected_scale(&ctx.client, &pods).await)
    } else {
        None
    };
    let now = jiff::Timestamp::now().as_second();
    let (status, recheck) = status(&budget, &pods, scale, now);
    if budget.status.as_ref() != Some(&status) {
        let mut updated = (*budget).clone();
        updated.status = Some(status);
        match Api::<PodDisruptionBudget>::namespaced(ctx.client.clone(), &namespace)
            .replace_status(&name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {}
            // Deleted, or written meanwhile (an eviction): the watch brings it back.
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
            Err(e) => {
                return Err(e).action(|| {
                    format!("update the status of PodDisruptionBudget {namespace}/{name}")
                });
            }
        }
    }
    Ok(recheck.map_or_else(Action::await_change, Action::requeue))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::{
            core::v1::{PodCondition, PodStatus},
            policy::v1::PodDisruptionBudgetSpec,
        },
        apimachinery::pkg::apis::meta::v1::{LabelSelector as Selector, ObjectMeta},
    };

    use super::*;

    const NOW: i64 = 1_000_000;

    fn pod(name: &str, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(PodStatus {
                phase: Some("Running".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    fn budget(min: Option<IntOrString>, max: Option<IntOrString>) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some("web".into()),
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                min_available: min,
                max_unavailable: max,
                selector: Some(Selector {
                    match_labels: Some(BTreeMap::from([("app".into(), "web".into())])),
                    match_expressions: None,
                }),
                unhealthy_pod_eviction_policy: None,
            }),
            status: None,
        }
    }

    fn int(n: i32) -> Option<IntOrString> {
        Some(IntOrString::Int(n))
    }

    fn pct(p: &str) -> Option<IntOrString> {
        Some(IntOrString::String(p.into()))
    }

    #[test]
    fn percentages_round_up() {
        let cases = [
            (IntOrString::String("50%".into()), 3, Ok(2)),
            (IntOrString::String("10%".into()), 5, Ok(1)),
            (IntOrString::String("100%".into()), 4, Ok(4)),
            (IntOrString::String("0%".into()), 4, Ok(0)),
            (IntOrString::Int(2), 10, Ok(2)),
            (
                IntOrString::String("half".into()),
                4,
                Err("invalid value for IntOrString: invalid value \"half\"".to_owned()),
            ),
        ];
        for (value, total, want) in cases {
            assert_eq!(scaled(&value, total), want, "{value:?} of {total}");
        }
    }

    #[test]
    fn budgets() {
        let three = [pod("a", true), pod("b", true), pod("c", false)];
        // (budget, scale, currentHealthy, desiredHealthy, expectedPods, allowed, reason)
        let cases = [
            (budget(int(2), None), None, 2, 2, 3, 0, "InsufficientPods"),
            (budget(int(1), None), None, 2, 1, 3, 1, "SufficientPods"),
            (
                budget(pct("50%"), None),
                Some(Ok(3)),
                2,
                2,
                3,
                0,
                "InsufficientPods",
            ),
            (
                budget(pct("50%"), None),
                Some(Ok(2)),
                2,
                1,
                2,
                1,
                "SufficientPods",
            ),
            (
                budget(None, int(1)),
                Some(Ok(3)),
                2,
                2,
                3,
                0,
                "InsufficientPods",
            ),
            (
                budget(None, pct("50%")),
                Some(Ok(4)),
                2,
                2,
                4,
                0,
                "InsufficientPods",
            ),
            (
                budget(None, pct("100%")),
                Some(Ok(3)),
                2,
                0,
                3,
                2,
                "SufficientPods",
            ),
            (
                budget(None, int(5)),
                Some(Ok(3)),
                2,
                0,
                3,
                2,
                "SufficientPods",
            ),
            // No controller scale: nothing expected, nothing allowed.
            (
                budget(None, int(1)),
                Some(Ok(0)),
                2,
                0,
                0,
                0,
                "InsufficientPods",
            ),
            (
                budget(None, int(1)),
                Some(Err("found no controllers for pod \"a\"".into())),
                0,
                0,
                0,
                0,
                "SyncFailed",
            ),
        ];
        for (budget, scale, current, desired, expected, allowed, reason) in cases {
            let selected = selected(&budget, &three);
            let (got, _) = status(&budget, &selected, scale.clone(), NOW);
            let condition = &got.conditions.as_ref().unwrap()[0];
            assert_eq!(
                (
                    got.current_healthy,
                    got.desired_healthy,
                    got.expected_pods,
                    got.disruptions_allowed,
                    condition.reason.as_str(),
                ),
                (current, desired, expected, allowed, reason),
                "{:?} scale {scale:?}",
                budget.spec
            );
            assert_eq!(condition.type_, "DisruptionAllowed");
            assert_eq!(condition.status, if allowed > 0 { "True" } else { "False" });
            if reason != "SyncFailed" {
                assert_eq!(got.observed_generation, Some(2));
            }
        }
    }

    #[test]
    fn recently_evicted_pods_do_not_count_until_the_timeout() {
        let pods = [pod("a", true), pod("b", true)];
        let mut budget = budget(int(1), None);
        let at = |s: i64| Time(jiff::Timestamp::from_second(s).unwrap());
        budget.status = Some(PodDisruptionBudgetStatus {
            disrupted_pods: Some(BTreeMap::from([
                ("a".into(), at(NOW - 30)),
                ("gone".into(), at(NOW - 30)),
            ])),
            ..PodDisruptionBudgetStatus::default()
        });
        let selected = selected(&budget, &pods);
        let (now_status, recheck) = status(&budget, &selected, None, NOW);
        assert_eq!(now_status.current_healthy, 1);
        assert_eq!(now_status.disruptions_allowed, 0);
        assert_eq!(
            now_status
                .disrupted_pods
                .as_ref()
                .map(|d| d.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["a".to_owned()])
        );
        assert_eq!(recheck, Some(Duration::from_secs(91)));
        // After two minutes the entry is dropped and the pod counts again.
        let (later, recheck) = status(&budget, &selected, None, NOW + 200);
        assert_eq!((later.current_healthy, later.disruptions_allowed), (2, 1));
        assert_eq!((later.disrupted_pods, recheck), (None, None));
    }

    #[test]
    fn empty_selectors_select_nothing() {
        let mut budget = budget(int(1), None);
        budget.spec.as_mut().unwrap().selector = Some(Selector::default());
        assert!(selected(&budget, &[pod("a", true)]).is_empty());
        budget.spec.as_mut().unwrap().selector = None;
        assert!(selected(&budget, &[pod("a", true)]).is_empty());
    }
}

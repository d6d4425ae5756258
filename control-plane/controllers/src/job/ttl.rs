//! The `ttl-after-finished` controller: a finished Job with `ttlSecondsAfterFinished` is
//! deleted (background propagation, so the garbage collector removes its pods) that many seconds
//! after its `Complete` or `Failed` condition turned true (pkg/controller/ttlafterfinished).

use std::{sync::Arc, time::Duration};

use k8s_openapi::api::batch::v1::Job;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, Preconditions},
    runtime::{Controller, controller::Action, watcher},
};

use super::decide;
use crate::{ApiContext, Result, is_status};

struct Ctx {
    client: Client,
}

/// Runs the controller.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let controller = Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default());
    let ctx = Arc::new(Ctx { client });
    crate::drive(
        "ttl-after-finished",
        controller.run(reconcile, crate::retry, ctx),
    )
    .await;
    Ok(())
}

/// How long until a Job is to be deleted: `None` when it never is (not finished, no TTL, or
/// already being deleted), zero when it is due.
pub fn time_left(job: &Job, now: i64) -> Option<Duration> {
    if job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let finished = decide::finished_condition(job)?;
    let at = finished
        .last_transition_time
        .as_ref()
        .map_or(now, |t| t.0.as_second());
    let due = at + i64::from(ttl);
    Some(Duration::from_secs(u64::try_from(due - now).unwrap_or(0)))
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action> {
    let Some(left) = time_left(&job, jiff::Timestamp::now().as_second()) else {
        return Ok(Action::await_change());
    };
    if !left.is_zero() {
        return Ok(Action::requeue(left));
    }
    let namespace = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: job.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match Api::<Job>::namespaced(ctx.client.clone(), &namespace)
        .delete(&name, &params)
        .await
    {
        Ok(_) => {
            tracing::info!(job = %format!("{namespace}/{name}"), "finished Job's TTL passed; deleted");
            Ok(Action::await_change())
        }
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(Action::await_change()),
        Err(e) => Err(e).action(|| format!("delete finished Job {namespace}/{name}")),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::batch::v1::{JobCondition, JobSpec, JobStatus},
        apimachinery::pkg::apis::meta::v1::Time,
    };

    use super::*;

    fn job(ttl: Option<i32>, finished_at: Option<i64>, condition: &str) -> Job {
        Job {
            spec: Some(JobSpec {
                ttl_seconds_after_finished: ttl,
                ..JobSpec::default()
            }),
            status: Some(JobStatus {
                conditions: finished_at.map(|at| {
                    vec![JobCondition {
                        type_: condition.into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(
                            jiff::Timestamp::from_second(at).expect("valid"),
                        )),
                        ..JobCondition::default()
                    }]
                }),
                ..JobStatus::default()
            }),
            ..Job::default()
        }
    }

    #[test]
    fn deletion_times() {
        let now = 1_000_000;
        let cases = [
            (job(Some(100), Some(now - 40), "Complete"), Some(60)),
            (job(Some(100), Some(now - 400), "Failed"), Some(0)),
            (job(Some(0), Some(now), "Complete"), Some(0)),
            (job(None, Some(now), "Complete"), None),
            (job(Some(100), None, "Complete"), None),
            (job(Some(100), Some(now), "SuccessCriteriaMet"), None),
        ];
        for (i, (job, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                time_left(&job, now),
                want.map(Duration::from_secs),
                "case {i}"
            );
        }
    }
}

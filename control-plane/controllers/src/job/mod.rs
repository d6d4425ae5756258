//! The Job controller (kube-controller-manager's `job`): runs a Job's pods to completion as
//! [`decide`] plans it (parallelism, completions, Indexed mode, back-off, deadlines, the pod
//! failure policy, suspension) and reports the status `kubectl wait --for=condition=complete`
//! reads; and the `ttl-after-finished` controller ([`ttl`]), which deletes finished Jobs whose
//! `ttlSecondsAfterFinished` has passed.
//!
//! Reconciles read pods with a fresh list rather than from a cache, so pods created a moment
//! ago are always counted.

pub mod decide;
pub mod ttl;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::{
        Controller,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        watcher,
    },
};

use crate::{ApiContext, Result, is_status, pods};

struct Ctx {
    client: Client,
    recorder: Recorder,
}

/// Runs the controller.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let controller = Controller::new(Api::<Job>::all(client.clone()), watcher::Config::default());
    let jobs = controller.store();
    let controller = controller.watches(
        Api::<Pod>::all(client.clone()),
        watcher::Config::default(),
        crate::claim::owners_of(jobs, |job: &Job| {
            crate::claim::selector_of(job.spec.as_ref()?.selector.as_ref()?)
        }),
    );
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "job-controller".into(),
            instance: None,
        },
    );
    let ctx = Arc::new(Ctx { client, recorder });
    crate::drive("job", controller.run(reconcile, crate::retry, ctx)).await;
    Ok(())
}

/// Records an Event on `object`; a failure is only logged (Events are best effort).
pub(crate) async fn record<K>(
    recorder: &Recorder,
    object: &K,
    warning: bool,
    reason: &str,
    message: String,
) where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_owned(),
        note: Some(message),
        action: reason.to_owned(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &object.object_ref(&())).await {
        tracing::debug!(error = %crate::error_chain(&error), reason, "recording an event failed");
    }
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action> {
    let namespace = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    if decide::is_finished(&job) {
        return Ok(Action::await_change());
    }
    let Some(spec) = job.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    // The API server always sets a selector; without one only the Job's own pods count.
    let selector = spec
        .selector
        .as_ref()
        .map(|s| pods::parse_selector(s, || format!("Job {namespace}/{name}")))
        .transpose()?;
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    // Every pod of the namespace: orphans the selector matches are adopted, own pods it no
    // longer matches released.
    let candidates: Vec<Pod> = pod_api
        .list(&ListParams::default())
        .await
        .action(|| format!("list the pods of Job {namespace}/{name}"))?
        .items
        .into_iter()
        .filter(|p| selector.is_some() || pods::controlled_by(&p.metadata, &uid))
        .collect();
    let owned = crate::claim::claim(&ctx.client, job.as_ref(), candidates, |p: &Pod| {
        selector.as_ref().is_none_or(|s| s.matches(p.labels()))
    })
    .await?;
    let plan = decide::decide(&job, &owned, jiff::Timestamp::now());

    for pod in &plan.create {
        match pod_api.create(&PostParams::default(), pod).await {
            Ok(created) => {
                let message = format!("Created pod: {}", created.name_any());
                record(
                    &ctx.recorder,
                    job.as_ref(),
                    false,
                    "SuccessfulCreate",
                    message,
                )
                .await;
            }
            // The namespace is going away: nothing to create in it.
            Err(e) if is_status(&e, 403) => break,
            Err(e) => {
                let message = format!("Error creating: {}", crate::error_chain(&e));
                record(&ctx.recorder, job.as_ref(), true, "FailedCreate", message).await;
                return Err(e).action(|| format!("create a pod for Job {namespace}/{name}"));
            }
        }
    }
    for pod in &plan.delete {
        match pod_api.delete(pod, &DeleteParams::background()).await {
            Ok(_) => {
                let message = format!("Deleted pod: {pod}");
                record(
                    &ctx.recorder,
                    job.as_ref(),
                    false,
                    "SuccessfulDelete",
                    message,
                )
                .await;
            }
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(e).action(|| format!("delete pod {namespace}/{pod}")),
        }
    }
    if job.status.as_ref() != Some(&plan.status) {
        crate::status::patch(&ctx.client, job.as_ref(), &plan.status).await?;
    }
    for note in plan.notes {
        record(
            &ctx.recorder,
            job.as_ref(),
            note.warning,
            note.reason,
            note.message,
        )
        .await;
    }
    Ok(plan
        .requeue
        .map_or_else(Action::await_change, Action::requeue))
}

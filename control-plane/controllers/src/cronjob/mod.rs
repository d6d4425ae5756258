//! The CronJob controller (kube-controller-manager's `cronjob`): creates a CronJob's Jobs at
//! its scheduled times ([`schedule`]: cron syntax with the `@hourly`-style macros, `timeZone`),
//! honouring `concurrencyPolicy`, `startingDeadlineSeconds`, `suspend` and the history limits,
//! as [`decide`] plans it; after a control-plane restart the most recent missed time runs.

pub mod decide;
pub mod schedule;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::{
        Controller,
        controller::Action,
        events::{Recorder, Reporter},
        watcher,
    },
};
use serde_json::json;

use crate::{ApiContext, Result, is_status, job::record, pods};

struct Ctx {
    client: Client,
    recorder: Recorder,
}

/// Runs the controller.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let controller = Controller::new(
        Api::<CronJob>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Job>::all(client.clone()), watcher::Config::default());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "cronjob-controller".into(),
            instance: None,
        },
    );
    let ctx = Arc::new(Ctx { client, recorder });
    crate::drive("cronjob", controller.run(reconcile, crate::retry, ctx)).await;
    Ok(())
}

async fn reconcile(cronjob: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action> {
    let namespace = cronjob.namespace().unwrap_or_default();
    let name = cronjob.name_any();
    let uid = cronjob.metadata.uid.clone().unwrap_or_default();
    let job_api: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let owned: Vec<Job> = job_api
        .list(&ListParams::default())
        .await
        .action(|| format!("list the Jobs of CronJob {namespace}/{name}"))?
        .items
        .into_iter()
        .filter(|j| pods::controlled_by(&j.metadata, &uid))
        .collect();
    let mut plan = decide::decide(
        &cronjob,
        &owned,
        jiff::Timestamp::now(),
        &jiff::tz::TimeZone::system(),
    );

    for job in &plan.delete {
        match job_api.delete(job, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(e).action(|| format!("delete Job {namespace}/{job}")),
        }
    }
    if let Some(job) = &plan.create {
        let job_name = job.name_any();
        match job_api.create(&PostParams::default(), job).await {
            Ok(created) => {
                plan.status
                    .active
                    .get_or_insert_with(Vec::new)
                    .push(decide::reference(&created));
                plan.notes.push(decide::note_created(&job_name));
            }
            // The namespace is going away.
            Err(e) if is_status(&e, 403) => return Ok(Action::await_change()),
            Err(e) => {
                let message = format!("Error creating job: {}", crate::error_chain(&e));
                record(
                    &ctx.recorder,
                    cronjob.as_ref(),
                    true,
                    "FailedCreate",
                    message,
                )
                .await;
                if !is_status(&e, 409) {
                    return Err(e).action(|| format!("create Job {namespace}/{job_name}"));
                }
                // Someone else's Job has the name: this time is skipped.
            }
        }
    }
    if cronjob.status.as_ref() != Some(&plan.status) {
        // `active` is replaced whole (a merge patch replaces lists); an empty list is `null`.
        let mut status = serde_json::to_value(&plan.status).unwrap_or_else(|_| json!({}));
        if plan.status.active.is_none() {
            status["active"] = serde_json::Value::Null;
        }
        crate::status::patch(&ctx.client, cronjob.as_ref(), &status).await?;
    }
    for note in plan.notes {
        record(
            &ctx.recorder,
            cronjob.as_ref(),
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

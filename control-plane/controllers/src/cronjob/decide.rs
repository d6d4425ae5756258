//! What one sync of a CronJob does, decided from the CronJob, the Jobs it owns and the time
//! (pkg/controller/cronjob/cronjob_controllerv2.go `syncCronJob`, `cleanupFinishedJobs`).
//! No IO: [`super`] creates and deletes what the [`Plan`] says and writes its status.
//!
//! Unlike Kubernetes, an unfinished Job the CronJob owns but does not list as active (the
//! controller stopped between creating it and writing the status) is listed again, and a Job
//! already named for the due time counts as that time's run instead of failing to be created.

use std::time::Duration;

use jiff::{Timestamp, tz::TimeZone};
use k8s_openapi::{
    api::{
        batch::v1::{CronJob, CronJobStatus, Job},
        core::v1::ObjectReference,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};

use super::schedule::{ScheduleError, Zoned, most_recent};
use crate::{job::decide::Note, pods};

/// The annotation with the scheduled time a CronJob's Job runs for (RFC 3339, in the
/// CronJob's time zone).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// More missed start times than this are reported (`TooManyMissedTimes`).
pub const MISSED_WARNING: i64 = 100;
/// Added to a requeue so the sync runs just after the scheduled time, not just before.
const NEXT_SCHEDULE_DELTA: Duration = Duration::from_millis(100);

/// The outcome of one sync.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// The status to write (the created Job's reference is added by whoever creates it).
    pub status: CronJobStatus,
    /// The Job to create now.
    pub create: Option<Job>,
    /// Names of Jobs to delete (background propagation): replaced runs and history.
    pub delete: Vec<String>,
    /// Events to record.
    pub notes: Vec<Note>,
    /// When to sync again (the next scheduled time).
    pub requeue: Option<Duration>,
}

fn note(warning: bool, reason: &'static str, message: String) -> Note {
    Note {
        warning,
        reason,
        message,
    }
}

/// The Event for a Job created for a scheduled time.
pub fn note_created(job: &str) -> Note {
    note(false, "SuccessfulCreate", format!("Created job {job}"))
}

/// `Complete` or `Failed` (with status `True`), if the Job finished.
fn finished(job: &Job) -> Option<&'static str> {
    crate::job::decide::finished_condition(job).map(|c| {
        if c.type_ == "Complete" {
            "Complete"
        } else {
            "Failed"
        }
    })
}

/// The name of the Job for a scheduled time: `<cronjob>-<minutes since the epoch>`.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

/// RFC 3339 in `zone` (`Z` for UTC), as Go's `time.RFC3339` writes it.
pub fn rfc3339(t: Timestamp, zone: &TimeZone) -> String {
    let zoned = t.to_zoned(zone.clone());
    if zoned.offset().seconds() == 0 {
        zoned.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    } else {
        zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string()
    }
}

/// The Job of a scheduled run (`getJobFromTemplate2`).
pub fn new_job(cronjob: &CronJob, scheduled: Timestamp, zone: &TimeZone) -> Job {
    let name = cronjob.metadata.name.clone().unwrap_or_default();
    let template = cronjob
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_TIMESTAMP.into(), rfc3339(scheduled, zone));
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&name, scheduled)),
            namespace: cronjob.metadata.namespace.clone(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![pods::owner_reference(
                "batch/v1",
                "CronJob",
                &cronjob.metadata,
            )]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// A reference to a Job for `status.active`.
pub fn reference(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..ObjectReference::default()
    }
}

/// The oldest finished Jobs beyond `limit` (oldest first by `startTime`, Jobs without one
/// last, then by name: `removeOldestJobs`).
fn beyond_limit(mut jobs: Vec<&Job>, limit: Option<i32>) -> Vec<String> {
    let Some(limit) = limit else {
        return Vec::new();
    };
    let keep = usize::try_from(limit.max(0)).unwrap_or(0);
    if jobs.len() <= keep {
        return Vec::new();
    }
    jobs.sort_by_key(|j| {
        let start = j.status.as_ref().and_then(|s| s.start_time.as_ref());
        (
            start.is_none(),
            start.map(|t| t.0.as_second()),
            j.metadata.name.clone(),
        )
    });
    let excess = jobs.len() - keep;
    jobs.into_iter()
        .take(excess)
        .filter_map(|j| j.metadata.name.clone())
        .collect()
}

/// Decides one sync of `cronjob`, which controls `jobs`, at `now`; a schedule without a time
/// zone is read in `local`.
pub fn decide(cronjob: &CronJob, jobs: &[Job], now: Timestamp, local: &TimeZone) -> Plan {
    let spec = cronjob.spec.clone().unwrap_or_default();
    let mut status = cronjob.status.clone().unwrap_or_default();
    let mut plan = Plan::default();
    let mut active = status.active.take().unwrap_or_default();

    // Reconcile the active list with the Jobs that exist.
    active.retain(|r| {
        let exists = jobs.iter().any(|j| j.metadata.uid == r.uid);
        if !exists {
            plan.notes.push(note(
                false,
                "MissingJob",
                format!(
                    "Active job went missing: {}",
                    r.name.as_deref().unwrap_or_default()
                ),
            ));
        }
        exists
    });
    for job in jobs {
        let listed = active.iter().any(|r| r.uid == job.metadata.uid);
        match finished(job) {
            None if !listed && job.metadata.deletion_timestamp.is_none() => {
                active.push(reference(job));
            }
            Some(condition) if listed => {
                active.retain(|r| r.uid != job.metadata.uid);
                plan.notes.push(note(
                    false,
                    "SawCompletedJob",
                    format!(
                        "Saw completed job: {}, condition: {condition}",
                        job.metadata.name.as_deref().unwrap_or_default()
                    ),
                ));
            }
            _ => {}
        }
        if finished(job) == Some("Complete")
            && let Some(done) = job.status.as_ref().and_then(|s| s.completion_time.as_ref())
            && status
                .last_successful_time
                .as_ref()
                .is_none_or(|last| last.0 < done.0)
        {
            status.last_successful_time = Some(done.clone());
        }
    }

    // History limits.
    if cronjob.metadata.deletion_timestamp.is_none() {
        let (succeeded, failed): (Vec<&Job>, Vec<&Job>) = jobs
            .iter()
            .filter(|j| finished(j).is_some())
            .partition(|j| finished(j) == Some("Complete"));
        plan.delete
            .extend(beyond_limit(succeeded, spec.successful_jobs_history_limit));
        plan.delete
            .extend(beyond_limit(failed, spec.failed_jobs_history_limit));
        for name in &plan.delete {
            plan.notes.push(note(
                false,
                "SuccessfulDelete",
                format!("Deleted job {name}"),
            ));
        }
    }

    let finish = |mut plan: Plan, mut status: CronJobStatus, active: Vec<ObjectReference>| {
        status.active = (!active.is_empty()).then_some(active);
        plan.status = status;
        plan
    };
    if cronjob.metadata.deletion_timestamp.is_some() || spec.suspend == Some(true) {
        return finish(plan, status, active);
    }
    let schedule = match Zoned::parse(&spec.schedule, spec.time_zone.as_deref(), local) {
        Ok(s) => s,
        Err(error) => {
            let reason = match error {
                ScheduleError::UnknownZone { .. } => "UnknownTimeZone",
                _ => "UnparseableSchedule",
            };
            plan.notes.push(note(true, reason, error.to_string()));
            return finish(plan, status, active);
        }
    };

    let created = pods::seconds(cronjob.metadata.creation_timestamp.as_ref());
    let mut earliest = status
        .last_schedule_time
        .as_ref()
        .map_or_else(|| Timestamp::from_second(created).unwrap_or(now), |t| t.0);
    let next_after = earliest.max(now);
    if let Some(deadline) = spec.starting_deadline_seconds
        && let Ok(limit) = Timestamp::from_second(now.as_second() - deadline)
    {
        earliest = earliest.max(limit);
    }
    plan.requeue = schedule.next(next_after).map(|next| {
        let wait = next.as_second() - now.as_second();
        Duration::from_secs(u64::try_from(wait).unwrap_or(0)) + NEXT_SCHEDULE_DELTA
    });
    let (scheduled, missed) = match most_recent(&schedule, earliest, now) {
        Ok(found) => found,
        Err(error) => {
            plan.notes.push(note(
                true,
                "InvalidSchedule",
                format!("invalid schedule: {} : {error}", spec.schedule),
            ));
            return finish(plan, status, active);
        }
    };
    let Some(scheduled) = scheduled else {
        return finish(plan, status, active);
    };
    if missed > MISSED_WARNING {
        plan.notes.push(note(
            true,
            "TooManyMissedTimes",
            format!(
                "too many missed start times: {missed}. Set or decrease \
                 .spec.startingDeadlineSeconds or check clock skew"
            ),
        ));
    }
    if let Some(deadline) = spec.starting_deadline_seconds
        && scheduled.as_second() + deadline < now.as_second()
    {
        plan.notes.push(note(
            false,
            "MissSchedule",
            format!(
                "Missed scheduled time to start a job: {}",
                rfc3339(scheduled, &schedule.zone)
            ),
        ));
        return finish(plan, status, active);
    }
    let name = job_name(
        cronjob.metadata.name.as_deref().unwrap_or_default(),
        scheduled,
    );
    if jobs
        .iter()
        .any(|j| j.metadata.name.as_deref() == Some(name.as_str()))
    {
        // This time's Job exists already.
        if status
            .last_schedule_time
            .as_ref()
            .is_none_or(|t| t.0 < scheduled)
        {
            status.last_schedule_time = Some(Time(scheduled));
        }
        return finish(plan, status, active);
    }
    match spec.concurrency_policy.as_deref() {
        Some("Forbid") if !active.is_empty() => {
            plan.notes.push(note(
                false,
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy is \
                 Forbid"
                    .into(),
            ));
            return finish(plan, status, active);
        }
        Some("Replace") => {
            for r in active.drain(..) {
                let name = r.name.unwrap_or_default();
                plan.notes.push(note(
                    false,
                    "SuccessfulDelete",
                    format!("Deleted job {name}"),
                ));
                plan.delete.push(name);
            }
        }
        _ => {}
    }
    plan.create = Some(new_job(cronjob, scheduled, &schedule.zone));
    status.last_schedule_time = Some(Time(scheduled));
    finish(plan, status, active)
}

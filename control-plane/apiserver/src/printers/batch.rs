//! batch/v1: jobs and cron jobs.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{
    AGE, CONTAINERS, Column, IMAGES, NAME, TEMPLATE_CONTAINERS, age, bool_text, col, condition,
    containers_and_images, flag_or, format_label_selector, human_duration, int, int_or, list, name,
    since, text, time,
};

/// The Selector column of jobs and cron jobs.
const JOB_SELECTOR: Column = col(
    "Selector",
    "string",
    1,
    "A label query over pods that should match the pod count.",
);

pub(super) const JOB: &[Column] = &[
    NAME,
    col("Status", "string", 0, "Status of the job."),
    col(
        "Completions",
        "string",
        0,
        "The number of pods which reached phase Succeeded.",
    ),
    col(
        "Duration",
        "string",
        0,
        "Time required to complete the job.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    JOB_SELECTOR,
];

/// Whether the first of the job's conditions of type `kind` is true.
fn has_condition(job: &Value, kind: &str) -> bool {
    condition(job, kind).is_some_and(|c| text(c, "/status") == "True")
}

/// The Status column: the first of Complete, Failed, Terminating (being deleted), Suspended,
/// FailureTarget that holds, else Running.
fn job_status(job: &Value) -> &'static str {
    let deleting = job
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|d| !d.is_null());
    if has_condition(job, "Complete") {
        "Complete"
    } else if has_condition(job, "Failed") {
        "Failed"
    } else if deleting {
        "Terminating"
    } else if has_condition(job, "Suspended") {
        "Suspended"
    } else if has_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    }
}

/// Job: Name, Status, Completions (`succeeded/completions`, or `succeeded/1 of parallelism`
/// for a work queue with parallelism above 1), Duration (start to completion, or to now while
/// running; empty before the start), Age, Containers, Images, Selector.
pub(super) fn job_cells(job: &Value, now: Timestamp) -> Vec<Value> {
    let succeeded = int(job, "/status/succeeded");
    let completions = match job.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(completions) => format!("{succeeded}/{completions}"),
        None => match int_or(job, "/spec/parallelism", 1) {
            parallelism if parallelism > 1 => format!("{succeeded}/1 of {parallelism}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (
        time(job, "/status/startTime"),
        time(job, "/status/completionTime"),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now.as_second() - start.as_second()),
        (Some(start), Some(end)) => human_duration(end.as_second() - start.as_second()),
    };
    let (containers, images) = containers_and_images(job, TEMPLATE_CONTAINERS);
    vec![
        name(job),
        json!(job_status(job)),
        json!(completions),
        json!(duration),
        age(job, now),
        json!(containers),
        json!(images),
        json!(format_label_selector(job.pointer("/spec/selector"))),
    ]
}

pub(super) const CRON_JOB: &[Column] = &[
    NAME,
    col(
        "Schedule",
        "string",
        0,
        "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
    ),
    col(
        "Timezone",
        "string",
        0,
        "The time zone name for the given schedule, see \
         https://en.wikipedia.org/wiki/List_of_tz_database_time_zones.",
    ),
    col(
        "Suspend",
        "boolean",
        0,
        "This flag tells the controller to suspend subsequent executions, it does not apply to \
         already started executions.",
    ),
    col(
        "Active",
        "integer",
        0,
        "A list of pointers to currently running jobs.",
    ),
    col(
        "Last Schedule",
        "string",
        0,
        "Information when was the last time the job was successfully scheduled.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    JOB_SELECTOR,
];

/// CronJob: Name, Schedule, Timezone (`<none>`), Suspend (`True`/`False` text, as kubectl
/// prints it; unset reads as Kubernetes' default, false), Active (running jobs), Last Schedule
/// (how long ago, `<none>` before the first), Age, and the job template's Containers, Images
/// and Selector.
pub(super) fn cron_job_cells(cron_job: &Value, now: Timestamp) -> Vec<Value> {
    let last_schedule = match cron_job.pointer("/status/lastScheduleTime") {
        Some(Value::String(_)) => since(time(cron_job, "/status/lastScheduleTime"), now),
        _ => "<none>".to_owned(),
    };
    let time_zone = match cron_job.pointer("/spec/timeZone") {
        Some(Value::String(zone)) => zone.as_str(),
        _ => "<none>",
    };
    let template = "/spec/jobTemplate/spec";
    let (containers, images) =
        containers_and_images(cron_job, &format!("{template}/template/spec/containers"));
    vec![
        name(cron_job),
        json!(text(cron_job, "/spec/schedule")),
        json!(time_zone),
        json!(bool_text(flag_or(cron_job, "/spec/suspend", false))),
        json!(list(cron_job, "/status/active").len()),
        json!(last_schedule),
        age(cron_job, now),
        json!(containers),
        json!(images),
        json!(format_label_selector(
            cron_job.pointer(&format!("{template}/selector"))
        )),
    ]
}

//! Job and CronJob.

use serde_json::{Value, json};

use super::{CREATED, cells_of};

fn job(spec: Value, status: Value) -> Value {
    let mut spec_with_template = json!({
        "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "4f1c"}},
        "template": {"spec": {"restartPolicy": "Never",
                              "containers": [{"name": "pi", "image": "perl:5.34"}]}},
    });
    if let (Some(target), Some(extra)) = (spec_with_template.as_object_mut(), spec.as_object()) {
        target.extend(extra.clone());
    }
    json!({
        "metadata": {"name": "pi", "creationTimestamp": CREATED},
        "spec": spec_with_template,
        "status": status,
    })
}

#[test]
fn a_complete_job_shows_its_duration() {
    let complete = job(
        json!({"completions": 1, "parallelism": 1}),
        json!({
            "startTime": "2024-05-01T10:00:02Z",
            "completionTime": "2024-05-01T10:00:44Z",
            "succeeded": 1,
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True"},
                {"type": "Complete", "status": "True"},
            ],
        }),
    );
    assert_eq!(
        cells_of("batch", "Job", &complete),
        row![
            "pi",
            "Complete",
            "1/1",
            "42s",
            "5m",
            "pi",
            "perl:5.34",
            "batch.kubernetes.io/controller-uid=4f1c"
        ]
    );
}

#[test]
fn job_status_follows_kubernetes_precedence() {
    let with = |conditions: Value| {
        let object = job(json!({"completions": 3}), json!({"conditions": conditions}));
        cells_of("batch", "Job", &object)[1].clone()
    };
    assert_eq!(with(json!([])), "Running");
    assert_eq!(
        with(json!([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}])),
        "Failed"
    );
    assert_eq!(
        with(json!([{"type": "Suspended", "status": "True"}])),
        "Suspended"
    );
    assert_eq!(
        with(json!([{"type": "Suspended", "status": "False"}])),
        "Running"
    );
    assert_eq!(
        with(json!([{"type": "FailureTarget", "status": "True"}])),
        "FailureTarget"
    );
    assert_eq!(
        with(json!([{"type": "FailureTarget", "status": "True"},
                    {"type": "Failed", "status": "True"}])),
        "Failed"
    );
    let mut deleting = job(
        json!({}),
        json!({"conditions": [{"type": "Suspended", "status": "True"}]}),
    );
    deleting["metadata"]["deletionTimestamp"] = json!("2024-05-01T10:04:00Z");
    assert_eq!(cells_of("batch", "Job", &deleting)[1], "Terminating");
}

#[test]
fn job_completions_and_running_duration() {
    let running = job(
        json!({"completions": 5, "parallelism": 2}),
        json!({"startTime": "2024-05-01T10:01:00Z", "succeeded": 2, "active": 2}),
    );
    let c = cells_of("batch", "Job", &running);
    assert_eq!((c[2].clone(), c[3].clone()), (json!("2/5"), json!("4m")));

    let work_queue = job(json!({"parallelism": 4}), json!({"succeeded": 1}));
    let c = cells_of("batch", "Job", &work_queue);
    assert_eq!(
        (c[2].clone(), c[3].clone()),
        (json!("1/1 of 4"), json!("")),
        "no duration before the start"
    );
    let single = job(json!({}), json!({}));
    assert_eq!(cells_of("batch", "Job", &single)[2], "0/1");
}

#[test]
fn cron_job_row() {
    let cron_job = json!({
        "metadata": {"name": "backup", "creationTimestamp": CREATED},
        "spec": {
            "schedule": "*/5 * * * *",
            "timeZone": "Europe/Paris",
            "suspend": false,
            "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "OnFailure",
                "containers": [{"name": "backup", "image": "restic:0.16"}],
            }}}},
        },
        "status": {
            "active": [{"kind": "Job", "name": "backup-28577445", "namespace": "default"}],
            "lastScheduleTime": "2024-05-01T10:04:00Z",
        },
    });
    assert_eq!(
        cells_of("batch", "CronJob", &cron_job),
        row![
            "backup",
            "*/5 * * * *",
            "Europe/Paris",
            "False",
            1,
            "60s",
            "5m",
            "backup",
            "restic:0.16",
            "<none>"
        ]
    );
    let never_run = json!({
        "metadata": {"name": "nightly", "creationTimestamp": CREATED},
        "spec": {"schedule": "@daily", "suspend": true,
                 "jobTemplate": {"spec": {"template": {"spec": {"containers": []}}}}},
    });
    let c = cells_of("batch", "CronJob", &never_run);
    assert_eq!(
        c[2..6].to_vec(),
        row!["<none>", "True", 0, "<none>"],
        "timezone, suspend, active, last schedule"
    );
}

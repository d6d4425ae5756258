use std::{collections::BTreeMap, time::Duration};

use jiff::{Timestamp, tz::TimeZone};
use k8s_openapi::{
    api::{
        batch::v1::{
            CronJob, CronJobSpec, CronJobStatus, Job, JobCondition, JobSpec, JobStatus,
            JobTemplateSpec,
        },
        core::v1::ObjectReference,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};

use super::{
    decide::{SCHEDULED_TIMESTAMP, decide, job_name},
    schedule::{ScheduleError, Zoned, most_recent},
};

fn ts(text: &str) -> Timestamp {
    text.parse().expect("a valid timestamp")
}

#[test]
fn next_run_times() {
    // (schedule, timeZone, after, next)
    let cases = [
        (
            "*/1 * * * *",
            None,
            "2024-03-01T10:00:30Z",
            "2024-03-01T10:01:00Z",
        ),
        (
            "*/15 * * * *",
            None,
            "2024-03-01T10:00:00Z",
            "2024-03-01T10:15:00Z",
        ),
        (
            "0 * * * *",
            None,
            "2024-03-01T10:59:59Z",
            "2024-03-01T11:00:00Z",
        ),
        (
            "@hourly",
            None,
            "2024-03-01T10:00:00Z",
            "2024-03-01T11:00:00Z",
        ),
        (
            "@daily",
            None,
            "2024-03-01T10:00:00Z",
            "2024-03-02T00:00:00Z",
        ),
        (
            "@midnight",
            None,
            "2024-03-01T00:00:00Z",
            "2024-03-02T00:00:00Z",
        ),
        // 2024-03-01 is a Friday: the next Sunday is the 3rd.
        (
            "@weekly",
            None,
            "2024-03-01T10:00:00Z",
            "2024-03-03T00:00:00Z",
        ),
        (
            "@monthly",
            None,
            "2024-03-01T10:00:00Z",
            "2024-04-01T00:00:00Z",
        ),
        (
            "@yearly",
            None,
            "2024-03-01T10:00:00Z",
            "2025-01-01T00:00:00Z",
        ),
        (
            "@annually",
            None,
            "2024-03-01T10:00:00Z",
            "2025-01-01T00:00:00Z",
        ),
        (
            "30 9 * * mon-fri",
            None,
            "2024-03-01T10:00:00Z",
            "2024-03-04T09:30:00Z",
        ),
        (
            "0 0 29 2 *",
            None,
            "2024-03-01T00:00:00Z",
            "2028-02-29T00:00:00Z",
        ),
        // Day of month OR day of week when neither is `*`: the 15th or a Monday.
        (
            "0 0 15 * 1",
            None,
            "2024-03-01T00:00:00Z",
            "2024-03-04T00:00:00Z",
        ),
        (
            "0 0 15 * 1",
            None,
            "2024-03-11T00:00:00Z",
            "2024-03-15T00:00:00Z",
        ),
        // In a zone: 06:00 in Paris is 05:00 UTC in winter, 04:00 UTC in summer.
        (
            "0 6 * * *",
            Some("Europe/Paris"),
            "2024-03-01T06:00:00Z",
            "2024-03-02T05:00:00Z",
        ),
        (
            "0 6 * * *",
            Some("Europe/Paris"),
            "2024-07-01T06:00:00Z",
            "2024-07-02T04:00:00Z",
        ),
        // 09:00 in Tokyo is 00:00 UTC; strictly after that one comes the next day's.
        (
            "CRON_TZ=Asia/Tokyo 0 9 * * *",
            None,
            "2024-03-01T00:00:00Z",
            "2024-03-02T00:00:00Z",
        ),
        // 02:30 does not exist in Paris on 2024-03-31: it runs at 03:30 local (01:30 UTC).
        (
            "30 2 * * *",
            Some("Europe/Paris"),
            "2024-03-30T12:00:00Z",
            "2024-03-31T01:30:00Z",
        ),
        (
            "@every 90s",
            None,
            "2024-03-01T10:00:00Z",
            "2024-03-01T10:01:30Z",
        ),
    ];
    for (schedule, zone, after, want) in cases {
        let zoned = Zoned::parse(schedule, zone, &TimeZone::UTC).expect(schedule);
        let next = zoned.next(ts(after));
        assert_eq!(next, Some(ts(want)), "{schedule} in {zone:?} after {after}");
    }
    assert_eq!(
        Zoned::parse("0 0 30 2 *", None, &TimeZone::UTC)
            .expect("parses")
            .next(ts("2024-03-01T00:00:00Z")),
        None,
        "February 30th never comes"
    );
}

#[test]
fn schedule_errors() {
    assert_eq!(
        Zoned::parse("* * * *", None, &TimeZone::UTC)
            .expect_err("4 fields")
            .to_string(),
        "unparseable schedule: \"* * * *\" : expected exactly 5 fields, found 4: [* * * *]"
    );
    assert_eq!(
        Zoned::parse("* * * * *", Some("Mars/Olympus"), &TimeZone::UTC).expect_err("no such zone"),
        ScheduleError::UnknownZone {
            zone: "Mars/Olympus".into()
        }
    );
}

#[test]
fn missed_times() {
    let every_minute = Zoned::parse("*/1 * * * *", None, &TimeZone::UTC).expect("valid");
    // (earliest, now) -> (most recent, how many)
    let cases = [
        ("2024-03-01T10:00:00Z", "2024-03-01T10:00:59Z", None, 0),
        (
            "2024-03-01T10:00:00Z",
            "2024-03-01T10:01:00Z",
            Some("2024-03-01T10:01:00Z"),
            1,
        ),
        (
            "2024-03-01T10:00:00Z",
            "2024-03-01T10:03:10Z",
            Some("2024-03-01T10:03:00Z"),
            3,
        ),
        // A control plane down for a day: 1440 missed, only the latest runs.
        (
            "2024-03-01T10:00:00Z",
            "2024-03-02T10:00:30Z",
            Some("2024-03-02T10:00:00Z"),
            1440,
        ),
    ];
    for (earliest, now, want, count) in cases {
        let (latest, missed) = most_recent(&every_minute, ts(earliest), ts(now)).expect("valid");
        assert_eq!(
            (latest, missed),
            (want.map(ts), count),
            "{earliest} .. {now}"
        );
    }
    let weekdays = Zoned::parse("0 9 * * mon-fri", None, &TimeZone::UTC).expect("valid");
    let (latest, _) = most_recent(
        &weekdays,
        ts("2024-02-01T00:00:00Z"),
        ts("2024-03-03T12:00:00Z"),
    )
    .expect("valid");
    assert_eq!(
        latest,
        Some(ts("2024-03-01T09:00:00Z")),
        "the last weekday run"
    );
}

fn cronjob(f: impl FnOnce(&mut CronJobSpec, &mut CronJobStatus)) -> CronJob {
    let mut spec = CronJobSpec {
        schedule: "*/1 * * * *".into(),
        concurrency_policy: Some("Allow".into()),
        suspend: Some(false),
        successful_jobs_history_limit: Some(3),
        failed_jobs_history_limit: Some(1),
        job_template: JobTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([("app".into(), "tick".into())])),
                ..ObjectMeta::default()
            }),
            spec: Some(JobSpec::default()),
        },
        ..CronJobSpec::default()
    };
    let mut status = CronJobStatus::default();
    f(&mut spec, &mut status);
    CronJob {
        metadata: ObjectMeta {
            name: Some("tick".into()),
            namespace: Some("jobs".into()),
            uid: Some("cj1".into()),
            creation_timestamp: Some(Time(ts("2024-03-01T10:00:10Z"))),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: Some(status),
    }
}

/// A Job of the CronJob, started at `start`, finished with `condition`.
fn job(name: &str, start: &str, condition: Option<&str>) -> Job {
    Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("jobs".into()),
            uid: Some(format!("uid-{name}")),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(JobStatus {
            start_time: Some(Time(ts(start))),
            completion_time: (condition == Some("Complete")).then(|| Time(ts(start))),
            conditions: condition.map(|c| {
                vec![JobCondition {
                    type_: c.into(),
                    status: "True".into(),
                    ..JobCondition::default()
                }]
            }),
            ..JobStatus::default()
        }),
    }
}

fn active(names: &[&str]) -> Vec<ObjectReference> {
    names
        .iter()
        .map(|n| ObjectReference {
            name: Some((*n).into()),
            uid: Some(format!("uid-{n}")),
            ..ObjectReference::default()
        })
        .collect()
}

fn reasons(plan: &super::decide::Plan) -> Vec<&'static str> {
    plan.notes.iter().map(|n| n.reason).collect()
}

#[test]
fn first_run() {
    let cj = cronjob(|_, _| {});
    // Before the first minute: nothing, sync again just after 10:01.
    let plan = decide(&cj, &[], ts("2024-03-01T10:00:40Z"), &TimeZone::UTC);
    assert_eq!(plan.create, None);
    assert_eq!(plan.requeue, Some(Duration::from_millis(20_100)));
    // At 10:01:02 the 10:01 run is created.
    let plan = decide(&cj, &[], ts("2024-03-01T10:01:02Z"), &TimeZone::UTC);
    let job = plan.create.expect("a job");
    let minutes = ts("2024-03-01T10:01:00Z").as_second() / 60;
    assert_eq!(job.metadata.name, Some(format!("tick-{minutes}")));
    assert_eq!(
        job.metadata.name,
        Some(job_name("tick", ts("2024-03-01T10:01:00Z")))
    );
    assert_eq!(
        job.metadata.annotations.as_ref().unwrap()[SCHEDULED_TIMESTAMP],
        "2024-03-01T10:01:00Z"
    );
    assert_eq!(job.metadata.labels.as_ref().unwrap()["app"], "tick");
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("CronJob", "cj1")
    );
    assert_eq!(
        plan.status.last_schedule_time,
        Some(Time(ts("2024-03-01T10:01:00Z")))
    );
    assert_eq!(plan.requeue, Some(Duration::from_millis(58_100)));
}

#[test]
fn without_a_time_zone_the_controllers_own_zone_is_used() {
    // "0 6 * * *" with no timeZone: 06:00 where the controller runs, so 05:00 UTC in Paris
    // (winter), 06:00 UTC in UTC; a spec timeZone or a TZ= prefix wins over the local zone.
    let paris = TimeZone::get("Europe/Paris").expect("the host has the zone database");
    // (schedule, spec timeZone, the controller's zone, now, the Job's scheduled time)
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        &'a TimeZone,
        &'a str,
        Option<&'a str>,
    );
    let cases: [Case<'_>; 4] = [
        (
            "0 6 * * *",
            None,
            &paris,
            "2024-03-02T05:00:01Z",
            Some("2024-03-02T06:00:00+01:00"),
        ),
        (
            "0 6 * * *",
            None,
            &TimeZone::UTC,
            "2024-03-02T05:00:01Z",
            None,
        ),
        (
            "0 6 * * *",
            Some("UTC"),
            &paris,
            "2024-03-02T05:00:01Z",
            None,
        ),
        (
            "TZ=UTC 0 6 * * *",
            None,
            &paris,
            "2024-03-02T06:00:01Z",
            Some("2024-03-02T06:00:00Z"),
        ),
    ];
    for (schedule, zone, local, now, want) in cases {
        let cj = cronjob(|s, _| {
            s.schedule = schedule.into();
            s.time_zone = zone.map(str::to_owned);
        });
        let plan = decide(&cj, &[], ts(now), local);
        let got = plan
            .create
            .map(|job| job.metadata.annotations.unwrap()[SCHEDULED_TIMESTAMP].clone());
        assert_eq!(
            got.as_deref(),
            want,
            "{schedule:?} {zone:?} local {local:?} at {now}"
        );
    }
}

#[test]
fn scheduled_timestamp_in_the_zone() {
    let cj = cronjob(|s, _| {
        s.schedule = "0 6 * * *".into();
        s.time_zone = Some("Europe/Paris".into());
    });
    let plan = decide(&cj, &[], ts("2024-03-02T05:00:01Z"), &TimeZone::UTC);
    let job = plan.create.expect("a job");
    assert_eq!(
        job.metadata.annotations.as_ref().unwrap()[SCHEDULED_TIMESTAMP],
        "2024-03-02T06:00:00+01:00"
    );
}

#[test]
fn concurrency_policies() {
    let now = ts("2024-03-01T10:02:01Z");
    let last = |st: &mut CronJobStatus| {
        st.last_schedule_time = Some(Time(ts("2024-03-01T10:01:00Z")));
        st.active = Some(active(&["tick-old"]));
    };
    let running = [job("tick-old", "2024-03-01T10:01:00Z", None)];
    // (policy, creates, deletes, events)
    let cases = [
        ("Allow", true, vec![], vec![]),
        ("Forbid", false, vec![], vec!["JobAlreadyActive"]),
        ("Replace", true, vec!["tick-old"], vec!["SuccessfulDelete"]),
    ];
    for (policy, creates, deletes, events) in cases {
        let cj = cronjob(|s, st| {
            s.concurrency_policy = Some(policy.into());
            last(st);
        });
        let plan = decide(&cj, &running, now, &TimeZone::UTC);
        assert_eq!(plan.create.is_some(), creates, "{policy}");
        assert_eq!(plan.delete, deletes, "{policy}");
        assert_eq!(reasons(&plan), events, "{policy}");
        let still: Vec<_> = plan
            .status
            .active
            .iter()
            .flatten()
            .map(|r| r.name.clone().unwrap())
            .collect();
        let want: Vec<String> = if policy == "Replace" {
            vec![]
        } else {
            vec!["tick-old".into()]
        };
        assert_eq!(still, want, "{policy}");
    }
}

#[test]
fn suspended_and_deadlines() {
    let cj = cronjob(|s, _| s.suspend = Some(true));
    let plan = decide(&cj, &[], ts("2024-03-01T10:05:00Z"), &TimeZone::UTC);
    assert_eq!((plan.create, plan.requeue), (None, None));

    // startingDeadlineSeconds 10: at 10:05:30 the 10:05 run is 30 s late and skipped; the
    // requeue is for 10:06.
    let cj = cronjob(|s, st| {
        s.starting_deadline_seconds = Some(10);
        st.last_schedule_time = Some(Time(ts("2024-03-01T10:01:00Z")));
    });
    let plan = decide(&cj, &[], ts("2024-03-01T10:05:30Z"), &TimeZone::UTC);
    assert_eq!(plan.create, None);
    assert_eq!(plan.requeue, Some(Duration::from_millis(30_100)));
    // With 60 s the same run still starts.
    let cj = cronjob(|s, st| {
        s.starting_deadline_seconds = Some(60);
        st.last_schedule_time = Some(Time(ts("2024-03-01T10:01:00Z")));
    });
    let plan = decide(&cj, &[], ts("2024-03-01T10:05:30Z"), &TimeZone::UTC);
    assert_eq!(
        plan.create.and_then(|j| j.metadata.name),
        Some(job_name("tick", ts("2024-03-01T10:05:00Z")))
    );
}

#[test]
fn too_many_missed() {
    // Down for two hours: 120 missed; a warning, and only the latest runs.
    let cj = cronjob(|_, st| st.last_schedule_time = Some(Time(ts("2024-03-01T10:00:00Z"))));
    let plan = decide(&cj, &[], ts("2024-03-01T12:00:05Z"), &TimeZone::UTC);
    assert_eq!(reasons(&plan), ["TooManyMissedTimes"]);
    assert_eq!(
        plan.notes[0].message,
        "too many missed start times: 120. Set or decrease .spec.startingDeadlineSeconds or \
         check clock skew"
    );
    assert_eq!(
        plan.create.and_then(|j| j.metadata.name),
        Some(job_name("tick", ts("2024-03-01T12:00:00Z")))
    );
}

#[test]
fn finished_jobs_and_history() {
    let cj = cronjob(|_, st| {
        st.last_schedule_time = Some(Time(ts("2024-03-01T10:06:00Z")));
        st.active = Some(active(&["s5", "gone"]));
    });
    let jobs = [
        job("s1", "2024-03-01T10:01:00Z", Some("Complete")),
        job("s2", "2024-03-01T10:02:00Z", Some("Complete")),
        job("s3", "2024-03-01T10:03:00Z", Some("Complete")),
        job("f4", "2024-03-01T10:04:00Z", Some("Failed")),
        job("s5", "2024-03-01T10:05:00Z", Some("Complete")),
        job("f6", "2024-03-01T10:06:00Z", Some("Failed")),
    ];
    let plan = decide(&cj, &jobs, ts("2024-03-01T10:06:30Z"), &TimeZone::UTC);
    assert_eq!(plan.delete, ["s1", "f4"]);
    assert_eq!(
        reasons(&plan),
        [
            "MissingJob",
            "SawCompletedJob",
            "SuccessfulDelete",
            "SuccessfulDelete"
        ]
    );
    assert_eq!(
        plan.notes[1].message,
        "Saw completed job: s5, condition: Complete"
    );
    assert_eq!(plan.status.active, None);
    assert_eq!(
        plan.status.last_successful_time,
        Some(Time(ts("2024-03-01T10:05:00Z")))
    );
}

#[test]
fn existing_job_for_the_time_is_not_created_again() {
    // The controller stopped after creating the 10:01 Job, before writing the status.
    let cj = cronjob(|_, _| {});
    let name = job_name("tick", ts("2024-03-01T10:01:00Z"));
    let jobs = [job(&name, "2024-03-01T10:01:01Z", None)];
    let plan = decide(&cj, &jobs, ts("2024-03-01T10:01:30Z"), &TimeZone::UTC);
    assert_eq!(plan.create, None);
    let listed: Vec<_> = plan
        .status
        .active
        .iter()
        .flatten()
        .map(|r| r.name.clone())
        .collect();
    assert_eq!(listed, [Some(name)]);
    assert_eq!(
        plan.status.last_schedule_time,
        Some(Time(ts("2024-03-01T10:01:00Z")))
    );
}

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;
use k8s_openapi::{
    api::{
        batch::v1::{
            Job, JobCondition, JobSpec, JobStatus, PodFailurePolicy,
            PodFailurePolicyOnExitCodesRequirement, PodFailurePolicyOnPodConditionsPattern,
            PodFailurePolicyRule, SuccessPolicy, SuccessPolicyRule,
        },
        core::v1::{
            Container, ContainerState, ContainerStateTerminated, ContainerStatus, Pod,
            PodCondition, PodSpec, PodStatus, PodTemplateSpec,
        },
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};

use super::decide::*;

const NOW: i64 = 1_700_000_000;

fn now() -> Timestamp {
    Timestamp::from_second(NOW).expect("valid")
}

fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(seconds).expect("valid"))
}

fn job(f: impl FnOnce(&mut JobSpec)) -> Job {
    let mut spec = JobSpec {
        completions: Some(1),
        parallelism: Some(1),
        backoff_limit: Some(6),
        completion_mode: Some("NonIndexed".into()),
        suspend: Some(false),
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(BTreeMap::from([(
                    "batch.kubernetes.io/job-name".into(),
                    "pi".into(),
                )])),
                ..ObjectMeta::default()
            }),
            spec: Some(PodSpec {
                restart_policy: Some("Never".into()),
                subdomain: Some("pi".into()),
                containers: vec![Container {
                    name: "main".into(),
                    image: Some("busybox".into()),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
        },
        ..JobSpec::default()
    };
    f(&mut spec);
    Job {
        metadata: ObjectMeta {
            name: Some("pi".into()),
            namespace: Some("jobs".into()),
            uid: Some("u1".into()),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn with_status(mut job: Job, status: JobStatus) -> Job {
    job.status = Some(status);
    job
}

/// A pod named `name` in `phase`, finished (if it is) at `finished`, with an index.
fn pod(name: &str, phase: &str, index: Option<i32>, finished: i64, exit: i32) -> Pod {
    let terminated = matches!(phase, "Succeeded" | "Failed");
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("jobs".into()),
            annotations: index.map(|i| BTreeMap::from([(COMPLETION_INDEX.into(), i.to_string())])),
            creation_timestamp: Some(at(NOW - 1000)),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(PodStatus {
            phase: Some(phase.into()),
            container_statuses: terminated.then(|| {
                vec![ContainerStatus {
                    name: "main".into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: exit,
                            finished_at: Some(at(finished)),
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]
            }),
            ..PodStatus::default()
        }),
    }
}

fn types(plan: &Plan) -> Vec<(String, String, String)> {
    plan.status
        .conditions
        .iter()
        .flatten()
        .map(|c| {
            (
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
            )
        })
        .collect()
}

fn cond(type_: &str, reason: &str) -> (String, String, String) {
    (type_.into(), "True".into(), reason.into())
}

#[test]
fn runs_and_completes() {
    // A new Job: one pod, startTime set.
    let plan = decide(&job(|_| {}), &[], now());
    assert_eq!(plan.create.len(), 1);
    assert_eq!(
        plan.create[0].metadata.generate_name.as_deref(),
        Some("pi-")
    );
    let owner = &plan.create[0].metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.controller), ("Job", Some(true)));
    assert_eq!(plan.status.active, Some(1));
    assert_eq!(plan.status.start_time, Some(at(NOW)));

    // Its pod succeeded: SuccessCriteriaMet then Complete, completionTime, an event.
    let started = with_status(
        job(|_| {}),
        JobStatus {
            start_time: Some(at(NOW - 60)),
            active: Some(1),
            ..JobStatus::default()
        },
    );
    let plan = decide(
        &started,
        &[pod("pi-a", "Succeeded", None, NOW - 5, 0)],
        now(),
    );
    assert!(plan.create.is_empty() && plan.delete.is_empty());
    assert_eq!(
        types(&plan),
        vec![
            cond("SuccessCriteriaMet", "CompletionsReached"),
            cond("Complete", "CompletionsReached")
        ]
    );
    assert_eq!(plan.status.succeeded, Some(1));
    assert_eq!(plan.status.active, Some(0));
    assert_eq!(plan.status.completion_time, Some(at(NOW)));
    assert_eq!(plan.status.start_time, Some(at(NOW - 60)));
    assert_eq!(plan.notes[0].reason, "Completed");

    // A finished Job is left alone.
    let finished = with_status(started, plan.status.clone());
    let again = decide(&finished, &[], now());
    assert_eq!(again.status, plan.status);
    assert!(again.create.is_empty() && again.notes.is_empty());
}

#[test]
fn parallelism_and_completions() {
    // (completions, parallelism, succeeded pods, running pods) -> pods created, deleted.
    let cases = [
        (Some(5), 2, 0, 0, 2, 0),
        (Some(5), 2, 4, 0, 1, 0),
        (Some(5), 2, 3, 2, 0, 0),
        (Some(5), 3, 4, 2, 0, 1),
        (None, 3, 0, 0, 3, 0),
        // Work-queue Jobs: once one pod succeeded no new ones start; the Job completes when
        // the others finish.
        (None, 3, 1, 2, 0, 0),
    ];
    for (i, (completions, parallelism, done, running, create, delete)) in
        cases.into_iter().enumerate()
    {
        let j = job(|s| {
            s.completions = completions;
            s.parallelism = Some(parallelism);
        });
        let mut pods: Vec<Pod> = (0..done)
            .map(|n| pod(&format!("s{n}"), "Succeeded", None, NOW - 5, 0))
            .collect();
        pods.extend((0..running).map(|n| pod(&format!("r{n}"), "Running", None, 0, 0)));
        let plan = decide(&j, &pods, now());
        assert_eq!(
            (plan.create.len(), plan.delete.len()),
            (create, delete),
            "case {i}"
        );
        assert!(
            !types(&plan).iter().any(|c| c.0 == "Complete"),
            "case {i} is not complete"
        );
    }
}

#[test]
fn indexed_pods() {
    let j = job(|s| {
        s.completions = Some(3);
        s.parallelism = Some(3);
        s.completion_mode = Some("Indexed".into());
    });
    let plan = decide(&j, &[], now());
    let indexes: Vec<String> = plan
        .create
        .iter()
        .map(|p| p.metadata.annotations.as_ref().unwrap()[COMPLETION_INDEX].clone())
        .collect();
    assert_eq!(indexes, ["0", "1", "2"]);
    let second = &plan.create[1];
    assert_eq!(
        second.metadata.labels.as_ref().unwrap()[COMPLETION_INDEX],
        "1"
    );
    assert_eq!(second.metadata.generate_name.as_deref(), Some("pi-1-"));
    let spec = second.spec.as_ref().unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("pi-1"));
    assert_eq!(spec.subdomain.as_deref(), Some("pi"));
    let env = &spec.containers[0].env.as_ref().unwrap()[0];
    assert_eq!(env.name, "JOB_COMPLETION_INDEX");
    assert_eq!(
        env.value_from
            .as_ref()
            .unwrap()
            .field_ref
            .as_ref()
            .unwrap()
            .field_path,
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    );

    // Index 1 done, 0 running: only index 2 is started; completedIndexes "1".
    let plan = decide(
        &j,
        &[
            pod("pi-1-x", "Succeeded", Some(1), NOW - 5, 0),
            pod("pi-0-x", "Running", Some(0), 0, 0),
        ],
        now(),
    );
    let created: Vec<&str> = plan
        .create
        .iter()
        .map(|p| p.metadata.generate_name.as_deref().unwrap())
        .collect();
    assert_eq!(created, ["pi-2-"]);
    assert_eq!(plan.status.completed_indexes.as_deref(), Some("1"));
    assert_eq!(plan.status.succeeded, Some(1));

    // All done (and a duplicate success of index 2): Complete, "0-2".
    let pods = [
        pod("a", "Succeeded", Some(0), NOW - 5, 0),
        pod("b", "Succeeded", Some(1), NOW - 5, 0),
        pod("c", "Succeeded", Some(2), NOW - 5, 0),
        pod("d", "Succeeded", Some(2), NOW - 5, 0),
    ];
    let plan = decide(&j, &pods, now());
    assert_eq!(plan.status.completed_indexes.as_deref(), Some("0-2"));
    assert_eq!(plan.status.succeeded, Some(3));
    assert!(types(&plan).contains(&cond("Complete", "CompletionsReached")));
}

#[test]
fn index_sets() {
    for (text, formatted) in [
        ("", ""),
        ("0", "0"),
        // A run of two is written as two indexes, as Kubernetes writes it.
        ("0,1", "0,1"),
        ("0-1", "0,1"),
        ("1,3-5,7", "1,3-5,7"),
        ("5,4,3", "3-5"),
        ("0-2,3", "0-3"),
    ] {
        assert_eq!(format_indexes(&parse_indexes(text)), formatted, "{text}");
    }
}

#[test]
fn backoff_after_failures() {
    // failures since the last success, seconds since the last one -> wait.
    let cases = [
        (0, 0, 0),
        (1, 0, 10),
        (1, 4, 6),
        (1, 10, 0),
        (2, 0, 20),
        (3, 5, 35),
        (7, 0, 600),
        (40, 0, 600),
    ];
    for (failures, ago, wait) in cases {
        assert_eq!(
            backoff_remaining(failures, NOW - ago, NOW),
            Duration::from_secs(wait),
            "{failures} failures {ago} s ago"
        );
    }

    // One failure 3 s ago: no new pod for 7 s.
    let j = job(|s| s.backoff_limit = Some(1));
    let plan = decide(&j, &[pod("pi-a", "Failed", None, NOW - 3, 1)], now());
    assert!(plan.create.is_empty());
    assert_eq!(plan.requeue, Some(Duration::from_secs(7)));
    assert_eq!(plan.status.failed, Some(1));
    // 10 s later it is replaced.
    let plan = decide(&j, &[pod("pi-a", "Failed", None, NOW - 10, 1)], now());
    assert_eq!(plan.create.len(), 1);
}

#[test]
fn backoff_limit_exceeded() {
    let j = job(|s| s.backoff_limit = Some(1));
    let pods = [
        pod("pi-a", "Failed", None, NOW - 30, 1),
        pod("pi-b", "Failed", None, NOW - 2, 1),
    ];
    let plan = decide(&j, &pods, now());
    assert!(plan.create.is_empty());
    assert_eq!(
        types(&plan),
        vec![
            cond("FailureTarget", "BackoffLimitExceeded"),
            cond("Failed", "BackoffLimitExceeded")
        ]
    );
    let failed = plan.status.conditions.as_ref().unwrap()[1].clone();
    assert_eq!(
        failed.message.as_deref(),
        Some("Job has reached the specified backoff limit")
    );
    assert_eq!(plan.status.failed, Some(2));
    assert_eq!(plan.notes[0].reason, "BackoffLimitExceeded");
    assert!(plan.notes[0].warning);

    // Running pods are deleted first; Failed follows once they are gone.
    let j = job(|s| {
        s.backoff_limit = Some(0);
        s.parallelism = Some(2);
        s.completions = Some(2);
    });
    let plan = decide(
        &j,
        &[
            pod("pi-a", "Failed", None, NOW - 2, 1),
            pod("pi-b", "Running", None, 0, 0),
        ],
        now(),
    );
    assert_eq!(plan.delete, ["pi-b"]);
    assert_eq!(
        types(&plan),
        vec![cond("FailureTarget", "BackoffLimitExceeded")]
    );
    assert_eq!(plan.status.terminating, Some(1));
}

#[test]
fn restarts_count_for_on_failure() {
    let j = job(|s| {
        s.backoff_limit = Some(2);
        s.template.spec.as_mut().unwrap().restart_policy = Some("OnFailure".into());
    });
    let mut running = pod("pi-a", "Running", None, 0, 0);
    running.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
        name: "main".into(),
        restart_count: 2,
        ..ContainerStatus::default()
    }]);
    let plan = decide(&j, &[running], now());
    assert_eq!(
        types(&plan)[0],
        cond("FailureTarget", "BackoffLimitExceeded")
    );
    assert_eq!(plan.delete, ["pi-a"]);
}

#[test]
fn active_deadline() {
    let j = with_status(
        job(|s| s.active_deadline_seconds = Some(30)),
        JobStatus {
            start_time: Some(at(NOW - 10)),
            ..JobStatus::default()
        },
    );
    let plan = decide(&j, &[pod("pi-a", "Running", None, 0, 0)], now());
    assert!(types(&plan).is_empty());
    assert_eq!(plan.requeue, Some(Duration::from_secs(21)));

    let j = with_status(
        job(|s| s.active_deadline_seconds = Some(30)),
        JobStatus {
            start_time: Some(at(NOW - 31)),
            ..JobStatus::default()
        },
    );
    let plan = decide(&j, &[pod("pi-a", "Running", None, 0, 0)], now());
    assert_eq!(plan.delete, ["pi-a"]);
    assert_eq!(
        types(&plan),
        vec![cond("FailureTarget", "DeadlineExceeded")]
    );
    let message = plan.status.conditions.as_ref().unwrap()[0].message.clone();
    assert_eq!(
        message.as_deref(),
        Some("Job was active longer than specified deadline")
    );
}

fn rules(policy: Vec<PodFailurePolicyRule>) -> impl FnOnce(&mut JobSpec) {
    move |s| s.pod_failure_policy = Some(PodFailurePolicy { rules: policy })
}

fn exit_rule(action: &str, operator: &str, values: Vec<i32>) -> PodFailurePolicyRule {
    PodFailurePolicyRule {
        action: action.into(),
        on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
            container_name: None,
            operator: operator.into(),
            values,
        }),
        on_pod_conditions: None,
    }
}

#[test]
fn pod_failure_policy() {
    let disruption = PodFailurePolicyRule {
        action: "Ignore".into(),
        on_exit_codes: None,
        on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
            type_: "DisruptionTarget".into(),
            status: "True".into(),
        }]),
    };
    let policy = vec![
        exit_rule("FailJob", "In", vec![42]),
        disruption,
        exit_rule("Count", "NotIn", vec![42]),
    ];
    let mut disrupted = pod("pi-d", "Failed", None, NOW - 100, 137);
    disrupted.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        ..PodCondition::default()
    }]);
    let cases = [
        (pod("pi-a", "Failed", None, NOW - 100, 42), Verdict::FailJob(
            "Container main for pod jobs/pi-a failed with exit code 42 matching FailJob rule at index 0".into(),
        )),
        (disrupted, Verdict::Ignore),
        (pod("pi-b", "Failed", None, NOW - 100, 1), Verdict::Count),
        (pod("pi-c", "Succeeded", None, NOW - 100, 0), Verdict::Count),
    ];
    for (pod, want) in cases {
        assert_eq!(
            pod_failure_verdict(&policy, &pod),
            want,
            "{:?}",
            pod.metadata.name
        );
    }

    // FailJob fails the Job at once, whatever the backoff limit.
    let j = job(rules(policy.clone()));
    let plan = decide(&j, &[pod("pi-a", "Failed", None, NOW - 100, 42)], now());
    assert_eq!(
        types(&plan),
        vec![
            cond("FailureTarget", "PodFailurePolicy"),
            cond("Failed", "PodFailurePolicy")
        ]
    );

    // Ignored failures do not count towards backoffLimit 0, and the pod is replaced at once.
    let j = job(|s| {
        s.backoff_limit = Some(0);
        s.pod_failure_policy = Some(PodFailurePolicy { rules: policy });
    });
    let mut disrupted = pod("pi-d", "Failed", None, NOW - 1, 137);
    disrupted.status.as_mut().unwrap().conditions = Some(vec![PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        ..PodCondition::default()
    }]);
    let plan = decide(&j, &[disrupted], now());
    assert!(types(&plan).is_empty());
    assert_eq!(plan.status.failed, Some(0));
    assert_eq!(plan.create.len(), 1);
}

#[test]
fn suspend_and_resume() {
    let j = with_status(
        job(|s| s.suspend = Some(true)),
        JobStatus {
            start_time: Some(at(NOW - 100)),
            ..JobStatus::default()
        },
    );
    let plan = decide(&j, &[pod("pi-a", "Running", None, 0, 0)], now());
    assert_eq!(plan.delete, ["pi-a"]);
    assert!(plan.create.is_empty());
    assert_eq!(types(&plan), vec![cond("Suspended", "JobSuspended")]);
    assert_eq!(plan.notes[0].reason, "Suspended");

    // Created suspended: no pods and no startTime.
    let plan = decide(&job(|s| s.suspend = Some(true)), &[], now());
    assert!(plan.create.is_empty());
    assert_eq!(plan.status.start_time, None);

    let resumed = with_status(job(|_| {}), plan.status.clone());
    let plan = decide(&resumed, &[], now());
    assert_eq!(plan.create.len(), 1);
    assert_eq!(
        types(&plan),
        vec![("Suspended".into(), "False".into(), "JobResumed".into())]
    );
    assert_eq!(plan.status.start_time, Some(at(NOW)));
    assert_eq!(plan.notes[0].reason, "Resumed");
}

#[test]
fn failure_target_is_kept_until_pods_are_gone() {
    let j = with_status(
        job(|s| s.backoff_limit = Some(0)),
        JobStatus {
            conditions: Some(vec![JobCondition {
                type_: "FailureTarget".into(),
                status: "True".into(),
                reason: Some("BackoffLimitExceeded".into()),
                message: Some("Job has reached the specified backoff limit".into()),
                ..JobCondition::default()
            }]),
            ..JobStatus::default()
        },
    );
    let mut going = pod("pi-b", "Running", None, 0, 0);
    going.metadata.deletion_timestamp = Some(at(NOW - 1));
    let plan = decide(&j, &[going], now());
    assert_eq!(
        types(&plan),
        vec![cond("FailureTarget", "BackoffLimitExceeded")]
    );
    let plan = decide(&j, &[], now());
    assert_eq!(
        types(&plan),
        vec![
            cond("FailureTarget", "BackoffLimitExceeded"),
            cond("Failed", "BackoffLimitExceeded")
        ]
    );
}

/// A failed pod of `index` whose annotations say `failures` earlier failures of its index.
fn failed_of_index(name: &str, index: i32, failures: i32, finished: i64, exit: i32) -> Pod {
    let mut p = pod(name, "Failed", Some(index), finished, exit);
    p.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(INDEX_FAILURE_COUNT.into(), failures.to_string());
    p
}

fn per_index(limit: i32, max_failed: Option<i32>) -> Job {
    job(|s| {
        s.completions = Some(3);
        s.parallelism = Some(3);
        s.completion_mode = Some("Indexed".into());
        s.backoff_limit = None;
        s.backoff_limit_per_index = Some(limit);
        s.max_failed_indexes = max_failed;
    })
}

fn created(plan: &Plan) -> Vec<(String, String)> {
    plan.create
        .iter()
        .map(|p| {
            let a = p.metadata.annotations.as_ref().unwrap();
            (
                a[COMPLETION_INDEX].clone(),
                a.get(INDEX_FAILURE_COUNT).cloned().unwrap_or_default(),
            )
        })
        .collect()
}

#[test]
fn backoff_limit_per_index() {
    // First pods carry a failure count of 0; failedIndexes is written (empty).
    let plan = decide(&per_index(1, None), &[], now());
    assert_eq!(
        created(&plan),
        [
            ("0".into(), "0".into()),
            ("1".into(), "0".into()),
            ("2".into(), "0".into())
        ]
    );
    assert_eq!(plan.status.failed_indexes.as_deref(), Some(""));

    // Index 0 failed once (limit 1) long ago: it is retried with count 1; the Job does not
    // fail although the Job-wide backoffLimit is unset.
    let running = |i| pod(&format!("pi-{i}-r"), "Running", Some(i), 0, 0);
    let first = failed_of_index("pi-0-a", 0, 0, NOW - 100, 1);
    let plan = decide(
        &per_index(1, None),
        &[first.clone(), running(1), running(2)],
        now(),
    );
    assert_eq!(created(&plan), [("0".into(), "1".into())]);
    assert_eq!(plan.status.failed, Some(1));
    assert_eq!(plan.status.failed_indexes.as_deref(), Some(""));

    // Just failed: index 0 waits its own 10 s back-off.
    let fresh = failed_of_index("pi-0-a", 0, 0, NOW - 3, 1);
    let plan = decide(&per_index(1, None), &[fresh, running(1), running(2)], now());
    assert!(plan.create.is_empty());
    assert_eq!(plan.requeue, Some(Duration::from_secs(7)));

    // Its retry failed too: index 0 is failed and not retried; the others run on.
    let second = failed_of_index("pi-0-b", 0, 1, NOW - 50, 1);
    let plan = decide(
        &per_index(1, None),
        &[first.clone(), second.clone(), running(1), running(2)],
        now(),
    );
    assert!(plan.create.is_empty());
    assert_eq!(plan.status.failed_indexes.as_deref(), Some("0"));
    assert_eq!(plan.status.failed, Some(2));
    assert!(!types(&plan).iter().any(|(t, _, _)| t == "FailureTarget"));

    // ... and once 1 and 2 have succeeded, the Job fails for its failed index.
    let done = |i| pod(&format!("pi-{i}-s"), "Succeeded", Some(i), NOW - 5, 0);
    let plan = decide(
        &per_index(1, None),
        &[first.clone(), second.clone(), done(1), done(2)],
        now(),
    );
    assert_eq!(
        types(&plan),
        [
            cond("FailureTarget", "FailedIndexes"),
            cond("Failed", "FailedIndexes")
        ]
    );
    let failed = plan.status.conditions.as_ref().unwrap();
    assert_eq!(failed[0].message.as_deref(), Some("Job has failed indexes"));
    assert_eq!(plan.status.completed_indexes.as_deref(), Some("1,2"));
    assert_eq!(plan.notes[0].reason, "FailedIndexes");

    // maxFailedIndexes 0: the first failed index fails the Job, its running pods are deleted.
    let plan = decide(
        &per_index(1, Some(0)),
        &[first, second, running(1), running(2)],
        now(),
    );
    assert_eq!(
        types(&plan),
        [cond("FailureTarget", "MaxFailedIndexesExceeded")]
    );
    assert_eq!(
        plan.status.conditions.as_ref().unwrap()[0]
            .message
            .as_deref(),
        Some("Job has exceeded the specified maximal number of failed indexes")
    );
    assert_eq!(plan.delete, ["pi-1-r", "pi-2-r"]);

    // A FailIndex rule fails the index at its first failure; an Ignore rule does not count
    // (the replacement carries the ignored count instead).
    let mut j = per_index(3, None);
    j.spec.as_mut().unwrap().pod_failure_policy = Some(PodFailurePolicy {
        rules: vec![
            exit_rule("FailIndex", "In", vec![42]),
            exit_rule("Ignore", "In", vec![7]),
        ],
    });
    let plan = decide(
        &j,
        &[
            failed_of_index("pi-0-a", 0, 0, NOW - 100, 42),
            failed_of_index("pi-1-a", 1, 0, NOW - 100, 7),
            running(2),
        ],
        now(),
    );
    assert_eq!(plan.status.failed_indexes.as_deref(), Some("0"));
    assert_eq!(created(&plan), [("1".into(), "0".into())]);
    assert_eq!(
        plan.create[0].metadata.annotations.as_ref().unwrap()[INDEX_IGNORED_FAILURE_COUNT],
        "1"
    );
}

#[test]
fn success_policy() {
    let policy = |rules: Vec<(Option<&str>, Option<i32>)>| SuccessPolicy {
        rules: rules
            .into_iter()
            .map(|(indexes, count)| SuccessPolicyRule {
                succeeded_indexes: indexes.map(str::to_owned),
                succeeded_count: count,
            })
            .collect(),
    };
    let set = |text: &str| parse_indexes(text);
    let cases = [
        // (rules, succeeded indexes, message)
        (
            vec![(Some("0-2"), None)],
            "0-2,4-7",
            Some("Matched rules at index 0"),
        ),
        (vec![(Some("3"), None)], "0-2", None),
        (
            vec![(None, Some(3))],
            "0-2",
            Some("Matched rules at index 0"),
        ),
        (vec![(None, Some(4))], "0-2", None),
        (
            vec![(Some("0-4"), Some(2))],
            "1,3",
            Some("Matched rules at index 0"),
        ),
        (vec![(Some("0-4"), Some(3))], "1,3,8", None),
        // Indexes at or past completions (10) are not required.
        (
            vec![(Some("8-12"), None)],
            "8,9",
            Some("Matched rules at index 0"),
        ),
        (
            vec![(Some("5"), None), (None, Some(1))],
            "1",
            Some("Matched rules at index 1"),
        ),
        (vec![(None, Some(1))], "", None),
    ];
    for (rules, succeeded, want) in cases {
        assert_eq!(
            match_success_policy(&policy(rules.clone()), 10, &set(succeeded)).as_deref(),
            want,
            "{rules:?} with {succeeded:?}"
        );
    }

    // The Job: index 0 succeeded meets "succeededIndexes: 0"; the others are deleted, then the
    // Job completes with reason SuccessPolicy.
    let j = job(|s| {
        s.completions = Some(3);
        s.parallelism = Some(3);
        s.completion_mode = Some("Indexed".into());
        s.success_policy = Some(policy(vec![(Some("0"), None)]));
    });
    let pods = [
        pod("pi-0-s", "Succeeded", Some(0), NOW - 5, 0),
        pod("pi-1-r", "Running", Some(1), 0, 0),
        pod("pi-2-r", "Running", Some(2), 0, 0),
    ];
    let plan = decide(&j, &pods, now());
    assert_eq!(plan.delete, ["pi-1-r", "pi-2-r"]);
    assert!(plan.create.is_empty());
    assert_eq!(types(&plan), [cond("SuccessCriteriaMet", "SuccessPolicy")]);
    let met = &plan.status.conditions.as_ref().unwrap()[0];
    assert_eq!(met.message.as_deref(), Some("Matched rules at index 0"));
    // The deleted pods end as failed: not counted, and the Job completes all the same.
    let mut killed = pod("pi-1-r", "Failed", Some(1), NOW - 1, 137);
    killed.metadata.deletion_timestamp = Some(at(NOW - 2));
    let plan = decide(
        &with_status(j.clone(), plan.status),
        &[pods[0].clone(), killed],
        now(),
    );
    assert_eq!(plan.status.failed, Some(0));
    let plan = decide(&with_status(j, plan.status), &pods[..1], now());
    assert_eq!(
        types(&plan),
        [
            cond("SuccessCriteriaMet", "SuccessPolicy"),
            cond("Complete", "SuccessPolicy")
        ]
    );
}

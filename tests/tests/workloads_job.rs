//! End to end, privileged: Jobs and CronJobs as a user drives them with kubectl 1.33 on a
//! one-node cluster (the real control plane, scheduler and node agent with Docker):
//! `kubectl create job` completes and `kubectl wait --for=condition=complete` returns; an
//! Indexed Job's pods see their `JOB_COMPLETION_INDEX` and host name `<job>-<index>`; a
//! failing Job with `backoffLimit: 1` fails with `BackoffLimitExceeded`; a `*/1` CronJob
//! creates a Job within 70 s; deleting a Job (kubectl's default background cascade) takes its
//! pods with it. A Job whose (manual) selector matches a bare pod adopts it rather than
//! starting its own; `backoffLimitPerIndex` fails an index (`FailedIndexes`) and a
//! `successPolicy` completes a Job early (`SuccessPolicy`).

use std::time::{Duration, Instant};

use k8s_openapi::api::{batch::v1::Job, core::v1::Pod};
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    pods::{PodAgent, apply},
};
use kube::{Api, api::ListParams};

const INDEXED: &str = "apiVersion: batch/v1
kind: Job
metadata: {name: indexed, namespace: default}
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: work
        image: keelson/busybox:1
        command: [\"sh\", \"-c\", \"echo index=$JOB_COMPLETION_INDEX host=$(hostname)\"]
---
apiVersion: batch/v1
kind: Job
metadata: {name: failing, namespace: default}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: work
        image: keelson/busybox:1
        command: [\"sh\", \"-c\", \"echo failing; exit 3\"]
---
apiVersion: batch/v1
kind: Job
metadata: {name: per-index, namespace: default}
spec:
  completions: 2
  parallelism: 2
  completionMode: Indexed
  backoffLimitPerIndex: 0
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: work
        image: keelson/busybox:1
        command: [\"sh\", \"-c\", \"exit $JOB_COMPLETION_INDEX\"]
---
apiVersion: batch/v1
kind: Job
metadata: {name: leader-only, namespace: default}
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  successPolicy:
    rules:
    - succeededIndexes: \"0\"
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: work
        image: keelson/busybox:1
        command: [\"sh\", \"-c\", \"[ $JOB_COMPLETION_INDEX = 0 ] || sleep 300\"]
";

/// A bare pod, then a Job whose manual selector matches it: the Job adopts the pod and, the
/// pod having succeeded, completes without a pod of its own (its template would fail).
const ORPHAN: &str = "apiVersion: v1
kind: Pod
metadata: {name: orphan, namespace: default, labels: {app: adopt}}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: work
    image: keelson/busybox:1
    command: [\"true\"]
";
const ADOPTER: &str = "apiVersion: batch/v1
kind: Job
metadata: {name: adopter, namespace: default}
spec:
  manualSelector: true
  selector: {matchLabels: {app: adopt}}
  backoffLimit: 0
  template:
    metadata: {labels: {app: adopt}}
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: work
        image: keelson/busybox:1
        command: [\"sh\", \"-c\", \"exit 1\"]
";

/// The Job's condition of `type_` as `(status, reason, message)`.
fn condition(job: &Job, type_: &str) -> Option<(String, String, String)> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| {
            (
                c.status.clone(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

/// Polls Job `name` until `ok` holds (at most `timeout`); panics with it and the logs.
async fn wait_job(
    jobs: &Api<Job>,
    name: &str,
    timeout: Duration,
    plane: &ControlPlane,
    agent: &PodAgent,
    ok: impl Fn(&Job) -> bool,
) -> Job {
    let deadline = Instant::now() + timeout;
    loop {
        let job = jobs.get_opt(name).await.expect("GET job");
        if let Some(job) = &job
            && ok(job)
        {
            return job.clone();
        }
        assert!(
            Instant::now() < deadline,
            "Job {name} within {timeout:?}: {}\nserver log:\n{}\nagent log:\n{}",
            serde_json::to_string_pretty(&job.map(|j| j.status)).unwrap_or_default(),
            plane.log(),
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_complete_index_fail_and_cronjobs_schedule() {
    // Without node IPAM the agent uses this test's own --pod-cidr (10.250.N.0/24).
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    // The kubelet endpoint (for `kubectl logs`) listens on loopback in tests.
    let agent = PodAgent::start(&plane, &["--node-address", "127.0.0.1"]);
    let kubectl = Kubectl::new(33, &plane);
    let jobs: Api<Job> = Api::namespaced(plane.client().await, "default");

    // kubectl create job: completes, and kubectl wait sees it.
    kubectl.run(&[
        "create",
        "job",
        "hello",
        "--image=keelson/busybox:1",
        "--",
        "sh",
        "-c",
        "echo hello from a job",
    ]);
    // The CronJob starts now so that its first minute passes while the Jobs run.
    let cron_created = Instant::now();
    kubectl.run(&[
        "create",
        "cronjob",
        "tick",
        "--image=keelson/busybox:1",
        "--schedule=*/1 * * * *",
        "--",
        "echo",
        "tick",
    ]);
    kubectl.run(&[
        "wait",
        "--for=condition=complete",
        "job/hello",
        "--timeout=90s",
    ]);
    let hello = jobs.get("hello").await.expect("GET job hello");
    let status = hello.status.clone().expect("a status");
    assert_eq!((status.succeeded, status.active), (Some(1), Some(0)));
    assert!(status.start_time.is_some() && status.completion_time.is_some());
    assert_eq!(
        condition(&hello, "SuccessCriteriaMet").map(|c| c.0),
        Some("True".to_owned())
    );
    let selector = hello
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .and_then(|s| s.match_labels.clone())
        .expect("a generated selector");
    assert_eq!(
        selector.get("batch.kubernetes.io/controller-uid"),
        hello.metadata.uid.as_ref()
    );
    let logs = kubectl.run(&["logs", "job/hello"]);
    assert_eq!(logs.trim(), "hello from a job");

    // Deleting the Job: the garbage collector removes its pods (their owner is gone).
    kubectl.run(&["delete", "job", "hello"]);
    let pods: Api<Pod> = Api::namespaced(plane.client().await, "default");
    let of_hello = ListParams::default().labels("batch.kubernetes.io/job-name=hello");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = pods
            .list(&of_hello)
            .await
            .expect("list the Job's pods")
            .items;
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} pod(s) of the deleted Job hello still exist after 60 s",
            left.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // An Indexed Job and a failing one.
    apply(&kubectl, plane.data_dir(), "jobs.yaml", INDEXED);
    kubectl.run(&[
        "wait",
        "--for=condition=complete",
        "job/indexed",
        "--timeout=90s",
    ]);
    let indexed = jobs.get("indexed").await.expect("GET job indexed");
    assert_eq!(
        indexed
            .status
            .as_ref()
            .and_then(|s| s.completed_indexes.as_deref()),
        Some("0-2")
    );
    let mut lines: Vec<String> = kubectl
        .run(&[
            "logs",
            "-l",
            "batch.kubernetes.io/job-name=indexed",
            "--prefix=false",
        ])
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "index=0 host=indexed-0",
            "index=1 host=indexed-1",
            "index=2 host=indexed-2"
        ]
    );
    let labelled = kubectl.run(&[
        "get",
        "pods",
        "-l",
        "batch.kubernetes.io/job-completion-index=1,job-name=indexed",
        "-o",
        "name",
    ]);
    assert_eq!(labelled.lines().count(), 1, "{labelled}");

    // backoffLimit 1: two failed pods (the second after a 10 s back-off), then Failed.
    let failing = wait_job(
        &jobs,
        "failing",
        Duration::from_secs(90),
        &plane,
        &agent,
        |j| condition(j, "Failed").is_some(),
    )
    .await;
    assert_eq!(
        condition(&failing, "Failed"),
        Some((
            "True".to_owned(),
            "BackoffLimitExceeded".to_owned(),
            "Job has reached the specified backoff limit".to_owned()
        ))
    );
    assert_eq!(
        condition(&failing, "FailureTarget").map(|c| c.1),
        Some("BackoffLimitExceeded".to_owned())
    );
    assert_eq!(failing.status.as_ref().and_then(|s| s.failed), Some(2));
    kubectl.run(&[
        "wait",
        "--for=condition=failed",
        "job/failing",
        "--timeout=5s",
    ]);

    // backoffLimitPerIndex 0: index 1 exits 1 and is not retried; index 0 succeeds.
    let per_index = wait_job(
        &jobs,
        "per-index",
        Duration::from_secs(90),
        &plane,
        &agent,
        |j| condition(j, "Failed").is_some(),
    )
    .await;
    assert_eq!(
        condition(&per_index, "Failed"),
        Some((
            "True".to_owned(),
            "FailedIndexes".to_owned(),
            "Job has failed indexes".to_owned()
        ))
    );
    let status = per_index.status.clone().expect("a status");
    assert_eq!(
        (
            status.failed_indexes.as_deref(),
            status.completed_indexes.as_deref(),
            status.failed
        ),
        (Some("1"), Some("0"), Some(1))
    );

    // successPolicy "index 0": once it succeeds the sleeping indexes are deleted and the Job
    // completes with reason SuccessPolicy.
    let early = wait_job(
        &jobs,
        "leader-only",
        Duration::from_secs(90),
        &plane,
        &agent,
        |j| condition(j, "Complete").is_some(),
    )
    .await;
    assert_eq!(
        condition(&early, "Complete"),
        Some((
            "True".to_owned(),
            "SuccessPolicy".to_owned(),
            "Matched rules at index 0".to_owned()
        ))
    );
    assert_eq!(
        early
            .status
            .as_ref()
            .and_then(|s| s.completed_indexes.as_deref()),
        Some("0")
    );

    // Adoption: the bare pod gets the Job as its controller and is the Job's only pod.
    apply(&kubectl, plane.data_dir(), "orphan.yaml", ORPHAN);
    apply(&kubectl, plane.data_dir(), "adopter.yaml", ADOPTER);
    let adopter = wait_job(
        &jobs,
        "adopter",
        Duration::from_secs(90),
        &plane,
        &agent,
        |j| condition(j, "Complete").is_some() || condition(j, "Failed").is_some(),
    )
    .await;
    assert_eq!(
        condition(&adopter, "Complete").map(|c| c.0),
        Some("True".to_owned()),
        "{:?}",
        adopter.status
    );
    let orphan = pods.get("orphan").await.expect("GET pod orphan");
    let owner = orphan
        .metadata
        .owner_references
        .as_ref()
        .and_then(|refs| refs.first())
        .expect("an owner reference after adoption");
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.name.as_str(),
            Some(owner.uid.as_str()),
            owner.controller,
            owner.block_owner_deletion
        ),
        (
            "Job",
            "adopter",
            adopter.metadata.uid.as_deref(),
            Some(true),
            Some(true)
        )
    );
    let adopted = pods
        .list(&ListParams::default().labels("app=adopt"))
        .await
        .expect("list app=adopt pods")
        .items;
    assert_eq!(adopted.len(), 1, "the Job started a pod of its own");

    // The CronJob has made a Job within 70 s of its creation, named for its minute.
    let deadline = cron_created + Duration::from_secs(70);
    let made = loop {
        let names = kubectl.run(&["get", "jobs", "-o", "name"]);
        if let Some(name) = names
            .lines()
            .find(|n| n.starts_with("job.batch/tick-"))
            .map(str::to_owned)
        {
            break name;
        }
        assert!(
            Instant::now() < deadline,
            "no Job of CronJob tick within 70 s: {names}\nserver log:\n{}",
            plane.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let minutes: i64 = made
        .trim_start_matches("job.batch/tick-")
        .parse()
        .expect("minutes since the epoch");
    let now = jiff::Timestamp::now().as_second() / 60;
    assert!((now - 2..=now).contains(&minutes), "{made} at minute {now}");
    let cronjob = kubectl.run(&[
        "get",
        "cronjob",
        "tick",
        "-o",
        "jsonpath={.status.lastScheduleTime}",
    ]);
    assert!(cronjob.ends_with(":00Z"), "lastScheduleTime {cronjob}");
}

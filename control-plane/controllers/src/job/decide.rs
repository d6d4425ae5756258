//! What one sync of a Job does, decided from the Job, its pods and the time: the pods to create
//! and delete, the status to write and when to look again. No IO.
//!
//! Kubernetes facts (pkg/controller/job, v1.33): a failed pod is retried after 10 s, doubled for
//! every further failure since the last success, at most 10 min; more failures than
//! `backoffLimit` fail the Job (`BackoffLimitExceeded`), so does `activeDeadlineSeconds`
//! (`DeadlineExceeded`) and a `FailJob` rule of `podFailurePolicy` (`PodFailurePolicy`); the
//! interim `FailureTarget` / `SuccessCriteriaMet` conditions come first and the terminal
//! `Failed` / `Complete` once no pod of the Job is still terminating.
//!
//! Indexed Jobs may also set `backoffLimitPerIndex`: each index backs off and counts its own
//! failures (the `job-index-failure-count` annotation of its next pod), an index past the limit
//! (or hit by a `FailIndex` rule) is listed in `status.failedIndexes` and not retried, more
//! than `maxFailedIndexes` of them fail the Job (`MaxFailedIndexesExceeded`), and so does any
//! once every index has succeeded or failed (`FailedIndexes`). A `successPolicy` rule that the
//! succeeded indexes meet ends the Job early (`SuccessCriteriaMet`, then `Complete`, reason
//! `SuccessPolicy`, the remaining pods deleted).
//!
//! Unlike Kubernetes, finished pods are counted from the pods that exist rather than through
//! the `batch.kubernetes.io/job-tracking` finalizer: counts never go down, but a finished pod
//! deleted before it was seen is not counted.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use jiff::Timestamp;
use k8s_openapi::{
    api::{
        batch::v1::{Job, JobCondition, JobSpec, JobStatus, PodFailurePolicyRule, SuccessPolicy},
        core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodSpec},
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};

use crate::pods;

/// The annotation and label with a pod's completion index (Indexed Jobs).
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
/// The annotation with how many failed pods of its index counted before a pod (Indexed Jobs
/// with `backoffLimitPerIndex`).
pub const INDEX_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-failure-count";
/// The annotation with how many failed pods of its index the pod failure policy ignored before
/// a pod (written only when there were some).
pub const INDEX_IGNORED_FAILURE_COUNT: &str = "batch.kubernetes.io/job-index-ignored-failure-count";
/// The environment variable with the completion index.
pub const COMPLETION_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";
/// The first pod-failure back-off.
pub const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// The longest pod-failure back-off.
pub const BACKOFF_MAX: Duration = Duration::from_secs(600);
/// Pods created or deleted per sync at most.
pub const BURST: usize = 500;

/// An Event to record on the Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// `Warning` rather than `Normal`.
    pub warning: bool,
    /// The reason, e.g. `BackoffLimitExceeded`.
    pub reason: &'static str,
    /// The message.
    pub message: String,
}

/// The outcome of one sync.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Pods to create (named by `generateName`).
    pub create: Vec<Pod>,
    /// Names of pods to delete.
    pub delete: Vec<String>,
    /// The Job's status after this sync.
    pub status: JobStatus,
    /// Events to record.
    pub notes: Vec<Note>,
    /// When to sync again without a change (back-off, deadline).
    pub requeue: Option<Duration>,
}

/// Whether the Job has a `Complete` or `Failed` condition that is `True`.
pub fn is_finished(job: &Job) -> bool {
    finished_condition(job).is_some()
}

/// The Job's terminal condition (`Complete` or `Failed`, `True`).
pub fn finished_condition(job: &Job) -> Option<&JobCondition> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

/// A pod's completion index from its annotation.
pub fn completion_index(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(COMPLETION_INDEX)?
        .parse()
        .ok()
        .filter(|i: &i32| *i >= 0)
}

/// Parses `completedIndexes` (`1,3-5,7`).
pub fn parse_indexes(text: &str) -> BTreeSet<i32> {
    let mut set = BTreeSet::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (low, high) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(low), Ok(high)) = (low.parse::<i32>(), high.parse::<i32>()) {
            // Bounded by the completions the API allows (at most 100 000 for Indexed Jobs).
            set.extend((low.max(0)..=high).take(100_000));
        }
    }
    set
}

/// Formats indexes as Kubernetes does: ascending, runs of 3 or more as `a-b` (a run of two is
/// written `a,b`).
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if end == start {
            start.to_string()
        } else if end == start + 1 {
            format!("{start},{end}")
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// When a finished pod finished: its latest container termination, else its latest
/// condition transition, else its creation.
fn finished_at(pod: &Pod) -> i64 {
    let status = pod.status.as_ref();
    let terminated = status
        .into_iter()
        .flat_map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
        })
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref())
        .map(|t| t.0.as_second())
        .max();
    terminated
        .or_else(|| {
            status?
                .conditions
                .iter()
                .flatten()
                .filter_map(|c| c.last_transition_time.as_ref())
                .map(|t| t.0.as_second())
                .max()
        })
        .unwrap_or_else(|| pods::seconds(pod.metadata.creation_timestamp.as_ref()))
}

/// What `podFailurePolicy` says about a failed pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No rule matched, or a `Count` rule: counts towards `backoffLimit`.
    Count,
    /// A `FailIndex` rule: the pod's index fails at once (with `backoffLimitPerIndex`; it
    /// counts as a failure too).
    FailIndex,
    /// An `Ignore` rule: not counted.
    Ignore,
    /// A `FailJob` rule: the Job fails with this message.
    FailJob(String),
}

/// Matches a failed pod against the rules, first match wins (`matchPodFailurePolicy`).
pub fn pod_failure_verdict(rules: &[PodFailurePolicyRule], pod: &Pod) -> Verdict {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    for (index, rule) in rules.iter().enumerate() {
        let mut matched = None;
        if let Some(req) = &rule.on_exit_codes {
            let containers = status
                .init_container_statuses
                .iter()
                .flatten()
                .chain(status.container_statuses.iter().flatten());
            for c in containers {
                let Some(code) = c
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .map(|t| t.exit_code)
                else {
                    continue;
                };
                // Exit code 0 never matches (a container that succeeded did not fail).
                if code == 0
                    || req
                        .container_name
                        .as_ref()
                        .is_some_and(|want| *want != c.name)
                {
                    continue;
                }
                let listed = req.values.contains(&code);
                let hit = match req.operator.as_str() {
                    "In" => listed,
                    "NotIn" => !listed,
                    _ => false,
                };
                if hit {
                    matched = Some(format!(
                        "Container {} for pod {namespace}/{name} failed with exit code {code} \
                         matching {} rule at index {index}",
                        c.name, rule.action
                    ));
                    break;
                }
            }
        }
        for pattern in rule.on_pod_conditions.iter().flatten() {
            if matched.is_some() {
                break;
            }
            let want = if pattern.status.is_empty() {
                "True"
            } else {
                pattern.status.as_str()
            };
            if status
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == pattern.type_ && c.status == want)
            {
                matched = Some(format!(
                    "Pod {namespace}/{name} has condition {} matching {} rule at index {index}",
                    pattern.type_, rule.action
                ));
            }
        }
        if let Some(message) = matched {
            return match rule.action.as_str() {
                "FailJob" => Verdict::FailJob(message),
                "FailIndex" => Verdict::FailIndex,
                "Ignore" => Verdict::Ignore,
                _ => Verdict::Count,
            };
        }
    }
    Verdict::Count
}

/// The pod-failure back-off still to wait: 10 s after the first failure since the last
/// success, doubled per further failure, at most 10 min (`getRemainingTimeForFailuresCount`).
pub fn backoff_remaining(failures: u32, last_failure: i64, now: i64) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let mut delay = BACKOFF_BASE;
    for _ in 1..failures.min(32) {
        delay = (delay * 2).min(BACKOFF_MAX);
    }
    let elapsed = Duration::from_secs(u64::try_from(now - last_failure).unwrap_or(0));
    delay.saturating_sub(elapsed)
}

/// A pod's `job-index-failure-count` and `job-index-ignored-failure-count` annotations (0 when
/// absent, unparseable or negative, as Kubernetes reads them).
pub fn index_failures(pod: &Pod) -> (i32, i32) {
    let read = |key: &str| {
        pod.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .and_then(|v| v.parse::<i32>().ok())
            .filter(|v| *v >= 0)
            .unwrap_or(0)
    };
    (read(INDEX_FAILURE_COUNT), read(INDEX_IGNORED_FAILURE_COUNT))
}

/// The first rule of an Indexed Job's `successPolicy` that the `succeeded` indexes meet, as the
/// condition message (`Matched rules at index 0`): a rule with `succeededIndexes` needs all of
/// them (those below `completions`) to have succeeded, or `succeededCount` of them when that is
/// set too; a rule with only `succeededCount` needs that many succeeded indexes.
pub fn match_success_policy(
    policy: &SuccessPolicy,
    completions: i32,
    succeeded: &BTreeSet<i32>,
) -> Option<String> {
    if succeeded.is_empty() {
        return None;
    }
    let wanted = |n: i32| usize::try_from(n).unwrap_or(0);
    policy.rules.iter().enumerate().find_map(|(index, rule)| {
        let met = match (&rule.succeeded_indexes, rule.succeeded_count) {
            (Some(text), count) => {
                let required: BTreeSet<i32> = parse_indexes(text)
                    .into_iter()
                    .filter(|i| *i < completions)
                    .collect();
                let hit = required.intersection(succeeded).count();
                !required.is_empty() && count.map_or(hit == required.len(), |n| hit >= wanted(n))
            }
            (None, Some(n)) => succeeded.len() >= wanted(n),
            (None, None) => false,
        };
        met.then(|| format!("Matched rules at index {index}"))
    })
}

fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> JobCondition {
    JobCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets a condition unless one of that type already has that status; returns whether it changed.
fn ensure(conditions: &mut Vec<JobCondition>, new: JobCondition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(c) if c.status == new.status => false,
        Some(c) => {
            *c = new;
            true
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// The pod for a new run of the Job: the template's labels, annotations and spec, a controller
/// reference, and for Indexed Jobs the index as annotation, label, `JOB_COMPLETION_INDEX`
/// (through the downward API, as Kubernetes injects it) and host name `<job>-<index>`.
pub fn new_pod(job: &Job, index: Option<i32>) -> Pod {
    let name = job.metadata.name.clone().unwrap_or_default();
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let template_meta = template.metadata.unwrap_or_default();
    let mut labels = template_meta.labels.unwrap_or_default();
    let mut annotations = template_meta.annotations.unwrap_or_default();
    let mut spec: PodSpec = template.spec.unwrap_or_default();
    let generate_name = match index {
        Some(i) => {
            annotations.insert(COMPLETION_INDEX.into(), i.to_string());
            labels.insert(COMPLETION_INDEX.into(), i.to_string());
            let env = EnvVar {
                name: COMPLETION_INDEX_ENV.into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        api_version: None,
                        field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                    }),
                    ..EnvVarSource::default()
                }),
            };
            for c in spec
                .init_containers
                .iter_mut()
                .flatten()
                .chain(spec.containers.iter_mut())
            {
                let vars = c.env.get_or_insert_with(Vec::new);
                if !vars.iter().any(|v| v.name == COMPLETION_INDEX_ENV) {
                    vars.push(env.clone());
                }
            }
            if spec.hostname.as_deref().is_none_or(str::is_empty) {
                spec.hostname = Some(format!("{name}-{i}"));
            }
            format!("{name}-{i}-")
        }
        None => format!("{name}-"),
    };
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: Some(vec![pods::owner_reference(
                "batch/v1",
                "Job",
                &job.metadata,
            )]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Decides one sync of `job` with its (controlled) `pods` at `now`.
pub fn decide(job: &Job, pods: &[Pod], now: Timestamp) -> Plan {
    let spec: JobSpec = job.spec.clone().unwrap_or_default();
    let old = job.status.clone().unwrap_or_default();
    let mut plan = Plan {
        status: old.clone(),
        ..Plan::default()
    };
    if is_finished(job) || job.metadata.deletion_timestamp.is_some() {
        return plan;
    }
    let now_s = now.as_second();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let completions = spec.completions;
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    // `backoffLimitPerIndex` (Indexed Jobs): failures count per index, a failed index is not
    // retried, and the Job-wide limit defaults to "none".
    let per_index = spec.backoff_limit_per_index.filter(|_| indexed);
    let backoff_limit = spec
        .backoff_limit
        .unwrap_or(if per_index.is_some() { i32::MAX } else { 6 })
        .max(0);
    let limit = completions.unwrap_or(0);
    let suspended = spec.suspend == Some(true);
    let rules = spec
        .pod_failure_policy
        .as_ref()
        .map(|p| p.rules.clone())
        .unwrap_or_default();

    let terminating: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_some()
                && !matches!(pods::phase(p), "Succeeded" | "Failed")
        })
        .collect();
    let mut active: Vec<&Pod> = pods.iter().filter(|p| pods::is_active(p)).collect();
    let succeeded_pods: Vec<&Pod> = pods
        .iter()
        .filter(|p| pods::phase(p) == "Succeeded")
        .collect();
    let failed_pods: Vec<&Pod> = pods.iter().filter(|p| pods::phase(p) == "Failed").collect();

    // Failures, through the pod failure policy.
    let mut fail_job = None;
    let mut counted_failures: Vec<&Pod> = Vec::new();
    let mut failed_indexes: BTreeSet<i32> =
        parse_indexes(old.failed_indexes.as_deref().unwrap_or_default())
            .into_iter()
            .filter(|i| *i < limit)
            .collect();
    // Per index, its latest failed pod (most failures, then latest) and whether that one
    // counted: what the replacement's failure-count annotations and back-off come from.
    let mut last_failed: BTreeMap<i32, ((i32, i64), &Pod, bool)> = BTreeMap::new();
    for pod in &failed_pods {
        let verdict = pod_failure_verdict(&rules, pod);
        let counted = verdict != Verdict::Ignore;
        let fail_index = verdict == Verdict::FailIndex;
        match verdict {
            Verdict::Count | Verdict::FailIndex => counted_failures.push(pod),
            Verdict::Ignore => {}
            Verdict::FailJob(message) => {
                counted_failures.push(pod);
                fail_job.get_or_insert(message);
            }
        }
        if let Some(per_index) = per_index
            && let Some(index) = completion_index(pod).filter(|i| *i < limit)
        {
            let (failures, ignored) = index_failures(pod);
            if fail_index || (counted && failures >= per_index) {
                failed_indexes.insert(index);
            }
            let key = (failures.saturating_add(ignored), finished_at(pod));
            if last_failed.get(&index).is_none_or(|(k, _, _)| *k <= key) {
                last_failed.insert(index, (key, pod, counted));
            }
        }
    }
    // Once the Job has succeeded (`SuccessCriteriaMet`), the pods it deletes are no failures
    // and nothing can fail it any more.
    let succeeded_before = old
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "SuccessCriteriaMet" && c.status == "True");
    let failed = if succeeded_before {
        old.failed.unwrap_or(0)
    } else {
        i32::try_from(counted_failures.len())
            .unwrap_or(i32::MAX)
            .max(old.failed.unwrap_or(0))
    };

    // Successes.
    let mut completed = parse_indexes(old.completed_indexes.as_deref().unwrap_or_default());
    let succeeded = if indexed {
        completed.extend(
            succeeded_pods
                .iter()
                .filter_map(|p| completion_index(p))
                .filter(|i| *i < limit),
        );
        i32::try_from(completed.len()).unwrap_or(i32::MAX)
    } else {
        i32::try_from(succeeded_pods.len())
            .unwrap_or(i32::MAX)
            .max(old.succeeded.unwrap_or(0))
    };

    let mut status = JobStatus {
        succeeded: Some(succeeded),
        failed: Some(failed),
        completed_indexes: indexed.then(|| format_indexes(&completed)),
        failed_indexes: per_index.map(|_| format_indexes(&failed_indexes)),
        ..old.clone()
    };
    let mut conditions = old.conditions.clone().unwrap_or_default();
    if status.start_time.is_none() && !suspended {
        status.start_time = Some(Time(now));
    }

    // Failure conditions.
    let restarts: i32 = active
        .iter()
        .flat_map(|p| {
            let s = p.status.as_ref();
            s.into_iter().flat_map(|s| {
                s.container_statuses
                    .iter()
                    .flatten()
                    .chain(s.init_container_statuses.iter().flatten())
            })
        })
        .map(|c| c.restart_count)
        .sum();
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    let past_restarts = on_failure
        && if backoff_limit == 0 {
            restarts > 0
        } else {
            restarts >= backoff_limit
        };
    let started = status.start_time.as_ref().map(|t| t.0.as_second());
    let deadline = spec
        .active_deadline_seconds
        .filter(|_| !suspended)
        .zip(started)
        .map(|(ads, start)| start + ads);
    let already_failing = conditions
        .iter()
        .find(|c| c.type_ == "FailureTarget" && c.status == "True")
        .cloned();
    let failure = already_failing
        .map(|c| (c.reason.unwrap_or_default(), c.message.unwrap_or_default()))
        .or_else(|| fail_job.map(|m| ("PodFailurePolicy".to_owned(), m)))
        .or_else(|| {
            (failed > backoff_limit || past_restarts).then(|| {
                (
                    "BackoffLimitExceeded".to_owned(),
                    "Job has reached the specified backoff limit".to_owned(),
                )
            })
        })
        .or_else(|| {
            deadline.filter(|d| *d <= now_s).map(|_| {
                (
                    "DeadlineExceeded".to_owned(),
                    "Job was active longer than specified deadline".to_owned(),
                )
            })
        })
        .or_else(|| {
            per_index?;
            let failed = failed_indexes.len();
            let most = spec
                .max_failed_indexes
                .map(|m| usize::try_from(m).unwrap_or(0));
            if most.is_some_and(|m| failed > m) {
                Some((
                    "MaxFailedIndexesExceeded".to_owned(),
                    "Job has exceeded the specified maximal number of failed indexes".to_owned(),
                ))
            } else if failed > 0 && failed + completed.len() >= usize::try_from(limit).unwrap_or(0)
            {
                Some((
                    "FailedIndexes".to_owned(),
                    "Job has failed indexes".to_owned(),
                ))
            } else {
                None
            }
        })
        .filter(|_| !succeeded_before);

    if let Some((reason, message)) = failure {
        if ensure(
            &mut conditions,
            condition("FailureTarget", "True", &reason, &message, now),
        ) {
            plan.notes.push(Note {
                warning: true,
                reason: match reason.as_str() {
                    "PodFailurePolicy" => "PodFailurePolicy",
                    "DeadlineExceeded" => "DeadlineExceeded",
                    "MaxFailedIndexesExceeded" => "MaxFailedIndexesExceeded",
                    "FailedIndexes" => "FailedIndexes",
                    _ => "BackoffLimitExceeded",
                },
                message: message.clone(),
            });
        }
        plan.delete = active
            .iter()
            .take(BURST)
            .map(|p| p.name_any_owned())
            .collect();
        if active.is_empty() && terminating.is_empty() {
            ensure(
                &mut conditions,
                condition("Failed", "True", &reason, &message, now),
            );
        }
        status.active = Some(0);
        status.ready = Some(0);
        status.terminating =
            Some(i32::try_from(terminating.len() + plan.delete.len()).unwrap_or(i32::MAX));
        status.conditions = Some(conditions);
        plan.status = status;
        return plan;
    }
    if let Some(d) = deadline {
        plan.requeue = Some(Duration::from_secs(
            u64::try_from(d - now_s).unwrap_or(0) + 1,
        ));
    }

    // Complete?
    let done = match completions {
        None => succeeded > 0,
        Some(c) => succeeded >= c,
    };
    let already_met = conditions
        .iter()
        .find(|c| c.type_ == "SuccessCriteriaMet" && c.status == "True")
        .map(|c| {
            (
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        });
    let policy_met = spec
        .success_policy
        .as_ref()
        .filter(|_| indexed)
        .and_then(|p| match_success_policy(p, limit, &completed));
    let success = already_met
        .clone()
        .or_else(|| policy_met.clone().map(|m| ("SuccessPolicy".to_owned(), m)))
        .or_else(|| {
            done.then(|| {
                (
                    "CompletionsReached".to_owned(),
                    "Reached expected number of succeeded pods".to_owned(),
                )
            })
        });
    if let Some((reason, message)) = success {
        // No new pods; the remaining ones are not needed (none remain in the usual case).
        if completions.is_some() || already_met.is_some() || policy_met.is_some() {
            plan.delete = active
                .iter()
                .take(BURST)
                .map(|p| p.name_any_owned())
                .collect();
            active.clear();
        }
        if active.is_empty() {
            ensure(
                &mut conditions,
                condition("SuccessCriteriaMet", "True", &reason, &message, now),
            );
            if terminating.is_empty() && plan.delete.is_empty() {
                ensure(
                    &mut conditions,
                    condition("Complete", "True", &reason, &message, now),
                );
                status.completion_time = Some(Time(now));
                plan.notes.push(Note {
                    warning: false,
                    reason: "Completed",
                    message: "Job completed".into(),
                });
            }
        }
        status.active = Some(i32::try_from(active.len()).unwrap_or(i32::MAX));
        status.ready = Some(count_ready(&active));
        status.terminating =
            Some(i32::try_from(terminating.len() + plan.delete.len()).unwrap_or(i32::MAX));
        status.conditions = Some(conditions);
        plan.status = status;
        return plan;
    }

    // Suspend / resume.
    if suspended {
        if ensure(
            &mut conditions,
            condition("Suspended", "True", "JobSuspended", "Job suspended", now),
        ) {
            plan.notes.push(Note {
                warning: false,
                reason: "Suspended",
                message: "Job suspended".into(),
            });
        }
        plan.delete = active
            .iter()
            .take(BURST)
            .map(|p| p.name_any_owned())
            .collect();
        status.active = Some(0);
        status.ready = Some(0);
        status.terminating =
            Some(i32::try_from(terminating.len() + plan.delete.len()).unwrap_or(i32::MAX));
        status.conditions = (!conditions.is_empty()).then_some(conditions);
        plan.requeue = None;
        plan.status = status;
        return plan;
    }
    if conditions
        .iter()
        .any(|c| c.type_ == "Suspended" && c.status == "True")
    {
        ensure(
            &mut conditions,
            condition("Suspended", "False", "JobResumed", "Job resumed", now),
        );
        plan.notes.push(Note {
            warning: false,
            reason: "Resumed",
            message: "Job resumed".into(),
        });
        // The deadline counts from the resume.
        status.start_time = Some(Time(now));
    }

    // How many should run.
    let want = match completions {
        None if succeeded > 0 => i32::try_from(active.len()).unwrap_or(i32::MAX),
        None => parallelism,
        Some(c) => (c - succeeded).clamp(0, parallelism),
    };
    let want = usize::try_from(want).unwrap_or(0);
    if indexed {
        // Pods of indexes already done, out of range, or duplicated go first.
        let mut seen = BTreeSet::new();
        let mut keep = Vec::new();
        for pod in active.drain(..) {
            match completion_index(pod) {
                Some(i)
                    if i < limit
                        && !completed.contains(&i)
                        && !failed_indexes.contains(&i)
                        && seen.insert(i) =>
                {
                    keep.push(pod)
                }
                _ => plan.delete.push(pod.name_any_owned()),
            }
        }
        active = keep;
    }
    if active.len() > want {
        active.sort_by_key(|p| crate::replicaset::deletion_rank(p));
        let excess = active.len() - want;
        plan.delete.extend(
            active
                .drain(..excess)
                .take(BURST)
                .map(|p| p.name_any_owned()),
        );
    } else if active.len() < want && per_index.is_some() {
        // Each index backs off after its own failures, and its next pod carries the count.
        let running: BTreeSet<i32> = active.iter().filter_map(|p| completion_index(p)).collect();
        let count = (want - active.len()).min(BURST);
        let mut waiting: Option<Duration> = None;
        let free = (0..limit).filter(|i| {
            !completed.contains(i) && !failed_indexes.contains(i) && !running.contains(i)
        });
        for index in free {
            if plan.create.len() == count {
                break;
            }
            let (counts, remaining) = match last_failed.get(&index) {
                Some(&(_, pod, counted)) => {
                    let (failures, ignored) = index_failures(pod);
                    let next = if counted {
                        (failures.saturating_add(1), ignored)
                    } else {
                        (failures, ignored.saturating_add(1))
                    };
                    let total = u32::try_from(failures.saturating_add(ignored)).unwrap_or(0);
                    (
                        next,
                        backoff_remaining(total.saturating_add(1), finished_at(pod), now_s),
                    )
                }
                None => ((0, 0), Duration::ZERO),
            };
            if !remaining.is_zero() {
                waiting = Some(waiting.map_or(remaining, |w| w.min(remaining)));
                continue;
            }
            let mut pod = new_pod(job, Some(index));
            let annotations = pod.metadata.annotations.get_or_insert_with(BTreeMap::new);
            annotations.insert(INDEX_FAILURE_COUNT.into(), counts.0.to_string());
            if counts.1 > 0 {
                annotations.insert(INDEX_IGNORED_FAILURE_COUNT.into(), counts.1.to_string());
            }
            plan.create.push(pod);
        }
        if let Some(wait) = waiting {
            plan.requeue = Some(plan.requeue.map_or(wait, |r| r.min(wait)));
        }
    } else if active.len() < want {
        // Back-off after failures since the last success.
        let last_success = succeeded_pods.iter().map(|p| finished_at(p)).max();
        let recent: Vec<i64> = counted_failures
            .iter()
            .map(|p| finished_at(p))
            .filter(|t| last_success.is_none_or(|s| *t > s))
            .collect();
        let last_failure = recent.iter().copied().max().unwrap_or(0);
        let remaining = backoff_remaining(
            u32::try_from(recent.len()).unwrap_or(u32::MAX),
            last_failure,
            now_s,
        );
        if remaining.is_zero() {
            let count = (want - active.len()).min(BURST);
            if indexed {
                let running: BTreeSet<i32> =
                    active.iter().filter_map(|p| completion_index(p)).collect();
                let free = (0..completions.unwrap_or(0))
                    .filter(|i| !completed.contains(i) && !running.contains(i))
                    .take(count);
                plan.create.extend(free.map(|i| new_pod(job, Some(i))));
            } else {
                plan.create
                    .extend(std::iter::repeat_with(|| new_pod(job, None)).take(count));
            }
        } else {
            plan.requeue = Some(plan.requeue.map_or(remaining, |r| r.min(remaining)));
        }
    }
    status.active = Some(i32::try_from(active.len() + plan.create.len()).unwrap_or(i32::MAX));
    status.ready = Some(count_ready(&active));
    status.terminating =
        Some(i32::try_from(terminating.len() + plan.delete.len()).unwrap_or(i32::MAX));
    status.conditions = (!conditions.is_empty()).then_some(conditions);
    plan.status = status;
    plan
}

fn count_ready(pods: &[&Pod]) -> i32 {
    i32::try_from(pods.iter().filter(|p| pods::is_ready(p)).count()).unwrap_or(i32::MAX)
}

/// A pod's name as an owned string.
trait NameOwned {
    fn name_any_owned(&self) -> String;
}

impl NameOwned for &Pod {
    fn name_any_owned(&self) -> String {
        self.metadata.name.clone().unwrap_or_default()
    }
}

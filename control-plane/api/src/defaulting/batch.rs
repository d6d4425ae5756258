//! batch/v1. Source: pkg/apis/batch/v1/defaults.go; pod templates also get the pod spec defaults
//! of core/v1 (pkg/apis/batch/v1/zz_generated.defaults.go).

use serde_json::json;

use super::fields::{
    Object, ensure_object, fill, fill_zero, object_mut, objects_mut, path_mut, unset,
};
use super::{core, pod};

/// Applies the defaults of batch/v1 kind `kind`.
pub(super) fn apply(kind: &str, root: &mut Object) {
    match kind {
        "Job" => job(root),
        "CronJob" => cron_job(root),
        _ => {}
    }
}

/// `SetDefaults_Job`:
/// - with neither `completions` nor `parallelism`, both are 1; `parallelism` alone is 1;
/// - `backoffLimit` is 6, or 2147483647 when `backoffLimitPerIndex` is set;
/// - the Job's labels default to the template's when it has none;
/// - `completionMode` `NonIndexed`, `suspend` false, `manualSelector` false;
/// - `podReplacementPolicy` (`JobPodReplacementPolicy`, on in v1.33) is `Failed` with a
///   `podFailurePolicy`, `TerminatingOrFailed` without.
fn job(root: &mut Object) {
    if let Some(labels) = template_labels(root) {
        core::default_labels(root, labels);
    }
    let Some(spec) = ensure_object(root, "spec") else {
        return;
    };
    if unset(spec, "completions") && unset(spec, "parallelism") {
        spec.insert("completions".into(), json!(1));
    }
    fill(spec, "parallelism", json!(1));
    if unset(spec, "backoffLimitPerIndex") {
        fill(spec, "backoffLimit", json!(6));
    } else {
        fill(spec, "backoffLimit", json!(i32::MAX));
    }
    fill(spec, "completionMode", json!("NonIndexed"));
    fill(spec, "suspend", json!(false));
    let replacement = if unset(spec, "podFailurePolicy") {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    fill(spec, "podReplacementPolicy", json!(replacement));
    fill(spec, "manualSelector", json!(false));
    job_spec(spec);
}

/// The labels of a Job's pod template, when it has some.
fn template_labels(root: &Object) -> Option<serde_json::Value> {
    root.get("spec")
        .and_then(|spec| spec.get("template"))
        .and_then(|template| template.get("metadata"))
        .and_then(|metadata| metadata.get("labels"))
        .filter(|labels| labels.as_object().is_some_and(|l| !l.is_empty()))
        .cloned()
}

/// What a Job spec gets wherever it appears (a Job, a CronJob's job template): the pod
/// template's defaults and `SetDefaults_PodFailurePolicyOnPodConditionsPattern` (status `True`).
fn job_spec(spec: &mut Object) {
    if let Some(policy) = object_mut(spec, "podFailurePolicy") {
        for rule in objects_mut(policy, "rules") {
            for pattern in objects_mut(rule, "onPodConditions") {
                fill_zero(pattern, "status", json!("True"));
            }
        }
    }
    pod::template(spec);
}

/// `SetDefaults_CronJob`: `Allow` concurrent runs, not suspended, three successful and one
/// failed Job kept. The job template's spec gets only the Job-spec defaults of [`job_spec`],
/// not those of a Job.
fn cron_job(root: &mut Object) {
    let Some(spec) = ensure_object(root, "spec") else {
        return;
    };
    fill_zero(spec, "concurrencyPolicy", json!("Allow"));
    fill(spec, "suspend", json!(false));
    fill(spec, "successfulJobsHistoryLimit", json!(3));
    fill(spec, "failedJobsHistoryLimit", json!(1));
    if let Some(job_spec) = path_mut(spec, &["jobTemplate", "spec"]) {
        self::job_spec(job_spec);
    }
}

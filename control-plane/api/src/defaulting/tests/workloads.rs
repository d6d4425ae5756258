//! apps/v1 and batch/v1.

use serde_json::{Value, json};

use super::{Case, container, run, with_spec_defaults};
use crate::defaulting::apply_defaults;

fn case(
    name: &'static str,
    group: &'static str,
    kind: &'static str,
    input: Value,
    expected: Value,
) -> Case {
    Case {
        name,
        group,
        kind,
        input,
        expected,
    }
}

/// A pod template with one `nginx` container, as sent.
fn template() -> Value {
    json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}})
}

/// [`template`] defaulted.
fn template_defaulted() -> Value {
    json!({"metadata": {"labels": {"app": "web"}},
           "spec": with_spec_defaults(json!({"containers": [container("web", "nginx:1.27", "IfNotPresent")]}))})
}

fn selector() -> Value {
    json!({"matchLabels": {"app": "web"}})
}

#[test]
fn apps() {
    run(vec![
        case(
            "Deployment",
            "apps",
            "Deployment",
            json!({"spec": {"selector": selector(), "template": template()}}),
            json!({"spec": {"selector": selector(), "template": template_defaulted(), "replicas": 1,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600}}),
        ),
        case(
            "Deployment: Recreate gets no rolling update; zero replicas kept",
            "apps",
            "Deployment",
            json!({"spec": {"replicas": 0, "strategy": {"type": "Recreate"}, "selector": selector(), "template": template()}}),
            json!({"spec": {"replicas": 0, "strategy": {"type": "Recreate"}, "selector": selector(),
                "template": template_defaulted(), "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600}}),
        ),
        case(
            "ReplicaSet",
            "apps",
            "ReplicaSet",
            json!({"spec": {"selector": selector(), "template": template()}}),
            json!({"spec": {"selector": selector(), "template": template_defaulted(), "replicas": 1}}),
        ),
        case(
            "DaemonSet",
            "apps",
            "DaemonSet",
            json!({"spec": {"selector": selector(), "template": template()}}),
            json!({"spec": {"selector": selector(), "template": template_defaulted(), "revisionHistoryLimit": 10,
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}}}),
        ),
        case(
            "StatefulSet, with a claim template",
            "apps",
            "StatefulSet",
            json!({"spec": {"serviceName": "db", "selector": selector(), "template": template(),
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}),
            json!({"spec": {"serviceName": "db", "selector": selector(), "template": template_defaulted(),
                "podManagementPolicy": "OrderedReady",
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
                "replicas": 1, "revisionHistoryLimit": 10,
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                             "volumeMode": "Filesystem"},
                    "status": {"phase": "Pending"}}]}}),
        ),
        case(
            "StatefulSet: an explicit RollingUpdate without rollingUpdate stays so; OnDelete kept",
            "apps",
            "StatefulSet",
            json!({"spec": {"updateStrategy": {"type": "RollingUpdate"}, "podManagementPolicy": "Parallel",
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete"}}}),
            json!({"spec": {"updateStrategy": {"type": "RollingUpdate"}, "podManagementPolicy": "Parallel",
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"},
                "replicas": 1, "revisionHistoryLimit": 10}}),
        ),
        case(
            "ControllerRevision has no defaults",
            "apps",
            "ControllerRevision",
            json!({"data": {"spec": {}}, "revision": 1}),
            json!({"data": {"spec": {}}, "revision": 1}),
        ),
    ]);
}

#[test]
fn deployment_gets_replicas_strategy_and_pod_defaults() {
    let mut d = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}
    ]}}}});
    apply_defaults("apps", "Deployment", &mut d);
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
    assert_eq!(
        d["spec"]["template"]["spec"].get("enableServiceLinks"),
        None,
        "templates do not get the Pod-only defaults"
    );
}

/// The Job-level defaults besides completions, parallelism and backoffLimit.
fn job_fields(extra: Value) -> Value {
    let mut spec = json!({"completionMode": "NonIndexed", "suspend": false, "manualSelector": false,
                          "podReplacementPolicy": "TerminatingOrFailed"});
    if let (Some(spec), Value::Object(extra)) = (spec.as_object_mut(), extra) {
        spec.extend(extra);
    }
    spec
}

#[test]
fn batch() {
    run(vec![
        case(
            "Job: completions and parallelism both 1, labels from the template",
            "batch",
            "Job",
            json!({"metadata": {"name": "pi"}, "spec": {"template": template()}}),
            json!({"metadata": {"name": "pi", "labels": {"app": "web"}}, "spec": job_fields(json!({
                "completions": 1, "parallelism": 1, "backoffLimit": 6, "template": template_defaulted()}))}),
        ),
        case(
            "Job: parallelism alone leaves completions unset (a work queue)",
            "batch",
            "Job",
            json!({"metadata": {"labels": {"own": "label"}}, "spec": {"parallelism": 3}}),
            json!({"metadata": {"labels": {"own": "label"}}, "spec": job_fields(json!({"parallelism": 3, "backoffLimit": 6}))}),
        ),
        case(
            "Job: completions alone gets parallelism 1",
            "batch",
            "Job",
            json!({"spec": {"completions": 5}}),
            json!({"spec": job_fields(json!({"completions": 5, "parallelism": 1, "backoffLimit": 6}))}),
        ),
        case(
            "Job: zero completions and parallelism are kept",
            "batch",
            "Job",
            json!({"spec": {"completions": 0, "parallelism": 0}}),
            json!({"spec": job_fields(json!({"completions": 0, "parallelism": 0, "backoffLimit": 6}))}),
        ),
        case(
            "Job: a per-index backoff limit makes the global one unlimited",
            "batch",
            "Job",
            json!({"spec": {"completions": 4, "completionMode": "Indexed", "backoffLimitPerIndex": 1}}),
            json!({"spec": job_fields(json!({"completions": 4, "parallelism": 1, "completionMode": "Indexed",
                "backoffLimitPerIndex": 1, "backoffLimit": 2147483647}))}),
        ),
        case(
            "Job: a pod failure policy makes replacement wait for Failed; condition status True",
            "batch",
            "Job",
            json!({"spec": {"backoffLimit": 2, "podFailurePolicy": {"rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}]}}}),
            json!({"spec": job_fields(json!({"completions": 1, "parallelism": 1, "backoffLimit": 2,
                "podReplacementPolicy": "Failed", "podFailurePolicy": {"rules": [
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]}}))}),
        ),
        case(
            "CronJob: its own defaults; the job template is not defaulted as a Job",
            "batch",
            "CronJob",
            json!({"spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": template()}}}}),
            json!({"spec": {"schedule": "*/5 * * * *", "concurrencyPolicy": "Allow", "suspend": false,
                "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
                "jobTemplate": {"spec": {"template": template_defaulted()}}}}),
        ),
    ]);
}

//! apps/v1 and batch/v1 kinds.

use serde_json::{Value, json};

use super::{create, has, update, with};

fn pod_spec() -> Value {
    json!({"containers": [{"name": "web", "image": "nginx", "ports": [{"containerPort": 80}]}]})
}

fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec()},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}
        }
    })
}

#[test]
fn deployments() {
    assert_eq!(
        create("apps", "Deployment", &deployment()),
        Vec::<String>::new()
    );
    let no_selector = with(&deployment(), json!({"spec": {"selector": null}}));
    assert_eq!(
        create("apps", "Deployment", &no_selector),
        [
            "spec.selector: Required value",
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: \
             `selector` does not match template `labels`"
        ]
    );
    let mismatch = with(
        &deployment(),
        json!({"spec": {"selector": {"matchLabels": {"app": "api"}}}}),
    );
    assert_eq!(
        create("apps", "Deployment", &mismatch),
        [
            "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: \
          `selector` does not match template `labels`"
        ]
    );
    let mut empty = deployment();
    empty["spec"]["selector"] = json!({"matchLabels": {}});
    assert_eq!(
        create("apps", "Deployment", &empty),
        [
            "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{}, \
          MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for \
          deployment"
        ]
    );
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"spec": {"replicas": -1}}),
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
        ),
        (
            json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}}),
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}: may not be 0 when `maxSurge` is 0",
        ),
        (
            json!({"spec": {"strategy": {"rollingUpdate": {"maxUnavailable": "110%"}}}}),
            "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"110%\"}: must not be greater than 100%",
        ),
        (
            json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": "ten"}}}}),
            "spec.strategy.rollingUpdate.maxSurge: Invalid value: intstr.IntOrString{Type:1, IntVal:0, StrVal:\"ten\"}: a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
        ),
        (
            json!({"spec": {"strategy": {"type": "Recreate"}}}),
            "spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'",
        ),
        (
            json!({"spec": {"strategy": {"type": "BlueGreen", "rollingUpdate": null}}}),
            "spec.strategy: Unsupported value: apps.DeploymentStrategy{Type:\"BlueGreen\", RollingUpdate:(*apps.RollingUpdateDeployment)(nil)}: supported values: \"Recreate\", \"RollingUpdate\"",
        ),
        (
            json!({"spec": {"template": {"spec": {"restartPolicy": "Never"}}}}),
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
        ),
        (
            json!({"spec": {"template": {"spec": {"containers": []}}}}),
            "spec.template.spec.containers: Required value",
        ),
        (
            json!({"spec": {"template": {"metadata": {"labels": {"app": "web", "bad key!": "x"}}}}}),
            "spec.template.labels: Invalid value: \"bad key!\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
        ),
        (
            json!({"spec": {"progressDeadlineSeconds": 5, "minReadySeconds": 10}}),
            "spec.progressDeadlineSeconds: Invalid value: 5: must be greater than minReadySeconds",
        ),
    ];
    for (patch, expected) in cases {
        has(
            &create("apps", "Deployment", &with(&deployment(), patch)),
            expected,
        );
    }
}

#[test]
fn deployment_selectors_are_immutable() {
    let old = deployment();
    let new = with(
        &old,
        json!({"spec": {"selector": {"matchLabels": {"app": "web", "tier": "fe"}},
                        "template": {"metadata": {"labels": {"app": "web", "tier": "fe"}}}}}),
    );
    assert_eq!(
        update("apps", "Deployment", &old, &new),
        [
            "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\
          \"web\", \"tier\":\"fe\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field \
          is immutable"
        ]
    );
    let scaled = with(&old, json!({"spec": {"replicas": 5}}));
    assert_eq!(
        update("apps", "Deployment", &old, &scaled),
        Vec::<String>::new()
    );
}

#[test]
fn replica_sets_and_daemon_sets() {
    let rs = with(
        &deployment(),
        json!({"kind": "ReplicaSet", "spec": {"strategy": null}}),
    );
    assert_eq!(create("apps", "ReplicaSet", &rs), Vec::<String>::new());
    has(
        &create(
            "apps",
            "ReplicaSet",
            &with(
                &rs,
                json!({"spec": {"template": {"spec": {"activeDeadlineSeconds": 5}}}}),
            ),
        ),
        "spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in ReplicaSet is not Supported",
    );
    let ds = json!({"metadata": {"name": "agent", "namespace": "kube-system"},
                    "spec": {"selector": {"matchLabels": {"app": "agent"}},
                             "template": {"metadata": {"labels": {"app": "agent"}}, "spec": pod_spec()}}});
    assert_eq!(create("apps", "DaemonSet", &ds), Vec::<String>::new());
    assert_eq!(
        create(
            "apps",
            "DaemonSet",
            &with(
                &ds,
                json!({"spec": {"updateStrategy": {"rollingUpdate": {"maxUnavailable": 0}}}})
            )
        ),
        [
            "spec.updateStrategy.rollingUpdate.maxUnavailable: Required value: cannot be 0 when maxSurge is 0"
        ]
    );
    let moved = with(
        &ds,
        json!({"spec": {"selector": {"matchLabels": {"app": "agent2"}},
                                          "template": {"metadata": {"labels": {"app": "agent2"}}}}}),
    );
    has(
        &update("apps", "DaemonSet", &ds, &moved),
        "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{\"app\":\"agent2\"}, MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable",
    );
}

#[test]
fn stateful_sets() {
    let sts = json!({"metadata": {"name": "db", "namespace": "d"},
                     "spec": {"serviceName": "db", "replicas": 3,
                              "selector": {"matchLabels": {"app": "db"}},
                              "template": {"metadata": {"labels": {"app": "db"}}, "spec": pod_spec()},
                              "volumeClaimTemplates": []}});
    assert_eq!(create("apps", "StatefulSet", &sts), Vec::<String>::new());
    has(
        &create(
            "apps",
            "StatefulSet",
            &with(&sts, json!({"spec": {"podManagementPolicy": "Random"}})),
        ),
        "spec.podManagementPolicy: Invalid value: \"Random\": must be 'OrderedReady' or 'Parallel'",
    );
    has(
        &create(
            "apps",
            "StatefulSet",
            &with(&sts, json!({"metadata": {"name": "db.x"}})),
        ),
        "metadata.name: Invalid value: \"db.x\": must not contain dots",
    );
    let rescaled = with(&sts, json!({"spec": {"replicas": 5}}));
    assert_eq!(
        update("apps", "StatefulSet", &sts, &rescaled),
        Vec::<String>::new()
    );
    let renamed = with(&sts, json!({"spec": {"serviceName": "other"}}));
    assert_eq!(
        update("apps", "StatefulSet", &sts, &renamed),
        [
            "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', \
          'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and \
          'minReadySeconds' are forbidden"
        ]
    );
    let cr = json!({"metadata": {"name": "db-1", "namespace": "d"}, "revision": 1, "data": {}});
    assert_eq!(
        create("apps", "ControllerRevision", &cr),
        Vec::<String>::new()
    );
    assert_eq!(
        create(
            "apps",
            "ControllerRevision",
            &with(&cr, json!({"data": null}))
        ),
        ["data: Required value: data is mandatory"]
    );
}

fn job() -> Value {
    json!({"metadata": {"name": "pi", "namespace": "d"},
           "spec": {"backoffLimit": 4,
                    "template": {"spec": {"containers": [{"name": "pi", "image": "perl"}], "restartPolicy": "Never"}}}})
}

#[test]
fn jobs() {
    assert_eq!(create("batch", "Job", &job()), Vec::<String>::new());
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"spec": {"template": {"spec": {"restartPolicy": "Always"}}}}),
            "spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"",
        ),
        (
            json!({"spec": {"parallelism": -1}}),
            "spec.parallelism: Invalid value: -1: must be greater than or equal to 0",
        ),
        (
            json!({"spec": {"backoffLimit": -2}}),
            "spec.backoffLimit: Invalid value: -2: must be greater than or equal to 0",
        ),
        (
            json!({"spec": {"completionMode": "Ordered"}}),
            "spec.completionMode: Unsupported value: \"Ordered\": supported values: \"NonIndexed\", \"Indexed\"",
        ),
        (
            json!({"spec": {"completionMode": "Indexed"}}),
            "spec.completions: Required value: when completion mode is Indexed",
        ),
        (
            json!({"spec": {"manualSelector": true}}),
            "spec.selector: Required value",
        ),
    ];
    for (patch, expected) in cases {
        has(&create("batch", "Job", &with(&job(), patch)), expected);
    }
    let selected = with(
        &job(),
        json!({"spec": {"selector": {"matchLabels": {"batch.kubernetes.io/job-name": "pi"}},
                                                 "template": {"metadata": {"labels": {"batch.kubernetes.io/job-name": "pi"}}}}}),
    );
    let changed = with(
        &selected,
        json!({"spec": {"template": {"spec": {"containers": [{"name": "pi", "image": "perl:5"}]}}}}),
    );
    let lines = update("batch", "Job", &selected, &changed);
    assert!(
        lines.len() == 1
            && lines[0].starts_with("spec.template: Invalid value: ")
            && lines[0].ends_with(": field is immutable"),
        "{lines:#?}"
    );
    let more = with(&selected, json!({"spec": {"completions": 3}}));
    has(
        &update(
            "batch",
            "Job",
            &with(&selected, json!({"spec": {"completions": 1}})),
            &more,
        ),
        "spec.completions: Invalid value: 3: field is immutable",
    );
}

#[test]
fn cron_jobs() {
    let cj = json!({"metadata": {"name": "hello", "namespace": "d"},
                    "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": job()["spec"].clone()}}});
    assert_eq!(create("batch", "CronJob", &cj), Vec::<String>::new());
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"spec": {"schedule": ""}}),
            "spec.schedule: Required value",
        ),
        (json!({"spec": {"schedule": "@hourly"}}), ""),
        (
            json!({"spec": {"schedule": "every minute"}}),
            "spec.schedule: Invalid value: \"every minute\": expected exactly 5 fields, found 2: [every minute]",
        ),
        (
            json!({"spec": {"schedule": "61 * * * *"}}),
            "spec.schedule: Invalid value: \"61 * * * *\": end of range (61) above maximum (59): 61",
        ),
        (
            json!({"spec": {"schedule": "TZ=UTC 0 * * * *"}}),
            "spec.schedule: Invalid value: \"TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
        ),
        (
            json!({"spec": {"concurrencyPolicy": "Sometimes"}}),
            "spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\"",
        ),
        (
            json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Always"}}}}}}),
            "spec.jobTemplate.spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"",
        ),
        (
            json!({"spec": {"timeZone": "Mars/Olympus Mons"}}),
            "spec.timeZone: Invalid value: \"Mars/Olympus Mons\": unknown time zone Mars/Olympus Mons",
        ),
        (
            json!({"metadata": {"name": "a-very-long-cronjob-name-that-is-longer-than-fifty-two"}}),
            "metadata.name: Invalid value: \"a-very-long-cronjob-name-that-is-longer-than-fifty-two\": must be no more than 52 characters",
        ),
    ];
    for (patch, expected) in cases {
        let lines = create("batch", "CronJob", &with(&cj, patch));
        if expected.is_empty() {
            assert_eq!(lines, Vec::<String>::new());
        } else {
            has(&lines, expected);
        }
    }
}

#[test]
fn a_fully_defaulted_deployment_as_stored_passes() {
    let stored = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "uid": "3b1c", "resourceVersion": "7",
                     "generation": 1, "creationTimestamp": "2025-01-01T00:00:00Z",
                     "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "spec": {
            "replicas": 1, "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                "spec": {
                    "containers": [{"name": "web", "image": "nginx", "imagePullPolicy": "Always",
                                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                    "resources": {}, "terminationMessagePath": "/dev/termination-log",
                                    "terminationMessagePolicy": "File"}],
                    "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                    "securityContext": {}, "terminationGracePeriodSeconds": 30
                }
            }
        },
        "status": {"replicas": 1, "readyReplicas": 1}
    });
    assert_eq!(create("apps", "Deployment", &stored), Vec::<String>::new());
    let mut next = stored.clone();
    next["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.28");
    next["metadata"]["creationTimestamp"] = json!("2025-02-02T00:00:00Z");
    assert_eq!(
        update("apps", "Deployment", &stored, &next),
        Vec::<String>::new()
    );
}

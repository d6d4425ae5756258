//! Table tests after kube-controller-manager's `podautoscaler/replica_calculator_test.go` and
//! `horizontal_test.go` (the cases named after theirs use their numbers: two containers per pod,
//! each requesting the pod's request and using the pod's level), the conditions and Event text a
//! user sees, and the behavior windows over a simulated clock.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::{
        autoscaling::v2::{
            CrossVersionObjectReference, HPAScalingPolicy, HPAScalingRules,
            HorizontalPodAutoscaler, HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec,
            MetricIdentifier, MetricSpec, MetricTarget, PodsMetricSource, ResourceMetricSource,
        },
        core::v1::{Container, Pod, PodCondition, PodSpec, PodStatus, ResourceRequirements},
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{ObjectMeta, Time},
    },
};
use serde_json::json;

use super::{
    calc::{self, Inputs, PodUsage, Settings},
    plan::{self, History, Observed, Scale},
    pod_usages, scale_resource,
};

const CONTAINERS: usize = 2;

fn now() -> Timestamp {
    "2026-01-01T12:00:00Z".parse().unwrap()
}

/// upstream's test settings: 2 min CPU initialization, 10 s readiness delay.
fn test_settings() -> Settings {
    Settings {
        cpu_initialization_period: SignedDuration::from_mins(2),
        initial_readiness_delay: SignedDuration::from_secs(10),
        ..Settings::default()
    }
}

/// A pod as upstream's harness makes them.
#[derive(Clone)]
struct P {
    ready: bool,
    phase: &'static str,
    /// Seconds before now it started (`cool`: long ago, `hot`: within the init period).
    started: i64,
    deleting: bool,
    request: &'static str,
}

fn cool(request: &'static str) -> P {
    P {
        ready: true,
        phase: "Running",
        started: 180,
        deleting: false,
        request,
    }
}

fn pod(i: usize, p: &P) -> Pod {
    let start = Time(now() - SignedDuration::from_secs(p.started));
    let containers = (0..CONTAINERS)
        .map(|c| Container {
            name: format!("container{}", c + 1),
            resources: Some(ResourceRequirements {
                requests: (!p.request.is_empty())
                    .then(|| BTreeMap::from([("cpu".to_owned(), Quantity(p.request.to_owned()))])),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("test-pod-{i}")),
            namespace: Some("test-namespace".into()),
            deletion_timestamp: p.deleting.then(|| Time(now())),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers,
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some(p.phase.into()),
            start_time: Some(start.clone()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if p.ready { "True" } else { "False" }.into(),
                last_transition_time: Some(start),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

/// Usage of `levels[i]` milli-CPU in each container of pod `i` (pods past the list have none).
fn usages(levels: &[i64]) -> Vec<PodUsage> {
    levels
        .iter()
        .enumerate()
        .map(|(i, level)| PodUsage {
            name: format!("test-pod-{i}"),
            timestamp: now() - SignedDuration::from_secs(10),
            window: SignedDuration::from_secs(30),
            containers: (0..CONTAINERS)
                .map(|c| {
                    (
                        format!("container{}", c + 1),
                        BTreeMap::from([("cpu".to_owned(), *level)]),
                    )
                })
                .collect(),
        })
        .collect()
}

fn run_resource(
    current: i32,
    pods: &[P],
    levels: &[i64],
    target: i32,
) -> Result<(i32, i32, i64), String> {
    let pods: Vec<Pod> = pods.iter().enumerate().map(|(i, p)| pod(i, p)).collect();
    let settings = test_settings();
    let inputs = Inputs {
        pods: &pods,
        now: now(),
        settings: &settings,
    };
    let metrics = calc::resource_metrics(&usages(levels), "test-namespace", "cpu", None)?;
    calc::resource_replicas(current, target, "cpu", None, metrics, &inputs)
}

#[test]
fn replica_calculator_cases() {
    let unready = |request| P {
        ready: false,
        ..cool(request)
    };
    let failed = |request| P {
        ready: false,
        phase: "Failed",
        ..cool(request)
    };
    let deleting = |request| P {
        ready: false,
        deleting: true,
        ..cool(request)
    };
    let hot = |request| P {
        started: 30,
        ..cool(request)
    };
    let pending = |request| P {
        phase: "Pending",
        ..cool(request)
    };
    let one = "1.0";
    // (upstream test, current, pods, levels, target %, expected replicas, utilization, value)
    type Case = (&'static str, i32, Vec<P>, Vec<i64>, i32, i32, i32, i64);
    let cases: Vec<Case> = vec![
        (
            "TestReplicaCalcScaleUp",
            3,
            vec![cool(one); 3],
            vec![300, 500, 700],
            30,
            5,
            50,
            1000,
        ),
        (
            "TestReplicaCalcScaleUpUnreadyLessScale",
            3,
            vec![unready(one), cool(one), cool(one)],
            vec![300, 500, 700],
            30,
            4,
            60,
            1200,
        ),
        (
            "TestReplicaCalcScaleUpHotCpuLessScale",
            3,
            vec![hot(one), cool(one), cool(one)],
            vec![300, 500, 700],
            30,
            4,
            60,
            1200,
        ),
        (
            "TestReplicaCalcScaleUpUnreadyNoScale",
            3,
            vec![cool(one), unready(one), unready(one)],
            vec![400, 500, 700],
            30,
            3,
            40,
            800,
        ),
        (
            "TestReplicaCalcScaleUpIgnoresFailedPods",
            2,
            vec![cool(one), cool(one), failed(one), failed(one)],
            vec![500, 700],
            30,
            4,
            60,
            1200,
        ),
        (
            "TestReplicaCalcScaleUpIgnoresDeletionPods",
            2,
            vec![cool(one), cool(one), deleting(one), deleting(one)],
            vec![500, 700],
            30,
            4,
            60,
            1200,
        ),
        (
            "TestReplicaCalcScaleDown",
            5,
            vec![cool(one); 5],
            vec![100, 300, 500, 250, 250],
            50,
            3,
            28,
            560,
        ),
        (
            "TestReplicaCalcScaleDownExcludeUnreadyPods",
            5,
            vec![cool(one), cool(one), cool(one), unready(one), unready(one)],
            vec![100, 300, 500, 250, 250],
            50,
            2,
            30,
            600,
        ),
        (
            "TestReplicaCalcTolerance",
            3,
            vec![cool("0.9"), cool("1.0"), cool("1.1")],
            vec![1010, 1030, 1020],
            100,
            3,
            102,
            2040,
        ),
        // keelson's: a pending pod counts as unready; scaling up it is taken as idle.
        (
            "pending pod idle on scale up",
            2,
            vec![cool(one), pending(one)],
            vec![900],
            30,
            3,
            90,
            1800,
        ),
        // keelson's: a pod without a sample is taken as using its request when scaling down
        // (300+300+1000)/3000 = 53% of 50%: within tolerance, no change.
        (
            "missing sample full request on scale down",
            3,
            vec![cool(one); 3],
            vec![300, 300],
            50,
            3,
            30,
            600,
        ),
    ];
    for (name, current, pods, levels, target, replicas, utilization, value) in cases {
        let got =
            run_resource(current, &pods, &levels, target).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, (replicas, utilization, value), "{name}");
    }
}

#[test]
fn replica_calculator_errors() {
    let one = "1.0";
    let missing_request = run_resource(1, &[cool("")], &[100], 50).unwrap_err();
    assert_eq!(
        missing_request,
        "missing request for cpu in container container1 of Pod test-pod-0"
    );
    assert_eq!(
        run_resource(1, &[], &[100], 50).unwrap_err(),
        "no pods returned by selector while calculating replica count"
    );
    let unready = P {
        ready: false,
        ..cool(one)
    };
    assert_eq!(
        run_resource(1, &[unready], &[100], 50).unwrap_err(),
        "did not receive metrics for targeted pods (pods might be unready)"
    );
    assert_eq!(
        run_resource(1, &[cool(one)], &[], 50).unwrap_err(),
        "no metrics returned from resource metrics API"
    );
}

#[test]
fn average_value_targets() {
    // (current, levels per container, target milli per pod, expected replicas, average)
    let cases = [
        (3, vec![300, 500, 700], 500, 6, 1000),
        (3, vec![300, 500, 700], 1000, 3, 1000),
        (5, vec![100, 100, 100, 100, 100], 1000, 1, 200),
    ];
    let settings = test_settings();
    for (current, levels, target, replicas, average) in cases {
        let pods: Vec<Pod> = (0..levels.len()).map(|i| pod(i, &cool("1"))).collect();
        let inputs = Inputs {
            pods: &pods,
            now: now(),
            settings: &settings,
        };
        let metrics = calc::resource_metrics(&usages(&levels), "ns", "cpu", None).unwrap();
        let got = calc::raw_resource_replicas(current, target, "cpu", metrics, &inputs).unwrap();
        assert_eq!(got, (replicas, average), "{levels:?} target {target}");
    }
}

#[test]
fn go_durations() {
    for (text, secs) in [
        ("30s", 30.0),
        ("1m0s", 60.0),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("0", 0.0),
    ] {
        let d = calc::parse_go_duration(text).unwrap();
        assert!((d.as_secs_f64() - secs).abs() < 1e-9, "{text}");
    }
    assert!(calc::parse_go_duration("1x").is_none());
    assert!(calc::parse_go_duration("").is_none());
}

#[test]
fn pod_metrics_objects_are_read() {
    let item: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics",
        "metadata": {"name": "web-1", "namespace": "default"},
        "timestamp": "2026-01-01T12:00:00Z", "window": "10.5s",
        "containers": [
            {"name": "app", "usage": {"cpu": "250000000n", "memory": "64Mi"}},
            {"name": "sidecar", "usage": {"cpu": "5m", "memory": "1Mi"}},
        ],
    }))
    .unwrap();
    let usage = &pod_usages(&[item])[0];
    assert_eq!(usage.name, "web-1");
    assert_eq!(usage.window, SignedDuration::from_millis(10_500));
    assert_eq!(usage.containers[0].1["cpu"], 250);
    assert_eq!(usage.containers[0].1["memory"], 64 * 1024 * 1024 * 1000);
    let metrics = calc::resource_metrics(&pod_usages(&[]), "ns", "cpu", None);
    assert!(metrics.is_err());
}

#[test]
fn scale_targets() {
    let r = scale_resource("apps/v1", "Deployment").unwrap();
    assert_eq!(
        (r.group.as_str(), r.plural.as_str()),
        ("apps", "deployments")
    );
    let r = scale_resource("v1", "ReplicationController").unwrap();
    assert_eq!(
        (r.group.as_str(), r.plural.as_str()),
        ("", "replicationcontrollers")
    );
    assert_eq!(
        scale_resource("example.com/v1", "Widget").unwrap_err(),
        r#"no matches for kind "Widget" in group "example.com""#
    );
    assert_eq!(
        scale_resource("a/b/c", "Deployment").unwrap_err(),
        "unexpected GroupVersion string: a/b/c"
    );
}

// --- the controller's pass ---

fn cpu_metric(percent: i32) -> MetricSpec {
    MetricSpec {
        type_: "Resource".into(),
        resource: Some(ResourceMetricSource {
            name: "cpu".into(),
            target: MetricTarget {
                type_: "Utilization".into(),
                average_utilization: Some(percent),
                ..Default::default()
            },
        }),
        ..Default::default()
    }
}

fn hpa(min: i32, max: i32, metrics: Vec<MetricSpec>) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(HorizontalPodAutoscalerSpec {
            min_replicas: Some(min),
            max_replicas: max,
            metrics: Some(metrics),
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: "web".into(),
            },
            behavior: None,
        }),
        status: None,
    }
}

/// One pass over `replicas` cool pods each using `level` milli-CPU per container of a 1-CPU
/// request, the scale write succeeding; returns the outcome and the count written.
fn pass(
    hpa: &HorizontalPodAutoscaler,
    replicas: i32,
    level: i64,
    history: &mut History,
    at: Timestamp,
) -> (plan::Outcome, i32) {
    let count = usize::try_from(replicas).unwrap();
    let pods: Vec<Pod> = (0..count).map(|i| pod(i, &cool("1"))).collect();
    let metrics = Ok(usages(&vec![level; count]));
    let scale = Scale {
        spec_replicas: replicas,
        status_replicas: replicas,
        selector: "app=web".into(),
    };
    let observed = Observed {
        hpa,
        scale: &scale,
        pods: &pods,
        metrics: &metrics,
        now: at,
    };
    let settings = Settings::default();
    let decision = plan::decide(&observed, history, &settings);
    let desired = decision.desired;
    let update = decision.rescale.then_some(Ok(()));
    let outcome = decision.finish(
        update,
        hpa.spec.as_ref().and_then(|s| s.behavior.as_ref()),
        history,
        &settings,
        at,
    );
    let written = if outcome.status.last_scale_time.is_some() {
        desired
    } else {
        replicas
    };
    (outcome, written)
}

fn condition(outcome: &plan::Outcome, type_: &str) -> (String, String, String) {
    let c = outcome
        .status
        .conditions
        .as_ref()
        .and_then(|cs| cs.iter().find(|c| c.type_ == type_))
        .unwrap_or_else(|| panic!("no {type_} condition"));
    (
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    )
}

fn owned(t: (&str, &str, &str)) -> (String, String, String) {
    (t.0.to_owned(), t.1.to_owned(), t.2.to_owned())
}

#[test]
fn scale_up_status_and_event() {
    let hpa = hpa(1, 5, vec![cpu_metric(50)]);
    let mut history = History::default();
    // 2 pods at 90%: ceil(1.8 * 2) = 4.
    let (outcome, written) = pass(&hpa, 2, 900, &mut history, now());
    assert_eq!(written, 4);
    assert_eq!(
        outcome.notes,
        vec![plan::Note {
            warning: false,
            reason: "SuccessfulRescale",
            message:
                "New size: 4; reason: cpu resource utilization (percentage of request) above target"
                    .into(),
        }]
    );
    assert_eq!(outcome.status.current_replicas, Some(2));
    assert_eq!(outcome.status.desired_replicas, 4);
    assert_eq!(outcome.status.last_scale_time, Some(Time(now())));
    let current = &outcome.status.current_metrics.as_ref().unwrap()[0];
    let resource = current.resource.as_ref().unwrap();
    assert_eq!(resource.current.average_utilization, Some(90));
    assert_eq!(
        resource.current.average_value,
        Some(Quantity("1800m".into()))
    );
    assert_eq!(
        condition(&outcome, "AbleToScale"),
        owned((
            "True",
            "SucceededRescale",
            "the HPA controller was able to update the target scale to 4"
        ))
    );
    assert_eq!(
        condition(&outcome, "ScalingActive"),
        owned((
            "True",
            "ValidMetricFound",
            "the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)"
        ))
    );
    assert_eq!(
        condition(&outcome, "ScalingLimited"),
        owned((
            "False",
            "DesiredWithinRange",
            "the desired count is within the acceptable range"
        ))
    );
}

#[test]
fn limits_and_their_conditions() {
    // 3 pods at 100% of a 10% target want 30; max is 5.
    let (outcome, written) = pass(
        &hpa(1, 5, vec![cpu_metric(10)]),
        3,
        1000,
        &mut History::default(),
        now(),
    );
    assert_eq!(written, 5);
    assert_eq!(
        condition(&outcome, "ScalingLimited"),
        owned((
            "True",
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count"
        ))
    );
    // Without behavior one pass at most doubles (or goes to 4): 5 pods want 50, max 100.
    let (outcome, written) = pass(
        &hpa(1, 100, vec![cpu_metric(10)]),
        5,
        1000,
        &mut History::default(),
        now(),
    );
    assert_eq!(written, 10);
    assert_eq!(
        condition(&outcome, "ScalingLimited"),
        owned((
            "True",
            "ScaleUpLimit",
            "the desired replica count is increasing faster than the maximum scale rate"
        ))
    );
    // Idle pods want 1; min is 2 (a first pass: no higher recommendation yet besides the
    // current count, so the window holds it at 3).
    let mut history = History::default();
    let (outcome, written) = pass(&hpa(2, 5, vec![cpu_metric(50)]), 3, 10, &mut history, now());
    assert_eq!(written, 3);
    assert_eq!(
        condition(&outcome, "AbleToScale"),
        owned((
            "True",
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation"
        ))
    );
    // Five minutes later the window has passed: down to the minimum.
    let later = now() + SignedDuration::from_secs(301);
    let (outcome, written) = pass(&hpa(2, 5, vec![cpu_metric(50)]), 3, 10, &mut history, later);
    assert_eq!(written, 2);
    assert_eq!(
        condition(&outcome, "ScalingLimited"),
        owned((
            "True",
            "TooFewReplicas",
            "the desired replica count is less than the minimum replica count"
        ))
    );
    assert_eq!(
        outcome.notes[0].message,
        "New size: 2; reason: All metrics below target"
    );
    // Out of range at the start: straight to the bounds.
    let (outcome, written) = pass(
        &hpa(1, 3, vec![cpu_metric(50)]),
        6,
        500,
        &mut History::default(),
        now(),
    );
    assert_eq!(written, 3);
    assert_eq!(
        outcome.notes[0].message,
        "New size: 3; reason: Current number of replicas above Spec.MaxReplicas"
    );
}

#[test]
fn failures_set_scaling_active_false() {
    let missing = P {
        request: "",
        ..cool("")
    };
    let pods = vec![pod(0, &missing)];
    let metrics = Ok(usages(&[100]));
    let scale = Scale {
        spec_replicas: 1,
        status_replicas: 1,
        selector: "app=web".into(),
    };
    let hpa = hpa(1, 5, vec![cpu_metric(50)]);
    let settings = Settings::default();
    let mut history = History::default();
    let observed = Observed {
        hpa: &hpa,
        scale: &scale,
        pods: &pods,
        metrics: &metrics,
        now: now(),
    };
    let decision = plan::decide(&observed, &mut history, &settings);
    assert!(!decision.rescale);
    assert_eq!(
        decision.failure.as_deref(),
        Some(
            "invalid metrics (1 invalid out of 1), first error is: failed to get cpu utilization: missing request for cpu in container container1 of Pod test-pod-0"
        )
    );
    let outcome = decision.finish(None, None, &mut history, &settings, now());
    assert_eq!(
        condition(&outcome, "ScalingActive"),
        owned((
            "False",
            "FailedGetResourceMetric",
            "the HPA was unable to compute the replica count: failed to get cpu utilization: missing request for cpu in container container1 of Pod test-pod-0"
        ))
    );
    let reasons: Vec<&str> = outcome.notes.iter().map(|n| n.reason).collect();
    assert_eq!(
        reasons,
        ["FailedGetResourceMetric", "FailedComputeMetricsReplicas"]
    );
    assert_eq!(
        outcome.notes[0].message,
        "missing request for cpu in container container1 of Pod test-pod-0"
    );

    // The metrics API is missing.
    let down: Result<Vec<PodUsage>, String> =
        Err("the server could not find the requested resource".into());
    let pods = vec![pod(0, &cool("1"))];
    let observed = Observed {
        metrics: &down,
        pods: &pods,
        ..observed
    };
    let outcome = plan::decide(&observed, &mut history, &settings).finish(
        None,
        None,
        &mut history,
        &settings,
        now(),
    );
    assert_eq!(
        condition(&outcome, "ScalingActive").2,
        "the HPA was unable to compute the replica count: failed to get cpu utilization: unable to get metrics for resource cpu: unable to fetch metrics from resource metrics API: the server could not find the requested resource"
    );

    // A Pods metric: no custom metrics API.
    let pods_metric = MetricSpec {
        type_: "Pods".into(),
        pods: Some(PodsMetricSource {
            metric: MetricIdentifier {
                name: "qps".into(),
                selector: None,
            },
            target: MetricTarget {
                type_: "AverageValue".into(),
                average_value: Some(Quantity("10".into())),
                ..Default::default()
            },
        }),
        ..Default::default()
    };
    let custom = hpa_with(vec![pods_metric]);
    let observed = Observed {
        hpa: &custom,
        ..observed
    };
    let outcome = plan::decide(&observed, &mut history, &settings).finish(
        None,
        None,
        &mut history,
        &settings,
        now(),
    );
    let (status, reason, message) = condition(&outcome, "ScalingActive");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "FailedGetPodsMetric")
    );
    assert!(
        message
            .contains("unable to get metric qps: unable to fetch metrics from custom metrics API"),
        "{message}"
    );

    // No selector on the scale.
    let scale = Scale {
        selector: String::new(),
        ..scale
    };
    let observed = Observed {
        hpa: &hpa,
        scale: &scale,
        ..observed
    };
    let outcome = plan::decide(&observed, &mut history, &settings).finish(
        None,
        None,
        &mut history,
        &settings,
        now(),
    );
    assert_eq!(
        condition(&outcome, "ScalingActive"),
        owned((
            "False",
            "InvalidSelector",
            "the HPA target's scale is missing a selector"
        ))
    );
    assert_eq!(outcome.notes[0].reason, "SelectorRequired");
}

fn hpa_with(metrics: Vec<MetricSpec>) -> HorizontalPodAutoscaler {
    hpa(1, 5, metrics)
}

#[test]
fn zero_replicas_disable_scaling_and_scale_errors_are_reported() {
    let hpa = hpa(1, 5, vec![cpu_metric(50)]);
    let scale = Scale {
        spec_replicas: 0,
        status_replicas: 0,
        selector: "app=web".into(),
    };
    let metrics = Ok(Vec::new());
    let observed = Observed {
        hpa: &hpa,
        scale: &scale,
        pods: &[],
        metrics: &metrics,
        now: now(),
    };
    let settings = Settings::default();
    let mut history = History::default();
    let decision = plan::decide(&observed, &mut history, &settings);
    assert!(!decision.rescale);
    let outcome = decision.finish(None, None, &mut history, &settings, now());
    assert_eq!(
        condition(&outcome, "ScalingActive"),
        owned((
            "False",
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero"
        ))
    );
    let (status, note) = plan::scale_failed(&hpa, "deployments.apps \"web\" not found", now());
    let c = &status.conditions.unwrap()[0];
    assert_eq!(c.reason.as_deref(), Some("FailedGetScale"));
    assert_eq!(
        c.message.as_deref(),
        Some(
            "the HPA controller was unable to get the target's current scale: deployments.apps \"web\" not found"
        )
    );
    assert_eq!(note.reason, "FailedGetScale");

    // A failed scale write.
    let pods: Vec<Pod> = (0..2).map(|i| pod(i, &cool("1"))).collect();
    let metrics = Ok(usages(&[900, 900]));
    let scale = Scale {
        spec_replicas: 2,
        status_replicas: 2,
        selector: "app=web".into(),
    };
    let observed = Observed {
        scale: &scale,
        pods: &pods,
        metrics: &metrics,
        ..observed
    };
    let decision = plan::decide(&observed, &mut history, &settings);
    let outcome = decision.finish(
        Some(Err("conflict".into())),
        None,
        &mut history,
        &settings,
        now(),
    );
    assert_eq!(
        outcome.notes.last().unwrap().message,
        "New size: 4; reason: cpu resource utilization (percentage of request) above target; error: conflict"
    );
    assert_eq!(
        condition(&outcome, "AbleToScale"),
        owned((
            "False",
            "FailedUpdateScale",
            "the HPA controller was unable to update the target scale: conflict"
        ))
    );
    assert_eq!(outcome.status.last_scale_time, None);
}

#[test]
fn transition_time_moves_only_on_status_change() {
    let hpa = hpa(1, 5, vec![cpu_metric(50)]);
    let mut history = History::default();
    let (first, _) = pass(&hpa, 2, 500, &mut history, now());
    let mut again = hpa.clone();
    again.status = Some(first.status.clone());
    let later = now() + SignedDuration::from_secs(15);
    let (second, _) = pass(&again, 2, 500, &mut history, later);
    let times = |o: &plan::Outcome| {
        o.status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.last_transition_time.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(times(&first), times(&second));
}

fn rules(window: Option<i32>, select: &str, policies: &[(&str, i32, i32)]) -> HPAScalingRules {
    HPAScalingRules {
        stabilization_window_seconds: window,
        select_policy: Some(select.into()),
        policies: Some(
            policies
                .iter()
                .map(|(t, v, p)| HPAScalingPolicy {
                    type_: (*t).into(),
                    value: *v,
                    period_seconds: *p,
                })
                .collect(),
        ),
        tolerance: None,
    }
}

/// Drives passes every 15 s; each element of `levels` is one pass's per-container usage.
fn simulate(hpa: &HorizontalPodAutoscaler, start: i32, levels: &[i64]) -> Vec<i32> {
    let mut history = History::default();
    let mut replicas = start;
    let mut seen = Vec::new();
    for (i, level) in levels.iter().enumerate() {
        let at = now() + SignedDuration::from_secs(15 * i64::try_from(i).unwrap());
        let (_, written) = pass(hpa, replicas, *level, &mut history, at);
        replicas = written;
        seen.push(replicas);
    }
    seen
}

#[test]
fn behavior_policies_over_time() {
    let mut slow_up = hpa(1, 50, vec![cpu_metric(50)]);
    // At most 1 pod per 60 s up; scale down only after 60 s of lower recommendations.
    slow_up.spec.as_mut().unwrap().behavior = Some(HorizontalPodAutoscalerBehavior {
        scale_up: Some(rules(Some(0), "Max", &[("Pods", 1, 60)])),
        scale_down: Some(rules(Some(60), "Max", &[("Percent", 100, 15)])),
    });
    // Busy for 6 passes (90 s), then idle.
    let levels = [1000, 1000, 1000, 1000, 1000, 1000, 10, 10, 10, 10, 10, 10];
    assert_eq!(
        simulate(&slow_up, 1, &levels),
        // +1 every 60 s. Idle, the scale-down window keeps the busy recommendations (6) for
        // 60 s, and as upstream that stabilized count still climbs at the scale-up rate
        // (+1 at 120 s) before the window empties and the count drops to the minimum.
        [2, 2, 2, 2, 3, 3, 3, 3, 4, 1, 1, 1]
    );

    // The defaults of a present `behavior`: 4 pods or 100% per 15 s up, 300 s down.
    // 100% of a 10% target: each pass wants ten times the count.
    let mut defaults = hpa(1, 50, vec![cpu_metric(10)]);
    defaults.spec.as_mut().unwrap().behavior = Some(HorizontalPodAutoscalerBehavior::default());
    assert_eq!(simulate(&defaults, 1, &[1000, 1000, 1000]), [5, 10, 20]);

    // `Min` picks the smaller change: 1 pod rather than 100%.
    let mut min = hpa(1, 50, vec![cpu_metric(50)]);
    min.spec.as_mut().unwrap().behavior = Some(HorizontalPodAutoscalerBehavior {
        scale_up: Some(rules(
            Some(0),
            "Min",
            &[("Pods", 1, 15), ("Percent", 100, 15)],
        )),
        scale_down: None,
    });
    assert_eq!(simulate(&min, 4, &[1000, 1000]), [5, 6]);

    // `Disabled` never scales down.
    let mut disabled = hpa(1, 50, vec![cpu_metric(50)]);
    disabled.spec.as_mut().unwrap().behavior = Some(HorizontalPodAutoscalerBehavior {
        scale_up: None,
        scale_down: Some(rules(Some(0), "Disabled", &[("Percent", 100, 15)])),
    });
    assert_eq!(simulate(&disabled, 4, &[10, 10]), [4, 4]);

    // Scale-down rate: at most 50% per minute.
    let mut halving = hpa(1, 50, vec![cpu_metric(50)]);
    halving.spec.as_mut().unwrap().behavior = Some(HorizontalPodAutoscalerBehavior {
        scale_up: None,
        scale_down: Some(rules(Some(0), "Max", &[("Percent", 50, 60)])),
    });
    assert_eq!(
        simulate(&halving, 8, &[10, 10, 10, 10, 10]),
        [4, 4, 4, 4, 2]
    );
}

#[test]
fn scale_down_window_without_behavior() {
    // Five minutes of stabilization: busy once, then idle for 5 min.
    let hpa = hpa(1, 10, vec![cpu_metric(50)]);
    let mut levels = vec![1000];
    levels.extend(std::iter::repeat_n(10, 21));
    let seen = simulate(&hpa, 2, &levels);
    assert_eq!(seen[0], 4);
    // Held at 4 while the busy recommendation is within 300 s (20 passes of 15 s) ...
    assert!(seen[1..20].iter().all(|r| *r == 4), "{seen:?}");
    // ... then down.
    assert_eq!(seen[21], 1, "{seen:?}");
}

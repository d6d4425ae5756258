//! The replica calculator (kube-controller-manager's `podautoscaler/replica_calculator.go` and
//! `metrics/utilization.go`): from the pods a scale selects and their resource usage, the replica
//! count that brings the average back to the target. Pure; every time is given.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::Pod;

use crate::pods;

/// How far the usage may stray from the target (either way) before the count changes.
pub const TOLERANCE: f64 = 0.1;

/// One pod's usage as `metrics.k8s.io/v1beta1` PodMetrics report it.
#[derive(Debug, Clone, PartialEq)]
pub struct PodUsage {
    /// The pod's name.
    pub name: String,
    /// When the sample window ended.
    pub timestamp: Timestamp,
    /// How long the sample window was.
    pub window: SignedDuration,
    /// Per container: its name and its usage by resource name, in milli-units.
    pub containers: Vec<(String, BTreeMap<String, i64>)>,
}

/// The usage of one pod the calculation uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct PodMetric {
    pub value: i64,
    pub timestamp: Timestamp,
    pub window: SignedDuration,
}

/// Pod name -> usage.
pub(crate) type PodMetrics = BTreeMap<String, PodMetric>;

/// The calculator's settings (kube-controller-manager's flags).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// `--horizontal-pod-autoscaler-tolerance`.
    pub tolerance: f64,
    /// `--horizontal-pod-autoscaler-cpu-initialization-period`: a pod this young may have its
    /// CPU samples skipped.
    pub cpu_initialization_period: SignedDuration,
    /// `--horizontal-pod-autoscaler-initial-readiness-delay`: how long after start a pod's
    /// readiness changes are taken as its first.
    pub initial_readiness_delay: SignedDuration,
    /// `--horizontal-pod-autoscaler-downscale-stabilization`.
    pub downscale_stabilization: SignedDuration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            tolerance: TOLERANCE,
            cpu_initialization_period: SignedDuration::from_mins(5),
            initial_readiness_delay: SignedDuration::from_secs(30),
            downscale_stabilization: SignedDuration::from_mins(5),
        }
    }
}

/// `t + d`, saturating.
pub(crate) fn plus(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(if d.is_negative() {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// The resource metrics of the pods (`GetResourceMetric`): the sum over containers (or the one
/// `container`), pods that lack a sample for `resource` in some container left out.
pub(crate) fn resource_metrics(
    usages: &[PodUsage],
    namespace: &str,
    resource: &str,
    container: Option<&str>,
) -> Result<PodMetrics, String> {
    if usages.is_empty() {
        return Err("no metrics returned from resource metrics API".to_owned());
    }
    let mut metrics = PodMetrics::new();
    for usage in usages {
        let sample = |value| PodMetric {
            value,
            timestamp: usage.timestamp,
            window: usage.window,
        };
        match container {
            Some(wanted) => {
                let Some((_, values)) = usage.containers.iter().find(|(name, _)| name == wanted)
                else {
                    return Err(format!(
                        "failed to get container metrics: container {wanted} not present in metrics for pod {namespace}/{}",
                        usage.name
                    ));
                };
                if let Some(value) = values.get(resource) {
                    metrics.insert(usage.name.clone(), sample(*value));
                }
            }
            None => {
                let total: Option<i64> = if usage.containers.is_empty() {
                    None
                } else {
                    usage
                        .containers
                        .iter()
                        .map(|(_, values)| values.get(resource).copied())
                        .sum()
                };
                if let Some(total) = total {
                    metrics.insert(usage.name.clone(), sample(total));
                }
            }
        }
    }
    Ok(metrics)
}

/// The pods as `groupPods` sorts them.
#[derive(Debug, Default)]
struct Groups {
    ready: usize,
    unready: BTreeSet<String>,
    missing: BTreeSet<String>,
    ignored: BTreeSet<String>,
}

/// `groupPods`: deleted and failed pods are ignored, pending ones count as unready, pods without
/// a sample are missing; for CPU, a pod whose sample may still be its start-up burst is unready.
fn group_pods(
    pods: &[Pod],
    metrics: &PodMetrics,
    resource: &str,
    now: Timestamp,
    settings: &Settings,
) -> Groups {
    let mut groups = Groups::default();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        if pods::is_terminating(&pod.metadata) || pods::phase(pod) == "Failed" {
            groups.ignored.insert(name);
            continue;
        }
        if pods::phase(pod) == "Pending" {
            groups.unready.insert(name);
            continue;
        }
        let Some(metric) = metrics.get(&name) else {
            groups.missing.insert(name);
            continue;
        };
        if resource == "cpu" {
            let condition = pods::condition(pod, "Ready");
            let start = pod.status.as_ref().and_then(|s| s.start_time.as_ref());
            let unready = match (condition, start) {
                (Some(condition), Some(start)) => {
                    let transition = condition
                        .last_transition_time
                        .as_ref()
                        .map_or(Timestamp::MIN, |t| t.0);
                    let is_false = condition.status == "False";
                    if plus(start.0, settings.cpu_initialization_period) > now {
                        // Still starting: a sample taken before one full window after the
                        // last readiness change may hold the start-up burst.
                        is_false || metric.timestamp < plus(transition, metric.window)
                    } else {
                        // Unready and never ready since start.
                        is_false && plus(start.0, settings.initial_readiness_delay) > transition
                    }
                }
                _ => true,
            };
            if unready {
                groups.unready.insert(name);
                continue;
            }
        }
        groups.ready += 1;
    }
    groups
}

/// `calculateRequests`: each pod's request for `resource` in milli-units, summed over its
/// containers and restartable (sidecar) init containers, or only `container`'s.
pub(crate) fn pod_requests(
    pods: &[Pod],
    container: Option<&str>,
    resource: &str,
) -> Result<BTreeMap<String, i64>, String> {
    let mut requests = BTreeMap::new();
    for pod in pods {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let sidecars = spec
            .and_then(|s| s.init_containers.as_ref())
            .into_iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"));
        let containers = spec.map(|s| s.containers.iter()).into_iter().flatten();
        let mut total = 0_i64;
        let mut found = false;
        for c in containers.chain(sidecars) {
            if container.is_some_and(|wanted| wanted != c.name) {
                continue;
            }
            let request = c
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get(resource))
                .and_then(|q| keelson_api::quantity::Quantity::try_from(q).ok());
            let Some(request) = request else {
                return Err(format!(
                    "missing request for {resource} in container {} of Pod {name}",
                    c.name
                ));
            };
            total = total.saturating_add(request.milli_value());
            if container.is_some() {
                found = true;
                break;
            }
        }
        if let Some(wanted) = container
            && !found
        {
            return Err(format!("container {wanted} not found in Pod {name}"));
        }
        requests.insert(name, total);
    }
    Ok(requests)
}

/// `GetResourceUtilizationRatio`: usage over requests, as a ratio to the target percentage;
/// also the utilization (percent) and the average raw usage.
pub(crate) fn utilization_ratio(
    metrics: &PodMetrics,
    requests: &BTreeMap<String, i64>,
    target: i32,
) -> Result<(f64, i32, i64), String> {
    let mut used: i128 = 0;
    let mut requested: i128 = 0;
    let mut entries: i128 = 0;
    for (name, metric) in metrics {
        // A pod without a request is reported elsewhere; here its sample is extra.
        let Some(request) = requests.get(name) else {
            continue;
        };
        used += i128::from(metric.value);
        requested += i128::from(*request);
        entries += 1;
    }
    if requested == 0 {
        return Err("no metrics returned matched known pods".to_owned());
    }
    let percent = (used * 100 / requested).clamp(i128::from(i32::MIN), i128::from(i32::MAX));
    let utilization = i32::try_from(percent).unwrap_or(i32::MAX);
    let average = i64::try_from(used / entries).unwrap_or(i64::MAX);
    Ok((
        f64::from(utilization) / f64::from(target),
        utilization,
        average,
    ))
}

/// `GetMetricUsageRatio`: the average usage, and its ratio to the target.
fn usage_ratio(metrics: &PodMetrics, target: i64) -> (f64, i64) {
    let total: i128 = metrics.values().map(|m| i128::from(m.value)).sum();
    let count = i128::try_from(metrics.len()).unwrap_or(i128::MAX).max(1);
    let average = i64::try_from(total / count).unwrap_or(i64::MAX);
    (average as f64 / target as f64, average)
}

/// `ceil(x)` as a replica count.
fn ceil_replicas(x: f64) -> i32 {
    let c = x.ceil();
    if c >= f64::from(i32::MAX) {
        i32::MAX
    } else if c <= 0.0 {
        0
    } else {
        c as i32
    }
}

fn within(tolerance: f64, ratio: f64) -> bool {
    (1.0 - tolerance) <= ratio && ratio <= (1.0 + tolerance)
}

/// The pods and their samples one resource calculation sees.
pub(crate) struct Inputs<'a> {
    pub pods: &'a [Pod],
    pub now: Timestamp,
    pub settings: &'a Settings,
}

/// `GetResourceReplicas`: the count for a `Utilization` target; also the utilization (percent)
/// and the average raw usage (milli-units).
pub(crate) fn resource_replicas(
    current: i32,
    target: i32,
    resource: &str,
    container: Option<&str>,
    mut metrics: PodMetrics,
    inputs: &Inputs<'_>,
) -> Result<(i32, i32, i64), String> {
    if inputs.pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".to_owned());
    }
    let groups = group_pods(inputs.pods, &metrics, resource, inputs.now, inputs.settings);
    for name in groups.ignored.iter().chain(&groups.unready) {
        metrics.remove(name);
    }
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".to_owned());
    }
    let requests = pod_requests(inputs.pods, container, resource)?;
    let (ratio, utilization, raw) = utilization_ratio(&metrics, &requests, target)?;
    let tolerance = inputs.settings.tolerance;
    let scale_up_with_unready = !groups.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && groups.missing.is_empty() {
        if within(tolerance, ratio) {
            return Ok((current, utilization, raw));
        }
        return Ok((ceil_replicas(ratio * groups.ready as f64), utilization, raw));
    }
    let fill = |value| PodMetric {
        value,
        timestamp: inputs.now,
        window: SignedDuration::ZERO,
    };
    if !groups.missing.is_empty() {
        if ratio < 1.0 {
            // Scaling down: a pod without a sample is taken as using its whole request (or
            // the target, when the target is above 100%).
            let fallback = i64::from(target.max(100));
            for name in &groups.missing {
                let request = requests.get(name).copied().unwrap_or(0);
                metrics.insert(name.clone(), fill(request.saturating_mul(fallback) / 100));
            }
        } else if ratio > 1.0 {
            // Scaling up: it is taken as idle.
            for name in &groups.missing {
                metrics.insert(name.clone(), fill(0));
            }
        }
    }
    if scale_up_with_unready {
        for name in &groups.unready {
            metrics.insert(name.clone(), fill(0));
        }
    }
    let (new_ratio, _, _) = utilization_ratio(&metrics, &requests, target)?;
    if within(tolerance, new_ratio)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        // Too small a change, or the assumptions turned the direction around.
        return Ok((current, utilization, raw));
    }
    let replicas = ceil_replicas(new_ratio * metrics.len() as f64);
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok((current, utilization, raw));
    }
    Ok((replicas, utilization, raw))
}

/// `GetRawResourceReplicas` / `calcPlainMetricReplicas`: the count for an `AverageValue` target
/// (milli-units); also the average usage.
pub(crate) fn raw_resource_replicas(
    current: i32,
    target: i64,
    resource: &str,
    mut metrics: PodMetrics,
    inputs: &Inputs<'_>,
) -> Result<(i32, i64), String> {
    if inputs.pods.is_empty() {
        return Err("no pods returned by selector while calculating replica count".to_owned());
    }
    let groups = group_pods(inputs.pods, &metrics, resource, inputs.now, inputs.settings);
    for name in groups.ignored.iter().chain(&groups.unready) {
        metrics.remove(name);
    }
    if metrics.is_empty() {
        return Err("did not receive metrics for targeted pods (pods might be unready)".to_owned());
    }
    let (ratio, usage) = usage_ratio(&metrics, target);
    let tolerance = inputs.settings.tolerance;
    let scale_up_with_unready = !groups.unready.is_empty() && ratio > 1.0;
    if !scale_up_with_unready && groups.missing.is_empty() {
        if within(tolerance, ratio) {
            return Ok((current, usage));
        }
        return Ok((ceil_replicas(ratio * groups.ready as f64), usage));
    }
    let fill = |value| PodMetric {
        value,
        timestamp: inputs.now,
        window: SignedDuration::ZERO,
    };
    if !groups.missing.is_empty() {
        let assumed = if ratio < 1.0 {
            Some(target)
        } else if ratio > 1.0 {
            Some(0)
        } else {
            None
        };
        if let Some(assumed) = assumed {
            for name in &groups.missing {
                metrics.insert(name.clone(), fill(assumed));
            }
        }
    }
    if scale_up_with_unready {
        for name in &groups.unready {
            metrics.insert(name.clone(), fill(0));
        }
    }
    let (new_ratio, _) = usage_ratio(&metrics, target);
    if within(tolerance, new_ratio)
        || (ratio < 1.0 && new_ratio > 1.0)
        || (ratio > 1.0 && new_ratio < 1.0)
    {
        return Ok((current, usage));
    }
    let replicas = ceil_replicas(new_ratio * metrics.len() as f64);
    if (new_ratio < 1.0 && replicas > current) || (new_ratio > 1.0 && replicas < current) {
        return Ok((current, usage));
    }
    Ok((replicas, usage))
}

/// A Go `time.Duration` string as `metav1.Duration` writes it (`30s`, `1m0s`, `1.5s`, `250ms`).
pub fn parse_go_duration(text: &str) -> Option<SignedDuration> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(SignedDuration::ZERO);
    }
    if rest.is_empty() {
        return None;
    }
    let mut nanos: f64 = 0.0;
    // Each step takes one number and its unit, so the loop ends within `text.len()` steps.
    for _ in 0..text.len() {
        if rest.is_empty() {
            break;
        }
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_end..];
        nanos += number * scale;
    }
    let nanos = if negative { -nanos } else { nanos };
    Some(SignedDuration::from_nanos(nanos as i64))
}

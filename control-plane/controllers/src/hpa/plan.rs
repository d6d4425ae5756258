//! One pass of the HorizontalPodAutoscaler controller (kube-controller-manager's
//! `podautoscaler/horizontal.go`, `reconcileAutoscaler`), pure: from the HPA, its target's scale,
//! the pods the scale selects and their usage, the replica count to set, the status to write
//! and the Events to record. The recommendation and scale-event history the stabilization
//! windows and scaling policies read is the caller's [`History`], kept in memory as upstream
//! keeps it; every time is given.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::{
    api::{
        autoscaling::v2::{
            ContainerResourceMetricStatus, HPAScalingPolicy, HPAScalingRules,
            HorizontalPodAutoscaler, HorizontalPodAutoscalerBehavior,
            HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus, MetricSpec,
            MetricStatus, MetricTarget, MetricValueStatus, ResourceMetricStatus,
        },
        core::v1::Pod,
    },
    apimachinery::pkg::{api::resource::Quantity, apis::meta::v1::Time},
};
use keelson_api::quantity::{Format, Quantity as Exact};

use super::calc::{
    self, Inputs, PodUsage, Settings, plus, raw_resource_replicas, resource_replicas,
};

/// `scaleUpLimitFactor` / `scaleUpLimitMinimum`: without `behavior`, one pass at most doubles
/// the replicas (or goes to 4).
const SCALE_UP_LIMIT_FACTOR: f64 = 2.0;
const SCALE_UP_LIMIT_MINIMUM: f64 = 4.0;

/// What the custom and external metrics APIs would answer: keelson serves neither.
const NO_CUSTOM_METRICS: &str =
    "the server could not find the requested resource (custom.metrics.k8s.io is not served)";
const NO_EXTERNAL_METRICS: &str =
    "the server could not find the requested resource (external.metrics.k8s.io is not served)";

/// An Event to record on the HPA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// A `Warning` (else `Normal`).
    pub warning: bool,
    /// The Event's reason (`SuccessfulRescale`).
    pub reason: &'static str,
    /// The Event's message.
    pub message: String,
}

impl Note {
    fn warning(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            warning: true,
            reason,
            message: message.into(),
        }
    }
}

/// A recommendation made at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Recommendation {
    replicas: i32,
    at: Timestamp,
}

/// A scale change made at a time; `outdated` ones are slots to reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ScaleEvent {
    change: i32,
    at: Timestamp,
    outdated: bool,
}

/// What the controller remembers of one HPA between passes (upstream's `recommendations`,
/// `scaleUpEvents` and `scaleDownEvents`), lost on restart as upstream's is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    recommendations: Vec<Recommendation>,
    scale_up: Vec<ScaleEvent>,
    scale_down: Vec<ScaleEvent>,
}

/// The target's `scale` subresource, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scale {
    /// `spec.replicas`.
    pub spec_replicas: i32,
    /// `status.replicas`.
    pub status_replicas: i32,
    /// `status.selector`, in label-selector text form.
    pub selector: String,
}

/// Everything one pass reads.
#[derive(Debug)]
pub struct Observed<'a> {
    /// The HPA.
    pub hpa: &'a HorizontalPodAutoscaler,
    /// Its target's scale.
    pub scale: &'a Scale,
    /// The pods `scale.selector` selects in the HPA's namespace.
    pub pods: &'a [Pod],
    /// Their PodMetrics from `metrics.k8s.io`, or why the list failed.
    pub metrics: &'a Result<Vec<PodUsage>, String>,
    /// Now.
    pub now: Timestamp,
}

/// What one pass decided, before the scale is written ([`Decision::finish`] completes it).
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The replica count to set when [`Decision::rescale`].
    pub desired: i32,
    /// Whether to write the target's scale.
    pub rescale: bool,
    /// Why (`cpu resource utilization (percentage of request) above target`).
    pub reason: String,
    /// The status so far (conditions set; counts are set by [`Decision::finish`]).
    status: HorizontalPodAutoscalerStatus,
    current: i32,
    metric_statuses: Vec<MetricStatus>,
    /// The metrics could not be computed: this is the error, and nothing is scaled.
    pub failure: Option<String>,
    /// Events recorded whatever the outcome.
    pub notes: Vec<Note>,
}

/// The status to write and the Events to record after a pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The HPA's new status.
    pub status: HorizontalPodAutoscalerStatus,
    /// The Events.
    pub notes: Vec<Note>,
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

/// `setCondition`: sets the condition of `type_`, keeping its transition time while its status
/// does not change.
pub fn set_condition(
    status: &mut HorizontalPodAutoscalerStatus,
    type_: &str,
    value: bool,
    reason: &str,
    message: impl Into<String>,
    now: Timestamp,
) {
    let value = if value { "True" } else { "False" };
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let index = match conditions.iter().position(|c| c.type_ == type_) {
        Some(index) => index,
        None => {
            conditions.push(HorizontalPodAutoscalerCondition {
                type_: type_.to_owned(),
                ..Default::default()
            });
            conditions.len() - 1
        }
    };
    let condition = &mut conditions[index];
    if condition.status != value {
        condition.last_transition_time = Some(time(now));
    }
    condition.status = value.to_owned();
    condition.reason = Some(reason.to_owned());
    condition.message = Some(message.into());
}

/// The status when the target's scale could not be read (`FailedGetScale`), and its Event.
pub fn scale_failed(
    hpa: &HorizontalPodAutoscaler,
    error: &str,
    now: Timestamp,
) -> (HorizontalPodAutoscalerStatus, Note) {
    let mut status = hpa.status.clone().unwrap_or_default();
    set_condition(
        &mut status,
        "AbleToScale",
        false,
        "FailedGetScale",
        format!("the HPA controller was unable to get the target's current scale: {error}"),
        now,
    );
    (status, Note::warning("FailedGetScale", error))
}

fn quantity(milli: i64) -> Quantity {
    Quantity(Exact::from_milli(milli, Format::DecimalSI).to_string())
}

fn milli(q: &Quantity) -> Option<i64> {
    Exact::try_from(q).ok().map(|q| q.milli_value())
}

/// One metric's proposal: replicas, the metric's description, its status.
type Proposal = (i32, String, MetricStatus);

/// One metric's failure: the `ScalingActive` reason, the error (for the condition and the Event).
type Failure = (&'static str, String);

/// All metrics' result: the highest proposal, its metric's description and every status; or
/// the error and the statuses computed.
type MetricsResult = Result<(i32, String, Vec<MetricStatus>), (String, Vec<MetricStatus>)>;

fn unable(reason: &'static str, error: String, notes: &mut Vec<Note>) -> Failure {
    // `getUnableComputeReplicaCountCondition` records the inner error as a Warning.
    notes.push(Note::warning(reason, error.clone()));
    (reason, error)
}

/// A Resource or ContainerResource metric (`computeStatusForResourceMetric`,
/// `computeStatusForContainerResourceMetric`).
fn resource_metric(
    resource: &str,
    container: Option<&str>,
    target: &MetricTarget,
    observed: &Observed<'_>,
    inputs: &Inputs<'_>,
    notes: &mut Vec<Note>,
) -> Result<Proposal, Failure> {
    let namespace = observed.hpa.metadata.namespace.as_deref().unwrap_or("");
    let current = observed.scale.spec_replicas;
    let (reason, kind, what) = match container {
        Some(_) => (
            "FailedGetContainerResourceMetric",
            "container resource",
            "container metric",
        ),
        None => ("FailedGetResourceMetric", "resource", "utilization"),
    };
    let status = |current_value: MetricValueStatus| match container {
        Some(container) => MetricStatus {
            type_: "ContainerResource".to_owned(),
            container_resource: Some(ContainerResourceMetricStatus {
                name: resource.to_owned(),
                container: container.to_owned(),
                current: current_value,
            }),
            ..Default::default()
        },
        None => MetricStatus {
            type_: "Resource".to_owned(),
            resource: Some(ResourceMetricStatus {
                name: resource.to_owned(),
                current: current_value,
            }),
            ..Default::default()
        },
    };
    let metrics = observed
        .metrics
        .as_ref()
        .map_err(|e| format!("unable to fetch metrics from resource metrics API: {e}"))
        .and_then(|usages| calc::resource_metrics(usages, namespace, resource, container))
        .map_err(|e| format!("unable to get metrics for resource {resource}: {e}"));
    if let Some(value) = target.average_value.as_ref() {
        let Some(target_milli) = milli(value) else {
            let error = format!("invalid average value target {:?}", value.0);
            return Err(unable(reason, error, notes));
        };
        let result = metrics
            .and_then(|m| raw_resource_replicas(current, target_milli.max(1), resource, m, inputs));
        return match result {
            Ok((replicas, usage)) => Ok((
                replicas,
                format!("{resource} {kind}"),
                status(MetricValueStatus {
                    average_value: Some(quantity(usage)),
                    ..Default::default()
                }),
            )),
            Err(e) => {
                let (reason, _) = unable(reason, e.clone(), notes);
                Err((reason, format!("failed to get {resource} {what}: {e}")))
            }
        };
    }
    let Some(target_percent) = target.average_utilization else {
        let prefix = if container.is_some() {
            "invalid container resource metric source"
        } else {
            "invalid resource metric source"
        };
        let error = format!("{prefix}: neither a utilization target nor a value target was set");
        return Err(unable(reason, error, notes));
    };
    let result = metrics.and_then(|m| {
        resource_replicas(
            current,
            target_percent.max(1),
            resource,
            container,
            m,
            inputs,
        )
    });
    match result {
        Ok((replicas, utilization, raw)) => Ok((
            replicas,
            format!("{resource} {kind} utilization (percentage of request)"),
            status(MetricValueStatus {
                average_utilization: Some(utilization),
                average_value: Some(quantity(raw)),
                ..Default::default()
            }),
        )),
        Err(e) => {
            let (reason, _) = unable(reason, e.clone(), notes);
            Err((reason, format!("failed to get {resource} {what}: {e}")))
        }
    }
}

/// `computeReplicasForMetric`: one metric's proposal. Pods, Object and External metrics need
/// the custom or external metrics API, which keelson does not serve: they fail as upstream's
/// do when that API is missing.
fn metric_proposal(
    spec: &MetricSpec,
    observed: &Observed<'_>,
    inputs: &Inputs<'_>,
    notes: &mut Vec<Note>,
) -> Result<Proposal, Failure> {
    let namespace = observed.hpa.metadata.namespace.as_deref().unwrap_or("");
    match spec.type_.as_str() {
        "Resource" => match spec.resource.as_ref() {
            Some(source) => {
                resource_metric(&source.name, None, &source.target, observed, inputs, notes)
            }
            None => Err(unable(
                "FailedGetResourceMetric",
                "invalid resource metric source: no resource set".to_owned(),
                notes,
            )),
        },
        "ContainerResource" => match spec.container_resource.as_ref() {
            Some(source) => resource_metric(
                &source.name,
                Some(&source.container),
                &source.target,
                observed,
                inputs,
                notes,
            ),
            None => Err(unable(
                "FailedGetContainerResourceMetric",
                "invalid container resource metric source: no container resource set".to_owned(),
                notes,
            )),
        },
        "Pods" => {
            let name = spec.pods.as_ref().map_or("", |p| p.metric.name.as_str());
            let error = format!(
                "unable to get metric {name}: unable to fetch metrics from custom metrics API: {NO_CUSTOM_METRICS}"
            );
            let (reason, error) = unable("FailedGetPodsMetric", error, notes);
            Err((reason, format!("failed to get pods metric value: {error}")))
        }
        "Object" => {
            let (name, kind, object) = spec.object.as_ref().map_or(("", "", ""), |o| {
                (
                    o.metric.name.as_str(),
                    o.described_object.kind.as_str(),
                    o.described_object.name.as_str(),
                )
            });
            let error = format!(
                "unable to get metric {name}:  on {kind} {namespace}/{object} unable to fetch metrics from custom metrics API: {NO_CUSTOM_METRICS}"
            );
            let (reason, error) = unable("FailedGetObjectMetric", error, notes);
            Err((
                reason,
                format!("failed to get object metric value: {error}"),
            ))
        }
        "External" => {
            let name = spec
                .external
                .as_ref()
                .map_or("", |e| e.metric.name.as_str());
            let error = format!(
                "unable to get external metric {namespace}/{name}: unable to fetch metrics from external metrics API: {NO_EXTERNAL_METRICS}"
            );
            let (reason, error) = unable("FailedGetExternalMetric", error, notes);
            Err((
                reason,
                format!("failed to get external metric {name}: {error}"),
            ))
        }
        other => Err(unable(
            "InvalidMetricSourceType",
            format!("unknown metric source type {other:?}"),
            notes,
        )),
    }
}

/// `GenerateHPAScaleUpRules` / `GenerateHPAScaleDownRules` (pkg/apis/autoscaling/v2/defaults.go),
/// with the scale-down window from the controller's flag when unset.
fn filled_rules(
    rules: Option<&HPAScalingRules>,
    up: bool,
    settings: &Settings,
) -> (i32, String, Vec<HPAScalingPolicy>) {
    let policy = |type_: &str, value, period_seconds| HPAScalingPolicy {
        type_: type_.to_owned(),
        value,
        period_seconds,
    };
    let default_policies = if up {
        vec![policy("Pods", 4, 15), policy("Percent", 100, 15)]
    } else {
        vec![policy("Percent", 100, 15)]
    };
    let default_window = if up {
        0
    } else {
        i32::try_from(settings.downscale_stabilization.as_secs()).unwrap_or(i32::MAX)
    };
    (
        rules
            .and_then(|r| r.stabilization_window_seconds)
            .unwrap_or(default_window),
        rules
            .and_then(|r| r.select_policy.clone())
            .unwrap_or_else(|| "Max".to_owned()),
        rules
            .and_then(|r| r.policies.clone())
            .unwrap_or(default_policies),
    )
}

/// The defaulted rules of one direction.
struct Rules {
    window: i32,
    select: String,
    policies: Vec<HPAScalingPolicy>,
}

fn rules_of(behavior: &HorizontalPodAutoscalerBehavior, up: bool, settings: &Settings) -> Rules {
    let given = if up {
        behavior.scale_up.as_ref()
    } else {
        behavior.scale_down.as_ref()
    };
    let (window, select, policies) = filled_rules(given, up, settings);
    Rules {
        window,
        select,
        policies,
    }
}

fn seconds(s: i32) -> SignedDuration {
    SignedDuration::from_secs(i64::from(s))
}

/// `getReplicasChangePerPeriod`: the replicas added (or removed) within the last `period`.
fn change_in_period(period: i32, events: &[ScaleEvent], now: Timestamp) -> i32 {
    let cutoff = plus(now, -seconds(period));
    events
        .iter()
        .filter(|e| e.at > cutoff)
        .map(|e| e.change)
        .fold(0, i32::saturating_add)
}

/// The replicas at the start of a policy's period: now, less what was added within it, plus
/// what was removed.
fn period_start(current: i32, period: i32, history: &History, now: Timestamp) -> i32 {
    current
        .saturating_sub(change_in_period(period, &history.scale_up, now))
        .saturating_add(change_in_period(period, &history.scale_down, now))
}

/// `calculateScaleUpLimitWithScalingRules`: the most replicas the policies allow now.
fn scale_up_limit(current: i32, history: &History, rules: &Rules, now: Timestamp) -> i32 {
    if rules.select == "Disabled" {
        return current;
    }
    let pick_min = rules.select == "Min";
    let mut result = if pick_min { i32::MAX } else { i32::MIN };
    for policy in &rules.policies {
        let start = period_start(current, policy.period_seconds, history, now);
        let proposed = match policy.type_.as_str() {
            "Pods" => start.saturating_add(policy.value),
            // Rounded up, or a small count would never grow.
            "Percent" => ceil_i32(f64::from(start) * (1.0 + f64::from(policy.value) / 100.0)),
            _ => 0,
        };
        result = if pick_min {
            result.min(proposed)
        } else {
            result.max(proposed)
        };
    }
    result
}

/// `calculateScaleDownLimitWithBehaviors`: the fewest replicas the policies allow now.
fn scale_down_limit(current: i32, history: &History, rules: &Rules, now: Timestamp) -> i32 {
    if rules.select == "Disabled" {
        return current;
    }
    let pick_max = rules.select == "Min";
    let mut result = if pick_max { i32::MIN } else { i32::MAX };
    for policy in &rules.policies {
        let start = period_start(current, policy.period_seconds, history, now);
        let proposed = match policy.type_.as_str() {
            "Pods" => start.saturating_sub(policy.value),
            "Percent" => trunc_i32(f64::from(start) * (1.0 - f64::from(policy.value) / 100.0)),
            _ => 0,
        };
        result = if pick_max {
            result.max(proposed)
        } else {
            result.min(proposed)
        };
    }
    result
}

fn ceil_i32(x: f64) -> i32 {
    trunc_i32(x.ceil())
}

fn trunc_i32(x: f64) -> i32 {
    if x >= f64::from(i32::MAX) {
        i32::MAX
    } else if x <= f64::from(i32::MIN) {
        i32::MIN
    } else {
        x as i32
    }
}

impl History {
    /// `recordInitialRecommendation`.
    fn record_initial(&mut self, current: i32, now: Timestamp) {
        if self.recommendations.is_empty() {
            self.recommendations.push(Recommendation {
                replicas: current,
                at: now,
            });
        }
    }

    /// Stores `recommendation`, reusing the slot of one older than `obsolete`.
    fn store_recommendation(&mut self, replicas: i32, obsolete: Timestamp, now: Timestamp) {
        let new = Recommendation { replicas, at: now };
        match self.recommendations.iter().rposition(|r| r.at < obsolete) {
            Some(index) => self.recommendations[index] = new,
            None => self.recommendations.push(new),
        }
    }

    /// `stabilizeRecommendation` (no `behavior`): the highest recommendation of the
    /// scale-down window.
    fn stabilize(&mut self, desired: i32, window: SignedDuration, now: Timestamp) -> i32 {
        let cutoff = plus(now, -window);
        let highest = self
            .recommendations
            .iter()
            .filter(|r| r.at >= cutoff)
            .map(|r| r.replicas)
            .fold(desired, i32::max);
        self.store_recommendation(desired, cutoff, now);
        highest
    }

    /// `stabilizeRecommendationWithBehaviors`: scaling up takes the lowest recommendation of
    /// the scale-up window, scaling down the highest of the scale-down window.
    fn stabilize_with_behavior(
        &mut self,
        current: i32,
        desired: i32,
        up: &Rules,
        down: &Rules,
        now: Timestamp,
    ) -> (i32, &'static str, &'static str) {
        let scaling_up = desired >= current;
        let (window, reason, message) = if scaling_up {
            (
                up.window,
                "ScaleUpStabilized",
                "recent recommendations were lower than current one, applying the lowest recent recommendation",
            )
        } else {
            (
                down.window,
                "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest recent recommendation",
            )
        };
        let cutoff = plus(now, -seconds(window));
        let obsolete = plus(now, -seconds(up.window.max(down.window)));
        let mut recommendation = desired;
        for r in &self.recommendations {
            if r.at > cutoff {
                recommendation = if scaling_up {
                    recommendation.min(r.replicas)
                } else {
                    recommendation.max(r.replicas)
                };
            }
        }
        self.store_recommendation(desired, obsolete, now);
        (recommendation, reason, message)
    }

    /// `storeScaleEvent`: remembers a scale change for the rate policies (only with
    /// `behavior`, as upstream).
    pub fn store_scale_event(
        &mut self,
        behavior: Option<&HorizontalPodAutoscalerBehavior>,
        previous: i32,
        new: i32,
        settings: &Settings,
        now: Timestamp,
    ) {
        let Some(behavior) = behavior else {
            return;
        };
        let up = new > previous;
        let rules = rules_of(behavior, up, settings);
        let longest = rules
            .policies
            .iter()
            .map(|p| p.period_seconds)
            .fold(0, i32::max);
        let cutoff = plus(now, -seconds(longest));
        let events = if up {
            &mut self.scale_up
        } else {
            &mut self.scale_down
        };
        for event in events.iter_mut() {
            if event.at < cutoff {
                event.outdated = true;
            }
        }
        let event = ScaleEvent {
            change: (new - previous).saturating_abs(),
            at: now,
            outdated: false,
        };
        match events.iter().rposition(|e| e.outdated) {
            Some(index) => events[index] = event,
            None => events.push(event),
        }
    }
}

/// What normalizing a proposal reads (upstream's `NormalizationArg`).
struct Normalization<'a> {
    current: i32,
    desired: i32,
    min: i32,
    max: i32,
    settings: &'a Settings,
    now: Timestamp,
}

/// `normalizeDesiredReplicas` (no `behavior`).
fn normalize(
    status: &mut HorizontalPodAutoscalerStatus,
    history: &mut History,
    args: &Normalization<'_>,
) -> i32 {
    let &Normalization {
        current,
        desired,
        min,
        max,
        settings,
        now,
    } = args;
    let stabilized = history.stabilize(desired, settings.downscale_stabilization, now);
    if stabilized == desired {
        set_condition(
            status,
            "AbleToScale",
            true,
            "ReadyForNewScale",
            "recommended size matches current size",
            now,
        );
    } else {
        set_condition(
            status,
            "AbleToScale",
            true,
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest recent recommendation",
            now,
        );
    }
    // `convertDesiredReplicasWithRules`.
    let scale_up_limit =
        trunc_i32((SCALE_UP_LIMIT_FACTOR * f64::from(current)).max(SCALE_UP_LIMIT_MINIMUM));
    let (maximum, over_reason, over_message) = if max > scale_up_limit {
        (
            scale_up_limit,
            "ScaleUpLimit",
            "the desired replica count is increasing faster than the maximum scale rate",
        )
    } else {
        (
            max,
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count",
        )
    };
    let (result, reason, message) = if stabilized < min {
        (
            min,
            "TooFewReplicas",
            "the desired replica count is less than the minimum replica count",
        )
    } else if stabilized > maximum {
        (maximum, over_reason, over_message)
    } else {
        (
            stabilized,
            "DesiredWithinRange",
            "the desired count is within the acceptable range",
        )
    };
    set_condition(
        status,
        "ScalingLimited",
        result != stabilized,
        reason,
        message,
        now,
    );
    result
}

/// `normalizeDesiredReplicasWithBehaviors`.
fn normalize_with_behavior(
    status: &mut HorizontalPodAutoscalerStatus,
    history: &mut History,
    behavior: &HorizontalPodAutoscalerBehavior,
    args: &Normalization<'_>,
) -> i32 {
    let &Normalization {
        current,
        desired,
        min,
        max,
        settings,
        now,
    } = args;
    let up = rules_of(behavior, true, settings);
    let down = rules_of(behavior, false, settings);
    let (stabilized, reason, message) =
        history.stabilize_with_behavior(current, desired, &up, &down, now);
    if stabilized == desired {
        set_condition(
            status,
            "AbleToScale",
            true,
            "ReadyForNewScale",
            "recommended size matches current size",
            now,
        );
    } else {
        set_condition(status, "AbleToScale", true, reason, message, now);
    }
    // `convertDesiredReplicasWithBehaviorRate`.
    let mut result = (
        stabilized,
        "DesiredWithinRange",
        "the desired count is within the acceptable range",
    );
    if stabilized > current {
        let limit = scale_up_limit(current, history, &up, now).max(current);
        let (allowed, reason, message) = if max > limit {
            (
                limit,
                "ScaleUpLimit",
                "the desired replica count is increasing faster than the maximum scale rate",
            )
        } else {
            (
                max,
                "TooManyReplicas",
                "the desired replica count is more than the maximum replica count",
            )
        };
        if stabilized > allowed {
            result = (allowed, reason, message);
        }
    } else if stabilized < current {
        let limit = scale_down_limit(current, history, &down, now).min(current);
        let (allowed, reason, message) = if min < limit {
            (
                limit,
                "ScaleDownLimit",
                "the desired replica count is decreasing faster than the maximum scale rate",
            )
        } else {
            (
                min,
                "TooFewReplicas",
                "the desired replica count is less than the minimum replica count",
            )
        };
        if stabilized < allowed {
            result = (allowed, reason, message);
        }
    }
    let (replicas, reason, message) = result;
    set_condition(
        status,
        "ScalingLimited",
        replicas != stabilized,
        reason,
        message,
        now,
    );
    replicas
}

/// One pass, up to the scale write (`reconcileAutoscaler` after the scale was read).
pub fn decide(observed: &Observed<'_>, history: &mut History, settings: &Settings) -> Decision {
    let now = observed.now;
    let hpa = observed.hpa;
    let spec = hpa.spec.clone().unwrap_or_default();
    let mut status = hpa.status.clone().unwrap_or_default();
    let mut notes = Vec::new();
    set_condition(
        &mut status,
        "AbleToScale",
        true,
        "SucceededGetScale",
        "the HPA controller was able to get the target's current scale",
        now,
    );
    let current = observed.scale.spec_replicas;
    history.record_initial(current, now);
    let min = spec.min_replicas.unwrap_or(1);
    let max = spec.max_replicas;
    let mut decision = Decision {
        desired: 0,
        rescale: true,
        reason: String::new(),
        status,
        current,
        metric_statuses: Vec::new(),
        failure: None,
        notes: Vec::new(),
    };
    if current == 0 && min != 0 {
        decision.rescale = false;
        set_condition(
            &mut decision.status,
            "ScalingActive",
            false,
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
            now,
        );
    } else if current > max {
        decision.reason = "Current number of replicas above Spec.MaxReplicas".to_owned();
        decision.desired = max;
    } else if current < min {
        decision.reason = "Current number of replicas below Spec.MinReplicas".to_owned();
        decision.desired = min;
    } else {
        match metric_replicas(
            observed,
            &spec.metrics.unwrap_or_default(),
            &mut decision.status,
            &mut notes,
            settings,
        ) {
            Err((error, statuses)) => {
                decision.metric_statuses = statuses;
                decision.rescale = false;
                notes.push(Note::warning("FailedComputeMetricsReplicas", error.clone()));
                decision.failure = Some(error);
                decision.notes = notes;
                return decision;
            }
            Ok((replicas, metric, statuses)) => {
                decision.metric_statuses = statuses;
                let mut rescale_metric = String::new();
                if replicas > decision.desired {
                    decision.desired = replicas;
                    rescale_metric = metric;
                }
                if decision.desired > current {
                    decision.reason = format!("{rescale_metric} above target");
                }
                if decision.desired < current {
                    decision.reason = "All metrics below target".to_owned();
                }
                let args = Normalization {
                    current,
                    desired: decision.desired,
                    min,
                    max,
                    settings,
                    now,
                };
                decision.desired = match spec.behavior.as_ref() {
                    None => normalize(&mut decision.status, history, &args),
                    Some(behavior) => {
                        normalize_with_behavior(&mut decision.status, history, behavior, &args)
                    }
                };
                decision.rescale = decision.desired != current;
            }
        }
    }
    decision.notes = notes;
    decision
}

/// `computeReplicasForMetrics`: the highest proposal over the metrics, its description and
/// the metrics' statuses; fails when every metric failed, or some did and the rest would
/// scale down.
fn metric_replicas(
    observed: &Observed<'_>,
    specs: &[MetricSpec],
    status: &mut HorizontalPodAutoscalerStatus,
    notes: &mut Vec<Note>,
    settings: &Settings,
) -> MetricsResult {
    let now = observed.now;
    let selector = observed.scale.selector.as_str();
    if selector.is_empty() {
        notes.push(Note::warning("SelectorRequired", "selector is required"));
        set_condition(
            status,
            "ScalingActive",
            false,
            "InvalidSelector",
            "the HPA target's scale is missing a selector",
            now,
        );
        return Err(("selector is required".to_owned(), Vec::new()));
    }
    if let Err(e) = keelson_api::selectors::LabelSelector::parse(selector) {
        let message =
            format!("couldn't convert selector into a corresponding internal selector object: {e}");
        notes.push(Note::warning("InvalidSelector", message.clone()));
        set_condition(
            status,
            "ScalingActive",
            false,
            "InvalidSelector",
            message.clone(),
            now,
        );
        return Err((message, Vec::new()));
    }
    let inputs = Inputs {
        pods: observed.pods,
        now,
        settings,
    };
    let mut statuses = Vec::new();
    let mut best: Option<(i32, String)> = None;
    let mut first_failure: Option<Failure> = None;
    let mut failures = 0_usize;
    for spec in specs {
        match metric_proposal(spec, observed, &inputs, notes) {
            Ok((replicas, name, metric_status)) => {
                statuses.push(metric_status);
                if best.as_ref().is_none_or(|(r, _)| *r == 0 || replicas > *r) {
                    best = Some((replicas, name));
                }
            }
            Err(failure) => {
                failures += 1;
                first_failure.get_or_insert(failure);
            }
        }
    }
    let (replicas, name) = best.unwrap_or((0, String::new()));
    if failures >= specs.len() || (failures > 0 && replicas < observed.scale.spec_replicas) {
        let (reason, error) = first_failure.unwrap_or((
            "InvalidMetricSourceType",
            "no metrics are configured".to_owned(),
        ));
        set_condition(
            status,
            "ScalingActive",
            false,
            reason,
            format!("the HPA was unable to compute the replica count: {error}"),
            now,
        );
        return Err((
            format!(
                "invalid metrics ({failures} invalid out of {}), first error is: {error}",
                specs.len()
            ),
            statuses,
        ));
    }
    set_condition(
        status,
        "ScalingActive",
        true,
        "ValidMetricFound",
        format!("the HPA was able to successfully calculate a replica count from {name}"),
        now,
    );
    Ok((replicas, name, statuses))
}

impl Decision {
    /// Completes the pass: `update` is the result of writing the target's scale (`None` when
    /// [`Decision::rescale`] is false and nothing was written). Sets the counts, the last scale
    /// time and, on a rescale, `AbleToScale` and the `SuccessfulRescale` / `FailedRescale`
    /// Event; a successful rescale is remembered in `history` for the rate policies.
    pub fn finish(
        self,
        update: Option<Result<(), String>>,
        behavior: Option<&HorizontalPodAutoscalerBehavior>,
        history: &mut History,
        settings: &Settings,
        now: Timestamp,
    ) -> Outcome {
        let Self {
            desired,
            rescale,
            reason,
            mut status,
            current,
            metric_statuses,
            failure,
            mut notes,
        } = self;
        let current_metrics = (!metric_statuses.is_empty()).then_some(metric_statuses);
        if failure.is_some() {
            // `setCurrentReplicasAndMetricsInStatus`: the desired count stays as it was.
            status.current_replicas = Some(current);
            status.current_metrics = current_metrics;
            return Outcome { status, notes };
        }
        let mut desired = desired;
        let mut scaled = false;
        match update {
            Some(Err(error)) if rescale => {
                notes.push(Note::warning(
                    "FailedRescale",
                    format!("New size: {desired}; reason: {reason}; error: {error}"),
                ));
                set_condition(
                    &mut status,
                    "AbleToScale",
                    false,
                    "FailedUpdateScale",
                    format!("the HPA controller was unable to update the target scale: {error}"),
                    now,
                );
                status.current_replicas = Some(current);
                status.current_metrics = current_metrics;
                return Outcome { status, notes };
            }
            Some(Ok(())) if rescale => {
                set_condition(
                    &mut status,
                    "AbleToScale",
                    true,
                    "SucceededRescale",
                    format!("the HPA controller was able to update the target scale to {desired}"),
                    now,
                );
                notes.push(Note {
                    warning: false,
                    reason: "SuccessfulRescale",
                    message: format!("New size: {desired}; reason: {reason}"),
                });
                history.store_scale_event(behavior, current, desired, settings, now);
                scaled = true;
            }
            _ => desired = current,
        }
        status.current_replicas = Some(current);
        status.desired_replicas = desired;
        status.current_metrics = current_metrics;
        if scaled {
            status.last_scale_time = Some(time(now));
        }
        Outcome { status, notes }
    }
}

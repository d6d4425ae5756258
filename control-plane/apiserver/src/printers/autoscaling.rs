//! autoscaling/v2 `HorizontalPodAutoscaler` and policy/v1 `PodDisruptionBudget`.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{AGE, Column, NAME, age, col, int, int_or, list, name, quantity, text};

pub(super) const HORIZONTAL_POD_AUTOSCALER: &[Column] = &[
    NAME,
    col(
        "Reference",
        "string",
        0,
        "scaleTargetRef points to the target resource to scale, and is used to the pods for \
         which metrics should be collected, as well as to actually change the replica count.",
    ),
    col(
        "Targets",
        "string",
        0,
        "metrics contains the specifications for which to use to calculate the desired replica \
         count (the maximum replica count across all metrics will be used).",
    ),
    col(
        "MinPods",
        "string",
        0,
        "minReplicas is the lower limit for the number of replicas to which the autoscaler can \
         scale down.",
    ),
    col(
        "MaxPods",
        "string",
        0,
        "maxReplicas is the upper limit for the number of replicas to which the autoscaler can \
         scale up.",
    ),
    col(
        "Replicas",
        "string",
        0,
        "currentReplicas is current number of replicas of pods managed by this autoscaler, as \
         last seen by the autoscaler.",
    ),
    AGE,
];

/// At most two metrics in Targets, then `+ N more...`.
const METRICS_MAX: usize = 2;

/// What an absent `*resource.Quantity` prints as in Go.
const NIL_QUANTITY: &str = "<nil>";

/// One metric of Targets as `formatHPAMetrics` writes it: `current/target`, with the resource
/// name in front for (container) resource metrics and ` (avg)` after average values of object
/// and external metrics. The current value is read from the status metric at the same index,
/// `<unknown>` when there is none yet.
fn format_metric(spec: &Value, status: Option<&Value>) -> String {
    const UNKNOWN: &str = "<unknown>";
    let source = |member: &str| status.and_then(|s| s.get(member)).filter(|s| s.is_object());
    match text(spec, "/type") {
        kind @ ("External" | "Object") => {
            let member = if kind == "External" {
                "external"
            } else {
                "object"
            };
            let target = format!("/{member}/target");
            let current = source(member);
            if spec.pointer(&format!("{target}/averageValue")).is_some() {
                let current = current
                    .filter(|c| c.pointer("/current/averageValue").is_some())
                    .map_or_else(
                        || UNKNOWN.to_owned(),
                        |c| quantity(c, "/current/averageValue", NIL_QUANTITY),
                    );
                let target = quantity(spec, &format!("{target}/averageValue"), NIL_QUANTITY);
                format!("{current}/{target} (avg)")
            } else {
                let current = current.map_or_else(
                    || UNKNOWN.to_owned(),
                    |c| quantity(c, "/current/value", NIL_QUANTITY),
                );
                let target = quantity(spec, &format!("{target}/value"), NIL_QUANTITY);
                format!("{current}/{target}")
            }
        }
        "Pods" => {
            let current = source("pods").map_or_else(
                || UNKNOWN.to_owned(),
                |c| quantity(c, "/current/averageValue", NIL_QUANTITY),
            );
            let target = quantity(spec, "/pods/target/averageValue", NIL_QUANTITY);
            format!("{current}/{target}")
        }
        kind @ ("Resource" | "ContainerResource") => {
            let member = if kind == "Resource" {
                "resource"
            } else {
                "containerResource"
            };
            let resource = text(spec, &format!("/{member}/name"));
            let target = format!("/{member}/target");
            let current = source(member);
            if spec.pointer(&format!("{target}/averageValue")).is_some() {
                let current = current.map_or_else(
                    || UNKNOWN.to_owned(),
                    |c| quantity(c, "/current/averageValue", NIL_QUANTITY),
                );
                let target = quantity(spec, &format!("{target}/averageValue"), NIL_QUANTITY);
                format!("{resource}: {current}/{target}")
            } else {
                let current = current
                    .and_then(|c| c.pointer("/current/averageUtilization"))
                    .and_then(Value::as_i64)
                    .map_or_else(|| UNKNOWN.to_owned(), |u| format!("{u}%"));
                let target = spec
                    .pointer(&format!("{target}/averageUtilization"))
                    .and_then(Value::as_i64)
                    .map_or_else(|| "<auto>".to_owned(), |u| format!("{u}%"));
                format!("{resource}: {current}/{target}")
            }
        }
        _ => "<unknown type>".to_owned(),
    }
}

/// The Targets column. An autoscaler without metrics gets Kubernetes' default one, 80% CPU
/// utilization (autoscaling/v2 defaulting), so it reads `cpu: <unknown>/80%` until measured.
fn format_metrics(hpa: &Value) -> String {
    let default = [json!({"type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}})];
    let specs = match list(hpa, "/spec/metrics") {
        [] => &default[..],
        specs => specs,
    };
    let statuses = list(hpa, "/status/currentMetrics");
    let shown: Vec<String> = specs
        .iter()
        .take(METRICS_MAX)
        .enumerate()
        .map(|(i, spec)| format_metric(spec, statuses.get(i)))
        .collect();
    let text = shown.join(", ");
    if specs.len() > METRICS_MAX {
        format!("{text} + {} more...", specs.len() - METRICS_MAX)
    } else {
        text
    }
}

/// HorizontalPodAutoscaler: Name, Reference (`Kind/name`), Targets, MinPods, MaxPods,
/// Replicas, Age.
pub(super) fn horizontal_pod_autoscaler_cells(hpa: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(hpa),
        json!(format!(
            "{}/{}",
            text(hpa, "/spec/scaleTargetRef/kind"),
            text(hpa, "/spec/scaleTargetRef/name")
        )),
        json!(format_metrics(hpa)),
        json!(int_or(hpa, "/spec/minReplicas", 1).to_string()),
        json!(int(hpa, "/spec/maxReplicas")),
        json!(int(hpa, "/status/currentReplicas")),
        age(hpa, now),
    ]
}

pub(super) const POD_DISRUPTION_BUDGET: &[Column] = &[
    NAME,
    col(
        "Min Available",
        "string",
        0,
        "The minimum number of pods that must be available.",
    ),
    col(
        "Max Unavailable",
        "string",
        0,
        "The maximum number of pods that may be unavailable.",
    ),
    col(
        "Allowed Disruptions",
        "integer",
        0,
        "Calculated number of pods that may be disrupted at this time.",
    ),
    AGE,
];

/// An `IntOrString` field as Go prints it (`2` or `50%`), `N/A` when unset.
fn int_or_string(value: &Value, pointer: &str) -> String {
    match value.pointer(pointer) {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => "N/A".to_owned(),
    }
}

/// PodDisruptionBudget: Name, Min Available, Max Unavailable, Allowed Disruptions, Age.
pub(super) fn pod_disruption_budget_cells(pdb: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(pdb),
        json!(int_or_string(pdb, "/spec/minAvailable")),
        json!(int_or_string(pdb, "/spec/maxUnavailable")),
        json!(int(pdb, "/status/disruptionsAllowed")),
        age(pdb, now),
    ]
}

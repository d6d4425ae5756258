//! HorizontalPodAutoscalers in both versions keelson serves: autoscaling/v2 (the stored form)
//! and autoscaling/v1, which `kubectl autoscale` (1.27 to 1.33) creates. As
//! `pkg/apis/autoscaling/v1/conversion.go` converts them:
//!
//! - v1 `spec.targetCPUUtilizationPercentage` is the v2 metric `Resource` cpu with an
//!   `Utilization` target; v1 `status.currentCPUUtilizationPercentage` its current utilization;
//! - what v1 has no field for travels in annotations, in the v1 "alpha" metric form:
//!   the other metrics in `autoscaling.alpha.kubernetes.io/metrics`, their current values in
//!   `autoscaling.alpha.kubernetes.io/current-metrics`, the conditions in
//!   `autoscaling.alpha.kubernetes.io/conditions` and `behavior` in
//!   `autoscaling.alpha.kubernetes.io/behavior`; converting back to v2 takes them out again.

use serde_json::{Map, Value, json};

/// The annotation holding the metrics v1 has no field for.
pub const METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";
/// The annotation holding the current values of those metrics.
pub const CURRENT_METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
/// The annotation holding the status conditions.
pub const CONDITIONS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/conditions";
/// The annotation holding `spec.behavior`.
pub const BEHAVIOR_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/behavior";

const ANNOTATIONS: [&str; 4] = [
    METRICS_ANNOTATION,
    CURRENT_METRICS_ANNOTATION,
    CONDITIONS_ANNOTATION,
    BEHAVIOR_ANNOTATION,
];

fn is_cpu_utilization(metric: &Value) -> bool {
    metric.get("type").and_then(Value::as_str) == Some("Resource")
        && metric.pointer("/resource/name").and_then(Value::as_str) == Some("cpu")
        && metric
            .pointer("/resource/target/type")
            .and_then(Value::as_str)
            == Some("Utilization")
        && metric
            .pointer("/resource/target/averageUtilization")
            .is_some()
}

fn insert_some(map: &mut Map<String, Value>, key: &str, value: Option<&Value>) {
    if let Some(value) = value.filter(|v| !v.is_null()) {
        map.insert(key.to_owned(), value.clone());
    }
}

/// A v2 MetricSpec in the v1 alpha form.
fn spec_to_alpha(metric: &Value) -> Value {
    let type_ = metric.get("type").and_then(Value::as_str).unwrap_or("");
    let mut out = Map::new();
    out.insert("type".into(), type_.into());
    let target = |source: &Value| source.get("target").cloned().unwrap_or(Value::Null);
    match type_ {
        "Resource" | "ContainerResource" => {
            let key = if type_ == "Resource" {
                "resource"
            } else {
                "containerResource"
            };
            let source = metric.get(key).cloned().unwrap_or(Value::Null);
            let t = target(&source);
            let mut inner = Map::new();
            insert_some(&mut inner, "name", source.get("name"));
            insert_some(&mut inner, "container", source.get("container"));
            insert_some(
                &mut inner,
                "targetAverageUtilization",
                t.get("averageUtilization"),
            );
            insert_some(&mut inner, "targetAverageValue", t.get("averageValue"));
            out.insert(key.into(), Value::Object(inner));
        }
        "Pods" => {
            let source = metric.get("pods").cloned().unwrap_or(Value::Null);
            let mut inner = Map::new();
            insert_some(&mut inner, "metricName", source.pointer("/metric/name"));
            insert_some(&mut inner, "selector", source.pointer("/metric/selector"));
            insert_some(
                &mut inner,
                "targetAverageValue",
                target(&source).get("averageValue"),
            );
            out.insert("pods".into(), Value::Object(inner));
        }
        "Object" => {
            let source = metric.get("object").cloned().unwrap_or(Value::Null);
            let t = target(&source);
            let mut inner = Map::new();
            insert_some(&mut inner, "target", source.get("describedObject"));
            insert_some(&mut inner, "metricName", source.pointer("/metric/name"));
            insert_some(&mut inner, "selector", source.pointer("/metric/selector"));
            insert_some(&mut inner, "targetValue", t.get("value"));
            insert_some(&mut inner, "averageValue", t.get("averageValue"));
            out.insert("object".into(), Value::Object(inner));
        }
        "External" => {
            let source = metric.get("external").cloned().unwrap_or(Value::Null);
            let t = target(&source);
            let mut inner = Map::new();
            insert_some(&mut inner, "metricName", source.pointer("/metric/name"));
            insert_some(
                &mut inner,
                "metricSelector",
                source.pointer("/metric/selector"),
            );
            insert_some(&mut inner, "targetValue", t.get("value"));
            insert_some(&mut inner, "targetAverageValue", t.get("averageValue"));
            out.insert("external".into(), Value::Object(inner));
        }
        _ => {}
    }
    Value::Object(out)
}

/// The v2 target of alpha `value` / `averageValue` / `averageUtilization` fields.
fn target_of(value: Option<&Value>, average: Option<&Value>, utilization: Option<&Value>) -> Value {
    let mut t = Map::new();
    if let Some(u) = utilization.filter(|v| !v.is_null()) {
        t.insert("type".into(), "Utilization".into());
        t.insert("averageUtilization".into(), u.clone());
    } else if let Some(a) = average.filter(|v| !v.is_null()) {
        t.insert("type".into(), "AverageValue".into());
        t.insert("averageValue".into(), a.clone());
    } else if let Some(v) = value.filter(|v| !v.is_null()) {
        t.insert("type".into(), "Value".into());
        t.insert("value".into(), v.clone());
    }
    Value::Object(t)
}

fn identifier(name: Option<&Value>, selector: Option<&Value>) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), name.cloned().unwrap_or_else(|| "".into()));
    insert_some(&mut m, "selector", selector);
    Value::Object(m)
}

/// A v1 alpha MetricSpec in the v2 form.
fn alpha_to_spec(metric: &Value) -> Value {
    let type_ = metric.get("type").and_then(Value::as_str).unwrap_or("");
    match type_ {
        "Resource" | "ContainerResource" => {
            let key = if type_ == "Resource" {
                "resource"
            } else {
                "containerResource"
            };
            let s = metric.get(key).cloned().unwrap_or(Value::Null);
            let mut inner = Map::new();
            insert_some(&mut inner, "name", s.get("name"));
            insert_some(&mut inner, "container", s.get("container"));
            inner.insert(
                "target".into(),
                target_of(
                    None,
                    s.get("targetAverageValue"),
                    s.get("targetAverageUtilization"),
                ),
            );
            json!({"type": type_, key: inner})
        }
        "Pods" => {
            let s = metric.get("pods").cloned().unwrap_or(Value::Null);
            json!({"type": "Pods", "pods": {
                "metric": identifier(s.get("metricName"), s.get("selector")),
                "target": target_of(None, s.get("targetAverageValue"), None),
            }})
        }
        "Object" => {
            let s = metric.get("object").cloned().unwrap_or(Value::Null);
            json!({"type": "Object", "object": {
                "describedObject": s.get("target").cloned().unwrap_or_else(|| json!({})),
                "metric": identifier(s.get("metricName"), s.get("selector")),
                "target": target_of(s.get("targetValue"), s.get("averageValue"), None),
            }})
        }
        "External" => {
            let s = metric.get("external").cloned().unwrap_or(Value::Null);
            json!({"type": "External", "external": {
                "metric": identifier(s.get("metricName"), s.get("metricSelector")),
                "target": target_of(s.get("targetValue"), s.get("targetAverageValue"), None),
            }})
        }
        _ => metric.clone(),
    }
}

/// A v2 MetricStatus in the v1 alpha form.
fn status_to_alpha(metric: &Value) -> Value {
    let type_ = metric.get("type").and_then(Value::as_str).unwrap_or("");
    let mut out = Map::new();
    out.insert("type".into(), type_.into());
    let current = |source: &Value| source.get("current").cloned().unwrap_or(Value::Null);
    match type_ {
        "Resource" | "ContainerResource" => {
            let key = if type_ == "Resource" {
                "resource"
            } else {
                "containerResource"
            };
            let s = metric.get(key).cloned().unwrap_or(Value::Null);
            let c = current(&s);
            let mut inner = Map::new();
            insert_some(&mut inner, "name", s.get("name"));
            insert_some(&mut inner, "container", s.get("container"));
            insert_some(
                &mut inner,
                "currentAverageUtilization",
                c.get("averageUtilization"),
            );
            inner.insert(
                "currentAverageValue".into(),
                c.get("averageValue").cloned().unwrap_or_else(|| "0".into()),
            );
            out.insert(key.into(), Value::Object(inner));
        }
        "Pods" => {
            let s = metric.get("pods").cloned().unwrap_or(Value::Null);
            let mut inner = Map::new();
            insert_some(&mut inner, "metricName", s.pointer("/metric/name"));
            insert_some(&mut inner, "selector", s.pointer("/metric/selector"));
            insert_some(
                &mut inner,
                "currentAverageValue",
                current(&s).get("averageValue"),
            );
            out.insert("pods".into(), Value::Object(inner));
        }
        "Object" => {
            let s = metric.get("object").cloned().unwrap_or(Value::Null);
            let c = current(&s);
            let mut inner = Map::new();
            insert_some(&mut inner, "target", s.get("describedObject"));
            insert_some(&mut inner, "metricName", s.pointer("/metric/name"));
            insert_some(&mut inner, "selector", s.pointer("/metric/selector"));
            insert_some(&mut inner, "currentValue", c.get("value"));
            insert_some(&mut inner, "averageValue", c.get("averageValue"));
            out.insert("object".into(), Value::Object(inner));
        }
        "External" => {
            let s = metric.get("external").cloned().unwrap_or(Value::Null);
            let c = current(&s);
            let mut inner = Map::new();
            insert_some(&mut inner, "metricName", s.pointer("/metric/name"));
            insert_some(&mut inner, "metricSelector", s.pointer("/metric/selector"));
            insert_some(&mut inner, "currentValue", c.get("value"));
            insert_some(&mut inner, "currentAverageValue", c.get("averageValue"));
            out.insert("external".into(), Value::Object(inner));
        }
        _ => {}
    }
    Value::Object(out)
}

/// A v1 alpha MetricStatus in the v2 form.
fn alpha_to_status(metric: &Value) -> Value {
    let type_ = metric.get("type").and_then(Value::as_str).unwrap_or("");
    let current = |value: Option<&Value>, average: Option<&Value>, utilization: Option<&Value>| {
        let mut c = Map::new();
        insert_some(&mut c, "value", value);
        insert_some(&mut c, "averageValue", average);
        insert_some(&mut c, "averageUtilization", utilization);
        Value::Object(c)
    };
    match type_ {
        "Resource" | "ContainerResource" => {
            let key = if type_ == "Resource" {
                "resource"
            } else {
                "containerResource"
            };
            let s = metric.get(key).cloned().unwrap_or(Value::Null);
            let mut inner = Map::new();
            insert_some(&mut inner, "name", s.get("name"));
            insert_some(&mut inner, "container", s.get("container"));
            inner.insert(
                "current".into(),
                current(
                    None,
                    s.get("currentAverageValue"),
                    s.get("currentAverageUtilization"),
                ),
            );
            json!({"type": type_, key: inner})
        }
        "Pods" => {
            let s = metric.get("pods").cloned().unwrap_or(Value::Null);
            json!({"type": "Pods", "pods": {
                "metric": identifier(s.get("metricName"), s.get("selector")),
                "current": current(None, s.get("currentAverageValue"), None),
            }})
        }
        "Object" => {
            let s = metric.get("object").cloned().unwrap_or(Value::Null);
            json!({"type": "Object", "object": {
                "describedObject": s.get("target").cloned().unwrap_or_else(|| json!({})),
                "metric": identifier(s.get("metricName"), s.get("selector")),
                "current": current(s.get("currentValue"), s.get("averageValue"), None),
            }})
        }
        "External" => {
            let s = metric.get("external").cloned().unwrap_or(Value::Null);
            json!({"type": "External", "external": {
                "metric": identifier(s.get("metricName"), s.get("metricSelector")),
                "current": current(s.get("currentValue"), s.get("currentAverageValue"), None),
            }})
        }
        _ => metric.clone(),
    }
}

fn annotations_mut(object: &mut Map<String, Value>) -> &mut Map<String, Value> {
    let metadata = object
        .entry("metadata")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    match metadata {
        Some(metadata) => {
            let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
            if !annotations.is_object() {
                *annotations = json!({});
            }
            annotations
                .as_object_mut()
                .unwrap_or_else(|| unreachable!("set to an object"))
        }
        None => unreachable!("metadata was made an object"),
    }
}

fn drop_empty_annotations(object: &mut Map<String, Value>) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut)
        && metadata
            .get("annotations")
            .and_then(Value::as_object)
            .is_some_and(Map::is_empty)
    {
        metadata.remove("annotations");
    }
}

fn as_json_text(value: &Value) -> Value {
    Value::String(value.to_string())
}

/// The autoscaling/v1 form of a stored autoscaling/v2 HorizontalPodAutoscaler.
pub fn v2_to_v1(v2: &Value) -> Value {
    let mut out = v2.as_object().cloned().unwrap_or_default();
    out.insert("apiVersion".into(), "autoscaling/v1".into());
    if let Some(metadata) = out.get_mut("metadata").and_then(Value::as_object_mut)
        && metadata.get("annotations").is_some_and(|a| !a.is_object())
    {
        metadata.remove("annotations");
    }
    // Spec.
    let spec = v2.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut v1_spec = Map::new();
    insert_some(&mut v1_spec, "scaleTargetRef", spec.get("scaleTargetRef"));
    insert_some(&mut v1_spec, "minReplicas", spec.get("minReplicas"));
    insert_some(&mut v1_spec, "maxReplicas", spec.get("maxReplicas"));
    let mut others = Vec::new();
    for metric in spec
        .get("metrics")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if is_cpu_utilization(metric) && !v1_spec.contains_key("targetCPUUtilizationPercentage") {
            insert_some(
                &mut v1_spec,
                "targetCPUUtilizationPercentage",
                metric.pointer("/resource/target/averageUtilization"),
            );
        } else {
            others.push(spec_to_alpha(metric));
        }
    }
    let annotations = annotations_mut(&mut out);
    if !others.is_empty() {
        annotations.insert(
            METRICS_ANNOTATION.into(),
            as_json_text(&Value::Array(others)),
        );
    }
    if let Some(behavior) = spec.get("behavior").filter(|b| !b.is_null()) {
        annotations.insert(BEHAVIOR_ANNOTATION.into(), as_json_text(behavior));
    }
    out.insert("spec".into(), Value::Object(v1_spec));
    // Status.
    if let Some(status) = v2.get("status").filter(|s| s.is_object()) {
        let mut v1_status = Map::new();
        insert_some(
            &mut v1_status,
            "observedGeneration",
            status.get("observedGeneration"),
        );
        insert_some(&mut v1_status, "lastScaleTime", status.get("lastScaleTime"));
        v1_status.insert(
            "currentReplicas".into(),
            status
                .get("currentReplicas")
                .cloned()
                .unwrap_or_else(|| 0.into()),
        );
        v1_status.insert(
            "desiredReplicas".into(),
            status
                .get("desiredReplicas")
                .cloned()
                .unwrap_or_else(|| 0.into()),
        );
        let mut others = Vec::new();
        for metric in status
            .get("currentMetrics")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let cpu = metric.get("type").and_then(Value::as_str) == Some("Resource")
                && metric.pointer("/resource/name").and_then(Value::as_str) == Some("cpu");
            let utilization = metric.pointer("/resource/current/averageUtilization");
            if cpu
                && utilization.is_some()
                && !v1_status.contains_key("currentCPUUtilizationPercentage")
            {
                insert_some(
                    &mut v1_status,
                    "currentCPUUtilizationPercentage",
                    utilization,
                );
            } else {
                others.push(status_to_alpha(metric));
            }
        }
        let annotations = annotations_mut(&mut out);
        if !others.is_empty() {
            annotations.insert(
                CURRENT_METRICS_ANNOTATION.into(),
                as_json_text(&Value::Array(others)),
            );
        }
        if let Some(conditions) = status
            .get("conditions")
            .filter(|c| c.as_array().is_some_and(|c| !c.is_empty()))
        {
            annotations.insert(CONDITIONS_ANNOTATION.into(), as_json_text(conditions));
        }
        out.insert("status".into(), Value::Object(v1_status));
    }
    drop_empty_annotations(&mut out);
    Value::Object(out)
}

/// The annotation `key`'s JSON, taken out of `annotations`.
fn take_json(annotations: Option<&mut Map<String, Value>>, key: &str) -> Option<Value> {
    let text = annotations?.remove(key)?;
    serde_json::from_str(text.as_str()?).ok()
}

/// The stored autoscaling/v2 form of an autoscaling/v1 HorizontalPodAutoscaler.
pub fn v1_to_v2(v1: &Value) -> Value {
    let mut out = v1.as_object().cloned().unwrap_or_default();
    out.insert("apiVersion".into(), "autoscaling/v2".into());
    let mut annotations = out
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
        .cloned();
    let mut take = |key| take_json(annotations.as_mut(), key);
    let alpha_metrics = take(METRICS_ANNOTATION);
    let alpha_current = take(CURRENT_METRICS_ANNOTATION);
    let conditions = take(CONDITIONS_ANNOTATION);
    let behavior = take(BEHAVIOR_ANNOTATION);
    if let Some(metadata) = out.get_mut("metadata").and_then(Value::as_object_mut) {
        match annotations {
            Some(a) if !a.is_empty() => {
                metadata.insert("annotations".into(), Value::Object(a));
            }
            _ => {
                metadata.remove("annotations");
            }
        }
    }
    // Spec.
    let spec = v1.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut v2_spec = Map::new();
    insert_some(&mut v2_spec, "scaleTargetRef", spec.get("scaleTargetRef"));
    insert_some(&mut v2_spec, "minReplicas", spec.get("minReplicas"));
    insert_some(&mut v2_spec, "maxReplicas", spec.get("maxReplicas"));
    let mut metrics = Vec::new();
    if let Some(percent) = spec
        .get("targetCPUUtilizationPercentage")
        .filter(|v| !v.is_null())
    {
        metrics.push(json!({"type": "Resource", "resource": {
            "name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": percent},
        }}));
    }
    metrics.extend(
        alpha_metrics
            .as_ref()
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(alpha_to_spec),
    );
    if !metrics.is_empty() {
        v2_spec.insert("metrics".into(), Value::Array(metrics));
    }
    if let Some(behavior) = behavior {
        v2_spec.insert("behavior".into(), behavior);
    }
    out.insert("spec".into(), Value::Object(v2_spec));
    // Status.
    if let Some(status) = v1.get("status").filter(|s| s.is_object()) {
        let mut v2_status = Map::new();
        insert_some(
            &mut v2_status,
            "observedGeneration",
            status.get("observedGeneration"),
        );
        insert_some(&mut v2_status, "lastScaleTime", status.get("lastScaleTime"));
        insert_some(
            &mut v2_status,
            "currentReplicas",
            status.get("currentReplicas"),
        );
        v2_status.insert(
            "desiredReplicas".into(),
            status
                .get("desiredReplicas")
                .cloned()
                .unwrap_or_else(|| 0.into()),
        );
        let mut current = Vec::new();
        if let Some(percent) = status
            .get("currentCPUUtilizationPercentage")
            .filter(|v| !v.is_null())
        {
            current.push(json!({"type": "Resource", "resource": {
                "name": "cpu",
                "current": {"averageUtilization": percent},
            }}));
        }
        current.extend(
            alpha_current
                .as_ref()
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(alpha_to_status),
        );
        if !current.is_empty() {
            v2_status.insert("currentMetrics".into(), Value::Array(current));
        }
        if let Some(conditions) = conditions {
            v2_status.insert("conditions".into(), conditions);
        }
        out.insert("status".into(), Value::Object(v2_status));
    }
    Value::Object(out)
}

/// Whether `key` is one of the annotations the conversion owns.
pub fn is_conversion_annotation(key: &str) -> bool {
    ANNOTATIONS.contains(&key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hpa_v2() -> Value {
        json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": 50}}},
                    {"type": "Resource", "resource": {"name": "memory",
                        "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}},
            },
            "status": {
                "currentReplicas": 2, "desiredReplicas": 3,
                "currentMetrics": [
                    {"type": "Resource", "resource": {"name": "cpu",
                        "current": {"averageUtilization": 70, "averageValue": "700m"}}},
                    {"type": "Resource", "resource": {"name": "memory",
                        "current": {"averageValue": "50Mi"}}},
                ],
                "conditions": [{"type": "AbleToScale", "status": "True", "reason": "SucceededRescale"}],
            },
        })
    }

    #[test]
    fn v2_reads_as_v1_with_the_rest_in_annotations() {
        let v1 = v2_to_v1(&hpa_v2());
        assert_eq!(v1["apiVersion"], "autoscaling/v1");
        assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 50);
        assert!(v1["spec"].get("metrics").is_none());
        assert_eq!(v1["status"]["currentCPUUtilizationPercentage"], 70);
        assert_eq!(v1["status"]["desiredReplicas"], 3);
        let annotations = &v1["metadata"]["annotations"];
        let metrics: Value =
            serde_json::from_str(annotations[METRICS_ANNOTATION].as_str().unwrap()).unwrap();
        assert_eq!(
            metrics,
            json!([{"type": "Resource", "resource": {"name": "memory", "targetAverageValue": "100Mi"}}])
        );
        let current: Value =
            serde_json::from_str(annotations[CURRENT_METRICS_ANNOTATION].as_str().unwrap())
                .unwrap();
        assert_eq!(
            current,
            json!([{"type": "Resource", "resource": {"name": "memory", "currentAverageValue": "50Mi"}}])
        );
        assert!(annotations[BEHAVIOR_ANNOTATION].is_string());
        assert!(annotations[CONDITIONS_ANNOTATION].is_string());
    }

    #[test]
    fn v1_round_trips_to_v2() {
        let v2 = hpa_v2();
        let back = v1_to_v2(&v2_to_v1(&v2));
        assert_eq!(back["spec"]["metrics"], v2["spec"]["metrics"]);
        assert_eq!(back["spec"]["behavior"], v2["spec"]["behavior"]);
        assert_eq!(back["status"]["conditions"], v2["status"]["conditions"]);
        assert_eq!(
            back["status"]["currentMetrics"][1],
            v2["status"]["currentMetrics"][1]
        );
        // v1 keeps only the CPU utilization of the current CPU metric.
        assert_eq!(
            back["status"]["currentMetrics"][0],
            json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 70}}})
        );
        assert!(back["metadata"].get("annotations").is_none());
    }

    #[test]
    fn kubectl_autoscale_v1_object_is_stored_as_v2() {
        // What `kubectl autoscale deployment web --cpu-percent=50 --min=1 --max=5` sends.
        let v1 = json!({
            "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50,
            },
            "status": {"currentReplicas": 0, "desiredReplicas": 0},
        });
        let v2 = v1_to_v2(&v1);
        assert_eq!(
            v2["spec"],
            json!({
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5,
                "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 50}}}],
            })
        );
        assert_eq!(v2["apiVersion"], "autoscaling/v2");
    }
}

//! autoscaling: HorizontalPodAutoscaler. Source: pkg/apis/autoscaling/v2/defaults.go (and
//! pkg/apis/autoscaling/v1/defaults.go for an object written as autoscaling/v1).

use serde_json::{Value, json};

use super::fields::{Object, empty, ensure_object, fill, text};

/// `autoscaling.DefaultCPUUtilization`: the target when no metric is given.
const DEFAULT_CPU_UTILIZATION: i64 = 80;

/// Applies the defaults of autoscaling kind `kind`.
pub(super) fn apply(kind: &str, root: &mut Object) {
    if kind == "HorizontalPodAutoscaler" {
        horizontal_pod_autoscaler(root);
    }
}

/// `SetDefaults_HorizontalPodAutoscaler`: one replica at least; without metrics, 80% average
/// CPU utilisation; `SetDefaults_HorizontalPodAutoscalerBehavior`: a `behavior` that is present
/// gets both directions filled, field by field, from the defaults of
/// [`scale_up_rules`] and [`scale_down_rules`]. autoscaling/v1 defaults only `minReplicas`.
fn horizontal_pod_autoscaler(root: &mut Object) {
    let v1 = text(root, "apiVersion") == "autoscaling/v1";
    let Some(spec) = ensure_object(root, "spec") else {
        return;
    };
    fill(spec, "minReplicas", json!(1));
    if v1 {
        return;
    }
    if empty(spec, "metrics") {
        spec.insert(
            "metrics".into(),
            json!([{
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION},
                },
            }]),
        );
    }
    if let Some(behavior) = spec.get_mut("behavior").and_then(Value::as_object_mut) {
        rules(behavior, "scaleUp", scale_up_rules());
        rules(behavior, "scaleDown", scale_down_rules());
    }
}

/// `GenerateHPAScaleUpRules` / `GenerateHPAScaleDownRules`: every field the client left out of
/// `behavior.<direction>` (or the whole direction) comes from `defaults`.
fn rules(behavior: &mut Object, direction: &str, defaults: Object) {
    let Some(rules) = ensure_object(behavior, direction) else {
        return;
    };
    for (key, value) in defaults {
        fill(rules, &key, value);
    }
}

/// Scale up at once, by at most 4 pods or 100% per 15 seconds, whichever is more.
fn scale_up_rules() -> Object {
    let Value::Object(rules) = json!({
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15},
        ],
    }) else {
        return Object::new();
    };
    rules
}

/// Scale down by at most 100% per 15 seconds; no stabilisation window is set, so the
/// controller's `--horizontal-pod-autoscaler-downscale-stabilization` applies.
fn scale_down_rules() -> Object {
    let Value::Object(rules) = json!({
        "selectPolicy": "Max",
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
    }) else {
        return Object::new();
    };
    rules
}

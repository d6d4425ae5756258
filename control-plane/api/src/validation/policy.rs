//! PodDisruptionBudgets, HorizontalPodAutoscalers (autoscaling/v2), PriorityClasses,
//! RuntimeClasses and Leases (`pkg/apis/{policy,autoscaling,scheduling,node,coordination}/
//! validation`, v1.33).

use serde_json::Value;

use crate::quantity::Quantity;

use super::errors::FieldError;
use super::formats::{self, NameRule};
use super::meta::{self, IMMUTABLE, NEGATIVE};
use super::pod::preemption_policy;
use super::util::{Errs, Path, arr, at, bool_opt, get, int_opt, str_opt, str_or};
use super::workloads::check_int_or_percent;

/// `ValidatePodDisruptionBudget` (its metadata gets only the generic checks).
pub(crate) fn pdb(object: &Value, errs: &mut Errs) {
    let spec = at(object, "spec");
    let sp = Path::root("spec");
    let (min, max) = (get(spec, "minAvailable"), get(spec, "maxUnavailable"));
    if min.is_some() && max.is_some() {
        errs.push(FieldError::invalid(
            sp.as_str(),
            super::normalized(spec),
            "minAvailable and maxUnavailable cannot be both set",
        ));
    }
    if let Some(v) = min {
        check_int_or_percent(v, &sp.child("minAvailable"), errs);
    }
    if let Some(v) = max {
        check_int_or_percent(v, &sp.child("maxUnavailable"), errs);
    }
    meta::label_selector(get(spec, "selector"), &sp.child("selector"), errs);
    if let Some(p) = str_opt(spec, "unhealthyPodEvictionPolicy")
        && p != "AlwaysAllow"
        && p != "IfHealthyBudget"
    {
        errs.push(FieldError::not_supported(
            sp.child("unhealthyPodEvictionPolicy").as_str(),
            p,
            &["AlwaysAllow", "IfHealthyBudget"],
        ));
    }
}

fn cross_version_ref(r: &Value, path: &Path, errs: &mut Errs) {
    for field in ["kind", "name"] {
        let v = str_or(r, field);
        if v.is_empty() {
            errs.push(FieldError::required(path.child(field).as_str(), ""));
        } else {
            for m in formats::path_segment_name(v) {
                errs.push(FieldError::invalid(path.child(field).as_str(), v, m));
            }
        }
    }
}

fn quantity_sign(v: &Value, field: &str) -> Option<(String, bool)> {
    str_opt(v, field).map(|s| match Quantity::parse_trimmed(s) {
        Ok(q) => (q.to_string(), !q.is_negative() && !q.is_zero()),
        Err(_) => (s.to_owned(), false),
    })
}

/// `validateMetricTarget`.
fn metric_target(t: &Value, path: &Path, errs: &mut Errs) {
    let kind = str_or(t, "type");
    if kind.is_empty() {
        errs.push(FieldError::required(
            path.child("type").as_str(),
            "must specify a metric target type",
        ));
    }
    if !matches!(kind, "Utilization" | "Value" | "AverageValue") {
        errs.push(FieldError::invalid(
            path.child("type").as_str(),
            kind,
            "must be either Utilization, Value, or AverageValue",
        ));
    }
    for field in ["value", "averageValue"] {
        if let Some((text, positive)) = quantity_sign(t, field)
            && !positive
        {
            errs.push(FieldError::invalid(
                path.child(field).as_str(),
                text,
                "must be positive",
            ));
        }
    }
    if let Some(u) = int_opt(t, "averageUtilization")
        && u < 1
    {
        errs.push(FieldError::invalid(
            path.child("averageUtilization").as_str(),
            u,
            "must be greater than 0",
        ));
    }
}

fn metric_identifier(m: &Value, path: &Path, errs: &mut Errs) {
    let name = str_or(m, "name");
    if name.is_empty() {
        errs.push(FieldError::required(
            path.child("name").as_str(),
            "must specify a metric name",
        ));
    } else {
        for msg in formats::path_segment_name(name) {
            errs.push(FieldError::invalid(path.child("name").as_str(), name, msg));
        }
    }
    meta::label_selector(get(m, "selector"), &path.child("selector"), errs);
}

fn metric_source(kind: &str, src: &Value, path: &Path, errs: &mut Errs) {
    let target = at(src, "target");
    let tp = path.child("target");
    match kind {
        "resource" | "containerResource" => {
            if str_or(src, "name").is_empty() {
                errs.push(FieldError::required(
                    path.child("name").as_str(),
                    "must specify a resource name",
                ));
            }
            if kind == "containerResource" && str_or(src, "container").is_empty() {
                errs.push(FieldError::required(
                    path.child("container").as_str(),
                    "must specify a container",
                ));
            }
            metric_target(target, &tp, errs);
            let (util, avg) = (
                get(target, "averageUtilization"),
                get(target, "averageValue"),
            );
            if util.is_none() && avg.is_none() {
                errs.push(FieldError::required(
                    tp.child("averageUtilization").as_str(),
                    "must set either a target raw value or a target utilization",
                ));
            }
            if util.is_some() && avg.is_some() {
                errs.push(FieldError::forbidden(
                    tp.child("averageValue").as_str(),
                    "may not set both a target raw value and a target utilization",
                ));
            }
        }
        "pods" => {
            metric_identifier(at(src, "metric"), &path.child("metric"), errs);
            metric_target(target, &tp, errs);
            if get(target, "averageValue").is_none() {
                errs.push(FieldError::required(
                    tp.child("averageValue").as_str(),
                    "must specify a positive target averageValue",
                ));
            }
        }
        "object" => {
            cross_version_ref(
                at(src, "describedObject"),
                &path.child("describedObject"),
                errs,
            );
            metric_identifier(at(src, "metric"), &path.child("metric"), errs);
            metric_target(target, &tp, errs);
            if get(target, "value").is_none() && get(target, "averageValue").is_none() {
                errs.push(FieldError::required(
                    tp.child("averageValue").as_str(),
                    "must set either a target value or averageValue",
                ));
            }
        }
        _ => {
            metric_identifier(at(src, "metric"), &path.child("metric"), errs);
            metric_target(target, &tp, errs);
            let (value, avg) = (get(target, "value"), get(target, "averageValue"));
            if value.is_none() && avg.is_none() {
                errs.push(FieldError::required(
                    tp.child("averageValue").as_str(),
                    "must set either a target value for metric or a per-pod target",
                ));
            }
            if value.is_some() && avg.is_some() {
                errs.push(FieldError::forbidden(
                    tp.child("value").as_str(),
                    "may not set both a target value for metric and a per-pod target",
                ));
            }
        }
    }
}

const METRIC_TYPES: &[&str] = &[
    "ContainerResource",
    "External",
    "Object",
    "Pods",
    "Resource",
];

/// `validateMetricSpec`.
fn metric_spec(m: &Value, path: &Path, errs: &mut Errs) {
    let kind = str_or(m, "type");
    if kind.is_empty() {
        errs.push(FieldError::required(
            path.child("type").as_str(),
            "must specify a metric source type",
        ));
    }
    if !METRIC_TYPES.contains(&kind) {
        errs.push(FieldError::not_supported(
            path.child("type").as_str(),
            kind,
            METRIC_TYPES,
        ));
    }
    let mut present: Vec<&str> = Vec::new();
    for field in [
        "object",
        "external",
        "pods",
        "resource",
        "containerResource",
    ] {
        if let Some(src) = get(m, field) {
            present.push(field);
            if present.len() == 1 {
                metric_source(field, src, &path.child(field), errs);
            }
        }
    }
    let expected = match kind {
        "Object" => "object",
        "Pods" => "pods",
        "Resource" => "resource",
        "External" => "external",
        "ContainerResource" => "containerResource",
        _ => {
            errs.push(FieldError::not_supported(
                path.child("type").as_str(),
                kind,
                METRIC_TYPES,
            ));
            ""
        }
    };
    if !expected.is_empty() && get(m, expected).is_none() {
        errs.push(FieldError::required(
            path.child(expected).as_str(),
            "must populate information for the given metric source",
        ));
    }
    if present.len() != 1 {
        let mut others: Vec<&str> = present.into_iter().filter(|p| *p != expected).collect();
        others.sort_unstable();
        for other in others {
            errs.push(FieldError::forbidden(
                path.child(other).as_str(),
                "must populate the given metric source only",
            ));
        }
    }
}

fn scaling_rules(rules: Option<&Value>, path: &Path, errs: &mut Errs) {
    let Some(rules) = rules else {
        return;
    };
    if let Some(w) = int_opt(rules, "stabilizationWindowSeconds") {
        if w < 0 {
            errs.push(FieldError::invalid(
                path.child("stabilizationWindowSeconds").as_str(),
                w,
                "must be greater than or equal to zero",
            ));
        }
        if w > 3600 {
            errs.push(FieldError::invalid(
                path.child("stabilizationWindowSeconds").as_str(),
                w,
                "must be less than or equal to 3600",
            ));
        }
    }
    if let Some(sel) = str_opt(rules, "selectPolicy")
        && !matches!(sel, "Disabled" | "Max" | "Min")
    {
        errs.push(FieldError::not_supported(
            path.child("selectPolicy").as_str(),
            sel,
            &["Disabled", "Max", "Min"],
        ));
    }
    for (i, p) in arr(rules, "policies").iter().enumerate() {
        let pp = path.child("policies").index(i);
        let kind = str_or(p, "type");
        if kind != "Pods" && kind != "Percent" {
            errs.push(FieldError::not_supported(
                pp.child("type").as_str(),
                kind,
                &["Percent", "Pods"],
            ));
        }
        for field in ["value", "periodSeconds"] {
            let v = int_opt(p, field).unwrap_or(0);
            if v <= 0 {
                errs.push(FieldError::invalid(
                    pp.child(field).as_str(),
                    v,
                    "must be greater than zero",
                ));
            }
        }
        let period = int_opt(p, "periodSeconds").unwrap_or(0);
        if period > 1800 {
            errs.push(FieldError::invalid(
                pp.child("periodSeconds").as_str(),
                period,
                "must be less than or equal to 1800",
            ));
        }
    }
}

/// `ValidateHorizontalPodAutoscaler` (HPAScaleToZero is off: minReplicas >= 1).
pub(crate) fn hpa(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, true, errs);
    let spec = at(object, "spec");
    let sp = Path::root("spec");
    let min = int_opt(spec, "minReplicas");
    if let Some(m) = min
        && m < 1
    {
        errs.push(FieldError::invalid(
            sp.child("minReplicas").as_str(),
            m,
            "must be greater than or equal to 1",
        ));
    }
    let max = int_opt(spec, "maxReplicas").unwrap_or(0);
    if max < 1 {
        errs.push(FieldError::invalid(
            sp.child("maxReplicas").as_str(),
            max,
            "must be greater than 0",
        ));
    }
    if let Some(m) = min
        && max < m
    {
        errs.push(FieldError::invalid(
            sp.child("maxReplicas").as_str(),
            max,
            "must be greater than or equal to `minReplicas`",
        ));
    }
    cross_version_ref(
        at(spec, "scaleTargetRef"),
        &sp.child("scaleTargetRef"),
        errs,
    );
    for (i, m) in arr(spec, "metrics").iter().enumerate() {
        metric_spec(m, &sp.child("metrics").index(i), errs);
    }
    if let Some(b) = get(spec, "behavior") {
        let bp = sp.child("behavior");
        scaling_rules(get(b, "scaleUp"), &bp.child("scaleUp"), errs);
        scaling_rules(get(b, "scaleDown"), &bp.child("scaleDown"), errs);
    }
}

const HIGHEST_USER_PRIORITY: i64 = 1_000_000_000;
const SYSTEM_CRITICAL: i64 = 2_000_000_000;

/// `ValidatePriorityClass`: `system-` names are reserved, user values at most 1e9.
pub(crate) fn priority_class(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, false, errs);
    let name = str_or(at(object, "metadata"), "name");
    let value = int_opt(object, "value").unwrap_or(0);
    let global_default = bool_opt(object, "globalDefault").unwrap_or(false);
    if name.starts_with("system-") {
        let known = match name {
            "system-node-critical" => Some(SYSTEM_CRITICAL + 1000),
            "system-cluster-critical" => Some(SYSTEM_CRITICAL),
            _ => None,
        };
        let problem = match known {
            None => Some(format!("{name} is not a known system priority class")),
            Some(v) if v != value => Some(format!("value of {name} PriorityClass must be {v}")),
            Some(_) if global_default => Some(format!(
                "globalDefault of {name} PriorityClass must be false"
            )),
            Some(_) => None,
        };
        if let Some(p) = problem {
            errs.push(FieldError::forbidden(
                "metadata.name",
                format!(
                    "priority class names with 'system-' prefix are reserved for system use \
                     only. error: {p}"
                ),
            ));
        }
    } else if value > HIGHEST_USER_PRIORITY {
        errs.push(FieldError::forbidden(
            "value",
            format!("maximum allowed value of a user defined priority is {HIGHEST_USER_PRIORITY}"),
        ));
    }
    if let Some(pp) = str_opt(object, "preemptionPolicy") {
        preemption_policy(pp, &Path::root("preemptionPolicy"), errs);
    }
}

/// `ValidatePriorityClassUpdate`: value and preemptionPolicy never change.
pub(crate) fn priority_class_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    if int_opt(new, "value") != int_opt(old, "value") {
        errs.push(FieldError::forbidden(
            "value",
            "may not be changed in an update.",
        ));
    }
    let pp = |v: &Value| {
        str_opt(v, "preemptionPolicy")
            .unwrap_or("PreemptLowerPriority")
            .to_owned()
    };
    if pp(new) != pp(old) {
        errs.push(FieldError::invalid("preemptionPolicy", pp(new), IMMUTABLE));
    }
}

/// `ValidateRuntimeClass`: the handler is a DNS label.
pub(crate) fn runtime_class(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, false, errs);
    let handler = str_or(object, "handler");
    for m in formats::dns1123_label(handler) {
        errs.push(FieldError::invalid("handler", handler, m));
    }
    if let Some(overhead) = get(object, "overhead") {
        super::resources::resources(
            Some(
                &serde_json::json!({ "limits": overhead.get("podFixed").cloned().unwrap_or_default() }),
            ),
            &Path::root("overhead"),
            errs,
        );
    }
}

/// `ValidateRuntimeClassUpdate`: the handler is immutable.
pub(crate) fn runtime_class_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    let (n, o) = (str_or(new, "handler"), str_or(old, "handler"));
    if n != o {
        errs.push(FieldError::invalid("handler", n, IMMUTABLE));
    }
}

/// `ValidateLease`.
pub(crate) fn lease(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, true, errs);
    let spec = at(object, "spec");
    if let Some(d) = int_opt(spec, "leaseDurationSeconds")
        && d <= 0
    {
        errs.push(FieldError::invalid(
            "spec.leaseDurationSeconds",
            d,
            "must be greater than 0",
        ));
    }
    if let Some(t) = int_opt(spec, "leaseTransitions")
        && t < 0
    {
        errs.push(FieldError::invalid("spec.leaseTransitions", t, NEGATIVE));
    }
    let preferred = str_or(spec, "preferredHolder");
    if !preferred.is_empty() && str_or(spec, "strategy").is_empty() {
        errs.push(FieldError::forbidden(
            "spec.preferredHolder",
            "may only be specified if `strategy` is defined",
        ));
    }
}

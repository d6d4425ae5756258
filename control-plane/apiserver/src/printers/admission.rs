//! admissionregistration.k8s.io/v1: webhook configurations and validating admission policies
//! and their bindings.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{AGE, Column, NAME, age, col, count, list, name, text};

pub(super) const WEBHOOK_CONFIGURATION: &[Column] = &[
    NAME,
    col(
        "Webhooks",
        "integer",
        0,
        "Webhooks indicates the number of webhooks registered in this configuration",
    ),
    AGE,
];

/// MutatingWebhookConfiguration and ValidatingWebhookConfiguration: Name, Webhooks (how
/// many), Age.
pub(super) fn webhook_configuration_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(object),
        json!(count(object, "/webhooks")),
        age(object, now),
    ]
}

pub(super) const VALIDATING_ADMISSION_POLICY: &[Column] = &[
    NAME,
    col(
        "Validations",
        "integer",
        0,
        "Validations indicates the number of validation rules defined in this configuration",
    ),
    col(
        "ParamKind",
        "string",
        0,
        "ParamKind specifies the kind of resources used to parameterize this policy",
    ),
    AGE,
];

/// ValidatingAdmissionPolicy: Name, Validations (how many), ParamKind (`apiVersion/Kind`,
/// `<unset>`), Age.
pub(super) fn validating_admission_policy_cells(policy: &Value, now: Timestamp) -> Vec<Value> {
    let param_kind = match policy.pointer("/spec/paramKind") {
        Some(kind @ Value::Object(_)) => {
            format!("{}/{}", text(kind, "/apiVersion"), text(kind, "/kind"))
        }
        _ => "<unset>".to_owned(),
    };
    vec![
        name(policy),
        json!(count(policy, "/spec/validations")),
        json!(param_kind),
        age(policy, now),
    ]
}

pub(super) const VALIDATING_ADMISSION_POLICY_BINDING: &[Column] = &[
    NAME,
    col(
        "PolicyName",
        "string",
        0,
        "PolicyName indicates the policy definition which the policy binding binded to",
    ),
    col(
        "ParamRef",
        "string",
        0,
        "ParamRef indicates the param resource which sets the configration param",
    ),
    AGE,
];

/// A label selector as Go's generated `LabelSelector.String()` prints it, which is what
/// kube-apiserver shows for a binding whose parameters are selected by label:
/// `&LabelSelector{MatchLabels:map[string]string{k: v,},MatchExpressions:[]LabelSelectorRequirement{LabelSelectorRequirement{Key:k,Operator:In,Values:[a b],},},}`.
fn go_label_selector(selector: &Value) -> String {
    let mut labels: Vec<(&str, &str)> = selector
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    labels.sort_unstable();
    let labels: String = labels.iter().map(|(k, v)| format!("{k}: {v},")).collect();
    let expressions: String = list(selector, "/matchExpressions")
        .iter()
        .map(|e| {
            let values: Vec<&str> = list(e, "/values")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            format!(
                "LabelSelectorRequirement{{Key:{},Operator:{},Values:[{}],}},",
                text(e, "/key"),
                text(e, "/operator"),
                values.join(" ")
            )
        })
        .collect();
    format!(
        "&LabelSelector{{MatchLabels:map[string]string{{{labels}}},\
         MatchExpressions:[]LabelSelectorRequirement{{{expressions}}},}}"
    )
}

/// ValidatingAdmissionPolicyBinding: Name, PolicyName, ParamRef (`namespace/name`, `*/name`
/// without a namespace, the selector when chosen by label, `<unset>`), Age.
pub(super) fn validating_admission_policy_binding_cells(
    binding: &Value,
    now: Timestamp,
) -> Vec<Value> {
    let param = match binding.pointer("/spec/paramRef") {
        Some(param @ Value::Object(_)) => match (
            text(param, "/name"),
            text(param, "/namespace"),
            param.get("selector"),
        ) {
            ("", _, Some(selector @ Value::Object(_))) => go_label_selector(selector),
            ("", _, _) => "<unset>".to_owned(),
            (param_name, "", _) => format!("*/{param_name}"),
            (param_name, namespace, _) => format!("{namespace}/{param_name}"),
        },
        _ => "<unset>".to_owned(),
    };
    vec![
        name(binding),
        json!(text(binding, "/spec/policyName")),
        json!(param),
        age(binding, now),
    ]
}

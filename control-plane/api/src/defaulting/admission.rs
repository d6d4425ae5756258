//! admissionregistration.k8s.io/v1 (pkg/apis/admissionregistration/v1/defaults.go and
//! zz_generated.defaults.go) and apiregistration.k8s.io/v1
//! (staging/src/k8s.io/kube-aggregator/pkg/apis/apiregistration/v1/defaults.go).

use serde_json::json;

use super::fields::{Object, ensure_object, fill, object_mut, objects_mut, path_mut};

/// Applies the defaults of admissionregistration.k8s.io/v1 kind `kind`.
pub(super) fn apply(kind: &str, root: &mut Object) {
    match kind {
        "ValidatingWebhookConfiguration" => webhooks(root, false),
        "MutatingWebhookConfiguration" => webhooks(root, true),
        "ValidatingAdmissionPolicy" => validating_admission_policy(root),
        "ValidatingAdmissionPolicyBinding" => {
            if let Some(resources) = path_mut(root, &["spec", "matchResources"]) {
                match_resources(resources);
            }
        }
        _ => {}
    }
}

/// `SetDefaults_ValidatingWebhook` / `SetDefaults_MutatingWebhook`: fail closed, match
/// equivalent versions, select every namespace and object, a 10-second timeout, and (mutating
/// only) never reinvoke; `SetDefaults_ServiceReference`: port 443; `SetDefaults_Rule`: scope
/// `*`. `sideEffects` and `admissionReviewVersions` have no default in v1.
fn webhooks(root: &mut Object, mutating: bool) {
    for webhook in objects_mut(root, "webhooks") {
        fill(webhook, "failurePolicy", json!("Fail"));
        fill(webhook, "matchPolicy", json!("Equivalent"));
        fill(webhook, "namespaceSelector", json!({}));
        fill(webhook, "objectSelector", json!({}));
        fill(webhook, "timeoutSeconds", json!(10));
        if mutating {
            fill(webhook, "reinvocationPolicy", json!("Never"));
        }
        if let Some(service) = path_mut(webhook, &["clientConfig", "service"]) {
            service_reference(service);
        }
        for rule in objects_mut(webhook, "rules") {
            fill(rule, "scope", json!("*"));
        }
    }
}

/// `SetDefaults_ServiceReference` (both groups): port 443.
fn service_reference(service: &mut Object) {
    fill(service, "port", json!(443));
}

/// `SetDefaults_ValidatingAdmissionPolicySpec`: fail closed; and the match constraints.
fn validating_admission_policy(root: &mut Object) {
    let Some(spec) = ensure_object(root, "spec") else {
        return;
    };
    fill(spec, "failurePolicy", json!("Fail"));
    if let Some(constraints) = object_mut(spec, "matchConstraints") {
        match_resources(constraints);
    }
}

/// `SetDefaults_MatchResources`: match equivalent versions, every namespace and object; the
/// scope of each (excluded) resource rule is `*`.
fn match_resources(resources: &mut Object) {
    fill(resources, "matchPolicy", json!("Equivalent"));
    fill(resources, "namespaceSelector", json!({}));
    fill(resources, "objectSelector", json!({}));
    for list in ["resourceRules", "excludeResourceRules"] {
        for rule in objects_mut(resources, list) {
            fill(rule, "scope", json!("*"));
        }
    }
}

/// apiregistration.k8s.io/v1 APIService: the service port defaults to 443.
pub(super) fn apply_apiregistration(kind: &str, root: &mut Object) {
    if kind == "APIService"
        && let Some(service) = path_mut(root, &["spec", "service"])
    {
        service_reference(service);
    }
}

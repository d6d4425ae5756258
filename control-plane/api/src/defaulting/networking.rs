//! networking.k8s.io/v1 (pkg/apis/networking/v1/defaults.go) and discovery.k8s.io/v1
//! (pkg/apis/discovery/v1/defaults.go).

use serde_json::json;

use super::fields::{Object, empty, ensure_object, fill, object_mut, objects_mut};

/// Applies the defaults of networking.k8s.io/v1 kind `kind`. Ingress, IPAddress and
/// ServiceCIDR have none (an Ingress path's `pathType` is required in v1, not defaulted).
pub(super) fn apply(kind: &str, root: &mut Object) {
    match kind {
        "NetworkPolicy" => network_policy(root),
        "IngressClass" => ingress_class(root),
        _ => {}
    }
}

/// `SetDefaults_NetworkPolicy`: without `policyTypes`, a policy is `Ingress`, plus `Egress`
/// when it has egress rules; `SetDefaults_NetworkPolicyPort`: ports are TCP.
fn network_policy(root: &mut Object) {
    let Some(spec) = ensure_object(root, "spec") else {
        return;
    };
    if empty(spec, "policyTypes") {
        let mut types = vec![json!("Ingress")];
        if !empty(spec, "egress") {
            types.push(json!("Egress"));
        }
        spec.insert("policyTypes".into(), types.into());
    }
    for direction in ["ingress", "egress"] {
        for rule in objects_mut(spec, direction) {
            for port in objects_mut(rule, "ports") {
                fill(port, "protocol", json!("TCP"));
            }
        }
    }
}

/// `SetDefaults_IngressClass`: parameters without a scope are cluster-scoped.
fn ingress_class(root: &mut Object) {
    if let Some(parameters) = object_mut(root, "spec").and_then(|s| object_mut(s, "parameters")) {
        fill(parameters, "scope", json!("Cluster"));
    }
}

/// discovery.k8s.io/v1: `SetDefaults_EndpointPort` on an EndpointSlice's ports: name `""`,
/// protocol TCP.
pub(super) fn apply_discovery(kind: &str, root: &mut Object) {
    if kind != "EndpointSlice" {
        return;
    }
    for port in objects_mut(root, "ports") {
        fill(port, "name", json!(""));
        fill(port, "protocol", json!("TCP"));
    }
}

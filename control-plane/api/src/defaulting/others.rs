//! rbac.authorization.k8s.io/v1 (pkg/apis/rbac/v1/defaults.go), scheduling.k8s.io/v1
//! (pkg/apis/scheduling/v1/defaults.go) and flowcontrol.apiserver.k8s.io/v1
//! (pkg/apis/flowcontrol/v1/defaults.go).

use serde_json::json;

use super::fields::{
    Object, ensure_object, fill, fill_zero, object_mut, objects_mut, path_mut, text,
};

/// The RBAC API group: the default of role references and of user and group subjects.
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// rbac.authorization.k8s.io/v1: Role and ClusterRole have no defaults.
pub(super) fn apply_rbac(kind: &str, root: &mut Object) {
    if !matches!(kind, "RoleBinding" | "ClusterRoleBinding") {
        return;
    }
    // SetDefaults_RoleBinding / SetDefaults_ClusterRoleBinding.
    if let Some(role_ref) = ensure_object(root, "roleRef") {
        fill_zero(role_ref, "apiGroup", json!(RBAC_GROUP));
    }
    // SetDefaults_Subject: ServiceAccounts are in the core group ("", which the JSON omits).
    for subject in objects_mut(root, "subjects") {
        if matches!(text(subject, "kind"), "User" | "Group") {
            fill_zero(subject, "apiGroup", json!(RBAC_GROUP));
        }
    }
}

/// scheduling.k8s.io/v1 `SetDefaults_PriorityClass`: pods of the class preempt lower ones.
pub(super) fn apply_scheduling(kind: &str, root: &mut Object) {
    if kind == "PriorityClass" {
        fill(root, "preemptionPolicy", json!("PreemptLowerPriority"));
    }
}

/// flowcontrol.apiserver.k8s.io/v1.
pub(super) fn apply_flowcontrol(kind: &str, root: &mut Object) {
    let Some(spec) = ensure_object(root, "spec") else {
        return;
    };
    match kind {
        // SetDefaults_FlowSchemaSpec.
        "FlowSchema" => fill_zero(spec, "matchingPrecedence", json!(1000)),
        "PriorityLevelConfiguration" => priority_level(spec),
        _ => {}
    }
}

/// `SetDefaults_LimitedPriorityLevelConfiguration`: 30 nominal shares, nothing lendable;
/// `SetDefaults_QueuingConfiguration`: 64 queues, hands of 8, 50 requests a queue;
/// `SetDefaults_ExemptPriorityLevelConfiguration`: no shares, nothing lendable.
fn priority_level(spec: &mut Object) {
    if let Some(limited) = object_mut(spec, "limited") {
        fill(limited, "nominalConcurrencyShares", json!(30));
        fill(limited, "lendablePercent", json!(0));
        if let Some(queuing) = path_mut(limited, &["limitResponse", "queuing"]) {
            fill_zero(queuing, "queues", json!(64));
            fill_zero(queuing, "handSize", json!(8));
            fill_zero(queuing, "queueLengthLimit", json!(50));
        }
    }
    if let Some(exempt) = object_mut(spec, "exempt") {
        fill(exempt, "nominalConcurrencyShares", json!(0));
        fill(exempt, "lendablePercent", json!(0));
    }
}

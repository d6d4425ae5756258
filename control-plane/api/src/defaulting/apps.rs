//! apps/v1. Source: pkg/apis/apps/v1/defaults.go; every pod template also gets the pod spec
//! defaults of core/v1 (pkg/apis/apps/v1/zz_generated.defaults.go).

use serde_json::json;

use super::fields::{Object, ensure_object, fill, fill_zero, object_mut, objects_mut, text, zero};
use super::{core, pod};

/// Applies the defaults of apps/v1 kind `kind`. ControllerRevision has none.
pub(super) fn apply(kind: &str, root: &mut Object) {
    let Some(spec) = (match kind {
        "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" => ensure_object(root, "spec"),
        _ => None,
    }) else {
        return;
    };
    match kind {
        "Deployment" => deployment(spec),
        "ReplicaSet" => fill(spec, "replicas", json!(1)),
        "DaemonSet" => daemon_set(spec),
        _ => stateful_set(spec),
    }
    pod::template(spec);
}

/// `SetDefaults_Deployment`: one replica; a `RollingUpdate` strategy of 25% surge and 25%
/// unavailable; ten old ReplicaSets kept; a 600-second progress deadline.
fn deployment(spec: &mut Object) {
    fill(spec, "replicas", json!(1));
    if let Some(strategy) = ensure_object(spec, "strategy") {
        fill_zero(strategy, "type", json!("RollingUpdate"));
        if text(strategy, "type") == "RollingUpdate"
            && let Some(rolling) = ensure_object(strategy, "rollingUpdate")
        {
            fill(rolling, "maxUnavailable", json!("25%"));
            fill(rolling, "maxSurge", json!("25%"));
        }
    }
    fill(spec, "revisionHistoryLimit", json!(10));
    fill(spec, "progressDeadlineSeconds", json!(600));
}

/// `SetDefaults_DaemonSet`: a `RollingUpdate` strategy of one unavailable and no surge; ten
/// old revisions kept.
fn daemon_set(spec: &mut Object) {
    if let Some(strategy) = ensure_object(spec, "updateStrategy") {
        fill_zero(strategy, "type", json!("RollingUpdate"));
        if text(strategy, "type") == "RollingUpdate"
            && let Some(rolling) = ensure_object(strategy, "rollingUpdate")
        {
            fill(rolling, "maxUnavailable", json!(1));
            fill(rolling, "maxSurge", json!(0));
        }
    }
    fill(spec, "revisionHistoryLimit", json!(10));
}

/// `SetDefaults_StatefulSet`: `OrderedReady` pods; a `RollingUpdate` strategy with partition 0
/// (the `rollingUpdate` object is only created when the type was defaulted too); PVCs retained
/// on delete and on scale-down (`StatefulSetAutoDeletePVC`, GA); one replica; ten revisions.
/// Each claim template gets the PersistentVolumeClaim defaults, status phase `Pending` included.
fn stateful_set(spec: &mut Object) {
    fill_zero(spec, "podManagementPolicy", json!("OrderedReady"));
    if let Some(strategy) = ensure_object(spec, "updateStrategy") {
        if zero(strategy, "type") {
            strategy.insert("type".into(), json!("RollingUpdate"));
            fill(strategy, "rollingUpdate", json!({}));
        }
        if text(strategy, "type") == "RollingUpdate"
            && let Some(rolling) = object_mut(strategy, "rollingUpdate")
        {
            fill(rolling, "partition", json!(0));
        }
    }
    if let Some(retention) = ensure_object(spec, "persistentVolumeClaimRetentionPolicy") {
        fill_zero(retention, "whenDeleted", json!("Retain"));
        fill_zero(retention, "whenScaled", json!("Retain"));
    }
    fill(spec, "replicas", json!(1));
    fill(spec, "revisionHistoryLimit", json!(10));
    for claim in objects_mut(spec, "volumeClaimTemplates") {
        core::persistent_volume_claim(claim);
    }
}

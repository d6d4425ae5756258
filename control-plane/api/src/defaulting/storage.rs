//! storage.k8s.io/v1. Source: pkg/apis/storage/v1/defaults.go and zz_generated.defaults.go.

use serde_json::json;

use super::fields::{Object, ensure_object, fill, fill_empty, path_mut};
use super::pod;

/// Applies the defaults of storage.k8s.io/v1 kind `kind`. CSINode and CSIStorageCapacity have
/// none.
pub(super) fn apply(kind: &str, root: &mut Object) {
    match kind {
        "StorageClass" => storage_class(root),
        "CSIDriver" => csi_driver(root),
        "VolumeAttachment" => volume_attachment(root),
        _ => {}
    }
}

/// `SetDefaults_StorageClass`: volumes are deleted with their claim and bound at once.
fn storage_class(root: &mut Object) {
    fill(root, "reclaimPolicy", json!("Delete"));
    fill(root, "volumeBindingMode", json!("Immediate"));
}

/// `SetDefaults_CSIDriver`, with the feature gates of v1.33 (`CSIVolumeFSGroupPolicy`,
/// `CSIInlineVolume` GA; `SELinuxMountReadWriteOncePod` beta, on).
fn csi_driver(root: &mut Object) {
    let Some(spec) = ensure_object(root, "spec") else {
        return;
    };
    fill(spec, "attachRequired", json!(true));
    fill(spec, "podInfoOnMount", json!(false));
    fill(spec, "storageCapacity", json!(false));
    fill(spec, "fsGroupPolicy", json!("ReadWriteOnceWithFSType"));
    fill_empty(spec, "volumeLifecycleModes", json!(["Persistent"]));
    fill(spec, "requiresRepublish", json!(false));
    fill(spec, "seLinuxMount", json!(false));
}

/// An inline volume spec gets the defaults of its volume source (zz_generated.defaults.go
/// `SetObjectDefaults_VolumeAttachment`).
fn volume_attachment(root: &mut Object) {
    if let Some(inline) = path_mut(root, &["spec", "source", "inlineVolumeSpec"]) {
        pod::persistent_volume_source(inline);
    }
}

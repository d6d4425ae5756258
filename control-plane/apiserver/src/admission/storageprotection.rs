//! The StorageObjectInUseProtection admission plugin (kube's
//! `plugin/pkg/admission/storage/storageobjectinuseprotection`): every PersistentVolumeClaim
//! is created with the `kubernetes.io/pvc-protection` finalizer and every PersistentVolume
//! with `kubernetes.io/pv-protection`, so deleting one that is still in use only marks it
//! terminating; the `pvc-protection` and `pv-protection` controllers remove the finalizer
//! once no pod uses the claim / no claim is bound to the volume.

use serde_json::{Value, json};

use crate::request::Target;

/// The finalizer of claims (kube's `volumeutil.PVCProtectionFinalizer`).
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
/// The finalizer of volumes (kube's `volumeutil.PVProtectionFinalizer`).
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";

/// The finalizer a new object of core resource `plural` gets, if any.
pub fn finalizer_for(plural: &str) -> Option<&'static str> {
    match plural {
        "persistentvolumeclaims" => Some(PVC_PROTECTION),
        "persistentvolumes" => Some(PV_PROTECTION),
        _ => None,
    }
}

/// Adds `finalizer` to `object`'s `metadata.finalizers` unless it is there already.
pub fn add_finalizer(object: &mut Value, finalizer: &str) {
    let Some(root) = object.as_object_mut() else {
        return;
    };
    let meta = root.entry("metadata").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    let list = meta.entry("finalizers").or_insert_with(|| json!([]));
    match list.as_array_mut() {
        Some(items) if items.iter().any(|f| f.as_str() == Some(finalizer)) => {}
        Some(items) => items.push(json!(finalizer)),
        None => *list = json!([finalizer]),
    }
}

/// The plugin on creates (claims and volumes of the core group).
pub(crate) fn admit(target: &Target, object: &mut Value) {
    if target.custom.is_some() || !target.resource.group.is_empty() {
        return;
    }
    if let Some(finalizer) = finalizer_for(target.resource.plural) {
        add_finalizer(object, finalizer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_and_volumes_get_their_finalizer_once() {
        let cases = [
            (
                "persistentvolumeclaims",
                json!({}),
                Some(json!([PVC_PROTECTION])),
            ),
            (
                "persistentvolumes",
                json!({"metadata": {}}),
                Some(json!([PV_PROTECTION])),
            ),
            (
                "persistentvolumeclaims",
                json!({"metadata": {"finalizers": ["example.com/keep"]}}),
                Some(json!(["example.com/keep", PVC_PROTECTION])),
            ),
            (
                "persistentvolumes",
                json!({"metadata": {"finalizers": [PV_PROTECTION]}}),
                Some(json!([PV_PROTECTION])),
            ),
            ("pods", json!({"metadata": {}}), None),
        ];
        for (plural, mut object, want) in cases {
            if let Some(finalizer) = finalizer_for(plural) {
                add_finalizer(&mut object, finalizer);
            }
            assert_eq!(
                object.pointer("/metadata/finalizers").cloned(),
                want,
                "{plural}"
            );
        }
    }
}

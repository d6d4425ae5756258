//! PersistentVolumes and their claims: the names and matching rules the PV binder, the
//! scheduler's volume binding and the node agent share (Kubernetes'
//! `pkg/controller/volume/persistentvolume/util` and `component-helpers/storage/volume`), and
//! keelson's built-in local-path provisioner (k3s's `local-path`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};

use crate::{quantity::Quantity, selectors};

/// On a claim: the binder finished binding it (kube's `AnnBindCompleted`).
pub const ANN_BIND_COMPLETED: &str = "pv.kubernetes.io/bind-completed";
/// On a claim or volume: the binder, not the user, bound it (kube's `AnnBoundByController`).
pub const ANN_BOUND_BY_CONTROLLER: &str = "pv.kubernetes.io/bound-by-controller";
/// On a volume: the provisioner that created it (kube's `AnnDynamicallyProvisioned`).
pub const ANN_PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// On a claim: the node the scheduler picked for its first consumer (kube's `AnnSelectedNode`).
pub const ANN_SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// On a claim: the provisioner asked to create its volume (kube's `AnnStorageProvisioner`).
pub const ANN_STORAGE_PROVISIONER: &str = "volume.kubernetes.io/storage-provisioner";
/// The deprecated twin of [`ANN_STORAGE_PROVISIONER`], still set by kube.
pub const ANN_BETA_STORAGE_PROVISIONER: &str = "volume.beta.kubernetes.io/storage-provisioner";
/// The deprecated class annotation, read when `storageClassName` is absent.
pub const ANN_BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";
/// On a StorageClass: it is the default one (`"true"`).
pub const ANN_DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
/// The node label naming the node (what local volumes' node affinity selects).
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// The built-in StorageClass (k3s's name).
pub const LOCAL_PATH_CLASS: &str = "local-path";
/// The built-in provisioner's name, in the class's `provisioner` and on its volumes.
pub const LOCAL_PATH_PROVISIONER: &str = "keelson.io/local-path";
/// The finalizer on local-path volumes: the node agent of the volume's node removes the
/// directory, then this finalizer, when the volume is deleted.
pub const LOCAL_PATH_FINALIZER: &str = "keelson.io/local-path-cleanup";
/// Where local-path volumes live on nodes unless configured otherwise.
pub const DEFAULT_LOCAL_PATH_ROOT: &str = "/var/lib/keelson/storage";

/// A claim's class: `spec.storageClassName`, else the beta annotation, else `""`.
pub fn claim_class(claim: &PersistentVolumeClaim) -> &str {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .or_else(|| annotation(&claim.metadata.annotations, ANN_BETA_STORAGE_CLASS))
        .unwrap_or("")
}

/// A volume's class: `spec.storageClassName`, else the beta annotation, else `""`.
pub fn volume_class(volume: &PersistentVolume) -> &str {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.storage_class_name.as_deref())
        .or_else(|| annotation(&volume.metadata.annotations, ANN_BETA_STORAGE_CLASS))
        .unwrap_or("")
}

/// An annotation's value.
pub fn annotation<'a>(
    annotations: &'a Option<BTreeMap<String, String>>,
    key: &str,
) -> Option<&'a str> {
    annotations.as_ref()?.get(key).map(String::as_str)
}

/// The storage a claim requests, in bytes (0 when absent or unparsable).
pub fn claim_request(claim: &PersistentVolumeClaim) -> i64 {
    claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .and_then(|q| Quantity::try_from(q).ok())
        .map_or(0, |q| q.value())
}

/// A volume's capacity, in bytes (0 when absent or unparsable).
pub fn volume_capacity(volume: &PersistentVolume) -> i64 {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| Quantity::try_from(q).ok())
        .map_or(0, |q| q.value())
}

/// Whether `volume` may be used on the node `name` with `labels`: it has no required node
/// affinity, or one that matches.
pub fn volume_fits_node(
    volume: &PersistentVolume,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    volume
        .spec
        .as_ref()
        .and_then(|s| s.node_affinity.as_ref())
        .and_then(|a| a.required.as_ref())
        .is_none_or(|required| selectors::node_selector_matches(required, name, labels))
}

/// The node a volume's required node affinity names by [`HOSTNAME_LABEL`] `In [node]` (how
/// local-path volumes are pinned), if any.
pub fn pinned_node(volume: &PersistentVolume) -> Option<&str> {
    let required = volume
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?;
    required.node_selector_terms.iter().find_map(|term| {
        term.match_expressions.iter().flatten().find_map(|e| {
            match (e.key.as_str(), e.operator.as_str(), e.values.as_deref()) {
                (HOSTNAME_LABEL, "In", Some([node])) => Some(node.as_str()),
                _ => None,
            }
        })
    })
}

/// Whether `volume`'s claimRef names `claim` (by namespace and name, and by uid when the
/// reference has one) — kube's `IsVolumeBoundToClaim`.
pub fn volume_refers_to(volume: &PersistentVolume, claim: &PersistentVolumeClaim) -> bool {
    let Some(reference) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return false;
    };
    reference.name == claim.metadata.name
        && reference.namespace == claim.metadata.namespace
        && reference
            .uid
            .as_deref()
            .filter(|u| !u.is_empty())
            .is_none_or(|uid| Some(uid) == claim.metadata.uid.as_deref())
}

fn volume_mode_of(mode: Option<&String>) -> &str {
    mode.map_or("Filesystem", String::as_str)
}

/// Why a volume does not satisfy a claim (kube's `checkVolumeSatisfyClaim`).
pub fn volume_satisfies(
    volume: &PersistentVolume,
    claim: &PersistentVolumeClaim,
) -> Result<(), String> {
    let (Some(pv), Some(spec)) = (volume.spec.as_ref(), claim.spec.as_ref()) else {
        return Err("no spec".to_owned());
    };
    if volume_capacity(volume) < claim_request(claim) {
        return Err("requested PV is too small".to_owned());
    }
    if volume_class(volume) != claim_class(claim) {
        return Err("storageClassName does not match".to_owned());
    }
    if volume_mode_of(pv.volume_mode.as_ref()) != volume_mode_of(spec.volume_mode.as_ref()) {
        return Err("incompatible volumeMode".to_owned());
    }
    let offered = pv.access_modes.as_deref().unwrap_or_default();
    if !spec
        .access_modes
        .iter()
        .flatten()
        .all(|mode| offered.contains(mode))
    {
        return Err("incompatible accessMode".to_owned());
    }
    Ok(())
}

/// The volume a claim binds to among `volumes` (kube's `FindMatchingVolume`): one already
/// reserved for it by its claimRef if it satisfies the claim; else the smallest available one
/// that satisfies it and matches its selector. With `node` (the node the claim's consumer was
/// scheduled to) only volumes usable there count; `delay_binding` without a node finds none
/// (WaitForFirstConsumer claims wait for the scheduler).
pub fn find_matching_volume<'a>(
    claim: &PersistentVolumeClaim,
    volumes: impl IntoIterator<Item = &'a PersistentVolume>,
    node: Option<(&str, &BTreeMap<String, String>)>,
    delay_binding: bool,
) -> Option<&'a PersistentVolume> {
    let selector = claim.spec.as_ref().and_then(|s| s.selector.as_ref());
    let mut best: Option<&PersistentVolume> = None;
    for volume in volumes {
        if volume.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if volume_satisfies(volume, claim).is_err() {
            continue;
        }
        let usable_here = node.is_none_or(|(name, labels)| volume_fits_node(volume, name, labels));
        if volume_refers_to(volume, claim) {
            if usable_here {
                return Some(volume);
            }
            continue;
        }
        if volume
            .spec
            .as_ref()
            .and_then(|s| s.claim_ref.as_ref())
            .is_some()
        {
            continue;
        }
        if (delay_binding && node.is_none()) || !usable_here {
            continue;
        }
        let labels = volume.metadata.labels.clone().unwrap_or_default();
        if selector.is_some() && !selectors::label_selector_matches(selector, &labels) {
            continue;
        }
        if best.is_none_or(|b| volume_capacity(volume) < volume_capacity(b)) {
            best = Some(volume);
        }
    }
    best
}

/// The directory of a local-path volume (k3s's layout: `<root>/<volume>_<namespace>_<claim>`).
pub fn local_path_dir(root: &str, volume: &str, namespace: &str, claim: &str) -> String {
    format!(
        "{}/{volume}_{namespace}_{claim}",
        root.trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{
        api::core::v1::{
            ObjectReference, PersistentVolumeClaimSpec, PersistentVolumeSpec, VolumeNodeAffinity,
            VolumeResourceRequirements,
        },
        apimachinery::pkg::{api::resource::Quantity as Q, apis::meta::v1::ObjectMeta},
    };
    use serde_json::json;

    fn claim(class: Option<&str>, size: &str, modes: &[&str]) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".into()),
                namespace: Some("default".into()),
                uid: Some("c-1".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: class.map(Into::into),
                access_modes: Some(modes.iter().map(|m| (*m).to_owned()).collect()),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".into(), Q(size.into()))])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        }
    }

    fn volume(name: &str, class: &str, size: &str, modes: &[&str]) -> PersistentVolume {
        PersistentVolume {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeSpec {
                storage_class_name: Some(class.into()),
                capacity: Some(BTreeMap::from([("storage".into(), Q(size.into()))])),
                access_modes: Some(modes.iter().map(|m| (*m).to_owned()).collect()),
                ..PersistentVolumeSpec::default()
            }),
            ..PersistentVolume::default()
        }
    }

    fn pinned(mut pv: PersistentVolume, node: &str) -> PersistentVolume {
        let affinity: VolumeNodeAffinity = serde_json::from_value(json!({"required": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": HOSTNAME_LABEL, "operator": "In", "values": [node]}]}]}}))
        .unwrap();
        pv.spec.as_mut().unwrap().node_affinity = Some(affinity);
        pv
    }

    fn name(pv: Option<&PersistentVolume>) -> Option<&str> {
        pv.and_then(|v| v.metadata.name.as_deref())
    }

    #[test]
    fn the_smallest_fitting_volume_wins() {
        let rwo = &["ReadWriteOnce"];
        let volumes = [
            volume("big", "", "10Gi", rwo),
            volume("small", "", "1Gi", rwo),
            volume("tiny", "", "500Mi", rwo),
            volume("other-class", "fast", "1Gi", rwo),
            volume("rox", "", "1Gi", &["ReadOnlyMany"]),
        ];
        let cases = [
            (claim(None, "1Gi", rwo), Some("small")),
            (claim(None, "2Gi", rwo), Some("big")),
            (claim(None, "20Gi", rwo), None),
            (claim(Some("fast"), "1Gi", rwo), Some("other-class")),
            (claim(None, "1Gi", &["ReadOnlyMany"]), Some("rox")),
            (claim(None, "1Gi", &["ReadWriteMany"]), None),
        ];
        for (claim, want) in cases {
            assert_eq!(
                name(find_matching_volume(&claim, &volumes, None, false)),
                want,
                "{claim:?}"
            );
        }
    }

    #[test]
    fn reserved_bound_selected_and_pinned_volumes() {
        let rwo = &["ReadWriteOnce"];
        let claim = claim(None, "1Gi", rwo);
        let mut taken = volume("taken", "", "1Gi", rwo);
        taken.spec.as_mut().unwrap().claim_ref = Some(ObjectReference {
            name: Some("other".into()),
            namespace: Some("default".into()),
            ..ObjectReference::default()
        });
        let mut reserved = volume("reserved", "", "5Gi", rwo);
        reserved.spec.as_mut().unwrap().claim_ref = Some(ObjectReference {
            name: Some("data".into()),
            namespace: Some("default".into()),
            ..ObjectReference::default()
        });
        // A volume reserved for the claim wins over a smaller free one.
        let free = volume("free", "", "1Gi", rwo);
        assert_eq!(
            name(find_matching_volume(
                &claim,
                [&taken, &free, &reserved],
                None,
                false
            )),
            Some("reserved")
        );
        assert_eq!(
            name(find_matching_volume(&claim, [&taken], None, false)),
            None
        );
        // Pinned volumes: only on their node, and WaitForFirstConsumer waits for a node.
        let a = pinned(volume("on-a", "", "1Gi", rwo), "a");
        let labels = |n: &str| BTreeMap::from([(HOSTNAME_LABEL.to_owned(), n.to_owned())]);
        let (la, lb) = (labels("a"), labels("b"));
        assert_eq!(
            name(find_matching_volume(&claim, [&a], Some(("a", &la)), true)),
            Some("on-a")
        );
        assert_eq!(
            name(find_matching_volume(&claim, [&a], Some(("b", &lb)), true)),
            None
        );
        assert_eq!(name(find_matching_volume(&claim, [&a], None, true)), None);
        assert_eq!(pinned_node(&a), Some("a"));
        assert_eq!(pinned_node(&free), None);
        // A selector narrows the choice to labelled volumes.
        let mut selective = claim.clone();
        selective.spec.as_mut().unwrap().selector =
            Some(serde_json::from_value(json!({"matchLabels": {"tier": "gold"}})).unwrap());
        let mut gold = volume("gold", "", "8Gi", rwo);
        gold.metadata.labels = Some(BTreeMap::from([("tier".into(), "gold".into())]));
        assert_eq!(
            name(find_matching_volume(
                &selective,
                [&free, &gold],
                None,
                false
            )),
            Some("gold")
        );
    }

    #[test]
    fn local_path_layout_is_k3s() {
        assert_eq!(
            local_path_dir("/var/lib/keelson/storage/", "pvc-1", "default", "data"),
            "/var/lib/keelson/storage/pvc-1_default_data"
        );
    }
}

//! The binder's decisions (pure): what a claim or a volume needs next, as a list of
//! [`Step`]s the reconcile performs in order. The rules follow kube's
//! `pkg/controller/volume/persistentvolume/pv_controller.go` (`syncUnboundClaim`,
//! `syncBoundClaim`, `syncVolume`, `bind`, `reclaimVolume`, `provisionClaimOperation`).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::{
            HostPathVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
            PersistentVolumeSpec, VolumeNodeAffinity,
        },
        storage::v1::StorageClass,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use keelson_api::storage::{
    self as st, ANN_BIND_COMPLETED, ANN_BOUND_BY_CONTROLLER, ANN_PROVISIONED_BY, ANN_SELECTED_NODE,
    HOSTNAME_LABEL, LOCAL_PATH_FINALIZER, LOCAL_PATH_PROVISIONER,
};
use serde_json::{Value, json};

/// One write the reconcile makes.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A merge patch of the volume `name` (main resource).
    PatchVolume(String, Value),
    /// A merge patch of the volume `name`'s status.
    PatchVolumeStatus(String, Value),
    /// A merge patch of the claim (main resource).
    PatchClaim(Value),
    /// A merge patch of the claim's status.
    PatchClaimStatus(Value),
    /// Create this volume (a provisioned one; AlreadyExists counts as done).
    CreateVolume(Box<PersistentVolume>),
    /// Delete the volume `name`.
    DeleteVolume(String),
    /// An Event on the claim (`true`) or the volume (`false`): type, reason, message.
    Event {
        /// About the claim (else the volume).
        on_claim: bool,
        /// `Normal` or `Warning`.
        type_: &'static str,
        /// The reason.
        reason: &'static str,
        /// The message.
        message: String,
    },
}

/// What the binder knows about a claim's StorageClass.
#[derive(Debug, Clone, PartialEq)]
pub enum Class<'a> {
    /// The claim names no class (`""`).
    NoClass,
    /// The claim names a class that does not exist.
    Missing(&'a str),
    /// The class.
    Found(&'a StorageClass),
}

fn phase_of_claim(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn phase_of_volume(volume: &PersistentVolume) -> Option<&str> {
    volume.status.as_ref().and_then(|s| s.phase.as_deref())
}

fn waits_for_consumer(class: &StorageClass) -> bool {
    class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer")
}

fn claim_event(type_: &'static str, reason: &'static str, message: String) -> Step {
    Step::Event {
        on_claim: true,
        type_,
        reason,
        message,
    }
}

fn volume_event(type_: &'static str, reason: &'static str, message: String) -> Step {
    Step::Event {
        on_claim: false,
        type_,
        reason,
        message,
    }
}

/// The claim stays Pending and `event` says why (the reconcile records an Event only when
/// the reason changes).
fn pending(claim: &PersistentVolumeClaim, event: Step) -> Vec<Step> {
    if phase_of_claim(claim) == Some("Pending") {
        return vec![event];
    }
    vec![
        Step::PatchClaimStatus(json!({"status": {"phase": "Pending"}})),
        event,
    ]
}

/// The steps that bind `claim` and `volume` to each other (kube's `bind`): the volume's
/// claimRef (guarded by its resourceVersion), its phase, the claim's `volumeName` and
/// annotations, its phase, capacity and access modes. Steps already done are left out.
pub fn bind(claim: &PersistentVolumeClaim, volume: &PersistentVolume) -> Vec<Step> {
    let mut steps = Vec::new();
    let volume_name = volume.metadata.name.clone().unwrap_or_default();
    let reference = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let has_uid = reference
        .and_then(|r| r.uid.as_deref())
        .is_some_and(|u| !u.is_empty());
    if !(st::volume_refers_to(volume, claim) && has_uid) {
        let mut patch = json!({
            "metadata": {"resourceVersion": volume.metadata.resource_version},
            "spec": {"claimRef": {
                "kind": "PersistentVolumeClaim",
                "apiVersion": "v1",
                "namespace": claim.metadata.namespace,
                "name": claim.metadata.name,
                "uid": claim.metadata.uid,
                "resourceVersion": claim.metadata.resource_version,
            }},
        });
        if reference.is_none() {
            patch["metadata"]["annotations"] = json!({ANN_BOUND_BY_CONTROLLER: "yes"});
        }
        steps.push(Step::PatchVolume(volume_name.clone(), patch));
    }
    if phase_of_volume(volume) != Some("Bound") {
        steps.push(Step::PatchVolumeStatus(
            volume_name.clone(),
            json!({"status": {"phase": "Bound"}}),
        ));
    }
    let claimed = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("");
    let completed = st::annotation(&claim.metadata.annotations, ANN_BIND_COMPLETED).is_some();
    if claimed != volume_name || !completed {
        let mut annotations = json!({ANN_BIND_COMPLETED: "yes"});
        if claimed.is_empty() {
            annotations[ANN_BOUND_BY_CONTROLLER] = json!("yes");
        }
        steps.push(Step::PatchClaim(json!({
            "metadata": {"annotations": annotations},
            "spec": {"volumeName": volume_name},
        })));
    }
    let spec = volume.spec.as_ref();
    let status = claim.status.as_ref();
    let capacity = spec.and_then(|s| s.capacity.as_ref());
    let modes = spec.and_then(|s| s.access_modes.as_ref());
    if phase_of_claim(claim) != Some("Bound")
        || status.and_then(|s| s.capacity.as_ref()) != capacity
        || status.and_then(|s| s.access_modes.as_ref()) != modes
    {
        steps.push(Step::PatchClaimStatus(json!({"status": {
            "phase": "Bound", "capacity": capacity, "accessModes": modes,
        }})));
    }
    steps
}

/// The name of the volume provisioned for a claim (kube's `pvc-<claim uid>`).
pub fn provisioned_name(claim: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", claim.metadata.uid.as_deref().unwrap_or_default())
}

/// The local-path volume for `claim` on `node` under `root` (k3s's provisioner): a
/// `DirectoryOrCreate` hostPath pinned to the node by [`HOSTNAME_LABEL`], reserved for the
/// claim, with the class's reclaim policy (Delete by default) and the cleanup finalizer.
pub fn local_path_volume(
    claim: &PersistentVolumeClaim,
    class: &StorageClass,
    node: &str,
    root: &str,
) -> PersistentVolume {
    let name = provisioned_name(claim);
    let namespace = claim.metadata.namespace.clone().unwrap_or_default();
    let claim_name = claim.metadata.name.clone().unwrap_or_default();
    let spec = claim.spec.clone().unwrap_or_default();
    let request = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .cloned();
    let affinity: Option<VolumeNodeAffinity> = serde_json::from_value(json!({"required": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": HOSTNAME_LABEL, "operator": "In", "values": [node]},
        ]}],
    }}))
    .ok();
    PersistentVolume {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            annotations: Some(BTreeMap::from([
                (
                    ANN_PROVISIONED_BY.to_owned(),
                    LOCAL_PATH_PROVISIONER.to_owned(),
                ),
                (ANN_BOUND_BY_CONTROLLER.to_owned(), "yes".to_owned()),
            ])),
            finalizers: Some(vec![LOCAL_PATH_FINALIZER.to_owned()]),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeSpec {
            access_modes: spec.access_modes.clone(),
            capacity: request.map(|q| BTreeMap::from([("storage".to_owned(), q)])),
            claim_ref: Some(ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("PersistentVolumeClaim".into()),
                namespace: Some(namespace.clone()),
                name: Some(claim_name.clone()),
                uid: claim.metadata.uid.clone(),
                resource_version: claim.metadata.resource_version.clone(),
                ..ObjectReference::default()
            }),
            host_path: Some(HostPathVolumeSource {
                path: st::local_path_dir(root, &name, &namespace, &claim_name),
                type_: Some("DirectoryOrCreate".into()),
            }),
            node_affinity: affinity,
            persistent_volume_reclaim_policy: Some(
                class
                    .reclaim_policy
                    .clone()
                    .unwrap_or_else(|| "Delete".into()),
            ),
            storage_class_name: class.metadata.name.clone(),
            volume_mode: spec.volume_mode.clone(),
            mount_options: class.mount_options.clone(),
            ..PersistentVolumeSpec::default()
        }),
        status: None,
    }
}

/// What an unbound or bound claim needs (kube's `syncClaim`). `volumes` are every volume,
/// `node_labels` the labels of the node named by the claim's selected-node annotation, `root`
/// the local-path directory root.
pub fn sync_claim(
    claim: &PersistentVolumeClaim,
    volumes: &[&PersistentVolume],
    class: &Class<'_>,
    node_labels: Option<&BTreeMap<String, String>>,
    root: &str,
) -> Vec<Step> {
    if claim.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    let bound_to = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .filter(|n| !n.is_empty());
    if let Some(volume_name) = bound_to {
        return sync_bound_claim(claim, volume_name, volumes);
    }
    let delay = matches!(class, Class::Found(c) if waits_for_consumer(c));
    let selected = st::annotation(&claim.metadata.annotations, ANN_SELECTED_NODE);
    let fallback;
    let node = match (selected, node_labels) {
        (Some(name), Some(labels)) => Some((name, labels)),
        (Some(name), None) => {
            fallback = BTreeMap::from([(HOSTNAME_LABEL.to_owned(), name.to_owned())]);
            Some((name, &fallback))
        }
        (None, _) => None,
    };
    if let Some(volume) = st::find_matching_volume(claim, volumes.iter().copied(), node, delay) {
        return bind(claim, volume);
    }
    match class {
        Class::NoClass => pending(
            claim,
            claim_event(
                "Normal",
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set".into(),
            ),
        ),
        Class::Missing(name) => pending(
            claim,
            claim_event(
                "Warning",
                "ProvisioningFailed",
                format!("storageclass.storage.k8s.io \"{name}\" not found"),
            ),
        ),
        Class::Found(_) if delay && selected.is_none() => pending(
            claim,
            claim_event(
                "Normal",
                "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding".into(),
            ),
        ),
        Class::Found(class) if class.provisioner == LOCAL_PATH_PROVISIONER => match selected {
            Some(node) => {
                let volume = local_path_volume(claim, class, node, root);
                let name = volume.metadata.name.clone().unwrap_or_default();
                let mut steps = vec![Step::PatchClaim(json!({"metadata": {"annotations": {
                    st::ANN_STORAGE_PROVISIONER: LOCAL_PATH_PROVISIONER,
                    st::ANN_BETA_STORAGE_PROVISIONER: LOCAL_PATH_PROVISIONER,
                }}}))];
                steps.push(Step::CreateVolume(Box::new(volume)));
                steps.push(claim_event(
                    "Normal",
                    "ProvisioningSucceeded",
                    format!(
                        "Successfully provisioned volume {name} using {LOCAL_PATH_PROVISIONER}"
                    ),
                ));
                steps
            }
            None => pending(
                claim,
                claim_event(
                    "Warning",
                    "ProvisioningFailed",
                    "configuration error, no node was specified".into(),
                ),
            ),
        },
        Class::Found(class) => pending(
            claim,
            claim_event(
                "Normal",
                "ExternalProvisioning",
                format!(
                    "Waiting for a volume to be created either by the external provisioner \
                     '{}' or manually by the system administrator. If volume creation is \
                     delayed, please verify that the provisioner is running and correctly \
                     registered.",
                    class.provisioner
                ),
            ),
        ),
    }
}

fn lost(claim: &PersistentVolumeClaim, reason: &'static str, message: &str) -> Vec<Step> {
    if phase_of_claim(claim) == Some("Lost") {
        return Vec::new();
    }
    vec![
        Step::PatchClaimStatus(json!({"status": {"phase": "Lost"}})),
        claim_event("Warning", reason, message.to_owned()),
    ]
}

fn sync_bound_claim(
    claim: &PersistentVolumeClaim,
    volume_name: &str,
    volumes: &[&PersistentVolume],
) -> Vec<Step> {
    let Some(volume) = volumes
        .iter()
        .find(|v| v.metadata.name.as_deref() == Some(volume_name))
    else {
        return lost(
            claim,
            "ClaimLost",
            "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
        );
    };
    let reference = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    match reference {
        // Bound by the user through volumeName: bind the volume if it fits.
        None => match st::volume_satisfies(volume, claim) {
            Ok(()) => bind(claim, volume),
            Err(why) => pending(
                claim,
                claim_event(
                    "Warning",
                    "VolumeMismatch",
                    format!("Cannot bind to requested volume \"{volume_name}\": {why}"),
                ),
            ),
        },
        Some(_) if st::volume_refers_to(volume, claim) => bind(claim, volume),
        Some(_) => lost(
            claim,
            "ClaimMisbound",
            "Two claims are bound to the same volume, this one is bound incorrectly",
        ),
    }
}

/// What a volume needs (kube's `syncVolume` and `reclaimVolume`); `claim` is the one its
/// claimRef names, if it exists.
pub fn sync_volume(volume: &PersistentVolume, claim: Option<&PersistentVolumeClaim>) -> Vec<Step> {
    if volume.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    let name = volume.metadata.name.clone().unwrap_or_default();
    let phase = phase_of_volume(volume);
    let set_phase = |to: &str| {
        (phase != Some(to))
            .then(|| Step::PatchVolumeStatus(name.clone(), json!({"status": {"phase": to}})))
    };
    let Some(reference) = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) else {
        return set_phase("Available").into_iter().collect();
    };
    let uid = reference.uid.as_deref().unwrap_or_default();
    if uid.is_empty() {
        // Reserved for a claim that has not bound yet.
        return set_phase("Available").into_iter().collect();
    }
    if let Some(claim) = claim.filter(|c| c.metadata.uid.as_deref() == Some(uid)) {
        let claimed = claim.spec.as_ref().and_then(|s| s.volume_name.as_deref());
        return match claimed {
            Some(n) if n == name => set_phase("Bound").into_iter().collect(),
            // The claim binds on its own sync (a provisioned or pre-bound volume).
            _ => Vec::new(),
        };
    }
    // The claim is gone: released, then reclaimed.
    let mut steps: Vec<Step> = set_phase("Released").into_iter().collect();
    let policy = volume
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        .unwrap_or("Retain");
    match policy {
        "Retain" => {}
        "Delete" => {
            let provisioner = st::annotation(&volume.metadata.annotations, ANN_PROVISIONED_BY);
            if provisioner == Some(LOCAL_PATH_PROVISIONER) {
                steps.push(Step::DeleteVolume(name));
            } else if phase != Some("Failed") {
                let message = format!(
                    "error getting deleter volume plugin for volume \"{name}\": no deletable \
                     volume plugin matched"
                );
                steps = vec![
                    Step::PatchVolumeStatus(
                        name,
                        json!({"status": {"phase": "Failed", "message": message}}),
                    ),
                    volume_event("Warning", "VolumeFailedDelete", message),
                ];
            }
        }
        other => {
            if phase != Some("Failed") {
                let message = format!("reclaim policy {other} is not supported by keelson");
                steps = vec![
                    Step::PatchVolumeStatus(
                        name,
                        json!({"status": {"phase": "Failed", "message": message}}),
                    ),
                    volume_event("Warning", "VolumeFailedRecycle", message),
                ];
            }
        }
    }
    steps
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;

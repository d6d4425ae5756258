//! Storage: the core group's persistent volumes and claims, and storage.k8s.io/v1's storage
//! classes, CSI drivers, CSI nodes, volume attachments and CSI storage capacities.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{
    AGE, Column, NAME, age, col, count, flag, flag_or, list, name, quantity, text, text_or,
};

/// The annotation that names a volume's or claim's class before `storageClassName`, and wins
/// over it.
const BETA_STORAGE_CLASS: &str = "volume.beta.kubernetes.io/storage-class";

/// `GetAccessModesAsString`: RWO, ROX, RWX, RWOP, in that order, each once.
fn access_modes(value: &Value, pointer: &str) -> String {
    let modes = list(value, pointer);
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| modes.iter().any(|m| m.as_str() == Some(*mode)))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The storage class of a volume or claim: the beta annotation when present (even empty),
/// else `spec.storageClassName`.
fn storage_class(object: &Value) -> &str {
    match object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(BETA_STORAGE_CLASS))
    {
        Some(Value::String(class)) => class,
        _ => text(object, "/spec/storageClassName"),
    }
}

fn deleting(object: &Value) -> bool {
    object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|d| !d.is_null())
}

/// `<unset>` unless the optional string field at `pointer` is set.
fn or_unset<'a>(object: &'a Value, pointer: &str) -> &'a str {
    match object.pointer(pointer) {
        Some(Value::String(set)) => set,
        _ => "<unset>",
    }
}

const VOLUME_MODE: &str = "volumeMode defines if a volume is intended to be used with a \
                           formatted filesystem or to remain in raw block state.";

pub(super) const PERSISTENT_VOLUME: &[Column] = &[
    NAME,
    col(
        "Capacity",
        "string",
        0,
        "capacity is the description of the persistent volume's resources and capacity.",
    ),
    col(
        "Access Modes",
        "string",
        0,
        "accessModes contains all ways the volume can be mounted.",
    ),
    col(
        "Reclaim Policy",
        "string",
        0,
        "persistentVolumeReclaimPolicy defines what happens to a persistent volume when \
         released from its claim.",
    ),
    col(
        "Status",
        "string",
        0,
        "phase indicates if a volume is available, bound to a claim, or released by a claim.",
    ),
    col(
        "Claim",
        "string",
        0,
        "claimRef is part of a bi-directional binding between PersistentVolume and \
         PersistentVolumeClaim.",
    ),
    col("StorageClass", "string", 0, "StorageClass of the pv"),
    col(
        "VolumeAttributesClass",
        "string",
        0,
        "VolumeAttributesClass of the pv",
    ),
    col(
        "Reason",
        "string",
        0,
        "reason is a brief CamelCase string that describes any failure and is meant for machine \
         parsing and tidy display in the CLI.",
    ),
    AGE,
    col("VolumeMode", "string", 1, VOLUME_MODE),
];

/// PersistentVolume: Name, Capacity, Access Modes, Reclaim Policy, Status (`Terminating`
/// while deleted), Claim (`namespace/name`), StorageClass, VolumeAttributesClass (`<unset>`),
/// Reason, Age, VolumeMode. Unset fields read as Kubernetes' defaults: reclaim policy
/// Retain, phase Pending, mode Filesystem.
pub(super) fn persistent_volume_cells(volume: &Value, now: Timestamp) -> Vec<Value> {
    let claim = match volume.pointer("/spec/claimRef") {
        Some(claim @ Value::Object(_)) => {
            format!("{}/{}", text(claim, "/namespace"), text(claim, "/name"))
        }
        _ => String::new(),
    };
    let phase = if deleting(volume) {
        "Terminating"
    } else {
        text_or(volume, "/status/phase", "Pending")
    };
    vec![
        name(volume),
        json!(quantity(volume, "/spec/capacity/storage", "0")),
        json!(access_modes(volume, "/spec/accessModes")),
        json!(text_or(
            volume,
            "/spec/persistentVolumeReclaimPolicy",
            "Retain"
        )),
        json!(phase),
        json!(claim),
        json!(storage_class(volume)),
        json!(or_unset(volume, "/spec/volumeAttributesClassName")),
        json!(text(volume, "/status/reason")),
        age(volume, now),
        json!(text_or(volume, "/spec/volumeMode", "Filesystem")),
    ]
}

pub(super) const PERSISTENT_VOLUME_CLAIM: &[Column] = &[
    NAME,
    col(
        "Status",
        "string",
        0,
        "phase represents the current phase of PersistentVolumeClaim.",
    ),
    col(
        "Volume",
        "string",
        0,
        "volumeName is the binding reference to the PersistentVolume backing this claim.",
    ),
    col(
        "Capacity",
        "string",
        0,
        "capacity represents the actual resources of the underlying volume.",
    ),
    col(
        "Access Modes",
        "string",
        0,
        "accessModes contains the actual access modes the volume backing the PVC has.",
    ),
    col("StorageClass", "string", 0, "StorageClass of the pvc"),
    col(
        "VolumeAttributesClass",
        "string",
        0,
        "VolumeAttributesClass of the pvc",
    ),
    AGE,
    col(
        "VolumeMode",
        "string",
        1,
        "volumeMode defines what type of volume is required by the claim.",
    ),
];

/// PersistentVolumeClaim: Name, Status (`Terminating` while deleted), Volume, Capacity and
/// Access Modes (from the status, once bound to a volume; empty before), StorageClass,
/// VolumeAttributesClass (`<unset>`), Age, VolumeMode. Unset fields read as Kubernetes'
/// defaults: phase Pending, mode Filesystem.
pub(super) fn persistent_volume_claim_cells(claim: &Value, now: Timestamp) -> Vec<Value> {
    let phase = if deleting(claim) {
        "Terminating"
    } else {
        text_or(claim, "/status/phase", "Pending")
    };
    let volume = text(claim, "/spec/volumeName");
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(claim, "/status/capacity/storage", "0"),
            access_modes(claim, "/status/accessModes"),
        )
    };
    vec![
        name(claim),
        json!(phase),
        json!(volume),
        json!(capacity),
        json!(modes),
        json!(storage_class(claim)),
        json!(or_unset(claim, "/spec/volumeAttributesClassName")),
        age(claim, now),
        json!(text_or(claim, "/spec/volumeMode", "Filesystem")),
    ]
}

pub(super) const STORAGE_CLASS: &[Column] = &[
    NAME,
    col(
        "Provisioner",
        "string",
        0,
        "provisioner indicates the type of the provisioner.",
    ),
    col(
        "ReclaimPolicy",
        "string",
        0,
        "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes \
         of this storage class.",
    ),
    col(
        "VolumeBindingMode",
        "string",
        0,
        "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound.",
    ),
    col(
        "AllowVolumeExpansion",
        "string",
        0,
        "allowVolumeExpansion shows whether the storage class allow volume expand.",
    ),
    AGE,
];

/// StorageClass: Name (with ` (default)` when annotated as the default class), Provisioner,
/// ReclaimPolicy (Delete when unset), VolumeBindingMode (Immediate when unset),
/// AllowVolumeExpansion (a boolean), Age.
pub(super) fn storage_class_cells(class: &Value, now: Timestamp) -> Vec<Value> {
    let annotations = class.pointer("/metadata/annotations");
    let is_default = [
        "storageclass.kubernetes.io/is-default-class",
        "storageclass.beta.kubernetes.io/is-default-class",
    ]
    .iter()
    .any(|key| {
        annotations
            .and_then(|a| a.get(*key))
            .and_then(Value::as_str)
            == Some("true")
    });
    let mut class_name = text(class, "/metadata/name").to_owned();
    if is_default {
        class_name.push_str(" (default)");
    }
    vec![
        json!(class_name),
        json!(text(class, "/provisioner")),
        json!(text_or(class, "/reclaimPolicy", "Delete")),
        json!(text_or(class, "/volumeBindingMode", "Immediate")),
        json!(flag(class, "/allowVolumeExpansion")),
        age(class, now),
    ]
}

pub(super) const CSI_DRIVER: &[Column] = &[
    NAME,
    col(
        "AttachRequired",
        "boolean",
        0,
        "attachRequired indicates this CSI volume driver requires an attach operation (because \
         it implements the CSI ControllerPublishVolume() method), and that the Kubernetes attach \
         detach controller should call the attach volume interface which checks the \
         volumeattachment status and waits until the volume is attached before proceeding to \
         mounting.",
    ),
    col(
        "PodInfoOnMount",
        "boolean",
        0,
        "podInfoOnMount indicates this CSI volume driver requires additional pod information \
         (like podName, podUID, etc.) during mount operations, if set to true.",
    ),
    col(
        "StorageCapacity",
        "boolean",
        0,
        "storageCapacity indicates that the CSI volume driver wants pod scheduling to consider \
         the storage capacity that the driver deployment will report by creating \
         CSIStorageCapacity objects with capacity information, if set to true.",
    ),
    col(
        "TokenRequests",
        "string",
        0,
        "tokenRequests indicates the CSI driver needs pods' service account tokens it is \
         mounting volume for to do necessary authentication.",
    ),
    col(
        "RequiresRepublish",
        "boolean",
        0,
        "requiresRepublish indicates the CSI driver wants `NodePublishVolume` being periodically \
         called to reflect any possible change in the mounted volume.",
    ),
    col(
        "Modes",
        "string",
        0,
        "volumeLifecycleModes defines what kind of volumes this CSI volume driver supports.",
    ),
    AGE,
];

/// CSIDriver: Name, AttachRequired, PodInfoOnMount, StorageCapacity, TokenRequests (the
/// audiences, `<unset>`), RequiresRepublish, Modes, Age. Unset fields read as Kubernetes'
/// defaults: attach required, no pod info, no capacity, no republish, `Persistent` mode.
pub(super) fn csi_driver_cells(driver: &Value, now: Timestamp) -> Vec<Value> {
    let tokens = match driver.pointer("/spec/tokenRequests") {
        Some(Value::Array(requests)) => requests
            .iter()
            .map(|r| text(r, "/audience"))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<unset>".to_owned(),
    };
    let modes: Vec<&str> = list(driver, "/spec/volumeLifecycleModes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let modes = if modes.is_empty() {
        "Persistent".to_owned()
    } else {
        modes.join(",")
    };
    vec![
        name(driver),
        json!(flag_or(driver, "/spec/attachRequired", true)),
        json!(flag(driver, "/spec/podInfoOnMount")),
        json!(flag(driver, "/spec/storageCapacity")),
        json!(tokens),
        json!(flag(driver, "/spec/requiresRepublish")),
        json!(modes),
        age(driver, now),
    ]
}

pub(super) const CSI_NODE: &[Column] = &[
    NAME,
    col(
        "Drivers",
        "integer",
        0,
        "Drivers indicates the number of CSI drivers registered on the node",
    ),
    AGE,
];

/// CSINode: Name, Drivers (how many), Age.
pub(super) fn csi_node_cells(node: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(node),
        json!(count(node, "/spec/drivers")),
        age(node, now),
    ]
}

pub(super) const VOLUME_ATTACHMENT: &[Column] = &[
    NAME,
    // kube-apiserver gives this column the `name` format too.
    Column {
        format: "name",
        ..col(
            "Attacher",
            "string",
            0,
            "attacher indicates the name of the volume driver that MUST handle this request.",
        )
    },
    col(
        "PV",
        "string",
        0,
        "persistentVolumeName represents the name of the persistent volume to attach.",
    ),
    col(
        "Node",
        "string",
        0,
        "nodeName represents the node that the volume should be attached to.",
    ),
    col(
        "Attached",
        "boolean",
        0,
        "attached indicates the volume is successfully attached.",
    ),
    AGE,
];

/// VolumeAttachment: Name, Attacher, PV, Node, Attached (a boolean), Age.
pub(super) fn volume_attachment_cells(attachment: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(attachment),
        json!(text(attachment, "/spec/attacher")),
        json!(text(attachment, "/spec/source/persistentVolumeName")),
        json!(text(attachment, "/spec/nodeName")),
        json!(flag(attachment, "/status/attached")),
        age(attachment, now),
    ]
}

pub(super) const CSI_STORAGE_CAPACITY: &[Column] = &[
    NAME,
    col(
        "StorageClassName",
        "string",
        0,
        "storageClassName represents the name of the StorageClass that the reported capacity \
         applies to.",
    ),
    col(
        "Capacity",
        "string",
        0,
        "capacity is the value reported by the CSI driver in its GetCapacityResponse for a \
         GetCapacityRequest with topology and parameters that match the previous fields.",
    ),
];

/// CSIStorageCapacity: Name, StorageClassName, Capacity (`<unset>`); no Age, as in
/// kube-apiserver.
pub(super) fn csi_storage_capacity_cells(capacity: &Value, _now: Timestamp) -> Vec<Value> {
    vec![
        name(capacity),
        json!(text(capacity, "/storageClassName")),
        json!(quantity(capacity, "/capacity", "<unset>")),
    ]
}

//! PersistentVolume, PersistentVolumeClaim, StorageClass, CSIDriver, CSINode,
//! VolumeAttachment and CSIStorageCapacity.

use serde_json::json;

use super::{CREATED, cells_of};

#[test]
fn persistent_volume_row() {
    let volume = json!({
        "metadata": {"name": "pv-data", "creationTimestamp": CREATED},
        "spec": {
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteMany", "ReadWriteOnce", "ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": "standard",
            "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "shop", "name": "data"},
            "hostPath": {"path": "/srv/data"},
            "volumeMode": "Block",
        },
        "status": {"phase": "Bound"},
    });
    assert_eq!(
        cells_of("", "PersistentVolume", &volume),
        row![
            "pv-data",
            "10Gi",
            "RWO,RWX",
            "Delete",
            "Bound",
            "shop/data",
            "standard",
            "<unset>",
            "",
            "5m",
            "Block"
        ]
    );
    let mut released = volume.clone();
    released["status"] = json!({"phase": "Failed", "reason": "VolumeFailedRecycle"});
    released["metadata"]["annotations"] =
        json!({"volume.beta.kubernetes.io/storage-class": "legacy"});
    released["spec"]["volumeAttributesClassName"] = json!("gold");
    let c = cells_of("", "PersistentVolume", &released);
    assert_eq!(
        (c[4].clone(), c[6].clone(), c[7].clone(), c[8].clone()),
        (
            json!("Failed"),
            json!("legacy"),
            json!("gold"),
            json!("VolumeFailedRecycle")
        )
    );
    // Unset fields read as Kubernetes' defaults.
    let bare = json!({"metadata": {"name": "pv", "deletionTimestamp": "2024-05-01T10:04:00Z"},
                      "spec": {"accessModes": ["ReadWriteOncePod"]}});
    assert_eq!(
        cells_of("", "PersistentVolume", &bare),
        row![
            "pv",
            "0",
            "RWOP",
            "Retain",
            "Terminating",
            "",
            "",
            "<unset>",
            "",
            "<unknown>",
            "Filesystem"
        ]
    );
}

#[test]
fn persistent_volume_claim_rows() {
    let bound = json!({
        "metadata": {"name": "data", "creationTimestamp": CREATED},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "5Gi"}},
            "storageClassName": "fast",
            "volumeName": "pv-data",
        },
        "status": {"phase": "Bound", "capacity": {"storage": "10Gi"},
                   "accessModes": ["ReadWriteOnce", "ReadOnlyMany"]},
    });
    assert_eq!(
        cells_of("", "PersistentVolumeClaim", &bound),
        row![
            "data",
            "Bound",
            "pv-data",
            "10Gi",
            "RWO,ROX",
            "fast",
            "<unset>",
            "5m",
            "Filesystem"
        ]
    );
    let pending = json!({
        "metadata": {"name": "wait", "creationTimestamp": CREATED},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                 "volumeMode": "Block"},
        "status": {"phase": "Pending"},
    });
    assert_eq!(
        cells_of("", "PersistentVolumeClaim", &pending),
        row!["wait", "Pending", "", "", "", "", "<unset>", "5m", "Block"],
        "no capacity nor access modes before binding"
    );
}

#[test]
fn storage_class_rows() {
    let default = json!({
        "metadata": {"name": "standard", "creationTimestamp": CREATED,
                     "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
        "provisioner": "rancher.io/local-path",
        "reclaimPolicy": "Retain",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": true,
    });
    assert_eq!(
        cells_of("storage.k8s.io", "StorageClass", &default),
        row![
            "standard (default)",
            "rancher.io/local-path",
            "Retain",
            "WaitForFirstConsumer",
            true,
            "5m"
        ]
    );
    let plain = json!({
        "metadata": {"name": "slow", "creationTimestamp": CREATED,
                     "annotations": {"storageclass.kubernetes.io/is-default-class": "false"}},
        "provisioner": "kubernetes.io/no-provisioner",
    });
    assert_eq!(
        cells_of("storage.k8s.io", "StorageClass", &plain),
        row![
            "slow",
            "kubernetes.io/no-provisioner",
            "Delete",
            "Immediate",
            false,
            "5m"
        ]
    );
    let beta = json!({"metadata": {"name": "old",
        "annotations": {"storageclass.beta.kubernetes.io/is-default-class": "true"}},
        "provisioner": "p"});
    assert_eq!(
        cells_of("storage.k8s.io", "StorageClass", &beta)[0],
        "old (default)"
    );
}

#[test]
fn csi_driver_rows() {
    let driver = json!({
        "metadata": {"name": "secrets-store.csi.k8s.io", "creationTimestamp": CREATED},
        "spec": {
            "attachRequired": false,
            "podInfoOnMount": true,
            "volumeLifecycleModes": ["Ephemeral", "Persistent"],
            "tokenRequests": [{"audience": "vault"}, {"audience": "aws", "expirationSeconds": 3600}],
            "requiresRepublish": true,
        },
    });
    assert_eq!(
        cells_of("storage.k8s.io", "CSIDriver", &driver),
        row![
            "secrets-store.csi.k8s.io",
            false,
            true,
            false,
            "vault,aws",
            true,
            "Ephemeral,Persistent",
            "5m"
        ]
    );
    let defaults = json!({"metadata": {"name": "d", "creationTimestamp": CREATED}, "spec": {}});
    assert_eq!(
        cells_of("storage.k8s.io", "CSIDriver", &defaults),
        row![
            "d",
            true,
            false,
            false,
            "<unset>",
            false,
            "Persistent",
            "5m"
        ]
    );
}

#[test]
fn csi_node_volume_attachment_and_capacity_rows() {
    let node = json!({
        "metadata": {"name": "worker-1", "creationTimestamp": CREATED},
        "spec": {"drivers": [{"name": "ebs.csi.aws.com", "nodeID": "i-0abc"}]},
    });
    assert_eq!(
        cells_of("storage.k8s.io", "CSINode", &node),
        row!["worker-1", 1, "5m"]
    );
    let attachment = json!({
        "metadata": {"name": "csi-4a1f", "creationTimestamp": CREATED},
        "spec": {"attacher": "ebs.csi.aws.com", "nodeName": "worker-1",
                 "source": {"persistentVolumeName": "pv-data"}},
        "status": {"attached": true},
    });
    assert_eq!(
        cells_of("storage.k8s.io", "VolumeAttachment", &attachment),
        row![
            "csi-4a1f",
            "ebs.csi.aws.com",
            "pv-data",
            "worker-1",
            true,
            "5m"
        ]
    );
    let capacity = json!({
        "metadata": {"name": "csisc-7xk2p", "namespace": "kube-system", "creationTimestamp": CREATED},
        "storageClassName": "fast",
        "capacity": "100Gi",
        "nodeTopology": {"matchLabels": {"topology.kubernetes.io/zone": "a"}},
    });
    assert_eq!(
        cells_of("storage.k8s.io", "CSIStorageCapacity", &capacity),
        row!["csisc-7xk2p", "fast", "100Gi"]
    );
    let unknown = json!({"metadata": {"name": "c"}, "storageClassName": "fast"});
    assert_eq!(
        cells_of("storage.k8s.io", "CSIStorageCapacity", &unknown)[2],
        "<unset>"
    );
}

use super::*;
use serde_json::json;

fn claim(value: Value) -> PersistentVolumeClaim {
    let mut base = json!({
        "metadata": {"name": "data", "namespace": "default", "uid": "u1", "resourceVersion": "5"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    });
    merge(&mut base, value);
    serde_json::from_value(base).unwrap()
}

fn volume(value: Value) -> PersistentVolume {
    let mut base = json!({
        "metadata": {"name": "pv1", "resourceVersion": "9"},
        "spec": {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "2Gi"},
                 "hostPath": {"path": "/srv/pv1"}},
    });
    merge(&mut base, value);
    serde_json::from_value(base).unwrap()
}

fn class(value: Value) -> StorageClass {
    let mut base =
        json!({"metadata": {"name": "local-path"}, "provisioner": LOCAL_PATH_PROVISIONER});
    merge(&mut base, value);
    serde_json::from_value(base).unwrap()
}

/// A JSON merge patch (objects merged key by key, anything else replaced).
fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (key, value) in patch {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, patch) => *base = patch,
    }
}

fn event_reasons(steps: &[Step]) -> Vec<(&'static str, String)> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Event {
                reason, message, ..
            } => Some((*reason, message.clone())),
            _ => None,
        })
        .collect()
}

const ROOT: &str = "/var/lib/keelson/storage";

#[test]
fn a_static_volume_is_bound_both_ways() {
    let pv = volume(json!({}));
    let steps = sync_claim(&claim(json!({})), &[&pv], &Class::NoClass, None, ROOT);
    assert_eq!(
        steps,
        vec![
            Step::PatchVolume(
                "pv1".into(),
                json!({
                    "metadata": {"resourceVersion": "9",
                                 "annotations": {"pv.kubernetes.io/bound-by-controller": "yes"}},
                    "spec": {"claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                        "namespace": "default", "name": "data", "uid": "u1",
                        "resourceVersion": "5"}},
                })
            ),
            Step::PatchVolumeStatus("pv1".into(), json!({"status": {"phase": "Bound"}})),
            Step::PatchClaim(json!({
                "metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes",
                                             "pv.kubernetes.io/bound-by-controller": "yes"}},
                "spec": {"volumeName": "pv1"},
            })),
            Step::PatchClaimStatus(json!({"status": {"phase": "Bound",
                "capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"]}})),
        ]
    );
    // Once everything is written, nothing more happens.
    let bound_pv = volume(json!({
        "spec": {"claimRef": {"namespace": "default", "name": "data", "uid": "u1"}},
        "status": {"phase": "Bound"},
    }));
    let bound_claim = claim(json!({
        "metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes"}},
        "spec": {"volumeName": "pv1"},
        "status": {"phase": "Bound", "capacity": {"storage": "2Gi"},
                   "accessModes": ["ReadWriteOnce"]},
    }));
    assert_eq!(
        sync_claim(&bound_claim, &[&bound_pv], &Class::NoClass, None, ROOT),
        vec![]
    );
    assert_eq!(sync_volume(&bound_pv, Some(&bound_claim)), vec![]);
}

#[test]
fn pending_claims_say_why() {
    let wffc = class(json!({"volumeBindingMode": "WaitForFirstConsumer"}));
    let external = class(json!({"metadata": {"name": "ebs"}, "provisioner": "ebs.csi.aws.com"}));
    let local = class(json!({"volumeBindingMode": "Immediate"}));
    let cases = [
        (
            Class::NoClass,
            "FailedBinding",
            "no persistent volumes available for this claim and no storage class is set",
        ),
        (
            Class::Missing("gold"),
            "ProvisioningFailed",
            "storageclass.storage.k8s.io \"gold\" not found",
        ),
        (
            Class::Found(&wffc),
            "WaitForFirstConsumer",
            "waiting for first consumer to be created before binding",
        ),
        (
            Class::Found(&local),
            "ProvisioningFailed",
            "configuration error, no node was specified",
        ),
        (
            Class::Found(&external),
            "ExternalProvisioning",
            "Waiting for a volume to be created either by the external provisioner \
             'ebs.csi.aws.com' or manually by the system administrator. If volume creation is \
             delayed, please verify that the provisioner is running and correctly registered.",
        ),
    ];
    for (class, reason, message) in cases {
        let steps = sync_claim(&claim(json!({})), &[], &class, None, ROOT);
        assert_eq!(
            steps[0],
            Step::PatchClaimStatus(json!({"status": {"phase": "Pending"}}))
        );
        assert_eq!(event_reasons(&steps), vec![(reason, message.to_owned())]);
        // Already Pending (as the API server creates claims): only the reason again.
        let already = claim(json!({"status": {"phase": "Pending"}}));
        let steps = sync_claim(&already, &[], &class, None, ROOT);
        assert_eq!(event_reasons(&steps), vec![(reason, message.to_owned())]);
        assert_eq!(steps.len(), 1, "{reason}");
    }
}

#[test]
fn wait_for_first_consumer_provisions_on_the_selected_node() {
    let wffc = class(json!({"volumeBindingMode": "WaitForFirstConsumer"}));
    // A free static volume does not bind before the scheduler picks a node.
    let free = volume(json!({"spec": {"storageClassName": "local-path"}}));
    let waiting = claim(json!({"spec": {"storageClassName": "local-path"}}));
    assert_eq!(
        event_reasons(&sync_claim(
            &waiting,
            &[&free],
            &Class::Found(&wffc),
            None,
            ROOT
        ))[0]
            .0,
        "WaitForFirstConsumer"
    );
    // Selected: the free volume (no node affinity) binds there.
    let selected = claim(json!({
        "metadata": {"annotations": {"volume.kubernetes.io/selected-node": "n2"}},
        "spec": {"storageClassName": "local-path"},
    }));
    let steps = sync_claim(&selected, &[&free], &Class::Found(&wffc), None, ROOT);
    assert!(matches!(&steps[0], Step::PatchVolume(name, _) if name == "pv1"));
    // Without a static volume: provisioned as k3s does.
    let steps = sync_claim(&selected, &[], &Class::Found(&wffc), None, ROOT);
    let Some(Step::CreateVolume(pv)) = steps.get(1) else {
        panic!("provisioned: {steps:?}");
    };
    let pv = serde_json::to_value(pv).unwrap();
    assert_eq!(
        pv,
        json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {
                "name": "pvc-u1",
                "annotations": {"pv.kubernetes.io/provisioned-by": "keelson.io/local-path",
                                "pv.kubernetes.io/bound-by-controller": "yes"},
                "finalizers": ["keelson.io/local-path-cleanup"],
            },
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "capacity": {"storage": "1Gi"},
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                             "namespace": "default", "name": "data", "uid": "u1",
                             "resourceVersion": "5"},
                "hostPath": {"path": "/var/lib/keelson/storage/pvc-u1_default_data",
                             "type": "DirectoryOrCreate"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]}},
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": "local-path",
            },
        })
    );
    assert_eq!(
        event_reasons(&steps),
        vec![(
            "ProvisioningSucceeded",
            "Successfully provisioned volume pvc-u1 using keelson.io/local-path".to_owned()
        )]
    );
    // The next sync finds the volume reserved for the claim and binds it.
    let provisioned: PersistentVolume = serde_json::from_value(pv).unwrap();
    let steps = sync_claim(&selected, &[&provisioned], &Class::Found(&wffc), None, ROOT);
    assert!(matches!(&steps[0], Step::PatchVolumeStatus(name, _) if name == "pvc-u1"));
    assert!(matches!(&steps[1], Step::PatchClaim(p) if p["spec"]["volumeName"] == "pvc-u1"));
    // Retain from the class is kept.
    let retain = class(json!({"reclaimPolicy": "Retain"}));
    let pv = local_path_volume(&selected, &retain, "n2", ROOT);
    assert_eq!(
        pv.spec.unwrap().persistent_volume_reclaim_policy.as_deref(),
        Some("Retain")
    );
}

#[test]
fn lost_and_misbound_claims() {
    let bound = claim(json!({"spec": {"volumeName": "pv1"}, "status": {"phase": "Bound"}}));
    assert_eq!(
        event_reasons(&sync_claim(&bound, &[], &Class::NoClass, None, ROOT)),
        vec![(
            "ClaimLost",
            "Bound claim has lost its PersistentVolume. Data on the volume is lost!".to_owned()
        )]
    );
    let other =
        volume(json!({"spec": {"claimRef": {"namespace": "default", "name": "x", "uid": "u9"}}}));
    assert_eq!(
        event_reasons(&sync_claim(&bound, &[&other], &Class::NoClass, None, ROOT))[0].0,
        "ClaimMisbound"
    );
}

#[test]
fn volume_phases_and_reclaim() {
    let reference = json!({"claimRef": {"namespace": "default", "name": "data", "uid": "u1"}});
    let status =
        |phase: &str| Step::PatchVolumeStatus("pv1".into(), json!({"status": {"phase": phase}}));
    let cases: Vec<(PersistentVolume, Option<PersistentVolumeClaim>, Vec<Step>)> = vec![
        (volume(json!({})), None, vec![status("Available")]),
        (
            volume(json!({"status": {"phase": "Available"}})),
            None,
            vec![],
        ),
        (
            volume(json!({"spec": reference, "status": {"phase": "Available"}})),
            Some(claim(json!({"spec": {"volumeName": "pv1"}}))),
            vec![status("Bound")],
        ),
        // The claim is gone: Retain keeps the volume Released.
        (
            volume(json!({"spec": reference, "status": {"phase": "Bound"}})),
            None,
            vec![status("Released")],
        ),
        // A claim of the same name but another uid is not this volume's claim.
        (
            volume(json!({"spec": reference, "status": {"phase": "Released"}})),
            Some(claim(json!({"metadata": {"uid": "u2"}}))),
            vec![],
        ),
        // Delete: a local-path volume is deleted (its node agent removes the directory).
        (
            volume(json!({
                "metadata": {"annotations": {"pv.kubernetes.io/provisioned-by": "keelson.io/local-path"}},
                "spec": {"claimRef": reference["claimRef"], "persistentVolumeReclaimPolicy": "Delete"},
                "status": {"phase": "Bound"},
            })),
            None,
            vec![status("Released"), Step::DeleteVolume("pv1".into())],
        ),
    ];
    for (pv, claim, want) in cases {
        assert_eq!(sync_volume(&pv, claim.as_ref()), want, "{pv:?}");
    }
    // Delete of a volume no plugin of keelson's can delete fails, as kube says.
    let foreign = volume(json!({
        "spec": {"claimRef": reference["claimRef"], "persistentVolumeReclaimPolicy": "Delete"},
        "status": {"phase": "Released"},
    }));
    assert_eq!(
        event_reasons(&sync_volume(&foreign, None)),
        vec![(
            "VolumeFailedDelete",
            "error getting deleter volume plugin for volume \"pv1\": no deletable volume \
             plugin matched"
                .to_owned()
        )]
    );
}

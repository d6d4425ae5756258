//! Storage object in-use protection (kube's `pkg/controller/volume/pvcprotection` and
//! `pvprotection`): claims and volumes carry the `kubernetes.io/pvc-protection` /
//! `kubernetes.io/pv-protection` finalizer (set by the admission plugin, or here for older
//! objects), so deleting one only marks it terminating. The `pvc-protection` controller
//! removes the finalizer from a deleting claim once no scheduled pod uses it; the
//! `pv-protection` controller from a deleting volume once it is no longer `Bound`.

use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, PostParams},
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher},
};

use crate::{ApiContext, Result, is_status};

/// The claim controller's name (kube-controller-manager's).
pub const PVC_NAME: &str = "pvc-protection";
/// The volume controller's name (kube-controller-manager's).
pub const PV_NAME: &str = "pv-protection";
/// The finalizer of claims.
pub const PVC_FINALIZER: &str = "kubernetes.io/pvc-protection";
/// The finalizer of volumes.
pub const PV_FINALIZER: &str = "kubernetes.io/pv-protection";

/// What an object's finalizer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do.
    Keep,
    /// A live object without the finalizer: add it.
    Add,
    /// A deleting object no longer in use: remove it.
    Remove,
}

fn verdict<K: Resource>(object: &K, finalizer: &str, in_use: impl FnOnce() -> bool) -> Verdict {
    let meta = object.meta();
    let has = meta
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == finalizer));
    match (meta.deletion_timestamp.is_some(), has) {
        (false, false) => Verdict::Add,
        (true, true) if !in_use() => Verdict::Remove,
        _ => Verdict::Keep,
    }
}

/// Whether `pod` was force-deleted or finished by its kubelet (deleting with no grace left).
fn shut_down(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_some()
        && pod.metadata.deletion_grace_period_seconds == Some(0)
}

/// Whether `pod` holds `claim` (kube's `podUsesPVC`): only scheduled pods count (a kubelet
/// starts no pod whose claim is being deleted); a `persistentVolumeClaim` volume naming the
/// claim holds it until the pod is gone, a generic ephemeral volume (claim
/// `<pod>-<volume>`, controlled by the pod) until the pod is shut down.
pub fn pod_uses_claim(pod: &Pod, claim: &PersistentVolumeClaim) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    if spec.node_name.as_deref().is_none_or(str::is_empty)
        || pod.metadata.namespace != claim.metadata.namespace
    {
        return false;
    }
    let claim_name = claim.metadata.name.as_deref().unwrap_or_default();
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let controlled_by_pod = claim
        .metadata
        .owner_references
        .as_ref()
        .and_then(|o| o.iter().find(|r| r.controller == Some(true)))
        .is_some_and(|r| Some(&r.uid) == pod.metadata.uid.as_ref());
    spec.volumes.iter().flatten().any(|volume| {
        volume
            .persistent_volume_claim
            .as_ref()
            .is_some_and(|c| c.claim_name == claim_name)
            || (volume.ephemeral.is_some()
                && !shut_down(pod)
                && format!("{pod_name}-{}", volume.name) == claim_name
                && controlled_by_pod)
    })
}

/// What `claim`'s finalizer needs, given the pods of its namespace.
pub fn claim_verdict(claim: &PersistentVolumeClaim, pods: &[Pod]) -> Verdict {
    verdict(claim, PVC_FINALIZER, || {
        pods.iter().any(|p| pod_uses_claim(p, claim))
    })
}

/// What `volume`'s finalizer needs: in use while its phase is `Bound`.
pub fn volume_verdict(volume: &PersistentVolume) -> Verdict {
    verdict(volume, PV_FINALIZER, || {
        volume.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
    })
}

/// `object` with `finalizer` added or removed.
fn with_finalizer<K: Resource + Clone>(object: &K, finalizer: &str, add: bool) -> K {
    let mut changed = object.clone();
    let list = changed.meta_mut().finalizers.get_or_insert_with(Vec::new);
    list.retain(|f| f != finalizer);
    if add {
        list.push(finalizer.to_owned());
    }
    changed
}

/// The claims a pod event may release.
fn claims_of(pod: &Pod) -> Vec<ObjectRef<PersistentVolumeClaim>> {
    let namespace = pod.namespace().unwrap_or_default();
    let pod_name = pod.name_any();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            let name = match (&v.persistent_volume_claim, &v.ephemeral) {
                (Some(c), _) => c.claim_name.clone(),
                (None, Some(_)) => format!("{pod_name}-{}", v.name),
                (None, None) => return None,
            };
            Some(ObjectRef::new(&name).within(&namespace))
        })
        .collect()
}

struct Ctx {
    client: Client,
}

/// Runs both controllers (`pvc`, `pv`: which of them).
pub async fn run(client: Client, pvc: bool, pv: bool) -> anyhow::Result<()> {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
    });
    let claims = async {
        if pvc {
            let controller = Controller::new(
                Api::<PersistentVolumeClaim>::all(client.clone()),
                watcher::Config::default(),
            )
            .watches(
                Api::<Pod>::all(client.clone()),
                watcher::Config::default(),
                |pod| claims_of(&pod),
            );
            crate::drive(
                PVC_NAME,
                controller.run(reconcile_claim, crate::retry, Arc::clone(&ctx)),
            )
            .await;
        }
    };
    let volumes = async {
        if pv {
            let controller = Controller::new(
                Api::<PersistentVolume>::all(client.clone()),
                watcher::Config::default(),
            );
            crate::drive(
                PV_NAME,
                controller.run(reconcile_volume, crate::retry, Arc::clone(&ctx)),
            )
            .await;
        }
    };
    futures_util::future::join(claims, volumes).await;
    Ok(())
}

async fn reconcile_claim(claim: Arc<PersistentVolumeClaim>, ctx: Arc<Ctx>) -> Result<Action> {
    let namespace = claim.namespace().unwrap_or_default();
    let name = claim.name_any();
    let deleting = claim.metadata.deletion_timestamp.is_some();
    // Pods are listed live (kube's "ask the API server"), only for a claim being deleted.
    let pods = if deleting {
        Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
            .list(&ListParams::default())
            .await
            .action(|| format!("list the pods of namespace {namespace}"))?
            .items
    } else {
        Vec::new()
    };
    let add = match claim_verdict(&claim, &pods) {
        Verdict::Keep => return Ok(Action::await_change()),
        Verdict::Add => true,
        Verdict::Remove => false,
    };
    let api = Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), &namespace);
    let changed = with_finalizer(&*claim, PVC_FINALIZER, add);
    match api.replace(&name, &PostParams::default(), &changed).await {
        Err(e) if is_status(&e, 404) => {}
        other => {
            other.action(|| {
                format!("update the protection finalizer of claim {namespace}/{name}")
            })?;
            if !add {
                tracing::info!(claim = %format!("{namespace}/{name}"), "claim no longer in use; finalizer removed");
            }
        }
    }
    Ok(Action::await_change())
}

async fn reconcile_volume(volume: Arc<PersistentVolume>, ctx: Arc<Ctx>) -> Result<Action> {
    let name = volume.name_any();
    let add = match volume_verdict(&volume) {
        Verdict::Keep => return Ok(Action::await_change()),
        Verdict::Add => true,
        Verdict::Remove => false,
    };
    let api = Api::<PersistentVolume>::all(ctx.client.clone());
    let changed = with_finalizer(&*volume, PV_FINALIZER, add);
    match api.replace(&name, &PostParams::default(), &changed).await {
        Err(e) if is_status(&e, 404) => {}
        other => {
            other.action(|| format!("update the protection finalizer of volume {name}"))?;
            if !add {
                tracing::info!(volume = name, "volume no longer bound; finalizer removed");
            }
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::core::v1::{
            EphemeralVolumeSource, PersistentVolumeClaimVolumeSource, PersistentVolumeStatus,
            PodSpec, Volume,
        },
        apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time},
    };

    use super::*;

    fn meta(name: &str, deleting: bool, finalizer: Option<&str>) -> ObjectMeta {
        ObjectMeta {
            namespace: Some("default".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            deletion_timestamp: deleting.then_some(Time(jiff::Timestamp::UNIX_EPOCH)),
            finalizers: finalizer.map(|f| vec![f.to_owned()]),
            ..ObjectMeta::default()
        }
    }

    fn claim(name: &str, deleting: bool, owner: Option<&str>) -> PersistentVolumeClaim {
        let mut metadata = meta(name, deleting, Some(PVC_FINALIZER));
        metadata.owner_references = owner.map(|o| {
            vec![OwnerReference {
                kind: "Pod".into(),
                name: o.into(),
                uid: format!("uid-{o}"),
                controller: Some(true),
                ..OwnerReference::default()
            }]
        });
        PersistentVolumeClaim {
            metadata,
            ..PersistentVolumeClaim::default()
        }
    }

    /// Pod `name` (on a node when `node`) with a claim volume `data` -> `data` and an
    /// ephemeral volume `scratch`; `shut_down`: deleted with no grace left.
    fn pod(name: &str, node: bool, shut_down: bool) -> Pod {
        let mut metadata = meta(name, shut_down, None);
        metadata.deletion_grace_period_seconds = shut_down.then_some(0);
        Pod {
            metadata,
            spec: Some(PodSpec {
                node_name: node.then(|| "n1".into()),
                volumes: Some(vec![
                    Volume {
                        name: "data".into(),
                        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                            claim_name: "data".into(),
                            ..PersistentVolumeClaimVolumeSource::default()
                        }),
                        ..Volume::default()
                    },
                    Volume {
                        name: "scratch".into(),
                        ephemeral: Some(EphemeralVolumeSource::default()),
                        ..Volume::default()
                    },
                ]),
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn deleting_claims_are_released_when_no_scheduled_pod_uses_them() {
        let cases = [
            (
                "a live claim keeps its finalizer",
                claim("data", false, None),
                vec![pod("p", true, false)],
                Verdict::Keep,
            ),
            (
                "a scheduled pod holds the claim",
                claim("data", true, None),
                vec![pod("p", true, false)],
                Verdict::Keep,
            ),
            (
                "a shut-down pod still holds a named claim",
                claim("data", true, None),
                vec![pod("p", true, true)],
                Verdict::Keep,
            ),
            (
                "an unscheduled pod does not",
                claim("data", true, None),
                vec![pod("p", false, false)],
                Verdict::Remove,
            ),
            (
                "no pods",
                claim("data", true, None),
                vec![],
                Verdict::Remove,
            ),
            (
                "an ephemeral claim of a running pod",
                claim("p-scratch", true, Some("p")),
                vec![pod("p", true, false)],
                Verdict::Keep,
            ),
            (
                "an ephemeral claim of a shut-down pod",
                claim("p-scratch", true, Some("p")),
                vec![pod("p", true, true)],
                Verdict::Remove,
            ),
            (
                "an ephemeral-named claim the pod does not control",
                claim("p-scratch", true, None),
                vec![pod("p", true, false)],
                Verdict::Remove,
            ),
        ];
        for (name, claim, pods, want) in cases {
            assert_eq!(claim_verdict(&claim, &pods), want, "{name}");
        }
        let mut bare = claim("data", false, None);
        bare.metadata.finalizers = None;
        assert_eq!(
            claim_verdict(&bare, &[]),
            Verdict::Add,
            "an older claim gets the finalizer"
        );
    }

    #[test]
    fn deleting_volumes_are_released_once_unbound() {
        let volume = |deleting: bool, finalizer: Option<&str>, phase: &str| PersistentVolume {
            metadata: meta("pv1", deleting, finalizer),
            status: Some(PersistentVolumeStatus {
                phase: Some(phase.into()),
                ..PersistentVolumeStatus::default()
            }),
            ..PersistentVolume::default()
        };
        let cases = [
            (volume(true, Some(PV_FINALIZER), "Bound"), Verdict::Keep),
            (
                volume(true, Some(PV_FINALIZER), "Released"),
                Verdict::Remove,
            ),
            (
                volume(true, Some(PV_FINALIZER), "Available"),
                Verdict::Remove,
            ),
            (volume(false, Some(PV_FINALIZER), "Released"), Verdict::Keep),
            (volume(false, None, "Available"), Verdict::Add),
            (volume(true, None, "Released"), Verdict::Keep),
        ];
        for (volume, want) in cases {
            assert_eq!(volume_verdict(&volume), want, "{:?}", volume.status);
        }
        let released = with_finalizer(
            &volume(true, Some(PV_FINALIZER), "Released"),
            PV_FINALIZER,
            false,
        );
        assert_eq!(released.metadata.finalizers, Some(vec![]));
    }
}

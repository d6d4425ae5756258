//! PersistentVolume binder (kube-controller-manager's `persistentvolume-binder`, after
//! `pkg/controller/volume/persistentvolume/pv_controller.go`) with keelson's built-in
//! local-path provisioner (k3s's `local-path`):
//!
//! - a claim binds to the smallest available volume of its class that offers its access
//!   modes, volume mode and size and matches its selector (a volume reserved for it by
//!   `claimRef` first); both get `claimRef`/`volumeName`, the `pv.kubernetes.io/*`
//!   annotations and the `Bound` phase;
//! - claims of a `WaitForFirstConsumer` class wait for the scheduler's
//!   `volume.kubernetes.io/selected-node`; then a volume usable on that node binds, or a
//!   `keelson.io/local-path` class provisions a `DirectoryOrCreate` hostPath volume
//!   `<root>/<volume>_<namespace>_<claim>` pinned to the node (the node agent creates the
//!   directory when a pod mounts it);
//! - a volume whose claim is gone is `Released`; `Retain` keeps it, `Delete` deletes a
//!   local-path volume, whose finalizer the node agent removes after removing the directory.
//!
//! Two kube-rs controllers share the work: one per claim, one per volume, each woken by the
//! other kind's changes. [`decide`] holds every decision.

pub mod decide;

use std::sync::Arc;

use k8s_openapi::{
    api::{
        core::v1::{
            Event, EventSource, Node, ObjectReference, PersistentVolume, PersistentVolumeClaim,
        },
        storage::v1::StorageClass,
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, Patch, PatchParams, PostParams},
    runtime::{Controller, controller::Action, reflector::ObjectRef, reflector::Store, watcher},
};

use crate::{ApiContext, Result, is_status};
use decide::{Class, Step};

/// The controller's name (kube-controller-manager's).
pub const NAME: &str = "persistentvolume-binder";

struct Ctx {
    client: Client,
    /// The last Event reason recorded per object uid, so a reason is recorded once.
    recorded: std::sync::Mutex<std::collections::HashMap<String, &'static str>>,
    root: String,
    volumes: Store<PersistentVolume>,
}

/// Runs the binder; local-path volumes go under `local_path_root` on their node.
pub async fn run(client: Client, local_path_root: String) -> anyhow::Result<()> {
    let volume_controller = Controller::new(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
        |claim| {
            claim
                .spec
                .as_ref()
                .and_then(|s| s.volume_name.clone())
                .filter(|n| !n.is_empty())
                .map(|n| ObjectRef::<PersistentVolume>::new(&n))
        },
    );
    let claim_controller = Controller::new(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
        |volume| {
            let reference = volume.spec.as_ref()?.claim_ref.as_ref()?;
            Some(
                ObjectRef::<PersistentVolumeClaim>::new(reference.name.as_deref()?)
                    .within(reference.namespace.as_deref()?),
            )
        },
    );
    let ctx = Arc::new(Ctx {
        client,
        recorded: std::sync::Mutex::default(),
        root: local_path_root,
        volumes: volume_controller.store(),
    });
    let volumes = crate::drive(
        NAME,
        volume_controller.run(reconcile_volume, crate::retry, Arc::clone(&ctx)),
    );
    let claims = crate::drive(
        NAME,
        claim_controller.run(reconcile_claim, crate::retry, ctx),
    );
    futures_util::future::join(volumes, claims).await;
    Ok(())
}

async fn reconcile_claim(claim: Arc<PersistentVolumeClaim>, ctx: Arc<Ctx>) -> Result<Action> {
    let class_name = keelson_api::storage::claim_class(&claim).to_owned();
    let class_object = match class_name.as_str() {
        "" => None,
        name => Api::<StorageClass>::all(ctx.client.clone())
            .get_opt(name)
            .await
            .action(|| format!("get StorageClass {name}"))?,
    };
    let class = match (&class_object, class_name.as_str()) {
        (Some(found), _) => Class::Found(found),
        (None, "") => Class::NoClass,
        (None, name) => Class::Missing(name),
    };
    let selected = keelson_api::storage::annotation(
        &claim.metadata.annotations,
        keelson_api::storage::ANN_SELECTED_NODE,
    );
    let node_labels = match selected {
        Some(node) => Api::<Node>::all(ctx.client.clone())
            .get_opt(node)
            .await
            .action(|| format!("get Node {node}"))?
            .and_then(|n| n.metadata.labels),
        None => None,
    };
    let volumes = ctx.volumes.state();
    let volume_refs: Vec<&PersistentVolume> = volumes.iter().map(AsRef::as_ref).collect();
    let steps = decide::sync_claim(
        &claim,
        &volume_refs,
        &class,
        node_labels.as_ref(),
        &ctx.root,
    );
    // A provisioned volume may reach this controller's volume cache after its own watch
    // event: look again shortly rather than wait for the resync.
    let provisioning = steps.iter().any(|s| matches!(s, Step::CreateVolume(_)));
    perform(&ctx, &claim, None, steps).await?;
    Ok(Action::requeue(std::time::Duration::from_secs(
        if provisioning { 1 } else { 60 },
    )))
}

async fn reconcile_volume(volume: Arc<PersistentVolume>, ctx: Arc<Ctx>) -> Result<Action> {
    // The claim is read from the API server, not a cache: a cache that lags behind a
    // deletion would leave the volume Bound until the next resync.
    let reference = volume.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
    let claim = match reference.map(|r| (&r.namespace, &r.name)) {
        Some((Some(ns), Some(name))) => {
            Api::<PersistentVolumeClaim>::namespaced(ctx.client.clone(), ns)
                .get_opt(name)
                .await
                .action(|| format!("get PersistentVolumeClaim {ns}/{name}"))?
                .map(Arc::new)
        }
        _ => None,
    };
    let steps = decide::sync_volume(&volume, claim.as_deref());
    let fallback_claim = PersistentVolumeClaim::default();
    perform(
        &ctx,
        claim.as_deref().unwrap_or(&fallback_claim),
        Some(&volume),
        steps,
    )
    .await?;
    Ok(Action::requeue(std::time::Duration::from_secs(60)))
}

/// Performs `steps` in order; `volume` is the object volume Events are about.
async fn perform(
    ctx: &Ctx,
    claim: &PersistentVolumeClaim,
    volume: Option<&PersistentVolume>,
    steps: Vec<Step>,
) -> Result<()> {
    let client = &ctx.client;
    let volumes = Api::<PersistentVolume>::all(client.clone());
    let namespace = claim.namespace().unwrap_or_default();
    let claim_name = claim.name_any();
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &namespace);
    let params = PatchParams::default();
    // Events after a provisioning someone else already did are not recorded again.
    let mut quiet = false;
    for step in steps {
        match step {
            Step::PatchVolume(name, patch) => {
                volumes
                    .patch(&name, &params, &Patch::Merge(&patch))
                    .await
                    .action(|| format!("bind PersistentVolume {name}"))?;
                tracing::info!(volume = name, claim = %format!("{namespace}/{claim_name}"), "bound");
            }
            Step::PatchVolumeStatus(name, patch) => {
                volumes
                    .patch_status(&name, &params, &Patch::Merge(&patch))
                    .await
                    .action(|| format!("update the status of PersistentVolume {name}"))?;
            }
            Step::PatchClaim(patch) => {
                claims
                    .patch(&claim_name, &params, &Patch::Merge(&patch))
                    .await
                    .action(|| format!("update PersistentVolumeClaim {namespace}/{claim_name}"))?;
            }
            Step::PatchClaimStatus(patch) => {
                claims
                    .patch_status(&claim_name, &params, &Patch::Merge(&patch))
                    .await
                    .action(|| {
                        format!(
                            "update the status of PersistentVolumeClaim {namespace}/{claim_name}"
                        )
                    })?;
            }
            Step::CreateVolume(pv) => match volumes.create(&PostParams::default(), &pv).await {
                Err(e) if is_status(&e, 409) => quiet = true,
                other => {
                    other.action(|| format!("create PersistentVolume {}", pv.name_any()))?;
                    tracing::info!(volume = pv.name_any(), "provisioned a local-path volume");
                }
            },
            Step::DeleteVolume(name) => match volumes.delete(&name, &DeleteParams::default()).await
            {
                Err(e) if is_status(&e, 404) => {}
                other => {
                    other.action(|| format!("delete PersistentVolume {name}"))?;
                    tracing::info!(volume = name, "deleted a released volume");
                }
            },
            Step::Event {
                on_claim,
                type_,
                reason,
                message,
            } if !quiet => {
                let about = match (on_claim, volume) {
                    (false, Some(volume)) => reference(volume),
                    _ => reference(claim),
                };
                let uid = about.uid.clone().unwrap_or_default();
                {
                    let mut recorded = ctx
                        .recorded
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if recorded.get(&uid) == Some(&reason) {
                        continue;
                    }
                    if recorded.len() >= 10_000 {
                        // Bounded: forgetting only means a reason may be recorded again.
                        recorded.clear();
                    }
                    recorded.insert(uid, reason);
                }
                record(client, about, type_, reason, &message).await;
            }
            Step::Event { .. } => {}
        }
    }
    Ok(())
}

fn reference<K: Resource<DynamicType = ()>>(object: &K) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: object.meta().name.clone(),
        namespace: object.meta().namespace.clone(),
        uid: object.meta().uid.clone(),
        ..ObjectReference::default()
    }
}

/// Records an Event (a failure is only logged).
async fn record(client: &Client, about: ObjectReference, type_: &str, reason: &str, message: &str) {
    let namespace = about.namespace.clone().unwrap_or_else(|| "default".into());
    let now = Time(jiff::Timestamp::now());
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", about.name.as_deref().unwrap_or("volume"))),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: about,
        reason: Some(reason.into()),
        message: Some(message.into()),
        type_: Some(type_.into()),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        source: Some(EventSource {
            component: Some("persistentvolume-controller".into()),
            host: None,
        }),
        reporting_component: Some("persistentvolume-controller".into()),
        ..Event::default()
    };
    if let Err(error) = Api::<Event>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &event)
        .await
    {
        tracing::debug!(%error, "cannot record an event");
    }
}

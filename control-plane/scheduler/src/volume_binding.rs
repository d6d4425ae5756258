//! Volume binding (kube-scheduler's `VolumeBinding` plugin, simplified): a pod's
//! PersistentVolumeClaims decide where it may run.
//!
//! - A missing claim, one being deleted, or an unbound claim of an `Immediate` class keeps the
//!   pod Pending with kube's message (`persistentvolumeclaim "data" not found`, `pod has
//!   unbound immediate PersistentVolumeClaims`), on no node at all.
//! - A claim bound to a volume with node affinity (a local-path volume) keeps the pod on the
//!   nodes that affinity selects (`node(s) had volume node affinity conflict`).
//! - An unbound claim of a `WaitForFirstConsumer` class: a node fits if a free volume usable
//!   there matches the claim or the class has a provisioner (`node(s) didn't find available
//!   persistent volumes to bind` otherwise); once the scheduler picked a node it writes
//!   `volume.kubernetes.io/selected-node` on the claims and binds the pod only when the
//!   PersistentVolume binder has bound them (a claim already carrying the annotation keeps the
//!   pod on that node).

use std::{collections::BTreeMap, sync::Arc};

use futures_util::{StreamExt, stream::BoxStream};
use k8s_openapi::api::{
    core::v1::{PersistentVolume, PersistentVolumeClaim, Pod},
    storage::v1::StorageClass,
};
use keelson_api::storage::{self as st, ANN_SELECTED_NODE};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, reflector, reflector::Store, watcher},
};
use serde_json::json;

use crate::{Placement, plugins::NodeInfo, pods::NamespaceLabels};

/// Why a node does not fit a pod's bound volumes.
pub const NODE_CONFLICT: &str = "node(s) had volume node affinity conflict";
/// Why a node cannot hold a pod's unbound WaitForFirstConsumer claims.
pub const NO_VOLUME: &str = "node(s) didn't find available persistent volumes to bind";
/// A pod with unbound claims of an Immediate class.
pub const UNBOUND_IMMEDIATE: &str = "pod has unbound immediate PersistentVolumeClaims";

/// The caches volume binding reads: claims, volumes and classes.
#[derive(Clone)]
pub struct Volumes {
    claims: Store<PersistentVolumeClaim>,
    volumes: Store<PersistentVolume>,
    classes: Store<StorageClass>,
}

impl std::fmt::Debug for Volumes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volumes").finish_non_exhaustive()
    }
}

/// One watch feeding a cache; its items only say that something changed.
pub type Feed = (&'static str, BoxStream<'static, Result<(), watcher::Error>>);

pub(crate) fn feed<K>(api: Api<K>) -> (Store<K>, BoxStream<'static, Result<(), watcher::Error>>)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let stream = reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    )
    .touched_objects()
    .map(|r| r.map(drop))
    .boxed();
    (store, stream)
}

/// Starts caching claims, volumes and classes: the caches, and the watches to drive (the
/// scheduler wakes on each of their events).
pub fn watch(client: &Client) -> (Volumes, Vec<Feed>) {
    let (claims, claim_feed) = feed(Api::<PersistentVolumeClaim>::all(client.clone()));
    let (volumes, volume_feed) = feed(Api::<PersistentVolume>::all(client.clone()));
    let (classes, class_feed) = feed(Api::<StorageClass>::all(client.clone()));
    (
        Volumes {
            claims,
            volumes,
            classes,
        },
        vec![
            ("persistentvolumeclaims", claim_feed),
            ("persistentvolumes", volume_feed),
            ("storageclasses", class_feed),
        ],
    )
}

impl Volumes {
    /// Waits for the first listing of every cache.
    pub async fn wait_until_ready(&self) -> Result<(), reflector::store::WriterDropped> {
        self.claims.wait_until_ready().await?;
        self.volumes.wait_until_ready().await?;
        self.classes.wait_until_ready().await
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            claims: self.claims.state(),
            volumes: self.volumes.state(),
            classes: self.classes.state(),
        }
    }
}

/// The state one decision reads.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Every claim.
    pub claims: Vec<Arc<PersistentVolumeClaim>>,
    /// Every volume.
    pub volumes: Vec<Arc<PersistentVolume>>,
    /// Every StorageClass.
    pub classes: Vec<Arc<StorageClass>>,
}

/// The names of the claims a pod uses: `persistentVolumeClaim` volumes and the claims of
/// generic ephemeral volumes (`<pod>-<volume>`).
pub fn claim_names(pod: &Pod) -> Vec<String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| {
            if let Some(claim) = &v.persistent_volume_claim {
                Some(claim.claim_name.clone())
            } else {
                v.ephemeral
                    .as_ref()
                    .map(|_| format!("{pod_name}-{}", v.name))
            }
        })
        .collect()
}

/// What a pod's claims require of a node.
#[derive(Debug, Default)]
pub struct PodVolumes {
    /// Volumes the pod's claims are bound to.
    pub bound: Vec<Arc<PersistentVolume>>,
    /// Unbound WaitForFirstConsumer claims, with whether their class has a provisioner.
    pub delayed: Vec<(Arc<PersistentVolumeClaim>, bool)>,
    /// The node a delayed claim was already given (`selected-node`).
    pub selected: Option<String>,
}

/// The pod's claims resolved (kube's PreFilter), or why it fits no node.
pub fn resolve(pod: &Pod, snapshot: &Snapshot) -> Result<PodVolumes, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut resolved = PodVolumes::default();
    for name in claim_names(pod) {
        let claim = snapshot
            .claims
            .iter()
            .find(|c| {
                c.metadata.namespace.as_deref() == Some(namespace)
                    && c.metadata.name.as_deref() == Some(name.as_str())
            })
            .ok_or_else(|| format!("persistentvolumeclaim \"{name}\" not found"))?;
        if claim.metadata.deletion_timestamp.is_some() {
            return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
        }
        let volume_name = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.as_deref())
            .filter(|v| !v.is_empty());
        if let Some(volume_name) = volume_name {
            let volume = snapshot
                .volumes
                .iter()
                .find(|v| v.metadata.name.as_deref() == Some(volume_name))
                .ok_or_else(|| {
                    format!("pvc {name} was bound to pv {volume_name} which is not found")
                })?;
            resolved.bound.push(Arc::clone(volume));
            continue;
        }
        let class_name = st::claim_class(claim);
        let class = snapshot
            .classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(class_name));
        let delayed =
            class.is_some_and(|c| c.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer"));
        if !delayed {
            return Err(UNBOUND_IMMEDIATE.to_owned());
        }
        let provisions = class.is_some_and(|c| c.provisioner != "kubernetes.io/no-provisioner");
        if let Some(node) = st::annotation(&claim.metadata.annotations, ANN_SELECTED_NODE) {
            resolved.selected = Some(node.to_owned());
        }
        resolved.delayed.push((Arc::clone(claim), provisions));
    }
    Ok(resolved)
}

/// Whether `node` can hold the pod's volumes (kube's Filter), else the reason.
pub fn node_fits(
    volumes: &PodVolumes,
    snapshot: &Snapshot,
    node: &NodeInfo,
) -> Result<(), &'static str> {
    if volumes
        .bound
        .iter()
        .any(|v| !st::volume_fits_node(v, &node.name, &node.labels))
    {
        return Err(NODE_CONFLICT);
    }
    if volumes.selected.as_deref().is_some_and(|s| s != node.name) {
        return Err(NODE_CONFLICT);
    }
    for (claim, provisions) in &volumes.delayed {
        let free = st::find_matching_volume(
            claim,
            snapshot.volumes.iter().map(AsRef::as_ref),
            Some((&node.name, &node.labels)),
            true,
        );
        if free.is_none() && !provisions {
            return Err(NO_VOLUME);
        }
    }
    Ok(())
}

/// [`crate::place`] with the pod's volumes taken into account (pure given `snapshot`).
pub fn place_with(
    pod: &Pod,
    nodes: &[NodeInfo],
    namespaces: &NamespaceLabels,
    tie_break: usize,
    snapshot: &Snapshot,
) -> Placement {
    if claim_names(pod).is_empty() {
        return crate::place_in(pod, nodes, namespaces, tie_break).0;
    }
    let volumes = match resolve(pod, snapshot) {
        Ok(volumes) => volumes,
        Err(message) => {
            return Placement::Unschedulable(format!(
                "0/{} nodes are available: {message}.",
                nodes.len()
            ));
        }
    };
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut fitting = Vec::new();
    for node in nodes {
        match node_fits(&volumes, snapshot, node) {
            Ok(()) => fitting.push(node.clone()),
            Err(reason) => *reasons.entry(reason.to_owned()).or_default() += 1,
        }
    }
    if reasons.is_empty() {
        return crate::place_in(pod, nodes, namespaces, tie_break).0;
    }
    match crate::place_in(pod, &fitting, namespaces, tie_break).0 {
        Placement::Node(node) => Placement::Node(node),
        Placement::Unschedulable(_) => {
            let request = crate::plugins::pod_requests(pod);
            let ports = crate::plugins::pod_host_ports(pod);
            for node in &fitting {
                if let Err(unfit) = crate::plugins::filter(pod, &request, &ports, node) {
                    *reasons.entry(unfit.to_string()).or_default() += 1;
                }
            }
            Placement::Unschedulable(crate::plugins::unschedulable_message(nodes.len(), &reasons))
        }
    }
}

/// [`place_with`] on the current caches.
pub fn place(
    pod: &Pod,
    nodes: &[NodeInfo],
    namespaces: &NamespaceLabels,
    tie_break: usize,
    volumes: &Volumes,
) -> Placement {
    if claim_names(pod).is_empty() {
        return crate::place_in(pod, nodes, namespaces, tie_break).0;
    }
    place_with(pod, nodes, namespaces, tie_break, &volumes.snapshot())
}

/// The unbound claims of `pod` that still need `selected-node` (pure).
pub fn claims_to_select(pod: &Pod, snapshot: &Snapshot) -> (Vec<String>, bool) {
    let Ok(volumes) = resolve(pod, snapshot) else {
        return (Vec::new(), false);
    };
    let unselected = volumes
        .delayed
        .iter()
        .filter(|(c, _)| st::annotation(&c.metadata.annotations, ANN_SELECTED_NODE).is_none())
        .filter_map(|(c, _)| c.metadata.name.clone())
        .collect();
    (unselected, !volumes.delayed.is_empty())
}

/// Binds `pod` to `node` once its claims are bound: unbound WaitForFirstConsumer claims get
/// `selected-node` first and the pod waits (`false`: retried on the next pass, when the
/// binder has bound them).
pub(crate) async fn bind(client: &Client, volumes: &Volumes, pod: &Pod, node: &str) -> bool {
    if claim_names(pod).is_empty() {
        return crate::bind(client, pod, node).await;
    }
    let (unselected, waiting) = claims_to_select(pod, &volumes.snapshot());
    let namespace = pod.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
    for claim in &unselected {
        let patch = json!({"metadata": {"annotations": {ANN_SELECTED_NODE: node}}});
        if let Err(error) = api
            .patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::debug!(claim = %format!("{namespace}/{claim}"), %error, "cannot select a node");
            return false;
        }
        tracing::info!(claim = %format!("{namespace}/{claim}"), node, "selected a node for the claim");
    }
    if waiting {
        // Pods wait for their claims to bind (kube's PreBind).
        return false;
    }
    crate::bind(client, pod, node).await
}

#[cfg(test)]
#[path = "volume_binding_tests.rs"]
mod tests;

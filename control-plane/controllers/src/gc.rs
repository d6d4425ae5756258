//! Garbage collection through `ownerReferences`, as Kubernetes' garbage collector does:
//!
//! - an object all of whose owners are gone is deleted (background propagation: the owner
//!   went first);
//! - an owner being deleted with the `foregroundDeletion` finalizer has its dependents deleted
//!   (themselves in the foreground) and loses the finalizer once none are left, which lets the
//!   API server delete it;
//! - an owner with the `orphan` finalizer has its owner reference removed from its dependents,
//!   then loses the finalizer.
//!
//! It keeps a watch-fed cache (kube-rs reflectors) of every kind it knows and scans the caches
//! shortly after any change and at least every [`SCAN_PERIOD`], so a scan costs no API calls
//! but the writes it decides; an owner that looks gone is confirmed with a direct GET (by name,
//! then uid) before a dependent is deleted.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::Duration,
};

use futures_util::StreamExt;
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams},
    runtime::{
        WatchStreamExt, reflector,
        reflector::{Store, store::Writer},
        watcher,
    },
};
use serde_json::json;
use tokio::sync::Notify;

use crate::{ApiContext, Result, error_chain, is_status};

/// The longest time between scans.
pub const SCAN_PERIOD: Duration = Duration::from_secs(5);
/// How long a scan waits after a change for more changes to settle.
const DEBOUNCE: Duration = Duration::from_millis(200);

/// `(group, version, kind, plural, namespaced)` of the kinds scanned.
const KINDS: &[(&str, &str, &str, &str, bool)] = &[
    ("apps", "v1", "Deployment", "deployments", true),
    ("apps", "v1", "ReplicaSet", "replicasets", true),
    ("apps", "v1", "StatefulSet", "statefulsets", true),
    ("apps", "v1", "DaemonSet", "daemonsets", true),
    ("batch", "v1", "Job", "jobs", true),
    ("batch", "v1", "CronJob", "cronjobs", true),
    (
        "",
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        true,
    ),
    (
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        true,
    ),
    (
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        true,
    ),
    ("", "v1", "Pod", "pods", true),
    ("", "v1", "Service", "services", true),
    ("", "v1", "Endpoints", "endpoints", true),
    (
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        true,
    ),
    ("", "v1", "ConfigMap", "configmaps", true),
    ("", "v1", "Secret", "secrets", true),
    ("coordination.k8s.io", "v1", "Lease", "leases", true),
    ("", "v1", "Node", "nodes", false),
];

fn resource(kind: &str, api_version: &str) -> Option<(ApiResource, bool)> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    KINDS
        .iter()
        .find(|(g, v, k, _, _)| *g == group && *v == version && *k == kind)
        .map(|(g, v, k, plural, namespaced)| {
            (
                ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), plural),
                *namespaced,
            )
        })
}

struct Object {
    api: Api<DynamicObject>,
    object: DynamicObject,
}

/// A watch-fed cache of one kind.
struct Cache {
    resource: ApiResource,
    store: Store<DynamicObject>,
}

/// Runs the collector until the process ends.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let changed = Arc::new(Notify::new());
    let mut feeders = tokio::task::JoinSet::new();
    let mut caches = Vec::new();
    for (group, version, kind, plural, _) in KINDS {
        let resource =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let writer = Writer::new(resource.clone());
        let store = writer.as_reader();
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        // Only metadata matters here: as kube-controller-manager's metadata informers (and
        // their managedFields-stripping transform), the cache keeps neither the body nor
        // `metadata.managedFields` of the objects it watches.
        let stream = reflector(
            writer,
            watcher(api, watcher::Config::default())
                .default_backoff()
                .modify(|object: &mut DynamicObject| {
                    object.managed_fields_mut().clear();
                    object.data = serde_json::Value::Null;
                }),
        )
        .touched_objects();
        let changed = Arc::clone(&changed);
        feeders.spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Err(error) = event {
                    tracing::debug!(kind = plural, %error, "garbage collector watch error");
                }
                changed.notify_one();
            }
        });
        caches.push(Cache { resource, store });
    }
    for cache in &caches {
        cache.store.wait_until_ready().await?;
    }
    loop {
        if let Err(error) = scan(&client, &caches).await {
            tracing::warn!(error = %error_chain(&error), "garbage collection scan failed");
        }
        tokio::select! {
            () = changed.notified() => tokio::time::sleep(DEBOUNCE).await,
            () = tokio::time::sleep(SCAN_PERIOD) => {}
        }
    }
}

async fn scan(client: &Client, caches: &[Cache]) -> Result<()> {
    // Every uid, and the objects that matter: dependents and objects being deleted.
    let mut by_uid: HashSet<String> = HashSet::new();
    let mut objects = Vec::new();
    for cache in caches {
        let ar = &cache.resource;
        for object in cache.store.state() {
            by_uid.extend(object.metadata.uid.clone());
            if object.owner_references().is_empty() && object.metadata.deletion_timestamp.is_none()
            {
                continue;
            }
            let object = DynamicObject::clone(&object);
            let scoped = match object.namespace() {
                Some(ns) => Api::namespaced_with(client.clone(), &ns, ar),
                None => Api::all_with(client.clone(), ar),
            };
            objects.push(Object {
                api: scoped,
                object,
            });
        }
    }
    let mut dependents: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, o) in objects.iter().enumerate() {
        for owner in o.object.owner_references() {
            dependents.entry(owner.uid.clone()).or_default().push(i);
        }
    }
    // Dependents whose owners are all gone.
    for o in &objects {
        let owners = o.object.owner_references();
        if owners.is_empty() || o.object.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if owners.iter().any(|r| by_uid.contains(&r.uid)) {
            continue;
        }
        let mut all_gone = true;
        for owner in owners {
            if owner_exists(client, &o.object, owner).await? {
                all_gone = false;
                break;
            }
        }
        if all_gone {
            delete(o, DeleteParams::background()).await?;
        }
    }
    // Owners waiting on their dependents.
    for o in &objects {
        if o.object.metadata.deletion_timestamp.is_none() {
            continue;
        }
        let finalizers = o.object.finalizers();
        let uid = o.object.metadata.uid.clone().unwrap_or_default();
        let deps = dependents.get(&uid).cloned().unwrap_or_default();
        if finalizers.iter().any(|f| f == "orphan") {
            for d in &deps {
                orphan(&objects[*d], &uid).await?;
            }
            remove_finalizer(o, "orphan").await?;
        } else if finalizers.iter().any(|f| f == "foregroundDeletion") {
            if deps.is_empty() {
                remove_finalizer(o, "foregroundDeletion").await?;
            } else {
                for d in &deps {
                    if objects[*d].object.metadata.deletion_timestamp.is_none() {
                        delete(&objects[*d], DeleteParams::foreground()).await?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Whether the owner a reference names still exists with that uid (a live GET).
async fn owner_exists(
    client: &Client,
    dependent: &DynamicObject,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> Result<bool> {
    let Some((ar, namespaced)) = resource(&owner.kind, &owner.api_version) else {
        // A kind this collector does not know: never delete on its account.
        return Ok(true);
    };
    let api: Api<DynamicObject> = match (namespaced, dependent.namespace()) {
        (true, Some(ns)) => Api::namespaced_with(client.clone(), &ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    };
    match api.get(&owner.name).await {
        Ok(found) => Ok(found.metadata.uid.as_deref() == Some(owner.uid.as_str())),
        Err(e) if is_status(&e, 404) => Ok(false),
        Err(e) => Err(e).action(|| format!("get owner {} {}", owner.kind, owner.name)),
    }
}

async fn delete(o: &Object, params: DeleteParams) -> Result<()> {
    let name = o.object.name_any();
    match o.api.delete(&name, &params).await {
        Ok(_) => {
            tracing::debug!(name, "garbage collected");
            Ok(())
        }
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
        Err(e) => Err(e).action(|| format!("delete {name}")),
    }
}

async fn orphan(o: &Object, owner_uid: &str) -> Result<()> {
    let name = o.object.name_any();
    let kept: Vec<_> = o
        .object
        .owner_references()
        .iter()
        .filter(|r| r.uid != owner_uid)
        .cloned()
        .collect();
    let patch = json!({"metadata": {"ownerReferences": kept,
                                    "resourceVersion": o.object.resource_version()}});
    match o
        .api
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
        Err(e) => Err(e).action(|| format!("orphan {name}")),
    }
}

async fn remove_finalizer(o: &Object, finalizer: &str) -> Result<()> {
    let name = o.object.name_any();
    let kept: Vec<&String> = o
        .object
        .finalizers()
        .iter()
        .filter(|f| *f != finalizer)
        .collect();
    let patch = json!({"metadata": {"finalizers": kept,
                                    "resourceVersion": o.object.resource_version()}});
    match o
        .api
        .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(()),
        Err(e) => Err(e).action(|| format!("remove the {finalizer} finalizer of {name}")),
    }
}

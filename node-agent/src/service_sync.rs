//! The agent's service sync: watches Services and EndpointSlices through the Kubernetes API
//! (kube-rs watchers), turns each changed Service into frontends and applies only that Service's
//! map writes. After both initial lists, entries adopted from a previous run that no Service
//! claims are removed. The Services it sees are the agent's one view of them ([`ServiceCache`]),
//! which the pod runner reads for pods' service environment variables.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api, Client, ResourceExt as _,
    runtime::{
        WatchStreamExt as _,
        watcher::{self, Event},
    },
};

use crate::{
    datapath::lb::{self, LoadBalancer, NodeContext},
    error_chain,
};

/// The label tying an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One event from either watcher (boxed: a Service is much larger than an EndpointSlice).
enum Change {
    Service(Box<Event<Service>>),
    Slice(Box<Event<EndpointSlice>>),
}

/// Every Service of the cluster as the watch last saw it, by `namespace/name`, shared by the
/// datapath sync (which feeds it) and the pod runner (service environment variables, as the
/// kubelet's Service informer serves `getServiceEnvVarMap`).
#[derive(Debug, Default)]
pub struct ServiceCache {
    services: std::sync::RwLock<BTreeMap<String, Service>>,
    listed: tokio::sync::Notify,
    listed_once: std::sync::atomic::AtomicBool,
}

impl ServiceCache {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Service>> {
        self.services
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads the Services under the lock (keep `f` short; it must not block).
    pub fn read<R>(&self, f: impl FnOnce(&BTreeMap<String, Service>) -> R) -> R {
        f(&self
            .services
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Adds or replaces a Service.
    pub fn insert(&self, service: Service) {
        let id = service_id(
            &service.namespace().unwrap_or_default(),
            &service.name_any(),
        );
        self.write().insert(id, service);
    }

    /// Marks the first full list as seen (wakes [`Self::wait_listed`]).
    pub fn mark_listed(&self) {
        self.listed_once
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.listed.notify_waiters();
    }

    /// Whether the Services have been listed at least once.
    pub fn is_listed(&self) -> bool {
        self.listed_once.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits up to `timeout` for the first list; returns whether it has been seen.
    pub async fn wait_listed(&self, timeout: std::time::Duration) -> bool {
        let notified = self.listed.notified();
        if self.is_listed() {
            return true;
        }
        let _ = tokio::time::timeout(timeout, notified).await;
        self.is_listed()
    }
}

/// What the watchers have seen, by `namespace/name`.
struct Cache {
    services: std::sync::Arc<ServiceCache>,
    /// Slices by service id, then by slice name.
    slices: BTreeMap<String, BTreeMap<String, EndpointSlice>>,
    services_listed: bool,
    slices_listed: bool,
    initial_sync_done: bool,
}

fn service_id(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn slice_owner(slice: &EndpointSlice) -> Option<(String, String)> {
    let service = slice.labels().get(SERVICE_NAME_LABEL)?;
    Some((
        service_id(&slice.namespace().unwrap_or_default(), service),
        slice.name_any(),
    ))
}

/// Runs until the watch streams end (they retry on errors, so: until the process stops).
/// `lb` is shared with the pod network (which attaches TC programs to pod veths); it is locked
/// for each batch of map writes only.
pub async fn run(
    client: Client,
    lb: &std::sync::Mutex<LoadBalancer>,
    node: NodeContext,
    services: std::sync::Arc<ServiceCache>,
) -> anyhow::Result<()> {
    let service_events = watcher::watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .map_ok(|e| Change::Service(Box::new(e)));
    let slices = watcher::watcher(
        Api::<EndpointSlice>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .map_ok(|e| Change::Slice(Box::new(e)));
    let mut changes = stream::select(service_events, slices).boxed();
    let mut cache = Cache {
        services,
        slices: BTreeMap::new(),
        services_listed: false,
        slices_listed: false,
        initial_sync_done: false,
    };
    let mut pending_services: BTreeSet<String> = BTreeSet::new();
    let mut pending_slices: BTreeMap<String, BTreeMap<String, EndpointSlice>> = BTreeMap::new();
    while let Some(change) = changes.next().await {
        let change = match change {
            Ok(change) => change,
            Err(error) => {
                // The watcher retries by itself; say so once per failure.
                tracing::warn!(%error, "watching Services/EndpointSlices");
                continue;
            }
        };
        let mut dirty: BTreeSet<String> = BTreeSet::new();
        match change {
            Change::Service(event) => match *event {
                Event::Apply(svc) => {
                    let id = service_id(&svc.namespace().unwrap_or_default(), &svc.name_any());
                    cache.services.insert(svc);
                    dirty.insert(id);
                }
                Event::Delete(svc) => {
                    let id = service_id(&svc.namespace().unwrap_or_default(), &svc.name_any());
                    cache.services.write().remove(&id);
                    dirty.insert(id);
                }
                Event::Init => pending_services.clear(),
                Event::InitApply(svc) => {
                    pending_services.insert(service_id(
                        &svc.namespace().unwrap_or_default(),
                        &svc.name_any(),
                    ));
                    cache.services.insert(svc);
                }
                Event::InitDone => {
                    // Services gone during a re-list: drop them.
                    let mut services = cache.services.write();
                    services.retain(|id, _| pending_services.contains(id));
                    dirty.extend(services.keys().cloned());
                    drop(services);
                    cache.services.mark_listed();
                    cache.services_listed = true;
                }
            },
            Change::Slice(event) => match *event {
                Event::Apply(slice) => {
                    if let Some((owner, name)) = slice_owner(&slice) {
                        cache
                            .slices
                            .entry(owner.clone())
                            .or_default()
                            .insert(name, slice);
                        dirty.insert(owner);
                    }
                }
                Event::Delete(slice) => {
                    if let Some((owner, name)) = slice_owner(&slice) {
                        if let Some(slices) = cache.slices.get_mut(&owner) {
                            slices.remove(&name);
                        }
                        dirty.insert(owner);
                    }
                }
                Event::Init => pending_slices.clear(),
                Event::InitApply(slice) => {
                    if let Some((owner, name)) = slice_owner(&slice) {
                        pending_slices.entry(owner).or_default().insert(name, slice);
                    }
                }
                Event::InitDone => {
                    // The re-list replaces every slice at once.
                    dirty.extend(cache.slices.keys().cloned());
                    cache.slices = std::mem::take(&mut pending_slices);
                    dirty.extend(cache.slices.keys().cloned());
                    cache.slices_listed = true;
                }
            },
        }
        if !(cache.services_listed && cache.slices_listed) {
            continue;
        }
        for id in dirty {
            let frontends = cache.services.read(|services| match services.get(&id) {
                Some(svc) => {
                    let slices: Vec<&EndpointSlice> = cache
                        .slices
                        .get(&id)
                        .map(|s| s.values().collect())
                        .unwrap_or_default();
                    lb::frontends(svc, &slices, &node)
                }
                None => Vec::new(),
            });
            let updated = lb
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .update(&id, frontends);
            match updated {
                Ok(writes) if writes > 0 => {
                    tracing::info!(service = %id, writes, "datapath updated")
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(service = %id, error = %error_chain(&error), "datapath update failed")
                }
            }
        }
        if !cache.initial_sync_done {
            cache.initial_sync_done = true;
            crate::health::SIGNALS.services_synced();
            let finished = lb
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .finish_initial_sync();
            match finished {
                Ok(removed) => tracing::info!(removed, "initial service sync done"),
                Err(error) => {
                    tracing::error!(error = %error_chain(&error), "initial sync cleanup failed")
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use super::*;

    #[tokio::test]
    async fn pods_wait_for_the_first_list_of_services() {
        let cache = Arc::new(ServiceCache::default());
        assert!(!cache.wait_listed(Duration::from_millis(20)).await);
        let waiter = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.wait_listed(Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        let mut svc = Service::default();
        svc.metadata.name = Some("kubernetes".into());
        svc.metadata.namespace = Some("default".into());
        cache.insert(svc);
        cache.mark_listed();
        assert!(waiter.await.expect("join"), "woken by the first list");
        assert!(cache.wait_listed(Duration::ZERO).await);
        assert_eq!(
            cache.read(|s| s.keys().cloned().collect::<Vec<_>>()),
            ["default/kubernetes"]
        );
    }
}

//! The agent's service sync: watches Services and EndpointSlices through the Kubernetes API
//! (kube-rs watchers), turns each changed Service into frontends and applies only that Service's
//! map writes. After both initial lists, entries adopted from a previous run that no Service
//! claims are removed. The Services it sees are the agent's one view of them ([`ServiceCache`]),
//! which the pod runner reads for pods' service environment variables. The same cache feeds
//! the health-check ports of `externalTrafficPolicy: Local` LoadBalancers
//! ([`crate::service_health`]).
//!
//! Its metrics ([`ProxyMetrics`]) carry kube-proxy's names and buckets
//! (`pkg/proxy/metrics/metrics.go`).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::atomic::AtomicU64,
    time::{Instant, SystemTime},
};

use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use k8s_openapi::{
    api::{core::v1::Service, discovery::v1::EndpointSlice},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Client, ResourceExt as _,
    runtime::{
        WatchStreamExt as _,
        watcher::{self, Event},
    },
};
use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

use crate::{
    datapath::lb::{self, LoadBalancer, NodeContext},
    error_chain,
};

/// The label tying an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// When the change that made the endpoint controller write an EndpointSlice happened (set by
/// the controller, RFC 3339); kube-proxy measures network programming latency from it.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// kube-proxy's sync buckets: 1 ms doubling 15 times (to about 16 s).
fn sync_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 15,
    ))
}

/// kube-proxy's network programming buckets: 0, 0.25 s, 0.5 s, every second to 59 s, every 5 s
/// to 115 s, every 30 s from 2 to 5 minutes.
fn programming_buckets() -> Histogram {
    let buckets = [0.0, 0.25, 0.5]
        .into_iter()
        .chain((1..=59).map(f64::from))
        .chain((0..12).map(|i| 60.0 + 5.0 * f64::from(i)))
        .chain((0..7).map(|i| 120.0 + 30.0 * f64::from(i)));
    Histogram::new(buckets)
}

/// The service sync's metrics, under kube-proxy's names:
/// - `kubeproxy_sync_proxy_rules_duration_seconds` (histogram): one round of map writes, for
///   every Service a watch event changed;
/// - `kubeproxy_sync_proxy_rules_last_timestamp_seconds` (gauge): when the last round ended
///   without an error;
/// - `kubeproxy_network_programming_duration_seconds` (histogram): from an EndpointSlice's
///   [`LAST_CHANGE_TRIGGER_TIME`] to the map writes for it (each trigger time once; times
///   before the agent started are left out, as kube-proxy does; the clocks of the controller's
///   and this node's machines are compared);
/// - `kubeproxy_sync_proxy_rules_endpoint_changes_total`,
///   `kubeproxy_sync_proxy_rules_service_changes_total` (counters): EndpointSlice and Service
///   watch events.
#[derive(Debug, Clone)]
pub struct ProxyMetrics {
    sync_duration: Histogram,
    last_sync: Gauge<f64, AtomicU64>,
    network_programming: Histogram,
    endpoint_changes: Counter,
    service_changes: Counter,
    started: SystemTime,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self {
            sync_duration: sync_buckets(),
            last_sync: Gauge::default(),
            network_programming: programming_buckets(),
            endpoint_changes: Counter::default(),
            service_changes: Counter::default(),
            started: SystemTime::now(),
        }
    }
}

impl ProxyMetrics {
    /// Registers every service-sync metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds (one round of datapath map writes)",
            self.sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            self.last_sync.clone(),
        );
        registry.register(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            self.network_programming.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules Endpoint changes",
            self.endpoint_changes.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            self.service_changes.clone(),
        );
    }

    /// Records the programming latency of each trigger time, at `now`.
    fn observe_programmed(&self, triggers: &[SystemTime], now: SystemTime) {
        for trigger in triggers {
            if let Ok(took) = now.duration_since(*trigger) {
                self.network_programming.observe(took.as_secs_f64());
            }
        }
    }
}

/// The trigger time `slice` carries if it is new (not `last`) and after `started`.
fn new_trigger(
    slice: &EndpointSlice,
    last: Option<&String>,
    started: SystemTime,
) -> Option<SystemTime> {
    let value = slice.annotations().get(LAST_CHANGE_TRIGGER_TIME)?;
    if last == Some(value) {
        return None;
    }
    let time: Time = serde_json::from_value(serde_json::Value::String(value.clone())).ok()?;
    let time = SystemTime::from(time.0);
    (time >= started).then_some(time)
}

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
    /// The EndpointSlices of each Service (by service id, then slice name), as the datapath
    /// last programmed them.
    slices: std::sync::RwLock<BTreeMap<String, BTreeMap<String, EndpointSlice>>>,
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

    /// Reads the Services and their EndpointSlices (by service id, then slice name) under the
    /// locks (keep `f` short; it must not block).
    pub fn read_with_slices<R>(
        &self,
        f: impl FnOnce(
            &BTreeMap<String, Service>,
            &BTreeMap<String, BTreeMap<String, EndpointSlice>>,
        ) -> R,
    ) -> R {
        let services = self
            .services
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slices = self
            .slices
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&services, &slices)
    }

    fn write_slices(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, BTreeMap<String, EndpointSlice>>> {
        self.slices
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
    metrics: &ProxyMetrics,
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
        services_listed: false,
        slices_listed: false,
        initial_sync_done: false,
    };
    let mut health = crate::service_health::HealthServers::new(std::net::Ipv4Addr::UNSPECIFIED);
    let mut pending_services: BTreeSet<String> = BTreeSet::new();
    let mut pending_slices: BTreeMap<String, BTreeMap<String, EndpointSlice>> = BTreeMap::new();
    // The trigger time last seen on each slice (by namespace/name), and the new ones not yet
    // programmed, by Service.
    let mut seen_triggers: BTreeMap<String, String> = BTreeMap::new();
    let mut triggers: BTreeMap<String, Vec<SystemTime>> = BTreeMap::new();
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
        match &change {
            Change::Service(event) if !matches!(**event, Event::Init | Event::InitDone) => {
                metrics.service_changes.inc();
            }
            Change::Slice(event) if !matches!(**event, Event::Init | Event::InitDone) => {
                metrics.endpoint_changes.inc();
            }
            _ => {}
        }
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
                        let key = service_id(&slice.namespace().unwrap_or_default(), &name);
                        if let Some(time) =
                            new_trigger(&slice, seen_triggers.get(&key), metrics.started)
                        {
                            triggers.entry(owner.clone()).or_default().push(time);
                        }
                        if let Some(value) = slice.annotations().get(LAST_CHANGE_TRIGGER_TIME) {
                            seen_triggers.insert(key, value.clone());
                        }
                        cache
                            .services
                            .write_slices()
                            .entry(owner.clone())
                            .or_default()
                            .insert(name, slice);
                        dirty.insert(owner);
                    }
                }
                Event::Delete(slice) => {
                    if let Some((owner, name)) = slice_owner(&slice) {
                        seen_triggers
                            .remove(&service_id(&slice.namespace().unwrap_or_default(), &name));
                        if let Some(slices) = cache.services.write_slices().get_mut(&owner) {
                            slices.remove(&name);
                        }
                        dirty.insert(owner);
                    }
                }
                Event::Init => {
                    pending_slices.clear();
                    seen_triggers.clear();
                }
                Event::InitApply(slice) => {
                    if let Some((owner, name)) = slice_owner(&slice) {
                        // A listed slice's trigger time is not a change seen by this agent.
                        if let Some(value) = slice.annotations().get(LAST_CHANGE_TRIGGER_TIME) {
                            let key = service_id(&slice.namespace().unwrap_or_default(), &name);
                            seen_triggers.insert(key, value.clone());
                        }
                        pending_slices.entry(owner).or_default().insert(name, slice);
                    }
                }
                Event::InitDone => {
                    // The re-list replaces every slice at once.
                    let mut slices = cache.services.write_slices();
                    dirty.extend(slices.keys().cloned());
                    *slices = std::mem::take(&mut pending_slices);
                    dirty.extend(slices.keys().cloned());
                    drop(slices);
                    cache.slices_listed = true;
                }
            },
        }
        if !(cache.services_listed && cache.slices_listed) {
            continue;
        }
        let round = (!dirty.is_empty()).then(Instant::now);
        let mut failed = false;
        for id in dirty {
            let (frontends, check) =
                cache
                    .services
                    .read_with_slices(|services, slices| match services.get(&id) {
                        Some(svc) => {
                            let slices: Vec<&EndpointSlice> = slices
                                .get(&id)
                                .map(|s| s.values().collect())
                                .unwrap_or_default();
                            (
                                lb::frontends(svc, &slices, &node),
                                crate::service_health::health_check(svc, &slices, &node.node_name),
                            )
                        }
                        None => (Vec::new(), None),
                    });
            health.update(&id, check);
            let updated = lb
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .update(&id, frontends);
            let programmed = triggers.remove(&id).unwrap_or_default();
            match updated {
                Ok(writes) => {
                    if writes > 0 {
                        tracing::info!(service = %id, writes, "datapath updated");
                    }
                    metrics.observe_programmed(&programmed, SystemTime::now());
                }
                Err(error) => {
                    failed = true;
                    if !programmed.is_empty() {
                        triggers.insert(id.clone(), programmed);
                    }
                    tracing::error!(service = %id, error = %error_chain(&error), "datapath update failed")
                }
            }
        }
        if let Some(round) = round {
            metrics.sync_duration.observe(round.elapsed().as_secs_f64());
        }
        if round.is_some() {
            // kube-proxy's serviceProxyHealthy: the datapath holds what the cache says.
            health.set_healthy(!failed);
        }
        if round.is_some() && !failed {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            metrics.last_sync.set(now.as_secs_f64());
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

    fn slice_with_trigger(value: Option<&str>) -> EndpointSlice {
        let mut slice = EndpointSlice::default();
        slice.metadata.annotations =
            value.map(|v| BTreeMap::from([(LAST_CHANGE_TRIGGER_TIME.to_owned(), v.to_owned())]));
        slice
    }

    #[test]
    fn each_trigger_time_after_the_start_is_taken_once() {
        let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_millis(secs);
        let started = at(1_700_000_000_000);
        let later = "2023-11-14T22:13:21.5Z"; // 1_700_000_001.5 s
        let last = later.to_owned();
        let cases: [(Option<&str>, Option<&String>, Option<SystemTime>); 5] = [
            (Some(later), None, Some(at(1_700_000_001_500))),
            (Some(later), Some(&last), None),
            // Before the agent started (the initial list): not a programming latency.
            (Some("2023-11-14T22:13:19Z"), None, None),
            (Some("yesterday"), None, None),
            (None, None, None),
        ];
        for (value, seen, want) in cases {
            assert_eq!(
                new_trigger(&slice_with_trigger(value), seen, started),
                want,
                "{value:?} after {seen:?}"
            );
        }
    }

    #[test]
    fn proxy_metrics_use_kube_proxys_buckets() {
        let metrics = ProxyMetrics::default();
        let now = SystemTime::now();
        metrics.observe_programmed(
            &[
                now - Duration::from_millis(700),
                now + Duration::from_secs(1),
            ],
            now,
        );
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        let buckets = |name: &str| {
            text.lines()
                .filter(|l| l.starts_with(&format!("{name}_bucket")))
                .count()
        };
        // 0, 0.25, 0.5, 1..=59, 60..=115 by 5, 120..=300 by 30, and +Inf.
        assert_eq!(
            buckets("kubeproxy_network_programming_duration_seconds"),
            82
        );
        // 1 ms doubling 15 times, and +Inf.
        assert_eq!(buckets("kubeproxy_sync_proxy_rules_duration_seconds"), 16);
        // The 0.7 s change is counted between 0.5 and 1 s; the one from the future is not.
        for line in [
            "kubeproxy_network_programming_duration_seconds_bucket{le=\"0.5\"} 0",
            "kubeproxy_network_programming_duration_seconds_bucket{le=\"1.0\"} 1",
            "kubeproxy_network_programming_duration_seconds_count 1",
            "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"16.384\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }
}

//! The agent's NetworkPolicy sync: kube-rs watchers on Pods (every namespace and node),
//! Namespaces and NetworkPolicies feed a [`PolicySource`]; once all three are listed, every
//! change (after a short debounce that gathers a burst of events into one compile) recompiles
//! the model and writes only the difference into the maps ([`PolicyState::sync`]).
//!
//! Metrics ([`PolicyMetrics`]): `keelson_policy_identities`, `keelson_policy_entries`,
//! `keelson_policy_endpoints`, `keelson_policy_ipcache_entries` (gauges, after the last
//! compile), `keelson_policy_compile_duration_seconds` (gauge: the last compile),
//! `keelson_policy_map_writes_total` and `keelson_policy_sync_failures_total` (counters).

use std::{
    collections::BTreeMap,
    sync::atomic::AtomicU64,
    time::{Duration, Instant},
};

use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use k8s_openapi::api::{
    core::v1::{Namespace, Pod},
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, Client, Resource, ResourceExt as _,
    runtime::{
        WatchStreamExt as _,
        watcher::{self, Event},
    },
};
use prometheus_client::{
    metrics::{counter::Counter, gauge::Gauge},
    registry::Registry,
};

use super::{
    apply::{PolicyMaps, PolicyState, SyncReport},
    model::{NodeInfo, PodInfo, PolicyModel, namespace_labels},
};
use crate::error_chain;

/// The policy sync's metrics.
#[derive(Debug, Clone, Default)]
pub struct PolicyMetrics {
    identities: Gauge,
    entries: Gauge,
    endpoints: Gauge,
    ipcache: Gauge,
    compile_seconds: Gauge<f64, AtomicU64>,
    writes: Counter,
    failures: Counter,
}

impl PolicyMetrics {
    /// Registers every policy metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "keelson_policy_identities",
            "Security identities (classes of peers) of the last NetworkPolicy compile",
            self.identities.clone(),
        );
        registry.register(
            "keelson_policy_entries",
            "POLICY map entries (allowed endpoint, peer, protocol, ports) of this node",
            self.entries.clone(),
        );
        registry.register(
            "keelson_policy_endpoints",
            "Pods of this node selected by some NetworkPolicy",
            self.endpoints.clone(),
        );
        registry.register(
            "keelson_policy_ipcache_entries",
            "IPCACHE entries (pods of every node, ipBlock CIDRs, this node's addresses)",
            self.ipcache.clone(),
        );
        registry.register(
            "keelson_policy_compile_duration_seconds",
            "Duration of the last NetworkPolicy compile",
            self.compile_seconds.clone(),
        );
        registry.register(
            "keelson_policy_map_writes",
            "Policy map writes (inserts and removals)",
            self.writes.clone(),
        );
        registry.register(
            "keelson_policy_sync_failures",
            "Policy syncs whose map writes failed",
            self.failures.clone(),
        );
    }

    /// Records a successful sync.
    pub fn record(&self, report: &SyncReport) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.identities.set(gauge(report.identities));
        self.entries.set(gauge(report.policy_entries));
        self.endpoints.set(gauge(report.endpoints));
        self.ipcache.set(gauge(report.ipcache_entries));
        self.compile_seconds.set(report.compile.as_secs_f64());
        self.writes.inc_by(report.writes as u64);
    }
}

/// One kind of object as the watcher last listed it, by `namespace/name`.
#[derive(Debug)]
struct Listed<T> {
    items: BTreeMap<String, T>,
    pending: BTreeMap<String, T>,
    listed: bool,
}

impl<T> Default for Listed<T> {
    fn default() -> Self {
        Self {
            items: BTreeMap::new(),
            pending: BTreeMap::new(),
            listed: false,
        }
    }
}

impl<T> Listed<T> {
    /// Applies a watch event (objects converted by `convert`; `None`: not kept). Returns
    /// whether the kept set may have changed.
    fn handle<K: Resource>(&mut self, event: Event<K>, convert: impl Fn(&K) -> Option<T>) -> bool {
        let key = |o: &K| {
            format!(
                "{}/{}",
                o.meta().namespace.as_deref().unwrap_or_default(),
                o.meta().name.as_deref().unwrap_or_default()
            )
        };
        match event {
            Event::Apply(o) => {
                match convert(&o) {
                    Some(v) => self.items.insert(key(&o), v),
                    None => self.items.remove(&key(&o)),
                };
                true
            }
            Event::Delete(o) => self.items.remove(&key(&o)).is_some(),
            Event::Init => {
                self.pending.clear();
                false
            }
            Event::InitApply(o) => {
                if let Some(v) = convert(&o) {
                    self.pending.insert(key(&o), v);
                }
                false
            }
            Event::InitDone => {
                // A (re-)list replaces everything at once.
                self.items = std::mem::take(&mut self.pending);
                self.listed = true;
                true
            }
        }
    }
}

/// What the watchers have seen: the compiler's inputs, kept up to date.
#[derive(Debug, Default)]
pub struct PolicySource {
    pods: Listed<PodInfo>,
    namespaces: Listed<(String, BTreeMap<String, String>)>,
    policies: Listed<NetworkPolicy>,
}

impl PolicySource {
    /// Applies a Pod watch event; returns whether the model may have changed.
    pub fn pod(&mut self, event: Event<Pod>) -> bool {
        self.pods.handle(event, PodInfo::from_pod)
    }

    /// Applies a Namespace watch event.
    pub fn namespace(&mut self, event: Event<Namespace>) -> bool {
        self.namespaces
            .handle(event, |ns| Some((ns.name_any(), namespace_labels(ns))))
    }

    /// Applies a NetworkPolicy watch event.
    pub fn policy(&mut self, event: Event<NetworkPolicy>) -> bool {
        self.policies.handle(event, |p| Some(p.clone()))
    }

    /// Whether all three kinds have been listed (before that, a compile would see a partial
    /// cluster and could isolate pods whose allowing policy is not listed yet).
    pub fn ready(&self) -> bool {
        self.pods.listed && self.namespaces.listed && self.policies.listed
    }

    /// The model for `node`.
    pub fn model(&self, node: &NodeInfo) -> PolicyModel {
        PolicyModel {
            pods: self.pods.items.values().cloned().collect(),
            namespaces: self.namespaces.items.values().cloned().collect(),
            policies: self.policies.items.values().cloned().collect(),
            node: node.clone(),
        }
    }
}

enum Change {
    Pod(Box<Event<Pod>>),
    Namespace(Box<Event<Namespace>>),
    Policy(Box<Event<NetworkPolicy>>),
}

/// Runs until the watch streams end (they retry on errors, so: until the process stops).
/// `maps` start from what they hold ([`PolicyState::adopt`]); after the first full list of
/// Pods, Namespaces and NetworkPolicies, each burst of changes (events less than `debounce`
/// apart, for at most 10 × `debounce`) is one compile and one round of writes.
pub async fn run(
    client: Client,
    maps: &mut impl PolicyMaps,
    node: NodeInfo,
    metrics: &PolicyMetrics,
    debounce: Duration,
) -> anyhow::Result<()> {
    let mut state = PolicyState::adopt(&*maps).map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    let config = watcher::Config::default;
    let pods = watcher::watcher(Api::<Pod>::all(client.clone()), config())
        .default_backoff()
        .map_ok(|e| Change::Pod(Box::new(e)));
    let namespaces = watcher::watcher(Api::<Namespace>::all(client.clone()), config())
        .default_backoff()
        .map_ok(|e| Change::Namespace(Box::new(e)));
    let policies = watcher::watcher(Api::<NetworkPolicy>::all(client), config())
        .default_backoff()
        .map_ok(|e| Change::Policy(Box::new(e)));
    let mut changes = stream::select(stream::select(pods, namespaces), policies).boxed();
    let mut source = PolicySource::default();
    // When the current burst of changes began (None: nothing to compile).
    let mut burst: Option<Instant> = None;
    // After failed writes, the next attempt waits longer than a debounce.
    let mut wait = debounce;
    loop {
        let next = match burst {
            Some(_) if source.ready() => match tokio::time::timeout(wait, changes.next()).await {
                Ok(next) => next,
                Err(_) => {
                    let ok = sync_once(&mut state, &source, &node, maps, metrics);
                    burst = (!ok).then(Instant::now);
                    wait = if ok { debounce } else { RETRY };
                    continue;
                }
            },
            _ => changes.next().await,
        };
        let Some(change) = next else {
            return Ok(());
        };
        let changed = match change {
            Ok(Change::Pod(e)) => source.pod(*e),
            Ok(Change::Namespace(e)) => source.namespace(*e),
            Ok(Change::Policy(e)) => source.policy(*e),
            Err(error) => {
                tracing::warn!(%error, "watching Pods/Namespaces/NetworkPolicies");
                false
            }
        };
        if changed && burst.is_none() {
            burst = Some(Instant::now());
        }
        // A steady stream of events still compiles every 10 debounce periods.
        if source.ready() && burst.is_some_and(|b| b.elapsed() >= debounce * 10) {
            let ok = sync_once(&mut state, &source, &node, maps, metrics);
            burst = (!ok).then(Instant::now);
            wait = if ok { debounce } else { RETRY };
        }
    }
}

/// How long to wait before writing again after map writes failed.
const RETRY: Duration = Duration::from_secs(5);

fn sync_once(
    state: &mut PolicyState,
    source: &PolicySource,
    node: &NodeInfo,
    maps: &mut impl PolicyMaps,
    metrics: &PolicyMetrics,
) -> bool {
    match state.sync(&source.model(node), maps) {
        Ok(report) => {
            metrics.record(&report);
            if report.writes > 0 {
                tracing::info!(
                    writes = report.writes,
                    identities = report.identities,
                    entries = report.policy_entries,
                    endpoints = report.endpoints,
                    compile_ms = report.compile.as_millis() as u64,
                    "network policy updated"
                );
            }
            true
        }
        Err(error) => {
            metrics.failures.inc();
            tracing::error!(error = %error_chain(&error), "network policy map writes failed; retrying");
            false
        }
    }
}

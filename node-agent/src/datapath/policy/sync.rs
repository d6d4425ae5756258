//! The agent's NetworkPolicy sync: kube-rs watchers on Pods (every namespace and node),
//! Namespaces and NetworkPolicies feed a [`PolicySource`]; once all three are listed, changes
//! are synced at once after a quiet period and at most once per debounce period otherwise (a
//! burst of events is one sync). A sync where only NetworkPolicies changed recompiles just the
//! local pods each selects ([`PolicyState::update_policy`]); any other change (or a policy
//! naming peers the identities do not tell apart) recompiles the model
//! ([`PolicyState::sync`]). Either way only the difference is written into the maps.
//!
//! Metrics ([`PolicyMetrics`]): `keelson_policy_identities`, `keelson_policy_entries`,
//! `keelson_policy_endpoints`, `keelson_policy_ipcache_entries` (gauges, after the last
//! compile), `keelson_policy_compile_duration_seconds` (gauge: the last compile),
//! `keelson_policy_map_writes_total` and `keelson_policy_sync_failures_total` (counters).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::atomic::AtomicU64,
    time::{Duration, Instant},
};

use futures_util::{FutureExt as _, StreamExt as _, TryStreamExt as _, stream};
use k8s_openapi::{
    api::{
        core::v1::{Namespace, Pod},
        networking::v1::NetworkPolicy,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
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
    apply::{PolicyError, PolicyMaps, PolicyState, SyncReport},
    compile::RuleRef,
    identity::IdentityClass,
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

impl<T: PartialEq> Listed<T> {
    /// Applies a watch event (objects converted by `convert`; `None`: not kept). Returns the
    /// key of the object that changed, `Some("")` for a (re-)list, `None` when nothing kept
    /// changed (a Pod status heartbeat, a policy's annotations).
    fn handle<K: Resource>(
        &mut self,
        event: Event<K>,
        convert: impl Fn(&K) -> Option<T>,
    ) -> Option<String> {
        let key = |o: &K| {
            format!(
                "{}/{}",
                o.meta().namespace.as_deref().unwrap_or_default(),
                o.meta().name.as_deref().unwrap_or_default()
            )
        };
        match event {
            Event::Apply(o) => {
                let key = key(&o);
                let changed = match convert(&o) {
                    Some(v) => self
                        .items
                        .insert(key.clone(), v)
                        .is_none_or(|old| self.items.get(&key).is_some_and(|new| *new != old)),
                    None => self.items.remove(&key).is_some(),
                };
                changed.then_some(key)
            }
            Event::Delete(o) => {
                let key = key(&o);
                self.items.remove(&key).is_some().then_some(key)
            }
            Event::Init => {
                self.pending.clear();
                None
            }
            Event::InitApply(o) => {
                if let Some(v) = convert(&o) {
                    self.pending.insert(key(&o), v);
                }
                None
            }
            Event::InitDone => {
                // A (re-)list replaces everything at once.
                self.items = std::mem::take(&mut self.pending);
                self.listed = true;
                Some(String::new())
            }
        }
    }
}

/// What the watchers have seen: the compiler's inputs, kept up to date, and what changed
/// since the last sync.
#[derive(Debug, Default)]
pub struct PolicySource {
    pods: Listed<PodInfo>,
    namespaces: Listed<(String, BTreeMap<String, String>)>,
    policies: Listed<NetworkPolicy>,
    /// A change only a full compile covers (pods, namespaces, a re-list).
    full: bool,
    /// NetworkPolicies (`namespace/name`) changed since the last sync.
    dirty: BTreeSet<String>,
}

/// A NetworkPolicy as policy sees it: its namespace, name and spec (a change of its labels,
/// annotations or status is not a change).
fn policy_spec(policy: &NetworkPolicy) -> NetworkPolicy {
    NetworkPolicy {
        metadata: ObjectMeta {
            namespace: policy.metadata.namespace.clone(),
            name: policy.metadata.name.clone(),
            ..ObjectMeta::default()
        },
        spec: policy.spec.clone(),
    }
}

impl PolicySource {
    /// Applies a Pod watch event; returns whether the model changed.
    pub fn pod(&mut self, event: Event<Pod>) -> bool {
        let changed = self.pods.handle(event, PodInfo::from_pod).is_some();
        self.full |= changed;
        changed
    }

    /// Applies a Namespace watch event.
    pub fn namespace(&mut self, event: Event<Namespace>) -> bool {
        let changed = self
            .namespaces
            .handle(event, |ns| Some((ns.name_any(), namespace_labels(ns))))
            .is_some();
        self.full |= changed;
        changed
    }

    /// Applies a NetworkPolicy watch event.
    pub fn policy(&mut self, event: Event<NetworkPolicy>) -> bool {
        match self.policies.handle(event, |p| Some(policy_spec(p))) {
            Some(key) if key.is_empty() => {
                self.full = true;
                true
            }
            Some(key) => {
                self.dirty.insert(key);
                true
            }
            None => false,
        }
    }

    /// What the next sync must do: a full compile, or the policies changed one by one (their
    /// `namespace`, `name` and current state); and forgets it.
    fn take_changes(&mut self) -> Option<Vec<(String, String, Option<NetworkPolicy>)>> {
        let dirty = std::mem::take(&mut self.dirty);
        if std::mem::take(&mut self.full) {
            return None;
        }
        Some(
            dirty
                .into_iter()
                .map(|key| {
                    let policy = self.policies.items.get(&key).cloned();
                    let (namespace, name) = key.split_once('/').unwrap_or_default();
                    (namespace.to_owned(), name.to_owned(), policy)
                })
                .collect(),
        )
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

/// What the flow view needs to explain a verdict: the rule behind each POLICY entry's
/// `rule_id`, the class behind each identity number, the pod behind each address and the
/// policies isolating each local pod (as of the last successful sync).
#[derive(Debug, Clone, Default)]
pub struct PolicyTables {
    /// Rule ids.
    pub rules: BTreeMap<u32, RuleRef>,
    /// Identity classes by number.
    pub identities: BTreeMap<u32, IdentityClass>,
    /// Pods of every node by address: (namespace, name).
    pub pods: BTreeMap<std::net::Ipv4Addr, (String, String)>,
    /// [`super::Compiled::selected_by`].
    pub selected_by: BTreeMap<(std::net::Ipv4Addr, super::Direction), Vec<String>>,
}

/// Runs until the watch streams end (they retry on errors, so: until the process stops).
/// `maps` start from what they hold ([`PolicyState::adopt`]); after the first full list of
/// Pods, Namespaces and NetworkPolicies, a change is synced at once when the last sync is at
/// least `debounce` old, else when it is (events queued meanwhile join that sync); `tables`
/// follow each successful sync.
pub async fn run(
    client: Client,
    maps: &mut impl PolicyMaps,
    node: NodeInfo,
    metrics: &PolicyMetrics,
    tables: &std::sync::RwLock<PolicyTables>,
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
    // Changes seen and not synced yet.
    let mut pending = false;
    let mut last_sync: Option<Instant> = None;
    // At most one sync per `wait`; after failed writes, the next attempt waits longer.
    let mut wait = debounce;
    loop {
        // A change arriving after a quiet period is synced at once; one arriving within `wait`
        // of the last sync waits for the rest of it, gathering a burst into one sync.
        let due =
            (pending && source.ready()).then(|| last_sync.map_or_else(Instant::now, |t| t + wait));
        let next = match due {
            Some(due) => match tokio::time::timeout_at(due.into(), changes.next()).await {
                Ok(next) => next,
                Err(_) => {
                    let ok = sync_once(&mut state, &mut source, &node, maps, metrics, tables);
                    (pending, wait) = if ok { (false, debounce) } else { (true, RETRY) };
                    last_sync = Some(Instant::now());
                    continue;
                }
            },
            None => changes.next().await,
        };
        let Some(change) = next else {
            return Ok(());
        };
        pending |= handle(&mut source, change);
        // What is already queued belongs to the same burst (bounded: a sync still happens
        // under a steady stream).
        for _ in 0..QUEUED_PER_SYNC {
            match changes.next().now_or_never() {
                Some(Some(change)) => pending |= handle(&mut source, change),
                Some(None) => return Ok(()),
                None => break,
            }
        }
    }
}

/// Queued watch events taken in before a sync.
const QUEUED_PER_SYNC: usize = 10_000;

/// Applies one watch event to `source`; returns whether the model changed.
fn handle(source: &mut PolicySource, change: Result<Change, watcher::Error>) -> bool {
    match change {
        Ok(Change::Pod(e)) => source.pod(*e),
        Ok(Change::Namespace(e)) => source.namespace(*e),
        Ok(Change::Policy(e)) => source.policy(*e),
        Err(error) => {
            tracing::warn!(%error, "watching Pods/Namespaces/NetworkPolicies");
            false
        }
    }
}

/// How long to wait before writing again after map writes failed.
const RETRY: Duration = Duration::from_secs(5);

/// Brings the maps up to `source`: each changed NetworkPolicy alone when only policies changed
/// and their peers need no new identities ([`PolicyState::update_policy`]), else one full
/// compile. Returns whether the writes succeeded.
fn sync_once(
    state: &mut PolicyState,
    source: &mut PolicySource,
    node: &NodeInfo,
    maps: &mut impl PolicyMaps,
    metrics: &PolicyMetrics,
    tables: &std::sync::RwLock<PolicyTables>,
) -> bool {
    let result = match source.take_changes() {
        Some(changes) => update_each(state, changes, maps, metrics, tables),
        None => Ok(false),
    };
    let result = match result {
        Ok(true) => Ok(()),
        Ok(false) => full_sync(state, source, node, maps, metrics, tables),
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => true,
        Err(error) => {
            // The next attempt compiles everything (the maps are read back first).
            source.full = true;
            metrics.failures.inc();
            tracing::error!(error = %error_chain(&error), "network policy map writes failed; retrying");
            false
        }
    }
}

/// The changed policies one by one; `Ok(false)` when one needs a full compile.
fn update_each(
    state: &mut PolicyState,
    changes: Vec<(String, String, Option<NetworkPolicy>)>,
    maps: &mut impl PolicyMaps,
    metrics: &PolicyMetrics,
    tables: &std::sync::RwLock<PolicyTables>,
) -> Result<bool, PolicyError> {
    for (namespace, name, policy) in changes {
        let Some((report, update)) =
            state.update_policy(&namespace, &name, policy.as_ref(), maps)?
        else {
            return Ok(false);
        };
        metrics.record(&report);
        let Some(compiled) = state.last() else {
            return Ok(false);
        };
        let mut tables = tables
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for id in &update.rules_removed {
            tables.rules.remove(id);
        }
        tables.rules.extend(update.rules_added.iter().cloned());
        for ip in &update.endpoints {
            for direction in [super::Direction::Ingress, super::Direction::Egress] {
                match compiled.selected_by.get(&(*ip, direction)) {
                    Some(names) => tables.selected_by.insert((*ip, direction), names.clone()),
                    None => tables.selected_by.remove(&(*ip, direction)),
                };
            }
        }
        if update.features_added {
            tables.identities = compiled.identities.classes.clone();
        }
        if report.writes > 0 {
            tracing::info!(
                policy = %format_args!("{namespace}/{name}"),
                writes = report.writes,
                endpoints = update.endpoints.len(),
                micros = report.compile.as_micros() as u64,
                "network policy updated"
            );
        }
    }
    Ok(true)
}

fn full_sync(
    state: &mut PolicyState,
    source: &PolicySource,
    node: &NodeInfo,
    maps: &mut impl PolicyMaps,
    metrics: &PolicyMetrics,
    tables: &std::sync::RwLock<PolicyTables>,
) -> Result<(), PolicyError> {
    let report = state.sync(&source.model(node), maps)?;
    metrics.record(&report);
    if let Some(compiled) = state.last() {
        *tables
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = PolicyTables {
            rules: compiled.rules.clone(),
            identities: compiled.identities.classes.clone(),
            pods: source
                .pods
                .items
                .values()
                .map(|p| (p.ip, (p.namespace.clone(), p.name.clone())))
                .collect(),
            selected_by: compiled.selected_by.clone(),
        };
    }
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
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, ip: Option<&str>, phase: &str, host_network: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": name, "labels": {"app": name}},
            "spec": {"nodeName": "n1", "hostNetwork": host_network,
                     "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": phase, "podIP": ip},
        }))
        .expect("pod")
    }

    fn namespace(name: &str) -> Namespace {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"env": "prod"}}}))
            .expect("namespace")
    }

    fn network_policy(name: &str) -> NetworkPolicy {
        serde_json::from_value(json!({"metadata": {"namespace": "default", "name": name},
                                      "spec": {"podSelector": {}}}))
        .expect("policy")
    }

    #[test]
    fn the_model_follows_the_watch_events_once_all_three_are_listed() {
        let node = NodeInfo {
            name: "n1".into(),
            addresses: vec![],
        };
        let mut source = PolicySource::default();
        source.pod(Event::Init);
        source.pod(Event::InitApply(pod(
            "web",
            Some("10.244.1.10"),
            "Running",
            false,
        )));
        source.pod(Event::InitApply(pod("pending", None, "Pending", false)));
        source.pod(Event::InitApply(pod(
            "done",
            Some("10.244.1.11"),
            "Succeeded",
            false,
        )));
        source.pod(Event::InitApply(pod(
            "host",
            Some("192.168.0.1"),
            "Running",
            true,
        )));
        assert!(source.pod(Event::InitDone));
        assert!(!source.ready(), "namespaces and policies not listed yet");
        source.namespace(Event::Init);
        source.namespace(Event::InitApply(namespace("default")));
        source.namespace(Event::InitDone);
        source.policy(Event::Init);
        source.policy(Event::InitApply(network_policy("deny")));
        source.policy(Event::InitDone);
        assert!(source.ready());
        let model = source.model(&node);
        // Only pods with an address of their own that may still send traffic.
        let pods: Vec<&str> = model.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(pods, ["web"]);
        assert_eq!(
            model.pods[0].named_port("http", keelson_ebpf_common::proto::TCP),
            Some(8080)
        );
        assert_eq!(
            model.namespaces["default"].get("env").map(String::as_str),
            Some("prod")
        );
        assert_eq!(
            model.namespaces["default"]
                .get(super::super::NAMESPACE_NAME_LABEL)
                .map(String::as_str),
            Some("default")
        );
        assert_eq!(model.policies.len(), 1);

        // Changes: a pod gets its address, the policy goes, a pod finishes.
        assert!(source.pod(Event::Apply(pod(
            "pending",
            Some("10.244.1.12"),
            "Running",
            false
        ))));
        assert!(source.policy(Event::Delete(network_policy("deny"))));
        assert!(source.pod(Event::Apply(pod(
            "web",
            Some("10.244.1.10"),
            "Failed",
            false
        ))));
        let model = source.model(&node);
        let pods: Vec<&str> = model.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(pods, ["pending"]);
        assert!(model.policies.is_empty());

        // A re-list replaces everything: objects gone meanwhile disappear.
        source.pod(Event::Init);
        source.pod(Event::InitApply(pod(
            "new",
            Some("10.244.1.20"),
            "Running",
            false,
        )));
        source.pod(Event::InitDone);
        let pods: Vec<String> = source
            .model(&node)
            .pods
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(pods, ["new"]);
    }
}

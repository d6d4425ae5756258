//! The pod runner's metrics, under the kubelet's names where the kubelet has the metric
//! (`pkg/kubelet/metrics/metrics.go`, same buckets):
//! - `kubelet_pod_worker_duration_seconds{operation_type="sync"}` (histogram): one pass of a
//!   pod worker (keelson's worker does not tell a create from an update: every pass is `sync`);
//! - `kubelet_pod_start_duration_seconds` (histogram): from this agent first seeing a pending
//!   pod to seeing it `Running`, both through its pod watch;
//! - `kubelet_running_pods` (gauge): pods with a sandbox (an address) that have not finished;
//! - `kubelet_running_containers{container_state}` (gauge): containers by `running`/`exited`, as
//!   the pods' statuses report them (a container waiting after a termination counts `exited`;
//!   one waiting for its first start does not exist yet and is not counted);
//! - `keelson_pod_workers` (gauge), `keelson_pod_status_writes_total`,
//!   `keelson_probe_results_total{result}` and `keelson_cluster_dns_queries_total{address,domain}`
//!   (read from the DNS server at scrape time).

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::Gauge,
        histogram::Histogram,
    },
    registry::Registry,
};

/// The kubelet's `DefBuckets` (Prometheus' default), for the pod worker.
const WORKER_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The kubelet's pod startup buckets, in seconds.
const START_BUCKETS: [f64; 25] = [
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0,
    300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

/// At most this many pods are timed from first sight to running at once (a bound on memory if
/// pods stay pending forever; the runner also forgets pods it no longer has).
const MAX_STARTING: usize = 10_000;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation_type: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    container_state: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The cluster DNS this agent serves and where, once it serves it.
type DnsSlot = Arc<OnceLock<(SocketAddr, Arc<keelson_dns::ClusterDns>)>>;

/// The pod runner's metrics (cheap to clone into a registry: every metric is shared).
#[derive(Debug)]
pub struct Metrics {
    worker_duration: HistogramFamily<OperationLabels>,
    start_duration: Histogram,
    running_pods: Gauge,
    running_containers: Family<StateLabels, Gauge>,
    workers: Gauge,
    status_writes: Counter,
    probes: Family<ResultLabels, Counter>,
    /// Pods seen pending, by UID, with when this agent first saw them.
    starting: Mutex<HashMap<String, Instant>>,
    dns: DnsSlot,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            worker_duration: Family::new_with_constructor(|| Histogram::new(WORKER_BUCKETS)),
            start_duration: Histogram::new(START_BUCKETS),
            running_pods: Gauge::default(),
            running_containers: Family::default(),
            workers: Gauge::default(),
            status_writes: Counter::default(),
            probes: Family::default(),
            starting: Mutex::new(HashMap::new()),
            dns: DnsSlot::default(),
        }
    }
}

/// Running pods and containers by state, counted over the pods a runner holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PodTally {
    /// Pods with a sandbox (an address) that have not finished.
    pub running_pods: i64,
    /// Containers by `running` / `exited`.
    pub containers: BTreeMap<&'static str, i64>,
}

impl PodTally {
    /// Counts `pod` in.
    pub fn add(&mut self, pod: &Pod) {
        let Some(status) = &pod.status else {
            return;
        };
        let finished = matches!(status.phase.as_deref(), Some("Succeeded" | "Failed"));
        if status.pod_ip.is_some() && !finished {
            self.running_pods += 1;
        }
        let statuses = [
            &status.init_container_statuses,
            &status.container_statuses,
            &status.ephemeral_container_statuses,
        ];
        for container in statuses.into_iter().flatten().flatten() {
            let state = container.state.as_ref();
            let exited_before = container
                .last_state
                .as_ref()
                .is_some_and(|s| s.terminated.is_some());
            let label = if state.is_some_and(|s| s.running.is_some()) {
                "running"
            } else if state.is_some_and(|s| s.terminated.is_some()) || exited_before {
                "exited"
            } else {
                continue;
            };
            *self.containers.entry(label).or_default() += 1;
        }
    }
}

impl Metrics {
    /// Registers every pod metric in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kubelet_pod_worker_duration_seconds",
            "Duration in seconds to sync a single pod (every pass of keelson's pod worker is a sync)",
            self.worker_duration.clone(),
        );
        registry.register(
            "kubelet_pod_start_duration_seconds",
            "Duration in seconds from the agent seeing a pending pod for the first time to the pod running",
            self.start_duration.clone(),
        );
        registry.register(
            "kubelet_running_pods",
            "Number of pods that have a running pod sandbox",
            self.running_pods.clone(),
        );
        registry.register(
            "kubelet_running_containers",
            "Number of containers currently running or exited, by state",
            self.running_containers.clone(),
        );
        registry.register(
            "keelson_pod_workers",
            "Pods bound to this node that have a worker",
            self.workers.clone(),
        );
        registry.register(
            "keelson_pod_status_writes",
            "Pod status writes to the API server",
            self.status_writes.clone(),
        );
        registry.register(
            "keelson_probe_results",
            "Readiness results of containers with probes, by result",
            self.probes.clone(),
        );
        registry.register_collector(Box::new(DnsQueries(self.dns.clone())));
    }

    pub(crate) fn record_sync(&self, took: Duration) {
        self.worker_duration
            .get_or_create(&OperationLabels {
                operation_type: "sync",
            })
            .observe(took.as_secs_f64());
    }

    pub(crate) fn record_status_write(&self) {
        self.status_writes.inc();
    }

    pub(crate) fn record_probe(&self, ready: bool) {
        let result = if ready { "ready" } else { "unready" };
        self.probes.get_or_create(&ResultLabels { result }).inc();
    }

    /// Records the cluster DNS this agent serves (its query counter is read at scrape time).
    pub(crate) fn set_dns(&self, address: SocketAddr, zone: Arc<keelson_dns::ClusterDns>) {
        let _ = self.dns.set((address, zone));
    }

    /// Sets the gauges from the runner's pods: `workers` of them, tallied in `tally`.
    pub(crate) fn set_pods(&self, workers: usize, tally: &PodTally) {
        self.workers.set(i64::try_from(workers).unwrap_or(i64::MAX));
        self.running_pods.set(tally.running_pods);
        for state in ["running", "exited"] {
            let count = tally.containers.get(state).copied().unwrap_or(0);
            self.running_containers
                .get_or_create(&StateLabels {
                    container_state: state,
                })
                .set(count);
        }
    }

    /// Times pods from first sight (pending) to running: call with every pod the watch
    /// delivers, `now` being when it arrived.
    pub(crate) fn observe_pod(&self, pod: &Pod, now: Instant) {
        let Some(uid) = pod.metadata.uid.as_deref() else {
            return;
        };
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let mut starting = self
            .starting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match phase {
            None | Some("Pending") => {
                if pod.metadata.deletion_timestamp.is_none()
                    && starting.len() < MAX_STARTING
                    && !starting.contains_key(uid)
                {
                    starting.insert(uid.to_owned(), now);
                }
            }
            Some(phase) => {
                if let Some(seen) = starting.remove(uid)
                    && phase == "Running"
                {
                    self.start_duration
                        .observe(now.saturating_duration_since(seen).as_secs_f64());
                }
            }
        }
    }

    /// Stops timing the start of pods the runner no longer holds.
    pub(crate) fn retain_starting(&self, mut keep: impl FnMut(&str) -> bool) {
        self.starting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|uid, _| keep(uid));
    }
}

/// `keelson_cluster_dns_queries_total`, read from the DNS server at scrape time.
struct DnsQueries(DnsSlot);

impl std::fmt::Debug for DnsQueries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DnsQueries")
            .field(&self.0.get().map(|(address, _)| address))
            .finish()
    }
}

impl Collector for DnsQueries {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some((address, zone)) = self.0.get() else {
            return Ok(());
        };
        let family = encoder.encode_descriptor(
            "keelson_cluster_dns_queries",
            "Queries answered by the cluster DNS this agent serves.",
            None,
            MetricType::Counter,
        )?;
        let address = address.to_string();
        let domain = zone.domain().to_string();
        let labels = [("address", address.as_str()), ("domain", domain.as_str())];
        let mut family = family;
        ConstCounter::new(zone.queries()).encode(family.encode_family(&labels)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{
        api::core::v1::{ContainerState, ContainerStatus, PodStatus},
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };

    fn pod(uid: &str, phase: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                ..ObjectMeta::default()
            },
            status: phase.map(|phase| PodStatus {
                phase: Some(phase.into()),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    fn render(metrics: &Metrics) -> String {
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        text
    }

    #[test]
    fn pod_start_is_timed_from_first_sight_to_running_once() {
        let metrics = Metrics::default();
        let t0 = Instant::now();
        // Seen unscheduled-phase, then pending again (not restarted), then running twice.
        metrics.observe_pod(&pod("a", None), t0);
        metrics.observe_pod(&pod("a", Some("Pending")), t0 + Duration::from_secs(1));
        metrics.observe_pod(&pod("a", Some("Running")), t0 + Duration::from_millis(2500));
        metrics.observe_pod(&pod("a", Some("Running")), t0 + Duration::from_secs(9));
        // Already running when first seen (an agent restart): not a start.
        metrics.observe_pod(&pod("b", Some("Running")), t0);
        // Pending, then failed: not a start either, and forgotten.
        metrics.observe_pod(&pod("c", Some("Pending")), t0);
        metrics.observe_pod(&pod("c", Some("Failed")), t0 + Duration::from_secs(1));
        let text = render(&metrics);
        assert!(
            text.contains("kubelet_pod_start_duration_seconds_sum 2.5\n"),
            "{text}"
        );
        assert!(
            text.contains("kubelet_pod_start_duration_seconds_count 1\n"),
            "{text}"
        );
        assert!(
            text.contains("kubelet_pod_start_duration_seconds_bucket{le=\"2.0\"} 0\n")
                && text.contains("kubelet_pod_start_duration_seconds_bucket{le=\"3.0\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn pods_forgotten_by_the_runner_are_not_timed() {
        let metrics = Metrics::default();
        let t0 = Instant::now();
        metrics.observe_pod(&pod("a", Some("Pending")), t0);
        metrics.retain_starting(|uid| uid != "a");
        metrics.observe_pod(&pod("a", Some("Running")), t0);
        assert!(
            render(&metrics).contains("kubelet_pod_start_duration_seconds_count 0\n"),
            "a forgotten pod was timed"
        );
    }

    fn container(state: ContainerState, exited_before: bool) -> ContainerStatus {
        ContainerStatus {
            state: Some(state),
            last_state: exited_before.then(|| ContainerState {
                terminated: Some(Default::default()),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }
    }

    #[test]
    fn running_pods_and_containers_by_state() {
        let running = ContainerState {
            running: Some(Default::default()),
            ..ContainerState::default()
        };
        let terminated = ContainerState {
            terminated: Some(Default::default()),
            ..ContainerState::default()
        };
        let waiting = ContainerState {
            waiting: Some(Default::default()),
            ..ContainerState::default()
        };
        let with = |phase: &str, ip: Option<&str>, init, containers| Pod {
            status: Some(PodStatus {
                phase: Some(phase.into()),
                pod_ip: ip.map(Into::into),
                init_container_statuses: Some(init),
                container_statuses: Some(containers),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        let mut tally = PodTally::default();
        // Running: an init container done, one running, one crash-looping (waiting after exit).
        tally.add(&with(
            "Running",
            Some("10.0.0.2"),
            vec![container(terminated.clone(), false)],
            vec![
                container(running.clone(), false),
                container(waiting.clone(), true),
            ],
        ));
        // Pending without a sandbox yet, its container not created.
        tally.add(&with(
            "Pending",
            None,
            vec![],
            vec![container(waiting, false)],
        ));
        // Finished: its container exited, the pod no longer runs.
        tally.add(&with(
            "Succeeded",
            Some("10.0.0.3"),
            vec![],
            vec![container(terminated, false)],
        ));
        assert_eq!(
            tally,
            PodTally {
                running_pods: 1,
                containers: BTreeMap::from([("exited", 3), ("running", 1)]),
            }
        );
        let metrics = Metrics::default();
        metrics.set_pods(3, &tally);
        let text = render(&metrics);
        for line in [
            "kubelet_running_pods 1\n",
            "kubelet_running_containers{container_state=\"running\"} 1\n",
            "kubelet_running_containers{container_state=\"exited\"} 3\n",
            "keelson_pod_workers 3\n",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
    }
}

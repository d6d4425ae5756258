//! The IO half: the agent's reader of the `kflows_v1` ring buffer (records into a
//! [`FlowStore`]), and the per-endpoint counters of `kepstats_v1` as `/metrics` families.

use std::{
    fmt,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use aya::maps::{HashMap, MapData, PerCpuHashMap, RingBuf};
use keelson_ebpf_common::{EndpointPolicy, EndpointStatsKey, flow_verdict, maps, policy_direction};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter},
};
use tokio::io::{Interest, unix::AsyncFd};

use super::{
    record::{decode, describe},
    store::FlowStore,
};
use crate::datapath::{DatapathError, lb::open_pinned, policy::PolicyTables};

fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map {
        map,
        source: Box::new(source),
    }
}

/// What to add to `CLOCK_MONOTONIC` nanoseconds (the datapath's `bpf_ktime_get_ns`) to get
/// Unix time.
pub fn monotonic_to_unix_ns() -> i128 {
    let ns = |clock| {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `t` is a valid, writable timespec; the clocks exist on every Linux.
        let rc = unsafe { libc::clock_gettime(clock, &raw mut t) };
        if rc == 0 {
            i128::from(t.tv_sec) * 1_000_000_000 + i128::from(t.tv_nsec)
        } else {
            0
        }
    };
    ns(libc::CLOCK_REALTIME) - ns(libc::CLOCK_MONOTONIC)
}

/// Reads flow events from the ring buffer pinned under `pin_dir` into `store`, explained
/// with `tables`, until an error; every 10 s also drops the counters of pods that no longer
/// have an `ENDPOINTS` entry (a reused address starts from zero).
pub async fn run(
    pin_dir: &Path,
    store: &FlowStore,
    tables: &RwLock<PolicyTables>,
) -> Result<(), DatapathError> {
    let map = open_pinned(pin_dir, maps::FLOWS)?;
    let ring = RingBuf::try_from(map).map_err(map_error(maps::FLOWS))?;
    // SAFETY: the ring buffer owns its map's descriptor and keeps returning it until the
    // `AsyncFd` (which owns the ring buffer) is dropped.
    let mut ring =
        unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }.map_err(|error| {
            DatapathError::Io {
                what: "polling the flow ring buffer",
                path: pin_dir.join(maps::FLOWS),
                source: error.into(),
            }
        })?;
    let mut prune = tokio::time::interval(Duration::from_secs(10));
    let mut clock = monotonic_to_unix_ns();
    loop {
        tokio::select! {
            ready = ring.readable_mut() => {
                let mut guard = ready.map_err(|source| DatapathError::Io {
                    what: "polling the flow ring buffer",
                    path: pin_dir.join(maps::FLOWS),
                    source,
                })?;
                let tables = tables.read().unwrap_or_else(std::sync::PoisonError::into_inner);
                while let Some(item) = guard.get_inner_mut().next() {
                    if let Some(event) = decode(&item) {
                        store.push(describe(&event, &tables, clock));
                    }
                }
                guard.clear_ready();
            }
            _ = prune.tick() => {
                clock = monotonic_to_unix_ns();
                if let Err(error) = prune_stats(pin_dir) {
                    tracing::warn!(error = %crate::error_chain(&error), "pruning endpoint counters");
                }
            }
        }
    }
}

/// Removes the counters of endpoints without an `ENDPOINTS` entry.
pub fn prune_stats(pin_dir: &Path) -> Result<usize, DatapathError> {
    let endpoints: HashMap<MapData, u32, EndpointPolicy> =
        HashMap::try_from(open_pinned(pin_dir, maps::ENDPOINTS)?)
            .map_err(map_error(maps::ENDPOINTS))?;
    let mut stats: PerCpuHashMap<MapData, EndpointStatsKey, u64> =
        PerCpuHashMap::try_from(open_pinned(pin_dir, maps::ENDPOINT_STATS)?)
            .map_err(map_error(maps::ENDPOINT_STATS))?;
    let stale: Vec<EndpointStatsKey> = stats
        .keys()
        .filter_map(Result::ok)
        .filter(|k| endpoints.get(&k.endpoint_be, 0).is_err())
        .collect();
    for key in &stale {
        // Gone meanwhile: nothing to remove.
        let _ = stats.remove(key);
    }
    Ok(stale.len())
}

/// One counter of `kepstats_v1`, summed over CPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointCount {
    /// The pod's address.
    pub endpoint: Ipv4Addr,
    /// `ingress` or `egress`.
    pub direction: &'static str,
    /// `allowed` or `dropped`.
    pub verdict: &'static str,
    /// Packets.
    pub packets: u64,
}

/// Reads every per-endpoint counter pinned under `pin_dir`.
pub fn read_endpoint_counts(pin_dir: &Path) -> Result<Vec<EndpointCount>, DatapathError> {
    let stats: PerCpuHashMap<MapData, EndpointStatsKey, u64> =
        PerCpuHashMap::try_from(open_pinned(pin_dir, maps::ENDPOINT_STATS)?)
            .map_err(map_error(maps::ENDPOINT_STATS))?;
    let mut out: Vec<EndpointCount> = stats
        .iter()
        .filter_map(Result::ok)
        .map(|(key, values)| EndpointCount {
            endpoint: Ipv4Addr::from(key.endpoint_be.to_ne_bytes()),
            direction: if key.direction == policy_direction::EGRESS {
                "egress"
            } else {
                "ingress"
            },
            verdict: if key.verdict == flow_verdict::DROPPED {
                "dropped"
            } else {
                "allowed"
            },
            packets: values.iter().sum(),
        })
        .collect();
    out.sort_by_key(|c| (c.endpoint, c.direction, c.verdict));
    Ok(out)
}

/// `/metrics`' `keelson_policy_endpoint_packets_total{namespace,pod,direction,verdict}`, read
/// from the pinned counters at each scrape (pods named through the policy tables; counters of
/// an address no known pod holds are left out).
#[derive(Debug)]
pub struct EndpointStats {
    /// Where the maps are pinned.
    pub pin_dir: PathBuf,
    /// The policy compiler's tables.
    pub tables: Arc<RwLock<PolicyTables>>,
}

/// Writes `counts` as the `keelson_policy_endpoint_packets` family (pure).
pub fn encode_endpoint_counts(
    counts: &[EndpointCount],
    tables: &PolicyTables,
    encoder: &mut DescriptorEncoder,
) -> Result<(), fmt::Error> {
    let mut family = encoder.encode_descriptor(
        "keelson_policy_endpoint_packets",
        "Packets judged at each NetworkPolicy-selected pod of this node, by direction and verdict.",
        None,
        MetricType::Counter,
    )?;
    for count in counts {
        let Some((namespace, pod)) = tables.pods.get(&count.endpoint) else {
            continue;
        };
        let labels = [
            ("namespace", namespace.as_str()),
            ("pod", pod.as_str()),
            ("direction", count.direction),
            ("verdict", count.verdict),
        ];
        ConstCounter::new(count.packets).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for EndpointStats {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let counts = match read_endpoint_counts(&self.pin_dir) {
            Ok(counts) => counts,
            Err(error) => {
                tracing::debug!(error = %crate::error_chain(&error), "endpoint counters unreadable");
                Vec::new()
            }
        };
        let tables = self
            .tables
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        encode_endpoint_counts(&counts, &tables, &mut encoder)
    }
}

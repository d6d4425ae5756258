//! Reading the pinned maps back for inspection (`keelson-node-agent lb list`), without loading
//! any program.

use std::{collections::BTreeMap, fmt, net::Ipv4Addr, path::Path};

use aya::maps::{HashMap, PerCpuArray, PerCpuHashMap};
use keelson_ebpf_common::{
    AffinityKey, AffinityValue, Backend, BackendStats, CtKey, CtValue, MaglevTable, RevNat,
    ServiceKey, ServiceValue, SockRevNat, SockRevNatKey, backend_flags, backend_state, ct_dir,
    ct_flags, maps, metric, proto, scope,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use super::{
    BackendCounters, BackendOwner, FrontendKey, backend_stats, frontends::group_services,
    open_pinned,
};
use crate::datapath::DatapathError;

/// One backend slot of a listed frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedBackend {
    /// Slot number (1-based).
    pub slot: u16,
    /// Backend id.
    pub id: u32,
    /// Address:port, `None` when the slot points at a missing backend.
    pub backend: Option<(Ipv4Addr, u16)>,
    /// [`backend_state`].
    pub state: u8,
    /// The backend runs on this node ([`backend_flags::LOCAL`]).
    pub local: bool,
}

/// One frontend as the maps hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedFrontend {
    /// Address, port, protocol and scope.
    pub key: FrontendKey,
    /// The header.
    pub header: ServiceValue,
    /// The backend slots, in slot order.
    pub backends: Vec<ListedBackend>,
}

impl fmt::Display for ListedFrontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.key.proto {
            proto::TCP => "TCP",
            proto::UDP => "UDP",
            _ => "?",
        };
        let scope = if self.key.scope == scope::EXTERNAL {
            " (external)"
        } else {
            ""
        };
        write!(f, "{}:{}/{proto}{scope}", self.key.address, self.key.port)?;
        if self.backends.is_empty() {
            return write!(f, " -> (no backends: refused)");
        }
        for (i, b) in self.backends.iter().enumerate() {
            let sep = if i == 0 { " -> " } else { ", " };
            match b.backend {
                Some((ip, port)) => write!(f, "{sep}{ip}:{port}")?,
                None => write!(f, "{sep}#{} (missing)", b.id)?,
            }
            if b.state == backend_state::TERMINATING {
                write!(f, " (terminating)")?;
            }
            if b.backend.is_some() && !b.local {
                write!(f, " (remote)")?;
            }
        }
        Ok(())
    }
}

/// Lists the frontends pinned under `pin_dir`, sorted by address, port, protocol and scope.
pub fn list_pinned(pin_dir: &Path) -> Result<Vec<ListedFrontend>, DatapathError> {
    let services_map = open_pinned(pin_dir, maps::SERVICES)?;
    let backends_map = open_pinned(pin_dir, maps::BACKENDS)?;
    let map_error = |map| {
        move |source| DatapathError::Map {
            map,
            source: Box::new(source),
        }
    };
    let services: HashMap<_, ServiceKey, ServiceValue> =
        HashMap::try_from(&services_map).map_err(map_error(maps::SERVICES))?;
    let backends: HashMap<_, u32, Backend> =
        HashMap::try_from(&backends_map).map_err(map_error(maps::BACKENDS))?;
    let backends: BTreeMap<u32, Backend> = backends.iter().filter_map(Result::ok).collect();

    Ok(group_services(services.iter().filter_map(Result::ok))
        .into_iter()
        .map(|(key, (header, slots))| {
            let listed = slots
                .into_iter()
                .map(|(slot, id)| {
                    let backend = backends.get(&id);
                    ListedBackend {
                        slot,
                        id,
                        backend: backend.map(|b| {
                            (
                                Ipv4Addr::from(u32::from_be(b.address_be)),
                                u16::from_be(b.port_be),
                            )
                        }),
                        state: backend.map_or(0, |b| b.state),
                        local: backend.is_some_and(|b| b.flags & backend_flags::LOCAL != 0),
                    }
                })
                .collect();
            ListedFrontend {
                key,
                header,
                backends: listed,
            }
        })
        .collect())
}

/// One conntrack entry of the TC path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedFlow {
    /// The tuple as seen on the wire, and its direction.
    pub key: CtKey,
    /// Where it is translated to.
    pub value: CtValue,
}

impl fmt::Display for ListedFlow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.key;
        let proto = match k.proto {
            proto::TCP => "TCP",
            proto::UDP => "UDP",
            _ => "?",
        };
        let addr =
            |a: u32, p: u16| format!("{}:{}", Ipv4Addr::from(u32::from_be(a)), u16::from_be(p));
        let (dir, verb) = if k.dir == ct_dir::FORWARD {
            ("forward", "dnat to")
        } else {
            ("reply", "snat to")
        };
        let v = &self.value;
        write!(
            f,
            "{proto} {} -> {} {dir} {verb} {}",
            addr(k.saddr_be, k.sport_be),
            addr(k.daddr_be, k.dport_be),
            addr(v.nat_addr_be, v.nat_port_be),
        )?;
        if v.flags & ct_flags::SNAT != 0 {
            let what = if k.dir == ct_dir::FORWARD {
                "snat from"
            } else {
                "client"
            };
            write!(f, " {what} {}", addr(v.snat_addr_be, v.snat_port_be))?;
        }
        write!(f, " backend={} rev_nat={}", v.backend_id, v.rev_nat_id)?;
        if v.flags & ct_flags::SEEN != 0 {
            write!(f, " seen")?;
        }
        if v.flags & ct_flags::CLOSING != 0 {
            write!(f, " closing")?;
        }
        if v.ifindex != 0 {
            write!(f, " via=if{}", v.ifindex)?;
        }
        Ok(())
    }
}

/// Lists the TC path's conntrack entries pinned under `pin_dir`.
pub fn list_conntrack(pin_dir: &Path) -> Result<Vec<ListedFlow>, DatapathError> {
    let ct_map = open_pinned(pin_dir, maps::CT)?;
    let ct: HashMap<_, CtKey, CtValue> =
        HashMap::try_from(&ct_map).map_err(|source| DatapathError::Map {
            map: maps::CT,
            source: Box::new(source),
        })?;
    let mut flows: Vec<ListedFlow> = ct
        .iter()
        .filter_map(Result::ok)
        .map(|(key, value)| ListedFlow { key, value })
        .collect();
    flows.sort_by_key(|f| (f.key.dir, f.key.saddr_be, f.key.sport_be, f.key.daddr_be));
    Ok(flows)
}

/// The load-balancer maps whose fill levels `/metrics` reports.
const FILLED_MAPS: [&str; 8] = [
    maps::SERVICES,
    maps::BACKENDS,
    maps::REV_NAT,
    maps::SOCK_REV_NAT,
    maps::AFFINITY,
    maps::CT,
    maps::MAGLEV,
    maps::BACKEND_STATS,
];

/// The datapath's counters and map fill levels, read from the maps pinned under `pin_dir` once
/// per scrape. As a prometheus-client [`Collector`] it renders:
/// - `keelson_datapath_events_total{path}` (counter): packets and socket operations by path;
/// - `keelson_conntrack_gc_total{event}` (counter): the agent's conntrack GC passes and the
///   flows it deleted (`expired`) or evicted early (`evicted`);
/// - `keelson_datapath_map_entries{map}` and `keelson_datapath_map_capacity{map}` (gauges);
/// - `keelson_datapath_conntrack_fill_ratio` (gauge, 0..1);
/// - per backend, labelled with its Service ([`Self::with_owners`]):
///   `keelson_service_backend_connections_total{path}`,
///   `keelson_service_backend_packets_total{direction}` and
///   `keelson_service_backend_bytes_total{direction}` (counters, see `backend_stats`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DatapathMetrics {
    /// Packets and socket operations by datapath path, summed over CPUs.
    pub events: Vec<(&'static str, u64)>,
    /// The conntrack GC's counters by event (`expired`, `evicted`, `passes`).
    pub conntrack_gc: Vec<(&'static str, u64)>,
    /// Entries and capacity (max entries) of each load-balancer map.
    pub maps: Vec<(&'static str, u64, u32)>,
    /// Every backend with its counters.
    pub backends: Vec<BackendCounters>,
    /// The Service each backend id is labelled with (empty when read from the maps alone).
    pub owners: BTreeMap<u32, BackendOwner>,
}

impl DatapathMetrics {
    /// Reads the counters and fill levels from the maps pinned under `pin_dir`.
    pub fn read(pin_dir: &Path) -> Result<Self, DatapathError> {
        let map_error = |map| {
            move |source| DatapathError::Map {
                map,
                source: Box::new(source),
            }
        };
        let metrics_map = open_pinned(pin_dir, maps::METRICS)?;
        let counters: PerCpuArray<_, u64> =
            PerCpuArray::try_from(&metrics_map).map_err(map_error(maps::METRICS))?;
        let mut out = Self::default();
        for (id, name) in metric::NAMES.iter().enumerate() {
            let values = counters
                .get(&(id as u32), 0)
                .map_err(map_error(maps::METRICS))?;
            out.events.push((name, values.iter().sum()));
        }
        for (id, name) in metric::AGENT_NAMES {
            let values = counters.get(&id, 0).map_err(map_error(maps::METRICS))?;
            let what = name.strip_prefix("ct_gc_").unwrap_or(name);
            out.conntrack_gc.push((what, values.iter().sum()));
        }
        for name in FILLED_MAPS {
            let map = open_pinned(pin_dir, name)?;
            let (entries, capacity) = fill(&map, name).map_err(map_error(name))?;
            out.maps.push((name, entries, capacity));
        }
        out.backends = backend_stats::read_backend_counters(pin_dir)?;
        Ok(out)
    }

    /// Labels the per-backend counters with the Services the agent knows
    /// ([`super::LoadBalancer::backend_owners`]).
    #[must_use]
    pub fn with_owners(mut self, owners: BTreeMap<u32, BackendOwner>) -> Self {
        self.owners = owners;
        self
    }

    /// The conntrack table's fill ratio, when the table was read.
    pub fn conntrack_fill_ratio(&self) -> Option<f64> {
        self.maps
            .iter()
            .find(|(name, _, _)| *name == maps::CT)
            .map(|(_, entries, capacity)| *entries as f64 / f64::from((*capacity).max(1)))
    }
}

impl Collector for DatapathMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "keelson_datapath_events",
            "Packets and socket operations by datapath path.",
            None,
            MetricType::Counter,
        )?;
        for (path, total) in &self.events {
            ConstCounter::new(*total).encode(family.encode_family(&[("path", *path)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "keelson_conntrack_gc",
            "The agent's conntrack GC: passes run, flows deleted on timeout (expired) and flows \
             evicted early under table pressure (evicted).",
            None,
            MetricType::Counter,
        )?;
        for (event, total) in &self.conntrack_gc {
            ConstCounter::new(*total).encode(family.encode_family(&[("event", *event)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "keelson_datapath_map_entries",
            "Entries in each load-balancer map.",
            None,
            MetricType::Gauge,
        )?;
        for (map, entries, _) in &self.maps {
            ConstGauge::new(*entries).encode(family.encode_family(&[("map", *map)])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "keelson_datapath_map_capacity",
            "Capacity (max entries) of each load-balancer map.",
            None,
            MetricType::Gauge,
        )?;
        for (map, _, capacity) in &self.maps {
            ConstGauge::new(u64::from(*capacity))
                .encode(family.encode_family(&[("map", *map)])?)?;
        }
        if let Some(ratio) = self.conntrack_fill_ratio() {
            let family = encoder.encode_descriptor(
                "keelson_datapath_conntrack_fill_ratio",
                "Conntrack table fill (0..1); past the GC's high-water mark the agent evicts \
                 closing and idle flows (never active established ones), and at 1 the kernel's \
                 LRU evicts the least recently used.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(ratio).encode(family)?;
        }
        backend_stats::encode(&mut encoder, &self.backends, &self.owners)
    }
}

/// The datapath's metrics alone in the OpenMetrics text format, read from the maps pinned
/// under `pin_dir` (`keelson-node-agent lb metrics`; the agent's `/metrics` adds its own).
pub fn metrics_text(pin_dir: &Path) -> Result<String, DatapathError> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(DatapathMetrics::read(pin_dir)?));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    Ok(text)
}

/// Entries (by walking the keys) and capacity of one load-balancer map.
fn fill(map: &aya::maps::Map, name: &'static str) -> Result<(u64, u32), aya::maps::MapError> {
    fn keys<K: aya::Pod, V: aya::Pod>(map: &aya::maps::Map) -> Result<u64, aya::maps::MapError> {
        let typed: HashMap<_, K, V> = HashMap::try_from(map)?;
        Ok(typed.keys().filter(Result::is_ok).count() as u64)
    }
    let entries = match name {
        maps::SERVICES => keys::<ServiceKey, ServiceValue>(map)?,
        maps::BACKENDS => keys::<u32, Backend>(map)?,
        maps::REV_NAT => keys::<u32, RevNat>(map)?,
        maps::SOCK_REV_NAT => keys::<SockRevNatKey, SockRevNat>(map)?,
        maps::AFFINITY => keys::<AffinityKey, AffinityValue>(map)?,
        maps::CT => keys::<CtKey, CtValue>(map)?,
        maps::MAGLEV => keys::<u32, MaglevTable>(map)?,
        maps::BACKEND_STATS => {
            let typed: PerCpuHashMap<_, u32, BackendStats> = PerCpuHashMap::try_from(map)?;
            typed.keys().filter(Result::is_ok).count() as u64
        }
        _ => 0,
    };
    let capacity = match map {
        aya::maps::Map::HashMap(d)
        | aya::maps::Map::LruHashMap(d)
        | aya::maps::Map::PerCpuHashMap(d) => d.info()?.max_entries(),
        _ => 0,
    };
    Ok((entries, capacity))
}

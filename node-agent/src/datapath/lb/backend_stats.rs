//! Per-backend counters: socket-LB connects, TC flows, packets and bytes per backend, read from
//! the per-CPU map [`maps::BACKEND_STATS`] and labelled with the Service that uses the backend.
//!
//! Lifecycle (the agent owns the entries, the programs only add to existing ones):
//! - `LoadBalancer::apply` writes a zeroed entry *before* it puts a backend under an id that held
//!   no backend or another one (address, port, protocol): a reused id starts again from zero, so
//!   one series never counts two backends. A backend that only changes state (ready ->
//!   terminating) keeps its counts.
//! - It deletes the entry in the same pass that deletes the backend.
//! - After a restart, `LoadBalancer::load` gives every adopted backend without an entry a zeroed
//!   one (an upgrade from an agent without the map); existing entries keep counting.
//!
//! So the counters are monotonic for as long as a backend exists; a backend that leaves and
//! comes back starts from zero (a counter reset, which Prometheus' `rate()` handles).

use std::{collections::BTreeMap, fmt, net::Ipv4Addr, path::Path};

use aya::{
    Ebpf,
    maps::{HashMap, PerCpuHashMap, PerCpuValues},
};
use keelson_ebpf_common::{Backend, BackendStats, maps, proto, scope, service_flags};
use prometheus_client::{
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter},
};

use super::{FrontendKey, open_pinned, typed, typed_mut};
use crate::datapath::DatapathError;

/// The Service a backend's counters are labelled with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendOwner {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub service: String,
    /// The frontend port clients use (the Service's `port` for its cluster IP).
    pub port: u16,
}

/// The owner of each backend id, from every (backend id, Service `namespace/name`, frontend,
/// frontend flags) the maps hold ([`super::LbState::backend_refs`]). Of the frontends using a
/// backend, a cluster-IP one (internal scope, no NodePort, external or hostPort flag) is
/// preferred, then the smallest Service id and port. A backend two Services share (same
/// address, port and protocol: one backend in the maps) is counted once, under the first.
pub fn backend_owners<'a>(
    refs: impl IntoIterator<Item = (u32, &'a str, FrontendKey, u16)>,
) -> BTreeMap<u32, BackendOwner> {
    const SECONDARY: u16 =
        service_flags::NODE_PORT | service_flags::EXTERNAL | service_flags::HOST_PORT;
    let mut best: BTreeMap<u32, (bool, &str, u16)> = BTreeMap::new();
    for (id, service, key, flags) in refs {
        let candidate = (
            key.scope != scope::INTERNAL || flags & SECONDARY != 0,
            service,
            key.port,
        );
        best.entry(id)
            .and_modify(|current| {
                if candidate < *current {
                    *current = candidate;
                }
            })
            .or_insert(candidate);
    }
    best.into_iter()
        .map(|(id, (_, service, port))| {
            let (namespace, name) = service.split_once('/').unwrap_or(("", service));
            let owner = BackendOwner {
                namespace: namespace.to_owned(),
                service: name.to_owned(),
                port,
            };
            (id, owner)
        })
        .collect()
}

/// One backend's counters, summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendCounters {
    /// Backend id.
    pub id: u32,
    /// Backend address.
    pub address: Ipv4Addr,
    /// Backend port.
    pub port: u16,
    /// [`proto`] number.
    pub proto: u8,
    /// The counters.
    pub stats: BackendStats,
}

impl BackendCounters {
    /// Connections the backend was chosen for: socket-LB translations plus new TC flows.
    pub const fn connections(&self) -> u64 {
        self.stats
            .sock_connects
            .wrapping_add(self.stats.tc_new_flows)
    }

    /// Bytes of its TC-translated flows, both directions.
    pub const fn bytes(&self) -> u64 {
        self.stats
            .tc_forward_bytes
            .wrapping_add(self.stats.tc_reply_bytes)
    }

    /// `address:port`.
    pub fn backend(&self) -> String {
        format!("{}:{}", self.address, self.port)
    }

    /// The protocol's name (`TCP`, `UDP`, `SCTP`).
    pub const fn protocol(&self) -> &'static str {
        match self.proto {
            proto::TCP => "TCP",
            proto::UDP => "UDP",
            proto::SCTP => "SCTP",
            _ => "?",
        }
    }
}

/// Adds up one entry's per-CPU values.
pub fn sum_per_cpu(values: &[BackendStats]) -> BackendStats {
    values
        .iter()
        .fold(BackendStats::default(), |sum, v| sum.merged(*v))
}

/// Joins the backends map with the summed counters: one row per backend, sorted by id (a
/// backend without a counter entry shows zeros; counter entries without a backend are skipped).
pub fn join_counters(
    backends: impl IntoIterator<Item = (u32, Backend)>,
    stats: &BTreeMap<u32, BackendStats>,
) -> Vec<BackendCounters> {
    let mut rows: Vec<BackendCounters> = backends
        .into_iter()
        .map(|(id, b)| BackendCounters {
            id,
            address: Ipv4Addr::from(u32::from_be(b.address_be)),
            port: u16::from_be(b.port_be),
            proto: b.proto,
            stats: stats.get(&id).copied().unwrap_or_default(),
        })
        .collect();
    rows.sort_by_key(|r| r.id);
    rows
}

/// Reads every backend and its counters from the maps pinned under `pin_dir`.
pub fn read_backend_counters(pin_dir: &Path) -> Result<Vec<BackendCounters>, DatapathError> {
    let map_error = |map| {
        move |source| DatapathError::Map {
            map,
            source: Box::new(source),
        }
    };
    let backends_map = open_pinned(pin_dir, maps::BACKENDS)?;
    let stats_map = open_pinned(pin_dir, maps::BACKEND_STATS)?;
    let backends: HashMap<_, u32, Backend> =
        HashMap::try_from(&backends_map).map_err(map_error(maps::BACKENDS))?;
    let stats: PerCpuHashMap<_, u32, BackendStats> =
        PerCpuHashMap::try_from(&stats_map).map_err(map_error(maps::BACKEND_STATS))?;
    let stats: BTreeMap<u32, BackendStats> = stats
        .iter()
        .filter_map(Result::ok)
        .map(|(id, values)| (id, sum_per_cpu(&values)))
        .collect();
    Ok(join_counters(
        backends.iter().filter_map(Result::ok),
        &stats,
    ))
}

/// A zeroed value for every possible CPU: what a new or reused backend id starts from.
pub(super) fn zeroed() -> Result<PerCpuValues<BackendStats>, DatapathError> {
    let io = |source| DatapathError::Io {
        what: "counting the possible CPUs",
        path: "/sys/devices/system/cpu/possible".into(),
        source,
    };
    let cpus = aya::util::nr_cpus().map_err(|(_, error)| io(error))?;
    PerCpuValues::try_from(vec![BackendStats::default(); cpus]).map_err(io)
}

/// Gives every backend in the loaded object's maps without a counter entry a zeroed one (maps
/// of an agent from before the counters); existing entries keep counting across the restart.
pub(super) fn adopt(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    let ids: Vec<u32> = {
        let backends: HashMap<_, u32, Backend> = typed(ebpf, maps::BACKENDS)?;
        backends.keys().filter_map(Result::ok).collect()
    };
    let mut stats: PerCpuHashMap<_, u32, BackendStats> = typed_mut(ebpf, maps::BACKEND_STATS)?;
    for id in ids {
        // BPF_NOEXIST: an existing entry is left alone.
        match stats.insert(id, zeroed()?, 1) {
            Ok(()) => {}
            Err(aya::maps::MapError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::EEXIST) => {}
            Err(source) => {
                return Err(DatapathError::Map {
                    map: maps::BACKEND_STATS,
                    source: Box::new(source),
                });
            }
        }
    }
    Ok(())
}

/// Whether putting `new` under an id that holds `old` (`None`: nothing) starts a new backend
/// there, whose counters must start from zero.
pub(super) fn starts_new_backend(old: Option<&Backend>, new: &Backend) -> bool {
    old.is_none_or(|old| {
        (old.address_be, old.port_be, old.proto) != (new.address_be, new.port_be, new.proto)
    })
}

/// The labels of one backend's series: its Service (empty values when no Service owns it, as
/// for `lb metrics`, which reads the maps alone), frontend port, protocol and address.
fn labels(row: &BackendCounters, owner: Option<&BackendOwner>) -> Vec<(&'static str, String)> {
    vec![
        (
            "namespace",
            owner.map(|o| o.namespace.clone()).unwrap_or_default(),
        ),
        (
            "service",
            owner.map(|o| o.service.clone()).unwrap_or_default(),
        ),
        (
            "port",
            owner.map(|o| o.port.to_string()).unwrap_or_default(),
        ),
        ("protocol", row.protocol().to_owned()),
        ("backend", row.backend()),
    ]
}

/// Writes the per-backend families (nothing when there is no backend):
/// - `keelson_service_backend_connections_total{namespace,service,port,protocol,backend,path}`:
///   `path="socket"` connects/sends socket-LB translated to the backend, `path="tc"` new flows
///   the TC path sent to it;
/// - `keelson_service_backend_packets_total{...,direction}` and
///   `keelson_service_backend_bytes_total{...,direction}`: packets and bytes (L2 header included)
///   of TC-translated flows, `direction="forward"` towards the backend, `"reply"` from it.
pub(super) fn encode(
    encoder: &mut DescriptorEncoder,
    rows: &[BackendCounters],
    owners: &BTreeMap<u32, BackendOwner>,
) -> Result<(), fmt::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let with = |row: &BackendCounters, key: &'static str, value: &'static str| {
        let mut l = labels(row, owners.get(&row.id));
        l.push((key, value.to_owned()));
        l
    };
    let mut family = encoder.encode_descriptor(
        "keelson_service_backend_connections",
        "Connections the datapath chose each backend for: socket-LB translations (path=socket) \
         and new TC flows (path=tc).",
        None,
        MetricType::Counter,
    )?;
    for row in rows {
        for (path, total) in [
            ("socket", row.stats.sock_connects),
            ("tc", row.stats.tc_new_flows),
        ] {
            ConstCounter::new(total).encode(family.encode_family(&with(row, "path", path))?)?;
        }
    }
    type Field = fn(&BackendStats) -> u64;
    let families: [(&str, &str, Field, Field); 2] = [
        (
            "keelson_service_backend_packets",
            "Packets of TC-translated flows per backend, towards it (forward) and from it (reply).",
            |s: &BackendStats| s.tc_forward_packets,
            |s: &BackendStats| s.tc_reply_packets,
        ),
        (
            "keelson_service_backend_bytes",
            "Bytes (L2 header included) of TC-translated flows per backend, towards it (forward) \
             and from it (reply).",
            |s: &BackendStats| s.tc_forward_bytes,
            |s: &BackendStats| s.tc_reply_bytes,
        ),
    ];
    for (name, help, forward, reply) in families {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for row in rows {
            for (direction, total) in [
                ("forward", forward(&row.stats)),
                ("reply", reply(&row.stats)),
            ] {
                ConstCounter::new(total).encode(family.encode_family(&with(
                    row,
                    "direction",
                    direction,
                ))?)?;
            }
        }
    }
    Ok(())
}

/// The `lb list` table of backends: a header, then one row per backend with its connections
/// (socket-LB plus TC) and TC bytes (both directions).
pub fn backend_table(rows: &[BackendCounters]) -> Vec<String> {
    let mut lines = vec![format!(
        "{:<26} {:>6} {:>12} {:>10} {:>10} {:>14}",
        "BACKEND", "ID", "CONNECTIONS", "SOCKET", "TC", "BYTES"
    )];
    for row in rows {
        lines.push(format!(
            "{:<26} {:>6} {:>12} {:>10} {:>10} {:>14}",
            format!("{}/{}", row.backend(), row.protocol()),
            row.id,
            row.connections(),
            row.stats.sock_connects,
            row.stats.tc_new_flows,
            row.bytes()
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use keelson_ebpf_common::backend_state;
    use prometheus_client::{collector::Collector, registry::Registry};

    use super::*;

    fn frontend(last: u8, port: u16, scope: u8) -> FrontendKey {
        FrontendKey {
            address: Ipv4Addr::new(10, 96, 0, last),
            port,
            proto: proto::TCP,
            scope,
        }
    }

    fn backend(last: u8, port: u16, proto: u8) -> Backend {
        Backend {
            address_be: u32::from(Ipv4Addr::new(10, 244, 0, last)).to_be(),
            port_be: port.to_be(),
            proto,
            state: backend_state::ACTIVE,
            flags: 0,
            _pad: [0; 3],
        }
    }

    fn stats(sock: u64, flows: u64, bytes: (u64, u64)) -> BackendStats {
        BackendStats {
            sock_connects: sock,
            tc_new_flows: flows,
            tc_forward_packets: flows * 3,
            tc_forward_bytes: bytes.0,
            tc_reply_packets: flows * 2,
            tc_reply_bytes: bytes.1,
        }
    }

    #[test]
    fn the_cluster_ip_frontend_names_a_backend_before_its_node_port() {
        let refs = [
            // Backend 1 through a NodePort of default/web first, then its cluster IP.
            (
                1,
                "default/web",
                frontend(1, 30080, scope::EXTERNAL),
                service_flags::NODE_PORT,
            ),
            (1, "default/web", frontend(1, 80, scope::INTERNAL), 0),
            (
                1,
                "default/web",
                frontend(1, 30080, scope::INTERNAL),
                service_flags::NODE_PORT,
            ),
            // Backend 2 shared by two Services: the smaller id wins.
            (2, "shop/web", frontend(2, 443, scope::INTERNAL), 0),
            (2, "default/api", frontend(3, 8443, scope::INTERNAL), 0),
            // Backend 3 only reachable through a hostPort.
            (
                3,
                "kube-system/dns",
                frontend(4, 53, scope::INTERNAL),
                service_flags::HOST_PORT,
            ),
        ];
        let owners = backend_owners(refs);
        let owner = |ns: &str, name: &str, port| BackendOwner {
            namespace: ns.into(),
            service: name.into(),
            port,
        };
        assert_eq!(owners.len(), 3);
        assert_eq!(owners[&1], owner("default", "web", 80));
        assert_eq!(owners[&2], owner("default", "api", 8443));
        assert_eq!(owners[&3], owner("kube-system", "dns", 53));
    }

    #[test]
    fn per_cpu_values_sum_and_join_with_the_backends() {
        let summed = sum_per_cpu(&[
            stats(1, 2, (10, 20)),
            stats(3, 0, (5, 0)),
            stats(0, 0, (0, 0)),
        ]);
        assert_eq!(summed.sock_connects, 4);
        assert_eq!(summed.tc_new_flows, 2);
        assert_eq!(summed.tc_forward_bytes, 15);
        assert_eq!(summed.tc_reply_bytes, 20);
        let counters = BTreeMap::from([(2, summed), (9, stats(7, 7, (7, 7)))]);
        // Id 9 has counters but no backend (deleted between the two reads): skipped. Id 1 has
        // no counter entry yet: zeros.
        let rows = join_counters(
            [
                (2, backend(2, 8080, proto::TCP)),
                (1, backend(1, 53, proto::UDP)),
            ],
            &counters,
        );
        assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(rows[0].stats, BackendStats::default());
        assert_eq!(rows[0].backend(), "10.244.0.1:53");
        assert_eq!(rows[0].protocol(), "UDP");
        assert_eq!(rows[1].connections(), 6);
        assert_eq!(rows[1].bytes(), 35);
    }

    #[test]
    fn a_new_backend_under_an_id_resets_its_counters_a_state_change_does_not() {
        let web = backend(1, 8080, proto::TCP);
        assert!(starts_new_backend(None, &web));
        let terminating = Backend {
            state: backend_state::TERMINATING,
            ..web
        };
        assert!(!starts_new_backend(Some(&web), &terminating));
        assert!(starts_new_backend(
            Some(&web),
            &backend(2, 8080, proto::TCP)
        ));
        assert!(starts_new_backend(
            Some(&web),
            &backend(1, 8081, proto::TCP)
        ));
        assert!(starts_new_backend(
            Some(&web),
            &backend(1, 8080, proto::UDP)
        ));
    }

    struct Families(Vec<BackendCounters>, BTreeMap<u32, BackendOwner>);

    impl fmt::Debug for Families {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Families")
        }
    }

    impl Collector for Families {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
            encode(&mut encoder, &self.0, &self.1)
        }
    }

    fn render(rows: Vec<BackendCounters>, owners: BTreeMap<u32, BackendOwner>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Families(rows, owners)));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        text
    }

    #[test]
    fn series_carry_the_service_the_backend_and_the_path() {
        let rows = join_counters(
            [
                (1, backend(1, 8080, proto::TCP)),
                (2, backend(2, 8080, proto::TCP)),
            ],
            &BTreeMap::from([(1, stats(5, 3, (900, 4000))), (2, stats(0, 1, (60, 0)))]),
        );
        let owners = backend_owners([(1, "default/web", frontend(1, 80, scope::INTERNAL), 0)]);
        let text = render(rows, owners);
        keelson_testbed::exposition::check(&text).unwrap_or_else(|e| panic!("{e} in:\n{text}"));
        let web = "namespace=\"default\",service=\"web\",port=\"80\",protocol=\"TCP\",\
                   backend=\"10.244.0.1:8080\"";
        // Backend 2 is in no Service's frontend (adopted, or read by `lb metrics`): empty labels.
        let orphan =
            "namespace=\"\",service=\"\",port=\"\",protocol=\"TCP\",backend=\"10.244.0.2:8080\"";
        for line in [
            format!("keelson_service_backend_connections_total{{{web},path=\"socket\"}} 5"),
            format!("keelson_service_backend_connections_total{{{web},path=\"tc\"}} 3"),
            format!("keelson_service_backend_bytes_total{{{web},direction=\"forward\"}} 900"),
            format!("keelson_service_backend_bytes_total{{{web},direction=\"reply\"}} 4000"),
            format!("keelson_service_backend_packets_total{{{web},direction=\"forward\"}} 9"),
            format!("keelson_service_backend_packets_total{{{web},direction=\"reply\"}} 6"),
            format!("keelson_service_backend_connections_total{{{orphan},path=\"tc\"}} 1"),
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        assert!(
            text.contains("# TYPE keelson_service_backend_bytes counter"),
            "{text}"
        );
        // No backend: no family at all.
        assert_eq!(render(Vec::new(), BTreeMap::new()), "# EOF\n");
    }

    #[test]
    fn the_list_table_shows_connections_and_bytes() {
        let rows = join_counters(
            [(7, backend(3, 8080, proto::TCP))],
            &BTreeMap::from([(7, stats(4, 2, (100, 250)))]),
        );
        let table = backend_table(&rows);
        assert_eq!(table.len(), 2);
        let header: Vec<&str> = table[0].split_whitespace().collect();
        assert_eq!(
            header,
            ["BACKEND", "ID", "CONNECTIONS", "SOCKET", "TC", "BYTES"]
        );
        let row: Vec<&str> = table[1].split_whitespace().collect();
        assert_eq!(row, ["10.244.0.3:8080/TCP", "7", "6", "4", "2", "350"]);
    }
}

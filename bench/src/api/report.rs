//! The API benchmark's figures and their markdown table. Pure: no IO.

use std::fmt::Write as _;

pub use super::procs::CpuShare;

fn cpu(share: &CpuShare) -> String {
    format!(
        "{:.0} % / {:.0} % / {:.0} %",
        share.server, share.client, share.machine
    )
}

/// p50 and p99 of a latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Samples.
    pub count: u64,
}

impl Percentiles {
    /// From a histogram of microseconds.
    pub fn of(histogram: &hdrhistogram::Histogram<u64>) -> Self {
        Self {
            p50_ms: histogram.value_at_quantile(0.50) as f64 / 1000.0,
            p99_ms: histogram.value_at_quantile(0.99) as f64 / 1000.0,
            count: histogram.len(),
        }
    }
}

/// One watch fan-out measurement.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WatchFigures {
    /// Concurrent watchers.
    pub watchers: usize,
    /// Events delivered / expected.
    pub delivered: u64,
    /// Events expected (watchers × writes).
    pub expected: u64,
    /// Write -> event latency.
    pub latency: Percentiles,
    /// Seconds to open every watch.
    pub setup_s: f64,
    /// CPU while the events were written and delivered.
    pub cpu: CpuShare,
}

/// Event deliveries to many watchers while writes run as fast as they go.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ThroughputFigures {
    /// Concurrent watchers.
    pub watchers: usize,
    /// Events written.
    pub events: usize,
    /// Events delivered over every watcher (of `watchers * events`).
    pub delivered: u64,
    /// Deliveries per second.
    pub rate: f64,
    /// CPU while the events were written and delivered.
    pub cpu: CpuShare,
}

/// The closed-loop creates as `system:masters` and as a user RBAC authorizes, in the same
/// run, with the policy stored.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RbacFigures {
    /// Roles in the policy.
    pub roles: usize,
    /// Bindings to other subjects in the policy.
    pub bindings: usize,
    /// Creates per second as the admin.
    pub masters_rate: f64,
    /// Create latency as the admin.
    pub masters_latency: Percentiles,
    /// Creates per second as the RBAC user.
    pub rbac_rate: f64,
    /// Create latency as the RBAC user.
    pub rbac_latency: Percentiles,
    /// Alternating rounds each identity ran (ABBA order).
    pub rounds: usize,
}

impl RbacFigures {
    /// The RBAC user's create rate over the admin's (1.0 = as fast).
    pub fn rate_ratio(&self) -> f64 {
        self.rbac_rate / self.masters_rate.max(1e-9)
    }

    /// The RBAC user's p99 over the admin's (1.0 = as fast).
    pub fn p99_ratio(&self) -> f64 {
        self.rbac_latency.p99_ms / self.masters_latency.p99_ms.max(1e-9)
    }
}

/// Raw etcd puts through etcd-client: the anchor the create rates are quoted against.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EtcdAnchor {
    /// Puts answered.
    pub puts: u64,
    /// Puts in flight.
    pub concurrency: usize,
    /// Bytes of each value (the size of a created object as the API returns it).
    pub value_bytes: usize,
    /// Puts per second.
    pub rate: f64,
    /// Put latency.
    pub latency: Percentiles,
    /// CPU while the puts ran (server = etcd).
    pub cpu: CpuShare,
}

/// Creates through a store while it compacts a long history (store level, no API server).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CompactionFigures {
    /// The store measured.
    pub store: String,
    /// Revisions the compaction removed history up to.
    pub revisions: i64,
    /// Seconds from the compaction request to its answer.
    pub duration_s: f64,
    /// Creates answered while the compaction ran.
    pub creates: u64,
    /// Requests in flight.
    pub concurrency: usize,
    /// Create latency while the compaction ran.
    pub latency: Percentiles,
    /// The slowest create while the compaction ran, ms.
    pub max_ms: f64,
}

/// Everything measured for one store.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StoreFigures {
    /// `sqlite` or `etcd`.
    pub store: String,
    /// Objects created in the closed-loop phase.
    pub creates: u64,
    /// Requests in flight during it.
    pub concurrency: usize,
    /// Creates per second.
    pub create_rate: f64,
    /// Create latency at that concurrency.
    pub create_latency: Percentiles,
    /// Failed creates over both create phases.
    pub create_errors: u64,
    /// CPU during the closed-loop creates.
    pub create_cpu: CpuShare,
    /// Paced create rate asked for and reached.
    pub paced_target: u32,
    /// Reached rate.
    pub paced_rate: f64,
    /// Latency from the scheduled send time.
    pub paced_latency: Percentiles,
    /// Objects in the listed namespace.
    pub list_items: usize,
    /// Body size, bytes.
    pub list_bytes: usize,
    /// Full-list latency.
    pub list_latency: Percentiles,
    /// Watch fan-out, one per watcher count.
    pub watch: Vec<WatchFigures>,
    /// Delivery throughput to many watchers.
    pub throughput: Option<ThroughputFigures>,
    /// Every ConfigMap's JSON after the load (one list of all namespaces), bytes.
    pub stored_bytes: usize,
    /// Control plane RSS right after start, MiB.
    pub idle_rss_mib: f64,
    /// Control plane RSS after the load settled, MiB.
    pub settled_rss_mib: f64,
    /// Control plane peak RSS (VmHWM), MiB.
    pub peak_rss_mib: f64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// The RBAC comparison.
    pub rbac: Option<RbacFigures>,
    /// Bytes of one created ConfigMap as the API returns it (the anchor's value size).
    pub object_bytes: usize,
}

/// Everything the header says about the run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunInfo {
    /// When the run started (UTC).
    pub started: String,
    /// `uname -r`.
    pub kernel: String,
    /// CPUs online.
    pub cpus: usize,
    /// Wall time, seconds.
    pub wall_s: f64,
    /// CPU steal over the run, percent.
    pub steal_percent: Option<f64>,
    /// One-minute load average before and after.
    pub load_average: (Option<f64>, Option<f64>),
    /// `--quick`.
    pub quick: bool,
}

fn ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0} ms")
    } else if value >= 10.0 {
        format!("{value:.1} ms")
    } else {
        format!("{value:.2} ms")
    }
}

/// The rows of the side-by-side table: metric, target, then one cell per store.
pub fn table_rows(
    stores: &[StoreFigures],
    anchor: Option<&EtcdAnchor>,
) -> Vec<(String, String, Vec<String>)> {
    let mut rows: Vec<(String, String, Vec<String>)> = Vec::new();
    let mut row = |metric: String, target: &str, cell: &dyn Fn(&StoreFigures) -> String| {
        rows.push((metric, target.to_owned(), stores.iter().map(cell).collect()));
    };
    let concurrency = stores.first().map_or(0, |s| s.concurrency);
    row(
        format!("creates/s, {concurrency} in flight"),
        ">= 10000 (SQLite)",
        &|s| format!("{:.0}", s.create_rate),
    );
    if let Some(anchor) = anchor {
        row(
            format!(
                "creates/s over raw etcd puts/s ({:.0}/s, {} in flight, {}-byte values)",
                anchor.rate, anchor.concurrency, anchor.value_bytes
            ),
            ">= 1.5x (SQLite)",
            &|s| format!("{:.2}x", s.create_rate / anchor.rate.max(1e-9)),
        );
    }
    row(
        format!("create p50 / p99, {concurrency} in flight"),
        "",
        &|s| {
            format!(
                "{} / {}",
                ms(s.create_latency.p50_ms),
                ms(s.create_latency.p99_ms)
            )
        },
    );
    row(
        "CPU during those creates: server / bench client (% of a core) / machine busy".into(),
        "",
        &|s| cpu(&s.create_cpu),
    );
    let paced = stores.first().map_or(0, |s| s.paced_target);
    row(
        format!("create p50 / p99, paced {paced}/s"),
        "p99 <= 50 ms",
        &|s| {
            format!(
                "{} / {} ({:.0}/s reached)",
                ms(s.paced_latency.p50_ms),
                ms(s.paced_latency.p99_ms),
                s.paced_rate
            )
        },
    );
    row("create errors".into(), "0", &|s| {
        s.create_errors.to_string()
    });
    let items = stores.first().map_or(0, |s| s.list_items);
    row(
        format!("full list of {items} ConfigMaps p50 / p99"),
        "",
        &|s| {
            format!(
                "{} / {} ({:.1} MiB)",
                ms(s.list_latency.p50_ms),
                ms(s.list_latency.p99_ms),
                s.list_bytes as f64 / 1048576.0
            )
        },
    );
    let watcher_counts: Vec<usize> = stores
        .first()
        .map(|s| s.watch.iter().map(|w| w.watchers).collect())
        .unwrap_or_default();
    for (i, watchers) in watcher_counts.into_iter().enumerate() {
        row(
            format!("watch delivery p50 / p99, {watchers} watchers"),
            if watchers >= 1000 { "p99 <= 10 ms" } else { "" },
            &|s| match s.watch.get(i) {
                Some(w) => format!(
                    "{} / {} ({}/{} events)",
                    ms(w.latency.p50_ms),
                    ms(w.latency.p99_ms),
                    w.delivered,
                    w.expected
                ),
                None => "-".into(),
            },
        );
        row(
            format!("CPU during {watchers}-watcher delivery: server / bench client / machine"),
            "",
            &|s| s.watch.get(i).map_or_else(|| "-".into(), |w| cpu(&w.cpu)),
        );
    }
    // The 1000-watcher p99 against the 10-watcher p99 of the same run.
    let p99_of = |s: &StoreFigures, n: usize| {
        s.watch
            .iter()
            .find(|w| w.watchers == n)
            .map(|w| w.latency.p99_ms)
    };
    if stores
        .iter()
        .any(|s| p99_of(s, 10).is_some() && p99_of(s, 1000).is_some())
    {
        row(
            "watch delivery p99, 1000 watchers / 10 watchers".into(),
            "<= 2x",
            &|s| match (p99_of(s, 1000), p99_of(s, 10)) {
                (Some(many), Some(few)) => format!("{:.2}x", many / few.max(1e-9)),
                _ => "-".into(),
            },
        );
    }
    if let Some(t) = stores.iter().find_map(|s| s.throughput.as_ref()) {
        row(
            format!(
                "event deliveries/s to {} watchers, {} writes as fast as they go",
                t.watchers, t.events
            ),
            ">= 40000/s",
            &|s| {
                s.throughput.as_ref().map_or_else(
                    || "-".into(),
                    |t| {
                        format!(
                            "{:.0}/s ({}/{} events, CPU {})",
                            t.rate,
                            t.delivered,
                            t.watchers * t.events,
                            cpu(&t.cpu)
                        )
                    },
                )
            },
        );
    }
    if stores.iter().any(|s| s.rbac.is_some()) {
        let policy = stores
            .iter()
            .find_map(|s| s.rbac.as_ref())
            .map(|r| {
                format!(
                    "{} Roles, {} bindings stored, {} alternating rounds each, both by token",
                    r.roles, r.bindings, r.rounds
                )
            })
            .unwrap_or_default();
        row(
            format!("creates/s, p99, {concurrency} in flight, as system:masters ({policy})"),
            "",
            &|s| {
                s.rbac.as_ref().map_or_else(
                    || "-".into(),
                    |r| format!("{:.0}/s, {}", r.masters_rate, ms(r.masters_latency.p99_ms)),
                )
            },
        );
        row(
            format!("creates/s, p99, {concurrency} in flight, as a user RBAC allows (`edit`)"),
            "",
            &|s| {
                s.rbac.as_ref().map_or_else(
                    || "-".into(),
                    |r| format!("{:.0}/s, {}", r.rbac_rate, ms(r.rbac_latency.p99_ms)),
                )
            },
        );
        row(
            "RBAC / system:masters: creates/s, p99".into(),
            "creates/s >= 95 %",
            &|s| {
                s.rbac.as_ref().map_or_else(
                    || "-".into(),
                    |r| format!("{:.1} %, {:.2}x", r.rate_ratio() * 100.0, r.p99_ratio()),
                )
            },
        );
    }
    row("RSS idle after start".into(), "<= 64 MiB", &|s| {
        format!("{:.1} MiB", s.idle_rss_mib)
    });
    row("RSS after the load settled / peak".into(), "", &|s| {
        format!("{:.1} / {:.1} MiB", s.settled_rss_mib, s.peak_rss_mib)
    });
    row(
        "RSS after the load / stored objects (every ConfigMap's JSON)".into(),
        "<= 2x",
        &|s| {
            let stored = s.stored_bytes as f64 / 1048576.0;
            format!(
                "{:.1} MiB / {:.1} MiB = {:.1}x",
                s.settled_rss_mib,
                stored,
                s.settled_rss_mib / stored.max(1e-9)
            )
        },
    );
    rows
}

/// The table as markdown.
pub fn render_table(stores: &[StoreFigures], anchor: Option<&EtcdAnchor>) -> String {
    let mut out = String::new();
    let _ = write!(out, "| metric | target |");
    for s in stores {
        let _ = write!(out, " {} |", s.store);
    }
    let _ = write!(out, "\n|---|---|");
    for _ in stores {
        let _ = write!(out, "---|");
    }
    out.push('\n');
    for (metric, target, cells) in table_rows(stores, anchor) {
        let _ = writeln!(out, "| {metric} | {target} | {} |", cells.join(" | "));
    }
    out
}

/// The whole report: header, table, notes.
pub fn render_markdown(
    info: &RunInfo,
    stores: &[StoreFigures],
    anchor: Option<&EtcdAnchor>,
    compaction: &[CompactionFigures],
    notes: &[String],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# keelson API server benchmark\n");
    let _ = writeln!(
        out,
        "- run: {} on Linux {}, {} CPUs, {:.0} s wall time{}",
        info.started,
        info.kernel,
        info.cpus,
        info.wall_s,
        if info.quick { " (`--quick`)" } else { "" }
    );
    let _ = writeln!(
        out,
        "- CPU steal over the run: {}",
        info.steal_percent
            .map_or_else(|| "unknown".to_owned(), |s| format!("{s:.1} %"))
    );
    let load = |l: Option<f64>| l.map_or_else(|| "?".to_owned(), |l| format!("{l:.2}"));
    let _ = writeln!(
        out,
        "- load average (1 min) before / after: {} / {}",
        load(info.load_average.0),
        load(info.load_average.1)
    );
    let _ = writeln!(
        out,
        "- the real `keelson-control-plane` (release) on loopback, driven by kube-rs clients \
         built from its admin kubeconfig, in one process that shares the CPUs with the server \
         (and etcd)"
    );
    if let Some(a) = anchor {
        let _ = writeln!(
            out,
            "- anchor: {} raw puts to a fresh single-member etcd through etcd-client (4 gRPC \
             connections), {} in flight, {}-byte values, durable as etcd is (WAL fsync before \
             the answer): {:.0}/s, p50 / p99 {} / {} (etcd CPU {:.0} %, machine {:.0} % busy)",
            a.puts,
            a.concurrency,
            a.value_bytes,
            a.rate,
            ms(a.latency.p50_ms),
            ms(a.latency.p99_ms),
            a.cpu.server,
            a.cpu.machine
        );
    }
    out.push('\n');
    out.push_str(&render_table(stores, anchor));
    if !compaction.is_empty() {
        out.push_str(&render_compaction(compaction));
    }
    for s in stores {
        if let Some(error) = &s.first_error {
            let _ = writeln!(out, "\n{}: first error: `{error}`", s.store);
        }
    }
    if !notes.is_empty() {
        out.push_str("\n## Notes\n\n");
        for note in notes {
            let _ = writeln!(out, "- {note}");
        }
    }
    out
}

/// The compaction section: creates through the store while it compacts.
pub fn render_compaction(rows: &[CompactionFigures]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n## Creates during a compaction (store level)\n\n| store | revisions compacted | \
         compaction took | creates during it | create p99 | create max | target |\n\
         |---|---|---|---|---|---|---|"
    );
    for c in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} s | {} ({} in flight) | {} | {} | max <= 100 ms |",
            c.store,
            c.revisions,
            c.duration_s,
            c.creates,
            c.concurrency,
            ms(c.latency.p99_ms),
            ms(c.max_ms)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figures(store: &str) -> StoreFigures {
        StoreFigures {
            store: store.into(),
            creates: 10_000,
            concurrency: 64,
            create_rate: 4321.0,
            create_latency: Percentiles {
                p50_ms: 12.5,
                p99_ms: 40.0,
                count: 10_000,
            },
            paced_target: 1000,
            paced_rate: 999.0,
            paced_latency: Percentiles {
                p50_ms: 1.5,
                p99_ms: 7.25,
                count: 5000,
            },
            list_items: 10_000,
            list_bytes: 5 * 1048576,
            watch: vec![
                WatchFigures {
                    watchers: 100,
                    delivered: 20_000,
                    expected: 20_000,
                    ..WatchFigures::default()
                },
                WatchFigures {
                    watchers: 1000,
                    delivered: 199_000,
                    expected: 200_000,
                    ..WatchFigures::default()
                },
            ],
            idle_rss_mib: 20.0,
            ..StoreFigures::default()
        }
    }

    #[test]
    fn the_rbac_rows_show_both_clients_and_the_ratio() {
        let mut sqlite = figures("sqlite");
        sqlite.rbac = Some(RbacFigures {
            roles: 500,
            bindings: 1000,
            masters_rate: 4000.0,
            masters_latency: Percentiles {
                p99_ms: 20.0,
                ..Percentiles::default()
            },
            rbac_rate: 3900.0,
            rbac_latency: Percentiles {
                p99_ms: 21.0,
                ..Percentiles::default()
            },
            rounds: 4,
        });
        let table = render_table(&[sqlite, figures("etcd")], None);
        assert!(
            table.contains(
                "| creates/s, p99, 64 in flight, as system:masters (500 Roles, 1000 bindings \
                 stored, 4 alternating rounds each, both by token) |  | 4000/s, 20.0 ms | - |"
            ),
            "{table}"
        );
        assert!(table.contains("as a user RBAC allows (`edit`) |  | 3900/s, 21.0 ms | - |"));
        assert!(
            table.contains(
                "| RBAC / system:masters: creates/s, p99 | creates/s >= 95 % | 97.5 %, 1.05x | - |"
            ),
            "{table}"
        );
    }

    #[test]
    fn table_has_one_column_per_store_and_a_row_per_watcher_count() {
        let table = render_table(&[figures("sqlite"), figures("etcd")], None);
        assert!(table.contains("| 0 % / 0 % / 0 % |"));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "| metric | target | sqlite | etcd |");
        assert_eq!(lines[1], "|---|---|---|---|");
        assert!(table.contains("| creates/s, 64 in flight | >= 10000 (SQLite) | 4321 | 4321 |"));
        assert!(table.contains("| create p50 / p99, 64 in flight |  | 12.5 ms / 40.0 ms |"));
        assert!(table.contains("1.50 ms / 7.25 ms (999/s reached)"));
        assert!(table.contains("watch delivery p50 / p99, 1000 watchers | p99 <= 10 ms |"));
        assert!(table.contains("(199000/200000 events)"));
        assert!(table.contains("(5.0 MiB)"));
        assert!(table.contains("| RSS idle after start | <= 64 MiB | 20.0 MiB |"));
        // Every row has as many cells as the header.
        for line in &lines {
            assert_eq!(line.matches('|').count(), 5, "{line}");
        }
    }

    #[test]
    fn the_anchor_row_quotes_each_store_as_a_ratio_to_raw_etcd_puts() {
        let mut sqlite = figures("sqlite");
        sqlite.create_rate = 9000.0;
        let mut etcd = figures("etcd");
        etcd.create_rate = 1500.0;
        let anchor = EtcdAnchor {
            puts: 10_000,
            concurrency: 64,
            value_bytes: 700,
            rate: 6000.0,
            ..EtcdAnchor::default()
        };
        let table = render_table(&[sqlite, etcd], Some(&anchor));
        assert!(
            table.contains(
                "| creates/s over raw etcd puts/s (6000/s, 64 in flight, 700-byte values) | \
                 >= 1.5x (SQLite) | 1.50x | 0.25x |"
            ),
            "{table}"
        );
    }

    #[test]
    fn the_compaction_section_has_a_row_per_store() {
        let section = render_compaction(&[CompactionFigures {
            store: "sqlite".into(),
            revisions: 100_000,
            duration_s: 2.5,
            creates: 4000,
            concurrency: 64,
            latency: Percentiles {
                p99_ms: 12.0,
                ..Percentiles::default()
            },
            max_ms: 40.0,
        }]);
        assert!(
            section.contains(
                "| sqlite | 100000 | 2.50 s | 4000 (64 in flight) | 12.0 ms | 40.0 ms | max <= \
                 100 ms |"
            ),
            "{section}"
        );
    }

    #[test]
    fn percentiles_in_milliseconds() {
        let mut h =
            hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        for us in 1..=1000 {
            h.record(us * 100).expect("in range");
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50_ms - 50.0).abs() < 0.1, "{p:?}");
        assert!((p.p99_ms - 99.0).abs() < 0.1, "{p:?}");
    }
}

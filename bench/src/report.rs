//! The benchmark's results and their markdown table. Pure: no IO.

use std::{fmt::Write as _, time::Duration};

use crate::stats::{Spread, median};

/// The name of the baseline configuration every ratio is relative to.
pub const BASELINE: &str = "direct";

/// What one (configuration, scale) measured, one value per round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    /// Short connections completed per second.
    pub conn_rate: Vec<f64>,
    /// Request/response latency on persistent connections, median, in µs.
    pub p50_us: Vec<f64>,
    /// Request/response latency on persistent connections, 99th percentile, in µs.
    pub p99_us: Vec<f64>,
    /// iperf3 bulk throughput, in Gbit/s.
    pub gbps: Vec<f64>,
    /// Failed attempts over all rounds and modes.
    pub errors: u64,
    /// Time to set the configuration up (load the rules), in seconds.
    pub setup_s: Vec<f64>,
    /// CPU steal during the measurements, in percent.
    pub steal: Vec<f64>,
}

/// One row of the table: a configuration at a scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Number of Services.
    pub services: usize,
    /// Configuration name.
    pub datapath: String,
    /// The per-round values.
    pub samples: Samples,
}

/// The medians of a row.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Medians {
    /// Short connections per second.
    pub conn_rate: Option<f64>,
    /// Persistent-connection latency p50, µs.
    pub p50_us: Option<f64>,
    /// Persistent-connection latency p99, µs.
    pub p99_us: Option<f64>,
    /// iperf3 Gbit/s.
    pub gbps: Option<f64>,
}

impl Row {
    /// Medians over rounds.
    pub fn medians(&self) -> Medians {
        Medians {
            conn_rate: median(&self.samples.conn_rate),
            p50_us: median(&self.samples.p50_us),
            p99_us: median(&self.samples.p99_us),
            gbps: median(&self.samples.gbps),
        }
    }
}

/// Ratios of a row's medians to the baseline's at the same scale.
pub fn ratios(row: &Medians, baseline: &Medians) -> Medians {
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    Medians {
        conn_rate: ratio(row.conn_rate, baseline.conn_rate),
        p50_us: ratio(row.p50_us, baseline.p50_us),
        p99_us: ratio(row.p99_us, baseline.p99_us),
        gbps: ratio(row.gbps, baseline.gbps),
    }
}

/// The baseline row at `services`, if measured.
pub fn baseline_of(rows: &[Row], services: usize) -> Option<&Row> {
    rows.iter()
        .find(|r| r.services == services && r.datapath == BASELINE)
}

/// How long one endpoint change took to apply.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRow {
    /// Configuration name.
    pub datapath: String,
    /// Number of Services loaded.
    pub services: usize,
    /// What exactly was timed.
    pub method: String,
    /// The timings; `None` when the change never finished.
    pub spread: Option<Spread>,
    /// Set when the benchmark stopped the change after this long.
    pub stopped_after: Option<Duration>,
}

/// Everything the header says about the run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// When the run started (UTC, RFC 3339).
    pub started: String,
    /// `uname -r`.
    pub kernel: String,
    /// CPUs online.
    pub cpus: usize,
    /// Clients pinned to CPU 0 and servers to CPU 1.
    pub pinned: bool,
    /// Length of one measurement.
    pub duration: Duration,
    /// Rounds.
    pub rounds: usize,
    /// Short-connection workers.
    pub workers: usize,
    /// Persistent connections.
    pub connections: usize,
    /// Backend addresses in the pool.
    pub pool: usize,
    /// CPU steal over the whole run, percent.
    pub steal_percent: Option<f64>,
    /// One-minute load average before the run and after it (other work on the machine
    /// competes for the same CPUs).
    pub load_average: (Option<f64>, Option<f64>),
    /// Wall time of the whole run.
    pub wall: Duration,
    /// One line per configuration: name and what it is.
    pub legend: Vec<(String, String)>,
}

/// Renders the results as markdown: a header, the main table and the endpoint-change table.
pub fn render_markdown(info: &RunInfo, rows: &[Row], changes: &[ChangeRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# keelson service datapath benchmark\n");
    let _ = writeln!(
        out,
        "- run: {} on Linux {}, {} CPUs, {} wall time",
        info.started,
        info.kernel,
        info.cpus,
        format_duration(info.wall)
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
        "- load average (1 min) before / after the run: {} / {}",
        load(info.load_average.0),
        load(info.load_average.1)
    );
    let _ = writeln!(
        out,
        "- each figure is the median of {} round(s); configurations interleaved within a round; \
         {} per measurement",
        info.rounds,
        format_duration(info.duration)
    );
    let _ = writeln!(
        out,
        "- short connections: {} workers, connect -> 64 B request -> 128 B reply -> close; \
         latency: {} persistent connections ping-ponging 64 B / 128 B; throughput: one iperf3 TCP \
         stream; {}",
        info.workers,
        info.connections,
        if info.pinned {
            "clients pinned to CPU 0, servers to CPU 1 (the node's forwarding runs in softirq \
             on whichever CPU sends)"
        } else {
            "clients and servers placed by the scheduler"
        }
    );
    let _ = writeln!(
        out,
        "- every Service has 10 backends from a pool of {} addresses; the measured Service is the \
         last one created; ratios are to `{BASELINE}` at the same scale (rates: higher is better, \
         latencies: lower is better)",
        info.pool
    );
    for (name, what) in &info.legend {
        let _ = writeln!(out, "- `{name}`: {what}");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| Services | datapath | conn/s | × direct | p50 µs | × direct | p99 µs | × direct | \
         iperf3 Gbit/s | × direct | errors | setup | steal % |"
    );
    let _ = writeln!(
        out,
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for row in rows {
        let m = row.medians();
        let r = baseline_of(rows, row.services)
            .map(|b| ratios(&m, &b.medians()))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.services,
            row.datapath,
            num(m.conn_rate, 0),
            num(r.conn_rate, 2),
            num(m.p50_us, 1),
            num(r.p50_us, 2),
            num(m.p99_us, 1),
            num(r.p99_us, 2),
            num(m.gbps, 2),
            num(r.gbps, 2),
            row.samples.errors,
            median(&row.samples.setup_s).map_or_else(
                || "-".to_owned(),
                |s| format_duration(Duration::from_secs_f64(s))
            ),
            num(median(&row.samples.steal), 1),
        );
    }
    if !changes.is_empty() {
        let _ = writeln!(out, "\n## Applying one endpoint change\n");
        let _ = writeln!(
            out,
            "One Service (the last one created) loses one of its backends, with every Service \
             loaded.\n"
        );
        let _ = writeln!(
            out,
            "| datapath | Services | what is timed | median | min | max | n |"
        );
        let _ = writeln!(out, "|---|---:|---|---:|---:|---:|---:|");
        for c in changes {
            let (median, min, max, n) = match (&c.spread, c.stopped_after) {
                (Some(s), _) => (
                    format_duration(s.median),
                    format_duration(s.min),
                    format_duration(s.max),
                    s.count.to_string(),
                ),
                (None, Some(after)) => (
                    format!("> {} (stopped)", format_duration(after)),
                    "-".to_owned(),
                    "-".to_owned(),
                    "0".to_owned(),
                ),
                (None, None) => (
                    "-".to_owned(),
                    "-".to_owned(),
                    "-".to_owned(),
                    "0".to_owned(),
                ),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {median} | {min} | {max} | {n} |",
                c.datapath, c.services, c.method,
            );
        }
    }
    out
}

/// `value` with `decimals` decimals, thousands separated by a thin space for whole numbers;
/// `-` when missing.
pub fn num(value: Option<f64>, decimals: usize) -> String {
    let Some(v) = value else {
        return "-".to_owned();
    };
    if decimals == 0 {
        let whole = format!("{:.0}", v.abs());
        let mut grouped = String::new();
        for (i, c) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i) % 3 == 0 {
                grouped.push('\u{202f}');
            }
            grouped.push(c);
        }
        if v < 0.0 {
            grouped.insert(0, '-');
        }
        grouped
    } else {
        format!("{v:.decimals$}")
    }
}

/// A duration in the unit that suits it: `850 ns`, `12.3 µs`, `4.56 ms`, `17.2 s`, `3 min 04 s`.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs >= 120.0 {
        let whole = d.as_secs();
        format!("{} min {:02} s", whole / 60, whole % 60)
    } else if secs >= 1.0 {
        format!("{secs:.1} s")
    } else if secs >= 1e-3 {
        format!("{:.2} ms", secs * 1e3)
    } else if secs >= 1e-6 {
        format!("{:.1} µs", secs * 1e6)
    } else {
        format!("{} ns", d.as_nanos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(services: usize, datapath: &str, rate: &[f64], p50: &[f64], gbps: &[f64]) -> Row {
        Row {
            services,
            datapath: datapath.to_owned(),
            samples: Samples {
                conn_rate: rate.to_vec(),
                p50_us: p50.to_vec(),
                p99_us: p50.iter().map(|p| p * 3.0).collect(),
                gbps: gbps.to_vec(),
                errors: 0,
                setup_s: vec![],
                steal: vec![5.0, 7.0, 9.0],
            },
        }
    }

    fn info() -> RunInfo {
        RunInfo {
            started: "2025-01-01T00:00:00Z".into(),
            kernel: "6.18.0".into(),
            cpus: 2,
            pinned: true,
            duration: Duration::from_secs(3),
            rounds: 3,
            workers: 4,
            connections: 2,
            pool: 10,
            steal_percent: Some(12.34),
            load_average: (Some(0.5), None),
            wall: Duration::from_secs(400),
            legend: vec![("direct".into(), "the client connects to a pod IP".into())],
        }
    }

    #[test]
    fn ratios_are_to_the_baseline_at_the_same_scale() {
        let rows = [
            row(
                1,
                "direct",
                &[10_000.0, 12_000.0, 11_000.0],
                &[50.0],
                &[10.0],
            ),
            row(1, "iptables", &[5_500.0], &[100.0], &[9.0]),
            row(1000, "direct", &[20_000.0], &[40.0], &[20.0]),
            row(1000, "iptables", &[5_000.0], &[80.0], &[]),
        ];
        let base = baseline_of(&rows, 1000).expect("baseline").medians();
        let r = ratios(&rows[3].medians(), &base);
        assert_eq!(r.conn_rate, Some(0.25));
        assert_eq!(r.p50_us, Some(2.0));
        assert_eq!(r.gbps, None, "no sample, no ratio");
        let r1 = ratios(&rows[1].medians(), &rows[0].medians());
        assert_eq!(r1.conn_rate, Some(0.5), "median of the baseline's rounds");
    }

    #[test]
    fn the_table_has_absolute_figures_ratios_and_the_steal() {
        let rows = [
            row(1, "direct", &[11_000.0], &[50.0], &[10.0]),
            row(1, "nftables", &[5_500.0], &[75.0], &[9.0]),
        ];
        let mut spread = Spread::of(&[Duration::from_micros(12)]).expect("one timing");
        spread.count = 20;
        let changes = [
            ChangeRow {
                datapath: "socket-lb".into(),
                services: 10_000,
                method: "`LoadBalancer::update`".into(),
                spread: Some(spread),
                stopped_after: None,
            },
            ChangeRow {
                datapath: "iptables".into(),
                services: 10_000,
                method: "full sync".into(),
                spread: None,
                stopped_after: Some(Duration::from_secs(60)),
            },
        ];
        let text = render_markdown(&info(), &rows, &changes);
        assert!(text.contains("CPU steal over the run: 12.3 %"), "{text}");
        assert!(text.contains("before / after the run: 0.50 / ?"), "{text}");
        assert!(text.contains("| Services | datapath | conn/s |"), "{text}");
        assert!(
            text.contains(
                "| 1 | direct | 11\u{202f}000 | 1.00 | 50.0 | 1.00 | 150.0 | 1.00 | 10.00 | 1.00 | 0 | - | 7.0 |"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "| 1 | nftables | 5\u{202f}500 | 0.50 | 75.0 | 1.50 | 225.0 | 1.50 | 9.00 | 0.90 |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| socket-lb | 10000 | `LoadBalancer::update` | 12.0 µs |"),
            "{text}"
        );
        assert!(text.contains("| 20 |"), "{text}");
        assert!(
            text.contains("| iptables | 10000 | full sync | > 60.0 s (stopped) | - | - | 0 |"),
            "{text}"
        );
        assert!(text.contains("- `direct`: the client connects to a pod IP"));
        // Every table line has the same number of cells as its header.
        let cells = |l: &str| l.matches('|').count();
        let main: Vec<&str> = text.lines().filter(|l| l.starts_with("| ")).collect();
        assert!(main.iter().take(3).all(|l| cells(l) == 14), "{main:?}");
    }

    #[test]
    fn numbers_and_durations_read_well() {
        assert_eq!(num(Some(1_234_567.4), 0), "1\u{202f}234\u{202f}567");
        assert_eq!(num(Some(999.6), 0), "1\u{202f}000");
        assert_eq!(num(Some(12.0), 0), "12");
        assert_eq!(num(Some(0.987), 2), "0.99");
        assert_eq!(num(None, 2), "-");
        assert_eq!(format_duration(Duration::from_nanos(850)), "850 ns");
        assert_eq!(format_duration(Duration::from_nanos(12_340)), "12.3 µs");
        assert_eq!(format_duration(Duration::from_micros(4_560)), "4.56 ms");
        assert_eq!(format_duration(Duration::from_millis(17_240)), "17.2 s");
        assert_eq!(format_duration(Duration::from_secs(184)), "3 min 04 s");
    }
}

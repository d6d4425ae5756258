//! The policy benchmark's figures and its Markdown table. Pure: no IO.

use std::{fmt, fmt::Write as _, time::Duration};

use super::Measurement;
use crate::{
    report::{format_duration, num},
    stats::{Spread, median},
};

/// The configurations compared, in the order they take turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    /// No policy program and no rule: the node only routes (the baseline).
    None,
    /// keelson's TC programs on both pod veths, no pod selected by any policy (`ENDPOINTS`
    /// emptied): the datapath as it is without NetworkPolicy, the eBPF rows' own baseline.
    EbpfUnpoliced,
    /// keelson's TC programs on both pod veths with the compiled policy maps.
    Ebpf,
    /// kube-router's iptables + ipset layout in the node namespace.
    Iptables,
}

impl Config {
    /// Every configuration, baseline first.
    pub const ALL: [Self; 4] = [Self::None, Self::EbpfUnpoliced, Self::Ebpf, Self::Iptables];

    /// The name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::EbpfUnpoliced => "ebpf-unpoliced",
            Self::Ebpf => "ebpf",
            Self::Iptables => "iptables",
        }
    }
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// One configuration at one scale: its figures per round.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Number of NetworkPolicies.
    pub policies: usize,
    /// The configuration.
    pub config: Config,
    /// Short connections per second, per round.
    pub conn_rate: Vec<f64>,
    /// Persistent request/response exchanges per second, per round.
    pub req_rate: Vec<f64>,
    /// Persistent exchanges' median latency, per round.
    pub p50_us: Vec<f64>,
    /// Failed exchanges over all rounds.
    pub errors: u64,
    /// Setup times, in seconds.
    pub setup_s: Vec<f64>,
    /// CPU steal per round, in percent.
    pub steal: Vec<f64>,
}

impl Row {
    /// An empty row.
    pub fn new(policies: usize, config: Config) -> Self {
        Self {
            policies,
            config,
            conn_rate: Vec::new(),
            req_rate: Vec::new(),
            p50_us: Vec::new(),
            errors: 0,
            setup_s: Vec::new(),
            steal: Vec::new(),
        }
    }

    /// Adds one round's measurement.
    pub(crate) fn push(&mut self, m: &Measurement) {
        self.conn_rate.push(m.short.rate());
        self.req_rate.push(m.persistent.rate());
        self.p50_us.push(m.persistent.latency_us.p50);
        self.errors += m.short.errors + m.persistent.errors;
        if let Some(steal) = m.steal {
            self.steal.push(steal);
        }
    }
}

/// Round-by-round ratios of `values` to `baseline` (rounds without both are skipped): their
/// median, minimum and maximum.
pub fn ratio_spread(values: &[f64], baseline: &[f64]) -> Option<(f64, f64, f64)> {
    let ratios: Vec<f64> = values
        .iter()
        .zip(baseline)
        .filter(|(_, b)| **b > 0.0)
        .map(|(v, b)| v / b)
        .collect();
    let min = ratios.iter().copied().reduce(f64::min)?;
    let max = ratios.iter().copied().reduce(f64::max)?;
    Some((median(&ratios)?, min, max))
}

fn ratio_cell(values: &[f64], baseline: &[f64]) -> String {
    match ratio_spread(values, baseline) {
        Some((m, lo, hi)) if values.len() > 1 => format!("{m:.2} ({lo:.2}–{hi:.2})"),
        Some((m, _, _)) => format!("{m:.2}"),
        None => "-".to_owned(),
    }
}

/// What each configuration holds at one scale.
#[derive(Debug, Clone, PartialEq)]
pub struct Sizes {
    /// Number of NetworkPolicies.
    pub policies: usize,
    /// Security identities the compiler allocated.
    pub identities: usize,
    /// POLICY map entries.
    pub policy_entries: usize,
    /// ENDPOINTS map entries (policed local pods).
    pub endpoints: usize,
    /// IPCACHE entries.
    pub ipcache_entries: usize,
    /// Compile + writes into empty maps.
    pub ebpf_load: Duration,
    /// Of which the compile.
    pub ebpf_compile: Duration,
    /// `-A` lines of the filter table.
    pub iptables_rules: usize,
    /// `KUBE-NWPLCY-` chains.
    pub policy_chains: usize,
    /// `KUBE-POD-FW-` chains.
    pub pod_chains: usize,
    /// ipsets.
    pub ipsets: usize,
    /// Entries over all ipsets.
    pub ipset_members: usize,
    /// Generating the layout.
    pub iptables_render: Duration,
}

/// One way of applying one policy change, timed.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRow {
    /// The configuration.
    pub config: Config,
    /// What is timed.
    pub method: String,
    /// The timings.
    pub spread: Option<Spread>,
    /// Set when the timing was cut short.
    pub stopped_after: Option<Duration>,
}

/// The run's circumstances.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// Start time, RFC 3339 UTC.
    pub started: String,
    /// `uname -r`.
    pub kernel: String,
    /// CPUs.
    pub cpus: usize,
    /// Whether clients and servers were pinned.
    pub pinned: bool,
    /// Per measurement.
    pub duration: Duration,
    /// Rounds.
    pub rounds: usize,
    /// Short-connection workers.
    pub workers: usize,
    /// Persistent connections.
    pub connections: usize,
    /// CPU steal over the run.
    pub steal_percent: Option<f64>,
    /// 1-minute load average before and after.
    pub load_average: (Option<f64>, Option<f64>),
    /// Wall time.
    pub wall: Duration,
    /// `--quick`.
    pub quick: bool,
}

/// The Markdown report.
pub fn render_markdown(
    info: &RunInfo,
    rows: &[Row],
    sizes: &[Sizes],
    changes: &[ChangeRow],
) -> String {
    let mut out = String::from("# keelson NetworkPolicy benchmark\n\n");
    let _ = writeln!(
        out,
        "- run: {} on Linux {}, {} CPUs, {} wall time{}",
        info.started,
        info.kernel,
        info.cpus,
        format_duration(info.wall),
        if info.quick { " (`--quick`)" } else { "" }
    );
    let _ = writeln!(
        out,
        "- CPU steal over the run: {}",
        info.steal_percent
            .map_or_else(|| "?".to_owned(), |s| format!("{s:.1} %"))
    );
    let _ = writeln!(
        out,
        "- load average (1 min) before / after the run: {} / {}",
        num(info.load_average.0, 2),
        num(info.load_average.1, 2)
    );
    let _ = writeln!(
        out,
        "- each rate is the median of {} round(s); configurations interleaved within a round \
         (none, ebpf-unpoliced, ebpf, iptables); {:.1} s per measurement; ratios are the median \
         of each round's ratio to the baseline (`none`, or the same datapath without policy) \
         in that round, (min–max) over rounds",
        info.rounds,
        info.duration.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "- short connections: {} workers, connect -> 64 B request -> 128 B reply -> close; \
         persistent: {} connections ping-ponging 64 B / 128 B; clients and servers {}",
        info.workers,
        info.connections,
        if info.pinned {
            "pinned to CPUs 0 and 1"
        } else {
            "placed by the scheduler"
        }
    );
    out.push_str(
        "- the cluster: 1000 pods (3 real: client, server, guarded; 997 API objects, a tenth of \
         them on this node) in 21 namespaces, N NetworkPolicies generated by index (12/20 app \
         to app in a namespace, 3/20 with a namespaceSelector, 2/20 egress with an ipBlock, \
         2/20 ingress from an ipBlock with an except, 1/20 more ingress to the bench's own \
         pods); policy 0 allows client -> server:8080 (ingress and egress), policy 1 isolates \
         the guarded pod, which every measurement checks the client cannot reach\n\
         - `none`: no policy program, no rule: the node namespace only routes\n\
         - `ebpf-unpoliced`: the same TC programs with no pod selected by any policy (the \
         ENDPOINTS map emptied for the measurement): keelson without NetworkPolicy, the \
         baseline of `ebpf`'s `× no policy`\n\
         - `ebpf`: keelson's `tc_from_pod` / `tc_to_pod` on both pod veths, with the maps the \
         agent's own compiler (`PolicyState::sync`) wrote for the model (IPCACHE, ENDPOINTS, \
         POLICY; POLICY_CT tracks allowed flows)\n\
         - `iptables`: kube-router's iptables + ipset layout (KUBE-ROUTER-FORWARD -> \
         KUBE-POD-FW-* per policed local pod -> KUBE-NWPLCY-* per policy, ipsets per policy \
         and rule, `RELATED,ESTABLISHED` accepted first in each pod chain), iptables 1.8 with \
         the nf_tables backend, in the node namespace; setup = `ipset restore` + \
         `iptables-restore`\n\n",
    );
    out.push_str(
        "| policies | config | conn/s | × none | × no policy | req/s | × none | × no policy | \
         p50 µs | errors | setup | steal % |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in rows {
        let baseline = rows
            .iter()
            .find(|r| r.policies == row.policies && r.config == Config::None);
        let (conn_base, req_base) =
            baseline.map_or((&[][..], &[][..]), |b| (&b.conn_rate[..], &b.req_rate[..]));
        // The same datapath without NetworkPolicy: eBPF without policed pods; iptables
        // without rules is `none`.
        let unpoliced = match row.config {
            Config::Ebpf => Config::EbpfUnpoliced,
            Config::Iptables => Config::None,
            other => other,
        };
        let own = rows
            .iter()
            .find(|r| r.policies == row.policies && r.config == unpoliced);
        let (conn_own, req_own) =
            own.map_or((&[][..], &[][..]), |b| (&b.conn_rate[..], &b.req_rate[..]));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.policies,
            row.config,
            num(median(&row.conn_rate), 0),
            ratio_cell(&row.conn_rate, conn_base),
            ratio_cell(&row.conn_rate, conn_own),
            num(median(&row.req_rate), 0),
            ratio_cell(&row.req_rate, req_base),
            ratio_cell(&row.req_rate, req_own),
            num(median(&row.p50_us), 1),
            row.errors,
            median(&row.setup_s).map_or_else(
                || "-".to_owned(),
                |s| format_duration(Duration::from_secs_f64(s))
            ),
            num(median(&row.steal), 1),
        );
    }
    out.push_str(
        "\n## What each layout holds\n\n| policies | identities | POLICY entries | endpoints | \
         IPCACHE | eBPF load (compile) | iptables rules | policy chains | pod chains | ipsets | \
         ipset entries | layout generated in |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\
         ---:|---:|---:|\n",
    );
    for s in sizes {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} | {} | {} | {} |",
            s.policies,
            s.identities,
            s.policy_entries,
            s.endpoints,
            s.ipcache_entries,
            format_duration(s.ebpf_load),
            format_duration(s.ebpf_compile),
            s.iptables_rules,
            s.policy_chains,
            s.pod_chains,
            s.ipsets,
            s.ipset_members,
            format_duration(s.iptables_render),
        );
    }
    if !changes.is_empty() {
        let at = sizes.iter().map(|s| s.policies).max().unwrap_or(0);
        let _ = write!(
            out,
            "\n## Applying one policy change\n\nOne peer selector (`app=app-07` pods of `web` \
             namespaces) added to policy 0's ingress rule, then removed, alternately, with all \
             {at} policies loaded; every change is timed.\n\n| config | what is timed | median \
             | min | max | n |\n|---|---|---:|---:|---:|---:|\n"
        );
        for c in changes {
            let cells = match (&c.spread, c.stopped_after) {
                (Some(s), _) => format!(
                    "{} | {} | {} | {}",
                    format_duration(s.median),
                    format_duration(s.min),
                    format_duration(s.max),
                    s.count
                ),
                (None, Some(after)) => {
                    format!("> {} (stopped) | - | - | 0", format_duration(after))
                }
                (None, None) => "- | - | - | 0".to_owned(),
            };
            let _ = writeln!(out, "| {} | {} | {cells} |", c.config, c.method);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_per_round_and_the_table_has_every_row() {
        assert_eq!(
            ratio_spread(&[90.0, 100.0, 80.0], &[100.0, 100.0, 100.0]),
            Some((0.9, 0.8, 1.0))
        );
        assert_eq!(ratio_spread(&[1.0], &[0.0]), None);
        let mut rows = Vec::new();
        for config in Config::ALL {
            let mut row = Row::new(100, config);
            row.conn_rate = vec![1000.0, 1200.0];
            row.req_rate = vec![5000.0, 5000.0];
            if config == Config::Iptables {
                row.conn_rate = vec![500.0, 800.0];
            }
            if config == Config::EbpfUnpoliced {
                row.conn_rate = vec![2000.0, 2400.0];
            }
            rows.push(row);
        }
        let info = RunInfo {
            started: "2026-01-01T00:00:00Z".to_owned(),
            kernel: "6.1".to_owned(),
            cpus: 2,
            pinned: false,
            duration: Duration::from_secs(2),
            rounds: 2,
            workers: 4,
            connections: 2,
            steal_percent: Some(0.5),
            load_average: (Some(1.0), Some(2.0)),
            wall: Duration::from_secs(60),
            quick: false,
        };
        let changes = [ChangeRow {
            config: Config::Ebpf,
            method: "sync".to_owned(),
            spread: Spread::of(&[Duration::from_micros(400), Duration::from_micros(600)]),
            stopped_after: None,
        }];
        let md = render_markdown(&info, &rows, &[], &changes);
        assert!(
            md.contains(
                "| 100 | none | 1\u{202f}100 | 1.00 (1.00–1.00) | 1.00 (1.00–1.00) | 5\u{202f}000 |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| 100 | iptables | 650 | 0.58 (0.50–0.67) | 0.58 (0.50–0.67) |"),
            "{md}"
        );
        assert!(
            md.contains("| 100 | ebpf | 1\u{202f}100 | 1.00 (1.00–1.00) | 0.50 (0.50–0.50) |"),
            "{md}"
        );
        assert!(
            md.contains("| ebpf | sync | 500.0 µs | 400.0 µs | 600.0 µs | 2 |"),
            "{md}"
        );
    }
}

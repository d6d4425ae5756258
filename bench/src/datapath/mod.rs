//! `keelson-bench datapath`: the same ClusterIP Service served by each [`Datapath`], side by
//! side in one run, at several numbers of Services.
//!
//! For each scale the rules are generated once; then, round after round, every configuration
//! in turn is set up, measured (short connections, request/response latency on persistent
//! connections, iperf3 bulk throughput) and torn down, so that the configurations interleave
//! (A B C D A B C D …) and a slow stretch of the shared, hypervisor-stolen CPUs hits them all
//! alike. Figures are medians over rounds, reported with their ratio to `direct`. At the largest
//! scale the time to apply one endpoint change is measured too.

mod config;
pub(crate) mod lab;
pub(crate) use config::attach_tc_in_node;
pub(crate) use lab::run_bounded;
mod scale;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

pub use config::{ChangeLimits, Datapath};
use lab::Lab;
use scale::Scale;

use crate::{
    loadgen::{LoadReport, parse_report},
    plot::{self, PlotData},
    report::{self, ChangeRow, Row, RunInfo, Samples},
    services::{HTTP_PORT_NAME, IPERF_PORT_NAME, ServiceSpec},
    stats::CpuTimes,
};

/// Flags of `keelson-bench datapath`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Seconds per measurement [default: 2; 1 with --quick].
    #[arg(long, env = "KEELSON_BENCH_DURATION")]
    pub duration: Option<f64>,
    /// Rounds over all configurations; figures are medians over rounds [default: 3; 1 with
    /// --quick].
    #[arg(long, env = "KEELSON_BENCH_ROUNDS")]
    pub rounds: Option<usize>,
    /// Numbers of Services, comma-separated [default: 1,1000,10000; 1,1000 with --quick].
    #[arg(long, env = "KEELSON_BENCH_SCALES", value_delimiter = ',')]
    pub scales: Option<Vec<usize>>,
    /// A quick look: 1 s measurements, 1 round, 1 and 1000 Services.
    #[arg(long, env = "KEELSON_BENCH_QUICK")]
    pub quick: bool,
    /// Configurations to compare, comma-separated; `direct` (the baseline) is always measured.
    #[arg(long, env = "KEELSON_BENCH_DATAPATHS", value_delimiter = ',', value_enum,
          default_values_t = Datapath::ALL)]
    pub datapaths: Vec<Datapath>,
    /// Concurrent short-connection workers.
    #[arg(long, env = "KEELSON_BENCH_WORKERS", default_value_t = 4)]
    pub workers: usize,
    /// Persistent connections for the latency measurement.
    #[arg(long, env = "KEELSON_BENCH_CONNECTIONS", default_value_t = 2)]
    pub connections: usize,
    /// Backend addresses in the pool (at least 10: every Service has 10 backends).
    #[arg(long, env = "KEELSON_BENCH_BACKEND_POOL", default_value_t = 10)]
    pub backend_pool: usize,
    /// Endpoint changes timed per configuration at the largest scale (fewer if they take over
    /// 20 s in all).
    #[arg(long, env = "KEELSON_BENCH_CHANGE_REPEATS", default_value_t = 20)]
    pub change_repeats: usize,
    /// Pin clients to CPU 0 and servers to CPU 1 (more repeatable on an otherwise idle
    /// machine; worse when other work keeps one of the CPUs busy, so off by default).
    #[arg(long, env = "KEELSON_BENCH_PIN")]
    pub pin: bool,
    /// Seconds after which a kube-proxy iptables full sync at the largest scale is stopped (it
    /// is reported as "> limit").
    #[arg(long, env = "KEELSON_BENCH_FULL_SYNC_LIMIT", default_value_t = 30)]
    pub full_sync_limit: u64,
    /// Where `bench-datapath.md` and `bench-datapath.png` go.
    #[arg(long, env = "KEELSON_BENCH_OUTPUT_DIR", default_value = "results")]
    pub output_dir: PathBuf,
}

/// The run's parameters after defaults.
#[derive(Debug, Clone)]
struct Plan {
    duration: Duration,
    rounds: usize,
    scales: Vec<usize>,
    datapaths: Vec<Datapath>,
}

impl Plan {
    fn new(options: &Options) -> anyhow::Result<Self> {
        let duration = options
            .duration
            .unwrap_or(if options.quick { 1.0 } else { 2.0 });
        if !(0.2..=600.0).contains(&duration) {
            bail!("--duration must be between 0.2 and 600 seconds");
        }
        let rounds = options.rounds.unwrap_or(if options.quick { 1 } else { 3 });
        let scales = options.scales.clone().unwrap_or_else(|| {
            if options.quick {
                vec![1, 1000]
            } else {
                vec![1, 1000, 10_000]
            }
        });
        if rounds == 0 || scales.is_empty() || scales.contains(&0) {
            bail!("--rounds and every --scales value must be at least 1");
        }
        if scales.iter().any(|&s| s > 60_000) {
            bail!("at most 60000 Services: keelson's maps hold 65536 frontends");
        }
        if !(10..=crate::services::MAX_POOL).contains(&options.backend_pool) {
            bail!(
                "--backend-pool must be between 10 and {}",
                crate::services::MAX_POOL
            );
        }
        let mut datapaths = vec![Datapath::Direct];
        for dp in &options.datapaths {
            if !datapaths.contains(dp) {
                datapaths.push(*dp);
            }
        }
        Ok(Self {
            duration: Duration::from_secs_f64(duration),
            rounds,
            scales,
            datapaths,
        })
    }
}

/// Runs the benchmark and writes its table and plot.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let plan = Plan::new(options)?;
    let stop = crate::interrupt_flag()?;
    let bin_dir = crate::own_dir()?;
    std::fs::create_dir_all(&options.output_dir)
        .with_context(|| format!("cannot create {}", options.output_dir.display()))?;
    let started = Instant::now();
    let started_utc = utc_now();
    let cpu_before = read_cpu()?;
    let load_before = load_average();
    println!(
        "==> keelson-bench datapath: {} at {:?} Services, {} round(s) of {:.1} s measurements",
        plan.datapaths
            .iter()
            .map(|d| d.name())
            .collect::<Vec<_>>()
            .join(", "),
        plan.scales,
        plan.rounds,
        plan.duration.as_secs_f64()
    );
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let pinning = (options.pin && cpus >= 2).then_some(lab::Pinning {
        client: 0,
        server: 1,
    });
    let mut lab = Lab::new(bin_dir, options.backend_pool, pinning, stop)?;
    let (rows, changes) = measure_all(&mut lab, &plan, options)?;
    drop(lab);
    let cpu_after = read_cpu()?;

    let info = RunInfo {
        started: started_utc,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        cpus,
        pinned: pinning.is_some(),
        duration: plan.duration,
        rounds: plan.rounds,
        workers: options.workers,
        connections: options.connections,
        pool: options.backend_pool,
        steal_percent: cpu_before.steal_percent_until(&cpu_after),
        load_average: (load_before, load_average()),
        wall: started.elapsed(),
        legend: plan
            .datapaths
            .iter()
            .map(|d| (d.name().to_owned(), d.description().to_owned()))
            .collect(),
    };
    let markdown = report::render_markdown(&info, &rows, &changes);
    let md_path = options.output_dir.join("bench-datapath.md");
    std::fs::write(&md_path, &markdown)
        .with_context(|| format!("cannot write {}", md_path.display()))?;
    let png_path = options.output_dir.join("bench-datapath.png");
    plot::write_png(
        &PlotData::from_rows(&rows),
        "keelson service datapath: ratio to direct (pod IP), medians",
        &png_path,
    )?;
    println!("\n{markdown}");
    println!(
        "==> wrote {} and {} ({} in total)",
        md_path.display(),
        png_path.display(),
        report::format_duration(started.elapsed())
    );
    Ok(())
}

fn measure_all(
    lab: &mut Lab,
    plan: &Plan,
    options: &Options,
) -> anyhow::Result<(Vec<Row>, Vec<ChangeRow>)> {
    let mut rows: Vec<Row> = Vec::new();
    let mut changes = Vec::new();
    let largest = plan.scales.iter().copied().max().unwrap_or(0);
    for &count in &plan.scales {
        lab.check_stop()?;
        let generated = Instant::now();
        let scale = Scale::new(count, options.backend_pool);
        println!(
            "==> {count} Services: generated the Services and kube-proxy's rules ({} iptables \
             lines, {} nft batches) in {}",
            scale.iptables.lines().count(),
            scale.nft_batches.len(),
            report::format_duration(generated.elapsed())
        );
        let first = rows.len();
        for &dp in &plan.datapaths {
            let mut samples = Samples::default();
            if let Some(took) = dp.prepare(lab, &scale)? {
                println!(
                    "    {dp}: loaded {count} Services in {}",
                    report::format_duration(took)
                );
                samples.setup_s.push(took.as_secs_f64());
            }
            rows.push(Row {
                services: count,
                datapath: dp.name().to_owned(),
                samples,
            });
        }
        for round in 1..=plan.rounds {
            for (i, &dp) in plan.datapaths.iter().enumerate() {
                lab.check_stop()?;
                let loaded = dp.setup(lab, &scale);
                let measured = loaded.and_then(|loaded| {
                    measure_one(lab, dp, &scale, plan, options).map(|m| (loaded, m))
                });
                let removed = dp.teardown(lab);
                let (loaded, m) = measured.with_context(|| format!("{dp} at {count} Services"))?;
                removed.with_context(|| format!("tearing down {dp}"))?;
                let samples = &mut rows[first + i].samples;
                if let Some(took) = loaded {
                    samples.setup_s.push(took.as_secs_f64());
                }
                samples.conn_rate.push(m.short.rate());
                samples.p50_us.push(m.persistent.latency_us.p50);
                samples.p99_us.push(m.persistent.latency_us.p99);
                samples.gbps.push(m.gbps);
                samples.errors += m.short.errors + m.persistent.errors;
                if let Some(steal) = m.steal {
                    samples.steal.push(steal);
                }
                println!(
                    "    [{count} Services, round {round}/{}] {dp:<9} {}{:>8.0} conn/s ({} err, \
                     {} backends) | p50 {:>7.1} µs p99 {:>7.1} µs | {:>6.2} Gbit/s | steal {}",
                    plan.rounds,
                    loaded.map_or_else(String::new, |d| format!(
                        "setup {} | ",
                        report::format_duration(d)
                    )),
                    m.short.rate(),
                    m.short.errors,
                    m.short.backends.len(),
                    m.persistent.latency_us.p50,
                    m.persistent.latency_us.p99,
                    m.gbps,
                    m.steal
                        .map_or_else(|| "?".to_owned(), |s| format!("{s:.1} %")),
                );
                if let Some(error) = m
                    .short
                    .first_error
                    .as_ref()
                    .or(m.persistent.first_error.as_ref())
                {
                    println!("      first error: {error}");
                }
            }
        }
        if count == largest {
            println!("==> {count} Services: timing one endpoint change");
            let limits = ChangeLimits {
                repeats: options.change_repeats,
                full_sync: Duration::from_secs(options.full_sync_limit.max(1)),
            };
            for &dp in &plan.datapaths {
                lab.check_stop()?;
                for change in dp.endpoint_change(lab, &scale, &limits)? {
                    match (&change.spread, change.stopped_after) {
                        (Some(s), _) => println!(
                            "    {dp}: median {} (min {}, max {}, n={}): {}",
                            report::format_duration(s.median),
                            report::format_duration(s.min),
                            report::format_duration(s.max),
                            s.count,
                            change.method
                        ),
                        (None, after) => println!(
                            "    {dp}: stopped after {}: {}",
                            after.map_or_else(|| "?".to_owned(), report::format_duration),
                            change.method
                        ),
                    }
                    changes.push(change);
                }
            }
        }
    }
    Ok((rows, changes))
}

/// One configuration's figures in one round.
#[derive(Debug)]
struct Measurement {
    short: LoadReport,
    persistent: LoadReport,
    gbps: f64,
    steal: Option<f64>,
}

fn measure_one(
    lab: &Lab,
    dp: Datapath,
    scale: &Scale,
    plan: &Plan,
    options: &Options,
) -> anyhow::Result<Measurement> {
    let service = scale.measured();
    let (targets, iperf_target) = targets(dp, service)?;
    // The configuration must work before it is measured: every exchange answered, by more than
    // one backend (a VIP nothing translates goes nowhere: the node blackholes the range).
    let check = loadgen(lab, "short", &targets, Duration::from_secs(5), 1, 20)?;
    if check.errors > 0 || check.exchanges < 20 {
        bail!(
            "{dp} does not serve the Service: {} of 20 exchanges failed ({})",
            check.errors,
            check.first_error.as_deref().unwrap_or("too few exchanges")
        );
    }
    if check.backends.len() < 2 {
        bail!(
            "{dp}: 20 connections all reached {:?}; the Service should spread them",
            check.backends
        );
    }
    let cpu_before = read_cpu()?;
    lab.flush_conntrack()?;
    let short = loadgen(
        lab,
        "short",
        &targets,
        plan.duration,
        options.workers,
        u64::MAX / 4,
    )?;
    lab.flush_conntrack()?;
    let persistent = loadgen(
        lab,
        "persistent",
        &targets,
        plan.duration,
        options.connections,
        u64::MAX / 4,
    )?;
    lab.flush_conntrack()?;
    let gbps = iperf3(lab, iperf_target, plan.duration)?;
    let steal = cpu_before.steal_percent_until(&read_cpu()?);
    Ok(Measurement {
        short,
        persistent,
        gbps,
        steal,
    })
}

/// Where clients connect: the cluster IP, or the backends themselves for `direct`.
fn targets(
    dp: Datapath,
    service: &ServiceSpec,
) -> anyhow::Result<(Vec<std::net::SocketAddrV4>, std::net::SocketAddrV4)> {
    let http = service
        .port(HTTP_PORT_NAME)
        .context("the measured Service has no http port")?;
    let iperf = service
        .port(IPERF_PORT_NAME)
        .context("the measured Service has no iperf3 port")?;
    Ok(if dp.via_cluster_ip() {
        (
            vec![std::net::SocketAddrV4::new(service.vip, http.port)],
            std::net::SocketAddrV4::new(service.vip, iperf.port),
        )
    } else {
        (
            http.backends.clone(),
            *iperf.backends.first().context("no iperf3 backend")?,
        )
    })
}

/// Runs `keelson-loadgen` in `mode` against `targets` from the client namespace.
pub(crate) fn loadgen(
    lab: &Lab,
    mode: &str,
    targets: &[std::net::SocketAddrV4],
    duration: Duration,
    threads: usize,
    max_exchanges: u64,
) -> anyhow::Result<LoadReport> {
    let mut args = vec![mode.to_owned()];
    for target in targets {
        args.push("--target".to_owned());
        args.push(target.to_string());
    }
    args.extend([
        "--duration-ms".to_owned(),
        duration.as_millis().to_string(),
        "--threads".to_owned(),
        threads.to_string(),
        "--max-exchanges".to_owned(),
        max_exchanges.to_string(),
    ]);
    if let Some(pin) = lab.pinning {
        args.extend(["--cpu".to_owned(), pin.client.to_string()]);
    }
    let stdout = lab.run_client(
        &lab.binary("keelson-loadgen"),
        &args,
        duration + Duration::from_secs(20),
    )?;
    parse_report(&stdout)
}

/// One iperf3 TCP stream for `duration` (whole seconds, at least 1); Gbit/s received.
fn iperf3(lab: &Lab, target: std::net::SocketAddrV4, duration: Duration) -> anyhow::Result<f64> {
    let seconds = duration.as_secs_f64().ceil().max(1.0) as u64;
    let mut args: Vec<String> = [
        "--client",
        &target.ip().to_string(),
        "--port",
        &target.port().to_string(),
        "--time",
        &seconds.to_string(),
        "--connect-timeout",
        "3000",
        "--json",
    ]
    .map(str::to_owned)
    .to_vec();
    if let Some(pin) = lab.pinning {
        args.extend(["--affinity".to_owned(), pin.client.to_string()]);
    }
    let mut last_error = String::new();
    // The iperf3 server runs one test at a time and may still be finishing the previous one.
    for _ in 0..3 {
        lab.check_stop()?;
        let stdout = match lab.run_client("iperf3", &args, Duration::from_secs(seconds + 20)) {
            Ok(stdout) => stdout,
            Err(e) => {
                last_error = format!("{e:#}");
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
        };
        match parse_iperf3(&stdout) {
            Ok(gbps) => return Ok(gbps),
            Err(e) => {
                last_error = format!("{e:#}");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
    bail!("iperf3 to {target} failed: {last_error}")
}

/// The received throughput of an `iperf3 --json` client run, in Gbit/s.
pub(crate) fn parse_iperf3(stdout: &str) -> anyhow::Result<f64> {
    let value: serde_json::Value =
        serde_json::from_str(stdout).context("iperf3 did not print JSON")?;
    if let Some(error) = value.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3: {error}");
    }
    value
        .pointer("/end/sum_received/bits_per_second")
        .and_then(serde_json::Value::as_f64)
        .map(|bps| bps / 1e9)
        .context("iperf3's report has no end.sum_received.bits_per_second")
}

/// The one-minute load average.
pub(crate) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub(crate) fn read_cpu() -> anyhow::Result<CpuTimes> {
    let text = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    CpuTimes::parse(&text).context("/proc/stat has no aggregate cpu line")
}

/// Now, as RFC 3339 UTC (no time-zone database needed).
pub(crate) fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iperf3_json_gives_gigabits_per_second() {
        let json = r#"{"start": {}, "end": {"sum_sent": {"bits_per_second": 2.1e10},
                       "sum_received": {"bits_per_second": 2.0e10}}}"#;
        assert_eq!(parse_iperf3(json).expect("parses"), 20.0);
        let busy =
            r#"{"start": {}, "error": "the server is busy running a test. try again later"}"#;
        let error = parse_iperf3(busy).expect_err("an error");
        assert!(format!("{error:#}").contains("busy"), "{error:#}");
        assert!(parse_iperf3("iperf3: error").is_err());
    }

    #[test]
    fn dates_are_gregorian() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    }

    #[test]
    fn quick_mode_and_explicit_flags() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            options: Options,
        }
        let quick = Cli::parse_from(["x", "--quick"]).options;
        let plan = Plan::new(&quick).expect("valid");
        assert_eq!(plan.scales, [1, 1000]);
        assert_eq!((plan.rounds, plan.duration), (1, Duration::from_secs(1)));
        assert_eq!(plan.datapaths, Datapath::ALL);
        let custom = Cli::parse_from([
            "x",
            "--quick",
            "--scales",
            "5,50",
            "--datapaths",
            "nftables,socket-lb",
        ])
        .options;
        let plan = Plan::new(&custom).expect("valid");
        assert_eq!(plan.scales, [5, 50]);
        assert_eq!(
            plan.datapaths,
            [Datapath::Direct, Datapath::Nftables, Datapath::SocketLb],
            "direct is always measured, first"
        );
        let default = Plan::new(&Cli::parse_from(["x"]).options).expect("valid");
        assert_eq!(default.scales, [1, 1000, 10_000]);
        assert_eq!(
            (default.rounds, default.duration),
            (3, Duration::from_secs(2))
        );
        assert!(Plan::new(&Cli::parse_from(["x", "--scales", "0"]).options).is_err());
        assert!(Plan::new(&Cli::parse_from(["x", "--backend-pool", "5"]).options).is_err());
    }
}

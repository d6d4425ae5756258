//! `keelson-bench api`: the real `keelson-control-plane` on embedded SQLite and on a
//! single-member etcd, side by side: closed-loop create throughput and latency, latency at a
//! paced create rate, full-list latency at 10k objects, watch delivery latency with 100 and 1000
//! watchers, and the control plane's RSS. Writes `bench-api.md`.
//!
//! The create rates are quoted as ratios to raw etcd puts at the same concurrency in the same
//! run ([`anchor`]), and a store-level row times creates while the embedded store compacts
//! 100 000 revisions ([`compaction`]).
//!
//! Every request goes through kube-rs clients built from the admin kubeconfig the control plane
//! writes (HTTP/1.1 keep-alive pools), so the benchmark follows the server to HTTPS unchanged.
//! The clients run in this process on the same CPUs as the server; the table reports the CPU
//! both used during the create phase, so a client-bound figure shows as such.
//!
//! The closed-loop creates run once more per store after a realistic RBAC policy is loaded
//! ([`rbac`]): as the `system:masters` admin and as a user only RBAC allows, side by side,
//! with their ratio.

pub mod anchor;
pub mod compaction;
pub mod load;
pub mod procs;
pub mod rbac;
pub mod report;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::datapath::{load_average, read_cpu, utc_now};
use procs::{ControlPlane, CpuMeter, Etcd, Memory};
use report::{
    EtcdAnchor, Percentiles, RbacFigures, RunInfo, StoreFigures, ThroughputFigures, WatchFigures,
};

/// A store backend of the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// Embedded SQLite in the data directory.
    Sqlite,
    /// A single-member etcd on loopback that the benchmark starts.
    Etcd,
}

impl StoreKind {
    fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Etcd => "etcd",
        }
    }
}

/// Flags of `keelson-bench api`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// A quick look: 2000 objects, 3 s paced, 100 and 1000 watchers with 30 events.
    #[arg(long, env = "KEELSON_BENCH_QUICK")]
    pub quick: bool,
    /// Stores to measure, comma-separated.
    #[arg(long, value_delimiter = ',', value_enum, default_values_t = [StoreKind::Sqlite, StoreKind::Etcd])]
    pub stores: Vec<StoreKind>,
    /// Requests in flight for the closed-loop create phase.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Objects created in the closed-loop phase; they are the ones the full list returns
    /// [default: 10000; 2000 with --quick].
    #[arg(long)]
    pub objects: Option<usize>,
    /// Full lists timed [default: 20; 5 with --quick].
    #[arg(long)]
    pub list_rounds: Option<usize>,
    /// Paced create rate, per second.
    #[arg(long, default_value_t = 1000)]
    pub paced_rate: u32,
    /// Seconds of paced creates [default: 10; 3 with --quick].
    #[arg(long)]
    pub paced_seconds: Option<f64>,
    /// Watcher counts, comma-separated (the 10-watcher row is the 1000-watcher row's baseline).
    #[arg(long, value_delimiter = ',', default_values_t = [10, 100, 1000])]
    pub watchers: Vec<usize>,
    /// Writes each watcher should see [default: 100; 30 with --quick].
    #[arg(long)]
    pub watch_events: Option<usize>,
    /// Watchers of the delivery-throughput row (writes as fast as they go).
    #[arg(long, default_value_t = 100)]
    pub throughput_watchers: usize,
    /// Writes of the delivery-throughput row [default: 2000; 500 with --quick].
    #[arg(long)]
    pub throughput_events: Option<usize>,
    /// Milliseconds between the watched writes.
    #[arg(long, default_value_t = 20)]
    pub watch_interval_ms: u64,
    /// Revisions the embedded store compacts while creates run (0: skip that row).
    #[arg(long, default_value_t = 100_000)]
    pub compaction_revisions: usize,
    /// Skip the raw etcd puts the create rates are quoted against.
    #[arg(long)]
    pub no_anchor: bool,
    /// The control plane binary [default: keelson-control-plane next to this executable].
    #[arg(long)]
    pub control_plane: Option<PathBuf>,
    /// Where `bench-api.md` goes.
    #[arg(long, env = "KEELSON_BENCH_OUTPUT_DIR", default_value = "results")]
    pub output_dir: PathBuf,
}

struct Plan {
    objects: usize,
    list_rounds: usize,
    paced: Duration,
    watch_events: usize,
    throughput_events: usize,
}

impl Plan {
    fn new(options: &Options) -> anyhow::Result<Self> {
        let quick = options.quick;
        let plan = Self {
            objects: options.objects.unwrap_or(if quick { 2000 } else { 10_000 }),
            list_rounds: options.list_rounds.unwrap_or(if quick { 5 } else { 20 }),
            paced: Duration::from_secs_f64(options.paced_seconds.unwrap_or(if quick {
                3.0
            } else {
                10.0
            })),
            watch_events: options.watch_events.unwrap_or(if quick { 30 } else { 100 }),
            throughput_events: options
                .throughput_events
                .unwrap_or(if quick { 500 } else { 2000 }),
        };
        if options.concurrency == 0 || plan.objects == 0 || options.paced_rate == 0 {
            bail!("--concurrency, --objects and --paced-rate must be positive");
        }
        Ok(plan)
    }
}

/// Runs the benchmark and writes `bench-api.md` into the output directory.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let plan = Plan::new(options)?;
    let binary = match &options.control_plane {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .context("cannot find this executable")?
            .with_file_name("keelson-control-plane"),
    };
    if !binary.is_file() {
        bail!(
            "{} is missing: build it with `cargo build --release -p keelson-control-plane` (`cargo \
             xtask bench api` does)",
            binary.display()
        );
    }
    std::fs::create_dir_all(&options.output_dir)
        .with_context(|| format!("cannot create {}", options.output_dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let started = Instant::now();
    let started_utc = utc_now();
    let cpu_before = read_cpu()?;
    let load_before = load_average();
    println!(
        "==> keelson-bench api: {} objects at {} in flight, paced {}/s for {:.0} s, watchers {:?} \
         x {} events, stores {:?}",
        plan.objects,
        options.concurrency,
        options.paced_rate,
        plan.paced.as_secs_f64(),
        options.watchers,
        plan.watch_events,
        options.stores.iter().map(|s| s.name()).collect::<Vec<_>>()
    );
    let mut stores = Vec::new();
    for &store in &options.stores {
        println!("==> {}", store.name());
        let figures = runtime.block_on(measure_store(store, &binary, &plan, options))?;
        stores.push(figures);
    }
    let anchor = if options.no_anchor {
        None
    } else {
        let value_bytes = stores
            .iter()
            .map(|s| s.object_bytes)
            .find(|&b| b > 0)
            .unwrap_or(DEFAULT_OBJECT_BYTES);
        println!("==> anchor: raw etcd puts");
        let anchor =
            runtime.block_on(etcd_anchor(plan.objects, options.concurrency, value_bytes))?;
        for s in &stores {
            println!(
                "    {}: {:.0} creates/s = {:.2}x raw etcd puts",
                s.store,
                s.create_rate,
                s.create_rate / anchor.rate.max(1e-9)
            );
        }
        Some(anchor)
    };
    let mut compaction = Vec::new();
    if options.compaction_revisions > 0 {
        println!(
            "==> compaction of {} revisions while {} creates are in flight",
            options.compaction_revisions, options.concurrency
        );
        let figures = runtime.block_on(compaction::sqlite_under_compaction(
            options.compaction_revisions,
            options.concurrency,
            DEFAULT_OBJECT_BYTES,
        ))?;
        println!(
            "    sqlite: compaction to revision {} took {:.2} s; {} creates during it, p99 {:.2} \
             ms, max {:.2} ms",
            figures.revisions,
            figures.duration_s,
            figures.creates,
            figures.latency.p99_ms,
            figures.max_ms
        );
        compaction.push(figures);
    }
    let cpu_after = read_cpu()?;
    let info = RunInfo {
        started: started_utc,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        wall_s: started.elapsed().as_secs_f64(),
        steal_percent: cpu_before.steal_percent_until(&cpu_after),
        load_average: (load_before, load_average()),
        quick: options.quick,
    };
    let notes = notes(&stores);
    let markdown = report::render_markdown(&info, &stores, anchor.as_ref(), &compaction, &notes);
    println!("\n{markdown}");
    let path = options.output_dir.join("bench-api.md");
    std::fs::write(&path, &markdown).with_context(|| format!("cannot write {}", path.display()))?;
    println!("==> wrote {}", path.display());
    Ok(())
}

/// Bytes of a bench ConfigMap as the API stores it, when no store run measured it.
const DEFAULT_OBJECT_BYTES: usize = 600;

/// Raw etcd puts at `concurrency`, on a fresh etcd (as the keelson-on-etcd run had).
async fn etcd_anchor(
    count: usize,
    concurrency: usize,
    value_bytes: usize,
) -> anyhow::Result<EtcdAnchor> {
    let etcd = Etcd::start()?;
    tokio::time::sleep(anchor::WARM_UP).await;
    let anchor =
        anchor::raw_puts(etcd.endpoint(), etcd.pid(), count, concurrency, value_bytes).await?;
    println!(
        "    {} puts of {value_bytes} bytes at {concurrency} in flight: {:.0}/s, p50 {:.2} ms, \
         p99 {:.2} ms (etcd CPU {:.0} %, machine {:.0} % busy)",
        anchor.puts,
        anchor.rate,
        anchor.latency.p50_ms,
        anchor.latency.p99_ms,
        anchor.cpu.server,
        anchor.cpu.machine
    );
    Ok(anchor)
}

/// Observations the numbers support on their own.
fn notes(stores: &[StoreFigures]) -> Vec<String> {
    let mut notes = Vec::new();
    let mut phase = |store: &str, what: &str, cpu: &procs::CpuShare| {
        if cpu.machine >= 90.0 {
            notes.push(format!(
                "{store}, {what}: the CPUs were {:.0} % busy over all cores (server {:.0} %, \
                 bench client {:.0} % of one core, the rest other work on the machine): the \
                 figures include waiting for a CPU{}",
                cpu.machine,
                cpu.server,
                cpu.client,
                if cpu.client > cpu.server {
                    "; the client used more CPU than the server"
                } else {
                    ""
                }
            ));
        } else if cpu.machine < 70.0 {
            notes.push(format!(
                "{store}, {what}: the CPUs were {:.0} % busy: the server waits (fsync, the \
                 store, scheduling), it is not CPU-bound",
                cpu.machine
            ));
        }
    };
    for s in stores {
        phase(&s.store, "closed-loop creates", &s.create_cpu);
        for w in &s.watch {
            phase(&s.store, &format!("{} watchers", w.watchers), &w.cpu);
        }
    }
    notes
}

async fn measure_store(
    store: StoreKind,
    binary: &std::path::Path,
    plan: &Plan,
    options: &Options,
) -> anyhow::Result<StoreFigures> {
    let etcd = match store {
        StoreKind::Sqlite => None,
        StoreKind::Etcd => Some(Etcd::start()?),
    };
    let tokens = procs::ScratchDir::new("tokens")?;
    let mut extra = vec![
        "--token-auth-file".to_owned(),
        rbac::token_file(tokens.path())?.display().to_string(),
    ];
    if let Some(etcd) = &etcd {
        extra.extend([
            "--store".to_owned(),
            "etcd".to_owned(),
            "--etcd-endpoints".to_owned(),
            etcd.endpoint().to_owned(),
        ]);
    }
    let plane = ControlPlane::start(binary, &extra).await?;
    let server_pids: Vec<u32> = std::iter::once(plane.pid())
        .chain(etcd.as_ref().map(Etcd::pid))
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = Memory::of(plane.pid())?;
    println!(
        "    idle RSS {:.1} MiB (data in {})",
        mib(idle.rss_kib),
        plane.data_dir().display()
    );
    let client = &plane.client;
    let mut figures = StoreFigures {
        store: store.name().to_owned(),
        concurrency: options.concurrency,
        paced_target: options.paced_rate,
        idle_rss_mib: mib(idle.rss_kib),
        ..StoreFigures::default()
    };

    // Closed-loop creates; these objects are also the ones listed afterwards.
    load::create_namespace(client, "bench-list").await?;
    let meter = CpuMeter::start(&server_pids);
    let creates =
        load::creates_at_concurrency(client, "bench-list", plan.objects, options.concurrency).await;
    figures.create_cpu = meter.finish();
    figures.creates = creates.ok;
    figures.create_rate = creates.rate();
    figures.create_latency = Percentiles::of(&creates.latency);
    figures.create_errors = creates.errors;
    figures.first_error = creates.first_error.clone();
    println!(
        "    {} creates at {} in flight: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, {} errors (CPU \
         server {:.0} %, client {:.0} %, machine {:.0} % busy)",
        creates.ok,
        options.concurrency,
        figures.create_rate,
        figures.create_latency.p50_ms,
        figures.create_latency.p99_ms,
        creates.errors,
        figures.create_cpu.server,
        figures.create_cpu.client,
        figures.create_cpu.machine
    );

    figures.object_bytes = load::object_bytes(client, "bench-list", "cm-000000").await?;

    // Full lists of those objects.
    let lists = load::full_lists(client, "bench-list", plan.list_rounds).await?;
    figures.list_items = lists.items;
    figures.list_bytes = lists.bytes;
    figures.list_latency = Percentiles::of(&lists.latency);
    println!(
        "    full list of {} objects ({:.1} MiB): p50 {:.1} ms, p99 {:.1} ms",
        lists.items,
        lists.bytes as f64 / 1048576.0,
        figures.list_latency.p50_ms,
        figures.list_latency.p99_ms
    );
    if lists.items as u64 != creates.ok {
        bail!(
            "the list returned {} objects but {} creates succeeded",
            lists.items,
            creates.ok
        );
    }

    // The same creates as the admin and as a user RBAC authorizes, with the policy stored.
    figures.rbac = Some(compare_rbac(&plane, plan, options).await?);

    // Paced creates.
    load::create_namespace(client, "bench-paced").await?;
    let paced = load::creates_at_rate(
        client,
        "bench-paced",
        options.paced_rate,
        plan.paced,
        options.concurrency.max(1024),
    )
    .await;
    figures.paced_rate = paced.ok as f64 / plan.paced.as_secs_f64();
    figures.paced_latency = Percentiles::of(&paced.latency);
    figures.create_errors += paced.errors;
    if figures.first_error.is_none() {
        figures.first_error = paced.first_error.clone();
    }
    println!(
        "    paced {}/s for {:.0} s: {} ok, p50 {:.2} ms, p99 {:.2} ms, {} errors",
        options.paced_rate,
        plan.paced.as_secs_f64(),
        paced.ok,
        figures.paced_latency.p50_ms,
        figures.paced_latency.p99_ms,
        paced.errors
    );

    // Watch fan-out; watchers are spread over several clients (connection pools).
    let mut clients = vec![plane.client.clone()];
    for _ in 1..4 {
        clients.push(plane.new_client().await?);
    }
    for &watchers in &options.watchers {
        let watch = load::watch_fan_out(
            &server_pids,
            &clients,
            &format!("bench-watch-{watchers}"),
            watchers,
            plan.watch_events,
            Duration::from_millis(options.watch_interval_ms),
        )
        .await?;
        let figures_w = WatchFigures {
            watchers,
            delivered: watch.delivered,
            expected: (watchers * watch.events) as u64,
            latency: Percentiles::of(&watch.latency),
            setup_s: watch.setup.as_secs_f64(),
            cpu: watch.cpu,
        };
        println!(
            "    {watchers} watchers (opened in {:.1} s): {}/{} events, p50 {:.2} ms, p99 {:.2} \
             ms (CPU server {:.0} %, client {:.0} %, machine {:.0} % busy)",
            figures_w.setup_s,
            figures_w.delivered,
            figures_w.expected,
            figures_w.latency.p50_ms,
            figures_w.latency.p99_ms,
            watch.cpu.server,
            watch.cpu.client,
            watch.cpu.machine
        );
        figures.watch.push(figures_w);
    }
    // Delivery throughput: writes as fast as they go to many watchers.
    if options.throughput_watchers > 0 {
        let burst = load::watch_throughput(
            &server_pids,
            &clients,
            "bench-watch-burst",
            options.throughput_watchers,
            plan.throughput_events,
        )
        .await?;
        println!(
            "    {} watchers x {} writes as fast as they go: {} deliveries in {:.2} s = {:.0}/s \
             (CPU server {:.0} %, client {:.0} %, machine {:.0} % busy)",
            burst.watchers,
            burst.events,
            burst.delivered,
            burst.elapsed.as_secs_f64(),
            burst.rate(),
            burst.cpu.server,
            burst.cpu.client,
            burst.cpu.machine
        );
        figures.throughput = Some(ThroughputFigures {
            watchers: burst.watchers,
            events: burst.events,
            delivered: burst.delivered,
            rate: burst.rate(),
            cpu: burst.cpu,
        });
    }
    figures.stored_bytes = load::stored_bytes(client).await?;
    drop(clients);

    // RSS once the load has settled (watches closed, connections idle).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let settled = Memory::of(plane.pid())?;
    figures.settled_rss_mib = mib(settled.rss_kib);
    figures.peak_rss_mib = mib(settled.peak_kib);
    println!(
        "    RSS after the load settled {:.1} MiB, peak {:.1} MiB",
        figures.settled_rss_mib, figures.peak_rss_mib
    );
    drop(plane);
    drop(etcd);
    Ok(figures)
}

/// Loads the RBAC policy, probes the bench user (failing when RBAC does not let it create),
/// then runs the closed-loop creates as the admin and as the bench user.
async fn compare_rbac(
    plane: &ControlPlane,
    plan: &Plan,
    options: &Options,
) -> anyhow::Result<RbacFigures> {
    let admin = &plane.client;
    let loading = Instant::now();
    rbac::load_policy(admin).await?;
    println!(
        "    RBAC policy: {} Roles, {} bindings to other subjects, `edit` for {} in {} ({:.1} s)",
        rbac::ROLES,
        rbac::BINDINGS,
        rbac::USER,
        rbac::NAMESPACE,
        loading.elapsed().as_secs_f64()
    );
    let kubeconfig = plane.data_dir().join("admin.kubeconfig");
    let user = rbac::user_client(&kubeconfig).await?;
    let masters = rbac::masters_client(&kubeconfig).await?;
    rbac::probe(&user).await?;
    // ABBA rounds: each identity runs first as often as second.
    // At least RBAC_MIN_CREATES per identity: a p99 of fewer samples moves by more than the 5 %
    // the comparison is about.
    let per_round = plan.objects.max(RBAC_MIN_CREATES).div_ceil(RBAC_ROUNDS);
    let mut totals = [RbacTotals::default(), RbacTotals::default()];
    for round in 0..RBAC_ROUNDS * 2 {
        let user_turn = matches!(round % 4, 1 | 2);
        let (client, ns, total) = if user_turn {
            (&user, rbac::NAMESPACE, &mut totals[1])
        } else {
            (&masters, rbac::ADMIN_NAMESPACE, &mut totals[0])
        };
        let first = total.rounds * per_round;
        let result =
            load::creates_numbered_from(client, ns, first..first + per_round, options.concurrency)
                .await;
        if result.errors > 0 {
            bail!(
                "{} of the creates in {ns} failed: {}",
                result.errors,
                result.first_error.unwrap_or_default()
            );
        }
        total.add(&result)?;
    }
    let [masters_total, rbac_total] = totals;
    let (masters_rate, masters_latency) = masters_total.figures();
    let (rbac_rate, rbac_latency) = rbac_total.figures();
    let figures = RbacFigures {
        roles: rbac::ROLES,
        bindings: rbac::BINDINGS,
        masters_rate,
        masters_latency,
        rbac_rate,
        rbac_latency,
        rounds: RBAC_ROUNDS,
    };
    println!(
        "    creates as system:masters {:.0}/s (p99 {:.2} ms), as an RBAC user {:.0}/s (p99 {:.2} \
         ms): {:.1} % of the admin's rate",
        masters_rate,
        masters_latency.p99_ms,
        rbac_rate,
        rbac_latency.p99_ms,
        figures.rate_ratio() * 100.0
    );
    Ok(figures)
}

/// Rounds each identity runs in the RBAC comparison.
const RBAC_ROUNDS: usize = 4;
/// Creates each identity sends at least in the RBAC comparison (also with `--quick`).
const RBAC_MIN_CREATES: usize = 10_000;

/// One identity's creates summed over its rounds.
struct RbacTotals {
    rounds: usize,
    ok: u64,
    wall: Duration,
    latency: hdrhistogram::Histogram<u64>,
}

impl Default for RbacTotals {
    fn default() -> Self {
        Self {
            rounds: 0,
            ok: 0,
            wall: Duration::ZERO,
            latency: load::histogram(),
        }
    }
}

impl RbacTotals {
    fn add(&mut self, result: &load::CreateResult) -> anyhow::Result<()> {
        self.rounds += 1;
        self.ok += result.ok;
        self.wall += result.wall;
        self.latency
            .add(&result.latency)
            .context("latency histograms with different bounds")
    }

    fn figures(&self) -> (f64, Percentiles) {
        (
            self.ok as f64 / self.wall.as_secs_f64().max(1e-9),
            Percentiles::of(&self.latency),
        )
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

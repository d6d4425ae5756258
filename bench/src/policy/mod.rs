//! `keelson-bench policy`: what NetworkPolicy enforcement costs an allowed path, in keelson's
//! eBPF datapath and in kube-router's iptables + ipset layout, at 0, 100, 1000 and 10 000
//! NetworkPolicies over 1000 pod identities; and the time one policy change takes to apply.
//!
//! The lab is the datapath benchmark's ([`crate::datapath::lab`]): the client namespace is the
//! client pod, the backends namespace holds the server pod and a guarded pod, the node
//! namespace routes between them. The rest of the cluster is [`model`]'s API objects. Per
//! scale, round after round, the configurations take turns (none, ebpf, iptables): each is set
//! up, checked (the path answers; the guarded pod does not), measured (short connections/s,
//! persistent request/response rate) and torn down. Figures are medians over rounds of each
//! round's ratio to `none`, with their spread.

pub mod kuberouter;
pub mod model;
mod report;

use std::{
    net::SocketAddrV4,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use keelson_node_agent::datapath::{
    lb::{LoadBalancer, TcHook},
    policy::{PinnedPolicyMaps, PolicyMaps as _, PolicyModel, PolicyState, SyncReport},
};

use crate::{
    datapath::{
        attach_tc_in_node,
        lab::{self, Lab},
        load_average, loadgen, read_cpu, utc_now,
    },
    loadgen::LoadReport,
    report::format_duration,
    stats::Spread,
};
use report::{ChangeRow, Config, Row, RunInfo, Sizes};

/// How long one rule load may take before the benchmark gives up on it.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// Repeated policy changes of one kind stop after this much time (and after at least one).
const CHANGE_BUDGET: Duration = Duration::from_secs(30);

/// Flags of `keelson-bench policy`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Seconds per measurement [default: 2; 1 with --quick].
    #[arg(long, env = "KEELSON_BENCH_DURATION")]
    pub duration: Option<f64>,
    /// Rounds over all configurations; figures are medians over rounds [default: 3; 1 with
    /// --quick].
    #[arg(long, env = "KEELSON_BENCH_ROUNDS")]
    pub rounds: Option<usize>,
    /// Numbers of NetworkPolicies, comma-separated [default: 0,100,1000,10000; 0,1000 with
    /// --quick].
    #[arg(long, env = "KEELSON_BENCH_POLICIES", value_delimiter = ',')]
    pub policies: Option<Vec<usize>>,
    /// A quick look: 1 s measurements, 1 round, 0 and 1000 policies.
    #[arg(long, env = "KEELSON_BENCH_QUICK")]
    pub quick: bool,
    /// Concurrent short-connection workers.
    #[arg(long, env = "KEELSON_BENCH_WORKERS", default_value_t = 4)]
    pub workers: usize,
    /// Persistent connections for the request/response rate.
    #[arg(long, env = "KEELSON_BENCH_CONNECTIONS", default_value_t = 2)]
    pub connections: usize,
    /// Policy changes timed per way of applying one, at the largest scale (fewer if they take
    /// over 30 s in all).
    #[arg(long, env = "KEELSON_BENCH_CHANGE_REPEATS", default_value_t = 10)]
    pub change_repeats: usize,
    /// Pin clients to CPU 0 and servers to CPU 1.
    #[arg(long, env = "KEELSON_BENCH_PIN")]
    pub pin: bool,
    /// Where `bench-policy.md` goes.
    #[arg(long, env = "KEELSON_BENCH_OUTPUT_DIR", default_value = "results")]
    pub output_dir: PathBuf,
}

/// The run's parameters after defaults.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    duration: Duration,
    rounds: usize,
    scales: Vec<usize>,
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
        let scales = options.policies.clone().unwrap_or_else(|| {
            if options.quick {
                vec![0, 1000]
            } else {
                vec![0, 100, 1000, 10_000]
            }
        });
        if rounds == 0 || scales.is_empty() {
            bail!("--rounds and --policies must not be empty or zero");
        }
        if scales.iter().any(|&s| s > 50_000) {
            bail!("at most 50000 policies");
        }
        Ok(Self {
            duration: Duration::from_secs_f64(duration),
            rounds,
            scales,
        })
    }
}

/// What the lab holds for the eBPF configuration: the policy maps and the compiler's state.
struct Ebpf {
    maps: PinnedPolicyMaps,
    state: PolicyState,
    /// ENDPOINTS entries set aside while `ebpf-unpoliced` is measured.
    unpoliced: std::collections::BTreeMap<std::net::Ipv4Addr, keelson_ebpf_common::EndpointPolicy>,
}

/// Runs the benchmark and writes `bench-policy.md`.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let plan = Plan::new(options)?;
    if !lab::on_path("ipset") {
        bail!("`ipset` is not installed: run `cargo xtask setup` (or `apt-get install -y ipset`)");
    }
    let stop = crate::interrupt_flag()?;
    let bin_dir = crate::own_dir()?;
    std::fs::create_dir_all(&options.output_dir)
        .with_context(|| format!("cannot create {}", options.output_dir.display()))?;
    let started = Instant::now();
    let started_utc = utc_now();
    let cpu_before = read_cpu()?;
    let load_before = load_average();
    println!(
        "==> keelson-bench policy: none, ebpf-unpoliced, ebpf, iptables at {:?} NetworkPolicies over {} pods, \
         {} round(s) of {:.1} s measurements",
        plan.scales,
        model::PODS,
        plan.rounds,
        plan.duration.as_secs_f64()
    );
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let pinning = (options.pin && cpus >= 2).then_some(lab::Pinning {
        client: 0,
        server: 1,
    });
    // Two backend addresses: the server and the guarded pod.
    let mut lab = Lab::new(bin_dir, 2, pinning, stop)?;
    lab.load_without_services()?;
    let mut ebpf = Ebpf {
        maps: PinnedPolicyMaps::open(&lab.pin_dir()).context("cannot open the policy maps")?,
        state: PolicyState::default(),
        unpoliced: Default::default(),
    };
    let result = measure_all(&mut lab, &mut ebpf, &plan, options);
    // Whatever happened, the node's rules go before the lab does.
    let _ = remove_iptables(&lab);
    let (rows, sizes, changes) = result?;
    drop(ebpf);
    drop(lab);
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
        steal_percent: cpu_before.steal_percent_until(&read_cpu()?),
        load_average: (load_before, load_average()),
        wall: started.elapsed(),
        quick: options.quick,
    };
    let markdown = report::render_markdown(&info, &rows, &sizes, &changes);
    let md_path = options.output_dir.join("bench-policy.md");
    std::fs::write(&md_path, &markdown)
        .with_context(|| format!("cannot write {}", md_path.display()))?;
    println!("\n{markdown}");
    println!(
        "==> wrote {} ({} in total)",
        md_path.display(),
        format_duration(started.elapsed())
    );
    Ok(())
}

/// One scale's inputs, generated once.
struct Scale {
    policies: usize,
    model: PolicyModel,
    layout: kuberouter::Layout,
    ipsets: String,
}

type Results = (Vec<Row>, Vec<Sizes>, Vec<ChangeRow>);

fn measure_all(
    lab: &mut Lab,
    ebpf: &mut Ebpf,
    plan: &Plan,
    options: &Options,
) -> anyhow::Result<Results> {
    let mut rows = Vec::new();
    let mut all_sizes = Vec::new();
    let mut changes = Vec::new();
    let largest = plan.scales.iter().copied().max().unwrap_or(0);
    for &policies in &plan.scales {
        lab.check_stop()?;
        let generated = Instant::now();
        let model = model::model(policies);
        let layout = kuberouter::render(&model, "1");
        let ipsets = kuberouter::ipset_restore(&layout.ipsets);
        let render_took = generated.elapsed();
        let scale = Scale {
            policies,
            model,
            layout,
            ipsets,
        };
        // The eBPF maps from empty: the compile and every write.
        ebpf.state
            .sync(&PolicyModel::default(), &mut ebpf.maps)
            .context("cannot empty the policy maps")?;
        let loaded = Instant::now();
        let report = ebpf
            .state
            .sync(&scale.model, &mut ebpf.maps)
            .context("cannot load the policies into the eBPF maps")?;
        let ebpf_load = loaded.elapsed();
        let sizes = Sizes {
            policies,
            identities: report.identities,
            policy_entries: report.policy_entries,
            endpoints: report.endpoints,
            ipcache_entries: report.ipcache_entries,
            ebpf_load,
            ebpf_compile: report.compile,
            iptables_rules: scale
                .layout
                .filter
                .lines()
                .filter(|l| l.starts_with("-A "))
                .count(),
            policy_chains: scale.layout.policy_chains.len(),
            pod_chains: scale.layout.pod_chains,
            ipsets: scale.layout.ipsets.len(),
            ipset_members: scale.layout.ipsets.iter().map(|s| s.members.len()).sum(),
            iptables_render: render_took,
        };
        println!(
            "==> {policies} policies: eBPF {} identities, {} POLICY entries, {} endpoints, \
             loaded in {} (compile {}); kube-router layout {} rules, {} ipsets ({} entries), \
             generated in {}",
            sizes.identities,
            sizes.policy_entries,
            sizes.endpoints,
            format_duration(ebpf_load),
            format_duration(report.compile),
            sizes.iptables_rules,
            sizes.ipsets,
            sizes.ipset_members,
            format_duration(render_took)
        );
        all_sizes.push(sizes);
        let first = rows.len();
        for config in Config::ALL {
            rows.push(Row::new(policies, config));
        }
        for round in 1..=plan.rounds {
            for (i, config) in Config::ALL.into_iter().enumerate() {
                lab.check_stop()?;
                let loaded = setup(lab, ebpf, config, &scale);
                let measured = loaded.and_then(|loaded| {
                    measure_one(lab, config, &scale, plan, options).map(|m| (loaded, m))
                });
                let removed = teardown(lab, ebpf, config);
                let (loaded, m) =
                    measured.with_context(|| format!("{config} at {policies} policies"))?;
                removed.with_context(|| format!("tearing down {config}"))?;
                let row = &mut rows[first + i];
                if let Some(took) = loaded {
                    row.setup_s.push(took.as_secs_f64());
                }
                row.push(&m);
                println!(
                    "    [{policies} policies, round {round}/{}] {config:<8} {}{:>8.0} conn/s | \
                     {:>8.0} req/s (p50 {:>6.1} µs) | {} err | steal {}",
                    plan.rounds,
                    loaded.map_or_else(String::new, |d| format!("setup {} | ", format_duration(d))),
                    m.short.rate(),
                    m.persistent.rate(),
                    m.persistent.latency_us.p50,
                    m.short.errors + m.persistent.errors,
                    m.steal
                        .map_or_else(|| "?".to_owned(), |s| format!("{s:.1} %")),
                );
            }
        }
        if policies == largest && policies >= 1 {
            println!("==> {policies} policies: timing one policy change");
            changes.extend(time_changes(lab, ebpf, &scale, options)?);
        }
    }
    Ok((rows, all_sizes, changes))
}

/// Makes `config` the one on the path; returns how long loading took when it loads something.
fn setup(
    lab: &mut Lab,
    ebpf: &mut Ebpf,
    config: Config,
    scale: &Scale,
) -> anyhow::Result<Option<Duration>> {
    match config {
        Config::None => Ok(None),
        Config::EbpfUnpoliced => {
            // No pod policed: ENDPOINTS emptied until the teardown puts it back.
            let endpoints = ebpf.maps.contents()?.endpoints;
            for pod in endpoints.keys() {
                ebpf.maps.remove_endpoint(*pod)?;
            }
            ebpf.unpoliced = endpoints;
            attach_tc_in_node(lab.lb()?, &[TcHook::ToPod, TcHook::FromPod])?;
            Ok(None)
        }
        Config::Ebpf => {
            // The maps hold the scale's policies since the scale began (an agent's steady
            // state); a sync here writes nothing and proves it.
            let report = ebpf.state.sync(&scale.model, &mut ebpf.maps)?;
            if report.writes != 0 {
                bail!("the policy maps drifted: {} writes", report.writes);
            }
            attach_tc_in_node(lab.lb()?, &[TcHook::ToPod, TcHook::FromPod])?;
            Ok(None)
        }
        Config::Iptables => {
            let started = Instant::now();
            lab.node(
                &["ipset", "restore"],
                Some(scale.ipsets.as_bytes()),
                LOAD_TIMEOUT,
            )
            .context("cannot load kube-router's ipsets")?;
            lab.node(
                &["iptables-restore"],
                Some(scale.layout.filter.as_bytes()),
                LOAD_TIMEOUT,
            )
            .context("cannot load kube-router's filter table")?;
            Ok(Some(started.elapsed()))
        }
    }
}

fn teardown(lab: &mut Lab, ebpf: &mut Ebpf, config: Config) -> anyhow::Result<()> {
    match config {
        Config::None => Ok(()),
        Config::EbpfUnpoliced => {
            let detached = LoadBalancer::detach_cgroup(&lab.pin_dir())
                .context("cannot detach the TC programs");
            for (pod, value) in std::mem::take(&mut ebpf.unpoliced) {
                ebpf.maps.put_endpoint(pod, value)?;
            }
            detached
        }
        // Removes every pinned link of the datapath: here, the TC programs.
        Config::Ebpf => {
            LoadBalancer::detach_cgroup(&lab.pin_dir()).context("cannot detach the TC programs")
        }
        Config::Iptables => remove_iptables(lab),
    }
}

/// Empties the node namespace's ruleset (only the benchmark's rules are there), then its
/// ipsets (a set a rule refers to cannot go first).
fn remove_iptables(lab: &Lab) -> anyhow::Result<()> {
    lab.node(&["nft", "flush", "ruleset"], None, LOAD_TIMEOUT)
        .context("cannot remove the rules from the node namespace")?;
    lab.node(&["ipset", "destroy"], None, LOAD_TIMEOUT)
        .context("cannot remove the ipsets from the node namespace")?;
    Ok(())
}

/// One configuration's figures in one round.
#[derive(Debug)]
pub(crate) struct Measurement {
    short: LoadReport,
    persistent: LoadReport,
    steal: Option<f64>,
}

fn measure_one(
    lab: &mut Lab,
    config: Config,
    scale: &Scale,
    plan: &Plan,
    options: &Options,
) -> anyhow::Result<Measurement> {
    let server = [model::server_target()];
    let before = policy_counters(lab, config)?;
    // The path must work before it is measured, and the policies must be enforced: the guarded
    // pod (isolated by policy 1) must not answer the client, except with no policy at all.
    let check = loadgen(lab, "short", &server, Duration::from_secs(5), 1, 20)?;
    if check.errors > 0 || check.exchanges < 20 {
        bail!(
            "{config}: the client does not reach the server: {} of 20 exchanges failed ({})",
            check.errors,
            check.first_error.as_deref().unwrap_or("too few exchanges")
        );
    }
    let guarded = guarded_answers(lab)?;
    let enforced = matches!(config, Config::Ebpf | Config::Iptables) && scale.policies >= 2;
    if guarded == enforced {
        bail!(
            "{config} at {} policies: the guarded pod {} the client",
            scale.policies,
            if guarded {
                "answers"
            } else {
                "does not answer"
            }
        );
    }
    if config == Config::Ebpf {
        let after = policy_counters(lab, config)?;
        let delta = |i: usize| after[i].saturating_sub(before[i]);
        if scale.policies >= 1 && delta(0) < 20 {
            bail!("ebpf: tc_to_pod judged {} of 20 new connections", delta(0));
        }
        if enforced && delta(1) == 0 {
            bail!("ebpf: the guarded pod was unreachable, but not by the policy program");
        }
    }
    let cpu_before = read_cpu()?;
    lab.flush_conntrack()?;
    let short = loadgen(
        lab,
        "short",
        &server,
        plan.duration,
        options.workers,
        u64::MAX / 4,
    )?;
    lab.flush_conntrack()?;
    let persistent = loadgen(
        lab,
        "persistent",
        &server,
        plan.duration,
        options.connections,
        u64::MAX / 4,
    )?;
    let steal = cpu_before.steal_percent_until(&read_cpu()?);
    Ok(Measurement {
        short,
        persistent,
        steal,
    })
}

/// `policy_allowed_new` and `policy_denied_ingress` + `policy_denied_egress` of the eBPF
/// datapath (zeros otherwise). The client's egress policy denies the guarded pod before the
/// pod's ingress policy sees it.
fn policy_counters(lab: &mut Lab, config: Config) -> anyhow::Result<[u64; 2]> {
    if config != Config::Ebpf {
        return Ok([0, 0]);
    }
    let metrics = lab
        .lb()?
        .metrics()
        .context("cannot read the datapath's counters")?;
    let get = |name: &str| {
        metrics
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    };
    Ok([
        get("policy_allowed_new"),
        get("policy_denied_ingress") + get("policy_denied_egress"),
    ])
}

/// Whether the guarded pod answers the client (3 short attempts, 300 ms each).
fn guarded_answers(lab: &Lab) -> anyhow::Result<bool> {
    let target: [SocketAddrV4; 1] = [model::guarded_target()];
    let args: Vec<String> = [
        "short",
        "--target",
        &target[0].to_string(),
        "--duration-ms",
        "1500",
        "--threads",
        "1",
        "--max-exchanges",
        "3",
        "--timeout-ms",
        "300",
    ]
    .map(str::to_owned)
    .to_vec();
    let stdout = lab.run_client(
        &lab.binary("keelson-loadgen"),
        &args,
        Duration::from_secs(20),
    )?;
    let report = crate::loadgen::parse_report(&stdout)?;
    Ok(report.exchanges > 0)
}

/// Times one policy change (a peer selector added to the path's policy, then removed) with
/// every policy loaded: the eBPF compiler and map writes, kube-router's full sync, and a
/// Calico-style incremental update of the same layout.
fn time_changes(
    lab: &mut Lab,
    ebpf: &mut Ebpf,
    scale: &Scale,
    options: &Options,
) -> anyhow::Result<Vec<ChangeRow>> {
    let changed = model::with_added_peer(&scale.model);
    let models = [&changed, &scale.model];
    let repeats = options.change_repeats.max(1);
    let mut rows = Vec::new();

    // eBPF, as the agent's watcher loop runs it when only a NetworkPolicy changed: the pods
    // that policy selects recompiled, their entries diffed and written.
    let (namespace, name) = policy_key(&scale.model.policies[0]);
    let mut alone = EbpfTimings::default();
    let mut endpoints = Vec::new();
    for i in 0..repeats + repeats % 2 {
        lab.check_stop()?;
        let policy = &models[i % 2].policies[0];
        let started = Instant::now();
        let (report, update) = ebpf
            .state
            .update_policy(&namespace, &name, Some(policy), &mut ebpf.maps)?
            .context("the change needed a full compile, not an update of one policy")?;
        alone.push(started.elapsed(), &report);
        endpoints.push(update.endpoints.len());
    }
    rows.extend(alone.rows(
        format!(
            "`PolicyState::update_policy`, what the agent runs when only a NetworkPolicy \
             changed: recompile the {} local pod(s) the policy selects from their namespace's \
             policies, diff, write ({} map writes)",
            span(&endpoints),
            span(&alone.writes)
        ),
        "of which the recompile (`PolicyCompiler::update_policy`)",
    ));

    // eBPF, full: what a change the identities must follow (a pod, a namespace, a new CIDR)
    // costs: compile the whole model, diff, write.
    let mut full = EbpfTimings::default();
    for i in 0..repeats {
        lab.check_stop()?;
        let started = Instant::now();
        let report = ebpf.state.sync(models[i % 2], &mut ebpf.maps)?;
        full.push(started.elapsed(), &report);
    }
    // Back where the scale began whatever the parity.
    ebpf.state.sync(&scale.model, &mut ebpf.maps)?;
    rows.extend(full.rows(
        format!(
            "`PolicyState::sync`, the full compile (run for Pod and Namespace changes, and for \
             a policy naming an ipBlock CIDR or egress named port no identity tells apart): \
             compile all {} policies, diff against the maps' contents, write the difference \
             ({} map writes)",
            scale.policies,
            span(&full.writes)
        ),
        "of which the compile (`PolicyCompiler::compile` of the whole model)",
    ));
    println!("    ebpf: {}", describe(rows.first()));

    // iptables: load the layout, then change it both ways.
    setup(lab, ebpf, Config::Iptables, scale)?;
    let result = time_iptables(lab, &models, repeats);
    let removed = remove_iptables(lab);
    rows.extend(result?);
    removed?;
    for row in &rows[4..] {
        println!("    iptables: {}", describe(Some(row)));
    }
    Ok(rows)
}

/// One eBPF way of applying the change, timed once per repeat.
#[derive(Debug, Default)]
struct EbpfTimings {
    total: Vec<Duration>,
    compile: Vec<Duration>,
    writes: Vec<usize>,
}

impl EbpfTimings {
    fn push(&mut self, total: Duration, report: &SyncReport) {
        self.total.push(total);
        self.compile.push(report.compile);
        self.writes.push(report.writes);
    }

    /// The row for the whole change (`method`) and the row for its compile part.
    fn rows(&self, method: String, compile_method: &str) -> [ChangeRow; 2] {
        [
            ChangeRow {
                config: Config::Ebpf,
                method,
                spread: Spread::of(&self.total),
                stopped_after: None,
            },
            ChangeRow {
                config: Config::Ebpf,
                method: compile_method.to_owned(),
                spread: Spread::of(&self.compile),
                stopped_after: None,
            },
        ]
    }
}

/// `min–max` of `values` (`0–0` when empty).
fn span(values: &[usize]) -> String {
    let min = values.iter().min().copied().unwrap_or(0);
    let max = values.iter().max().copied().unwrap_or(0);
    format!("{min}–{max}")
}

/// A policy's namespace and name.
fn policy_key(policy: &k8s_openapi::api::networking::v1::NetworkPolicy) -> (String, String) {
    (
        policy.metadata.namespace.clone().unwrap_or_default(),
        policy.metadata.name.clone().unwrap_or_default(),
    )
}

/// Times `change(i)` for `i` in `0..repeats`, stopping early once [`CHANGE_BUDGET`] is spent.
fn timed_changes(
    lab: &Lab,
    repeats: usize,
    mut change: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<Duration>> {
    let mut timings = Vec::new();
    let budget = Instant::now();
    for i in 0..repeats {
        lab.check_stop()?;
        let started = Instant::now();
        change(i)?;
        timings.push(started.elapsed());
        if budget.elapsed() > CHANGE_BUDGET {
            break;
        }
    }
    Ok(timings)
}

fn time_iptables(
    lab: &Lab,
    models: &[&PolicyModel; 2],
    repeats: usize,
) -> anyhow::Result<Vec<ChangeRow>> {
    let mut rows = Vec::new();
    // Calico-style: only the changed set and the policy's chain.
    let layouts = [
        kuberouter::render(models[0], "1"),
        kuberouter::render(models[1], "1"),
    ];
    let timings = timed_changes(lab, repeats, |i| {
        let (before, after) = (&layouts[(i + 1) % 2], &layouts[i % 2]);
        let (sets, chain) = kuberouter::incremental_update(before, after, 0);
        lab.node(&["ipset", "restore"], Some(sets.as_bytes()), LOAD_TIMEOUT)?;
        lab.node(
            &["iptables-restore", "--noflush"],
            Some(chain.as_bytes()),
            LOAD_TIMEOUT,
        )?;
        Ok(())
    })?;
    rows.push(ChangeRow {
        config: Config::Iptables,
        method: "Calico-style incremental update: render the changed policy, `ipset restore` of \
                 the changed set, `iptables-restore --noflush` of the policy's chain"
            .to_owned(),
        spread: Spread::of(&timings),
        stopped_after: None,
    });
    // kube-router: a full sync per change (new version, every set refilled, whole table).
    let timings = timed_changes(lab, repeats, |i| {
        let layout = kuberouter::render(models[i % 2], &format!("{}", i + 2));
        let sets = kuberouter::ipset_restore(&layout.ipsets);
        lab.node(&["ipset", "restore"], Some(sets.as_bytes()), LOAD_TIMEOUT)?;
        lab.node(
            &["iptables-restore"],
            Some(layout.filter.as_bytes()),
            LOAD_TIMEOUT,
        )?;
        Ok(())
    })?;
    rows.push(ChangeRow {
        config: Config::Iptables,
        method:
            "kube-router full sync (what it does on any NetworkPolicy event): render the whole \
                 layout with a new version, `ipset restore` of every set (each swapped in from a \
                 temporary set), `iptables-restore` of the whole filter table"
                .to_owned(),
        spread: Spread::of(&timings),
        stopped_after: None,
    });
    Ok(rows)
}

fn describe(row: Option<&ChangeRow>) -> String {
    match row.and_then(|r| r.spread.map(|s| (r, s))) {
        Some((r, s)) => format!(
            "median {} (min {}, max {}, n={}): {}",
            format_duration(s.median),
            format_duration(s.min),
            format_duration(s.max),
            s.count,
            r.method
        ),
        None => "no timing".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_mode_and_explicit_flags() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            options: Options,
        }
        let plan = Plan::new(&Cli::parse_from(["x", "--quick"]).options).expect("valid");
        assert_eq!(plan.scales, [0, 1000]);
        assert_eq!((plan.rounds, plan.duration), (1, Duration::from_secs(1)));
        let plan = Plan::new(&Cli::parse_from(["x"]).options).expect("valid");
        assert_eq!(plan.scales, [0, 100, 1000, 10_000]);
        assert_eq!((plan.rounds, plan.duration), (3, Duration::from_secs(2)));
        let plan =
            Plan::new(&Cli::parse_from(["x", "--policies", "5,50", "--rounds", "2"]).options)
                .expect("valid");
        assert_eq!((plan.scales, plan.rounds), (vec![5, 50], 2));
        assert!(Plan::new(&Cli::parse_from(["x", "--rounds", "0"]).options).is_err());
        assert!(Plan::new(&Cli::parse_from(["x", "--policies", "60000"]).options).is_err());
    }
}

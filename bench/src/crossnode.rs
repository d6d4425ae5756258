//! `keelson-bench crossnode`: pod-to-pod traffic across nodes, through the kernel's routing
//! table and through keelson's eBPF, in both routing modes, side by side in one run.
//!
//! Four two-node clusters run at once (keelson-testbed: each node a network namespace on the
//! cluster's own Linux bridge), one per [`Config`]: direct or tunnel routing, with the agent's
//! `--routing-bpf off` (pod packets follow the node's routes) or `on` (TC redirects them). Each
//! cluster runs one pod on each node; the benchmark measures pod A (node 1) -> pod B (node 2)
//! from inside the pods' network namespaces (`nsenter --net=/proc/<pid>/ns/net`): one iperf3 TCP
//! stream, and request/response on persistent connections (`keelson-loadgen persistent` against
//! `keelson-echo`). Configurations interleave round after round (A B C D A B C D …) so that a
//! slow stretch of the shared CPUs hits them all alike; figures are medians over rounds, with
//! their ratio to `kernel-direct`.
//!
//! The clusters are always removed: at the end, on an error, and on the first Ctrl-C (the
//! benchmark stops at its next step). A run killed outright leaves them for the next run, which
//! removes them from their state directories first.

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader, Read as _},
    net::{Ipv4Addr, SocketAddrV4},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use keelson_testbed::{Cluster, ClusterSpec, Routing};

use crate::{
    datapath::{load_average, parse_iperf3, read_cpu, utc_now},
    loadgen::{LoadReport, parse_report},
    report::{format_duration, num},
    stats::median,
};

/// The configuration every ratio is relative to.
pub const BASELINE: Config = Config::KernelDirect;
/// Where pods' addresses come from (every cluster's nodes are isolated namespaces, so the four
/// clusters can share it).
const CLUSTER_CIDR: &str = "10.220.0.0/16";
/// The first cluster's `172.30.S.0/24`; the others follow.
const FIRST_SUBNET: u8 = 240;
/// `keelson-echo`'s port in pod B.
const ECHO_PORT: u16 = 7000;
/// iperf3's port in pod B.
const IPERF_PORT: u16 = 5201;
const IMAGE: &str = "keelson/busybox:1";
const CONTAINER: &str = "sleep";

/// Flags of `keelson-bench crossnode`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Seconds per measurement [default: 2; 1 with --quick].
    #[arg(long, env = "KEELSON_BENCH_DURATION")]
    pub duration: Option<f64>,
    /// Rounds over all configurations; figures are medians over rounds [default: 3; 1 with
    /// --quick].
    #[arg(long, env = "KEELSON_BENCH_ROUNDS")]
    pub rounds: Option<usize>,
    /// A quick look: 1 s measurements, 1 round.
    #[arg(long, env = "KEELSON_BENCH_QUICK")]
    pub quick: bool,
    /// Persistent connections for the request/response measurement.
    #[arg(long, env = "KEELSON_BENCH_CONNECTIONS", default_value_t = 2)]
    pub connections: usize,
    /// Where `bench-crossnode.md` goes.
    #[arg(long, env = "KEELSON_BENCH_OUTPUT_DIR", default_value = "results")]
    pub output_dir: PathBuf,
    /// Where the clusters keep their state and logs (one directory per cluster).
    #[arg(
        long,
        env = "KEELSON_BENCH_STATE_DIR",
        default_value = "/tmp/keelson-bench-crossnode"
    )]
    pub state_dir: PathBuf,
}

/// One way pod packets cross nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Config {
    /// Direct routing through the node's routing table.
    KernelDirect,
    /// Direct routing from TC.
    EbpfDirect,
    /// VXLAN through the kernel's lwtunnel routes.
    KernelTunnel,
    /// VXLAN from TC.
    EbpfTunnel,
}

impl Config {
    /// Every configuration, in the order they are measured in a round.
    pub const ALL: [Self; 4] = [
        Self::KernelDirect,
        Self::EbpfDirect,
        Self::KernelTunnel,
        Self::EbpfTunnel,
    ];

    /// The name in the tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::KernelDirect => "kernel-direct",
            Self::EbpfDirect => "ebpf-direct",
            Self::KernelTunnel => "kernel-tunnel",
            Self::EbpfTunnel => "ebpf-tunnel",
        }
    }

    /// What it is, for the legend.
    pub fn description(self) -> &'static str {
        match self {
            Self::KernelDirect => {
                "`--routing direct --routing-bpf off`: the other node's pod CIDR is a route \
                 `via <node address>` in the node's table; pod packets cross the node's stack \
                 (veth -> routing -> eth0 and back)"
            }
            Self::EbpfDirect => {
                "`--routing direct` (`--routing-bpf on`): TC on the pod's veth sends packets for \
                 the other node with `bpf_redirect_neigh` out of eth0, and TC on eth0 hands \
                 packets for local pods to them with `bpf_redirect_peer`"
            }
            Self::KernelTunnel => {
                "`--routing tunnel --routing-bpf off`: lwtunnel `encap ip` routes over a \
                 collect-metadata VXLAN device; the kernel encapsulates and decapsulates"
            }
            Self::EbpfTunnel => {
                "`--routing tunnel` (`--routing-bpf on`): TC sets the VXLAN tunnel key and \
                 redirects to the VXLAN device; decapsulated packets go to the pod with \
                 `bpf_redirect_peer`"
            }
        }
    }

    fn routing(self) -> Routing {
        match self {
            Self::KernelDirect | Self::EbpfDirect => Routing::Direct,
            Self::KernelTunnel | Self::EbpfTunnel => Routing::Tunnel,
        }
    }

    fn bpf(self) -> bool {
        matches!(self, Self::EbpfDirect | Self::EbpfTunnel)
    }

    /// The agent's counter of packets TC sent towards another node in this routing mode.
    fn redirect_counter(self) -> &'static str {
        match self.routing() {
            Routing::Direct => "tc_redirect_node",
            Routing::Tunnel => "tc_redirect_tunnel",
        }
    }

    fn index(self) -> usize {
        Self::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }

    /// The cluster's name, `bx0` … `bx3`.
    fn cluster_name(self) -> String {
        format!("bx{}", self.index())
    }

    fn subnet(self) -> u8 {
        FIRST_SUBNET + self.index() as u8
    }
}

impl std::fmt::Display for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// The run's parameters after defaults.
#[derive(Debug, Clone, PartialEq)]
struct Plan {
    duration: Duration,
    rounds: usize,
    connections: usize,
}

impl Plan {
    fn new(options: &Options) -> anyhow::Result<Self> {
        let duration = options
            .duration
            .unwrap_or(if options.quick { 1.0 } else { 2.0 });
        ensure!(
            (0.2..=600.0).contains(&duration),
            "--duration must be between 0.2 and 600 seconds"
        );
        let rounds = options.rounds.unwrap_or(if options.quick { 1 } else { 3 });
        ensure!((1..=100).contains(&rounds), "--rounds must be 1 to 100");
        ensure!(
            (1..=64).contains(&options.connections),
            "--connections must be 1 to 64"
        );
        Ok(Self {
            duration: Duration::from_secs_f64(duration),
            rounds,
            connections: options.connections,
        })
    }

    /// iperf3 runs whole seconds.
    fn iperf_seconds(&self) -> u64 {
        self.duration.as_secs_f64().ceil().max(1.0) as u64
    }
}

/// What one configuration measured, one value per round.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Samples {
    /// iperf3 received throughput, Gbit/s.
    pub gbps: Vec<f64>,
    /// Requests per second on the persistent connections.
    pub rps: Vec<f64>,
    /// Request/response latency, median, µs.
    pub p50_us: Vec<f64>,
    /// Request/response latency, 99th percentile, µs.
    pub p99_us: Vec<f64>,
    /// Failed request/response attempts over all rounds.
    pub errors: u64,
    /// Packets node 1's TC sent towards node 2 (its redirect counter) over the measurements.
    pub redirects: u64,
}

/// A configuration's row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Which configuration.
    pub config: Config,
    /// Its per-round values.
    pub samples: Samples,
}

/// What the header says about the run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// When the run started (UTC, RFC 3339).
    pub started: String,
    /// `uname -r`.
    pub kernel: String,
    /// CPUs online.
    pub cpus: usize,
    /// Length of one measurement.
    pub duration: Duration,
    /// iperf3's whole seconds.
    pub iperf_seconds: u64,
    /// Rounds.
    pub rounds: usize,
    /// Persistent connections.
    pub connections: usize,
    /// CPU steal over the measurements, percent.
    pub steal_percent: Option<f64>,
    /// One-minute load average before and after.
    pub load_average: (Option<f64>, Option<f64>),
    /// Wall time of the whole run (clusters up and down included).
    pub wall: Duration,
}

/// One metric's table.
struct Metric {
    title: &'static str,
    unit: &'static str,
    decimals: usize,
    values: fn(&Samples) -> &[f64],
}

const METRICS: [Metric; 4] = [
    Metric {
        title: "TCP throughput, one iperf3 stream (higher is better)",
        unit: "Gbit/s",
        decimals: 2,
        values: |s| &s.gbps,
    },
    Metric {
        title: "Requests per second on persistent connections (higher is better)",
        unit: "req/s",
        decimals: 0,
        values: |s| &s.rps,
    },
    Metric {
        title: "Request/response latency, median (lower is better)",
        unit: "p50 µs",
        decimals: 1,
        values: |s| &s.p50_us,
    },
    Metric {
        title: "Request/response latency, 99th percentile (lower is better)",
        unit: "p99 µs",
        decimals: 1,
        values: |s| &s.p99_us,
    },
];

/// Renders the results as markdown: a header, one table per metric, the checks.
pub fn render_markdown(info: &RunInfo, rows: &[Row]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# keelson cross-node pod networking benchmark\n");
    let _ = writeln!(
        out,
        "- run: {} on Linux {}, {} CPUs, {} wall time (four clusters up, measured, down)",
        info.started,
        info.kernel,
        info.cpus,
        format_duration(info.wall)
    );
    let _ = writeln!(
        out,
        "- CPU steal over the measurements: {}",
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
        "- four 2-node keelson clusters side by side (keelson-testbed: each node a network \
         namespace whose eth0, MTU 1500, is a veth on the cluster's own Linux bridge); in each, \
         one `{IMAGE}` pod per node (a Deployment pinned by `nodeSelector: \
         kubernetes.io/hostname`); traffic goes from pod A on node 1 to pod B on node 2, over \
         the node link"
    );
    let _ = writeln!(
        out,
        "- each figure is the median of {} round(s); configurations interleaved within a round \
         (A B C D A B C D …); {} per measurement; ratios are to `{}`",
        info.rounds,
        format_duration(info.duration),
        BASELINE.name()
    );
    let _ = writeln!(
        out,
        "- throughput: `nsenter --net=/proc/<pid B>/ns/net iperf3 -s -1 -p {IPERF_PORT}`, then \
         `nsenter --net=/proc/<pid A>/ns/net iperf3 -c <pod B> -p {IPERF_PORT} -t {} -J` \
         (end.sum_received.bits_per_second)",
        info.iperf_seconds
    );
    let _ = writeln!(
        out,
        "- request/response: `nsenter --net=/proc/<pid B>/ns/net keelson-echo --listen \
         <pod B>:{ECHO_PORT}`, then `nsenter --net=/proc/<pid A>/ns/net keelson-loadgen \
         persistent --target <pod B>:{ECHO_PORT} --threads {} --duration-ms {}`: {} persistent \
         TCP connections ping-ponging 64 B requests / 128 B replies",
        info.connections,
        info.duration.as_millis(),
        info.connections
    );
    let _ = writeln!(
        out,
        "- `<pid X>`: the pod's container process (`docker inspect -f '{{{{.State.Pid}}}}'`), \
         in the pod's network namespace; clients and servers placed by the scheduler"
    );
    for config in Config::ALL {
        let _ = writeln!(out, "- `{}`: {}", config.name(), config.description());
    }
    let baseline = rows.iter().find(|r| r.config == BASELINE);
    for metric in &METRICS {
        let _ = writeln!(out, "\n## {}\n", metric.title);
        let _ = writeln!(
            out,
            "| configuration | {} | × {} | per round |",
            metric.unit,
            BASELINE.name()
        );
        let _ = writeln!(out, "|---|---:|---:|---|");
        let base = baseline.and_then(|b| median((metric.values)(&b.samples)));
        for row in rows {
            let values = (metric.values)(&row.samples);
            let m = median(values);
            let ratio = match (m, base) {
                (Some(m), Some(b)) if b > 0.0 => Some(m / b),
                _ => None,
            };
            let rounds = values
                .iter()
                .map(|v| num(Some(*v), metric.decimals))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                row.config.name(),
                num(m, metric.decimals),
                num(ratio, 2),
                if rounds.is_empty() { "-" } else { &rounds }
            );
        }
    }
    let _ = writeln!(out, "\n## Checks\n");
    let _ = writeln!(
        out,
        "Before measuring, 20 requests from pod A must all be answered by pod B. The agent's \
         counter of packets TC sent towards another node (`tc_redirect_node` for direct, \
         `tc_redirect_tunnel` for tunnel), read from node 1's pinned maps around the \
         measurements, must grow with `--routing-bpf on` and stay put with `off`.\n"
    );
    let _ = writeln!(
        out,
        "| configuration | failed requests | node 1 TC redirects to node 2 |"
    );
    let _ = writeln!(out, "|---|---:|---:|");
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} ({}) |",
            row.config.name(),
            row.samples.errors,
            num(Some(row.samples.redirects as f64), 0),
            row.config.redirect_counter()
        );
    }
    out
}

/// Runs the benchmark and writes `bench-crossnode.md`.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let plan = Plan::new(options)?;
    ensure!(
        nix::unistd::geteuid().is_root(),
        "keelson-bench crossnode needs root (network namespaces, eBPF, Docker)"
    );
    let stop = crate::interrupt_flag()?;
    let bin_dir = crate::own_dir()?;
    for binary in [
        keelson_testbed::CONTROL_PLANE,
        keelson_testbed::NODE_AGENT,
        "keelson-echo",
        "keelson-loadgen",
    ] {
        ensure!(
            bin_dir.join(binary).is_file(),
            "{} is not built (cargo build --release -p keelson-bench -p keelson-node-agent -p \
             keelson-control-plane)",
            bin_dir.join(binary).display()
        );
    }
    std::fs::create_dir_all(&options.output_dir)
        .with_context(|| format!("cannot create {}", options.output_dir.display()))?;
    let started = Instant::now();
    let started_utc = utc_now();
    let load_before = load_average();
    println!(
        "==> keelson-bench crossnode: {} on four 2-node clusters, {} round(s) of {:.1} s \
         measurements",
        Config::ALL.map(Config::name).join(", "),
        plan.rounds,
        plan.duration.as_secs_f64()
    );
    let ctx = Ctx {
        bin_dir,
        stop,
        state_root: options.state_dir.clone(),
    };
    let _locks = Config::ALL
        .iter()
        .map(|c| claim_subnet(c.subnet()))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let setups = ctx.start_all()?;
    let measured = measure_all(&ctx, &plan, &setups);
    let steal = measured.as_ref().ok().and_then(|(_, steal)| *steal);
    let removed = ctx.remove_all(setups);
    let (rows, _) = measured?;
    removed?;

    let info = RunInfo {
        started: started_utc,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        cpus: std::thread::available_parallelism().map_or(1, usize::from),
        duration: plan.duration,
        iperf_seconds: plan.iperf_seconds(),
        rounds: plan.rounds,
        connections: plan.connections,
        steal_percent: steal,
        load_average: (load_before, load_average()),
        wall: started.elapsed(),
    };
    let markdown = render_markdown(&info, &rows);
    let md_path = options.output_dir.join("bench-crossnode.md");
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

/// What every step needs.
#[derive(Debug)]
struct Ctx {
    bin_dir: PathBuf,
    stop: Arc<AtomicBool>,
    state_root: PathBuf,
}

/// A pod as the benchmark uses it.
#[derive(Debug, Clone)]
struct Pod {
    name: String,
    ip: Ipv4Addr,
    /// The container's process: `/proc/<pid>/ns/net` is the pod's network namespace.
    pid: u32,
}

impl Pod {
    fn netns(&self) -> String {
        format!("/proc/{}/ns/net", self.pid)
    }

    /// `program` run in the pod's network namespace.
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns()))
            .arg("--")
            .arg(program);
        cmd
    }
}

/// A child process of ours, killed (by its pid: our own unreaped child) when dropped.
#[derive(Debug)]
struct Server {
    name: String,
    child: Child,
}

impl Server {
    fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None))
            && let Err(e) = self.child.kill()
        {
            eprintln!("warning: cannot stop {}: {e}", self.name);
        }
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One configuration's cluster, pods and echo server. Fields drop in order: the server first,
/// then the cluster (best-effort down).
#[derive(Debug)]
struct Setup {
    echo: Option<Server>,
    config: Config,
    a: Pod,
    b: Pod,
    pin_dir: PathBuf,
    cluster: Option<Cluster>,
}

impl Ctx {
    fn check_stop(&self) -> anyhow::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        Ok(())
    }

    fn state_dir(&self, config: Config) -> PathBuf {
        self.state_root.join(config.cluster_name())
    }

    /// Brings the four clusters up at once, then deploys the pods and starts the servers.
    fn start_all(&self) -> anyhow::Result<Vec<Setup>> {
        let results: Vec<anyhow::Result<Cluster>> = std::thread::scope(|scope| {
            let handles: Vec<_> = Config::ALL
                .iter()
                .map(|&config| scope.spawn(move || self.cluster_up(config)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a cluster thread panicked")))
                })
                .collect()
        });
        // On any failure the clusters that did come up drop here, which removes them.
        let clusters = results.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
        let mut setups = Vec::new();
        for (config, cluster) in Config::ALL.into_iter().zip(clusters) {
            self.check_stop()?;
            setups.push(self.deploy(config, cluster)?);
        }
        for setup in &mut setups {
            self.check_stop()?;
            let pods = (&setup.a, &setup.b);
            let (echo, checked) = self.start_echo(setup.config, pods.0, pods.1)?;
            setup.echo = Some(echo);
            println!(
                "    {}: pod {} ({}) -> pod {} ({}): {checked}",
                setup.config, setup.a.name, setup.a.ip, setup.b.name, setup.b.ip
            );
        }
        Ok(setups)
    }

    fn cluster_up(&self, config: Config) -> anyhow::Result<Cluster> {
        let name = config.cluster_name();
        let state_dir = self.state_dir(config);
        // A run killed outright leaves its clusters: remove them first (only this benchmark's
        // own state directory is looked at).
        if keelson_testbed::down_from_state(&state_dir)
            .with_context(|| format!("removing the leftovers of cluster {name}"))?
        {
            println!("    {config}: removed a cluster {name} an earlier run left");
        }
        if state_dir.exists() {
            std::fs::remove_dir_all(&state_dir)
                .with_context(|| format!("cannot remove {}", state_dir.display()))?;
        }
        let mut spec = ClusterSpec::new(&name, config.subnet(), 2, &self.bin_dir, &state_dir);
        spec.routing = config.routing();
        spec.cluster_cidr = CLUSTER_CIDR.to_owned();
        if !config.bpf() {
            spec.agent_args = vec!["--routing-bpf".to_owned(), "off".to_owned()];
        }
        let started = Instant::now();
        let cluster = Cluster::up_with_progress(spec, |step| println!("    {config}: {step}"))
            .with_context(|| format!("{config}: cluster {name} did not come up"))?;
        println!(
            "    {config}: cluster {name} up in {}",
            format_duration(started.elapsed())
        );
        Ok(cluster)
    }

    /// One single-replica Deployment per node, pinned by hostname; waits for both pods.
    fn deploy(&self, config: Config, cluster: Cluster) -> anyhow::Result<Setup> {
        let nodes: Vec<String> = cluster.nodes().iter().map(|n| n.name.clone()).collect();
        ensure!(
            nodes.len() == 2,
            "{config}: the cluster has {} nodes",
            nodes.len()
        );
        let pin_dir = cluster.nodes()[0].pin_dir.clone();
        let mut yaml = String::new();
        for (app, node) in [("bench-a", &nodes[0]), ("bench-b", &nodes[1])] {
            yaml.push_str(&deployment(app, node));
        }
        let path = cluster.spec().state_dir.join("crossnode.yaml");
        std::fs::write(&path, &yaml).with_context(|| format!("cannot write {}", path.display()))?;
        cluster
            .kubectl(&["apply", "-f", &path.to_string_lossy()])
            .with_context(|| format!("{config}: deploying the pods"))?;
        let a = self.wait_pod(&cluster, "bench-a", &nodes[0])?;
        let b = self.wait_pod(&cluster, "bench-b", &nodes[1])?;
        Ok(Setup {
            echo: None,
            config,
            a,
            b,
            pin_dir,
            cluster: Some(cluster),
        })
    }

    /// Waits (at most 120 s) until the pod of `app` runs on `node`, and finds its container's
    /// process.
    fn wait_pod(&self, cluster: &Cluster, app: &str, node: &str) -> anyhow::Result<Pod> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut last = String::from("no pod yet");
        while Instant::now() < deadline {
            self.check_stop()?;
            match cluster
                .kubectl(&["get", "pods", "-l", &format!("app={app}"), "-o", "json"])
                .and_then(|text: String| running_pod(&text, node))
            {
                Ok(Some((name, uid, ip))) => {
                    let pid = container_pid(&uid)?;
                    ensure!(
                        Path::new(&format!("/proc/{pid}/ns/net")).exists(),
                        "pod {name}: process {pid} has no network namespace"
                    );
                    return Ok(Pod { name, ip, pid });
                }
                Ok(None) => {}
                Err(e) => last = format!("{e:#}"),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let pods = cluster
            .kubectl(&["get", "pods", "-o", "wide"])
            .unwrap_or_default();
        bail!("pod {app} is not running on {node} after 120 s ({last}):\n{pods}")
    }

    /// Starts `keelson-echo` in pod B and checks that 20 requests from pod A are answered by it.
    fn start_echo(&self, config: Config, a: &Pod, b: &Pod) -> anyhow::Result<(Server, String)> {
        let listen = SocketAddrV4::new(b.ip, ECHO_PORT);
        let mut child = b
            .command(self.bin_dir.join("keelson-echo"))
            .args(["--listen", &listen.to_string(), "--lifetime-s", "7200"])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start keelson-echo")?;
        let stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let mut server = Server {
            name: format!("keelson-echo in {}", b.name),
            child,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(stdout) = stdout {
            std::thread::spawn(move || {
                let mut line = String::new();
                let _ = BufReader::new(stdout).read_line(&mut line);
                let _ = tx.send(line);
            });
        }
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.trim() == "ready" => {}
            other => {
                server.kill();
                let mut text = String::new();
                if let Some(err) = stderr.as_mut() {
                    let _ = err.read_to_string(&mut text);
                }
                bail!(
                    "{config}: keelson-echo in pod {} did not start ({other:?}): {}",
                    b.name,
                    text.trim()
                );
            }
        }
        let check = self.loadgen(a, listen, Duration::from_secs(5), 1, 20)?;
        let expected = listen.to_string();
        if check.exchanges < 20 || check.errors > 0 || check.backends.keys().any(|k| *k != expected)
        {
            bail!(
                "{config}: pod {} ({}) -> pod {} ({listen}): {} of 20 requests answered, {} \
                 failed ({}), answered by {:?}",
                a.name,
                a.ip,
                b.name,
                check.exchanges,
                check.errors,
                check.first_error.as_deref().unwrap_or("-"),
                check.backends.keys().collect::<Vec<_>>()
            );
        }
        Ok((
            server,
            format!(
                "20 of 20 requests answered by {listen}, p50 {:.1} µs",
                check.latency_us.p50
            ),
        ))
    }

    /// `keelson-loadgen persistent` from pod `a` to `target`.
    fn loadgen(
        &self,
        a: &Pod,
        target: SocketAddrV4,
        duration: Duration,
        threads: usize,
        max_exchanges: u64,
    ) -> anyhow::Result<LoadReport> {
        let mut cmd = a.command(self.bin_dir.join("keelson-loadgen"));
        cmd.args([
            "persistent",
            "--target",
            &target.to_string(),
            "--duration-ms",
            &duration.as_millis().to_string(),
            "--threads",
            &threads.to_string(),
            "--max-exchanges",
            &max_exchanges.to_string(),
        ]);
        let stdout = self.run_bounded(&mut cmd, duration + Duration::from_secs(20))?;
        parse_report(&stdout)
    }

    /// One iperf3 stream from pod `a` to pod `b`: Gbit/s received. The server serves one test
    /// (`-1`); up to three attempts.
    fn iperf3(&self, a: &Pod, b: &Pod, seconds: u64) -> anyhow::Result<f64> {
        let mut last_error = String::new();
        for _ in 0..3 {
            self.check_stop()?;
            let child = b
                .command("iperf3")
                .args(["-s", "-1", "-p", &IPERF_PORT.to_string()])
                .process_group(0)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start iperf3 -s")?;
            let mut server = Server {
                name: format!("iperf3 -s in {}", b.name),
                child,
            };
            if let Err(e) = wait_listening(b.pid, IPERF_PORT, Duration::from_secs(5)) {
                last_error = format!("{e:#}");
                server.stop();
                continue;
            }
            let mut cmd = a.command("iperf3");
            cmd.args([
                "-c",
                &b.ip.to_string(),
                "-p",
                &IPERF_PORT.to_string(),
                "-t",
                &seconds.to_string(),
                "--connect-timeout",
                "3000",
                "-J",
            ]);
            let result = self
                .run_bounded(&mut cmd, Duration::from_secs(seconds + 20))
                .and_then(|stdout| parse_iperf3(&stdout));
            // The server exits after its one test; give it a moment, then stop it.
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline && matches!(server.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            server.stop();
            match result {
                Ok(gbps) => return Ok(gbps),
                Err(e) => {
                    last_error = format!("{e:#}");
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        bail!("iperf3 from {} to {} failed: {last_error}", a.name, b.ip)
    }

    /// Runs `cmd` in its own process group (Ctrl-C reaches only the benchmark), stopping it
    /// after `timeout` or on Ctrl-C ([`crate::datapath::run_bounded`]); its stdout.
    fn run_bounded(&self, cmd: &mut Command, timeout: Duration) -> anyhow::Result<String> {
        let output = crate::datapath::run_bounded(cmd, None, timeout, &self.stop)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Stops the servers and removes every cluster (in parallel); the first error.
    fn remove_all(&self, setups: Vec<Setup>) -> anyhow::Result<()> {
        println!("==> removing the clusters");
        let results: Vec<anyhow::Result<()>> = std::thread::scope(|scope| {
            let handles: Vec<_> = setups
                .into_iter()
                .map(|mut setup| {
                    scope.spawn(move || {
                        if let Some(echo) = setup.echo.take() {
                            echo.stop();
                        }
                        match setup.cluster.take() {
                            Some(cluster) => cluster
                                .down()
                                .with_context(|| format!("removing the {} cluster", setup.config)),
                            None => Ok(()),
                        }
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("a teardown thread panicked")))
                })
                .collect()
        });
        for config in Config::ALL {
            let _ = std::fs::remove_dir_all(self.state_dir(config));
        }
        let _ = std::fs::remove_dir(&self.state_root);
        results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        Ok(())
    }
}

/// The rounds: every configuration in turn, round after round. Also the CPU steal.
fn measure_all(
    ctx: &Ctx,
    plan: &Plan,
    setups: &[Setup],
) -> anyhow::Result<(Vec<Row>, Option<f64>)> {
    let mut rows: Vec<Row> = setups
        .iter()
        .map(|s| Row {
            config: s.config,
            samples: Samples::default(),
        })
        .collect();
    let cpu_before = read_cpu()?;
    for round in 1..=plan.rounds {
        for (setup, row) in setups.iter().zip(&mut rows) {
            ctx.check_stop()?;
            let config = setup.config;
            let before = redirects(setup)?;
            let target = SocketAddrV4::new(setup.b.ip, ECHO_PORT);
            let rr = ctx
                .loadgen(
                    &setup.a,
                    target,
                    plan.duration,
                    plan.connections,
                    u64::MAX / 4,
                )
                .with_context(|| format!("{config}: request/response"))?;
            let gbps = ctx
                .iperf3(&setup.a, &setup.b, plan.iperf_seconds())
                .with_context(|| format!("{config}: iperf3"))?;
            let redirected = redirects(setup)?.saturating_sub(before);
            if config.bpf() && redirected == 0 {
                bail!(
                    "{config}: node 1's TC sent no packet towards node 2 ({} did not grow): the \
                     eBPF path is not in use",
                    config.redirect_counter()
                );
            }
            if !config.bpf() && redirected > 0 {
                bail!(
                    "{config}: node 1's TC sent {redirected} packets towards node 2 ({}) with \
                     --routing-bpf off",
                    config.redirect_counter()
                );
            }
            let s = &mut row.samples;
            s.gbps.push(gbps);
            s.rps.push(rr.rate());
            s.p50_us.push(rr.latency_us.p50);
            s.p99_us.push(rr.latency_us.p99);
            s.errors += rr.errors;
            s.redirects += redirected;
            println!(
                "    [round {round}/{}] {config:<13} {:>6.2} Gbit/s | {:>7.0} req/s | p50 {:>7.1} \
                 µs p99 {:>7.1} µs | {} err | {redirected} TC redirects",
                plan.rounds,
                gbps,
                rr.rate(),
                rr.latency_us.p50,
                rr.latency_us.p99,
                rr.errors
            );
            if let Some(error) = &rr.first_error {
                println!("      first error: {error}");
            }
        }
    }
    let steal = cpu_before.steal_percent_until(&read_cpu()?);
    Ok((rows, steal))
}

/// Node 1's counter of packets TC sent towards other nodes in the setup's routing mode.
fn redirects(setup: &Setup) -> anyhow::Result<u64> {
    let text = keelson_node_agent::datapath::lb::metrics_text(&setup.pin_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the counters in {}: {e}",
            setup.pin_dir.display()
        )
    })?;
    Ok(counter(&text, setup.config.redirect_counter()))
}

/// `keelson_datapath_events_total{path="<name>"}` in the agent's metrics text (0 when absent).
fn counter(metrics: &str, name: &str) -> u64 {
    let prefix = format!("keelson_datapath_events_total{{path=\"{name}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A single-replica Deployment `app` of a sleeping busybox, pinned to `node`.
fn deployment(app: &str, node: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {app}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {app}}}
  template:
    metadata:
      labels: {{app: {app}}}
    spec:
      terminationGracePeriodSeconds: 1
      nodeSelector: {{kubernetes.io/hostname: {node}}}
      containers:
      - name: {CONTAINER}
        image: {IMAGE}
        command: [sleep, \"100000\"]
---
"
    )
}

/// The Running pod on `node` in a `kubectl get pods -o json` list: (name, uid, pod IP).
fn running_pod(json: &str, node: &str) -> anyhow::Result<Option<(String, String, Ipv4Addr)>> {
    let list: serde_json::Value =
        serde_json::from_str(json).context("kubectl did not print JSON")?;
    let pod = list["items"].as_array().into_iter().flatten().find(|p| {
        p["metadata"]["deletionTimestamp"].is_null()
            && p["spec"]["nodeName"] == node
            && p["status"]["phase"] == "Running"
    });
    let Some(pod) = pod else {
        return Ok(None);
    };
    let (Some(name), Some(uid), Some(ip)) = (
        pod["metadata"]["name"].as_str(),
        pod["metadata"]["uid"].as_str(),
        pod["status"]["podIP"].as_str().and_then(|s| s.parse().ok()),
    ) else {
        return Ok(None);
    };
    Ok(Some((name.to_owned(), uid.to_owned(), ip)))
}

/// The pid of pod `uid`'s running container (Docker labels it with the pod's uid).
fn container_pid(uid: &str) -> anyhow::Result<u32> {
    let id = docker(&[
        "ps",
        "--filter",
        &format!("label=io.keelson.pod.uid={uid}"),
        "--filter",
        &format!("label=io.keelson.container={CONTAINER}"),
        "--format",
        "{{.ID}}",
    ])?;
    let id = id
        .lines()
        .next()
        .with_context(|| format!("pod {uid} has no running container {CONTAINER}"))?;
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", id])?;
    let pid: u32 = pid
        .trim()
        .parse()
        .with_context(|| format!("docker inspect printed no pid for {id}: {pid:?}"))?;
    ensure!(pid > 0, "container {id} does not run");
    Ok(pid)
}

fn docker(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .context("cannot run docker")?;
    ensure!(
        output.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Waits until something listens on TCP `port` in the network namespace of `pid` (its
/// `/proc/<pid>/net/tcp` and `tcp6`: iperf3 listens on `[::]`).
fn wait_listening(pid: u32, port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        for table in ["tcp", "tcp6"] {
            let path = format!("/proc/{pid}/net/{table}");
            let table =
                std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
            if listens(&table, port) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("nothing listens on port {port} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a `/proc/net/tcp` table has a socket in LISTEN (`0A`) on `port`.
fn listens(table: &str, port: u16) -> bool {
    let wanted = format!("{port:04X}");
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1);
        let state = fields.nth(1);
        local.and_then(|l| l.rsplit_once(':')).map(|(_, p)| p) == Some(wanted.as_str())
            && state == Some("0A")
    })
}

/// An exclusive lock on `/run/keelson-tests/subnet.S.lock` (the tests take the same locks), so
/// no test's cluster uses the subnet while the benchmark does.
fn claim_subnet(subnet: u8) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    let dir = Path::new("/run/keelson-tests");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("subnet.{subnet}.lock"));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        anyhow::anyhow!("subnet 172.30.{subnet}.0/24 is in use by a running test or benchmark")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(config: Config, gbps: &[f64], rps: &[f64], p50: &[f64]) -> Row {
        Row {
            config,
            samples: Samples {
                gbps: gbps.to_vec(),
                rps: rps.to_vec(),
                p50_us: p50.to_vec(),
                p99_us: p50.iter().map(|p| p * 2.0).collect(),
                errors: 0,
                redirects: if config.bpf() { 1234 } else { 0 },
            },
        }
    }

    fn info() -> RunInfo {
        RunInfo {
            started: "2026-01-01T00:00:00Z".into(),
            kernel: "6.18.0".into(),
            cpus: 2,
            duration: Duration::from_secs(2),
            iperf_seconds: 2,
            rounds: 3,
            connections: 2,
            steal_percent: Some(0.5),
            load_average: (Some(1.0), Some(2.0)),
            wall: Duration::from_secs(150),
        }
    }

    #[test]
    fn tables_give_medians_and_ratios_to_kernel_direct() {
        let rows = [
            row(
                Config::KernelDirect,
                &[10.0, 12.0, 11.0],
                &[20_000.0],
                &[50.0],
            ),
            row(Config::EbpfDirect, &[16.5, 1.0, 20.0], &[30_000.0], &[40.0]),
            row(Config::KernelTunnel, &[5.5], &[10_000.0], &[100.0]),
            row(Config::EbpfTunnel, &[], &[], &[]),
        ];
        let text = render_markdown(&info(), &rows);
        assert!(
            text.contains("| kernel-direct | 11.00 | 1.00 | 10.00, 12.00, 11.00 |"),
            "{text}"
        );
        assert!(
            text.contains("| ebpf-direct | 16.50 | 1.50 | 16.50, 1.00, 20.00 |"),
            "{text}"
        );
        assert!(
            text.contains("| kernel-tunnel | 5.50 | 0.50 | 5.50 |"),
            "{text}"
        );
        assert!(text.contains("| ebpf-tunnel | - | - | - |"), "{text}");
        assert!(
            text.contains("| ebpf-direct | 30\u{202f}000 | 1.50 |"),
            "{text}"
        );
        assert!(text.contains("| kernel-tunnel | 100.0 | 2.00 |"), "{text}");
        assert!(
            text.contains("| kernel-tunnel | 200.0 | 2.00 |"),
            "p99 table: {text}"
        );
        assert!(
            text.contains("| ebpf-direct | 0 | 1\u{202f}234 (tc_redirect_node) |"),
            "{text}"
        );
        assert!(
            text.contains("| kernel-tunnel | 0 | 0 (tc_redirect_tunnel) |"),
            "{text}"
        );
        assert!(text.contains("iperf3 -c <pod B> -p 5201 -t 2 -J"), "{text}");
        assert!(
            text.contains("docker inspect -f '{{.State.Pid}}'"),
            "{text}"
        );
        assert!(
            text.contains("CPU steal over the measurements: 0.5 %"),
            "{text}"
        );
        for config in Config::ALL {
            assert!(text.contains(&format!("- `{}`: ", config.name())), "{text}");
        }
        // Every table line has as many cells as its header.
        let (metrics, checks) = text.split_once("## Checks").expect("a checks section");
        let cells = |part: &str| -> Vec<usize> {
            part.lines()
                .filter(|l| l.starts_with('|'))
                .map(|l| l.matches('|').count())
                .collect()
        };
        assert!(cells(metrics).iter().all(|&n| n == 5), "{metrics}");
        assert_eq!(cells(metrics).len(), 4 * 6);
        assert_eq!(cells(checks), [4; 6]);
    }

    #[test]
    fn configurations_get_their_own_clusters_and_agent_flags() {
        let names: Vec<String> = Config::ALL.iter().map(|c| c.cluster_name()).collect();
        assert_eq!(names, ["bx0", "bx1", "bx2", "bx3"]);
        let subnets: Vec<u8> = Config::ALL.iter().map(|c| c.subnet()).collect();
        assert_eq!(subnets, [240, 241, 242, 243]);
        assert_eq!(
            Config::ALL.map(|c| (c.routing(), c.bpf())),
            [
                (Routing::Direct, false),
                (Routing::Direct, true),
                (Routing::Tunnel, false),
                (Routing::Tunnel, true)
            ]
        );
        assert_eq!(Config::EbpfTunnel.redirect_counter(), "tc_redirect_tunnel");
    }

    #[test]
    fn quick_and_default_plans() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            options: Options,
        }
        let quick = Plan::new(&Cli::parse_from(["x", "--quick"]).options).expect("valid");
        assert_eq!((quick.rounds, quick.duration), (1, Duration::from_secs(1)));
        let default = Plan::new(&Cli::parse_from(["x"]).options).expect("valid");
        assert_eq!(
            (default.rounds, default.duration, default.connections),
            (3, Duration::from_secs(2), 2)
        );
        let odd = Plan::new(&Cli::parse_from(["x", "--duration", "1.5"]).options).expect("ok");
        assert_eq!(odd.iperf_seconds(), 2);
        assert!(Plan::new(&Cli::parse_from(["x", "--rounds", "0"]).options).is_err());
    }

    #[test]
    fn pods_counters_and_listeners_are_parsed() {
        let json = r#"{"items": [
            {"metadata": {"name": "old", "uid": "u0", "deletionTimestamp": "x"},
             "spec": {"nodeName": "bx0-n1"}, "status": {"phase": "Running", "podIP": "10.220.0.9"}},
            {"metadata": {"name": "a", "uid": "u1"}, "spec": {"nodeName": "bx0-n1"},
             "status": {"phase": "Running", "podIP": "10.220.0.5"}}]}"#;
        assert_eq!(
            running_pod(json, "bx0-n1").expect("JSON"),
            Some(("a".into(), "u1".into(), Ipv4Addr::new(10, 220, 0, 5)))
        );
        assert_eq!(running_pod(json, "bx0-n2").expect("JSON"), None);
        let metrics = "keelson_datapath_events_total{path=\"tc_redirect_peer\"} 7\n\
                       keelson_datapath_events_total{path=\"tc_redirect_node\"} 42\n";
        assert_eq!(counter(metrics, "tc_redirect_node"), 42);
        assert_eq!(counter(metrics, "tc_redirect_tunnel"), 0);
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n   \
                     0: 0500DC0A:1451 00000000:0000 0A 00000000:00000000\n   \
                     1: 0500DC0A:1B58 0600DC0A:8000 01 00000000:00000000\n";
        assert!(listens(table, 5201));
        assert!(!listens(table, 7000), "established, not listening");
        assert!(!listens(table, 80));
        let table6 = "  sl  local_address remote_address st\n   \
                      0: 00000000000000000000000000000000:1451 00000000000000000000000000000000:0000 0A 0\n";
        assert!(listens(table6, 5201));
        assert!(deployment("bench-a", "bx0-n1").contains("kubernetes.io/hostname: bx0-n1"));
    }
}

//! `keelson-node-agent`: the node daemon.

use std::{path::PathBuf, process::ExitCode};

use clap::{CommandFactory as _, Parser, Subcommand};
use keelson_node_agent::{datapath, error_chain, routing};
use tracing_subscriber::EnvFilter;

mod commands;

/// keelson's node agent: pods, pod networking and the eBPF service datapath.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print what this kernel offers the datapath (and what `run` does without it), then load
    /// every embedded eBPF program into it (the verifier checks each) and report what it
    /// accepted. Also prints what it found on the host: the cgroup layout and cgroup2 root,
    /// Docker and its cgroup driver, the BPF filesystem and the locked-memory limit. Attaches
    /// nothing; needs root (CAP_BPF and CAP_NET_ADMIN).
    Check(CheckArgs),
    /// Remove everything the agent put on this host and print each thing removed: the node's
    /// pod containers, pod veths, routes, the vxlan device, TC filters, pinned maps and links
    /// (detaching socket-LB and TC programs), the credentials `join` wrote and the data
    /// directory. Refuses while an agent is running.
    Reset(ResetArgs),
    /// Run the node agent: load the service datapath, attach socket-LB to the cgroup and the
    /// per-packet LB for traffic from outside the node to the uplinks (--uplink), follow
    /// Services and EndpointSlices through the API, register the Node, run the pods bound to it
    /// on Docker with their own network namespace (the per-packet LB on each pod's veth), and
    /// serve /metrics.
    Run(Box<RunArgs>),
    /// Join a cluster with a bootstrap token (from `keelson-control-plane token create`):
    /// verify the cluster CA by the token's signature and --ca-cert-hash, get this node's client
    /// certificate through a CertificateSigningRequest, then write <config-dir>/node.kubeconfig
    /// and <config-dir>/node-agent.yaml for `run --config`.
    Join(keelson_node_agent::join::cli::JoinArgs),
    /// Inspect the service load balancer's pinned maps.
    Lb {
        #[command(subcommand)]
        command: LbCommand,
    },
    /// Inspect the TC path's connection tracking.
    Ct {
        #[command(subcommand)]
        command: CtCommand,
    },
    /// Print the NetworkPolicy verdicts the running agent recorded (like `hubble observe`):
    /// every drop and every new flow a policy allowed at a selected pod, with its 5-tuple,
    /// pods, reason and policy. A drop names the policies isolating the pod in that direction
    /// (no single policy drops a packet: none of them allows it).
    Observe(ObserveArgs),
}

/// The flags of `observe`.
#[derive(Debug, clap::Args)]
struct ObserveArgs {
    /// Only flows from or to this pod (`NAMESPACE/NAME`).
    #[arg(long, env = "KEELSON_OBSERVE_POD", value_name = "NS/NAME")]
    pod: Option<String>,
    /// Only this verdict: `allowed` or `dropped`.
    #[arg(long, env = "KEELSON_OBSERVE_VERDICT", value_name = "allowed|dropped")]
    verdict: Option<keelson_node_agent::datapath::flows::FlowVerdict>,
    /// The last N matching flows the agent kept [default: 20, or none with --follow].
    #[arg(long, env = "KEELSON_OBSERVE_LAST", value_name = "N")]
    last: Option<usize>,
    /// Keep printing new flows as they happen.
    #[arg(long, short = 'f', env = "KEELSON_OBSERVE_FOLLOW")]
    follow: bool,
    /// Output: `table` or `json` (one JSON object per line).
    #[arg(long, short = 'o', env = "KEELSON_OBSERVE_OUTPUT", default_value = "table",
          value_parser = ["table", "json"])]
    output: String,
    /// The running agent's --metrics-listen address, where it serves /flows.
    #[arg(
        long,
        env = "KEELSON_METRICS_LISTEN",
        default_value = "127.0.0.1:10249"
    )]
    server: std::net::SocketAddr,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// A YAML file whose keys are these flags' names (`node-name: worker-1`); flags given on
    /// the command line win over it, and it wins over environment variables and defaults.
    #[arg(long, env = "KEELSON_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    pins: PinArgs,
    /// Kubeconfig for the API server (the admin or the node's credentials).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,
    /// API servers to fail over between (`https://HOST:PORT`, comma-separated), instead of the
    /// kubeconfig's server: the agent relays its API connections through 127.0.0.1 to the
    /// first that accepts, starting from the last that worked.
    #[arg(long, env = "KEELSON_API_SERVERS", value_delimiter = ',', value_name = "URL",
          value_parser = api_server)]
    api_servers: Vec<keelson_node_agent::api_failover::ApiServer>,
    /// cgroup2 directory whose sockets are load-balanced: `auto` for the host's cgroup2 root
    /// (`/sys/fs/cgroup` on pure cgroup v2, `/sys/fs/cgroup/unified` on a hybrid hierarchy).
    #[arg(long, env = "KEELSON_CGROUP", default_value = keelson_node_agent::host::CGROUP_AUTO)]
    cgroup: PathBuf,
    /// This node's addresses, where NodePorts answer (repeat the flag for several) [default: the
    /// address of the interface with the default route].
    #[arg(
        long = "node-address",
        env = "KEELSON_NODE_ADDRESSES",
        value_delimiter = ','
    )]
    node_addresses: Vec<std::net::Ipv4Addr>,
    /// Address for /metrics and /healthz.
    #[arg(
        long,
        env = "KEELSON_METRICS_LISTEN",
        default_value = "127.0.0.1:10249"
    )]
    metrics_listen: std::net::SocketAddr,
    /// Capacity of the TC path's conntrack table (two entries per flow).
    #[arg(long, env = "KEELSON_CT_CAPACITY", default_value_t = keelson_ebpf_common::capacity::CT)]
    ct_capacity: u32,
    /// Milliseconds between two conntrack GC passes.
    #[arg(long, env = "KEELSON_CT_GC_INTERVAL_MS", default_value_t = 5_000)]
    ct_gc_interval_ms: u64,
    /// Conntrack entries the GC reads per pass (bounds its work).
    #[arg(long, env = "KEELSON_CT_GC_SCAN_BUDGET", default_value_t = 16_384)]
    ct_gc_scan_budget: usize,
    /// Conntrack fill ratio past which the GC evicts closing and idle flows early.
    #[arg(long, env = "KEELSON_CT_HIGH_WATER", default_value_t = 0.9)]
    ct_high_water: f64,
    /// Fill ratio the GC evicts down to once past the high-water mark.
    #[arg(long, env = "KEELSON_CT_LOW_WATER", default_value_t = 0.8)]
    ct_low_water: f64,
    /// Seconds without a packet after which an established flow may be evicted under pressure.
    #[arg(long, env = "KEELSON_CT_EVICT_IDLE_S", default_value_t = 60)]
    ct_evict_idle_s: u64,
    /// Attach the per-packet load balancer (`tc_from_pod`) to every pod's veth, for traffic
    /// from pods that socket-LB does not see.
    #[arg(long, env = "KEELSON_POD_TC", value_name = "on|off", default_value = "on",
          value_parser = on_off, action = clap::ArgAction::Set)]
    pod_tc: bool,
    /// Interfaces traffic from outside the node comes in by, where NodePorts, externalIPs and
    /// LoadBalancer IPs answer (`tc_from_netdev` at their TC ingress): names (repeat the flag or
    /// separate them with commas), `auto` for the interface holding the IPv4 default route, or
    /// `off` for none (NodePorts then answer only on the node itself, through socket-LB).
    #[arg(
        long,
        env = "KEELSON_UPLINK",
        value_name = "NAME|auto|off",
        value_delimiter = ',',
        default_value = "auto"
    )]
    uplink: Vec<String>,
    /// The interface on which this node answers ARP for the LoadBalancer IPs it is elected to
    /// announce (one node per address, through a Lease `kube-system/keelson-lb-<ip>`; another
    /// node takes an address over when its node dies). Default: none, nothing is announced.
    /// Name only an interface on a network whose addresses the cluster's LoadBalancer pool
    /// belongs to, never a machine's real uplink on a shared network.
    #[arg(long, env = "KEELSON_LB_ANNOUNCE_INTERFACE", value_name = "NAME")]
    lb_announce_interface: Option<String>,
    /// The cluster's Service CIDR (the control plane's --service-cluster-ip-range): unreachable
    /// towards the uplink, so an untranslated service address never leaves the node.
    #[arg(long, env = "KEELSON_SERVICE_CIDR", default_value = "10.96.0.0/12")]
    service_cidr: keelson_api::cidr::Ipv4Cidr,
    /// How other nodes' pod CIDRs are reached (the same on every node of a cluster): `direct`
    /// routes them to the owning node's address out of the first uplink (nodes share L2);
    /// `tunnel` sends them through VXLAN (UDP 8472) to it, pods' MTU 50 bytes below the
    /// uplink's.
    #[arg(
        long,
        env = "KEELSON_ROUTING",
        value_name = "direct|tunnel",
        default_value = "direct"
    )]
    routing: keelson_node_agent::routing::RoutingMode,
    /// Whether pod packets skip the node's stack: into local pods with `bpf_redirect_peer`,
    /// to other nodes from TC. `off` leaves them to the node's routing table (same routes).
    #[arg(long, env = "KEELSON_ROUTING_BPF", value_name = "on|off", default_value = "on",
          value_parser = on_off, action = clap::ArgAction::Set)]
    routing_bpf: bool,
    #[command(flatten)]
    kubelet: KubeletArgs,
}

/// The kubelet's part of `run`: pods on Docker with their own network namespace.
#[derive(Debug, clap::Args)]
struct KubeletArgs {
    /// Pod volumes and IPAM state [default: /var/lib/keelson-agent/<node-name>].
    #[arg(long, env = "KEELSON_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The Docker engine's socket.
    #[arg(
        long,
        env = "KEELSON_DOCKER_SOCKET",
        default_value = "/var/run/docker.sock"
    )]
    docker_socket: String,
    /// Pod CIDR to use while the Node has no spec.podCIDR (no IPAM controller).
    #[arg(
        long,
        env = "KEELSON_POD_CIDR",
        value_parser = keelson_node_agent::network::ipam::parse_pod_cidr
    )]
    pod_cidr: Option<keelson_api::cidr::Ipv4Cidr>,
    /// Image whose `sleep` holds each pod's namespaces (built by `cargo xtask images`).
    #[arg(
        long,
        env = "KEELSON_SANDBOX_IMAGE",
        default_value = "keelson/busybox:1"
    )]
    sandbox_image: String,
    /// The node's pod capacity.
    #[arg(long, env = "KEELSON_MAX_PODS", default_value_t = 110)]
    max_pods: u32,
    /// HTTPS endpoint the API server reaches for container logs (only clients with a cluster CA
    /// certificate for `kube-apiserver-kubelet-client` or `system:masters`); `off` disables it.
    #[arg(long, env = "KEELSON_KUBELET_LISTEN", default_value = "0.0.0.0:10250")]
    kubelet_listen: String,
    /// How long the node's Lease is valid without renewal; the agent renews it every quarter of
    /// that. The control plane's --node-monitor-grace-period must be longer.
    #[arg(long, env = "KEELSON_NODE_LEASE_DURATION_SECONDS",
          default_value_t = keelson_node_agent::node::LEASE_DURATION_SECONDS,
          value_parser = clap::value_parser!(i32).range(1..=3600))]
    node_lease_duration_seconds: i32,
    /// First container restart back-off in seconds (doubles up to 300).
    #[arg(long, env = "KEELSON_RESTART_BACKOFF", default_value_t = 10)]
    restart_backoff_seconds: u64,
    /// Nameserver of pods with dnsPolicy ClusterFirst: `gateway` serves cluster DNS from this
    /// agent on the pod CIDR's gateway address, port 53; an IPv4 address points pods at a DNS
    /// served elsewhere; `off` gives them the node's resolvers.
    #[arg(long, env = "KEELSON_CLUSTER_DNS", default_value = "gateway")]
    cluster_dns: keelson_node_agent::pods::dns::ClusterDnsMode,
    /// The cluster domain: pods search `<namespace>.svc.<domain>`, `svc.<domain>`, `<domain>`.
    #[arg(long, env = "KEELSON_CLUSTER_DOMAIN", default_value = keelson_dns::DEFAULT_DOMAIN)]
    cluster_domain: String,
    /// The resolver configuration of the node (the kubelet's --resolv-conf): pods with
    /// dnsPolicy Default get its nameservers, and the cluster DNS forwards names outside the
    /// cluster domain to them (systemd-resolved's upstream list when it names only loopback).
    #[arg(long, env = "KEELSON_RESOLV_CONF", default_value = keelson_dns::forward::RESOLV_CONF)]
    resolv_conf: std::path::PathBuf,
    /// The cgroup every pod container is created under (Docker's `--cgroup-parent`): a slice
    /// (`keelson-pods.slice`) under Docker's systemd cgroup driver, a path (`/keelson-worker-1`)
    /// under its cgroupfs driver [default: Docker's own]. With Docker's cgroupfs driver on a hybrid
    /// hierarchy the containers land in `<cgroup2 root>/<PATH>/<id>` too, so pointing --cgroup
    /// at that directory load-balances this node's pods only.
    #[arg(long, env = "KEELSON_CGROUP_PARENT", value_name = "PATH")]
    cgroup_parent: Option<String>,
    /// The size at which a container's log file is rotated (the kubelet's
    /// containerLogMaxSize); `kubectl logs` reads across the kept files.
    #[arg(long, alias = "containerLogMaxSize", env = "KEELSON_CONTAINER_LOG_MAX_SIZE",
          default_value = "10Mi",
          value_parser = keelson_node_agent::pods::runtime::LogRotation::parse_size)]
    container_log_max_size: u64,
    /// How many log files each container keeps, the current one included (the kubelet's
    /// containerLogMaxFiles).
    #[arg(long, alias = "containerLogMaxFiles", env = "KEELSON_CONTAINER_LOG_MAX_FILES",
          default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..))]
    container_log_max_files: u32,
    /// How long an exec, attach or port-forward connection may go without a byte either way
    /// before the node closes it (`4h`, `30m`, `90s`; `0s`: never), the kubelet's
    /// streamingConnectionIdleTimeout.
    #[arg(long, alias = "streamingConnectionIdleTimeout",
          env = "KEELSON_STREAMING_CONNECTION_IDLE_TIMEOUT", default_value = "4h",
          value_parser = keelson_node_agent::pods::stream::idle::parse_timeout)]
    streaming_connection_idle_timeout: std::time::Duration,
    /// Resources set aside for Kubernetes components, subtracted from allocatable
    /// (`cpu=100m,memory=256Mi,ephemeral-storage=1Gi,pid=1000`; the kubelet's kubeReserved).
    #[arg(long, alias = "kubeReserved", env = "KEELSON_KUBE_RESERVED", default_value = "",
          value_parser = keelson_node_agent::node::pressure::parse_reserved)]
    kube_reserved: std::collections::BTreeMap<String, i64>,
    /// Resources set aside for the operating system, subtracted from allocatable (the
    /// kubelet's systemReserved).
    #[arg(long, alias = "systemReserved", env = "KEELSON_SYSTEM_RESERVED", default_value = "",
          value_parser = keelson_node_agent::node::pressure::parse_reserved)]
    system_reserved: std::collections::BTreeMap<String, i64>,
    /// Hard eviction thresholds (`memory.available<100Mi,nodefs.available<10%,...`): the node
    /// reports MemoryPressure/DiskPressure/PIDPressure below them, and allocatable excludes
    /// them (the kubelet's evictionHard and its Linux defaults).
    #[arg(long, alias = "evictionHard", env = "KEELSON_EVICTION_HARD",
          default_value = keelson_node_agent::node::pressure::DEFAULT_EVICTION_HARD,
          value_parser = keelson_node_agent::node::pressure::parse_thresholds)]
    eviction_hard: keelson_node_agent::node::pressure::Thresholds,
    /// How far below a crossed threshold's signal must recover before eviction stops
    /// (`memory.available=0Mi,nodefs.available=500Mi`; the kubelet's evictionMinimumReclaim).
    #[arg(long, alias = "evictionMinimumReclaim", env = "KEELSON_EVICTION_MINIMUM_RECLAIM",
          default_value = "",
          value_parser = keelson_node_agent::node::eviction::parse_minimum_reclaim)]
    eviction_minimum_reclaim: keelson_node_agent::node::pressure::Thresholds,
    /// Image filesystem usage (percent) from which unused images are removed, least recently
    /// used first; 100 turns image garbage collection off.
    #[arg(long, env = "KEELSON_IMAGE_GC_HIGH_THRESHOLD", default_value_t = 85,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    image_gc_high_threshold: u8,
    /// Image filesystem usage (percent) image garbage collection frees down to.
    #[arg(long, env = "KEELSON_IMAGE_GC_LOW_THRESHOLD", default_value_t = 80,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    image_gc_low_threshold: u8,
}

/// The flags of `check`.
#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// The Docker engine's socket.
    #[arg(
        long,
        env = "KEELSON_DOCKER_SOCKET",
        default_value = "/var/run/docker.sock"
    )]
    docker_socket: String,
}

/// The flags of `reset`: those of `run` that place things on the host.
#[derive(Debug, clap::Args)]
struct ResetArgs {
    #[command(flatten)]
    pins: PinArgs,
    /// The agent's data directory [default: /var/lib/keelson-agent/<node-name>].
    #[arg(long, env = "KEELSON_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The Docker engine's socket.
    #[arg(
        long,
        env = "KEELSON_DOCKER_SOCKET",
        default_value = "/var/run/docker.sock"
    )]
    docker_socket: String,
    /// Where `join` wrote the node's credentials (`node.kubeconfig` and the files it names
    /// there go; `node-agent.yaml` stays).
    #[arg(long, env = "KEELSON_CONFIG_DIR", default_value = "/etc/keelson")]
    config_dir: PathBuf,
    /// The Service CIDR whose unreachable route `run` added.
    #[arg(long, env = "KEELSON_SERVICE_CIDR", default_value = "10.96.0.0/12")]
    service_cidr: keelson_api::cidr::Ipv4Cidr,
    /// The agent's metrics address: if something answers there an agent is running and
    /// nothing is removed (`off` skips this check).
    #[arg(
        long,
        env = "KEELSON_METRICS_LISTEN",
        default_value = "127.0.0.1:10249"
    )]
    metrics_listen: String,
}

#[derive(Debug, Subcommand)]
enum CtCommand {
    /// Print the conntrack entries (like `cilium bpf ct list global`).
    List(PinArgs),
}

#[derive(Debug, Subcommand)]
enum LbCommand {
    /// Print every frontend (service address:port/protocol) and its backends, as the kernel
    /// maps hold them (like `cilium bpf lb list`).
    List(PinArgs),
    /// Print the datapath counters and map fill levels in Prometheus' text format.
    Metrics(PinArgs),
}

#[derive(Debug, clap::Args)]
struct PinArgs {
    /// This node's name; the maps live under `/sys/fs/bpf/keelson/<node>`.
    #[arg(long, env = "KEELSON_NODE_NAME", default_value_t = default_node_name())]
    node_name: String,
    /// Directory holding the pinned maps (overrides the one derived from --node-name).
    #[arg(long, env = "KEELSON_PIN_DIR")]
    pin_dir: Option<PathBuf>,
}

impl PinArgs {
    fn pin_dir(&self) -> PathBuf {
        self.pin_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/sys/fs/bpf/keelson").join(&self.node_name))
    }
}

/// A switch flag's value that is neither `on` nor `off`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is neither `on` nor `off`")]
struct NotOnOff {
    /// What was given.
    value: String,
}

/// `on`/`off` (a YAML config file may also give a boolean).
fn on_off(value: &str) -> Result<bool, NotOnOff> {
    match value {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        other => Err(NotOnOff {
            value: other.to_owned(),
        }),
    }
}

/// One `--api-servers` URL. clap prints only the error's own text, so its causes are folded
/// in (a URL that does not parse says why).
fn api_server(
    text: &str,
) -> Result<keelson_node_agent::api_failover::ApiServer, keelson_node_agent::Chained> {
    keelson_node_agent::api_failover::parse_server(text)
        .map_err(|e| keelson_node_agent::Chained::new(&e))
}

fn default_node_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// `RUST_LOG` (default `info`). kube's client logs every failed request at ERROR, even one its
/// caller retries or reports with more context (a connection reset the agent retries is not an
/// error of the agent's), so that line is off unless `RUST_LOG` names `kube_client`.
fn log_filter() -> EnvFilter {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    if directives.contains("kube_client") {
        return filter;
    }
    // `join` reads cluster-info once without verifying the server, on purpose (the token's
    // signature and the CA hash verify it); kube warns about that read.
    [
        "kube_client::client::builder=off",
        "kube_client::client::tls=off",
    ]
    .into_iter()
    .filter_map(|directive| directive.parse().ok())
    .fold(filter, EnvFilter::add_directive)
}

fn main() -> ExitCode {
    keelson_daemon::log::init(log_filter(), keelson_daemon::log::Output::Stderr);
    if let Err(error) = keelson_daemon::limits::raise_open_files() {
        tracing::warn!(%error, "cannot raise the open-file limit");
    }
    let argv = keelson_daemon::config_file::expand(
        &Cli::command(),
        Some("run"),
        std::env::args_os().collect(),
        std::env::var_os(keelson_daemon::config_file::ENV),
    );
    let cli = match argv {
        Ok(argv) => Cli::parse_from(argv),
        Err(error) => {
            eprintln!("keelson-node-agent run: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Check(args) => commands::check(&args),
        Command::Reset(args) => commands::reset(&args),
        Command::Run(args) => match run(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) if error.is::<keelson_node_agent::probe::Refusal>() => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
            Err(error) => {
                eprintln!("keelson-node-agent run: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Join(args) => keelson_node_agent::join::cli::main(&args),
        Command::Lb {
            command: LbCommand::List(args),
        } => commands::lb_list(&args),
        Command::Ct {
            command: CtCommand::List(args),
        } => commands::print_lines("ct list", &args, |dir| {
            datapath::lb::list_conntrack(dir)
                .map(|flows| flows.iter().map(ToString::to_string).collect())
        }),
        Command::Observe(args) => commands::observe(&args),
        Command::Lb {
            command: LbCommand::Metrics(args),
        } => commands::print_lines("lb metrics", &args, |dir| {
            datapath::lb::metrics_text(dir).map(|text| vec![text.trim_end().to_owned()])
        }),
    }
}

fn run(mut args: RunArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;

    let pin_dir = args.pins.pin_dir();
    // Checked before anything is loaded or attached: a wrong flag changes nothing.
    let uplinks = uplinks(&args.uplink)?;
    // The host: cgroup2, Docker and its cgroup driver; then RLIMIT_MEMLOCK and bpffs.
    let host = keelson_node_agent::host::preflight(
        &args.cgroup,
        &args.kubelet.docker_socket,
        args.kubelet.cgroup_parent.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    let pods_cgroup = keelson_node_agent::host::docker::pods_cgroup(
        &host.cgroup_root,
        host.engine.driver,
        args.kubelet.cgroup_parent.as_deref(),
    );
    tracing::info!(cgroup = %host.cgroup.display(), layout = ?host.layout,
        docker = %host.engine.version, driver = %host.engine.driver,
        pods_cgroup = %pods_cgroup.display(), memlock = %host.memlock,
        mounted_bpffs = host.mounted_bpffs, "host checked");
    args.cgroup = host.cgroup;
    let _lock = keelson_node_agent::host::AgentLock::take(&data_dir(&args))
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    // What this kernel offers: refuse, or apply the fallbacks.
    args.routing_bpf = kernel_plan(&args, &uplinks)?.routing_bpf;
    anyhow::ensure!(
        0.0 < args.ct_low_water
            && args.ct_low_water < args.ct_high_water
            && args.ct_high_water <= 1.0,
        "--ct-low-water and --ct-high-water must satisfy 0 < low < high <= 1"
    );
    let config = datapath::lb::LbConfig {
        ct: args.ct_capacity,
        ..datapath::lb::LbConfig::new(&pin_dir)
    };
    let mut lb = datapath::lb::LoadBalancer::load(&config)
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))
        .context("loading the service datapath")?;
    lb.attach_cgroup(&args.cgroup)
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))
        .with_context(|| format!("attaching socket-LB to {}", args.cgroup.display()))?;
    attach_uplinks(&mut lb, &uplinks, args.pod_tc)?;
    // NodePorts answer on the node's addresses: the ones given, else the address of the
    // interface holding the default route (the InternalIP the Node reports).
    let node_addresses = if args.node_addresses.is_empty() {
        keelson_node_agent::node::host_address()
            .into_iter()
            .collect()
    } else {
        args.node_addresses.clone()
    };
    // Shared with the pod network, which attaches TC programs to pod veths.
    let lb = std::sync::Arc::new(std::sync::Mutex::new(lb));
    let pod_hook: Option<std::sync::Arc<dyn keelson_node_agent::network::PodHook>> = if args.pod_tc
    {
        Some(std::sync::Arc::new(
            datapath::lb::PodTc::new(lb.clone(), args.routing_bpf)
                .map_err(|e| anyhow::anyhow!(error_chain(&e)))
                .context("preparing TC on pod veths")?,
        ))
    } else {
        None
    };
    let node = datapath::lb::NodeContext {
        node_name: args.pins.node_name.clone(),
        node_addresses,
    };
    let gc_policy = datapath::lb::GcPolicy {
        high_water: args.ct_high_water,
        low_water: args.ct_low_water,
        evict_idle: std::time::Duration::from_secs(args.ct_evict_idle_s),
        scan_budget: args.ct_gc_scan_budget.max(1),
        ..datapath::lb::GcPolicy::default()
    };
    let mut gc = datapath::lb::ConntrackGc::open(&pin_dir, gc_policy)
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))
        .context("opening the conntrack map for its GC")?;
    let gc_interval = std::time::Duration::from_millis(args.ct_gc_interval_ms.max(1));
    // The GC only reads and deletes pinned-map entries; it lives as long as the process.
    std::thread::Builder::new()
        .name("ct-gc".into())
        .spawn(move || {
            loop {
                std::thread::sleep(gc_interval);
                match gc.pass() {
                    Ok(report) if report.expired_flows + report.evicted_flows > 0 => {
                        tracing::info!(
                            expired = report.expired_flows,
                            evicted = report.evicted_flows,
                            entries = report.entries,
                            capacity = report.capacity,
                            "conntrack GC"
                        );
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(error = %error_chain(&error), "conntrack GC pass failed");
                    }
                }
            }
        })
        .context("starting the conntrack GC")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
            .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .context("using the kubeconfig")?;
        let config = api_failover(config, &args.api_servers).await?;
        let client_ca = config.root_cert.clone().unwrap_or_default();
        // With a node client certificate, a client whose certificate the rotation renews in
        // place before it expires.
        let (client, rotation) =
            keelson_node_agent::join::rotate::client(config, &args.kubeconfig)?;
        // Pods of other nodes are reached out of the first uplink (or through the tunnel
        // over it).
        let routing = match uplinks.first() {
            Some(uplink) => {
                let mode = args.routing;
                let pod_mtu = routing::Routing::pod_mtu(mode, uplink)
                    .await
                    .map_err(|e| anyhow::anyhow!(error_chain(&e)))
                    .context("--routing")?;
                let maps = args.routing_bpf.then(|| lb.clone());
                let address = node_address(&args)?;
                let routing = routing::Routing::start(mode, uplink, address, maps, &lb)
                    .await
                    .map_err(|e| anyhow::anyhow!(error_chain(&e)))
                    .with_context(|| format!("--routing {mode} over {uplink}"))?;
                tracing::info!(%mode, uplink, bpf = args.routing_bpf, "routing pod CIDRs of other nodes");
                Some((routing, pod_mtu))
            }
            None => {
                tracing::warn!("no uplink: pods of other nodes are not routed (--uplink)");
                None
            }
        };
        let pod_mtu = routing.as_ref().and_then(|(_, mtu)| *mtu);
        let health = keelson_node_agent::health::checks(
            pin_dir.clone(),
            args.kubelet.docker_socket.clone(),
            std::time::Duration::from_secs(
                u64::try_from(args.kubelet.node_lease_duration_seconds).unwrap_or(40),
            ),
        );
        let kubelet = start_kubelet(
            client.clone(),
            &args,
            client_ca,
            (pod_hook, pod_mtu),
            health.clone(),
        )
        .await?;
        let routing_client = client.clone();
        // Uplinks deleted and created again, and address changes, while the agent runs.
        let (reroute, rerouted) = tokio::sync::mpsc::unbounded_channel();
        let routing_uplink = routing
            .is_some()
            .then(|| uplinks.first().cloned())
            .flatten()
            .map(|name| (name, reroute));
        let watched_uplinks = {
            let lb = lb.clone();
            let uplinks = uplinks.clone();
            async move {
                if uplinks.is_empty() {
                    return std::future::pending().await;
                }
                datapath::lb::watch_uplinks(lb, uplinks, routing_uplink)
                    .await
                    .map_err(|e| anyhow::anyhow!(error_chain(&e)))
                    .context("following the uplinks")
            }
        };
        let rotation_client = client.clone();
        let rotated = async move {
            match rotation {
                Some(rotation) => rotation.run(rotation_client).await,
                None => std::future::pending().await,
            }
        };
        let routed = async {
            match routing {
                Some((routing, _)) => {
                    routing::run(
                        routing_client,
                        routing,
                        args.pins.node_name.clone(),
                        args.kubelet.pod_cidr,
                        rerouted,
                    )
                    .await
                }
                None => std::future::pending().await,
            }
        };
        let pod_metrics = kubelet.metrics();
        let services = kubelet.services();
        let announce_client = client.clone();
        let announce_services = services.clone();
        let announce_node = node.node_name.clone();
        let announced = async {
            match &args.lb_announce_interface {
                Some(interface) => keelson_node_agent::lb_announce::run(
                    announce_client,
                    keelson_node_agent::lb_announce::Config::new(&announce_node, interface),
                    announce_services,
                )
                .await
                .map_err(|e| anyhow::anyhow!("--lb-announce-interface: {}", error_chain(&e))),
                None => std::future::pending().await,
            }
        };
        kubelet.host_ports().connect(lb.clone(), node.node_addresses.clone());
        let listener = tokio::net::TcpListener::bind(args.metrics_listen)
            .await
            .with_context(|| format!("listening on {}", args.metrics_listen))?;
        let metrics_pins = pin_dir.clone();
        let metrics_lb = lb.clone();
        let proxy_metrics = keelson_node_agent::service_sync::ProxyMetrics::default();
        let policy_metrics = datapath::policy::PolicyMetrics::default();
        let policy_tables =
            std::sync::Arc::new(std::sync::RwLock::new(datapath::policy::PolicyTables::default()));
        let agent_metrics = std::sync::Arc::new(
            keelson_node_agent::metrics::AgentMetrics::new(&pod_metrics, &proxy_metrics)
                .with_policy(&policy_metrics)
                .with_collector(Box::new(datapath::flows::reader::EndpointStats {
                    pin_dir: pin_dir.clone(),
                    tables: policy_tables.clone(),
                })),
        );
        // The flow view: the ring buffer's events, explained, kept for `observe`.
        let flow_store = std::sync::Arc::new(datapath::flows::FlowStore::new(
            datapath::flows::store::DEFAULT_CAPACITY,
        ));
        let flows_read = {
            let (store, tables, pins) = (flow_store.clone(), policy_tables.clone(), pin_dir.clone());
            async move {
                datapath::flows::reader::run(&pins, &store, &tables)
                    .await
                    .map_err(|e| anyhow::anyhow!(error_chain(&e)))
                    .context("reading flow events")
            }
        };
        // NetworkPolicy: the compiler writes the maps the pod programs judge traffic by. The
        // node's own addresses, the pod gateway among them (cluster DNS and the kubelet's probes
        // come from it), are HOST: always allowed, as Kubernetes requires.
        let mut policy_maps = datapath::policy::PinnedPolicyMaps::open(&pin_dir)
            .map_err(|e| anyhow::anyhow!(error_chain(&e)))
            .context("opening the NetworkPolicy maps")?;
        let policy_node = datapath::policy::NodeInfo {
            name: node.node_name.clone(),
            addresses: node
                .node_addresses
                .iter()
                .copied()
                .chain(
                    args.kubelet
                        .pod_cidr
                        .map(keelson_node_agent::network::ipam::gateway),
                )
                .collect(),
        };
        let policy_client = client.clone();
        let policed = async {
            if !args.pod_tc {
                // Without the pod programs nothing would read the maps.
                tracing::warn!("--pod-tc off: NetworkPolicies are not enforced");
                return std::future::pending().await;
            }
            datapath::policy::run(
                policy_client,
                &mut policy_maps,
                policy_node,
                &policy_metrics,
                &policy_tables,
                std::time::Duration::from_millis(100),
            )
            .await
        };
        // READY=1 once /readyz passes, the watchdog while /livez does (no-op outside systemd).
        let _notifier = keelson_daemon::systemd::spawn(health.clone());
        let app = health
            .routes()
            .merge(datapath::flows::store::routes(flow_store))
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let pins = metrics_pins.clone();
                    let metrics = agent_metrics.clone();
                    let lb = metrics_lb.clone();
                    async move {
                        use axum::{http::header::CONTENT_TYPE, response::IntoResponse as _};
                        let owners = lb
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .backend_owners();
                        match datapath::lb::DatapathMetrics::read(&pins)
                            .map(|datapath| datapath.with_owners(owners))
                        {
                            Ok(datapath) => (
                                [(CONTENT_TYPE, keelson_node_agent::metrics::CONTENT_TYPE)],
                                metrics.render(Some(datapath)),
                            )
                                .into_response(),
                            Err(e) => (
                                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                                format!("datapath maps unreadable: {}\n", error_chain(&e)),
                            )
                                .into_response(),
                        }
                    }
                }),
            );
        tracing::info!(node = %node.node_name, pins = %pin_dir.display(), metrics = %args.metrics_listen, "node agent running");
        tokio::select! {
            served = axum::serve(listener, app) => served.context("serving /metrics"),
            synced = keelson_node_agent::service_sync::run(client, &lb, node, services, &proxy_metrics) => synced,
            pods = kubelet.run() => pods,
            routed = routed => routed,
            policed = policed => policed,
            announced = announced => announced,
            flows = flows_read => flows,
            watched = watched_uplinks => watched,
            rotated = rotated => rotated,
            () = keelson_daemon::systemd::stop_signal() => {
                keelson_daemon::systemd::stopping();
                tracing::info!("stopping; pinned maps and links stay for the next start");
                Ok(())
            }
        }
    })
}

/// `config` relaying through a failover proxy to `servers`; unchanged when there are none.
async fn api_failover(
    config: kube::Config,
    servers: &[keelson_node_agent::api_failover::ApiServer],
) -> anyhow::Result<kube::Config> {
    use keelson_node_agent::api_failover;
    if servers.is_empty() {
        return Ok(config);
    }
    let proxy = api_failover::start(servers.to_vec())
        .await
        .map_err(|e| anyhow::anyhow!("--api-servers: starting the failover proxy: {e}"))?;
    tracing::info!(servers = ?servers.iter().map(ToString::to_string).collect::<Vec<_>>(),
        proxy = %proxy.listen, "API connections fail over between --api-servers");
    api_failover::through_proxy(config, proxy)
        .map_err(|e| anyhow::anyhow!("--api-servers: {}", error_chain(&e)))
}

/// Probes the kernel and plans around it: a [`keelson_node_agent::probe::Refusal`] when it
/// lacks a required feature, else the plan, its fallbacks logged.
fn kernel_plan(
    args: &RunArgs,
    uplinks: &[String],
) -> anyhow::Result<keelson_node_agent::probe::Plan> {
    use keelson_node_agent::probe;
    let capabilities =
        probe::Capabilities::probe().map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    let wanted = probe::Wanted {
        routing_bpf: args.routing_bpf,
        tunnel: args.routing == routing::RoutingMode::Tunnel,
        uplinks: !uplinks.is_empty(),
    };
    let plan = probe::plan(&capabilities, &wanted)?;
    for fallback in &plan.fallbacks {
        tracing::warn!(kernel = %capabilities.kernel, "{fallback}");
    }
    tracing::info!(kernel = %capabilities.kernel, tc = ?plan.tc_attach, "kernel capabilities probed");
    Ok(plan)
}

/// `--uplink`'s error as one line naming the flag.
fn uplink_error(error: datapath::lb::UplinkError) -> anyhow::Error {
    use datapath::lb::UplinkError;
    match error {
        UplinkError::Datapath { interface, source } => anyhow::anyhow!(
            "--uplink {interface}: attaching tc_from_netdev: {}",
            error_chain(&source)
        ),
        UplinkError::NoSuchInterface(_) => anyhow::anyhow!("--uplink {error}"),
        other => anyhow::anyhow!("--uplink: {other}"),
    }
}

/// The interfaces `--uplink` names (`auto` resolved), each checked to exist.
fn uplinks(values: &[String]) -> anyhow::Result<Vec<String>> {
    let uplinks =
        datapath::lb::resolve_uplinks(values, keelson_node_agent::node::default_route_interface)
            .map_err(uplink_error)?;
    if uplinks.auto_unresolved {
        tracing::warn!(
            "--uplink auto: no IPv4 default route, so no uplink; name the interfaces with --uplink"
        );
    }
    datapath::lb::require_interfaces(&uplinks.interfaces).map_err(uplink_error)?;
    Ok(uplinks.interfaces)
}

/// Attaches `tc_from_netdev` to `interfaces` (and removes an earlier run's links on interfaces
/// no longer named).
fn attach_uplinks(
    lb: &mut datapath::lb::LoadBalancer,
    interfaces: &[String],
    pod_tc: bool,
) -> anyhow::Result<()> {
    let removed = datapath::lb::attach_uplinks(lb, interfaces).map_err(uplink_error)?;
    if !removed.is_empty() {
        tracing::info!(interfaces = ?removed, "removed tc_from_netdev from former uplinks");
    }
    if interfaces.is_empty() {
        tracing::info!("no uplink: NodePorts answer only on the node itself (socket-LB)");
        return Ok(());
    }
    tracing::info!(interfaces = ?interfaces, "tc_from_netdev attached to the uplinks");
    if !pod_tc {
        tracing::warn!(
            "--pod-tc off: replies of local pods to clients outside the node are not \
             reverse-NATed (tc_from_pod on pod veths does it), so NodePorts only answer from \
             backends on other nodes"
        );
    }
    Ok(())
}

/// The node's address (its InternalIP, the tunnel's local end): the first --node-address, else
/// the address of the interface holding the default route.
fn node_address(args: &RunArgs) -> anyhow::Result<std::net::Ipv4Addr> {
    args.node_addresses
        .first()
        .copied()
        .or_else(keelson_node_agent::node::host_address)
        .ok_or_else(|| anyhow::anyhow!("no IPv4 address found for the node: pass --node-address"))
}

/// `--data-dir`, defaulting to `/var/lib/keelson-agent/<node-name>`.
fn data_dir(args: &RunArgs) -> PathBuf {
    args.kubelet
        .data_dir
        .clone()
        .unwrap_or_else(|| default_data_dir(&args.pins.node_name))
}

fn default_data_dir(node_name: &str) -> PathBuf {
    PathBuf::from("/var/lib/keelson-agent").join(node_name)
}

/// Registers the Node and prepares the pod runner (Docker, pod network).
async fn start_kubelet(
    client: kube::Client,
    args: &RunArgs,
    client_ca: Vec<Vec<u8>>,
    (pod_hook, pod_mtu): (
        Option<std::sync::Arc<dyn keelson_node_agent::network::PodHook>>,
        Option<u32>,
    ),
    health: keelson_daemon::health::Health,
) -> anyhow::Result<keelson_node_agent::pods::Kubelet> {
    use keelson_node_agent::pods::{Kubelet, KubeletSettings, PodsConfig};
    let node_name = args.pins.node_name.clone();
    let host_ip = node_address(args)?;
    let settings = KubeletSettings {
        pods: PodsConfig {
            data_dir: data_dir(args),
            node_name,
            host_ip,
            sandbox_image: args.kubelet.sandbox_image.clone(),
            backoff_initial: std::time::Duration::from_secs(
                args.kubelet.restart_backoff_seconds.max(1),
            ),
            backoff_max: std::time::Duration::from_secs(300),
        },
        docker_socket: args.kubelet.docker_socket.clone(),
        pod_cidr: args.kubelet.pod_cidr,
        max_pods: args.kubelet.max_pods,
        kubelet_listen: match args.kubelet.kubelet_listen.as_str() {
            "off" => None,
            addr => Some(addr.parse().map_err(|_| {
                anyhow::anyhow!("--kubelet-listen {addr:?} is not an address:port (or `off`)")
            })?),
        },
        client_ca,
        cluster_dns: args.kubelet.cluster_dns,
        cluster_domain: args.kubelet.cluster_domain.clone(),
        resolv_conf: args.kubelet.resolv_conf.clone(),
        cgroup_parent: args.kubelet.cgroup_parent.clone(),
        log_rotation: keelson_node_agent::pods::runtime::LogRotation {
            max_size: args.kubelet.container_log_max_size,
            max_files: args.kubelet.container_log_max_files,
        },
        streaming_idle_timeout: args.kubelet.streaming_connection_idle_timeout,
        health,
        service_cidr: Some(args.service_cidr),
        pod_hook,
        pod_mtu,
        lease_duration_seconds: args.kubelet.node_lease_duration_seconds,
        reservations: keelson_node_agent::node::pressure::Reservations {
            kube: args.kubelet.kube_reserved.clone(),
            system: args.kubelet.system_reserved.clone(),
            eviction_hard: args.kubelet.eviction_hard.clone(),
        },
        housekeeping: keelson_node_agent::node::eviction::Housekeeping {
            minimum_reclaim: args.kubelet.eviction_minimum_reclaim.clone(),
            image_gc: keelson_node_agent::pods::images::gc::Policy::new(
                args.kubelet.image_gc_high_threshold,
                args.kubelet.image_gc_low_threshold,
                keelson_node_agent::pods::images::gc::DEFAULT_MINIMUM_AGE,
            )
            .map_err(|e| anyhow::anyhow!(e))?,
        },
    };
    Kubelet::start(client, settings).await
}

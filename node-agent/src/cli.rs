//! `keelson-node-agent`'s command line: the subcommands and their flags (clap), and the small
//! value parsers they use.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// keelson's node agent: pods, pod networking and the eBPF service datapath.
#[derive(Debug, Parser)]
#[command(version, about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
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
pub(crate) struct ObserveArgs {
    /// Only flows from or to this pod (`NAMESPACE/NAME`).
    #[arg(long, env = "KEELSON_OBSERVE_POD", value_name = "NS/NAME")]
    pub(crate) pod: Option<String>,
    /// Only this verdict: `allowed` or `dropped`.
    #[arg(long, env = "KEELSON_OBSERVE_VERDICT", value_name = "allowed|dropped")]
    pub(crate) verdict: Option<keelson_node_agent::datapath::flows::FlowVerdict>,
    /// The last N matching flows the agent kept [default: 20, or none with --follow].
    #[arg(long, env = "KEELSON_OBSERVE_LAST", value_name = "N")]
    pub(crate) last: Option<usize>,
    /// Keep printing new flows as they happen.
    #[arg(long, short = 'f', env = "KEELSON_OBSERVE_FOLLOW")]
    pub(crate) follow: bool,
    /// Output: `table` or `json` (one JSON object per line).
    #[arg(long, short = 'o', env = "KEELSON_OBSERVE_OUTPUT", default_value = "table",
          value_parser = ["table", "json"])]
    pub(crate) output: String,
    /// The running agent's --metrics-listen address, where it serves /flows.
    #[arg(
        long,
        env = "KEELSON_METRICS_LISTEN",
        default_value = "127.0.0.1:10249"
    )]
    pub(crate) server: std::net::SocketAddr,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// A YAML file whose keys are these flags' names (`node-name: worker-1`); flags given on
    /// the command line win over it, and it wins over environment variables and defaults.
    #[arg(long, env = "KEELSON_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) pins: PinArgs,
    /// Kubeconfig for the API server (the admin or the node's credentials).
    #[arg(long, env = "KUBECONFIG")]
    pub(crate) kubeconfig: PathBuf,
    /// API servers to fail over between (`https://HOST:PORT`, comma-separated), instead of the
    /// kubeconfig's server: the agent relays its API connections through 127.0.0.1 to the
    /// first that accepts, starting from the last that worked.
    #[arg(long, env = "KEELSON_API_SERVERS", value_delimiter = ',', value_name = "URL",
          value_parser = api_server)]
    pub(crate) api_servers: Vec<keelson_node_agent::api_failover::ApiServer>,
    /// cgroup2 directory whose sockets are load-balanced: `auto` for the host's cgroup2 root
    /// (`/sys/fs/cgroup` on pure cgroup v2, `/sys/fs/cgroup/unified` on a hybrid hierarchy).
    #[arg(long, env = "KEELSON_CGROUP", default_value = keelson_node_agent::host::CGROUP_AUTO)]
    pub(crate) cgroup: PathBuf,
    /// This node's addresses, where NodePorts answer (repeat the flag for several) [default: the
    /// address of the interface with the default route].
    #[arg(
        long = "node-address",
        env = "KEELSON_NODE_ADDRESSES",
        value_delimiter = ','
    )]
    pub(crate) node_addresses: Vec<std::net::Ipv4Addr>,
    /// Address for /metrics and /healthz.
    #[arg(
        long,
        env = "KEELSON_METRICS_LISTEN",
        default_value = "127.0.0.1:10249"
    )]
    pub(crate) metrics_listen: std::net::SocketAddr,
    /// Capacity of the TC path's conntrack table (two entries per flow).
    #[arg(long, env = "KEELSON_CT_CAPACITY", default_value_t = keelson_ebpf_common::capacity::CT)]
    pub(crate) ct_capacity: u32,
    /// Milliseconds between two conntrack GC passes.
    #[arg(long, env = "KEELSON_CT_GC_INTERVAL_MS", default_value_t = 5_000)]
    pub(crate) ct_gc_interval_ms: u64,
    /// Conntrack entries the GC reads per pass (bounds its work).
    #[arg(long, env = "KEELSON_CT_GC_SCAN_BUDGET", default_value_t = 16_384)]
    pub(crate) ct_gc_scan_budget: usize,
    /// Conntrack fill ratio past which the GC evicts closing and idle flows early.
    #[arg(long, env = "KEELSON_CT_HIGH_WATER", default_value_t = 0.9)]
    pub(crate) ct_high_water: f64,
    /// Fill ratio the GC evicts down to once past the high-water mark.
    #[arg(long, env = "KEELSON_CT_LOW_WATER", default_value_t = 0.8)]
    pub(crate) ct_low_water: f64,
    /// Seconds without a packet after which an established flow may be evicted under pressure.
    #[arg(long, env = "KEELSON_CT_EVICT_IDLE_S", default_value_t = 60)]
    pub(crate) ct_evict_idle_s: u64,
    /// Attach the per-packet load balancer (`tc_from_pod`) to every pod's veth, for traffic
    /// from pods that socket-LB does not see.
    #[arg(long, env = "KEELSON_POD_TC", value_name = "on|off", default_value = "on",
          value_parser = on_off, action = clap::ArgAction::Set)]
    pub(crate) pod_tc: bool,
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
    pub(crate) uplink: Vec<String>,
    /// The interface on which this node answers ARP for the LoadBalancer IPs it is elected to
    /// announce (one node per address, through a Lease `kube-system/keelson-lb-<ip>`; another
    /// node takes an address over when its node dies). Default: none, nothing is announced.
    /// Name only an interface on a network whose addresses the cluster's LoadBalancer pool
    /// belongs to, never a machine's real uplink on a shared network.
    #[arg(long, env = "KEELSON_LB_ANNOUNCE_INTERFACE", value_name = "NAME")]
    pub(crate) lb_announce_interface: Option<String>,
    /// The cluster's Service CIDR (the control plane's --service-cluster-ip-range): unreachable
    /// towards the uplink, so an untranslated service address never leaves the node.
    #[arg(long, env = "KEELSON_SERVICE_CIDR", default_value = "10.96.0.0/12")]
    pub(crate) service_cidr: keelson_api::cidr::Ipv4Cidr,
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
    pub(crate) routing: keelson_node_agent::routing::RoutingMode,
    /// Whether pod packets skip the node's stack: into local pods with `bpf_redirect_peer`,
    /// to other nodes from TC. `off` leaves them to the node's routing table (same routes).
    #[arg(long, env = "KEELSON_ROUTING_BPF", value_name = "on|off", default_value = "on",
          value_parser = on_off, action = clap::ArgAction::Set)]
    pub(crate) routing_bpf: bool,
    #[command(flatten)]
    pub(crate) kubelet: KubeletArgs,
}

/// The kubelet's part of `run`: pods on Docker with their own network namespace.
#[derive(Debug, clap::Args)]
pub(crate) struct KubeletArgs {
    /// Pod volumes and IPAM state [default: /var/lib/keelson-agent/<node-name>].
    #[arg(long, env = "KEELSON_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// The Docker engine's socket.
    #[arg(
        long,
        env = "KEELSON_DOCKER_SOCKET",
        default_value = "/var/run/docker.sock"
    )]
    pub(crate) docker_socket: String,
    /// Pod CIDR to use while the Node has no spec.podCIDR (no IPAM controller).
    #[arg(
        long,
        env = "KEELSON_POD_CIDR",
        value_parser = keelson_node_agent::network::ipam::parse_pod_cidr
    )]
    pub(crate) pod_cidr: Option<keelson_api::cidr::Ipv4Cidr>,
    /// Image whose `sleep` holds each pod's namespaces (built by `cargo xtask images`).
    #[arg(
        long,
        env = "KEELSON_SANDBOX_IMAGE",
        default_value = "keelson/busybox:1"
    )]
    pub(crate) sandbox_image: String,
    /// The node's pod capacity.
    #[arg(long, env = "KEELSON_MAX_PODS", default_value_t = 110)]
    pub(crate) max_pods: u32,
    /// HTTPS endpoint the API server reaches for container logs (only clients with a cluster CA
    /// certificate for `kube-apiserver-kubelet-client` or `system:masters`); `off` disables it.
    #[arg(long, env = "KEELSON_KUBELET_LISTEN", default_value = "0.0.0.0:10250")]
    pub(crate) kubelet_listen: String,
    /// How long the node's Lease is valid without renewal; the agent renews it every quarter of
    /// that. The control plane's --node-monitor-grace-period must be longer.
    #[arg(long, env = "KEELSON_NODE_LEASE_DURATION_SECONDS",
          default_value_t = keelson_node_agent::node::LEASE_DURATION_SECONDS,
          value_parser = clap::value_parser!(i32).range(1..=3600))]
    pub(crate) node_lease_duration_seconds: i32,
    /// First container restart back-off in seconds (doubles up to 300).
    #[arg(long, env = "KEELSON_RESTART_BACKOFF", default_value_t = 10)]
    pub(crate) restart_backoff_seconds: u64,
    /// Nameserver of pods with dnsPolicy ClusterFirst: `gateway` serves cluster DNS from this
    /// agent on the pod CIDR's gateway address, port 53; an IPv4 address points pods at a DNS
    /// served elsewhere; `off` gives them the node's resolvers.
    #[arg(long, env = "KEELSON_CLUSTER_DNS", default_value = "gateway")]
    pub(crate) cluster_dns: keelson_node_agent::pods::dns::ClusterDnsMode,
    /// The cluster domain: pods search `<namespace>.svc.<domain>`, `svc.<domain>`, `<domain>`.
    #[arg(long, env = "KEELSON_CLUSTER_DOMAIN", default_value = keelson_dns::DEFAULT_DOMAIN)]
    pub(crate) cluster_domain: String,
    /// The resolver configuration of the node (the kubelet's --resolv-conf): pods with
    /// dnsPolicy Default get its nameservers, and the cluster DNS forwards names outside the
    /// cluster domain to them (systemd-resolved's upstream list when it names only loopback).
    #[arg(long, env = "KEELSON_RESOLV_CONF", default_value = keelson_dns::forward::RESOLV_CONF)]
    pub(crate) resolv_conf: std::path::PathBuf,
    /// The cgroup every pod container is created under (Docker's `--cgroup-parent`): a slice
    /// (`keelson-pods.slice`) under Docker's systemd cgroup driver, a path (`/keelson-worker-1`)
    /// under its cgroupfs driver [default: Docker's own]. With Docker's cgroupfs driver on a hybrid
    /// hierarchy the containers land in `<cgroup2 root>/<PATH>/<id>` too, so pointing --cgroup
    /// at that directory load-balances this node's pods only.
    #[arg(long, env = "KEELSON_CGROUP_PARENT", value_name = "PATH")]
    pub(crate) cgroup_parent: Option<String>,
    /// The size at which a container's log file is rotated (the kubelet's
    /// containerLogMaxSize); `kubectl logs` reads across the kept files.
    #[arg(long, alias = "containerLogMaxSize", env = "KEELSON_CONTAINER_LOG_MAX_SIZE",
          default_value = "10Mi",
          value_parser = keelson_node_agent::pods::runtime::LogRotation::parse_size)]
    pub(crate) container_log_max_size: u64,
    /// How many log files each container keeps, the current one included (the kubelet's
    /// containerLogMaxFiles).
    #[arg(long, alias = "containerLogMaxFiles", env = "KEELSON_CONTAINER_LOG_MAX_FILES",
          default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..))]
    pub(crate) container_log_max_files: u32,
    /// How long an exec, attach or port-forward connection may go without a byte either way
    /// before the node closes it (`4h`, `30m`, `90s`; `0s`: never), the kubelet's
    /// streamingConnectionIdleTimeout.
    #[arg(long, alias = "streamingConnectionIdleTimeout",
          env = "KEELSON_STREAMING_CONNECTION_IDLE_TIMEOUT", default_value = "4h",
          value_parser = keelson_node_agent::pods::stream::idle::parse_timeout)]
    pub(crate) streaming_connection_idle_timeout: std::time::Duration,
    /// Resources set aside for Kubernetes components, subtracted from allocatable
    /// (`cpu=100m,memory=256Mi,ephemeral-storage=1Gi,pid=1000`; the kubelet's kubeReserved).
    #[arg(long, alias = "kubeReserved", env = "KEELSON_KUBE_RESERVED", default_value = "",
          value_parser = keelson_node_agent::node::pressure::parse_reserved)]
    pub(crate) kube_reserved: std::collections::BTreeMap<String, i64>,
    /// Resources set aside for the operating system, subtracted from allocatable (the
    /// kubelet's systemReserved).
    #[arg(long, alias = "systemReserved", env = "KEELSON_SYSTEM_RESERVED", default_value = "",
          value_parser = keelson_node_agent::node::pressure::parse_reserved)]
    pub(crate) system_reserved: std::collections::BTreeMap<String, i64>,
    /// Hard eviction thresholds (`memory.available<100Mi,nodefs.available<10%,...`): the node
    /// reports MemoryPressure/DiskPressure/PIDPressure below them, and allocatable excludes
    /// them (the kubelet's evictionHard and its Linux defaults).
    #[arg(long, alias = "evictionHard", env = "KEELSON_EVICTION_HARD",
          default_value = keelson_node_agent::node::pressure::DEFAULT_EVICTION_HARD,
          value_parser = keelson_node_agent::node::pressure::parse_thresholds)]
    pub(crate) eviction_hard: keelson_node_agent::node::pressure::Thresholds,
    /// How far below a crossed threshold's signal must recover before eviction stops
    /// (`memory.available=0Mi,nodefs.available=500Mi`; the kubelet's evictionMinimumReclaim).
    #[arg(long, alias = "evictionMinimumReclaim", env = "KEELSON_EVICTION_MINIMUM_RECLAIM",
          default_value = "",
          value_parser = keelson_node_agent::node::eviction::parse_minimum_reclaim)]
    pub(crate) eviction_minimum_reclaim: keelson_node_agent::node::pressure::Thresholds,
    /// Image filesystem usage (percent) from which unused images are removed, least recently
    /// used first; 100 turns image garbage collection off.
    #[arg(long, env = "KEELSON_IMAGE_GC_HIGH_THRESHOLD", default_value_t = 85,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub(crate) image_gc_high_threshold: u8,
    /// Image filesystem usage (percent) image garbage collection frees down to.
    #[arg(long, env = "KEELSON_IMAGE_GC_LOW_THRESHOLD", default_value_t = 80,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub(crate) image_gc_low_threshold: u8,
}

/// The flags of `check`.
#[derive(Debug, clap::Args)]
pub(crate) struct CheckArgs {
    /// The Docker engine's socket.
    #[arg(
        long,
        env = "KEELSON_DOCKER_SOCKET",
        default_value = "/var/run/docker.sock"
    )]
    pub(crate) docker_socket: String,
}

/// The flags of `reset`: those of `run` that place things on the host.
#[derive(Debug, clap::Args)]
pub(crate) struct ResetArgs {
    #[command(flatten)]
    pub(crate) pins: PinArgs,
    /// The agent's data directory [default: /var/lib/keelson-agent/<node-name>].
    #[arg(long, env = "KEELSON_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    /// The Docker engine's socket.
    #[arg(
        long,
        env = "KEELSON_DOCKER_SOCKET",
        default_value = "/var/run/docker.sock"
    )]
    pub(crate) docker_socket: String,
    /// Where `join` wrote the node's credentials (`node.kubeconfig` and the files it names
    /// there go; `node-agent.yaml` stays).
    #[arg(long, env = "KEELSON_CONFIG_DIR", default_value = "/etc/keelson")]
    pub(crate) config_dir: PathBuf,
    /// The Service CIDR whose unreachable route `run` added.
    #[arg(long, env = "KEELSON_SERVICE_CIDR", default_value = "10.96.0.0/12")]
    pub(crate) service_cidr: keelson_api::cidr::Ipv4Cidr,
    /// The agent's metrics address: if something answers there an agent is running and
    /// nothing is removed (`off` skips this check).
    #[arg(
        long,
        env = "KEELSON_METRICS_LISTEN",
        default_value = "127.0.0.1:10249"
    )]
    pub(crate) metrics_listen: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum CtCommand {
    /// Print the conntrack entries (like `cilium bpf ct list global`).
    List(PinArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum LbCommand {
    /// Print every frontend (service address:port/protocol) and its backends, as the kernel
    /// maps hold them (like `cilium bpf lb list`).
    List(PinArgs),
    /// Print the datapath counters and map fill levels in Prometheus' text format.
    Metrics(PinArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct PinArgs {
    /// This node's name; the maps live under `/sys/fs/bpf/keelson/<node>`.
    #[arg(long, env = "KEELSON_NODE_NAME", default_value_t = default_node_name())]
    pub(crate) node_name: String,
    /// Directory holding the pinned maps (overrides the one derived from --node-name).
    #[arg(long, env = "KEELSON_PIN_DIR")]
    pub(crate) pin_dir: Option<PathBuf>,
}

impl PinArgs {
    pub(crate) fn pin_dir(&self) -> PathBuf {
        self.pin_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/sys/fs/bpf/keelson").join(&self.node_name))
    }
}

/// A switch flag's value that is neither `on` nor `off`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is neither `on` nor `off`")]
pub(crate) struct NotOnOff {
    /// What was given.
    pub(crate) value: String,
}

/// `on`/`off` (a YAML config file may also give a boolean).
pub(crate) fn on_off(value: &str) -> Result<bool, NotOnOff> {
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
pub(crate) fn api_server(
    text: &str,
) -> Result<keelson_node_agent::api_failover::ApiServer, keelson_node_agent::Chained> {
    keelson_node_agent::api_failover::parse_server(text)
        .map_err(|e| keelson_node_agent::Chained::new(&e))
}

pub(crate) fn default_node_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

//! Multi-node keelson clusters on one machine, each node a network namespace.
//!
//! A cluster `name` with subnet `S` is:
//! - in the host network namespace, a Linux bridge `kb-<name>` holding `172.30.S.1/24` (the
//!   cluster's "physical" L2 network), and the control plane(s) listening on `172.30.S.1:6443`
//!   (`172.30.S.2:6443`, `172.30.S.3:6443` for three control planes on a three-member etcd on
//!   loopback: one address each, as the `kubernetes` Service's endpoints share one port);
//! - per node `i` (1-based), a network namespace `keelson-<name>-n<i>` whose `eth0` (a veth whose
//!   host end `kb<name>n<i>` is on the bridge) holds `172.30.S.(10+i)/24`, with no default route,
//!   and `keelson-node-agent` running inside it (`nsenter --net`, so `/sys/fs/bpf` and the cgroup2
//!   mount stay visible) as node `<name>-n<i>`, its pods' containers under the cgroup parent
//!   `/keelson-<name>-n<i>` and its socket-LB on `/sys/fs/cgroup/unified/keelson-<name>-n<i>`.
//!
//! With [`ClusterSpec::vm`] set, node `i` is a qemu VM instead (see [`VmNodes`]): its NIC is a
//! tap device `kb<name>n<i>` on the bridge, the VM's `eth0` holds the same address, and the
//! agent runs inside the VM with Docker; its log is the VM's serial console.
//!
//! Once the Nodes have their pod CIDRs, the host routes each CIDR to its node's address over the
//! bridge, as a router of the node network would (pods reach the API servers on the bridge and
//! the replies find their way back instead of following the host's default route); the routes
//! go with the bridge. Nothing else on the host changes: no sysctls. [`Cluster::up`] writes
//! `<state_dir>/cluster.state` (names and pids) so that [`down_from_state`] can remove a cluster
//! that another process started. Every process is stopped by pid, after checking that the pid
//! still runs the binary that was started.

pub mod cpio;
pub mod etcd_pki;
pub mod exposition;

use std::{
    fmt::Write as _,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use nix::{
    sys::{
        signal::{self, Signal},
        wait::{WaitPidFlag, waitpid},
    },
    unistd::Pid,
};

/// The control plane's binary name.
pub const CONTROL_PLANE: &str = "keelson-control-plane";
/// The node agent's binary name.
pub const NODE_AGENT: &str = "keelson-node-agent";

/// `--eviction-hard` for agents on a shared host (the test suite, `cargo xtask up`): the
/// kubelet's memory threshold, but no disk thresholds, as kind configures its nodes. The disk
/// is the host's, filled by builds and other users, so its free share says nothing about the
/// node's pods, and a `DiskPressure` taint would keep every pod Pending.
pub const SHARED_HOST_EVICTION_HARD: &str = "memory.available<100Mi,nodefs.available<0%,nodefs.inodesFree<0%,imagefs.available<0%,imagefs.inodesFree<0%";
const ETCD: &str = "/usr/bin/etcd";
const KUBECTL_IMAGE: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";
const STATE_FILE: &str = "cluster.state";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const CGROUP2: &str = "/sys/fs/cgroup/unified";
const PIN_ROOT: &str = "/sys/fs/bpf/keelson";
const API_PORT: u16 = 6443;
/// The emulator VM nodes run in.
const QEMU: &str = "qemu-system-x86_64";

/// How pod traffic crosses nodes (the agent's `KEELSON_ROUTING`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Pod CIDRs routed directly over the node network.
    Direct,
    /// Pod traffic encapsulated between nodes.
    Tunnel,
}

impl Routing {
    /// The value of `KEELSON_ROUTING`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Tunnel => "tunnel",
        }
    }
}

/// The control plane's store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// The embedded SQLite store (one control plane).
    Sqlite,
    /// A three-member etcd cluster on loopback (three control planes with leader election).
    Etcd,
}

/// What [`Cluster::up`] builds.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// `[a-z0-9]{1,5}`: names the bridge, the namespaces, the nodes (`<name>-n<i>`).
    pub name: String,
    /// Number of nodes (1..=9).
    pub nodes: usize,
    /// The agents' `KEELSON_ROUTING`.
    pub routing: Routing,
    /// The store; [`StoreKind::Etcd`] needs `control_planes == 3`.
    pub store: StoreKind,
    /// 1 (SQLite) or 3 (etcd).
    pub control_planes: usize,
    /// The `S` of `172.30.S.0/24`.
    pub subnet: u8,
    /// The block node pod CIDRs are cut from (`--cluster-cidr`).
    pub cluster_cidr: String,
    /// The Service CIDR (`--service-cluster-ip-range`, the agents' `--service-cidr`).
    pub service_cidr: String,
    /// Holds `keelson-control-plane` and `keelson-node-agent`.
    pub bin_dir: PathBuf,
    /// Control plane and agent data, kubeconfigs, logs (`logs/`), the state file.
    pub state_dir: PathBuf,
    /// Extra arguments for every `keelson-node-agent run`.
    pub agent_args: Vec<String>,
    /// Extra arguments for every `keelson-control-plane` (e.g. a short
    /// `--node-monitor-grace-period`).
    pub control_plane_args: Vec<String>,
    /// Nodes as qemu VMs instead of network namespaces.
    pub vm: Option<VmNodes>,
    /// A LoadBalancer pool on the bridge subnet (a `--service-lb-pool` value, e.g.
    /// `172.30.S.200-172.30.S.220`): the control planes assign from it and every agent
    /// announces the addresses it is elected for on its `eth0`, the bridge side
    /// (`--lb-announce-interface eth0`), so hosts on the bridge reach them.
    pub lb_pool: Option<String>,
    /// How many of the last nodes [`Cluster::up`] prepares (namespace, kubeconfig) without
    /// starting their agents: nodes that join later, with [`Cluster::start_agent`].
    pub late_nodes: usize,
}

/// How VM nodes boot. Each node is a qemu VM (TCG, or KVM where `/dev/kvm` works) whose NIC is
/// a tap device `kb<cluster>n<i>` on the cluster's bridge, so the VM's `eth0` is on the same L2
/// network as the control plane. The initramfs (built by `cargo xtask vm-test`) brings up
/// `eth0`, Docker and `keelson-node-agent run` from `/etc/keelson/node.env` and
/// `/etc/keelson/kubeconfig`, which [`Cluster::up`] appends per node as a second cpio archive.
/// The node's log is the VM's serial console.
#[derive(Debug, Clone)]
pub struct VmNodes {
    /// The kernel image (`vmlinuz`).
    pub kernel: PathBuf,
    /// The node initramfs.
    pub initrd: PathBuf,
    /// Memory per VM, in MiB.
    pub memory_mib: u32,
    /// Virtual CPUs per VM.
    pub cpus: u32,
    /// qemu's accelerator: `tcg` or `kvm`.
    pub accel: String,
}

impl ClusterSpec {
    /// A one-control-plane SQLite cluster of `nodes` nodes with direct routing, cluster CIDR
    /// `10.244.0.0/16` and Service CIDR `10.96.0.0/12`.
    pub fn new(
        name: &str,
        subnet: u8,
        nodes: usize,
        bin_dir: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            nodes,
            routing: Routing::Direct,
            store: StoreKind::Sqlite,
            control_planes: 1,
            subnet,
            cluster_cidr: "10.244.0.0/16".to_owned(),
            service_cidr: "10.96.0.0/12".to_owned(),
            bin_dir: bin_dir.into(),
            state_dir: state_dir.into(),
            agent_args: Vec::new(),
            control_plane_args: Vec::new(),
            vm: None,
            lb_pool: None,
            late_nodes: 0,
        }
    }

    fn check(&self) -> anyhow::Result<()> {
        ensure!(
            (1..=5).contains(&self.name.len())
                && self
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
            "cluster name {:?} must be 1 to 5 characters of [a-z0-9]",
            self.name
        );
        ensure!(
            (1..=9).contains(&self.nodes),
            "a cluster has 1 to 9 nodes, not {}",
            self.nodes
        );
        ensure!(
            self.late_nodes < self.nodes,
            "{} late nodes leave none of {} to start with",
            self.late_nodes,
            self.nodes
        );
        match (self.store, self.control_planes) {
            (StoreKind::Sqlite, 1) | (StoreKind::Etcd, 3) => {}
            (StoreKind::Sqlite, n) => {
                bail!("{n} control planes need the etcd store (SQLite serves one)")
            }
            (StoreKind::Etcd, n) => bail!("the etcd store runs 3 control planes, not {n}"),
        }
        for binary in [CONTROL_PLANE, NODE_AGENT] {
            let path = self.bin_dir.join(binary);
            ensure!(path.is_file(), "{} is not built", path.display());
        }
        if let Some(vm) = &self.vm {
            for file in [&vm.kernel, &vm.initrd] {
                ensure!(
                    file.is_file(),
                    "{} is missing (`cargo xtask vm-test` builds it)",
                    file.display()
                );
            }
            for arg in &self.agent_args {
                ensure!(
                    !arg.is_empty()
                        && arg
                            .bytes()
                            .all(|b| b.is_ascii_graphic() && b != b'\'' && b != b'"'),
                    "agent argument {arg:?} cannot be passed to a VM node (no spaces or quotes)"
                );
            }
        }
        if self.store == StoreKind::Etcd {
            ensure!(
                Path::new(ETCD).is_file(),
                "{ETCD} is missing (apt-get install etcd-server)"
            );
        }
        Ok(())
    }
}

/// One node of a running cluster.
#[derive(Debug, Clone)]
pub struct NodeHandle {
    /// The Node's name, `<cluster>-n<i>`.
    pub name: String,
    /// The network namespace, `keelson-<cluster>-n<i>` (`/var/run/netns/<netns>`).
    pub netns: String,
    /// `eth0`'s address in the namespace, `172.30.S.(10+i)` (the Node's InternalIP).
    pub address: Ipv4Addr,
    /// The host end of the node's veth, `kb<cluster>n<i>`, on the bridge (a VM node's tap
    /// device).
    pub host_veth: String,
    /// The agent's pinned maps, `/sys/fs/bpf/keelson/<node>` (inside the VM for a VM node:
    /// read its counters from `/metrics` at `<address>:10249` instead).
    pub pin_dir: PathBuf,
    /// The cgroup2 directory the agent's socket-LB is attached to; the pods' containers live
    /// below it (Docker's cgroup parent `/<its file name>`).
    pub cgroup: PathBuf,
    /// The agent's data directory.
    pub data_dir: PathBuf,
    /// The node's credentials.
    pub kubeconfig: PathBuf,
    /// The agent's log (a VM node's serial console).
    pub log: PathBuf,
}

/// What a cluster's processes and names are, as `<state_dir>/cluster.state` records them.
#[derive(Debug, Default, Clone)]
struct State {
    name: String,
    subnet: u8,
    nodes: usize,
    agents: Vec<Option<u32>>,
    control_planes: Vec<Option<u32>>,
    etcd: Vec<Option<u32>>,
    etcd_endpoints: Vec<String>,
    /// The nodes are qemu VMs (the "agents" pids are qemu's).
    vm: bool,
}

impl State {
    /// What the "agents" pids run.
    fn node_binary(&self) -> &'static str {
        if self.vm { QEMU } else { NODE_AGENT }
    }

    fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(STATE_FILE)
    }

    fn save(&self, state_dir: &Path) -> anyhow::Result<()> {
        let pids = |list: &[Option<u32>]| {
            list.iter()
                .map(|p| p.map_or_else(|| "-".to_owned(), |p| p.to_string()))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut text = String::new();
        let _ = writeln!(text, "name {}", self.name);
        let _ = writeln!(text, "subnet {}", self.subnet);
        let _ = writeln!(text, "nodes {}", self.nodes);
        let _ = writeln!(text, "agents {}", pids(&self.agents));
        let _ = writeln!(text, "control-planes {}", pids(&self.control_planes));
        let _ = writeln!(text, "etcd {}", pids(&self.etcd));
        let _ = writeln!(text, "etcd-endpoints {}", self.etcd_endpoints.join(" "));
        let _ = writeln!(text, "vm {}", u8::from(self.vm));
        let path = Self::path(state_dir);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    }

    fn load(state_dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = Self::path(state_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
        };
        let pids = |words: &str| -> Vec<Option<u32>> {
            words.split_whitespace().map(|w| w.parse().ok()).collect()
        };
        let mut state = Self::default();
        for line in text.lines() {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "name" => state.name = value.to_owned(),
                "subnet" => state.subnet = value.parse().unwrap_or_default(),
                "nodes" => state.nodes = value.parse().unwrap_or_default(),
                "agents" => state.agents = pids(value),
                "control-planes" => state.control_planes = pids(value),
                "etcd" => state.etcd = pids(value),
                "etcd-endpoints" => {
                    state.etcd_endpoints = value.split_whitespace().map(str::to_owned).collect();
                }
                "vm" => state.vm = value == "1",
                _ => {}
            }
        }
        ensure!(
            valid_name(&state.name),
            "{} names no cluster",
            path.display()
        );
        Ok(Some(state))
    }
}

fn valid_name(name: &str) -> bool {
    (1..=5).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The names a node of cluster `name` has.
fn node_names(name: &str, subnet: u8, i: usize) -> (String, String, Ipv4Addr, String) {
    let node = format!("{name}-n{i}");
    let netns = format!("keelson-{node}");
    let address = Ipv4Addr::new(172, 30, subnet, 10 + i as u8);
    let host_veth = format!("kb{name}n{i}");
    (node, netns, address, host_veth)
}

fn bridge_name(name: &str) -> String {
    format!("kb-{name}")
}

/// A running cluster. [`Cluster::down`] (or drop, best effort) removes everything it made.
#[derive(Debug)]
pub struct Cluster {
    spec: ClusterSpec,
    state: State,
    nodes: Vec<NodeHandle>,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    down: bool,
}

impl Cluster {
    /// Builds the node network, starts etcd (for [`StoreKind::Etcd`]), the control plane(s) and
    /// one agent per node, and returns once every Node exists and is Ready. On failure it
    /// removes what it made. Fails at once if a cluster of that name exists.
    pub fn up(spec: ClusterSpec) -> anyhow::Result<Self> {
        Self::up_with_progress(spec, |_| {})
    }

    /// [`Cluster::up`], calling `progress` with a one-line description before each step.
    pub fn up_with_progress(
        spec: ClusterSpec,
        mut progress: impl FnMut(&str),
    ) -> anyhow::Result<Self> {
        spec.check()?;
        ensure!(
            nix::unistd::geteuid().is_root(),
            "a keelson cluster needs root (network namespaces, eBPF, Docker)"
        );
        if exists(&spec.name, &spec.state_dir) {
            bail!(
                "a cluster named {} exists (bridge {}, its namespaces or {}): remove it with \
                 `cargo xtask cluster down` first",
                spec.name,
                bridge_name(&spec.name),
                State::path(&spec.state_dir).display()
            );
        }
        std::fs::create_dir_all(spec.state_dir.join("logs"))
            .with_context(|| format!("cannot create {}/logs", spec.state_dir.display()))?;
        let nodes = (1..=spec.nodes)
            .map(|i| {
                let (name, netns, address, host_veth) = node_names(&spec.name, spec.subnet, i);
                NodeHandle {
                    pin_dir: Path::new(PIN_ROOT).join(&name),
                    cgroup: Path::new(CGROUP2).join(format!("keelson-{name}")),
                    data_dir: spec.state_dir.join(&name),
                    kubeconfig: spec.state_dir.join(format!("{name}.kubeconfig")),
                    log: spec.state_dir.join("logs").join(format!("{name}.log")),
                    name,
                    netns,
                    address,
                    host_veth,
                }
            })
            .collect();
        let mut cluster = Self {
            kubeconfig: cp_dir(&spec.state_dir, 1).join("admin.kubeconfig"),
            kubectl: kubectl_binary()?,
            state: State {
                name: spec.name.clone(),
                subnet: spec.subnet,
                nodes: spec.nodes,
                agents: vec![None; spec.nodes],
                vm: spec.vm.is_some(),
                ..State::default()
            },
            spec,
            nodes,
            down: false,
        };
        cluster.state.save(&cluster.spec.state_dir)?;
        match cluster.start(&mut progress) {
            Ok(()) => Ok(cluster),
            Err(error) => {
                progress("failed; removing what was made");
                let logs = cluster.failure_logs();
                let _ = cluster.down_inner();
                Err(error.context(logs))
            }
        }
    }

    fn start(&mut self, progress: &mut impl FnMut(&str)) -> anyhow::Result<()> {
        let spec = self.spec.clone();
        let bridge = bridge_name(&spec.name);
        progress(&format!(
            "creating bridge {bridge} (172.30.{}.1/24) and {} node {}",
            spec.subnet,
            spec.nodes,
            if spec.vm.is_some() {
                "tap devices"
            } else {
                "namespaces"
            }
        ));
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("172.30.{}.1/24", spec.subnet),
            "dev",
            &bridge,
        ])?;
        for i in 2..=spec.control_planes {
            ip(&[
                "addr",
                "add",
                &format!("172.30.{}.{i}/24", spec.subnet),
                "dev",
                &bridge,
            ])?;
        }
        ip(&["link", "set", &bridge, "up"])?;
        for node in &self.nodes {
            if spec.vm.is_some() {
                ip(&["tuntap", "add", "dev", &node.host_veth, "mode", "tap"])?;
                ip(&["link", "set", &node.host_veth, "master", &bridge, "up"])?;
                continue;
            }
            ip(&["netns", "add", &node.netns])?;
            ip(&[
                "link",
                "add",
                &node.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &node.netns,
            ])?;
            ip(&["link", "set", &node.host_veth, "master", &bridge, "up"])?;
            let inside = |args: &[&str]| {
                let mut all = vec!["-n", node.netns.as_str()];
                all.extend_from_slice(args);
                ip(&all)
            };
            inside(&["link", "set", "lo", "up"])?;
            inside(&[
                "addr",
                "add",
                &format!("{}/24", node.address),
                "dev",
                "eth0",
            ])?;
            inside(&["link", "set", "eth0", "mtu", "1500", "up"])?;
        }

        if spec.store == StoreKind::Etcd {
            progress("starting a 3-member etcd on loopback");
            self.start_etcd()?;
        }
        for i in 1..=spec.control_planes {
            let listen = self.api_address(i);
            progress(&format!(
                "starting {CONTROL_PLANE} {i} on https://{listen} (log {})",
                self.log_path(&format!("control-plane-{i}")).display()
            ));
            let dir = cp_dir(&spec.state_dir, i);
            if i > 1 {
                // One PKI for all: the others load the CA the first one created.
                copy_dir(&cp_dir(&spec.state_dir, 1).join("pki"), &dir.join("pki"))?;
            }
            self.start_control_plane(i)?;
            let pid = self.state.control_planes[i - 1];
            let admin = dir.join("admin.kubeconfig");
            wait_until(Duration::from_secs(60), "the API server to listen", || {
                if !pid.is_some_and(|p| runs(p, CONTROL_PLANE)) {
                    bail!("{CONTROL_PLANE} {i} exited");
                }
                Ok(admin.is_file()
                    && TcpStream::connect_timeout(&listen, Duration::from_secs(1)).is_ok())
            })?;
        }

        let cp1 = cp_dir(&spec.state_dir, 1);
        let server = format!("https://{}", self.api_address(1));
        for i in 1..=spec.nodes {
            let node = self.nodes[i - 1].clone();
            progress(&format!(
                "starting {NODE_AGENT} for node {} {} ({}, log {})",
                node.name,
                if spec.vm.is_some() {
                    format!("in a VM on tap {}", node.host_veth)
                } else {
                    format!("in netns {}", node.netns)
                },
                node.address,
                node.log.display()
            ));
            let output = Command::new(spec.bin_dir.join(CONTROL_PLANE))
                .arg("--data-dir")
                .arg(&cp1)
                .args(["node-kubeconfig", "--node", &node.name, "--server", &server])
                .arg("--out")
                .arg(&node.kubeconfig)
                .output()
                .context("cannot run keelson-control-plane node-kubeconfig")?;
            ensure!(
                output.status.success(),
                "node-kubeconfig for {} failed: {}",
                node.name,
                String::from_utf8_lossy(&output.stderr).trim()
            );
            if spec.vm.is_none() {
                std::fs::create_dir_all(&node.cgroup)
                    .with_context(|| format!("cannot create {}", node.cgroup.display()))?;
            }
            if i <= spec.nodes - spec.late_nodes {
                self.start_agent(i)?;
            }
        }

        let started = spec.nodes - spec.late_nodes;
        progress(&format!("waiting for {started} Nodes to be Ready"));
        // A VM boots, starts Docker and imports its images first (under TCG: a minute or so).
        let ready_within = Duration::from_secs(if spec.vm.is_some() { 600 } else { 120 });
        let node_binary = self.state.node_binary();
        wait_until(ready_within, "every Node to be Ready", || {
            for (i, pid) in self.state.agents.iter().enumerate().take(started) {
                if !pid.is_some_and(|p| runs(p, node_binary)) {
                    bail!("the agent of node {} exited", self.nodes[i].name);
                }
            }
            let ready = self.kubectl(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status} {end}",
            ]);
            Ok(ready.is_ok_and(|text| {
                self.nodes.iter().take(started).all(|n| {
                    text.split_whitespace()
                        .any(|w| w == format!("{}=True", n.name))
                })
            }))
        })?;
        self.route_pod_cidrs(&bridge)
    }

    /// Routes each Node's `spec.podCIDR` to the node's address over the bridge (see the module
    /// documentation).
    fn route_pod_cidrs(&self, bridge: &str) -> anyhow::Result<()> {
        let cidrs = self.kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.spec.podCIDR} {end}",
        ])?;
        for pair in cidrs.split_whitespace() {
            let Some((name, cidr)) = pair.split_once('=') else {
                continue;
            };
            let Some(node) = self.nodes.iter().find(|n| n.name == name) else {
                continue;
            };
            if !cidr.is_empty() {
                ip(&[
                    "route",
                    "replace",
                    cidr,
                    "via",
                    &node.address.to_string(),
                    "dev",
                    bridge,
                ])?;
            }
        }
        Ok(())
    }

    /// Where the etcd certificates are (clients and peers talk TLS, both sides checked).
    fn etcd_pki_dir(&self) -> PathBuf {
        self.spec.state_dir.join("etcd-pki")
    }

    fn start_etcd(&mut self) -> anyhow::Result<()> {
        let pki = self.etcd_pki_dir();
        etcd_pki::write(&pki)?;
        // Nine free loopback ports: three client, three peer (both TLS), three plain-HTTP
        // metrics ports for /health.
        let mut ports: Vec<u16> = Vec::with_capacity(9);
        while ports.len() < 9 {
            let port = free_loopback_port().context("no free loopback port for etcd")?;
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let clients: Vec<String> = ports[..3]
            .iter()
            .map(|p| format!("https://127.0.0.1:{p}"))
            .collect();
        let peers: Vec<String> = ports[3..6]
            .iter()
            .map(|p| format!("https://127.0.0.1:{p}"))
            .collect();
        let initial = (0..3)
            .map(|k| format!("m{}={}", k + 1, peers[k]))
            .collect::<Vec<_>>()
            .join(",");
        self.state.etcd_endpoints = clients.clone();
        for k in 0..3 {
            let dir = self.spec.state_dir.join(format!("etcd-{}", k + 1));
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let mut cmd = self.background(Path::new(ETCD), &format!("etcd-{}", k + 1))?;
            cmd.arg(format!("--name=m{}", k + 1))
                .arg(format!("--data-dir={}", dir.display()))
                .arg(format!("--listen-client-urls={}", clients[k]))
                .arg(format!("--advertise-client-urls={}", clients[k]))
                .arg(format!("--listen-peer-urls={}", peers[k]))
                .arg(format!("--initial-advertise-peer-urls={}", peers[k]))
                .arg(format!("--initial-cluster={initial}"))
                .arg("--initial-cluster-state=new")
                .arg(format!(
                    "--initial-cluster-token=keelson-{}",
                    self.spec.name
                ))
                .arg(format!(
                    "--listen-metrics-urls=http://127.0.0.1:{}",
                    ports[6 + k]
                ))
                .args(etcd_pki::etcd_args(&pki))
                .arg("--log-level=warn");
            let child = cmd.spawn().context("cannot start etcd")?;
            self.state.etcd.push(Some(child.id()));
            self.state.save(&self.spec.state_dir)?;
        }
        let endpoints: Vec<SocketAddr> = ports[6..]
            .iter()
            .map(|p| SocketAddr::from((Ipv4Addr::LOCALHOST, *p)))
            .collect();
        wait_until(Duration::from_secs(30), "etcd to be healthy", || {
            for pid in &self.state.etcd {
                if !pid.is_some_and(|p| runs(p, "etcd")) {
                    bail!("an etcd member exited");
                }
            }
            Ok(endpoints.iter().all(|e| {
                http_get(
                    *e,
                    "/health",
                    Duration::from_secs(1),
                    Duration::from_secs(2),
                )
                .is_ok_and(|body| body.contains("\"health\":\"true\""))
            }))
        })
    }

    /// Starts control plane `i` (1-based) on its data directory and port; its pid goes to the
    /// state file. Used by [`Cluster::up`] and after [`Cluster::kill_control_plane`].
    pub fn start_control_plane(&mut self, i: usize) -> anyhow::Result<()> {
        ensure!(
            (1..=self.spec.control_planes).contains(&i),
            "no control plane {i}"
        );
        let spec = &self.spec;
        let dir = cp_dir(&spec.state_dir, i);
        let mut cmd = self.background(
            &spec.bin_dir.join(CONTROL_PLANE),
            &format!("control-plane-{i}"),
        )?;
        cmd.arg("--data-dir")
            .arg(&dir)
            .arg("--listen")
            .arg(self.api_address(i).to_string())
            .args(["--cluster-cidr", &spec.cluster_cidr])
            .args(["--service-cluster-ip-range", &spec.service_cidr])
            .args(
                spec.lb_pool
                    .iter()
                    .flat_map(|pool| ["--service-lb-pool", pool.as_str()]),
            )
            .args(&spec.control_plane_args)
            .env("RUST_LOG", "info");
        if spec.store == StoreKind::Etcd {
            cmd.args(["--store", "etcd", "--etcd-endpoints"])
                .arg(self.state.etcd_endpoints.join(","))
                .args(etcd_pki::control_plane_args(&self.etcd_pki_dir()));
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {CONTROL_PLANE}"))?;
        if self.state.control_planes.len() < i {
            self.state.control_planes.resize(i, None);
        }
        self.state.control_planes[i - 1] = Some(child.id());
        self.state.save(&self.spec.state_dir)
    }

    /// Starts node `i`'s agent (1-based) inside its namespace (boots a VM node's VM); its pid
    /// (qemu's) goes to the state file.
    /// Used by [`Cluster::up`] and after [`Cluster::kill_agent`].
    pub fn start_agent(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(vm) = self.spec.vm.clone() {
            return self.start_vm(i, &vm);
        }
        let node = self.node(i)?.clone();
        let cgroup_parent = format!(
            "/{}",
            node.cgroup
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let api_servers = (1..=self.spec.control_planes)
            .map(|cp| format!("https://{}", self.api_address(cp)))
            .collect::<Vec<_>>()
            .join(",");
        let spec = &self.spec;
        let mut cmd = self.background(Path::new("/usr/bin/nsenter"), &node.name)?;
        cmd.arg(format!("--net=/var/run/netns/{}", node.netns))
            .arg("--")
            .arg(spec.bin_dir.join(NODE_AGENT))
            .arg("run")
            .args(["--node-name", &node.name])
            .arg("--kubeconfig")
            .arg(&node.kubeconfig)
            .args(["--node-address", &node.address.to_string()])
            .args(["--uplink", "eth0"])
            .arg("--cgroup")
            .arg(&node.cgroup)
            .args(["--cgroup-parent", &cgroup_parent])
            .arg("--data-dir")
            .arg(&node.data_dir)
            .args(["--metrics-listen", &format!("{}:10249", node.address)])
            .args(["--kubelet-listen", &format!("{}:10250", node.address)])
            .args(["--service-cidr", &spec.service_cidr])
            .args(if spec.lb_pool.is_some() {
                &["--lb-announce-interface", "eth0"][..]
            } else {
                &[]
            })
            .args(&spec.agent_args)
            // With several control planes, the agent fails over between them.
            .args(if spec.control_planes > 1 {
                vec!["--api-servers".to_owned(), api_servers]
            } else {
                Vec::new()
            })
            .env("KEELSON_ROUTING", spec.routing.as_str())
            // The suite shares one Docker daemon: no image garbage collection unless a test
            // opts in with `--image-gc-high-threshold` in `agent_args`.
            .env("KEELSON_IMAGE_GC_HIGH_THRESHOLD", "100")
            .env("KEELSON_EVICTION_HARD", SHARED_HOST_EVICTION_HARD)
            .env("RUST_LOG", "info");
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {NODE_AGENT} for {}", node.name))?;
        self.state.agents[i - 1] = Some(child.id());
        self.state.save(&self.spec.state_dir)?;
        // nsenter enters the namespace and execs the agent in the same process (no fork).
        wait_until(Duration::from_secs(5), "nsenter to exec the agent", || {
            Ok(runs(child.id(), NODE_AGENT))
        })
        .with_context(|| format!("the agent of {} did not start", node.name))
    }

    /// Boots VM node `i`: the shared initramfs, then (after zero padding to a 4-byte boundary,
    /// where the kernel looks for the next archive) an uncompressed archive with the node's
    /// settings and credentials.
    fn start_vm(&mut self, i: usize, vm: &VmNodes) -> anyhow::Result<()> {
        let node = self.node(i)?.clone();
        std::fs::create_dir_all(&node.data_dir)
            .with_context(|| format!("cannot create {}", node.data_dir.display()))?;
        let initrd = node.data_dir.join("initrd");
        std::fs::copy(&vm.initrd, &initrd)
            .with_context(|| format!("cannot copy {}", vm.initrd.display()))?;
        let kubeconfig = std::fs::read(&node.kubeconfig)
            .with_context(|| format!("cannot read {}", node.kubeconfig.display()))?;
        let settings = format!(
            "NODE_NAME={}\nNODE_ADDRESS={}\nSERVICE_CIDR={}\nKEELSON_ROUTING={}\nAGENT_ARGS='{}'\n",
            node.name,
            node.address,
            self.spec.service_cidr,
            self.spec.routing.as_str(),
            self.spec.agent_args.join(" ")
        );
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&initrd)
            .with_context(|| format!("cannot open {}", initrd.display()))?;
        let length = file.metadata()?.len();
        let padding = vec![0_u8; (4 - (length % 4) as usize) % 4 + 4];
        let mut archive = cpio::Cpio::new(padding);
        archive.file("/etc/keelson/node.env", 0o644, settings.as_bytes())?;
        archive.file("/etc/keelson/kubeconfig", 0o600, &kubeconfig)?;
        file.write_all(&archive.finish()?)
            .with_context(|| format!("cannot write {}", initrd.display()))?;
        drop(file);

        let [_, _, subnet, host] = node.address.octets();
        let mut cmd = self.background(Path::new(QEMU), &node.name)?;
        cmd.args(["-accel", &vm.accel, "-m", &vm.memory_mib.to_string()])
            .args(["-smp", &vm.cpus.to_string(), "-kernel"])
            .arg(&vm.kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args([
                "-append",
                "console=ttyS0 panic=-1 quiet",
                "-nographic",
                "-no-reboot",
                "-netdev",
                &format!(
                    "tap,id=uplink,ifname={},script=no,downscript=no",
                    node.host_veth
                ),
                "-device",
                &format!("virtio-net-pci,netdev=uplink,mac=52:54:00:30:{subnet:02x}:{host:02x}"),
                // Entropy from the host: without it getrandom() blocks early in the VM's life
                // (dockerd, TLS), and the kernel's jitter-entropy fallback is slow under TCG.
                "-device",
                "virtio-rng-pci",
            ]);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {QEMU} for {}", node.name))?;
        self.state.agents[i - 1] = Some(child.id());
        self.state.save(&self.spec.state_dir)
    }

    /// Kills node `i`'s agent with SIGKILL (its pods' containers keep running); for a VM node,
    /// the whole VM.
    pub fn kill_agent(&mut self, i: usize) -> anyhow::Result<()> {
        self.node(i)?;
        if let Some(pid) = self.state.agents[i - 1].take() {
            kill_now(pid, self.state.node_binary());
        }
        self.state.save(&self.spec.state_dir)
    }

    /// Kills control plane `i` (1-based) with SIGKILL.
    pub fn kill_control_plane(&mut self, i: usize) -> anyhow::Result<()> {
        ensure!(
            (1..=self.state.control_planes.len()).contains(&i),
            "no control plane {i}"
        );
        if let Some(pid) = self.state.control_planes[i - 1].take() {
            kill_now(pid, CONTROL_PLANE);
        }
        self.state.save(&self.spec.state_dir)
    }

    /// The pids of the running control planes, by index (1-based index = position + 1).
    pub fn control_plane_pids(&self) -> Vec<Option<u32>> {
        self.state.control_planes.clone()
    }

    /// The pid of node `i`'s agent, if it was started and not killed.
    pub fn agent_pid(&self, i: usize) -> Option<u32> {
        self.state.agents.get(i.checked_sub(1)?).copied().flatten()
    }

    /// The etcd client URLs (empty for SQLite).
    pub fn etcd_endpoints(&self) -> &[String] {
        &self.state.etcd_endpoints
    }

    /// Where control plane `i` (1-based) serves the API: `172.30.S.i:6443`.
    pub fn api_address(&self, i: usize) -> SocketAddr {
        SocketAddr::from((
            Ipv4Addr::new(172, 30, self.spec.subnet, u8::try_from(i).unwrap_or(1)),
            API_PORT,
        ))
    }

    /// The admin kubeconfig (control plane 1's).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The cluster's nodes, node 1 first.
    pub fn nodes(&self) -> &[NodeHandle] {
        &self.nodes
    }

    /// The spec it was started from.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    fn node(&self, i: usize) -> anyhow::Result<&NodeHandle> {
        i.checked_sub(1)
            .and_then(|k| self.nodes.get(k))
            .with_context(|| format!("no node {i} in cluster {}", self.spec.name))
    }

    /// `program` run inside node `i`'s network namespace (`nsenter --net=...`; not for VM
    /// nodes).
    pub fn node_command(&self, i: usize, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let netns = self.nodes.get(i.wrapping_sub(1)).map_or_else(
            || format!("keelson-{}-n{i}", self.spec.name),
            |n| n.netns.clone(),
        );
        let mut cmd = Command::new("/usr/bin/nsenter");
        cmd.arg(format!("--net=/var/run/netns/{netns}"))
            .arg("--")
            .arg(program);
        cmd
    }

    /// kubectl with the admin kubeconfig: its stdout, or its stderr as the error.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--request-timeout=10s")
            .args(args)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .with_context(|| format!("cannot run {}", self.kubectl.display()))?;
        ensure!(
            output.status.success(),
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Leaves the cluster running after this value is gone (drop no longer removes it);
    /// [`down_from_state`] on its state directory removes it later.
    pub fn detach(mut self) {
        self.down = true;
    }

    /// Stops and removes everything (see [`down_from_state`]).
    pub fn down(mut self) -> anyhow::Result<()> {
        self.down_inner()
    }

    fn down_inner(&mut self) -> anyhow::Result<()> {
        if self.down {
            return Ok(());
        }
        self.down = true;
        teardown(&self.state, &self.spec.state_dir)
    }

    /// The last lines of every log, for an error message.
    fn failure_logs(&self) -> String {
        let mut text = String::from("logs:");
        let mut logs: Vec<PathBuf> = std::fs::read_dir(self.spec.state_dir.join("logs"))
            .map(|dir| dir.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        logs.sort();
        for log in logs {
            let _ = write!(text, "\n--- {} ---\n{}", log.display(), tail(&log, 15));
        }
        text
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.spec.state_dir.join("logs").join(format!("{name}.log"))
    }

    /// A long-running process: stdin closed, output appended to `logs/<log>.log`, its own
    /// process group (a Ctrl-C meant for the caller does not reach it).
    fn background(&self, program: &Path, log: &str) -> anyhow::Result<Command> {
        let path = self.log_path(log);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let err = file.try_clone().context("cannot duplicate a log handle")?;
        let mut cmd = Command::new(program);
        cmd.stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .process_group(0);
        Ok(cmd)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A test that failed while the cluster was up gets the logs' ends next to its panic
        // (the state directory is usually a temporary one that goes with it).
        if std::thread::panicking() && !self.down {
            eprintln!(
                "keelson-testbed: cluster {} {}",
                self.spec.name,
                self.failure_logs()
            );
        }
        if let Err(error) = self.down_inner() {
            eprintln!(
                "keelson-testbed: removing cluster {}: {error:#}",
                self.spec.name
            );
        }
    }
}

fn cp_dir(state_dir: &Path, i: usize) -> PathBuf {
    state_dir.join(format!("control-plane-{i}"))
}

/// Whether anything of cluster `name` exists: its bridge, a namespace, or a state file.
fn exists(name: &str, state_dir: &Path) -> bool {
    link_exists(&bridge_name(name))
        || netns_list()
            .iter()
            .any(|ns| ns.starts_with(&format!("keelson-{name}-n")))
        || State::path(state_dir).exists()
}

/// Removes the cluster whose state file is in `state_dir` (what `cargo xtask cluster down`
/// runs): SIGTERM to the agents (SIGKILL after 10 s), the nodes' pod containers (by their
/// `io.keelson.node` label), pinned maps, namespaces, veths, the bridge and the cgroups, then
/// the control planes and etcd and their data. Only processes that still run the binary the
/// state file names are signalled. Returns whether there was a cluster; a second call finds none.
pub fn down_from_state(state_dir: &Path) -> anyhow::Result<bool> {
    match State::load(state_dir)? {
        Some(state) => teardown(&state, state_dir).map(|()| true),
        None => Ok(false),
    }
}

/// What a state file says about a cluster, for `cargo xtask cluster status`.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The cluster's name.
    pub name: String,
    /// The Node names, node 1 first.
    pub nodes: Vec<String>,
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// Every process started: (what, pid, whether it still runs).
    pub processes: Vec<(String, u32, bool)>,
}

/// The cluster whose state file is in `state_dir`, if any.
pub fn summary(state_dir: &Path) -> anyhow::Result<Option<Summary>> {
    let Some(state) = State::load(state_dir)? else {
        return Ok(None);
    };
    let mut processes = Vec::new();
    let mut add = |what: String, pid: Option<u32>, binary: &str| {
        if let Some(pid) = pid {
            processes.push((what, pid, runs(pid, binary)));
        }
    };
    for (k, pid) in state.etcd.iter().enumerate() {
        add(format!("etcd {}", k + 1), *pid, "etcd");
    }
    for (k, pid) in state.control_planes.iter().enumerate() {
        add(format!("{CONTROL_PLANE} {}", k + 1), *pid, CONTROL_PLANE);
    }
    let nodes: Vec<String> = (1..=state.nodes)
        .map(|i| node_names(&state.name, state.subnet, i).0)
        .collect();
    for (node, pid) in nodes.iter().zip(&state.agents) {
        let binary = state.node_binary();
        let what = if state.vm { "VM" } else { NODE_AGENT };
        add(format!("{what} {node}"), *pid, binary);
    }
    Ok(Some(Summary {
        name: state.name,
        nodes,
        kubeconfig: cp_dir(state_dir, 1).join("admin.kubeconfig"),
        processes,
    }))
}

fn teardown(state: &State, state_dir: &Path) -> anyhow::Result<()> {
    let mut errors = Vec::new();
    // Agents first, all at once, so none restarts a pod while its neighbours go.
    let agents: Vec<u32> = state.agents.iter().flatten().copied().collect();
    stop_all(&agents, state.node_binary(), Duration::from_secs(10));
    let nodes: Vec<(String, String, Ipv4Addr, String)> = (1..=state.nodes)
        .map(|i| node_names(&state.name, state.subnet, i))
        .collect();
    // A VM node's containers and pins went with the VM.
    for (node, _, _, _) in nodes.iter().filter(|_| !state.vm) {
        let listed = Command::new("docker")
            .args([
                "ps",
                "-aq",
                "--filter",
                &format!("label=io.keelson.node={node}"),
            ])
            .output();
        match listed {
            Ok(out) if out.status.success() => {
                let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect();
                if !ids.is_empty() {
                    let removed = Command::new("docker")
                        .args(["rm", "-f"])
                        .args(&ids)
                        .stdout(Stdio::null())
                        .output();
                    if !removed.is_ok_and(|o| o.status.success()) {
                        errors.push(format!("cannot remove the containers of {node}"));
                    }
                }
            }
            _ => errors.push(format!("cannot list the containers of {node} (docker)")),
        }
        let pins = Path::new(PIN_ROOT).join(node);
        if pins.exists()
            && let Err(error) = std::fs::remove_dir_all(&pins)
        {
            errors.push(format!("cannot remove {}: {error}", pins.display()));
        }
    }
    for (node, netns, _, host_veth) in &nodes {
        // The veth first (its peer eth0 goes with it): deleting the namespace first destroys
        // the pair asynchronously, racing a later `ip link del`.
        if link_exists(host_veth)
            && let Err(error) = ip(&["link", "del", host_veth])
            && link_exists(host_veth)
        {
            errors.push(format!("{error:#}"));
        }
        if netns_list().contains(netns)
            && let Err(error) = ip(&["netns", "del", netns])
        {
            errors.push(format!("{error:#}"));
        }
        for error in remove_cgroups(&format!("keelson-{node}")) {
            errors.push(error);
        }
        let _ = std::fs::remove_dir_all(state_dir.join(node));
        let _ = std::fs::remove_file(state_dir.join(format!("{node}.kubeconfig")));
    }
    let bridge = bridge_name(&state.name);
    if link_exists(&bridge)
        && let Err(error) = ip(&["link", "del", &bridge])
        && link_exists(&bridge)
    {
        errors.push(format!("{error:#}"));
    }
    let planes: Vec<u32> = state.control_planes.iter().flatten().copied().collect();
    stop_all(&planes, CONTROL_PLANE, Duration::from_secs(10));
    let etcd: Vec<u32> = state.etcd.iter().flatten().copied().collect();
    stop_all(&etcd, "etcd", Duration::from_secs(10));
    let _ = std::fs::remove_dir_all(state_dir.join("etcd-pki"));
    for k in 1..=3 {
        let _ = std::fs::remove_dir_all(state_dir.join(format!("etcd-{k}")));
        let _ = std::fs::remove_dir_all(cp_dir(state_dir, k));
    }
    if errors.is_empty() {
        let _ = std::fs::remove_file(State::path(state_dir));
        Ok(())
    } else {
        bail!("{}", errors.join("; "))
    }
}

/// Removes `<hierarchy>/<name>` (deepest first) in every cgroup hierarchy: Docker's cgroupfs
/// driver makes the cgroup parent in each v1 controller and in the cgroup2 mount.
fn remove_cgroups(name: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let Ok(hierarchies) = std::fs::read_dir(CGROUP_ROOT) else {
        return errors;
    };
    for hierarchy in hierarchies.flatten() {
        let dir = hierarchy.path().join(name);
        if dir.is_dir()
            && let Err(error) = rmdir_tree(&dir)
        {
            errors.push(format!("cannot remove {}: {error}", dir.display()));
        }
    }
    errors
}

/// rmdir of a cgroup and its child cgroups, children first (cgroup files cannot be unlinked).
fn rmdir_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            rmdir_tree(&entry.path())?;
        }
    }
    // A cgroup whose last process just exited may be busy for a moment.
    let mut attempts = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(error) if error.raw_os_error() == Some(nix::libc::EBUSY) && attempts < 50 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(error) => return Err(error),
        }
    }
}

/// Whether `pid` is alive and runs `binary` (so a recycled pid is never signalled).
pub fn runs(pid: u32, binary: &str) -> bool {
    let name = Path::new(binary).file_name();
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe.file_name() == name)
}

/// SIGTERM to each pid that runs `binary`, then waits up to `grace` for all of them, then
/// SIGKILL to those left. Reaps them when they are this process's children.
pub fn stop_all(pids: &[u32], binary: &str, grace: Duration) {
    let alive: Vec<u32> = pids.iter().copied().filter(|p| runs(*p, binary)).collect();
    for pid in &alive {
        let _ = signal::kill(Pid::from_raw(*pid as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while alive.iter().any(|p| runs(*p, binary)) && Instant::now() < deadline {
        reap(&alive);
        std::thread::sleep(Duration::from_millis(100));
    }
    for pid in &alive {
        if runs(*pid, binary) {
            kill_now(*pid, binary);
        }
    }
    reap(&alive);
}

fn reap(pids: &[u32]) {
    for pid in pids {
        let _ = waitpid(Pid::from_raw(*pid as i32), Some(WaitPidFlag::WNOHANG));
    }
}

/// SIGKILL to `pid` if it runs `binary`; waits (at most 5 s) until it is gone.
fn kill_now(pid: u32, binary: &str) {
    if !runs(pid, binary) {
        return;
    }
    let target = Pid::from_raw(pid as i32);
    let _ = signal::kill(target, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while runs(pid, binary) && Instant::now() < deadline {
        let _ = waitpid(target, Some(WaitPidFlag::WNOHANG));
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// kubectl: the machine image's 1.33, else the one on `PATH`.
pub fn kubectl_binary() -> anyhow::Result<PathBuf> {
    let image = Path::new(KUBECTL_IMAGE);
    if image.is_file() {
        return Ok(image.to_path_buf());
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("kubectl"))
                .find(|candidate| candidate.is_file())
        })
        .context("kubectl is not installed: install kubectl 1.27 or newer")
}

/// The last `lines` lines of a file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs `ip` with `args`; its stderr is the error.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run ip (iproute2)")?;
    ensure!(
        output.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The names `ip netns list` shows (the files in `/var/run/netns`).
fn netns_list() -> Vec<String> {
    std::fs::read_dir("/var/run/netns")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            // A file renamed away while copying (a certificate being written as `<name>.tmp`)
            // is left out; the final file is the writer's own.
            match std::fs::copy(entry.path(), to.join(entry.file_name())) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("copying {}", entry.path().display()));
                }
            }
        }
    }
    Ok(())
}

/// Polls `check` every 250 ms until it says yes, fails, or `timeout` passes.
pub fn wait_until(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A loopback TCP port that is free now, chosen below the kernel's ephemeral port range
/// (`net.ipv4.ip_local_port_range`). A port from `bind(0)` comes from that range, so between
/// the probe and the bind of the process it is meant for, any connection on the machine may
/// take it as its local port; a port below the range can only be taken by another listener.
pub fn free_loopback_port() -> std::io::Result<u16> {
    use std::hash::{BuildHasher as _, Hasher as _};
    const FIRST: u16 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral > FIRST + 1_000 {
        let span = u64::from(ephemeral - FIRST);
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let start = hasher.finish();
        for i in 0..512_u64 {
            // A prime stride visits different ports from a random start.
            let offset = u16::try_from(start.wrapping_add(i * 7_919) % span).unwrap_or(0);
            let port = FIRST + offset;
            if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
                return Ok(port);
            }
        }
    }
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
}

/// `GET <path>` over plain HTTP/1.0, connecting within `connect` and waiting at most `read`
/// for each read; the body.
pub fn http_get(
    address: SocketAddr,
    path: &str,
    connect: Duration,
    read: Duration,
) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, connect)?;
    stream.set_read_timeout(Some(read))?;
    stream.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_bindable_and_below_the_ephemeral_range() {
        let ephemeral: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .expect("ip_local_port_range")
            .split_whitespace()
            .next()
            .and_then(|low| low.parse().ok())
            .expect("the range's low end");
        let ports: Vec<u16> = (0..20)
            .map(|_| free_loopback_port().expect("a free port"))
            .collect();
        for port in &ports {
            assert!(
                (10_000..ephemeral).contains(port),
                "{port} is outside 10000..{ephemeral}"
            );
            TcpListener::bind((Ipv4Addr::LOCALHOST, *port))
                .unwrap_or_else(|e| panic!("bind {port}: {e}"));
        }
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert!(distinct.len() > 1, "random ports, not one: {ports:?}");
    }

    #[test]
    fn names_fit_interfaces_and_dns() {
        let (node, netns, address, veth) = node_names("abcde", 7, 9);
        assert_eq!(node, "abcde-n9");
        assert_eq!(netns, "keelson-abcde-n9");
        assert_eq!(address, Ipv4Addr::new(172, 30, 7, 19));
        assert!(veth.len() <= 15, "{veth}");
        assert!(bridge_name("abcde").len() <= 15);
    }

    #[test]
    fn spec_checks_name_and_store() {
        let mut spec = ClusterSpec::new("Bad", 1, 3, "/nonexistent", "/tmp/x");
        assert!(spec.check().is_err());
        spec.name = "ok".into();
        spec.control_planes = 3;
        let error = spec.check().map_err(|e| e.to_string());
        assert!(
            error.as_ref().is_err_and(|e| e.contains("etcd")),
            "{error:?}"
        );
    }

    #[test]
    fn state_round_trips() {
        let dir = std::env::temp_dir().join(format!("keelson-testbed-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let state = State {
            name: "ab1".into(),
            subnet: 4,
            nodes: 2,
            agents: vec![Some(10), None],
            control_planes: vec![Some(11)],
            etcd: vec![],
            etcd_endpoints: vec!["http://127.0.0.1:1".into()],
            vm: true,
        };
        state.save(&dir).expect("save");
        let loaded = State::load(&dir).expect("load").expect("a state");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(loaded.name, "ab1");
        assert_eq!(loaded.subnet, 4);
        assert_eq!(loaded.agents, vec![Some(10), None]);
        assert_eq!(loaded.control_planes, vec![Some(11)]);
        assert_eq!(loaded.etcd_endpoints, state.etcd_endpoints);
        assert!(loaded.vm, "VM nodes are remembered: their pids are qemu's");
        assert_eq!(loaded.node_binary(), QEMU);
    }
}

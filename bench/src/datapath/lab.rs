//! The benchmark's lab: three network namespaces, two cgroups, the servers, the pinned
//! load-balancer maps, and the commands that run inside them. Everything is removed when the
//! [`Lab`] drops (also on error and after Ctrl-C), and leftovers of an earlier run that was
//! killed are removed before a new one starts.
//!
//! ```text
//!  client netns                node netns (router)                      backends netns
//!  10.200.0.2 ── veth ── 10.200.0.1 | 10.201.0.1 ── veth ── 10.201.0.11 … 10.201.0.(10+P)
//!  default via .1          ip_forward=1, kube-proxy rules,           default via 10.201.0.1
//!  clients in CG/clients   blackhole 10.96.0.0/12                    keelson-echo :8080 on all,
//!  (socket-LB attaches)                                              iperf3 -s on the first
//! ```
//!
//! None of the namespaces has a route to the machine's uplink, and the host's own namespace is
//! never touched: no test packet can leave the machine.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use std::os::unix::process::CommandExt as _;

use anyhow::{Context as _, bail};
use keelson_node_agent::datapath::lb::{LbConfig, LoadBalancer};

use super::scale::Scale;
use crate::services::{
    BACKEND_PORT, CLIENT_ADDR, IPERF_PORT, NODE_BACKEND_SIDE, NODE_CLIENT_SIDE, SERVICE_CIDR,
    backend_addr,
};

/// The client namespace.
pub const NS_CLIENT: &str = "kbench-client";
/// The node (router) namespace: kube-proxy's rules and the TC programs live here.
pub const NS_NODE: &str = "kbench-node";
/// The backends namespace.
pub const NS_BACKENDS: &str = "kbench-backends";
const NAMESPACES: [&str; 3] = [NS_CLIENT, NS_NODE, NS_BACKENDS];

/// The client's veth.
pub const IF_CLIENT: &str = "kb-client";
/// The node's veth towards the client.
pub const IF_NODE_CLIENT: &str = "kb-node-c";
/// The node's veth towards the backends.
pub const IF_NODE_BACKENDS: &str = "kb-node-b";
/// The backends' veth.
pub const IF_BACKENDS: &str = "kb-backends";

/// Where cgroup2 is mounted on this machine kind (hybrid hierarchy).
pub const CGROUP2_ROOT: &str = "/sys/fs/cgroup/unified";
/// The benchmark's cgroup, below the cgroup2 root (never the root itself).
pub const CGROUP: &str = "/sys/fs/cgroup/unified/keelson-bench";
/// Pinned maps and links of the socket-LB, on bpffs.
pub const PIN_ROOT: &str = "/sys/fs/bpf/keelson-bench";
/// Only one benchmark at a time: it owns fixed names.
const LOCK: &str = "/run/keelson-bench.lock";

/// Commands the benchmark runs, with the Debian package that has each.
const PROGRAMS: [(&str, &str); 6] = [
    ("ip", "iproute2"),
    ("sysctl", "procps"),
    ("iptables-restore", "iptables"),
    ("nft", "nftables"),
    ("conntrack", "conntrack"),
    ("iperf3", "iperf3"),
];

/// Which CPU the clients run on and which the servers run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pinning {
    /// Load generator and iperf3 client.
    pub client: usize,
    /// keelson-echo and the iperf3 server.
    pub server: usize,
}

/// A command the lab stopped because it ran past its time limit.
#[derive(Debug)]
pub struct TimedOut {
    /// The command line.
    pub command: String,
    /// The limit.
    pub after: Duration,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` did not finish within {:?}",
            shorten(&self.command),
            self.after
        )
    }
}

impl std::error::Error for TimedOut {}

/// The lab. Dropping it removes everything it created.
#[derive(Debug)]
pub struct Lab {
    _lock: File,
    bin_dir: PathBuf,
    /// CPU pinning of clients and servers, if any.
    pub pinning: Option<Pinning>,
    stop: Arc<AtomicBool>,
    servers: Vec<Server>,
    /// The socket-LB (and, later, TC) maps and programs, loaded per scale.
    lb: Option<LoadBalancer>,
    /// How many Services the maps hold and how long filling them took.
    lb_filled: Option<(usize, Duration)>,
}

#[derive(Debug)]
struct Server {
    name: &'static str,
    child: Child,
    _stdout: Option<ChildStdout>,
}

impl Lab {
    /// Checks the prerequisites, removes leftovers of an earlier run and builds the topology
    /// with `pool` backend addresses. `bin_dir` holds `keelson-loadgen` and `keelson-echo`;
    /// `stop` is set by Ctrl-C.
    pub fn new(
        bin_dir: PathBuf,
        pool: usize,
        pinning: Option<Pinning>,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<Self> {
        if !nix::unistd::geteuid().is_root() {
            bail!("keelson-bench needs root (network namespaces, eBPF, cgroups): run it with sudo");
        }
        for (program, package) in PROGRAMS {
            if !on_path(program) {
                bail!(
                    "`{program}` is not installed: run `cargo xtask setup` (or `apt-get install -y {package}`)"
                );
            }
        }
        for binary in ["keelson-loadgen", "keelson-echo"] {
            if !bin_dir.join(binary).is_file() {
                bail!(
                    "{} is missing: build it with `cargo build --release -p keelson-bench`",
                    bin_dir.join(binary).display()
                );
            }
        }
        if !Path::new(CGROUP2_ROOT).join("cgroup.procs").exists() {
            bail!("cgroup2 is not mounted at {CGROUP2_ROOT}: mount -t cgroup2 none {CGROUP2_ROOT}");
        }
        let lock = File::create(LOCK).with_context(|| format!("cannot create {LOCK}"))?;
        if lock.try_lock().is_err() {
            bail!("another keelson-bench is running (it holds {LOCK})");
        }
        let leftovers = remove_everything();
        if leftovers {
            println!("removed the leftovers of an earlier benchmark run that did not clean up");
        }
        let mut lab = Self {
            _lock: lock,
            bin_dir,
            pinning,
            stop,
            servers: Vec::new(),
            lb: None,
            lb_filled: None,
        };
        // From here on, a failure drops `lab`, which removes what was built so far.
        lab.build(pool)?;
        Ok(lab)
    }

    fn build(&mut self, pool: usize) -> anyhow::Result<()> {
        for ns in NAMESPACES {
            run(Command::new("ip").args(["netns", "add", ns]))?;
            ip(ns, &["link", "set", "lo", "up"])?;
        }
        run(Command::new("ip").args([
            "link",
            "add",
            IF_CLIENT,
            "netns",
            NS_CLIENT,
            "type",
            "veth",
            "peer",
            "name",
            IF_NODE_CLIENT,
            "netns",
            NS_NODE,
        ]))?;
        run(Command::new("ip").args([
            "link",
            "add",
            IF_NODE_BACKENDS,
            "netns",
            NS_NODE,
            "type",
            "veth",
            "peer",
            "name",
            IF_BACKENDS,
            "netns",
            NS_BACKENDS,
        ]))?;
        let cidr = |a: std::net::Ipv4Addr| format!("{a}/24");
        ip(
            NS_CLIENT,
            &["addr", "add", &cidr(CLIENT_ADDR), "dev", IF_CLIENT],
        )?;
        ip(NS_CLIENT, &["link", "set", IF_CLIENT, "up"])?;
        ip(
            NS_CLIENT,
            &[
                "route",
                "add",
                "default",
                "via",
                &NODE_CLIENT_SIDE.to_string(),
            ],
        )?;
        ip(
            NS_NODE,
            &[
                "addr",
                "add",
                &cidr(NODE_CLIENT_SIDE),
                "dev",
                IF_NODE_CLIENT,
            ],
        )?;
        ip(
            NS_NODE,
            &[
                "addr",
                "add",
                &cidr(NODE_BACKEND_SIDE),
                "dev",
                IF_NODE_BACKENDS,
            ],
        )?;
        ip(NS_NODE, &["link", "set", IF_NODE_CLIENT, "up"])?;
        ip(NS_NODE, &["link", "set", IF_NODE_BACKENDS, "up"])?;
        // An untranslated Service packet stops at the node.
        ip(NS_NODE, &["route", "add", "blackhole", SERVICE_CIDR])?;
        for i in 0..pool {
            ip(
                NS_BACKENDS,
                &["addr", "add", &cidr(backend_addr(i)), "dev", IF_BACKENDS],
            )?;
        }
        ip(NS_BACKENDS, &["link", "set", IF_BACKENDS, "up"])?;
        ip(
            NS_BACKENDS,
            &[
                "route",
                "add",
                "default",
                "via",
                &NODE_BACKEND_SIDE.to_string(),
            ],
        )?;

        // See shared/TOOLCHAIN.md, "Benchmark pitfalls": short connections must not pile up
        // TIME_WAIT sockets that later turn into SYN retransmits.
        sysctl(NS_NODE, "net.ipv4.ip_forward", "1")?;
        sysctl(NS_CLIENT, "net.ipv4.tcp_tw_reuse", "1")?;
        sysctl(NS_CLIENT, "net.ipv4.ip_local_port_range", "1024 65535")?;
        sysctl(NS_BACKENDS, "net.ipv4.tcp_max_tw_buckets", "0")?;
        sysctl(NS_BACKENDS, "net.core.somaxconn", "4096")?;
        sysctl(NS_BACKENDS, "net.ipv4.tcp_max_syn_backlog", "4096")?;

        for dir in ["", "clients", "servers"] {
            let path = Path::new(CGROUP).join(dir);
            std::fs::create_dir_all(&path)
                .with_context(|| format!("cannot create cgroup {}", path.display()))?;
        }

        let listen: Vec<String> = (0..pool)
            .flat_map(|i| {
                [
                    "--listen".to_owned(),
                    format!("{}:{BACKEND_PORT}", backend_addr(i)),
                ]
            })
            .collect();
        let echo = self.bin_dir.join("keelson-echo");
        let mut echo_args: Vec<String> = vec![echo.display().to_string()];
        echo_args.extend(listen);
        // Exits by itself after two hours if this process could not stop it.
        echo_args.extend(["--lifetime-s", "7200"].map(str::to_owned));
        match self.pinning {
            Some(pin) => echo_args.extend([
                "--threads".to_owned(),
                "1".to_owned(),
                "--cpu".to_owned(),
                pin.server.to_string(),
            ]),
            None => echo_args.extend(["--threads", "2"].map(str::to_owned)),
        }
        let mut child = in_cgroup_and_ns("servers", NS_BACKENDS, &echo_args)
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start keelson-echo")?;
        let stdout = child.stdout.take();
        self.servers.push(Server {
            name: "keelson-echo",
            child,
            _stdout: None,
        });
        let mut lines = BufReader::new(stdout.context("keelson-echo has no stdout")?);
        let mut line = String::new();
        lines
            .read_line(&mut line)
            .context("keelson-echo did not start")?;
        if line.trim() != "ready" {
            bail!("keelson-echo did not start (see its error above)");
        }
        if let Some(server) = self.servers.last_mut() {
            server._stdout = Some(lines.into_inner());
        }

        let mut iperf_args = vec![
            "iperf3".to_owned(),
            "--server".to_owned(),
            "--bind".to_owned(),
            backend_addr(0).to_string(),
            "--port".to_owned(),
            IPERF_PORT.to_string(),
        ];
        if let Some(pin) = self.pinning {
            iperf_args.extend(["--affinity".to_owned(), pin.server.to_string()]);
        }
        let child = in_cgroup_and_ns("servers", NS_BACKENDS, &iperf_args)
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start the iperf3 server")?;
        self.servers.push(Server {
            name: "iperf3 server",
            child,
            _stdout: None,
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        let filter = format!("sport = :{IPERF_PORT}");
        while ns_output(NS_BACKENDS, &["ss", "-Hltn", &filter])?
            .trim()
            .is_empty()
        {
            if Instant::now() > deadline {
                bail!("the iperf3 server did not start listening within 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Returns an error if Ctrl-C was pressed.
    pub fn check_stop(&self) -> anyhow::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        Ok(())
    }

    /// The client cgroup, where the socket-LB programs attach.
    pub fn client_cgroup(&self) -> PathBuf {
        Path::new(CGROUP).join("clients")
    }

    /// Loads keelson's maps and programs afresh (anything pinned before is removed) and fills
    /// the maps with `scale`'s Services, unless that was already done for this scale. Returns
    /// how long filling took. Every eBPF configuration shares the one load balancer.
    pub fn load_services(&mut self, scale: &Scale) -> anyhow::Result<Duration> {
        if let Some((count, took)) = self.lb_filled
            && count == scale.count
            && self.lb.is_some()
        {
            return Ok(took);
        }
        self.lb = None;
        self.lb_filled = None;
        let pins = Path::new(PIN_ROOT).join("lb");
        LoadBalancer::remove_pins(&pins)
            .with_context(|| format!("cannot remove the pins under {}", pins.display()))?;
        let lb = self.lb.insert(
            LoadBalancer::load(&LbConfig::new(&pins))
                .context("cannot load keelson's eBPF load balancer")?,
        );
        let started = Instant::now();
        for service in &scale.services {
            lb.update(&service.id(), service.frontends())
                .with_context(|| format!("cannot load {} into the maps", service.id()))?;
        }
        let took = started.elapsed();
        self.lb_filled = Some((scale.count, took));
        Ok(took)
    }

    /// Loads keelson's maps and programs afresh with no Service (anything pinned before is
    /// removed), unless they are loaded: for benchmarks of the TC programs' other work
    /// (NetworkPolicy), whose maps are pinned in [`Self::pin_dir`] with the others.
    pub fn load_without_services(&mut self) -> anyhow::Result<&mut LoadBalancer> {
        if self.lb.is_none() {
            let pins = self.pin_dir();
            LoadBalancer::remove_pins(&pins)
                .with_context(|| format!("cannot remove the pins under {}", pins.display()))?;
            self.lb = Some(
                LoadBalancer::load(&LbConfig::new(&pins))
                    .context("cannot load keelson's eBPF datapath")?,
            );
            self.lb_filled = None;
        }
        self.lb()
    }

    /// The pin directory of the load balancer's maps and links.
    pub fn pin_dir(&self) -> PathBuf {
        Path::new(PIN_ROOT).join("lb")
    }

    /// The loaded socket-LB.
    pub fn lb(&mut self) -> anyhow::Result<&mut LoadBalancer> {
        self.lb
            .as_mut()
            .context("the eBPF load balancer is not loaded")
    }

    /// Runs `program args…` as a client: in the client namespace and the client cgroup, for at
    /// most `timeout`. Returns its stdout; fails with its stderr.
    pub fn run_client(
        &self,
        program: &str,
        args: &[String],
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let mut argv = vec![program.to_owned()];
        argv.extend_from_slice(args);
        let output = self.run_bounded(
            &mut in_cgroup_and_ns("clients", NS_CLIENT, &argv),
            None,
            timeout,
        )?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Path of one of the benchmark's own binaries.
    pub fn binary(&self, name: &str) -> String {
        self.bin_dir.join(name).display().to_string()
    }

    /// Runs a command inside the node namespace, feeding it `stdin`, for at most `timeout`.
    pub fn node(
        &self,
        argv: &[&str],
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> anyhow::Result<Output> {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", NS_NODE]).args(argv);
        self.run_bounded(&mut cmd, stdin, timeout)
    }

    /// Empties the node's conntrack table, so one measurement's entries do not meet the next.
    pub fn flush_conntrack(&self) -> anyhow::Result<()> {
        let output = Command::new("ip")
            .args(["netns", "exec", NS_NODE, "conntrack", "-F"])
            .output()
            .context("cannot run conntrack")?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        // With no NAT rule loaded, the namespace may have no conntrack table at all.
        if !output.status.success() && !stderr.contains("No such file") {
            bail!("`conntrack -F` in {NS_NODE} failed: {}", stderr.trim());
        }
        Ok(())
    }

    /// [`run_bounded`] with this lab's Ctrl-C flag.
    fn run_bounded(
        &self,
        cmd: &mut Command,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> anyhow::Result<Output> {
        run_bounded(cmd, stdin, timeout, &self.stop)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.lb = None;
        for server in &mut self.servers {
            // Our own children, not yet reaped: their PIDs cannot have been reused.
            if let Err(e) = server.child.kill() {
                eprintln!("warning: cannot stop {}: {e}", server.name);
            }
            let _ = server.child.wait();
        }
        remove_everything();
    }
}

/// Removes every namespace, cgroup and pin the benchmark uses, whether this run or an earlier
/// one created it. Returns whether there was anything to remove.
fn remove_everything() -> bool {
    let mut found = false;
    let pins = Path::new(PIN_ROOT).join("lb");
    if pins.exists() {
        found = true;
        if let Err(e) = LoadBalancer::remove_pins(&pins) {
            eprintln!(
                "warning: cannot remove the pins under {}: {e}",
                pins.display()
            );
        }
    }
    if Path::new(PIN_ROOT).exists() {
        found = true;
        if let Err(e) = std::fs::remove_dir(PIN_ROOT) {
            eprintln!("warning: cannot remove {PIN_ROOT}: {e}");
        }
    }
    for dir in ["clients", "servers", ""] {
        let path = Path::new(CGROUP).join(dir);
        if !path.exists() {
            continue;
        }
        found = true;
        // Processes an earlier run could not stop (it was killed): stop them by PID.
        let procs = std::fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            kill(pid);
        }
        let mut removed = false;
        for _ in 0..100 {
            if std::fs::remove_dir(&path).is_ok() {
                removed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !removed {
            eprintln!("warning: cannot remove cgroup {}", path.display());
        }
    }
    for ns in NAMESPACES {
        if Path::new("/run/netns").join(ns).exists() {
            found = true;
            // Deleting a namespace removes its interfaces, addresses, routes and rules.
            if let Err(e) = run(Command::new("ip").args(["netns", "del", ns])) {
                eprintln!("warning: {e:#}");
            }
        }
    }
    found
}

fn kill(pid: i32) {
    use nix::{sys::signal, unistd::Pid};
    match signal::kill(Pid::from_raw(pid), signal::Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => eprintln!("warning: cannot stop process {pid}: {e}"),
    }
}

/// `sh -c 'echo $$ > CG/<cgroup>/cgroup.procs && exec ip netns exec NS argv…'`: the process
/// joins the cgroup before it starts, so every socket it opens is below the cgroup's hooks.
fn in_cgroup_and_ns(cgroup: &str, ns: &str, argv: &[String]) -> Command {
    let procs = Path::new(CGROUP).join(cgroup).join("cgroup.procs");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"echo $$ > "$0" && exec "$@""#)
        .arg(procs)
        .args(["ip", "netns", "exec", ns])
        .args(argv)
        .process_group(0);
    cmd
}

fn ip(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(["-n", ns]).args(args)).map(drop)
}

fn sysctl(ns: &str, key: &str, value: &str) -> anyhow::Result<()> {
    run(Command::new("ip").args([
        "netns",
        "exec",
        ns,
        "sysctl",
        "-q",
        "-w",
        &format!("{key}={value}"),
    ]))
    .map(drop)
}

fn ns_output(ns: &str, argv: &[&str]) -> anyhow::Result<String> {
    let output = run(Command::new("ip").args(["netns", "exec", ns]).args(argv))?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs a short command to completion; fails with its stderr.
fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let shown = display(cmd);
    let output = cmd
        .output()
        .with_context(|| format!("cannot run `{shown}`"))?;
    if !output.status.success() {
        bail!(
            "`{shown}` failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

/// Runs `cmd` (in its own process group, so Ctrl-C reaches only this process), stopping it
/// after `timeout` or once `stop` is set. Fails with its stderr (its stdout if that is empty) if
/// it fails.
pub(crate) fn run_bounded(
    cmd: &mut Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<Output> {
    let shown = display(cmd);
    let mut child = cmd
        .process_group(0)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    let feeder = stdin.zip(child.stdin.take()).map(|(data, mut pipe)| {
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        })
    });
    let readers = [
        child.stdout.take().map(drain),
        child.stderr.take().map(drain),
    ];
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().context("cannot wait for a child")? {
            break status;
        }
        let stopped = stop.load(Ordering::Relaxed);
        if stopped || Instant::now() > deadline {
            // Our own child, not yet reaped: its PID cannot have been reused.
            let _ = child.kill();
            let _ = child.wait();
            if stopped {
                bail!("interrupted");
            }
            return Err(TimedOut {
                command: shown,
                after: timeout,
            }
            .into());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if let Some(feeder) = feeder {
        let _ = feeder.join();
    }
    let [stdout, stderr] = readers.map(|r| r.and_then(|h| h.join().ok()).unwrap_or_default());
    if !status.success() {
        let said = if stderr.trim_ascii().is_empty() {
            &stdout
        } else {
            &stderr
        };
        bail!(
            "`{}` failed with {status}: {}",
            shorten(&shown),
            String::from_utf8_lossy(said).trim()
        );
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn drain<R: std::io::Read + Send + 'static>(mut pipe: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn shorten(text: &str) -> String {
    if text.len() <= 200 {
        return text.to_owned();
    }
    let mut end = 200;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

pub(crate) fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

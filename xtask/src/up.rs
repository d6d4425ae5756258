//! `cargo xtask up` / `cargo xtask down`: the main job, an all-in-one keelson node on this
//! machine.
//!
//! `up` builds the release binaries, starts `keelson-control-plane` (the Kubernetes API on
//! embedded SQLite under `.keelson/`, scheduler and controllers inside) and `keelson-node-agent`
//! for this machine (socket-LB attached at the cgroup2 root, pods on Docker), waits for the Node
//! to be Ready, applies `examples/hello.yaml` and shows the Service answering from its backends
//! through the eBPF datapath. It then follows both logs until Ctrl-C, or returns at once with
//! `--detach` (`down` stops it).
//!
//! Stopping (Ctrl-C or `down`) stops the node agent, removes this node's pod containers (their
//! network namespaces, veths and routes go with them), the pinned maps under
//! `/sys/fs/bpf/keelson/<node>` and the blackhole/unreachable routes, then stops the control plane. The
//! cluster's state (`.keelson/state.db`, certificates, the agent's IPAM file) stays: the next
//! `up` starts the same objects again, and `rm -rf .keelson` forgets them.

use std::{
    io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;
use nix::{
    sys::signal::{self, SigHandler, Signal},
    unistd::Pid,
};

use crate::cmd::{self, command, repo_root};
use keelson_testbed::wait_until;

/// The API server's port.
const API_PORT: u16 = 6443;
/// The control plane's default Service range; blackholed so that an untranslated Service packet
/// never leaves through the uplink.
const SERVICE_CIDR: &str = "10.96.0.0/12";
/// The control plane's default cluster CIDR (node pod CIDRs are /24s inside it).
const CLUSTER_CIDR_PREFIX: &str = "10.244.";
const DEMO_REQUESTS: usize = 30;
/// The default LoadBalancer pool of `up`: a /28 of a private block unlikely to be in use.
const LB_POOL: &str = "172.29.254.0/28";
/// The demo's LoadBalancer Service.
const HELLO_LB: &str = "apiVersion: v1
kind: Service
metadata:
  name: hello-lb
spec:
  type: LoadBalancer
  selector:
    app: hello
  ports:
    - port: 80
      targetPort: http
";

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Return once the demo answers, leaving keelson running in the background
    /// (`cargo xtask down` stops it).
    #[arg(long)]
    detach: bool,
    /// The address the control plane listens on (`0.0.0.0`: every address, so other hosts,
    /// VMs and pods reach the API; it then advertises the default-route interface's address).
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: std::net::IpAddr,
    /// The LoadBalancer pool (`--service-lb-pool`), a CIDR that exists only on this machine:
    /// blackholed here so that nothing for it leaves through the uplink (the node's socket-LB
    /// answers it from this machine; no address is announced on the network).
    #[arg(long, default_value = LB_POOL, value_parser = parse_cidr)]
    lb_pool: String,
}

/// An IPv4 CIDR `a.b.c.d/n`, as given.
fn parse_cidr(value: &str) -> Result<String, String> {
    let (ip, len) = value
        .split_once('/')
        .ok_or_else(|| format!("{value}: not a CIDR (a.b.c.d/n)"))?;
    ip.parse::<Ipv4Addr>()
        .map_err(|e| format!("{value}: {e}"))?;
    match len.parse::<u8>() {
        Ok(len) if len <= 32 => Ok(value.to_owned()),
        _ => Err(format!("{value}: the prefix length is 0 to 32")),
    }
}

impl UpArgs {
    /// What the control plane listens on.
    fn listen(&self) -> SocketAddr {
        SocketAddr::new(self.bind_address, API_PORT)
    }

    /// Where this machine reaches the control plane (loopback when it listens everywhere).
    fn probe(&self) -> SocketAddr {
        if self.bind_address.is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], API_PORT))
        } else {
            self.listen()
        }
    }
}

/// What `up` started, as `.keelson/up.state` records it for `down`.
#[derive(Debug, Default)]
struct Running {
    node: String,
    control_plane: Option<u32>,
    node_agent: Option<u32>,
    /// The LoadBalancer pool blackholed by `up`.
    lb_pool: Option<String>,
}

fn state_dir() -> PathBuf {
    repo_root().join(".keelson")
}

fn state_file() -> PathBuf {
    state_dir().join("up.state")
}

fn log_dir() -> PathBuf {
    state_dir().join("logs")
}

impl Running {
    fn save(&self) -> anyhow::Result<()> {
        let mut text = format!("node {}\n", self.node);
        if let Some(pid) = self.control_plane {
            text.push_str(&format!("keelson-control-plane {pid}\n"));
        }
        if let Some(pid) = self.node_agent {
            text.push_str(&format!("keelson-node-agent {pid}\n"));
        }
        if let Some(pool) = &self.lb_pool {
            text.push_str(&format!("lb-pool {pool}\n"));
        }
        std::fs::write(state_file(), text).context("cannot write .keelson/up.state")
    }

    fn load() -> Option<Self> {
        let text = std::fs::read_to_string(state_file()).ok()?;
        let mut running = Self::default();
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("node", node)) => running.node = node.to_owned(),
                Some(("keelson-control-plane", pid)) => running.control_plane = pid.parse().ok(),
                Some(("keelson-node-agent", pid)) => running.node_agent = pid.parse().ok(),
                Some(("lb-pool", pool)) => running.lb_pool = Some(pool.to_owned()),
                _ => {}
            }
        }
        Some(running)
    }
}

/// Whether `pid` is alive and runs `binary` (so a recycled pid is never signalled).
fn runs(pid: u32, binary: &str) -> bool {
    keelson_testbed::runs(pid, binary)
}

/// Builds the release binaries of the node agent and the control plane; returns their
/// directory (`$CARGO_TARGET_DIR/release`, else `target/release`).
pub(crate) fn build_release() -> anyhow::Result<PathBuf> {
    cmd::run(command("cargo").args([
        "build",
        "--release",
        "--package",
        "keelson-node-agent",
        "--package",
        "keelson-control-plane",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_relative() {
                repo_root().join(dir)
            } else {
                dir
            }
        })
        .unwrap_or_else(|| repo_root().join("target"));
    Ok(target.join("release"))
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

pub fn run(args: &UpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    cmd::require_root("cargo xtask up")?;
    crate::setup::run()?;
    let kubectl = kubectl()?;

    if let Some(previous) = Running::load() {
        let alive = previous
            .control_plane
            .is_some_and(|pid| runs(pid, "keelson-control-plane"))
            || previous
                .node_agent
                .is_some_and(|pid| runs(pid, "keelson-node-agent"));
        if alive {
            bail!("keelson is already up (see .keelson/up.state): run `cargo xtask down` first");
        }
        println!("==> up: cleaning up after a previous `up` that did not stop cleanly");
        stop(&previous);
    }
    if TcpStream::connect(args.probe()).is_ok() {
        bail!(
            "{} is already in use by another program; keelson's API needs it",
            args.probe()
        );
    }

    println!("==> up: building release binaries");
    let release = build_release()?;
    let data_dir = state_dir();
    std::fs::create_dir_all(log_dir()).context("cannot create .keelson/logs")?;
    let node = hostname()?;
    let mut running = Running {
        node: node.clone(),
        ..Running::default()
    };

    // Everything below is undone by `stop` if a step fails.
    let result = start(&release, &data_dir, &kubectl, &mut running, started, args);
    if let Err(error) = result {
        println!("==> up: failed; stopping what was started");
        stop(&running);
        return Err(error);
    }
    if args.detach {
        println!(
            "==> up: keelson keeps running in the background (logs in {}); `cargo xtask down` \
             stops it",
            log_dir().display()
        );
        return Ok(());
    }

    // Foreground: follow the logs until Ctrl-C (or a component exits).
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { signal::signal(sig, SigHandler::Handler(on_signal)) }
            .context("cannot install the Ctrl-C handler")?;
    }
    println!("==> up: following the logs; Ctrl-C stops keelson\n");
    let mut logs = [
        LogTail::new("control-plane", log_dir().join("control-plane.log")),
        LogTail::new("node-agent", log_dir().join("node-agent.log")),
    ];
    let exited = loop {
        for log in &mut logs {
            log.print_new();
        }
        if STOP.load(Ordering::SeqCst) {
            break None;
        }
        if let Some(pid) = running.control_plane
            && !runs(pid, "keelson-control-plane")
        {
            break Some("keelson-control-plane");
        }
        if let Some(pid) = running.node_agent
            && !runs(pid, "keelson-node-agent")
        {
            break Some("keelson-node-agent");
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    match exited {
        None => println!("\n==> up: stopping (Ctrl-C)"),
        Some(which) => println!("\n==> up: {which} exited; stopping the rest"),
    }
    stop(&running);
    println!(
        "==> up: stopped; the cluster's state stays in {} for the next `up`",
        data_dir.display()
    );
    match exited {
        None => Ok(()),
        Some(which) => bail!(
            "{which} exited on its own; its log is in {}",
            log_dir().display()
        ),
    }
}

/// `cargo xtask down`: stops what `up --detach` (or an interrupted `up`) left running.
pub fn down() -> anyhow::Result<()> {
    cmd::require_root("cargo xtask down")?;
    let Some(running) = Running::load() else {
        println!("==> down: nothing to stop (no .keelson/up.state)");
        return Ok(());
    };
    println!("==> down: stopping keelson on node {}", running.node);
    stop(&running);
    println!("==> down: stopped; the cluster's state stays in .keelson/ for the next `up`");
    Ok(())
}

fn start(
    release: &Path,
    data_dir: &Path,
    kubectl: &Path,
    running: &mut Running,
    started: Instant,
    args: &UpArgs,
) -> anyhow::Result<()> {
    let node = running.node.clone();
    // Untranslated Service traffic stays on this machine (the node agent blackholes its pod CIDR).
    cmd::run(command("ip").args(["route", "replace", "blackhole", SERVICE_CIDR]))?;
    // So does traffic for LoadBalancer IPs: the pool is routed nowhere but here.
    let lb_pool = args.lb_pool.clone();
    running.lb_pool = Some(lb_pool.clone());
    running.save()?;
    cmd::run(command("ip").args(["route", "replace", "blackhole", &lb_pool]))?;

    println!(
        "==> up: starting keelson-control-plane on https://{} (state in {}, log in {})",
        args.listen(),
        data_dir.display(),
        log_dir().join("control-plane.log").display()
    );
    let control_plane = release.join("keelson-control-plane");
    let child = background(&control_plane, "control-plane.log")?
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--listen",
            &args.listen().to_string(),
            "--leader-elect=false",
            "--service-lb-pool",
            &lb_pool,
        ])
        .spawn()
        .context("cannot start keelson-control-plane")?;
    running.control_plane = Some(child.id());
    running.save()?;
    let admin = data_dir.join("admin.kubeconfig");
    wait_until(Duration::from_secs(60), "the API server to answer", || {
        if !runs(child.id(), "keelson-control-plane") {
            bail!(
                "keelson-control-plane exited; its log:\n{}",
                tail(&log_dir().join("control-plane.log"))
            );
        }
        Ok(TcpStream::connect(args.probe()).is_ok() && admin.is_file())
    })?;

    println!("==> up: issuing node credentials for {node}");
    let node_kubeconfig = data_dir.join("node.kubeconfig");
    cmd::run(
        command(&control_plane.display().to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--listen",
                &args.listen().to_string(),
                "node-kubeconfig",
                "--node",
                &node,
                "--out",
            ])
            .arg(&node_kubeconfig),
    )?;

    println!(
        "==> up: starting keelson-node-agent for node {node} (socket-LB on the cgroup2 root, \
         pods on Docker; log in {})",
        log_dir().join("node-agent.log").display()
    );
    let agent = background(&release.join("keelson-node-agent"), "node-agent.log")?
        .arg("run")
        .arg("--kubeconfig")
        .arg(&node_kubeconfig)
        .args(["--node-name", &node])
        .arg("--data-dir")
        .arg(data_dir.join("agent"))
        // The host's disk is shared with everything else on it: no disk-pressure eviction.
        .env(
            "KEELSON_EVICTION_HARD",
            keelson_testbed::SHARED_HOST_EVICTION_HARD,
        )
        .env("RUST_LOG", "info")
        .spawn()
        .context("cannot start keelson-node-agent")?;
    running.node_agent = Some(agent.id());
    running.save()?;

    let kube = |args: &[&str]| -> anyhow::Result<String> {
        let output = Command::new(kubectl)
            .arg("--kubeconfig")
            .arg(&admin)
            .args(args)
            .output()
            .with_context(|| format!("cannot run {}", kubectl.display()))?;
        if !output.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    println!("==> up: waiting for node {node} to be Ready");
    wait_until(Duration::from_secs(120), "the node to be Ready", || {
        if !runs(agent.id(), "keelson-node-agent") {
            bail!(
                "keelson-node-agent exited; its log:\n{}",
                tail(&log_dir().join("node-agent.log"))
            );
        }
        let ready = kube(&[
            "get",
            "node",
            &node,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        Ok(ready.is_ok_and(|status| status == "True"))
    })?;

    println!(
        "==> up: applying examples/hello.yaml (Deployment hello x3, Services hello and hello-nodeport)"
    );
    let manifest = repo_root().join("examples/hello.yaml");
    println!(
        "{}",
        kube(&["apply", "-f", &manifest.display().to_string()])?
    );
    println!("==> up: waiting for the rollout");
    let rollout = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(&admin)
        .args(["rollout", "status", "deployment/hello", "--timeout=180s"])
        .status()
        .context("cannot run kubectl rollout status")?;
    if !rollout.success() {
        bail!(
            "deployment hello did not roll out within 180 s; `kubectl describe pods -l app=hello` \
             says why. Node agent log:\n{}",
            tail(&log_dir().join("node-agent.log"))
        );
    }
    println!(
        "{}",
        kube(&["get", "pods", "-l", "app=hello", "-o", "wide"])?
    );

    let cluster_ip: Ipv4Addr = kube(&[
        "get",
        "service",
        "hello",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ])?
    .parse()
    .context("service hello has no IPv4 ClusterIP")?;
    let node_ip: Ipv4Addr = kube(&[
        "get",
        "node",
        &node,
        "-o",
        "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
    ])?
    .parse()
    .context("the node has no IPv4 InternalIP")?;
    let node_port: u16 = kube(&[
        "get",
        "service",
        "hello-nodeport",
        "-o",
        "jsonpath={.spec.ports[0].nodePort}",
    ])?
    .parse()
    .context("service hello-nodeport has no nodePort")?;

    println!(
        "==> up: {DEMO_REQUESTS} requests to the Service hello at {cluster_ip}:80, translated by \
         the eBPF socket-LB"
    );
    let vip = SocketAddr::from((cluster_ip, 80));
    let first = retry_get(vip, Duration::from_secs(60))?;
    println!(
        "    first answer through the Service {:.1} s after `up` started: {first}",
        started.elapsed().as_secs_f64()
    );
    let mut answers: Vec<(String, usize)> = Vec::new();
    for _ in 0..DEMO_REQUESTS {
        let backend = http_get(vip).with_context(|| format!("GET http://{vip}/"))?;
        match answers.iter_mut().find(|(name, _)| *name == backend) {
            Some((_, count)) => *count += 1,
            None => answers.push((backend, 1)),
        }
    }
    answers.sort();
    for (backend, count) in &answers {
        println!("    {backend}: {count} answers");
    }
    println!("    {} different backends answered", answers.len());
    let node_port_address = SocketAddr::from((node_ip, node_port));
    let via_node_port = retry_get(node_port_address, Duration::from_secs(20))?;
    println!("    NodePort http://{node_port_address}/ answered: {via_node_port}");
    let lb_manifest = log_dir().join("hello-lb.yaml");
    std::fs::write(&lb_manifest, HELLO_LB).context("cannot write hello-lb.yaml")?;
    kube(&["apply", "-f", &lb_manifest.display().to_string()])?;
    let mut external_ip = String::new();
    wait_until(
        Duration::from_secs(20),
        "the LoadBalancer Service hello-lb to get an EXTERNAL-IP",
        || {
            external_ip = kube(&[
                "get",
                "service",
                "hello-lb",
                "-o",
                "jsonpath={.status.loadBalancer.ingress[0].ip}",
            ])
            .unwrap_or_default();
            Ok(!external_ip.trim().is_empty())
        },
    )?;
    let external_ip: Ipv4Addr = external_ip
        .trim()
        .parse()
        .context("service hello-lb has no IPv4 EXTERNAL-IP")?;
    let lb_address = SocketAddr::from((external_ip, 80));
    let via_lb = retry_get(lb_address, Duration::from_secs(20))?;
    println!(
        "    LoadBalancer http://{lb_address}/ (EXTERNAL-IP from {lb_pool}, socket-LB) answered: \
         {via_lb}"
    );

    let kubeconfig = admin.display();
    println!(
        "\n==> up: keelson is up ({:.0} s). In another shell:\n\
         \x20   export KUBECONFIG={kubeconfig}\n\
         \x20   kubectl get nodes,pods,services,endpointslices -o wide\n\
         \x20   curl http://{cluster_ip}/            # the ClusterIP, from this machine\n\
         \x20   curl http://{node_port_address}/     # the NodePort\n\
         \x20   curl http://{external_ip}/           # hello-lb's EXTERNAL-IP (LoadBalancer)\n\
         \x20   kubectl scale deployment hello --replicas=5\n\
         \x20   kubectl logs deployment/hello\n\
         \x20   {}/keelson-node-agent lb list --node-name {node}   # the eBPF maps\n\
         \x20   curl -s http://127.0.0.1:10249/metrics | grep keelson_   # datapath and pod metrics\n\
         Logs: {}",
        started.elapsed().as_secs_f64(),
        release.display(),
        log_dir().display(),
    );
    if !args.detach {
        println!(
            "Ctrl-C stops keelson (pods, veths, maps and routes are removed; the state stays)."
        );
    }
    Ok(())
}

/// A command for a long-running component: its own process group (Ctrl-C reaches `up`, which
/// stops the components in order), output appended to `.keelson/logs/<log>`.
fn background(binary: &Path, log: &str) -> anyhow::Result<Command> {
    let path = log_dir().join(log);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let err = file.try_clone().context("cannot duplicate the log file")?;
    let mut cmd = command(&binary.display().to_string());
    cmd.stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .process_group(0);
    Ok(cmd)
}

/// `GET /` over HTTP/1.0; the body, trimmed (the demo's backends answer with their pod name).
fn http_get(address: SocketAddr) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET / HTTP/1.0\r\nHost: hello\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("not an HTTP response")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!(
            "answered {}",
            head.lines().next().unwrap_or("nothing").trim()
        );
    }
    Ok(body.trim().to_owned())
}

/// [`http_get`] until it answers or `timeout` passes (endpoints take a moment to reach the maps).
fn retry_get(address: SocketAddr, timeout: Duration) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        match http_get(address) {
            Ok(body) => return Ok(body),
            Err(error) if Instant::now() > deadline => {
                return Err(error.context(format!(
                    "no answer from http://{address}/ within {timeout:?}"
                )));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// Stops the node agent, removes this node's pods' containers, pinned maps and the blackhole
/// routes, then stops the control plane. Best effort: every step runs even if one fails.
fn stop(running: &Running) {
    if let Some(pid) = running.node_agent {
        terminate(pid, "keelson-node-agent", Signal::SIGINT);
    }
    if !running.node.is_empty() {
        let containers = cmd::output(command("docker").args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.keelson.node={}", running.node),
        ]))
        .unwrap_or_default();
        let ids: Vec<&str> = containers.split_whitespace().collect();
        if !ids.is_empty() {
            println!("    removing {} pod containers", ids.len());
            let _ = command("docker")
                .args(["rm", "-f"])
                .args(&ids)
                .stdout(Stdio::null())
                .status();
        }
        let pins = Path::new("/sys/fs/bpf/keelson").join(&running.node);
        if pins.exists() {
            println!("    removing the pinned maps in {}", pins.display());
            if let Err(error) = std::fs::remove_dir_all(&pins) {
                println!("    cannot remove {}: {error}", pins.display());
            }
        }
    }
    // The blackhole (up, the agent's pod CIDR) and unreachable (the agent's Service CIDR) routes.
    let routes = cmd::output(command("ip").args(["-o", "-4", "route", "show"])).unwrap_or_default();
    for line in routes.lines() {
        let mut words = line.split_whitespace();
        let (Some(kind), Some(dest)) = (words.next(), words.next()) else {
            continue;
        };
        if matches!(kind, "blackhole" | "unreachable")
            && (dest == SERVICE_CIDR
                || dest.starts_with(CLUSTER_CIDR_PREFIX)
                || running.lb_pool.as_deref() == Some(dest))
        {
            let _ = command("ip").args(["route", "del", kind, dest]).status();
        }
    }
    if let Some(pid) = running.control_plane {
        terminate(pid, "keelson-control-plane", Signal::SIGTERM);
    }
    let _ = std::fs::remove_file(state_file());
}

/// Sends `sig` to `pid` if it still runs `binary`, waits up to 15 s, then SIGKILL.
fn terminate(pid: u32, binary: &str, sig: Signal) {
    if !runs(pid, binary) {
        return;
    }
    println!("    stopping {binary} (pid {pid})");
    let target = Pid::from_raw(pid as i32);
    let _ = signal::kill(target, sig);
    let deadline = Instant::now() + Duration::from_secs(15);
    while runs(pid, binary) && Instant::now() < deadline {
        // Reap it if it is our child (a no-op otherwise).
        let _ = nix::sys::wait::waitpid(target, Some(nix::sys::wait::WaitPidFlag::WNOHANG));
        std::thread::sleep(Duration::from_millis(100));
    }
    if runs(pid, binary) {
        println!("    {binary} did not stop within 15 s: SIGKILL");
        let _ = signal::kill(target, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(target, None);
    }
}

/// This machine's host name: the Node's name.
fn hostname() -> anyhow::Result<String> {
    let name = nix::unistd::gethostname().context("cannot read the host name")?;
    let name = name
        .into_string()
        .map_err(|_| anyhow::anyhow!("the host name is not UTF-8"))?
        .to_lowercase();
    if name.is_empty() {
        bail!("this machine has no host name; set one (hostnamectl set-hostname …)");
    }
    Ok(name)
}

/// kubectl: the machine image's 1.33, else the one on PATH.
pub(crate) fn kubectl() -> anyhow::Result<PathBuf> {
    keelson_testbed::kubectl_binary()
}

/// The last 30 lines of a log file.
pub(crate) fn tail(path: &Path) -> String {
    keelson_testbed::tail(path, 30)
}

/// Prints the lines appended to a log since the last call, prefixed with the component's name.
struct LogTail {
    name: &'static str,
    path: PathBuf,
    offset: u64,
}

impl LogTail {
    fn new(name: &'static str, path: PathBuf) -> Self {
        // Start at the end: what happened during startup was summarised already.
        let offset = std::fs::metadata(&path).map_or(0, |m| m.len());
        Self { name, path, offset }
    }

    fn print_new(&mut self) {
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return;
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut reader = BufReader::new(file);
        let mut line = String::new();
        // Bounded: at most 1000 lines per call.
        for _ in 0..1000 {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(n) if line.ends_with('\n') => {
                    self.offset += n as u64;
                    println!("[{}] {}", self.name, line.trim_end());
                }
                // A partial line: wait for the rest.
                Ok(_) => break,
            }
        }
    }
}

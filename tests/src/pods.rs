//! Helpers for the pod tests: the node agent with node credentials, a test pod CIDR, Docker and
//! cleanup of everything a test's pods leave behind (containers by label, veths, routes).

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use crate::{
    cgroup::TestCgroup,
    cluster::{ControlPlane, Kubectl, control_plane_binary},
    lbkit::{Pins, node_agent_binary},
    unique_name,
};

/// The test images `cargo xtask images` builds.
pub const BUSYBOX: &str = "keelson/busybox:1";
/// busybox httpd serving the pod's hostname on port 80.
pub const HTTPD: &str = "keelson/httpd:1";

/// Panics unless dockerd answers and the test images exist.
pub fn require_docker_images() {
    for image in [BUSYBOX, HTTPD] {
        let ok = Command::new("docker")
            .args(["image", "inspect", image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "Docker has no image {image} (or dockerd is not running): run `cargo xtask setup`"
        );
    }
}

/// A /24 inside 10.250.0.0/16 that no other running test holds, and the lock that holds it
/// (an exclusive `flock` on `/run/keelson-tests/10.250.N.lock`, released when dropped or when
/// the process dies). Tests run as separate processes at once; two agents on one CIDR would
/// fight over its routes and its DNS address.
pub fn test_cidr() -> (String, Ipv4Addr, nix::fcntl::Flock<std::fs::File>) {
    let (third, lock) = crate::claim_slot(250, |n| format!("10.250.{n}.lock"))
        .unwrap_or_else(|| panic!("every /24 of 10.250.0.0/16 is held by a running test"));
    let third = third as u8;
    (
        format!("10.250.{third}.0/24"),
        Ipv4Addr::new(10, 250, third, 0),
        lock,
    )
}

/// Runs `docker` and returns stdout; panics when it fails.
pub fn docker(args: &[&str]) -> String {
    let output = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker {args:?}: {e}"));
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `docker exec <id> sh -c <script>`: (success, stdout+stderr).
pub fn exec(container: &str, script: &str) -> (bool, String) {
    let output = Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .output()
        .expect("run docker exec");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// The Docker ids of pod `uid`'s containers: (container name label, attempt, id), sorted.
pub fn pod_containers(uid: &str) -> Vec<(String, u32, String)> {
    let out = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("label=io.keelson.pod.uid={uid}"),
        "--format",
        "{{.Label \"io.keelson.container\"}} {{.Label \"io.keelson.attempt\"}} {{.ID}}",
    ]);
    let mut list: Vec<(String, u32, String)> = out
        .lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((
                parts.next()?.to_owned(),
                parts.next()?.parse().ok()?,
                parts.next()?.to_owned(),
            ))
        })
        .collect();
    list.sort();
    list
}

/// The running container of `name` in pod `uid`.
pub fn container_id(uid: &str, name: &str) -> String {
    let out = docker(&[
        "ps",
        "--filter",
        &format!("label=io.keelson.pod.uid={uid}"),
        "--filter",
        &format!("label=io.keelson.container={name}"),
        "--format",
        "{{.ID}}",
    ]);
    out.lines()
        .next()
        .unwrap_or_else(|| panic!("no running container {name} in pod {uid}"))
        .to_owned()
}

/// The node agent (`keelson-node-agent run`) for one test node, with node credentials from
/// the control plane, its own pins, cgroup, data directory and pod CIDR. Drop kills it and
/// removes every container, veth and route its pods left.
#[derive(Debug)]
pub struct PodAgent {
    child: Option<Child>,
    /// The node's name.
    pub node: String,
    /// The pod CIDR (`10.250.N.0/24`).
    pub cidr: String,
    /// The agent's data directory (IPAM state in `ipam.json`).
    pub data_dir: PathBuf,
    kubeconfig: PathBuf,
    log: PathBuf,
    extra: Vec<String>,
    /// Where the agent serves `/metrics` (`127.0.0.1:PORT`), chosen at each start.
    metrics_port: u16,
    pins: Pins,
    cgroup: TestCgroup,
    _dir: tempfile::TempDir,
    /// Holds [`Self::cidr`] for this test (see [`test_cidr`]); released after drop's cleanup.
    _cidr_lock: nix::fcntl::Flock<std::fs::File>,
}

impl PodAgent {
    /// Issues node credentials and starts the agent; waits until its Node is Ready.
    pub fn start(plane: &ControlPlane, extra: &[&str]) -> Self {
        crate::require_root();
        require_docker_images();
        let dir = tempfile::tempdir().expect("agent temp dir");
        let node = unique_name("kn");
        let kubeconfig = dir.path().join("node.kubeconfig");
        let output = Command::new(control_plane_binary())
            .arg("--data-dir")
            .arg(plane.data_dir())
            .arg("--listen")
            .arg(plane.listen().to_string())
            .args(["node-kubeconfig", "--node", &node, "--out"])
            .arg(&kubeconfig)
            .output()
            .expect("run keelson-control-plane node-kubeconfig");
        assert!(
            output.status.success(),
            "node-kubeconfig failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let (cidr, _, cidr_lock) = test_cidr();
        let mut agent = Self {
            child: None,
            node,
            cidr,
            data_dir: dir.path().join("data"),
            kubeconfig,
            log: dir.path().join("agent.log"),
            extra: extra.iter().map(ToString::to_string).collect(),
            metrics_port: 0,
            pins: Pins::new(),
            cgroup: TestCgroup::new(),
            _dir: dir,
            _cidr_lock: cidr_lock,
        };
        agent.spawn();
        agent
    }

    /// Like [`PodAgent::start`] with node credentials from `planes[0]` (the planes share one CA)
    /// and `--api-servers` naming every plane in the given order: the agent fails over between
    /// them.
    pub fn start_ha(planes: &[&ControlPlane], extra: &[&str]) -> Self {
        let first = planes.first().expect("at least one control plane");
        let servers = planes.iter().map(|p| p.url()).collect::<Vec<_>>().join(",");
        let mut args = vec!["--api-servers", servers.as_str()];
        args.extend_from_slice(extra);
        Self::start(first, &args)
    }

    fn spawn(&mut self) {
        let metrics_port = keelson_testbed::free_loopback_port().expect("a free port");
        self.metrics_port = metrics_port;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        // The node's own settings go through the agent's config file (as a node daemon would
        // be set up), the test harness's through flags; flags in `extra` win over the file.
        // `uplink: off`: a test agent never attaches to the machine's real uplink (the default,
        // `auto`, is the interface of the default route); a test that wants one passes
        // `--uplink <its veth>`.
        let config = self.log.with_file_name("agent.yaml");
        std::fs::write(
            &config,
            format!(
                "node-name: {}\npod-cidr: {}\ndata-dir: {}\nkubelet-listen: 127.0.0.1:0\n\
                 metrics-listen: 127.0.0.1:{metrics_port}\nuplink: \"off\"\n",
                self.node,
                self.cidr,
                self.data_dir.display()
            ),
        )
        .expect("write the agent's config file");
        let child = Command::new(node_agent_binary())
            .arg("run")
            .arg("--config")
            .arg(&config)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--pin-dir")
            .arg(self.pins.path())
            .arg("--cgroup")
            .arg(self.cgroup.path())
            .args(&self.extra)
            // The suite shares one Docker daemon: no image garbage collection unless a test
            // opts in with `--image-gc-high-threshold`.
            .env("KEELSON_IMAGE_GC_HIGH_THRESHOLD", "100")
            .env(
                "KEELSON_EVICTION_HARD",
                keelson_testbed::SHARED_HOST_EVICTION_HARD,
            )
            .env(
                "RUST_LOG",
                std::env::var("KEELSON_TEST_AGENT_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start keelson-node-agent run");
        self.child = Some(child);
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the agent runs").id()
    }

    /// Where the agent serves `/metrics`, `/flows` and the health checks (`127.0.0.1:PORT`).
    pub fn metrics_address(&self) -> String {
        format!("127.0.0.1:{}", self.metrics_port)
    }

    /// The agent's `/metrics` text (HTTP/1.0 GET on its metrics address).
    pub fn metrics(&self) -> String {
        use std::io::{Read as _, Write as _};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.metrics_port))
            .expect("connect to the agent's /metrics");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("read timeout");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .expect("send GET /metrics");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).expect("read /metrics");
        let (head, body) = answer
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"));
        assert!(
            head.starts_with("HTTP/1.") && head.contains(" 200 "),
            "{head}"
        );
        body.to_owned()
    }

    /// The agent's resident set size in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let pid = self.child.as_ref().expect("the agent runs").id();
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .expect("VmRSS of the agent")
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the agent with SIGKILL (its pods keep running) and starts it again.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Kills the agent with SIGKILL and starts it again with `extra` as its extra flags
    /// (instead of those it was started with).
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.kill();
        self.extra = extra.iter().map(ToString::to_string).collect();
        self.spawn();
    }

    /// Waits at most `timeout` for the agent to exit by itself; its exit status, or `None` if
    /// it still runs.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the agent with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The directory of the agent's pinned maps and links.
    pub fn pin_dir(&self) -> &Path {
        self.pins.path()
    }

    /// The cgroup2 directory the agent attached socket-LB to.
    pub fn cgroup(&self) -> &Path {
        self.cgroup.path()
    }

    /// Whether the agent process runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// The pinned TC links of pod veths (`tc_from_pod@<veth>`) the agent holds.
    pub fn pod_tc_links(&self) -> Vec<String> {
        std::fs::read_dir(self.pins.path().join("links"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|name| name.starts_with("tc_from_pod@"))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The node kubeconfig the agent uses.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The IPAM state file's allocations (address -> pod uid).
    pub fn allocations(&self) -> serde_json::Map<String, serde_json::Value> {
        std::fs::read(self.data_dir.join("ipam.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.get("allocations")?.as_object().cloned())
            .unwrap_or_default()
    }

    /// Containers of this node's pods, as `docker ps -a` lists them.
    pub fn containers(&self) -> Vec<String> {
        docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=io.keelson.node={}", self.node),
        ])
        .lines()
        .map(str::to_owned)
        .collect()
    }

    /// Node-side routes into the pod CIDR (one `/32` per running pod) and the veths they use.
    pub fn pod_routes(&self) -> Vec<(String, String)> {
        let out = Command::new("ip")
            .args(["-o", "-4", "route", "show", "root", &self.cidr])
            .output()
            .expect("ip route");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with("blackhole"))
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let dest = words.next()?.to_owned();
                let dev = l
                    .split(" dev ")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .to_owned();
                Some((dest, dev))
            })
            .collect()
    }

    /// Waits (at most 60 s) until `pods` lists no pod, then asserts that nothing leaked
    /// ([`Self::assert_no_leaks`]) and that the agent logged no error.
    pub async fn assert_pods_gone_cleanly(&self, pods: &Api<Pod>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !pods
            .list(&kube::api::ListParams::default())
            .await
            .expect("list pods")
            .items
            .is_empty()
        {
            assert!(
                Instant::now() < deadline,
                "every pod is gone within 60 s\nagent log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        self.assert_no_leaks();
        let log = self.log();
        assert!(!log.contains("ERROR"), "the agent logged no error:\n{log}");
    }

    /// Asserts that this node's pods left nothing behind: no containers, no routes or veths in
    /// the pod CIDR, no address allocations, no pinned TC links of pod veths.
    pub fn assert_no_leaks(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let containers = self.containers();
            let routes = self.pod_routes();
            let allocations = self.allocations();
            let tc_links = self.pod_tc_links();
            if containers.is_empty()
                && routes.is_empty()
                && allocations.is_empty()
                && tc_links.is_empty()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "leaks after the pods were deleted: containers {containers:?}, routes {routes:?}, \
                 addresses {allocations:?}, TC links {tc_links:?}\nagent log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for PodAgent {
    fn drop(&mut self) {
        // The log goes with the temporary directory: a failed test shows its end.
        if std::thread::panicking() {
            eprintln!(
                "--- node agent log (last 60 lines) ---\n{}",
                keelson_testbed::tail(&self.log, 60)
            );
        }
        self.kill();
        for id in self.containers() {
            let _ = Command::new("docker").args(["rm", "-f", &id]).output();
        }
        for (_, dev) in self.pod_routes() {
            let _ = Command::new("ip").args(["link", "del", &dev]).output();
        }
        let _ = Command::new("ip")
            .args(["route", "del", "blackhole", &self.cidr])
            .output();
        // The agent's service-CIDR route is the same for every agent on the machine: the last
        // one to stop removes it, so agents of tests running at once keep their safety net.
        if !other_node_agent_running() {
            let _ = Command::new("ip")
                .args(["route", "del", "unreachable", SERVICE_CIDR])
                .output();
        }
    }
}

/// The Service CIDR the control plane allocates ClusterIPs from by default, which the agent
/// makes unreachable towards the uplink.
pub const SERVICE_CIDR: &str = "10.96.0.0/12";

/// Whether any `keelson-node-agent` process runs on the machine (this one's was stopped).
fn other_node_agent_running() -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return true;
    };
    procs.filter_map(Result::ok).any(|entry| {
        // `pid (comm) state ...`; the kernel keeps the first 15 bytes of the name. A zombie
        // (state Z) no longer runs.
        std::fs::read_to_string(entry.path().join("stat")).is_ok_and(|stat| {
            stat.split_once(" (keelson-node-ag) ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        })
    })
}

/// Writes `yaml` to `dir/<file>` and applies it with kubectl.
pub fn apply(kubectl: &Kubectl<'_>, dir: &Path, file: &str, yaml: &str) {
    let path = dir.join(file);
    std::fs::write(&path, yaml).expect("write manifest");
    kubectl.run(&["apply", "-f", &path.to_string_lossy()]);
}

/// Polls pod `name` until `ok` holds (at most `timeout`); returns it. Panics with the pod and
/// the agent's log otherwise.
pub async fn wait_pod(
    pods: &Api<Pod>,
    name: &str,
    timeout: Duration,
    agent: &PodAgent,
    what: &str,
    ok: impl Fn(&Pod) -> bool,
) -> Pod {
    let deadline = Instant::now() + timeout;
    loop {
        let pod = pods.get_opt(name).await.expect("GET pod");
        if let Some(pod) = &pod
            && ok(pod)
        {
            return pod.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {timeout:?}; pod {name}: {}\nagent log:\n{}",
            serde_json::to_string_pretty(&pod.map(|p| p.status)).unwrap_or_default(),
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether the pod is Running with condition Ready True.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// The pod's IP, parsed.
pub fn pod_ip(pod: &Pod) -> Ipv4Addr {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_ref())
        .and_then(|ip| ip.parse().ok())
        .unwrap_or_else(|| panic!("pod has no IP: {:?}", pod.status))
}

/// The pod's uid.
pub fn uid(pod: &Pod) -> String {
    pod.metadata.uid.clone().expect("a uid")
}

//! The scenario's harness: the host side (bridge, tap, route, control plane, qemu; removed by
//! [`Host`]'s `Drop`), the VM over ssh, kubectl, timed steps and the checks of the answers.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use keelson_testbed::{http_get, stop_all, tail};
use serde_json::Value;

pub(crate) const QEMU: &str = "qemu-system-x86_64";
pub(crate) const CONTROL_PLANE: &str = "keelson-control-plane";
/// The pod CIDRs' block; blackholed on the host so nothing addressed to a pod leaves by the
/// host's uplink.
pub(crate) const CLUSTER_CIDR: &str = "10.213.0.0/16";
pub(crate) const NODE_NAME: &str = "keelson-vm";
pub(crate) const NODE_PORT: u16 = 30_080;
pub(crate) const REPLICAS: usize = 2;

pub(crate) fn env_path(name: &str) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("{name} is not set: this test runs through `cargo xtask vm-test --os`")
        })
}

/// Prints each step with its duration; panics naming the step that failed.
pub(crate) struct Steps {
    pub(crate) console: PathBuf,
    pub(crate) control_plane_log: PathBuf,
    /// For the agent's journal when a step fails (if the VM answers ssh by then).
    pub(crate) vm: Vm,
}

impl Steps {
    pub(crate) fn run<T>(
        &self,
        name: &str,
        step: impl FnOnce() -> Result<T, String>,
    ) -> (T, Duration) {
        eprintln!("vm_os: {name} ...");
        let started = Instant::now();
        match step() {
            Ok(value) => {
                let took = started.elapsed();
                eprintln!("vm_os: {name}: ok ({:.1} s)", took.as_secs_f64());
                (value, took)
            }
            Err(why) => panic!(
                "vm_os: step `{name}` failed after {:.1} s: {why}\n--- VM console (last 40 lines) ---\n{}\n--- control plane log (last 20 lines) ---\n{}\n--- the agent's journal (last 60 lines) ---\n{}",
                started.elapsed().as_secs_f64(),
                tail(&self.console, 40),
                tail(&self.control_plane_log, 20),
                self.vm
                    .ssh("journalctl -u keelson-node-agent -n 60 --no-pager -o short-monotonic")
                    .unwrap_or_else(|e| e),
            ),
        }
    }
}

/// Everything the test made on the host; removed on drop.
pub(crate) struct Host {
    pub(crate) run_dir: PathBuf,
    pub(crate) bridge: String,
    pub(crate) tap: String,
    pub(crate) disk: PathBuf,
    pub(crate) qemu: Option<u32>,
    pub(crate) control_plane: Option<u32>,
    pub(crate) route: bool,
}

impl Host {
    pub(crate) fn pid_file(run_dir: &Path, what: &str) -> PathBuf {
        run_dir.join(format!("{what}.pid"))
    }

    /// Removes what a killed earlier run left: its qemu and control plane (by the pids it
    /// wrote, only if they still run those programs), tap, bridge and route.
    pub(crate) fn remove_leftovers(run_dir: &Path, bridge: &str, tap: &str) {
        for (what, binary) in [("qemu", QEMU), ("control-plane", CONTROL_PLANE)] {
            let file = Self::pid_file(run_dir, what);
            if let Some(pid) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
            {
                stop_all(&[pid], binary, Duration::from_secs(5));
            }
            let _ = std::fs::remove_file(file);
        }
        for link in [tap, bridge] {
            if Path::new("/sys/class/net").join(link).exists() {
                let _ = Command::new("ip").args(["link", "del", link]).status();
            }
        }
    }

    pub(crate) fn remember(&mut self, what: &str, pid: u32) {
        let _ = std::fs::write(Self::pid_file(&self.run_dir, what), pid.to_string());
        match what {
            "qemu" => self.qemu = Some(pid),
            _ => self.control_plane = Some(pid),
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(pid) = self.qemu.take() {
            stop_all(&[pid], QEMU, Duration::from_secs(5));
            let _ = std::fs::remove_file(Self::pid_file(&self.run_dir, "qemu"));
        }
        if let Some(pid) = self.control_plane.take() {
            stop_all(&[pid], CONTROL_PLANE, Duration::from_secs(10));
            let _ = std::fs::remove_file(Self::pid_file(&self.run_dir, "control-plane"));
        }
        if self.route {
            let _ = Command::new("ip")
                .args(["route", "del", "blackhole", CLUSTER_CIDR])
                .status();
        }
        for link in [&self.tap, &self.bridge] {
            let _ = Command::new("ip").args(["link", "del", link]).status();
        }
        let _ = std::fs::remove_file(&self.disk);
    }
}

/// `ip ARGS`, its stderr the error.
pub(crate) fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub(crate) fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The VM as ssh sees it.
#[derive(Clone)]
pub(crate) struct Vm {
    pub(crate) address: Ipv4Addr,
    pub(crate) key: PathBuf,
}

impl Vm {
    pub(crate) fn ssh_args(&self) -> Vec<String> {
        [
            "-i",
            &self.key.to_string_lossy(),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "ServerAliveInterval=5",
            "-o",
            "ServerAliveCountMax=6",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    /// Runs `script` as root on the VM; its stdout, or stdout and stderr as the error.
    pub(crate) fn ssh(&self, script: &str) -> Result<String, String> {
        let out = Command::new("ssh")
            .args(self.ssh_args())
            .arg(format!("root@{}", self.address))
            .arg(script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run ssh: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "`{script}` on the VM failed ({}): {}",
                out.status,
                text(&out).trim()
            ))
        }
    }

    pub(crate) fn scp(&self, files: &[&Path], to: &str) -> Result<(), String> {
        let out = Command::new("scp")
            .args(self.ssh_args())
            .args(files)
            .arg(format!("root@{}:{to}", self.address))
            .output()
            .map_err(|e| format!("cannot run scp: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("scp failed: {}", text(&out).trim()))
        }
    }

    /// Waits until ssh logs in (every 2 s, at most `timeout`).
    pub(crate) fn wait_ssh(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            match self.ssh("true") {
                Ok(_) => return Ok(()),
                Err(why) => last = why,
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        Err(format!(
            "no ssh login within {} s (last: {last})",
            timeout.as_secs()
        ))
    }
}

/// kubectl with the admin kubeconfig.
pub(crate) struct Kubectl {
    pub(crate) binary: PathBuf,
    pub(crate) kubeconfig: PathBuf,
}

impl Kubectl {
    pub(crate) fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut child = Command::new(&self.binary)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run kubectl: {e}"))?;
        if let Some(input) = stdin {
            use std::io::Write as _;
            let mut pipe = child.stdin.take().ok_or("kubectl's stdin")?;
            pipe.write_all(input.as_bytes())
                .map_err(|e| format!("writing to kubectl: {e}"))?;
        }
        drop(child.stdin.take());
        let out = child
            .wait_with_output()
            .map_err(|e| format!("kubectl: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "kubectl {} failed: {}",
                args.join(" "),
                text(&out).trim()
            ))
        }
    }

    pub(crate) fn json(&self, args: &[&str]) -> Result<Value, String> {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.run(&all, None)?;
        serde_json::from_str(&out).map_err(|e| format!("kubectl {}: {e}", args.join(" ")))
    }

    pub(crate) fn node_ready(&self) -> Result<bool, String> {
        let Ok(node) = self.json(&["get", "node", NODE_NAME]) else {
            return Ok(false);
        };
        Ok(node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True"))
    }

    /// The names of the Ready pods labelled `app=echo`.
    pub(crate) fn ready_echo_pods(&self) -> Result<Vec<String>, String> {
        let pods = self.json(&["get", "pods", "-l", "app=echo"])?;
        Ok(keelson_tests::netcluster::ready_items(&pods)
            .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_owned))
            .collect())
    }
}

/// Polls `check` every second until it says yes, fails, or `timeout` passes.
pub(crate) fn wait_for(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<bool, String>,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        if check()? {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "timed out after {} s waiting for {what}",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// What the agent may leave on a host, as the VM shows it: the links, the routes, the eBPF
/// programs by name, the number of eBPF links, the cgroup root's attachments, the containers
/// and whether `/sys/fs/bpf/keelson` exists.
pub(crate) const LEFTOVERS: &str = "echo '# links'; ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort; \
echo '# routes'; ip route show table all | grep -v '^local\\|^broadcast\\|^multicast\\|^ff00\\|^fe80' | sort; \
echo '# programs'; bpftool prog show | sed -n 's/^[0-9]*: [a-z_]*  *name \\([^ ]*\\).*/\\1/p' | sort; \
echo '# bpf links'; bpftool link show | grep -c '^[0-9]' || true; \
echo '# cgroup root'; bpftool cgroup show /sys/fs/cgroup | awk 'NR>1 {print $2, $3, $4}' | sort; \
echo '# containers'; docker ps -aq | wc -l; \
echo '# pins'; ls -d /sys/fs/bpf/keelson 2>/dev/null || echo none";

/// A request loop on the VM against `url`, bounded to 300 requests and stopped by
/// `/tmp/keelson-stop`; prints `ok N failed M`.
pub(crate) fn vm_loop(url: &str) -> String {
    format!(
        "i=0; ok=0; failed=0; while [ $i -lt 300 ] && [ ! -e /tmp/keelson-stop ]; do \
         if curl -sf -m 3 -o /dev/null {url}; then ok=$((ok+1)); else failed=$((failed+1)); fi; \
         i=$((i+1)); sleep 0.1; done; echo ok $ok failed $failed"
    )
}

/// Asks `url`'s service `times` times from the VM; every answer must name an echo pod.
pub(crate) fn ask_from_vm(vm: &Vm, url: &str, times: usize, pods: &[String]) -> Result<(), String> {
    let out = vm.ssh(&format!(
        "for i in $(seq {times}); do curl -sS -m 5 {url} || echo FAILED; done"
    ))?;
    check_answers(&out, times, pods)
}

pub(crate) fn check_answers(out: &str, times: usize, pods: &[String]) -> Result<(), String> {
    let answers: Vec<&str> = out.lines().map(str::trim).collect();
    if answers.len() == times && answers.iter().all(|a| pods.iter().any(|p| p == a)) {
        Ok(())
    } else {
        Err(format!(
            "expected {times} answers naming one of {pods:?}, got:\n{out}"
        ))
    }
}

pub(crate) fn node_port_from_host(
    address: SocketAddr,
    times: usize,
    pods: &[String],
) -> Result<(), String> {
    let mut out = String::new();
    for _ in 0..times {
        match http_get(address, "/", Duration::from_secs(3), Duration::from_secs(5)) {
            Ok(body) => out.push_str(&body),
            Err(e) => out.push_str(&format!("FAILED {e}\n")),
        }
    }
    check_answers(&out, times, pods)
}

pub(crate) fn node_port_manifest() -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: echo-np\nspec:\n  type: NodePort\n  \
         selector: {{app: echo}}\n  ports:\n  - port: 80\n    targetPort: 80\n    nodePort: {NODE_PORT}\n"
    )
}

pub(crate) fn client_pod_manifest(cluster_ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: client\nspec:\n  restartPolicy: Never\n  \
         containers:\n  - name: client\n    image: keelson/busybox:1\n    command: [sh, -c, \
         'for i in 1 2 3 4 5; do timeout 5 wget -qO- http://{cluster_ip}/ || echo FAILED; done']\n"
    )
}

/// `keelson-control-plane token create`: the join line it prints.
pub(crate) fn token_create(
    control_plane: &Path,
    cp_args: &dyn Fn(&mut Command),
    api: SocketAddr,
) -> Result<String, String> {
    let mut cmd = Command::new(control_plane);
    cp_args(&mut cmd);
    let out = cmd
        .args(["token", "create", "--ttl", "1h"])
        .output()
        .map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || !line.starts_with("keelson-node-agent join ") {
        return Err(format!(
            "`keelson-control-plane token create` ({}) printed no join line: {}",
            out.status,
            text(&out).trim()
        ));
    }
    let server = format!("--server https://{api} ");
    if !line.contains(&server) {
        return Err(format!("the join line does not carry {server}: {line}"));
    }
    Ok(line)
}

/// The VM has no default route (the bridge leads nowhere): name the node's address and uplink
/// in the config `join` wrote, which the agent otherwise takes from the default route.
pub(crate) fn name_address_and_uplink(vm: &Vm) -> Result<(), String> {
    vm.ssh(&format!(
        "f=/etc/keelson/node-agent.yaml; test -f /etc/keelson/node.kubeconfig && test -f $f && \
         {{ grep -q '^node-address:' $f || echo 'node-address: [{}]' >> $f; }} && \
         {{ grep -q '^uplink:' $f || echo 'uplink: [eth0]' >> $f; }}",
        vm.address
    ))
    .map(drop)
    .map_err(|e| format!("join wrote no node.kubeconfig and node-agent.yaml: {e}"))
}

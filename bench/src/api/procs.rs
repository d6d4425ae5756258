//! The processes the API benchmark measures: the real `keelson-control-plane` binary (on SQLite
//! or on etcd) and a single-member etcd on loopback, each in a throw-away directory and killed on
//! drop; and what `/proc` says about them (RSS, CPU time).

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// Creates `$TMPDIR/keelson-bench-<what>-<pid>-<n>`.
    pub fn new(what: &str) -> anyhow::Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "keelson-bench-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Self(path))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free TCP port on loopback.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .context("no free loopback port")?
        .port())
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A single-member etcd on loopback (as tests/src/etcd.rs starts it).
#[derive(Debug)]
pub struct Etcd {
    child: Child,
    client_url: String,
    dir: ScratchDir,
}

impl Etcd {
    /// Starts `etcd` (Debian's etcd-server) and waits until `/health` says so.
    pub fn start() -> anyhow::Result<Self> {
        let dir = ScratchDir::new("etcd")?;
        let (client_port, peer_port) = (free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.path().join("etcd.log"))?;
        let child = Command::new("etcd")
            .arg("--name=keelson-bench")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=keelson-bench={peer_url}"))
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start etcd: run `cargo xtask setup` (package etcd-server)")?;
        let mut etcd = Self {
            child,
            client_url,
            dir,
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], client_port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = etcd.child.try_wait()? {
                bail!(
                    "etcd exited with {status}:\n{}",
                    tail(&etcd.dir.path().join("etcd.log"), 20)
                );
            }
            if http_get(addr, "/health").is_some_and(|body| body.contains("\"health\":\"true\"")) {
                return Ok(etcd);
            }
            if Instant::now() > deadline {
                let _ = etcd.child.kill();
                bail!(
                    "etcd at {} not healthy within 20 s:\n{}",
                    etcd.client_url,
                    tail(&etcd.dir.path().join("etcd.log"), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The client URL.
    pub fn endpoint(&self) -> &str {
        &self.client_url
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of a plain-HTTP GET on loopback, or `None` (etcd's client URL is plain HTTP here).
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer
        .starts_with("HTTP/1.1 200")
        .then(|| answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()))
        .flatten()
}

/// A running `keelson-control-plane` in a scratch data directory; killed on drop.
pub struct ControlPlane {
    child: Child,
    dir: ScratchDir,
    /// A kube-rs client built from the admin kubeconfig the plane wrote.
    pub client: kube::Client,
}

impl ControlPlane {
    /// Starts `binary --data-dir D --listen 127.0.0.1:<free> <extra>` and waits until the API
    /// answers through the admin kubeconfig (so this works over HTTP and HTTPS alike).
    pub async fn start(binary: &Path, extra: &[String]) -> anyhow::Result<Self> {
        let dir = ScratchDir::new("plane")?;
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log = std::fs::File::create(dir.path().join("control-plane.log"))?;
        let child = Command::new(binary)
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--listen")
            .arg(listen.to_string())
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut child = Some(child);
        let kubeconfig = dir.path().join("admin.kubeconfig");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last_error = String::from("no admin.kubeconfig yet");
        loop {
            let running = child.as_mut().expect("child");
            if let Some(status) = running.try_wait()? {
                bail!(
                    "keelson-control-plane exited with {status}:\n{}",
                    tail(&dir.path().join("control-plane.log"), 20)
                );
            }
            if kubeconfig.is_file() {
                match client_from(&kubeconfig).await {
                    Ok(client) => match client.apiserver_version().await {
                        Ok(_) => {
                            return Ok(Self {
                                child: child.take().expect("child"),
                                dir,
                                client,
                            });
                        }
                        Err(e) => last_error = e.to_string(),
                    },
                    Err(e) => last_error = format!("{e:#}"),
                }
            }
            if Instant::now() > deadline {
                let mut running = child.take().expect("child");
                let _ = running.kill();
                let _ = running.wait();
                bail!(
                    "keelson-control-plane did not answer within 30 s ({last_error}):\n{}",
                    tail(&dir.path().join("control-plane.log"), 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh client (its own connection pool) from the admin kubeconfig.
    pub async fn new_client(&self) -> anyhow::Result<kube::Client> {
        client_from(&self.dir.path().join("admin.kubeconfig")).await
    }
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("pid", &self.child.id())
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn client_from(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("cannot read {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .context("no client config from the admin kubeconfig")?;
    kube::Client::try_from(config).context("cannot build a kube client")
}

/// Memory of a process from `/proc/<pid>/status`, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Resident set size now (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size (`VmHWM`).
    pub peak_kib: u64,
}

impl Memory {
    /// Parses `VmRSS` and `VmHWM` out of `/proc/<pid>/status`.
    pub fn parse(status: &str) -> Option<Self> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        };
        Some(Self {
            rss_kib: field("VmRSS:")?,
            peak_kib: field("VmHWM:")?,
        })
    }

    /// Reads `/proc/<pid>/status`.
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let path = format!("/proc/{pid}/status");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        Self::parse(&text).with_context(|| format!("no VmRSS/VmHWM in {path}"))
    }
}

/// User + system CPU time of a process (`/proc/<pid>/stat`, or `self`), in clock ticks.
pub fn cpu_ticks(pid: Option<u32>) -> u64 {
    let path = pid.map_or_else(
        || "/proc/self/stat".to_owned(),
        |p| format!("/proc/{p}/stat"),
    );
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| parse_cpu_ticks(&s))
        .unwrap_or(0)
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line; the command name in
/// parentheses may contain spaces, so fields are counted after the last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 -> index 11, stime index 12.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Clock ticks per second (`getconf CLK_TCK`); 100 on Linux.
pub const TICKS_PER_SECOND: f64 = 100.0;

/// Busy and total ticks of the whole machine from the aggregate `cpu` line of `/proc/stat`
/// (busy = everything but idle and iowait).
pub fn parse_machine_ticks(proc_stat: &str) -> Option<(u64, u64)> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some((total - idle, total))
}

fn machine_ticks() -> (u64, u64) {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| parse_machine_ticks(&s))
        .unwrap_or((0, 0))
}

/// CPU used during one phase, in percent of one core (server, this benchmark) and of the
/// whole machine (busy share over all CPUs, other work on the machine included).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CpuShare {
    /// The control plane (plus etcd when used), percent of one core.
    pub server: f64,
    /// This benchmark process (the clients), percent of one core.
    pub client: f64,
    /// The whole machine, percent busy over all CPUs.
    pub machine: f64,
}

/// Starts measuring CPU at the beginning of a phase.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    pids: Vec<u32>,
    server: u64,
    client: u64,
    machine: (u64, u64),
    started: Instant,
}

impl CpuMeter {
    /// Takes the starting counters of `server_pids` and of this process.
    pub fn start(server_pids: &[u32]) -> Self {
        Self {
            pids: server_pids.to_vec(),
            server: server_pids.iter().map(|&p| cpu_ticks(Some(p))).sum(),
            client: cpu_ticks(None),
            machine: machine_ticks(),
            started: Instant::now(),
        }
    }

    /// The shares since [`CpuMeter::start`].
    pub fn finish(&self) -> CpuShare {
        let wall = self.started.elapsed().as_secs_f64().max(1e-3);
        let server: u64 = self.pids.iter().map(|&p| cpu_ticks(Some(p))).sum();
        let client = cpu_ticks(None);
        let (busy, total) = machine_ticks();
        let percent = |ticks: u64| 100.0 * ticks as f64 / TICKS_PER_SECOND / wall;
        CpuShare {
            server: percent(server.saturating_sub(self.server)),
            client: percent(client.saturating_sub(self.client)),
            machine: match total.saturating_sub(self.machine.1) {
                0 => 0.0,
                t => 100.0 * busy.saturating_sub(self.machine.0) as f64 / t as f64,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_from_proc_status() {
        let status = "Name:\tkeelson\nVmHWM:\t   51200 kB\nVmRSS:\t   40960 kB\nThreads: 3\n";
        assert_eq!(
            Memory::parse(status),
            Some(Memory {
                rss_kib: 40960,
                peak_kib: 51200
            })
        );
        assert_eq!(Memory::parse("Name: x\n"), None);
    }

    #[test]
    fn machine_busy_leaves_out_idle_and_iowait() {
        let stat = "cpu  100 0 50 800 10 5 5 30 0 0\ncpu0 1 1 1 1 1 1 1 1 0 0\n";
        assert_eq!(parse_machine_ticks(stat), Some((190, 1000)));
        assert_eq!(parse_machine_ticks("cpu0 1 2\n"), None);
    }

    #[test]
    fn cpu_ticks_after_the_command_name() {
        let stat = "1234 (keelson control) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }
}

//! The real control plane for end-to-end tests: the `keelson-control-plane` binary on a loopback
//! port with a temporary data directory, and the machine image's kubectl against it.

use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

const KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";

/// `target/<profile>/keelson-control-plane`, next to this test's `deps/` directory.
pub fn control_plane_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let found = exe
        .ancestors()
        .skip(1)
        .take(3)
        .map(|dir| dir.join("keelson-control-plane"))
        .find(|candidate| candidate.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "keelson-control-plane is not built next to {}: run `cargo build -p \
             keelson-control-plane` (`cargo nextest run --workspace` builds it too)",
            exe.display()
        )
    })
}

pub fn kubectl_binary(minor: u32) -> PathBuf {
    let path = Path::new(KUBECTL_DIR).join(format!("kubectl.1.{minor}"));
    assert!(
        path.is_file(),
        "{} is missing: this test needs the machine image's kubectl 1.{minor} (google-cloud-sdk)",
        path.display()
    );
    path
}

/// A running control plane in a temporary data directory; killed on drop.
#[derive(Debug)]
pub struct ControlPlane {
    child: Child,
    /// The admin kubeconfig the control plane wrote.
    pub kubeconfig: PathBuf,
    listen: SocketAddr,
    extra_args: Vec<String>,
    dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts the binary (embedded SQLite store) on a free loopback port and waits for /readyz.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Like [`ControlPlane::start`] with extra command-line arguments (e.g. `--store etcd`).
    pub fn start_with(extra_args: &[&str]) -> Self {
        Self::start_in(tempfile::tempdir().expect("temp data dir"), extra_args)
    }

    /// Like [`ControlPlane::start_with`], with a copy of `other`'s CA and client certificates
    /// (its `pki/`) in the new data directory: both serve certificates of one cluster CA and
    /// accept one admin kubeconfig, as control planes of one HA cluster do.
    pub fn start_sharing_pki(other: &ControlPlane, extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp data dir");
        let (from, to) = (other.data_dir().join("pki"), dir.path().join("pki"));
        std::fs::create_dir_all(&to).expect("create pki/");
        for entry in std::fs::read_dir(&from)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", from.display()))
        {
            let entry = entry.expect("a pki/ entry");
            // The other plane may be writing a client certificate right now (`<name>.tmp`,
            // renamed when complete): a file that is gone by the time it is copied is one of
            // those, and certificates of components are the plane's own anyway.
            match std::fs::copy(entry.path(), to.join(entry.file_name())) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => panic!("cannot copy {}: {e}", entry.path().display()),
            }
        }
        Self::start_in(dir, extra_args)
    }

    fn start_in(dir: tempfile::TempDir, extra_args: &[&str]) -> Self {
        let free_port = || keelson_testbed::free_loopback_port().expect("a free loopback port");
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let extra_args: Vec<String> = extra_args.iter().map(ToString::to_string).collect();
        let child = spawn(dir.path(), listen, &extra_args);
        let mut plane = Self {
            child,
            kubeconfig: dir.path().join("admin.kubeconfig"),
            listen,
            extra_args,
            dir,
        };
        // A port found free can be taken (say, as a connection's local port) before the control
        // plane binds it: it then exits, and a new port is tried (at most 5 ports in all).
        for _ in 0..4 {
            if plane.ready_or_exited() {
                return plane;
            }
            let lost_the_port = plane.child.try_wait().ok().flatten().is_some()
                && plane.log().contains("Address already in use");
            if !lost_the_port {
                break;
            }
            plane.listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
            plane.child = spawn(plane.dir.path(), plane.listen, &plane.extra_args);
        }
        plane.wait_ready();
        plane
    }

    /// Waits until the control plane serves (true) or its process exits (false), at most 20 s.
    fn ready_or_exited(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            if self.kubeconfig.is_file() && healthy(self.listen) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// [`ControlPlane::ready_or_exited`], or a panic with the log.
    fn wait_ready(&mut self) {
        assert!(
            self.ready_or_exited(),
            "keelson-control-plane did not become ready on {} within 20 s; log:\n{}",
            self.listen,
            self.log()
        );
    }

    /// Kills the process with SIGKILL (no graceful shutdown) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the binary again on the same data directory and port (after [`ControlPlane::kill`])
    /// and waits for /readyz. The log file is appended to.
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(self.dir.path(), self.listen, &self.extra_args);
        self.wait_ready();
    }

    /// The address the API is served on.
    pub fn listen(&self) -> SocketAddr {
        self.listen
    }

    /// The API's URL, `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.listen)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A kube-rs client with the admin kubeconfig.
    pub async fn client(&self) -> kube::Client {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("read admin.kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("a client config from admin.kubeconfig");
        kube::Client::try_from(config).expect("a kube client")
    }

    /// The control plane's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("control-plane.log")).unwrap_or_default()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

fn spawn(dir: &Path, listen: SocketAddr, extra_args: &[String]) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("control-plane.log"))
        .expect("log file");
    Command::new(control_plane_binary())
        .arg("--data-dir")
        .arg(dir)
        .arg("--listen")
        .arg(listen.to_string())
        .args(extra_args)
        .env("RUST_LOG", "info,keelson_apiserver=debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start keelson-control-plane")
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // The log goes with the temporary directory: a failed test shows its end.
        if std::thread::panicking() {
            eprintln!(
                "--- control plane log (last 60 lines, backtrace frames left out) ---\n{}",
                log_for_failure(&self.log(), 60)
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A panic in the server kills only the connection it served, which a client sees as a
        // dropped connection at best: any panic fails the test that caused it.
        let log = self.log();
        if !std::thread::panicking() && log.contains("panicked at") {
            panic!(
                "the control plane panicked during this test:\n{}",
                log_for_failure(&log, 60)
            );
        }
    }
}

/// The last `lines` lines of a log without backtrace frames (`  12: symbol` and `at file:line`
/// lines), and each panic's first lines wherever it is: a panic's backtrace would otherwise fill
/// the tail and hide its message.
fn log_for_failure(log: &str, lines: usize) -> String {
    let frame = |line: &str| {
        let line = line.trim_start();
        line.starts_with("at ")
            || line
                .split_once(": ")
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    let all: Vec<&str> = log.lines().collect();
    let mut text = String::new();
    for (i, line) in all.iter().enumerate() {
        if line.contains("panicked at") {
            text.push_str("PANIC: ");
            text.push_str(&all[i..all.len().min(i + 3)].join("\n"));
            text.push('\n');
        }
    }
    let kept: Vec<&str> = all.iter().copied().filter(|l| !frame(l)).collect();
    text.push_str(&kept[kept.len().saturating_sub(lines)..].join("\n"));
    text
}

/// Whether the control plane accepts connections. It binds its listener only after the store
/// is open and the system namespaces exist, so a connection that is accepted is served.
fn healthy(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok()
}

/// kubectl of one version against one control plane.
#[derive(Debug)]
pub struct Kubectl<'a> {
    binary: PathBuf,
    plane: &'a ControlPlane,
}

impl<'a> Kubectl<'a> {
    /// kubectl 1.`minor` from the machine image against `plane`.
    pub fn new(minor: u32, plane: &'a ControlPlane) -> Self {
        Self {
            binary: kubectl_binary(minor),
            plane,
        }
    }
}

impl Kubectl<'_> {
    /// The kubectl command with the kubeconfig set.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .env("KUBECONFIG", &self.plane.kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .arg("--request-timeout=30s")
            .args(args);
        command
    }

    /// Runs kubectl, panicking with its output (and the server log) unless it succeeds.
    pub fn run(&self, args: &[&str]) -> String {
        let output = self.command(args).output().expect("run kubectl");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success(),
            "`kubectl {}` failed ({}):\nstdout: {stdout}\nstderr: {}\nserver log:\n{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr),
            self.plane.log()
        );
        stdout
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn fail(&self, args: &[&str]) -> String {
        let output = self.command(args).output().expect("run kubectl");
        assert!(
            !output.status.success(),
            "`kubectl {}` should fail but printed {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }
}

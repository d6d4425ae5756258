//! The real control plane for end-to-end tests: the `keelson-control-plane` binary on a loopback
//! port with a temporary data directory, and the machine image's kubectl against it.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
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
    dir: tempfile::TempDir,
}

impl ControlPlane {
    /// Starts the binary on a free loopback port and waits for /readyz.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp data dir");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let listen = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::fs::File::create(dir.path().join("control-plane.log")).expect("log file");
        let child = Command::new(control_plane_binary())
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--listen")
            .arg(listen.to_string())
            .env("RUST_LOG", "info,keelson_apiserver=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start keelson-control-plane");
        let plane = Self {
            child,
            kubeconfig: dir.path().join("admin.kubeconfig"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(plane.kubeconfig.is_file() && healthy(listen)) {
            assert!(
                Instant::now() < deadline,
                "keelson-control-plane did not become ready on {listen} within 20 s; log:\n{}",
                plane.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        plane
    }

    /// The control plane's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("control-plane.log")).unwrap_or_default()
    }
}

impl ControlPlane {
    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn healthy(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok")
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

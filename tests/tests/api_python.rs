//! End to end: the Python `kubernetes` client (37.x, from the venv `cargo xtask setup` creates)
//! against the real `keelson-control-plane` binary, through the admin kubeconfig it writes:
//! create, list with label selectors, watch, strategic-merge and merge patches, 409 Conflict on a
//! stale replace, 409 AlreadyExists, delete and 404 (tests/python/client_e2e.py).

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use keelson_tests::cluster::ControlPlane;

/// Where `cargo xtask setup` puts the venv (xtask/src/setup.rs, `PYTHON_VENV`).
const VENV: &str = "/opt/keelson/venv";
/// The script may take this long (it bounds its own watch to 30 s).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

fn venv_python() -> PathBuf {
    let python = Path::new(VENV).join("bin/python");
    let has_client = python.is_file()
        && Command::new(&python)
            .args(["-c", "import kubernetes"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        has_client,
        "{} with the Python kubernetes client is missing: run `cargo xtask setup`",
        python.display()
    );
    python
}

#[test]
fn python_client_create_list_watch_patch_conflict_delete() {
    let python = venv_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/client_e2e.py");
    let plane = ControlPlane::start();

    let mut child = Command::new(&python)
        .arg(&script)
        .arg(&plane.kubeconfig)
        .arg("py-e2e")
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let (mut stdout, mut stderr) = (
        child.stdout.take().expect("piped stdout"),
        child.stderr.take().expect("piped stderr"),
    );
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + SCRIPT_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the python client") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (stdout, stderr) = (
        out.join().expect("stdout reader"),
        err.join().expect("stderr reader"),
    );
    let report = format!(
        "stdout:\n{stdout}\nstderr:\n{stderr}\ncontrol-plane log (tail):\n{}",
        tail(&plane.log(), 40)
    );
    let status = status.unwrap_or_else(|| {
        panic!("the Python client did not finish within {SCRIPT_TIMEOUT:?}\n{report}")
    });
    assert!(
        status.success() && stdout.lines().last() == Some("ALL OK"),
        "the Python client e2e script failed ({status})\n{report}"
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

//! `cargo xtask up`: the main job, an all-in-one keelson node on this machine.
//!
//! Today it builds the release binaries, has the node agent load every eBPF program into this
//! kernel, and runs the control plane (the Kubernetes API on embedded SQLite under `.keelson/`)
//! in the foreground until Ctrl-C (its scheduler and controllers included). Starting this
//! machine's node agent, the demo Service and cluster DNS arrive with issue 7, and `up` says so
//! rather than pretending.

use std::{
    net::TcpStream,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::cmd::{self, command, repo_root};

const LISTEN: &str = "127.0.0.1:6443";

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;

    println!("==> up: building release binaries");
    cmd::run(command("cargo").args([
        "build",
        "--release",
        "--package",
        "keelson-node-agent",
        "--package",
        "keelson-control-plane",
    ]))?;
    let release = repo_root().join("target/release");

    println!("==> up: loading the eBPF datapath into this kernel (keelson-node-agent check)");
    let agent = release.join("keelson-node-agent");
    cmd::run(command(agent.to_str().unwrap_or("keelson-node-agent")).arg("check"))?;

    let data_dir = repo_root().join(".keelson");
    println!(
        "==> up: starting keelson-control-plane on https://{LISTEN} (state in {})",
        data_dir.display()
    );
    if TcpStream::connect(LISTEN).is_ok() {
        bail!("{LISTEN} is already in use: is another `cargo xtask up` running?");
    }
    let control_plane = release.join("keelson-control-plane");
    let mut child = command(control_plane.to_str().unwrap_or("keelson-control-plane"))
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--listen", LISTEN])
        .stdin(Stdio::null())
        .spawn()
        .context("cannot start keelson-control-plane")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if ready(&data_dir.join("admin.kubeconfig")) {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!("keelson-control-plane exited with {status} before it was ready");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("keelson-control-plane did not accept connections within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    println!(
        "\n==> up: the API is ready. In another shell:\n\
         \x20   export KUBECONFIG={}/admin.kubeconfig\n\
         \x20   kubectl get namespaces\n\
         \n\
         The scheduler and controllers run in the control plane. Not there yet (keelson says so\n\
         rather than pretend): `up` does not start keelson-node-agent for this machine yet, so\n\
         pods stay Pending, and the demo Deployment + Service through the eBPF datapath and\n\
         cluster DNS come with issue 7.\n\
         \n\
         Ctrl-C stops the control plane; its state stays in {} for the next `up`.",
        data_dir.display(),
        data_dir.display()
    );
    // Ctrl-C reaches the control plane too (same process group); it shuts down cleanly.
    let status = child.wait().context("waiting for keelson-control-plane")?;
    println!("==> up: keelson-control-plane stopped ({status})");
    Ok(())
}

/// `GET /readyz` answers 200.
/// The control plane binds its listener once the store is open and writes the kubeconfig right
/// after: an accepted connection with the kubeconfig in place means it serves.
fn ready(kubeconfig: &std::path::Path) -> bool {
    TcpStream::connect(LISTEN).is_ok() && kubeconfig.is_file()
}

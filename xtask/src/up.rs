//! `cargo xtask up`: the main job, an all-in-one keelson node on this machine.
//!
//! Today it builds the release binaries, has the node agent load every eBPF program into this
//! kernel, and runs the control plane (the Kubernetes API on embedded SQLite under `.keelson/`)
//! in the foreground until Ctrl-C. The scheduler and controllers, pods on Docker and the demo
//! Service arrive with the issues named below, and `up` says so rather than pretending.

use std::{
    io::{Read as _, Write as _},
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
        "==> up: starting keelson-control-plane on http://{LISTEN} (state in {})",
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
        if ready() {
            break;
        }
        if let Some(status) = child.try_wait()? {
            bail!("keelson-control-plane exited with {status} before it was ready");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("keelson-control-plane did not answer /readyz within 30 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    println!(
        "\n==> up: the API is ready. In another shell:\n\
         \x20   export KUBECONFIG={}/admin.kubeconfig\n\
         \x20   kubectl get namespaces\n\
         \n\
         Not there yet (keelson says so rather than pretend):\n\
         \x20   - TLS and client authentication for the API: issue 4 (the API is plain HTTP on loopback)\n\
         \x20   - scheduler and controllers (Deployments create no pods yet): issue 5\n\
         \x20   - pods on Docker with their own netns and IP: issue 6\n\
         \x20   - the demo Deployment + Service through the eBPF datapath: issue 7\n\
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
fn ready() -> bool {
    let Ok(mut stream) = TcpStream::connect(LISTEN) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET /readyz HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.") && response.contains(" 200 ")
}

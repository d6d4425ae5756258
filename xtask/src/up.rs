//! `cargo xtask up`: the main job, an all-in-one keelson node on this machine.
//!
//! What exists today is the node agent's eBPF datapath: `up` builds the release binary and has it
//! load every program into this kernel. The control plane, the pod runtime and the demo Service
//! arrive with the issues named below, and `up` says so rather than pretending.

use crate::cmd::{self, command, repo_root};

pub fn run() -> anyhow::Result<()> {
    crate::setup::run()?;

    println!("==> up: building release binaries");
    cmd::run(command("cargo").args(["build", "--release", "--package", "keelson-node-agent"]))?;

    println!("==> up: loading the eBPF datapath into this kernel (keelson-node-agent check)");
    let agent = repo_root().join("target/release/keelson-node-agent");
    cmd::run(command(agent.to_str().unwrap_or("keelson-node-agent")).arg("check"))?;

    println!(
        "\n==> up: this is as far as keelson goes today. Not there yet:\n\
         \x20   - keelson-control-plane (Kubernetes API on SQLite/etcd): issue 4\n\
         \x20   - scheduler and controllers: issue 5\n\
         \x20   - pods on Docker with their own netns and IP: issue 6\n\
         \x20   - service load balancing in eBPF: issue 3\n\
         \x20   - the demo Deployment + Service and kubectl journey: issue 7\n\
         Nothing was left running or attached."
    );
    Ok(())
}

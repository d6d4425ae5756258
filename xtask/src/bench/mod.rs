//! `cargo xtask bench`: keelson's benchmarks.
//!
//! - `datapath`: builds `keelson-bench` in release mode and runs `keelson-bench datapath` (as
//!   root), which compares one ClusterIP Service served directly, by keelson's socket-LB and by
//!   kube-proxy's iptables and nftables layouts, and writes `results/bench-datapath.md` and
//!   `results/bench-datapath.png`. Arguments after `datapath` go to it (`--quick`, `--duration`,
//!   `--rounds`, `--scales`, …; `-- --help` lists them).
//! - `api`: builds `keelson-bench` and `keelson-control-plane` in release mode and runs
//!   `keelson-bench api`, which measures the control plane on SQLite and on a loopback etcd side
//!   by side and writes `results/bench-api.md` (`--quick`, `--stores`, …; `-- --help`).
//! - `scheduler`: the scheduler against the real control plane with 5000 and 500 Node objects
//!   and 10k pods (`--quick`: 500/100 nodes, 2000 pods); writes `results/bench-scheduler.md`.
//! - `pods`: as root, the real control plane and node agent (release) on Docker: startup latency
//!   of 50 pods with a local image (create -> Ready, p50/p99) and the agent's RSS; writes
//!   `results/bench-pods.md` (`--pods`, `--interval-ms`).

use std::{os::unix::process::CommandExt as _, path::PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use crate::cmd::{self, command, repo_root};

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    which: Which,
}

#[derive(Debug, Subcommand)]
enum Which {
    /// The service datapath, side by side with kube-proxy's iptables and nftables layouts.
    Datapath {
        /// Arguments for `keelson-bench datapath` (e.g. `--quick`, `--scales 1,1000`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The API server on SQLite and on etcd: creates/s, latency, lists, watch fan-out, RSS.
    Api {
        /// Arguments for `keelson-bench api` (e.g. `--quick`, `--stores sqlite`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Pod startup latency (create -> Ready) for 50 pods with a local image, and agent RSS.
    Pods {
        /// Arguments for the pods_bench example (e.g. `--pods 20`, `--interval-ms 500`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The scheduler against the real API server: 5000 and 500 Node objects, 10k pods.
    Scheduler {
        /// Arguments for the scheduler_bench example (e.g. `--quick`, `--nodes 1000`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    let (which, args, packages): (&str, _, &[&str]) = match &args.which {
        Which::Datapath { args } => ("datapath", args, &["keelson-bench"]),
        // The API benchmark starts the control plane binary it finds next to itself.
        Which::Api { args } => ("api", args, &["keelson-bench", "keelson-control-plane"]),
        Which::Scheduler { args } => return scheduler(args),
        Which::Pods { args } => return pods(args),
    };
    if which == "datapath" {
        cmd::require_root("cargo xtask bench datapath")?;
    }
    println!("==> bench: building {} (release)", packages.join(", "));
    let mut build = command("cargo");
    build.args(["build", "--release"]);
    for package in packages {
        build.args(["--package", package]);
    }
    cmd::run(&mut build)?;
    let binary = target_dir().join("release/keelson-bench");
    let mut bench = command(&binary.display().to_string());
    bench.arg(which);
    if !args.iter().any(|a| a.starts_with("--output-dir")) {
        bench.arg("--output-dir").arg(repo_root().join("results"));
    }
    bench.args(args);
    println!("$ {}", cmd::display(&bench));
    // Replace this process: Ctrl-C then reaches the benchmark alone, which cleans up.
    let error = bench.exec();
    Err(error).with_context(|| format!("cannot start {}", binary.display()))
}

/// `bench scheduler`: builds the control plane (release) and runs the scheduler_bench example
/// of keelson-scheduler, which writes results/bench-scheduler.md. No root needed.
fn scheduler(args: &[String]) -> anyhow::Result<()> {
    println!("==> bench: building keelson-control-plane (release)");
    cmd::run(command("cargo").args(["build", "--release", "--package", "keelson-control-plane"]))?;
    let mut bench = command("cargo");
    bench.args([
        "run",
        "--release",
        "--package",
        "keelson-scheduler",
        "--example",
    ]);
    bench.args(["scheduler_bench", "--", "--control-plane"]);
    bench.arg(target_dir().join("release/keelson-control-plane"));
    bench.arg("--output-dir").arg(repo_root().join("results"));
    cmd::run(bench.args(args))
}

/// `bench pods`: builds the control plane and the node agent (release) and runs the pods_bench
/// example of keelson-tests next to them, which writes results/bench-pods.md. Needs root and the
/// test images (`cargo xtask setup` builds them).
fn pods(args: &[String]) -> anyhow::Result<()> {
    cmd::require_root("cargo xtask bench pods")?;
    crate::setup::run()?;
    println!("==> bench: building keelson-control-plane and keelson-node-agent (release)");
    cmd::run(command("cargo").args([
        "build",
        "--release",
        "--package",
        "keelson-control-plane",
        "--package",
        "keelson-node-agent",
    ]))?;
    let mut bench = command("cargo");
    bench.args([
        "run",
        "--release",
        "--package",
        "keelson-tests",
        "--example",
    ]);
    bench.args(["pods_bench", "--", "--output-dir"]);
    bench.arg(repo_root().join("results"));
    cmd::run(bench.args(args))
}

/// Where cargo puts build output: `$CARGO_TARGET_DIR` (relative to the repository root when
/// relative) or `target/`.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}

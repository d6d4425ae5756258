//! `cargo xtask bench`: keelson's benchmarks.
//!
//! - `datapath`: builds `keelson-bench` in release mode and runs `keelson-bench datapath` (as
//!   root), which compares one ClusterIP Service served directly, by keelson's socket-LB and by
//!   kube-proxy's iptables and nftables layouts, and writes `results/bench-datapath.md` and
//!   `results/bench-datapath.png`. Arguments after `datapath` go to it (`--quick`, `--duration`,
//!   `--rounds`, `--scales`, …; `-- --help` lists them).
//!   Then it runs `keelson-bench crossnode` (see below) with the arguments both understand
//!   (`--quick`, `--duration`, `--rounds`, `--output-dir`).
//! - `crossnode`: as root, builds `keelson-bench`, `keelson-node-agent` and
//!   `keelson-control-plane` (release) and runs `keelson-bench crossnode`: pod A on node 1 ->
//!   pod B on node 2 on four 2-node clusters side by side (kernel routes and eBPF, direct and
//!   tunnel routing); writes `results/bench-crossnode.md` (`--quick`, `--duration`, `--rounds`).
//! - `policy`: as root, builds `keelson-bench` (release) and runs `keelson-bench policy`:
//!   NetworkPolicy on an allowed pod-to-pod path, keelson's eBPF against kube-router's
//!   iptables + ipset layout, at 0, 100, 1000 and 10 000 policies over 1000 pods, plus the time
//!   one policy change takes; writes `results/bench-policy.md` (`--quick`, `--policies`,
//!   `--rounds`, …; `-- --help`).
//! - `api`: builds `keelson-bench` and `keelson-control-plane` in release mode and runs
//!   `keelson-bench api`, which measures the control plane on SQLite and on a loopback etcd side
//!   by side and writes `results/bench-api.md` (`--quick`, `--stores`, …; `-- --help`).
//! - `overload`: builds `keelson-bench` and `keelson-control-plane` (release) and runs
//!   `keelson-bench overload`: one user opens 5000 watches, sends 1000 lists at once, one
//!   100 MiB body and holds 10 000 idle TLS connections while the admin lists pods; writes
//!   `results/bench-overload.md` (`--quick`, `--watches`, ...; `-- --help`).
//! - `scheduler`: the scheduler against the real control plane with 5000 and 500 Node objects
//!   and 10k pods (`--quick`: 500/100 nodes, 2000 pods); writes `results/bench-scheduler.md`.
//! - `pods`: as root, the real control plane and node agent (release) on Docker: startup latency
//!   of 50 plain pods and 50 with an init container and a readiness probe (create -> Ready,
//!   p50/p99) and the agent's RSS; then, on a 3-node netns cluster, a DaemonSet's create and
//!   rolling update and 30-replica StatefulSet rollouts (`OrderedReady`, `Parallel`, with
//!   local-path claims); writes `results/bench-pods.md` (`--pods`, `--interval-ms`,
//!   `--statefulset-replicas`, `--no-rollouts`).
//! - `stream`: as root, the same single node: `kubectl port-forward` throughput and request rate
//!   as ratios to a direct connection to the pod, and `kubectl exec` round trips, with kubectl
//!   1.33 (WebSocket) and 1.27 (SPDY/3.1); writes `results/bench-stream.md`.

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
    /// Pod to pod across two nodes: kernel routes against keelson's eBPF, direct and tunnel.
    Crossnode {
        /// Arguments for `keelson-bench crossnode` (e.g. `--quick`, `--rounds 5`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// NetworkPolicy cost: keelson's eBPF against kube-router's iptables + ipset layout at up
    /// to 10 000 policies, and the time one policy change takes.
    Policy {
        /// Arguments for `keelson-bench policy` (e.g. `--quick`, `--policies 0,1000`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The API server under abuse by one user (watches, a burst of lists, a 100 MiB body,
    /// 10 000 idle TLS connections) while an admin lists pods.
    Overload {
        /// Arguments for `keelson-bench overload` (e.g. `--quick`, `--watches 2000`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The API server on SQLite and on etcd: creates/s, latency, lists, watch fan-out, RSS.
    Api {
        /// Arguments for `keelson-bench api` (e.g. `--quick`, `--stores sqlite`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Pod startup latency (create -> Ready) with a local image, plain and with an init
    /// container and a readiness probe, agent RSS, and DaemonSet/StatefulSet rollout times.
    Pods {
        /// Arguments for the pods_bench example (e.g. `--pods 20`, `--statefulset-replicas 10`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Port-forward throughput and request rate (ratios to a direct connection to the pod) and
    /// exec round trips, with kubectl 1.33 and 1.27 as clients.
    Stream {
        /// Arguments for the stream_bench example (e.g. `--mib 16`, `--execs 20`).
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
    /// The cross-node benchmark starts clusters of the agent and control plane it finds next
    /// to itself.
    const CROSSNODE: &[&str] = &[
        "keelson-bench",
        "keelson-node-agent",
        "keelson-control-plane",
    ];
    let (which, args, packages): (&str, _, &[&str]) = match &args.which {
        Which::Datapath { args } => ("datapath", args, CROSSNODE),
        Which::Crossnode { args } => ("crossnode", args, CROSSNODE),
        Which::Policy { args } => ("policy", args, &["keelson-bench"]),
        // The API benchmark starts the control plane binary it finds next to itself.
        Which::Api { args } => ("api", args, &["keelson-bench", "keelson-control-plane"]),
        Which::Overload { args } => (
            "overload",
            args,
            &["keelson-bench", "keelson-control-plane"],
        ),
        Which::Scheduler { args } => return scheduler(args),
        Which::Pods { args } => return example("pods", "pods_bench", args),
        Which::Stream { args } => return example("stream", "stream_bench", args),
    };
    if which == "policy" {
        cmd::require_root("cargo xtask bench policy")?;
    }
    let crossnode = matches!(which, "datapath" | "crossnode");
    if crossnode {
        cmd::require_root(&format!("cargo xtask bench {which}"))?;
        // The clusters' pods run the test images on Docker.
        let (_, images) = crate::images::ensure()?;
        println!("==> bench: test images {images}");
    }
    println!("==> bench: building {} (release)", packages.join(", "));
    let mut build = command("cargo");
    build.args(["build", "--release"]);
    for package in packages {
        build.args(["--package", package]);
    }
    cmd::run(&mut build)?;
    let binary = target_dir().join("release/keelson-bench");
    let bench = |which: &str, args: &[String]| {
        let mut bench = command(&binary.display().to_string());
        bench.arg(which);
        if !args.iter().any(|a| a.starts_with("--output-dir")) {
            bench.arg("--output-dir").arg(repo_root().join("results"));
        }
        bench.args(args);
        bench
    };
    if which == "datapath" {
        // Both in turn; each benchmark handles Ctrl-C itself (cleans up, then fails), which
        // stops the sequence.
        cmd::run(&mut bench("datapath", args))?;
        return cmd::run(&mut bench("crossnode", &crossnode_args(args)));
    }
    let mut bench = bench(which, args);
    println!("$ {}", cmd::display(&bench));
    // Replace this process: Ctrl-C then reaches the benchmark alone, which cleans up.
    let error = bench.exec();
    Err(error).with_context(|| format!("cannot start {}", binary.display()))
}

/// The arguments of `bench datapath` that `keelson-bench crossnode` takes too: `--quick`,
/// `--duration`, `--rounds`, `--output-dir` (as `--flag value` or `--flag=value`).
fn crossnode_args(args: &[String]) -> Vec<String> {
    const WITH_VALUE: [&str; 3] = ["--duration", "--rounds", "--output-dir"];
    let mut kept = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let flag = arg.split_once('=').map_or(arg.as_str(), |(f, _)| f);
        if arg == "--quick" {
            kept.push(arg.clone());
        } else if WITH_VALUE.contains(&flag) {
            kept.push(arg.clone());
            if !arg.contains('=')
                && let Some(value) = iter.next()
            {
                kept.push(value.clone());
            }
        } else if !arg.contains('=')
            && iter
                .as_slice()
                .first()
                .is_some_and(|v| !v.starts_with("--"))
        {
            // Another flag's value.
            iter.next();
        }
    }
    kept
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

/// `bench pods` and `bench stream`: builds the control plane and the node agent (release) and
/// runs the example `name` of keelson-tests next to them, which writes
/// results/bench-<which>.md. Needs root and the test images (`cargo xtask setup` builds them).
fn example(which: &str, name: &str, args: &[String]) -> anyhow::Result<()> {
    cmd::require_root(&format!("cargo xtask bench {which}"))?;
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
    bench.args([name, "--", "--output-dir"]);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossnode_gets_the_datapath_arguments_it_understands() {
        let args: Vec<String> = [
            "--quick",
            "--scales",
            "1,1000",
            "--duration",
            "3",
            "--datapaths=tc",
            "--rounds=5",
            "--pin",
            "--output-dir",
            "/tmp/r",
        ]
        .map(str::to_owned)
        .to_vec();
        assert_eq!(
            crossnode_args(&args),
            [
                "--quick",
                "--duration",
                "3",
                "--rounds=5",
                "--output-dir",
                "/tmp/r"
            ]
        );
        assert!(crossnode_args(&[]).is_empty());
    }
}

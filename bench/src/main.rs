//! `keelson-bench`: keelson's benchmarks. Needs root; `cargo xtask bench datapath` builds and
//! runs it.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keelson_bench::{api, crossnode, datapath, overload, policy};

#[derive(Debug, Parser)]
#[command(name = "keelson-bench", about = "keelson's benchmarks (needs root)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One ClusterIP Service served directly, by keelson's socket-LB and by kube-proxy's
    /// iptables and nftables layouts, at 1, 1000 and 10000 Services; writes
    /// results/bench-datapath.md and .png.
    Datapath(datapath::Options),
    /// The control plane's API on SQLite and on etcd: create throughput and latency, list
    /// latency at 10k objects, watch delivery with 100 and 1000 watchers, RSS; writes
    /// results/bench-api.md.
    Api(api::Options),
    /// Pod-to-pod across two nodes: the kernel's routing table against keelson's eBPF, in
    /// direct and tunnel routing, on four 2-node clusters side by side (iperf3 throughput,
    /// request/response latency and rate); writes results/bench-crossnode.md.
    Crossnode(crossnode::Options),
    /// NetworkPolicy on an allowed path: keelson's eBPF against kube-router's iptables + ipset
    /// layout at 0, 100, 1000 and 10000 policies over 1000 pods, and the time one policy
    /// change takes; writes results/bench-policy.md.
    Policy(policy::Options),
    /// The API server under abuse by one user (5000 watches, 1000 lists at once, a 100 MiB
    /// body, 10 000 idle TLS connections) while an admin lists pods: how each was refused,
    /// the admin's latency and the server's RSS; writes results/bench-overload.md.
    Overload(overload::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Datapath(options) => datapath::run(options),
        Command::Api(options) => api::run(options),
        Command::Crossnode(options) => crossnode::run(options),
        Command::Policy(options) => policy::run(options),
        Command::Overload(options) => overload::run(options),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\nkeelson-bench: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

//! `cargo xtask`: keelson's developer commands.
//!
//! - `setup`: install and start everything the project needs on this machine (idempotent).
//! - `up`: the main job, an all-in-one node on this machine; `down` stops a detached one.
//! - `cluster up|down|status`: a multi-node cluster on this machine, each node a network
//!   namespace.
//! - `test`: formatting, lints and every test tier, as CI runs them.
//! - `images`: the offline test images (setup builds them too).
//! - `bench`: benchmarks (`bench datapath`: keelson's service datapath against kube-proxy's,
//!   then `bench crossnode`: pod to pod across nodes, kernel routes against eBPF; `bench api`: the API server on SQLite and on etcd; `bench scheduler`; `bench pods`: pod
//!   startup latency and agent RSS; `bench stream`: port-forward and exec through kubectl).
//! - `vm-test`: the privileged datapath tests inside qemu VMs on Debian's 5.10, 6.1 and
//!   6.12 kernels (`vm-test --os`: the packages on a Debian 12 OS in a VM, joined with a token).
//! - `fuzz`: every fuzz target (cargo-fuzz, libFuzzer) for N seconds; a crash fails with its
//!   reproducer's path.
//! - `dist`: Debian packages of both binaries in `target/dist/`.

mod bench;
mod cluster;
mod cmd;
mod dist;
mod fuzz;
mod images;
mod setup;
mod test;
mod up;
mod vm_os;
mod vmtest;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "keelson's developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install and start what keelson needs (apt packages, nightly rust-src, bpf-linker,
    /// cargo-nextest, the Python client venv, dockerd). Idempotent; needs root.
    Setup,
    /// Build the offline test images (keelson/busybox:1, keelson/httpd:1) if missing.
    Images,
    /// Run setup, then fmt, clippy (workspace and eBPF crate) and every test tier.
    Test(test::TestArgs),
    /// Run setup, build the release binaries, start keelson on this machine (control plane and
    /// node agent), apply examples/hello.yaml and show its Service answering; Ctrl-C stops it.
    Up(up::UpArgs),
    /// Stop what `up --detach` started (pods, maps and routes are removed; the state stays).
    Down,
    /// A multi-node cluster on this machine, each node a network namespace with its own agent
    /// (`cluster up [--nodes N] [--routing direct|tunnel] [--control-planes 1|3]`, `cluster
    /// down`, `cluster status`).
    Cluster(cluster::ClusterArgs),
    /// Build and run a benchmark (`bench datapath|crossnode|api|scheduler|pods|stream`; datapath,
    /// crossnode and pods as root); results go to results/.
    Bench(bench::BenchArgs),
    /// Run the privileged datapath tests inside qemu VMs on Debian's 5.10, 6.1 and 6.12 kernels
    /// (`vm-test [--kernel 5.10|6.1|6.12]...`), booted with qemu (TCG); logs go to target/vm/.
    VmTest(vmtest::VmTestArgs),
    /// Build Debian packages of both binaries (binary, systemd unit, default config in
    /// /etc/keelson) into target/dist/.
    Dist,
    /// Run every fuzz target (fuzz/, cargo-fuzz on nightly) for `--seconds N` (default 60),
    /// one after the other, or only `--target NAME`; a crash fails and names the reproducer.
    Fuzz(fuzz::FuzzArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::Images => images::run(),
        Command::Test(args) => test::run(&args),
        Command::Up(args) => up::run(&args),
        Command::Down => up::down(),
        Command::Cluster(args) => cluster::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::VmTest(args) => vmtest::run(&args),
        Command::Dist => dist::run().map(drop),
        Command::Fuzz(args) => fuzz::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("\ncargo xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

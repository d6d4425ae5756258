//! `cargo xtask vm-test`: the privileged datapath tests inside qemu VMs, one per Debian kernel.
//!
//! For each kernel series (5.10, Debian 11 bullseye's, from a private apt configuration; 6.1,
//! bookworm's own; 6.12, bookworm's backport) this downloads the newest
//! `linux-image-*-amd64-unsigned` package with `apt-get download` into `target/vm/`,
//! extracts it, builds an initramfs (busybox, iproute2's `ip` with its libraries, the modules the
//! tests need, the node agent, the test client and the datapath test binaries, each at its host
//! path because the tests find the agent and the client by path) and boots it in qemu (TCG: no
//! KVM needed). The VM's `/init` runs `keelson-node-agent check` and every test binary with
//! `--test-threads 1`, printing `KEELSON-*` markers on the serial console, which this command
//! parses into a table per kernel. The serial output of each VM is kept in
//! `target/vm/<series>.log`. The first `check` runs before the netlink TC modules are loaded:
//! below 6.6 (no TCX) `run` must refuse that kernel, naming what is missing.
//!
//! Then, per kernel, the two-VM scenario: a node initramfs (busybox, iproute2, Docker's
//! programs, the agent; `/init` brings up `eth0`, dockerd and `keelson-node-agent run`) and the
//! `vm_cluster` test binary run on the host, where keelson-testbed starts a control plane and
//! two VM nodes on a bridge. The results end in a table per kernel, lines in nextest's format
//! and `target/vm/junit-<series>.xml`.

mod binaries;
mod boot;
mod cluster;
mod initramfs;
mod kernel;
mod report;

use std::{
    fs,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::cmd::repo_root;

use self::{
    binaries::{build, prebuilt},
    boot::boot,
    cluster::run_cluster_test,
    initramfs::{build_initramfs, node_contents, suite_contents},
    kernel::{KERNELS, fetch_kernel},
    report::{Report, summarize},
};

#[derive(Debug, Args)]
pub struct VmTestArgs {
    /// A kernel series to test on (5.10, 6.1 or 6.12); repeat for several. Default: all three.
    #[arg(long = "kernel", value_parser = ["5.10", "6.1", "6.12"])]
    kernels: Vec<String>,
    /// Minutes after which a VM that has not finished is killed (and counts as failed).
    #[arg(long, default_value_t = 20)]
    timeout_minutes: u64,
    /// qemu's accelerator: `tcg` (emulation, works everywhere) or `kvm` (where `/dev/kvm`
    /// works; nested KVM on these build machines does not boot).
    #[arg(long, default_value = "tcg", value_parser = ["tcg", "kvm"])]
    accel: String,
    /// Use this already-built node agent instead of building (keelson-test-client must be next
    /// to it); needs --test-binary.
    #[arg(long, requires = "test_binaries")]
    agent: Option<PathBuf>,
    /// An already-built datapath test binary to run instead of building them (repeatable).
    #[arg(long = "test-binary", requires = "agent")]
    test_binaries: Vec<PathBuf>,
    /// The already-built two-VM scenario test (`vm_cluster`); needs --agent.
    #[arg(long, requires = "agent")]
    cluster_test: Option<PathBuf>,
    /// Only the datapath suite in one VM per kernel, not the two-VM cluster.
    #[arg(long, conflicts_with = "no_suite")]
    no_cluster: bool,
    /// Only the two-VM cluster, not the datapath suite.
    #[arg(long)]
    no_suite: bool,
    /// Instead: the packages from `dist` on a Debian 12 OS (systemd, Docker from apt) in one
    /// VM, joined to a control plane on the host (see xtask/src/vm_os/).
    #[arg(long, conflicts_with_all = ["kernels", "agent", "no_cluster", "no_suite"])]
    os: bool,
}

impl VmTestArgs {
    /// One kernel series with the default timeout, building the binaries (what `cargo xtask
    /// test` runs).
    pub fn kernel(series: &str) -> Self {
        Self {
            kernels: vec![series.to_owned()],
            timeout_minutes: 20,
            accel: "tcg".to_owned(),
            agent: None,
            test_binaries: Vec::new(),
            cluster_test: None,
            no_cluster: false,
            no_suite: false,
            os: false,
        }
    }

    /// The datapath suite alone on one kernel series (no two-VM cluster).
    pub fn suite_only(series: &str) -> Self {
        Self {
            no_cluster: true,
            ..Self::kernel(series)
        }
    }

    /// The packages on a Debian 12 OS in a VM (`vm-test --os`).
    pub fn os() -> Self {
        Self {
            kernels: Vec::new(),
            os: true,
            ..Self::kernel("6.1")
        }
    }
}

const CLUSTER_TEST: &str = "vm_cluster";

pub fn run(args: &VmTestArgs) -> anyhow::Result<()> {
    if args.os {
        return crate::vm_os::run(&args.accel, Duration::from_secs(args.timeout_minutes * 60));
    }
    for program in [
        "qemu-system-x86_64",
        "busybox",
        "apt-get",
        "apt-cache",
        "dpkg-deb",
        "xz",
        "gzip",
        "ldd",
        "ip",
    ] {
        if !program_on_path(program) {
            bail!("`{program}` is not installed: run `cargo xtask setup`");
        }
    }
    let series: Vec<&str> = if args.kernels.is_empty() {
        KERNELS.iter().map(|k| k.name).collect()
    } else {
        args.kernels.iter().map(String::as_str).collect()
    };

    let binaries = match &args.agent {
        Some(agent) => prebuilt(
            agent,
            &args.test_binaries,
            args.cluster_test
                .as_deref()
                .context("--agent needs --cluster-test too")?,
        )?,
        None => build()?,
    };
    let vm_dir = target_dir().join("vm");
    fs::create_dir_all(&vm_dir).with_context(|| format!("cannot create {}", vm_dir.display()))?;

    let mut reports = Vec::new();
    for s in series {
        println!("==> vm-test: kernel {s}");
        let started = Instant::now();
        let kernel = fetch_kernel(&vm_dir, s)?;
        let log = vm_dir.join(format!("{s}.log"));
        let mut report = if args.no_suite {
            Report::new(s, &kernel, &log, false)
        } else {
            let initrd = vm_dir.join(format!("initrd-{s}.gz"));
            let t = Instant::now();
            build_initramfs(&kernel, &suite_contents(&binaries), &initrd)?;
            println!(
                "  initramfs {} ({} MB, {:.1} s)",
                initrd.display(),
                fs::metadata(&initrd)?.len() / 1_000_000,
                t.elapsed().as_secs_f64()
            );
            boot(
                s,
                &kernel,
                &initrd,
                &log,
                Duration::from_secs(args.timeout_minutes * 60),
                &args.accel,
            )?
        };
        report.total = started.elapsed();
        if !args.no_cluster {
            let node_initrd = vm_dir.join(format!("initrd-{s}-node.gz"));
            let t = Instant::now();
            build_initramfs(&kernel, &node_contents(&binaries)?, &node_initrd)?;
            println!(
                "  node initramfs {} ({} MB, {:.1} s)",
                node_initrd.display(),
                fs::metadata(&node_initrd)?.len() / 1_000_000,
                t.elapsed().as_secs_f64()
            );
            let result = run_cluster_test(
                s,
                &kernel,
                &node_initrd,
                &binaries.cluster_test,
                Duration::from_secs(args.timeout_minutes * 60),
                &args.accel,
            )?;
            report.results.push((CLUSTER_TEST.to_owned(), result));
        }
        reports.push(report);
    }
    summarize(&reports, &vm_dir)
}

fn program_on_path(program: &str) -> bool {
    find_on_path(program).is_some()
}

/// Where `program` is on `PATH`.
fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Cargo's target directory (`CARGO_TARGET_DIR` or the repository's `target/`).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map_or_else(|| repo_root().join("target"), |d| repo_root().join(d))
}

//! `cargo xtask test`: what CI runs. Setup, formatting, lints on the workspace and on the eBPF
//! crate, then every test tier in one nextest run (unit, store contract, privileged datapath,
//! end to end), then the privileged datapath tests again inside qemu VMs on Debian's 6.1 kernel
//! (`cargo xtask vm-test --kernel 6.1`, with the two-VM cluster) and on Debian 11's 5.10 (the
//! suite alone), then the packages on a Debian 12 OS in a VM (`cargo xtask vm-test --os`).

use clap::Args;

use crate::cmd::{self, command};

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Extra arguments for `cargo nextest run` (e.g. a test name filter).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    nextest_args: Vec<String>,
}

pub fn run(args: &TestArgs) -> anyhow::Result<()> {
    crate::setup::run()?;
    // A one-shot build gains nothing from incremental state, which costs gigabytes of disk
    // (unless the caller asked for it).
    let command = |program: &str| {
        let mut cmd = command(program);
        if std::env::var_os("CARGO_INCREMENTAL").is_none() {
            cmd.env("CARGO_INCREMENTAL", "0");
        }
        cmd
    };

    println!("==> test: formatting");
    cmd::run(command("cargo").args(["fmt", "--all", "--check"]))?;

    println!("==> test: clippy on the workspace");
    cmd::run(command("cargo").args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;

    println!("==> test: clippy on the eBPF programs (bpfel-unknown-none, nightly)");
    cmd::run(command("rustup").args([
        "run",
        "nightly",
        "cargo",
        "clippy",
        "--package",
        "keelson-ebpf",
        "--package",
        "keelson-ebpf-selftest",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--release",
        "--target-dir",
        "target/bpf-clippy",
        "--",
        "-D",
        "warnings",
    ]))?;

    println!("==> test: doc tests");
    cmd::run(command("cargo").args(["test", "--workspace", "--doc"]))?;

    // Tests run the workspace's binaries (keelson-node-agent, keelson-control-plane), which
    // nextest only builds for their own package's tests.
    println!("==> test: building the workspace's binaries");
    cmd::run(command("cargo").args(["build", "--workspace", "--bins"]))?;

    println!(
        "==> test: unit, store contract, privileged datapath and end-to-end tests (cargo nextest)"
    );
    cmd::run(
        command("cargo")
            .args(["nextest", "run", "--workspace", "--no-fail-fast"])
            .args(&args.nextest_args),
    )?;

    // A test filter asks for a subset: the VM suite runs only with the whole set.
    if args.nextest_args.is_empty() {
        println!(
            "==> test: the datapath tests on Debian's 6.1 kernel in a VM (cargo xtask vm-test)"
        );
        crate::vmtest::run(&crate::vmtest::VmTestArgs::kernel("6.1"))?;
        println!(
            "==> test: the datapath tests on Debian 11's 5.10 kernel in a VM (the oldest kernel \
             the README promises; RLIMIT_MEMLOCK and the SNAT source fallback)"
        );
        crate::vmtest::run(&crate::vmtest::VmTestArgs::suite_only("5.10"))?;
        println!(
            "==> test: the packages on a Debian 12 OS in a VM, joined with a token \
             (cargo xtask vm-test --os)"
        );
        crate::vmtest::run(&crate::vmtest::VmTestArgs::os())?;
    }
    Ok(())
}

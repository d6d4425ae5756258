//! The two-VM scenario, run on the host.

use std::{
    fs,
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{
    CLUSTER_TEST,
    boot::{LinesUntil, forward_lines},
    kernel::Kernel,
    report::BinaryResult,
};
use crate::cmd;

/// Runs the two-VM scenario (`vm_cluster`, on the host: it starts the control plane and the
/// VMs through keelson-testbed) with this kernel and node initramfs, one test at a time.
pub(super) fn run_cluster_test(
    series: &str,
    kernel: &Kernel,
    node_initrd: &Path,
    test: &Path,
    timeout: Duration,
    accel: &str,
) -> anyhow::Result<BinaryResult> {
    println!("==> vm-test: two VMs on kernel {series} ({CLUSTER_TEST}, on the host)");
    let state = node_initrd.with_file_name(format!("cluster-{series}"));
    // A fresh state directory per run, so the logs left are this run's (after removing what a
    // killed earlier run may have left running).
    for routing in ["direct", "tunnel"] {
        keelson_testbed::down_from_state(&state.join(routing))
            .with_context(|| format!("removing a previous run's {routing} cluster"))?;
    }
    let _ = fs::remove_dir_all(&state);
    let mut cmd = Command::new(test);
    cmd.args(["--test-threads", "1"])
        .env("KEELSON_VM_KERNEL", &kernel.vmlinuz)
        .env("KEELSON_VM_INITRD", node_initrd)
        .env("KEELSON_VM_STATE_DIR", &state)
        .env("KEELSON_VM_ACCEL", accel)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    println!("$ {}", cmd::display(&cmd));
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", test.display()))?;
    let (tx, rx) = mpsc::channel::<String>();
    let readers = [
        forward_lines(child.stdout.take().context("stdout")?, tx.clone()),
        forward_lines(child.stderr.take().context("stderr")?, tx),
    ];
    let mut result = BinaryResult::default();
    let mut lines = LinesUntil {
        rx,
        deadline: started + timeout,
        timed_out: false,
    };
    for line in lines.by_ref() {
        let at = format!(
            "[{series} two-VM {:>5.0}s]",
            started.elapsed().as_secs_f64()
        );
        match result.feed(&line) {
            Some(progress) => println!("{at} {progress}"),
            // The test's own progress lines (stderr), and failures.
            None if line.starts_with("vm_cluster:") || line.starts_with("thread '") => {
                println!("{at} {line}");
            }
            None => {}
        }
    }
    let timed_out = lines.timed_out;
    if timed_out {
        println!(
            "[{series} two-VM] no end after {} s: killing it",
            timeout.as_secs()
        );
        let _ = child.kill();
    }
    let status = child.wait()?;
    for reader in readers {
        let _ = reader.join();
    }
    // A test that panics removes its cluster as it unwinds; a killed one leaves its state
    // file, which names what to remove.
    for routing in ["direct", "tunnel"] {
        if let Err(error) = keelson_testbed::down_from_state(&state.join(routing)) {
            println!("[{series} two-VM] removing the {routing} cluster: {error:#}");
        }
    }
    result.seconds = started.elapsed().as_secs_f64();
    result.rc = if timed_out {
        String::new()
    } else {
        status
            .code()
            .map_or_else(|| status.to_string(), |c| c.to_string())
    };
    println!(
        "[{series} two-VM] {} passed, {} failed ({:.0} s)",
        result.passed, result.failed, result.seconds
    );
    Ok(result)
}

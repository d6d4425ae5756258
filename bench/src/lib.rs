//! keelson's benchmarks.
//!
//! `keelson-bench api` (run it with `cargo xtask bench api`) measures the real control plane on
//! SQLite and on etcd side by side: creates, lists, watch fan-out and memory. See [`api`].
//!
//! `keelson-bench datapath` (run it with `cargo xtask bench datapath`) measures one ClusterIP
//! Service served by keelson's eBPF datapath and by kube-proxy's iptables and nftables layouts,
//! side by side, against clients that connect to the pods directly. See [`datapath`].
//!
//! `keelson-bench crossnode` (run it with `cargo xtask bench crossnode`, or after `datapath` by
//! `cargo xtask bench datapath`) measures pod-to-pod traffic across two nodes through the kernel's
//! routes and through keelson's eBPF, in direct and tunnel routing. See [`crossnode`].
//!
//! `keelson-bench policy` (run it with `cargo xtask bench policy`) measures what NetworkPolicy
//! costs an allowed path in keelson's eBPF datapath and in kube-router's iptables + ipset
//! layout, at up to 10 000 policies, and the time one policy change takes. See [`policy`].
//!
//! The pure parts — statistics, the table, the plot data, the load generator's report, the
//! kube-proxy rule generators — are unit-tested; the driver needs root.

pub mod api;
pub mod crossnode;
pub mod datapath;
pub mod echo;
pub mod kubeproxy;
pub mod loadgen;
pub mod overload;
pub mod plot;
pub mod policy;
pub mod report;
pub mod services;
pub mod stats;

/// Ctrl-C (SIGINT) and SIGTERM set the returned flag, for a driver to stop at its next step and
/// clean up; a second one exits at once (the next run removes what is left).
pub fn interrupt_flag() -> anyhow::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use anyhow::Context as _;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, std::sync::Arc::clone(&stop))
            .context("cannot install the Ctrl-C handler")?;
        signal_hook::flag::register(signal, std::sync::Arc::clone(&stop))
            .context("cannot install the Ctrl-C handler")?;
    }
    Ok(stop)
}

/// The directory of this executable, where the benchmark's other binaries are built.
pub fn own_dir() -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context as _;
    Ok(std::env::current_exe()
        .context("cannot find this executable")?
        .parent()
        .context("this executable has no directory")?
        .to_path_buf())
}

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
//! The pure parts — statistics, the table, the plot data, the load generator's report, the
//! kube-proxy rule generators — are unit-tested; the driver needs root.

pub mod api;
pub mod crossnode;
pub mod datapath;
pub mod echo;
pub mod kubeproxy;
pub mod loadgen;
pub mod plot;
pub mod report;
pub mod services;
pub mod stats;

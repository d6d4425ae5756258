//! eBPF object `keelson-lb`: the service load balancer (kube-proxy's job).
//!
//! - `sock`: socket-level LB in cgroup `connect4`/`sendmsg4`/`recvmsg4`/`getpeername4` hooks.
//! - `tc`: per-packet LB and pod routing (`tc_from_pod`, `tc_from_netdev`) and `tc_to_pod`.
//! - `policy`: NetworkPolicy enforcement with its own connection tracking, called from `tc`.
//! - `flows`: the flow events and per-endpoint counters `policy` records.
//!
//! Maps are defined in `maps` and pinned by the agent under `/sys/fs/bpf/keelson/<node>/`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
use keelson_ebpf as _;

#[cfg(target_arch = "bpf")]
mod flows;
#[cfg(target_arch = "bpf")]
mod icmp;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod policy;
#[cfg(target_arch = "bpf")]
mod select;
#[cfg(target_arch = "bpf")]
mod sock;
#[cfg(target_arch = "bpf")]
mod tc;

/// The kernel refuses GPL-only helpers to programs without a GPL-compatible licence.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}

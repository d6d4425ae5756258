//! eBPF object `keelson-counters`: per-interface packet counters at TC.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
use keelson_ebpf as _;

#[cfg(target_arch = "bpf")]
mod counters;

/// The kernel refuses GPL-only helpers to programs without a GPL-compatible licence.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}

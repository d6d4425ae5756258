//! eBPF object `keelson-broken`: one program the verifier must refuse and its correct twin.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
use keelson_ebpf_selftest as _;

#[cfg(target_arch = "bpf")]
mod programs;

/// The kernel refuses GPL-only helpers to programs without a GPL-compatible licence.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}

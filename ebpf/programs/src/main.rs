//! keelson's eBPF programs.
//!
//! Built for `bpfel-unknown-none` by `node-agent/build.rs` (aya-build, nightly, bpf-linker) and
//! embedded in the agent binary. Programs stay thin: they look things up in maps whose layout lives
//! in `keelson-ebpf-common`; every decision that can be made in user space is made there.
//!
//! On the host target the crate builds as an empty binary, so `cargo clippy --workspace` can check
//! it without the BPF toolchain.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod counters;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any path that could reach this; it only has to exist.
    loop {}
}

/// The kernel refuses GPL-only helpers to programs without a GPL-compatible licence.
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(target_arch = "bpf"))]
fn main() {}

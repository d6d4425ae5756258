//! Shared pieces of keelson's eBPF programs.
//!
//! Each binary under `src/bin/` is one eBPF object that the node agent embeds and loads on its
//! own: `keelson-counters` (per-interface packet counters) and `keelson-lb` (the service load
//! balancer, whose maps are pinned). On the host target everything here compiles away, so
//! `cargo clippy --workspace` can check the crate without the BPF toolchain.
#![no_std]

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any path that could reach this; it only has to exist.
    loop {}
}

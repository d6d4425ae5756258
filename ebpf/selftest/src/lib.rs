//! Test-only eBPF programs: objects the verifier must refuse, so a test can show that a refusal
//! surfaces as an error carrying the verifier log rather than as a panic.
//!
//! `keelson-broken` (the only binary) is built by `tests/build.rs` and embedded by the test
//! `datapath_verifier`; the node agent never sees it. On the host target everything here
//! compiles away, so `cargo clippy --workspace` can check the crate without the BPF toolchain.
#![no_std]

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any path that could reach this; it only has to exist.
    loop {}
}

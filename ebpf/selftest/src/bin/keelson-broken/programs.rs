//! Two TC classifiers that read the first byte of the packet: `broken_unchecked_access` without
//! comparing against `data_end` (the verifier refuses it: "invalid access to packet"), and
//! `checked_access` after the usual check that the Ethernet header is in the packet (the
//! verifier accepts it).

use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};

/// Ethernet header length: what `checked_access` proves is in the packet before reading.
const ETH_HDR_LEN: usize = 14;

/// Deliberately wrong: dereferences the packet pointer with no bounds check.
#[classifier]
pub fn broken_unchecked_access(ctx: TcContext) -> i32 {
    let first = ctx.data() as *const u8;
    // SAFETY: none, on purpose: nothing proves the packet holds a byte at `data`. The verifier
    // refuses the program, so this never runs.
    let _ = unsafe { core::ptr::read_volatile(first) };
    TC_ACT_OK
}

/// The same read, made safe by a comparison against `data_end`.
///
/// The check covers the whole Ethernet header rather than the one byte read: LLVM rewrites
/// `data + 1 > data_end` as `data >= data_end`, from which no kernel's verifier derives a range.
#[classifier]
pub fn checked_access(ctx: TcContext) -> i32 {
    let first = ctx.data();
    if first + ETH_HDR_LEN > ctx.data_end() {
        return TC_ACT_OK;
    }
    // SAFETY: the packet holds at least `ETH_HDR_LEN` bytes from `first` (checked above).
    let _ = unsafe { core::ptr::read_volatile(first as *const u8) };
    TC_ACT_OK
}

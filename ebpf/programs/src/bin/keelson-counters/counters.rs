//! Per-interface packet counters at TC: the first datapath program, and the simplest proof that
//! the build chain, the loader and the attach path work on a kernel.

use aya_ebpf::{
    bindings::TC_ACT_PIPE,
    macros::{classifier, map},
    maps::PerCpuHashMap,
    programs::TcContext,
};
use keelson_ebpf_common::{
    IFACE_COUNTERS_MAX_ENTRIES, IfaceCounters, IfaceKey,
    direction::{EGRESS, INGRESS},
};

#[map(name = "IFACE_COUNTERS")]
static IFACE_COUNTERS: PerCpuHashMap<IfaceKey, IfaceCounters> =
    PerCpuHashMap::with_max_entries(IFACE_COUNTERS_MAX_ENTRIES, 0);

#[classifier]
pub fn tc_count_ingress(ctx: TcContext) -> i32 {
    count(&ctx, INGRESS)
}

#[classifier]
pub fn tc_count_egress(ctx: TcContext) -> i32 {
    count(&ctx, EGRESS)
}

/// Adds the packet to its interface's counter and lets it continue (`TC_ACT_PIPE`): counting never
/// changes a verdict.
#[inline(always)]
fn count(ctx: &TcContext, direction: u32) -> i32 {
    // SAFETY: `skb` is the context pointer the kernel passed to this program; reading a field
    // of `__sk_buff` through it is what the verifier allows for TC programs.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let key = IfaceKey { ifindex, direction };
    let len = u64::from(ctx.len());
    match IFACE_COUNTERS.get_ptr_mut(key) {
        Some(value) => {
            // SAFETY: the pointer comes from a successful lookup in a per-CPU map, so it points at
            // this CPU's value, which no other CPU writes.
            unsafe {
                (*value).packets += 1;
                (*value).bytes += len;
            }
        }
        None => {
            // A full map only loses counts, never packets.
            let _ = IFACE_COUNTERS.insert(
                key,
                IfaceCounters {
                    packets: 1,
                    bytes: len,
                },
                0,
            );
        }
    }
    TC_ACT_PIPE
}

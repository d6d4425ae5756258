//! The flow view's kernel half: a [`FlowEvent`] into the `kflows_v1` ring buffer for every
//! NetworkPolicy drop and every new flow allowed at an enforcing point, and per-endpoint packet
//! counters (`kepstats_v1`). Neither ever changes a verdict: a full ring buffer only counts
//! `flow_events_lost`.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{PerCpuHashMap, RingBuf},
};
use keelson_ebpf_common::{EndpointStatsKey, FlowEvent, capacity, metric};

use crate::{maps::count, policy::Flow};

/// Flow events for the agent (`keelson-node-agent observe`).
#[map(name = "kflows_v1")]
pub static FLOWS: RingBuf = RingBuf::with_byte_size(capacity::FLOWS_BYTES, 0);

/// Packets passed and dropped per policed pod, direction and verdict.
#[map(name = "kepstats_v1")]
pub static ENDPOINT_STATS: PerCpuHashMap<EndpointStatsKey, u64> =
    PerCpuHashMap::with_max_entries(capacity::ENDPOINT_STATS, BPF_F_NO_PREALLOC);

/// `BPF_NOEXIST`: create the counter only if no other CPU just did.
const BPF_NOEXIST: u64 = 1;

/// What one enforcement point decided about a packet.
#[derive(Clone, Copy)]
pub struct Verdict {
    /// [`keelson_ebpf_common::flow_verdict`].
    pub verdict: u8,
    /// [`keelson_ebpf_common::policy_direction`] of the point.
    pub direction: u8,
    /// The [`metric`] id counted.
    pub reason: u32,
    /// The policed pod (network order).
    pub endpoint: u32,
    /// The peer's identity.
    pub peer_identity: u32,
    /// The allowing rule (0: none).
    pub rule_id: u32,
}

/// Records `verdict` on `flow` in the ring buffer (counted as lost when it is full).
#[inline(always)]
pub fn emit(flow: &Flow, verdict: &Verdict) {
    let Some(mut entry) = FLOWS.reserve::<FlowEvent>(0) else {
        count(metric::FLOW_EVENTS_LOST);
        return;
    };
    // SAFETY: helper without side effects.
    let time_ns = unsafe { bpf_ktime_get_ns() };
    entry.write(FlowEvent {
        time_ns,
        saddr_be: flow.saddr,
        daddr_be: flow.daddr,
        sport_be: flow.sport,
        dport_be: flow.dport,
        proto: flow.proto,
        verdict: verdict.verdict,
        direction: verdict.direction,
        _pad: 0,
        reason: verdict.reason,
        endpoint_be: verdict.endpoint,
        peer_identity: verdict.peer_identity,
        rule_id: verdict.rule_id,
    });
    entry.submit(0);
}

/// Adds one packet to the counter of (`endpoint`, `direction`, `verdict`) on this CPU.
#[inline(always)]
pub fn count_endpoint(endpoint: u32, direction: u8, verdict: u8) {
    let key = EndpointStatsKey {
        endpoint_be: endpoint,
        direction,
        verdict,
        _pad: 0,
    };
    if let Some(counter) = ENDPOINT_STATS.get_ptr_mut(key) {
        // SAFETY: this CPU's slot of a per-CPU value (a statistic: see `maps::count`).
        unsafe { *counter += 1 };
        return;
    }
    // A failure means another CPU created it meanwhile (or the map is full): one packet
    // uncounted on this CPU.
    let _ = ENDPOINT_STATS.insert(key, 1, BPF_NOEXIST);
}

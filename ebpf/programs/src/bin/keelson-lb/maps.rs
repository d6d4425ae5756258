//! The load balancer's maps. Layouts live in `keelson-ebpf-common`; names carry the ABI version
//! and must match `keelson_ebpf_common::maps` (the agent opens them by those names).

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap},
};
use keelson_ebpf_common::{
    AffinityKey, AffinityValue, Backend, BackendStats, CtKey, CtValue, EndpointPolicy,
    IdentityValue, LocalPod, MaglevTable, NodeRoute, PolicyCtKey, PolicyCtValue, PolicyEntry,
    PolicyKeyData, RevNat, ServiceKey, ServiceValue, SockRevNat, SockRevNatKey, capacity, metric,
};

#[map(name = "ksvc_v1")]
pub static SERVICES: HashMap<ServiceKey, ServiceValue> =
    HashMap::with_max_entries(capacity::SERVICES, BPF_F_NO_PREALLOC);

#[map(name = "kbackend_v1")]
pub static BACKENDS: HashMap<u32, Backend> =
    HashMap::with_max_entries(capacity::BACKENDS, BPF_F_NO_PREALLOC);

#[map(name = "krevnat_v1")]
pub static REV_NAT: HashMap<u32, RevNat> =
    HashMap::with_max_entries(capacity::REV_NAT, BPF_F_NO_PREALLOC);

#[map(name = "ksockrevnat_v1")]
pub static SOCK_REV_NAT: LruHashMap<SockRevNatKey, SockRevNat> =
    LruHashMap::with_max_entries(capacity::SOCK_REV_NAT, 0);

#[map(name = "kaffinity_v1")]
pub static AFFINITY: LruHashMap<AffinityKey, AffinityValue> =
    LruHashMap::with_max_entries(capacity::AFFINITY, 0);

#[map(name = "kmetrics_v2")]
pub static METRICS: PerCpuArray<u64> = PerCpuArray::with_max_entries(metric::COUNT, 0);

/// Adds one to a [`metric`] counter of this CPU.
#[inline(always)]
pub fn count(id: u32) {
    if let Some(counter) = METRICS.get_ptr_mut(id) {
        // SAFETY: a per-CPU array slot of this CPU; programs on one CPU do not run concurrently
        // with each other for the same slot in a way that matters for a statistic.
        unsafe { *counter += 1 };
    }
}

#[map(name = "kct_v2")]
pub static CT: LruHashMap<CtKey, CtValue> = LruHashMap::with_max_entries(capacity::CT, 0);

#[map(name = "kmaglev_v1")]
pub static MAGLEV: HashMap<u32, MaglevTable> =
    HashMap::with_max_entries(capacity::MAGLEV, BPF_F_NO_PREALLOC);

#[map(name = "klocalpod_v1")]
pub static LOCAL_PODS: HashMap<u32, LocalPod> =
    HashMap::with_max_entries(capacity::LOCAL_PODS, BPF_F_NO_PREALLOC);

/// Keyed by the pod CIDR's address in network order (the LPM trie matches its bytes in order).
#[map(name = "knoderoute_v1")]
pub static NODE_ROUTES: LpmTrie<u32, NodeRoute> =
    LpmTrie::with_max_entries(capacity::NODE_ROUTES, BPF_F_NO_PREALLOC);

/// ifindex -> this node's IPv4 address there (network order): the SNAT source on kernels whose
/// `bpf_fib_lookup` lacks `BPF_FIB_LOOKUP_SRC`.
#[map(name = "ksnatsrc_v1")]
pub static SNAT_SOURCES: HashMap<u32, u32> =
    HashMap::with_max_entries(capacity::SNAT_SOURCES, BPF_F_NO_PREALLOC);

/// Address (network order) -> security identity: pods of every node, this node's addresses,
/// ipBlock CIDRs.
#[map(name = "kipcache_v1")]
pub static IPCACHE: LpmTrie<u32, IdentityValue> =
    LpmTrie::with_max_entries(capacity::IPCACHE, BPF_F_NO_PREALLOC);

/// Pods of this node a NetworkPolicy selects (or that the agent tracks).
#[map(name = "kendpoint_v1")]
pub static ENDPOINTS: HashMap<u32, EndpointPolicy> =
    HashMap::with_max_entries(capacity::ENDPOINTS, BPF_F_NO_PREALLOC);

/// What each policed endpoint allows.
#[map(name = "kpolicy_v1")]
pub static POLICY: LpmTrie<PolicyKeyData, PolicyEntry> =
    LpmTrie::with_max_entries(capacity::POLICY, BPF_F_NO_PREALLOC);

/// NetworkPolicy connection tracking.
#[map(name = "kpolct_v1")]
pub static POLICY_CT: LruHashMap<PolicyCtKey, PolicyCtValue> =
    LruHashMap::with_max_entries(capacity::POLICY_CT, 0);

/// Per-backend statistics. The agent creates an entry with each backend (and deletes it with
/// it); the programs only add to existing entries, so a backend removed while a packet was in
/// flight never leaves an entry behind.
#[map(name = "kbackstats_v1")]
pub static BACKEND_STATS: PerCpuHashMap<u32, BackendStats> =
    PerCpuHashMap::with_max_entries(capacity::BACKEND_STATS, BPF_F_NO_PREALLOC);

/// Counts one socket-LB translation to `backend_id` on this CPU.
#[inline(always)]
pub fn count_sock_connect(backend_id: u32) {
    if let Some(stats) = BACKEND_STATS.get_ptr_mut(backend_id) {
        // SAFETY: this CPU's value of an existing entry; a statistic (see `count`).
        unsafe { (*stats).sock_connects += 1 };
    }
}

/// Counts one packet of `len` bytes of a translated flow to (`reply`: from) `backend_id` at TC,
/// and a new flow when `new_flow`. Never changes the packet or the verdict.
#[inline(always)]
pub fn count_tc(backend_id: u32, len: u32, reply: bool, new_flow: bool) {
    let Some(stats) = BACKEND_STATS.get_ptr_mut(backend_id) else {
        return;
    };
    let len = u64::from(len);
    // SAFETY: this CPU's value of an existing entry; a statistic (see `count`).
    unsafe {
        if reply {
            (*stats).tc_reply_packets += 1;
            (*stats).tc_reply_bytes += len;
        } else {
            (*stats).tc_forward_packets += 1;
            (*stats).tc_forward_bytes += len;
            if new_flow {
                (*stats).tc_new_flows += 1;
            }
        }
    }
}

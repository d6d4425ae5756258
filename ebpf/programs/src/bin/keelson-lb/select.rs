//! Backend selection shared by the socket and TC paths.

use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns};
use keelson_ebpf_common::{
    AffinityKey, AffinityValue, ServiceKey, ServiceValue, metric, service_flags,
};

use crate::maps::{AFFINITY, BACKENDS, SERVICES, count};

/// Picks a backend id for a new connection to the frontend `key` (slot 0) whose header is
/// `header` (count > 0): the client's affinity entry when the service has `ClientIP` affinity
/// and the entry is fresh, a uniformly random slot otherwise. `client` identifies the client for
/// affinity (netns cookie for sockets, source address for packets). `key.slot` is clobbered.
#[inline(always)]
pub fn select_backend(key: &mut ServiceKey, header: &ServiceValue, client: u64) -> Option<u32> {
    let affinity = header.flags & service_flags::AFFINITY != 0;
    let affinity_key = AffinityKey {
        client,
        rev_nat_id: header.rev_nat_id,
        _pad: [0; 3],
    };
    // SAFETY: helper without side effects.
    let now = unsafe { bpf_ktime_get_ns() };
    if affinity {
        // SAFETY: copied out at once.
        if let Some(entry) = (unsafe { AFFINITY.get(affinity_key) }).copied() {
            let timeout_ns = u64::from(header.affinity_timeout_s) * 1_000_000_000;
            // SAFETY: copied out at once; the agent removes affinity entries of backends that
            // leave a service, so an existing backend here is still a member.
            let alive = unsafe { BACKENDS.get(entry.backend_id) }.is_some();
            if alive && now.wrapping_sub(entry.last_used_ns) <= timeout_ns {
                let refreshed = AffinityValue {
                    last_used_ns: now,
                    ..entry
                };
                let _ = AFFINITY.insert(affinity_key, refreshed, 0);
                count(metric::AFFINITY_HIT);
                return Some(entry.backend_id);
            }
        }
    }
    let backend_id = random_slot(key, header)?;
    if affinity {
        let entry = AffinityValue {
            backend_id,
            _pad: 0,
            last_used_ns: now,
        };
        let _ = AFFINITY.insert(affinity_key, entry, 0);
    }
    Some(backend_id)
}

/// A uniformly random backend slot's backend id.
#[inline(always)]
fn random_slot(key: &mut ServiceKey, header: &ServiceValue) -> Option<u32> {
    // SAFETY: helper without side effects.
    let random = unsafe { bpf_get_prandom_u32() };
    key.slot = (random % u32::from(header.count)) as u16 + 1;
    // SAFETY: copied out at once.
    match (unsafe { SERVICES.get(*key) }).copied() {
        Some(slot) => Some(slot.backend_id),
        None => {
            // The header was read just before the agent shrank the service: slot 1 always
            // exists while the count is non-zero.
            key.slot = 1;
            // SAFETY: copied out at once.
            (unsafe { SERVICES.get(*key) }).map(|slot| slot.backend_id)
        }
    }
}

//! The agent's conntrack GC for the TC path's `CT` map.
//!
//! The kernel side keeps the map an LRU, so a full table never refuses a new flow; but an LRU
//! evicts by recency alone and one half of a flow at a time. The GC runs in the agent, a bounded
//! window of entries per pass:
//!
//! - it deletes flows whose protocol-state timeout passed (TCP established, TCP new, TCP closing,
//!   UDP), both entries of a flow together;
//! - when the table is fuller than the high-water mark, it evicts flows down to the low-water
//!   mark: closing flows first, then the oldest (by last packet) flows that are not established
//!   or have been idle for [`GcPolicy::evict_idle`]; established flows that are active are never
//!   evicted.
//!
//! Deletions and evictions are counted in the datapath's metrics array (ids the programs never
//! write), so `/metrics` and `lb metrics` show them and they survive an agent restart.
//!
//! [`plan`] and [`eviction_target`] are pure; [`ConntrackGc`] walks the pinned map.

use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, AsRawFd as _},
    path::Path,
    time::Duration,
};

use aya::maps::{HashMap, Map, PerCpuArray, PerCpuValues};
use keelson_ebpf_common::{CtKey, CtValue, ct_dir, ct_flags, maps, metric, proto};

use super::open_pinned;
use crate::datapath::DatapathError;

/// Conntrack timeouts by protocol state (Cilium's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtTimeouts {
    /// TCP flows the backend answered and neither side closed.
    pub tcp_established: Duration,
    /// TCP flows the backend has not answered yet (SYN sent).
    pub tcp_new: Duration,
    /// TCP flows that saw a FIN or RST.
    pub tcp_closing: Duration,
    /// UDP (and any other protocol) flows.
    pub other: Duration,
}

impl Default for CtTimeouts {
    fn default() -> Self {
        Self {
            tcp_established: Duration::from_secs(6 * 3600),
            tcp_new: Duration::from_secs(60),
            tcp_closing: Duration::from_secs(10),
            other: Duration::from_secs(60),
        }
    }
}

/// What the GC does per pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GcPolicy {
    /// Timeouts by protocol state.
    pub timeouts: CtTimeouts,
    /// Past this fill ratio, flows are evicted early...
    pub high_water: f64,
    /// ...until the table is this full again.
    pub low_water: f64,
    /// An established flow without a packet for this long may be evicted under pressure.
    pub evict_idle: Duration,
    /// Entries read per pass (the work per pass is bounded by this, plus one partner lookup
    /// and at most two deletions per entry read).
    pub scan_budget: usize,
}

impl Default for GcPolicy {
    fn default() -> Self {
        Self {
            timeouts: CtTimeouts::default(),
            high_water: 0.9,
            low_water: 0.8,
            evict_idle: Duration::from_secs(60),
            scan_budget: 16_384,
        }
    }
}

/// A flow's protocol state, read from both of its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FlowState {
    /// A FIN or RST was seen.
    Closing,
    /// The backend has not answered yet.
    New,
    /// The backend answered.
    Established,
}

/// One flow: its forward and reply entries, as far as they exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flow {
    /// Client -> frontend.
    pub forward: Option<(CtKey, CtValue)>,
    /// Backend -> client (or this node's SNAT address).
    pub reply: Option<(CtKey, CtValue)>,
}

impl Flow {
    fn entries(&self) -> impl Iterator<Item = &(CtKey, CtValue)> {
        self.forward.iter().chain(self.reply.iter())
    }

    /// The protocol number.
    pub fn proto(&self) -> u8 {
        self.entries().next().map_or(0, |(k, _)| k.proto)
    }

    /// The state both directions show together.
    pub fn state(&self) -> FlowState {
        if self
            .entries()
            .any(|(_, v)| v.flags & ct_flags::CLOSING != 0)
        {
            FlowState::Closing
        } else if self
            .reply
            .is_some_and(|(_, v)| v.flags & ct_flags::SEEN != 0)
        {
            FlowState::Established
        } else {
            FlowState::New
        }
    }

    /// The last packet in either direction (`bpf_ktime_get_ns`).
    pub fn last_seen_ns(&self) -> u64 {
        self.entries()
            .map(|(_, v)| v.last_seen_ns)
            .max()
            .unwrap_or(0)
    }

    /// The keys to delete for this flow.
    pub fn keys(&self) -> Vec<CtKey> {
        self.entries().map(|(k, _)| *k).collect()
    }

    /// How long this flow may stay idle in its state.
    pub fn timeout(&self, timeouts: &CtTimeouts) -> Duration {
        match (self.proto(), self.state()) {
            (proto::TCP, FlowState::Established) => timeouts.tcp_established,
            (proto::TCP, FlowState::New) => timeouts.tcp_new,
            (proto::TCP, FlowState::Closing) => timeouts.tcp_closing,
            _ => timeouts.other,
        }
    }
}

/// The other direction's key of a conntrack entry (the layout the TC programs write).
pub fn partner_key(key: &CtKey, value: &CtValue) -> CtKey {
    let snat = value.flags & ct_flags::SNAT != 0;
    if key.dir == ct_dir::FORWARD {
        CtKey {
            saddr_be: value.nat_addr_be,
            daddr_be: if snat {
                value.snat_addr_be
            } else {
                key.saddr_be
            },
            sport_be: value.nat_port_be,
            dport_be: if snat {
                value.snat_port_be
            } else {
                key.sport_be
            },
            proto: key.proto,
            dir: ct_dir::REPLY,
            _pad: 0,
        }
    } else {
        CtKey {
            saddr_be: if snat {
                value.snat_addr_be
            } else {
                key.daddr_be
            },
            daddr_be: value.nat_addr_be,
            sport_be: if snat {
                value.snat_port_be
            } else {
                key.dport_be
            },
            dport_be: value.nat_port_be,
            proto: key.proto,
            dir: ct_dir::FORWARD,
            _pad: 0,
        }
    }
}

/// Pairs entries into flows. `partner` looks up an entry's other direction in the map when it
/// is not among `entries` (the window of one pass).
pub fn group_flows(
    entries: &[(CtKey, CtValue)],
    mut partner: impl FnMut(&CtKey) -> Option<CtValue>,
) -> Vec<Flow> {
    let in_window: std::collections::HashMap<FlowId, CtValue> =
        entries.iter().map(|(k, v)| (FlowId::of(k), *v)).collect();
    let mut flows: BTreeMap<FlowId, Flow> = BTreeMap::new();
    for (key, value) in entries {
        let other = partner_key(key, value);
        let (forward_key, reply_key) = if key.dir == ct_dir::FORWARD {
            (*key, other)
        } else {
            (other, *key)
        };
        let id = FlowId::of(&forward_key);
        if flows.contains_key(&id) {
            continue;
        }
        let lookup = |k: &CtKey, partner: &mut dyn FnMut(&CtKey) -> Option<CtValue>| {
            in_window
                .get(&FlowId::of(k))
                .copied()
                .or_else(|| partner(k))
                .map(|v| (*k, v))
        };
        // The partner found must point back at this entry, or it belongs to another flow
        // (a reused tuple): then this entry is a flow of its own.
        let forward = lookup(&forward_key, &mut partner)
            .filter(|(k, v)| k == key || partner_key(k, v) == *key);
        let reply =
            lookup(&reply_key, &mut partner).filter(|(k, v)| k == key || partner_key(k, v) == *key);
        flows.insert(id, Flow { forward, reply });
    }
    flows.into_values().collect()
}

/// A hashable, ordered stand-in for a [`CtKey`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct FlowId(u32, u32, u16, u16, u8, u8);

impl FlowId {
    fn of(k: &CtKey) -> Self {
        Self(
            k.saddr_be, k.daddr_be, k.sport_be, k.dport_be, k.proto, k.dir,
        )
    }
}

/// What one pass deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcPlan {
    /// Keys of flows past their timeout.
    pub expired: Vec<CtKey>,
    /// Flows past their timeout.
    pub expired_flows: u64,
    /// Keys of flows evicted under pressure.
    pub evicted: Vec<CtKey>,
    /// Flows evicted under pressure.
    pub evicted_flows: u64,
}

/// Entries to evict from a window of `window_entries` of a table holding about `entries` of
/// `capacity`: nothing below the high-water mark; above it, the window's share of the way down
/// to the low-water mark.
pub fn eviction_target(
    entries: usize,
    capacity: usize,
    window_entries: usize,
    policy: &GcPolicy,
) -> usize {
    let capacity = capacity as f64;
    if capacity == 0.0 || (entries as f64) <= policy.high_water * capacity {
        return 0;
    }
    let excess = entries as f64 - policy.low_water * capacity;
    let share = window_entries as f64 / (entries.max(1) as f64);
    (excess * share.min(1.0)).ceil() as usize
}

/// Decides, for the flows of one window, which expire and which are evicted (to free at least
/// `evict_entries` entries, when that many candidates exist).
pub fn plan(flows: &[Flow], now_ns: u64, policy: &GcPolicy, evict_entries: usize) -> GcPlan {
    let mut out = GcPlan::default();
    let mut candidates: Vec<(u8, u64, &Flow)> = Vec::new();
    for flow in flows {
        let last = flow.last_seen_ns();
        let idle = Duration::from_nanos(now_ns.saturating_sub(last));
        if idle > flow.timeout(&policy.timeouts) {
            out.expired.extend(flow.keys());
            out.expired_flows += 1;
            continue;
        }
        let rank = match flow.state() {
            FlowState::Closing => 0,
            FlowState::New => 1,
            FlowState::Established if idle >= policy.evict_idle => 1,
            // Established and active: never evicted.
            FlowState::Established => continue,
        };
        candidates.push((rank, last, flow));
    }
    if evict_entries == 0 {
        return out;
    }
    candidates.sort_by_key(|(rank, last, _)| (*rank, *last));
    let mut freed = 0;
    for (_, _, flow) in candidates {
        if freed >= evict_entries {
            break;
        }
        let keys = flow.keys();
        freed += keys.len();
        out.evicted.extend(keys);
        out.evicted_flows += 1;
    }
    out
}

/// What a pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Entries read.
    pub scanned: usize,
    /// Flows deleted on timeout.
    pub expired_flows: u64,
    /// Flows evicted under pressure.
    pub evicted_flows: u64,
    /// The table's fill, as estimated after the pass.
    pub entries: usize,
    /// The table's capacity.
    pub capacity: usize,
    /// The pass reached the end of the table (the next one starts over).
    pub wrapped: bool,
}

/// The GC over the `CT` map pinned in a load balancer's pin directory.
pub struct ConntrackGc {
    ct: Map,
    metrics: Map,
    capacity: usize,
    policy: GcPolicy,
    /// Where the next pass continues (None: at the start).
    cursor: Option<CtKey>,
    /// Entries seen in the sweep in progress.
    sweep_seen: usize,
    /// Fill estimate: the last complete sweep's count, adjusted by deletions since.
    entries: Option<usize>,
}

impl std::fmt::Debug for ConntrackGc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConntrackGc")
            .field("capacity", &self.capacity)
            .field("policy", &self.policy)
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

fn map_error(map: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError {
    move |source| DatapathError::Map {
        map,
        source: Box::new(source),
    }
}

impl ConntrackGc {
    /// Opens the pinned `CT` and metrics maps under `pin_dir`.
    pub fn open(pin_dir: &Path, policy: GcPolicy) -> Result<Self, DatapathError> {
        let ct = open_pinned(pin_dir, maps::CT)?;
        let metrics = open_pinned(pin_dir, maps::METRICS)?;
        let capacity = match &ct {
            Map::HashMap(d) | Map::LruHashMap(d) => {
                d.info().map_err(map_error(maps::CT))?.max_entries() as usize
            }
            _ => return Err(DatapathError::MissingMap { map: maps::CT }),
        };
        Ok(Self {
            ct,
            metrics,
            capacity,
            policy,
            cursor: None,
            sweep_seen: 0,
            entries: None,
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> &GcPolicy {
        &self.policy
    }

    /// One bounded pass at `now_ns` (`CLOCK_MONOTONIC`, the programs' `bpf_ktime_get_ns`).
    pub fn pass_at(&mut self, now_ns: u64) -> Result<GcReport, DatapathError> {
        let fd = match &self.ct {
            Map::HashMap(d) | Map::LruHashMap(d) => d.fd().as_fd().as_raw_fd(),
            _ => return Err(DatapathError::MissingMap { map: maps::CT }),
        };
        let mut ct: HashMap<_, CtKey, CtValue> =
            HashMap::try_from(&mut self.ct).map_err(map_error(maps::CT))?;

        // The window: up to `scan_budget` entries from the cursor.
        let mut window = Vec::new();
        let mut wrapped = false;
        while window.len() < self.policy.scan_budget {
            match next_key(fd, self.cursor.as_ref()).map_err(|source| DatapathError::Io {
                what: "walking the conntrack map",
                path: maps::CT.into(),
                source,
            })? {
                Some(key) => {
                    self.cursor = Some(key);
                    if let Ok(value) = ct.get(&key, 0) {
                        window.push((key, value));
                    }
                }
                None => {
                    wrapped = true;
                    self.cursor = None;
                    break;
                }
            }
        }
        self.sweep_seen += window.len();
        let entries = if wrapped {
            let seen = std::mem::take(&mut self.sweep_seen);
            self.entries = Some(seen);
            seen
        } else {
            // Before the first sweep completes, what was seen so far is a lower bound.
            self.entries.unwrap_or(0).max(self.sweep_seen)
        };

        let mut flows = group_flows(&window, |k| ct.get(k, 0).ok());
        if let Some(cursor) = self.cursor {
            // The next pass continues from the cursor, which must still exist then (from a
            // deleted key the kernel would start over): its flow waits for the next sweep.
            flows.retain(|f| !f.keys().contains(&cursor));
        }
        let target = eviction_target(entries, self.capacity, window.len(), &self.policy);
        let plan = plan(&flows, now_ns, &self.policy, target);
        let mut deleted = 0;
        for key in plan.expired.iter().chain(&plan.evicted) {
            match ct.remove(key) {
                Ok(()) => deleted += 1,
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(e) => return Err(map_error(maps::CT)(e)),
            }
        }
        let entries = entries.saturating_sub(deleted);
        if let Some(estimate) = self.entries.as_mut() {
            *estimate = estimate.saturating_sub(deleted);
        }
        self.add_counters(&[
            (metric::CT_GC_EXPIRED, plan.expired_flows),
            (metric::CT_GC_EVICTED, plan.evicted_flows),
            (metric::CT_GC_PASSES, 1),
        ])?;
        Ok(GcReport {
            scanned: window.len(),
            expired_flows: plan.expired_flows,
            evicted_flows: plan.evicted_flows,
            entries,
            capacity: self.capacity,
            wrapped,
        })
    }

    /// One bounded pass now.
    pub fn pass(&mut self) -> Result<GcReport, DatapathError> {
        self.pass_at(monotonic_now_ns())
    }

    /// Adds to agent-owned counters of the metrics array (kept on CPU 0's slot).
    fn add_counters(&mut self, deltas: &[(u32, u64)]) -> Result<(), DatapathError> {
        let mut array: PerCpuArray<_, u64> =
            PerCpuArray::try_from(&mut self.metrics).map_err(map_error(maps::METRICS))?;
        for &(id, delta) in deltas {
            if delta == 0 {
                continue;
            }
            let values = array.get(&id, 0).map_err(map_error(maps::METRICS))?;
            let mut per_cpu: Vec<u64> = values.iter().copied().collect();
            if let Some(first) = per_cpu.first_mut() {
                *first = first.wrapping_add(delta);
            }
            let values = PerCpuValues::try_from(per_cpu).map_err(|source| DatapathError::Io {
                what: "sizing per-CPU values",
                path: maps::METRICS.into(),
                source,
            })?;
            array.set(id, values, 0).map_err(map_error(maps::METRICS))?;
        }
        Ok(())
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_now_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut t) };
    if rc != 0 {
        return 0;
    }
    (t.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(t.tv_nsec as u64)
}

/// `BPF_MAP_GET_NEXT_KEY` from `key` (or the first key): aya's key iterator always starts at the
/// beginning, and a bounded pass has to continue where the last one stopped. A `key` that was
/// deleted meanwhile makes the kernel start over, which only repeats work.
fn next_key(fd: std::os::fd::RawFd, key: Option<&CtKey>) -> std::io::Result<Option<CtKey>> {
    /// The `bpf_attr` member of `BPF_MAP_*_ELEM` and `BPF_MAP_GET_NEXT_KEY`.
    #[repr(C)]
    struct ElemAttr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        next_key: u64,
        flags: u64,
    }
    const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
    let mut next = CtKey::default();
    let attr = ElemAttr {
        map_fd: fd as u32,
        _pad: 0,
        key: key.map_or(0, |k| std::ptr::from_ref(k) as u64),
        next_key: std::ptr::from_mut(&mut next) as u64,
        flags: 0,
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix of the size passed; `key` (when set) and
    // `next` are live `CtKey`s of the map's key size, which the kernel reads and writes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_GET_NEXT_KEY,
            std::ptr::from_ref(&attr),
            std::mem::size_of::<ElemAttr>(),
        )
    };
    if rc == 0 {
        return Ok(Some(next));
    }
    let error = std::io::Error::last_os_error();
    if error.raw_os_error() == Some(libc::ENOENT) {
        return Ok(None);
    }
    Err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn be(a: [u8; 4]) -> u32 {
        u32::from_ne_bytes(a)
    }

    /// A non-SNAT flow client:port -> VIP:80 translated to backend:8080.
    fn flow(client_port: u16, p: u8, last: u64, reply_flags: u8, fwd_flags: u8) -> Flow {
        let forward = CtKey {
            saddr_be: be([10, 200, 0, 2]),
            daddr_be: be([10, 96, 0, 1]),
            sport_be: client_port.to_be(),
            dport_be: 80u16.to_be(),
            proto: p,
            dir: ct_dir::FORWARD,
            _pad: 0,
        };
        let fv = CtValue {
            nat_addr_be: be([10, 201, 0, 11]),
            nat_port_be: 8080u16.to_be(),
            last_seen_ns: last,
            flags: fwd_flags,
            ..CtValue::default()
        };
        let reply = partner_key(&forward, &fv);
        let rv = CtValue {
            nat_addr_be: forward.daddr_be,
            nat_port_be: forward.dport_be,
            last_seen_ns: last,
            flags: reply_flags,
            ..CtValue::default()
        };
        Flow {
            forward: Some((forward, fv)),
            reply: Some((reply, rv)),
        }
    }

    fn entries(flows: &[Flow]) -> Vec<(CtKey, CtValue)> {
        flows
            .iter()
            .flat_map(|f| f.forward.into_iter().chain(f.reply))
            .collect()
    }

    #[test]
    fn partners_point_at_each_other_with_and_without_snat() {
        let f = flow(40_000, proto::TCP, 0, 0, 0);
        let (fk, fv) = f.forward.expect("forward");
        let (rk, rv) = f.reply.expect("reply");
        assert_eq!(partner_key(&fk, &fv), rk);
        assert_eq!(partner_key(&rk, &rv), fk);

        let client = be([192, 0, 2, 7]);
        let node = be([10, 202, 0, 1]);
        let fk = CtKey {
            saddr_be: client,
            daddr_be: be([10, 200, 0, 1]),
            sport_be: 5555u16.to_be(),
            dport_be: 30080u16.to_be(),
            proto: proto::TCP,
            dir: ct_dir::FORWARD,
            _pad: 0,
        };
        let fv = CtValue {
            nat_addr_be: be([10, 203, 0, 11]),
            nat_port_be: 8080u16.to_be(),
            snat_addr_be: node,
            snat_port_be: 61_234u16.to_be(),
            flags: ct_flags::SNAT,
            ..CtValue::default()
        };
        let rk = partner_key(&fk, &fv);
        assert_eq!(
            (rk.saddr_be, rk.daddr_be, u16::from_be(rk.dport_be)),
            (fv.nat_addr_be, node, 61_234)
        );
        let rv = CtValue {
            nat_addr_be: fk.daddr_be,
            nat_port_be: fk.dport_be,
            snat_addr_be: client,
            snat_port_be: fk.sport_be,
            flags: ct_flags::SNAT,
            ..CtValue::default()
        };
        assert_eq!(partner_key(&rk, &rv), fk);
    }

    #[test]
    fn flows_are_grouped_from_either_half_and_from_the_map() {
        let a = flow(1, proto::TCP, 5, ct_flags::SEEN, 0);
        let b = flow(2, proto::UDP, 7, 0, 0);
        // b's forward entry is outside the window: found through the lookup.
        let mut window = entries(&[a]);
        window.push(b.reply.expect("reply"));
        let b_forward = b.forward.expect("forward");
        let flows = group_flows(&window, |k| (*k == b_forward.0).then_some(b_forward.1));
        assert_eq!(flows.len(), 2);
        assert!(flows.contains(&a) && flows.contains(&b), "{flows:?}");
        assert_eq!(a.state(), FlowState::Established);
        assert_eq!(b.state(), FlowState::New);
        // A lone half (its partner evicted) is a flow of its own.
        let lone = group_flows(&[b.reply.expect("reply")], |_| None);
        assert_eq!(lone.len(), 1);
        assert_eq!(lone[0].keys().len(), 1);
    }

    #[test]
    fn timeouts_follow_the_protocol_state() {
        let policy = GcPolicy::default();
        let now = 100_000 * SEC;
        let flows = [
            // TCP established, idle 1 h: kept (6 h timeout).
            flow(1, proto::TCP, now - 3600 * SEC, ct_flags::SEEN, 0),
            // TCP SYN never answered, 61 s ago: expired.
            flow(2, proto::TCP, now - 61 * SEC, 0, 0),
            // TCP closing, 11 s ago: expired.
            flow(
                3,
                proto::TCP,
                now - 11 * SEC,
                ct_flags::SEEN,
                ct_flags::CLOSING,
            ),
            // TCP closing, 5 s ago: kept.
            flow(
                4,
                proto::TCP,
                now - 5 * SEC,
                ct_flags::SEEN,
                ct_flags::CLOSING,
            ),
            // UDP answered, 59 s ago: kept; 61 s ago: expired.
            flow(5, proto::UDP, now - 59 * SEC, ct_flags::SEEN, 0),
            flow(6, proto::UDP, now - 61 * SEC, ct_flags::SEEN, 0),
        ];
        let plan = plan(&flows, now, &policy, 0);
        assert_eq!(plan.expired_flows, 3);
        let ports: Vec<u16> = plan
            .expired
            .iter()
            .filter(|k| k.dir == ct_dir::FORWARD)
            .map(|k| u16::from_be(k.sport_be))
            .collect();
        assert_eq!(ports, [2, 3, 6]);
        assert_eq!(plan.expired.len(), 6, "both halves of each flow");
        assert!(plan.evicted.is_empty());
    }

    #[test]
    fn pressure_evicts_closing_then_oldest_idle_and_never_active_established_flows() {
        let policy = GcPolicy {
            evict_idle: Duration::from_secs(10),
            ..GcPolicy::default()
        };
        let now = 1000 * SEC;
        let active = flow(1, proto::TCP, now - SEC, ct_flags::SEEN, 0);
        let idle_old = flow(2, proto::UDP, now - 50 * SEC, ct_flags::SEEN, 0);
        let idle_newer = flow(3, proto::UDP, now - 20 * SEC, ct_flags::SEEN, 0);
        let syn = flow(4, proto::TCP, now - 30 * SEC, 0, 0);
        let closing = flow(
            5,
            proto::TCP,
            now - 2 * SEC,
            ct_flags::SEEN,
            ct_flags::CLOSING,
        );
        let flows = [active, idle_old, idle_newer, syn, closing];

        let p = plan(&flows, now, &policy, 4);
        let evicted: Vec<u16> = p
            .evicted
            .iter()
            .filter(|k| k.dir == ct_dir::FORWARD)
            .map(|k| u16::from_be(k.sport_be))
            .collect();
        assert_eq!(evicted, [5, 2], "closing first, then the oldest idle flow");
        assert_eq!(p.evicted_flows, 2);

        // Asked for everything: all but the active established flow.
        let p = plan(&flows, now, &policy, 100);
        assert_eq!(p.evicted_flows, 4);
        assert!(!p.evicted.contains(&active.forward.expect("forward").0));
    }

    #[test]
    fn eviction_starts_past_high_water_and_aims_at_low_water() {
        let policy = GcPolicy::default();
        assert_eq!(eviction_target(900, 1000, 900, &policy), 0);
        assert_eq!(eviction_target(950, 1000, 950, &policy), 150);
        // A window of a fifth of the table evicts a fifth of the excess.
        assert_eq!(eviction_target(1000, 1000, 200, &policy), 40);
        assert_eq!(eviction_target(10, 0, 10, &policy), 0);
    }
}

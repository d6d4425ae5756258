//! The agent's view of what the load-balancer maps hold, and the smallest set of map writes that
//! takes them to a new desired state. Pure: the caller applies the [`MapOp`]s.
//!
//! Work is per Service: an update recomputes that Service's frontends only, so one endpoint change
//! costs O(that Service), whatever the number of Services. Backend slots keep their positions
//! across updates (a departing backend's slot is refilled by the last one), so one endpoint change
//! rewrites O(1) slots.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::Ipv4Addr,
};

use keelson_ebpf_common::{
    Backend, MAGLEV_TABLE_SIZE, RevNat, ServiceKey, ServiceValue, backend_flags, service_flags,
};

use super::frontends::{BackendAddr, Frontend, FrontendKey, group_services};
use crate::datapath::maglev::{self, MaglevBackend, MaglevError};

/// `namespace/name` of a Service.
pub type ServiceId = String;

/// One write to a load-balancer map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapOp {
    /// Insert or replace a backend.
    PutBackend(u32, Backend),
    /// Insert or replace a reverse-NAT entry.
    PutRevNat(u32, RevNat),
    /// Insert or replace a service header or slot.
    PutService(ServiceKey, ServiceValue),
    /// Remove a service header or slot.
    DeleteService(ServiceKey),
    /// Remove a backend nothing references any more.
    DeleteBackend(u32),
    /// Remove a reverse-NAT entry no frontend uses any more.
    DeleteRevNat(u32),
    /// Insert or replace the Maglev table of an external frontend (backend ids, one per entry).
    PutMaglev(u16, Vec<u32>),
    /// Remove the Maglev table of a frontend.
    DeleteMaglev(u16),
    /// Forget client affinities of one frontend to a backend that left it.
    ForgetAffinity {
        /// The frontend's rev-NAT id.
        rev_nat_id: u16,
        /// The backend that left.
        backend_id: u32,
    },
}

/// Backend identity: the same pod address and port is one backend for every frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct BackendIdentity {
    address: Ipv4Addr,
    port: u16,
    proto: u8,
}

impl From<&BackendAddr> for BackendIdentity {
    fn from(b: &BackendAddr) -> Self {
        Self {
            address: b.address,
            port: b.port,
            proto: b.proto,
        }
    }
}

#[derive(Debug, Clone)]
struct BackendEntry {
    id: u32,
    value: Backend,
    /// Slots referencing it, over all frontends.
    refs: u32,
}

#[derive(Debug, Clone)]
struct FrontendEntry {
    /// `None` for entries adopted from pinned maps and not yet claimed by a Service.
    owner: Option<ServiceId>,
    header: ServiceValue,
    /// Backend ids by slot (index 0 is slot 1).
    slots: Vec<u32>,
}

/// Reverse-NAT ids are per frontend address:port/proto, shared by its scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RevNatIdentity {
    address: Ipv4Addr,
    port: u16,
    proto: u8,
}

impl From<&FrontendKey> for RevNatIdentity {
    fn from(k: &FrontendKey) -> Self {
        Self {
            address: k.address,
            port: k.port,
            proto: k.proto,
        }
    }
}

/// Errors that stop an update before any map write is planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// All 65535 reverse-NAT ids are in use.
    #[error("no free reverse-NAT id: 65535 frontends are in use")]
    RevNatIdsExhausted,
    /// A frontend has more backends than a slot number can address.
    #[error("frontend {frontend} has {backends} backends; at most 65535 are supported")]
    TooManyBackends { frontend: String, backends: usize },
    /// The Maglev table cannot be built.
    #[error("maglev table")]
    Maglev(#[from] MaglevError),
}

/// What the maps hold, as the agent tracks it.
#[derive(Debug, Default)]
pub struct LbState {
    frontends: BTreeMap<FrontendKey, FrontendEntry>,
    services: HashMap<ServiceId, Vec<FrontendKey>>,
    backends: HashMap<BackendIdentity, BackendEntry>,
    backend_by_id: HashMap<u32, BackendIdentity>,
    rev_nat: HashMap<RevNatIdentity, (u16, u32)>,
    free_backend_ids: Vec<u32>,
    next_backend_id: u32,
    free_rev_nat_ids: Vec<u16>,
    next_rev_nat_id: u16,
}

impl LbState {
    /// An empty state (empty maps).
    pub fn new() -> Self {
        Self {
            next_backend_id: 1,
            next_rev_nat_id: 1,
            ..Self::default()
        }
    }

    /// Rebuilds the state from what pinned maps hold after an agent restart, so ids stay stable
    /// and established connections keep their entries. Adopted frontends belong to no Service
    /// until an update claims them; [`LbState::finish_initial_sync`] removes the unclaimed.
    pub fn adopt(
        services: impl IntoIterator<Item = (ServiceKey, ServiceValue)>,
        backends: impl IntoIterator<Item = (u32, Backend)>,
        rev_nat: impl IntoIterator<Item = (u32, RevNat)>,
    ) -> Self {
        let mut state = Self::new();
        let mut by_id = HashMap::new();
        for (id, value) in backends {
            let identity = BackendIdentity {
                address: Ipv4Addr::from(u32::from_be(value.address_be)),
                port: u16::from_be(value.port_be),
                proto: value.proto,
            };
            by_id.insert(id, identity);
            state.backend_by_id.insert(id, identity);
            state
                .backends
                .insert(identity, BackendEntry { id, value, refs: 0 });
            state.next_backend_id = state.next_backend_id.max(id + 1);
        }
        // Ids in use come from REV_NAT; which frontends use them comes from the headers below.
        for (id, _) in rev_nat {
            if let Ok(id) = u16::try_from(id) {
                state.next_rev_nat_id = state.next_rev_nat_id.max(id.saturating_add(1));
            }
        }
        let mut rev_nat = HashMap::new();
        for (frontend, (header, slots)) in group_services(services) {
            let ids: Vec<u32> = slots.into_iter().map(|(_, id)| id).collect();
            for id in &ids {
                if let Some(identity) = by_id.get(id)
                    && let Some(entry) = state.backends.get_mut(identity)
                {
                    entry.refs += 1;
                }
            }
            let identity = RevNatIdentity::from(&frontend);
            let users = rev_nat.entry(identity).or_insert((header.rev_nat_id, 0));
            users.1 += 1;
            state.frontends.insert(
                frontend,
                FrontendEntry {
                    owner: None,
                    header,
                    slots: ids,
                },
            );
        }
        state.rev_nat = rev_nat;
        state
    }

    /// Number of frontends (headers) tracked.
    pub fn frontend_count(&self) -> usize {
        self.frontends.len()
    }

    /// Every (backend id, owning Service, frontend, frontend flags) a backend slot holds, for
    /// labelling per-backend counters. Frontends adopted and not yet claimed by a Service are
    /// left out.
    pub fn backend_refs(&self) -> impl Iterator<Item = (u32, &str, FrontendKey, u16)> + '_ {
        self.frontends.iter().flat_map(|(key, entry)| {
            let owner = entry.owner.as_deref();
            entry
                .slots
                .iter()
                .filter_map(move |id| owner.map(|service| (*id, service, *key, entry.header.flags)))
        })
    }

    /// Sets the frontends of one Service (empty: the Service is gone or has no virtual IP) and
    /// returns the map writes that get there, ordered so that a program reading concurrently
    /// never finds a slot pointing at a missing backend.
    pub fn update(
        &mut self,
        service: &str,
        frontends: Vec<Frontend>,
    ) -> Result<Vec<MapOp>, StateError> {
        for frontend in &frontends {
            if frontend.backends.len() > usize::from(u16::MAX) {
                return Err(StateError::TooManyBackends {
                    frontend: format!("{:?}", frontend.key),
                    backends: frontend.backends.len(),
                });
            }
        }
        let mut puts = Vec::new();
        let mut headers = Vec::new();
        let mut deletes = Vec::new();
        let mut released = Vec::new();

        let old_keys = self.services.remove(service).unwrap_or_default();
        let new_keys: HashSet<FrontendKey> = frontends.iter().map(|f| f.key).collect();
        for key in old_keys.iter().filter(|k| !new_keys.contains(k)) {
            // Two Services sharing an address: only the owner removes it.
            if self.frontends.get(key).and_then(|f| f.owner.as_deref()) == Some(service) {
                self.remove_frontend(*key, &mut deletes, &mut released);
            }
        }

        let mut claimed = Vec::with_capacity(frontends.len());
        for frontend in frontends {
            claimed.push(frontend.key);
            self.set_frontend(
                service,
                frontend,
                &mut puts,
                &mut headers,
                &mut deletes,
                &mut released,
            )?;
        }
        if !claimed.is_empty() {
            self.services.insert(service.to_owned(), claimed);
        }

        let mut ops = puts;
        ops.extend(headers);
        ops.extend(deletes);
        ops.extend(self.release(released));
        Ok(ops)
    }

    /// After the first full list of Services: removes adopted frontends no Service claimed.
    pub fn finish_initial_sync(&mut self) -> Vec<MapOp> {
        let orphans: Vec<FrontendKey> = self
            .frontends
            .iter()
            .filter(|(_, f)| f.owner.is_none())
            .map(|(k, _)| *k)
            .collect();
        let mut deletes = Vec::new();
        let mut released = Vec::new();
        for key in orphans {
            self.remove_frontend(key, &mut deletes, &mut released);
        }
        deletes.extend(self.release(released));
        // Backends adopted but referenced by no slot at all.
        let unused: Vec<BackendIdentity> = self
            .backends
            .iter()
            .filter(|(_, b)| b.refs == 0)
            .map(|(k, _)| *k)
            .collect();
        for identity in unused {
            if let Some(entry) = self.backends.remove(&identity) {
                self.backend_by_id.remove(&entry.id);
                self.free_backend_ids.push(entry.id);
                deletes.push(MapOp::DeleteBackend(entry.id));
            }
        }
        deletes
    }

    fn set_frontend(
        &mut self,
        service: &str,
        frontend: Frontend,
        puts: &mut Vec<MapOp>,
        headers: &mut Vec<MapOp>,
        deletes: &mut Vec<MapOp>,
        released: &mut Vec<BackendIdentity>,
    ) -> Result<(), StateError> {
        let key = frontend.key;
        let rev_nat_id = match self.frontends.get(&key) {
            Some(existing) => existing.header.rev_nat_id,
            None => self.acquire_rev_nat(&key, puts)?,
        };

        // Backend ids, creating or updating backend entries first.
        let mut wanted: Vec<u32> = Vec::with_capacity(frontend.backends.len());
        for backend in &frontend.backends {
            wanted.push(self.acquire_backend(backend, puts));
        }

        let (previous_slots, previous_header) = match self.frontends.get(&key) {
            Some(e) => (e.slots.clone(), Some(e.header)),
            None => (Vec::new(), None),
        };

        // Stable slots: keep survivors in place, refill holes from the end, append newcomers.
        let wanted_set: HashSet<u32> = wanted.iter().copied().collect();
        let mut slots = previous_slots.clone();
        let mut i = 0;
        while i < slots.len() {
            if wanted_set.contains(&slots[i]) {
                i += 1;
            } else {
                slots.swap_remove(i);
            }
        }
        let present: HashSet<u32> = slots.iter().copied().collect();
        slots.extend(wanted.iter().copied().filter(|id| !present.contains(id)));

        let base = key.service_key(0);
        for (index, id) in slots.iter().enumerate() {
            if previous_slots.get(index) != Some(id) {
                puts.push(MapOp::PutService(
                    ServiceKey {
                        slot: index as u16 + 1,
                        ..base
                    },
                    ServiceValue {
                        backend_id: *id,
                        rev_nat_id,
                        ..ServiceValue::default()
                    },
                ));
            }
        }
        let header = ServiceValue {
            backend_id: 0,
            count: slots.len() as u16,
            rev_nat_id,
            flags: frontend.flags,
            _pad: 0,
            affinity_timeout_s: frontend.affinity_timeout_s,
        };
        let maglev_before = previous_header.is_some_and(|h| h.flags & service_flags::MAGLEV != 0);
        if header.flags & service_flags::MAGLEV != 0 && !slots.is_empty() {
            if !maglev_before || previous_slots != slots {
                // Before the header: a reader that sees the flag finds the table.
                puts.push(MapOp::PutMaglev(rev_nat_id, self.maglev_table(&slots)?));
            }
        } else if maglev_before && previous_slots.len() + slots.len() > 0 {
            deletes.push(MapOp::DeleteMaglev(rev_nat_id));
        }
        if previous_header != Some(header) {
            headers.push(MapOp::PutService(base, header));
        }
        for slot in slots.len()..previous_slots.len() {
            deletes.push(MapOp::DeleteService(ServiceKey {
                slot: slot as u16 + 1,
                ..base
            }));
        }
        // References: this frontend now holds `slots`; it held `previous_slots`.
        let old_set: HashSet<u32> = previous_slots.iter().copied().collect();
        for id in previous_slots.iter().filter(|id| !wanted_set.contains(id)) {
            deletes.push(MapOp::ForgetAffinity {
                rev_nat_id,
                backend_id: *id,
            });
            if let Some(identity) = self.identity_of(*id) {
                released.push(identity);
            }
        }
        // Newly referenced ids were counted by `acquire_backend`; ids kept were counted twice.
        for id in slots.iter().filter(|id| old_set.contains(id)) {
            if let Some(identity) = self.identity_of(*id) {
                released.push(identity);
            }
        }
        self.frontends.insert(
            key,
            FrontendEntry {
                owner: Some(service.to_owned()),
                header,
                slots,
            },
        );
        Ok(())
    }

    fn remove_frontend(
        &mut self,
        key: FrontendKey,
        deletes: &mut Vec<MapOp>,
        released: &mut Vec<BackendIdentity>,
    ) {
        let Some(entry) = self.frontends.remove(&key) else {
            return;
        };
        let base = key.service_key(0);
        // Header first: from then on no reader walks the slots.
        deletes.push(MapOp::DeleteService(base));
        if entry.header.flags & service_flags::MAGLEV != 0 && !entry.slots.is_empty() {
            deletes.push(MapOp::DeleteMaglev(entry.header.rev_nat_id));
        }
        for (index, id) in entry.slots.iter().enumerate() {
            deletes.push(MapOp::DeleteService(ServiceKey {
                slot: index as u16 + 1,
                ..base
            }));
            deletes.push(MapOp::ForgetAffinity {
                rev_nat_id: entry.header.rev_nat_id,
                backend_id: *id,
            });
            if let Some(identity) = self.identity_of(*id) {
                released.push(identity);
            }
        }
        let identity = RevNatIdentity::from(&key);
        if let Some((id, users)) = self.rev_nat.get_mut(&identity) {
            *users -= 1;
            if *users == 0 {
                let id = *id;
                self.rev_nat.remove(&identity);
                self.free_rev_nat_ids.push(id);
                deletes.push(MapOp::DeleteRevNat(u32::from(id)));
            }
        }
    }

    fn acquire_rev_nat(
        &mut self,
        key: &FrontendKey,
        puts: &mut Vec<MapOp>,
    ) -> Result<u16, StateError> {
        let identity = RevNatIdentity::from(key);
        if let Some((id, users)) = self.rev_nat.get_mut(&identity) {
            *users += 1;
            return Ok(*id);
        }
        let id = match self.free_rev_nat_ids.pop() {
            Some(id) => id,
            None => {
                if self.next_rev_nat_id == u16::MAX {
                    return Err(StateError::RevNatIdsExhausted);
                }
                let id = self.next_rev_nat_id;
                self.next_rev_nat_id += 1;
                id
            }
        };
        self.rev_nat.insert(identity, (id, 1));
        puts.push(MapOp::PutRevNat(
            u32::from(id),
            RevNat {
                address_be: u32::from(key.address).to_be(),
                port_be: key.port.to_be(),
                _pad: 0,
            },
        ));
        Ok(id)
    }

    /// Returns the backend's id, creating or refreshing its entry, and counts one reference.
    fn acquire_backend(&mut self, backend: &BackendAddr, puts: &mut Vec<MapOp>) -> u32 {
        let value = Backend {
            address_be: u32::from(backend.address).to_be(),
            port_be: backend.port.to_be(),
            proto: backend.proto,
            state: backend.state,
            flags: if backend.local {
                backend_flags::LOCAL
            } else {
                0
            },
            _pad: [0; 3],
        };
        let identity = BackendIdentity::from(backend);
        if let Some(entry) = self.backends.get_mut(&identity) {
            entry.refs += 1;
            if entry.value != value {
                entry.value = value;
                puts.push(MapOp::PutBackend(entry.id, value));
            }
            return entry.id;
        }
        let id = self.free_backend_ids.pop().unwrap_or_else(|| {
            let id = self.next_backend_id;
            self.next_backend_id += 1;
            id
        });
        self.backends
            .insert(identity, BackendEntry { id, value, refs: 1 });
        self.backend_by_id.insert(id, identity);
        puts.push(MapOp::PutBackend(id, value));
        id
    }

    /// The Maglev table over `slots`: each backend hashed by its address, so its preferences do
    /// not depend on its id or on the other backends.
    fn maglev_table(&self, slots: &[u32]) -> Result<Vec<u32>, StateError> {
        let names: Vec<(u32, String)> = slots
            .iter()
            .map(|id| {
                let name = self.identity_of(*id).map_or_else(
                    || format!("#{id}"),
                    |b| format!("{}:{}/{}", b.address, b.port, b.proto),
                );
                (*id, name)
            })
            .collect();
        let backends: Vec<MaglevBackend<'_>> = names
            .iter()
            .map(|(id, name)| MaglevBackend { id: *id, name })
            .collect();
        Ok(maglev::table(&backends, MAGLEV_TABLE_SIZE)?)
    }

    fn identity_of(&self, id: u32) -> Option<BackendIdentity> {
        self.backend_by_id.get(&id).copied()
    }

    /// Drops one reference per listed backend; deletes those left unreferenced.
    fn release(&mut self, released: Vec<BackendIdentity>) -> Vec<MapOp> {
        let mut ops = Vec::new();
        for identity in released {
            let Some(entry) = self.backends.get_mut(&identity) else {
                continue;
            };
            entry.refs = entry.refs.saturating_sub(1);
            if entry.refs == 0 {
                let id = entry.id;
                self.backends.remove(&identity);
                self.backend_by_id.remove(&id);
                self.free_backend_ids.push(id);
                ops.push(MapOp::DeleteBackend(id));
            }
        }
        ops
    }
}

#[cfg(test)]
mod tests {
    use keelson_ebpf_common::{backend_state, proto, scope, service_flags};

    use super::*;

    fn key(last: u8) -> FrontendKey {
        FrontendKey {
            address: Ipv4Addr::new(10, 96, 0, last),
            port: 80,
            proto: proto::TCP,
            scope: scope::INTERNAL,
        }
    }

    fn backend(last: u8) -> BackendAddr {
        BackendAddr {
            address: Ipv4Addr::new(10, 244, 0, last),
            port: 8080,
            proto: proto::TCP,
            state: backend_state::ACTIVE,
            local: true,
        }
    }

    fn frontend(vip: u8, backends: &[u8]) -> Frontend {
        Frontend {
            key: key(vip),
            flags: 0,
            affinity_timeout_s: 0,
            backends: backends.iter().map(|b| backend(*b)).collect(),
        }
    }

    /// Applies ops to an in-memory copy of the three maps, checking the ordering invariant on
    /// the way: a slot never points at a backend that is not (yet / any more) in the map.
    #[derive(Default, Debug)]
    struct FakeMaps {
        services: BTreeMap<ServiceKey, ServiceValue>,
        backends: BTreeMap<u32, Backend>,
        rev_nat: BTreeMap<u32, RevNat>,
        maglev: BTreeMap<u16, Vec<u32>>,
    }

    impl FakeMaps {
        fn apply(&mut self, ops: &[MapOp]) {
            for op in ops {
                match op {
                    MapOp::PutBackend(id, b) => {
                        self.backends.insert(*id, *b);
                    }
                    MapOp::PutRevNat(id, r) => {
                        self.rev_nat.insert(*id, *r);
                    }
                    MapOp::PutService(k, v) => {
                        self.services.insert(*k, *v);
                    }
                    MapOp::DeleteService(k) => {
                        self.services.remove(k);
                    }
                    MapOp::DeleteBackend(id) => {
                        self.backends.remove(id);
                    }
                    MapOp::DeleteRevNat(id) => {
                        self.rev_nat.remove(id);
                    }
                    MapOp::PutMaglev(id, table) => {
                        assert_eq!(table.len(), MAGLEV_TABLE_SIZE as usize);
                        for backend in table {
                            assert!(self.backends.contains_key(backend), "maglev before backend");
                        }
                        self.maglev.insert(*id, table.clone());
                    }
                    MapOp::DeleteMaglev(id) => {
                        self.maglev.remove(id);
                    }
                    MapOp::ForgetAffinity { .. } => {}
                }
                self.check_consistent(op);
            }
        }

        fn check_consistent(&self, after: &MapOp) {
            for (k, v) in &self.services {
                if k.slot == 0 {
                    for slot in 1..=v.count {
                        let slot_key = ServiceKey { slot, ..*k };
                        // Slots beyond a shrinking count may lag; slots within it must resolve.
                        if let Some(s) = self.services.get(&slot_key) {
                            assert!(
                                self.backends.contains_key(&s.backend_id),
                                "after {after:?}: slot {slot} of {k:?} points at missing backend {}",
                                s.backend_id
                            );
                        }
                    }
                    assert!(
                        self.rev_nat.contains_key(&u32::from(v.rev_nat_id)),
                        "after {after:?}"
                    );
                }
            }
        }

        /// Backends of a frontend in slot order, as addresses' last octets.
        fn slots(&self, vip: u8) -> Vec<u8> {
            let header = self.header(vip).expect("header");
            (1..=header.count)
                .map(|slot| {
                    let k = ServiceKey {
                        slot,
                        ..service_key(vip)
                    };
                    let id = self.services[&k].backend_id;
                    Ipv4Addr::from(u32::from_be(self.backends[&id].address_be)).octets()[3]
                })
                .collect()
        }

        fn header(&self, vip: u8) -> Option<ServiceValue> {
            self.services.get(&service_key(vip)).copied()
        }
    }

    fn service_key(vip: u8) -> ServiceKey {
        ServiceKey {
            address_be: u32::from(Ipv4Addr::new(10, 96, 0, vip)).to_be(),
            port_be: 80u16.to_be(),
            proto: proto::TCP,
            scope: scope::INTERNAL,
            slot: 0,
            _pad: 0,
        }
    }

    #[test]
    fn first_update_writes_backends_before_slots_before_the_header() {
        let mut state = LbState::new();
        let mut maps = FakeMaps::default();
        let ops = state
            .update("ns/a", vec![frontend(1, &[1, 2, 3])])
            .expect("update");
        maps.apply(&ops);
        assert_eq!(maps.slots(1), [1, 2, 3]);
        assert_eq!(maps.backends.len(), 3);
        assert_eq!(maps.rev_nat.len(), 1);
        // 3 backends + 1 rev-NAT + 3 slots + 1 header.
        assert_eq!(ops.len(), 8);
        assert!(matches!(ops.last(), Some(MapOp::PutService(k, _)) if k.slot == 0));
    }

    #[test]
    fn the_same_state_again_writes_nothing() {
        let mut state = LbState::new();
        state
            .update("ns/a", vec![frontend(1, &[1, 2, 3])])
            .expect("update");
        let ops = state
            .update("ns/a", vec![frontend(1, &[3, 2, 1])])
            .expect("update");
        assert_eq!(ops, vec![]);
    }

    #[test]
    fn one_endpoint_change_is_a_handful_of_writes_and_survivors_keep_their_slots() {
        let mut state = LbState::new();
        let mut maps = FakeMaps::default();
        let all: Vec<u8> = (1..=100).collect();
        maps.apply(
            &state
                .update("ns/a", vec![frontend(1, &all)])
                .expect("update"),
        );
        let before = maps.slots(1);

        // Remove backend 10 (slot 10): the last slot's backend moves into the hole.
        let without: Vec<u8> = all.iter().copied().filter(|b| *b != 10).collect();
        let ops = state
            .update("ns/a", vec![frontend(1, &without)])
            .expect("update");
        assert!(ops.len() <= 5, "{ops:?}");
        maps.apply(&ops);
        let after = maps.slots(1);
        assert_eq!(after.len(), 99);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        assert_eq!(moved, 1, "only the hole is refilled");
        assert!(!after.contains(&10));
        assert!(
            !maps
                .backends
                .values()
                .any(|b| b.address_be == u32::from(Ipv4Addr::new(10, 244, 0, 10)).to_be())
        );

        // Add one: backend, slot, header.
        let mut more = without.clone();
        more.push(200);
        let ops = state
            .update("ns/a", vec![frontend(1, &more)])
            .expect("update");
        assert_eq!(ops.len(), 3, "{ops:?}");
        maps.apply(&ops);
        assert_eq!(maps.slots(1).len(), 100);
    }

    #[test]
    fn shared_backends_live_until_the_last_frontend_lets_go() {
        let mut state = LbState::new();
        let mut maps = FakeMaps::default();
        maps.apply(&state.update("ns/a", vec![frontend(1, &[1, 2])]).expect("a"));
        maps.apply(&state.update("ns/b", vec![frontend(2, &[2, 3])]).expect("b"));
        assert_eq!(maps.backends.len(), 3);
        maps.apply(&state.update("ns/a", vec![]).expect("remove a"));
        assert_eq!(maps.header(1), None);
        assert_eq!(maps.backends.len(), 2, "backend 2 is still used by b");
        assert_eq!(maps.slots(2), [2, 3]);
        assert_eq!(maps.rev_nat.len(), 1);
        maps.apply(&state.update("ns/b", vec![]).expect("remove b"));
        assert!(maps.services.is_empty() && maps.backends.is_empty() && maps.rev_nat.is_empty());
    }

    #[test]
    fn a_frontend_without_backends_is_a_header_with_count_zero() {
        let mut state = LbState::new();
        let mut maps = FakeMaps::default();
        maps.apply(&state.update("ns/a", vec![frontend(1, &[1])]).expect("a"));
        maps.apply(&state.update("ns/a", vec![frontend(1, &[])]).expect("a"));
        assert_eq!(maps.header(1).map(|h| h.count), Some(0));
        assert_eq!(maps.services.len(), 1);
        assert!(maps.backends.is_empty());
    }

    #[test]
    fn adopting_pinned_maps_keeps_ids_and_drops_what_no_service_claims() {
        let mut state = LbState::new();
        let mut maps = FakeMaps::default();
        maps.apply(&state.update("ns/a", vec![frontend(1, &[1, 2])]).expect("a"));
        maps.apply(&state.update("ns/b", vec![frontend(2, &[3])]).expect("b"));

        let mut adopted = LbState::adopt(
            maps.services.clone(),
            maps.backends.clone(),
            maps.rev_nat.clone(),
        );
        assert_eq!(adopted.frontend_count(), 2);
        // The agent sees Service a unchanged, and Service b no more.
        let ops = adopted
            .update("ns/a", vec![frontend(1, &[2, 1])])
            .expect("a");
        assert_eq!(ops, vec![], "same state after restart: no writes");
        let ops = adopted.finish_initial_sync();
        maps.apply(&ops);
        assert_eq!(maps.header(2), None);
        assert_eq!(maps.slots(1), [1, 2]);
        assert_eq!(maps.backends.len(), 2);
        // New ids do not collide with adopted ones.
        maps.apply(&adopted.update("ns/c", vec![frontend(3, &[9])]).expect("c"));
        assert_eq!(maps.backends.len(), 3);
        assert_eq!(maps.rev_nat.len(), 2);
    }

    #[test]
    fn external_frontends_get_a_maglev_table_that_follows_their_backends() {
        let mut state = LbState::new();
        let mut maps = FakeMaps::default();
        let mut external = frontend(1, &[1, 2, 3]);
        external.flags = service_flags::MAGLEV;
        maps.apply(&state.update("ns/a", vec![external.clone()]).expect("a"));
        let rev_nat_id = maps.header(1).expect("header").rev_nat_id;
        let table = maps.maglev[&rev_nat_id].clone();
        let ids: std::collections::BTreeSet<u32> = table.iter().copied().collect();
        assert_eq!(ids.len(), 3, "every backend owns entries");

        // One backend leaves: only entries it owned change (Maglev's minimal disruption).
        external.backends.pop();
        maps.apply(&state.update("ns/a", vec![external.clone()]).expect("a"));
        let after = &maps.maglev[&rev_nat_id];
        let gone = *ids
            .iter()
            .find(|id| !after.contains(id))
            .expect("one id gone");
        let moved = table
            .iter()
            .zip(after)
            .filter(|(before, now)| **before != gone && before != now)
            .count();
        assert!(
            moved < table.len() / 20,
            "{moved} entries of remaining backends moved"
        );

        // No backends: the table goes; the frontend goes: nothing remains.
        external.backends.clear();
        maps.apply(&state.update("ns/a", vec![external]).expect("a"));
        assert!(maps.maglev.is_empty());
        maps.apply(&state.update("ns/a", vec![]).expect("a"));
        assert!(maps.services.is_empty() && maps.maglev.is_empty());
    }

    #[test]
    fn backend_state_changes_are_written_in_place() {
        let mut state = LbState::new();
        state.update("ns/a", vec![frontend(1, &[1])]).expect("a");
        let mut draining = frontend(1, &[1]);
        draining.backends[0].state = backend_state::TERMINATING;
        let ops = state.update("ns/a", vec![draining]).expect("a");
        assert!(
            matches!(ops.as_slice(), [MapOp::PutBackend(_, b)] if b.state == backend_state::TERMINATING),
            "{ops:?}"
        );
    }
}

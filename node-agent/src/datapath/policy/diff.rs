//! Desired map contents against what the maps hold: the smallest set of writes, ordered so
//! that no allowed flow is cut while the maps change (make before break).
//!
//! Order: new and changed POLICY entries first, then IPCACHE, then ENDPOINTS; then removals in
//! the reverse order (ENDPOINTS, IPCACHE, POLICY). A pod that becomes isolated gets its allow
//! entries before its enforcement flag; a pod that changes identity finds the entries of its
//! new identity before its IPCACHE entry names it, and those of the old one go last. Between
//! the first and last write the maps allow the union of the old and new policy, never less.
//!
//! Cost: one pass over each map's desired and previous entries (hash lookups); the writes are
//! exactly the entries that differ.

use std::{collections::BTreeMap, net::Ipv4Addr};

use keelson_ebpf_common::EndpointPolicy;

use super::{
    compile::{Desired, PolicyKey},
    identity::IpcacheKey,
};

/// One map write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyOp {
    /// Insert or replace a POLICY entry (value: rule id).
    PutPolicy(PolicyKey, u32),
    /// Insert or replace an IPCACHE entry (value: identity).
    PutIpcache(IpcacheKey, u32),
    /// Insert or replace an ENDPOINTS entry.
    PutEndpoint(Ipv4Addr, EndpointPolicy),
    /// Remove an ENDPOINTS entry.
    DeleteEndpoint(Ipv4Addr),
    /// Remove an IPCACHE entry.
    DeleteIpcache(IpcacheKey),
    /// Remove a POLICY entry.
    DeletePolicy(PolicyKey),
}

fn changed<'a, K: Ord + Copy + 'a, V: PartialEq + Copy + 'a>(
    desired: impl Iterator<Item = (&'a K, &'a V)>,
    previous: impl Fn(&K) -> Option<V>,
) -> Vec<(K, V)> {
    let mut out: Vec<(K, V)> = desired
        .filter(|(k, v)| previous(k) != Some(**v))
        .map(|(k, v)| (*k, *v))
        .collect();
    out.sort_by_key(|a| a.0);
    out
}

fn gone<'a, K: Ord + Copy + 'a>(
    previous: impl Iterator<Item = &'a K>,
    desired: impl Fn(&K) -> bool,
) -> Vec<K> {
    let mut out: Vec<K> = previous.filter(|k| !desired(k)).copied().collect();
    out.sort();
    out
}

/// The writes that turn `previous` into `desired`, in a safe order (see the module doc).
pub fn diff(previous: &Desired, desired: &Desired) -> Vec<PolicyOp> {
    let mut ops = Vec::new();
    ops.extend(
        changed(desired.policy.iter(), |k| previous.policy.get(k).copied())
            .into_iter()
            .map(|(k, v)| PolicyOp::PutPolicy(k, v)),
    );
    ops.extend(
        changed(desired.ipcache.iter(), |k| previous.ipcache.get(k).copied())
            .into_iter()
            .map(|(k, v)| PolicyOp::PutIpcache(k, v)),
    );
    ops.extend(
        changed(desired.endpoints.iter(), |k| {
            previous.endpoints.get(k).copied()
        })
        .into_iter()
        .map(|(k, v)| PolicyOp::PutEndpoint(k, v)),
    );
    ops.extend(
        gone(previous.endpoints.keys(), |k| {
            desired.endpoints.contains_key(k)
        })
        .into_iter()
        .map(PolicyOp::DeleteEndpoint),
    );
    ops.extend(
        gone(previous.ipcache.keys(), |k| desired.ipcache.contains_key(k))
            .into_iter()
            .map(PolicyOp::DeleteIpcache),
    );
    ops.extend(
        gone(previous.policy.keys(), |k| desired.policy.contains_key(k))
            .into_iter()
            .map(PolicyOp::DeletePolicy),
    );
    ops
}

/// Applies `ops` to an in-memory copy of the maps (what [`diff`] was computed against).
pub fn apply_to(state: &mut Desired, ops: &[PolicyOp]) {
    for op in ops {
        match *op {
            PolicyOp::PutPolicy(k, v) => {
                state.policy.insert(k, v);
            }
            PolicyOp::PutIpcache(k, v) => {
                state.ipcache.insert(k, v);
            }
            PolicyOp::PutEndpoint(k, v) => {
                state.endpoints.insert(k, v);
            }
            PolicyOp::DeleteEndpoint(k) => {
                state.endpoints.remove(&k);
            }
            PolicyOp::DeleteIpcache(k) => {
                state.ipcache.remove(&k);
            }
            PolicyOp::DeletePolicy(k) => {
                state.policy.remove(&k);
            }
        }
    }
}

/// Counts of each kind of write, for logs and tests.
pub fn tally(ops: &[PolicyOp]) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for op in ops {
        let kind = match op {
            PolicyOp::PutPolicy(..) => "put_policy",
            PolicyOp::PutIpcache(..) => "put_ipcache",
            PolicyOp::PutEndpoint(..) => "put_endpoint",
            PolicyOp::DeleteEndpoint(..) => "delete_endpoint",
            PolicyOp::DeleteIpcache(..) => "delete_ipcache",
            PolicyOp::DeletePolicy(..) => "delete_policy",
        };
        *out.entry(kind).or_default() += 1;
    }
    out
}

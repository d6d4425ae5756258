//! The NetworkPolicy maps of the loaded datapath, typed, for whoever writes them (the policy
//! compiler's IO) and for inspection. The programs that read them are `tc_from_pod`,
//! `tc_from_netdev` and `tc_to_pod` (see `ebpf/programs/src/bin/keelson-lb/policy.rs`); they
//! are created and pinned with the load balancer's maps by [`LoadBalancer::load`].

use aya::maps::{HashMap, LpmTrie, Map, MapData};
use keelson_ebpf_common::{
    EndpointPolicy, IdentityValue, PolicyCtKey, PolicyCtValue, PolicyEntry, PolicyKeyData, maps,
};

use super::LoadBalancer;
use crate::datapath::DatapathError;

/// The four NetworkPolicy maps, borrowed from a [`LoadBalancer`] at once.
pub struct PolicyMaps<'a> {
    /// [`maps::IPCACHE`]: address (LPM key data: `u32`, network order) -> identity.
    pub ipcache: LpmTrie<&'a mut MapData, u32, IdentityValue>,
    /// [`maps::ENDPOINTS`]: pod address (`u32`, network order) -> enforcement flags.
    pub endpoints: HashMap<&'a mut MapData, u32, EndpointPolicy>,
    /// [`maps::POLICY`]: (endpoint, identity, direction, protocol, port) -> allow.
    pub policy: LpmTrie<&'a mut MapData, PolicyKeyData, PolicyEntry>,
    /// [`maps::POLICY_CT`]: the flows the programs track (LRU; the programs write it).
    pub conntrack: HashMap<&'a mut MapData, PolicyCtKey, PolicyCtValue>,
}

impl std::fmt::Debug for PolicyMaps<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyMaps").finish_non_exhaustive()
    }
}

impl LoadBalancer {
    /// The NetworkPolicy maps, typed. Writing them takes effect at once for new flows (flows
    /// already tracked keep going; see the map docs in `keelson-ebpf-common`).
    pub fn policy_maps(&mut self) -> Result<PolicyMaps<'_>, DatapathError> {
        let [ipcache, endpoints, policy, conntrack] = self.ebpf.maps_disjoint_mut([
            maps::IPCACHE,
            maps::ENDPOINTS,
            maps::POLICY,
            maps::POLICY_CT,
        ]);
        Ok(PolicyMaps {
            ipcache: typed_map(ipcache, maps::IPCACHE)?,
            endpoints: typed_map(endpoints, maps::ENDPOINTS)?,
            policy: typed_map(policy, maps::POLICY)?,
            conntrack: typed_map(conntrack, maps::POLICY_CT)?,
        })
    }
}

fn typed_map<'a, T>(map: Option<&'a mut Map>, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<&'a mut Map, Error = aya::maps::MapError>,
{
    let map = map.ok_or(DatapathError::MissingMap { map: name })?;
    T::try_from(map).map_err(|source| DatapathError::Map {
        map: name,
        source: Box::new(source),
    })
}

//! The IO: [`PolicyMaps`] is the three maps as the agent writes them (insert and remove per
//! map, and reading everything back); [`PinnedPolicyMaps`] is the kernel's, opened from their
//! pins (or created standalone), [`MemoryMaps`] an in-memory stand-in. [`PolicyState`] holds
//! the compiler and what the maps hold, and turns a model into the writes that differ.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::maps::{HashMap, LpmTrie, Map, MapData, MapError, lpm_trie::Key as LpmKey};
use keelson_ebpf_common::{
    EndpointPolicy, IdentityValue, PolicyEntry, PolicyKeyData, capacity, maps,
};

use k8s_openapi::api::networking::v1::NetworkPolicy;

use super::{
    compile::{Compiled, Desired, PolicyCompiler, PolicyKey},
    diff::{PolicyOp, apply_to, diff},
    identity::IpcacheKey,
    incremental::EndpointUpdate,
    model::PolicyModel,
};

/// What can go wrong writing the policy maps.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A pinned map could not be opened (not pinned yet: the eBPF object that declares it was
    /// not loaded), or has another type or layout than this agent's.
    #[error("opening the pinned map {map} at {path}")]
    Open {
        /// The map's name.
        map: &'static str,
        /// Its pin.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<MapError>,
    },
    /// Creating a standalone map failed.
    #[error("creating map {map}")]
    Create {
        /// The map's name.
        map: &'static str,
        /// Why.
        #[source]
        source: Box<MapError>,
    },
    /// Pinning a map failed.
    #[error("pinning map {map}")]
    Pin {
        /// The map's name.
        map: &'static str,
        /// Why.
        #[source]
        source: Box<aya::pin::PinError>,
    },
    /// A read, insert or remove failed (a full map: `E2BIG`/`ENOSPC` in the source).
    #[error("map {map}: {operation} failed")]
    Map {
        /// The map's name.
        map: &'static str,
        /// `insert`, `remove` or `read`.
        operation: &'static str,
        /// Why.
        #[source]
        source: Box<MapError>,
    },
}

/// The three policy maps, as the agent writes them. Removing an absent entry is no error.
pub trait PolicyMaps {
    /// Sets the identity of `key`'s addresses.
    fn put_ipcache(&mut self, key: IpcacheKey, identity: u32) -> Result<(), PolicyError>;
    /// Removes an IPCACHE entry.
    fn remove_ipcache(&mut self, key: IpcacheKey) -> Result<(), PolicyError>;
    /// Sets a local pod's enforcement flags and identity.
    fn put_endpoint(&mut self, pod: Ipv4Addr, value: EndpointPolicy) -> Result<(), PolicyError>;
    /// Removes a local pod's ENDPOINTS entry (it is no longer policed).
    fn remove_endpoint(&mut self, pod: Ipv4Addr) -> Result<(), PolicyError>;
    /// Sets an allow entry with the rule id that allows it.
    fn put_policy(&mut self, key: PolicyKey, rule_id: u32) -> Result<(), PolicyError>;
    /// Removes an allow entry.
    fn remove_policy(&mut self, key: PolicyKey) -> Result<(), PolicyError>;
    /// Everything the maps hold.
    fn contents(&self) -> Result<Desired, PolicyError>;
}

/// Performs `ops` in order; stops at the first failure.
pub fn apply(maps: &mut impl PolicyMaps, ops: &[PolicyOp]) -> Result<(), PolicyError> {
    for op in ops {
        match *op {
            PolicyOp::PutPolicy(k, v) => maps.put_policy(k, v)?,
            PolicyOp::PutIpcache(k, v) => maps.put_ipcache(k, v)?,
            PolicyOp::PutEndpoint(k, v) => maps.put_endpoint(k, v)?,
            PolicyOp::DeleteEndpoint(k) => maps.remove_endpoint(k)?,
            PolicyOp::DeleteIpcache(k) => maps.remove_ipcache(k)?,
            PolicyOp::DeletePolicy(k) => maps.remove_policy(k)?,
        }
    }
    Ok(())
}

/// The maps in memory (tests, and the simulator of the datapath's lookups).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryMaps {
    /// The contents.
    pub contents: Desired,
    /// Writes performed (puts and removes).
    pub writes: usize,
}

impl PolicyMaps for MemoryMaps {
    fn put_ipcache(&mut self, key: IpcacheKey, identity: u32) -> Result<(), PolicyError> {
        self.writes += 1;
        self.contents.ipcache.insert(key, identity);
        Ok(())
    }
    fn remove_ipcache(&mut self, key: IpcacheKey) -> Result<(), PolicyError> {
        self.writes += 1;
        self.contents.ipcache.remove(&key);
        Ok(())
    }
    fn put_endpoint(&mut self, pod: Ipv4Addr, value: EndpointPolicy) -> Result<(), PolicyError> {
        self.writes += 1;
        self.contents.endpoints.insert(pod, value);
        Ok(())
    }
    fn remove_endpoint(&mut self, pod: Ipv4Addr) -> Result<(), PolicyError> {
        self.writes += 1;
        self.contents.endpoints.remove(&pod);
        Ok(())
    }
    fn put_policy(&mut self, key: PolicyKey, rule_id: u32) -> Result<(), PolicyError> {
        self.writes += 1;
        self.contents.policy.insert(key, rule_id);
        Ok(())
    }
    fn remove_policy(&mut self, key: PolicyKey) -> Result<(), PolicyError> {
        self.writes += 1;
        self.contents.policy.remove(&key);
        Ok(())
    }
    fn contents(&self) -> Result<Desired, PolicyError> {
        Ok(self.contents.clone())
    }
}

/// The kernel's policy maps.
#[derive(Debug)]
pub struct PinnedPolicyMaps {
    ipcache: LpmTrie<MapData, u32, IdentityValue>,
    endpoints: HashMap<MapData, u32, EndpointPolicy>,
    policy: LpmTrie<MapData, PolicyKeyData, PolicyEntry>,
}

fn ignore_missing(result: Result<(), MapError>) -> Result<(), MapError> {
    match result {
        Err(MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

fn map_error(map: &'static str, operation: &'static str) -> impl Fn(MapError) -> PolicyError {
    move |source| PolicyError::Map {
        map,
        operation,
        source: Box::new(source),
    }
}

fn open<T: TryFrom<Map, Error = MapError>>(
    pin_dir: &Path,
    map: &'static str,
) -> Result<T, PolicyError> {
    let path = pin_dir.join(map);
    let error = |source| PolicyError::Open {
        map,
        path: path.clone(),
        source: Box::new(source),
    };
    let data = MapData::from_pin(&path).map_err(error)?;
    T::try_from(Map::from_map_data(data).map_err(error)?).map_err(error)
}

impl PinnedPolicyMaps {
    /// Opens [`maps::IPCACHE`], [`maps::ENDPOINTS`] and [`maps::POLICY`] pinned in `pin_dir`
    /// (`/sys/fs/bpf/keelson/<node>`), checking their types and key/value sizes.
    pub fn open(pin_dir: &Path) -> Result<Self, PolicyError> {
        Ok(Self {
            ipcache: open(pin_dir, maps::IPCACHE)?,
            endpoints: open(pin_dir, maps::ENDPOINTS)?,
            policy: open(pin_dir, maps::POLICY)?,
        })
    }

    /// Creates the three maps standalone (not pinned, not shared with any program) with the
    /// default capacities: for tests of the kernel's lookups.
    pub fn create() -> Result<Self, PolicyError> {
        // LPM tries must be created with BPF_F_NO_PREALLOC.
        const NO_PREALLOC: u32 = 1;
        let create = |map| {
            move |source| PolicyError::Create {
                map,
                source: Box::new(source),
            }
        };
        Ok(Self {
            ipcache: LpmTrie::create(capacity::IPCACHE, NO_PREALLOC)
                .map_err(create(maps::IPCACHE))?,
            endpoints: HashMap::create(capacity::ENDPOINTS, 0).map_err(create(maps::ENDPOINTS))?,
            policy: LpmTrie::create(capacity::POLICY, NO_PREALLOC).map_err(create(maps::POLICY))?,
        })
    }

    /// Pins the three maps in `pin_dir` under their names, where [`Self::open`] finds them
    /// (for maps made by [`Self::create`], in tests and tools; the pins keep them alive). The
    /// directory must exist on a bpffs.
    pub fn pin(self, pin_dir: &Path) -> Result<(), PolicyError> {
        let error = |map| {
            move |source: aya::pin::PinError| PolicyError::Pin {
                map,
                source: Box::new(source),
            }
        };
        self.ipcache
            .pin(pin_dir.join(maps::IPCACHE))
            .map_err(error(maps::IPCACHE))?;
        self.endpoints
            .pin(pin_dir.join(maps::ENDPOINTS))
            .map_err(error(maps::ENDPOINTS))?;
        self.policy
            .pin(pin_dir.join(maps::POLICY))
            .map_err(error(maps::POLICY))
    }

    /// The kernel's answer for `address` (longest prefix match), if any entry covers it.
    pub fn lookup_ipcache(&self, address: Ipv4Addr) -> Result<Option<u32>, PolicyError> {
        let key = LpmKey::new(32, u32::from_ne_bytes(address.octets()));
        match self.ipcache.get(&key, 0) {
            Ok(v) => Ok(Some(v.identity)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_error(maps::IPCACHE, "read")(e)),
        }
    }

    /// The kernel's answer for a full POLICY key (longest prefix match): the rule id.
    pub fn lookup_policy(&self, data: PolicyKeyData) -> Result<Option<u32>, PolicyError> {
        let key = LpmKey::new(keelson_ebpf_common::POLICY_PREFIX_FULL, data);
        match self.policy.get(&key, 0) {
            Ok(v) => Ok(Some(v.rule_id)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_error(maps::POLICY, "read")(e)),
        }
    }
}

impl PolicyMaps for PinnedPolicyMaps {
    fn put_ipcache(&mut self, key: IpcacheKey, identity: u32) -> Result<(), PolicyError> {
        let k = LpmKey::new(
            u32::from(key.prefix),
            u32::from_ne_bytes(key.address.octets()),
        );
        let v = IdentityValue { identity, _pad: 0 };
        self.ipcache
            .insert(&k, v, 0)
            .map_err(map_error(maps::IPCACHE, "insert"))
    }
    fn remove_ipcache(&mut self, key: IpcacheKey) -> Result<(), PolicyError> {
        let k = LpmKey::new(
            u32::from(key.prefix),
            u32::from_ne_bytes(key.address.octets()),
        );
        ignore_missing(self.ipcache.remove(&k)).map_err(map_error(maps::IPCACHE, "remove"))
    }
    fn put_endpoint(&mut self, pod: Ipv4Addr, value: EndpointPolicy) -> Result<(), PolicyError> {
        self.endpoints
            .insert(u32::from_ne_bytes(pod.octets()), value, 0)
            .map_err(map_error(maps::ENDPOINTS, "insert"))
    }
    fn remove_endpoint(&mut self, pod: Ipv4Addr) -> Result<(), PolicyError> {
        ignore_missing(self.endpoints.remove(&u32::from_ne_bytes(pod.octets())))
            .map_err(map_error(maps::ENDPOINTS, "remove"))
    }
    fn put_policy(&mut self, key: PolicyKey, rule_id: u32) -> Result<(), PolicyError> {
        let v = PolicyEntry { rule_id, _pad: 0 };
        self.policy
            .insert(&LpmKey::new(key.prefix, key.data), v, 0)
            .map_err(map_error(maps::POLICY, "insert"))
    }
    fn remove_policy(&mut self, key: PolicyKey) -> Result<(), PolicyError> {
        ignore_missing(self.policy.remove(&LpmKey::new(key.prefix, key.data)))
            .map_err(map_error(maps::POLICY, "remove"))
    }
    fn contents(&self) -> Result<Desired, PolicyError> {
        let mut out = Desired::default();
        for entry in self.ipcache.iter() {
            let (k, v) = entry.map_err(map_error(maps::IPCACHE, "read"))?;
            let key = IpcacheKey {
                address: Ipv4Addr::from(k.data().to_ne_bytes()),
                prefix: k.prefix_len() as u8,
            };
            out.ipcache.insert(key, v.identity);
        }
        for entry in self.endpoints.iter() {
            let (k, v) = entry.map_err(map_error(maps::ENDPOINTS, "read"))?;
            out.endpoints.insert(Ipv4Addr::from(k.to_ne_bytes()), v);
        }
        for entry in self.policy.iter() {
            let (k, v) = entry.map_err(map_error(maps::POLICY, "read"))?;
            out.policy.insert(
                PolicyKey {
                    prefix: k.prefix_len(),
                    data: k.data(),
                },
                v.rule_id,
            );
        }
        Ok(out)
    }
}

/// What one [`PolicyState::sync`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyncReport {
    /// Map writes performed.
    pub writes: usize,
    /// Identities allocated.
    pub identities: usize,
    /// POLICY entries desired.
    pub policy_entries: usize,
    /// ENDPOINTS entries desired (policed local pods).
    pub endpoints: usize,
    /// IPCACHE entries desired.
    pub ipcache_entries: usize,
    /// Time the compile took.
    pub compile: Duration,
}

/// The compiler and what the maps hold.
#[derive(Debug, Default)]
pub struct PolicyState {
    compiler: PolicyCompiler,
    applied: Desired,
    /// Set after a failed write: the maps are read back before the next diff.
    stale: bool,
    last: Option<Compiled>,
}

impl PolicyState {
    /// Starts from what `maps` hold (an agent restart): the next sync writes only what changed
    /// since, and identities keep the numbers the maps give their addresses.
    pub fn adopt(maps: &impl PolicyMaps) -> Result<Self, PolicyError> {
        let applied = maps.contents()?;
        Ok(Self {
            compiler: PolicyCompiler::adopt(applied.ipcache.iter().map(|(k, v)| (*k, *v))),
            applied,
            stale: false,
            last: None,
        })
    }

    /// The last compile (identities and the rule table of the flow view).
    pub fn last(&self) -> Option<&Compiled> {
        self.last.as_ref()
    }

    /// Compiles `model` and writes what differs from the maps' contents.
    pub fn sync(
        &mut self,
        model: &PolicyModel,
        maps: &mut impl PolicyMaps,
    ) -> Result<SyncReport, PolicyError> {
        if self.stale {
            self.applied = maps.contents()?;
            self.stale = false;
        }
        let started = Instant::now();
        let compiled = self.compiler.compile(model);
        let compile = started.elapsed();
        let ops = diff(&self.applied, &compiled.desired);
        let report = SyncReport {
            writes: ops.len(),
            identities: compiled.identities.classes.len(),
            policy_entries: compiled.desired.policy.len(),
            endpoints: compiled.desired.endpoints.len(),
            ipcache_entries: compiled.desired.ipcache.len(),
            compile,
        };
        if let Err(error) = apply(maps, &ops) {
            self.stale = true;
            return Err(error);
        }
        apply_to(&mut self.applied, &ops);
        self.last = Some(compiled);
        Ok(report)
    }

    /// Applies the change of NetworkPolicy `namespace`/`name` to `policy` (`None`: deleted)
    /// by recompiling only the local pods it selects, and splitting the identity classes a new
    /// selector peer tells apart ([`PolicyCompiler::update_policy`]), and writes what differs
    /// for them. `Ok(None)`: the change needs a full [`Self::sync`] (no compile yet, maps to
    /// read back after a failed write, or a CIDR or egress named port no identity tells
    /// apart); nothing was written then.
    pub fn update_policy(
        &mut self,
        namespace: &str,
        name: &str,
        policy: Option<&NetworkPolicy>,
        maps: &mut impl PolicyMaps,
    ) -> Result<Option<(SyncReport, EndpointUpdate)>, PolicyError> {
        let Some(last) = self.last.as_mut().filter(|_| !self.stale) else {
            return Ok(None);
        };
        let started = Instant::now();
        let Ok(update) = self.compiler.update_policy(last, namespace, name, policy) else {
            return Ok(None);
        };
        let compile = started.elapsed();
        let touched: std::collections::HashSet<Ipv4Addr> =
            update.endpoints.iter().copied().collect();
        let previous = Desired {
            ipcache: update
                .desired
                .ipcache
                .keys()
                .filter_map(|k| self.applied.ipcache.get(k).map(|v| (*k, *v)))
                .collect(),
            endpoints: self
                .applied
                .endpoints
                .iter()
                .filter(|(ip, _)| touched.contains(ip))
                .map(|(ip, v)| (*ip, *v))
                .collect(),
            policy: self
                .applied
                .policy
                .iter()
                .filter(|(k, _)| touched.contains(&k.endpoint()))
                .map(|(k, v)| (*k, *v))
                .collect(),
        };
        let ops = diff(&previous, &update.desired);
        let report = SyncReport {
            writes: ops.len(),
            identities: last.identities.classes.len(),
            policy_entries: last.desired.policy.len(),
            endpoints: last.desired.endpoints.len(),
            ipcache_entries: last.desired.ipcache.len(),
            compile,
        };
        if let Err(error) = apply(maps, &ops) {
            self.stale = true;
            return Err(error);
        }
        apply_to(&mut self.applied, &ops);
        Ok(Some((report, update)))
    }
}

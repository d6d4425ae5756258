//! The service load balancer: kube-proxy's job, in eBPF.
//!
//! [`frontends`] turns a Service and its EndpointSlices into frontends (pure), [`LbState`] turns
//! frontend changes into the smallest set of map writes (pure), and [`LoadBalancer`] owns the
//! pinned maps and the programs, applies those writes and attaches the socket-LB hooks to a
//! cgroup.

mod backend_stats;
mod ct_gc;
mod frontends;
mod host_ports;
mod list;
mod pod_hook;
mod policy_maps;
mod snat_sources;
mod state;
mod uplink;
mod uplink_watch;

use std::{
    fs::File,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, LpmTrie, Map, MapData, PerCpuArray, PerCpuHashMap, lpm_trie::Key as LpmKey},
    programs::{
        CgroupAttachMode, CgroupSockAddr, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc,
    },
    util::KernelVersion,
};
use keelson_ebpf_common::{
    AffinityKey, AffinityValue, Backend, BackendStats, LocalPod, MAGLEV_TABLE_SIZE, MaglevTable,
    NodeRoute, RevNat, ServiceKey, ServiceValue, capacity, maps, metric,
};

pub use backend_stats::{
    BackendCounters, BackendOwner, backend_owners, backend_table, join_counters,
    read_backend_counters, sum_per_cpu,
};
pub use ct_gc::{
    ConntrackGc, CtTimeouts, Flow, FlowState, GcPlan, GcPolicy, GcReport, eviction_target,
    group_flows, monotonic_now_ns, partner_key, plan,
};
pub use frontends::{BackendAddr, Frontend, FrontendKey, NodeContext, frontends};
pub use host_ports::{HostPortMapping, HostPorts, host_port_frontends, host_port_mappings};
pub use list::{
    DatapathMetrics, ListedBackend, ListedFlow, ListedFrontend, list_conntrack, list_pinned,
    metrics_text,
};
pub use pod_hook::PodTc;
pub use policy_maps::PolicyMaps;
pub use snat_sources::snat_sources;
pub use state::{LbState, MapOp, ServiceId, StateError};
pub use uplink::{UplinkError, Uplinks, attach_uplinks, require_interfaces, resolve_uplinks};
pub use uplink_watch::{
    LinkSeen, LinkView, UplinkAction, UplinkWatch, UplinkWatchError, watch_uplinks,
};

use super::{DatapathError, program_mut};

/// Which per-packet program a TC hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcHook {
    /// Traffic from pods (host side of a pod's veth) or from another in-node network: frontends
    /// of the internal scope (ClusterIP and in-node NodePort use), the pod's egress policy.
    FromPod,
    /// Traffic from outside the node (the uplink): frontends of the external scope (NodePort,
    /// externalIPs, LoadBalancer IPs), Maglev backend choice.
    FromNetdev,
    /// Traffic the node routes into a pod (TC egress of the pod's node-side veth): the pod's
    /// ingress policy for what `FromPod`/`FromNetdev` did not already judge (the node's own
    /// packets, interfaces without keelson's programs).
    ToPod,
}

impl TcHook {
    /// Every hook, in the order the agent attaches them.
    pub const ALL: [Self; 3] = [Self::FromPod, Self::FromNetdev, Self::ToPod];

    /// The program's name in the object.
    pub const fn program(self) -> &'static str {
        match self {
            Self::FromPod => "tc_from_pod",
            Self::FromNetdev => "tc_from_netdev",
            Self::ToPod => "tc_to_pod",
        }
    }

    /// The TC hook of the interface the program runs at.
    pub const fn attach_type(self) -> TcAttachType {
        match self {
            Self::FromPod | Self::FromNetdev => TcAttachType::Ingress,
            Self::ToPod => TcAttachType::Egress,
        }
    }

    /// The hook's name as `tc` prints it (`ingress`, `egress`).
    pub const fn direction(self) -> &'static str {
        match self {
            Self::FromPod | Self::FromNetdev => "ingress",
            Self::ToPod => "egress",
        }
    }
}

/// Socket-LB programs and the cgroup hook each attaches to.
pub const SOCK_PROGRAMS: [&str; 4] = [
    "sock4_connect",
    "sock4_sendmsg",
    "sock4_recvmsg",
    "sock4_getpeername",
];

/// The embedded `keelson-lb` object.
pub fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/keelson-lb"))
}

/// Where the maps live and how big they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbConfig {
    /// Directory for pinned maps and links, e.g. `/sys/fs/bpf/keelson/<node>`. Must be on bpffs.
    pub pin_dir: PathBuf,
    /// Capacity of the services map (headers + backend slots).
    pub services: u32,
    /// Capacity of the backends map (and of the per-backend counters).
    pub backends: u32,
    /// Capacity of the socket reverse-NAT map.
    pub sock_rev_nat: u32,
    /// Capacity of the affinity map.
    pub affinity: u32,
    /// Capacity of the TC path's conntrack table (two entries per flow).
    pub ct: u32,
    /// How many external frontends may have a Maglev table.
    pub maglev: u32,
    /// Capacity of the NetworkPolicy conntrack table (one entry per flow and enforcement
    /// point; preallocated, as an LRU map is).
    pub policy_ct: u32,
}

impl LbConfig {
    /// Default capacities under `pin_dir`.
    pub fn new(pin_dir: impl Into<PathBuf>) -> Self {
        Self {
            pin_dir: pin_dir.into(),
            services: capacity::SERVICES,
            backends: capacity::BACKENDS,
            sock_rev_nat: capacity::SOCK_REV_NAT,
            affinity: capacity::AFFINITY,
            ct: capacity::CT,
            maglev: capacity::MAGLEV,
            policy_ct: capacity::POLICY_CT,
        }
    }
}

/// The loaded load balancer: programs in the kernel, maps pinned, state mirrored.
pub struct LoadBalancer {
    ebpf: Ebpf,
    state: LbState,
    pin_dir: PathBuf,
}

impl std::fmt::Debug for LoadBalancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadBalancer")
            .field("pin_dir", &self.pin_dir)
            .field("frontends", &self.state.frontend_count())
            .finish_non_exhaustive()
    }
}

impl LoadBalancer {
    /// Loads the programs and opens the maps pinned in `config.pin_dir`, creating and pinning
    /// those that do not exist. Existing maps are reused with their contents, and the agent's
    /// state is rebuilt from them: established connections and affinities survive a restart.
    pub fn load(config: &LbConfig) -> Result<Self, DatapathError> {
        super::memlock::ensure()?;
        ensure_bpffs(&config.pin_dir)?;
        std::fs::create_dir_all(&config.pin_dir).map_err(|source| DatapathError::Io {
            what: "creating the pin directory",
            path: config.pin_dir.clone(),
            source,
        })?;
        let paths: Vec<(&str, PathBuf)> = maps::PINNED
            .into_iter()
            .map(|name| (name, config.pin_dir.join(name)))
            .collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        loader
            .map_max_entries(maps::SERVICES, config.services)
            .map_max_entries(maps::BACKENDS, config.backends)
            .map_max_entries(maps::BACKEND_STATS, config.backends)
            .map_max_entries(maps::REV_NAT, config.backends.max(config.services / 4))
            .map_max_entries(maps::SOCK_REV_NAT, config.sock_rev_nat)
            .map_max_entries(maps::AFFINITY, config.affinity)
            .map_max_entries(maps::CT, config.ct)
            .map_max_entries(maps::MAGLEV, config.maglev)
            .map_max_entries(maps::POLICY_CT, config.policy_ct);
        let mut ebpf = loader
            .load(object())
            .map_err(|e| DatapathError::LoadObject(Box::new(e)))?;
        for name in SOCK_PROGRAMS {
            program_mut::<CgroupSockAddr>(&mut ebpf, name)?
                .load()
                .map_err(|source| DatapathError::LoadProgram {
                    program: name.to_owned(),
                    source: Box::new(source),
                })?;
        }
        for hook in TcHook::ALL {
            program_mut::<SchedClassifier>(&mut ebpf, hook.program())?
                .load()
                .map_err(|source| DatapathError::LoadProgram {
                    program: hook.program().to_owned(),
                    source: Box::new(source),
                })?;
        }
        let state = {
            let services: HashMap<_, ServiceKey, ServiceValue> = typed(&ebpf, maps::SERVICES)?;
            let backends: HashMap<_, u32, Backend> = typed(&ebpf, maps::BACKENDS)?;
            let rev_nat: HashMap<_, u32, RevNat> = typed(&ebpf, maps::REV_NAT)?;
            LbState::adopt(
                services.iter().filter_map(Result::ok),
                backends.iter().filter_map(Result::ok),
                rev_nat.iter().filter_map(Result::ok),
            )
        };
        backend_stats::adopt(&mut ebpf)?;
        Ok(Self {
            ebpf,
            state,
            pin_dir: config.pin_dir.clone(),
        })
    }

    /// The pin directory.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Attaches the socket-LB hooks to the cgroup2 directory `cgroup` (every socket below it is
    /// balanced) and pins the links, so they outlive this process: an agent restart never
    /// leaves a window in which a service address goes untranslated. Links already pinned by an
    /// earlier run are kept as they are.
    pub fn attach_cgroup(&mut self, cgroup: &Path) -> Result<(), DatapathError> {
        let links = self.pin_dir.join("links");
        std::fs::create_dir_all(&links).map_err(|source| DatapathError::Io {
            what: "creating the link pin directory",
            path: links.clone(),
            source,
        })?;
        let cgroup_file = File::open(cgroup).map_err(|source| DatapathError::Io {
            what: "opening the cgroup",
            path: cgroup.to_path_buf(),
            source,
        })?;
        for name in SOCK_PROGRAMS {
            let pin = links.join(name);
            if PinnedLink::from_pin(&pin).is_ok() {
                tracing::debug!(program = name, "socket-LB link already pinned; keeping it");
                continue;
            }
            let program = program_mut::<CgroupSockAddr>(&mut self.ebpf, name)?;
            let attach_error =
                |source: Box<dyn std::error::Error + Send + Sync>| DatapathError::Link {
                    path: pin.clone(),
                    source,
                };
            // A bpf_link attachment (kernel >= 5.7) always coexists with other links on the
            // cgroup; the kernel rejects any attach flag on it, so the mode must be `Single`.
            let id = program
                .attach(&cgroup_file, CgroupAttachMode::Single)
                .map_err(|e| attach_error(Box::new(e)))?;
            let link = program
                .take_link(id)
                .map_err(|e| attach_error(Box::new(e)))?;
            let link = FdLink::try_from(link).map_err(|e| attach_error(Box::new(e)))?;
            link.pin(&pin).map_err(|e| attach_error(Box::new(e)))?;
        }
        Ok(())
    }

    /// Attaches `hook`'s program to `interface`'s TC ingress (egress for [`TcHook::ToPod`])
    /// (interface names resolve in the calling thread's network namespace). On kernels with TCX (>= 6.6) the link is pinned, so
    /// it outlives this process like the socket-LB links; a link pinned by an earlier run for the
    /// same interface is kept while it is still attached there, and replaced when it is not (the
    /// interface was deleted and created again). Older kernels attach through a `clsact` qdisc
    /// and netlink, which also outlives the process; a filter of the same program attached
    /// earlier is replaced, so calling this again never stacks filters.
    ///
    /// Attaching `tc_from_netdev` also records the namespace's interface addresses as SNAT
    /// sources ([`Self::sync_snat_sources`]), for kernels without `BPF_FIB_LOOKUP_SRC`.
    pub fn attach_tc(&mut self, interface: &str, hook: TcHook) -> Result<(), DatapathError> {
        if hook == TcHook::FromNetdev {
            self.sync_snat_sources()?;
        }
        let program_name = hook.program();
        let links = self.pin_dir.join("links");
        std::fs::create_dir_all(&links).map_err(|source| DatapathError::Io {
            what: "creating the link pin directory",
            path: links.clone(),
            source,
        })?;
        let pin = tc_pin(&self.pin_dir, interface, hook);
        let tcx = tcx_available();
        if let Ok(pinned) = PinnedLink::from_pin(&pin) {
            if tcx && tcx_link_attached(FdLink::from(pinned), interface, hook) {
                return Ok(());
            }
            // Left from an interface of the same name that is gone: its link is defunct.
            Self::detach_tc(&self.pin_dir, interface, hook)?;
        }
        if !tcx {
            if let Err(error) = tc::qdisc_add_clsact(interface) {
                tracing::debug!(interface, %error, "adding the clsact qdisc");
            }
            // An earlier run's filter: replaced by this run's program.
            let _ = tc::qdisc_detach_program(interface, hook.attach_type(), program_name);
        }
        let program = program_mut::<SchedClassifier>(&mut self.ebpf, program_name)?;
        let attach_error = |source: Box<dyn std::error::Error + Send + Sync>| DatapathError::Link {
            path: pin.clone(),
            source,
        };
        let id = program
            .attach(interface, hook.attach_type())
            .map_err(|source| DatapathError::Attach {
                program: program_name,
                interface: interface.to_owned(),
                direction: hook.direction(),
                source: Box::new(source),
            })?;
        // Taken out of the program's own bookkeeping, so attaching to many interfaces over the
        // agent's life holds nothing per interface in this process.
        let link = program
            .take_link(id)
            .map_err(|e| attach_error(Box::new(e)))?;
        if tcx {
            let link = FdLink::try_from(link).map_err(|e| attach_error(Box::new(e)))?;
            link.pin(&pin).map_err(|e| attach_error(Box::new(e)))?;
        } else {
            // A netlink filter stays in the kernel when its handle is forgotten.
            std::mem::forget(link);
        }
        Ok(())
    }

    /// Undoes [`Self::attach_tc`] for `interface` under `pin_dir`: removes the pinned TCX link
    /// (which detaches the program if the interface still exists), or the netlink filter on
    /// older kernels. Nothing to undo, or an interface that is gone, is no error.
    pub fn detach_tc(pin_dir: &Path, interface: &str, hook: TcHook) -> Result<(), DatapathError> {
        unpin_link(&tc_pin(pin_dir, interface, hook))?;
        if !tcx_available() {
            let _ = tc::qdisc_detach_program(interface, hook.attach_type(), hook.program());
        }
        Ok(())
    }

    /// Removes the pinned `hook` links of interfaces that no longer exist in the calling
    /// thread's network namespace (their links are defunct: a pod's veth went away while no
    /// agent ran). Returns how many it removed.
    pub fn prune_tc_links(&self, hook: TcHook) -> Result<usize, DatapathError> {
        let mut removed = 0;
        for interface in self.tc_link_interfaces(hook) {
            if nix::net::if_::if_nametoindex(interface.as_str()).is_err() {
                Self::detach_tc(&self.pin_dir, &interface, hook)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The interfaces a `hook` link is pinned for (by this run or an earlier one), sorted.
    pub fn tc_link_interfaces(&self, hook: TcHook) -> Vec<String> {
        let links = self.pin_dir.join("links");
        let Ok(entries) = std::fs::read_dir(&links) else {
            return Vec::new();
        };
        let mut interfaces: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let (program, interface) = name.split_once('@')?;
                (program == hook.program()).then(|| interface.to_owned())
            })
            .collect();
        interfaces.sort();
        interfaces
    }

    /// Detaches every program this load balancer pinned a link for (socket-LB hooks and TCX
    /// links). Maps stay pinned.
    pub fn detach_cgroup(pin_dir: &Path) -> Result<(), DatapathError> {
        let links = pin_dir.join("links");
        let pins: Vec<PathBuf> = match std::fs::read_dir(&links) {
            Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        };
        for pin in pins {
            unpin_link(&pin)?;
        }
        Ok(())
    }

    /// Removes everything pinned under `pin_dir` (links first, then maps) and the directory.
    pub fn remove_pins(pin_dir: &Path) -> Result<(), DatapathError> {
        Self::detach_cgroup(pin_dir)?;
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| DatapathError::Io { what, path, source }
        };
        let links = pin_dir.join("links");
        if links.exists() {
            std::fs::remove_dir(&links).map_err(io("removing the link directory", &links))?;
        }
        if pin_dir.exists() {
            for entry in std::fs::read_dir(pin_dir).map_err(io("listing pins", pin_dir))? {
                let path = entry.map_err(io("listing pins", pin_dir))?.path();
                std::fs::remove_file(&path).map_err(io("removing a pinned map", &path))?;
            }
            std::fs::remove_dir(pin_dir).map_err(io("removing the pin directory", pin_dir))?;
        }
        Ok(())
    }

    /// Sets one Service's frontends and applies the resulting writes. Returns how many map
    /// writes it took.
    pub fn update(
        &mut self,
        service: &str,
        frontends: Vec<Frontend>,
    ) -> Result<usize, DatapathError> {
        let ops = self.state.update(service, frontends)?;
        let n = ops.len();
        self.apply(ops)?;
        Ok(n)
    }

    /// After the first full list: removes entries adopted from a previous run that no Service
    /// claimed.
    pub fn finish_initial_sync(&mut self) -> Result<usize, DatapathError> {
        let ops = self.state.finish_initial_sync();
        let n = ops.len();
        self.apply(ops)?;
        Ok(n)
    }

    /// Number of frontends the maps hold.
    pub fn frontend_count(&self) -> usize {
        self.state.frontend_count()
    }

    /// The datapath counters (packet paths, then the agent's conntrack GC), summed over CPUs,
    /// by name.
    pub fn metrics(&self) -> Result<Vec<(&'static str, u64)>, DatapathError> {
        let map: PerCpuArray<_, u64> = typed(&self.ebpf, maps::METRICS)?;
        let mut out = Vec::with_capacity(metric::NAMES.len() + metric::AGENT_NAMES.len());
        let ids = metric::NAMES
            .iter()
            .enumerate()
            .map(|(id, name)| (id as u32, *name))
            .chain(metric::AGENT_NAMES);
        for (id, name) in ids {
            let values = map.get(&id, 0).map_err(|source| DatapathError::Map {
                map: maps::METRICS,
                source: Box::new(source),
            })?;
            out.push((name, values.iter().sum()));
        }
        Ok(out)
    }

    /// The Service each backend's counters are labelled with (see [`backend_owners`]).
    pub fn backend_owners(&self) -> std::collections::BTreeMap<u32, BackendOwner> {
        backend_owners(self.state.backend_refs())
    }

    /// Registers a pod of this node for delivery straight into its namespace.
    pub fn put_local_pod(&mut self, address: Ipv4Addr, pod: LocalPod) -> Result<(), DatapathError> {
        let mut map: HashMap<_, u32, LocalPod> = typed_mut(&mut self.ebpf, maps::LOCAL_PODS)?;
        map.insert(u32::from_ne_bytes(address.octets()), pod, 0)
            .map_err(|source| DatapathError::Map {
                map: maps::LOCAL_PODS,
                source: Box::new(source),
            })
    }

    /// Forgets the pod of this node holding `address` (idempotent).
    pub fn remove_local_pod(&mut self, address: Ipv4Addr) -> Result<(), DatapathError> {
        let mut map: HashMap<_, u32, LocalPod> = typed_mut(&mut self.ebpf, maps::LOCAL_PODS)?;
        ignore_missing(map.remove(&u32::from_ne_bytes(address.octets()))).map_err(|source| {
            DatapathError::Map {
                map: maps::LOCAL_PODS,
                source: Box::new(source),
            }
        })
    }

    /// The pods of this node the datapath delivers to, by address.
    pub fn local_pods(&self) -> Result<Vec<(Ipv4Addr, LocalPod)>, DatapathError> {
        let map: HashMap<_, u32, LocalPod> = typed(&self.ebpf, maps::LOCAL_PODS)?;
        Ok(map
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| (Ipv4Addr::from(k.to_ne_bytes()), v))
            .collect())
    }

    /// Routes pod CIDR `network/prefix` (another node's) as `route` says.
    pub fn put_node_route(
        &mut self,
        network: Ipv4Addr,
        prefix: u8,
        route: NodeRoute,
    ) -> Result<(), DatapathError> {
        let mut map: LpmTrie<_, u32, NodeRoute> = typed_mut(&mut self.ebpf, maps::NODE_ROUTES)?;
        let key = LpmKey::new(u32::from(prefix), u32::from_ne_bytes(network.octets()));
        map.insert(&key, route, 0)
            .map_err(|source| DatapathError::Map {
                map: maps::NODE_ROUTES,
                source: Box::new(source),
            })
    }

    /// Removes the route of pod CIDR `network/prefix` (idempotent).
    pub fn remove_node_route(
        &mut self,
        network: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), DatapathError> {
        let mut map: LpmTrie<_, u32, NodeRoute> = typed_mut(&mut self.ebpf, maps::NODE_ROUTES)?;
        let key = LpmKey::new(u32::from(prefix), u32::from_ne_bytes(network.octets()));
        ignore_missing(map.remove(&key)).map_err(|source| DatapathError::Map {
            map: maps::NODE_ROUTES,
            source: Box::new(source),
        })
    }

    /// The pod CIDRs of other nodes the datapath routes: (network, prefix, route).
    pub fn node_routes(&self) -> Result<Vec<(Ipv4Addr, u8, NodeRoute)>, DatapathError> {
        let map: LpmTrie<_, u32, NodeRoute> = typed(&self.ebpf, maps::NODE_ROUTES)?;
        Ok(map
            .iter()
            .filter_map(Result::ok)
            .map(|(k, v)| {
                (
                    Ipv4Addr::from(k.data().to_ne_bytes()),
                    k.prefix_len() as u8,
                    v,
                )
            })
            .collect())
    }

    fn apply(&mut self, ops: Vec<MapOp>) -> Result<(), DatapathError> {
        let [services, backends, rev_nat, affinity, maglev, stats] = self.ebpf.maps_disjoint_mut([
            maps::SERVICES,
            maps::BACKENDS,
            maps::REV_NAT,
            maps::AFFINITY,
            maps::MAGLEV,
            maps::BACKEND_STATS,
        ]);
        let missing = |map| DatapathError::MissingMap { map };
        let map_error = |map| {
            move |source| DatapathError::Map {
                map,
                source: Box::new(source),
            }
        };
        let mut services: HashMap<_, ServiceKey, ServiceValue> =
            HashMap::try_from(services.ok_or_else(|| missing(maps::SERVICES))?)
                .map_err(map_error(maps::SERVICES))?;
        let mut backends: HashMap<_, u32, Backend> =
            HashMap::try_from(backends.ok_or_else(|| missing(maps::BACKENDS))?)
                .map_err(map_error(maps::BACKENDS))?;
        let mut rev_nat: HashMap<_, u32, RevNat> =
            HashMap::try_from(rev_nat.ok_or_else(|| missing(maps::REV_NAT))?)
                .map_err(map_error(maps::REV_NAT))?;
        let mut affinity: HashMap<_, AffinityKey, AffinityValue> =
            HashMap::try_from(affinity.ok_or_else(|| missing(maps::AFFINITY))?)
                .map_err(map_error(maps::AFFINITY))?;
        let mut maglev: HashMap<_, u32, MaglevTable> =
            HashMap::try_from(maglev.ok_or_else(|| missing(maps::MAGLEV))?)
                .map_err(map_error(maps::MAGLEV))?;
        let mut stats: PerCpuHashMap<_, u32, BackendStats> =
            PerCpuHashMap::try_from(stats.ok_or_else(|| missing(maps::BACKEND_STATS))?)
                .map_err(map_error(maps::BACKEND_STATS))?;
        let mut forget: Vec<(u16, u32)> = Vec::new();
        for op in ops {
            match op {
                MapOp::PutBackend(id, value) => {
                    // A new backend under this id counts from zero; the entry exists before
                    // any slot can point at the backend.
                    let old = backends.get(&id, 0).ok();
                    if backend_stats::starts_new_backend(old.as_ref(), &value) {
                        stats
                            .insert(id, backend_stats::zeroed()?, 0)
                            .map_err(map_error(maps::BACKEND_STATS))?;
                    }
                    backends
                        .insert(id, value, 0)
                        .map_err(map_error(maps::BACKENDS))?
                }
                MapOp::PutRevNat(id, value) => rev_nat
                    .insert(id, value, 0)
                    .map_err(map_error(maps::REV_NAT))?,
                MapOp::PutService(key, value) => services
                    .insert(key, value, 0)
                    .map_err(map_error(maps::SERVICES))?,
                MapOp::DeleteService(key) => {
                    ignore_missing(services.remove(&key)).map_err(map_error(maps::SERVICES))?
                }
                MapOp::DeleteBackend(id) => {
                    ignore_missing(backends.remove(&id)).map_err(map_error(maps::BACKENDS))?;
                    ignore_missing(stats.remove(&id)).map_err(map_error(maps::BACKEND_STATS))?
                }
                MapOp::DeleteRevNat(id) => {
                    ignore_missing(rev_nat.remove(&id)).map_err(map_error(maps::REV_NAT))?
                }
                MapOp::PutMaglev(id, table) => {
                    let mut value = Box::new(MaglevTable {
                        backend_ids: [0; MAGLEV_TABLE_SIZE as usize],
                    });
                    for (slot, backend) in value.backend_ids.iter_mut().zip(&table) {
                        *slot = *backend;
                    }
                    maglev
                        .insert(u32::from(id), value.as_ref(), 0)
                        .map_err(map_error(maps::MAGLEV))?;
                }
                MapOp::DeleteMaglev(id) => ignore_missing(maglev.remove(&u32::from(id)))
                    .map_err(map_error(maps::MAGLEV))?,
                MapOp::ForgetAffinity {
                    rev_nat_id,
                    backend_id,
                } => forget.push((rev_nat_id, backend_id)),
            }
        }
        if !forget.is_empty() {
            // One pass over the affinity table for the whole batch.
            let stale: Vec<AffinityKey> = affinity
                .iter()
                .filter_map(Result::ok)
                .filter(|(k, v)| forget.contains(&(k.rev_nat_id, v.backend_id)))
                .map(|(k, _)| k)
                .collect();
            for key in stale {
                ignore_missing(affinity.remove(&key)).map_err(map_error(maps::AFFINITY))?;
            }
        }
        Ok(())
    }
}

/// Where the TCX link of `hook` on `interface` is pinned.
fn tc_pin(pin_dir: &Path, interface: &str, hook: TcHook) -> PathBuf {
    pin_dir
        .join("links")
        .join(format!("{}@{interface}", hook.program()))
}

fn tcx_available() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

/// Whether `link`'s program is attached to `interface`'s TCX hook of `hook` (a link whose
/// interface was deleted is defunct and attached nowhere).
fn tcx_link_attached(link: FdLink, interface: &str, hook: TcHook) -> bool {
    let Ok(info) = link.info() else {
        return false;
    };
    SchedClassifier::query_tcx(interface, hook.attach_type())
        .is_ok_and(|(_, programs)| programs.iter().any(|p| p.id() == info.program_id()))
}

fn ignore_missing(result: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match result {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}

fn typed_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<&'a mut Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .map_mut(name)
        .ok_or(DatapathError::MissingMap { map: name })?;
    T::try_from(map).map_err(|source| DatapathError::Map {
        map: name,
        source: Box::new(source),
    })
}

fn typed<'a, T>(ebpf: &'a Ebpf, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<&'a Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .map(name)
        .ok_or(DatapathError::MissingMap { map: name })?;
    T::try_from(map).map_err(|source| DatapathError::Map {
        map: name,
        source: Box::new(source),
    })
}

/// Opens a pinned map of the load balancer by name.
pub(crate) fn open_pinned(pin_dir: &Path, name: &'static str) -> Result<Map, DatapathError> {
    let path = pin_dir.join(name);
    let data = MapData::from_pin(&path).map_err(|source| DatapathError::Map {
        map: name,
        source: Box::new(source),
    })?;
    Map::from_map_data(data).map_err(|source| DatapathError::Map {
        map: name,
        source: Box::new(source),
    })
}

/// Makes sure `path` is on a bpffs, mounting one at `/sys/fs/bpf` when nothing is mounted there
/// (the kernel only pins on bpffs).
pub fn ensure_bpffs(path: &Path) -> Result<(), DatapathError> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    const ROOT: &str = "/sys/fs/bpf";
    let on_bpffs = |p: &Path| {
        let mut probe = p.to_path_buf();
        while !probe.exists() {
            if !probe.pop() {
                return false;
            }
        }
        nix::sys::statfs::statfs(&probe).is_ok_and(|s| s.filesystem_type().0 == BPF_FS_MAGIC)
    };
    if on_bpffs(path) {
        return Ok(());
    }
    if path.starts_with(ROOT) && !on_bpffs(Path::new(ROOT)) {
        nix::mount::mount(
            Some("bpf"),
            ROOT,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|errno| DatapathError::Io {
            what: "mounting bpffs",
            path: PathBuf::from(ROOT),
            source: std::io::Error::from(errno),
        })?;
        return Ok(());
    }
    Err(DatapathError::Io {
        what: "not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)",
        path: path.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })
}

/// Removes the link pinned at `pin`; dropping the last reference detaches its program. A pin
/// that does not exist is no error.
fn unpin_link(pin: &Path) -> Result<(), DatapathError> {
    match PinnedLink::from_pin(pin) {
        Ok(link) => link.unpin().map(drop).map_err(|source| DatapathError::Io {
            what: "unpinning a link",
            path: pin.to_path_buf(),
            source,
        }),
        Err(_) if !pin.exists() => Ok(()),
        Err(e) => Err(DatapathError::Link {
            path: pin.to_path_buf(),
            source: Box::new(e),
        }),
    }
}

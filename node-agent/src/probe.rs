//! What the running kernel offers the datapath ([`Capabilities::probe`]) and what the agent does
//! about it ([`plan`]): use every feature, fall back where a fallback exists, or refuse with one
//! line naming the missing feature and the kernel that has it.
//!
//! Most features are probed for real: program and map types with aya's `is_program_supported`
//! and `is_map_supported`, helpers with `is_helper_supported` (a two-instruction program calling
//! the helper, the verifier's log telling whether it knows it), cgroup `bpf_link`s and the
//! `getpeername4` hook with a `BPF_LINK_CREATE` on an invalid program descriptor (`EBADF`: the
//! kernel got as far as looking the program up, so it knows the command and the attach type;
//! `EINVAL`: it does not). Three are decided by the kernel version, as documented per feature
//! ([`Feature::probe`]): TCX (aya itself picks TCX or netlink by version, so the plan must agree
//! with it), the next-hop argument of `bpf_redirect_neigh` and `BPF_FIB_LOOKUP_SRC` (new
//! behaviour of helpers that older kernels know under the same id; the flag is only checked when
//! a packet runs the helper).
//!
//! Below 6.6 (no TCX) TC programs are attached through netlink, which needs the `clsact` qdisc
//! (`sch_ingress`) and the `cls_bpf` classifier: modules that minimal kernels may lack or not be
//! able to load. [`probe_netlink_tc`] tries both for real, in a throwaway network namespace.
//!
//! Every helper the TC programs call must exist even when the agent never takes the path that
//! calls it: the verifier rejects a call to an unknown helper wherever it is, so the object would
//! not load. Only behaviour decided at run time has a fallback.

use std::{collections::BTreeMap, fmt, path::Path, sync::mpsc, time::Duration};

use aya::{
    maps::MapType,
    programs::{
        ProgramError, ProgramType, SchedClassifier, TcAttachType,
        tc::{self, NlOptions, TcAttachOptions, TcError},
    },
    sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported},
    util::KernelVersion,
};
use keelson_ebpf_common::programs::TC_COUNT_INGRESS;

/// A kernel feature the datapath uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Feature {
    /// `BPF_PROG_TYPE_CGROUP_SOCK_ADDR` (socket-LB).
    CgroupSockAddr,
    /// `bpf_link` attachments to cgroups (socket-LB links are pinned).
    CgroupLink,
    /// The `getpeername4` cgroup hook.
    GetPeerName4,
    /// `bpf_get_netns_cookie` in sock_addr programs (ClientIP affinity).
    NetnsCookie,
    /// `BPF_PROG_TYPE_SCHED_CLS` (the TC path).
    SchedCls,
    /// TCX attachment of TC programs (pinned links).
    Tcx,
    /// The `clsact` qdisc (`sch_ingress`), for netlink TC attachment without TCX.
    Clsact,
    /// The `cls_bpf` classifier, for netlink TC attachment without TCX.
    ClsBpf,
    /// `bpf_redirect_peer` from TC.
    RedirectPeer,
    /// `bpf_redirect_neigh` from TC.
    RedirectNeigh,
    /// `bpf_redirect_neigh` with a next-hop argument.
    RedirectNeighNextHop,
    /// `bpf_fib_lookup` from TC.
    FibLookup,
    /// `bpf_fib_lookup` with `BPF_FIB_LOOKUP_SRC` (the preferred source address).
    FibLookupSrc,
    /// `bpf_skb_set_tunnel_key` from TC (VXLAN routing).
    TunnelKey,
    /// `BPF_MAP_TYPE_HASH`.
    HashMap,
    /// `BPF_MAP_TYPE_LRU_HASH` (conntrack, socket reverse NAT, affinity).
    LruHash,
    /// `BPF_MAP_TYPE_LPM_TRIE` (node routes).
    LpmTrie,
    /// `BPF_MAP_TYPE_PERCPU_ARRAY` (counters).
    PerCpuArray,
    /// Kernel BTF at `/sys/kernel/btf/vmlinux`.
    Btf,
}

/// How a feature's presence is established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// A syscall that succeeds or fails depending on the feature.
    Syscall,
    /// The kernel version: no syscall tells it apart, or aya decides by version itself.
    KernelVersion,
    /// A file's existence.
    File,
    /// A netlink request in a throwaway network namespace, only on kernels without TCX
    /// ([`probe_netlink_tc`]).
    Netlink,
}

impl Feature {
    /// Every feature, in the order `check` prints them.
    pub const ALL: [Feature; 19] = [
        Feature::CgroupSockAddr,
        Feature::CgroupLink,
        Feature::NetnsCookie,
        Feature::GetPeerName4,
        Feature::HashMap,
        Feature::LruHash,
        Feature::LpmTrie,
        Feature::PerCpuArray,
        Feature::SchedCls,
        Feature::TunnelKey,
        Feature::FibLookup,
        Feature::RedirectPeer,
        Feature::RedirectNeigh,
        Feature::RedirectNeighNextHop,
        Feature::Tcx,
        Feature::Clsact,
        Feature::ClsBpf,
        Feature::FibLookupSrc,
        Feature::Btf,
    ];

    /// The feature as a user would look it up.
    pub fn name(self) -> &'static str {
        match self {
            Feature::CgroupSockAddr => "cgroup sock_addr programs",
            Feature::CgroupLink => "cgroup sock_addr bpf_link",
            Feature::GetPeerName4 => "cgroup getpeername4 hook",
            Feature::NetnsCookie => "bpf_get_netns_cookie in sock_addr",
            Feature::SchedCls => "TC classifier programs",
            Feature::Tcx => "TCX attachment",
            Feature::Clsact => "clsact qdisc",
            Feature::ClsBpf => "cls_bpf (netlink TC attach)",
            Feature::RedirectPeer => "bpf_redirect_peer in TC",
            Feature::RedirectNeigh => "bpf_redirect_neigh in TC",
            Feature::RedirectNeighNextHop => "bpf_redirect_neigh with a next hop",
            Feature::FibLookup => "bpf_fib_lookup in TC",
            Feature::FibLookupSrc => "bpf_fib_lookup BPF_FIB_LOOKUP_SRC",
            Feature::TunnelKey => "bpf_skb_set_tunnel_key in TC",
            Feature::HashMap => "hash maps",
            Feature::LruHash => "LRU hash maps",
            Feature::LpmTrie => "LPM trie maps",
            Feature::PerCpuArray => "per-CPU array maps",
            Feature::Btf => "kernel BTF (/sys/kernel/btf/vmlinux)",
        }
    }

    /// The first Linux release with the feature.
    pub fn minimum(self) -> KernelVersion {
        let (major, minor) = match self {
            Feature::HashMap => (3, 19),
            Feature::PerCpuArray => (4, 6),
            Feature::LruHash => (4, 10),
            Feature::LpmTrie => (4, 11),
            // Direct-action cls_bpf, which aya's netlink attachment asks for.
            Feature::SchedCls | Feature::ClsBpf => (4, 1),
            Feature::Clsact => (4, 5),
            Feature::TunnelKey => (4, 3),
            Feature::FibLookup => (4, 18),
            Feature::CgroupSockAddr => (4, 17),
            Feature::CgroupLink | Feature::NetnsCookie => (5, 7),
            Feature::GetPeerName4 => (5, 8),
            Feature::RedirectPeer | Feature::RedirectNeigh => (5, 10),
            Feature::RedirectNeighNextHop => (5, 11),
            Feature::Btf => (5, 4),
            Feature::Tcx => (6, 6),
            Feature::FibLookupSrc => (6, 7),
        };
        KernelVersion::new(major, minor, 0)
    }

    /// How [`Capabilities::probe`] establishes the feature.
    pub fn probe(self) -> Probe {
        match self {
            // aya attaches TC programs through TCX exactly when the kernel is >= 6.6.
            Feature::Tcx
            // 5.10 knows bpf_redirect_neigh(ifindex, flags); 5.11 added (params, plen) under
            // the same helper id, so the verifier accepts the call on both.
            | Feature::RedirectNeighNextHop
            // An unknown flag is only rejected when a packet runs the helper (-EINVAL).
            | Feature::FibLookupSrc => Probe::KernelVersion,
            Feature::Btf => Probe::File,
            Feature::Clsact | Feature::ClsBpf => Probe::Netlink,
            _ => Probe::Syscall,
        }
    }

    /// For what a kernel may be built or shipped without rather than lack by version: the
    /// feature as a refusal names it, its kernel module and its config option.
    pub fn kernel_option(self) -> Option<(&'static str, &'static str, &'static str)> {
        match self {
            Feature::Clsact => Some(("the clsact qdisc", "sch_ingress", "CONFIG_NET_SCH_INGRESS")),
            Feature::ClsBpf => Some(("the cls_bpf classifier", "cls_bpf", "CONFIG_NET_CLS_BPF")),
            _ => None,
        }
    }

    /// What keelson does with the feature, and without it.
    pub fn usage(self) -> &'static str {
        match self {
            Feature::Tcx => "TC links pinned; else netlink cls_bpf (re-attached at start)",
            Feature::Clsact => "netlink TC attach; required without TCX (CONFIG_NET_SCH_INGRESS)",
            Feature::ClsBpf => "netlink TC attach; required without TCX (CONFIG_NET_CLS_BPF)",
            Feature::RedirectNeighNextHop => {
                "--routing direct from TC; else kernel routes (--routing-bpf off)"
            }
            Feature::FibLookupSrc => "NodePort SNAT to remote backends; else those flows drop",
            Feature::Btf => "not needed: the programs use no CO-RE relocations",
            Feature::CgroupSockAddr
            | Feature::CgroupLink
            | Feature::GetPeerName4
            | Feature::NetnsCookie => "socket-LB; required",
            Feature::RedirectPeer | Feature::RedirectNeigh => {
                "pod routing from TC; required (called by the TC programs)"
            }
            Feature::TunnelKey | Feature::FibLookup | Feature::SchedCls => {
                "TC path; required (called by the TC programs)"
            }
            Feature::HashMap | Feature::LruHash | Feature::LpmTrie | Feature::PerCpuArray => {
                "datapath maps; required"
            }
        }
    }
}

/// Whether the kernel has a feature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    /// It does.
    Present,
    /// It does not.
    Missing,
    /// The probe itself failed (e.g. not root); the text says why.
    Unknown(String),
    /// Not probed: the agent does not use it on this kernel (netlink TC attachment with TCX).
    NotNeeded,
}

/// What the running kernel offers the datapath.
#[derive(Debug, Clone, PartialEq)]
pub struct Capabilities {
    /// The running kernel's version.
    pub kernel: KernelVersion,
    features: BTreeMap<Feature, Presence>,
}

impl Capabilities {
    /// Probes the running kernel (needs CAP_BPF, i.e. root, for the syscall probes).
    pub fn probe() -> Result<Self, String> {
        let kernel =
            KernelVersion::current().map_err(|e| format!("reading the kernel version: {e}"))?;
        // The map-type probes create maps, charged to RLIMIT_MEMLOCK before 5.11.
        crate::datapath::memlock::ensure().map_err(|e| crate::error_chain(&e))?;
        let tcx = probe_feature(Feature::Tcx, kernel, None) == Presence::Present;
        let netlink_tc = (!tcx).then(probe_netlink_tc);
        let features = Feature::ALL
            .iter()
            .map(|&feature| (feature, probe_feature(feature, kernel, netlink_tc.as_ref())))
            .collect();
        Ok(Self { kernel, features })
    }

    /// A kernel of version `kernel` with every feature that version has (for tests and
    /// what-if questions).
    pub fn of_version(kernel: KernelVersion) -> Self {
        Self::from_fn(kernel, |feature| feature.minimum() <= kernel)
    }

    /// A kernel of version `kernel` whose features `present` tells.
    pub fn from_fn(kernel: KernelVersion, mut present: impl FnMut(Feature) -> bool) -> Self {
        let features = Feature::ALL
            .iter()
            .map(|&feature| {
                let presence = if present(feature) {
                    Presence::Present
                } else {
                    Presence::Missing
                };
                (feature, presence)
            })
            .collect();
        Self { kernel, features }
    }

    /// Overrides what the capabilities say about `feature`.
    pub fn set(&mut self, feature: Feature, presence: Presence) {
        self.features.insert(feature, presence);
    }

    /// Whether the kernel has `feature`.
    pub fn presence(&self, feature: Feature) -> &Presence {
        self.features.get(&feature).unwrap_or(&Presence::Missing)
    }

    /// Whether the kernel has `feature` (an unknown is not).
    pub fn has(&self, feature: Feature) -> bool {
        *self.presence(feature) == Presence::Present
    }

    /// The capability table `check` prints: feature, present/missing, minimum kernel, what
    /// keelson does with it.
    pub fn table(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "{:<38} {:<8} {:<8} {}",
            "FEATURE", "PRESENT", "MINIMUM", "KEELSON"
        )];
        for feature in Feature::ALL {
            let presence = match (self.presence(feature), feature.probe()) {
                (Presence::Present, Probe::KernelVersion) => "yes*",
                (Presence::Present, _) => "yes",
                (Presence::Missing, Probe::KernelVersion) => "no*",
                (Presence::Missing, _) => "no",
                (Presence::Unknown(_), _) => "unknown",
                (Presence::NotNeeded, _) => "n/a",
            };
            let mut line = format!(
                "{:<38} {:<8} {:<8} {}",
                feature.name(),
                presence,
                short_version(feature.minimum()),
                feature.usage()
            );
            match self.presence(feature) {
                Presence::Unknown(why) => line.push_str(&format!(" (probe failed: {why})")),
                Presence::NotNeeded => line.push_str(" (not needed with TCX; not probed)"),
                Presence::Present | Presence::Missing => {}
            }
            lines.push(line);
        }
        lines.push(format!(
            "kernel {}; * decided by the kernel version, not probed",
            self.kernel
        ));
        lines
    }
}

fn short_version(version: KernelVersion) -> String {
    let text = version.to_string();
    text.strip_suffix(".0").map_or(text.clone(), str::to_owned)
}

/// Probes `feature` on a kernel of version `kernel`; `netlink_tc` is what [`probe_netlink_tc`]
/// found, `None` where it did not run (the kernel has TCX).
fn probe_feature(
    feature: Feature,
    kernel: KernelVersion,
    netlink_tc: Option<&NetlinkTc>,
) -> Presence {
    let by_version = || presence(Ok::<_, String>(kernel >= feature.minimum()));
    let helper = |program: ProgramType, helper: BpfHelper| {
        presence(is_helper_supported(program, helper).map_err(|e| crate::error_chain(&e)))
    };
    let map = |map: MapType| presence(is_map_supported(map).map_err(|e| crate::error_chain(&e)));
    match feature {
        Feature::Tcx | Feature::RedirectNeighNextHop | Feature::FibLookupSrc => by_version(),
        Feature::Btf => presence(Ok::<_, String>(
            Path::new("/sys/kernel/btf/vmlinux").exists(),
        )),
        Feature::Clsact => netlink_tc.map_or(Presence::NotNeeded, |tc| tc.clsact.clone()),
        Feature::ClsBpf => netlink_tc.map_or(Presence::NotNeeded, |tc| tc.cls_bpf.clone()),
        Feature::CgroupSockAddr => presence(
            is_program_supported(ProgramType::CgroupSockAddr).map_err(|e| crate::error_chain(&e)),
        ),
        Feature::SchedCls => presence(
            is_program_supported(ProgramType::SchedClassifier).map_err(|e| crate::error_chain(&e)),
        ),
        Feature::CgroupLink => presence(link_create_knows(BPF_CGROUP_INET4_CONNECT)),
        Feature::GetPeerName4 => presence(link_create_knows(BPF_CGROUP_INET4_GETPEERNAME)),
        Feature::NetnsCookie => helper(
            ProgramType::CgroupSockAddr,
            BpfHelper::BPF_FUNC_get_netns_cookie,
        ),
        Feature::RedirectPeer => helper(
            ProgramType::SchedClassifier,
            BpfHelper::BPF_FUNC_redirect_peer,
        ),
        Feature::RedirectNeigh => helper(
            ProgramType::SchedClassifier,
            BpfHelper::BPF_FUNC_redirect_neigh,
        ),
        Feature::FibLookup => helper(ProgramType::SchedClassifier, BpfHelper::BPF_FUNC_fib_lookup),
        Feature::TunnelKey => helper(
            ProgramType::SchedClassifier,
            BpfHelper::BPF_FUNC_skb_set_tunnel_key,
        ),
        Feature::HashMap => map(MapType::Hash),
        Feature::LruHash => map(MapType::LruHash),
        Feature::LpmTrie => map(MapType::LpmTrie),
        Feature::PerCpuArray => map(MapType::PerCpuArray),
    }
}

fn presence(result: Result<bool, String>) -> Presence {
    match result {
        Ok(true) => Presence::Present,
        Ok(false) => Presence::Missing,
        Err(why) => Presence::Unknown(why),
    }
}

/// `BPF_LINK_CREATE` (`enum bpf_cmd` in the kernel's uapi `linux/bpf.h`).
const BPF_LINK_CREATE: libc::c_long = 28;
/// `enum bpf_attach_type` values (uapi `linux/bpf.h`).
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
const BPF_CGROUP_INET4_GETPEERNAME: u32 = 29;

/// Whether `BPF_LINK_CREATE` knows cgroup `attach_type`: asked to link the program behind an
/// invalid descriptor, a kernel that knows both fails looking the program up (`EBADF`); one
/// without the command (< 5.7), or (before it looks the program up) without the attach type,
/// fails with `EINVAL`. The same trick aya uses to probe perf links.
fn link_create_knows(attach_type: u32) -> Result<bool, String> {
    // `union bpf_attr`'s link_create member: prog_fd, target_fd, attach_type, flags; the rest
    // zero (the kernel checks that the bytes past the fields it knows are zero).
    let mut attr = [0u32; 16];
    attr[0] = u32::MAX; // prog_fd: -1
    attr[1] = 0; // target_fd: never reached
    attr[2] = attach_type;
    let size = std::mem::size_of_val(&attr);
    // SAFETY: bpf(2) reads `size` bytes from `attr`, a live local array of exactly that size; it
    // writes nothing back for BPF_LINK_CREATE and creates no descriptor when it fails, and with
    // an invalid program descriptor it always fails.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_CREATE,
            attr.as_mut_ptr(),
            size as libc::c_ulong,
        )
    };
    if rc >= 0 {
        // Unreachable with prog_fd -1; never leak a descriptor if a kernel ever says yes.
        // SAFETY: `rc` is a descriptor this process owns and nothing else refers to.
        drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(rc as i32) });
        return Ok(true);
    }
    let error = std::io::Error::last_os_error();
    match error.raw_os_error() {
        Some(libc::EBADF) => Ok(true),
        Some(libc::EINVAL) => Ok(false),
        _ => Err(format!("bpf(BPF_LINK_CREATE): {error}")),
    }
}

/// What [`probe_netlink_tc`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetlinkTc {
    /// Whether a `clsact` qdisc could be added.
    pub clsact: Presence,
    /// Whether a `cls_bpf` filter running a real TC program could be attached to it.
    pub cls_bpf: Presence,
}

impl NetlinkTc {
    fn unknown(why: &str) -> Self {
        Self {
            clsact: Presence::Unknown(why.to_owned()),
            cls_bpf: Presence::Unknown(why.to_owned()),
        }
    }
}

/// How long [`probe_netlink_tc`] waits for its thread. Each step is one syscall or netlink
/// round trip (a module the kernel autoloads included) plus loading one small program, so this
/// only bounds a kernel that never answers; it is generous because the verifier alone takes
/// seconds under emulation (2 s in a TCG VM).
const NETLINK_TC_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether TC programs can be attached through netlink, as the agent does without TCX: in a
/// new, empty network namespace, adds a `clsact` qdisc to its `lo` and attaches
/// `tc_count_ingress` (from the counters object, the smallest) to the qdisc's ingress hook with a
/// `cls_bpf` filter. Where the kernel lacks the qdisc or the classifier and cannot load the
/// module, the request fails with `ENOENT` (an unknown kind) or `EOPNOTSUPP` (no TC netlink at
/// all): the feature is missing. Any other failure (not root, the program not loading) leaves it
/// unknown, with the cause.
///
/// The namespace belongs to a thread of its own (`unshare(CLONE_NEWNET)` moves only the calling
/// thread), so the host's interfaces are never touched, and it disappears with the qdisc and the
/// filter when that thread ends. `lo` stays down: neither a qdisc nor a filter needs the link up.
/// Needs root (CAP_SYS_ADMIN for the namespace, CAP_NET_ADMIN, CAP_BPF).
pub fn probe_netlink_tc() -> NetlinkTc {
    let (sender, receiver) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("probe-netlink-tc".into())
        .spawn(move || {
            // Everything the probe created is dropped before this send; the receiver is gone
            // only after a timeout, and then there is no one left to tell.
            sender.send(netlink_tc_in_new_netns()).ok();
        });
    let thread = match spawned {
        Ok(thread) => thread,
        Err(error) => return NetlinkTc::unknown(&format!("spawning the probe thread: {error}")),
    };
    match receiver.recv_timeout(NETLINK_TC_TIMEOUT) {
        Ok(found) => {
            // The thread has sent its last word: wait for it to end, and its namespace with it.
            if thread.join().is_err() {
                return NetlinkTc::unknown("the probe thread panicked after answering");
            }
            found
        }
        Err(mpsc::RecvTimeoutError::Timeout) => NetlinkTc::unknown(&format!(
            "no answer within {} s (the thread is left to finish on its own)",
            NETLINK_TC_TIMEOUT.as_secs()
        )),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            NetlinkTc::unknown("the probe thread panicked")
        }
    }
}

/// The body of [`probe_netlink_tc`]'s thread.
fn netlink_tc_in_new_netns() -> NetlinkTc {
    // Programs are not bound to a namespace: load first, so that a failure here does not hide
    // what the qdisc probe finds.
    let program = load_counter_program();
    if let Err(errno) = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET) {
        return NetlinkTc::unknown(&format!("unshare(CLONE_NEWNET): {errno}"));
    }
    if let Err(error) = tc::qdisc_add_clsact("lo") {
        return NetlinkTc {
            clsact: netlink_presence(
                tc_errno(&error),
                format!("adding a clsact qdisc: {}", crate::error_chain(&error)),
            ),
            cls_bpf: Presence::Unknown("not probed: no clsact qdisc to attach to".to_owned()),
        };
    }
    let cls_bpf = match program {
        Err(why) => Presence::Unknown(why),
        Ok(mut ebpf) => {
            match crate::datapath::program_mut::<SchedClassifier>(&mut ebpf, TC_COUNT_INGRESS) {
                Err(error) => Presence::Unknown(crate::error_chain(&error)),
                Ok(program) => match program.attach_with_options(
                    "lo",
                    TcAttachType::Ingress,
                    TcAttachOptions::Netlink(NlOptions::default()),
                ) {
                    // Dropping `ebpf` (below) detaches the filter; the namespace goes anyway.
                    Ok(_) => Presence::Present,
                    Err(error) => {
                        let errno = match &error {
                            ProgramError::TcError(error) => tc_errno(error),
                            _ => None,
                        };
                        netlink_presence(
                            errno,
                            format!(
                                "attaching {TC_COUNT_INGRESS} with cls_bpf: {}",
                                crate::error_chain(&error)
                            ),
                        )
                    }
                },
            }
        }
    };
    NetlinkTc {
        clsact: Presence::Present,
        cls_bpf,
    }
}

/// The counters object with `tc_count_ingress` loaded (verified) into the kernel.
fn load_counter_program() -> Result<aya::Ebpf, String> {
    let mut ebpf = crate::datapath::load_object().map_err(|e| crate::error_chain(&e))?;
    crate::datapath::program_mut::<SchedClassifier>(&mut ebpf, TC_COUNT_INGRESS)
        .map_err(|e| crate::error_chain(&e))?
        .load()
        .map_err(|e| format!("loading {TC_COUNT_INGRESS}: {}", crate::error_chain(&e)))?;
    Ok(ebpf)
}

/// The errno of a netlink request that failed, if that is what failed.
fn tc_errno(error: &TcError) -> Option<i32> {
    match error {
        TcError::NetlinkError(error) => error.raw_os_error(),
        _ => None,
    }
}

/// A TC netlink request's failure as the presence of what it asked for: `ENOENT` is the kernel's
/// answer to a qdisc or classifier kind it does not know (and could not load a module for),
/// `EOPNOTSUPP` to TC requests without TC support built in; anything else is a failed probe.
fn netlink_presence(errno: Option<i32>, why: String) -> Presence {
    match errno {
        Some(libc::ENOENT | libc::EOPNOTSUPP) => Presence::Missing,
        _ => Presence::Unknown(why),
    }
}

/// What the user asked `run` for, as far as the kernel matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wanted {
    /// `--routing-bpf on`.
    pub routing_bpf: bool,
    /// `--routing tunnel` (else direct).
    pub tunnel: bool,
    /// At least one uplink (`--uplink`): traffic from outside the node reaches the TC path.
    pub uplinks: bool,
}

/// How TC programs are attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcAttach {
    /// TCX links, pinned (they outlive the agent).
    Tcx,
    /// Netlink `cls_bpf` filters on a clsact qdisc (re-attached at every start).
    Netlink,
}

/// What `run` does on this kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// How TC programs are attached.
    pub tc_attach: TcAttach,
    /// Whether pod packets skip the node's stack (`--routing-bpf`), after fallbacks.
    pub routing_bpf: bool,
    /// Whether NodePort flows to backends on other nodes can be source-NATed.
    pub snat: bool,
    /// The fallbacks applied, one line each, for the log.
    pub fallbacks: Vec<String>,
}

/// Why the agent cannot run on this kernel: one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The missing feature.
    pub feature: Feature,
    /// The running kernel.
    pub kernel: KernelVersion,
    /// Why the probe failed, if it did rather than finding the feature missing.
    pub probe_error: Option<String>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the netlink TC features have one, and they are only required without TCX.
        if let Some((what, module, option)) = self.feature.kernel_option() {
            let tcx = short_version(Feature::Tcx.minimum());
            return match &self.probe_error {
                None => write!(
                    f,
                    "keelson-node-agent needs TC attach: TCX (Linux >= {tcx}) or {what} \
                     ({module}, {option}); this kernel is {} and has neither",
                    self.kernel
                ),
                Some(why) => write!(
                    f,
                    "keelson-node-agent could not probe for {what} ({module}, {option}), which \
                     TC attach needs without TCX (Linux >= {tcx}): {why}"
                ),
            };
        }
        match &self.probe_error {
            None => write!(
                f,
                "keelson-node-agent needs {} (Linux >= {}); this kernel is {}",
                self.feature.name(),
                short_version(self.feature.minimum()),
                self.kernel
            ),
            Some(why) => write!(
                f,
                "keelson-node-agent could not probe for {} (Linux >= {}): {why}",
                self.feature.name(),
                short_version(self.feature.minimum())
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// Features without which the datapath cannot load or attach: the programs call these helpers
/// (an unknown helper fails verification wherever the call sits), create these maps, and pin
/// cgroup links.
const REQUIRED: [Feature; 13] = [
    Feature::CgroupSockAddr,
    Feature::CgroupLink,
    Feature::NetnsCookie,
    Feature::GetPeerName4,
    Feature::HashMap,
    Feature::LruHash,
    Feature::LpmTrie,
    Feature::PerCpuArray,
    Feature::SchedCls,
    Feature::TunnelKey,
    Feature::FibLookup,
    Feature::RedirectPeer,
    Feature::RedirectNeigh,
];

/// What attaching TC programs through netlink needs (without TCX), in the order they are checked.
const NETLINK_TC: [Feature; 2] = [Feature::Clsact, Feature::ClsBpf];

/// A refusal unless the kernel has `feature`.
fn require(capabilities: &Capabilities, feature: Feature) -> Result<(), Refusal> {
    let probe_error = match capabilities.presence(feature) {
        Presence::Present => return Ok(()),
        Presence::Missing => None,
        Presence::Unknown(why) => Some(why.clone()),
        Presence::NotNeeded => Some("not probed".to_owned()),
    };
    Err(Refusal {
        feature,
        kernel: capabilities.kernel,
        probe_error,
    })
}

/// Decides what `run` does on a kernel with `capabilities`, given what the user `wanted`:
/// refuses when a required feature is missing (the first, in [`Feature::ALL`] order), else
/// picks TCX or netlink TC (refusing when the kernel has neither TCX nor the clsact qdisc and
/// cls_bpf), falls back to kernel routes for `--routing direct` when
/// `bpf_redirect_neigh` takes no next hop, and tells that NodePort SNAT is unavailable before
/// 6.7. SNAT has no flag: refusing would shut out every kernel before 6.7 for a path many
/// clusters never take, so it is a warning (the flows are dropped and counted in
/// `tc_snat_failed`; `externalTrafficPolicy: Local` avoids them).
pub fn plan(capabilities: &Capabilities, wanted: &Wanted) -> Result<Plan, Refusal> {
    for feature in REQUIRED {
        require(capabilities, feature)?;
    }
    let mut fallbacks = Vec::new();
    let tc_attach = if capabilities.has(Feature::Tcx) {
        TcAttach::Tcx
    } else {
        for feature in NETLINK_TC {
            require(capabilities, feature)?;
        }
        fallbacks.push(format!(
            "TC programs attached with netlink cls_bpf ({} needs Linux >= {}): not pinned, \
             re-attached at every start",
            Feature::Tcx.name(),
            short_version(Feature::Tcx.minimum())
        ));
        TcAttach::Netlink
    };
    let mut routing_bpf = wanted.routing_bpf;
    if routing_bpf && !wanted.tunnel && !capabilities.has(Feature::RedirectNeighNextHop) {
        routing_bpf = false;
        fallbacks.push(format!(
            "--routing-bpf off: {} needs Linux >= {}; pod packets follow the node's routes \
             (same paths, through the node's stack)",
            Feature::RedirectNeighNextHop.name(),
            short_version(Feature::RedirectNeighNextHop.minimum())
        ));
    }
    let snat = capabilities.has(Feature::FibLookupSrc);
    if !snat && wanted.uplinks {
        fallbacks.push(format!(
            "no NodePort SNAT: {} needs Linux >= {}; flows from outside to backends on other \
             nodes with externalTrafficPolicy Cluster are dropped (tc_snat_failed)",
            Feature::FibLookupSrc.name(),
            short_version(Feature::FibLookupSrc.minimum())
        ));
    }
    Ok(Plan {
        tc_attach,
        routing_bpf,
        snat,
        fallbacks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_ON: Wanted = Wanted {
        routing_bpf: true,
        tunnel: false,
        uplinks: true,
    };

    fn planned(kernel: KernelVersion, wanted: Wanted) -> Result<Plan, Refusal> {
        plan(&Capabilities::of_version(kernel), &wanted)
    }

    #[test]
    fn a_recent_kernel_gets_everything_without_fallbacks() {
        let plan = planned(KernelVersion::new(6, 18, 4), ALL_ON).expect("6.18 has everything");
        assert_eq!(
            plan,
            Plan {
                tc_attach: TcAttach::Tcx,
                routing_bpf: true,
                snat: true,
                fallbacks: Vec::new(),
            }
        );
    }

    #[test]
    fn debian_bookworm_6_1_uses_netlink_tc_and_warns_about_snat() {
        let plan = planned(KernelVersion::new(6, 1, 0), ALL_ON).expect("6.1 is supported");
        assert_eq!(plan.tc_attach, TcAttach::Netlink);
        assert!(
            plan.routing_bpf,
            "6.1 has bpf_redirect_neigh with a next hop"
        );
        assert!(!plan.snat);
        assert_eq!(plan.fallbacks.len(), 2, "{:?}", plan.fallbacks);
        assert!(plan.fallbacks[0].contains("netlink cls_bpf"));
        assert!(plan.fallbacks[0].contains("Linux >= 6.6"));
        assert!(plan.fallbacks[1].contains("BPF_FIB_LOOKUP_SRC needs Linux >= 6.7"));
        assert!(plan.fallbacks[1].contains("externalTrafficPolicy Cluster are dropped"));
    }

    #[test]
    fn without_uplinks_the_snat_gap_is_not_worth_a_warning() {
        let plan = planned(
            KernelVersion::new(6, 1, 0),
            Wanted {
                uplinks: false,
                ..ALL_ON
            },
        )
        .expect("6.1 is supported");
        assert!(!plan.snat);
        assert_eq!(plan.fallbacks.len(), 1, "{:?}", plan.fallbacks);
    }

    #[test]
    fn linux_5_10_routes_direct_through_the_kernel_but_keeps_the_tunnel_in_bpf() {
        let kernel = KernelVersion::new(5, 10, 0);
        let direct = planned(kernel, ALL_ON).expect("5.10 is supported");
        assert_eq!(direct.tc_attach, TcAttach::Netlink);
        assert!(!direct.routing_bpf, "no next hop for bpf_redirect_neigh");
        assert!(!direct.snat);
        assert!(
            direct
                .fallbacks
                .iter()
                .any(|f| f.starts_with("--routing-bpf off")
                    && f.contains("with a next hop needs Linux >= 5.11")),
            "{:?}",
            direct.fallbacks
        );
        let tunnel = planned(
            kernel,
            Wanted {
                tunnel: true,
                ..ALL_ON
            },
        )
        .expect("5.10 is supported");
        assert!(tunnel.routing_bpf, "tunnel mode needs no next hop");
        let off = planned(
            kernel,
            Wanted {
                routing_bpf: false,
                ..ALL_ON
            },
        )
        .expect("5.10 is supported");
        assert!(!off.fallbacks.iter().any(|f| f.contains("--routing-bpf")));
    }

    #[test]
    fn linux_5_4_is_refused_for_cgroup_bpf_link_in_one_line() {
        let refusal = planned(KernelVersion::new(5, 4, 0), ALL_ON).expect_err("5.4 is too old");
        assert_eq!(refusal.feature, Feature::CgroupLink);
        assert_eq!(
            refusal.to_string(),
            "keelson-node-agent needs cgroup sock_addr bpf_link (Linux >= 5.7); this kernel is 5.4.0"
        );
    }

    #[test]
    fn linux_5_8_is_refused_for_the_tc_helpers_it_lacks() {
        let refusal = planned(KernelVersion::new(5, 8, 0), ALL_ON).expect_err("5.8 lacks them");
        assert_eq!(refusal.feature, Feature::RedirectPeer);
        assert!(
            refusal
                .to_string()
                .contains("(Linux >= 5.10); this kernel is 5.8.0")
        );
    }

    #[test]
    fn a_probe_that_failed_refuses_with_its_cause_not_a_kernel_version() {
        let mut capabilities = Capabilities::of_version(KernelVersion::new(6, 12, 0));
        capabilities.set(
            Feature::LruHash,
            Presence::Unknown("bpf_map_create failed: Operation not permitted".into()),
        );
        let refusal = plan(&capabilities, &ALL_ON).expect_err("unknown is not present");
        assert_eq!(
            refusal.to_string(),
            "keelson-node-agent could not probe for LRU hash maps (Linux >= 4.10): \
             bpf_map_create failed: Operation not permitted"
        );
    }

    #[test]
    fn btf_is_not_required() {
        let mut capabilities = Capabilities::of_version(KernelVersion::new(6, 12, 0));
        capabilities.set(Feature::Btf, Presence::Missing);
        assert!(plan(&capabilities, &ALL_ON).is_ok());
    }

    #[test]
    fn a_missing_map_type_is_refused_even_on_a_new_kernel() {
        let mut capabilities = Capabilities::of_version(KernelVersion::new(6, 12, 0));
        capabilities.set(Feature::LpmTrie, Presence::Missing);
        let refusal = plan(&capabilities, &ALL_ON).expect_err("LPM tries are required");
        assert_eq!(
            refusal.to_string(),
            "keelson-node-agent needs LPM trie maps (Linux >= 4.11); this kernel is 6.12.0"
        );
    }

    #[test]
    fn linux_6_1_without_the_clsact_qdisc_is_refused_naming_tcx_and_the_module() {
        let mut capabilities = Capabilities::of_version(KernelVersion::new(6, 1, 0));
        capabilities.set(Feature::Clsact, Presence::Missing);
        // What the probe reports when the qdisc is missing: it cannot try the classifier.
        capabilities.set(
            Feature::ClsBpf,
            Presence::Unknown("not probed: no clsact qdisc to attach to".into()),
        );
        let refusal = plan(&capabilities, &ALL_ON).expect_err("no way to attach TC programs");
        assert_eq!(refusal.feature, Feature::Clsact);
        assert_eq!(
            refusal.to_string(),
            "keelson-node-agent needs TC attach: TCX (Linux >= 6.6) or the clsact qdisc \
             (sch_ingress, CONFIG_NET_SCH_INGRESS); this kernel is 6.1.0 and has neither"
        );
    }

    #[test]
    fn linux_6_1_without_cls_bpf_is_refused_naming_tcx_and_the_module() {
        let mut capabilities = Capabilities::of_version(KernelVersion::new(6, 1, 0));
        capabilities.set(Feature::ClsBpf, Presence::Missing);
        let refusal = plan(&capabilities, &ALL_ON).expect_err("no way to attach TC programs");
        assert_eq!(refusal.feature, Feature::ClsBpf);
        assert_eq!(
            refusal.to_string(),
            "keelson-node-agent needs TC attach: TCX (Linux >= 6.6) or the cls_bpf classifier \
             (cls_bpf, CONFIG_NET_CLS_BPF); this kernel is 6.1.0 and has neither"
        );
    }

    #[test]
    fn a_failed_netlink_tc_probe_refuses_with_its_cause() {
        let mut capabilities = Capabilities::of_version(KernelVersion::new(6, 1, 0));
        let why = "unshare(CLONE_NEWNET): EPERM: Operation not permitted";
        capabilities.set(Feature::Clsact, Presence::Unknown(why.into()));
        capabilities.set(Feature::ClsBpf, Presence::Unknown(why.into()));
        let refusal = plan(&capabilities, &ALL_ON).expect_err("unknown is not present");
        assert_eq!(
            refusal.to_string(),
            "keelson-node-agent could not probe for the clsact qdisc (sch_ingress, \
             CONFIG_NET_SCH_INGRESS), which TC attach needs without TCX (Linux >= 6.6): \
             unshare(CLONE_NEWNET): EPERM: Operation not permitted"
        );
    }

    #[test]
    fn with_tcx_neither_the_clsact_qdisc_nor_cls_bpf_is_needed() {
        for presence in [Presence::NotNeeded, Presence::Missing] {
            let mut capabilities = Capabilities::of_version(KernelVersion::new(6, 6, 0));
            capabilities.set(Feature::Clsact, presence.clone());
            capabilities.set(Feature::ClsBpf, presence.clone());
            let plan = plan(&capabilities, &ALL_ON).expect("TCX attaches without them");
            assert_eq!(plan.tc_attach, TcAttach::Tcx, "{presence:?}");
        }
    }

    #[test]
    fn netlink_tc_errors_tell_missing_from_a_failed_probe() {
        for errno in [libc::ENOENT, libc::EOPNOTSUPP] {
            assert_eq!(
                netlink_presence(Some(errno), "why".into()),
                Presence::Missing,
                "{errno}"
            );
        }
        for errno in [Some(libc::EPERM), Some(libc::EINVAL), None] {
            assert_eq!(
                netlink_presence(errno, "why".into()),
                Presence::Unknown("why".into()),
                "{errno:?}"
            );
        }
    }

    #[test]
    fn the_table_shows_netlink_tc_rows_as_not_needed_with_tcx() {
        let mut capabilities = Capabilities::of_version(KernelVersion::new(6, 18, 0));
        capabilities.set(Feature::Clsact, Presence::NotNeeded);
        capabilities.set(Feature::ClsBpf, Presence::NotNeeded);
        let table = capabilities.table();
        for name in ["clsact qdisc", "cls_bpf (netlink TC attach)"] {
            let row = table
                .iter()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("a {name} row in {table:#?}"));
            assert!(row.contains(" n/a "), "{row}");
            assert!(row.ends_with("(not needed with TCX; not probed)"), "{row}");
        }
    }

    #[test]
    fn the_table_marks_version_decided_rows() {
        let table = Capabilities::of_version(KernelVersion::new(6, 1, 0)).table();
        assert_eq!(table.len(), Feature::ALL.len() + 2);
        let tcx = table
            .iter()
            .find(|l| l.starts_with("TCX attachment"))
            .expect("a TCX row");
        assert!(tcx.contains("no*"), "{tcx}");
        assert!(tcx.contains("6.6"), "{tcx}");
    }
}

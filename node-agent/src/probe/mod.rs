//! What the running kernel offers the datapath ([`Capabilities::probe`]) and what the agent does
//! about it ([`plan`]): use every feature, fall back where a fallback exists, or refuse with one
//! line naming the missing feature and the kernel that has it.
//!
//! Most features are probed for real: program and map types with aya's `is_program_supported`
//! and `is_map_supported`, helpers with `is_helper_supported` (a two-instruction program calling
//! the helper, the verifier's log telling whether it knows it), cgroup `bpf_link`s and the
//! `getpeername4` hook with a `BPF_LINK_CREATE` on an invalid program descriptor (`EBADF`: the
//! kernel got as far as looking the program up, so it knows the command and the attach type;
//! `EINVAL`: it does not). `BPF_FIB_LOOKUP_SRC`, a flag only checked when a packet runs the
//! helper (and backported by Debian to 6.1), is probed by running a tiny program with
//! `BPF_PROG_TEST_RUN` ([`fib_src`]). Two are decided by the kernel version, as documented per
//! feature ([`Feature::probe`]): TCX (aya itself picks TCX or netlink by version, so the plan
//! must agree with it) and the next-hop argument of `bpf_redirect_neigh` (new behaviour of a
//! helper that older kernels know under the same id).
//!
//! Below 6.6 (no TCX) TC programs are attached through netlink, which needs the `clsact` qdisc
//! (`sch_ingress`) and the `cls_bpf` classifier: modules that minimal kernels may lack or not be
//! able to load. [`probe_netlink_tc`] tries both for real, in a throwaway network namespace.
//!
//! [`plan`] turns the answers into what `run` does.
//!
//! Every helper the TC programs call must exist even when the agent never takes the path that
//! calls it: the verifier rejects a call to an unknown helper wherever it is, so the object would
//! not load. Only behaviour decided at run time has a fallback.

mod error;
pub mod fib_src;
mod netlink;
mod plan;

use std::{collections::BTreeMap, path::Path};

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported},
    util::KernelVersion,
};

pub use error::ProbeError;
pub use netlink::{NetlinkTc, probe_netlink_tc};
pub use plan::{Plan, Refusal, SnatSource, TcAttach, Wanted, plan};

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
            | Feature::RedirectNeighNextHop => Probe::KernelVersion,
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
            Feature::FibLookupSrc => {
                "NodePort SNAT source from the FIB; else the agent's interface addresses"
            }
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
    pub fn probe() -> Result<Self, ProbeError> {
        let kernel =
            KernelVersion::current().map_err(|e| ProbeError::KernelVersion(Box::new(e)))?;
        // The map-type probes create maps, charged to RLIMIT_MEMLOCK before 5.11.
        crate::datapath::memlock::ensure()?;
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
    let by_version = || presence(Ok(kernel >= feature.minimum()));
    let helper = |program: ProgramType, helper: BpfHelper| {
        presence(is_helper_supported(program, helper).map_err(ProbeError::from))
    };
    let map = |map: MapType| presence(is_map_supported(map).map_err(ProbeError::from));
    match feature {
        Feature::Tcx | Feature::RedirectNeighNextHop => by_version(),
        Feature::FibLookupSrc => presence(fib_src::probe_fib_lookup_src()),
        Feature::Btf => presence(Ok(Path::new("/sys/kernel/btf/vmlinux").exists())),
        Feature::Clsact => netlink_tc.map_or(Presence::NotNeeded, |tc| tc.clsact.clone()),
        Feature::ClsBpf => netlink_tc.map_or(Presence::NotNeeded, |tc| tc.cls_bpf.clone()),
        Feature::CgroupSockAddr => {
            presence(is_program_supported(ProgramType::CgroupSockAddr).map_err(ProbeError::from))
        }
        Feature::SchedCls => {
            presence(is_program_supported(ProgramType::SchedClassifier).map_err(ProbeError::from))
        }
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

/// A probe's answer as a presence; a failed probe is unknown, with its whole error chain.
fn presence(result: Result<bool, ProbeError>) -> Presence {
    match result {
        Ok(true) => Presence::Present,
        Ok(false) => Presence::Missing,
        Err(why) => Presence::Unknown(crate::error_chain(&why)),
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
fn link_create_knows(attach_type: u32) -> Result<bool, ProbeError> {
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
        _ => Err(ProbeError::Bpf {
            command: "BPF_LINK_CREATE",
            source: error,
        }),
    }
}

//! What `run` does on a kernel: use every feature, fall back where a fallback exists, or refuse
//! with one line.

use std::fmt;

use aya::util::KernelVersion;

use super::{Capabilities, Feature, Presence, short_version};

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

/// Where the TC path takes the node's address for source-NATed NodePort flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnatSource {
    /// The FIB's preferred source towards the backend (`BPF_FIB_LOOKUP_SRC`).
    Fib,
    /// The address the agent recorded for the outgoing interface (`ksnatsrc_v1`): the kernel's
    /// `bpf_fib_lookup` lacks `BPF_FIB_LOOKUP_SRC`.
    InterfaceAddress,
}

/// What `run` does on this kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// How TC programs are attached.
    pub tc_attach: TcAttach,
    /// Whether pod packets skip the node's stack (`--routing-bpf`), after fallbacks.
    pub routing_bpf: bool,
    /// Where the source address of NodePort flows source-NATed to backends on other nodes
    /// comes from.
    pub snat_source: SnatSource,
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
/// `bpf_redirect_neigh` takes no next hop, and, where `bpf_fib_lookup` lacks
/// `BPF_FIB_LOOKUP_SRC` (probed: mainline 6.7, backported by some distributions), takes the
/// NodePort SNAT source from the interfaces' addresses the agent records (counted in
/// `tc_snat_source_map`), which is the same address unless an interface has several or a route
/// names another preferred source.
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
    let snat_source = if capabilities.has(Feature::FibLookupSrc) {
        SnatSource::Fib
    } else {
        if wanted.uplinks {
            fallbacks.push(format!(
                "NodePort SNAT source from the node's interface addresses: this kernel's {} is \
                 missing (Linux >= {}); an interface's first IPv4 address is used, not the \
                 route's preferred source",
                Feature::FibLookupSrc.name(),
                short_version(Feature::FibLookupSrc.minimum())
            ));
        }
        SnatSource::InterfaceAddress
    };
    Ok(Plan {
        tc_attach,
        routing_bpf,
        snat_source,
        fallbacks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::netlink::netlink_presence;

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
                snat_source: SnatSource::Fib,
                fallbacks: Vec::new(),
            }
        );
    }

    #[test]
    fn debian_bookworm_6_1_uses_netlink_tc_and_the_backported_fib_source() {
        let mut capabilities = Capabilities::of_version(KernelVersion::new(6, 1, 0));
        capabilities.set(Feature::FibLookupSrc, Presence::Present);
        let plan = plan(&capabilities, &ALL_ON).expect("6.1 is supported");
        assert_eq!(plan.tc_attach, TcAttach::Netlink);
        assert!(
            plan.routing_bpf,
            "6.1 has bpf_redirect_neigh with a next hop"
        );
        assert_eq!(
            plan.snat_source,
            SnatSource::Fib,
            "the probe found the backport"
        );
        assert_eq!(plan.fallbacks.len(), 1, "{:?}", plan.fallbacks);
        assert!(plan.fallbacks[0].contains("netlink cls_bpf"));
        assert!(plan.fallbacks[0].contains("Linux >= 6.6"));
    }

    #[test]
    fn without_the_fib_source_flag_snat_takes_the_interface_addresses() {
        for kernel in [KernelVersion::new(5, 10, 0), KernelVersion::new(6, 6, 0)] {
            let mut capabilities = Capabilities::of_version(kernel);
            capabilities.set(Feature::FibLookupSrc, Presence::Missing);
            let plan = plan(&capabilities, &ALL_ON).expect("supported");
            assert_eq!(plan.snat_source, SnatSource::InterfaceAddress, "{kernel}");
            assert_eq!(
                plan.fallbacks.last().map(String::as_str),
                Some(
                    "NodePort SNAT source from the node's interface addresses: this kernel's \
                     bpf_fib_lookup BPF_FIB_LOOKUP_SRC is missing (Linux >= 6.7); an \
                     interface's first IPv4 address is used, not the route's preferred source"
                ),
                "{kernel}"
            );
        }
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
        assert_eq!(plan.snat_source, SnatSource::InterfaceAddress);
        assert_eq!(plan.fallbacks.len(), 1, "{:?}", plan.fallbacks);
    }

    #[test]
    fn linux_5_10_routes_direct_through_the_kernel_but_keeps_the_tunnel_in_bpf() {
        let kernel = KernelVersion::new(5, 10, 0);
        let direct = planned(kernel, ALL_ON).expect("5.10 is supported");
        assert_eq!(direct.tc_attach, TcAttach::Netlink);
        assert!(!direct.routing_bpf, "no next hop for bpf_redirect_neigh");
        assert_eq!(direct.snat_source, SnatSource::InterfaceAddress);
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

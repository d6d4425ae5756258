//! The kernel/user ABI of keelson's eBPF maps.
//!
//! This crate is the only place where a map key or value is written down. Both the programs in
//! `ebpf/programs` (built for `bpfel-unknown-none`) and the node agent (with the `user` feature)
//! use these types, so a layout change is a compile-time change on both sides.
//!
//! Rules for every type here: `#[repr(C)]`, `Copy`, explicit padding fields, plain integers (no
//! `bool`, `Option` or enums), and byte order named in the field when it is not host order.
#![no_std]

/// The newest map layout version below. Each load-balancer map carries its own layout version
/// in its name (`kct_v2`, `ksvc_v1`, ...), bumped when that map's key or value changes, so an
/// agent of another ABI never reads a pinned map it does not understand, while maps whose
/// layout did not change are reused across an upgrade.
pub const ABI_VERSION: u32 = 2;

/// Name of the per-interface packet counter map (a per-CPU hash map).
pub const IFACE_COUNTERS_MAP: &str = "IFACE_COUNTERS";
/// Capacity of [`IFACE_COUNTERS_MAP`]: one entry per (interface, direction) the agent watches.
pub const IFACE_COUNTERS_MAX_ENTRIES: u32 = 1024;

/// Program names, as exported by the object and looked up by the agent.
pub mod programs {
    /// TC classifier counting packets on an interface's ingress hook.
    pub const TC_COUNT_INGRESS: &str = "tc_count_ingress";
    /// TC classifier counting packets on an interface's egress hook.
    pub const TC_COUNT_EGRESS: &str = "tc_count_egress";
}

/// Direction values for [`IfaceKey::direction`].
pub mod direction {
    /// Packets received by the interface (TC ingress).
    pub const INGRESS: u32 = 0;
    /// Packets sent by the interface (TC egress).
    pub const EGRESS: u32 = 1;
}

/// Key of [`IFACE_COUNTERS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IfaceKey {
    /// Interface index in the network namespace the program is attached in (host order).
    pub ifindex: u32,
    /// One of [`direction`]'s constants.
    pub direction: u32,
}

/// Value of [`IFACE_COUNTERS_MAP`], one per CPU; the agent sums them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceCounters {
    /// Packets seen.
    pub packets: u64,
    /// Bytes seen (`skb->len`, L2 header included).
    pub bytes: u64,
}

impl IfaceCounters {
    /// Adds another CPU's share to this one (used when summing per-CPU values).
    #[must_use]
    pub const fn merged(self, other: Self) -> Self {
        Self {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
        }
    }
}

/// IP protocol numbers as they appear in [`ServiceKey::proto`] and [`Backend::proto`].
pub mod proto {
    /// `IPPROTO_TCP`.
    pub const TCP: u8 = 6;
    /// `IPPROTO_UDP`.
    pub const UDP: u8 = 17;
    /// `IPPROTO_SCTP`.
    pub const SCTP: u8 = 132;
    /// `IPPROTO_ICMP`.
    pub const ICMP: u8 = 1;
}

/// Map names of the service load balancer. Each carries [`ABI_VERSION`] so that pinned maps of
/// another layout are never reused (kernel map names are at most 15 bytes).
pub mod maps {
    /// [`super::ServiceKey`] -> [`super::ServiceValue`], hash.
    pub const SERVICES: &str = "ksvc_v1";
    /// backend id (`u32`) -> [`super::Backend`], hash.
    pub const BACKENDS: &str = "kbackend_v1";
    /// rev-NAT id (`u32`) -> [`super::RevNat`], hash.
    pub const REV_NAT: &str = "krevnat_v1";
    /// [`super::SockRevNatKey`] -> [`super::SockRevNat`], LRU hash.
    pub const SOCK_REV_NAT: &str = "ksockrevnat_v1";
    /// [`super::AffinityKey`] -> [`super::AffinityValue`], LRU hash.
    pub const AFFINITY: &str = "kaffinity_v1";
    /// counter id (`u32`, [`super::metric`]) -> `u64`, per-CPU array (v2: 64 counters, the
    /// agent's own at the top).
    pub const METRICS: &str = "kmetrics_v2";
    /// [`super::CtKey`] -> [`super::CtValue`], LRU hash: the TC path's connection tracking
    /// (v2: SNAT address/port and protocol state flags in the value).
    pub const CT: &str = "kct_v2";
    /// rev-NAT id (`u32`) -> [`super::MaglevTable`], hash: backend choice for external traffic.
    pub const MAGLEV: &str = "kmaglev_v1";
    /// pod address (`u32`, network order) -> [`super::LocalPod`], hash: pods on this node,
    /// delivered straight into their namespace (`bpf_redirect_peer`).
    pub const LOCAL_PODS: &str = "klocalpod_v1";
    /// pod CIDR (LPM key: prefix length, address in network order) -> [`super::NodeRoute`],
    /// LPM trie: which node owns a pod address on another node, and how to get there.
    pub const NODE_ROUTES: &str = "knoderoute_v1";
    /// ifindex (`u32`) -> this node's IPv4 address on that interface (`u32`, network order),
    /// hash: the SNAT source where the kernel's `bpf_fib_lookup` lacks `BPF_FIB_LOOKUP_SRC`
    /// (before 6.7, unless backported). Written by the agent from the node's addresses.
    pub const SNAT_SOURCES: &str = "ksnatsrc_v1";
    /// LPM trie: address (network order, [`super::IpcacheKey`]) -> [`super::IdentityValue`].
    /// Pods of every node (`/32`), this node's addresses ([`super::identity::HOST`]) and the
    /// CIDRs of ipBlock peers; an address no entry covers is [`super::identity::WORLD`].
    pub const IPCACHE: &str = "kipcache_v1";
    /// Hash: a pod of this node (its address, network order) -> [`super::EndpointPolicy`]. A pod
    /// without an entry is selected by no NetworkPolicy: everything to and from it is allowed,
    /// and its flows are not tracked. An entry with no enforcement flag allows everything too
    /// but tracks the pod's flows in [`POLICY_CT`], so they survive a policy that starts
    /// selecting the pod: list every pod of the node to get Cilium's and Calico's behaviour.
    pub const ENDPOINTS: &str = "kendpoint_v1";
    /// LPM trie: [`super::PolicyKeyData`] -> [`super::PolicyEntry`]: what each policed endpoint
    /// allows, per direction, peer identity, protocol and port (range).
    pub const POLICY: &str = "kpolicy_v1";
    /// [`super::PolicyCtKey`] -> [`super::PolicyCtValue`], LRU hash: NetworkPolicy connection
    /// tracking. One entry per flow and enforcement point (the egress of its source pod, the
    /// ingress of its destination pod) where the pod has an [`ENDPOINTS`] entry: replies of a
    /// tracked flow pass whatever the policies of the reply direction say.
    pub const POLICY_CT: &str = "kpolct_v1";
    /// backend id (`u32`) -> [`super::BackendStats`], per-CPU hash: connections, flows, packets
    /// and bytes per backend. Entries are the agent's: it creates (zeroed) or resets one when it
    /// writes a new backend under an id and deletes it with the backend; the programs only add
    /// to an entry that exists.
    pub const BACKEND_STATS: &str = "kbackstats_v1";
    /// Ring buffer of [`super::FlowEvent`]s: NetworkPolicy drops and new allowed flows at
    /// enforcing endpoints, read by the agent (`keelson-node-agent observe`). Its size is
    /// [`super::capacity::FLOWS_BYTES`].
    pub const FLOWS: &str = "kflows_v1";
    /// [`super::EndpointStatsKey`] -> `u64`, per-CPU hash: packets each policed pod of this
    /// node passed or dropped, per direction (`/metrics`).
    pub const ENDPOINT_STATS: &str = "kepstats_v1";
    /// Every map the load balancer's object pins (and reuses by these names after a restart).
    pub const PINNED: [&str; 18] = [
        SERVICES,
        BACKENDS,
        REV_NAT,
        SOCK_REV_NAT,
        AFFINITY,
        METRICS,
        CT,
        MAGLEV,
        LOCAL_PODS,
        NODE_ROUTES,
        SNAT_SOURCES,
        IPCACHE,
        ENDPOINTS,
        POLICY,
        POLICY_CT,
        BACKEND_STATS,
        FLOWS,
        ENDPOINT_STATS,
    ];
}

/// Service lookup scopes ([`ServiceKey::scope`]).
pub mod scope {
    /// Traffic from this node (sockets, local pods): all backends the Service's
    /// `internalTrafficPolicy` allows.
    pub const INTERNAL: u8 = 0;
    /// Traffic from outside the node (NodePort, externalIPs, LoadBalancer IPs): the backends
    /// `externalTrafficPolicy` allows.
    pub const EXTERNAL: u8 = 1;
}

/// Flags of a service header ([`ServiceValue::flags`], slot 0).
pub mod service_flags {
    /// `sessionAffinity: ClientIP`: [`super::ServiceValue::affinity_timeout_s`] applies.
    pub const AFFINITY: u16 = 1 << 0;
    /// The frontend is a NodePort.
    pub const NODE_PORT: u16 = 1 << 1;
    /// The frontend is an externalIP or a LoadBalancer ingress IP.
    pub const EXTERNAL: u16 = 1 << 2;
    /// Backends are chosen by the Maglev table rather than at random.
    pub const MAGLEV: u16 = 1 << 3;
    /// `externalTrafficPolicy: Local`: keep the client address, never SNAT.
    pub const EXTERNAL_LOCAL: u16 = 1 << 4;
    /// The frontend is a pod's `hostPort` (its one backend is that pod, on this node).
    pub const HOST_PORT: u16 = 1 << 5;
}

/// Backend states ([`Backend::state`]).
pub mod backend_state {
    /// Ready: eligible for new connections.
    pub const ACTIVE: u8 = 0;
    /// Serving but terminating: used only when a Service has no ready backend; connections
    /// already established to it continue either way.
    pub const TERMINATING: u8 = 1;
}

/// Backend flags ([`Backend::flags`]).
pub mod backend_flags {
    /// The backend is a pod on this node.
    pub const LOCAL: u8 = 1 << 0;
}

/// Metric counter ids: indices of [`maps::METRICS`]. Every packet or socket path has one.
pub mod metric {
    /// Socket-LB: a connect/sendmsg to a service address was translated to a backend.
    pub const SOCK_TRANSLATED: u32 = 0;
    /// Socket-LB: the service had no backend; the connect/sendmsg was refused.
    pub const SOCK_NO_BACKEND: u32 = 1;
    /// Socket-LB: recvmsg/getpeername showed the service address instead of the backend's.
    pub const SOCK_REV_NAT: u32 = 2;
    /// Socket-LB or TC: a client's affinity entry chose the backend.
    pub const AFFINITY_HIT: u32 = 3;
    /// Socket-LB: a slot or backend entry was missing (map mid-update); the socket was refused
    /// rather than left pointing at the VIP.
    pub const SOCK_LOOKUP_MISS: u32 = 4;
    /// Socket-LB: the reverse-NAT entry could not be stored (map full); replies would show the
    /// backend address.
    pub const SOCK_REV_NAT_STORE_FAILED: u32 = 5;
    /// TC: a packet of a new flow to a service was translated (conntrack entry created).
    pub const TC_NEW_FLOW: u32 = 6;
    /// TC: a packet to a service matched its conntrack entry and was translated.
    pub const TC_CT_HIT: u32 = 7;
    /// TC: a reply from a backend was translated back to the service address.
    pub const TC_REV_NAT: u32 = 8;
    /// TC: an ICMP error about a translated flow was translated back.
    pub const TC_ICMP_REV_NAT: u32 = 9;
    /// TC: a packet to a service without backends was answered with ICMP port unreachable.
    pub const TC_NO_BACKEND: u32 = 10;
    /// TC: an IPv4 fragment passed untranslated (never for a service: see the docs).
    pub const TC_FRAGMENT: u32 = 11;
    /// TC: a malformed or truncated IPv4/L4 header passed untouched.
    pub const TC_MALFORMED: u32 = 12;
    /// TC: a conntrack entry could not be stored; the packet was dropped.
    pub const TC_CT_STORE_FAILED: u32 = 13;
    /// TC: the Maglev table chose the backend.
    pub const TC_MAGLEV: u32 = 14;
    /// TC: a slot or backend entry was missing (map mid-update); the packet was dropped.
    pub const TC_LOOKUP_MISS: u32 = 15;
    /// TC: a new external flow to a backend on another node was source-NATed to this node's
    /// address (`externalTrafficPolicy: Cluster`).
    pub const TC_SNAT_NEW_FLOW: u32 = 16;
    /// TC: a packet of a source-NATed flow was translated and forwarded (either direction).
    pub const TC_SNAT_FORWARDED: u32 = 17;
    /// TC: a flow needing SNAT could not get it (no route or source address for the backend, or
    /// no free SNAT port); the packet was dropped.
    pub const TC_SNAT_FAILED: u32 = 18;
    /// TC: a packet for a pod on this node went straight into its namespace
    /// (`bpf_redirect_peer`).
    pub const TC_REDIRECT_PEER: u32 = 19;
    /// TC: a packet for a pod on another node went out of the uplink to that node
    /// (`bpf_redirect_neigh`, direct routing).
    pub const TC_REDIRECT_NODE: u32 = 20;
    /// TC: a packet for a pod on another node went into the VXLAN tunnel to that node.
    pub const TC_REDIRECT_TUNNEL: u32 = 21;
    /// TC: a packet to route had its TTL run out: left to the kernel (ICMP time exceeded).
    pub const TC_ROUTE_TTL: u32 = 22;
    /// TC: a new source-NATed flow took its source address from [`super::maps::SNAT_SOURCES`]
    /// because the kernel's `bpf_fib_lookup` rejected `BPF_FIB_LOOKUP_SRC`.
    pub const TC_SNAT_SOURCE_MAP: u32 = 23;
    /// Policy: a packet into a pod was dropped because no NetworkPolicy of the pod allows it
    /// (and it is no reply of a flow the pod started).
    pub const POLICY_DENIED_INGRESS: u32 = 24;
    /// Policy: a packet out of a pod was dropped because no NetworkPolicy of the pod allows it
    /// (and it is no reply of a flow the pod accepted).
    pub const POLICY_DENIED_EGRESS: u32 = 25;
    /// Policy: a new flow at an enforcing endpoint was allowed by a [`super::maps::POLICY`]
    /// entry (and tracked).
    pub const POLICY_ALLOWED_NEW: u32 = 26;
    /// Policy: a packet passed as the reply of a tracked flow (or an ICMP error about one).
    pub const POLICY_CT_REPLY: u32 = 27;
    /// Policy: a packet passed as part of a tracked flow in its own direction (the policy is
    /// not consulted again while the flow's entry lives).
    pub const POLICY_CT_ESTABLISHED: u32 = 28;
    /// Policy: a new flow at an enforcing endpoint passed because its peer is this node
    /// ([`super::identity::HOST`], or a packet the node's own stack sent).
    pub const POLICY_HOST: u32 = 29;
    /// Policy: an allowed flow's tracking entry could not be stored (map error); the packet
    /// passed, but its replies may be judged by the reverse direction's policy.
    pub const POLICY_CT_STORE_FAILED: u32 = 30;
    /// Policy: an IPv4 fragment to or from an enforcing endpoint was dropped: fragments carry
    /// no ports, so only a peer allowed on every port of the protocol may send them.
    pub const POLICY_FRAGMENT_DENIED: u32 = 31;
    /// Policy: a packet to or from an enforcing endpoint was dropped because its L4 header
    /// (ports, ICMP header) could not be read.
    pub const POLICY_MALFORMED: u32 = 32;
    /// Flows: a [`super::FlowEvent`] was not recorded because [`super::maps::FLOWS`] was full
    /// (the agent reads too slowly); the packet's verdict is unaffected.
    pub const FLOW_EVENTS_LOST: u32 = 33;
    /// Agent (not a packet path): conntrack flows the agent's GC deleted because their
    /// protocol-state timeout passed. Written by the agent only.
    pub const CT_GC_EXPIRED: u32 = 61;
    /// Agent: conntrack flows the agent's GC evicted early because the table passed its
    /// high-water mark (oldest non-established or idle first). Written by the agent only.
    pub const CT_GC_EVICTED: u32 = 62;
    /// Agent: conntrack GC passes run. Written by the agent only.
    pub const CT_GC_PASSES: u32 = 63;
    /// Number of counters (size of the array).
    pub const COUNT: u32 = 64;
    /// Counters the agent keeps in the array (ids and names), exported as their own metrics.
    pub const AGENT_NAMES: [(u32, &str); 3] = [
        (CT_GC_EXPIRED, "ct_gc_expired"),
        (CT_GC_EVICTED, "ct_gc_evicted"),
        (CT_GC_PASSES, "ct_gc_passes"),
    ];
    /// Names of the packet-path counters, indexed by id, as exported on `/metrics`.
    pub const NAMES: [&str; 34] = [
        "sock_translated",
        "sock_no_backend",
        "sock_rev_nat",
        "affinity_hit",
        "sock_lookup_miss",
        "sock_rev_nat_store_failed",
        "tc_new_flow",
        "tc_ct_hit",
        "tc_rev_nat",
        "tc_icmp_rev_nat",
        "tc_no_backend",
        "tc_fragment",
        "tc_malformed",
        "tc_ct_store_failed",
        "tc_maglev",
        "tc_lookup_miss",
        "tc_snat_new_flow",
        "tc_snat_forwarded",
        "tc_snat_failed",
        "tc_redirect_peer",
        "tc_redirect_node",
        "tc_redirect_tunnel",
        "tc_route_ttl",
        "tc_snat_source_map",
        "policy_denied_ingress",
        "policy_denied_egress",
        "policy_allowed_new",
        "policy_ct_reply",
        "policy_ct_established",
        "policy_host",
        "policy_ct_store_failed",
        "policy_fragment_denied",
        "policy_malformed",
        "flow_events_lost",
    ];
}

/// Security identities ([`IdentityValue::identity`], [`PolicyKeyData`]): what NetworkPolicy peers
/// are judged by. The agent numbers them on its own node (nothing carries an identity between
/// nodes): every class of peers no selector or ipBlock of any policy tells apart gets one
/// number, so a policy map holds one entry per (class, port), however many policies there are.
pub mod identity {
    /// In a [`super::PolicyKeyData`]: any peer (a rule with no `from`/`to`). Never an address's.
    pub const ANY: u32 = 0;
    /// This node's own addresses: traffic between a pod and its node is always allowed, as
    /// Kubernetes requires (the kubelet's probes).
    pub const HOST: u32 = 1;
    /// Addresses no [`super::maps::IPCACHE`] entry covers (outside the cluster, no ipBlock).
    pub const WORLD: u32 = 2;
    /// The first number the agent hands out to a class of pods or CIDRs.
    pub const FIRST_ALLOCATED: u32 = 256;
}

/// Key data of [`maps::IPCACHE`] (the LPM trie's prefix covers its bytes in order): an IPv4
/// address, network order.
pub type IpcacheKey = u32;

/// Value of [`maps::IPCACHE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IdentityValue {
    /// The [`identity`] of the addresses the entry covers.
    pub identity: u32,
    /// Reserved (zero).
    pub _pad: u32,
}

/// Bits of [`EndpointPolicy::flags`].
pub mod endpoint_flags {
    /// Some policy with `Ingress` in its types selects the pod: only what [`super::maps::POLICY`]
    /// allows in (and replies of the pod's own allowed flows) reaches it.
    pub const INGRESS_ENFORCED: u32 = 1 << 0;
    /// Some policy with `Egress` in its types selects the pod: only what the map allows out.
    pub const EGRESS_ENFORCED: u32 = 1 << 1;
}

/// Value of [`maps::ENDPOINTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointPolicy {
    /// [`endpoint_flags`].
    pub flags: u32,
    /// The pod's own [`identity`] (the source or destination class of its traffic as this
    /// node judges it; also in [`maps::IPCACHE`]).
    pub identity: u32,
}

/// [`PolicyKeyData::direction`].
pub mod policy_direction {
    /// Traffic into the endpoint (the peer is the source).
    pub const INGRESS: u8 = 0;
    /// Traffic out of the endpoint (the peer is the destination).
    pub const EGRESS: u8 = 1;
}

/// Number of key bits of [`PolicyKeyData`] before the protocol: an entry with this prefix
/// length allows every protocol and port (a rule without `ports`).
pub const POLICY_PREFIX_ANY_PROTO: u32 = 72;
/// Number of key bits before the port: an entry with this prefix length allows every port of
/// its protocol (a port entry without `port`). Longer prefixes cover port ranges (`endPort`):
/// `POLICY_PREFIX_ANY_PORT + k` fixes the port's first `k` bits; 96 is one port.
pub const POLICY_PREFIX_ANY_PORT: u32 = 80;
/// Prefix length of a single port.
pub const POLICY_PREFIX_FULL: u32 = 96;

/// Key data of [`maps::POLICY`], in the order the LPM trie matches: every field is fully
/// matched except the protocol and the port, which a shorter prefix leaves open. A lookup is
/// done with the peer's identity, then with [`identity::ANY`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKeyData {
    /// The endpoint: the local pod's address, network order.
    pub endpoint_be: u32,
    /// The peer's [`identity`], network order (or [`identity::ANY`]).
    pub identity_be: u32,
    /// [`policy_direction`].
    pub direction: u8,
    /// The L4 protocol number ([`proto`]; 132 for SCTP).
    pub proto: u8,
    /// The endpoint's port for ingress, the peer's port for egress (network order).
    pub dport_be: u16,
}

/// Value of [`maps::POLICY`]: an allowed (endpoint, direction, peer, protocol, port range).
/// NetworkPolicy v1 only allows, so an entry always means allow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyEntry {
    /// Which rule allowed it, for the flow view: an index the agent keeps (0 = none recorded).
    pub rule_id: u32,
    /// Reserved (zero).
    pub _pad: u32,
}

/// Key of [`maps::POLICY_CT`]: a flow as the policy judged it, and where.
///
/// The tuple is the one a pod's policy is about: the source as the pod sent it (or as it came
/// from its peer) and the destination after service translation (the chosen backend), before
/// any reverse translation of replies. So a flow's replies carry exactly the reversed tuple,
/// whether the service address was translated by socket-LB, by the TC path or not at all.
/// TCP, UDP and SCTP flows are keyed by their ports; ICMP echo by its identifier (the
/// request's source port, the reply's destination port, the other port 0); other protocols by
/// their addresses alone (ports 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyCtKey {
    /// Source address, network order.
    pub saddr_be: u32,
    /// Destination address (after service translation), network order.
    pub daddr_be: u32,
    /// Source port (ICMP echo request: the identifier), network order.
    pub sport_be: u16,
    /// Destination port (ICMP echo reply: the identifier), network order.
    pub dport_be: u16,
    /// [`proto`] number.
    pub proto: u8,
    /// The enforcement point that tracked it ([`policy_direction`]): `EGRESS` of the source
    /// pod, `INGRESS` of the destination pod. A flow between two policed pods of this node has
    /// an entry of each.
    pub direction: u8,
    /// Explicit padding; always 0.
    pub _pad: u16,
}

impl PolicyCtKey {
    /// The key a reply of this flow would have at the other enforcement point of the same pod:
    /// addresses and ports swapped, the other direction.
    #[must_use]
    pub const fn reversed(&self) -> Self {
        Self {
            saddr_be: self.daddr_be,
            daddr_be: self.saddr_be,
            sport_be: self.dport_be,
            dport_be: self.sport_be,
            proto: self.proto,
            direction: self.direction ^ 1,
            _pad: 0,
        }
    }
}

/// Bits of [`PolicyCtValue::flags`].
pub mod policy_ct_flags {
    /// A reply of the flow was seen: a TCP flow is established.
    pub const REPLIED: u8 = 1 << 0;
    /// A TCP FIN or RST was seen (either direction): the flow is closing, and a new SYN on
    /// the same tuple is judged as a new connection.
    pub const CLOSING: u8 = 1 << 1;
}

/// Value of [`maps::POLICY_CT`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PolicyCtValue {
    /// `bpf_ktime_get_ns` of the flow's last packet (either direction).
    pub last_seen_ns: u64,
    /// The [`PolicyEntry::rule_id`] that allowed the flow (0: the direction was not enforced,
    /// or the peer is this node).
    pub rule_id: u32,
    /// [`policy_ct_flags`].
    pub flags: u8,
    /// Explicit padding; always 0.
    pub _pad: [u8; 3],
}

/// Idle timeouts of [`maps::POLICY_CT`] entries, nanoseconds (Cilium's defaults). An entry idle
/// for longer is treated as absent (and replaced by the next allowed flow on its tuple): from
/// then on the flow's packets are judged by the policy again.
pub mod policy_ct_timeout {
    /// An established TCP flow (a reply seen, no FIN/RST): 6 hours.
    pub const TCP_ESTABLISHED_NS: u64 = 21_600 * 1_000_000_000;
    /// A TCP flow without a reply yet: 60 seconds.
    pub const TCP_SYN_NS: u64 = 60 * 1_000_000_000;
    /// A TCP flow after FIN or RST: 10 seconds.
    pub const TCP_CLOSING_NS: u64 = 10 * 1_000_000_000;
    /// Any other protocol (UDP, SCTP, ICMP, ...): 60 seconds.
    pub const OTHER_NS: u64 = 60 * 1_000_000_000;

    /// How long an entry of protocol `proto` with [`super::policy_ct_flags`] `flags` lives
    /// without traffic.
    #[must_use]
    pub const fn for_flow(proto: u8, flags: u8) -> u64 {
        if proto != super::proto::TCP {
            OTHER_NS
        } else if flags & super::policy_ct_flags::CLOSING != 0 {
            TCP_CLOSING_NS
        } else if flags & super::policy_ct_flags::REPLIED != 0 {
            TCP_ESTABLISHED_NS
        } else {
            TCP_SYN_NS
        }
    }
}

/// [`FlowEvent::verdict`] values.
pub mod flow_verdict {
    /// The packet passed (a new flow a policy entry allowed, or whose peer is this node).
    pub const ALLOWED: u8 = 1;
    /// The packet was dropped.
    pub const DROPPED: u8 = 2;
}

/// One record of [`maps::FLOWS`]: a NetworkPolicy verdict at one enforcement point. Written
/// for every drop and for the first packet of every flow allowed at an enforcing point (not
/// for the packets of tracked flows).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowEvent {
    /// `bpf_ktime_get_ns` (`CLOCK_MONOTONIC`) when the packet was judged.
    pub time_ns: u64,
    /// Source address, network order.
    pub saddr_be: u32,
    /// Destination address (after service translation), network order.
    pub daddr_be: u32,
    /// Source port (ICMP echo request: identifier), network order.
    pub sport_be: u16,
    /// Destination port (ICMP echo reply: identifier), network order.
    pub dport_be: u16,
    /// [`proto`] number.
    pub proto: u8,
    /// [`flow_verdict`].
    pub verdict: u8,
    /// The enforcement point ([`policy_direction`]): the ingress of the destination pod or
    /// the egress of the source pod.
    pub direction: u8,
    /// Explicit padding; always 0.
    pub _pad: u8,
    /// Why: the [`metric`] id counted for the packet (`POLICY_DENIED_INGRESS`,
    /// `POLICY_ALLOWED_NEW`, `POLICY_HOST`, ...).
    pub reason: u32,
    /// The policed pod whose point judged it (its address, network order).
    pub endpoint_be: u32,
    /// The peer's [`identity`] as the datapath resolved it (host order).
    pub peer_identity: u32,
    /// The [`PolicyEntry::rule_id`] that allowed the flow; 0 for drops (no single rule drops
    /// a packet: the pod is isolated by every policy selecting it) and for the node's own
    /// traffic.
    pub rule_id: u32,
}

/// Key of [`maps::ENDPOINT_STATS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointStatsKey {
    /// The policed pod (its address, network order).
    pub endpoint_be: u32,
    /// [`policy_direction`].
    pub direction: u8,
    /// [`flow_verdict`].
    pub verdict: u8,
    /// Explicit padding; always 0.
    pub _pad: u16,
}

/// Bits of the packet mark (`skb->mark`) the datapath uses.
pub mod skb_mark {
    /// Set by `tc_from_pod`/`tc_from_netdev` on a packet whose destination pod's ingress policy
    /// they already judged (they know the flow before service translation); `tc_to_pod` then
    /// lets it through without judging it again. The mark is cleared when the packet crosses
    /// into the pod's network namespace.
    pub const POLICY_JUDGED: u32 = 1 << 26;
}

/// Key of [`maps::SERVICES`]. Slot 0 is the service header; slots `1..=count` hold its backends.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Frontend address, network byte order: ClusterIP, externalIP, LoadBalancer IP or node IP.
    pub address_be: u32,
    /// Frontend port, network byte order.
    pub port_be: u16,
    /// [`proto`] number.
    pub proto: u8,
    /// [`scope`] of the lookup.
    pub scope: u8,
    /// 0 for the header, `1..=count` for backend slots.
    pub slot: u16,
    /// Explicit padding; always 0.
    pub _pad: u16,
}

/// Value of [`maps::SERVICES`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceValue {
    /// Backend slots: the [`maps::BACKENDS`] id. Header: 0.
    pub backend_id: u32,
    /// Header: number of backend slots (0: the service refuses connections). Slots: 0.
    pub count: u16,
    /// The [`maps::REV_NAT`] id of this frontend (header and slots).
    pub rev_nat_id: u16,
    /// Header: [`service_flags`].
    pub flags: u16,
    /// Explicit padding; always 0.
    pub _pad: u16,
    /// Header: `sessionAffinityConfig.clientIP.timeoutSeconds` when [`service_flags::AFFINITY`].
    pub affinity_timeout_s: u32,
}

/// Value of [`maps::BACKENDS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Backend {
    /// Backend (pod) address, network byte order.
    pub address_be: u32,
    /// Backend (target) port, network byte order.
    pub port_be: u16,
    /// [`proto`] number.
    pub proto: u8,
    /// [`backend_state`].
    pub state: u8,
    /// [`backend_flags`].
    pub flags: u8,
    /// Explicit padding; always 0.
    pub _pad: [u8; 3],
}

/// Value of [`maps::REV_NAT`]: the frontend a reply must appear to come from.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RevNat {
    /// Frontend address, network byte order.
    pub address_be: u32,
    /// Frontend port, network byte order.
    pub port_be: u16,
    /// Explicit padding; always 0.
    pub _pad: u16,
}

/// Key of [`maps::SOCK_REV_NAT`]: a socket and the backend it was translated to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockRevNatKey {
    /// `bpf_get_socket_cookie` of the socket.
    pub cookie: u64,
    /// Backend address, network byte order.
    pub address_be: u32,
    /// Backend port, network byte order.
    pub port_be: u16,
    /// Explicit padding; always 0.
    pub _pad: u16,
}

/// Value of [`maps::SOCK_REV_NAT`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockRevNat {
    /// Service address, network byte order.
    pub address_be: u32,
    /// Service port, network byte order.
    pub port_be: u16,
    /// The service's rev-NAT id (for `ct list`-style inspection).
    pub rev_nat_id: u16,
}

/// Key of [`maps::AFFINITY`]: one client of one service.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AffinityKey {
    /// The client: its network-namespace cookie for socket-LB (one per pod), its address
    /// (network byte order, widened) for per-packet LB.
    pub client: u64,
    /// The service frontend's rev-NAT id.
    pub rev_nat_id: u16,
    /// Explicit padding; always 0.
    pub _pad: [u16; 3],
}

/// Value of [`maps::AFFINITY`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AffinityValue {
    /// The backend this client sticks to.
    pub backend_id: u32,
    /// Explicit padding; always 0.
    pub _pad: u32,
    /// `bpf_ktime_get_ns` of the last connection that used it.
    pub last_used_ns: u64,
}

/// Value of [`maps::BACKEND_STATS`], one per CPU; the agent sums them. Every field only grows
/// while the backend id names the same backend (the agent zeroes the entry when it reuses the
/// id for another backend). Bytes are `skb->len` at the TC hook (L2 header included).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendStats {
    /// Socket-LB: connects (TCP, connected UDP) and unconnected UDP sends translated to the
    /// backend.
    pub sock_connects: u64,
    /// TC: new flows (conntrack entries created) to the backend.
    pub tc_new_flows: u64,
    /// TC: packets of translated flows towards the backend (forward direction).
    pub tc_forward_packets: u64,
    /// TC: bytes of those packets.
    pub tc_forward_bytes: u64,
    /// TC: packets of translated flows from the backend, reverse-NATed (reply direction).
    pub tc_reply_packets: u64,
    /// TC: bytes of those packets.
    pub tc_reply_bytes: u64,
}

impl BackendStats {
    /// Adds another CPU's share to this one (used when summing per-CPU values).
    #[must_use]
    pub const fn merged(self, other: Self) -> Self {
        Self {
            sock_connects: self.sock_connects.wrapping_add(other.sock_connects),
            tc_new_flows: self.tc_new_flows.wrapping_add(other.tc_new_flows),
            tc_forward_packets: self
                .tc_forward_packets
                .wrapping_add(other.tc_forward_packets),
            tc_forward_bytes: self.tc_forward_bytes.wrapping_add(other.tc_forward_bytes),
            tc_reply_packets: self.tc_reply_packets.wrapping_add(other.tc_reply_packets),
            tc_reply_bytes: self.tc_reply_bytes.wrapping_add(other.tc_reply_bytes),
        }
    }
}

/// Directions of a conntrack entry ([`CtKey::dir`]).
pub mod ct_dir {
    /// Client -> service frontend, as the client sent it.
    pub const FORWARD: u8 = 0;
    /// Backend -> client, as the backend answers.
    pub const REPLY: u8 = 1;
}

/// Flags of a conntrack entry ([`CtValue::flags`]). Each direction's entry records what its own
/// packets showed; the agent's GC reads a flow's state from both entries together.
pub mod ct_flags {
    /// Both addresses are rewritten: forward packets get this node's address and a SNAT port as
    /// their source ([`super::CtValue::snat_addr_be`]); replies get the client back as their
    /// destination.
    pub const SNAT: u8 = 1 << 0;
    /// A packet travelled in this entry's direction after the flow was created: on the reply
    /// entry, the backend answered (TCP SYN-ACK, UDP reply): the flow is established.
    pub const SEEN: u8 = 1 << 1;
    /// A TCP FIN or RST was seen in this entry's direction: the flow is closing.
    pub const CLOSING: u8 = 1 << 2;
}

/// Key of [`maps::CT`]: a flow's 5-tuple as seen on the wire, and its direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtKey {
    /// Source address, network byte order.
    pub saddr_be: u32,
    /// Destination address, network byte order.
    pub daddr_be: u32,
    /// Source port, network byte order.
    pub sport_be: u16,
    /// Destination port, network byte order.
    pub dport_be: u16,
    /// [`proto`] number.
    pub proto: u8,
    /// [`ct_dir`].
    pub dir: u8,
    /// Explicit padding; always 0.
    pub _pad: u16,
}

/// Value of [`maps::CT`]: where the flow's packets are translated to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// Forward: the backend address; reply: the frontend address (network byte order).
    pub nat_addr_be: u32,
    /// Forward: the backend port; reply: the frontend port (network byte order).
    pub nat_port_be: u16,
    /// The frontend's rev-NAT id.
    pub rev_nat_id: u16,
    /// The backend id chosen for the flow.
    pub backend_id: u32,
    /// Where translated packets of this direction are sent with `bpf_redirect_neigh` (0: left
    /// to the kernel's routing). Reply entries of flows from outside the node (external scope):
    /// the interface the request came in through (the reply's new source is a node address,
    /// which the node's own routing would refuse as a martian). Forward entries of SNAT flows:
    /// the interface the FIB chose towards the backend.
    pub ifindex: u32,
    /// `bpf_ktime_get_ns` when a packet of this direction was last seen.
    pub last_seen_ns: u64,
    /// With [`ct_flags::SNAT`]: forward, the node address the source becomes; reply, the
    /// client address the destination is restored to (network byte order). 0 otherwise.
    pub snat_addr_be: u32,
    /// With [`ct_flags::SNAT`]: forward, the SNAT source port; reply, the client's port
    /// (network byte order). 0 otherwise.
    pub snat_port_be: u16,
    /// [`ct_flags`].
    pub flags: u8,
    /// Explicit padding; always 0.
    pub _pad: u8,
}

/// The source a pod sees on a connection to its own Service that the TC path sent back to it
/// (hairpin): a link-local address no node or pod holds (Cilium's `IPV4_LOOPBACK` is the same),
/// so the pod's answer leaves through its veth, where it is translated back. Octets in wire
/// order.
pub const HAIRPIN_SOURCE: [u8; 4] = [169, 254, 42, 1];

/// SNAT source ports for flows this node forwards to backends on other nodes: above Linux's
/// default ephemeral range (32768-60999), so they do not collide with the node's own sockets.
pub mod snat_ports {
    /// First port (host order).
    pub const MIN: u16 = 61_000;
    /// Last port (host order).
    pub const MAX: u16 = 65_535;
    /// Ports tried (from a hash of the client's tuple, then consecutively) before giving up.
    pub const RETRIES: u32 = 16;
}

/// Entries of one Maglev lookup table: a prime, as Maglev requires (Cilium's default size).
pub const MAGLEV_TABLE_SIZE: u32 = 16381;

/// Value of [`maps::MAGLEV`]: backend ids indexed by a flow hash modulo [`MAGLEV_TABLE_SIZE`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevTable {
    /// The table.
    pub backend_ids: [u32; MAGLEV_TABLE_SIZE as usize],
}

/// A pod on this node ([`maps::LOCAL_PODS`]): where `bpf_redirect_peer` delivers its packets
/// and the Ethernet addresses they get on the way in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalPod {
    /// The pod's node-side veth (its peer is the pod's `eth0`).
    pub ifindex: u32,
    /// The pod's `eth0` address: the destination MAC.
    pub pod_mac: [u8; 6],
    /// The node-side veth's address, the pod's gateway: the source MAC.
    pub node_mac: [u8; 6],
}

/// How a [`NodeRoute`] reaches the node owning a pod CIDR.
pub mod route_mode {
    /// Direct routing: out of the uplink to the node's address as next hop
    /// (`bpf_redirect_neigh`); the nodes share an L2 network.
    pub const DIRECT: u8 = 1;
    /// VXLAN: tunnel key set to the node's address, out of the node's collect-metadata vxlan
    /// device ([`super::tunnel`]).
    pub const TUNNEL: u8 = 2;
}

/// The pod CIDR of another node ([`maps::NODE_ROUTES`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NodeRoute {
    /// The owning node's address (network order): next hop or tunnel endpoint.
    pub node_addr_be: u32,
    /// The interface the packet leaves by: the uplink (direct) or the vxlan device (tunnel).
    pub ifindex: u32,
    /// [`route_mode`].
    pub mode: u8,
    /// Padding (zero).
    pub _pad: [u8; 3],
}

/// The VXLAN tunnel between nodes.
pub mod tunnel {
    /// The VXLAN network identifier of pod traffic.
    pub const VNI: u32 = 1;
    /// The UDP port (Linux's and flannel's/Cilium's default; IANA's is 4789).
    pub const PORT: u16 = 8472;
    /// Encapsulation overhead: outer IPv4, UDP, VXLAN and inner Ethernet headers.
    pub const OVERHEAD: u32 = 50;
    /// The MAC address of the vxlan device of the node with address `node_addr_be` (network
    /// order): locally administered, `0e:6b` then the address. Every node can so address a
    /// tunnelled frame to the receiving device without asking it (the devices have ARP off).
    pub const fn device_mac(node_addr_be: u32) -> [u8; 6] {
        let a = node_addr_be.to_ne_bytes();
        [0x0e, 0x6b, a[0], a[1], a[2], a[3]]
    }
}

/// Default capacities (the agent can override them at load time).
pub mod capacity {
    /// Frontend headers plus backend slots.
    pub const SERVICES: u32 = 262_144;
    /// Distinct backends.
    pub const BACKENDS: u32 = 65_536;
    /// Frontends.
    pub const REV_NAT: u32 = 65_536;
    /// Translated sockets remembered for reverse NAT.
    pub const SOCK_REV_NAT: u32 = 262_144;
    /// Client-service affinity entries.
    pub const AFFINITY: u32 = 65_536;
    /// Conntrack entries of the TC path (two per flow).
    pub const CT: u32 = 262_144;
    /// Frontends with a Maglev table (external frontends).
    pub const MAGLEV: u32 = 1024;
    /// Pods on this node.
    pub const LOCAL_PODS: u32 = 4096;
    /// Pod CIDRs of other nodes.
    pub const NODE_ROUTES: u32 = 4096;
    /// Interfaces with an address for SNAT.
    pub const SNAT_SOURCES: u32 = 256;
    /// Addresses and CIDRs with an identity (pods of every node, ipBlock CIDRs and their
    /// exceptions).
    pub const IPCACHE: u32 = 262_144;
    /// Pods of this node selected by some NetworkPolicy.
    pub const ENDPOINTS: u32 = 4096;
    /// Policy entries of all endpoints of this node.
    pub const POLICY: u32 = 1_048_576;
    /// Policy conntrack entries (one per flow and enforcement point).
    pub const POLICY_CT: u32 = 262_144;
    /// Per-backend statistics: one entry per backend, so sized like [`BACKENDS`].
    pub const BACKEND_STATS: u32 = BACKENDS;
    /// Bytes of the flow-event ring buffer (a power of two, a multiple of the page size):
    /// about 26 000 events.
    pub const FLOWS_BYTES: u32 = 1 << 20;
    /// Per-endpoint counters: (pod, direction, verdict) of every policed pod of this node.
    pub const ENDPOINT_STATS: u32 = ENDPOINTS * 4;
}

#[cfg(feature = "user")]
mod user {
    use super::{
        AffinityKey, AffinityValue, Backend, BackendStats, CtKey, CtValue, IfaceCounters, IfaceKey,
        LocalPod, MaglevTable, NodeRoute, RevNat, ServiceKey, ServiceValue, SockRevNat,
        SockRevNatKey,
    };
    use super::{
        EndpointPolicy, EndpointStatsKey, FlowEvent, IdentityValue, PolicyCtKey, PolicyCtValue,
        PolicyEntry, PolicyKeyData,
    };

    // SAFETY: `#[repr(C)]`, only `u32` fields, no padding: every bit pattern is valid.
    unsafe impl aya::Pod for IfaceKey {}
    // SAFETY: `#[repr(C)]`, only `u64` fields, no padding: every bit pattern is valid.
    unsafe impl aya::Pod for IfaceCounters {}
    // SAFETY: for each type below: `#[repr(C)]`, integer fields only, padding spelled out as
    // fields, so every bit pattern is a valid value (layouts are pinned by the tests).
    unsafe impl aya::Pod for ServiceKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for ServiceValue {}
    // SAFETY: see above.
    unsafe impl aya::Pod for Backend {}
    // SAFETY: see above.
    unsafe impl aya::Pod for RevNat {}
    // SAFETY: see above.
    unsafe impl aya::Pod for SockRevNatKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for SockRevNat {}
    // SAFETY: see above.
    unsafe impl aya::Pod for AffinityKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for AffinityValue {}
    // SAFETY: see above.
    unsafe impl aya::Pod for CtKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for CtValue {}
    // SAFETY: see above.
    unsafe impl aya::Pod for MaglevTable {}
    // SAFETY: see above.
    unsafe impl aya::Pod for LocalPod {}
    // SAFETY: see above.
    unsafe impl aya::Pod for NodeRoute {}
    // SAFETY: see above.
    unsafe impl aya::Pod for IdentityValue {}
    // SAFETY: see above.
    unsafe impl aya::Pod for EndpointPolicy {}
    // SAFETY: see above.
    unsafe impl aya::Pod for PolicyKeyData {}
    // SAFETY: see above.
    unsafe impl aya::Pod for PolicyEntry {}
    // SAFETY: see above.
    unsafe impl aya::Pod for PolicyCtKey {}
    // SAFETY: see above.
    unsafe impl aya::Pod for PolicyCtValue {}
    // SAFETY: `#[repr(C)]`, only `u64` fields, no padding: every bit pattern is valid.
    unsafe impl aya::Pod for BackendStats {}
    // SAFETY: see above.
    unsafe impl aya::Pod for FlowEvent {}
    // SAFETY: see above.
    unsafe impl aya::Pod for EndpointStatsKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_kernel_side() {
        assert_eq!(core::mem::size_of::<IfaceKey>(), 8);
        assert_eq!(core::mem::align_of::<IfaceKey>(), 4);
        assert_eq!(core::mem::size_of::<IfaceCounters>(), 16);
        // No implicit padding anywhere: the sum of the fields is the size.
        assert_eq!(core::mem::size_of::<ServiceKey>(), 4 + 2 + 1 + 1 + 2 + 2);
        assert_eq!(core::mem::size_of::<ServiceValue>(), 4 + 2 + 2 + 2 + 2 + 4);
        assert_eq!(core::mem::size_of::<Backend>(), 4 + 2 + 1 + 1 + 1 + 3);
        assert_eq!(core::mem::size_of::<RevNat>(), 8);
        assert_eq!(core::mem::size_of::<SockRevNatKey>(), 8 + 4 + 2 + 2);
        assert_eq!(core::mem::size_of::<SockRevNat>(), 8);
        assert_eq!(core::mem::size_of::<AffinityKey>(), 8 + 2 + 6);
        assert_eq!(core::mem::size_of::<AffinityValue>(), 4 + 4 + 8);
        assert_eq!(core::mem::size_of::<CtKey>(), 4 + 4 + 2 + 2 + 1 + 1 + 2);
        assert_eq!(
            core::mem::size_of::<CtValue>(),
            4 + 2 + 2 + 4 + 4 + 8 + 4 + 2 + 1 + 1
        );
        assert_eq!(
            core::mem::size_of::<MaglevTable>(),
            4 * MAGLEV_TABLE_SIZE as usize
        );
        assert_eq!(core::mem::size_of::<LocalPod>(), 4 + 6 + 6);
        assert_eq!(core::mem::size_of::<NodeRoute>(), 4 + 4 + 1 + 3);
        assert_eq!(core::mem::size_of::<IdentityValue>(), 8);
        assert_eq!(core::mem::size_of::<EndpointPolicy>(), 8);
        assert_eq!(core::mem::size_of::<PolicyKeyData>(), 4 + 4 + 1 + 1 + 2);
        assert_eq!(
            POLICY_PREFIX_FULL as usize,
            8 * core::mem::size_of::<PolicyKeyData>()
        );
        assert_eq!(core::mem::size_of::<PolicyEntry>(), 8);
        assert_eq!(
            core::mem::size_of::<PolicyCtKey>(),
            4 + 4 + 2 + 2 + 1 + 1 + 2
        );
        assert_eq!(core::mem::size_of::<PolicyCtValue>(), 8 + 4 + 1 + 3);
        assert_eq!(core::mem::size_of::<BackendStats>(), 6 * 8);
        assert_eq!(
            core::mem::size_of::<FlowEvent>(),
            8 + 4 + 4 + 2 + 2 + 1 + 1 + 1 + 1 + 4 + 4 + 4 + 4
        );
        assert_eq!(core::mem::size_of::<EndpointStatsKey>(), 4 + 1 + 1 + 2);
    }

    #[test]
    fn a_reply_key_is_the_reversed_flow_at_the_other_enforcement_point() {
        let egress = PolicyCtKey {
            saddr_be: 1,
            daddr_be: 2,
            sport_be: 3,
            dport_be: 4,
            proto: proto::UDP,
            direction: policy_direction::EGRESS,
            _pad: 0,
        };
        let reply = egress.reversed();
        assert_eq!(
            (
                reply.saddr_be,
                reply.daddr_be,
                reply.sport_be,
                reply.dport_be
            ),
            (2, 1, 4, 3)
        );
        assert_eq!(reply.direction, policy_direction::INGRESS);
        assert_eq!(reply.reversed(), egress);
    }

    #[test]
    fn policy_ct_timeouts_follow_the_tcp_state() {
        use policy_ct_flags::{CLOSING, REPLIED};
        let t = policy_ct_timeout::for_flow;
        assert_eq!(t(proto::TCP, 0), policy_ct_timeout::TCP_SYN_NS);
        assert_eq!(
            t(proto::TCP, REPLIED),
            policy_ct_timeout::TCP_ESTABLISHED_NS
        );
        assert_eq!(
            t(proto::TCP, REPLIED | CLOSING),
            policy_ct_timeout::TCP_CLOSING_NS
        );
        assert_eq!(t(proto::UDP, REPLIED), policy_ct_timeout::OTHER_NS);
        assert_eq!(t(proto::SCTP, 0), policy_ct_timeout::OTHER_NS);
        assert_eq!(t(proto::ICMP, 0), policy_ct_timeout::OTHER_NS);
    }

    #[test]
    fn every_metric_has_a_name() {
        assert!(metric::NAMES.len() as u32 <= metric::COUNT);
        assert_eq!(
            metric::NAMES[metric::SOCK_REV_NAT_STORE_FAILED as usize],
            "sock_rev_nat_store_failed"
        );
        assert_eq!(
            metric::NAMES[metric::TC_LOOKUP_MISS as usize],
            "tc_lookup_miss"
        );
        assert_eq!(metric::NAMES[metric::TC_NEW_FLOW as usize], "tc_new_flow");
        assert_eq!(
            metric::NAMES[metric::TC_SNAT_FAILED as usize],
            "tc_snat_failed"
        );
        assert_eq!(metric::NAMES[metric::TC_ROUTE_TTL as usize], "tc_route_ttl");
        assert_eq!(
            metric::NAMES[metric::TC_SNAT_SOURCE_MAP as usize],
            "tc_snat_source_map"
        );
        assert_eq!(
            metric::NAMES[metric::POLICY_DENIED_INGRESS as usize],
            "policy_denied_ingress"
        );
        assert_eq!(
            metric::NAMES[metric::POLICY_DENIED_EGRESS as usize],
            "policy_denied_egress"
        );
        assert_eq!(
            metric::NAMES[metric::POLICY_ALLOWED_NEW as usize],
            "policy_allowed_new"
        );
        assert_eq!(
            metric::NAMES[metric::POLICY_CT_REPLY as usize],
            "policy_ct_reply"
        );
        assert_eq!(
            metric::NAMES[metric::POLICY_MALFORMED as usize],
            "policy_malformed"
        );
        assert_eq!(
            metric::NAMES[metric::FLOW_EVENTS_LOST as usize],
            "flow_events_lost"
        );
        assert_eq!(metric::NAMES.len() as u32, metric::FLOW_EVENTS_LOST + 1);
        for (id, _) in metric::AGENT_NAMES {
            assert!(id >= metric::NAMES.len() as u32 && id < metric::COUNT);
        }
    }

    #[test]
    fn backend_stats_merge_field_by_field() {
        let a = BackendStats {
            sock_connects: 1,
            tc_new_flows: 2,
            tc_forward_packets: 3,
            tc_forward_bytes: 4,
            tc_reply_packets: 5,
            tc_reply_bytes: 6,
        };
        let b = BackendStats {
            sock_connects: 10,
            tc_new_flows: 20,
            tc_forward_packets: 30,
            tc_forward_bytes: 40,
            tc_reply_packets: 50,
            tc_reply_bytes: 60,
        };
        let sum = a.merged(b);
        assert_eq!(
            (
                sum.sock_connects,
                sum.tc_new_flows,
                sum.tc_forward_packets,
                sum.tc_forward_bytes,
                sum.tc_reply_packets,
                sum.tc_reply_bytes
            ),
            (11, 22, 33, 44, 55, 66)
        );
        assert_eq!(BackendStats::default().merged(a), a);
    }

    #[test]
    fn per_cpu_values_merge_by_adding() {
        let a = IfaceCounters {
            packets: 3,
            bytes: 300,
        };
        let b = IfaceCounters {
            packets: 4,
            bytes: 1000,
        };
        assert_eq!(
            a.merged(b),
            IfaceCounters {
                packets: 7,
                bytes: 1300
            }
        );
    }
}

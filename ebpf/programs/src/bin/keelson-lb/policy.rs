//! NetworkPolicy enforcement at TC, with its own connection tracking.
//!
//! Where a packet is judged:
//! - the egress of a pod of this node: in `tc_from_pod` on the pod's veth, which sees every
//!   packet the pod sends;
//! - the ingress of a pod of this node: in the program that first handles the packet on the
//!   node: `tc_from_pod` (another pod of this node) or `tc_from_netdev` (other nodes, tunnel or
//!   direct, and outside), before it is redirected into the pod (`bpf_redirect_peer` skips
//!   the veth's own hooks) or handed to the node's routing; such a packet carries
//!   [`skb_mark::POLICY_JUDGED`]. `tc_to_pod`, at the TC egress of the pod's veth, judges
//!   what arrives without the mark: packets from the node's own stack (always allowed: a node
//!   reaches its pods) and packets routed in from interfaces without keelson's programs.
//!
//! Both points judge the same tuple, the flow as the pods see it: the source as sent, the
//! destination after service translation (a connection to a ClusterIP is judged by the backend
//! it reaches), before the reverse translation of replies ([`PolicyCtKey`]).
//!
//! At each point a pod with an `ENDPOINTS` entry passes a packet that is
//! 1. a reply of a flow tracked at its other point (or an ICMP error about one), or
//! 2. part of a flow tracked at this point, or
//! 3. a new flow this point does not enforce, or whose peer is this node, or that a `POLICY`
//!    entry allows for the peer's identity (then [`identity::ANY`]); the flow is then tracked.
//!
//! Everything else is dropped and counted (`policy_denied_ingress`/`_egress`). Drops and new
//! flows allowed at an enforcing point are also recorded as flow events, and every judged
//! packet in its pod's counters (`flows`).
//!
//! Established flows when policies change: a tracked flow goes on until its entry has been idle
//! for its timeout ([`policy_ct_timeout`]: 6 h for established TCP, 10 s after FIN/RST, 60 s
//! for the rest) or is evicted from the LRU map, whatever the policy says meanwhile; only new
//! flows (and a TCP SYN reusing a closing flow's tuple) see the new policy, as with Cilium and
//! Calico. Flows of a pod are tracked only while it has an `ENDPOINTS` entry: a pod that gains
//! its first entry with enforcement has its earlier flows judged packet by packet (an entry
//! without enforcement flags tracks without restricting).
//!
//! Fragments carry no ports (only the first holds the L4 header, and nothing here reassembles):
//! at an enforcing point one passes when its peer is this node or is allowed on every port of
//! its protocol, and is dropped otherwise (`policy_fragment_denied`). A packet whose ports or
//! ICMP header cannot be read is dropped at a policed pod (`policy_malformed`). Non-IPv4
//! packets (ARP) are never judged.

use aya_ebpf::{
    bindings::TC_ACT_SHOT, helpers::bpf_ktime_get_ns, maps::lpm_trie::Key, programs::TcContext,
};
use keelson_ebpf_common::{
    EndpointPolicy, POLICY_PREFIX_FULL, PolicyCtKey, PolicyCtValue, PolicyKeyData, endpoint_flags,
    flow_verdict, identity, metric, policy_ct_flags, policy_ct_timeout, policy_direction, proto,
    skb_mark,
};

use crate::{
    flows::{self, Verdict},
    maps::{ENDPOINTS, IPCACHE, POLICY, POLICY_CT, count},
};

const SHOT: i32 = TC_ACT_SHOT;
const TCP_FLAG_FIN: u8 = 0x01;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_RST: u8 = 0x04;
const TCP_FLAG_ACK: u8 = 0x10;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_ECHO: u8 = 8;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROBLEM: u8 = 12;

/// A packet's flow as the policy judges it (see the module docs for which tuple).
#[derive(Clone, Copy)]
pub struct Flow {
    /// Source address, network order.
    pub saddr: u32,
    /// Destination address after service translation, network order.
    pub daddr: u32,
    /// Source port (ICMP echo request: identifier), network order.
    pub sport: u16,
    /// Destination port (ICMP echo reply: identifier), network order.
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// TCP flags byte (0 for other protocols).
    pub tcp_flags: u8,
}

/// The policed pods a packet from `saddr` (judged for egress only when `from_pod`) to `daddr`
/// touches: their `ENDPOINTS` entries.
#[inline(always)]
fn endpoints(
    saddr: u32,
    daddr: u32,
    from_pod: bool,
) -> (Option<EndpointPolicy>, Option<EndpointPolicy>) {
    let source = if from_pod {
        // SAFETY: copied out at once.
        unsafe { ENDPOINTS.get(saddr) }.copied()
    } else {
        None
    };
    // SAFETY: copied out at once.
    let destination = unsafe { ENDPOINTS.get(daddr) }.copied();
    (source, destination)
}

/// Judges `flow` at the egress of its source (if a policed pod and `from_pod`) and the ingress
/// of its destination (if a policed pod; the packet is then marked as judged). `Err(SHOT)`
/// when either denies it.
#[inline(always)]
pub fn enforce(ctx: &TcContext, flow: &Flow, from_pod: bool) -> Result<(), i32> {
    // A pod reaching itself through a Service (hairpin) is not judged, as its loopback traffic
    // never is: upstream's NetworkPolicy tests expect it to pass (`AllowLoopback`), and
    // kube-proxy masquerades it to the node. Only from the pod's own veth: a packet from
    // elsewhere claiming the pod's address as its source is judged as any other.
    if from_pod && flow.saddr == flow.daddr {
        return Ok(());
    }
    let (source, destination) = endpoints(flow.saddr, flow.daddr, from_pod);
    if let Some(endpoint) = source {
        judge(policy_direction::EGRESS, &endpoint, flow, false)?;
    }
    if let Some(endpoint) = destination {
        judge(policy_direction::INGRESS, &endpoint, flow, false)?;
        mark_judged(ctx);
    }
    Ok(())
}

/// The verdict on a packet whose L4 header could not be read: dropped when it comes from
/// (`from_pod`) or goes to a policed pod, passed (for the kernel to drop) otherwise.
#[inline(always)]
pub fn malformed(saddr: u32, daddr: u32, from_pod: bool) -> i32 {
    // One lookup after the other: LLVM would otherwise OR the two map pointers, which the
    // verifier refuses.
    // SAFETY: only tested for presence.
    if from_pod && unsafe { ENDPOINTS.get(saddr) }.is_some() {
        count(metric::POLICY_MALFORMED);
        return SHOT;
    }
    // SAFETY: only tested for presence.
    if unsafe { ENDPOINTS.get(daddr) }.is_some() {
        count(metric::POLICY_MALFORMED);
        return SHOT;
    }
    count(metric::TC_MALFORMED);
    aya_ebpf::bindings::TC_ACT_OK
}

/// Reads the ports of a TCP, UDP or SCTP header at `l4` (all three start with them) and the
/// TCP flags; other protocols have none (zeroes).
#[inline(always)]
pub fn l4_ports(ctx: &TcContext, l4: usize, ip_proto: u8) -> Result<(u16, u16, u8), ()> {
    if ip_proto != proto::TCP && ip_proto != proto::UDP && ip_proto != proto::SCTP {
        return Ok((0, 0, 0));
    }
    let sport: u16 = ctx.load(l4).map_err(|_| ())?;
    let dport: u16 = ctx.load(l4 + 2).map_err(|_| ())?;
    let flags: u8 = if ip_proto == proto::TCP {
        ctx.load(l4 + 13).map_err(|_| ())?
    } else {
        0
    };
    Ok((sport, dport, flags))
}

/// Judges a packet of a protocol the load balancer does not translate (SCTP, anything but
/// TCP, UDP and ICMP): by its ports for SCTP, by its addresses for the rest.
#[inline(always)]
pub fn enforce_other(
    ctx: &TcContext,
    l4: usize,
    saddr: u32,
    daddr: u32,
    ip_proto: u8,
    from_pod: bool,
) -> Result<(), i32> {
    let (source, destination) = endpoints(saddr, daddr, from_pod);
    // Read whether or not a policed pod is involved; a failure only matters if one is (the
    // verifier refuses the two map pointers LLVM would OR for an early exit).
    let flow = l4_ports(ctx, l4, ip_proto).map(|(sport, dport, tcp_flags)| Flow {
        saddr,
        daddr,
        sport,
        dport,
        proto: ip_proto,
        tcp_flags,
    });
    if let Some(endpoint) = source {
        let Ok(flow) = flow else {
            count(metric::POLICY_MALFORMED);
            return Err(SHOT);
        };
        judge(policy_direction::EGRESS, &endpoint, &flow, false)?;
    }
    if let Some(endpoint) = destination {
        let Ok(flow) = flow else {
            count(metric::POLICY_MALFORMED);
            return Err(SHOT);
        };
        judge(policy_direction::INGRESS, &endpoint, &flow, false)?;
        mark_judged(ctx);
    }
    Ok(())
}

/// Judges an ICMP packet (before the load balancer translates an error's quote): an echo by
/// its identifier; an error (unreachable, time exceeded, parameter problem) as related to the
/// flow it quotes (passes when that flow is tracked at the pod, judged as a new ICMP flow
/// otherwise); other types by their addresses.
#[inline(always)]
pub fn enforce_icmp(
    ctx: &TcContext,
    l4: usize,
    saddr: u32,
    daddr: u32,
    from_pod: bool,
) -> Result<(), i32> {
    let (source, destination) = endpoints(saddr, daddr, from_pod);
    // Parsed whether or not a policed pod is involved (see `enforce_other`).
    let parsed = match icmp_flow(ctx, l4, saddr, daddr) {
        Ok(flow) => icmp_quote(ctx, l4).map(|related| (flow, related)),
        Err(()) => Err(()),
    };
    if let Some(endpoint) = source {
        let Ok((flow, related)) = parsed else {
            count(metric::POLICY_MALFORMED);
            return Err(SHOT);
        };
        // An error the pod sends is about a packet that came in.
        let known =
            related.is_some_and(|quoted| tracked(&ct_key(&quoted, policy_direction::INGRESS)));
        if known {
            count(metric::POLICY_CT_REPLY);
        } else {
            judge(policy_direction::EGRESS, &endpoint, &flow, false)?;
        }
    }
    if let Some(endpoint) = destination {
        let Ok((flow, related)) = parsed else {
            count(metric::POLICY_MALFORMED);
            return Err(SHOT);
        };
        // An error the pod receives is about a packet it sent.
        let known =
            related.is_some_and(|quoted| tracked(&ct_key(&quoted, policy_direction::EGRESS)));
        if known {
            count(metric::POLICY_CT_REPLY);
        } else {
            judge(policy_direction::INGRESS, &endpoint, &flow, false)?;
        }
        mark_judged(ctx);
    }
    Ok(())
}

/// Judges a fragment (see the module docs): no ports, no tracking.
#[inline(always)]
pub fn enforce_fragment(
    ctx: &TcContext,
    saddr: u32,
    daddr: u32,
    ip_proto: u8,
    from_pod: bool,
) -> Result<(), i32> {
    let (source, destination) = endpoints(saddr, daddr, from_pod);
    if let Some(endpoint) = source
        && endpoint.flags & endpoint_flags::EGRESS_ENFORCED != 0
        && !fragment_allowed(saddr, daddr, ip_proto, policy_direction::EGRESS)
    {
        count(metric::POLICY_FRAGMENT_DENIED);
        return Err(SHOT);
    }
    if let Some(endpoint) = destination {
        if endpoint.flags & endpoint_flags::INGRESS_ENFORCED != 0
            && !fragment_allowed(daddr, saddr, ip_proto, policy_direction::INGRESS)
        {
            count(metric::POLICY_FRAGMENT_DENIED);
            return Err(SHOT);
        }
        mark_judged(ctx);
    }
    Ok(())
}

/// `tc_to_pod`'s judgement of a packet the node routes into a pod (see the module docs).
/// `from_host`: the node's own stack sent it.
#[inline(always)]
pub fn enforce_to_pod(
    ctx: &TcContext,
    l4: usize,
    saddr: u32,
    daddr: u32,
    ip_proto: u8,
    fragment: bool,
    from_host: bool,
) -> Result<(), i32> {
    // SAFETY: copied out at once.
    let Some(endpoint) = (unsafe { ENDPOINTS.get(daddr) }).copied() else {
        return Ok(());
    };
    if fragment {
        if endpoint.flags & endpoint_flags::INGRESS_ENFORCED != 0
            && !from_host
            && !fragment_allowed(daddr, saddr, ip_proto, policy_direction::INGRESS)
        {
            count(metric::POLICY_FRAGMENT_DENIED);
            return Err(SHOT);
        }
        return Ok(());
    }
    let flow = if ip_proto == proto::ICMP {
        let Ok(flow) = icmp_flow(ctx, l4, saddr, daddr) else {
            count(metric::POLICY_MALFORMED);
            return Err(SHOT);
        };
        match icmp_quote(ctx, l4) {
            Ok(Some(quoted)) if tracked(&ct_key(&quoted, policy_direction::EGRESS)) => {
                count(metric::POLICY_CT_REPLY);
                return Ok(());
            }
            Ok(_) => flow,
            Err(()) => {
                count(metric::POLICY_MALFORMED);
                return Err(SHOT);
            }
        }
    } else {
        let Ok((sport, dport, tcp_flags)) = l4_ports(ctx, l4, ip_proto) else {
            count(metric::POLICY_MALFORMED);
            return Err(SHOT);
        };
        Flow {
            saddr,
            daddr,
            sport,
            dport,
            proto: ip_proto,
            tcp_flags,
        }
    };
    judge(policy_direction::INGRESS, &endpoint, &flow, from_host)
}

/// The flow of an ICMP packet at `l4`: echo request and reply by their identifier (the
/// request's source port, the reply's destination port), anything else by its addresses.
#[inline(always)]
fn icmp_flow(ctx: &TcContext, l4: usize, saddr: u32, daddr: u32) -> Result<Flow, ()> {
    let icmp_type: u8 = ctx.load(l4).map_err(|_| ())?;
    let (sport, dport) = icmp_ids(ctx, l4, icmp_type)?;
    Ok(Flow {
        saddr,
        daddr,
        sport,
        dport,
        proto: proto::ICMP,
        tcp_flags: 0,
    })
}

#[inline(always)]
fn icmp_ids(ctx: &TcContext, l4: usize, icmp_type: u8) -> Result<(u16, u16), ()> {
    if icmp_type == ICMP_ECHO {
        let id: u16 = ctx.load(l4 + 4).map_err(|_| ())?;
        Ok((id, 0))
    } else if icmp_type == ICMP_ECHO_REPLY {
        let id: u16 = ctx.load(l4 + 4).map_err(|_| ())?;
        Ok((0, id))
    } else {
        Ok((0, 0))
    }
}

/// The flow an ICMP error at `l4` quotes (`None` for other ICMP types); `Err` when the quote
/// cannot be read.
#[inline(always)]
fn icmp_quote(ctx: &TcContext, l4: usize) -> Result<Option<Flow>, ()> {
    let icmp_type: u8 = ctx.load(l4).map_err(|_| ())?;
    if icmp_type != ICMP_DEST_UNREACH
        && icmp_type != ICMP_TIME_EXCEEDED
        && icmp_type != ICMP_PARAMETER_PROBLEM
    {
        return Ok(None);
    }
    let inner = l4 + 8;
    let vihl: u8 = ctx.load(inner).map_err(|_| ())?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return Err(());
    }
    let inner_proto: u8 = ctx.load(inner + 9).map_err(|_| ())?;
    let saddr: u32 = ctx.load(inner + 12).map_err(|_| ())?;
    let daddr: u32 = ctx.load(inner + 16).map_err(|_| ())?;
    let inner_l4 = inner + ihl;
    let (sport, dport) = if inner_proto == proto::ICMP {
        let inner_type: u8 = ctx.load(inner_l4).map_err(|_| ())?;
        icmp_ids(ctx, inner_l4, inner_type)?
    } else {
        let (sport, dport, _) = l4_ports(ctx, inner_l4, inner_proto)?;
        (sport, dport)
    };
    Ok(Some(Flow {
        saddr,
        daddr,
        sport,
        dport,
        proto: inner_proto,
        tcp_flags: 0,
    }))
}

#[inline(always)]
fn ct_key(flow: &Flow, direction: u8) -> PolicyCtKey {
    PolicyCtKey {
        saddr_be: flow.saddr,
        daddr_be: flow.daddr,
        sport_be: flow.sport,
        dport_be: flow.dport,
        proto: flow.proto,
        direction,
        _pad: 0,
    }
}

/// Whether `value`'s flow is still live at `now`.
#[inline(always)]
fn alive(value: &PolicyCtValue, ip_proto: u8, now: u64) -> bool {
    now.wrapping_sub(value.last_seen_ns) <= policy_ct_timeout::for_flow(ip_proto, value.flags)
}

/// Whether the flow `key` (or its reply) is tracked and live.
#[inline(always)]
fn tracked(key: &PolicyCtKey) -> bool {
    // SAFETY: helper without side effects.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: copied out at once.
    let forward = unsafe { POLICY_CT.get(key) }.copied();
    if forward.is_some_and(|v| alive(&v, key.proto, now)) {
        return true;
    }
    // SAFETY: copied out at once.
    let reverse = unsafe { POLICY_CT.get(key.reversed()) }.copied();
    reverse.is_some_and(|v| alive(&v, key.proto, now))
}

/// One enforcement point: `direction` of the policed pod `endpoint` (the flow's destination
/// for ingress, its source for egress). `from_host`: the peer is this node whatever its
/// address.
#[inline(always)]
fn judge(
    direction: u8,
    endpoint: &EndpointPolicy,
    flow: &Flow,
    from_host: bool,
) -> Result<(), i32> {
    let key = ct_key(flow, direction);
    let (enforced, endpoint_addr, peer) = if direction == policy_direction::INGRESS {
        (
            endpoint.flags & endpoint_flags::INGRESS_ENFORCED != 0,
            flow.daddr,
            flow.saddr,
        )
    } else {
        (
            endpoint.flags & endpoint_flags::EGRESS_ENFORCED != 0,
            flow.saddr,
            flow.daddr,
        )
    };
    // SAFETY: helper without side effects.
    let now = unsafe { bpf_ktime_get_ns() };
    let syn =
        flow.proto == proto::TCP && flow.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN;
    let closing = if flow.proto == proto::TCP && flow.tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST) != 0
    {
        policy_ct_flags::CLOSING
    } else {
        0
    };
    // A reply of a flow tracked at the pod's other point.
    if let Some(entry) = POLICY_CT.get_ptr_mut(key.reversed()) {
        // SAFETY: a pointer from a successful lookup; racing updates only touch the timestamp
        // and flag bits (a lost bit only shortens or lengthens a timeout).
        let value = unsafe { *entry };
        if alive(&value, flow.proto, now) && !(syn && value.flags & policy_ct_flags::CLOSING != 0) {
            let flags = value.flags | policy_ct_flags::REPLIED | closing;
            // SAFETY: as above.
            unsafe {
                (*entry).last_seen_ns = now;
                if flags != value.flags {
                    (*entry).flags = flags;
                }
            }
            count(metric::POLICY_CT_REPLY);
            flows::count_endpoint(endpoint_addr, direction, flow_verdict::ALLOWED);
            return Ok(());
        }
    }
    // A flow already tracked at this point.
    if let Some(entry) = POLICY_CT.get_ptr_mut(key) {
        // SAFETY: as above.
        let value = unsafe { *entry };
        if alive(&value, flow.proto, now) && !(syn && value.flags & policy_ct_flags::CLOSING != 0) {
            // SAFETY: as above.
            unsafe {
                (*entry).last_seen_ns = now;
                if closing != 0 && value.flags & closing == 0 {
                    (*entry).flags = value.flags | closing;
                }
            }
            count(metric::POLICY_CT_ESTABLISHED);
            flows::count_endpoint(endpoint_addr, direction, flow_verdict::ALLOWED);
            return Ok(());
        }
    }
    // A new flow.
    let mut rule_id = 0;
    if enforced {
        let peer_identity = if from_host {
            identity::HOST
        } else {
            identity_of(peer)
        };
        let mut verdict = Verdict {
            verdict: flow_verdict::ALLOWED,
            direction,
            reason: metric::POLICY_HOST,
            endpoint: endpoint_addr,
            peer_identity,
            rule_id: 0,
        };
        if peer_identity != identity::HOST {
            let port = if flow.proto == proto::ICMP {
                0
            } else {
                flow.dport
            };
            match allowed(endpoint_addr, peer_identity, direction, flow.proto, port) {
                Some(id) => {
                    rule_id = id;
                    verdict.reason = metric::POLICY_ALLOWED_NEW;
                    verdict.rule_id = id;
                }
                None => {
                    verdict.verdict = flow_verdict::DROPPED;
                    verdict.reason = if direction == policy_direction::INGRESS {
                        metric::POLICY_DENIED_INGRESS
                    } else {
                        metric::POLICY_DENIED_EGRESS
                    };
                }
            }
        }
        count(verdict.reason);
        flows::count_endpoint(endpoint_addr, direction, verdict.verdict);
        flows::emit(flow, &verdict);
        if verdict.verdict == flow_verdict::DROPPED {
            return Err(SHOT);
        }
    } else {
        flows::count_endpoint(endpoint_addr, direction, flow_verdict::ALLOWED);
    }
    let value = PolicyCtValue {
        last_seen_ns: now,
        rule_id,
        flags: closing,
        _pad: [0; 3],
    };
    if POLICY_CT.insert(key, value, 0).is_err() {
        count(metric::POLICY_CT_STORE_FAILED);
    }
    Ok(())
}

/// The security identity of `addr` (network order): the longest `IPCACHE` prefix holding it,
/// [`identity::WORLD`] when none does.
#[inline(always)]
fn identity_of(addr: u32) -> u32 {
    IPCACHE
        .get(Key::new(32, addr))
        .map_or(identity::WORLD, |value| value.identity)
}

/// The rule of `endpoint` that allows `peer_identity` in `direction` on `ip_proto`/`port`: an
/// entry for the identity, else one for any peer.
#[inline(always)]
fn allowed(
    endpoint: u32,
    peer_identity: u32,
    direction: u8,
    ip_proto: u8,
    port_be: u16,
) -> Option<u32> {
    let mut data = PolicyKeyData {
        endpoint_be: endpoint,
        identity_be: peer_identity.to_be(),
        direction,
        proto: ip_proto,
        dport_be: port_be,
    };
    if let Some(entry) = POLICY.get(Key::new(POLICY_PREFIX_FULL, data)) {
        return Some(entry.rule_id);
    }
    data.identity_be = identity::ANY;
    POLICY
        .get(Key::new(POLICY_PREFIX_FULL, data))
        .map(|entry| entry.rule_id)
}

/// Whether a fragment between the policed pod `endpoint` and `peer` passes `direction`: the
/// peer is this node, or is allowed on every port of the protocol (only entries that leave the
/// port open match port 0, which no port range includes).
#[inline(always)]
fn fragment_allowed(endpoint: u32, peer: u32, ip_proto: u8, direction: u8) -> bool {
    let peer_identity = identity_of(peer);
    peer_identity == identity::HOST
        || allowed(endpoint, peer_identity, direction, ip_proto, 0).is_some()
}

/// Tells `tc_to_pod` the destination pod's ingress was judged.
#[inline(always)]
fn mark_judged(ctx: &TcContext) {
    // SAFETY: reading a field of the context the kernel passed.
    let mark = unsafe { (*ctx.skb.skb).mark };
    if mark & skb_mark::POLICY_JUDGED == 0 {
        ctx.skb.set_mark(mark | skb_mark::POLICY_JUDGED);
    }
}

//! Per-packet load balancing at TC, for what socket-LB cannot see: traffic entering the node
//! from pods that opt out of socket-LB, from other nodes, and from outside (NodePort, externalIPs,
//! LoadBalancer IPs). DNAT to a backend with an LRU conntrack, reverse NAT of replies and of ICMP
//! errors about translated flows, incremental L3/L4 checksum updates.
//!
//! Attach `tc_from_pod` (internal scope) and `tc_from_netdev` (external scope) to the TC ingress
//! of the interfaces traffic enters the node through; replies of a translated flow may enter
//! through any interface carrying either program.
//!
//! Documented handling of odd packets (each counted):
//! - not IPv4: passed untouched;
//! - a malformed IPv4 header (version, IHL < 5, truncated) or truncated ports: passed untouched,
//!   for the kernel to drop (`tc_malformed`), except truncated ports to or from a pod under
//!   NetworkPolicy: dropped (`policy_malformed`);
//! - IP options: honoured (the IHL gives the L4 offset);
//! - fragments: passed untranslated (`tc_fragment`); a fragment addressed to a service address
//!   is then dropped by the blackhole route every keelson node installs for the service range.
//!
//! SNAT: a new flow from outside the node (external scope) to a backend on another node, with
//! `externalTrafficPolicy: Cluster`, leaves with this node's address (the FIB's preferred source
//! towards the backend, kernel >= 6.7; before, the address the agent recorded for the outgoing
//! interface) and a port from [`snat_ports`] as its source, through
//! the interface the FIB chose (`bpf_redirect_neigh`); the reply entry of the flow is keyed by
//! that address and port, so the backend's answers are translated back (source: the frontend,
//! destination: the client) and sent out of the interface the request came in by, and so are
//! ICMP errors about them (`icmp`).
//!
//! Hairpin: a pod's new flow to a Service whose chosen backend is the pod itself is
//! source-NATed the same way to [`HAIRPIN_SOURCE`] (port from [`snat_ports`]) and delivered back
//! into the pod; its answer, addressed there, leaves through the pod's veth and is translated
//! back (counted with the SNAT flows).
//!
//! NetworkPolicy is judged on the way (`policy`): every packet of a pod of this node at its
//! veth's `tc_from_pod`, every packet for one before it is delivered.
//!
//! Conntrack entries record TCP FIN/RST ([`ct_flags::CLOSING`]) and whether the backend
//! answered ([`ct_flags::SEEN`] on the reply entry), for the agent's conntrack GC.

use aya_ebpf::{
    bindings::{
        BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LOOKUP_SRC, BPF_NOEXIST, TC_ACT_OK, TC_ACT_SHOT,
        bpf_fib_lookup, bpf_redir_neigh, bpf_tunnel_key,
    },
    helpers::{
        bpf_fib_lookup, bpf_ktime_get_ns, bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer,
        bpf_skb_set_tunnel_key,
    },
    macros::classifier,
    maps::lpm_trie::Key,
    programs::TcContext,
};
use keelson_ebpf_common::{
    Backend, CtKey, CtValue, HAIRPIN_SOURCE, MAGLEV_TABLE_SIZE, ServiceKey, backend_flags, ct_dir,
    ct_flags, metric, proto, route_mode, scope, service_flags, skb_mark, snat_ports, tunnel,
};

use crate::{
    icmp::{icmp_error, reject},
    maps::{
        BACKENDS, CT, LOCAL_PODS, MAGLEV, NODE_ROUTES, SERVICES, SNAT_SOURCES, count, count_tc,
    },
    policy::{self, Flow},
    select::select_backend,
};

pub(crate) const ETH_HLEN: usize = 14;
pub(crate) const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
pub(crate) const IPPROTO_ICMP: u8 = 1;
const IP_OFFSET_MASK_MF: u16 = 0x3fff;
const AF_INET: u8 = 2;
const TCP_FLAG_FIN: u8 = 0x01;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_RST: u8 = 0x04;
const TCP_FLAG_ACK: u8 = 0x10;
pub(crate) const ICMP_DEST_UNREACH: u8 = 3;
pub(crate) const ICMP_TIME_EXCEEDED: u8 = 11;

/// IPv4 header field offsets (from the start of the IP header).
const IP_TTL: usize = 8;
pub(crate) const IP_CSUM: usize = 10;
pub(crate) const IP_SADDR: usize = 12;
pub(crate) const IP_DADDR: usize = 16;

pub(crate) const OK: i32 = TC_ACT_OK;
pub(crate) const SHOT: i32 = TC_ACT_SHOT;

#[classifier]
pub fn tc_from_pod(ctx: TcContext) -> i32 {
    match handle(&ctx, scope::INTERNAL) {
        Ok(verdict) | Err(verdict) => verdict,
    }
}

#[classifier]
pub fn tc_from_netdev(ctx: TcContext) -> i32 {
    match handle(&ctx, scope::EXTERNAL) {
        Ok(verdict) | Err(verdict) => verdict,
    }
}

/// Passes a packet whose headers could not be read.
#[inline(always)]
pub(crate) fn malformed<E>(_: E) -> i32 {
    count(metric::TC_MALFORMED);
    OK
}

/// NetworkPolicy at the TC egress of a pod's node-side veth, for what the kernel routes into the
/// pod without passing `tc_from_pod`/`tc_from_netdev` first (see `policy`).
#[classifier]
pub fn tc_to_pod(ctx: TcContext) -> i32 {
    match to_pod(&ctx) {
        Ok(verdict) | Err(verdict) => verdict,
    }
}

#[inline(always)]
fn to_pod(ctx: &TcContext) -> Result<i32, i32> {
    // SAFETY: reading fields of the context the kernel passed.
    let (mark, in_ifindex) = unsafe { ((*ctx.skb.skb).mark, (*ctx.skb.skb).ingress_ifindex) };
    if mark & skb_mark::POLICY_JUDGED != 0 {
        return Ok(OK);
    }
    let eth_proto: u16 = ctx.load(12).map_err(|_| OK)?;
    if eth_proto != ETH_P_IP_BE {
        return Ok(OK);
    }
    // A bad header is the pod's kernel's to drop; it cannot be judged here.
    let version_ihl: u8 = ctx.load(ETH_HLEN).map_err(|_| OK)?;
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || ihl < 20 {
        return Ok(OK);
    }
    let frag: u16 = ctx.load(ETH_HLEN + 6).map_err(|_| OK)?;
    let ip_proto: u8 = ctx.load(ETH_HLEN + 9).map_err(|_| OK)?;
    let saddr: u32 = ctx.load(ETH_HLEN + IP_SADDR).map_err(|_| OK)?;
    let daddr: u32 = ctx.load(ETH_HLEN + IP_DADDR).map_err(|_| OK)?;
    let fragment = u16::from_be(frag) & IP_OFFSET_MASK_MF != 0;
    // Packets the node's own stack sent have no input interface.
    policy::enforce_to_pod(
        ctx,
        ETH_HLEN + ihl,
        saddr,
        daddr,
        ip_proto,
        fragment,
        in_ifindex == 0,
    )?;
    Ok(OK)
}

#[inline(always)]
fn handle(ctx: &TcContext, lookup_scope: u8) -> Result<i32, i32> {
    let from_pod = lookup_scope == scope::INTERNAL;
    let eth_proto: u16 = ctx.load(12).map_err(|_| OK)?;
    if eth_proto != ETH_P_IP_BE {
        return Ok(OK);
    }
    let version_ihl: u8 = ctx.load(ETH_HLEN).map_err(malformed)?;
    let ihl = usize::from(version_ihl & 0x0f) * 4;
    if version_ihl >> 4 != 4 || ihl < 20 {
        return Err(malformed(()));
    }
    let frag: u16 = ctx.load(ETH_HLEN + 6).map_err(malformed)?;
    let ip_proto: u8 = ctx.load(ETH_HLEN + 9).map_err(malformed)?;
    let saddr: u32 = ctx.load(ETH_HLEN + IP_SADDR).map_err(malformed)?;
    let daddr: u32 = ctx.load(ETH_HLEN + IP_DADDR).map_err(malformed)?;
    if u16::from_be(frag) & IP_OFFSET_MASK_MF != 0 {
        count(metric::TC_FRAGMENT);
        policy::enforce_fragment(ctx, saddr, daddr, ip_proto, from_pod)?;
        return Ok(OK);
    }
    let l4 = ETH_HLEN + ihl;
    if ip_proto == IPPROTO_ICMP {
        // Judged on the quote as the pods sent it, before the reverse translation.
        policy::enforce_icmp(ctx, l4, saddr, daddr, from_pod)?;
        return icmp_error(ctx, l4, saddr);
    }
    if ip_proto != proto::TCP && ip_proto != proto::UDP {
        policy::enforce_other(ctx, l4, saddr, daddr, ip_proto, from_pod)?;
        return Ok(OK);
    }
    let Ok((sport, dport, tcp_flags)) = policy::l4_ports(ctx, l4, ip_proto) else {
        return Err(policy::malformed(saddr, daddr, from_pod));
    };
    // The flow as the policy judges it: the destination is replaced below by the backend when
    // the packet goes to a service.
    let mut flow = Flow {
        saddr,
        daddr,
        sport,
        dport,
        proto: ip_proto,
        tcp_flags,
    };
    let closing = tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST) != 0;
    // SAFETY: helper without side effects.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: reading a field of the context the kernel passed (the ingress interface).
    let in_ifindex = unsafe { (*ctx.skb.skb).ifindex };

    // A reply of a translated flow: show the frontend as its source (and, for a source-NATed
    // flow, the client as its destination again).
    let reply_key = CtKey {
        saddr_be: saddr,
        daddr_be: daddr,
        sport_be: sport,
        dport_be: dport,
        proto: ip_proto,
        dir: ct_dir::REPLY,
        _pad: 0,
    };
    if let Some(entry) = CT.get_ptr_mut(reply_key) {
        // Judged as the backend sent it, before its source becomes the frontend, to the client
        // it goes to (a source-NATed flow's reply is addressed to this node or, hairpin, to
        // `HAIRPIN_SOURCE`, which no policy knows).
        // SAFETY: a pointer from a successful lookup, read at once.
        let (snat, client, client_port) = unsafe {
            (
                (*entry).flags & ct_flags::SNAT != 0,
                (*entry).snat_addr_be,
                (*entry).snat_port_be,
            )
        };
        if snat {
            (flow.daddr, flow.dport) = (client, client_port);
        }
        policy::enforce(ctx, &flow, from_pod)?;
        // SAFETY: a pointer from a successful lookup; racing updates of the same entry only
        // touch the timestamp and the flags (a lost flag bit only delays the GC).
        let value = unsafe {
            (*entry).last_seen_ns = now;
            let old = (*entry).flags;
            let flags = old | ct_flags::SEEN | if closing { ct_flags::CLOSING } else { 0 };
            if flags != old {
                (*entry).flags = flags;
            }
            *entry
        };
        rewrite(
            ctx,
            l4,
            ip_proto,
            IP_SADDR,
            saddr,
            value.nat_addr_be,
            0,
            sport,
            value.nat_port_be,
        )?;
        if value.flags & ct_flags::SNAT != 0 {
            rewrite(
                ctx,
                l4,
                ip_proto,
                IP_DADDR,
                daddr,
                value.snat_addr_be,
                2,
                dport,
                value.snat_port_be,
            )?;
            count(metric::TC_SNAT_FORWARDED);
        }
        count(metric::TC_REV_NAT);
        count_tc(value.backend_id, ctx.len(), true, false);
        if value.ifindex != 0 {
            return Ok(redirect_neigh(value.ifindex));
        }
        return Ok(route(ctx, flow.daddr, lookup_scope));
    }

    // A packet to a frontend?
    let mut service_key = ServiceKey {
        address_be: daddr,
        port_be: dport,
        proto: ip_proto,
        scope: lookup_scope,
        slot: 0,
        _pad: 0,
    };
    // SAFETY: copied out at once.
    let Some(header) = (unsafe { SERVICES.get(service_key) }).copied() else {
        policy::enforce(ctx, &flow, from_pod)?;
        return Ok(route(ctx, daddr, lookup_scope));
    };
    let forward_key = CtKey {
        dir: ct_dir::FORWARD,
        ..reply_key
    };
    let reply_ifindex = if lookup_scope == scope::EXTERNAL {
        in_ifindex
    } else {
        0
    };
    let syn = ip_proto == proto::TCP && tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK) == TCP_FLAG_SYN;
    let existing = match CT.get_ptr_mut(forward_key) {
        // A SYN on a tuple whose flow is closing starts a new connection (new backend choice);
        // a retransmitted SYN keeps the flow it created, as long as its backend exists.
        Some(entry) if syn => {
            // SAFETY: a pointer from a successful lookup, read at once.
            let value = unsafe { *entry };
            // SAFETY: the lookup result is only tested for presence.
            let alive = unsafe { BACKENDS.get(value.backend_id) }.is_some();
            (value.flags & ct_flags::CLOSING == 0 && alive).then_some(entry)
        }
        other => other,
    };
    let new_flow = existing.is_none();
    let value = match existing {
        Some(entry) => {
            // SAFETY: a pointer from a successful lookup, read at once.
            let backend = unsafe { ((*entry).nat_addr_be, (*entry).nat_port_be) };
            (flow.daddr, flow.dport) = backend;
            policy::enforce(ctx, &flow, from_pod)?;
            // SAFETY: a pointer from a successful lookup; see the reply case for races.
            let value = unsafe {
                (*entry).last_seen_ns = now;
                if closing && (*entry).flags & ct_flags::CLOSING == 0 {
                    (*entry).flags |= ct_flags::CLOSING;
                }
                *entry
            };
            // The reply entry may have been evicted on its own: put it back if so.
            let (key, reply) = reply_entry(&forward_key, &value, reply_ifindex, now);
            let _ = CT.insert(key, reply, u64::from(BPF_NOEXIST));
            count(metric::TC_CT_HIT);
            value
        }
        None => {
            if header.count == 0 {
                count(metric::TC_NO_BACKEND);
                return reject(ctx, ihl, daddr, saddr);
            }
            let backend_id = if header.flags & service_flags::MAGLEV != 0 {
                maglev_backend(header.rev_nat_id, &forward_key)
            } else {
                select_backend(&mut service_key, &header, u64::from(saddr))
            };
            let Some(backend_id) = backend_id else {
                count(metric::TC_LOOKUP_MISS);
                return Ok(SHOT);
            };
            // SAFETY: copied out at once.
            let Some(backend) = (unsafe { BACKENDS.get(backend_id) }).copied() else {
                count(metric::TC_LOOKUP_MISS);
                return Ok(SHOT);
            };
            // Judged by the backend it reaches, before the flow is stored.
            (flow.daddr, flow.dport) = (backend.address_be, backend.port_be);
            policy::enforce(ctx, &flow, from_pod)?;
            let mut value = CtValue {
                nat_addr_be: backend.address_be,
                nat_port_be: backend.port_be,
                rev_nat_id: header.rev_nat_id,
                backend_id,
                ifindex: 0,
                last_seen_ns: now,
                snat_addr_be: 0,
                snat_port_be: 0,
                flags: if closing { ct_flags::CLOSING } else { 0 },
                _pad: 0,
            };
            // From outside the node to a backend on another node, with `externalTrafficPolicy:
            // Cluster`: the backend's answer must come back through this node, so the request
            // leaves with this node's address as its source.
            // A pod picked as its own backend (hairpin): its answer would stay inside its own
            // namespace, never translated back, unless the request comes from another address.
            let hairpin = from_pod && backend.address_be == saddr;
            let snat = hairpin
                || lookup_scope == scope::EXTERNAL
                    && header.flags & service_flags::EXTERNAL_LOCAL == 0
                    && backend.flags & backend_flags::LOCAL == 0;
            if snat {
                if hairpin {
                    // Delivered to the pod like any packet for it (`ifindex` 0: `route`).
                    value.snat_addr_be = u32::from_ne_bytes(HAIRPIN_SOURCE);
                } else {
                    let Some((addr, out_ifindex)) = snat_route(ctx, in_ifindex, saddr, &backend)
                    else {
                        count(metric::TC_SNAT_FAILED);
                        return Ok(SHOT);
                    };
                    value.snat_addr_be = addr;
                    value.ifindex = out_ifindex;
                }
                value.flags |= ct_flags::SNAT;
                // The SNAT port is claimed by inserting the reply entry: a port another flow to
                // the same backend holds is skipped.
                let Some(port) = claim_snat_port(&forward_key, &value, reply_ifindex, now) else {
                    count(metric::TC_SNAT_FAILED);
                    return Ok(SHOT);
                };
                value.snat_port_be = port;
                if CT.insert(forward_key, value, 0).is_err() {
                    count(metric::TC_CT_STORE_FAILED);
                    return Ok(SHOT);
                }
                count(metric::TC_SNAT_NEW_FLOW);
            } else {
                let (key, reply) = reply_entry(&forward_key, &value, reply_ifindex, now);
                let stored =
                    CT.insert(forward_key, value, 0).is_ok() && CT.insert(key, reply, 0).is_ok();
                if !stored {
                    count(metric::TC_CT_STORE_FAILED);
                    return Ok(SHOT);
                }
            }
            count(metric::TC_NEW_FLOW);
            value
        }
    };
    rewrite(
        ctx,
        l4,
        ip_proto,
        IP_DADDR,
        daddr,
        value.nat_addr_be,
        2,
        dport,
        value.nat_port_be,
    )?;
    if value.flags & ct_flags::SNAT != 0 {
        rewrite(
            ctx,
            l4,
            ip_proto,
            IP_SADDR,
            saddr,
            value.snat_addr_be,
            0,
            sport,
            value.snat_port_be,
        )?;
        count(metric::TC_SNAT_FORWARDED);
        count_tc(value.backend_id, ctx.len(), false, new_flow);
        // Its source is now a local address: the node's own input routing would drop it as a
        // martian, so it goes straight out of the interface the FIB chose (a hairpin packet
        // goes back into its pod through `route`).
        if value.ifindex != 0 {
            return Ok(redirect_neigh(value.ifindex));
        }
    }
    count_tc(value.backend_id, ctx.len(), false, new_flow);
    Ok(route(ctx, value.nat_addr_be, lookup_scope))
}

/// Pod networking: a packet for a pod on this node goes straight into the pod's namespace
/// (`bpf_redirect_peer`, skipping the node's stack); from a pod (internal scope), a packet for
/// a pod on another node goes to that node, directly out of the uplink (`bpf_redirect_neigh`
/// with the node as next hop) or through the VXLAN tunnel. Anything else, or a map miss, is
/// left to the node's routing table, which the agent keeps equivalent (the slow path).
#[inline(always)]
fn route(ctx: &TcContext, daddr: u32, lookup_scope: u8) -> i32 {
    // SAFETY: copied out at once.
    if let Some(pod) = (unsafe { LOCAL_PODS.get(daddr) }).copied() {
        if !decrement_ttl(ctx) {
            return OK;
        }
        let mut macs = [0u8; 12];
        macs[..6].copy_from_slice(&pod.pod_mac);
        macs[6..].copy_from_slice(&pod.node_mac);
        if ctx.store(0, &macs, 0).is_err() {
            return SHOT;
        }
        count(metric::TC_REDIRECT_PEER);
        // SAFETY: helper valid at TC ingress; the index names the node-side veth.
        return unsafe { bpf_redirect_peer(pod.ifindex, 0) } as i32;
    }
    if lookup_scope != scope::INTERNAL {
        return OK;
    }
    let Some(node) = NODE_ROUTES.get(Key::new(32, daddr)).copied() else {
        return OK;
    };
    if !decrement_ttl(ctx) {
        return OK;
    }
    if node.mode == route_mode::TUNNEL {
        // SAFETY: a plain C struct of integers and unions of integers: all zeroes is valid.
        let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
        key.tunnel_id = tunnel::VNI;
        // The helper takes the remote address in host order.
        key.__bindgen_anon_1.remote_ipv4 = u32::from_be(node.node_addr_be);
        key.tunnel_ttl = 64;
        // The layout every kernel since 4.x accepts (up to the flow label).
        let size = core::mem::offset_of!(bpf_tunnel_key, tunnel_label) as u32;
        // SAFETY: helper valid for TC programs; `key` is a local of at least `size` bytes.
        if unsafe { bpf_skb_set_tunnel_key(ctx.skb.skb.cast(), &mut key, size, 0) } != 0 {
            return SHOT;
        }
        // Addressed to the receiving node's vxlan device, so its stack takes the frame too.
        if ctx
            .store(0, &tunnel::device_mac(node.node_addr_be), 0)
            .is_err()
        {
            return SHOT;
        }
        count(metric::TC_REDIRECT_TUNNEL);
        // SAFETY: helper valid for TC programs: out of the vxlan device, which encapsulates.
        return unsafe { bpf_redirect(node.ifindex, 0) } as i32;
    }
    // SAFETY: a plain C struct of integers and a union of integers: all zeroes is valid.
    let mut next_hop: bpf_redir_neigh = unsafe { core::mem::zeroed() };
    next_hop.nh_family = u32::from(AF_INET);
    next_hop.__bindgen_anon_1.ipv4_nh = node.node_addr_be;
    count(metric::TC_REDIRECT_NODE);
    // SAFETY: helper valid for TC programs; `next_hop` is a local of the size passed.
    unsafe {
        bpf_redirect_neigh(
            node.ifindex,
            &mut next_hop,
            core::mem::size_of::<bpf_redir_neigh>() as i32,
            0,
        ) as i32
    }
}

/// Decrements the IPv4 TTL of a packet this node forwards (fixing the header checksum), as the
/// kernel's forwarding would. False when the TTL runs out: the kernel then answers with ICMP
/// time exceeded.
#[inline(always)]
fn decrement_ttl(ctx: &TcContext) -> bool {
    // TTL and protocol: one 16-bit word of the header, as the checksum sums it.
    let Ok(word) = ctx.load::<[u8; 2]>(ETH_HLEN + IP_TTL) else {
        return false;
    };
    if word[0] <= 1 {
        count(metric::TC_ROUTE_TTL);
        return false;
    }
    let new = [word[0] - 1, word[1]];
    if ctx.store(ETH_HLEN + IP_TTL, &new, 0).is_err() {
        return false;
    }
    ctx.l3_csum_replace(
        ETH_HLEN + IP_CSUM,
        u64::from(u16::from_ne_bytes(word)),
        u64::from(u16::from_ne_bytes(new)),
        2,
    )
    .is_ok()
}

/// Sends the packet out of `ifindex`, the kernel's FIB and neighbour table giving the next hop.
#[inline(always)]
pub(crate) fn redirect_neigh(ifindex: u32) -> i32 {
    // SAFETY: helper valid for TC programs; no parameters: the kernel's FIB gives the next hop
    // for the packet's destination.
    unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) as i32 }
}

/// The route towards a backend on another node: this node's source address for it and the
/// interface it leaves through. The source is the FIB's preferred source (`BPF_FIB_LOOKUP_SRC`,
/// Linux >= 6.7 or a backport); a kernel without the flag rejects it (`-EINVAL`, the helper's
/// flag check runs before any lookup), and then the lookup is repeated without it and the
/// source is the address the agent recorded for the outgoing interface
/// (`SNAT_SOURCES`, counted in `tc_snat_source_map`).
#[inline(always)]
fn snat_route(
    ctx: &TcContext,
    in_ifindex: u32,
    client: u32,
    backend: &Backend,
) -> Option<(u32, u32)> {
    if let Some(route) = fib_route(ctx, in_ifindex, client, backend, BPF_FIB_LOOKUP_SRC) {
        // SAFETY: the kernel wrote the source address into this union member.
        let source = unsafe { route.__bindgen_anon_3.ipv4_src };
        return (source != 0 && route.ifindex != 0).then_some((source, route.ifindex));
    }
    let route = fib_route(ctx, in_ifindex, client, backend, 0)?;
    let out_ifindex = route.ifindex;
    // SAFETY: copied out at once.
    let source = (unsafe { SNAT_SOURCES.get(out_ifindex) }).copied()?;
    count(metric::TC_SNAT_SOURCE_MAP);
    (source != 0 && out_ifindex != 0).then_some((source, out_ifindex))
}

/// `bpf_fib_lookup` from `client` (entering by `in_ifindex`) to `backend` with `flags`: the
/// filled-in parameters when the route is usable (`SUCCESS` or `NO_NEIGH`: the redirect
/// resolves the neighbour), `None` otherwise (including a helper error such as an unknown flag).
#[inline(always)]
fn fib_route(
    ctx: &TcContext,
    in_ifindex: u32,
    client: u32,
    backend: &Backend,
    flags: u32,
) -> Option<bpf_fib_lookup> {
    // SAFETY: a plain C struct of integers and unions of integers: all zeroes is valid.
    let mut params: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = backend.proto;
    params.ifindex = in_ifindex;
    params.__bindgen_anon_3.ipv4_src = client;
    params.__bindgen_anon_4.ipv4_dst = backend.address_be;
    // SAFETY: helper valid for TC programs; `params` is a local of the size passed.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.skb.skb.cast(),
            &mut params,
            core::mem::size_of::<bpf_fib_lookup>() as i32,
            flags,
        )
    };
    (rc == i64::from(BPF_FIB_LKUP_RET_SUCCESS) || rc == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH))
        .then_some(params)
}

/// Picks a SNAT port for a new flow and stores the flow's reply entry under it (so two clients'
/// flows to the same backend never share one): a port from a hash of the client's tuple, then
/// the next ones, [`snat_ports::RETRIES`] at most.
#[inline(always)]
fn claim_snat_port(forward: &CtKey, value: &CtValue, reply_ifindex: u32, now: u64) -> Option<u16> {
    const RANGE: u32 = (snat_ports::MAX - snat_ports::MIN) as u32 + 1;
    let hash = mix(forward.saddr_be
        ^ forward.daddr_be.rotate_left(8)
        ^ ((u32::from(forward.sport_be) << 16) | u32::from(forward.dport_be)));
    let mut offset = hash % RANGE;
    let mut value = *value;
    for _ in 0..snat_ports::RETRIES {
        value.snat_port_be = ((offset as u16).wrapping_add(snat_ports::MIN)).to_be();
        let (key, reply) = reply_entry(forward, &value, reply_ifindex, now);
        if CT.insert(key, reply, u64::from(BPF_NOEXIST)).is_ok() {
            return Some(value.snat_port_be);
        }
        offset = (offset + 1) % RANGE;
    }
    None
}

/// murmur3's finaliser: every input bit affects every output bit.
#[inline(always)]
fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// The reply direction of a forward flow: the key replies arrive with (from the backend, to the
/// client or, with SNAT, to this node's SNAT address and port) and the translation back.
#[inline(always)]
fn reply_entry(forward: &CtKey, value: &CtValue, ifindex: u32, now: u64) -> (CtKey, CtValue) {
    let snat = value.flags & ct_flags::SNAT != 0;
    let key = CtKey {
        saddr_be: value.nat_addr_be,
        daddr_be: if snat {
            value.snat_addr_be
        } else {
            forward.saddr_be
        },
        sport_be: value.nat_port_be,
        dport_be: if snat {
            value.snat_port_be
        } else {
            forward.sport_be
        },
        proto: forward.proto,
        dir: ct_dir::REPLY,
        _pad: 0,
    };
    let reply = CtValue {
        nat_addr_be: forward.daddr_be,
        nat_port_be: forward.dport_be,
        rev_nat_id: value.rev_nat_id,
        backend_id: value.backend_id,
        ifindex,
        last_seen_ns: now,
        snat_addr_be: if snat { forward.saddr_be } else { 0 },
        snat_port_be: if snat { forward.sport_be } else { 0 },
        flags: value.flags & ct_flags::SNAT,
        _pad: 0,
    };
    (key, reply)
}

/// Maglev: a flow hash indexes the frontend's lookup table, so every node picks the same
/// backend for a flow and a backend change moves few flows.
#[inline(always)]
fn maglev_backend(rev_nat_id: u16, flow: &CtKey) -> Option<u32> {
    let table = MAGLEV.get_ptr(u32::from(rev_nat_id))?;
    let h = mix(flow.saddr_be
        ^ flow.daddr_be.rotate_left(16)
        ^ ((u32::from(flow.sport_be) << 16) | u32::from(flow.dport_be))
        ^ u32::from(flow.proto));
    let index = (h % MAGLEV_TABLE_SIZE) as usize;
    // LLVM knows `index` is in bounds and would drop the check below, which the verifier needs
    // (it cannot follow the modulo's multiply-and-shift). A volatile read hides the range.
    // SAFETY: a read of a local variable.
    let index = unsafe { core::ptr::read_volatile(&index) };
    if index >= MAGLEV_TABLE_SIZE as usize {
        return None;
    }
    // SAFETY: a pointer from a successful lookup of a MaglevTable-sized value; `index` is in
    // bounds (checked above for the verifier).
    let id = unsafe { (*table).backend_ids[index] };
    count(metric::TC_MAGLEV);
    (id != 0).then_some(id)
}

/// Rewrites one address (`addr_field`: [`IP_SADDR`] or [`IP_DADDR`]) and the matching port
/// (`port_field`: 0 source, 2 destination, relative to the L4 header), fixing the IP checksum and
/// the TCP/UDP checksum (pseudo-header included) incrementally.
#[expect(
    clippy::too_many_arguments,
    reason = "one call per direction, all plain values"
)]
#[inline(always)]
fn rewrite(
    ctx: &TcContext,
    l4: usize,
    ip_proto: u8,
    addr_field: usize,
    old_addr: u32,
    new_addr: u32,
    port_field: usize,
    old_port: u16,
    new_port: u16,
) -> Result<(), i32> {
    let csum_field = if ip_proto == proto::TCP {
        l4 + 16
    } else {
        l4 + 6
    };
    let mut l4_flags = u64::from(BPF_F_PSEUDO_HDR);
    let mut fix_l4 = true;
    if ip_proto == proto::UDP {
        // A zero UDP checksum means "none": keep it so, never turn it into a wrong one.
        let csum: u16 = ctx.load(csum_field).map_err(malformed)?;
        fix_l4 = csum != 0;
        l4_flags |= u64::from(BPF_F_MARK_MANGLED_0);
    }
    if old_addr != new_addr {
        ctx.store(ETH_HLEN + addr_field, &new_addr, 0)
            .map_err(|_| SHOT)?;
        ctx.l3_csum_replace(
            ETH_HLEN + IP_CSUM,
            u64::from(old_addr),
            u64::from(new_addr),
            4,
        )
        .map_err(|_| SHOT)?;
        if fix_l4 {
            ctx.l4_csum_replace(
                csum_field,
                u64::from(old_addr),
                u64::from(new_addr),
                l4_flags | 4,
            )
            .map_err(|_| SHOT)?;
        }
    }
    if old_port != new_port {
        ctx.store(l4 + port_field, &new_port, 0).map_err(|_| SHOT)?;
        if fix_l4 {
            let flags = l4_flags & u64::from(BPF_F_MARK_MANGLED_0);
            ctx.l4_csum_replace(
                csum_field,
                u64::from(old_port),
                u64::from(new_port),
                flags | 2,
            )
            .map_err(|_| SHOT)?;
        }
    }
    Ok(())
}

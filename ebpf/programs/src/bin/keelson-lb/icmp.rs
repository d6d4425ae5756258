//! ICMP on the TC path: the port-unreachable answer for a frontend without backends, and the
//! reverse translation of ICMP errors about translated flows.

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    helpers::{bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};
use keelson_ebpf_common::{CtKey, ct_dir, ct_flags, metric, proto};

use crate::{
    maps::{CT, count},
    tc::{
        ETH_HLEN, ETH_P_IP_BE, ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED, IP_CSUM, IP_DADDR, IP_SADDR,
        IPPROTO_ICMP, OK, malformed,
    },
};

const SHOT: i32 = TC_ACT_SHOT;

/// Answers a packet for a frontend without backends with an ICMP port unreachable, as
/// kube-proxy's REJECT rule does, so the client fails at once instead of retrying into a void.
/// The packet is rewritten in place into the ICMP error (Ethernet + IPv4 + ICMP + the quoted
/// IPv4 header and 8 bytes of its payload) and sent back out the interface it came in through.
/// Packets with IP options are dropped instead (the quote would not have a fixed size).
#[inline(always)]
pub fn reject(ctx: &TcContext, ihl: usize, frontend: u32, client: u32) -> Result<i32, i32> {
    const QUOTE: usize = 20 + 8;
    const ICMP_LEN: usize = 8 + QUOTE;
    const TOTAL: usize = ETH_HLEN + 20 + ICMP_LEN;
    if ihl != 20 {
        return Ok(SHOT);
    }
    let macs: [u8; 12] = ctx.load(0).map_err(|_| SHOT)?;
    let quote: [u8; QUOTE] = ctx.load(ETH_HLEN).map_err(|_| SHOT)?;

    // ICMP: type, code (port unreachable), checksum, unused, then the quote.
    let mut icmp = [0u8; ICMP_LEN];
    icmp[0] = ICMP_DEST_UNREACH;
    icmp[1] = 3;
    let mut i = 0;
    while i < QUOTE {
        icmp[8 + i] = quote[i];
        i += 1;
    }
    let csum = checksum(&icmp).to_be_bytes();
    icmp[2] = csum[0];
    icmp[3] = csum[1];

    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + ICMP_LEN) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = IPPROTO_ICMP;
    ip[12..16].copy_from_slice(&frontend.to_ne_bytes());
    ip[16..20].copy_from_slice(&client.to_ne_bytes());
    let csum = checksum(&ip).to_be_bytes();
    ip[10] = csum[0];
    ip[11] = csum[1];

    let mut eth = [0u8; 14];
    eth[..6].copy_from_slice(&macs[6..12]);
    eth[6..12].copy_from_slice(&macs[..6]);
    eth[12..14].copy_from_slice(&ETH_P_IP_BE.to_ne_bytes());

    // SAFETY: helper valid for TC programs; the context pointer comes from the kernel.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb.cast(), TOTAL as u32, 0) } != 0 {
        return Ok(SHOT);
    }
    ctx.store(0, &eth, 0).map_err(|_| SHOT)?;
    ctx.store(ETH_HLEN, &ip, 0).map_err(|_| SHOT)?;
    ctx.store(ETH_HLEN + 20, &icmp, 0).map_err(|_| SHOT)?;
    // SAFETY: reading a field of the context the kernel passed.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: helper valid for TC programs: send the packet out of the interface it came in by.
    Ok(unsafe { bpf_redirect(ifindex, 0) } as i32)
}

/// The Internet checksum (RFC 1071) of an even-length buffer, as it goes on the wire.
#[inline(always)]
fn checksum<const N: usize>(bytes: &[u8; N]) -> u16 {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i + 1 < N {
        sum += u32::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
        i += 2;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// ICMP errors (destination unreachable, time exceeded) about a translated flow travel from the
/// backend side to the client: the quoted packet and the outer source show the backend and must
/// show the frontend instead, or the client's stack would not match them to its socket. For a
/// source-NATed flow the error is addressed to this node and quotes its SNAT address and port:
/// the outer destination and the quoted source become the client's again, and the error is sent
/// out of the interface the flow's request came in by, as its replies are.
#[inline(always)]
pub fn icmp_error(ctx: &TcContext, l4: usize, outer_saddr: u32) -> Result<i32, i32> {
    let icmp_type: u8 = ctx.load(l4).map_err(malformed)?;
    if icmp_type != ICMP_DEST_UNREACH && icmp_type != ICMP_TIME_EXCEEDED {
        return Ok(OK);
    }
    let inner = l4 + 8;
    let inner_vihl: u8 = ctx.load(inner).map_err(malformed)?;
    let inner_ihl = usize::from(inner_vihl & 0x0f) * 4;
    if inner_vihl >> 4 != 4 || inner_ihl < 20 {
        return Err(malformed(()));
    }
    let inner_proto: u8 = ctx.load(inner + 9).map_err(malformed)?;
    if inner_proto != proto::TCP && inner_proto != proto::UDP {
        return Ok(OK);
    }
    // The quoted packet went from the client (or, source-NATed, this node) to the backend.
    let client: u32 = ctx.load(inner + IP_SADDR).map_err(malformed)?;
    let backend: u32 = ctx.load(inner + IP_DADDR).map_err(malformed)?;
    let inner_l4 = inner + inner_ihl;
    let client_port: u16 = ctx.load(inner_l4).map_err(malformed)?;
    let backend_port: u16 = ctx.load(inner_l4 + 2).map_err(malformed)?;
    let key = CtKey {
        saddr_be: backend,
        daddr_be: client,
        sport_be: backend_port,
        dport_be: client_port,
        proto: inner_proto,
        dir: ct_dir::REPLY,
        _pad: 0,
    };
    // SAFETY: copied out at once.
    let Some(entry) = (unsafe { CT.get(key) }).copied() else {
        return Ok(OK);
    };
    let snat = entry.flags & ct_flags::SNAT != 0;
    let icmp_csum = l4 + 2;
    // The outer source, when the backend itself reports the error (no pseudo-header in ICMP).
    if outer_saddr == backend {
        set_outer(ctx, IP_SADDR, backend, entry.nat_addr_be)?;
    }
    if snat {
        // The outer destination: this node's SNAT address -> the client.
        let outer_daddr: u32 = ctx.load(ETH_HLEN + IP_DADDR).map_err(malformed)?;
        set_outer(ctx, IP_DADDR, outer_daddr, entry.snat_addr_be)?;
    }
    // The quoted addresses, the quoted header's checksum, and the ICMP checksum over them.
    let old_inner_csum: u16 = ctx.load(inner + IP_CSUM).map_err(malformed)?;
    set_quoted_addr(ctx, inner, icmp_csum, IP_DADDR, backend, entry.nat_addr_be)?;
    if snat {
        set_quoted_addr(ctx, inner, icmp_csum, IP_SADDR, client, entry.snat_addr_be)?;
    }
    let new_inner_csum: u16 = ctx.load(inner + IP_CSUM).map_err(malformed)?;
    ctx.l4_csum_replace(
        icmp_csum,
        u64::from(old_inner_csum),
        u64::from(new_inner_csum),
        2,
    )
    .map_err(|_| SHOT)?;
    // The quoted ports.
    set_quoted_port(
        ctx,
        icmp_csum,
        inner_l4 + 2,
        backend_port,
        entry.nat_port_be,
    )?;
    if snat {
        set_quoted_port(ctx, icmp_csum, inner_l4, client_port, entry.snat_port_be)?;
    }
    count(metric::TC_ICMP_REV_NAT);
    if snat && entry.ifindex != 0 {
        return Ok(crate::tc::redirect_neigh(entry.ifindex));
    }
    Ok(OK)
}

/// Rewrites an address of the outer IPv4 header (at `offset` in it) and the header checksum.
#[inline(always)]
fn set_outer(ctx: &TcContext, offset: usize, old: u32, new: u32) -> Result<(), i32> {
    ctx.store(ETH_HLEN + offset, &new, 0).map_err(|_| SHOT)?;
    ctx.l3_csum_replace(ETH_HLEN + IP_CSUM, u64::from(old), u64::from(new), 4)
        .map_err(|_| SHOT)
}

/// Rewrites an address of the quoted IPv4 header (at `offset` in it, the header at `inner`):
/// the quoted header's checksum, and the ICMP checksum for the address's bytes (the caller
/// accounts for the quoted checksum's change once, after every address).
#[inline(always)]
fn set_quoted_addr(
    ctx: &TcContext,
    inner: usize,
    icmp_csum: usize,
    offset: usize,
    old: u32,
    new: u32,
) -> Result<(), i32> {
    ctx.store(inner + offset, &new, 0).map_err(|_| SHOT)?;
    ctx.l3_csum_replace(inner + IP_CSUM, u64::from(old), u64::from(new), 4)
        .map_err(|_| SHOT)?;
    ctx.l4_csum_replace(icmp_csum, u64::from(old), u64::from(new), 4)
        .map_err(|_| SHOT)
}

/// Rewrites a quoted port (at `at`) and the ICMP checksum for it.
#[inline(always)]
fn set_quoted_port(
    ctx: &TcContext,
    icmp_csum: usize,
    at: usize,
    old: u16,
    new: u16,
) -> Result<(), i32> {
    ctx.store(at, &new, 0).map_err(|_| SHOT)?;
    ctx.l4_csum_replace(icmp_csum, u64::from(old), u64::from(new), 2)
        .map_err(|_| SHOT)
}

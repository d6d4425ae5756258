//! Socket-level load balancing: a ClusterIP:port is translated to a backend once per TCP
//! connection (`connect4`) or UDP datagram/flow (`sendmsg4`, `connect4` on UDP sockets), and
//! translated back for the application (`recvmsg4`, `getpeername4`), so no packet ever carries
//! the service address.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use keelson_ebpf_common::{
    ServiceKey, SockRevNat, SockRevNatKey, metric, proto, scope, service_flags,
};

use crate::{
    maps::{BACKENDS, SERVICES, SOCK_REV_NAT, count, count_sock_connect},
    select::select_backend,
};

/// Let the syscall proceed.
const ALLOW: i32 = 1;
/// Fail the syscall with `EPERM` (only connect/sendmsg may).
const REFUSE: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn sock4_connect(ctx: SockAddrContext) -> i32 {
    translate_to_backend(&ctx)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn sock4_sendmsg(ctx: SockAddrContext) -> i32 {
    translate_to_backend(&ctx)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn sock4_recvmsg(ctx: SockAddrContext) -> i32 {
    translate_to_service(&ctx);
    ALLOW
}

#[cgroup_sock_addr(getpeername4)]
pub fn sock4_getpeername(ctx: SockAddrContext) -> i32 {
    translate_to_service(&ctx);
    ALLOW
}

#[inline(always)]
fn translate_to_backend(ctx: &SockAddrContext) -> i32 {
    let sa = ctx.sock_addr;
    // SAFETY: `sa` is the context the kernel passed; these are 4-byte reads of `bpf_sock_addr`
    // fields the verifier allows for this attach type.
    let (protocol, address_be, port_be) =
        unsafe { ((*sa).protocol, (*sa).user_ip4, (*sa).user_port) };
    let protocol = protocol as u8;
    if protocol != proto::TCP && protocol != proto::UDP {
        return ALLOW;
    }
    let mut key = ServiceKey {
        address_be,
        // `user_port` holds the port in network byte order in its low 16 bits.
        port_be: port_be as u16,
        proto: protocol,
        scope: scope::INTERNAL,
        slot: 0,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once; the map is only read here.
    let Some(header) = (unsafe { SERVICES.get(key) }).copied() else {
        return ALLOW; // not a service address
    };
    if header.count == 0 {
        count(metric::SOCK_NO_BACKEND);
        return REFUSE;
    }
    let affinity_client = if header.flags & service_flags::AFFINITY != 0 {
        // One network namespace per pod: the pod is the client.
        // SAFETY: helper valid for sock_addr programs.
        unsafe { bpf_get_netns_cookie(ctx.as_ptr()) }
    } else {
        0
    };
    let Some(backend_id) = select_backend(&mut key, &header, affinity_client) else {
        count(metric::SOCK_LOOKUP_MISS);
        return REFUSE;
    };
    // SAFETY: copied out at once.
    let Some(backend) = (unsafe { BACKENDS.get(backend_id) }).copied() else {
        count(metric::SOCK_LOOKUP_MISS);
        return REFUSE;
    };

    // SAFETY: helper valid for sock_addr programs; the context pointer comes from the kernel.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let rev_key = SockRevNatKey {
        cookie,
        address_be: backend.address_be,
        port_be: backend.port_be,
        _pad: 0,
    };
    let rev = SockRevNat {
        address_be,
        port_be: port_be as u16,
        rev_nat_id: header.rev_nat_id,
    };
    if SOCK_REV_NAT.insert(rev_key, rev, 0).is_err() {
        count(metric::SOCK_REV_NAT_STORE_FAILED);
    }
    // SAFETY: 4-byte writes of the two fields this attach type may rewrite.
    unsafe {
        (*sa).user_ip4 = backend.address_be;
        (*sa).user_port = u32::from(backend.port_be);
    }
    count(metric::SOCK_TRANSLATED);
    count_sock_connect(backend_id);
    ALLOW
}

#[inline(always)]
fn translate_to_service(ctx: &SockAddrContext) {
    let sa = ctx.sock_addr;
    // SAFETY: 4-byte reads of fields this attach type may read.
    let (address_be, port_be) = unsafe { ((*sa).user_ip4, (*sa).user_port) };
    // SAFETY: helper valid for sock_addr programs.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = SockRevNatKey {
        cookie,
        address_be,
        port_be: port_be as u16,
        _pad: 0,
    };
    // SAFETY: copied out at once.
    if let Some(rev) = (unsafe { SOCK_REV_NAT.get(key) }).copied() {
        // SAFETY: 4-byte writes of the fields recvmsg4/getpeername4 may rewrite.
        unsafe {
            (*sa).user_ip4 = rev.address_be;
            (*sa).user_port = u32::from(rev.port_be);
        }
        count(metric::SOCK_REV_NAT);
    }
}

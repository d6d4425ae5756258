//! The ARP half of L2 announcements: an `AF_PACKET` socket on the announce interface that
//! answers ARP requests for the announced addresses with the interface's MAC, and sends a
//! gratuitous ARP when this node starts announcing an address, so that neighbours holding
//! the previous node's MAC update their entry at once (RFC 5227 section 3 "ARP
//! announcement"; MetalLB's L2 mode does the same on failover).
//!
//! The kernel itself never answers for these addresses: they are not configured on any
//! interface of the node. Packet building and parsing are pure; [`Responder`] is the IO.

use std::{
    collections::BTreeSet,
    ffi::CString,
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use super::AnnounceError;

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IP: u16 = 0x0800;
const HTYPE_ETHERNET: u16 = 1;
const OP_REQUEST: u16 = 1;
const OP_REPLY: u16 = 2;
/// An Ethernet/IPv4 ARP payload's length.
pub const ARP_LEN: usize = 28;
/// The Ethernet broadcast address.
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// An Ethernet/IPv4 ARP packet (the payload after the Ethernet header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// 1 request, 2 reply.
    pub op: u16,
    /// Sender hardware address.
    pub sender_mac: [u8; 6],
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: [u8; 6],
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

impl Arp {
    /// Parses an Ethernet/IPv4 ARP payload; `None` for anything else.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let b = bytes.get(..ARP_LEN)?;
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        if u16_at(0) != HTYPE_ETHERNET || u16_at(2) != ETH_P_IP || b[4] != 6 || b[5] != 4 {
            return None;
        }
        let mac = |i: usize| -> [u8; 6] { b[i..i + 6].try_into().unwrap_or_default() };
        let ip = |i: usize| Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3]);
        Some(Self {
            op: u16_at(6),
            sender_mac: mac(8),
            sender_ip: ip(14),
            target_mac: mac(18),
            target_ip: ip(24),
        })
    }

    /// The payload's bytes.
    pub fn bytes(&self) -> [u8; ARP_LEN] {
        let mut b = [0u8; ARP_LEN];
        b[0..2].copy_from_slice(&HTYPE_ETHERNET.to_be_bytes());
        b[2..4].copy_from_slice(&ETH_P_IP.to_be_bytes());
        b[4] = 6;
        b[5] = 4;
        b[6..8].copy_from_slice(&self.op.to_be_bytes());
        b[8..14].copy_from_slice(&self.sender_mac);
        b[14..18].copy_from_slice(&self.sender_ip.octets());
        b[18..24].copy_from_slice(&self.target_mac);
        b[24..28].copy_from_slice(&self.target_ip.octets());
        b
    }
}

/// The reply (and the Ethernet destination to send it to) that `request` gets from an
/// interface with MAC `mac` announcing `announced`; `None` when it is not a request for one of
/// them, or is our own (a gratuitous ARP we sent, looped back).
pub fn answer(
    request: &Arp,
    mac: [u8; 6],
    announced: &BTreeSet<Ipv4Addr>,
) -> Option<([u8; 6], Arp)> {
    if request.op != OP_REQUEST
        || request.sender_mac == mac
        || !announced.contains(&request.target_ip)
        // Another host's announcement of the address (sender and target the same) asks
        // nothing; a probe (RFC 5227, sender 0.0.0.0) is answered: the address is in use.
        || request.sender_ip == request.target_ip
    {
        return None;
    }
    Some((
        request.sender_mac,
        Arp {
            op: OP_REPLY,
            sender_mac: mac,
            sender_ip: request.target_ip,
            target_mac: request.sender_mac,
            target_ip: request.sender_ip,
        },
    ))
}

/// A gratuitous ARP for `ip` from `mac`: a broadcast request whose sender and target address
/// are both `ip` (RFC 5227's ARP announcement), which updates the neighbour entry of every
/// host on the link that has one.
pub fn gratuitous(ip: Ipv4Addr, mac: [u8; 6]) -> Arp {
    Arp {
        op: OP_REQUEST,
        sender_mac: mac,
        sender_ip: ip,
        target_mac: [0; 6],
        target_ip: ip,
    }
}

/// An `AF_PACKET` datagram socket for ARP on one interface.
#[derive(Debug)]
pub struct Responder {
    socket: OwnedFd,
    ifindex: i32,
    mac: [u8; 6],
    interface: String,
}

fn sockaddr(ifindex: i32, dest: [u8; 6]) -> libc::sockaddr_ll {
    // SAFETY: sockaddr_ll is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ETH_P_ARP.to_be();
    addr.sll_ifindex = ifindex;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&dest);
    addr
}

impl Responder {
    /// Opens the socket on `interface` (in the agent's network namespace) and reads its MAC.
    pub fn open(interface: &str) -> Result<Self, AnnounceError> {
        let error = |source: io::Error| AnnounceError::Socket {
            interface: interface.to_owned(),
            source,
        };
        let name = CString::new(interface)
            .map_err(|_| AnnounceError::NoSuchInterface(interface.to_owned()))?;
        // SAFETY: `name` is a valid NUL-terminated string.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        let ifindex = i32::try_from(ifindex)
            .ok()
            .filter(|i| *i != 0)
            .ok_or_else(|| AnnounceError::NoSuchInterface(interface.to_owned()))?;
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ARP.to_be()),
            )
        };
        if fd < 0 {
            return Err(error(io::Error::last_os_error()));
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut addr = sockaddr(ifindex, [0; 6]);
        let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `addr` is a valid sockaddr_ll of `len` bytes.
        let bound = unsafe {
            libc::bind(
                socket.as_raw_fd(),
                (&raw const addr).cast::<libc::sockaddr>(),
                len,
            )
        };
        if bound < 0 {
            return Err(error(io::Error::last_os_error()));
        }
        let mut got = len;
        // SAFETY: getsockname writes at most `got` bytes into `addr`.
        let named = unsafe {
            libc::getsockname(
                socket.as_raw_fd(),
                (&raw mut addr).cast::<libc::sockaddr>(),
                &raw mut got,
            )
        };
        if named < 0 {
            return Err(error(io::Error::last_os_error()));
        }
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&addr.sll_addr[..6]);
        // Reads wake every half second, so the thread sees `stop`.
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 500_000,
        };
        // SAFETY: `timeout` is a valid timeval of the size given.
        let set = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast::<libc::c_void>(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if set < 0 {
            return Err(error(io::Error::last_os_error()));
        }
        Ok(Self {
            socket,
            ifindex,
            mac,
            interface: interface.to_owned(),
        })
    }

    /// The interface's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Sends `arp` to Ethernet address `dest`.
    pub fn send(&self, dest: [u8; 6], arp: &Arp) -> Result<(), AnnounceError> {
        let addr = sockaddr(self.ifindex, dest);
        let bytes = arp.bytes();
        // SAFETY: `bytes` and `addr` are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.socket.as_raw_fd(),
                bytes.as_ptr().cast::<libc::c_void>(),
                bytes.len(),
                0,
                (&raw const addr).cast::<libc::sockaddr>(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            return Err(AnnounceError::Socket {
                interface: self.interface.clone(),
                source: io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Sends a gratuitous ARP for `ip`.
    pub fn announce(&self, ip: Ipv4Addr) -> Result<(), AnnounceError> {
        self.send(BROADCAST, &gratuitous(ip, self.mac))
    }

    /// Answers ARP requests for the addresses in `announced` until `stop` is set (checked at
    /// least every half second). Runs on a thread of its own.
    pub fn serve(&self, announced: &RwLock<BTreeSet<Ipv4Addr>>, stop: &AtomicBool) {
        let mut buf = [0u8; 128];
        let mut failures = 0u64;
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe {
                libc::recv(
                    self.socket.as_raw_fd(),
                    buf.as_mut_ptr().cast::<libc::c_void>(),
                    buf.len(),
                    0,
                )
            };
            let Ok(n) = usize::try_from(n) else {
                let error = io::Error::last_os_error();
                if !matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) {
                    failures += 1;
                    if failures.is_power_of_two() {
                        tracing::warn!(interface = %self.interface, %error, failures, "reading ARP");
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            };
            let Some(request) = Arp::parse(&buf[..n]) else {
                continue;
            };
            let reply = {
                let announced = announced
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                answer(&request, self.mac, &announced)
            };
            if let Some((dest, reply)) = reply
                && let Err(error) = self.send(dest, &reply)
            {
                failures += 1;
                if failures.is_power_of_two() {
                    tracing::warn!(%error, failures, "answering ARP");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 9];
    const VIP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 200);
    const CLIENT: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 50);

    fn request(target: Ipv4Addr) -> Arp {
        Arp {
            op: OP_REQUEST,
            sender_mac: CLIENT_MAC,
            sender_ip: CLIENT,
            target_mac: [0; 6],
            target_ip: target,
        }
    }

    #[test]
    fn packets_round_trip_in_wire_order() {
        let arp = request(VIP);
        let bytes = arp.bytes();
        assert_eq!(&bytes[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&bytes[14..18], &[172, 30, 0, 50]);
        assert_eq!(&bytes[24..28], &[172, 30, 0, 200]);
        assert_eq!(Arp::parse(&bytes), Some(arp));
        assert_eq!(Arp::parse(&bytes[..27]), None);
        let mut other = bytes;
        other[2] = 0x86; // not IPv4
        assert_eq!(Arp::parse(&other), None);
    }

    #[test]
    fn answers_only_requests_for_announced_addresses() {
        let announced: BTreeSet<Ipv4Addr> = [VIP].into_iter().collect();
        let (dest, reply) = answer(&request(VIP), MAC, &announced).expect("a reply");
        assert_eq!(dest, CLIENT_MAC);
        assert_eq!(
            reply,
            Arp {
                op: OP_REPLY,
                sender_mac: MAC,
                sender_ip: VIP,
                target_mac: CLIENT_MAC,
                target_ip: CLIENT
            }
        );
        assert_eq!(answer(&request(CLIENT), MAC, &announced), None, "not ours");
        assert_eq!(
            answer(&request(VIP), MAC, &BTreeSet::new()),
            None,
            "not announced"
        );
        assert_eq!(answer(&reply, MAC, &announced), None, "a reply");
        assert_eq!(
            answer(&gratuitous(VIP, MAC), MAC, &announced),
            None,
            "our own"
        );
        assert_eq!(
            answer(&gratuitous(VIP, CLIENT_MAC), MAC, &announced),
            None,
            "another's announcement"
        );
    }

    #[test]
    fn gratuitous_arp_names_the_address_twice() {
        let arp = gratuitous(VIP, MAC);
        assert_eq!(
            (arp.sender_ip, arp.target_ip, arp.op),
            (VIP, VIP, OP_REQUEST)
        );
        assert_eq!(arp.sender_mac, MAC);
    }
}

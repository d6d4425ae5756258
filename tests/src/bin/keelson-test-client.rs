//! A small client the datapath tests run inside a network namespace and a cgroup (where the
//! socket-LB programs act on it). One line of output per exchange, parsed by the tests:
//!
//! - `tcp ADDR:PORT N`: N connections; each prints `peer=<getpeername> reply=<first line>`.
//! - `udp ADDR:PORT N`: N datagrams from one unconnected socket; each prints
//!   `peer=<source of the reply> reply=<text>`.
//! - `udp-connected ADDR:PORT N`: like `udp`, from a connected socket (which also receives ICMP
//!   errors, e.g. `ConnectionRefused` for a closed port).
//! - `hold ADDR:PORT [BIND_ADDR:BIND_PORT]`: one connection (from the given source address and
//!   port, if any) kept open; prints the first exchange, then one more exchange per line read
//!   from stdin, until stdin closes.
//! - `tcp-parallel ADDR:PORT N`: N connections open at the same time: each reads its first
//!   line, waits until all are connected, then exchanges one more line; prints
//!   `peer=<getpeername> reply=<second line>` per connection.
//! - `udp-flows ADDR:PORT N`: N UDP flows, one socket (source port) each, one datagram and its
//!   answer per flow; prints `answered=<count>`.
//! - `raw options|fragment|later-fragment|truncated|bad-ihl SRC ADDR:PORT`: sends one
//!   hand-made IPv4 packet through a raw socket: a TCP SYN with IP options, a UDP first
//!   fragment (MF set), a UDP fragment at offset 24 (MF clear), a TCP packet cut after 2 bytes of
//!   its header, or a UDP packet whose IHL says 16 bytes (below the minimum of 20). Prints
//!   `sent=<bytes>`.
//!
//! Failures print `error=<io error kind> os=<errno>` and continue, so a test sees every attempt.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    process::ExitCode,
    time::Duration,
};

const TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("raw") {
        return raw(&args[1..]);
    }
    let (Some(mode), Some(target)) = (args.first(), args.get(1)) else {
        eprintln!("usage: keelson-test-client tcp|udp|hold ADDR:PORT [N]");
        return ExitCode::from(2);
    };
    let Ok(target) = target.parse::<SocketAddr>() else {
        eprintln!("keelson-test-client: {target} is not an ADDR:PORT");
        return ExitCode::from(2);
    };
    let count: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(1);
    let mut out = std::io::stdout().lock();
    match mode.as_str() {
        "tcp" => {
            for _ in 0..count {
                let line = tcp_once(target).unwrap_or_else(|e| describe(&e));
                let _ = writeln!(out, "{line}");
            }
        }
        "udp" => match UdpSocket::bind("0.0.0.0:0") {
            Ok(socket) => {
                let _ = socket.set_read_timeout(Some(TIMEOUT));
                for i in 0..count {
                    let line = udp_once(&socket, target, i).unwrap_or_else(|e| describe(&e));
                    let _ = writeln!(out, "{line}");
                }
            }
            Err(e) => {
                let _ = writeln!(out, "{}", describe(&e));
            }
        },
        "udp-connected" => match UdpSocket::bind("0.0.0.0:0").and_then(|s| {
            s.connect(target)?;
            Ok(s)
        }) {
            Ok(socket) => {
                let _ = socket.set_read_timeout(Some(TIMEOUT));
                for i in 0..count {
                    let line = (|| {
                        socket.send(format!("ping {i}").as_bytes())?;
                        let mut buf = [0u8; 512];
                        let n = socket.recv(&mut buf)?;
                        Ok::<_, std::io::Error>(format!(
                            "peer={} reply={}",
                            socket.peer_addr()?,
                            String::from_utf8_lossy(&buf[..n]).trim()
                        ))
                    })()
                    .unwrap_or_else(|e| describe(&e));
                    let _ = writeln!(out, "{line}");
                }
            }
            Err(e) => {
                let _ = writeln!(out, "{}", describe(&e));
            }
        },
        "tcp-parallel" => {
            for line in tcp_parallel(target, count) {
                let _ = writeln!(out, "{line}");
            }
        }
        "udp-flows" => {
            let answered = (0..count)
                .filter(|i| {
                    UdpSocket::bind("0.0.0.0:0")
                        .and_then(|socket| {
                            socket.set_read_timeout(Some(TIMEOUT))?;
                            udp_once(&socket, target, *i)
                        })
                        .is_ok()
                })
                .count();
            let _ = writeln!(out, "answered={answered}");
        }
        "hold" => {
            let bind = args.get(2).and_then(|b| b.parse::<SocketAddr>().ok());
            let result = (|| -> std::io::Result<()> {
                let stream = connect_from(target, bind)?;
                stream.set_read_timeout(Some(TIMEOUT))?;
                let peer = stream.peer_addr()?;
                let mut reader = BufReader::new(stream.try_clone()?);
                let mut reply = String::new();
                reader.read_line(&mut reply)?;
                writeln!(out, "peer={peer} reply={}", reply.trim())?;
                out.flush()?;
                let mut writer = stream;
                for line in std::io::stdin().lock().lines() {
                    line?;
                    writer.write_all(b"again\n")?;
                    reply.clear();
                    reader.read_line(&mut reply)?;
                    writeln!(out, "peer={peer} reply={}", reply.trim())?;
                    out.flush()?;
                }
                Ok(())
            })();
            if let Err(e) = result {
                let _ = writeln!(out, "{}", describe(&e));
            }
        }
        other => {
            eprintln!("keelson-test-client: unknown mode {other}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

/// Connects to `target`, from `bind` when given (SO_REUSEADDR, so tests can pick a port).
fn connect_from(target: SocketAddr, bind: Option<SocketAddr>) -> std::io::Result<TcpStream> {
    let Some(bind) = bind else {
        return TcpStream::connect_timeout(&target, TIMEOUT);
    };
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.bind(&bind.into())?;
    socket.connect_timeout(&target.into(), TIMEOUT)?;
    Ok(socket.into())
}

fn tcp_parallel(target: SocketAddr, count: usize) -> Vec<String> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(count));
    let threads: Vec<_> = (0..count)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let connected = (|| -> std::io::Result<_> {
                    let stream = TcpStream::connect_timeout(&target, TIMEOUT)?;
                    stream.set_read_timeout(Some(TIMEOUT))?;
                    let mut reader = BufReader::new(stream.try_clone()?);
                    let mut first = String::new();
                    reader.read_line(&mut first)?;
                    Ok((stream, reader))
                })();
                // Every connection is open (or failed) before any exchanges its second line.
                barrier.wait();
                let (mut stream, mut reader) = connected?;
                stream.write_all(b"again\n")?;
                let mut reply = String::new();
                reader.read_line(&mut reply)?;
                Ok::<_, std::io::Error>(format!(
                    "peer={} reply={}",
                    stream.peer_addr()?,
                    reply.trim()
                ))
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| match t.join() {
            Ok(result) => result.unwrap_or_else(|e| describe(&e)),
            Err(_) => "error=Panicked os=0".to_owned(),
        })
        .collect()
}

fn tcp_once(target: SocketAddr) -> std::io::Result<String> {
    let stream = TcpStream::connect_timeout(&target, TIMEOUT)?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    let peer = stream.peer_addr()?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply)?;
    Ok(format!("peer={peer} reply={}", reply.trim()))
}

fn udp_once(socket: &UdpSocket, target: SocketAddr, i: usize) -> std::io::Result<String> {
    socket.send_to(format!("ping {i}").as_bytes(), target)?;
    let mut buf = [0u8; 512];
    let (n, from) = socket.recv_from(&mut buf)?;
    Ok(format!(
        "peer={from} reply={}",
        String::from_utf8_lossy(&buf[..n]).trim()
    ))
}

/// Sends one hand-made packet (see the module docs).
fn raw(args: &[String]) -> ExitCode {
    let (Some(kind), Some(src), Some(dst)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!(
            "usage: keelson-test-client raw options|fragment|later-fragment|truncated|bad-ihl \
             SRC ADDR:PORT"
        );
        return ExitCode::from(2);
    };
    let (Ok(src), Ok(dst)) = (
        src.parse::<std::net::Ipv4Addr>(),
        dst.parse::<std::net::SocketAddrV4>(),
    ) else {
        eprintln!("keelson-test-client raw: bad SRC or ADDR:PORT");
        return ExitCode::from(2);
    };
    let packet = match kind.as_str() {
        "options" => tcp_syn_with_options(src, dst),
        "fragment" => udp_first_fragment(src, dst),
        "later-fragment" => udp_later_fragment(src, dst),
        "truncated" => truncated_tcp(src, dst),
        "bad-ihl" => udp_with_bad_ihl(src, dst),
        other => {
            eprintln!("keelson-test-client raw: unknown packet kind {other}");
            return ExitCode::from(2);
        }
    };
    // The kernel's raw IPv4 sockets refuse an IHL below 5: such a packet goes out as an
    // Ethernet broadcast frame instead.
    let result = if kind == "bad-ihl" {
        send_link_layer(&packet)
    } else {
        send_raw_ip(&packet, dst)
    };
    match result {
        Ok(n) => println!("sent={n}"),
        Err(e) => println!("{}", describe(&e)),
    }
    ExitCode::SUCCESS
}

/// Sends an IPv4 packet with its own header (IPPROTO_RAW implies IP_HDRINCL).
fn send_raw_ip(packet: &[u8], dst: std::net::SocketAddrV4) -> std::io::Result<usize> {
    socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(255)),
    )
    .and_then(|socket| {
        socket.send_to(
            packet,
            &SocketAddr::from(std::net::SocketAddrV4::new(*dst.ip(), 0)).into(),
        )
    })
}

/// Sends an IPv4 packet as an Ethernet broadcast frame out of the namespace's first interface
/// other than `lo` (an AF_PACKET datagram socket: the kernel writes the Ethernet header only).
fn send_link_layer(packet: &[u8]) -> std::io::Result<usize> {
    use nix::libc;
    let ifindex = nix::net::if_::if_nameindex()?
        .iter()
        .find(|i| i.name().to_bytes() != b"lo")
        .map(|i| i.index())
        .ok_or_else(|| std::io::Error::other("no interface but lo"))?;
    let eth_p_ip = 0x0800u16.to_be();
    let socket = socket2::Socket::new(
        socket2::Domain::PACKET,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::from(i32::from(eth_p_ip))),
    )?;
    let mut storage = socket2::SockAddrStorage::zeroed();
    // SAFETY: `sockaddr_storage` is large and aligned enough for a `sockaddr_ll`, and zeroes
    // are a valid `sockaddr_ll`.
    let ll = unsafe { storage.view_as::<libc::sockaddr_ll>() };
    ll.sll_family = libc::AF_PACKET as u16;
    ll.sll_protocol = eth_p_ip;
    ll.sll_ifindex = ifindex as i32;
    ll.sll_halen = 6;
    ll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    // SAFETY: the storage holds an initialised `sockaddr_ll` of the length given.
    let address =
        unsafe { socket2::SockAddr::new(storage, std::mem::size_of::<libc::sockaddr_ll>() as u32) };
    socket.send_to(packet, &address)
}

/// The Internet checksum (RFC 1071) of `data`, starting from `initial`.
fn checksum(initial: u32, data: &[u8]) -> u16 {
    let mut sum = initial;
    for chunk in data.chunks(2) {
        let word = u16::from_be_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4_header(
    src: std::net::Ipv4Addr,
    dst: std::net::Ipv4Addr,
    proto: u8,
    options: &[u8],
    payload_len: usize,
    flags_fragment: u16,
) -> Vec<u8> {
    let ihl = (20 + options.len()) / 4;
    let total = (ihl * 4 + payload_len) as u16;
    let mut h = vec![0x40 | ihl as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&0x1234u16.to_be_bytes());
    h.extend_from_slice(&flags_fragment.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(options);
    let csum = checksum(0, &h);
    h[10..12].copy_from_slice(&csum.to_be_bytes());
    h
}

fn pseudo_sum(src: std::net::Ipv4Addr, dst: std::net::Ipv4Addr, proto: u8, len: usize) -> u32 {
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(len as u16).to_be_bytes());
    pseudo
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum()
}

/// A valid TCP SYN (checksums right) behind an IPv4 header with 4 bytes of options.
fn tcp_syn_with_options(src: std::net::Ipv4Addr, dst: std::net::SocketAddrV4) -> Vec<u8> {
    let mut tcp = Vec::with_capacity(20);
    tcp.extend_from_slice(&40_000u16.to_be_bytes());
    tcp.extend_from_slice(&dst.port().to_be_bytes());
    tcp.extend_from_slice(&1u32.to_be_bytes()); // sequence
    tcp.extend_from_slice(&0u32.to_be_bytes()); // ack
    tcp.extend_from_slice(&[0x50, 0x02]); // data offset 5, SYN
    tcp.extend_from_slice(&65_535u16.to_be_bytes()); // window
    tcp.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
    let csum = checksum(pseudo_sum(src, *dst.ip(), 6, tcp.len()), &tcp);
    tcp[16..18].copy_from_slice(&csum.to_be_bytes());
    let mut packet = ipv4_header(src, *dst.ip(), 6, &[1, 1, 1, 0], tcp.len(), 0);
    packet.extend_from_slice(&tcp);
    packet
}

/// The first fragment (MF set) of a UDP datagram.
fn udp_first_fragment(src: std::net::Ipv4Addr, dst: std::net::SocketAddrV4) -> Vec<u8> {
    let mut udp = Vec::new();
    udp.extend_from_slice(&40_001u16.to_be_bytes());
    udp.extend_from_slice(&dst.port().to_be_bytes());
    udp.extend_from_slice(&200u16.to_be_bytes()); // the whole datagram's length
    udp.extend_from_slice(&[0, 0]); // no checksum
    udp.extend_from_slice(&[0xab; 16]);
    let mut packet = ipv4_header(src, *dst.ip(), 17, &[], udp.len(), 0x2000);
    packet.extend_from_slice(&udp);
    packet
}

/// A fragment at offset 24 bytes, the last one (MF clear): its bytes are not a UDP header.
fn udp_later_fragment(src: std::net::Ipv4Addr, dst: std::net::SocketAddrV4) -> Vec<u8> {
    let payload = [0xcd; 16];
    let mut packet = ipv4_header(src, *dst.ip(), 17, &[], payload.len(), 3);
    packet.extend_from_slice(&payload);
    packet
}

/// A UDP packet whose IPv4 header claims an IHL of 4 (16 bytes): invalid.
fn udp_with_bad_ihl(src: std::net::Ipv4Addr, dst: std::net::SocketAddrV4) -> Vec<u8> {
    let mut packet = ipv4_header(src, *dst.ip(), 17, &[], 8, 0);
    packet[0] = 0x44;
    packet.extend_from_slice(&40_003u16.to_be_bytes());
    packet.extend_from_slice(&dst.port().to_be_bytes());
    packet.extend_from_slice(&8u16.to_be_bytes());
    packet.extend_from_slice(&[0, 0]);
    packet
}

/// A TCP packet whose header stops after the source port.
fn truncated_tcp(src: std::net::Ipv4Addr, dst: std::net::SocketAddrV4) -> Vec<u8> {
    let mut packet = ipv4_header(src, *dst.ip(), 6, &[], 2, 0);
    packet.extend_from_slice(&40_002u16.to_be_bytes());
    packet
}

fn describe(e: &std::io::Error) -> String {
    format!("error={:?} os={}", e.kind(), e.raw_os_error().unwrap_or(0))
}

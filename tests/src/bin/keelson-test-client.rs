//! A small client the datapath tests run inside a network namespace and a cgroup (where the
//! socket-LB programs act on it). One line of output per exchange, parsed by the tests:
//!
//! - `tcp ADDR:PORT N`: N connections; each prints `peer=<getpeername> reply=<first line>`.
//! - `udp ADDR:PORT N`: N datagrams from one unconnected socket; each prints
//!   `peer=<source of the reply> reply=<text>`.
//! - `udp-connected ADDR:PORT N`: like `udp`, from a connected socket (which also receives ICMP
//!   errors, e.g. `ConnectionRefused` for a closed port).
//! - `hold ADDR:PORT`: one connection kept open; prints the first exchange, then one more
//!   exchange per line read from stdin, until stdin closes.
//! - `raw options|fragment|truncated SRC ADDR:PORT`: sends one hand-made IPv4 packet through a
//!   raw socket: a TCP SYN with IP options, a UDP first fragment (MF set), or a TCP packet cut
//!   after 2 bytes of its header. Prints `sent=<bytes>`.
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
        "hold" => {
            let result = (|| -> std::io::Result<()> {
                let stream = TcpStream::connect_timeout(&target, TIMEOUT)?;
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
        eprintln!("usage: keelson-test-client raw options|fragment|truncated SRC ADDR:PORT");
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
        "truncated" => truncated_tcp(src, dst),
        other => {
            eprintln!("keelson-test-client raw: unknown packet kind {other}");
            return ExitCode::from(2);
        }
    };
    // IPPROTO_RAW: the packet carries its own IP header (IP_HDRINCL).
    let result = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::RAW,
        Some(socket2::Protocol::from(255)),
    )
    .and_then(|socket| {
        socket.send_to(
            &packet,
            &SocketAddr::from(std::net::SocketAddrV4::new(*dst.ip(), 0)).into(),
        )
    });
    match result {
        Ok(n) => println!("sent={n}"),
        Err(e) => println!("{}", describe(&e)),
    }
    ExitCode::SUCCESS
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

/// A TCP packet whose header stops after the source port.
fn truncated_tcp(src: std::net::Ipv4Addr, dst: std::net::SocketAddrV4) -> Vec<u8> {
    let mut packet = ipv4_header(src, *dst.ip(), 6, &[], 2, 0);
    packet.extend_from_slice(&40_002u16.to_be_bytes());
    packet
}

fn describe(e: &std::io::Error) -> String {
    format!("error={:?} os={}", e.kind(), e.raw_os_error().unwrap_or(0))
}

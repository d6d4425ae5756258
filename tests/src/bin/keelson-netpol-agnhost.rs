//! The server and prober of the NetworkPolicy truth-table tests (`keelson_tests::netpol`), in
//! the spirit of upstream's agnhost `porter` + `connect`: it runs inside the test pods (from a
//! hostPath, with the host's `/lib` and `/lib64` mounted, as busybox has no UDP client).
//!
//! - `serve NAME PORT...`: answers on every PORT over TCP (a line `NAME` per connection) and
//!   UDP (a datagram `NAME` per datagram), forever.
//! - `probe TIMEOUT_MS TARGET...`: probes every TARGET (`tcp:ADDR:PORT` or `udp:ADDR:PORT`) at
//!   once and prints one line per target, in order: `TARGET ok NAME` or `TARGET fail REASON`.
//!   A TCP probe connects and reads the server's line; a UDP probe sends a datagram every
//!   200 ms until an answer arrives or TIMEOUT_MS passes.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") if args.len() >= 3 => serve(&args[1], &args[2..]),
        Some("probe") if args.len() >= 2 => {
            let Ok(ms) = args[1].parse::<u64>() else {
                eprintln!("probe: TIMEOUT_MS must be a number, not {}", args[1]);
                return ExitCode::FAILURE;
            };
            probe(Duration::from_millis(ms), &args[2..]);
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "usage: keelson-netpol-agnhost serve NAME PORT... | probe TIMEOUT_MS tcp|udp:ADDR:PORT..."
            );
            ExitCode::FAILURE
        }
    }
}

fn serve(name: &str, ports: &[String]) -> ExitCode {
    let mut threads = Vec::new();
    for port in ports {
        let Ok(port) = port.parse::<u16>() else {
            eprintln!("serve: bad port {port}");
            return ExitCode::FAILURE;
        };
        let addr = SocketAddr::from(([0, 0, 0, 0], port));
        let tcp = match TcpListener::bind(addr) {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("serve: bind tcp {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let udp = match UdpSocket::bind(addr) {
            Ok(socket) => socket,
            Err(e) => {
                eprintln!("serve: bind udp {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let line = format!("{name}\n");
        threads.push(thread::spawn(move || {
            for stream in tcp.incoming().flatten() {
                let line = line.clone();
                thread::spawn(move || {
                    let mut stream = stream;
                    let _ = stream.write_all(line.as_bytes());
                });
            }
        }));
        let answer = name.to_owned();
        threads.push(thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((_, peer)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(answer.as_bytes(), peer);
            }
        }));
    }
    println!("serving {name} on {}", ports.join(","));
    for t in threads {
        let _ = t.join();
    }
    ExitCode::FAILURE
}

fn probe(timeout: Duration, targets: &[String]) {
    let handles: Vec<_> = targets
        .iter()
        .cloned()
        .map(|target| thread::spawn(move || (probe_one(&target, timeout), target)))
        .collect();
    let mut out = std::io::stdout().lock();
    for handle in handles {
        let (result, target) = handle.join().expect("a probe thread");
        let _ = match result {
            Ok(name) => writeln!(out, "{target} ok {name}"),
            Err(reason) => writeln!(out, "{target} fail {reason}"),
        };
    }
}

fn probe_one(target: &str, timeout: Duration) -> Result<String, String> {
    let (proto, addr) = target
        .split_once(':')
        .ok_or_else(|| "no-protocol".to_owned())?;
    let addr: SocketAddr = addr.parse().map_err(|_| "bad-address".to_owned())?;
    match proto {
        "tcp" => {
            let started = Instant::now();
            let stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| kind(&e))?;
            let left = timeout
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(50));
            stream.set_read_timeout(Some(left)).map_err(|e| kind(&e))?;
            let mut line = String::new();
            BufReader::new(stream)
                .read_line(&mut line)
                .map_err(|e| kind(&e))?;
            match line.trim() {
                "" => Err("closed".to_owned()),
                name => Ok(name.to_owned()),
            }
        }
        "udp" => {
            let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| kind(&e))?;
            socket.connect(addr).map_err(|e| kind(&e))?;
            let deadline = Instant::now() + timeout;
            let mut buf = [0u8; 512];
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err("TimedOut".to_owned());
                }
                // A refused datagram (ICMP port unreachable) surfaces on the next call; keep
                // trying until the deadline, as the server may not listen yet.
                let _ = socket.send(b"probe");
                socket
                    .set_read_timeout(Some(left.min(Duration::from_millis(200))))
                    .map_err(|e| kind(&e))?;
                if let Ok(n) = socket.recv(&mut buf) {
                    return Ok(String::from_utf8_lossy(&buf[..n]).trim().to_owned());
                }
            }
        }
        _ => Err("unknown-protocol".to_owned()),
    }
}

fn kind(e: &std::io::Error) -> String {
    format!("{:?}", e.kind())
}

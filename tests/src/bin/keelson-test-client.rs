//! A small client the datapath tests run inside a network namespace and a cgroup (where the
//! socket-LB programs act on it). One line of output per exchange, parsed by the tests:
//!
//! - `tcp ADDR:PORT N`: N connections; each prints `peer=<getpeername> reply=<first line>`.
//! - `udp ADDR:PORT N`: N datagrams from one unconnected socket; each prints
//!   `peer=<source of the reply> reply=<text>`.
//! - `hold ADDR:PORT`: one connection kept open; prints the first exchange, then one more
//!   exchange per line read from stdin, until stdin closes.
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

fn describe(e: &std::io::Error) -> String {
    format!("error={:?} os={}", e.kind(), e.raw_os_error().unwrap_or(0))
}

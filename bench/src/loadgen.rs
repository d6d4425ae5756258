//! The load generator (`keelson-loadgen`) and the tiny protocol it speaks with `keelson-echo`.
//!
//! A request is [`REQUEST_LEN`] bytes whose first byte says what the server does after replying:
//! [`CLOSE`] (reply, then close: the server closes first, so TIME_WAIT lands on the server side
//! where the benchmark sets `tcp_max_tw_buckets=0`) or [`KEEP`] (reply and wait for the next
//! request). A reply is [`REPLY_LEN`] bytes starting with the backend's `address:port` and a
//! newline, so the client can tell which backend answered even when `getpeername` shows the
//! Service address.
//!
//! Two modes, both bounded in time and in count:
//! - short connections: `workers` threads each loop connect -> request -> reply -> close;
//! - persistent: `connections` threads each keep one connection and ping-pong on it.
//!
//! Each prints one [`LoadReport`] as JSON on stdout.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, SocketAddrV4, TcpStream},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Bytes in a request.
pub const REQUEST_LEN: usize = 64;
/// Bytes in a reply.
pub const REPLY_LEN: usize = 128;
/// First request byte: reply, then close the connection.
pub const CLOSE: u8 = b'C';
/// First request byte: reply and keep the connection for the next request.
pub const KEEP: u8 = b'K';

/// What one load generator run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// `short` or `persistent`.
    pub mode: String,
    /// Wall time of the measurement, in seconds.
    pub elapsed_s: f64,
    /// Completed request/response exchanges (short mode: whole connections).
    pub exchanges: u64,
    /// Failed attempts (connect, write, read, short reply).
    pub errors: u64,
    /// The first error seen, for the log.
    pub first_error: Option<String>,
    /// Latency of completed exchanges, in microseconds (short mode: connect to close).
    pub latency_us: Latency,
    /// Completed exchanges per backend that answered (`address:port`).
    pub backends: BTreeMap<String, u64>,
}

impl LoadReport {
    /// Completed exchanges per second.
    pub fn rate(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.exchanges as f64 / self.elapsed_s
        } else {
            0.0
        }
    }
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
}

/// Parses the report a `keelson-loadgen` run printed: the last non-empty line of its stdout.
pub fn parse_report(stdout: &str) -> anyhow::Result<LoadReport> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .context("keelson-loadgen printed nothing")?;
    serde_json::from_str(line)
        .with_context(|| format!("keelson-loadgen printed an unexpected report: {line}"))
}

/// What to load and for how long.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Where to connect; threads go round-robin over them (one address: a Service VIP; several:
    /// the backends themselves).
    pub targets: Vec<SocketAddrV4>,
    /// How long to generate load.
    pub duration: Duration,
    /// Threads (short mode: workers; persistent mode: connections).
    pub threads: usize,
    /// Stop after this many exchanges in total, whatever the duration.
    pub max_exchanges: u64,
    /// Connect, read and write timeout of one attempt.
    pub timeout: Duration,
}

/// Per-thread tallies, merged into a [`LoadReport`].
struct Tally {
    exchanges: u64,
    errors: u64,
    first_error: Option<String>,
    histogram: Histogram<u64>,
    backends: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            exchanges: 0,
            errors: 0,
            first_error: None,
            histogram: Histogram::new_with_bounds(1, 60_000_000_000, 3)
                .expect("1 ns .. 60 s at 3 digits are valid histogram bounds"),
            backends: BTreeMap::new(),
        }
    }

    fn ok(&mut self, started: Instant, reply: &[u8; REPLY_LEN]) {
        self.exchanges += 1;
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(nanos.max(1));
        let name = reply
            .iter()
            .position(|b| *b == b'\n')
            .map_or(&reply[..0], |end| &reply[..end]);
        // Few distinct backends: a lookup by borrowed key, an allocation only for a new one.
        let name = std::str::from_utf8(name).unwrap_or("?");
        match self.backends.get_mut(name) {
            Some(n) => *n += 1,
            None => {
                self.backends.insert(name.to_owned(), 1);
            }
        }
    }

    fn error(&mut self, error: &std::io::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(error.to_string());
        }
    }

    fn merge(&mut self, other: Self) {
        self.exchanges += other.exchanges;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        // Same bounds on both sides: adding cannot fail.
        let _ = self.histogram.add(&other.histogram);
        for (name, n) in other.backends {
            *self.backends.entry(name).or_default() += n;
        }
    }

    fn report(self, mode: &str, elapsed: Duration) -> LoadReport {
        let us = |q: f64| self.histogram.value_at_quantile(q) as f64 / 1000.0;
        let latency_us = if self.histogram.is_empty() {
            Latency::default()
        } else {
            Latency {
                p50: us(0.5),
                p90: us(0.9),
                p99: us(0.99),
                max: self.histogram.max() as f64 / 1000.0,
            }
        };
        LoadReport {
            mode: mode.to_owned(),
            elapsed_s: elapsed.as_secs_f64(),
            exchanges: self.exchanges,
            errors: self.errors,
            first_error: self.first_error,
            latency_us,
            backends: self.backends,
        }
    }
}

/// Short connections: each worker loops connect -> request -> reply -> close.
pub fn short_connections(spec: &LoadSpec) -> LoadReport {
    run_threads(spec, "short", |index, deadline, budget, tally| {
        let mut next = index;
        while Instant::now() < deadline && budget.take() {
            let target = spec.targets[next % spec.targets.len()];
            next += 1;
            let started = Instant::now();
            match short_exchange(target, spec.timeout) {
                Ok(reply) => tally.ok(started, &reply),
                Err(e) => {
                    tally.error(&e);
                    // A refused connect fails at once: do not spin on it.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    })
}

/// Persistent connections: each thread keeps one connection (reconnecting after an error) and
/// ping-pongs requests on it.
pub fn persistent_connections(spec: &LoadSpec) -> LoadReport {
    run_threads(spec, "persistent", |index, deadline, budget, tally| {
        let target = spec.targets[index % spec.targets.len()];
        let mut connection: Option<TcpStream> = None;
        let mut request = [0u8; REQUEST_LEN];
        request[0] = KEEP;
        let mut reply = [0u8; REPLY_LEN];
        while Instant::now() < deadline && budget.take() {
            if connection.is_none() {
                match connect(target, spec.timeout) {
                    Ok(stream) => connection = Some(stream),
                    Err(e) => {
                        tally.error(&e);
                        std::thread::sleep(Duration::from_millis(1));
                        continue;
                    }
                }
            }
            let Some(stream) = connection.as_mut() else {
                continue;
            };
            let started = Instant::now();
            match stream
                .write_all(&request)
                .and_then(|()| stream.read_exact(&mut reply))
            {
                Ok(()) => tally.ok(started, &reply),
                Err(e) => {
                    tally.error(&e);
                    connection = None;
                }
            }
        }
    })
}

/// The shared exchange budget ([`LoadSpec::max_exchanges`]).
struct Budget(std::sync::atomic::AtomicU64);

impl Budget {
    fn take(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

fn run_threads<F>(spec: &LoadSpec, mode: &str, work: F) -> LoadReport
where
    F: Fn(usize, Instant, &Budget, &mut Tally) + Sync,
{
    let budget = Budget(spec.max_exchanges.into());
    let started = Instant::now();
    let deadline = started + spec.duration;
    let mut total = Tally::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..spec.threads.max(1))
            .map(|index| {
                let (work, budget) = (&work, &budget);
                scope.spawn(move || {
                    let mut tally = Tally::new();
                    work(index, deadline, budget, &mut tally);
                    tally
                })
            })
            .collect();
        for handle in handles {
            match handle.join() {
                Ok(tally) => total.merge(tally),
                Err(_) => total.error(&std::io::Error::other("a load thread panicked")),
            }
        }
    });
    total.report(mode, started.elapsed())
}

fn connect(target: SocketAddrV4, timeout: Duration) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&SocketAddr::V4(target), timeout)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(stream)
}

fn short_exchange(target: SocketAddrV4, timeout: Duration) -> std::io::Result<[u8; REPLY_LEN]> {
    let mut stream = connect(target, timeout)?;
    let mut request = [0u8; REQUEST_LEN];
    request[0] = CLOSE;
    stream.write_all(&request)?;
    let mut reply = [0u8; REPLY_LEN];
    stream.read_exact(&mut reply)?;
    // The server closes first; wait for its FIN so the client side never holds TIME_WAIT.
    let mut rest = [0u8; 16];
    if stream.read(&mut rest)? != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the server sent more than one reply",
        ));
    }
    Ok(reply)
}

/// Pins the calling thread, and every thread it starts afterwards, to `cpu`.
pub fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)
        .with_context(|| format!("CPU {cpu} is out of range"))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("cannot pin to CPU {cpu}"))
}

/// A reply: `address:port\n` padded with spaces to [`REPLY_LEN`].
pub fn reply_for(backend: SocketAddr) -> [u8; REPLY_LEN] {
    let mut reply = [b' '; REPLY_LEN];
    let text = format!("{backend}\n");
    let n = text.len().min(REPLY_LEN);
    reply[..n].copy_from_slice(&text.as_bytes()[..n]);
    reply
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener};

    use super::*;

    #[test]
    fn a_report_round_trips_through_the_json_line() {
        let report = LoadReport {
            mode: "short".into(),
            elapsed_s: 2.0,
            exchanges: 1000,
            errors: 2,
            first_error: Some("connection refused".into()),
            latency_us: Latency {
                p50: 80.5,
                p90: 120.0,
                p99: 300.25,
                max: 900.0,
            },
            backends: [("10.201.0.11:8080".to_owned(), 1000)].into(),
        };
        let stdout = format!(
            "some log line\n{}\n\n",
            serde_json::to_string(&report).expect("serializes")
        );
        let parsed = parse_report(&stdout).expect("parses");
        assert_eq!(parsed, report);
        assert_eq!(parsed.rate(), 500.0);
    }

    #[test]
    fn a_bad_report_says_what_was_printed() {
        let error = parse_report("panicked at something\n").expect_err("not JSON");
        assert!(
            format!("{error:#}").contains("panicked at something"),
            "{error:#}"
        );
        assert!(parse_report("  \n").is_err());
    }

    #[test]
    fn replies_carry_the_backend_address() {
        let reply = reply_for("10.201.0.11:8080".parse().expect("address"));
        assert!(reply.starts_with(b"10.201.0.11:8080\n "));
        let mut tally = Tally::new();
        tally.ok(Instant::now(), &reply);
        tally.ok(Instant::now(), &reply);
        assert_eq!(tally.backends["10.201.0.11:8080"], 2);
    }

    /// A loopback server that answers like keelson-echo, for `max` connections.
    fn loopback_server(max: usize) -> (SocketAddrV4, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind loopback");
        let addr = match listener.local_addr().expect("local address") {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!("bound to IPv4"),
        };
        let handle = std::thread::spawn(move || {
            for stream in listener.incoming().take(max) {
                let mut stream = stream.expect("accept");
                let mut request = [0u8; REQUEST_LEN];
                while stream.read_exact(&mut request).is_ok() {
                    stream.write_all(&reply_for(addr.into())).expect("reply");
                    if request[0] == CLOSE {
                        break;
                    }
                }
            }
        });
        (addr, handle)
    }

    #[test]
    fn short_and_persistent_modes_count_exchanges_within_their_budget() {
        let (addr, server) = loopback_server(6);
        let spec = LoadSpec {
            targets: vec![addr],
            duration: Duration::from_secs(10),
            threads: 1,
            max_exchanges: 5,
            timeout: Duration::from_secs(2),
        };
        let short = short_connections(&spec);
        assert_eq!((short.exchanges, short.errors), (5, 0), "{short:?}");
        assert_eq!(short.backends[&addr.to_string()], 5);
        assert!(short.latency_us.p50 > 0.0 && short.latency_us.p99 >= short.latency_us.p50);
        let persistent = persistent_connections(&LoadSpec {
            max_exchanges: 50,
            ..spec
        });
        assert_eq!((persistent.exchanges, persistent.errors), (50, 0));
        assert_eq!(persistent.mode, "persistent");
        server.join().expect("server thread");
    }
}

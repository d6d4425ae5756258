//! `keelson-loadgen`: the benchmark's client. Runs inside the client network namespace (and
//! cgroup), loads the given targets for a bounded time and count, and prints one JSON report
//! ([`keelson_bench::loadgen::LoadReport`]) on stdout.

use std::{net::SocketAddrV4, process::ExitCode, time::Duration};

use clap::{Parser, ValueEnum};
use keelson_bench::loadgen::{self, LoadSpec};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    /// Connect, send a request, read the response, close; over and over.
    Short,
    /// Keep connections open and ping-pong requests on them.
    Persistent,
}

/// The benchmark's load generator (started by `keelson-bench`, not meant to be run by hand).
#[derive(Debug, Parser)]
#[command(name = "keelson-loadgen")]
struct Args {
    /// What kind of load.
    #[arg(value_enum)]
    mode: Mode,
    /// Where to connect (ADDR:PORT); several are used round-robin.
    #[arg(long = "target", required = true)]
    targets: Vec<SocketAddrV4>,
    /// How long to load, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    duration_ms: u64,
    /// Short mode: concurrent workers. Persistent mode: open connections.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Stop after this many exchanges in total.
    #[arg(long, default_value_t = 10_000_000)]
    max_exchanges: u64,
    /// Timeout of one connect, read or write, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Run every thread on this CPU.
    #[arg(long)]
    cpu: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(cpu) = args.cpu
        && let Err(e) = loadgen::pin_to_cpu(cpu)
    {
        eprintln!("keelson-loadgen: {e:#}");
        return ExitCode::FAILURE;
    }
    let spec = LoadSpec {
        targets: args.targets,
        // At most ten minutes whatever is asked: the load always ends by itself.
        duration: Duration::from_millis(args.duration_ms.min(600_000)),
        threads: args.threads.clamp(1, 256),
        max_exchanges: args.max_exchanges,
        timeout: Duration::from_millis(args.timeout_ms.max(1)),
    };
    let report = match args.mode {
        Mode::Short => loadgen::short_connections(&spec),
        Mode::Persistent => loadgen::persistent_connections(&spec),
    };
    match serde_json::to_string(&report) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("keelson-loadgen: cannot encode the report: {e}");
            ExitCode::FAILURE
        }
    }
}

//! `keelson-echo`: the benchmark's backend server. Runs inside the backends network namespace,
//! listens on every given address, prints `ready` once bound, and exits by itself after
//! `--lifetime-s` (the benchmark stops it earlier, by PID).

use std::{io::Write as _, net::SocketAddrV4, process::ExitCode, time::Duration};

use clap::Parser;

/// The benchmark's backend server (started by `keelson-bench`, not meant to be run by hand).
#[derive(Debug, Parser)]
#[command(name = "keelson-echo")]
struct Args {
    /// Address to listen on (ADDR:PORT); repeat for several.
    #[arg(long = "listen", required = true)]
    listen: Vec<SocketAddrV4>,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Exit after this many seconds even if nobody stops the server.
    #[arg(long, default_value_t = 3600)]
    lifetime_s: u64,
    /// Run every thread on this CPU.
    #[arg(long)]
    cpu: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(cpu) = args.cpu
        && let Err(e) = keelson_bench::loadgen::pin_to_cpu(cpu)
    {
        eprintln!("keelson-echo: {e:#}");
        return ExitCode::FAILURE;
    }
    let ready = || {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    };
    match keelson_bench::echo::serve(
        &args.listen,
        args.threads,
        Duration::from_secs(args.lifetime_s),
        ready,
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keelson-echo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! `keelson-node-agent`: the node daemon.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use keelson_node_agent::datapath;
use tracing_subscriber::EnvFilter;

/// keelson's node agent: pods, pod networking and the eBPF service datapath.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load every embedded eBPF program into this kernel (the verifier checks each) and report
    /// what it accepted. Attaches nothing; needs root (CAP_BPF and CAP_NET_ADMIN).
    Check,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Check => check(),
    }
}

fn check() -> ExitCode {
    match datapath::verify_all() {
        Ok(reports) => {
            println!(
                "{:<24} {:<18} {:>8} {:>9}",
                "PROGRAM", "TYPE", "INSNS", "VERIFIED"
            );
            for r in &reports {
                let verified = r
                    .verified_instructions
                    .map_or_else(|| "-".to_owned(), |n| n.to_string());
                println!(
                    "{:<24} {:<18} {:>8} {:>9}",
                    r.name, r.kind, r.instructions, verified
                );
            }
            println!("{} programs accepted by this kernel", reports.len());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!(
                "keelson-node-agent check: {}",
                anyhow::Error::new(error)
                    .chain()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(": ")
            );
            ExitCode::FAILURE
        }
    }
}

//! `keelson-node-agent`: the node daemon.

use std::{path::PathBuf, process::ExitCode};

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
    /// Inspect the service load balancer's pinned maps.
    Lb {
        #[command(subcommand)]
        command: LbCommand,
    },
    /// Inspect the TC path's connection tracking.
    Ct {
        #[command(subcommand)]
        command: CtCommand,
    },
}

#[derive(Debug, Subcommand)]
enum CtCommand {
    /// Print the conntrack entries (like `cilium bpf ct list global`).
    List(PinArgs),
}

#[derive(Debug, Subcommand)]
enum LbCommand {
    /// Print every frontend (service address:port/protocol) and its backends, as the kernel
    /// maps hold them (like `cilium bpf lb list`).
    List(PinArgs),
    /// Print the datapath counters and map fill levels in Prometheus' text format.
    Metrics(PinArgs),
}

#[derive(Debug, clap::Args)]
struct PinArgs {
    /// This node's name; the maps live under `/sys/fs/bpf/keelson/<node>`.
    #[arg(long, env = "KEELSON_NODE_NAME", default_value_t = default_node_name())]
    node_name: String,
    /// Directory holding the pinned maps (overrides the one derived from --node-name).
    #[arg(long, env = "KEELSON_PIN_DIR")]
    pin_dir: Option<PathBuf>,
}

impl PinArgs {
    fn pin_dir(&self) -> PathBuf {
        self.pin_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("/sys/fs/bpf/keelson").join(&self.node_name))
    }
}

fn default_node_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Check => check(),
        Command::Lb {
            command: LbCommand::List(args),
        } => lb_list(&args),
        Command::Ct {
            command: CtCommand::List(args),
        } => print_lines("ct list", &args, |dir| {
            datapath::lb::list_conntrack(dir)
                .map(|flows| flows.iter().map(ToString::to_string).collect())
        }),
        Command::Lb {
            command: LbCommand::Metrics(args),
        } => print_lines("lb metrics", &args, |dir| {
            datapath::lb::metrics_text(dir).map(|text| vec![text.trim_end().to_owned()])
        }),
    }
}

fn lb_list(args: &PinArgs) -> ExitCode {
    let pin_dir = args.pin_dir();
    match datapath::lb::list_pinned(&pin_dir) {
        Ok(frontends) => {
            for frontend in &frontends {
                println!("{frontend}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!(
                "keelson-node-agent lb list: no load-balancer maps readable under {} ({})",
                pin_dir.display(),
                error_chain(&error)
            );
            ExitCode::FAILURE
        }
    }
}

fn print_lines(
    what: &str,
    args: &PinArgs,
    read: impl FnOnce(&std::path::Path) -> Result<Vec<String>, datapath::DatapathError>,
) -> ExitCode {
    let pin_dir = args.pin_dir();
    match read(&pin_dir) {
        Ok(lines) => {
            for line in lines {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!(
                "keelson-node-agent {what}: no load-balancer maps readable under {} ({})",
                pin_dir.display(),
                error_chain(&error)
            );
            ExitCode::FAILURE
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
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

//! The subcommands that inspect or clean the host rather than run the agent: `check`, `reset`,
//! `lb list`, `lb metrics`, `ct list` and `observe`.

use std::process::ExitCode;

use keelson_node_agent::{datapath, error_chain};

use crate::{
    cli::{CheckArgs, ObserveArgs, PinArgs, ResetArgs},
    default_data_dir,
};

pub(crate) fn lb_list(args: &PinArgs) -> ExitCode {
    let pin_dir = args.pin_dir();
    match datapath::lb::list_pinned(&pin_dir) {
        Ok(frontends) => {
            for frontend in &frontends {
                println!("{frontend}");
            }
            // Then every backend with its counters (socket-LB connects plus TC flows, TC bytes).
            match datapath::lb::read_backend_counters(&pin_dir) {
                Ok(backends) if backends.is_empty() => {}
                Ok(backends) => {
                    println!();
                    for line in datapath::lb::backend_table(&backends) {
                        println!("{line}");
                    }
                }
                Err(error) => {
                    eprintln!(
                        "keelson-node-agent lb list: backend counters unreadable under {} ({})",
                        pin_dir.display(),
                        error_chain(&error)
                    );
                    return ExitCode::FAILURE;
                }
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

pub(crate) fn print_lines(
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

pub(crate) fn observe(args: &ObserveArgs) -> ExitCode {
    use keelson_node_agent::datapath::flows::{
        FlowFilter,
        client::{ObserveRequest, observe},
        record::{table_header, table_row},
    };
    let request = ObserveRequest {
        filter: FlowFilter {
            pod: args.pod.clone(),
            verdict: args.verdict,
        },
        // Like `hubble observe`: the last 20 unless following.
        last: args.last.or((!args.follow).then_some(20)),
        follow: args.follow,
    };
    let json = args.output == "json";
    if !json {
        println!("{}", table_header());
    }
    let printed = observe(args.server, &request, |record| {
        if json {
            println!("{}", serde_json::to_string(&record).unwrap_or_default());
        } else {
            println!("{}", table_row(&record));
        }
    });
    match printed {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!(
                "keelson-node-agent observe: {} (is the agent running with --metrics-listen {}?)",
                error_chain(&error),
                args.server
            );
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn reset(args: &ResetArgs) -> ExitCode {
    use keelson_node_agent::host::reset;
    let metrics_listen = match args.metrics_listen.as_str() {
        "off" => None,
        addr => match addr.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                eprintln!(
                    "keelson-node-agent reset: --metrics-listen {addr:?} is not an address:port \
                     (or `off`)"
                );
                return ExitCode::from(2);
            }
        },
    };
    let config = reset::ResetConfig {
        node_name: args.pins.node_name.clone(),
        pin_dir: args.pins.pin_dir(),
        data_dir: args
            .data_dir
            .clone()
            .unwrap_or_else(|| default_data_dir(&args.pins.node_name)),
        docker_socket: args.docker_socket.clone(),
        config_dir: args.config_dir.clone(),
        service_cidr: args.service_cidr,
        metrics_listen,
    };
    match reset::reset(&config, &mut |line| println!("{line}")) {
        Ok(0) => {
            println!("nothing to remove for node {}", config.node_name);
            ExitCode::SUCCESS
        }
        Ok(_) => ExitCode::SUCCESS,
        Err(errors) => {
            for error in errors {
                eprintln!("keelson-node-agent reset: {}", error_chain(&error));
            }
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn check(args: &CheckArgs) -> ExitCode {
    let (host, host_ok) = keelson_node_agent::host::check_lines(&args.docker_socket);
    for line in host {
        println!("{line}");
    }
    println!();
    let refused = !check_capabilities() || !host_ok;
    let verified = match datapath::verify_all() {
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
            true
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
            false
        }
    };
    // `run` would refuse this kernel: the check fails even when every program verifies.
    if verified && !refused {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The capability table, and what `run` would do with its default flags on this kernel;
/// false when `run` would refuse it.
pub(crate) fn check_capabilities() -> bool {
    use keelson_node_agent::probe;
    let capabilities = match probe::Capabilities::probe() {
        Ok(capabilities) => capabilities,
        Err(error) => {
            println!(
                "kernel capabilities not probed: {}",
                keelson_node_agent::error_chain(&error)
            );
            return true;
        }
    };
    for line in capabilities.table() {
        println!("{line}");
    }
    let defaults = probe::Wanted {
        routing_bpf: true,
        tunnel: false,
        uplinks: true,
    };
    match probe::plan(&capabilities, &defaults) {
        Ok(plan) if plan.fallbacks.is_empty() => {
            println!(
                "run: every feature used (TC attached with {:?})",
                plan.tc_attach
            );
        }
        Ok(plan) => {
            for fallback in &plan.fallbacks {
                println!("run falls back: {fallback}");
            }
        }
        Err(refusal) => {
            println!("run refuses: {refusal}");
            println!();
            return false;
        }
    }
    println!();
    true
}

//! The node agent's `--config` file (`keelson-node-agent run --config node-agent.yaml`): the
//! YAML map of flag names to values read by `keelson_daemon::config_file`, then the flags it
//! stands for parsed by clap as the command line would be. The command below has every shape
//! of flag the agent's `run` has (a value, a repeatable list, a switch, an alias, typed values).

use std::ffi::OsString;

use clap::{Arg, ArgAction, Command, value_parser};
use keelson_daemon::config_file::flags_from_yaml;

fn run_command() -> Command {
    Command::new("run")
        .no_binary_name(true)
        .arg(Arg::new("config").long("config"))
        .arg(Arg::new("kubeconfig").long("kubeconfig"))
        .arg(Arg::new("node-name").long("node-name"))
        .arg(
            Arg::new("node-address")
                .long("node-address")
                .action(ArgAction::Append)
                .value_delimiter(',')
                .value_parser(value_parser!(std::net::IpAddr)),
        )
        .arg(
            Arg::new("ct-capacity")
                .long("ct-capacity")
                .value_parser(value_parser!(u32)),
        )
        .arg(
            Arg::new("metrics-address")
                .long("metrics-address")
                .value_parser(value_parser!(std::net::SocketAddr)),
        )
        .arg(
            Arg::new("kube-reserved")
                .long("kube-reserved")
                .alias("kubeReserved")
                .action(ArgAction::Append),
        )
        .arg(
            Arg::new("masquerade-all")
                .long("masquerade-all")
                .action(ArgAction::SetTrue),
        )
}

/// A config file's text.
pub(crate) fn parse(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let command = run_command();
    let Ok(flags) = flags_from_yaml(&command, text) else {
        return;
    };
    let argv: Vec<OsString> = flags.into_values().flatten().collect();
    let _ = command.try_get_matches_from(argv);
}

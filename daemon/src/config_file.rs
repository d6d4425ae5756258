//! `--config FILE`: a command's flags from a YAML file, as the kubelet takes its configuration
//! from a file (`keelson-node-agent run --config /etc/keelson/node-agent.yaml`,
//! `keelson-control-plane --config /etc/keelson/control-plane.yaml`).
//!
//! The file is a map whose keys are the command's long flag names without the dashes and whose
//! values are what the flag takes (a list for a flag that may be repeated):
//!
//! ```yaml
//! kubeconfig: /etc/keelson/node.kubeconfig
//! node-name: worker-1
//! node-address: [192.0.2.10]
//! ct-capacity: 524288
//! ```
//!
//! A flag given on the command line wins over the file, and the file wins over the flag's
//! environment variable and its default. An unknown key, a nested `config` or a value of the
//! wrong shape is an error naming the file and the key; nothing in the file is ignored.

use std::{collections::BTreeMap, ffi::OsString, path::Path};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// The name of the flag (and of its environment variable) that points at the file.
pub const FLAG: &str = "config";
/// The environment variable that may name the file instead of the flag.
pub const ENV: &str = "KEELSON_CONFIG";

/// Flags that are no settings.
const NOT_KEYS: &[&str] = &[FLAG, "help", "version"];

/// Rewrites `argv` (program name first) so that an invocation with `--config FILE` (or
/// `KEELSON_CONFIG=FILE` in `env_config`) also carries the file's settings as flags, placed
/// before the command line's own. With `Some(subcommand)` the file holds that subcommand's
/// flags and only its invocations are rewritten; with `None` it holds `command`'s own
/// (top-level) flags. Other invocations are returned unchanged.
pub fn expand(
    command: &clap::Command,
    subcommand: Option<&str>,
    argv: Vec<OsString>,
    env_config: Option<OsString>,
) -> anyhow::Result<Vec<OsString>> {
    let (sub, head) = match subcommand {
        Some(name) => {
            if argv.get(1).is_none_or(|arg| arg != name) {
                return Ok(argv);
            }
            let Some(sub) = command.find_subcommand(name) else {
                return Ok(argv);
            };
            (sub, 2)
        }
        None => (command, 1),
    };
    if argv.len() < head {
        return Ok(argv);
    }
    let given = given_flags(&argv[head..]);
    let path = match config_path(&argv[head..]) {
        Some(path) => path,
        None => match env_config.filter(|value| !value.is_empty()) {
            Some(path) => path,
            None => return Ok(argv),
        },
    };
    let path = Path::new(&path);
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let settings =
        flags_from_yaml(sub, &text).with_context(|| format!("config file {}", path.display()))?;

    let mut out = Vec::with_capacity(argv.len() + settings.len());
    out.extend(argv[..head].iter().cloned());
    for (name, values) in settings {
        if given.iter().any(|flag| flag == &name) {
            continue;
        }
        out.extend(values);
    }
    out.extend(argv[head..].iter().cloned());
    Ok(out)
}

/// The long flags on the command line (`--name` and `--name=value`), without dashes.
fn given_flags(args: &[OsString]) -> Vec<String> {
    args.iter()
        .filter_map(|arg| arg.to_str())
        .take_while(|arg| *arg != "--")
        .filter_map(|arg| arg.strip_prefix("--"))
        .map(|flag| flag.split('=').next().unwrap_or(flag).to_owned())
        .collect()
}

/// The value of `--config` on the command line, if any.
fn config_path(args: &[OsString]) -> Option<OsString> {
    let prefix = format!("--{FLAG}=");
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let Some(text) = arg.to_str() else { continue };
        if text == "--" {
            break;
        }
        if text == format!("--{FLAG}") {
            return iter.next().cloned();
        }
        if let Some(value) = text.strip_prefix(&prefix) {
            return Some(value.into());
        }
    }
    None
}

/// Each key of the YAML map as the command-line arguments it stands for, in the file's key order
/// (sorted). `command` is the (sub)command whose flags the file holds.
pub fn flags_from_yaml(
    command: &clap::Command,
    text: &str,
) -> anyhow::Result<BTreeMap<String, Vec<OsString>>> {
    let document: Option<BTreeMap<String, Value>> =
        serde_saphyr::from_str(text).context("not a YAML map of flag names to values")?;
    let mut flags = BTreeMap::new();
    for (key, value) in document.unwrap_or_default() {
        let Some(arg) = command.get_arguments().find(|arg| {
            arg.get_long() == Some(key.as_str())
                || arg
                    .get_all_aliases()
                    .is_some_and(|a| a.contains(&key.as_str()))
        }) else {
            let known: Vec<&str> = command
                .get_arguments()
                .filter_map(clap::Arg::get_long)
                .filter(|long| !NOT_KEYS.contains(long))
                .collect();
            bail!(
                "unknown key `{key}` (the keys are the flags of `{}`: {})",
                command.get_name(),
                known.join(", ")
            );
        };
        // An alias (the kubelet's `kubeReserved`) stands for the flag's long name.
        let key = arg.get_long().map_or(key, str::to_owned);
        if NOT_KEYS.contains(&key.as_str()) {
            bail!("key `{key}` cannot be set from a config file");
        }
        let takes_value = arg.get_action().takes_values();
        let repeatable = matches!(arg.get_action(), clap::ArgAction::Append);
        let values: Vec<String> = match value {
            Value::Null => continue,
            Value::Array(items) if repeatable => items
                .into_iter()
                .map(|item| scalar(&key, item))
                .collect::<anyhow::Result<_>>()?,
            Value::Array(_) => bail!("key `{key}` takes one value, not a list"),
            Value::Bool(on) if !takes_value => {
                if on {
                    flags.insert(key.clone(), vec![OsString::from(format!("--{key}"))]);
                }
                continue;
            }
            other => vec![scalar(&key, other)?],
        };
        if !takes_value {
            bail!("key `{key}` is a switch: give it true or false");
        }
        let args = values
            .into_iter()
            .map(|value| OsString::from(format!("--{key}={value}")))
            .collect();
        flags.insert(key, args);
    }
    Ok(flags)
}

fn scalar(key: &str, value: Value) -> anyhow::Result<String> {
    match value {
        Value::String(text) => Ok(text),
        Value::Number(number) => Ok(number.to_string()),
        Value::Bool(on) => Ok(on.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => {
            bail!("key `{key}` takes a string, a number or a boolean")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use clap::{Arg, ArgAction, Command};

    use super::*;

    fn cli() -> Command {
        Command::new("agent").subcommand(
            Command::new("run")
                .arg(Arg::new("config").long("config"))
                .arg(Arg::new("node-name").long("node-name"))
                .arg(Arg::new("ct-capacity").long("ct-capacity"))
                .arg(
                    Arg::new("node-address")
                        .long("node-address")
                        .action(ArgAction::Append),
                )
                .arg(
                    Arg::new("verbose")
                        .long("verbose")
                        .action(ArgAction::SetTrue),
                ),
        )
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write");
        file
    }

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter()
            .map(|a| a.into_string().expect("utf-8"))
            .collect()
    }

    #[test]
    fn file_settings_come_before_the_command_line_which_wins() {
        let config = file(
            "node-name: from-file\nct-capacity: 4096\nnode-address: [192.0.2.1, 192.0.2.2]\nverbose: true\n",
        );
        let path = config.path().to_str().expect("path");
        let out = expand(
            &cli(),
            Some("run"),
            argv(&["agent", "run", "--config", path, "--node-name=cli"]),
            None,
        )
        .expect("expand");
        assert_eq!(
            strings(out.clone()),
            [
                "agent",
                "run",
                "--ct-capacity=4096",
                "--node-address=192.0.2.1",
                "--node-address=192.0.2.2",
                "--verbose",
                "--config",
                path,
                "--node-name=cli",
            ]
        );
        let matches = cli().try_get_matches_from(out).expect("clap accepts it");
        let run = matches.subcommand_matches("run").expect("run");
        assert_eq!(
            run.get_one::<String>("node-name").map(String::as_str),
            Some("cli")
        );
        assert_eq!(
            run.get_many::<String>("node-address")
                .expect("addresses")
                .count(),
            2
        );
    }

    #[test]
    fn an_alias_names_the_flag_as_the_kubelet_configuration_does() {
        let command = Command::new("agent").subcommand(
            Command::new("run")
                .arg(Arg::new("config").long("config"))
                .arg(
                    Arg::new("kube-reserved")
                        .long("kube-reserved")
                        .alias("kubeReserved"),
                ),
        );
        let config = file("kubeReserved: cpu=100m,memory=1Gi\n");
        let path = config.path().to_str().expect("path");
        let out = expand(
            &command,
            Some("run"),
            argv(&["agent", "run", "--config", path]),
            None,
        )
        .expect("expand");
        assert_eq!(
            strings(out),
            [
                "agent",
                "run",
                "--kube-reserved=cpu=100m,memory=1Gi",
                "--config",
                path
            ]
        );
    }

    #[test]
    fn the_environment_names_the_file_when_the_flag_does_not() {
        let config = file("node-name: from-env-file\n");
        let out = expand(
            &cli(),
            Some("run"),
            argv(&["agent", "run"]),
            Some(config.path().as_os_str().to_owned()),
        )
        .expect("expand");
        assert_eq!(strings(out), ["agent", "run", "--node-name=from-env-file"]);
    }

    #[test]
    fn other_subcommands_and_runs_without_a_file_are_untouched() {
        let plain = argv(&["agent", "run", "--node-name", "x"]);
        assert_eq!(
            expand(&cli(), Some("run"), plain.clone(), None).expect("expand"),
            plain
        );
        let other = argv(&["agent", "check", "--config", "/nonexistent"]);
        assert_eq!(
            expand(&cli(), Some("run"), other.clone(), None).expect("expand"),
            other
        );
    }

    #[test]
    fn bad_files_are_errors_that_name_the_file_and_the_key() {
        let error = |text: &str| {
            let config = file(text);
            let path = config.path().to_str().expect("path").to_owned();
            let error = expand(
                &cli(),
                Some("run"),
                argv(&["agent", "run", "--config", &path]),
                None,
            )
            .expect_err("a bad file is refused");
            let message = format!("{error:#}");
            assert!(message.contains(&path), "{message}");
            message
        };
        assert!(error("nodename: x\n").contains("unknown key `nodename`"));
        assert!(error("node-name: [a, b]\n").contains("takes one value"));
        assert!(error("config: /other\n").contains("cannot be set"));
        assert!(error("verbose: yes please\n").contains("is a switch"));
        assert!(error("- a\n- b\n").contains("not a YAML map"));
        assert!(error("node-name: {a: 1}\n").contains("takes a string"));
        let missing = expand(
            &cli(),
            Some("run"),
            argv(&["agent", "run", "--config=/nonexistent/agent.yaml"]),
            None,
        )
        .expect_err("a missing file is refused");
        assert!(format!("{missing:#}").contains("cannot read config file /nonexistent/agent.yaml"));
    }

    #[test]
    fn a_top_level_file_sets_the_commands_own_flags_before_a_subcommand() {
        let top = Command::new("control-plane")
            .arg(Arg::new("config").long("config").global(true))
            .arg(Arg::new("data-dir").long("data-dir").global(true))
            .arg(Arg::new("secure-port").long("secure-port"))
            .subcommand(Command::new("token").arg(Arg::new("ttl").long("ttl")));
        let config = file("data-dir: /srv/keelson\nsecure-port: 7443\n");
        let path = config.path().to_str().expect("path");
        let out = expand(
            &top,
            None,
            argv(&["cp", "--config", path, "token", "--ttl", "1h"]),
            None,
        )
        .expect("expand");
        assert_eq!(
            strings(out.clone()),
            [
                "cp",
                "--data-dir=/srv/keelson",
                "--secure-port=7443",
                "--config",
                path,
                "token",
                "--ttl",
                "1h"
            ]
        );
        top.clone()
            .try_get_matches_from(out)
            .expect("clap accepts it");
        let unknown = file("bind-adress: 0.0.0.0\n");
        let error = expand(
            &top,
            None,
            argv(&["cp", "--config", unknown.path().to_str().expect("path")]),
            None,
        )
        .expect_err("an unknown key is refused");
        assert_eq!(
            format!("{error:#}"),
            format!(
                "config file {}: unknown key `bind-adress` (the keys are the flags of \
                 `control-plane`: data-dir, secure-port)",
                unknown.path().display()
            )
        );
    }
}

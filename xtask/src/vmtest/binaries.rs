//! The binaries the VMs run: built with cargo, or given on the command line.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context as _, bail};

use super::CLUSTER_TEST;
use crate::cmd::{self, command};

/// The datapath test binaries (integration tests of keelson-tests) the VMs run.
pub(super) const DATAPATH_TESTS: &[&str] = &[
    "datapath_sock_lb",
    "datapath_tc_lb",
    "datapath_counters",
    "datapath_ct_gc",
    "datapath_nodeport_snat",
    "datapath_verifier",
];

/// What the VMs run.
#[derive(Debug)]
pub(super) struct Binaries {
    pub(super) agent: PathBuf,
    pub(super) client: PathBuf,
    /// (test name, executable)
    pub(super) tests: Vec<(String, PathBuf)>,
    /// The two-VM scenario's test binary (run on the host; keelson-control-plane is next to
    /// the agent).
    pub(super) cluster_test: PathBuf,
}

pub(super) fn prebuilt(
    agent: &Path,
    tests: &[PathBuf],
    cluster_test: &Path,
) -> anyhow::Result<Binaries> {
    let agent = fs::canonicalize(agent).with_context(|| format!("{}", agent.display()))?;
    for sibling in ["keelson-test-client", "keelson-control-plane"] {
        let path = agent.with_file_name(sibling);
        if !path.is_file() {
            bail!(
                "{} is missing (it must be next to the agent)",
                path.display()
            );
        }
    }
    let client = agent.with_file_name("keelson-test-client");
    let cluster_test =
        fs::canonicalize(cluster_test).with_context(|| format!("{}", cluster_test.display()))?;
    let tests = tests
        .iter()
        .map(|t| {
            let path = fs::canonicalize(t).with_context(|| format!("{}", t.display()))?;
            let file = path.file_name().unwrap_or_default().to_string_lossy();
            let name = file.rsplit_once('-').map_or(&*file, |(n, _)| n).to_owned();
            Ok((name, path))
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Binaries {
        agent,
        client,
        tests,
        cluster_test,
    })
}

/// Builds the agent, the test client and the datapath tests, and finds their executables in
/// cargo's JSON messages.
pub(super) fn build() -> anyhow::Result<Binaries> {
    println!("==> vm-test: building the node agent and the datapath tests");
    let mut executables: Vec<(String, Vec<String>, PathBuf)> = Vec::new();
    let mut builds = vec![vec![
        "build",
        "-p",
        "keelson-node-agent",
        "-p",
        "keelson-control-plane",
        "--bin",
        "keelson-node-agent",
        "--bin",
        "keelson-control-plane",
    ]];
    let mut tests = vec!["build", "-p", "keelson-tests"];
    for t in DATAPATH_TESTS.iter().chain([&CLUSTER_TEST]) {
        tests.extend(["--test", t]);
    }
    builds.push(tests);
    for args in builds {
        let mut cmd = command("cargo");
        cmd.args(&args)
            .arg("--message-format=json-render-diagnostics")
            .stdout(Stdio::piped());
        // As `cargo xtask test` builds: no incremental state (gigabytes, useless for one build).
        if std::env::var_os("CARGO_INCREMENTAL").is_none() {
            cmd.env("CARGO_INCREMENTAL", "0");
        }
        println!("$ {}", cmd::display(&cmd));
        let output = cmd
            .spawn()
            .and_then(std::process::Child::wait_with_output)
            .context("cannot start cargo")?;
        if !output.status.success() {
            bail!("`cargo {}` failed with {}", args.join(" "), output.status);
        }
        executables.extend(executables_in(&String::from_utf8_lossy(&output.stdout)));
    }
    let find = |name: &str, kind: &str| {
        executables
            .iter()
            .find(|(n, k, _)| n == name && k.iter().any(|x| x == kind))
            .map(|(_, _, p)| p.clone())
            .with_context(|| format!("cargo reported no {kind} executable named {name}"))
    };
    Ok(Binaries {
        agent: find("keelson-node-agent", "bin")?,
        client: find("keelson-test-client", "bin")?,
        tests: DATAPATH_TESTS
            .iter()
            .map(|t| Ok(((*t).to_owned(), find(t, "test")?)))
            .collect::<anyhow::Result<_>>()?,
        cluster_test: find(CLUSTER_TEST, "test")?,
    })
}

/// (target name, target kinds, executable) of each compiler-artifact message with an
/// executable in cargo's `--message-format=json` output.
pub(super) fn executables_in(json_lines: &str) -> Vec<(String, Vec<String>, PathBuf)> {
    json_lines
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|msg| msg["reason"] == "compiler-artifact")
        .filter_map(|msg| {
            let exe = PathBuf::from(msg["executable"].as_str()?);
            let name = msg["target"]["name"].as_str()?.to_owned();
            let kinds = msg["target"]["kind"]
                .as_array()?
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            Some((name, kinds, exe))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executables_from_cargo_messages() {
        let out = r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"keelson_tests"},"executable":null}
{"reason":"compiler-artifact","target":{"kind":["bin"],"name":"keelson-test-client"},"executable":"/t/debug/keelson-test-client","fresh":true}
{"reason":"compiler-artifact","target":{"kind":["test"],"name":"datapath_tc_lb"},"executable":"/t/debug/deps/datapath_tc_lb-0123","fresh":false}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            executables_in(out),
            vec![
                (
                    "keelson-test-client".to_owned(),
                    vec!["bin".to_owned()],
                    PathBuf::from("/t/debug/keelson-test-client")
                ),
                (
                    "datapath_tc_lb".to_owned(),
                    vec!["test".to_owned()],
                    PathBuf::from("/t/debug/deps/datapath_tc_lb-0123")
                ),
            ]
        );
    }
}

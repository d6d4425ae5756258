//! Bad input to the daemons, refused as a user would want it: one line on stderr naming the
//! cause, exit code 1, and nothing written to the host.
//!
//! - a config file with an unknown key, for `keelson-control-plane --config` and
//!   `keelson-node-agent run --config`;
//! - `keelson-node-agent run` without a reachable Docker: refused before it creates its data
//!   directory or pins anything.

use std::{path::Path, process::Output};

use keelson_tests::{cluster::control_plane_binary, lbkit::node_agent_binary, require_root};

/// The one line a refused command printed (asserting there is exactly one, and exit code 1).
fn one_line_refusal(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "exit code 1 expected: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected on stderr: {stderr:?}");
    lines[0].to_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the config file");
    path
}

#[test]
fn config_files_with_an_unknown_key_are_refused_in_one_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("state");

    let config = write(
        dir.path(),
        "control-plane.yaml",
        &format!("data-dir: {}\nbind-adress: 127.0.0.1\n", data_dir.display()),
    );
    let output = std::process::Command::new(control_plane_binary())
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run keelson-control-plane");
    let line = one_line_refusal(&output);
    assert!(
        line.starts_with("keelson-control-plane: config file ")
            && line.contains("unknown key `bind-adress`"),
        "{line}"
    );
    assert!(!data_dir.exists(), "nothing may be written: {line}");

    let config = write(
        dir.path(),
        "node-agent.yaml",
        "kubeconfig: /nonexistent\nnode-adress: [192.0.2.1]\n",
    );
    let output = std::process::Command::new(node_agent_binary())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .expect("run keelson-node-agent");
    let line = one_line_refusal(&output);
    assert!(
        line.contains("config file") && line.contains("unknown key `node-adress`"),
        "{line}"
    );
}

#[test]
fn the_agent_refuses_to_start_without_docker_before_writing_anything() {
    require_root();
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().join("agent");
    let node = format!("nodocker{}", std::process::id());
    let pins = Path::new("/sys/fs/bpf/keelson").join(&node);
    let kubeconfig = write(dir.path(), "kubeconfig", "apiVersion: v1\nkind: Config\n");
    let output = std::process::Command::new(node_agent_binary())
        .arg("run")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--node-name", &node, "--uplink", "off"])
        .arg("--data-dir")
        .arg(&data_dir)
        .arg("--docker-socket")
        .arg(dir.path().join("no-docker.sock"))
        .env("RUST_LOG", "error")
        .output()
        .expect("run keelson-node-agent");
    let line = one_line_refusal(&output);
    assert!(
        line.contains("Docker is not reachable") && line.contains("apt-get install docker.io"),
        "{line}"
    );
    assert!(
        !data_dir.exists(),
        "no data directory may be created: {line}"
    );
    assert!(!pins.exists(), "nothing may be pinned: {line}");
}

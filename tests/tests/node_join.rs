//! `keelson-node-agent join` against a real control plane: `keelson-control-plane token create`
//! prints the join command; `join` with it writes a kubeconfig that authenticates as
//! `system:node:<name>` and the agent's config file. A garbled token, a wrong CA hash and a
//! deleted token are each refused with one line on stderr, exit code 1, and no file written.
//!
//! Needs the control plane's side of issue 18 (bootstrap tokens, signed cluster-info, CSR
//! approval and signing, `token create`).

use std::{
    path::Path,
    process::{Command, Output},
};

use k8s_openapi::api::{authentication::v1::SelfSubjectReview, core::v1::Secret};
use keelson_tests::{cluster::ControlPlane, lbkit::node_agent_binary};

/// The token and CA hash of the join command `token create` printed.
struct JoinCommand {
    token: String,
    ca_cert_hash: String,
}

fn token_create(plane: &ControlPlane) -> JoinCommand {
    let output = Command::new(keelson_tests::cluster::control_plane_binary())
        .arg("--data-dir")
        .arg(plane.data_dir())
        .args(["token", "create", "--ttl", "1h"])
        .output()
        .expect("run keelson-control-plane token create");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "token create failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout.trim();
    assert_eq!(stdout.lines().count(), 1, "one line: {stdout:?}");
    assert!(
        line.starts_with("keelson-node-agent join --server https://"),
        "{line}"
    );
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |flag: &str| {
        words
            .iter()
            .position(|w| *w == flag)
            .and_then(|i| words.get(i + 1))
            .unwrap_or_else(|| panic!("no {flag} in {line:?}"))
            .to_string()
    };
    JoinCommand {
        token: after("--token"),
        ca_cert_hash: after("--ca-cert-hash"),
    }
}

fn join(plane: &ControlPlane, token: &str, hash: &str, node: &str, dir: &Path) -> Output {
    Command::new(node_agent_binary())
        .args(["join", "--server", &plane.url(), "--token", token])
        .args([
            "--ca-cert-hash",
            hash,
            "--node-name",
            node,
            "--timeout",
            "60s",
        ])
        .arg("--config-dir")
        .arg(dir)
        .output()
        .expect("run keelson-node-agent join")
}

/// Exit code 1, exactly one line on stderr starting with `expected`, nothing in `dir`.
fn assert_refused(output: &Output, expected: &str, dir: &Path) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.contains(" INFO ")).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr:?}");
    assert!(
        lines[0].starts_with(&format!("keelson-node-agent join: {expected}")),
        "{stderr}"
    );
    let written: Vec<_> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.file_name())
                .collect()
        })
        .unwrap_or_default();
    assert!(written.is_empty(), "files written on failure: {written:?}");
}

#[tokio::test]
async fn join_writes_node_credentials_and_refuses_bad_input() {
    let plane = ControlPlane::start();
    let command = token_create(&plane);

    // A garbled token, a wrong CA hash.
    let dir = tempfile::tempdir().expect("tempdir");
    let garbled = join(
        &plane,
        "not-a-token",
        &command.ca_cert_hash,
        "n1",
        dir.path(),
    );
    assert_refused(
        &garbled,
        "--token must look like abcdef.0123456789abcdef",
        dir.path(),
    );
    let wrong = format!("sha256:{}", "0".repeat(64));
    let wrong_hash = join(&plane, &command.token, &wrong, "n1", dir.path());
    assert_refused(&wrong_hash, "the cluster CA's hash is sha256:", dir.path());
    let stderr = String::from_utf8_lossy(&wrong_hash.stderr);
    assert!(stderr.contains(&command.ca_cert_hash), "{stderr}");
    assert!(stderr.contains("not the --ca-cert-hash given"), "{stderr}");

    // The real join.
    let joined = join(
        &plane,
        &command.token,
        &command.ca_cert_hash,
        "worker-join",
        dir.path(),
    );
    assert!(
        joined.status.success(),
        "join failed: {}{}\ncontrol plane log:\n{}",
        String::from_utf8_lossy(&joined.stdout),
        String::from_utf8_lossy(&joined.stderr),
        plane.log()
    );
    let kubeconfig = dir.path().join("node.kubeconfig");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&kubeconfig)
            .expect("node.kubeconfig")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let config = std::fs::read_to_string(dir.path().join("node-agent.yaml")).expect("config");
    assert!(config.contains("node-name: \"worker-join\""), "{config}");
    assert!(
        config.contains(&format!("kubeconfig: \"{}\"", kubeconfig.display())),
        "{config}"
    );

    let parsed = kube::config::Kubeconfig::read_from(&kubeconfig).expect("a kubeconfig");
    let client_config = kube::Config::from_custom_kubeconfig(parsed, &Default::default())
        .await
        .expect("a client config");
    let client = kube::Client::try_from(client_config).expect("a client");
    let review = kube::Api::<SelfSubjectReview>::all(client)
        .create(&Default::default(), &SelfSubjectReview::default())
        .await
        .expect("a SelfSubjectReview with the node's credentials");
    let user = review.status.and_then(|s| s.user_info).expect("user info");
    assert_eq!(user.username.as_deref(), Some("system:node:worker-join"));
    assert!(
        user.groups
            .unwrap_or_default()
            .iter()
            .any(|g| g == "system:nodes"),
        "in system:nodes"
    );

    // Joining again over the same directory is refused.
    let again = join(
        &plane,
        &command.token,
        &command.ca_cert_hash,
        "worker-join",
        dir.path(),
    );
    assert_eq!(again.status.code(), Some(1));

    // A deleted token.
    let id = command
        .token
        .split('.')
        .next()
        .expect("token id")
        .to_owned();
    let secrets: kube::Api<Secret> = kube::Api::namespaced(plane.client().await, "kube-system");
    secrets
        .delete(&format!("bootstrap-token-{id}"), &Default::default())
        .await
        .expect("delete the token's Secret");
    let fresh = tempfile::tempdir().expect("tempdir");
    // The signature leaves cluster-info once the token is gone (the control plane re-signs it
    // when tokens change); until then the CSR create is refused with 401.
    let deleted = join(
        &plane,
        &command.token,
        &command.ca_cert_hash,
        "n2",
        fresh.path(),
    );
    let stderr = String::from_utf8_lossy(&deleted.stderr);
    assert!(
        stderr.contains("the token ID is not known to")
            || stderr.contains("expired or deleted token?"),
        "{stderr}"
    );
    assert_refused(&deleted, "", fresh.path());
}

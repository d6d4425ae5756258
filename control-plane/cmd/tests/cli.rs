//! The binary itself: its help explains HTTPS and authentication, it writes a kubeconfig with
//! credentials, serves only TLS, issues node kubeconfigs, and exits cleanly on SIGTERM. (Building these tests also builds the binary that
//! `tests/tests/api_kubectl.rs` drives with the real kubectl.)

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const BINARY: &str = env!("CARGO_BIN_EXE_keelson-control-plane");

#[test]
fn help_explains_https_and_credentials() {
    let output = Command::new(BINARY)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(output.status.success(), "--help fails: {output:?}");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("HTTPS") && help.contains("401"),
        "--help must explain HTTPS and authentication:\n{help}"
    );
    for flag in [
        "--token-auth-file",
        "--tls-san",
        "node-kubeconfig",
        "--data-dir",
        "--listen",
        "--store",
        "--etcd-endpoints",
        "KEELSON_DATA_DIR",
        "snapshot",
        "--snapshot-schedule-cron",
        "--snapshot-retention",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[test]
fn serves_writes_a_kubeconfig_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(BINARY)
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--listen")
        .arg("127.0.0.1:0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start keelson-control-plane");
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !kubeconfig.is_file() {
        assert!(Instant::now() < deadline, "no kubeconfig after 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        dir.path().join("state.db").is_file(),
        "the SQLite store is DATA_DIR/state.db"
    );
    let config = std::fs::read_to_string(&kubeconfig).expect("read kubeconfig");
    let server = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .unwrap_or_else(|| panic!("no https server in kubeconfig:\n{config}"))
        .to_owned();
    for field in [
        "certificate-authority-data: ",
        "client-certificate-data: ",
        "client-key-data: ",
    ] {
        assert!(
            config.contains(field),
            "kubeconfig lacks {field}:\n{config}"
        );
    }
    assert_eq!(mode(&kubeconfig), 0o600, "the admin kubeconfig is private");
    assert_eq!(
        mode(&dir.path().join("pki/ca.key")),
        0o600,
        "the CA key is private"
    );

    // Plain HTTP gets no answer: the API is only served over TLS.
    let mut stream = TcpStream::connect(&server).expect("connect to the kubeconfig's server");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream
        .write_all(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send request");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "plain HTTP must not be served: {}",
        String::from_utf8_lossy(&answer)
    );

    let node_config = dir.path().join("n1.kubeconfig");
    let output = Command::new(BINARY)
        .arg("--data-dir")
        .arg(dir.path())
        .args([
            "--listen",
            &server,
            "node-kubeconfig",
            "--node",
            "n1",
            "--out",
        ])
        .arg(&node_config)
        .output()
        .expect("run node-kubeconfig");
    assert!(output.status.success(), "node-kubeconfig: {output:?}");
    let node = std::fs::read_to_string(&node_config).expect("node kubeconfig");
    assert!(node.contains("user: system:node:n1"), "{node}");
    assert!(
        node.contains(&format!("server: https://{server}")),
        "{node}"
    );
    assert_eq!(mode(&node_config), 0o600);
    let output = Command::new(BINARY)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["node-kubeconfig", "--node", "Not_A_Name"])
        .output()
        .expect("run node-kubeconfig");
    assert!(!output.status.success(), "an invalid node name is refused");
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not a valid node name"),
        "{output:?}"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(exit) = child.try_wait().expect("wait") {
            assert!(exit.success(), "exit after SIGTERM: {exit}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

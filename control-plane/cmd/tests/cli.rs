//! The binary itself: its help warns about plain HTTP, it writes a working kubeconfig, serves,
//! and exits cleanly on SIGTERM. (Building these tests also builds the binary that
//! `tests/tests/api_kubectl.rs` drives with the real kubectl.)

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const BINARY: &str = env!("CARGO_BIN_EXE_keelson-control-plane");

#[test]
fn help_warns_about_plain_http() {
    let output = Command::new(BINARY)
        .arg("--help")
        .output()
        .expect("run --help");
    assert!(output.status.success(), "--help fails: {output:?}");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("PLAIN HTTP"),
        "--help must warn about plain HTTP:\n{help}"
    );
    for flag in [
        "--data-dir",
        "--listen",
        "--store",
        "--etcd-endpoints",
        "KEELSON_DATA_DIR",
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
        .find_map(|l| l.trim().strip_prefix("server: http://"))
        .unwrap_or_else(|| panic!("no http server in kubeconfig:\n{config}"))
        .to_owned();
    let mut stream = TcpStream::connect(&server).expect("connect to the kubeconfig's server");
    stream
        .write_all(
            b"GET /api/v1/namespaces/kube-system HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .expect("send request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read answer");
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "kube-system exists: {answer}"
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

//! End to end, privileged: the streaming commands with the real kubectl 1.33 (WebSocket for
//! exec, attach and cp; port-forward tunnelling SPDY over WebSocket) and 1.27 (SPDY/3.1 for
//! everything), relayed by the API server to the node agent: `exec` with stdin and the
//! command's exit code, `cp` of a binary file both ways, `port-forward` with 100 concurrent
//! requests, `attach`, `debug` with an ephemeral container sharing the target's processes,
//! `kubectl proxy` to a Service, and the errors users see for a missing container or a closed
//! port.

use std::{
    io::{BufRead as _, Write as _},
    process::Stdio,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    pods::{PodAgent, apply, is_ready, wait_pod},
};
use kube::Api;

/// Starts `kubectl <args>` (port-forward, proxy) and waits for the line that names its local
/// port; returns the child and the port.
fn serving(kubectl: &Kubectl<'_>, args: &[&str], marker: &str) -> (std::process::Child, u16) {
    let mut child = kubectl
        .command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubectl");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    // Reads kubectl's output to its end: a closed pipe would kill it (Go dies of SIGPIPE on
    // stdout) at its next "Handling connection" line.
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            let _ = child.kill();
            let output = child.wait_with_output().expect("kubectl output");
            panic!(
                "kubectl {args:?} never said {marker:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            )
        };
        // "Forwarding from 127.0.0.1:41234 -> 80", "Starting to serve on 127.0.0.1:8001".
        if let Some(rest) = line.split(marker).nth(1) {
            let port = rest
                .trim_start_matches(|c: char| !c.is_ascii_digit())
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("no port in {line:?}"));
            return (child, port);
        }
    }
}

/// `kubectl attach -i ...`: writes `ping` lines until the container answers `got ping` (at most
/// 20 s), then the client goes away (killed); returns the lines seen.
fn attach_and_ping(kubectl: &Kubectl<'_>, attach_args: &[&str]) -> Vec<String> {
    let mut attach = kubectl
        .command(attach_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl attach");
    let mut input = attach.stdin.take().expect("stdin");
    let stdout = attach.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("got ping")) && Instant::now() < deadline {
        let _ = input.write_all(b"ping\n");
        let _ = input.flush();
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
            seen.push(line);
        }
    }
    let _ = attach.kill();
    let _ = attach.wait();
    seen
}

fn args(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// One HTTP/1.0 GET to 127.0.0.1:`port`: the body.
async fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    // kubectl 1.27 may end the local connection with a reset once the pod's side closed: what
    // arrived before it counts.
    let mut response = Vec::new();
    let mut buffer = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !response.is_empty() => {
                break;
            }
            Err(e) => return Err(e),
        }
    }
    let text = String::from_utf8_lossy(&response).into_owned();
    Ok(text
        .split_once("\r\n\r\n")
        .map_or(text.clone(), |(_, b)| b.to_owned()))
}

fn run_with_stdin(kubectl: &Kubectl<'_>, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut child = kubectl
        .command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kubectl");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let output = child.wait_with_output().expect("kubectl output");
    let _ = writer.join();
    output
}

async fn streaming_with(minor: u32, plane: &ControlPlane, agent: &PodAgent) {
    let kubectl = Kubectl::new(minor, plane);
    let ns = format!("stream-{minor}");
    kubectl.run(&["create", "namespace", &ns]);
    let pods: Api<Pod> = Api::namespaced(plane.client().await, &ns);
    let manifest = format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: box, namespace: {ns}, labels: {{app: box}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: box
    image: keelson/busybox:1
    command: [\"sleep\", \"3600\"]
  - name: talk
    image: keelson/busybox:1
    stdin: true
    command: [\"sh\", \"-c\", \"while read line; do echo got $line; done; echo stdin-closed; sleep 3600\"]
  - name: once
    image: keelson/busybox:1
    stdin: true
    stdinOnce: true
    command: [\"sh\", \"-c\", \"while read line; do echo got $line; done; echo stdin-closed; sleep 3600\"]
---
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: {ns}, labels: {{app: web}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: keelson/httpd:1
    ports: [{{name: http, containerPort: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {ns}}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
",
        node = agent.node
    );
    apply(&kubectl, plane.data_dir(), &format!("{ns}.yaml"), &manifest);
    for name in ["box", "web"] {
        wait_pod(
            &pods,
            name,
            Duration::from_secs(60),
            agent,
            "Ready",
            is_ready,
        )
        .await;
    }
    let with = |args: &[&str]| -> Vec<String> {
        ["-n", ns.as_str()]
            .iter()
            .chain(args)
            .map(|s| (*s).to_owned())
            .collect::<Vec<_>>()
    };

    eprintln!("kubectl 1.{minor}: exec");
    // exec: stdout, the exit code, stdin.
    let out = kubectl.run(&args(&with(&[
        "exec", "box", "-c", "box", "--", "echo", "hi",
    ])));
    assert_eq!(out, "hi\n", "kubectl 1.{minor}");
    let status = kubectl
        .command(&args(&with(&[
            "exec", "box", "-c", "box", "--", "sh", "-c", "exit 3",
        ])))
        .status()
        .expect("kubectl exec");
    assert_eq!(
        status.code(),
        Some(3),
        "kubectl 1.{minor}: the command's exit code"
    );
    let output = run_with_stdin(
        &kubectl,
        &args(&with(&[
            "exec",
            "-i",
            "box",
            "-c",
            "box",
            "--",
            "sh",
            "-c",
            "wc -c; cat",
        ])),
        b"from stdin\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "11\n",
        "kubectl 1.{minor}: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    eprintln!("kubectl 1.{minor}: cp");
    // cp: 1 MiB of random bytes in and out, unchanged.
    let dir = tempfile::tempdir().expect("temp dir");
    let original: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let local = dir.path().join("blob.bin");
    std::fs::write(&local, &original).expect("write blob");
    let target = format!("{ns}/box:/tmp/blob.bin");
    kubectl.run(&["cp", "-c", "box", &local.to_string_lossy(), &target]);
    let back = dir.path().join("back.bin");
    kubectl.run(&["cp", "-c", "box", &target, &back.to_string_lossy()]);
    let copied = std::fs::read(&back).expect("read copied blob");
    assert!(
        copied == original,
        "kubectl 1.{minor}: cp changed the file ({} bytes back)",
        copied.len()
    );

    eprintln!("kubectl 1.{minor}: attach");
    // attach: what goes to the container's stdin comes back from its output. The session
    // lasts while the container runs (as with the kubelet, the client's stdin ending does not
    // end it), so the line is awaited and kubectl stopped.
    for container in ["talk", "once"] {
        let seen = attach_and_ping(
            &kubectl,
            &args(&with(&["attach", "-i", "box", "-c", container])),
        );
        assert!(
            seen.iter().any(|l| l.contains("got ping")),
            "kubectl 1.{minor} attach -c {container}: {seen:?}\nagent log:\n{}",
            agent.log()
        );
    }
    // The client left: a `stdinOnce` container's stdin is closed (its loop ends), the other's
    // stays open.
    let deadline = Instant::now() + Duration::from_secs(20);
    let closed = loop {
        let logs = kubectl.run(&args(&with(&["logs", "box", "-c", "once"])));
        if logs.contains("stdin-closed") || Instant::now() > deadline {
            break logs;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        closed.contains("stdin-closed"),
        "kubectl 1.{minor}: stdinOnce closes stdin after the attach: {closed}"
    );
    let talk = kubectl.run(&args(&with(&["logs", "box", "-c", "talk"])));
    assert!(!talk.contains("stdin-closed"), "{talk}");

    eprintln!("kubectl 1.{minor}: port-forward");
    // port-forward: 100 concurrent requests through one forward.
    let (mut forward, port) = serving(
        &kubectl,
        &args(&with(&["port-forward", "pod/web", ":80"])),
        "Forwarding from 127.0.0.1:",
    );
    let requests: Vec<_> = (0..100)
        .map(|_| {
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(20), http_get(port, "/"))
                    .await
                    .unwrap_or_else(|_| Err(std::io::Error::other("no answer within 20 s")))
            })
        })
        .collect();
    let mut answered = 0;
    let mut failures = Vec::new();
    for request in requests {
        match request.await.expect("join") {
            Ok(body) if body.contains("web") => answered += 1,
            Ok(body) => failures.push(format!("answer {body:?}")),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if answered != 100 {
        let _ = forward.kill();
        let out = forward.wait_with_output().expect("output");
        panic!(
            "kubectl 1.{minor} port-forward: {answered} of 100 answered; {:?}\nkubectl: {}\nagent log:\n{}",
            &failures[..failures.len().min(5)],
            String::from_utf8_lossy(&out.stderr),
            agent.log()
        );
    }
    assert_eq!(answered, 100);
    let _ = forward.kill();
    let _ = forward.wait();

    eprintln!("kubectl 1.{minor}: port-forward to a closed port");
    // port-forward to a closed port: the connection ends and kubectl says why.
    let (mut forward, port) = serving(
        &kubectl,
        &args(&with(&["port-forward", "pod/web", ":81"])),
        "Forwarding from 127.0.0.1:",
    );
    let body = http_get(port, "/").await.unwrap_or_default();
    assert_eq!(body, "", "kubectl 1.{minor}: nothing listens on 81");
    let _ = forward.kill();
    let output = forward.wait_with_output().expect("port-forward output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("connection refused"),
        "kubectl 1.{minor}: {stderr}"
    );

    eprintln!("kubectl 1.{minor}: Bad input");
    // Bad input: a missing container.
    let error = kubectl.fail(&args(&with(&["exec", "box", "-c", "nope", "--", "true"])));
    assert!(
        error.contains("container nope is not valid for pod box"),
        "kubectl 1.{minor}: {error}"
    );

    eprintln!("kubectl 1.{minor}: kubectl proxy reaches the Service.");
    // kubectl proxy reaches the Service.
    let (mut proxy, port) = serving(
        &kubectl,
        &["proxy", "--port=0"],
        "Starting to serve on 127.0.0.1:",
    );
    let body = http_get(
        port,
        &format!("/api/v1/namespaces/{ns}/services/web:80/proxy/"),
    )
    .await
    .expect("through kubectl proxy");
    assert!(body.contains("web"), "kubectl 1.{minor} proxy: {body:?}");
    let _ = proxy.kill();
    let _ = proxy.wait();

    eprintln!("kubectl 1.{minor}: debug");
    // debug: an ephemeral container in box's process namespace sees its `sleep 3600`.
    kubectl.run(&args(&with(&[
        "debug",
        "box",
        "--image=keelson/busybox:1",
        "--target=box",
        "-c",
        "dbg",
        "--",
        "sh",
        "-c",
        "ps; sleep 30",
    ])));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let logs = kubectl
            .command(&args(&with(&["logs", "box", "-c", "dbg"])))
            .output()
            .expect("logs");
        let text = String::from_utf8_lossy(&logs.stdout);
        if text.contains("sleep 3600") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl 1.{minor} debug: {text:?}\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_pod(
        &pods,
        "box",
        Duration::from_secs(20),
        agent,
        "the ephemeral container's status",
        |p| {
            p.status
                .as_ref()
                .and_then(|s| s.ephemeral_container_statuses.as_ref())
                .is_some_and(|s| s.iter().any(|s| s.name == "dbg"))
        },
    )
    .await;

    if minor == 33 {
        python_stream(plane, &ns);
    }
    kubectl.run(&["delete", "namespace", &ns, "--timeout=60s"]);
}

/// The Python client's `stream()` exec and `portforward()` (tests/python/stream_e2e.py).
fn python_stream(plane: &ControlPlane, ns: &str) {
    let python = std::path::Path::new("/opt/keelson/venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `cargo xtask setup`",
        python.display()
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/stream_e2e.py");
    let mut child = std::process::Command::new(python)
        .arg(&script)
        .arg(&plane.kubeconfig)
        .args([ns, "box", "web"])
        .env("PYTHONUNBUFFERED", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait python").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let output = child.wait_with_output().expect("python output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.trim_end().ends_with("ALL OK"),
        "python stream_e2e: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_streams_with_1_33_and_1_27() {
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    let agent = PodAgent::start(&plane, &["--node-address", "127.0.0.1"]);
    for minor in [33, 27] {
        streaming_with(minor, &plane, &agent).await;
    }
    agent.assert_no_leaks();
}

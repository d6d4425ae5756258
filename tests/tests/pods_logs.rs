//! End to end, privileged: the agent's kubelet endpoint serves container logs (what the API
//! server proxies `kubectl logs` to, also tested here) over HTTPS with a serving certificate the
//! cluster CA issued, only to clients with a cluster certificate of the API server or an
//! administrator: `tailLines`, `previous`, stdout and stderr, `-f` across a restart, and logs
//! rotated at `--container-log-max-size`.

use std::{path::Path, process::Command, time::Duration};

use k8s_openapi::api::core::v1::{Node, Pod};
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    pods::{PodAgent, apply, wait_pod},
};
use kube::Api;

/// Writes the client certificate and key of `kubeconfig` to `dir` as PEM files.
fn client_pem(kubeconfig: &Path, dir: &Path, prefix: &str) -> (String, String) {
    let text = std::fs::read_to_string(kubeconfig).expect("read kubeconfig");
    let field = |name: &str| {
        let value = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("{name} in {}", kubeconfig.display()))
            .trim()
            .to_owned();
        let out = Command::new("base64")
            .arg("-d")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write as _;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(value.as_bytes())?;
                child.wait_with_output()
            })
            .expect("base64 -d");
        out.stdout
    };
    let cert = dir.join(format!("{prefix}.crt"));
    let key = dir.join(format!("{prefix}.key"));
    std::fs::write(&cert, field("client-certificate-data")).expect("write cert");
    std::fs::write(&key, field("client-key-data")).expect("write key");
    (
        cert.to_string_lossy().into_owned(),
        key.to_string_lossy().into_owned(),
    )
}

/// `curl` against the endpoint: (HTTP status or 0 when the handshake fails, body).
fn get(port: i32, path: &str, client: Option<&(String, String)>) -> (u16, String) {
    let mut curl = Command::new("curl");
    curl.args(["-sk", "--max-time", "10", "-w", "\n%{http_code}"]);
    if let Some((cert, key)) = client {
        curl.args(["--cert", cert, "--key", key]);
    }
    let output = curl
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubelet_endpoint_serves_container_logs_to_the_api_server_only() {
    // Without node IPAM the agent uses this test's own --pod-cidr (10.250.N.0/24), so tests
    // running at once never share pod addresses or routes.
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    // The kubelet endpoint listens on loopback in tests; the Node's InternalIP says so, since
    // the API server finds the endpoint there.
    let agent = PodAgent::start(
        &plane,
        &[
            "--restart-backoff-seconds",
            "1",
            "--node-address",
            "127.0.0.1",
            "--container-log-max-size",
            "2Ki",
            "--container-log-max-files",
            "2",
        ],
    );
    let kubectl = Kubectl::new(33, &plane);
    let client = plane.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let manifest = format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: talker, namespace: default}}
spec:
  nodeName: {}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: keelson/busybox:1
    command: [\"sh\", \"-c\", \"echo line1; echo line2; sleep 0.3; echo oops >&2; exec sleep 3600\"]
  - name: flaky
    image: keelson/busybox:1
    command: [\"sh\", \"-c\", \"echo run $(cat /proc/sys/kernel/random/uuid); sleep 1; exit 1\"]
  - name: chatty
    image: keelson/busybox:1
    command: [\"sh\", \"-c\", \"i=0; while [ $i -lt 400 ]; do i=$((i+1)); echo chatty-line-$i; done; exec sleep 3600\"]
",
        agent.node
    );
    apply(&kubectl, plane.data_dir(), "talker.yaml", &manifest);
    wait_pod(
        &pods,
        "talker",
        Duration::from_secs(60),
        &agent,
        "flaky restarted",
        |p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.name == "flaky" && c.restart_count >= 1))
        },
    )
    .await;
    let node = Api::<Node>::all(client)
        .get(&agent.node)
        .await
        .expect("GET node");
    let port = node
        .status
        .and_then(|s| s.daemon_endpoints?.kubelet_endpoint)
        .map(|e| e.port)
        .expect("the Node reports its kubelet endpoint");

    let dir = tempfile::tempdir().expect("temp dir");
    let admin = client_pem(&plane.kubeconfig, dir.path(), "admin");
    let node_creds = client_pem(agent.kubeconfig(), dir.path(), "node");

    // The endpoint soon presents a certificate the cluster CA issued for the node's address
    // (its kubelet-serving CSR, approved because it names only the Node's own addresses).
    let ca = plane.data_dir().join("pki/ca.crt");
    let verified = |admin: &(String, String)| {
        Command::new("curl")
            .args(["-s", "--max-time", "5", "--cacert"])
            .arg(&ca)
            .args(["--cert", &admin.0, "--key", &admin.1])
            .arg(format!("https://127.0.0.1:{port}/healthz"))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while verified(&admin) != "ok" {
        assert!(
            std::time::Instant::now() < deadline,
            "the kubelet endpoint never presented a CA-issued certificate; agent log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Its /healthz runs the agent's own checks (as the kubelet's runs its sync loop check).
    let verbose = Command::new("curl")
        .args(["-s", "--max-time", "5", "--cacert"])
        .arg(&ca)
        .args(["--cert", &admin.0, "--key", &admin.1])
        .arg(format!("https://127.0.0.1:{port}/healthz?verbose"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for check in ["[+]docker ok", "[+]node ok", "healthz check passed"] {
        assert!(verbose.contains(check), "no {check:?} in:\n{verbose}");
    }
    let csrs = kubectl.run(&["get", "csr", "-o", "custom-columns=SIGNER:.spec.signerName,COND:.status.conditions[0].type,USER:.spec.username", "--no-headers"]);
    assert!(
        csrs.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [
                    "kubernetes.io/kubelet-serving",
                    "Approved",
                    &format!("system:node:{}", agent.node)
                ]),
        "{csrs}"
    );

    // `oops` comes 0.3 s after the first lines (later still on a loaded machine).
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let (code, body) = loop {
        let (code, body) = get(port, "/containerLogs/default/talker/app", Some(&admin));
        if code != 200 || body.contains("oops") || std::time::Instant::now() > deadline {
            break (code, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(code, 200, "{body}\nagent log:\n{}", agent.log());
    assert_eq!(body, "line1\nline2\noops\n");
    let (code, body) = get(
        port,
        "/containerLogs/default/talker/app?tailLines=1",
        Some(&admin),
    );
    assert_eq!((code, body.as_str()), (200, "oops\n"));
    // --previous: the instance before the current one printed its own start time.
    let (code, current) = get(port, "/containerLogs/default/talker/flaky", Some(&admin));
    assert_eq!(code, 200);
    let (code, previous) = get(
        port,
        "/containerLogs/default/talker/flaky?previous=true",
        Some(&admin),
    );
    assert_eq!(code, 200);
    assert!(previous.starts_with("run "), "{previous:?}");
    assert_ne!(previous, current);
    let (code, _) = get(port, "/containerLogs/default/talker/nope", Some(&admin));
    assert_eq!(code, 404);

    // Only the API server and administrators: a node's own credentials get 403, no
    // certificate no connection.
    let (code, body) = get(port, "/containerLogs/default/talker/app", Some(&node_creds));
    assert_eq!(code, 403, "{body}");
    let (code, _) = get(port, "/containerLogs/default/talker/app", None);
    assert_eq!(
        code, 0,
        "a client without a certificate must not get an answer"
    );

    // kubectl logs, through the API server's pods/log proxy to this endpoint.
    let logs = kubectl.run(&["logs", "talker", "-c", "app"]);
    assert_eq!(logs, "line1\nline2\noops\n");
    let logs = kubectl.run(&["logs", "talker", "-c", "app", "--tail=1"]);
    assert_eq!(logs, "oops\n");
    let logs = kubectl.run(&["logs", "talker", "-c", "flaky", "--previous"]);
    assert!(logs.starts_with("run "), "{logs:?}");
    let error = kubectl.fail(&["logs", "talker", "-c", "nope"]);
    assert!(
        error.contains("container nope is not valid for pod talker"),
        "{error}"
    );
    let logs = Api::<Pod>::namespaced(plane.client().await, "default")
        .logs(
            "talker",
            &kube::api::LogParams {
                container: Some("app".into()),
                tail_lines: Some(2),
                ..Default::default()
            },
        )
        .await
        .expect("kube-rs reads logs too");
    assert_eq!(logs, "line2\noops\n");

    // Rotation: Docker keeps two files of at most 2 KiB for each container, so the first of
    // 400 lines is gone and the last is there.
    let inspect = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            "label=io.keelson.container=chatty",
            "--filter",
        ])
        .arg(format!("label=io.keelson.node={}", agent.node))
        .output()
        .expect("docker ps");
    let id = String::from_utf8_lossy(&inspect.stdout).trim().to_owned();
    assert!(!id.is_empty(), "the chatty container runs");
    let config = Command::new("docker")
        .args(["inspect", "-f", "{{json .HostConfig.LogConfig}}", &id])
        .output()
        .expect("docker inspect");
    let config = String::from_utf8_lossy(&config.stdout);
    assert!(
        config.contains(r#""Type":"json-file""#)
            && config.contains(r#""max-size":"2048""#)
            && config.contains(r#""max-file":"2""#),
        "{config}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let chatty = loop {
        let logs = kubectl.run(&["logs", "talker", "-c", "chatty"]);
        if logs.contains("chatty-line-400\n") || std::time::Instant::now() > deadline {
            break logs;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(chatty.ends_with("chatty-line-400\n"), "{chatty}");
    assert!(
        !chatty.contains("chatty-line-1\n"),
        "rotated away: {chatty}"
    );
    assert!(chatty.len() < 4096, "{} bytes", chatty.len());

    // `kubectl logs -f` on a restarting container goes on with its next attempt: two
    // different `run <uuid>` lines within the restart back-off (1 s, 2 s, ... here).
    let mut follow = kubectl
        .command(&["logs", "-f", "talker", "-c", "flaky"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl logs -f");
    let stdout = follow.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut runs = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while runs.len() < 2 && std::time::Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
            runs.insert(line);
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(runs.len() >= 2, "logs -f saw only {runs:?}");

    kubectl.run(&["delete", "pod", "talker", "--timeout=30s"]);
    agent.assert_no_leaks();
}

//! End to end, privileged: the agent's kubelet endpoint serves container logs (what the API
//! server proxies `kubectl logs` to, also tested here) over HTTPS, only to clients with a cluster certificate of
//! the API server or an administrator: `tailLines`, `previous`, stdout and stderr.

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
    command: [\"sh\", \"-c\", \"echo run $(cat /proc/sys/kernel/random/uuid); exit 1\"]
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

    kubectl.run(&["delete", "pod", "talker", "--timeout=30s"]);
    agent.assert_no_leaks();
}

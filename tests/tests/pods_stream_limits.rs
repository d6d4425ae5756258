//! End to end, privileged: streaming sessions under abuse, relayed by the API server to the node
//! agent, with kube-rs's WebSocket client (what controllers and operators use):
//!
//! - 1000 idle `exec cat` sessions at once all live (1000 `cat` processes in the container) and
//!   still answer;
//! - then every client vanishes without a goodbye (its connection just closes), one of them in
//!   the middle of a flood of output: every process ends (`cat` on its stdin EOF, the flood
//!   killed), and the agent's and the API server's file descriptors and the agent's tasks come
//!   back to where they were;
//! - `--streaming-connection-idle-timeout` closes a session nobody types in, and its process
//!   ends;
//! - the agent's and the API server's live `/metrics` pass the strict exposition checker.

use std::{
    collections::BTreeMap,
    process::Stdio,
    time::{Duration, Instant},
};

use futures_util::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    pods::{PodAgent, apply, container_id, is_ready, uid, wait_pod},
};
use kube::{Api, api::AttachParams};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const SESSIONS: usize = 1000;

/// Processes on the node running in container `id`, by command name.
fn processes_in(id: &str) -> BTreeMap<String, usize> {
    let mut found = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let in_container = std::fs::read_to_string(path.join("cgroup"))
            .map(|cgroup| cgroup.contains(id))
            .unwrap_or(false);
        if !in_container {
            continue;
        }
        if let Ok(comm) = std::fs::read_to_string(path.join("comm")) {
            *found.entry(comm.trim().to_owned()).or_default() += 1;
        }
    }
    found
}

fn count(id: &str, command: &str) -> usize {
    processes_in(id).get(command).copied().unwrap_or(0)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// The value of the unlabelled sample `name` in an exposition text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
}

/// Polls `check` every 200 ms until it holds or `limit` passes; returns whether it held.
async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Lets this process hold a few thousand sockets (1000 sessions).
fn raise_open_files() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise RLIMIT_NOFILE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_idle_sessions_vanishing_clients_and_the_idle_timeout() {
    raise_open_files();
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    let mut agent = PodAgent::start(&plane, &["--node-address", "127.0.0.1"]);
    let kubectl = Kubectl::new(33, &plane);
    let ns = "stream-limits";
    kubectl.run(&["create", "namespace", ns]);
    let manifest = format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: box, namespace: {ns}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: box
    image: keelson/busybox:1
    command: [\"sleep\", \"3600\"]
",
        node = agent.node
    );
    apply(&kubectl, plane.data_dir(), "box.yaml", &manifest);
    let client = plane.client().await;
    let pods: Api<Pod> = Api::namespaced(client, ns);
    let pod = wait_pod(
        &pods,
        "box",
        Duration::from_secs(60),
        &agent,
        "Ready",
        is_ready,
    )
    .await;
    let container = container_id(&uid(&pod), "box");

    // Live /metrics of both components are valid expositions.
    let agent_metrics = agent.metrics();
    keelson_testbed::exposition::check(&agent_metrics)
        .unwrap_or_else(|e| panic!("the agent's /metrics: {e}:\n{agent_metrics}"));
    let api_metrics = kubectl.run(&["get", "--raw", "/metrics"]);
    keelson_testbed::exposition::check(&api_metrics)
        .unwrap_or_else(|e| panic!("the API server's /metrics: {e}:\n{api_metrics}"));

    let (agent_pid, plane_pid) = (agent.pid(), plane.pid());
    let fds_before = (open_fds(agent_pid), open_fds(plane_pid));
    let tasks_before = sample(&agent_metrics, "keelson_runtime_alive_tasks");
    eprintln!("before: fds agent/apiserver {fds_before:?}, agent tasks {tasks_before}");

    // 1000 idle sessions.
    let started = Instant::now();
    let params = || {
        AttachParams::default()
            .container("box")
            .stdin(true)
            .stdout(true)
            .stderr(false)
    };
    let mut sessions: Vec<_> = futures_util::stream::iter(0..SESSIONS)
        .map(|_| {
            let (pods, params) = (pods.clone(), params());
            async move { pods.exec("box", ["cat"], &params).await }
        })
        .buffer_unordered(16)
        .try_collect()
        .await
        .expect("1000 exec sessions");
    eprintln!("{SESSIONS} sessions open in {:?}", started.elapsed());
    assert!(
        eventually(Duration::from_secs(60), || count(&container, "cat")
            == SESSIONS)
        .await,
        "{SESSIONS} cat processes in the container: {:?}",
        processes_in(&container)
    );
    let (agent_fds, plane_fds) = (open_fds(agent_pid), open_fds(plane_pid));
    eprintln!("with {SESSIONS} sessions: fds agent/apiserver {agent_fds}/{plane_fds}");
    // Each is still a working session.
    for i in [0, SESSIONS - 1] {
        let session = &mut sessions[i];
        let mut stdin = session.stdin().expect("stdin");
        stdin.write_all(b"still here\n").await.expect("write");
        let mut stdout = session.stdout().expect("stdout");
        let mut echoed = vec![0u8; 11];
        tokio::time::timeout(Duration::from_secs(10), stdout.read_exact(&mut echoed))
            .await
            .expect("an echo within 10 s")
            .expect("read");
        assert_eq!(echoed, b"still here\n");
    }

    // A client that vanishes in the middle of a flood of output.
    let mut flood = pods
        .exec(
            "box",
            ["sh", "-c", "while :; do echo flood-flood-flood-flood; done"],
            &AttachParams::default()
                .container("box")
                .stdout(true)
                .stderr(false),
        )
        .await
        .expect("flood exec");
    let mut out = flood.stdout().expect("flood stdout");
    let mut got = vec![0u8; 256 * 1024];
    out.read_exact(&mut got).await.expect("flood output");
    assert_eq!(count(&container, "sh"), 1, "{:?}", processes_in(&container));

    // The flood's client vanishes (its connection closes without a WebSocket goodbye) while
    // 1000 others stay: the flood's process is killed.
    drop(out);
    flood.abort();
    drop(flood);
    let flood_ended = eventually(Duration::from_secs(30), || count(&container, "sh") == 0).await;
    assert!(
        flood_ended,
        "the flood was killed: {:?}; the agent's words on it:\n{}",
        processes_in(&container),
        agent
            .log()
            .lines()
            .filter(|l| l.contains("exec") && !l.contains("Connection reset"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(count(&container, "cat"), SESSIONS, "the others still run");
    // Then every other client vanishes.
    for session in &sessions {
        session.abort();
    }
    drop(sessions);
    assert!(
        eventually(Duration::from_secs(60), || {
            count(&container, "cat") == 0 && count(&container, "sh") == 0
        })
        .await,
        "every process ended: {:?}; the agent's words on it:\n{}",
        processes_in(&container),
        agent
            .log()
            .lines()
            .filter(|l| l.contains("exec") && !l.contains("Connection reset"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let settled = eventually(Duration::from_secs(30), || {
        open_fds(agent_pid) <= fds_before.0 + 10 && open_fds(plane_pid) <= fds_before.1 + 10
    })
    .await;
    let fds_after = (open_fds(agent_pid), open_fds(plane_pid));
    assert!(
        settled,
        "file descriptors agent/apiserver: {fds_before:?} before, {fds_after:?} after"
    );
    let mut tasks_after = f64::MAX;
    let tasks_settled = eventually(Duration::from_secs(30), || {
        tasks_after = sample(&agent.metrics(), "keelson_runtime_alive_tasks");
        tasks_after <= tasks_before + 10.0
    })
    .await;
    assert!(
        tasks_settled,
        "agent tasks: {tasks_before} before, {tasks_after} after"
    );
    eprintln!("after: fds agent/apiserver {fds_after:?}, agent tasks {tasks_after}");

    // The idle timeout: a session nobody types in is closed, and its process ends.
    agent.restart_with(&[
        "--node-address",
        "127.0.0.1",
        "--streaming-connection-idle-timeout",
        "3s",
    ]);
    // The restarted agent serves on a new port once its Node says so.
    let serving = eventually(Duration::from_secs(60), || {
        kubectl
            .command(&["exec", "-n", ns, "box", "--", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
    .await;
    assert!(serving, "exec never worked after the agent's restart");
    let started = Instant::now();
    let mut idle = kubectl
        .command(&["exec", "-i", "-n", ns, "box", "--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl exec");
    // The agent may still be starting: the session exists once `cat` runs.
    let running = eventually(Duration::from_secs(30), || {
        count(&container, "cat") == 1 || idle.try_wait().ok().flatten().is_some()
    })
    .await;
    let status = loop {
        if let Some(status) = idle.try_wait().expect("wait kubectl") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "kubectl exec was not closed by the idle timeout"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = idle.wait_with_output().expect("kubectl output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    // kubectl ends as it does when the kubelet closes an idle stream: the connection ends
    // without a status (so with the exit code of a session that ended, 0).
    assert!(
        running,
        "the idle session never started: {status}: {stderr}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "closed after {:?}, before the timeout: {stderr}",
        started.elapsed()
    );
    assert!(
        eventually(Duration::from_secs(20), || count(&container, "cat") == 0).await,
        "the idle session's process ended: {:?}",
        processes_in(&container)
    );

    kubectl.run(&["delete", "namespace", ns, "--timeout=60s"]);
    agent.assert_no_leaks();
}

/// Port-forward's dialer reaches a server that listens on the IPv6 loopback only (the second
/// attempt after 127.0.0.1, as containerd's CRI makes it), and names both attempts when nobody
/// listens.
#[tokio::test]
async fn port_forward_reaches_an_ipv6_only_server() {
    use keelson_node_agent::pods::stream::dial::{NetnsDialer, PodDialer as _, forward_error};
    keelson_tests::require_root();
    let ns = keelson_tests::netns::NetNs::new("kt-pf6");
    let server = {
        let _inside = ns.enter();
        std::net::TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, 0)).expect("listen on [::1]")
    };
    let port = server.local_addr().expect("address").port();
    // A process in the namespace, as a pod's sandbox is.
    let mut holder = std::process::Command::new("ip")
        .args(["netns", "exec", ns.name(), "sleep", "60"])
        .spawn()
        .expect("a process in the namespace");
    let pid = holder.id();
    // `ip netns exec` execs `sleep` in place: the pid is in the namespace once it ran.
    let ours = std::fs::read_link("/proc/self/ns/net").expect("our namespace");
    let mut entered = false;
    for _ in 0..50 {
        if std::fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|n| n != ours) {
            entered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(entered, "sleep never entered {}", ns.name());
    let mut stream = NetnsDialer
        .dial(pid, port)
        .await
        .expect("connected over [::1]");
    let (mut accepted, peer) = server.accept().expect("accept");
    assert!(peer.is_ipv6(), "{peer}");
    stream.write_all(b"v6").await.expect("write");
    let mut got = [0u8; 2];
    std::io::Read::read_exact(&mut accepted, &mut got).expect("read");
    assert_eq!(&got, b"v6");
    drop(server);
    let refused = NetnsDialer
        .dial(pid, port)
        .await
        .expect_err("nobody listens");
    let message = forward_error("sandbox", port, &refused);
    assert!(
        message.ends_with(&format!(
            "IPv4: dial tcp4 127.0.0.1:{port}: connect: connection refused IPv6 dial tcp6 \
             [::1]:{port}: connect: connection refused "
        )),
        "{message}"
    );
    let _ = holder.kill();
    let _ = holder.wait();
}

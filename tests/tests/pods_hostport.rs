//! End to end, privileged: a pod's `hostPort` is served by the eBPF datapath on the node the pod
//! runs on, on a two-node netns testbed cluster. A pod with `hostPort: 8080` (containerPort 80)
//! on node A answers at `<node A>:8080`: from node B's namespace (outside node A: its packets
//! enter node A's uplink, `tc_from_netdev`), from node A itself (a process in the cgroup the
//! agent's socket-LB is attached to) and from another pod on node A (socket-LB in the pod's
//! cgroup). Node A's maps hold the frontend in both scopes with the pod as its one backend; node
//! B's hold none. A second pod asking for the same hostPort on node A stays Pending with the
//! scheduler's NodePorts message. Once the pod is deleted, the port no longer answers and the
//! frontends are gone.

use std::{
    net::Ipv4Addr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use keelson_ebpf_common::{scope, service_flags};
use keelson_node_agent::datapath::lb::{ListedFrontend, list_pinned};
use keelson_testbed::{Cluster, ClusterSpec};
use keelson_tests::{
    netcluster::{apply, bin_dir, claim_subnet, kubectl_json, logs, pod_exec, wait_ready_pods},
    pods::{BUSYBOX, HTTPD, require_docker_images},
    require_root,
};

const HOST_PORT: u16 = 8080;
/// The scheduler's NodePorts filter reason (kube-scheduler's `nodeports.ErrReason`).
const NO_FREE_PORTS: &str = "node(s) didn't have free ports for the requested pod ports";

fn web_pod(name: &str, node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  terminationGracePeriodSeconds: 1
  containers:
    - name: web
      image: {HTTPD}
      imagePullPolicy: Never
      command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
      ports:
        - {{containerPort: 80, hostPort: {HOST_PORT}}}
      readinessProbe:
        httpGet: {{path: /, port: 80}}
        periodSeconds: 1
"#
    )
}

fn client_pod(node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: client, labels: {{app: client}}}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  terminationGracePeriodSeconds: 0
  containers:
    - name: client
      image: {BUSYBOX}
      imagePullPolicy: Never
      command: ["sleep", "3600"]
"#
    )
}

/// `curl http://<target>:8080/` run by `command` (already set to run in a node's namespace):
/// the trimmed body of a 200, or the error.
fn curl(mut command: Command) -> Result<String, String> {
    let output = command
        .output()
        .map_err(|e| format!("cannot run curl: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(format!(
            "curl exited {:?}: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn curl_args(target: Ipv4Addr) -> Vec<String> {
    ["-sf", "-m", "3", "--noproxy", "*"]
        .map(str::to_owned)
        .into_iter()
        .chain([format!("http://{target}:{HOST_PORT}/")])
        .collect()
}

/// curl from node `i`'s namespace, outside every cgroup the agents attach to.
fn from_node_namespace(cluster: &Cluster, i: usize, target: Ipv4Addr) -> Result<String, String> {
    let mut command = cluster.node_command(i, "curl");
    command.args(curl_args(target));
    curl(command)
}

/// curl from node `i` itself: a process in a child of the cgroup node `i`'s socket-LB is
/// attached to (the node's own clients).
fn from_node_cgroup(
    cluster: &Cluster,
    i: usize,
    cgroup: &Path,
    target: Ipv4Addr,
) -> Result<String, String> {
    let mut command = cluster.node_command(i, "sh");
    command.args([
        "-c",
        &format!(
            "echo $$ > {}/cgroup.procs && exec curl {}",
            cgroup.display(),
            curl_args(target).join(" ").replace('*', "'*'")
        ),
    ]);
    curl(command)
}

/// Retries `attempt` every 500 ms for up to `timeout` until `ok` holds for its result.
fn eventually(
    cluster: &Cluster,
    what: &str,
    timeout: Duration,
    mut attempt: impl FnMut() -> Result<String, String>,
    ok: impl Fn(&Result<String, String>) -> bool,
) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let result = attempt();
        if ok(&result) {
            return result;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {timeout:?}; last result {result:?}\n{}",
            logs(cluster)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The frontends on port 8080 node `pin_dir`'s maps hold.
fn host_port_frontends(pin_dir: &Path) -> Vec<ListedFrontend> {
    list_pinned(pin_dir)
        .unwrap_or_else(|e| panic!("lb list {}: {e}", pin_dir.display()))
        .into_iter()
        .filter(|f| f.key.port == HOST_PORT)
        .collect()
}

#[test]
fn a_host_port_answers_on_its_node_address_only_while_the_pod_runs() {
    require_root();
    require_docker_images();
    let (subnet, _lock) = claim_subnet();
    let name = format!("hp{subnet}");
    let state = tempfile::tempdir().expect("state dir");
    let mut spec = ClusterSpec::new(&name, subnet, 2, bin_dir(), state.path());
    spec.cluster_cidr = "10.212.0.0/16".to_owned();
    let cluster = Cluster::up(spec).unwrap_or_else(|e| panic!("cluster up: {e:#}"));
    let nodes = cluster.nodes().to_vec();
    let (a, b) = (&nodes[0], &nodes[1]);

    apply(&cluster, "web", &web_pod("web", &a.name));
    apply(&cluster, "client", &client_pod(&a.name));
    let web = wait_ready_pods(&cluster, "app=web", 1, Duration::from_secs(120));
    assert_eq!(web[0].node, a.name, "the pod runs on node A");
    let client = wait_ready_pods(&cluster, "app=client", 1, Duration::from_secs(120));

    // Node A's maps: the hostPort on A's address, both scopes, the pod as the one backend.
    let frontends = host_port_frontends(&a.pin_dir);
    let described: Vec<String> = frontends.iter().map(ToString::to_string).collect();
    assert_eq!(
        frontends.len(),
        2,
        "internal and external frontends: {described:#?}"
    );
    for frontend in &frontends {
        assert_eq!(frontend.key.address, a.address, "{frontend}");
        let backends: Vec<String> = frontend
            .backends
            .iter()
            .filter_map(|b| b.backend.map(|(ip, port)| format!("{ip}:{port}")))
            .collect();
        assert_eq!(backends, [format!("{}:80", web[0].ip)], "{frontend}");
        assert_ne!(
            frontend.header.flags & service_flags::HOST_PORT,
            0,
            "{frontend}"
        );
    }
    assert_eq!(
        frontends
            .iter()
            .map(|f| f.key.scope)
            .collect::<std::collections::BTreeSet<_>>(),
        [scope::INTERNAL, scope::EXTERNAL].into(),
    );
    assert!(
        host_port_frontends(&b.pin_dir).is_empty(),
        "only the pod's node serves its hostPort"
    );

    // From node B (through A's uplink), from A itself (socket-LB) and from a pod on A.
    let answered = eventually(
        &cluster,
        "node B reaches node A's hostPort",
        Duration::from_secs(20),
        || from_node_namespace(&cluster, 2, a.address),
        Result::is_ok,
    );
    assert_eq!(answered, Ok("web".to_owned()), "the pod's page");
    let own = a.cgroup.join("hostport-test-client");
    std::fs::create_dir_all(&own).expect("a child cgroup of node A's");
    let from_a = from_node_cgroup(&cluster, 1, &own, a.address);
    let _ = std::fs::remove_dir(&own);
    assert_eq!(
        from_a,
        Ok("web".to_owned()),
        "node A reaches its own hostPort"
    );
    let (ok, output) = pod_exec(
        &client[0],
        "client",
        &format!("timeout 5 wget -qO- http://{}:{HOST_PORT}/", a.address),
    );
    assert!(ok, "a pod on node A reaches the hostPort: {output}");
    assert_eq!(output.trim(), "web");

    // A second pod asking for the same hostPort on A is not scheduled.
    apply(&cluster, "web2", &web_pod("web2", &a.name));
    let deadline = Instant::now() + Duration::from_secs(30);
    let message = loop {
        let pod = kubectl_json(&cluster, &["get", "pod", "web2", "-o", "json"]);
        let condition = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
            .cloned();
        if let Some(condition) = condition {
            assert_eq!(pod["status"]["phase"], "Pending", "{pod:#}");
            assert!(pod["spec"]["nodeName"].is_null(), "{pod:#}");
            assert_eq!(condition["reason"], "Unschedulable", "{condition:#}");
            break condition["message"].as_str().unwrap_or("").to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "web2 is found unschedulable within 30 s: {pod:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        message.contains(&format!("1 {NO_FREE_PORTS}")),
        "the scheduler says why: {message:?}"
    );
    cluster
        .kubectl(&["delete", "pod", "web2", "--wait=true", "--timeout=60s"])
        .unwrap_or_else(|e| panic!("{e:#}"));

    // The pod goes: its hostPort stops answering and its frontends leave the maps.
    cluster
        .kubectl(&["delete", "pod", "web", "--wait=true", "--timeout=60s"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    eventually(
        &cluster,
        "node A's hostPort stops answering once the pod is gone",
        Duration::from_secs(20),
        || from_node_namespace(&cluster, 2, a.address),
        Result::is_err,
    )
    .expect_err("no answer");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !host_port_frontends(&a.pin_dir).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the hostPort frontends leave node A's maps: {:?}",
            host_port_frontends(&a.pin_dir)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (ok, output) = pod_exec(
        &client[0],
        "client",
        &format!("timeout 5 wget -qO- http://{}:{HOST_PORT}/", a.address),
    );
    assert!(!ok, "a pod on node A gets no answer either: {output}");

    cluster
        .kubectl(&["delete", "pod", "client", "--wait=true", "--timeout=60s"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    cluster
        .down()
        .unwrap_or_else(|e| panic!("cluster down: {e:#}"));
}

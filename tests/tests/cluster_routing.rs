//! Pod networking across nodes, on three-node clusters whose nodes are network namespaces
//! (keelson-testbed), in both routing modes:
//! - every pod reaches every other pod by its address, and the answering pod sees the caller's
//!   own pod address (no NAT between pods); 256 KiB answers arrive whole (MTU);
//! - the Service reaches backends on every node, by name;
//! - NodePorts from a client outside the nodes: `externalTrafficPolicy: Cluster` reaches
//!   backends on every node (source-NATed to the node for remote ones), `Local` only the node's
//!   own, with the client's address preserved;
//! - the eBPF path carried the traffic: `tc_redirect_peer` into local pods, and
//!   `tc_redirect_node` (direct) or `tc_redirect_tunnel` (VXLAN) towards other nodes;
//! - direct mode: a node's agent killed -> the Node goes NotReady, its endpoints leave the
//!   Service, and after that every request through the Service succeeds.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    time::{Duration, Instant},
};

use keelson_testbed::{Cluster, ClusterSpec, Routing};
use keelson_tests::{
    netcluster::{
        RunningPod, apply, assert_pods_in_node_cidrs, bin_dir, claim_subnet, datapath_counters,
        echo_manifest, kubectl_json, logs, pod_exec, remote_addr, wait_ready_pods,
    },
    pods::require_docker_images,
    require_root,
};

const REPLICAS: usize = 6;
const BIG: usize = 256 * 1024;

/// NodePort Services for the same pods, with both external traffic policies.
const NODE_PORTS: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: echo-cluster
spec:
  type: NodePort
  externalTrafficPolicy: Cluster
  selector: {app: echo}
  ports:
  - port: 80
    targetPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: echo-local
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: echo}
  ports:
  - port: 80
    targetPort: 80
"#;

/// A three-node cluster with `routing`, its nodes' grace period short enough for a test.
fn cluster(routing: Routing) -> (Cluster, nix::fcntl::Flock<std::fs::File>, tempfile::TempDir) {
    require_root();
    require_docker_images();
    let (subnet, lock) = claim_subnet();
    let state = tempfile::tempdir().expect("state dir");
    let mut spec = ClusterSpec::new(&format!("r{subnet}"), subnet, 3, bin_dir(), state.path());
    spec.routing = routing;
    spec.cluster_cidr = "10.210.0.0/16".to_owned();
    spec.control_plane_args = [
        "--node-monitor-grace-period",
        "6s",
        "--node-monitor-period",
        "500ms",
    ]
    .map(str::to_owned)
    .into();
    // The agents renew their Leases every second (a quarter of 4 s), well within the grace.
    spec.agent_args = ["--node-lease-duration-seconds", "4"]
        .map(str::to_owned)
        .into();
    let started = Instant::now();
    let cluster = Cluster::up(spec).unwrap_or_else(|e| panic!("cluster up: {e:#}"));
    eprintln!(
        "{routing:?} cluster up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    (cluster, lock, state)
}

/// Every pod asks every other pod for the caller's address: the answer must be the caller's own
/// pod address. Also fetches 256 KiB from one pod on each other node.
fn every_pod_reaches_every_pod_with_its_own_address(cluster: &Cluster, pods: &[RunningPod]) {
    for source in pods {
        let targets: Vec<&RunningPod> = pods.iter().filter(|p| p.name != source.name).collect();
        let list: Vec<String> = targets.iter().map(|p| p.ip.to_string()).collect();
        let script = format!(
            "for ip in {}; do echo \"$ip $(timeout 5 wget -qO- http://$ip/cgi-bin/ip)\"; done",
            list.join(" ")
        );
        let (_, output) = pod_exec(source, "echo", &script);
        let answers: BTreeMap<Ipv4Addr, Option<Ipv4Addr>> = output
            .lines()
            .filter_map(|line| {
                let (ip, answer) = line.split_once(' ').unwrap_or((line, ""));
                Some((ip.parse().ok()?, remote_addr(answer)))
            })
            .collect();
        for target in &targets {
            assert_eq!(
                answers.get(&target.ip).copied().flatten(),
                Some(source.ip),
                "{} ({} on {}) -> {} ({} on {}): the target must answer and see the caller's \
                 pod address\n{output}\n{}",
                source.name,
                source.ip,
                source.node,
                target.name,
                target.ip,
                target.node,
                logs(cluster)
            );
        }
        let mut seen_nodes = BTreeSet::new();
        for target in targets.iter().filter(|t| t.node != source.node) {
            if !seen_nodes.insert(&target.node) {
                continue;
            }
            let (_, size) = pod_exec(
                source,
                "echo",
                &format!("timeout 10 wget -qO- http://{}/big | wc -c", target.ip),
            );
            assert_eq!(
                size.trim().parse::<usize>().ok(),
                Some(BIG),
                "{} -> {} on {}: 256 KiB must arrive whole",
                source.name,
                target.name,
                target.node
            );
        }
    }
}

/// `count` requests to `url` from `client`: the answering pods' hostnames, counted, and the
/// number of failed requests.
fn requests(client: &RunningPod, url: &str, count: usize) -> (BTreeMap<String, usize>, usize) {
    let script =
        format!("for i in $(seq {count}); do echo \"answer $(timeout 5 wget -qO- {url})\"; done");
    let (_, output) = pod_exec(client, "echo", &script);
    let mut answers = BTreeMap::new();
    let mut failed = 0;
    for line in output.lines().filter_map(|l| l.strip_prefix("answer")) {
        match line.trim() {
            "" => failed += 1,
            host => *answers.entry(host.to_owned()).or_default() += 1,
        }
    }
    (answers, failed)
}

fn node_of<'a>(pods: &'a [RunningPod], hostname: &str) -> Option<&'a str> {
    pods.iter()
        .find(|p| p.name == hostname)
        .map(|p| p.node.as_str())
}

fn counter(cluster: &Cluster, i: usize, name: &str) -> u64 {
    let node = &cluster.nodes()[i];
    datapath_counters(&node.pin_dir)
        .get(name)
        .copied()
        .unwrap_or_else(|| panic!("no counter {name} for {}", node.name))
}

/// Pod-to-pod in every direction, the Service from every node, and the eBPF counters.
fn pods_and_services_across_nodes(cluster: &Cluster, remote_counter: &str) -> Vec<RunningPod> {
    apply(cluster, "echo", &echo_manifest(REPLICAS));
    let pods = wait_ready_pods(cluster, "app=echo", REPLICAS, Duration::from_secs(120));
    let nodes: BTreeSet<&str> = pods.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(
        nodes.len(),
        3,
        "the scheduler spreads the 6 replicas over the 3 nodes: {pods:?}"
    );
    assert_pods_in_node_cidrs(cluster, &pods);
    let before: Vec<(u64, u64)> = (0..3)
        .map(|i| {
            (
                counter(cluster, i, "tc_redirect_peer"),
                counter(cluster, i, remote_counter),
            )
        })
        .collect();

    every_pod_reaches_every_pod_with_its_own_address(cluster, &pods);

    for (i, (peer, remote)) in before.iter().enumerate() {
        let name = &cluster.nodes()[i].name;
        assert!(
            counter(cluster, i, "tc_redirect_peer") > *peer,
            "node {name}: packets for its pods went straight into them (tc_redirect_peer)"
        );
        assert!(
            counter(cluster, i, remote_counter) > *remote,
            "node {name}: its pods' packets for other nodes went out from TC ({remote_counter})"
        );
    }

    // The Service, by name (the node's cluster DNS) and from a pod on each node: backends on
    // every node answer.
    for node in &nodes {
        let client = pods
            .iter()
            .find(|p| p.node == *node)
            .expect("a pod on the node");
        let (answers, failed) = requests(client, "http://echo.default.svc.cluster.local/", 30);
        if failed > 0 {
            for n in cluster.nodes() {
                eprintln!("{} counters: {:?}", n.name, datapath_counters(&n.pin_dir));
            }
        }
        assert_eq!(
            failed, 0,
            "from {}: every request through the Service answers: {answers:?}",
            client.node
        );
        let answering_nodes: BTreeSet<&str> = answers
            .keys()
            .filter_map(|host| node_of(&pods, host))
            .collect();
        assert_eq!(
            answering_nodes.len(),
            3,
            "from {}: backends on all 3 nodes answer through the Service: {answers:?}",
            client.node
        );
    }
    pods
}

/// `GET /cgi-bin/ip` from this process (on the cluster's bridge, outside every node) to
/// `address`: the answering pod and the client address it saw; `None` if no answer.
fn external_get(address: SocketAddrV4) -> Option<(String, Ipv4Addr)> {
    let mut stream = TcpStream::connect_timeout(&address.into(), Duration::from_secs(3)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(b"GET /cgi-bin/ip HTTP/1.0\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    // The CGI's own headers end with a bare `\n\n`.
    let answer = answer.replace("\r\n", "\n");
    let body = answer.split_once("\n\n")?.1;
    let host = body.split_whitespace().next()?.to_owned();
    Some((host, remote_addr(body)?))
}

/// NodePorts on the first node, from a client outside the nodes: with `Cluster`, backends on
/// every node answer, those on other nodes see the node's address (SNAT) and local ones the
/// client's; with `Local`, only the node's own backends answer, seeing the client's address.
fn node_ports_from_outside(cluster: &Cluster, pods: &[RunningPod]) {
    apply(cluster, "node-ports", NODE_PORTS);
    let node = &cluster.nodes()[0];
    let client = Ipv4Addr::new(172, 30, cluster.spec().subnet, 1);
    for (service, local) in [("echo-cluster", false), ("echo-local", true)] {
        let port = kubectl_json(cluster, &["get", "svc", service, "-o", "json"])["spec"]["ports"]
            [0]["nodePort"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or_else(|| panic!("{service} has a nodePort"));
        let target = SocketAddrV4::new(node.address, port);
        // The agents program a new Service within moments.
        let deadline = Instant::now() + Duration::from_secs(15);
        while external_get(target).is_none() {
            assert!(
                Instant::now() < deadline,
                "{service}: no answer on {target} after 15 s\n{}",
                logs(cluster)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut nodes_seen = BTreeSet::new();
        for _ in 0..30 {
            let (host, seen) = external_get(target)
                .unwrap_or_else(|| panic!("{service}: a request to {target} failed"));
            let backend_node = node_of(pods, &host)
                .unwrap_or_else(|| panic!("{service}: {host} is not an echo pod"));
            let expected = if backend_node == node.name {
                client
            } else {
                node.address
            };
            assert_eq!(
                seen, expected,
                "{service} via {}: {host} on {backend_node} sees the client as {seen}",
                node.name
            );
            nodes_seen.insert(backend_node.to_owned());
        }
        if local {
            assert_eq!(
                nodes_seen,
                BTreeSet::from([node.name.clone()]),
                "{service}: only {}'s own backends answer",
                node.name
            );
        } else {
            assert!(
                nodes_seen.len() >= 2,
                "{service}: backends on other nodes answer too: {nodes_seen:?}"
            );
        }
    }
}

/// keelson's routes in node `i`'s table (`proto 0x6b`), one line each.
fn keelson_routes(cluster: &Cluster, i: usize) -> Vec<String> {
    let output = cluster
        .node_command(i, "ip")
        .args(["route", "show", "proto", "0x6b"])
        .output()
        .expect("run ip route in the node");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The first node's agent killed and started again: its routes to the other nodes never leave
/// the table (a new agent adopts them), and its pods still reach the other nodes' pods.
fn restarted_agent_keeps_its_routes(cluster: &mut Cluster, pods: &[RunningPod]) {
    let before = keelson_routes(cluster, 1);
    assert_eq!(before.len(), 2, "routes to the 2 other nodes: {before:?}");
    cluster
        .kill_agent(1)
        .unwrap_or_else(|e| panic!("kill the first agent: {e:#}"));
    cluster
        .start_agent(1)
        .unwrap_or_else(|e| panic!("start the first agent: {e:#}"));
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(4) {
        let now = keelson_routes(cluster, 1);
        assert_eq!(
            now.len(),
            2,
            "while the agent restarts, its routes stay: {now:?}\n{}",
            logs(cluster)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let node = &cluster.nodes()[0].name;
    let source = pods
        .iter()
        .find(|p| &p.node == node)
        .expect("a pod on the first node");
    let target = pods
        .iter()
        .find(|p| &p.node != node)
        .expect("a pod on another node");
    let (_, answer) = pod_exec(
        source,
        "echo",
        &format!("timeout 5 wget -qO- http://{}/cgi-bin/ip", target.ip),
    );
    assert_eq!(
        remote_addr(&answer),
        Some(source.ip),
        "after the restart, {} reaches {} on {}: {answer}",
        source.name,
        target.name,
        target.node
    );
}

#[test]
fn direct_routing_connects_pods_and_services_across_nodes_and_survives_a_dead_agent() {
    let (mut cluster, _lock, _state) = cluster(Routing::Direct);
    let pods = pods_and_services_across_nodes(&cluster, "tc_redirect_node");
    node_ports_from_outside(&cluster, &pods);
    restarted_agent_keeps_its_routes(&mut cluster, &pods);

    // A node's agent dies: its Node goes NotReady once its Lease is older than the grace
    // period, its pods leave the Service's endpoints, and from then on no request fails.
    let dead = cluster.nodes()[2].name.clone();
    let dead_ips: BTreeSet<String> = pods
        .iter()
        .filter(|p| p.node == dead)
        .map(|p| p.ip.to_string())
        .collect();
    assert!(!dead_ips.is_empty(), "pods run on {dead}");
    cluster
        .kill_agent(3)
        .unwrap_or_else(|e| panic!("kill the agent of {dead}: {e:#}"));
    let killed = Instant::now();
    let mut not_ready_after = None;
    let mut endpoints_gone_after = None;
    while endpoints_gone_after.is_none() {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "60 s after the agent of {dead} died: NotReady after {not_ready_after:?}, \
             endpoints still listed:\n{}",
            cluster
                .kubectl(&["get", "endpointslices", "-o", "yaml"])
                .unwrap_or_default()
        );
        let slices = kubectl_json(
            &cluster,
            &[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=echo",
                "-o",
                "json",
            ],
        );
        let ready_ips: BTreeSet<String> = slices["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
            .filter(|e| e["conditions"]["ready"] != false)
            .flat_map(|e| e["addresses"].as_array().into_iter().flatten())
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect();
        // The Node is read after the slices: NotReady comes first, so once the slices no
        // longer list its pods, this later read must see it NotReady.
        if not_ready_after.is_none() {
            let node = kubectl_json(&cluster, &["get", "node", &dead, "-o", "json"]);
            let ready = node["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready")
                .map(|c| c["status"].as_str().unwrap_or_default().to_owned());
            if ready.as_deref() != Some("True") {
                not_ready_after = Some(killed.elapsed());
            }
        }
        if ready_ips.is_disjoint(&dead_ips) && !ready_ips.is_empty() {
            endpoints_gone_after = Some(killed.elapsed());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "agent of {dead} killed: Node NotReady after {}, its endpoints left the Service \
         after {:.1} s (grace period 6 s)",
        not_ready_after.map_or("(not seen)".to_owned(), |t| format!(
            "{:.1} s",
            t.as_secs_f64()
        )),
        endpoints_gone_after.unwrap_or_default().as_secs_f64()
    );
    assert!(
        not_ready_after.is_some(),
        "the Node {dead} went NotReady before its endpoints left"
    );
    let client = pods
        .iter()
        .find(|p| p.node == cluster.nodes()[0].name)
        .expect("a pod on the first node");
    // The surviving agents apply the endpoint change to their maps within moments; until then
    // the dead node's pods (still running, their routes intact) may answer, but no request
    // fails at any time.
    let applied = Instant::now();
    loop {
        let (answers, failed) = requests(client, "http://echo.default.svc.cluster.local/", 40);
        assert_eq!(
            failed, 0,
            "after the endpoints of {dead} left, no request through the Service fails: {answers:?}"
        );
        let answering_nodes: BTreeSet<&str> = answers
            .keys()
            .filter_map(|host| node_of(&pods, host))
            .collect();
        if !answering_nodes.contains(dead.as_str()) && answering_nodes.len() == 2 {
            break;
        }
        assert!(
            applied.elapsed() < Duration::from_secs(15),
            "15 s after the endpoints of {dead} left, the two live nodes' backends answer, \
             none of {dead}'s: {answers:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    cluster
        .down()
        .unwrap_or_else(|e| panic!("cluster down: {e:#}"));
}

#[test]
fn vxlan_tunnel_connects_pods_and_services_across_nodes() {
    let (cluster, _lock, _state) = cluster(Routing::Tunnel);
    let pods = pods_and_services_across_nodes(&cluster, "tc_redirect_tunnel");
    // Pods get the tunnel's MTU: the uplink's 1500 less 50 bytes of VXLAN encapsulation.
    let (_, mtu) = pod_exec(&pods[0], "echo", "cat /sys/class/net/eth0/mtu");
    assert_eq!(mtu.trim(), "1450", "a pod's MTU under the tunnel");
    cluster
        .down()
        .unwrap_or_else(|e| panic!("cluster down: {e:#}"));
}

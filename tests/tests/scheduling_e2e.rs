//! End to end on a 3-node testbed cluster: required pod anti-affinity leaves the fourth replica
//! Pending with kube's message, topology spread constraints place 2/2/2, a high-priority pod
//! preempts a low-priority one on a full node, and pods resolve cluster names and (through the
//! node's resolvers, here a tiny responder the test runs on the bridge) other names.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use keelson_testbed::{Cluster, ClusterSpec};
use keelson_tests::{
    netcluster::{bin_dir, claim_subnet, kubectl_json, logs},
    pods::{BUSYBOX, container_id, exec, require_docker_images},
    require_root,
};
use serde_json::Value;

/// The address the test's upstream resolver answers for every A query.
const UPSTREAM_ANSWER: [u8; 4] = [192, 0, 2, 55];

/// Answers A queries for `www.example.test` with [`UPSTREAM_ANSWER`], other types with no
/// records and other names with NXDOMAIN, until `stop`.
fn upstream_resolver(address: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let socket = UdpSocket::bind(address).unwrap_or_else(|e| panic!("bind {address}: {e}"));
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    std::thread::spawn(move || {
        let mut buffer = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            let Ok((length, peer)) = socket.recv_from(&mut buffer) else {
                continue;
            };
            let query = &buffer[..length];
            // The question: labels from byte 12 to the root label, then type and class.
            let mut end = 12;
            while end < query.len() && query[end] != 0 {
                end += usize::from(query[end]) + 1;
            }
            end += 5;
            if end > query.len() {
                continue;
            }
            let qtype = u16::from_be_bytes([query[end - 4], query[end - 3]]);
            // Only www.example.test exists upstream; every other name is NXDOMAIN.
            let known = query[12..end]
                .windows(7)
                .any(|w| w.eq_ignore_ascii_case(b"example"));
            let answers: u16 = u16::from(qtype == 1 && known);
            let mut reply = query[..2].to_vec();
            reply.extend_from_slice(&[0x81, if known { 0x80 } else { 0x83 }, 0, 1]);
            reply.extend_from_slice(&answers.to_be_bytes());
            reply.extend_from_slice(&[0, 0, 0, 0]);
            reply.extend_from_slice(&query[12..end]);
            if answers == 1 {
                reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
                reply.extend_from_slice(&UPSTREAM_ANSWER);
            }
            let _ = socket.send_to(&reply, peer);
        }
    })
}

fn apply(cluster: &Cluster, dir: &std::path::Path, name: &str, yaml: &str) {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).expect("write manifest");
    cluster
        .kubectl(&["apply", "-f", &path.display().to_string()])
        .unwrap_or_else(|e| panic!("apply {name}: {e:#}\n{}", logs(cluster)));
}

/// Polls `check` every half second for at most `limit`.
fn wait<T>(
    cluster: &Cluster,
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            started.elapsed() < limit,
            "timed out waiting for {what}\n{}",
            logs(cluster)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn pods(cluster: &Cluster, selector: &str) -> Vec<Value> {
    kubectl_json(cluster, &["get", "pods", "-l", selector, "-o", "json"])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn node_of(pod: &Value) -> Option<String> {
    pod["spec"]["nodeName"].as_str().map(str::to_owned)
}

fn deployment(name: &str, replicas: u32, extra: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
{extra}
      containers:
        - name: main
          image: {BUSYBOX}
          imagePullPolicy: Never
          command: [sleep, "3600"]
"#
    )
}

#[test]
fn anti_affinity_spread_preemption_and_dns_forwarding() {
    require_root();
    require_docker_images();
    let (subnet, _lock) = claim_subnet();
    let name = format!("t{subnet}");
    let state = tempfile::tempdir().expect("state dir");
    let dir = state.path();
    // The nodes' resolver: the test's responder on the bridge address.
    let bridge = Ipv4Addr::new(172, 30, subnet, 1);
    let resolv = dir.join("node-resolv.conf");
    std::fs::write(&resolv, format!("nameserver {bridge}\n")).expect("resolv.conf");
    let mut spec = ClusterSpec::new(&name, subnet, 3, bin_dir(), dir);
    spec.cluster_cidr = "10.201.0.0/16".to_owned();
    spec.agent_args = vec!["--resolv-conf".into(), resolv.display().to_string()];
    let cluster = Cluster::up(spec).unwrap_or_else(|e| panic!("cluster up: {e:#}"));
    let stop = Arc::new(AtomicBool::new(false));
    let responder = upstream_resolver(SocketAddr::from((bridge, 53)), Arc::clone(&stop));

    // 1. Required anti-affinity on the hostname: three nodes, four replicas.
    let anti = "      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            - labelSelector: {matchLabels: {app: anti}}
              topologyKey: kubernetes.io/hostname";
    apply(&cluster, dir, "anti", &deployment("anti", 4, anti));
    let pending = wait(
        &cluster,
        "3 placed anti pods and 1 unschedulable",
        Duration::from_secs(90),
        || {
            let all = pods(&cluster, "app=anti");
            let placed: std::collections::BTreeSet<String> =
                all.iter().filter_map(node_of).collect();
            let pending: Vec<&Value> = all.iter().filter(|p| node_of(p).is_none()).collect();
            let message = pending.first().and_then(|p| {
                p["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")?["message"]
                .as_str()
                .map(str::to_owned)
            });
            (all.len() == 4 && placed.len() == 3 && pending.len() == 1)
                .then_some(message)
                .flatten()
        },
    );
    assert_eq!(
        pending,
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. preemption: \
         0/3 nodes are available: 3 No preemption victims found for incoming pod."
    );
    cluster
        .kubectl(&["delete", "deployment", "anti", "--wait=false"])
        .expect("delete anti");

    // 2. Topology spread over hostnames: six replicas 2/2/2.
    let spread = "      topologySpreadConstraints:
        - maxSkew: 1
          topologyKey: kubernetes.io/hostname
          whenUnsatisfiable: DoNotSchedule
          labelSelector: {matchLabels: {app: spread}}";
    apply(&cluster, dir, "spread", &deployment("spread", 6, spread));
    let counts = wait(
        &cluster,
        "6 spread pods placed",
        Duration::from_secs(90),
        || {
            let all = pods(&cluster, "app=spread");
            let nodes: Vec<String> = all.iter().filter_map(node_of).collect();
            (nodes.len() == 6).then(|| {
                let mut counts = std::collections::BTreeMap::<String, u32>::new();
                for n in nodes {
                    *counts.entry(n).or_default() += 1;
                }
                counts.into_values().collect::<Vec<_>>()
            })
        },
    );
    assert_eq!(counts, vec![2, 2, 2]);
    cluster
        .kubectl(&["delete", "deployment", "spread", "--wait=false"])
        .expect("delete spread");

    // 3. Preemption: a low-priority pod fills node 1's CPU, a high-priority one takes its place.
    let node = cluster.nodes()[0].name.clone();
    let allocatable = kubectl_json(&cluster, &["get", "node", &node, "-o", "json"])["status"]["allocatable"]["cpu"]
        .as_str()
        .unwrap_or("1")
        .to_owned();
    let cpus: f64 = allocatable.trim_end_matches('m').parse().unwrap_or(1.0)
        / if allocatable.ends_with('m') {
            1000.0
        } else {
            1.0
        };
    let request = format!("{}m", (cpus * 1000.0 * 0.7) as u64);
    let classes = "apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: low}
value: 10
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000
";
    apply(&cluster, dir, "classes", classes);
    let pod = |pod: &str, class: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {pod}, labels: {{app: {pod}}}}}
spec:
  priorityClassName: {class}
  terminationGracePeriodSeconds: 1
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  containers:
    - name: main
      image: {BUSYBOX}
      imagePullPolicy: Never
      command: [sleep, "3600"]
      resources: {{requests: {{cpu: {request}}}}}
"#
        )
    };
    apply(&cluster, dir, "low", &pod("low", "low"));
    wait(
        &cluster,
        "the low pod running",
        Duration::from_secs(90),
        || {
            pods(&cluster, "app=low")
                .first()
                .filter(|p| p["status"]["phase"] == "Running")
                .map(drop)
        },
    );
    let low = kubectl_json(&cluster, &["get", "pod", "low", "-o", "json"]);
    assert_eq!(
        low["spec"]["priority"], 10,
        "the Priority admission resolved the class"
    );
    apply(&cluster, dir, "high", &pod("high", "high"));
    wait(
        &cluster,
        "the high pod bound and the low one gone",
        Duration::from_secs(120),
        || {
            let high = pods(&cluster, "app=high");
            let low = pods(&cluster, "app=low");
            (high.first().and_then(node_of).as_deref() == Some(node.as_str()) && low.is_empty())
                .then_some(())
        },
    );
    let events = cluster
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "reason=Preempted",
            "-o",
            "json",
        ])
        .unwrap_or_default();
    assert!(
        events.contains("Preempted by pod"),
        "no Preempted event: {events}"
    );

    // 4. DNS from a pod: the cluster zone and, forwarded, a name outside it.
    wait(
        &cluster,
        "the high pod running",
        Duration::from_secs(60),
        || {
            pods(&cluster, "app=high")
                .first()
                .filter(|p| p["status"]["phase"] == "Running")
                .map(drop)
        },
    );
    let kubernetes_ip = kubectl_json(&cluster, &["get", "service", "kubernetes", "-o", "json"])["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let uid = kubectl_json(&cluster, &["get", "pod", "high", "-o", "json"])["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let container = container_id(&uid, "main");
    let (ok, inside) = exec(
        &container,
        "timeout 10 nslookup -type=a kubernetes.default.svc.cluster.local",
    );
    assert!(ok && inside.contains(&kubernetes_ip), "{inside}");
    let (ok, outside) = exec(&container, "timeout 10 nslookup -type=a www.example.test.");
    assert!(ok, "nslookup www.example.test: {outside}");
    assert!(outside.contains("192.0.2.55"), "not forwarded: {outside}");

    stop.store(true, Ordering::Relaxed);
    responder.join().expect("responder");
    cluster.down().expect("cluster down");
}

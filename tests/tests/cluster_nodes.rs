//! A three-node cluster on one machine through keelson-testbed: each node a network namespace
//! on the cluster's bridge with its own agent. The Nodes register with their namespace's
//! address and get distinct pod CIDRs, a Deployment spreads over all three, its pods get
//! addresses from their node's CIDR and reach each other through their node's routing, and
//! `down` leaves no namespace, link, container, pinned map or cgroup behind.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use keelson_testbed::{Cluster, ClusterSpec};
use keelson_tests::{
    netcluster::{bin_dir, claim_subnet, kubectl_json, logs},
    pods::{HTTPD, exec, require_docker_images},
    require_root,
};
use serde_json::Value;

const REPLICAS: usize = 6;

fn in_cidr(ip: Ipv4Addr, cidr: &str) -> bool {
    let (base, len) = cidr.split_once('/').expect("a CIDR");
    let base: Ipv4Addr = base.parse().expect("a CIDR base");
    let len: u32 = len.parse().expect("a prefix length");
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(base) & mask
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn docker_ids(filter: &str) -> Vec<String> {
    let output = Command::new("docker")
        .args(["ps", "-aq", "--filter", filter])
        .output()
        .expect("run docker ps");
    assert!(output.status.success(), "docker ps failed");
    String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn three_namespaced_nodes_spread_a_deployment_and_leave_nothing_behind() {
    require_root();
    require_docker_images();
    let (subnet, _lock) = claim_subnet();
    let name = format!("t{subnet}");
    let state = tempfile::tempdir().expect("state dir");
    let mut spec = ClusterSpec::new(&name, subnet, 3, bin_dir(), state.path());
    spec.cluster_cidr = "10.200.0.0/16".to_owned();
    let started = Instant::now();
    let cluster = Cluster::up(spec).unwrap_or_else(|e| panic!("cluster up: {e:#}"));
    eprintln!(
        "cluster {name} up in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Nodes: Ready, InternalIP from their namespace, distinct pod CIDRs.
    let nodes = kubectl_json(&cluster, &["get", "nodes", "-o", "json"]);
    let items = nodes["items"].as_array().expect("a node list");
    assert_eq!(items.len(), 3, "nodes: {nodes:#}");
    let mut cidrs: BTreeMap<String, String> = BTreeMap::new();
    for (i, handle) in cluster.nodes().iter().enumerate() {
        let node = items
            .iter()
            .find(|n| str_at(n, "/metadata/name") == handle.name)
            .unwrap_or_else(|| panic!("no Node {} in {nodes:#}", handle.name));
        let ready = node["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        assert!(ready, "node {} is not Ready: {node:#}", handle.name);
        let internal: Vec<&str> = node["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["type"] == "InternalIP")
            .filter_map(|a| a["address"].as_str())
            .collect();
        let expected = Ipv4Addr::new(172, 30, subnet, 11 + i as u8);
        assert_eq!(handle.address, expected);
        assert_eq!(
            internal,
            vec![expected.to_string()],
            "InternalIP of {}",
            handle.name
        );
        let cidr = str_at(node, "/spec/podCIDR");
        assert!(
            in_cidr(
                cidr.split_once('/')
                    .map_or("", |(b, _)| b)
                    .parse()
                    .unwrap_or(Ipv4Addr::UNSPECIFIED),
                "10.200.0.0/16"
            ),
            "node {} podCIDR {cidr:?} is not in the cluster CIDR",
            handle.name
        );
        cidrs.insert(handle.name.clone(), cidr.to_owned());
    }
    let distinct: BTreeSet<&String> = cidrs.values().collect();
    assert_eq!(distinct.len(), 3, "pod CIDRs are not distinct: {cidrs:?}");

    // A Deployment of six web servers spreads over the three nodes.
    let manifest = state.path().join("web.yaml");
    std::fs::write(
        &manifest,
        format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: {REPLICAS}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: web
          image: {HTTPD}
          imagePullPolicy: Never
          readinessProbe:
            httpGet: {{path: /, port: 80}}
            periodSeconds: 1
"#
        ),
    )
    .expect("write the manifest");
    cluster
        .kubectl(&["apply", "-f", &manifest.display().to_string()])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let deadline = Instant::now() + Duration::from_secs(180);
    let pods = loop {
        let list = kubectl_json(&cluster, &["get", "pods", "-l", "app=web", "-o", "json"]);
        let pods: Vec<Value> = list["items"].as_array().cloned().unwrap_or_default();
        let ready = pods
            .iter()
            .filter(|p| {
                !str_at(p, "/status/podIP").is_empty()
                    && p["status"]["conditions"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .count();
        if pods.len() == REPLICAS && ready == REPLICAS {
            break pods;
        }
        assert!(
            Instant::now() < deadline,
            "{ready} of {REPLICAS} pods Ready after 180 s: {}\n{}",
            cluster
                .kubectl(&["get", "pods", "-o", "wide"])
                .unwrap_or_default(),
            logs(&cluster)
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // Node name -> [(pod name, pod uid, pod IP)].
    let mut by_node: BTreeMap<String, Vec<(String, String, Ipv4Addr)>> = BTreeMap::new();
    for pod in &pods {
        let node = str_at(pod, "/spec/nodeName").to_owned();
        let ip: Ipv4Addr = str_at(pod, "/status/podIP").parse().expect("an IPv4 podIP");
        let cidr = cidrs
            .get(&node)
            .unwrap_or_else(|| panic!("pod on unknown node {node:?}"));
        assert!(
            in_cidr(ip, cidr),
            "pod {} on {node} has {ip}, outside its node's {cidr}",
            str_at(pod, "/metadata/name")
        );
        assert_eq!(
            str_at(pod, "/status/hostIP"),
            cluster
                .nodes()
                .iter()
                .find(|n| n.name == node)
                .map(|n| n.address.to_string())
                .unwrap_or_default(),
            "hostIP of a pod on {node}"
        );
        by_node.entry(node).or_default().push((
            str_at(pod, "/metadata/name").to_owned(),
            str_at(pod, "/metadata/uid").to_owned(),
            ip,
        ));
    }
    assert_eq!(
        by_node.len(),
        3,
        "the Deployment did not spread over the 3 nodes: {by_node:?}"
    );

    // Two pods on one node reach each other through that node's routing, and the node's
    // gateway (the pod CIDR's first address) answers them.
    let (node, local) = by_node
        .iter()
        .find(|(_, pods)| pods.len() >= 2)
        .expect("6 pods on 3 nodes put two on one node");
    let (client_name, client_uid, _) = &local[0];
    let (server_name, _, server_ip) = &local[1];
    let client = docker_ids(&format!("label=io.keelson.pod.uid={client_uid}"))
        .into_iter()
        .find(|id| {
            Command::new("docker")
                .args([
                    "inspect",
                    "-f",
                    "{{index .Config.Labels \"io.keelson.container\"}}",
                    id,
                ])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "web")
        })
        .unwrap_or_else(|| panic!("no web container for pod {client_name}"));
    let (ok, body) = exec(&client, &format!("timeout 5 wget -qO- http://{server_ip}/"));
    assert!(
        ok && body.trim() == server_name,
        "{client_name} -> {server_name} ({server_ip}) on {node}: {body}\n{}",
        logs(&cluster)
    );
    let gateway = {
        let cidr = &cidrs[node];
        let base: Ipv4Addr = cidr
            .split_once('/')
            .map_or("", |(b, _)| b)
            .parse()
            .expect("a CIDR base");
        Ipv4Addr::from(u32::from(base) + 1)
    };
    let (ok, out) = exec(&client, &format!("ping -c 1 -W 3 {gateway}"));
    assert!(
        ok,
        "{client_name} cannot ping its node's gateway {gateway}: {out}"
    );
    // The pod's processes are in its node's cgroup2 directory, where that node's socket-LB is.
    let handle = cluster
        .nodes()
        .iter()
        .find(|n| &n.name == node)
        .expect("the node's handle");
    let pid = String::from_utf8_lossy(
        &Command::new("docker")
            .args(["inspect", "-f", "{{.State.Pid}}", &client])
            .output()
            .expect("docker inspect")
            .stdout,
    )
    .trim()
    .to_owned();
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("its cgroups");
    let unified = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup2 line");
    let under = handle
        .cgroup
        .strip_prefix("/sys/fs/cgroup/unified")
        .expect("a cgroup2 directory");
    assert!(
        Path::new(unified).starts_with(Path::new("/").join(under)),
        "{client_name}'s cgroup2 {unified} is not under {}",
        handle.cgroup.display()
    );

    // down removes everything.
    let handles = cluster.nodes().to_vec();
    let bridge = format!("kb-{name}");
    cluster
        .down()
        .unwrap_or_else(|e| panic!("cluster down: {e:#}"));
    let netns = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip netns list")
            .stdout,
    )
    .into_owned();
    for handle in &handles {
        assert!(
            !netns.contains(&handle.netns),
            "netns {} left: {netns}",
            handle.netns
        );
        assert!(
            !Path::new("/sys/class/net").join(&handle.host_veth).exists(),
            "link {} left",
            handle.host_veth
        );
        let left = docker_ids(&format!("label=io.keelson.node={}", handle.name));
        assert!(
            left.is_empty(),
            "containers of {} left: {left:?}",
            handle.name
        );
        assert!(
            !handle.pin_dir.exists(),
            "pins {} left",
            handle.pin_dir.display()
        );
        let cgroup_name = handle.cgroup.file_name().expect("a cgroup name");
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .expect("/sys/fs/cgroup")
            .flatten()
        {
            let dir = hierarchy.path().join(cgroup_name);
            assert!(!dir.exists(), "cgroup {} left", dir.display());
        }
    }
    assert!(
        !Path::new("/sys/class/net").join(&bridge).exists(),
        "bridge {bridge} left"
    );
    assert!(
        !state.path().join("cluster.state").exists(),
        "the state file is left"
    );
    // A second down finds nothing to do.
    assert!(!keelson_testbed::down_from_state(state.path()).expect("second down"));
}

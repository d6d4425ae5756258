//! Helpers for tests on multi-node clusters whose nodes are network namespaces
//! (`keelson-testbed`): a private subnet, the binaries, kubectl JSON, pods and their
//! containers, the agents' datapath counters.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use keelson_testbed::Cluster;
use serde_json::Value;

use crate::cluster::control_plane_binary;

/// A subnet `172.30.S.0/24` (S in 1..=255; 0 is `cargo xtask cluster`'s) no other running test
/// holds: an exclusive flock on `/run/keelson-tests/subnet.S.lock`, held while the lock lives.
pub fn claim_subnet() -> (u8, nix::fcntl::Flock<std::fs::File>) {
    let (subnet, lock) = crate::claim_slot(255, |n| format!("subnet.{n}.lock"))
        .unwrap_or_else(|| panic!("every subnet 172.30.1-255.0/24 is held by a running test"));
    (subnet as u8, lock)
}

/// Where the binaries the test runs against are (next to the test's deps directory).
pub fn bin_dir() -> PathBuf {
    control_plane_binary()
        .parent()
        .expect("the binary's directory")
        .to_path_buf()
}

/// The agents' last log lines, for a failure message.
pub fn logs(cluster: &Cluster) -> String {
    cluster
        .nodes()
        .iter()
        .map(|n| {
            format!(
                "--- {} ---\n{}",
                n.log.display(),
                keelson_testbed::tail(&n.log, 20)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `kubectl <args>` parsed as JSON.
pub fn kubectl_json(cluster: &Cluster, args: &[&str]) -> Value {
    let text = cluster
        .kubectl(args)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(cluster)));
    serde_json::from_str(&text).expect("kubectl printed JSON")
}

/// Writes `yaml` to the cluster's state directory and applies it.
pub fn apply(cluster: &Cluster, name: &str, yaml: &str) {
    let path = cluster.spec().state_dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).expect("write the manifest");
    let path = path.to_string_lossy().into_owned();
    cluster
        .kubectl(&["apply", "-f", &path])
        .unwrap_or_else(|e| panic!("kubectl apply {name}: {e:#}"));
}

/// A running pod as the tests need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningPod {
    /// The pod's name.
    pub name: String,
    /// Its uid (labels its containers).
    pub uid: String,
    /// `status.podIP`.
    pub ip: Ipv4Addr,
    /// `spec.nodeName`.
    pub node: String,
}

/// The pods of a pod list (`kubectl get pods -o json`) that are Ready and not being deleted.
pub fn ready_items(pods: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter(|p| {
            p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

/// The Ready pods matching `selector` in `default`.
pub fn ready_pods(cluster: &Cluster, selector: &str) -> Vec<RunningPod> {
    let pods = kubectl_json(cluster, &["get", "pods", "-l", selector, "-o", "json"]);
    ready_items(&pods)
        .filter_map(|p| {
            Some(RunningPod {
                name: p["metadata"]["name"].as_str()?.to_owned(),
                uid: p["metadata"]["uid"].as_str()?.to_owned(),
                ip: p["status"]["podIP"].as_str()?.parse().ok()?,
                node: p["spec"]["nodeName"].as_str()?.to_owned(),
            })
        })
        .collect()
}

/// Waits until exactly `count` pods matching `selector` are Ready.
pub fn wait_ready_pods(
    cluster: &Cluster,
    selector: &str,
    count: usize,
    timeout: Duration,
) -> Vec<RunningPod> {
    let deadline = Instant::now() + timeout;
    loop {
        let pods = ready_pods(cluster, selector);
        if pods.len() == count {
            return pods;
        }
        if Instant::now() > deadline {
            let all = cluster
                .kubectl(&["get", "pods", "-o", "wide"])
                .unwrap_or_default();
            panic!(
                "{} of {count} pods {selector} Ready after {timeout:?}:\n{all}\n{}",
                pods.len(),
                logs(cluster)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs `script` with `sh -c` in the pod's container `container`: (success, output).
pub fn pod_exec(pod: &RunningPod, container: &str, script: &str) -> (bool, String) {
    let id = crate::pods::container_id(&pod.uid, container);
    crate::pods::exec(&id, script)
}

/// The node agent's datapath counters (`keelson_datapath_events_total`) by path name, read
/// from the node's pinned maps.
pub fn datapath_counters(pin_dir: &Path) -> BTreeMap<String, u64> {
    let text = keelson_node_agent::datapath::lb::metrics_text(pin_dir)
        .unwrap_or_else(|e| panic!("reading the counters in {}: {e}", pin_dir.display()));
    counters_in_metrics(&text)
}

/// The node agent's datapath counters as its `/metrics` at `address` serves them (a VM
/// node's, whose pins are inside the VM).
pub fn served_datapath_counters(address: SocketAddr) -> BTreeMap<String, u64> {
    let text = keelson_testbed::http_get(
        address,
        "/metrics",
        Duration::from_secs(5),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("GET http://{address}/metrics: {e:#}"));
    counters_in_metrics(&text)
}

/// `keelson_datapath_events_total{path="..."} N` lines, by path.
fn counters_in_metrics(text: &str) -> BTreeMap<String, u64> {
    text.lines()
        .filter_map(|line| line.strip_prefix("keelson_datapath_events_total{path=\""))
        .filter_map(|rest| {
            let (name, value) = rest.split_once("\"} ")?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// A Deployment `echo` of `replicas` busybox httpd pods serving their hostname at `/`, a 256 KiB
/// file at `/big` and, through CGI, their hostname and the caller's address at `/cgi-bin/ip`;
/// and the Service `echo` (port 80) in front of them.
pub fn echo_manifest(replicas: usize) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: echo}}
  template:
    metadata:
      labels: {{app: echo}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: echo
        image: keelson/busybox:1
        command:
        - sh
        - -c
        - |
          mkdir -p /www/cgi-bin
          printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho $(hostname) $REMOTE_ADDR\n' > /www/cgi-bin/ip
          chmod +x /www/cgi-bin/ip
          hostname > /www/index.html
          dd if=/dev/zero bs=1024 count=256 2>/dev/null > /www/big
          exec httpd -f -p 80 -h /www
        readinessProbe:
          httpGet: {{path: /, port: 80}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: echo
spec:
  selector: {{app: echo}}
  ports:
  - port: 80
    targetPort: 80
"#
    )
}

/// The caller's address as busybox httpd's CGI reports it (`<hostname> [::ffff:10.210.1.5]`).
pub fn remote_addr(answer: &str) -> Option<Ipv4Addr> {
    answer
        .split_whitespace()
        .last()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_start_matches("::ffff:")
        .parse()
        .ok()
}

/// Asserts that each pod's address lies in its node's `spec.podCIDR` (a /24 per node).
pub fn assert_pods_in_node_cidrs(cluster: &Cluster, pods: &[RunningPod]) {
    for pod in pods {
        let cidr =
            kubectl_json(cluster, &["get", "node", &pod.node, "-o", "json"])["spec"]["podCIDR"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        let (network, _) = cidr.split_once('/').expect("the node's pod CIDR");
        let network: Ipv4Addr = network.parse().expect("a CIDR");
        assert_eq!(
            pod.ip.octets()[..3],
            network.octets()[..3],
            "pod {} on {} has an address of its node's pod CIDR {cidr}",
            pod.name,
            pod.node
        );
    }
}

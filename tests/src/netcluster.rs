//! Helpers for tests on multi-node clusters whose nodes are network namespaces
//! (`keelson-testbed`): a private subnet, the binaries, kubectl JSON, pods and their
//! containers, the agents' datapath counters.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
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

/// The Ready pods matching `selector` in `default`.
pub fn ready_pods(cluster: &Cluster, selector: &str) -> Vec<RunningPod> {
    let pods = kubectl_json(cluster, &["get", "pods", "-l", selector, "-o", "json"]);
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
    text.lines()
        .filter_map(|line| line.strip_prefix("keelson_datapath_events_total{path=\""))
        .filter_map(|rest| {
            let (name, value) = rest.split_once("\"} ")?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

//! `kubectl drain` against a PodDisruptionBudget on a one-node testbed cluster: a two-replica
//! Deployment under `minAvailable: 2` cannot lose a pod, so the drain's evictions are refused
//! (429) until its timeout and it reports the budget; without the budget the drain evicts
//! both pods and leaves the node cordoned and empty.

use std::time::{Duration, Instant};

use keelson_testbed::{Cluster, ClusterSpec};
use keelson_tests::{
    netcluster::{apply, bin_dir, claim_subnet, kubectl_json, logs},
    pods::{HTTPD, require_docker_images},
    require_root,
};
use serde_json::Value;

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The pods bound to `node` (name, ready).
fn pods_on(cluster: &Cluster, node: &str) -> Vec<(String, bool)> {
    let list = kubectl_json(
        cluster,
        &[
            "get",
            "pods",
            "-A",
            "--field-selector",
            &format!("spec.nodeName={node}"),
            "-o",
            "json",
        ],
    );
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                ready(p),
            )
        })
        .collect()
}

#[test]
fn drain_is_blocked_by_a_budget_and_succeeds_without_it() {
    require_root();
    require_docker_images();
    let (subnet, _lock) = claim_subnet();
    let name = format!("t{subnet}");
    let state = tempfile::tempdir().expect("state dir");
    let spec = ClusterSpec::new(&name, subnet, 1, bin_dir(), state.path());
    let cluster = Cluster::up(spec).unwrap_or_else(|e| panic!("cluster up: {e:#}"));
    let node = cluster.nodes()[0].name.clone();

    apply(
        &cluster,
        "web",
        &format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 2
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
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {{name: web}}
spec:
  minAvailable: 2
  selector: {{matchLabels: {{app: web}}}}
"#
        ),
    );
    // Both pods ready on the node, and the budget's controller has counted them.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let on_node = pods_on(&cluster, &node);
        let budget = kubectl_json(&cluster, &["get", "pdb", "web", "-o", "json"]);
        let counted = budget["status"]["currentHealthy"] == 2
            && budget["status"]["desiredHealthy"] == 2
            && budget["status"]["disruptionsAllowed"] == 0;
        if on_node.iter().filter(|(_, r)| *r).count() == 2 && counted {
            assert_eq!(
                budget["status"]["conditions"][0]["reason"], "InsufficientPods",
                "{budget:#}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pods {on_node:?} and budget {:#} after 120 s\n{}",
            budget["status"],
            logs(&cluster)
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The budget allows no disruption: every eviction is a 429 until the drain gives up.
    let refused = cluster
        .kubectl(&["drain", &node, "--ignore-daemonsets", "--timeout=20s"])
        .expect_err("the drain must fail while the budget allows no disruption");
    let refused = format!("{refused:#}");
    assert!(
        refused.contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "drain output: {refused}"
    );
    assert_eq!(
        pods_on(&cluster, &node).iter().filter(|(_, r)| *r).count(),
        2,
        "the budget kept both pods"
    );

    // Without the budget the drain evicts both pods.
    cluster
        .kubectl(&["delete", "pdb", "web"])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let drained = cluster
        .kubectl(&["drain", &node, "--ignore-daemonsets", "--timeout=60s"])
        .unwrap_or_else(|e| panic!("{e:#}\n{}", logs(&cluster)));
    assert!(drained.contains("evicted"), "drain output: {drained}");
    let node_object = kubectl_json(&cluster, &["get", "node", &node, "-o", "json"]);
    assert_eq!(
        node_object["spec"]["unschedulable"], true,
        "the node is cordoned: {node_object:#}"
    );
    assert_eq!(
        pods_on(&cluster, &node),
        Vec::new(),
        "the node's pods are gone"
    );
    cluster
        .down()
        .unwrap_or_else(|e| panic!("cluster down: {e:#}"));
}

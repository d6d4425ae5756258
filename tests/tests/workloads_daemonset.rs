//! A DaemonSet on a netns testbed cluster, driven by kubectl: one Running pod on every node,
//! none on a node whose `NoSchedule` taint it does not tolerate (until the taint goes), one on
//! a node that joins later; its pods are placed by the scheduler (a node-name affinity term,
//! `nodeName` set by the binding); an image update rolls out (`kubectl rollout status` returns
//! 0), `kubectl rollout history` lists two revisions and `kubectl rollout undo` brings the old
//! image back.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use keelson_testbed::{Cluster, ClusterSpec};
use keelson_tests::{
    netcluster::{apply, bin_dir, claim_subnet, kubectl_json, logs},
    pods::{BUSYBOX, HTTPD, require_docker_images},
    require_root,
};
use serde_json::Value;

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn is_ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && str_at(pod, "/status/phase") == "Running"
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The DaemonSet's pods: node -> [(pod name, image, ready)], terminating ones included.
fn pods_by_node(cluster: &Cluster) -> BTreeMap<String, Vec<(String, String, bool)>> {
    let list = kubectl_json(cluster, &["get", "pods", "-l", "app=daemon", "-o", "json"]);
    let mut map: BTreeMap<String, Vec<(String, String, bool)>> = BTreeMap::new();
    for pod in list["items"].as_array().into_iter().flatten() {
        map.entry(str_at(pod, "/spec/nodeName").to_owned())
            .or_default()
            .push((
                str_at(pod, "/metadata/name").to_owned(),
                str_at(pod, "/spec/containers/0/image").to_owned(),
                is_ready(pod),
            ));
    }
    map
}

/// Waits until exactly the nodes `nodes` each run one Ready pod of `image` and no other pod
/// of the DaemonSet exists.
fn wait_one_per_node(cluster: &Cluster, nodes: &[&str], image: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let by_node = pods_by_node(cluster);
        let done = by_node.len() == nodes.len()
            && nodes.iter().all(|n| {
                by_node
                    .get(*n)
                    .is_some_and(|pods| pods.len() == 1 && pods[0].1 == image && pods[0].2)
            });
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: after 180 s the DaemonSet's pods are {by_node:#?}, wanted one Ready {image} \
             pod on each of {nodes:?}\n{}\n{}",
            cluster
                .kubectl(&["get", "pods", "-o", "wide"])
                .unwrap_or_default(),
            logs(cluster)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Polls `kubectl rollout status --watch=false` until it reports success, then checks the
/// watching form returns 0 with the same message.
fn rollout_status(cluster: &Cluster, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let text = cluster
            .kubectl(&["rollout", "status", "ds/daemon", "--watch=false"])
            .unwrap_or_else(|e| panic!("{what}: kubectl rollout status: {e:#}"));
        if text.contains("daemon set \"daemon\" successfully rolled out") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not rolled out after 240 s: {text}\n{}\n{}",
            cluster
                .kubectl(&["get", "ds,pods", "-o", "wide"])
                .unwrap_or_default(),
            logs(cluster)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let text = cluster
        .kubectl(&["rollout", "status", "ds/daemon", "--timeout=60s"])
        .unwrap_or_else(|e| panic!("{what}: kubectl rollout status exited non-zero: {e:#}"));
    assert!(
        text.contains("successfully rolled out"),
        "{what}: rollout status said {text:?}"
    );
}

/// The `pod-template-generation` labels of the DaemonSet's pods.
fn template_generations(cluster: &Cluster) -> Vec<String> {
    let list = kubectl_json(cluster, &["get", "pods", "-l", "app=daemon", "-o", "json"]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| str_at(p, "/metadata/labels/pod-template-generation").to_owned())
        .collect()
}

/// The revision numbers `kubectl rollout history` lists.
fn history(cluster: &Cluster) -> Vec<u32> {
    let text = cluster
        .kubectl(&["rollout", "history", "ds/daemon"])
        .unwrap_or_else(|e| panic!("kubectl rollout history: {e:#}"));
    text.lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn a_daemonset_runs_one_pod_per_node_rolls_out_and_rolls_back() {
    require_root();
    require_docker_images();
    let (subnet, _lock) = claim_subnet();
    let name = format!("d{subnet}");
    let state = tempfile::tempdir().expect("state dir");
    let mut spec = ClusterSpec::new(&name, subnet, 4, bin_dir(), state.path());
    spec.cluster_cidr = "10.201.0.0/16".to_owned();
    spec.late_nodes = 1;
    let mut cluster = Cluster::up(spec).unwrap_or_else(|e| panic!("cluster up: {e:#}"));
    let nodes: Vec<String> = cluster.nodes().iter().map(|n| n.name.clone()).collect();
    let [n1, n2, n3, n4] = [&nodes[0], &nodes[1], &nodes[2], &nodes[3]].map(String::as_str);

    // n3 carries a taint the DaemonSet does not tolerate.
    cluster
        .kubectl(&["taint", "nodes", n3, "dedicated=test:NoSchedule"])
        .unwrap_or_else(|e| panic!("kubectl taint: {e:#}"));
    apply(
        &cluster,
        "daemon",
        &format!(
            r#"apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: daemon}}
spec:
  selector: {{matchLabels: {{app: daemon}}}}
  template:
    metadata: {{labels: {{app: daemon}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: web
          image: {HTTPD}
          imagePullPolicy: Never
          command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
          readinessProbe:
            httpGet: {{path: /, port: 80}}
            periodSeconds: 1
"#
        ),
    );
    wait_one_per_node(&cluster, &[n1, n2], HTTPD, "with n3 tainted");
    // Placed by the scheduler: pinned by affinity, bound by the binding, with the revision hash
    // and the daemon tolerations.
    let list = kubectl_json(&cluster, &["get", "pods", "-l", "app=daemon", "-o", "json"]);
    for pod in list["items"].as_array().into_iter().flatten() {
        let node = str_at(pod, "/spec/nodeName");
        assert_eq!(
            pod.pointer(
                "/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms/0/matchFields/0"
            ),
            Some(&serde_json::json!({"key": "metadata.name", "operator": "In", "values": [node]})),
            "the node affinity of {pod:#}"
        );
        assert!(!str_at(pod, "/metadata/labels/controller-revision-hash").is_empty());
        let tolerated: Vec<&str> = pod["spec"]["tolerations"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["key"].as_str())
            .collect();
        assert!(
            tolerated.contains(&"node.kubernetes.io/unreachable")
                && tolerated.contains(&"node.kubernetes.io/unschedulable"),
            "tolerations {tolerated:?}"
        );
    }
    let ds = kubectl_json(&cluster, &["get", "ds", "daemon", "-o", "json"]);
    assert_eq!(ds["status"]["desiredNumberScheduled"], 2, "{ds:#}");

    // The taint goes: n3 gets its pod.
    cluster
        .kubectl(&["taint", "nodes", n3, "dedicated-"])
        .unwrap_or_else(|e| panic!("kubectl taint: {e:#}"));
    wait_one_per_node(&cluster, &[n1, n2, n3], HTTPD, "after the taint is removed");

    // A node joins: it gets its pod.
    cluster
        .start_agent(4)
        .unwrap_or_else(|e| panic!("start the fourth agent: {e:#}"));
    wait_one_per_node(&cluster, &[n1, n2, n3, n4], HTTPD, "after n4 joined");
    rollout_status(&cluster, "the first rollout");
    let ds = kubectl_json(&cluster, &["get", "ds", "daemon", "-o", "json"]);
    for field in [
        "desiredNumberScheduled",
        "currentNumberScheduled",
        "numberReady",
        "numberAvailable",
        "updatedNumberScheduled",
    ] {
        assert_eq!(ds["status"][field], 4, "{field} in {:#}", ds["status"]);
    }
    assert_eq!(ds["status"]["numberMisscheduled"], 0);
    assert_eq!(template_generations(&cluster), ["1"; 4]);

    // An image update rolls out.
    cluster
        .kubectl(&["set", "image", "ds/daemon", &format!("web={BUSYBOX}")])
        .unwrap_or_else(|e| panic!("kubectl set image: {e:#}"));
    rollout_status(&cluster, "the image update");
    wait_one_per_node(
        &cluster,
        &[n1, n2, n3, n4],
        BUSYBOX,
        "after the image update",
    );
    assert_eq!(history(&cluster), [1, 2], "rollout history");
    assert_eq!(template_generations(&cluster), ["2"; 4]);

    // Undo: the old image comes back as revision 3.
    cluster
        .kubectl(&["rollout", "undo", "ds/daemon"])
        .unwrap_or_else(|e| panic!("kubectl rollout undo: {e:#}"));
    rollout_status(&cluster, "the undo");
    wait_one_per_node(&cluster, &[n1, n2, n3, n4], HTTPD, "after the undo");
    assert_eq!(history(&cluster), [2, 3], "rollout history after the undo");

    cluster
        .kubectl(&["delete", "ds", "daemon", "--wait=true", "--timeout=120s"])
        .unwrap_or_else(|e| panic!("kubectl delete ds: {e:#}"));
    cluster
        .down()
        .unwrap_or_else(|e| panic!("cluster down: {e:#}"));
}

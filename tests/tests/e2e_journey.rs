//! End to end, privileged: the newcomer's journey of `cargo xtask up` on an all-in-one cluster
//! (the real control plane with its scheduler and controllers, the node agent on Docker), driven
//! by kubectl 1.33 with a smoke run of kubectl 1.27.
//!
//! `examples/hello.yaml` is applied in a namespace of its own; a client pod loops requests
//! through the Service's DNS name and through its ClusterIP while the Deployment scales to 5,
//! back to 2 and rolls out a new template. Every request must succeed, also during scale-down
//! and the rollout: a deleted pod's endpoint turns terminating (not ready) at once, and the
//! example's preStop `sleep` keeps the pod serving until every datapath has stopped sending it
//! new connections, as in Kubernetes. Deleting the namespace must leave no container, veth, address or map entry behind.
//!
//! Unlike `xtask up`, the agent's socket-LB is attached to a test cgroup (never the machine's
//! root), so the client pod's Service traffic is translated by the TC program on its veth.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    lbkit::node_agent,
    pods::PodAgent,
};

const NS: &str = "journey";

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/hello.yaml")
}

/// The client's log lines: `<dns|vip> <ok|fail> <answer or error>`.
fn client_lines(kubectl: &Kubectl<'_>) -> Vec<String> {
    kubectl
        .run(&["logs", "client", "-n", NS])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits until the client has logged `more` lines after `from`; returns the lines since `from`.
fn wait_lines(kubectl: &Kubectl<'_>, from: usize, more: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lines = client_lines(kubectl);
        if lines.len() >= from + more {
            return lines[from..].to_vec();
        }
        assert!(
            Instant::now() < deadline,
            "the client logged only {} lines in 60 s: {lines:?}",
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// (failures, distinct backends) among `lines`, per kind.
fn tally(lines: &[String], kind: &str) -> (Vec<String>, std::collections::BTreeSet<String>) {
    let mut failures = Vec::new();
    let mut backends = std::collections::BTreeSet::new();
    for line in lines.iter().filter(|l| l.starts_with(kind)) {
        let mut words = line.splitn(3, ' ');
        let (_, verdict, rest) = (words.next(), words.next(), words.next().unwrap_or(""));
        match verdict {
            Some("ok") => {
                backends.insert(rest.to_owned());
            }
            _ => failures.push(line.clone()),
        }
    }
    (failures, backends)
}

fn rollout(kubectl: &Kubectl<'_>) {
    kubectl.run(&[
        "rollout",
        "status",
        "deployment/hello",
        "-n",
        NS,
        "--timeout=180s",
    ]);
}

/// Waits until exactly `n` hello pods exist (terminated ones gone).
fn wait_pods(kubectl: &Kubectl<'_>, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let names = kubectl.run(&["get", "pods", "-n", NS, "-l", "app=hello", "-o", "name"]);
        if names.lines().count() == n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "hello still has pods {names} 90 s after scaling to {n}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn apply_scale_roll_out_and_delete_with_kubectl() {
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    // The kubelet endpoint listens on loopback; the API server reaches it (for `kubectl logs`)
    // at the node's address.
    let agent = PodAgent::start(&plane, &["--node-address", "127.0.0.1"]);
    let kubectl = Kubectl::new(33, &plane);

    kubectl.run(&["create", "namespace", NS]);
    let applied = kubectl.run(&["apply", "-n", NS, "-f", &example().display().to_string()]);
    assert!(
        applied.contains("deployment.apps/hello created"),
        "{applied}"
    );
    rollout(&kubectl);
    let vip = kubectl.run(&[
        "get",
        "service",
        "hello",
        "-n",
        NS,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    let octets = vip
        .parse::<std::net::Ipv4Addr>()
        .map(|ip| ip.octets())
        .unwrap_or_else(|e| panic!("ClusterIP {vip:?}: {e}"));
    assert!(
        octets[0] == 10 && (96..112).contains(&octets[1]),
        "ClusterIP {vip} is outside 10.96.0.0/12"
    );

    // The client: one request by name and one by ClusterIP every 100 ms, each bounded to 3 s
    // (`timeout`: busybox wget -T crashes in this image).
    let client = format!(
        r#"{{"apiVersion": "v1", "kind": "Pod",
            "metadata": {{"name": "client", "namespace": "{NS}"}},
            "spec": {{"terminationGracePeriodSeconds": 0, "containers": [{{
              "name": "client", "image": "keelson/busybox:1",
              "command": ["sh", "-c", "i=0; while [ $i -lt 5000 ]; do i=$((i+1)); for kind in dns vip; do if [ $kind = dns ]; then url=http://hello/; else url=http://{vip}/; fi; if out=$(timeout 3 wget -qO- $url 2>&1); then echo \"$kind ok $out\"; else echo \"$kind fail $out\" | tr '\\n' ' '; echo; fi; done; sleep 0.1; done"]
            }}]}}}}"#
    );
    let path = plane.data_dir().join("client.json");
    std::fs::write(&path, client).expect("write the client pod");
    kubectl.run(&["apply", "-f", &path.display().to_string()]);
    kubectl.run(&[
        "wait",
        "--for=condition=Ready",
        "pod/client",
        "-n",
        NS,
        "--timeout=60s",
    ]);

    // Steady state, 3 replicas: every request answers, all backends take part.
    let steady = wait_lines(&kubectl, 0, 60);
    for kind in ["dns", "vip"] {
        let (failures, backends) = tally(&steady, kind);
        assert!(
            failures.is_empty(),
            "{kind} requests failed with 3 replicas: {failures:?}"
        );
        assert_eq!(backends.len(), 3, "{kind} answers came from {backends:?}");
    }

    // Scale to 5: no failures, the new pods answer too.
    let mark = client_lines(&kubectl).len();
    kubectl.run(&["scale", "deployment/hello", "-n", NS, "--replicas=5"]);
    rollout(&kubectl);
    wait_pods(&kubectl, 5);
    let up = wait_lines(&kubectl, mark, 120);
    for kind in ["dns", "vip"] {
        let (failures, backends) = tally(&up, kind);
        assert!(
            failures.is_empty(),
            "{kind} requests failed while scaling to 5: {failures:?}"
        );
        assert!(
            backends.len() >= 4,
            "{kind} answers after scaling to 5 came from {backends:?}"
        );
    }

    // Back to 2 (3 pods removed), then a new template (2 more replaced).
    let mark = client_lines(&kubectl).len();
    kubectl.run(&["scale", "deployment/hello", "-n", NS, "--replicas=2"]);
    wait_pods(&kubectl, 2);
    kubectl.run(&["set", "env", "deployment/hello", "-n", NS, "GREETING=v2"]);
    rollout(&kubectl);
    wait_pods(&kubectl, 2);
    let template = kubectl.run(&[
        "get",
        "pods",
        "-n",
        NS,
        "-l",
        "app=hello",
        "-o",
        "jsonpath={.items[*].spec.containers[0].env[0].value}",
    ]);
    assert_eq!(
        template.split_whitespace().collect::<Vec<_>>(),
        ["v2", "v2"]
    );
    let down = wait_lines(&kubectl, mark, 40);
    let after = client_lines(&kubectl).len();
    let settled = wait_lines(&kubectl, after, 40);
    for kind in ["dns", "vip"] {
        let (failures, _) = tally(&down, kind);
        println!(
            "{kind}: {} of {} requests failed during scale-down to 2 and the rollout: {failures:?}",
            failures.len(),
            down.iter().filter(|l| l.starts_with(kind)).count()
        );
        assert!(
            failures.is_empty(),
            "{kind}: {} requests failed while 5 pods were removed: {failures:?}",
            failures.len()
        );
        let (failures, backends) = tally(&settled, kind);
        assert!(
            failures.is_empty(),
            "{kind} requests failed after the rollout: {failures:?}"
        );
        assert_eq!(
            backends.len(),
            2,
            "{kind} answers after the rollout came from {backends:?}"
        );
    }

    // kubectl 1.27 (the oldest supported) reads the same cluster.
    let old = Kubectl::new(27, &plane);
    let pods = old.run(&["get", "pods", "-n", NS, "-o", "wide"]);
    assert_eq!(
        pods.lines().filter(|l| l.starts_with("hello-")).count(),
        2,
        "{pods}"
    );
    let ready = old.run(&[
        "get",
        "deployment",
        "hello",
        "-n",
        NS,
        "-o",
        "jsonpath={.status.readyReplicas}/{.status.updatedReplicas}",
    ]);
    assert_eq!(
        ready, "2/2",
        "ready/updated replicas of hello seen by kubectl 1.27"
    );

    // Deleting the namespace removes everything: containers, veths, addresses, map entries.
    kubectl.run(&["delete", "namespace", NS, "--timeout=120s"]);
    agent.assert_no_leaks();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = node_agent(&[
            "lb",
            "list",
            "--pin-dir",
            &agent.pin_dir().display().to_string(),
        ]);
        if !list.contains(vip.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Service's frontend {vip} is still in the maps after its namespace was deleted:\n{list}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

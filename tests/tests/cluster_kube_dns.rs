//! Cluster DNS as the `kube-dns` Service on a two-node netns testbed cluster: `kubectl get svc
//! -n kube-system kube-dns` shows the tenth address of the service range with kubeadm's labels
//! and ports; its EndpointSlice lists each node's DNS responder (the first host of its pod
//! CIDR); a pod on each node resolves `kubernetes.default` and a Service by asking the
//! ClusterIP explicitly, over UDP (`nslookup`) and TCP (a raw query through `nc`); a deleted
//! node leaves the slice.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use keelson_testbed::{Cluster, ClusterSpec};
use keelson_tests::{
    netcluster::{
        RunningPod, apply, bin_dir, claim_subnet, kubectl_json, logs, pod_exec, wait_ready_pods,
    },
    pods::{BUSYBOX, require_docker_images},
    require_root,
};
use serde_json::{Value, json};

const DNS_IP: &str = "10.96.0.10";
const KUBERNETES_IP: &str = "10.96.0.1";

/// The slice's endpoints: node -> (address, ready).
fn slice_endpoints(cluster: &Cluster) -> BTreeMap<String, (String, bool)> {
    let list = kubectl_json(
        cluster,
        &[
            "get",
            "endpointslices",
            "-n",
            "kube-system",
            "-l",
            "kubernetes.io/service-name=kube-dns",
            "-o",
            "json",
        ],
    );
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| {
            (
                e["nodeName"].as_str().unwrap_or_default().to_owned(),
                (
                    e["addresses"][0].as_str().unwrap_or_default().to_owned(),
                    e["conditions"]["ready"].as_bool().unwrap_or(true),
                ),
            )
        })
        .collect()
}

fn wait_slice(cluster: &Cluster, expected: &BTreeMap<String, (String, bool)>, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = slice_endpoints(cluster);
        if &seen == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the kube-dns EndpointSlice lists {seen:?}, wanted {expected:?}\n{}",
            logs(cluster)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A DNS query for `name` (type A, class IN) over TCP, as `printf` octal escapes with the
/// two-byte length prefix.
fn tcp_query(name: &str) -> String {
    let mut message: Vec<u8> = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        message.push(u8::try_from(label.len()).expect("short label"));
        message.extend_from_slice(label.as_bytes());
    }
    message.extend_from_slice(&[0, 0, 1, 0, 1]);
    let length = u16::try_from(message.len())
        .expect("short query")
        .to_be_bytes();
    length
        .iter()
        .chain(&message)
        .map(|b| format!("\\{b:03o}"))
        .collect()
}

/// Runs `script` in the pod until its output contains `wanted` (at most 30 s).
fn exec_until(cluster: &Cluster, pod: &RunningPod, script: &str, wanted: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out) = pod_exec(pod, "app", script);
        if out.contains(wanted) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} (pod {} on {}): `{script}` never printed {wanted:?}; last output:\n{out}\n{}",
            pod.name,
            pod.node,
            logs(cluster)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn kube_dns_service_answers_on_every_node() {
    require_root();
    require_docker_images();
    let (subnet, _lock) = claim_subnet();
    let state = tempfile::tempdir().expect("state dir");
    let spec = ClusterSpec::new(&format!("k{subnet}"), subnet, 2, bin_dir(), state.path());
    let mut cluster = Cluster::up(spec).unwrap_or_else(|e| panic!("cluster up: {e:#}"));
    let nodes: Vec<String> = cluster.nodes().iter().map(|n| n.name.clone()).collect();

    // The Service, as kubeadm lays it out.
    let table = cluster
        .kubectl(&["get", "svc", "-n", "kube-system", "kube-dns"])
        .unwrap_or_else(|e| panic!("kubectl get svc kube-dns: {e:#}"));
    assert!(
        table.lines().nth(1).is_some_and(|l| {
            let columns: Vec<&str> = l.split_whitespace().collect();
            columns.first() == Some(&"kube-dns")
                && columns.get(1) == Some(&"ClusterIP")
                && columns.get(2) == Some(&DNS_IP)
                && columns.get(4) == Some(&"53/UDP,53/TCP")
        }),
        "kubectl get svc printed:\n{table}"
    );
    let service = kubectl_json(
        &cluster,
        &["get", "svc", "-n", "kube-system", "kube-dns", "-o", "json"],
    );
    assert_eq!(
        service["metadata"]["labels"],
        json!({"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
               "kubernetes.io/name": "CoreDNS"})
    );
    assert_eq!(service["spec"]["internalTrafficPolicy"], "Local");
    let ports: Vec<(&str, &str, u64)> = service["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or_default(),
                p["protocol"].as_str().unwrap_or_default(),
                p["port"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(ports, [("dns", "UDP", 53), ("dns-tcp", "TCP", 53)]);

    // Its slice: each node's responder at the first host of its pod CIDR, Ready.
    let responders: BTreeMap<String, (String, bool)> = nodes
        .iter()
        .map(|node| {
            let object = kubectl_json(&cluster, &["get", "node", node, "-o", "json"]);
            let cidr = object["spec"]["podCIDR"].as_str().unwrap_or_default();
            let network = cidr.split('/').next().unwrap_or_default();
            let mut octets: Vec<u8> = network.split('.').filter_map(|o| o.parse().ok()).collect();
            assert_eq!(octets.len(), 4, "node {node} has podCIDR {cidr:?}");
            octets[3] += 1;
            let address = octets
                .iter()
                .map(u8::to_string)
                .collect::<Vec<_>>()
                .join(".");
            (node.clone(), (address, true))
        })
        .collect();
    wait_slice(&cluster, &responders, "both nodes Ready");
    let slice = kubectl_json(
        &cluster,
        &[
            "get",
            "endpointslices",
            "-n",
            "kube-system",
            "-l",
            "kubernetes.io/service-name=kube-dns",
            "-o",
            "json",
        ],
    );
    let first = &slice["items"][0];
    assert_eq!(
        first["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
        "kube-dns-endpoints.keelson.io",
        "{first:#}"
    );
    // The slice is not rewritten while nothing changes (no fight with another controller).
    let version = |v: &Value| v["metadata"]["resourceVersion"].as_str().map(str::to_owned);
    let before = version(first);
    std::thread::sleep(Duration::from_secs(3));
    let again = kubectl_json(
        &cluster,
        &[
            "get",
            "endpointslices",
            "-n",
            "kube-system",
            first["metadata"]["name"].as_str().unwrap_or_default(),
            "-o",
            "json",
        ],
    );
    assert_eq!(version(&again), before, "the slice churns: {again:#}");

    // A Service to resolve, and a client pod on each node.
    let pods: String = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            format!(
                "---
apiVersion: v1
kind: Pod
metadata: {{name: client-{i}, namespace: default, labels: {{app: dns-client}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {BUSYBOX}
    imagePullPolicy: Never
    command: [\"sleep\", \"3600\"]
"
            )
        })
        .collect();
    apply(
        &cluster,
        "clients",
        &format!(
            "apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  selector: {{app: web}}
  ports:
  - {{name: http, port: 80}}
{pods}"
        ),
    );
    let web = kubectl_json(&cluster, &["get", "svc", "web", "-o", "json"]);
    let web_ip = web["spec"]["clusterIP"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!web_ip.is_empty(), "{web:#}");
    let clients = wait_ready_pods(
        &cluster,
        "app=dns-client",
        nodes.len(),
        Duration::from_secs(120),
    );
    let on: Vec<&str> = clients.iter().map(|p| p.node.as_str()).collect();
    assert!(
        nodes.iter().all(|n| on.contains(&n.as_str())),
        "clients on {on:?}"
    );
    for pod in &clients {
        for (name, ip) in [
            ("kubernetes.default.svc.cluster.local", KUBERNETES_IP),
            ("web.default.svc.cluster.local", web_ip.as_str()),
        ] {
            exec_until(
                &cluster,
                pod,
                &format!("nslookup {name} {DNS_IP}"),
                &format!("Address: {ip}"),
                &format!("{name} over UDP through {DNS_IP}"),
            );
            // TCP: the answer's A record is rdlength 4 then the address.
            let rdata = format!(" 0 4 {} ", ip.replace('.', " "));
            exec_until(
                &cluster,
                pod,
                &format!(
                    "(printf '{}'; sleep 2) | timeout 4 nc {DNS_IP} 53 | od -An -v -tu1 \
                     | tr -s ' \\n' '  '; echo",
                    tcp_query(name)
                ),
                &rdata,
                &format!("{name} over TCP through {DNS_IP}"),
            );
        }
    }

    // A node that goes away leaves the slice.
    let gone = nodes[1].clone();
    cluster
        .kill_agent(1)
        .unwrap_or_else(|e| panic!("stop the agent of {gone}: {e:#}"));
    cluster
        .kubectl(&["delete", "node", &gone, "--wait=false"])
        .unwrap_or_else(|e| panic!("kubectl delete node: {e:#}"));
    let mut remaining = responders.clone();
    remaining.remove(&gone);
    wait_slice(&cluster, &remaining, "after the node was deleted");

    cluster
        .down()
        .unwrap_or_else(|e| panic!("cluster down: {e:#}"));
}

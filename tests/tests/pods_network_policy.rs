//! End to end, privileged: NetworkPolicies applied with kubectl are enforced by the agent's
//! eBPF programs on one node, through the policy compiler the agent runs: ingress by pod
//! selector, then by namespace selector added to the same policy while traffic flows, an
//! egress policy that allows only DNS (cluster DNS still answers, the web server does not),
//! the node always reaching its pods, and everything open again once the policies are gone.
//! (The full truth table, UDP and several nodes are issue 22's next step.)

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    pods::{PodAgent, apply, container_id, exec, is_ready, pod_ip, uid, wait_pod},
};
use kube::Api;

fn pod(name: &str, ns: &str, labels: &str, image: &str, node: &str) -> String {
    let command = if image.contains("httpd") {
        String::new()
    } else {
        "\n    command: [\"sleep\", \"3600\"]".to_owned()
    };
    format!(
        "---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}{command}
"
    )
}

/// Whether `from` (a container) gets an answer from `http://to/` within 3 s.
fn reaches(from: &str, to: Ipv4Addr) -> bool {
    exec(from, &format!("timeout 3 wget -q -O - http://{to}:80/")).0
}

/// Polls the probes until they match `want` (policies apply within a moment); the matrix of
/// the last try otherwise, in the panic.
async fn expect(case: &str, probes: &[(&str, &str, Ipv4Addr)], want: &[bool]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got: Vec<bool> = probes
            .iter()
            .map(|(_, from, to)| reaches(from, *to))
            .collect();
        if got == want {
            return;
        }
        if Instant::now() > deadline {
            let table: Vec<String> = probes
                .iter()
                .zip(want.iter().zip(&got))
                .map(|((name, _, _), (w, g))| format!("  {name:<24} expected {w:<5} got {g}"))
                .collect();
            panic!("{case}:\n{}", table.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_policies_are_enforced_in_ebpf() {
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    let agent = PodAgent::start(&plane, &["--node-address", "127.0.0.1"]);
    let kubectl = Kubectl::new(33, &plane);
    for ns in ["np", "np-b"] {
        kubectl.run(&["create", "namespace", ns]);
    }
    let node = &agent.node;
    let manifest = [
        pod("web", "np", "app: web", "keelson/httpd:1", node),
        pod("client", "np", "role: client", "keelson/busybox:1", node),
        pod("other", "np", "role: other", "keelson/busybox:1", node),
        pod(
            "outsider",
            "np-b",
            "role: client",
            "keelson/busybox:1",
            node,
        ),
    ]
    .concat();
    apply(&kubectl, plane.data_dir(), "pods.yaml", &manifest);
    let client = plane.client().await;
    let mut ids = std::collections::BTreeMap::new();
    let mut web_ip = Ipv4Addr::UNSPECIFIED;
    for (ns, name) in [
        ("np", "web"),
        ("np", "client"),
        ("np", "other"),
        ("np-b", "outsider"),
    ] {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        let pod = wait_pod(
            &pods,
            name,
            Duration::from_secs(60),
            &agent,
            "Ready",
            is_ready,
        )
        .await;
        if name == "web" {
            web_ip = pod_ip(&pod);
        }
        ids.insert(name, container_id(&uid(&pod), "main"));
    }
    let probes = [
        ("np/client -> web", ids["client"].as_str(), web_ip),
        ("np/other -> web", ids["other"].as_str(), web_ip),
        ("np-b/outsider -> web", ids["outsider"].as_str(), web_ip),
    ];
    expect("no policy", &probes, &[true, true, true]).await;

    // Ingress from pods of its namespace labelled role=client, on port 80.
    let ingress = |extra_peer: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web-from-clients, namespace: np}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  ingress:
  - from:
    - podSelector: {{matchLabels: {{role: client}}}}{extra_peer}
    ports:
    - {{protocol: TCP, port: 80}}
"
        )
    };
    apply(&kubectl, plane.data_dir(), "ingress.yaml", &ingress(""));
    expect(
        "ingress from role=client of namespace np",
        &probes,
        &[true, false, false],
    )
    .await;
    // The node reaches its pods whatever the policies say.
    let from_node =
        TcpStream::connect_timeout(&SocketAddr::from((web_ip, 80)), Duration::from_secs(3));
    assert!(from_node.is_ok(), "the node reaches web: {from_node:?}");

    // A namespace peer added to the same policy while traffic flows.
    apply(
        &kubectl,
        plane.data_dir(),
        "ingress.yaml",
        &ingress("\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: np-b}}"),
    );
    expect(
        "and every pod of namespace np-b",
        &probes,
        &[true, false, true],
    )
    .await;

    // np/client may only speak DNS: cluster DNS answers, the web server is out of reach.
    let dns_only = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: client-dns-only, namespace: np}
spec:
  podSelector: {matchLabels: {role: client}}
  policyTypes: [Egress]
  egress:
  - ports:
    - {protocol: UDP, port: 53}
    - {protocol: TCP, port: 53}
";
    apply(&kubectl, plane.data_dir(), "dns-only.yaml", dns_only);
    expect("np/client egress only DNS", &probes, &[false, false, true]).await;
    let (ok, out) = exec(
        &ids["client"],
        "timeout 10 nslookup -type=a kubernetes.default.svc.cluster.local",
    );
    assert!(ok, "cluster DNS under an egress-only-DNS policy: {out}");

    // Everything open again once the policies are gone.
    kubectl.run(&["delete", "networkpolicy", "--all", "-n", "np"]);
    expect("no policy again", &probes, &[true, true, true]).await;

    let metrics = agent.metrics();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("keelson_policy_map_writes_total ")),
        "{metrics}"
    );
    for ns in ["np", "np-b"] {
        kubectl.run(&["delete", "namespace", ns, "--timeout=60s"]);
    }
    agent.assert_no_leaks();
}

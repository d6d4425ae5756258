//! End to end, privileged: NetworkPolicies applied with kubectl are enforced by the agent's
//! eBPF programs on one node, through the policy compiler the agent runs: ingress by pod
//! selector, then by namespace selector added to the same policy while traffic flows, an
//! egress policy that allows only DNS (cluster DNS still answers, the web server does not),
//! the node always reaching its pods, and everything open again once the policies are gone.
//! Bad input: an invalid CIDR and 100 000 ipBlocks get a Status, a port name no pod has matches
//! nothing, and 40 000 ipBlocks are enforced.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use k8s_openapi::api::{core::v1::Pod, networking::v1::NetworkPolicy};
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    pods::{PodAgent, apply, container_id, exec, is_ready, pod_ip, uid, wait_pod},
};
use kube::{Api, api::PostParams};

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
    let mut outsider_ip = Ipv4Addr::UNSPECIFIED;
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
        if name == "outsider" {
            outsider_ip = pod_ip(&pod);
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

    bad_input_and_scale(&kubectl, &plane, &client, &probes, outsider_ip).await;
    kubectl.run(&["delete", "networkpolicy", "--all", "-n", "np"]);
    expect("no policy at the end", &probes, &[true, true, true]).await;

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

/// A NetworkPolicy of `web` allowing ingress from `blocks` (`ipBlock` peers) on port 80.
fn web_from_blocks(name: &str, blocks: impl Iterator<Item = String>) -> NetworkPolicy {
    let peers: Vec<serde_json::Value> = blocks
        .map(|cidr| serde_json::json!({"ipBlock": {"cidr": cidr}}))
        .collect();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "np"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": 80}]}],
        },
    }))
    .expect("a NetworkPolicy")
}

/// `count` distinct `/32`s of 172.16.0.0/12 (never a pod's address here).
fn filler(count: u32) -> impl Iterator<Item = String> {
    (0..count).map(|i| format!("{}/32", Ipv4Addr::from(0xac10_0000 + i)))
}

/// Bad input gets a clear Status, and what is accepted is enforced as written: an invalid
/// CIDR (422), 100 000 ipBlocks (413, as kube-apiserver's 3 MiB body limit answers), a port name
/// no pod has (it matches nothing: `web` is isolated), and 40 000 ipBlocks among which one
/// covers `outsider` (only it gets in).
async fn bad_input_and_scale(
    kubectl: &Kubectl<'_>,
    plane: &ControlPlane,
    client: &kube::Client,
    probes: &[(&str, &str, Ipv4Addr)],
    outsider_ip: Ipv4Addr,
) {
    let bad_cidr = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: bad-cidr, namespace: np}
spec:
  podSelector: {}
  ingress:
  - from:
    - ipBlock: {cidr: 10.0.0.0/33}
";
    let path = plane.data_dir().join("bad-cidr.yaml");
    std::fs::write(&path, bad_cidr).expect("write manifest");
    let err = kubectl.fail(&["apply", "-f", &path.to_string_lossy()]);
    assert!(
        err.contains("spec.ingress[0].from[0].ipBlock.cidr: Invalid value: \"10.0.0.0/33\""),
        "{err}"
    );

    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), "np");
    let huge = web_from_blocks("huge", filler(100_000));
    match policies.create(&PostParams::default(), &huge).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 413, "{status:?}");
            assert!(
                status
                    .message
                    .contains("Request entity too large: limit is 3145728"),
                "{status:?}"
            );
        }
        other => panic!("100 000 ipBlocks: {other:?}"),
    }

    let named_nowhere = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: named-nowhere, namespace: np}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
  - from:
    - podSelector: {}
    - namespaceSelector: {}
    ports:
    - {protocol: TCP, port: nosuch}
";
    apply(
        kubectl,
        plane.data_dir(),
        "named-nowhere.yaml",
        named_nowhere,
    );
    expect(
        "a port name no container of web declares",
        probes,
        &[false, false, false],
    )
    .await;

    let many = web_from_blocks(
        "many-blocks",
        filler(39_999).chain(std::iter::once(format!("{outsider_ip}/32"))),
    );
    let started = Instant::now();
    policies
        .create(&PostParams::default(), &many)
        .await
        .expect("40 000 ipBlocks fit in a request");
    expect(
        "40 000 ipBlocks, one of them outsider's",
        probes,
        &[false, false, true],
    )
    .await;
    eprintln!(
        "40 000 ipBlocks enforced {:.1} s after the create",
        started.elapsed().as_secs_f64()
    );
}

//! End to end, privileged: a NodePort Service answers a client outside the node. The agent runs
//! with `--uplink <veth>`, the root-namespace end of a veth pair whose other end sits in a
//! client namespace (a private /30, no other route: nothing reaches the machine's real uplink),
//! and `--node-address` on that veth. The client connects to `<node address>:<nodePort>` from its
//! namespace, outside every cgroup and pod, so only `tc_from_netdev` on the uplink translates
//! its traffic, and only the reverse NAT of `tc_from_pod` on the backends' veths makes the
//! replies come from the node address (the client's TCP stack ignores anything else).
//!
//! Checked: every request answers with a backend's hostname and both backends answer; the
//! conntrack table shows the client's own address (no SNAT for local backends) and replies that
//! were translated on their way out of the uplink; an agent restart keeps exactly one program on
//! the uplink; `--uplink off` removes it (the NodePort no longer answers from outside) and naming
//! the uplink again restores it; `externalTrafficPolicy: Local` still answers with local
//! backends; `--uplink` naming a missing interface stops the agent at start, before it loads
//! or attaches anything, with a one-line error naming the flag. Everything is removed at the end.

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use aya::programs::{SchedClassifier, TcAttachType};
use k8s_openapi::api::core::v1::Pod;
use keelson_ebpf_common::{scope, service_flags};
use keelson_node_agent::datapath::lb::list_pinned;
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    lbkit::node_agent,
    netns::NetNs,
    pods::{PodAgent, apply, is_ready, pod_ip},
    run, unique_name,
};
use kube::{Api, api::ListParams};

const REQUESTS: usize = 20;

const MANIFESTS: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: httpd
        image: keelson/httpd:1
        readinessProbe:
          httpGet: {path: /, port: 80}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - name: http
    port: 8080
    targetPort: 80
";

/// A veth pair: `uplink` in the root namespace with the node's address, its peer in a client
/// namespace with the client's, both on a private /30. Dropping it deletes both (and the
/// namespace).
struct ExternalClient {
    ns: NetNs,
    uplink: String,
    node: Ipv4Addr,
    client: Ipv4Addr,
}

impl ExternalClient {
    fn new() -> Self {
        // 10.251.N.0/30, N from the process id: no other test uses 10.251.0.0/16.
        let n = (std::process::id() % 250 + 1) as u8;
        let node = Ipv4Addr::new(10, 251, n, 2);
        let client = Ipv4Addr::new(10, 251, n, 1);
        let ns = NetNs::new("kx");
        let uplink = unique_name("ku");
        let peer = unique_name("kc");
        run(
            "ip",
            &[
                "link",
                "add",
                &uplink,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "netns",
                ns.name(),
            ],
        );
        let this = Self {
            ns,
            uplink,
            node,
            client,
        };
        run(
            "ip",
            &["addr", "add", &format!("{node}/30"), "dev", &this.uplink],
        );
        run("ip", &["link", "set", &this.uplink, "up"]);
        this.ns
            .exec(&["ip", "addr", "add", &format!("{client}/30"), "dev", &peer]);
        this.ns.exec(&["ip", "link", "set", &peer, "up"]);
        this
    }

    /// `n` HTTP requests to `node:port`, each on a new connection from the client namespace,
    /// each bounded by 3 s: per request the peer the connection reports and the trimmed body, or
    /// the error.
    fn requests(&self, port: u16, n: usize) -> Vec<Result<(SocketAddr, String), String>> {
        let target = SocketAddr::V4(SocketAddrV4::new(self.node, port));
        std::thread::scope(|s| {
            s.spawn(|| {
                let _inside = self.ns.enter();
                (0..n).map(|_| request(target)).collect()
            })
            .join()
            .expect("the client thread")
        })
    }
}

impl Drop for ExternalClient {
    fn drop(&mut self) {
        // Deleting the namespace (NetNs's drop, after this) removes the pair; this covers a
        // peer that never reached the namespace.
        let _ = Command::new("ip")
            .args(["link", "del", &self.uplink])
            .output();
    }
}

fn request(target: SocketAddr) -> Result<(SocketAddr, String), String> {
    let timeout = Duration::from_secs(3);
    let mut stream =
        TcpStream::connect_timeout(&target, timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("timeouts: {e}"))?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("receive: {e}"))?;
    let peer = stream.peer_addr().map_err(|e| format!("peer: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
        return Err(format!("not a 200: {head:?}"));
    }
    Ok((peer, body.trim().to_owned()))
}

/// The Ready pods of the `web` Deployment (none being deleted): (name, IP).
async fn ready_backends(pods: &Api<Pod>) -> BTreeSet<(String, String)> {
    pods.list(&ListParams::default().labels("app=web"))
        .await
        .expect("list web pods")
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
        .map(|p| {
            (
                p.metadata.name.clone().unwrap_or_default(),
                pod_ip(p).to_string(),
            )
        })
        .collect()
}

/// Waits until `ok` holds for the external NodePort frontend `address:port` as the agent's maps
/// hold it (backend IPs, EXTERNAL_LOCAL set); returns its `lb list` line.
fn wait_external_frontend(
    agent: &PodAgent,
    address: Ipv4Addr,
    port: u16,
    what: &str,
    ok: impl Fn(&BTreeSet<String>, bool) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let listed = list_pinned(agent.pin_dir()).unwrap_or_default();
        let frontend = listed.iter().find(|f| {
            f.key.address == address && f.key.port == port && f.key.scope == scope::EXTERNAL
        });
        if let Some(frontend) = frontend {
            let backends: BTreeSet<String> = frontend
                .backends
                .iter()
                .filter_map(|b| b.backend.map(|(ip, _)| ip.to_string()))
                .collect();
            if ok(
                &backends,
                frontend.header.flags & service_flags::EXTERNAL_LOCAL != 0,
            ) {
                return frontend.to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{what} within 20 s; lb list:\n{}\nagent log:\n{}",
            listed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n"),
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The names of the TC programs attached at `interface`'s ingress (TCX).
fn ingress_programs(interface: &str) -> Vec<String> {
    let (_, programs) = SchedClassifier::query_tcx(interface, TcAttachType::Ingress)
        .unwrap_or_else(|e| panic!("query the TCX programs of {interface}: {e}"));
    programs
        .iter()
        .map(|p| p.name_as_str().unwrap_or("?").to_owned())
        .collect()
}

/// The interfaces the agent pinned a `tc_from_netdev` link for.
fn uplink_links(agent: &PodAgent) -> Vec<String> {
    let mut links: Vec<String> = std::fs::read_dir(agent.pin_dir().join("links"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_prefix("tc_from_netdev@")
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    links.sort();
    links
}

/// Asserts every request was answered by one of `names` through the node address; returns the
/// distinct answers.
fn assert_served(
    results: &[Result<(SocketAddr, String), String>],
    node: SocketAddr,
    names: &BTreeSet<String>,
    agent: &PodAgent,
) -> BTreeSet<String> {
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "every request from outside the node to {node} is answered; failed: {failed:?}\n\
         agent log:\n{}",
        agent.log()
    );
    let mut answered = BTreeSet::new();
    for (peer, body) in results.iter().flatten() {
        assert_eq!(*peer, node, "the client talks to the node address");
        answered.insert(body.clone());
    }
    assert!(
        answered.is_subset(names),
        "only the backends answer: {answered:?} (backends {names:?})"
    );
    answered
}

/// The conntrack lines (`ct list`) of flows from `client` to `node:port` and of their replies.
fn flows(agent: &PodAgent, client: Ipv4Addr, node: SocketAddr) -> (Vec<String>, Vec<String>) {
    let list = node_agent(&[
        "ct",
        "list",
        "--pin-dir",
        &agent.pin_dir().to_string_lossy(),
    ]);
    let forward = list
        .lines()
        .filter(|l| l.contains(&format!("{client}:")) && l.contains(&format!("-> {node} forward")))
        .map(str::to_owned)
        .collect();
    let reply = list
        .lines()
        .filter(|l| l.contains(&format!("-> {client}:")) && l.contains(&format!("snat to {node}")))
        .map(str::to_owned)
        .collect();
    (forward, reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_port_answers_clients_outside_the_node_through_the_uplink() {
    let outside = ExternalClient::new();
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    let uplink_flags = [
        "--uplink",
        outside.uplink.as_str(),
        "--node-address",
        &outside.node.to_string(),
    ];
    let node_only = ["--node-address", &outside.node.to_string()];
    let mut agent = PodAgent::start(&plane, &uplink_flags);
    let kubectl = Kubectl::new(33, &plane);
    let pods: Api<Pod> = Api::namespaced(plane.client().await, "default");
    apply(&kubectl, plane.data_dir(), "nodeport.yaml", MANIFESTS);

    let deadline = Instant::now() + Duration::from_secs(90);
    let backends = loop {
        let ready = ready_backends(&pods).await;
        if ready.len() == 2 {
            break ready;
        }
        assert!(
            Instant::now() < deadline,
            "2 web pods Ready within 90 s: {ready:?}\nagent log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let names: BTreeSet<String> = backends.iter().map(|(n, _)| n.clone()).collect();
    let ips: BTreeSet<String> = backends.iter().map(|(_, ip)| ip.clone()).collect();
    let node_port: u16 = kubectl
        .run(&[
            "get",
            "service",
            "web",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .trim()
        .parse()
        .expect("the Service got a nodePort");
    let node = SocketAddr::V4(SocketAddrV4::new(outside.node, node_port));
    wait_external_frontend(
        &agent,
        outside.node,
        node_port,
        "the NodePort's external frontend holds both backends",
        |b, local| *b == ips && !local,
    );
    assert_eq!(
        ingress_programs(&outside.uplink),
        ["tc_from_netdev"],
        "the agent attached tc_from_netdev to the uplink's ingress"
    );
    assert_eq!(
        uplink_links(&agent),
        std::slice::from_ref(&outside.uplink),
        "the test's veth is the only uplink (never the machine's)"
    );

    // From outside: DNAT on the uplink, the replies' reverse NAT on the backends' veths.
    let results = outside.requests(node_port, REQUESTS);
    let answered = assert_served(&results, node, &names, &agent);
    assert_eq!(answered, names, "both backends answer {REQUESTS} requests");
    let (forward, reply) = flows(&agent, outside.client, node);
    assert!(
        !forward.is_empty() && forward.iter().all(|l| !l.contains("snat from")),
        "flows from the client's own address, not source-NATed (local backends): {forward:?}"
    );
    let uplink_index = nix::net::if_::if_nametoindex(outside.uplink.as_str()).expect("ifindex");
    assert!(
        reply
            .iter()
            .any(|l| l.contains(" seen") && l.contains(&format!("via=if{uplink_index}"))),
        "the backends' replies were translated and sent out of the uplink: {reply:?}"
    );

    // A restart keeps the pinned link: still one program on the uplink, still answering.
    agent.restart();
    let results = outside.requests(node_port, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut results = results;
    while results.iter().any(Result::is_err) {
        assert!(
            Instant::now() < deadline,
            "the NodePort answers after the agent's restart: {results:?}\nagent log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        results = outside.requests(node_port, 1);
    }
    assert_eq!(
        ingress_programs(&outside.uplink),
        ["tc_from_netdev"],
        "a restart does not stack a second program"
    );

    // `--uplink off`: the program leaves the uplink, and the NodePort no longer answers from
    // outside (the node has no socket on that port: refused).
    agent.restart_with(&node_only);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ingress_programs(&outside.uplink).is_empty() {
        assert!(
            Instant::now() < deadline,
            "--uplink off removes the program from the uplink: {:?}\nagent log:\n{}",
            ingress_programs(&outside.uplink),
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        uplink_links(&agent).is_empty(),
        "the test agents' config file says `uplink: off`: {:?}",
        uplink_links(&agent)
    );
    let results = outside.requests(node_port, 1);
    assert!(
        results.iter().all(Result::is_err),
        "without tc_from_netdev the NodePort does not answer from outside: {results:?}"
    );
    agent.restart_with(&uplink_flags);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut results = outside.requests(node_port, 1);
    while results.iter().any(Result::is_err) {
        assert!(
            Instant::now() < deadline,
            "the NodePort answers again with the uplink named: {results:?}\nagent log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        results = outside.requests(node_port, 1);
    }
    assert_eq!(ingress_programs(&outside.uplink), ["tc_from_netdev"]);

    // externalTrafficPolicy: Local, both backends on this node: still served by both.
    kubectl.run(&[
        "patch",
        "service",
        "web",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Local"}}"#,
    ]);
    wait_external_frontend(
        &agent,
        outside.node,
        node_port,
        "the external frontend turns Local with both (local) backends",
        |b, local| *b == ips && local,
    );
    let results = outside.requests(node_port, REQUESTS);
    let answered = assert_served(&results, node, &names, &agent);
    assert_eq!(answered, names, "both local backends answer with Local");

    // A missing interface: a one-line error naming the flag, at start.
    let missing = unique_name("kn");
    let mut broken = PodAgent::start(&plane, &["--uplink", &missing]);
    let status = broken.wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| !s.success()),
        "an agent with --uplink {missing} stops at start: {status:?}\nlog:\n{}",
        broken.log()
    );
    let expected = format!("keelson-node-agent run: --uplink {missing}: no such network interface");
    assert!(
        broken.log().lines().any(|l| l == expected),
        "the error is one line naming the flag ({expected:?}):\n{}",
        broken.log()
    );
    assert!(
        !broken.pin_dir().exists(),
        "a wrong --uplink is refused before anything is loaded or attached"
    );
    drop(broken);

    kubectl.run(&["delete", "deployment/web", "service/web", "--timeout=60s"]);
    agent.assert_pods_gone_cleanly(&pods).await;
    let uplink = outside.uplink.clone();
    drop(agent);
    drop(outside);
    let left = Command::new("ip")
        .args(["link", "show", &uplink])
        .output()
        .expect("ip link show");
    assert!(!left.status.success(), "the test's uplink veth is gone");
}

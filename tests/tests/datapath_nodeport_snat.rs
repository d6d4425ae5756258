//! Privileged: NodePort traffic from an external client to backends on another node. With
//! `externalTrafficPolicy: Cluster` the node source-NATs the request to its own address (the
//! backends' node has no route back to the client) and translates the answers back; with
//! `Local` a node without local backends refuses. ICMP errors about source-NATed flows reach
//! the client translated back. Real programs on the node namespace's uplink
//! and on its link to the other node, real traffic.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddrV4,
};

use keelson_node_agent::datapath::lb::{self, LoadBalancer, NodeContext, TcHook};
use keelson_tests::{
    lbkit::{Pins, error_chain, exchanges, node_agent, service},
    require_root,
    topology::{
        BACKEND_PORT, EXTERNAL_CLIENTS, NODE_INTERNAL_ADDR, NODE_UPLINK_ADDR, TwoNodeTopology,
        remote_backend_addr,
    },
};
use serde_json::json;

const CLIENT: &str = env!("CARGO_BIN_EXE_keelson-test-client");
const NODE_PORT: u16 = 30080;
const UDP_NODE_PORT: u16 = 30053;
/// A UDP NodePort whose target port nothing listens on: the backend answers with ICMP.
const CLOSED_NODE_PORT: u16 = 30054;
const CLOSED_PORT: u16 = 9;

fn node() -> NodeContext {
    NodeContext {
        node_name: "node-a".into(),
        node_addresses: vec![NODE_UPLINK_ADDR],
    }
}

fn web(policy: &str) -> k8s_openapi::api::core::v1::Service {
    service(json!({
        "type": "NodePort",
        "clusterIP": "10.96.0.60",
        "externalTrafficPolicy": policy,
        "ports": [
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": BACKEND_PORT, "nodePort": NODE_PORT},
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": BACKEND_PORT, "nodePort": UDP_NODE_PORT},
            {"name": "closed", "port": 54, "protocol": "UDP", "targetPort": CLOSED_PORT, "nodePort": CLOSED_NODE_PORT},
        ],
    }))
}

/// Both backends run on `node-b`.
fn remote_endpoints() -> k8s_openapi::api::discovery::v1::EndpointSlice {
    let endpoints: Vec<_> = (0..2)
        .map(|i| {
            json!({
                "addresses": [remote_backend_addr(i).to_string()],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": "node-b",
            })
        })
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [
            {"name": "http", "port": BACKEND_PORT, "protocol": "TCP"},
            {"name": "dns", "port": BACKEND_PORT, "protocol": "UDP"},
            {"name": "closed", "port": CLOSED_PORT, "protocol": "UDP"},
        ],
    }))
    .expect("a valid EndpointSlice")
}

fn start(topology: &TwoNodeTopology, pins: &Pins) -> LoadBalancer {
    let _in_node = topology.node.enter();
    let mut lb =
        LoadBalancer::load(&pins.config()).unwrap_or_else(|e| panic!("load: {}", error_chain(&e)));
    for interface in [&topology.node_uplink_if, &topology.node_remote_if] {
        lb.attach_tc(interface, TcHook::FromNetdev)
            .unwrap_or_else(|e| panic!("attach to {interface}: {}", error_chain(&e)));
    }
    lb
}

fn apply(lb: &mut LoadBalancer, policy: &str) {
    lb.update(
        "default/web",
        lb::frontends(&web(policy), &[&remote_endpoints()], &node()),
    )
    .unwrap_or_else(|e| panic!("update: {}", error_chain(&e)));
}

fn metrics(lb: &LoadBalancer) -> BTreeMap<&'static str, u64> {
    lb.metrics().expect("metrics").into_iter().collect()
}

/// `backend-N from=IP:PORT` -> (name, source address the backend saw, source port).
fn seen_by_backend(reply: &str) -> (String, String, u16) {
    let (name, from) = reply
        .split_once(" from=")
        .unwrap_or_else(|| panic!("not a backend answer: {reply}"));
    let (ip, port) = from
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("not an address: {from}"));
    (
        name.to_owned(),
        ip.to_owned(),
        port.parse().expect("a port"),
    )
}

#[test]
fn node_port_to_backends_on_another_node_is_source_natted_under_cluster_policy() {
    require_root();
    let topology = TwoNodeTopology::new(2);
    let pins = Pins::new();
    let mut lb = start(&topology, &pins);
    apply(&mut lb, "Cluster");
    let target = SocketAddrV4::new(NODE_UPLINK_ADDR, NODE_PORT);

    // Sequential connections: every answer comes from the NodePort, both remote backends serve,
    // and each sees this node's address, never the client's.
    let tcp = exchanges(&topology.run_client(CLIENT, &["tcp", &target.to_string(), "40"]));
    assert_eq!(tcp.len(), 40);
    assert!(
        tcp.iter().all(|(peer, _)| peer == &target.to_string()),
        "answers come from the NodePort: {tcp:?}"
    );
    let seen: Vec<_> = tcp.iter().map(|(_, r)| seen_by_backend(r)).collect();
    let names: BTreeSet<&str> = seen.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(names.len(), 2, "both remote backends serve: {tcp:?}");
    assert!(
        seen.iter()
            .all(|(_, ip, _)| ip == &NODE_INTERNAL_ADDR.to_string()),
        "backends see the node's address as the source: {tcp:?}"
    );

    // Many connections open at once: each gets its own SNAT tuple and its own answers. A port
    // is unique per backend (the reply's conntrack key holds the backend's address), so two
    // flows may share a port towards different backends, as Linux's SNAT allows.
    let parallel =
        exchanges(&topology.run_client(CLIENT, &["tcp-parallel", &target.to_string(), "32"]));
    assert_eq!(parallel.len(), 32, "{parallel:?}");
    let tuples: BTreeSet<(String, u16)> = parallel
        .iter()
        .map(|(_, r)| {
            let (backend, _, port) = seen_by_backend(r);
            (backend, port)
        })
        .collect();
    assert_eq!(
        tuples.len(),
        32,
        "32 concurrent flows, 32 distinct (backend, SNAT port) tuples: {parallel:?}"
    );
    let ports: BTreeSet<u16> = tuples.iter().map(|(_, port)| *port).collect();
    assert!(
        ports.iter().all(|p| *p >= 61_000),
        "SNAT ports come from the SNAT range: {ports:?}"
    );

    // Two clients using the same source port at the same time do not collide.
    let mut a = topology.hold_from(
        CLIENT,
        target,
        SocketAddrV4::new(EXTERNAL_CLIENTS[0], 45_000),
    );
    let mut b = topology.hold_from(
        CLIENT,
        target,
        SocketAddrV4::new(EXTERNAL_CLIENTS[1], 45_000),
    );
    let first_a = a.first.clone();
    let first_b = b.first.clone();
    let (_, _, port_a) = seen_by_backend(&exchanges(std::slice::from_ref(&first_a))[0].1);
    let (_, _, port_b) = seen_by_backend(&exchanges(std::slice::from_ref(&first_b))[0].1);
    assert_ne!(port_a, port_b, "{first_a} / {first_b}");
    for _ in 0..3 {
        assert_eq!(a.exchange(), first_a);
        assert_eq!(b.exchange(), first_b);
    }

    // UDP through the NodePort too.
    let udp_target = SocketAddrV4::new(NODE_UPLINK_ADDR, UDP_NODE_PORT).to_string();
    let udp = exchanges(&topology.run_client(CLIENT, &["udp", &udp_target, "10"]));
    assert!(
        udp.iter().all(|(peer, reply)| peer == &udp_target
            && seen_by_backend(reply).1 == NODE_INTERNAL_ADDR.to_string()),
        "UDP answers come from the NodePort, the backend saw the node: {udp:?}"
    );

    // The backend's ICMP port unreachable about a source-NATed flow reaches the client,
    // translated back: its connected UDP socket is refused, not left waiting.
    let closed = SocketAddrV4::new(NODE_UPLINK_ADDR, CLOSED_NODE_PORT).to_string();
    let refused = topology.run_client(CLIENT, &["udp-connected", &closed, "1"]);
    assert_eq!(
        refused,
        ["error=ConnectionRefused os=111"],
        "the client learns that nothing listens"
    );

    let m = metrics(&lb);
    // 40 + 32 + 2 TCP flows, two UDP flows.
    assert_eq!(m["tc_snat_new_flow"], 76, "{m:?}");
    assert!(m["tc_snat_forwarded"] >= 2 * 74, "{m:?}");
    assert_eq!(m["tc_icmp_rev_nat"], 1, "{m:?}");
    assert_eq!(m["tc_snat_failed"], 0, "{m:?}");
    // Where the kernel's bpf_fib_lookup lacks BPF_FIB_LOOKUP_SRC (5.10), every new flow's
    // source came from the agent's interface addresses; elsewhere none did.
    let fib_source = keelson_node_agent::probe::fib_src::probe_fib_lookup_src()
        .unwrap_or_else(|e| panic!("probing BPF_FIB_LOOKUP_SRC: {e}"));
    let from_map = if fib_source { 0 } else { 76 };
    assert_eq!(m["tc_snat_source_map"], from_map, "{m:?}");

    let pin_dir = pins.path().to_string_lossy().into_owned();
    let ct = node_agent(&["ct", "list", "--pin-dir", &pin_dir]);
    assert!(
        ct.lines().any(
            |l| l.starts_with(&format!("TCP {}:45000 ->", EXTERNAL_CLIENTS[1]))
                && l.contains(&format!("snat from {NODE_INTERNAL_ADDR}:{port_b}"))
        ),
        "ct list shows the SNAT translation:\n{ct}"
    );
    let list = node_agent(&["lb", "list", "--pin-dir", &pin_dir]);
    assert!(
        list.contains(&format!(
            "{NODE_UPLINK_ADDR}:{NODE_PORT}/TCP (external) -> {}:{BACKEND_PORT} (remote)",
            remote_backend_addr(0)
        )),
        "lb list marks the backends of another node:\n{list}"
    );
}

#[test]
fn node_port_under_local_policy_refuses_on_a_node_without_local_backends() {
    require_root();
    let topology = TwoNodeTopology::new(2);
    let pins = Pins::new();
    let mut lb = start(&topology, &pins);
    apply(&mut lb, "Local");
    let target = SocketAddrV4::new(NODE_UPLINK_ADDR, NODE_PORT).to_string();
    let started = std::time::Instant::now();
    let lines = topology.run_client(CLIENT, &["tcp", &target, "3"]);
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("error=ConnectionRefused")),
        "Local with no backend on this node: refused: {lines:?}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
    let m = metrics(&lb);
    assert_eq!(m["tc_no_backend"], 3, "{m:?}");
    assert_eq!(m["tc_snat_new_flow"], 0, "{m:?}");

    // Back to Cluster: the same node now serves through the remote backends.
    apply(&mut lb, "Cluster");
    let tcp = exchanges(&topology.run_client(CLIENT, &["tcp", &target, "4"]));
    assert_eq!(tcp.len(), 4);
}

//! Privileged: per-packet load balancing at TC (DNAT with conntrack, reverse NAT of replies and
//! ICMP errors, NodePort with traffic policies), with the real programs attached in a router
//! namespace and real traffic from a client namespace that is not in any socket-LB cgroup.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddrV4},
};

use keelson_node_agent::datapath::lb::{self, LoadBalancer, NodeContext, TcHook};
use keelson_tests::{
    lbkit::{Pins, error_chain, exchanges, node_agent, service, slice},
    require_root,
    topology::{BACKEND_PORT, CLIENT_ADDR, NODE_ADDR, Topology, backend_name},
};
use serde_json::json;

const CLIENT: &str = env!("CARGO_BIN_EXE_keelson-test-client");
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 50);
const NODE_PORT: u16 = 30080;

fn node() -> NodeContext {
    NodeContext {
        node_name: "node-a".into(),
        node_addresses: vec![NODE_ADDR],
    }
}

/// `web`: TCP 80 and UDP 53 on the VIP (targetPort 8080), NodePort 30080 for TCP.
fn web(policy: &str, udp_target: u16) -> k8s_openapi::api::core::v1::Service {
    service(json!({
        "type": "NodePort",
        "clusterIP": VIP.to_string(),
        "externalTrafficPolicy": policy,
        "ports": [
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": BACKEND_PORT, "nodePort": NODE_PORT},
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": udp_target},
        ],
    }))
}

/// Backends by index with the node each runs on.
fn endpoints(
    backends: &[(usize, &str)],
    udp_target: u16,
) -> k8s_openapi::api::discovery::v1::EndpointSlice {
    let eps: Vec<_> = backends
        .iter()
        .map(|(i, node)| (*i, *node, true, true, false))
        .collect();
    slice(
        json!([
            {"name": "http", "port": BACKEND_PORT, "protocol": "TCP"},
            {"name": "dns", "port": udp_target, "protocol": "UDP"},
        ]),
        &eps,
    )
}

/// Loads the load balancer and attaches `tc_from_pod` (or `tc_from_netdev` on the client side
/// when `external`) in the node namespace.
fn start(topology: &Topology, pins: &Pins, external: bool) -> LoadBalancer {
    let _in_node = topology.node.enter();
    let mut lb =
        LoadBalancer::load(&pins.config()).unwrap_or_else(|e| panic!("load: {}", error_chain(&e)));
    let client_hook = if external {
        TcHook::FromNetdev
    } else {
        TcHook::FromPod
    };
    lb.attach_tc(&topology.node_client_if, client_hook)
        .unwrap_or_else(|e| panic!("attach: {}", error_chain(&e)));
    lb.attach_tc(&topology.node_server_if, TcHook::FromPod)
        .unwrap_or_else(|e| panic!("attach: {}", error_chain(&e)));
    lb
}

fn apply(
    lb: &mut LoadBalancer,
    svc: &k8s_openapi::api::core::v1::Service,
    eps: &k8s_openapi::api::discovery::v1::EndpointSlice,
) {
    lb.update("default/web", lb::frontends(svc, &[eps], &node()))
        .unwrap_or_else(|e| panic!("update: {}", error_chain(&e)));
}

fn metrics(lb: &LoadBalancer) -> BTreeMap<&'static str, u64> {
    lb.metrics().expect("metrics").into_iter().collect()
}

#[test]
fn cluster_ip_through_the_tc_path_reaches_every_backend_and_replies_come_from_the_vip() {
    require_root();
    let topology = Topology::new(3);
    let pins = Pins::new();
    let mut lb = start(&topology, &pins, false);
    apply(
        &mut lb,
        &web("Cluster", BACKEND_PORT),
        &endpoints(&[(0, "node-a"), (1, "node-a"), (2, "node-a")], BACKEND_PORT),
    );

    let vip = SocketAddrV4::new(VIP, 80).to_string();
    let tcp = exchanges(&topology.run_client(CLIENT, &["tcp", &vip, "60"]));
    let names: BTreeSet<&str> = tcp.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(
        names.len(),
        3,
        "60 connections reach every backend: {tcp:?}"
    );
    assert!(tcp.iter().all(|(peer, _)| peer == &vip), "{tcp:?}");

    let dns = SocketAddrV4::new(VIP, 53).to_string();
    let udp = exchanges(&topology.run_client(CLIENT, &["udp", &dns, "30"]));
    assert!(
        udp.iter().all(|(peer, _)| peer == &dns),
        "UDP replies come from the VIP: {udp:?}"
    );
    let names: BTreeSet<&str> = udp.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(
        names.len(),
        1,
        "one UDP flow sticks to one backend through conntrack: {udp:?}"
    );

    let m = metrics(&lb);
    assert_eq!(
        m["tc_new_flow"], 61,
        "60 TCP connections and one UDP flow: {m:?}"
    );
    assert!(m["tc_ct_hit"] >= 60 * 2 + 29, "{m:?}");
    assert!(m["tc_rev_nat"] >= 60 * 2 + 30, "{m:?}");
    assert_eq!(
        m["sock_translated"], 0,
        "the client is not behind socket-LB"
    );

    // What the operator sees.
    let pin_dir = pins.path().to_string_lossy().into_owned();
    let ct = node_agent(&["ct", "list", "--pin-dir", &pin_dir]);
    assert!(
        ct.lines()
            .any(|l| l.starts_with(&format!("UDP {CLIENT_ADDR}:"))
                && l.contains(&format!("-> {VIP}:53 forward dnat to 10.201.0.1"))),
        "ct list shows the UDP flow's translation:\n{ct}"
    );
    assert!(
        ct.lines().filter(|l| l.starts_with("TCP ")).count() >= 2,
        "{ct}"
    );
    let text = node_agent(&["lb", "metrics", "--pin-dir", &pin_dir]);
    assert!(
        text.contains("keelson_datapath_events_total{path=\"tc_new_flow\"} 61"),
        "{text}"
    );
    assert!(
        text.contains("keelson_datapath_map_capacity{map=\"kct_v2\"} 4096"),
        "{text}"
    );
    assert!(
        text.contains("keelson_datapath_conntrack_fill_ratio 0.0"),
        "{text}"
    );
    let list = node_agent(&["lb", "list", "--pin-dir", &pin_dir]);
    assert!(list.contains(&format!("{VIP}:80/TCP -> ")), "{list}");
    assert!(
        list.contains(&format!("{NODE_ADDR}:{NODE_PORT}/TCP (external) -> ")),
        "{list}"
    );
}

#[test]
fn an_agent_restart_keeps_tc_flows_going() {
    require_root();
    let topology = Topology::new(2);
    let pins = Pins::new();
    let mut lb = start(&topology, &pins, false);
    let eps = endpoints(&[(0, "node-a"), (1, "node-a")], BACKEND_PORT);
    apply(&mut lb, &web("Cluster", BACKEND_PORT), &eps);
    let vip = SocketAddrV4::new(VIP, 80);
    let mut held = topology.hold(CLIENT, vip);
    let backend = held.first.clone();
    assert!(
        backend.starts_with(&format!("peer={vip} reply=backend-")),
        "{backend}"
    );

    drop(lb);
    assert_eq!(
        held.exchange(),
        backend,
        "the flow goes on while no agent runs"
    );
    let mut lb = start(&topology, &pins, false);
    apply(&mut lb, &web("Cluster", BACKEND_PORT), &eps);
    assert_eq!(lb.finish_initial_sync().expect("sync"), 0);
    assert_eq!(
        held.exchange(),
        backend,
        "and after the agent is back, on the same backend"
    );
}

#[test]
fn node_port_from_an_external_client_with_cluster_and_local_policies() {
    require_root();
    let topology = Topology::new(3);
    let pins = Pins::new();
    let mut lb = start(&topology, &pins, true);
    let target = SocketAddrV4::new(NODE_ADDR, NODE_PORT).to_string();
    // backend-2 runs on another node.
    let eps = endpoints(&[(0, "node-a"), (1, "node-a"), (2, "node-b")], BACKEND_PORT);

    apply(&mut lb, &web("Cluster", BACKEND_PORT), &eps);
    let tcp = exchanges(&topology.run_client(CLIENT, &["tcp", &target, "60"]));
    assert!(
        tcp.iter().all(|(peer, _)| peer == &target),
        "replies come from the NodePort: {tcp:?}"
    );
    let names: BTreeSet<&str> = tcp.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(
        names.len(),
        3,
        "Cluster: every backend, this node's or not: {tcp:?}"
    );
    assert!(metrics(&lb)["tc_maglev"] >= 60);

    apply(&mut lb, &web("Local", BACKEND_PORT), &eps);
    let tcp = exchanges(&topology.run_client(CLIENT, &["tcp", &target, "60"]));
    assert!(
        tcp.iter().all(|(_, r)| r != &backend_name(2)),
        "Local: only this node's backends: {tcp:?}"
    );
    let names: BTreeSet<&str> = tcp.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(names.len(), 2, "{tcp:?}");

    // The ClusterIP is not exposed to external clients (no external-scope entry for it).
    let vip = SocketAddrV4::new(VIP, 80).to_string();
    let lines = topology.run_client(CLIENT, &["tcp", &vip, "1"]);
    assert!(lines[0].starts_with("error="), "{lines:?}");
}

#[test]
fn an_icmp_error_from_a_backend_reaches_the_client_as_coming_from_the_vip() {
    require_root();
    let topology = Topology::new(1);
    let pins = Pins::new();
    let mut lb = start(&topology, &pins, false);
    // Nothing listens on UDP 9999: the backend answers with ICMP port unreachable.
    apply(
        &mut lb,
        &web("Cluster", 9999),
        &endpoints(&[(0, "node-a")], 9999),
    );
    let dns = SocketAddrV4::new(VIP, 53).to_string();
    let lines = topology.run_client(CLIENT, &["udp-connected", &dns, "2"]);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("error=ConnectionRefused")),
        "the connected socket matches the translated ICMP error: {lines:?}"
    );
    assert!(metrics(&lb)["tc_icmp_rev_nat"] >= 1);
}

#[test]
fn malformed_and_unusual_packets_pass_or_drop_as_documented_and_are_counted() {
    require_root();
    let topology = Topology::new(1);
    let pins = Pins::new();
    let mut lb = start(&topology, &pins, false);
    apply(
        &mut lb,
        &web("Cluster", BACKEND_PORT),
        &endpoints(&[(0, "node-a")], BACKEND_PORT),
    );
    let src = CLIENT_ADDR.to_string();
    let vip = SocketAddrV4::new(VIP, 80).to_string();
    let dns = SocketAddrV4::new(VIP, 53).to_string();

    // IP options: translated like any packet; the backend's SYN-ACK (proof that the translated
    // checksums are right) comes back translated too.
    let before = metrics(&lb);
    let sent = topology.run_client(CLIENT, &["raw", "options", &src, &vip]);
    assert!(sent[0].starts_with("sent="), "{sent:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while metrics(&lb)["tc_rev_nat"] == before["tc_rev_nat"] && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let after = metrics(&lb);
    assert_eq!(after["tc_new_flow"], before["tc_new_flow"] + 1, "{after:?}");
    assert!(
        after["tc_rev_nat"] > before["tc_rev_nat"],
        "the SYN-ACK came back: {after:?}"
    );

    // A fragment is never translated.
    let sent = topology.run_client(CLIENT, &["raw", "fragment", &src, &dns]);
    assert!(sent[0].starts_with("sent="), "{sent:?}");
    let m = metrics(&lb);
    assert_eq!(m["tc_fragment"], after["tc_fragment"] + 1, "{m:?}");
    assert_eq!(m["tc_new_flow"], after["tc_new_flow"]);

    // A later fragment (offset 24, no UDP header in it) is never translated either.
    let sent = topology.run_client(CLIENT, &["raw", "later-fragment", &src, &dns]);
    assert!(sent[0].starts_with("sent="), "{sent:?}");
    let m1 = metrics(&lb);
    assert_eq!(m1["tc_fragment"], m["tc_fragment"] + 1, "{m1:?}");
    assert_eq!(m1["tc_new_flow"], m["tc_new_flow"]);
    let m = m1;

    // An IPv4 header with an IHL below 5 passes untouched (the kernel drops it) and is counted.
    let sent = topology.run_client(CLIENT, &["raw", "bad-ihl", &src, &dns]);
    assert!(sent[0].starts_with("sent="), "{sent:?}");
    let m1 = metrics(&lb);
    assert_eq!(m1["tc_malformed"], m["tc_malformed"] + 1, "{m1:?}");
    assert_eq!(m1["tc_new_flow"], m["tc_new_flow"]);
    let m = m1;

    // A truncated TCP header passes untouched and is counted.
    let sent = topology.run_client(CLIENT, &["raw", "truncated", &src, &vip]);
    assert!(sent[0].starts_with("sent="), "{sent:?}");
    let m2 = metrics(&lb);
    assert_eq!(m2["tc_malformed"], m["tc_malformed"] + 1, "{m2:?}");
    assert_eq!(m2["tc_new_flow"], m["tc_new_flow"]);

    // And the datapath still works.
    let tcp = exchanges(&topology.run_client(CLIENT, &["tcp", &vip, "5"]));
    assert_eq!(tcp.len(), 5);
}

#[test]
fn a_service_without_endpoints_is_rejected_fast_with_icmp_port_unreachable() {
    require_root();
    let topology = Topology::new(1);
    let pins = Pins::new();
    let mut lb = start(&topology, &pins, false);
    apply(
        &mut lb,
        &web("Cluster", BACKEND_PORT),
        &endpoints(&[], BACKEND_PORT),
    );
    let vip = SocketAddrV4::new(VIP, 80).to_string();
    let started = std::time::Instant::now();
    let lines = topology.run_client(CLIENT, &["tcp", &vip, "3"]);
    let elapsed = started.elapsed();
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("error=ConnectionRefused")),
        "TCP to a service without endpoints is refused: {lines:?}"
    );
    assert!(
        elapsed < std::time::Duration::from_secs(2),
        "refused in {elapsed:?}"
    );
    let dns = SocketAddrV4::new(VIP, 53).to_string();
    let lines = topology.run_client(CLIENT, &["udp-connected", &dns, "1"]);
    assert!(lines[0].starts_with("error=ConnectionRefused"), "{lines:?}");
    assert_eq!(metrics(&lb)["tc_no_backend"], 4);
}

//! Privileged: socket-level load balancing (cgroup connect4/sendmsg4/recvmsg4/getpeername4) with
//! the real programs, real traffic between network namespaces this test creates, and Services and
//! EndpointSlices given as the Kubernetes objects the agent consumes.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, SocketAddrV4},
    time::{Duration, Instant},
};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use keelson_node_agent::datapath::lb::{self, LoadBalancer, NodeContext, list_pinned};
use keelson_tests::{
    lbkit::{Pins, error_chain, exchanges, service, slice},
    require_root,
    topology::{BACKEND_PORT, Topology, backend_addr, backend_name},
};
use serde_json::json;

const CLIENT: &str = env!("CARGO_BIN_EXE_keelson-test-client");
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const PORT: u16 = 80;

fn node() -> NodeContext {
    NodeContext {
        node_name: "node-a".into(),
        node_addresses: vec![],
    }
}

fn web(affinity: bool) -> Service {
    let mut spec = json!({
        "clusterIP": VIP.to_string(),
        "clusterIPs": [VIP.to_string()],
        "ports": [
            {"name": "http", "port": PORT, "protocol": "TCP", "targetPort": "web"},
            {"name": "dns", "port": PORT, "protocol": "UDP", "targetPort": BACKEND_PORT},
        ],
    });
    if affinity {
        spec["sessionAffinity"] = json!("ClientIP");
        spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 60}});
    }
    service(spec)
}

/// One slice with the given backends (by index) and their (ready, serving, terminating).
fn web_slice(endpoints: &[(usize, bool, bool, bool)]) -> EndpointSlice {
    let endpoints: Vec<_> = endpoints
        .iter()
        .map(|(i, r, s, t)| (*i, "node-a", *r, *s, *t))
        .collect();
    slice(
        json!([
            {"name": "http", "port": BACKEND_PORT, "protocol": "TCP"},
            {"name": "dns", "port": BACKEND_PORT, "protocol": "UDP"},
        ]),
        &endpoints,
    )
}

fn ready(indices: &[usize]) -> EndpointSlice {
    web_slice(
        &indices
            .iter()
            .map(|i| (*i, true, true, false))
            .collect::<Vec<_>>(),
    )
}

fn apply(lb: &mut LoadBalancer, service: &Service, slice: &EndpointSlice) -> usize {
    let frontends = lb::frontends(service, &[slice], &node());
    lb.update("default/web", frontends)
        .unwrap_or_else(|e| panic!("update: {}", error_chain(&e)))
}

fn start(topology: &Topology, pins: &Pins) -> LoadBalancer {
    let mut lb =
        LoadBalancer::load(&pins.config()).unwrap_or_else(|e| panic!("load: {}", error_chain(&e)));
    lb.attach_cgroup(topology.cgroup.path())
        .unwrap_or_else(|e| panic!("attach: {}", error_chain(&e)));
    lb
}

fn vip() -> SocketAddrV4 {
    SocketAddrV4::new(VIP, PORT)
}

#[test]
fn tcp_and_udp_through_a_cluster_ip_reach_every_backend_and_show_the_vip() {
    require_root();
    let topology = Topology::new(3);
    let pins = Pins::new();
    let mut lb = start(&topology, &pins);
    apply(&mut lb, &web(false), &ready(&[0, 1, 2]));

    let tcp = exchanges(&topology.run_client(CLIENT, &["tcp", &vip().to_string(), "60"]));
    assert_eq!(tcp.len(), 60);
    let names: BTreeSet<&str> = tcp.iter().map(|(_, reply)| reply.as_str()).collect();
    assert_eq!(
        names,
        (0..3)
            .map(backend_name)
            .collect::<BTreeSet<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
        "60 TCP connections through the VIP reach every backend"
    );
    assert!(
        tcp.iter().all(|(peer, _)| peer == &vip().to_string()),
        "getpeername shows the service address: {tcp:?}"
    );

    let udp = exchanges(&topology.run_client(CLIENT, &["udp", &vip().to_string(), "60"]));
    let names: BTreeSet<&str> = udp.iter().map(|(_, reply)| reply.as_str()).collect();
    assert_eq!(
        names.len(),
        3,
        "60 UDP datagrams reach every backend: {udp:?}"
    );
    assert!(
        udp.iter().all(|(peer, _)| peer == &vip().to_string()),
        "UDP replies come from the service address: {udp:?}"
    );

    let metrics: std::collections::BTreeMap<_, _> =
        lb.metrics().expect("metrics").into_iter().collect();
    assert!(metrics["sock_translated"] >= 120, "{metrics:?}");
    assert!(metrics["sock_rev_nat"] >= 120, "{metrics:?}");

    let listed = list_pinned(pins.path()).expect("lb list");
    let text: Vec<String> = listed.iter().map(ToString::to_string).collect();
    assert!(
        text.contains(&format!(
            "{VIP}:{PORT}/TCP -> {}:{BACKEND_PORT}, {}:{BACKEND_PORT}, {}:{BACKEND_PORT}",
            backend_addr(0),
            backend_addr(1),
            backend_addr(2)
        )),
        "lb list shows the service and its backends: {text:?}"
    );
}

#[test]
fn client_ip_affinity_pins_a_client_to_one_backend() {
    require_root();
    let topology = Topology::new(3);
    let pins = Pins::new();
    let mut lb = start(&topology, &pins);
    apply(&mut lb, &web(true), &ready(&[0, 1, 2]));

    let tcp = exchanges(&topology.run_client(CLIENT, &["tcp", &vip().to_string(), "30"]));
    let names: BTreeSet<&str> = tcp.iter().map(|(_, reply)| reply.as_str()).collect();
    assert_eq!(
        names.len(),
        1,
        "affinity keeps one client on one backend: {tcp:?}"
    );
    // A second client process in the same pod (netns) sticks to the same backend.
    let again = exchanges(&topology.run_client(CLIENT, &["tcp", &vip().to_string(), "5"]));
    assert!(
        again
            .iter()
            .all(|(_, reply)| names.contains(reply.as_str()))
    );
    let metrics: std::collections::BTreeMap<_, _> =
        lb.metrics().expect("metrics").into_iter().collect();
    assert!(metrics["affinity_hit"] >= 30, "{metrics:?}");

    // The pinned backend leaves: affinity moves on and never points at it again.
    let pinned = names.iter().next().copied().unwrap_or_default().to_owned();
    let remaining: Vec<usize> = (0..3).filter(|i| backend_name(*i) != pinned).collect();
    apply(&mut lb, &web(true), &ready(&remaining));
    let after = exchanges(&topology.run_client(CLIENT, &["tcp", &vip().to_string(), "10"]));
    assert!(after.iter().all(|(_, reply)| reply != &pinned), "{after:?}");
}

#[test]
fn removed_backend_gets_no_new_connections_while_an_open_one_keeps_working() {
    require_root();
    let topology = Topology::new(3);
    let pins = Pins::new();
    let mut lb = start(&topology, &pins);
    apply(&mut lb, &web(false), &ready(&[0, 1, 2]));

    // Hold connections until one lands on backend-2.
    let mut held = None;
    for _ in 0..50 {
        let connection = topology.hold(CLIENT, vip());
        if connection.first.ends_with(&backend_name(2)) {
            held = Some(connection);
            break;
        }
    }
    let mut held = held.expect("one of 50 connections reaches backend-2");

    // Per frontend (TCP and UDP): at most one slot moved into the hole, the header, the last
    // slot deleted, its affinities forgotten and the backend deleted. Never a rewrite.
    let writes = apply(&mut lb, &web(false), &ready(&[0, 1]));
    assert!(
        writes <= 2 * 5,
        "removing one backend took {writes} map writes"
    );
    let tcp = exchanges(&topology.run_client(CLIENT, &["tcp", &vip().to_string(), "40"]));
    assert!(
        tcp.iter().all(|(_, reply)| reply != &backend_name(2)),
        "no new connection reaches the removed backend: {tcp:?}"
    );
    assert_eq!(
        held.exchange(),
        format!("peer={} reply={}", vip(), backend_name(2)),
        "the open connection to the removed backend keeps working"
    );

    // Terminating but serving: used only when nothing is ready.
    let draining = web_slice(&[(0, false, true, true), (1, false, true, true)]);
    apply(&mut lb, &web(false), &draining);
    let tcp = exchanges(&topology.run_client(CLIENT, &["tcp", &vip().to_string(), "20"]));
    assert!(
        tcp.iter()
            .all(|(_, r)| r == &backend_name(0) || r == &backend_name(1))
    );
    let mixed = web_slice(&[(0, false, true, true), (2, true, true, false)]);
    apply(&mut lb, &web(false), &mixed);
    let tcp = exchanges(&topology.run_client(CLIENT, &["tcp", &vip().to_string(), "20"]));
    assert!(
        tcp.iter().all(|(_, r)| r == &backend_name(2)),
        "a ready backend is preferred over terminating ones: {tcp:?}"
    );
}

#[test]
fn a_service_without_endpoints_refuses_fast() {
    require_root();
    let topology = Topology::new(1);
    let pins = Pins::new();
    let mut lb = start(&topology, &pins);
    apply(&mut lb, &web(false), &ready(&[]));

    let started = Instant::now();
    let lines = topology.run_client(CLIENT, &["tcp", &vip().to_string(), "3"]);
    let elapsed = started.elapsed();
    assert!(
        lines
            .iter()
            .all(|l| l.starts_with("error=PermissionDenied os=1")),
        "connect to a service without endpoints is refused with EPERM: {lines:?}"
    );
    assert!(elapsed < Duration::from_secs(2), "refused in {elapsed:?}");
    let udp = topology.run_client(CLIENT, &["udp", &vip().to_string(), "2"]);
    assert!(
        udp.iter().all(|l| l.starts_with("error=PermissionDenied")),
        "{udp:?}"
    );
    let metrics: std::collections::BTreeMap<_, _> =
        lb.metrics().expect("metrics").into_iter().collect();
    assert_eq!(metrics["sock_no_backend"], 5, "{metrics:?}");

    let listed: Vec<String> = list_pinned(pins.path())
        .expect("lb list")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        listed.contains(&format!("{VIP}:{PORT}/TCP -> (no backends: refused)")),
        "{listed:?}"
    );
}

#[test]
fn an_agent_restart_keeps_translation_and_established_connections() {
    require_root();
    let topology = Topology::new(2);
    let pins = Pins::new();
    let mut lb = start(&topology, &pins);
    apply(&mut lb, &web(false), &ready(&[0, 1]));
    let mut held = topology.hold(CLIENT, vip());
    assert!(
        held.first.starts_with(&format!("peer={}", vip())),
        "{}",
        held.first
    );

    // The agent exits: its process-owned objects go away, pinned maps and links stay.
    drop(lb);
    let during = exchanges(&topology.run_client(CLIENT, &["tcp", &vip().to_string(), "10"]));
    assert_eq!(
        during.len(),
        10,
        "service traffic keeps flowing while no agent runs"
    );
    assert!(held.exchange().starts_with(&format!("peer={}", vip())));

    // The agent comes back: it adopts the maps, and the same desired state changes nothing.
    let mut lb = start(&topology, &pins);
    assert_eq!(
        lb.frontend_count(),
        2,
        "TCP and UDP frontends adopted from the pinned maps"
    );
    let writes = apply(&mut lb, &web(false), &ready(&[0, 1]));
    assert_eq!(
        writes, 0,
        "re-applying the same state after a restart writes nothing"
    );
    assert_eq!(lb.finish_initial_sync().expect("initial sync"), 0);
    assert!(held.exchange().starts_with(&format!("peer={}", vip())));
    let after = exchanges(&topology.run_client(CLIENT, &["tcp", &vip().to_string(), "10"]));
    assert_eq!(after.len(), 10);

    // A Service deleted while the agent was down disappears at the initial sync.
    drop(lb);
    let mut lb = start(&topology, &pins);
    let removed = lb.finish_initial_sync().expect("initial sync");
    assert!(removed > 0);
    assert_eq!(lb.frontend_count(), 0);
    let lines = topology.run_client(CLIENT, &["tcp", &vip().to_string(), "1"]);
    assert!(
        lines[0].starts_with("error="),
        "an untranslated VIP goes nowhere (blackhole): {lines:?}"
    );
}

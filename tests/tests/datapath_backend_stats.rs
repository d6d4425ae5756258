//! Privileged: per-backend connection and byte counters (`kbackstats_v1`) with the real
//! programs and real traffic: connections through a Service address, first on the TC path (a
//! router namespace translates), then through socket-LB (the client's cgroup translates); each
//! backend's counts must match the connections it answered, and `/metrics` and `lb list` show
//! them.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
};

use keelson_node_agent::datapath::lb::{
    self, BackendCounters, DatapathMetrics, LoadBalancer, NodeContext, TcHook,
    read_backend_counters,
};
use keelson_tests::{
    lbkit::{Pins, error_chain, exchanges, node_agent, service, slice},
    require_root,
    topology::{BACKEND_PORT, NODE_ADDR, Topology, backend_addr, backend_name},
};
use serde_json::json;

const CLIENT: &str = env!("CARGO_BIN_EXE_keelson-test-client");
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 70);
const BACKENDS: usize = 3;
/// Connections per phase.
const N: usize = 30;
/// Ethernet, IPv4 and TCP headers without options: the least a TCP packet at TC weighs.
const MIN_TCP_FRAME: u64 = 14 + 20 + 20;

fn node() -> NodeContext {
    NodeContext {
        node_name: "node-a".into(),
        node_addresses: vec![NODE_ADDR],
    }
}

fn apply(lb: &mut LoadBalancer, backends: &[usize]) {
    let svc = service(json!({
        "clusterIP": VIP.to_string(),
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": BACKEND_PORT}],
    }));
    let eps: Vec<_> = backends
        .iter()
        .map(|i| (*i, "node-a", true, true, false))
        .collect();
    let eps = slice(
        json!([{"name": "http", "port": BACKEND_PORT, "protocol": "TCP"}]),
        &eps,
    );
    lb.update("default/web", lb::frontends(&svc, &[&eps], &node()))
        .unwrap_or_else(|e| panic!("update: {}", error_chain(&e)));
}

fn load(topology: &Topology, pins: &Pins) -> LoadBalancer {
    let _in_node = topology.node.enter();
    LoadBalancer::load(&pins.config()).unwrap_or_else(|e| panic!("load: {}", error_chain(&e)))
}

/// The counters of each backend, by its name (`backend-<i>`).
fn counters(pins: &Pins) -> BTreeMap<String, BackendCounters> {
    let rows = read_backend_counters(pins.path())
        .unwrap_or_else(|e| panic!("reading the counters: {}", error_chain(&e)));
    rows.into_iter()
        .map(|row| {
            let i = (0..BACKENDS)
                .find(|i| backend_addr(*i) == row.address)
                .unwrap_or_else(|| panic!("an unknown backend: {row:?}"));
            assert_eq!(row.port, BACKEND_PORT, "{row:?}");
            (backend_name(i), row)
        })
        .collect()
}

/// `N` connections through the VIP; how many each backend answered, by name.
fn connect(topology: &Topology) -> BTreeMap<String, u64> {
    let target = SocketAddrV4::new(VIP, 80).to_string();
    let lines = topology.run_client(CLIENT, &["tcp", &target, &N.to_string()]);
    let mut served = BTreeMap::new();
    for (peer, reply) in exchanges(&lines) {
        assert_eq!(peer, target, "the client sees the VIP");
        *served.entry(reply).or_insert(0) += 1;
    }
    assert_eq!(served.values().sum::<u64>(), N as u64, "{served:?}");
    served
}

/// The entries of the per-backend counter map, as `/metrics` reports its fill.
fn stats_entries(pins: &Pins) -> u64 {
    let metrics = DatapathMetrics::read(pins.path()).expect("metrics");
    metrics
        .maps
        .iter()
        .find(|(name, _, _)| *name == "kbackstats_v1")
        .map(|(_, entries, _)| *entries)
        .expect("the fill of kbackstats_v1")
}

#[test]
fn each_backend_counts_the_connections_it_served_on_the_tc_and_socket_paths() {
    require_root();
    let topology = Topology::new(BACKENDS);
    let pins = Pins::new();
    let mut lb = load(&topology, &pins);
    {
        let _in_node = topology.node.enter();
        for interface in [&topology.node_client_if, &topology.node_server_if] {
            lb.attach_tc(interface, TcHook::FromPod)
                .unwrap_or_else(|e| panic!("attach: {}", error_chain(&e)));
        }
    }
    apply(&mut lb, &[0, 1, 2]);
    assert_eq!(stats_entries(&pins), 3, "one counter entry per backend");
    assert!(
        counters(&pins)
            .values()
            .all(|c| c.stats == Default::default()),
        "new backends start from zero"
    );

    // The TC path: the client's cgroup has no socket-LB program yet.
    let served = connect(&topology);
    let tc = counters(&pins);
    for (name, c) in &tc {
        let answered = served.get(name).copied().unwrap_or(0);
        assert_eq!(
            c.stats.tc_new_flows, answered,
            "{name}: TC new flows = connections it answered ({served:?}; {tc:?})"
        );
        assert_eq!(c.stats.sock_connects, 0, "{name}: no socket-LB yet");
        // Every connection: at least SYN, ACK and FIN towards the backend, SYN-ACK and the
        // reply line (`backend-<i>\n`) back.
        assert!(c.stats.tc_forward_packets >= 3 * answered, "{name}: {c:?}");
        assert!(c.stats.tc_reply_packets >= 2 * answered, "{name}: {c:?}");
        let payload = (name.len() as u64 + 1) * answered;
        assert!(
            c.stats.tc_reply_bytes >= c.stats.tc_reply_packets * MIN_TCP_FRAME + payload,
            "{name}: reply bytes hold the headers and the payload: {c:?}"
        );
        assert!(
            c.stats.tc_forward_bytes >= c.stats.tc_forward_packets * MIN_TCP_FRAME,
            "{name}: {c:?}"
        );
    }
    let flows: u64 = tc.values().map(|c| c.stats.tc_new_flows).sum();
    assert_eq!(flows, N as u64, "the per-backend counts add up: {tc:?}");

    // `/metrics`: labelled with the Service, one series per backend and path.
    let metrics = DatapathMetrics::read(pins.path())
        .expect("metrics")
        .with_owners(lb.backend_owners());
    // Rendered as the agent's `/metrics` renders it.
    let text = keelson_node_agent::metrics::AgentMetrics::new(
        &keelson_node_agent::pods::Metrics::default(),
        &keelson_node_agent::service_sync::ProxyMetrics::default(),
    )
    .render(Some(metrics));
    keelson_testbed::exposition::check(&text).unwrap_or_else(|e| panic!("{e} in:\n{text}"));
    for i in 0..BACKENDS {
        let line = format!(
            "keelson_service_backend_connections_total{{namespace=\"default\",service=\"web\",\
             port=\"80\",protocol=\"TCP\",backend=\"{}:{BACKEND_PORT}\",path=\"tc\"}} {}",
            backend_addr(i),
            served.get(&backend_name(i)).copied().unwrap_or(0)
        );
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }

    // `lb list`: the backend table with CONNECTIONS and BYTES.
    let pin_dir = pins.path().to_string_lossy().into_owned();
    let list = node_agent(&["lb", "list", "--pin-dir", &pin_dir]);
    assert!(list.contains(&format!("{VIP}:80/TCP -> ")), "{list}");
    let header = list
        .lines()
        .find(|l| l.starts_with("BACKEND"))
        .unwrap_or_else(|| panic!("a backend table in:\n{list}"));
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["BACKEND", "ID", "CONNECTIONS", "SOCKET", "TC", "BYTES"]
    );
    for (name, c) in &tc {
        let row = format!("{}:{BACKEND_PORT}/TCP", c.address);
        let columns: Vec<&str> = list
            .lines()
            .find(|l| l.starts_with(&format!("{row} ")))
            .unwrap_or_else(|| panic!("{row} in:\n{list}"))
            .split_whitespace()
            .collect();
        let expected = [
            row.clone(),
            c.id.to_string(),
            served.get(name).copied().unwrap_or(0).to_string(),
            "0".into(),
            c.stats.tc_new_flows.to_string(),
            (c.stats.tc_forward_bytes + c.stats.tc_reply_bytes).to_string(),
        ];
        assert_eq!(columns, expected, "{list}");
    }

    // An agent restart keeps the counts (the entries live in the pinned map).
    drop(lb);
    let mut lb = load(&topology, &pins);
    apply(&mut lb, &[0, 1, 2]);
    assert_eq!(lb.finish_initial_sync().expect("sync"), 0);
    assert_eq!(counters(&pins), tc, "counts survive an agent restart");

    // Socket-LB: the client's connects are translated before TC sees them.
    lb.attach_cgroup(topology.cgroup.path())
        .unwrap_or_else(|e| panic!("attach: {}", error_chain(&e)));
    let served_sock = connect(&topology);
    let sock = counters(&pins);
    for (name, c) in &sock {
        assert_eq!(
            c.stats.sock_connects,
            served_sock.get(name).copied().unwrap_or(0),
            "{name}: socket-LB connects = connections it answered ({served_sock:?}; {sock:?})"
        );
        assert_eq!(
            c.stats.tc_new_flows, tc[name].stats.tc_new_flows,
            "{name}: TC saw no new flow to the VIP"
        );
    }
    assert_eq!(
        sock.values().map(|c| c.stats.sock_connects).sum::<u64>(),
        N as u64
    );

    // A backend that leaves takes its entry along; when it comes back it starts from zero.
    apply(&mut lb, &[0, 1]);
    assert_eq!(
        stats_entries(&pins),
        2,
        "the removed backend's entry is gone"
    );
    assert!(!counters(&pins).contains_key(&backend_name(2)));
    apply(&mut lb, &[0, 1, 2]);
    let again = counters(&pins);
    assert_eq!(
        again[&backend_name(2)].stats,
        Default::default(),
        "a new backend counts from zero"
    );
    assert_eq!(again[&backend_name(0)], sock[&backend_name(0)]);
}

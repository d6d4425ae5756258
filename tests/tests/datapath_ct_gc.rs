//! Privileged: the agent's conntrack GC on a small TC conntrack table. Idle UDP flows fill it
//! past the high-water mark; the GC evicts them (counted) while an established TCP connection
//! that stays active keeps working and keeps its entries; later, flows past their timeout are
//! deleted (counted) and the counters show on `lb metrics`.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use keelson_node_agent::datapath::lb::{
    self, ConntrackGc, CtTimeouts, GcPolicy, LbConfig, LoadBalancer, NodeContext, TcHook,
    list_conntrack,
};
use keelson_tests::{
    lbkit::{Pins, error_chain, node_agent, service, slice},
    require_root,
    topology::{BACKEND_PORT, CLIENT_ADDR, NODE_ADDR, Topology},
};
use serde_json::json;

const CLIENT: &str = env!("CARGO_BIN_EXE_keelson-test-client");
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 90);
const CT_CAPACITY: u32 = 1024;

fn metrics(lb: &LoadBalancer) -> BTreeMap<&'static str, u64> {
    lb.metrics().expect("metrics").into_iter().collect()
}

#[test]
fn under_pressure_the_gc_evicts_idle_flows_and_an_active_connection_keeps_working() {
    require_root();
    let topology = Topology::new(1);
    let pins = Pins::new();
    let config = LbConfig {
        ct: CT_CAPACITY,
        ..pins.config()
    };
    let mut lb = {
        let _in_node = topology.node.enter();
        let mut lb =
            LoadBalancer::load(&config).unwrap_or_else(|e| panic!("load: {}", error_chain(&e)));
        for interface in [&topology.node_client_if, &topology.node_server_if] {
            lb.attach_tc(interface, TcHook::FromPod)
                .unwrap_or_else(|e| panic!("attach: {}", error_chain(&e)));
        }
        lb
    };
    let node = NodeContext {
        node_name: "node-a".into(),
        node_addresses: vec![NODE_ADDR],
    };
    let svc = service(json!({
        "clusterIP": VIP.to_string(),
        "ports": [
            {"name": "http", "port": 80, "protocol": "TCP", "targetPort": BACKEND_PORT},
            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": BACKEND_PORT},
        ],
    }));
    let eps = slice(
        json!([
            {"name": "http", "port": BACKEND_PORT, "protocol": "TCP"},
            {"name": "dns", "port": BACKEND_PORT, "protocol": "UDP"},
        ]),
        &[(0, "node-a", true, true, false)],
    );
    lb.update("default/web", lb::frontends(&svc, &[&eps], &node))
        .unwrap_or_else(|e| panic!("update: {}", error_chain(&e)));

    let policy = GcPolicy {
        timeouts: CtTimeouts {
            other: Duration::from_secs(4),
            ..CtTimeouts::default()
        },
        high_water: 0.3,
        low_water: 0.15,
        evict_idle: Duration::from_millis(1500),
        scan_budget: 4096,
    };
    let mut gc = ConntrackGc::open(pins.path(), policy)
        .unwrap_or_else(|e| panic!("gc: {}", error_chain(&e)));

    // The connection that must survive: established, used every few hundred milliseconds.
    let mut held = topology.hold(CLIENT, SocketAddrV4::new(VIP, 80));
    let first = held.first.clone();
    assert!(first.contains("reply=backend-0"), "{first}");
    let tcp_entries = || {
        list_conntrack(pins.path())
            .expect("ct list")
            .into_iter()
            .filter(|f| f.key.proto == 6)
            .count()
    };
    assert_eq!(tcp_entries(), 2, "one TCP flow, two entries");

    // 200 idle UDP flows (400 entries): past the high-water mark (307 entries), well below the
    // capacity, where the kernel's LRU would start evicting on its own.
    let dns = SocketAddrV4::new(VIP, 53).to_string();
    let filled = topology.run_client(CLIENT, &["udp-flows", &dns, "200"]);
    assert_eq!(filled, ["answered=200"], "every UDP flow was answered");
    let before = list_conntrack(pins.path()).expect("ct list").len();
    assert!(
        before as f64 > 0.3 * f64::from(CT_CAPACITY),
        "the table is past the high-water mark: {before} entries"
    );

    // Let the UDP flows go idle (1.5 s) while the TCP connection stays active.
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(held.exchange(), first);
    }
    let report = gc
        .pass()
        .unwrap_or_else(|e| panic!("gc pass: {}", error_chain(&e)));
    assert!(
        report.wrapped,
        "a small table is read in one pass: {report:?}"
    );
    assert!(report.evicted_flows > 0, "{report:?}");
    assert_eq!(
        report.expired_flows, 0,
        "nothing is past its timeout yet: {report:?}"
    );
    let after = list_conntrack(pins.path()).expect("ct list").len();
    assert!(
        after as f64 <= 0.15 * f64::from(CT_CAPACITY) + 2.0,
        "evicted down to the low-water mark: {before} -> {after} entries ({report:?})"
    );
    assert_eq!(tcp_entries(), 2, "the active connection keeps its entries");
    assert_eq!(held.exchange(), first, "and keeps working");
    let m = metrics(&lb);
    assert_eq!(m["ct_gc_evicted"], report.evicted_flows, "{m:?}");

    // Later, the remaining UDP flows pass their 4 s timeout; the TCP one (6 h) stays.
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(held.exchange(), first);
    }
    let report = gc
        .pass()
        .unwrap_or_else(|e| panic!("gc pass: {}", error_chain(&e)));
    assert!(report.expired_flows > 0, "{report:?}");
    assert_eq!(
        report.evicted_flows, 0,
        "below the high-water mark now: {report:?}"
    );
    let left = list_conntrack(pins.path()).expect("ct list");
    assert_eq!(
        left.len(),
        2,
        "only the TCP connection is left: {:?}",
        left.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    assert_eq!(held.exchange(), first);
    assert!(
        left.iter().any(|f| {
            let line = f.to_string();
            line.starts_with(&format!("TCP {CLIENT_ADDR}:"))
                && line.contains(&format!("-> {VIP}:80 forward dnat to"))
        }),
        "the forward entry of the held connection is there"
    );

    let text = node_agent(&["lb", "metrics", "--pin-dir", &pins.path().to_string_lossy()]);
    let expired = metrics(&lb)["ct_gc_expired"];
    assert!(
        text.contains(&format!(
            "keelson_conntrack_gc_total{{event=\"evicted\"}} {}",
            m["ct_gc_evicted"]
        )) && text.contains(&format!(
            "keelson_conntrack_gc_total{{event=\"expired\"}} {expired}"
        )) && text.contains("keelson_conntrack_gc_total{event=\"passes\"} 2"),
        "{text}"
    );
}

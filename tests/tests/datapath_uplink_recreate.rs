//! Privileged: an uplink deleted and created again while the datapath runs. The node's uplink
//! veth goes away (with its TC program and its address) and comes back under the same name with
//! a new interface index; the agent's uplink watcher (`watch_uplinks`, as `run` starts it)
//! attaches `tc_from_netdev` to the new interface, points the conntrack entries of open flows
//! at it and rewrites the SNAT sources, so NodePort traffic flows again within seconds, a
//! connection opened before goes on, and nothing is restarted.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use aya::maps::{HashMap, Map, MapData};
use keelson_ebpf_common::maps;
use keelson_node_agent::datapath::lb::{self, LoadBalancer, NodeContext, TcHook};
use keelson_tests::{
    lbkit::{Pins, error_chain, exchanges, service},
    netns::NetNs,
    require_root, run,
    topology::{
        BACKEND_PORT, EXTERNAL_CLIENTS, NODE_UPLINK_ADDR, TwoNodeTopology, remote_backend_addr,
    },
    unique_name,
};
use serde_json::json;

const CLIENT: &str = env!("CARGO_BIN_EXE_keelson-test-client");
const NODE_PORT: u16 = 30081;

fn frontends() -> Vec<lb::Frontend> {
    let service = service(json!({
        "type": "NodePort",
        "clusterIP": "10.96.0.61",
        "externalTrafficPolicy": "Cluster",
        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": BACKEND_PORT,
                   "nodePort": NODE_PORT}],
    }));
    let endpoints: Vec<_> = (0..2)
        .map(|i| {
            json!({
                "addresses": [remote_backend_addr(i).to_string()],
                "conditions": {"ready": true, "serving": true, "terminating": false},
                "nodeName": "node-b",
            })
        })
        .collect();
    let slice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-abc", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": BACKEND_PORT, "protocol": "TCP"}],
    }))
    .expect("a valid EndpointSlice");
    let node = NodeContext {
        node_name: "node-a".into(),
        node_addresses: vec![NODE_UPLINK_ADDR],
    };
    lb::frontends(&service, &[&slice], &node)
}

/// `watch_uplinks` on a thread of its own inside the node's namespace; stopped and joined on
/// drop.
struct Watcher {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    fn start(node: &NetNs, lb: Arc<Mutex<LoadBalancer>>, uplinks: Vec<String>) -> Self {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (ready, started) = std::sync::mpsc::channel();
        let path = node.path();
        let thread = std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open the node's namespace");
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .expect("enter the node's namespace");
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let watch = lb::watch_uplinks(lb, uplinks, None);
                tokio::pin!(watch);
                // Its first look at the links happens on the first poll.
                tokio::select! {
                    biased;
                    result = &mut watch => panic!("the watcher stopped: {result:?}"),
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                let _ = ready.send(());
                tokio::select! {
                    result = watch => panic!("the watcher stopped: {result:?}"),
                    _ = stopped => {}
                }
            });
        });
        started
            .recv_timeout(Duration::from_secs(10))
            .expect("the watcher started");
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
            && !std::thread::panicking()
        {
            panic!("the uplink watcher panicked");
        }
    }
}

fn ifindex(ns: &NetNs, name: &str) -> u32 {
    let _in = ns.enter();
    nix::net::if_::if_nametoindex(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The pinned SNAT sources: interface index -> address.
fn snat_sources(pins: &Pins) -> Vec<(u32, Ipv4Addr)> {
    let data = MapData::from_pin(pins.path().join(maps::SNAT_SOURCES)).expect("open ksnatsrc");
    let map = Map::HashMap(data);
    let map: HashMap<_, u32, u32> = HashMap::try_from(&map).expect("a hash map");
    let mut sources: Vec<(u32, Ipv4Addr)> = map
        .iter()
        .filter_map(Result::ok)
        .map(|(i, a)| (i, Ipv4Addr::from(a.to_ne_bytes())))
        .collect();
    sources.sort();
    sources
}

#[test]
fn an_uplink_deleted_and_created_again_serves_node_ports_without_a_restart() {
    require_root();
    let topology = TwoNodeTopology::new(2);
    let pins = Pins::new();
    let uplink = topology.node_uplink_if.clone();
    let lb = {
        let _in_node = topology.node.enter();
        let mut lb = LoadBalancer::load(&pins.config())
            .unwrap_or_else(|e| panic!("load: {}", error_chain(&e)));
        for interface in [&uplink, &topology.node_remote_if] {
            lb.attach_tc(interface, TcHook::FromNetdev)
                .unwrap_or_else(|e| panic!("attach to {interface}: {}", error_chain(&e)));
        }
        lb.update("default/web", frontends())
            .unwrap_or_else(|e| panic!("update: {}", error_chain(&e)));
        Arc::new(Mutex::new(lb))
    };
    let watcher = Watcher::start(
        &topology.node,
        lb.clone(),
        vec![uplink.clone(), topology.node_remote_if.clone()],
    );
    let target = SocketAddrV4::new(NODE_UPLINK_ADDR, NODE_PORT);
    let answered = exchanges(&topology.run_client(CLIENT, &["tcp", &target.to_string(), "5"]));
    assert_eq!(answered.len(), 5);
    let mut held = topology.hold_from(
        CLIENT,
        target,
        SocketAddrV4::new(EXTERNAL_CLIENTS[0], 45_001),
    );
    assert!(
        held.first.starts_with("peer="),
        "a held connection: {}",
        held.first
    );
    let old_index = ifindex(&topology.node, &uplink);
    assert!(
        snat_sources(&pins).contains(&(old_index, NODE_UPLINK_ADDR)),
        "{:?}",
        snat_sources(&pins)
    );

    // The uplink goes (both ends of the veth) and comes back with the same name and addresses.
    topology.node.exec(&["ip", "link", "del", &uplink]);
    let client_if = unique_name("kxc");
    run(
        "ip",
        &[
            "link",
            "add",
            &uplink,
            "netns",
            topology.node.name(),
            "type",
            "veth",
            "peer",
            "name",
            &client_if,
            "netns",
            topology.client.name(),
        ],
    );
    let [c1, c2] = EXTERNAL_CLIENTS;
    topology.client.exec(&[
        "sh",
        "-ec",
        &format!(
            "ip addr add {c1}/24 dev {client_if}; ip addr add {c2}/24 dev {client_if}; \
             ip link set {client_if} up; ip route add default via {NODE_UPLINK_ADDR}"
        ),
    ]);
    topology.node.exec(&[
        "sh",
        "-ec",
        &format!("ip addr add {NODE_UPLINK_ADDR}/24 dev {uplink}; ip link set {uplink} up"),
    ]);
    let recreated = Instant::now();
    let new_index = ifindex(&topology.node, &uplink);
    assert_ne!(old_index, new_index, "a new interface");

    // New connections through the NodePort answer again within seconds.
    loop {
        let line = topology.run_client(CLIENT, &["tcp", &target.to_string(), "1"]);
        if line.iter().all(|l| l.starts_with("peer=")) {
            break;
        }
        assert!(
            recreated.elapsed() < Duration::from_secs(5),
            "5 s after the uplink came back, the NodePort still fails: {line:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "NodePort answered {:.2} s after the uplink came back",
        recreated.elapsed().as_secs_f64()
    );
    let again = exchanges(&topology.run_client(CLIENT, &["tcp", &target.to_string(), "10"]));
    assert_eq!(again.len(), 10, "every connection answers: {again:?}");
    // The connection opened before goes on: its replies leave by the new interface.
    let next = held.exchange();
    assert_eq!(
        next.split_once(" reply=")
            .map(|(_, r)| r.split(" from=").next()),
        held.first
            .split_once(" reply=")
            .map(|(_, r)| r.split(" from=").next()),
        "the held connection answers through the new uplink, from the same backend: {next}"
    );
    // The SNAT sources name the new interface, not the old one.
    let sources = snat_sources(&pins);
    assert!(
        sources.contains(&(new_index, NODE_UPLINK_ADDR)),
        "{sources:?}"
    );
    assert!(sources.iter().all(|(i, _)| *i != old_index), "{sources:?}");
    let metrics: std::collections::BTreeMap<_, _> = lb
        .lock()
        .expect("the datapath")
        .metrics()
        .expect("metrics")
        .into_iter()
        .collect();
    assert_eq!(metrics["tc_snat_failed"], 0, "{metrics:?}");
    drop(watcher);
}

//! Privileged: tunnel routing towards nodes that go away. Node A (this agent's routing, real
//! vxlan device, real pinned `NODE_ROUTES`) routes the pod CIDRs of nodes B and C, two network
//! namespaces with their own collect-metadata vxlan device and a "pod" address listening on TCP.
//! A Node deleted loses its kernel route, its `NODE_ROUTES` entry and its permanent neighbour
//! entry on the vxlan device, while the remaining node is still reached through the tunnel; a
//! Node deleted while no agent ran is cleaned up by the next agent's first update.

use std::{
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::core::v1::Node;
use keelson_node_agent::{
    datapath::lb::LoadBalancer,
    routing::{Routing, RoutingMode, TUNNEL_DEVICE, desired_routes},
};
use keelson_tests::{lbkit::Pins, netns::NetNs, require_root, run, unique_name};
use serde_json::json;

const A: Ipv4Addr = Ipv4Addr::new(10, 220, 1, 1);
/// (name, address, pod CIDR, the pod address listening in it)
const PEERS: [(&str, Ipv4Addr, &str, Ipv4Addr); 2] = [
    (
        "node-b",
        Ipv4Addr::new(10, 220, 1, 2),
        "10.244.2.0/24",
        Ipv4Addr::new(10, 244, 2, 1),
    ),
    (
        "node-c",
        Ipv4Addr::new(10, 220, 2, 2),
        "10.244.3.0/24",
        Ipv4Addr::new(10, 244, 3, 1),
    ),
];
const PORT: u16 = 8080;

fn node(name: &str, cidr: &str, address: Ipv4Addr) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name},
        "spec": {"podCIDR": cidr},
        "status": {"addresses": [{"type": "InternalIP", "address": address.to_string()}]},
    }))
    .expect("a valid Node")
}

/// Node A and its peers; every peer's pod address has a listener.
struct Nodes {
    a: NetNs,
    a_uplink: String,
    _peers: Vec<NetNs>,
    _listeners: Vec<TcpListener>,
}

fn nodes() -> Nodes {
    let a = NetNs::new("krA");
    let mut peers = Vec::new();
    let mut listeners = Vec::new();
    let mut a_uplink = String::new();
    for (i, (_, address, _, pod)) in PEERS.iter().enumerate() {
        let peer = NetNs::new("krP");
        let (a_if, p_if) = (unique_name("kra"), unique_name("krp"));
        run(
            "ip",
            &[
                "link",
                "add",
                &a_if,
                "netns",
                a.name(),
                "type",
                "veth",
                "peer",
                "name",
                &p_if,
                "netns",
                peer.name(),
            ],
        );
        let a_addr = Ipv4Addr::new(10, 220, i as u8 + 1, 1);
        a.exec(&[
            "sh",
            "-ec",
            &format!("ip addr add {a_addr}/24 dev {a_if}; ip link set {a_if} up"),
        ]);
        let o = address.octets();
        peer.exec(&[
            "sh",
            "-ec",
            &format!(
                "ip addr add {address}/24 dev {p_if}; ip link set {p_if} up; \
                 ip route add default via {a_addr}; \
                 echo 0 > /proc/sys/net/ipv4/conf/all/rp_filter; \
                 echo 0 > /proc/sys/net/ipv4/conf/default/rp_filter; \
                 ip link add {TUNNEL_DEVICE} type vxlan external dstport 8472; \
                 ip link set {TUNNEL_DEVICE} address 0e:6b:{:02x}:{:02x}:{:02x}:{:02x} arp off up; \
                 ip addr add {pod}/32 dev lo",
                o[0], o[1], o[2], o[3]
            ),
        ]);
        let _in_peer = peer.enter();
        listeners.push(
            TcpListener::bind(SocketAddrV4::new(*pod, PORT)).expect("listen on the pod address"),
        );
        if i == 0 {
            a_uplink = a_if;
        }
        drop(_in_peer);
        peers.push(peer);
    }
    Nodes {
        a,
        a_uplink,
        _peers: peers,
        _listeners: listeners,
    }
}

/// Whether a TCP connection from node A's namespace (the caller's thread is in it) reaches
/// `pod`.
fn reaches(pod: Ipv4Addr) -> bool {
    TcpStream::connect_timeout(&SocketAddrV4::new(pod, PORT).into(), Duration::from_secs(2)).is_ok()
}

/// Node A's permanent neighbour entries on the vxlan device, keelson's routes and the
/// `NODE_ROUTES` networks.
fn state(nodes: &Nodes, lb: &Mutex<LoadBalancer>) -> (Vec<String>, Vec<String>, Vec<String>) {
    let lines = |args: &[&str]| -> Vec<String> {
        let output = nodes.a.exec(args);
        let mut lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|l| l.split_whitespace().next().unwrap_or_default().to_owned())
            .collect();
        lines.sort();
        lines
    };
    let neighbours = lines(&[
        "ip",
        "neigh",
        "show",
        "dev",
        TUNNEL_DEVICE,
        "nud",
        "permanent",
    ]);
    let routes = lines(&["ip", "route", "show", "proto", "0x6b"]);
    let mut map: Vec<String> = lb
        .lock()
        .expect("the datapath")
        .node_routes()
        .expect("NODE_ROUTES")
        .into_iter()
        .map(|(network, prefix, _)| format!("{network}/{prefix}"))
        .collect();
    map.sort();
    (neighbours, routes, map)
}

fn expect(entries: &[&str]) -> (Vec<String>, Vec<String>, Vec<String>) {
    let networks: Vec<String> = entries
        .iter()
        .map(|c| c.split('/').next().unwrap_or_default().to_owned())
        .collect();
    let cidrs: Vec<String> = entries.iter().map(|c| (*c).to_owned()).collect();
    (networks, cidrs.clone(), cidrs)
}

/// Node A and the peers of `names`, as the API lists them.
fn listed(names: &[&str]) -> Vec<Node> {
    let mut list = vec![node("node-a", "10.244.1.0/24", A)];
    list.extend(
        PEERS
            .iter()
            .filter(|(name, ..)| names.contains(name))
            .map(|(name, address, cidr, _)| node(name, cidr, *address)),
    );
    list
}

#[test]
fn deleted_nodes_lose_their_routes_map_entries_and_tunnel_neighbours() {
    require_root();
    let nodes = nodes();
    let pins = Pins::new();
    let _in_a = nodes.a.enter();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let load = || {
        Arc::new(Mutex::new(
            LoadBalancer::load(&pins.config()).unwrap_or_else(|e| panic!("load: {e}")),
        ))
    };
    let start = |lb: &Arc<Mutex<LoadBalancer>>| {
        runtime
            .block_on(Routing::start(
                RoutingMode::Tunnel,
                &nodes.a_uplink,
                A,
                Some(lb.clone()),
                lb,
            ))
            .unwrap_or_else(|e| panic!("routing: {}", keelson_node_agent::error_chain(&e)))
    };
    let apply = |routing: &mut Routing, names: &[&str]| {
        runtime
            .block_on(routing.apply(&desired_routes(&listed(names), "node-a", None)))
            .unwrap_or_else(|e| panic!("apply: {}", keelson_node_agent::error_chain(&e)));
    };
    let [(_, _, b_cidr, b_pod), (_, _, c_cidr, c_pod)] = PEERS;

    let lb = load();
    let mut routing = start(&lb);
    apply(&mut routing, &["node-b", "node-c"]);
    assert_eq!(state(&nodes, &lb), expect(&[b_cidr, c_cidr]));
    assert!(
        reaches(b_pod) && reaches(c_pod),
        "both nodes through the tunnel"
    );

    // node-c deleted while the agent runs.
    apply(&mut routing, &["node-b"]);
    assert_eq!(
        state(&nodes, &lb),
        expect(&[b_cidr]),
        "node-c's neighbour entry, route and NODE_ROUTES entry are gone"
    );
    assert!(reaches(b_pod), "node-b is still reached through the tunnel");
    assert!(!reaches(c_pod), "node-c's pods are no longer routed");

    // node-c back; then the agent stops, node-c is deleted meanwhile, a new agent starts.
    apply(&mut routing, &["node-b", "node-c"]);
    assert_eq!(state(&nodes, &lb), expect(&[b_cidr, c_cidr]));
    drop(routing);
    drop(lb);
    let lb = load();
    let mut routing = start(&lb);
    assert_eq!(
        state(&nodes, &lb),
        expect(&[b_cidr, c_cidr]),
        "a starting agent changes nothing before its first update"
    );
    apply(&mut routing, &["node-b"]);
    assert_eq!(
        state(&nodes, &lb),
        expect(&[b_cidr]),
        "the leftovers of node-c, deleted while no agent ran, are gone"
    );
    assert!(reaches(b_pod), "node-b is still reached after the restart");
    drop(routing);
    drop(lb);
    // The vxlan device and the routes go with node A's namespace.
}

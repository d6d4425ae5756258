//! Privileged: NetworkPolicy in the eBPF datapath. Pods are network namespaces wired as the
//! node agent wires them, with `tc_from_pod` and `tc_to_pod` attached by the agent's own pod
//! hook; the tests write `IPCACHE`, `ENDPOINTS` and `POLICY` by hand (what the policy compiler
//! will do) and check real TCP and UDP traffic. SCTP, which this host's kernel cannot carry in
//! a test, and a few packets whose fate is easier to see one by one go through
//! `BPF_PROG_TEST_RUN` on hand-built frames.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
    sync::Mutex,
};

use aya::{
    EbpfLoader, TestRun as _, TestRunOptions,
    maps::lpm_trie::Key,
    programs::{SchedClassifier, TcAttachType},
};
use keelson_ebpf_common::{
    IdentityValue, endpoint_flags, identity, maps, policy_direction, proto, skb_mark,
};
use keelson_node_agent::datapath::lb::{self, LoadBalancer, NodeContext, TcHook};
// Not a test target of its own (only top-level files are).
#[path = "datapath_policy/policy_maps.rs"]
mod policy_maps;

use policy_maps::{HasPolicy as _, Policy, Ports, be, ident, target};

use keelson_tests::{
    lbkit::{Pins, error_chain},
    netns::NetNs,
    policykit::{
        GATEWAY, Held, NODE_OUTSIDE_ADDR, OUTSIDE_ADDR, PolicyNode, UDP_PORT, in_ns, pod_addr,
        pod_name, tcp, udp,
    },
    require_root,
};
use serde_json::json;

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;
const OUTSIDE_IDENTITY: u32 = 400;
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

fn pod_ns(node: &PolicyNode, pod: usize) -> &NetNs {
    &node.pods[pod].ns
}

fn ok(reply: Result<String, std::io::ErrorKind>, pod: usize, what: &str) {
    assert_eq!(reply, Ok(pod_name(pod)), "{what}");
}

fn denied<T: std::fmt::Debug>(reply: Result<T, std::io::ErrorKind>, what: &str) {
    assert!(reply.is_err(), "{what}: expected no answer, got {reply:?}");
}

fn delta(before: &BTreeMap<&str, u64>, after: &BTreeMap<&str, u64>, name: &str) -> u64 {
    after[name] - before[name]
}

#[test]
fn ingress_is_denied_by_default_and_allowed_by_identity_port_range_and_any_peer() {
    require_root();
    let node = PolicyNode::new(3, true);
    node.policy().identities(node.pods.len());
    node.policy().endpoint(B, endpoint_flags::INGRESS_ENFORCED);
    let (a, c) = (pod_ns(&node, A), pod_ns(&node, C));

    let m0 = node.metrics();
    denied(tcp(a, target(B, 8080)), "a -> b:8080 with no rule");
    denied(udp(a, target(B, UDP_PORT)), "a -> b UDP with no rule");
    let m1 = node.metrics();
    assert!(delta(&m0, &m1, "policy_denied_ingress") >= 2, "{m1:?}");
    ok(
        tcp(pod_ns(&node, B), target(A, 8080)),
        A,
        "b's egress is not enforced",
    );

    node.policy().allow(
        B,
        ident(A),
        policy_direction::INGRESS,
        proto::TCP,
        Ports::Exact(8080),
    );
    ok(tcp(a, target(B, 8080)), B, "allowed by identity and port");
    denied(tcp(a, target(B, 8081)), "another port");
    denied(tcp(c, target(B, 8080)), "another identity");
    assert!(node.metrics()["policy_allowed_new"] > m1["policy_allowed_new"]);

    node.policy().allow(
        B,
        identity::ANY,
        policy_direction::INGRESS,
        proto::TCP,
        Ports::Exact(8081),
    );
    ok(tcp(c, target(B, 8081)), B, "any peer on 8081");
    ok(tcp(a, target(B, 8081)), B, "any peer on 8081");

    // 9090-9091: the port's first 15 bits.
    node.policy().allow(
        B,
        ident(C),
        policy_direction::INGRESS,
        proto::TCP,
        Ports::Range(9090, 15),
    );
    ok(tcp(c, target(B, 9090)), B, "range start");
    ok(tcp(c, target(B, 9091)), B, "range end");
    denied(tcp(a, target(B, 9090)), "the range is c's");

    node.policy().allow(
        B,
        ident(A),
        policy_direction::INGRESS,
        proto::UDP,
        Ports::Any,
    );
    assert_eq!(
        udp(a, target(B, UDP_PORT)),
        Ok((target(B, UDP_PORT).to_string(), pod_name(B))),
        "any UDP port"
    );
    denied(udp(c, target(B, UDP_PORT)), "UDP is a's");
    node.policy()
        .allow(B, ident(C), policy_direction::INGRESS, 0, Ports::AnyProto);
    assert!(udp(c, target(B, UDP_PORT)).is_ok(), "every protocol for c");

    // From outside the node, routed by the kernel into the pod: judged by tc_to_pod.
    denied(
        tcp(&node.outside, target(B, 8080)),
        "the world is not allowed",
    );
    node.policy().edit(|m| {
        m.ipcache
            .insert(
                &Key::new(24, be(OUTSIDE_ADDR)),
                IdentityValue {
                    identity: OUTSIDE_IDENTITY,
                    _pad: 0,
                },
                0,
            )
            .expect("ipcache insert")
    });
    node.policy().allow(
        B,
        OUTSIDE_IDENTITY,
        policy_direction::INGRESS,
        proto::TCP,
        Ports::Exact(8080),
    );
    ok(
        tcp(&node.outside, target(B, 8080)),
        B,
        "an ipBlock identity",
    );
    let m2 = node.metrics();
    assert!(m2["policy_ct_reply"] > 0, "replies were tracked: {m2:?}");
    assert!(
        m2["tc_redirect_peer"] > 0,
        "pod to pod went by redirect_peer"
    );
}

#[test]
fn egress_is_enforced_and_replies_of_allowed_flows_pass_both_ways() {
    require_root();
    // Without LOCAL_PODS: the node's routing delivers, tc_to_pod sees the judged mark.
    let node = PolicyNode::new(3, false);
    node.policy().identities(node.pods.len());
    let both = endpoint_flags::INGRESS_ENFORCED | endpoint_flags::EGRESS_ENFORCED;
    node.policy().endpoint(A, both);
    node.policy().endpoint(B, both);
    node.policy().allow(
        A,
        ident(B),
        policy_direction::EGRESS,
        proto::TCP,
        Ports::Exact(8080),
    );
    node.policy().allow(
        A,
        ident(B),
        policy_direction::EGRESS,
        proto::UDP,
        Ports::Exact(UDP_PORT),
    );
    node.policy().allow(
        B,
        ident(A),
        policy_direction::INGRESS,
        proto::TCP,
        Ports::Exact(8080),
    );
    node.policy().allow(
        B,
        ident(A),
        policy_direction::INGRESS,
        proto::UDP,
        Ports::Exact(UDP_PORT),
    );
    let (a, b, c) = (pod_ns(&node, A), pod_ns(&node, B), pod_ns(&node, C));

    let m0 = node.metrics();
    // Replies cross b's egress and a's ingress, which allow nothing new.
    ok(tcp(a, target(B, 8080)), B, "a -> b:8080");
    assert!(udp(a, target(B, UDP_PORT)).is_ok(), "a -> b UDP");
    let m1 = node.metrics();
    assert!(delta(&m0, &m1, "policy_ct_reply") >= 2, "{m1:?}");

    denied(tcp(a, target(C, 8080)), "a's egress allows only b");
    let m2 = node.metrics();
    assert!(delta(&m1, &m2, "policy_denied_egress") >= 1, "{m2:?}");
    denied(tcp(a, target(B, 8081)), "a's egress allows only 8080");
    denied(tcp(b, target(A, 8080)), "b's egress allows nothing new");
    denied(tcp(c, target(B, 8080)), "b's ingress allows only a");
    denied(udp(b, target(A, UDP_PORT)), "b -> a UDP");
    denied(tcp(c, target(A, 8080)), "a's ingress allows nothing new");
}

fn web_service(
    backend: usize,
) -> (
    k8s_openapi::api::core::v1::Service,
    k8s_openapi::api::discovery::v1::EndpointSlice,
) {
    let service = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"clusterIP": VIP.to_string(),
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]},
    }))
    .expect("a Service");
    let slice = serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-x", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [pod_addr(backend).to_string()],
                       "conditions": {"ready": true, "serving": true, "terminating": false},
                       "nodeName": "node-a"}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }))
    .expect("an EndpointSlice");
    (service, slice)
}

fn set_service(node: &PolicyNode, backend: usize) {
    let (service, slice) = web_service(backend);
    let context = NodeContext {
        node_name: "node-a".into(),
        node_addresses: vec![NODE_OUTSIDE_ADDR],
    };
    node.lb
        .lock()
        .expect("the datapath lock")
        .update("default/web", lb::frontends(&service, &[&slice], &context))
        .unwrap_or_else(|e| panic!("update: {}", error_chain(&e)));
}

#[test]
fn egress_is_judged_by_the_backend_a_service_address_is_translated_to() {
    require_root();
    let node = PolicyNode::new(3, true);
    node.policy().identities(node.pods.len());
    node.policy().endpoint(A, endpoint_flags::EGRESS_ENFORCED);
    node.policy().endpoint(B, endpoint_flags::INGRESS_ENFORCED);
    node.policy().allow(
        A,
        ident(B),
        policy_direction::EGRESS,
        proto::TCP,
        Ports::Exact(8080),
    );
    node.policy().allow(
        B,
        ident(A),
        policy_direction::INGRESS,
        proto::TCP,
        Ports::Exact(8080),
    );
    let a = pod_ns(&node, A);
    let vip = SocketAddrV4::new(VIP, 80);

    set_service(&node, C);
    let m0 = node.metrics();
    denied(tcp(a, vip), "the ClusterIP's backend c is not allowed");
    let m1 = node.metrics();
    assert!(delta(&m0, &m1, "policy_denied_egress") >= 1, "{m1:?}");
    assert_eq!(
        delta(&m0, &m1, "tc_new_flow"),
        0,
        "a denied flow is not stored in the service conntrack: {m1:?}"
    );

    set_service(&node, B);
    ok(tcp(a, vip), B, "the ClusterIP's backend b is allowed");
    let held = in_ns(a, move || {
        let stream =
            std::net::TcpStream::connect_timeout(&vip.into(), std::time::Duration::from_secs(1))
                .expect("connect to the ClusterIP");
        stream.peer_addr().expect("peer")
    });
    assert_eq!(
        held,
        std::net::SocketAddr::V4(vip),
        "replies come from the ClusterIP"
    );
    assert!(node.metrics()["tc_new_flow"] >= 2);
}

#[test]
fn the_node_always_reaches_its_pods_and_pods_their_node() {
    require_root();
    let node = PolicyNode::new(2, true);
    node.policy().identities(node.pods.len());
    let both = endpoint_flags::INGRESS_ENFORCED | endpoint_flags::EGRESS_ENFORCED;
    node.policy().endpoint(B, both);
    let m0 = node.metrics();
    ok(
        tcp(&node.node, target(B, 8080)),
        B,
        "node -> pod with no rule",
    );
    let m1 = node.metrics();
    assert!(delta(&m0, &m1, "policy_host") >= 1, "{m1:?}");
    denied(
        tcp(pod_ns(&node, A), target(B, 8080)),
        "but a pod is denied",
    );

    // A server of the node on the pods' gateway address.
    let listener = in_ns(&node.node, || {
        std::net::TcpListener::bind(SocketAddrV4::new(GATEWAY, 7070)).expect("bind on the node")
    });
    let server = std::thread::spawn(move || {
        use std::io::Write as _;
        let (mut stream, _) = listener.accept().expect("accept");
        writeln!(stream, "node").expect("answer");
    });
    assert_eq!(
        tcp(pod_ns(&node, B), SocketAddrV4::new(GATEWAY, 7070)),
        Ok("node".to_owned()),
        "pod -> node with no rule"
    );
    server.join().expect("the node's server");
}

#[test]
fn established_flows_keep_going_when_a_policy_stops_allowing_them() {
    require_root();
    let node = PolicyNode::new(2, true);
    node.policy().identities(node.pods.len());
    node.policy().endpoint(B, endpoint_flags::INGRESS_ENFORCED);
    node.policy().allow(
        B,
        ident(A),
        policy_direction::INGRESS,
        proto::TCP,
        Ports::Exact(8080),
    );
    let a = pod_ns(&node, A);
    let mut held = Held::open(a, target(B, 8080));
    assert_eq!(held.first, pod_name(B));

    node.policy().rule(
        B,
        ident(A),
        policy_direction::INGRESS,
        proto::TCP,
        Ports::Exact(8080),
        false,
    );
    let m0 = node.metrics();
    assert_eq!(held.exchange(), Ok(pod_name(B)), "the tracked flow goes on");
    assert_eq!(held.exchange(), Ok(pod_name(B)));
    assert!(delta(&m0, &node.metrics(), "policy_ct_established") >= 2);
    denied(
        tcp(a, target(B, 8080)),
        "a new connection sees the new policy",
    );
}

#[test]
fn a_newly_selected_pod_keeps_tracked_flows_and_loses_untracked_ones() {
    require_root();
    let node = PolicyNode::new(2, true);
    node.policy().identities(node.pods.len());
    let a = pod_ns(&node, A);
    // No entry: b is not tracked.
    let mut untracked = Held::open(a, target(B, 8080));
    // An entry without enforcement: b's flows are tracked from now on.
    node.policy().endpoint(B, 0);
    let mut tracked = Held::open(a, target(B, 8081));

    node.policy().endpoint(B, endpoint_flags::INGRESS_ENFORCED);
    assert_eq!(
        tracked.exchange(),
        Ok(pod_name(B)),
        "tracked before: goes on"
    );
    assert!(
        untracked.exchange().is_err(),
        "not tracked before: judged packet by packet, denied"
    );
    denied(tcp(a, target(B, 8081)), "new connections are denied");
}

const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;
/// `struct __sk_buff` up to `ifindex`: what a test run may set (mark, ingress_ifindex).
const SKB_CTX_LEN: usize = 44;

/// An Ethernet + IPv4 frame around `l4` (checksums are not checked on this path).
fn frame(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4: &[u8], frag_be: u16) -> Vec<u8> {
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let total = (20 + l4.len()) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34]);
    f.extend_from_slice(&frag_be.to_be_bytes());
    f.extend_from_slice(&[64, protocol, 0, 0]);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(l4);
    f
}

/// SCTP common header (ports, verification tag, checksum) and an INIT chunk header.
fn sctp(sport: u16, dport: u16) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&[0; 8]);
    l4.extend_from_slice(&[1, 0, 0, 4]);
    l4
}

fn tcp_syn(sport: u16, dport: u16) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    l4
}

fn udp_datagram(sport: u16, dport: u16) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&12u16.to_be_bytes());
    l4.extend_from_slice(&[0, 0, b'p', b'i', b'n', b'g']);
    l4
}

/// Runs `program` on `frame` with the given mark and input interface; returns the verdict and
/// the mark it left.
fn run(program: &SchedClassifier, frame: &[u8], mark: u32, ingress_ifindex: u32) -> (u32, u32) {
    let mut ctx = [0u8; SKB_CTX_LEN];
    ctx[8..12].copy_from_slice(&mark.to_ne_bytes());
    ctx[36..40].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    // The kernel writes back its whole `struct __sk_buff` (192 bytes on 6.x) or fails.
    let mut ctx_out = [0u8; 256];
    let mut data_out = vec![0u8; frame.len() + 256];
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut data_out),
            ctx_in: Some(&ctx),
            ctx_out: Some(&mut ctx_out),
            ..TestRunOptions::default()
        })
        .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {}", error_chain(&e)));
    let mark_out = u32::from_ne_bytes(ctx_out[8..12].try_into().expect("4 bytes"));
    (result.return_value, mark_out)
}

#[test]
fn sctp_tcp_udp_fragments_and_expiry_judged_through_prog_test_run() {
    require_root();
    let ns = NetNs::new("kpt");
    let _in_ns = ns.enter();
    let pins = Pins::new();
    let lb = Mutex::new(
        LoadBalancer::load(&pins.config()).unwrap_or_else(|e| panic!("load: {}", error_chain(&e))),
    );
    // The same object again, on the same pinned maps, for its program handles.
    let mut loader = EbpfLoader::new();
    let names = maps::PINNED;
    let paths: Vec<_> = names.iter().map(|n| pins.path().join(n)).collect();
    for (name, path) in names.iter().zip(&paths) {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader
        .load(lb::object())
        .unwrap_or_else(|e| panic!("load the object again: {e}"));
    for hook in [TcHook::FromPod, TcHook::ToPod] {
        let program: &mut SchedClassifier = ebpf
            .program_mut(hook.program())
            .expect("the program")
            .try_into()
            .expect("a classifier");
        program.load().expect("load");
        assert_eq!(
            hook.attach_type() == TcAttachType::Egress,
            hook == TcHook::ToPod
        );
    }
    let from_pod: &SchedClassifier = ebpf
        .program(TcHook::FromPod.program())
        .expect("tc_from_pod")
        .try_into()
        .expect("a classifier");
    let to_pod: &SchedClassifier = ebpf
        .program(TcHook::ToPod.program())
        .expect("tc_to_pod")
        .try_into()
        .expect("a classifier");
    let policy = Policy(&lb);
    policy.identities(3);
    let both = endpoint_flags::INGRESS_ENFORCED | endpoint_flags::EGRESS_ENFORCED;
    policy.endpoint(B, both);
    let (a, b) = (pod_addr(A), pod_addr(B));
    let metrics = || -> BTreeMap<&'static str, u64> {
        lb.lock()
            .expect("lock")
            .metrics()
            .expect("metrics")
            .into_iter()
            .collect()
    };

    // SCTP, a -> b:3868 (Diameter): denied, then allowed by port; the reply passes b's egress.
    let m0 = metrics();
    let init = frame(a, b, proto::SCTP, &sctp(40000, 3868), 0);
    assert_eq!(
        run(from_pod, &init, 0, 0).0,
        TC_ACT_SHOT,
        "SCTP with no rule"
    );
    assert_eq!(delta(&m0, &metrics(), "policy_denied_ingress"), 1);
    policy.allow(
        B,
        ident(A),
        policy_direction::INGRESS,
        proto::SCTP,
        Ports::Exact(3868),
    );
    let (verdict, mark) = run(from_pod, &init, 0, 0);
    assert_eq!(verdict, TC_ACT_OK, "SCTP allowed on 3868");
    assert_ne!(
        mark & skb_mark::POLICY_JUDGED,
        0,
        "marked as judged: {mark:#x}"
    );
    let reply = frame(b, a, proto::SCTP, &sctp(3868, 40000), 0);
    assert_eq!(run(from_pod, &reply, 0, 0).0, TC_ACT_OK, "the SCTP reply");
    let other = frame(b, a, proto::SCTP, &sctp(3868, 40001), 0);
    assert_eq!(
        run(from_pod, &other, 0, 0).0,
        TC_ACT_SHOT,
        "not a reply: b's egress"
    );
    let port = frame(a, b, proto::SCTP, &sctp(40000, 3869), 0);
    assert_eq!(
        run(from_pod, &port, 0, 0).0,
        TC_ACT_SHOT,
        "another SCTP port"
    );
    // tc_to_pod: judges unmarked packets from an interface, lets the node's own through.
    assert_eq!(
        run(to_pod, &port, 0, 1).0,
        TC_ACT_SHOT,
        "routed in, unjudged"
    );
    assert_eq!(
        run(to_pod, &port, skb_mark::POLICY_JUDGED, 1).0,
        TC_ACT_OK,
        "already judged"
    );
    assert_eq!(
        run(to_pod, &port, 0, 0).0,
        TC_ACT_OK,
        "from the node itself"
    );
    let truncated = frame(a, b, proto::SCTP, &[0x9c, 0x40], 0);
    let m1 = metrics();
    assert_eq!(
        run(from_pod, &truncated, 0, 0).0,
        TC_ACT_SHOT,
        "truncated SCTP"
    );
    assert_eq!(delta(&m1, &metrics(), "policy_malformed"), 1);

    // TCP and UDP the same way.
    let syn = frame(a, b, proto::TCP, &tcp_syn(40000, 8080), 0);
    assert_eq!(run(from_pod, &syn, 0, 0).0, TC_ACT_SHOT, "TCP with no rule");
    policy.allow(
        B,
        ident(A),
        policy_direction::INGRESS,
        proto::TCP,
        Ports::Exact(8080),
    );
    assert_eq!(run(from_pod, &syn, 0, 0).0, TC_ACT_OK, "TCP allowed");

    let datagram = frame(a, b, proto::UDP, &udp_datagram(41000, UDP_PORT), 0);
    assert_eq!(
        run(from_pod, &datagram, 0, 0).0,
        TC_ACT_SHOT,
        "UDP with no rule"
    );
    policy.allow(
        B,
        ident(A),
        policy_direction::INGRESS,
        proto::UDP,
        Ports::Exact(UDP_PORT),
    );
    assert_eq!(run(from_pod, &datagram, 0, 0).0, TC_ACT_OK, "UDP allowed");
    policy.rule(
        B,
        ident(A),
        policy_direction::INGRESS,
        proto::UDP,
        Ports::Exact(UDP_PORT),
        false,
    );
    assert_eq!(
        run(from_pod, &datagram, 0, 0).0,
        TC_ACT_OK,
        "tracked: goes on"
    );
    // Its entry idle past the UDP timeout (60 s): judged again, denied, and so is its reply.
    policy.edit(|m| {
        let entries: Vec<_> = m.conntrack.iter().filter_map(Result::ok).collect();
        let (key, mut value) = entries
            .into_iter()
            .find(|(k, _)| k.proto == proto::UDP && k.direction == policy_direction::INGRESS)
            .expect("the UDP flow is tracked at b's ingress");
        // Its timestamp is the program's clock (CLOCK_MONOTONIC) of the last packet.
        value.last_seen_ns -= 61_000_000_000;
        m.conntrack.insert(key, value, 0).expect("age the entry");
    });
    assert_eq!(
        run(from_pod, &datagram, 0, 0).0,
        TC_ACT_SHOT,
        "expired: judged again"
    );
    let answer = frame(b, a, proto::UDP, &udp_datagram(UDP_PORT, 41000), 0);
    assert_eq!(run(from_pod, &answer, 0, 0).0, TC_ACT_SHOT, "and its reply");

    // A fragment carries no ports: only a peer allowed on every UDP port may send one.
    let fragment = frame(a, b, proto::UDP, &udp_datagram(41001, UDP_PORT), 0x2000);
    let m2 = metrics();
    assert_eq!(run(from_pod, &fragment, 0, 0).0, TC_ACT_SHOT, "a fragment");
    assert_eq!(delta(&m2, &metrics(), "policy_fragment_denied"), 1);
    policy.allow(
        B,
        ident(A),
        policy_direction::INGRESS,
        proto::UDP,
        Ports::Any,
    );
    assert_eq!(
        run(from_pod, &fragment, 0, 0).0,
        TC_ACT_OK,
        "every UDP port allowed"
    );

    // A pod without an entry is not judged at all.
    let free = frame(a, pod_addr(C), proto::SCTP, &sctp(40000, 1), 0);
    assert_eq!(run(from_pod, &free, 0, 0), (TC_ACT_OK, 0));
}

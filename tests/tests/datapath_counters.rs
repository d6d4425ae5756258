//! Privileged: the embedded TC counter program, loaded from the agent crate, attached to a veth
//! in network namespaces this test creates, counts the traffic sent through it; the agent's
//! netlink TC probe attaches it in a namespace of its own.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::Duration;

use keelson_node_agent::{
    datapath::{self, Direction, IfaceCounterProgram},
    probe::{self, NetlinkTc, Presence},
};
use keelson_tests::{netns::NetNs, require_program, require_root, run, unique_name};

const A_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const B_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const PORT: u16 = 9999;
const PAYLOAD: usize = 100;
/// Ethernet + IPv4 + UDP headers around the payload: what `skb->len` is at TC.
const FRAME_LEN: u64 = 14 + 20 + 8 + PAYLOAD as u64;

#[test]
fn every_program_passes_the_verifier() {
    require_root();
    let reports = datapath::verify_all().unwrap_or_else(|e| panic!("verifier: {e:?}"));
    let names: Vec<_> = reports.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "sock4_connect",
            "sock4_getpeername",
            "sock4_recvmsg",
            "sock4_sendmsg",
            "tc_count_egress",
            "tc_count_ingress",
            "tc_from_netdev",
            "tc_from_pod",
            "tc_to_pod",
        ]
    );
    assert!(reports.iter().all(|r| r.instructions > 0), "{reports:?}");
}

#[test]
fn tc_counter_counts_udp_datagrams_on_a_veth() {
    require_root();
    require_program("ip", "iproute2");
    let a = NetNs::new("kca");
    let b = NetNs::new("kcb");
    let va = unique_name("kva");
    let vb = unique_name("kvb");
    run(
        "ip",
        &[
            "link",
            "add",
            &va,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            &vb,
            "netns",
            b.name(),
        ],
    );
    for (ns, dev, addr) in [(&a, &va, A_ADDR), (&b, &vb, B_ADDR)] {
        // No IPv6 on these links: router solicitations and MLD reports would add packets the
        // test cannot predict.
        ns.exec(&[
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6",
        ]);
        ns.exec(&[
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
        ]);
        ns.exec(&["ip", "addr", "add", &format!("{addr}/24"), "dev", dev]);
        ns.exec(&["ip", "link", "set", dev, "up"]);
    }

    // Load and attach inside `a`; the attachments stay when the thread leaves.
    let mut counters = {
        let _in_a = a.enter();
        let mut counters =
            IfaceCounterProgram::load().unwrap_or_else(|e| panic!("load: {}", error_chain(&e)));
        for direction in [Direction::Ingress, Direction::Egress] {
            counters
                .attach(&va, direction)
                .unwrap_or_else(|e| panic!("attach {direction}: {}", error_chain(&e)));
        }
        counters
    };
    let read = |counters: &mut IfaceCounterProgram, direction| {
        let _in_a = a.enter();
        counters
            .read(&va, direction)
            .unwrap_or_else(|e| panic!("read: {}", error_chain(&e)))
    };

    let receiver = {
        let _in_a = a.enter();
        UdpSocket::bind(SocketAddrV4::new(A_ADDR, PORT)).expect("bind the receiver in a")
    };
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("set a receive timeout");
    let sender = {
        let _in_b = b.enter();
        let s = UdpSocket::bind(SocketAddrV4::new(B_ADDR, 0)).expect("bind the sender in b");
        s.connect(SocketAddrV4::new(A_ADDR, PORT))
            .expect("connect the sender");
        s
    };
    let mut buf = [0u8; 2048];
    // Warm up: the first datagram also resolves ARP, which the counters see too.
    sender
        .send(&[0u8; PAYLOAD])
        .expect("send the warm-up datagram");
    receiver
        .recv(&mut buf)
        .expect("the warm-up datagram arrives");
    let before = read(&mut counters, Direction::Ingress);
    assert!(
        before.packets >= 1,
        "the warm-up datagram went through an ingress hook that counted nothing"
    );

    const DATAGRAMS: u64 = 20;
    for i in 0..DATAGRAMS {
        let payload = [i as u8; PAYLOAD];
        sender.send(&payload).expect("send a datagram");
        let n = receiver.recv(&mut buf).expect("every datagram arrives");
        assert_eq!(&buf[..n], &payload[..], "datagram {i} arrived changed");
    }
    let after = read(&mut counters, Direction::Ingress);
    assert_eq!(
        after.packets - before.packets,
        DATAGRAMS,
        "ingress packets counted for {DATAGRAMS} datagrams (before {before:?}, after {after:?})"
    );
    assert_eq!(
        after.bytes - before.bytes,
        DATAGRAMS * FRAME_LEN,
        "ingress bytes counted for {DATAGRAMS} datagrams of {FRAME_LEN} bytes"
    );
    // `a` only answered ARP: the egress hook saw at least that reply, and no datagram.
    let egress = read(&mut counters, Direction::Egress);
    assert!(
        egress.packets >= 1 && egress.packets < DATAGRAMS,
        "egress saw {egress:?}"
    );

    // Dropping the program detaches it; traffic keeps flowing without it.
    drop(counters);
    sender.send(&[0u8; PAYLOAD]).expect("send after detach");
    receiver
        .recv(&mut buf)
        .expect("traffic still flows after detach");
}

/// The probe `run` and `check` use below 6.6 (no TCX), run here whatever the kernel: a clsact
/// qdisc and a real `cls_bpf` filter in a throwaway namespace. This kernel has both (built in or
/// loaded on demand), so the probe must find them and leave the caller's namespace as it was
/// (how long it takes is no test's business: under TCG loading the program alone takes seconds): a clsact qdisc left on the caller's `lo` would make the second run fail with
/// `EEXIST`.
#[test]
fn the_netlink_tc_probe_finds_clsact_and_cls_bpf_in_a_throwaway_namespace() {
    require_root();
    // The caller sits in a namespace of this test's: were the probe to leak, the host's `lo`
    // would still be safe.
    let caller = NetNs::new("kpr");
    let _in_caller = caller.enter();
    let own = std::fs::read_link("/proc/thread-self/ns/net").expect("this thread's namespace");
    for run in 1..=2 {
        let found = probe::probe_netlink_tc();
        assert_eq!(
            found,
            NetlinkTc {
                clsact: Presence::Present,
                cls_bpf: Presence::Present,
            },
            "run {run}"
        );
        assert_eq!(
            std::fs::read_link("/proc/thread-self/ns/net").expect("this thread's namespace"),
            own,
            "run {run} moved the calling thread to another namespace"
        );
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

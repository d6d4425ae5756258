//! Privileged: the flow view end to end. The NetworkPolicy node of `policykit` (pods as network
//! namespaces, the datapath loaded and attached as the agent does, policy maps written by hand
//! as the compiler would), the agent's own flow reader and `/flows` route running in this
//! process, and the real `keelson-node-agent observe` binary reading them: a dropped flow shows
//! with its 5-tuple, verdict, reason and the policies isolating the pod; `--verdict`, `--last`,
//! `--pod`, `-o json` and `--follow` do what they say, and the per-endpoint counters move.

use std::{
    io::{BufRead as _, BufReader},
    net::Ipv4Addr,
    process::{Command, Stdio},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use keelson_ebpf_common::{endpoint_flags, policy_direction, proto};
use keelson_node_agent::datapath::{
    flows::{FlowRecord, FlowStore, reader, store},
    policy::{Direction, PolicyTables, RuleRef},
};
#[expect(
    dead_code,
    reason = "shared with datapath_policy, which uses every port shape"
)]
#[path = "datapath_policy/policy_maps.rs"]
mod policy_maps;

use policy_maps::{HasPolicy as _, Ports, ident, target};

use keelson_tests::{
    lbkit::{node_agent, node_agent_binary},
    policykit::{PolicyNode, UDP_PORT, pod_addr, tcp, udp},
    require_root,
};

const A: usize = 0;
const B: usize = 1;
const C: usize = 2;

fn tables() -> PolicyTables {
    let mut t = PolicyTables::default();
    for (i, name) in ["pod-a", "pod-b", "pod-c"].into_iter().enumerate() {
        t.pods
            .insert(pod_addr(i), ("default".to_owned(), name.to_owned()));
    }
    // policy_maps writes every rule with id 7.
    t.rules.insert(
        7,
        RuleRef {
            namespace: "default".into(),
            name: "allow-a".into(),
            direction: Direction::Ingress,
            index: 0,
        },
    );
    t.selected_by.insert(
        (pod_addr(B), Direction::Ingress),
        vec!["default/allow-a".into()],
    );
    t
}

fn json_lines(text: &str) -> Vec<FlowRecord> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// `observe` with `args` until `done` holds for its records (or 5 s pass).
fn observe_until(
    server: &str,
    args: &[&str],
    done: impl Fn(&[FlowRecord]) -> bool,
) -> Vec<FlowRecord> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut all = vec!["observe", "--server", server, "-o", "json"];
        all.extend_from_slice(args);
        let records = json_lines(&node_agent(&all));
        if done(&records) || Instant::now() > deadline {
            return records;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn observe_shows_drops_with_their_policy_and_counters_move() {
    require_root();
    let node = PolicyNode::new(3, true);
    node.policy().identities(node.pods.len());
    node.policy().endpoint(B, endpoint_flags::INGRESS_ENFORCED);
    node.policy().allow(
        B,
        ident(A),
        policy_direction::INGRESS,
        proto::TCP,
        Ports::Exact(8080),
    );

    // The agent's half, in this process: the reader and the /flows route.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let flow_store = Arc::new(FlowStore::new(store::DEFAULT_CAPACITY));
    let policy_tables = Arc::new(RwLock::new(tables()));
    let pins = node.pins.path().to_path_buf();
    runtime.spawn({
        let (flow_store, policy_tables, pins) =
            (flow_store.clone(), policy_tables.clone(), pins.clone());
        async move {
            if let Err(e) = reader::run(&pins, &flow_store, &policy_tables).await {
                panic!("flow reader: {}", keelson_tests::lbkit::error_chain(&e));
            }
        }
    });
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let server = listener.local_addr().expect("address").to_string();
    runtime.spawn(async move { axum::serve(listener, store::routes(flow_store)).await });

    let (a, c) = (&node.pods[A].ns, &node.pods[C].ns);
    assert_eq!(tcp(a, target(B, 8080)), Ok("pod-b".to_owned()), "allowed");
    assert!(tcp(c, target(B, 8080)).is_err(), "c is not allowed");
    assert!(udp(a, target(B, UDP_PORT)).is_err(), "UDP is not allowed");

    // Every drop, with its 5-tuple, reason and the isolating policy.
    let dropped = observe_until(&server, &["--verdict", "dropped"], |r| {
        r.iter().any(|r| r.proto == "UDP")
    });
    let tcp_drop = dropped
        .iter()
        .find(|r| r.proto == "TCP")
        .unwrap_or_else(|| panic!("the TCP drop in {dropped:?}"));
    assert_eq!(tcp_drop.source.ip, pod_addr(C));
    assert_eq!(tcp_drop.source.pod.as_deref(), Some("default/pod-c"));
    assert_ne!(tcp_drop.source.port, 0);
    assert_eq!(
        (tcp_drop.destination.ip, tcp_drop.destination.port),
        (pod_addr(B), 8080)
    );
    assert_eq!(tcp_drop.reason, "policy_denied_ingress");
    assert_eq!(tcp_drop.direction, "ingress");
    assert_eq!(tcp_drop.policies, ["default/allow-a"]);
    assert_eq!(tcp_drop.peer_identity, ident(C));
    assert!(
        dropped
            .iter()
            .all(|r| r.verdict == keelson_node_agent::datapath::flows::FlowVerdict::Dropped),
        "{dropped:?}"
    );

    // --last 1: the newest drop only (the UDP datagram, sent last).
    let last = json_lines(&node_agent(&[
        "observe",
        "--server",
        &server,
        "-o",
        "json",
        "--verdict",
        "dropped",
        "--last",
        "1",
    ]));
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(
        (
            last[0].proto.as_str(),
            last[0].destination.port,
            last[0].source.ip
        ),
        ("UDP", UDP_PORT, pod_addr(A))
    );

    // The allowed flow: its first packet, with the rule that allowed it; no drop listed.
    let allowed = json_lines(&node_agent(&[
        "observe",
        "--server",
        &server,
        "-o",
        "json",
        "--verdict",
        "allowed",
    ]));
    let first = allowed
        .iter()
        .find(|r| r.source.ip == pod_addr(A) && r.destination.port == 8080)
        .unwrap_or_else(|| panic!("a -> b:8080 in {allowed:?}"));
    assert_eq!(first.rule.as_deref(), Some("default/allow-a ingress[0]"));
    assert_eq!(first.reason, "policy_allowed_new");
    assert_eq!(
        allowed
            .iter()
            .filter(|r| r.destination.port == 8080)
            .count(),
        1,
        "established packets are no new flows: {allowed:?}"
    );

    // The table, for one pod.
    let table = node_agent(&["observe", "--server", &server, "--pod", "default/pod-c"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("TIME") && lines[0].ends_with("POLICY"),
        "{table}"
    );
    assert_eq!(lines.len(), 2, "pod-c sent one flow: {table}");
    for part in [
        "default/pod-c:",
        "default/pod-b:8080",
        "TCP",
        "DROPPED",
        "policy_denied_ingress",
        "no rule of default/allow-a allows it (ingress)",
    ] {
        assert!(lines[1].contains(part), "{part} in {table}");
    }

    // --follow: a drop after the command started arrives on its open output.
    let mut follower = Command::new(node_agent_binary())
        .args([
            "observe",
            "--server",
            &server,
            "-o",
            "json",
            "--follow",
            "--verdict",
            "dropped",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("observe --follow");
    let stdout = follower.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(tcp(c, target(B, 9090)).is_err());
    let followed = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("a followed drop");
        let record: FlowRecord = serde_json::from_str(&line).expect("a record");
        if record.destination.port == 9090 {
            break record;
        }
    };
    follower.kill().expect("stop the follower");
    let _ = follower.wait();
    assert_eq!(followed.source.pod.as_deref(), Some("default/pod-c"));

    // Per-endpoint counters: b's ingress passed and dropped packets; a is no endpoint.
    let counts = reader::read_endpoint_counts(&pins).expect("endpoint counters");
    let packets = |ip: Ipv4Addr, direction: &str, verdict: &str| {
        counts
            .iter()
            .filter(|c| c.endpoint == ip && c.direction == direction && c.verdict == verdict)
            .map(|c| c.packets)
            .sum::<u64>()
    };
    assert!(
        packets(pod_addr(B), "ingress", "dropped") >= 3,
        "{counts:?}"
    );
    assert!(
        packets(pod_addr(B), "ingress", "allowed") >= 3,
        "{counts:?}"
    );
    assert_eq!(packets(pod_addr(A), "egress", "allowed"), 0, "{counts:?}");
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(reader::EndpointStats {
        pin_dir: pins.clone(),
        tables: policy_tables.clone(),
    }));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    keelson_testbed::exposition::check(&text).unwrap_or_else(|e| panic!("{e} in:\n{text}"));
    assert!(
        text.contains(
            "keelson_policy_endpoint_packets_total{namespace=\"default\",pod=\"pod-b\",\
             direction=\"ingress\",verdict=\"dropped\"}"
        ),
        "{text}"
    );
    // Once b is no endpoint any more, its counters go.
    node.policy()
        .edit(|m| m.endpoints.remove(&policy_maps::be(pod_addr(B))))
        .expect("endpoint remove");
    assert!(reader::prune_stats(&pins).expect("prune") >= 2);
    assert!(
        reader::read_endpoint_counts(&pins)
            .expect("endpoint counters")
            .is_empty()
    );
    runtime.shutdown_timeout(Duration::from_secs(1));
}

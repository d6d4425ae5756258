use std::{net::Ipv4Addr, sync::Arc};

use keelson_ebpf_common::{FlowEvent, flow_verdict, identity, metric, policy_direction, proto};

use super::{
    client::{ObserveRequest, observe},
    reader::{EndpointCount, encode_endpoint_counts},
    record::{decode, describe, policy_text, table_header, table_row},
    store::routes,
    *,
};
use crate::datapath::policy::{Direction, PolicyTables, RuleRef};

const A: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 11);
const B: Ipv4Addr = Ipv4Addr::new(10, 244, 0, 12);

fn be(a: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(a.octets())
}

fn tables() -> PolicyTables {
    let mut t = PolicyTables::default();
    t.pods.insert(A, ("default".into(), "pod-a".into()));
    t.pods.insert(B, ("prod".into(), "pod-b".into()));
    t.rules.insert(
        7,
        RuleRef {
            namespace: "prod".into(),
            name: "allow-web".into(),
            direction: Direction::Ingress,
            index: 1,
        },
    );
    t.selected_by.insert(
        (B, Direction::Ingress),
        vec!["prod/allow-web".into(), "prod/deny-all".into()],
    );
    t
}

fn event(verdict: u8, reason: u32, rule_id: u32) -> FlowEvent {
    FlowEvent {
        time_ns: 5_000_000_000,
        saddr_be: be(A),
        daddr_be: be(B),
        sport_be: 40_000u16.to_be(),
        dport_be: 8080u16.to_be(),
        proto: proto::TCP,
        verdict,
        direction: policy_direction::INGRESS,
        _pad: 0,
        reason,
        endpoint_be: be(B),
        peer_identity: 300,
        rule_id,
    }
}

fn bytes(e: &FlowEvent) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(e.time_ns.to_ne_bytes());
    out.extend(e.saddr_be.to_ne_bytes());
    out.extend(e.daddr_be.to_ne_bytes());
    out.extend(e.sport_be.to_ne_bytes());
    out.extend(e.dport_be.to_ne_bytes());
    out.extend([e.proto, e.verdict, e.direction, e._pad]);
    out.extend(e.reason.to_ne_bytes());
    out.extend(e.endpoint_be.to_ne_bytes());
    out.extend(e.peer_identity.to_ne_bytes());
    out.extend(e.rule_id.to_ne_bytes());
    out
}

#[test]
fn ring_buffer_bytes_decode_to_the_kernel_struct() {
    let e = event(flow_verdict::DROPPED, metric::POLICY_DENIED_INGRESS, 0);
    let raw = bytes(&e);
    assert_eq!(raw.len(), std::mem::size_of::<FlowEvent>());
    assert_eq!(decode(&raw), Some(e));
    assert_eq!(decode(&raw[..raw.len() - 1]), None, "a short record");
}

#[test]
fn a_drop_names_the_pods_the_reason_and_the_isolating_policies() {
    // 1 000 000 s after boot's monotonic zero at 5 s: 1970-01-12T13:46:45Z.
    let r = describe(
        &event(flow_verdict::DROPPED, metric::POLICY_DENIED_INGRESS, 0),
        &tables(),
        1_000_000_000_000_000,
    );
    assert_eq!(r.verdict, FlowVerdict::Dropped);
    assert_eq!(r.reason, "policy_denied_ingress");
    assert_eq!(r.direction, "ingress");
    assert_eq!(r.proto, "TCP");
    assert_eq!(r.time, "1970-01-12T13:46:45Z");
    assert_eq!(
        (r.source.ip, r.source.port, r.source.pod.as_deref()),
        (A, 40_000, Some("default/pod-a"))
    );
    assert_eq!(
        (
            r.destination.ip,
            r.destination.port,
            r.destination.pod.as_deref()
        ),
        (B, 8080, Some("prod/pod-b"))
    );
    assert_eq!(r.rule, None);
    assert_eq!(r.policies, ["prod/allow-web", "prod/deny-all"]);
    assert_eq!(
        policy_text(&r),
        "no rule of prod/allow-web,prod/deny-all allows it (ingress)"
    );
    let row = table_row(&r);
    for part in [
        "default/pod-a:40000",
        "prod/pod-b:8080",
        " TCP ",
        "DROPPED",
        "policy_denied_ingress",
    ] {
        assert!(row.contains(part), "{part} in {row}");
    }
    assert!(table_header().starts_with("TIME"));
    // One JSON object, the fields a script reads.
    let json: serde_json::Value = serde_json::to_value(&r).expect("json");
    assert_eq!(json["verdict"], "dropped");
    assert_eq!(json["destination"]["port"], 8080);
    assert_eq!(json["policies"][1], "prod/deny-all");
    assert!(json.get("rule").is_none());
}

#[test]
fn an_allowed_flow_names_its_rule_and_node_traffic_says_so() {
    let r = describe(
        &event(flow_verdict::ALLOWED, metric::POLICY_ALLOWED_NEW, 7),
        &tables(),
        0,
    );
    assert_eq!(r.verdict, FlowVerdict::Allowed);
    assert_eq!(r.rule.as_deref(), Some("prod/allow-web ingress[1]"));
    assert!(
        r.policies.is_empty(),
        "only drops list the isolating policies"
    );
    assert_eq!(policy_text(&r), "allowed by prod/allow-web ingress[1]");

    let mut host = event(flow_verdict::ALLOWED, metric::POLICY_HOST, 0);
    host.saddr_be = be(Ipv4Addr::new(10, 244, 0, 1));
    host.peer_identity = identity::HOST;
    let r = describe(&host, &tables(), 0);
    assert_eq!(r.reason, "policy_host");
    assert_eq!(r.source.pod, None);
    assert!(table_row(&r).contains("10.244.0.1:40000"));
    assert_eq!(policy_text(&r), "node traffic (always allowed)");

    // ICMP shows no port; an unknown endpoint's drop says the policies are not known.
    let mut icmp = event(flow_verdict::DROPPED, metric::POLICY_DENIED_EGRESS, 0);
    icmp.proto = proto::ICMP;
    icmp.direction = policy_direction::EGRESS;
    icmp.endpoint_be = be(A);
    let r = describe(&icmp, &tables(), 0);
    assert!(
        table_row(&r).contains("default/pod-a "),
        "{}",
        table_row(&r)
    );
    assert_eq!(policy_text(&r), "egress isolated (policies not known yet)");
}

#[test]
fn filters_match_either_side_and_the_verdict() {
    let t = tables();
    let drop = describe(
        &event(flow_verdict::DROPPED, metric::POLICY_DENIED_INGRESS, 0),
        &t,
        0,
    );
    let allow = describe(
        &event(flow_verdict::ALLOWED, metric::POLICY_ALLOWED_NEW, 7),
        &t,
        0,
    );
    let f = |pod: Option<&str>, verdict| FlowFilter {
        pod: pod.map(str::to_owned),
        verdict,
    };
    assert!(f(None, None).matches(&drop));
    assert!(f(Some("default/pod-a"), None).matches(&drop), "the source");
    assert!(
        f(Some("prod/pod-b"), None).matches(&drop),
        "the destination"
    );
    assert!(
        !f(Some("prod/pod-a"), None).matches(&drop),
        "namespace counts"
    );
    assert!(f(None, Some(FlowVerdict::Dropped)).matches(&drop));
    assert!(!f(None, Some(FlowVerdict::Dropped)).matches(&allow));
    assert_eq!("DROPPED".parse::<FlowVerdict>(), Ok(FlowVerdict::Dropped));
    assert!("denied".parse::<FlowVerdict>().is_err());
}

#[test]
fn the_store_keeps_the_last_records_and_snapshots_the_last_matching() {
    let store = FlowStore::new(3);
    let t = tables();
    for port in [1u16, 2, 3, 4] {
        let mut e = event(flow_verdict::DROPPED, metric::POLICY_DENIED_INGRESS, 0);
        e.dport_be = port.to_be();
        if port == 3 {
            e.verdict = flow_verdict::ALLOWED;
        }
        store.push(describe(&e, &t, 0));
    }
    let ports = |records: Vec<Arc<FlowRecord>>| -> Vec<u16> {
        records.iter().map(|r| r.destination.port).collect()
    };
    assert_eq!(
        ports(store.snapshot(&FlowFilter::default(), None).0),
        [2, 3, 4]
    );
    let dropped = FlowFilter {
        verdict: Some(FlowVerdict::Dropped),
        ..FlowFilter::default()
    };
    assert_eq!(ports(store.snapshot(&dropped, None).0), [2, 4]);
    assert_eq!(ports(store.snapshot(&dropped, Some(1)).0), [4]);
}

#[test]
fn the_request_path_carries_the_flags() {
    assert_eq!(ObserveRequest::default().path(), "/flows");
    let request = ObserveRequest {
        filter: FlowFilter {
            pod: Some("prod/web 1".into()),
            verdict: Some(FlowVerdict::Dropped),
        },
        last: Some(5),
        follow: true,
    };
    assert_eq!(
        request.path(),
        "/flows?pod=prod/web%201&verdict=dropped&last=5&follow=true"
    );
}

/// The agent's route and the CLI's client together: a snapshot, then records pushed while
/// following arrive on the open response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_reads_the_served_records_and_follows_new_ones() {
    let store = Arc::new(FlowStore::new(16));
    let t = tables();
    store.push(describe(
        &event(flow_verdict::ALLOWED, metric::POLICY_ALLOWED_NEW, 7),
        &t,
        0,
    ));
    store.push(describe(
        &event(flow_verdict::DROPPED, metric::POLICY_DENIED_INGRESS, 0),
        &t,
        0,
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let served = store.clone();
    tokio::spawn(async move { axum::serve(listener, routes(served)).await });

    let request = ObserveRequest {
        filter: FlowFilter {
            verdict: Some(FlowVerdict::Dropped),
            ..FlowFilter::default()
        },
        last: None,
        follow: false,
    };
    let got = tokio::task::spawn_blocking(move || {
        let mut got = Vec::new();
        observe(address, &request, |r| got.push(r)).expect("observe");
        got
    })
    .await
    .expect("join");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].reason, "policy_denied_ingress");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn following_streams_records_pushed_after_the_request() {
    let store = Arc::new(FlowStore::new(16));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn({
        let store = store.clone();
        async move { axum::serve(listener, routes(store)).await }
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let request = ObserveRequest {
        follow: true,
        ..ObserveRequest::default()
    };
    // The follower runs until the test ends.
    std::thread::spawn(move || {
        let _ = observe(address, &request, |r| {
            let _ = tx.send(r);
        });
    });
    let t = tables();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let got = loop {
        store.push(describe(
            &event(flow_verdict::DROPPED, metric::POLICY_DENIED_INGRESS, 0),
            &t,
            0,
        ));
        match tokio::time::timeout(std::time::Duration::from_millis(200), rx.recv()).await {
            Ok(Some(record)) => break record,
            _ => assert!(tokio::time::Instant::now() < deadline, "nothing followed"),
        }
    };
    assert_eq!(got.destination.pod.as_deref(), Some("prod/pod-b"));
}

#[test]
fn endpoint_counters_are_a_valid_exposition_named_by_pod() {
    let counts = [
        EndpointCount {
            endpoint: B,
            direction: "ingress",
            verdict: "dropped",
            packets: 3,
        },
        EndpointCount {
            endpoint: B,
            direction: "ingress",
            verdict: "allowed",
            packets: 10,
        },
        // No pod known: left out.
        EndpointCount {
            endpoint: Ipv4Addr::new(10, 1, 1, 1),
            direction: "egress",
            verdict: "allowed",
            packets: 1,
        },
    ];
    #[derive(Debug)]
    struct Fixed(Vec<EndpointCount>, PolicyTables);
    impl prometheus_client::collector::Collector for Fixed {
        fn encode(
            &self,
            mut encoder: prometheus_client::encoding::DescriptorEncoder,
        ) -> Result<(), std::fmt::Error> {
            encode_endpoint_counts(&self.0, &self.1, &mut encoder)
        }
    }
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Fixed(counts.to_vec(), tables())));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    keelson_testbed::exposition::check(&text).unwrap_or_else(|e| panic!("{e} in:\n{text}"));
    assert!(text.contains(
        "keelson_policy_endpoint_packets_total{namespace=\"prod\",pod=\"pod-b\",direction=\"ingress\",verdict=\"dropped\"} 3"
    ), "{text}");
    assert!(
        !text.contains("10.1.1.1") && text.matches("_total{").count() == 2,
        "{text}"
    );
}

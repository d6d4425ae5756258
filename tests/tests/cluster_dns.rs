//! End to end: keelson's cluster DNS follows Services and EndpointSlices of the real control
//! plane and answers real DNS queries over UDP and TCP on loopback.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket},
    sync::Arc,
    time::{Duration, Instant},
};

use hickory_server::proto::{
    op::{Message, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use keelson_dns::{ClusterDns, DEFAULT_DOMAIN};
use keelson_tests::cluster::ControlPlane;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

fn query(server: SocketAddr, name: &str, record_type: RecordType, tcp: bool) -> Message {
    let mut message = Message::query();
    message.metadata.id = 4242;
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(
        Name::from_ascii(name).expect("a DNS name"),
        record_type,
    ));
    let bytes = message.to_vec().expect("encode the query");
    let answer = if tcp {
        let mut stream = TcpStream::connect(server).expect("connect to DNS over TCP");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let length = u16::try_from(bytes.len()).expect("small query");
        stream
            .write_all(&[&length.to_be_bytes()[..], &bytes].concat())
            .expect("send");
        let mut length = [0u8; 2];
        stream.read_exact(&mut length).expect("answer length");
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(length))];
        stream.read_exact(&mut answer).expect("answer");
        answer
    } else {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("client socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        socket.send_to(&bytes, server).expect("send");
        let mut buffer = [0u8; 4096];
        let (n, _) = socket
            .recv_from(&mut buffer)
            .expect("a DNS answer within 5 s");
        buffer[..n].to_vec()
    };
    let answer = Message::from_vec(&answer).expect("decode the answer");
    assert_eq!(answer.metadata.id, 4242);
    answer
}

fn a_records(answer: &Message) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    ips.sort_unstable();
    ips
}

/// Asks until `check` accepts the answer (the zone follows the API within milliseconds).
fn eventually(
    server: SocketAddr,
    name: &str,
    record_type: RecordType,
    what: &str,
    check: impl Fn(&Message) -> bool,
) -> Message {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = query(server, name, record_type, false);
        if check(&answer) {
            return answer;
        }
        assert!(Instant::now() < deadline, "{what}: last answer {answer:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_resolve_by_name_and_follow_changes() {
    let plane = ControlPlane::start();
    let client = plane.client().await;
    let dns = Arc::new(ClusterDns::new(DEFAULT_DOMAIN).expect("cluster DNS"));
    let (bound, _server) =
        keelson_dns::serve(Arc::clone(&dns), &["127.0.0.1:0".parse().expect("addr")])
            .await
            .expect("serve DNS");
    let server = bound[0];
    let watch = tokio::spawn(keelson_dns::run(client.clone(), Arc::clone(&dns)));

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let hello: Service = serde_json::from_value(json!({
        "metadata": {"name": "hello"},
        "spec": {"clusterIP": "10.96.200.10", "selector": {"app": "hello"},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
    .expect("service");
    services
        .create(&PostParams::default(), &hello)
        .await
        .expect("create hello");
    let name = "hello.default.svc.cluster.local.";
    let answer = tokio::task::spawn_blocking(move || {
        eventually(server, name, RecordType::A, "hello's A record", |a| {
            !a_records(a).is_empty()
        })
    })
    .await
    .expect("query");
    assert_eq!(a_records(&answer), [Ipv4Addr::new(10, 96, 200, 10)]);
    assert!(
        answer.metadata.authoritative,
        "the cluster zone answers authoritatively"
    );

    let tcp = tokio::task::spawn_blocking(move || query(server, name, RecordType::A, true))
        .await
        .expect("query");
    assert_eq!(
        a_records(&tcp),
        [Ipv4Addr::new(10, 96, 200, 10)],
        "over TCP too"
    );

    let srv = tokio::task::spawn_blocking(move || {
        query(
            server,
            "_http._tcp.hello.default.svc.cluster.local.",
            RecordType::SRV,
            false,
        )
    })
    .await
    .expect("query");
    let port = srv.answers.iter().find_map(|r| match &r.data {
        RData::SRV(srv) => Some((srv.port, srv.target.to_string())),
        _ => None,
    });
    assert_eq!(port, Some((80, name.to_owned())), "{srv:?}");

    // A headless Service answers its ready endpoints.
    let headless: Service = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}
    }))
    .expect("service");
    services
        .create(&PostParams::default(), &headless)
        .await
        .expect("create db");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.244.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["10.244.0.6"], "conditions": {"ready": false}}
        ]
    }))
    .expect("slice");
    slices
        .create(&PostParams::default(), &slice)
        .await
        .expect("create slice");
    let answer = tokio::task::spawn_blocking(move || {
        eventually(
            server,
            "db.default.svc.cluster.local.",
            RecordType::A,
            "db's endpoints",
            |a| !a_records(a).is_empty(),
        )
    })
    .await
    .expect("query");
    assert_eq!(
        a_records(&answer),
        [Ipv4Addr::new(10, 244, 0, 5)],
        "only ready endpoints"
    );

    // Deleting the Service removes the name: NXDOMAIN, as for any unknown name in the zone.
    services
        .delete("hello", &DeleteParams::default())
        .await
        .expect("delete hello");
    tokio::task::spawn_blocking(move || {
        eventually(server, name, RecordType::A, "hello gone", |a| {
            a.metadata.response_code == ResponseCode::NXDomain
        })
    })
    .await
    .expect("query");
    let outside =
        tokio::task::spawn_blocking(move || query(server, "example.org.", RecordType::A, false))
            .await
            .expect("query");
    assert_eq!(
        outside.metadata.response_code,
        ResponseCode::Refused,
        "names outside the cluster domain are refused, not forwarded"
    );
    watch.abort();
}

//! End to end, privileged: LoadBalancer IPs announced on L2 (ARP) by one node each, moving to
//! another node when that node dies. A three-node netns cluster (keelson-testbed, direct
//! routing) with `lb_pool` on its bridge subnet (`172.30.S.200-172.30.S.209`): the control
//! plane assigns from it and each agent answers ARP on its `eth0` (`--lb-announce-interface`).
//! The client is this process, on the cluster's bridge like any host of that network (the
//! host of `cargo xtask cluster`):
//! - the Service's EXTERNAL-IP answers `GET /cgi-bin/ip` from the bridge;
//! - exactly one node holds the Lease `kube-system/keelson-lb-<ip-dashed>`, and the bridge's
//!   neighbour entry for the address is that node's `eth0` MAC (it answered the ARP request);
//! - that node dies (its agent killed and its link to the bridge down): within the Lease
//!   duration plus a few seconds another node holds the Lease, the neighbour entry moved to its
//!   MAC, and the address answers again.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use keelson_testbed::{Cluster, ClusterSpec, Routing};
use keelson_tests::{
    netcluster::{
        apply, bin_dir, claim_subnet, echo_manifest, kubectl_json, logs, wait_ready_pods,
    },
    pods::require_docker_images,
    require_root,
};

const REPLICAS: usize = 3;

const SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: echo-lb
spec:
  type: LoadBalancer
  selector: {app: echo}
  ports:
  - port: 80
    targetPort: 80
"#;

/// `GET /cgi-bin/ip` to `address` from this process: the answering pod's hostname, `None` if
/// no answer.
fn get(address: SocketAddrV4) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&address.into(), Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    stream.write_all(b"GET /cgi-bin/ip HTTP/1.0\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let answer = answer.replace("\r\n", "\n");
    Some(
        answer
            .split_once("\n\n")?
            .1
            .split_whitespace()
            .next()?
            .to_owned(),
    )
}

fn ip(args: &[&str]) -> String {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(
        output.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The MAC after `lladdr`/`link/ether` in `ip` output.
fn mac_after(text: &str, word: &str) -> Option<String> {
    let mut words = text.split_whitespace();
    words.find(|w| *w == word)?;
    words.next().map(str::to_owned)
}

/// Node `i`'s (0-based) `eth0` MAC.
fn node_mac(cluster: &Cluster, i: usize) -> String {
    let netns = &cluster.nodes()[i].netns;
    mac_after(&ip(&["-n", netns, "link", "show", "eth0"]), "link/ether")
        .unwrap_or_else(|| panic!("the MAC of eth0 in {netns}"))
}

/// The bridge's neighbour entry for `vip`: its MAC, if it has one.
fn neighbour(bridge: &str, vip: Ipv4Addr) -> Option<String> {
    mac_after(
        &ip(&["neigh", "show", &vip.to_string(), "dev", bridge]),
        "lladdr",
    )
}

/// The holder of the announcement Lease of `vip`, if any.
fn holder(cluster: &Cluster, vip: Ipv4Addr) -> Option<String> {
    let [a, b, c, d] = vip.octets();
    let name = format!("keelson-lb-{a}-{b}-{c}-{d}");
    let text = cluster
        .kubectl(&["-n", "kube-system", "get", "lease", &name, "-o", "json"])
        .ok()?;
    let lease: serde_json::Value = serde_json::from_str(&text).ok()?;
    lease["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
}

/// Puts the link back up when the test ends early (the teardown deletes it anyway).
struct LinkDown(String);

impl Drop for LinkDown {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "set", &self.0, "up"])
            .status();
    }
}

#[test]
fn loadbalancer_ip_answers_on_the_bridge_and_moves_when_its_node_dies() {
    require_root();
    require_docker_images();
    let (subnet, _lock) = claim_subnet();
    let state = tempfile::tempdir().expect("state dir");
    let mut spec = ClusterSpec::new(&format!("l{subnet}"), subnet, 3, bin_dir(), state.path());
    spec.routing = Routing::Direct;
    spec.cluster_cidr = "10.211.0.0/16".to_owned();
    spec.lb_pool = Some(format!("172.30.{subnet}.200-172.30.{subnet}.209"));
    spec.control_plane_args = [
        "--node-monitor-grace-period",
        "6s",
        "--node-monitor-period",
        "500ms",
    ]
    .map(str::to_owned)
    .into();
    spec.agent_args = ["--node-lease-duration-seconds", "4"]
        .map(str::to_owned)
        .into();
    let bridge = format!("kb-l{subnet}");
    let mut cluster = Cluster::up(spec).unwrap_or_else(|e| panic!("cluster up: {e:#}"));

    apply(&cluster, "echo", &echo_manifest(REPLICAS));
    wait_ready_pods(&cluster, "app=echo", REPLICAS, Duration::from_secs(120));
    apply(&cluster, "echo-lb", SERVICE);
    let started = Instant::now();
    let vip: Ipv4Addr = loop {
        let service = kubectl_json(&cluster, &["get", "service", "echo-lb", "-o", "json"]);
        if let Some(ip) = service["status"]["loadBalancer"]["ingress"][0]["ip"].as_str() {
            break ip.parse().expect("an IPv4 EXTERNAL-IP");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no EXTERNAL-IP: {service}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        vip,
        Ipv4Addr::new(172, 30, subnet, 200),
        "the pool's first address"
    );
    let address = SocketAddrV4::new(vip, 80);

    // It answers from the bridge, and one node holds it.
    let started = Instant::now();
    while get(address).is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{vip} does not answer from the bridge within 20 s (Lease holder {:?})\n{}",
            holder(&cluster, vip),
            logs(&cluster)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "{vip} answered after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let first = holder(&cluster, vip).expect("a node holds the Lease of the address");
    let first_i = cluster
        .nodes()
        .iter()
        .position(|n| n.name == first)
        .unwrap_or_else(|| panic!("the holder {first} is a node"));
    for _ in 0..10 {
        assert!(get(address).is_some(), "{vip} keeps answering");
    }
    assert_eq!(
        neighbour(&bridge, vip),
        Some(node_mac(&cluster, first_i)),
        "the bridge resolved {vip} to the MAC of the holder {first}"
    );
    assert_eq!(
        holder(&cluster, vip).as_deref(),
        Some(first.as_str()),
        "the holder stays"
    );

    // The holder dies: agent killed, its link to the bridge down.
    let host_veth = cluster.nodes()[first_i].host_veth.clone();
    cluster
        .kill_agent(first_i + 1)
        .unwrap_or_else(|e| panic!("kill the agent of {first}: {e:#}"));
    ip(&["link", "set", &host_veth, "down"]);
    let _down = LinkDown(host_veth);
    let died = Instant::now();
    let second = loop {
        if let Some(h) = holder(&cluster, vip).filter(|h| *h != first) {
            break h;
        }
        assert!(
            died.elapsed() < Duration::from_secs(15),
            "15 s after {first} died nobody else holds {vip}\n{}",
            logs(&cluster)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let took_over = died.elapsed();
    let second_i = cluster
        .nodes()
        .iter()
        .position(|n| n.name == second)
        .unwrap_or_else(|| panic!("the holder {second} is a node"));
    // It answers again, ten times in a row (backends on the dead node leave the Service once
    // its Node is NotReady, a few seconds on).
    let mut in_a_row = 0;
    let mut answers_after = None;
    while in_a_row < 10 {
        assert!(
            died.elapsed() < Duration::from_secs(40),
            "40 s after {first} died, {vip} (now held by {second}) does not answer ten times in \
             a row (first answer after {answers_after:?})\n{}",
            logs(&cluster)
        );
        if get(address).is_some() {
            in_a_row += 1;
            answers_after.get_or_insert(died.elapsed());
        } else {
            in_a_row = 0;
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert_eq!(
        neighbour(&bridge, vip),
        Some(node_mac(&cluster, second_i)),
        "the bridge's entry for {vip} moved to the MAC of {second}"
    );
    eprintln!(
        "{first} died: {second} took {vip} over after {:.1} s, first answer after {:.1} s, \
         ten in a row after {:.1} s",
        took_over.as_secs_f64(),
        answers_after.unwrap_or_default().as_secs_f64(),
        died.elapsed().as_secs_f64()
    );
    cluster
        .down()
        .unwrap_or_else(|e| panic!("cluster down: {e:#}"));
}

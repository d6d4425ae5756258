//! The compiler against Kubernetes' semantics: upstream-style cases, a seeded random
//! comparison of the compiled maps (as the datapath reads them) with the reference evaluator,
//! and the size of incremental updates.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use keelson_ebpf_common::{POLICY_PREFIX_FULL, endpoint_flags, identity, proto};
use serde_json::{Value, json};

use super::{
    apply::{MemoryMaps, PolicyState},
    compile::{Desired, PolicyCompiler},
    grants::port_blocks,
    model::{NAMESPACE_NAME_LABEL, NamedPort, NodeInfo, PodInfo, PolicyModel},
    reference::{Cluster, allowed, egress_allowed, ingress_allowed, ipcache_lookup, simulate},
};

const TCP: u8 = proto::TCP;
const UDP: u8 = proto::UDP;
const SCTP: u8 = proto::SCTP;
const ICMP: u8 = proto::ICMP;

fn ip(text: &str) -> Ipv4Addr {
    text.parse().expect("address")
}

fn pod(ns: &str, name: &str, node: &str, address: &str, labels: &[(&str, &str)]) -> PodInfo {
    PodInfo {
        namespace: ns.into(),
        name: name.into(),
        node: node.into(),
        ip: ip(address),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ports: Vec::new(),
    }
}

fn with_ports(mut pod: PodInfo, ports: &[(&str, u8, u16)]) -> PodInfo {
    pod.ports = ports
        .iter()
        .map(|(name, proto, port)| NamedPort {
            name: (*name).into(),
            proto: *proto,
            port: *port,
        })
        .collect();
    pod
}

fn policy(ns: &str, name: &str, spec: Value) -> NetworkPolicy {
    serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }))
    .expect("policy")
}

fn namespaces(list: &[(&str, &[(&str, &str)])]) -> BTreeMap<String, BTreeMap<String, String>> {
    list.iter()
        .map(|(name, labels)| {
            let mut l: BTreeMap<String, String> = labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            l.insert(NAMESPACE_NAME_LABEL.into(), (*name).into());
            ((*name).to_owned(), l)
        })
        .collect()
}

/// Two nodes: n1 (192.168.0.1, pod gateway 10.244.1.1) and n2 (192.168.0.2, 10.244.2.1).
fn cluster(pods: Vec<PodInfo>, policies: Vec<NetworkPolicy>) -> Cluster {
    Cluster {
        model: PolicyModel {
            pods,
            namespaces: namespaces(&[
                ("default", &[]),
                ("prod", &[("env", "prod")]),
                ("dev", &[("env", "dev")]),
                ("kube-system", &[]),
            ]),
            policies,
            node: NodeInfo::default(),
        },
        nodes: BTreeMap::from([
            ("n1".to_owned(), vec![ip("192.168.0.1"), ip("10.244.1.1")]),
            ("n2".to_owned(), vec![ip("192.168.0.2"), ip("10.244.2.1")]),
        ]),
    }
}

/// Each node's compiled maps.
fn compile_all(cluster: &Cluster) -> BTreeMap<String, Desired> {
    cluster
        .nodes
        .keys()
        .map(|n| {
            let compiled = PolicyCompiler::default().compile(&cluster.node_model(n));
            (n.clone(), compiled.desired)
        })
        .collect()
}

/// Asserts the datapath's answer for each case and that the reference agrees.
fn check(cluster: &Cluster, cases: &[(&str, &str, u8, u16, bool)]) {
    let maps = compile_all(cluster);
    for &(src, dst, proto, port, want) in cases {
        let (src, dst) = (ip(src), ip(dst));
        let reference = allowed(cluster, src, dst, proto, port);
        let datapath = simulate(&maps, src, dst, proto, port);
        assert_eq!(reference, want, "reference {src} -> {dst} {proto}/{port}");
        assert_eq!(datapath, want, "datapath {src} -> {dst} {proto}/{port}");
    }
}

fn web_and_clients() -> Vec<PodInfo> {
    vec![
        with_ports(
            pod("default", "web", "n1", "10.244.1.10", &[("app", "web")]),
            &[("http", TCP, 8080), ("dns", UDP, 5353)],
        ),
        pod(
            "default",
            "client",
            "n2",
            "10.244.2.10",
            &[("app", "client")],
        ),
        pod("default", "other", "n1", "10.244.1.11", &[("app", "other")]),
        pod(
            "prod",
            "prod-client",
            "n2",
            "10.244.2.11",
            &[("app", "client")],
        ),
        pod(
            "dev",
            "dev-client",
            "n1",
            "10.244.1.12",
            &[("app", "client")],
        ),
    ]
}

#[test]
fn no_policy_allows_everything() {
    let c = cluster(web_and_clients(), vec![]);
    check(
        &c,
        &[
            ("10.244.2.10", "10.244.1.10", TCP, 80, true),
            ("8.8.8.8", "10.244.1.10", UDP, 53, true),
            ("10.244.1.10", "8.8.8.8", ICMP, 0, true),
        ],
    );
    assert!(
        compile_all(&c)
            .values()
            .all(|d| d.endpoints.is_empty() && d.policy.is_empty())
    );
}

#[test]
fn deny_all_ingress_keeps_the_node_and_egress() {
    let deny = policy("default", "deny", json!({"podSelector": {}}));
    let c = cluster(web_and_clients(), vec![deny]);
    check(
        &c,
        &[
            ("10.244.2.10", "10.244.1.10", TCP, 8080, false),
            ("10.244.2.11", "10.244.1.10", TCP, 8080, false),
            ("8.8.8.8", "10.244.1.10", TCP, 8080, false),
            // The pod's own node (kubelet probes) is always allowed, another node is not.
            ("10.244.1.1", "10.244.1.10", TCP, 8080, true),
            ("192.168.0.1", "10.244.1.10", TCP, 8080, true),
            ("192.168.0.2", "10.244.1.10", TCP, 8080, false),
            // Egress is not isolated by an ingress-only policy.
            ("10.244.1.10", "10.244.2.11", TCP, 80, true),
            // Pods of other namespaces are not selected.
            ("10.244.1.10", "10.244.2.11", TCP, 80, true),
        ],
    );
    let n1 = &compile_all(&c)["n1"];
    assert_eq!(
        n1.endpoints[&ip("10.244.1.10")].flags,
        endpoint_flags::INGRESS_ENFORCED
    );
    assert!(n1.policy.is_empty(), "deny-all needs no entries");
}

#[test]
fn deny_all_egress_and_both_ways() {
    let egress = policy(
        "default",
        "deny-egress",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    );
    let c = cluster(web_and_clients(), vec![egress.clone()]);
    check(
        &c,
        &[
            ("10.244.1.10", "10.244.2.11", TCP, 80, false),
            ("10.244.1.10", "8.8.8.8", UDP, 53, false),
            ("10.244.2.11", "10.244.1.10", TCP, 80, true),
            ("10.244.1.10", "10.244.1.1", UDP, 53, true),
        ],
    );
    let both = policy(
        "default",
        "deny-both",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    );
    let c = cluster(web_and_clients(), vec![both]);
    check(
        &c,
        &[
            ("10.244.1.10", "10.244.2.11", TCP, 80, false),
            ("10.244.2.11", "10.244.1.10", TCP, 80, false),
            // Within the namespace: egress of one and ingress of the other both deny.
            ("10.244.2.10", "10.244.1.10", TCP, 80, false),
        ],
    );
}

#[test]
fn policy_types_default_from_the_rules() {
    // Egress rules without policyTypes: Ingress and Egress both isolate.
    let p = policy(
        "default",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "client"}}}]}]}),
    );
    let c = cluster(web_and_clients(), vec![p]);
    check(
        &c,
        &[
            ("10.244.1.10", "10.244.2.10", TCP, 80, true),
            ("10.244.1.10", "10.244.1.11", TCP, 80, false),
            ("10.244.2.10", "10.244.1.10", TCP, 80, false),
        ],
    );
    let n1 = &compile_all(&c)["n1"];
    assert_eq!(
        n1.endpoints[&ip("10.244.1.10")].flags,
        endpoint_flags::INGRESS_ENFORCED | endpoint_flags::EGRESS_ENFORCED
    );
}

#[test]
fn pod_namespace_and_combined_selectors() {
    let pods_only = json!({"podSelector": {"matchLabels": {"app": "client"}}});
    let ns_only = json!({"namespaceSelector": {"matchLabels": {"env": "prod"}}});
    let both = json!({"namespaceSelector": {"matchLabels": {"env": "dev"}},
                      "podSelector": {"matchLabels": {"app": "client"}}});
    let web = json!({"matchLabels": {"app": "web"}});
    let rule = |peer: &Value| {
        policy(
            "default",
            "allow",
            json!({"podSelector": web, "ingress": [{"from": [peer]}]}),
        )
    };
    // podSelector alone: client pods of the policy's namespace only.
    check(
        &cluster(web_and_clients(), vec![rule(&pods_only)]),
        &[
            ("10.244.2.10", "10.244.1.10", TCP, 80, true),
            ("10.244.2.11", "10.244.1.10", TCP, 80, false),
            ("10.244.1.12", "10.244.1.10", TCP, 80, false),
            ("10.244.1.11", "10.244.1.10", TCP, 80, false),
        ],
    );
    // namespaceSelector alone: every pod of prod.
    check(
        &cluster(web_and_clients(), vec![rule(&ns_only)]),
        &[
            ("10.244.2.11", "10.244.1.10", TCP, 80, true),
            ("10.244.2.10", "10.244.1.10", TCP, 80, false),
            ("10.244.1.12", "10.244.1.10", TCP, 80, false),
        ],
    );
    // Both in one peer: AND (client pods of dev).
    check(
        &cluster(web_and_clients(), vec![rule(&both)]),
        &[
            ("10.244.1.12", "10.244.1.10", TCP, 80, true),
            ("10.244.2.11", "10.244.1.10", TCP, 80, false),
            ("10.244.2.10", "10.244.1.10", TCP, 80, false),
        ],
    );
    // Two peers: OR.
    let two = policy(
        "default",
        "allow",
        json!({"podSelector": web, "ingress": [{"from": [ns_only, pods_only]}]}),
    );
    check(
        &cluster(web_and_clients(), vec![two]),
        &[
            ("10.244.2.11", "10.244.1.10", TCP, 80, true),
            ("10.244.2.10", "10.244.1.10", TCP, 80, true),
            ("10.244.1.12", "10.244.1.10", TCP, 80, false),
        ],
    );
}

#[test]
fn ip_block_with_except_covers_pods_and_the_outside() {
    let p = policy(
        "default",
        "cidr",
        json!({"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"ipBlock": {"cidr": "10.244.0.0/16", "except": ["10.244.2.10/32"]}},
                                   {"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.128/25"]}}]}]}),
    );
    let c = cluster(web_and_clients(), vec![p]);
    check(
        &c,
        &[
            ("10.244.1.10", "10.244.2.11", TCP, 80, true),
            // The except /32 is a pod's address (upstream e2e does this).
            ("10.244.1.10", "10.244.2.10", TCP, 80, false),
            // A non-pod address inside the block.
            ("10.244.1.10", "10.244.3.7", TCP, 80, true),
            ("10.244.1.10", "203.0.113.5", TCP, 80, true),
            ("10.244.1.10", "203.0.113.200", TCP, 80, false),
            ("10.244.1.10", "8.8.8.8", TCP, 80, false),
        ],
    );
    let n1 = &compile_all(&c)["n1"];
    // The longest prefix decides: inside /24 but in the except /25 is its own class.
    let inside = ipcache_lookup(n1, ip("203.0.113.5"));
    let except = ipcache_lookup(n1, ip("203.0.113.200"));
    assert!(inside >= identity::FIRST_ALLOCATED && except >= identity::FIRST_ALLOCATED);
    assert_ne!(inside, except);
    assert_eq!(ipcache_lookup(n1, ip("8.8.8.8")), identity::WORLD);
    assert_eq!(ipcache_lookup(n1, ip("10.244.1.1")), identity::HOST);
}

#[test]
fn named_ports_resolve_on_the_right_pod() {
    let pods = vec![
        with_ports(
            pod("default", "web", "n1", "10.244.1.10", &[("app", "web")]),
            &[("http", TCP, 8080), ("dns", UDP, 5353)],
        ),
        with_ports(
            pod("default", "web2", "n2", "10.244.2.20", &[("app", "web")]),
            &[("http", TCP, 9000)],
        ),
        pod(
            "default",
            "client",
            "n2",
            "10.244.2.10",
            &[("app", "client")],
        ),
    ];
    let ingress = policy(
        "default",
        "in",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"ports": [{"port": "http"}, {"port": "dns", "protocol": "UDP"}]}]}),
    );
    check(
        &cluster(pods.clone(), vec![ingress]),
        &[
            ("10.244.2.10", "10.244.1.10", TCP, 8080, true),
            ("10.244.2.10", "10.244.1.10", TCP, 9000, false),
            ("10.244.2.10", "10.244.2.20", TCP, 9000, true),
            ("10.244.2.10", "10.244.2.20", TCP, 8080, false),
            ("10.244.2.10", "10.244.1.10", UDP, 5353, true),
            // The name is resolved with the rule's protocol.
            ("10.244.2.10", "10.244.1.10", TCP, 5353, false),
        ],
    );
    // Egress named ports resolve on each destination: web and web2 share labels but not the
    // number, which must not open 8080 on web2 or 9000 on web.
    let egress = policy(
        "default",
        "out",
        json!({"podSelector": {"matchLabels": {"app": "client"}}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": "http"}]},
                          {"ports": [{"port": "dns", "protocol": "UDP"}]}]}),
    );
    check(
        &cluster(pods, vec![egress]),
        &[
            ("10.244.2.10", "10.244.1.10", TCP, 8080, true),
            ("10.244.2.10", "10.244.2.20", TCP, 9000, true),
            ("10.244.2.10", "10.244.1.10", TCP, 9000, false),
            ("10.244.2.10", "10.244.2.20", TCP, 8080, false),
            // No `to` and a named port: only pods having it, never the outside.
            ("10.244.2.10", "10.244.1.10", UDP, 5353, true),
            ("10.244.2.10", "8.8.8.8", UDP, 5353, false),
        ],
    );
}

#[test]
fn port_ranges_and_protocols() {
    let p = policy(
        "default",
        "range",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"ports": [{"port": 32000, "endPort": 32768},
                                      {"protocol": "UDP"},
                                      {"protocol": "SCTP", "port": 9}]}]}),
    );
    check(
        &cluster(web_and_clients(), vec![p]),
        &[
            ("10.244.2.10", "10.244.1.10", TCP, 31999, false),
            ("10.244.2.10", "10.244.1.10", TCP, 32000, true),
            ("10.244.2.10", "10.244.1.10", TCP, 32500, true),
            ("10.244.2.10", "10.244.1.10", TCP, 32768, true),
            ("10.244.2.10", "10.244.1.10", TCP, 32769, false),
            ("10.244.2.10", "10.244.1.10", UDP, 1, true),
            ("10.244.2.10", "10.244.1.10", UDP, 65535, true),
            ("10.244.2.10", "10.244.1.10", SCTP, 9, true),
            ("10.244.2.10", "10.244.1.10", SCTP, 10, false),
            ("10.244.2.10", "10.244.1.10", ICMP, 0, false),
        ],
    );
}

#[test]
fn port_ranges_are_covered_exactly_by_the_fewest_prefixes() {
    let full = POLICY_PREFIX_FULL;
    assert_eq!(port_blocks(80, 80), [(80, full)]);
    assert_eq!(port_blocks(0, 65535), [(0, full - 16)]);
    assert_eq!(port_blocks(1024, 2047), [(1024, full - 10)]);
    assert_eq!(
        port_blocks(32000, 32768),
        [(32000, full - 8), (32256, full - 9), (32768, full)]
    );
    assert_eq!(port_blocks(65535, 65535), [(65535, full)]);
    // Every range of a sample: the union is exactly the range, blocks are disjoint, and no
    // cover uses more than the 2 * 16 - 2 blocks the worst case needs.
    for (start, end) in [
        (1u16, 65535u16),
        (3, 1000),
        (5000, 5001),
        (4095, 4097),
        (1, 2),
    ] {
        let blocks = port_blocks(start, end);
        assert!(blocks.len() <= 30, "{start}-{end}: {blocks:?}");
        let mut covered: BTreeSet<u32> = BTreeSet::new();
        for (first, prefix) in &blocks {
            let size = 1u32 << (full - prefix);
            assert_eq!(u32::from(*first) % size, 0, "aligned");
            for p in u32::from(*first)..u32::from(*first) + size {
                assert!(covered.insert(p), "overlap at {p}");
            }
        }
        assert_eq!(covered, (u32::from(start)..=u32::from(end)).collect());
    }
}

/// Public manifests' "allow only DNS" egress policies: pods still resolve names. Cluster DNS
/// is this node's agent on the pod CIDR's gateway (`--cluster-dns gateway`, the pods'
/// nameserver; a query to the kube-dns ClusterIP is balanced to the local responder, since
/// the Service has `internalTrafficPolicy: Local`), which is a node address: HOST.
#[test]
fn egress_only_dns_still_reaches_cluster_dns() {
    let dns_anywhere = policy(
        "default",
        "dns-anywhere",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]}),
    );
    let dns_kube_system = policy(
        "default",
        "dns-kube-dns",
        json!({"podSelector": {}, "policyTypes": ["Egress"],
               "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                                   "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                           "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]}),
    );
    for p in [dns_anywhere, dns_kube_system] {
        let c = cluster(web_and_clients(), vec![p.clone()]);
        let name = p.metadata.name.clone().unwrap_or_default();
        let cases = [
            // The responder of the pod's own node.
            ("10.244.1.10", "10.244.1.1", UDP, 53, true),
            ("10.244.1.10", "10.244.1.1", TCP, 53, true),
            // Everything else to other pods stays denied.
            ("10.244.1.10", "10.244.2.11", TCP, 80, false),
        ];
        check(&c, &cases);
        let n1 = &compile_all(&c)["n1"];
        assert_eq!(
            ipcache_lookup(n1, ip("10.244.1.1")),
            identity::HOST,
            "{name}"
        );
    }
}

/// Random models from a seed: few label values, so selectors often match.
mod incremental;
mod random;
mod updates;

#[test]
fn compiled_maps_agree_with_the_reference_on_random_clusters() {
    let mut checked = 0usize;
    let mut allowed_count = 0usize;
    for seed in 1..=150u64 {
        let c = random::cluster(seed);
        let maps = compile_all(&c);
        for (src, dst, proto, port) in random::queries(&c) {
            let want = allowed(&c, src, dst, proto, port);
            let got = simulate(&maps, src, dst, proto, port);
            assert_eq!(
                got,
                want,
                "seed {seed}: {src} -> {dst} {proto}/{port}\npolicies: {}",
                serde_json::to_string_pretty(&c.model.policies).unwrap_or_default()
            );
            checked += 1;
            allowed_count += usize::from(want);
        }
    }
    // Both verdicts occur often: the comparison is not trivially one-sided.
    assert!(
        allowed_count > checked / 10 && allowed_count < checked * 9 / 10,
        "{allowed_count}/{checked}"
    );
}

/// The same through a sequence of changes on one compiler: the maps as written by the diffs
/// (not the desired state) answer like the reference after each step.
#[test]
fn incremental_updates_keep_the_maps_equal_to_the_reference() {
    for seed in 1..=40u64 {
        let mut state = PolicyState::default();
        let mut maps = MemoryMaps::default();
        let mut c = random::cluster(seed);
        for step in 0..6u64 {
            random::mutate(&mut c, seed * 100 + step);
            state
                .sync(&c.node_model("n1"), &mut maps)
                .expect("memory maps");
            let desired = PolicyCompiler::default()
                .compile(&c.node_model("n1"))
                .desired;
            assert_eq!(maps.contents.endpoints.len(), desired.endpoints.len());
            assert_eq!(
                maps.contents.policy.len(),
                desired.policy.len(),
                "seed {seed} step {step}"
            );
            let nodes = BTreeMap::from([("n1".to_owned(), maps.contents.clone())]);
            for (src, dst, proto, port) in random::queries(&c) {
                let local = |a: Ipv4Addr| c.model.pods.iter().any(|p| p.ip == a && p.node == "n1");
                if !local(src) && !local(dst) {
                    continue;
                }
                let want = n1_reference(&c, src, dst, proto, port);
                assert_eq!(
                    simulate(&nodes, src, dst, proto, port),
                    want,
                    "seed {seed} step {step}: {src} -> {dst} {proto}/{port}"
                );
            }
        }
    }
}

/// The reference verdict of n1's checks alone (egress of n1's pods, ingress of n1's pods).
fn n1_reference(c: &Cluster, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, port: u16) -> bool {
    let on_n1 = |a: Ipv4Addr| c.model.pods.iter().any(|p| p.ip == a && p.node == "n1");
    (!on_n1(src) || egress_allowed(c, src, dst, proto, port))
        && (!on_n1(dst) || ingress_allowed(c, src, dst, proto, port))
}

/// The flow view names, for a drop, the policies that select the pod in that direction.
#[test]
fn each_endpoint_records_the_policies_isolating_it_per_direction() {
    use super::Direction;
    let deny_egress = policy(
        "default",
        "deny-egress",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    );
    let web_in = policy(
        "default",
        "web-in",
        json!({"podSelector": {"matchLabels": {"app": "web"}},
               "ingress": [{"from": [{"podSelector": {}}]}]}),
    );
    let other_ns = policy("prod", "deny-all", json!({"podSelector": {}}));
    let c = cluster(web_and_clients(), vec![web_in, deny_egress, other_ns]);
    let compiled = PolicyCompiler::default().compile(&c.node_model("n1"));
    let by = |pod: &str, direction| {
        compiled
            .selected_by
            .get(&(ip(pod), direction))
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(by("10.244.1.10", Direction::Ingress), ["default/web-in"]);
    assert_eq!(
        by("10.244.1.10", Direction::Egress),
        ["default/deny-egress"]
    );
    assert_eq!(
        by("10.244.1.11", Direction::Egress),
        ["default/deny-egress"]
    );
    assert!(by("10.244.1.11", Direction::Ingress).is_empty());
    // Pods of other nodes and of namespaces without policies are not listed.
    assert!(by("10.244.2.10", Direction::Egress).is_empty());
    assert!(by("10.244.1.12", Direction::Ingress).is_empty());
}

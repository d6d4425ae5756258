//! Incremental updates: the diff's order and size, identity numbers that stay put, and a large
//! cluster where one selector edit is a handful of writes.

use std::collections::BTreeMap;

use keelson_ebpf_common::{EndpointPolicy, endpoint_flags};
use serde_json::json;

use super::{TCP, ip, pod, policy};
use crate::datapath::policy::{
    apply::{MemoryMaps, PolicyMaps as _, PolicyState},
    compile::{Desired, PolicyCompiler, PolicyKey},
    diff::{PolicyOp, diff, tally},
    identity::IpcacheKey,
    model::{NodeInfo, PolicyModel},
    reference::policy_lookup,
    rules::Direction,
};

fn entry(endpoint: &str, peer: u32, port: u16) -> PolicyKey {
    PolicyKey::new(ip(endpoint), peer, Direction::Ingress, TCP, port, 96)
}

#[test]
fn diff_writes_only_what_differs_in_a_safe_order() {
    let ep = |flags| EndpointPolicy {
        flags,
        identity: 300,
    };
    let base = Desired {
        ipcache: BTreeMap::from([(IpcacheKey::host(ip("10.244.1.10")), 300)]),
        endpoints: BTreeMap::from([(ip("10.244.1.10"), ep(endpoint_flags::INGRESS_ENFORCED))]),
        policy: [(entry("10.244.1.10", 301, 80), 1)].into_iter().collect(),
    };
    let mut grown = base.clone();
    grown.policy.insert(entry("10.244.1.10", 302, 443), 2);
    grown
        .ipcache
        .insert(IpcacheKey::host(ip("10.244.2.10")), 302);
    grown
        .endpoints
        .insert(ip("10.244.1.11"), ep(endpoint_flags::EGRESS_ENFORCED));
    let mut relabelled = base.clone();
    relabelled.policy.insert(entry("10.244.1.10", 301, 80), 7);
    let empty = Desired::default();
    let cases: Vec<(&str, &Desired, &Desired, Vec<PolicyOp>)> = vec![
        ("unchanged", &base, &base, vec![]),
        (
            "grown: entries before the pod they police",
            &base,
            &grown,
            vec![
                PolicyOp::PutPolicy(entry("10.244.1.10", 302, 443), 2),
                PolicyOp::PutIpcache(IpcacheKey::host(ip("10.244.2.10")), 302),
                PolicyOp::PutEndpoint(ip("10.244.1.11"), ep(endpoint_flags::EGRESS_ENFORCED)),
            ],
        ),
        (
            "shrunk: the pod before its entries",
            &grown,
            &base,
            vec![
                PolicyOp::DeleteEndpoint(ip("10.244.1.11")),
                PolicyOp::DeleteIpcache(IpcacheKey::host(ip("10.244.2.10"))),
                PolicyOp::DeletePolicy(entry("10.244.1.10", 302, 443)),
            ],
        ),
        (
            "a new rule id is one put",
            &base,
            &relabelled,
            vec![PolicyOp::PutPolicy(entry("10.244.1.10", 301, 80), 7)],
        ),
        (
            "everything from nothing",
            &empty,
            &base,
            vec![
                PolicyOp::PutPolicy(entry("10.244.1.10", 301, 80), 1),
                PolicyOp::PutIpcache(IpcacheKey::host(ip("10.244.1.10")), 300),
                PolicyOp::PutEndpoint(ip("10.244.1.10"), ep(endpoint_flags::INGRESS_ENFORCED)),
            ],
        ),
    ];
    for (name, from, to, want) in cases {
        assert_eq!(diff(from, to), want, "{name}");
    }
}

/// 1000 pods in 20 namespaces (100 app labels, 10 pods each; the 100 pods with `j % 10 == 0`
/// on this node) and 10 000 policies: policy `i` selects app `i % 100` in its namespace and
/// allows ingress from app `(i % 100 + i / 100) % 100` in every namespace on two ports.
pub(super) fn large(policies: usize) -> PolicyModel {
    let pods = (0..1000)
        .map(|j| {
            let node = if j % 10 == 0 { "n1" } else { "n2" };
            let address = format!(
                "10.{}.{}.{}",
                244 + j / 65_000,
                (j / 250) % 256,
                1 + j % 250
            );
            pod(
                &format!("ns{}", j % 20),
                &format!("p{j}"),
                node,
                &address,
                &[("app", &format!("app{}", j % 100))],
            )
        })
        .collect();
    let policies = (0..policies)
        .map(|i| {
            let own = i % 100;
            let peer = (own + i / 100) % 100;
            policy(
                &format!("ns{}", own % 20),
                &format!("np{i}"),
                json!({"podSelector": {"matchLabels": {"app": format!("app{own}")}},
                       "ingress": [{"from": [{"namespaceSelector": {},
                                              "podSelector": {"matchLabels": {"app": format!("app{peer}")}}}],
                                    "ports": [{"port": 80 + (i % 7)}, {"port": 1000, "endPort": 1003}]}]}),
            )
        })
        .collect();
    PolicyModel {
        pods,
        namespaces: BTreeMap::new(),
        policies,
        node: NodeInfo {
            name: "n1".into(),
            addresses: vec![ip("192.168.0.1"), ip("10.244.255.1")],
        },
    }
}

#[test]
fn ten_thousand_policies_compile_and_one_selector_edit_is_a_few_writes() {
    let mut model = large(10_000);
    let mut state = PolicyState::default();
    let mut maps = MemoryMaps::default();
    let first = state.sync(&model, &mut maps).expect("memory maps");
    // 100 classes of pods (one per app label); 100 policed pods, each allowing 100 peer
    // classes on 1 port + a 4-port range (one /14 prefix): 2 entries per (pod, peer).
    assert_eq!(first.identities, 100);
    assert_eq!(first.endpoints, 100);
    assert_eq!(first.policy_entries, 100 * 100 * 2);
    assert_eq!(first.ipcache_entries, 1000 + 2);
    assert_eq!(first.writes, 20_000 + 1002 + 100);

    // Policy 4210 selects app10 (10 pods, all on this node) and allowed app52; now app99.
    let edited = 4210;
    let spec = model.policies[edited].spec.as_mut().expect("spec");
    let from = spec.ingress.as_mut().expect("ingress")[0]
        .from
        .as_mut()
        .expect("from");
    from[0].pod_selector =
        Some(serde_json::from_value(json!({"matchLabels": {"app": "app99"}})).expect("selector"));
    maps.writes = 0;
    let second = state.sync(&model, &mut maps).expect("memory maps");
    // Only app10's pods' entries for the two peer classes change: at most 10 pods x 2 peers x
    // 2 entries; no pod changes identity (both selectors were in use already).
    assert!(
        second.writes > 0 && second.writes <= 40,
        "{} writes",
        second.writes
    );
    assert_eq!(maps.writes, second.writes);
    let fresh = PolicyCompiler::default().compile(&model).desired;
    assert_eq!(maps.contents.policy.len(), fresh.policy.len());
    let id_of = |address: &str| maps.contents.ipcache[&IpcacheKey::host(ip(address))];
    // p10 (app10, ns10, here) now admits p99 (app99) on port 80 + 4210 % 7 and no longer p52.
    let port = 80 + (edited % 7) as u16;
    let allows = |peer: &str| {
        policy_lookup(
            &maps.contents,
            ip("10.244.0.11"),
            id_of(peer),
            Direction::Ingress,
            TCP,
            port,
        )
        .is_some()
    };
    assert!(allows("10.244.0.100"), "app99 admitted");
    assert!(!allows("10.244.0.53"), "app52 no longer");

    // A selector no other policy uses, matching two whole classes: new features, same
    // members, so the identities keep their numbers and IPCACHE is not written.
    let spec = model.policies[edited].spec.as_mut().expect("spec");
    let from = spec.ingress.as_mut().expect("ingress")[0]
        .from
        .as_mut()
        .expect("from");
    from[0].pod_selector = Some(
        serde_json::from_value(json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["app98", "app97"]}]}))
            .expect("selector"),
    );
    let before = maps.contents.clone();
    let third = state.sync(&model, &mut maps).expect("memory maps");
    let ops = diff(&before, &maps.contents);
    assert!(
        !tally(&ops).contains_key("put_ipcache"),
        "{:?}",
        tally(&ops)
    );
    assert!(third.writes <= 60, "{} writes", third.writes);
    assert_eq!(maps.contents.ipcache, before.ipcache);
}

#[test]
fn a_new_pod_in_an_existing_class_is_one_ipcache_write() {
    let mut model = large(200);
    let mut state = PolicyState::default();
    let mut maps = MemoryMaps::default();
    state.sync(&model, &mut maps).expect("sync");
    model
        .pods
        .push(pod("ns3", "new", "n2", "10.244.250.3", &[("app", "app3")]));
    let report = state.sync(&model, &mut maps).expect("sync");
    assert_eq!(report.writes, 1);
    let id = maps.contents.ipcache[&IpcacheKey::host(ip("10.244.250.3"))];
    assert_eq!(
        Some(id),
        maps.contents
            .ipcache
            .get(&IpcacheKey::host(ip("10.244.0.4")))
            .copied()
    );
    // Deleting it again: one removal.
    model.pods.pop();
    assert_eq!(state.sync(&model, &mut maps).expect("sync").writes, 1);
}

#[test]
fn a_restarted_agent_adopts_the_maps_and_writes_nothing() {
    let model = large(500);
    let mut maps = MemoryMaps::default();
    PolicyState::default()
        .sync(&model, &mut maps)
        .expect("sync");
    let mut restarted = PolicyState::adopt(&maps).expect("adopt");
    let report = restarted.sync(&model, &mut maps).expect("sync");
    // Identities keep the numbers IPCACHE gives their members; rule ids are numbered in the
    // same (sorted) order as by the first agent.
    assert_eq!(report.writes, 0);
    assert_eq!(maps.contents().expect("contents").ipcache.len(), 1002);
}

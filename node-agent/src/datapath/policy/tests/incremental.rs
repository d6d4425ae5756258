//! One policy's change applied alone ([`PolicyState::update_policy`]): the maps it leaves equal
//! a full compile's, it falls back when new identities are needed, and random sequences of
//! policy changes keep the maps equal to the reference.

use std::{collections::BTreeMap, net::Ipv4Addr};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::json;

use super::{TCP, ip, n1_reference, pod, policy, random, simulate, updates::large};
use crate::datapath::policy::{
    apply::{MemoryMaps, PolicyState},
    identity::IpcacheKey,
    reference::policy_lookup,
    rules::Direction,
};

fn key(p: &NetworkPolicy) -> (String, String) {
    (
        p.metadata.namespace.clone().unwrap_or_default(),
        p.metadata.name.clone().unwrap_or_default(),
    )
}

fn set_peer(p: &mut NetworkPolicy, selector: serde_json::Value) {
    let spec = p.spec.as_mut().expect("spec");
    spec.ingress.as_mut().expect("ingress")[0]
        .from
        .as_mut()
        .expect("from")[0]
        .pod_selector = Some(serde_json::from_value(selector).expect("selector"));
}

#[test]
fn one_edit_at_ten_thousand_policies_recompiles_only_the_pods_it_selects() {
    let mut model = large(10_000);
    let mut state = PolicyState::default();
    let mut maps = MemoryMaps::default();
    state.sync(&model, &mut maps).expect("memory maps");

    // Policy 4210 selects app10 (10 pods of ns10, all on this node) and admits app52; now
    // app99, a selector other policies use.
    let edited = 4210;
    set_peer(
        &mut model.policies[edited],
        json!({"matchLabels": {"app": "app99"}}),
    );
    let (ns, name) = key(&model.policies[edited]);
    maps.writes = 0;
    let (report, update) = state
        .update_policy(&ns, &name, Some(&model.policies[edited]), &mut maps)
        .expect("memory maps")
        .expect("applied alone");
    assert_eq!(update.endpoints.len(), 10, "{:?}", update.endpoints);
    assert!(!update.features_added);
    assert!(
        report.writes > 0 && report.writes <= 40,
        "{} writes",
        report.writes
    );
    assert_eq!(maps.writes, report.writes);
    let id_of =
        |maps: &MemoryMaps, address: &str| maps.contents.ipcache[&IpcacheKey::host(ip(address))];
    let port = 80 + (edited % 7) as u16;
    let allows = |maps: &MemoryMaps, peer: &str| {
        policy_lookup(
            &maps.contents,
            ip("10.244.0.11"),
            id_of(maps, peer),
            Direction::Ingress,
            TCP,
            port,
        )
        .is_some()
    };
    assert!(allows(&maps, "10.244.0.100"), "app99 admitted");
    assert!(!allows(&maps, "10.244.0.53"), "app52 no longer");
    // A full compile of the same model finds nothing left to write.
    assert_eq!(state.sync(&model, &mut maps).expect("sync").writes, 0);

    // A selector no policy uses, selecting two whole classes: they gain a feature, no
    // identity changes, and again the maps equal a full compile's.
    set_peer(
        &mut model.policies[edited],
        json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["app98", "app97"]}]}),
    );
    let before = maps.contents.ipcache.clone();
    let (_, update) = state
        .update_policy(&ns, &name, Some(&model.policies[edited]), &mut maps)
        .expect("memory maps")
        .expect("applied alone");
    assert!(update.features_added);
    assert_eq!(maps.contents.ipcache, before);
    assert!(allows(&maps, "10.244.0.99"), "app98 admitted");
    assert_eq!(state.sync(&model, &mut maps).expect("sync").writes, 0);

    // Deleted: its pods keep what the other policies selecting app10 allow, nothing more.
    let removed = model.policies.remove(edited);
    state
        .update_policy(&ns, &name, None, &mut maps)
        .expect("memory maps")
        .expect("applied alone");
    assert!(!allows(&maps, "10.244.0.99"), "app98 no longer");
    assert_eq!(state.sync(&model, &mut maps).expect("sync").writes, 0);

    // An ipBlock CIDR no policy names needs new IPCACHE entries: a full compile, and nothing
    // written by the attempt.
    let mut cidr = removed;
    cidr.spec
        .as_mut()
        .expect("spec")
        .ingress
        .as_mut()
        .expect("ingress")[0]
        .from = Some(vec![
        serde_json::from_value(json!({"ipBlock": {"cidr": "203.0.113.0/24"}})).expect("peer"),
    ]);
    maps.writes = 0;
    let result = state
        .update_policy(&ns, &name, Some(&cidr), &mut maps)
        .expect("memory maps");
    assert!(result.is_none());
    assert_eq!(maps.writes, 0);
}

#[test]
fn a_selector_that_splits_a_class_gets_a_new_identity_and_twin_entries() {
    // Two web pods in two namespaces, one class while only an any-namespace selector names
    // them; a selector for web pods of `default` alone splits it.
    let pods = vec![
        pod("default", "a", "n1", "10.244.1.10", &[("app", "web")]),
        pod("prod", "b", "n1", "10.244.1.11", &[("app", "web")]),
        pod("default", "c", "n1", "10.244.1.12", &[("app", "db")]),
        pod("default", "d", "n1", "10.244.1.13", &[("app", "cache")]),
    ];
    let db_in = policy(
        "default",
        "db-in",
        json!({"podSelector": {"matchLabels": {"app": "db"}},
               "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}]}]}),
    );
    let cache_in = policy(
        "default",
        "cache-in",
        json!({"podSelector": {"matchLabels": {"app": "cache"}},
               "ingress": [{"from": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"app": "web"}}}]}]}),
    );
    let mut c = super::cluster(pods, vec![db_in, cache_in]);
    let mut state = PolicyState::default();
    let mut maps = MemoryMaps::default();
    state.sync(&c.node_model("n1"), &mut maps).expect("sync");
    let id = |maps: &MemoryMaps, a: &str| maps.contents.ipcache[&IpcacheKey::host(ip(a))];
    assert_eq!(
        id(&maps, "10.244.1.10"),
        id(&maps, "10.244.1.11"),
        "one class"
    );
    let narrowed = policy(
        "default",
        "db-in",
        json!({"podSelector": {"matchLabels": {"app": "db"}},
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
    );
    let (_, update) = state
        .update_policy("default", "db-in", Some(&narrowed), &mut maps)
        .expect("memory maps")
        .expect("applied alone");
    assert_eq!(update.splits.len(), 1, "{:?}", update.splits);
    assert_ne!(id(&maps, "10.244.1.10"), id(&maps, "10.244.1.11"), "split");
    c.model.policies[0] = narrowed;
    let nodes = BTreeMap::from([("n1".to_owned(), maps.contents.clone())]);
    // db admits web of default only; cache (its policy unchanged) still admits both web pods,
    // the moved one through the twin entry.
    for (src, dst, want) in [
        ("10.244.1.10", "10.244.1.12", true),
        ("10.244.1.11", "10.244.1.12", false),
        ("10.244.1.10", "10.244.1.13", true),
        ("10.244.1.11", "10.244.1.13", true),
    ] {
        assert_eq!(
            simulate(&nodes, ip(src), ip(dst), TCP, 80),
            want,
            "{src} -> {dst}"
        );
        assert_eq!(
            n1_reference(&c, ip(src), ip(dst), TCP, 80),
            want,
            "reference {src} -> {dst}"
        );
    }
}

/// Random clusters, then only policy changes (added, replaced, removed), each applied alone
/// where it can be: after each, the maps answer like the reference, and most changes were
/// applied alone, some splitting classes (the fast path is really taken).
#[test]
fn random_policy_changes_applied_alone_keep_the_maps_equal_to_the_reference() {
    let (mut alone, mut full, mut splits) = (0usize, 0usize, 0usize);
    for seed in 1..=40u64 {
        let mut rng = random::Rng::new(seed * 7919);
        let mut c = random::cluster(seed);
        let mut state = PolicyState::default();
        let mut maps = MemoryMaps::default();
        state.sync(&c.node_model("n1"), &mut maps).expect("sync");
        for step in 0..8usize {
            let n = c.model.policies.len();
            let (ns, name, new) = match rng.below(3) {
                0 if n > 0 => {
                    let (ns, name) = key(&c.model.policies.remove(rng.below(n)));
                    (ns, name, None)
                }
                1 if n > 0 => {
                    let i = rng.below(n);
                    let (ns, name) = key(&c.model.policies[i]);
                    let mut p = random::random_policy(&mut rng, i);
                    p.metadata.namespace = Some(ns.clone());
                    p.metadata.name = Some(name.clone());
                    c.model.policies[i] = p.clone();
                    (ns, name, Some(p))
                }
                _ => {
                    let mut p = random::random_policy(&mut rng, 0);
                    p.metadata.name = Some(format!("added-{step}"));
                    let (ns, name) = key(&p);
                    c.model
                        .policies
                        .retain(|q| key(q) != (ns.clone(), name.clone()));
                    c.model.policies.push(p.clone());
                    (ns, name, Some(p))
                }
            };
            match state
                .update_policy(&ns, &name, new.as_ref(), &mut maps)
                .expect("memory maps")
            {
                Some((_, update)) => {
                    alone += 1;
                    splits += update.splits.len();
                }
                None => {
                    full += 1;
                    state.sync(&c.node_model("n1"), &mut maps).expect("sync");
                }
            }
            let nodes = BTreeMap::from([("n1".to_owned(), maps.contents.clone())]);
            let local = |a: Ipv4Addr| c.model.pods.iter().any(|p| p.ip == a && p.node == "n1");
            for (src, dst, proto, port) in random::queries(&c) {
                if !local(src) && !local(dst) {
                    continue;
                }
                assert_eq!(
                    simulate(&nodes, src, dst, proto, port),
                    n1_reference(&c, src, dst, proto, port),
                    "seed {seed} step {step}: {src} -> {dst} {proto}/{port}"
                );
            }
        }
    }
    // The fast path is taken, splits included.
    assert!(
        alone > full * 2 && splits > 0,
        "{alone} applied alone ({splits} class splits), {full} full compiles"
    );
}

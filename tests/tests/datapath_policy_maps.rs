//! Privileged: the NetworkPolicy compiler's writes in real kernel maps. The three policy maps
//! are created standalone (LPM tries and a hash, as `ebpf/common` declares them), pinned in a
//! test directory and opened again by their pins as the agent opens them; a compiled model is
//! written through the diff, read back unchanged, and the kernel's own longest-prefix lookups
//! give the verdicts the datapath will see (port ranges, any-protocol entries, ipBlock
//! exceptions, misses as WORLD). A policy change is then written as a few writes.

use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf};

use k8s_openapi::api::networking::v1::NetworkPolicy;
use keelson_ebpf_common::{POLICY_PREFIX_FULL, identity, proto};
use keelson_node_agent::datapath::policy::{
    Direction, NodeInfo, PinnedPolicyMaps, PodInfo, PolicyKey, PolicyMaps as _, PolicyModel,
    PolicyState,
};
use keelson_tests::require_root;
use serde_json::json;

/// A pin directory on bpffs, removed (with its pins) on drop.
struct PinDir(PathBuf);

impl PinDir {
    fn new() -> Self {
        let dir = PathBuf::from("/sys/fs/bpf/keelson-test").join(format!(
            "policy-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default()
        ));
        keelson_node_agent::datapath::lb::ensure_bpffs(&dir).expect("bpffs at /sys/fs/bpf");
        std::fs::create_dir_all(&dir).expect("pin directory");
        Self(dir)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn ip(text: &str) -> Ipv4Addr {
    text.parse().expect("address")
}

fn pod(name: &str, node: &str, address: &str, app: &str) -> PodInfo {
    PodInfo {
        namespace: "default".into(),
        name: name.into(),
        node: node.into(),
        ip: ip(address),
        labels: BTreeMap::from([("app".to_owned(), app.to_owned())]),
        ports: Vec::new(),
    }
}

fn policy(spec: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(json!({
        "metadata": {"namespace": "default", "name": "web"},
        "spec": spec,
    }))
    .expect("policy")
}

fn model(spec: serde_json::Value) -> PolicyModel {
    PolicyModel {
        pods: vec![
            pod("web", "n1", "10.244.1.10", "web"),
            pod("client", "n2", "10.244.2.10", "client"),
            pod("other", "n2", "10.244.2.11", "other"),
        ],
        namespaces: BTreeMap::new(),
        policies: vec![policy(spec)],
        node: NodeInfo {
            name: "n1".into(),
            addresses: vec![ip("192.168.0.1"), ip("10.244.1.1")],
        },
    }
}

fn verdict(maps: &PinnedPolicyMaps, peer: &str, proto: u8, port: u16) -> Option<u32> {
    let id = maps
        .lookup_ipcache(ip(peer))
        .expect("ipcache lookup")
        .unwrap_or(identity::WORLD);
    [id, identity::ANY].into_iter().find_map(|id| {
        let key = PolicyKey::new(
            ip("10.244.1.10"),
            id,
            Direction::Ingress,
            proto,
            port,
            POLICY_PREFIX_FULL,
        );
        maps.lookup_policy(key.data).expect("policy lookup")
    })
}

#[test]
fn compiled_policy_in_kernel_maps_answers_like_the_datapath() {
    require_root();
    let pins = PinDir::new();
    PinnedPolicyMaps::create()
        .expect("creating the maps")
        .pin(&pins.0)
        .expect("pinning");
    let mut maps = PinnedPolicyMaps::open(&pins.0).expect("opening by pin");
    let first = json!({"podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
             "ports": [{"port": 32000, "endPort": 32768}, {"protocol": "UDP"}]},
            {"from": [{"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.128/25"]}}]}]});
    let mut state = PolicyState::adopt(&maps).expect("adopting empty maps");
    let report = state
        .sync(&model(first.clone()), &mut maps)
        .expect("writing");
    assert!(report.writes > 0);
    // Read back through a second handle opened by pin: exactly what was compiled.
    let reopened = PinnedPolicyMaps::open(&pins.0).expect("reopening");
    let contents = reopened.contents().expect("reading back");
    let compiled = state.last().expect("compiled").desired.clone();
    assert_eq!(contents, compiled);

    // The kernel's longest-prefix match.
    let tcp = proto::TCP;
    assert!(verdict(&reopened, "10.244.2.10", tcp, 31999).is_none());
    for port in [32000, 32255, 32256, 32767, 32768] {
        assert!(
            verdict(&reopened, "10.244.2.10", tcp, port).is_some(),
            "{port}"
        );
    }
    assert!(verdict(&reopened, "10.244.2.10", tcp, 32769).is_none());
    assert!(verdict(&reopened, "10.244.2.10", proto::UDP, 5).is_some());
    assert!(
        verdict(&reopened, "10.244.2.11", tcp, 32000).is_none(),
        "other pods are not clients"
    );
    assert!(
        verdict(&reopened, "203.0.113.7", proto::ICMP, 0).is_some(),
        "any protocol from the block"
    );
    assert!(
        verdict(&reopened, "203.0.113.200", tcp, 80).is_none(),
        "except"
    );
    assert_eq!(
        reopened.lookup_ipcache(ip("8.8.8.8")).expect("lookup"),
        None,
        "a miss is WORLD"
    );
    assert_eq!(
        reopened.lookup_ipcache(ip("10.244.1.1")).expect("lookup"),
        Some(identity::HOST)
    );

    // The client may now use 8080 only: a handful of writes, the maps as compiled.
    let second = json!({"podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"app": "client"}}}], "ports": [{"port": 8080}]},
            {"from": [{"ipBlock": {"cidr": "203.0.113.0/24", "except": ["203.0.113.128/25"]}}]}]});
    let report = state
        .sync(&model(second), &mut maps)
        .expect("writing the change");
    assert!(
        report.writes > 0 && report.writes <= 8,
        "{} writes",
        report.writes
    );
    assert_eq!(
        reopened.contents().expect("reading back"),
        state.last().expect("compiled").desired
    );
    assert!(verdict(&reopened, "10.244.2.10", tcp, 8080).is_some());
    assert!(verdict(&reopened, "10.244.2.10", tcp, 32000).is_none());
    assert!(verdict(&reopened, "10.244.2.10", proto::UDP, 5).is_none());
}

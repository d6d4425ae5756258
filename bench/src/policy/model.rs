//! The benchmark's synthetic cluster: 1000 pods in 21 namespaces and N NetworkPolicies, all
//! generated deterministically from their index (no randomness between runs). Pure: no IO.
//!
//! Three pods are real endpoints of the lab (see [`super::lab`]): the client (namespace
//! `bench`, `app=loadgen`), the server (`app=echo`) and a guarded pod (`app=guarded`) that no
//! policy lets the client reach. The measured path client -> server:8080 is allowed by policy 0
//! (`bench-path`, ingress and egress) among the N; policy 1 (`bench-guard`) isolates the guarded
//! pod. The other pods are API objects only: their addresses (10.210.0.0/16) exist nowhere, but
//! their identities, the maps and the rule sets built from them are real.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
};

use k8s_openapi::{
    api::networking::v1::{
        IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule,
        NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
    },
    apimachinery::pkg::{apis::meta::v1::LabelSelector, util::intstr::IntOrString},
};
use keelson_node_agent::datapath::policy::{NAMESPACE_NAME_LABEL, NodeInfo, PodInfo, PolicyModel};

use crate::services::{
    BACKEND_PORT, CLIENT_ADDR, NODE_BACKEND_SIDE, NODE_CLIENT_SIDE, backend_addr,
};

/// Pods in the cluster (every one an identity's member).
pub const PODS: usize = 1000;
/// Namespaces besides `bench`.
pub const TEAM_NAMESPACES: usize = 20;
/// Distinct `app` label values among the synthetic pods.
pub const APPS: usize = 50;
/// The node the lab is: pods on it are policed here.
pub const NODE: &str = "bench-node";
/// The namespace of the three real pods.
pub const BENCH_NAMESPACE: &str = "bench";
/// Every 10th synthetic pod runs on this node (100 local pods, as on a busy node).
const LOCAL_EVERY: u64 = 10;

/// The client's address (a real endpoint).
pub fn client_addr() -> Ipv4Addr {
    CLIENT_ADDR
}

/// The server's address (a real endpoint: keelson-echo listens on it).
pub fn server_addr() -> Ipv4Addr {
    backend_addr(0)
}

/// The guarded pod's address (a real endpoint that policy 1 isolates).
pub fn guarded_addr() -> Ipv4Addr {
    backend_addr(1)
}

/// The measured target: the server's port 8080.
pub fn server_target() -> SocketAddrV4 {
    SocketAddrV4::new(server_addr(), BACKEND_PORT)
}

/// The denied target: the guarded pod's port 8080.
pub fn guarded_target() -> SocketAddrV4 {
    SocketAddrV4::new(guarded_addr(), BACKEND_PORT)
}

/// SplitMix64: a fixed, well-mixed hash of an index.
pub fn mix(index: u64) -> u64 {
    let mut z = index.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn labels<const N: usize>(pairs: [(&str, String); N]) -> BTreeMap<String, String> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn team(index: usize) -> String {
    format!("team-{index:02}")
}

/// The namespaces and their labels: `tier` (web, api, data, batch) and `env`.
pub fn namespaces() -> BTreeMap<String, BTreeMap<String, String>> {
    let tiers = ["web", "api", "data", "batch"];
    let mut out: BTreeMap<String, BTreeMap<String, String>> = (0..TEAM_NAMESPACES)
        .map(|i| {
            let name = team(i);
            let l = labels([
                (NAMESPACE_NAME_LABEL, name.clone()),
                ("tier", tiers[i % tiers.len()].to_owned()),
                (
                    "env",
                    if i % 2 == 0 { "prod" } else { "staging" }.to_owned(),
                ),
            ]);
            (name, l)
        })
        .collect();
    out.insert(
        BENCH_NAMESPACE.to_owned(),
        labels([
            (NAMESPACE_NAME_LABEL, BENCH_NAMESPACE.to_owned()),
            ("tier", "bench".to_owned()),
            ("env", "prod".to_owned()),
        ]),
    );
    out
}

/// The pods: the three real ones first, then synthetic ones with `app`, `version` and
/// `team` labels drawn from their index's hash, a tenth of them on this node.
pub fn pods() -> Vec<PodInfo> {
    let bench = |name: &str, app: &str, role: &str, ip: Ipv4Addr| PodInfo {
        namespace: BENCH_NAMESPACE.to_owned(),
        name: name.to_owned(),
        node: NODE.to_owned(),
        ip,
        labels: labels([("app", app.to_owned()), ("role", role.to_owned())]),
        ports: Vec::new(),
    };
    let mut out = vec![
        bench("client", "loadgen", "bench", client_addr()),
        bench("server", "echo", "bench", server_addr()),
        bench("guarded", "guarded", "guarded", guarded_addr()),
    ];
    for i in out.len()..PODS {
        let h = mix(i as u64);
        let app = (h % APPS as u64) as usize;
        let ns = ((h >> 16) % TEAM_NAMESPACES as u64) as usize;
        out.push(PodInfo {
            namespace: team(ns),
            name: format!("app-{app:02}-{i:04}"),
            node: if (h >> 32).is_multiple_of(LOCAL_EVERY) {
                NODE.to_owned()
            } else {
                format!("node-{:02}", (h >> 40) % 15)
            },
            ip: Ipv4Addr::new(10, 210, (i / 250) as u8, (i % 250 + 1) as u8),
            labels: labels([
                ("app", format!("app-{app:02}")),
                ("version", format!("v{}", (h >> 24) % 3)),
            ]),
            ports: Vec::new(),
        });
    }
    out
}

fn selector<const N: usize>(pairs: [(&str, String); N]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels(pairs)),
        match_expressions: None,
    }
}

fn tcp(port: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::Int(i32::from(port))),
        protocol: Some("TCP".to_owned()),
        end_port: None,
    }
}

fn pod_peer(selector: LabelSelector) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(selector),
        ..NetworkPolicyPeer::default()
    }
}

fn policy(namespace: &str, name: String, spec: NetworkPolicySpec) -> NetworkPolicy {
    let mut p = NetworkPolicy {
        spec: Some(spec),
        ..NetworkPolicy::default()
    };
    p.metadata.namespace = Some(namespace.to_owned());
    p.metadata.name = Some(name);
    p
}

fn ingress(
    target: LabelSelector,
    from: Vec<NetworkPolicyPeer>,
    ports: Vec<NetworkPolicyPort>,
) -> NetworkPolicySpec {
    NetworkPolicySpec {
        pod_selector: Some(target),
        policy_types: Some(vec!["Ingress".to_owned()]),
        ingress: Some(vec![NetworkPolicyIngressRule {
            from: Some(from),
            ports: Some(ports),
        }]),
        egress: None,
    }
}

/// The measured path's policy: `role=bench` pods take ingress from `app=loadgen` and send to
/// `app=echo`, TCP 8080 both ways (the client and the server are both policed).
pub fn bench_path_policy() -> NetworkPolicy {
    let mut spec = ingress(
        selector([("app", "echo".to_owned())]),
        vec![pod_peer(selector([("app", "loadgen".to_owned())]))],
        vec![tcp(BACKEND_PORT)],
    );
    spec.pod_selector = Some(selector([("role", "bench".to_owned())]));
    spec.policy_types = Some(vec!["Ingress".to_owned(), "Egress".to_owned()]);
    spec.egress = Some(vec![NetworkPolicyEgressRule {
        to: Some(vec![pod_peer(selector([("app", "echo".to_owned())]))]),
        ports: Some(vec![tcp(BACKEND_PORT)]),
    }]);
    policy(BENCH_NAMESPACE, "bench-path".to_owned(), spec)
}

/// Policy `index` of the N (0 and 1 are the bench's own; the rest a mix of kinds by index).
pub fn generated_policy(index: usize) -> NetworkPolicy {
    if index == 0 {
        return bench_path_policy();
    }
    if index == 1 {
        // The guarded pod takes ingress from nobody that exists.
        return policy(
            BENCH_NAMESPACE,
            "bench-guard".to_owned(),
            ingress(
                selector([("app", "guarded".to_owned())]),
                vec![pod_peer(selector([("app", "nobody".to_owned())]))],
                vec![tcp(BACKEND_PORT)],
            ),
        );
    }
    let h = mix(1_000_000 + index as u64);
    let app = |shift: u32| format!("app-{:02}", (h >> shift) % APPS as u64);
    let port = 8000 + ((h >> 40) % 100) as u16;
    let ns = team(((h >> 48) % TEAM_NAMESPACES as u64) as usize);
    let name = format!("np-{index:05}");
    let tiers = ["web", "api", "data", "batch"];
    match h % 20 {
        // 12 in 20: app b talks to app a in the same namespace.
        0..=11 => policy(
            &ns,
            name,
            ingress(
                selector([("app", app(8))]),
                vec![pod_peer(selector([("app", app(16))]))],
                vec![tcp(port)],
            ),
        ),
        // 3 in 20: app b of every namespace of a tier, to a version of app a.
        12..=14 => policy(
            &ns,
            name,
            ingress(
                selector([("app", app(8)), ("version", format!("v{}", (h >> 56) % 3))]),
                vec![NetworkPolicyPeer {
                    namespace_selector: Some(selector([(
                        "tier",
                        tiers[((h >> 24) % 4) as usize].to_owned(),
                    )])),
                    pod_selector: Some(selector([("app", app(16))])),
                    ip_block: None,
                }],
                vec![tcp(port), tcp(port + 1000)],
            ),
        ),
        // 2 in 20: egress of app a to app b and to an external /24.
        15 | 16 => {
            let c = ((h >> 24) % 250) as u8;
            policy(
                &ns,
                name,
                NetworkPolicySpec {
                    pod_selector: Some(selector([("app", app(8))])),
                    policy_types: Some(vec!["Egress".to_owned()]),
                    ingress: None,
                    egress: Some(vec![NetworkPolicyEgressRule {
                        to: Some(vec![
                            pod_peer(selector([("app", app(16))])),
                            NetworkPolicyPeer {
                                ip_block: Some(IPBlock {
                                    cidr: format!("10.250.{c}.0/24"),
                                    except: None,
                                }),
                                ..NetworkPolicyPeer::default()
                            },
                        ]),
                        ports: Some(vec![tcp(5432)]),
                    }]),
                },
            )
        }
        // 2 in 20: ingress from an outside /24 except a /28, to app a.
        17 | 18 => {
            let c = ((h >> 24) % 250) as u8;
            policy(
                &ns,
                name,
                ingress(
                    selector([("app", app(8))]),
                    vec![NetworkPolicyPeer {
                        ip_block: Some(IPBlock {
                            cidr: format!("172.16.{c}.0/24"),
                            except: Some(vec![format!("172.16.{c}.0/28")]),
                        }),
                        ..NetworkPolicyPeer::default()
                    }],
                    vec![tcp(443)],
                ),
            )
        }
        // 1 in 20: more ingress to the bench's own pods (the server and the client), from
        // app b of a tier, so the measured pods carry many policies as busy pods do.
        _ => policy(
            BENCH_NAMESPACE,
            name,
            ingress(
                selector([("role", "bench".to_owned())]),
                vec![NetworkPolicyPeer {
                    namespace_selector: Some(selector([(
                        "tier",
                        tiers[((h >> 24) % 4) as usize].to_owned(),
                    )])),
                    pod_selector: Some(selector([("app", app(16))])),
                    ip_block: None,
                }],
                vec![tcp(9000 + ((h >> 40) % 50) as u16)],
            ),
        ),
    }
}

/// The whole model with `policies` NetworkPolicies, as the node agent sees it on this node.
pub fn model(policies: usize) -> PolicyModel {
    PolicyModel {
        pods: pods(),
        namespaces: namespaces(),
        policies: (0..policies).map(generated_policy).collect(),
        node: NodeInfo {
            name: NODE.to_owned(),
            addresses: vec![NODE_CLIENT_SIDE, NODE_BACKEND_SIDE],
        },
    }
}

/// The timed change: one peer selector added to the measured path's ingress rule (pods of app
/// `app-07` in `web` namespaces may reach the server too). Policy 0 must exist.
pub fn with_added_peer(model: &PolicyModel) -> PolicyModel {
    let mut changed = model.clone();
    if let Some(rule) = changed
        .policies
        .first_mut()
        .and_then(|p| p.spec.as_mut())
        .and_then(|s| s.ingress.as_mut())
        .and_then(|rules| rules.first_mut())
    {
        rule.from
            .get_or_insert_with(Vec::new)
            .push(NetworkPolicyPeer {
                namespace_selector: Some(selector([("tier", "web".to_owned())])),
                pod_selector: Some(selector([("app", "app-07".to_owned())])),
                ip_block: None,
            });
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_is_deterministic_and_sized() {
        let a = model(1000);
        let b = model(1000);
        assert_eq!(a.pods, b.pods);
        assert_eq!(a.policies, b.policies);
        assert_eq!(a.pods.len(), PODS);
        assert_eq!(a.policies.len(), 1000);
        assert_eq!(a.namespaces.len(), TEAM_NAMESPACES + 1);
        let mut ips: Vec<_> = a.pods.iter().map(|p| p.ip).collect();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), PODS, "every pod has its own address");
        let local = a.pods.iter().filter(|p| p.node == NODE).count();
        assert!((70..=140).contains(&local), "about 100 local pods: {local}");
        let names: std::collections::BTreeSet<_> = a
            .policies
            .iter()
            .map(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()))
            .collect();
        assert_eq!(names.len(), 1000, "policy names are unique");
        assert_eq!(model(0).policies.len(), 0);
        assert_eq!(
            model(2).policies,
            vec![bench_path_policy(), generated_policy(1)]
        );
    }

    #[test]
    fn the_policies_are_a_mix_and_some_select_the_bench_pods() {
        let m = model(10_000);
        let egress = m
            .policies
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.egress.as_ref()).is_some())
            .count();
        let in_bench = m
            .policies
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(BENCH_NAMESPACE))
            .count();
        let ip_blocks = m
            .policies
            .iter()
            .filter(|p| serde_json::to_string(p).is_ok_and(|s| s.contains("ipBlock")))
            .count();
        assert!((700..1300).contains(&egress), "{egress}");
        assert!((300..700).contains(&in_bench), "{in_bench}");
        assert!((1500..2700).contains(&ip_blocks), "{ip_blocks}");
    }

    #[test]
    fn the_change_adds_one_peer_to_the_path_policy_only() {
        let m = model(100);
        let changed = with_added_peer(&m);
        assert_eq!(m.policies[1..], changed.policies[1..]);
        let peers = |m: &PolicyModel| {
            m.policies[0]
                .spec
                .as_ref()
                .expect("spec")
                .ingress
                .as_ref()
                .expect("ingress")[0]
                .from
                .as_ref()
                .expect("from")
                .len()
        };
        assert_eq!((peers(&m), peers(&changed)), (1, 2));
    }
}

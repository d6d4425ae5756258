//! Seeded random clusters for the comparison with the reference (xorshift; no dependency).

use std::net::Ipv4Addr;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde_json::{Value, json};

use super::{ICMP, SCTP, TCP, UDP, pod, policy, with_ports};
use crate::datapath::policy::{model::PodInfo, reference::Cluster};

/// xorshift64*.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

const NAMESPACES: [&str; 3] = ["default", "prod", "dev"];
const APPS: [&str; 3] = ["web", "db", "client"];
const TIERS: [&str; 2] = ["fe", "be"];

fn random_pod(rng: &mut Rng, i: usize) -> PodInfo {
    let node = if rng.chance(50) { "n1" } else { "n2" };
    let subnet = if node == "n1" { 1 } else { 2 };
    let mut labels: Vec<(&str, &str)> = vec![("app", *rng.pick(&APPS))];
    if rng.chance(50) {
        labels.push(("tier", *rng.pick(&TIERS)));
    }
    let address = format!("10.244.{subnet}.{}", 10 + i);
    let p = pod(
        NAMESPACES[rng.below(NAMESPACES.len())],
        &format!("p{i}"),
        node,
        &address,
        &labels,
    );
    let mut ports = Vec::new();
    if rng.chance(60) {
        ports.push(("http", TCP, *rng.pick(&[80u16, 8080])));
    }
    if rng.chance(40) {
        ports.push(("dns", UDP, 53));
    }
    if rng.chance(30) {
        ports.push(("metrics", TCP, 9090));
    }
    with_ports(p, &ports)
}

fn selector(rng: &mut Rng) -> Value {
    match rng.below(6) {
        0 => json!({}),
        1 | 2 => json!({"matchLabels": {"app": rng.pick(&APPS)}}),
        3 => {
            json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": [rng.pick(&TIERS)]}]})
        }
        4 => json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}),
        _ => {
            json!({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": [rng.pick(&APPS)]}]})
        }
    }
}

fn namespace_selector(rng: &mut Rng) -> Value {
    match rng.below(4) {
        0 => json!({}),
        1 => json!({"matchLabels": {"env": rng.pick(&["prod", "dev"])}}),
        2 => json!({"matchLabels": {"kubernetes.io/metadata.name": rng.pick(&NAMESPACES)}}),
        _ => json!({"matchExpressions": [{"key": "env", "operator": "Exists"}]}),
    }
}

fn ip_block(rng: &mut Rng) -> Value {
    let (cidr, excepts): (&str, &[&str]) = *rng.pick(&[
        (
            "10.244.0.0/16",
            &["10.244.1.0/24", "10.244.2.12/32", "10.244.2.0/25"][..],
        ),
        ("10.244.1.0/24", &["10.244.1.10/32", "10.244.1.16/28"][..]),
        ("10.244.2.10/32", &[][..]),
        ("203.0.113.0/24", &["203.0.113.128/25"][..]),
        ("0.0.0.0/0", &["10.0.0.0/8", "203.0.113.0/24"][..]),
        ("10.244.1.7/24", &[][..]),
    ]);
    let except: Vec<&str> = excepts.iter().copied().filter(|_| rng.chance(50)).collect();
    if except.is_empty() {
        json!({"ipBlock": {"cidr": cidr}})
    } else {
        json!({"ipBlock": {"cidr": cidr, "except": except}})
    }
}

fn peer(rng: &mut Rng) -> Value {
    match rng.below(5) {
        0 | 1 => json!({"podSelector": selector(rng)}),
        2 => json!({"namespaceSelector": namespace_selector(rng)}),
        3 => json!({"namespaceSelector": namespace_selector(rng), "podSelector": selector(rng)}),
        _ => ip_block(rng),
    }
}

fn port(rng: &mut Rng) -> Value {
    let mut p = serde_json::Map::new();
    if rng.chance(60) {
        p.insert("protocol".into(), json!(rng.pick(&["TCP", "UDP", "SCTP"])));
    }
    match rng.below(5) {
        0 => {}
        1 | 2 => {
            p.insert("port".into(), json!(rng.pick(&[53, 80, 8080, 9090])));
        }
        3 => {
            let start = *rng.pick(&[50, 80, 1000]);
            p.insert("port".into(), json!(start));
            p.insert(
                "endPort".into(),
                json!(start + *rng.pick(&[0, 3, 30, 9000])),
            );
        }
        _ => {
            p.insert(
                "port".into(),
                json!(rng.pick(&["http", "dns", "metrics", "nope"])),
            );
        }
    }
    Value::Object(p)
}

fn rule(rng: &mut Rng, peers_key: &str) -> Value {
    let mut r = serde_json::Map::new();
    match rng.below(4) {
        0 => {}
        1 => {
            r.insert(peers_key.into(), json!([]));
        }
        _ => {
            let n = 1 + rng.below(2);
            r.insert(
                peers_key.into(),
                Value::Array((0..n).map(|_| peer(rng)).collect()),
            );
        }
    }
    match rng.below(4) {
        0 => {}
        1 => {
            r.insert("ports".into(), json!([]));
        }
        _ => {
            let n = 1 + rng.below(2);
            r.insert(
                "ports".into(),
                Value::Array((0..n).map(|_| port(rng)).collect()),
            );
        }
    }
    Value::Object(r)
}

pub fn random_policy(rng: &mut Rng, i: usize) -> NetworkPolicy {
    let mut spec = serde_json::Map::new();
    if rng.chance(85) {
        spec.insert("podSelector".into(), selector(rng));
    }
    match rng.below(4) {
        0 => {}
        1 => {
            spec.insert("policyTypes".into(), json!(["Ingress"]));
        }
        2 => {
            spec.insert("policyTypes".into(), json!(["Egress"]));
        }
        _ => {
            spec.insert("policyTypes".into(), json!(["Ingress", "Egress"]));
        }
    }
    for (key, peers) in [("ingress", "from"), ("egress", "to")] {
        let n = rng.below(3);
        if n > 0 || rng.chance(20) {
            spec.insert(
                key.into(),
                Value::Array((0..n).map(|_| rule(rng, peers)).collect()),
            );
        }
    }
    policy(
        NAMESPACES[rng.below(NAMESPACES.len())],
        &format!("np{i}"),
        Value::Object(spec),
    )
}

pub fn cluster(seed: u64) -> Cluster {
    let mut rng = Rng::new(seed);
    let pods = (0..8 + rng.below(5))
        .map(|i| random_pod(&mut rng, i))
        .collect();
    let policies = (0..1 + rng.below(4))
        .map(|i| random_policy(&mut rng, i))
        .collect();
    super::cluster(pods, policies)
}

/// One change: a policy added, removed or replaced, a pod relabelled, added or removed.
pub fn mutate(c: &mut Cluster, seed: u64) {
    let mut rng = Rng::new(seed);
    let n = c.model.policies.len();
    match rng.below(6) {
        0 => c
            .model
            .policies
            .push(random_policy(&mut rng, 100 + (seed % 1000) as usize)),
        1 if n > 0 => {
            c.model.policies.remove(rng.below(n));
        }
        2 if n > 0 => {
            let i = rng.below(n);
            let name = c.model.policies[i].metadata.name.clone();
            let mut p = random_policy(&mut rng, i);
            p.metadata.name = name;
            c.model.policies[i] = p;
        }
        3 if !c.model.pods.is_empty() => {
            let i = rng.below(c.model.pods.len());
            c.model.pods[i]
                .labels
                .insert("app".into(), (*rng.pick(&APPS)).to_owned());
        }
        4 => {
            let i = 40 + (seed % 100) as usize;
            if c.model.pods.iter().all(|p| p.name != format!("p{i}")) {
                c.model.pods.push(random_pod(&mut rng, i));
            }
        }
        _ if !c.model.pods.is_empty() => {
            let i = rng.below(c.model.pods.len());
            c.model.pods.remove(i);
        }
        _ => {}
    }
}

/// Every pair of interesting addresses with a few protocols and ports.
pub fn queries(c: &Cluster) -> Vec<(Ipv4Addr, Ipv4Addr, u8, u16)> {
    let mut addresses: Vec<Ipv4Addr> = c.model.pods.iter().map(|p| p.ip).collect();
    addresses.extend(c.nodes.values().flatten().copied());
    addresses.extend(
        [
            "203.0.113.5",
            "203.0.113.200",
            "8.8.8.8",
            "10.244.1.200",
            "10.244.2.100",
        ]
        .iter()
        .map(|a| a.parse::<Ipv4Addr>().expect("address")),
    );
    let mut out = Vec::new();
    let mut rng = Rng::new(addresses.len() as u64);
    for &src in &addresses {
        for &dst in &addresses {
            if src == dst {
                continue;
            }
            for _ in 0..3 {
                let proto = *rng.pick(&[TCP, TCP, UDP, SCTP, ICMP]);
                let port = if proto == ICMP {
                    0
                } else {
                    *rng.pick(&[53u16, 80, 81, 1010, 8080, 9090, 9999])
                };
                out.push((src, dst, proto, port));
            }
        }
    }
    out
}

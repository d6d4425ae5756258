//! kube-router's iptables + ipset NetworkPolicy layout (its `netpol` controller, iptables mode),
//! generated from the same [`PolicyModel`] the eBPF compiler reads. Pure: no IO.
//!
//! The layout, as kube-router's `syncNetworkPolicyChains` and `syncPodFirewallChains` write it
//! (read in cloudnativelabs/kube-router `pkg/controllers/netpol/{policy,pod}.go`):
//! - ipsets: per policy, a `hash:ip` set of the pods its podSelector selects (cluster-wide:
//!   `KUBE-DST-…` for ingress, `KUBE-SRC-…` for egress); per rule, a `hash:ip` set of the peer
//!   pods (`KUBE-SRC-…` for ingress, `KUBE-DST-…` for egress) and a `hash:net` set of its
//!   ipBlocks (`except` entries as `nomatch`). Names: prefix + 16 characters of
//!   base32(sha256(…)).
//! - one chain per policy, `KUBE-NWPLCY-…`: per (peer set, port) a rule that marks
//!   `0x10000/0x10000` and a twin that `RETURN`s when marked;
//! - one chain per local pod that a policy selects, `KUBE-POD-FW-…`: `RELATED,ESTABLISHED`
//!   accept and node-local accept first, then a jump to every policy chain selecting the pod
//!   (inserted at the top, so in reverse order), then NFLOG + `REJECT` of what no policy marked,
//!   then the mark reset; a pod with egress policies gets its jumps and stateful rule again;
//! - `FORWARD`/`INPUT`/`OUTPUT` jump to `KUBE-ROUTER-*`, which jump to a pod's chain by `-d`
//!   (ingress; plus a `physdev --physdev-is-bridged` twin) and `-s` (egress).
//!
//! kube-router rebuilds all of it on any change (`RequestFullSync`): ipsets through
//! `ipset restore` with a temporary set swapped in, and the whole filter table through
//! `iptables-restore`; chain names carry the sync's version, so each sync writes new chains.
//! Calico's iptables mode has the same shape (per-endpoint `cali-tw-`/`cali-fw-` chains,
//! per-policy `cali-pi-`/`cali-po-` chains, selector ipsets) but updates incrementally: the
//! benchmark times that as [`incremental_update`].

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write as _,
    net::Ipv4Addr,
};

use k8s_openapi::{
    api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort},
    apimachinery::pkg::util::intstr::IntOrString,
};
use keelson_api::selectors::LabelSelector;
use keelson_node_agent::datapath::policy::{PodInfo, PolicyModel};

use crate::kubeproxy::hash_prefix;

/// The mark a policy rule sets on what it allows.
const MARK: &str = "0x10000/0x10000";

/// The kind of an ipset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetKind {
    /// Pod addresses.
    HashIp,
    /// CIDRs (ipBlocks).
    HashNet,
}

impl SetKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::HashIp => "hash:ip",
            Self::HashNet => "hash:net",
        }
    }
}

/// One ipset and its members (addresses or CIDRs, `nomatch` suffixed for ipBlock excepts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpSet {
    /// Its name (at most 31 characters).
    pub name: String,
    /// Its type.
    pub kind: SetKind,
    /// Its entries, as `ipset add` takes them.
    pub members: Vec<String>,
}

/// The generated layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Every ipset.
    pub ipsets: Vec<IpSet>,
    /// The filter table, `iptables-restore` input (without `--noflush`: the whole table).
    pub filter: String,
    /// Each policy's chain name and its rules (`-A …` lines), in model order.
    pub policy_chains: Vec<(String, Vec<String>)>,
    /// Local pods with a firewall chain.
    pub pod_chains: usize,
}

/// A policy as kube-router evaluates it.
struct Evaluated {
    namespace: String,
    name: String,
    ingress: bool,
    egress: bool,
    targets: BTreeSet<Ipv4Addr>,
    ingress_rules: Vec<RuleInfo>,
    egress_rules: Vec<RuleInfo>,
}

/// One ingress or egress rule: peer pods, ipBlocks, ports (`None` = every port).
struct RuleInfo {
    all_peers: bool,
    pods: BTreeSet<Ipv4Addr>,
    blocks: Vec<String>,
    ports: Option<Vec<(String, Option<String>)>>,
}

struct Index<'a> {
    pods_by_ns: HashMap<&'a str, Vec<&'a PodInfo>>,
    model: &'a PolicyModel,
}

impl<'a> Index<'a> {
    fn new(model: &'a PolicyModel) -> Self {
        let mut pods_by_ns: HashMap<&str, Vec<&PodInfo>> = HashMap::new();
        for pod in &model.pods {
            pods_by_ns.entry(&pod.namespace).or_default().push(pod);
        }
        Self { pods_by_ns, model }
    }

    fn pods_in(&self, namespace: &str, selector: Option<&LabelSelector>) -> Vec<Ipv4Addr> {
        self.pods_by_ns
            .get(namespace)
            .into_iter()
            .flatten()
            .filter(|p| selector.is_none_or(|s| s.matches(&p.labels)))
            .map(|p| p.ip)
            .collect()
    }

    /// kube-router's `evalPodPeer`: a namespaceSelector (with an optional podSelector) or a
    /// podSelector in the policy's namespace.
    fn peer_pods(&self, namespace: &str, peer: &NetworkPolicyPeer) -> Vec<Ipv4Addr> {
        let pod_selector = peer.pod_selector.as_ref().map(selector);
        if let Some(ns_selector) = peer.namespace_selector.as_ref().map(selector) {
            let mut out = Vec::new();
            for name in self.model.namespaces.keys() {
                if ns_selector.matches(&self.model.namespace_labels(name)) {
                    out.extend(self.pods_in(name, pod_selector.as_ref()));
                }
            }
            out
        } else if pod_selector.is_some() {
            self.pods_in(namespace, pod_selector.as_ref())
        } else {
            Vec::new()
        }
    }
}

fn selector(s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector) -> LabelSelector {
    // An invalid selector selects nothing, as the API server would have refused it.
    LabelSelector::from_label_selector(s)
        .unwrap_or_else(|_| LabelSelector::parse("a-key-no-pod-has").unwrap_or_default())
}

fn ports(ports: Option<&Vec<NetworkPolicyPort>>) -> Option<Vec<(String, Option<String>)>> {
    let ports = ports.filter(|p| !p.is_empty())?;
    Some(
        ports
            .iter()
            .map(|p| {
                let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                let port = match (&p.port, p.end_port) {
                    (Some(IntOrString::Int(start)), Some(end)) => Some(format!("{start}:{end}")),
                    (Some(IntOrString::Int(port)), None) => Some(port.to_string()),
                    // Named ports: the generator has none.
                    (Some(IntOrString::String(_)) | None, _) => None,
                };
                (proto, port)
            })
            .collect(),
    )
}

fn evaluate(index: &Index<'_>, policy: &NetworkPolicy) -> Option<Evaluated> {
    let spec = policy.spec.as_ref()?;
    let namespace = policy.metadata.namespace.clone()?;
    let name = policy.metadata.name.clone()?;
    let types = spec.policy_types.clone().unwrap_or_else(|| {
        let mut t = vec!["Ingress".to_owned()];
        if spec.egress.is_some() {
            t.push("Egress".to_owned());
        }
        t
    });
    let target_selector = spec.pod_selector.as_ref().map(selector);
    let targets = index
        .pods_in(&namespace, target_selector.as_ref())
        .into_iter()
        .collect();
    let rule = |peers: Option<&Vec<NetworkPolicyPeer>>,
                rule_ports: Option<&Vec<NetworkPolicyPort>>| {
        let peers = peers.filter(|p| !p.is_empty());
        let mut pods = BTreeSet::new();
        let mut blocks = Vec::new();
        for peer in peers.into_iter().flatten() {
            pods.extend(index.peer_pods(&namespace, peer));
            if let Some(block) = peer
                .ip_block
                .as_ref()
                .filter(|_| peer.pod_selector.is_none() && peer.namespace_selector.is_none())
            {
                blocks.push(block.cidr.clone());
                for except in block.except.iter().flatten() {
                    blocks.push(format!("{except} nomatch"));
                }
            }
        }
        RuleInfo {
            all_peers: peers.is_none(),
            pods,
            blocks,
            ports: ports(rule_ports),
        }
    };
    Some(Evaluated {
        ingress: types.iter().any(|t| t == "Ingress"),
        egress: types.iter().any(|t| t == "Egress"),
        ingress_rules: spec
            .ingress
            .iter()
            .flatten()
            .map(|r| rule(r.from.as_ref(), r.ports.as_ref()))
            .collect(),
        egress_rules: spec
            .egress
            .iter()
            .flatten()
            .map(|r| rule(r.to.as_ref(), r.ports.as_ref()))
            .collect(),
        namespace,
        name,
        targets,
    })
}

fn name(prefix: &str, parts: &[&str]) -> String {
    let bytes: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
    format!("{prefix}{}", hash_prefix(&bytes, 10))
}

/// kube-router's `networkPolicyChainName`: `KUBE-NWPLCY-` + 16 characters, new per sync version.
pub fn policy_chain(namespace: &str, policy: &str, version: &str) -> String {
    name("KUBE-NWPLCY-", &[namespace, policy, version, "IPv4"])
}

/// kube-router's `podFirewallChainName`: `KUBE-POD-FW-` + 16 characters, new per sync version.
pub fn pod_chain(namespace: &str, pod: &str, version: &str) -> String {
    name("KUBE-POD-FW-", &[namespace, pod, version])
}

/// Appends kube-router's `appendRuleToPolicyChain`: a mark rule and its `RETURN` twin.
fn allow(
    rules: &mut Vec<String>,
    chain: &str,
    comment: &str,
    src: Option<&str>,
    dst: Option<&str>,
    port: Option<&(String, Option<String>)>,
) {
    let mut m = format!("-A {chain} -m comment --comment \"{comment}\"");
    if let Some(src) = src {
        let _ = write!(m, " -m set --match-set {src} src");
    }
    if let Some(dst) = dst {
        let _ = write!(m, " -m set --match-set {dst} dst");
    }
    if let Some((proto, port)) = port {
        let _ = write!(m, " -p {proto}");
        if let Some(port) = port {
            let _ = write!(m, " --dport {port}");
        }
    }
    rules.push(format!("{m} -j MARK --set-xmark {MARK}"));
    rules.push(format!("{m} -m mark --mark {MARK} -j RETURN"));
}

/// One direction's rules of a policy chain; `own` is the policy's target set, matched as the
/// destination (ingress) or the source (egress).
fn direction_rules(
    p: &Evaluated,
    chain: &str,
    ingress: bool,
    own: &str,
    ipsets: &mut Vec<IpSet>,
    rules: &mut Vec<String>,
) {
    let (list, what, peer_prefix) = if ingress {
        (&p.ingress_rules, "ingressrule", "KUBE-SRC-")
    } else {
        (&p.egress_rules, "egressrule", "KUBE-DST-")
    };
    let comment = format!(
        "rule to ACCEPT traffic selected by policy name {} namespace {}",
        p.name, p.namespace
    );
    // (peer set, own set) as (src, dst) for ingress, swapped for egress.
    let pair = |peer: Option<String>| -> (Option<String>, Option<String>) {
        if ingress {
            (peer, Some(own.to_owned()))
        } else {
            (Some(own.to_owned()), peer)
        }
    };
    let emit = |rules: &mut Vec<String>, peer: Option<String>, rule: &RuleInfo| {
        let (src, dst) = pair(peer);
        match &rule.ports {
            Some(ports) => {
                for port in ports {
                    allow(
                        rules,
                        chain,
                        &comment,
                        src.as_deref(),
                        dst.as_deref(),
                        Some(port),
                    );
                }
            }
            None => allow(rules, chain, &comment, src.as_deref(), dst.as_deref(), None),
        }
    };
    for (i, rule) in list.iter().enumerate() {
        let index = i.to_string();
        if !rule.pods.is_empty() {
            let set = name(
                peer_prefix,
                &[p.namespace.as_str(), &p.name, what, &index, "IPv4", "pod"],
            );
            ipsets.push(IpSet {
                name: set.clone(),
                kind: SetKind::HashIp,
                members: rule.pods.iter().map(Ipv4Addr::to_string).collect(),
            });
            emit(rules, Some(set), rule);
        }
        if rule.all_peers {
            emit(rules, None, rule);
        }
        if !rule.blocks.is_empty() {
            let set = name(
                peer_prefix,
                &[
                    p.namespace.as_str(),
                    &p.name,
                    what,
                    &index,
                    "IPv4",
                    "ipblock",
                ],
            );
            ipsets.push(IpSet {
                name: set.clone(),
                kind: SetKind::HashNet,
                members: rule.blocks.clone(),
            });
            emit(rules, Some(set), rule);
        }
    }
}

/// Generates kube-router's layout for `model` at sync `version` (part of the chain names).
pub fn render(model: &PolicyModel, version: &str) -> Layout {
    let index = Index::new(model);
    let policies: Vec<Evaluated> = model
        .policies
        .iter()
        .filter_map(|p| evaluate(&index, p))
        .collect();
    let mut ipsets = Vec::new();
    let mut policy_chains = Vec::new();
    for p in &policies {
        let chain = policy_chain(&p.namespace, &p.name, version);
        let mut rules = Vec::new();
        let targets: Vec<String> = p.targets.iter().map(Ipv4Addr::to_string).collect();
        if p.ingress {
            let own = name("KUBE-DST-", &[p.namespace.as_str(), &p.name, "IPv4"]);
            ipsets.push(IpSet {
                name: own.clone(),
                kind: SetKind::HashIp,
                members: targets.clone(),
            });
            direction_rules(p, &chain, true, &own, &mut ipsets, &mut rules);
        }
        if p.egress {
            let own = name("KUBE-SRC-", &[p.namespace.as_str(), &p.name, "IPv4"]);
            ipsets.push(IpSet {
                name: own.clone(),
                kind: SetKind::HashIp,
                members: targets,
            });
            direction_rules(p, &chain, false, &own, &mut ipsets, &mut rules);
        }
        policy_chains.push((chain, rules));
    }

    // Pod firewall chains, for local pods some policy selects.
    let mut top: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut pod_chain_lines: Vec<(String, Vec<String>)> = Vec::new();
    for pod in model.pods.iter().filter(|p| model.is_local(p)) {
        let selecting: Vec<usize> = policies
            .iter()
            .enumerate()
            .filter(|(_, p)| p.namespace == pod.namespace && p.targets.contains(&pod.ip))
            .map(|(i, _)| i)
            .collect();
        let ingress = selecting.iter().any(|&i| policies[i].ingress);
        let egress = selecting.iter().any(|&i| policies[i].egress);
        if !ingress && !egress {
            continue;
        }
        let chain = pod_chain(&pod.namespace, &pod.name, version);
        let ip = pod.ip;
        // Built front to back; kube-router inserts at position 1, hence the reversals.
        let jumps = |lines: &mut Vec<String>| {
            for &i in selecting.iter().rev() {
                let p = &policies[i];
                lines.push(format!(
                    "-A {chain} -m comment --comment \"run through nw policy {}\" -j {}",
                    p.name, policy_chains[i].0
                ));
            }
        };
        let stateful = format!(
            "-A {chain} -m comment --comment \"rule for stateful firewall for pod\" -m conntrack \
             --ctstate RELATED,ESTABLISHED -j ACCEPT"
        );
        let mut lines = Vec::new();
        if egress {
            lines.push(stateful.clone());
            jumps(&mut lines);
        }
        if ingress {
            lines.push(stateful);
            lines.push(format!(
                "-A {chain} -m comment --comment \"rule to permit the traffic traffic to pods when \
                 source is the pod's local node\" -m addrtype --src-type LOCAL -d {ip} -j ACCEPT"
            ));
            jumps(&mut lines);
        }
        let who = format!("POD name:{} namespace: {}", pod.name, pod.namespace);
        lines.push(format!(
            "-A {chain} -m comment --comment \"rule to log dropped traffic {who}\" -m mark ! \
             --mark {MARK} -j NFLOG --nflog-group 100 -m limit --limit 10/minute --limit-burst 10"
        ));
        lines.push(format!(
            "-A {chain} -m comment --comment \"rule to REJECT traffic destined for {who}\" -m mark \
             ! --mark {MARK} -j REJECT"
        ));
        lines.push(format!("-A {chain} -j MARK --set-mark 0/0x10000"));
        if ingress {
            let comment = format!("rule to jump traffic destined to {who} to chain {chain}");
            let forward = top.entry("KUBE-ROUTER-FORWARD").or_default();
            forward.insert(
                0,
                format!(
                    "-A KUBE-ROUTER-FORWARD -m comment --comment \"{comment}\" -d {ip} -j {chain}"
                ),
            );
            forward.insert(
                0,
                format!(
                    "-A KUBE-ROUTER-FORWARD -m physdev --physdev-is-bridged -m comment --comment \
                     \"{comment}\" -d {ip} -j {chain}"
                ),
            );
            top.entry("KUBE-ROUTER-OUTPUT").or_default().insert(
                0,
                format!(
                    "-A KUBE-ROUTER-OUTPUT -m comment --comment \"{comment}\" -d {ip} -j {chain}"
                ),
            );
        }
        if egress {
            let comment = format!("rule to jump traffic from {who} to chain {chain}");
            for parent in [
                "KUBE-ROUTER-INPUT",
                "KUBE-ROUTER-FORWARD",
                "KUBE-ROUTER-OUTPUT",
            ] {
                top.entry(parent).or_default().push(format!(
                    "-A {parent} -m comment --comment \"{comment}\" -s {ip} -j {chain}"
                ));
            }
            top.entry("KUBE-ROUTER-FORWARD").or_default().insert(
                0,
                format!(
                    "-A KUBE-ROUTER-FORWARD -m physdev --physdev-is-bridged -m comment --comment \
                     \"{comment}\" -s {ip} -j {chain}"
                ),
            );
        }
        pod_chain_lines.push((chain, lines));
    }

    let mut filter =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for parent in [
        "KUBE-ROUTER-INPUT",
        "KUBE-ROUTER-FORWARD",
        "KUBE-ROUTER-OUTPUT",
    ] {
        let _ = writeln!(filter, ":{parent} - [0:0]");
    }
    for (chain, _) in pod_chain_lines.iter().chain(&policy_chains) {
        let _ = writeln!(filter, ":{chain} - [0:0]");
    }
    for (hook, parent) in [
        ("INPUT", "KUBE-ROUTER-INPUT"),
        ("FORWARD", "KUBE-ROUTER-FORWARD"),
        ("OUTPUT", "KUBE-ROUTER-OUTPUT"),
    ] {
        let _ = writeln!(
            filter,
            "-A {hook} -m comment --comment \"kube-router netpol - {parent}\" -j {parent}"
        );
    }
    for lines in top.values() {
        for line in lines {
            filter.push_str(line);
            filter.push('\n');
        }
    }
    for (_, lines) in pod_chain_lines.iter().chain(&policy_chains) {
        for line in lines {
            filter.push_str(line);
            filter.push('\n');
        }
    }
    filter.push_str("COMMIT\n");
    Layout {
        ipsets,
        filter,
        pod_chains: pod_chain_lines.len(),
        policy_chains,
    }
}

/// `ipset restore` input that creates or refills `sets` as kube-router does: each set's new
/// contents go into a temporary set of its type that is then swapped in, so a set in use is
/// never seen empty.
pub fn ipset_restore(sets: &[IpSet]) -> String {
    let mut out = String::new();
    let create = |out: &mut String, name: &str, kind: SetKind| {
        let _ = writeln!(
            out,
            "create {name} {} family inet hashsize 64 maxelem 65536 -exist",
            kind.as_str()
        );
    };
    let tmp = |kind: SetKind| match kind {
        SetKind::HashIp => "TMP-KRBENCH-IP",
        SetKind::HashNet => "TMP-KRBENCH-NET",
    };
    for kind in [SetKind::HashIp, SetKind::HashNet] {
        create(&mut out, tmp(kind), kind);
    }
    for set in sets {
        create(&mut out, &set.name, set.kind);
        let tmp = tmp(set.kind);
        let _ = writeln!(out, "flush {tmp}");
        for member in &set.members {
            let _ = writeln!(out, "add {tmp} {member}");
        }
        let _ = writeln!(out, "swap {tmp} {}", set.name);
    }
    for kind in [SetKind::HashIp, SetKind::HashNet] {
        let _ = writeln!(out, "destroy {}", tmp(kind));
    }
    out
}

/// What a Calico-style incremental update of policy `index` writes, from the layout `before`
/// the change to the layout `after`: the sets that are new or changed (`ipset restore`) and
/// the policy's chain rewritten (`iptables-restore --noflush`; declaring the chain flushes it).
/// Both layouts must be rendered with the same version.
pub fn incremental_update(before: &Layout, after: &Layout, index: usize) -> (String, String) {
    let old: HashMap<&str, &IpSet> = before.ipsets.iter().map(|s| (s.name.as_str(), s)).collect();
    let changed: Vec<IpSet> = after
        .ipsets
        .iter()
        .filter(|s| old.get(s.name.as_str()).is_none_or(|o| **o != **s))
        .cloned()
        .collect();
    let mut filter = String::from("*filter\n");
    if let Some((chain, rules)) = after.policy_chains.get(index) {
        let _ = writeln!(filter, ":{chain} - [0:0]");
        for rule in rules {
            filter.push_str(rule);
            filter.push('\n');
        }
    }
    filter.push_str("COMMIT\n");
    (ipset_restore(&changed), filter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::model::{self, client_addr, guarded_addr, server_addr};

    fn chain_of<'a>(layout: &'a Layout, policy: &str) -> &'a [String] {
        let chain = policy_chain(model::BENCH_NAMESPACE, policy, "v1");
        &layout
            .policy_chains
            .iter()
            .find(|(c, _)| *c == chain)
            .expect("the policy's chain")
            .1
    }

    #[test]
    fn the_path_policy_marks_client_to_server_8080_both_ways() {
        let m = model::model(2);
        let layout = render(&m, "v1");
        let rules = chain_of(&layout, "bench-path");
        // Ingress from loadgen and egress to echo, each a mark rule and its RETURN twin.
        assert_eq!(rules.len(), 4, "{rules:#?}");
        assert!(rules[0].contains("-p tcp --dport 8080 -j MARK --set-xmark 0x10000/0x10000"));
        assert!(rules[1].ends_with("-m mark --mark 0x10000/0x10000 -j RETURN"));
        let set = |name: &str| {
            layout
                .ipsets
                .iter()
                .find(|s| {
                    rules[0].contains(&format!("--match-set {} src", s.name)) && name == "src"
                        || rules[0].contains(&format!("--match-set {} dst", s.name))
                            && name == "dst"
                })
                .expect("a set the rule matches")
                .members
                .clone()
        };
        assert_eq!(set("src"), [client_addr().to_string()]);
        assert_eq!(
            set("dst"),
            [client_addr().to_string(), server_addr().to_string()],
            "the policy selects role=bench"
        );
        // The guard's peer selects no pod: no set, no rule; its pod is rejected.
        assert!(chain_of(&layout, "bench-guard").is_empty());
        assert_eq!(
            layout.pod_chains, 3,
            "client, server and guarded are policed"
        );
        let guarded_jump = format!("-d {} -j KUBE-POD-FW-", guarded_addr());
        assert!(layout.filter.contains(&guarded_jump));
        assert!(layout.filter.starts_with("*filter\n") && layout.filter.ends_with("COMMIT\n"));
    }

    #[test]
    fn pod_chains_jump_to_every_selecting_policy_then_reject() {
        let m = model::model(400);
        let layout = render(&m, "v1");
        let server_chain = pod_chain(model::BENCH_NAMESPACE, "server", "v1");
        let lines: Vec<&str> = layout
            .filter
            .lines()
            .filter(|l| l.starts_with(&format!("-A {server_chain} ")))
            .collect();
        let selecting = m
            .policies
            .iter()
            .filter(|p| {
                p.metadata.namespace.as_deref() == Some(model::BENCH_NAMESPACE)
                    && serde_json::to_string(&p.spec)
                        .is_ok_and(|s| s.contains("\"role\":\"bench\""))
            })
            .count();
        let jumps = lines
            .iter()
            .filter(|l| l.contains("-j KUBE-NWPLCY-"))
            .count();
        // The server has egress (bench-path) and ingress policies: its jumps appear twice.
        assert_eq!(jumps, 2 * selecting, "{lines:#?}");
        assert!(lines[0].contains("--ctstate RELATED,ESTABLISHED -j ACCEPT"));
        assert!(lines[lines.len() - 2].ends_with("-j REJECT"));
        assert!(layout.ipsets.iter().all(|s| s.name.len() <= 31));
        let names: BTreeSet<_> = layout.ipsets.iter().map(|s| &s.name).collect();
        assert_eq!(names.len(), layout.ipsets.len(), "set names are unique");
        assert!(
            layout
                .ipsets
                .iter()
                .any(|s| s.kind == SetKind::HashNet
                    && s.members.iter().any(|m| m.ends_with(" nomatch"))),
            "ipBlock excepts are nomatch entries"
        );
        assert_eq!(render(&m, "v1"), layout, "deterministic");
        assert_ne!(
            render(&m, "v2").filter,
            layout.filter,
            "chains carry the version"
        );
    }

    #[test]
    fn ipset_restore_swaps_each_set_in_and_the_change_touches_one_set_and_chain() {
        let sets = [IpSet {
            name: "KUBE-SRC-X".to_owned(),
            kind: SetKind::HashNet,
            members: vec!["10.0.0.0/24".to_owned(), "10.0.0.0/28 nomatch".to_owned()],
        }];
        let script = ipset_restore(&sets);
        let expected = "create KUBE-SRC-X hash:net family inet hashsize 64 maxelem 65536 -exist\n\
                        flush TMP-KRBENCH-NET\nadd TMP-KRBENCH-NET 10.0.0.0/24\n\
                        add TMP-KRBENCH-NET 10.0.0.0/28 nomatch\nswap TMP-KRBENCH-NET KUBE-SRC-X\n";
        assert!(script.contains(expected), "{script}");
        assert!(script.ends_with("destroy TMP-KRBENCH-IP\ndestroy TMP-KRBENCH-NET\n"));

        let m = model::model(100);
        let before = render(&m, "v1");
        let after = render(&model::with_added_peer(&m), "v1");
        let (sets, chain) = incremental_update(&before, &after, 0);
        let swapped = sets.lines().filter(|l| l.starts_with("swap ")).count();
        assert_eq!(swapped, 1, "only the rule's peer set changes: {sets}");
        assert!(
            sets.contains("add TMP-KRBENCH-IP 10.210."),
            "app-07 pods join: {sets}"
        );
        let chain_name = policy_chain(model::BENCH_NAMESPACE, "bench-path", "v1");
        assert!(chain.starts_with(&format!("*filter\n:{chain_name} - [0:0]\n")));
        assert_eq!(chain.lines().filter(|l| l.starts_with("-A ")).count(), 4);
    }
}

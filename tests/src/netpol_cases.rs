//! The NetworkPolicy truth-table cases (after upstream's `test/e2e/network/netpol/
//! network_policy.go`) and the runner both truth-table tests share: every case applies its
//! policies, expects its matrix on TCP and UDP ports 80 and 81, and is deleted before the next.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use crate::netpol::{
    A, ALL, ANY, B, C, Kube, NetpolPod, On, Peer, PodId, Proto, Reachability, SERVICES, Via, X, Y,
    Z, expect_matrix, probe_loop,
};

/// A NetworkPolicy named `name` in logical namespace `ns` with `spec` (YAML, indented by two).
fn policy(kube: &Kube<'_>, ns: usize, name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {}}}\nspec:\n{spec}",
        kube.ns(ns)
    )
}

/// One truth-table case.
#[derive(Debug)]
pub struct Case {
    /// What it checks.
    pub name: &'static str,
    /// The policies (a YAML stream) applied before probing; empty for none.
    pub policies: String,
    /// The expected matrix (loopback is always allowed on top).
    pub expected: Reachability,
    /// How the probes address their targets.
    pub via: Via,
}

/// Everything open.
fn open() -> Reachability {
    Reachability::new(true)
}

/// The cases, in the order they run. `pods` gives the addresses ipBlock cases name.
pub fn cases(kube: &Kube<'_>, pods: &[NetpolPod]) -> Vec<Case> {
    let ip = |ns: usize, pod: usize| {
        pods.iter()
            .find(|p| p.id == PodId { ns, pod })
            .expect("every pod")
            .ip
    };
    let p = |ns: usize, name: &str, spec: &str| policy(kube, ns, name, spec);
    let (ny, nz) = (kube.ns(Y), kube.ns(Z));
    let tcp80 = On::only(Proto::Tcp, 80);
    let tcp81 = On::only(Proto::Tcp, 81);
    vec![
        Case {
            name: "no policies",
            policies: String::new(),
            expected: open(),
            via: Via::PodIp,
        },
        Case {
            name: "no policies, through the ClusterIPs",
            policies: String::new(),
            expected: open(),
            via: Via::ClusterIp,
        },
        Case {
            name: "default-deny ingress in x",
            policies: p(X, "deny-ingress", "  podSelector: {}\n  policyTypes: [Ingress]\n"),
            expected: open().expect(ANY, Peer::ns(X), ALL, false),
            via: Via::PodIp,
        },
        Case {
            name: "default-deny egress in x",
            policies: p(X, "deny-egress", "  podSelector: {}\n  policyTypes: [Egress]\n"),
            expected: open().expect(Peer::ns(X), ANY, ALL, false),
            via: Via::PodIp,
        },
        Case {
            name: "deny all ingress and egress in x",
            policies: p(
                X,
                "deny-all",
                "  podSelector: {}\n  policyTypes: [Ingress, Egress]\n",
            ),
            expected: open()
                .expect(ANY, Peer::ns(X), ALL, false)
                .expect(Peer::ns(X), ANY, ALL, false),
            via: Via::PodIp,
        },
        Case {
            name: "x/a admits x/b only (podSelector)",
            policies: p(
                X,
                "a-from-b",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}\n",
            ),
            expected: open()
                .expect(ANY, Peer::pod(X, A), ALL, false)
                .expect(Peer::pod(X, B), Peer::pod(X, A), ALL, true),
            via: Via::PodIp,
        },
        Case {
            name: "x admits its own namespace only (podSelector {})",
            policies: p(
                X,
                "same-ns",
                "  podSelector: {}\n  ingress:\n  - from:\n    - podSelector: {}\n",
            ),
            expected: open()
                .expect(ANY, Peer::ns(X), ALL, false)
                .expect(Peer::ns(X), Peer::ns(X), ALL, true),
            via: Via::PodIp,
        },
        Case {
            name: "x/a admits namespace y (namespaceSelector)",
            policies: p(
                X,
                "a-from-y",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: 'y'}}\n",
            ),
            expected: open()
                .expect(ANY, Peer::pod(X, A), ALL, false)
                .expect(Peer::ns(Y), Peer::pod(X, A), ALL, true),
            via: Via::PodIp,
        },
        Case {
            name: "x/a admits pod b of namespaces y and z (namespaceSelector AND podSelector)",
            policies: p(
                X,
                "a-from-b-of-y-z",
                &format!(
                    "  podSelector: {{matchLabels: {{pod: a}}}}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchExpressions:\n        - {{key: kubernetes.io/metadata.name, operator: In, values: [{ny}, {nz}]}}\n      podSelector: {{matchLabels: {{pod: b}}}}\n"
                ),
            ),
            expected: open()
                .expect(ANY, Peer::pod(X, A), ALL, false)
                .expect(Peer::pod(Y, B), Peer::pod(X, A), ALL, true)
                .expect(Peer::pod(Z, B), Peer::pod(X, A), ALL, true),
            via: Via::PodIp,
        },
        Case {
            name: "x/a admits x/b or namespace y (two peers: OR)",
            policies: p(
                X,
                "a-from-b-or-y",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - podSelector: {matchLabels: {pod: b}}\n    - namespaceSelector: {matchLabels: {ns: 'y'}}\n",
            ),
            expected: open()
                .expect(ANY, Peer::pod(X, A), ALL, false)
                .expect(Peer::pod(X, B), Peer::pod(X, A), ALL, true)
                .expect(Peer::ns(Y), Peer::pod(X, A), ALL, true),
            via: Via::PodIp,
        },
        Case {
            name: "x/a egress to ipBlock 10.0.0.0/8 except y/b's /32",
            policies: p(
                X,
                "a-to-cidr-except",
                &format!(
                    "  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {{cidr: 10.0.0.0/8, except: [{}/32]}}\n",
                    ip(Y, B)
                ),
            ),
            expected: open().expect(Peer::pod(X, A), Peer::pod(Y, B), ALL, false),
            via: Via::PodIp,
        },
        Case {
            name: "x/a egress: the except of one policy, y/b's /32 on TCP 80 in another (union)",
            policies: [
                p(
                    X,
                    "a-to-cidr-except",
                    &format!(
                        "  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {{cidr: 10.0.0.0/8, except: [{}/32]}}\n",
                        ip(Y, B)
                    ),
                ),
                p(
                    X,
                    "a-to-yb-tcp80",
                    &format!(
                        "  podSelector: {{matchLabels: {{pod: a}}}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - ipBlock: {{cidr: {}/32}}\n    ports:\n    - {{protocol: TCP, port: 80}}\n",
                        ip(Y, B)
                    ),
                ),
            ]
            .concat(),
            expected: open()
                .expect(Peer::pod(X, A), Peer::pod(Y, B), ALL, false)
                .expect(Peer::pod(X, A), Peer::pod(Y, B), tcp80, true),
            via: Via::PodIp,
        },
        Case {
            name: "x admits the named port `web` (TCP 80 on a and b, TCP 81 on c)",
            policies: p(
                X,
                "named-web",
                "  podSelector: {}\n  ingress:\n  - ports:\n    - {port: web}\n",
            ),
            expected: open()
                .expect(ANY, Peer::ns(X), ALL, false)
                .expect(ANY, Peer::pod(X, A), tcp80, true)
                .expect(ANY, Peer::pod(X, B), tcp80, true)
                .expect(ANY, Peer::pod(X, C), tcp81, true),
            via: Via::PodIp,
        },
        Case {
            name: "x/a egress to the named port `web` only (resolved per destination pod)",
            policies: p(
                X,
                "a-egress-web",
                "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - ports:\n    - {protocol: TCP, port: web}\n",
            ),
            expected: open()
                .expect(Peer::pod(X, A), ANY, ALL, false)
                .expect(Peer::pod(X, A), Peer::named(A), tcp80, true)
                .expect(Peer::pod(X, A), Peer::named(B), tcp80, true)
                .expect(Peer::pod(X, A), Peer::named(C), tcp81, true),
            via: Via::PodIp,
        },
        Case {
            name: "x/a admits TCP 81-90 (endPort)",
            policies: p(
                X,
                "a-port-range",
                "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports:\n    - {protocol: TCP, port: 81, endPort: 90}\n",
            ),
            expected: open()
                .expect(ANY, Peer::pod(X, A), ALL, false)
                .expect(ANY, Peer::pod(X, A), tcp81, true),
            via: Via::PodIp,
        },
        Case {
            name: "x admits UDP on any port only (protocol without port)",
            policies: p(
                X,
                "udp-only",
                "  podSelector: {}\n  ingress:\n  - ports:\n    - {protocol: UDP}\n",
            ),
            expected: open()
                .expect(ANY, Peer::ns(X), On::proto(Proto::Tcp), false),
            via: Via::PodIp,
        },
        Case {
            name: "x/a admits y on TCP 80 and pods c anywhere on UDP 81 (two policies: union)",
            policies: [
                p(
                    X,
                    "a-from-y-tcp80",
                    "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: 'y'}}\n    ports:\n    - {protocol: TCP, port: 80}\n",
                ),
                p(
                    X,
                    "a-from-c-udp81",
                    "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {}\n      podSelector: {matchLabels: {pod: c}}\n    ports:\n    - {protocol: UDP, port: 81}\n",
                ),
            ]
            .concat(),
            expected: open()
                .expect(ANY, Peer::pod(X, A), ALL, false)
                .expect(Peer::ns(Y), Peer::pod(X, A), tcp80, true)
                .expect(Peer::named(C), Peer::pod(X, A), On::only(Proto::Udp, 81), true),
            via: Via::PodIp,
        },
        Case {
            name: "stacked: allow-all ingress beats deny-all in x; x/a's egress deny beats y's \
                   allow-all ingress",
            policies: [
                p(X, "deny-ingress", "  podSelector: {}\n  policyTypes: [Ingress]\n"),
                p(X, "allow-ingress", "  podSelector: {}\n  ingress:\n  - {}\n"),
                p(
                    X,
                    "a-deny-egress",
                    "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n",
                ),
                p(Y, "allow-ingress", "  podSelector: {}\n  ingress:\n  - {}\n"),
            ]
            .concat(),
            expected: open().expect(Peer::pod(X, A), ANY, ALL, false),
            via: Via::PodIp,
        },
        Case {
            name: "x/a egress to pods b only, probed through the ClusterIPs (judged by backend)",
            policies: p(
                X,
                "a-to-b-pods",
                "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: {}\n      podSelector: {matchLabels: {pod: b}}\n",
            ),
            expected: open()
                .expect(Peer::pod(X, A), ANY, ALL, false)
                .expect(Peer::pod(X, A), Peer::named(B), ALL, true),
            via: Via::ClusterIp,
        },
    ]
}

/// Runs every case in order, then the DNS-only egress case and the policy added and removed
/// while a loop probes. Prints each case's time to converge.
pub fn run_truth_table(kube: &Kube<'_>, pods: &[NetpolPod]) {
    let started = Instant::now();
    let all = cases(kube, pods);
    let count = all.len() + 2;
    for (i, case) in all.into_iter().enumerate() {
        let file = format!("case-{i}");
        if !case.policies.is_empty() {
            kube.apply(&file, &case.policies);
        }
        let expected = case.expected.allow_loopback();
        let took = expect_matrix(case.name, pods, case.via, &expected);
        eprintln!("case {i:>2} {:<90} {:.1} s", case.name, took.as_secs_f64());
        if let Some(dropped_flows) = kube.dropped_flows
            && expected.any_denied()
        {
            check_observed(case.name, &case.policies, &dropped_flows());
        }
        if !case.policies.is_empty() {
            kube.delete(&file);
        }
    }
    egress_only_dns(kube, pods);
    added_and_removed_while_probing(kube, pods);
    eprintln!(
        "{count} truth-table cases in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn pod(pods: &[NetpolPod], ns: usize, p: usize) -> &NetpolPod {
    pods.iter()
        .find(|q| q.id == PodId { ns, pod: p })
        .expect("every pod")
}

/// x may only speak DNS: its pods resolve Service names through the cluster DNS (to the
/// Service's ClusterIP), and every probe from x fails.
fn egress_only_dns(kube: &Kube<'_>, pods: &[NetpolPod]) {
    let yaml = policy(
        kube,
        X,
        "dns-only",
        "  podSelector: {}\n  policyTypes: [Egress]\n  egress:\n  - ports:\n    - {protocol: UDP, port: 53}\n    - {protocol: TCP, port: 53}\n",
    );
    kube.apply("dns-only", &yaml);
    let expected = open().expect(Peer::ns(X), ANY, ALL, false).allow_loopback();
    let name = "x egress only DNS (UDP and TCP 53)";
    let took = expect_matrix(name, pods, Via::PodIp, &expected);
    let target = pod(pods, Y, B);
    let fqdn = format!("s-b.{}.svc.cluster.local", kube.ns(Y));
    for from in pods.iter().filter(|p| p.id.ns == X) {
        let (ok, out) = crate::pods::exec(
            &from.container,
            &format!("timeout 10 nslookup -type=a {fqdn}"),
        );
        assert!(
            ok && out.contains(&target.cluster_ip.to_string()),
            "{}: under {name:?} the cluster DNS still resolves {fqdn} to {}:\n{out}",
            from.id,
            target.cluster_ip
        );
    }
    eprintln!(
        "case    {name:<90} {:.1} s (and DNS answers)",
        took.as_secs_f64()
    );
    kube.delete("dns-only");
}

/// While y/a probes x/a on TCP 80 in a loop, a default-deny ingress policy is added to x (the
/// loop starts failing) and removed again (it succeeds again): the loop sees allowed, then
/// denied, then allowed, with no flapping in between.
fn added_and_removed_while_probing(kube: &Kube<'_>, pods: &[NetpolPod]) {
    let name = "default-deny ingress in x added and removed while y/a probes x/a";
    let (from, to) = (pod(pods, Y, A), pod(pods, X, A));
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let seen = std::thread::scope(|scope| {
        let prober = scope.spawn(|| probe_loop(from, to, SERVICES[0], &stop));
        let guard = StopOnDrop(&stop);
        std::thread::sleep(Duration::from_millis(1500));
        kube.apply(
            "added-removed",
            &policy(
                kube,
                X,
                "deny-ingress",
                "  podSelector: {}\n  policyTypes: [Ingress]\n",
            ),
        );
        let denied = open().expect(ANY, Peer::ns(X), ALL, false).allow_loopback();
        expect_matrix(&format!("{name}: added"), pods, Via::PodIp, &denied);
        // Long enough for the loop (a denied probe waits 1 s) to see the denial a few times.
        std::thread::sleep(Duration::from_millis(2500));
        kube.delete("added-removed");
        expect_matrix(&format!("{name}: removed"), pods, Via::PodIp, &open());
        std::thread::sleep(Duration::from_millis(1500));
        drop(guard);
        prober.join().expect("the probe loop")
    });
    let mut runs: Vec<(bool, usize)> = Vec::new();
    for ok in &seen {
        match runs.last_mut() {
            Some((value, n)) if value == ok => *n += 1,
            _ => runs.push((*ok, 1)),
        }
    }
    let shape: Vec<bool> = runs.iter().map(|(v, _)| *v).collect();
    assert_eq!(
        shape,
        [true, false, true],
        "{name}: the loop's results (runs of (allowed, count)) must go allowed -> denied -> \
         allowed: {runs:?}"
    );
    eprintln!(
        "case    {name:<90} {:.1} s ({} probes: {runs:?})",
        started.elapsed().as_secs_f64(),
        seen.len()
    );
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// `namespace/name` of every NetworkPolicy in a YAML stream written by [`policy`].
fn policy_names(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("metadata: {name: ")?;
            let (name, rest) = rest.split_once(", namespace: ")?;
            Some(format!("{}/{name}", rest.trim_end_matches('}')))
        })
        .collect()
}

/// The flow view shows drops of the case, each naming policies that isolate the pod, among
/// them one of the case's (`observe`'s JSON lines).
fn check_observed(case: &str, policies: &str, observed: &str) {
    let names = policy_names(policies);
    assert!(!names.is_empty(), "{case}: no policy names in {policies}");
    let records: Vec<serde_json::Value> = observed
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{case}: observe printed {line:?}: {e}"))
        })
        .collect();
    let named = records.iter().any(|record| {
        record["verdict"] == "dropped"
            && record["policies"]
                .as_array()
                .is_some_and(|list| list.iter().any(|p| names.iter().any(|n| p == n.as_str())))
    });
    assert!(
        named,
        "{case}: `observe` shows no dropped flow naming {names:?}; its last lines:\n{}",
        observed
            .lines()
            .rev()
            .take(10)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[cfg(test)]
mod observe_tests {
    use super::*;

    #[test]
    fn policy_names_are_read_from_the_written_yaml() {
        let yaml = "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny-ingress, namespace: np1-x}\nspec:\n  podSelector: {}\n";
        assert_eq!(policy_names(yaml), ["np1-x/deny-ingress"]);
    }

    #[test]
    fn a_drop_naming_a_policy_of_the_case_passes_and_none_fails() {
        let policies = "metadata: {name: deny, namespace: x}\n";
        check_observed(
            "case",
            policies,
            r#"{"verdict":"dropped","policies":["x/other","x/deny"]}"#,
        );
        let missing = std::panic::catch_unwind(|| {
            check_observed(
                "case",
                policies,
                r#"{"verdict":"dropped","policies":["x/other"]}"#,
            );
        });
        assert!(missing.is_err());
    }
}

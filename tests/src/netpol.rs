//! The NetworkPolicy truth table, in the style of Kubernetes' own netpol e2e
//! (`test/e2e/network/netpol`): namespaces x, y, z (prefixed per run), pods a, b, c in each,
//! every pod serving TCP and UDP on ports 80 and 81; every pod probes every pod on the four
//! (protocol, port) pairs and the observed matrix must equal the expected [`Reachability`].
//!
//! Pods run `keelson-netpol-agnhost serve` from a hostPath (with the host's `/lib` and `/lib64`,
//! busybox having no UDP client); a probe round is one `docker exec` per source pod running
//! `keelson-netpol-agnhost probe` with its 36 targets at once. A probe counts as allowed only if
//! the answer names the target pod, so a misrouted packet is a failure too. The cases live in
//! [`crate::netpol_cases`].

use std::{
    fmt,
    net::Ipv4Addr,
    path::Path,
    time::{Duration, Instant},
};

/// The logical namespaces, in the order of the matrices.
pub const NAMESPACES: [&str; 3] = ["x", "y", "z"];
/// The logical pods of every namespace.
pub const PODS: [&str; 3] = ["a", "b", "c"];
/// Index of namespace x.
pub const X: usize = 0;
/// Index of namespace y.
pub const Y: usize = 1;
/// Index of namespace z.
pub const Z: usize = 2;
/// Index of pod a.
pub const A: usize = 0;
/// Index of pod b.
pub const B: usize = 1;
/// Index of pod c.
pub const C: usize = 2;
/// How long one probe waits for its answer.
pub const PROBE_TIMEOUT_MS: u64 = 1000;
/// How long a case may take to converge to its expected matrix.
pub const CONVERGE: Duration = Duration::from_secs(15);
/// Where the pods mount the directory holding `keelson-netpol-agnhost`.
const BIN_MOUNT: &str = "/keelson-bin";

/// A transport protocol probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP: a connection and the server's line.
    Tcp,
    /// UDP: a datagram and the server's answer.
    Udp,
}

/// A (protocol, port) pair every pod serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Service {
    /// The protocol.
    pub proto: Proto,
    /// The port.
    pub port: u16,
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
        };
        write!(f, "{proto}/{}", self.port)
    }
}

/// The four (protocol, port) pairs, in the order of the printed matrices.
pub const SERVICES: [Service; 4] = [
    Service {
        proto: Proto::Tcp,
        port: 80,
    },
    Service {
        proto: Proto::Tcp,
        port: 81,
    },
    Service {
        proto: Proto::Udp,
        port: 80,
    },
    Service {
        proto: Proto::Udp,
        port: 81,
    },
];

/// One of the nine pods: (namespace index, pod index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PodId {
    /// Index into [`NAMESPACES`].
    pub ns: usize,
    /// Index into [`PODS`].
    pub pod: usize,
}

impl PodId {
    /// The pod's position in a matrix row or column (x/a = 0 ... z/c = 8).
    pub fn index(self) -> usize {
        self.ns * 3 + self.pod
    }

    /// The nine pods, in matrix order.
    pub fn all() -> impl Iterator<Item = PodId> {
        (0..9).map(|i| PodId {
            ns: i / 3,
            pod: i % 3,
        })
    }
}

impl fmt::Display for PodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", NAMESPACES[self.ns], PODS[self.pod])
    }
}

/// A set of pods for an expectation: a namespace, a pod name, both or neither (any).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Only pods of this namespace, if set.
    pub ns: Option<usize>,
    /// Only pods of this name, if set.
    pub pod: Option<usize>,
}

/// Every pod.
pub const ANY: Peer = Peer {
    ns: None,
    pod: None,
};

impl Peer {
    /// Every pod of namespace `ns`.
    pub fn ns(ns: usize) -> Self {
        Self {
            ns: Some(ns),
            pod: None,
        }
    }

    /// Pod `pod` of every namespace.
    pub fn named(pod: usize) -> Self {
        Self {
            ns: None,
            pod: Some(pod),
        }
    }

    /// The one pod `ns`/`pod`.
    pub fn pod(ns: usize, pod: usize) -> Self {
        Self {
            ns: Some(ns),
            pod: Some(pod),
        }
    }

    fn matches(self, id: PodId) -> bool {
        self.ns.is_none_or(|ns| ns == id.ns) && self.pod.is_none_or(|pod| pod == id.pod)
    }
}

/// Which of the four (protocol, port) pairs an expectation is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct On {
    /// Only this protocol, if set.
    pub proto: Option<Proto>,
    /// Only this port, if set.
    pub port: Option<u16>,
}

/// All four pairs.
pub const ALL: On = On {
    proto: None,
    port: None,
};

impl On {
    /// One protocol on one port.
    pub fn only(proto: Proto, port: u16) -> Self {
        Self {
            proto: Some(proto),
            port: Some(port),
        }
    }

    /// Both ports of one protocol.
    pub fn proto(proto: Proto) -> Self {
        Self {
            proto: Some(proto),
            port: None,
        }
    }

    fn matches(self, s: Service) -> bool {
        self.proto.is_none_or(|p| p == s.proto) && self.port.is_none_or(|p| p == s.port)
    }
}

/// For each of the four (protocol, port) pairs, a 9x9 matrix: may pod `from` reach pod `to`.
#[derive(Clone, PartialEq, Eq)]
pub struct Reachability {
    cells: [[[bool; 9]; 9]; 4],
}

impl Reachability {
    /// Whether any probe is expected to fail.
    pub fn any_denied(&self) -> bool {
        self.cells
            .iter()
            .flatten()
            .flatten()
            .any(|reaches| !reaches)
    }
}

impl fmt::Debug for Reachability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (s, service) in SERVICES.iter().enumerate() {
            writeln!(f, "{service}:\n{}", self.table(s))?;
        }
        Ok(())
    }
}

impl Reachability {
    /// Every cell `default`.
    pub fn new(default: bool) -> Self {
        Self {
            cells: [[[default; 9]; 9]; 4],
        }
    }

    /// Sets every cell from a pod of `from` to a pod of `to` on the pairs of `on`.
    pub fn expect(mut self, from: Peer, to: Peer, on: On, allowed: bool) -> Self {
        for (s, service) in SERVICES.iter().enumerate() {
            if !on.matches(*service) {
                continue;
            }
            for f in PodId::all().filter(|p| from.matches(*p)) {
                for t in PodId::all().filter(|p| to.matches(*p)) {
                    self.cells[s][f.index()][t.index()] = allowed;
                }
            }
        }
        self
    }

    /// A pod always reaches itself (its traffic never leaves its network namespace), as
    /// upstream's `AllowLoopback`.
    pub fn allow_loopback(mut self) -> Self {
        for service in &mut self.cells {
            for (i, row) in service.iter_mut().enumerate() {
                row[i] = true;
            }
        }
        self
    }

    /// Whether `from` reaches `to` on `SERVICES[s]`.
    pub fn get(&self, s: usize, from: PodId, to: PodId) -> bool {
        self.cells[s][from.index()][to.index()]
    }

    fn set(&mut self, s: usize, from: PodId, to: PodId, value: bool) {
        self.cells[s][from.index()][to.index()] = value;
    }

    /// Upstream's truth-table print of `SERVICES[s]`: rows are sources, columns destinations,
    /// `.` reachable, `X` not.
    pub fn table(&self, s: usize) -> String {
        table(|f, t| self.get(s, f, t))
    }

    /// The whole printout of a mismatch: per pair, expected, observed and their comparison
    /// (`.` agrees, `X` differs).
    pub fn mismatch_report(&self, observed: &Reachability) -> String {
        let mut out = String::new();
        for (s, service) in SERVICES.iter().enumerate() {
            let wrong = PodId::all()
                .flat_map(|f| PodId::all().map(move |t| (f, t)))
                .filter(|&(f, t)| self.get(s, f, t) != observed.get(s, f, t))
                .count();
            out.push_str(&format!(
                "== {service}: {wrong} of 81 wrong\nexpected:\n{}\nobserved:\n{}\ncomparison:\n{}\n",
                self.table(s),
                observed.table(s),
                table(|f, t| self.get(s, f, t) == observed.get(s, f, t)),
            ));
        }
        out
    }
}

fn table(value: impl Fn(PodId, PodId) -> bool) -> String {
    let mut out = String::from("-");
    for to in PodId::all() {
        out.push_str(&format!("\t{to}"));
    }
    for from in PodId::all() {
        out.push_str(&format!("\n{from}"));
        for to in PodId::all() {
            out.push_str(if value(from, to) { "\t." } else { "\tX" });
        }
    }
    out
}

/// The real namespace of logical namespace `ns` for a run with `prefix`.
pub fn namespace(prefix: &str, ns: usize) -> String {
    format!("{prefix}-{}", NAMESPACES[ns])
}

/// The named container ports of pod `pod`: `web` is TCP 80 on a and b but TCP 81 on c (and
/// `alt` the other port), so a policy naming a port resolves it per destination pod.
fn named_ports(pod: usize) -> [(&'static str, u16, &'static str); 4] {
    let (web, alt) = if pod == C { (81, 80) } else { (80, 81) };
    [
        ("web", web, "TCP"),
        ("alt", alt, "TCP"),
        ("web-udp", web, "UDP"),
        ("alt-udp", alt, "UDP"),
    ]
}

/// Namespaces (labelled `ns` x, y or z, quoted: a bare `y` is YAML 1.1 for true), the nine pods (labelled `pod: a|b|c`, pod `i` of
/// namespace `n` on `nodes[(n + i) % len]`) and a Service `s-<pod>` per pod (TCP and UDP, 80
/// and 81). `bin_dir` holds `keelson-netpol-agnhost`.
pub fn manifest(prefix: &str, nodes: &[String], bin_dir: &Path) -> String {
    let bin = bin_dir.display();
    let mut yaml = String::new();
    for (ns, label) in NAMESPACES.iter().enumerate() {
        let name = namespace(prefix, ns);
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{ns: '{label}'}}}}\n"
        ));
    }
    for id in PodId::all() {
        let ns = namespace(prefix, id.ns);
        let pod = PODS[id.pod];
        let node = &nodes[(id.ns + id.pod) % nodes.len()];
        let ports: String = named_ports(id.pod)
            .iter()
            .map(|(name, port, proto)| {
                format!("\n    - {{name: {name}, containerPort: {port}, protocol: {proto}}}")
            })
            .collect();
        yaml.push_str(&format!(
            "---
apiVersion: v1
kind: Pod
metadata: {{name: {pod}, namespace: {ns}, labels: {{pod: {pod}}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: keelson/busybox:1
    command: [{BIN_MOUNT}/keelson-netpol-agnhost, serve, {id}, '80', '81']
    ports:{ports}
    volumeMounts:
    - {{name: bin, mountPath: {BIN_MOUNT}, readOnly: true}}
    - {{name: lib, mountPath: /lib, readOnly: true}}
    - {{name: lib64, mountPath: /lib64, readOnly: true}}
  volumes:
  - {{name: bin, hostPath: {{path: {bin}, type: Directory}}}}
  - {{name: lib, hostPath: {{path: /lib}}}}
  - {{name: lib64, hostPath: {{path: /lib64}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: s-{pod}, namespace: {ns}}}
spec:
  selector: {{pod: {pod}}}
  ports:
  - {{name: tcp-80, port: 80, targetPort: 80, protocol: TCP}}
  - {{name: tcp-81, port: 81, targetPort: 81, protocol: TCP}}
  - {{name: udp-80, port: 80, targetPort: 80, protocol: UDP}}
  - {{name: udp-81, port: 81, targetPort: 81, protocol: UDP}}
"
        ));
    }
    yaml
}

/// A running truth-table pod.
#[derive(Debug, Clone)]
pub struct NetpolPod {
    /// Which pod.
    pub id: PodId,
    /// Its `main` container's Docker id.
    pub container: String,
    /// `status.podIP`.
    pub ip: Ipv4Addr,
    /// Its Service's ClusterIP.
    pub cluster_ip: Ipv4Addr,
    /// `spec.nodeName`.
    pub node: String,
}

/// How the probes address their targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The pod's own address.
    PodIp,
    /// The ClusterIP of the pod's Service (`s-<pod>`): the policy judges the backend.
    ClusterIp,
}

/// The cluster the suite runs against: kubectl (panicking on failure) and a directory for
/// manifests.
pub struct Kube<'a> {
    /// Runs kubectl with these arguments and returns stdout; panics on failure.
    pub kubectl: &'a dyn Fn(&[&str]) -> String,
    /// Where manifests are written before `kubectl apply -f`.
    pub dir: &'a Path,
    /// The per-run prefix of the namespaces.
    pub prefix: String,
    /// The dropped flows the node agents' flow view holds, as `keelson-node-agent observe -o
    /// json --verdict dropped` prints them (`None`: not checked).
    pub dropped_flows: Option<&'a dyn Fn() -> String>,
}

impl std::fmt::Debug for Kube<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kube")
            .field("dir", &self.dir)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Kube<'_> {
    /// Writes `yaml` to `<dir>/<file>.yaml` and applies it.
    pub fn apply(&self, file: &str, yaml: &str) {
        let path = self.dir.join(format!("{file}.yaml"));
        std::fs::write(&path, yaml).expect("write the manifest");
        (self.kubectl)(&["apply", "-f", &path.to_string_lossy()]);
    }

    /// Deletes what `<dir>/<file>.yaml` holds.
    pub fn delete(&self, file: &str) {
        let path = self.dir.join(format!("{file}.yaml"));
        (self.kubectl)(&["delete", "--wait=false", "-f", &path.to_string_lossy()]);
    }

    /// `kubectl <args> -o json`, parsed.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&(self.kubectl)(&all)).expect("kubectl printed JSON")
    }

    /// The real name of logical namespace `ns`.
    pub fn ns(&self, ns: usize) -> String {
        namespace(&self.prefix, ns)
    }
}

/// Applies [`manifest`] and waits until the nine pods are Ready and their Services have
/// ClusterIPs; the pods in matrix order.
pub fn start_pods(kube: &Kube<'_>, nodes: &[String], bin_dir: &Path) -> Vec<NetpolPod> {
    kube.apply("netpol-pods", &manifest(&kube.prefix, nodes, bin_dir));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let mut found = Vec::new();
        for ns in 0..3 {
            let name = kube.ns(ns);
            let pods = kube.json(&["get", "pods", "-n", &name]);
            let services = kube.json(&["get", "services", "-n", &name]);
            for pod in crate::netcluster::ready_items(&pods) {
                let Some(p) = PODS
                    .iter()
                    .position(|n| pod["metadata"]["name"].as_str() == Some(n))
                else {
                    continue;
                };
                let cluster_ip = services["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|s| s["metadata"]["name"].as_str() == Some(&format!("s-{}", PODS[p])))
                    .and_then(|s| s["spec"]["clusterIP"].as_str()?.parse().ok());
                let (Some(ip), Some(cluster_ip), Some(uid), Some(node)) = (
                    pod["status"]["podIP"].as_str().and_then(|s| s.parse().ok()),
                    cluster_ip,
                    pod["metadata"]["uid"].as_str(),
                    pod["spec"]["nodeName"].as_str(),
                ) else {
                    continue;
                };
                found.push(NetpolPod {
                    id: PodId { ns, pod: p },
                    container: crate::pods::container_id(uid, "main"),
                    ip,
                    cluster_ip,
                    node: node.to_owned(),
                });
            }
        }
        if found.len() == 9 {
            found.sort_by_key(|p| p.id);
            return found;
        }
        if Instant::now() > deadline {
            let all = (kube.kubectl)(&["get", "pods", "-A", "-o", "wide"]);
            panic!(
                "{} of 9 truth-table pods Ready after 120 s: {found:?}\n{all}",
                found.len()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The probe target of `pod` on `service` (`tcp:ADDR:PORT`).
fn target(pod: &NetpolPod, service: Service, via: Via) -> String {
    let addr = match via {
        Via::PodIp => pod.ip,
        Via::ClusterIp => pod.cluster_ip,
    };
    let proto = match service.proto {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    };
    format!("{proto}:{addr}:{}", service.port)
}

/// Runs `keelson-netpol-agnhost probe` in `from` for `targets`: per target, the answering pod's
/// name or the failure.
pub fn probe_from(from: &NetpolPod, targets: &[String]) -> Vec<Result<String, String>> {
    let script = format!(
        "{BIN_MOUNT}/keelson-netpol-agnhost probe {PROBE_TIMEOUT_MS} {}",
        targets.join(" ")
    );
    let (ok, out) = crate::pods::exec(&from.container, &script);
    let lines: Vec<&str> = out.lines().collect();
    targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let line = lines.get(i).copied().unwrap_or_default();
            match line.strip_prefix(t.as_str()).map(str::trim) {
                Some(rest) => match rest.split_once(' ') {
                    Some(("ok", name)) => Ok(name.to_owned()),
                    _ => Err(rest.to_owned()),
                },
                None => Err(format!("no probe output (exec ok: {ok}): {out}")),
            }
        })
        .collect()
}

/// One round: every pod probes every pod on the four pairs (one exec per source pod, all at
/// once). A probe is allowed only if the target itself answered; other answers are returned
/// as notes.
pub fn probe_all(pods: &[NetpolPod], via: Via) -> (Reachability, Vec<String>) {
    let mut observed = Reachability::new(false);
    let mut notes = Vec::new();
    let results: Vec<(usize, Vec<Result<String, String>>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, from)| {
                let targets: Vec<String> = SERVICES
                    .iter()
                    .flat_map(|s| pods.iter().map(move |to| target(to, *s, via)))
                    .collect();
                scope.spawn(move || (i, probe_from(from, &targets)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a probe thread"))
            .collect()
    });
    for (i, answers) in results {
        let from = &pods[i];
        for (k, answer) in answers.into_iter().enumerate() {
            let (s, to) = (k / pods.len(), &pods[k % pods.len()]);
            match answer {
                Ok(name) if name == to.id.to_string() => observed.set(s, from.id, to.id, true),
                Ok(name) => notes.push(format!(
                    "{} -> {} {}: answered by {name}",
                    from.id, to.id, SERVICES[s]
                )),
                Err(_) => {}
            }
        }
    }
    (observed, notes)
}

/// Probes until the observed matrix equals `expected` (policies take a moment to reach every
/// agent), at most [`CONVERGE`]; panics with the whole expected/observed matrices otherwise.
/// Returns how long it took.
pub fn expect_matrix(
    case: &str,
    pods: &[NetpolPod],
    via: Via,
    expected: &Reachability,
) -> Duration {
    let started = Instant::now();
    let mut rounds = 0;
    loop {
        let (observed, notes) = probe_all(pods, via);
        rounds += 1;
        if &observed == expected && notes.is_empty() {
            return started.elapsed();
        }
        if started.elapsed() > CONVERGE {
            let placement: Vec<String> = pods
                .iter()
                .map(|p| format!("{} {} (svc {}) on {}", p.id, p.ip, p.cluster_ip, p.node))
                .collect();
            panic!(
                "truth table mismatch in case {case:?} (probes via {via:?}, {rounds} rounds in \
                 {:.1} s); rows are sources, columns destinations, '.' reachable, 'X' not\n{}\
                 {}\npods: {}",
                started.elapsed().as_secs_f64(),
                expected.mismatch_report(&observed),
                notes.join("\n"),
                placement.join(", ")
            );
        }
    }
}

/// Probes `to` on `service` from `from` repeatedly (each probe up to
/// [`PROBE_TIMEOUT_MS`]) until `stop` is set: the results in order.
pub fn probe_loop(
    from: &NetpolPod,
    to: &NetpolPod,
    service: Service,
    stop: &std::sync::atomic::AtomicBool,
) -> Vec<bool> {
    let target = target(to, service, Via::PodIp);
    let mut seen = Vec::new();
    let limit = Instant::now() + Duration::from_secs(120);
    while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < limit {
        let answer = probe_from(from, std::slice::from_ref(&target)).remove(0);
        seen.push(answer.is_ok_and(|name| name == to.id.to_string()));
        std::thread::sleep(Duration::from_millis(100));
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_edit_the_cells_they_name() {
        let r = Reachability::new(true)
            .expect(ANY, Peer::ns(X), ALL, false)
            .expect(
                Peer::pod(Y, B),
                Peer::pod(X, A),
                On::only(Proto::Udp, 81),
                true,
            )
            .allow_loopback();
        let (xa, xb, yb, za) = (
            PodId { ns: X, pod: A },
            PodId { ns: X, pod: B },
            PodId { ns: Y, pod: B },
            PodId { ns: Z, pod: A },
        );
        assert!(!r.get(0, yb, xa), "TCP/80 y/b -> x/a");
        assert!(r.get(3, yb, xa), "UDP/81 y/b -> x/a");
        assert!(!r.get(3, xb, xa), "UDP/81 x/b -> x/a");
        assert!(r.get(1, xa, xa), "loopback");
        assert!(r.get(2, xa, za), "x/a -> z/a");
    }

    #[test]
    fn the_report_marks_the_differing_cells() {
        let expected = Reachability::new(true);
        let observed = Reachability::new(true).expect(
            Peer::pod(Z, C),
            Peer::pod(X, A),
            On::only(Proto::Tcp, 81),
            false,
        );
        let report = expected.mismatch_report(&observed);
        assert!(report.contains("== TCP/81: 1 of 81 wrong"), "{report}");
        assert!(report.contains("== TCP/80: 0 of 81 wrong"), "{report}");
        let z_c_row = report
            .lines()
            .filter(|l| l.starts_with("z/c\t"))
            .nth(5)
            .expect("TCP/81's comparison row of z/c");
        assert!(z_c_row.starts_with("z/c\tX\t."), "{z_c_row}");
    }
}

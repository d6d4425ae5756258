//! End to end, privileged: Services and EndpointSlices applied with the real kubectl to the real
//! control plane reach the node agent's eBPF maps through its watchers and carry traffic; an
//! endpoint change and a Service deletion follow; the agent serves the counters on /metrics.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    lbkit::{Pins, exchanges, node_agent_binary},
    require_root,
    topology::{Topology, backend_addr, backend_name},
};

const CLIENT: &str = env!("CARGO_BIN_EXE_keelson-test-client");
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 77);

/// `keelson-node-agent run`, killed on drop (its pins are the test's to remove).
struct Agent {
    child: Child,
    log: std::path::PathBuf,
}

impl Agent {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn manifest(dir: &std::path::Path, backends: &[usize]) -> String {
    let endpoints: String = backends
        .iter()
        .map(|i| {
            format!(
                "  - addresses: [\"{}\"]\n    conditions: {{ready: true}}\n    nodeName: test-node\n",
                backend_addr(*i)
            )
        })
        .collect();
    let text = format!(
        "apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  clusterIP: {VIP}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
- port: 8080
  protocol: TCP
endpoints:
{endpoints}"
    );
    let path = dir.join(format!("web-{}.yaml", backends.len()));
    std::fs::write(&path, text).expect("write the manifest");
    path.to_string_lossy().into_owned()
}

fn wait_for_list(pins: &Pins, agent: &Agent, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        // Until the agent has loaded its maps, `lb list` fails: that is "not yet" too.
        let output = Command::new(node_agent_binary())
            .args(["lb", "list", "--pin-dir"])
            .arg(pins.path())
            .output()
            .expect("run keelson-node-agent lb list");
        let list = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if output.status.success() && ok(&list) {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within 20 s; lb list:\n{list}\nagent log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn services_applied_with_kubectl_reach_the_datapath_and_carry_traffic() {
    require_root();
    // No node IPAM: without a pod CIDR the agent's pod network stays idle, so this test leaves no
    // pod-CIDR blackhole route in the host.
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    let kubectl = Kubectl::new(33, &plane);
    let topology = Topology::new(2);
    let pins = Pins::new();
    let metrics_port = keelson_testbed::free_loopback_port().expect("a free port");
    let log = plane.data_dir().join("agent.log");
    let child = Command::new(node_agent_binary())
        .arg("run")
        .arg("--kubeconfig")
        .arg(&plane.kubeconfig)
        .arg("--pin-dir")
        .arg(pins.path())
        .arg("--cgroup")
        .arg(topology.cgroup.path())
        .args(["--node-name", "test-node"])
        .args(["--ct-capacity", "8192", "--ct-gc-interval-ms", "200"])
        .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
        // Never the machine's real uplink (the default `auto` is the default route's interface).
        .args(["--uplink", "off"])
        .args(["--kubelet-listen", "off", "--data-dir"])
        .arg(plane.data_dir().join("agent"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("agent log"))
        .spawn()
        .expect("start keelson-node-agent run");
    let agent = Agent { child, log };

    let dir = plane.data_dir().to_path_buf();
    kubectl.run(&["apply", "-f", &manifest(&dir, &[0, 1])]);
    let both = format!(
        "{VIP}:80/TCP -> {}:8080, {}:8080",
        backend_addr(0),
        backend_addr(1)
    );
    wait_for_list(&pins, &agent, "the Service reaches the maps", |l| {
        l.contains(&both)
    });

    let tcp = exchanges(&topology.run_client(CLIENT, &["tcp", &format!("{VIP}:80"), "30"]));
    let names: std::collections::BTreeSet<&str> = tcp.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(
        names.len(),
        2,
        "both backends answer through the VIP: {tcp:?}"
    );
    assert!(tcp.iter().all(|(peer, _)| peer == &format!("{VIP}:80")));

    // The agent serves the datapath counters.
    let metrics = || {
        let mut stream = TcpStream::connect(("127.0.0.1", metrics_port))
            .expect("connect to the agent's /metrics");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: agent\r\n\r\n")
            .expect("request /metrics");
        let mut body = String::new();
        stream.read_to_string(&mut body).expect("read /metrics");
        body
    };
    let body = metrics();
    let translated = body
        .lines()
        .find_map(|l| l.strip_prefix("keelson_datapath_events_total{path=\"sock_translated\"} "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("/metrics has no sock_translated counter:\n{body}"));
    assert!(translated >= 30, "{body}");
    // Its conntrack GC runs (every 200 ms here) and says so.
    let gc_passes = |body: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix("keelson_conntrack_gc_total{event=\"passes\"} "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("/metrics has no conntrack GC counter:\n{body}"))
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut body = body;
    while gc_passes(&body) == 0 {
        assert!(
            Instant::now() < deadline,
            "no conntrack GC pass within 5 s:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(100));
        body = metrics();
    }
    assert!(
        body.contains("keelson_datapath_map_capacity{map=\"kct_v2\"} 8192"),
        "{body}"
    );

    // One endpoint leaves.
    kubectl.run(&["apply", "-f", &manifest(&dir, &[1])]);
    let one = format!("{VIP}:80/TCP -> {}:8080", backend_addr(1));
    wait_for_list(&pins, &agent, "the endpoint change reaches the maps", |l| {
        l.lines().any(|line| line == one)
    });
    let tcp = exchanges(&topology.run_client(CLIENT, &["tcp", &format!("{VIP}:80"), "10"]));
    assert!(tcp.iter().all(|(_, r)| r == &backend_name(1)), "{tcp:?}");

    // The Service goes.
    kubectl.run(&["delete", "service", "web"]);
    wait_for_list(&pins, &agent, "the deletion reaches the maps", |l| {
        !l.contains(&VIP.to_string())
    });
}

//! Two nodes as qemu VMs (keelson-testbed's VM nodes: a Debian kernel, Docker and the node
//! agent in an initramfs), joined to a control plane on the host over the cluster's bridge, in
//! both routing modes:
//! - a client pod on each VM reaches every echo pod on both VMs by its address, and the echo pod
//!   sees the client's own pod address (no NAT between pods); 256 KiB answers from the other VM
//!   arrive whole (MTU, and VXLAN's overhead in tunnel mode);
//! - the Service by name, from each VM, is answered by backends on both VMs, with no failure;
//! - each VM's agent counted the traffic on its eBPF path (`tc_redirect_peer` into local pods,
//!   `tc_redirect_node` or `tc_redirect_tunnel` towards the other VM), read from its `/metrics`;
//!   on a kernel where the agent falls back to the node's routes (direct routing below 5.11)
//!   those counters stay still.
//!
//! The pods' output comes back through `kubectl logs` (the API server proxies to the agent in
//! the VM). `cargo xtask vm-test` builds the kernel and the node initramfs and runs this binary
//! with `KEELSON_VM_KERNEL` and `KEELSON_VM_INITRD` set (and `KEELSON_VM_STATE_DIR`, where it
//! removes whatever a killed run left, and `KEELSON_VM_ACCEL`); nextest's default filter
//! leaves it out.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::{Duration, Instant},
};

use keelson_testbed::{Cluster, ClusterSpec, Routing, VmNodes};
use keelson_tests::{
    netcluster::{
        RunningPod, apply, assert_pods_in_node_cidrs, bin_dir, claim_subnet, echo_manifest, logs,
        remote_addr, served_datapath_counters, wait_ready_pods,
    },
    require_root,
};

const REPLICAS: usize = 4;
const BIG: usize = 256 * 1024;
const SERVICE_REQUESTS: usize = 20;

fn env_path(name: &str) -> PathBuf {
    std::env::var_os(name).map(PathBuf::from).unwrap_or_else(|| {
        panic!("{name} is not set: this test runs through `cargo xtask vm-test`, which builds the VM kernel and initramfs")
    })
}

/// A two-VM cluster with `routing`; the lock holds its subnet.
fn vm_cluster(routing: Routing) -> (Cluster, nix::fcntl::Flock<std::fs::File>) {
    require_root();
    let kernel = env_path("KEELSON_VM_KERNEL");
    let initrd = env_path("KEELSON_VM_INITRD");
    let state = env_path("KEELSON_VM_STATE_DIR").join(routing.as_str());
    // A previous run killed mid-way leaves its state file: remove what it names first.
    keelson_testbed::down_from_state(&state).expect("remove a previous run's cluster");
    let (subnet, lock) = claim_subnet();
    let mut spec = ClusterSpec::new(&format!("v{subnet}"), subnet, 2, bin_dir(), &state);
    spec.routing = routing;
    spec.cluster_cidr = "10.211.0.0/16".to_owned();
    spec.vm = Some(VmNodes {
        kernel,
        initrd,
        memory_mib: 2048,
        // One vCPU each: two VMs share this machine's cores, and a single vCPU keeps TCG
        // clear of cross-CPU code patching (a 2-vCPU node once hit an int3 oops while the
        // kernel patched a static key).
        cpus: 1,
        accel: std::env::var("KEELSON_VM_ACCEL").unwrap_or_else(|_| "tcg".to_owned()),
    });
    let started = Instant::now();
    let cluster = Cluster::up_with_progress(spec, |step| eprintln!("vm_cluster: {step}"))
        .unwrap_or_else(|e| panic!("cluster up: {e:#}"));
    eprintln!(
        "vm_cluster: {routing:?} cluster of 2 VMs Ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    (cluster, lock)
}

/// A pod on `node` that asks every echo pod for the caller's address, fetches `/big` from
/// each of `remote`, and sends [`SERVICE_REQUESTS`] requests to the Service by name; then exits.
fn client_pod(name: &str, node: &str, echo: &[RunningPod], remote: &[&RunningPod]) -> String {
    let all: Vec<String> = echo.iter().map(|p| p.ip.to_string()).collect();
    let far: Vec<String> = remote.iter().map(|p| p.ip.to_string()).collect();
    let script = format!(
        "echo \"self $(ip -4 -o addr show dev eth0 | awk '{{print $4}}' | cut -d/ -f1)\"\n\
         for ip in {}; do echo \"pod $ip $(timeout 10 wget -qO- http://$ip/cgi-bin/ip)\"; done\n\
         for ip in {}; do echo \"big $ip $(timeout 30 wget -qO- http://$ip/big | wc -c)\"; done\n\
         for i in $(seq {SERVICE_REQUESTS}); do \
         echo \"service $(timeout 10 wget -qO- http://echo.default.svc.cluster.local/)\"; done\n\
         echo done\n",
        all.join(" "),
        far.join(" ")
    );
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "client"}},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "client",
                "image": "keelson/busybox:1",
                "command": ["sh", "-c", script],
            }],
        },
    })
    .to_string()
}

/// What a client pod printed.
#[derive(Debug, Default)]
struct ClientReport {
    own: Option<Ipv4Addr>,
    /// Echo pod address -> the caller's address it reported.
    seen_as: BTreeMap<Ipv4Addr, Option<Ipv4Addr>>,
    /// Echo pod address -> bytes of `/big`.
    big: BTreeMap<Ipv4Addr, usize>,
    /// Answering hostname -> count ("" for a failed request).
    service: BTreeMap<String, usize>,
    done: bool,
}

fn parse_client(output: &str) -> ClientReport {
    let mut report = ClientReport::default();
    for line in output.lines() {
        let mut words = line.splitn(3, ' ');
        match (words.next(), words.next(), words.next().unwrap_or("")) {
            (Some("self"), Some(ip), _) => report.own = ip.parse().ok(),
            (Some("pod"), Some(ip), answer) => {
                if let Ok(ip) = ip.parse() {
                    report.seen_as.insert(ip, remote_addr(answer));
                }
            }
            (Some("big"), Some(ip), size) => {
                if let Ok(ip) = ip.parse() {
                    report.big.insert(ip, size.trim().parse().unwrap_or(0));
                }
            }
            (Some("service"), host, _) => {
                *report
                    .service
                    .entry(host.unwrap_or("").trim().to_owned())
                    .or_default() += 1;
            }
            (Some("done"), ..) => report.done = true,
            _ => {}
        }
    }
    report
}

/// Waits for pod `name` to finish and returns its log.
fn finished_pod_log(cluster: &Cluster, name: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let phase = cluster
            .kubectl(&["get", "pod", name, "-o", "jsonpath={.status.phase}"])
            .unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pod {name} still {phase:?} after {timeout:?}\n{}",
            logs(cluster)
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    cluster
        .kubectl(&["logs", name])
        .unwrap_or_else(|e| panic!("kubectl logs {name}: {e:#}\n{}", logs(cluster)))
}

fn counters(cluster: &Cluster) -> Vec<BTreeMap<String, u64>> {
    cluster
        .nodes()
        .iter()
        .map(|n| served_datapath_counters(SocketAddr::from((n.address, 10249))))
        .collect()
}

/// The kernel release node `name` reports and whether its agent routes pod traffic from TC
/// (`--routing-bpf`) in `routing` mode, as the agent's own plan decides for that kernel: with
/// direct routing, below 5.11 (`bpf_redirect_neigh` without a next hop) it falls back to the
/// node's routes.
fn tc_routing(cluster: &Cluster, name: &str, routing: Routing) -> (String, bool) {
    use keelson_node_agent::probe;
    let release = cluster
        .kubectl(&[
            "get",
            "node",
            name,
            "-o",
            "jsonpath={.status.nodeInfo.kernelVersion}",
        ])
        .unwrap_or_else(|e| panic!("kubectl get node {name}: {e:#}"));
    let release = release.trim().to_owned();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u8>().ok());
    let (Some(major), Some(minor)) = (numbers.next(), numbers.next()) else {
        panic!("node {name} reports no kernel version: {release:?}");
    };
    let capabilities =
        probe::Capabilities::of_version(aya::util::KernelVersion::new(major, minor, 0));
    let wanted = probe::Wanted {
        routing_bpf: true,
        tunnel: routing == Routing::Tunnel,
        uplinks: true,
    };
    let plan = probe::plan(&capabilities, &wanted)
        .unwrap_or_else(|refusal| panic!("node {name} (Linux {release}): {refusal}"));
    (release, plan.routing_bpf)
}

/// Pod-to-pod both ways, the Service from each VM, and the counters.
fn pods_and_services_across_two_vms(routing: Routing, remote_counter: &str) {
    let (cluster, _lock) = vm_cluster(routing);
    apply(&cluster, "echo", &echo_manifest(REPLICAS));
    let echo = wait_ready_pods(&cluster, "app=echo", REPLICAS, Duration::from_secs(300));
    let nodes: BTreeSet<&str> = echo.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(
        nodes.len(),
        2,
        "the scheduler spreads the {REPLICAS} replicas over both VMs: {echo:?}"
    );
    assert_pods_in_node_cidrs(&cluster, &echo);
    eprintln!("vm_cluster: {REPLICAS} echo pods Ready: {echo:?}");
    let before = counters(&cluster);

    for (k, node) in cluster.nodes().iter().enumerate() {
        let name = format!("client-{}", k + 1);
        let remote: Vec<&RunningPod> = echo.iter().filter(|p| p.node != node.name).collect();
        let path = cluster.spec().state_dir.join(format!("{name}.json"));
        std::fs::write(&path, client_pod(&name, &node.name, &echo, &remote)).expect("manifest");
        cluster
            .kubectl(&["apply", "-f", &path.to_string_lossy()])
            .unwrap_or_else(|e| panic!("kubectl apply {name}: {e:#}"));
        let output = finished_pod_log(&cluster, &name, Duration::from_secs(300));
        let report = parse_client(&output);
        eprintln!("vm_cluster: {name} on {}: {report:?}", node.name);
        assert!(report.done, "{name} ran to its end:\n{output}");
        let own = report.own.expect("the client printed its address");
        for pod in &echo {
            assert_eq!(
                report.seen_as.get(&pod.ip).copied().flatten(),
                Some(own),
                "{name} ({own} on {}) -> {} ({} on {}): the echo pod answers and sees the \
                 client's pod address\n{output}\n{}",
                node.name,
                pod.name,
                pod.ip,
                pod.node,
                logs(&cluster)
            );
        }
        for pod in &remote {
            assert_eq!(
                report.big.get(&pod.ip).copied(),
                Some(BIG),
                "{name} on {} <- {} on {}: 256 KiB arrive whole\n{output}",
                node.name,
                pod.name,
                pod.node
            );
        }
        assert_eq!(
            report.service.get("").copied().unwrap_or(0),
            0,
            "from {}: every request through the Service answers: {:?}",
            node.name,
            report.service
        );
        let answering: BTreeSet<&str> = report
            .service
            .keys()
            .filter_map(|host| echo.iter().find(|p| p.name == *host))
            .map(|p| p.node.as_str())
            .collect();
        assert_eq!(
            answering.len(),
            2,
            "from {}: backends on both VMs answer through the Service: {:?}",
            node.name,
            report.service
        );
    }

    let after = counters(&cluster);
    for (k, node) in cluster.nodes().iter().enumerate() {
        let (kernel, routed_by_tc) = tc_routing(&cluster, &node.name, routing);
        for counter in ["tc_redirect_peer", remote_counter] {
            let (was, is) = (
                before[k].get(counter).copied().unwrap_or(0),
                after[k].get(counter).copied().unwrap_or(0),
            );
            if routed_by_tc {
                assert!(
                    is > was,
                    "{}: {counter} grew with the traffic (was {was}, is {is}): {:?}",
                    node.name,
                    after[k]
                );
            } else {
                // The agent fell back to the node's routes (`run falls back: --routing-bpf
                // off`): the traffic above went through the node's stack, not TC's redirects.
                assert_eq!(
                    is, was,
                    "{} (Linux {kernel}): routed by the node's stack, {counter} stays: {:?}",
                    node.name, after[k]
                );
            }
        }
    }
    cluster.down().expect("cluster down");
}

#[test]
fn direct_routing_between_two_vms() {
    pods_and_services_across_two_vms(Routing::Direct, "tc_redirect_node");
}

#[test]
fn tunnel_routing_between_two_vms() {
    pods_and_services_across_two_vms(Routing::Tunnel, "tc_redirect_tunnel");
}

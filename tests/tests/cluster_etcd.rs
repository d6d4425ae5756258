//! The HA setup of `cargo xtask cluster up --control-planes 3` (keelson-testbed): three control
//! planes on a three-member etcd, two nodes as network namespaces whose agents know all three
//! (`--api-servers`). Control plane 1, the one every kubeconfig names, is killed: the nodes stay
//! Ready through the other two, and a Deployment created afterwards through control plane 2 gets
//! its pods running on the nodes (the controllers and scheduler run on a surviving leader).

use std::time::{Duration, Instant};

use keelson_testbed::{Cluster, ClusterSpec, StoreKind};
use keelson_tests::{
    netcluster::{bin_dir, claim_subnet, logs},
    pods::require_docker_images,
    require_root,
};

/// `kubectl` through control plane `i`.
fn kubectl_via(cluster: &Cluster, i: usize, args: &[&str]) -> (bool, String) {
    let output = std::process::Command::new(
        keelson_testbed::kubectl_binary().unwrap_or_else(|e| panic!("{e:#}")),
    )
    .arg("--kubeconfig")
    .arg(cluster.kubeconfig())
    .arg("--server")
    .arg(format!("https://{}", cluster.api_address(i)))
    .arg("--request-timeout=10s")
    .args(args)
    .output()
    .expect("run kubectl");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[test]
fn nodes_and_controllers_outlive_the_first_control_plane() {
    require_root();
    require_docker_images();
    let (subnet, _lock) = claim_subnet();
    let state = tempfile::tempdir().expect("state dir");
    let mut spec = ClusterSpec::new(&format!("e{subnet}"), subnet, 2, bin_dir(), state.path());
    spec.store = StoreKind::Etcd;
    spec.control_planes = 3;
    spec.agent_args = ["--node-lease-duration-seconds", "4"]
        .map(str::to_owned)
        .into();
    spec.control_plane_args = ["--node-monitor-grace-period", "8s"]
        .map(str::to_owned)
        .into();
    let mut cluster = Cluster::up(spec).unwrap_or_else(|e| panic!("cluster up: {e:#}"));
    cluster
        .kill_control_plane(1)
        .unwrap_or_else(|e| panic!("kill control plane 1: {e:#}"));
    let killed = Instant::now();

    let (ok, out) = kubectl_via(
        &cluster,
        2,
        &[
            "create",
            "deployment",
            "after",
            "--image=keelson/httpd:1",
            "--replicas=2",
        ],
    );
    assert!(ok, "control plane 2 serves writes: {out}");
    // Longer than the grace period: a node whose Lease stopped would be NotReady by then.
    let mut running = 0;
    while killed.elapsed() < Duration::from_secs(60) {
        let (_, pods) = kubectl_via(
            &cluster,
            2,
            &["get", "pods", "-l", "app=after", "--no-headers"],
        );
        running = pods.lines().filter(|l| l.contains(" Running ")).count();
        if running == 2 && killed.elapsed() > Duration::from_secs(12) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        running,
        2,
        "the Deployment created after the kill runs\n{}",
        logs(&cluster)
    );
    let (_, nodes) = kubectl_via(&cluster, 3, &["get", "nodes", "--no-headers"]);
    assert_eq!(
        nodes.lines().filter(|l| l.contains(" Ready ")).count(),
        2,
        "{:.0} s after control plane 1 died, both nodes are Ready:\n{nodes}\n{}",
        killed.elapsed().as_secs_f64(),
        logs(&cluster)
    );
    cluster
        .down()
        .unwrap_or_else(|e| panic!("cluster down: {e:#}"));
}

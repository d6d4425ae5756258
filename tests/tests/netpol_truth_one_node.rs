//! End to end, privileged: the NetworkPolicy truth table (`keelson_tests::netpol`, after
//! Kubernetes' netpol e2e) on one node: namespaces x, y, z with pods a, b, c each serving TCP
//! and UDP on 80 and 81, every pod probing every pod for 21 policy cases (deny-all both ways,
//! pod and namespace selectors and their AND and OR, ipBlock with except, named ports on
//! ingress and egress, endPort, protocol-only, unions and stacked policies, egress only DNS,
//! ClusterIPs judged by backend, a policy added and removed while a loop probes). A mismatch
//! prints the whole expected and observed matrices.

use std::path::Path;

use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    netpol::{Kube, start_pods},
    netpol_cases::run_truth_table,
    pods::{PodAgent, require_docker_images},
    require_root,
};

#[test]
fn network_policy_truth_table_on_one_node() {
    require_root();
    require_docker_images();
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    let agent = PodAgent::start(&plane, &["--node-address", "127.0.0.1"]);
    let kubectl = Kubectl::new(33, &plane);
    let run = |args: &[&str]| kubectl.run(args);
    let server = agent.metrics_address();
    let dropped = || {
        keelson_tests::lbkit::node_agent(&[
            "observe",
            "-o",
            "json",
            "--verdict",
            "dropped",
            "--last",
            "4096",
            "--server",
            &server,
        ])
    };
    let kube = Kube {
        kubectl: &run,
        dir: plane.data_dir(),
        prefix: keelson_tests::unique_name("np"),
        // Every case that drops shows its drops in `observe`, naming its policies.
        dropped_flows: Some(&dropped),
    };
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_keelson-netpol-agnhost"))
        .parent()
        .expect("the agnhost's directory");
    let pods = start_pods(&kube, std::slice::from_ref(&agent.node), bin_dir);
    run_truth_table(&kube, &pods);
    for ns in 0..3 {
        kubectl.run(&["delete", "namespace", &kube.ns(ns), "--timeout=60s"]);
    }
    agent.assert_no_leaks();
}

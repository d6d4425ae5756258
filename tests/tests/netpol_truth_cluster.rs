//! End to end, privileged: the NetworkPolicy truth table (`keelson_tests::netpol`, after
//! Kubernetes' netpol e2e) on three-node clusters whose nodes are network namespaces
//! (keelson-testbed), in both routing modes: the pods of every namespace spread over the three
//! nodes, so each case is judged on pairs on one node and across nodes, by the sender's agent
//! (egress) and the receiver's (ingress). Same 21 cases as `netpol_truth_one_node`.

use std::{path::Path, time::Instant};

use keelson_testbed::{Cluster, ClusterSpec, Routing};
use keelson_tests::{
    netcluster::{bin_dir, claim_subnet, logs},
    netpol::{Kube, start_pods},
    netpol_cases::run_truth_table,
    pods::require_docker_images,
    require_root,
};

fn truth_table_on_three_nodes(routing: Routing) {
    require_root();
    require_docker_images();
    let (subnet, _lock) = claim_subnet();
    let state = tempfile::tempdir().expect("state dir");
    let mut spec = ClusterSpec::new(&format!("t{subnet}"), subnet, 3, bin_dir(), state.path());
    spec.routing = routing;
    // Its own pod CIDRs: the host routes each node's pod CIDR over its cluster's bridge, and the
    // two routing modes run at once.
    spec.cluster_cidr = match routing {
        Routing::Direct => "10.211.0.0/16",
        Routing::Tunnel => "10.212.0.0/16",
    }
    .to_owned();
    let started = Instant::now();
    let cluster = Cluster::up(spec).unwrap_or_else(|e| panic!("cluster up: {e:#}"));
    eprintln!(
        "{routing:?} cluster up in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let run = |args: &[&str]| {
        cluster
            .kubectl(args)
            .unwrap_or_else(|e| panic!("kubectl {}: {e:#}\n{}", args.join(" "), logs(&cluster)))
    };
    let kube = Kube {
        kubectl: &run,
        dir: state.path(),
        prefix: keelson_tests::unique_name("np"),
        // Checked on one node (netpol_truth_one_node): `observe` asks one agent.
        dropped_flows: None,
    };
    let nodes: Vec<String> = cluster.nodes().iter().map(|n| n.name.clone()).collect();
    let bin = Path::new(env!("CARGO_BIN_EXE_keelson-netpol-agnhost"))
        .parent()
        .expect("the agnhost's directory");
    let pods = start_pods(&kube, &nodes, bin);
    run_truth_table(&kube, &pods);
    cluster
        .down()
        .unwrap_or_else(|e| panic!("cluster down: {e:#}"));
}

#[test]
fn network_policy_truth_table_on_three_nodes_direct_routing() {
    truth_table_on_three_nodes(Routing::Direct);
}

#[test]
fn network_policy_truth_table_on_three_nodes_vxlan_tunnel() {
    truth_table_on_three_nodes(Routing::Tunnel);
}

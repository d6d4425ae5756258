//! End to end, privileged: the node agent registers its Node with node credentials (capacity,
//! addresses, labels, Ready) and renews its Lease in kube-node-lease.

use std::time::{Duration, Instant};

use k8s_openapi::api::{coordination::v1::Lease, core::v1::Node};
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    pods::PodAgent,
};
use kube::Api;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_registers_with_node_credentials_and_renews_its_lease() {
    // Without node IPAM the agent uses this test's own --pod-cidr (10.250.N.0/24), so tests
    // running at once never share pod addresses or routes.
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    let agent = PodAgent::start(&plane, &[]);
    let client = plane.client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");

    let deadline = Instant::now() + Duration::from_secs(30);
    let node = loop {
        if let Some(node) = nodes.get_opt(&agent.node).await.expect("GET node")
            && node.status.as_ref().is_some_and(|s| s.conditions.is_some())
        {
            break node;
        }
        assert!(
            Instant::now() < deadline,
            "the Node did not register within 30 s; agent log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let labels = node.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("kubernetes.io/hostname"),
        Some(&agent.node),
        "{labels:?}"
    );
    assert_eq!(
        labels.get("kubernetes.io/os").map(String::as_str),
        Some("linux")
    );
    assert!(labels.contains_key("kubernetes.io/arch"), "{labels:?}");
    let status = node.status.clone().expect("status");
    let capacity = status.capacity.clone().expect("capacity");
    let cpus = std::thread::available_parallelism().expect("cpus").get();
    assert_eq!(capacity["cpu"].0, cpus.to_string());
    assert_eq!(capacity["pods"].0, "110");
    assert!(capacity["memory"].0.ends_with("Ki"), "{capacity:?}");
    // Allocatable is capacity less the kubelet's default evictionHard (memory.available<100Mi,
    // nodefs.available<10%); nothing is reserved by default.
    let allocatable = status.allocatable.clone().expect("allocatable");
    assert_eq!(allocatable["cpu"], capacity["cpu"]);
    assert_eq!(allocatable["pods"], capacity["pods"]);
    let kib = |q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| {
        q.0.strip_suffix("Ki")
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{q:?} in Ki"))
    };
    assert_eq!(
        kib(&allocatable["memory"]),
        kib(&capacity["memory"]) - 100 * 1024
    );
    let addresses = status.addresses.clone().expect("addresses");
    assert!(
        addresses.iter().any(|a| a.type_ == "InternalIP"),
        "{addresses:?}"
    );
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .expect("a Ready condition");
    assert_eq!(ready.status, "True", "{ready:?}");
    assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));

    // kubectl sees the node Ready.
    let kubectl = Kubectl::new(33, &plane);
    let ready = kubectl.run(&[
        "get",
        "node",
        &agent.node,
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    assert_eq!(ready.trim(), "True");

    // The Lease is renewed every 10 s.
    let first = loop {
        if let Some(lease) = leases.get_opt(&agent.node).await.expect("GET lease") {
            break lease;
        }
        assert!(
            Instant::now() < deadline,
            "no Lease; agent log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let spec = first.spec.clone().expect("lease spec");
    assert_eq!(spec.holder_identity.as_ref(), Some(&agent.node));
    let renewed = Instant::now() + Duration::from_secs(25);
    loop {
        let lease = leases.get(&agent.node).await.expect("GET lease");
        if lease.spec.as_ref().and_then(|s| s.renew_time.clone()) != spec.renew_time {
            break;
        }
        assert!(
            Instant::now() < renewed,
            "the Lease was not renewed within 25 s; agent log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The status is not rewritten while nothing changes.
    let rv = nodes
        .get(&agent.node)
        .await
        .expect("GET node")
        .metadata
        .resource_version;
    tokio::time::sleep(Duration::from_secs(12)).await;
    let later = nodes.get(&agent.node).await.expect("GET node");
    assert_eq!(
        later.metadata.resource_version, rv,
        "the Node was rewritten although nothing changed"
    );
}

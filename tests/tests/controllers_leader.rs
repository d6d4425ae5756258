//! End to end: two `keelson-control-plane`s on one etcd elect one leader through
//! coordination.k8s.io Leases in kube-system; only the leader's scheduler and controllers act,
//! and the other takes over within 20 s of the leader being killed.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use k8s_openapi::api::{apps::v1::ReplicaSet, coordination::v1::Lease, core::v1::Pod};
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    etcd::Etcd,
};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

/// Polls `check` every 200 ms until it returns `Some`, for at most `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, logs: &[&ControlPlane], check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let logs = || {
        logs.iter()
            .map(|p| p.log())
            .collect::<Vec<_>>()
            .join("\n-----\n")
    };
    keelson_tests::eventually(what, limit, logs, check).await
}

/// The holder of `kube-system/<name>`, if any.
async fn holder(client: &Client, name: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), "kube-system")
        .get_opt(name)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// Creates a Ready node with room for 110 pods.
async fn create_node(client: &Client, name: &str) {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "spec": {}}))
    .expect("a Node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create a node");
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}],
            }})),
        )
        .await
        .expect("node status");
}

/// (pods, bound pods) of the `web` Deployment.
async fn web_pods(client: &Client) -> (usize, usize) {
    let pods: Vec<Pod> = Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels("app=web"))
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let bound = pods
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
        .count();
    (pods.len(), bound)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_control_planes_on_one_etcd_elect_one_leader_and_fail_over() {
    let etcd = Etcd::start().await;
    // Node lifecycle is off: the test's nodes have no kubelet renewing their Leases.
    let args = [
        "--store",
        "etcd",
        "--etcd-endpoints",
        etcd.endpoint(),
        "--controllers",
        "all,-nodelifecycle",
    ];
    let mut first = ControlPlane::start_with(&args);
    let mut second = ControlPlane::start_with(&args);
    let clients = [first.client().await, second.client().await];
    let planes = [&first, &second];
    let listens = [first.listen().to_string(), second.listen().to_string()];
    // Which plane an identity (HOSTNAME_LISTEN_PID) belongs to.
    let plane_of = |identity: &str| {
        listens
            .iter()
            .position(|l| identity.contains(&format!("_{l}_")))
            .unwrap_or_else(|| panic!("holder {identity:?} is neither {listens:?}"))
    };
    let mut leaders = [0; 2];
    for (i, lease) in ["keelson-controller-manager", "keelson-scheduler"]
        .into_iter()
        .enumerate()
    {
        let identity = eventually(
            &format!("a holder of kube-system/{lease}"),
            Duration::from_secs(20),
            &planes,
            || holder(&clients[0], lease),
        )
        .await;
        leaders[i] = plane_of(&identity);
        // The Lease stays with its holder while it renews.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(holder(&clients[1], lease).await, Some(identity));
    }
    let leader = leaders[0];
    let follower = 1 - leader;

    // Only one scheduler and one ReplicaSet controller act: exactly 3 pods, all bound once.
    for name in ["node-a", "node-b"] {
        create_node(&clients[follower], name).await;
    }
    let kubectl = Kubectl::new(33, planes[follower]);
    let manifest = planes[follower].data_dir().join("web.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: default}\n\
         spec:\n  replicas: 3\n  selector: {matchLabels: {app: web}}\n  template:\n    \
         metadata: {labels: {app: web}}\n    spec: {containers: [{name: web, image: busybox}]}\n",
    )
    .expect("write the manifest");
    kubectl.run(&["apply", "-f", manifest.to_str().expect("utf-8")]);
    eventually("3 bound pods", Duration::from_secs(20), &planes, || {
        let client = clients[follower].clone();
        async move { (web_pods(&client).await == (3, 3)).then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        web_pods(&clients[follower]).await,
        (3, 3),
        "pods made twice"
    );
    let replica_sets = Api::<ReplicaSet>::namespaced(clients[follower].clone(), "default")
        .list(&ListParams::default())
        .await
        .expect("replica sets")
        .items;
    assert_eq!(replica_sets.len(), 1);
    // Kill the controller-manager leader; the other plane takes over within 20 s: scaling up
    // creates and binds pods again.
    let killed_at = Instant::now();
    if leader == 0 {
        first.kill();
    } else {
        second.kill();
    }
    let survivor = if leader == 0 { &second } else { &first };
    let client = &clients[follower];
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(client.clone(), "default")
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 5}})),
        )
        .await
        .expect("scale up");
    eventually(
        "5 bound pods after the leader was killed",
        Duration::from_secs(20),
        &[survivor],
        || {
            let client = client.clone();
            async move { (web_pods(&client).await == (5, 5)).then_some(()) }
        },
    )
    .await;
    let took = killed_at.elapsed();
    assert!(took <= Duration::from_secs(20), "took over after {took:?}");
    for lease in ["keelson-controller-manager", "keelson-scheduler"] {
        let identity = holder(client, lease).await.expect("a holder");
        assert_eq!(
            plane_of(&identity),
            follower,
            "{lease} moved to the survivor"
        );
    }
    eprintln!("the survivor took over and scaled up {took:?} after the leader was killed");
}

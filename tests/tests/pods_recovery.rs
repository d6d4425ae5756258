//! End to end, privileged: what the agent finds after being down. A pod force-deleted while the
//! agent was stopped has its containers, veth and address removed on the next start; a pod whose
//! sandbox died gets a new sandbox with the same address and runs again; a hostPath volume is
//! shared with the node.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    pods::{
        PodAgent, apply, container_id, docker, exec, is_ready, pod_containers, pod_ip, uid,
        wait_pod,
    },
};
use kube::{Api, api::DeleteParams};

fn manifests(node: &str, host_dir: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: keep, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  volumes:
  - name: host
    hostPath: {{path: {host_dir}, type: DirectoryOrCreate}}
  containers:
  - name: app
    image: keelson/busybox:1
    command: [\"sh\", \"-c\", \"echo $HOSTNAME > /host/name; exec sleep 3600\"]
    volumeMounts: [{{name: host, mountPath: /host}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: gone, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: keelson/busybox:1
    command: [\"sleep\", \"3600\"]
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_cleans_up_deleted_pods_and_recreates_dead_sandboxes_after_restart() {
    // Without node IPAM the agent uses this test's own --pod-cidr (10.250.N.0/24), so tests
    // running at once never share pod addresses or routes.
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    let mut agent = PodAgent::start(&plane, &[]);
    let kubectl = Kubectl::new(33, &plane);
    let pods: Api<Pod> = Api::namespaced(plane.client().await, "default");
    let host_dir = tempfile::tempdir().expect("host dir");
    let host_path = host_dir.path().join("shared");
    apply(
        &kubectl,
        plane.data_dir(),
        "pods.yaml",
        &manifests(&agent.node, &host_path.to_string_lossy()),
    );
    let timeout = Duration::from_secs(60);
    let keep = wait_pod(&pods, "keep", timeout, &agent, "keep is Ready", is_ready).await;
    let gone = wait_pod(&pods, "gone", timeout, &agent, "gone is Ready", is_ready).await;
    assert_eq!(
        std::fs::read_to_string(host_path.join("name"))
            .expect("the pod wrote into the hostPath")
            .trim(),
        "keep"
    );
    let (keep_ip, gone_ip) = (pod_ip(&keep), pod_ip(&gone));
    let gone_uid = uid(&gone);

    // While the agent is down: `gone` is force-deleted, `keep` loses its sandbox.
    agent.kill();
    pods.delete("gone", &DeleteParams::default().grace_period(0))
        .await
        .expect("force-delete gone");
    let sandbox = pod_containers(&uid(&keep))
        .into_iter()
        .find(|(name, _, _)| name == "POD")
        .expect("keep's sandbox")
        .2;
    docker(&["kill", &sandbox]);

    agent.restart();
    // The orphan goes: containers, address, route.
    let deadline = std::time::Instant::now() + timeout;
    while !pod_containers(&gone_uid).is_empty()
        || agent.allocations().contains_key(&gone_ip.to_string())
        || agent
            .pod_routes()
            .iter()
            .any(|(dest, _)| dest == &gone_ip.to_string())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the force-deleted pod's containers/address/route remain: {:?} {:?} {:?}\nagent log:\n{}",
            pod_containers(&gone_uid),
            agent.allocations(),
            agent.pod_routes(),
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // `keep` runs again in a new sandbox with its address.
    let app_id = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.first())
            .and_then(|c| c.container_id.clone())
    };
    let old_app = app_id(&keep);
    let keep_again = wait_pod(&pods, "keep", timeout, &agent, "keep runs again", |p| {
        is_ready(p) && app_id(p).is_some() && app_id(p) != old_app
    })
    .await;
    assert_eq!(pod_ip(&keep_again), keep_ip);
    let restarts = keep_again
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .map(|c| c.restart_count);
    assert_eq!(
        restarts,
        Some(1),
        "the container restarted with its new sandbox"
    );
    let (ok, out) = exec(
        &container_id(&uid(&keep_again), "app"),
        "ip -4 addr show eth0",
    );
    assert!(ok, "{out}");
    assert!(out.contains(&format!("{keep_ip}/32")), "{out}");

    kubectl.run(&["delete", "pod", "keep", "--timeout=30s"]);
    agent.assert_no_leaks();
}

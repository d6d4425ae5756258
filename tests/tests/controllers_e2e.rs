//! End to end: the scheduler and controllers inside the real `keelson-control-plane`, driven by
//! kubectl 1.33 and kube-rs. There is no node agent yet, so the tests create Node objects (Ready,
//! with a Lease) and play the kubelet: they set bound pods Running and Ready with a pod IP
//! through the status subresource, and finish the deletion of terminating pods.

use std::{
    collections::{BTreeMap, BTreeSet},
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    coordination::v1::Lease,
    core::v1::{Endpoints, Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use keelson_tests::cluster::{ControlPlane, Kubectl};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

/// Applies `yaml` with `kubectl apply -f`.
fn apply(kubectl: &Kubectl<'_>, plane: &ControlPlane, yaml: &str) -> String {
    let path = plane.data_dir().join(format!(
        "manifest-{}.yaml",
        Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id()) ^ yaml.len() as u128
    ));
    std::fs::write(&path, yaml).expect("write the manifest");
    kubectl.run(&["apply", "-f", path.to_str().expect("utf-8 path")])
}

/// Polls `check` every 200 ms until it returns `Some`, for at most `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, plane: &ControlPlane, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    keelson_tests::eventually(what, limit, || plane.log(), check).await
}

/// Creates a Ready node with 4 CPUs, 8 GiB, 110 pods and its Lease.
async fn create_node(client: &Client, name: &str, zone: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone}},
        "spec": {},
    }))
    .expect("a Node");
    nodes
        .create(&PostParams::default(), &node)
        .await
        .expect("create a node");
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "lastHeartbeatTime": now, "lastTransitionTime": now}],
            }})),
        )
        .await
        .expect("node status");
}

/// Plays the kubelet of every node until dropped: each node's Lease in kube-node-lease is
/// renewed (until [`FakeKubelet::stop_node`]); bound pods become Running and Ready with an IP
/// from 10.244.0.0/16; terminating pods are deleted for good (except on stopped nodes).
struct FakeKubelet {
    task: tokio::task::JoinHandle<()>,
    stopped: Arc<Mutex<BTreeSet<String>>>,
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Creates or renews node `name`'s Lease.
async fn renew_lease(client: &Client, name: &str) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let now = jiff::Timestamp::now().to_string();
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now}});
    let patched = leases
        .patch(name, &PatchParams::default(), &Patch::Merge(&lease))
        .await;
    if patched.is_err() {
        let lease: Lease = serde_json::from_value(lease).expect("a Lease");
        let _ = leases.create(&PostParams::default(), &lease).await;
    }
}

impl FakeKubelet {
    fn start(client: Client) -> Self {
        let stopped = Arc::new(Mutex::new(BTreeSet::new()));
        let silent = Arc::clone(&stopped);
        let task = tokio::spawn(async move {
            let pods: Api<Pod> = Api::all(client.clone());
            let nodes: Api<Node> = Api::all(client.clone());
            let mut next_ip: u32 = 2;
            let mut last_renewal = Instant::now() - Duration::from_secs(10);
            loop {
                let stopped = silent.lock().expect("not poisoned").clone();
                if last_renewal.elapsed() >= Duration::from_secs(1) {
                    last_renewal = Instant::now();
                    if let Ok(list) = nodes.list(&ListParams::default()).await {
                        for node in list.items {
                            if !stopped.contains(&node.name_any()) {
                                renew_lease(&client, &node.name_any()).await;
                            }
                        }
                    }
                }
                if let Ok(list) = pods.list(&ListParams::default()).await {
                    for pod in list.items {
                        let bound = pod.spec.as_ref().and_then(|s| s.node_name.clone());
                        let ns = pod.namespace().unwrap_or_default();
                        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                        if bound.as_ref().is_some_and(|n| stopped.contains(n)) {
                            continue;
                        }
                        if pod.metadata.deletion_timestamp.is_some() {
                            let _ = api
                                .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
                                .await;
                            continue;
                        }
                        let has_ip = pod
                            .status
                            .as_ref()
                            .and_then(|s| s.pod_ip.as_ref())
                            .is_some();
                        if bound.is_none() || has_ip || pod.labels().contains_key("hold") {
                            continue;
                        }
                        let ip = format!("10.244.{}.{}", next_ip / 250, next_ip % 250 + 1);
                        next_ip += 1;
                        let now = jiff::Timestamp::now()
                            .strftime("%Y-%m-%dT%H:%M:%SZ")
                            .to_string();
                        let _ = api
                            .patch_status(
                                &pod.name_any(),
                                &PatchParams::default(),
                                &Patch::Merge(json!({"status": {
                                    "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                                    "conditions": [
                                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                                        {"type": "Ready", "status": "True", "lastTransitionTime": now},
                                    ],
                                }})),
                            )
                            .await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        });
        Self { task, stopped }
    }

    /// Stops playing node `name`'s kubelet: no more lease renewals or pod updates.
    fn stop_node(&self, name: &str) {
        self.stopped
            .lock()
            .expect("not poisoned")
            .insert(name.to_owned());
    }

    /// Plays node `name`'s kubelet again.
    fn resume_node(&self, name: &str) {
        self.stopped.lock().expect("not poisoned").remove(name);
    }
}

/// Creates `service` through the API, expecting a 422 whose message contains `want`.
async fn invalid(client: &Client, service: serde_json::Value, want: &str) {
    let service: Service = serde_json::from_value(service).expect("a Service");
    let api: Api<Service> = Api::namespaced(client.clone(), "default");
    match api.create(&PostParams::default(), &service).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            assert!(status.message.contains(want), "{}", status.message);
        }
        other => panic!("expected 422 Invalid containing {want:?}, got {other:?}"),
    }
}

const SERVICE_YAML: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - name: http
    port: 80
    targetPort: http
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_get_addresses_and_slices_list_the_ready_pods() {
    // This test kills and restarts its one control plane; with leader election the restarted
    // process would first wait out the dead holder's 15 s lease (`controllers_leader` covers that).
    let mut plane = ControlPlane::start_with(&["--leader-elect=false"]);
    let kubectl = Kubectl::new(33, &plane);
    let client = plane.client().await;
    // The kubernetes Service points at the API server.
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let kubernetes = services
        .get("kubernetes")
        .await
        .expect("the kubernetes Service");
    assert_eq!(
        kubernetes
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ip.as_deref()),
        Some("10.96.0.1")
    );
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    let kubernetes_ep = endpoints
        .get("kubernetes")
        .await
        .expect("kubernetes Endpoints");
    let subset = &kubernetes_ep.subsets.expect("subsets")[0];
    assert_eq!(
        subset.addresses.as_ref().expect("addresses")[0].ip,
        "127.0.0.1"
    );
    assert_eq!(
        subset.ports.as_ref().expect("ports")[0].port,
        i32::from(plane.listen().port())
    );

    // ClusterIP and NodePort are in the create response (kubectl prints them at once).
    apply(&kubectl, &plane, SERVICE_YAML);
    let web = services.get("web").await.expect("the web Service");
    let spec = web.spec.clone().expect("spec");
    let ip: std::net::Ipv4Addr = spec
        .cluster_ip
        .clone()
        .expect("clusterIP")
        .parse()
        .expect("an IPv4");
    assert!(
        ip.octets()[0] == 10 && (96..112).contains(&ip.octets()[1]),
        "{ip} outside 10.96.0.0/12"
    );
    let node_port = spec.ports.as_ref().expect("ports")[0]
        .node_port
        .expect("a nodePort");
    assert!((30000..=32767).contains(&node_port), "{node_port}");
    let printed = kubectl.run(&[
        "get",
        "svc",
        "web",
        "-o",
        "jsonpath={.spec.clusterIP} {.spec.ports[0].nodePort}",
    ]);
    assert_eq!(printed, format!("{ip} {node_port}"));

    // Taken and out-of-range requests are refused with Kubernetes' messages.
    let taken = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: copy, namespace: default}}\nspec:\n  clusterIP: {ip}\n  ports: [{{port: 80}}]\n"
    );
    let path = plane.data_dir().join("taken.yaml");
    std::fs::write(&path, &taken).expect("write");
    let error = kubectl.fail(&["apply", "-f", path.to_str().expect("utf-8")]);
    assert!(error.contains("The Service \"copy\" is invalid"), "{error}");
    let copy = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "copy"},
                      "spec": {"clusterIP": ip.to_string(), "ports": [{"port": 80}]}});
    invalid(&client, copy.clone(), "provided IP is already allocated").await;
    let outside = "apiVersion: v1\nkind: Service\nmetadata: {name: outside, namespace: default}\nspec:\n  type: NodePort\n  ports: [{port: 80, nodePort: 80}]\n";
    std::fs::write(&path, outside).expect("write");
    kubectl.fail(&["apply", "-f", path.to_str().expect("utf-8")]);
    let outside = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "outside"},
                         "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}});
    invalid(&client, outside, "provided port is not in the valid range").await;
    let headless = "apiVersion: v1\nkind: Service\nmetadata: {name: headless, namespace: default}\nspec:\n  clusterIP: None\n  selector: {app: web}\n  ports: [{port: 80}]\n";
    std::fs::write(&path, headless).expect("write");
    kubectl.run(&["apply", "-f", path.to_str().expect("utf-8")]);
    assert_eq!(
        kubectl.run(&["get", "svc", "headless", "-o", "jsonpath={.spec.clusterIP}"]),
        "None"
    );

    // The allocation survives a restart: the address stays taken.
    plane.restart();
    let kubectl = Kubectl::new(33, &plane);
    let client = plane.client().await;
    std::fs::write(&path, &taken).expect("write");
    kubectl.fail(&["apply", "-f", path.to_str().expect("utf-8")]);
    invalid(&client, copy, "provided IP is already allocated").await;

    // Pods on two nodes: the slice lists exactly the pods with IPs, with their conditions.
    create_node(&client, "node-a", "zone-1").await;
    create_node(&client, "node-b", "zone-2").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for (name, ready) in [("web-1", true), ("web-2", true), ("web-3", false)] {
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "web", "hold": "yes"}},
            "spec": {"containers": [{"name": "web", "image": "busybox",
                                     "ports": [{"name": "http", "containerPort": 8080}]}]},
        }))
        .expect("a Pod");
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("create a pod");
        let bound = eventually(
            "the scheduler to bind the pod",
            Duration::from_secs(20),
            &plane,
            || {
                let pods = pods.clone();
                async move { pods.get(name).await.ok()?.spec?.node_name }
            },
        )
        .await;
        assert!(bound == "node-a" || bound == "node-b");
        let ip = format!("10.244.9.{}", name.trim_start_matches("web-"));
        pods.patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running", "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})),
        )
        .await
        .expect("pod status");
    }
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    let conditions = |slice: &EndpointSlice| -> BTreeMap<String, (bool, bool, bool)> {
        slice
            .endpoints
            .iter()
            .map(|e| {
                let c = e.conditions.clone().unwrap_or_default();
                (
                    e.addresses[0].clone(),
                    (
                        c.ready == Some(true),
                        c.serving == Some(true),
                        c.terminating == Some(true),
                    ),
                )
            })
            .collect()
    };
    let by_service = ListParams::default().labels("kubernetes.io/service-name=web");
    let expected = BTreeMap::from([
        ("10.244.9.1".to_owned(), (true, true, false)),
        ("10.244.9.2".to_owned(), (true, true, false)),
        ("10.244.9.3".to_owned(), (false, false, false)),
    ]);
    let slice = eventually(
        "the EndpointSlice to list the pods",
        Duration::from_secs(20),
        &plane,
        || {
            let slices = slices.clone();
            let by_service = by_service.clone();
            let expected = expected.clone();
            async move {
                let list = slices.list(&by_service).await.ok()?;
                (list.items.len() == 1 && conditions(&list.items[0]) == expected)
                    .then(|| list.items[0].clone())
            }
        },
    )
    .await;
    assert_eq!(
        slice
            .labels()
            .get("endpointslice.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("endpointslice-controller.k8s.io")
    );
    let port = &slice.ports.as_ref().expect("ports")[0];
    assert_eq!(
        (port.name.as_deref(), port.port),
        (Some("http"), Some(8080)),
        "named targetPort resolved"
    );
    assert!(
        slice
            .endpoints
            .iter()
            .all(|e| e.zone.as_deref().is_some_and(|z| z.starts_with("zone-")))
    );
    // kubectl shows it too.
    let listed = kubectl.run(&[
        "get",
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
    ]);
    // (The API server answers `as=Table` with plain lists yet, so kubectl prints names only.)
    assert!(listed.contains(&slice.name_any()), "{listed}");

    // A bound pod being deleted stays in the slice as terminating and not ready.
    pods.delete("web-1", &DeleteParams::default())
        .await
        .expect("delete web-1");
    eventually(
        "web-1 to show as terminating",
        Duration::from_secs(20),
        &plane,
        || {
            let slices = slices.clone();
            let by_service = by_service.clone();
            async move {
                let list = slices.list(&by_service).await.ok()?;
                (conditions(&list.items[0]).get("10.244.9.1") == Some(&(false, true, true)))
                    .then_some(())
            }
        },
    )
    .await;
    let ep = endpoints.get("web").await.expect("web Endpoints");
    let subsets = ep.subsets.unwrap_or_default();
    let ready: Vec<&str> = subsets
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .map(|a| a.ip.as_str())
        .collect();
    assert!(!ready.contains(&"10.244.9.1"));

    // Deleting the Service releases its address: another Service may take it.
    kubectl.run(&["delete", "svc", "web"]);
    let reuse = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: reuse, namespace: default}}\nspec:\n  clusterIP: {ip}\n  type: NodePort\n  ports: [{{port: 80, nodePort: {node_port}}}]\n"
    );
    std::fs::write(&path, reuse).expect("write");
    kubectl.run(&["apply", "-f", path.to_str().expect("utf-8")]);
}

fn deployment_yaml(replicas: u32, version: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  strategy:
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 1}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: busybox
        env: [{{name: VERSION, value: "{version}"}}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_spread_roll_over_and_scale() {
    let plane = ControlPlane::start();
    let kubectl = Kubectl::new(33, &plane);
    let client = plane.client().await;
    for (node, zone) in [("node-a", "z1"), ("node-b", "z2"), ("node-c", "z3")] {
        create_node(&client, node, zone).await;
    }
    let _kubelet = FakeKubelet::start(client.clone());
    apply(&kubectl, &plane, &deployment_yaml(5, "1"));
    let status = kubectl.run(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let live = |list: Vec<Pod>| -> Vec<Pod> {
        list.into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect()
    };
    let running = live(
        pods.list(&ListParams::default().labels("app=web"))
            .await
            .expect("pods")
            .items,
    );
    assert_eq!(running.len(), 5);
    let mut per_node = BTreeMap::<String, u32>::new();
    for pod in &running {
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .expect("bound");
        *per_node.entry(node).or_default() += 1;
    }
    assert_eq!(per_node.len(), 3, "spread over the 3 nodes: {per_node:?}");
    assert!(per_node.values().all(|n| *n <= 2), "{per_node:?}");

    // A template change rolls over; at no time more than replicas + maxSurge pods exist.
    let watcher_pods = pods.clone();
    let max_seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let observer = {
        let max_seen = std::sync::Arc::clone(&max_seen);
        tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(60);
            while Instant::now() < until {
                if let Ok(list) = watcher_pods
                    .list(&ListParams::default().labels("app=web"))
                    .await
                {
                    let active = list
                        .items
                        .iter()
                        .filter(|p| p.metadata.deletion_timestamp.is_none())
                        .count();
                    max_seen.fetch_max(active, std::sync::atomic::Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    apply(&kubectl, &plane, &deployment_yaml(5, "2"));
    let status = kubectl.run(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment = deployments.get("web").await.expect("deployment");
    let st = deployment.status.clone().expect("status");
    assert_eq!(
        (st.replicas, st.updated_replicas, st.available_replicas),
        (Some(5), Some(5), Some(5))
    );
    assert_eq!(st.observed_generation, deployment.metadata.generation);
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let rs = sets
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("replicasets")
        .items;
    assert_eq!(rs.len(), 2, "old and new ReplicaSets");
    let scaled: Vec<i32> = rs
        .iter()
        .map(|r| r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(-1))
        .collect();
    assert!(scaled.contains(&0) && scaled.contains(&5), "{scaled:?}");
    observer.abort();
    let max = max_seen.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        max <= 6,
        "{max} pods at once: more than replicas + maxSurge"
    );

    // kubectl scale down: the ReplicaSet removes pods.
    kubectl.run(&["scale", "deployment/web", "--replicas=2"]);
    eventually(
        "2 pods after scaling down",
        Duration::from_secs(30),
        &plane,
        || {
            let pods = pods.clone();
            async move {
                let list = pods
                    .list(&ListParams::default().labels("app=web"))
                    .await
                    .ok()?;
                (list
                    .items
                    .iter()
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .count()
                    == 2)
                    .then_some(())
            }
        },
    )
    .await;

    // A pod that fits nowhere stays Pending with a readable reason.
    let big = "apiVersion: v1\nkind: Pod\nmetadata: {name: big, namespace: default}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    resources: {requests: {cpu: \"100\"}}\n";
    apply(&kubectl, &plane, big);
    let described = eventually(
        "the FailedScheduling reason",
        Duration::from_secs(20),
        &plane,
        || {
            let out = kubectl.run(&["describe", "pod", "big"]);
            async move { out.contains("Insufficient cpu").then_some(out) }
        },
    )
    .await;
    assert!(
        described.contains("0/3 nodes are available: 3 Insufficient cpu."),
        "{described}"
    );
    assert!(described.contains("FailedScheduling"), "{described}");

    // An orphan ReplicaSet its selector matches (by the ReplicaSet's own labels, which apps/v1
    // does not default from the template) is adopted, then rolled over as an old one.
    apply(
        &kubectl,
        &plane,
        r#"apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: stray, namespace: default, labels: {app: adopt}}
spec:
  replicas: 1
  selector: {matchLabels: {app: adopt}}
  template:
    metadata: {labels: {app: adopt}}
    spec: {containers: [{name: c, image: busybox}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: adopt, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: adopt}}
  template:
    metadata: {labels: {app: adopt}}
    spec: {containers: [{name: c, image: busybox, env: [{name: V, value: "2"}]}]}
"#,
    );
    let status = kubectl.run(&["rollout", "status", "deployment/adopt", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let adopter = deployments.get("adopt").await.expect("deployment");
    let stray = eventually(
        "the stray ReplicaSet adopted and scaled to 0",
        Duration::from_secs(30),
        &plane,
        || {
            let sets = sets.clone();
            async move {
                let rs = sets.get("stray").await.ok()?;
                (rs.spec.as_ref().and_then(|s| s.replicas) == Some(0)).then_some(rs)
            }
        },
    )
    .await;
    let owner = stray
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| (r.kind.clone(), r.name.clone(), r.uid.clone()));
    assert_eq!(
        owner,
        Some((
            "Deployment".to_owned(),
            "adopt".to_owned(),
            adopter.metadata.uid.clone().unwrap_or_default()
        ))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_namespace_deletion_and_node_ipam() {
    let plane = ControlPlane::start_with(&["--no-scheduler"]);
    let kubectl = Kubectl::new(33, &plane);
    let client = plane.client().await;
    // Node IPAM: each node gets its own block of the cluster CIDR.
    create_node(&client, "node-a", "z1").await;
    create_node(&client, "node-b", "z1").await;
    let nodes: Api<Node> = Api::all(client.clone());
    let mut cidrs = Vec::new();
    for name in ["node-a", "node-b"] {
        let cidr = eventually("a pod CIDR", Duration::from_secs(20), &plane, || {
            let nodes = nodes.clone();
            async move { nodes.get(name).await.ok()?.spec?.pod_cidr }
        })
        .await;
        cidrs.push(cidr);
    }
    cidrs.sort();
    assert_eq!(cidrs, vec!["10.244.0.0/24", "10.244.1.0/24"]);

    // Deleting a Deployment (background) removes its ReplicaSet and pods.
    let manifest = deployment_yaml(3, "1").replace("namespace: default", "namespace: demo");
    apply(
        &kubectl,
        &plane,
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: demo}}\n---\n{manifest}"),
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "demo");
    eventually("3 pods", Duration::from_secs(20), &plane, || {
        let pods = pods.clone();
        async move { (pods.list(&ListParams::default()).await.ok()?.items.len() == 3).then_some(()) }
    })
    .await;
    kubectl.run(&["delete", "deployment", "web", "-n", "demo"]);
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), "demo");
    eventually(
        "the ReplicaSet and pods to be collected",
        Duration::from_secs(30),
        &plane,
        || {
            let pods = pods.clone();
            let sets = sets.clone();
            async move {
                let gone = pods
                    .list(&ListParams::default())
                    .await
                    .ok()?
                    .items
                    .is_empty()
                    && sets
                        .list(&ListParams::default())
                        .await
                        .ok()?
                        .items
                        .is_empty();
                gone.then_some(())
            }
        },
    )
    .await;

    // Foreground deletion: the owner stays until its dependents are gone.
    apply(&kubectl, &plane, &manifest);
    eventually("3 pods again", Duration::from_secs(20), &plane, || {
        let pods = pods.clone();
        async move { (pods.list(&ListParams::default()).await.ok()?.items.len() == 3).then_some(()) }
    })
    .await;
    kubectl.run(&[
        "delete",
        "deployment",
        "web",
        "-n",
        "demo",
        "--cascade=foreground",
        "--timeout=60s",
    ]);
    assert!(
        pods.list(&ListParams::default())
            .await
            .expect("pods")
            .items
            .is_empty()
    );

    // Deleting the namespace removes what is inside, then the namespace.
    apply(&kubectl, &plane, &manifest);
    apply(
        &kubectl,
        &plane,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: demo}\ndata: {k: v}\n",
    );
    kubectl.run(&["delete", "namespace", "demo", "--timeout=60s"]);
    let error = kubectl.fail(&["get", "namespace", "demo"]);
    assert!(
        error.contains("NotFound") || error.contains("not found"),
        "{error}"
    );
    assert!(
        pods.list(&ListParams::default())
            .await
            .expect("pods")
            .items
            .is_empty()
    );
}

/// The `ready`/`terminating` conditions of the `web` Service's endpoints on `node`.
async fn endpoints_on(client: &Client, node: &str) -> Vec<(bool, bool)> {
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|s| s.endpoints)
        .filter(|e| e.node_name.as_deref() == Some(node))
        .map(|e| {
            let c = e.conditions.unwrap_or_default();
            (c.ready == Some(true), c.terminating == Some(true))
        })
        .collect()
}

/// The Ready condition (status, reason) and the taint keys of `node`.
async fn node_health(client: &Client, node: &str) -> (String, String, Vec<String>) {
    let node: Node = Api::<Node>::all(client.clone())
        .get(node)
        .await
        .expect("get the node");
    let ready = node
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .expect("a Ready condition");
    let taints = node
        .spec
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .into_iter()
        .map(|t| format!("{}:{}", t.key, t.effect))
        .collect();
    (ready.status, ready.reason.unwrap_or_default(), taints)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_lease_stops_goes_not_ready_and_its_pods_are_evicted() {
    let plane = ControlPlane::start_with(&[
        "--node-monitor-grace-period",
        "4s",
        "--node-monitor-period",
        "500ms",
    ]);
    let kubectl = Kubectl::new(33, &plane);
    let client = plane.client().await;
    for (node, zone) in [("node-a", "z1"), ("node-b", "z2")] {
        create_node(&client, node, zone).await;
    }
    let kubelet = FakeKubelet::start(client.clone());
    // 4 replicas that tolerate an unreachable node for 6 s, and a Service selecting them.
    let yaml = deployment_yaml(4, "1").replace(
        "      containers:\n",
        "      tolerations:\n      - {key: node.kubernetes.io/unreachable, operator: Exists, \
         effect: NoExecute, tolerationSeconds: 6}\n      containers:\n",
    );
    apply(&kubectl, &plane, &yaml);
    apply(
        &kubectl,
        &plane,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\nspec:\n  \
         selector: {app: web}\n  ports: [{port: 80}]\n",
    );
    let status = kubectl.run(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(status.contains("successfully rolled out"), "{status}");
    let on_b = eventually(
        "2 ready endpoints on node-b",
        Duration::from_secs(30),
        &plane,
        || {
            let client = client.clone();
            async move {
                let eps = endpoints_on(&client, "node-b").await;
                (eps.len() == 2 && eps.iter().all(|(ready, _)| *ready)).then_some(eps.len())
            }
        },
    )
    .await;
    assert_eq!(on_b, 2);

    // node-b's kubelet stops: no lease renewals.
    kubelet.stop_node("node-b");
    let stopped = Instant::now();
    eventually(
        "node-b NotReady and tainted",
        Duration::from_secs(15),
        &plane,
        || {
            let client = client.clone();
            async move {
                let (status, reason, taints) = node_health(&client, "node-b").await;
                (status == "Unknown"
                    && reason == "NodeStatusUnknown"
                    && taints.contains(&"node.kubernetes.io/unreachable:NoExecute".to_owned()))
                .then_some(())
            }
        },
    )
    .await;
    assert!(
        stopped.elapsed() >= Duration::from_secs(3),
        "node-b went NotReady after {:?}, before its 4 s grace period",
        stopped.elapsed()
    );
    assert_eq!(node_health(&client, "node-a").await.0, "True");
    eventually(
        "node-b's endpoints not ready (and not yet evicted)",
        Duration::from_secs(5),
        &plane,
        || {
            let client = client.clone();
            async move {
                let eps = endpoints_on(&client, "node-b").await;
                (eps.len() == 2 && eps.iter().all(|(ready, term)| !ready && !term)).then_some(())
            }
        },
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let on_b = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("pods")
        .items
        .into_iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("node-b"))
        .collect::<Vec<_>>();
    assert_eq!(on_b.len(), 2);
    for pod in &on_b {
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .expect("Ready condition");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("NodeUnreachable"))
        );
    }

    // After their 6 s toleration the pods on node-b are evicted and replaced on node-a.
    let tainted = Instant::now();
    eventually(
        "node-b's pods evicted and 4 ready replicas on node-a",
        Duration::from_secs(30),
        &plane,
        || {
            let pods = pods.clone();
            async move {
                let list = pods
                    .list(&ListParams::default().labels("app=web"))
                    .await
                    .ok()?
                    .items;
                let node_of = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone());
                let b_evicted = list
                    .iter()
                    .filter(|p| node_of(p).as_deref() == Some("node-b"))
                    .all(|p| p.metadata.deletion_timestamp.is_some());
                let ready_on_a = list
                    .iter()
                    .filter(|p| node_of(p).as_deref() == Some("node-a"))
                    .filter(|p| p.metadata.deletion_timestamp.is_none())
                    .filter(|p| {
                        p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| {
                                c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                    })
                    .count();
                (b_evicted && ready_on_a == 4).then_some(())
            }
        },
    )
    .await;
    assert!(
        tainted.elapsed() >= Duration::from_secs(4),
        "pods were evicted after {:?}, before their 6 s toleration",
        tainted.elapsed()
    );

    // The kubelet comes back: the taint goes and the node is Ready again.
    kubelet.resume_node("node-b");
    eventually(
        "node-b Ready again",
        Duration::from_secs(15),
        &plane,
        || {
            let client = client.clone();
            async move {
                let (status, _, taints) = node_health(&client, "node-b").await;
                (status == "True" && taints.is_empty()).then_some(())
            }
        },
    )
    .await;
}

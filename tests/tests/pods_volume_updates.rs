//! End to end, privileged: a running pod's ConfigMap and Secret volumes follow their objects
//! and its downward API labels file follows its labels, as with the kubelet, while a key
//! mounted on its own through `subPath` keeps the value the container started with. The pod
//! prints what it reads every second; the test reads that with `kubectl logs`.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    pods::{PodAgent, apply, is_ready, wait_pod},
};
use kube::Api;

/// How long the pod may take to print its first line.
const START: Duration = Duration::from_secs(60);
/// How long an update may take to show. The kubelet's sync period plus its cache TTL is about
/// a minute; keelson watches the objects, so it takes seconds, and a bound under the worker's
/// 60 s re-read shows that the watch did it.
const UPDATE: Duration = Duration::from_secs(20);

fn manifests(node: &str) -> String {
    format!(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: app-config
data:
  greeting: hello-v1
---
apiVersion: v1
kind: Secret
metadata:
  name: app-secret
stringData:
  password: pw-v1
---
apiVersion: v1
kind: Pod
metadata:
  name: reader
  labels:
    tier: blue
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: keelson/busybox:1
    command:
    - sh
    - -c
    - >-
      while true; do
      echo \"cm=$(cat /etc/config/greeting) secret=$(cat /etc/secret/password)
      sub=$(cat /etc/greeting-at-start) labels=$(tr '\\n' ',' < /etc/podinfo/labels)\";
      sleep 1; done
    volumeMounts:
    - name: config
      mountPath: /etc/config
    - name: config
      mountPath: /etc/greeting-at-start
      subPath: greeting
    - name: secret
      mountPath: /etc/secret
    - name: podinfo
      mountPath: /etc/podinfo
  volumes:
  - name: config
    configMap:
      name: app-config
  - name: secret
    secret:
      secretName: app-secret
  - name: podinfo
    downwardAPI:
      items:
      - path: labels
        fieldRef:
          fieldPath: metadata.labels
"
    )
}

/// The pod's last printed line.
fn last_line(kubectl: &Kubectl<'_>) -> String {
    let logs = kubectl.run(&["logs", "reader", "-c", "app", "--tail=1"]);
    logs.trim().to_owned()
}

/// Waits until the pod prints `want`; returns how long it took.
fn wait_line(kubectl: &Kubectl<'_>, agent: &PodAgent, bound: Duration, want: &str) -> Duration {
    let start = Instant::now();
    let mut seen = String::new();
    while start.elapsed() < bound {
        seen = last_line(kubectl);
        if seen == want {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    panic!(
        "within {bound:?} the pod printed {seen:?}, not {want:?}\nagent log:\n{}",
        agent.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mounted_configmaps_secrets_and_labels_follow_their_objects_but_subpath_does_not() {
    // The kubelet endpoint (which `kubectl logs` reaches through the API server) listens on
    // loopback in tests; the Node's InternalIP says so. Without node IPAM the agent uses this
    // test's own pod CIDR.
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    let agent = PodAgent::start(&plane, &["--node-address", "127.0.0.1"]);
    let kubectl = Kubectl::new(33, &plane);
    let client = plane.client().await;
    apply(
        &kubectl,
        plane.data_dir(),
        "volume-updates.yaml",
        &manifests(&agent.node),
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    wait_pod(
        &pods,
        "reader",
        Duration::from_secs(60),
        &agent,
        "reader is Ready",
        is_ready,
    )
    .await;
    wait_line(
        &kubectl,
        &agent,
        START,
        "cm=hello-v1 secret=pw-v1 sub=hello-v1 labels=tier=\"blue\"",
    );

    kubectl.run(&[
        "patch",
        "configmap",
        "app-config",
        "--type=merge",
        "-p",
        r#"{"data":{"greeting":"hello-v2"}}"#,
    ]);
    kubectl.run(&[
        "patch",
        "secret",
        "app-secret",
        "--type=merge",
        "-p",
        r#"{"stringData":{"password":"pw-v2"}}"#,
    ]);
    let took = wait_line(
        &kubectl,
        &agent,
        UPDATE,
        "cm=hello-v2 secret=pw-v2 sub=hello-v1 labels=tier=\"blue\"",
    );
    println!("ConfigMap and Secret updates showed after {took:?}");

    kubectl.run(&["label", "pod", "reader", "tier=green", "--overwrite"]);
    let took = wait_line(
        &kubectl,
        &agent,
        UPDATE,
        "cm=hello-v2 secret=pw-v2 sub=hello-v1 labels=tier=\"green\"",
    );
    println!("the label change showed after {took:?}");

    kubectl.run(&["delete", "pod/reader", "--timeout=60s"]);
    agent.assert_pods_gone_cleanly(&pods).await;
}

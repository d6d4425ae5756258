//! End to end, privileged: container lifecycle features as a user sees them through kubectl: a
//! sidecar (an init container with `restartPolicy: Always`) starts before the next init
//! container, keeps running beside the app and is reported in `initContainerStatuses`; a
//! postStart hook runs right after its container starts and a failing one is a
//! `FailedPostStartHook` event and a restart; a preStop hook runs on deletion while the sidecar
//! still serves; a one-shot pod with a sidecar ends `Succeeded`.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    pods::{PodAgent, apply, container_id, exec, is_ready, uid, wait_pod},
};
use kube::Api;

fn manifests(node: &str, host_dir: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: hooked, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 5
  volumes:
  - name: shared
    emptyDir: {{}}
  - name: host
    hostPath: {{path: {host_dir}, type: DirectoryOrCreate}}
  initContainers:
  - name: helper
    image: keelson/busybox:1
    restartPolicy: Always
    command: [\"sh\", \"-c\", \"echo up > /shared/helper; exec httpd -f -p 9090 -h /shared\"]
    startupProbe:
      tcpSocket: {{port: 9090}}
      periodSeconds: 1
    volumeMounts:
    - {{name: shared, mountPath: /shared}}
  - name: setup
    image: keelson/busybox:1
    command: [\"sh\", \"-c\", \"wget -qO /shared/seen-by-setup http://127.0.0.1:9090/helper\"]
    volumeMounts:
    - {{name: shared, mountPath: /shared}}
  containers:
  - name: app
    image: keelson/busybox:1
    command: [\"sleep\", \"3600\"]
    lifecycle:
      postStart:
        exec: {{command: [\"sh\", \"-c\", \"echo started > /shared/post-start\"]}}
      preStop:
        exec:
          command: [\"sh\", \"-c\", \"wget -qO /host/pre-stop http://127.0.0.1:9090/helper\"]
    volumeMounts:
    - {{name: shared, mountPath: /shared}}
    - {{name: host, mountPath: /host}}
---
apiVersion: v1
kind: Pod
metadata: {{name: badhook, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: keelson/busybox:1
    command: [\"sleep\", \"3600\"]
    lifecycle:
      postStart:
        exec: {{command: [\"sh\", \"-c\", \"exit 3\"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: oneshot, namespace: default}}
spec:
  nodeName: {node}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  initContainers:
  - name: helper
    image: keelson/busybox:1
    restartPolicy: Always
    command: [\"sleep\", \"3600\"]
  containers:
  - name: job
    image: keelson/busybox:1
    command: [\"sh\", \"-c\", \"sleep 1\"]
"
    )
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_and_hooks_run_in_the_kubelet_order() {
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    let agent = PodAgent::start(&plane, &[]);
    let kubectl = Kubectl::new(33, &plane);
    let pods: Api<Pod> = Api::namespaced(plane.client().await, "default");
    let host_dir = plane.data_dir().join("hooks");
    apply(
        &kubectl,
        plane.data_dir(),
        "hooks.yaml",
        &manifests(&agent.node, &host_dir.display().to_string()),
    );
    let timeout = Duration::from_secs(60);

    // The sidecar started first and serves the regular init container; the app's postStart
    // hook ran. kubectl shows the sidecar as a started, ready, running init container.
    let hooked = wait_pod(
        &pods,
        "hooked",
        timeout,
        &agent,
        "hooked is Ready",
        is_ready,
    )
    .await;
    let app = container_id(&uid(&hooked), "app");
    let (ok, out) = exec(&app, "cat /shared/seen-by-setup /shared/post-start");
    assert!(ok, "{out}");
    assert_eq!(out, "up\nstarted\n");
    let sidecar = kubectl.run(&[
        "get",
        "pod",
        "hooked",
        "-o",
        "jsonpath={.status.initContainerStatuses[0].name} \
         {.status.initContainerStatuses[0].started} {.status.initContainerStatuses[0].ready} \
         {.status.initContainerStatuses[0].state.running.startedAt}",
    ]);
    let words: Vec<&str> = sidecar.split_whitespace().collect();
    assert_eq!(words.len(), 4, "{sidecar}");
    assert_eq!(words[..3], ["helper", "true", "true"], "{sidecar}");
    let setup = kubectl.run(&[
        "get",
        "pod",
        "hooked",
        "-o",
        "jsonpath={.status.initContainerStatuses[1].state.terminated.reason}",
    ]);
    assert_eq!(setup, "Completed");

    // A failing postStart hook: the kubelet's event, and the container is restarted.
    wait_pod(
        &pods,
        "badhook",
        timeout,
        &agent,
        "badhook restarted after its postStart hook failed",
        |p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.restart_count >= 1))
        },
    )
    .await;
    let events = kubectl.run(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=badhook,reason=FailedPostStartHook",
        "-o",
        "jsonpath={.items[0].type} {.items[0].message}",
    ]);
    assert_eq!(events, "Warning PostStartHook failed");

    // A one-shot pod with a sidecar completes: the sidecar does not hold it up.
    wait_pod(
        &pods,
        "oneshot",
        timeout,
        &agent,
        "oneshot Succeeded",
        |p| phase(p) == Some("Succeeded"),
    )
    .await;

    // Deleting hooked runs the preStop hook first, while the sidecar still serves.
    kubectl.run(&["delete", "pod", "hooked", "--timeout=60s"]);
    let written = std::fs::read_to_string(host_dir.join("pre-stop"))
        .unwrap_or_else(|e| panic!("the preStop hook wrote nothing: {e}\n{}", agent.log()));
    assert_eq!(written, "up\n");

    kubectl.run(&["delete", "pod", "badhook", "oneshot", "--timeout=60s"]);
    agent.assert_no_leaks();
}

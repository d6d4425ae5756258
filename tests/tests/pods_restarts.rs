//! End to end, privileged: restart policies, back-off and probes as a user sees them through the
//! API and `kubectl describe`: a crashing container backs off (CrashLoopBackOff, restartCount
//! grows), a failing readiness probe keeps a pod not Ready, a failing liveness probe restarts its
//! container, init containers run first, one-shot pods end Succeeded or Failed, and a missing
//! image reports ErrImagePull.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    pods::{PodAgent, apply, container_id, exec, is_ready, uid, wait_pod},
};
use kube::Api;

fn manifests(node: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: crash, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: keelson/busybox:1
    command: [\"sh\", \"-c\", \"echo boom; exit 3\"]
---
apiVersion: v1
kind: Pod
metadata: {{name: nostart, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: keelson/busybox:1
    command: [\"/no/such/program\"]
---
apiVersion: v1
kind: Pod
metadata: {{name: gate, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: keelson/busybox:1
    command: [\"sleep\", \"3600\"]
    readinessProbe:
      exec: {{command: [\"test\", \"-f\", \"/tmp/ready\"]}}
      periodSeconds: 1
      failureThreshold: 1
---
apiVersion: v1
kind: Pod
metadata: {{name: alive, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: keelson/busybox:1
    command: [\"sh\", \"-c\", \"touch /tmp/alive; exec sleep 3600\"]
    livenessProbe:
      exec: {{command: [\"test\", \"-f\", \"/tmp/alive\"]}}
      periodSeconds: 1
      failureThreshold: 2
---
apiVersion: v1
kind: Pod
metadata: {{name: staged, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  volumes:
  - {{name: work, emptyDir: {{}}}}
  initContainers:
  - name: first
    image: keelson/busybox:1
    command: [\"sh\", \"-c\", \"echo one > /work/log\"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  - name: second
    image: keelson/busybox:1
    command: [\"sh\", \"-c\", \"echo two >> /work/log\"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
  - name: main
    image: keelson/busybox:1
    command: [\"sh\", \"-c\", \"test \\\"$(cat /work/log)\\\" = \\\"$(printf 'one\\\\ntwo')\\\"\"]
    volumeMounts: [{{name: work, mountPath: /work}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: fails, namespace: default}}
spec:
  nodeName: {node}
  restartPolicy: Never
  containers:
  - name: app
    image: keelson/busybox:1
    command: [\"sh\", \"-c\", \"exit 7\"]
---
apiVersion: v1
kind: Pod
metadata: {{name: ghost, namespace: default}}
spec:
  nodeName: {node}
  containers:
  - name: app
    image: keelson/does-not-exist:1
"
    )
}

fn status_of<'a>(pod: &'a Pod, container: &str) -> Option<&'a ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)
}

fn waiting_reason(pod: &Pod) -> Option<String> {
    status_of(pod, "app")?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

fn phase(pod: &Pod) -> Option<&str> {
    pod.status.as_ref()?.phase.as_deref()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policies_back_off_and_probes_show_in_status_and_describe() {
    // Without node IPAM the agent uses this test's own --pod-cidr (10.250.N.0/24), so tests
    // running at once never share pod addresses or routes.
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    let agent = PodAgent::start(&plane, &["--restart-backoff-seconds", "2"]);
    let kubectl = Kubectl::new(33, &plane);
    let pods: Api<Pod> = Api::namespaced(plane.client().await, "default");
    apply(
        &kubectl,
        plane.data_dir(),
        "pods.yaml",
        &manifests(&agent.node),
    );
    let timeout = Duration::from_secs(60);

    // The crashing container is restarted with growing back-off.
    let crash = wait_pod(&pods, "crash", timeout, &agent, "crash backs off", |p| {
        status_of(p, "app").is_some_and(|c| c.restart_count >= 2)
            && waiting_reason(p).as_deref() == Some("CrashLoopBackOff")
    })
    .await;
    let app = status_of(&crash, "app").expect("app status");
    let last = app
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("lastState.terminated");
    assert_eq!(last.exit_code, 3, "{app:?}");
    assert_eq!(last.reason.as_deref(), Some("Error"));
    assert_eq!(phase(&crash), Some("Running"));
    assert!(!is_ready(&crash));
    let describe = kubectl.run(&["describe", "pod", "crash"]);
    for needle in [
        "CrashLoopBackOff",
        "Last State:     Terminated",
        "Exit Code:    3",
        "Back-off restarting failed container app",
    ] {
        assert!(
            describe.contains(needle),
            "describe lacks {needle:?}:\n{describe}"
        );
    }

    // A container that cannot start backs off the same way (StartError), without a storm.
    let nostart = wait_pod(
        &pods,
        "nostart",
        timeout,
        &agent,
        "nostart backs off",
        |p| {
            status_of(p, "app").is_some_and(|c| c.restart_count >= 2)
                && waiting_reason(p).as_deref() == Some("CrashLoopBackOff")
        },
    )
    .await;
    let app = status_of(&nostart, "app").expect("app status");
    let last = app
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .expect("lastState.terminated");
    assert_eq!(last.reason.as_deref(), Some("StartError"), "{app:?}");
    assert!(
        app.restart_count <= 4,
        "restarted without back-off: {app:?}"
    );

    // A failing readiness probe keeps the pod Running but not Ready, until it passes.
    let gate = wait_pod(&pods, "gate", timeout, &agent, "gate runs", |p| {
        phase(p) == Some("Running")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let gate_now = pods.get("gate").await.expect("GET gate");
    assert!(!is_ready(&gate_now), "{:?}", gate_now.status);
    let (ok, out) = exec(&container_id(&uid(&gate), "app"), "touch /tmp/ready");
    assert!(ok, "{out}");
    wait_pod(&pods, "gate", timeout, &agent, "gate turns Ready", is_ready).await;

    // A failing liveness probe restarts the container.
    let alive = wait_pod(&pods, "alive", timeout, &agent, "alive runs", is_ready).await;
    let (ok, out) = exec(&container_id(&uid(&alive), "app"), "rm /tmp/alive");
    assert!(ok, "{out}");
    wait_pod(&pods, "alive", timeout, &agent, "alive is restarted", |p| {
        status_of(p, "app").is_some_and(|c| c.restart_count >= 1) && is_ready(p)
    })
    .await;

    // Init containers run in order before the main container; Never pods end.
    let staged = wait_pod(&pods, "staged", timeout, &agent, "staged succeeds", |p| {
        phase(p) == Some("Succeeded")
    })
    .await;
    let inits = staged
        .status
        .as_ref()
        .and_then(|s| s.init_container_statuses.clone())
        .expect("initContainerStatuses");
    assert_eq!(inits.len(), 2);
    assert!(
        inits.iter().all(|c| c
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0)),
        "{inits:?}"
    );
    let fails = wait_pod(&pods, "fails", timeout, &agent, "fails fails", |p| {
        phase(p) == Some("Failed")
    })
    .await;
    assert_eq!(status_of(&fails, "app").map(|c| c.restart_count), Some(0));

    // A missing image that cannot be pulled says so.
    let ghost = wait_pod(
        &pods,
        "ghost",
        timeout,
        &agent,
        "ghost reports the pull error",
        |p| {
            matches!(
                waiting_reason(p).as_deref(),
                Some("ErrImagePull" | "ImagePullBackOff")
            )
        },
    )
    .await;
    assert_eq!(phase(&ghost), Some("Pending"));
    let message = status_of(&ghost, "app")
        .and_then(|c| c.state.as_ref()?.waiting.as_ref()?.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("keelson/does-not-exist"),
        "the waiting message names the image: {message:?}"
    );

    kubectl.run(&[
        "delete",
        "pod",
        "crash",
        "nostart",
        "gate",
        "alive",
        "staged",
        "fails",
        "ghost",
        "--timeout=60s",
    ]);
    agent.assert_no_leaks();
}

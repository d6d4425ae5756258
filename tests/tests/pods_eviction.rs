//! End to end, privileged: the node agent's eviction manager. A pod whose emptyDir outgrows
//! its `sizeLimit` is evicted (Failed, reason Evicted, the kubelet's message, a Warning event)
//! while its neighbour keeps running; under a crossed hard threshold (here `pid.available`,
//! set above what any host has free) the node reports PIDPressure, gets the pid-pressure
//! taint, and its pods are evicted one per pass, the lowest priority first.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    pods::{PodAgent, apply, is_ready, pod_containers, uid, wait_pod},
};
use kube::{Api, api::ListParams};

fn is_evicted(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Failed") && s.reason.as_deref() == Some("Evicted")
    })
}

fn message(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.message.clone())
        .unwrap_or_default()
}

/// The Warning `Evicted` events about pod `name`.
async fn eviction_events(events: &Api<Event>, name: &str) -> Vec<Event> {
    events
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .filter(|e| e.reason.as_deref() == Some("Evicted"))
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_dir_over_its_size_limit_gets_its_pod_evicted() {
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    let agent = PodAgent::start(&plane, &[]);
    let kubectl = Kubectl::new(33, &plane);
    let client = plane.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let events: Api<Event> = Api::namespaced(client, "default");
    let dir = tempfile::tempdir().expect("temp dir");
    let node = &agent.node;
    apply(
        &kubectl,
        dir.path(),
        "pods.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: hog, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 30
  volumes:
  - name: scratch
    emptyDir: {{sizeLimit: 10Mi}}
  containers:
  - name: fill
    image: keelson/busybox:1
    command: [sh, -c, 'dd if=/dev/zero of=/scratch/fill bs=1M count=30 && exec sleep 3600']
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: calm, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  volumes:
  - name: scratch
    emptyDir: {{sizeLimit: 10Mi}}
  containers:
  - name: app
    image: keelson/busybox:1
    command: [sh, -c, 'dd if=/dev/zero of=/scratch/small bs=1M count=2 && exec sleep 3600']
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
"
        ),
    );
    let calm = wait_pod(
        &pods,
        "calm",
        Duration::from_secs(60),
        &agent,
        "calm runs",
        is_ready,
    )
    .await;
    let started = Instant::now();
    let hog = wait_pod(
        &pods,
        "hog",
        Duration::from_secs(60),
        &agent,
        "hog is evicted for its emptyDir",
        is_evicted,
    )
    .await;
    assert_eq!(
        message(&hog),
        "Usage of EmptyDir volume \"scratch\" exceeds the limit \"10Mi\". "
    );
    let status = hog.status.clone().expect("status");
    let disruption = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionTarget")
        .expect("a DisruptionTarget condition");
    assert_eq!(
        (disruption.status.as_str(), disruption.reason.as_deref()),
        ("True", Some("TerminationByKubelet"))
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "evicted within a few passes, took {:?}",
        started.elapsed()
    );
    // The containers were killed at once (no 30 s grace period) and are gone.
    let hog_uid = uid(&hog);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pod_containers(&hog_uid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "hog's containers remain: {:?}",
            pod_containers(&hog_uid)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let event = loop {
        if let Some(e) = eviction_events(&events, "hog").await.pop() {
            break e;
        }
        assert!(Instant::now() < deadline, "no Evicted event for hog");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(event.message.as_deref(), Some(message(&hog).as_str()));
    // The pod stays evicted (not started again), and its neighbour under its limit runs on.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let hog = pods.get("hog").await.expect("GET hog");
    assert!(is_evicted(&hog), "{:?}", hog.status);
    assert!(pod_containers(&hog_uid).is_empty());
    let calm_now = pods.get("calm").await.expect("GET calm");
    assert!(is_ready(&calm_now), "{:?}", calm_now.status);
    assert_eq!(uid(&calm_now), uid(&calm));
    assert!(eviction_events(&events, "calm").await.is_empty());
    // An evicted pod is deleted like any other.
    kubectl.run(&["delete", "pod", "hog", "calm", "--timeout=60s"]);
    agent.assert_no_leaks();
}

/// A quantity of a count as the kubelet prints it (DecimalSI canonical form).
fn decimal(mut n: i64) -> String {
    let mut suffixes = ["", "k", "M", "G", "T"].iter();
    let mut suffix = suffixes.next().copied().unwrap_or_default();
    while n != 0 && n % 1000 == 0 {
        let Some(next) = suffixes.next() else { break };
        n /= 1000;
        suffix = next;
    }
    format!("{n}{suffix}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid_pressure_evicts_the_lowest_priority_pod_first_and_refuses_new_pods() {
    let pid_max: i64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .expect("pid_max")
        .trim()
        .parse()
        .expect("a number");
    // Every process running takes from pid_max: the threshold is always crossed.
    let threshold = format!("pid.available<{pid_max}");
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    // Started without the threshold: a node under pressure refuses new pods, so the two
    // to evict must run before it is.
    let mut agent = PodAgent::start(&plane, &[]);
    let kubectl = Kubectl::new(33, &plane);
    let client = plane.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client);
    let dir = tempfile::tempdir().expect("temp dir");
    let node = &agent.node.clone();
    apply(
        &kubectl,
        dir.path(),
        "pods.yaml",
        &format!(
            "apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {{name: eviction-high}}
value: 1000
---
apiVersion: v1
kind: Pod
metadata: {{name: low, namespace: default}}
spec:
  nodeName: {node}
  containers:
  - {{name: app, image: keelson/busybox:1, command: [sleep, '3600']}}
---
apiVersion: v1
kind: Pod
metadata: {{name: high, namespace: default}}
spec:
  nodeName: {node}
  priorityClassName: eviction-high
  containers:
  - {{name: app, image: keelson/busybox:1, command: [sleep, '3600']}}
"
        ),
    );
    for name in ["low", "high"] {
        wait_pod(
            &pods,
            name,
            Duration::from_secs(60),
            &agent,
            "runs",
            is_ready,
        )
        .await;
    }
    // Restarted with the threshold, the agent keeps the pods it runs (admitted once) and
    // evicts one per pass.
    agent.restart_with(&["--eviction-hard", &threshold]);
    let low = wait_pod(
        &pods,
        "low",
        Duration::from_secs(60),
        &agent,
        "the low-priority pod is evicted",
        is_evicted,
    )
    .await;
    let low_evicted = Instant::now();
    let high = pods.get("high").await.expect("GET high");
    assert!(
        !is_evicted(&high),
        "the higher priority pod goes second: {:?}",
        high.status
    );
    let text = message(&low);
    let prefix = format!(
        "The node was low on resource: pids. Threshold quantity: {}, available: ",
        decimal(pid_max)
    );
    assert!(
        text.starts_with(&prefix) && text.ends_with(". "),
        "{text:?} should start with {prefix:?}"
    );
    // The node says why, and the control plane keeps new pods off it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = nodes.get(node).await.expect("GET node");
        let pressure = n
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "PIDPressure"))
            .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()));
        let tainted = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| {
                t.iter()
                    .any(|t| t.key == "node.kubernetes.io/pid-pressure" && t.effect == "NoSchedule")
            });
        if pressure == Some(("True".into(), "KubeletHasInsufficientPID".into())) && tainted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "PIDPressure {pressure:?}, tainted {tainted}: {:?}",
            n.spec.and_then(|s| s.taints)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // One pod per pass: the other goes on a later pass.
    wait_pod(
        &pods,
        "high",
        Duration::from_secs(60),
        &agent,
        "the higher priority pod is evicted next",
        is_evicted,
    )
    .await;
    assert!(
        low_evicted.elapsed() >= Duration::from_secs(3),
        "both pods went in one pass ({:?} apart)",
        low_evicted.elapsed()
    );
    // A new pod is refused, as the kubelet's admission does under pressure: never run,
    // `Failed`/`Evicted` with the condition named, and a Warning event.
    apply(
        &kubectl,
        dir.path(),
        "late.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata: {{name: late, namespace: default}}
spec:
  nodeName: {node}
  containers:
  - {{name: app, image: keelson/busybox:1, command: [sleep, '3600']}}
"
        ),
    );
    let late = wait_pod(
        &pods,
        "late",
        Duration::from_secs(30),
        &agent,
        "the new pod is refused",
        is_evicted,
    )
    .await;
    assert_eq!(
        message(&late),
        "Pod was rejected: The node had condition: [PIDPressure]. "
    );
    assert!(
        pod_containers(&uid(&late)).is_empty(),
        "a refused pod runs nothing"
    );
    let events: Api<Event> = Api::namespaced(plane.client().await, "default");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let refused = eviction_events(&events, "late").await;
        if refused
            .iter()
            .any(|e| e.message.as_deref() == Some("The node had condition: [PIDPressure]. "))
        {
            break;
        }
        assert!(Instant::now() < deadline, "no Evicted event: {refused:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    kubectl.run(&["delete", "pod", "low", "high", "late", "--timeout=60s"]);
    agent.assert_no_leaks();
}

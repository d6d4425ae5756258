//! End to end, privileged: pod startup latency with a local image. 30 pods (the Kubernetes
//! density test's pods per node) are created through the API, one per second; each one's time
//! from create to Ready is measured from the client, and the agent's RSS is read while they run.
//! The figures are printed; the test holds the Kubernetes SLO (p99 <= 5 s).
//!
//! Each pod is two Docker containers (sandbox and app); on a loaded 2-core machine dockerd
//! creates and starts about three containers a second, which bounds the creation rate.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    pods::{PodAgent, is_ready},
};
use kube::{
    Api,
    api::{PostParams, WatchEvent, WatchParams},
};

const PODS: usize = 30;
const INTERVAL: Duration = Duration::from_millis(1000);

fn pod(node: &str, i: usize) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("start-{i}"), "namespace": "default",
                     "labels": {"bench": "startup"}},
        "spec": {
            "nodeName": node,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "app", "image": "keelson/busybox:1",
                            "command": ["sleep", "3600"]}],
        },
    }))
    .expect("a valid pod")
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_pods_start_within_the_slo() {
    // Without node IPAM the agent uses this test's own --pod-cidr (10.250.N.0/24), so tests
    // running at once never share pod addresses or routes.
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    let agent = PodAgent::start(&plane, &[]);
    let pods: Api<Pod> = Api::namespaced(plane.client().await, "default");
    let rss_idle = {
        tokio::time::sleep(Duration::from_secs(2)).await;
        agent.rss_kib()
    };

    let mut watch = pods
        .watch(
            &WatchParams::default().labels("bench=startup").timeout(120),
            "0",
        )
        .await
        .expect("watch pods")
        .boxed();
    let created: std::sync::Arc<std::sync::Mutex<HashMap<String, Instant>>> = Default::default();
    let creator = {
        let pods = pods.clone();
        let created = created.clone();
        let node = agent.node.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            for i in 0..PODS {
                tick.tick().await;
                let started = Instant::now();
                pods.create(&PostParams::default(), &pod(&node, i))
                    .await
                    .expect("create pod");
                created
                    .lock()
                    .expect("lock")
                    .insert(format!("start-{i}"), started);
            }
        })
    };

    let mut latencies: HashMap<String, Duration> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while latencies.len() < PODS {
        assert!(
            Instant::now() < deadline,
            "only {} of {PODS} pods Ready within 120 s; agent log:\n{}",
            latencies.len(),
            agent.log()
        );
        let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(5), watch.next()).await
        else {
            continue;
        };
        let event = event.expect("watch event");
        if let WatchEvent::Added(p) | WatchEvent::Modified(p) = event {
            let name = p.metadata.name.clone().unwrap_or_default();
            if is_ready(&p) && !latencies.contains_key(&name) {
                let at = created.lock().expect("lock").get(&name).copied();
                if let Some(at) = at {
                    latencies.insert(name, at.elapsed());
                }
            }
        }
    }
    creator.await.expect("creator");
    let rss_busy = agent.rss_kib();
    let mut sorted: Vec<Duration> = latencies.into_values().collect();
    sorted.sort();
    let (p50, p99) = (percentile(&sorted, 50.0), percentile(&sorted, 99.0));
    println!(
        "pod startup (create -> Ready, {PODS} pods, one per {INTERVAL:?}, local image): p50 {:.0} ms, p99 {:.0} ms, \
         max {:.0} ms; agent RSS {} KiB idle, {} KiB with {PODS} pods",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        sorted[sorted.len() - 1].as_secs_f64() * 1e3,
        rss_idle,
        rss_busy
    );
    assert!(
        p99 <= Duration::from_secs(5),
        "p99 pod startup {p99:?} exceeds the Kubernetes SLO of 5 s"
    );

    let kubectl = Kubectl::new(33, &plane);
    kubectl.run(&["delete", "pods", "-l", "bench=startup", "--timeout=120s"]);
    agent.assert_no_leaks();
}

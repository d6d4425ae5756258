//! Pod startup latency as a user sees it: pods created through the API at a steady rate, each
//! timed from its create request to the watch event that shows it Running and Ready, and the
//! node agent's resident set size along the way. Shared by the `pods_startup` test and
//! `cargo xtask bench pods`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams, WatchEvent, WatchParams},
};

use crate::pods::{BUSYBOX, HTTPD, PodAgent, is_ready};

/// The label every measured pod carries.
pub const LABEL: &str = "bench=startup";

/// What one measurement found.
#[derive(Debug, Clone)]
pub struct Startup {
    /// Create -> Ready for every pod, sorted.
    pub latencies: Vec<Duration>,
    /// The agent's RSS (KiB) before the first pod.
    pub rss_idle_kib: u64,
    /// The agent's RSS (KiB) with every pod running.
    pub rss_busy_kib: u64,
}

impl Startup {
    /// The `p`th percentile (nearest rank).
    pub fn percentile(&self, p: f64) -> Duration {
        let sorted = &self.latencies;
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    /// The slowest pod.
    pub fn max(&self) -> Duration {
        self.latencies.last().copied().unwrap_or_default()
    }
}

/// What each measured pod runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One `sleep` container of [`BUSYBOX`], named `start-<i>`: Ready as soon as it runs.
    Plain,
    /// An init container (`true` in [`BUSYBOX`]), then [`HTTPD`] with a readiness probe
    /// (`httpGet /` on port 80, `initialDelaySeconds: 0`, `periodSeconds: 1`), named
    /// `probed-<i>`: Ready once the init container has exited and the first probe passed.
    InitAndProbe,
}

impl Shape {
    /// The name of the `i`th pod of this shape.
    fn name(self, i: usize) -> String {
        match self {
            Self::Plain => format!("start-{i}"),
            Self::InitAndProbe => format!("probed-{i}"),
        }
    }
}

/// The `i`th pod of `shape`, bound to `node`.
fn pod(node: &str, shape: Shape, i: usize) -> Pod {
    let mut spec = serde_json::json!({
        "nodeName": node,
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "app", "image": BUSYBOX, "command": ["sleep", "3600"]}],
    });
    if shape == Shape::InitAndProbe {
        spec["initContainers"] =
            serde_json::json!([{"name": "init", "image": BUSYBOX, "command": ["true"]}]);
        spec["containers"] = serde_json::json!([{
            "name": "web", "image": HTTPD,
            "readinessProbe": {
                "httpGet": {"path": "/", "port": 80},
                "initialDelaySeconds": 0, "periodSeconds": 1,
            },
        }]);
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": shape.name(i), "namespace": "default",
                     "labels": {"bench": "startup"}},
        "spec": spec,
    }))
    .expect("a valid pod")
}

/// Creates `count` [`Shape::Plain`] pods on `agent`'s node, one per `interval`, and waits (at
/// most `timeout`) until each is Ready. Panics with the agent's log when they are not.
pub async fn measure(
    client: kube::Client,
    agent: &PodAgent,
    count: usize,
    interval: Duration,
    timeout: Duration,
) -> Startup {
    measure_shape(client, agent, Shape::Plain, count, interval, timeout).await
}

/// [`measure`] with pods of `shape`.
pub async fn measure_shape(
    client: kube::Client,
    agent: &PodAgent,
    shape: Shape,
    count: usize,
    interval: Duration,
    timeout: Duration,
) -> Startup {
    let pods: Api<Pod> = Api::namespaced(client, "default");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle_kib = agent.rss_kib();

    let mut watch = pods
        .watch(
            &WatchParams::default()
                .labels(LABEL)
                .timeout(timeout.as_secs().clamp(1, 290) as u32),
            "0",
        )
        .await
        .expect("watch pods")
        .boxed();
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let creator = {
        let pods = pods.clone();
        let created = created.clone();
        let node = agent.node.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            for i in 0..count {
                tick.tick().await;
                let started = Instant::now();
                pods.create(&PostParams::default(), &pod(&node, shape, i))
                    .await
                    .expect("create pod");
                created.lock().expect("lock").insert(shape.name(i), started);
            }
        })
    };

    let mut latencies: HashMap<String, Duration> = HashMap::new();
    let deadline = Instant::now() + timeout;
    while latencies.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} pods Ready within {timeout:?}; agent log:\n{}",
            latencies.len(),
            agent.log()
        );
        let Ok(next) = tokio::time::timeout(Duration::from_secs(5), watch.next()).await else {
            continue;
        };
        let event = match next {
            Some(event) => event.expect("watch event"),
            // The server ended the watch (its timeout): start a new one from now.
            None => {
                watch = pods
                    .watch(&WatchParams::default().labels(LABEL), "0")
                    .await
                    .expect("watch pods")
                    .boxed();
                continue;
            }
        };
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
    let rss_busy_kib = agent.rss_kib();
    let mut latencies: Vec<Duration> = latencies.into_values().collect();
    latencies.sort();
    Startup {
        latencies,
        rss_idle_kib,
        rss_busy_kib,
    }
}

/// Deletes the measured pods and waits (at most `timeout`) until the API has none left.
pub async fn delete_all(client: kube::Client, timeout: Duration) {
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let list = ListParams::default().labels(LABEL);
    pods.delete_collection(&DeleteParams::default(), &list)
        .await
        .expect("delete the measured pods");
    let deadline = Instant::now() + timeout;
    loop {
        let left = pods.list(&list).await.expect("list pods").items.len();
        if left == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{left} measured pods still exist {timeout:?} after their deletion"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

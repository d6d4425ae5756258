//! Resource usage of the node, its pods and their containers, read from cgroups, served on the
//! kubelet endpoint as the kubelet serves it: `GET /stats/summary` (the Summary API, CPU and
//! memory) and `GET /metrics/resource` (Prometheus text). The API server's `metrics.k8s.io`
//! reads the summary.
//!
//! A [`Sampler`] reads every running container of this node and the root cgroup every
//! [`SAMPLE_PERIOD`] (cAdvisor's housekeeping interval is 10 s too) and keeps the last two
//! samples; `usageNanoCores` is the rate between them. A request before the first tick samples
//! at once (memory then, CPU rates from the next tick on).
//!
//! Containers are found through Docker (running ones labelled with this node), each one's
//! cgroup through `/proc/<pid>/cgroup` of its main process, which holds under either cgroup
//! driver, any `--cgroup-parent` and v1 or v2 ([`cgroup::process_dirs`]); the directory is
//! looked up once per container.
//!
//! The `/metrics/resource` text is written here, not through `prometheus-client`: the kubelet
//! stamps each sample with its reading's time (metrics-server computes rates from those
//! stamps), and `prometheus-client` 0.26 can put a timestamp on an exemplar only, not on a
//! sample; its encoder also writes OpenMetrics (`# EOF`, a `_total`-less counter family name),
//! not the kubelet's 0.0.4 format.

pub mod cgroup;
pub mod summary;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use axum::{
    Router,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use k8s_openapi::jiff::Timestamp;

use self::{
    cgroup::{Dirs, Hierarchy},
    summary::{ContainerSample, PodRef, Sample, Summary},
};
use super::runtime::{
    LABEL_CONTAINER, LABEL_NODE, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID, LABEL_ROLE,
};

/// How often the sampler reads every cgroup.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(10);

/// The shortest time between two samples: a tick right after an on-demand first sample is
/// skipped, so no CPU rate is averaged over a few milliseconds.
pub const MIN_SPACING: Duration = Duration::from_secs(5);

/// A running container the sampler should read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    /// The runtime's id.
    pub id: String,
    /// Its pod.
    pub pod: PodRef,
    /// Its name in the pod spec.
    pub name: String,
    /// The pod's sandbox.
    pub sandbox: bool,
    /// Its main process on the node (0: unknown).
    pub pid: u32,
    /// When it started.
    pub started: Option<Timestamp>,
}

/// Where the sampler learns which containers run.
#[async_trait]
pub trait Containers: Send + Sync + std::fmt::Debug {
    /// The running containers of this node's pods.
    async fn running(&self) -> Result<Vec<Running>, String>;
}

/// Docker's running containers labelled with this node; each one inspected once for its pid
/// and start time.
#[derive(Debug)]
pub struct DockerContainers {
    docker: bollard::Docker,
    node: String,
    inspected: Mutex<HashMap<String, (u32, Option<Timestamp>)>>,
}

impl DockerContainers {
    /// The containers `docker` runs for node `node`.
    pub fn new(docker: bollard::Docker, node: &str) -> Self {
        Self {
            docker,
            node: node.to_owned(),
            inspected: Mutex::default(),
        }
    }
}

#[async_trait]
impl Containers for DockerContainers {
    async fn running(&self) -> Result<Vec<Running>, String> {
        use bollard::query_parameters::ListContainersOptions;
        let options = ListContainersOptions {
            all: false,
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![format!("{LABEL_NODE}={}", self.node)],
            )])),
            ..ListContainersOptions::default()
        };
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| format!("listing containers: {e}"))?;
        let mut out = Vec::with_capacity(list.len());
        for summary in list {
            let (Some(id), Some(labels)) = (summary.id, summary.labels) else {
                continue;
            };
            let label = |key: &str| labels.get(key).cloned();
            let (Some(name), Some(namespace), Some(uid), Some(container)) = (
                label(LABEL_POD_NAME),
                label(LABEL_POD_NAMESPACE),
                label(LABEL_POD_UID),
                label(LABEL_CONTAINER),
            ) else {
                continue;
            };
            let known = self.inspected.lock().ok().and_then(|m| m.get(&id).copied());
            let (pid, started) = match known {
                Some(found) => found,
                None => {
                    let Ok(inspect) = self.docker.inspect_container(&id, None).await else {
                        continue;
                    };
                    let state = inspect.state.unwrap_or_default();
                    let pid = u32::try_from(state.pid.unwrap_or(0)).unwrap_or(0);
                    let started = state
                        .started_at
                        .and_then(|t| t.parse::<Timestamp>().ok())
                        .filter(|t| t.as_second() > 0);
                    if let Ok(mut m) = self.inspected.lock() {
                        m.insert(id.clone(), (pid, started));
                    }
                    (pid, started)
                }
            };
            out.push(Running {
                id,
                pod: PodRef {
                    name,
                    namespace,
                    uid,
                },
                sandbox: label(LABEL_ROLE).as_deref() == Some("sandbox"),
                name: container,
                pid,
                started,
            });
        }
        if let Ok(mut m) = self.inspected.lock() {
            m.retain(|id, _| out.iter().any(|r| &r.id == id));
        }
        Ok(out)
    }
}

#[derive(Debug, Default)]
struct Samples {
    previous: Option<Sample>,
    latest: Option<Sample>,
    /// Each container's cgroup, found once.
    dirs: HashMap<String, Dirs>,
    /// Whether the last sample failed to list the containers.
    failed: bool,
}

/// Samples the node's cgroups and keeps the last two samples.
#[derive(Debug)]
pub struct Sampler {
    node: String,
    source: Arc<dyn Containers>,
    /// The cgroup mount (`/sys/fs/cgroup`).
    root: PathBuf,
    /// Where `/proc/<pid>/cgroup` files are (`/proc`).
    proc: PathBuf,
    hierarchy: Hierarchy,
    min_spacing: Duration,
    samples: tokio::sync::Mutex<Samples>,
}

impl Sampler {
    /// A sampler for node `node` reading the containers of `source` under the cgroup mount
    /// `root` and process table `proc`.
    pub fn new(node: &str, source: Arc<dyn Containers>, root: PathBuf, proc: PathBuf) -> Self {
        Self {
            node: node.to_owned(),
            source,
            hierarchy: cgroup::detect(&root),
            root,
            proc,
            min_spacing: MIN_SPACING,
            samples: tokio::sync::Mutex::default(),
        }
    }

    /// The same sampler keeping samples `spacing` apart at least (default [`MIN_SPACING`]).
    pub fn with_min_spacing(mut self, spacing: Duration) -> Self {
        self.min_spacing = spacing;
        self
    }

    /// Reads every running container and the node now, and keeps the result as the latest
    /// sample (the one before as the previous); does nothing when the latest is younger than
    /// the minimum spacing.
    pub async fn sample(&self) {
        let spacing = i128::try_from(self.min_spacing.as_nanos()).unwrap_or(i128::MAX);
        if let Some(latest) = &self.samples.lock().await.latest
            && Timestamp::now().as_nanosecond() - latest.time.as_nanosecond() < spacing
        {
            return;
        }
        let listed = self.source.running().await;
        let mut samples = self.samples.lock().await;
        let (running, failed) = match listed {
            Ok(list) => (list, false),
            Err(error) => {
                tracing::debug!(%error, "resource stats: listing containers");
                (Vec::new(), true)
            }
        };
        let mut containers = Vec::with_capacity(running.len());
        for r in running {
            let dirs = match samples.dirs.get(&r.id) {
                Some(d) => Some(d.clone()),
                None if r.pid > 0 => {
                    let path = self.proc.join(r.pid.to_string()).join("cgroup");
                    let found = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| cgroup::process_dirs(&t, &self.root, self.hierarchy));
                    if let Some(d) = &found {
                        samples.dirs.insert(r.id.clone(), d.clone());
                    }
                    found
                }
                None => None,
            };
            let Some(usage) = dirs.and_then(|d| cgroup::read_cgroup(&d).ok().flatten()) else {
                continue;
            };
            containers.push(ContainerSample {
                id: r.id,
                pod: r.pod,
                name: r.name,
                sandbox: r.sandbox,
                started: r.started,
                usage,
            });
        }
        samples
            .dirs
            .retain(|id, _| containers.iter().any(|c| &c.id == id));
        let sample = Sample {
            time: Timestamp::now(),
            node: cgroup::read_node(&self.root, self.hierarchy),
            containers,
        };
        samples.previous = samples.latest.replace(sample);
        samples.failed = failed;
    }

    /// The summary of the last two samples (sampling first if there is none yet) and whether
    /// the last sample failed.
    pub async fn summary(&self) -> (Summary, bool) {
        if self.samples.lock().await.latest.is_none() {
            self.sample().await;
        }
        let samples = self.samples.lock().await;
        let empty = Sample {
            time: Timestamp::now(),
            node: None,
            containers: Vec::new(),
        };
        let latest = samples.latest.as_ref().unwrap_or(&empty);
        (
            summary::summary(&self.node, samples.previous.as_ref(), latest),
            samples.failed,
        )
    }

    /// Samples every [`SAMPLE_PERIOD`] until the process stops.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SAMPLE_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sample().await;
        }
    }
}

/// Starts sampling the containers Docker runs for node `node`; [`routes`] serve from the
/// sampler returned.
pub fn start(docker: bollard::Docker, node: &str) -> Arc<Sampler> {
    let source = Arc::new(DockerContainers::new(docker, node));
    let sampler = Arc::new(Sampler::new(
        node,
        source,
        PathBuf::from(cgroup::CGROUP_ROOT),
        PathBuf::from("/proc"),
    ));
    tokio::spawn(Arc::clone(&sampler).run());
    sampler
}

/// `/stats/summary` and `/metrics/resource`, served from `sampler` (503 without one, or before
/// its first sample).
pub fn routes(sampler: Option<Arc<Sampler>>) -> Router {
    let for_summary = sampler.clone();
    Router::new()
        .route(
            "/stats/summary",
            axum::routing::get(move || summary_response(for_summary.clone())),
        )
        .route(
            "/metrics/resource",
            axum::routing::get(move || resource_response(sampler.clone())),
        )
}

fn not_started() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "resource stats are not collected on this node\n",
    )
        .into_response()
}

async fn summary_response(sampler: Option<Arc<Sampler>>) -> Response {
    let Some(sampler) = sampler else {
        return not_started();
    };
    let (summary, _) = sampler.summary().await;
    match serde_json::to_string(&summary) {
        Ok(body) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

async fn resource_response(sampler: Option<Arc<Sampler>>) -> Response {
    let text = match sampler {
        Some(sampler) => {
            let (summary, failed) = sampler.summary().await;
            summary::exposition(Some(&summary), failed)
        }
        None => summary::exposition(None, true),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        text,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use tower::ServiceExt as _;

    use super::*;

    #[derive(Debug)]
    struct Fixed(Vec<Running>);

    #[async_trait]
    impl Containers for Fixed {
        async fn running(&self) -> Result<Vec<Running>, String> {
            Ok(self.0.clone())
        }
    }

    fn write(path: &std::path::Path, text: &str) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        std::fs::write(path, text).expect("write");
    }

    /// A v2 cgroup tree with one container (pid 42) at `system.slice/docker-c1.scope`.
    fn tree(cpu_usec: u64) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("cgroup");
        write(&root.join("cgroup.controllers"), "cpu memory\n");
        write(&root.join("cpu.stat"), "usage_usec 99000000\n");
        write(&root.join("memory.stat"), "anon 1\ninactive_file 0\n");
        let scope = root.join("system.slice/docker-c1.scope");
        write(&scope.join("cpu.stat"), &format!("usage_usec {cpu_usec}\n"));
        write(&scope.join("memory.current"), "52428800\n");
        write(
            &scope.join("memory.stat"),
            "anon 31457280\ninactive_file 10485760\n",
        );
        write(
            &dir.path().join("proc/42/cgroup"),
            "0::/system.slice/docker-c1.scope\n",
        );
        dir
    }

    fn sampler(dir: &tempfile::TempDir) -> Arc<Sampler> {
        spaced(dir, Duration::ZERO)
    }

    fn spaced(dir: &tempfile::TempDir, spacing: Duration) -> Arc<Sampler> {
        let running = Running {
            id: "c1".to_owned(),
            pod: PodRef {
                name: "web".to_owned(),
                namespace: "shop".to_owned(),
                uid: "u1".to_owned(),
            },
            name: "app".to_owned(),
            sandbox: false,
            pid: 42,
            started: None,
        };
        Arc::new(
            Sampler::new(
                "n1",
                Arc::new(Fixed(vec![running])),
                dir.path().join("cgroup"),
                dir.path().join("proc"),
            )
            .with_min_spacing(spacing),
        )
    }

    async fn get(router: Router, path: &str) -> (StatusCode, String) {
        let response = router
            .oneshot(
                axum::http::Request::get(path)
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("response");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn summary_from_a_cgroup_tree() {
        let dir = tree(1_000_000);
        let sampler = sampler(&dir);
        let (status, body) = get(routes(Some(Arc::clone(&sampler))), "/stats/summary").await;
        assert_eq!(status, StatusCode::OK);
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        let container = &json["pods"][0]["containers"][0];
        assert_eq!(json["pods"][0]["podRef"]["namespace"], "shop");
        assert_eq!(container["memory"]["workingSetBytes"], 41_943_040);
        assert_eq!(container["memory"]["rssBytes"], 31_457_280);
        assert_eq!(container["cpu"]["usageCoreNanoSeconds"], 1_000_000_000u64);
        assert_eq!(
            container["cpu"].get("usageNanoCores"),
            None,
            "one sample only"
        );
        // One more second of CPU by the next sample: a rate appears.
        write(
            &dir.path()
                .join("cgroup/system.slice/docker-c1.scope/cpu.stat"),
            "usage_usec 2000000\n",
        );
        sampler.sample().await;
        let (summary, failed) = sampler.summary().await;
        assert!(!failed);
        assert!(
            summary.pods[0].containers[0]
                .cpu
                .usage_nano_cores
                .is_some_and(|n| n > 0),
            "{summary:?}"
        );
        let (status, text) = get(routes(Some(sampler)), "/metrics/resource").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            text.contains("container_memory_working_set_bytes{container=\"app\",namespace=\"shop\",pod=\"web\"} 41943040 "),
            "{text}"
        );
        assert!(
            text.contains("\nnode_cpu_usage_seconds_total 99 "),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_sample_right_after_another_is_skipped() {
        let dir = tree(1_000_000);
        let sampler = spaced(&dir, Duration::from_secs(60));
        sampler.sample().await;
        sampler.sample().await;
        let (summary, _) = sampler.summary().await;
        assert_eq!(summary.pods.len(), 1);
        assert_eq!(
            summary.pods[0].containers[0].cpu.usage_nano_cores, None,
            "the second sample was skipped: no rate over a few microseconds"
        );
    }

    #[tokio::test]
    async fn without_a_sampler_the_endpoint_says_so() {
        let (status, body) = get(routes(None), "/stats/summary").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "resource stats are not collected on this node\n");
        let (status, text) = get(routes(None), "/metrics/resource").await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("\nresource_scrape_error 1\n"), "{text}");
    }
}

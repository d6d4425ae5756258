//! The worker against the fake runtime and a fake API: which containers it runs in what order,
//! what it stops and how, and the status it writes.

use std::{
    net::Ipv4Addr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, http::StatusCode, response::Response};
use k8s_openapi::{
    api::core::v1::{ContainerStatus, ExecAction, Lifecycle, LifecycleHandler, PodSpec, PodStatus},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};

use super::*;
use crate::pods::{
    PodsConfig,
    dns::HostResolv,
    fake_api::{self, Seen},
    runtime::{
        ContainerRuntime,
        fake::{Call, FakeRuntime},
    },
};

const IMAGE: &str = "keelson/busybox:1";
const SANDBOX_IMAGE: &str = "keelson/pause:1";

/// Records a request as `what` with its body and answers with it (a Pod for pod paths).
async fn record(seen: Seen, what: &'static str, body: axum::body::Bytes) -> Response {
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    seen.lock()
        .expect("lock")
        .push((what.to_owned(), body.clone()));
    let mut pod = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "namespace": "default", "uid": "u1"}});
    let answer = match what {
        "POST events" => body,
        "PATCH web" => {
            pod["status"] = body["status"].clone();
            pod
        }
        _ => pod,
    };
    fake_api::json(StatusCode::OK, &answer)
}

/// A worker of pod `web` (uid `u1`) on the fake runtime.
struct Harness {
    worker: Worker,
    runtime: Arc<FakeRuntime>,
    api: Seen,
    pod: Pod,
    _dir: tempfile::TempDir,
}

impl Harness {
    fn new(spec: PodSpec) -> Self {
        let api: Seen = Arc::new(Mutex::new(Vec::new()));
        let (a, b, c) = (api.clone(), api.clone(), api.clone());
        let router = Router::new()
            .route(
                "/api/v1/namespaces/default/events",
                axum::routing::post(move |body| record(a.clone(), "POST events", body)),
            )
            .route(
                "/api/v1/namespaces/default/pods/web/status",
                axum::routing::patch(move |body| record(b.clone(), "PATCH web", body)),
            )
            .route(
                "/api/v1/namespaces/default/pods/web",
                axum::routing::delete(move |body| record(c.clone(), "DELETE web", body)),
            );
        let dir = tempfile::tempdir().expect("temp dir");
        let runtime = Arc::new(FakeRuntime::new("n1", &[IMAGE, SANDBOX_IMAGE]));
        let ctx = Arc::new(Ctx {
            client: fake_api::client(router),
            runtime: runtime.clone() as Arc<dyn ContainerRuntime>,
            network: std::sync::OnceLock::new(),
            config: PodsConfig {
                node_name: "n1".into(),
                host_ip: Ipv4Addr::new(10, 0, 0, 1),
                data_dir: dir.path().to_owned(),
                sandbox_image: SANDBOX_IMAGE.into(),
                // Short, so that a test can wait for a back-off to pass.
                backoff_initial: Duration::from_secs(1),
                backoff_max: Duration::from_secs(300),
            },
            metrics: Arc::default(),
            dns: std::sync::OnceLock::new(),
            host_resolv: HostResolv::default(),
            services: Arc::default(),
            host_ports: Arc::default(),
            evicted: Default::default(),
            pressures: Default::default(),
        });
        ctx.services.mark_listed();
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        pod.metadata.namespace = Some("default".into());
        pod.metadata.uid = Some("u1".into());
        // The node's network: no pod network to set up in a test.
        pod.spec = Some(PodSpec {
            host_network: Some(true),
            ..spec
        });
        let worker = Worker::new(ctx, "u1".into(), &pod);
        Self {
            worker,
            runtime,
            api,
            pod,
            _dir: dir,
        }
    }

    async fn sync(&mut self) {
        let pod = self.pod.clone();
        self.worker.sync(&pod).await.expect("sync");
    }

    /// The containers started so far, in order, with their attempt.
    fn started(&self) -> Vec<(String, u32)> {
        self.runtime
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Run { container, attempt } => Some((container, attempt)),
                _ => None,
            })
            .collect()
    }

    /// The status last written.
    fn status(&self) -> PodStatus {
        let seen = self.api.lock().expect("lock");
        let (_, body) = seen
            .iter()
            .rev()
            .find(|(what, _)| what == "PATCH web")
            .expect("a status write");
        serde_json::from_value(body["status"].clone()).expect("PodStatus")
    }

    /// The reasons and messages of the Events posted so far (they are sent in the background).
    async fn events(&self) -> Vec<(String, String)> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let seen = self.api.lock().expect("lock");
        seen.iter()
            .filter(|(what, _)| what == "POST events")
            .map(|(_, e)| {
                let text = |key: &str| e[key].as_str().unwrap_or_default().to_owned();
                (text("reason"), text("message"))
            })
            .collect()
    }
}

fn container(name: &str) -> Container {
    Container {
        name: name.into(),
        image: Some(IMAGE.into()),
        ..Container::default()
    }
}

fn sidecar(name: &str) -> Container {
    Container {
        restart_policy: Some("Always".into()),
        ..container(name)
    }
}

fn statuses<'a>(list: &'a Option<Vec<ContainerStatus>>, name: &str) -> &'a ContainerStatus {
    list.iter()
        .flatten()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no status of {name}"))
}

fn condition(status: &PodStatus, kind: &str) -> String {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

fn run(name: &str, attempt: u32) -> (String, u32) {
    (name.to_owned(), attempt)
}

#[tokio::test]
async fn init_containers_run_one_after_the_other_before_the_app() {
    let mut h = Harness::new(PodSpec {
        init_containers: Some(vec![container("migrate"), container("seed")]),
        containers: vec![container("app")],
        ..PodSpec::default()
    });
    h.sync().await;
    assert_eq!(h.started(), [run("POD", 0), run("migrate", 0)]);
    let status = h.status();
    assert_eq!(status.phase.as_deref(), Some("Pending"));
    assert_eq!(condition(&status, "Initialized"), "False");
    let app = statuses(&status.container_statuses, "app");
    let waiting = app.state.as_ref().and_then(|s| s.waiting.as_ref());
    assert_eq!(
        waiting.and_then(|w| w.reason.as_deref()),
        Some("PodInitializing")
    );

    // Nothing new while the first one runs.
    h.sync().await;
    assert_eq!(h.started().len(), 2);

    h.runtime.exit("migrate", 0);
    h.sync().await;
    assert_eq!(h.started().last(), Some(&run("seed", 0)));
    h.runtime.exit("seed", 0);
    h.sync().await;
    assert_eq!(
        h.started(),
        [
            run("POD", 0),
            run("migrate", 0),
            run("seed", 0),
            run("app", 0)
        ]
    );
    let status = h.status();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(condition(&status, "Initialized"), "True");
    assert_eq!(condition(&status, "Ready"), "True");
    let migrate = statuses(&status.init_container_statuses, "migrate");
    let terminated = migrate.state.as_ref().and_then(|s| s.terminated.as_ref());
    assert_eq!(
        terminated.and_then(|t| t.reason.as_deref()),
        Some("Completed")
    );
}

#[tokio::test]
async fn a_container_with_a_readiness_probe_is_not_ready_before_its_probe_ran() {
    let probed = Container {
        // An exec probe (the fake answers exit 0 once it runs).
        readiness_probe: Some(k8s_openapi::api::core::v1::Probe {
            exec: Some(k8s_openapi::api::core::v1::ExecAction {
                command: Some(vec!["false".into()]),
            }),
            period_seconds: Some(1),
            ..Default::default()
        }),
        ..container("web")
    };
    let mut h = Harness::new(PodSpec {
        containers: vec![probed, container("plain")],
        ..PodSpec::default()
    });
    // The pass that starts the containers writes the status before any probe ran: the
    // probed one must not show ready (a StatefulSet would go on to the next ordinal).
    h.sync().await;
    assert_eq!(h.started(), [run("POD", 0), run("web", 0), run("plain", 0)]);
    let status = h.status();
    assert!(!statuses(&status.container_statuses, "web").ready);
    assert!(statuses(&status.container_statuses, "plain").ready);
    assert_eq!(condition(&status, "Ready"), "False");
}

#[tokio::test]
async fn a_failed_init_container_fails_a_pod_that_never_restarts() {
    let mut h = Harness::new(PodSpec {
        init_containers: Some(vec![container("migrate")]),
        containers: vec![container("app")],
        restart_policy: Some("Never".into()),
        ..PodSpec::default()
    });
    h.sync().await;
    h.runtime.exit("migrate", 3);
    h.sync().await;
    h.sync().await;
    assert_eq!(h.started(), [run("POD", 0), run("migrate", 0)]);
    let status = h.status();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    assert_eq!(condition(&status, "Initialized"), "False");
    let migrate = statuses(&status.init_container_statuses, "migrate");
    let terminated = migrate.state.as_ref().and_then(|s| s.terminated.as_ref());
    assert_eq!(terminated.map(|t| t.exit_code), Some(3));
    assert_eq!(terminated.and_then(|t| t.reason.as_deref()), Some("Error"));
}

#[tokio::test]
async fn an_exited_container_restarts_at_once_then_after_back_off() {
    let mut h = Harness::new(PodSpec {
        containers: vec![container("app")],
        ..PodSpec::default()
    });
    h.sync().await;
    h.runtime.exit("app", 1);
    h.sync().await;
    // The first restart has no back-off.
    assert_eq!(h.started(), [run("POD", 0), run("app", 0), run("app", 1)]);
    assert_eq!(
        statuses(&h.status().container_statuses, "app").restart_count,
        1
    );

    h.runtime.exit("app", 1);
    h.sync().await;
    assert_eq!(h.started().len(), 3, "restarted within its back-off");
    let status = h.status();
    let app = statuses(&status.container_statuses, "app");
    let waiting = app.state.as_ref().and_then(|s| s.waiting.as_ref());
    assert_eq!(
        waiting.and_then(|w| w.reason.as_deref()),
        Some("CrashLoopBackOff")
    );
    assert_eq!(
        waiting.and_then(|w| w.message.as_deref()),
        Some("back-off 1s restarting failed container=app pod=web_default(u1)")
    );
    let last = app.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    assert_eq!(last.map(|t| t.exit_code), Some(1));
    let events = h.events().await;
    assert!(
        events.contains(&(
            "BackOff".into(),
            "Back-off restarting failed container app in pod web_default(u1)".into()
        )),
        "{events:?}"
    );

    // Once the back-off has passed, the next attempt starts and only the one before stays.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.sync().await;
    assert_eq!(h.started().last(), Some(&run("app", 2)));
    assert!(h.runtime.calls().contains(&Call::Remove {
        container: "app".into()
    }));
    let status = h.status();
    let app = statuses(&status.container_statuses, "app");
    assert_eq!(app.restart_count, 2);
    assert!(app.state.as_ref().is_some_and(|s| s.running.is_some()));
}

#[tokio::test]
async fn deletion_runs_pre_stop_then_stops_apps_before_sidecars_last_first() {
    let drain = vec!["/bin/sh".to_owned(), "-c".to_owned(), "drain".to_owned()];
    let app = Container {
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(drain.clone()),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        ..container("app")
    };
    let mut h = Harness::new(PodSpec {
        init_containers: Some(vec![sidecar("proxy"), sidecar("logs")]),
        containers: vec![app],
        termination_grace_period_seconds: Some(20),
        ..PodSpec::default()
    });
    for _ in 0..5 {
        h.sync().await;
    }
    assert_eq!(h.runtime.running(), ["POD", "app", "logs", "proxy"]);
    assert_eq!(
        h.started(),
        [
            run("POD", 0),
            run("proxy", 0),
            run("logs", 0),
            run("app", 0)
        ]
    );

    h.runtime.clear_calls();
    let mut pod = h.pod.clone();
    pod.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    h.worker.terminate(&pod).await;

    let stops: Vec<Call> = h
        .runtime
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Exec { .. } | Call::Stop { .. }))
        .map(|c| match c {
            // The grace left depends on the clock; the order is what counts here.
            Call::Stop { container, .. } => Call::Stop {
                container,
                grace: Duration::ZERO,
            },
            other => other,
        })
        .collect();
    let stop = |name: &str| Call::Stop {
        container: name.into(),
        grace: Duration::ZERO,
    };
    let pre_stop = Call::Exec {
        container: "app".into(),
        command: drain,
    };
    assert_eq!(stops, [pre_stop, stop("app"), stop("logs"), stop("proxy")]);
    let grace = h.runtime.calls().into_iter().find_map(|c| match c {
        Call::Stop { container, grace } if container == "app" => Some(grace),
        _ => None,
    });
    assert!(
        grace.is_some_and(|g| g <= Duration::from_secs(20) && g > Duration::from_secs(15)),
        "{grace:?}"
    );
    // Everything is removed and the pod object goes.
    assert!(h.runtime.running().is_empty());
    let removed = h
        .runtime
        .calls()
        .into_iter()
        .filter(|c| matches!(c, Call::Remove { .. }))
        .count();
    assert_eq!(removed, 4);
    let deleted = h
        .api
        .lock()
        .expect("lock")
        .iter()
        .any(|(w, _)| w == "DELETE web");
    assert!(deleted, "the pod object is removed");
    let events = h.events().await;
    assert!(events.contains(&(
        "Killing".into(),
        "Stopping pod web (grace period 20s)".into()
    )));
}

#[tokio::test]
async fn a_refused_pull_is_err_image_pull_with_the_registrys_words() {
    let mut h = Harness::new(PodSpec {
        containers: vec![Container {
            image: Some("private/app:2".into()),
            ..container("app")
        }],
        ..PodSpec::default()
    });
    h.runtime
        .refuse_pull("private/app:2", "pull access denied for private/app");
    h.sync().await;
    assert!(h.runtime.calls().contains(&Call::Pull {
        image: "private/app:2".into()
    }));
    assert_eq!(h.started(), [run("POD", 0)]);
    let status = h.status();
    let app = statuses(&status.container_statuses, "app");
    let waiting = app.state.as_ref().and_then(|s| s.waiting.as_ref());
    assert_eq!(
        waiting.and_then(|w| w.reason.as_deref()),
        Some("ErrImagePull")
    );
    assert_eq!(
        waiting.and_then(|w| w.message.as_deref()),
        Some(
            "failed to pull and unpack image \"private/app:2\": pull access denied for \
             private/app"
        )
    );
}

#[tokio::test]
async fn an_ephemeral_container_starts_once_in_its_targets_process_namespace() {
    let mut h = Harness::new(PodSpec {
        containers: vec![container("app")],
        ..PodSpec::default()
    });
    h.sync().await;
    // `kubectl debug --target=app` adds it to the running pod.
    h.pod.spec.as_mut().expect("spec").ephemeral_containers =
        Some(vec![k8s_openapi::api::core::v1::EphemeralContainer {
            name: "dbg".into(),
            image: Some(IMAGE.into()),
            target_container_name: Some("app".into()),
            ..Default::default()
        }]);
    h.sync().await;
    assert_eq!(h.started(), [run("POD", 0), run("app", 0), run("dbg", 0)]);
    let app = h.runtime.running_id("app");
    let body = h.runtime.body("dbg");
    assert_eq!(
        body.host_config.and_then(|c| c.pid_mode),
        Some(format!("container:{app}"))
    );
    let status = h.status();
    let dbg = statuses(&status.ephemeral_container_statuses, "dbg");
    assert!(dbg.state.as_ref().is_some_and(|s| s.running.is_some()) && !dbg.ready);
    assert!(
        status
            .container_statuses
            .iter()
            .flatten()
            .all(|s| s.name != "dbg")
    );
    // It ends and is never started again, whatever the pod's restart policy.
    h.runtime.exit("dbg", 0);
    h.sync().await;
    h.sync().await;
    assert_eq!(h.started().len(), 3, "{:?}", h.started());
    let status = h.status();
    let dbg = statuses(&status.ephemeral_container_statuses, "dbg");
    assert!(
        dbg.state.as_ref().is_some_and(|s| s.terminated.is_some()),
        "{dbg:?}"
    );
    assert_eq!(condition(&status, "Ready"), "True");
}

//! One task per pod: it reconciles the pod's containers with its spec (sandbox, network, init
//! containers in order, app containers with restart back-off, probes), writes the status when
//! it changes, and on deletion stops the containers gracefully, frees the address and removes
//! the pod object. Every container call goes through [`crate::pods::runtime::ContainerRuntime`].
//!
//! Its parts: `decide` (the pure decisions: names, back-off, grace periods, the sandbox's
//! configuration, Events), `sandbox` (sandbox and network), `containers` (starting,
//! restarting, probing, stopping one container), `stop` (preStop hooks, Events), `setup`
//! (image, volumes, environment, the container's configuration), `report` (the pod status),
//! `teardown` (the pod's end).

mod containers;
mod decide;
mod report;
mod sandbox;
mod setup;
mod stop;
mod teardown;
#[cfg(test)]
mod tests;

pub use self::teardown::teardown_containers;

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{Container, Pod, PodStatus},
    apimachinery::pkg::apis::meta::v1::Time,
};
use tokio::sync::watch;

use self::{
    decide::{PodRef, is_sidecar, latest_by_name},
    stop::post_event,
};
use super::{
    Ctx,
    error::PodError,
    plan::{self, Action, Role, Seen},
    probes::Probes,
    runtime::{Details, Observed},
    tokens::TokenCache,
    volumes,
};
use crate::error_chain;

/// How often a pod is looked at when nothing wakes its worker earlier (runtime events, the
/// pod's changes, probes and back-offs do).
const RESYNC: Duration = Duration::from_secs(10);
/// Where each container finds the pod's resolver configuration.
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Why a container is not running yet, for its `waiting` state.
#[derive(Debug, Clone)]
struct Waiting {
    reason: String,
    message: String,
}

/// The pod's sandbox.
#[derive(Debug, Clone)]
struct Sandbox {
    id: String,
}

/// One pod's reconciler.
struct Worker {
    ctx: Arc<Ctx>,
    /// The pod's uid, name and namespace.
    pod_ref: PodRef,
    sandbox: Option<Sandbox>,
    /// `spec.hostNetwork`: the pod shares the node's network namespace and address.
    host_network: bool,
    pod_ip: Option<Ipv4Addr>,
    network_error: Option<String>,
    /// The pod's volumes once set up.
    volumes: Option<volumes::VolumePaths>,
    /// The pod's service-account tokens.
    tokens: TokenCache,
    /// When the volumes are next written (a token refresh, the periodic resync, a retry).
    volumes_due: Instant,
    /// Failed mounts in a row, and the last one's message (an event only when it changes).
    mount_failures: u32,
    mount_error: Option<String>,
    /// The runtime's details per container id, refreshed when the container starts or ends.
    finished: HashMap<String, Details>,
    /// Probes per container name (for its current instance).
    probes: HashMap<String, Probes>,
    waiting: HashMap<String, Waiting>,
    /// Image pull failures per container name: count and when the last one happened.
    pull_failures: HashMap<String, (u32, Instant)>,
    /// The next attempt per container name after a sandbox was lost (restart counts go on).
    next_attempt: HashMap<String, u32>,
    /// Back-off events already sent, per container name and attempt.
    backoff_reported: HashMap<String, u32>,
    /// Sidecar container ids being stopped because the app containers have ended.
    stopping: HashSet<String>,
    /// The status as last written (or as read from the API at start).
    written: Option<PodStatus>,
    start_time: Option<Time>,
    terminal: bool,
    next_wake: Instant,
    last_error: String,
}

/// Runs pod `uid`'s worker until the pod is gone and cleaned up.
pub async fn run(
    ctx: Arc<Ctx>,
    uid: String,
    mut rx: watch::Receiver<Option<Pod>>,
    poke: Arc<tokio::sync::Notify>,
) {
    let first = rx.borrow().clone();
    let Some(first) = first else { return };
    let mut worker = Worker::new(ctx, uid, &first);
    loop {
        let current = rx.borrow_and_update().clone();
        match current {
            None => {
                // Gone from the API: nothing waits for the containers any more.
                worker.teardown(Duration::ZERO).await;
                return;
            }
            Some(pod) if pod.metadata.deletion_timestamp.is_some() => {
                worker.terminate(&pod).await;
                return;
            }
            Some(pod) => worker.pass(&pod).await,
        }
        let wake = tokio::time::Instant::from_std(worker.next_wake);
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            () = poke.notified() => {}
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

impl Worker {
    /// The worker of pod `uid`, as `first` seen of it.
    fn new(ctx: Arc<Ctx>, uid: String, first: &Pod) -> Self {
        Self {
            ctx,
            pod_ref: PodRef {
                uid,
                name: first.metadata.name.clone().unwrap_or_default(),
                namespace: first
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
            },
            sandbox: None,
            host_network: first
                .spec
                .as_ref()
                .and_then(|s| s.host_network)
                .unwrap_or(false),
            pod_ip: None,
            network_error: None,
            volumes: None,
            tokens: TokenCache::default(),
            volumes_due: Instant::now(),
            mount_failures: 0,
            mount_error: None,
            finished: HashMap::new(),
            probes: HashMap::new(),
            waiting: HashMap::new(),
            pull_failures: HashMap::new(),
            backoff_reported: HashMap::new(),
            next_attempt: HashMap::new(),
            stopping: HashSet::new(),
            written: first.status.clone(),
            start_time: first.status.as_ref().and_then(|s| s.start_time.clone()),
            terminal: false,
            next_wake: Instant::now(),
            last_error: String::new(),
        }
    }

    /// One pass over a live pod: sync, log a new failure and retry it soon.
    async fn pass(&mut self, pod: &Pod) {
        let started = Instant::now();
        self.next_wake = started + RESYNC;
        match self.sync(pod).await {
            Ok(()) => self.last_error.clear(),
            Err(error) => {
                let error = error_chain(&error);
                self.wake_at(Instant::now() + Duration::from_secs(1));
                if error != self.last_error {
                    let at = &self.pod_ref;
                    tracing::warn!(pod = %at.name, namespace = %at.namespace, %error, "pod sync");
                    self.last_error = error;
                }
            }
        }
        self.ctx.metrics.record_sync(started.elapsed());
    }

    fn pod_dir(&self) -> PathBuf {
        self.ctx
            .config
            .data_dir
            .join("pods")
            .join(&self.pod_ref.uid)
    }

    fn wake_at(&mut self, at: Instant) {
        if at < self.next_wake {
            self.next_wake = at.max(Instant::now() + Duration::from_millis(50));
        }
    }

    /// An Event about this pod (what `kubectl describe` lists); sent in the background.
    fn event(&self, pod: &Pod, container: Option<&str>, kind: &str, reason: &str, message: String) {
        let text = decide::EventText {
            container,
            kind,
            reason,
        };
        post_event(&self.ctx, pod, &self.pod_ref.uid, text, message);
    }

    async fn details(&mut self, container: &Observed) -> Result<Details, PodError> {
        // A container's details change only when it starts or ends, which the list shows.
        if let Some(d) = self.finished.get(&container.id)
            && d.running == container.running
        {
            return Ok(d.clone());
        }
        let details = self.ctx.runtime.inspect(&container.id).await?;
        if details.running == container.running {
            self.finished.insert(container.id.clone(), details.clone());
        }
        Ok(details)
    }

    /// One reconcile pass, then the status.
    async fn sync(&mut self, pod: &Pod) -> Result<(), PodError> {
        let observed = self.ctx.runtime.list_pod(&self.pod_ref.uid).await?;
        let result = if self.terminal {
            Ok(())
        } else {
            self.act(pod, &observed).await
        };
        // The status reflects what the runtime has now, also when acting failed half way.
        let observed = self.ctx.runtime.list_pod(&self.pod_ref.uid).await?;
        self.write_status(pod, &observed).await?;
        result
    }
    /// What the planner needs to know of a container's newest instance.
    async fn seen(
        &mut self,
        container: &Container,
        latest: Option<&(Observed, Option<Observed>)>,
    ) -> Result<Seen, PodError> {
        let Some((c, _)) = latest else {
            return Ok(Seen::Absent);
        };
        if c.running {
            let started = match self
                .probes
                .get(&container.name)
                .filter(|p| p.container_id == c.id)
            {
                Some(probes) => probes.started,
                None => container.startup_probe.is_none(),
            };
            return Ok(Seen::Running { started });
        }
        let details = self.details(c).await?;
        self.probes.remove(&container.name);
        Ok(Seen::Exited {
            code: if c.created_only {
                128
            } else {
                details.exit_code
            },
        })
    }

    async fn act(&mut self, pod: &Pod, observed: &[Observed]) -> Result<(), PodError> {
        let spec = pod.spec.clone().unwrap_or_default();
        if let Some(message) = super::security::rejection(pod) {
            let reason = super::security::SYSCTL_FORBIDDEN;
            self.event(pod, None, "Warning", reason, message);
            return Ok(());
        }
        // Volumes first, as the kubelet mounts them before the sandbox: a pod whose token or
        // ConfigMap cannot be had stays ContainerCreating with a FailedMount event.
        if !self.mount_volumes(pod).await {
            return Ok(());
        }
        self.ensure_sandbox(pod, observed).await?;
        let ip = self.pod_ip.filter(|_| !self.host_network);
        self.ctx.host_ports.publish(&self.pod_ref.uid, pod, ip);
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let latest = latest_by_name(observed);
        let inits: Vec<Container> = spec.init_containers.clone().unwrap_or_default();
        let mut init_seen = Vec::with_capacity(inits.len());
        for container in &inits {
            let seen = self
                .seen(container, latest.get(container.name.as_str()))
                .await?;
            init_seen.push((is_sidecar(container), seen));
        }
        let mut app_seen = Vec::with_capacity(spec.containers.len());
        for container in &spec.containers {
            app_seen.push(
                self.seen(container, latest.get(container.name.as_str()))
                    .await?,
            );
        }
        let planned = plan::plan(&init_seen, &app_seen, &policy);
        if planned.failed {
            self.terminal = true;
            return Ok(());
        }
        for action in planned.actions {
            let (role, index) = match action {
                Action::Start(role, index)
                | Action::Restart(role, index)
                | Action::Probe(role, index) => (role, index),
                Action::StopSidecar(index) => (Role::Init, index),
            };
            let (container, label) = match role {
                Role::Init => (inits.get(index), "init"),
                Role::App => (spec.containers.get(index), "app"),
            };
            let Some(container) = container else { continue };
            let current = latest.get(container.name.as_str()).map(|(c, _)| c.clone());
            match (action, current) {
                (Action::Start(..), _) => {
                    let attempt = self.next_attempt.get(&container.name).copied().unwrap_or(0);
                    self.start(pod, container, label, attempt, None).await;
                }
                (Action::Restart(..), Some(c)) => {
                    let details = self.details(&c).await?;
                    self.restart_after_backoff(pod, container, label, &c, &details)
                        .await;
                }
                (Action::Probe(..), Some(c)) => self.probe(pod, container, &c).await?,
                (Action::StopSidecar(_), Some(c)) if self.stopping.insert(c.id.clone()) => {
                    self.stop_in_background(pod, container, &c.id, "Stopping container");
                }
                _ => {}
            }
        }
        self.start_ephemeral(pod, &latest).await;
        Ok(())
    }

    /// Starts the ephemeral containers (`kubectl debug`) not started yet: once each, never
    /// restarted, in the process namespace of their `targetContainerName` once it runs.
    async fn start_ephemeral(
        &mut self,
        pod: &Pod,
        latest: &std::collections::BTreeMap<&str, (Observed, Option<Observed>)>,
    ) {
        let ephemeral = pod
            .spec
            .as_ref()
            .and_then(|s| s.ephemeral_containers.clone())
            .unwrap_or_default();
        for debug in &ephemeral {
            if latest.contains_key(debug.name.as_str()) {
                continue;
            }
            let target = match debug.target_container_name.as_deref() {
                Some(name) => match latest.get(name).filter(|(c, _)| c.running) {
                    Some((c, _)) => Some(c.id.clone()),
                    // Its target does not run (yet): look again on a later pass.
                    None => continue,
                },
                None => None,
            };
            let container = decide::ephemeral_as_container(debug);
            self.start(pod, &container, decide::EPHEMERAL, 0, target.as_deref())
                .await;
        }
    }
}

/// Posts a Warning event about `pod` as a whole (no container), for the pod manager's own
/// decisions such as evictions.
pub(crate) fn post_pod_warning(ctx: &Ctx, pod: &Pod, uid: &str, reason: &str, message: String) {
    let text = decide::EventText {
        container: None,
        kind: "Warning",
        reason,
    };
    post_event(ctx, pod, uid, text, message);
}

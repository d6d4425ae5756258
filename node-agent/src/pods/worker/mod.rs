//! One task per pod: it reconciles the pod's Docker containers with its spec (sandbox, network,
//! init containers in order, app containers with restart back-off, probes), writes the status
//! when it changes, and on deletion stops the containers gracefully, frees the address and
//! removes the pod object. Its parts: `setup` (image, volumes, environment, the container's
//! Docker configuration), `report` (the pod status), `teardown` (the pod's end).

mod report;
mod setup;
mod teardown;

pub use self::teardown::teardown_containers;

use std::{
    collections::{BTreeMap, HashMap},
    net::Ipv4Addr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use bollard::models::{ContainerCreateBody, HostConfig};
use k8s_openapi::{
    api::core::v1::{Container, Event, EventSource, ObjectReference, Pod, PodStatus},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};
use kube::{Api, api::PostParams};
use tokio::sync::watch;

use super::{
    Ctx,
    dns::{pod_domainname, pod_hostname},
    error::PodError,
    hooks,
    plan::{self, Action, Role, Seen},
    probes::Probes,
    runtime::{
        Details, LABEL_ATTEMPT, LABEL_CONTAINER, LABEL_POD_NAME, LABEL_POD_NAMESPACE,
        LABEL_POD_UID, LABEL_ROLE, Observed, SANDBOX,
    },
    spec::ConfigError,
    tokens::TokenCache,
    volumes,
};
use crate::error_chain;

/// How long a postStart hook may take before it counts as failed (the kubelet sets no bound;
/// one keeps a hung hook from holding the pod's worker for ever).
const POST_START_LIMIT: Duration = Duration::from_secs(120);

/// How often a pod is looked at when nothing wakes its worker earlier (Docker's events, the
/// pod's changes, probes and back-offs do).
const RESYNC: Duration = Duration::from_secs(10);
/// Where each container finds the pod's resolver configuration.
const RESOLV_CONF: &str = "/etc/resolv.conf";
/// Kubernetes' default termination grace period.
const DEFAULT_GRACE: i64 = 30;

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
    uid: String,
    name: String,
    namespace: String,
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
    /// Docker's details per container id, refreshed when the container starts or ends.
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
    stopping: std::collections::HashSet<String>,
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
    let mut worker = Worker {
        ctx,
        uid,
        name: first.metadata.name.clone().unwrap_or_default(),
        namespace: first
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
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
        stopping: std::collections::HashSet::new(),
        written: first.status.clone(),
        start_time: first.status.as_ref().and_then(|s| s.start_time.clone()),
        terminal: false,
        next_wake: Instant::now(),
        last_error: String::new(),
    };
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
            Some(pod) => {
                let started = Instant::now();
                worker.next_wake = started + RESYNC;
                match worker.sync(&pod).await {
                    Ok(()) => worker.last_error.clear(),
                    Err(error) => {
                        let error = error_chain(&error);
                        worker.wake_at(Instant::now() + Duration::from_secs(1));
                        if error != worker.last_error {
                            tracing::warn!(pod = %worker.name, namespace = %worker.namespace, %error, "pod sync");
                            worker.last_error = error;
                        }
                    }
                }
                worker.ctx.metrics.record_sync(started.elapsed());
            }
        }
        let wake = tokio::time::Instant::from_std(worker.next_wake);
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            () = poke.notified() => {}
            () = tokio::time::sleep_until(wake) => {}
        }
    }
}

fn docker_name(container: &str, pod: &str, namespace: &str, uid: &str, attempt: u32) -> String {
    format!("k8s_{container}_{pod}_{namespace}_{uid}_{attempt}")
}

/// Whether an init container is a sidecar (`restartPolicy: Always`).
fn is_sidecar(container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
}

impl Worker {
    fn pod_dir(&self) -> PathBuf {
        self.ctx.config.data_dir.join("pods").join(&self.uid)
    }

    fn labels(&self, container: &str, role: &str, attempt: u32) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_POD_UID.to_owned(), self.uid.clone()),
            (LABEL_POD_NAME.to_owned(), self.name.clone()),
            (LABEL_POD_NAMESPACE.to_owned(), self.namespace.clone()),
            (LABEL_CONTAINER.to_owned(), container.to_owned()),
            (LABEL_ROLE.to_owned(), role.to_owned()),
            (LABEL_ATTEMPT.to_owned(), attempt.to_string()),
        ])
    }

    fn wake_at(&mut self, at: Instant) {
        if at < self.next_wake {
            self.next_wake = at.max(Instant::now() + Duration::from_millis(50));
        }
    }

    /// An Event about this pod (what `kubectl describe` lists); sent in the background.
    fn event(&self, pod: &Pod, container: Option<&str>, kind: &str, reason: &str, message: String) {
        post_event(&self.ctx, pod, &self.uid, container, kind, reason, message);
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
        let observed = self.ctx.runtime.list_pod(&self.uid).await?;
        let result = if self.terminal {
            Ok(())
        } else {
            self.act(pod, &observed).await
        };
        // The status reflects what Docker has now, also when acting failed half way.
        let observed = self.ctx.runtime.list_pod(&self.uid).await?;
        self.write_status(pod, &observed).await?;
        result
    }

    /// A running sandbox with its network, created (again) if there is none.
    async fn ensure_sandbox(&mut self, pod: &Pod, observed: &[Observed]) -> Result<(), PodError> {
        let running = observed
            .iter()
            .find(|c| c.role == "sandbox" && c.running)
            .cloned();
        if let Some(sandbox) = running {
            if self.sandbox.as_ref().map(|s| &s.id) != Some(&sandbox.id) {
                self.sandbox = Some(Sandbox {
                    id: sandbox.id.clone(),
                });
                self.pod_ip = None;
            }
            if self.pod_ip.is_none() {
                self.attach_network(&sandbox.id).await?;
            }
            return Ok(());
        }
        // No running sandbox: a fresh pod, or its sandbox died (then every container goes with
        // it and starts again in a new one, as the kubelet does).
        for c in observed {
            if c.role != "sandbox" {
                let next = self.next_attempt.entry(c.name.clone()).or_insert(0);
                *next = (*next).max(c.attempt + 1);
            }
            self.ctx.runtime.remove(&c.id).await?;
        }
        self.sandbox = None;
        self.pod_ip = None;
        self.probes.clear();
        let image = self.ctx.config.sandbox_image.clone();
        if !self.ctx.runtime.has_image(&image).await? {
            return Err(PodError::SandboxImage { image });
        }
        let resolv = self.resolv_conf(pod)?;
        let body = ContainerCreateBody {
            image: Some(image),
            // A pause process: sleeps until the pod ends (it is killed, not asked).
            entrypoint: Some(vec!["sleep".into()]),
            cmd: Some(vec!["2147483647".into()]),
            hostname: (!self.host_network).then(|| pod_hostname(pod, &self.name)),
            domainname: (!self.host_network)
                .then(|| pod_domainname(pod, &self.namespace, self.ctx.dns.get()))
                .flatten(),
            host_config: Some(HostConfig {
                network_mode: Some(if self.host_network { "host" } else { "none" }.into()),
                binds: Some(vec![resolv]),
                sysctls: super::security::sandbox_sysctls(pod),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        let id = self
            .ctx
            .runtime
            .run(
                &docker_name(SANDBOX, &self.name, &self.namespace, &self.uid, 0),
                self.labels(SANDBOX, "sandbox", 0),
                body,
            )
            .await?;
        self.sandbox = Some(Sandbox { id: id.clone() });
        self.attach_network(&id).await
    }

    async fn attach_network(&mut self, sandbox_id: &str) -> Result<(), PodError> {
        if self.host_network {
            self.pod_ip = Some(self.ctx.config.host_ip);
            return Ok(());
        }
        let Some(network) = self.ctx.network.get().cloned() else {
            self.network_error = Some(PodError::NoPodCidr.to_string());
            return Err(PodError::NoPodCidr);
        };
        if let Some(ip) = network.adopt(&self.uid).await? {
            self.pod_ip = Some(ip);
            self.network_error = None;
            return Ok(());
        }
        let details = self.ctx.runtime.inspect(sandbox_id).await?;
        if details.pid == 0 {
            return Err(PodError::NoSandboxProcess);
        }
        match network.attach(&self.uid, details.pid).await {
            Ok(ip) => {
                tracing::info!(pod = %self.name, namespace = %self.namespace, %ip, "pod network attached");
                self.pod_ip = Some(ip);
                self.network_error = None;
                Ok(())
            }
            Err(e) => {
                let error = PodError::Network(e);
                self.network_error = Some(error_chain(&error));
                Err(error)
            }
        }
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
        self.ctx.host_ports.publish(&self.uid, pod, ip);
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
                    self.start(pod, container, label, attempt).await;
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
        Ok(())
    }

    /// The grace period of a container stop that is not the pod's deletion (a failed probe,
    /// a failed postStart hook, a sidecar after the app containers ended).
    fn spec_grace(pod: &Pod) -> Duration {
        Duration::from_secs(
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(DEFAULT_GRACE)
                .max(0)
                .unsigned_abs(),
        )
    }

    /// Stops container `id` of `container` in the background: its preStop hook, then SIGTERM,
    /// then SIGKILL after what is left of the grace period.
    fn stop_in_background(&self, pod: &Pod, container: &Container, id: &str, why: &str) {
        tracing::info!(pod = %self.name, container = %container.name, why, "stopping container");
        let ctx = self.ctx.clone();
        let pod = pod.clone();
        let uid = self.uid.clone();
        let container = container.clone();
        let id = id.to_owned();
        let pod_ip = self.pod_ip;
        let grace = Self::spec_grace(&pod);
        tokio::spawn(async move {
            let stop = StopRequest {
                ctx: &ctx,
                pod: &pod,
                uid: &uid,
                pod_ip,
            };
            if let Err(e) = stop.stop(Some(&container), &id, grace).await {
                tracing::warn!(error = %error_chain(&e), "stopping a container");
            }
        });
    }

    async fn probe(
        &mut self,
        pod: &Pod,
        container: &Container,
        c: &Observed,
    ) -> Result<(), PodError> {
        let needs_new = self
            .probes
            .get(&container.name)
            .is_none_or(|p| p.container_id != c.id);
        if needs_new {
            let details = self.details(c).await?;
            // Probe delays count from the container's start, also for an adopted one.
            let age = details
                .started_at
                .map(|t| Timestamp::now().duration_since(t).unsigned_abs())
                .unwrap_or_default();
            let started = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
            self.probes.insert(
                container.name.clone(),
                Probes::new(container, &c.id, started),
            );
        }
        let runtime = self.ctx.runtime.clone();
        let pod_ip = self.pod_ip;
        let Some(probes) = self.probes.get_mut(&container.name) else {
            return Ok(());
        };
        let outcome = probes.run_due(&runtime, pod_ip).await;
        let next = probes.next_due();
        self.ctx.metrics.record_probe(probes.ready());
        if let Some(next) = next {
            self.wake_at(next);
        }
        if let Some(message) = outcome.kill {
            tracing::info!(pod = %self.name, container = %container.name, %message, "restarting container");
            self.event(
                pod,
                Some(&container.name),
                "Warning",
                "Unhealthy",
                message.clone(),
            );
            self.event(
                pod,
                Some(&container.name),
                "Normal",
                "Killing",
                format!(
                    "Container {} failed liveness probe, will be restarted",
                    container.name
                ),
            );
            self.probes.remove(&container.name);
            self.stop_in_background(pod, container, &c.id, "failed probe");
        }
        Ok(())
    }

    /// Restarts an exited container once its back-off has passed: none for the first restart,
    /// then `initial`, doubling up to `max`, counted from when it finished.
    async fn restart_after_backoff(
        &mut self,
        pod: &Pod,
        container: &Container,
        role: &str,
        c: &Observed,
        details: &Details,
    ) {
        let restarts = c.attempt + 1;
        let ran = match (details.started_at, details.finished_at) {
            (Some(s), Some(f)) => f.duration_since(s).unsigned_abs(),
            _ => Duration::ZERO,
        };
        let delay = if restarts <= 1 || ran > self.ctx.config.backoff_max * 2 {
            Duration::ZERO
        } else {
            let factor = 1u32 << (restarts - 2).min(16);
            (self.ctx.config.backoff_initial * factor).min(self.ctx.config.backoff_max)
        };
        // A container that never started has no finish time: count from its creation.
        let ended = details
            .finished_at
            .or_else(|| Timestamp::from_second(c.created).ok());
        let since = ended
            .map(|f| Timestamp::now().duration_since(f).unsigned_abs())
            .unwrap_or(delay);
        if since < delay {
            let message = format!(
                "back-off {}s restarting failed container={} pod={}_{}({})",
                delay.as_secs(),
                container.name,
                self.name,
                self.namespace,
                self.uid
            );
            if self.backoff_reported.get(&container.name) != Some(&c.attempt) {
                self.backoff_reported
                    .insert(container.name.clone(), c.attempt);
                self.event(
                    pod,
                    Some(&container.name),
                    "Warning",
                    "BackOff",
                    format!(
                        "Back-off restarting failed container {} in pod {}_{}({})",
                        container.name, self.name, self.namespace, self.uid
                    ),
                );
            }
            self.waiting.insert(
                container.name.clone(),
                Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message,
                },
            );
            self.wake_at(Instant::now() + (delay - since));
            return;
        }
        if self.start(pod, container, role, restarts).await {
            // Keep only the instance that just ended (lastState, logs --previous).
            if let Ok(all) = self.ctx.runtime.list_pod(&self.uid).await {
                for old in all
                    .iter()
                    .filter(|o| o.name == container.name && o.attempt < c.attempt)
                {
                    let _ = self.ctx.runtime.remove(&old.id).await;
                    self.finished.remove(&old.id);
                }
            }
        }
    }

    /// Creates and starts attempt `attempt` of `container`; returns whether a container was
    /// created (it may still have failed to start, which Docker then reports).
    async fn start(&mut self, pod: &Pod, container: &Container, role: &str, attempt: u32) -> bool {
        if let Err(waiting) = self.ensure_image(pod, container).await {
            self.waiting.insert(container.name.clone(), waiting);
            return false;
        }
        let body = match self.container_body(pod, container).await {
            Ok(body) => body,
            Err(ConfigError(message)) => {
                // The missing ConfigMap or Secret may appear any moment.
                self.wake_at(Instant::now() + Duration::from_secs(2));
                self.event(
                    pod,
                    Some(&container.name),
                    "Warning",
                    "Failed",
                    format!("Error: {message}"),
                );
                self.waiting.insert(
                    container.name.clone(),
                    Waiting {
                        reason: "CreateContainerConfigError".into(),
                        message,
                    },
                );
                return false;
            }
        };
        let name = docker_name(
            &container.name,
            &self.name,
            &self.namespace,
            &self.uid,
            attempt,
        );
        let result = self
            .ctx
            .runtime
            .run(&name, self.labels(&container.name, role, attempt), body)
            .await;
        match result {
            Ok(id) => {
                self.waiting.remove(&container.name);
                self.event(
                    pod,
                    Some(&container.name),
                    "Normal",
                    "Started",
                    format!("Started container {}", container.name),
                );
                self.post_start(pod, container, &id).await;
                true
            }
            Err(e) => {
                let message = error_chain(&e);
                self.event(
                    pod,
                    Some(&container.name),
                    "Warning",
                    "Failed",
                    format!("Error: {message}"),
                );
                // A container that was created but did not start stays, as the record of this
                // attempt (its state shows StartError); one that was not created is retried.
                let created = self
                    .ctx
                    .runtime
                    .list_pod(&self.uid)
                    .await
                    .map(|all| {
                        all.iter()
                            .any(|o| o.name == container.name && o.attempt == attempt)
                    })
                    .unwrap_or(false);
                // Docker sends no event for a container that never started: look again soon
                // (the next pass schedules the back-off).
                self.wake_at(Instant::now() + Duration::from_millis(500));
                if !created {
                    self.waiting.insert(
                        container.name.clone(),
                        Waiting {
                            reason: "CreateContainerError".into(),
                            message,
                        },
                    );
                }
                created
            }
        }
    }
}

impl Worker {
    /// Runs the container's postStart hook, if any, as the kubelet does right after the start;
    /// a failure is a `FailedPostStartHook` event and the container is killed (and restarted as
    /// its policy says).
    async fn post_start(&mut self, pod: &Pod, container: &Container, id: &str) {
        let Some(handler) = container
            .lifecycle
            .as_ref()
            .and_then(|l| l.post_start.as_ref())
        else {
            return;
        };
        let ports = hooks::named_ports(container);
        let result = hooks::run(
            handler,
            &self.ctx.runtime,
            id,
            self.pod_ip,
            &ports,
            POST_START_LIMIT,
        )
        .await;
        if let Err(error) = result {
            tracing::info!(pod = %self.name, container = %container.name, %error, "postStart hook failed");
            // As the kubelet: the handler's output stays out of the event (it may hold secrets).
            self.event(
                pod,
                Some(&container.name),
                "Warning",
                "FailedPostStartHook",
                "PostStartHook failed".into(),
            );
            let ctx = self.ctx.clone();
            let id = id.to_owned();
            let grace = Self::spec_grace(pod);
            tokio::spawn(async move {
                if let Err(e) = ctx.runtime.stop(&id, grace).await {
                    tracing::warn!(error = %error_chain(&e), "stopping a container after its postStart hook failed");
                }
            });
        }
    }
}

/// What stopping a container of a pod needs (also from a background task).
pub(super) struct StopRequest<'a> {
    pub(super) ctx: &'a Ctx,
    pub(super) pod: &'a Pod,
    pub(super) uid: &'a str,
    pub(super) pod_ip: Option<Ipv4Addr>,
}

impl StopRequest<'_> {
    /// Stops container `id`: its preStop hook first (bounded by `grace`; a failure is a
    /// `FailedPreStopHook` event), then SIGTERM and SIGKILL after what the hook left of the
    /// grace period (at least 2 s after a hook, as the kubelet).
    pub(super) async fn stop(
        &self,
        container: Option<&Container>,
        id: &str,
        grace: Duration,
    ) -> Result<(), super::runtime::RuntimeError> {
        let mut left = grace;
        let pre_stop = container
            .and_then(|c| c.lifecycle.as_ref())
            .and_then(|l| l.pre_stop.as_ref());
        if let (Some(container), Some(handler)) = (container, pre_stop)
            && !grace.is_zero()
        {
            let began = Instant::now();
            let ports = hooks::named_ports(container);
            let run = hooks::run(handler, &self.ctx.runtime, id, self.pod_ip, &ports, grace);
            match tokio::time::timeout(grace, run).await {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(error)) => {
                    tracing::info!(container = %container.name, %error, "preStop hook failed");
                    post_event(
                        self.ctx,
                        self.pod,
                        self.uid,
                        Some(&container.name),
                        "Warning",
                        "FailedPreStopHook",
                        "PreStopHook failed".into(),
                    );
                }
            }
            left = hooks::grace_after_hook(grace, began.elapsed());
        }
        self.ctx.runtime.stop(id, left).await
    }
}

/// Posts an Event about `pod` (what `kubectl describe` lists) in the background.
pub(super) fn post_event(
    ctx: &Ctx,
    pod: &Pod,
    uid: &str,
    container: Option<&str>,
    kind: &str,
    reason: &str,
    message: String,
) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let now = Time(Timestamp::now());
    let nanos = Timestamp::now().as_nanosecond();
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{nanos:x}")),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name),
            namespace: Some(namespace.clone()),
            uid: Some(uid.to_owned()),
            resource_version: pod.metadata.resource_version.clone(),
            field_path: container.map(|c| format!("spec.containers{{{c}}}")),
        },
        reason: Some(reason.to_owned()),
        message: Some(message),
        type_: Some(kind.to_owned()),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(ctx.config.node_name.clone()),
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some("keelson-node-agent".into()),
        reporting_instance: Some(ctx.config.node_name.clone()),
        ..Event::default()
    };
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), &namespace);
    tokio::spawn(async move {
        if let Err(error) = api.create(&PostParams::default(), &event).await {
            tracing::debug!(%error, "posting an event");
        }
    });
}

/// The newest instance of each container name, with the one before it.
fn latest_by_name(observed: &[Observed]) -> BTreeMap<&str, (Observed, Option<Observed>)> {
    let mut by_name: BTreeMap<&str, Vec<&Observed>> = BTreeMap::new();
    for c in observed.iter().filter(|c| c.role != "sandbox") {
        by_name.entry(c.name.as_str()).or_default().push(c);
    }
    by_name
        .into_iter()
        .map(|(name, mut list)| {
            list.sort_by_key(|c| std::cmp::Reverse(c.attempt));
            (name, (list[0].clone(), list.get(1).map(|c| (*c).clone())))
        })
        .collect()
}

//! One container's life in a pass: starting an attempt (and its postStart hook), restarting
//! after back-off, running its probes, stopping it in the background.

use std::time::{Duration, Instant};

use k8s_openapi::{
    api::core::v1::{Container, Pod},
    jiff::Timestamp,
};

use super::{Waiting, Worker, decide, stop::StopRequest};
use crate::{
    error_chain,
    pods::{
        error::PodError,
        hooks,
        probes::Probes,
        runtime::{Details, Observed},
        spec::ConfigError,
    },
};

/// How long a postStart hook may take before it counts as failed (the kubelet sets no bound;
/// one keeps a hung hook from holding the pod's worker for ever).
const POST_START_LIMIT: Duration = Duration::from_secs(120);

impl Worker {
    /// Stops container `id` of `container` in the background: its preStop hook, then SIGTERM,
    /// then SIGKILL after what is left of the grace period.
    pub(super) fn stop_in_background(&self, pod: &Pod, container: &Container, id: &str, why: &str) {
        tracing::info!(pod = %self.pod_ref.name, container = %container.name, why, "stopping container");
        let ctx = self.ctx.clone();
        let pod = pod.clone();
        let uid = self.pod_ref.uid.clone();
        let container = container.clone();
        let id = id.to_owned();
        let pod_ip = self.pod_ip;
        let grace = decide::spec_grace(&pod);
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

    pub(super) async fn probe(
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
        let outcome = probes.run_due(&*runtime, pod_ip).await;
        let next = probes.next_due();
        self.ctx.metrics.record_probe(probes.ready());
        if let Some(next) = next {
            self.wake_at(next);
        }
        if let Some(message) = outcome.kill {
            tracing::info!(pod = %self.pod_ref.name, container = %container.name, %message, "restarting container");
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
    pub(super) async fn restart_after_backoff(
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
        let config = &self.ctx.config;
        let delay =
            decide::restart_delay(restarts, ran, config.backoff_initial, config.backoff_max);
        // A container that never started has no finish time: count from its creation.
        let ended = details
            .finished_at
            .or_else(|| Timestamp::from_second(c.created).ok());
        if let Some(left) = decide::back_off_left(delay, ended, Timestamp::now()) {
            let message = self.pod_ref.crash_loop_message(delay, &container.name);
            if self.backoff_reported.get(&container.name) != Some(&c.attempt) {
                self.backoff_reported
                    .insert(container.name.clone(), c.attempt);
                let event = self.pod_ref.back_off_event(&container.name);
                self.event(pod, Some(&container.name), "Warning", "BackOff", event);
            }
            self.waiting.insert(
                container.name.clone(),
                Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message,
                },
            );
            self.wake_at(Instant::now() + left);
            return;
        }
        if self.start(pod, container, role, restarts, None).await {
            // Keep only the instance that just ended (lastState, logs --previous).
            if let Ok(all) = self.ctx.runtime.list_pod(&self.pod_ref.uid).await {
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

    /// Creates and starts attempt `attempt` of `container` (in the process namespace of
    /// container `pid_target` if given, as ephemeral containers with a `targetContainerName`
    /// are); returns whether a container was created (it may still have failed to start,
    /// which Docker then reports).
    pub(super) async fn start(
        &mut self,
        pod: &Pod,
        container: &Container,
        role: &str,
        attempt: u32,
        pid_target: Option<&str>,
    ) -> bool {
        if let Err(waiting) = self.ensure_image(pod, container).await {
            self.waiting.insert(container.name.clone(), waiting);
            return false;
        }
        let body = match self.container_body(pod, container).await {
            Ok(mut body) => {
                if let (Some(target), Some(host)) = (pid_target, body.host_config.as_mut()) {
                    host.pid_mode = Some(format!("container:{target}"));
                }
                body
            }
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
        let name = self.pod_ref.container_name(&container.name, attempt);
        let result = self
            .ctx
            .runtime
            .run(
                &name,
                self.pod_ref.labels(&container.name, role, attempt),
                body,
            )
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
                    .list_pod(&self.pod_ref.uid)
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

    /// Runs the container's postStart hook, if any, as the kubelet does right after the start;
    /// a failure is a `FailedPostStartHook` event and the container is killed (and restarted as
    /// its policy says).
    pub(super) async fn post_start(&mut self, pod: &Pod, container: &Container, id: &str) {
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
            &*self.ctx.runtime,
            id,
            self.pod_ip,
            &ports,
            POST_START_LIMIT,
        )
        .await;
        if let Err(error) = result {
            tracing::info!(pod = %self.pod_ref.name, container = %container.name, %error, "postStart hook failed");
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
            let grace = decide::spec_grace(pod);
            tokio::spawn(async move {
                if let Err(e) = ctx.runtime.stop(&id, grace).await {
                    tracing::warn!(error = %error_chain(&e), "stopping a container after its postStart hook failed");
                }
            });
        }
    }
}

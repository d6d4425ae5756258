//! Preparing what a container starts with: its image, the pod's volumes (set up before any
//! container and refreshed on a schedule: tokens before they expire, ConfigMaps and Secrets
//! every minute), its environment and its Docker configuration.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use bollard::models::{ContainerCreateBody, HostConfig};
use k8s_openapi::{
    api::core::v1::{Container, Pod},
    jiff::Timestamp,
};

use super::{RESOLV_CONF, Waiting, Worker};
use crate::{
    error_chain,
    pods::{
        dns,
        images::{self, auth},
        projection::Inputs,
        runtime, security, service_env,
        spec::{self, ConfigError, Sources},
        volumes,
    },
};

/// How long a container start waits for the first list of Services.
const SERVICES_WAIT: Duration = Duration::from_secs(5);
/// How often mounted ConfigMaps, Secrets and downward API files are written again.
const VOLUME_RESYNC: Duration = Duration::from_secs(60);
/// The first retry of a failed mount, doubling up to [`MOUNT_BACKOFF_MAX`] (the kubelet's
/// volume manager: 500 ms to 2 min 2 s).
const MOUNT_BACKOFF_INITIAL: Duration = Duration::from_millis(500);
const MOUNT_BACKOFF_MAX: Duration = Duration::from_secs(122);

/// The retry delay after `failures` failed mounts in a row.
pub(super) fn mount_backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    (MOUNT_BACKOFF_INITIAL * factor).min(MOUNT_BACKOFF_MAX)
}

/// The instant a wall-clock time stands for (now if it has passed).
fn instant_at(at: Timestamp) -> Instant {
    let ahead = at.duration_since(Timestamp::now());
    Instant::now() + Duration::try_from(ahead).unwrap_or(Duration::ZERO)
}

impl Worker {
    /// Sets up (or refreshes, when due) the pod's volumes; returns whether containers may
    /// start. A failure is the kubelet's `FailedMount` (an event when its message changes)
    /// and is retried with back-off; volumes already set up stay as they are meanwhile.
    pub(super) async fn mount_volumes(&mut self, pod: &Pod) -> bool {
        let now = Instant::now();
        if now < self.volumes_due {
            self.wake_at(self.volumes_due);
            return self.volumes.is_some();
        }
        let mut sources = Sources::new(self.ctx.client.clone(), &self.pod_ref.namespace);
        let pod_ip = self.pod_ip.map(|i| i.to_string()).unwrap_or_default();
        let host_ip = self.ctx.config.host_ip.to_string();
        let client = self.ctx.client.clone();
        let pod_dir = self.pod_dir();
        let mut inputs = Inputs {
            sources: &mut sources,
            tokens: &mut self.tokens,
            client: &client,
            pod,
            pod_ip: &pod_ip,
            host_ip: &host_ip,
        };
        match volumes::prepare(&mut inputs, &pod_dir).await {
            Ok(paths) => {
                self.volumes = Some(paths);
                self.mount_failures = 0;
                self.mount_error = None;
                let due = self.tokens.next_refresh().map_or(now + VOLUME_RESYNC, |t| {
                    instant_at(t).min(now + VOLUME_RESYNC)
                });
                self.volumes_due = due;
                self.wake_at(due);
                true
            }
            Err(error) => {
                self.mount_failures += 1;
                self.volumes_due = Instant::now() + mount_backoff(self.mount_failures);
                self.wake_at(self.volumes_due);
                let message = error.to_string();
                if self.mount_error.as_ref() != Some(&message) {
                    tracing::warn!(pod = %self.pod_ref.name, namespace = %self.pod_ref.namespace, %message, "mounting volumes");
                    self.event(pod, None, "Warning", "FailedMount", message.clone());
                    self.mount_error = Some(message);
                }
                self.volumes.is_some()
            }
        }
    }

    /// Writes the pod's `resolv.conf` (for its `dnsPolicy`) into its directory; returns the
    /// read-only bind that puts it at `/etc/resolv.conf` in a container.
    pub(super) fn resolv_conf(&self, pod: &Pod) -> Result<String, ConfigError> {
        let spec = pod.spec.clone().unwrap_or_default();
        let content = dns::resolv_conf(
            &spec,
            &self.pod_ref.namespace,
            self.ctx.dns.get(),
            &self.ctx.host_resolv,
        );
        let path = self.pod_dir().join("resolv.conf");
        dns::write_if_changed(&path, &content)
            .map_err(|e| ConfigError(format!("writing {}: {e}", path.display())))?;
        Ok(format!("{}:{RESOLV_CONF}:ro", path.display()))
    }

    /// Pulls the image if the policy asks for it; `Err` is the waiting state to show.
    pub(super) async fn ensure_image(
        &mut self,
        pod: &Pod,
        container: &Container,
    ) -> Result<(), Waiting> {
        let image = container.image.clone().unwrap_or_default();
        let policy = container
            .image_pull_policy
            .clone()
            .unwrap_or_else(|| runtime::default_pull_policy(&image).to_owned());
        let present = self
            .ctx
            .runtime
            .has_image(&image)
            .await
            .map_err(|e| Waiting {
                reason: "ErrImagePull".into(),
                message: error_chain(&e),
            })?;
        let needs_pull = match policy.as_str() {
            "Never" | "IfNotPresent" => !present,
            _ => true,
        };
        if !needs_pull {
            let message = images::present_message(&image);
            self.event(pod, Some(&container.name), "Normal", "Pulled", message);
        }
        match policy.as_str() {
            "Never" if present => return Ok(()),
            "Never" => {
                return Err(Waiting {
                    reason: "ErrImageNeverPull".into(),
                    message: format!(
                        "Container image \"{image}\" is not present with pull policy of Never"
                    ),
                });
            }
            "IfNotPresent" if present => return Ok(()),
            _ => {}
        }
        if let Some((failures, last)) = self.pull_failures.get(&container.name).copied() {
            let factor = 1u32 << failures.saturating_sub(1).min(16);
            let delay = (self.ctx.config.backoff_initial * factor).min(self.ctx.config.backoff_max);
            if last.elapsed() < delay {
                self.wake_at(last + delay);
                let message = format!("Back-off pulling image \"{image}\"");
                self.event(pod, Some(&container.name), "Normal", "BackOff", message);
                return Err(Waiting {
                    reason: "ImagePullBackOff".into(),
                    message: format!("Back-off pulling image \"{image}\""),
                });
            }
        }
        self.event(
            pod,
            Some(&container.name),
            "Normal",
            "Pulling",
            format!("Pulling image \"{image}\""),
        );
        let mut sources = Sources::new(self.ctx.client.clone(), &self.pod_ref.namespace);
        let (credentials, missing) = auth::pod_credentials(&mut sources, pod, &image).await;
        if !missing.is_empty() {
            let message = auth::missing_secrets_message(&missing);
            let reason = "FailedToRetrieveImagePullSecret";
            self.event(pod, Some(&container.name), "Warning", reason, message);
        }
        let started = Instant::now();
        match images::pull(&*self.ctx.runtime, &image, credentials).await {
            Ok(()) => {
                self.pull_failures.remove(&container.name);
                let took = started.elapsed();
                let size = self.ctx.runtime.image_size(&image).await;
                let message = images::pulled_message(&image, took, took, size);
                self.event(pod, Some(&container.name), "Normal", "Pulled", message);
                Ok(())
            }
            Err(error) => {
                let message = error_chain(&error);
                let entry = self
                    .pull_failures
                    .entry(container.name.clone())
                    .or_insert((0, Instant::now()));
                entry.0 += 1;
                entry.1 = Instant::now();
                self.event(
                    pod,
                    Some(&container.name),
                    "Warning",
                    "Failed",
                    images::failed_message(&image, &message),
                );
                let error = "Error: ErrImagePull".to_owned();
                self.event(pod, Some(&container.name), "Warning", "Failed", error);
                Err(Waiting {
                    reason: "ErrImagePull".into(),
                    message,
                })
            }
        }
    }

    /// The container's Docker configuration: environment (service variables from the Service
    /// cache), binds of the pod's volumes and resolver, resources, user.
    pub(super) async fn container_body(
        &mut self,
        pod: &Pod,
        container: &Container,
    ) -> Result<ContainerCreateBody, ConfigError> {
        let Some(sandbox) = self.sandbox.clone() else {
            return Err(ConfigError("the pod has no sandbox".into()));
        };
        let mut sources = Sources::new(self.ctx.client.clone(), &self.pod_ref.namespace);
        let enable_links = pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        // The kubelet's rule: no container before the Services were listed once.
        if !self.ctx.services.wait_listed(SERVICES_WAIT).await {
            return Err(ConfigError(
                "services have not yet been read at least once, cannot construct envvars".into(),
            ));
        }
        let services = self.ctx.services.read(|all| {
            service_env::service_env(&service_env::env_services(
                all.values(),
                &self.pod_ref.namespace,
                enable_links,
            ))
        });
        let pod_ip = self.pod_ip.map(|i| i.to_string()).unwrap_or_default();
        let host_ip = self.ctx.config.host_ip.to_string();
        let env =
            spec::container_env(&mut sources, pod, container, &services, &pod_ip, &host_ip).await?;
        let Some(paths) = self.volumes.as_ref() else {
            return Err(ConfigError("the pod's volumes are not set up".into()));
        };
        let mut binds = volumes::binds(container, paths)?;
        // A volume the container mounts there itself wins (Docker refuses two mounts).
        if !binds.iter().any(|b| {
            b.split(':')
                .nth(1)
                .is_some_and(|target| target.trim_end_matches('/') == RESOLV_CONF)
        }) {
            binds.push(self.resolv_conf(pod)?);
        }
        let vars: HashMap<String, String> = env.iter().cloned().collect();
        let expand = |list: &Option<Vec<String>>| {
            list.as_ref()
                .map(|l| l.iter().map(|a| spec::expand(a, &vars)).collect::<Vec<_>>())
        };
        let (nano_cpus, cpu_shares, memory) = spec::resources(container);
        let user = container
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_user)
            .or_else(|| {
                pod.spec
                    .as_ref()
                    .and_then(|s| s.security_context.as_ref())
                    .and_then(|s| s.run_as_user)
            })
            .map(|u| u.to_string());
        let mut body = ContainerCreateBody {
            image: container.image.clone(),
            entrypoint: expand(&container.command),
            cmd: expand(&container.args),
            env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            working_dir: container.working_dir.clone().filter(|w| !w.is_empty()),
            tty: container.tty,
            open_stdin: container.stdin,
            // Docker closes the stdin of a StdinOnce container when its first attached client
            // leaves, as the kubelet (dockershim) asked it to.
            stdin_once: container.stdin_once,
            user,
            host_config: Some(HostConfig {
                binds: Some(binds),
                nano_cpus,
                cpu_shares,
                memory,
                ..runtime::joined_host_config(&sandbox.id)
            }),
            ..ContainerCreateBody::default()
        };
        let image_user = self
            .ctx
            .runtime
            .image_user(body.image.as_deref().unwrap_or_default());
        let image_user = image_user.await.map_err(|e| ConfigError(error_chain(&e)))?;
        security::apply(
            &mut body,
            pod,
            container,
            &image_user,
            &self.ctx.config.data_dir,
        )?;
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_retries_back_off_to_two_minutes() {
        let delays: Vec<u128> = (1..=10).map(|n| mount_backoff(n).as_millis()).collect();
        assert_eq!(
            delays,
            [
                500, 1000, 2000, 4000, 8000, 16000, 32000, 64000, 122_000, 122_000
            ]
        );
        assert_eq!(mount_backoff(u32::MAX), MOUNT_BACKOFF_MAX);
    }
}

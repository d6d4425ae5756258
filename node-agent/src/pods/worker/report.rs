//! The pod's status as the API shows it: each container's state from Docker and the probes,
//! the phase and conditions, written only when it changed.

use k8s_openapi::{
    api::core::v1::{Container, ContainerStatus, HostIP, Pod, PodIP, PodStatus},
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{Patch, PatchParams},
};

use super::{
    Waiting, Worker,
    decide::{is_sidecar, latest_by_name},
};
use crate::pods::{
    error::PodError, plan::should_restart, probes::Probes, runtime::Observed, status,
};

impl Worker {
    pub(super) async fn container_status(
        &mut self,
        container: &Container,
        latest: Option<&(Observed, Option<Observed>)>,
        policy: &str,
        init: bool,
    ) -> Result<ContainerStatus, PodError> {
        let image = container.image.clone().unwrap_or_default();
        let mut cs = ContainerStatus {
            name: container.name.clone(),
            image: image.clone(),
            image_id: String::new(),
            ready: false,
            restart_count: 0,
            started: Some(false),
            ..ContainerStatus::default()
        };
        let Some((c, previous)) = latest else {
            let w = self
                .waiting
                .get(&container.name)
                .cloned()
                .unwrap_or(Waiting {
                    reason: if init {
                        "PodInitializing"
                    } else {
                        "ContainerCreating"
                    }
                    .into(),
                    message: String::new(),
                });
            cs.state = Some(status::waiting(&w.reason, &w.message));
            return Ok(cs);
        };
        let details = self.details(c).await?;
        cs.container_id = Some(format!("docker://{}", c.id));
        cs.image_id = format!("docker://{}", details.image_id);
        cs.restart_count = c.attempt as i32;
        if let Some(prev) = previous {
            let prev_details = self.details(prev).await?;
            cs.last_state = Some(status::terminated(
                &prev_details,
                &prev.id,
                prev.created_only,
            ));
        }
        if c.running {
            let probes = self
                .probes
                .get(&container.name)
                .filter(|p| p.container_id == c.id);
            let sidecar = init && is_sidecar(container);
            cs.state = Some(status::running(&details));
            cs.started = Some(match probes {
                Some(p) => p.started,
                None => container.startup_probe.is_none(),
            });
            // A sidecar is ready as its probes say; a regular init container never is. Before
            // its probes exist (the pass that started it), a container with a readiness probe
            // is not ready yet: reporting it ready would flap Ready for a moment.
            cs.ready = (!init || sidecar)
                && probes.map_or(container.readiness_probe.is_none(), Probes::ready);
            if init && !sidecar {
                cs.started = Some(true);
            }
            return Ok(cs);
        }
        let exit = if c.created_only {
            128
        } else {
            details.exit_code
        };
        let terminated = status::terminated(&details, &c.id, c.created_only);
        let restarting = !self.terminal
            && if init && is_sidecar(container) {
                !self.stopping.contains(&c.id)
            } else {
                should_restart(policy, exit) && !(init && exit == 0)
            };
        match self.waiting.get(&container.name).filter(|_| restarting) {
            Some(w) => {
                cs.state = Some(status::waiting(&w.reason, &w.message));
                cs.last_state = Some(terminated);
            }
            None => cs.state = Some(terminated),
        }
        Ok(cs)
    }

    pub(super) async fn write_status(
        &mut self,
        pod: &Pod,
        observed: &[Observed],
    ) -> Result<(), PodError> {
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into());
        let latest = latest_by_name(observed);
        let sandbox_ready = self.sandbox.is_some() && self.pod_ip.is_some();

        let mut init_statuses = Vec::new();
        let mut initialized = true;
        let mut init_failed = false;
        let mut pending_init = Vec::new();
        let mut unready = Vec::new();
        // App containers exist only once the pod was initialized (see the planner).
        let was_initialized = spec
            .containers
            .iter()
            .any(|c| latest.contains_key(c.name.as_str()));
        for container in spec.init_containers.iter().flatten() {
            let cs = self
                .container_status(
                    container,
                    latest.get(container.name.as_str()),
                    &policy,
                    true,
                )
                .await?;
            let sidecar = is_sidecar(container);
            let running = cs.state.as_ref().is_some_and(|s| s.running.is_some());
            if sidecar && !cs.ready {
                unready.push(container.name.clone());
            }
            // A sidecar has done its part once started; a regular one once it exited 0.
            let done = if sidecar {
                was_initialized || (running && cs.started == Some(true))
            } else {
                was_initialized
                    || cs
                        .state
                        .as_ref()
                        .and_then(|s| s.terminated.as_ref())
                        .is_some_and(|t| t.exit_code == 0)
            };
            if !done {
                initialized = false;
                pending_init.push(container.name.clone());
                if cs
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.as_ref())
                    .is_some_and(|t| t.exit_code != 0)
                    && policy == "Never"
                    && !sidecar
                {
                    init_failed = true;
                }
            }
            init_statuses.push(cs);
        }

        let mut statuses = Vec::new();
        for container in &spec.containers {
            let mut cs = self
                .container_status(
                    container,
                    latest.get(container.name.as_str()),
                    &policy,
                    false,
                )
                .await?;
            if !initialized {
                cs.state = Some(status::waiting("PodInitializing", ""));
                cs.container_id = None;
            }
            if !cs.ready {
                unready.push(container.name.clone());
            }
            statuses.push(cs);
        }

        // Ephemeral containers: reported, never ready, never restarted, not in the phase.
        let mut ephemeral_statuses = Vec::new();
        for debug in spec.ephemeral_containers.iter().flatten() {
            let container = super::decide::ephemeral_as_container(debug);
            let mut cs = self
                .container_status(&container, latest.get(debug.name.as_str()), "Never", false)
                .await?;
            cs.ready = false;
            ephemeral_statuses.push(cs);
        }

        let phase = status::phase(
            init_failed,
            sandbox_ready && initialized,
            &statuses,
            &policy,
        );
        if matches!(phase, "Succeeded" | "Failed") {
            self.terminal = true;
        }

        let containers_ready = unready.is_empty() && phase == "Running";
        let unready_message = Some(format!(
            "containers with unready status: [{}]",
            unready.join(" ")
        ));
        let mut conditions = vec![
            status::condition(
                "PodReadyToStartContainers",
                sandbox_ready,
                None,
                self.network_error.clone(),
            ),
            status::condition(
                "Initialized",
                initialized,
                Some("ContainersNotInitialized".into()),
                Some(format!(
                    "containers with incomplete status: [{}]",
                    pending_init.join(" ")
                )),
            ),
            status::condition(
                "Ready",
                containers_ready,
                Some(if phase == "Succeeded" || phase == "Failed" {
                    "PodCompleted".into()
                } else {
                    "ContainersNotReady".into()
                }),
                unready_message.clone(),
            ),
            status::condition(
                "ContainersReady",
                containers_ready,
                Some(if phase == "Succeeded" || phase == "Failed" {
                    "PodCompleted".into()
                } else {
                    "ContainersNotReady".into()
                }),
                unready_message,
            ),
            status::condition("PodScheduled", true, None, None),
        ];
        if let Some(readiness) = self
            .probes
            .values()
            .find_map(Probes::readiness_message)
            .filter(|_| !containers_ready)
        {
            for c in conditions.iter_mut().filter(|c| c.type_ == "Ready") {
                c.message = Some(readiness.clone());
            }
        }
        if self.start_time.is_none() {
            self.start_time = Some(Time(Timestamp::now()));
        }
        let host_ip = self.ctx.config.host_ip.to_string();
        let mut next = PodStatus {
            phase: Some(phase.into()),
            conditions: Some(conditions),
            host_ip: Some(host_ip.clone()),
            host_ips: Some(vec![HostIP { ip: host_ip }]),
            pod_ip: self.pod_ip.map(|i| i.to_string()),
            pod_ips: self.pod_ip.map(|i| vec![PodIP { ip: i.to_string() }]),
            start_time: self.start_time.clone(),
            qos_class: Some(status::qos_class(pod).into()),
            container_statuses: Some(statuses),
            init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
            ephemeral_container_statuses: (!ephemeral_statuses.is_empty())
                .then_some(ephemeral_statuses),
            ..PodStatus::default()
        };
        self.terminal |= crate::pods::security::reject_status(pod, &mut next);
        status::stamp(&mut next, self.written.as_ref());
        let same = self
            .written
            .as_ref()
            .is_some_and(|w| comparable(w) == comparable(&next));
        if same {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.pod_ref.namespace);
        match api
            .patch_status(
                &self.pod_ref.name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": next })),
            )
            .await
        {
            Ok(_) => {
                self.ctx.metrics.record_status_write();
                self.written = Some(next);
                Ok(())
            }
            // Deleted meanwhile: the watch delivers that next.
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(PodError::WriteStatus(e)),
        }
    }
}

/// The status as compared for "changed": serialized, which includes the stamped times.
fn comparable(status: &PodStatus) -> serde_json::Value {
    serde_json::to_value(status).unwrap_or_default()
}

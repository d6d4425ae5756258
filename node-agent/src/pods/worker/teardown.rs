//! A pod's end: graceful stop of its containers, release of its address and directory, and
//! removal of the pod object.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{DeleteParams, Preconditions},
};

use super::{
    Worker,
    decide::{self, is_sidecar},
    stop::StopRequest,
};
use crate::{
    error_chain,
    pods::{Ctx, error::PodError, runtime::Observed},
};

impl Worker {
    /// Graceful deletion: stop the containers (preStop hooks, SIGTERM, then SIGKILL after the
    /// grace period; app containers first, then sidecars last to first), remove them, free the
    /// network, then remove the pod object.
    pub(super) async fn terminate(&mut self, pod: &Pod) {
        let grace = decide::deletion_grace(pod);
        self.event(
            pod,
            None,
            "Normal",
            "Killing",
            format!("Stopping pod {} (grace period {grace}s)", self.pod_ref.name),
        );
        let grace = Duration::from_secs(grace.unsigned_abs());
        self.stop_in_order(pod, grace).await;
        self.teardown(grace).await;
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.pod_ref.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.pod_ref.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        for attempt in 0..10u32 {
            match api.delete(&self.pod_ref.name, &params).await {
                Ok(_) => return,
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return,
                Err(error) => {
                    tracing::warn!(pod = %self.pod_ref.name, %error, attempt, "removing the pod object");
                    tokio::time::sleep(Duration::from_secs(1 << attempt.min(4))).await;
                }
            }
        }
    }

    /// Stops the running containers as the kubelet does on deletion: the app containers (and a
    /// running regular init container) together, each after its preStop hook; then the
    /// sidecars one by one, last first, within what is left of `grace`.
    async fn stop_in_order(&mut self, pod: &Pod, grace: Duration) {
        let Ok(observed) = self.ctx.runtime.list_pod(&self.pod_ref.uid).await else {
            return;
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let sidecars: Vec<_> = spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| is_sidecar(c))
            .collect();
        let deadline = Instant::now() + grace;
        let request = StopRequest {
            ctx: &self.ctx,
            pod,
            uid: &self.pod_ref.uid,
            pod_ip: self.pod_ip,
        };
        let first = observed.iter().filter(|c| {
            c.running && c.role != "sandbox" && !sidecars.iter().any(|s| s.name == c.name)
        });
        let stops = first.map(|c| {
            let container = spec
                .containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
                .find(|s| s.name == c.name);
            request.stop(container, &c.id, grace)
        });
        for result in futures_util::future::join_all(stops).await {
            if let Err(e) = result {
                tracing::warn!(pod = %self.pod_ref.name, error = %error_chain(&e), "stopping a container");
            }
        }
        for sidecar in sidecars.iter().rev() {
            let Some(c) = observed
                .iter()
                .find(|c| c.running && c.name == sidecar.name)
            else {
                continue;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(e) = request.stop(Some(sidecar), &c.id, left).await {
                tracing::warn!(pod = %self.pod_ref.name, error = %error_chain(&e), "stopping a sidecar");
            }
        }
    }

    /// Stops and removes every container of the pod, releases its address and its directory.
    pub(super) async fn teardown(&mut self, grace: Duration) {
        for attempt in 0..30u32 {
            match self.try_teardown(grace).await {
                Ok(()) => {
                    tracing::info!(pod = %self.pod_ref.name, namespace = %self.pod_ref.namespace, "pod stopped and cleaned up");
                    return;
                }
                Err(error) => {
                    let error = error_chain(&error);
                    tracing::warn!(pod = %self.pod_ref.name, %error, attempt, "cleaning up the pod");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn try_teardown(&mut self, grace: Duration) -> Result<(), PodError> {
        let observed = self.ctx.runtime.list_pod(&self.pod_ref.uid).await?;
        teardown_containers(&self.ctx, &observed, grace).await?;
        self.ctx.host_ports.withdraw(&self.pod_ref.uid);
        if let Some(network) = self.ctx.network.get() {
            network.detach(&self.pod_ref.uid).await?;
        }
        crate::pods::memory_volume::unmount_under(&self.pod_dir());
        let _ = std::fs::remove_dir_all(self.pod_dir());
        self.sandbox = None;
        self.pod_ip = None;
        Ok(())
    }
}

/// Stops the app and init containers in parallel with `grace`, then removes everything.
pub async fn teardown_containers(
    ctx: &Ctx,
    observed: &[Observed],
    grace: Duration,
) -> Result<(), PodError> {
    let stops = observed
        .iter()
        .filter(|c| c.running && c.role != "sandbox")
        .map(|c| ctx.runtime.stop(&c.id, grace));
    for result in futures_util::future::join_all(stops).await {
        result?;
    }
    for c in observed {
        ctx.runtime.remove(&c.id).await?;
    }
    Ok(())
}

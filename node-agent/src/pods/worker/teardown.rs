//! A pod's end: graceful stop of its containers, release of its address and directory, and
//! removal of the pod object.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{DeleteParams, Preconditions},
};

use super::{DEFAULT_GRACE, Worker};
use crate::{
    error_chain,
    pods::{Ctx, runtime::Observed},
};

impl Worker {
    /// Graceful deletion: stop the containers (SIGTERM, then SIGKILL after the grace period),
    /// remove them, free the network, then remove the pod object.
    pub(super) async fn terminate(&mut self, pod: &Pod) {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
            .unwrap_or(DEFAULT_GRACE)
            .max(0);
        self.event(
            pod,
            None,
            "Normal",
            "Killing",
            format!("Stopping pod {} (grace period {grace}s)", self.name),
        );
        self.teardown(Duration::from_secs(grace as u64)).await;
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(self.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        for attempt in 0..10u32 {
            match api.delete(&self.name, &params).await {
                Ok(_) => return,
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => return,
                Err(error) => {
                    tracing::warn!(pod = %self.name, %error, attempt, "removing the pod object");
                    tokio::time::sleep(Duration::from_secs(1 << attempt.min(4))).await;
                }
            }
        }
    }

    /// Stops and removes every container of the pod, releases its address and its directory.
    pub(super) async fn teardown(&mut self, grace: Duration) {
        for attempt in 0..30u32 {
            match self.try_teardown(grace).await {
                Ok(()) => {
                    tracing::info!(pod = %self.name, namespace = %self.namespace, "pod stopped and cleaned up");
                    return;
                }
                Err(error) => {
                    tracing::warn!(pod = %self.name, %error, attempt, "cleaning up the pod");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn try_teardown(&mut self, grace: Duration) -> Result<(), String> {
        let observed = self
            .ctx
            .runtime
            .list_pod(&self.uid)
            .await
            .map_err(|e| error_chain(&e))?;
        teardown_containers(&self.ctx, &observed, grace).await?;
        if let Some(network) = self.ctx.network.get() {
            network
                .detach(&self.uid)
                .await
                .map_err(|e| error_chain(&e))?;
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
) -> Result<(), String> {
    let stops = observed
        .iter()
        .filter(|c| c.running && c.role != "sandbox")
        .map(|c| ctx.runtime.stop(&c.id, grace));
    for result in futures_util::future::join_all(stops).await {
        result.map_err(|e| error_chain(&e))?;
    }
    for c in observed {
        ctx.runtime
            .remove(&c.id)
            .await
            .map_err(|e| error_chain(&e))?;
    }
    Ok(())
}

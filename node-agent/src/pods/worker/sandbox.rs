//! The pod's sandbox (the pause container holding its namespaces) and its network.

use super::{Sandbox, Worker, decide};
use crate::{
    error_chain,
    pods::{
        error::PodError,
        runtime::{Observed, SANDBOX},
    },
};
use k8s_openapi::api::core::v1::Pod;

impl Worker {
    /// A running sandbox with its network, created (again) if there is none.
    pub(super) async fn ensure_sandbox(
        &mut self,
        pod: &Pod,
        observed: &[Observed],
    ) -> Result<(), PodError> {
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
        let body = decide::sandbox_body(
            pod,
            &self.pod_ref,
            image,
            self.host_network,
            self.ctx.dns.get(),
            resolv,
        );
        let id = self
            .ctx
            .runtime
            .run(
                &self.pod_ref.container_name(SANDBOX, 0),
                self.pod_ref.labels(SANDBOX, "sandbox", 0),
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
        if let Some(ip) = network.adopt(&self.pod_ref.uid).await? {
            self.pod_ip = Some(ip);
            self.network_error = None;
            return Ok(());
        }
        let details = self.ctx.runtime.inspect(sandbox_id).await?;
        if details.pid == 0 {
            return Err(PodError::NoSandboxProcess);
        }
        match network.attach(&self.pod_ref.uid, details.pid).await {
            Ok(ip) => {
                tracing::info!(pod = %self.pod_ref.name, namespace = %self.pod_ref.namespace, %ip, "pod network attached");
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
}

//! Stopping one container (its preStop hook first) and posting Events, also from background
//! tasks that outlive a pass.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{Container, Event, Pod},
    jiff::Timestamp,
};
use kube::{Api, api::PostParams};

use super::decide::{EventText, pod_event};
use crate::pods::{Ctx, hooks, runtime::RuntimeError};

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
    ) -> Result<(), RuntimeError> {
        let mut left = grace;
        let pre_stop = container
            .and_then(|c| c.lifecycle.as_ref())
            .and_then(|l| l.pre_stop.as_ref());
        if let (Some(container), Some(handler)) = (container, pre_stop)
            && !grace.is_zero()
        {
            let began = Instant::now();
            let ports = hooks::named_ports(container);
            let run = hooks::run(handler, &*self.ctx.runtime, id, self.pod_ip, &ports, grace);
            match tokio::time::timeout(grace, run).await {
                Ok(Ok(())) | Err(_) => {}
                Ok(Err(error)) => {
                    tracing::info!(container = %container.name, %error, "preStop hook failed");
                    let text = EventText {
                        container: Some(&container.name),
                        kind: "Warning",
                        reason: "FailedPreStopHook",
                    };
                    post_event(
                        self.ctx,
                        self.pod,
                        self.uid,
                        text,
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
pub(super) fn post_event(ctx: &Ctx, pod: &Pod, uid: &str, text: EventText<'_>, message: String) {
    let node = &ctx.config.node_name;
    let event = pod_event(pod, uid, node, text, message, Timestamp::now());
    let namespace = event.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), &namespace);
    tokio::spawn(async move {
        if let Err(error) = api.create(&PostParams::default(), &event).await {
            tracing::debug!(%error, "posting an event");
        }
    });
}

//! Container lifecycle hooks (`postStart`, `preStop`) with the kubelet's handlers: `exec` in the
//! container, `httpGet` to the pod (HTTP or HTTPS), and `sleep` (Kubernetes 1.30+).
//! `tcpSocket` is accepted and does nothing, as in the kubelet.

use std::{net::Ipv4Addr, time::Duration};

use k8s_openapi::api::core::v1::LifecycleHandler;

use super::{
    handlers::{self, ActionError},
    runtime::ContainerRuntime,
};

/// The kubelet's shortest stop window after a preStop hook: SIGTERM always gets this long.
pub const MINIMUM_GRACE: Duration = Duration::from_secs(2);

/// Runs `handler` for the container `id` of a pod at `pod_ip` whose named ports are `ports`;
/// gives up after `limit`.
pub async fn run(
    handler: &LifecycleHandler,
    runtime: &dyn ContainerRuntime,
    id: &str,
    pod_ip: Option<Ipv4Addr>,
    ports: &[(String, i32)],
    limit: Duration,
) -> Result<(), ActionError> {
    if let Some(exec) = &handler.exec {
        let command = exec.command.clone().unwrap_or_default();
        let (code, output) = runtime
            .exec(id, command, limit)
            .await
            .map_err(|e| ActionError::Exec(e.to_string()))?;
        return if code == 0 {
            Ok(())
        } else {
            Err(ActionError::ExecExit {
                code,
                output: output.trim().to_owned(),
            })
        };
    }
    if let Some(http) = &handler.http_get {
        let ip = pod_ip.ok_or(ActionError::NoAddress)?;
        return handlers::http_get(http, ip, ports, limit).await;
    }
    if let Some(sleep) = &handler.sleep {
        tokio::time::sleep(sleep_for(sleep.seconds, limit)).await;
    }
    Ok(())
}

/// How long a `sleep` action sleeps: its seconds (never negative), at most `limit`.
pub fn sleep_for(seconds: i64, limit: Duration) -> Duration {
    Duration::from_secs(seconds.max(0).unsigned_abs()).min(limit)
}

/// The stop window left after a preStop hook that took `spent` of `grace`: the rest, but never
/// less than [`MINIMUM_GRACE`] (`kuberuntime_container.go`, `killContainer`).
pub fn grace_after_hook(grace: Duration, spent: Duration) -> Duration {
    grace.saturating_sub(spent).max(MINIMUM_GRACE)
}

/// The container's named ports (for handlers that name theirs).
pub fn named_ports(container: &k8s_openapi::api::core::v1::Container) -> Vec<(String, i32)> {
    container
        .ports
        .iter()
        .flatten()
        .filter_map(|p| Some((p.name.clone()?, p.container_port)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_is_bounded_by_the_grace_period() {
        let limit = Duration::from_secs(5);
        assert_eq!(sleep_for(3, limit), Duration::from_secs(3));
        assert_eq!(sleep_for(60, limit), limit);
        assert_eq!(sleep_for(-1, limit), Duration::ZERO);
    }

    #[test]
    fn sigterm_gets_what_the_hook_left_and_at_least_two_seconds() {
        let s = Duration::from_secs;
        let cases = [(30, 5, 25), (5, 4, 2), (5, 9, 2), (10, 0, 10)];
        for (grace, spent, want) in cases {
            assert_eq!(
                grace_after_hook(s(grace), s(spent)),
                s(want),
                "{grace} {spent}"
            );
        }
    }
}

//! Building a pod's status from what Docker reports: container states, phase, conditions, with
//! transition times kept while a condition holds, so an unchanged pod compares equal and is not
//! written again.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus, Pod, PodCondition, PodStatus,
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};

use super::runtime::Details;

/// `waiting` with a reason and message.
pub fn waiting(reason: &str, message: &str) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_owned()),
            message: (!message.is_empty()).then(|| message.to_owned()),
        }),
        ..ContainerState::default()
    }
}

/// `running` since the container started.
pub fn running(details: &Details) -> ContainerState {
    ContainerState {
        running: Some(ContainerStateRunning {
            started_at: details.started_at.map(Time),
        }),
        ..ContainerState::default()
    }
}

/// `terminated` with the exit code and Kubernetes' reason (`Completed`, `Error`, `OOMKilled`,
/// `StartError` for a container that never started).
pub fn terminated(details: &Details, id: &str, never_started: bool) -> ContainerState {
    let (reason, exit_code) = if never_started {
        (
            "StartError",
            if details.exit_code == 0 {
                128
            } else {
                details.exit_code
            },
        )
    } else if details.oom_killed {
        ("OOMKilled", details.exit_code)
    } else if details.exit_code == 0 {
        ("Completed", 0)
    } else {
        ("Error", details.exit_code)
    };
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            container_id: Some(format!("docker://{id}")),
            exit_code,
            reason: Some(reason.to_owned()),
            message: (!details.error.is_empty()).then(|| details.error.clone()),
            started_at: details.started_at.map(Time),
            finished_at: details.finished_at.map(Time),
            signal: None,
        }),
        ..ContainerState::default()
    }
}

/// The pod's phase from its app containers' statuses (sidecars do not count, as in the
/// kubelet's `getPhase`): `Failed` when an init container failed under `Never`, `Pending`
/// until the sandbox is up, the pod initialized and every app container created, `Running`
/// while one runs or will restart, then `Succeeded` (all exited 0, policy not `Always`) or
/// `Failed` (all exited, one non-zero, policy `Never`).
pub fn phase(
    init_failed: bool,
    ready_to_start: bool,
    statuses: &[ContainerStatus],
    policy: &str,
) -> &'static str {
    let any_running = statuses
        .iter()
        .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()));
    let all_created = statuses.iter().all(|c| c.container_id.is_some());
    let terminated: Vec<i32> = statuses
        .iter()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref().map(|t| t.exit_code))
        .collect();
    let all_terminated = terminated.len() == statuses.len() && !statuses.is_empty();
    if init_failed {
        "Failed"
    } else if !ready_to_start || !all_created {
        "Pending"
    } else if any_running {
        "Running"
    } else if all_terminated && terminated.iter().all(|c| *c == 0) && policy != "Always" {
        "Succeeded"
    } else if all_terminated && policy == "Never" {
        "Failed"
    } else {
        "Running"
    }
}

/// A condition with its reason and message (transition time filled by [`stamp`]).
pub fn condition(
    kind: &str,
    ok: bool,
    reason: Option<String>,
    message: Option<String>,
) -> PodCondition {
    PodCondition {
        type_: kind.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: if ok { None } else { reason },
        message: if ok { None } else { message },
        last_probe_time: None,
        last_transition_time: None,
        observed_generation: None,
    }
}

/// Keeps each condition's transition time from `previous` while its status holds.
pub fn stamp(status: &mut PodStatus, previous: Option<&PodStatus>) {
    let before: BTreeMap<String, PodCondition> = previous
        .and_then(|p| p.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_.clone(), c))
        .collect();
    let now = Time(Timestamp::now());
    for c in status.conditions.iter_mut().flatten() {
        c.last_transition_time = match before.get(&c.type_) {
            Some(b) if b.status == c.status => b.last_transition_time.clone(),
            _ => Some(now.clone()),
        };
    }
}

/// The QoS class of a pod: Guaranteed (every container's requests equal its limits for CPU and
/// memory), BestEffort (no requests or limits at all), else Burstable.
pub fn qos_class(pod: &Pod) -> &'static str {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let mut any = false;
    let mut guaranteed = true;
    for c in &containers {
        let r = c.resources.clone().unwrap_or_default();
        let limits = r.limits.unwrap_or_default();
        let requests = r.requests.unwrap_or_default();
        if !limits.is_empty() || !requests.is_empty() {
            any = true;
        }
        for key in ["cpu", "memory"] {
            match (limits.get(key), requests.get(key)) {
                (Some(l), Some(q)) if l == q => {}
                (Some(_), None) => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(state: ContainerState, created: bool) -> ContainerStatus {
        ContainerStatus {
            container_id: created.then(|| "docker://x".to_owned()),
            state: Some(state),
            ..ContainerStatus::default()
        }
    }

    fn exited(code: i32) -> ContainerStatus {
        let details = Details {
            exit_code: code,
            ..Details::default()
        };
        status(terminated(&details, "x", false), true)
    }

    #[test]
    fn phases_follow_the_app_containers() {
        let run = || status(running(&Details::default()), true);
        let creating = || status(waiting("ContainerCreating", ""), false);
        let backoff = || status(waiting("CrashLoopBackOff", "back-off"), true);
        let cases = [
            (
                "init failed under Never",
                true,
                true,
                vec![run()],
                "Never",
                "Failed",
            ),
            (
                "sandbox or init not ready",
                false,
                false,
                vec![run()],
                "Always",
                "Pending",
            ),
            (
                "a container not created",
                false,
                true,
                vec![run(), creating()],
                "Always",
                "Pending",
            ),
            (
                "one runs",
                false,
                true,
                vec![run(), exited(1)],
                "Never",
                "Running",
            ),
            (
                "all exited 0",
                false,
                true,
                vec![exited(0), exited(0)],
                "OnFailure",
                "Succeeded",
            ),
            (
                "all exited 0 under Always",
                false,
                true,
                vec![exited(0)],
                "Always",
                "Running",
            ),
            (
                "one failed under Never",
                false,
                true,
                vec![exited(0), exited(2)],
                "Never",
                "Failed",
            ),
            (
                "restarting under OnFailure",
                false,
                true,
                vec![backoff()],
                "OnFailure",
                "Running",
            ),
        ];
        for (case, init_failed, ready, statuses, policy, want) in cases {
            assert_eq!(phase(init_failed, ready, &statuses, policy), want, "{case}");
        }
    }
}

//! Admitting new pods under node pressure, as the kubelet's eviction manager does (`Admit` in
//! `pkg/kubelet/eviction/eviction_manager.go`): while the node reports a pressure condition, a
//! pod the node has not started yet is refused, not run and evicted later. Critical pods are
//! always admitted; under memory pressure alone, so is every pod that is not `BestEffort` and a
//! `BestEffort` one that tolerates the `memory-pressure` taint. A refused pod is reported
//! `Failed` with reason `Evicted` and `Pod was rejected: The node had condition: [...]. `, with
//! a Warning event, as `rejectPod` in `pkg/kubelet/kubelet.go` writes it.

use std::sync::Mutex;

use k8s_openapi::api::core::v1::{Pod, Taint};

/// The node's pressure conditions that hold, as the eviction manager last observed them.
#[derive(Debug, Default)]
pub struct Pressures(Mutex<Vec<&'static str>>);

impl Pressures {
    /// Replaces the conditions that hold (`MemoryPressure`, `DiskPressure`, `PIDPressure`).
    pub fn set(&self, holding: Vec<&'static str>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = holding;
    }

    /// The conditions that hold now.
    pub fn get(&self) -> Vec<&'static str> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// What `rejectPod` puts before the admit handler's message in the pod's status.
pub const REJECTED: &str = "Pod was rejected: ";

/// Why `pod` is refused while `conditions` hold (the event's message; the status gets
/// [`REJECTED`] before it), or `None` when it is admitted.
pub fn refusal(conditions: &[&str], pod: &Pod) -> Option<String> {
    if conditions.is_empty() || super::eviction::is_critical(pod) {
        return None;
    }
    if conditions == ["MemoryPressure"] {
        if crate::pods::status::qos_class(pod) != "BestEffort" {
            return None;
        }
        let taint = Taint {
            key: "node.kubernetes.io/memory-pressure".into(),
            effect: "NoSchedule".into(),
            ..Taint::default()
        };
        let tolerations = pod
            .spec
            .as_ref()
            .and_then(|s| s.tolerations.as_deref())
            .unwrap_or_default();
        if keelson_api::tolerations::tolerates_taint(tolerations, &taint) {
            return None;
        }
    }
    // Go's `%v` of a slice: `[MemoryPressure DiskPressure]`.
    Some(format!(
        "The node had condition: [{}]. ",
        conditions.join(" ")
    ))
}

/// Whether the node has started `pod` already (the kubelet admits a pod once, when it first
/// sees it; a restarted agent does not refuse the pods it runs).
pub fn is_new(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    status.and_then(|s| s.start_time.as_ref()).is_none()
        && !matches!(
            status.and_then(|s| s.phase.as_deref()),
            Some("Running" | "Succeeded" | "Failed")
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": spec,
        }))
        .expect("pod")
    }

    #[test]
    fn pressure_refuses_the_pods_the_kubelet_refuses() {
        let best_effort = pod(serde_json::json!({"containers": [{"name": "a"}]}));
        let burstable = pod(serde_json::json!({"containers": [
            {"name": "a", "resources": {"requests": {"memory": "10Mi"}}}
        ]}));
        let tolerating = pod(serde_json::json!({
            "containers": [{"name": "a"}],
            "tolerations": [{"key": "node.kubernetes.io/memory-pressure", "operator": "Exists",
                             "effect": "NoSchedule"}],
        }));
        let critical = pod(serde_json::json!({
            "containers": [{"name": "a"}],
            "priority": 2_000_000_000,
        }));
        let memory = ["MemoryPressure"];
        let disk = ["DiskPressure"];
        let both = ["MemoryPressure", "DiskPressure"];
        let cases: [(&str, &[&str], &Pod, Option<&str>); 9] = [
            ("no pressure", &[], &best_effort, None),
            (
                "memory: BestEffort refused",
                &memory,
                &best_effort,
                Some("The node had condition: [MemoryPressure]. "),
            ),
            ("memory: Burstable admitted", &memory, &burstable, None),
            (
                "memory: tolerated taint admitted",
                &memory,
                &tolerating,
                None,
            ),
            (
                "disk: every pod refused",
                &disk,
                &burstable,
                Some("The node had condition: [DiskPressure]. "),
            ),
            (
                "disk: tolerating memory pressure does not help",
                &disk,
                &tolerating,
                Some("The node had condition: [DiskPressure]. "),
            ),
            (
                "memory and disk: Burstable refused too",
                &both,
                &burstable,
                Some("The node had condition: [MemoryPressure DiskPressure]. "),
            ),
            ("critical pods always admitted", &both, &critical, None),
            (
                "pids: refused",
                &["PIDPressure"],
                &best_effort,
                Some("The node had condition: [PIDPressure]. "),
            ),
        ];
        for (name, conditions, pod, want) in cases {
            assert_eq!(refusal(conditions, pod).as_deref(), want, "{name}");
        }
    }

    #[test]
    fn only_pods_the_node_has_not_started_are_admitted_again() {
        let mut p = pod(serde_json::json!({"containers": [{"name": "a"}]}));
        assert!(is_new(&p));
        p.status =
            Some(serde_json::from_value(serde_json::json!({"phase": "Pending"})).expect("s"));
        assert!(is_new(&p), "scheduled, not started");
        p.status = Some(
            serde_json::from_value(serde_json::json!({
                "phase": "Pending", "startTime": "2026-12-07T08:00:00Z"
            }))
            .expect("status"),
        );
        assert!(!is_new(&p), "started by this node (pulling, say)");
        p.status =
            Some(serde_json::from_value(serde_json::json!({"phase": "Running"})).expect("s"));
        assert!(!is_new(&p));
    }
}

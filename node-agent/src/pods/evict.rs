//! The pod manager's side of eviction: a handle the eviction manager and the image garbage
//! collector ask for the pods this node runs, and through which a pod is evicted. Evicting
//! stops the pod's worker (its containers are killed with no grace period and removed, as for
//! a hard threshold), then reports the pod `Failed` with reason `Evicted` and the message, with
//! a `DisruptionTarget` condition (`TerminationByKubelet`) and a Warning event `Evicted`, as the
//! kubelet does. An evicted pod is not started again: it stays `Failed` until it is deleted.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
};

use k8s_openapi::{
    api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodCondition, PodStatus,
    },
    apimachinery::pkg::apis::meta::v1::Time,
    jiff::Timestamp,
};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use tokio::sync::{mpsc, oneshot};

use super::{Ctx, WorkerHandle};

/// The pod status reason of an evicted pod.
pub const REASON: &str = "Evicted";

/// What the pod manager is asked.
#[derive(Debug)]
pub enum Request {
    /// The pods its workers run now.
    Pods(oneshot::Sender<Vec<Pod>>),
    /// Evict the pod with this message; answered once it is reported.
    Evict {
        /// The pod.
        pod: Box<Pod>,
        /// The status message.
        message: String,
        /// Told when done.
        done: oneshot::Sender<()>,
    },
}

/// A handle on the pod manager ([`super::run`]).
#[derive(Debug, Clone)]
pub struct PodManager {
    tx: mpsc::UnboundedSender<Request>,
}

/// A handle and the receiving end [`super::run`] serves.
pub fn channel() -> (PodManager, mpsc::UnboundedReceiver<Request>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (PodManager { tx }, rx)
}

impl PodManager {
    /// The pods this node's workers run (as last seen from the API).
    pub async fn active_pods(&self) -> Vec<Pod> {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Request::Pods(reply)).is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// Evicts `pod` with `message`; returns once its containers are gone and its status is
    /// written (or writing it failed, which is logged).
    pub async fn evict(&self, pod: &Pod, message: String) {
        let (done, finished) = oneshot::channel();
        let request = Request::Evict {
            pod: Box::new(pod.clone()),
            message,
            done,
        };
        if self.tx.send(request).is_ok() {
            let _ = finished.await;
        }
    }
}

/// The uids of pods evicted by this agent: their workers are not started again.
#[derive(Debug, Default)]
pub struct Evicted(Mutex<HashSet<String>>);

impl Evicted {
    fn insert(&self, uid: &str) {
        if let Ok(mut set) = self.0.lock() {
            set.insert(uid.to_owned());
        }
    }

    /// Whether `pod` stays stopped: evicted (by this agent, or reported so before a restart)
    /// and not being deleted (a deleted pod gets a worker that removes it).
    pub fn holds(&self, pod: &Pod) -> bool {
        if pod.metadata.deletion_timestamp.is_some() {
            return false;
        }
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        self.0.lock().is_ok_and(|set| set.contains(uid)) || is_evicted(pod)
    }
}

/// Whether the pod's status says it was evicted (the kubelet's `PodIsEvicted`).
pub fn is_evicted(pod: &Pod) -> bool {
    pod.status.as_ref().is_some_and(|s| {
        s.phase.as_deref() == Some("Failed") && s.reason.as_deref() == Some(REASON)
    })
}

/// Serves one request in the pod manager's loop.
pub(super) fn handle(
    ctx: &Arc<Ctx>,
    workers: &mut HashMap<String, WorkerHandle>,
    request: Request,
) {
    match request {
        Request::Pods(reply) => {
            let pods = workers
                .values()
                .filter(|w| !w.task.is_finished())
                .filter_map(|w| w.tx.borrow().clone())
                .collect();
            let _ = reply.send(pods);
        }
        Request::Evict { pod, message, done } => {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            ctx.evicted.insert(&uid);
            let worker = workers.remove(&uid);
            if let Some(w) = &worker {
                // A gone pod's worker kills and removes its containers at once.
                let _ = w.tx.send(None);
            }
            let ctx = ctx.clone();
            tokio::spawn(async move {
                if let Some(w) = worker {
                    let _ = w.task.await;
                }
                report(&ctx, &pod, &uid, message).await;
                let _ = done.send(());
            });
        }
    }
}

/// Refuses a pod the node has not started (node pressure, [`crate::node::admission`]): it is
/// not run, and is reported `Failed`, reason `Evicted`, with a Warning event, as the kubelet's
/// `rejectPod` does.
pub(super) fn reject(ctx: &Arc<Ctx>, pod: Pod, message: String) {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    ctx.evicted.insert(&uid);
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let (namespace, name) = announce(&ctx, &pod, &uid, &message, "pod rejected");
        let status = serde_json::json!({"status": {
            "phase": "Failed",
            "reason": REASON,
            "message": format!("{}{message}", crate::node::admission::REJECTED),
            "qosClass": super::status::qos_class(&pod),
        }});
        write_status(&ctx, &namespace, &name, &Patch::Merge(status)).await;
    });
}

/// The status of an evicted pod: `Failed`, reason `Evicted`, the message, not ready, the
/// `DisruptionTarget` condition, and running containers shown terminated by the kill.
pub fn evicted_status(pod: &Pod, message: &str, now: Timestamp) -> PodStatus {
    let mut status = pod.status.clone().unwrap_or_default();
    let now = Time(now);
    status.phase = Some("Failed".into());
    status.reason = Some(REASON.into());
    status.message = Some(message.to_owned());
    let mut conditions = status.conditions.take().unwrap_or_default();
    conditions.retain(|c| c.type_ != "DisruptionTarget");
    for c in conditions
        .iter_mut()
        .filter(|c| matches!(c.type_.as_str(), "Ready" | "ContainersReady"))
    {
        if c.status != "False" {
            c.last_transition_time = Some(now.clone());
        }
        c.status = "False".into();
        c.reason = Some("PodFailed".into());
        c.message = None;
    }
    conditions.push(PodCondition {
        type_: "DisruptionTarget".into(),
        status: "True".into(),
        reason: Some("TerminationByKubelet".into()),
        message: Some(message.to_owned()),
        last_transition_time: Some(now.clone()),
        ..PodCondition::default()
    });
    status.conditions = Some(conditions);
    let kill = |cs: &mut ContainerStatus| {
        let Some(running) = cs.state.as_ref().and_then(|s| s.running.as_ref()) else {
            return;
        };
        cs.state = Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: 137,
                reason: Some("Error".into()),
                started_at: running.started_at.clone(),
                finished_at: Some(now.clone()),
                container_id: cs.container_id.clone(),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        });
        cs.ready = false;
        cs.started = Some(false);
    };
    for cs in status.container_statuses.iter_mut().flatten() {
        kill(cs);
    }
    for cs in status.init_container_statuses.iter_mut().flatten() {
        kill(cs);
    }
    status
}

/// Writes the evicted status and the `Evicted` event.
async fn report(ctx: &Ctx, pod: &Pod, uid: &str, message: String) {
    let (namespace, name) = announce(ctx, pod, uid, &message, "evicted");
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    // The stored status may have moved on since the eviction manager looked: start from it.
    let current = api
        .get_opt(&name)
        .await
        .ok()
        .flatten()
        .filter(|p| p.metadata.uid.as_deref() == Some(uid));
    let status = evicted_status(current.as_ref().unwrap_or(pod), &message, Timestamp::now());
    let patch = Patch::Merge(serde_json::json!({ "status": status }));
    write_status(ctx, &namespace, &name, &patch).await;
}

/// Logs `what` happened to `pod` and posts the Warning `Evicted` event; its namespace and name.
fn announce(ctx: &Ctx, pod: &Pod, uid: &str, message: &str, what: &str) -> (String, String) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    tracing::warn!(pod = %format!("{namespace}/{name}"), %message, "{what}");
    super::worker::post_pod_warning(ctx, pod, uid, REASON, message.to_owned());
    (namespace, name)
}

/// Patches pod `name`'s status, retrying a few times (a deleted pod needs none).
async fn write_status(ctx: &Ctx, namespace: &str, name: &str, patch: &Patch<serde_json::Value>) {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    for attempt in 0..5u32 {
        match api.patch_status(name, &PatchParams::default(), patch).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.code == 404 => return,
            Err(error) => {
                tracing::warn!(pod = %name, %error, attempt, "reporting the eviction");
                tokio::time::sleep(std::time::Duration::from_secs(1 << attempt)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_evicted_pod_is_failed_not_ready_and_its_containers_killed() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u1"},
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": "Ready", "status": "True"},
                    {"type": "PodScheduled", "status": "True"}
                ],
                "containerStatuses": [{
                    "name": "app", "image": "i", "imageID": "", "ready": true, "restartCount": 0,
                    "containerID": "docker://abc",
                    "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
                }]
            }
        }))
        .expect("pod");
        let message = "Usage of EmptyDir volume \"scratch\" exceeds the limit \"10Mi\". ";
        let now = Timestamp::from_second(1_800_000_000).expect("time");
        let status = evicted_status(&pod, message, now);
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        assert_eq!(status.reason.as_deref(), Some("Evicted"));
        assert_eq!(status.message.as_deref(), Some(message));
        let conditions = status.conditions.expect("conditions");
        let find = |t: &str| conditions.iter().find(|c| c.type_ == t).expect(t);
        assert_eq!(find("Ready").status, "False");
        assert_eq!(find("PodScheduled").status, "True");
        let disruption = find("DisruptionTarget");
        assert_eq!(disruption.status, "True");
        assert_eq!(disruption.reason.as_deref(), Some("TerminationByKubelet"));
        let cs = &status.container_statuses.expect("statuses")[0];
        let terminated = cs
            .state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .expect("terminated");
        assert_eq!(terminated.exit_code, 137);
        assert_eq!(terminated.container_id.as_deref(), Some("docker://abc"));
        assert!(!cs.ready);

        let mut evicted = pod.clone();
        evicted.status = Some(evicted_status(&pod, message, now));
        assert!(is_evicted(&evicted));
        assert!(!is_evicted(&pod));
        let set = Evicted::default();
        assert!(set.holds(&evicted), "reported evicted: stays stopped");
        assert!(!set.holds(&pod));
        set.insert("u1");
        assert!(
            set.holds(&pod),
            "evicted by this agent, status not yet written"
        );
        let mut deleting = evicted;
        deleting.metadata.deletion_timestamp = Some(Time(now));
        assert!(
            !set.holds(&deleting),
            "a deleted evicted pod gets a worker to remove it"
        );
    }
}

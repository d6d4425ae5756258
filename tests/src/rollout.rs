//! Workload rollouts timed as a user sees them: a DaemonSet or a StatefulSet created (or its
//! template changed) through the API, timed from that request to the watch event whose status
//! says the rollout is done. Used by `cargo xtask bench pods` on a netns testbed cluster.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use k8s_openapi::api::{
    apps::v1::{DaemonSet, DaemonSetStatus, StatefulSet, StatefulSetStatus},
    core::v1::{Pod, Service},
};
use kube::{
    Api, Resource,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams},
};
use serde::de::DeserializeOwned;

use crate::pods::{BUSYBOX, HTTPD};

/// Watches the object `name` of `api` until `done` holds for it, and returns the time from
/// `since` to that watch event; `Err` with the last status seen after `timeout`.
pub async fn watch_until<K>(
    api: &Api<K>,
    name: &str,
    since: Instant,
    timeout: Duration,
    done: impl Fn(&K) -> bool,
) -> Result<Duration, String>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let params = WatchParams::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(timeout.as_secs().clamp(1, 290) as u32);
    let deadline = since + timeout;
    let mut last: Option<K> = None;
    let mut watch = api
        .watch(&params, "0")
        .await
        .map_err(|e| format!("watch {name}: {e}"))?
        .boxed();
    while Instant::now() < deadline {
        let Ok(next) = tokio::time::timeout(Duration::from_secs(5), watch.next()).await else {
            continue;
        };
        let event = match next {
            Some(event) => event.map_err(|e| format!("watch {name}: {e}"))?,
            // The server ended the watch: start a new one (its first events are the object now).
            None => {
                watch = api
                    .watch(&params, "0")
                    .await
                    .map_err(|e| format!("watch {name}: {e}"))?
                    .boxed();
                continue;
            }
        };
        if let WatchEvent::Added(object) | WatchEvent::Modified(object) = event {
            if done(&object) {
                return Ok(since.elapsed());
            }
            last = Some(object);
        }
    }
    Err(format!(
        "{name} not done after {timeout:?}; last seen: {last:#?}"
    ))
}

/// Whether the status was written for the object's current generation.
fn observed<K: Resource>(object: &K, observed_generation: Option<i64>) -> bool {
    observed_generation >= object.meta().generation && object.meta().generation.is_some()
}

/// A DaemonSet `name` whose pods serve HTTP ([`HTTPD`]) behind a readiness probe (`httpGet /`,
/// `periodSeconds: 1`); `revision` goes into a template annotation, so a new value is a
/// template change that rolls out.
pub fn daemonset(name: &str, revision: u32) -> DaemonSet {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": {"bench": name}},
            "template": {
                "metadata": {"labels": {"bench": name},
                             "annotations": {"bench/revision": revision.to_string()}},
                "spec": {
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{
                        "name": "web", "image": HTTPD, "imagePullPolicy": "Never",
                        "readinessProbe": {"httpGet": {"path": "/", "port": 80},
                                           "periodSeconds": 1},
                    }],
                },
            },
        },
    }))
    .expect("a valid DaemonSet")
}

/// Every scheduled pod of the DaemonSet is Ready (and there is at least one).
pub fn daemonset_ready(status: &DaemonSetStatus) -> bool {
    status.desired_number_scheduled > 0
        && status.number_ready == status.desired_number_scheduled
        && status.current_number_scheduled == status.desired_number_scheduled
}

/// Every node runs a pod of the current template, and all of them are available (what
/// `kubectl rollout status` waits for).
pub fn daemonset_rolled_out(status: &DaemonSetStatus) -> bool {
    daemonset_ready(status)
        && status.updated_number_scheduled == Some(status.desired_number_scheduled)
        && status.number_available == Some(status.desired_number_scheduled)
}

/// What [`daemonset_rollout`] measured.
#[derive(Debug, Clone, Copy)]
pub struct DaemonSetRollout {
    /// Create -> every node's pod Ready.
    pub create: Duration,
    /// Template change -> every node runs a Ready pod of the new template.
    pub update: Duration,
    /// The nodes (desiredNumberScheduled).
    pub nodes: i32,
}

/// Creates the DaemonSet `name` (see [`daemonset`]), times it until its pods are Ready on every
/// node, then changes its template and times the rolling update; deletes it.
pub async fn daemonset_rollout(
    client: kube::Client,
    name: &str,
    timeout: Duration,
) -> Result<DaemonSetRollout, String> {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), "default");
    let started = Instant::now();
    api.create(&PostParams::default(), &daemonset(name, 1))
        .await
        .map_err(|e| format!("create DaemonSet {name}: {e}"))?;
    let done = |ds: &DaemonSet| {
        ds.status
            .as_ref()
            .is_some_and(|s| observed(ds, s.observed_generation) && daemonset_ready(s))
    };
    let create = watch_until(&api, name, started, timeout, done).await?;
    let nodes = api
        .get_status(name)
        .await
        .map_err(|e| format!("get DaemonSet {name}: {e}"))?
        .status
        .map_or(0, |s| s.desired_number_scheduled);

    let started = Instant::now();
    let patch = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
        "bench/revision": "2"}}}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("change the template of DaemonSet {name}: {e}"))?;
    let done = |ds: &DaemonSet| {
        ds.status
            .as_ref()
            .is_some_and(|s| observed(ds, s.observed_generation) && daemonset_rolled_out(s))
    };
    let update = watch_until(&api, name, started, timeout, done).await?;
    delete_and_wait(client, &api, name, timeout).await?;
    Ok(DaemonSetRollout {
        create,
        update,
        nodes,
    })
}

/// How a StatefulSet row is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatefulSetShape {
    /// Replicas.
    pub replicas: i32,
    /// `podManagementPolicy: Parallel` (else the default, `OrderedReady`).
    pub parallel: bool,
    /// A `volumeClaimTemplates` entry (1 Mi, the default class) mounted at `/data`.
    pub volume: bool,
}

/// A StatefulSet `name` (headless Service of the same name) of `shape`, one `sleep` container
/// of [`BUSYBOX`] per pod.
pub fn statefulset(name: &str, shape: StatefulSetShape) -> StatefulSet {
    let mut container = serde_json::json!({
        "name": "app", "image": BUSYBOX, "imagePullPolicy": "Never",
        "command": ["sleep", "3600"],
    });
    let mut spec = serde_json::json!({
        "serviceName": name,
        "replicas": shape.replicas,
        "selector": {"matchLabels": {"bench": name}},
        "template": {
            "metadata": {"labels": {"bench": name}},
            "spec": {"terminationGracePeriodSeconds": 0},
        },
    });
    if shape.parallel {
        spec["podManagementPolicy"] = "Parallel".into();
    }
    if shape.volume {
        container["volumeMounts"] = serde_json::json!([{"name": "data", "mountPath": "/data"}]);
        spec["volumeClaimTemplates"] = serde_json::json!([{
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Mi"}}},
        }]);
    }
    spec["template"]["spec"]["containers"] = serde_json::json!([container]);
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }))
    .expect("a valid StatefulSet")
}

/// All `replicas` pods exist, are of the current revision and are Ready.
pub fn statefulset_ready(status: &StatefulSetStatus, replicas: i32) -> bool {
    status.replicas == replicas && status.ready_replicas == Some(replicas)
}

/// Creates the StatefulSet `name` of `shape` and its headless Service, times it from the create
/// request until `readyReplicas` is the replica count, then deletes both and waits for the pods
/// to go (their claims stay: the StatefulSet's default retention policy).
pub async fn statefulset_rollout(
    client: kube::Client,
    name: &str,
    shape: StatefulSetShape,
    timeout: Duration,
) -> Result<Duration, String> {
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let service: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": "None", "selector": {"bench": name},
                 "ports": [{"name": "none", "port": 80}]},
    }))
    .expect("a valid Service");
    services
        .create(&PostParams::default(), &service)
        .await
        .map_err(|e| format!("create Service {name}: {e}"))?;
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), "default");
    let started = Instant::now();
    api.create(&PostParams::default(), &statefulset(name, shape))
        .await
        .map_err(|e| format!("create StatefulSet {name}: {e}"))?;
    let done = |sts: &StatefulSet| {
        sts.status.as_ref().is_some_and(|s| {
            observed(sts, s.observed_generation) && statefulset_ready(s, shape.replicas)
        })
    };
    let took = watch_until(&api, name, started, timeout, done).await?;
    delete_and_wait(client, &api, name, timeout).await?;
    services
        .delete(name, &DeleteParams::default())
        .await
        .map_err(|e| format!("delete Service {name}: {e}"))?;
    Ok(took)
}

/// Deletes the workload `name` (its pods go in the background) and waits until no pod labelled
/// `bench=<name>` is left.
async fn delete_and_wait<K>(
    client: kube::Client,
    api: &Api<K>,
    name: &str,
    timeout: Duration,
) -> Result<(), String>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.delete(name, &DeleteParams::background())
        .await
        .map_err(|e| format!("delete {name}: {e}"))?;
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let list = ListParams::default().labels(&format!("bench={name}"));
    let deadline = Instant::now() + timeout;
    loop {
        let left = pods
            .list(&list)
            .await
            .map_err(|e| format!("list the pods of {name}: {e}"))?
            .items
            .len();
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{left} pods of {name} still exist {timeout:?} after its deletion"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds_status(desired: i32, current: i32, ready: i32, updated: i32) -> DaemonSetStatus {
        DaemonSetStatus {
            desired_number_scheduled: desired,
            current_number_scheduled: current,
            number_ready: ready,
            number_available: Some(ready),
            updated_number_scheduled: Some(updated),
            ..DaemonSetStatus::default()
        }
    }

    #[test]
    fn a_daemonset_is_done_when_every_node_has_a_ready_pod_of_the_current_template() {
        // (status, ready, rolled out)
        let cases = [
            (ds_status(0, 0, 0, 0), false, false),
            (ds_status(3, 3, 2, 3), false, false),
            (ds_status(3, 2, 2, 2), false, false),
            (ds_status(3, 3, 3, 1), true, false),
            (ds_status(3, 3, 3, 3), true, true),
        ];
        for (status, ready, rolled_out) in cases {
            assert_eq!(daemonset_ready(&status), ready, "{status:?}");
            assert_eq!(daemonset_rolled_out(&status), rolled_out, "{status:?}");
        }
    }

    #[test]
    fn a_statefulset_is_done_when_all_replicas_are_ready() {
        let status = |replicas, ready| StatefulSetStatus {
            replicas,
            ready_replicas: Some(ready),
            ..StatefulSetStatus::default()
        };
        assert!(statefulset_ready(&status(30, 30), 30));
        assert!(!statefulset_ready(&status(30, 29), 30));
        assert!(!statefulset_ready(&status(29, 29), 30));
        assert!(!statefulset_ready(&status(31, 30), 30));
    }

    #[test]
    fn the_statefulset_shapes_set_the_policy_and_the_claim_template() {
        let plain = StatefulSetShape {
            replicas: 30,
            parallel: false,
            volume: false,
        };
        let sts = statefulset("s", plain);
        let spec = sts.spec.expect("spec");
        assert_eq!(spec.replicas, Some(30));
        assert_eq!(spec.pod_management_policy, None);
        assert!(spec.volume_claim_templates.is_none());
        let sts = statefulset(
            "s",
            StatefulSetShape {
                parallel: true,
                volume: true,
                ..plain
            },
        );
        let spec = sts.spec.expect("spec");
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        let claims = spec.volume_claim_templates.expect("claim templates");
        assert_eq!(claims[0].metadata.name.as_deref(), Some("data"));
        let mounts = spec.template.spec.expect("pod spec").containers[0]
            .volume_mounts
            .clone()
            .expect("mounts");
        assert_eq!(mounts[0].mount_path, "/data");
    }
}

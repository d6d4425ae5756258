//! The DaemonSet controller: one pod per eligible node (node selector, required node affinity,
//! taints against the template's tolerations plus the daemon defaults), placed by the scheduler
//! through a node-name affinity term; nodes that join later get theirs. Template changes roll
//! out with `RollingUpdate` (`maxUnavailable`, `maxSurge`) or wait for pods to be deleted
//! (`OnDelete`). Each template is a ControllerRevision ([`crate::history`]), so
//! `kubectl rollout history` lists them and `kubectl rollout undo` patches one back; pods carry
//! the revision's `controller-revision-hash`. Failed daemon pods are deleted and replaced with
//! a per-node back-off. The status counts (`desiredNumberScheduled`, `numberReady`,
//! `updatedNumberScheduled`, `numberAvailable`, ...) and `observedGeneration` let
//! `kubectl rollout status ds/<name>` finish.
//!
//! The decisions are in [`plan`]; this module lists, writes and requeues. Pods and revisions
//! are read with a fresh list on each reconcile (as [`crate::replicaset`] does), so there are
//! no creation expectations to track: a reconcile that created or deleted pods leaves the
//! rolling update to the next one, which sees the result.

pub mod plan;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{
    api::{
        apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus},
        core::v1::{Node, Pod},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{
        Controller,
        controller::Action,
        events::{Event, EventType, Recorder},
        reflector::ObjectRef,
        watcher,
    },
};
use serde_json::json;

use crate::{ApiContext, Error, Result, history, is_status, pods};

/// The controller's name in events.
const COMPONENT: &str = "daemonset-controller";
/// Pods created or deleted per reconcile at most (Kubernetes' `BurstReplicas`).
const BURST: usize = 250;

struct Ctx {
    client: Client,
    recorder: Recorder,
    backoff: Mutex<plan::Backoff>,
}

/// Runs the controller: DaemonSets, their pods and revisions, and every Node change.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let controller = Controller::new(
        Api::<DaemonSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let sets = controller.store();
    let selector = |ds: &DaemonSet| crate::claim::selector_of(&ds.spec.as_ref()?.selector);
    let controller = controller
        .watches(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            crate::claim::owners_of(sets.clone(), selector),
        )
        .watches(
            Api::<ControllerRevision>::all(client.clone()),
            watcher::Config::default(),
            crate::claim::owners_of(sets.clone(), selector),
        )
        .watches(
            Api::<Node>::all(client.clone()),
            watcher::Config::default(),
            move |_node| {
                sets.state()
                    .iter()
                    .map(|ds| ObjectRef::from_obj(&**ds))
                    .collect::<Vec<_>>()
            },
        );
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(client.clone(), COMPONENT.into()),
        client,
        backoff: Mutex::new(plan::Backoff::default()),
    });
    crate::drive("daemonset", controller.run(reconcile, crate::retry, ctx)).await;
    Ok(())
}

/// Records an event on the DaemonSet; a failure is only logged.
async fn event(ctx: &Ctx, ds: &DaemonSet, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Sync".to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &ds.object_ref(&())).await {
        tracing::debug!(error = %crate::error_chain(&error), "cannot record an event");
    }
}

fn now_ms() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Ctx>) -> Result<Action> {
    let namespace = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let Some(spec) = ds.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    // Kubernetes cannot compute the status of a DaemonSet being deleted (its revisions may be
    // gone first), so it leaves it alone; so does keelson.
    if pods::is_terminating(&ds.metadata) {
        return Ok(Action::await_change());
    }
    if spec
        .selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && spec
            .selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty)
    {
        event(
            &ctx,
            &ds,
            EventType::Warning,
            "SelectingAll",
            "This daemon set is selecting all pods. A non-empty selector is required.".to_owned(),
        )
        .await;
        return Ok(Action::await_change());
    }
    let selector =
        pods::parse_selector(&spec.selector, || format!("DaemonSet {namespace}/{name}"))?;
    let nodes: Vec<Node> = Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .action(|| format!("list the nodes for DaemonSet {namespace}/{name}"))?
        .items;
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    // Every pod of the namespace: orphans the selector matches are adopted, own pods it no
    // longer matches released.
    let list_pods = || async {
        let candidates = pod_api
            .list(&ListParams::default())
            .await
            .action(|| format!("list the pods of DaemonSet {namespace}/{name}"))?
            .items;
        crate::claim::claim(&ctx.client, ds.as_ref(), candidates, |p: &Pod| {
            selector.matches(p.labels())
        })
        .await
    };

    let Some((hash, old_revisions)) = construct_history(&ctx, &ds, &selector).await? else {
        return Ok(Action::requeue(Duration::from_millis(200)));
    };

    // Place, replace failed pods, prune.
    let owned = list_pods().await?;
    let by_node = plan::pods_by_node(&owned);
    let now = jiff::Timestamp::now().as_second();
    let placement = plan::manage(&ds, &nodes, &by_node, &hash, now);
    let mut delete = placement.delete.clone();
    let mut requeue: Option<Duration> = None;
    let mut later = |after: Duration| {
        requeue = Some(requeue.map_or(after, |r| r.min(after)));
    };
    for (node, pod) in &placement.failed {
        let key = plan::backoff_key(&ds, node);
        let waiting = {
            let mut backoff = ctx.backoff.lock().unwrap_or_else(|e| e.into_inner());
            backoff.gc(now_ms());
            match backoff.waiting(&key, now_ms()) {
                Some(delay) => Some(delay),
                None => {
                    backoff.next(&key, now_ms());
                    None
                }
            }
        };
        match waiting {
            Some(delay) => later(delay),
            None => {
                event(
                    &ctx,
                    &ds,
                    EventType::Warning,
                    "FailedDaemonPod",
                    format!(
                        "Found failed daemon pod {namespace}/{pod} on node {node}, will try to kill it"
                    ),
                )
                .await;
                delete.push(pod.clone());
            }
        }
    }
    let acted = sync_nodes(&ctx, &ds, &delete, &placement.create_on, &hash).await?;
    if acted {
        later(Duration::from_millis(500));
    } else if plan::is_rolling_update(&ds) {
        let (delete, create_on) = plan::rolling_update(&ds, &nodes, &by_node, &hash, now);
        if sync_nodes(&ctx, &ds, &delete, &create_on, &hash).await? {
            later(Duration::from_millis(500));
        }
    }

    // History: old revisions no live pod uses, oldest first, beyond the limit.
    let owned = list_pods().await?;
    let live_hashes: BTreeSet<&str> = owned
        .iter()
        .filter_map(|p| p.labels().get(plan::REVISION_HASH_LABEL))
        .map(String::as_str)
        .collect();
    let live: BTreeSet<String> = old_revisions
        .iter()
        .filter(|r| {
            r.labels()
                .get(plan::REVISION_HASH_LABEL)
                .is_some_and(|h| live_hashes.contains(h.as_str()))
        })
        .map(ResourceExt::name_any)
        .collect();
    let revisions_api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &namespace);
    for old in history::to_truncate(&old_revisions, &live, spec.revision_history_limit) {
        match revisions_api.delete(&old, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => {
                return Err(e).action(|| format!("delete old revision {namespace}/{old}"));
            }
        }
    }

    // Status, from a fresh look after the writes.
    let by_node = plan::pods_by_node(&owned);
    let counts = plan::status(&ds, &nodes, &by_node, &hash, now);
    write_status(&ctx, &ds, counts).await?;
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    if min_ready > 0 && counts.ready != counts.available {
        later(Duration::from_secs(u64::try_from(min_ready).unwrap_or(1)));
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Finds (or creates) the revision of the current template and returns its hash and the other
/// revisions (`constructHistory`): duplicates of the current one are merged into the newest
/// (their pods relabelled), and the current one is renumbered above the others. `None` after a
/// hash collision (the count is bumped; the next reconcile uses a new name).
async fn construct_history(
    ctx: &Ctx,
    ds: &DaemonSet,
    selector: &keelson_api::selectors::LabelSelector,
) -> Result<Option<(String, Vec<ControllerRevision>)>> {
    let namespace = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let spec = ds
        .spec
        .as_ref()
        .ok_or_else(|| Error::Invalid(format!("DaemonSet {namespace}/{name} has no spec")))?;
    let api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &namespace);
    let candidates = api
        .list(&ListParams::default())
        .await
        .action(|| format!("list the revisions of DaemonSet {namespace}/{name}"))?
        .items;
    let revisions = crate::claim::claim(&ctx.client, ds, candidates, |r: &ControllerRevision| {
        selector.matches(r.labels())
    })
    .await?;
    let data = history::template_patch(&spec.template);
    let current: Vec<&ControllerRevision> = history::equal_revisions(&revisions, &data);
    let current_names: BTreeSet<String> = current.iter().map(|r| r.name_any()).collect();
    let old: Vec<ControllerRevision> = revisions
        .iter()
        .filter(|r| !current_names.contains(&r.name_any()))
        .cloned()
        .collect();
    let next = history::next_revision(&old);
    let hash_of = |r: &ControllerRevision| {
        r.labels()
            .get(plan::REVISION_HASH_LABEL)
            .or_else(|| r.labels().get(history::HASH_LABEL))
            .cloned()
            .unwrap_or_else(|| r.name_any())
    };
    let Some(keep) = current.last().copied() else {
        let collision = ds.status.as_ref().and_then(|s| s.collision_count);
        let hash = history::hash(&data, collision);
        let mut labels = spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        labels.insert(plan::REVISION_HASH_LABEL.to_owned(), hash.clone());
        let mut revision = history::new_revision(
            &ds.metadata,
            pods::owner_reference("apps/v1", "DaemonSet", &ds.metadata),
            labels,
            data.clone(),
            next,
            collision,
        );
        revision.metadata.annotations = ds.metadata.annotations.clone();
        return match api.create(&PostParams::default(), &revision).await {
            Ok(_) => Ok(Some((hash, old))),
            Err(e) if is_status(&e, 409) => {
                let existing = api
                    .get(&revision.name_any())
                    .await
                    .action(|| format!("read revision {namespace}/{}", revision.name_any()))?;
                if existing.data.as_ref().is_some_and(|d| d.0 == data) {
                    return Ok(Some((hash, old)));
                }
                bump_collision_count(ctx, ds).await?;
                Ok(None)
            }
            Err(e) => {
                Err(e).action(|| format!("create a revision for DaemonSet {namespace}/{name}"))
            }
        };
    };
    let hash = hash_of(keep);
    // Duplicates: their pods move to the kept revision, then they go.
    let label = plan::REVISION_HASH_LABEL;
    for duplicate in current.iter().filter(|r| r.name_any() != keep.name_any()) {
        let stale = hash_of(duplicate);
        let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        let pods = pod_api
            .list(&ListParams::default().labels(&format!("{}={stale}", plan::REVISION_HASH_LABEL)))
            .await
            .action(|| {
                format!(
                    "list the pods of revision {namespace}/{}",
                    duplicate.name_any()
                )
            })?;
        for pod in pods
            .items
            .iter()
            .filter(|p| pods::controlled_by(&p.metadata, &uid))
        {
            pod_api
                .patch(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"labels": {label: hash}}})),
                )
                .await
                .map(drop)
                .or_else(|e| if is_status(&e, 404) { Ok(()) } else { Err(e) })
                .action(|| format!("relabel pod {namespace}/{}", pod.name_any()))?;
        }
        api.delete(&duplicate.name_any(), &DeleteParams::default())
            .await
            .map(drop)
            .or_else(|e| if is_status(&e, 404) { Ok(()) } else { Err(e) })
            .action(|| {
                format!(
                    "delete duplicate revision {namespace}/{}",
                    duplicate.name_any()
                )
            })?;
    }
    if keep.revision < next {
        api.patch(
            &keep.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"revision": next})),
        )
        .await
        .action(|| format!("renumber revision {namespace}/{}", keep.name_any()))?;
    }
    Ok(Some((hash, old)))
}

/// A revision of another template holds the current one's name: the DaemonSet's
/// `status.collisionCount` goes up by one, so the next name differs.
async fn bump_collision_count(ctx: &Ctx, ds: &DaemonSet) -> Result<()> {
    let namespace = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut fresh = api
        .get(&name)
        .await
        .action(|| format!("read DaemonSet {namespace}/{name}"))?;
    let seen = ds.status.as_ref().and_then(|s| s.collision_count);
    let status = fresh.status.get_or_insert_with(DaemonSetStatus::default);
    // A stale count is no collision: the next reconcile sees the new one.
    if status.collision_count != seen {
        return Ok(());
    }
    status.collision_count = Some(seen.unwrap_or(0) + 1);
    tracing::info!(daemonset = %format!("{namespace}/{name}"), count = ?status.collision_count, "revision hash collision; bumping collisionCount");
    api.replace_status(&name, &PostParams::default(), &fresh)
        .await
        .map(drop)
        .action(|| format!("update the collisionCount of DaemonSet {namespace}/{name}"))
}

/// Deletes `delete` and creates a pod for each of `create_on` (at most [`BURST`] of each);
/// whether anything was written.
async fn sync_nodes(
    ctx: &Ctx,
    ds: &DaemonSet,
    delete: &[String],
    create_on: &[String],
    hash: &str,
) -> Result<bool> {
    if delete.is_empty() && create_on.is_empty() {
        return Ok(false);
    }
    let namespace = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let template = plan::pod_template(ds, hash);
    let meta = template.metadata.clone().unwrap_or_default();
    for node in create_on.iter().take(BURST) {
        let mut spec = template.spec.clone().unwrap_or_default();
        spec.affinity = Some(plan::pin_to_node(spec.affinity.take(), node));
        let pod = Pod {
            metadata: ObjectMeta {
                generate_name: Some(format!("{name}-")),
                namespace: Some(namespace.clone()),
                labels: meta.labels.clone(),
                annotations: meta.annotations.clone(),
                owner_references: Some(vec![pods::owner_reference(
                    "apps/v1",
                    "DaemonSet",
                    &ds.metadata,
                )]),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
            status: None,
        };
        match pod_api.create(&PostParams::default(), &pod).await {
            Ok(_) => {}
            // The namespace is going away: nothing to create in it.
            Err(e) if is_status(&e, 403) => break,
            Err(e) => {
                return Err(e).action(|| {
                    format!("create a pod on node {node} for DaemonSet {namespace}/{name}")
                });
            }
        }
    }
    for pod in delete.iter().take(BURST) {
        match pod_api.delete(pod, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(e).action(|| format!("delete pod {namespace}/{pod}")),
        }
    }
    Ok(true)
}

/// Writes the status when it differs (a PUT, as Kubernetes does; on a conflict, once more on
/// a fresh read).
async fn write_status(ctx: &Ctx, ds: &DaemonSet, counts: plan::Counts) -> Result<()> {
    let namespace = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let apply = |status: &mut DaemonSetStatus| {
        status.desired_number_scheduled = counts.desired;
        status.current_number_scheduled = counts.current;
        status.number_misscheduled = counts.misscheduled;
        status.number_ready = counts.ready;
        status.updated_number_scheduled = Some(counts.updated);
        status.number_available = Some(counts.available);
        status.number_unavailable = Some(counts.unavailable);
        status.observed_generation = ds.metadata.generation;
    };
    let old = ds.status.clone().unwrap_or_default();
    let mut next = old.clone();
    apply(&mut next);
    if next == old {
        return Ok(());
    }
    let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut object = ds.clone();
    for attempt in 0..2 {
        apply(object.status.get_or_insert_with(DaemonSetStatus::default));
        match api
            .replace_status(&name, &PostParams::default(), &object)
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if is_status(&e, 404) => return Ok(()),
            Err(e) if is_status(&e, 409) && attempt == 0 => {
                object = api
                    .get(&name)
                    .await
                    .action(|| format!("read DaemonSet {namespace}/{name}"))?;
            }
            Err(e) => {
                return Err(e)
                    .action(|| format!("update the status of DaemonSet {namespace}/{name}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

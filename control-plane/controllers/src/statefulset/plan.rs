//! What a StatefulSet needs next, decided from its pods alone (no IO), after Kubernetes'
//! `pkg/controller/statefulset` (`stateful_set_control.go`, `stateful_set_utils.go`):
//!
//! - the pods of ordinals `[start, start + replicas)` are kept, named `<set>-<ordinal>`; pods of
//!   the set with other ordinals are condemned and removed, highest ordinal first;
//! - `OrderedReady` creates one pod at a time, in ordinal order, each once its predecessors are
//!   Running and Ready (and available for `minReadySeconds`), and removes condemned pods one at
//!   a time; `Parallel` creates and removes them all at once;
//! - a failed (or succeeded) pod is deleted, to be created again;
//! - `RollingUpdate` deletes the highest-ordinal pod not at the update revision, down to the
//!   `partition`, one at a time, waiting for each to come back available; `OnDelete` leaves
//!   the replacement to whoever deletes the pods;
//! - every pod has its own claims `<template>-<set>-<ordinal>` from `volumeClaimTemplates`,
//!   created before the pod; `persistentVolumeClaimRetentionPolicy` is carried by the claims'
//!   owner references (a controller reference to the set for `whenDeleted: Delete`, to a
//!   scaled-down pod for `whenScaled: Delete`), so garbage collection removes them.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{StatefulSet, StatefulSetStatus},
        core::v1::{
            PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
        },
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};

use crate::{pods, replicaset};

/// The label holding a pod's name (Kubernetes' `StatefulSetPodNameLabel`).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label holding a pod's ordinal (Kubernetes' `PodIndexLabel`).
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The label holding the name of the ControllerRevision a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// One ControllerRevision of the set: its name and the pod template it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Revision {
    /// The ControllerRevision's name, what pods carry in [`REVISION_LABEL`].
    pub name: String,
    /// The pod template of that revision.
    pub template: PodTemplateSpec,
}

/// Why a pod is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// It failed or finished: it is created again on a later pass.
    Finished,
    /// Its ordinal is beyond the wanted range (scale down).
    ScaleDown,
    /// It is not at the update revision (rolling update).
    Update,
}

/// One write the controller makes.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Create the claims that do not exist yet, then the pod.
    Create {
        /// The pod to create.
        pod: Box<Pod>,
        /// Its claims from `volumeClaimTemplates`.
        claims: Vec<PersistentVolumeClaim>,
    },
    /// Create the claims of an existing pending pod that do not exist (someone deleted them).
    EnsureClaims {
        /// The pod's claims.
        claims: Vec<PersistentVolumeClaim>,
    },
    /// Delete a pod.
    Delete {
        /// The pod's name.
        name: String,
        /// Why.
        reason: Reason,
    },
}

/// The writes to make now and the status to report.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The writes, in order.
    pub steps: Vec<Step>,
    /// The new status.
    pub status: StatefulSetStatus,
    /// Whether a ready pod still waits out `minReadySeconds` (the controller looks again soon:
    /// no pod event marks the moment it becomes available).
    pub waiting_for_available: bool,
}

/// `spec.ordinals.start` (0 when unset).
pub fn start_ordinal(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.ordinals.as_ref())
        .and_then(|o| o.start)
        .unwrap_or(0)
        .max(0)
}

/// `spec.replicas` (1 when unset).
pub fn wanted_replicas(set: &StatefulSet) -> i32 {
    set.spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0)
}

/// The ordinal of a pod named `<set>-<ordinal>`; `None` for any other name (such pods are not
/// the set's, as Kubernetes' `getParentNameAndOrdinal`).
pub fn ordinal_of(set_name: &str, pod_name: &str) -> Option<i32> {
    let (parent, digits) = pod_name.rsplit_once('-')?;
    if parent != set_name || digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `<set>-<ordinal>`.
pub fn pod_name(set_name: &str, ordinal: i32) -> String {
    format!("{set_name}-{ordinal}")
}

/// `<template>-<set>-<ordinal>`, the claim a pod's volume `<template>` points to.
pub fn claim_name(template: &str, set_name: &str, ordinal: i32) -> String {
    format!("{template}-{set_name}-{ordinal}")
}

fn set_name(set: &StatefulSet) -> &str {
    set.metadata.name.as_deref().unwrap_or_default()
}

fn claim_templates(set: &StatefulSet) -> &[PersistentVolumeClaim] {
    set.spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_deref())
        .unwrap_or_default()
}

/// The claims of the pod of `ordinal`: each template copied under its pod-specific name, in
/// the set's namespace, with the set's `matchLabels` added to its labels.
pub fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let selector_labels = set
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default();
    claim_templates(set)
        .iter()
        .map(|template| {
            let mut claim = template.clone();
            let template_name = template.metadata.name.clone().unwrap_or_default();
            claim.metadata.name = Some(claim_name(&template_name, set_name(set), ordinal));
            claim.metadata.namespace = set.metadata.namespace.clone();
            let mut labels = claim.metadata.labels.take().unwrap_or_default();
            labels.extend(selector_labels.clone());
            claim.metadata.labels = Some(labels);
            claim.status = None;
            claim
        })
        .collect()
}

/// The pod of `ordinal` from `revision`: the template with the set as controller, the pod's
/// identity (name, `hostname`, `subdomain` = `serviceName`, the name/index/revision labels) and
/// a volume per claim template pointing at the pod's claim (replacing a template volume of the
/// same name).
pub fn new_pod(set: &StatefulSet, revision: &Revision, ordinal: i32) -> Pod {
    let name = pod_name(set_name(set), ordinal);
    let template_meta = revision.template.metadata.clone().unwrap_or_default();
    let mut labels = template_meta.labels.unwrap_or_default();
    labels.insert(POD_NAME_LABEL.to_owned(), name.clone());
    labels.insert(POD_INDEX_LABEL.to_owned(), ordinal.to_string());
    labels.insert(REVISION_LABEL.to_owned(), revision.name.clone());
    let mut spec = revision.template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    spec.subdomain = set
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty());
    let claims: Vec<(String, String)> = claim_templates(set)
        .iter()
        .map(|t| {
            let template = t.metadata.name.clone().unwrap_or_default();
            let claim = claim_name(&template, set_name(set), ordinal);
            (template, claim)
        })
        .collect();
    let mut volumes: Vec<Volume> = claims
        .iter()
        .map(|(template, claim)| Volume {
            name: template.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: None,
            }),
            ..Volume::default()
        })
        .collect();
    volumes.extend(
        spec.volumes
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|v| !claims.iter().any(|(template, _)| *template == v.name)),
    );
    spec.volumes = (!volumes.is_empty()).then_some(volumes);
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: set.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: template_meta.annotations,
            finalizers: template_meta.finalizers,
            owner_references: Some(vec![pods::owner_reference(
                "apps/v1",
                "StatefulSet",
                &set.metadata,
            )]),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// The revision a pod carries ([`REVISION_LABEL`]).
pub fn revision_of(pod: &Pod) -> &str {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map_or("", String::as_str)
}

fn running_and_ready(pod: &Pod) -> bool {
    pods::phase(pod) == "Running" && pods::is_ready(pod)
}

fn available(pod: &Pod, min_ready_seconds: i32, now: i64) -> bool {
    running_and_ready(pod) && replicaset::is_available(pod, min_ready_seconds, now)
}

fn finished(pod: &Pod) -> bool {
    matches!(pods::phase(pod), "Failed" | "Succeeded")
}

fn rolling_update(set: &StatefulSet) -> bool {
    strategy_type(set) == "RollingUpdate"
}

fn strategy_type(set: &StatefulSet) -> &str {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.type_.as_deref())
        .unwrap_or("RollingUpdate")
}

fn partition(set: &StatefulSet) -> Option<i32> {
    set.spec
        .as_ref()
        .and_then(|s| s.update_strategy.as_ref())
        .and_then(|u| u.rolling_update.as_ref())
        .map(|r| r.partition.unwrap_or(0).max(0))
}

/// Whether the pod of `ordinal` is made from the current revision rather than the update
/// revision: below the partition of a rolling update (or, without `rollingUpdate`, below
/// `currentReplicas`).
fn keeps_current_revision(set: &StatefulSet, ordinal: i32) -> bool {
    if !rolling_update(set) {
        return false;
    }
    let start = start_ordinal(set);
    match partition(set) {
        Some(partition) => ordinal < start.saturating_add(partition),
        None => {
            let current = set
                .status
                .as_ref()
                .and_then(|s| s.current_replicas)
                .unwrap_or(0);
            ordinal < start.saturating_add(current)
        }
    }
}

/// The status the pods give: counts over every pod of the set, then, once a rolling update has
/// every wanted pod updated and ready, the update revision becomes the current one.
pub fn status(
    set: &StatefulSet,
    current: &Revision,
    update: &Revision,
    collision_count: i32,
    members: &[&Pod],
    now: i64,
) -> StatefulSetStatus {
    let min_ready = set
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let count = |f: &dyn Fn(&Pod) -> bool| {
        i32::try_from(members.iter().filter(|p| f(p)).count()).unwrap_or(i32::MAX)
    };
    let live = |p: &Pod| !pods::is_terminating(&p.metadata);
    let replicas = count(&|_| true);
    let ready = count(&running_and_ready);
    let mut current_replicas = count(&|p| live(p) && revision_of(p) == current.name);
    let updated = count(&|p| live(p) && revision_of(p) == update.name);
    let mut current_revision = current.name.clone();
    let wanted = wanted_replicas(set);
    if rolling_update(set) && updated == wanted && ready == wanted && replicas == wanted {
        current_replicas = updated;
        current_revision = update.name.clone();
    }
    StatefulSetStatus {
        replicas,
        ready_replicas: Some(ready),
        available_replicas: Some(count(&|p| available(p, min_ready, now))),
        current_replicas: Some(current_replicas),
        updated_replicas: Some(updated),
        current_revision: Some(current_revision),
        update_revision: Some(update.name.clone()),
        observed_generation: set.metadata.generation,
        collision_count: Some(collision_count),
        conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
    }
}

/// Decides the next writes for `set` whose pods (controlled by it) are `pods`, at `current`
/// and `update` revisions, at time `now` (seconds).
pub fn decide(
    set: &StatefulSet,
    current: &Revision,
    update: &Revision,
    collision_count: i32,
    pods: &[Pod],
    now: i64,
) -> Plan {
    let name = set_name(set);
    let members: Vec<(i32, &Pod)> = pods
        .iter()
        .filter_map(|p| Some((ordinal_of(name, p.metadata.name.as_deref()?)?, p)))
        .collect();
    let member_pods: Vec<&Pod> = members.iter().map(|(_, p)| *p).collect();
    let status = status(set, current, update, collision_count, &member_pods, now);
    let min_ready = set
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    let waiting_for_available = member_pods
        .iter()
        .any(|p| running_and_ready(p) && !available(p, min_ready, now));
    let mut plan = Plan {
        steps: Vec::new(),
        status,
        waiting_for_available,
    };
    if set.metadata.deletion_timestamp.is_some() {
        return plan;
    }
    let start = start_ordinal(set);
    let end = start.saturating_add(wanted_replicas(set));
    let monotonic = set
        .spec
        .as_ref()
        .and_then(|s| s.pod_management_policy.as_deref())
        != Some("Parallel");
    let mut slots: BTreeMap<i32, &Pod> = BTreeMap::new();
    let mut condemned: Vec<(i32, &Pod)> = Vec::new();
    for (ordinal, pod) in &members {
        if (start..end).contains(ordinal) {
            slots.insert(*ordinal, pod);
        } else {
            condemned.push((*ordinal, pod));
        }
    }
    condemned.sort_by_key(|(ordinal, _)| std::cmp::Reverse(*ordinal));
    let unavailable = |pod: Option<&Pod>| pod.is_none_or(|p| !available(p, min_ready, now));
    // The first unavailable pod: of the wanted range, else of the condemned, lowest first.
    let first_unavailable: Option<i32> = (start..end)
        .find(|o| unavailable(slots.get(o).copied()))
        .or_else(|| {
            condemned
                .iter()
                .rev()
                .find(|(_, p)| unavailable(Some(p)))
                .map(|(o, _)| *o)
        });

    for ordinal in start..end {
        let Some(pod) = slots.get(&ordinal).copied() else {
            let revision = if keeps_current_revision(set, ordinal) {
                current
            } else {
                update
            };
            plan.steps.push(Step::Create {
                pod: Box::new(new_pod(set, revision, ordinal)),
                claims: claims_for(set, ordinal),
            });
            if monotonic {
                return plan;
            }
            continue;
        };
        if finished(pod) {
            if !pods::is_terminating(&pod.metadata) {
                plan.steps.push(Step::Delete {
                    name: pod.metadata.name.clone().unwrap_or_default(),
                    reason: Reason::Finished,
                });
            }
            if monotonic {
                return plan;
            }
            continue;
        }
        if pods::phase(pod) == "Pending" && !claim_templates(set).is_empty() {
            plan.steps.push(Step::EnsureClaims {
                claims: claims_for(set, ordinal),
            });
        }
        if monotonic && (pods::is_terminating(&pod.metadata) || !available(pod, min_ready, now)) {
            return plan;
        }
    }

    for (ordinal, pod) in &condemned {
        if pods::is_terminating(&pod.metadata) {
            if monotonic {
                return plan;
            }
            continue;
        }
        if monotonic && !available(pod, min_ready, now) && first_unavailable != Some(*ordinal) {
            return plan;
        }
        plan.steps.push(Step::Delete {
            name: pod.metadata.name.clone().unwrap_or_default(),
            reason: Reason::ScaleDown,
        });
        if monotonic {
            return plan;
        }
    }

    if !rolling_update(set) {
        return plan;
    }
    let update_min = start.saturating_add(partition(set).unwrap_or(0));
    for ordinal in (update_min..end).rev() {
        let Some(pod) = slots.get(&ordinal).copied() else {
            return plan;
        };
        if revision_of(pod) != update.name && !pods::is_terminating(&pod.metadata) {
            plan.steps.push(Step::Delete {
                name: pod.metadata.name.clone().unwrap_or_default(),
                reason: Reason::Update,
            });
            return plan;
        }
        if !available(pod, min_ready, now) || pods::is_terminating(&pod.metadata) {
            return plan;
        }
    }
    plan
}

/// The retention policy as `(whenDeleted, whenScaled)`, each `true` for `Delete`.
pub fn retention(set: &StatefulSet) -> (bool, bool) {
    let policy = set
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.as_ref());
    let delete = |value: Option<&String>| value.is_some_and(|v| v == "Delete");
    (
        delete(policy.and_then(|p| p.when_deleted.as_ref())),
        delete(policy.and_then(|p| p.when_scaled.as_ref())),
    )
}

fn is_ref_to(reference: &OwnerReference, kind: &str, group: &str, name: &str) -> bool {
    let ref_group = reference.api_version.split_once('/').map_or("", |(g, _)| g);
    reference.kind == kind && ref_group == group && reference.name == name
}

/// The owner references a claim of `pod` should have under the set's retention policy, given
/// those it has (`refs`): references to the set or the pod (by name) are dropped, then a
/// controller reference to the set is added for `whenDeleted: Delete` while the pod is in the
/// wanted range, and one to the pod for `whenScaled: Delete` once it is not. A claim controlled
/// by anything else only loses the references to the set and the pod.
pub fn claim_owners(
    set: &StatefulSet,
    pod: &Pod,
    in_range: bool,
    refs: &[OwnerReference],
) -> Vec<OwnerReference> {
    let set_uid = set.metadata.uid.as_deref().unwrap_or_default();
    let pod_uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let foreign_controller = refs
        .iter()
        .any(|r| r.controller == Some(true) && r.uid != set_uid && r.uid != pod_uid);
    let mut kept: Vec<OwnerReference> = refs
        .iter()
        .filter(|r| {
            !is_ref_to(r, "StatefulSet", "apps", set_name(set))
                && !is_ref_to(r, "Pod", "", pod_name)
        })
        .cloned()
        .collect();
    if foreign_controller {
        return kept;
    }
    let (when_deleted, when_scaled) = retention(set);
    if when_deleted && (in_range || !when_scaled) {
        kept.push(pods::owner_reference(
            "apps/v1",
            "StatefulSet",
            &set.metadata,
        ));
    }
    if when_scaled && !in_range && !pod_uid.is_empty() {
        kept.push(pods::owner_reference("v1", "Pod", &pod.metadata));
    }
    kept
}

#[cfg(test)]
mod tests;

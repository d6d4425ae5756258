//! The StatefulSet controller: pods with stable names, hostnames and claims, created and
//! removed in ordinal order, rolled over revision by revision (see [`plan`] for the rules).
//!
//! Each reconcile finds (or records) the ControllerRevision of the current template through
//! [`crate::history`], lists the set's pods afresh (so a pod created a moment ago is never
//! created twice), applies [`plan::decide`]'s steps, keeps the claims' owner references in line
//! with the retention policy, trims old revisions and writes the status.

pub mod plan;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use k8s_openapi::api::{
    apps::v1::{ControllerRevision, StatefulSet},
    core::v1::{PersistentVolumeClaim, Pod},
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::json;

use crate::{ApiContext, Error, Result, history, is_status, pods};
use plan::{Revision, Step};

/// How many times a revision name collision is retried with a bumped `collisionCount`.
const COLLISION_ATTEMPTS: i32 = 5;

struct Ctx {
    client: Client,
}

/// Runs the controller.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let controller = Controller::new(
        Api::<StatefulSet>::all(client.clone()),
        watcher::Config::default(),
    );
    let sets = controller.store();
    let selector = |set: &StatefulSet| crate::claim::selector_of(&set.spec.as_ref()?.selector);
    let controller = controller
        .watches(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            crate::claim::owners_of(sets.clone(), selector),
        )
        .watches(
            Api::<ControllerRevision>::all(client.clone()),
            watcher::Config::default(),
            crate::claim::owners_of(sets, selector),
        );
    let ctx = Arc::new(Ctx { client });
    crate::drive("statefulset", controller.run(reconcile, crate::retry, ctx)).await;
    Ok(())
}

/// The set's identity in messages: `StatefulSet <ns>/<name>`.
fn describe(set: &StatefulSet) -> String {
    format!(
        "StatefulSet {}/{}",
        set.namespace().unwrap_or_default(),
        set.name_any()
    )
}

/// The current and update revisions and the collision count: the update revision is the
/// newest one holding the set's template (renumbered to the top if an older one does, as a
/// `rollout undo` expects), created when none does; the current one is the one the status
/// names, else the update revision.
async fn revisions(
    api: &Api<ControllerRevision>,
    set: &StatefulSet,
    existing: &[ControllerRevision],
) -> Result<(Revision, Revision, i32)> {
    let spec = set.spec.clone().unwrap_or_default();
    let data = history::template_patch(&spec.template);
    let mut collision_count = set
        .status
        .as_ref()
        .and_then(|s| s.collision_count)
        .unwrap_or(0);
    let next = history::next_revision(existing);
    let update = match history::equal_revisions(existing, &data).last() {
        Some(equal) => {
            let name = equal.metadata.name.clone().unwrap_or_default();
            let newest = existing.iter().map(|r| r.revision).max().unwrap_or(0);
            if equal.revision < newest {
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"revision": next})),
                )
                .await
                .action(|| format!("renumber ControllerRevision {name}"))?;
            }
            (*equal).clone()
        }
        None => create_revision(api, set, data, next, &mut collision_count).await?,
    };
    let update = Revision {
        name: update.metadata.name.clone().unwrap_or_default(),
        template: history::template_of(&update).unwrap_or_else(|| spec.template.clone()),
    };
    let current_name = set.status.as_ref().and_then(|s| s.current_revision.clone());
    let current = existing
        .iter()
        .find(|r| r.metadata.name.is_some() && r.metadata.name == current_name)
        .map_or_else(
            || update.clone(),
            |r| Revision {
                name: r.metadata.name.clone().unwrap_or_default(),
                template: history::template_of(r).unwrap_or_else(|| spec.template.clone()),
            },
        );
    Ok((current, update, collision_count))
}

/// Creates the revision of `data`; a name taken by a revision with other data bumps
/// `collision_count` and tries again (a taken name with the same data is that revision).
async fn create_revision(
    api: &Api<ControllerRevision>,
    set: &StatefulSet,
    data: serde_json::Value,
    number: i64,
    collision_count: &mut i32,
) -> Result<ControllerRevision> {
    let labels = set
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let owner = pods::owner_reference("apps/v1", "StatefulSet", &set.metadata);
    for _ in 0..COLLISION_ATTEMPTS {
        let mut revision = history::new_revision(
            &set.metadata,
            owner.clone(),
            labels.clone(),
            data.clone(),
            number,
            (*collision_count > 0).then_some(*collision_count),
        );
        // As Kubernetes: the set's annotations (a `kubernetes.io/change-cause` among them is
        // what `rollout history` shows).
        revision.metadata.annotations = set.metadata.annotations.clone();
        let name = revision.metadata.name.clone().unwrap_or_default();
        match api.create(&PostParams::default(), &revision).await {
            Ok(created) => return Ok(created),
            Err(e) if is_status(&e, 409) => {
                let taken = api
                    .get(&name)
                    .await
                    .action(|| format!("read ControllerRevision {name}"))?;
                if taken.data.as_ref().map(|d| &d.0) == Some(&data) {
                    return Ok(taken);
                }
                *collision_count = collision_count.saturating_add(1);
            }
            Err(e) => {
                return Err(e).action(|| format!("create ControllerRevision {name}"));
            }
        }
    }
    Err(Error::Invalid(format!(
        "no free ControllerRevision name for {} after {COLLISION_ATTEMPTS} collisions",
        describe(set)
    )))
}

/// Creates each claim that does not exist yet.
async fn ensure_claims(
    api: &Api<PersistentVolumeClaim>,
    claims: &[PersistentVolumeClaim],
) -> Result<()> {
    for claim in claims {
        let name = claim.metadata.name.clone().unwrap_or_default();
        match api.get_opt(&name).await {
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => return Err(e).action(|| format!("read claim {name}")),
        }
        match api.create(&PostParams::default(), claim).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 409) => {}
            Err(e) => return Err(e).action(|| format!("create claim {name}")),
        }
    }
    Ok(())
}

/// Brings the owner references of `pod`'s claims in line with the retention policy.
async fn sync_claim_owners(
    api: &Api<PersistentVolumeClaim>,
    set: &StatefulSet,
    pod: &Pod,
    ordinal: i32,
    in_range: bool,
) -> Result<()> {
    for wanted in plan::claims_for(set, ordinal) {
        let name = wanted.metadata.name.clone().unwrap_or_default();
        let Some(mut claim) = api
            .get_opt(&name)
            .await
            .action(|| format!("read claim {name}"))?
        else {
            continue;
        };
        let refs = claim.metadata.owner_references.clone().unwrap_or_default();
        let owners = plan::claim_owners(set, pod, in_range, &refs);
        if owners == refs {
            continue;
        }
        claim.metadata.owner_references = Some(owners);
        match api.replace(&name, &PostParams::default(), &claim).await {
            Ok(_) => {}
            // Changed meanwhile or gone: the next pass looks again.
            Err(e) if is_status(&e, 409) || is_status(&e, 404) => {}
            Err(e) => return Err(e).action(|| format!("update claim {name}")),
        }
    }
    Ok(())
}

async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Ctx>) -> Result<Action> {
    let namespace = set.namespace().unwrap_or_default();
    let name = set.name_any();
    let Some(spec) = set.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let selector = pods::parse_selector(&spec.selector, || describe(&set))?;
    // Every revision and pod of the namespace: orphans the selector matches (pods only with
    // this set's names, `<set>-<ordinal>`) are adopted, own ones it no longer matches released.
    let revision_api: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &namespace);
    let candidates = revision_api
        .list(&ListParams::default())
        .await
        .action(|| format!("list the ControllerRevisions of {}", describe(&set)))?
        .items;
    let existing = crate::claim::claim(
        &ctx.client,
        set.as_ref(),
        candidates,
        |r: &ControllerRevision| selector.matches(r.labels()),
    )
    .await?;
    let (current, update, collision_count) = revisions(&revision_api, &set, &existing).await?;

    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let candidates = pod_api
        .list(&ListParams::default())
        .await
        .action(|| format!("list the pods of {}", describe(&set)))?
        .items;
    let owned = crate::claim::claim(&ctx.client, set.as_ref(), candidates, |p: &Pod| {
        selector.matches(p.labels())
            && p.metadata
                .name
                .as_deref()
                .is_some_and(|n| plan::ordinal_of(&name, n).is_some())
    })
    .await?;
    let now = jiff::Timestamp::now().as_second();
    let plan = plan::decide(&set, &current, &update, collision_count, &owned, now);

    let claim_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    let has_claims = spec
        .volume_claim_templates
        .as_ref()
        .is_some_and(|t| !t.is_empty());
    if has_claims
        && plan::retention(&set) != (false, false)
        && set.metadata.deletion_timestamp.is_none()
    {
        let start = plan::start_ordinal(&set);
        let end = start.saturating_add(plan::wanted_replicas(&set));
        for pod in &owned {
            let Some(ordinal) = pod
                .metadata
                .name
                .as_deref()
                .and_then(|n| plan::ordinal_of(&name, n))
            else {
                continue;
            };
            sync_claim_owners(
                &claim_api,
                &set,
                pod,
                ordinal,
                (start..end).contains(&ordinal),
            )
            .await?;
        }
    }

    for step in &plan.steps {
        match step {
            Step::Create { pod, claims } => {
                let mut claims = claims.clone();
                for claim in &mut claims {
                    let refs = plan::claim_owners(&set, pod, true, &[]);
                    claim.metadata.owner_references = (!refs.is_empty()).then_some(refs);
                }
                ensure_claims(&claim_api, &claims).await?;
                let pod_name = pod.metadata.name.clone().unwrap_or_default();
                match pod_api.create(&PostParams::default(), pod).await {
                    Ok(_) => {}
                    // Already there (the list was a moment old) or the namespace is going.
                    Err(e) if is_status(&e, 409) || is_status(&e, 403) => {}
                    Err(e) => {
                        return Err(e)
                            .action(|| format!("create pod {pod_name} for {}", describe(&set)));
                    }
                }
            }
            Step::EnsureClaims { claims } => ensure_claims(&claim_api, claims).await?,
            Step::Delete { name: pod_name, .. } => {
                match pod_api.delete(pod_name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(e) if is_status(&e, 404) => {}
                    Err(e) => {
                        return Err(e).action(|| format!("delete pod {namespace}/{pod_name}"));
                    }
                }
            }
        }
    }

    // History: everything but the current and update revisions and those pods still use,
    // beyond revisionHistoryLimit.
    let mut live: BTreeSet<String> = owned
        .iter()
        .map(|p| plan::revision_of(p).to_owned())
        .collect();
    live.insert(current.name.clone());
    live.insert(update.name.clone());
    for old in history::to_truncate(&existing, &live, spec.revision_history_limit) {
        match revision_api.delete(&old, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(e).action(|| format!("delete ControllerRevision {old}")),
        }
    }

    if set.status.as_ref() != Some(&plan.status) {
        crate::status::patch(&ctx.client, set.as_ref(), &plan.status).await?;
    }
    if plan.waiting_for_available {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    Ok(Action::await_change())
}

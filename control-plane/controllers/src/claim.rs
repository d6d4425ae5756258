//! Adoption and release of a workload's objects (Kubernetes' controller-ref manager,
//! `pkg/controller/controller_ref_manager.go`): a workload takes control of the objects its
//! selector matches that have no controller (an owner reference with `controller: true`), and
//! lets go of the ones it controls that its selector no longer matches. Neither happens while
//! the workload is being deleted; objects another controller owns are never touched.
//!
//! [`decide`] is the rule, [`claim`] applies it to a list with merge patches (each carrying the
//! object's `resourceVersion`, so a concurrent change is a conflict rather than lost), and
//! [`owners_of`] is the watch mapper that wakes the workloads an orphan matches.

use std::fmt::Debug;

use k8s_openapi::{
    NamespaceResourceScope,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use keelson_api::selectors::LabelSelector;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::reflector::{ObjectRef, Store},
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::{ApiContext, Result, is_status, pods};

/// What a workload does with one object it looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Already its own and still selected: it stays.
    Owned,
    /// An orphan it selects: it takes control.
    Adopt,
    /// Its own but no longer selected: it lets go.
    Release,
    /// Not its business (another controller's, not selected, or nothing may change now).
    Ignore,
}

/// Decides what the workload `owner` does with `child`, which its selector (and any extra
/// filter of the workload) `matches` or not.
pub fn decide(owner: &ObjectMeta, child: &ObjectMeta, matches: bool) -> Claim {
    let owner_deleting = owner.deletion_timestamp.is_some();
    let owner_uid = owner.uid.as_deref().unwrap_or_default();
    match pods::controller_of(child) {
        Some(r) if owner_uid.is_empty() || r.uid != owner_uid => Claim::Ignore,
        Some(_) if matches => Claim::Owned,
        Some(_) if owner_deleting => Claim::Ignore,
        Some(_) => Claim::Release,
        None if owner_deleting
            || !matches
            || owner_uid.is_empty()
            || child.deletion_timestamp.is_some()
            || child.namespace != owner.namespace =>
        {
            Claim::Ignore
        }
        None => Claim::Adopt,
    }
}

/// The merge patch that makes `owner` the controller of `child`: its other owner references
/// kept, the object's `resourceVersion` as the precondition.
pub fn adopt_patch(owner: OwnerReference, child: &ObjectMeta) -> Value {
    let mut refs: Vec<OwnerReference> = child
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != owner.uid)
        .cloned()
        .collect();
    refs.push(owner);
    json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": child.resource_version,
    }})
}

/// The merge patch that removes the owner reference to `owner_uid` from `child` (the
/// `ownerReferences` field goes when it was the only one).
pub fn release_patch(owner_uid: &str, child: &ObjectMeta) -> Value {
    let refs: Vec<&OwnerReference> = child
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != owner_uid)
        .collect();
    json!({"metadata": {
        "ownerReferences": if refs.is_empty() { Value::Null } else { json!(refs) },
        "resourceVersion": child.resource_version,
    }})
}

/// Applies [`decide`] to `candidates` (objects in the owner's namespace): adopts and releases
/// through the API and returns the objects the owner now controls (adopted ones as patched).
/// Before the first adoption the owner is read afresh, and nothing is adopted if it is gone or
/// being deleted meanwhile (kube's `RecheckDeletionTimestamp`). A child that went away is
/// skipped; a conflicting change fails the call, so the reconcile is retried.
pub async fn claim<O, C>(
    client: &Client,
    owner: &O,
    candidates: Vec<C>,
    matches: impl Fn(&C) -> bool,
) -> Result<Vec<C>>
where
    O: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
    C: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let namespace = owner.namespace().unwrap_or_default();
    let owner_name = owner.name_any();
    let owner_kind = O::kind(&());
    let child_kind = C::kind(&());
    let owner_uid = owner.meta().uid.clone().unwrap_or_default();
    let api: Api<C> = Api::namespaced(client.clone(), &namespace);
    let mut may_adopt: Option<bool> = None;
    let mut claimed = Vec::with_capacity(candidates.len());
    for child in candidates {
        let child_name = child.name_any();
        let patch = match decide(owner.meta(), child.meta(), matches(&child)) {
            Claim::Owned => {
                claimed.push(child);
                continue;
            }
            Claim::Ignore => continue,
            Claim::Adopt => {
                if may_adopt.is_none() {
                    let fresh = Api::<O>::namespaced(client.clone(), &namespace)
                        .get_opt(&owner_name)
                        .await
                        .action(|| format!("read {owner_kind} {namespace}/{owner_name}"))?;
                    may_adopt = Some(fresh.is_some_and(|o| {
                        o.meta().deletion_timestamp.is_none()
                            && o.meta().uid.as_deref() == Some(owner_uid.as_str())
                    }));
                }
                if may_adopt != Some(true) {
                    continue;
                }
                adopt_patch(
                    pods::owner_reference(&O::api_version(&()), &owner_kind, owner.meta()),
                    child.meta(),
                )
            }
            Claim::Release => release_patch(&owner_uid, child.meta()),
        };
        let adopting = pods::controller_of(child.meta()).is_none();
        match api
            .patch(&child_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(patched) => {
                if adopting {
                    tracing::debug!(%namespace, owner = %owner_name, child = %child_name, "adopted {child_kind}");
                    claimed.push(patched);
                } else {
                    tracing::debug!(%namespace, owner = %owner_name, child = %child_name, "released {child_kind}");
                }
            }
            // Gone meanwhile, or (on release) already without the reference.
            Err(e) if is_status(&e, 404) || (!adopting && is_status(&e, 422)) => {}
            Err(e) => {
                let verb = if adopting { "adopt" } else { "release" };
                return Err(e).action(|| {
                    format!(
                        "{verb} {child_kind} {namespace}/{child_name} for {owner_kind} \
                         {namespace}/{owner_name}"
                    )
                });
            }
        }
    }
    Ok(claimed)
}

/// A watch mapper for a workload's children: the child's controller when it is an `O`, and
/// for an orphan every `O` in its namespace (from `store`) whose selector matches it, so an
/// orphan is adopted as soon as it appears. `selector` gives a workload's selector (`None`
/// selects nothing).
pub fn owners_of<O, C>(
    store: Store<O>,
    selector: impl Fn(&O) -> Option<LabelSelector> + Send + Sync + 'static,
) -> impl Fn(C) -> Vec<ObjectRef<O>> + Send + Sync + 'static
where
    O: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    C: Resource<DynamicType = ()>,
{
    move |child: C| {
        let namespace = child.namespace();
        match pods::controller_of(child.meta()) {
            Some(r) if r.kind == O::kind(&()) => {
                let owner = ObjectRef::new(&r.name);
                vec![match &namespace {
                    Some(ns) => owner.within(ns),
                    None => owner,
                }]
            }
            Some(_) => Vec::new(),
            None if child.meta().deletion_timestamp.is_some() => Vec::new(),
            None => store
                .state()
                .iter()
                .filter(|o| o.namespace() == namespace && o.meta().deletion_timestamp.is_none())
                .filter(|o| selector(o).is_some_and(|s| s.matches(child.labels())))
                .map(|o| ObjectRef::from_obj(&**o))
                .collect(),
        }
    }
}

/// A workload's `spec.selector` for [`owners_of`]: `None` for an empty one (which would
/// select every pod, and which validation refuses) or one Kubernetes would refuse.
pub fn selector_of(
    spec: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
) -> Option<LabelSelector> {
    let empty = spec.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && spec.match_expressions.as_ref().is_none_or(|e| e.is_empty());
    if empty {
        return None;
    }
    LabelSelector::from_label_selector(spec).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn meta(uid: &str, deleting: bool, refs: &[(&str, bool)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(format!("obj-{uid}")),
            namespace: Some("default".into()),
            uid: (!uid.is_empty()).then(|| uid.to_owned()),
            resource_version: Some("7".into()),
            deletion_timestamp: deleting.then_some(Time(jiff::Timestamp::UNIX_EPOCH)),
            owner_references: (!refs.is_empty()).then(|| {
                refs.iter()
                    .map(|(uid, controller)| OwnerReference {
                        api_version: "apps/v1".into(),
                        kind: "ReplicaSet".into(),
                        name: format!("obj-{uid}"),
                        uid: (*uid).into(),
                        controller: Some(*controller),
                        block_owner_deletion: None,
                    })
                    .collect()
            }),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn what_a_workload_does_with_an_object() {
        let alive = meta("rs", false, &[]);
        let deleting = meta("rs", true, &[]);
        let mut elsewhere = meta("p", false, &[]);
        elsewhere.namespace = Some("other".into());
        let cases = [
            // (case, owner, child, matches, outcome)
            (
                "orphan, selected",
                &alive,
                meta("p", false, &[]),
                true,
                Claim::Adopt,
            ),
            (
                "orphan with a non-controller owner, selected",
                &alive,
                meta("p", false, &[("x", false)]),
                true,
                Claim::Adopt,
            ),
            (
                "orphan, not selected",
                &alive,
                meta("p", false, &[]),
                false,
                Claim::Ignore,
            ),
            (
                "orphan being deleted",
                &alive,
                meta("p", true, &[]),
                true,
                Claim::Ignore,
            ),
            (
                "orphan in another namespace",
                &alive,
                elsewhere,
                true,
                Claim::Ignore,
            ),
            (
                "owner being deleted: no adoption",
                &deleting,
                meta("p", false, &[]),
                true,
                Claim::Ignore,
            ),
            (
                "own, selected",
                &alive,
                meta("p", false, &[("rs", true)]),
                true,
                Claim::Owned,
            ),
            (
                "own, no longer selected",
                &alive,
                meta("p", false, &[("rs", true)]),
                false,
                Claim::Release,
            ),
            (
                "own, owner being deleted: still owned",
                &deleting,
                meta("p", false, &[("rs", true)]),
                true,
                Claim::Owned,
            ),
            (
                "own, not selected, owner being deleted: kept as is",
                &deleting,
                meta("p", false, &[("rs", true)]),
                false,
                Claim::Ignore,
            ),
            (
                "another controller's",
                &alive,
                meta("p", false, &[("other", true)]),
                true,
                Claim::Ignore,
            ),
            (
                "owner without a uid adopts nothing",
                &meta("", false, &[]),
                meta("p", false, &[]),
                true,
                Claim::Ignore,
            ),
        ];
        for (case, owner, child, matches, want) in cases {
            assert_eq!(decide(owner, &child, matches), want, "{case}");
        }
    }

    #[test]
    fn patches_keep_other_owners_and_carry_the_resource_version() {
        let child = meta("p", false, &[("x", false)]);
        let owner = pods::owner_reference("apps/v1", "ReplicaSet", &meta("rs", false, &[]));
        assert_eq!(
            adopt_patch(owner, &child),
            json!({"metadata": {"resourceVersion": "7", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "obj-x", "uid": "x",
                 "controller": false},
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "obj-rs", "uid": "rs",
                 "controller": true, "blockOwnerDeletion": true},
            ]}})
        );
        let owned = meta("p", false, &[("x", false), ("rs", true)]);
        assert_eq!(
            release_patch("rs", &owned),
            json!({"metadata": {"resourceVersion": "7", "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "obj-x", "uid": "x",
                 "controller": false},
            ]}})
        );
        assert_eq!(
            release_patch("rs", &meta("p", false, &[("rs", true)])),
            json!({"metadata": {"resourceVersion": "7", "ownerReferences": null}})
        );
    }

    #[test]
    fn orphans_wake_the_workloads_that_select_them() {
        use k8s_openapi::api::{apps::v1::ReplicaSet, core::v1::Pod};
        use kube::runtime::{reflector::store::Writer, watcher};
        use std::collections::BTreeMap;

        let labels = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
            )
        };
        let rs = |name: &str, namespace: &str, app: &str, deleting: bool| ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                deletion_timestamp: deleting.then_some(Time(jiff::Timestamp::UNIX_EPOCH)),
                ..ObjectMeta::default()
            },
            spec: Some(k8s_openapi::api::apps::v1::ReplicaSetSpec {
                selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                    match_labels: labels(&[("app", app)]),
                    match_expressions: None,
                },
                ..Default::default()
            }),
            status: None,
        };
        let mut writer = Writer::<ReplicaSet>::default();
        for set in [
            rs("web", "default", "web", false),
            rs("web-too", "default", "web", false),
            rs("api", "default", "api", false),
            rs("elsewhere", "other", "web", false),
            rs("going", "default", "web", true),
        ] {
            writer.apply_watcher_event(&watcher::Event::Apply(set));
        }
        let mapper = owners_of(writer.as_reader(), |rs: &ReplicaSet| {
            selector_of(&rs.spec.as_ref()?.selector)
        });
        let pod = |app: &str, refs: &[(&str, bool)]| {
            let mut meta = meta("p", false, refs);
            meta.labels = labels(&[("app", app)]);
            Pod {
                metadata: meta,
                ..Pod::default()
            }
        };
        let names = |refs: Vec<ObjectRef<ReplicaSet>>| {
            let mut names: Vec<String> = refs.into_iter().map(|r| r.name).collect();
            names.sort();
            names
        };
        // An orphan: every live ReplicaSet of its namespace that selects it.
        assert_eq!(names(mapper(pod("web", &[]))), ["web", "web-too"]);
        assert!(mapper(pod("db", &[])).is_empty());
        // A controlled pod: its controller only (by name), whatever its labels.
        assert_eq!(names(mapper(pod("db", &[("api", true)]))), ["obj-api"]);
    }
}

//! The `ResourceQuota` admission plugin (kube's `plugin/pkg/admission/resourcequota` and
//! `k8s.io/apiserver/pkg/admission/plugin/resourcequota/controller.go`), on creates: the new
//! object's usage ([`keelson_api::quota::usage`]) is added to the `status.used` of every quota
//! of its namespace whose `status.hard` limits any of it; past a `status.hard` the create is refused with
//! kube's 403, otherwise the quotas' new usage is written (a conditional update, retried on a
//! conflict) before the object is stored, so two racing creates cannot both take the last
//! unit. The `resourcequota` controller recounts afterwards.
//!
//! Quotas with `scopes` / `scopeSelector` charge only the pods in their scopes
//! ([`quota::in_scope`]).
//!
//! Updates charge their growth ([`update_delta`]): a claim asking for more storage, a
//! Service turning NodePort or LoadBalancer.
//!
//! Not done: kube's "must specify requests.cpu" constraints for pods.

use keelson_api::quota::{self, ResourceList};
use keelson_store::{ListOptions, Store, StoreError};
use serde_json::Value;

use super::Admit;
use crate::{
    ApiError,
    error::Details,
    object::{decode_kv, encode, meta_str},
    registry::{self, Resource},
    request::Target,
};

/// How often the quotas are re-read after a conflicting write.
const ATTEMPTS: usize = 10;

/// kube's `NewForbidden` for `name` of `resource`.
fn forbidden(resource: &Resource, name: &str, why: &str) -> ApiError {
    let qualified = if resource.group.is_empty() {
        resource.plural.to_owned()
    } else {
        format!("{}.{}", resource.plural, resource.group)
    };
    let mut error = ApiError::forbidden(format!("{qualified} \"{name}\" is forbidden: {why}"));
    error.details = Some(Box::new(Details {
        name: name.to_owned(),
        group: resource.group.to_owned(),
        kind: resource.plural.to_owned(),
        ..Details::default()
    }));
    error
}

/// The new `status.used` of `quota` with `requested` charged to it, `Ok(None)` when the
/// quota limits none of it, or the reason for kube's refusal (pure).
pub(crate) fn charge(quota: &Value, requested: &ResourceList) -> Result<Option<Value>, String> {
    let hard = quota::parse_list(quota.pointer("/status/hard"));
    let used = quota::parse_list(quota.pointer("/status/used"));
    let name = meta_str(quota, "name").unwrap_or_default();
    // As in kube, a quota restricts what its controller has put in `status.hard`.
    let interesting: Vec<&String> = requested.keys().filter(|k| hard.contains_key(*k)).collect();
    if interesting.is_empty() {
        return Ok(None);
    }
    // kube's hasUsageStats: the controller must have counted what this request touches.
    let unknown: Vec<&str> = interesting
        .iter()
        .filter(|k| !used.contains_key(**k))
        .map(|k| k.as_str())
        .collect();
    if !unknown.is_empty() {
        return Err(format!(
            "status unknown for quota: {name}, resources: {}",
            unknown.join(",")
        ));
    }
    let requested = quota::mask(requested, hard.keys());
    let new_used = quota::sum(&used, &requested);
    let exceeded = quota::exceeded(&quota::mask(&new_used, requested.keys()), &hard);
    if !exceeded.is_empty() {
        return Err(format!(
            "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
            quota::pretty(&quota::mask(&requested, &exceeded)),
            quota::pretty(&quota::mask(&used, &exceeded)),
            quota::pretty(&quota::mask(&hard, &exceeded)),
        ));
    }
    Ok(Some(quota::to_json(&new_used)))
}

/// The quota admission of creating `object` (stored form, named `name`) as `target`.
pub(crate) async fn admit(
    admit: &Admit<'_>,
    target: &Target,
    name: &str,
    object: &Value,
    dry_run: bool,
) -> Result<(), ApiError> {
    let resource = target.resource;
    let requested = quota::usage(resource.group, resource.plural, object);
    charge_quotas(admit, target, name, object, &requested, dry_run).await
}

/// What an update adds to the quotas (kube charges the growth only: the new usage less the
/// old, negative differences dropped, zeros left out). Only Services (a type turning
/// NodePort or LoadBalancer, more node ports) and claims (a larger storage request) are
/// charged on update, as kube's evaluators handle updates only for them.
pub(crate) fn update_delta(group: &str, plural: &str, old: &Value, new: &Value) -> ResourceList {
    if !group.is_empty() || !matches!(plural, "services" | "persistentvolumeclaims") {
        return ResourceList::new();
    }
    let before = quota::usage(group, plural, old);
    quota::usage(group, plural, new)
        .into_iter()
        .filter_map(|(resource, value)| {
            let delta = match before.get(&resource) {
                Some(old) => value.checked_sub(*old)?,
                None => value,
            };
            (!delta.is_zero() && !delta.is_negative()).then_some((resource, delta))
        })
        .collect()
}

/// The quota admission of updating `current` to `next` (stored forms) as `target`.
pub(crate) async fn admit_update(
    admit: &Admit<'_>,
    target: &Target,
    name: &str,
    current: &Value,
    next: &Value,
    dry_run: bool,
) -> Result<(), ApiError> {
    if target.custom.is_some() {
        return Ok(());
    }
    let resource = target.resource;
    let delta = update_delta(resource.group, resource.plural, current, next);
    charge_quotas(admit, target, name, next, &delta, dry_run).await
}

/// Charges `requested` (the usage of `object`) to the quotas of the target's namespace.
async fn charge_quotas(
    admit: &Admit<'_>,
    target: &Target,
    name: &str,
    object: &Value,
    requested: &ResourceList,
    dry_run: bool,
) -> Result<(), ApiError> {
    let resource = target.resource;
    let Some(namespace) = target.namespace.as_deref() else {
        return Ok(());
    };
    if requested.is_empty() {
        return Ok(());
    }
    let quotas = Target {
        resource: registry::find("", "v1", "resourcequotas").ok_or_else(ApiError::no_route)?,
        namespace: Some(namespace.to_owned()),
        name: None,
        subresource: None,
        custom: None,
    };
    let store: &dyn Store = admit.store.as_ref();
    for _ in 0..ATTEMPTS {
        let listed = store
            .list(&quotas.prefix(), ListOptions::default())
            .await
            .map_err(|e| ApiError::from_store(e, quotas.resource, ""))?;
        let mut writes = Vec::new();
        for kv in &listed.items {
            let mut quota = decode_kv(kv)?;
            if !quota::in_scope(quota.get("spec"), resource.group, resource.plural, object) {
                continue;
            }
            match charge(&quota, requested) {
                Ok(None) => {}
                Ok(Some(used)) => {
                    quota["status"]["used"] = used;
                    writes.push((quota, kv.mod_revision));
                }
                Err(why) => return Err(forbidden(resource, name, &why)),
            }
        }
        if dry_run {
            return Ok(());
        }
        let mut conflicted = false;
        for (quota, revision) in writes {
            let quota_name = meta_str(&quota, "name").unwrap_or_default().to_owned();
            match store
                .update(&quotas.key(&quota_name), encode(&quota), revision)
                .await
            {
                Ok(_) => {}
                Err(StoreError::Conflict { .. }) => {
                    conflicted = true;
                    break;
                }
                Err(e) => return Err(ApiError::from_store(e, quotas.resource, &quota_name)),
            }
        }
        if !conflicted {
            return Ok(());
        }
    }
    Err(forbidden(
        resource,
        name,
        "status unknown for quota: the quotas kept changing",
    ))
}

#[cfg(test)]
mod tests {
    use keelson_api::quantity::Quantity;
    use serde_json::json;

    use super::*;

    fn list(pairs: &[(&str, &str)]) -> ResourceList {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Quantity::parse(v).unwrap()))
            .collect()
    }

    fn quota(hard: Value, used: Value) -> Value {
        json!({"metadata": {"name": "compute"}, "spec": {"hard": hard},
               "status": {"hard": hard, "used": used}})
    }

    #[test]
    fn updates_charge_their_growth() {
        let claim = |size: &str| json!({"spec": {"resources": {"requests": {"storage": size}}}});
        let service = |kind: &str, ports: usize| json!({"spec": {"type": kind, "ports": vec![json!({"port": 80}); ports]}});
        let pod = |cpu: &str| json!({"spec": {"containers": [{"resources": {"requests": {"cpu": cpu}}}]}});
        let cases = [
            (
                "a claim resized up",
                "persistentvolumeclaims",
                claim("1Gi"),
                claim("3Gi"),
                list(&[("requests.storage", "2Gi")]),
            ),
            (
                "a claim resized down",
                "persistentvolumeclaims",
                claim("3Gi"),
                claim("1Gi"),
                list(&[]),
            ),
            (
                "ClusterIP to NodePort",
                "services",
                service("ClusterIP", 2),
                service("NodePort", 2),
                list(&[("services.nodeports", "2")]),
            ),
            (
                "NodePort to LoadBalancer with one more port",
                "services",
                service("NodePort", 1),
                service("LoadBalancer", 2),
                list(&[("services.loadbalancers", "1"), ("services.nodeports", "1")]),
            ),
            (
                "LoadBalancer to ClusterIP",
                "services",
                service("LoadBalancer", 1),
                service("ClusterIP", 1),
                list(&[]),
            ),
            (
                "pods are not charged on update",
                "pods",
                pod("1"),
                pod("2"),
                list(&[]),
            ),
        ];
        for (name, plural, old, new, want) in cases {
            assert_eq!(update_delta("", plural, &old, &new), want, "{name}");
        }
    }

    #[test]
    fn charges_and_refusals() {
        let pod = list(&[
            ("pods", "1"),
            ("count/pods", "1"),
            ("requests.cpu", "500m"),
            ("cpu", "500m"),
        ]);
        let cases = [
            (
                quota(json!({"pods": "2"}), json!({"pods": "2"})),
                Err(
                    "exceeded quota: compute, requested: pods=1, used: pods=2, limited: pods=2"
                        .to_owned(),
                ),
            ),
            (
                quota(json!({"pods": "3"}), json!({"pods": "2"})),
                Ok(Some(json!({"pods": "3"}))),
            ),
            (
                quota(
                    json!({"pods": "10", "requests.cpu": "1"}),
                    json!({"pods": "1", "requests.cpu": "700m"}),
                ),
                Err(
                    "exceeded quota: compute, requested: requests.cpu=500m, used: \
                     requests.cpu=700m, limited: requests.cpu=1"
                        .to_owned(),
                ),
            ),
            (
                quota(json!({"secrets": "1"}), json!({"secrets": "1"})),
                Ok(None),
            ),
            // Not counted yet: a quota restricts nothing before its controller sets
            // status.hard, and refuses while status.used lacks a hard resource.
            (
                json!({"metadata": {"name": "fresh"}, "spec": {"hard": {"pods": "1"}}}),
                Ok(None),
            ),
            (
                json!({"metadata": {"name": "half"}, "spec": {"hard": {"pods": "1"}},
                       "status": {"hard": {"pods": "1"}}}),
                Err("status unknown for quota: half, resources: pods".to_owned()),
            ),
        ];
        for (quota, want) in cases {
            assert_eq!(charge(&quota, &pod), want, "{quota}");
        }
    }
}

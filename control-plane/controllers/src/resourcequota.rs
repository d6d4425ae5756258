//! The resource quota controller (kube's `pkg/controller/resourcequota`): each ResourceQuota's
//! `status.hard` is its `spec.hard` and `status.used` the usage of what its namespace holds
//! now ([`keelson_api::quota::usage`], the same counting the API server's admission charges),
//! one entry per hard resource (0 when nothing uses it). Admission charges `status.used` as
//! objects are created; this controller recounts every few seconds, so deletions and failed
//! creates are given back.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use k8s_openapi::api::core::v1::ResourceQuota;
use keelson_api::{
    quantity::{Format, Quantity},
    quota::{self, ResourceList},
};
use kube::{
    Api, Client, ResourceExt,
    api::{ApiResource, DynamicObject, ListParams, PostParams},
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::{Value, json};

use crate::{ApiContext, Result, is_status};

/// How often a quota is recounted.
const RESYNC: Duration = Duration::from_secs(5);

struct Ctx {
    client: Client,
}

/// Runs the controller.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let controller = Controller::new(
        Api::<ResourceQuota>::all(client.clone()),
        watcher::Config::default(),
    );
    let ctx = Arc::new(Ctx { client });
    crate::drive(
        "resourcequota",
        controller.run(reconcile, crate::retry, ctx),
    )
    .await;
    Ok(())
}

/// The `(group, plural)` whose objects a quota with these hard resources must count.
pub fn counted(hard: &ResourceList) -> BTreeSet<(String, String)> {
    let core = |plural: &str| (String::new(), plural.to_owned());
    hard.keys()
        .filter_map(|name| {
            Some(match name.as_str() {
                "pods" | "cpu" | "memory" | "ephemeral-storage" => core("pods"),
                n if n.starts_with("requests.") && n != "requests.storage" => core("pods"),
                n if n.starts_with("limits.") => core("pods"),
                "requests.storage" | "persistentvolumeclaims" => core("persistentvolumeclaims"),
                "services" | "services.loadbalancers" | "services.nodeports" => core("services"),
                "configmaps" | "secrets" | "replicationcontrollers" | "resourcequotas" => {
                    core(name)
                }
                n => {
                    let resource = n.strip_prefix("count/")?;
                    match resource.split_once('.') {
                        Some((plural, group)) => (group.to_owned(), plural.to_owned()),
                        None => core(resource),
                    }
                }
            })
        })
        .collect()
}

/// `status.used` from the summed usage of the namespace's objects: one entry per hard
/// resource.
pub fn used(hard: &ResourceList, total: &ResourceList) -> ResourceList {
    hard.keys()
        .map(|name| {
            (
                name.clone(),
                total
                    .get(name)
                    .copied()
                    .unwrap_or_else(|| Quantity::new(0, Format::DecimalSI)),
            )
        })
        .collect()
}

async fn api_resource(client: &Client, group: &str, plural: &str) -> Option<ApiResource> {
    if group.is_empty() {
        return Some(ApiResource {
            group: String::new(),
            version: "v1".into(),
            api_version: "v1".into(),
            kind: String::new(),
            plural: plural.to_owned(),
        });
    }
    let discovered = kube::discovery::group(client, group).await.ok()?;
    discovered
        .recommended_resources()
        .into_iter()
        .map(|(resource, _)| resource)
        .find(|r| r.plural == plural)
}

async fn reconcile(rq: Arc<ResourceQuota>, ctx: Arc<Ctx>) -> Result<Action> {
    let namespace = rq.namespace().unwrap_or_default();
    let name = rq.name_any();
    let spec_hard =
        serde_json::to_value(rq.spec.as_ref().and_then(|s| s.hard.as_ref())).unwrap_or(Value::Null);
    let hard = quota::parse_list(Some(&spec_hard));
    let mut total = ResourceList::new();
    for (group, plural) in counted(&hard) {
        let Some(resource) = api_resource(&ctx.client, &group, &plural).await else {
            continue;
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), &namespace, &resource);
        let objects = api
            .list(&ListParams::default())
            .await
            .action(|| format!("list {plural} in {namespace} for ResourceQuota {name}"))?;
        let spec = serde_json::to_value(rq.spec.as_ref()).unwrap_or(Value::Null);
        for object in objects.items {
            let value = serde_json::to_value(&object).unwrap_or(Value::Null);
            if !quota::in_scope(Some(&spec), &group, &plural, &value) {
                continue;
            }
            total = quota::sum(&total, &quota::usage(&group, &plural, &value));
        }
    }
    let status = json!({
        "hard": quota::to_json(&hard),
        "used": quota::to_json(&used(&hard, &total)),
    });
    let current = serde_json::to_value(&rq.status).unwrap_or(Value::Null);
    let same = |field: &str| {
        quota::parse_list(current.get(field)) == quota::parse_list(status.get(field))
            && current
                .get(field)
                .and_then(Value::as_object)
                .map(|o| o.len())
                == status
                    .get(field)
                    .and_then(Value::as_object)
                    .map(|o| o.len())
    };
    if !(same("hard") && same("used")) {
        let mut updated = (*rq).clone();
        updated.status = serde_json::from_value(status).ok();
        match Api::<ResourceQuota>::namespaced(ctx.client.clone(), &namespace)
            .replace_status(&name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {}
            // Deleted, or charged by admission meanwhile: the next count settles it.
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
            Err(e) => {
                return Err(e)
                    .action(|| format!("update the status of ResourceQuota {namespace}/{name}"));
            }
        }
    }
    Ok(Action::requeue(RESYNC))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(pairs: &[(&str, &str)]) -> ResourceList {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Quantity::parse(v).unwrap()))
            .collect()
    }

    #[test]
    fn hard_resources_name_what_to_count() {
        let hard = list(&[
            ("pods", "10"),
            ("limits.memory", "1Gi"),
            ("requests.storage", "5Gi"),
            ("services.nodeports", "2"),
            ("count/deployments.apps", "3"),
            ("count/jobs.batch", "3"),
            ("count/widgets", "1"),
        ]);
        let pairs: Vec<String> = counted(&hard)
            .into_iter()
            .map(|(g, p)| format!("{g}/{p}"))
            .collect();
        assert_eq!(
            pairs,
            vec![
                "/persistentvolumeclaims",
                "/pods",
                "/services",
                "/widgets",
                "apps/deployments",
                "batch/jobs"
            ]
        );
    }

    #[test]
    fn used_has_one_entry_per_hard_resource() {
        let hard = list(&[("pods", "10"), ("secrets", "5")]);
        let total = list(&[("pods", "3"), ("count/pods", "3")]);
        assert_eq!(quota::pretty(&used(&hard, &total)), "pods=3,secrets=0");
    }
}

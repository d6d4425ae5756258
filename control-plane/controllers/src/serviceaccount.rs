//! Service accounts: a `default` ServiceAccount in every active Namespace, created again when
//! it is deleted (Kubernetes' `pkg/controller/serviceaccount/serviceaccounts_controller.go`).

use std::sync::Arc;

use k8s_openapi::{
    api::core::v1::{Namespace, ServiceAccount},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api, Client, ResourceExt,
    api::PostParams,
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher},
};

use crate::{ApiContext, Result, is_status};

/// The ServiceAccounts every namespace gets (the kube controller's default list: `default`).
pub const MANAGED: &[&str] = &["default"];

/// The ServiceAccounts `namespace` lacks, given the names it has: none while it is
/// terminating (kube only creates in active namespaces).
pub fn missing(namespace: &Namespace, existing: &[String]) -> Vec<ServiceAccount> {
    let terminating = namespace.metadata.deletion_timestamp.is_some()
        || namespace
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|p| p != "Active");
    if terminating {
        return Vec::new();
    }
    MANAGED
        .iter()
        .filter(|name| !existing.iter().any(|e| e == *name))
        .map(|name| ServiceAccount {
            metadata: ObjectMeta {
                name: Some((*name).to_owned()),
                namespace: namespace.metadata.name.clone(),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        })
        .collect()
}

struct Ctx {
    client: Client,
}

/// Runs the controller: every Namespace, and again when a managed ServiceAccount changes.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let controller = Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    )
    .watches(
        Api::<ServiceAccount>::all(client.clone()),
        watcher::Config::default().fields("metadata.name=default"),
        |sa| sa.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)),
    );
    let ctx = Arc::new(Ctx { client });
    crate::drive(
        "serviceaccount",
        controller.run(reconcile, crate::retry, ctx),
    )
    .await;
    Ok(())
}

async fn reconcile(namespace: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action> {
    let ns = namespace.name_any();
    let api = Api::<ServiceAccount>::namespaced(ctx.client.clone(), &ns);
    let mut existing = Vec::new();
    for name in MANAGED {
        if api
            .get_opt(name)
            .await
            .action(|| format!("get ServiceAccount {ns}/{name}"))?
            .is_some()
        {
            existing.push((*name).to_owned());
        }
    }
    for account in missing(&namespace, &existing) {
        match api.create(&PostParams::default(), &account).await {
            // Already there, or the namespace is gone or terminating: nothing to retry.
            Err(e) if is_status(&e, 409) || is_status(&e, 404) || is_status(&e, 403) => {}
            other => {
                other.action(|| format!("create ServiceAccount {ns}/{}", account.name_any()))?;
                tracing::info!(
                    namespace = ns,
                    name = account.name_any(),
                    "created a ServiceAccount"
                );
            }
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{api::core::v1::NamespaceStatus, apimachinery::pkg::apis::meta::v1::Time};

    use super::*;

    fn namespace(phase: &str, deleting: bool) -> Namespace {
        Namespace {
            metadata: ObjectMeta {
                name: Some("team".into()),
                deletion_timestamp: deleting.then_some(Time(jiff::Timestamp::UNIX_EPOCH)),
                ..ObjectMeta::default()
            },
            status: Some(NamespaceStatus {
                phase: Some(phase.into()),
                ..NamespaceStatus::default()
            }),
            ..Namespace::default()
        }
    }

    #[test]
    fn every_active_namespace_gets_a_default_service_account() {
        let cases = [
            (namespace("Active", false), vec![], vec!["team/default"]),
            (namespace("Active", false), vec!["default"], vec![]),
            (
                namespace("Active", false),
                vec!["robot"],
                vec!["team/default"],
            ),
            (namespace("Terminating", false), vec![], vec![]),
            (namespace("Active", true), vec![], vec![]),
        ];
        for (ns, existing, expected) in cases {
            let existing: Vec<String> = existing.into_iter().map(str::to_owned).collect();
            let created: Vec<String> = missing(&ns, &existing)
                .iter()
                .map(|sa| format!("{}/{}", sa.namespace().unwrap_or_default(), sa.name_any()))
                .collect();
            assert_eq!(created, expected, "{:?} {existing:?}", ns.status);
        }
    }
}

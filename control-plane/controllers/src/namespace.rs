//! Namespace deletion: once a Namespace is terminating, everything in it is deleted (custom
//! resources included; pods bound to a node wait for their kubelet, as in Kubernetes), and
//! when nothing is left the
//! `kubernetes` finalizer is removed through `namespaces/<name>/finalize`, which lets the API
//! server delete the Namespace (`kubectl delete ns` returns then).

use std::{fmt::Debug, sync::Arc, time::Duration};

use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::{Deployment, ReplicaSet},
        coordination::v1::Lease,
        core::v1::{ConfigMap, Endpoints, Event, Namespace, Pod, Secret, Service},
        discovery::v1::EndpointSlice,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, ListParams, PostParams},
    runtime::{Controller, controller::Action, watcher},
};
use serde::de::DeserializeOwned;

use crate::{ApiContext, Result, is_status};

/// The `spec.finalizers` entry the API server puts on every Namespace.
pub const FINALIZER: &str = "kubernetes";

struct Ctx {
    client: Client,
}

/// Runs the controller.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let controller = Controller::new(
        Api::<Namespace>::all(client.clone()),
        watcher::Config::default(),
    );
    let ctx = Arc::new(Ctx { client });
    crate::drive("namespace", controller.run(reconcile, crate::retry, ctx)).await;
    Ok(())
}

/// Deletes every object of `K` in `namespace`; returns how many are still there.
async fn purge<K>(client: &Client, namespace: &str) -> Result<usize>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let kind = K::kind(&());
    let items = api
        .list(&ListParams::default())
        .await
        .action(|| format!("list {kind} in namespace {namespace}"))?
        .items;
    for item in items
        .iter()
        .filter(|i| i.meta().deletion_timestamp.is_none())
    {
        match api
            .delete(&item.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
            Err(e) => {
                return Err(e).action(|| format!("delete {kind} {namespace}/{}", item.name_any()));
            }
        }
    }
    Ok(items.len())
}

/// Deletes the custom resources in `namespace`, of every established namespaced
/// CustomResourceDefinition (read in its storage version); returns how many are still there.
async fn purge_custom(client: &Client, namespace: &str) -> Result<usize> {
    let crds = Api::<CustomResourceDefinition>::all(client.clone())
        .list(&ListParams::default())
        .await
        .action(|| "list CustomResourceDefinitions".to_owned())?
        .items;
    let mut remaining = 0;
    for crd in crds.iter().filter(|c| c.spec.scope == "Namespaced") {
        let established = crd.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
        let Some(version) = crd.spec.versions.iter().find(|v| v.storage) else {
            continue;
        };
        if !established {
            continue;
        }
        let group = &crd.spec.group;
        let resource = ApiResource {
            group: group.clone(),
            version: version.name.clone(),
            api_version: format!("{group}/{}", version.name),
            kind: crd.spec.names.kind.clone(),
            plural: crd.spec.names.plural.clone(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
        let items = match api.list(&ListParams::default()).await {
            Ok(list) => list.items,
            // The CRD went away meanwhile.
            Err(e) if is_status(&e, 404) => continue,
            Err(e) => {
                return Err(e)
                    .action(|| format!("list {} in namespace {namespace}", resource.plural));
            }
        };
        for item in items
            .iter()
            .filter(|i| i.metadata.deletion_timestamp.is_none())
        {
            match api
                .delete(&item.name_any(), &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => {
                    return Err(e).action(|| {
                        format!("delete {} {namespace}/{}", resource.plural, item.name_any())
                    });
                }
            }
        }
        remaining += items.len();
    }
    Ok(remaining)
}

async fn reconcile(namespace: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action> {
    if namespace.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = namespace.name_any();
    let client = &ctx.client;
    // Owners first, so their controllers stop recreating what is deleted next.
    let remaining = purge::<Deployment>(client, &name).await?
        + purge::<ReplicaSet>(client, &name).await?
        + purge::<Pod>(client, &name).await?
        + purge::<Service>(client, &name).await?
        + purge::<EndpointSlice>(client, &name).await?
        + purge::<Endpoints>(client, &name).await?
        + purge::<ConfigMap>(client, &name).await?
        + purge::<Secret>(client, &name).await?
        + purge::<Lease>(client, &name).await?
        + purge::<Event>(client, &name).await?
        + purge_custom(client, &name).await?;
    if remaining > 0 {
        tracing::debug!(
            namespace = name,
            remaining,
            "waiting for the namespace to empty"
        );
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let mut finalized = (*namespace).clone();
    let finalizers = finalized.spec.as_mut().and_then(|s| s.finalizers.as_mut());
    match finalizers {
        Some(list) if list.iter().any(|f| f == FINALIZER) => list.retain(|f| f != FINALIZER),
        _ => return Ok(Action::await_change()),
    }
    Api::<Namespace>::all(client.clone())
        .replace_subresource("finalize", &name, &PostParams::default(), &finalized)
        .await
        .map(drop)
        .or_else(|e| if is_status(&e, 404) { Ok(()) } else { Err(e) })
        .action(|| format!("finalize namespace {name}"))?;
    tracing::info!(namespace = name, "namespace emptied and finalized");
    Ok(Action::await_change())
}

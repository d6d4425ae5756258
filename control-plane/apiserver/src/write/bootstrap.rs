//! What every cluster has before its first request: the system namespaces, PriorityClasses and
//! the default `local-path` StorageClass.

use keelson_store::{Store, StoreError};
use serde_json::{Value, json};

use crate::{
    ApiError, SYSTEM_NAMESPACES, finalizers,
    object::{check_kind, encode, prepare_create},
    registry,
};

/// The PriorityClasses every cluster has (kube-apiserver's `SystemPriorityClasses`).
fn system_priority_classes() -> [Value; 2] {
    let class = |name: &str, value: i64, description: &str| {
        json!({
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
            "description": description,
        })
    };
    [
        class(
            "system-node-critical",
            2_000_001_000,
            "Used for system critical pods that must not be moved from their current node.",
        ),
        class(
            "system-cluster-critical",
            2_000_000_000,
            "Used for system critical pods that must run in the cluster, but can be moved to \
             another node if necessary.",
        ),
    ]
}

/// The built-in `local-path` StorageClass (k3s's default class).
fn default_storage_class() -> Option<(&'static registry::Resource, Value)> {
    registry::find("storage.k8s.io", "v1", "storageclasses")
        .map(|r| (r, crate::admission::storageclass::local_path_class()))
}

/// Creates the [`SYSTEM_NAMESPACES`] and system PriorityClasses that do not exist yet.
pub(crate) async fn bootstrap(store: &dyn Store) -> Result<(), ApiError> {
    let namespaces = registry::find("", "v1", "namespaces").ok_or_else(ApiError::no_route)?;
    let priority_classes = registry::find("scheduling.k8s.io", "v1", "priorityclasses")
        .ok_or_else(ApiError::no_route)?;
    let objects = SYSTEM_NAMESPACES
        .iter()
        .map(|name| {
            (
                namespaces,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
            )
        })
        .chain(system_priority_classes().map(|class| (priority_classes, class)))
        .chain(default_storage_class());
    for (resource, mut object) in objects {
        check_kind(&mut object, resource)?;
        let name = prepare_create(&mut object, resource, None)?;
        finalizers::on_create(resource, &mut object);
        match store
            .create(&resource.key(None, &name), encode(&object))
            .await
        {
            Ok(revision) => tracing::info!(kind = resource.kind, name, revision, "created"),
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(ApiError::from_store(e, resource, &name)),
        }
    }
    Ok(())
}

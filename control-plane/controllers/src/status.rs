//! Writing a workload's status: one merge patch of `status` through the `status` subresource,
//! where a 404 (the object was deleted meanwhile) is no failure.

use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::json;

use crate::{ApiContext, Result, is_status};

/// Merge-patches `status` into `object`'s status; an object that is gone is left alone. The
/// failure names the object (`update the status of Job default/pi`).
pub(crate) async fn patch<K>(client: &Client, object: &K, status: &impl Serialize) -> Result<()>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    Api::<K>::namespaced(client.clone(), &namespace)
        .patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await
        .map(drop)
        .or_else(|e| if is_status(&e, 404) { Ok(()) } else { Err(e) })
        .action(|| format!("update the status of {} {namespace}/{name}", K::kind(&())))
}

//! `DELETE` of an object or a collection: grace periods, preconditions, finalizers and
//! propagation, with admission and `dryRun`.

use keelson_store::{KeyValue, ListOptions, Store};
use serde_json::{Value, json};

use super::{Written, write};
use crate::{
    ApiError,
    admission::{Admit, Attempt, matching::Operation},
    allocator, crd, finalizers,
    object::{decode_kv, meta_str, metadata_mut, now_rfc3339},
    read::{get_kv, list_kind},
    request::{Params, Selectors, Target, WriteOptions},
};

/// Delete options from the query and the body (`DeleteOptions`).
#[derive(Debug, Default)]
struct DeleteOptions {
    grace_period_seconds: Option<i64>,
    precondition_uid: Option<String>,
    precondition_rv: Option<String>,
    propagation: Option<finalizers::Propagation>,
    dry_run: bool,
}

fn delete_options(
    params: &Params,
    body: &[u8],
    write: &WriteOptions,
) -> Result<DeleteOptions, ApiError> {
    let mut options = DeleteOptions {
        dry_run: write.dry_run,
        ..DeleteOptions::default()
    };
    let body_value = if body.is_empty() {
        None
    } else {
        Some(serde_json::from_slice::<Value>(body).map_err(|e| {
            ApiError::bad_request(format!("the DeleteOptions body is not valid JSON: {e}"))
        })?)
    };
    options.propagation = finalizers::propagation(
        params.get("propagationPolicy").map(String::as_str),
        body_value.as_ref(),
    )?;
    if let Some(value) = &body_value {
        match value
            .get("dryRun")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            None | Some([]) => {}
            Some([all]) if all == "All" => options.dry_run = true,
            Some(other) => {
                return Err(ApiError::invalid_options(
                    "DeleteOptions",
                    &format!(
                        "dryRun: Unsupported value: {}: supported values: \"All\"",
                        Value::Array(other.to_vec())
                    ),
                ));
            }
        }
        options.grace_period_seconds = value.get("gracePeriodSeconds").and_then(Value::as_i64);
        options.precondition_uid = value
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        options.precondition_rv = value
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    if let Some(grace) = params.get("gracePeriodSeconds").filter(|g| !g.is_empty()) {
        options.grace_period_seconds = Some(grace.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid gracePeriodSeconds: {grace:?}"))
        })?);
    }
    Ok(options)
}

/// How often a DELETE re-reads the object after a concurrent write.
const DELETE_ATTEMPTS: u32 = 5;

/// `DELETE` of one object.
pub(crate) async fn delete(
    store: &dyn Store,
    target: &Target,
    name: &str,
    params: &Params,
    body: &[u8],
    write: &WriteOptions,
    admit: &Admit<'_>,
) -> Result<Written, ApiError> {
    let options = delete_options(params, body, write)?;
    let mut warnings = Vec::new();
    // Marking an object for deletion is a read-modify-write; a controller writing the object in
    // between makes it conflict. Without a client precondition that is not the client's
    // conflict: read again and retry, as kube-apiserver's GuaranteedUpdate does.
    let mut attempts = 0;
    loop {
        // Only the last attempt's webhooks speak.
        warnings.clear();
        let kv = get_kv(store, target, name).await?;
        match delete_one(store, target, name, &kv, &options, admit, &mut warnings).await {
            Err(e)
                if e.reason == "Conflict"
                    && options.precondition_rv.is_none()
                    && options.precondition_uid.is_none()
                    && attempts < DELETE_ATTEMPTS =>
            {
                attempts += 1;
            }
            result => {
                let body = crd::convert::present(store, target, result?).await?;
                return Ok(Written {
                    warnings,
                    ..Written::ok(body)
                });
            }
        }
    }
}

async fn delete_one(
    store: &dyn Store,
    target: &Target,
    name: &str,
    kv: &KeyValue,
    options: &DeleteOptions,
    admit: &Admit<'_>,
    warnings: &mut Vec<String>,
) -> Result<Value, ApiError> {
    let resource = target.resource;
    let mut current = decode_kv(kv)?;
    if let Some(uid) = &options.precondition_uid {
        let actual = meta_str(&current, "uid").unwrap_or_default();
        if uid != actual {
            return Err(ApiError::conflict_message(
                resource,
                name,
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                ),
            ));
        }
    }
    if let Some(rv) = &options.precondition_rv
        && *rv != kv.mod_revision.to_string()
    {
        return Err(ApiError::conflict(resource, name));
    }
    let attempt = Attempt {
        target,
        name,
        operation: Operation::Delete,
        dry_run: options.dry_run,
    };
    // Admission sees a custom resource in the version of the request.
    let loaded;
    let old = if target.custom.as_ref().is_some_and(|c| c.webhook.is_some()) {
        loaded = crd::convert::load(store, target, current.clone()).await?;
        &loaded
    } else {
        &current
    };
    admit.mutate(&attempt, None, Some(old), warnings).await?;
    admit.validate(&attempt, None, Some(old), warnings).await?;
    let terminating = meta_str(&current, "deletionTimestamp").is_some();
    if !terminating {
        finalizers::on_delete(&mut current, options.propagation);
    }
    let has_finalizers = current
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let bound_pod = resource.kind == "Pod"
        && current
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
    let graceful = (bound_pod && options.grace_period_seconds != Some(0))
        || resource.kind == "Namespace"
        || has_finalizers;
    if !graceful {
        if options.dry_run {
            return Ok(current);
        }
        store
            .delete(&target.key(name), Some(kv.mod_revision))
            .await
            .map_err(|e| ApiError::from_store(e, resource, name))?;
        tracing::debug!(name, "deleted");
        allocator::release(store, resource, &current, None).await;
        return Ok(current);
    }
    if terminating {
        return Ok(current);
    }
    let mut next = current.clone();
    let grace = if bound_pod {
        options
            .grace_period_seconds
            .or_else(|| {
                current
                    .pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
            .max(0)
    } else {
        0
    };
    if let Some(meta) = metadata_mut(&mut next) {
        meta.insert("deletionTimestamp".into(), json!(now_rfc3339(grace)));
        meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
    }
    if resource.kind == "Namespace"
        && let Some(root) = next.as_object_mut()
    {
        root.insert("status".into(), json!({"phase": "Terminating"}));
    }
    if options.dry_run {
        return Ok(next);
    }
    tracing::debug!(name, grace, "marked for deletion");
    write(store, target, name, next, kv.mod_revision).await
}

/// `DELETE` of a collection.
pub(crate) async fn delete_collection(
    store: &dyn Store,
    target: &Target,
    params: &Params,
    body: &[u8],
    write: &WriteOptions,
    admit: &Admit<'_>,
) -> Result<Written, ApiError> {
    let options = delete_options(params, body, write)?;
    let mut warnings = Vec::new();
    let selectors = Selectors::parse(target.resource, params, None)?;
    let listed = store
        .list(&target.prefix(), ListOptions::default())
        .await
        .map_err(|e| ApiError::from_store(e, target.resource, ""))?;
    let mut items = Vec::new();
    for kv in &listed.items {
        let object = decode_kv(kv)?;
        if !selectors.matches(&object) {
            continue;
        }
        let name = meta_str(&object, "name").unwrap_or_default().to_owned();
        let scoped = Target {
            resource: target.resource,
            namespace: meta_str(&object, "namespace").map(str::to_owned),
            name: Some(name.clone()),
            subresource: None,
            custom: target.custom.clone(),
        };
        match delete_one(store, &scoped, &name, kv, &options, admit, &mut warnings).await {
            Ok(deleted) => items.push(deleted),
            // Changed or gone since the listing: as Kubernetes, skip it.
            Err(e) if e.reason == "NotFound" || e.reason == "Conflict" => {}
            Err(e) => return Err(e),
        }
    }
    let items = crd::convert::present_all(store, target, items).await?;
    Ok(Written {
        warnings,
        ..Written::ok(json!({
            "kind": list_kind(target.resource),
            "apiVersion": target.resource.api_version(),
            "metadata": {"resourceVersion": listed.revision.to_string()},
            "items": items,
        }))
    })
}

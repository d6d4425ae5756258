//! The reading verbs: get (as the object, a Table or a Scale), list (with selectors, paging
//! and `resourceVersion`/`resourceVersionMatch`) and pods' logs.

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse as _, Response},
};
use keelson_store::{KeyValue, ListOptions, Store, StoreError};
use serde_json::{Value, json};

use crate::{
    ApiError, AppState,
    discovery::json_response,
    object::{decode_kv, with_resource_version},
    registry::{self, Resource},
    request::{Params, Selectors, Target, parse_revision},
    table::Printer,
};

pub(crate) fn ok(object: &Value) -> Response {
    json_response(StatusCode::OK, object)
}

/// The stored key-value of `name`, or 404.
pub(crate) async fn get_kv(
    store: &dyn Store,
    target: &Target,
    name: &str,
) -> Result<KeyValue, ApiError> {
    store
        .get(&target.key(name), None)
        .await
        .map_err(|e| ApiError::from_store(e, target.resource, name))?
        .ok_or_else(|| ApiError::not_found(target.resource, name))
}

/// `GET .../<name>` (and `.../<name>/status`).
pub(crate) async fn get(
    store: &dyn Store,
    target: &Target,
    name: &str,
    printer: Option<Printer>,
) -> Result<Response, ApiError> {
    let kv = get_kv(store, target, name).await?;
    let object = crate::crd::convert::present(store, target, decode_kv(&kv)?).await?;
    Ok(match printer {
        Some(printer) => ok(&printer.single(&object, true)),
        None => ok(&object),
    })
}

/// `GET .../<name>/scale`.
pub(crate) async fn scale(
    store: &dyn Store,
    target: &Target,
    name: &str,
) -> Result<Response, ApiError> {
    let kv = get_kv(store, target, name).await?;
    let object = crate::crd::convert::load(store, target, decode_kv(&kv)?).await?;
    let scale = crate::crd::scale_view(target, &object)?;
    Ok(ok(&scale))
}

/// `GET pods/<name>/log`: proxied to the pod's node agent.
pub(crate) async fn pod_log(
    state: &AppState,
    target: &Target,
    name: &str,
    params: &Params,
) -> Result<Response, ApiError> {
    let (pod, node) = pod_and_node(state.store.as_ref(), target, name).await?;
    let namespace = target.namespace.as_deref().unwrap_or("default");
    crate::pod_log::proxy(
        state.kubelet.as_ref(),
        &pod,
        node.as_ref(),
        namespace,
        name,
        params,
    )
    .await
}

/// The pod `name` of `target` (404 if absent) and the Node it is bound to, if it is bound
/// and that Node exists.
pub(crate) async fn pod_and_node(
    store: &dyn Store,
    target: &Target,
    name: &str,
) -> Result<(Value, Option<Value>), ApiError> {
    let pod = decode_kv(&get_kv(store, target, name).await?)?;
    let node = match pod.pointer("/spec/nodeName").and_then(Value::as_str) {
        Some(node_name) => node(store, node_name).await?,
        None => None,
    };
    Ok((pod, node))
}

/// The Node `name`, if it exists.
pub(crate) async fn node(store: &dyn Store, name: &str) -> Result<Option<Value>, ApiError> {
    let nodes = registry::find("", "v1", "nodes").ok_or_else(ApiError::no_route)?;
    store
        .get(&nodes.key(None, name), None)
        .await
        .map_err(|e| ApiError::from_store(e, nodes, name))?
        .map(|kv| decode_kv(&kv))
        .transpose()
}

pub(crate) fn list_kind(resource: &Resource) -> String {
    format!("{}List", resource.kind)
}

/// What `resourceVersion` and `resourceVersionMatch` ask of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListAt {
    /// The newest state (no resourceVersion, or "0": any state will do).
    Latest,
    /// The newest state, which must be at least this revision.
    NotOlderThan(i64),
    /// Exactly this revision.
    Exact(i64),
}

/// kube-apiserver's `ValidateListOptions` and the list semantics of
/// `resourceVersion`/`resourceVersionMatch` (a `continue` token carries its own revision).
fn list_at(params: &Params) -> Result<ListAt, ApiError> {
    let rv = params
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or("");
    let matching = params
        .get("resourceVersionMatch")
        .map(String::as_str)
        .unwrap_or("");
    let continuing = params.get("continue").is_some_and(|c| !c.is_empty());
    let invalid = |line: String| ApiError::invalid_options("ListOptions", &line);
    match matching {
        "" => {}
        "NotOlderThan" | "Exact" if rv.is_empty() => {
            return Err(invalid(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless \
                 resourceVersion is provided"
                    .into(),
            ));
        }
        "NotOlderThan" | "Exact" if continuing => {
            return Err(invalid(
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden when \
                 continue is provided"
                    .into(),
            ));
        }
        "Exact" if rv == "0" => {
            return Err(invalid(format!(
                "resourceVersionMatch: Forbidden: resourceVersionMatch \"Exact\" is forbidden \
                 for resourceVersion \"{rv}\""
            )));
        }
        "NotOlderThan" | "Exact" => {}
        other => {
            return Err(invalid(format!(
                "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \
                 \"Exact\", \"NotOlderThan\""
            )));
        }
    }
    if rv.is_empty() || rv == "0" {
        return Ok(ListAt::Latest);
    }
    let revision = parse_revision(rv, "resourceVersion")?;
    Ok(match matching {
        "Exact" => ListAt::Exact(revision),
        _ => ListAt::NotOlderThan(revision),
    })
}

/// `GET` of a collection.
pub(crate) async fn list(
    store: &dyn Store,
    target: &Target,
    params: &Params,
    printer: Option<Printer>,
) -> Result<Response, ApiError> {
    let selectors = Selectors::parse(target.resource, params, None)?;
    let at = list_at(params)?;
    let mut options = ListOptions::default();
    if let Some(limit) = params.get("limit").filter(|l| !l.is_empty()) {
        let limit: usize = limit
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid limit: {limit:?}")))?;
        options.limit = (limit > 0).then_some(limit);
    }
    if let ListAt::Exact(revision) = at {
        options.revision = Some(revision);
    }
    if let Some(token) = params.get("continue").filter(|c| !c.is_empty()) {
        let (revision, key) = token
            .split_once(':')
            .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
        if !key.starts_with(&target.prefix()) {
            return Err(ApiError::bad_request("invalid continue token"));
        }
        options.revision = Some(parse_revision(revision, "continue token")?);
        options.start_after = Some(key.to_owned());
    }
    let continuing = options.start_after.is_some();
    let result = store
        .list(&target.prefix(), options)
        .await
        .map_err(|e| match e {
            StoreError::Compacted { .. } if continuing => ApiError {
                code: StatusCode::GONE,
                reason: "Expired",
                message: "The provided continue parameter is too old to display a consistent \
                          list result. You can start a new list without the continue parameter."
                    .into(),
                details: None,
            },
            other => ApiError::from_store(other, target.resource, ""),
        })?;
    if let ListAt::NotOlderThan(wanted) = at
        && wanted > result.revision
    {
        return Err(ApiError::from_store(
            StoreError::FutureRevision {
                requested: wanted,
                current: result.revision,
            },
            target.resource,
            "",
        ));
    }
    let mut metadata = json!({"resourceVersion": result.revision.to_string()});
    if let Some(last) = result.items.last().filter(|_| result.more) {
        metadata["continue"] = json!(format!("{}:{}", result.revision, last.key));
    }
    if printer.is_none() && selectors.is_everything() && !target.resource.converts() {
        return Ok(raw_list(target.resource, &metadata, &result.items));
    }
    let objects = result
        .items
        .iter()
        .map(decode_kv)
        .collect::<Result<Vec<_>, _>>()?;
    let items: Vec<Value> = if target.custom.is_some() {
        // Custom resources are selected in the version asked for (its `selectableFields`),
        // after conversion: one conversion review for the page.
        crate::crd::convert::present_all(store, target, objects)
            .await?
            .into_iter()
            .filter(|o| selectors.matches(o))
            .collect()
    } else {
        objects
            .into_iter()
            .filter(|o| selectors.matches(o))
            .map(|o| target.resource.present(o))
            .collect()
    };
    if let Some(printer) = printer {
        return Ok(ok(&printer.table(&items, metadata, true)));
    }
    Ok(ok(&json!({
        "kind": list_kind(target.resource),
        "apiVersion": target.resource.api_version(),
        "metadata": metadata,
        "items": items,
    })))
}

/// A list answered from the stored bytes: each object gets its resourceVersion spliced in
/// ([`with_resource_version`]) instead of a parse and a serialization; objects stored in
/// another layout (by an older keelson) are decoded as usual.
fn raw_list(resource: &Resource, metadata: &Value, items: &[KeyValue]) -> Response {
    let head = json!({
        "kind": list_kind(resource),
        "apiVersion": resource.api_version(),
        "metadata": metadata,
    });
    let mut body = head.to_string().into_bytes();
    body.pop(); // the closing brace: the items follow
    body.extend_from_slice(b",\"items\":[");
    let size: usize = items.iter().map(|kv| kv.value.len() + 32).sum();
    body.reserve(size + 2);
    for (i, kv) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        if !with_resource_version(&kv.value, kv.mod_revision, &mut body) {
            match decode_kv(kv) {
                Ok(object) => body.extend_from_slice(object.to_string().as_bytes()),
                Err(e) => return e.into_response(),
            }
        }
    }
    body.extend_from_slice(b"]}");
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn resource_version_match_follows_kube_apiservers_rules() {
        assert_eq!(list_at(&params(&[])), Ok(ListAt::Latest));
        assert_eq!(
            list_at(&params(&[("resourceVersion", "0")])),
            Ok(ListAt::Latest)
        );
        assert_eq!(
            list_at(&params(&[("resourceVersion", "7")])),
            Ok(ListAt::NotOlderThan(7))
        );
        assert_eq!(
            list_at(&params(&[
                ("resourceVersion", "7"),
                ("resourceVersionMatch", "Exact")
            ])),
            Ok(ListAt::Exact(7))
        );
        assert_eq!(
            list_at(&params(&[
                ("resourceVersion", "0"),
                ("resourceVersionMatch", "NotOlderThan")
            ])),
            Ok(ListAt::Latest)
        );
        for (bad, message) in [
            (
                vec![("resourceVersionMatch", "Exact")],
                "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided",
            ),
            (
                vec![("resourceVersion", "0"), ("resourceVersionMatch", "Exact")],
                "resourceVersionMatch: Forbidden: resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"",
            ),
            (
                vec![("resourceVersion", "3"), ("resourceVersionMatch", "Newest")],
                "resourceVersionMatch: Unsupported value: \"Newest\": supported values: \"Exact\", \"NotOlderThan\"",
            ),
        ] {
            let error = list_at(&params(&bad)).expect_err("refused");
            assert_eq!(error.code, StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(
                error.message,
                format!("ListOptions.meta.k8s.io \"\" is invalid: {message}")
            );
        }
    }
}

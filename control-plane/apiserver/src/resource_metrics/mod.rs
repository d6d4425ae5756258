//! `metrics.k8s.io/v1beta1`, served as metrics-server serves it (`kubectl top`, the
//! HorizontalPodAutoscaler): `NodeMetrics` and `PodMetrics` read from the node agents'
//! kubelet Summary API ([`scrape`]), converted in [`convert`].
//!
//! - Discovery: the group in `/apis` (legacy and aggregated documents, after the groups the
//!   aggregation layer adds), `/apis/metrics.k8s.io` and `/apis/metrics.k8s.io/v1beta1`
//!   (`nodes` and `pods`, verbs `get` and `list`).
//! - `GET .../nodes[/NAME]`, `.../pods` (every namespace) and `.../namespaces/NS/pods[/NAME]`,
//!   with `labelSelector` and `fieldSelector` (`metadata.name`, `metadata.namespace`) matched
//!   against the Nodes and Pods as metrics-server does. Objects that exist but have no usage
//!   (a node that is not Ready or does not answer, a pod whose node does not, a container not
//!   sampled twice yet) are left out of lists; asked for by name they are `NotFound` in the
//!   metrics resource (`podmetrics.metrics.k8s.io "NS/NAME" not found`, metrics-server's
//!   wording); a Node or Pod that does not exist is the object's own `NotFound`.
//! - Authorization is the normal path: the request's attributes carry group
//!   `metrics.k8s.io` and resource `nodes`/`pods` (`system:aggregated-metrics-reader`).
//!
//! These routes take precedence over an APIService for `v1beta1.metrics.k8s.io`: installing
//! metrics-server beside keelson does not replace them.

mod convert;
mod scrape;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::{
    Extension, Router,
    body::Body,
    extract::{Query, State},
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::{any, get},
};
use keelson_api::selectors::{FieldSelector, LabelSelector};
use keelson_store::ListOptions;
use serde_json::{Value, json};

use crate::{
    ApiError, AppState,
    discovery::json_response,
    error::Details,
    object::decode_kv,
    registry::{self, Resource},
    request::Params,
};

/// The group served.
pub(crate) const GROUP: &str = "metrics.k8s.io";
/// Its only version.
pub(crate) const VERSION: &str = "v1beta1";

/// The routes under `/apis/metrics.k8s.io`, each app with its own scrape cache.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/apis/metrics.k8s.io", get(group))
        .route("/apis/metrics.k8s.io/", get(group))
        .route("/apis/metrics.k8s.io/{*rest}", any(serve))
        .layer(Extension(Arc::new(scrape::Cache::default())))
}

fn group_entry() -> Value {
    let version = json!({"groupVersion": convert::API_VERSION, "version": VERSION});
    json!({"name": GROUP, "versions": [version], "preferredVersion": version})
}

fn resource_list() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": convert::API_VERSION,
        "resources": [
            {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics",
             "verbs": ["get", "list"]},
            {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics",
             "verbs": ["get", "list"]},
        ],
    })
}

async fn group() -> Response {
    let mut body = group_entry();
    body["kind"] = json!("APIGroup");
    body["apiVersion"] = json!("v1");
    json_response(StatusCode::OK, &body)
}

/// `/apis`: what [`crate::aggregation::discovery::group_list`] answers, with this group added
/// (unless an APIService already put it there).
pub(crate) async fn group_list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let answer = crate::aggregation::discovery::group_list(State(state), headers).await;
    let (mut parts, body) = answer.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let Ok(mut document) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let aggregated = document["kind"] == "APIGroupDiscoveryList";
    let (field, entry) = if aggregated {
        let version = json!({
            "version": VERSION,
            "resources": crate::aggregation::discovery::discovery_resources(
                &resource_list(), GROUP, VERSION),
            "freshness": "Current",
        });
        (
            "items",
            json!({"metadata": {"name": GROUP, "creationTimestamp": null}, "versions": [version]}),
        )
    } else {
        ("groups", group_entry())
    };
    if let Some(list) = document.get_mut(field).and_then(Value::as_array_mut) {
        let present = list
            .iter()
            .any(|g| g["name"] == GROUP || g.pointer("/metadata/name") == Some(&json!(GROUP)));
        if !present {
            list.push(entry);
        }
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(document.to_string()))
}

/// What a path under the group version names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target<'a> {
    /// `/apis/metrics.k8s.io/v1beta1`.
    Resources,
    /// `nodes[/NAME]`.
    Nodes(Option<&'a str>),
    /// `pods` (namespace `None`) or `namespaces/NS/pods[/NAME]`.
    Pods(Option<&'a str>, Option<&'a str>),
}

fn target(rest: &str) -> Option<Target<'_>> {
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    match parts.as_slice() {
        [VERSION] => Some(Target::Resources),
        [VERSION, "nodes"] => Some(Target::Nodes(None)),
        [VERSION, "nodes", name] => Some(Target::Nodes(Some(name))),
        [VERSION, "pods"] => Some(Target::Pods(None, None)),
        [VERSION, "namespaces", ns, "pods"] => Some(Target::Pods(Some(ns), None)),
        [VERSION, "namespaces", ns, "pods", name] => Some(Target::Pods(Some(ns), Some(name))),
        _ => None,
    }
}

async fn serve(
    State(state): State<AppState>,
    Extension(cache): Extension<Arc<scrape::Cache>>,
    method: Method,
    uri: Uri,
) -> Response {
    let rest = uri
        .path()
        .strip_prefix("/apis/metrics.k8s.io/")
        .unwrap_or_default();
    let Some(target) = target(rest) else {
        return ApiError::no_route().into_response();
    };
    if method != Method::GET && method != Method::HEAD {
        return ApiError::method_not_allowed(method.as_str()).into_response();
    }
    let params = Query::<Params>::try_from_uri(&uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let result = match target {
        Target::Resources => Ok(json_response(StatusCode::OK, &resource_list())),
        Target::Nodes(name) => nodes(&state, &cache, name, &params).await,
        Target::Pods(namespace, name) => pods(&state, &cache, namespace, name, &params).await,
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// The request's `labelSelector` and `fieldSelector`.
fn selectors(params: &Params) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(params.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = FieldSelector::parse(
        params.get("fieldSelector").map_or("", String::as_str),
        &["metadata.name", "metadata.namespace"],
    )
    .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((labels, fields))
}

fn selected(object: &Value, labels: &LabelSelector, fields: &FieldSelector) -> bool {
    let set = object
        .pointer("/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    labels.matches(&set) && fields.matches(object)
}

fn core(plural: &str) -> Result<&'static Resource, ApiError> {
    registry::find("", "v1", plural).ok_or_else(ApiError::no_route)
}

async fn read_all(
    state: &AppState,
    resource: &Resource,
    namespace: Option<&str>,
) -> Result<Vec<Value>, ApiError> {
    let listed = state
        .store
        .list(
            &resource.collection_prefix(namespace),
            ListOptions::default(),
        )
        .await
        .map_err(|e| ApiError::from_store(e, resource, ""))?;
    listed.items.iter().map(decode_kv).collect()
}

async fn read_one(
    state: &AppState,
    resource: &Resource,
    namespace: Option<&str>,
    name: &str,
) -> Result<Value, ApiError> {
    let kv = state
        .store
        .get(&resource.key(namespace, name), None)
        .await
        .map_err(|e| ApiError::from_store(e, resource, name))?
        .ok_or_else(|| ApiError::not_found(resource, name))?;
    decode_kv(&kv)
}

/// 404 for an object that exists but has no metrics: `<plural>.metrics.k8s.io "<name>" not
/// found`.
fn no_metrics(plural: &str, name: &str) -> ApiError {
    ApiError {
        code: StatusCode::NOT_FOUND,
        reason: "NotFound",
        message: format!("{plural}.{GROUP} \"{name}\" not found"),
        details: Some(Box::new(Details {
            name: name.to_owned(),
            group: GROUP.to_owned(),
            kind: plural.to_owned(),
            ..Details::default()
        })),
    }
}

fn now() -> String {
    convert::time(&jiff::Timestamp::now().to_string()).unwrap_or_default()
}

async fn nodes(
    state: &AppState,
    cache: &scrape::Cache,
    name: Option<&str>,
    params: &Params,
) -> Result<Response, ApiError> {
    let resource = core("nodes")?;
    let now = now();
    if let Some(name) = name {
        let node = read_one(state, resource, None, name).await?;
        let summaries = cache
            .summaries(state.kubelet.as_ref(), std::slice::from_ref(&node))
            .await;
        let metrics = summaries
            .get(name)
            .and_then(|s| convert::node_metrics(&node, s, &now))
            .ok_or_else(|| no_metrics("nodemetrics", name))?;
        return Ok(json_response(StatusCode::OK, &metrics));
    }
    let (labels, fields) = selectors(params)?;
    let nodes: Vec<Value> = read_all(state, resource, None)
        .await?
        .into_iter()
        .filter(|n| selected(n, &labels, &fields))
        .collect();
    let summaries = cache.summaries(state.kubelet.as_ref(), &nodes).await;
    let items = nodes
        .iter()
        .filter_map(|node| {
            let name = node.pointer("/metadata/name")?.as_str()?;
            convert::node_metrics(node, summaries.get(name)?, &now)
        })
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &convert::list("NodeMetrics", items),
    ))
}

async fn pods(
    state: &AppState,
    cache: &scrape::Cache,
    namespace: Option<&str>,
    name: Option<&str>,
    params: &Params,
) -> Result<Response, ApiError> {
    let resource = core("pods")?;
    let now = now();
    let pods = match name {
        Some(name) => vec![read_one(state, resource, namespace, name).await?],
        None => {
            let (labels, fields) = selectors(params)?;
            read_all(state, resource, namespace)
                .await?
                .into_iter()
                .filter(|p| selected(p, &labels, &fields))
                .collect()
        }
    };
    let node_names: Vec<&str> = pods
        .iter()
        .filter_map(|p| p.pointer("/spec/nodeName")?.as_str())
        .collect();
    let nodes: Vec<Value> = read_all(state, core("nodes")?, None)
        .await?
        .into_iter()
        .filter(|n| {
            n.pointer("/metadata/name")
                .and_then(Value::as_str)
                .is_some_and(|name| node_names.contains(&name))
        })
        .collect();
    let summaries = cache.summaries(state.kubelet.as_ref(), &nodes).await;
    let items: Vec<Value> = pods
        .iter()
        .filter_map(|pod| {
            let node = pod.pointer("/spec/nodeName")?.as_str()?;
            let stats = convert::pod_stats(summaries.get(node)?, pod)?;
            convert::pod_metrics(pod, stats, &now)
        })
        .collect();
    match name {
        Some(name) => {
            let full = format!("{}/{name}", namespace.unwrap_or_default());
            let metrics = items
                .into_iter()
                .next()
                .ok_or_else(|| no_metrics("podmetrics", &full))?;
            Ok(json_response(StatusCode::OK, &metrics))
        }
        None => Ok(json_response(
            StatusCode::OK,
            &convert::list("PodMetrics", items),
        )),
    }
}

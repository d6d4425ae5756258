//! The aggregated groups in `/apis`: every Service-backed APIService's group in the legacy
//! `APIGroupList` (available or not, as kube-aggregator lists them, so clients report an
//! unreachable group instead of not knowing it), and in the aggregated discovery document the
//! resources of each available one, read from its backend's `/apis/<group>/<version>`.

use std::{collections::BTreeMap, time::Duration};

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, Request, header},
    response::Response,
};
use keelson_store::Revision;
use serde_json::{Value, json};

use super::{Backend, backend_of, list, send};
use crate::{AppState, registry::GROUPS};

/// How long a backend's discovery may take before its group is left out.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest discovery document read from a backend.
const MAX_DISCOVERY_BYTES: usize = 4 * 1024 * 1024;

/// The Service-backed APIServices of groups keelson does not serve itself, ordered as kube
/// orders them: by group, then by `versionPriority` (highest first), then by version.
fn backends(api_services: &[(Revision, Value)]) -> Vec<(Backend, bool)> {
    let mut out: Vec<(Backend, bool)> = api_services
        .iter()
        .filter_map(|(_, s)| {
            let backend = backend_of(s)?;
            let available = s
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Available" && c["status"] == "True");
            Some((backend, available))
        })
        .filter(|(b, _)| !b.group.is_empty() && !GROUPS.iter().any(|(g, _)| *g == b.group))
        .collect();
    out.sort_by(|(a, _), (b, _)| {
        a.group
            .cmp(&b.group)
            .then(b.version_priority.cmp(&a.version_priority))
            .then(a.version.cmp(&b.version))
    });
    out
}

/// The `APIGroup` entries of the aggregated groups.
pub(crate) fn aggregated_groups(api_services: &[(Revision, Value)]) -> Vec<Value> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (backend, _) in backends(api_services) {
        groups
            .entry(backend.group.clone())
            .or_default()
            .push(backend.version.clone());
    }
    groups
        .into_iter()
        .map(|(name, versions)| {
            let gv = |v: &str| json!({"groupVersion": format!("{name}/{v}"), "version": v});
            let preferred = gv(&versions[0]);
            json!({
                "name": name,
                "versions": versions.iter().map(|v| gv(v)).collect::<Vec<_>>(),
                "preferredVersion": preferred,
            })
        })
        .collect()
}

/// An `APIResourceList` as the resources of an aggregated discovery version.
pub(crate) fn discovery_resources(list: &Value, group: &str, version: &str) -> Vec<Value> {
    let entries: Vec<&Value> = list
        .get("resources")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let kind_of = |e: &Value| {
        json!({
            "group": e.get("group").and_then(Value::as_str).unwrap_or(group),
            "version": e.get("version").and_then(Value::as_str).unwrap_or(version),
            "kind": e.get("kind").and_then(Value::as_str).unwrap_or_default(),
        })
    };
    let mut resources: Vec<Value> = Vec::new();
    for e in entries
        .iter()
        .filter(|e| !e["name"].as_str().unwrap_or("/").contains('/'))
    {
        let mut resource = json!({
            "resource": e["name"],
            "responseKind": kind_of(e),
            "scope": if e["namespaced"] == true { "Namespaced" } else { "Cluster" },
            "singularResource": e.get("singularName").cloned().unwrap_or(json!("")),
            "verbs": e.get("verbs").cloned().unwrap_or(json!([])),
        });
        for field in ["shortNames", "categories"] {
            if let Some(list) = e
                .get(field)
                .filter(|l| l.as_array().is_some_and(|a| !a.is_empty()))
            {
                resource[field] = list.clone();
            }
        }
        resources.push(resource);
    }
    for e in &entries {
        let Some((parent, sub)) = e["name"].as_str().and_then(|n| n.split_once('/')) else {
            continue;
        };
        if let Some(resource) = resources.iter_mut().find(|r| r["resource"] == parent) {
            let entry = json!({
                "subresource": sub,
                "responseKind": kind_of(e),
                "verbs": e.get("verbs").cloned().unwrap_or(json!([])),
            });
            match resource
                .get_mut("subresources")
                .and_then(Value::as_array_mut)
            {
                Some(list) => list.push(entry),
                None => resource["subresources"] = json!([entry]),
            }
        }
    }
    resources
}

/// Reads `backend`'s `/apis/<group>/<version>`; `None` when it does not answer in time with a
/// resource list.
async fn fetch(state: &AppState, backend: &Backend) -> Option<Value> {
    let client = state.aggregator.as_ref()?;
    let mut request = Request::get(format!("/apis/{}/{}", backend.group, backend.version))
        .body(Body::empty())
        .ok()?;
    request
        .headers_mut()
        .insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    let aggregator = crate::UserInfo::new("system:kube-aggregator", &[crate::auth::MASTERS_GROUP]);
    for (name, value) in super::identity_headers(&aggregator) {
        request
            .headers_mut()
            .append(name, HeaderValue::from_str(&value).ok()?);
    }
    let fetched = async {
        let response = send(client, state.store.as_ref(), backend, request)
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body = axum::body::to_bytes(Body::new(response.into_body()), MAX_DISCOVERY_BYTES)
            .await
            .ok()?;
        serde_json::from_slice::<Value>(&body).ok()
    };
    tokio::time::timeout(FETCH_TIMEOUT, fetched)
        .await
        .ok()
        .flatten()
}

/// `/apis`: keelson's own groups ([`crate::discovery::group_list`]) and the aggregated ones.
pub(crate) async fn group_list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let local = crate::discovery::group_list(State(state.clone()), headers).await;
    let api_services = match list(state.store.as_ref()).await {
        Ok(list) => list,
        Err(error) => {
            tracing::warn!(%error, "listing APIServices for discovery");
            return local;
        }
    };
    let backends = backends(&api_services);
    if backends.is_empty() {
        return local;
    }
    let (mut parts, body) = local.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let Ok(mut document) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let additions: Vec<Value> = if document["kind"] == "APIGroupDiscoveryList" {
        let mut groups: Vec<(String, Vec<Value>)> = Vec::new();
        for (backend, available) in &backends {
            if !available {
                continue;
            }
            let Some(resources) = fetch(&state, backend).await else {
                continue;
            };
            let version = json!({
                "version": backend.version,
                "resources": discovery_resources(&resources, &backend.group, &backend.version),
                "freshness": "Current",
            });
            match groups.iter_mut().find(|(g, _)| *g == backend.group) {
                Some((_, versions)) => versions.push(version),
                None => groups.push((backend.group.clone(), vec![version])),
            }
        }
        groups
            .into_iter()
            .map(|(name, versions)| {
                json!({"metadata": {"name": name, "creationTimestamp": null}, "versions": versions})
            })
            .collect()
    } else {
        aggregated_groups(&api_services)
    };
    let list_field = if document["kind"] == "APIGroupDiscoveryList" {
        "items"
    } else {
        "groups"
    };
    if let Some(list) = document.get_mut(list_field).and_then(Value::as_array_mut) {
        list.extend(additions);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(document.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_service(
        group: &str,
        version: &str,
        priority: i64,
        available: bool,
    ) -> (Revision, Value) {
        (
            1,
            json!({"metadata": {"name": format!("{version}.{group}")},
                   "spec": {"group": group, "version": version, "versionPriority": priority,
                            "service": {"namespace": "ns", "name": "svc"}},
                   "status": {"conditions": [{"type": "Available",
                                              "status": if available { "True" } else { "False" }}]}}),
        )
    }

    #[test]
    fn aggregated_groups_prefer_the_highest_version_priority() {
        let groups = aggregated_groups(&[
            api_service("metrics.k8s.io", "v1beta1", 100, true),
            api_service("metrics.k8s.io", "v1", 200, false),
            // Local groups are keelson's own.
            api_service("apps", "v1", 15, true),
            (
                1,
                json!({"metadata": {"name": "v1.local.example"},
                       "spec": {"group": "local.example", "version": "v1"}}),
            ),
        ]);
        assert_eq!(
            groups,
            [json!({"name": "metrics.k8s.io",
                    "versions": [{"groupVersion": "metrics.k8s.io/v1", "version": "v1"},
                                 {"groupVersion": "metrics.k8s.io/v1beta1", "version": "v1beta1"}],
                    "preferredVersion": {"groupVersion": "metrics.k8s.io/v1", "version": "v1"}})]
        );
    }

    #[test]
    fn resource_lists_become_aggregated_discovery_resources() {
        let list = json!({"kind": "APIResourceList", "groupVersion": "metrics.k8s.io/v1beta1",
        "resources": [
            {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
            {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics",
             "verbs": ["get", "list"], "shortNames": ["nm"]},
            {"name": "nodes/status", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get"]},
        ]});
        assert_eq!(
            discovery_resources(&list, "metrics.k8s.io", "v1beta1"),
            [
                json!({"resource": "pods", "responseKind": {"group": "metrics.k8s.io", "version": "v1beta1", "kind": "PodMetrics"},
                       "scope": "Namespaced", "singularResource": "", "verbs": ["get", "list"]}),
                json!({"resource": "nodes", "responseKind": {"group": "metrics.k8s.io", "version": "v1beta1", "kind": "NodeMetrics"},
                       "scope": "Cluster", "singularResource": "", "verbs": ["get", "list"], "shortNames": ["nm"],
                       "subresources": [{"subresource": "status",
                                         "responseKind": {"group": "metrics.k8s.io", "version": "v1beta1", "kind": "NodeMetrics"},
                                         "verbs": ["get"]}]}),
            ]
        );
    }
}

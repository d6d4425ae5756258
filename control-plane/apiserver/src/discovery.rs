//! Discovery, version and health endpoints.

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use crate::{
    ApiError, AppState, KUBERNETES_VERSION,
    crd::Snapshot,
    registry::{self, GROUPS, SUBRESOURCE_VERBS, VERBS},
    request::media_ranges,
};

pub(crate) fn json_response(code: StatusCode, body: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Anything unrouted.
pub(crate) async fn not_found() -> ApiError {
    ApiError::no_route()
}

/// `/version`.
pub(crate) async fn version() -> Response {
    json_response(
        StatusCode::OK,
        &json!({
            "major": "1",
            "minor": "33",
            "gitVersion": KUBERNETES_VERSION,
            "gitCommit": "",
            "gitTreeState": "clean",
            "buildDate": "1970-01-01T00:00:00Z",
            "goVersion": "go1.24 (keelson is written in Rust)",
            "compiler": "rustc",
            "platform": format!("{}/{}", std::env::consts::OS, go_arch()),
        }),
    )
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Which discovery document the Accept header asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Discovery {
    /// `APIVersions` / `APIGroupList` (and one `APIResourceList` per group version).
    Legacy,
    /// `apidiscovery.k8s.io` `APIGroupDiscoveryList` in this version (`v2`, `v2beta1`): every
    /// group, version and resource in one document (kubectl 1.27+ asks for it first).
    Aggregated(&'static str),
}

/// The first acceptable entry of the Accept header wins, as in kube-apiserver.
fn discovery_format(headers: &HeaderMap) -> Discovery {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    for range in media_ranges(accept) {
        match (range.as_kind, range.group, range.version) {
            (None, _, _) if range.json => return Discovery::Legacy,
            (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io"), Some("v2"))
                if range.json =>
            {
                return Discovery::Aggregated("v2");
            }
            (Some("APIGroupDiscoveryList"), Some("apidiscovery.k8s.io"), Some("v2beta1"))
                if range.json =>
            {
                return Discovery::Aggregated("v2beta1");
            }
            _ => {}
        }
    }
    Discovery::Legacy
}

fn aggregated_response(version: &str, items: Vec<Value>) -> Response {
    let body = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    });
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                format!(
                    "application/json;g=apidiscovery.k8s.io;v={version};as=APIGroupDiscoveryList"
                ),
            ),
            (header::VARY, "Accept".to_owned()),
        ],
        body.to_string(),
    )
        .into_response()
}

/// `/api`.
pub(crate) async fn core_versions(headers: HeaderMap) -> Response {
    if let Discovery::Aggregated(version) = discovery_format(&headers) {
        return aggregated_response(version, vec![aggregated_group("", &Snapshot::default())]);
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1:6443");
    json_response(
        StatusCode::OK,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
        }),
    )
}

fn group(name: &str, versions: &[&str]) -> Value {
    let gv =
        |version: &str| json!({"groupVersion": format!("{name}/{version}"), "version": version});
    json!({
        "name": name,
        "versions": versions.iter().map(|v| gv(v)).collect::<Vec<_>>(),
        "preferredVersion": gv(versions.first().copied().unwrap_or("v1")),
    })
}

/// `/apis`: the built-in groups, then the groups of CustomResourceDefinitions.
pub(crate) async fn group_list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let snapshot = state.crds.snapshot(&state.store).await;
    // A CRD in a built-in group adds resources to it, not a second entry.
    let custom: Vec<&(String, Vec<String>)> = snapshot
        .groups()
        .iter()
        .filter(|(name, _)| GROUPS.iter().all(|(g, _)| g != name))
        .collect();
    if let Discovery::Aggregated(version) = discovery_format(&headers) {
        let items = GROUPS
            .iter()
            .map(|(name, _)| *name)
            .chain(custom.iter().map(|(name, _)| name.as_str()))
            .map(|name| aggregated_group(name, &snapshot))
            .collect();
        return aggregated_response(version, items);
    }
    let groups: Vec<Value> = GROUPS
        .iter()
        .map(|(n, v)| group(n, v))
        .chain(custom.iter().map(|(n, v)| {
            let versions: Vec<&str> = v.iter().map(String::as_str).collect();
            group(n, &versions)
        }))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    )
}

/// `/apis/<group>`.
pub(crate) fn group_info(name: &str, snapshot: &Snapshot) -> Option<Response> {
    let mut body = match GROUPS.iter().find(|(n, _)| *n == name) {
        Some((n, v)) => group(n, v),
        None => {
            let versions: Vec<&str> = snapshot
                .versions(name)?
                .iter()
                .map(String::as_str)
                .collect();
            group(name, &versions)
        }
    };
    body["kind"] = json!("APIGroup");
    body["apiVersion"] = json!("v1");
    Some(json_response(StatusCode::OK, &body))
}

/// A served resource as discovery describes it, whichever document carries it.
struct Entry {
    name: &'static str,
    singular: &'static str,
    namespaced: bool,
    kind: &'static str,
    verbs: &'static [&'static str],
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    storage_version_hash: Option<String>,
    /// (name, group, version, kind, verbs) of each subresource, sorted by name.
    subresources: Vec<(
        String,
        &'static str,
        &'static str,
        &'static str,
        &'static [&'static str],
    )>,
}

fn entries(group: &str, version: &str, snapshot: &Snapshot) -> Vec<Entry> {
    if crate::reviews::serves(group, version) {
        return crate::reviews::REVIEWS
            .iter()
            .filter(|r| r.group == group)
            .map(|r| Entry {
                name: r.plural,
                singular: r.singular,
                namespaced: r.namespaced,
                kind: r.kind,
                verbs: &["create"],
                short_names: &[],
                categories: &[],
                storage_version_hash: None,
                subresources: Vec::new(),
            })
            .collect();
    }
    let mut entries: Vec<Entry> = registry::in_group_version(group, version)
        .chain(snapshot.in_group_version(group, version))
        .map(|r| {
            let mut subresources = Vec::new();
            if r.status {
                subresources.push((
                    "status".to_owned(),
                    r.group,
                    r.version,
                    r.kind,
                    SUBRESOURCE_VERBS,
                ));
            }
            if r.scale {
                subresources.push((
                    "scale".to_owned(),
                    "autoscaling",
                    "v1",
                    "Scale",
                    SUBRESOURCE_VERBS,
                ));
            }
            for sub in r.extra_subresources {
                // kube answers `serviceaccounts/token` with an authentication.k8s.io/v1 kind.
                let (group, version) = match sub.kind {
                    "TokenRequest" => ("authentication.k8s.io", "v1"),
                    "Eviction" => ("policy", "v1"),
                    _ => (r.group, r.version),
                };
                subresources.push((sub.name.to_owned(), group, version, sub.kind, sub.verbs));
            }
            subresources.sort_by(|a, b| a.0.cmp(&b.0));
            Entry {
                name: r.plural,
                singular: r.singular,
                namespaced: r.namespaced,
                kind: r.kind,
                verbs: VERBS,
                short_names: r.short_names,
                categories: r.categories,
                storage_version_hash: Some(r.storage_version_hash()),
                subresources,
            }
        })
        .collect();
    entries.sort_by_key(|e| e.name);
    entries
}

/// One group of the aggregated discovery document ("" is the core group).
fn aggregated_group(name: &str, snapshot: &Snapshot) -> Value {
    let custom: Vec<&str>;
    let versions: &[&str] = if name.is_empty() {
        &["v1"]
    } else if let Some((_, versions)) = GROUPS.iter().find(|(g, _)| *g == name) {
        versions
    } else {
        custom = snapshot
            .versions(name)
            .unwrap_or_default()
            .iter()
            .map(String::as_str)
            .collect();
        &custom
    };
    let versions: Vec<Value> = versions
        .iter()
        .map(|version| {
            let resources: Vec<Value> = entries(name, version, snapshot)
                .into_iter()
                .map(|e| {
                    let mut resource = json!({
                        "resource": e.name,
                        "responseKind": {"group": name, "version": version, "kind": e.kind},
                        "scope": if e.namespaced { "Namespaced" } else { "Cluster" },
                        "singularResource": e.singular,
                        "verbs": e.verbs,
                    });
                    if !e.short_names.is_empty() {
                        resource["shortNames"] = json!(e.short_names);
                    }
                    if !e.categories.is_empty() {
                        resource["categories"] = json!(e.categories);
                    }
                    if !e.subresources.is_empty() {
                        resource["subresources"] = e
                            .subresources
                            .iter()
                            .map(|(sub, group, version, kind, verbs)| {
                                json!({
                                    "subresource": sub,
                                    "responseKind": {"group": group, "version": version, "kind": kind},
                                    "verbs": verbs,
                                })
                            })
                            .collect();
                    }
                    resource
                })
                .collect();
            json!({"version": version, "resources": resources, "freshness": "Current"})
        })
        .collect();
    let metadata = if name.is_empty() {
        json!({"creationTimestamp": null})
    } else {
        json!({"name": name, "creationTimestamp": null})
    };
    json!({"metadata": metadata, "versions": versions})
}

/// `/api/v1` and `/apis/<group>/<version>`: the APIResourceList.
pub(crate) fn resource_list(group: &str, version: &str, snapshot: &Snapshot) -> Response {
    let mut resources = Vec::new();
    for e in entries(group, version, snapshot) {
        let mut resource = json!({
            "name": e.name,
            "singularName": e.singular,
            "namespaced": e.namespaced,
            "kind": e.kind,
            "verbs": e.verbs,
        });
        if !e.short_names.is_empty() {
            resource["shortNames"] = json!(e.short_names);
        }
        if !e.categories.is_empty() {
            resource["categories"] = json!(e.categories);
        }
        if let Some(hash) = &e.storage_version_hash {
            resource["storageVersionHash"] = json!(hash);
        }
        resources.push(resource);
        for (sub, sub_group, sub_version, kind, verbs) in &e.subresources {
            let mut entry = json!({
                "name": format!("{}/{sub}", e.name),
                "singularName": "",
                "namespaced": e.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if (*sub_group, *sub_version) != (group, version) {
                entry["group"] = json!(sub_group);
                entry["version"] = json!(sub_version);
            }
            resources.push(entry);
        }
    }
    let group_version = if group.is_empty() {
        version.to_owned()
    } else {
        format!("{group}/{version}")
    };
    json_response(
        StatusCode::OK,
        &json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }),
    )
}

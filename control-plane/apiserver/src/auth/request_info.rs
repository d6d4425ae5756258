//! What a request asks, for authorization: kube-apiserver's `RequestInfoFactory` from the
//! path, method and query alone, before any routing (so a user without rights gets 403 for a
//! resource that does not exist, as in Kubernetes).

use std::sync::Arc;

use axum::http::Method;

use super::{
    UserInfo,
    authz::{Attributes, RequestKind, ResourceAttributes},
};
use crate::{ApiError, error::Details, request::Params};

/// Subresources of a namespace itself (`/api/v1/namespaces/ns/status`).
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// The name a field selector pins with `metadata.name=<name>` (or `==`), if it pins one.
fn selected_name(selector: &str) -> Option<String> {
    let mut found = None;
    for requirement in selector.split(',').map(str::trim) {
        let value = requirement
            .strip_prefix("metadata.name==")
            .or_else(|| requirement.strip_prefix("metadata.name="));
        if let Some(value) = value.filter(|v| !v.starts_with('=')) {
            found = Some(value.to_owned());
        }
    }
    found.filter(|n| !n.is_empty() && !n.contains('/') && n != "." && n != "..")
}

/// The attributes of `method path?query` by `user` (kube's `NewRequestInfo`): paths under
/// `/api/<version>/` and `/apis/<group>/<version>/` with a resource are resource requests;
/// everything else (discovery, health, `/openapi`, `/metrics`) is a non-resource path whose
/// verb is the lower-cased method.
pub(crate) fn attributes(
    user: Arc<UserInfo>,
    method: &Method,
    path: &str,
    params: &Params,
) -> Attributes {
    let (verb, request) = classify(method, path, params);
    Attributes {
        user,
        verb,
        request,
    }
}

/// Go's `strconv.ParseBool` (how kube reads `watch=`).
fn go_bool(text: &str) -> bool {
    matches!(text, "1" | "t" | "T" | "TRUE" | "true" | "True")
}

/// Kubernetes' verb and what `method path?query` addresses (see [`attributes`]); the audit
/// log classifies requests with it too.
pub(crate) fn classify(method: &Method, path: &str, params: &Params) -> (String, RequestKind) {
    let non_resource = || {
        (
            method.as_str().to_ascii_lowercase(),
            RequestKind::NonResource {
                path: path.to_owned(),
            },
        )
    };
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match parts.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => ("", (version, rest)),
        ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, (version, rest)),
        _ => return non_resource(),
    };
    let (version, mut rest) = rest;
    let mut verb = match *method {
        Method::POST => "create",
        Method::GET | Method::HEAD => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => "",
    }
    .to_owned();
    if let [special @ ("watch" | "proxy"), tail @ ..] = rest
        && !tail.is_empty()
    {
        verb = (*special).to_owned();
        rest = tail;
    }
    let mut namespace = String::new();
    if let ["namespaces", ns, tail @ ..] = rest {
        namespace = (*ns).to_owned();
        if let [first, ..] = tail
            && !NAMESPACE_SUBRESOURCES.contains(first)
        {
            rest = tail;
        }
    }
    let mut attributes = ResourceAttributes {
        group: group.to_owned(),
        version: (*version).to_owned(),
        namespace,
        ..ResourceAttributes::default()
    };
    if let Some(resource) = rest.first() {
        attributes.resource = (*resource).to_owned();
    }
    if let Some(name) = rest.get(1) {
        attributes.name = (*name).to_owned();
    }
    if let Some(sub) = rest.get(2)
        && verb != "proxy"
    {
        attributes.subresource = (*sub).to_owned();
    }
    if attributes.name.is_empty() && verb == "get" {
        let watch = params.get("watch").is_some_and(|w| go_bool(w));
        verb = if watch { "watch" } else { "list" }.to_owned();
        if let Some(name) = params.get("fieldSelector").and_then(|s| selected_name(s)) {
            attributes.name = name;
        }
    }
    if attributes.name.is_empty() && verb == "delete" {
        verb = "deletecollection".to_owned();
    }
    (verb, RequestKind::Resource(attributes))
}

/// The second check a `get` of `pods/exec`, `pods/attach` or `pods/portforward` needs: the
/// same request as `create` (the WebSocket upgrade is a GET; see [`super::authorize`]).
pub(crate) fn connect_create_check(attributes: &Attributes) -> Option<Attributes> {
    let RequestKind::Resource(resource) = &attributes.request else {
        return None;
    };
    let connect = attributes.verb == "get"
        && resource.group.is_empty()
        && resource.resource == "pods"
        && matches!(
            resource.subresource.as_str(),
            "exec" | "attach" | "portforward"
        );
    connect.then(|| Attributes {
        user: Arc::clone(&attributes.user),
        verb: "create".to_owned(),
        request: attributes.request.clone(),
    })
}

/// Kubernetes' 403 for a denied request (`ForbiddenStatusError`): `pods "p" is forbidden:
/// User "u" cannot get resource "pods" in API group "" in the namespace "ns"`, or `forbidden:
/// User "u" cannot get path "/x"`, with `: <reason>` when the authorizers gave one, and the
/// object in the Status details.
pub(crate) fn forbidden(attributes: &Attributes, reason: &str) -> ApiError {
    let user = &attributes.user.name;
    let verb = &attributes.verb;
    let (message, details) = match &attributes.request {
        RequestKind::NonResource { path } => (
            format!("forbidden: User \"{user}\" cannot {verb} path \"{path}\""),
            None,
        ),
        RequestKind::Resource(r) => {
            let qualified = if r.group.is_empty() {
                r.resource.clone()
            } else {
                format!("{}.{}", r.resource, r.group)
            };
            let object = if r.name.is_empty() {
                qualified
            } else {
                format!("{qualified} \"{}\"", r.name)
            };
            let resource = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let scope = if r.namespace.is_empty() {
                "at the cluster scope".to_owned()
            } else {
                format!("in the namespace \"{}\"", r.namespace)
            };
            (
                format!(
                    "{object} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" \
                     in API group \"{}\" {scope}",
                    r.group
                ),
                Some(Box::new(Details {
                    name: r.name.clone(),
                    group: r.group.clone(),
                    kind: r.resource.clone(),
                    ..Details::default()
                })),
            )
        }
    };
    let mut error = ApiError::forbidden(if reason.is_empty() {
        message
    } else {
        format!("{message}: {reason}")
    });
    error.details = details;
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(
        verb: &str,
        group: &str,
        resource: &str,
        sub: &str,
        ns: &str,
        name: &str,
    ) -> (String, RequestKind) {
        (
            verb.to_owned(),
            RequestKind::Resource(ResourceAttributes {
                group: group.into(),
                version: "v1".into(),
                resource: resource.into(),
                subresource: sub.into(),
                namespace: ns.into(),
                name: name.into(),
            }),
        )
    }

    #[test]
    fn requests_are_attributes_as_kube_apiserver_reads_them() {
        let path =
            |verb: &str, p: &str| (verb.to_owned(), RequestKind::NonResource { path: p.into() });
        let cases = [
            (
                Method::GET,
                "/api/v1/namespaces/a/pods",
                None,
                resource("list", "", "pods", "", "a", ""),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/pods",
                Some("watch=true"),
                resource("watch", "", "pods", "", "a", ""),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/pods",
                Some("watch=0"),
                resource("list", "", "pods", "", "a", ""),
            ),
            (
                Method::GET,
                "/api/v1/watch/namespaces/a/pods",
                None,
                resource("watch", "", "pods", "", "a", ""),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/pods",
                Some("fieldSelector=metadata.name=p"),
                resource("list", "", "pods", "", "a", "p"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a/pods/p/log",
                None,
                resource("get", "", "pods", "log", "a", "p"),
            ),
            (
                Method::GET,
                "/api/v1/pods",
                None,
                resource("list", "", "pods", "", "", ""),
            ),
            (
                Method::POST,
                "/apis/apps/v1/namespaces/a/deployments",
                None,
                resource("create", "apps", "deployments", "", "a", ""),
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/a/deployments/d/scale",
                None,
                resource("patch", "apps", "deployments", "scale", "a", "d"),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/a/configmaps",
                None,
                resource("deletecollection", "", "configmaps", "", "a", ""),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/a/configmaps/c",
                None,
                resource("delete", "", "configmaps", "", "a", "c"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/a",
                None,
                resource("get", "", "namespaces", "", "a", "a"),
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/a/finalize",
                None,
                resource("update", "", "namespaces", "finalize", "a", "a"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces",
                None,
                resource("list", "", "namespaces", "", "", ""),
            ),
            (
                Method::GET,
                "/api/v1/nodes/n1/proxy/metrics",
                None,
                resource("get", "", "nodes", "proxy", "", "n1"),
            ),
            (
                Method::GET,
                "/api/v1/proxy/nodes/n1/metrics",
                None,
                resource("proxy", "", "nodes", "", "", "n1"),
            ),
            (Method::GET, "/api", None, path("get", "/api")),
            (Method::GET, "/api/v1", None, path("get", "/api/v1")),
            (
                Method::GET,
                "/apis/apps/v1",
                None,
                path("get", "/apis/apps/v1"),
            ),
            (Method::POST, "/healthz", None, path("post", "/healthz")),
            (
                Method::GET,
                "/openapi/v3/apis/apps/v1",
                None,
                path("get", "/openapi/v3/apis/apps/v1"),
            ),
        ];
        let user = Arc::new(UserInfo::new("u", &[]));
        for (method, p, query, (verb, request)) in cases {
            let params: Params = query
                .map(|q: &str| {
                    let (k, v) = q.split_once('=').expect("k=v");
                    [(k.to_owned(), v.to_owned())].into_iter().collect()
                })
                .unwrap_or_default();
            let got = attributes(Arc::clone(&user), &method, p, &params);
            assert_eq!(
                (got.verb, got.request),
                (verb, request),
                "{method} {p}?{query:?}"
            );
        }
    }

    #[test]
    fn only_gets_of_the_streaming_pod_subresources_are_checked_as_create_too() {
        let user = Arc::new(UserInfo::new("u", &[]));
        let cases = [
            (Method::GET, "/api/v1/namespaces/a/pods/p/exec", true),
            (Method::GET, "/api/v1/namespaces/a/pods/p/attach", true),
            (Method::GET, "/api/v1/namespaces/a/pods/p/portforward", true),
            (Method::POST, "/api/v1/namespaces/a/pods/p/exec", false),
            (Method::GET, "/api/v1/namespaces/a/pods/p/log", false),
            (Method::GET, "/api/v1/namespaces/a/pods/p/proxy/x", false),
            (Method::GET, "/apis/x.io/v1/namespaces/a/pods/p/exec", false),
        ];
        for (method, path, checked) in cases {
            let attributes = attributes(Arc::clone(&user), &method, path, &Params::new());
            let second = connect_create_check(&attributes);
            assert_eq!(second.is_some(), checked, "{method} {path}");
            if let Some(second) = second {
                assert_eq!(second.verb, "create");
                assert_eq!(second.request, attributes.request);
            }
        }
    }

    #[test]
    fn denials_read_as_kubernetes_writes_them() {
        let user = Arc::new(UserInfo::new("alice", &[]));
        let message = |m: Method, p: &str, reason: &str| {
            forbidden(
                &attributes(Arc::clone(&user), &m, p, &Params::new()),
                reason,
            )
            .message
        };
        assert_eq!(
            message(Method::GET, "/api/v1/namespaces/b/pods", ""),
            "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" \
             in the namespace \"b\""
        );
        assert_eq!(
            message(
                Method::PATCH,
                "/apis/apps/v1/namespaces/b/deployments/d/status",
                "why"
            ),
            "deployments.apps \"d\" is forbidden: User \"alice\" cannot patch resource \
             \"deployments/status\" in API group \"apps\" in the namespace \"b\": why"
        );
        assert_eq!(
            message(Method::GET, "/api/v1/nodes", ""),
            "nodes is forbidden: User \"alice\" cannot list resource \"nodes\" in API group \"\" \
             at the cluster scope"
        );
        assert_eq!(
            message(Method::GET, "/metrics", ""),
            "forbidden: User \"alice\" cannot get path \"/metrics\""
        );
    }
}

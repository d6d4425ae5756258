//! What a request is in Kubernetes' terms (kube-apiserver's `RequestInfoFactory`, shared with
//! authorization): the verb, and for `/api/...` and `/apis/...` paths the group, version,
//! resource, subresource, namespace and name — for any resource, served or not, so the audit
//! log names what was asked for.

use std::collections::HashMap;

use crate::auth::authz::{RequestKind, ResourceAttributes};

/// A request, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// Kubernetes' verb (`get`, `list`, `watch`, `create`, `update`, `patch`, `delete`,
    /// `deletecollection`, `proxy`); the lower-case HTTP method for non-resource requests.
    pub verb: String,
    /// The path, without the query.
    pub path: String,
    /// The resource addressed, `None` for non-resource requests (`/healthz`, `/apis`).
    pub resource: Option<ResourceAttributes>,
}

impl RequestInfo {
    /// Whether the response streams for long (watch, proxy, and the log, exec, attach and
    /// portforward subresources): such requests get a `ResponseStarted` event.
    pub fn long_running(&self) -> bool {
        self.verb == "watch"
            || self.verb == "proxy"
            || self.resource.as_ref().is_some_and(|r| {
                matches!(
                    r.subresource.as_str(),
                    "log" | "exec" | "attach" | "portforward" | "proxy"
                )
            })
    }
}

/// Classifies a request by method, path and decoded query parameters, as authorization does
/// ([`crate::auth::request_info::classify`]).
pub fn classify(method: &str, path: &str, query: &HashMap<String, String>) -> RequestInfo {
    let method =
        axum::http::Method::from_bytes(method.as_bytes()).unwrap_or(axum::http::Method::GET);
    let (verb, request) = crate::auth::request_info::classify(&method, path, query);
    RequestInfo {
        verb,
        path: path.to_owned(),
        resource: match request {
            RequestKind::Resource(resource) => Some(resource),
            RequestKind::NonResource { .. } => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Method, path and query parameters.
    type Case = (
        &'static str,
        &'static str,
        Vec<(&'static str, &'static str)>,
    );
    /// The verb, and group, version, resource, subresource, namespace and name.
    type Classified = (String, Option<[String; 6]>);

    fn info(method: &str, path: &str, query: &[(&str, &str)]) -> Classified {
        let query = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let i = classify(method, path, &query);
        (
            i.verb,
            i.resource.map(|r| {
                [
                    r.group,
                    r.version,
                    r.resource,
                    r.subresource,
                    r.namespace,
                    r.name,
                ]
            }),
        )
    }

    fn r(verb: &str, parts: [&str; 6]) -> Classified {
        (verb.to_owned(), Some(parts.map(str::to_owned)))
    }

    #[test]
    fn requests_are_classified_as_kubernetes_does() {
        let cases: Vec<(Case, Classified)> = vec![
            (
                ("GET", "/api/v1/namespaces/d/pods", vec![]),
                r("list", ["", "v1", "pods", "", "d", ""]),
            ),
            (
                ("GET", "/api/v1/namespaces/d/pods", vec![("watch", "1")]),
                r("watch", ["", "v1", "pods", "", "d", ""]),
            ),
            (
                ("GET", "/api/v1/watch/namespaces/d/pods/p", vec![]),
                r("watch", ["", "v1", "pods", "", "d", "p"]),
            ),
            (
                (
                    "GET",
                    "/api/v1/namespaces/d/pods",
                    vec![("fieldSelector", "metadata.name=web")],
                ),
                r("list", ["", "v1", "pods", "", "d", "web"]),
            ),
            (
                ("POST", "/api/v1/namespaces/d/configmaps", vec![]),
                r("create", ["", "v1", "configmaps", "", "d", ""]),
            ),
            (
                (
                    "PATCH",
                    "/apis/apps/v1/namespaces/d/deployments/w/scale",
                    vec![],
                ),
                r("patch", ["apps", "v1", "deployments", "scale", "d", "w"]),
            ),
            (
                ("DELETE", "/api/v1/namespaces/d/secrets", vec![]),
                r("deletecollection", ["", "v1", "secrets", "", "d", ""]),
            ),
            (
                ("PUT", "/api/v1/namespaces/d/finalize", vec![]),
                r("update", ["", "v1", "namespaces", "finalize", "d", "d"]),
            ),
            (
                ("GET", "/api/v1/namespaces/d", vec![]),
                r("get", ["", "v1", "namespaces", "", "d", "d"]),
            ),
            (
                ("GET", "/api/v1/nodes", vec![]),
                r("list", ["", "v1", "nodes", "", "", ""]),
            ),
            (
                ("GET", "/api/v1/namespaces/d/pods/p/log", vec![]),
                r("get", ["", "v1", "pods", "log", "d", "p"]),
            ),
            (("GET", "/api/v1", vec![]), ("get".into(), None)),
            (("GET", "/apis/apps/v1", vec![]), ("get".into(), None)),
            (("POST", "/healthz", vec![]), ("post".into(), None)),
            (("GET", "/openapi/v2/x", vec![]), ("get".into(), None)),
        ];
        // A namespace's own path is in that namespace, as in Kubernetes.
        for ((method, path, query), expected) in cases {
            assert_eq!(info(method, path, &query), expected, "{method} {path}");
        }
    }

    #[test]
    fn watches_and_logs_are_long_running() {
        let empty = HashMap::new();
        assert!(classify("GET", "/api/v1/watch/pods", &empty).long_running());
        assert!(classify("GET", "/api/v1/namespaces/d/pods/p/log", &empty).long_running());
        assert!(!classify("GET", "/api/v1/pods", &empty).long_running());
    }
}

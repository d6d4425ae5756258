//! `/metrics`: the API server's Prometheus metrics, in the text exposition format of
//! `prometheus-client` (OpenMetrics text, which Prometheus scrapes).
//!
//! - `apiserver_request_total{verb,dry_run,group,version,resource,subresource,scope,component,
//!   code}`: every request, counted when its response head is ready, labelled as kube-apiserver labels it
//!   (`staging/src/k8s.io/apiserver/pkg/endpoints/metrics/metrics.go`): `verb` upper case, `GET`
//!   (one object), `LIST` (a collection GET), `WATCH`, `POST`, `PUT`, `PATCH`, `APPLY` (a server-side
//!   apply patch), `DELETE`, `DELETECOLLECTION`, `CONNECT` (the `log`, `exec`, `attach`,
//!   `portforward` and `proxy` subresources); `scope` `resource` (a named object, or a create),
//!   `namespace` (a namespaced collection), `cluster` (a cluster-wide collection); `component`
//!   `apiserver`; `dry_run` `All` for a dry run. Requests outside the resource paths (discovery,
//!   health, `/metrics`) have the upper-case HTTP method as verb and empty group, version,
//!   resource and scope.
//! - `apiserver_request_duration_seconds{verb,dry_run,group,version,resource,subresource,scope,
//!   component}`: time to the response head (for a watch: until its stream starts), in kube-apiserver's buckets.
//! - `apiserver_registered_watchers{group,version,kind}`: watch streams open now.
//! - `keelson_store_operation_duration_seconds{operation}`: time of every call into the store
//!   (`get`, `list`, `create`, `update`, `delete`, `watch` (until the stream is set up),
//!   `compact`, `current_revision`), measured by [`InstrumentedStore`] around any backend.
//!
//! Label values only ever come from fixed tables (the served resources, the known verbs), never
//! from request paths, so a client cannot grow the series set.

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use async_trait::async_trait;
use axum::{
    body::Body,
    extract::{Request, State},
    http::{Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures_util::StreamExt;
use keelson_store::{
    Deleted, KeyValue, ListOptions, ListResult, Revision, Store, StoreError, WatchStream,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{
        counter::Counter,
        family::{Family, MetricConstructor},
        gauge::Gauge,
        histogram::Histogram,
    },
    registry::Registry,
};

use crate::{AppState, registry};

/// Store latency buckets in seconds, from 0.5 ms (a cached read) to 10 s (a stuck etcd).
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// kube-apiserver's `apiserver_request_duration_seconds` buckets.
const REQUEST_BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

/// The `component` label of every request series.
const COMPONENT: &str = "apiserver";

#[derive(Debug, Clone, Copy)]
struct Buckets(&'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: &'static str,
    dry_run: &'static str,
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    subresource: &'static str,
    scope: &'static str,
    component: &'static str,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    verb: &'static str,
    dry_run: &'static str,
    group: &'static str,
    version: &'static str,
    resource: &'static str,
    subresource: &'static str,
    scope: &'static str,
    component: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabels {
    group: &'static str,
    version: &'static str,
    kind: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreLabels {
    operation: &'static str,
}

/// The API server's metrics and the registry that renders them.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, Buckets>,
    watchers: Family<WatchLabels, Gauge>,
    store: Family<StoreLabels, Histogram, Buckets>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric in a fresh registry.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, dry run value, group, \
             version, resource, scope, component, and HTTP response code",
            requests.clone(),
        );
        let latency = Family::new_with_constructor(Buckets(&REQUEST_BUCKETS));
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency (to the response head) distribution in seconds for each verb, dry \
             run value, group, version, resource, subresource, scope and component",
            latency.clone(),
        );
        let watchers = Family::<WatchLabels, Gauge>::default();
        registry.register(
            "apiserver_registered_watchers",
            "Number of currently registered watchers for a given resource",
            watchers.clone(),
        );
        let store = Family::new_with_constructor(Buckets(&BUCKETS));
        registry.register(
            "keelson_store_operation_duration_seconds",
            "Time of store calls by operation",
            store.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            requests,
            latency,
            watchers,
            store,
        }
    }

    /// The exposition text of every metric.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }

    /// Registers another metric (the audit log's) to be rendered with these.
    pub(crate) fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .register(name, help, metric);
    }

    fn observe_store(&self, operation: &'static str, started: Instant) {
        self.store
            .get_or_create(&StoreLabels { operation })
            .observe(started.elapsed().as_secs_f64());
    }
}

/// What a request is, in the terms of kube-apiserver's request metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestInfo {
    /// Upper case, as kube-apiserver's `CleanVerb` reports it.
    pub(crate) verb: &'static str,
    /// `All` for a dry run, else empty.
    pub(crate) dry_run: &'static str,
    pub(crate) group: &'static str,
    pub(crate) version: &'static str,
    pub(crate) resource: &'static str,
    pub(crate) subresource: &'static str,
    /// `resource`, `namespace`, `cluster`, or empty outside the resource paths.
    pub(crate) scope: &'static str,
    /// The resource's kind (for the watch gauge).
    kind: &'static str,
}

/// The subresources kept as label values (others are left empty).
const SUBRESOURCES: [&str; 13] = [
    "status",
    "scale",
    "binding",
    "eviction",
    "log",
    "exec",
    "attach",
    "portforward",
    "proxy",
    "ephemeralcontainers",
    "token",
    "approval",
    "finalize",
];

/// The subresources whose requests kube-apiserver counts as `CONNECT`.
const CONNECT_SUBRESOURCES: [&str; 5] = ["log", "exec", "portforward", "attach", "proxy"];

fn method_verb(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Classifies a request by its method, path, query and content type, the way kube-apiserver's
/// `RequestInfoFactory`, `CleanScope` and `CleanVerb` do; resources and subresources keelson
/// does not serve get empty labels.
pub(crate) fn classify(
    method: &Method,
    path: &str,
    query: Option<&str>,
    content_type: Option<&str>,
) -> RequestInfo {
    let pairs = || query.into_iter().flat_map(|q| q.split('&'));
    let dry_run = if pairs().any(|pair| pair == "dryRun=All") {
        "All"
    } else {
        ""
    };
    let plain = RequestInfo {
        verb: method_verb(method),
        dry_run,
        group: "",
        version: "",
        resource: "",
        subresource: "",
        scope: "",
        kind: "",
    };
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, mut rest) = match parts.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return plain,
    };
    let mut watch = false;
    if let Some((&"watch", tail)) = rest.split_first() {
        watch = true;
        rest = tail;
    }
    // `namespaces/<ns>/<plural>/...` unless the third part is a namespace's own subresource;
    // a namespace itself is in its own namespace, as in kube's RequestInfo.
    let mut namespaced = false;
    if let ["namespaces", _, ..] = rest {
        namespaced = true;
        if let ["namespaces", _, plural, ..] = rest
            && !matches!(*plural, "status" | "finalize")
        {
            rest = &rest[2..];
        }
    }
    let Some((plural, tail)) = rest.split_first() else {
        return plain;
    };
    let Some(resource) = registry::find(group, version, plural) else {
        return plain;
    };
    let subresource = match tail {
        [_, sub, ..] => SUBRESOURCES
            .iter()
            .find(|s| *s == sub)
            .copied()
            .unwrap_or(""),
        _ => "",
    };
    let named = !tail.is_empty();
    watch = watch
        || pairs().any(|pair| {
            pair.strip_prefix("watch=")
                .is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "0" | "false"))
        });
    let mut verb = match *method {
        Method::GET | Method::HEAD if watch => "WATCH",
        Method::GET | Method::HEAD if named => "GET",
        Method::GET | Method::HEAD => "LIST",
        Method::PATCH
            if content_type
                .is_some_and(|c| c.trim_start().starts_with("application/apply-patch")) =>
        {
            "APPLY"
        }
        Method::DELETE if !named => "DELETECOLLECTION",
        _ => plain.verb,
    };
    if CONNECT_SUBRESOURCES.contains(&subresource) {
        verb = "CONNECT";
    }
    let scope = if named || *method == Method::POST {
        "resource"
    } else if namespaced {
        "namespace"
    } else {
        "cluster"
    };
    RequestInfo {
        verb,
        dry_run,
        group: resource.group,
        version: resource.version,
        resource: resource.plural,
        subresource,
        scope,
        kind: resource.kind,
    }
}

/// Decrements the open-watch gauge when the watch's response body is dropped.
struct WatchGuard(Gauge);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The middleware that counts and times every request.
pub(crate) async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let info = classify(
        request.method(),
        request.uri().path(),
        request.uri().query(),
        content_type,
    );
    let response = next.run(request).await;
    let metrics = &state.metrics;
    let code = response.status().as_u16();
    metrics
        .requests
        .get_or_create(&RequestLabels {
            verb: info.verb,
            dry_run: info.dry_run,
            group: info.group,
            version: info.version,
            resource: info.resource,
            subresource: info.subresource,
            scope: info.scope,
            component: COMPONENT,
            code,
        })
        .inc();
    metrics
        .latency
        .get_or_create(&LatencyLabels {
            verb: info.verb,
            dry_run: info.dry_run,
            group: info.group,
            version: info.version,
            resource: info.resource,
            subresource: info.subresource,
            scope: info.scope,
            component: COMPONENT,
        })
        .observe(started.elapsed().as_secs_f64());
    if info.verb != "WATCH" || !response.status().is_success() {
        return response;
    }
    let gauge = metrics
        .watchers
        .get_or_create(&WatchLabels {
            group: info.group,
            version: info.version,
            kind: info.kind,
        })
        .clone();
    gauge.inc();
    let guard = WatchGuard(gauge);
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let _open = &guard;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// `GET /metrics`.
pub(crate) async fn serve(State(state): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        Bytes::from(state.metrics.render()),
    )
        .into_response()
}

/// A [`Store`] that times every call into an inner store (SQLite, etcd or any other) in
/// `keelson_store_operation_duration_seconds`.
#[derive(Debug)]
pub struct InstrumentedStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl InstrumentedStore {
    /// Wraps `inner`, recording into `metrics`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }
}

#[async_trait]
impl Store for InstrumentedStore {
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision, StoreError> {
        let started = Instant::now();
        let result = self.inner.create(key, value).await;
        self.metrics.observe_store("create", started);
        result
    }

    async fn get(
        &self,
        key: &str,
        revision: Option<Revision>,
    ) -> Result<Option<KeyValue>, StoreError> {
        let started = Instant::now();
        let result = self.inner.get(key, revision).await;
        self.metrics.observe_store("get", started);
        result
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: Revision,
    ) -> Result<Revision, StoreError> {
        let started = Instant::now();
        let result = self.inner.update(key, value, expected_mod_revision).await;
        self.metrics.observe_store("update", started);
        result
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<Deleted, StoreError> {
        let started = Instant::now();
        let result = self.inner.delete(key, expected_mod_revision).await;
        self.metrics.observe_store("delete", started);
        result
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult, StoreError> {
        let started = Instant::now();
        let result = self.inner.list(prefix, options).await;
        self.metrics.observe_store("list", started);
        result
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        let started = Instant::now();
        let result = self.inner.watch(prefix, from_revision).await;
        self.metrics.observe_store("watch", started);
        result
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let started = Instant::now();
        let result = self.inner.compact(revision).await;
        self.metrics.observe_store("compact", started);
        result
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let started = Instant::now();
        let result = self.inner.current_revision().await;
        self.metrics.observe_store("current_revision", started);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(verb, group, version, resource, subresource, scope)` of a request.
    type Labels = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static str,
    );

    /// A request (method, path, query, content type) and its labels.
    type Case = (
        Method,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        Labels,
    );

    fn info(method: Method, path: &str, query: Option<&str>, content_type: Option<&str>) -> Labels {
        let i = classify(&method, path, query, content_type);
        (
            i.verb,
            i.group,
            i.version,
            i.resource,
            i.subresource,
            i.scope,
        )
    }

    #[test]
    fn classifies_like_kube_apiserver() {
        let pods = "/api/v1/namespaces/default/pods";
        let apply = Some("application/apply-patch+yaml");
        let merge = Some("application/merge-patch+json");
        let cases: &[Case] = &[
            (
                Method::GET,
                pods,
                None,
                None,
                ("LIST", "", "v1", "pods", "", "namespace"),
            ),
            (
                Method::GET,
                "/api/v1/pods",
                None,
                None,
                ("LIST", "", "v1", "pods", "", "cluster"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/default/pods/web",
                None,
                None,
                ("GET", "", "v1", "pods", "", "resource"),
            ),
            (
                Method::GET,
                pods,
                Some("watch=true&resourceVersion=3"),
                None,
                ("WATCH", "", "v1", "pods", "", "namespace"),
            ),
            (
                Method::GET,
                pods,
                Some("watch=false"),
                None,
                ("LIST", "", "v1", "pods", "", "namespace"),
            ),
            (
                Method::GET,
                "/api/v1/watch/namespaces/default/pods",
                None,
                None,
                ("WATCH", "", "v1", "pods", "", "namespace"),
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/d/deployments/web/scale",
                None,
                merge,
                ("PATCH", "apps", "v1", "deployments", "scale", "resource"),
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/d/deployments/web",
                Some("fieldManager=kubectl"),
                apply,
                ("APPLY", "apps", "v1", "deployments", "", "resource"),
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/demo/status",
                None,
                None,
                ("PUT", "", "v1", "namespaces", "status", "resource"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/demo",
                None,
                None,
                ("GET", "", "v1", "namespaces", "", "resource"),
            ),
            (
                Method::POST,
                "/api/v1/namespaces",
                None,
                None,
                ("POST", "", "v1", "namespaces", "", "resource"),
            ),
            (
                Method::POST,
                pods,
                None,
                None,
                ("POST", "", "v1", "pods", "", "resource"),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/d/configmaps",
                None,
                None,
                ("DELETECOLLECTION", "", "v1", "configmaps", "", "namespace"),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/d/configmaps/c",
                None,
                None,
                ("DELETE", "", "v1", "configmaps", "", "resource"),
            ),
            (
                Method::POST,
                "/api/v1/namespaces/d/pods/p/binding",
                None,
                None,
                ("POST", "", "v1", "pods", "binding", "resource"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/d/pods/p/log",
                Some("follow=true"),
                None,
                ("CONNECT", "", "v1", "pods", "log", "resource"),
            ),
            (
                Method::POST,
                "/api/v1/namespaces/d/pods/p/exec",
                Some("command=ls"),
                None,
                ("CONNECT", "", "v1", "pods", "exec", "resource"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/d/services/web:80/proxy/healthz",
                None,
                None,
                ("CONNECT", "", "v1", "services", "proxy", "resource"),
            ),
            (
                Method::GET,
                "/api/v1/nodes",
                None,
                None,
                ("LIST", "", "v1", "nodes", "", "cluster"),
            ),
            // Unknown resources and non-resource paths never become label values.
            (
                Method::GET,
                "/api/v1/namespaces/d/widgets",
                None,
                None,
                ("GET", "", "", "", "", ""),
            ),
            (
                Method::GET,
                "/version",
                None,
                None,
                ("GET", "", "", "", "", ""),
            ),
            (
                Method::POST,
                "/apis/authorization.k8s.io",
                None,
                None,
                ("POST", "", "", "", "", ""),
            ),
        ];
        for (method, path, query, content_type, want) in cases {
            assert_eq!(
                info(method.clone(), path, *query, *content_type),
                *want,
                "{method} {path}?{query:?}"
            );
        }
    }

    #[test]
    fn a_dry_run_is_labelled() {
        let pods = "/api/v1/namespaces/default/pods";
        assert_eq!(
            classify(&Method::POST, pods, Some("dryRun=All"), None).dry_run,
            "All"
        );
        assert_eq!(classify(&Method::POST, pods, None, None).dry_run, "");
    }
}

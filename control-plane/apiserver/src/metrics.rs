//! `/metrics`: the API server's Prometheus metrics, in the text exposition format of
//! `prometheus-client` (OpenMetrics text, which Prometheus scrapes).
//!
//! - `apiserver_request_total{verb,resource,subresource,code}`: every request, counted when its
//!   response head is ready. Verbs follow Kubernetes: `get` (one object), `list` (a collection
//!   GET), `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`; requests outside the
//!   resource paths (discovery, health, `/metrics`) have an empty `resource` and the lowercase HTTP
//!   method as verb.
//! - `apiserver_request_duration_seconds{verb,resource}`: time to the response head (for a watch:
//!   until its stream starts).
//! - `apiserver_registered_watchers{resource}`: watch streams open now.
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

/// Latency buckets in seconds, from 0.5 ms (a cached read) to 10 s (a stuck etcd).
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Debug, Clone, Copy)]
struct Buckets;

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(BUCKETS)
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: &'static str,
    resource: &'static str,
    subresource: &'static str,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    verb: &'static str,
    resource: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabels {
    resource: &'static str,
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
            "Requests by verb, resource, subresource and HTTP response code",
            requests.clone(),
        );
        let latency = Family::new_with_constructor(Buckets);
        registry.register(
            "apiserver_request_duration_seconds",
            "Time to the response head by verb and resource",
            latency.clone(),
        );
        let watchers = Family::<WatchLabels, Gauge>::default();
        registry.register(
            "apiserver_registered_watchers",
            "Watch streams open now by resource",
            watchers.clone(),
        );
        let store = Family::new_with_constructor(Buckets);
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

/// What a request is, in Kubernetes' terms (its `RequestInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RequestInfo {
    pub(crate) verb: &'static str,
    pub(crate) resource: &'static str,
    pub(crate) subresource: &'static str,
}

fn method_verb(method: &Method) -> &'static str {
    match *method {
        Method::GET => "get",
        Method::POST => "post",
        Method::PUT => "put",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        Method::HEAD => "head",
        Method::OPTIONS => "options",
        _ => "other",
    }
}

/// Classifies a request by its method, path and query, the way kube-apiserver's
/// `RequestInfoFactory` does; resources and subresources keelson does not serve get an empty
/// label.
pub(crate) fn classify(method: &Method, path: &str, query: Option<&str>) -> RequestInfo {
    let plain = RequestInfo {
        verb: method_verb(method),
        resource: "",
        subresource: "",
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
    // `namespaces/<ns>/<plural>/...` unless the third part is a namespace's own subresource.
    if let ["namespaces", _, plural, ..] = rest
        && !matches!(*plural, "status" | "finalize")
    {
        rest = &rest[2..];
    }
    let Some((plural, tail)) = rest.split_first() else {
        return plain;
    };
    let Some(resource) = registry::find(group, version, plural) else {
        return plain;
    };
    let subresource = match tail {
        [_, "status"] => "status",
        [_, "scale"] => "scale",
        [_, "binding"] => "binding",
        _ => "",
    };
    let named = !tail.is_empty();
    watch = watch
        || query.is_some_and(|q| {
            q.split('&')
                .any(|pair| matches!(pair, "watch=true" | "watch=1"))
        });
    let verb = match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => plain.verb,
    };
    RequestInfo {
        verb,
        resource: resource.plural,
        subresource,
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
    let info = classify(
        request.method(),
        request.uri().path(),
        request.uri().query(),
    );
    let response = next.run(request).await;
    let metrics = &state.metrics;
    let code = response.status().as_u16();
    metrics
        .requests
        .get_or_create(&RequestLabels {
            verb: info.verb,
            resource: info.resource,
            subresource: info.subresource,
            code,
        })
        .inc();
    metrics
        .latency
        .get_or_create(&LatencyLabels {
            verb: info.verb,
            resource: info.resource,
        })
        .observe(started.elapsed().as_secs_f64());
    if info.verb != "watch" || !response.status().is_success() {
        return response;
    }
    let gauge = metrics
        .watchers
        .get_or_create(&WatchLabels {
            resource: info.resource,
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

    fn info(
        method: Method,
        path: &str,
        query: Option<&str>,
    ) -> (&'static str, &'static str, &'static str) {
        let i = classify(&method, path, query);
        (i.verb, i.resource, i.subresource)
    }

    #[test]
    fn classifies_like_kubernetes() {
        assert_eq!(
            info(Method::GET, "/api/v1/namespaces/default/pods", None),
            ("list", "pods", "")
        );
        assert_eq!(
            info(Method::GET, "/api/v1/pods", None),
            ("list", "pods", "")
        );
        assert_eq!(
            info(Method::GET, "/api/v1/namespaces/default/pods/web", None),
            ("get", "pods", "")
        );
        assert_eq!(
            info(
                Method::GET,
                "/api/v1/namespaces/default/pods",
                Some("watch=true&rv=3")
            ),
            ("watch", "pods", "")
        );
        assert_eq!(
            info(Method::GET, "/api/v1/watch/namespaces/default/pods", None),
            ("watch", "pods", "")
        );
        assert_eq!(
            info(
                Method::PATCH,
                "/apis/apps/v1/namespaces/d/deployments/web/scale",
                None
            ),
            ("patch", "deployments", "scale")
        );
        assert_eq!(
            info(Method::PUT, "/api/v1/namespaces/demo/status", None),
            ("update", "namespaces", "status")
        );
        assert_eq!(
            info(Method::GET, "/api/v1/namespaces/demo", None),
            ("get", "namespaces", "")
        );
        assert_eq!(
            info(Method::POST, "/api/v1/namespaces", None),
            ("create", "namespaces", "")
        );
        assert_eq!(
            info(Method::DELETE, "/api/v1/namespaces/d/configmaps", None),
            ("deletecollection", "configmaps", "")
        );
        assert_eq!(
            info(Method::DELETE, "/api/v1/namespaces/d/configmaps/c", None),
            ("delete", "configmaps", "")
        );
        assert_eq!(
            info(Method::POST, "/api/v1/namespaces/d/pods/p/binding", None),
            ("create", "pods", "binding")
        );
        // Unknown resources and non-resource paths never become label values.
        assert_eq!(
            info(Method::GET, "/api/v1/namespaces/d/widgets", None),
            ("get", "", "")
        );
        assert_eq!(info(Method::GET, "/version", None), ("get", "", ""));
    }
}

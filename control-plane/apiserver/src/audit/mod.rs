//! The audit log, as kube-apiserver writes it: one JSON line per `audit.k8s.io/v1` `Event`,
//! chosen by an audit [`Policy`] (`--audit-policy-file`) and written to a rotated file or
//! standard output (`--audit-log-path`, see [`writer`]).
//!
//! [`middleware`] sits outside authentication, so refused requests are on record too. Every
//! response carries an `Audit-ID` header: the one the client sent, else a new UUID. The
//! layers inside report what only they know through task-local hooks: [`record_user`] (the
//! authenticated user, whom the policy matches), [`record_impersonated_user`],
//! [`record_decision`] (the `authorization.k8s.io/decision` and `/reason` annotations) and
//! [`annotate`].
//!
//! Stages are Kubernetes' (`RequestReceived`, `ResponseStarted` for long-running requests such
//! as watches, `ResponseComplete`, `Panic`), with their timestamps (`requestReceivedTimestamp`
//! is when the request arrived; the `RequestReceived` event is written once the policy can be
//! evaluated, i.e. when the user is known, with that timestamp). Request and response bodies
//! are recorded at the `Request` and `RequestResponse` levels for resource requests with JSON
//! bodies. A request whose authentication failed gets the one `ResponseStarted` event
//! Kubernetes writes for it ("Authentication failed, attempted: ...").
//!
//! Events go through a bounded channel to a writer thread; in `blocking` mode (Kubernetes'
//! default for the log backend) a request waits only when the writer is a full buffer behind,
//! in `batch` mode the event is dropped instead. Both count in `apiserver_audit_event_total`
//! and failures in `apiserver_audit_error_total{plugin="log"}`.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
};

use axum::{
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use futures_util::{FutureExt, StreamExt};
use prometheus_client::{encoding::EncodeLabelSet, metrics::counter::Counter};
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::{AppState, MAX_BODY_BYTES, auth::UserInfo, auth::authz::Decision};

mod policy;
mod request_info;
pub mod writer;

pub use policy::{
    GroupResources, Level, Policy, PolicyError, PolicyRule, RequestAuditConfig, Stage,
};
pub use request_info::{RequestInfo, classify};
pub use writer::{LogOptions, Mode};

/// The header that carries a request's audit ID (sent back on every response).
pub const AUDIT_ID_HEADER: &str = "Audit-ID";
/// The annotation with the authorizer's verdict (`allow` or `forbid`).
pub const DECISION_ANNOTATION: &str = "authorization.k8s.io/decision";
/// The annotation with the authorizer's reason.
pub const REASON_ANNOTATION: &str = "authorization.k8s.io/reason";

/// What the layers inside the audit middleware report about a request.
#[derive(Debug, Default)]
struct Recorded {
    user: Option<Arc<UserInfo>>,
    impersonated: Option<Arc<UserInfo>>,
    annotations: BTreeMap<String, String>,
}

tokio::task_local! {
    static RECORDER: Arc<Mutex<Recorded>>;
}

fn with_recorder(f: impl FnOnce(&mut Recorded)) {
    let _ = RECORDER.try_with(|recorder| {
        f(&mut recorder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    });
}

/// Hook for authentication: the user the request authenticated as (the policy's `users` and
/// `userGroups` match this user, and the event's `user` names it). No-op outside a request.
pub fn record_user(user: &Arc<UserInfo>) {
    with_recorder(|r| r.user = Some(Arc::clone(user)));
}

/// Hook for impersonation: the user the request acts as (the event's `impersonatedUser`).
pub fn record_impersonated_user(user: &Arc<UserInfo>) {
    with_recorder(|r| r.impersonated = Some(Arc::clone(user)));
}

/// Hook for anyone inside: an annotation of the request's events.
pub fn annotate(key: impl Into<String>, value: impl Into<String>) {
    let (key, value) = (key.into(), value.into());
    with_recorder(|r| {
        r.annotations.insert(key, value);
    });
}

/// Hook for authorization: the final decision of the authorizer chain, as the
/// `authorization.k8s.io/decision` (`allow` or `forbid`) and `/reason` annotations.
pub fn record_decision(decision: &Decision) {
    let (verdict, reason) = match decision {
        Decision::Allow(reason) => ("allow", reason),
        Decision::Deny(reason) | Decision::NoOpinion(reason) => ("forbid", reason),
    };
    annotate(DECISION_ANNOTATION, verdict);
    if !reason.is_empty() {
        annotate(REASON_ANNOTATION, reason.clone());
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    plugin: &'static str,
}

/// The audit policy and the log it writes to.
#[derive(Debug)]
pub struct Auditor {
    policy: Policy,
    sender: mpsc::Sender<writer::Message>,
    mode: Mode,
    events: Counter,
    errors: Counter,
}

impl Auditor {
    /// Starts the log writer for `options` and registers the audit metrics in `metrics`.
    pub fn start(
        policy: Policy,
        options: &LogOptions,
        metrics: &crate::Metrics,
    ) -> std::io::Result<Arc<Self>> {
        let events = Counter::default();
        metrics.register(
            "apiserver_audit_event",
            "Counter of audit events generated and sent to the audit backend",
            events.clone(),
        );
        let errors = prometheus_client::metrics::family::Family::<PluginLabels, Counter>::default();
        metrics.register(
            "apiserver_audit_error",
            "Counter of audit events that failed to be audited properly, by plugin",
            errors.clone(),
        );
        let errors = errors
            .get_or_create(&PluginLabels { plugin: "log" })
            .clone();
        let failed = errors.clone();
        let sender = writer::start(options, move || {
            failed.inc();
        })?;
        Ok(Arc::new(Self {
            policy,
            sender,
            mode: options.mode,
            events,
            errors,
        }))
    }

    /// Waits until every event handed over so far is written.
    pub async fn flush(&self) {
        let (done, written) = oneshot::channel();
        if self.sender.send(writer::Message::Flush(done)).await.is_ok() {
            let _ = written.await;
        }
    }

    fn line(event: &Event) -> Option<Vec<u8>> {
        let mut line = serde_json::to_vec(event).ok()?;
        line.push(b'\n');
        Some(line)
    }

    /// Hands `event` to the writer unless its stage is omitted.
    async fn emit(&self, event: &Event, omit: &[Stage]) {
        if omit.contains(&event.stage) {
            return;
        }
        let Some(line) = Self::line(event) else {
            self.errors.inc();
            return;
        };
        self.events.inc();
        let sent = match self.mode {
            Mode::Blocking => self.sender.send(writer::Message::Line(line)).await.is_ok(),
            Mode::Batch => self.sender.try_send(writer::Message::Line(line)).is_ok(),
        };
        if !sent {
            self.errors.inc();
        }
    }

    /// [`Auditor::emit`] from a synchronous context (a response body's end).
    fn emit_detached(self: &Arc<Self>, event: Event, omit: &[Stage]) {
        if omit.contains(&event.stage) {
            return;
        }
        let Some(line) = Self::line(&event) else {
            self.errors.inc();
            return;
        };
        self.events.inc();
        match self.sender.try_send(writer::Message::Line(line)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(message)) if self.mode == Mode::Blocking => {
                let sender = self.sender.clone();
                let errors = self.errors.clone();
                match tokio::runtime::Handle::try_current() {
                    Ok(runtime) => {
                        runtime.spawn(async move {
                            if sender.send(message).await.is_err() {
                                errors.inc();
                            }
                        });
                    }
                    Err(_) => {
                        self.errors.inc();
                    }
                }
            }
            Err(_) => {
                self.errors.inc();
            }
        }
    }
}

/// `metav1.MicroTime` as Kubernetes writes it: RFC 3339 in UTC with microseconds.
fn micro_time(at: jiff::Timestamp) -> String {
    format!(
        "{}.{:06}Z",
        at.strftime("%Y-%m-%dT%H:%M:%S"),
        at.subsec_microsecond()
    )
}

/// `authentication.k8s.io/v1` `UserInfo`.
#[derive(Debug, Clone, Default, Serialize)]
struct User {
    #[serde(skip_serializing_if = "String::is_empty")]
    username: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    uid: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    groups: Vec<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    extra: BTreeMap<String, Vec<String>>,
}

impl From<&UserInfo> for User {
    fn from(user: &UserInfo) -> Self {
        Self {
            username: user.name.clone(),
            uid: user.uid.clone(),
            groups: user.groups.clone(),
            extra: user.extra.clone(),
        }
    }
}

/// `audit.k8s.io/v1` `ObjectReference`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
struct ObjectReference {
    #[serde(skip_serializing_if = "String::is_empty")]
    resource: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    namespace: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    uid: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    api_group: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    api_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    resource_version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    subresource: String,
}

#[derive(Debug, Clone, Default, Serialize)]
struct Empty {}

/// The bounded copy of a `Status` the event carries (`metav1.Status`).
#[derive(Debug, Clone, Default, Serialize)]
struct ResponseStatus {
    metadata: Empty,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
}

impl ResponseStatus {
    fn code(code: StatusCode) -> Self {
        Self {
            code: Some(code.as_u16()),
            ..Self::default()
        }
    }

    /// Copies the bounded fields of a `Status` body.
    fn from_status(code: StatusCode, body: &Value) -> Self {
        let text = |field: &str| body.get(field).and_then(Value::as_str).map(str::to_owned);
        Self {
            metadata: Empty {},
            status: text("status"),
            message: text("message"),
            reason: text("reason"),
            details: body.get("details").cloned(),
            code: Some(code.as_u16()),
        }
    }
}

/// `audit.k8s.io/v1` `Event`, its fields in Kubernetes' order.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    kind: &'static str,
    api_version: &'static str,
    level: Level,
    #[serde(rename = "auditID")]
    audit_id: String,
    stage: Stage,
    #[serde(rename = "requestURI")]
    request_uri: String,
    verb: String,
    user: User,
    #[serde(skip_serializing_if = "Option::is_none")]
    impersonated_user: Option<User>,
    #[serde(rename = "sourceIPs", skip_serializing_if = "Vec::is_empty")]
    source_ips: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    user_agent: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    object_ref: Option<ObjectReference>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_status: Option<ResponseStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_object: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_object: Option<Value>,
    request_received_timestamp: String,
    stage_timestamp: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

impl Event {
    fn at(&mut self, stage: Stage, at: jiff::Timestamp) {
        self.stage = stage;
        self.stage_timestamp = micro_time(at);
    }
}

/// The request's source addresses as Kubernetes lists them: `X-Forwarded-For`, then
/// `X-Real-Ip` unless already listed, then the connection's peer unless it is the last one.
fn source_ips(headers: &HeaderMap, peer: Option<IpAddr>) -> Vec<String> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut ips: Vec<IpAddr> = header("x-forwarded-for")
        .map(|list| {
            list.split(',')
                .filter_map(|ip| ip.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    if let Some(real) = header("x-real-ip").and_then(|ip| ip.trim().parse::<IpAddr>().ok())
        && !ips.contains(&real)
    {
        ips.push(real);
    }
    if let Some(peer) = peer
        && ips.last() != Some(&peer)
    {
        ips.push(peer);
    }
    ips.iter().map(ToString::to_string).collect()
}

/// Kubernetes' message for a request whose credentials did not authenticate.
fn authentication_methods(
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    certificate: bool,
) -> String {
    let mut methods = Vec::new();
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .trim();
    if authorization
        .split_once(' ')
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
    {
        methods.push("basic");
    }
    if authorization
        .split_once(' ')
        .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
    {
        methods.push("bearer");
    }
    if query
        .get("access_token")
        .is_some_and(|t| !t.trim().is_empty())
    {
        methods.push("access_token");
    }
    if certificate {
        methods.push("x509");
    }
    if methods.is_empty() {
        "Authentication failed, no credentials provided".to_owned()
    } else {
        format!("Authentication failed, attempted: {}", methods.join(", "))
    }
}

/// Drops `metadata.managedFields` from an object or from each item of a list.
fn omit_managed_fields(value: &mut Value) {
    let strip = |object: &mut Value| {
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
    };
    strip(value);
    if let Some(items) = value.get_mut("items").and_then(Value::as_array_mut) {
        items.iter_mut().for_each(strip);
    }
}

/// The media type of a body, parameters dropped, lower case.
fn media_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_ascii_lowercase())
}

fn is_json(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|media| media.ends_with("json"))
}

/// A request body as JSON: JSON as sent, Kubernetes protobuf decoded (as kube-apiserver
/// records the object, not its wire form); `None` for anything else.
fn request_json(media: &str, bytes: &[u8]) -> Option<Value> {
    if media == crate::protobuf::CONTENT_TYPE {
        let json = crate::protobuf::to_json(bytes).ok()?;
        return serde_json::from_slice(&json).ok();
    }
    media
        .ends_with("json")
        .then(|| serde_json::from_slice(bytes).ok())
        .flatten()
}

fn set_audit_id(response: &mut Response, audit_id: &str) {
    if !response.headers().contains_key(AUDIT_ID_HEADER)
        && let Ok(value) = HeaderValue::from_str(audit_id)
    {
        response.headers_mut().insert(AUDIT_ID_HEADER, value);
    }
}

/// Writes `ResponseComplete` when a long-running response's body ends or is dropped.
struct Completion {
    auditor: Arc<Auditor>,
    event: Option<Event>,
    omit: Vec<Stage>,
}

impl Drop for Completion {
    fn drop(&mut self) {
        if let Some(mut event) = self.event.take() {
            event.at(Stage::ResponseComplete, jiff::Timestamp::now());
            self.auditor.emit_detached(event, &self.omit);
        }
    }
}

/// Middleware: the `Audit-ID` header on every response and, with an [`Auditor`], the events
/// of every request its policy records.
pub(crate) async fn middleware(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let audit_id = request
        .headers()
        .get(AUDIT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut response = match state.auditor.clone() {
        Some(auditor) => audit(auditor, &audit_id, request, next).await,
        None => next.run(request).await,
    };
    set_audit_id(&mut response, &audit_id);
    response
}

async fn audit(auditor: Arc<Auditor>, audit_id: &str, request: Request, next: Next) -> Response {
    let received = jiff::Timestamp::now();
    let (parts, body) = request.into_parts();
    let query = axum::extract::Query::<HashMap<String, String>>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let info = classify(parts.method.as_str(), parts.uri.path(), &query);
    // Bodies are read here only when they may be recorded: JSON (or Kubernetes protobuf,
    // which kubectl sends) writes to resources.
    let media = media_type(&parts.headers).unwrap_or_default();
    let recordable_body = info.resource.is_some()
        && matches!(parts.method, Method::POST | Method::PUT | Method::PATCH)
        && (media.ends_with("json") || media == crate::protobuf::CONTENT_TYPE);
    let (body, request_bytes) = if recordable_body {
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
            (body, None)
        } else {
            match crate::request::read_limited(body).await {
                Ok(bytes) => (Body::from(bytes.clone()), Some(bytes)),
                Err(error) => return error.into_response(),
            }
        }
    } else {
        (body, None)
    };
    let mut event = Event {
        kind: "Event",
        api_version: "audit.k8s.io/v1",
        level: Level::None,
        audit_id: audit_id.to_owned(),
        stage: Stage::RequestReceived,
        request_uri: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
        verb: info.verb.clone(),
        user: User::default(),
        impersonated_user: None,
        source_ips: source_ips(
            &parts.headers,
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        ),
        user_agent: parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        object_ref: info.resource.as_ref().map(|r| ObjectReference {
            resource: r.resource.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
            api_group: r.group.clone(),
            api_version: r.version.clone(),
            subresource: r.subresource.clone(),
            ..ObjectReference::default()
        }),
        response_status: None,
        request_object: None,
        response_object: None,
        request_received_timestamp: micro_time(received),
        stage_timestamp: micro_time(received),
        annotations: BTreeMap::new(),
    };
    let failed_authentication = authentication_methods(
        &parts.headers,
        &query,
        parts
            .extensions
            .get::<crate::auth::ClientCertificate>()
            .is_some(),
    );
    let recorder = Arc::new(Mutex::new(Recorded::default()));
    let request = Request::from_parts(parts, body);
    let outcome =
        std::panic::AssertUnwindSafe(RECORDER.scope(Arc::clone(&recorder), next.run(request)))
            .catch_unwind()
            .await;
    let recorded = std::mem::take(
        &mut *recorder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    let config = auditor.policy.evaluate(recorded.user.as_deref(), &info);
    if config.level == Level::None {
        return match outcome {
            Ok(response) => response,
            Err(panic) => std::panic::resume_unwind(panic),
        };
    }
    event.level = config.level;
    event.user = recorded.user.as_deref().map(User::from).unwrap_or_default();
    event.impersonated_user = recorded.impersonated.as_deref().map(User::from);
    event.annotations = recorded.annotations;
    if let Some(bytes) = &request_bytes
        && let Some(mut object) = request_json(&media, bytes)
    {
        if let Some(reference) = event.object_ref.as_mut() {
            let meta = |field: &str| {
                object
                    .pointer(&format!("/metadata/{field}"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            for (slot, field) in [
                (&mut reference.namespace, "namespace"),
                (&mut reference.name, "name"),
                (&mut reference.uid, "uid"),
                (&mut reference.resource_version, "resourceVersion"),
            ] {
                if slot.is_empty() {
                    *slot = meta(field);
                }
            }
        }
        if config.level >= Level::Request {
            if config.omit_managed_fields {
                omit_managed_fields(&mut object);
            }
            event.request_object = Some(object);
        }
    }
    let omit = config.omit_stages.clone();
    let response = match outcome {
        Ok(response) => response,
        Err(panic) => {
            auditor.emit(&event, &omit).await;
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            event.response_status = Some(ResponseStatus {
                status: Some("Failure".into()),
                message: Some(format!("APIServer panic'd: {message}")),
                reason: Some("InternalError".into()),
                ..ResponseStatus::code(StatusCode::INTERNAL_SERVER_ERROR)
            });
            event.at(Stage::Panic, jiff::Timestamp::now());
            auditor.emit(&event, &omit).await;
            std::panic::resume_unwind(panic)
        }
    };
    let code = response.status();
    if code == StatusCode::UNAUTHORIZED && recorded.user.is_none() {
        // Kubernetes records a failed authentication as one ResponseStarted event.
        event.response_status = Some(ResponseStatus {
            message: Some(failed_authentication),
            ..ResponseStatus::code(code)
        });
        event.at(Stage::ResponseStarted, jiff::Timestamp::now());
        auditor.emit(&event, &omit).await;
        return response;
    }
    auditor.emit(&event, &omit).await;
    event.response_status = Some(ResponseStatus::code(code));
    if info.long_running() {
        event.at(Stage::ResponseStarted, jiff::Timestamp::now());
        auditor.emit(&event, &omit).await;
        let completion = Completion {
            auditor: Arc::clone(&auditor),
            event: Some(event),
            omit,
        };
        let (parts, body) = response.into_parts();
        let stream = body.into_data_stream().map(move |chunk| {
            let _pending = &completion;
            chunk
        });
        return Response::from_parts(parts, Body::from_stream(stream));
    }
    let wants_body = is_json(response.headers())
        && (code.is_client_error()
            || code.is_server_error()
            || (config.level >= Level::RequestResponse && info.resource.is_some()));
    let response = if wants_body {
        let (parts, body) = response.into_parts();
        match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => {
                if let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) {
                    if value.get("kind").and_then(Value::as_str) == Some("Status") {
                        event.response_status = Some(ResponseStatus::from_status(code, &value));
                    }
                    if config.level >= Level::RequestResponse && info.resource.is_some() {
                        if config.omit_managed_fields {
                            omit_managed_fields(&mut value);
                        }
                        event.response_object = Some(value);
                    }
                }
                Response::from_parts(parts, Body::from(bytes))
            }
            Err(error) => {
                tracing::debug!(%error, "the response body failed while being audited");
                Response::from_parts(parts, Body::empty())
            }
        }
    } else {
        response
    };
    event.at(Stage::ResponseComplete, jiff::Timestamp::now());
    auditor.emit(&event, &omit).await;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_microseconds_in_utc() {
        let at: jiff::Timestamp = "2026-12-06T22:05:07.123456789Z".parse().expect("time");
        assert_eq!(micro_time(at), "2026-12-06T22:05:07.123456Z");
        let whole: jiff::Timestamp = "2026-12-06T22:05:07Z".parse().expect("time");
        assert_eq!(micro_time(whole), "2026-12-06T22:05:07.000000Z");
    }

    #[test]
    fn source_ips_list_proxies_then_the_peer() {
        let mut headers = HeaderMap::new();
        let peer: IpAddr = "10.0.0.9".parse().expect("ip");
        assert_eq!(source_ips(&headers, Some(peer)), ["10.0.0.9"]);
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, 2.2.2.2"),
        );
        headers.insert("x-real-ip", HeaderValue::from_static("2.2.2.2"));
        assert_eq!(
            source_ips(&headers, Some(peer)),
            ["1.1.1.1", "2.2.2.2", "10.0.0.9"]
        );
        headers.insert("x-real-ip", HeaderValue::from_static("10.0.0.9"));
        assert_eq!(
            source_ips(&headers, Some(peer)),
            ["1.1.1.1", "2.2.2.2", "10.0.0.9"]
        );
    }

    #[test]
    fn failed_authentication_names_the_methods_tried() {
        let mut headers = HeaderMap::new();
        let none = HashMap::new();
        assert_eq!(
            authentication_methods(&headers, &none, false),
            "Authentication failed, no credentials provided"
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(
            authentication_methods(&headers, &none, false),
            "Authentication failed, attempted: bearer"
        );
    }

    #[test]
    fn managed_fields_are_dropped_from_objects_and_list_items() {
        let mut object = serde_json::json!({
            "metadata": {"name": "a", "managedFields": [{}]},
            "items": [{"metadata": {"name": "b", "managedFields": [{}]}}],
        });
        omit_managed_fields(&mut object);
        assert_eq!(
            object,
            serde_json::json!({"metadata": {"name": "a"}, "items": [{"metadata": {"name": "b"}}]})
        );
    }
}

//! Routing of `/api/...` and `/apis/...` paths to the verbs on resources: reads in
//! [`crate::read`], writes in [`crate::write`], watches in [`crate::watch_stream`].

use std::sync::Arc;

use axum::{
    Extension,
    body::Body,
    extract::{FromRequestParts, Path, Query, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, request::Parts},
    response::Response,
};
use hyper::upgrade::OnUpgrade;
use keelson_store::Store;
use serde_json::Value;
use tracing::Instrument as _;

use crate::{
    ApiError, AppState,
    admission::{self, Admit},
    aggregation,
    auth::{self, Access, Authenticated, UserInfo},
    crd,
    discovery::{group_info, json_response, resource_list},
    object::decode_kv,
    read, registry, relay,
    request::{Body as RequestBody, Params, Target, WriteOptions},
    reviews,
    table::{self, Printer},
    watch_stream,
    write::{self, UpdatePart},
};

/// The client connection's protocol upgrade, taken out of the request (there is one when
/// the server serves with upgrades; the relayed subresources need it).
pub(crate) struct ClientUpgrade(Option<OnUpgrade>);

impl<S: Send + Sync> FromRequestParts<S> for ClientUpgrade {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.remove::<OnUpgrade>()))
    }
}

/// A request's body and the upgrade of its connection.
pub(crate) struct Payload {
    body: Body,
    upgrade: Option<OnUpgrade>,
}

/// `/api/{*rest}`.
#[expect(
    clippy::too_many_arguments,
    reason = "axum extractors, one per part of the request"
)]
pub(crate) async fn core(
    State(state): State<AppState>,
    user: Option<Extension<Authenticated>>,
    Path(rest): Path<String>,
    method: Method,
    uri: Uri,
    Query(params): Query<Params>,
    headers: HeaderMap,
    ClientUpgrade(upgrade): ClientUpgrade,
    body: Body,
) -> Result<Response, ApiError> {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let Some((version, rest)) = segments.split_first() else {
        return Err(ApiError::no_route());
    };
    let Some(Extension(Authenticated(user))) = user else {
        return Err(ApiError::unauthorized());
    };
    let request = Request {
        method: &method,
        uri: &uri,
        params: &params,
        headers: &headers,
    };
    let payload = Payload { body, upgrade };
    serve(&state, &user, "", version, rest, request, payload).await
}

/// `/apis/{*rest}`.
#[expect(
    clippy::too_many_arguments,
    reason = "axum extractors, one per part of the request"
)]
pub(crate) async fn grouped(
    State(state): State<AppState>,
    user: Option<Extension<Authenticated>>,
    Path(rest): Path<String>,
    method: Method,
    uri: Uri,
    Query(params): Query<Params>,
    headers: HeaderMap,
    ClientUpgrade(upgrade): ClientUpgrade,
    body: Body,
) -> Result<Response, ApiError> {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [] => Err(ApiError::no_route()),
        [group] => {
            let snapshot = state.crds.snapshot(&state.store).await;
            match group_info(group, &snapshot) {
                Some(response) => Ok(response),
                None => aggregation::group_info(&state, group)
                    .await?
                    .ok_or_else(ApiError::no_route),
            }
        }
        [group, version, rest @ ..] => {
            let Some(Extension(Authenticated(user))) = user else {
                return Err(ApiError::unauthorized());
            };
            if reviews::serves(group, version) {
                return reviews::serve(&state, &user, group, rest, &method, &headers, body).await;
            }
            if !crate::registry::serves(group, version)
                && !state
                    .crds
                    .snapshot(&state.store)
                    .await
                    .serves(group, version)
            {
                return aggregation::proxy(
                    &state, &user, group, version, &method, &uri, &headers, body,
                )
                .await?
                .ok_or_else(ApiError::no_route);
            }
            let request = Request {
                method: &method,
                uri: &uri,
                params: &params,
                headers: &headers,
            };
            let payload = Payload { body, upgrade };
            serve(&state, &user, group, version, rest, request, payload).await
        }
    }
}

/// The parts of a request every verb reads.
#[derive(Clone, Copy)]
struct Request<'a> {
    method: &'a Method,
    uri: &'a Uri,
    params: &'a Params,
    headers: &'a HeaderMap,
}

async fn serve(
    state: &AppState,
    user: &UserInfo,
    group: &str,
    version: &str,
    segments: &[&str],
    request: Request<'_>,
    payload: Payload,
) -> Result<Response, ApiError> {
    let snapshot = state.crds.snapshot(&state.store).await;
    if !registry::serves(group, version) && !snapshot.serves(group, version) {
        return Err(ApiError::no_route());
    }
    let (watch_path, segments) = match segments.split_first() {
        Some((&"watch", rest)) => (true, rest),
        _ => (false, segments),
    };
    if segments.is_empty() {
        return if *request.method == Method::GET && !watch_path {
            Ok(resource_list(group, version, &snapshot))
        } else {
            Err(ApiError::no_route())
        };
    }
    let target = route(group, version, segments, &snapshot).ok_or_else(ApiError::no_route)?;
    if let Some(sub) = target.subresource.as_deref()
        && !target.resource.serves_subresource(sub)
    {
        return Err(ApiError::no_route());
    }
    let span = tracing::debug_span!(
        "request",
        verb = %request.method,
        resource = target.resource.plural,
        namespace = target.namespace.as_deref().unwrap_or(""),
        name = target.name.as_deref().unwrap_or(""),
    );
    // The span goes with the future: a guard from `span.enter()` held across an await stays
    // on the worker thread's span stack after the task moves on, and tracing-subscriber's
    // registry then panics when a later `Span::current()` clones the closed span, killing the
    // connection (clients saw "peer closed connection without sending TLS close_notify").
    dispatch(state, user, &target, watch_path, request, payload)
        .instrument(span)
        .await
}

async fn dispatch(
    state: &AppState,
    user: &UserInfo,
    target: &Target,
    watch_path: bool,
    request: Request<'_>,
    payload: Payload,
) -> Result<Response, ApiError> {
    let Request {
        method,
        uri,
        params,
        headers,
    } = request;
    let Payload { body, upgrade } = payload;
    let watch = watch_path || params.get("watch").is_some_and(|w| w == "true" || w == "1");
    let store = state.store.as_ref();
    let verb = verb(method, target, watch);
    let access = auth::restriction(user, verb, target)?;
    // `kubectl get` asks for a Table (server-side printing) on get, list and watch.
    let printer = match (method, target.subresource.as_deref()) {
        (&Method::GET, None) => table::requested(headers, params)?.map(|request| Printer {
            resource: target.resource,
            request,
            custom: target.custom.clone(),
        }),
        _ => None,
    };
    if let Access::PodBoundTo(node) = &access {
        let name = target.name.as_deref().unwrap_or_default();
        let pod = decode_kv(&read::get_kv(store, target, name).await?)?;
        if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node.as_str()) {
            return Err(auth::pod_not_bound(user, verb, target, node));
        }
    }
    let options = |kind: &str| WriteOptions::parse(params, headers, kind);
    let admit = |options_kind, options| admit(state, user, options_kind, options);
    let services = &state.services;
    let written = match (
        method,
        target.name.as_deref(),
        target.subresource.as_deref(),
    ) {
        (&Method::GET, name, None) if watch => {
            return watch_stream::watch(state, target, params, name, printer).await;
        }
        (&Method::GET, None, None) => return read::list(store, target, params, printer).await,
        (&Method::GET, Some(name), None | Some("status" | "approval" | "ephemeralcontainers")) => {
            return read::get(store, target, name, printer).await;
        }
        (&Method::GET, Some(name), Some("log")) => {
            return read::pod_log(state, target, name, params).await;
        }
        (&Method::GET, Some(name), Some("scale")) => return read::scale(store, target, name).await,
        (
            &Method::GET | &Method::POST,
            Some(name),
            Some(sub @ ("exec" | "attach" | "portforward")),
        ) => {
            let incoming = relay::Incoming {
                method,
                uri,
                params,
                headers,
                body,
                upgrade,
            };
            return relay::pod_stream(state, target, name, sub, incoming).await;
        }
        (_, Some(name), Some("proxy")) => {
            let incoming = relay::Incoming {
                method,
                uri,
                params,
                headers,
                body,
                upgrade,
            };
            return relay::proxy(state, target, name, incoming).await;
        }
        (&Method::POST, None, None) => {
            let options = options("CreateOptions")?;
            let body = RequestBody::read(headers, body, false).await?;
            match &access {
                Access::CreateNamed(allowed) => {
                    auth::check_created_name(user, target, &body.bytes, allowed, false)?;
                }
                Access::CreatePrefixed(prefix) => {
                    auth::check_created_name(user, target, &body.bytes, prefix, true)?;
                }
                _ => {}
            }
            let admit = admit("CreateOptions", &options);
            write::create(store, services, target, &body, &options, &admit).await?
        }
        (&Method::DELETE, None, None) if crd::is_definitions(target.resource) => {
            let options = options("DeleteOptions")?;
            RequestBody::read(headers, body, true).await?;
            crd::delete_collection(&state.store, &state.crds, target, params, options.dry_run)
                .await?
        }
        (&Method::DELETE, None, None) => {
            let options = options("DeleteOptions")?;
            let body = RequestBody::read(headers, body, true).await?;
            let admit = admit("DeleteOptions", &options);
            write::delete_collection(store, target, params, &body.bytes, &options, &admit).await?
        }
        (&Method::PUT, Some(name), sub) => {
            let part = UpdatePart::of(target, sub)?;
            let options = options("UpdateOptions")?;
            let body = RequestBody::read(headers, body, false).await?;
            let admit = admit("UpdateOptions", &options);
            write::update(store, services, target, name, &body, part, &options, &admit).await?
        }
        (&Method::PATCH, Some(name), sub) => {
            let part = UpdatePart::of(target, sub)?;
            let options = options("PatchOptions")?;
            let body = RequestBody::read(headers, body, false).await?;
            let admit = admit("PatchOptions", &options);
            write::patch(store, services, target, name, &body, part, &options, &admit).await?
        }
        (&Method::DELETE, Some(name), None) if crd::is_definitions(target.resource) => {
            let options = options("DeleteOptions")?;
            RequestBody::read(headers, body, true).await?;
            crd::delete(&state.store, &state.crds, target, name, options.dry_run).await?
        }
        (&Method::DELETE, Some(name), None) => {
            let options = options("DeleteOptions")?;
            let body = RequestBody::read(headers, body, true).await?;
            let admit = admit("DeleteOptions", &options);
            write::delete(store, target, name, params, &body.bytes, &options, &admit).await?
        }
        (&Method::POST, Some(name), Some("binding")) => {
            let body = RequestBody::read(headers, body, false).await?;
            write::bind(store, target, name, &body.bytes).await?
        }
        (&Method::POST, Some(name), Some("eviction")) => {
            let (options, body) = (
                options("CreateOptions")?,
                RequestBody::read(headers, body, false).await?,
            );
            let admit = admit("DeleteOptions", &options);
            crate::eviction::evict(store, target, name, params, &body.bytes, &options, &admit)
                .await?
        }
        (&Method::POST, Some(_), Some("token")) => {
            let body = RequestBody::read(headers, body, false).await?;
            auth::node::restriction::admit_token_request(store, user, target, &body.bytes).await?;
            auth::serviceaccount::token_request::create(state, target, &body.bytes).await?
        }
        _ => return Err(ApiError::method_not_allowed(method.as_str())),
    };
    if admission::is_configuration(target.resource) {
        state.webhooks.invalidate();
    }
    if auth::rbac::is_rbac(target.resource) {
        state.rbac.invalidate();
    }
    if aggregation::is_api_service(target.resource) {
        // A new or changed APIService is checked now rather than at the next period.
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(error) = aggregation::available::refresh(&state).await {
                tracing::debug!(%error, "checking APIServices after a write");
            }
        });
    }
    // A CRD changed: bring its status up to date and serve what it now defines. The write
    // stands either way; a failed rebuild is retried by the registry's watch of the CRDs.
    if crd::is_definitions(target.resource)
        && params.get("dryRun").is_none_or(|d| d != "All")
        && let Err(e) = state.crds.rebuild(store).await
    {
        tracing::warn!(error = %e.message, "rebuilding the custom resource registry");
    }
    let mut response = json_response(written.code, &written.body);
    let warnings = target
        .resource
        .note
        .filter(|_| target.subresource.is_none() && *method != Method::DELETE)
        .map(str::to_owned)
        .into_iter()
        .chain(written.warnings);
    for warning in warnings {
        if let Ok(value) = HeaderValue::from_str(&warning_header(&warning)) {
            response.headers_mut().append("warning", value);
        }
    }
    Ok(response)
}

/// The admission context of a write with `options` (of kind `options_kind`).
fn admit<'a>(
    state: &'a AppState,
    user: &'a UserInfo,
    options_kind: &'static str,
    options: &'a WriteOptions,
) -> Admit<'a> {
    Admit {
        webhooks: &state.webhooks,
        store: &state.store,
        user,
        escalation: auth::rbac::escalation::Escalation {
            authorizer: &state.authorizer,
            rbac: &state.rbac,
        },
        options_kind,
        field_manager: (options_kind != "DeleteOptions").then_some(options.field_manager.as_str()),
        service_accounts: state.service_accounts.is_some(),
    }
}

/// What a write answers: its status code, body and warnings.
#[derive(Debug)]
pub(crate) struct Written {
    pub(crate) code: StatusCode,
    pub(crate) body: Value,
    pub(crate) warnings: Vec<String>,
}

impl Written {
    pub(crate) fn ok(body: Value) -> Self {
        Self {
            code: StatusCode::OK,
            body,
            warnings: Vec::new(),
        }
    }
}

/// A `Warning:` header value as kube-apiserver writes it: code 299, agent `-`, the text
/// quoted with `"` and `\` escaped.
fn warning_header(text: &str) -> String {
    let escaped = text.replace('\\', "\\\\").replace('"', "\\\"");
    format!("299 - \"{escaped}\"")
}

/// Kubernetes' name for what `method` does to `target`.
fn verb(method: &Method, target: &Target, watch: bool) -> &'static str {
    match (method, target.name.is_some()) {
        (&Method::GET, _) if watch => "watch",
        (&Method::GET, true) => "get",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PUT, _) => "update",
        (&Method::PATCH, _) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => "unknown",
    }
}

fn route(
    group: &str,
    version: &str,
    segments: &[&str],
    snapshot: &crd::Snapshot,
) -> Option<Target> {
    // A built-in resource, or a custom one with the CRD version serving it.
    let find = |plural: &str| match registry::find(group, version, plural) {
        Some(resource) => Some((resource, None)),
        None => snapshot
            .find(group, version, plural)
            .map(|served| (served.resource, Some(Arc::clone(served)))),
    };
    let namespaced = |plural: &str| find(plural).filter(|(r, _)| r.namespaced);
    let ((resource, custom), namespace, rest) = match segments {
        ["namespaces", ns, plural, rest @ ..] if namespaced(plural).is_some() => {
            (namespaced(plural)?, Some((*ns).to_owned()), rest)
        }
        [plural, rest @ ..] => (find(plural)?, None, rest),
        [] => return None,
    };
    if resource.namespaced && namespace.is_none() && !rest.is_empty() {
        return None;
    }
    let (name, subresource) = match rest {
        [] => (None, None),
        [name] => (Some((*name).to_owned()), None),
        [name, sub] => (Some((*name).to_owned()), Some((*sub).to_owned())),
        // `.../<name>/proxy/<path>`: the path is the proxied request's.
        [name, "proxy", ..] => (Some((*name).to_owned()), Some("proxy".to_owned())),
        _ => return None,
    };
    Some(Target {
        resource,
        namespace,
        name,
        subresource,
        custom,
    })
}

/// Creates the system namespaces and objects every cluster has (see [`crate::bootstrap`]).
pub(crate) async fn bootstrap(store: &dyn Store) -> Result<(), ApiError> {
    write::bootstrap(store).await
}

#[cfg(test)]
mod tests {
    use super::warning_header;

    #[test]
    fn warnings_are_quoted_as_kube_apiserver_quotes_them() {
        assert_eq!(
            warning_header(r#"unknown field "spec.foo""#),
            r#"299 - "unknown field \"spec.foo\"""#
        );
    }
}

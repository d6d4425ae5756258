//! Routing of `/api/...` and `/apis/...` paths and the verbs on resources.

use std::collections::HashMap;

use axum::{
    Extension,
    body::Body,
    extract::{Path, Query, State},
    http::{HeaderMap, Method, StatusCode, header},
    response::Response,
};
use bytes::Bytes;
use keelson_api::{
    patch::{merge_patch, strategic_merge_patch},
    selectors::{FieldSelector, LabelSelector},
};
use keelson_store::{ListOptions, Revision, Store, StoreError};
use serde_json::{Value, json};
use tracing::Instrument as _;

use crate::{
    ApiError, AppState, MAX_BODY_BYTES, SYSTEM_NAMESPACES,
    allocator::{self, ServiceNetwork},
    auth::{self, Access, Authenticated, UserInfo},
    discovery::{group_info, json_response, resource_list},
    object::{
        Part, decode, decode_kv, encode, labels, meta_str, now_rfc3339, parse_body, prepare_create,
        prepare_update, requested_revision, scale_of, set_resource_version,
    },
    resources::{self, Resource},
    reviews,
    table::{self, Printer},
    watch_stream,
};

/// Query parameters, as sent.
pub(crate) type Params = HashMap<String, String>;

/// One request on a resource, after routing.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) resource: &'static Resource,
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) subresource: Option<String>,
}

impl Target {
    fn key(&self, name: &str) -> String {
        self.resource.key(self.namespace.as_deref(), name)
    }

    pub(crate) fn prefix(&self) -> String {
        self.resource.collection_prefix(self.namespace.as_deref())
    }
}

/// `/api/{*rest}`.
pub(crate) async fn core(
    State(state): State<AppState>,
    user: Option<Extension<Authenticated>>,
    Path(rest): Path<String>,
    method: Method,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let Some((version, rest)) = segments.split_first() else {
        return Err(ApiError::no_route("/api/"));
    };
    let Some(Extension(Authenticated(user))) = user else {
        return Err(ApiError::unauthorized());
    };
    serve(
        &state, &user, "", version, rest, &method, &params, &headers, body, "/api",
    )
    .await
}

/// `/apis/{*rest}`.
pub(crate) async fn grouped(
    State(state): State<AppState>,
    user: Option<Extension<Authenticated>>,
    Path(rest): Path<String>,
    method: Method,
    Query(params): Query<Params>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        [] => Err(ApiError::no_route("/apis/")),
        [group] => group_info(group).ok_or_else(|| ApiError::no_route(&format!("/apis/{rest}"))),
        [group, version, rest @ ..] => {
            let Some(Extension(Authenticated(user))) = user else {
                return Err(ApiError::unauthorized());
            };
            if (*group, *version) == (reviews::GROUP, reviews::VERSION) {
                return match (rest, &method) {
                    ([], &Method::GET) => Ok(reviews::resource_list()),
                    (["selfsubjectreviews"], &Method::POST) => {
                        Ok(reviews::self_subject_review(&user))
                    }
                    _ => Err(ApiError::no_route(&format!("/apis/{}", segments.join("/")))),
                };
            }
            serve(
                &state, &user, group, version, rest, &method, &params, &headers, body, "/apis",
            )
            .await
        }
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "the pieces of one request, passed through once"
)]
async fn serve(
    state: &AppState,
    user: &UserInfo,
    group: &str,
    version: &str,
    segments: &[&str],
    method: &Method,
    params: &Params,
    headers: &HeaderMap,
    body: Body,
    root: &str,
) -> Result<Response, ApiError> {
    let path = || {
        format!(
            "{root}/{}",
            [&[group, version][..], segments].concat().join("/")
        )
    };
    if !resources::serves(group, version) {
        return Err(ApiError::no_route(&path()));
    }
    let (watch_path, segments) = match segments.split_first() {
        Some((&"watch", rest)) => (true, rest),
        _ => (false, segments),
    };
    if segments.is_empty() {
        return if *method == Method::GET && !watch_path {
            Ok(resource_list(group, version))
        } else {
            Err(ApiError::no_route(&path()))
        };
    }
    let target = route(group, version, segments).ok_or_else(|| ApiError::no_route(&path()))?;
    let known_subresource = match target.subresource.as_deref() {
        None => true,
        Some("status") => target.resource.status,
        Some("scale") => target.resource.scale,
        Some("binding" | "log") => target.resource.plural == "pods",
        Some("finalize") => target.resource.kind == "Namespace",
        Some(_) => false,
    };
    if !known_subresource {
        return Err(ApiError::no_route(&path()));
    }
    let span = tracing::debug_span!(
        "request",
        verb = %method,
        resource = target.resource.plural,
        namespace = target.namespace.as_deref().unwrap_or(""),
        name = target.name.as_deref().unwrap_or(""),
    );
    // The span goes with the future: a guard from `span.enter()` held across an await stays
    // on the worker thread's span stack after the task moves on, and tracing-subscriber's
    // registry then panics when a later `Span::current()` clones the closed span, killing the
    // connection (clients saw "peer closed connection without sending TLS close_notify").
    async move {
        if params.get("dryRun").is_some_and(|d| !d.is_empty()) {
            return Err(ApiError::bad_request(
                "dryRun is not supported by keelson yet",
            ));
        }
        let watch = watch_path || params.get("watch").is_some_and(|w| w == "true" || w == "1");
        let store = state.store.as_ref();
        let verb = verb(method, &target, watch);
        let access = auth::authorize(user, verb, &target)?;
        // `kubectl get` asks for a Table (server-side printing) on get, list and watch.
        let printer = match (method, target.subresource.as_deref()) {
            (&Method::GET, None) => table::requested(headers, params)?.map(|request| Printer {
                resource: target.resource,
                request,
            }),
            _ => None,
        };
        if let Access::PodBoundTo(node) = &access {
            let name = target.name.as_deref().unwrap_or_default();
            let pod = decode_kv(&get_kv(store, &target, name).await?)?;
            if pod.pointer("/spec/nodeName").and_then(Value::as_str) != Some(node.as_str()) {
                return Err(auth::pod_not_bound(user, verb, &target, node));
            }
        }
        match (
            method,
            target.name.as_deref(),
            target.subresource.as_deref(),
        ) {
            (&Method::GET, None, None) if watch => {
                watch_stream::watch(state, &target, params, None, printer).await
            }
            (&Method::GET, Some(name), None) if watch => {
                watch_stream::watch(state, &target, params, Some(name), printer).await
            }
            (&Method::GET, None, None) => list(store, &target, params, printer).await,
            (&Method::POST, None, None) => {
                let body = read_body(headers, body, false).await?.1;
                if let Access::CreateNamed(allowed) = &access {
                    auth::check_created_name(user, &target, &body, allowed)?;
                }
                create(store, &state.services, &target, &body).await
            }
            (&Method::DELETE, None, None) => {
                let body = read_body(headers, body, true).await?.1;
                delete_collection(store, &target, params, &body).await
            }
            (_, None, _) => Err(ApiError::method_not_allowed(method.as_str())),
            (&Method::GET, Some(name), None | Some("status")) => {
                let kv = get_kv(store, &target, name).await?;
                let object = decode_kv(&kv)?;
                Ok(match printer {
                    Some(printer) => ok(&printer.single(&object, true)),
                    None => ok(&object),
                })
            }
            (&Method::GET, Some(name), Some("log")) if target.resource.plural == "pods" => {
                let pod = decode_kv(&get_kv(store, &target, name).await?)?;
                let node = match pod.pointer("/spec/nodeName").and_then(Value::as_str) {
                    Some(node_name) => {
                        let nodes = resources::find("", "v1", "nodes")
                            .ok_or_else(|| ApiError::no_route("nodes"))?;
                        store
                            .get(&nodes.key(None, node_name), None)
                            .await
                            .map_err(|e| ApiError::from_store(e, nodes, node_name))?
                            .map(|kv| decode_kv(&kv))
                            .transpose()?
                    }
                    None => None,
                };
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
            (&Method::GET, Some(name), Some("scale")) if target.resource.scale => {
                let kv = get_kv(store, &target, name).await?;
                Ok(ok(&scale_of(&decode_kv(&kv)?)))
            }
            (&Method::PUT, Some(name), sub) => {
                let part = part_of(&target, sub)?;
                let body = read_body(headers, body, false).await?.1;
                update(store, &state.services, &target, name, &body, part).await
            }
            (&Method::PATCH, Some(name), sub) => {
                let part = part_of(&target, sub)?;
                let (content_type, body) = read_body(headers, body, false).await?;
                patch(
                    store,
                    &state.services,
                    &target,
                    name,
                    &content_type,
                    &body,
                    part,
                )
                .await
            }
            (&Method::DELETE, Some(name), None) => {
                let body = read_body(headers, body, true).await?.1;
                delete(store, &target, name, params, &body).await
            }
            (&Method::POST, Some(name), Some("binding")) if target.resource.plural == "pods" => {
                let body = read_body(headers, body, false).await?.1;
                bind(store, &target, name, &body).await
            }
            _ => Err(ApiError::method_not_allowed(method.as_str())),
        }
    }
    .instrument(span)
    .await
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

/// Which part an update of `sub` writes; unknown subresources are 404.
fn part_of(target: &Target, sub: Option<&str>) -> Result<UpdatePart, ApiError> {
    match sub {
        None => Ok(UpdatePart::Object(Part::Main)),
        Some("status") if target.resource.status => Ok(UpdatePart::Object(Part::Status)),
        Some("scale") if target.resource.scale => Ok(UpdatePart::Scale),
        // The namespace controller's way to drop `spec.finalizers` (see `finalizers`).
        Some("finalize") if target.resource.kind == "Namespace" => {
            Ok(UpdatePart::Object(Part::Main))
        }
        Some(other) => Err(ApiError::no_route(&format!(
            "{}/{other}",
            target.resource.plural
        ))),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpdatePart {
    Object(Part),
    Scale,
}

fn route(group: &str, version: &str, segments: &[&str]) -> Option<Target> {
    let namespaced =
        |plural: &str| resources::find(group, version, plural).filter(|r| r.namespaced);
    let (resource, namespace, rest) = match segments {
        ["namespaces", ns, plural, rest @ ..] if namespaced(plural).is_some() => {
            (namespaced(plural)?, Some((*ns).to_owned()), rest)
        }
        [plural, rest @ ..] => (resources::find(group, version, plural)?, None, rest),
        [] => return None,
    };
    if resource.namespaced && namespace.is_none() && !rest.is_empty() {
        return None;
    }
    let (name, subresource) = match rest {
        [] => (None, None),
        [name] => (Some((*name).to_owned()), None),
        [name, sub] => (Some((*name).to_owned()), Some((*sub).to_owned())),
        _ => return None,
    };
    Some(Target {
        resource,
        namespace,
        name,
        subresource,
    })
}

fn ok(object: &Value) -> Response {
    json_response(StatusCode::OK, object)
}

/// Reads a request body up to [`MAX_BODY_BYTES`]; returns its content type too. JSON (and, for
/// PATCH, the JSON patch types) is understood; Kubernetes protobuf is decoded into JSON.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    optional: bool,
) -> Result<(String, Bytes), ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_ascii_lowercase())
        .unwrap_or_else(|| "application/json".to_owned());
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(ApiError::too_large(MAX_BODY_BYTES));
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::too_large(MAX_BODY_BYTES))?;
    if bytes.is_empty() && optional {
        return Ok((content_type, bytes));
    }
    if content_type == crate::protobuf::CONTENT_TYPE {
        return crate::protobuf::to_json(&bytes).map(|json| ("application/json".to_owned(), json));
    }
    if !content_type.ends_with("json") {
        return Err(ApiError::unsupported_media_type(&content_type));
    }
    Ok((content_type, bytes))
}

async fn get_kv(
    store: &dyn Store,
    target: &Target,
    name: &str,
) -> Result<keelson_store::KeyValue, ApiError> {
    store
        .get(&target.key(name), None)
        .await
        .map_err(|e| ApiError::from_store(e, target.resource, name))?
        .ok_or_else(|| ApiError::not_found(target.resource, name))
}

/// Parsed `labelSelector` and `fieldSelector` (and a name from a watch path).
pub(crate) struct Selectors {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Selectors {
    pub(crate) fn parse(
        resource: &Resource,
        params: &Params,
        name: Option<&str>,
    ) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(params.get("labelSelector").map_or("", String::as_str))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let mut fields = FieldSelector::parse(
            params.get("fieldSelector").map_or("", String::as_str),
            resource.field_selectors,
        )
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
        if let Some(name) = name {
            fields
                .requirements
                .push(keelson_api::selectors::FieldRequirement {
                    field: "metadata.name".into(),
                    value: name.to_owned(),
                    negated: false,
                });
        }
        Ok(Self { labels, fields })
    }

    /// Whether every object matches (no label or field requirement).
    pub(crate) fn is_everything(&self) -> bool {
        self.labels.is_empty() && self.fields.requirements.is_empty()
    }

    pub(crate) fn matches(&self, object: &Value) -> bool {
        (self.labels.is_empty() || self.labels.matches(&labels(object)))
            && self.fields.matches(object)
    }
}

fn parse_revision(text: &str, what: &str) -> Result<Revision, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid {what}: {text:?}")))
}

fn list_kind(resource: &Resource) -> String {
    format!("{}List", resource.kind)
}

async fn list(
    store: &dyn Store,
    target: &Target,
    params: &Params,
    printer: Option<Printer>,
) -> Result<Response, ApiError> {
    let selectors = Selectors::parse(target.resource, params, None)?;
    let mut options = ListOptions::default();
    if let Some(limit) = params.get("limit").filter(|l| !l.is_empty()) {
        let limit: usize = limit
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid limit: {limit:?}")))?;
        options.limit = (limit > 0).then_some(limit);
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
    let result = store
        .list(&target.prefix(), options)
        .await
        .map_err(|e| match e {
            StoreError::Compacted { .. } => ApiError {
                code: StatusCode::GONE,
                reason: "Expired",
                message: "The provided continue parameter is too old to display a consistent \
                          list result. You can start a new list without the continue parameter."
                    .into(),
                details: None,
            },
            other => ApiError::from_store(other, target.resource, ""),
        })?;
    let mut items = Vec::with_capacity(result.items.len());
    for kv in &result.items {
        let object = decode_kv(kv)?;
        if selectors.matches(&object) {
            items.push(object);
        }
    }
    let mut metadata = json!({"resourceVersion": result.revision.to_string()});
    if let Some(last) = result.items.last().filter(|_| result.more) {
        metadata["continue"] = json!(format!("{}:{}", result.revision, last.key));
    }
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

async fn check_namespace(store: &dyn Store, namespace: &str) -> Result<(), ApiError> {
    let ns = resources::find("", "v1", "namespaces").ok_or_else(|| ApiError::no_route(""))?;
    let kv = store
        .get(&ns.key(None, namespace), None)
        .await
        .map_err(|e| ApiError::from_store(e, ns, namespace))?
        .ok_or_else(|| ApiError::namespace_not_found(namespace))?;
    let object = decode_kv(&kv)?;
    if meta_str(&object, "deletionTimestamp").is_some() {
        return Err(ApiError::forbidden(format!(
            "unable to create new content in namespace {namespace} because it is being terminated"
        )));
    }
    Ok(())
}

async fn create(
    store: &dyn Store,
    services: &ServiceNetwork,
    target: &Target,
    body: &[u8],
) -> Result<Response, ApiError> {
    let mut object = parse_body(body, target.resource)?;
    let name = prepare_create(&mut object, target.resource, target.namespace.as_deref())?;
    if let Some(ns) = target.namespace.as_deref() {
        check_namespace(store, ns).await?;
    }
    crate::finalizers::on_create(target.resource, &mut object);
    let claims =
        allocator::claim_for_create(store, services, target.resource, &name, &mut object).await?;
    let revision = match store.create(&target.key(&name), encode(&object)).await {
        Ok(revision) => revision,
        Err(e) => {
            claims.undo(store).await;
            return Err(ApiError::from_store(e, target.resource, &name));
        }
    };
    set_resource_version(&mut object, revision);
    tracing::debug!(name, revision, "created");
    Ok(json_response(StatusCode::CREATED, &object))
}

/// Writes `new` over the key whose current mod revision is `expected`.
async fn write(
    store: &dyn Store,
    target: &Target,
    name: &str,
    mut new: Value,
    expected: Revision,
) -> Result<Value, ApiError> {
    let revision = store
        .update(&target.key(name), encode(&new), expected)
        .await
        .map_err(|e| ApiError::from_store(e, target.resource, name))?;
    set_resource_version(&mut new, revision);
    Ok(new)
}

async fn update(
    store: &dyn Store,
    services: &ServiceNetwork,
    target: &Target,
    name: &str,
    body: &[u8],
    part: UpdatePart,
) -> Result<Response, ApiError> {
    let resource = target.resource;
    let kv = get_kv(store, target, name).await?;
    let current = decode_kv(&kv)?;
    let mut new = if part == UpdatePart::Scale {
        serde_json::from_slice::<Value>(body).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
        })?
    } else {
        parse_body(body, resource)?
    };
    match meta_str(&new, "name") {
        None | Some("") => {}
        Some(n) if n == name => {}
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
    }
    if part != UpdatePart::Scale {
        crate::object::set_namespace(&mut new, resource, target.namespace.as_deref())?;
    }
    if requested_revision(&new, resource, name)?.is_some_and(|rv| rv != kv.mod_revision) {
        return Err(ApiError::conflict(resource, name));
    }
    let stored = apply_update(
        store,
        services,
        target,
        name,
        &current,
        new,
        part,
        kv.mod_revision,
    )
    .await?;
    Ok(ok(&stored))
}

/// Applies an update of `part` to `current` (mod revision `expected`) and writes it; returns
/// what the endpoint answers (the object, or its Scale).
#[expect(
    clippy::too_many_arguments,
    reason = "the pieces of one update, passed through once"
)]
async fn apply_update(
    store: &dyn Store,
    services: &ServiceNetwork,
    target: &Target,
    name: &str,
    current: &Value,
    new: Value,
    part: UpdatePart,
    expected: Revision,
) -> Result<Value, ApiError> {
    let resource = target.resource;
    let (new, part_of_object) = match part {
        UpdatePart::Object(p) => (new, p),
        UpdatePart::Scale => {
            let replicas = new
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .filter(|r| *r >= 0)
                .ok_or_else(|| {
                    ApiError::invalid(
                        resource,
                        name,
                        "spec.replicas: Invalid value: must be a non-negative integer",
                    )
                })?;
            let mut object = current.clone();
            if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("replicas".into(), json!(replicas));
            }
            (object, Part::Main)
        }
    };
    let stored = match prepare_update(current, new, resource, name, part_of_object)? {
        Some(mut next) => {
            let claims =
                allocator::claim_for_update(store, services, resource, name, current, &mut next)
                    .await?;
            match write(store, target, name, next, expected).await {
                Ok(stored) => {
                    allocator::release(store, resource, current, Some(&stored)).await;
                    crate::finalizers::finish(store, resource, &target.key(name), &stored).await?;
                    stored
                }
                Err(e) => {
                    claims.undo(store).await;
                    return Err(e);
                }
            }
        }
        None => current.clone(),
    };
    Ok(if part == UpdatePart::Scale {
        scale_of(&stored)
    } else {
        stored
    })
}

/// Kubernetes retries a patch this many times when the object changes underneath it.
const PATCH_ATTEMPTS: usize = 5;

async fn patch(
    store: &dyn Store,
    services: &ServiceNetwork,
    target: &Target,
    name: &str,
    content_type: &str,
    body: &[u8],
    part: UpdatePart,
) -> Result<Response, ApiError> {
    let resource = target.resource;
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let kv = get_kv(store, target, name).await?;
        let current = decode_kv(&kv)?;
        let mut doc = if part == UpdatePart::Scale {
            scale_of(&current)
        } else {
            current.clone()
        };
        match content_type {
            "application/merge-patch+json" => merge_patch(&mut doc, &patch),
            "application/strategic-merge-patch+json" => strategic_merge_patch(&mut doc, &patch)
                .map_err(|e| ApiError::invalid(resource, name, e))?,
            "application/json-patch+json" => {
                let operations: json_patch::Patch = serde_json::from_value(patch.clone())
                    .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                json_patch::patch(&mut doc, &operations)
                    .map_err(|e| ApiError::invalid(resource, name, e))?;
            }
            "application/apply-patch+yaml" => {
                return Err(ApiError::unsupported_media_type(
                    "application/apply-patch+yaml (server-side apply is not supported yet; \
                     use client-side kubectl apply)",
                ));
            }
            other => return Err(ApiError::unsupported_media_type(other)),
        }
        if requested_revision(&doc, resource, name)?.is_some_and(|rv| rv != kv.mod_revision) {
            return Err(ApiError::conflict(resource, name));
        }
        if part != UpdatePart::Scale {
            if let Some(meta) = crate::object::metadata_mut(&mut doc) {
                meta.insert("name".into(), json!(name));
            }
            crate::object::set_namespace(&mut doc, resource, target.namespace.as_deref())?;
            // apiVersion/kind must survive the patch.
            if let Some(root) = doc.as_object_mut() {
                root.insert("apiVersion".into(), json!(resource.api_version()));
                root.insert("kind".into(), json!(resource.kind));
            }
        }
        match apply_update(
            store,
            services,
            target,
            name,
            &current,
            doc,
            part,
            kv.mod_revision,
        )
        .await
        {
            Err(e) if e.reason == "Conflict" && attempt < PATCH_ATTEMPTS => continue,
            result => return result.map(|v| ok(&v)),
        }
    }
}

/// Delete options from the query and the body (`DeleteOptions`).
#[derive(Debug, Default)]
struct DeleteOptions {
    grace_period_seconds: Option<i64>,
    precondition_uid: Option<String>,
    precondition_rv: Option<String>,
    propagation: Option<crate::finalizers::Propagation>,
}

fn delete_options(params: &Params, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let mut options = DeleteOptions::default();
    let body_value = (!body.is_empty())
        .then(|| serde_json::from_slice::<Value>(body).ok())
        .flatten();
    options.propagation = crate::finalizers::propagation(
        params.get("propagationPolicy").map(String::as_str),
        body_value.as_ref(),
    )?;
    if !body.is_empty() {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the DeleteOptions body is not valid JSON: {e}"))
        })?;
        if value
            .get("dryRun")
            .and_then(Value::as_array)
            .is_some_and(|d| !d.is_empty())
        {
            return Err(ApiError::bad_request(
                "dryRun is not supported by keelson yet",
            ));
        }
        options.grace_period_seconds = value.get("gracePeriodSeconds").and_then(Value::as_i64);
        options.precondition_uid = value
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_owned);
        options.precondition_rv = value
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
    if let Some(grace) = params.get("gracePeriodSeconds").filter(|g| !g.is_empty()) {
        options.grace_period_seconds = Some(grace.parse().map_err(|_| {
            ApiError::bad_request(format!("invalid gracePeriodSeconds: {grace:?}"))
        })?);
    }
    Ok(options)
}

async fn delete(
    store: &dyn Store,
    target: &Target,
    name: &str,
    params: &Params,
    body: &[u8],
) -> Result<Response, ApiError> {
    let options = delete_options(params, body)?;
    // Marking an object for deletion is a read-modify-write; a controller writing the object in
    // between makes it conflict. Without a client precondition that is not the client's
    // conflict: read again and retry, as kube-apiserver's GuaranteedUpdate does.
    let mut attempts = 0;
    loop {
        let kv = get_kv(store, target, name).await?;
        match delete_one(store, target, name, &kv, &options).await {
            Err(e)
                if e.reason == "Conflict"
                    && options.precondition_rv.is_none()
                    && options.precondition_uid.is_none()
                    && attempts < DELETE_ATTEMPTS =>
            {
                attempts += 1;
            }
            result => return result.map(|v| ok(&v)),
        }
    }
}

/// How often a DELETE re-reads the object after a concurrent write.
const DELETE_ATTEMPTS: u32 = 5;

async fn delete_one(
    store: &dyn Store,
    target: &Target,
    name: &str,
    kv: &keelson_store::KeyValue,
    options: &DeleteOptions,
) -> Result<Value, ApiError> {
    let resource = target.resource;
    let mut current = decode_kv(kv)?;
    if let Some(uid) = &options.precondition_uid {
        let actual = meta_str(&current, "uid").unwrap_or_default();
        if uid != actual {
            return Err(ApiError::conflict_message(
                resource,
                name,
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                ),
            ));
        }
    }
    if let Some(rv) = &options.precondition_rv
        && *rv != kv.mod_revision.to_string()
    {
        return Err(ApiError::conflict(resource, name));
    }
    let terminating = meta_str(&current, "deletionTimestamp").is_some();
    if !terminating {
        crate::finalizers::on_delete(&mut current, options.propagation);
    }
    let finalizers = current
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    let bound_pod = resource.kind == "Pod"
        && current
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
    let graceful = (bound_pod && options.grace_period_seconds != Some(0))
        || resource.kind == "Namespace"
        || finalizers;
    if !graceful {
        store
            .delete(&target.key(name), Some(kv.mod_revision))
            .await
            .map_err(|e| ApiError::from_store(e, resource, name))?;
        tracing::debug!(name, "deleted");
        allocator::release(store, resource, &current, None).await;
        return Ok(current);
    }
    if terminating {
        return Ok(current);
    }
    let mut next = current.clone();
    let grace = if bound_pod {
        options
            .grace_period_seconds
            .or_else(|| {
                current
                    .pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
            .max(0)
    } else {
        0
    };
    if let Some(meta) = crate::object::metadata_mut(&mut next) {
        meta.insert("deletionTimestamp".into(), json!(now_rfc3339(grace)));
        meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
    }
    if resource.kind == "Namespace"
        && let Some(root) = next.as_object_mut()
    {
        root.insert("status".into(), json!({"phase": "Terminating"}));
    }
    tracing::debug!(name, grace, "marked for deletion");
    write(store, target, name, next, kv.mod_revision).await
}

async fn delete_collection(
    store: &dyn Store,
    target: &Target,
    params: &Params,
    body: &[u8],
) -> Result<Response, ApiError> {
    let options = delete_options(params, body)?;
    let selectors = Selectors::parse(target.resource, params, None)?;
    let listed = store
        .list(&target.prefix(), ListOptions::default())
        .await
        .map_err(|e| ApiError::from_store(e, target.resource, ""))?;
    let mut items = Vec::new();
    for kv in &listed.items {
        let object = decode_kv(kv)?;
        if !selectors.matches(&object) {
            continue;
        }
        let name = meta_str(&object, "name").unwrap_or_default().to_owned();
        let scoped = Target {
            resource: target.resource,
            namespace: meta_str(&object, "namespace").map(str::to_owned),
            name: Some(name.clone()),
            subresource: None,
        };
        match delete_one(store, &scoped, &name, kv, &options).await {
            Ok(deleted) => items.push(deleted),
            // Changed or gone since the listing: as Kubernetes, skip it.
            Err(e) if e.reason == "NotFound" || e.reason == "Conflict" => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ok(&json!({
        "kind": list_kind(target.resource),
        "apiVersion": target.resource.api_version(),
        "metadata": {"resourceVersion": listed.revision.to_string()},
        "items": items,
    })))
}

/// `POST pods/<name>/binding`: sets `spec.nodeName` once.
async fn bind(
    store: &dyn Store,
    target: &Target,
    name: &str,
    body: &[u8],
) -> Result<Response, ApiError> {
    let resource = target.resource;
    let binding: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                resource,
                name,
                "target.name: Required value: a node is required",
            )
        })?;
    let kv = get_kv(store, target, name).await?;
    let mut pod = decode_kv(&kv)?;
    if let Some(existing) = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    {
        return Err(ApiError::conflict_message(
            resource,
            name,
            format!(
                "Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{existing}\""
            ),
        ));
    }
    if meta_str(&pod, "deletionTimestamp").is_some() {
        return Err(ApiError::conflict_message(
            resource,
            name,
            format!("pod {name} is being deleted, cannot be assigned to a host"),
        ));
    }
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        spec.insert("nodeName".into(), json!(node));
    }
    write(store, target, name, pod, kv.mod_revision).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

pub(crate) async fn bootstrap(store: &dyn Store) -> Result<(), ApiError> {
    let resource = resources::find("", "v1", "namespaces").ok_or_else(|| ApiError::no_route(""))?;
    for name in SYSTEM_NAMESPACES {
        let mut object =
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        prepare_create(&mut object, resource, None)?;
        crate::finalizers::on_create(resource, &mut object);
        match store
            .create(&resource.key(None, name), encode(&object))
            .await
        {
            Ok(revision) => tracing::info!(namespace = name, revision, "created namespace"),
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(ApiError::from_store(e, resource, name)),
        }
    }
    Ok(())
}

/// Used by the watch stream: decodes an event's object.
pub(crate) fn decode_event_object(value: &[u8], revision: Revision) -> Result<Value, ApiError> {
    decode(value, revision)
}

pub(crate) fn revision_param(text: &str) -> Result<Revision, ApiError> {
    parse_revision(text, "resourceVersion")
}

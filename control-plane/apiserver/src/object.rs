//! Object handling shared by the handlers: decoding from the store, metadata on create and
//! update, validation, the Scale view.

use std::collections::BTreeMap;

use bytes::Bytes;
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;
use keelson_api::{defaulting::apply_defaults, selectors::LabelSelector, validation};
use keelson_store::{KeyValue, Revision};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    ApiError,
    error::Cause,
    registry::{Resource, typed},
    request::{Body, FieldValidation, WriteOptions},
};

/// The current time as Kubernetes writes it: RFC 3339, whole seconds, UTC.
pub(crate) fn now_rfc3339(offset_seconds: i64) -> String {
    let now = jiff::Timestamp::now()
        .as_second()
        .saturating_add(offset_seconds);
    jiff::Timestamp::from_second(now)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Parses a stored value and sets `metadata.resourceVersion` to `revision`.
pub(crate) fn decode(value: &[u8], revision: Revision) -> Result<Value, ApiError> {
    let mut object: Value = serde_json::from_slice(value)
        .map_err(|e| ApiError::internal("the store holds a value that is not JSON", &e))?;
    set_resource_version(&mut object, revision);
    Ok(object)
}

/// [`decode`] of a key-value.
pub(crate) fn decode_kv(kv: &KeyValue) -> Result<Value, ApiError> {
    decode(&kv.value, kv.mod_revision)
}

/// Sets `metadata.resourceVersion`.
pub(crate) fn set_resource_version(object: &mut Value, revision: Revision) {
    if let Some(meta) = metadata_mut(object) {
        meta.insert("resourceVersion".into(), json!(revision.to_string()));
    }
}

/// The bytes to store: the object without `resourceVersion` (the store's revision is the
/// truth), `metadata` first, so a list can put each object's resourceVersion back without
/// parsing it ([`with_resource_version`]).
pub(crate) fn encode(object: &Value) -> Bytes {
    let bytes = match object {
        Value::Object(map) => serde_json::to_vec(&Stored(map)),
        other => serde_json::to_vec(other),
    };
    Bytes::from(bytes.unwrap_or_default())
}

/// How [`encode`] writes an object: `metadata` (without `resourceVersion`), then the rest.
struct Stored<'a>(&'a Map<String, Value>);

impl serde::Serialize for Stored<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(None)?;
        match self.0.get("metadata") {
            Some(Value::Object(meta)) => map.serialize_entry("metadata", &WithoutRevision(meta))?,
            Some(other) => map.serialize_entry("metadata", other)?,
            None => {}
        }
        for (key, value) in self.0.iter().filter(|(key, _)| *key != "metadata") {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

struct WithoutRevision<'a>(&'a Map<String, Value>);

impl serde::Serialize for WithoutRevision<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(None)?;
        for (key, value) in self.0.iter().filter(|(key, _)| *key != "resourceVersion") {
            map.serialize_entry(key, value)?;
        }
        map.end()
    }
}

/// What [`encode`] starts an object with.
const STORED_PREFIX: &[u8] = b"{\"metadata\":{";

/// Appends the stored object `value` with `metadata.resourceVersion` set to `revision`, without
/// parsing it, when [`encode`] wrote it (metadata first); `false` (and nothing appended) for
/// values in another layout, which the caller decodes instead.
pub(crate) fn with_resource_version(value: &[u8], revision: Revision, out: &mut Vec<u8>) -> bool {
    let Some(rest) = value.strip_prefix(STORED_PREFIX) else {
        return false;
    };
    out.extend_from_slice(STORED_PREFIX);
    out.extend_from_slice(format!("\"resourceVersion\":\"{revision}\"").as_bytes());
    if !rest.starts_with(b"}") {
        out.push(b',');
    }
    out.extend_from_slice(rest);
    true
}

/// `metadata` as a mutable map, created if missing (when the object is a map).
pub(crate) fn metadata_mut(object: &mut Value) -> Option<&mut Map<String, Value>> {
    let root = object.as_object_mut()?;
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    meta.as_object_mut()
}

/// A string in `metadata`.
pub(crate) fn meta_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object.get("metadata")?.get(field)?.as_str()
}

/// The object's labels.
pub(crate) fn labels(object: &Value) -> BTreeMap<String, String> {
    object
        .get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// The `metadata.resourceVersion` a client sent, if any: `None` when absent or empty.
pub(crate) fn requested_revision(
    object: &Value,
    resource: &Resource,
    name: &str,
) -> Result<Option<Revision>, ApiError> {
    match meta_str(object, "resourceVersion") {
        None | Some("") => Ok(None),
        Some(rv) => rv.parse().map(Some).map_err(|_| {
            ApiError::invalid(
                resource,
                name,
                format!("metadata.resourceVersion: Invalid value: \"{rv}\": must be an integer"),
            )
        }),
    }
}

/// Checks that a decoded body is a JSON object of `resource`'s kind, filling `apiVersion` and
/// `kind` when absent.
pub(crate) fn check_kind(object: &mut Value, resource: &Resource) -> Result<(), ApiError> {
    let Some(root) = object.as_object_mut() else {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): couldn't get \
             version/kind; json parse error: expected an object",
            resource.kind
        )));
    };
    let api_version = resource.api_version();
    match root.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            root.insert("apiVersion".into(), json!(api_version));
        }
        Some(v) if v == api_version => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version \
                 ({api_version})"
            )));
        }
    }
    match root.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            root.insert("kind".into(), json!(resource.kind));
        }
        Some(k) if k == resource.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({}) of {}",
                resource.kind,
                resource.qualified()
            )));
        }
    }
    Ok(())
}

/// Parses a create or update body (JSON, YAML or decoded protobuf) into an object of
/// `resource`'s kind, decoded strictly ([`decode_strictly`]).
pub(crate) fn parse_object(
    body: &Body,
    resource: &Resource,
    options: &WriteOptions,
    warnings: &mut Vec<String>,
) -> Result<Value, ApiError> {
    let (mut object, duplicates) = body.value(options.field_validation).map_err(|e| {
        ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): {}",
            resource.kind, e.message
        ))
    })?;
    check_kind(&mut object, resource)?;
    decode_strictly(
        &mut object,
        resource,
        &duplicates,
        options.field_validation,
        warnings,
    )?;
    Ok(object)
}

/// Decodes `object` (in `resource`'s own form) as its k8s-openapi type, as kube-apiserver's
/// decoder does: a value of the wrong type is a 400; fields the kind does not have and keys
/// given twice (`duplicates`) are dropped, and named in `warnings` (`Warn`) or refused with a
/// 400 (`Strict`).
pub(crate) fn decode_strictly(
    object: &mut Value,
    resource: &Resource,
    duplicates: &[String],
    validation: FieldValidation,
    warnings: &mut Vec<String>,
) -> Result<(), ApiError> {
    let cannot = |why: String| {
        ApiError::bad_request(format!(
            "{kind} in version \"{version}\" cannot be handled as a {kind}: {why}",
            kind = resource.kind,
            version = resource.version,
        ))
    };
    let unknown = (resource.decode)(object).map_err(|e| cannot(e.to_string()))?;
    let mut problems: Vec<String> = duplicates
        .iter()
        .map(|path| format!("duplicate field \"{path}\""))
        .collect();
    problems.extend(
        unknown
            .iter()
            .map(|path| format!("unknown field \"{}\"", typed::render(path))),
    );
    match validation {
        FieldValidation::Strict if !problems.is_empty() => {
            return Err(cannot(format!(
                "strict decoding error: {}",
                problems.join(", ")
            )));
        }
        FieldValidation::Warn => warnings.extend(problems),
        _ => {}
    }
    for path in unknown.iter().rev() {
        typed::remove(object, path);
    }
    Ok(())
}

/// Puts the URL's namespace into the object (or removes it for cluster-scoped resources);
/// a different namespace in the body is a 400.
pub(crate) fn set_namespace(
    object: &mut Value,
    resource: &Resource,
    namespace: Option<&str>,
) -> Result<(), ApiError> {
    let Some(meta) = metadata_mut(object) else {
        return Ok(());
    };
    if !resource.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    let url = namespace.unwrap_or("default");
    match meta.get("namespace").and_then(Value::as_str) {
        None | Some("") => {}
        Some(ns) if ns == url => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the \
                 request",
            ));
        }
    }
    meta.insert("namespace".into(), json!(url));
    Ok(())
}

/// The group and kind objects of `resource` are stored as (events.k8s.io Events are core
/// Events, autoscaling/v1 HorizontalPodAutoscalers autoscaling/v2 ones).
pub(crate) fn storage_kind(resource: &Resource) -> (&'static str, &'static str) {
    match resource.conversion {
        Some(c) => (c.stored_as.0, resource.kind),
        None => (resource.group, resource.kind),
    }
}

/// Fills Kubernetes' defaults into a stored-form object and validates it as kube-apiserver's
/// strategies do (against `old` on updates): every invalid field is named in one 422.
pub(crate) fn default_and_validate(
    object: &mut Value,
    resource: &Resource,
    name: &str,
    old: Option<(&Value, Part)>,
) -> Result<(), ApiError> {
    let (group, kind) = storage_kind(resource);
    apply_defaults(group, kind, object);
    daemon_set_template_generation(resource, old.map(|(old, _)| old), object);
    let errors = match old {
        None => validation::validate(group, kind, object),
        Some((old, Part::Main)) => {
            // kube-apiserver defaults what it reads from storage too, so an object stored
            // before a default existed is compared in its defaulted form.
            let mut old = old.clone();
            apply_defaults(group, kind, &mut old);
            validation::validate_update(group, kind, &old, object)
        }
        Some((old, Part::Status)) => validation::validate_status_update(old, object),
        Some((old, Part::EphemeralContainers)) => {
            let mut old = old.clone();
            apply_defaults(group, kind, &mut old);
            crate::write::ephemeral::validate(&old, object)
        }
    };
    refuse_invalid(resource, name, &errors)
}

/// A 422 `Invalid` naming every one of `errors` (as kube-apiserver's `errors.NewInvalid`), or
/// `Ok` when there are none.
pub(crate) fn refuse_invalid(
    resource: &Resource,
    name: &str,
    errors: &[validation::FieldError],
) -> Result<(), ApiError> {
    if errors.is_empty() {
        return Ok(());
    }
    let causes = errors
        .iter()
        .map(|e| Cause {
            reason: e.reason().to_owned(),
            message: e.message(),
            field: e.field.clone(),
        })
        .collect();
    Err(ApiError::invalid_with(
        validation::summary(&resource.qualified_kind(), name, errors),
        resource.group,
        resource.kind,
        name,
        causes,
    ))
}

const GENERATE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `generateName` plus five random characters, as Kubernetes does.
pub(crate) fn generated_name(base: &str) -> String {
    let random = uuid::Uuid::new_v4();
    let suffix: String = random
        .as_bytes()
        .iter()
        .take(5)
        .map(|b| char::from(GENERATE_ALPHABET[usize::from(*b) % GENERATE_ALPHABET.len()]))
        .collect();
    format!("{base}{suffix}")
}

/// Prepares a new object for create: name (or generateName), namespace, system metadata,
/// reset status, defaults, validation. Returns the name.
pub(crate) fn prepare_create(
    object: &mut Value,
    resource: &Resource,
    namespace: Option<&str>,
) -> Result<String, ApiError> {
    let name = prepare_metadata(object, resource, namespace)?;
    default_and_validate(object, resource, &name, None)?;
    Ok(name)
}

/// [`prepare_create`] for the API server's own objects (the `kubernetes` Service's Endpoints
/// and EndpointSlice), which are defaulted but not validated: in an all-in-one cluster they
/// point at a loopback address, which Kubernetes' validation refuses from clients.
pub(crate) fn prepare_system_create(
    object: &mut Value,
    resource: &Resource,
    namespace: Option<&str>,
) -> Result<String, ApiError> {
    let name = prepare_metadata(object, resource, namespace)?;
    let (group, kind) = storage_kind(resource);
    apply_defaults(group, kind, object);
    Ok(name)
}

/// Name (or generateName), namespace, system metadata and the reset status of a new object.
fn prepare_metadata(
    object: &mut Value,
    resource: &Resource,
    namespace: Option<&str>,
) -> Result<String, ApiError> {
    set_namespace(object, resource, namespace)?;
    let Some(meta) = metadata_mut(object) else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    let name = match meta.get("name").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => match meta.get("generateName").and_then(Value::as_str) {
            Some(base) if !base.is_empty() => generated_name(base),
            _ => {
                return Err(ApiError::invalid(
                    resource,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ));
            }
        },
    };
    meta.insert("name".into(), json!(name));
    for field in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        meta.remove(field);
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339(0)));
    if resource.has_spec {
        meta.insert("generation".into(), json!(1));
    } else {
        meta.remove("generation");
    }
    // The strategies' PrepareForCreate: a client does not set the status of a kind with a
    // status subresource (Nodes excepted: their agents register them with one).
    if resource.status
        && resource.kind != "Node"
        && let Some(root) = object.as_object_mut()
    {
        let status = match resource.kind {
            "Pod" => json!({"phase": "Pending"}),
            "Namespace" => json!({"phase": "Active"}),
            "Service" => json!({"loadBalancer": {}}),
            "PersistentVolume" | "PersistentVolumeClaim" => json!({"phase": "Pending"}),
            _ => json!({}),
        };
        root.insert("status".into(), status);
    }
    Ok(name)
}

/// Which part of an object an update may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The main resource: everything but `status` (for resources with a status subresource).
    Main,
    /// The `status` subresource: only `status`.
    Status,
    /// A pod's `ephemeralcontainers` subresource: only `spec.ephemeralContainers`.
    EphemeralContainers,
}

/// [`prepare_create`] short of validation: the object mutating admission sees, which
/// [`default_and_validate`] then finishes.
pub(crate) fn prepare_create_for_admission(
    object: &mut Value,
    resource: &Resource,
    namespace: Option<&str>,
) -> Result<String, ApiError> {
    prepare_system_create(object, resource, namespace)
}

/// The first half of building the object an update stores from the current one (`old`, as
/// decoded) and the client's (`new`): system metadata is kept and the part the endpoint may
/// not change is taken from `old`; defaulted, this is what mutating admission sees.
pub(crate) fn merge_update(
    old: &Value,
    mut new: Value,
    resource: &Resource,
    name: &str,
    part: Part,
) -> Result<Value, ApiError> {
    if part == Part::EphemeralContainers {
        new = crate::write::ephemeral::merge(old, &new);
    }
    if part == Part::Status {
        let mut merged = old.clone();
        if let (Some(root), Some(status)) = (merged.as_object_mut(), new.get("status")) {
            root.insert("status".into(), status.clone());
        }
        // What server-side apply recorded (an Update's entries are recorded after this, from
        // the live ones).
        if let (Some(meta), Some(entries)) = (
            metadata_mut(&mut merged),
            new.pointer("/metadata/managedFields"),
        ) {
            meta.insert("managedFields".into(), entries.clone());
        }
        new = merged;
    } else if resource.status
        && let Some(root) = new.as_object_mut()
    {
        match old.get("status") {
            Some(status) => root.insert("status".into(), status.clone()),
            None => root.remove("status"),
        };
    }
    let Some(meta) = metadata_mut(&mut new) else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    meta.insert("name".into(), json!(name));
    let old_meta = old.get("metadata").and_then(Value::as_object);
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
    ] {
        match old_meta.and_then(|m| m.get(field)) {
            Some(value) => meta.insert(field.into(), value.clone()),
            None => meta.remove(field),
        };
    }
    meta.remove("selfLink");
    let (group, kind) = storage_kind(resource);
    apply_defaults(group, kind, &mut new);
    if resource.group.is_empty() && resource.kind == "Service" && part == Part::Main {
        crate::allocator::prepare_update(old, &mut new);
    }
    Ok(new)
}

/// The second half ([`merge_update`] is the first): validation, and `generation` bumps when
/// `spec` changed. Returns `None` when nothing changed.
pub(crate) fn finish_update(
    old: &Value,
    mut new: Value,
    resource: &Resource,
    name: &str,
    part: Part,
) -> Result<Option<Value>, ApiError> {
    default_and_validate(&mut new, resource, name, Some((old, part)))?;
    if resource.has_spec && old.get("spec") != new.get("spec") {
        let generation = old
            .get("metadata")
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if let Some(meta) = metadata_mut(&mut new) {
            meta.insert("generation".into(), json!(generation + 1));
        }
    }
    // The same object apart from resourceVersion: nothing to write.
    let rv = meta_str(old, "resourceVersion").map(str::to_owned);
    if let (Some(meta), Some(rv)) = (metadata_mut(&mut new), rv) {
        meta.insert("resourceVersion".into(), json!(rv));
    }
    Ok((&new != old).then_some(new))
}

/// `metav1.LabelSelectorAsSelector(selector).String()` for a `metav1.LabelSelector` in an
/// object's JSON: the requirements sorted by key, empty for an absent or empty selector.
/// `Err` holds why Kubernetes cannot convert it (an unknown operator, `In` without values,
/// `Exists` with values, an invalid key or value).
pub(crate) fn label_selector_text(selector: Option<&Value>) -> Result<String, String> {
    let Some(selector) = selector.filter(|s| !s.is_null()) else {
        return Ok(String::new());
    };
    let typed = metav1::LabelSelector::deserialize(selector).map_err(|e| e.to_string())?;
    LabelSelector::from_label_selector(&typed)
        .map(|s| s.to_string())
        .map_err(|e| e.to_string())
}

/// A Scale's `status.selector`, as kube-apiserver's scale storage builds it: a
/// ReplicationController's `spec.selector` is a map of labels (`labels.SelectorFromSet`), the
/// apps kinds' a `metav1.LabelSelector` (`LabelSelectorAsSelector`).
fn scale_selector(resource: &Resource, object: &Value) -> Result<String, String> {
    let selector = object.pointer("/spec/selector");
    if resource.kind == "ReplicationController" {
        let set: BTreeMap<String, String> = selector
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect();
        return Ok(LabelSelector::from_set(&set).to_string());
    }
    label_selector_text(selector)
}

/// The autoscaling/v1 Scale view of an object of a kind with a `/scale` subresource. `Err`
/// holds why its selector does not convert, which kube-apiserver answers with a 400.
pub(crate) fn scale_of(resource: &Resource, object: &Value) -> Result<Value, String> {
    let meta = object.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let pick = |field: &str| meta.get(field).cloned().unwrap_or(Value::Null);
    let mut scale_meta = Map::new();
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if !pick(field).is_null() {
            scale_meta.insert(field.into(), pick(field));
        }
    }
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": scale_meta,
        "spec": {"replicas": object.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {
            "replicas": object.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": scale_selector(resource, object)?,
        },
    }))
}

/// The annotation an apps/v1 DaemonSet carries its template generation in.
const DAEMON_SET_TEMPLATE_GENERATION: &str = "deprecated.daemonset.template.generation";

/// A DaemonSet's template generation, as kube-apiserver keeps it (`spec.templateGeneration` of
/// the internal type, shown in apps/v1 as the annotation `deprecated.daemonset.template.generation`):
/// at least 1 on create, one more than the old object's when `spec.template` changes, else the
/// old object's. The DaemonSet controller labels pods with it (`pod-template-generation`).
fn daemon_set_template_generation(resource: &Resource, old: Option<&Value>, new: &mut Value) {
    if resource.group != "apps" || resource.kind != "DaemonSet" {
        return;
    }
    let generation = |object: &Value| {
        object
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(DAEMON_SET_TEMPLATE_GENERATION))
            .and_then(Value::as_str)
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or(0)
    };
    let next = match old {
        None => generation(new).max(1),
        Some(old) if old.pointer("/spec/template") != new.pointer("/spec/template") => {
            generation(old) + 1
        }
        Some(old) => generation(old).max(1),
    };
    let Some(meta) = metadata_mut(new) else {
        return;
    };
    if let Some(annotations) = meta
        .entry("annotations")
        .or_insert_with(|| json!({}))
        .as_object_mut()
    {
        annotations.insert(
            DAEMON_SET_TEMPLATE_GENERATION.to_owned(),
            json!(next.to_string()),
        );
    }
}

#[cfg(test)]
mod stored_layout_tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn stored_objects_get_their_resource_version_back_without_a_parse() {
        for object in [
            json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": "{\"metadata\":{"},
                   "metadata": {"name": "a", "resourceVersion": "9", "labels": {"x": "y"}}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"resourceVersion": "3"}}),
        ] {
            let stored = encode(&object);
            assert!(
                stored.starts_with(STORED_PREFIX),
                "{}",
                String::from_utf8_lossy(&stored)
            );
            assert!(!String::from_utf8_lossy(&stored).contains("resourceVersion"));
            let mut out = Vec::new();
            assert!(with_resource_version(&stored, 42, &mut out));
            let mut expected = object.clone();
            set_resource_version(&mut expected, 42);
            assert_eq!(
                serde_json::from_slice::<Value>(&out).expect("JSON"),
                expected
            );
        }
        // Another layout (an older keelson's) is left to the caller.
        let mut out = Vec::new();
        assert!(!with_resource_version(
            br#"{"apiVersion":"v1","metadata":{}}"#,
            1,
            &mut out
        ));
        assert!(out.is_empty());
    }
}

//! Custom resources through a version's schema: decoding (pruning unknown fields as
//! `fieldValidation` says, then defaulting), validation (the schema with its CEL rules, and
//! the metadata), the `scale` subresource at the CRD's paths, and the patch types kube takes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use keelson_api::validation::{self, FieldError};
use serde_json::{Map, Value, json};

use super::{ScalePaths, Served};
use crate::{
    ApiError,
    object::{label_selector_text, refuse_invalid},
    registry::typed,
    request::{FieldValidation, Target, WriteOptions},
};

/// Prunes what neither the schema nor `ObjectMeta` knows (named in `warnings` or refused, as
/// `fieldValidation` says) and applies the schema's defaults. `object` is in the served
/// version's form.
pub(crate) fn admit(
    served: &Served,
    object: &mut Value,
    options: &WriteOptions,
    warnings: &mut Vec<String>,
) -> Result<(), ApiError> {
    let resource = served.resource;
    let mut unknown: Vec<String> = Vec::new();
    if let Some(meta) = object.get_mut("metadata")
        && meta.is_object()
    {
        let fields = typed::typed::<ObjectMeta>(meta).map_err(|e| {
            ApiError::bad_request(format!(
                "{kind} in version \"{version}\" cannot be handled as a {kind}: {e}",
                kind = resource.kind,
                version = resource.version,
            ))
        })?;
        for path in fields.iter().rev() {
            typed::remove(meta, path);
        }
        unknown.extend(
            fields
                .iter()
                .map(|path| format!("metadata.{}", typed::render(path))),
        );
    }
    if let Some(schema) = &served.schema {
        unknown.extend(schema.prune(object));
    }
    if !unknown.is_empty() {
        let problems: Vec<String> = unknown
            .iter()
            .map(|path| format!("unknown field \"{path}\""))
            .collect();
        match options.field_validation {
            FieldValidation::Strict => {
                return Err(ApiError::bad_request(format!(
                    "{kind} in version \"{version}\" cannot be handled as a {kind}: strict \
                     decoding error: {}",
                    problems.join(", "),
                    kind = resource.kind,
                    version = resource.version,
                )));
            }
            FieldValidation::Warn => warnings.extend(problems),
            FieldValidation::Ignore => {}
        }
    }
    if let Some(schema) = &served.schema {
        schema.default(object);
    }
    Ok(())
}

/// Validates a custom resource about to be stored (in the served version's form): its
/// metadata (names are DNS subdomains) and its schema, rules included (transition rules
/// against `old` on updates). Every problem is named in one 422.
pub(crate) fn validate(
    served: &Served,
    object: &Value,
    old: Option<&Value>,
    name: &str,
) -> Result<(), ApiError> {
    let resource = served.resource;
    let mut errors: Vec<FieldError> = match old {
        None => validation::custom_resource(object, resource.namespaced),
        Some(old) => validation::custom_resource_update(object, old, resource.namespaced),
    };
    if let Some(schema) = &served.schema {
        errors.extend(schema.validate(object, old));
    }
    refuse_invalid(resource, name, &errors)
}

/// kube's generation rule for custom resources: any change outside `metadata` (and outside
/// `status` when it is a subresource) bumps `metadata.generation`, not only a change of
/// `spec` (which the built-in rule in `prepare_update` already counted).
pub(crate) fn bump_generation(served: &Served, old: &Value, new: &mut Value) {
    let content = |object: &Value| {
        let mut map = object.as_object().cloned().unwrap_or_default();
        map.remove("metadata");
        map.remove("apiVersion");
        if served.resource.status {
            map.remove("status");
        }
        map
    };
    let generation = |object: &Value| {
        object
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0)
    };
    if content(old) != content(new)
        && generation(new) == generation(old)
        && let Some(meta) = new.get_mut("metadata").and_then(Value::as_object_mut)
    {
        meta.insert("generation".into(), json!(generation(old) + 1));
    }
}

/// The patch types custom resources take: kube has no strategic merge patch for them (no
/// Go struct to read patch strategies from).
pub(crate) fn refuse_strategic_merge(content_type: &str) -> Result<(), ApiError> {
    if content_type == "application/strategic-merge-patch+json" {
        return Err(ApiError::unsupported_patch(&[
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        ]));
    }
    Ok(())
}

/// The Scale of `object` through `target`: at the CRD's paths for custom resources.
pub(crate) fn scale_view(target: &Target, object: &Value) -> Result<Value, ApiError> {
    match &target.custom {
        Some(served) => scale_of(served, object),
        None => crate::object::scale_of(target.resource, object),
    }
    .map_err(ApiError::bad_request)
}

/// The keys of a simple `.a.b` path.
fn keys(path: &str) -> impl Iterator<Item = &str> {
    path.split('.').filter(|k| !k.is_empty())
}

fn at<'a>(object: &'a Value, path: &str) -> Option<&'a Value> {
    keys(path).try_fold(object, |v, key| v.get(key))
}

/// The autoscaling/v1 Scale of a custom resource, read at the CRD's paths. `Err` holds why
/// its selector does not convert.
pub(crate) fn scale_of(served: &Served, object: &Value) -> Result<Value, String> {
    let paths: &ScalePaths = served
        .scale
        .as_ref()
        .ok_or_else(|| "the scale subresource is not enabled".to_owned())?;
    let mut meta = Map::new();
    for field in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        if let Some(value) = object.pointer(&format!("/metadata/{field}")) {
            meta.insert(field.into(), value.clone());
        }
    }
    let replicas = |path: &str| at(object, path).and_then(Value::as_i64).unwrap_or(0);
    let mut status = Map::new();
    status.insert("replicas".into(), json!(replicas(&paths.status_replicas)));
    if let Some(selector) = paths.label_selector.as_deref().and_then(|p| at(object, p)) {
        let text = match selector {
            Value::String(s) => s.clone(),
            other => label_selector_text(Some(other))?,
        };
        status.insert("selector".into(), json!(text));
    }
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": {"replicas": replicas(&paths.spec_replicas)},
        "status": status,
    }))
}

/// `object` with `replicas` written at the CRD's spec replicas path.
pub(crate) fn set_replicas(served: &Served, object: &mut Value, replicas: i64) {
    let Some(paths) = &served.scale else {
        return;
    };
    let keys: Vec<&str> = keys(&paths.spec_replicas).collect();
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let mut current = object;
    for key in parents {
        let Some(map) = current.as_object_mut() else {
            return;
        };
        current = map
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if let Some(map) = current.as_object_mut() {
        map.insert((*last).to_owned(), json!(replicas));
    }
}

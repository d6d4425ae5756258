//! Server-side apply: `PATCH` with `Content-Type: application/apply-patch+yaml`, as
//! kube-apiserver's `endpoints/handlers/patch.go` (`applyPatcher`) runs it. The merge and the
//! field ownership are `keelson_api::managed_fields::apply`; here are the request's rules:
//!
//! - `fieldManager` is required (a 422 on `PatchOptions`); `force` is for apply patches only
//!   (checked in `write::patch`);
//! - the body is YAML or JSON; its apiVersion and kind must be the endpoint's, its
//!   `metadata.managedFields` absent, its name the URL's;
//! - a conflict is a 409 `Conflict` whose causes (`FieldManagerConflict`) name each field;
//! - an apply of a missing object creates it (201); of a missing object's `status` or
//!   `scale`, a 404; a Scale's `managedFields` are its parent's, translated both ways;
//! - the result goes through the same decoding, defaults, validation, dry-run and retries
//!   as every other patch.

use keelson_api::managed_fields::{self, ApplyError};
use serde_json::{Value, json};

use crate::admission::Admit;
use crate::allocator::ServiceNetwork;
use crate::crd;
use crate::{
    ApiError,
    error::{Cause, Details},
    handlers::Written,
    object::{
        Part, check_kind, decode_kv, decode_strictly, meta_str, metadata_mut, now_rfc3339,
        requested_revision, scale_of, set_namespace,
    },
    read::get_kv,
    request::{Body, Target, WriteOptions},
    write::{PATCH_ATTEMPTS, UpdatePart, apply_update, insert},
};
use keelson_store::Store;

/// `PATCH` with an apply configuration (see the module documentation).
#[expect(
    clippy::too_many_arguments,
    reason = "the request's parts and its admission, passed through once"
)]
pub(crate) async fn patch(
    store: &dyn Store,
    services: &ServiceNetwork,
    target: &Target,
    name: &str,
    body: &Body,
    part: UpdatePart,
    options: &WriteOptions,
    admit: &Admit<'_>,
) -> Result<Written, ApiError> {
    let resource = target.resource;
    if !options.field_manager_sent {
        return Err(ApiError::invalid_options(
            "PatchOptions",
            "fieldManager: Required value: is required for apply patch",
        ));
    }
    let subresource = match part {
        UpdatePart::Object(Part::Main) => None,
        UpdatePart::Object(Part::Status) => Some("status"),
        UpdatePart::Object(Part::EphemeralContainers) => Some("ephemeralcontainers"),
        UpdatePart::Scale => {
            return scale(store, services, target, name, body, options, admit).await;
        }
    };
    let (mut config, duplicates) = configuration(body, options)?;
    managed_fields::check_configuration(&config, &resource.api_version(), resource.kind)
        .map_err(|e| apply_error(e, target, name))?;
    // Fields the kind does not have are dropped from the configuration (or refused), so that
    // nobody owns them; a value of the wrong type is a 400.
    let mut warnings = Vec::new();
    decode_strictly(
        &mut config,
        resource,
        &duplicates,
        options.field_validation,
        &mut warnings,
    )?;
    let api_version = resource.api_version();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let kv = match get_kv(store, target, name).await {
            Ok(kv) => Some(kv),
            Err(e) if e.reason == "NotFound" && subresource.is_none() => None,
            Err(e) => return Err(e),
        };
        let live = match kv.as_ref() {
            Some(kv) => {
                let current = crd::convert::load(store, target, decode_kv(kv)?).await?;
                Some((resource.present(current.clone()), current))
            }
            None => None,
        };
        let time = now_rfc3339(0);
        let applied = managed_fields::apply(
            live.as_ref().map(|(presented, _)| presented),
            &config,
            &managed_fields::Apply {
                manager: &options.field_manager,
                api_version: &api_version,
                kind: resource.kind,
                time: &time,
                subresource,
                has_status: resource.status,
                force: options.force.unwrap_or(false),
                schema: crate::write::field_schema(target),
            },
        );
        let mut object = applied.map_err(|e| apply_error(e, target, name))?;
        check_names(&object, &config, target, name)?;
        set_namespace(&mut object, resource, target.namespace.as_deref())?;
        check_kind(&mut object, resource)?;
        let mut object = resource.to_storage(object);
        let result = match (kv, live) {
            (Some(kv), Some((_, current))) => {
                if let Some(custom) = &target.custom {
                    crd::admit(custom, &mut object, options, &mut warnings)?;
                }
                if requested_revision(&object, resource, name)?
                    .is_some_and(|rv| rv != kv.mod_revision)
                {
                    return Err(ApiError::conflict(resource, name));
                }
                apply_update(
                    store,
                    services,
                    target,
                    name,
                    &current,
                    object,
                    part,
                    kv.mod_revision,
                    options,
                    false,
                    admit,
                    &mut warnings,
                )
                .await
                .map(|stored| Written::ok(resource.present(stored)))
            }
            _ => insert(store, services, target, object, options, false, admit)
                .await
                .inspect(|written| warnings.extend(written.warnings.iter().cloned())),
        };
        match result {
            Err(e)
                if (e.reason == "Conflict" || e.reason == "AlreadyExists")
                    && meta_str(&config, "resourceVersion").is_none_or(str::is_empty)
                    && attempt < PATCH_ATTEMPTS => {}
            result => {
                return result.map(|written| Written {
                    warnings,
                    ..written
                });
            }
        }
    }
}

/// The body as a configuration: a YAML (or JSON) map, with the paths of keys given twice.
fn configuration(body: &Body, options: &WriteOptions) -> Result<(Value, Vec<String>), ApiError> {
    let (config, duplicates) = body
        .value(options.field_validation)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {}", e.message)))?;
    if !config.is_object() {
        return Err(ApiError::bad_request(
            "error decoding YAML: error unmarshaling JSON: while decoding JSON: json: cannot \
             unmarshal into Go value of type map[string]interface {}",
        ));
    }
    Ok((config, duplicates))
}

/// Apply of an autoscaling/v1 Scale to `/scale`: the Scale's `managedFields` are those of the
/// parent's entries owning `spec.replicas`, and go back to the parent after the apply
/// (`managed_fields::{scale_managed_fields, parent_managed_fields}`). A Scale applied without
/// `spec.replicas` scales to 0, as Go's zero value does.
async fn scale(
    store: &dyn Store,
    services: &ServiceNetwork,
    target: &Target,
    name: &str,
    body: &Body,
    options: &WriteOptions,
    admit: &Admit<'_>,
) -> Result<Written, ApiError> {
    let resource = target.resource;
    let mut warnings = Vec::new();
    let (config, _) = configuration(body, options)?;
    managed_fields::check_configuration(&config, SCALE_VERSION, "Scale")
        .map_err(|e| apply_error(e, target, name))?;
    if let Some(replicas) = config.pointer("/spec/replicas")
        && !replicas.is_i64()
    {
        return Err(ApiError::bad_request(format!(
            "Scale in version \"v1\" cannot be handled as a Scale: spec.replicas: expected an \
             integer, got {replicas}"
        )));
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let kv = get_kv(store, target, name).await?;
        let current = decode_kv(&kv)?;
        let mut live = scale_of(resource, &current).map_err(ApiError::bad_request)?;
        if let (Some(entries), Some(meta)) = (
            managed_fields::scale_managed_fields(&current),
            metadata_mut(&mut live),
        ) {
            meta.insert("managedFields".into(), entries);
        }
        let time = now_rfc3339(0);
        let applied = managed_fields::apply(
            Some(&live),
            &config,
            &managed_fields::Apply {
                manager: &options.field_manager,
                api_version: SCALE_VERSION,
                kind: "Scale",
                time: &time,
                subresource: Some("scale"),
                has_status: false,
                force: options.force.unwrap_or(false),
                schema: managed_fields::SchemaRef::of(SCALE_VERSION, "Scale"),
            },
        )
        .map_err(|e| apply_error(e, target, name))?;
        check_names(&applied, &config, target, name)?;
        let replicas = applied
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if replicas < 0 {
            return Err(ApiError::invalid_lines(
                "Scale.autoscaling",
                "autoscaling",
                "Scale",
                name,
                &[format!(
                    "spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
                )],
            ));
        }
        let mut parent = current.clone();
        if let Some(spec) = parent.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("replicas".into(), json!(replicas));
        }
        let entries =
            managed_fields::parent_managed_fields(&current, &applied, &resource.api_version());
        if let Some(meta) = metadata_mut(&mut parent) {
            match entries {
                Some(entries) => meta.insert("managedFields".into(), entries),
                None => meta.remove("managedFields"),
            };
        }
        match apply_update(
            store,
            services,
            target,
            name,
            &current,
            parent,
            UpdatePart::Object(Part::Main),
            kv.mod_revision,
            options,
            false,
            admit,
            &mut warnings,
        )
        .await
        {
            Ok(stored) => {
                let mut answer = scale_of(resource, &stored).map_err(ApiError::bad_request)?;
                if let (Some(entries), Some(meta)) = (
                    managed_fields::scale_managed_fields(&stored),
                    metadata_mut(&mut answer),
                ) {
                    meta.insert("managedFields".into(), entries);
                }
                return Ok(Written {
                    warnings,
                    ..Written::ok(answer)
                });
            }
            Err(e) if e.reason == "Conflict" && attempt < PATCH_ATTEMPTS => {}
            Err(e) => return Err(e),
        }
    }
}

/// The apiVersion of the Scale subresource.
const SCALE_VERSION: &str = "autoscaling/v1";

/// The object's name must be the URL's (`checkName` in `patch.go`), and a namespace in the
/// configuration the URL's.
fn check_names(
    object: &Value,
    config: &Value,
    target: &Target,
    name: &str,
) -> Result<(), ApiError> {
    let object_name = meta_str(object, "name").unwrap_or_default();
    if object_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({object_name}) does not match the name on the URL ({name})"
        )));
    }
    if let (Some(url), Some(sent)) = (
        target
            .namespace
            .as_deref()
            .filter(|_| target.resource.namespaced),
        meta_str(config, "namespace").filter(|ns| !ns.is_empty()),
    ) && sent != url
    {
        return Err(ApiError::bad_request(format!(
            "the namespace of the object ({sent}) does not match the namespace on the URL ({url})"
        )));
    }
    Ok(())
}

/// The `Status` kube-apiserver answers an apply that fails.
fn apply_error(error: ApplyError, target: &Target, name: &str) -> ApiError {
    match &error {
        ApplyError::Conflicts(conflicts) => {
            let mut status = ApiError::conflict_message(target.resource, name, error.to_string());
            status.details = Some(Box::new(Details {
                causes: conflicts
                    .iter()
                    .map(|c| Cause {
                        reason: "FieldManagerConflict".to_owned(),
                        message: format!("conflict with {}", c.manager),
                        field: c.field.clone(),
                    })
                    .collect(),
                ..Details::default()
            }));
            status
        }
        ApplyError::Invalid(why) => {
            let resource = target.resource;
            let group_version = match resource.group {
                "" => format!("/{}", resource.version),
                group => format!("{group}/{}", resource.version),
            };
            let namespace = target.namespace.as_deref().unwrap_or_default();
            ApiError::bad_request(format!(
                "failed to create typed patch object ({group_version}, Kind={} \
                 {namespace}/{name}): {why}",
                resource.kind
            ))
        }
        ApplyError::ObjectType(_) | ApplyError::ManagedFieldsSet => {
            ApiError::bad_request(error.to_string())
        }
    }
}

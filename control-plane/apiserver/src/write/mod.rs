//! The writing verbs: create, update (of the object, its status or its scale), patch (merge,
//! strategic merge, JSON patch), delete (with grace periods, finalizers and propagation),
//! deletecollection and pods' binding. Each honours `dryRun=All` (everything runs, nothing is
//! stored), `fieldValidation` and records `managedFields`.

use axum::http::StatusCode;
use keelson_api::managed_fields::SchemaRef;
use keelson_api::patch::{kind_definition, merge_patch, strategic_merge_patch};
use keelson_store::{Revision, Store};
use serde_json::{Value, json};

use crate::{
    ApiError,
    admission::{Admit, Attempt, matching::Operation},
    allocator::{self, ServiceNetwork},
    crd, finalizers,
    handlers::Written,
    object::{
        Part, check_kind, decode_kv, decode_strictly, default_and_validate, encode, finish_update,
        merge_update, meta_str, metadata_mut, now_rfc3339, parse_object,
        prepare_create_for_admission, requested_revision, scale_of, set_namespace,
        set_resource_version,
    },
    read::get_kv,
    registry::{self, Resource},
    request::{APPLY_PATCH, Body, Target, WriteOptions, parse_json},
};

mod bootstrap;
mod csr;
mod delete;
pub(crate) mod ephemeral;
mod job;

pub(crate) use bootstrap::bootstrap;
pub(crate) use delete::{delete, delete_collection};

/// What an update writes: a part of the object, or its replica count through `/scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpdatePart {
    Object(Part),
    Scale,
}

impl UpdatePart {
    /// Which part an update of subresource `sub` writes; other subresources are 404.
    pub(crate) fn of(target: &Target, sub: Option<&str>) -> Result<Self, ApiError> {
        match sub {
            None => Ok(Self::Object(Part::Main)),
            Some("status") if target.resource.status => Ok(Self::Object(Part::Status)),
            // A CSR's approval conditions live in its status; `update` keeps the certificate.
            Some("approval") if csr::is_csr(target) => Ok(Self::Object(Part::Status)),
            Some("scale") if target.resource.scale => Ok(Self::Scale),
            Some("ephemeralcontainers") if target.resource.kind == "Pod" => {
                Ok(Self::Object(Part::EphemeralContainers))
            }
            // The namespace controller's way to drop `spec.finalizers` (see `finalizers`).
            Some("finalize") if target.resource.kind == "Namespace" => Ok(Self::Object(Part::Main)),
            Some(_) => Err(ApiError::no_route()),
        }
    }

    fn subresource(self) -> Option<&'static str> {
        match self {
            Self::Object(Part::Main) => None,
            Self::Object(Part::Status) => Some("status"),
            Self::Object(Part::EphemeralContainers) => Some("ephemeralcontainers"),
            Self::Scale => Some("scale"),
        }
    }
}

/// The schema server-side apply and `managedFields` walk objects of `target` by: the CRD
/// version's compiled one for a custom resource, else the built-in kind's.
pub(crate) fn field_schema(target: &Target) -> SchemaRef<'_> {
    match &target.custom {
        Some(custom) => custom.field_schema(),
        None => SchemaRef::builtin(target.resource.group, target.resource.kind)
            .unwrap_or_else(SchemaRef::deduced),
    }
}

/// Records the write in `metadata.managedFields` (kube-apiserver's Update entries).
fn record_managed_fields(
    target: &Target,
    old: Option<&Value>,
    new: &mut Value,
    options: &WriteOptions,
    subresource: Option<&str>,
) {
    let resource = target.resource;
    let time = now_rfc3339(0);
    let api_version = resource.api_version();
    keelson_api::managed_fields::record_update(
        old,
        new,
        &keelson_api::managed_fields::Update {
            manager: &options.field_manager,
            api_version: &api_version,
            time: &time,
            subresource,
            has_status: resource.status,
            schema: field_schema(target),
        },
    );
}

async fn check_namespace(store: &dyn Store, namespace: &str) -> Result<(), ApiError> {
    let ns = registry::find("", "v1", "namespaces").ok_or_else(ApiError::no_route)?;
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

/// `POST` of a collection.
pub(crate) async fn create(
    store: &dyn Store,
    services: &ServiceNetwork,
    target: &Target,
    body: &Body,
    options: &WriteOptions,
    admit: &Admit<'_>,
) -> Result<Written, ApiError> {
    let resource = target.resource;
    let mut warnings = Vec::new();
    let object = parse_object(body, resource, options, &mut warnings)?;
    let object = resource.to_storage(object);
    let written = insert(store, services, target, object, options, true, admit).await?;
    warnings.extend(written.warnings);
    Ok(Written {
        warnings,
        ..written
    })
}

/// Creates `object` (in storage form): name, admission, defaults, validation, finalizers,
/// allocations. `record_update` records the create in `managedFields`; server-side apply has
/// done so.
pub(crate) async fn insert(
    store: &dyn Store,
    services: &ServiceNetwork,
    target: &Target,
    mut object: Value,
    options: &WriteOptions,
    record_update: bool,
    admit: &Admit<'_>,
) -> Result<Written, ApiError> {
    let resource = target.resource;
    let mut warnings = Vec::new();
    if let Some(custom) = &target.custom {
        if custom.terminating {
            let mut refused = ApiError::method_not_allowed("POST");
            refused.message =
                "create not allowed while custom resource definition is terminating".to_owned();
            return Err(refused);
        }
        crd::admit(custom, &mut object, options, &mut warnings)?;
    }
    let name = prepare_create_for_admission(&mut object, resource, target.namespace.as_deref())?;
    if csr::is_csr(target) {
        csr::prepare_for_create(&mut object, admit.user);
    }
    if job::is_job(target) {
        job::prepare_for_create(&mut object);
    }
    if target.custom.is_some()
        && resource.status
        && let Some(root) = object.as_object_mut()
    {
        // A client does not set the status of a custom resource with a status subresource.
        root.remove("status");
    }
    if let Some(ns) = target.namespace.as_deref() {
        check_namespace(store, ns).await?;
    }
    crate::admission::serviceaccount::admit(admit, target, &name, &mut object).await?;
    crate::admission::limits::admit(admit, target, &name, &mut object).await?;
    crate::admission::storageclass::admit(admit, target, &mut object).await?;
    crate::admission::storageprotection::admit(target, &mut object);
    crate::admission::priority::admit(admit, target, &name, &mut object).await?;
    let attempt = Attempt {
        target,
        name: &name,
        operation: Operation::Create,
        dry_run: options.dry_run,
    };
    admit
        .mutate(&attempt, Some(&mut object), None, &mut warnings)
        .await?;
    default_and_validate(&mut object, resource, &name, None)?;
    if let Some(custom) = &target.custom {
        crd::validate(custom, &object, None, &name)?;
    }
    finalizers::on_create(resource, &mut object);
    if record_update {
        record_managed_fields(target, None, &mut object, options, None);
    }
    admit
        .validate(&attempt, Some(&object), None, &mut warnings)
        .await?;
    crate::admission::quota::admit(admit, target, &name, &object, options.dry_run).await?;
    let key = target.key(&name);
    if options.dry_run {
        let exists = store
            .get(&key, None)
            .await
            .map_err(|e| ApiError::from_store(e, resource, &name))?;
        if exists.is_some() {
            return Err(ApiError::already_exists(resource, &name));
        }
    } else {
        let claims =
            allocator::claim_for_create(store, services, resource, &name, &mut object).await?;
        let encoded = match crd::convert::encode_for_storage(store, target, &object).await {
            Ok(encoded) => encoded,
            Err(e) => {
                claims.undo(store).await;
                return Err(e);
            }
        };
        let revision = match store.create(&key, encoded).await {
            Ok(revision) => revision,
            Err(e) => {
                claims.undo(store).await;
                return Err(ApiError::from_store(e, resource, &name));
            }
        };
        set_resource_version(&mut object, revision);
        tracing::debug!(name, revision, "created");
    }
    Ok(Written {
        code: StatusCode::CREATED,
        body: resource.present(object),
        warnings,
    })
}

/// Writes `new` over the key whose current mod revision is `expected`.
async fn write(
    store: &dyn Store,
    target: &Target,
    name: &str,
    new: Value,
    expected: Revision,
) -> Result<Value, ApiError> {
    let encoded = encode(&new);
    write_encoded(store, target, name, new, encoded, expected).await
}

/// Writes `encoded` (`new` as stored) over the key whose current mod revision is `expected`;
/// returns `new` with the written resourceVersion.
async fn write_encoded(
    store: &dyn Store,
    target: &Target,
    name: &str,
    mut new: Value,
    encoded: bytes::Bytes,
    expected: Revision,
) -> Result<Value, ApiError> {
    let revision = store
        .update(&target.key(name), encoded, expected)
        .await
        .map_err(|e| ApiError::from_store(e, target.resource, name))?;
    set_resource_version(&mut new, revision);
    Ok(new)
}

/// `PUT` of an object (or its status or scale).
#[expect(
    clippy::too_many_arguments,
    reason = "the request's parts and its admission, passed through once"
)]
pub(crate) async fn update(
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
    let mut warnings = Vec::new();
    let kv = get_kv(store, target, name).await?;
    let current = crd::convert::load(store, target, decode_kv(&kv)?).await?;
    let mut new = if part == UpdatePart::Scale {
        body.value(options.field_validation)?.0
    } else {
        let mut object = parse_object(body, resource, options, &mut warnings)?;
        if let Some(custom) = &target.custom {
            crd::admit(custom, &mut object, options, &mut warnings)?;
        }
        resource.to_storage(object)
    };
    if csr::is_csr(target) && target.subresource.as_deref() == Some("approval") {
        csr::keep_certificate(&mut new, &current);
    }
    if csr::is_csr(target) && target.subresource.is_some() {
        let errors = csr::status_update_errors(&current, &new);
        if !errors.is_empty() {
            return Err(ApiError::invalid_lines(
                &resource.qualified_kind(),
                resource.group,
                resource.kind,
                name,
                &errors,
            ));
        }
    }
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
        set_namespace(&mut new, resource, target.namespace.as_deref())?;
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
        options,
        true,
        admit,
        &mut warnings,
    )
    .await?;
    Ok(Written {
        warnings,
        ..Written::ok(present_part(resource, part, stored))
    })
}

fn present_part(resource: &Resource, part: UpdatePart, stored: Value) -> Value {
    match part {
        UpdatePart::Scale => stored,
        UpdatePart::Object(_) => resource.present(stored),
    }
}

/// Applies an update of `part` to `current` (mod revision `expected`) and writes it; returns
/// what the endpoint answers (the object, or its Scale). `record_update` records the write in
/// `managedFields`; server-side apply has done so.
#[expect(
    clippy::too_many_arguments,
    reason = "the pieces of one update, passed through once"
)]
pub(crate) async fn apply_update(
    store: &dyn Store,
    services: &ServiceNetwork,
    target: &Target,
    name: &str,
    current: &Value,
    new: Value,
    part: UpdatePart,
    expected: Revision,
    options: &WriteOptions,
    record_update: bool,
    admit: &Admit<'_>,
    warnings: &mut Vec<String>,
) -> Result<Value, ApiError> {
    let resource = target.resource;
    let attempt = Attempt {
        target,
        name,
        operation: Operation::Update,
        dry_run: options.dry_run,
    };
    let (new, part_of_object) =
        match part {
            UpdatePart::Object(p) => (new, p),
            UpdatePart::Scale => {
                // Webhooks see the Scale itself, as kube-apiserver's scale storage admits it.
                let mut new = new;
                let old_scale = scale_of(resource, current).map_err(ApiError::bad_request)?;
                admit
                    .mutate(&attempt, Some(&mut new), Some(&old_scale), warnings)
                    .await?;
                admit
                    .validate(&attempt, Some(&new), Some(&old_scale), warnings)
                    .await?;
                let replicas =
                    new.pointer("/spec/replicas")
                        .and_then(Value::as_i64)
                        .filter(|r| *r >= 0)
                        .ok_or_else(|| {
                            ApiError::invalid_lines(
                        "Scale.autoscaling",
                        "autoscaling",
                        "Scale",
                        name,
                        &["spec.replicas: Invalid value: must be greater than or equal to 0"
                            .to_owned()],
                    )
                        })?;
                let mut object = current.clone();
                if let Some(custom) = &target.custom {
                    crd::set_replicas(custom, &mut object, replicas);
                } else if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
                    spec.insert("replicas".into(), json!(replicas));
                }
                (object, Part::Main)
            }
        };
    let mut new = merge_update(current, new, resource, name, part_of_object)?;
    let admitted = part != UpdatePart::Scale;
    if admitted
        && admit
            .mutate(&attempt, Some(&mut new), Some(current), warnings)
            .await?
    {
        // What the endpoint may not change stays unchanged, whatever a webhook did.
        new = merge_update(current, new, resource, name, part_of_object)?;
    }
    let stored = match finish_update(current, new, resource, name, part_of_object)? {
        Some(mut next) => {
            if let Some(custom) = &target.custom {
                crd::validate(custom, &next, Some(current), name)?;
                crd::bump_generation(custom, current, &mut next);
            }
            if record_update {
                record_managed_fields(
                    target,
                    Some(current),
                    &mut next,
                    options,
                    part.subresource(),
                );
            }
            if admitted {
                admit
                    .validate(&attempt, Some(&next), Some(current), warnings)
                    .await?;
                crate::admission::quota::admit_update(
                    admit,
                    target,
                    name,
                    current,
                    &next,
                    options.dry_run,
                )
                .await?;
            }
            if options.dry_run {
                next
            } else {
                let claims = allocator::claim_for_update(
                    store, services, resource, name, current, &mut next,
                )
                .await?;
                // A custom resource converted by a webhook is stored in its storage
                // version; the write path goes on with the version it worked on.
                let written = match crd::convert::encode_for_storage(store, target, &next).await {
                    Ok(encoded) => {
                        write_encoded(store, target, name, next, encoded, expected).await
                    }
                    Err(e) => Err(e),
                };
                match written {
                    Ok(stored) => {
                        allocator::release(store, resource, current, Some(&stored)).await;
                        finalizers::finish(store, resource, &target.key(name), &stored).await?;
                        stored
                    }
                    Err(e) => {
                        claims.undo(store).await;
                        return Err(e);
                    }
                }
            }
        }
        None => {
            if admitted {
                admit
                    .validate(&attempt, Some(current), Some(current), warnings)
                    .await?;
            }
            current.clone()
        }
    };
    if part == UpdatePart::Scale {
        crd::scale_view(target, &stored)
    } else {
        Ok(stored)
    }
}

/// Kubernetes retries a patch this many times when the object changes underneath it.
pub(crate) const PATCH_ATTEMPTS: usize = 5;

/// `PATCH` of an object (or its status or scale).
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
    if body.content_type == APPLY_PATCH {
        return crate::apply::patch(store, services, target, name, body, part, options, admit)
            .await;
    }
    if options.force.is_some() {
        return Err(ApiError::invalid_options(
            "PatchOptions",
            "force: Forbidden: may not be specified for non-apply patch",
        ));
    }
    if target.custom.is_some() {
        crd::refuse_strategic_merge(&body.content_type)?;
    }
    let (patch, duplicates) = parse_json(&body.bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "error decoding patch: {}",
            e.message
                .trim_start_matches("couldn't get version/kind; json parse error: ")
        ))
    })?;
    // Key order in a JSON patch is the patch's own business.
    let duplicates = if body.content_type == "application/json-patch+json" {
        Vec::new()
    } else {
        duplicates
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut warnings = Vec::new();
        let kv = get_kv(store, target, name).await?;
        let current = crd::convert::load(store, target, decode_kv(&kv)?).await?;
        let mut doc = if part == UpdatePart::Scale {
            crd::scale_view(target, &current)?
        } else {
            resource.present(current.clone())
        };
        let definition = if part == UpdatePart::Scale {
            kind_definition("autoscaling", "v1", "Scale")
        } else {
            kind_definition(resource.group, resource.version, resource.kind)
        };
        patch_document(&body.content_type, &mut doc, &patch, definition)
            .map_err(|e| e.into_api_error(resource, name))?;
        if requested_revision(&doc, resource, name)?.is_some_and(|rv| rv != kv.mod_revision) {
            return Err(ApiError::conflict(resource, name));
        }
        if part != UpdatePart::Scale {
            if let Some(meta) = metadata_mut(&mut doc) {
                meta.insert("name".into(), json!(name));
            }
            set_namespace(&mut doc, resource, target.namespace.as_deref())?;
            // apiVersion/kind must survive the patch.
            if let Some(root) = doc.as_object_mut() {
                root.insert("apiVersion".into(), json!(resource.api_version()));
                root.insert("kind".into(), json!(resource.kind));
            }
            check_kind(&mut doc, resource)?;
            decode_strictly(
                &mut doc,
                resource,
                &duplicates,
                options.field_validation,
                &mut warnings,
            )?;
            if let Some(custom) = &target.custom {
                crd::admit(custom, &mut doc, options, &mut warnings)?;
            }
            doc = resource.to_storage(doc);
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
            options,
            true,
            admit,
            &mut warnings,
        )
        .await
        {
            Err(e) if e.reason == "Conflict" && attempt < PATCH_ATTEMPTS => continue,
            result => {
                return result.map(|stored| Written {
                    warnings,
                    ..Written::ok(present_part(resource, part, stored))
                });
            }
        }
    }
}

/// Why a (non-apply) patch could not be applied to the object.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PatchFailure {
    /// The body is not a JSON patch (a list of operations).
    #[error("invalid JSON patch: {0}")]
    NotAJsonPatch(#[source] serde_json::Error),
    /// The patch does not apply to this object (a failed `test`, a missing path, ...).
    #[error("{0}")]
    DoesNotApply(String),
    /// The content type is no patch type kube knows.
    #[error("unsupported media type {0}")]
    UnsupportedMediaType(String),
}

impl PatchFailure {
    fn into_api_error(self, resource: &Resource, name: &str) -> ApiError {
        match self {
            PatchFailure::NotAJsonPatch(_) => ApiError::bad_request(self.to_string()),
            PatchFailure::DoesNotApply(cause) => ApiError::invalid(resource, name, cause),
            PatchFailure::UnsupportedMediaType(other) => ApiError::unsupported_media_type(&other),
        }
    }
}

/// Applies a decoded merge, strategic merge or JSON patch (by `content_type`) to `doc`, the
/// object as the client sees it; `definition` is the kind's OpenAPI definition for strategic
/// merges ([`kind_definition`]). Pure: the handler and the fuzz targets share it.
pub(crate) fn patch_document(
    content_type: &str,
    doc: &mut Value,
    patch: &Value,
    definition: Option<&str>,
) -> Result<(), PatchFailure> {
    match content_type {
        "application/merge-patch+json" => merge_patch(doc, patch),
        "application/strategic-merge-patch+json" => {
            strategic_merge_patch(doc, patch, definition)
                .map_err(|e| PatchFailure::DoesNotApply(e.to_string()))?;
        }
        "application/json-patch+json" => {
            let operations: json_patch::Patch =
                serde_json::from_value(patch.clone()).map_err(PatchFailure::NotAJsonPatch)?;
            json_patch::patch(doc, &operations)
                .map_err(|e| PatchFailure::DoesNotApply(e.to_string()))?;
        }
        other => return Err(PatchFailure::UnsupportedMediaType(other.to_owned())),
    }
    Ok(())
}

/// `POST pods/<name>/binding`: sets `spec.nodeName` once.
pub(crate) async fn bind(
    store: &dyn Store,
    target: &Target,
    name: &str,
    body: &[u8],
) -> Result<Written, ApiError> {
    let resource = target.resource;
    let binding: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid_lines(
                "Binding",
                "",
                "Binding",
                name,
                &["target.name: Required value".to_owned()],
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
    Ok(Written {
        code: StatusCode::CREATED,
        body: json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        warnings: Vec::new(),
    })
}

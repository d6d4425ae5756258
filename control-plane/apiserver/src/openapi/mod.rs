//! `/openapi/v2` and `/openapi/v3`: the OpenAPI documents of every served kind, built from the
//! registry and `keelson_api::schema` (schemas, list/map types, patch strategies and merge
//! keys, GVKs), as kube-apiserver serves them for `kubectl explain`, client-side validation,
//! `kubectl apply`'s patch computation and `kubectl diff`.
//!
//! - `/openapi/v3` is the index: every group version with its `serverRelativeURL`, which names
//!   the document's hash (`/openapi/v3/apis/apps/v1?hash=<SHA-512>`); a document fetched with
//!   its current hash is `Cache-Control: public, immutable`, one fetched with an old hash is a
//!   301 to the current one (kube-openapi `handler3`).
//! - `/openapi/v3/<api/v1|apis/<group>/<version>>` is one group version: `components.schemas`
//!   (the definitions its kinds reach) and `paths` with their operations and parameters.
//! - `/openapi/v2` is everything in one swagger document, as JSON or as the gnostic
//!   `openapi.v2.Document` protobuf kubectl asks for ([`v2proto`]).
//!
//! Every answer carries the quoted SHA-512 of its bytes as `ETag` and answers
//! `If-None-Match` with 304. The documents are built once, on first use, and again when
//! [`OpenApi::set_custom`] changes the custom kinds (CRDs).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, RwLock},
};

use bytes::Bytes;
use keelson_api::schema::{self, V2_REF_PREFIX, V3_REF_PREFIX, reference, to_v2};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha512};

use crate::{
    KUBERNETES_VERSION,
    registry::{self, SUBRESOURCE_VERBS},
};

mod paths;
mod serve;
#[cfg(test)]
mod tests;
pub mod v2proto;

pub(crate) use serve::{v2, v3_group_version, v3_index};

use paths::{In, Operation, PATCH_DEFINITION, PRODUCES, Param, PathItem};

/// A kind the documents describe: where it is served and which definition is its schema.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedKind {
    /// API group, "" for the core group.
    pub group: String,
    /// API version.
    pub version: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Resource (plural) name, e.g. `deployments`.
    pub plural: String,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Its definition name, e.g. `io.k8s.api.apps.v1.Deployment`.
    pub definition: String,
    /// Its list's definition name.
    pub list_definition: String,
    /// Subresources whose body is an object (`status`, `scale`, `binding`, `finalize`).
    pub subresources: Vec<ServedSubresource>,
}

/// A subresource whose requests and answers are one kind of object.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedSubresource {
    /// The path segment, e.g. `status`.
    pub name: String,
    /// The definition of its object (`io.k8s.api.autoscaling.v1.Scale` for `scale`).
    pub definition: String,
    /// That object's group, version and kind (`x-kubernetes-group-version-kind` of its
    /// operations).
    pub gvk: Value,
    /// Its verbs among `get`, `update`, `patch` and `create`.
    pub verbs: Vec<&'static str>,
}

impl ServedSubresource {
    /// `status`: get, update and patch on the kind itself.
    pub fn status(definition: &str, gvk: Value) -> Self {
        Self {
            name: "status".to_owned(),
            definition: definition.to_owned(),
            gvk,
            verbs: SUBRESOURCE_VERBS.to_vec(),
        }
    }

    /// `scale`: get, update and patch on an autoscaling/v1 Scale.
    pub fn scale() -> Self {
        Self {
            name: "scale".to_owned(),
            definition: "io.k8s.api.autoscaling.v1.Scale".to_owned(),
            gvk: json!({ "group": "autoscaling", "version": "v1", "kind": "Scale" }),
            verbs: SUBRESOURCE_VERBS.to_vec(),
        }
    }
}

impl ServedKind {
    /// A custom resource's kind: its definition is named as kube-apiserver names CRD schemas,
    /// the group reversed (`stable.example.com`, `v1`, `CronTab` ->
    /// `com.example.stable.v1.CronTab`).
    pub fn custom(
        group: &str,
        version: &str,
        kind: &str,
        plural: &str,
        namespaced: bool,
        status: bool,
        scale: bool,
    ) -> Self {
        let reversed: Vec<&str> = group.split('.').rev().collect();
        let definition = format!("{}.{version}.{kind}", reversed.join("."));
        let gvk = json!({ "group": group, "version": version, "kind": kind });
        let mut subresources = Vec::new();
        if status {
            subresources.push(ServedSubresource::status(&definition, gvk));
        }
        if scale {
            subresources.push(ServedSubresource::scale());
        }
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            namespaced,
            list_definition: schema::list_definition(&definition),
            definition,
            subresources,
        }
    }

    /// `api/v1` or `apis/<group>/<version>`: the document's path under `/openapi/v3/`.
    fn group_version_path(&self) -> String {
        if self.group.is_empty() {
            format!("api/{}", self.version)
        } else {
            format!("apis/{}/{}", self.group, self.version)
        }
    }
}

/// A custom resource's kind with its OpenAPI v3 schema (a CRD version's `openAPIV3Schema`).
#[derive(Debug, Clone, PartialEq)]
pub struct CustomKind {
    /// Where it is served.
    pub served: ServedKind,
    /// Its object's schema; `apiVersion`, `kind` and `metadata` are added when absent.
    pub schema: Value,
}

/// The served kinds of the registry, with their built-in definitions.
pub fn builtin_served_kinds() -> Vec<ServedKind> {
    registry::RESOURCES
        .iter()
        .filter_map(|resource| {
            let builtin = schema::builtin_kinds().iter().find(|k| {
                k.group == resource.group
                    && k.version == resource.version
                    && k.kind == resource.kind
            })?;
            let gvk = json!({
                "group": resource.group,
                "version": resource.version,
                "kind": resource.kind,
            });
            let mut subresources = Vec::new();
            if resource.status {
                subresources.push(ServedSubresource::status(&builtin.definition, gvk));
            }
            if resource.scale {
                subresources.push(ServedSubresource::scale());
            }
            // `pods/binding` (a Binding), `namespaces/finalize` (the Namespace); not
            // `pods/log`, whose answer is text.
            for extra in resource.extra_subresources {
                let Some(object) = schema::builtin_kinds().iter().find(|k| {
                    k.group == resource.group
                        && k.version == resource.version
                        && k.kind == extra.kind
                }) else {
                    continue;
                };
                let verbs: Vec<&'static str> = extra
                    .verbs
                    .iter()
                    .copied()
                    .filter(|v| matches!(*v, "create" | "update" | "patch"))
                    .collect();
                if verbs.is_empty() {
                    continue;
                }
                subresources.push(ServedSubresource {
                    name: extra.name.to_owned(),
                    definition: object.definition.clone(),
                    gvk: json!({
                        "group": resource.group,
                        "version": resource.version,
                        "kind": extra.kind,
                    }),
                    verbs,
                });
            }
            Some(ServedKind {
                group: resource.group.to_owned(),
                version: resource.version.to_owned(),
                kind: resource.kind.to_owned(),
                plural: resource.plural.to_owned(),
                namespaced: resource.namespaced,
                definition: builtin.definition.clone(),
                list_definition: builtin
                    .list_definition
                    .clone()
                    .unwrap_or_else(|| schema::list_definition(&builtin.definition)),
                subresources,
            })
        })
        .collect()
}

/// One rendered document and its hash.
#[derive(Debug, Clone)]
struct Rendered {
    bytes: Bytes,
    /// Upper-case hex SHA-512 of `bytes` (kube-openapi's `computeETag`).
    hash: String,
}

impl Rendered {
    fn new(bytes: Vec<u8>) -> Self {
        let hash = Sha512::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        Self {
            bytes: Bytes::from(bytes),
            hash,
        }
    }
}

/// Every document, rendered.
#[derive(Debug)]
struct Documents {
    /// `api/v1` -> its v3 document.
    v3: BTreeMap<String, Rendered>,
    index: Rendered,
    v2_json: Rendered,
    v2_proto: Rendered,
}

/// The custom kinds and the documents built from them.
#[derive(Debug, Default)]
struct Inner {
    /// Bumped by every [`OpenApi::set_custom`], so a build that raced with a change is not
    /// kept.
    generation: u64,
    /// The source generation [`OpenApi::follow`] last took the custom kinds from.
    source: u64,
    custom: Vec<CustomKind>,
    documents: Option<Arc<Documents>>,
}

/// The OpenAPI documents the server answers, rebuilt when the custom kinds change.
#[derive(Debug, Default)]
pub struct OpenApi {
    inner: RwLock<Inner>,
}

impl OpenApi {
    /// Replaces the custom kinds (every served CRD version) and rebuilds the documents on
    /// their next use. The CRD code calls this whenever a CRD is established, changed or
    /// deleted.
    pub fn set_custom(&self, kinds: Vec<CustomKind>) {
        let mut inner = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.generation += 1;
        inner.custom = kinds;
        inner.documents = None;
    }

    /// [`OpenApi::set_custom`] with `kinds()` unless the custom kinds already come from
    /// source generation `source` (the CRD registry's snapshot).
    pub fn follow(&self, source: u64, kinds: impl FnOnce() -> Vec<CustomKind>) {
        let current = self
            .inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .source;
        if current == source {
            return;
        }
        let kinds = kinds();
        let mut inner = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if inner.source != source {
            inner.source = source;
            inner.generation += 1;
            inner.custom = kinds;
            inner.documents = None;
        }
    }

    /// The current documents, built (outside the lock) when missing.
    fn documents(&self) -> Arc<Documents> {
        let (generation, custom) = {
            let inner = self
                .inner
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(documents) = &inner.documents {
                return Arc::clone(documents);
            }
            (inner.generation, inner.custom.clone())
        };
        let built = Arc::new(build(&custom));
        let mut inner = self
            .inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if inner.generation == generation {
            inner.documents = Some(Arc::clone(&built));
        }
        built
    }

    /// The v3 document of `api/v1` or `apis/<group>/<version>`, as JSON.
    pub fn v3_document(&self, group_version: &str) -> Option<Value> {
        let documents = self.documents();
        let rendered = documents.v3.get(group_version)?;
        serde_json::from_slice(&rendered.bytes).ok()
    }

    /// The v2 document, as JSON.
    pub fn v2_document(&self) -> Value {
        serde_json::from_slice(&self.documents().v2_json.bytes).unwrap_or_default()
    }
}

/// Builds every document from the built-in kinds and `custom`.
fn build(custom: &[CustomKind]) -> Documents {
    let mut definitions = schema::builtin_definitions().clone();
    definitions.insert(
        PATCH_DEFINITION.to_owned(),
        json!({
            "description": "The body of a PATCH request, in the format its Content-Type names.",
            "type": "object",
        }),
    );
    let mut kinds = builtin_served_kinds();
    for kind in custom {
        definitions.insert(
            kind.served.definition.clone(),
            custom_schema(&kind.served, &kind.schema),
        );
        definitions.insert(
            kind.served.list_definition.clone(),
            custom_list_schema(&kind.served),
        );
        kinds.push(kind.served.clone());
    }

    let mut by_group_version: BTreeMap<String, Vec<&ServedKind>> = BTreeMap::new();
    for kind in &kinds {
        by_group_version
            .entry(kind.group_version_path())
            .or_default()
            .push(kind);
    }
    let mut v3 = BTreeMap::new();
    let mut v2_paths = Map::new();
    for (group_version, kinds) in &by_group_version {
        let items: Vec<PathItem> = kinds.iter().flat_map(|k| paths::paths_of(k)).collect();
        let mut roots: Vec<String> = vec![
            paths::STATUS.to_owned(),
            paths::DELETE_OPTIONS.to_owned(),
            PATCH_DEFINITION.to_owned(),
        ];
        for kind in kinds {
            roots.push(kind.definition.clone());
            roots.push(kind.list_definition.clone());
            roots.extend(kind.subresources.iter().map(|s| s.definition.clone()));
        }
        let schemas: Map<String, Value> = closure(&definitions, &roots)
            .into_iter()
            .filter_map(|name| definitions.get(&name).map(|d| (name, d.clone())))
            .collect();
        let mut v3_paths = Map::new();
        for item in &items {
            v3_paths.insert(item.path.clone(), v3_path_item(item));
            v2_paths.insert(item.path.clone(), v2_path_item(item));
        }
        let document = json!({
            "openapi": "3.0.0",
            "info": { "title": "Kubernetes", "version": KUBERNETES_VERSION },
            "paths": v3_paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {
                    "BearerToken": {
                        "type": "apiKey",
                        "description": "Bearer Token authentication",
                        "name": "authorization",
                        "in": "header",
                    },
                },
            },
        });
        v3.insert(
            group_version.clone(),
            Rendered::new(document.to_string().into_bytes()),
        );
    }
    let index_paths: Map<String, Value> = v3
        .iter()
        .map(|(group_version, rendered)| {
            (
                group_version.clone(),
                json!({
                    "serverRelativeURL":
                        format!("/openapi/v3/{group_version}?hash={}", rendered.hash),
                }),
            )
        })
        .collect();
    let index = Rendered::new(json!({ "paths": index_paths }).to_string().into_bytes());
    let v2_definitions: Map<String, Value> = definitions
        .iter()
        .map(|(name, schema)| (name.clone(), to_v2(schema)))
        .collect();
    let v2 = json!({
        "swagger": "2.0",
        "info": { "title": "Kubernetes", "version": KUBERNETES_VERSION },
        "paths": v2_paths,
        "definitions": v2_definitions,
        "securityDefinitions": {
            "BearerToken": {
                "type": "apiKey",
                "description": "Bearer Token authentication",
                "name": "authorization",
                "in": "header",
            },
        },
        "security": [{ "BearerToken": [] }],
    });
    let v2_proto = v2proto::encode(&v2);
    Documents {
        v3,
        index,
        v2_json: Rendered::new(v2.to_string().into_bytes()),
        v2_proto: Rendered::new(v2_proto),
    }
}

/// A CRD's schema as a definition: `apiVersion`, `kind` and `metadata` described as for every
/// kind, and its GVK.
fn custom_schema(kind: &ServedKind, schema: &Value) -> Value {
    let mut out = match schema {
        Value::Object(object) => object.clone(),
        _ => Map::new(),
    };
    out.entry("type").or_insert_with(|| json!("object"));
    let properties = out.entry("properties").or_insert_with(|| json!({}));
    if let Value::Object(properties) = properties {
        properties.entry("apiVersion").or_insert_with(|| {
            json!({
                "description": "APIVersion defines the versioned schema of this representation of an object.",
                "type": "string",
            })
        });
        properties.entry("kind").or_insert_with(|| {
            json!({
                "description": "Kind is a string value representing the REST resource this object represents.",
                "type": "string",
            })
        });
        properties.insert(
            "metadata".to_owned(),
            json!({
                "description": "Standard object's metadata.",
                "allOf": [reference(V3_REF_PREFIX, "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")],
            }),
        );
    }
    out.insert(
        "x-kubernetes-group-version-kind".to_owned(),
        json!([{ "group": kind.group, "version": kind.version, "kind": kind.kind }]),
    );
    Value::Object(out)
}

fn custom_list_schema(kind: &ServedKind) -> Value {
    json!({
        "description": format!("{}List is a list of {}", kind.kind, kind.kind),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": { "type": "string" },
            "items": {
                "description": format!("List of {}.", kind.plural),
                "type": "array",
                "items": reference(V3_REF_PREFIX, &kind.definition),
            },
            "kind": { "type": "string" },
            "metadata": {
                "allOf": [reference(V3_REF_PREFIX, "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta")],
            },
        },
        "x-kubernetes-group-version-kind": [{
            "group": kind.group,
            "version": kind.version,
            "kind": format!("{}List", kind.kind),
        }],
    })
}

/// The names of `roots` and every definition they reach through `$ref`s.
fn closure(definitions: &BTreeMap<String, Value>, roots: &[String]) -> BTreeSet<String> {
    fn refs(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(target) = map.get("$ref").and_then(Value::as_str)
                    && let Some(name) = target.strip_prefix(V3_REF_PREFIX)
                {
                    out.push(name.to_owned());
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut seen = BTreeSet::new();
    let mut queue: Vec<String> = roots.to_vec();
    while let Some(name) = queue.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        if let Some(definition) = definitions.get(&name) {
            refs(definition, &mut queue);
        }
    }
    seen
}

fn v3_param(param: &Param) -> Value {
    let mut out = json!({
        "name": param.name,
        "in": if param.place == In::Path { "path" } else { "query" },
        "description": param.description,
        "schema": { "type": param.kind, "uniqueItems": true },
    });
    if param.place == In::Path {
        out["required"] = json!(true);
    }
    out
}

fn v3_path_item(item: &PathItem) -> Value {
    let mut out = Map::new();
    out.insert(
        "parameters".to_owned(),
        item.params.iter().map(v3_param).collect(),
    );
    for operation in &item.operations {
        out.insert(
            operation.action.method().to_owned(),
            v3_operation(operation),
        );
    }
    Value::Object(out)
}

fn v3_operation(operation: &Operation) -> Value {
    let mut responses = Map::new();
    for (code, definition) in &operation.responses {
        let schema = reference(V3_REF_PREFIX, definition);
        let content: Map<String, Value> = PRODUCES
            .iter()
            .map(|media| ((*media).to_owned(), json!({ "schema": schema })))
            .collect();
        responses.insert(
            code.to_string(),
            json!({ "description": status_text(*code), "content": content }),
        );
    }
    responses.insert("401".to_owned(), json!({ "description": "Unauthorized" }));
    let mut out = json!({
        "tags": [operation.tag],
        "description": operation.description,
        "operationId": operation.id,
        "parameters": operation.params.iter().map(v3_param).collect::<Vec<_>>(),
        "responses": responses,
        "x-kubernetes-action": operation.action.name(),
        "x-kubernetes-group-version-kind": operation.gvk,
    });
    if let Some(body) = &operation.body {
        let schema = reference(V3_REF_PREFIX, body);
        let media: &[&str] = if operation.consumes.is_empty() {
            &["*/*"]
        } else {
            operation.consumes
        };
        let content: Map<String, Value> = media
            .iter()
            .map(|m| ((*m).to_owned(), json!({ "schema": schema })))
            .collect();
        out["requestBody"] = json!({ "content": content, "required": operation.body_required });
    }
    out
}

fn v2_param(param: &Param) -> Value {
    let mut out = json!({
        "uniqueItems": true,
        "type": param.kind,
        "description": param.description,
        "name": param.name,
        "in": if param.place == In::Path { "path" } else { "query" },
    });
    if param.place == In::Path {
        out["required"] = json!(true);
    }
    out
}

fn v2_path_item(item: &PathItem) -> Value {
    let mut out = Map::new();
    out.insert(
        "parameters".to_owned(),
        item.params.iter().map(v2_param).collect(),
    );
    for operation in &item.operations {
        out.insert(
            operation.action.method().to_owned(),
            v2_operation(operation),
        );
    }
    Value::Object(out)
}

fn v2_operation(operation: &Operation) -> Value {
    let mut responses = Map::new();
    for (code, definition) in &operation.responses {
        responses.insert(
            code.to_string(),
            json!({
                "description": status_text(*code),
                "schema": reference(V2_REF_PREFIX, definition),
            }),
        );
    }
    responses.insert("401".to_owned(), json!({ "description": "Unauthorized" }));
    let mut parameters: Vec<Value> = Vec::new();
    if let Some(body) = &operation.body {
        parameters.push(json!({
            "name": "body",
            "in": "body",
            "required": operation.body_required,
            "schema": reference(V2_REF_PREFIX, body),
        }));
    }
    parameters.extend(operation.params.iter().map(v2_param));
    let consumes: Vec<&str> = if operation.consumes.is_empty() {
        vec!["*/*"]
    } else {
        operation.consumes.to_vec()
    };
    json!({
        "description": operation.description,
        "consumes": consumes,
        "produces": PRODUCES,
        "schemes": ["https"],
        "tags": [operation.tag],
        "operationId": operation.id,
        "parameters": parameters,
        "responses": responses,
        "x-kubernetes-action": operation.action.name(),
        "x-kubernetes-group-version-kind": operation.gvk,
    })
}

fn status_text(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        _ => "",
    }
}

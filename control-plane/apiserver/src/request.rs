//! What a request on a resource is, once routed: its [`Target`], query [`Params`], label and
//! field [`Selectors`], the options of a write ([`WriteOptions`]: `dryRun`,
//! `fieldValidation`, `fieldManager`), and its body decoded into JSON ([`Body`]).

use std::collections::HashMap;

use axum::http::{HeaderMap, header};
use bytes::Bytes;
use keelson_api::selectors::{FieldRequirement, FieldSelector, LabelSelector};
use keelson_store::Revision;
use serde_json::Value;

use crate::{ApiError, MAX_BODY_BYTES, object::labels, registry::Resource};

mod strict;

pub(crate) use strict::parse_json;

/// Query parameters, as sent.
pub(crate) type Params = HashMap<String, String>;

/// One request on a resource, after routing.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) resource: &'static Resource,
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) subresource: Option<String>,
    /// The CRD version serving a custom resource (`None` for built-in kinds).
    pub(crate) custom: Option<std::sync::Arc<crate::crd::Served>>,
}

impl Target {
    /// The store key of the object `name`.
    pub(crate) fn key(&self, name: &str) -> String {
        self.resource.key(self.namespace.as_deref(), name)
    }

    /// The store key prefix of the collection.
    pub(crate) fn prefix(&self) -> String {
        self.resource.collection_prefix(self.namespace.as_deref())
    }
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
            fields.requirements.push(FieldRequirement {
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

/// One entry of an Accept header: whether its media type is JSON (or a wildcard), and its
/// `as`, `g` and `v` parameters (`application/json;as=Table;g=meta.k8s.io;v=v1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MediaRange<'a> {
    /// No media type at all (an empty entry).
    pub(crate) empty: bool,
    pub(crate) json: bool,
    pub(crate) as_kind: Option<&'a str>,
    pub(crate) group: Option<&'a str>,
    pub(crate) version: Option<&'a str>,
}

/// The entries of an Accept header in the client's order of preference (kube-apiserver takes
/// the first it can serve).
pub(crate) fn media_ranges(accept: &str) -> impl Iterator<Item = MediaRange<'_>> {
    accept.split(',').map(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let mut entry = MediaRange {
            empty: media.is_empty(),
            json: matches!(media.as_str(), "application/json" | "application/*" | "*/*"),
            as_kind: None,
            group: None,
            version: None,
        };
        for parameter in parts {
            if let Some((key, value)) = parameter.split_once('=') {
                let value = value.trim().trim_matches('"');
                match key.trim() {
                    "as" => entry.as_kind = Some(value),
                    "g" => entry.group = Some(value),
                    "v" => entry.version = Some(value),
                    _ => {}
                }
            }
        }
        entry
    })
}

/// Parses a revision parameter named `what`.
pub(crate) fn parse_revision(text: &str, what: &str) -> Result<Revision, ApiError> {
    text.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid {what}: {text:?}")))
}

/// `resourceVersion` as a revision.
pub(crate) fn revision_param(text: &str) -> Result<Revision, ApiError> {
    parse_revision(text, "resourceVersion")
}

/// `fieldValidation`: what the server does with fields the kind does not have and with
/// fields given twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and say so in `Warning:` headers (kube-apiserver's default).
    Warn,
    /// Refuse the request (400).
    Strict,
}

/// The options of a create, update, patch or delete.
#[derive(Debug, Clone)]
pub(crate) struct WriteOptions {
    /// `dryRun=All`: everything but the write.
    pub(crate) dry_run: bool,
    pub(crate) field_validation: FieldValidation,
    /// `fieldManager`, or the client's User-Agent product name.
    pub(crate) field_manager: String,
    /// Whether the request named its `fieldManager` (server-side apply requires it).
    pub(crate) field_manager_sent: bool,
    /// `force` of a patch: `None` when absent (only apply patches may carry it).
    pub(crate) force: Option<bool>,
}

use keelson_api::managed_fields::FIELD_MANAGER_MAX_LENGTH as MAX_FIELD_MANAGER;

impl WriteOptions {
    /// The options from the query (and the User-Agent for the default field manager);
    /// `options_kind` names the options in errors (`CreateOptions`, `PatchOptions`, ...).
    pub(crate) fn parse(
        params: &Params,
        headers: &HeaderMap,
        options_kind: &str,
    ) -> Result<Self, ApiError> {
        let invalid = |field: &str, message: String| {
            ApiError::invalid_options(options_kind, &format!("{field}: {message}"))
        };
        let dry_run = match params.get("dryRun").map(String::as_str) {
            None | Some("") => false,
            Some("All") => true,
            Some(other) => {
                return Err(invalid(
                    "dryRun",
                    format!(
                        "Unsupported value: []string{{\"{other}\"}}: supported values: \"All\""
                    ),
                ));
            }
        };
        let field_validation = match params.get("fieldValidation").map(String::as_str) {
            None | Some("") | Some("Warn") => FieldValidation::Warn,
            Some("Ignore") => FieldValidation::Ignore,
            Some("Strict") => FieldValidation::Strict,
            Some(other) => {
                return Err(invalid(
                    "fieldValidation",
                    format!(
                        "Unsupported value: \"{other}\": supported values: \"Ignore\", \
                         \"Strict\", \"Warn\""
                    ),
                ));
            }
        };
        let force = match params.get("force").map(String::as_str) {
            None | Some("") => None,
            Some(text) => Some(parse_go_bool(text).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "strconv.ParseBool: parsing \"{text}\": invalid syntax"
                ))
            })?),
        };
        let field_manager_sent = params.get("fieldManager").is_some_and(|m| !m.is_empty());
        let field_manager = match params.get("fieldManager").filter(|m| !m.is_empty()) {
            Some(manager) => {
                if manager.chars().count() > MAX_FIELD_MANAGER {
                    return Err(invalid(
                        "fieldManager",
                        format!("Too long: may not be more than {MAX_FIELD_MANAGER} bytes"),
                    ));
                }
                if manager.chars().any(|c| !(' '..='~').contains(&c)) {
                    return Err(invalid(
                        "fieldManager",
                        format!(
                            "Invalid value: \"{manager}\": must only contain printable characters"
                        ),
                    ));
                }
                manager.clone()
            }
            None => keelson_api::managed_fields::manager_from_user_agent(
                headers
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default(),
            ),
        };
        Ok(Self {
            dry_run,
            field_validation,
            field_manager,
            field_manager_sent,
            force,
        })
    }
}

/// Go's `strconv.ParseBool`, which decodes boolean query parameters.
fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A request body: its media type (parameters dropped, lower case) and bytes.
#[derive(Debug)]
pub(crate) struct Body {
    pub(crate) content_type: String,
    pub(crate) bytes: Bytes,
}

/// JSON and YAML object bodies; the patch types are JSON too.
const YAML: &str = "application/yaml";

/// Server-side apply's patch type: a YAML (or JSON) configuration.
pub(crate) const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// How much of a body over [`MAX_BODY_BYTES`] is read and dropped before the 413 goes out, and
/// for how long: a client still sending it then reads the answer, where closing the connection
/// on unread bytes would reset it and lose the answer (Go's server lingers for the same reason).
const DRAIN_BYTES: usize = 64 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// The whole body when it fits in [`MAX_BODY_BYTES`]; `413 RequestEntityTooLarge` otherwise,
/// once the rest was drained (see [`DRAIN_BYTES`]).
pub(crate) async fn read_limited(body: axum::body::Body) -> Result<bytes::Bytes, ApiError> {
    use futures_util::StreamExt as _;
    let mut stream = body.into_data_stream();
    let mut bytes = bytes::BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        if bytes.len() + chunk.len() > MAX_BODY_BYTES {
            let mut drained = 0usize;
            let _ = tokio::time::timeout(DRAIN_TIME, async {
                while drained < DRAIN_BYTES {
                    match stream.next().await {
                        Some(Ok(chunk)) => drained += chunk.len(),
                        _ => break,
                    }
                }
            })
            .await;
            return Err(ApiError::too_large(MAX_BODY_BYTES));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes.freeze())
}

impl Body {
    /// Reads a request body up to [`MAX_BODY_BYTES`]. Kubernetes protobuf is decoded into
    /// JSON here; JSON, YAML and the patch types are kept as sent.
    pub(crate) async fn read(
        headers: &HeaderMap,
        body: axum::body::Body,
        optional: bool,
    ) -> Result<Self, ApiError> {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_ascii_lowercase())
            .unwrap_or_else(|| "application/json".to_owned());
        let bytes = read_limited(body).await?;
        if bytes.is_empty() && optional {
            return Ok(Self {
                content_type,
                bytes,
            });
        }
        if content_type == crate::protobuf::CONTENT_TYPE {
            return crate::protobuf::to_json(&bytes).map(|json| Self {
                content_type: "application/json".to_owned(),
                bytes: json,
            });
        }
        if !(content_type.ends_with("json")
            || content_type == YAML
            || content_type.ends_with("+yaml"))
        {
            return Err(ApiError::unsupported_media_type(&content_type));
        }
        Ok(Self {
            content_type,
            bytes,
        })
    }

    /// The body as a JSON value, with the paths of keys given twice in one object (JSON) —
    /// for YAML bodies a key given twice is an error unless `fieldValidation` drops it.
    pub(crate) fn value(
        &self,
        validation: FieldValidation,
    ) -> Result<(Value, Vec<String>), ApiError> {
        if self.content_type == YAML || self.content_type == APPLY_PATCH {
            return strict::parse_yaml(&self.bytes, validation).map(|v| (v, Vec::new()));
        }
        parse_json(&self.bytes)
    }
}

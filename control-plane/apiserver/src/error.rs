//! The one error type of the API server: every failure a client sees is a Kubernetes `Status`.

use axum::{
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use keelson_store::StoreError;
use serde::Serialize;
use serde_json::Value;

use crate::registry::Resource;

/// A request failure, rendered as a `Status` object with the matching HTTP code. Internal
/// causes are logged where they happen; the client gets only the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason} ({code}): {message}")]
pub struct ApiError {
    /// The HTTP status.
    pub code: StatusCode,
    /// Kubernetes' `reason`, e.g. `NotFound`, `AlreadyExists`, `Conflict`.
    pub reason: &'static str,
    /// The human-readable message.
    pub message: String,
    /// `details`: the object's name, group and kind (plural resource name, as Kubernetes does).
    pub details: Option<Box<Details>>,
}

/// The `details` of a `Status`, in kube-apiserver's field order; empty fields are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Details {
    /// The object's name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The API group ("" for core).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The resource (Kubernetes puts the plural resource name in `kind`; the kind for
    /// `Invalid`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// One entry per invalid field.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<Cause>,
    /// `retryAfterSeconds`: when the client may try again (also sent as `Retry-After`, as
    /// kube-apiserver's error writer does); left out when 0.
    #[serde(rename = "retryAfterSeconds", skip_serializing_if = "is_zero")]
    pub retry_after_seconds: i32,
}

fn is_zero(value: &i32) -> bool {
    *value == 0
}

/// A `StatusCause`: why one field is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, ... (left out when empty, as kube does).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The field's error without the field: `Invalid value: "x": must be ...`.
    pub message: String,
    /// The field's path: `spec.template.spec.containers[0].name` (left out when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub field: String,
}

impl Cause {
    /// The cause of one `<field>: <message>` line as kube-apiserver words them; the reason
    /// comes from the message's opening words (`Required value`, `Invalid value`, ...).
    pub fn from_line(line: &str) -> Self {
        let (field, message) = line.split_once(": ").unwrap_or(("", line));
        let reason = [
            ("Required value", "FieldValueRequired"),
            ("Invalid value", "FieldValueInvalid"),
            ("Unsupported value", "FieldValueNotSupported"),
            ("Duplicate value", "FieldValueDuplicate"),
            ("Forbidden", "FieldValueForbidden"),
            ("Too long", "FieldValueTooLong"),
            ("Too many", "FieldValueTooMany"),
            ("Not found", "FieldValueNotFound"),
            ("Internal error", "InternalError"),
            ("Invalid type", "FieldValueTypeInvalid"),
        ]
        .iter()
        .find(|(prefix, _)| message.starts_with(prefix))
        .map_or("FieldValueInvalid", |(_, reason)| reason);
        Self {
            reason: reason.to_owned(),
            message: message.to_owned(),
            field: field.to_owned(),
        }
    }
}

/// A `Status` body, in kube-apiserver's field order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusBody<'a> {
    kind: &'static str,
    api_version: &'static str,
    metadata: Empty,
    status: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    details: &'a Details,
    code: u16,
}

#[derive(Serialize)]
struct Empty {}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    fn with_details(self, resource: &Resource, name: &str) -> Self {
        self.with_details_raw(name, resource.group, resource.plural)
    }

    /// 401 `Unauthorized`: no valid client certificate or bearer token.
    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized")
    }

    /// 503 `ServiceUnavailable`: a backend the request needs (a kubelet) cannot be reached.
    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            message,
        )
    }

    /// 400 `BadRequest`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 404 `NotFound` for an object.
    pub fn not_found(resource: &Resource, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} \"{name}\" not found", resource.qualified()),
        )
        .with_details(resource, name)
    }

    /// 404 `NotFound` for a path that names nothing served (kube-apiserver says no more).
    pub fn no_route() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    /// 404 for a namespaced create into a namespace that does not exist.
    pub fn namespace_not_found(namespace: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("namespaces \"{namespace}\" not found"),
        )
        .with_details_raw(namespace, "", "namespaces")
    }

    fn with_details_raw(mut self, name: &str, group: &str, kind: &str) -> Self {
        self.details = Some(Box::new(Details {
            name: name.to_owned(),
            group: group.to_owned(),
            kind: kind.to_owned(),
            ..Details::default()
        }));
        self
    }

    /// 409 `AlreadyExists`.
    pub fn already_exists(resource: &Resource, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", resource.qualified()),
        )
        .with_details(resource, name)
    }

    /// 409 `Conflict` for a write based on a stale `resourceVersion`.
    pub fn conflict(resource: &Resource, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                resource.qualified()
            ),
        )
        .with_details(resource, name)
    }

    /// 409 `Conflict` with a custom message.
    pub fn conflict_message(resource: &Resource, name: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", message).with_details(resource, name)
    }

    /// 403 `Forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }

    /// 422 `Invalid` with one cause, a `<field>: <message>` line as kube-apiserver words it.
    pub fn invalid(resource: &Resource, name: &str, cause: impl std::fmt::Display) -> Self {
        Self::invalid_lines(
            &resource.qualified_kind(),
            resource.group,
            resource.kind,
            name,
            &[cause.to_string()],
        )
    }

    /// 422 `Invalid` naming every invalid field (`lines`, each `<field>: <message>`), as
    /// kube-apiserver's `NewInvalid` does: one line is the message's tail, several are
    /// listed in brackets.
    pub fn invalid_lines(
        qualified_kind: &str,
        group: &str,
        kind: &str,
        name: &str,
        lines: &[String],
    ) -> Self {
        let list = match lines {
            [one] => one.clone(),
            many => format!("[{}]", many.join(", ")),
        };
        let mut error = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("{qualified_kind} \"{name}\" is invalid: {list}"),
        )
        .with_details_raw(name, group, kind);
        if let Some(details) = &mut error.details {
            details.causes = lines.iter().map(|l| Cause::from_line(l)).collect();
        }
        error
    }

    /// 422 `Invalid` with its message and causes made by the caller.
    pub fn invalid_with(
        message: String,
        group: &str,
        kind: &str,
        name: &str,
        causes: Vec<Cause>,
    ) -> Self {
        let mut error = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
            .with_details_raw(name, group, kind);
        if let Some(details) = &mut error.details {
            details.causes = causes;
        }
        error
    }

    /// 422 for request options (`dryRun`, `fieldValidation`, `fieldManager`) kube-apiserver
    /// refuses: `CreateOptions.meta.k8s.io "" is invalid: dryRun: ...`.
    pub fn invalid_options(options_kind: &str, line: &str) -> Self {
        Self::invalid_lines(
            &format!("{options_kind}.meta.k8s.io"),
            "meta.k8s.io",
            options_kind,
            "",
            &[line.to_owned()],
        )
    }

    /// 405 `MethodNotAllowed`.
    pub fn method_not_allowed(method: &str) -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )
    }

    /// 410 `Expired` for a watch or list from a compacted resourceVersion.
    pub fn expired(requested: i64, oldest: i64) -> Self {
        Self::new(
            StatusCode::GONE,
            "Expired",
            format!("too old resource version: {requested} ({oldest})"),
        )
    }

    /// 413 `RequestEntityTooLarge`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("Request entity too large: limit is {limit}"),
        )
    }

    /// 415 `UnsupportedMediaType` for a patch type the resource does not take (strategic merge
    /// patch on custom resources), naming the `accepted` ones.
    pub fn unsupported_patch(accepted: &[&str]) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types \
                 include: {}",
                accepted.join(", ")
            ),
        )
    }

    /// 415 `UnsupportedMediaType`.
    pub fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format: {content_type}"),
        )
    }

    /// 500 `InternalError` whose message the client sees (`Internal error occurred: ...`), for
    /// failures kube-apiserver reports this way (an allocation that cannot be made).
    pub fn internal_occurred(message: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("Internal error occurred: {message}"),
        )
    }

    /// 500 `InternalError`: the cause is logged here, the client sees a generic message.
    pub fn internal(context: &str, cause: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = cause, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("an internal error occurred: {context}"),
        )
    }

    /// Maps a store error on object `name` of `resource`.
    pub fn from_store(error: StoreError, resource: &Resource, name: &str) -> Self {
        match error {
            StoreError::AlreadyExists { .. } => Self::already_exists(resource, name),
            StoreError::Conflict { .. } => Self::conflict(resource, name),
            StoreError::NotFound { .. } => Self::not_found(resource, name),
            StoreError::Compacted {
                requested,
                compacted,
            } => Self::expired(requested, compacted),
            StoreError::FutureRevision { requested, current } => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "Timeout",
                format!("Too large resource version: {requested}, current: {current}"),
            ),
            error @ StoreError::Transform { .. } => Self::transform(&error),
            other => Self::internal("the store failed", &other),
        }
    }

    /// 500 `InternalError` for a stored value that cannot be decrypted (or encrypted), naming
    /// the store key and the cause (a missing encryption key, failed authentication) as
    /// kube-apiserver does: `Internal error occurred: unable to transform key "...": ...`.
    fn transform(error: &StoreError) -> Self {
        tracing::error!(
            error = error as &dyn std::error::Error,
            "encryption at rest failed"
        );
        let cause = std::error::Error::source(error)
            .map(|source| format!(": {source}"))
            .unwrap_or_default();
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            format!("Internal error occurred: {error}{cause}"),
        )
    }

    /// The `Status` body, its fields in kube-apiserver's order.
    pub fn body(&self) -> String {
        let empty = Details::default();
        let body = StatusBody {
            kind: "Status",
            api_version: "v1",
            metadata: Empty {},
            status: "Failure",
            message: &self.message,
            reason: self.reason,
            details: self.details.as_deref().unwrap_or(&empty),
            code: self.code.as_u16(),
        };
        serde_json::to_string(&body).unwrap_or_default()
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        serde_json::from_str(&self.body()).unwrap_or_default()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (
            self.code,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response();
        let retry = self.details.as_ref().map_or(0, |d| d.retry_after_seconds);
        if retry > 0 {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(retry));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undecryptable_value_is_a_500_naming_the_key() {
        let resource = crate::registry::find("", "v1", "secrets").expect("secrets");
        let error = StoreError::Transform {
            key: "/registry/secrets/default/db".into(),
            source: keelson_store::encryption::TransformError::UnknownKey {
                name: "key-1".into(),
            },
        };
        let error = ApiError::from_store(error, resource, "db");
        assert_eq!(
            (error.code, error.message.as_str()),
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal error occurred: unable to transform key \"/registry/secrets/default/db\": \
                 no aesgcm key named \"key-1\" in the encryption configuration"
            )
        );
    }

    #[test]
    fn status_bodies_list_fields_in_kube_apiservers_order() {
        assert_eq!(
            ApiError::no_route().body(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","details":{},"code":404}"#
        );
        let invalid = ApiError::invalid_lines(
            "Deployment.apps",
            "apps",
            "Deployment",
            "web",
            &["spec.replicas: Invalid value: -1: must be greater than or equal to 0".to_owned()],
        );
        assert_eq!(
            invalid.body(),
            r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Deployment.apps \"web\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0","reason":"Invalid","details":{"name":"web","group":"apps","kind":"Deployment","causes":[{"reason":"FieldValueInvalid","message":"Invalid value: -1: must be greater than or equal to 0","field":"spec.replicas"}]},"code":422}"#
        );
    }
}

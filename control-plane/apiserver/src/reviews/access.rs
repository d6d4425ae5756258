//! `authorization.k8s.io/v1`: the access reviews, answered by the authorizer chain
//! ([`crate::auth::authz::Authorizer`]) as kube-apiserver's `pkg/registry/authorization` does.
//! - SubjectAccessReview (cluster) and LocalSubjectAccessReview (namespaced): may user X do
//!   Y? Creating one needs `create` on the resource; the subject is exactly `spec.user`,
//!   `spec.groups`, `spec.uid`, `spec.extra` (no group is added).
//! - SelfSubjectAccessReview: may I do Y? (`kubectl auth can-i`).
//! - SelfSubjectRulesReview: what may I do in this namespace? (`kubectl auth can-i --list`).
//!
//! The answer is the request echoed with `status` (`allowed`; `denied` only when an authorizer
//! said no rather than having no opinion; `reason`; `evaluationError`), `201 Created`. Bodies
//! come as JSON, YAML or protobuf (kubectl's typed client).

use std::sync::Arc;

use axum::{
    body::Body,
    http::{HeaderMap, StatusCode},
    response::Response,
};
use k8s_openapi::{
    api::authorization::v1::{
        LocalSubjectAccessReview, NonResourceAttributes, SelfSubjectAccessReview,
        SelfSubjectRulesReview, SubjectAccessReview, SubjectAccessReviewStatus,
        SubjectRulesReviewStatus,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::AUTHORIZATION_GROUP;
use crate::{
    ApiError, AppState,
    auth::{
        UserInfo,
        authz::{Attributes, Decision, RequestKind, ResourceAttributes},
        request_info,
    },
    discovery::json_response,
    request::{Body as RequestBody, FieldValidation},
};

/// `POST /apis/authorization.k8s.io/v1/<rest>`.
pub(super) async fn serve(
    state: &AppState,
    user: &UserInfo,
    rest: &[&str],
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    match rest {
        ["subjectaccessreviews"] => {
            may_create(state, user, "subjectaccessreviews", "").await?;
            let review: SubjectAccessReview = decode(headers, body).await?;
            let mut lines = spec_errors(
                review.spec.resource_attributes.is_some(),
                review.spec.non_resource_attributes.as_ref(),
            );
            lines.extend(subject_errors(&review.spec.user, &review.spec.groups));
            lines.extend(metadata_errors(&review.metadata, false));
            invalid("SubjectAccessReview", &lines)?;
            let status = decide(state, subject(&review.spec), &review.spec).await;
            created(&SubjectAccessReview {
                status: Some(status),
                ..review
            })
        }
        ["namespaces", namespace, "localsubjectaccessreviews"] => {
            may_create(state, user, "localsubjectaccessreviews", namespace).await?;
            let mut review: LocalSubjectAccessReview = decode(headers, body).await?;
            // kube's create handler: an object without a namespace takes the URL's, another
            // one is refused before validation.
            match review.metadata.namespace.as_deref() {
                None | Some("") => review.metadata.namespace = Some((*namespace).to_owned()),
                Some(own) if own == *namespace => {}
                Some(_) => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent \
                         on the request",
                    ));
                }
            }
            let spec = &review.spec;
            let mut lines = spec_errors(
                spec.resource_attributes.is_some(),
                spec.non_resource_attributes.as_ref(),
            );
            lines.extend(subject_errors(&spec.user, &spec.groups));
            lines.extend(metadata_errors(&review.metadata, true));
            let own = review.metadata.namespace.as_deref().unwrap_or("");
            if let Some(attributes) = &spec.resource_attributes {
                let asked = attributes.namespace.as_deref().unwrap_or("");
                if asked != own {
                    lines.push(format!(
                        "spec.resourceAttributes.namespace: Invalid value: \"{asked}\": must match \
                         metadata.namespace"
                    ));
                }
            }
            if let Some(attributes) = &spec.non_resource_attributes {
                lines.push(format!(
                    "spec.nonResourceAttributes: Invalid value: {}: disallowed on this kind of \
                     request",
                    go_non_resource(attributes)
                ));
            }
            invalid("LocalSubjectAccessReview", &lines)?;
            let status = decide(state, subject(spec), spec).await;
            created(&LocalSubjectAccessReview {
                status: Some(status),
                ..review
            })
        }
        ["selfsubjectaccessreviews"] => {
            let review: SelfSubjectAccessReview = decode(headers, body).await?;
            let spec = &review.spec;
            let mut lines = spec_errors(
                spec.resource_attributes.is_some(),
                spec.non_resource_attributes.as_ref(),
            );
            lines.extend(metadata_errors(&review.metadata, false));
            invalid("SelfSubjectAccessReview", &lines)?;
            let request = request_kind(
                spec.resource_attributes.as_ref(),
                spec.non_resource_attributes.as_ref(),
            );
            let status = status(state, user.clone(), request).await;
            created(&SelfSubjectAccessReview {
                status: Some(status),
                ..review
            })
        }
        ["selfsubjectrulesreviews"] => {
            let review: SelfSubjectRulesReview = decode(headers, body).await?;
            let namespace = review.spec.namespace.unwrap_or_default();
            if namespace.is_empty() {
                return Err(ApiError::bad_request("no namespace on request"));
            }
            let rules = state.authorizer.rules_for(user, &namespace).await;
            created(&SelfSubjectRulesReview {
                metadata: ObjectMeta::default(),
                spec: Default::default(),
                status: Some(SubjectRulesReviewStatus {
                    resource_rules: rules.resource,
                    non_resource_rules: rules.non_resource,
                    incomplete: rules.incomplete,
                    evaluation_error: Some(rules.evaluation_error).filter(|e| !e.is_empty()),
                }),
            })
        }
        _ => Err(ApiError::no_route()),
    }
}

/// 403 unless `user` may create `resource` (in `namespace`) through the chain.
async fn may_create(
    state: &AppState,
    user: &UserInfo,
    resource: &str,
    namespace: &str,
) -> Result<(), ApiError> {
    let attributes = Attributes {
        user: Arc::new(user.clone()),
        verb: "create".to_owned(),
        request: RequestKind::Resource(ResourceAttributes {
            group: AUTHORIZATION_GROUP.to_owned(),
            version: "v1".to_owned(),
            resource: resource.to_owned(),
            namespace: namespace.to_owned(),
            ..ResourceAttributes::default()
        }),
    };
    match state.authorizer.authorize(&attributes).await {
        Decision::Allow(_) => Ok(()),
        Decision::Deny(reason) | Decision::NoOpinion(reason) => {
            Err(request_info::forbidden(&attributes, &reason))
        }
    }
}

/// The body (JSON, YAML or protobuf) as the review type; unknown fields are dropped.
async fn decode<T: DeserializeOwned>(headers: &HeaderMap, body: Body) -> Result<T, ApiError> {
    let body = RequestBody::read(headers, body, false).await?;
    let (value, _) = body.value(FieldValidation::Ignore)?;
    serde_json::from_value(value).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// kube's `ValidateSubjectAccessReviewSpec` / `ValidateSelfSubjectAccessReviewSpec`: exactly
/// one of resourceAttributes and nonResourceAttributes.
fn spec_errors(resource: bool, non_resource: Option<&NonResourceAttributes>) -> Vec<String> {
    match (resource, non_resource) {
        (true, Some(attributes)) => vec![format!(
            "spec.nonResourceAttributes: Invalid value: {}: cannot be specified in combination \
             with resourceAttributes",
            go_non_resource(attributes)
        )],
        (false, None) => vec![
            "spec.resourceAttributes: Invalid value: \"null\": exactly one of \
             nonResourceAttributes or resourceAttributes must be specified"
                .to_owned(),
        ],
        _ => Vec::new(),
    }
}

/// A SubjectAccessReview must name a user or a group.
fn subject_errors(user: &Option<String>, groups: &Option<Vec<String>>) -> Vec<String> {
    let user = user.as_deref().unwrap_or("");
    if user.is_empty() && groups.as_ref().is_none_or(Vec::is_empty) {
        vec![format!(
            "spec.user: Invalid value: \"{user}\": at least one of user or group must be \
             specified"
        )]
    } else {
        Vec::new()
    }
}

/// The metadata must be empty (a LocalSubjectAccessReview's may hold its namespace);
/// managedFields and a null creationTimestamp do not count.
fn metadata_errors(metadata: &ObjectMeta, local: bool) -> Vec<String> {
    let mut rest = metadata.clone();
    rest.managed_fields = None;
    if local {
        rest.namespace = None;
    }
    if rest == ObjectMeta::default() {
        return Vec::new();
    }
    let shown = serde_json::to_string(metadata).unwrap_or_default();
    let must = if local {
        "must be empty except for namespace"
    } else {
        "must be empty"
    };
    vec![format!("metadata: Invalid value: {shown}: {must}")]
}

/// Go's `%#v` of the NonResourceAttributes kube puts in the message.
fn go_non_resource(attributes: &NonResourceAttributes) -> String {
    format!(
        "authorization.NonResourceAttributes{{Path:{:?}, Verb:{:?}}}",
        attributes.path.as_deref().unwrap_or(""),
        attributes.verb.as_deref().unwrap_or("")
    )
}

/// 422 naming every line, as `NewInvalid(Kind(kind), "", errs)`.
fn invalid(kind: &str, lines: &[String]) -> Result<(), ApiError> {
    if lines.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid_lines(
        &format!("{kind}.{AUTHORIZATION_GROUP}"),
        AUTHORIZATION_GROUP,
        kind,
        "",
        lines,
    ))
}

/// The user a SubjectAccessReview asks about, exactly as given.
fn subject(spec: &k8s_openapi::api::authorization::v1::SubjectAccessReviewSpec) -> UserInfo {
    UserInfo {
        name: spec.user.clone().unwrap_or_default(),
        groups: spec.groups.clone().unwrap_or_default(),
        uid: spec.uid.clone().unwrap_or_default(),
        extra: spec.extra.clone().unwrap_or_default().into_iter().collect(),
    }
}

async fn decide(
    state: &AppState,
    user: UserInfo,
    spec: &k8s_openapi::api::authorization::v1::SubjectAccessReviewSpec,
) -> SubjectAccessReviewStatus {
    let request = request_kind(
        spec.resource_attributes.as_ref(),
        spec.non_resource_attributes.as_ref(),
    );
    status(state, user, request).await
}

/// kube's attributes of a review: an empty version matches every version (`*`).
fn request_kind(
    resource: Option<&k8s_openapi::api::authorization::v1::ResourceAttributes>,
    non_resource: Option<&NonResourceAttributes>,
) -> (String, RequestKind) {
    let text = |s: &Option<String>| s.clone().unwrap_or_default();
    match (resource, non_resource) {
        (Some(r), _) => (
            text(&r.verb),
            RequestKind::Resource(ResourceAttributes {
                group: text(&r.group),
                version: Some(text(&r.version))
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| "*".to_owned()),
                resource: text(&r.resource),
                subresource: text(&r.subresource),
                namespace: text(&r.namespace),
                name: text(&r.name),
            }),
        ),
        (None, Some(n)) => (
            text(&n.verb),
            RequestKind::NonResource {
                path: text(&n.path),
            },
        ),
        // Refused by validation before.
        (None, None) => (
            String::new(),
            RequestKind::NonResource {
                path: String::new(),
            },
        ),
    }
}

async fn status(
    state: &AppState,
    user: UserInfo,
    (verb, request): (String, RequestKind),
) -> SubjectAccessReviewStatus {
    let attributes = Attributes {
        user: Arc::new(user),
        verb,
        request,
    };
    let (allowed, denied, reason) = match state.authorizer.review(&attributes).await {
        Decision::Allow(reason) => (true, false, reason),
        Decision::Deny(reason) => (false, true, reason),
        Decision::NoOpinion(reason) => (false, false, reason),
    };
    SubjectAccessReviewStatus {
        allowed,
        denied: denied.then_some(true),
        reason: Some(reason).filter(|r| !r.is_empty()),
        evaluation_error: None,
    }
}

/// `201 Created` with the review; empty metadata renders as kube renders it
/// (`{"creationTimestamp": null}`).
fn created<T: Serialize>(review: &T) -> Result<Response, ApiError> {
    let mut value = serde_json::to_value(review)
        .map_err(|e| ApiError::internal("cannot render the review", &e))?;
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.entry("creationTimestamp").or_insert(Value::Null);
    }
    Ok(json_response(StatusCode::CREATED, &value))
}

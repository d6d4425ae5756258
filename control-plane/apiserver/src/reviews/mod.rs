//! The review APIs: create-only resources that answer a question and store nothing.
//! - `authentication.k8s.io/v1` SelfSubjectReview: who the server thinks the client is
//!   (`kubectl auth whoami`), and TokenReview: who a token authenticates as
//!   ([`crate::auth::serviceaccount::review`]);
//! - `authorization.k8s.io/v1` SubjectAccessReview, LocalSubjectAccessReview,
//!   SelfSubjectAccessReview and SelfSubjectRulesReview ([`access`]): what the authorizer
//!   chain says (`kubectl auth can-i [--list]`).

use axum::{
    body::Body,
    http::{HeaderMap, Method, StatusCode},
    response::Response,
};
use serde_json::json;

use crate::{ApiError, AppState, auth::UserInfo, crd, discovery::json_response};

mod access;

/// The group and version the SelfSubjectReview is served in.
pub(crate) const GROUP: &str = "authentication.k8s.io";
/// See [`GROUP`].
pub(crate) const VERSION: &str = "v1";
/// The group of the access reviews.
pub(crate) const AUTHORIZATION_GROUP: &str = "authorization.k8s.io";

/// One review resource as discovery lists it (verbs: `create` only).
#[derive(Debug)]
pub(crate) struct Review {
    pub(crate) group: &'static str,
    pub(crate) plural: &'static str,
    pub(crate) singular: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) namespaced: bool,
}

/// Every review resource served, all in version `v1`.
pub(crate) const REVIEWS: &[Review] = &[
    Review {
        group: GROUP,
        plural: "selfsubjectreviews",
        singular: "selfsubjectreview",
        kind: "SelfSubjectReview",
        namespaced: false,
    },
    Review {
        group: GROUP,
        plural: "tokenreviews",
        singular: "tokenreview",
        kind: "TokenReview",
        namespaced: false,
    },
    Review {
        group: AUTHORIZATION_GROUP,
        plural: "localsubjectaccessreviews",
        singular: "localsubjectaccessreview",
        kind: "LocalSubjectAccessReview",
        namespaced: true,
    },
    Review {
        group: AUTHORIZATION_GROUP,
        plural: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        kind: "SelfSubjectAccessReview",
        namespaced: false,
    },
    Review {
        group: AUTHORIZATION_GROUP,
        plural: "selfsubjectrulesreviews",
        singular: "selfsubjectrulesreview",
        kind: "SelfSubjectRulesReview",
        namespaced: false,
    },
    Review {
        group: AUTHORIZATION_GROUP,
        plural: "subjectaccessreviews",
        singular: "subjectaccessreview",
        kind: "SubjectAccessReview",
        namespaced: false,
    },
];

/// Whether `group`/`version` holds review resources only (served here, not from the store).
pub(crate) fn serves(group: &str, version: &str) -> bool {
    version == VERSION && REVIEWS.iter().any(|r| r.group == group)
}

/// `/apis/<group>/v1/...` of a group [`serves`] answers: its resource list, or a review.
pub(crate) async fn serve(
    state: &AppState,
    user: &UserInfo,
    group: &str,
    rest: &[&str],
    method: &Method,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    match (rest, method) {
        ([], &Method::GET) => Ok(crate::discovery::resource_list(
            group,
            VERSION,
            &crd::Snapshot::default(),
        )),
        (["selfsubjectreviews"], &Method::POST) if group == GROUP => Ok(self_subject_review(user)),
        (["tokenreviews"], &Method::POST) if group == GROUP => {
            let body = crate::request::Body::read(headers, body, false).await?;
            let written = crate::auth::serviceaccount::review::create(state, &body.bytes).await?;
            Ok(json_response(written.code, &written.body))
        }
        (_, &Method::POST) if group == AUTHORIZATION_GROUP => {
            access::serve(state, user, rest, headers, body).await
        }
        _ => Err(ApiError::no_route()),
    }
}

/// `POST .../selfsubjectreviews`: the request body carries nothing the answer depends on, so it
/// is not read (kubectl sends it as protobuf).
pub(crate) fn self_subject_review(user: &UserInfo) -> Response {
    let mut info = json!({"username": user.name, "groups": user.groups});
    if !user.uid.is_empty() {
        info["uid"] = json!(user.uid);
    }
    if !user.extra.is_empty() {
        info["extra"] = json!(user.extra);
    }
    json_response(
        StatusCode::CREATED,
        &json!({
            "kind": "SelfSubjectReview",
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "metadata": {"creationTimestamp": null},
            "status": {"userInfo": info},
        }),
    )
}

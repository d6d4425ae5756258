//! `authentication.k8s.io/v1` SelfSubjectReview: who the server thinks the client is
//! (`kubectl auth whoami`). Nothing is stored.

use axum::{http::StatusCode, response::Response};
use serde_json::json;

use crate::{auth::UserInfo, discovery::json_response};

/// The group and version the review is served in.
pub(crate) const GROUP: &str = "authentication.k8s.io";
/// See [`GROUP`].
pub(crate) const VERSION: &str = "v1";

/// `POST .../selfsubjectreviews`: the request body carries nothing the answer depends on, so it
/// is not read (kubectl sends it as protobuf).
pub(crate) fn self_subject_review(user: &UserInfo) -> Response {
    json_response(
        StatusCode::CREATED,
        &json!({
            "kind": "SelfSubjectReview",
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "metadata": {"creationTimestamp": null},
            "status": {"userInfo": {"username": user.name, "groups": user.groups}},
        }),
    )
}

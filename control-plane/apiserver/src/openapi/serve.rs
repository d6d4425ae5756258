//! Serving the documents over HTTP as kube-openapi's handlers do: media types, ETags, the
//! `hash` parameter with immutable caching, and redirects from an old hash.

use std::collections::BTreeMap;

use axum::{
    body::Body,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::Rendered;
use crate::AppState;

/// The protobuf media types of the v2 document (the `@` one is what client-go asks for).
const V2_PROTOBUF: &[&str] = &[
    "application/com.github.proto-openapi.spec.v2@v1.0+protobuf",
    V2_PROTOBUF_ANSWERED,
];

/// The protobuf Content-Type answered: `@` is not a token character, and Go's
/// `mime.ParseMediaType` (client-go reads every Content-Type with it) refuses it.
const V2_PROTOBUF_ANSWERED: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// Answers `rendered` with its ETag, or 304 when the client has it already.
fn answer(
    headers: &HeaderMap,
    rendered: &Rendered,
    content_type: &str,
    extra: &[(header::HeaderName, &str)],
) -> Response {
    let etag = format!("\"{}\"", rendered.hash);
    let mut response = if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, content_type.to_owned())],
            Body::from(rendered.bytes.clone()),
        )
            .into_response()
    };
    let out = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, value);
    }
    out.insert(header::VARY, HeaderValue::from_static("Accept"));
    for (name, value) in extra {
        if let Ok(value) = HeaderValue::from_str(value) {
            out.insert(name.clone(), value);
        }
    }
    response
}

/// The media types of an Accept header, lower case, without parameters.
fn accepted(headers: &HeaderMap) -> Vec<String> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|h| h.to_str().ok())
        .filter(|a| !a.trim().is_empty())
        .unwrap_or("*/*");
    accept
        .split(',')
        .filter_map(|range| range.split(';').next())
        .map(|media| media.trim().to_ascii_lowercase())
        .collect()
}

/// kube-openapi answers an unservable Accept header with a bare 406.
fn not_acceptable() -> Response {
    StatusCode::NOT_ACCEPTABLE.into_response()
}

/// `/openapi/v2`: JSON or the gnostic protobuf, whichever the Accept header names first.
pub(crate) async fn v2(State(state): State<AppState>, headers: HeaderMap) -> Response {
    state
        .crds
        .snapshot(&state.store)
        .await
        .publish(&state.openapi);
    let documents = state.openapi.documents();
    for media in accepted(&headers) {
        if V2_PROTOBUF.contains(&media.as_str()) {
            return answer(&headers, &documents.v2_proto, V2_PROTOBUF_ANSWERED, &[]);
        }
        if matches!(media.as_str(), "application/json" | "application/*" | "*/*") {
            return answer(&headers, &documents.v2_json, "application/json", &[]);
        }
    }
    not_acceptable()
}

/// `/openapi/v3`: the index of group-version documents.
pub(crate) async fn v3_index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    state
        .crds
        .snapshot(&state.store)
        .await
        .publish(&state.openapi);
    let documents = state.openapi.documents();
    answer(&headers, &documents.index, "application/json", &[])
}

/// `/openapi/v3/<group version>`, with the `hash` query parameter of the index.
pub(crate) async fn v3_group_version(
    State(state): State<AppState>,
    Path(group_version): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    state
        .crds
        .snapshot(&state.store)
        .await
        .publish(&state.openapi);
    let documents = state.openapi.documents();
    let group_version = group_version.trim_matches('/');
    let Some(rendered) = documents.v3.get(group_version) else {
        return crate::ApiError::no_route().into_response();
    };
    if !accepted(&headers)
        .iter()
        .any(|m| matches!(m.as_str(), "application/json" | "application/*" | "*/*"))
    {
        return not_acceptable();
    }
    match query.get("hash") {
        Some(hash) if *hash != rendered.hash => {
            let location = format!("/openapi/v3/{group_version}?hash={}", rendered.hash);
            (
                StatusCode::MOVED_PERMANENTLY,
                [(header::LOCATION, location)],
            )
                .into_response()
        }
        Some(_) => {
            let expires = jiff::Timestamp::now()
                .checked_add(jiff::SignedDuration::from_hours(24 * 365))
                .map(|t| t.strftime("%a, %d %b %Y %H:%M:%S GMT").to_string())
                .unwrap_or_default();
            answer(
                &headers,
                rendered,
                "application/json",
                &[
                    (header::CACHE_CONTROL, "public, immutable"),
                    (header::EXPIRES, &expires),
                ],
            )
        }
        None => answer(&headers, rendered, "application/json", &[]),
    }
}

//! `POST /apis/authentication.k8s.io/v1/tokenreviews`: who a token authenticates as (kube's
//! TokenReview REST), for webhook authenticators and in-cluster servers. Nothing is stored.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use super::{Checked, bearer};
use crate::{ApiError, AppState, UserInfo, auth::bootstrap, handlers::Written};

/// The group every authenticated user is in (kube's `AuthenticatedGroupAdder`).
const AUTHENTICATED_GROUP: &str = "system:authenticated";

/// `user.Info` as a TokenReview's `status.user` writes it (`uid` and `extra` left out when
/// empty).
fn user_json(user: &UserInfo) -> Value {
    let mut groups = user.groups.clone();
    if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
        groups.push(AUTHENTICATED_GROUP.to_owned());
    }
    let mut out = json!({"username": user.name, "groups": groups});
    if !user.uid.is_empty() {
        out["uid"] = json!(user.uid);
    }
    if !user.extra.is_empty() {
        out["extra"] = json!(user.extra);
    }
    out
}

/// Reviews the token of the TokenReview `body`: service-account JWTs (for `spec.audiences`,
/// else the API audiences), static tokens and bootstrap tokens (audience-agnostic: they
/// authenticate for the API audiences only).
pub(crate) async fn create(state: &AppState, body: &[u8]) -> Result<Written, ApiError> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the TokenReview cannot be read: {e}")))?;
    let spec = request.get("spec").cloned().unwrap_or_else(|| json!({}));
    let token = spec
        .get("token")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if token.is_empty() {
        return Err(ApiError::bad_request("token is required for TokenReview"));
    }
    let requested: Vec<String> = spec
        .get("audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let status = review(state, token, &requested).await;
    let mut spec_out = json!({"token": token});
    if !requested.is_empty() {
        spec_out["audiences"] = json!(requested);
    }
    Ok(Written {
        code: StatusCode::CREATED,
        body: json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": spec_out,
            "status": status,
        }),
        warnings: Vec::new(),
    })
}

/// The `status` of a review of `token` for `requested` audiences.
async fn review(state: &AppState, token: &str, requested: &[String]) -> Value {
    let api_audiences: Vec<String> = state
        .service_accounts
        .as_deref()
        .map(|t| t.api_audiences().to_vec())
        .unwrap_or_default();
    let requested_or_api = if requested.is_empty() {
        api_audiences.clone()
    } else {
        requested.to_vec()
    };
    if let Some(tokens) = state.service_accounts.as_deref() {
        let now = jiff::Timestamp::now().as_second();
        match tokens
            .check(state.store.as_ref(), token, requested, now)
            .await
        {
            Checked::User(user, audiences) => {
                return json!({
                    "authenticated": true,
                    "user": user_json(&user),
                    "audiences": audiences,
                });
            }
            Checked::Refused(why) => {
                return json!({
                    "user": {},
                    "error": format!("[invalid bearer token, {why}]"),
                });
            }
            Checked::NotOurs => {}
        }
    }
    // Audience-agnostic authenticators: valid for the API audiences only.
    let audiences: Vec<String> = requested_or_api
        .iter()
        .filter(|a| api_audiences.is_empty() || api_audiences.contains(a))
        .cloned()
        .collect();
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
        headers.insert(header::AUTHORIZATION, value);
    }
    let user = match state.authenticator.tokens.get(token).cloned() {
        Some(user) => Some(user),
        None if bearer(&headers).is_some() => {
            bootstrap::authenticate(state.store.as_ref(), &headers, jiff::Timestamp::now()).await
        }
        None => None,
    };
    match user {
        Some(user) if !audiences.is_empty() || requested.is_empty() => json!({
            "authenticated": true,
            "user": user_json(&user),
            "audiences": audiences,
        }),
        _ => json!({"user": {}, "error": "[invalid bearer token, token lookup failed]"}),
    }
}

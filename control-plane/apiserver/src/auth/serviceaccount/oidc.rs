//! OIDC discovery for the service-account issuer (kube's `pkg/serviceaccount/openidmetadata.go`
//! and `pkg/routes/openidmetadata.go`): `/.well-known/openid-configuration` and
//! `/openid/v1/jwks`, so other systems can verify keelson's tokens.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{ServiceAccountTokens, jwt};
use crate::{ApiError, AppState};

/// The path of the key set below the issuer (kube's `JWKSPath`).
pub const JWKS_PATH: &str = "/openid/v1/jwks";
/// What both documents say about caching.
const CACHE_CONTROL: &str = "public, max-age=3600";

/// The `jwks_uri`: `--service-account-jwks-uri`, else the issuer's scheme and host with
/// [`JWKS_PATH`].
fn jwks_uri(tokens: &ServiceAccountTokens) -> String {
    if let Some(uri) = &tokens.jwks_uri {
        return uri.clone();
    }
    let issuer = tokens.issuer.as_str();
    let origin = match issuer.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
            format!("{scheme}://{host}")
        }
        None => issuer.to_owned(),
    };
    format!("{origin}{JWKS_PATH}")
}

/// The discovery document.
pub(crate) fn configuration(tokens: &ServiceAccountTokens) -> Value {
    json!({
        "issuer": tokens.issuer,
        "jwks_uri": jwks_uri(tokens),
        "response_types_supported": ["id_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [jwt::ALGORITHM],
    })
}

/// The key set.
pub(crate) fn key_set(tokens: &ServiceAccountTokens) -> Value {
    json!({"keys": [tokens.key.jwk()]})
}

fn respond(content_type: &'static str, body: &Value) -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, CACHE_CONTROL),
        ],
        body.to_string(),
    )
        .into_response()
}

/// `GET /.well-known/openid-configuration`.
pub(crate) async fn serve_configuration(State(state): State<AppState>) -> Response {
    match state.service_accounts.as_deref() {
        Some(tokens) => respond("application/json", &configuration(tokens)),
        None => ApiError::no_route().into_response(),
    }
}

/// `GET /openid/v1/jwks`.
pub(crate) async fn serve_keys(State(state): State<AppState>) -> Response {
    match state.service_accounts.as_deref() {
        Some(tokens) => respond("application/jwk-set+json", &key_set(tokens)),
        None => ApiError::no_route().into_response(),
    }
}

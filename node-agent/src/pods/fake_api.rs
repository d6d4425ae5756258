//! An in-process fake of the Kubernetes API for the pod runner's tests: an axum router serves
//! the few paths a test needs, and a kube [`Client`] sends its requests straight to it (no
//! socket, no TLS).

use std::sync::{Arc, Mutex};

use axum::{
    Router,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use kube::Client;

/// A client whose requests `router` answers.
pub fn client(router: Router) -> Client {
    Client::new(router, "default")
}

/// A JSON response.
pub fn json(code: StatusCode, body: &impl serde::Serialize) -> Response {
    (
        code,
        [("content-type", "application/json")],
        serde_json::to_vec(body).expect("JSON"),
    )
        .into_response()
}

/// A Kubernetes `Status` failure.
pub fn status(code: u16, reason: &str, message: &str) -> Response {
    json(
        StatusCode::from_u16(code).expect("status code"),
        &serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "code": code, "reason": reason, "message": message}),
    )
}

/// What a fake saw: one entry per request (what and where, and the body as JSON).
pub type Seen = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

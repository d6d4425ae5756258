//! Overload protection, as kube-apiserver's max-in-flight filter, request deadline and
//! timeout filters do it (`staging/src/k8s.io/apiserver/pkg/server/filters/maxinflight.go`,
//! `timeout.go`, `endpoints/filters/request_deadline.go`):
//!
//! - at most [`Limits::max_requests_inflight`] reads and
//!   [`Limits::max_mutating_requests_inflight`] writes are served at once (0 = unlimited);
//!   long-running requests (watch, exec, attach, logs, port-forward, proxy) are not counted
//!   there, but each user may hold at most [`Limits::max_watches_per_user`] open watches;
//! - a request over a limit is refused at once with `429 TooManyRequests` and `Retry-After: 1`
//!   (a `Status`; kube's own filter writes the same code, header and message as plain text);
//! - the exempt identities of [`decide::exempt`] (administrators, nodes, the control plane's
//!   components, health probes) are never counted or refused, as the requests of
//!   kube-apiserver's exempt priority level;
//! - a request that is not long-running gets its answer within its deadline
//!   ([`decide::deadline`]: `?timeout=` up to `--request-timeout`) or `504 Timeout`; the
//!   handler runs on to its end, unseen, as kube's timeout filter lets it.

pub mod decide;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    body::Body,
    extract::{Query, Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
};
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    AppState,
    auth::{Authenticated, request_info::classify},
    error::{ApiError, Details},
    request::Params,
};
pub use decide::Bucket;

/// The seconds a refused client is told to wait (kube's `retryAfter`).
pub const RETRY_AFTER_SECONDS: i32 = 1;

/// The limits of [`crate::AppState::with_limits`] (the flags of the same names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Reads (get, list) served at once; 0 = unlimited (`--max-requests-inflight`, 400).
    pub max_requests_inflight: usize,
    /// Writes served at once; 0 = unlimited (`--max-mutating-requests-inflight`, 200).
    pub max_mutating_requests_inflight: usize,
    /// Watches one user may hold open; 0 = unlimited (`--max-watches-per-user`, 1000).
    pub max_watches_per_user: usize,
    /// The longest a request that is not long-running may take (`--request-timeout`, 60 s).
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            max_watches_per_user: 1000,
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// The counters behind [`Limits`], shared by every request.
#[derive(Debug)]
pub struct Overload {
    limits: Limits,
    read_only: Option<Arc<Semaphore>>,
    mutating: Option<Arc<Semaphore>>,
    watches: Arc<Mutex<HashMap<String, usize>>>,
}

impl Default for Overload {
    fn default() -> Self {
        Self::new(Limits::default())
    }
}

impl Overload {
    /// Counters enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        let pool = |n: usize| (n > 0).then(|| Arc::new(Semaphore::new(n)));
        Self {
            read_only: pool(limits.max_requests_inflight),
            mutating: pool(limits.max_mutating_requests_inflight),
            watches: Arc::default(),
            limits,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The reads and the writes being served now (counted ones only: exempt users' and
    /// long-running requests are not).
    pub fn in_flight(&self) -> (usize, usize) {
        let used = |pool: &Option<Arc<Semaphore>>, max: usize| {
            pool.as_ref().map_or(0, |p| max - p.available_permits())
        };
        (
            used(&self.read_only, self.limits.max_requests_inflight),
            used(&self.mutating, self.limits.max_mutating_requests_inflight),
        )
    }

    /// The watches `user` holds open now.
    pub fn open_watches(&self, user: &str) -> usize {
        self.watches
            .lock()
            .map(|w| w.get(user).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// A seat for `user`'s new watch, or `None` when the user holds the maximum already.
    fn watch_seat(&self, user: &str) -> Option<WatchSeat> {
        let mut watches = self.watches.lock().ok()?;
        let open = watches.entry(user.to_owned()).or_insert(0);
        if self.limits.max_watches_per_user > 0 && *open >= self.limits.max_watches_per_user {
            return None;
        }
        *open += 1;
        Some(WatchSeat {
            user: user.to_owned(),
            watches: Arc::clone(&self.watches),
        })
    }
}

/// One open watch of a user, given back when the watch's response ends.
#[derive(Debug)]
struct WatchSeat {
    user: String,
    watches: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for WatchSeat {
    fn drop(&mut self) {
        if let Ok(mut watches) = self.watches.lock()
            && let Some(open) = watches.get_mut(&self.user)
        {
            *open = open.saturating_sub(1);
            if *open == 0 {
                watches.remove(&self.user);
            }
        }
    }
}

impl ApiError {
    /// 429 `TooManyRequests` with `Retry-After: 1`, kube's answer over the in-flight limit.
    pub fn too_many_requests() -> Self {
        Self {
            code: StatusCode::TOO_MANY_REQUESTS,
            reason: "TooManyRequests",
            message: "Too many requests, please try again later.".into(),
            details: Some(Box::new(Details {
                retry_after_seconds: RETRY_AFTER_SECONDS,
                ..Details::default()
            })),
        }
    }

    /// 504 `Timeout`: kube's answer to a request that outlived its deadline.
    pub fn request_timeout() -> Self {
        Self {
            code: StatusCode::GATEWAY_TIMEOUT,
            reason: "Timeout",
            message: "Timeout: request did not complete within the allotted timeout".into(),
            details: None,
        }
    }
}

fn params_of(request: &Request) -> Params {
    Query::<Params>::try_from_uri(request.uri())
        .map(|q| q.0)
        .unwrap_or_default()
}

/// Middleware after impersonation and before authorization (kube's `WithMaxInFlightLimit`
/// place): counts the request in its pool or, for a watch, in its user's open watches, and
/// refuses it with 429 when that is full, unless the user is exempt.
pub async fn limit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(Authenticated(user)) = request.extensions().get::<Authenticated>().cloned() else {
        return ApiError::unauthorized().into_response();
    };
    let params = params_of(&request);
    let (verb, kind) = classify(request.method(), request.uri().path(), &params);
    let bucket = decide::bucket(&verb, &kind, &params);
    if decide::exempt(&user, &verb, &kind) {
        return next.run(request).await;
    }
    let overload = &state.overload;
    match bucket {
        Bucket::LongRunning => next.run(request).await,
        Bucket::Watch => {
            let Some(seat) = overload.watch_seat(&user.name) else {
                tracing::debug!(user = %user.name, "watch refused: too many open watches");
                return ApiError::too_many_requests().into_response();
            };
            hold_until_body_ends(next.run(request).await, seat)
        }
        Bucket::ReadOnly | Bucket::Mutating => {
            let pool = if bucket == Bucket::ReadOnly {
                &overload.read_only
            } else {
                &overload.mutating
            };
            let permit: Option<OwnedSemaphorePermit> = match pool {
                None => None,
                Some(pool) => match Arc::clone(pool).try_acquire_owned() {
                    Ok(permit) => Some(permit),
                    Err(_) => {
                        tracing::debug!(user = %user.name, ?bucket, "request refused: in-flight limit");
                        return ApiError::too_many_requests().into_response();
                    }
                },
            };
            let response = next.run(request).await;
            drop(permit);
            response
        }
    }
}

/// `response` with `guard` kept alive until its body has been sent or dropped.
fn hold_until_body_ends<G: Send + Sync + 'static>(response: Response, guard: G) -> Response {
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let _held = &guard;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Middleware outside authentication (kube's `WithRequestDeadline` and
/// `WithTimeoutForNonLongRunningRequests`): a request that is not long-running gets its
/// response head within its deadline or a 504 `Timeout` Status; a malformed `?timeout=` is
/// a 400. The handler runs on in its own task after a timeout, so a write it began ends as
/// it would have (kube's post-timeout activity).
pub async fn deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let params = params_of(&request);
    let (verb, kind) = classify(request.method(), request.uri().path(), &params);
    if decide::bucket(&verb, &kind, &params).long_running() {
        return next.run(request).await;
    }
    let maximum = state.overload.limits.request_timeout;
    let deadline = match decide::deadline(params.get("timeout").map(String::as_str), maximum) {
        Ok(deadline) => deadline,
        Err(error) => return error.into_response(),
    };
    let handler = tokio::spawn(next.run(request));
    match tokio::time::timeout(deadline, handler).await {
        Ok(Ok(response)) => response,
        Ok(Err(join)) => {
            tracing::error!(error = %join, "request handler failed");
            ApiError::internal_occurred("the request handler failed").into_response()
        }
        Err(_) => {
            tracing::info!(?deadline, "request timed out");
            ApiError::request_timeout().into_response()
        }
    }
}

//! Service-account tokens for a pod's `serviceAccountToken` projections, as the kubelet's token
//! manager gets them (`pkg/kubelet/token/token_manager.go`): a TokenRequest
//! (`POST /api/v1/namespaces/<ns>/serviceaccounts/<sa>/token`) made with the node's own
//! credentials, bound to the pod, kept until it needs a refresh — 80 % of its lifetime passed
//! or 24 h since it was issued — and then requested again. A failed refresh keeps the old token
//! while it is valid. The cache belongs to one pod's worker and ends with it.

use std::{collections::HashMap, time::Duration};

use k8s_openapi::{
    api::{
        authentication::v1::{
            BoundObjectReference, TokenRequest, TokenRequestSpec, TokenRequestStatus,
        },
        core::v1::{Pod, ServiceAccount, ServiceAccountTokenProjection},
    },
    jiff::{SignedDuration, Timestamp},
};
use kube::{Api, Client, api::PostParams};

/// The longest a token is kept before it is requested again.
const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Kubernetes' default `expirationSeconds` of a token projection.
pub const DEFAULT_EXPIRATION_SECONDS: i64 = 3600;
/// The most the refresh time is moved earlier, so that many pods do not refresh at once.
const MAX_JITTER: Duration = Duration::from_secs(10);
/// The soonest a new token is requested again, whatever lifetime the API granted: a server
/// that grants tokens already due does not get a request every pass.
const MIN_REFRESH: Duration = Duration::from_secs(10);
/// Tries of one TokenRequest when the API answers with a transient error.
const TRIES: u32 = 3;

/// Why a TokenRequest failed.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The API refused or could not be reached.
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// The answer had no `status`.
    #[error("the TokenRequest answer has no status")]
    NoStatus,
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// There was no token yet and the request failed.
    #[error("failed to fetch token")]
    Fetch(#[source] RequestError),
    /// The cached token has expired and requesting a new one failed.
    #[error("token {key} expired and refresh failed")]
    Expired {
        /// The token's cache key (no secret in it).
        key: String,
        /// The request's failure.
        #[source]
        source: RequestError,
    },
}

/// What identifies one token of a pod: audience and lifetime (pod and service account are the
/// worker's).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    audience: String,
    expiration_seconds: i64,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "audience={:?}/expirationSeconds={}",
            self.audience, self.expiration_seconds
        )
    }
}

/// A token and when to get the next one.
#[derive(Debug, Clone)]
struct Issued {
    token: String,
    expires: Timestamp,
    refresh_at: Timestamp,
}

/// When a token that expires at `expires` and was issued for `ttl_seconds` needs a refresh:
/// 24 h after it was issued or when 20 % of its lifetime is left, whichever is first, both
/// moved `jitter` earlier; at once if it claims to be issued in the future (the clock jumped).
pub fn refresh_at(
    now: Timestamp,
    expires: Timestamp,
    ttl_seconds: i64,
    jitter: Duration,
) -> Timestamp {
    let jitter = SignedDuration::try_from(jitter).unwrap_or(SignedDuration::ZERO);
    let ttl = SignedDuration::from_secs(ttl_seconds.max(0));
    let issued = expires.checked_sub(ttl).unwrap_or(expires);
    if now < issued {
        return now;
    }
    let max_ttl = SignedDuration::try_from(MAX_TTL).unwrap_or(SignedDuration::MAX);
    let by_age = issued
        .checked_add(max_ttl)
        .and_then(|t| t.checked_sub(jitter))
        .unwrap_or(expires);
    let by_lifetime = expires
        .checked_sub(SignedDuration::from_secs(ttl_seconds.max(0) * 20 / 100))
        .and_then(|t| t.checked_sub(jitter))
        .unwrap_or(expires);
    by_age.min(by_lifetime)
}

/// A jitter in `[0, MAX_JITTER)` from the clock's low bits (no randomness needed beyond
/// spreading pods apart).
fn jitter() -> Duration {
    let nanos = u64::from(Timestamp::now().subsec_nanosecond().unsigned_abs());
    Duration::from_secs(nanos % MAX_JITTER.as_secs())
}

/// The tokens of one pod.
#[derive(Debug, Default)]
pub struct TokenCache {
    issued: HashMap<Key, Issued>,
}

impl TokenCache {
    /// The token for `source` in `pod`: the cached one unless it needs a refresh, else a new
    /// one from the API (the old one while it is valid if that fails).
    pub async fn token(
        &mut self,
        client: &Client,
        pod: &Pod,
        source: &ServiceAccountTokenProjection,
    ) -> Result<String, TokenError> {
        let key = Key {
            audience: source.audience.clone().unwrap_or_default(),
            expiration_seconds: source
                .expiration_seconds
                .unwrap_or(DEFAULT_EXPIRATION_SECONDS),
        };
        let now = Timestamp::now();
        let cached = self.issued.get(&key).cloned();
        if let Some(cached) = cached.as_ref().filter(|c| now < c.refresh_at) {
            return Ok(cached.token.clone());
        }
        match request(client, pod, &key).await {
            Ok((status, ttl)) => {
                let expires = status.expiration_timestamp.0;
                let soonest = SignedDuration::try_from(MIN_REFRESH)
                    .ok()
                    .and_then(|d| now.checked_add(d).ok())
                    .unwrap_or(now);
                let issued = Issued {
                    token: status.token,
                    expires,
                    refresh_at: refresh_at(now, expires, ttl, jitter()).max(soonest),
                };
                let token = issued.token.clone();
                self.issued.insert(key, issued);
                Ok(token)
            }
            Err(error) => match cached {
                None => Err(TokenError::Fetch(error)),
                Some(cached) if now >= cached.expires => Err(TokenError::Expired {
                    key: key.to_string(),
                    source: error,
                }),
                Some(mut cached) => {
                    tracing::warn!(
                        pod = pod.metadata.name.as_deref().unwrap_or_default(),
                        token = %key,
                        error = %crate::error_chain(&error),
                        "couldn't refresh a service account token; keeping the current one"
                    );
                    // Try again in a minute (or at expiry, if sooner).
                    let retry = now
                        .checked_add(SignedDuration::from_secs(60))
                        .unwrap_or(cached.expires);
                    cached.refresh_at = retry.min(cached.expires);
                    let token = cached.token.clone();
                    self.issued.insert(key, cached);
                    Ok(token)
                }
            },
        }
    }

    /// The earliest time a cached token needs a refresh.
    pub fn next_refresh(&self) -> Option<Timestamp> {
        self.issued.values().map(|i| i.refresh_at).min()
    }
}

/// The TokenRequest for `key`, bound to `pod`; its status and the lifetime the API granted.
/// A transient failure (connection, 5xx, 429) is tried again after 250 ms, then 500 ms.
async fn request(
    client: &Client,
    pod: &Pod,
    key: &Key,
) -> Result<(TokenRequestStatus, i64), RequestError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    let body = TokenRequest {
        spec: TokenRequestSpec {
            audiences: if key.audience.is_empty() {
                Vec::new()
            } else {
                vec![key.audience.clone()]
            },
            expiration_seconds: Some(key.expiration_seconds),
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                name: pod.metadata.name.clone(),
                uid: pod.metadata.uid.clone(),
            }),
        },
        ..TokenRequest::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let mut delay = Duration::from_millis(250);
    let mut tries = 0;
    loop {
        tries += 1;
        match api
            .create_subresource::<_, TokenRequest>("token", &account, &PostParams::default(), &body)
            .await
        {
            Ok(answer) => {
                let ttl = answer
                    .spec
                    .expiration_seconds
                    .unwrap_or(key.expiration_seconds);
                let status = answer.status.ok_or(RequestError::NoStatus)?;
                return Ok((status, ttl));
            }
            Err(error) if tries < TRIES && crate::node::is_transient(&error) => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(error) => return Err(error.into()),
        }
    }
}

#[cfg(test)]
#[path = "tokens_tests.rs"]
mod tests;

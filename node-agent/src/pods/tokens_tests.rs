//! The refresh schedule (pure) and the TokenRequest against a fake API.

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use axum::{
    Router,
    extract::{Path, State},
    http::StatusCode,
    response::Response,
};
use k8s_openapi::{
    api::core::v1::PodSpec,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
};

use super::*;
use crate::pods::fake_api::{self, Seen};

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).expect("timestamp")
}

/// (issued for, age now, jitter) -> seconds after issue when the token is refreshed.
#[test]
fn refresh_schedule() {
    let hour = 3600;
    let day = 24 * hour;
    for (ttl, now_age, jitter, refresh_after) in [
        // 80 % of the lifetime: a 1 h token at 48 min, the 3607 s default at 2886 s.
        (hour, 0, 0, 2880),
        (3607, 0, 0, 3607 - 721),
        (600, 100, 0, 480),
        // The jitter moves it earlier.
        (hour, 0, 7, 2873),
        // 24 h at most, also for a year-long token.
        (365 * day, 0, 0, day),
        (2 * day, 0, 3, day - 3),
        // Already due: the time is in the past and compares as due.
        (hour, 3000, 0, 2880),
    ] {
        let issued = at(0);
        let expires = at(ttl);
        let now = at(now_age);
        let when = refresh_at(now, expires, ttl, Duration::from_secs(jitter));
        assert_eq!(
            when.duration_since(issued).as_secs(),
            refresh_after,
            "ttl {ttl} age {now_age} jitter {jitter}"
        );
    }
    // Issued in the future (the clock went back): refresh now.
    assert_eq!(refresh_at(at(-10), at(hour), hour, Duration::ZERO), at(-10));
}

#[test]
fn jitter_is_bounded() {
    for _ in 0..100 {
        assert!(jitter() < MAX_JITTER);
    }
}

/// The fake token endpoint: fails the first `failures` requests with `code`, then issues
/// `token-<n>` valid for the lifetime asked (or `grant` seconds when set).
#[derive(Default)]
struct Fake {
    seen: Seen,
    failures: AtomicU32,
    code: AtomicU32,
    issued: AtomicU32,
    grant: Option<i64>,
}

async fn create_token(
    State(fake): State<Arc<Fake>>,
    Path((namespace, account)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let request: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
    fake.seen.lock().expect("lock").push((
        format!("POST /api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"),
        request.clone(),
    ));
    if fake
        .failures
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        let code = fake.code.load(Ordering::SeqCst) as u16;
        return fake_api::status(code, "InternalError", "no token today");
    }
    let n = fake.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let mut answer: TokenRequest = serde_json::from_value(request).expect("a TokenRequest");
    let ttl = fake
        .grant
        .or(answer.spec.expiration_seconds)
        .unwrap_or(3600);
    answer.spec.expiration_seconds = Some(ttl);
    answer.status = Some(TokenRequestStatus {
        token: format!("token-{n}"),
        expiration_timestamp: Time(
            Timestamp::now()
                .checked_add(SignedDuration::from_secs(ttl))
                .expect("time"),
        ),
    });
    fake_api::json(StatusCode::CREATED, &answer)
}

fn serve(fake: Arc<Fake>) -> Client {
    fake_api::client(
        Router::new()
            .route(
                "/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
                axum::routing::post(create_token),
            )
            .with_state(fake),
    )
}

fn pod(account: Option<&str>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web-0".into()),
            namespace: Some("shop".into()),
            uid: Some("0f6c3b1e-uid".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            service_account_name: account.map(str::to_owned),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

fn projection(audience: Option<&str>, seconds: Option<i64>) -> ServiceAccountTokenProjection {
    ServiceAccountTokenProjection {
        audience: audience.map(str::to_owned),
        expiration_seconds: seconds,
        path: "token".into(),
    }
}

#[tokio::test]
async fn request_is_bound_to_the_pod_and_cached() {
    let fake = Arc::new(Fake::default());
    let client = serve(fake.clone());
    let mut cache = TokenCache::default();
    let pod = pod(Some("builder"));
    let token = cache
        .token(&client, &pod, &projection(None, Some(3607)))
        .await
        .expect("token");
    assert_eq!(token, "token-1");
    // Cached until its refresh time.
    let again = cache
        .token(&client, &pod, &projection(None, Some(3607)))
        .await
        .expect("cached");
    assert_eq!(again, "token-1");
    // Another audience is another token.
    let vault = cache
        .token(&client, &pod, &projection(Some("vault"), None))
        .await
        .expect("vault token");
    assert_eq!(vault, "token-2");
    let seen = fake.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        seen[0].0,
        "POST /api/v1/namespaces/shop/serviceaccounts/builder/token"
    );
    assert_eq!(
        seen[0].1,
        serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "metadata": {},
            "spec": {
                "audiences": [],
                "expirationSeconds": 3607,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web-0",
                    "uid": "0f6c3b1e-uid"}
            }
        })
    );
    assert_eq!(seen[1].1["spec"]["audiences"], serde_json::json!(["vault"]));
    assert_eq!(seen[1].1["spec"]["expirationSeconds"], 3600);
    // 80 % of an hour from now, give or take the jitter.
    let next = cache.next_refresh().expect("a refresh time");
    let in_secs = next.duration_since(Timestamp::now()).as_secs();
    assert!((2870..=2886).contains(&in_secs), "{in_secs}");
}

#[tokio::test]
async fn default_service_account_and_a_token_granted_already_due() {
    let fake = Arc::new(Fake {
        grant: Some(0),
        ..Fake::default()
    });
    let client = serve(fake.clone());
    let mut cache = TokenCache::default();
    let pod = pod(None);
    let first = cache
        .token(&client, &pod, &projection(None, None))
        .await
        .expect("token");
    // Granted for 0 s: due at once by the rule, yet not requested again for 10 s.
    let second = cache
        .token(&client, &pod, &projection(None, None))
        .await
        .expect("token");
    assert_eq!((first.as_str(), second.as_str()), ("token-1", "token-1"));
    let next = cache.next_refresh().expect("a refresh time");
    let in_secs = next.duration_since(Timestamp::now()).as_secs();
    assert!((9..=10).contains(&in_secs), "{in_secs}");
    for issued in cache.issued.values_mut() {
        issued.refresh_at = Timestamp::now();
    }
    let third = cache
        .token(&client, &pod, &projection(None, None))
        .await
        .expect("token");
    assert_eq!(third, "token-2");
    assert_eq!(
        fake.seen.lock().expect("lock")[0].0,
        "POST /api/v1/namespaces/shop/serviceaccounts/default/token"
    );
}

#[tokio::test]
async fn transient_failures_are_retried_a_bounded_number_of_times() {
    let fake = Arc::new(Fake::default());
    fake.failures.store(2, Ordering::SeqCst);
    fake.code.store(503, Ordering::SeqCst);
    let client = serve(fake.clone());
    let mut cache = TokenCache::default();
    let token = cache
        .token(&client, &pod(None), &projection(None, None))
        .await
        .expect("the third try succeeds");
    assert_eq!(token, "token-1");
    assert_eq!(fake.seen.lock().expect("lock").len(), 3);

    // Three 503s in a row: no token, and the error says so as the kubelet does.
    fake.failures.store(3, Ordering::SeqCst);
    let mut cache = TokenCache::default();
    let error = cache
        .token(&client, &pod(None), &projection(Some("other"), None))
        .await
        .expect_err("no token");
    assert!(
        crate::error_chain(&error).starts_with("failed to fetch token: "),
        "{}",
        crate::error_chain(&error)
    );
    assert_eq!(fake.seen.lock().expect("lock").len(), 6);
}

#[tokio::test]
async fn not_found_is_not_retried_and_a_valid_token_survives_a_failed_refresh() {
    let fake = Arc::new(Fake {
        grant: Some(100),
        ..Fake::default()
    });
    let client = serve(fake.clone());
    fake.failures.store(1, Ordering::SeqCst);
    fake.code.store(404, Ordering::SeqCst);
    let mut cache = TokenCache::default();
    let pod = pod(None);
    cache
        .token(&client, &pod, &projection(None, None))
        .await
        .expect_err("404 fails at once");
    assert_eq!(fake.seen.lock().expect("lock").len(), 1);

    let first = cache
        .token(&client, &pod, &projection(None, None))
        .await
        .expect("token");
    // Force the refresh; it fails; the old (valid) token stays and a retry is scheduled.
    for issued in cache.issued.values_mut() {
        issued.refresh_at = Timestamp::now();
    }
    fake.failures.store(1, Ordering::SeqCst);
    let kept = cache
        .token(&client, &pod, &projection(None, None))
        .await
        .expect("old token kept");
    assert_eq!(kept, first);
    let retry = cache.next_refresh().expect("retry time");
    let in_secs = retry.duration_since(Timestamp::now()).as_secs();
    assert!((55..=60).contains(&in_secs), "{in_secs}");

    // Expired and the refresh fails: an error naming the token, not the old value.
    for issued in cache.issued.values_mut() {
        issued.refresh_at = Timestamp::now();
        issued.expires = Timestamp::now();
    }
    fake.failures.store(1, Ordering::SeqCst);
    let error = cache
        .token(&client, &pod, &projection(None, None))
        .await
        .expect_err("expired");
    assert_eq!(
        error.to_string(),
        "token audience=\"\"/expirationSeconds=3600 expired and refresh failed"
    );
}

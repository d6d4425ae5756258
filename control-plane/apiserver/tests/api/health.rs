//! `/livez`, `/readyz` and `/healthz` as a load balancer or systemd sees them: a store that
//! stops answering and a shutdown that begins make `/readyz` fail with the check's name.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use async_trait::async_trait;
use bytes::Bytes;
use keelson_store::{
    Deleted, KeyValue, ListOptions, ListResult, Revision, StoreError, WatchStream,
};

use super::*;

/// A store that fails every call while `failing` is set (an etcd that went away).
#[derive(Debug)]
struct Switchable {
    inner: Arc<dyn Store>,
    failing: AtomicBool,
}

impl Switchable {
    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        Ok(())
    }
}

#[async_trait]
impl Store for Switchable {
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision, StoreError> {
        self.check()?;
        self.inner.create(key, value).await
    }
    async fn get(
        &self,
        key: &str,
        revision: Option<Revision>,
    ) -> Result<Option<KeyValue>, StoreError> {
        self.check()?;
        self.inner.get(key, revision).await
    }
    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected: Revision,
    ) -> Result<Revision, StoreError> {
        self.check()?;
        self.inner.update(key, value, expected).await
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Deleted, StoreError> {
        self.check()?;
        self.inner.delete(key, expected).await
    }
    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult, StoreError> {
        self.check()?;
        self.inner.list(prefix, options).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        self.check()?;
        self.inner.watch(prefix, from).await
    }
    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.check()?;
        self.inner.compact(revision).await
    }
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.check()?;
        self.inner.current_revision().await
    }
}

async fn get(router: &Router, uri: &str, token: Option<&str>) -> (u16, String) {
    let mut request = Request::get(uri);
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, bearer(token));
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

const ALL_PASS: &str = "[+]ping ok\n[+]runtime ok\n[+]etcd ok\n[+]poststarthook/bootstrap ok\n\
                        [+]shutdown ok\nreadyz check passed\n";

#[tokio::test]
async fn readyz_fails_naming_etcd_while_the_store_does_not_answer_and_after_shutdown_begins() {
    let base = server().await;
    let store = Arc::new(Switchable {
        inner: Arc::clone(&base.store),
        failing: AtomicBool::new(false),
    });
    let state = AppState::new(Arc::clone(&store) as Arc<dyn Store>).with_authenticator(
        Authenticator::default().with_token(ADMIN_TOKEN, UserInfo::new("admin", &[MASTERS_GROUP])),
    );
    let router = app(state.clone());

    // Anonymous clients (load balancers) may read the root endpoints.
    assert_eq!(get(&router, "/readyz", None).await, (200, "ok".to_owned()));
    assert_eq!(
        get(&router, "/readyz?verbose", None).await,
        (200, ALL_PASS.to_owned())
    );

    store.failing.store(true, Ordering::SeqCst);
    assert_eq!(
        get(&router, "/readyz", None).await,
        (
            500,
            "[+]ping ok\n[+]runtime ok\n[-]etcd failed: reason withheld\n\
             [+]poststarthook/bootstrap ok\n[+]shutdown ok\nreadyz check failed\n"
                .to_owned()
        )
    );
    // The process is alive: systemd's watchdog must not restart it for a store outage.
    assert_eq!(get(&router, "/livez", None).await, (200, "ok".to_owned()));
    // One check's own path gives the reason, to an authorized client only (kube's
    // system:public-info-viewer grants anonymous clients the root paths alone).
    assert_eq!(get(&router, "/readyz/etcd", None).await.0, 403);
    assert_eq!(
        get(&router, "/readyz/etcd", Some(ADMIN_TOKEN)).await,
        (
            500,
            "internal server error: the store did not answer a read: the store is closed\n"
                .to_owned()
        )
    );

    store.failing.store(false, Ordering::SeqCst);
    assert_eq!(get(&router, "/readyz", None).await, (200, "ok".to_owned()));
    state.shutdown();
    assert_eq!(
        get(&router, "/readyz", None).await,
        (
            500,
            "[+]ping ok\n[+]runtime ok\n[+]etcd ok\n[+]poststarthook/bootstrap ok\n\
             [-]shutdown failed: reason withheld\nreadyz check failed\n"
                .to_owned()
        )
    );
    assert_eq!(get(&router, "/livez", None).await, (200, "ok".to_owned()));
    assert_eq!(get(&router, "/healthz", None).await, (200, "ok".to_owned()));
}

#[tokio::test]
async fn readyz_waits_for_the_system_namespaces() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("state.db"), SqliteOptions::default())
            .await
            .expect("open the SQLite store"),
    );
    // Before bootstrap no RBAC policy lets anonymous clients in: ask as an administrator.
    let router = app(AppState::new(Arc::clone(&store)).with_authenticator(
        Authenticator::default().with_token(ADMIN_TOKEN, UserInfo::new("admin", &[MASTERS_GROUP])),
    ));
    let (status, body) = get(&router, "/readyz?verbose", Some(ADMIN_TOKEN)).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("[-]poststarthook/bootstrap failed: reason withheld\n"),
        "{body}"
    );
    bootstrap(store.as_ref()).await.expect("bootstrap");
    assert_eq!(
        get(&router, "/readyz?verbose", Some(ADMIN_TOKEN)).await,
        (200, ALL_PASS.to_owned())
    );
}

//! The store contract through the cache, and what only the cache promises.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::StreamExt as _;
use keelson_store::{ListOptions, SqliteOptions, SqliteStore, Store, StoreError};
use tempfile::TempDir;

use super::{WatchCache, WatchCacheOptions};

async fn sqlite() -> (Arc<dyn Store>, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("store.db"), SqliteOptions::default())
        .await
        .expect("open the SQLite store");
    (Arc::new(store), dir)
}

/// The cache over a fresh SQLite store, for the contract suite.
async fn open_cached() -> (Arc<dyn Store>, TempDir) {
    let (inner, dir) = sqlite().await;
    let cache: Arc<dyn Store> = Arc::new(WatchCache::new(inner, WatchCacheOptions::default()));
    // Filled before the suite writes, so its watches are served from memory.
    cache
        .list("/registry/", ListOptions::default())
        .await
        .expect("first list");
    (cache, dir)
}

keelson_store::contract_suite!(open_cached());

async fn create(store: &dyn Store, key: &str) -> i64 {
    store
        .create(key, Bytes::from_static(b"{}"))
        .await
        .unwrap_or_else(|e| panic!("create {key}: {e}"))
}

/// A list through the cache sees a write made to the store underneath just before (the
/// consistent read waits for the cache to reach the store's revision).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_sees_the_write_before_it() {
    let (inner, _dir) = sqlite().await;
    let cache = WatchCache::new(Arc::clone(&inner), WatchCacheOptions::default());
    for i in 0..50 {
        let key = format!("/registry/configmaps/default/c{i}");
        let revision = create(inner.as_ref(), &key).await;
        let listed = cache
            .list("/registry/configmaps/default/", ListOptions::default())
            .await
            .expect("list");
        assert!(
            listed.revision >= revision,
            "list at {} after write {revision}",
            listed.revision
        );
        assert_eq!(listed.items.len(), i + 1, "every write so far is listed");
        assert!(listed.items.iter().any(|kv| kv.key == key
            && kv.mod_revision == revision
            && kv.create_revision == revision));
    }
}

/// A watch whose reader stops falls more than its buffer behind and is closed; a watch of the
/// same resource that reads gets every event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_that_falls_behind_is_closed_and_others_are_not() {
    let (inner, _dir) = sqlite().await;
    let cache = WatchCache::new(
        inner,
        WatchCacheOptions {
            window: 64,
            watcher_buffer: 8,
        },
    );
    let start = cache
        .list("/registry/", ListOptions::default())
        .await
        .expect("fill")
        .revision;
    let prefix = "/registry/pods/default/";
    let mut slow = cache.watch(prefix, start).await.expect("slow watch");
    let mut reader = cache.watch(prefix, start).await.expect("reading watch");
    let mut written = Vec::new();
    for i in 0..20 {
        written.push(create(&cache, &format!("{prefix}p{i:02}")).await);
        let event = tokio::time::timeout(Duration::from_secs(5), reader.next())
            .await
            .expect("the reading watch gets each event in time")
            .expect("the reading watch stays open")
            .expect("no error");
        assert_eq!(event.mod_revision, *written.last().expect("written"));
    }
    // The slow one now ends, having seen at most its buffer's worth.
    let mut seen = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), slow.next()).await {
            Ok(Some(Ok(_))) => seen += 1,
            Ok(None) => break,
            Ok(Some(Err(e))) => panic!("the slow watch failed instead of ending: {e}"),
            Err(_) => panic!("the slow watch stayed open after falling 20 events behind"),
        }
    }
    assert!(seen < 20, "the slow watch was closed, after {seen} events");
}

/// A watch from inside the window resumes from memory; from below a compaction made through
/// the cache it is refused with `Compacted`; from before the cache filled, the store serves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_resume_from_the_window_and_expire_below_compaction() {
    let (inner, _dir) = sqlite().await;
    let before = create(inner.as_ref(), "/registry/services/default/old").await;
    let cache = WatchCache::new(
        Arc::clone(&inner),
        WatchCacheOptions {
            window: 4,
            watcher_buffer: 16,
        },
    );
    let prefix = "/registry/services/default/";
    cache
        .list(prefix, ListOptions::default())
        .await
        .expect("fill");
    let mut revisions = Vec::new();
    for i in 0..6 {
        revisions.push(create(&cache, &format!("{prefix}s{i}")).await);
    }
    // From before the cache filled: the store's history.
    let mut from_store = cache.watch(prefix, before - 1).await.expect("store watch");
    let first = from_store.next().await.expect("event").expect("ok");
    assert_eq!(first.mod_revision, before);
    // Inside the window (the last 4 events after the fill): resumed from memory.
    let mut resumed = cache.watch(prefix, revisions[4]).await.expect("resume");
    let event = resumed.next().await.expect("event").expect("ok");
    assert_eq!(event.mod_revision, revisions[5]);

    cache.compact(revisions[3]).await.expect("compact");
    match cache.watch(prefix, revisions[2]).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            assert_eq!((requested, compacted), (revisions[2], revisions[3]));
        }
        Err(e) => panic!("expected Compacted, got {e}"),
        Ok(_) => panic!("a watch from a compacted revision was accepted"),
    }
}

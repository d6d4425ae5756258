//! The store contract on the embedded SQLite store, and what only SQLite promises: durability
//! across a reopen, group commit, slow watchers catching up from the table, bounded history.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::StreamExt;
use keelson_store::{
    CompactionPolicy, ListOptions, SqliteOptions, SqliteStore, Store, StoreError, run_compactor,
};
use tempfile::TempDir;

fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("keelson-store-")
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"))
}

async fn open_in(dir: &TempDir, options: SqliteOptions) -> SqliteStore {
    let path = dir.path().join("store.db");
    SqliteStore::open(&path, options)
        .await
        .unwrap_or_else(|e| panic!("cannot open the SQLite store at {}: {e}", path.display()))
}

/// A fresh store in a temp dir, for the contract suite.
async fn open_sqlite() -> (Arc<dyn Store>, TempDir) {
    let dir = temp_dir();
    let store = open_in(&dir, SqliteOptions::default()).await;
    (Arc::new(store), dir)
}

keelson_store::contract_suite!(open_sqlite());

/// Every acknowledged write is in the file after the store is dropped and opened again, with its
/// revision, and new writes continue after the last revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_a_reopen() {
    let dir = temp_dir();
    let store = Arc::new(open_in(&dir, SqliteOptions::default()).await);
    let mut tasks = Vec::new();
    for task in 0..16 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut written = Vec::new();
            for i in 0..25 {
                let key = format!("/registry/pods/default/p{task}-{i}");
                let value = format!("{{\"n\":{i}}}");
                let revision = store
                    .create(&key, Bytes::from(value.clone()))
                    .await
                    .unwrap_or_else(|e| panic!("create {key}: {e}"));
                written.push((key, (value, revision)));
            }
            written
        }));
    }
    let mut written = BTreeMap::new();
    for task in tasks {
        written.extend(task.await.expect("a writer task panicked"));
    }
    let last = written
        .values()
        .map(|(_, r)| *r)
        .max()
        .expect("writes happened");
    drop(store);

    let store = open_in(&dir, SqliteOptions::default()).await;
    assert_eq!(
        store.current_revision().await.expect("current revision"),
        last,
        "the reopened store continues at the last acknowledged revision"
    );
    let listing = store
        .list("/registry/pods/", ListOptions::default())
        .await
        .unwrap_or_else(|e| panic!("list after reopen: {e}"));
    let found: BTreeMap<_, _> = listing
        .items
        .into_iter()
        .map(|kv| {
            let value = String::from_utf8(kv.value.to_vec()).expect("UTF-8 value");
            (kv.key, (value, kv.mod_revision))
        })
        .collect();
    assert_eq!(
        found, written,
        "every acknowledged write is back with its revision"
    );
    let next = store
        .create("/registry/pods/default/after", Bytes::from_static(b"{}"))
        .await
        .unwrap_or_else(|e| panic!("create after reopen: {e}"));
    assert_eq!(
        next,
        last + 1,
        "revisions continue after a reopen, none reused"
    );
}

/// A second store on the same file (a second control plane on one data directory) is refused
/// while the first is open, and allowed once it is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_database_has_one_writer() {
    let dir = temp_dir();
    let first = open_in(&dir, SqliteOptions::default()).await;
    match SqliteStore::open(dir.path().join("store.db"), SqliteOptions::default()).await {
        Err(StoreError::Open { source, .. }) => assert!(
            source.to_string().contains("another keelson store"),
            "the refusal says why: {source}"
        ),
        Err(other) => panic!("a second open failed with {other}, expected Open"),
        Ok(_) => panic!("a second store opened a database that is in use"),
    }
    drop(first);
    open_in(&dir, SqliteOptions::default()).await;
}

/// Concurrent writers share fsyncs: 64 writers need far fewer commits than writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_share_commits() {
    let dir = temp_dir();
    let store = Arc::new(open_in(&dir, SqliteOptions::default()).await);
    let mut tasks = Vec::new();
    for task in 0..64 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for i in 0..10 {
                let key = format!("/registry/configmaps/default/c{task}-{i}");
                store
                    .create(&key, Bytes::from_static(b"{}"))
                    .await
                    .unwrap_or_else(|e| panic!("create {key}: {e}"));
            }
        }));
    }
    for task in tasks {
        task.await.expect("a writer task panicked");
    }
    let stats = store.stats();
    assert_eq!(stats.writes, 640);
    assert!(
        stats.commits * 2 <= stats.writes,
        "64 concurrent writers were committed one by one: {stats:?}"
    );
}

/// A watcher that does not read while hundreds of batches are committed (far more than the
/// event buffer holds) still gets every event, in order, from the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_watcher_catches_up_from_the_table() {
    let dir = temp_dir();
    let options = SqliteOptions {
        event_buffer: 4,
        ..SqliteOptions::default()
    };
    let store = open_in(&dir, options).await;
    let key = "/registry/leases/default/holder";
    let mut revision = store
        .create(key, Bytes::from_static(b"0"))
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    let mut stream = store
        .watch("/registry/leases/", revision)
        .await
        .unwrap_or_else(|e| panic!("watch: {e}"));
    let mut written = Vec::new();
    for i in 1..=700 {
        revision = store
            .update(key, Bytes::from(i.to_string()), revision)
            .await
            .unwrap_or_else(|e| panic!("update {i}: {e}"));
        written.push((revision, i.to_string()));
    }
    let mut delivered = Vec::new();
    while delivered.len() < written.len() {
        let event = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event within 10 s")
            .expect("the watch goes on")
            .unwrap_or_else(|e| panic!("the watch failed: {e}"));
        delivered.push((
            event.mod_revision,
            String::from_utf8(event.value.to_vec()).expect("UTF-8 value"),
        ));
    }
    assert_eq!(
        delivered, written,
        "the lagging watcher got every update once, in order"
    );
}

/// A watcher that falls behind the compaction point gets `Compacted` instead of a silent gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_watcher_overtaken_by_compaction_gets_compacted() {
    let dir = temp_dir();
    let options = SqliteOptions {
        event_buffer: 4,
        ..SqliteOptions::default()
    };
    let store = open_in(&dir, options).await;
    let key = "/registry/leases/default/holder";
    let start = store
        .create(key, Bytes::from_static(b"0"))
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    let mut stream = store
        .watch("/registry/leases/", start)
        .await
        .unwrap_or_else(|e| panic!("watch: {e}"));
    let mut revision = start;
    for i in 1..=50 {
        revision = store
            .update(key, Bytes::from(i.to_string()), revision)
            .await
            .unwrap_or_else(|e| panic!("update {i}: {e}"));
    }
    store
        .compact(revision)
        .await
        .unwrap_or_else(|e| panic!("compact: {e}"));
    let first = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an answer within 10 s")
        .expect("the watch reports before it ends");
    match first {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => assert_eq!((requested, compacted), (start, revision)),
        other => panic!("an overtaken watcher got {other:?}, expected Compacted"),
    }
    assert!(
        stream.next().await.is_none(),
        "the watch ends after Compacted"
    );
}

/// Compaction bounds the file: only the newest row of each live key stays below the point.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_deletes_superseded_rows() {
    let dir = temp_dir();
    let options = SqliteOptions {
        compaction_chunk: 64,
        ..SqliteOptions::default()
    };
    let store = open_in(&dir, options).await;
    let live = "/registry/leases/default/live";
    let mut revision = store
        .create(live, Bytes::from_static(b"0"))
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    for i in 1..=500 {
        revision = store
            .update(live, Bytes::from(i.to_string()), revision)
            .await
            .unwrap_or_else(|e| panic!("update: {e}"));
    }
    for i in 0..100 {
        let key = format!("/registry/leases/default/gone-{i}");
        store
            .create(&key, Bytes::from_static(b"x"))
            .await
            .unwrap_or_else(|e| panic!("create {key}: {e}"));
        store
            .delete(&key, None)
            .await
            .unwrap_or_else(|e| panic!("delete {key}: {e}"));
    }
    let point = store.current_revision().await.expect("current revision");
    store
        .compact(point)
        .await
        .unwrap_or_else(|e| panic!("compact: {e}"));
    let path = store.path().to_path_buf();
    let rows: i64 = rusqlite::Connection::open(&path)
        .and_then(|conn| conn.query_row("SELECT COUNT(*) FROM log", [], |row| row.get(0)))
        .unwrap_or_else(|e| panic!("count rows in {}: {e}", path.display()));
    assert_eq!(
        rows, 1,
        "after compaction only the live key's newest row remains"
    );
    let kv = store
        .get(live, None)
        .await
        .expect("get")
        .expect("the live key survives");
    assert_eq!((&kv.value[..], kv.mod_revision), (&b"500"[..], revision));
    let listing = store
        .list("/registry/leases/", ListOptions::default())
        .await
        .expect("list");
    assert_eq!(listing.items.len(), 1, "no deleted key came back");
}

/// The compactor keeps only the configured history: a watch from the beginning becomes
/// `Compacted` while one from a recent revision works.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_compactor_keeps_recent_history() {
    let dir = temp_dir();
    let store: Arc<dyn Store> = Arc::new(open_in(&dir, SqliteOptions::default()).await);
    let key = "/registry/leases/default/holder";
    let first = store
        .create(key, Bytes::from_static(b"0"))
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    let mut revision = first;
    for i in 1..=30 {
        revision = store
            .update(key, Bytes::from(i.to_string()), revision)
            .await
            .unwrap_or_else(|e| panic!("update: {e}"));
    }
    let compactor = tokio::spawn(run_compactor(
        Arc::clone(&store),
        CompactionPolicy {
            interval: Duration::from_millis(20),
            retain_revisions: 10,
        },
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match store.watch("/registry/leases/", first).await {
            Err(StoreError::Compacted { compacted, .. }) => {
                assert_eq!(compacted, revision - 10, "the compactor keeps 10 revisions");
                break;
            }
            Err(other) => panic!("watch failed with {other}"),
            Ok(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "the compactor did not compact within 10 s"
            ),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    compactor.abort();
    let mut recent = store
        .watch("/registry/leases/", revision - 10)
        .await
        .unwrap_or_else(|e| panic!("a watch within the retained history failed: {e}"));
    let event = tokio::time::timeout(Duration::from_secs(10), recent.next())
        .await
        .expect("an event within 10 s")
        .expect("the watch goes on")
        .unwrap_or_else(|e| panic!("the watch failed: {e}"));
    assert_eq!(
        event.mod_revision,
        revision - 9,
        "the retained history is replayed"
    );
}

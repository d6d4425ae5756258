//! Compaction of a long history interleaves with writes: the embedded store deletes the
//! superseded rows in bounded chunks between write batches, so a create that arrives during a
//! large compaction waits for one chunk, not for the whole compaction (kine's compaction
//! holds the write path for its whole length).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use keelson_store::{SqliteOptions, SqliteStore, Store};

/// Keys whose updates make the history.
const KEYS: usize = 200;
/// Revisions of history the compaction removes.
const REVISIONS: usize = 40_000;
/// Creates in flight during the compaction.
const WRITERS: usize = 16;

/// Writes `REVISIONS` revisions: each of `KEYS` keys created, then updated round-robin by the
/// worker that owns it.
async fn fill(store: &Arc<SqliteStore>) {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..KEYS)
        .map(|k| {
            let (store, next) = (Arc::clone(store), Arc::clone(&next));
            tokio::spawn(async move {
                let key = format!("/registry/configmaps/history/key-{k:04}");
                let value = Bytes::from(vec![b'h'; 300]);
                let mut revision = 0;
                while next.fetch_add(1, Ordering::Relaxed) < REVISIONS {
                    let written = if revision == 0 {
                        store.create(&key, value.clone()).await
                    } else {
                        store.update(&key, value.clone(), revision).await
                    };
                    revision = written.unwrap_or_else(|e| panic!("write {key}: {e}"));
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("fill worker panicked");
    }
}

/// Creates keep being answered while a compaction of tens of thousands of revisions runs, and
/// the slowest of them waits far less than the compaction takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_proceed_during_a_large_compaction() {
    let dir = tempfile::Builder::new()
        .prefix("keelson-store-")
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
    let store = Arc::new(
        SqliteStore::open(dir.path().join("store.db"), SqliteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("cannot open the store: {e}")),
    );
    fill(&store).await;
    let point = store.current_revision().await.expect("current revision");
    assert!(
        point >= REVISIONS as i64,
        "the history has {point} revisions"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut slowest = Duration::ZERO;
                let mut created = 0_usize;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("/registry/configmaps/during/w{w}-{created}");
                    let sent = Instant::now();
                    store
                        .create(&key, Bytes::from_static(b"during"))
                        .await
                        .unwrap_or_else(|e| panic!("create {key} during the compaction: {e}"));
                    slowest = slowest.max(sent.elapsed());
                    created += 1;
                }
                (created, slowest)
            })
        })
        .collect();
    // Let the writers get going, so the compaction starts under load.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let writes_at_the_start = store.stats().writes;
    let started = Instant::now();
    store
        .compact(point)
        .await
        .unwrap_or_else(|e| panic!("compact to {point}: {e}"));
    let took = started.elapsed();
    let writes_at_the_end = store.stats().writes;
    stop.store(true, Ordering::Relaxed);
    let mut created = 0;
    let mut slowest = Duration::ZERO;
    for writer in writers {
        let (n, s) = writer.await.expect("writer panicked");
        created += n;
        slowest = slowest.max(s);
    }

    let during = writes_at_the_end - writes_at_the_start;
    assert!(
        during >= 100,
        "only {during} creates were answered during a compaction of {point} revisions that \
         took {took:?}: compaction shuts writes out"
    );
    // A compaction that shut writes out would make the writers that were waiting when it
    // began wait for all of it; half of it is a bound a loaded machine does not reach.
    assert!(
        slowest * 2 < took,
        "the slowest create ({slowest:?}) waited about as long as the whole compaction \
         ({took:?}): compaction is not interleaved with writes"
    );
    assert!(
        created as u64 >= during,
        "{created} creates, {during} during"
    );
    // The history is gone: the compacted revisions' superseded rows were deleted.
    let path = store.path().to_path_buf();
    let rows: i64 = rusqlite::Connection::open(&path)
        .and_then(|conn| {
            conn.query_row(
                "SELECT COUNT(*) FROM log WHERE name LIKE '/registry/configmaps/history/%'",
                [],
                |row| row.get(0),
            )
        })
        .unwrap_or_else(|e| panic!("count rows in {}: {e}", path.display()));
    assert_eq!(
        rows, KEYS as i64,
        "after the compaction only each history key's newest row remains"
    );
}

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;

use super::{inspect, restore, save};
use crate::{ListOptions, SqliteOptions, SqliteStore, Store, snapshot::SnapshotError};

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("keelson-snapshot-")
        .tempdir()
        .expect("a temp dir")
}

async fn open(path: &std::path::Path) -> SqliteStore {
    SqliteStore::open(path, SqliteOptions::default())
        .await
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()))
}

/// `(key, value, create_revision, mod_revision)` of every live key at `revision`.
async fn state(store: &dyn Store, revision: i64) -> Vec<(String, Bytes, i64, i64)> {
    let listed = store
        .list(
            "/",
            ListOptions {
                revision: Some(revision),
                ..ListOptions::default()
            },
        )
        .await
        .expect("list");
    listed
        .items
        .into_iter()
        .map(|kv| (kv.key, kv.value, kv.create_revision, kv.mod_revision))
        .collect()
}

/// A snapshot taken while writers commit is the store at one revision: restored elsewhere it
/// lists exactly what the live store listed at that revision, and the next write continues
/// after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_snapshot_under_writes_restores_the_store_at_its_revision() {
    let dir = temp_dir();
    let db = dir.path().join("live").join("state.db");
    let store = Arc::new(open(&db).await);
    for i in 0..50 {
        store
            .create(&format!("/registry/a/{i}"), Bytes::from(format!("v{i}")))
            .await
            .expect("create");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut i = 0_u64;
            while !stop.load(Ordering::Relaxed) && i < 100_000 {
                let key = format!("/registry/a/{}", i % 50);
                let current = store.get(&key, None).await.expect("get").expect("exists");
                store
                    .update(&key, Bytes::from(format!("u{i}")), current.mod_revision)
                    .await
                    .expect("update");
                if i.is_multiple_of(7) {
                    let extra = format!("/registry/b/{i}");
                    store
                        .create(&extra, Bytes::from("x"))
                        .await
                        .expect("create");
                    if i.is_multiple_of(14) {
                        store.delete(&extra, None).await.expect("delete");
                    }
                }
                i += 1;
            }
            i
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let file = dir.path().join("snap").join("one.db");
    let info = {
        let (db, file) = (db.clone(), file.clone());
        tokio::task::spawn_blocking(move || save(&db, &file))
            .await
            .expect("join")
            .expect("save")
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let written = writer.await.expect("writer");
    assert!(written > 20, "only {written} writes ran during the test");
    let revision = info.revision.expect("a revision");
    let live_now = store.current_revision().await.expect("revision");
    assert!(
        revision > 50 && revision < live_now,
        "the snapshot's revision {revision} is not between the setup and the end ({live_now})"
    );
    let expected = state(store.as_ref(), revision).await;
    assert_eq!(info.keys, Some(expected.len() as u64));
    assert!(!file.with_extension("db.partial").exists());

    let restored_db = dir.path().join("restored").join("state.db");
    let restored_info = restore(&file, &restored_db, false).expect("restore");
    assert_eq!(restored_info.revision, Some(revision));
    let restored = open(&restored_db).await;
    assert_eq!(restored.current_revision().await.expect("rev"), revision);
    assert_eq!(state(&restored, revision).await, expected);
    let next = restored
        .create("/registry/c/after", Bytes::from("y"))
        .await
        .expect("create after restore");
    assert_eq!(next, revision + 1);

    // The restored store is open: a second restore is refused, with or without --force.
    let in_use = restore(&file, &restored_db, true).expect_err("restore over an open store");
    assert!(
        matches!(in_use, SnapshotError::InUse { .. }),
        "expected InUse, got {in_use}"
    );
    drop(restored);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let has_state = restore(&file, &restored_db, false).expect_err("restore over a store");
    assert!(
        has_state.to_string().contains("already holds a store"),
        "{has_state}"
    );
    // Asked to, the restore replaces the store, and the write made after the first restore is
    // gone again.
    restore(&file, &restored_db, true).expect("restore with replace");
    let again = open(&restored_db).await;
    assert_eq!(again.current_revision().await.expect("rev"), revision);
    assert_eq!(
        again.get("/registry/c/after", None).await.expect("get"),
        None
    );
}

#[test]
fn foreign_and_damaged_files_are_refused() {
    let dir = temp_dir();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello, this is not a database\n".repeat(100)).expect("write");
    let error = inspect(&text).expect_err("a text file");
    assert!(
        error.to_string().contains("not a SQLite database"),
        "{error}"
    );

    let other = dir.path().join("other.db");
    let conn = rusqlite::Connection::open(&other).expect("open");
    conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
        .expect("a table");
    drop(conn);
    let error = inspect(&other).expect_err("another application's database");
    assert!(error.to_string().contains("no keelson store"), "{error}");

    // A keelson snapshot with a page overwritten in the middle.
    let db = dir.path().join("state.db");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let store = open(&db).await;
        for i in 0..300 {
            store
                .create(&format!("/k/{i}"), Bytes::from(vec![b'v'; 400]))
                .await
                .expect("create");
        }
    });
    let good = dir.path().join("good.db");
    save(&db, &good).expect("save");
    let mut bytes = std::fs::read(&good).expect("read");
    assert!(
        bytes.len() > 3 * 4096,
        "the snapshot is only {} bytes",
        bytes.len()
    );
    let page = bytes.len() / 4096 / 2 * 4096;
    bytes[page..page + 4096].fill(0x5a);
    let bad = dir.path().join("bad.db");
    std::fs::write(&bad, &bytes).expect("write");
    let error = inspect(&bad).expect_err("a damaged snapshot");
    assert!(
        matches!(error, SnapshotError::NotASnapshot { .. }),
        "expected NotASnapshot, got {error}"
    );
    let target = dir.path().join("target").join("state.db");
    restore(&bad, &target, false).expect_err("restore of a damaged snapshot");
    assert!(
        !target.exists(),
        "a refused restore left {}",
        target.display()
    );

    let error = save(&dir.path().join("missing.db"), &dir.path().join("x.db"))
        .expect_err("save without a store");
    assert!(
        error.to_string().contains("there is no SQLite store"),
        "{error}"
    );
}

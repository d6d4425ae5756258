//! The embedded store: SQLite through rusqlite, laid out like k3s's kine.
//!
//! One table, `log`, is the history: every write appends a row whose `id` is the write's
//! revision (`INTEGER PRIMARY KEY AUTOINCREMENT`, so revisions are never reused, even after
//! compaction deletes the newest rows). A row records the key (`name`), whether the write
//! created or deleted it, the key's `create_revision`, the row it superseded
//! (`prev_revision`), the new value and the previous one (`old_value`, so a watch event carries
//! its previous value without a second lookup). The state of a key at revision R is its newest
//! row with `id <= R`, unless that row is a delete.
//!
//! Writes go through one writer thread that owns the only write connection: it takes every
//! request waiting in its queue (up to [`SqliteOptions::max_batch`]) and commits them in one
//! transaction, so one fsync (`synchronous=FULL` in WAL mode) acknowledges many writes (group
//! commit). After the commit it publishes the batch's events to the watchers and then answers
//! the callers. Reads run on a small pool of read connections on tokio's blocking threads; in
//! WAL mode they never wait for the writer.
//!
//! Compaction to revision C first records C (reads below it fail from then on) and then deletes,
//! in chunks between write batches, every row that a newer row at or below C supersedes, and the
//! delete rows at or below C. The newest row of every live key stays. An interrupted compaction
//! resumes when the store is opened again.

mod read;
mod writer;

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
        mpsc,
    },
};

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::{broadcast, oneshot};

use crate::{
    Deleted, KeyValue, ListOptions, ListResult, Revision, Store, StoreError, WatchEvent,
    WatchStream,
};
use read::{KeyRange, ReadPool};
use writer::{Request, WriteOp, Writer};

/// Tuning of a [`SqliteStore`]. The defaults suit a control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Read connections (reads beyond this many wait for one to be free).
    pub read_connections: usize,
    /// The most writes committed in one transaction.
    pub max_batch: usize,
    /// Committed batches kept for watchers that are slow to take them; a watcher that falls
    /// further behind catches up from the table, so this bounds memory, not correctness.
    pub event_buffer: usize,
    /// Revisions deleted per compaction transaction (writes are served between chunks).
    pub compaction_chunk: i64,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            read_connections: 4,
            max_batch: 1024,
            event_buffer: 256,
            compaction_chunk: 1000,
        }
    }
}

/// Counters of the writer thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SqliteStats {
    /// Transactions committed (each one fsync) for writes.
    pub commits: u64,
    /// Writes committed (successful creates, updates and deletes).
    pub writes: u64,
}

/// State shared by the store handle, the writer thread and the readers.
#[derive(Debug, Default)]
struct Shared {
    /// The revision of the last committed write.
    current: AtomicI64,
    commits: AtomicU64,
    writes: AtomicU64,
}

/// The embedded SQLite store. Dropping it stops the writer thread (after its current batch) and
/// ends every watch.
pub struct SqliteStore {
    path: PathBuf,
    requests: mpsc::Sender<Request>,
    events: broadcast::Sender<Arc<[WatchEvent]>>,
    readers: Arc<ReadPool>,
    shared: Arc<Shared>,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field(
                "current_revision",
                &self.shared.current.load(Ordering::Acquire),
            )
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store in the SQLite file `path`, e.g.
    /// `DATA_DIR/store.db`, and starts its writer thread.
    pub async fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let (events, _) = broadcast::channel(options.event_buffer.max(1));
        let shared = Arc::new(Shared::default());
        let (requests, receiver) = mpsc::channel();
        let writer = {
            let path = path.clone();
            let events = events.clone();
            let shared = Arc::clone(&shared);
            let options = options.clone();
            tokio::task::spawn_blocking(move || Writer::open(&path, &options, events, shared))
                .await
                .map_err(|_| StoreError::Closed)??
        };
        std::thread::Builder::new()
            .name("keelson-store-writer".into())
            .spawn(move || writer.run(&receiver))
            .map_err(|e| StoreError::Open {
                path: path.clone(),
                source: Box::new(e),
            })?;
        let readers = Arc::new(ReadPool::new(path.clone(), options.read_connections));
        Ok(Self {
            path,
            requests,
            events,
            readers,
            shared,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many transactions and writes the writer has committed since the store was opened;
    /// `writes / commits` is the group-commit batch size.
    pub fn stats(&self) -> SqliteStats {
        SqliteStats {
            commits: self.shared.commits.load(Ordering::Relaxed),
            writes: self.shared.writes.load(Ordering::Relaxed),
        }
    }

    async fn write(&self, op: WriteOp) -> Result<writer::Written, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Write { op, reply })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision, StoreError> {
        let op = WriteOp::Create {
            key: key.to_owned(),
            value,
        };
        Ok(self.write(op).await?.revision)
    }

    async fn get(
        &self,
        key: &str,
        revision: Option<Revision>,
    ) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_owned();
        self.readers
            .run(move |conn| read::get(conn, &key, revision))
            .await
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: Revision,
    ) -> Result<Revision, StoreError> {
        let op = WriteOp::Update {
            key: key.to_owned(),
            value,
            expected: expected_mod_revision,
        };
        Ok(self.write(op).await?.revision)
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<Deleted, StoreError> {
        let op = WriteOp::Delete {
            key: key.to_owned(),
            expected: expected_mod_revision,
        };
        let written = self.write(op).await?;
        let previous = written.previous.ok_or(StoreError::NotFound {
            key: key.to_owned(),
        })?;
        Ok(Deleted {
            revision: written.revision,
            previous,
        })
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult, StoreError> {
        let range = KeyRange::prefix(prefix);
        self.readers
            .run(move |conn| read::list(conn, &range, &options))
            .await
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        // Subscribe before reading the history, so nothing committed in between is missed.
        let live = self.events.subscribe();
        read::watch(
            Arc::clone(&self.readers),
            KeyRange::prefix(prefix),
            from_revision,
            live,
        )
        .await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request::Compact { revision, reply })
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.shared.current.load(Ordering::Acquire))
    }
}

/// Applies the connection settings both the writer and the readers use.
fn configure(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(StoreError::sqlite("busy_timeout"))?;
    Ok(())
}

/// Reads `(compacted revision, current revision)` as seen by `conn`'s current transaction.
/// The statement is cached on the connection: every read runs it, and parsing it each time
/// was the top cost of a read in profiles.
fn revisions(conn: &rusqlite::Connection) -> Result<(Revision, Revision), StoreError> {
    conn.prepare_cached(
        "SELECT (SELECT value FROM meta WHERE key = 'compact_revision'), \
                COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'log'), 0)",
    )
    .and_then(|mut statement| statement.query_row([], |row| Ok((row.get(0)?, row.get(1)?))))
    .map_err(StoreError::sqlite("read revisions"))
}

fn key_string(name: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(name).map_err(|e| StoreError::InvalidKey {
        key: e.into_bytes(),
    })
}

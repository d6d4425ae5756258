//! The writer thread: the only connection that writes, committing queued writes together.

use std::{
    fs::{File, TryLockError},
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering, mpsc},
    time::{Duration, Instant},
};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{broadcast, oneshot};

use super::{Shared, SqliteOptions, configure, key_string, revisions};
use crate::{EventKind, KeyValue, Revision, StoreError, WatchEvent};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name BLOB NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    value BLOB NOT NULL,
    old_value BLOB
);
CREATE INDEX IF NOT EXISTS log_name_id ON log (name, id);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value)
    VALUES ('schema_version', 1), ('compact_revision', 0), ('compact_done', 0);
";

/// A request to the writer thread.
pub(super) enum Request {
    Write {
        op: WriteOp,
        reply: oneshot::Sender<Result<Written, StoreError>>,
    },
    Compact {
        revision: Revision,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
}

/// A conditional write.
pub(super) enum WriteOp {
    Create {
        key: String,
        value: Bytes,
    },
    Update {
        key: String,
        value: Bytes,
        expected: Revision,
    },
    Delete {
        key: String,
        expected: Option<Revision>,
    },
}

/// A committed write.
pub(super) struct Written {
    pub(super) revision: Revision,
    /// For deletes: the key as it was.
    pub(super) previous: Option<KeyValue>,
}

/// A write applied inside the open transaction (not yet committed).
struct Applied {
    written: Written,
    event: WatchEvent,
}

type WriteReply = oneshot::Sender<Result<Written, StoreError>>;

pub(super) struct Writer {
    /// Held (flock) while the writer lives: one writer per database file.
    _lock: File,
    conn: Connection,
    /// The last committed revision.
    revision: Revision,
    /// The compaction point: reads below it fail.
    compacted: Revision,
    /// Rows are cleaned up to here; below `compacted` while a compaction is in progress.
    compact_done: Revision,
    /// Callers of `compact` waiting for the cleanup to finish.
    compact_waiters: Vec<oneshot::Sender<Result<(), StoreError>>>,
    /// Set when a cleanup step failed; the next `compact` call retries.
    compact_stalled: bool,
    options: SqliteOptions,
    events: broadcast::Sender<Arc<[WatchEvent]>>,
    shared: Arc<Shared>,
}

impl Writer {
    /// Opens the write connection, creates the schema and reads where the log stands.
    pub(super) fn open(
        path: &Path,
        options: &SqliteOptions,
        events: broadcast::Sender<Arc<[WatchEvent]>>,
        shared: Arc<Shared>,
    ) -> Result<Self, StoreError> {
        let open_error = |source: Box<dyn std::error::Error + Send + Sync>| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_error(Box::new(e)))?;
        }
        let lock = lock_exclusively(path).map_err(open_error)?;
        let conn = Connection::open(path).map_err(|e| open_error(Box::new(e)))?;
        configure(&conn)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(StoreError::sqlite("enable WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_error(
                format!("SQLite refused WAL mode (journal_mode is {mode})").into(),
            ));
        }
        // FULL: in WAL mode the log is fsynced at every commit, so an acknowledged write
        // survives a crash or power loss (NORMAL would only be crash-safe for the process).
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(StoreError::sqlite("set synchronous=FULL"))?;
        conn.execute_batch(SCHEMA)
            .map_err(StoreError::sqlite("create the schema"))?;
        let (compacted, revision) = revisions(&conn)?;
        let compact_done = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'compact_done'",
                [],
                |row| row.get(0),
            )
            .map_err(StoreError::sqlite("read the compaction progress"))?;
        shared.current.store(revision, Ordering::Release);
        Ok(Self {
            _lock: lock,
            conn,
            revision,
            compacted,
            compact_done,
            compact_waiters: Vec::new(),
            compact_stalled: false,
            options: options.clone(),
            events,
            shared,
        })
    }

    /// Serves requests until every sender is gone (the store was dropped).
    pub(super) fn run(mut self, requests: &mpsc::Receiver<Request>) {
        loop {
            let compacting = self.compact_done < self.compacted && !self.compact_stalled;
            let first = if compacting {
                match requests.try_recv() {
                    Ok(request) => Some(request),
                    Err(mpsc::TryRecvError::Empty) => None,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            } else {
                match requests.recv() {
                    Ok(request) => Some(request),
                    Err(mpsc::RecvError) => return,
                }
            };
            if let Some(first) = first {
                let mut batch = Vec::new();
                let mut next = Some(first);
                while let Some(request) = next.take() {
                    match request {
                        Request::Write { op, reply } => batch.push((op, reply)),
                        Request::Compact { revision, reply } => {
                            self.start_compaction(revision, reply);
                        }
                    }
                    if batch.len() < self.options.max_batch {
                        next = requests.try_recv().ok();
                    }
                }
                if !batch.is_empty() {
                    self.commit(batch);
                }
            }
            if self.compact_done < self.compacted && !self.compact_stalled {
                self.compaction_step();
            }
        }
    }

    /// Commits `batch` in one transaction and answers every caller. If the transaction fails
    /// (a SQLite error, not a failed condition), each write is retried in a transaction of its
    /// own so that every caller gets its own answer.
    fn commit(&mut self, batch: Vec<(WriteOp, WriteReply)>) {
        let (ops, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        match self.apply(&ops) {
            Ok(outcomes) => self.publish(outcomes, replies),
            Err(error) if ops.len() == 1 => {
                if let Some(reply) = replies.into_iter().next() {
                    let _ = reply.send(Err(error));
                }
            }
            Err(error) => {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    writes = ops.len(),
                    "a group commit failed; retrying its writes one by one"
                );
                for (op, reply) in ops.into_iter().zip(replies) {
                    match self.apply(std::slice::from_ref(&op)) {
                        Ok(outcomes) => self.publish(outcomes, vec![reply]),
                        Err(error) => {
                            let _ = reply.send(Err(error));
                        }
                    }
                }
            }
        }
    }

    /// Applies `ops` in one transaction and commits it. The inner results are the writes'
    /// conditions (a failed condition writes nothing and does not spoil the others).
    fn apply(&mut self, ops: &[WriteOp]) -> Result<Vec<Result<Applied, StoreError>>, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::sqlite("begin a write transaction"))?;
        let mut next = self.revision;
        let mut outcomes = Vec::with_capacity(ops.len());
        for op in ops {
            outcomes.push(apply_one(&tx, op, &mut next)?);
        }
        tx.commit()
            .map_err(StoreError::sqlite("commit a write transaction"))?;
        self.revision = next;
        Ok(outcomes)
    }

    /// After a commit: publishes the revision and the events, then answers the callers (in
    /// that order, so a caller that got its answer sees its write everywhere).
    fn publish(&self, outcomes: Vec<Result<Applied, StoreError>>, replies: Vec<WriteReply>) {
        self.shared.current.store(self.revision, Ordering::Release);
        let mut events = Vec::new();
        let mut answers = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            answers.push(outcome.map(|applied| {
                events.push(applied.event);
                applied.written
            }));
        }
        if !events.is_empty() {
            self.shared.commits.fetch_add(1, Ordering::Relaxed);
            self.shared
                .writes
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            // No receivers is fine: nobody watches.
            let _ = self.events.send(events.into());
        }
        for (answer, reply) in answers.into_iter().zip(replies) {
            let _ = reply.send(answer);
        }
    }

    fn start_compaction(
        &mut self,
        revision: Revision,
        reply: oneshot::Sender<Result<(), StoreError>>,
    ) {
        if revision > self.revision {
            let _ = reply.send(Err(StoreError::FutureRevision {
                requested: revision,
                current: self.revision,
            }));
            return;
        }
        if revision > self.compacted {
            let recorded = self
                .conn
                .execute(
                    "UPDATE meta SET value = ?1 WHERE key = 'compact_revision'",
                    [revision],
                )
                .map_err(StoreError::sqlite("record the compaction revision"));
            if let Err(error) = recorded {
                let _ = reply.send(Err(error));
                return;
            }
            self.compacted = revision;
        }
        self.compact_stalled = false;
        if self.compact_done < self.compacted {
            self.compact_waiters.push(reply);
        } else {
            let _ = reply.send(Ok(()));
        }
    }

    /// Deletes the superseded rows of one chunk of revisions in `(compact_done, compacted]`.
    fn compaction_step(&mut self) {
        let low = self.compact_done;
        let high = (low + self.options.compaction_chunk.max(1)).min(self.compacted);
        match self.delete_superseded(low, high) {
            Ok(()) => {
                self.compact_done = high;
                if high >= self.compacted {
                    for waiter in self.compact_waiters.drain(..) {
                        let _ = waiter.send(Ok(()));
                    }
                }
            }
            Err(error) => {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    from = low,
                    to = high,
                    "compaction step failed"
                );
                self.compact_stalled = true;
                let error = Arc::new(error);
                for waiter in self.compact_waiters.drain(..) {
                    let _ = waiter.send(Err(StoreError::CompactionFailed {
                        revision: self.compacted,
                        source: Arc::clone(&error),
                    }));
                }
            }
        }
    }

    fn delete_superseded(&mut self, low: Revision, high: Revision) -> Result<(), StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StoreError::sqlite("begin a compaction transaction"))?;
        // Rows superseded by a write in the chunk, then the deletes in the chunk (the rows they
        // superseded went with the first statement, in this chunk or an earlier one).
        tx.execute(
            "DELETE FROM log WHERE id IN \
             (SELECT prev_revision FROM log WHERE id > ?1 AND id <= ?2 AND prev_revision > 0)",
            [low, high],
        )
        .map_err(StoreError::sqlite("delete superseded rows"))?;
        tx.execute(
            "DELETE FROM log WHERE id > ?1 AND id <= ?2 AND deleted = 1",
            [low, high],
        )
        .map_err(StoreError::sqlite("delete tombstones"))?;
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'compact_done'",
            [high],
        )
        .map_err(StoreError::sqlite("record the compaction progress"))?;
        tx.commit()
            .map_err(StoreError::sqlite("commit a compaction transaction"))
    }
}

/// How long `open` waits for another store on the same file to let go (a store just dropped in
/// this process releases it within microseconds, when its writer thread ends).
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Takes an exclusive lock on `<path>.lock`. The revision counter and the watchers' events live
/// in the writer, so a second writer on the same file (a second control plane on one data
/// directory) would hand out revisions its watchers never see.
fn lock_exclusively(path: &Path) -> Result<File, Box<dyn std::error::Error + Send + Sync>> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(TryLockError::WouldBlock) => {
                return Err(format!(
                    "{} is locked: another keelson store has this database open",
                    lock_path.display()
                )
                .into());
            }
            Err(TryLockError::Error(error)) => return Err(Box::new(error)),
        }
    }
}

/// The newest row of a key.
struct Latest {
    id: Revision,
    deleted: bool,
    create_revision: Revision,
    value: Bytes,
}

impl Latest {
    fn key_value(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.id,
        }
    }
}

/// Applies one write inside `tx`, taking revisions from `next`. The outer error is a SQLite
/// failure (the transaction is lost), the inner one a failed condition (nothing written).
fn apply_one(
    tx: &rusqlite::Transaction<'_>,
    op: &WriteOp,
    next: &mut Revision,
) -> Result<Result<Applied, StoreError>, StoreError> {
    let key = match op {
        WriteOp::Create { key, .. } | WriteOp::Update { key, .. } | WriteOp::Delete { key, .. } => {
            key
        }
    };
    let latest = tx
        .prepare_cached(
            "SELECT id, deleted, create_revision, value FROM log \
             WHERE name = ?1 ORDER BY id DESC LIMIT 1",
        )
        .and_then(|mut statement| {
            statement
                .query_row([key.as_bytes()], |row| {
                    Ok(Latest {
                        id: row.get(0)?,
                        deleted: row.get(1)?,
                        create_revision: row.get(2)?,
                        value: Bytes::from(row.get::<_, Vec<u8>>(3)?),
                    })
                })
                .optional()
        })
        .map_err(StoreError::sqlite("read a key's newest row"))?;
    let live = latest.as_ref().filter(|latest| !latest.deleted);
    let revision = *next + 1;
    let prev_revision = latest.as_ref().map_or(0, |latest| latest.id);
    let applied = match (op, live) {
        (WriteOp::Create { key, .. }, Some(_)) => {
            return Ok(Err(StoreError::AlreadyExists { key: key.clone() }));
        }
        (WriteOp::Update { key, .. } | WriteOp::Delete { key, .. }, None) => {
            return Ok(Err(StoreError::NotFound { key: key.clone() }));
        }
        (WriteOp::Update { key, expected, .. }, Some(live))
        | (
            WriteOp::Delete {
                key,
                expected: Some(expected),
            },
            Some(live),
        ) if live.id != *expected => {
            return Ok(Err(StoreError::Conflict {
                key: key.clone(),
                expected: *expected,
                actual: live.id,
            }));
        }
        (WriteOp::Create { key, value }, None) => {
            insert(
                tx,
                &NewRow {
                    revision,
                    key,
                    created: true,
                    deleted: false,
                    create_revision: revision,
                    prev_revision,
                    value,
                    old_value: None,
                },
            )?;
            Applied {
                written: Written {
                    revision,
                    previous: None,
                },
                event: WatchEvent {
                    kind: EventKind::Added,
                    key: key.clone(),
                    value: value.clone(),
                    mod_revision: revision,
                    prev_value: None,
                },
            }
        }
        (WriteOp::Update { key, value, .. }, Some(live)) => {
            let old = &live.value;
            insert(
                tx,
                &NewRow {
                    revision,
                    key,
                    created: false,
                    deleted: false,
                    create_revision: live.create_revision,
                    prev_revision: live.id,
                    value,
                    old_value: Some(old),
                },
            )?;
            Applied {
                written: Written {
                    revision,
                    previous: None,
                },
                event: WatchEvent {
                    kind: EventKind::Modified,
                    key: key.clone(),
                    value: value.clone(),
                    mod_revision: revision,
                    prev_value: Some(old.clone()),
                },
            }
        }
        (WriteOp::Delete { key, .. }, Some(live)) => {
            let old = &live.value;
            // A delete row keeps the last value, so the watch event can carry it.
            insert(
                tx,
                &NewRow {
                    revision,
                    key,
                    created: false,
                    deleted: true,
                    create_revision: live.create_revision,
                    prev_revision: live.id,
                    value: old,
                    old_value: Some(old),
                },
            )?;
            Applied {
                written: Written {
                    revision,
                    previous: Some(live.key_value(key)),
                },
                event: WatchEvent {
                    kind: EventKind::Deleted,
                    key: key.clone(),
                    value: old.clone(),
                    mod_revision: revision,
                    prev_value: Some(old.clone()),
                },
            }
        }
    };
    *next = revision;
    Ok(Ok(applied))
}

/// A row to append to the log.
struct NewRow<'a> {
    revision: Revision,
    key: &'a str,
    created: bool,
    deleted: bool,
    create_revision: Revision,
    prev_revision: Revision,
    value: &'a Bytes,
    old_value: Option<&'a Bytes>,
}

fn insert(tx: &rusqlite::Transaction<'_>, row: &NewRow<'_>) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO log \
         (id, name, created, deleted, create_revision, prev_revision, value, old_value) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut statement| {
        statement.execute(params![
            row.revision,
            row.key.as_bytes(),
            row.created,
            row.deleted,
            row.create_revision,
            row.prev_revision,
            &row.value[..],
            row.old_value.map(|old| &old[..]),
        ])
    })
    .map_err(StoreError::sqlite("append to the log"))?;
    Ok(())
}

/// Turns a log row into the watch event it stands for.
pub(super) fn event_from_row(
    name: Vec<u8>,
    id: Revision,
    (created, deleted): (bool, bool),
    value: Vec<u8>,
    old_value: Option<Vec<u8>>,
) -> Result<WatchEvent, StoreError> {
    let kind = if created {
        EventKind::Added
    } else if deleted {
        EventKind::Deleted
    } else {
        EventKind::Modified
    };
    Ok(WatchEvent {
        kind,
        key: key_string(name)?,
        value: Bytes::from(value),
        mod_revision: id,
        prev_value: old_value.map(Bytes::from),
    })
}

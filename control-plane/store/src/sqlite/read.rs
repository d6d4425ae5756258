//! Reads: a pool of read connections on tokio's blocking threads, and the watch stream.

use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
};

use bytes::Bytes;
use futures_util::stream;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::{Semaphore, broadcast};

use super::{configure, key_string, revisions, writer::event_from_row};
use crate::{
    KeyValue, ListOptions, ListResult, Revision, StoreError, WatchEvent, WatchStream, prefix_end,
};

/// History rows a watch reads per query while catching up.
const HISTORY_PAGE: usize = 512;

/// Read connections, opened on first use and reused.
#[derive(Debug)]
pub(super) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
}

impl ReadPool {
    pub(super) fn new(path: PathBuf, size: usize) -> Self {
        Self {
            path,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size.max(1))),
        }
    }

    /// Runs `read` on a read connection on a blocking thread.
    pub(super) async fn run<T, F>(self: &Arc<Self>, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let pool = Arc::clone(self);
        let task = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let idle = pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let mut conn = match idle {
                Some(conn) => conn,
                None => pool.open()?,
            };
            let result = read(&mut conn);
            pool.idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
            result
        });
        match task.await {
            Ok(result) => result,
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(_) => Err(StoreError::Closed),
        }
    }

    fn open(&self) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StoreError::Open {
            path: self.path.clone(),
            source: Box::new(e),
        })?;
        configure(&conn)?;
        conn.pragma_update(None, "query_only", true)
            .map_err(StoreError::sqlite("set query_only"))?;
        Ok(conn)
    }
}

/// The keys starting with a prefix, as a byte range `[start, end)` (no `end`: to the last key).
#[derive(Debug, Clone)]
pub(super) struct KeyRange {
    prefix: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl KeyRange {
    pub(super) fn prefix(prefix: &str) -> Self {
        Self {
            prefix: prefix.as_bytes().to_vec(),
            end: prefix_end(prefix.as_bytes()),
        }
    }

    fn contains(&self, key: &str) -> bool {
        key.as_bytes().starts_with(&self.prefix)
    }

    /// `AND name < ?N` when the range has an end.
    fn end_clause(&self, parameter: usize) -> String {
        match self.end {
            Some(_) => format!(" AND name < ?{parameter}"),
            None => String::new(),
        }
    }
}

/// Begins a read transaction: every statement in it sees the same snapshot of the log.
fn snapshot(conn: &mut Connection) -> Result<rusqlite::Transaction<'_>, StoreError> {
    conn.transaction_with_behavior(TransactionBehavior::Deferred)
        .map_err(StoreError::sqlite("begin a read transaction"))
}

/// The revision a read at `requested` (or now) is served at, checked against the snapshot's
/// compaction point and current revision.
fn read_revision(conn: &Connection, requested: Option<Revision>) -> Result<Revision, StoreError> {
    let (compacted, current) = revisions(conn)?;
    match requested {
        None => Ok(current),
        Some(requested) if requested <= 0 => Ok(current),
        Some(requested) if requested < compacted => Err(StoreError::Compacted {
            requested,
            compacted,
        }),
        Some(requested) if requested > current => {
            Err(StoreError::FutureRevision { requested, current })
        }
        Some(requested) => Ok(requested),
    }
}

pub(super) fn get(
    conn: &mut Connection,
    key: &str,
    revision: Option<Revision>,
) -> Result<Option<KeyValue>, StoreError> {
    let tx = snapshot(conn)?;
    let revision = read_revision(&tx, revision)?;
    let row = tx
        .prepare_cached(
            "SELECT id, deleted, create_revision, value FROM log \
             WHERE name = ?1 AND id <= ?2 ORDER BY id DESC LIMIT 1",
        )
        .and_then(|mut statement| {
            statement
                .query_row(params![key.as_bytes(), revision], |row| {
                    Ok((
                        row.get::<_, Revision>(0)?,
                        row.get::<_, bool>(1)?,
                        row.get::<_, Revision>(2)?,
                        row.get::<_, Vec<u8>>(3)?,
                    ))
                })
                .optional()
        })
        .map_err(StoreError::sqlite("get a key"))?;
    Ok(row
        .filter(|(_, deleted, _, _)| !deleted)
        .map(|(id, _, create_revision, value)| KeyValue {
            key: key.to_owned(),
            value: Bytes::from(value),
            create_revision,
            mod_revision: id,
        }))
}

pub(super) fn list(
    conn: &mut Connection,
    range: &KeyRange,
    options: &ListOptions,
) -> Result<ListResult, StoreError> {
    let tx = snapshot(conn)?;
    let revision = read_revision(&tx, options.revision)?;
    // The first key to return: the prefix itself, or the smallest key after `start_after`.
    let start = match &options.start_after {
        Some(after) => {
            let mut after = after.as_bytes().to_vec();
            after.push(0);
            after.max(range.prefix.clone())
        }
        None => range.prefix.clone(),
    };
    // One more than asked for, to know whether there are more.
    let limit = options
        .limit
        .map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX - 1) + 1);
    let sql = format!(
        "SELECT log.id, log.name, log.create_revision, log.value FROM log \
         JOIN (SELECT MAX(id) AS id FROM log \
               WHERE name >= ?1 AND id <= ?2{} GROUP BY name) AS newest \
         ON log.id = newest.id \
         WHERE log.deleted = 0 ORDER BY log.name LIMIT ?3",
        range.end_clause(4)
    );
    let mut statement = tx
        .prepare_cached(&sql)
        .map_err(StoreError::sqlite("prepare a list"))?;
    let map = |row: &rusqlite::Row<'_>| {
        Ok((
            row.get::<_, Revision>(0)?,
            row.get::<_, Vec<u8>>(1)?,
            row.get::<_, Revision>(2)?,
            row.get::<_, Vec<u8>>(3)?,
        ))
    };
    let rows = match &range.end {
        Some(end) => statement.query_map(params![start, revision, limit, end], map),
        None => statement.query_map(params![start, revision, limit], map),
    }
    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
    .map_err(StoreError::sqlite("list keys"))?;
    let mut items = rows
        .into_iter()
        .map(|(id, name, create_revision, value)| {
            Ok(KeyValue {
                key: key_string(name)?,
                value: Bytes::from(value),
                create_revision,
                mod_revision: id,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let more = options.limit.is_some_and(|limit| items.len() > limit);
    if let Some(limit) = options.limit {
        items.truncate(limit);
    }
    Ok(ListResult {
        items,
        revision,
        more,
    })
}

/// One page of history read for a watch.
struct HistoryPage {
    events: Vec<WatchEvent>,
    /// Every revision up to here has been read (matching or not).
    through: Revision,
    /// The revision the catch-up runs to.
    target: Revision,
}

/// Reads the changes in `range` after `after` up to `target` (or the snapshot's current
/// revision), at most one page of them. Fails with `Compacted` when `after` is below the
/// compaction point, because the history after it may have lost rows.
fn history_page(
    conn: &mut Connection,
    range: &KeyRange,
    after: Revision,
    target: Option<Revision>,
) -> Result<HistoryPage, StoreError> {
    let tx = snapshot(conn)?;
    let (compacted, current) = revisions(&tx)?;
    if after < compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted,
        });
    }
    let target = target.unwrap_or(current);
    let sql = format!(
        "SELECT id, name, created, deleted, value, old_value FROM log \
         WHERE id > ?1 AND id <= ?2 AND name >= ?3{} ORDER BY id LIMIT ?4",
        range.end_clause(5)
    );
    let mut statement = tx
        .prepare_cached(&sql)
        .map_err(StoreError::sqlite("prepare a history read"))?;
    let map = |row: &rusqlite::Row<'_>| {
        Ok((
            row.get::<_, Revision>(0)?,
            row.get::<_, Vec<u8>>(1)?,
            row.get::<_, bool>(2)?,
            row.get::<_, bool>(3)?,
            row.get::<_, Vec<u8>>(4)?,
            row.get::<_, Option<Vec<u8>>>(5)?,
        ))
    };
    let page_size = HISTORY_PAGE as i64;
    let rows = match &range.end {
        Some(end) => statement.query_map(params![after, target, range.prefix, page_size, end], map),
        None => statement.query_map(params![after, target, range.prefix, page_size], map),
    }
    .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
    .map_err(StoreError::sqlite("read the history"))?;
    let through = match rows.last() {
        Some((id, ..)) if rows.len() == HISTORY_PAGE => *id,
        _ => target.max(after),
    };
    let events = rows
        .into_iter()
        .map(|(id, name, created, deleted, value, old_value)| {
            event_from_row(name, id, (created, deleted), value, old_value)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HistoryPage {
        events,
        through,
        target,
    })
}

/// A watch's state between events.
struct Watch {
    pool: Arc<ReadPool>,
    range: Arc<KeyRange>,
    live: broadcast::Receiver<Arc<[WatchEvent]>>,
    /// Events ready to hand out.
    ready: VecDeque<WatchEvent>,
    /// Every revision up to here has been handled (handed out, queued, or not in the range).
    through: Revision,
    /// While catching up from the table: the revision to catch up to, once known.
    catch_up: Option<Option<Revision>>,
    ended: bool,
}

/// Starts a watch. `live` must have been subscribed before this reads any history: events
/// committed after the history snapshot come from it, those up to the snapshot from the table.
pub(super) async fn watch(
    pool: Arc<ReadPool>,
    range: KeyRange,
    from_revision: Revision,
    live: broadcast::Receiver<Arc<[WatchEvent]>>,
) -> Result<WatchStream, StoreError> {
    let mut watch = Watch {
        pool,
        range: Arc::new(range),
        live,
        ready: VecDeque::new(),
        through: from_revision,
        catch_up: Some(None),
        ended: false,
    };
    // The first page is read here, so that a compacted start fails the call itself.
    watch.read_history().await?;
    Ok(Box::pin(stream::unfold(watch, |mut watch| async move {
        let item = watch.next().await?;
        Some((item, watch))
    })))
}

impl Watch {
    async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                return Some(Ok(event));
            }
            if self.ended {
                return None;
            }
            if self.catch_up.is_some() {
                if let Err(error) = self.read_history().await {
                    self.ended = true;
                    return Some(Err(error));
                }
                continue;
            }
            match self.live.recv().await {
                Ok(batch) => {
                    for event in batch.iter() {
                        if event.mod_revision > self.through {
                            self.through = event.mod_revision;
                            if self.range.contains(&event.key) {
                                self.ready.push_back(event.clone());
                            }
                        }
                    }
                }
                // The buffer overtook this watch: what it missed is in the table. The receiver
                // now holds only batches newer than the ones dropped, so reading the table up
                // to its current revision and skipping what was read closes the gap.
                Err(broadcast::error::RecvError::Lagged(_)) => self.catch_up = Some(None),
                Err(broadcast::error::RecvError::Closed) => self.ended = true,
            }
        }
    }

    /// Reads one page of history into `ready`; leaves catch-up mode once the target is reached.
    async fn read_history(&mut self) -> Result<(), StoreError> {
        let Some(target) = self.catch_up else {
            return Ok(());
        };
        let range = Arc::clone(&self.range);
        let after = self.through;
        let page = self
            .pool
            .run(move |conn| history_page(conn, &range, after, target))
            .await?;
        self.ready.extend(page.events);
        self.through = page.through;
        self.catch_up = (page.through < page.target).then_some(Some(page.target));
        Ok(())
    }
}

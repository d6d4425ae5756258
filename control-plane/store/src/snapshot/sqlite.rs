//! Snapshots of the embedded SQLite store.
//!
//! `save` runs `VACUUM INTO` on a read-only connection of its own: SQLite copies the database
//! as one read transaction sees it (in WAL mode the writer keeps committing meanwhile), so the
//! copy is the store at exactly one revision, with its history, compaction point and revision
//! counter (`sqlite_sequence`). `restore` checks the file and puts it in place of the store's
//! database while no control plane has it open.

use std::{
    fs::{File, TryLockError},
    io::Read as _,
    path::Path,
};

use rusqlite::{Connection, OpenFlags};

use super::{SnapshotError, SnapshotInfo, io, persist, with_suffix};

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
const KIND: &str = "keelson SQLite";

/// Writes a snapshot of the store in the database `db` (`DATA_DIR/state.db`) to `dest`,
/// replacing `dest` only once the copy is complete and flushed. Safe while a control plane
/// serves from `db`. Blocking: call it from a blocking thread.
pub fn save(db: &Path, dest: &Path) -> Result<SnapshotInfo, SnapshotError> {
    if !db.is_file() {
        return Err(SnapshotError::NoStore {
            path: db.to_path_buf(),
        });
    }
    let sqlite = |operation| {
        move |source| SnapshotError::Sqlite {
            operation,
            path: db.to_path_buf(),
            source,
        }
    };
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite("open the store"))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sqlite("set busy_timeout"))?;
    let partial = with_suffix(dest, ".partial");
    if let Some(dir) = partial.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io("cannot create the directory", dir))?;
    }
    // VACUUM INTO refuses an existing file: a leftover of an interrupted save goes first.
    match std::fs::remove_file(&partial) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io("cannot remove", &partial)(e));
        }
        _ => {}
    }
    let target = partial.to_str().ok_or_else(|| SnapshotError::Io {
        operation: "cannot use a non-UTF-8 path",
        path: partial.clone(),
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(sqlite("copy the store (VACUUM INTO)"))?;
    drop(conn);
    let info = inspect(&partial)?;
    persist(&partial, dest)?;
    Ok(info)
}

/// Checks that `path` is an intact snapshot of a keelson SQLite store and says what it holds.
pub fn inspect(path: &Path) -> Result<SnapshotInfo, SnapshotError> {
    let refuse = |reason: String| SnapshotError::NotASnapshot {
        path: path.to_path_buf(),
        kind: KIND,
        reason,
    };
    let mut file = File::open(path).map_err(io("cannot open", path))?;
    let size = file.metadata().map_err(io("cannot stat", path))?.len();
    let mut magic = [0; 16];
    if file.read_exact(&mut magic).is_err() || &magic != SQLITE_MAGIC {
        return Err(refuse("not a SQLite database".into()));
    }
    drop(file);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| refuse(format!("SQLite cannot open it: {e}")))?;
    let check: Result<Vec<String>, _> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |row| row.get(0))?.collect());
    match check {
        Ok(lines) if lines == ["ok"] => {}
        Ok(lines) => return Err(refuse(format!("damaged: {}", lines.join("; ")))),
        Err(e) => return Err(refuse(format!("damaged: {e}"))),
    }
    let schema: Option<i64> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .ok();
    if schema != Some(1) {
        return Err(refuse(
            "no keelson store in it (no meta table with schema_version 1)".into(),
        ));
    }
    let (revision, keys): (i64, i64) = conn
        .query_row(
            "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'log'), 0), \
                    (SELECT COUNT(*) FROM log AS l WHERE l.deleted = 0 \
                       AND l.id = (SELECT MAX(id) FROM log WHERE name = l.name))",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(|e| refuse(format!("no keelson log table: {e}")))?;
    Ok(SnapshotInfo {
        revision: Some(revision),
        keys: u64::try_from(keys).ok(),
        size,
    })
}

/// Puts the snapshot `snapshot` in place of the store database `db` after checking it: the
/// store then opens at the snapshot's revision. Refused while a control plane has `db` open,
/// and when `db` exists unless `replace`. Blocking.
pub fn restore(snapshot: &Path, db: &Path, replace: bool) -> Result<SnapshotInfo, SnapshotError> {
    let info = inspect(snapshot)?;
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io("cannot create the directory", dir))?;
    }
    // The store's writer holds this lock while it runs (sqlite::writer::lock_exclusively);
    // holding it here also keeps a control plane from opening the store mid-restore.
    let lock_path = with_suffix(db, ".lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io("cannot open", &lock_path))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(SnapshotError::InUse { path: lock_path }),
        Err(TryLockError::Error(e)) => return Err(io("cannot lock", &lock_path)(e)),
    }
    let leftovers = [with_suffix(db, "-wal"), with_suffix(db, "-shm")];
    if !replace && (db.exists() || leftovers.iter().any(|p| p.exists())) {
        return Err(SnapshotError::HasState {
            path: db.to_path_buf(),
        });
    }
    let partial = with_suffix(db, ".restoring");
    std::fs::copy(snapshot, &partial).map_err(io("cannot copy the snapshot to", &partial))?;
    // The old database's write-ahead log must not be replayed into the restored one.
    for leftover in &leftovers {
        match std::fs::remove_file(leftover) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("cannot remove", leftover)(e));
            }
            _ => {}
        }
    }
    persist(&partial, db)?;
    drop(lock);
    Ok(info)
}

#[cfg(test)]
mod tests;

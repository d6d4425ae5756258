//! Snapshots of the store: a consistent copy of everything it holds at one revision, taken while
//! the control plane serves, and the offline restore that brings a wiped store back to it
//! (k3s's `etcd-snapshot save` and `--cluster-reset-restore-path`).
//!
//! - [`sqlite`]: the snapshot is a SQLite database, `VACUUM INTO` from a read transaction of
//!   the live store (one consistent revision, writers never wait); restoring puts it in place of
//!   `state.db`, so revisions, `resourceVersion`s and values are the saved ones.
//! - [`etcd`]: the snapshot is etcd's own format (the Maintenance `Snapshot` stream, a bbolt
//!   database followed by its SHA-256), as `etcdctl snapshot save` writes it; restoring makes
//!   a new member data directory with etcd's own tool (`etcdutl`, else `etcdctl`), as k3s does
//!   through etcd's library.
//!
//! Values are copied as stored: Secrets encrypted at rest stay ciphertext in a snapshot, and a
//! restored cluster needs the same encryption keys (`DATA_DIR/pki/`) to read them.

pub mod etcd;
pub mod sqlite;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use crate::Revision;

/// Why taking, checking or restoring a snapshot failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Reading or writing a file failed.
    #[error("{operation} {path}")]
    Io {
        /// What was done (`cannot write`, ...).
        operation: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// SQLite refused an operation.
    #[error("SQLite failed to {operation} ({path})")]
    Sqlite {
        /// What was done.
        operation: &'static str,
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// There is no store to snapshot.
    #[error("there is no SQLite store at {path} (is --data-dir right?)")]
    NoStore {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The file is not a snapshot of this kind, or it is damaged.
    #[error("{path} is not a usable {kind} snapshot: {reason}")]
    NotASnapshot {
        /// The file.
        path: PathBuf,
        /// `keelson SQLite` or `etcd`.
        kind: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A control plane has the store open.
    #[error("{path} is in use by a running control plane: stop it before restoring a snapshot")]
    InUse {
        /// The store's lock file.
        path: PathBuf,
    },
    /// The target already holds state and replacing it was not asked for.
    #[error("{path} already holds a store: restoring would replace it; wipe it or pass --force")]
    HasState {
        /// The store or data directory.
        path: PathBuf,
    },
    /// The etcd snapshot stream failed.
    #[error("etcd failed to {operation}")]
    Etcd {
        /// What was done.
        operation: &'static str,
        /// The cause.
        #[source]
        source: etcd_client::Error,
    },
    /// etcd's restore tool is missing or failed.
    #[error("{tool} failed: {message}")]
    EtcdTool {
        /// The command run.
        tool: String,
        /// Its error output, or why it could not run.
        message: String,
    },
}

/// What a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// The store's revision in the snapshot (its last write); `None` where the format does not
    /// say without etcd's tools (etcd).
    pub revision: Option<Revision>,
    /// Live keys in the snapshot; `None` for etcd.
    pub keys: Option<u64>,
    /// The file's size in bytes.
    pub size: u64,
}

impl std::fmt::Display for SnapshotInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(revision) = self.revision {
            write!(f, "revision {revision}, ")?;
        }
        if let Some(keys) = self.keys {
            write!(f, "{keys} keys, ")?;
        }
        write!(f, "{} bytes", self.size)
    }
}

fn io(operation: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError {
    let path = path.to_path_buf();
    move |source| SnapshotError::Io {
        operation,
        path,
        source,
    }
}

/// `path` with `suffix` appended to its file name (`state.db` -> `state.db-wal`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Flushes `path` to disk, then renames it to `to` and flushes the directory, so that `to` is
/// either the old file or the complete new one after a crash.
fn persist(path: &Path, to: &Path) -> Result<(), SnapshotError> {
    std::fs::File::open(path)
        .and_then(|file| file.sync_all())
        .map_err(io("cannot flush", path))?;
    std::fs::rename(path, to).map_err(io("cannot rename into place", to))?;
    if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("cannot flush the directory", dir))?;
    }
    Ok(())
}

/// Creates `path` for writing (truncating a leftover from an interrupted attempt).
fn create(path: &Path) -> Result<std::fs::File, SnapshotError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io("cannot create the directory", dir))?;
    }
    std::fs::File::create(path).map_err(io("cannot create", path))
}

fn write_all(file: &mut std::fs::File, path: &Path, bytes: &[u8]) -> Result<(), SnapshotError> {
    file.write_all(bytes).map_err(io("cannot write", path))
}

//! The store's one error type.

use crate::Revision;

/// Why a store operation failed. The first five variants are answers about the data (the API
/// server maps them to 409, 404, 410 and 400); the rest are failures of the backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// `create` of a key that exists.
    #[error("key {key} already exists")]
    AlreadyExists {
        /// The key.
        key: String,
    },
    /// A conditional write whose expected mod revision is not the key's.
    #[error("key {key} was modified: expected mod revision {expected}, found {actual}")]
    Conflict {
        /// The key.
        key: String,
        /// The mod revision the caller expected.
        expected: Revision,
        /// The key's mod revision in the store.
        actual: Revision,
    },
    /// `update` or `delete` of a key that does not exist.
    #[error("key {key} not found")]
    NotFound {
        /// The key.
        key: String,
    },
    /// A read or watch from a revision whose history has been compacted away.
    #[error("revision {requested} has been compacted (history starts at {compacted})")]
    Compacted {
        /// The revision asked for.
        requested: Revision,
        /// The store's compaction point: the oldest revision still readable.
        compacted: Revision,
    },
    /// A read at (or compaction to) a revision that has not been written yet.
    #[error("revision {requested} is in the future (current revision is {current})")]
    FutureRevision {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// The store holds a key that is not UTF-8 (written by something other than keelson).
    #[error("the store holds a key that is not UTF-8: {key:?}")]
    InvalidKey {
        /// The key's bytes.
        key: Vec<u8>,
    },
    /// The SQLite database could not be opened or its directory created.
    #[error("cannot open the SQLite store at {path}")]
    Open {
        /// The database file.
        path: std::path::PathBuf,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A SQLite statement failed.
    #[error("SQLite {operation} failed")]
    Sqlite {
        /// What the store was doing.
        operation: &'static str,
        /// The SQLite error.
        #[source]
        source: rusqlite::Error,
    },
    /// An etcd request failed.
    #[error("etcd {operation} failed")]
    Etcd {
        /// What the store was doing.
        operation: &'static str,
        /// The etcd-client error.
        #[source]
        source: etcd_client::Error,
    },
    /// etcd canceled a watch for a reason other than compaction.
    #[error("etcd canceled the watch: {reason}")]
    WatchCanceled {
        /// etcd's cancel reason.
        reason: String,
    },
    /// Deleting the history below a compaction point failed; the compaction point itself is
    /// recorded, and the next `compact` call resumes the cleanup.
    #[error("compaction to revision {revision} failed")]
    CompactionFailed {
        /// The compaction point.
        revision: Revision,
        /// What went wrong (shared by every caller waiting for this compaction).
        #[source]
        source: std::sync::Arc<StoreError>,
    },
    /// A value could not be encrypted or decrypted (`encryption`): a key missing from the
    /// encryption configuration, a changed value, another provider's value.
    #[error("unable to transform key {key:?}")]
    Transform {
        /// The store key whose value it is.
        key: String,
        /// Why.
        #[source]
        source: crate::encryption::TransformError,
    },
    /// The store has shut down (its writer thread is gone).
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    pub(crate) fn sqlite(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> Self {
        move |source| Self::Sqlite { operation, source }
    }

    pub(crate) fn etcd(operation: &'static str) -> impl FnOnce(etcd_client::Error) -> Self {
        move |source| Self::Etcd { operation, source }
    }
}

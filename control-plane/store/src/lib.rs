//! keelson's storage layer: a revisioned key-value store with etcd's semantics.
//!
//! Every successful write gets the next value of one global, strictly increasing *revision*
//! (Kubernetes' `resourceVersion`). Writes are conditional on a key's *mod revision* (the
//! revision of its last write), reads can be served at a past revision, and a watch replays the
//! history after a revision and then follows live changes. History older than the *compacted*
//! revision is gone: reading or watching from there fails with [`StoreError::Compacted`], which
//! the API server turns into `410 Gone`.
//!
//! Two implementations of [`Store`]:
//! - [`SqliteStore`]: embedded, the default. A kine-style log table in SQLite (WAL,
//!   `synchronous=FULL`: an acknowledged write has been fsynced), one writer thread that commits
//!   concurrent writes together (group commit), a small pool of read connections.
//! - [`EtcdStore`]: etcd v3 through `etcd-client`, for highly available control planes.
//!
//! Both pass the same contract suite (`contract` module, feature `contract-tests`).
#![forbid(unsafe_code)]

use std::{fmt, pin::Pin, sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;

#[cfg(feature = "contract-tests")]
pub mod contract;
pub mod encryption;
mod error;
pub mod etcd;
pub mod snapshot;
pub mod sqlite;

pub use encryption::{EncryptedStore, EncryptionConfig};
pub use error::StoreError;
pub use etcd::{EtcdStore, EtcdTls};
pub use sqlite::{SqliteOptions, SqliteStats, SqliteStore};

/// A store revision: a write's position in the global order of writes. Starts above 0 and only
/// grows; etcd's revisions and Kubernetes' `resourceVersion` are the same numbers.
pub type Revision = i64;

/// A key with its value and the revisions that created and last modified it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, e.g. `/registry/pods/default/web-0`.
    pub key: String,
    /// The raw value (JSON in keelson).
    pub value: Bytes,
    /// The revision of the write that created the key (since it last did not exist).
    pub create_revision: Revision,
    /// The revision of the key's last write: the `expected_mod_revision` of a later update.
    pub mod_revision: Revision,
}

/// What [`Store::delete`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deleted {
    /// The revision of the delete itself.
    pub revision: Revision,
    /// The key as it was just before the delete.
    pub previous: KeyValue,
}

/// Options of [`Store::list`]. The default lists every key under the prefix at the current
/// revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// List the state as of this revision instead of the current one (`None` or a value
    /// `<= 0`: now, as in etcd). Fails with [`StoreError::Compacted`] below the compaction point
    /// and with [`StoreError::FutureRevision`] above the current revision.
    pub revision: Option<Revision>,
    /// Return at most this many items; [`ListResult::more`] says whether more remain.
    pub limit: Option<usize>,
    /// Only keys strictly greater than this one (the last key of the previous page). To page
    /// consistently, pass the previous page's [`ListResult::revision`] as `revision` too.
    pub start_after: Option<String>,
}

/// The answer to [`Store::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListResult {
    /// The live keys under the prefix, in ascending key order.
    pub items: Vec<KeyValue>,
    /// The revision the listing reflects: a watch from here misses nothing and repeats nothing.
    pub revision: Revision,
    /// `true` when `limit` cut the listing short.
    pub more: bool,
}

/// The kind of change a [`WatchEvent`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The key was created.
    Added,
    /// An existing key got a new value.
    Modified,
    /// The key was deleted.
    Deleted,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// What happened to the key.
    pub kind: EventKind,
    /// The key that changed.
    pub key: String,
    /// The new value; for [`EventKind::Deleted`] the value the key had when it was deleted
    /// (what Kubernetes sends in a `DELETED` event).
    pub value: Bytes,
    /// The revision of this change.
    pub mod_revision: Revision,
    /// The value before this change: `None` for [`EventKind::Added`].
    pub prev_value: Option<Bytes>,
}

/// A watch: events in revision order. It ends with `Err(StoreError::Compacted { .. })` if
/// compaction overtakes it, and ends (`None`) when the store is dropped.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchEvent, StoreError>> + Send>>;

/// A revisioned key-value store with etcd's semantics.
///
/// The trait is object safe (through `async_trait`'s boxed futures) because the control plane
/// picks its backend at run time (`--store sqlite|etcd`) and hands an `Arc<dyn Store>` to the API
/// server; one allocation per call is noise next to an fsync or a network round trip.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Creates `key`, failing with [`StoreError::AlreadyExists`] if it exists. Returns the
    /// write's revision.
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision, StoreError>;

    /// The key's value and revisions, now (`None` or a value `<= 0`) or as of `revision`;
    /// `Ok(None)` if it does not exist (then).
    async fn get(
        &self,
        key: &str,
        revision: Option<Revision>,
    ) -> Result<Option<KeyValue>, StoreError>;

    /// Replaces the value of `key` if its mod revision is still `expected_mod_revision`:
    /// [`StoreError::Conflict`] if it changed since, [`StoreError::NotFound`] if it does not
    /// exist. Returns the write's revision.
    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: Revision,
    ) -> Result<Revision, StoreError>;

    /// Deletes `key`, if given only while its mod revision is `expected_mod_revision`
    /// ([`StoreError::Conflict`] otherwise); [`StoreError::NotFound`] if it does not exist.
    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<Deleted, StoreError>;

    /// The live keys starting with `prefix` (plain string prefix: end it with `/` to list one
    /// directory), now or at `options.revision`.
    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult, StoreError>;

    /// Every change to keys starting with `prefix` after revision `from_revision`, first the
    /// stored history and then live changes, without gaps or repeats. Fails with
    /// [`StoreError::Compacted`] when the history after `from_revision` is no longer complete.
    /// Pass the revision of a [`ListResult`] (or [`Store::current_revision`]) to follow changes
    /// from there.
    async fn watch(&self, prefix: &str, from_revision: Revision)
    -> Result<WatchStream, StoreError>;

    /// Discards the history before `revision`: afterwards reads below it fail with
    /// [`StoreError::Compacted`], while the state at `revision` and every later change stay.
    /// Compacting to a revision at or below the current compaction point does nothing.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// The revision of the last write.
    async fn current_revision(&self) -> Result<Revision, StoreError>;
}

/// How [`run_compactor`] keeps history bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Time between compactions.
    pub interval: Duration,
    /// Revisions of history to keep behind the current one; watches that fall further behind
    /// get [`StoreError::Compacted`] and must list again.
    pub retain_revisions: i64,
}

impl Default for CompactionPolicy {
    /// Every 5 minutes, keeping the last 1000 revisions (kine's defaults).
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            retain_revisions: 1000,
        }
    }
}

/// Compacts `store` every `policy.interval`, keeping `policy.retain_revisions` of history. Runs
/// until the future is dropped; errors are logged and retried at the next interval. Works for
/// every backend (for etcd it is what kube-apiserver's compactor does).
pub async fn run_compactor(store: Arc<dyn Store>, policy: CompactionPolicy) {
    let mut ticker = tokio::time::interval(policy.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let target = match store.current_revision().await {
            Ok(current) => current - policy.retain_revisions,
            Err(error) => {
                tracing::warn!(
                    error = &error as &dyn std::error::Error,
                    "compactor cannot read the current revision"
                );
                continue;
            }
        };
        if target < 1 {
            continue;
        }
        match store.compact(target).await {
            Ok(()) => tracing::debug!(revision = target, "compacted the store"),
            Err(error) => {
                tracing::warn!(
                    revision = target,
                    error = &error as &dyn std::error::Error,
                    "compaction failed"
                );
            }
        }
    }
}

/// The smallest byte string greater than every string starting with `prefix`, or `None` if
/// there is none (empty prefix, or only `0xff` bytes): the exclusive end of a prefix range.
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_next_byte_string() {
        assert_eq!(
            prefix_end(b"/registry/pods/"),
            Some(b"/registry/pods0".to_vec())
        );
        assert_eq!(prefix_end(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}

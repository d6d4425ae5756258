//! The watch cache: lists and watches served from memory, like kube-apiserver's cacher
//! (`k8s.io/apiserver/pkg/storage/cacher`).
//!
//! [`WatchCache`] is a [`Store`] in front of the real one, as the cacher is a
//! `storage.Interface` in front of etcd's: writes, `get` and compaction go through to the store;
//! `list` and `watch` are answered from memory. One store watch of every key (started with the
//! first list or watch) feeds a copy of the current objects and, per resource
//! (`/registry/<resource>/`), a bounded window of recent events and a bounded broadcast ring
//! that every watch of the resource reads. So a thousand watches cost one store watch, and
//! the store's watch (SQLite: a receiver and a key filter per watcher and event; etcd: a gRPC
//! watch per watcher) is paid once.
//!
//! Semantics, as upstream:
//! - A list of the latest state is consistent (ConsistentListFromCache, Kubernetes 1.31+):
//!   the store's current revision is read, the list waits until the cache has reached it and
//!   is then served from memory. If the cache does not get there within 3 s (upstream's
//!   `blockTimeout`), the list goes to the store.
//! - A list at an exact revision (`resourceVersionMatch=Exact`, the pages after the first of
//!   a paginated list) is served from memory when it is the cache's revision, else by the
//!   store, which still has every revision since its compaction.
//! - A watch from a revision inside the resource's window replays the window after it and
//!   follows live events. Below the store's compaction point (asked with a one-item list at
//!   the revision, as the etcd store probes before its watches) it fails with `Compacted`
//!   (410 Gone `Expired`), where upstream would still serve what its window holds. Between the two (older than the
//!   window, e.g. from before the cache started) the store's own watch serves it, where
//!   upstream answers 410: more watches resume, none sees a gap.
//! - A watch that falls more than the ring's size behind (its client does not read) is
//!   closed, as upstream's cacher closes a watcher whose buffer stays full; its client
//!   watches again from its last resourceVersion. The slow watch never holds more memory
//!   than the shared ring.

mod plan;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fmt,
    ops::Bound,
    sync::{
        Arc, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt as _, stream};
use keelson_store::{
    Deleted, EventKind, KeyValue, ListOptions, ListResult, Revision, Store, StoreError, WatchEvent,
    WatchStream,
};
use tokio::sync::{broadcast, oneshot, watch};

use plan::{ListFrom, WatchFrom, Window};

/// How long a consistent list waits for the cache to reach the store's revision before it
/// asks the store (upstream's `blockTimeout`).
const FRESH_TIMEOUT: Duration = Duration::from_secs(3);

/// After a failed store watch, the wait before the cache fills itself again.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Sizes of a [`WatchCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchCacheOptions {
    /// Recent events kept per resource: watches from a revision among them resume.
    pub window: usize,
    /// Events a watch may fall behind before it is closed.
    pub watcher_buffer: usize,
}

impl Default for WatchCacheOptions {
    fn default() -> Self {
        Self {
            window: 2048,
            watcher_buffer: 1024,
        }
    }
}

/// A [`Store`] whose lists and watches are served from memory (see the module documentation).
pub struct WatchCache {
    inner: Arc<dyn Store>,
    shared: Arc<Shared>,
    started: AtomicBool,
    /// Taken by the filling task when it starts.
    dropped: std::sync::Mutex<Option<oneshot::Receiver<()>>>,
}

impl fmt::Debug for WatchCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WatchCache")
            .field("inner", &self.inner)
            .field("revision", &*self.shared.progress.borrow())
            .finish_non_exhaustive()
    }
}

/// What the filling task and the requests share.
#[derive(Debug)]
struct Shared {
    options: WatchCacheOptions,
    state: RwLock<State>,
    /// The revision the cache has reached; `None` while it is (re)filling.
    progress: watch::Sender<Option<Revision>>,
    /// Dropped with the cache: ends the filling task (and its hold on the store) at once.
    _alive: oneshot::Sender<()>,
}

/// The cached objects and the per-resource windows.
#[derive(Debug, Default)]
struct State {
    filled: bool,
    /// Every store event up to here has been applied.
    revision: Revision,
    /// The revision the cache was last filled at: new windows are complete after it.
    filled_at: Revision,
    /// The compaction point, as far as compactions went through the cache.
    compacted: Revision,
    objects: BTreeMap<String, KeyValue>,
    resources: HashMap<String, Resource>,
}

/// One resource's window and its watches' ring.
#[derive(Debug)]
struct Resource {
    window: Window,
    sender: broadcast::Sender<Arc<WatchEvent>>,
}

impl State {
    fn resource(&mut self, name: &str, options: &WatchCacheOptions) -> &mut Resource {
        let filled_at = self.filled_at;
        self.resources
            .entry(name.to_owned())
            .or_insert_with(|| Resource {
                window: Window::new(options.window, filled_at),
                sender: broadcast::channel(options.watcher_buffer.max(1)).0,
            })
    }

    /// Applies one store event to the objects, the window and the watches.
    fn apply(&mut self, event: WatchEvent, options: &WatchCacheOptions) {
        match event.kind {
            EventKind::Deleted => {
                self.objects.remove(&event.key);
            }
            EventKind::Added | EventKind::Modified => {
                let create_revision = match (event.kind, self.objects.get(&event.key)) {
                    (EventKind::Modified, Some(previous)) => previous.create_revision,
                    _ => event.mod_revision,
                };
                self.objects.insert(
                    event.key.clone(),
                    KeyValue {
                        key: event.key.clone(),
                        value: event.value.clone(),
                        create_revision,
                        mod_revision: event.mod_revision,
                    },
                );
            }
        }
        self.revision = self.revision.max(event.mod_revision);
        if let Some(name) = plan::resource_of(&event.key).map(str::to_owned) {
            let event = Arc::new(event);
            let resource = self.resource(&name, options);
            resource.window.push(Arc::clone(&event));
            // No receivers is fine: nobody watches this resource now.
            let _ = resource.sender.send(event);
        }
    }

    /// The live keys under `prefix` after `start_after`, at most `limit`.
    fn list(&self, prefix: &str, options: &ListOptions) -> ListResult {
        let lower = match &options.start_after {
            Some(after) if after.as_str() >= prefix => Bound::Excluded(after.clone()),
            _ => Bound::Included(prefix.to_owned()),
        };
        let limit = options.limit.unwrap_or(usize::MAX);
        let mut items = Vec::new();
        let mut more = false;
        for (key, kv) in self.objects.range::<String, _>((lower, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                break;
            }
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(kv.clone());
        }
        ListResult {
            items,
            revision: self.revision,
            more,
        }
    }
}

impl WatchCache {
    /// A cache in front of `inner`. It fills itself on the first list or watch.
    pub fn new(inner: Arc<dyn Store>, options: WatchCacheOptions) -> Self {
        let (alive, dropped) = oneshot::channel();
        Self {
            inner,
            shared: Arc::new(Shared {
                options,
                state: RwLock::default(),
                progress: watch::Sender::new(None),
                _alive: alive,
            }),
            started: AtomicBool::new(false),
            dropped: std::sync::Mutex::new(Some(dropped)),
        }
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.shared
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.shared
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until the cache has applied every event up to `target`; `false` if it does not
    /// within [`FRESH_TIMEOUT`].
    async fn fresh(&self, target: Revision) -> bool {
        if !self.started.swap(true, Ordering::SeqCst)
            && let Some(dropped) = self
                .dropped
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take()
        {
            let (store, shared) = (Arc::clone(&self.inner), Arc::downgrade(&self.shared));
            tokio::spawn(async move {
                // Whichever ends first: the cache is dropped, or the task gives up.
                tokio::select! {
                    _ = dropped => {}
                    () = fill(store, shared) => {}
                }
            });
        }
        let mut progress = self.shared.progress.subscribe();
        let reached = progress.wait_for(|r| r.is_some_and(|r| r >= target));
        matches!(
            tokio::time::timeout(FRESH_TIMEOUT, reached).await,
            Ok(Ok(_))
        )
    }
}

/// Fills the cache from the store and keeps it current, until the cache is dropped; after a
/// failure it fills itself again (closing every watch of the cache, which cannot say what it
/// missed).
async fn fill(store: Arc<dyn Store>, shared: Weak<Shared>) {
    loop {
        let error = match follow(&store, &shared).await {
            Ok(()) => return,
            Err(error) => error,
        };
        tracing::warn!(
            error = &error as &dyn std::error::Error,
            "the watch cache lost its store watch; filling it again"
        );
        let Some(live) = shared.upgrade() else { return };
        live.progress.send_replace(None);
        live.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .filled = false;
        drop(live);
        tokio::time::sleep(RETRY_DELAY).await;
    }
}

/// One fill: a list of every key, then its watch. `Ok` when the cache was dropped or the
/// store closed.
async fn follow(store: &Arc<dyn Store>, shared: &Weak<Shared>) -> Result<(), StoreError> {
    let listed = store.list("", ListOptions::default()).await?;
    let mut events = store.watch("", listed.revision).await?;
    {
        let Some(live) = shared.upgrade() else {
            return Ok(());
        };
        let mut state = live
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.objects = listed
            .items
            .into_iter()
            .map(|kv| (kv.key.clone(), kv))
            .collect();
        state.revision = listed.revision;
        state.filled_at = listed.revision;
        // New rings close the watches of the old ones; new windows start here.
        state.resources.clear();
        state.filled = true;
        drop(state);
        live.progress.send_replace(Some(listed.revision));
    }
    while let Some(event) = events.next().await {
        let event = event?;
        let Some(live) = shared.upgrade() else {
            return Ok(());
        };
        let revision = event.mod_revision;
        live.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .apply(event, &live.options);
        live.progress.send_replace(Some(revision));
    }
    Ok(())
}

/// A watch served by the cache: the window's events after its start, then the ring's.
struct CacheWatch {
    replay: VecDeque<Arc<WatchEvent>>,
    live: broadcast::Receiver<Arc<WatchEvent>>,
    prefix: String,
    /// Events up to here were handed out (or were before the watch's start).
    through: Revision,
}

impl CacheWatch {
    async fn next(&mut self) -> Option<WatchEvent> {
        loop {
            let event = match self.replay.pop_front() {
                Some(event) => event,
                None => match self.live.recv().await {
                    Ok(event) => event,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(
                            prefix = self.prefix,
                            missed,
                            "closing a watch that fell behind"
                        );
                        return None;
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            };
            if event.mod_revision > self.through && event.key.starts_with(&self.prefix) {
                self.through = event.mod_revision;
                return Some(WatchEvent::clone(&event));
            }
        }
    }
}

#[async_trait]
impl Store for WatchCache {
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision, StoreError> {
        self.inner.create(key, value).await
    }

    async fn get(
        &self,
        key: &str,
        revision: Option<Revision>,
    ) -> Result<Option<KeyValue>, StoreError> {
        self.inner.get(key, revision).await
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: Revision,
    ) -> Result<Revision, StoreError> {
        self.inner.update(key, value, expected_mod_revision).await
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<Deleted, StoreError> {
        self.inner.delete(key, expected_mod_revision).await
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult, StoreError> {
        let cached = (*self.shared.progress.borrow()).unwrap_or(Revision::MIN);
        if plan::list_from(&options, cached) == ListFrom::Store {
            return self.inner.list(prefix, options).await;
        }
        let target = match options.revision.filter(|r| *r > 0) {
            Some(exact) => exact,
            None => self.inner.current_revision().await?,
        };
        if !self.fresh(target).await {
            return self.inner.list(prefix, options).await;
        }
        {
            let state = self.read();
            let exact_moved = options
                .revision
                .is_some_and(|r| r > 0 && r != state.revision);
            if state.filled && !exact_moved {
                return Ok(state.list(prefix, &options));
            }
        }
        self.inner.list(prefix, options).await
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        let Some(resource) = plan::resource_of(prefix) else {
            return self.inner.watch(prefix, from_revision).await;
        };
        if !self.fresh(Revision::MIN).await {
            return self.inner.watch(prefix, from_revision).await;
        }
        // A resume from the past: the store says whether it was compacted since, also when
        // the compaction did not go through this cache (another API server, a direct call).
        if from_revision < self.read().revision {
            let probe = ListOptions {
                revision: Some(from_revision),
                limit: Some(1),
                start_after: None,
            };
            if let Err(error @ StoreError::Compacted { .. }) = self.inner.list(prefix, probe).await
            {
                return Err(error);
            }
        }
        let watch = {
            let mut state = self.write();
            if !state.filled {
                None
            } else {
                let options = self.shared.options;
                let compacted = state.compacted;
                let entry = state.resource(resource, &options);
                match plan::watch_from(from_revision, entry.window.start(), compacted) {
                    WatchFrom::Compacted => {
                        return Err(StoreError::Compacted {
                            requested: from_revision,
                            compacted,
                        });
                    }
                    WatchFrom::Store => None,
                    WatchFrom::Cache => Some(CacheWatch {
                        replay: entry.window.after(from_revision, prefix),
                        live: entry.sender.subscribe(),
                        prefix: prefix.to_owned(),
                        through: from_revision,
                    }),
                }
            }
        };
        match watch {
            Some(watch) => Ok(Box::pin(stream::unfold(watch, |mut watch| async move {
                let event = watch.next().await?;
                Some((Ok(event), watch))
            }))),
            None => self.inner.watch(prefix, from_revision).await,
        }
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await?;
        let mut state = self.write();
        state.compacted = state.compacted.max(revision);
        Ok(())
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.inner.current_revision().await
    }
}

#[cfg(test)]
mod tests;

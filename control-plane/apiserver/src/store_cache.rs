//! A value built from a few kinds of stored objects, read once per change: the pattern behind
//! the admission configuration cache, generic so RBAC (and later users) share it.
//!
//! Readers get the current [`Arc`] without touching the store while nothing changed. A change
//! bumps a generation: writes through this server call [`StoreCache::invalidate`] before they
//! answer (so the very next request sees them), and store watches started with the first read
//! do the same for writes by other API servers. A snapshot read under an older generation is
//! rebuilt on next use; concurrent rebuilds are serialised.

use std::sync::{
    Arc, RwLock, Weak,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use futures_util::StreamExt as _;
use keelson_store::{KeyValue, ListOptions, Revision, Store};

use crate::{ApiError, registry};

/// What a [`StoreCache`] holds: built from the current lists of [`Cached::SOURCES`].
pub(crate) trait Cached: Send + Sync + Sized + 'static {
    /// The (group, version, plural) of each resource read, in the order `build` gets them.
    const SOURCES: &'static [(&'static str, &'static str, &'static str)];

    /// The value from the stored objects of each source.
    fn build(lists: &[Vec<KeyValue>]) -> Self;
}

/// One cached value and the generation it was read at.
#[derive(Debug)]
struct Entry<T> {
    generation: u64,
    value: Arc<T>,
}

/// A [`Cached`] value kept current from the store (see the module documentation).
#[derive(Debug)]
pub(crate) struct StoreCache<T> {
    current: RwLock<Option<Entry<T>>>,
    generation: AtomicU64,
    watching: AtomicBool,
    loading: tokio::sync::Mutex<()>,
}

impl<T> Default for StoreCache<T> {
    fn default() -> Self {
        Self {
            current: RwLock::new(None),
            generation: AtomicU64::new(0),
            watching: AtomicBool::new(false),
            loading: tokio::sync::Mutex::new(()),
        }
    }
}

impl<T: Cached> StoreCache<T> {
    /// Marks the value stale: the next [`StoreCache::get`] rebuilds it.
    pub(crate) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    fn fresh(&self) -> Option<Arc<T>> {
        let generation = self.generation.load(Ordering::SeqCst);
        let current = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        current
            .as_ref()
            .filter(|e| e.generation == generation)
            .map(|e| Arc::clone(&e.value))
    }

    /// The current value: cached, or rebuilt from the store when something changed.
    pub(crate) async fn get(self: &Arc<Self>, store: &Arc<dyn Store>) -> Result<Arc<T>, ApiError> {
        if let Some(value) = self.fresh() {
            return Ok(value);
        }
        let _loading = self.loading.lock().await;
        if let Some(value) = self.fresh() {
            return Ok(value);
        }
        // Taken before reading: a change during the read leaves this value outdated at once.
        let generation = self.generation.load(Ordering::SeqCst);
        let mut lists = Vec::with_capacity(T::SOURCES.len());
        let mut from: Option<Revision> = None;
        let mut prefixes = Vec::with_capacity(T::SOURCES.len());
        for (group, version, plural) in T::SOURCES {
            let resource = registry::find(group, version, plural).ok_or_else(ApiError::no_route)?;
            let list = store
                .list(&resource.prefix(), ListOptions::default())
                .await
                .map_err(|e| ApiError::from_store(e, resource, ""))?;
            from = Some(from.map_or(list.revision, |f| f.min(list.revision)));
            prefixes.push(resource.prefix());
            lists.push(list.items);
        }
        let value = Arc::new(T::build(&lists));
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Entry {
            generation,
            value: Arc::clone(&value),
        });
        if let Some(from) = from
            && !self.watching.swap(true, Ordering::SeqCst)
        {
            for prefix in prefixes {
                tokio::spawn(watch(Arc::clone(store), prefix, from, Arc::downgrade(self)));
            }
        }
        Ok(value)
    }
}

/// Marks `cache` stale on every change under `prefix`; when the watch ends, marks it stale and
/// lets the next read start the watches again.
async fn watch<T: Cached>(
    store: Arc<dyn Store>,
    prefix: String,
    from: Revision,
    cache: Weak<StoreCache<T>>,
) {
    let stream = store.watch(&prefix, from).await;
    drop(store);
    if let Ok(mut stream) = stream {
        while let Some(event) = stream.next().await {
            let Some(cache) = cache.upgrade() else {
                return;
            };
            cache.invalidate();
            if event.is_err() {
                break;
            }
        }
    }
    if let Some(cache) = cache.upgrade() {
        cache.watching.store(false, Ordering::SeqCst);
        cache.invalidate();
    }
}

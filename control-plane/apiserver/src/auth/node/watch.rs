//! Feeds the graph from the store: lists pods (and persistent volumes) once, then applies
//! each watch event to the graph (one pod's edges per event); lists again when a watch fails
//! or ends (compaction overtook it, the store restarted).

use std::{sync::Weak, time::Duration};

use futures_util::StreamExt as _;
use keelson_store::{EventKind, KeyValue, ListOptions, WatchEvent};
use serde_json::Value;

use super::{
    NodeAuthorizer,
    graph::{PodRefs, PvRefs},
};

/// The first wait before listing again after a failure; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What a watch follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// `/registry/pods/<namespace>/<name>`.
    Pods,
    /// `/registry/persistentvolumes/<name>`.
    PersistentVolumes,
}

impl Source {
    pub(super) const ALL: [Self; 2] = [Self::Pods, Self::PersistentVolumes];

    fn prefix(self) -> &'static str {
        match self {
            Self::Pods => "/registry/pods/",
            Self::PersistentVolumes => "/registry/persistentvolumes/",
        }
    }

    /// (namespace, name) of a key under [`Source::prefix`] (namespace `""` for PVs).
    fn names(self, key: &str) -> Option<(&str, &str)> {
        let rest = key.strip_prefix(self.prefix())?;
        match self {
            Self::Pods => rest.split_once('/'),
            Self::PersistentVolumes => Some(("", rest)),
        }
    }
}

fn parse(value: &[u8]) -> Option<Value> {
    serde_json::from_slice(value).ok()
}

impl NodeAuthorizer {
    /// Replaces the graph's part for `source` with the listed `items`.
    fn replace(&self, source: Source, items: &[KeyValue]) {
        let decoded = items.iter().filter_map(|kv| {
            let (namespace, name) = source.names(&kv.key)?;
            Some((namespace.to_owned(), name.to_owned(), parse(&kv.value)?))
        });
        match source {
            Source::Pods => {
                let pods: Vec<_> = decoded
                    .filter_map(|(ns, name, pod)| Some((ns, name, PodRefs::of(&pod)?)))
                    .collect();
                self.update(|graph| graph.replace_pods(pods));
            }
            Source::PersistentVolumes => {
                let pvs: Vec<_> = decoded
                    .filter_map(|(_, name, pv)| Some((name, PvRefs::of(&pv)?)))
                    .collect();
                self.update(|graph| graph.replace_pvs(pvs));
            }
        }
    }

    /// Applies one watch event to the graph.
    fn apply(&self, source: Source, event: &WatchEvent) {
        let Some((namespace, name)) = source.names(&event.key) else {
            return;
        };
        let object = match event.kind {
            EventKind::Deleted => None,
            EventKind::Added | EventKind::Modified => parse(&event.value),
        };
        match source {
            Source::Pods => {
                let refs = object.as_ref().and_then(PodRefs::of);
                self.update(|graph| graph.set_pod(namespace, name, refs));
            }
            Source::PersistentVolumes => {
                let refs = object.as_ref().and_then(PvRefs::of);
                self.update(|graph| graph.set_pv(name, refs));
            }
        }
    }
}

/// Lists and watches `source` into `authorizer`'s graph for as long as the authorizer lives.
pub(super) async fn follow(authorizer: Weak<NodeAuthorizer>, source: Source) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let Some(store) = authorizer.upgrade().and_then(|a| a.store.clone()) else {
            return;
        };
        let listed = match store.list(source.prefix(), ListOptions::default()).await {
            Ok(listed) => listed,
            Err(error) => {
                tracing::warn!(%error, prefix = source.prefix(), "node authorizer: listing");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let Some(this) = authorizer.upgrade() else {
            return;
        };
        this.replace(source, &listed.items);
        drop(this);
        let stream = store.watch(source.prefix(), listed.revision).await;
        // The stream alone must not keep the store (and so the authorizer's owner) alive.
        drop(store);
        match stream {
            Ok(mut events) => {
                while let Some(event) = events.next().await {
                    let Some(this) = authorizer.upgrade() else {
                        return;
                    };
                    match event {
                        Ok(event) => {
                            this.apply(source, &event);
                            backoff = FIRST_BACKOFF;
                        }
                        Err(error) => {
                            tracing::debug!(%error, prefix = source.prefix(), "node authorizer: watch ended");
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, prefix = source.prefix(), "node authorizer: watching");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use keelson_store::{SqliteOptions, SqliteStore, Store};
    use serde_json::json;

    use super::*;
    use crate::auth::node::graph::Kind;

    async fn eventually(authorizer: &NodeAuthorizer, kind: Kind, name: &str, expected: bool) {
        for _ in 0..200 {
            let related = authorizer
                .graph
                .read()
                .expect("graph")
                .is_related("n1", kind, "default", name);
            if related == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{kind:?} {name}: never {expected}");
    }

    #[tokio::test]
    async fn the_graph_follows_the_store() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(dir.path().join("s.db"), SqliteOptions::default())
                .await
                .expect("store"),
        );
        let pod = |secret: &str| {
            json!({"metadata": {"name": "web", "namespace": "default"},
                   "spec": {"nodeName": "n1", "volumes": [{"name": "s", "secret": {"secretName": secret}}]}})
            .to_string()
            .into()
        };
        // Listed at the start.
        let revision = store
            .create("/registry/pods/default/web", pod("listed"))
            .await
            .expect("create");
        let authorizer = NodeAuthorizer::new(Arc::clone(&store));
        eventually(&authorizer, Kind::Secret, "listed", true).await;
        // Then watched: a change, a delete.
        store
            .update("/registry/pods/default/web", pod("watched"), revision)
            .await
            .expect("update");
        eventually(&authorizer, Kind::Secret, "watched", true).await;
        eventually(&authorizer, Kind::Secret, "listed", false).await;
        store
            .delete("/registry/pods/default/web", None)
            .await
            .expect("delete");
        eventually(&authorizer, Kind::Secret, "watched", false).await;
        assert_eq!(authorizer.graph.read().expect("graph").pod_count(), 0);
    }
}

//! The watch cache's decisions, pure: which resource an event or a request belongs to, where
//! a list or a watch is served from, and the bounded window of recent events per resource.

use std::{collections::VecDeque, sync::Arc};

use keelson_store::{ListOptions, Revision, WatchEvent};

/// The resource (the cache's unit of windows and fan-out) a key or a key prefix belongs to:
/// `/registry/<segment>/`, e.g. `/registry/configmaps/` for `/registry/configmaps/ns/name`
/// (custom resources, stored under `/registry/<group>/<plural>/`, share one per group).
/// `None` for a key or prefix that does not name one (`/registry/`, or keys elsewhere).
pub(super) fn resource_of(key: &str) -> Option<&str> {
    let rest = key.strip_prefix("/registry/")?;
    let end = rest.find('/')?;
    Some(&key[.."/registry/".len() + end + 1])
}

/// Where a list is served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ListFrom {
    /// From memory, once the cache has reached this store revision (the store's current one
    /// for a consistent list: upstream's ConsistentListFromCache).
    Cache,
    /// From the store: a past revision the cache no longer holds.
    Store,
}

/// Where a list with `options` is served from when the cache is at `cached`: the latest state
/// from memory (after waiting until the cache reaches the store's current revision), an exact
/// revision from memory only when it is the cache's own, else from the store (which answers
/// for every revision since its compaction, or refuses with `Compacted`/`FutureRevision`).
pub(super) fn list_from(options: &ListOptions, cached: Revision) -> ListFrom {
    match options.revision {
        None => ListFrom::Cache,
        Some(r) if r <= 0 => ListFrom::Cache,
        Some(r) if r == cached => ListFrom::Cache,
        Some(_) => ListFrom::Store,
    }
}

/// Where a watch from a revision is served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WatchFrom {
    /// The window holds every event of the resource after the revision: replay it, then
    /// follow live events.
    Cache,
    /// The revision is older than the window but maybe not compacted: the store's own watch
    /// (it replays its history, or refuses with `Compacted`).
    Store,
    /// The revision is below the compaction point known to the cache: 410 Gone.
    Compacted,
}

/// Where a watch of a resource from `from` is served from, given the revision after which the
/// resource's window is complete (`window_start`) and the compaction point the cache knows.
pub(super) fn watch_from(from: Revision, window_start: Revision, compacted: Revision) -> WatchFrom {
    if from < compacted {
        WatchFrom::Compacted
    } else if from < window_start {
        WatchFrom::Store
    } else {
        WatchFrom::Cache
    }
}

/// The recent events of one resource, at most `capacity`, oldest first.
#[derive(Debug)]
pub(super) struct Window {
    events: VecDeque<Arc<WatchEvent>>,
    capacity: usize,
    /// Every event of the resource after this revision is in `events`.
    start: Revision,
}

impl Window {
    /// An empty window complete after `start` (the revision the cache was filled at).
    pub(super) fn new(capacity: usize, start: Revision) -> Self {
        Self {
            events: VecDeque::new(),
            capacity: capacity.max(1),
            start,
        }
    }

    /// The revision after which the window holds every event.
    pub(super) fn start(&self) -> Revision {
        self.start
    }

    /// Appends `event`, evicting the oldest one when full (the window then starts at it).
    pub(super) fn push(&mut self, event: Arc<WatchEvent>) {
        if self.events.len() >= self.capacity
            && let Some(oldest) = self.events.pop_front()
        {
            self.start = oldest.mod_revision;
        }
        self.events.push_back(event);
    }

    /// The events after `from` whose key starts with `prefix`, in revision order.
    pub(super) fn after(&self, from: Revision, prefix: &str) -> VecDeque<Arc<WatchEvent>> {
        let first = self.events.partition_point(|e| e.mod_revision <= from);
        self.events
            .range(first..)
            .filter(|e| e.key.starts_with(prefix))
            .cloned()
            .collect()
    }

    /// The number of events held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.events.len()
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use keelson_store::EventKind;

    use super::*;

    fn event(key: &str, revision: Revision) -> Arc<WatchEvent> {
        Arc::new(WatchEvent {
            kind: EventKind::Added,
            key: key.to_owned(),
            value: Bytes::from_static(b"{}"),
            mod_revision: revision,
            prev_value: None,
        })
    }

    #[test]
    fn resources_are_the_first_segment_under_registry() {
        for (key, resource) in [
            ("/registry/pods/default/web", Some("/registry/pods/")),
            ("/registry/pods/", Some("/registry/pods/")),
            ("/registry/nodes/n1", Some("/registry/nodes/")),
            (
                "/registry/example.com/widgets/ns/w",
                Some("/registry/example.com/"),
            ),
            ("/registry/pods", None),
            ("/registry/", None),
            ("", None),
            ("/other/pods/x", None),
        ] {
            assert_eq!(resource_of(key), resource, "{key}");
        }
    }

    #[test]
    fn lists_come_from_memory_unless_an_older_exact_revision_is_asked() {
        let at = |revision: Option<Revision>| ListOptions {
            revision,
            ..ListOptions::default()
        };
        for (options, cached, from) in [
            (at(None), 10, ListFrom::Cache),
            (at(Some(0)), 10, ListFrom::Cache),
            (at(Some(-1)), 10, ListFrom::Cache),
            (at(Some(10)), 10, ListFrom::Cache),
            (at(Some(9)), 10, ListFrom::Store),
            (at(Some(11)), 10, ListFrom::Store),
            (
                ListOptions {
                    revision: Some(10),
                    limit: Some(5),
                    start_after: Some("/registry/pods/a".into()),
                },
                10,
                ListFrom::Cache,
            ),
            (
                ListOptions {
                    revision: Some(7),
                    limit: Some(5),
                    start_after: Some("/registry/pods/a".into()),
                },
                10,
                ListFrom::Store,
            ),
        ] {
            assert_eq!(list_from(&options, cached), from, "{options:?} at {cached}");
        }
    }

    #[test]
    fn watches_resume_inside_the_window_and_expire_below_compaction() {
        for (from, start, compacted, expected) in [
            (10, 10, 0, WatchFrom::Cache),
            (15, 10, 0, WatchFrom::Cache),
            (9, 10, 0, WatchFrom::Store),
            (9, 10, 9, WatchFrom::Store),
            (8, 10, 9, WatchFrom::Compacted),
            (12, 10, 13, WatchFrom::Compacted),
            (100, 10, 0, WatchFrom::Cache),
        ] {
            assert_eq!(
                watch_from(from, start, compacted),
                expected,
                "from {from}, window after {start}, compacted {compacted}"
            );
        }
    }

    #[test]
    fn the_window_keeps_the_newest_events_and_moves_its_start() {
        let mut window = Window::new(3, 5);
        assert!(window.after(5, "").is_empty());
        window.push(event("/registry/pods/a/x", 6));
        window.push(event("/registry/pods/b/y", 8));
        window.push(event("/registry/pods/a/z", 9));
        assert_eq!(window.start(), 5);
        let revisions = |events: VecDeque<Arc<WatchEvent>>| {
            events.iter().map(|e| e.mod_revision).collect::<Vec<_>>()
        };
        assert_eq!(revisions(window.after(5, "/registry/pods/")), [6, 8, 9]);
        assert_eq!(revisions(window.after(6, "/registry/pods/")), [8, 9]);
        assert_eq!(revisions(window.after(7, "/registry/pods/a/")), [9]);
        assert_eq!(revisions(window.after(9, "")), Vec::<Revision>::new());
        window.push(event("/registry/pods/a/w", 12));
        assert_eq!(window.len(), 3);
        // Revision 6 left: a watch from 5 would miss it, one from 6 misses nothing.
        assert_eq!(window.start(), 6);
        assert_eq!(watch_from(5, window.start(), 0), WatchFrom::Store);
        assert_eq!(revisions(window.after(6, "/registry/pods/a/")), [9, 12]);
    }
}

//! The contract every [`Store`] keeps, as test cases that run against any backend.
//!
//! Each case takes a fresh, empty store and panics with a message when the store breaks the
//! contract. [`contract_suite!`](crate::contract_suite) turns the whole list into `#[tokio::test]`
//! functions for one backend, so SQLite (this crate's tests) and etcd (`tests/`) run exactly the
//! same cases. Cases make no assumption about absolute revision numbers (etcd starts at 1, SQLite
//! at 0) or about which revisions other keys took.
//!
//! The module panics on purpose: it is test code, compiled only with the `contract-tests`
//! feature.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::StreamExt;

use crate::{EventKind, KeyValue, ListOptions, Revision, Store, StoreError, WatchStream};

/// How long a case waits for a watch event before it calls the store broken.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the whole contract as one `#[tokio::test]` per case. `$open` is an expression (usually
/// a call of an async fn) whose awaited value is `(Arc<dyn Store>, guard)`, a fresh empty store
/// and whatever keeps it alive (a temp dir, an etcd process); it is evaluated once per case.
#[macro_export]
macro_rules! contract_suite {
    ($open:expr) => {
        $crate::contract_suite!(@cases $open;
            create_get_update_delete,
            duplicate_create_is_already_exists,
            stale_write_is_conflict,
            update_or_delete_of_missing_key_is_not_found,
            list_returns_exactly_the_prefix_at_a_revision,
            list_pages_at_one_revision,
            revisions_strictly_increase,
            racing_updates_lose_nothing,
            watch_delivers_events_in_revision_order,
            watch_resumes_from_a_revision_without_gap_or_repeat,
            watch_resumes_while_writes_race,
            compaction_keeps_the_current_state_and_refuses_old_revisions,
        );
    };
    (@cases $open:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (store, _guard) = $open.await;
                $crate::contract::$case(store).await;
            }
        )*
    };
}

fn bytes(value: &str) -> Bytes {
    Bytes::copy_from_slice(value.as_bytes())
}

fn text(value: &Bytes) -> String {
    String::from_utf8_lossy(value).into_owned()
}

async fn create(store: &dyn Store, key: &str, value: &str) -> Revision {
    store
        .create(key, bytes(value))
        .await
        .unwrap_or_else(|e| panic!("create {key}: {e}"))
}

async fn update(store: &dyn Store, key: &str, value: &str, expected: Revision) -> Revision {
    store
        .update(key, bytes(value), expected)
        .await
        .unwrap_or_else(|e| panic!("update {key} at {expected}: {e}"))
}

async fn get(store: &dyn Store, key: &str, revision: Option<Revision>) -> Option<KeyValue> {
    store
        .get(key, revision)
        .await
        .unwrap_or_else(|e| panic!("get {key} at {revision:?}: {e}"))
}

async fn current(store: &dyn Store) -> Revision {
    store
        .current_revision()
        .await
        .unwrap_or_else(|e| panic!("current_revision: {e}"))
}

async fn watch(store: &dyn Store, prefix: &str, from: Revision) -> WatchStream {
    store
        .watch(prefix, from)
        .await
        .unwrap_or_else(|e| panic!("watch {prefix} from {from}: {e}"))
}

/// The next event, as `(kind, key, value, revision, previous value)`.
async fn next_event(
    stream: &mut WatchStream,
) -> (EventKind, String, String, Revision, Option<String>) {
    let event = tokio::time::timeout(EVENT_TIMEOUT, stream.next())
        .await
        .unwrap_or_else(|_| panic!("no watch event within {EVENT_TIMEOUT:?}"))
        .unwrap_or_else(|| panic!("the watch ended early"))
        .unwrap_or_else(|e| panic!("the watch failed: {e}"));
    (
        event.kind,
        event.key,
        text(&event.value),
        event.mod_revision,
        event.prev_value.as_ref().map(text),
    )
}

/// `(key, value, mod revision)` of a listing, for comparisons.
fn summary(items: &[KeyValue]) -> Vec<(String, String, Revision)> {
    items
        .iter()
        .map(|kv| (kv.key.clone(), text(&kv.value), kv.mod_revision))
        .collect()
}

/// Create, read, update and delete one key; reads at past revisions see past values.
pub async fn create_get_update_delete(store: Arc<dyn Store>) {
    let store = &*store;
    let key = "/registry/configmaps/default/settings";
    assert_eq!(
        get(store, key, None).await,
        None,
        "a fresh store has no keys"
    );

    let created = create(store, key, "v1").await;
    let kv = get(store, key, None)
        .await
        .unwrap_or_else(|| panic!("{key} is missing right after its create"));
    assert_eq!(
        (text(&kv.value), kv.create_revision, kv.mod_revision),
        ("v1".to_owned(), created, created),
        "a created key reads back with the create's revision"
    );

    let updated = update(store, key, "v2", created).await;
    assert!(
        updated > created,
        "update revision {updated} <= create revision {created}"
    );
    let kv = get(store, key, None).await.expect("the updated key exists");
    assert_eq!(
        (text(&kv.value), kv.create_revision, kv.mod_revision),
        ("v2".to_owned(), created, updated),
        "an update changes the value and mod revision, not the create revision"
    );
    let then = get(store, key, Some(created))
        .await
        .expect("the key existed at its create revision");
    assert_eq!(
        text(&then.value),
        "v1",
        "a read at the create revision sees the first value"
    );

    let deleted = store
        .delete(key, Some(updated))
        .await
        .unwrap_or_else(|e| panic!("delete {key} at {updated}: {e}"));
    assert!(
        deleted.revision > updated,
        "delete revision does not increase"
    );
    assert_eq!(
        (
            deleted.previous.key.as_str(),
            text(&deleted.previous.value),
            deleted.previous.mod_revision
        ),
        (key, "v2".to_owned(), updated),
        "delete returns the key as it was"
    );
    assert_eq!(get(store, key, None).await, None, "a deleted key is gone");
    assert_eq!(
        get(store, key, Some(updated))
            .await
            .map(|kv| text(&kv.value)),
        Some("v2".to_owned()),
        "a read before the delete still sees the key"
    );

    let recreated = create(store, key, "v3").await;
    let kv = get(store, key, None)
        .await
        .expect("the recreated key exists");
    assert!(recreated > deleted.revision);
    assert_eq!(
        (kv.create_revision, kv.mod_revision),
        (recreated, recreated),
        "a recreated key starts a new life"
    );
}

/// A second create of a key fails with `AlreadyExists` and changes nothing.
pub async fn duplicate_create_is_already_exists(store: Arc<dyn Store>) {
    let store = &*store;
    let key = "/registry/namespaces/kube-system";
    let first = create(store, key, "first").await;
    let before = current(store).await;
    match store.create(key, bytes("second")).await {
        Err(StoreError::AlreadyExists { key: reported }) => assert_eq!(reported, key),
        other => panic!("a duplicate create returned {other:?}, expected AlreadyExists"),
    }
    let kv = get(store, key, None).await.expect("the key still exists");
    assert_eq!(
        (text(&kv.value), kv.mod_revision),
        ("first".to_owned(), first),
        "a rejected create leaves the key alone"
    );
    assert_eq!(
        current(store).await,
        before,
        "a rejected create takes no revision"
    );
}

/// Updates and deletes against a stale mod revision fail with `Conflict` naming both revisions.
pub async fn stale_write_is_conflict(store: Arc<dyn Store>) {
    let store = &*store;
    let key = "/registry/pods/default/web-0";
    let first = create(store, key, "v1").await;
    let second = update(store, key, "v2", first).await;
    let before = current(store).await;

    match store.update(key, bytes("stale"), first).await {
        Err(StoreError::Conflict {
            key: reported,
            expected,
            actual,
        }) => assert_eq!(
            (reported.as_str(), expected, actual),
            (key, first, second),
            "a stale update names the key, the expected and the actual mod revision"
        ),
        other => panic!("a stale update returned {other:?}, expected Conflict"),
    }
    match store.update(key, bytes("zero"), 0).await {
        Err(StoreError::Conflict {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (0, second)),
        other => panic!("an update expecting revision 0 returned {other:?}, expected Conflict"),
    }
    match store.delete(key, Some(first)).await {
        Err(StoreError::Conflict {
            expected, actual, ..
        }) => assert_eq!(
            (expected, actual),
            (first, second),
            "a stale delete conflicts"
        ),
        other => panic!("a stale delete returned {other:?}, expected Conflict"),
    }
    let kv = get(store, key, None)
        .await
        .expect("the key survives stale writes");
    assert_eq!(
        (text(&kv.value), kv.mod_revision),
        ("v2".to_owned(), second)
    );
    assert_eq!(
        current(store).await,
        before,
        "rejected writes take no revision"
    );
}

/// Updates and deletes of a key that does not exist (or no longer does) fail with `NotFound`.
pub async fn update_or_delete_of_missing_key_is_not_found(store: Arc<dyn Store>) {
    let store = &*store;
    let key = "/registry/services/default/missing";
    let is_not_found = |result: Result<_, StoreError>, what: &str| match result {
        Err(StoreError::NotFound { key: reported }) => assert_eq!(reported, key),
        other => panic!("{what} returned {other:?}, expected NotFound"),
    };
    is_not_found(
        store.delete(key, None).await.map(drop),
        "delete of a missing key",
    );
    is_not_found(
        store.delete(key, Some(5)).await.map(drop),
        "conditional delete of a missing key",
    );
    is_not_found(
        store.update(key, bytes("x"), 5).await.map(drop),
        "update of a missing key",
    );
    is_not_found(
        store.update(key, bytes("x"), 0).await.map(drop),
        "update at 0 of a missing key",
    );

    let created = create(store, key, "v1").await;
    store
        .delete(key, None)
        .await
        .unwrap_or_else(|e| panic!("delete {key}: {e}"));
    is_not_found(store.delete(key, None).await.map(drop), "a second delete");
    is_not_found(
        store.update(key, bytes("v2"), created).await.map(drop),
        "an update of a deleted key",
    );
    assert_eq!(
        get(store, key, None).await,
        None,
        "nothing resurrected the key"
    );
}

/// A listing holds exactly the live keys under the prefix (not a longer sibling prefix) and the
/// revision it reflects; a listing at an older revision shows the state of then.
pub async fn list_returns_exactly_the_prefix_at_a_revision(store: Arc<dyn Store>) {
    let store = &*store;
    let a = "/registry/pods/default/a";
    let b = "/registry/pods/default/b";
    let ra = create(store, a, "a1").await;
    let rb = create(store, b, "b1").await;
    // Keys that share a string prefix with the listed one but are not under it.
    let rc = create(store, "/registry/pods/defaults/c", "c1").await;
    let rd = create(store, "/registry/pods/kube-system/d", "d1").await;
    create(store, "/registry/podtemplates/default/e", "e1").await;

    let listing = store
        .list("/registry/pods/default/", ListOptions::default())
        .await
        .unwrap_or_else(|e| panic!("list: {e}"));
    assert_eq!(
        summary(&listing.items),
        [
            (a.to_owned(), "a1".to_owned(), ra),
            (b.to_owned(), "b1".to_owned(), rb)
        ],
        "the listing holds exactly the keys under the prefix, in key order"
    );
    assert!(!listing.more);
    let then = listing.revision;
    assert_eq!(
        then,
        current(store).await,
        "a listing reflects the current revision"
    );

    let all_pods = store
        .list("/registry/pods/", ListOptions::default())
        .await
        .unwrap_or_else(|e| panic!("list: {e}"));
    assert_eq!(
        all_pods
            .items
            .iter()
            .map(|kv| kv.mod_revision)
            .collect::<Vec<_>>(),
        [ra, rb, rc, rd],
        "the listing of every namespace holds every pod"
    );

    let ra2 = update(store, a, "a2", ra).await;
    store
        .delete(b, None)
        .await
        .unwrap_or_else(|e| panic!("delete {b}: {e}"));
    let f = "/registry/pods/default/f";
    let rf = create(store, f, "f1").await;

    let now = store
        .list("/registry/pods/default/", ListOptions::default())
        .await
        .unwrap_or_else(|e| panic!("list: {e}"));
    assert_eq!(
        summary(&now.items),
        [
            (a.to_owned(), "a2".to_owned(), ra2),
            (f.to_owned(), "f1".to_owned(), rf)
        ],
        "a listing shows updates, drops deleted keys and shows new ones"
    );
    assert_eq!(now.revision, rf);

    let old = store
        .list(
            "/registry/pods/default/",
            ListOptions {
                revision: Some(then),
                ..ListOptions::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("list at {then}: {e}"));
    assert_eq!(
        (summary(&old.items), old.revision),
        (
            vec![
                (a.to_owned(), "a1".to_owned(), ra),
                (b.to_owned(), "b1".to_owned(), rb)
            ],
            then
        ),
        "a listing at an older revision shows the state of then"
    );

    let future = rf + 1000;
    match store
        .list(
            "/registry/pods/",
            ListOptions {
                revision: Some(future),
                ..ListOptions::default()
            },
        )
        .await
    {
        Err(StoreError::FutureRevision { requested, current }) => {
            assert_eq!((requested, current), (future, rf));
        }
        other => panic!("a listing at a future revision returned {other:?}"),
    }
}

/// `limit` and `start_after` page through a prefix; pages at the first page's revision are one
/// consistent snapshot even when keys change in between.
pub async fn list_pages_at_one_revision(store: Arc<dyn Store>) {
    let store = &*store;
    let keys: Vec<String> = (0..5)
        .map(|i| format!("/registry/secrets/default/s{i}"))
        .collect();
    for key in &keys {
        create(store, key, "v1").await;
    }
    let page = |start_after: Option<String>, revision: Option<Revision>| ListOptions {
        revision,
        limit: Some(2),
        start_after,
    };
    let first = store
        .list("/registry/secrets/", page(None, None))
        .await
        .unwrap_or_else(|e| panic!("list page 1: {e}"));
    let names = |items: &[KeyValue]| items.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&first.items),
        keys[..2],
        "the first page holds the first two keys"
    );
    assert!(first.more, "a cut listing says there is more");

    // A change between pages must not show up in the later pages.
    store
        .delete(&keys[2], None)
        .await
        .unwrap_or_else(|e| panic!("delete: {e}"));
    create(store, "/registry/secrets/default/s10", "new").await;

    let mut seen = names(&first.items);
    let mut last = first.items.last().map(|kv| kv.key.clone());
    loop {
        let next = store
            .list(
                "/registry/secrets/",
                page(last.clone(), Some(first.revision)),
            )
            .await
            .unwrap_or_else(|e| panic!("list a later page: {e}"));
        assert_eq!(next.revision, first.revision);
        assert!(next.items.len() <= 2, "a page holds at most `limit` items");
        seen.extend(names(&next.items));
        last = next.items.last().map(|kv| kv.key.clone());
        if !next.more {
            break;
        }
    }
    assert_eq!(
        seen, keys,
        "the pages together are the listing at the first page's revision"
    );
}

/// Every write takes a new, higher revision, also when writers race; the current revision is the
/// last write's.
pub async fn revisions_strictly_increase(store: Arc<dyn Store>) {
    let mut last = current(&*store).await;
    for i in 0..5 {
        let key = format!("/registry/configmaps/default/c{i}");
        let created = create(&*store, &key, "v1").await;
        let updated = update(&*store, &key, "v2", created).await;
        let deleted = store
            .delete(&key, Some(updated))
            .await
            .unwrap_or_else(|e| panic!("delete {key}: {e}"))
            .revision;
        for revision in [created, updated, deleted] {
            assert!(revision > last, "revision {revision} after {last}");
            last = revision;
        }
    }
    assert_eq!(
        current(&*store).await,
        last,
        "the current revision is the last write's"
    );

    let start = last;
    let mut writers = Vec::new();
    for task in 0..8 {
        let store = Arc::clone(&store);
        writers.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..10 {
                let key = format!("/registry/configmaps/race/t{task}-{i}");
                revisions.push(create(&*store, &key, "v").await);
            }
            revisions
        }));
    }
    let mut all = BTreeSet::new();
    for writer in writers {
        for revision in writer.await.expect("a writer task panicked") {
            assert!(
                revision > start,
                "a racing write got revision {revision} <= {start}"
            );
            assert!(
                all.insert(revision),
                "two racing writes got revision {revision}"
            );
        }
    }
    assert_eq!(all.len(), 80);
    assert_eq!(
        all.last().copied(),
        Some(current(&*store).await),
        "the current revision is the last racing write's"
    );
}

/// 16 tasks increment one counter with read-modify-write loops. Every lost race is reported as
/// `Conflict` against the revision the loser read, and no increment is lost.
pub async fn racing_updates_lose_nothing(store: Arc<dyn Store>) {
    const TASKS: usize = 16;
    const INCREMENTS: usize = 20;
    let key = "/registry/leases/kube-system/counter";
    create(&*store, key, "0").await;
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            let mut conflicts = 0_usize;
            while revisions.len() < INCREMENTS {
                let kv = get(&*store, key, None).await.expect("the counter exists");
                let count: usize = text(&kv.value)
                    .parse()
                    .unwrap_or_else(|e| panic!("the counter holds {:?}: {e}", kv.value));
                match store
                    .update(key, bytes(&(count + 1).to_string()), kv.mod_revision)
                    .await
                {
                    Ok(revision) => revisions.push(revision),
                    Err(StoreError::Conflict {
                        expected, actual, ..
                    }) => {
                        assert_eq!(
                            expected, kv.mod_revision,
                            "Conflict names the expected revision"
                        );
                        assert!(actual > expected, "Conflict names a newer actual revision");
                        conflicts += 1;
                    }
                    Err(other) => panic!("a racing update failed with {other}, expected Conflict"),
                }
            }
            (revisions, conflicts)
        }));
    }
    let mut revisions = BTreeSet::new();
    let mut conflicts = 0;
    for task in tasks {
        let (won, lost) = task.await.expect("an updater task panicked");
        conflicts += lost;
        for revision in won {
            assert!(
                revisions.insert(revision),
                "two updates got revision {revision}"
            );
        }
    }
    let kv = get(&*store, key, None).await.expect("the counter exists");
    assert_eq!(
        text(&kv.value),
        (TASKS * INCREMENTS).to_string(),
        "the counter must equal the number of successful updates ({conflicts} conflicts seen)"
    );
    assert_eq!(revisions.last().copied(), Some(kv.mod_revision));
}

/// A watch delivers every change under its prefix, and only those, in revision order with the
/// right kinds, values and previous values, also when writers race.
pub async fn watch_delivers_events_in_revision_order(store: Arc<dyn Store>) {
    let prefix = "/registry/services/default/";
    let start = current(&*store).await;
    let mut services = watch(&*store, prefix, start).await;
    let mut everything = watch(&*store, "/registry/", start).await;

    let a = "/registry/services/default/a";
    let b = "/registry/services/default/b";
    let r1 = create(&*store, a, "a1").await;
    let r2 = update(&*store, a, "a2", r1).await;
    let r3 = create(&*store, b, "b1").await;
    let outside = create(&*store, "/registry/services/other/x", "x1").await;
    let r5 = store
        .delete(a, Some(r2))
        .await
        .unwrap_or_else(|e| panic!("delete {a}: {e}"))
        .revision;
    let r6 = update(&*store, b, "b2", r3).await;
    let expected = [
        (EventKind::Added, a, "a1", r1, None),
        (EventKind::Modified, a, "a2", r2, Some("a1")),
        (EventKind::Added, b, "b1", r3, None),
        (EventKind::Deleted, a, "a2", r5, Some("a2")),
        (EventKind::Modified, b, "b2", r6, Some("b1")),
    ];
    let owned =
        |(kind, key, value, revision, prev): (EventKind, &str, &str, Revision, Option<&str>)| {
            (
                kind,
                key.to_owned(),
                value.to_owned(),
                revision,
                prev.map(str::to_owned),
            )
        };
    for event in expected {
        assert_eq!(
            next_event(&mut services).await,
            owned(event),
            "watch of {prefix}"
        );
    }
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(next_event(&mut everything).await.3);
    }
    assert_eq!(
        seen,
        [r1, r2, r3, outside, r5, r6],
        "a wider watch sees every write in order"
    );

    // Racing writers: the watch sees exactly their revisions, ascending.
    let mut writers = Vec::new();
    for task in 0..8 {
        let store = Arc::clone(&store);
        writers.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..25 {
                let key = format!("/registry/services/default/t{task}-{i}");
                revisions.push(create(&*store, &key, "v").await);
            }
            revisions
        }));
    }
    let mut written = Vec::new();
    for writer in writers {
        written.extend(writer.await.expect("a writer task panicked"));
    }
    written.sort_unstable();
    let mut delivered = Vec::new();
    for _ in 0..written.len() {
        let (kind, key, _, revision, _) = next_event(&mut services).await;
        assert_eq!(kind, EventKind::Added, "{key} was created");
        delivered.push(revision);
    }
    assert_eq!(
        delivered, written,
        "racing writes arrive once each, in revision order"
    );
}

/// A watch from revision R replays exactly the writes after R, then follows live writes, with
/// nothing missed or repeated at the switch.
pub async fn watch_resumes_from_a_revision_without_gap_or_repeat(store: Arc<dyn Store>) {
    let store = &*store;
    let prefix = "/registry/endpoints/default/";
    let a = "/registry/endpoints/default/a";
    let b = "/registry/endpoints/default/b";
    let r1 = create(store, a, "a1").await;
    let r2 = update(store, a, "a2", r1).await;
    let r3 = create(store, b, "b1").await;

    let mut stream = watch(store, prefix, r1).await;
    assert_eq!(
        next_event(&mut stream).await,
        (
            EventKind::Modified,
            a.to_owned(),
            "a2".to_owned(),
            r2,
            Some("a1".to_owned())
        ),
        "the replay starts right after the watch's revision"
    );
    assert_eq!(next_event(&mut stream).await.3, r3);
    let r4 = store
        .delete(a, None)
        .await
        .unwrap_or_else(|e| panic!("delete {a}: {e}"))
        .revision;
    assert_eq!(
        next_event(&mut stream).await,
        (
            EventKind::Deleted,
            a.to_owned(),
            "a2".to_owned(),
            r4,
            Some("a2".to_owned())
        ),
        "live events follow the replay"
    );
    let r5 = create(store, "/registry/endpoints/default/c", "c1").await;
    assert_eq!(
        next_event(&mut stream).await.3,
        r5,
        "the next event is the next write"
    );

    // The list-then-watch pattern of every Kubernetes client.
    let listing = store
        .list(prefix, ListOptions::default())
        .await
        .unwrap_or_else(|e| panic!("list: {e}"));
    let r6 = update(store, b, "b2", r3).await;
    let mut from_listing = watch(store, prefix, listing.revision).await;
    assert_eq!(
        next_event(&mut from_listing).await.3,
        r6,
        "a watch from a listing's revision starts with the first change after it"
    );
}

/// Writers keep writing while watches start, again and again, from revisions at and shortly
/// before the current one: each watch gets exactly the writes after its revision, whether they
/// came from the history or live, with no gap or repeat where the two meet.
pub async fn watch_resumes_while_writes_race(store: Arc<dyn Store>) {
    const WRITERS: usize = 8;
    const WRITES: usize = 50;
    const WATCHES: usize = 40;
    let prefix = "/registry/events/default/";
    let start = current(&*store).await;
    let end = start + (WRITERS * WRITES) as Revision;
    let mut writers = Vec::new();
    for task in 0..WRITERS {
        let store = Arc::clone(&store);
        writers.push(tokio::spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..WRITES {
                let key = format!("/registry/events/default/w{task}-{i}");
                revisions.push(create(&*store, &key, "v").await);
            }
            revisions
        }));
    }
    let mut watches = Vec::new();
    for back in [0, 1, 3, 10].into_iter().cycle().take(WATCHES) {
        let now = current(&*store).await;
        if now >= end {
            break;
        }
        let from = (now - back).max(start);
        watches.push((from, watch(&*store, prefix, from).await));
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    let mut written = Vec::new();
    for writer in writers {
        written.extend(writer.await.expect("a writer task panicked"));
    }
    written.sort_unstable();
    assert!(
        watches.len() >= 4,
        "the writers finished before 4 watches started; the case tested nothing"
    );
    let sentinel = create(&*store, "/registry/events/default/sentinel", "end").await;
    for (from, mut stream) in watches {
        let expected: Vec<Revision> = written
            .iter()
            .copied()
            .filter(|revision| *revision > from)
            .chain([sentinel])
            .collect();
        let mut delivered = Vec::new();
        for _ in 0..expected.len() {
            delivered.push(next_event(&mut stream).await.3);
        }
        assert_eq!(
            delivered, expected,
            "a watch from revision {from} gets exactly the writes after it, in order"
        );
    }
}

/// After compaction the current state is intact (no deleted key comes back), reads and watches
/// at or after the compaction point work, and those before it fail with `Compacted`.
pub async fn compaction_keeps_the_current_state_and_refuses_old_revisions(store: Arc<dyn Store>) {
    let store = &*store;
    let prefix = "/registry/deployments/default/";
    let a = "/registry/deployments/default/a";
    let b = "/registry/deployments/default/b";
    let c = "/registry/deployments/default/c";
    let r1 = create(store, a, "a1").await;
    let r2 = update(store, a, "a2", r1).await;
    let r3 = update(store, a, "a3", r2).await;
    let r4 = create(store, b, "b1").await;
    let r5 = store
        .delete(b, None)
        .await
        .unwrap_or_else(|e| panic!("delete {b}: {e}"))
        .revision;
    store
        .compact(r5)
        .await
        .unwrap_or_else(|e| panic!("compact to {r5}: {e}"));
    let r6 = create(store, c, "c1").await;

    match store.watch(prefix, r1).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => assert_eq!(
            (requested, compacted),
            (r1, r5),
            "the watch names both revisions"
        ),
        Err(other) => panic!("a watch from a compacted revision failed with {other}"),
        Ok(_) => panic!("a watch from a compacted revision started"),
    }
    match store.get(a, Some(r2)).await {
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => assert_eq!((requested, compacted), (r2, r5)),
        other => panic!("a get at a compacted revision returned {other:?}"),
    }
    let old_listing = ListOptions {
        revision: Some(r4),
        ..ListOptions::default()
    };
    match store.list(prefix, old_listing).await {
        Err(StoreError::Compacted { requested, .. }) => assert_eq!(requested, r4),
        other => panic!("a listing at a compacted revision returned {other:?}"),
    }

    let kv = get(store, a, None)
        .await
        .expect("a live key survives compaction");
    assert_eq!(
        (text(&kv.value), kv.create_revision, kv.mod_revision),
        ("a3".to_owned(), r1, r3)
    );
    assert_eq!(
        get(store, b, None).await,
        None,
        "a deleted key stays deleted"
    );
    assert_eq!(
        get(store, a, Some(r5)).await.map(|kv| text(&kv.value)),
        Some("a3".to_owned()),
        "the state at the compaction point is readable"
    );
    let listing = store
        .list(prefix, ListOptions::default())
        .await
        .unwrap_or_else(|e| panic!("list: {e}"));
    assert_eq!(
        summary(&listing.items),
        [
            (a.to_owned(), "a3".to_owned(), r3),
            (c.to_owned(), "c1".to_owned(), r6)
        ]
    );
    let at_compaction = ListOptions {
        revision: Some(r5),
        ..ListOptions::default()
    };
    let listing = store
        .list(prefix, at_compaction)
        .await
        .unwrap_or_else(|e| panic!("list at the compaction point: {e}"));
    assert_eq!(
        summary(&listing.items),
        [(a.to_owned(), "a3".to_owned(), r3)]
    );

    let mut stream = watch(store, prefix, r5).await;
    assert_eq!(
        next_event(&mut stream).await,
        (EventKind::Added, c.to_owned(), "c1".to_owned(), r6, None),
        "a watch from the compaction point replays what came after"
    );
    let r7 = update(store, a, "a4", r3).await;
    assert_eq!(
        next_event(&mut stream).await,
        (
            EventKind::Modified,
            a.to_owned(),
            "a4".to_owned(),
            r7,
            Some("a3".to_owned())
        ),
        "and follows live writes"
    );

    store
        .compact(r5)
        .await
        .unwrap_or_else(|e| panic!("compacting again to {r5}: {e}"));
    store
        .compact(r2)
        .await
        .unwrap_or_else(|e| panic!("compacting to below the compaction point: {e}"));
    match store.compact(r7 + 100).await {
        Err(StoreError::FutureRevision { requested, current }) => {
            assert_eq!((requested, current), (r7 + 100, r7));
        }
        other => panic!("compacting to a future revision returned {other:?}"),
    }
    assert!(create(store, "/registry/deployments/default/d", "d1").await > r7);
}

//! Smoke test: a real etcd started by the harness, driven through etcd-client (the client the
//! etcd store backend uses).

use etcd_client::{EventType, WatchOptions};
use keelson_tests::etcd::Etcd;

#[tokio::test]
async fn etcd_stores_and_watches_through_etcd_client() {
    let etcd = Etcd::start().await;
    let mut client = etcd.client().await;

    let first = client
        .put("/registry/smoke/a", "one", None)
        .await
        .expect("put a");
    let first_rev = first.header().expect("put has a header").revision();
    let got = client.get("/registry/smoke/a", None).await.expect("get a");
    assert_eq!(got.kvs().len(), 1);
    assert_eq!(got.kvs()[0].value(), b"one");
    assert_eq!(got.kvs()[0].mod_revision(), first_rev);

    client
        .put("/registry/smoke/b", "two", None)
        .await
        .expect("put b");
    client
        .delete("/registry/smoke/a", None)
        .await
        .expect("delete a");

    // A watch from the first revision replays all three changes in order.
    let mut stream = client
        .watch(
            "/registry/smoke/",
            Some(
                WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(first_rev),
            ),
        )
        .await
        .expect("watch");
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while seen.len() < 3 {
        let message = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("watch events within 10 s")
            .expect("watch stream error")
            .expect("watch stream ended");
        for event in message.events() {
            let kv = event.kv().expect("event has a key");
            seen.push((
                event.event_type(),
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.mod_revision(),
            ));
        }
    }
    assert_eq!(
        seen.iter()
            .map(|(t, k, _)| (*t, k.as_str()))
            .collect::<Vec<_>>(),
        [
            (EventType::Put, "/registry/smoke/a"),
            (EventType::Put, "/registry/smoke/b"),
            (EventType::Delete, "/registry/smoke/a"),
        ]
    );
    assert!(
        seen.windows(2).all(|w| w[0].2 < w[1].2),
        "revisions increase: {seen:?}"
    );
}

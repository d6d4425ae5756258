//! The watch cache as a client sees it: consistent lists, 410 below compaction, slow watchers
//! closed without holding up the others.

use super::*;
use keelson_apiserver::watchcache::WatchCacheOptions;

/// A server whose watch cache closes a watch that falls `buffer` events behind; also returns
/// the store the server itself uses (through the cache), as the compactor gets it.
async fn cached_server(buffer: usize) -> (Server, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = bootstrapped_store(dir.path()).await;
    let state = AppState::new(Arc::clone(&store))
        .with_watch_cache_options(WatchCacheOptions {
            window: 256,
            watcher_buffer: buffer,
        })
        .with_authenticator(Authenticator::default().with_token(
            ADMIN_TOKEN,
            UserInfo::new("kubernetes-admin", &[MASTERS_GROUP]),
        ));
    let cached = Arc::clone(state.store());
    let server = Server {
        store,
        router: app(state),
        _dir: dir,
    };
    (server, cached)
}

fn resource_version(object: &Value) -> i64 {
    object["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or_else(|| panic!("no numeric resourceVersion: {object}"))
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {list}"))
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// A list without resourceVersion sees every write made before it, through the API or
/// straight into the store underneath, at a resourceVersion no older than the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_at_resource_version_empty_sees_the_write_before_it() {
    let (s, _) = cached_server(1024).await;
    // Fills the cache.
    assert!(names(&s.ok(Method::GET, CONFIGMAPS, None).await).is_empty());
    let mut expected = Vec::new();
    for i in 0..20 {
        let name = format!("c{i:02}");
        let written = if i % 2 == 0 {
            resource_version(
                &s.ok(Method::POST, CONFIGMAPS, Some(configmap(&name, json!({}))))
                    .await,
            )
        } else {
            let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": "default"}});
            s.store
                .create(
                    &format!("/registry/configmaps/default/{name}"),
                    body.to_string().into(),
                )
                .await
                .expect("write into the store")
        };
        expected.push(name);
        let list = s.ok(Method::GET, CONFIGMAPS, None).await;
        assert_eq!(names(&list), expected, "the list after write {i}");
        let listed_at: i64 = list["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|rv| rv.parse().ok())
            .expect("list resourceVersion");
        assert!(
            listed_at >= written,
            "listed at {listed_at}, written at {written}"
        );
    }
    // Paged from memory and from the store: the same objects, in order, once.
    let first = s
        .ok(Method::GET, &format!("{CONFIGMAPS}?limit=7"), None)
        .await;
    let token = first["metadata"]["continue"]
        .as_str()
        .expect("continue")
        .to_owned();
    s.ok(
        Method::POST,
        CONFIGMAPS,
        Some(configmap("zz-later", json!({}))),
    )
    .await;
    let second = s
        .ok(
            Method::GET,
            &format!("{CONFIGMAPS}?limit=100&continue={token}"),
            None,
        )
        .await;
    let mut paged = names(&first);
    paged.extend(names(&second));
    assert_eq!(paged, expected, "pages at the first page's revision");
}

/// A watch from a resourceVersion compacted away gets 410 Expired, though the cache's
/// window still holds the events after it; one from after the compaction resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_a_compacted_resource_version_is_410() {
    let (s, cached) = cached_server(1024).await;
    s.ok(Method::GET, CONFIGMAPS, None).await;
    let mut current = s
        .ok(Method::POST, CONFIGMAPS, Some(configmap("c", json!({}))))
        .await;
    let old = resource_version(&current);
    let mut revisions = Vec::new();
    for i in 0..4 {
        current["data"]["k"] = json!(format!("v{i}"));
        current = s
            .ok(
                Method::PUT,
                &format!("{CONFIGMAPS}/c"),
                Some(current.clone()),
            )
            .await;
        revisions.push(resource_version(&current));
    }
    cached.compact(revisions[1]).await.expect("compact");
    let (status, events, _) = watch_events(
        &s.router,
        &format!("{CONFIGMAPS}?watch=true&resourceVersion={old}"),
        1,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(events[0]["type"], "ERROR", "{events:?}");
    assert_status(&events[0]["object"], 410, "Expired");

    let (_, events, _) = watch_events(
        &s.router,
        &format!("{CONFIGMAPS}?watch=true&resourceVersion={}", revisions[1]),
        2,
    )
    .await;
    assert_eq!(
        events
            .iter()
            .map(|e| resource_version(&e["object"]))
            .collect::<Vec<_>>(),
        revisions[2..],
        "the events after the resumed resourceVersion"
    );
}

/// A watch whose client stops reading is closed once it falls the buffer behind; a watch
/// that reads receives every event meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_watcher_is_closed_and_the_others_still_receive() {
    let (s, _) = cached_server(8).await;
    let list = s.ok(Method::GET, CONFIGMAPS, None).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_owned();
    let uri = format!("{CONFIGMAPS}?watch=true&resourceVersion={rv}&timeoutSeconds=60");
    let blocked = s
        .router
        .clone()
        .oneshot(
            Request::builder()
                .uri(&uri)
                .header(header::AUTHORIZATION, bearer(ADMIN_TOKEN))
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("the router answers");
    assert_eq!(blocked.status(), StatusCode::OK);
    const WRITES: usize = 150;
    let reader = {
        let (router, uri) = (s.router.clone(), uri.clone());
        tokio::spawn(async move { watch_events(&router, &uri, WRITES).await.1 })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..WRITES {
        s.ok(
            Method::POST,
            CONFIGMAPS,
            Some(configmap(&format!("w{i:03}"), json!({}))),
        )
        .await;
    }
    let events = reader.await.expect("reader task");
    assert_eq!(events.len(), WRITES, "the reading watch got every event");
    assert!(events.iter().all(|e| e["type"] == "ADDED"));

    // The blocked one: what was buffered for it, then the end of the stream.
    let mut stream = blocked.into_body().into_data_stream();
    let mut lines = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(chunk)) => {
                lines += chunk
                    .expect("chunk")
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count();
            }
            Ok(None) => break,
            Err(_) => panic!("the blocked watch is still open after {lines} events"),
        }
    }
    assert!(
        lines < WRITES,
        "the blocked watch was closed after {lines} of {WRITES} events"
    );
}

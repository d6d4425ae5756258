//! Durability of the embedded SQLite store under `kill -9`: every write the API server
//! acknowledged with a 2xx is there after a restart, with content at least as new as
//! acknowledged, nothing is corrupt, and revisions keep growing after the restart.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use keelson_tests::cluster::ControlPlane;
use kube::{
    Api,
    api::{ListParams, ObjectMeta, PostParams},
};

const NAMESPACE: &str = "durability";
const WRITERS: usize = 8;
/// Objects each writer creates at most; each gets a create and `UPDATES` replaces.
const OBJECTS_PER_WRITER: usize = 400;
const UPDATES: u64 = 2;
/// The kill comes after this many acknowledged writes (or after `KILL_AFTER`).
const KILL_AT_ACKS: usize = 1500;
const KILL_AFTER: Duration = Duration::from_secs(20);

/// The newest acknowledged version of one ConfigMap.
#[derive(Debug, Clone, Copy)]
struct Ack {
    version: u64,
    resource_version: u64,
}

fn config_map(name: &str, version: u64, resource_version: Option<String>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            resource_version,
            labels: Some([("test".to_owned(), "durability".to_owned())].into()),
            ..ObjectMeta::default()
        },
        data: Some(
            [
                ("version".to_owned(), version.to_string()),
                ("payload".to_owned(), payload(name, version)),
            ]
            .into(),
        ),
        ..ConfigMap::default()
    }
}

/// A body that ties the content to the name and version, so a torn or mixed-up row shows.
fn payload(name: &str, version: u64) -> String {
    format!("{name}@{version};").repeat(8)
}

fn revision(cm: &ConfigMap) -> u64 {
    cm.metadata
        .resource_version
        .as_deref()
        .and_then(|rv| rv.parse().ok())
        .unwrap_or_else(|| panic!("resourceVersion is not a number: {:?}", cm.metadata))
}

/// One writer: creates its ConfigMaps one after the other and replaces each `UPDATES` times,
/// recording every acknowledged write, until a request fails (the kill) or its loop ends.
async fn writer(
    api: Api<ConfigMap>,
    id: usize,
    acks: Arc<Mutex<BTreeMap<String, Ack>>>,
    acked: Arc<AtomicUsize>,
) -> Result<(), String> {
    let record = |name: &str, cm: &ConfigMap, version: u64| {
        let ack = Ack {
            version,
            resource_version: revision(cm),
        };
        acks.lock().expect("acks lock").insert(name.to_owned(), ack);
        acked.fetch_add(1, Ordering::Relaxed);
    };
    for k in 0..OBJECTS_PER_WRITER {
        let name = format!("w{id}-{k}");
        let mut current = api
            .create(&PostParams::default(), &config_map(&name, 0, None))
            .await
            .map_err(|e| format!("create {name}: {e}"))?;
        record(&name, &current, 0);
        for version in 1..=UPDATES {
            let next = config_map(&name, version, current.metadata.resource_version.clone());
            current = api
                .replace(&name, &PostParams::default(), &next)
                .await
                .map_err(|e| format!("replace {name} to version {version}: {e}"))?;
            record(&name, &current, version);
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let mut plane = ControlPlane::start();
    let client = plane.client().await;
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(NAMESPACE.to_owned()),
                    ..ObjectMeta::default()
                },
                ..Namespace::default()
            },
        )
        .await
        .expect("create the namespace");
    let api = Api::<ConfigMap>::namespaced(client, NAMESPACE);

    let acks = Arc::new(Mutex::new(BTreeMap::new()));
    let acked = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| {
            let (api, acks, acked, finished) = (
                api.clone(),
                Arc::clone(&acks),
                Arc::clone(&acked),
                Arc::clone(&finished),
            );
            tokio::spawn(async move {
                let result = writer(api, id, acks, acked).await;
                if result.is_ok() {
                    finished.store(true, Ordering::Relaxed);
                }
                result
            })
        })
        .collect();

    // Kill mid-loop, while every writer still has requests in flight.
    let started = Instant::now();
    while acked.load(Ordering::Relaxed) < KILL_AT_ACKS && started.elapsed() < KILL_AFTER {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        !finished.load(Ordering::Relaxed),
        "a writer finished its whole loop before the kill; raise OBJECTS_PER_WRITER"
    );
    let acked_at_kill = acked.load(Ordering::Relaxed);
    assert!(
        acked_at_kill > 100,
        "only {acked_at_kill} writes were acknowledged in {KILL_AFTER:?}; log:\n{}",
        plane.log()
    );
    plane.kill();
    let killed_at = Instant::now();

    let mut failures = 0;
    for task in writers {
        let result = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("a writer still runs 30 s after the kill")
            .expect("writer task panicked");
        if result.is_err() {
            failures += 1;
        }
    }
    assert_eq!(
        failures, WRITERS,
        "every writer should have been cut off by the kill"
    );
    let acks = acks.lock().expect("acks lock").clone();
    let max_acked = acks
        .values()
        .map(|a| a.resource_version)
        .max()
        .expect("acknowledged writes");
    eprintln!(
        "killed after {} acknowledged writes ({} objects) in {:.1} s",
        acked.load(Ordering::Relaxed),
        acks.len(),
        killed_at.duration_since(started).as_secs_f64()
    );

    tokio::task::block_in_place(|| plane.restart());
    let api = Api::<ConfigMap>::namespaced(plane.client().await, NAMESPACE);

    // Every acknowledged write is there, at least as new as acknowledged.
    let listed = api
        .list(&ListParams::default().labels("test=durability"))
        .await
        .unwrap_or_else(|e| panic!("list after restart: {e}\nlog:\n{}", plane.log()));
    let stored: BTreeMap<String, ConfigMap> = listed
        .items
        .into_iter()
        .map(|cm| (cm.metadata.name.clone().expect("a name"), cm))
        .collect();
    for (name, ack) in &acks {
        let cm = stored
            .get(name)
            .unwrap_or_else(|| panic!("acknowledged {name} ({ack:?}) is gone after kill -9"));
        let data = cm.data.as_ref().expect("data");
        let version: u64 = data["version"].parse().expect("version is a number");
        assert!(
            version >= ack.version && revision(cm) >= ack.resource_version,
            "{name} went back in time: acknowledged version {} at rv {}, found version {version} \
             at rv {}",
            ack.version,
            ack.resource_version,
            revision(cm)
        );
    }
    // Whatever is there (including writes in flight at the kill) is intact.
    for (name, cm) in &stored {
        let data = cm.data.as_ref().expect("data");
        let version: u64 = data["version"].parse().expect("version is a number");
        assert!(
            version <= UPDATES && data["payload"] == payload(name, version),
            "{name} is corrupt: {data:?}"
        );
    }
    assert!(
        stored.len() <= acks.len() + WRITERS,
        "{} objects stored but only {} acknowledged and {WRITERS} in flight",
        stored.len(),
        acks.len()
    );

    // Revisions keep growing: a new write lands above everything acknowledged before the kill.
    let after = api
        .create(
            &PostParams::default(),
            &config_map("after-restart", 0, None),
        )
        .await
        .expect("create after restart");
    assert!(
        revision(&after) > max_acked,
        "the first write after restart got rv {} but rv {max_acked} was acknowledged before",
        revision(&after)
    );
    // (A changed body: an update that changes nothing keeps its resourceVersion, as on
    // Kubernetes.)
    let (name, ack) = acks.iter().next().expect("an acknowledged write");
    let current = &stored[name];
    let updated = api
        .replace(
            name,
            &PostParams::default(),
            &config_map(
                name,
                ack.version + 10,
                current.metadata.resource_version.clone(),
            ),
        )
        .await
        .expect("update after restart");
    assert!(
        revision(&updated) > revision(&after),
        "an update after restart got rv {} below the create before it ({})",
        revision(&updated),
        revision(&after)
    );
}

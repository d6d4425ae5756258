//! Creates while the store compacts a long history, at the store level (no API server): how
//! long a compaction of 100 000 revisions stalls the writes that arrive during it.
//! kube-apiserver asks its store to compact every five minutes, so this happens under load in
//! every cluster; kine's compaction takes the write path for seconds.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Instant,
};

use anyhow::Context as _;
use bytes::Bytes;
use keelson_store::{SqliteOptions, SqliteStore, Store};

use super::{load, procs::ScratchDir, report::CompactionFigures, report::Percentiles};

/// Keys whose updates make up the history; each is written `revisions / KEYS` times.
const KEYS: usize = 1000;
/// Writes in flight while the history is written.
const FILL_CONCURRENCY: usize = 256;

/// Writes `revisions` revisions (updates of [`KEYS`] keys with `value_bytes`-byte values) into
/// a fresh embedded store, then compacts all of them while `concurrency` creates run in a
/// closed loop, and reports the compaction's duration and the creates' latency during it.
pub async fn sqlite_under_compaction(
    revisions: usize,
    concurrency: usize,
    value_bytes: usize,
) -> anyhow::Result<CompactionFigures> {
    let dir = ScratchDir::new("compaction")?;
    let store = Arc::new(
        SqliteStore::open(dir.path().join("store.db"), SqliteOptions::default())
            .await
            .context("cannot open the embedded store")?,
    );
    let value = Bytes::from(vec![b'x'; value_bytes]);
    fill(&store, revisions, &value).await?;
    let compact_to = store.current_revision().await?;

    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (store, stop, next, value) = (
                Arc::clone(&store),
                Arc::clone(&stop),
                Arc::clone(&next),
                value.clone(),
            );
            tokio::spawn(async move {
                let mut latency = load::histogram();
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let sent = Instant::now();
                    store
                        .create(&format!("/during/cm-{i:07}"), value.clone())
                        .await
                        .with_context(|| format!("create {i} during the compaction"))?;
                    load::record(&mut latency, sent.elapsed());
                }
                anyhow::Ok(latency)
            })
        })
        .collect();
    let started = Instant::now();
    let compacted = store.compact(compact_to).await;
    let duration = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut latency = load::histogram();
    for worker in workers {
        let histogram = worker.await.context("create worker panicked")??;
        latency.add(&histogram).context("same histogram bounds")?;
    }
    compacted.context("the compaction failed")?;
    Ok(CompactionFigures {
        store: "sqlite".into(),
        revisions: compact_to,
        duration_s: duration.as_secs_f64(),
        creates: latency.len(),
        concurrency,
        latency: Percentiles::of(&latency),
        max_ms: latency.max() as f64 / 1000.0,
    })
}

/// `revisions` writes: a create of each of [`KEYS`] keys, then updates round-robin.
async fn fill(store: &Arc<SqliteStore>, revisions: usize, value: &Bytes) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..FILL_CONCURRENCY.min(KEYS))
        .map(|w| {
            let (store, next, value) = (Arc::clone(store), Arc::clone(&next), value.clone());
            tokio::spawn(async move {
                // Worker w owns keys w, w + FILL_CONCURRENCY, ...: its writes to a key are in
                // order, so every update names the revision it read.
                let mut owned: Vec<(usize, i64)> = Vec::new();
                let mut k = w;
                while k < KEYS {
                    owned.push((k, 0));
                    k += FILL_CONCURRENCY;
                }
                let mut turn = 0;
                while next.fetch_add(1, Ordering::Relaxed) < revisions {
                    let slot = turn % owned.len();
                    let (key, revision) = &mut owned[slot];
                    let name = format!("/history/key-{key:05}");
                    let written = if *revision == 0 {
                        store.create(&name, value.clone()).await
                    } else {
                        store.update(&name, value.clone(), *revision).await
                    };
                    *revision = written.with_context(|| format!("write {name}"))?;
                    turn += 1;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.await.context("fill worker panicked")??;
    }
    Ok(())
}

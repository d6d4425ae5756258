//! Creates/s of a store with N concurrent writers, for comparing group commit on SQLite with
//! etcd. Not a benchmark suite (`cargo xtask bench api` is); a probe to run by hand:
//!
//! ```sh
//! cargo run --release -p keelson-store --example store_throughput -- sqlite 1 5000
//! cargo run --release -p keelson-store --example store_throughput -- sqlite 64 50000
//! cargo run --release -p keelson-store --example store_throughput -- etcd 64 50000 http://127.0.0.1:2379
//! ```
//!
//! Arguments: backend (`sqlite` or `etcd`), writers, total creates, etcd endpoint. The SQLite
//! store lives in a fresh directory under the system temp dir and is removed afterwards.

use std::{error::Error, sync::Arc, time::Instant};

use bytes::Bytes;
use keelson_store::{EtcdStore, SqliteOptions, SqliteStore, Store};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: store_throughput sqlite|etcd WRITERS CREATES [ETCD_ENDPOINT]";
    let backend = args.first().ok_or(usage)?.clone();
    let writers: usize = args.get(1).ok_or(usage)?.parse()?;
    let creates: usize = args.get(2).ok_or(usage)?.parse()?;
    let dir = std::env::temp_dir().join(format!("keelson-store-throughput-{}", std::process::id()));
    let (store, sqlite): (Arc<dyn Store>, Option<Arc<SqliteStore>>) = match backend.as_str() {
        "sqlite" => {
            let store =
                Arc::new(SqliteStore::open(dir.join("store.db"), SqliteOptions::default()).await?);
            (Arc::clone(&store) as Arc<dyn Store>, Some(store))
        }
        "etcd" => {
            let endpoint = args.get(3).ok_or(usage)?;
            (Arc::new(EtcdStore::connect(&[endpoint]).await?), None)
        }
        _ => return Err(usage.into()),
    };
    // A value the size of a small Kubernetes object.
    let value = Bytes::from(vec![b'x'; 512]);
    let run = format!("{:x}", std::process::id());
    let started = Instant::now();
    let mut tasks = Vec::new();
    for writer in 0..writers {
        let store = Arc::clone(&store);
        let value = value.clone();
        let run = run.clone();
        let count = creates / writers + usize::from(writer < creates % writers);
        tasks.push(tokio::spawn(async move {
            for i in 0..count {
                let key = format!("/registry/configmaps/bench-{run}/w{writer}-{i}");
                store.create(&key, value.clone()).await?;
            }
            Ok::<_, keelson_store::StoreError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed();
    println!(
        "{backend}: {creates} creates by {writers} writers in {:.2} s = {:.0} creates/s",
        elapsed.as_secs_f64(),
        creates as f64 / elapsed.as_secs_f64()
    );
    if let Some(sqlite) = sqlite {
        let stats = sqlite.stats();
        println!(
            "sqlite: {} commits, {:.1} writes per commit",
            stats.commits,
            stats.writes as f64 / stats.commits.max(1) as f64
        );
        drop(store);
        drop(sqlite);
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

//! The anchor of the create figures: raw puts to a single-member etcd through etcd-client, at
//! the same concurrency as the API creates and with values of the size the API stores, durable
//! as etcd is by default (its WAL is fsynced before a put is answered). An API server's creates
//! cost more than a put (HTTP, JSON, admission, a conditional transaction), so the ratio of
//! creates/s to these puts/s says how much of etcd's own write rate the server keeps, or how
//! far the embedded store goes beyond it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;

use super::{load, procs::CpuMeter, report::EtcdAnchor};

/// gRPC connections the puts are spread over (etcd's `benchmark` tool's `--conns`): enough
/// that one HTTP/2 connection is not what limits etcd.
const CONNECTIONS: usize = 4;

/// `count` puts of distinct keys with `value_bytes`-byte values to the etcd at `endpoint`
/// (pid `etcd_pid`, for the CPU figure), `concurrency` in flight (closed loop).
pub async fn raw_puts(
    endpoint: &str,
    etcd_pid: u32,
    count: usize,
    concurrency: usize,
    value_bytes: usize,
) -> anyhow::Result<EtcdAnchor> {
    let mut clients = Vec::with_capacity(CONNECTIONS);
    for _ in 0..CONNECTIONS {
        clients.push(
            etcd_client::Client::connect([endpoint], None)
                .await
                .with_context(|| format!("cannot connect to etcd at {endpoint}"))?,
        );
    }
    let value = Arc::new(vec![b'x'; value_bytes]);
    let next = Arc::new(AtomicUsize::new(0));
    let meter = CpuMeter::start(&[etcd_pid]);
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|w| {
            let mut kv = clients[w % clients.len()].kv_client();
            let (next, value) = (Arc::clone(&next), Arc::clone(&value));
            tokio::spawn(async move {
                let mut latency = load::histogram();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let key = format!("/anchor/configmaps/bench/cm-{i:06}");
                    let sent = Instant::now();
                    kv.put(key, value.as_slice(), None)
                        .await
                        .with_context(|| format!("etcd put {i}"))?;
                    load::record(&mut latency, sent.elapsed());
                }
                anyhow::Ok(latency)
            })
        })
        .collect();
    let mut latency = load::histogram();
    for worker in workers {
        let histogram = worker.await.context("put worker panicked")??;
        latency.add(&histogram).context("same histogram bounds")?;
    }
    let wall = started.elapsed();
    let cpu = meter.finish();
    Ok(EtcdAnchor {
        puts: latency.len(),
        concurrency,
        value_bytes,
        rate: latency.len() as f64 / wall.as_secs_f64().max(1e-9),
        latency: super::report::Percentiles::of(&latency),
        cpu,
    })
}

/// How long the anchor waits for etcd to settle after start (its first fsyncs are slower).
pub const WARM_UP: Duration = Duration::from_millis(500);

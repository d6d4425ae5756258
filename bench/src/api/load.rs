//! The loads the API benchmark drives through kube-rs: creates at a fixed concurrency, creates
//! paced at a fixed rate, full lists, and watch fan-out.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{
    Api,
    api::{ListParams, ObjectMeta, PostParams, WatchEvent, WatchParams},
};

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Records one latency (µs, at least 1).
pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.max(1));
}

/// Creates namespace `name`.
pub async fn create_namespace(client: &kube::Client, name: &str) -> anyhow::Result<()> {
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("cannot create namespace {name}"))?;
    Ok(())
}

/// A small ConfigMap like the ones controllers write (a few labels, two keys).
pub fn config_map(name: String, data: Vec<(&str, String)>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name),
            labels: Some(
                [
                    ("app".to_owned(), "bench".to_owned()),
                    ("tier".to_owned(), "api".to_owned()),
                ]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        data: Some(data.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()),
        ..ConfigMap::default()
    }
}

/// What a create load measured.
#[derive(Debug, Clone)]
pub struct CreateResult {
    /// Creates that returned 2xx.
    pub ok: u64,
    /// Creates that failed.
    pub errors: u64,
    /// The first error, for the report.
    pub first_error: Option<String>,
    /// Wall time from the first request to the last answer.
    pub wall: Duration,
    /// Per-request latency, µs.
    pub latency: Histogram<u64>,
}

impl CreateResult {
    /// Successful creates per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.wall.as_secs_f64().max(1e-9)
    }
}

/// `count` ConfigMap creates in namespace `ns` with `concurrency` requests in flight (closed
/// loop: each of `concurrency` tasks sends its next create when the previous one is answered).
pub async fn creates_at_concurrency(
    client: &kube::Client,
    ns: &str,
    count: usize,
    concurrency: usize,
) -> CreateResult {
    creates_numbered_from(client, ns, 0..count, concurrency).await
}

/// [`creates_at_concurrency`] of the ConfigMaps numbered `numbers` (`cm-<number>`), so that
/// several rounds in one namespace create distinct objects.
pub async fn creates_numbered_from(
    client: &kube::Client,
    ns: &str,
    numbers: std::ops::Range<usize>,
    concurrency: usize,
) -> CreateResult {
    let count = numbers.end;
    let next = Arc::new(AtomicUsize::new(numbers.start));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let api = Api::<ConfigMap>::namespaced(client.clone(), ns);
            let next = Arc::clone(&next);
            tokio::spawn(async move {
                let mut latency = histogram();
                let (mut ok, mut errors, mut first_error) = (0, 0, None);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let cm = config_map(
                        format!("cm-{i:06}"),
                        vec![("index", i.to_string()), ("payload", "x".repeat(64))],
                    );
                    let sent = Instant::now();
                    match api.create(&PostParams::default(), &cm).await {
                        Ok(_) => {
                            ok += 1;
                            record(&mut latency, sent.elapsed());
                        }
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                (ok, errors, first_error, latency)
            })
        })
        .collect();
    let mut result = CreateResult {
        ok: 0,
        errors: 0,
        first_error: None,
        wall: Duration::ZERO,
        latency: histogram(),
    };
    for worker in workers {
        let (ok, errors, first_error, latency) = worker.await.expect("create worker panicked");
        result.ok += ok;
        result.errors += errors;
        if result.first_error.is_none() {
            result.first_error = first_error;
        }
        result.latency.add(&latency).expect("same histogram bounds");
    }
    result.wall = started.elapsed();
    result
}

/// Creates paced at `rate` per second for `duration` (open loop: a create starts on schedule
/// whether or not earlier ones were answered; latency counts from the scheduled time, so a
/// server that falls behind shows it). At most `max_in_flight` requests are outstanding;
/// ticks beyond that count as errors.
pub async fn creates_at_rate(
    client: &kube::Client,
    ns: &str,
    rate: u32,
    duration: Duration,
    max_in_flight: usize,
) -> CreateResult {
    let total = (f64::from(rate) * duration.as_secs_f64()).round() as usize;
    let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let latency = Arc::new(Mutex::new(histogram()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let first_error: Arc<Mutex<Option<String>>> = Arc::default();
    let api = Api::<ConfigMap>::namespaced(client.clone(), ns);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut shed = 0;
    for i in 0..total {
        let scheduled = started + period.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        if in_flight.load(Ordering::Relaxed) >= max_in_flight {
            shed += 1;
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (api, latency, in_flight, errors, first_error) = (
            api.clone(),
            Arc::clone(&latency),
            Arc::clone(&in_flight),
            Arc::clone(&errors),
            Arc::clone(&first_error),
        );
        tasks.spawn(async move {
            let cm = config_map(
                format!("paced-{i:06}"),
                vec![("index", i.to_string()), ("payload", "x".repeat(64))],
            );
            match api.create(&PostParams::default(), &cm).await {
                Ok(_) => record(&mut latency.lock().expect("histogram"), scheduled.elapsed()),
                Err(e) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    first_error
                        .lock()
                        .expect("first error")
                        .get_or_insert_with(|| e.to_string());
                }
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
        // Reap finished tasks as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let latency = latency.lock().expect("histogram").clone();
    CreateResult {
        ok: latency.len(),
        errors: (errors.load(Ordering::Relaxed) + shed) as u64,
        first_error: first_error.lock().expect("first error").clone(),
        wall: started.elapsed(),
        latency,
    }
}

/// Bytes of ConfigMap `name` in `ns` as the API returns it (JSON): about what the store holds.
pub async fn object_bytes(client: &kube::Client, ns: &str, name: &str) -> anyhow::Result<usize> {
    let path = format!("/api/v1/namespaces/{ns}/configmaps");
    let request = kube::core::Request::new(&path)
        .get(name, &kube::api::GetParams::default())
        .context("build the get request")?;
    let body = client
        .request_text(request)
        .await
        .with_context(|| format!("get {path}"))?;
    Ok(body.len())
}

/// What the list load measured.
#[derive(Debug, Clone)]
pub struct ListResult {
    /// Items in each list.
    pub items: usize,
    /// Bytes of one response body.
    pub bytes: usize,
    /// Per-list latency (request to full body), µs.
    pub latency: Histogram<u64>,
}

/// Lists every ConfigMap of `ns` `rounds` times, one after the other. The body is read in full
/// but parsed only once (to count the items), so the client's JSON decoding is not timed.
pub async fn full_lists(
    client: &kube::Client,
    ns: &str,
    rounds: usize,
) -> anyhow::Result<ListResult> {
    let path = format!("/api/v1/namespaces/{ns}/configmaps");
    let mut latency = histogram();
    let mut items = 0;
    let mut bytes = 0;
    for round in 0..rounds {
        let request = kube::core::Request::new(&path)
            .list(&ListParams::default())
            .context("build the list request")?;
        let sent = Instant::now();
        let body = client
            .request_text(request)
            .await
            .with_context(|| format!("list {path}"))?;
        record(&mut latency, sent.elapsed());
        if round == 0 {
            let list: serde_json::Value =
                serde_json::from_str(&body).context("the list is not JSON")?;
            // The namespace also holds kube-root-ca.crt (the root CA publisher's, in every
            // namespace as in Kubernetes): only the benchmark's own objects count.
            items = list["items"].as_array().map_or(0, |items| {
                items
                    .iter()
                    .filter(|i| i["metadata"]["name"] != "kube-root-ca.crt")
                    .count()
            });
            bytes = body.len();
        }
    }
    Ok(ListResult {
        items,
        bytes,
        latency,
    })
}

/// What the watch load measured.
#[derive(Debug, Clone)]
pub struct WatchResult {
    /// Concurrent watchers.
    pub watchers: usize,
    /// Events written.
    pub events: usize,
    /// Time to open every watch.
    pub setup: Duration,
    /// Events delivered (of `watchers * events`).
    pub delivered: u64,
    /// Write-sent to event-received latency over every watcher and event, µs.
    pub latency: Histogram<u64>,
    /// CPU while the events were written and delivered.
    pub cpu: super::procs::CpuShare,
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Opens `watchers` watches on the ConfigMaps of a fresh namespace `ns` (spread over
/// `clients`), then creates `events` ConfigMaps one every `interval`, each carrying the time
/// it was sent; every watcher records when each ADDED event reaches it.
pub async fn watch_fan_out(
    server_pids: &[u32],
    clients: &[kube::Client],
    ns: &str,
    watchers: usize,
    events: usize,
    interval: Duration,
) -> anyhow::Result<WatchResult> {
    let Some(writer_client) = clients.first() else {
        bail!("no clients");
    };
    create_namespace(writer_client, ns).await?;
    let api = Api::<ConfigMap>::namespaced(writer_client.clone(), ns);
    let version = api
        .list(&ListParams::default().limit(1))
        .await
        .context("list for the watch's resourceVersion")?
        .metadata
        .resource_version
        .context("the list has no resourceVersion")?;
    let setup_started = Instant::now();
    let ready = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(120) + interval.mul_f64(events as f64);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..watchers {
        let api = Api::<ConfigMap>::namespaced(clients[w % clients.len()].clone(), ns);
        let (version, ready) = (version.clone(), Arc::clone(&ready));
        tasks.spawn(async move {
            let mut latency = histogram();
            let params = WatchParams::default().timeout(290);
            let stream = match api.watch(&params, &version).await {
                Ok(stream) => stream,
                Err(e) => {
                    ready.fetch_add(1, Ordering::Relaxed);
                    return Err(format!("watch {w}: {e}"));
                }
            };
            ready.fetch_add(1, Ordering::Relaxed);
            let mut stream = std::pin::pin!(stream);
            let mut seen = 0;
            while seen < events {
                let next = tokio::time::timeout_at(deadline.into(), stream.next()).await;
                let Ok(Some(event)) = next else { break };
                if let Ok(WatchEvent::Added(cm)) = event {
                    let now = unix_micros();
                    let sent = cm
                        .data
                        .as_ref()
                        .and_then(|d| d.get("sent"))
                        .and_then(|s| s.parse::<u64>().ok());
                    if let Some(sent) = sent {
                        latency.saturating_record(now.saturating_sub(sent).max(1));
                        seen += 1;
                    }
                }
            }
            Ok(latency)
        });
    }
    while ready.load(Ordering::Relaxed) < watchers {
        if Instant::now() > setup_started + Duration::from_secs(60) {
            bail!(
                "only {} of {watchers} watches opened within 60 s",
                ready.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let setup = setup_started.elapsed();
    // Let the server finish registering the last watches.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let meter = super::procs::CpuMeter::start(server_pids);
    let started = Instant::now();
    for i in 0..events {
        tokio::time::sleep_until((started + interval.mul_f64(i as f64)).into()).await;
        let cm = config_map(
            format!("watched-{i:05}"),
            vec![("sent", unix_micros().to_string())],
        );
        api.create(&PostParams::default(), &cm)
            .await
            .with_context(|| format!("create watched-{i:05}"))?;
    }
    let mut latency = histogram();
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.context("watcher panicked")? {
            Ok(h) => latency.add(&h).expect("same histogram bounds"),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let cpu = meter.finish();
    if let Some(e) = first_error {
        bail!("a watcher failed: {e}");
    }
    Ok(WatchResult {
        cpu,
        watchers,
        events,
        setup,
        delivered: latency.len(),
        latency,
    })
}

/// What the watch throughput load measured.
#[derive(Debug, Clone)]
pub struct ThroughputResult {
    /// Concurrent watchers.
    pub watchers: usize,
    /// Events written.
    pub events: usize,
    /// Events delivered over every watcher.
    pub delivered: u64,
    /// From the first write to the last delivery.
    pub elapsed: Duration,
    /// CPU while the events were written and delivered.
    pub cpu: super::procs::CpuShare,
}

impl ThroughputResult {
    /// Event deliveries (events x watchers) per second.
    pub fn rate(&self) -> f64 {
        self.delivered as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Opens `watchers` watches on the ConfigMaps of a fresh namespace `ns` (spread over
/// `clients`), then creates `events` ConfigMaps as fast as 64 requests in flight allow; the
/// rate is every delivery over the time from the first write to the last delivery.
pub async fn watch_throughput(
    server_pids: &[u32],
    clients: &[kube::Client],
    ns: &str,
    watchers: usize,
    events: usize,
) -> anyhow::Result<ThroughputResult> {
    let Some(writer_client) = clients.first() else {
        bail!("no clients");
    };
    create_namespace(writer_client, ns).await?;
    let api = Api::<ConfigMap>::namespaced(writer_client.clone(), ns);
    let version = api
        .list(&ListParams::default().limit(1))
        .await
        .context("list for the watch's resourceVersion")?
        .metadata
        .resource_version
        .context("the list has no resourceVersion")?;
    let ready = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..watchers {
        let api = Api::<ConfigMap>::namespaced(clients[w % clients.len()].clone(), ns);
        let (version, ready) = (version.clone(), Arc::clone(&ready));
        tasks.spawn(async move {
            let params = WatchParams::default().timeout(290);
            let stream = api.watch(&params, &version).await;
            ready.fetch_add(1, Ordering::Relaxed);
            let stream = stream.map_err(|e| format!("watch {w}: {e}"))?;
            let mut stream = std::pin::pin!(stream);
            let mut seen = 0u64;
            let mut last = Instant::now();
            while seen < events as u64 {
                let next = tokio::time::timeout_at(deadline.into(), stream.next()).await;
                let Ok(Some(event)) = next else { break };
                if let Ok(WatchEvent::Added(_)) = event {
                    seen += 1;
                    last = Instant::now();
                }
            }
            Ok::<_, String>((seen, last))
        });
    }
    let opening = Instant::now();
    while ready.load(Ordering::Relaxed) < watchers {
        if opening.elapsed() > Duration::from_secs(60) {
            bail!(
                "only {} of {watchers} watches opened within 60 s",
                ready.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let meter = super::procs::CpuMeter::start(server_pids);
    let started = Instant::now();
    let writes = futures_util::stream::iter(0..events)
        .map(|i| {
            let api = api.clone();
            async move {
                let cm = config_map(format!("burst-{i:06}"), vec![("i", i.to_string())]);
                api.create(&PostParams::default(), &cm)
                    .await
                    .with_context(|| format!("create burst-{i:06}"))
            }
        })
        .buffer_unordered(64);
    let failed: Vec<anyhow::Error> = writes
        .filter_map(|r| async move { r.err() })
        .collect()
        .await;
    if let Some(e) = failed.into_iter().next() {
        bail!("a burst create failed: {e:#}");
    }
    let mut delivered = 0;
    let mut last = started;
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined.context("watcher panicked")? {
            Ok((seen, at)) => {
                delivered += seen;
                last = last.max(at);
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let cpu = meter.finish();
    if let Some(e) = first_error {
        bail!("a watcher failed: {e}");
    }
    Ok(ThroughputResult {
        watchers,
        events,
        delivered,
        elapsed: last.saturating_duration_since(started),
        cpu,
    })
}

/// The size of every ConfigMap's JSON in one list of all namespaces: the stored data the
/// benchmark left, as a client reads it.
pub async fn stored_bytes(client: &kube::Client) -> anyhow::Result<usize> {
    let request = kube::core::Request::new("/api/v1/configmaps")
        .list(&ListParams::default())
        .context("build the list request")?;
    let body = client
        .request_text(request)
        .await
        .context("list every ConfigMap")?;
    Ok(body.len())
}

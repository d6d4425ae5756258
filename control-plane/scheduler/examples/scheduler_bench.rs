//! The scheduler benchmark `cargo xtask bench scheduler` runs: for each node count, starts the
//! real `keelson-control-plane` (SQLite, `--controllers none`, the scheduler on) in a fresh data
//! directory, creates that many Ready Node objects and then the pods (no node agents), and
//! times each pod from its create request to its binding seen through a watch. Prints a table
//! and writes `bench-scheduler.md` to the output directory.

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
    runtime::watcher,
};
use serde_json::json;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "keelson's scheduler against the real API server, no node agents")]
struct Options {
    /// The keelson-control-plane binary [default: next to this example's directory].
    #[arg(long)]
    control_plane: Option<PathBuf>,
    /// Where bench-scheduler.md goes.
    #[arg(long, default_value = "results")]
    output_dir: PathBuf,
    /// Smaller: 500 and 100 nodes, 2000 pods.
    #[arg(long)]
    quick: bool,
    /// Node counts, one run each [default: 5000,500].
    #[arg(long, value_delimiter = ',')]
    nodes: Option<Vec<usize>>,
    /// Pods per run [default: 10000].
    #[arg(long)]
    pods: Option<usize>,
    /// Requests in flight while creating objects.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Give up on a run after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

/// One run's figures.
#[derive(Debug)]
struct Row {
    nodes: usize,
    pods: usize,
    bound: usize,
    nodes_seconds: f64,
    create_rate: f64,
    bind_rate: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

/// The control plane process; killed on drop.
struct Plane {
    child: Child,
    kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Plane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_plane(binary: &Path) -> anyhow::Result<Plane> {
    let dir = tempfile::tempdir().context("a temporary data directory")?;
    let listen = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let log = std::fs::File::create(dir.path().join("control-plane.log"))?;
    let child = Command::new(binary)
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--listen")
        .arg(listen.to_string())
        .args(["--controllers", "none", "--leader-elect=false"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let plane = Plane {
        child,
        kubeconfig: dir.path().join("admin.kubeconfig"),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(plane.kubeconfig.is_file() && reachable(listen)) {
        if Instant::now() > deadline {
            bail!("{} did not start within 30 s", binary.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(plane)
}

fn reachable(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

async fn client(kubeconfig: &Path) -> anyhow::Result<Client> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default()).await?;
    Ok(Client::try_from(config)?)
}

async fn create_nodes(client: &Client, count: usize, concurrency: usize) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    futures_util::stream::iter(0..count)
        .map(|i| {
            let nodes = nodes.clone();
            async move {
                let name = format!("node-{i:05}");
                let node: Node = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
                    "spec": {},
                }))?;
                nodes.create(&PostParams::default(), &node).await?;
                nodes
                    .patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {
                            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
                            "conditions": [{"type": "Ready", "status": "True",
                                            "reason": "KubeletReady"}],
                        }})),
                    )
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn run_scale(
    binary: &Path,
    nodes: usize,
    pods: usize,
    options: &Options,
) -> anyhow::Result<Row> {
    let plane = start_plane(binary)?;
    let client = client(&plane.kubeconfig).await?;
    let started = Instant::now();
    create_nodes(&client, nodes, options.concurrency).await?;
    let nodes_seconds = started.elapsed().as_secs_f64();
    // Give the scheduler's node cache a moment to hold every node.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Bindings, as a watch sees them.
    let bound_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let watch = {
        let bound_at = Arc::clone(&bound_at);
        let api: Api<Pod> = Api::namespaced(client.clone(), "default");
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
            while let Some(event) = events.next().await {
                let now = Instant::now();
                let pods: Vec<Pod> = match event {
                    Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => vec![pod],
                    Ok(watcher::Event::InitDone) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                        continue;
                    }
                    _ => continue,
                };
                let mut bound_at = bound_at.lock().expect("not poisoned");
                for pod in pods {
                    if pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.node_name.as_ref())
                        .is_some()
                    {
                        bound_at
                            .entry(pod.metadata.name.unwrap_or_default())
                            .or_insert(now);
                    }
                }
            }
        })
    };
    ready_rx.await.context("the pod watch ended")?;

    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let first_create = Instant::now();
    let created: HashMap<String, Instant> = futures_util::stream::iter(0..pods)
        .map(|i| {
            let api = api.clone();
            async move {
                let name = format!("pod-{i:05}");
                let pod: Pod = serde_json::from_value(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {"containers": [{"name": "c", "image": "busybox",
                        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]},
                }))?;
                let sent = Instant::now();
                api.create(&PostParams::default(), &pod).await?;
                anyhow::Ok((name, sent))
            }
        })
        .buffer_unordered(options.concurrency)
        .try_collect()
        .await?;
    let create_seconds = first_create.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(options.timeout);
    loop {
        let bound = bound_at.lock().expect("not poisoned").len();
        if bound >= pods || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watch.abort();
    let bound_at = bound_at.lock().expect("not poisoned").clone();
    let mut latencies: Vec<Duration> = created
        .iter()
        .filter_map(|(name, sent)| Some(bound_at.get(name)?.saturating_duration_since(*sent)))
        .collect();
    latencies.sort_unstable();
    let last_bound = bound_at.values().max().copied().unwrap_or(first_create);
    let span = last_bound
        .saturating_duration_since(first_create)
        .as_secs_f64();
    Ok(Row {
        nodes,
        pods,
        bound: latencies.len(),
        nodes_seconds,
        create_rate: pods as f64 / create_seconds.max(1e-9),
        bind_rate: latencies.len() as f64 / span.max(1e-9),
        p50: percentile(&latencies, 50.0),
        p99: percentile(&latencies, 99.0),
        max: latencies.last().copied().unwrap_or_default(),
    })
}

fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| nodes | pods | bound | nodes created in | pods created/s | pods bound/s | p50 latency | p99 latency | max latency |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.1} s | {:.0} | {:.0} | {:.0} ms | {:.0} ms | {:.0} ms |",
            r.nodes,
            r.pods,
            r.bound,
            r.nodes_seconds,
            r.create_rate,
            r.bind_rate,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.max.as_secs_f64() * 1e3,
        );
    }
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let binary = match &options.control_plane {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("no directory above this example")?
            .join("keelson-control-plane"),
    };
    if !binary.is_file() {
        bail!(
            "{} does not exist: build it (cargo build --release -p keelson-control-plane) or \
             pass --control-plane",
            binary.display()
        );
    }
    let (default_nodes, default_pods) = if options.quick {
        (vec![500, 100], 2000)
    } else {
        (vec![5000, 500], 10_000)
    };
    let scales = options.nodes.clone().unwrap_or(default_nodes);
    let pods = options.pods.unwrap_or(default_pods);
    let mut rows = Vec::new();
    for nodes in scales {
        println!("==> {nodes} nodes, {pods} pods");
        let row = run_scale(&binary, nodes, pods, &options)
            .await
            .with_context(|| format!("the run at {nodes} nodes"))?;
        println!(
            "    {} bound, {:.0} pods/s, p99 {:.0} ms",
            row.bound,
            row.bind_rate,
            row.p99.as_secs_f64() * 1e3
        );
        rows.push(row);
    }
    let table = table(&rows);
    println!("\n{table}");
    let report = format!(
        "# Scheduler benchmark\n\n`cargo xtask bench scheduler{}`: the real `keelson-control-plane` \
         (SQLite store, HTTPS, `--controllers none`, the scheduler on) per row, Node objects \
         (Ready, 32 CPUs, 128 GiB, 110 pods) created first, then the pods (100m CPU, 128 MiB \
         each) by {} concurrent creates. Latency: from a pod's create request to its binding \
         seen through a watch. Pods bound/s: bound pods over the time from the first create to \
         the last binding (so it cannot exceed the create rate). Kubernetes' scheduler_perf \
         anchor: >= 270 pods/s at 5000 nodes / 10k pods.\n\n{table}",
        if options.quick { " --quick" } else { "" },
        options.concurrency,
    );
    std::fs::create_dir_all(&options.output_dir)?;
    let path = options.output_dir.join("bench-scheduler.md");
    std::fs::write(&path, report).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

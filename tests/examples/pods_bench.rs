//! The pod startup benchmark `cargo xtask bench pods` runs (as root): the real
//! `keelson-control-plane` and `keelson-node-agent` (release builds next to this example) on
//! Docker with the local test images.
//!
//! - Startup: `--pods` pods created through the API one per `--interval-ms`, each timed from its
//!   create request to the watch event showing it Running and Ready; twice, plain pods (one
//!   `sleep` container) and pods with an init container and a readiness probe. The agent's RSS
//!   is read idle, with every pod running and after they are deleted.
//! - Rollouts (unless `--no-rollouts`), on a 3-node netns testbed cluster: a DaemonSet from
//!   create to a Ready pod on every node, then a template change to every node running a Ready
//!   pod of the new template; a StatefulSet of `--statefulset-replicas` from create to
//!   `readyReplicas`, with the default `OrderedReady` and with `Parallel` pod management, and
//!   `OrderedReady` with a local-path claim per pod. Each is timed from the request to the
//!   watch event of the object whose status says it is done.
//!
//! Prints the figures and writes `bench-pods.md` to the output directory.

use std::{
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use keelson_testbed::{Cluster, ClusterSpec};
use keelson_tests::{
    cluster::ControlPlane,
    netcluster::{bin_dir, claim_subnet},
    pods::PodAgent,
    rollout::{self, StatefulSetShape},
    startup::{self, Shape, Startup},
};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "pod startup latency, workload rollouts and node agent RSS (needs root)")]
struct Options {
    /// Pods to start (of each kind).
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// Milliseconds between two pod creations.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Give up when the pods are not all Ready (or a rollout is not done) after this many
    /// seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Replicas of the StatefulSet rollouts.
    #[arg(long, default_value_t = 30)]
    statefulset_replicas: i32,
    /// Skip the DaemonSet and StatefulSet rollouts on the 3-node cluster.
    #[arg(long)]
    no_rollouts: bool,
    /// Where bench-pods.md goes.
    #[arg(long, default_value = "results")]
    output_dir: PathBuf,
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// One startup row: the figures and the RSS after the pods were deleted.
struct StartupRow {
    what: &'static str,
    figures: Startup,
    rss_after_kib: u64,
}

/// The rollout rows: (workload, what is timed, how long or why it did not finish).
type RolloutRows = Vec<(String, String, String)>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    anyhow::ensure!(options.pods > 0, "--pods must be at least 1");
    anyhow::ensure!(
        options.statefulset_replicas > 0,
        "--statefulset-replicas must be at least 1"
    );
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "the node agent needs root (CAP_NET_ADMIN, CAP_BPF, dockerd): run it with sudo"
    );
    let began = Instant::now();
    let startup = startup_rows(&options).await?;
    let rollouts = if options.no_rollouts {
        Vec::new()
    } else {
        rollout_rows(&options).await?
    };

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let mut report = String::new();
    writeln!(report, "# Pod startup: `cargo xtask bench pods`\n")?;
    writeln!(
        report,
        "Release `keelson-control-plane` (SQLite) and `keelson-node-agent` on Docker; Linux {}, \
         {cpus} CPUs; the whole run took {}.\n",
        kernel.trim(),
        secs(began.elapsed()),
    )?;
    writeln!(report, "## Startup latency, one node\n")?;
    writeln!(
        report,
        "{} pods of each kind created through the API one per {} ms and bound to the node by \
         `spec.nodeName`: *plain* is the local image `keelson/busybox:1` (sandbox + one `sleep` \
         container); *init + probe* runs an init container (`true` in `keelson/busybox:1`) \
         first, then `keelson/httpd:1` with a readiness probe (`httpGet /` on port 80, \
         `initialDelaySeconds: 0`, `periodSeconds: 1`). Latency is create request -> watch \
         event with the pod Running and Ready, seen by the client. One agent serves both kinds \
         in turn.\n",
        options.pods, options.interval_ms
    )?;
    writeln!(
        report,
        "| pods | kind | p50 | p90 | p99 | max | agent RSS before | with {} pods | after deleting them |",
        options.pods
    )?;
    writeln!(report, "|---:|---|---:|---:|---:|---:|---:|---:|---:|")?;
    for row in &startup {
        let f = &row.figures;
        writeln!(
            report,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            options.pods,
            row.what,
            ms(f.percentile(50.0)),
            ms(f.percentile(90.0)),
            ms(f.percentile(99.0)),
            ms(f.max()),
            mib(f.rss_idle_kib),
            mib(f.rss_busy_kib),
            mib(row.rss_after_kib),
        )?;
    }
    writeln!(
        report,
        "\nTargets: p99 <= 1 s with a local image, also with an init container and a readiness \
         probe (the Kubernetes SLO is 5 s), agent RSS <= 32 MiB."
    )?;
    if !rollouts.is_empty() {
        writeln!(report, "\n## Workload rollouts, 3-node netns cluster\n")?;
        writeln!(
            report,
            "A `keelson-testbed` cluster: one control plane (SQLite, every controller and the \
             scheduler) and three agents, each node a network namespace. Each row is timed from \
             the API request to the watch event of the workload whose status says it is done. \
             The DaemonSet's pods are `keelson/httpd:1` behind a readiness probe (`httpGet /`, \
             `periodSeconds: 1`); its update changes a template annotation and rolls out with \
             the default `maxUnavailable: 1`, node by node. The StatefulSets' pods are one \
             `sleep` container of `keelson/busybox:1`, spread over the three nodes by the \
             scheduler; the claim row adds a `volumeClaimTemplates` entry (1 Mi, the default \
             `local-path` class) mounted in every pod.\n"
        )?;
        writeln!(report, "| workload | timed | took |")?;
        writeln!(report, "|---|---|---:|")?;
        for (workload, timed, took) in &rollouts {
            writeln!(report, "| {workload} | {timed} | {took} |")?;
        }
    }
    print!("\n{report}");
    std::fs::create_dir_all(&options.output_dir)
        .with_context(|| format!("cannot create {}", options.output_dir.display()))?;
    let path = options.output_dir.join("bench-pods.md");
    std::fs::write(&path, &report).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The startup rows: plain pods, then pods with an init container and a readiness probe, on one
/// agent; each kind deleted before the next.
async fn startup_rows(options: &Options) -> anyhow::Result<Vec<StartupRow>> {
    let interval = Duration::from_millis(options.interval_ms);
    let timeout = Duration::from_secs(options.timeout);
    println!("==> starting keelson-control-plane and keelson-node-agent (release)");
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    let agent = PodAgent::start(&plane, &[]);
    let mut rows = Vec::new();
    for (shape, what) in [
        (Shape::Plain, "plain"),
        (Shape::InitAndProbe, "init + probe"),
    ] {
        println!(
            "==> creating {} {what} pods, one per {interval:?}, on node {}",
            options.pods, agent.node
        );
        let figures = startup::measure_shape(
            plane.client().await,
            &agent,
            shape,
            options.pods,
            interval,
            timeout,
        )
        .await;
        println!(
            "    p50 {} p99 {} max {}",
            ms(figures.percentile(50.0)),
            ms(figures.percentile(99.0)),
            ms(figures.max())
        );
        println!("==> deleting them");
        startup::delete_all(plane.client().await, timeout).await;
        agent.assert_no_leaks();
        tokio::time::sleep(Duration::from_secs(2)).await;
        rows.push(StartupRow {
            what,
            figures,
            rss_after_kib: agent.rss_kib(),
        });
    }
    Ok(rows)
}

/// The rollout rows, on a 3-node testbed cluster that is removed afterwards.
async fn rollout_rows(options: &Options) -> anyhow::Result<RolloutRows> {
    let timeout = Duration::from_secs(options.timeout);
    let (subnet, _lock) = claim_subnet();
    let state = tempfile::tempdir().context("a state directory")?;
    let mut spec = ClusterSpec::new(&format!("b{subnet}"), subnet, 3, bin_dir(), state.path());
    // Away from the testbed tests' 10.201.0.0/16, which may run beside the benchmark.
    spec.cluster_cidr = "10.213.0.0/16".to_owned();
    spec.control_plane_args = vec![
        "--default-local-storage-path".to_owned(),
        state.path().join("storage").display().to_string(),
    ];
    println!("==> starting a 3-node netns cluster (subnet 172.30.{subnet}.0/24)");
    let cluster = tokio::task::block_in_place(|| Cluster::up(spec)).context("cluster up")?;
    let result = rollouts_on(&cluster, options, timeout).await;
    println!("==> removing the cluster");
    tokio::task::block_in_place(|| cluster.down()).context("cluster down")?;
    result
}

async fn rollouts_on(
    cluster: &Cluster,
    options: &Options,
    timeout: Duration,
) -> anyhow::Result<RolloutRows> {
    let kubeconfig = kube::config::Kubeconfig::read_from(cluster.kubeconfig())
        .context("read the cluster's kubeconfig")?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    let client = kube::Client::try_from(config)?;
    let mut rows = RolloutRows::new();
    let nodes = cluster.nodes().len();

    println!("==> DaemonSet on {nodes} nodes: create, then a template change");
    let ds = rollout::daemonset_rollout(client.clone(), "daemon", timeout)
        .await
        .map_err(anyhow::Error::msg)?;
    println!("    create {} update {}", secs(ds.create), secs(ds.update));
    rows.push((
        format!("DaemonSet, {} nodes", ds.nodes),
        "create -> `numberReady` = desired".to_owned(),
        secs(ds.create),
    ));
    rows.push((
        format!("DaemonSet, {} nodes", ds.nodes),
        "template change -> `updatedNumberScheduled` = `numberAvailable` = desired".to_owned(),
        secs(ds.update),
    ));

    let replicas = options.statefulset_replicas;
    for (name, parallel, volume, label) in [
        ("ordered", false, false, "OrderedReady"),
        ("parallel", true, false, "Parallel"),
        (
            "claims",
            false,
            true,
            "OrderedReady, a local-path claim each",
        ),
    ] {
        println!("==> StatefulSet of {replicas} replicas, {label}");
        let shape = StatefulSetShape {
            replicas,
            parallel,
            volume,
        };
        // A row that does not finish says so; the others still run.
        let took = match rollout::statefulset_rollout(client.clone(), name, shape, timeout).await {
            Ok(took) => secs(took),
            Err(error) => {
                eprintln!("    {error}");
                format!("not done within {}", secs(timeout))
            }
        };
        println!("    {took}");
        rows.push((
            format!("StatefulSet, {replicas} replicas, {label}"),
            format!("create -> `readyReplicas` = {replicas}"),
            took,
        ));
    }
    Ok(rows)
}

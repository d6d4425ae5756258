//! The pod startup benchmark `cargo xtask bench pods` runs (as root): the real
//! `keelson-control-plane` and `keelson-node-agent` (release builds next to this example),
//! Docker, and `--pods` pods of the local `keelson/busybox:1` image created through the API one
//! per `--interval-ms`. Each pod is timed from its create request to the watch event showing it
//! Running and Ready; the agent's RSS is read idle, with every pod running and after they are
//! deleted. Prints the figures and writes `bench-pods.md` to the output directory.

use std::{fmt::Write as _, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Parser;
use keelson_tests::{cluster::ControlPlane, pods::PodAgent, startup};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "pod startup latency and node agent RSS with a local image (needs root)")]
struct Options {
    /// Pods to start.
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// Milliseconds between two pod creations.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Give up when the pods are not all Ready after this many seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Where bench-pods.md goes.
    #[arg(long, default_value = "results")]
    output_dir: PathBuf,
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    anyhow::ensure!(options.pods > 0, "--pods must be at least 1");
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "the node agent needs root (CAP_NET_ADMIN, CAP_BPF, dockerd): run it with sudo"
    );
    let interval = Duration::from_millis(options.interval_ms);
    println!("==> starting keelson-control-plane and keelson-node-agent (release)");
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    let agent = PodAgent::start(&plane, &[]);
    println!(
        "==> creating {} pods of keelson/busybox:1, one per {interval:?}, on node {}",
        options.pods, agent.node
    );
    let figures = startup::measure(
        plane.client().await,
        &agent,
        options.pods,
        interval,
        Duration::from_secs(options.timeout),
    )
    .await;
    println!("==> deleting them");
    startup::delete_all(plane.client().await, Duration::from_secs(options.timeout)).await;
    agent.assert_no_leaks();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after_kib = agent.rss_kib();

    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let mut report = String::new();
    writeln!(report, "# Pod startup: `cargo xtask bench pods`\n")?;
    writeln!(
        report,
        "Release `keelson-control-plane` (SQLite) and `keelson-node-agent` on Docker; Linux {}, \
         {cpus} CPUs. {} pods of the local image `keelson/busybox:1` (sandbox + one `sleep` \
         container each), created through the API one per {} ms and bound to the node by \
         `spec.nodeName`. Latency is create request -> watch event with the pod Running and \
         Ready, seen by the client.\n",
        kernel.trim(),
        options.pods,
        options.interval_ms
    )?;
    writeln!(
        report,
        "| pods | p50 | p90 | p99 | max | agent RSS idle | with {} pods | after deleting them |",
        options.pods
    )?;
    writeln!(report, "|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    writeln!(
        report,
        "| {} | {} | {} | {} | {} | {} | {} | {} |",
        options.pods,
        ms(figures.percentile(50.0)),
        ms(figures.percentile(90.0)),
        ms(figures.percentile(99.0)),
        ms(figures.max()),
        mib(figures.rss_idle_kib),
        mib(figures.rss_busy_kib),
        mib(rss_after_kib),
    )?;
    writeln!(
        report,
        "\nTargets: p99 <= 1 s with a local image (the Kubernetes SLO is 5 s), agent RSS <= 32 MiB."
    )?;
    print!("\n{report}");
    std::fs::create_dir_all(&options.output_dir)
        .with_context(|| format!("cannot create {}", options.output_dir.display()))?;
    let path = options.output_dir.join("bench-pods.md");
    std::fs::write(&path, &report).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

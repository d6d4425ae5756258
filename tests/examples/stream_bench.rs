//! The streaming benchmark `cargo xtask bench stream` runs (as root): the real
//! `keelson-control-plane` and `keelson-node-agent` (release builds next to this example) on
//! Docker, a `keelson/httpd:1` pod, and the real kubectl 1.33 (WebSocket) and 1.27 (SPDY/3.1)
//! as clients.
//!
//! - Port-forward throughput: a `--mib` MiB file downloaded `--downloads` times through
//!   `kubectl port-forward` and straight from the pod's address, side by side.
//! - Port-forward request rate: `--requests` HTTP/1.0 requests (a new connection each, busybox
//!   httpd closes it) from `--concurrency` workers, through the forward and direct.
//! - Exec round trip: `kubectl exec web -- true`, `--execs` times: p50 and p99, next to
//!   `kubectl get pod web` (the same kubectl start-up and API round trip without a stream).
//!
//! Prints the figures and writes `bench-stream.md` to the output directory.

use std::{
    fmt::Write as _,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use k8s_openapi::api::core::v1::Pod;
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    pods::{PodAgent, apply, is_ready, pod_ip},
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Command-line options.
#[derive(Debug, Parser)]
#[command(about = "port-forward and exec through the API server and the node agent (needs root)")]
struct Options {
    /// Size of the downloaded file, MiB.
    #[arg(long, default_value_t = 64)]
    mib: u64,
    /// Downloads per path.
    #[arg(long, default_value_t = 4)]
    downloads: usize,
    /// Requests per path for the request rate.
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Concurrent request workers.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Exec round trips per kubectl version.
    #[arg(long, default_value_t = 40)]
    execs: usize,
    /// Where bench-stream.md goes.
    #[arg(long, default_value = "results")]
    output_dir: PathBuf,
}

/// One GET of `path` from `addr` over a new connection: the body's length.
async fn get(addr: (std::net::IpAddr, u16), path: &str) -> anyhow::Result<usize> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: web\r\n\r\n").as_bytes())
        .await?;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total = 0usize;
    let mut header_end: Option<usize> = None;
    let mut head = Vec::new();
    loop {
        let n = match stream.read(&mut buffer).await {
            Ok(n) => n,
            // kubectl 1.27 may reset the local connection once the pod's side closed.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && total > 0 => 0,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            break;
        }
        total += n;
        if header_end.is_none() {
            head.extend_from_slice(&buffer[..n]);
            header_end = head
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| p + 4);
        }
    }
    let header_end = header_end.context("no HTTP header in the answer")?;
    if !head.starts_with(b"HTTP/1.") || !head[..header_end].windows(3).any(|w| w == b"200") {
        bail!(
            "not a 200 answer: {}",
            String::from_utf8_lossy(&head[..header_end.min(80)])
        );
    }
    Ok(total - header_end)
}

/// MiB/s over `downloads` sequential downloads of `path`.
async fn throughput(
    addr: (std::net::IpAddr, u16),
    path: &str,
    downloads: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut bytes = 0usize;
    for _ in 0..downloads {
        bytes += get(addr, path).await?;
    }
    Ok(bytes as f64 / (1024.0 * 1024.0) / started.elapsed().as_secs_f64())
}

/// Requests/s of `requests` GETs of `/` from `concurrency` workers.
async fn request_rate(
    addr: (std::net::IpAddr, u16),
    requests: usize,
    concurrency: usize,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let per_worker = requests / concurrency.max(1);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            tokio::spawn(async move {
                for _ in 0..per_worker {
                    get(addr, "/").await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for worker in workers {
        worker.await.context("worker")??;
    }
    Ok((per_worker * concurrency) as f64 / started.elapsed().as_secs_f64())
}

/// Starts `kubectl port-forward pod/web :80`; returns the child and its local port.
fn port_forward(kubectl: &Kubectl<'_>) -> anyhow::Result<(std::process::Child, u16)> {
    use std::io::BufRead as _;
    let mut child = kubectl
        .command(&["port-forward", "pod/web", ":80"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("kubectl port-forward")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let line = lines
        .next()
        .context("port-forward ended")?
        .context("port-forward output")?;
    // Keeps reading so kubectl never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    let port = line
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no port in {line:?}"))?;
    Ok((child, port))
}

/// The p50 and p99 of running `kubectl args` `runs` times.
fn round_trips(
    kubectl: &Kubectl<'_>,
    args: &[&str],
    runs: usize,
) -> anyhow::Result<(Duration, Duration)> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        let status = kubectl
            .command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("kubectl")?;
        if !status.success() {
            bail!("kubectl {args:?}: {status}");
        }
        times.push(started.elapsed());
    }
    times.sort();
    let at = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    Ok((at(0.50), at(0.99)))
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    let agent = PodAgent::start(&plane, &["--node-address", "127.0.0.1"]);
    let kubectl = Kubectl::new(33, &plane);
    let manifest = format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: default}}
spec:
  nodeName: {}
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: keelson/httpd:1
",
        agent.node
    );
    apply(&kubectl, plane.data_dir(), "web.yaml", &manifest);
    let pods: kube::Api<Pod> = kube::Api::namespaced(plane.client().await, "default");
    let deadline = Instant::now() + Duration::from_secs(120);
    let pod = loop {
        if let Some(pod) = pods.get_opt("web").await?.filter(is_ready) {
            break pod;
        }
        if Instant::now() > deadline {
            bail!("pod web not Ready; agent log:\n{}", agent.log());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let direct = (std::net::IpAddr::V4(pod_ip(&pod)), 80);
    kubectl.run(&[
        "exec",
        "web",
        "--",
        "dd",
        "if=/dev/urandom",
        "of=/www/big",
        "bs=1048576",
        &format!("count={}", options.mib),
    ]);

    let mut report = String::new();
    writeln!(
        report,
        "# bench stream\n\nOne node (control plane and agent, release builds) on this machine; a \
         busybox httpd pod; {} MiB file x {} downloads; {} requests from {} workers (a new \
         connection each); {} exec round trips per kubectl. Ratios are to a direct connection to \
         the pod's address in the same run.\n",
        options.mib, options.downloads, options.requests, options.concurrency, options.execs
    )?;
    writeln!(
        report,
        "| client | path | MiB/s | ratio | requests/s | ratio |"
    )?;
    writeln!(report, "|---|---|---|---|---|---|")?;
    let direct_mib = throughput(direct, "/big", options.downloads).await?;
    let direct_rate = request_rate(direct, options.requests, options.concurrency).await?;
    writeln!(
        report,
        "| - | direct to the pod | {direct_mib:.0} | 1.00x | {direct_rate:.0} | 1.00x |"
    )?;
    let mut exec_rows = Vec::new();
    for minor in [33, 27] {
        let kubectl = Kubectl::new(minor, &plane);
        let (mut forward, port) = port_forward(&kubectl)?;
        let local = (std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), port);
        let mib = throughput(local, "/big", options.downloads).await;
        let rate = request_rate(local, options.requests, options.concurrency).await;
        let _ = forward.kill();
        let _ = forward.wait();
        let (mib, rate) = (mib?, rate?);
        let protocol = if minor >= 31 {
            "SPDY in WebSocket"
        } else {
            "SPDY/3.1"
        };
        writeln!(
            report,
            "| kubectl 1.{minor} | port-forward ({protocol}) | {mib:.0} | {:.2}x | {rate:.0} | {:.2}x |",
            mib / direct_mib,
            rate / direct_rate
        )?;
        let exec = round_trips(&kubectl, &["exec", "web", "--", "true"], options.execs)?;
        let get = round_trips(&kubectl, &["get", "pod", "web"], options.execs)?;
        exec_rows.push((minor, exec, get));
    }
    writeln!(
        report,
        "\n| client | exec p50 | exec p99 | `get pod` p50 | `get pod` p99 |\n|---|---|---|---|---|"
    )?;
    for (minor, (e50, e99), (g50, g99)) in exec_rows {
        writeln!(
            report,
            "| kubectl 1.{minor} | {} | {} | {} | {} |",
            ms(e50),
            ms(e99),
            ms(g50),
            ms(g99)
        )?;
    }
    writeln!(
        report,
        "\nAgent RSS at the end: {:.1} MiB.",
        agent.rss_kib() as f64 / 1024.0
    )?;
    print!("{report}");
    std::fs::create_dir_all(&options.output_dir)?;
    let path = options.output_dir.join("bench-stream.md");
    std::fs::write(&path, &report).with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    kubectl.run(&["delete", "pod", "web", "--timeout=30s"]);
    Ok(())
}

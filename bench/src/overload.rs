//! `keelson-bench overload`: the real `keelson-control-plane` (default limits) under four
//! kinds of abuse by one non-exempt user, each while the `system:masters` admin lists pods
//! every 100 ms (`kubectl get pods`): 5000 watches opened, 1000 lists sent at once, one
//! 100 MiB body, 10 000 idle TLS connections. For each: how the abuse was answered (accepted,
//! 429, 413, ...), the admin request's latency (target: at most 1 s) and the server's RSS.
//! Writes `bench-overload.md`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures_util::{StreamExt as _, stream};
use k8s_openapi::api::{
    core::v1::{ConfigMap, Pod},
    rbac::v1::{ClusterRoleBinding, RoleRef, Subject},
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{
    Api,
    api::{ListParams, PostParams, WatchParams},
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_rustls::{
    TlsConnector,
    rustls::{self, pki_types::ServerName},
};

use crate::api::{
    load,
    procs::{ControlPlane, Memory, ScratchDir},
    rbac,
};

/// Flags of `keelson-bench overload`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// A quick look: 1000 watches, 300 lists, 20 MiB, 2000 idle connections.
    #[arg(long, env = "KEELSON_BENCH_QUICK")]
    pub quick: bool,
    /// Watches the user opens [default: 5000; 1000 with --quick].
    #[arg(long)]
    pub watches: Option<usize>,
    /// Lists the user sends at once [default: 1000; 300 with --quick].
    #[arg(long)]
    pub burst: Option<usize>,
    /// MiB in the one large body [default: 100; 20 with --quick].
    #[arg(long)]
    pub body_mib: Option<usize>,
    /// Idle TLS connections held [default: 10000; 2000 with --quick].
    #[arg(long)]
    pub idle_connections: Option<usize>,
    /// The control plane binary [default: keelson-control-plane next to this executable].
    #[arg(long)]
    pub control_plane: Option<PathBuf>,
    /// Where `bench-overload.md` goes.
    #[arg(long, env = "KEELSON_BENCH_OUTPUT_DIR", default_value = "results")]
    pub output_dir: PathBuf,
}

/// The namespace the burst lists read (it holds [`SEEDED`] ConfigMaps, so a list has work).
const NAMESPACE: &str = "bench-overload";
/// ConfigMaps seeded for the burst.
const SEEDED: usize = 2000;

/// What one abuse scenario showed.
#[derive(Debug, Default)]
struct Scenario {
    name: String,
    /// How the abusive requests were answered: outcome -> count.
    outcomes: BTreeMap<String, usize>,
    /// The admin's list latencies while it ran.
    admin: Vec<Duration>,
    /// The server's RSS at the end of the scenario, and its peak so far.
    memory: Memory,
    /// How long the abuse took.
    took: Duration,
}

/// Runs the benchmark and writes `bench-overload.md`.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let quick = options.quick;
    let watches = options.watches.unwrap_or(if quick { 1000 } else { 5000 });
    let burst = options.burst.unwrap_or(if quick { 300 } else { 1000 });
    let body_mib = options.body_mib.unwrap_or(if quick { 20 } else { 100 });
    let idle = options
        .idle_connections
        .unwrap_or(if quick { 2000 } else { 10_000 });
    let binary = match &options.control_plane {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("keelson-control-plane"),
    };
    if !binary.is_file() {
        bail!(
            "{} is missing: `cargo xtask bench overload` builds it",
            binary.display()
        );
    }
    raise_open_files(idle + watches + 1000)?;
    std::fs::create_dir_all(&options.output_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let scenarios = runtime.block_on(async {
        let tokens = ScratchDir::new("overload-tokens")?;
        let token_file = rbac::token_file(tokens.path())?;
        let plane = ControlPlane::start(
            &binary,
            &["--token-auth-file".into(), token_file.display().to_string()],
        )
        .await?;
        let kubeconfig = plane.data_dir().join("admin.kubeconfig");
        let admin = plane.client.clone();
        grant_user_everything(&admin).await?;
        let user = rbac::user_client(&kubeconfig).await?;
        load::create_namespace(&admin, NAMESPACE).await?;
        let seeded = load::creates_numbered_from(&admin, NAMESPACE, 0..SEEDED, 32).await;
        println!(
            "==> overload: seeded {} ConfigMaps ({} errors)",
            seeded.ok, seeded.errors
        );
        let mut scenarios = vec![idle_baseline(&plane).await];
        scenarios.push(watch_flood(&plane, &user, watches).await);
        scenarios.push(list_burst(&plane, &user, burst).await);
        scenarios.push(large_body(&plane, body_mib).await?);
        scenarios.push(idle_tls(&plane, idle).await?);
        anyhow::Ok(scenarios)
    })?;
    let report = render(&scenarios);
    let path = options.output_dir.join("bench-overload.md");
    std::fs::write(&path, &report).with_context(|| format!("cannot write {}", path.display()))?;
    println!("{report}\n==> overload: wrote {}", path.display());
    Ok(())
}

fn raise_open_files(want: usize) -> anyhow::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if hard < want as u64 {
        bail!("the open files limit is {hard}; the benchmark needs {want} (raise `ulimit -Hn`)");
    }
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(())
}

async fn grant_user_everything(admin: &kube::Client) -> anyhow::Result<()> {
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some("bench-overload-user".into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "cluster-admin".into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: rbac::USER.into(),
            namespace: None,
        }]),
    };
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await
        .context("cannot bind the bench user to cluster-admin")?;
    Ok(())
}

/// Lists pods as the admin every 100 ms until `stop`; the latencies.
async fn admin_probe(admin: kube::Client, stop: Arc<AtomicBool>) -> Vec<Duration> {
    let pods = Api::<Pod>::namespaced(admin, "default");
    let mut latencies = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let answered =
            tokio::time::timeout(Duration::from_secs(10), pods.list(&ListParams::default())).await;
        latencies.push(match answered {
            Ok(Ok(_)) => started.elapsed(),
            // A failed or hung admin request counts as the worst case.
            _ => Duration::from_secs(10),
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    latencies
}

/// Runs `abuse` while the admin probes; fills the scenario's figures.
async fn with_probe<F>(plane: &ControlPlane, name: &str, abuse: F) -> Scenario
where
    F: std::future::Future<Output = BTreeMap<String, usize>>,
{
    println!("==> overload: {name}");
    let stop = Arc::new(AtomicBool::new(false));
    let probe = tokio::spawn(admin_probe(plane.client.clone(), Arc::clone(&stop)));
    let started = Instant::now();
    let outcomes = abuse.await;
    let took = started.elapsed();
    // Keep probing a moment after the abuse ended (its state is still held).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let memory = Memory::of(plane.pid()).unwrap_or_default();
    stop.store(true, Ordering::Relaxed);
    let admin = probe.await.unwrap_or_default();
    Scenario {
        name: name.into(),
        outcomes,
        admin,
        memory,
        took,
    }
}

async fn idle_baseline(plane: &ControlPlane) -> Scenario {
    with_probe(plane, "no abuse (baseline)", async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        BTreeMap::new()
    })
    .await
}

fn outcome_of(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} {}", status.code, status.reason),
        other => format!(
            "error: {}",
            other.to_string().chars().take(60).collect::<String>()
        ),
    }
}

async fn watch_flood(plane: &ControlPlane, user: &kube::Client, count: usize) -> Scenario {
    let pods = Api::<Pod>::namespaced(user.clone(), "default");
    let held = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    let scenario = with_probe(plane, &format!("{count} watches by one user"), async move {
        let results: Vec<_> = stream::iter(0..count)
            .map(|_| {
                let pods = pods.clone();
                async move { pods.watch(&WatchParams::default().timeout(290), "0").await }
            })
            .buffer_unordered(200)
            .collect()
            .await;
        let mut outcomes = BTreeMap::new();
        let mut keep = keep.lock().await;
        for result in results {
            let outcome = match result {
                Ok(stream) => {
                    keep.push(stream.boxed());
                    "accepted".to_owned()
                }
                Err(error) => outcome_of(&error),
            };
            *outcomes.entry(outcome).or_insert(0) += 1;
        }
        outcomes
    })
    .await;
    drop(held);
    scenario
}

async fn list_burst(plane: &ControlPlane, user: &kube::Client, count: usize) -> Scenario {
    let maps = Api::<ConfigMap>::namespaced(user.clone(), NAMESPACE);
    let params = ListParams::default();
    with_probe(
        plane,
        &format!("{count} lists at once by one user"),
        async {
            let results =
                futures_util::future::join_all((0..count).map(|_| maps.list(&params))).await;
            let mut outcomes = BTreeMap::new();
            for result in results {
                let outcome = match result {
                    Ok(_) => "200 OK".to_owned(),
                    Err(error) => outcome_of(&error),
                };
                *outcomes.entry(outcome).or_insert(0) += 1;
            }
            outcomes
        },
    )
    .await
}

/// The server's address and CA from the admin kubeconfig's data directory.
fn tls_connector(data_dir: &Path) -> anyhow::Result<TlsConnector> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let ca = data_dir.join("pki/ca.crt");
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&ca)
        .with_context(|| format!("cannot read {}", ca.display()))?
    {
        roots.add(cert?)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

fn server_address(data_dir: &Path) -> anyhow::Result<std::net::SocketAddr> {
    let kubeconfig = kube::config::Kubeconfig::read_from(data_dir.join("admin.kubeconfig"))?;
    let server = kubeconfig
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref())
        .and_then(|c| c.server.clone())
        .context("no server in the admin kubeconfig")?;
    let address = server.trim_start_matches("https://").trim_end_matches('/');
    address
        .parse()
        .with_context(|| format!("server {server} is not IP:port"))
}

async fn large_body(plane: &ControlPlane, mib: usize) -> anyhow::Result<Scenario> {
    let connector = tls_connector(plane.data_dir())?;
    let address = server_address(plane.data_dir())?;
    Ok(
        with_probe(plane, &format!("one {mib} MiB body"), async move {
            let outcome = match post_large(&connector, address, mib).await {
                Ok(status) => status,
                Err(error) => format!("error: {error:#}"),
            };
            BTreeMap::from([(outcome, 1)])
        })
        .await,
    )
}

/// POSTs a `mib` MiB ConfigMap body as the bench user; the response's status line (the
/// server may answer before the body is all sent).
async fn post_large(
    connector: &TlsConnector,
    address: std::net::SocketAddr,
    mib: usize,
) -> anyhow::Result<String> {
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let name = ServerName::IpAddress(address.ip().into());
    let mut tls = connector.connect(name, tcp).await?;
    let length = mib << 20;
    let head = format!(
        "POST /api/v1/namespaces/{NAMESPACE}/configmaps HTTP/1.1\r\nHost: {address}\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n",
        rbac::TOKEN
    );
    tls.write_all(head.as_bytes()).await?;
    let chunk = vec![b' '; 1 << 20];
    let (mut read, mut write) = tokio::io::split(tls);
    let writer = tokio::spawn(async move {
        for _ in 0..mib {
            if write.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(60), read.read(&mut answer)).await??;
    writer.abort();
    let text = String::from_utf8_lossy(&answer[..n]);
    Ok(text.lines().next().unwrap_or("no answer").to_owned())
}

async fn idle_tls(plane: &ControlPlane, count: usize) -> anyhow::Result<Scenario> {
    let connector = tls_connector(plane.data_dir())?;
    let address = server_address(plane.data_dir())?;
    let held = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    let scenario = with_probe(
        plane,
        &format!("{count} idle TLS connections"),
        async move {
            let results: Vec<_> = stream::iter(0..count)
                .map(|_| {
                    let connector = connector.clone();
                    async move {
                        let tcp = tokio::net::TcpStream::connect(address).await?;
                        let name = ServerName::IpAddress(address.ip().into());
                        connector.connect(name, tcp).await
                    }
                })
                .buffer_unordered(100)
                .collect()
                .await;
            let mut outcomes = BTreeMap::new();
            let mut keep = keep.lock().await;
            for result in results {
                let outcome = match result {
                    Ok(stream) => {
                        keep.push(stream);
                        "handshake done".to_owned()
                    }
                    Err(error) => format!("error: {}", error.kind()),
                };
                *outcomes.entry(outcome).or_insert(0) += 1;
            }
            drop(keep);
            // Held idle for a while, the admin probing meanwhile.
            tokio::time::sleep(Duration::from_secs(5)).await;
            outcomes
        },
    )
    .await;
    // How many the server kept open all along.
    let mut open = 0;
    for stream in held.lock().await.iter_mut() {
        let mut byte = [0u8; 1];
        // Still open: nothing to read yet (a closed one reads end of file at once).
        if tokio::time::timeout(Duration::from_millis(1), stream.read(&mut byte))
            .await
            .is_err()
        {
            open += 1;
        }
    }
    let mut scenario = scenario;
    scenario
        .outcomes
        .insert("still open at the end".into(), open);
    Ok(scenario)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn render(scenarios: &[Scenario]) -> String {
    let mut out = String::from(
        "# keelson overload benchmark\n\n\
         One non-exempt user abuses a `keelson-control-plane` with its default limits \
         (`--max-requests-inflight 400`, `--max-mutating-requests-inflight 200`, \
         `--max-watches-per-user 1000`, `--request-timeout 60s`) while the `system:masters` \
         admin lists pods every 100 ms. Target: the admin's request within 1 s.\n\n\
         | abuse | took | how it was answered | admin p50 | admin p99 | admin max | server RSS | RSS peak |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for s in scenarios {
        let mut admin = s.admin.clone();
        admin.sort();
        let outcomes: Vec<String> = s
            .outcomes
            .iter()
            .map(|(k, v)| format!("{v}× {k}"))
            .collect();
        let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
        out.push_str(&format!(
            "| {} | {:.1} s | {} | {} | {} | {} | {} MiB | {} MiB |\n",
            s.name,
            s.took.as_secs_f64(),
            if outcomes.is_empty() {
                "-".into()
            } else {
                outcomes.join(", ")
            },
            ms(percentile(&admin, 0.5)),
            ms(percentile(&admin, 0.99)),
            ms(admin.last().copied().unwrap_or_default()),
            s.memory.rss_kib / 1024,
            s.memory.peak_kib / 1024,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_lists_each_scenario_with_admin_latency_and_memory() {
        let scenario = Scenario {
            name: "3 watches by one user".into(),
            outcomes: BTreeMap::from([("accepted".into(), 2), ("429 TooManyRequests".into(), 1)]),
            admin: vec![
                Duration::from_millis(3),
                Duration::from_millis(1),
                Duration::from_millis(2),
            ],
            memory: Memory {
                rss_kib: 40 * 1024,
                peak_kib: 50 * 1024,
            },
            took: Duration::from_millis(1500),
        };
        let report = render(&[scenario]);
        assert!(
            report.contains(
                "| 3 watches by one user | 1.5 s | 1× 429 TooManyRequests, 2× accepted | 2.0 ms | 3.0 ms | 3.0 ms | 40 MiB | 50 MiB |"
            ),
            "{report}"
        );
    }
}

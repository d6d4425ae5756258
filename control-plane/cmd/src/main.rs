//! `keelson-control-plane`: runs keelson's Kubernetes-compatible API server over an embedded
//! SQLite store (default) or etcd, and writes an admin kubeconfig for kubectl.
//!
//! For now the API is served over plain HTTP without authentication; HTTPS with generated
//! certificates and client authentication come next (issue 4, deliverable 4).
#![forbid(unsafe_code)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use keelson_api::cidr::Ipv4Cidr;
use keelson_apiserver::{AppState, ServiceNetwork, app, bootstrap};
use keelson_controllers::ControllerSet;
use keelson_store::{CompactionPolicy, EtcdStore, SqliteOptions, SqliteStore, Store};
use tracing_subscriber::EnvFilter;

/// Which store backend holds the cluster state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StoreKind {
    /// Embedded SQLite at DATA_DIR/state.db.
    Sqlite,
    /// An external etcd cluster (--etcd-endpoints).
    Etcd,
}

/// keelson's control plane: a Kubernetes-compatible API server.
///
/// WARNING: the API is served over PLAIN HTTP WITHOUT AUTHENTICATION for now. Anyone who can
/// reach --listen controls the cluster: keep it on loopback. TLS and client authentication
/// come later.
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Directory for the SQLite store (state.db) and admin.kubeconfig; created if missing.
    #[arg(long, env = "KEELSON_DATA_DIR", default_value = "/var/lib/keelson")]
    data_dir: PathBuf,
    /// Address to serve the API on (plain HTTP, no authentication: keep it on loopback).
    #[arg(long, env = "KEELSON_LISTEN", default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Store backend.
    #[arg(long, env = "KEELSON_STORE", value_enum, default_value_t = StoreKind::Sqlite)]
    store: StoreKind,
    /// etcd client URLs for --store etcd, comma-separated.
    #[arg(
        long,
        env = "KEELSON_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    etcd_endpoints: Vec<String>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Networks, the scheduler and the controllers.
#[derive(Debug, clap::Args)]
struct ClusterArgs {
    /// The block Services' ClusterIPs are allocated from (the first address is the
    /// `kubernetes` Service's).
    #[arg(
        long,
        env = "KEELSON_SERVICE_CLUSTER_IP_RANGE",
        default_value = "10.96.0.0/12"
    )]
    service_cluster_ip_range: Ipv4Cidr,
    /// The NodePort range, `LOW-HIGH`.
    #[arg(
        long,
        env = "KEELSON_SERVICE_NODE_PORT_RANGE",
        default_value = "30000-32767",
        value_parser = parse_port_range
    )]
    service_node_port_range: std::ops::RangeInclusive<u16>,
    /// The address the `kubernetes` Service's endpoints point at (default: the --listen
    /// address, or 127.0.0.1 when that is unspecified).
    #[arg(long, env = "KEELSON_ADVERTISE_ADDRESS")]
    advertise_address: Option<std::net::IpAddr>,
    /// The block node pod CIDRs are cut from (node IPAM).
    #[arg(long, env = "KEELSON_CLUSTER_CIDR", default_value = "10.244.0.0/16")]
    cluster_cidr: Ipv4Cidr,
    /// The prefix length of each node's pod CIDR.
    #[arg(long, env = "KEELSON_NODE_CIDR_MASK_SIZE", default_value_t = 24,
          value_parser = clap::value_parser!(u8).range(1..=30))]
    node_cidr_mask_size: u8,
    /// Controllers to run: `all`, `none`, or a comma-separated list of endpointslice,
    /// endpoints, replicaset, deployment, namespace, garbagecollector, nodeipam, nodelifecycle;
    /// `-name` removes one (`all,-nodelifecycle`).
    #[arg(long, env = "KEELSON_CONTROLLERS", default_value = "all")]
    controllers: ControllerSet,
    /// Do not run the scheduler (pods stay unbound unless another scheduler binds them).
    #[arg(long, env = "KEELSON_NO_SCHEDULER")]
    no_scheduler: bool,
}

fn parse_port_range(text: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (low, high) = text
        .split_once('-')
        .ok_or_else(|| format!("expected LOW-HIGH, e.g. 30000-32767, not {text:?}"))?;
    let parse = |p: &str| {
        p.trim()
            .parse::<u16>()
            .map_err(|_| format!("{p:?} is not a port number"))
    };
    let (low, high) = (parse(low)?, parse(high)?);
    if low == 0 || low > high {
        return Err(format!(
            "{text:?} is not a range of ports LOW-HIGH with 0 < LOW <= HIGH"
        ));
    }
    Ok(low..=high)
}

impl ClusterArgs {
    fn service_network(&self) -> ServiceNetwork {
        ServiceNetwork {
            cluster_ip_range: self.service_cluster_ip_range,
            node_ports: self.service_node_port_range.clone(),
        }
    }
}

/// A kube-rs client with the admin kubeconfig the control plane wrote: the scheduler and the
/// controllers talk to the API server like any other client.
async fn admin_client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("cannot read {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .with_context(|| format!("cannot use {}", kubeconfig.display()))?;
    kube::Client::try_from(config).context("cannot build an API client")
}

/// Creates the `kubernetes` Service, then starts the scheduler and the controllers the flags
/// ask for, as API clients of the server listening on `listen`. Returns the task to abort on
/// shutdown.
async fn start_cluster_components(
    args: &ClusterArgs,
    store: &dyn Store,
    listen: SocketAddr,
    kubeconfig: &Path,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let advertise_ip = args
        .advertise_address
        .unwrap_or(if listen.ip().is_unspecified() {
            std::net::IpAddr::from([127, 0, 0, 1])
        } else {
            listen.ip()
        });
    keelson_apiserver::allocator::ensure_kubernetes_service(
        store,
        &args.service_network(),
        SocketAddr::new(advertise_ip, listen.port()),
    )
    .await
    .context("cannot create the kubernetes Service")?;
    let client = admin_client(kubeconfig).await?;
    let options = keelson_controllers::Options {
        enabled: args.controllers.0.clone(),
        cluster_cidr: args.cluster_cidr,
        node_cidr_mask_size: args.node_cidr_mask_size,
        ..keelson_controllers::Options::default()
    };
    let scheduler = !args.no_scheduler;
    Ok(tokio::spawn(async move {
        let controllers = async {
            if options.enabled.is_empty() {
                std::future::pending::<()>().await;
            }
            if let Err(error) = keelson_controllers::run(client.clone(), options).await {
                tracing::error!(error = format!("{error:#}"), "the controllers stopped");
            }
        };
        let scheduler = async {
            if !scheduler {
                std::future::pending::<()>().await;
            }
            if let Err(error) =
                keelson_scheduler::run(client.clone(), keelson_scheduler::Options::default()).await
            {
                tracing::error!(error = format!("{error:#}"), "the scheduler stopped");
            }
        };
        tokio::join!(controllers, scheduler);
    }))
}

fn kubeconfig(listen: SocketAddr) -> String {
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: keelson\n  cluster:\n    server: http://{listen}\n\
         contexts:\n\
         - name: keelson\n  context:\n    cluster: keelson\n    user: admin\n\
         current-context: keelson\n\
         users:\n\
         - name: admin\n  user: {{}}\n"
    )
}

fn write_kubeconfig(dir: &Path, listen: SocketAddr) -> anyhow::Result<PathBuf> {
    let path = dir.join("admin.kubeconfig");
    std::fs::write(&path, kubeconfig(listen))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

async fn open_store(args: &Args) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match args.store {
        StoreKind::Sqlite => {
            let path = args.data_dir.join("state.db");
            let store = SqliteStore::open(&path, SqliteOptions::default())
                .await
                .with_context(|| format!("cannot open the SQLite store {}", path.display()))?;
            tracing::info!(path = %path.display(), "opened the SQLite store");
            Arc::new(store)
        }
        StoreKind::Etcd => {
            if args.etcd_endpoints.is_empty() {
                bail!("--store etcd needs --etcd-endpoints");
            }
            let store = EtcdStore::connect(&args.etcd_endpoints)
                .await
                .with_context(|| format!("cannot connect to etcd at {:?}", args.etcd_endpoints))?;
            tracing::info!(endpoints = ?args.etcd_endpoints, "connected to etcd");
            Arc::new(store)
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    let store = open_store(&args).await?;
    bootstrap(store.as_ref())
        .await
        .context("cannot create the system namespaces")?;
    let compactor = tokio::spawn(keelson_store::run_compactor(
        Arc::clone(&store),
        CompactionPolicy::default(),
    ));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let listen = listener.local_addr().context("no local address")?;
    let kubeconfig = write_kubeconfig(&args.data_dir, listen)?;
    tracing::warn!(
        %listen,
        "serving the Kubernetes API over PLAIN HTTP WITHOUT AUTHENTICATION: keep it on loopback \
         (TLS and authentication come later)"
    );
    tracing::info!(kubeconfig = %kubeconfig.display(), "wrote the admin kubeconfig");
    let state =
        AppState::new(Arc::clone(&store)).with_service_network(args.cluster.service_network());
    let router = app(state.clone());
    let server = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            state.shutdown();
        })
        .into_future();
    let server = tokio::spawn(server);
    let components =
        start_cluster_components(&args.cluster, store.as_ref(), listen, &kubeconfig).await?;
    let served = server.await.context("the API server task panicked")?;
    components.abort();
    served.context("the API server failed")?;
    compactor.abort();
    Ok(())
}

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
use keelson_apiserver::{AppState, app, bootstrap};
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
    // The API server's state wraps the store so /metrics times every store call, the
    // compactor's included.
    let state = AppState::new(store);
    let compactor = tokio::spawn(keelson_store::run_compactor(
        Arc::clone(state.store()),
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
    let router = app(state.clone());
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            state.shutdown();
        })
        .await
        .context("the API server failed")?;
    compactor.abort();
    Ok(())
}

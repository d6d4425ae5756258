//! `keelson-control-plane`: runs keelson's Kubernetes-compatible API server over an embedded
//! SQLite store (default) or etcd, serves it over HTTPS with certificates from its own CA, and
//! writes an admin kubeconfig for kubectl. `keelson-control-plane node-kubeconfig --node NAME`
//! issues a node's credentials.
#![forbid(unsafe_code)]

mod pki;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use keelson_apiserver::{
    AppState, Authenticator, UserInfo, app, auth::MASTERS_GROUP, bootstrap, tls,
};
use keelson_store::{CompactionPolicy, EtcdStore, SqliteOptions, SqliteStore, Store};
use pki::{Issued, Pki};
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
/// The API is served over HTTPS. On first start it creates a CA in DATA_DIR/pki and writes
/// DATA_DIR/admin.kubeconfig (a client certificate in group system:masters). Clients
/// authenticate with a certificate from that CA or a bearer token from --token-auth-file;
/// anonymous requests get 401 (except /healthz, /readyz, /livez, /version).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
struct Args {
    /// Directory for the store (state.db), the CA and certificates (pki/) and
    /// admin.kubeconfig; created if missing.
    #[arg(
        long,
        global = true,
        env = "KEELSON_DATA_DIR",
        default_value = "/var/lib/keelson"
    )]
    data_dir: PathBuf,
    /// Address to serve the API on (HTTPS).
    #[arg(
        long,
        global = true,
        env = "KEELSON_LISTEN",
        default_value = "127.0.0.1:6443"
    )]
    listen: SocketAddr,
    /// Static bearer tokens, Kubernetes' CSV format: token,user,uid[,"group1,group2"].
    #[arg(long, env = "KEELSON_TOKEN_AUTH_FILE")]
    token_auth_file: Option<PathBuf>,
    /// Extra DNS names or IP addresses for the serving certificate (repeatable).
    #[arg(long = "tls-san", value_name = "NAME_OR_IP")]
    tls_sans: Vec<String>,
    #[command(subcommand)]
    command: Option<Command>,
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

#[derive(Debug, Subcommand)]
enum Command {
    /// Issues node NAME's credentials (user system:node:NAME in group system:nodes, which may
    /// change only its own Node and Lease and the pods bound to it) and prints a kubeconfig.
    NodeKubeconfig {
        /// The node's name.
        #[arg(long)]
        node: String,
        /// The API server URL the node uses [default: https://<--listen>].
        #[arg(long)]
        server: Option<String>,
        /// Write the kubeconfig here (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// The URL clients use for an API server listening on `listen`.
fn server_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("https://{}", SocketAddr::new(ip, listen.port()))
}

/// Issues the serving certificate: loopback, the listen address (every host address when it
/// is unspecified), the names in-cluster clients use, and --tls-san.
fn serving_certificate(pki: &Pki, listen: SocketAddr, sans: &[String]) -> anyhow::Result<Issued> {
    let mut dns: Vec<String> = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .map(str::to_owned)
    .into();
    if let Ok(host) = nix::unistd::gethostname()
        && let Some(host) = host.to_str()
    {
        dns.push(host.to_owned());
    }
    let mut ips = vec![
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
        // The first address of the default service range: the `kubernetes` Service.
        IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1)),
    ];
    if listen.ip().is_unspecified() {
        let addresses = nix::ifaddrs::getifaddrs().context("cannot list the host's addresses")?;
        ips.extend(addresses.filter_map(|a| {
            let address = a.address?;
            address
                .as_sockaddr_in()
                .map(|v4| IpAddr::V4(v4.ip()))
                .or_else(|| address.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        }));
    } else {
        ips.push(listen.ip());
    }
    for san in sans {
        match san.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) => dns.push(san.clone()),
        }
    }
    ips.sort_unstable();
    ips.dedup();
    dns.sort_unstable();
    dns.dedup();
    pki.serving(&dns, &ips)
}

fn write_admin_kubeconfig(dir: &Path, pki: &Pki, server: &str) -> anyhow::Result<PathBuf> {
    let admin = pki.persistent_client("admin", "kubernetes-admin", Some(MASTERS_GROUP))?;
    let path = dir.join("admin.kubeconfig");
    pki::write_private(
        &path,
        pki::kubeconfig(server, pki.ca_pem(), "kubernetes-admin", &admin).as_bytes(),
    )?;
    Ok(path)
}

fn node_kubeconfig(
    args: &Args,
    node: &str,
    server: Option<&str>,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    keelson_api::names::validate_dns1123_subdomain(node)
        .map_err(|cause| anyhow::anyhow!("--node {node:?} is not a valid node name: {cause}"))?;
    let pki = Pki::load_or_create(&args.data_dir.join("pki"))?;
    let user = UserInfo::node(node);
    let credentials = pki.client(&user.name, user.groups.first().map(String::as_str))?;
    let server = server.map_or_else(|| server_url(args.listen), str::to_owned);
    let kubeconfig = pki::kubeconfig(&server, pki.ca_pem(), &user.name, &credentials);
    match out {
        Some(path) => {
            pki::write_private(path, kubeconfig.as_bytes())?;
            eprintln!("wrote {} for {}", path.display(), user.name);
        }
        None => print!("{kubeconfig}"),
    }
    Ok(())
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
    if let Some(Command::NodeKubeconfig { node, server, out }) = &args.command {
        return node_kubeconfig(&args, node, server.as_deref(), out.as_deref());
    }
    let authenticator = match &args.token_auth_file {
        Some(path) => Authenticator::from_token_file(path)?,
        None => Authenticator::default(),
    };
    let pki = Pki::load_or_create(&args.data_dir.join("pki"))?;
    let store = open_store(&args).await?;
    bootstrap(store.as_ref())
        .await
        .context("cannot create the system namespaces")?;
    // The API server's state wraps the store so /metrics times every store call, the
    // compactor's included.
    let state = AppState::new(store).with_authenticator(authenticator);
    let compactor = tokio::spawn(keelson_store::run_compactor(
        Arc::clone(state.store()),
        CompactionPolicy::default(),
    ));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let listen = listener.local_addr().context("no local address")?;
    let serving = serving_certificate(&pki, listen, &args.tls_sans)?;
    let tls_config = tls::server_config(
        serving.cert_pem.as_bytes(),
        serving.key_pem.as_bytes(),
        pki.ca_pem().as_bytes(),
    )
    .context("cannot configure TLS")?;
    let kubeconfig = write_admin_kubeconfig(&args.data_dir, &pki, &server_url(listen))?;
    tracing::info!(%listen, "serving the Kubernetes API over HTTPS");
    tracing::info!(kubeconfig = %kubeconfig.display(), "wrote the admin kubeconfig");
    let router = app(state.clone());
    tls::serve(listener, router, tls_config, async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        state.shutdown();
    })
    .await
    .context("the API server failed")?;
    compactor.abort();
    Ok(())
}

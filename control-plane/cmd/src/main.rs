//! `keelson-control-plane`: runs keelson's Kubernetes-compatible API server over an embedded
//! SQLite store (default) or etcd, serves it over HTTPS with certificates from its own CA, and
//! writes an admin kubeconfig for kubectl. `keelson-control-plane node-kubeconfig --node NAME`
//! issues a node's credentials; `keelson-control-plane token create` prints the one-line join
//! command of a new bootstrap token (see `token`).
#![forbid(unsafe_code)]

mod pki;
mod token;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use keelson_api::cidr::Ipv4Cidr;
use keelson_apiserver::{
    AggregatorClient, AppState, Authenticator, KubeletClient, ServiceNetwork, UserInfo,
    aggregation, app, auth::MASTERS_GROUP, bootstrap, tls,
};
use keelson_controllers::ControllerSet;
use keelson_store::{CompactionPolicy, EtcdStore, SqliteOptions, SqliteStore, Store};
use pki::{Issued, Pki};
use tracing_subscriber::EnvFilter;

/// The common name of the API server's front-proxy client certificate (kube's default name,
/// which aggregated API servers are told to accept).
const FRONT_PROXY_CLIENT: &str = "front-proxy-client";
/// How often APIServices' `Available` condition is checked.
const API_SERVICE_CHECK_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

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
    /// endpoints, replicaset, deployment, namespace, garbagecollector, nodeipam, nodelifecycle,
    /// bootstrapsigner, tokencleaner, csrapproving, csrsigning; `-name` removes one (`all,-nodelifecycle`).
    #[arg(long, env = "KEELSON_CONTROLLERS", default_value = "all")]
    controllers: ControllerSet,
    /// The longest lifetime of certificates the CSR signer issues (Kubernetes'
    /// --cluster-signing-duration); a request's spec.expirationSeconds may ask for less.
    #[arg(long, env = "KEELSON_CLUSTER_SIGNING_DURATION", default_value = "8760h",
          value_parser = parse_duration)]
    cluster_signing_duration: std::time::Duration,
    /// Do not run the scheduler (pods stay unbound unless another scheduler binds them).
    #[arg(long, env = "KEELSON_NO_SCHEDULER")]
    no_scheduler: bool,
    /// How long a node's Lease may go unrenewed before the node is NotReady (Unknown) and
    /// tainted `node.kubernetes.io/unreachable` (e.g. `40s`, `500ms`).
    #[arg(long, env = "KEELSON_NODE_MONITOR_GRACE_PERIOD", default_value = "40s",
          value_parser = parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// How often the node lifecycle controller checks node Leases.
    #[arg(long, env = "KEELSON_NODE_MONITOR_PERIOD", default_value = "5s",
          value_parser = parse_duration)]
    node_monitor_period: std::time::Duration,
    /// How long pods without their own toleration of `node.kubernetes.io/unreachable` stay
    /// on an unreachable node before they are evicted.
    #[arg(
        long,
        env = "KEELSON_DEFAULT_UNREACHABLE_TOLERATION_SECONDS",
        default_value_t = 300
    )]
    default_unreachable_toleration_seconds: u64,
    /// Run the controllers and the scheduler only while holding their Lease
    /// (kube-system/keelson-controller-manager, kube-system/keelson-scheduler), so several
    /// control planes on one store never act twice. `--leader-elect=false` to turn off.
    #[arg(long, env = "KEELSON_LEADER_ELECT", default_value_t = true,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    leader_elect: bool,
    /// This instance's holderIdentity [default: HOSTNAME_LISTEN_PID].
    #[arg(long, env = "KEELSON_LEADER_ELECT_IDENTITY")]
    leader_elect_identity: Option<String>,
    /// How long a leader Lease holds without renewal.
    #[arg(long, env = "KEELSON_LEADER_ELECT_LEASE_DURATION", default_value = "15s",
          value_parser = parse_duration)]
    leader_elect_lease_duration: std::time::Duration,
    /// How long a leader keeps acting without renewing (less than the lease duration).
    #[arg(long, env = "KEELSON_LEADER_ELECT_RENEW_DEADLINE", default_value = "10s",
          value_parser = parse_duration)]
    leader_elect_renew_deadline: std::time::Duration,
    /// How often candidates try to acquire and the leader renews.
    #[arg(long, env = "KEELSON_LEADER_ELECT_RETRY_PERIOD", default_value = "2s",
          value_parser = parse_duration)]
    leader_elect_retry_period: std::time::Duration,
}

/// A positive duration: `40s`, `500ms`, `2m`, `1h30m` (or ISO 8601 `PT40S`).
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let duration: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 40s or 500ms: {e}"))?;
    if !duration.is_positive() {
        return Err(format!("{text:?} must be a positive duration"));
    }
    Ok(duration.unsigned_abs())
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
    pki: &Pki,
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
        node_monitor_grace_period: args.node_monitor_grace_period,
        node_monitor_period: args.node_monitor_period,
        default_toleration: std::time::Duration::from_secs(
            args.default_unreachable_toleration_seconds,
        ),
        bootstrap: Some(Arc::new(keelson_controllers::BootstrapSettings {
            server: format!("https://{}", SocketAddr::new(advertise_ip, listen.port())),
            ca: keelson_controllers::csrsigning::CertificateAuthority::new(
                pki.ca_pem(),
                &pki.ca_key_pem(),
                args.cluster_signing_duration,
            )
            .context("cannot use the cluster CA to sign node certificates")?,
        })),
    };
    let scheduler = !args.no_scheduler;
    let election = args.leader_elect.then(|| {
        let identity = args.leader_elect_identity.clone().unwrap_or_else(|| {
            let host = nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "keelson".into());
            format!("{host}_{listen}_{}", std::process::id())
        });
        move |name: &str| keelson_controllers::leaderelection::Config {
            lease_duration: args.leader_elect_lease_duration,
            renew_deadline: args.leader_elect_renew_deadline,
            retry_period: args.leader_elect_retry_period,
            ..keelson_controllers::leaderelection::Config::new(name, &identity)
        }
    });
    let elections = election.map(|config| {
        (
            config("keelson-controller-manager"),
            config("keelson-scheduler"),
        )
    });
    if let Some((config, _)) = &elections {
        config.check().context("bad --leader-elect-* timings")?;
    }
    Ok(tokio::spawn(async move {
        let (controller_lease, scheduler_lease) = elections.unzip();
        let controllers = async {
            if options.enabled.is_empty() {
                std::future::pending::<()>().await;
            }
            let work = || keelson_controllers::run(client.clone(), options.clone());
            let result = match controller_lease {
                Some(lease) => {
                    keelson_controllers::leaderelection::run_as_leader(client.clone(), lease, work)
                        .await
                }
                None => work().await,
            };
            if let Err(error) = result {
                tracing::error!(error = format!("{error:#}"), "the controllers stopped");
            }
        };
        let scheduler = async {
            if !scheduler {
                std::future::pending::<()>().await;
            }
            let work =
                || keelson_scheduler::run(client.clone(), keelson_scheduler::Options::default());
            let result = match scheduler_lease {
                Some(lease) => {
                    keelson_controllers::leaderelection::run_as_leader(client.clone(), lease, work)
                        .await
                }
                None => work().await,
            };
            if let Err(error) = result {
                tracing::error!(error = format!("{error:#}"), "the scheduler stopped");
            }
        };
        tokio::join!(controllers, scheduler);
    }))
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
    /// Bootstrap tokens for `keelson-node-agent join` (through the running API server, with
    /// DATA_DIR/admin.kubeconfig).
    Token {
        #[command(subcommand)]
        action: TokenCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Creates a token and prints the one-line join command for it.
    Create {
        /// How long the token is valid (`0` never expires).
        #[arg(long, default_value = "24h", value_parser = parse_ttl)]
        ttl: TokenTtl,
        /// What the token is for, shown by `token list`.
        #[arg(long)]
        description: Option<String>,
    },
    /// Lists the bootstrap tokens.
    List,
    /// Deletes a token (its id or the whole token).
    Delete {
        /// `ID` or `ID.SECRET`.
        token: String,
    },
}

/// A `--ttl`: a duration, or `0` for a token that never expires.
#[derive(Debug, Clone, Copy)]
struct TokenTtl(Option<std::time::Duration>);

fn parse_ttl(text: &str) -> Result<TokenTtl, String> {
    if text.trim() == "0" || text.trim() == "0s" {
        return Ok(TokenTtl(None));
    }
    parse_duration(text).map(|d| TokenTtl(Some(d)))
}

/// The address nodes reach the API at: --advertise-address, else the --listen address
/// (127.0.0.1 when that is unspecified), with the --listen port.
fn advertised(args: &Args) -> SocketAddr {
    let ip = args
        .cluster
        .advertise_address
        .unwrap_or(if args.listen.ip().is_unspecified() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            args.listen.ip()
        });
    SocketAddr::new(ip, args.listen.port())
}

async fn token_command(args: &Args, action: &TokenCommand) -> anyhow::Result<()> {
    let kubeconfig = args.data_dir.join("admin.kubeconfig");
    match action {
        TokenCommand::Create { ttl, description } => {
            let ca_path = args.data_dir.join("pki").join("ca.crt");
            let ca_pem = std::fs::read_to_string(&ca_path).with_context(|| {
                format!(
                    "cannot read the cluster CA {} (start keelson-control-plane with this --data-dir first)",
                    ca_path.display()
                )
            })?;
            token::create(
                &kubeconfig,
                &ca_pem,
                advertised(args),
                ttl.0,
                description.as_deref(),
            )
            .await
        }
        TokenCommand::List => token::list(&kubeconfig).await,
        TokenCommand::Delete { token } => token::delete(&kubeconfig, token).await,
    }
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
/// is unspecified), the names and the Service address in-cluster clients use, and --tls-san.
fn serving_certificate(
    pki: &Pki,
    listen: SocketAddr,
    kubernetes_service_ip: Option<Ipv4Addr>,
    sans: &[String],
) -> anyhow::Result<Issued> {
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
    ];
    // In-cluster clients reach the API through the `kubernetes` Service.
    ips.extend(kubernetes_service_ip.map(IpAddr::V4));
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

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(run());
    // A task that does not yield must not keep a stopped server alive: give the rest a
    // bounded time to finish, then exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        // Colours only on a terminal: logs redirected to a file stay plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let args = Args::parse();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    match &args.command {
        Some(Command::NodeKubeconfig { node, server, out }) => {
            return node_kubeconfig(&args, node, server.as_deref(), out.as_deref());
        }
        Some(Command::Token { action }) => return token_command(&args, action).await,
        None => {}
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
    // What kube-apiserver presents to kubelets (`kubectl logs`): the node agents accept this
    // common name from the cluster CA.
    let kubelet_client = pki.persistent_client(
        "apiserver-kubelet-client",
        "kube-apiserver-kubelet-client",
        None,
    )?;
    let kubelet_client = KubeletClient::new(
        kubelet_client.cert_pem.as_bytes(),
        kubelet_client.key_pem.as_bytes(),
    )
    .context("cannot use the kubelet client certificate")?;
    // What kube-apiserver presents to aggregated API servers (--proxy-client-cert-file), from
    // a CA of its own that the extension-apiserver-authentication ConfigMap publishes.
    let front_proxy = Pki::load_or_create_ca(
        &args.data_dir.join("pki"),
        "front-proxy-ca",
        "keelson-front-proxy-ca",
    )?;
    let proxy_client =
        front_proxy.persistent_client("front-proxy-client", FRONT_PROXY_CLIENT, None)?;
    aggregation::publish_authentication(
        store.as_ref(),
        pki.ca_pem(),
        front_proxy.ca_pem(),
        &[FRONT_PROXY_CLIENT],
    )
    .await
    .context("cannot publish extension-apiserver-authentication")?;
    let aggregator_client = AggregatorClient::new(
        proxy_client.cert_pem.as_bytes(),
        proxy_client.key_pem.as_bytes(),
    )
    .context("cannot use the front-proxy client certificate")?;
    let state = AppState::new(Arc::clone(&store))
        .with_authenticator(authenticator)
        .with_kubelet_client(kubelet_client)
        .with_aggregator_client(aggregator_client)
        .with_service_network(args.cluster.service_network());
    let availability = tokio::spawn(aggregation::available::run(
        state.clone(),
        API_SERVICE_CHECK_PERIOD,
    ));
    let compactor = tokio::spawn(keelson_store::run_compactor(
        Arc::clone(state.store()),
        CompactionPolicy::default(),
    ));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let listen = listener.local_addr().context("no local address")?;
    let serving = serving_certificate(
        &pki,
        listen,
        args.cluster.service_network().kubernetes_service_ip(),
        &args.tls_sans,
    )?;
    let (tls_config, serving_cert) = tls::reloadable_server_config(
        serving.cert_pem.as_bytes(),
        serving.key_pem.as_bytes(),
        pki.ca_pem().as_bytes(),
    )
    .context("cannot configure TLS")?;
    let renewal = tokio::spawn(renew_serving_certificate(
        args.data_dir.join("pki"),
        listen,
        args.cluster.service_network().kubernetes_service_ip(),
        args.tls_sans.clone(),
        serving.cert_pem,
        serving_cert,
    ));
    let kubeconfig = write_admin_kubeconfig(&args.data_dir, &pki, &server_url(listen))?;
    tracing::info!(%listen, "serving the Kubernetes API over HTTPS");
    tracing::info!(kubeconfig = %kubeconfig.display(), "wrote the admin kubeconfig");
    let router = app(state.clone());
    let server = tokio::spawn(tls::serve(listener, router, tls_config, async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        state.shutdown();
    }));
    let components =
        start_cluster_components(&args.cluster, store.as_ref(), listen, &kubeconfig, &pki).await?;
    let served = server.await.context("the API server task panicked")?;
    components.abort();
    served.context("the API server failed")?;
    compactor.abort();
    availability.abort();
    renewal.abort();
    Ok(())
}

/// How often the serving certificate's remaining lifetime is checked.
const SERVING_CHECK_PERIOD: std::time::Duration = std::time::Duration::from_secs(3600);

/// Re-issues the serving certificate when less than a third of its lifetime is left
/// ([`pki::needs_renewal`]) and hands it to the TLS layer, which presents it from the next
/// handshake on.
async fn renew_serving_certificate(
    pki_dir: PathBuf,
    listen: SocketAddr,
    service_ip: Option<Ipv4Addr>,
    sans: Vec<String>,
    mut current_pem: String,
    serving: Arc<tls::ServingCertificate>,
) {
    let mut tick = tokio::time::interval(SERVING_CHECK_PERIOD);
    loop {
        tick.tick().await;
        if !pki::needs_renewal(&current_pem, jiff::Timestamp::now()) {
            continue;
        }
        let renewed = Pki::load_or_create(&pki_dir)
            .and_then(|pki| serving_certificate(&pki, listen, service_ip, &sans))
            .and_then(|issued| {
                serving
                    .swap(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())
                    .context("cannot use the renewed serving certificate")?;
                Ok(issued.cert_pem)
            });
        match renewed {
            Ok(pem) => {
                tracing::info!("renewed the serving certificate");
                current_pem = pem;
            }
            Err(error) => {
                tracing::warn!(
                    error = format!("{error:#}"),
                    "cannot renew the serving certificate"
                );
            }
        }
    }
}

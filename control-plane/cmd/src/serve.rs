//! Serving: the store, the certificates, the admin kubeconfig, the HTTPS server and the
//! in-process components, until SIGTERM or Ctrl-C.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, bail};
use keelson_apiserver::{
    AggregatorClient, AppState, Authenticator, KubeletClient, aggregation, app,
    auth::MASTERS_GROUP, bootstrap, master_leases, tls,
};
use keelson_store::{CompactionPolicy, EtcdStore, SqliteOptions, SqliteStore, Store};
use tracing_subscriber::EnvFilter;

use crate::{
    args::{Args, Command, StoreKind},
    components::start_cluster_components,
    node_kubeconfig::{node_kubeconfig, server_url},
    pki::{self, Issued, Pki},
};

/// The common name of the API server's front-proxy client certificate (kube's default name,
/// which aggregated API servers are told to accept).
const FRONT_PROXY_CLIENT: &str = "front-proxy-client";
/// How often APIServices' `Available` condition is checked.
const API_SERVICE_CHECK_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

/// Issues the serving certificate: loopback, the listen address (every host address when it
/// is unspecified), the advertised address, the names and the Service address in-cluster
/// clients use, and --tls-san.
pub(crate) fn serving_certificate(
    pki: &Pki,
    listen: SocketAddr,
    advertise: IpAddr,
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
    ips.push(advertise);
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

pub(crate) fn write_admin_kubeconfig(
    dir: &Path,
    pki: &Pki,
    server: &str,
) -> anyhow::Result<PathBuf> {
    let admin = pki.persistent_client("admin", "kubernetes-admin", Some(MASTERS_GROUP))?;
    let path = dir.join("admin.kubeconfig");
    pki::write_private(
        &path,
        pki::kubeconfig(server, pki.ca_pem(), "kubernetes-admin", &admin).as_bytes(),
    )?;
    Ok(path)
}

pub(crate) async fn open_store(args: &Args) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match args.store {
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
            let tls = crate::storage::etcd_tls(args)?;
            let store = EtcdStore::connect_with(&args.etcd_endpoints, tls.as_ref())
                .await
                .with_context(|| format!("cannot connect to etcd at {:?}", args.etcd_endpoints))?;
            crate::storage::probe_etcd(&store, &args.etcd_endpoints, tls.as_ref()).await?;
            tracing::info!(endpoints = ?args.etcd_endpoints, "connected to etcd");
            Arc::new(store)
        }
    };
    crate::storage::encrypt(args, store)
}

pub(crate) async fn run(args: Args) -> anyhow::Result<()> {
    keelson_daemon::log::init(
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        keelson_daemon::log::Output::Stdout,
    );
    if let Err(error) = keelson_daemon::limits::raise_open_files() {
        tracing::warn!(%error, "cannot raise the open-file limit");
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("cannot create {}", args.data_dir.display()))?;
    match &args.command {
        Some(Command::NodeKubeconfig { node, server, out }) => {
            return node_kubeconfig(&args, node, server.as_deref(), out.as_deref());
        }
        Some(Command::Token { action }) => return crate::token::command(&args, action).await,
        Some(Command::Snapshot { action }) => return crate::snapshot::command(&args, action).await,
        None => {}
    }
    let authenticator = match &args.token_auth_file {
        Some(path) => Authenticator::from_token_file(path)?,
        None => Authenticator::default(),
    };
    let pki = Pki::load_or_create(&args.data_dir.join("pki"))?;
    let snapshot_schedule = crate::snapshot::schedule(&args)?;
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
        pki.ca_pem().as_bytes(),
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
        .with_watch_cache(args.watch_cache)
        .with_authenticator(authenticator)
        .with_anonymous_auth(args.anonymous_auth)
        .with_kubelet_client(kubelet_client)
        .with_aggregator_client(aggregator_client)
        .with_service_network(args.cluster.service_network())
        .with_limits(args.overload.limits())
        .with_service_accounts(args.service_accounts.tokens(&args.data_dir.join("pki"))?);
    let auditor = args.audit.start(state.metrics())?;
    let state = match &auditor {
        Some(auditor) => state.with_auditor(Arc::clone(auditor)),
        None => state,
    };
    let availability = tokio::spawn(aggregation::available::run(
        state.clone(),
        API_SERVICE_CHECK_PERIOD,
    ));
    let compactor = tokio::spawn(keelson_store::run_compactor(
        Arc::clone(state.store()),
        CompactionPolicy::default(),
    ));
    let snapshots = match snapshot_schedule {
        Some(schedule) => Some(tokio::spawn(crate::snapshot::run_schedule(
            crate::snapshot::Source::from_args(&args)?,
            crate::snapshot::snapshot_dir(&args),
            args.snapshot.snapshot_retention,
            schedule,
        ))),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(args.listen())
        .await
        .with_context(|| format!("cannot listen on {}", args.listen()))?;
    let listen = listener.local_addr().context("no local address")?;
    let advertise = args.advertise_address();
    let serving = serving_certificate(
        &pki,
        listen,
        advertise,
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
        Serving {
            listen,
            advertise,
            service_ip: args.cluster.service_network().kubernetes_service_ip(),
            sans: args.tls_sans.clone(),
        },
        serving.cert_pem,
        serving_cert,
    ));
    let kubeconfig = write_admin_kubeconfig(&args.data_dir, &pki, &server_url(listen))?;
    tracing::info!(%listen, %advertise, "serving the Kubernetes API over HTTPS");
    tracing::info!(kubeconfig = %kubeconfig.display(), "wrote the admin kubeconfig");
    let router = app(state.clone());
    let health = state.health().clone();
    // This plane's lease on the `kubernetes` Service's endpoints, given up first on shutdown.
    let endpoint = SocketAddr::new(advertise, listen.port());
    let (stop_leases, leases_stopped) = tokio::sync::oneshot::channel::<()>();
    let leases = tokio::spawn(master_leases::run(
        Arc::clone(&store),
        endpoint,
        master_leases::DEFAULT_INTERVAL,
        master_leases::DEFAULT_TTL,
        async move {
            let _ = leases_stopped.await;
        },
    ));
    let lease_store = Arc::clone(&store);
    let server = tokio::spawn(tls::serve(listener, router, tls_config, async move {
        keelson_daemon::systemd::stop_signal().await;
        tracing::info!("shutting down");
        keelson_daemon::systemd::stopping();
        let _ = stop_leases.send(());
        let _ = leases.await;
        if let Err(error) = master_leases::remove(lease_store.as_ref(), endpoint).await {
            tracing::warn!(%error, "cannot remove this control plane from the kubernetes endpoints");
        }
        state.shutdown();
    }));
    let components = start_cluster_components(
        &args.cluster,
        store.as_ref(),
        listen,
        advertise,
        &args.data_dir,
        &pki,
    )
    .await?;
    // READY=1 once /readyz passes, the watchdog while /livez does (no-op outside systemd).
    let notifier = keelson_daemon::systemd::spawn(health);
    let served = server.await.context("the API server task panicked")?;
    components.abort();
    served.context("the API server failed")?;
    if let Some(auditor) = &auditor {
        auditor.flush().await;
    }
    compactor.abort();
    if let Some(snapshots) = snapshots {
        snapshots.abort();
    }
    availability.abort();
    renewal.abort();
    if let Some(notifier) = notifier {
        notifier.abort();
    }
    Ok(())
}

/// What the serving certificate names (see [`serving_certificate`]).
struct Serving {
    listen: SocketAddr,
    advertise: IpAddr,
    service_ip: Option<Ipv4Addr>,
    sans: Vec<String>,
}

/// How often the serving certificate's remaining lifetime is checked.
const SERVING_CHECK_PERIOD: std::time::Duration = std::time::Duration::from_secs(3600);

/// Re-issues the serving certificate when less than a third of its lifetime is left
/// ([`pki::needs_renewal`]) and hands it to the TLS layer, which presents it from the next
/// handshake on.
async fn renew_serving_certificate(
    pki_dir: PathBuf,
    names: Serving,
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
            .and_then(|pki| {
                serving_certificate(
                    &pki,
                    names.listen,
                    names.advertise,
                    names.service_ip,
                    &names.sans,
                )
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The DNS names and IP addresses of a PEM certificate's subjectAltName.
    fn sans(pem: &str) -> (Vec<String>, Vec<IpAddr>) {
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
            .map(|c: rustls::pki_types::CertificateDer<'_>| c.to_vec())
            .expect("PEM");
        let (_, certificate) = x509_parser::parse_x509_certificate(&der).expect("X.509");
        let names = certificate
            .subject_alternative_name()
            .expect("one subjectAltName")
            .expect("a subjectAltName")
            .value
            .general_names
            .clone();
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for name in names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(name) => dns.push(name.to_owned()),
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    ips.push(match bytes.len() {
                        4 => IpAddr::from(<[u8; 4]>::try_from(bytes).expect("4 bytes")),
                        _ => IpAddr::from(<[u8; 16]>::try_from(bytes).expect("16 bytes")),
                    });
                }
                _ => {}
            }
        }
        (dns, ips)
    }

    #[test]
    fn the_serving_certificate_names_what_in_cluster_clients_dial() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = Pki::load_or_create(dir.path()).expect("create the CA");
        let issued = serving_certificate(
            &pki,
            SocketAddr::from(([127, 0, 0, 1], 6443)),
            IpAddr::from([192, 0, 2, 10]),
            Some(Ipv4Addr::new(10, 96, 0, 1)),
            &["api.example.com".to_owned(), "203.0.113.7".to_owned()],
        )
        .expect("issue");
        let (dns, ips) = sans(&issued.cert_pem);
        for name in [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
            "api.example.com",
        ] {
            assert!(dns.iter().any(|d| d == name), "{name} missing from {dns:?}");
        }
        for ip in ["10.96.0.1", "192.0.2.10", "127.0.0.1", "::1", "203.0.113.7"] {
            let ip: IpAddr = ip.parse().expect("an address");
            assert!(ips.contains(&ip), "{ip} missing from {ips:?}");
        }
    }
}

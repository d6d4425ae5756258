//! `keelson-node-agent`: the node daemon.

use std::{path::PathBuf, process::ExitCode};

use clap::{CommandFactory as _, Parser};
use keelson_node_agent::{datapath, error_chain, routing};
use tracing_subscriber::EnvFilter;

mod cli;
mod commands;

use cli::{Cli, Command, CtCommand, LbCommand, RunArgs};

/// `RUST_LOG` (default `info`). kube's client logs every failed request at ERROR, even one its
/// caller retries or reports with more context (a connection reset the agent retries is not an
/// error of the agent's), so that line is off unless `RUST_LOG` names `kube_client`.
fn log_filter() -> EnvFilter {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    if directives.contains("kube_client") {
        return filter;
    }
    // `join` reads cluster-info once without verifying the server, on purpose (the token's
    // signature and the CA hash verify it); kube warns about that read.
    [
        "kube_client::client::builder=off",
        "kube_client::client::tls=off",
    ]
    .into_iter()
    .filter_map(|directive| directive.parse().ok())
    .fold(filter, EnvFilter::add_directive)
}

fn main() -> ExitCode {
    keelson_daemon::log::init(log_filter(), keelson_daemon::log::Output::Stderr);
    if let Err(error) = keelson_daemon::limits::raise_open_files() {
        tracing::warn!(%error, "cannot raise the open-file limit");
    }
    let argv = keelson_daemon::config_file::expand(
        &Cli::command(),
        Some("run"),
        std::env::args_os().collect(),
        std::env::var_os(keelson_daemon::config_file::ENV),
    );
    let cli = match argv {
        Ok(argv) => Cli::parse_from(argv),
        Err(error) => {
            eprintln!("keelson-node-agent run: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Check(args) => commands::check(&args),
        Command::Reset(args) => commands::reset(&args),
        Command::Run(args) => match run(*args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) if error.is::<keelson_node_agent::probe::Refusal>() => {
                eprintln!("{error}");
                ExitCode::FAILURE
            }
            Err(error) => {
                eprintln!("keelson-node-agent run: {error:#}");
                ExitCode::FAILURE
            }
        },
        Command::Join(args) => keelson_node_agent::join::cli::main(&args),
        Command::Lb {
            command: LbCommand::List(args),
        } => commands::lb_list(&args),
        Command::Ct {
            command: CtCommand::List(args),
        } => commands::print_lines("ct list", &args, |dir| {
            datapath::lb::list_conntrack(dir)
                .map(|flows| flows.iter().map(ToString::to_string).collect())
        }),
        Command::Observe(args) => commands::observe(&args),
        Command::Lb {
            command: LbCommand::Metrics(args),
        } => commands::print_lines("lb metrics", &args, |dir| {
            datapath::lb::metrics_text(dir).map(|text| vec![text.trim_end().to_owned()])
        }),
    }
}

fn run(mut args: RunArgs) -> anyhow::Result<()> {
    use anyhow::Context as _;

    let pin_dir = args.pins.pin_dir();
    // Checked before anything is loaded or attached: a wrong flag changes nothing.
    let uplinks = uplinks(&args.uplink)?;
    // The host: cgroup2, Docker and its cgroup driver; then RLIMIT_MEMLOCK and bpffs.
    let host = keelson_node_agent::host::preflight(
        &args.cgroup,
        &args.kubelet.docker_socket,
        args.kubelet.cgroup_parent.as_deref(),
    )
    .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    let pods_cgroup = keelson_node_agent::host::docker::pods_cgroup(
        &host.cgroup_root,
        host.engine.driver,
        args.kubelet.cgroup_parent.as_deref(),
    );
    tracing::info!(cgroup = %host.cgroup.display(), layout = ?host.layout,
        docker = %host.engine.version, driver = %host.engine.driver,
        pods_cgroup = %pods_cgroup.display(), memlock = %host.memlock,
        mounted_bpffs = host.mounted_bpffs, "host checked");
    args.cgroup = host.cgroup;
    let _lock = keelson_node_agent::host::AgentLock::take(&data_dir(&args))
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    // What this kernel offers: refuse, or apply the fallbacks.
    args.routing_bpf = kernel_plan(&args, &uplinks)?.routing_bpf;
    anyhow::ensure!(
        0.0 < args.ct_low_water
            && args.ct_low_water < args.ct_high_water
            && args.ct_high_water <= 1.0,
        "--ct-low-water and --ct-high-water must satisfy 0 < low < high <= 1"
    );
    let config = datapath::lb::LbConfig {
        ct: args.ct_capacity,
        ..datapath::lb::LbConfig::new(&pin_dir)
    };
    let mut lb = datapath::lb::LoadBalancer::load(&config)
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))
        .context("loading the service datapath")?;
    lb.attach_cgroup(&args.cgroup)
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))
        .with_context(|| format!("attaching socket-LB to {}", args.cgroup.display()))?;
    attach_uplinks(&mut lb, &uplinks, args.pod_tc)?;
    // NodePorts answer on the node's addresses: the ones given, else the address of the
    // interface holding the default route (the InternalIP the Node reports).
    let node_addresses = if args.node_addresses.is_empty() {
        keelson_node_agent::node::host_address()
            .into_iter()
            .collect()
    } else {
        args.node_addresses.clone()
    };
    // Shared with the pod network, which attaches TC programs to pod veths.
    let lb = std::sync::Arc::new(std::sync::Mutex::new(lb));
    let pod_hook: Option<std::sync::Arc<dyn keelson_node_agent::network::PodHook>> = if args.pod_tc
    {
        Some(std::sync::Arc::new(
            datapath::lb::PodTc::new(lb.clone(), args.routing_bpf)
                .map_err(|e| anyhow::anyhow!(error_chain(&e)))
                .context("preparing TC on pod veths")?,
        ))
    } else {
        None
    };
    let node = datapath::lb::NodeContext {
        node_name: args.pins.node_name.clone(),
        node_addresses,
    };
    let gc_policy = datapath::lb::GcPolicy {
        high_water: args.ct_high_water,
        low_water: args.ct_low_water,
        evict_idle: std::time::Duration::from_secs(args.ct_evict_idle_s),
        scan_budget: args.ct_gc_scan_budget.max(1),
        ..datapath::lb::GcPolicy::default()
    };
    let mut gc = datapath::lb::ConntrackGc::open(&pin_dir, gc_policy)
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))
        .context("opening the conntrack map for its GC")?;
    let gc_interval = std::time::Duration::from_millis(args.ct_gc_interval_ms.max(1));
    // The GC only reads and deletes pinned-map entries; it lives as long as the process.
    std::thread::Builder::new()
        .name("ct-gc".into())
        .spawn(move || {
            loop {
                std::thread::sleep(gc_interval);
                match gc.pass() {
                    Ok(report) if report.expired_flows + report.evicted_flows > 0 => {
                        tracing::info!(
                            expired = report.expired_flows,
                            evicted = report.evicted_flows,
                            entries = report.entries,
                            capacity = report.capacity,
                            "conntrack GC"
                        );
                    }
                    Ok(_) => {}
                    Err(error) => {
                        tracing::warn!(error = %error_chain(&error), "conntrack GC pass failed");
                    }
                }
            }
        })
        .context("starting the conntrack GC")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let kubeconfig = kube::config::Kubeconfig::read_from(&args.kubeconfig)
            .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
        let config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await
        .context("using the kubeconfig")?;
        let config = api_failover(config, &args.api_servers).await?;
        let client_ca = config.root_cert.clone().unwrap_or_default();
        // With a node client certificate, a client whose certificate the rotation renews in
        // place before it expires.
        let (client, rotation) =
            keelson_node_agent::join::rotate::client(config, &args.kubeconfig)?;
        // Pods of other nodes are reached out of the first uplink (or through the tunnel
        // over it).
        let routing = match uplinks.first() {
            Some(uplink) => {
                let mode = args.routing;
                let pod_mtu = routing::Routing::pod_mtu(mode, uplink)
                    .await
                    .map_err(|e| anyhow::anyhow!(error_chain(&e)))
                    .context("--routing")?;
                let maps = args.routing_bpf.then(|| lb.clone());
                let address = node_address(&args)?;
                let routing = routing::Routing::start(mode, uplink, address, maps, &lb)
                    .await
                    .map_err(|e| anyhow::anyhow!(error_chain(&e)))
                    .with_context(|| format!("--routing {mode} over {uplink}"))?;
                tracing::info!(%mode, uplink, bpf = args.routing_bpf, "routing pod CIDRs of other nodes");
                Some((routing, pod_mtu))
            }
            None => {
                tracing::warn!("no uplink: pods of other nodes are not routed (--uplink)");
                None
            }
        };
        let pod_mtu = routing.as_ref().and_then(|(_, mtu)| *mtu);
        let health = keelson_node_agent::health::checks(
            pin_dir.clone(),
            args.kubelet.docker_socket.clone(),
            std::time::Duration::from_secs(
                u64::try_from(args.kubelet.node_lease_duration_seconds).unwrap_or(40),
            ),
        );
        let kubelet = start_kubelet(
            client.clone(),
            &args,
            client_ca,
            (pod_hook, pod_mtu),
            health.clone(),
        )
        .await?;
        let routing_client = client.clone();
        // Uplinks deleted and created again, and address changes, while the agent runs.
        let (reroute, rerouted) = tokio::sync::mpsc::unbounded_channel();
        let routing_uplink = routing
            .is_some()
            .then(|| uplinks.first().cloned())
            .flatten()
            .map(|name| (name, reroute));
        let watched_uplinks = {
            let lb = lb.clone();
            let uplinks = uplinks.clone();
            async move {
                if uplinks.is_empty() {
                    return std::future::pending().await;
                }
                datapath::lb::watch_uplinks(lb, uplinks, routing_uplink)
                    .await
                    .map_err(|e| anyhow::anyhow!(error_chain(&e)))
                    .context("following the uplinks")
            }
        };
        let rotation_client = client.clone();
        let rotated = async move {
            match rotation {
                Some(rotation) => rotation.run(rotation_client).await,
                None => std::future::pending().await,
            }
        };
        let routed = async {
            match routing {
                Some((routing, _)) => {
                    routing::run(
                        routing_client,
                        routing,
                        args.pins.node_name.clone(),
                        args.kubelet.pod_cidr,
                        rerouted,
                    )
                    .await
                }
                None => std::future::pending().await,
            }
        };
        let pod_metrics = kubelet.metrics();
        let services = kubelet.services();
        let announce_client = client.clone();
        let announce_services = services.clone();
        let announce_node = node.node_name.clone();
        let announced = async {
            match &args.lb_announce_interface {
                Some(interface) => keelson_node_agent::lb_announce::run(
                    announce_client,
                    keelson_node_agent::lb_announce::Config::new(&announce_node, interface),
                    announce_services,
                )
                .await
                .map_err(|e| anyhow::anyhow!("--lb-announce-interface: {}", error_chain(&e))),
                None => std::future::pending().await,
            }
        };
        kubelet.host_ports().connect(lb.clone(), node.node_addresses.clone());
        let listener = tokio::net::TcpListener::bind(args.metrics_listen)
            .await
            .with_context(|| format!("listening on {}", args.metrics_listen))?;
        let metrics_pins = pin_dir.clone();
        let metrics_lb = lb.clone();
        let proxy_metrics = keelson_node_agent::service_sync::ProxyMetrics::default();
        let policy_metrics = datapath::policy::PolicyMetrics::default();
        let policy_tables =
            std::sync::Arc::new(std::sync::RwLock::new(datapath::policy::PolicyTables::default()));
        let agent_metrics = std::sync::Arc::new(
            keelson_node_agent::metrics::AgentMetrics::new(&pod_metrics, &proxy_metrics)
                .with_policy(&policy_metrics)
                .with_collector(Box::new(datapath::flows::reader::EndpointStats {
                    pin_dir: pin_dir.clone(),
                    tables: policy_tables.clone(),
                })),
        );
        // The flow view: the ring buffer's events, explained, kept for `observe`.
        let flow_store = std::sync::Arc::new(datapath::flows::FlowStore::new(
            datapath::flows::store::DEFAULT_CAPACITY,
        ));
        let flows_read = {
            let (store, tables, pins) = (flow_store.clone(), policy_tables.clone(), pin_dir.clone());
            async move {
                datapath::flows::reader::run(&pins, &store, &tables)
                    .await
                    .map_err(|e| anyhow::anyhow!(error_chain(&e)))
                    .context("reading flow events")
            }
        };
        // NetworkPolicy: the compiler writes the maps the pod programs judge traffic by. The
        // node's own addresses, the pod gateway among them (cluster DNS and the kubelet's probes
        // come from it), are HOST: always allowed, as Kubernetes requires.
        let mut policy_maps = datapath::policy::PinnedPolicyMaps::open(&pin_dir)
            .map_err(|e| anyhow::anyhow!(error_chain(&e)))
            .context("opening the NetworkPolicy maps")?;
        let policy_node = datapath::policy::NodeInfo {
            name: node.node_name.clone(),
            addresses: node
                .node_addresses
                .iter()
                .copied()
                .chain(
                    args.kubelet
                        .pod_cidr
                        .map(keelson_node_agent::network::ipam::gateway),
                )
                .collect(),
        };
        let policy_client = client.clone();
        let policed = async {
            if !args.pod_tc {
                // Without the pod programs nothing would read the maps.
                tracing::warn!("--pod-tc off: NetworkPolicies are not enforced");
                return std::future::pending().await;
            }
            datapath::policy::run(
                policy_client,
                &mut policy_maps,
                policy_node,
                &policy_metrics,
                &policy_tables,
                std::time::Duration::from_millis(100),
            )
            .await
        };
        // READY=1 once /readyz passes, the watchdog while /livez does (no-op outside systemd).
        let _notifier = keelson_daemon::systemd::spawn(health.clone());
        let app = health
            .routes()
            .merge(datapath::flows::store::routes(flow_store))
            .route(
                "/metrics",
                axum::routing::get(move || {
                    let pins = metrics_pins.clone();
                    let metrics = agent_metrics.clone();
                    let lb = metrics_lb.clone();
                    async move {
                        use axum::{http::header::CONTENT_TYPE, response::IntoResponse as _};
                        let owners = lb
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .backend_owners();
                        match datapath::lb::DatapathMetrics::read(&pins)
                            .map(|datapath| datapath.with_owners(owners))
                        {
                            Ok(datapath) => (
                                [(CONTENT_TYPE, keelson_node_agent::metrics::CONTENT_TYPE)],
                                metrics.render(Some(datapath)),
                            )
                                .into_response(),
                            Err(e) => (
                                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                                format!("datapath maps unreadable: {}\n", error_chain(&e)),
                            )
                                .into_response(),
                        }
                    }
                }),
            );
        tracing::info!(node = %node.node_name, pins = %pin_dir.display(), metrics = %args.metrics_listen, "node agent running");
        tokio::select! {
            served = axum::serve(listener, app) => served.context("serving /metrics"),
            synced = keelson_node_agent::service_sync::run(client, &lb, node, services, &proxy_metrics) => synced,
            pods = kubelet.run() => pods,
            routed = routed => routed,
            policed = policed => policed,
            announced = announced => announced,
            flows = flows_read => flows,
            watched = watched_uplinks => watched,
            rotated = rotated => rotated,
            () = keelson_daemon::systemd::stop_signal() => {
                keelson_daemon::systemd::stopping();
                tracing::info!("stopping; pinned maps and links stay for the next start");
                Ok(())
            }
        }
    })
}

/// `config` relaying through a failover proxy to `servers`; unchanged when there are none.
async fn api_failover(
    config: kube::Config,
    servers: &[keelson_node_agent::api_failover::ApiServer],
) -> anyhow::Result<kube::Config> {
    use keelson_node_agent::api_failover;
    if servers.is_empty() {
        return Ok(config);
    }
    let proxy = api_failover::start(servers.to_vec())
        .await
        .map_err(|e| anyhow::anyhow!("--api-servers: starting the failover proxy: {e}"))?;
    tracing::info!(servers = ?servers.iter().map(ToString::to_string).collect::<Vec<_>>(),
        proxy = %proxy.listen, "API connections fail over between --api-servers");
    api_failover::through_proxy(config, proxy)
        .map_err(|e| anyhow::anyhow!("--api-servers: {}", error_chain(&e)))
}

/// Probes the kernel and plans around it: a [`keelson_node_agent::probe::Refusal`] when it
/// lacks a required feature, else the plan, its fallbacks logged.
fn kernel_plan(
    args: &RunArgs,
    uplinks: &[String],
) -> anyhow::Result<keelson_node_agent::probe::Plan> {
    use keelson_node_agent::probe;
    let capabilities =
        probe::Capabilities::probe().map_err(|e| anyhow::anyhow!(error_chain(&e)))?;
    let wanted = probe::Wanted {
        routing_bpf: args.routing_bpf,
        tunnel: args.routing == routing::RoutingMode::Tunnel,
        uplinks: !uplinks.is_empty(),
    };
    let plan = probe::plan(&capabilities, &wanted)?;
    for fallback in &plan.fallbacks {
        tracing::warn!(kernel = %capabilities.kernel, "{fallback}");
    }
    tracing::info!(kernel = %capabilities.kernel, tc = ?plan.tc_attach, "kernel capabilities probed");
    Ok(plan)
}

/// `--uplink`'s error as one line naming the flag.
fn uplink_error(error: datapath::lb::UplinkError) -> anyhow::Error {
    use datapath::lb::UplinkError;
    match error {
        UplinkError::Datapath { interface, source } => anyhow::anyhow!(
            "--uplink {interface}: attaching tc_from_netdev: {}",
            error_chain(&source)
        ),
        UplinkError::NoSuchInterface(_) => anyhow::anyhow!("--uplink {error}"),
        other => anyhow::anyhow!("--uplink: {other}"),
    }
}

/// The interfaces `--uplink` names (`auto` resolved), each checked to exist.
fn uplinks(values: &[String]) -> anyhow::Result<Vec<String>> {
    let uplinks =
        datapath::lb::resolve_uplinks(values, keelson_node_agent::node::default_route_interface)
            .map_err(uplink_error)?;
    if uplinks.auto_unresolved {
        tracing::warn!(
            "--uplink auto: no IPv4 default route, so no uplink; name the interfaces with --uplink"
        );
    }
    datapath::lb::require_interfaces(&uplinks.interfaces).map_err(uplink_error)?;
    Ok(uplinks.interfaces)
}

/// Attaches `tc_from_netdev` to `interfaces` (and removes an earlier run's links on interfaces
/// no longer named).
fn attach_uplinks(
    lb: &mut datapath::lb::LoadBalancer,
    interfaces: &[String],
    pod_tc: bool,
) -> anyhow::Result<()> {
    let removed = datapath::lb::attach_uplinks(lb, interfaces).map_err(uplink_error)?;
    if !removed.is_empty() {
        tracing::info!(interfaces = ?removed, "removed tc_from_netdev from former uplinks");
    }
    if interfaces.is_empty() {
        tracing::info!("no uplink: NodePorts answer only on the node itself (socket-LB)");
        return Ok(());
    }
    tracing::info!(interfaces = ?interfaces, "tc_from_netdev attached to the uplinks");
    if !pod_tc {
        tracing::warn!(
            "--pod-tc off: replies of local pods to clients outside the node are not \
             reverse-NATed (tc_from_pod on pod veths does it), so NodePorts only answer from \
             backends on other nodes"
        );
    }
    Ok(())
}

/// The node's address (its InternalIP, the tunnel's local end): the first --node-address, else
/// the address of the interface holding the default route.
fn node_address(args: &RunArgs) -> anyhow::Result<std::net::Ipv4Addr> {
    args.node_addresses
        .first()
        .copied()
        .or_else(keelson_node_agent::node::host_address)
        .ok_or_else(|| anyhow::anyhow!("no IPv4 address found for the node: pass --node-address"))
}

/// `--data-dir`, defaulting to `/var/lib/keelson-agent/<node-name>`.
fn data_dir(args: &RunArgs) -> PathBuf {
    args.kubelet
        .data_dir
        .clone()
        .unwrap_or_else(|| default_data_dir(&args.pins.node_name))
}

fn default_data_dir(node_name: &str) -> PathBuf {
    PathBuf::from("/var/lib/keelson-agent").join(node_name)
}

/// Registers the Node and prepares the pod runner (Docker, pod network).
async fn start_kubelet(
    client: kube::Client,
    args: &RunArgs,
    client_ca: Vec<Vec<u8>>,
    (pod_hook, pod_mtu): (
        Option<std::sync::Arc<dyn keelson_node_agent::network::PodHook>>,
        Option<u32>,
    ),
    health: keelson_daemon::health::Health,
) -> anyhow::Result<keelson_node_agent::pods::Kubelet> {
    use keelson_node_agent::pods::{Kubelet, KubeletSettings, PodsConfig};
    let node_name = args.pins.node_name.clone();
    let host_ip = node_address(args)?;
    let settings = KubeletSettings {
        pods: PodsConfig {
            data_dir: data_dir(args),
            node_name,
            host_ip,
            sandbox_image: args.kubelet.sandbox_image.clone(),
            backoff_initial: std::time::Duration::from_secs(
                args.kubelet.restart_backoff_seconds.max(1),
            ),
            backoff_max: std::time::Duration::from_secs(300),
        },
        docker_socket: args.kubelet.docker_socket.clone(),
        pod_cidr: args.kubelet.pod_cidr,
        max_pods: args.kubelet.max_pods,
        kubelet_listen: match args.kubelet.kubelet_listen.as_str() {
            "off" => None,
            addr => Some(addr.parse().map_err(|_| {
                anyhow::anyhow!("--kubelet-listen {addr:?} is not an address:port (or `off`)")
            })?),
        },
        client_ca,
        cluster_dns: args.kubelet.cluster_dns,
        cluster_domain: args.kubelet.cluster_domain.clone(),
        resolv_conf: args.kubelet.resolv_conf.clone(),
        cgroup_parent: args.kubelet.cgroup_parent.clone(),
        log_rotation: keelson_node_agent::pods::runtime::LogRotation {
            max_size: args.kubelet.container_log_max_size,
            max_files: args.kubelet.container_log_max_files,
        },
        streaming_idle_timeout: args.kubelet.streaming_connection_idle_timeout,
        health,
        service_cidr: Some(args.service_cidr),
        pod_hook,
        pod_mtu,
        lease_duration_seconds: args.kubelet.node_lease_duration_seconds,
        reservations: keelson_node_agent::node::pressure::Reservations {
            kube: args.kubelet.kube_reserved.clone(),
            system: args.kubelet.system_reserved.clone(),
            eviction_hard: args.kubelet.eviction_hard.clone(),
        },
        housekeeping: keelson_node_agent::node::eviction::Housekeeping {
            minimum_reclaim: args.kubelet.eviction_minimum_reclaim.clone(),
            image_gc: keelson_node_agent::pods::images::gc::Policy::new(
                args.kubelet.image_gc_high_threshold,
                args.kubelet.image_gc_low_threshold,
                keelson_node_agent::pods::images::gc::DEFAULT_MINIMUM_AGE,
            )
            .map_err(|e| anyhow::anyhow!(e))?,
        },
    };
    Kubelet::start(client, settings).await
}

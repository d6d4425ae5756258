//! The kubelet's pod job: watch the pods bound to this node (`spec.nodeName`), run each as
//! Docker containers in its own network namespace ([`worker`]), report status through the API,
//! and after an agent restart adopt what is still running (containers carry their pod's labels)
//! while removing what belongs to pods that are gone.

pub mod atomic_writer;
pub mod dns;
pub mod error;
pub mod evict;
#[cfg(test)]
mod fake_api;
pub mod fs_group;
pub mod handlers;
pub mod hooks;
pub mod images;
pub mod local_path;
pub mod log_follow;
pub mod memory_volume;
mod metrics;
pub mod plan;
pub mod probes;
pub mod projection;
pub mod runtime;
pub mod security;
pub mod server;
pub mod service_env;
pub mod spec;
pub mod stats;
pub mod status;
pub mod stream;
pub mod tokens;
pub mod volume_error;
pub mod volume_sync;
pub mod volumes;
pub mod worker;

use std::{
    collections::{HashMap, HashSet},
    net::Ipv4Addr,
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    runtime::{
        WatchStreamExt as _,
        watcher::{self, Event},
    },
};
use tokio::{sync::watch, task::JoinHandle};

pub use self::metrics::{Metrics, PodTally};
use self::runtime::{ContainerRuntime, DockerRuntime};
use crate::{error_chain, network::PodNetwork};

/// Settings of the pod runner.
#[derive(Debug, Clone)]
pub struct PodsConfig {
    /// This node's name.
    pub node_name: String,
    /// The node's address (`status.hostIP`).
    pub host_ip: Ipv4Addr,
    /// Where pod volumes and IPAM state live.
    pub data_dir: PathBuf,
    /// The image whose `sleep` holds each pod's namespaces.
    pub sandbox_image: String,
    /// First restart back-off (Kubernetes: 10 s).
    pub backoff_initial: Duration,
    /// Longest restart back-off (Kubernetes: 5 min).
    pub backoff_max: Duration,
}

/// What every pod worker shares.
pub struct Ctx {
    /// The API client (node credentials).
    pub client: Client,
    /// The container runtime (Docker).
    pub runtime: Arc<dyn ContainerRuntime>,
    /// Pod networking; unset until the node has a pod CIDR (the flag, or the Node's
    /// `spec.podCIDR` once node IPAM assigns it).
    pub network: std::sync::OnceLock<Arc<PodNetwork>>,
    /// Settings.
    pub config: PodsConfig,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// The cluster DNS pods with `dnsPolicy: ClusterFirst` use; unset with `--cluster-dns off`
    /// and until the node has a pod CIDR to serve it on.
    pub dns: std::sync::OnceLock<dns::ClusterDnsConfig>,
    /// The node's resolver configuration (`dnsPolicy: Default`).
    pub host_resolv: dns::HostResolv,
    /// The cluster's Services (fed by the service sync), for pods' service variables.
    pub services: Arc<crate::service_sync::ServiceCache>,
    /// The pods' `hostPort`s, served by the service datapath once the agent connects it.
    pub host_ports: Arc<crate::datapath::lb::HostPorts>,
    /// Pods this agent evicted (their workers are not started again).
    pub evicted: evict::Evicted,
    /// The node's pressure conditions, for admitting new pods.
    pub pressures: crate::node::admission::Pressures,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("config", &self.config)
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

struct WorkerHandle {
    tx: watch::Sender<Option<Pod>>,
    /// Wakes the worker when Docker reports one of its containers starting or ending.
    poke: Arc<tokio::sync::Notify>,
    task: JoinHandle<()>,
}

/// Runs the pods bound to this node until the process stops.
pub async fn run(
    ctx: Arc<Ctx>,
    mut requests: tokio::sync::mpsc::UnboundedReceiver<evict::Request>,
) -> anyhow::Result<()> {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let config =
        watcher::Config::default().fields(&format!("spec.nodeName={}", ctx.config.node_name));
    let mut events = watcher::watcher(pods, config).default_backoff().boxed();
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    let volume_sync = volume_sync::VolumeSync::start(ctx.clone());
    let mut listing: HashSet<String> = HashSet::new();
    let mut reap = tokio::time::interval(Duration::from_secs(5));
    let (events_tx, mut docker_events) = tokio::sync::mpsc::unbounded_channel();
    let runtime = ctx.runtime.clone();
    let forwarder = tokio::spawn(async move { runtime.forward_events(events_tx).await });
    let _stop_forwarder = AbortOnDrop(forwarder);
    loop {
        tokio::select! {
            Some(request) = requests.recv() => evict::handle(&ctx, &mut workers, request),
            Some(uid) = docker_events.recv() => {
                if let Some(w) = workers.get(&uid) {
                    w.poke.notify_one();
                }
            }
            event = events.next() => {
                let Some(event) = event else { return Ok(()) };
                match event {
                    Ok(Event::Apply(pod)) => dispatch(&ctx, &mut workers, volume_sync.observe(pod)),
                    Ok(Event::Delete(pod)) => {
                        let uid = pod.metadata.uid.clone().unwrap_or_default();
                        volume_sync.forget(&uid);
                        if let Some(w) = workers.get(&uid) {
                            let _ = w.tx.send(None);
                        }
                    }
                    Ok(Event::Init) => listing.clear(),
                    Ok(Event::InitApply(pod)) => {
                        listing.insert(pod.metadata.uid.clone().unwrap_or_default());
                        dispatch(&ctx, &mut workers, volume_sync.observe(pod));
                    }
                    Ok(Event::InitDone) => {
                        for (uid, w) in &workers {
                            if !listing.contains(uid) {
                                volume_sync.forget(uid);
                                let _ = w.tx.send(None);
                            }
                        }
                        let known: HashSet<String> = workers.keys().cloned().collect();
                        if let Err(error) = collect_orphans(&ctx, &known).await {
                            let error = error_chain(&error);
                            tracing::warn!(%error, "removing containers of pods that are gone");
                        }
                        tracing::info!(pods = workers.len(), "pods bound to this node listed");
                    }
                    Err(error) => tracing::warn!(%error, "watching pods"),
                }
            }
            _ = reap.tick() => {
                workers.retain(|_, w| !w.task.is_finished());
                ctx.metrics.retain_starting(|uid| workers.contains_key(uid));
            }
        }
        let mut tally = PodTally::default();
        for w in workers.values() {
            if let Some(pod) = w.tx.borrow().as_ref() {
                tally.add(pod);
            }
        }
        ctx.metrics.set_pods(workers.len(), &tally);
    }
}

fn dispatch(ctx: &Arc<Ctx>, workers: &mut HashMap<String, WorkerHandle>, pod: Pod) {
    let Some(uid) = pod.metadata.uid.clone() else {
        return;
    };
    ctx.metrics.observe_pod(&pod, std::time::Instant::now());
    if ctx.evicted.holds(&pod) {
        return;
    }
    if let Some(w) = workers.get(&uid)
        && !w.task.is_finished()
    {
        // The worker's own status writes come back here: they need no new pass.
        w.tx.send_if_modified(|current| {
            let wake = current.as_ref().is_none_or(|c| needs_sync(c, &pod));
            *current = Some(pod);
            wake
        });
        return;
    }
    // Admission, for a pod the node has not started (one being deleted goes to a worker,
    // which removes it).
    if crate::node::admission::is_new(&pod)
        && pod.metadata.deletion_timestamp.is_none()
        && let Some(message) = crate::node::admission::refusal(&ctx.pressures.get(), &pod)
    {
        evict::reject(ctx, pod, message);
        return;
    }
    let (tx, rx) = watch::channel(Some(pod));
    let poke = Arc::new(tokio::sync::Notify::new());
    let task = tokio::spawn(worker::run(ctx.clone(), uid.clone(), rx, poke.clone()));
    workers.insert(uid, WorkerHandle { tx, poke, task });
}

/// Whether `next` differs from `current` in more than its status and bookkeeping.
fn needs_sync(current: &Pod, next: &Pod) -> bool {
    current.spec != next.spec
        || current.metadata.deletion_timestamp != next.metadata.deletion_timestamp
        || current.metadata.labels != next.metadata.labels
        || current.metadata.annotations != next.metadata.annotations
}

/// Aborts a background task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Removes the containers, addresses and directories of pods this node no longer runs (deleted
/// while the agent was down).
async fn collect_orphans(ctx: &Ctx, known: &HashSet<String>) -> Result<(), error::PodError> {
    let all = ctx.runtime.list().await?;
    for (uid, containers) in all.iter().filter(|(uid, _)| !known.contains(*uid)) {
        tracing::info!(
            uid,
            containers = containers.len(),
            "removing an orphaned pod"
        );
        worker::teardown_containers(ctx, containers, Duration::ZERO).await?;
    }
    let mut stale: HashSet<String> = all
        .keys()
        .filter(|uid| !known.contains(*uid))
        .cloned()
        .collect();
    if let Some(network) = ctx.network.get() {
        stale.extend(
            network
                .owners()
                .await
                .into_iter()
                .filter(|uid| !known.contains(uid)),
        );
        for uid in &stale {
            network.detach(uid).await?;
        }
    }
    if let Ok(dirs) = std::fs::read_dir(ctx.config.data_dir.join("pods")) {
        for dir in dirs.flatten() {
            let uid = dir.file_name().to_string_lossy().into_owned();
            if !known.contains(&uid) {
                memory_volume::unmount_under(&dir.path());
                let _ = std::fs::remove_dir_all(dir.path());
            }
        }
    }
    Ok(())
}

/// Everything the kubelet part of `run` needs.
#[derive(Debug, Clone)]
pub struct KubeletSettings {
    /// Pod runner settings.
    pub pods: PodsConfig,
    /// The Docker socket.
    pub docker_socket: String,
    /// The pod CIDR when the Node has no `spec.podCIDR`.
    pub pod_cidr: Option<keelson_api::cidr::Ipv4Cidr>,
    /// Capacity `pods`.
    pub max_pods: u32,
    /// Where the kubelet endpoint (container logs for the API server) listens; `None`: off.
    pub kubelet_listen: Option<std::net::SocketAddr>,
    /// The cluster CA (DER) whose certificates the kubelet endpoint accepts.
    pub client_ca: Vec<Vec<u8>>,
    /// Which nameserver pods use (`--cluster-dns`).
    pub cluster_dns: dns::ClusterDnsMode,
    /// The cluster domain (`--cluster-domain`).
    pub cluster_domain: String,
    /// The node's resolver configuration (`--resolv-conf`).
    pub resolv_conf: std::path::PathBuf,
    /// The cgroup parent of every container (`--cgroup-parent`); `None`: Docker's default.
    pub cgroup_parent: Option<String>,
    /// How container logs are rotated.
    pub log_rotation: runtime::LogRotation,
    /// How long an exec, attach or port-forward connection may stay idle
    /// (`--streaming-connection-idle-timeout`; zero: no limit).
    pub streaming_idle_timeout: std::time::Duration,
    /// The agent's health checks, also served at `/healthz`, `/livez` and `/readyz` on the
    /// kubelet endpoint (as the kubelet serves its own on port 10250).
    pub health: keelson_daemon::health::Health,
    /// The cluster's Service CIDR, made unreachable towards the uplink (see
    /// [`crate::network::NetworkSettings::service_cidr`]).
    pub service_cidr: Option<keelson_api::cidr::Ipv4Cidr>,
    /// Runs on every pod's node-side veth (the service datapath's per-packet load balancer).
    pub pod_hook: Option<Arc<dyn crate::network::PodHook>>,
    /// The MTU of pods' veths (see [`crate::network::NetworkSettings::mtu`]).
    pub pod_mtu: Option<u32>,
    /// The node Lease's duration in seconds (renewed every quarter of it).
    pub lease_duration_seconds: i32,
    /// `kubeReserved`, `systemReserved` and `evictionHard` (allocatable and pressure).
    pub reservations: crate::node::pressure::Reservations,
    /// Eviction's minimum reclaim and the image garbage collection policy.
    pub housekeeping: crate::node::eviction::Housekeeping,
}

/// The cluster DNS this agent serves: its zone and the UDP/TCP server.
struct DnsServing {
    zone: Arc<keelson_dns::ClusterDns>,
    /// hickory's server (its type is unnameable); it stops when dropped.
    _server: Box<dyn std::any::Any + Send>,
}

/// The registered node with its pod runner, ready to run.
#[derive(Debug)]
pub struct Kubelet {
    ctx: Arc<Ctx>,
    endpoint: Option<(
        tokio::net::TcpListener,
        Arc<rustls::ServerConfig>,
        crate::join::serving::Rotation,
        server::Serving,
    )>,
    node: k8s_openapi::api::core::v1::Node,
    node_config: crate::node::NodeConfig,
    dns: Option<DnsServing>,
    /// Set when the node had no pod CIDR at start: what `run` needs to set up pod networking
    /// and cluster DNS once the Node's `spec.podCIDR` appears.
    late: Option<LateNetwork>,
    housekeeping: crate::node::eviction::Housekeeping,
    /// The Docker client itself, for what reaches past the pod runtime: the eviction
    /// manager's usage figures and image garbage collection.
    docker: bollard::Docker,
}

/// Pod networking and cluster DNS settings, kept until the node's pod CIDR is known.
#[derive(Debug)]
struct LateNetwork {
    state: std::path::PathBuf,
    service_cidr: Option<keelson_api::cidr::Ipv4Cidr>,
    hook: Option<Arc<dyn crate::network::PodHook>>,
    mtu: Option<u32>,
    cluster_dns: dns::ClusterDnsMode,
    cluster_domain: String,
    resolv_conf: std::path::PathBuf,
}

impl LateNetwork {
    /// Sets up pod networking on `cidr` and the cluster DNS for it.
    async fn start(
        &self,
        cidr: keelson_api::cidr::Ipv4Cidr,
        metrics: &Metrics,
    ) -> anyhow::Result<(
        Arc<PodNetwork>,
        Option<dns::ClusterDnsConfig>,
        Option<DnsServing>,
    )> {
        use anyhow::Context as _;
        let network = Arc::new(
            PodNetwork::start(crate::network::NetworkSettings {
                cidr,
                state: self.state.clone(),
                service_cidr: self.service_cidr,
                hook: self.hook.clone(),
                mtu: self.mtu,
            })
            .await
            .map_err(|e| anyhow::anyhow!(error_chain(&e)))
            .context("setting up pod networking")?,
        );
        let (dns_config, dns) =
            start_dns(self.cluster_dns, &self.cluster_domain, cidr, metrics).await?;
        if let Some(serving) = &dns {
            let forwarder = keelson_dns::forward::Forwarder::from_resolv_conf(&self.resolv_conf);
            tracing::info!(upstreams = ?forwarder.upstreams(), "cluster DNS forwards other names");
            serving.zone.set_forwarder(Some(forwarder));
        }
        Ok((network, dns_config, dns))
    }
}

/// Waits (polling the Node every second) until it has a `spec.podCIDR`.
async fn wait_for_pod_cidr(
    client: &Client,
    node: &str,
) -> anyhow::Result<keelson_api::cidr::Ipv4Cidr> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        match nodes.get_opt(node).await {
            Ok(Some(n)) => {
                if let Some(text) = n.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty()) {
                    return crate::network::ipam::parse_pod_cidr(&text)
                        .map_err(|e| anyhow::anyhow!("the Node's spec.podCIDR: {e}"));
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "reading the Node for its pod CIDR")
            }
        }
    }
}

impl std::fmt::Debug for DnsServing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsServing")
            .field("zone", &self.zone)
            .finish_non_exhaustive()
    }
}

impl Kubelet {
    /// Connects to Docker, registers the Node and sets up pod networking from the Node's
    /// `spec.podCIDR` (else `pod_cidr`).
    pub async fn start(client: Client, settings: KubeletSettings) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let runtime = DockerRuntime::connect(&settings.docker_socket, &settings.pods.node_name)
            .await
            .map_err(|e| anyhow::anyhow!(error_chain(&e)))?
            .with_cgroup_parent(settings.cgroup_parent.clone())
            .with_log_rotation(settings.log_rotation);
        runtime.watch_kernel_oom_kills();
        let docker = runtime.docker().clone();
        let endpoint = match settings.kubelet_listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("listening on {addr} (--kubelet-listen)"))?;
                let names = vec![
                    settings.pods.node_name.clone(),
                    settings.pods.host_ip.to_string(),
                ];
                let certificate = Arc::new(
                    crate::join::serving::ServingCertificate::self_signed(names.clone())
                        .context("the kubelet endpoint's first certificate")?,
                );
                let tls = server::tls_config(certificate.clone(), &settings.client_ca)
                    .map_err(|e| anyhow::anyhow!(error_chain(&e)))
                    .context("the kubelet endpoint")?;
                let rotation = crate::join::serving::Rotation {
                    node: settings.pods.node_name.clone(),
                    names,
                    dir: settings.pods.data_dir.join("pki"),
                    certificate,
                };
                let serving = server::Serving {
                    stats: Some(stats::start(
                        runtime.docker().clone(),
                        &settings.pods.node_name,
                    )),
                    streaming_idle_timeout: settings.streaming_idle_timeout,
                    health: settings.health.clone(),
                };
                Some((listener, tls, rotation, serving))
            }
            None => None,
        };
        let kubelet_port = endpoint
            .as_ref()
            .and_then(|(l, _, _, _)| l.local_addr().ok())
            .map(|a| a.port());
        let node_config = crate::node::NodeConfig {
            name: settings.pods.node_name.clone(),
            address: settings.pods.host_ip,
            max_pods: settings.max_pods,
            kubelet_port,
            lease_duration_seconds: settings.lease_duration_seconds,
            resources: crate::node::pressure::NodeResources {
                nodefs: settings.pods.data_dir.clone(),
                imagefs: runtime
                    .docker()
                    .info()
                    .await
                    .ok()
                    .and_then(|i| i.docker_root_dir)
                    .map_or_else(|| "/var/lib/docker".into(), Into::into),
                reservations: settings.reservations.clone(),
            },
        };
        let node = crate::node::register_with_retry(
            &client,
            &node_config,
            &runtime.version().await,
            Duration::from_secs(60),
        )
        .await
        .map_err(|e| anyhow::anyhow!(error_chain(&e)))
        .context("registering the Node")?;
        let node_cidr = node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.clone())
            .filter(|c| !c.is_empty());
        let cidr = match (node_cidr, settings.pod_cidr) {
            (Some(text), flag) => {
                let cidr = crate::network::ipam::parse_pod_cidr(&text)
                    .map_err(|e| anyhow::anyhow!("the Node's spec.podCIDR: {e}"))?;
                if flag.is_some_and(|f| f != cidr) {
                    tracing::warn!(%cidr, "--pod-cidr differs from the Node's spec.podCIDR; using the Node's");
                }
                Some(cidr)
            }
            (None, flag) => flag,
        };
        let metrics = Arc::new(Metrics::default());
        let late = LateNetwork {
            state: settings.pods.data_dir.join("ipam.json"),
            service_cidr: settings.service_cidr,
            hook: settings.pod_hook.clone(),
            mtu: settings.pod_mtu,
            cluster_dns: settings.cluster_dns,
            cluster_domain: settings.cluster_domain.clone(),
            resolv_conf: settings.resolv_conf.clone(),
        };
        let (network, dns_config, dns, late) = match cidr {
            Some(cidr) => {
                let (network, dns_config, dns) = late.start(cidr, &metrics).await?;
                (Some(network), dns_config, dns, None)
            }
            None => {
                tracing::info!(
                    "the Node has no spec.podCIDR yet and --pod-cidr is not set: pods get \
                     addresses once node IPAM assigns one"
                );
                (None, None, None, Some(late))
            }
        };
        std::fs::create_dir_all(settings.pods.data_dir.join("pods"))
            .with_context(|| format!("creating {}", settings.pods.data_dir.display()))?;
        images::archive::load_all(runtime.docker(), &settings.pods.data_dir).await;
        tracing::info!(
            node = %settings.pods.node_name,
            cidr = %cidr.map(|c| c.to_string()).unwrap_or_default(),
            data_dir = %settings.pods.data_dir.display(),
            "node registered"
        );
        Ok(Self {
            ctx: Arc::new(Ctx {
                client,
                runtime: Arc::new(runtime),
                network: network.map(std::sync::OnceLock::from).unwrap_or_default(),
                config: settings.pods,
                metrics,
                dns: dns_config
                    .map(std::sync::OnceLock::from)
                    .unwrap_or_default(),
                host_resolv: dns::HostResolv::read_from(
                    &settings.resolv_conf,
                    std::path::Path::new(keelson_dns::forward::SYSTEMD_RESOLV_CONF),
                ),
                services: Arc::default(),
                host_ports: Arc::default(),
                evicted: evict::Evicted::default(),
                pressures: Default::default(),
            }),
            endpoint,
            node,
            node_config,
            dns,
            late,
            housekeeping: settings.housekeeping,
            docker,
        })
    }

    /// The pod counters, for /metrics.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.ctx.metrics.clone()
    }

    /// The Services cache pods' environment variables come from; the service sync fills it.
    pub fn services(&self) -> Arc<crate::service_sync::ServiceCache> {
        self.ctx.services.clone()
    }

    /// The pods' host ports; the agent connects them to its load balancer.
    pub fn host_ports(&self) -> Arc<crate::datapath::lb::HostPorts> {
        self.ctx.host_ports.clone()
    }

    /// Heartbeats and pods, until the process stops.
    pub async fn run(self) -> anyhow::Result<()> {
        let (manager, requests) = evict::channel();
        let (eviction, image_gc) = crate::node::eviction::start(
            &self.ctx,
            manager,
            &self.node_config.resources,
            self.housekeeping.clone(),
            self.docker.clone(),
        );
        let runtime = self.ctx.runtime.clone();
        let heartbeat = crate::node::heartbeat(
            self.ctx.client.clone(),
            self.node_config,
            self.node,
            move || {
                let runtime = runtime.clone();
                async move { runtime.version().await }
            },
        );
        let runtime = self.ctx.runtime.clone();
        let rotation_client = self.ctx.client.clone();
        let endpoint = async move {
            match self.endpoint {
                Some((listener, tls, rotation, serving)) => {
                    tokio::join!(
                        server::serve(listener, tls, runtime, serving),
                        rotation.run(rotation_client)
                    );
                }
                None => std::future::pending().await,
            }
        };
        let client = self.ctx.client.clone();
        let ctx = self.ctx.clone();
        let cluster_dns = async move {
            let mut serving = self.dns;
            if let Some(late) = self.late {
                let cidr = wait_for_pod_cidr(&client, &ctx.config.node_name).await?;
                tracing::info!(%cidr, "the Node got its pod CIDR: setting up pod networking");
                let (network, dns_config, dns) = late.start(cidr, &ctx.metrics).await?;
                let _ = ctx.network.set(network);
                if let Some(config) = dns_config {
                    let _ = ctx.dns.set(config);
                }
                serving = dns;
            }
            match &serving {
                Some(serving) => {
                    keelson_dns::run(client, serving.zone.clone()).await?;
                    // The watches only end when cancelled; keep answering regardless.
                    std::future::pending().await
                }
                None => std::future::pending().await,
            }
        };
        let volume_cleanup =
            local_path::run(self.ctx.client.clone(), self.ctx.config.node_name.clone());
        tokio::select! {
            r = volume_cleanup => r,
            r = heartbeat => r,
            r = run(self.ctx, requests) => r,
            r = eviction => r,
            () = image_gc => Ok(()),
            () = endpoint => Ok(()),
            r = cluster_dns => r,
        }
    }
}

/// The nameserver pods use and, with `--cluster-dns gateway`, the DNS server this agent runs on
/// the pod CIDR's gateway address (port 53, UDP and TCP). The address only exists on the node
/// once a pod's veth carries it, so the sockets bind with `IP_FREEBIND`.
async fn start_dns(
    mode: dns::ClusterDnsMode,
    domain: &str,
    cidr: keelson_api::cidr::Ipv4Cidr,
    metrics: &Metrics,
) -> anyhow::Result<(Option<dns::ClusterDnsConfig>, Option<DnsServing>)> {
    use anyhow::Context as _;
    let domain = domain.trim_end_matches('.').to_owned();
    let nameserver = match mode {
        dns::ClusterDnsMode::Off => {
            tracing::info!(
                "--cluster-dns off: pods with dnsPolicy ClusterFirst use the node's resolvers"
            );
            return Ok((None, None));
        }
        dns::ClusterDnsMode::Address(ip) => {
            tracing::info!(nameserver = %ip, %domain, "pods resolve through the cluster DNS at --cluster-dns");
            return Ok((
                Some(dns::ClusterDnsConfig {
                    nameserver: ip,
                    domain,
                }),
                None,
            ));
        }
        dns::ClusterDnsMode::Gateway => crate::network::ipam::gateway(cidr),
    };
    let zone = Arc::new(
        keelson_dns::ClusterDns::new(&domain)
            .map_err(|e| anyhow::anyhow!(error_chain(&e)))
            .with_context(|| format!("--cluster-domain {domain:?}"))?,
    );
    let address = std::net::SocketAddr::from((nameserver, 53));
    let (bound, server) = keelson_dns::serve_with(
        zone.clone(),
        &[address],
        keelson_dns::BindOptions { freebind: true },
    )
    .await
    .context("serving cluster DNS (--cluster-dns gateway)")?;
    let address = bound.first().copied().unwrap_or(address);
    tracing::info!(%address, %domain, "serving cluster DNS for this node's pods");
    metrics.set_dns(address, zone.clone());
    Ok((
        Some(dns::ClusterDnsConfig { nameserver, domain }),
        Some(DnsServing {
            zone,
            _server: Box::new(server),
        }),
    ))
}

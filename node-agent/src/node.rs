//! Node registration and heartbeats, as the kubelet does them: the Node object with the host's
//! capacity, addresses, labels and conditions (its status written only when it changes, or every
//! five minutes), and the node's Lease in `kube-node-lease` renewed every 10 s.

pub mod admission;
pub mod eviction;
pub mod pressure;
mod threshold_error;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo},
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};

use crate::pods::runtime::RuntimeError;

/// How long a Lease is valid without renewal, by default (the kubelet's
/// `--node-lease-duration-seconds`); it is renewed every quarter of that.
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// The Node status is rewritten at least this often even when nothing changed.
const STATUS_REPORT: Duration = Duration::from_secs(300);
/// The kubelet version this agent reports (the API it implements).
pub const KUBELET_VERSION: &str = "v1.33.0-keelson";

/// What the agent knows about its node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// The Node's name.
    pub name: String,
    /// The node's InternalIP.
    pub address: Ipv4Addr,
    /// The most pods this node runs (capacity `pods`).
    pub max_pods: u32,
    /// The port of the agent's kubelet endpoint (`status.daemonEndpoints`).
    pub kubelet_port: Option<u16>,
    /// The Lease's `leaseDurationSeconds`; renewed every quarter of it.
    pub lease_duration_seconds: i32,
    /// Reservations, eviction thresholds and the filesystems watched for pressure.
    pub resources: pressure::NodeResources,
}

/// Errors talking to the API about the Node and its Lease.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// An API request failed.
    #[error("{what}")]
    Api {
        /// What was being done.
        what: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
}

impl NodeError {
    /// Whether trying again may succeed: the connection failed, or the server answered 5xx or
    /// 429. A refused credential or an invalid object will not get better.
    pub fn is_transient(&self) -> bool {
        let Self::Api { source, .. } = self;
        is_transient(source)
    }
}

/// Whether an API request may succeed if tried again: the connection failed (e.g. reset by the
/// server), or the server answered 5xx or 429.
pub fn is_transient(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) => status.code >= 500 || status.code == 429,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

fn api_error(what: impl Into<String>) -> impl FnOnce(kube::Error) -> NodeError {
    let what = what.into();
    move |source| NodeError::Api { what, source }
}

/// The host's InternalIP: the first IPv4 address of the interface holding the default route,
/// else of any non-loopback interface.
pub fn host_address() -> Option<Ipv4Addr> {
    let default_dev = default_route_interface();
    let addrs: Vec<(String, Ipv4Addr)> = nix::ifaddrs::getifaddrs()
        .ok()?
        .filter_map(|ifa| {
            let addr = ifa.address?.as_sockaddr_in()?.ip();
            (!addr.is_loopback()).then_some((ifa.interface_name, addr))
        })
        .collect();
    addrs
        .iter()
        .find(|(dev, _)| Some(dev) == default_dev.as_ref())
        .or_else(|| addrs.first())
        .map(|(_, a)| *a)
}

/// The interface holding the IPv4 default route (the first one `/proc/net/route` lists), if
/// any: the node's uplink.
pub fn default_route_interface() -> Option<String> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    default_route_in(&routes)
}

/// The interface of the first default route (destination and mask 0) in `/proc/net/route`'s text.
fn default_route_in(routes: &str) -> Option<String> {
    routes.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        (fields.get(1) == Some(&"00000000") && fields.get(7) == Some(&"00000000"))
            .then(|| fields[0].to_owned())
    })
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn labels(name: &str) -> BTreeMap<String, String> {
    [
        ("kubernetes.io/hostname", name),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", arch()),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", arch()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Memory in KiB from /proc/meminfo.
fn memory_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| "Linux".to_owned())
}

/// The capacity figures of this host.
pub fn capacity(max_pods: u32) -> BTreeMap<String, Quantity> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    BTreeMap::from([
        ("cpu".to_owned(), Quantity(cpus.to_string())),
        ("memory".to_owned(), Quantity(format!("{}Ki", memory_kib()))),
        ("pods".to_owned(), Quantity(max_pods.to_string())),
        (
            "ephemeral-storage".to_owned(),
            Quantity(format!("{}Ki", disk_kib("/var/lib"))),
        ),
    ])
}

fn disk_kib(path: &str) -> u64 {
    nix::sys::statvfs::statvfs(path)
        .map(|s| s.blocks() * s.fragment_size() / 1024)
        .unwrap_or(0)
}

fn condition(kind: &str, status: bool, reason: &str, message: &str) -> NodeCondition {
    NodeCondition {
        type_: kind.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_heartbeat_time: None,
        last_transition_time: None,
    }
}

/// The Node status for the current host state (without timestamps).
fn desired_status(config: &NodeConfig, runtime: &Result<String, RuntimeError>) -> NodeStatus {
    let capacity = capacity(config.max_pods);
    let ready = match runtime {
        Ok(_) => condition(
            "Ready",
            true,
            "KubeletReady",
            "keelson-node-agent is posting ready status",
        ),
        Err(e) => condition(
            "Ready",
            false,
            "KubeletNotReady",
            &format!("container runtime is down: {e}"),
        ),
    };
    NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".to_owned(),
                address: config.address.to_string(),
            },
            NodeAddress {
                type_: "Hostname".to_owned(),
                address: config.name.clone(),
            },
        ]),
        allocatable: Some(pressure::allocatable(
            &capacity,
            &config.resources.reservations,
        )),
        daemon_endpoints: config.kubelet_port.map(|port| {
            k8s_openapi::api::core::v1::NodeDaemonEndpoints {
                kubelet_endpoint: Some(k8s_openapi::api::core::v1::DaemonEndpoint {
                    port: i32::from(port),
                }),
            }
        }),
        capacity: Some(capacity),
        conditions: Some(
            pressure::conditions(
                &pressure::observe(&config.resources.nodefs, &config.resources.imagefs),
                &config.resources.reservations.eviction_hard,
            )
            .into_iter()
            .map(|(kind, on, reason, message)| condition(kind, on, reason, message))
            .chain([ready])
            .collect(),
        ),
        node_info: Some(NodeSystemInfo {
            architecture: arch().to_owned(),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            container_runtime_version: match runtime {
                Ok(v) => format!("docker://{v}"),
                Err(_) => "docker://unknown".to_owned(),
            },
            kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
            kube_proxy_version: KUBELET_VERSION.to_owned(),
            kubelet_version: KUBELET_VERSION.to_owned(),
            machine_id: read_trimmed("/etc/machine-id"),
            operating_system: "linux".to_owned(),
            os_image: os_image(),
            system_uuid: read_trimmed("/sys/class/dmi/id/product_uuid"),
            swap: None,
        }),
        ..NodeStatus::default()
    }
}

/// Conditions keep their transition time while their status holds; heartbeat is now.
fn stamp(mut status: NodeStatus, previous: Option<&NodeStatus>) -> NodeStatus {
    let now = Time(Timestamp::now());
    if let Some(conditions) = status.conditions.as_mut() {
        for c in conditions {
            let before = previous
                .and_then(|p| p.conditions.as_ref())
                .and_then(|cs| cs.iter().find(|p| p.type_ == c.type_));
            c.last_transition_time = match before {
                Some(b) if b.status == c.status => b.last_transition_time.clone(),
                _ => Some(now.clone()),
            };
            c.last_heartbeat_time = Some(now.clone());
        }
    }
    status
}

/// Status without timestamps, for comparison.
fn comparable(status: &NodeStatus) -> serde_json::Value {
    let mut status = status.clone();
    if let Some(conditions) = status.conditions.as_mut() {
        for c in conditions {
            c.last_heartbeat_time = None;
            c.last_transition_time = None;
        }
    }
    status.images = None;
    status.daemon_endpoints = None;
    status.config = None;
    serde_json::to_value(status).unwrap_or_default()
}

/// Creates the Node if missing (or updates its labels) and writes its status once; returns the
/// Node as stored.
pub async fn register(
    client: &Client,
    config: &NodeConfig,
    runtime: &Result<String, RuntimeError>,
) -> Result<Node, NodeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let existing = nodes
        .get_opt(&config.name)
        .await
        .map_err(api_error(format!("reading Node {}", config.name)))?;
    let node = match existing {
        Some(_) => nodes
            .patch(
                &config.name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"labels": labels(&config.name)}})),
            )
            .await
            .map_err(api_error(format!("updating Node {}'s labels", config.name)))?,
        None => {
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    labels: Some(labels(&config.name)),
                    ..ObjectMeta::default()
                },
                ..Node::default()
            };
            match nodes.create(&PostParams::default(), &node).await {
                Ok(node) => {
                    tracing::info!(node = %config.name, "registered the Node");
                    node
                }
                // Another agent process (a restart) won the race.
                Err(kube::Error::Api(status)) if status.code == 409 => nodes
                    .get(&config.name)
                    .await
                    .map_err(api_error(format!("reading Node {}", config.name)))?,
                Err(source) => {
                    return Err(NodeError::Api {
                        what: format!("creating Node {}", config.name),
                        source,
                    });
                }
            }
        }
    };
    let status = stamp(desired_status(config, runtime), node.status.as_ref());
    write_status(&nodes, &config.name, status).await
}

/// [`register`], tried again after transient failures (see [`NodeError::is_transient`]: a
/// connection reset by a restarting API server, a 5xx) with a backoff from 250 ms up to 5 s,
/// for up to `patience`, as the kubelet keeps trying to register. Any other failure, or the
/// last transient one, is returned.
pub async fn register_with_retry(
    client: &Client,
    config: &NodeConfig,
    runtime: &Result<String, RuntimeError>,
    patience: std::time::Duration,
) -> Result<Node, NodeError> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut delay = std::time::Duration::from_millis(250);
    loop {
        match register(client, config, runtime).await {
            Ok(node) => return Ok(node),
            Err(error)
                if error.is_transient() && tokio::time::Instant::now() + delay < deadline =>
            {
                tracing::warn!(
                    error = %crate::error_chain(&error),
                    retry_in = ?delay,
                    "registering the Node failed; trying again"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(std::time::Duration::from_secs(5));
            }
            Err(error) => return Err(error),
        }
    }
}

async fn write_status(
    nodes: &Api<Node>,
    name: &str,
    status: NodeStatus,
) -> Result<Node, NodeError> {
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await
        .map_err(api_error(format!("writing Node {name}'s status")))
}

/// Renews the Lease every 10 s and rewrites the Node status when it changes; runs forever.
/// `runtime_version` asks the container runtime for its version (an error: it is down).
pub async fn heartbeat<F, Fut>(
    client: Client,
    config: NodeConfig,
    mut node: Node,
    runtime_version: F,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<String, RuntimeError>>,
{
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let mut last_report = Instant::now();
    let renew = Duration::from_millis(
        u64::try_from(config.lease_duration_seconds.max(1)).unwrap_or(1) * 250,
    );
    let mut ticker = tokio::time::interval(renew);
    loop {
        ticker.tick().await;
        match renew_lease(&leases, &config, &node).await {
            Ok(()) => crate::health::SIGNALS.lease_renewed(),
            Err(error) => {
                tracing::warn!(error = %crate::error_chain(&error), "renewing the node Lease");
            }
        }
        let runtime = runtime_version().await;
        let desired = desired_status(&config, &runtime);
        let current = node.status.clone().unwrap_or_default();
        if comparable(&desired) != comparable(&current) || last_report.elapsed() >= STATUS_REPORT {
            match write_status(&nodes, &config.name, stamp(desired, Some(&current))).await {
                Ok(written) => {
                    node = written;
                    last_report = Instant::now();
                    tracing::info!(node = %config.name, "node status updated");
                }
                Err(error) => {
                    tracing::warn!(error = %crate::error_chain(&error), "writing the node status")
                }
            }
        }
    }
}

async fn renew_lease(
    leases: &Api<Lease>,
    config: &NodeConfig,
    node: &Node,
) -> Result<(), NodeError> {
    let now = MicroTime(Timestamp::now());
    let spec = LeaseSpec {
        holder_identity: Some(config.name.clone()),
        lease_duration_seconds: Some(config.lease_duration_seconds),
        renew_time: Some(now.clone()),
        ..LeaseSpec::default()
    };
    let existing = leases
        .get_opt(&config.name)
        .await
        .map_err(api_error("reading the node Lease"))?;
    match existing {
        Some(_) => {
            leases
                .patch(
                    &config.name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"spec": {
                        "holderIdentity": config.name,
                        "leaseDurationSeconds": config.lease_duration_seconds,
                        "renewTime": now,
                    }})),
                )
                .await
                .map_err(api_error("renewing the node Lease"))?;
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.name.clone()),
                    namespace: Some("kube-node-lease".to_owned()),
                    owner_references: node.metadata.uid.clone().map(|uid| {
                        vec![OwnerReference {
                            api_version: "v1".to_owned(),
                            kind: "Node".to_owned(),
                            name: config.name.clone(),
                            uid,
                            ..OwnerReference::default()
                        }]
                    }),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    acquire_time: Some(now),
                    ..spec
                }),
            };
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map_err(api_error("creating the node Lease"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_and_server_errors_are_retried_refusals_are_not() {
        let api = |code| NodeError::Api {
            what: "registering".into(),
            source: kube::Error::Api(Box::new(kube::core::Status {
                code,
                ..Default::default()
            })),
        };
        assert!(api(500).is_transient());
        assert!(api(503).is_transient());
        assert!(api(429).is_transient());
        assert!(
            !api(403).is_transient(),
            "a refused credential stays refused"
        );
        assert!(!api(422).is_transient(), "an invalid Node stays invalid");
        let service = NodeError::Api {
            what: "registering".into(),
            source: kube::Error::Service("peer closed connection".into()),
        };
        assert!(service.is_transient());
    }

    #[test]
    fn the_default_route_names_the_uplink() {
        let header =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
        let routes = format!(
            "{header}\
             br0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
             eth1\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
             eth2\t00000000\t010300C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
        );
        assert_eq!(default_route_in(&routes).as_deref(), Some("eth1"));
        // A route to 0.0.0.0 with a narrower mask is not the default route.
        let narrow =
            format!("{header}eth3\t00000000\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n");
        assert_eq!(default_route_in(&narrow), None);
        assert_eq!(default_route_in(header), None);
    }

    #[test]
    fn status_comparison_ignores_timestamps() {
        let config = NodeConfig {
            name: "n1".into(),
            address: Ipv4Addr::new(10, 0, 0, 1),
            max_pods: 110,
            kubelet_port: Some(10250),
            lease_duration_seconds: LEASE_DURATION_SECONDS,
            resources: pressure::NodeResources::default(),
        };
        let up = Ok("20.10.24".to_owned());
        let first = stamp(desired_status(&config, &up), None);
        std::thread::sleep(Duration::from_millis(1100));
        let second = stamp(desired_status(&config, &up), Some(&first));
        assert_eq!(comparable(&first), comparable(&second));
        let ready = |s: &NodeStatus| {
            s.conditions
                .as_ref()
                .and_then(|c| c.iter().find(|c| c.type_ == "Ready").cloned())
                .expect("a Ready condition")
        };
        assert_eq!(
            ready(&first).last_transition_time,
            ready(&second).last_transition_time
        );
        let down = desired_status(
            &config,
            &Err(RuntimeError::Engine(
                bollard::errors::Error::SocketNotFoundError("/run/docker.sock".into()),
            )),
        );
        assert_ne!(comparable(&first), comparable(&down));
        assert_eq!(ready(&down).status, "False");
        assert_eq!(
            ready(&down).message.as_deref(),
            Some("container runtime is down: Socket not found: /run/docker.sock")
        );
        assert_eq!(
            labels("n1")
                .get("kubernetes.io/hostname")
                .map(String::as_str),
            Some("n1")
        );
    }
}

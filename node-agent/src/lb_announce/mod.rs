//! L2 announcements of LoadBalancer IPs (`--lb-announce-interface`): per address one node,
//! elected with a `coordination.k8s.io/v1` Lease `kube-system/keelson-lb-<ip-dashed>`, answers
//! ARP requests for it on the announce interface, so that hosts on that link send the
//! address's traffic to this node, where `tc_from_netdev` (the uplink program) serves it.
//! When the node dies its Leases expire and other nodes take the addresses over with a
//! gratuitous ARP. Nodes that are not Ready, and nodes without a ready local endpoint of an
//! `externalTrafficPolicy: Local` Service, do not contend.
//!
//! Only the interface the flag names is ever answered on (none by default): a node must not
//! claim addresses on a network it does not own.
//!
//! [`plan`] decides (pure, table-tested); [`run`] is the IO: once per retry period it reads
//! its Node, the LoadBalancer Services and their EndpointSlices (the agent's watch cache) and
//! the announcement Leases (one list), writes the Leases
//! the plan asks for, and hands the addresses it holds to the ARP responder ([`arp`]).

pub mod arp;
pub mod plan;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    sync::{Arc, RwLock, atomic::AtomicBool},
    time::Duration,
};

use k8s_openapi::{
    api::{
        coordination::v1::{Lease, LeaseSpec},
        core::v1::{Node, Service},
        discovery::v1::EndpointSlice,
    },
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{
    Api, Client, ResourceExt as _,
    api::{DeleteParams, ListParams, PostParams, Preconditions},
};
use tokio::time::Instant;

use crate::service_sync::ServiceCache;

/// An L2 announcement failure.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// The announce interface does not exist in the agent's network namespace.
    #[error("no interface {0}")]
    NoSuchInterface(String),
    /// The ARP socket failed.
    #[error("ARP socket on {interface}")]
    Socket {
        /// The announce interface.
        interface: String,
        /// The system error.
        #[source]
        source: std::io::Error,
    },
    /// An API call failed.
    #[error("{what}")]
    Api {
        /// The call.
        what: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
}

/// The label on every announcement Lease.
pub const LEASE_LABEL: (&str, &str) = ("keelson.dev/lb-announcement", "true");

/// What [`run`] needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name (the Leases' `holderIdentity`).
    pub node_name: String,
    /// The interface to answer ARP on.
    pub interface: String,
    /// How long a Lease holds without renewal (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// How often the Leases are read and renewed.
    pub retry_period: Duration,
}

impl Config {
    /// Five-second Leases renewed every second on `interface`.
    pub fn new(node_name: &str, interface: &str) -> Self {
        Self {
            node_name: node_name.to_owned(),
            interface: interface.to_owned(),
            lease_duration: Duration::from_secs(5),
            retry_period: Duration::from_secs(1),
        }
    }

    /// How long an address stays announced after its last successful Lease write: a retry
    /// period less than the duration, so this node stops answering before another may start.
    pub fn renew_deadline(&self) -> Duration {
        self.lease_duration.saturating_sub(self.retry_period)
    }
}

/// Stops the ARP thread when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Runs the announcements until the process stops; fails only if the interface cannot be
/// opened (every API failure is retried the next round).
pub async fn run(
    client: Client,
    config: Config,
    services: Arc<ServiceCache>,
) -> Result<(), AnnounceError> {
    let responder = Arc::new(arp::Responder::open(&config.interface)?);
    let announced: Arc<RwLock<BTreeSet<Ipv4Addr>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let _stop = StopOnDrop(stop.clone());
    {
        let (responder, announced, stop) = (responder.clone(), announced.clone(), stop.clone());
        std::thread::Builder::new()
            .name("lb-arp".into())
            .spawn(move || responder.serve(&announced, &stop))
            .map_err(|source| AnnounceError::Socket {
                interface: config.interface.clone(),
                source,
            })?;
    }
    tracing::info!(interface = %config.interface, mac = ?responder.mac(),
        "answering ARP for the LoadBalancer IPs this node holds");
    let mut state = State::default();
    let mut ticker = tokio::time::interval(config.retry_period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = round(&client, &config, &services, &mut state).await {
            state.failures += 1;
            if state.failures.is_power_of_two() {
                tracing::warn!(error = %crate::error_chain(&error), failures = state.failures,
                    "L2 announcements: a round failed");
            }
        }
        // Held: written successfully within the renew deadline.
        let now = Instant::now();
        let deadline = config.renew_deadline();
        state
            .held
            .retain(|_, written| now.duration_since(*written) < deadline);
        let new: BTreeSet<Ipv4Addr> = state.held.keys().copied().collect();
        let old = std::mem::replace(
            &mut *announced
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
            new.clone(),
        );
        for ip in new.difference(&old) {
            tracing::info!(%ip, interface = %config.interface, "announcing");
            if let Err(error) = responder.announce(*ip) {
                tracing::warn!(%ip, error = %crate::error_chain(&error), "gratuitous ARP");
            }
        }
        for ip in old.difference(&new) {
            tracing::info!(%ip, "no longer announcing");
        }
    }
}

/// What rounds remember.
#[derive(Debug, Default)]
struct State {
    /// Each Lease's `resourceVersion` and when this node first saw it.
    observed: BTreeMap<String, (String, Instant)>,
    /// The addresses this node holds, with the time of the last successful write.
    held: BTreeMap<Ipv4Addr, Instant>,
    failures: u64,
}

fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> AnnounceError {
    let what = what.into();
    move |source| AnnounceError::Api { what, source }
}

fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn round(
    client: &Client,
    config: &Config,
    services: &ServiceCache,
    state: &mut State,
) -> Result<(), AnnounceError> {
    let node = Api::<Node>::all(client.clone())
        .get_opt(&config.node_name)
        .await
        .map_err(api(format!("reading Node {}", config.node_name)))?;
    let ready = node.as_ref().is_some_and(is_ready);
    // The Services and EndpointSlices of the agent's watch cache (what the datapath serves).
    let (lb_services, slices): (Vec<Service>, BTreeMap<String, Vec<EndpointSlice>>) = services
        .read_with_slices(|all, slices| {
            let lb: Vec<Service> = all
                .values()
                .filter(|s| {
                    s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")
                })
                .cloned()
                .collect();
            let slices = lb
                .iter()
                .map(|s| {
                    let id = format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any());
                    let list = slices
                        .get(&id)
                        .map(|by_name| by_name.values().cloned().collect())
                        .unwrap_or_default();
                    (id, list)
                })
                .collect();
            (lb, slices)
        });
    let slice_refs: BTreeMap<String, Vec<&EndpointSlice>> = slices
        .iter()
        .map(|(id, list)| (id.clone(), list.iter().collect()))
        .collect();
    let service_refs: Vec<&Service> = lb_services.iter().collect();
    let addresses = plan::eligible_addresses(&service_refs, &slice_refs, &config.node_name);

    let leases_api = Api::<Lease>::namespaced(client.clone(), plan::LEASE_NAMESPACE);
    let listed = leases_api
        .list(&ListParams::default().labels(&format!("{}={}", LEASE_LABEL.0, LEASE_LABEL.1)))
        .await
        .map_err(api("listing the announcement Leases"))?;
    let now = Instant::now();
    let mut leases: BTreeMap<Ipv4Addr, Lease> = BTreeMap::new();
    let mut views: BTreeMap<Ipv4Addr, plan::LeaseView> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for lease in listed.items {
        let name = lease.name_any();
        let Some(ip) = plan::lease_address(&name) else {
            continue;
        };
        let version = lease.resource_version().unwrap_or_default();
        let first_seen = match state.observed.get(&name) {
            Some((v, at)) if *v == version => *at,
            _ => now,
        };
        state.observed.insert(name.clone(), (version, first_seen));
        seen.insert(name);
        let spec = lease.spec.clone().unwrap_or_default();
        views.insert(
            ip,
            plan::LeaseView {
                holder: spec.holder_identity,
                duration: Duration::from_secs(
                    u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
                ),
                unchanged_for: now.duration_since(first_seen),
            },
        );
        leases.insert(ip, lease);
    }
    state.observed.retain(|name, _| seen.contains(name));

    let decided = plan::plan(&config.node_name, ready, &addresses, &views);
    // Addresses this node does not hold (per the Leases just read) are not announced.
    state.held.retain(|ip, _| decided.announce.contains(ip));
    let mut first_error = None;
    for (ip, write) in decided.writes {
        match write_lease(&leases_api, config, ip, write, leases.remove(&ip)).await {
            Ok(()) if decided.announce.contains(&ip) => {
                state.held.insert(ip, Instant::now());
            }
            Ok(()) => {}
            Err(AnnounceError::Api {
                source: kube::Error::Api(status),
                ..
            }) if status.code == 409 || status.code == 404 => {
                // Another node was faster: not ours.
                state.held.remove(&ip);
            }
            Err(error) => {
                if write != plan::LeaseWrite::Renew {
                    state.held.remove(&ip);
                }
                first_error.get_or_insert(error);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

async fn write_lease(
    leases: &Api<Lease>,
    config: &Config,
    ip: Ipv4Addr,
    write: plan::LeaseWrite,
    current: Option<Lease>,
) -> Result<(), AnnounceError> {
    let name = plan::lease_name(ip);
    let now = MicroTime(Timestamp::now());
    let duration = i32::try_from(config.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let holder = Some(config.node_name.clone());
    match (write, current) {
        (plan::LeaseWrite::Create, _) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(plan::LEASE_NAMESPACE.into()),
                    labels: Some(
                        [(LEASE_LABEL.0.to_owned(), LEASE_LABEL.1.to_owned())]
                            .into_iter()
                            .collect(),
                    ),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: holder,
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map_err(api(format!("creating Lease {name}")))?;
        }
        (plan::LeaseWrite::Renew | plan::LeaseWrite::TakeOver, Some(mut lease)) => {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if write == plan::LeaseWrite::TakeOver {
                spec.holder_identity = holder;
                spec.acquire_time = Some(now.clone());
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                tracing::info!(%ip, lease = %name, "taking over the announcement");
            }
            spec.lease_duration_seconds = Some(duration);
            spec.renew_time = Some(now);
            // The resourceVersion read makes this conditional: 409 if the Lease moved on.
            leases
                .replace(&name, &PostParams::default(), &lease)
                .await
                .map_err(api(format!("writing Lease {name}")))?;
        }
        (plan::LeaseWrite::Delete, Some(lease)) => {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: lease.resource_version(),
                    uid: lease.uid(),
                }),
                ..DeleteParams::default()
            };
            leases
                .delete(&name, &params)
                .await
                .map_err(api(format!("deleting Lease {name}")))?;
        }
        // The plan writes only Leases it has read.
        (_, None) => {}
    }
    Ok(())
}

//! keelson's controllers, each an ordinary kube-rs client of the Kubernetes API (so they work
//! against any conforming API server), each a `reconcile(object, ctx) -> Action` on current
//! state, idempotent and requeued on errors, run by [`kube::runtime::Controller`]:
//!
//! - [`endpointslice`]: Services' selectors and Pods -> EndpointSlices (and v1 Endpoints);
//! - [`replicaset`]: ReplicaSets -> Pods;
//! - [`deployment`]: Deployments -> ReplicaSets, rolling updates;
//! - [`statefulset`]: StatefulSets -> ordinal Pods and their claims, ordered rollouts;
//! - [`replicationcontroller`]: ReplicationControllers -> Pods (the ReplicaSet logic);
//! - [`disruption`]: PodDisruptionBudgets' status (what `pods/eviction` reads);
//! - [`resourcequota`]: ResourceQuotas' `status.hard` and `status.used`;
//! - [`daemonset`]: DaemonSets -> one pod per eligible node, rolling updates, revisions;
//! - [`job`]: Jobs -> pods run to completion; [`job::ttl`] deletes finished Jobs after their TTL;
//! - [`cronjob`]: CronJobs -> Jobs at their scheduled times;
//! - [`namespace`]: deleting a Namespace deletes its content, then the Namespace;
//! - [`history`]: ControllerRevisions for DaemonSets and StatefulSets (pure helpers);
//! - [`gc`]: garbage collection through `ownerReferences` (background, foreground, orphan);
//! - [`nodeipam`]: a `spec.podCIDR` per Node from the cluster CIDR;
//! - [`nodelifecycle`]: Nodes whose Lease stops renewing go NotReady and get tainted; their pods
//!   are marked not ready, then evicted;
//! - [`bootstrapsigner`], [`tokencleaner`], [`csrapproving`], [`csrsigning`]: joining nodes with
//!   a bootstrap token (kubeadm's protocol): `kube-public/cluster-info` and its signatures,
//!   expired tokens removed, node client certificate requests approved and signed;
//! - [`clusterroleaggregation`]: aggregated ClusterRoles hold the rules of those they select;
//! - [`serviceaccount`]: a `default` ServiceAccount in every namespace;
//! - [`rootcacertpublisher`]: the `kube-root-ca.crt` ConfigMap in every namespace;
//! - [`persistentvolume`]: claims bound to volumes, local-path volumes provisioned and reclaimed;
//! - [`storageprotection`]: claims and volumes in use are not deleted until released.
//! - [`kubedns`]: the `kube-dns` Service's EndpointSlice lists every node's DNS responder.
//! - [`hpa`]: HorizontalPodAutoscalers scale their targets from `metrics.k8s.io` pod usage.
//! - [`lbipam`]: LoadBalancer Services get an address from the `--service-lb-pool`.
//!
//! [`run`] starts the ones [`Options::enabled`] names and returns when one of them fails.
#![forbid(unsafe_code)]

use std::{collections::BTreeSet, fmt, str::FromStr, sync::Arc, time::Duration};

use futures_util::StreamExt;
use keelson_api::cidr::Ipv4Cidr;
use kube::runtime::controller::Action;

pub mod bootstrapsigner;
pub mod claim;
pub mod clusterroleaggregation;
pub mod cronjob;
pub mod csrapproving;
pub mod csrsigning;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpointslice;
pub mod gc;
pub mod history;
pub mod hpa;
pub mod job;
pub mod kubedns;
pub mod lbipam;
pub mod leaderelection;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod persistentvolume;
pub mod pods;
pub mod replicaset;
pub mod replicationcontroller;
pub mod resourcequota;
pub mod rootcacertpublisher;
pub mod serviceaccount;
pub mod statefulset;
mod status;
pub mod storageprotection;
pub mod tokencleaner;

/// One controller [`run`] can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ControllerKind {
    /// `endpointslice`: Services + Pods -> EndpointSlices.
    EndpointSlice,
    /// `endpoints`: Services + Pods -> v1 Endpoints.
    Endpoints,
    /// `replicaset`: ReplicaSets -> Pods.
    ReplicaSet,
    /// `deployment`: Deployments -> ReplicaSets.
    Deployment,
    /// `namespace`: namespace deletion.
    Namespace,
    /// `garbagecollector`: ownerReferences.
    GarbageCollector,
    /// `nodeipam`: Node `spec.podCIDR`.
    NodeIpam,
    /// `nodelifecycle`: Lease-based node health, taints and eviction.
    NodeLifecycle,
    /// `bootstrapsigner`: `kube-public/cluster-info` and its token signatures.
    BootstrapSigner,
    /// `tokencleaner`: expired bootstrap-token Secrets deleted.
    TokenCleaner,
    /// `csrapproving`: node client certificate requests approved.
    CsrApproving,
    /// `csrsigning`: approved node client certificate requests signed by the cluster CA.
    CsrSigning,
    /// `clusterrole-aggregation`: aggregated ClusterRoles' rules.
    ClusterRoleAggregation,
    /// `serviceaccount`: a `default` ServiceAccount in every namespace.
    ServiceAccount,
    /// `root-ca-cert-publisher`: the `kube-root-ca.crt` ConfigMap in every namespace.
    RootCaCertPublisher,
    /// `statefulset`: StatefulSets -> ordinal Pods and their PersistentVolumeClaims.
    StatefulSet,
    /// `replicationcontroller`: ReplicationControllers -> Pods.
    ReplicationController,
    /// `disruption`: PodDisruptionBudget status.
    Disruption,
    /// `resourcequota`: ResourceQuota usage.
    ResourceQuota,
    /// `daemonset`: DaemonSets -> one pod per eligible node.
    DaemonSet,
    /// `job`: Jobs -> pods run to completion.
    Job,
    /// `cronjob`: CronJobs -> Jobs on a schedule.
    CronJob,
    /// `ttl-after-finished`: finished Jobs deleted after `ttlSecondsAfterFinished`.
    TtlAfterFinished,
    /// `persistentvolume-binder`: claims bound to volumes, local-path provisioning.
    PersistentVolumeBinder,
    /// `pvc-protection`: deleting claims wait until no pod uses them.
    PvcProtection,
    /// `pv-protection`: deleting volumes wait until unbound.
    PvProtection,
    /// `kube-dns-endpoints`: the `kube-dns` Service -> every node's DNS responder (keelson's own).
    KubeDnsEndpoints,
    /// `horizontalpodautoscaling`: HorizontalPodAutoscalers -> their targets' scale.
    HorizontalPodAutoscaling,
    /// `service-lb-ipam`: LoadBalancer Services -> an address of the service LB pool.
    ServiceLbIpam,
}

impl ControllerKind {
    /// Every controller, in start order.
    pub const ALL: [Self; 29] = [
        Self::EndpointSlice,
        Self::Endpoints,
        Self::ReplicaSet,
        Self::Deployment,
        Self::Namespace,
        Self::GarbageCollector,
        Self::NodeIpam,
        Self::NodeLifecycle,
        Self::BootstrapSigner,
        Self::TokenCleaner,
        Self::CsrApproving,
        Self::CsrSigning,
        Self::ClusterRoleAggregation,
        Self::ServiceAccount,
        Self::RootCaCertPublisher,
        Self::StatefulSet,
        Self::ReplicationController,
        Self::Disruption,
        Self::ResourceQuota,
        Self::DaemonSet,
        Self::Job,
        Self::CronJob,
        Self::TtlAfterFinished,
        Self::PersistentVolumeBinder,
        Self::PvcProtection,
        Self::PvProtection,
        Self::KubeDnsEndpoints,
        Self::HorizontalPodAutoscaling,
        Self::ServiceLbIpam,
    ];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::EndpointSlice => "endpointslice",
            Self::Endpoints => "endpoints",
            Self::ReplicaSet => "replicaset",
            Self::Deployment => "deployment",
            Self::Namespace => "namespace",
            Self::GarbageCollector => "garbagecollector",
            Self::NodeIpam => "nodeipam",
            Self::NodeLifecycle => "nodelifecycle",
            Self::BootstrapSigner => "bootstrapsigner",
            Self::TokenCleaner => "tokencleaner",
            Self::CsrApproving => "csrapproving",
            Self::CsrSigning => "csrsigning",
            Self::ClusterRoleAggregation => "clusterrole-aggregation",
            Self::ServiceAccount => "serviceaccount",
            Self::RootCaCertPublisher => "root-ca-cert-publisher",
            Self::StatefulSet => "statefulset",
            Self::ReplicationController => "replicationcontroller",
            Self::Disruption => "disruption",
            Self::ResourceQuota => "resourcequota",
            Self::DaemonSet => "daemonset",
            Self::Job => "job",
            Self::CronJob => "cronjob",
            Self::TtlAfterFinished => "ttl-after-finished",
            Self::PersistentVolumeBinder => persistentvolume::NAME,
            Self::PvcProtection => storageprotection::PVC_NAME,
            Self::PvProtection => storageprotection::PV_NAME,
            Self::KubeDnsEndpoints => kubedns::NAME,
            Self::HorizontalPodAutoscaling => "horizontalpodautoscaling",
            Self::ServiceLbIpam => "service-lb-ipam",
        }
    }
}

impl fmt::Display for ControllerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--controllers` value that names no controller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown controller {name:?}; known: all, none, {known}", known = known_names())]
pub struct UnknownController {
    /// The name given.
    pub name: String,
}

fn known_names() -> String {
    ControllerKind::ALL.map(ControllerKind::name).join(", ")
}

/// The set of controllers a `--controllers` value selects: `all` (or `*`), `none`, a
/// comma-separated list of names, and `-name` to take one away (`all,-nodelifecycle`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerSet(pub BTreeSet<ControllerKind>);

impl FromStr for ControllerSet {
    type Err = UnknownController;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut set = BTreeSet::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (remove, name) = match item.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, item),
            };
            let kinds: Vec<ControllerKind> = match name {
                "all" | "*" => ControllerKind::ALL.to_vec(),
                "none" => {
                    set.clear();
                    continue;
                }
                _ => vec![
                    ControllerKind::ALL
                        .into_iter()
                        .find(|k| k.name() == name)
                        .ok_or_else(|| UnknownController {
                            name: name.to_owned(),
                        })?,
                ],
            };
            for kind in kinds {
                if remove {
                    set.remove(&kind);
                } else {
                    set.insert(kind);
                }
            }
        }
        Ok(Self(set))
    }
}

/// What [`run`] starts and with which settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// The controllers to run.
    pub enabled: BTreeSet<ControllerKind>,
    /// Node IPAM: the block pod CIDRs are cut from (`--cluster-cidr`).
    pub cluster_cidr: Ipv4Cidr,
    /// Node IPAM: the prefix length of each node's pod CIDR (`--node-cidr-mask-size`).
    pub node_cidr_mask_size: u8,
    /// Node lifecycle: how long a node's Lease may go unrenewed before it is NotReady.
    pub node_monitor_grace_period: Duration,
    /// Node lifecycle: how often node health is checked.
    pub node_monitor_period: Duration,
    /// Node lifecycle: how long pods that do not tolerate `node.kubernetes.io/unreachable`
    /// explicitly stay on an unreachable node before they are evicted.
    pub default_toleration: Duration,
    /// Joining: what `bootstrapsigner` publishes and `csrsigning` signs with; without it those
    /// two do not start (a warning says so).
    pub bootstrap: Option<Arc<BootstrapSettings>>,
    /// The directory local-path volumes are created in on nodes.
    pub local_path_root: String,
    /// How often each HorizontalPodAutoscaler is synced
    /// (`--horizontal-pod-autoscaler-sync-period`).
    pub hpa_sync_period: Duration,
    /// LoadBalancer IPAM: the addresses Services get (`--service-lb-pool`); empty: the
    /// controller does not run and LoadBalancer Services stay pending.
    pub service_lb_pool: lbipam::Pool,
}

/// The control plane's identity for joining nodes.
#[derive(Debug)]
pub struct BootstrapSettings {
    /// The URL nodes reach the API server at (the advertise address), for `cluster-info`.
    pub server: String,
    /// The cluster CA certificate (PEM) and the signer built from it and its key.
    pub ca: csrsigning::CertificateAuthority,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            enabled: ControllerKind::ALL.into_iter().collect(),
            cluster_cidr: Ipv4Cidr::new(std::net::Ipv4Addr::new(10, 244, 0, 0), 16)
                .unwrap_or_else(|| unreachable!("10.244.0.0/16 is a valid block")),
            node_cidr_mask_size: 24,
            node_monitor_grace_period: Duration::from_secs(40),
            node_monitor_period: Duration::from_secs(5),
            default_toleration: Duration::from_secs(300),
            bootstrap: None,
            local_path_root: keelson_api::storage::DEFAULT_LOCAL_PATH_ROOT.to_owned(),
            hpa_sync_period: hpa::DEFAULT_SYNC_PERIOD,
            service_lb_pool: lbipam::Pool::default(),
        }
    }
}

/// A reconcile failure: logged, and the object is retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{action}")]
    Api {
        /// What was being done.
        action: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// An object cannot be reconciled as it is (the message says why).
    #[error("{0}")]
    Invalid(String),
    /// A workload's `spec.selector` is one Kubernetes would refuse.
    #[error("invalid spec.selector of {object}")]
    Selector {
        /// The workload, e.g. `ReplicaSet default/web`.
        object: String,
        /// What is wrong with the selector.
        #[source]
        source: keelson_api::selectors::SelectorError,
    },
}

/// `Result` of a reconcile.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches what was being done to a client error.
pub(crate) trait ApiContext<T> {
    fn action(self, action: impl FnOnce() -> String) -> Result<T>;
}

impl<T> ApiContext<T> for Result<T, kube::Error> {
    fn action(self, action: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Api {
            action: action(),
            source,
        })
    }
}

/// Whether a client error is the API's 404 / 409.
pub(crate) fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == code)
}

/// The requeue after a failed reconcile.
pub(crate) fn retry<K, C>(_object: Arc<K>, error: &Error, _ctx: Arc<C>) -> Action {
    tracing::warn!(error = %error_chain(error), "reconcile failed; retrying in 2 s");
    Action::requeue(Duration::from_secs(2))
}

/// An error with its sources, on one line.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Drives a controller's stream, logging each outcome at debug level.
pub(crate) async fn drive<S, T, E>(name: &'static str, stream: S)
where
    S: futures_util::Stream<Item = std::result::Result<T, E>>,
    T: fmt::Debug,
    E: std::error::Error + 'static,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(outcome) = stream.next().await {
        match outcome {
            Ok(object) => tracing::trace!(controller = name, ?object, "reconciled"),
            Err(error) => {
                tracing::debug!(controller = name, error = %error_chain(&error), "controller event")
            }
        }
    }
}

/// A spawned task that is aborted when this is dropped, so a controller's helper tasks (watch
/// feeders) end with it, e.g. when leadership is lost.
#[derive(Debug)]
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the [`Options::enabled`] controllers until one of them ends (they only end when their
/// watches do), against the API server `client` talks to.
pub async fn run(client: kube::Client, options: Options) -> anyhow::Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let enabled = |k| options.enabled.contains(&k);
    if enabled(ControllerKind::EndpointSlice) || enabled(ControllerKind::Endpoints) {
        tasks.spawn(endpointslice::run(
            client.clone(),
            enabled(ControllerKind::EndpointSlice),
            enabled(ControllerKind::Endpoints),
        ));
    }
    if enabled(ControllerKind::ReplicaSet) {
        tasks.spawn(replicaset::run(client.clone()));
    }
    if enabled(ControllerKind::Deployment) {
        tasks.spawn(deployment::run(client.clone()));
    }
    if enabled(ControllerKind::StatefulSet) {
        tasks.spawn(statefulset::run(client.clone()));
    }
    if enabled(ControllerKind::ReplicationController) {
        tasks.spawn(replicationcontroller::run(client.clone()));
    }
    if enabled(ControllerKind::Disruption) {
        tasks.spawn(disruption::run(client.clone()));
    }
    if enabled(ControllerKind::ResourceQuota) {
        tasks.spawn(resourcequota::run(client.clone()));
    }
    if enabled(ControllerKind::DaemonSet) {
        tasks.spawn(daemonset::run(client.clone()));
    }
    if enabled(ControllerKind::Namespace) {
        tasks.spawn(namespace::run(client.clone()));
    }
    if enabled(ControllerKind::Job) {
        tasks.spawn(job::run(client.clone()));
    }
    if enabled(ControllerKind::CronJob) {
        tasks.spawn(cronjob::run(client.clone()));
    }
    if enabled(ControllerKind::TtlAfterFinished) {
        tasks.spawn(job::ttl::run(client.clone()));
    }
    if enabled(ControllerKind::NodeIpam) {
        tasks.spawn(nodeipam::run(
            client.clone(),
            options.cluster_cidr,
            options.node_cidr_mask_size,
        ));
    }
    if enabled(ControllerKind::GarbageCollector) {
        tasks.spawn(gc::run(client.clone()));
    }
    if enabled(ControllerKind::NodeLifecycle) {
        tasks.spawn(nodelifecycle::run(
            client.clone(),
            nodelifecycle::Settings {
                grace_period: options.node_monitor_grace_period,
                period: options.node_monitor_period,
                default_toleration: options.default_toleration,
            },
        ));
    }
    if enabled(ControllerKind::TokenCleaner) {
        tasks.spawn(tokencleaner::run(client.clone()));
    }
    if enabled(ControllerKind::ServiceAccount) {
        tasks.spawn(serviceaccount::run(client.clone()));
    }
    if enabled(ControllerKind::CsrApproving) {
        tasks.spawn(csrapproving::run(client.clone()));
    }
    if enabled(ControllerKind::PersistentVolumeBinder) {
        tasks.spawn(persistentvolume::run(
            client.clone(),
            options.local_path_root.clone(),
        ));
    }
    if enabled(ControllerKind::PvcProtection) || enabled(ControllerKind::PvProtection) {
        tasks.spawn(storageprotection::run(
            client.clone(),
            enabled(ControllerKind::PvcProtection),
            enabled(ControllerKind::PvProtection),
        ));
    }
    if enabled(ControllerKind::KubeDnsEndpoints) {
        tasks.spawn(kubedns::run(client.clone()));
    }
    if enabled(ControllerKind::HorizontalPodAutoscaling) {
        tasks.spawn(hpa::run(client.clone(), options.hpa_sync_period));
    }
    if enabled(ControllerKind::ServiceLbIpam) {
        if options.service_lb_pool.is_empty() {
            tracing::info!(
                "no --service-lb-pool: LoadBalancer Services stay pending unless another \
                 implementation serves them"
            );
        } else {
            tasks.spawn(lbipam::run(client.clone(), options.service_lb_pool.clone()));
        }
    }
    if enabled(ControllerKind::ClusterRoleAggregation) {
        tasks.spawn(clusterroleaggregation::run(client.clone()));
    }
    match &options.bootstrap {
        Some(settings) => {
            if enabled(ControllerKind::BootstrapSigner) {
                tasks.spawn(bootstrapsigner::run(
                    client.clone(),
                    settings.server.clone(),
                    settings.ca.ca_pem().to_owned(),
                ));
            }
            if enabled(ControllerKind::CsrSigning) {
                tasks.spawn(csrsigning::run(client.clone(), Arc::clone(settings)));
            }
            if enabled(ControllerKind::RootCaCertPublisher) {
                tasks.spawn(rootcacertpublisher::run(
                    client.clone(),
                    settings.ca.ca_pem().to_owned(),
                ));
            }
        }
        None if enabled(ControllerKind::BootstrapSigner)
            || enabled(ControllerKind::CsrSigning)
            || enabled(ControllerKind::RootCaCertPublisher) =>
        {
            tracing::warn!(
                "no cluster CA given: bootstrapsigner, csrsigning and root-ca-cert-publisher do not run"
            );
        }
        None => {}
    }
    tracing::info!(
        controllers = %options.enabled.iter().map(|k| k.name()).collect::<Vec<_>>().join(","),
        "controllers started"
    );
    match tasks.join_next().await {
        None => Ok(()),
        Some(Ok(result)) => result,
        Some(Err(join)) => Err(anyhow::anyhow!("a controller task panicked: {join}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controller_sets() {
        let all: ControllerSet = "all".parse().unwrap();
        assert_eq!(all.0.len(), ControllerKind::ALL.len());
        assert!("none".parse::<ControllerSet>().unwrap().0.is_empty());
        let some: ControllerSet = "endpointslice,replicaset".parse().unwrap();
        assert_eq!(
            some.0.into_iter().collect::<Vec<_>>(),
            vec![ControllerKind::EndpointSlice, ControllerKind::ReplicaSet]
        );
        let minus: ControllerSet = "*,-nodelifecycle".parse().unwrap();
        assert!(!minus.0.contains(&ControllerKind::NodeLifecycle));
        assert_eq!(minus.0.len(), ControllerKind::ALL.len() - 1);
        let err = "replicasets".parse::<ControllerSet>().unwrap_err();
        assert!(err.to_string().contains("known: all, none, endpointslice"));
    }
}

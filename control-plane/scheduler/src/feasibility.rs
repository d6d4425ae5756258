//! Every filter for one pod, prepared once over the cluster (kube's PreFilter) and then run per
//! node in kube's order: the node's own filters ([`plugins::filter`]), topology spread,
//! inter-pod affinity; the first rejection wins.

use k8s_openapi::api::core::v1::Pod;

use crate::{
    interpodaffinity,
    plugins::{self, HostPort, NodeInfo, Resources, Unfit},
    pods::NamespaceLabels,
    podtopologyspread,
};

/// Why a node was rejected: the text counted in the unschedulable message, and whether
/// evicting pods could help (preemption tries only such nodes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// kube's wording.
    pub reason: String,
    /// kube's `Unschedulable` (true) vs `UnschedulableAndUnresolvable` (false).
    pub resolvable: bool,
}

/// The filters of one pod over one snapshot of the cluster.
#[derive(Debug, Clone)]
pub struct Feasibility<'a> {
    pod: &'a Pod,
    /// What the pod requests.
    pub request: Resources,
    ports: Vec<HostPort>,
    /// Inter-pod affinity state (also used for scoring).
    pub affinity: interpodaffinity::State,
    /// Topology spread state (also used for scoring).
    pub spread: podtopologyspread::State,
}

impl<'a> Feasibility<'a> {
    /// Prepares the filters of `pod` over `nodes`.
    pub fn new(pod: &'a Pod, nodes: &[NodeInfo], namespaces: &NamespaceLabels) -> Self {
        Self {
            pod,
            request: plugins::pod_requests(pod),
            ports: plugins::pod_host_ports(pod),
            affinity: interpodaffinity::State::new(pod, nodes, namespaces),
            spread: podtopologyspread::State::new(pod, nodes),
        }
    }

    /// Whether `node` passes every filter.
    pub fn check(&self, node: &NodeInfo) -> Result<(), Rejected> {
        if let Err(unfit) = plugins::filter(self.pod, &self.request, &self.ports, node) {
            return Err(Rejected {
                reason: unfit.to_string(),
                resolvable: matches!(unfit, Unfit::Insufficient(_) | Unfit::HostPort),
            });
        }
        let plugin = |r: crate::pods::Rejection| Rejected {
            reason: r.reason.to_owned(),
            resolvable: r.resolvable,
        };
        if self.spread.filters() {
            self.spread.filter(node).map_err(plugin)?;
        }
        if self.affinity.filters() {
            self.affinity.filter(node).map_err(plugin)?;
        }
        Ok(())
    }
}

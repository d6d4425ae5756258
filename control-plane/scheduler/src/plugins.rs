//! The scheduler's filters and scores: pure functions of a pod and a node's state, so each can
//! be tested alone. Filters say why a node does not fit (Kubernetes' wording, which
//! `kubectl describe pod` shows); scores rank the nodes that fit, 0..=100 each.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{
    api::core::v1::{Node, Pod, Taint, Toleration},
    apimachinery::pkg::api::resource::Quantity,
};
use keelson_api::{
    selectors::{self, LabelSelector},
    tolerations,
};

/// Resources as the scheduler counts them (Kubernetes' `framework.Resource`): exact integers,
/// CPU from `MilliValue` and memory and pods from `Value` of the quantities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in millicores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Pod slots.
    pub pods: i64,
}

impl Resources {
    fn add(&mut self, other: Resources) {
        self.milli_cpu = self.milli_cpu.saturating_add(other.milli_cpu);
        self.memory = self.memory.saturating_add(other.memory);
        self.pods = self.pods.saturating_add(other.pods);
    }
}

/// A `hostPort` a pod uses: (host IP, protocol, port).
pub type HostPort = (String, String, i32);

/// What the scheduler knows about a node: the node and what its bound pods use.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    /// The node's name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// `status.allocatable` (capacity when absent).
    pub allocatable: Resources,
    /// The sum of what bound pods request (and their count in `pods`).
    pub requested: Resources,
    /// Host ports in use.
    pub host_ports: BTreeSet<HostPort>,
    /// Taints.
    pub taints: Vec<Taint>,
    /// Ready condition True.
    pub ready: bool,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// Bound pods per controller owner uid (for spreading).
    pub owners: BTreeMap<String, u32>,
    /// The bound pods themselves (for inter-pod affinity, topology spread and preemption).
    pub pods: Vec<crate::pods::PodInfo>,
}

/// The CPU, memory and pod counts of a resource map; a missing or unparsable quantity counts
/// as zero.
fn resources_of(map: Option<&BTreeMap<String, Quantity>>) -> Resources {
    let get = |k: &str| {
        map.and_then(|m| m.get(k))
            .and_then(|q| keelson_api::quantity::Quantity::try_from(q).ok())
    };
    Resources {
        milli_cpu: get("cpu").map_or(0, |q| q.milli_value()),
        memory: get("memory").map_or(0, |q| q.value()),
        pods: get("pods").map_or(0, |q| q.value()),
    }
}

/// What a pod requests: the sum over its containers (requests, or limits when requests are
/// absent), at least the largest init container, plus one pod slot.
pub fn pod_requests(pod: &Pod) -> Resources {
    let mut total = Resources::default();
    let Some(spec) = pod.spec.as_ref() else {
        return Resources {
            pods: 1,
            ..Resources::default()
        };
    };
    let of = |c: &k8s_openapi::api::core::v1::Container| {
        let r = c.resources.as_ref();
        let requests = resources_of(r.and_then(|r| r.requests.as_ref()));
        let limits = resources_of(r.and_then(|r| r.limits.as_ref()));
        Resources {
            milli_cpu: if requests.milli_cpu > 0 {
                requests.milli_cpu
            } else {
                limits.milli_cpu
            },
            memory: if requests.memory > 0 {
                requests.memory
            } else {
                limits.memory
            },
            pods: 0,
        }
    };
    for c in &spec.containers {
        total.add(of(c));
    }
    for c in spec.init_containers.iter().flatten() {
        let init = of(c);
        total.milli_cpu = total.milli_cpu.max(init.milli_cpu);
        total.memory = total.memory.max(init.memory);
    }
    total.add(resources_of(spec.overhead.as_ref()));
    total.pods = 1;
    total
}

/// The host ports a pod asks for.
pub fn pod_host_ports(pod: &Pod) -> Vec<HostPort> {
    pod.spec
        .iter()
        .flat_map(|s| &s.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = p.host_port.filter(|p| *p > 0)?;
            Some((
                p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()),
                p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                port,
            ))
        })
        .collect()
}

/// The controller owner's uid of a pod, for spreading.
pub fn owner_uid(pod: &Pod) -> Option<&str> {
    pod.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
        .map(|r| r.uid.as_str())
}

impl NodeInfo {
    /// The node's own facts, with nothing bound yet.
    pub fn from_node(node: &Node) -> Self {
        let status = node.status.as_ref();
        let allocatable = status
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
            .map(|m| resources_of(Some(m)))
            .unwrap_or_default();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        let spec = node.spec.as_ref();
        Self {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            allocatable,
            requested: Resources::default(),
            host_ports: BTreeSet::new(),
            taints: spec.and_then(|s| s.taints.clone()).unwrap_or_default(),
            ready,
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            owners: BTreeMap::new(),
            pods: Vec::new(),
        }
    }

    /// Accounts a pod bound to this node.
    pub fn add_pod(&mut self, pod: &Pod) {
        self.requested.add(pod_requests(pod));
        self.host_ports.extend(pod_host_ports(pod));
        if let Some(owner) = owner_uid(pod) {
            *self.owners.entry(owner.to_owned()).or_default() += 1;
        }
        self.pods.push(crate::pods::PodInfo::new(pod));
    }
}

/// Why a node does not fit a pod; the text is Kubernetes' (`kubectl describe` shows it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unfit {
    /// Not Ready.
    NotReady,
    /// `spec.unschedulable`.
    Unschedulable,
    /// Not enough of a resource.
    Insufficient(&'static str),
    /// nodeSelector / required node affinity.
    Affinity,
    /// An untolerated taint.
    Taint(String),
    /// A host port in use.
    HostPort,
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotReady => write!(f, "node(s) were not ready"),
            Self::Unschedulable => write!(f, "node(s) were unschedulable"),
            Self::Insufficient(what) => write!(f, "Insufficient {what}"),
            Self::Affinity => write!(f, "node(s) didn't match Pod's node affinity/selector"),
            Self::Taint(taint) => write!(f, "node(s) had untolerated taint {{{taint}}}"),
            Self::HostPort => write!(
                f,
                "node(s) didn't have free ports for the requested pod ports"
            ),
        }
    }
}

/// The pod's tolerations.
fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default()
}

/// Whether the pod tolerates `taint` (Kubernetes' rules: [`tolerations::tolerates`]).
pub fn pod_tolerates(pod: &Pod, taint: &Taint) -> bool {
    tolerations::tolerates_taint(tolerations(pod), taint)
}

/// Filter: Ready and schedulable.
pub fn filter_node_ready(pod: &Pod, node: &NodeInfo) -> Result<(), Unfit> {
    if !node.ready {
        return Err(Unfit::NotReady);
    }
    let unschedulable_taint = Taint {
        key: "node.kubernetes.io/unschedulable".into(),
        effect: tolerations::NO_SCHEDULE.into(),
        ..Taint::default()
    };
    if node.unschedulable && !pod_tolerates(pod, &unschedulable_taint) {
        return Err(Unfit::Unschedulable);
    }
    Ok(())
}

/// Filter: requests fit in allocatable minus what bound pods request.
pub fn filter_resources(request: &Resources, node: &NodeInfo) -> Result<(), Unfit> {
    let free = |alloc: i64, used: i64| alloc.saturating_sub(used);
    if node.allocatable.pods > 0 && free(node.allocatable.pods, node.requested.pods) < request.pods
    {
        return Err(Unfit::Insufficient("pods"));
    }
    if request.milli_cpu > 0
        && free(node.allocatable.milli_cpu, node.requested.milli_cpu) < request.milli_cpu
    {
        return Err(Unfit::Insufficient("cpu"));
    }
    if request.memory > 0 && free(node.allocatable.memory, node.requested.memory) < request.memory {
        return Err(Unfit::Insufficient("memory"));
    }
    Ok(())
}

/// Filter: `nodeSelector` and required node affinity (terms ORed, expressions ANDed), by
/// Kubernetes' rules ([`selectors::node_selector_matches`]).
pub fn filter_node_affinity(pod: &Pod, node: &NodeInfo) -> Result<(), Unfit> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    let selector_ok = spec
        .node_selector
        .as_ref()
        .is_none_or(|set| LabelSelector::from_set(set).matches(&node.labels));
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    let affinity_ok =
        required.is_none_or(|r| selectors::node_selector_matches(r, &node.name, &node.labels));
    if selector_ok && affinity_ok {
        Ok(())
    } else {
        Err(Unfit::Affinity)
    }
}

/// Filter: every NoSchedule/NoExecute taint is tolerated.
pub fn filter_taints(pod: &Pod, node: &NodeInfo) -> Result<(), Unfit> {
    match tolerations::find_untolerated(
        &node.taints,
        tolerations(pod),
        tolerations::blocks_scheduling,
    ) {
        None => Ok(()),
        Some(t) => Err(Unfit::Taint(match &t.value {
            Some(v) if !v.is_empty() => format!("{}: {v}", t.key),
            _ => format!("{}: ", t.key),
        })),
    }
}

/// Filter: no requested host port is in use (0.0.0.0 conflicts with every address).
pub fn filter_host_ports(ports: &[HostPort], node: &NodeInfo) -> Result<(), Unfit> {
    let conflict = ports.iter().any(|(ip, protocol, port)| {
        node.host_ports.iter().any(|(uip, uprotocol, uport)| {
            uport == port
                && uprotocol == protocol
                && (uip == ip || uip == "0.0.0.0" || ip == "0.0.0.0")
        })
    });
    if conflict {
        Err(Unfit::HostPort)
    } else {
        Ok(())
    }
}

/// Every filter, first failure wins.
pub fn filter(
    pod: &Pod,
    request: &Resources,
    ports: &[HostPort],
    node: &NodeInfo,
) -> Result<(), Unfit> {
    filter_node_ready(pod, node)?;
    filter_taints(pod, node)?;
    filter_node_affinity(pod, node)?;
    filter_resources(request, node)?;
    filter_host_ports(ports, node)
}

/// Score: the share of CPU and memory left after placing the pod, 0..=100 (resources the node
/// does not report count as fully free).
pub fn score_least_allocated(request: &Resources, node: &NodeInfo) -> f64 {
    let free = |alloc: i64, used: i64, req: i64| {
        if alloc <= 0 {
            1.0
        } else {
            (alloc.saturating_sub(used).saturating_sub(req) as f64 / alloc as f64).clamp(0.0, 1.0)
        }
    };
    let cpu = free(
        node.allocatable.milli_cpu,
        node.requested.milli_cpu,
        request.milli_cpu,
    );
    let memory = free(
        node.allocatable.memory,
        node.requested.memory,
        request.memory,
    );
    let pods = free(node.allocatable.pods, node.requested.pods, request.pods);
    (cpu + memory + pods) / 3.0 * 100.0
}

/// Score: fewer pods of the same owner on the node is better, 0..=100 (`max` is the most any
/// feasible node holds).
pub fn score_spread(owner: Option<&str>, node: &NodeInfo, max: u32) -> f64 {
    let Some(owner) = owner else {
        return 100.0;
    };
    if max == 0 {
        return 100.0;
    }
    let count = node.owners.get(owner).copied().unwrap_or(0);
    f64::from(max - count.min(max)) / f64::from(max) * 100.0
}

/// The message for a pod that fits nowhere: `0/N nodes are available: 2 Insufficient cpu, ...`.
pub fn unschedulable_message(total: usize, reasons: &BTreeMap<String, usize>) -> String {
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    if total == 0 {
        return "0/0 nodes are available: no nodes available to schedule pods.".into();
    }
    format!("0/{total} nodes are available: {}.", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::{
        api::core::v1::{
            Affinity, Container, ContainerPort, NodeAffinity, NodeCondition, NodeSelector,
            NodeSelectorRequirement, NodeSelectorTerm, NodeSpec, NodeStatus, PodSpec,
            ResourceRequirements,
        },
        apimachinery::pkg::apis::meta::v1::ObjectMeta,
    };

    fn node(name: &str, cpu: &str, memory: &str) -> NodeInfo {
        NodeInfo::from_node(&Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([("zone".into(), "a".into())])),
                ..ObjectMeta::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(BTreeMap::from([
                    ("cpu".into(), Quantity(cpu.into())),
                    ("memory".into(), Quantity(memory.into())),
                    ("pods".into(), Quantity("110".into())),
                ])),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..NodeCondition::default()
                }]),
                ..NodeStatus::default()
            }),
        })
    }

    fn pod(cpu: &str) -> Pod {
        Pod {
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(BTreeMap::from([("cpu".into(), Quantity(cpu.into()))])),
                        ..ResourceRequirements::default()
                    }),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            ..Pod::default()
        }
    }

    #[test]
    fn requests_are_exact_quantities() {
        let mut p = pod("100m");
        let container = p.spec.as_mut().unwrap().containers[0].clone();
        let with = |cpu: &str, memory: &str| Container {
            resources: Some(ResourceRequirements {
                requests: Some(BTreeMap::from([
                    ("cpu".into(), Quantity(cpu.into())),
                    ("memory".into(), Quantity(memory.into())),
                ])),
                ..ResourceRequirements::default()
            }),
            ..container.clone()
        };
        p.spec.as_mut().unwrap().containers = vec![with("0.1", "1.5Gi"), with("200m", "1")];
        assert_eq!(
            pod_requests(&p),
            Resources {
                milli_cpu: 300,
                memory: 1_610_612_737,
                pods: 1
            }
        );
        p.spec.as_mut().unwrap().containers = vec![with("0.0001", "0.5"), with("lots", "1e3")];
        assert_eq!(
            pod_requests(&p),
            Resources {
                milli_cpu: 1,
                memory: 1001,
                pods: 1
            },
            "fractions round up; an unparsable quantity counts as zero"
        );
        let n = node("a", "1500m", "1Gi");
        assert_eq!(
            n.allocatable,
            Resources {
                milli_cpu: 1500,
                memory: 1 << 30,
                pods: 110
            }
        );
    }

    #[test]
    fn resources_count_bound_pods() {
        let mut n = node("a", "1", "1Gi");
        let request = pod_requests(&pod("600m"));
        assert_eq!(filter_resources(&request, &n), Ok(()));
        n.add_pod(&pod("600m"));
        assert_eq!(
            filter_resources(&request, &n),
            Err(Unfit::Insufficient("cpu"))
        );
        assert_eq!(Unfit::Insufficient("cpu").to_string(), "Insufficient cpu");
    }

    #[test]
    fn readiness_and_unschedulable() {
        let mut n = node("a", "1", "1Gi");
        n.ready = false;
        assert_eq!(filter_node_ready(&pod("0"), &n), Err(Unfit::NotReady));
        n.ready = true;
        n.unschedulable = true;
        assert_eq!(filter_node_ready(&pod("0"), &n), Err(Unfit::Unschedulable));
    }

    #[test]
    fn selector_and_required_affinity() {
        let n = node("a", "1", "1Gi");
        let mut p = pod("0");
        p.spec.as_mut().unwrap().node_selector =
            Some(BTreeMap::from([("zone".into(), "b".into())]));
        assert_eq!(filter_node_affinity(&p, &n), Err(Unfit::Affinity));
        p.spec.as_mut().unwrap().node_selector =
            Some(BTreeMap::from([("zone".into(), "a".into())]));
        assert_eq!(filter_node_affinity(&p, &n), Ok(()));
        p.spec.as_mut().unwrap().affinity = Some(Affinity {
            node_affinity: Some(NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![NodeSelectorTerm {
                        match_fields: Some(vec![NodeSelectorRequirement {
                            key: "metadata.name".into(),
                            operator: "In".into(),
                            values: Some(vec!["b".into()]),
                        }]),
                        ..NodeSelectorTerm::default()
                    }],
                }),
                ..NodeAffinity::default()
            }),
            ..Affinity::default()
        });
        assert_eq!(filter_node_affinity(&p, &n), Err(Unfit::Affinity));
    }

    #[test]
    fn taints_need_tolerations() {
        let mut n = node("a", "1", "1Gi");
        n.taints = vec![Taint {
            key: "dedicated".into(),
            value: Some("db".into()),
            effect: "NoSchedule".into(),
            ..Taint::default()
        }];
        let mut p = pod("0");
        assert!(matches!(filter_taints(&p, &n), Err(Unfit::Taint(_))));
        p.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("db".into()),
            effect: Some("NoSchedule".into()),
            ..Toleration::default()
        }]);
        assert_eq!(filter_taints(&p, &n), Ok(()));
        n.taints[0].effect = "PreferNoSchedule".into();
        assert_eq!(filter_taints(&pod("0"), &n), Ok(()));
    }

    #[test]
    fn host_ports_conflict() {
        let mut n = node("a", "1", "1Gi");
        let mut p = pod("0");
        p.spec.as_mut().unwrap().containers[0].ports = Some(vec![ContainerPort {
            container_port: 80,
            host_port: Some(8080),
            ..ContainerPort::default()
        }]);
        let ports = pod_host_ports(&p);
        assert_eq!(filter_host_ports(&ports, &n), Ok(()));
        n.add_pod(&p);
        assert_eq!(filter_host_ports(&ports, &n), Err(Unfit::HostPort));
    }

    #[test]
    fn scores_prefer_free_nodes_and_spread() {
        let empty = node("a", "2", "2Gi");
        let mut busy = node("b", "2", "2Gi");
        busy.add_pod(&pod("1"));
        let request = pod_requests(&pod("100m"));
        assert!(score_least_allocated(&request, &empty) > score_least_allocated(&request, &busy));
        let mut with_owner = node("c", "2", "2Gi");
        with_owner.owners.insert("rs".into(), 2);
        assert_eq!(score_spread(Some("rs"), &with_owner, 2), 0.0);
        assert_eq!(score_spread(Some("rs"), &empty, 2), 100.0);
        let message = unschedulable_message(
            3,
            &BTreeMap::from([
                ("Insufficient cpu".into(), 2),
                ("node(s) were not ready".into(), 1),
            ]),
        );
        assert_eq!(
            message,
            "0/3 nodes are available: 1 node(s) were not ready, 2 Insufficient cpu."
        );
    }
}

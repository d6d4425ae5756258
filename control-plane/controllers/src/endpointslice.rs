//! The EndpointSlice and Endpoints controller: for every Service with a selector, the pods it
//! selects that have an IP become endpoints with `ready`, `serving` and `terminating`
//! conditions, `nodeName`, `zone` (the node's `topology.kubernetes.io/zone`) and a `targetRef`.
//! Ports resolve per pod (a named `targetPort` is looked up in the pod's containers), so pods
//! with different resolved ports land in different slices. Slices hold at most
//! [`MAX_ENDPOINTS_PER_SLICE`] endpoints, keep their endpoints where they are when others come
//! and go, and only slices whose content changes are written. A Service without endpoints keeps
//! one empty placeholder slice, as Kubernetes does.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use k8s_openapi::{
    api::{
        core::v1::{
            EndpointAddress, EndpointPort as CorePort, EndpointSubset, Endpoints, Node,
            ObjectReference, Pod, Service,
        },
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
    },
    apimachinery::pkg::{apis::meta::v1::ObjectMeta, util::intstr::IntOrString},
};
use keelson_api::selectors::service_selector;
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::{
        Controller, WatchStreamExt as _,
        controller::Action,
        reflector::{ObjectRef, Store},
        watcher,
    },
};

use crate::{ApiContext, Result, is_status, pods};

/// Endpoints per slice, Kubernetes' default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;
/// `kubernetes.io/service-name`.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// `endpointslice.kubernetes.io/managed-by`.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// The managed-by value of this controller (Kubernetes' own, so tools recognise the slices).
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// The node label that names its zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// When the change behind a slice's content happened, on every slice this controller writes
/// (RFC 3339); kube-proxy (and keelson's node agent) measure network programming latency from
/// it.
pub const LAST_CHANGE_TRIGGER_TIME: &str = "endpoints.kubernetes.io/last-change-trigger-time";

struct Ctx {
    client: Client,
    nodes: Store<Node>,
    slices: bool,
    endpoints: bool,
}

/// Runs the controller (EndpointSlices if `slices`, v1 Endpoints if `endpoints`).
pub async fn run(client: Client, slices: bool, endpoints: bool) -> anyhow::Result<()> {
    let services: Api<Service> = Api::all(client.clone());
    let (nodes, node_writer) = kube::runtime::reflector::store();
    let node_stream = kube::runtime::reflector(
        node_writer,
        watcher(Api::<Node>::all(client.clone()), watcher::Config::default()).default_backoff(),
    );
    let _nodes_task = crate::AbortOnDrop(tokio::spawn(crate::drive(
        "endpointslice-nodes",
        node_stream,
    )));
    let controller = Controller::new(services, watcher::Config::default());
    let service_store = controller.store();
    let controller = controller
        .owns(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
        )
        .watches(
            Api::<Pod>::all(client.clone()),
            watcher::Config::default(),
            move |pod| services_selecting(&service_store, &pod),
        );
    let ctx = Arc::new(Ctx {
        client,
        nodes,
        slices,
        endpoints,
    });
    crate::drive(
        "endpointslice",
        controller.run(reconcile, crate::retry, ctx),
    )
    .await;
    Ok(())
}

fn services_selecting(services: &Store<Service>, pod: &Pod) -> Vec<ObjectRef<Service>> {
    let namespace = pod.namespace();
    services
        .state()
        .iter()
        .filter(|s| s.namespace() == namespace)
        .filter(|s| {
            service_selector(s.spec.as_ref().and_then(|spec| spec.selector.as_ref()))
                .is_some_and(|selector| selector.matches(pod.labels()))
        })
        .map(|s| ObjectRef::from_obj(s.as_ref()))
        .collect()
}

async fn reconcile(service: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action> {
    let Some(selector) = service_selector(service.spec.as_ref().and_then(|s| s.selector.as_ref()))
    else {
        return Ok(Action::await_change());
    };
    if service.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // Read the pods from the API, not from a cache of a second watch: a reconcile triggered by a
    // pod's event must see that event's write, which a separate watch may not have delivered yet
    // (a pod turning Ready was then missed until its next change). A list reads the store's
    // current revision, which the triggering write precedes.
    let namespace = service.namespace().unwrap_or_default();
    let query = selector.to_string();
    let selected: Vec<Arc<Pod>> = Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
        .list(&ListParams::default().labels(&query))
        .await
        .action(|| {
            format!(
                "listing the pods of Service {namespace}/{}",
                service.name_any()
            )
        })?
        .items
        .into_iter()
        .map(Arc::new)
        .collect();
    let zones: BTreeMap<String, String> = ctx
        .nodes
        .state()
        .iter()
        .filter_map(|n| Some((n.name_any(), n.labels().get(ZONE_LABEL)?.clone())))
        .collect();
    let groups = desired(&service, &selected, &zones);
    if ctx.slices {
        let trigger = last_change_trigger_time(&service, &selected);
        sync_slices(&ctx.client, &service, &groups, trigger).await?;
    }
    if ctx.endpoints {
        sync_endpoints(&ctx.client, &service, &groups).await?;
    }
    Ok(Action::await_change())
}

/// Endpoints grouped by their resolved ports (sorted by address within a group).
pub type Groups = BTreeMap<Vec<PortKey>, Vec<Endpoint>>;

/// A resolved port, ordered so groups compare.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortKey {
    /// The Service port's name.
    pub name: String,
    /// The resolved container port.
    pub port: i32,
    /// TCP, UDP or SCTP.
    pub protocol: String,
    /// The Service port's appProtocol.
    pub app_protocol: Option<String>,
}

impl PortKey {
    fn to_slice_port(&self) -> EndpointPort {
        EndpointPort {
            name: Some(self.name.clone()),
            port: Some(self.port),
            protocol: Some(self.protocol.clone()),
            app_protocol: self.app_protocol.clone(),
        }
    }
}

/// Resolves the Service's ports for one pod: numeric targetPorts as they are, named ones from
/// the pod's container ports; a name the pod does not have leaves that port out.
pub fn resolve_ports(service: &Service, pod: &Pod) -> Vec<PortKey> {
    let mut keys = Vec::new();
    for port in service
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
    {
        let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
        let resolved = match &port.target_port {
            None => Some(port.port),
            Some(IntOrString::Int(p)) => Some(*p),
            Some(IntOrString::String(name)) => match name.parse::<i32>() {
                Ok(p) => Some(p),
                Err(_) => pod
                    .spec
                    .iter()
                    .flat_map(|s| &s.containers)
                    .flat_map(|c| c.ports.iter().flatten())
                    .find(|cp| {
                        cp.name.as_deref() == Some(name.as_str())
                            && cp.protocol.as_deref().unwrap_or("TCP") == protocol
                    })
                    .map(|cp| cp.container_port),
            },
        };
        if let Some(resolved) = resolved {
            keys.push(PortKey {
                name: port.name.clone().unwrap_or_default(),
                port: resolved,
                protocol,
                app_protocol: port.app_protocol.clone(),
            });
        }
    }
    keys.sort();
    keys
}

/// Whether a pod's endpoint carries its hostname (Kubernetes' `ShouldSetHostname`): the pod
/// sets `spec.hostname` and its `spec.subdomain` names this Service, in the pod's namespace.
/// This is what gives StatefulSet pods their `<hostname>.<service>.<ns>.svc` DNS names.
pub fn hostname_for(service: &Service, pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let hostname = spec.hostname.clone().filter(|h| !h.is_empty())?;
    (spec.subdomain.is_some()
        && spec.subdomain == service.metadata.name
        && pod.metadata.namespace == service.metadata.namespace)
        .then_some(hostname)
}

/// The endpoint a pod contributes to `service`, if it has an IP and has not finished.
pub fn endpoint_of(
    service: &Service,
    pod: &Pod,
    zones: &BTreeMap<String, String>,
) -> Option<Endpoint> {
    let ip = pod
        .status
        .as_ref()?
        .pod_ip
        .clone()
        .filter(|ip| !ip.is_empty())?;
    if matches!(pods::phase(pod), "Succeeded" | "Failed") {
        return None;
    }
    let terminating = pods::is_terminating(&pod.metadata);
    let serving = pods::is_ready(pod);
    let node_name = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    Some(Endpoint {
        addresses: vec![ip],
        conditions: Some(EndpointConditions {
            ready: Some(serving && !terminating),
            serving: Some(serving),
            terminating: Some(terminating),
        }),
        zone: node_name.as_ref().and_then(|n| zones.get(n).cloned()),
        hostname: hostname_for(service, pod),
        node_name,
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: pod.namespace(),
            name: Some(pod.name_any()),
            uid: pod.metadata.uid.clone(),
            ..ObjectReference::default()
        }),
        ..Endpoint::default()
    })
}

/// The desired endpoints of `service` from the pods it selects.
pub fn desired(service: &Service, pods: &[Arc<Pod>], zones: &BTreeMap<String, String>) -> Groups {
    let mut groups = Groups::new();
    for pod in pods {
        if let Some(endpoint) = endpoint_of(service, pod, zones) {
            groups
                .entry(resolve_ports(service, pod))
                .or_default()
                .push(endpoint);
        }
    }
    for endpoints in groups.values_mut() {
        endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
    }
    groups
}

/// What to write so the existing slices match the desired endpoints.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// New slices (no name: created with generateName).
    pub create: Vec<(Vec<PortKey>, Vec<Endpoint>)>,
    /// Existing slices (by name) with new content.
    pub update: Vec<(String, Vec<PortKey>, Vec<Endpoint>)>,
    /// Slices to delete, by name.
    pub delete: Vec<String>,
}

fn slice_ports(slice: &EndpointSlice) -> Vec<PortKey> {
    let mut keys: Vec<PortKey> = slice
        .ports
        .iter()
        .flatten()
        .map(|p| PortKey {
            name: p.name.clone().unwrap_or_default(),
            port: p.port.unwrap_or_default(),
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            app_protocol: p.app_protocol.clone(),
        })
        .collect();
    keys.sort();
    keys
}

/// Plans the writes: endpoints stay in the slice that holds them (updated in place when they
/// change), new endpoints fill free room first, then new slices; emptied slices go, except one
/// placeholder when the Service has no endpoints at all.
pub fn plan(groups: &Groups, existing: &[EndpointSlice]) -> Plan {
    let mut plan = Plan::default();
    let mut placed: BTreeSet<(Vec<PortKey>, Vec<String>)> = BTreeSet::new();
    // (name, ports, endpoints, changed)
    let mut kept: Vec<(String, Vec<PortKey>, Vec<Endpoint>, bool)> = Vec::new();
    for slice in existing {
        let ports = slice_ports(slice);
        let wanted: BTreeMap<&Vec<String>, &Endpoint> = groups
            .get(&ports)
            .map(|eps| eps.iter().map(|e| (&e.addresses, e)).collect())
            .unwrap_or_default();
        let mut endpoints = Vec::new();
        let mut changed = false;
        for endpoint in &slice.endpoints {
            match wanted.get(&endpoint.addresses) {
                Some(want) if !placed.contains(&(ports.clone(), endpoint.addresses.clone())) => {
                    placed.insert((ports.clone(), endpoint.addresses.clone()));
                    changed |= *want != endpoint;
                    endpoints.push((*want).clone());
                }
                _ => changed = true,
            }
        }
        kept.push((slice.name_any(), ports, endpoints, changed));
    }
    for (ports, endpoints) in groups {
        let mut new: Vec<&Endpoint> = endpoints
            .iter()
            .filter(|e| !placed.contains(&(ports.clone(), e.addresses.clone())))
            .collect();
        // Fill slices with room, the ones being written anyway first.
        let mut order: Vec<usize> = (0..kept.len()).filter(|i| kept[*i].1 == *ports).collect();
        order.sort_by_key(|i| !kept[*i].3);
        for i in order {
            while kept[i].2.len() < MAX_ENDPOINTS_PER_SLICE && !new.is_empty() {
                kept[i].2.push(new.remove(0).clone());
                kept[i].3 = true;
            }
        }
        for chunk in new.chunks(MAX_ENDPOINTS_PER_SLICE) {
            plan.create
                .push((ports.clone(), chunk.iter().map(|e| (*e).clone()).collect()));
        }
    }
    let any_endpoints = groups.values().any(|e| !e.is_empty());
    let mut placeholder_kept = false;
    for (name, ports, mut endpoints, changed) in kept {
        if endpoints.is_empty() {
            if !any_endpoints && !placeholder_kept && plan.create.is_empty() {
                placeholder_kept = true;
                if !ports.is_empty() || changed {
                    plan.update.push((name, Vec::new(), Vec::new()));
                }
            } else {
                plan.delete.push(name);
            }
            continue;
        }
        if changed {
            endpoints.sort_by(|a, b| a.addresses.cmp(&b.addresses));
            plan.update.push((name, ports, endpoints));
        }
    }
    if !any_endpoints && !placeholder_kept && plan.create.is_empty() {
        plan.create.push((Vec::new(), Vec::new()));
    }
    plan
}

fn slice_object(
    service: &Service,
    name: Option<String>,
    ports: &[PortKey],
    endpoints: Vec<Endpoint>,
) -> EndpointSlice {
    let service_name = service.name_any();
    let labels = BTreeMap::from([
        (SERVICE_NAME_LABEL.to_owned(), service_name.clone()),
        (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
    ]);
    EndpointSlice {
        metadata: ObjectMeta {
            generate_name: name.is_none().then(|| format!("{service_name}-")),
            name,
            namespace: service.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![pods::owner_reference(
                "v1",
                "Service",
                &service.metadata,
            )]),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".into(),
        endpoints,
        ports: (!ports.is_empty()).then(|| ports.iter().map(PortKey::to_slice_port).collect()),
    }
}

/// The time of the newest change among the Service (its creation) and its pods (their `Ready`
/// condition's last transition), the times Kubernetes' endpoint controllers take as the
/// triggers of an endpoints change. Upstream tracks which pods changed since its last sync and
/// takes the oldest of those; keelson keeps no such state and takes the newest, which is the
/// change that caused this write when one change comes at a time (the node agent counts each
/// distinct value once).
pub fn last_change_trigger_time(service: &Service, pods: &[Arc<Pod>]) -> Option<jiff::Timestamp> {
    let service = service.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let pods = pods.iter().filter_map(|pod| {
        let conditions = pod.status.as_ref()?.conditions.as_ref()?;
        let ready = conditions.iter().find(|c| c.type_ == "Ready")?;
        ready.last_transition_time.as_ref().map(|t| t.0)
    });
    service.into_iter().chain(pods).max()
}

async fn sync_slices(
    client: &Client,
    service: &Service,
    groups: &Groups,
    trigger: Option<jiff::Timestamp>,
) -> Result<()> {
    let annotate = |slice: &mut EndpointSlice| {
        if let Some(trigger) = trigger {
            slice.metadata.annotations = Some(BTreeMap::from([(
                LAST_CHANGE_TRIGGER_TIME.to_owned(),
                trigger.to_string(),
            )]));
        }
    };
    let namespace = service.namespace().unwrap_or_default();
    let name = service.name_any();
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), &namespace);
    let existing = api
        .list(&ListParams::default().labels(&format!(
            "{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}"
        )))
        .await
        .action(|| format!("list the EndpointSlices of {namespace}/{name}"))?;
    let existing: Vec<EndpointSlice> = existing
        .items
        .into_iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .collect();
    let plan = plan(groups, &existing);
    for (slice_name, ports, endpoints) in plan.update {
        let Some(current) = existing.iter().find(|s| s.name_any() == slice_name) else {
            continue;
        };
        let mut next = slice_object(service, Some(slice_name.clone()), &ports, endpoints);
        annotate(&mut next);
        next.metadata.resource_version = current.metadata.resource_version.clone();
        next.metadata.uid = current.metadata.uid.clone();
        api.replace(&slice_name, &PostParams::default(), &next)
            .await
            .action(|| format!("update EndpointSlice {namespace}/{slice_name}"))?;
    }
    for (ports, endpoints) in plan.create {
        let mut slice = slice_object(service, None, &ports, endpoints);
        annotate(&mut slice);
        api.create(&PostParams::default(), &slice)
            .await
            .action(|| format!("create an EndpointSlice for {namespace}/{name}"))?;
    }
    for slice_name in plan.delete {
        match api.delete(&slice_name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => {
                return Err(e).action(|| format!("delete EndpointSlice {namespace}/{slice_name}"));
            }
        }
    }
    Ok(())
}

/// The v1 Endpoints subsets: ready endpoints as `addresses`, not-ready ones as
/// `notReadyAddresses`; terminating ones are left out.
pub fn subsets(groups: &Groups) -> Vec<EndpointSubset> {
    let mut subsets = Vec::new();
    for (ports, endpoints) in groups {
        let address = |e: &Endpoint| EndpointAddress {
            ip: e.addresses[0].clone(),
            hostname: e.hostname.clone(),
            node_name: e.node_name.clone(),
            target_ref: e.target_ref.clone(),
        };
        let cond = |e: &Endpoint| e.conditions.clone().unwrap_or_default();
        let ready: Vec<EndpointAddress> = endpoints
            .iter()
            .filter(|e| cond(e).ready == Some(true))
            .map(address)
            .collect();
        let not_ready: Vec<EndpointAddress> = endpoints
            .iter()
            .filter(|e| cond(e).ready != Some(true) && cond(e).terminating != Some(true))
            .map(address)
            .collect();
        if ready.is_empty() && not_ready.is_empty() {
            continue;
        }
        subsets.push(EndpointSubset {
            addresses: (!ready.is_empty()).then_some(ready),
            not_ready_addresses: (!not_ready.is_empty()).then_some(not_ready),
            ports: (!ports.is_empty()).then(|| {
                ports
                    .iter()
                    .map(|p| CorePort {
                        name: (!p.name.is_empty()).then(|| p.name.clone()),
                        port: p.port,
                        protocol: Some(p.protocol.clone()),
                        app_protocol: p.app_protocol.clone(),
                    })
                    .collect()
            }),
        });
    }
    subsets
}

async fn sync_endpoints(client: &Client, service: &Service, groups: &Groups) -> Result<()> {
    let namespace = service.namespace().unwrap_or_default();
    let name = service.name_any();
    let api: Api<Endpoints> = Api::namespaced(client.clone(), &namespace);
    let subsets = subsets(groups);
    let subsets = (!subsets.is_empty()).then_some(subsets);
    let current = match api.get(&name).await {
        Ok(current) => Some(current),
        Err(e) if is_status(&e, 404) => None,
        Err(e) => return Err(e).action(|| format!("get Endpoints {namespace}/{name}")),
    };
    let mut labels = service.labels().clone();
    labels.insert(SERVICE_NAME_LABEL.to_owned(), name.clone());
    match current {
        Some(current) if current.subsets == subsets => Ok(()),
        Some(mut current) => {
            current.subsets = subsets;
            api.replace(&name, &PostParams::default(), &current)
                .await
                .map(drop)
                .action(|| format!("update Endpoints {namespace}/{name}"))
        }
        None => {
            let endpoints = Endpoints {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    labels: Some(labels),
                    owner_references: Some(vec![pods::owner_reference(
                        "v1",
                        "Service",
                        &service.metadata,
                    )]),
                    ..ObjectMeta::default()
                },
                subsets,
            };
            api.create(&PostParams::default(), &endpoints)
                .await
                .map(drop)
                .action(|| format!("create Endpoints {namespace}/{name}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };

    fn service() -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("svc-uid".into()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                selector: Some(BTreeMap::from([("app".into(), "web".into())])),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(IntOrString::String("web".into())),
                    protocol: Some("TCP".into()),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        }
    }

    fn pod(name: &str, ip: &str, ready: bool, port: i32) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("{name}-uid")),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node-a".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some("web".into()),
                        container_port: port,
                        ..ContainerPort::default()
                    }]),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..PodCondition::default()
                }]),
                ..PodStatus::default()
            }),
        })
    }

    #[test]
    fn the_trigger_time_is_the_newest_ready_transition_or_the_service_creation() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let at = |s: &str| Time(s.parse().expect("timestamp"));
        let mut svc = service();
        svc.metadata.creation_timestamp = Some(at("2026-01-01T10:00:00Z"));
        let moved = |name, ip, when: Option<&str>| {
            let mut p = Arc::unwrap_or_clone(pod(name, ip, true, 8080));
            if let Some(conditions) = p.status.as_mut().and_then(|s| s.conditions.as_mut()) {
                conditions[0].last_transition_time = when.map(at);
            }
            Arc::new(p)
        };
        let cases = [
            (vec![], Some("2026-01-01T10:00:00Z")),
            (
                vec![moved("a", "10.0.0.1", Some("2026-01-01T10:00:05Z"))],
                Some("2026-01-01T10:00:05Z"),
            ),
            (
                vec![
                    moved("a", "10.0.0.1", Some("2026-01-01T10:00:05Z")),
                    moved("b", "10.0.0.2", Some("2026-01-01T10:01:30.5Z")),
                    moved("c", "10.0.0.3", None),
                ],
                Some("2026-01-01T10:01:30.5Z"),
            ),
        ];
        for (pods, want) in cases {
            assert_eq!(
                last_change_trigger_time(&svc, &pods).map(|t| t.to_string()),
                want.map(str::to_owned)
            );
        }
        svc.metadata.creation_timestamp = None;
        assert_eq!(last_change_trigger_time(&svc, &[]), None);
    }

    fn zones() -> BTreeMap<String, String> {
        BTreeMap::from([("node-a".into(), "zone-1".into())])
    }

    #[test]
    fn endpoints_carry_conditions_zone_and_named_ports() {
        let mut terminating = (*pod("c", "10.0.0.3", true, 8080)).clone();
        terminating.metadata.deletion_timestamp = Some(pods::now());
        let pods = vec![
            pod("a", "10.0.0.1", true, 8080),
            pod("b", "10.0.0.2", false, 8080),
            Arc::new(terminating),
            pod("d", "10.0.0.4", true, 9090),
        ];
        let groups = desired(&service(), &pods, &zones());
        assert_eq!(groups.len(), 2, "two resolved port sets: {groups:?}");
        let eights = &groups[&vec![PortKey {
            name: "http".into(),
            port: 8080,
            protocol: "TCP".into(),
            app_protocol: None,
        }]];
        let conditions: Vec<(bool, bool, bool)> = eights
            .iter()
            .map(|e| {
                let c = e.conditions.clone().unwrap();
                (c.ready.unwrap(), c.serving.unwrap(), c.terminating.unwrap())
            })
            .collect();
        assert_eq!(
            conditions,
            vec![
                (true, true, false),
                (false, false, false),
                (false, true, true)
            ]
        );
        assert_eq!(eights[0].zone.as_deref(), Some("zone-1"));
        assert_eq!(eights[0].node_name.as_deref(), Some("node-a"));
        let subsets = subsets(&groups);
        let ready: usize = subsets
            .iter()
            .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
            .sum();
        let not_ready: usize = subsets
            .iter()
            .map(|s| s.not_ready_addresses.as_ref().map_or(0, Vec::len))
            .sum();
        assert_eq!((ready, not_ready), (2, 1), "terminating pods are left out");
    }

    #[test]
    fn endpoints_carry_the_hostname_of_pods_in_the_services_subdomain() {
        let with = |hostname: Option<&str>, subdomain: Option<&str>, namespace: &str| {
            let mut p = (*pod("web-0", "10.0.0.1", true, 8080)).clone();
            p.metadata.namespace = Some(namespace.into());
            let spec = p.spec.as_mut().expect("spec");
            spec.hostname = hostname.map(str::to_owned);
            spec.subdomain = subdomain.map(str::to_owned);
            let endpoint = endpoint_of(&service(), &p, &zones()).expect("an endpoint");
            let address = &subsets(&Groups::from([(Vec::new(), vec![endpoint.clone()])]))[0]
                .addresses
                .clone()
                .expect("ready")[0];
            assert_eq!(
                endpoint.hostname, address.hostname,
                "slice and Endpoints agree"
            );
            endpoint.hostname
        };
        let cases = [
            (Some("web-0"), Some("web"), "default", Some("web-0")),
            (Some("web-0"), Some("other"), "default", None),
            (Some("web-0"), None, "default", None),
            (None, Some("web"), "default", None),
            (Some(""), Some("web"), "default", None),
            (Some("web-0"), Some("web"), "elsewhere", None),
        ];
        for (hostname, subdomain, namespace, want) in cases {
            assert_eq!(
                with(hostname, subdomain, namespace).as_deref(),
                want,
                "hostname {hostname:?}, subdomain {subdomain:?}, namespace {namespace}"
            );
        }
    }

    fn many(n: usize) -> Vec<Arc<Pod>> {
        (0..n)
            .map(|i| {
                pod(
                    &format!("p{i}"),
                    &format!("10.1.{}.{}", i / 250, i % 250),
                    true,
                    8080,
                )
            })
            .collect()
    }

    fn apply(plan: Plan, existing: &mut Vec<EndpointSlice>, service: &Service) {
        existing.retain(|s| !plan.delete.contains(&s.name_any()));
        for (name, ports, endpoints) in plan.update {
            let slot = existing.iter_mut().find(|s| s.name_any() == name).unwrap();
            *slot = slice_object(service, Some(name), &ports, endpoints);
        }
        for (i, (ports, endpoints)) in plan.create.into_iter().enumerate() {
            let name = format!("web-{}-{i}", existing.len());
            existing.push(slice_object(service, Some(name), &ports, endpoints));
        }
    }

    #[test]
    fn slices_split_at_100_and_only_changed_ones_are_written() {
        let service = service();
        let pods = many(250);
        let groups = desired(&service, &pods, &zones());
        let mut existing = Vec::new();
        let first = plan(&groups, &existing);
        assert_eq!(
            first.create.iter().map(|c| c.1.len()).collect::<Vec<_>>(),
            vec![100, 100, 50]
        );
        apply(first, &mut existing, &service);
        assert_eq!(
            plan(&groups, &existing),
            Plan::default(),
            "nothing to write"
        );
        // One pod goes: only its slice is written.
        let fewer: Vec<Arc<Pod>> = pods.iter().skip(1).cloned().collect();
        let second = plan(&desired(&service, &fewer, &zones()), &existing);
        assert!(second.create.is_empty() && second.delete.is_empty());
        assert_eq!(second.update.len(), 1);
        apply(second, &mut existing, &service);
        // A new pod fills the room rather than making a slice.
        let mut more = fewer.clone();
        more.push(pod("new", "10.9.9.9", true, 8080));
        let third = plan(&desired(&service, &more, &zones()), &existing);
        assert!(third.create.is_empty());
        assert_eq!(third.update.len(), 1);
        apply(third, &mut existing, &service);
        let total: usize = existing.iter().map(|s| s.endpoints.len()).sum();
        assert_eq!(total, 250);
        assert!(
            existing
                .iter()
                .all(|s| s.endpoints.len() <= MAX_ENDPOINTS_PER_SLICE)
        );
    }

    #[test]
    fn a_service_without_endpoints_keeps_one_placeholder() {
        let service = service();
        let mut existing = Vec::new();
        let first = plan(&Groups::new(), &existing);
        assert_eq!(first.create, vec![(Vec::new(), Vec::new())]);
        apply(first, &mut existing, &service);
        assert_eq!(plan(&Groups::new(), &existing), Plan::default());
        let groups = desired(&service, &many(3), &zones());
        let filled = plan(&groups, &existing);
        assert_eq!(filled.create.len(), 1);
        assert_eq!(filled.delete.len(), 1, "the placeholder goes: {filled:?}");
    }
}

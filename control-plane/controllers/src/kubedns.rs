//! The `kube-dns` endpoints controller (keelson's own): cluster DNS is answered by every node
//! agent on the first host address of its node's pod CIDR, so the selectorless Service
//! `kube-system/kube-dns` (created by the API server, see [`keelson_api::cluster_dns`]) gets one
//! EndpointSlice listing each node's responder, with `nodeName` set and `ready` following the
//! node's `Ready` condition. With the Service's `internalTrafficPolicy: Local`, a pod's query to
//! the ClusterIP reaches its own node's responder.
//!
//! The slice carries its own `endpointslice.kubernetes.io/managed-by` value ([`MANAGED_BY`]), so
//! the EndpointSlice controller (which only acts on Services with a selector, and only on its own
//! slices) leaves it alone. If an administrator gives the Service a selector (to run CoreDNS
//! pods instead), this controller deletes its slice and steps aside.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use k8s_openapi::{
    api::{
        core::v1::{Node, Service},
        discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use keelson_api::cluster_dns::{
    NAMESPACE, PORT, SERVICE_NAME, TCP_PORT_NAME, UDP_PORT_NAME, responder_address,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, PostParams},
    runtime::{Controller, controller::Action, reflector::ObjectRef, watcher},
};

use crate::{
    ApiContext, Result,
    endpointslice::{MANAGED_BY_LABEL, SERVICE_NAME_LABEL, ZONE_LABEL},
    is_status, pods,
};

/// The controller's name (`--controllers`).
pub const NAME: &str = "kube-dns-endpoints";
/// The `endpointslice.kubernetes.io/managed-by` value of the slice this controller writes.
pub const MANAGED_BY: &str = "kube-dns-endpoints.keelson.io";
/// The name of that slice.
pub const SLICE_NAME: &str = "kube-dns-node-responders";
/// A full resync, so a missed event is repaired.
const RESYNC: Duration = Duration::from_secs(300);

/// One write that brings the slices in line.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Create this slice.
    Create(EndpointSlice),
    /// Replace the stored slice with this one (it carries the stored `resourceVersion`).
    Update(EndpointSlice),
    /// Delete the slice of this name.
    Delete(String),
}

/// The endpoint of each node that has a pod CIDR, by node name: its responder address,
/// `nodeName`, zone, and `ready`/`serving` = the node's `Ready` condition is `True`.
pub fn endpoints(nodes: &[Node]) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = nodes
        .iter()
        .filter(|node| node.metadata.deletion_timestamp.is_none())
        .filter_map(|node| {
            let spec = node.spec.as_ref()?;
            let cidr = spec
                .pod_cidr
                .as_deref()
                .or_else(|| spec.pod_cidrs.as_ref()?.first().map(String::as_str))?;
            let address = responder_address(cidr).ok()?;
            let ready = node_ready(node);
            Some(Endpoint {
                addresses: vec![address.to_string()],
                conditions: Some(EndpointConditions {
                    ready: Some(ready),
                    serving: Some(ready),
                    terminating: Some(false),
                }),
                node_name: Some(node.name_any()),
                zone: node.labels().get(ZONE_LABEL).cloned(),
                ..Endpoint::default()
            })
        })
        .collect();
    out.sort_by(|a, b| a.node_name.cmp(&b.node_name));
    out
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The slice the Service should have; `None` when it has a selector (pods serve it then, and
/// the EndpointSlice controller lists them).
pub fn desired_slice(service: &Service, nodes: &[Node]) -> Option<EndpointSlice> {
    let has_selector = service
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|s| !s.is_empty());
    if has_selector {
        return None;
    }
    let port = |name: &str, protocol: &str| EndpointPort {
        name: Some(name.to_owned()),
        port: Some(i32::from(PORT)),
        protocol: Some(protocol.to_owned()),
        ..EndpointPort::default()
    };
    Some(EndpointSlice {
        metadata: ObjectMeta {
            name: Some(SLICE_NAME.to_owned()),
            namespace: Some(NAMESPACE.to_owned()),
            labels: Some(BTreeMap::from([
                (SERVICE_NAME_LABEL.to_owned(), SERVICE_NAME.to_owned()),
                (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
            ])),
            owner_references: Some(vec![pods::owner_reference(
                "v1",
                "Service",
                &service.metadata,
            )]),
            ..ObjectMeta::default()
        },
        address_type: "IPv4".to_owned(),
        endpoints: endpoints(nodes),
        ports: Some(vec![port(UDP_PORT_NAME, "UDP"), port(TCP_PORT_NAME, "TCP")]),
    })
}

/// The writes that turn `existing` (this controller's slices of the Service) into `desired`:
/// the slice is created, or replaced when its endpoints, ports, labels or owner differ; any
/// other slice of ours is deleted.
pub fn plan(desired: Option<EndpointSlice>, existing: &[EndpointSlice]) -> Vec<Change> {
    let mut changes = Vec::new();
    let desired_name = desired.as_ref().map(ResourceExt::name_any);
    for slice in existing {
        if Some(slice.name_any()) != desired_name {
            changes.push(Change::Delete(slice.name_any()));
        }
    }
    let Some(mut desired) = desired else {
        return changes;
    };
    match existing.iter().find(|s| Some(s.name_any()) == desired_name) {
        None => changes.push(Change::Create(desired)),
        Some(current) => {
            let same = current.endpoints == desired.endpoints
                && current.ports == desired.ports
                && current.address_type == desired.address_type
                && current.metadata.labels == desired.metadata.labels
                && current.metadata.owner_references == desired.metadata.owner_references;
            if !same {
                desired.metadata.resource_version = current.metadata.resource_version.clone();
                desired.metadata.uid = current.metadata.uid.clone();
                changes.push(Change::Update(desired));
            }
        }
    }
    changes
}

struct Ctx {
    client: Client,
}

/// Runs the controller: the Service `kube-system/kube-dns`, again whenever a Node or one of
/// this controller's slices changes, and every few minutes.
pub async fn run(client: Client) -> anyhow::Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), NAMESPACE);
    let target = || ObjectRef::<Service>::new(SERVICE_NAME).within(NAMESPACE);
    let controller = Controller::new(
        services,
        watcher::Config::default().fields(&format!("metadata.name={SERVICE_NAME}")),
    )
    .owns(
        Api::<EndpointSlice>::namespaced(client.clone(), NAMESPACE),
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
    )
    .watches(
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
        move |_node| Some(target()),
    );
    let ctx = Arc::new(Ctx { client });
    crate::drive(NAME, controller.run(reconcile, crate::retry, ctx)).await;
    Ok(())
}

async fn reconcile(service: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action> {
    if service.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    // Nodes are read from the API, not a second watch's cache, so the node event that
    // triggered this reconcile is seen.
    let nodes = Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .action(|| "list Nodes".to_owned())?
        .items;
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), NAMESPACE);
    let existing: Vec<EndpointSlice> = api
        .list(&ListParams::default().labels(&format!(
            "{SERVICE_NAME_LABEL}={SERVICE_NAME},{MANAGED_BY_LABEL}={MANAGED_BY}"
        )))
        .await
        .action(|| format!("list the EndpointSlices of {NAMESPACE}/{SERVICE_NAME}"))?
        .items
        .into_iter()
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .collect();
    for change in plan(desired_slice(&service, &nodes), &existing) {
        match change {
            Change::Create(slice) => match api.create(&PostParams::default(), &slice).await {
                Err(e) if is_status(&e, 409) => {}
                other => {
                    other.action(|| format!("create EndpointSlice {NAMESPACE}/{SLICE_NAME}"))?;
                    tracing::info!(
                        endpoints = slice.endpoints.len(),
                        "listed the nodes' DNS responders in kube-dns"
                    );
                }
            },
            Change::Update(slice) => {
                api.replace(SLICE_NAME, &PostParams::default(), &slice)
                    .await
                    .action(|| format!("update EndpointSlice {NAMESPACE}/{SLICE_NAME}"))?;
                tracing::info!(
                    endpoints = slice.endpoints.len(),
                    "updated the nodes' DNS responders in kube-dns"
                );
            }
            Change::Delete(name) => match api.delete(&name, &DeleteParams::default()).await {
                Err(e) if is_status(&e, 404) => {}
                other => {
                    other.action(|| format!("delete EndpointSlice {NAMESPACE}/{name}"))?;
                }
            },
        }
    }
    Ok(Action::requeue(RESYNC))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn node(name: &str, pod_cidr: Option<&str>, ready: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {ZONE_LABEL: "zone-a"}},
            "spec": {"podCIDR": pod_cidr},
            "status": {"conditions": [{"type": "Ready", "status": ready}]},
        }))
        .expect("valid Node")
    }

    fn service(selector: Option<serde_json::Value>) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": SERVICE_NAME, "namespace": NAMESPACE, "uid": "svc-uid"},
            "spec": {"clusterIP": "10.96.0.10", "selector": selector},
        }))
        .expect("valid Service")
    }

    /// (case, nodes, (node, address, ready) of each expected endpoint).
    type ListCase = (
        &'static str,
        Vec<Node>,
        Vec<(&'static str, &'static str, bool)>,
    );
    /// (case, desired slice, stored slices, expected writes).
    type PlanCase = (
        &'static str,
        Option<EndpointSlice>,
        Vec<EndpointSlice>,
        Vec<&'static str>,
    );

    /// (node, address, ready) of each endpoint.
    fn summary(slice: &EndpointSlice) -> Vec<(String, String, bool)> {
        slice
            .endpoints
            .iter()
            .map(|e| {
                (
                    e.node_name.clone().unwrap_or_default(),
                    e.addresses.join(","),
                    e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true),
                )
            })
            .collect()
    }

    #[test]
    fn every_node_with_a_pod_cidr_is_listed_at_its_gateway() {
        let cases: Vec<ListCase> = vec![
            ("no nodes", vec![], vec![]),
            (
                "ready and not ready, sorted by name",
                vec![
                    node("worker-b", Some("10.244.2.0/24"), "False"),
                    node("worker-a", Some("10.244.1.0/24"), "True"),
                    node("worker-c", Some("10.244.3.0/24"), "Unknown"),
                ],
                vec![
                    ("worker-a", "10.244.1.1", true),
                    ("worker-b", "10.244.2.1", false),
                    ("worker-c", "10.244.3.1", false),
                ],
            ),
            (
                "a node without a pod CIDR has no responder yet",
                vec![
                    node("fresh", None, "True"),
                    node("bad", Some("not-a-cidr"), "True"),
                    node("worker-a", Some("10.250.16.0/20"), "True"),
                ],
                vec![("worker-a", "10.250.16.1", true)],
            ),
        ];
        for (name, nodes, expected) in cases {
            let slice = desired_slice(&service(None), &nodes).expect("selectorless");
            let expected: Vec<(String, String, bool)> = expected
                .into_iter()
                .map(|(n, a, r)| (n.to_owned(), a.to_owned(), r))
                .collect();
            assert_eq!(summary(&slice), expected, "{name}");
        }
    }

    #[test]
    fn the_slice_is_shaped_for_the_service() {
        let slice = desired_slice(
            &service(None),
            &[node("worker-a", Some("10.244.1.0/24"), "True")],
        )
        .expect("selectorless");
        assert_eq!(
            serde_json::to_value(&slice).expect("serializes"),
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {
                    "name": "kube-dns-node-responders", "namespace": "kube-system",
                    "labels": {"kubernetes.io/service-name": "kube-dns",
                               "endpointslice.kubernetes.io/managed-by": "kube-dns-endpoints.keelson.io"},
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "kube-dns",
                                         "uid": "svc-uid", "controller": true,
                                         "blockOwnerDeletion": true}],
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.244.1.1"], "nodeName": "worker-a", "zone": "zone-a",
                               "conditions": {"ready": true, "serving": true, "terminating": false}}],
                "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                          {"name": "dns-tcp", "port": 53, "protocol": "TCP"}],
            })
        );
        assert_ne!(
            MANAGED_BY,
            crate::endpointslice::MANAGED_BY,
            "the EndpointSlice controller must not take the slice for its own"
        );
    }

    #[test]
    fn plan_creates_updates_and_steps_aside() {
        let nodes = [node("worker-a", Some("10.244.1.0/24"), "True")];
        let desired = desired_slice(&service(None), &nodes).expect("selectorless");
        let stored = |mut slice: EndpointSlice, name: &str| {
            slice.metadata.name = Some(name.to_owned());
            slice.metadata.resource_version = Some("42".to_owned());
            slice
        };
        let names = |changes: &[Change]| -> Vec<String> {
            changes
                .iter()
                .map(|c| match c {
                    Change::Create(s) => format!("create {}", s.name_any()),
                    Change::Update(s) => format!(
                        "update {} at {}",
                        s.name_any(),
                        s.metadata.resource_version.as_deref().unwrap_or("-")
                    ),
                    Change::Delete(n) => format!("delete {n}"),
                })
                .collect()
        };
        let mut not_ready = stored(desired.clone(), SLICE_NAME);
        not_ready.endpoints = endpoints(&[node("worker-a", Some("10.244.1.0/24"), "False")]);
        let cases: Vec<PlanCase> = vec![
            (
                "missing",
                Some(desired.clone()),
                vec![],
                vec!["create kube-dns-node-responders"],
            ),
            (
                "up to date",
                Some(desired.clone()),
                vec![stored(desired.clone(), SLICE_NAME)],
                vec![],
            ),
            (
                "a node changed",
                Some(desired.clone()),
                vec![not_ready],
                vec!["update kube-dns-node-responders at 42"],
            ),
            (
                "a stray slice of ours",
                Some(desired.clone()),
                vec![
                    stored(desired.clone(), SLICE_NAME),
                    stored(desired.clone(), "kube-dns-old"),
                ],
                vec!["delete kube-dns-old"],
            ),
            (
                "the Service got a selector",
                desired_slice(&service(Some(json!({"k8s-app": "kube-dns"}))), &nodes),
                vec![stored(desired.clone(), SLICE_NAME)],
                vec!["delete kube-dns-node-responders"],
            ),
        ];
        for (name, desired, existing, expected) in cases {
            assert_eq!(names(&plan(desired, &existing)), expected, "{name}");
        }
    }
}

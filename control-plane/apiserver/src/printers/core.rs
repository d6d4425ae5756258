//! The core group's kinds other than pods, events and volumes: services, nodes, namespaces,
//! endpoints, config maps, secrets, service accounts, replication controllers, pod templates
//! and resource quotas. LimitRange has no printer in Kubernetes (default table).

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{
    AGE, CONTAINERS, Column, IMAGES, LIST_MAX, NAME, TEMPLATE_CONTAINERS, age, col,
    containers_and_images, count, flag, format_labels, int, int_or, list, name, or_none, quantity,
    text, with_more,
};

pub(super) const SERVICE: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        0,
        "type determines how the Service is exposed.",
    ),
    col(
        "Cluster-IP",
        "string",
        0,
        "clusterIP is the IP address of the service.",
    ),
    col(
        "External-IP",
        "string",
        0,
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept \
         traffic for this service.",
    ),
    col(
        "Port(s)",
        "string",
        0,
        "The list of ports that are exposed by this service.",
    ),
    AGE,
    col(
        "Selector",
        "string",
        1,
        "Route service traffic to pods with label keys and values matching this selector.",
    ),
];

pub(super) const NODE: &[Column] = &[
    NAME,
    col("Status", "string", 0, "The status of the node"),
    col("Roles", "string", 0, "The roles of the node"),
    AGE,
    col(
        "Version",
        "string",
        0,
        "Kubelet Version reported by the node.",
    ),
    col(
        "Internal-IP",
        "string",
        1,
        "List of addresses reachable to the node.",
    ),
    col(
        "External-IP",
        "string",
        1,
        "List of addresses reachable to the node.",
    ),
    col("OS-Image", "string", 1, "OS Image reported by the node."),
    col(
        "Kernel-Version",
        "string",
        1,
        "Kernel Version reported by the node.",
    ),
    col(
        "Container-Runtime",
        "string",
        1,
        "ContainerRuntime Version reported by the node.",
    ),
];

pub(super) const NAMESPACE: &[Column] = &[
    NAME,
    col("Status", "string", 0, "The status of the namespace"),
    AGE,
];

pub(super) const ENDPOINTS: &[Column] = &[
    NAME,
    col(
        "Endpoints",
        "string",
        0,
        "The set of all endpoints is the union of all subsets.",
    ),
    AGE,
];

pub(super) const CONFIG_MAP: &[Column] = &[
    NAME,
    col("Data", "string", 0, "Data contains the configuration data."),
    AGE,
];

pub(super) const SECRET: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        0,
        "Used to facilitate programmatic handling of secret data.",
    ),
    col("Data", "string", 0, "Data contains the secret data."),
    AGE,
];

/// `Port(s)`: `80/TCP`, or `80:30080/TCP` with a node port.
fn service_ports(service: &Value) -> String {
    let ports = list(service, "/spec/ports")
        .iter()
        .map(|p| {
            let port = int(p, "/port");
            let protocol = match text(p, "/protocol") {
                "" => "TCP",
                other => other,
            };
            match int(p, "/nodePort") {
                n if n > 0 => format!("{port}:{n}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    or_none(&ports)
}

fn service_external_ip(service: &Value) -> String {
    let external: Vec<&str> = list(service, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match text(service, "/spec/type") {
        "" | "ClusterIP" | "NodePort" => or_none(&external.join(",")),
        "LoadBalancer" => {
            let mut ingress: Vec<&str> = list(service, "/status/loadBalancer/ingress")
                .iter()
                .map(|i| match text(i, "/ip") {
                    "" => text(i, "/hostname"),
                    ip => ip,
                })
                .filter(|a| !a.is_empty())
                .collect();
            ingress.sort_unstable();
            ingress.dedup();
            ingress.extend(external);
            if ingress.is_empty() {
                "<pending>".to_owned()
            } else {
                ingress.join(",")
            }
        }
        "ExternalName" => text(service, "/spec/externalName").to_owned(),
        _ => "<unknown>".to_owned(),
    }
}

/// Service: Name, Type, Cluster-IP, External-IP, Port(s), Age, Selector.
pub(super) fn service_cells(service: &Value, now: Timestamp) -> Vec<Value> {
    let cluster_ip = list(service, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .or_else(|| service.pointer("/spec/clusterIP").and_then(Value::as_str))
        .unwrap_or("");
    let kind = match text(service, "/spec/type") {
        "" => "ClusterIP",
        other => other,
    };
    vec![
        name(service),
        json!(kind),
        json!(or_none(cluster_ip)),
        json!(service_external_ip(service)),
        json!(service_ports(service)),
        age(service, now),
        json!(format_labels(service.pointer("/spec/selector"))),
    ]
}

/// Node: Name, Status, Roles, Age, Version, Internal-IP, External-IP, OS-Image,
/// Kernel-Version, Container-Runtime.
pub(super) fn node_cells(node: &Value, now: Timestamp) -> Vec<Value> {
    let mut status = match list(node, "/status/conditions")
        .iter()
        .find(|c| text(c, "/type") == "Ready")
    {
        Some(c) if text(c, "/status") == "True" => "Ready".to_owned(),
        Some(_) => "NotReady".to_owned(),
        None => "Unknown".to_owned(),
    };
    if flag(node, "/spec/unschedulable") {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<&str> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(key, value)| {
                    if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                        (!role.is_empty()).then_some(role)
                    } else if key == "kubernetes.io/role" {
                        value.as_str().filter(|v| !v.is_empty())
                    } else {
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    roles.sort_unstable();
    roles.dedup();
    let address = |kind: &str| {
        list(node, "/status/addresses")
            .iter()
            .find(|a| text(a, "/type") == kind)
            .map_or_else(|| "<none>".to_owned(), |a| text(a, "/address").to_owned())
    };
    let info = |field: &str| match text(node, &format!("/status/nodeInfo/{field}")) {
        "" => "<unknown>".to_owned(),
        value => value.to_owned(),
    };
    vec![
        name(node),
        json!(status),
        json!(or_none(&roles.join(","))),
        age(node, now),
        json!(text(node, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

/// Namespace: Name, Status, Age.
pub(super) fn namespace_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(object),
        json!(text(object, "/status/phase")),
        age(object, now),
    ]
}

/// `formatEndpoints`: `ip:port` for every address and port of every subset.
fn format_endpoints(endpoints: &Value) -> String {
    let subsets = list(endpoints, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_owned();
    }
    let mut shown = Vec::new();
    let mut total = 0;
    for subset in subsets {
        let addresses = list(subset, "/addresses");
        let ports = list(subset, "/ports");
        let mut add = |entry: String| {
            total += 1;
            if shown.len() < LIST_MAX {
                shown.push(entry);
            }
        };
        if ports.is_empty() {
            for address in addresses {
                add(text(address, "/ip").to_owned());
            }
            continue;
        }
        for port in ports {
            for address in addresses {
                let ip = text(address, "/ip");
                let port = int(port, "/port");
                add(if ip.contains(':') {
                    format!("[{ip}]:{port}")
                } else {
                    format!("{ip}:{port}")
                });
            }
        }
    }
    with_more(&shown, total, "")
}

/// Endpoints: Name, Endpoints, Age.
pub(super) fn endpoints_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(object),
        json!(format_endpoints(object)),
        age(object, now),
    ]
}

/// ConfigMap: Name, Data (entries in `data` and `binaryData`), Age.
pub(super) fn config_map_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    let entries = count(object, "/data") + count(object, "/binaryData");
    vec![name(object), json!(entries), age(object, now)]
}

/// Secret: Name, Type, Data, Age.
pub(super) fn secret_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(object),
        json!(text(object, "/type")),
        json!(count(object, "/data")),
        age(object, now),
    ]
}

pub(super) const SERVICE_ACCOUNT: &[Column] = &[
    NAME,
    col(
        "Secrets",
        "string",
        0,
        "Secrets is a list of the secrets in the same namespace that pods running using this \
         ServiceAccount are allowed to use.",
    ),
    AGE,
];

/// ServiceAccount: Name, Secrets (how many are listed), Age.
pub(super) fn service_account_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(object),
        json!(count(object, "/secrets")),
        age(object, now),
    ]
}

pub(super) const REPLICATION_CONTROLLER: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        0,
        "Replicas is the number of desired replicas.",
    ),
    col(
        "Current",
        "integer",
        0,
        "Replicas is the most recently observed number of replicas.",
    ),
    col(
        "Ready",
        "integer",
        0,
        "The number of ready replicas for this replication controller.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    col(
        "Selector",
        "string",
        1,
        "Selector is a label query over pods that should match the Replicas count.",
    ),
];

/// ReplicationController: Name, Desired, Current, Ready, Age, Containers, Images, Selector
/// (a plain label map; Kubernetes defaults an empty one to the template's labels).
pub(super) fn replication_controller_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = containers_and_images(object, TEMPLATE_CONTAINERS);
    let selector = match object.pointer("/spec/selector") {
        Some(Value::Object(labels)) if !labels.is_empty() => object.pointer("/spec/selector"),
        _ => object.pointer("/spec/template/metadata/labels"),
    };
    vec![
        name(object),
        json!(int_or(object, "/spec/replicas", 1)),
        json!(int(object, "/status/replicas")),
        json!(int(object, "/status/readyReplicas")),
        age(object, now),
        json!(containers),
        json!(images),
        json!(format_labels(selector)),
    ]
}

pub(super) const POD_TEMPLATE: &[Column] = &[
    NAME,
    col(
        "Containers",
        "string",
        0,
        "Names of each container in the template.",
    ),
    col(
        "Images",
        "string",
        0,
        "Images referenced by each container in the template.",
    ),
    col(
        "Pod Labels",
        "string",
        0,
        "The labels for the pod template.",
    ),
];

/// PodTemplate: Name, Containers, Images, Pod Labels (no Age, as in kube-apiserver).
pub(super) fn pod_template_cells(object: &Value, _now: Timestamp) -> Vec<Value> {
    let (containers, images) = containers_and_images(object, "/template/spec/containers");
    vec![
        name(object),
        json!(containers),
        json!(images),
        json!(format_labels(object.pointer("/template/metadata/labels"))),
    ]
}

pub(super) const RESOURCE_QUOTA: &[Column] = &[
    NAME,
    col(
        "Request",
        "string",
        0,
        "Request represents a minimum amount of cpu/memory that a container may consume.",
    ),
    col(
        "Limit",
        "string",
        0,
        "Limits control the maximum amount of cpu/memory that a container may use independent \
         of contention on the node.",
    ),
    AGE,
];

/// ResourceQuota: Name, Request, Limit, Age. Every resource of `status.hard`, sorted by name,
/// as `name: used/hard`; those named `limits.*` go to Limit, the others to Request.
pub(super) fn resource_quota_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    let mut resources: Vec<&str> = object
        .pointer("/status/hard")
        .and_then(Value::as_object)
        .map(|hard| hard.keys().map(String::as_str).collect())
        .unwrap_or_default();
    resources.sort_unstable();
    let (mut requests, mut limits) = (Vec::new(), Vec::new());
    for resource in resources {
        let escaped = resource.replace('~', "~0").replace('/', "~1");
        let entry = format!(
            "{resource}: {}/{}",
            quantity(object, &format!("/status/used/{escaped}"), "0"),
            quantity(object, &format!("/status/hard/{escaped}"), "0"),
        );
        if resource.starts_with("limits.") {
            limits.push(entry);
        } else {
            requests.push(entry);
        }
    }
    vec![
        name(object),
        json!(requests.join(", ")),
        json!(limits.join(", ")),
        age(object, now),
    ]
}

//! Networking: discovery.k8s.io `EndpointSlice` and networking.k8s.io/v1 `NetworkPolicy`,
//! `Ingress`, `IngressClass`, `IPAddress` and `ServiceCIDR`.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{
    AGE, Column, LIST_MAX, NAME, age, col, format_label_selector, list, name, text, with_more,
};

pub(super) const ENDPOINT_SLICE: &[Column] = &[
    NAME,
    col(
        "AddressType",
        "string",
        0,
        "addressType specifies the type of address carried by this EndpointSlice.",
    ),
    col(
        "Ports",
        "string",
        0,
        "ports specifies the list of network ports exposed by each endpoint in this slice.",
    ),
    col(
        "Endpoints",
        "string",
        0,
        "endpoints is a list of unique endpoints in this slice.",
    ),
    AGE,
];

/// EndpointSlice: Name, AddressType, Ports, Endpoints, Age.
pub(super) fn endpoint_slice_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    let ports = list(object, "/ports");
    let port_names: Vec<String> = ports
        .iter()
        .take(LIST_MAX)
        .map(|p| match p.get("port").and_then(Value::as_i64) {
            Some(port) => port.to_string(),
            None => match p.get("name").and_then(Value::as_str) {
                Some(name) => name.to_owned(),
                None => "*".to_owned(),
            },
        })
        .collect();
    let addresses: Vec<&str> = list(object, "/endpoints")
        .iter()
        .flat_map(|e| list(e, "/addresses").iter().filter_map(Value::as_str))
        .collect();
    let shown: Vec<String> = addresses
        .iter()
        .take(LIST_MAX)
        .map(|a| (*a).to_owned())
        .collect();
    vec![
        name(object),
        json!(text(object, "/addressType")),
        json!(with_more(&port_names, ports.len(), "<unset>")),
        json!(with_more(&shown, addresses.len(), "<unset>")),
        age(object, now),
    ]
}

pub(super) const NETWORK_POLICY: &[Column] = &[
    NAME,
    col(
        "Pod-Selector",
        "string",
        0,
        "podSelector selects the pods to which this NetworkPolicy object applies.",
    ),
    AGE,
];

/// NetworkPolicy: Name, Pod-Selector (`<none>` for all pods of the namespace), Age.
pub(super) fn network_policy_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    // The pod selector is required; a missing one converts as an empty one.
    let empty = json!({});
    let selector = object.pointer("/spec/podSelector").unwrap_or(&empty);
    vec![
        name(object),
        json!(format_label_selector(Some(selector))),
        age(object, now),
    ]
}

pub(super) const INGRESS: &[Column] = &[
    NAME,
    col(
        "Class",
        "string",
        0,
        "The name of the IngressClass resource that should be used for additional configuration",
    ),
    col(
        "Hosts",
        "string",
        0,
        "Hosts that incoming requests are matched against before the ingress rule",
    ),
    col(
        "Address",
        "string",
        0,
        "Address is a list containing ingress points for the load-balancer",
    ),
    col(
        "Ports",
        "string",
        0,
        "Ports of TLS configurations that open",
    ),
    AGE,
];

/// `formatHosts`: the hosts of the first three rules that name one, `*` when none does, and
/// `+ N more...` counting every rule past the third.
fn ingress_hosts(ingress: &Value) -> String {
    let rules = list(ingress, "/spec/rules");
    let mut hosts: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if hosts.len() == LIST_MAX {
            more = true;
        }
        let host = text(rule, "/host");
        if !more && !host.is_empty() {
            hosts.push(host);
        }
    }
    if hosts.is_empty() {
        return "*".to_owned();
    }
    let joined = hosts.join(",");
    if more {
        format!("{joined} + {} more...", rules.len() - LIST_MAX)
    } else {
        joined
    }
}

/// Ingress: Name, Class (`<none>`), Hosts, Address (the load balancer's IPs or host names,
/// sorted and deduplicated; never shortened, as the table is always wide), Ports (`80`, or
/// `80, 443` with TLS), Age.
pub(super) fn ingress_cells(ingress: &Value, now: Timestamp) -> Vec<Value> {
    let class = match ingress.pointer("/spec/ingressClassName") {
        Some(Value::String(class)) => class.as_str(),
        _ => "<none>",
    };
    let mut addresses: Vec<&str> = list(ingress, "/status/loadBalancer/ingress")
        .iter()
        .map(|i| match text(i, "/ip") {
            "" => text(i, "/hostname"),
            ip => ip,
        })
        .filter(|a| !a.is_empty())
        .collect();
    addresses.sort_unstable();
    addresses.dedup();
    let ports = if list(ingress, "/spec/tls").is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name(ingress),
        json!(class),
        json!(ingress_hosts(ingress)),
        json!(addresses.join(",")),
        json!(ports),
        age(ingress, now),
    ]
}

pub(super) const INGRESS_CLASS: &[Column] = &[
    NAME,
    col(
        "Controller",
        "string",
        0,
        "Controller that is responsible for handling this class",
    ),
    col(
        "Parameters",
        "string",
        0,
        "A reference to a resource with additional parameters",
    ),
    AGE,
];

/// IngressClass: Name, Controller, Parameters (`Kind.apiGroup/name`, the `.apiGroup` only
/// when set; `<none>`), Age.
pub(super) fn ingress_class_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    let parameters = match object.pointer("/spec/parameters") {
        Some(parameters @ Value::Object(_)) => {
            let mut out = text(parameters, "/kind").to_owned();
            if let Some(Value::String(group)) = parameters.get("apiGroup") {
                out.push('.');
                out.push_str(group);
            }
            out.push('/');
            out.push_str(text(parameters, "/name"));
            out
        }
        _ => "<none>".to_owned(),
    };
    vec![
        name(object),
        json!(text(object, "/spec/controller")),
        json!(parameters),
        age(object, now),
    ]
}

/// kube-apiserver declares only these two columns (its row carries a third cell, the age,
/// which kubectl drops); keelson sends the two.
pub(super) const IP_ADDRESS: &[Column] = &[
    NAME,
    col(
        "ParentRef",
        "string",
        0,
        "ParentRef references the resource that an IPAddress is attached to.",
    ),
];

/// IPAddress: Name, ParentRef (`resource.group/namespace/name` in lower case, without the
/// parts that are empty; `<none>`).
pub(super) fn ip_address_cells(object: &Value, _now: Timestamp) -> Vec<Value> {
    let parent = match object.pointer("/spec/parentRef") {
        Some(parent @ Value::Object(_)) => {
            let mut out = match (text(parent, "/resource"), text(parent, "/group")) {
                (resource, "") => resource.to_lowercase(),
                (resource, group) => format!("{resource}.{group}").to_lowercase(),
            };
            let namespace = text(parent, "/namespace");
            if !namespace.is_empty() {
                out.push('/');
                out.push_str(namespace);
            }
            out.push('/');
            out.push_str(text(parent, "/name"));
            out
        }
        _ => "<none>".to_owned(),
    };
    vec![name(object), json!(parent)]
}

pub(super) const SERVICE_CIDR: &[Column] = &[
    NAME,
    col(
        "CIDRs",
        "string",
        0,
        "CIDRs defines the IP blocks in CIDR notation (e.g. \"192.168.0.0/24\" or \
         \"2001:db8::/64\") from which to assign service cluster IPs.",
    ),
    AGE,
];

/// ServiceCIDR: Name, CIDRs (comma-separated), Age.
pub(super) fn service_cidr_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    let cidrs: Vec<&str> = list(object, "/spec/cidrs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    vec![name(object), json!(cidrs.join(",")), age(object, now)]
}

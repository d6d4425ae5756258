//! Networking: discovery.k8s.io `EndpointSlice`.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{AGE, Column, LIST_MAX, NAME, age, col, list, name, text, with_more};

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

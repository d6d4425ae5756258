//! The cluster DNS zone: built from Services and EndpointSlices, then looked up by name.

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use keelson_dns::zone::{self, RecordType};
use serde_json::{Value, json};

/// Services and slices of every kind the zone serves records for.
fn objects() -> Value {
    json!({
        "services": [
            {"metadata": {"name": "web", "namespace": "default"},
             "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}},
            {"metadata": {"name": "db", "namespace": "prod"},
             "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}},
            {"metadata": {"name": "ext", "namespace": "default"},
             "spec": {"type": "ExternalName", "externalName": "example.org"}}
        ],
        "slices": [
            {"metadata": {"name": "db-1", "namespace": "prod",
                "labels": {"kubernetes.io/service-name": "db"}},
             "addressType": "IPv4",
             "endpoints": [{"addresses": ["10.0.0.7"], "hostname": "db-0",
                 "conditions": {"ready": true}}],
             "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}
        ]
    })
}

/// Record types a query may ask for, picked by the first byte of a query line.
const TYPES: [RecordType; 6] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::SRV,
    RecordType::PTR,
    RecordType::CNAME,
    RecordType::SOA,
];

/// Input: an optional first line with a JSON `{"services": [...], "slices": [...]}` (the
/// zone's objects; the built-in set otherwise), then one query name per line; the first line
/// is also tried as the cluster domain.
pub(crate) fn lookups(data: &[u8]) {
    let Some(text) = crate::text(data) else {
        return;
    };
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let _ = keelson_dns::ClusterDns::new(first);
    let input = serde_json::from_str::<Value>(first).unwrap_or_else(|_| objects());
    let services: Vec<Service> = input
        .get("services")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let slices: Vec<EndpointSlice> = input
        .get("slices")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default();
    let domain = zone::domain_name("cluster.local").expect("cluster.local is a domain");
    let records = zone::build(&domain, &services, &slices, 1);
    for (i, name) in lines.enumerate() {
        let _ = zone::lookup(&records, name, TYPES[i % TYPES.len()]);
    }
}

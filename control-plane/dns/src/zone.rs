//! The cluster zone as pure data: which records Services and EndpointSlices make, following the
//! Kubernetes DNS specification (what kube-dns and CoreDNS's kubernetes plugin answer).
//!
//! - A ClusterIP Service `s` in namespace `n`: `s.n.svc.<domain>` A/AAAA -> its cluster IPs.
//! - A headless Service (`clusterIP: None`): `s.n.svc.<domain>` A/AAAA -> every ready endpoint
//!   (all endpoints with `publishNotReadyAddresses`), and `<hostname>.s.n.svc.<domain>` for
//!   endpoints with a hostname (otherwise `<a-b-c-d>.s.n.svc.<domain>` after the address).
//! - An ExternalName Service: `s.n.svc.<domain>` CNAME -> `spec.externalName`.
//! - Every named port `p`/protocol `proto`: `_p._proto.s.n.svc.<domain>` SRV -> the service
//!   name (or, for headless Services, each endpoint's name) and the port.
//!
//! TTLs are 5 s, as CoreDNS's default for the kubernetes plugin.

use std::{collections::BTreeMap, net::IpAddr};

/// The record type [`lookup`] asks for (hickory's).
pub use hickory_server::proto::rr::RecordType;
use hickory_server::proto::rr::{
    LowerName, Name, RData, Record, RecordSet, RrKey,
    rdata::{A, AAAA, CNAME, NS, SOA, SRV},
};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

/// The TTL of every answer, in seconds.
pub const TTL: u32 = 5;
/// The label that ties an EndpointSlice to its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The records of one zone, ready for hickory's in-memory zone handler.
pub type Records = BTreeMap<RrKey, RecordSet>;

/// Why a zone cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ZoneError {
    /// The cluster domain is not a DNS name.
    #[error("{domain:?} is not a valid cluster domain: {cause}")]
    Domain {
        /// The domain given.
        domain: String,
        /// The parser's reason.
        cause: String,
    },
}

/// The cluster domain as an absolute DNS name (`cluster.local.`).
pub fn domain_name(domain: &str) -> Result<Name, ZoneError> {
    let bad = |cause: String| ZoneError::Domain {
        domain: domain.to_owned(),
        cause,
    };
    let trimmed = domain.trim_end_matches('.');
    if trimmed.is_empty() {
        return Err(bad("empty".into()));
    }
    Name::from_ascii(format!("{trimmed}.")).map_err(|e| bad(e.to_string()))
}

struct Builder<'a> {
    domain: &'a Name,
    serial: u32,
    records: Records,
}

impl Builder<'_> {
    /// `labels` joined before the domain, or `None` when they do not form a DNS name (the
    /// API validates names, so this only skips what could never be asked for).
    fn name(&self, labels: &[&str]) -> Option<Name> {
        let relative = Name::from_ascii(labels.join(".")).ok()?;
        relative.append_domain(self.domain).ok()
    }

    fn add(&mut self, name: &Name, rdata: RData) {
        let record = Record::from_rdata(name.clone(), TTL, rdata);
        let key = RrKey::new(LowerName::new(name), record.record_type());
        let serial = self.serial;
        self.records
            .entry(key)
            .or_insert_with(|| RecordSet::new(name.clone(), record.record_type(), serial))
            .insert(record, serial);
    }

    fn address(&mut self, name: &Name, ip: IpAddr) {
        let rdata = match ip {
            IpAddr::V4(v4) => RData::A(A(v4)),
            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
        };
        self.add(name, rdata);
    }
}

/// One endpoint address of a headless Service, with the name DNS gives it.
struct Member {
    label: String,
    ip: IpAddr,
}

/// The zone of `domain` for `services` and their `slices`; `serial` is the SOA serial (bump it
/// on every rebuild so secondaries and caches can tell versions apart).
pub fn build(
    domain: &Name,
    services: &[Service],
    slices: &[EndpointSlice],
    serial: u32,
) -> Records {
    let mut b = Builder {
        domain,
        serial,
        records: Records::new(),
    };
    let ns_name = b.name(&["ns", "dns"]).unwrap_or_else(|| domain.clone());
    let admin = b.name(&["hostmaster"]).unwrap_or_else(|| domain.clone());
    b.add(
        domain,
        RData::SOA(SOA::new(
            ns_name.clone(),
            admin,
            serial,
            7200,
            1800,
            86400,
            TTL,
        )),
    );
    b.add(domain, RData::NS(NS(ns_name)));

    let mut slices_of: BTreeMap<(&str, &str), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        let labels = slice.metadata.labels.as_ref();
        if let (Some(ns), Some(service)) = (
            slice.metadata.namespace.as_deref(),
            labels.and_then(|l| l.get(SERVICE_NAME_LABEL)),
        ) {
            slices_of
                .entry((ns, service.as_str()))
                .or_default()
                .push(slice);
        }
    }

    for service in services {
        let (Some(name), Some(ns)) = (
            service.metadata.name.as_deref(),
            service.metadata.namespace.as_deref(),
        ) else {
            continue;
        };
        let Some(fqdn) = b.name(&[name, ns, "svc"]) else {
            continue;
        };
        let spec = service.spec.clone().unwrap_or_default();
        if spec.type_.as_deref() == Some("ExternalName") {
            if let Some(target) = spec
                .external_name
                .as_deref()
                .and_then(|t| Name::from_ascii(format!("{}.", t.trim_end_matches('.'))).ok())
            {
                b.add(&fqdn, RData::CNAME(CNAME(target)));
            }
            continue;
        }
        let headless = spec.cluster_ip.as_deref() == Some("None");
        if !headless {
            let ips = spec
                .cluster_ips
                .clone()
                .filter(|ips| !ips.is_empty())
                .or_else(|| spec.cluster_ip.clone().map(|ip| vec![ip]))
                .unwrap_or_default();
            for ip in ips.iter().filter_map(|ip| ip.parse::<IpAddr>().ok()) {
                b.address(&fqdn, ip);
            }
            for port in spec.ports.iter().flatten() {
                if let Some(srv) =
                    srv_name(&b, port.name.as_deref(), port.protocol.as_deref(), name, ns)
                {
                    let port = u16::try_from(port.port).unwrap_or_default();
                    b.add(&srv, RData::SRV(SRV::new(0, 100, port, fqdn.clone())));
                }
            }
            continue;
        }
        let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
        let mut members: Vec<Member> = Vec::new();
        let mut ports: Vec<(Option<String>, Option<String>, i32)> = Vec::new();
        for slice in slices_of.get(&(ns, name)).into_iter().flatten() {
            for port in slice.ports.iter().flatten() {
                if let Some(number) = port.port {
                    let entry = (port.name.clone(), port.protocol.clone(), number);
                    if !ports.contains(&entry) {
                        ports.push(entry);
                    }
                }
            }
            for endpoint in &slice.endpoints {
                // Kubernetes: a nil `ready` means ready.
                let ready = endpoint.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                if !ready && !publish_not_ready {
                    continue;
                }
                for ip in endpoint
                    .addresses
                    .iter()
                    .filter_map(|a| a.parse::<IpAddr>().ok())
                {
                    let label = endpoint
                        .hostname
                        .clone()
                        .unwrap_or_else(|| ip.to_string().replace(['.', ':'], "-"));
                    members.push(Member { label, ip });
                }
            }
        }
        for member in &members {
            b.address(&fqdn, member.ip);
            if let Some(host) = b.name(&[&member.label, name, ns, "svc"]) {
                b.address(&host, member.ip);
            }
        }
        for (port_name, protocol, number) in &ports {
            let Some(srv) = srv_name(&b, port_name.as_deref(), protocol.as_deref(), name, ns)
            else {
                continue;
            };
            let port = u16::try_from(*number).unwrap_or_default();
            for member in &members {
                if let Some(target) = b.name(&[&member.label, name, ns, "svc"]) {
                    b.add(&srv, RData::SRV(SRV::new(0, 100, port, target)));
                }
            }
        }
    }
    b.records
}

/// `_<port>._<proto>.<service>.<ns>.svc.<domain>` for a named port.
fn srv_name(
    b: &Builder<'_>,
    port: Option<&str>,
    protocol: Option<&str>,
    service: &str,
    ns: &str,
) -> Option<Name> {
    let port = port.filter(|p| !p.is_empty())?;
    let protocol = protocol.unwrap_or("TCP").to_ascii_lowercase();
    b.name(&[
        &format!("_{port}"),
        &format!("_{protocol}"),
        service,
        ns,
        "svc",
    ])
}

/// The record types at `name` in `records`, for tests and diagnostics.
pub fn lookup(records: &Records, name: &str, record_type: RecordType) -> Vec<RData> {
    let Ok(name) = Name::from_ascii(name) else {
        return Vec::new();
    };
    records
        .get(&RrKey::new(LowerName::new(&name), record_type))
        .map(|set| {
            set.records_without_rrsigs()
                .map(|r| r.data.clone())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(value: serde_json::Value) -> Service {
        serde_json::from_value(value).expect("a Service")
    }

    fn slice(value: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(value).expect("an EndpointSlice")
    }

    fn domain() -> Name {
        domain_name("cluster.local").expect("domain")
    }

    #[test]
    fn cluster_ip_services_answer_a_and_srv() {
        let svc = service(json!({
            "metadata": {"name": "hello", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 81}]}
        }));
        let zone = build(&domain(), &[svc], &[], 7);
        assert_eq!(
            lookup(&zone, "hello.default.svc.cluster.local.", RecordType::A),
            [RData::A(A::new(10, 96, 0, 20))]
        );
        let srv = lookup(
            &zone,
            "_http._tcp.hello.default.svc.cluster.local.",
            RecordType::SRV,
        );
        assert_eq!(
            srv,
            [RData::SRV(SRV::new(
                0,
                100,
                80,
                Name::from_ascii("hello.default.svc.cluster.local.").expect("name")
            ))]
        );
        let soa = lookup(&zone, "cluster.local.", RecordType::SOA);
        assert!(
            matches!(&soa[..], [RData::SOA(soa)] if soa.serial == 7),
            "{soa:?}"
        );
    }

    #[test]
    fn headless_services_answer_ready_endpoints_and_hostnames() {
        let svc = service(json!({
            "metadata": {"name": "db", "namespace": "prod"},
            "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}
        }));
        let endpoints = slice(json!({
            "metadata": {"name": "db-abc", "namespace": "prod",
                         "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.244.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
                {"addresses": ["10.244.0.6"], "conditions": {}},
                {"addresses": ["10.244.0.7"], "conditions": {"ready": false}}
            ]
        }));
        let zone = build(
            &domain(),
            std::slice::from_ref(&svc),
            std::slice::from_ref(&endpoints),
            1,
        );
        let mut all = lookup(&zone, "db.prod.svc.cluster.local.", RecordType::A);
        all.sort_by_key(ToString::to_string);
        assert_eq!(
            all,
            [
                RData::A(A::new(10, 244, 0, 5)),
                RData::A(A::new(10, 244, 0, 6))
            ],
            "not-ready endpoints are left out"
        );
        assert_eq!(
            lookup(&zone, "db-0.db.prod.svc.cluster.local.", RecordType::A),
            [RData::A(A::new(10, 244, 0, 5))]
        );
        assert_eq!(
            lookup(
                &zone,
                "10-244-0-6.db.prod.svc.cluster.local.",
                RecordType::A
            ),
            [RData::A(A::new(10, 244, 0, 6))]
        );
        assert_eq!(
            lookup(
                &zone,
                "_pg._tcp.db.prod.svc.cluster.local.",
                RecordType::SRV
            )
            .len(),
            2
        );

        let mut publish = svc;
        if let Some(spec) = publish.spec.as_mut() {
            spec.publish_not_ready_addresses = Some(true);
        }
        let zone = build(&domain(), &[publish], &[endpoints], 2);
        assert_eq!(
            lookup(&zone, "db.prod.svc.cluster.local.", RecordType::A).len(),
            3,
            "publishNotReadyAddresses includes every endpoint"
        );
    }

    #[test]
    fn external_names_are_cnames_and_bad_domains_are_refused() {
        let svc = service(json!({
            "metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "example.org"}
        }));
        let zone = build(&domain(), &[svc], &[], 1);
        assert_eq!(
            lookup(&zone, "ext.default.svc.cluster.local.", RecordType::CNAME),
            [RData::CNAME(CNAME(
                Name::from_ascii("example.org.").expect("name")
            ))]
        );
        assert!(domain_name("").is_err());
        assert!(domain_name("bad..domain").is_err());
        assert_eq!(domain_name("cluster.local.").expect("ok"), domain());
    }
}

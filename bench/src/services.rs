//! The benchmark's Services: addresses, ports and backends, and the keelson frontends they turn
//! into. Pure: no IO.

use std::net::{Ipv4Addr, SocketAddrV4};

use keelson_ebpf_common::{backend_state, proto, scope};
use keelson_node_agent::datapath::lb::{BackendAddr, Frontend, FrontendKey};

/// The port every Service answers on.
pub const SERVICE_PORT: u16 = 80;
/// The port every backend listens on.
pub const BACKEND_PORT: u16 = 8080;
/// The iperf3 port, on the measured Service and on the iperf3 backend.
pub const IPERF_PORT: u16 = 5201;
/// Backends per Service.
pub const BACKENDS_PER_SERVICE: usize = 10;
/// The Service CIDR (kube-apiserver's default).
pub const SERVICE_CIDR: &str = "10.96.0.0/12";
/// The namespace every benchmark Service lives in.
pub const NAMESPACE: &str = "bench";

/// The client's address.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
/// The node's address towards the client (the client's gateway).
pub const NODE_CLIENT_SIDE: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// The node's address towards the backends (their gateway).
pub const NODE_BACKEND_SIDE: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
/// The "pod" CIDR covering the client and the backends: traffic from it is not masqueraded.
pub const CLUSTER_CIDR: &str = "10.200.0.0/15";

/// The cluster IP of Service `index` (0-based): `10.96.0.0 + index + 1`, skipping addresses that
/// end in `.0`.
pub fn vip(index: usize) -> Ipv4Addr {
    let block = u32::try_from(index / 255).unwrap_or(u32::MAX);
    let host = (index % 255) as u32 + 1;
    Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + block * 256 + host)
}

/// Address `i` (0-based) of the backend pool: 10.201.0.11, .12, …
pub fn backend_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 201, 0, 11 + u8::try_from(i).unwrap_or(u8::MAX - 11))
}

/// The most backend addresses the pool can hold in 10.201.0.0/24.
pub const MAX_POOL: usize = 240;

/// One port of a Service and the backends behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePort {
    /// The port's name (kube-proxy puts it in chain names and comments).
    pub name: String,
    /// The port clients use on the cluster IP.
    pub port: u16,
    /// The backends, as EndpointSlices list them.
    pub backends: Vec<SocketAddrV4>,
}

/// One ClusterIP Service (TCP only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Cluster IP.
    pub vip: Ipv4Addr,
    /// Ports.
    pub ports: Vec<ServicePort>,
}

impl ServiceSpec {
    /// `namespace/name`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The port named `name`.
    pub fn port(&self, name: &str) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.name == name)
    }

    /// The same Service with backend `backend` of port `port` gone (one endpoint change).
    pub fn without_backend(&self, port: &str, backend: SocketAddrV4) -> Self {
        let mut changed = self.clone();
        for p in changed.ports.iter_mut().filter(|p| p.name == port) {
            p.backends.retain(|b| *b != backend);
        }
        changed
    }

    /// The keelson frontends of this Service, as the agent would derive them from the Service
    /// and its EndpointSlices (all backends ready and on this node).
    pub fn frontends(&self) -> Vec<Frontend> {
        self.ports
            .iter()
            .map(|port| Frontend {
                key: FrontendKey {
                    address: self.vip,
                    port: port.port,
                    proto: proto::TCP,
                    scope: scope::INTERNAL,
                },
                flags: 0,
                affinity_timeout_s: 0,
                backends: port
                    .backends
                    .iter()
                    .map(|b| BackendAddr {
                        address: *b.ip(),
                        port: b.port(),
                        proto: proto::TCP,
                        state: backend_state::ACTIVE,
                        local: true,
                    })
                    .collect(),
            })
            .collect()
    }
}

/// The name of port 80 on every Service.
pub const HTTP_PORT_NAME: &str = "http";
/// The name of the iperf3 port on the measured Service.
pub const IPERF_PORT_NAME: &str = "iperf3";

/// `count` Services, each with [`BACKENDS_PER_SERVICE`] backends drawn from a pool of `pool`
/// addresses (Service `i` takes pool addresses `i, i+1, …` modulo the pool). The last Service —
/// the one the benchmark measures, last in kube-proxy's linear `KUBE-SERVICES` chain — also has
/// an iperf3 port whose only backend is `iperf_backend`.
pub fn bench_services(count: usize, pool: usize, iperf_backend: Ipv4Addr) -> Vec<ServiceSpec> {
    let pool = pool.clamp(1, MAX_POOL);
    (0..count)
        .map(|i| {
            let mut ports = vec![ServicePort {
                name: HTTP_PORT_NAME.to_owned(),
                port: SERVICE_PORT,
                backends: (0..BACKENDS_PER_SERVICE.min(pool))
                    .map(|k| SocketAddrV4::new(backend_addr((i + k) % pool), BACKEND_PORT))
                    .collect(),
            }];
            if i + 1 == count {
                ports.push(ServicePort {
                    name: IPERF_PORT_NAME.to_owned(),
                    port: IPERF_PORT,
                    backends: vec![SocketAddrV4::new(iperf_backend, IPERF_PORT)],
                });
            }
            ServiceSpec {
                namespace: NAMESPACE.to_owned(),
                name: format!("svc-{i}"),
                vip: vip(i),
                ports,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vips_skip_dot_zero_addresses() {
        assert_eq!(vip(0), Ipv4Addr::new(10, 96, 0, 1));
        assert_eq!(vip(254), Ipv4Addr::new(10, 96, 0, 255));
        assert_eq!(vip(255), Ipv4Addr::new(10, 96, 1, 1));
        assert_eq!(vip(9999), Ipv4Addr::new(10, 96, 39, 55));
        let all: std::collections::BTreeSet<_> = (0..10_000).map(vip).collect();
        assert_eq!(all.len(), 10_000);
        assert!(all.iter().all(|a| a.octets()[3] != 0));
    }

    #[test]
    fn services_draw_ten_backends_and_the_last_one_has_iperf3() {
        let services = bench_services(3, 10, backend_addr(0));
        assert_eq!(services.len(), 3);
        let http = services[2].port(HTTP_PORT_NAME).expect("http port");
        assert_eq!(http.backends.len(), BACKENDS_PER_SERVICE);
        assert_eq!(
            http.backends[0],
            SocketAddrV4::new(Ipv4Addr::new(10, 201, 0, 13), BACKEND_PORT)
        );
        assert_eq!(
            http.backends[9],
            SocketAddrV4::new(Ipv4Addr::new(10, 201, 0, 12), BACKEND_PORT),
            "wraps around the pool"
        );
        assert!(services[1].port(IPERF_PORT_NAME).is_none());
        let iperf = services[2].port(IPERF_PORT_NAME).expect("iperf3 port");
        assert_eq!(iperf.backends.len(), 1);
        assert_eq!(services[2].id(), "bench/svc-2");
        assert_eq!(services[2].frontends().len(), 2);
        assert_eq!(services[0].frontends()[0].backends.len(), 10);
    }

    #[test]
    fn removing_one_backend_changes_one_port() {
        let services = bench_services(1, 10, backend_addr(0));
        let gone = services[0].ports[0].backends[3];
        let changed = services[0].without_backend(HTTP_PORT_NAME, gone);
        assert_eq!(changed.ports[0].backends.len(), 9);
        assert!(!changed.ports[0].backends.contains(&gone));
        assert_eq!(changed.ports[1], services[0].ports[1]);
    }
}

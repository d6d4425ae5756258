//! Where cluster DNS is, written once for the API server (which creates the `kube-dns` Service),
//! the controller that lists its endpoints and the node agent (which answers on them).
//!
//! Clients and NetworkPolicies expect kubeadm's layout: a Service `kube-dns` in `kube-system`
//! on the tenth address of the service range (kubeadm's `GetDNSIP`, e.g. `10.96.0.10`), ports
//! `dns` 53/UDP and `dns-tcp` 53/TCP. In keelson cluster DNS is not a pod: every node agent
//! answers on the first host address of its node's pod CIDR ([`responder_address`]), and the
//! Service (selectorless, `internalTrafficPolicy: Local`) lists those addresses, so a query to
//! its ClusterIP stays on the client's node.

use std::net::Ipv4Addr;

use crate::cidr::{CidrError, Ipv4Cidr};

/// The Service's name.
pub const SERVICE_NAME: &str = "kube-dns";
/// The Service's namespace.
pub const NAMESPACE: &str = "kube-system";
/// The DNS port (UDP and TCP).
pub const PORT: u16 = 53;
/// The name of the UDP port (CoreDNS's manifests).
pub const UDP_PORT_NAME: &str = "dns";
/// The name of the TCP port (CoreDNS's manifests).
pub const TCP_PORT_NAME: &str = "dns-tcp";
/// The labels kubeadm and Kubernetes' CoreDNS addon put on the Service.
pub const SERVICE_LABELS: [(&str, &str); 3] = [
    ("k8s-app", "kube-dns"),
    ("kubernetes.io/cluster-service", "true"),
    ("kubernetes.io/name", "CoreDNS"),
];
/// Which address of the service range the Service gets (kubeadm: the tenth).
pub const SERVICE_IP_INDEX: u64 = 10;

/// The `kube-dns` ClusterIP of a service range: its tenth address (`10.96.0.0/12` ->
/// `10.96.0.10`); `None` when the range is too small to hold it.
pub fn service_ip(service_range: Ipv4Cidr) -> Option<Ipv4Addr> {
    service_range.nth(SERVICE_IP_INDEX)
}

/// The address a node's agent answers DNS on, from the node's `spec.podCIDR`: the block's first
/// host address, which is also the gateway its pods route through (`10.244.1.0/24` ->
/// `10.244.1.1`). Host bits in the text are cleared, as Kubernetes does.
pub fn responder_address(pod_cidr: &str) -> Result<Ipv4Addr, CidrError> {
    let cidr = Ipv4Cidr::parse_clearing_host_bits(pod_cidr)?;
    Ok(first_host(cidr))
}

/// The first host address of `cidr` (the one after the network address; wraps for a /32).
pub fn first_host(cidr: Ipv4Cidr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()).wrapping_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_ip_is_the_tenth_address_of_the_range() {
        for (range, expected) in [
            ("10.96.0.0/12", Some("10.96.0.10")),
            ("10.43.0.0/16", Some("10.43.0.10")),
            ("172.30.8.0/28", Some("172.30.8.10")),
            ("172.30.8.0/29", None),
        ] {
            let range: Ipv4Cidr = range.parse().expect("valid range");
            assert_eq!(
                service_ip(range).map(|ip| ip.to_string()).as_deref(),
                expected,
                "{range}"
            );
        }
    }

    #[test]
    fn the_responder_is_the_first_host_of_the_pod_cidr() {
        for (pod_cidr, expected) in [
            ("10.244.0.0/24", "10.244.0.1"),
            ("10.244.3.0/24", "10.244.3.1"),
            ("10.244.3.7/24", "10.244.3.1"),
            ("10.250.16.0/20", "10.250.16.1"),
        ] {
            assert_eq!(
                responder_address(pod_cidr).map(|ip| ip.to_string()),
                Ok(expected.to_owned()),
                "{pod_cidr}"
            );
        }
        assert!(responder_address("fd00::/64").is_err());
        assert!(responder_address("10.244.0.0").is_err());
    }
}

//! The SNAT source addresses the agent records for the TC path: on kernels whose
//! `bpf_fib_lookup` lacks `BPF_FIB_LOOKUP_SRC` (before 6.7 unless backported, e.g. Debian 11's
//! 5.10), a NodePort flow source-NATed towards a backend on another node takes the node's
//! address on the interface the FIB sends it out of, from `ksnatsrc_v1` (ifindex -> address).
//!
//! The map is rewritten whole from the interfaces of the agent's network namespace each time an
//! uplink is attached (at every start, and when an uplink is created again) and whenever an IPv4
//! address of the namespace changes ([`super::watch_uplinks`]).

use std::{collections::BTreeMap, net::Ipv4Addr};

use aya::maps::HashMap;
use keelson_ebpf_common::maps;

use super::{LoadBalancer, ignore_missing, typed_mut};
use crate::datapath::DatapathError;

/// The source address per interface index: the first usable IPv4 address listed for each
/// interface (the kernel lists an interface's primary address before its secondaries).
/// Loopback, unspecified and link-local (169.254/16) addresses are never a NodePort source.
pub fn snat_sources(
    addresses: impl IntoIterator<Item = (u32, Ipv4Addr)>,
) -> BTreeMap<u32, Ipv4Addr> {
    let mut sources = BTreeMap::new();
    for (ifindex, address) in addresses {
        if ifindex == 0
            || address.is_loopback()
            || address.is_unspecified()
            || address.is_link_local()
        {
            continue;
        }
        sources.entry(ifindex).or_insert(address);
    }
    sources
}

/// Every IPv4 address of the calling thread's network namespace with its interface's index, in
/// the kernel's order.
fn interface_addresses() -> Result<Vec<(u32, Ipv4Addr)>, DatapathError> {
    let addresses = nix::ifaddrs::getifaddrs().map_err(DatapathError::InterfaceAddresses)?;
    Ok(addresses
        .filter_map(|entry| {
            let address = entry.address?.as_sockaddr_in()?.ip();
            let ifindex = nix::net::if_::if_nametoindex(entry.interface_name.as_str()).ok()?;
            Some((ifindex, address))
        })
        .collect())
}

impl LoadBalancer {
    /// Rewrites `ksnatsrc_v1` from the interfaces of the calling thread's network namespace
    /// ([`snat_sources`]): entries of interfaces without an address any more are removed.
    /// Returns the entries written.
    pub fn sync_snat_sources(&mut self) -> Result<BTreeMap<u32, Ipv4Addr>, DatapathError> {
        let desired = snat_sources(interface_addresses()?);
        let mut map: HashMap<_, u32, u32> = typed_mut(&mut self.ebpf, maps::SNAT_SOURCES)?;
        let map_error = |source| DatapathError::Map {
            map: maps::SNAT_SOURCES,
            source: Box::new(source),
        };
        let stale: Vec<u32> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|ifindex| !desired.contains_key(ifindex))
            .collect();
        for ifindex in stale {
            ignore_missing(map.remove(&ifindex)).map_err(map_error)?;
        }
        for (&ifindex, address) in &desired {
            map.insert(ifindex, u32::from_ne_bytes(address.octets()), 0)
                .map_err(map_error)?;
        }
        Ok(desired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_usable_address_of_each_interface_is_its_source() {
        let a = |s: &str| s.parse::<Ipv4Addr>().expect("an address");
        type Listed = Vec<(u32, Ipv4Addr)>;
        let cases: [(&str, Listed, Listed); 4] = [
            ("nothing listed", vec![], vec![]),
            (
                "primary before secondary",
                vec![
                    (2, a("10.0.0.5")),
                    (2, a("10.0.0.9")),
                    (3, a("192.168.1.2")),
                ],
                vec![(2, a("10.0.0.5")), (3, a("192.168.1.2"))],
            ),
            (
                "loopback, link-local and unspecified skipped",
                vec![
                    (1, a("127.0.0.1")),
                    (4, a("169.254.1.1")),
                    (4, a("0.0.0.0")),
                    (4, a("172.16.0.1")),
                ],
                vec![(4, a("172.16.0.1"))],
            ),
            ("ifindex 0 never", vec![(0, a("10.1.1.1"))], vec![]),
        ];
        for (name, listed, want) in cases {
            let got: Vec<(u32, Ipv4Addr)> = snat_sources(listed).into_iter().collect();
            assert_eq!(got, want, "{name}");
        }
    }
}

//! The pure half of cross-node routing: from what is installed, what the Nodes ask for and what
//! an earlier run left, the writes that make the node's routing match (no IO).
//!
//! Each route lives in up to three places: the kernel route (tagged `proto 0x6b`), the
//! `NODE_ROUTES` entry and, in tunnel mode, the permanent neighbour entry on the vxlan device
//! for the route's next hop (the pod CIDR's network address, resolving to the owning node's
//! device MAC). A Node deleted, or whose pod CIDR changed, loses all three; a Node whose address
//! changed has all three replaced. The cost is O(routes) per call, nodes being few.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use keelson_api::cidr::Ipv4Cidr;

use super::RoutingMode;

/// What an earlier run of the agent left, as keys (read once at start).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Adopted {
    /// Kernel routes tagged with keelson's protocol: (destination, prefix length).
    pub routes: BTreeSet<(Ipv4Addr, u8)>,
    /// `NODE_ROUTES` entries: (network, prefix length).
    pub map_entries: BTreeSet<(Ipv4Addr, u8)>,
    /// Permanent neighbour entries with a tunnel device MAC on the vxlan device (tunnel mode):
    /// their addresses.
    pub neighbours: BTreeSet<Ipv4Addr>,
}

/// One write, in the order [`plan`] lists them: removals first, then installs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteOp {
    /// Remove the kernel route and the `NODE_ROUTES` entry of `cidr`, which led to `node`.
    Remove {
        /// The pod CIDR.
        cidr: Ipv4Cidr,
        /// Its former node.
        node: Ipv4Addr,
    },
    /// Remove a kernel route an earlier run left (matched by destination and protocol).
    RemoveAdoptedRoute(Ipv4Addr, u8),
    /// Remove a `NODE_ROUTES` entry an earlier run left.
    RemoveAdoptedMapEntry(Ipv4Addr, u8),
    /// Remove the tunnel's permanent neighbour entry for this next hop.
    RemoveNeighbour(Ipv4Addr),
    /// Install or replace the route of `cidr` to `node` (neighbour entry in tunnel mode, kernel
    /// route, `NODE_ROUTES` entry).
    Install {
        /// The pod CIDR.
        cidr: Ipv4Cidr,
        /// The node owning it.
        node: Ipv4Addr,
    },
}

/// The writes that turn `installed` (and, on the first call, `adopted`) into `desired`.
/// `reinstall` installs every desired route again even where unchanged: the interface routes
/// leave by changed (an uplink deleted and created again), or the kernel flushed its routes
/// (the uplink went down).
///
/// A neighbour entry is kept while any desired pod CIDR has its address as network (a CIDR
/// resized in place keeps its next hop).
pub fn plan(
    mode: RoutingMode,
    installed: &BTreeMap<Ipv4Cidr, Ipv4Addr>,
    desired: &BTreeMap<Ipv4Cidr, Ipv4Addr>,
    adopted: Option<&Adopted>,
    reinstall: bool,
) -> Vec<RouteOp> {
    let wanted = |network: Ipv4Addr, prefix: u8| {
        desired
            .keys()
            .any(|c| c.network() == network && c.prefix_len() == prefix)
    };
    let next_hop_wanted = |address: Ipv4Addr| desired.keys().any(|c| c.network() == address);
    let mut removals = Vec::new();
    let mut neighbours = BTreeSet::new();
    for (&cidr, &node) in installed {
        if desired.contains_key(&cidr) {
            continue;
        }
        removals.push(RouteOp::Remove { cidr, node });
        if mode == RoutingMode::Tunnel && !next_hop_wanted(cidr.network()) {
            neighbours.insert(cidr.network());
        }
    }
    if let Some(adopted) = adopted {
        let installed_key = |n: Ipv4Addr, p: u8| {
            installed
                .keys()
                .any(|c| c.network() == n && c.prefix_len() == p)
        };
        for &(network, prefix) in &adopted.routes {
            if !wanted(network, prefix) && !installed_key(network, prefix) {
                removals.push(RouteOp::RemoveAdoptedRoute(network, prefix));
            }
        }
        for &(network, prefix) in &adopted.map_entries {
            if !wanted(network, prefix) && !installed_key(network, prefix) {
                removals.push(RouteOp::RemoveAdoptedMapEntry(network, prefix));
            }
        }
        neighbours.extend(
            adopted
                .neighbours
                .iter()
                .copied()
                .filter(|&address| !next_hop_wanted(address)),
        );
    }
    removals.extend(neighbours.into_iter().map(RouteOp::RemoveNeighbour));
    let installs = desired
        .iter()
        .filter(|&(cidr, node)| reinstall || installed.get(cidr) != Some(node))
        .map(|(&cidr, &node)| RouteOp::Install { cidr, node });
    removals.into_iter().chain(installs).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Ipv4Cidr {
        text.parse().expect("a CIDR")
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().expect("an address")
    }

    fn routes(list: &[(&str, &str)]) -> BTreeMap<Ipv4Cidr, Ipv4Addr> {
        list.iter().map(|(c, n)| (cidr(c), ip(n))).collect()
    }

    fn install(c: &str, n: &str) -> RouteOp {
        RouteOp::Install {
            cidr: cidr(c),
            node: ip(n),
        }
    }

    fn remove(c: &str, n: &str) -> RouteOp {
        RouteOp::Remove {
            cidr: cidr(c),
            node: ip(n),
        }
    }

    #[test]
    fn the_writes_follow_the_nodes() {
        use RoutingMode::{Direct, Tunnel};
        let b = ("10.244.2.0/24", "172.30.0.12");
        let c = ("10.244.3.0/24", "172.30.0.13");
        type Case = (
            &'static str,
            RoutingMode,
            Vec<(&'static str, &'static str)>,
            Vec<(&'static str, &'static str)>,
            bool,
            Vec<RouteOp>,
        );
        let cases: Vec<Case> = vec![
            (
                "nothing to do",
                Tunnel,
                vec![b, c],
                vec![b, c],
                false,
                vec![],
            ),
            (
                "first nodes",
                Tunnel,
                vec![],
                vec![b, c],
                false,
                vec![install(b.0, b.1), install(c.0, c.1)],
            ),
            (
                "a node deleted (tunnel): route, map entry and neighbour entry go",
                Tunnel,
                vec![b, c],
                vec![b],
                false,
                vec![remove(c.0, c.1), RouteOp::RemoveNeighbour(ip("10.244.3.0"))],
            ),
            (
                "a node deleted (direct): no neighbour entry of ours",
                Direct,
                vec![b, c],
                vec![b],
                false,
                vec![remove(c.0, c.1)],
            ),
            (
                "a node's address changed: replaced in place",
                Tunnel,
                vec![b, c],
                vec![b, ("10.244.3.0/24", "172.30.0.99")],
                false,
                vec![install("10.244.3.0/24", "172.30.0.99")],
            ),
            (
                "a node's pod CIDR changed: the old one goes with its next hop",
                Tunnel,
                vec![b, c],
                vec![b, ("10.244.9.0/24", c.1)],
                false,
                vec![
                    remove(c.0, c.1),
                    RouteOp::RemoveNeighbour(ip("10.244.3.0")),
                    install("10.244.9.0/24", c.1),
                ],
            ),
            (
                "a pod CIDR resized in place keeps its next hop",
                Tunnel,
                vec![c],
                vec![("10.244.3.0/25", c.1)],
                false,
                vec![remove(c.0, c.1), install("10.244.3.0/25", c.1)],
            ),
            (
                "the uplink came back: everything installed again",
                Direct,
                vec![b, c],
                vec![b, c],
                true,
                vec![install(b.0, b.1), install(c.0, c.1)],
            ),
        ];
        for (name, mode, installed, desired, reinstall, want) in cases {
            let got = plan(
                mode,
                &routes(&installed),
                &routes(&desired),
                None,
                reinstall,
            );
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn leftovers_of_nodes_gone_while_no_agent_ran_are_removed() {
        let desired = routes(&[("10.244.2.0/24", "172.30.0.12")]);
        let adopted = Adopted {
            routes: [(ip("10.244.2.0"), 24), (ip("10.244.3.0"), 24)].into(),
            map_entries: [(ip("10.244.2.0"), 24), (ip("10.244.3.0"), 24)].into(),
            neighbours: [ip("10.244.2.0"), ip("10.244.3.0")].into(),
        };
        let got = plan(
            RoutingMode::Tunnel,
            &BTreeMap::new(),
            &desired,
            Some(&adopted),
            false,
        );
        assert_eq!(
            got,
            vec![
                RouteOp::RemoveAdoptedRoute(ip("10.244.3.0"), 24),
                RouteOp::RemoveAdoptedMapEntry(ip("10.244.3.0"), 24),
                RouteOp::RemoveNeighbour(ip("10.244.3.0")),
                install("10.244.2.0/24", "172.30.0.12"),
            ]
        );
        // Nothing wanted any more: every leftover goes, a neighbour entry once.
        let installed = routes(&[("10.244.3.0/24", "172.30.0.13")]);
        let got = plan(
            RoutingMode::Tunnel,
            &installed,
            &BTreeMap::new(),
            Some(&adopted),
            false,
        );
        assert_eq!(
            got,
            vec![
                remove("10.244.3.0/24", "172.30.0.13"),
                RouteOp::RemoveAdoptedRoute(ip("10.244.2.0"), 24),
                RouteOp::RemoveAdoptedMapEntry(ip("10.244.2.0"), 24),
                RouteOp::RemoveNeighbour(ip("10.244.2.0")),
                RouteOp::RemoveNeighbour(ip("10.244.3.0")),
            ]
        );
    }
}

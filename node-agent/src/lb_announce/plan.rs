//! The pure half of L2 announcements: which LoadBalancer addresses this node may answer for,
//! and which Lease writes elect one announcing node per address (in the manner of Cilium's L2
//! announcements and MetalLB's L2 mode, with a `coordination.k8s.io/v1` Lease per address as
//! Cilium does).
//!
//! Expiry is timed by how long this node has seen a Lease record unchanged (its
//! `resourceVersion`), not by the `renewTime` another machine wrote, so clock skew cannot
//! shorten a lease (client-go's leader election does the same). Cost: O(addresses) per round.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    time::Duration,
};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::ResourceExt as _;

/// The namespace of the announcement Leases.
pub const LEASE_NAMESPACE: &str = "kube-system";
/// The prefix of an announcement Lease's name (`keelson-lb-10-0-0-5`).
pub const LEASE_PREFIX: &str = "keelson-lb-";

/// The Lease that elects the announcer of `ip`.
pub fn lease_name(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("{LEASE_PREFIX}{a}-{b}-{c}-{d}")
}

/// The address a Lease named by [`lease_name`] elects for, if the name is one.
pub fn lease_address(name: &str) -> Option<Ipv4Addr> {
    let dashed = name.strip_prefix(LEASE_PREFIX)?;
    let dotted = dashed.replace('-', ".");
    let ip: Ipv4Addr = dotted.parse().ok()?;
    (lease_name(ip) == name).then_some(ip)
}

/// Whether this node may contend for each LoadBalancer address of `services`: every address
/// in `status.loadBalancer.ingress[].ip` of a `type: LoadBalancer` Service; with
/// `externalTrafficPolicy: Local` only when the node has a ready, not terminating endpoint of
/// it (kube-proxy drops external traffic to such a Service on nodes without one), with
/// `Cluster` when the Service has a ready endpoint anywhere. `slices` are keyed by
/// `namespace/service`. An address two Services share is eligible if either makes it so.
pub fn eligible_addresses(
    services: &[&Service],
    slices: &BTreeMap<String, Vec<&EndpointSlice>>,
    node_name: &str,
) -> BTreeMap<Ipv4Addr, bool> {
    let mut addresses: BTreeMap<Ipv4Addr, bool> = BTreeMap::new();
    for service in services {
        let Some(spec) = service.spec.as_ref() else {
            continue;
        };
        if spec.type_.as_deref() != Some("LoadBalancer") {
            continue;
        }
        let local = spec.external_traffic_policy.as_deref() == Some("Local");
        let id = format!(
            "{}/{}",
            service.namespace().unwrap_or_default(),
            service.name_any()
        );
        let eligible = slices.get(&id).is_some_and(|slices| {
            slices
                .iter()
                .filter(|s| s.address_type == "IPv4")
                .flat_map(|s| s.endpoints.iter())
                .filter(|e| !local || e.node_name.as_deref() == Some(node_name))
                .any(|e| {
                    let conditions = e.conditions.as_ref();
                    // Kubernetes: nil `ready` means ready.
                    conditions.and_then(|c| c.ready).unwrap_or(true)
                        && !conditions.and_then(|c| c.terminating).unwrap_or(false)
                })
        });
        let ingress = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for ip in ingress
            .into_iter()
            .flatten()
            .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok())
        {
            *addresses.entry(ip).or_default() |= eligible;
        }
    }
    addresses
}

/// A Lease as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseView {
    /// `spec.holderIdentity` (`None` or empty: released).
    pub holder: Option<String>,
    /// `spec.leaseDurationSeconds`.
    pub duration: Duration,
    /// How long this node has seen the record unchanged.
    pub unchanged_for: Duration,
}

impl LeaseView {
    fn held_by(&self, node: &str) -> bool {
        self.holder.as_deref() == Some(node)
    }

    fn free(&self) -> bool {
        self.holder.as_deref().is_none_or(str::is_empty) || self.unchanged_for >= self.duration
    }
}

/// One Lease write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseWrite {
    /// Create the Lease with this node as holder.
    Create,
    /// Write this node's `renewTime` (it holds the Lease).
    Renew,
    /// Write this node as holder of a released or expired Lease (conditional on the
    /// `resourceVersion` read: of two racing nodes one wins).
    TakeOver,
    /// Delete the Lease: this node holds it and may not any more, or nobody holds it and no
    /// Service has the address.
    Delete,
}

/// What one round decides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The Lease writes, by address.
    pub writes: BTreeMap<Ipv4Addr, LeaseWrite>,
    /// The addresses to announce once their write succeeded (each has a Create, Renew or
    /// TakeOver in `writes`).
    pub announce: BTreeSet<Ipv4Addr>,
}

/// The round of node `node`: `ready` is whether the node may announce at all (its Node is
/// Ready), `addresses` each LoadBalancer address with this node's eligibility, `leases` the
/// announcement Leases by address.
pub fn plan(
    node: &str,
    ready: bool,
    addresses: &BTreeMap<Ipv4Addr, bool>,
    leases: &BTreeMap<Ipv4Addr, LeaseView>,
) -> Plan {
    let mut plan = Plan::default();
    for (&ip, &eligible) in addresses {
        let wants = ready && eligible;
        let write = match (leases.get(&ip), wants) {
            (None, true) => Some(LeaseWrite::Create),
            (Some(lease), true) if lease.held_by(node) => Some(LeaseWrite::Renew),
            (Some(lease), true) if lease.free() => Some(LeaseWrite::TakeOver),
            // Giving up: delete, so another node takes over without waiting for expiry.
            (Some(lease), false) if lease.held_by(node) => Some(LeaseWrite::Delete),
            _ => None,
        };
        if let Some(write) = write {
            plan.writes.insert(ip, write);
            if write != LeaseWrite::Delete {
                plan.announce.insert(ip);
            }
        }
    }
    // Leases of addresses no Service has any more: the holder deletes its own, anybody an
    // expired one.
    for (&ip, lease) in leases {
        if !addresses.contains_key(&ip) && (lease.held_by(node) || lease.free()) {
            plan.writes.insert(ip, LeaseWrite::Delete);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 200);
    const B: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 201);

    fn lease(holder: &str, unchanged_s: u64) -> LeaseView {
        LeaseView {
            holder: (!holder.is_empty()).then(|| holder.to_owned()),
            duration: Duration::from_secs(5),
            unchanged_for: Duration::from_secs(unchanged_s),
        }
    }

    #[test]
    fn lease_names_round_trip() {
        assert_eq!(lease_name(A), "keelson-lb-172-30-0-200");
        assert_eq!(lease_address("keelson-lb-172-30-0-200"), Some(A));
        for name in [
            "keelson-lb-1-2-3",
            "keelson-lb-01-2-3-4",
            "other",
            "keelson-lb-1.2.3.4",
        ] {
            assert_eq!(lease_address(name), None, "{name}");
        }
    }

    #[test]
    fn one_table_of_rounds() {
        use LeaseWrite::*;
        // (case, ready, addresses, leases, writes, announce)
        type Case<'a> = (
            &'a str,
            bool,
            Vec<(Ipv4Addr, bool)>,
            Vec<(Ipv4Addr, LeaseView)>,
            Vec<(Ipv4Addr, LeaseWrite)>,
            Vec<Ipv4Addr>,
        );
        let cases: Vec<Case> = vec![
            (
                "new address: create",
                true,
                vec![(A, true)],
                vec![],
                vec![(A, Create)],
                vec![A],
            ),
            (
                "held by me: renew",
                true,
                vec![(A, true)],
                vec![(A, lease("n1", 9))],
                vec![(A, Renew)],
                vec![A],
            ),
            (
                "held by another, fresh: wait",
                true,
                vec![(A, true)],
                vec![(A, lease("n2", 4))],
                vec![],
                vec![],
            ),
            (
                "held by another, expired: take over",
                true,
                vec![(A, true)],
                vec![(A, lease("n2", 5))],
                vec![(A, TakeOver)],
                vec![A],
            ),
            (
                "released: take over at once",
                true,
                vec![(A, true)],
                vec![(A, lease("", 0))],
                vec![(A, TakeOver)],
                vec![A],
            ),
            (
                "not ready: no lease, nothing",
                false,
                vec![(A, true)],
                vec![],
                vec![],
                vec![],
            ),
            (
                "not ready, held by me: give up",
                false,
                vec![(A, true)],
                vec![(A, lease("n1", 0))],
                vec![(A, Delete)],
                vec![],
            ),
            (
                "no local endpoint, held by me: give up",
                true,
                vec![(A, false)],
                vec![(A, lease("n1", 0))],
                vec![(A, Delete)],
                vec![],
            ),
            (
                "no local endpoint, expired lease: leave it",
                true,
                vec![(A, false)],
                vec![(A, lease("n2", 60))],
                vec![],
                vec![],
            ),
            (
                "address gone, my lease: delete",
                true,
                vec![],
                vec![(A, lease("n1", 0))],
                vec![(A, Delete)],
                vec![],
            ),
            (
                "address gone, other's fresh lease: theirs to delete",
                true,
                vec![],
                vec![(A, lease("n2", 1))],
                vec![],
                vec![],
            ),
            (
                "address gone, expired lease: delete",
                true,
                vec![],
                vec![(A, lease("n2", 6))],
                vec![(A, Delete)],
                vec![],
            ),
            (
                "two addresses, one each",
                true,
                vec![(A, true), (B, true)],
                vec![(A, lease("n1", 0)), (B, lease("n3", 0))],
                vec![(A, Renew)],
                vec![A],
            ),
        ];
        for (case, ready, addresses, leases, writes, announce) in cases {
            let got = plan(
                "n1",
                ready,
                &addresses.into_iter().collect(),
                &leases.into_iter().collect(),
            );
            assert_eq!(got.writes, writes.into_iter().collect(), "{case}: writes");
            assert_eq!(
                got.announce,
                announce.into_iter().collect(),
                "{case}: announce"
            );
        }
    }

    fn service(name: &str, local: bool, ips: &[&str]) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "default", "name": name},
            "spec": {"type": "LoadBalancer",
                     "externalTrafficPolicy": if local { "Local" } else { "Cluster" }},
            "status": {"loadBalancer": {"ingress": ips.iter().map(|ip| serde_json::json!({"ip": ip})).collect::<Vec<_>>()}},
        }))
        .expect("a Service")
    }

    fn slice(endpoints: &[(&str, Option<bool>)]) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "default", "name": "s"},
            "addressType": "IPv4",
            "endpoints": endpoints.iter().enumerate().map(|(i, (node, ready))| serde_json::json!({
                "addresses": [format!("10.244.0.{}", i + 2)],
                "nodeName": node,
                "conditions": {"ready": ready},
            })).collect::<Vec<_>>(),
        }))
        .expect("an EndpointSlice")
    }

    #[test]
    fn eligibility_follows_the_traffic_policy() {
        let cluster = service("c", false, &["172.30.0.200"]);
        let local = service("l", true, &["172.30.0.201"]);
        let bare = service("b", false, &["172.30.0.202"]);
        let mut plain: Service = service("p", false, &["172.30.0.203"]);
        plain.spec.as_mut().expect("spec").type_ = Some("ClusterIP".into());
        let remote = slice(&[("n2", Some(true)), ("n1", Some(false))]);
        let slices: BTreeMap<String, Vec<&EndpointSlice>> = [
            ("default/c".to_owned(), vec![&remote]),
            ("default/l".to_owned(), vec![&remote]),
        ]
        .into_iter()
        .collect();
        let got = eligible_addresses(&[&cluster, &local, &bare, &plain], &slices, "n1");
        let want: BTreeMap<Ipv4Addr, bool> = [
            ("172.30.0.200".parse().expect("ip"), true),
            ("172.30.0.201".parse().expect("ip"), false),
            ("172.30.0.202".parse().expect("ip"), false),
        ]
        .into_iter()
        .collect();
        assert_eq!(got, want);
        // On n2 the Local Service has its ready endpoint.
        let got = eligible_addresses(&[&local], &slices, "n2");
        assert_eq!(got.values().copied().collect::<Vec<_>>(), vec![true]);
    }
}

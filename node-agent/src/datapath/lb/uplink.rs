//! The node's uplinks: `tc_from_netdev` at the TC ingress of the interfaces traffic from outside
//! the node comes in by, where NodePorts, externalIPs and LoadBalancer IPs answer.
//!
//! Replies need no program of their own here: a reply from a backend on another node (the flow
//! was source-NATed) comes back in through an uplink and is translated by `tc_from_netdev`'s
//! conntrack lookup; a reply from a local pod is translated at the ingress of the pod's veth by
//! `tc_from_pod` and sent out of the uplink the request came in by. Both read the same pinned
//! conntrack table.

use std::collections::BTreeSet;

use super::{LoadBalancer, TcHook};
use crate::datapath::DatapathError;

/// What `--uplink` asked for, resolved to interface names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uplinks {
    /// The interfaces, without duplicates, in the order given.
    pub interfaces: Vec<String>,
    /// `auto` was asked for but no IPv4 default route exists.
    pub auto_unresolved: bool,
}

/// Why `--uplink` could not be honoured.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// `off` given together with interfaces.
    #[error("`off` cannot be combined with interfaces ({0})")]
    OffWithOthers(String),
    /// An empty value.
    #[error("an empty interface name")]
    Empty,
    /// No interface of that name in the agent's network namespace.
    #[error("{0}: no such network interface")]
    NoSuchInterface(String),
    /// Attaching or detaching the program failed.
    #[error("attaching tc_from_netdev to {interface}")]
    Datapath {
        /// The uplink.
        interface: String,
        /// What failed.
        #[source]
        source: DatapathError,
    },
}

/// Resolves the values of `--uplink` (names, `auto`, `off`): `auto` is the interface holding the
/// IPv4 default route (`default_route`), `off` (alone; `false` too, as a YAML config file may
/// give it) means none.
pub fn resolve_uplinks(
    values: &[String],
    default_route: impl FnOnce() -> Option<String>,
) -> Result<Uplinks, UplinkError> {
    let values: Vec<&str> = values.iter().map(|v| v.trim()).collect();
    let off = |v: &&str| matches!(*v, "off" | "false");
    if values.iter().any(off) {
        if values.len() > 1 {
            return Err(UplinkError::OffWithOthers(values.join(",")));
        }
        return Ok(Uplinks {
            interfaces: Vec::new(),
            auto_unresolved: false,
        });
    }
    let mut default_route = Some(default_route);
    let mut uplinks = Uplinks {
        interfaces: Vec::new(),
        auto_unresolved: false,
    };
    for value in values {
        let name = match value {
            "" => return Err(UplinkError::Empty),
            "auto" => match default_route.take().and_then(|route| route()) {
                Some(name) => name,
                None => {
                    uplinks.auto_unresolved = true;
                    continue;
                }
            },
            name => name.to_owned(),
        };
        if !uplinks.interfaces.contains(&name) {
            uplinks.interfaces.push(name);
        }
    }
    Ok(uplinks)
}

/// Errs on the first of `interfaces` that does not exist in the calling thread's network
/// namespace.
pub fn require_interfaces(interfaces: &[String]) -> Result<(), UplinkError> {
    match interfaces
        .iter()
        .find(|name| nix::net::if_::if_nametoindex(name.as_str()).is_err())
    {
        Some(missing) => Err(UplinkError::NoSuchInterface(missing.clone())),
        None => Ok(()),
    }
}

/// Attaches `tc_from_netdev` to the TC ingress of each of `interfaces` (names in the calling
/// thread's network namespace; each must exist) and removes the pinned `tc_from_netdev` links of
/// every other interface (an earlier run's uplinks that are no longer asked for, or are gone).
/// A link an earlier run pinned on one of `interfaces` is kept as it is, so a restart never
/// stacks a second program. Returns the interfaces whose links it removed.
pub fn attach_uplinks(
    lb: &mut LoadBalancer,
    interfaces: &[String],
) -> Result<Vec<String>, UplinkError> {
    require_interfaces(interfaces)?;
    let keep: BTreeSet<&str> = interfaces.iter().map(String::as_str).collect();
    let mut removed = Vec::new();
    for pinned in lb.tc_link_interfaces(TcHook::FromNetdev) {
        if keep.contains(pinned.as_str()) {
            continue;
        }
        LoadBalancer::detach_tc(lb.pin_dir(), &pinned, TcHook::FromNetdev).map_err(|source| {
            UplinkError::Datapath {
                interface: pinned.clone(),
                source,
            }
        })?;
        removed.push(pinned);
    }
    for interface in interfaces {
        lb.attach_tc(interface, TcHook::FromNetdev)
            .map_err(|source| UplinkError::Datapath {
                interface: interface.clone(),
                source,
            })?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(list: &[&str]) -> Vec<String> {
        list.iter().map(ToString::to_string).collect()
    }

    fn resolve(list: &[&str], route: Option<&str>) -> Result<Uplinks, UplinkError> {
        resolve_uplinks(&values(list), || route.map(ToOwned::to_owned))
    }

    #[test]
    fn auto_is_the_default_route_interface() {
        let uplinks = resolve(&["auto"], Some("eth0")).expect("resolves");
        assert_eq!(uplinks.interfaces, ["eth0"]);
        assert!(!uplinks.auto_unresolved);
    }

    #[test]
    fn auto_without_a_default_route_is_reported_not_an_error() {
        let uplinks = resolve(&["auto"], None).expect("resolves");
        assert!(uplinks.interfaces.is_empty());
        assert!(uplinks.auto_unresolved);
        let uplinks = resolve(&["auto", "eth1"], None).expect("resolves");
        assert_eq!(uplinks.interfaces, ["eth1"]);
        assert!(uplinks.auto_unresolved);
    }

    #[test]
    fn names_are_kept_in_order_without_duplicates() {
        let uplinks = resolve(&["eth1", " auto", "eth0", "eth1"], Some("eth0")).expect("resolves");
        assert_eq!(uplinks.interfaces, ["eth1", "eth0"]);
    }

    #[test]
    fn off_means_none_and_stands_alone() {
        for off in ["off", "false"] {
            let uplinks = resolve(&[off], Some("eth0")).expect("resolves");
            assert!(uplinks.interfaces.is_empty() && !uplinks.auto_unresolved);
        }
        assert!(matches!(
            resolve(&["off", "eth0"], None),
            Err(UplinkError::OffWithOthers(_))
        ));
        assert!(matches!(
            resolve(&["eth0", ""], None),
            Err(UplinkError::Empty)
        ));
    }
}

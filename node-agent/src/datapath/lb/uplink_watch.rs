//! Uplinks that change while the agent runs: an uplink deleted and created again (same name,
//! new interface index) gets `tc_from_netdev` again, the conntrack entries that sent replies
//! out of the old interface send them out of the new one, and the routes of other nodes' pod
//! CIDRs are installed through it again; any IPv4 address change rewrites the SNAT sources
//! (`ksnatsrc_v1`, keyed by interface index).
//!
//! [`UplinkWatch::observe`] turns two views of the namespace's links into those writes (pure);
//! [`watch_uplinks`] follows rtnetlink's link and IPv4 address groups (`RTNLGRP_LINK`,
//! `RTNLGRP_IPV4_IFADDR`) and applies them.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use aya::maps::HashMap;
use futures_util::{StreamExt as _, TryStreamExt as _};
use keelson_ebpf_common::{CtKey, CtValue, maps};
use netlink_packet_route::{
    AddressFamily,
    address::AddressAttribute,
    link::{LinkAttribute, LinkFlags},
};
use rtnetlink::{Handle, MulticastGroup};

use super::{LoadBalancer, TcHook, typed_mut};
use crate::{datapath::DatapathError, error_chain};

/// One watched uplink as the kernel has it now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkSeen {
    /// Its interface index.
    pub ifindex: u32,
    /// Administratively up (`IFF_UP`): the kernel flushes an interface's routes when it goes
    /// down.
    pub up: bool,
}

/// The namespace as far as uplinks are concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkView {
    /// The watched uplinks that exist, by name.
    pub uplinks: BTreeMap<String, LinkSeen>,
    /// Every IPv4 address of the namespace with its interface's index.
    pub addresses: BTreeSet<(u32, Ipv4Addr)>,
}

/// A write [`UplinkWatch::observe`] asks for, in the order given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UplinkAction {
    /// Attach `tc_from_netdev` to the uplink of this name (a new interface; also rewrites the
    /// SNAT sources).
    AttachTc(String),
    /// Conntrack entries sending packets out of interface `from` (gone) send them out of `to`.
    MoveFlows {
        /// The former interface index.
        from: u32,
        /// The new one.
        to: u32,
    },
    /// Rewrite the SNAT sources from the namespace's addresses.
    SyncSnatSources,
    /// Install the routes of other nodes' pod CIDRs again through the routing uplink, now this
    /// interface (new, back up, or readdressed: the kernel may have flushed its routes).
    Reroute {
        /// The routing uplink's interface index.
        ifindex: u32,
    },
}

/// What the watcher knows between two views.
#[derive(Debug, Clone)]
pub struct UplinkWatch {
    routing_uplink: Option<String>,
    /// The last interface index seen per uplink name, kept while the interface is gone.
    last_ifindex: BTreeMap<String, u32>,
    view: LinkView,
}

impl UplinkWatch {
    /// Starts from `initial`, the view right after the uplinks were attached. `routing_uplink`
    /// names the uplink the routes to other nodes leave by, if any.
    pub fn new(initial: LinkView, routing_uplink: Option<String>) -> Self {
        Self {
            routing_uplink,
            last_ifindex: initial
                .uplinks
                .iter()
                .map(|(name, seen)| (name.clone(), seen.ifindex))
                .collect(),
            view: initial,
        }
    }

    /// The writes that bring the datapath in step with `now`, and `now` remembered. O(uplinks
    /// + addresses).
    pub fn observe(&mut self, now: LinkView) -> Vec<UplinkAction> {
        let mut attach = Vec::new();
        let mut moves = Vec::new();
        let mut reroute = None;
        let addresses_of = |view: &LinkView, ifindex: u32| -> Vec<Ipv4Addr> {
            view.addresses
                .iter()
                .filter(|(index, _)| *index == ifindex)
                .map(|(_, address)| *address)
                .collect()
        };
        for (name, seen) in &now.uplinks {
            let last = self.last_ifindex.insert(name.clone(), seen.ifindex);
            let renewed = last != Some(seen.ifindex);
            if renewed {
                attach.push(UplinkAction::AttachTc(name.clone()));
                if let Some(from) = last {
                    moves.push(UplinkAction::MoveFlows {
                        from,
                        to: seen.ifindex,
                    });
                }
            }
            if self.routing_uplink.as_deref() != Some(name.as_str()) || !seen.up {
                continue;
            }
            let was_up = self
                .view
                .uplinks
                .get(name)
                .is_some_and(|before| before.up && before.ifindex == seen.ifindex);
            let readdressed =
                addresses_of(&self.view, seen.ifindex) != addresses_of(&now, seen.ifindex);
            if renewed || !was_up || readdressed {
                reroute = Some(UplinkAction::Reroute {
                    ifindex: seen.ifindex,
                });
            }
        }
        // Attaching rewrites the SNAT sources already.
        let sync = (attach.is_empty() && now.addresses != self.view.addresses)
            .then_some(UplinkAction::SyncSnatSources);
        self.view = now;
        attach
            .into_iter()
            .chain(moves)
            .chain(sync)
            .chain(reroute)
            .collect()
    }
}

/// Why the uplink watcher stopped.
#[derive(Debug, thiserror::Error)]
pub enum UplinkWatchError {
    /// The netlink socket could not be opened or joined to its groups.
    #[error("netlink connection")]
    Connection(#[source] std::io::Error),
    /// A netlink dump the kernel refused.
    #[error("netlink: {what}")]
    Netlink {
        /// What was being listed.
        what: &'static str,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// The kernel's notifications stopped.
    #[error("the netlink notification stream ended")]
    Ended,
}

/// How long link and address notifications are gathered before the namespace is looked at:
/// re-creating an interface is several notifications in a row.
const SETTLE: Duration = Duration::from_millis(50);

/// Follows the link and IPv4 address notifications of the calling thread's network namespace
/// and applies [`UplinkWatch::observe`]'s writes to `lb`; `routing` (the routing uplink's name
/// and where [`crate::routing::run`] hears of it) gets the new interface index on
/// [`UplinkAction::Reroute`]. Runs until the notifications stop; a write that fails is logged
/// and tried again with the next notification. Call within a tokio runtime.
pub async fn watch_uplinks(
    lb: Arc<Mutex<LoadBalancer>>,
    uplinks: Vec<String>,
    routing: Option<(String, tokio::sync::mpsc::UnboundedSender<u32>)>,
) -> Result<(), UplinkWatchError> {
    let (connection, handle, mut messages) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Link, MulticastGroup::Ipv4Ifaddr])
            .map_err(UplinkWatchError::Connection)?;
    let task = tokio::spawn(connection);
    let _stop = AbortOnDrop(task);
    let (routing_uplink, routes) = routing.unzip();
    let mut watch = UplinkWatch::new(look(&handle, &uplinks).await?, routing_uplink);
    tracing::debug!(uplinks = ?uplinks, "following the uplinks' links and addresses");
    loop {
        messages.next().await.ok_or(UplinkWatchError::Ended)?;
        while let Ok(Some(_)) = tokio::time::timeout(SETTLE, messages.next()).await {}
        let view = match look(&handle, &uplinks).await {
            Ok(view) => view,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "looking at the uplinks");
                continue;
            }
        };
        for action in watch.observe(view) {
            let done = match &action {
                UplinkAction::AttachTc(interface) => lock(&lb)
                    .attach_tc(interface, TcHook::FromNetdev)
                    .map(|()| {
                        tracing::info!(interface, "uplink created again: tc_from_netdev attached")
                    }),
                UplinkAction::MoveFlows { from, to } => {
                    lock(&lb).move_flows(*from, *to).map(|moved| {
                        tracing::info!(from, to, moved, "conntrack entries moved to the new uplink")
                    })
                }
                UplinkAction::SyncSnatSources => lock(&lb)
                    .sync_snat_sources()
                    .map(|sources| tracing::info!(?sources, "SNAT sources rewritten")),
                UplinkAction::Reroute { ifindex } => {
                    if let Some(routes) = &routes {
                        let _ = routes.send(*ifindex);
                    }
                    Ok(())
                }
            };
            if let Err(error) = done {
                tracing::warn!(?action, error = %error_chain(&error), "following an uplink change");
            }
        }
    }
}

fn lock(lb: &Mutex<LoadBalancer>) -> std::sync::MutexGuard<'_, LoadBalancer> {
    lb.lock().unwrap_or_else(PoisonError::into_inner)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The uplinks and IPv4 addresses of the namespace `handle` speaks to.
async fn look(handle: &Handle, uplinks: &[String]) -> Result<LinkView, UplinkWatchError> {
    let mut view = LinkView::default();
    let mut links = handle.link().get().execute();
    while let Some(link) = links
        .try_next()
        .await
        .map_err(|source| UplinkWatchError::Netlink {
            what: "listing links",
            source,
        })?
    {
        let name = link.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(name) => Some(name),
            _ => None,
        });
        if let Some(name) = name.filter(|n| uplinks.contains(n)) {
            view.uplinks.insert(
                name.clone(),
                LinkSeen {
                    ifindex: link.header.index,
                    up: link.header.flags.contains(LinkFlags::Up),
                },
            );
        }
    }
    let mut addresses = handle.address().get().execute();
    while let Some(message) =
        addresses
            .try_next()
            .await
            .map_err(|source| UplinkWatchError::Netlink {
                what: "listing addresses",
                source,
            })?
    {
        if message.header.family != AddressFamily::Inet {
            continue;
        }
        let local = message.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(address)) => Some(*address),
            _ => None,
        });
        let address = local.or_else(|| {
            message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(address)) => Some(*address),
                _ => None,
            })
        });
        if let Some(address) = address {
            view.addresses.insert((message.header.index, address));
        }
    }
    Ok(view)
}

/// `bpf_map_update_elem`'s flag: only replace an existing entry.
const BPF_EXIST: u64 = 2;

impl LoadBalancer {
    /// Points the conntrack entries that send packets out of interface `from` (deleted) at
    /// `to` (its successor of the same name), so flows through a re-created uplink go on.
    /// One pass over the conntrack map. Returns how many entries it changed.
    pub fn move_flows(&mut self, from: u32, to: u32) -> Result<usize, DatapathError> {
        let mut ct: HashMap<_, CtKey, CtValue> = typed_mut(&mut self.ebpf, maps::CT)?;
        let stale: Vec<(CtKey, CtValue)> = ct
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, value)| value.ifindex == from)
            .collect();
        for (key, mut value) in stale.iter().copied() {
            value.ifindex = to;
            // An entry the programs or the GC removed meanwhile stays removed.
            match ct.insert(key, value, BPF_EXIST) {
                Ok(()) => {}
                Err(aya::maps::MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) => {}
                Err(source) => {
                    return Err(DatapathError::Map {
                        map: maps::CT,
                        source: Box::new(source),
                    });
                }
            }
        }
        Ok(stale.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(uplinks: &[(&str, u32, bool)], addresses: &[(u32, &str)]) -> LinkView {
        LinkView {
            uplinks: uplinks
                .iter()
                .map(|(name, ifindex, up)| {
                    (
                        (*name).to_owned(),
                        LinkSeen {
                            ifindex: *ifindex,
                            up: *up,
                        },
                    )
                })
                .collect(),
            addresses: addresses
                .iter()
                .map(|(i, a)| (*i, a.parse().expect("an address")))
                .collect(),
        }
    }

    #[test]
    fn changes_of_the_uplinks_become_writes() {
        use UplinkAction::*;
        let start = view(
            &[("eth0", 2, true), ("eth1", 3, true)],
            &[(2, "10.0.0.5"), (3, "10.1.0.5")],
        );
        type Case = (&'static str, Vec<LinkView>, Vec<UplinkAction>);
        let cases: Vec<Case> = vec![
            ("nothing changed", vec![start.clone()], vec![]),
            (
                "an uplink deleted: nothing to attach to, its address gone from the SNAT sources",
                vec![view(&[("eth1", 3, true)], &[(3, "10.1.0.5")])],
                vec![SyncSnatSources],
            ),
            (
                "deleted and created again, down, then addressed, then up",
                vec![
                    view(&[("eth1", 3, true)], &[(3, "10.1.0.5")]),
                    view(&[("eth0", 9, false), ("eth1", 3, true)], &[(3, "10.1.0.5")]),
                    view(
                        &[("eth0", 9, false), ("eth1", 3, true)],
                        &[(3, "10.1.0.5"), (9, "10.0.0.5")],
                    ),
                    view(
                        &[("eth0", 9, true), ("eth1", 3, true)],
                        &[(3, "10.1.0.5"), (9, "10.0.0.5")],
                    ),
                ],
                // Only the last view's writes are compared.
                vec![Reroute { ifindex: 9 }],
            ),
            (
                "created again in one go (several notifications gathered)",
                vec![view(
                    &[("eth0", 9, true), ("eth1", 3, true)],
                    &[(3, "10.1.0.5"), (9, "10.0.0.5")],
                )],
                vec![
                    AttachTc("eth0".into()),
                    MoveFlows { from: 2, to: 9 },
                    Reroute { ifindex: 9 },
                ],
            ),
            (
                "an uplink that is not the routing one: no reroute",
                vec![view(
                    &[("eth0", 2, true), ("eth1", 7, true)],
                    &[(2, "10.0.0.5"), (7, "10.1.0.5")],
                )],
                vec![AttachTc("eth1".into()), MoveFlows { from: 3, to: 7 }],
            ),
            (
                "the routing uplink down: nothing to route through",
                vec![view(
                    &[("eth0", 2, false), ("eth1", 3, true)],
                    &[(2, "10.0.0.5"), (3, "10.1.0.5")],
                )],
                vec![],
            ),
            (
                "down and up again: its routes were flushed",
                vec![
                    view(
                        &[("eth0", 2, false), ("eth1", 3, true)],
                        &[(2, "10.0.0.5"), (3, "10.1.0.5")],
                    ),
                    start.clone(),
                ],
                vec![Reroute { ifindex: 2 }],
            ),
            (
                "the routing uplink readdressed",
                vec![view(
                    &[("eth0", 2, true), ("eth1", 3, true)],
                    &[(2, "10.0.0.6"), (3, "10.1.0.5")],
                )],
                vec![SyncSnatSources, Reroute { ifindex: 2 }],
            ),
            (
                "an address on another interface",
                vec![view(
                    &[("eth0", 2, true), ("eth1", 3, true)],
                    &[(2, "10.0.0.5"), (3, "10.1.0.5"), (4, "192.168.7.1")],
                )],
                vec![SyncSnatSources],
            ),
        ];
        for (name, views, want) in cases {
            let mut watch = UplinkWatch::new(start.clone(), Some("eth0".into()));
            let mut got = Vec::new();
            for view in views {
                got = watch.observe(view);
            }
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn an_uplink_gone_and_back_moves_flows_from_its_last_index() {
        let start = view(&[("eth0", 2, true)], &[(2, "10.0.0.5")]);
        let mut watch = UplinkWatch::new(start, None);
        assert_eq!(
            watch.observe(view(&[], &[])),
            vec![UplinkAction::SyncSnatSources]
        );
        assert_eq!(
            watch.observe(view(&[("eth0", 5, true)], &[(5, "10.0.0.5")])),
            vec![
                UplinkAction::AttachTc("eth0".into()),
                UplinkAction::MoveFlows { from: 2, to: 5 },
            ]
        );
        // Seen once, nothing more to do.
        assert_eq!(
            watch.observe(view(&[("eth0", 5, true)], &[(5, "10.0.0.5")])),
            vec![]
        );
    }
}

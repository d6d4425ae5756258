//! Pod networking across nodes: every other node's pod CIDR is routed to that node, with no
//! NAT between pods.
//!
//! Two modes, one per cluster (`--routing`):
//! - `direct`: the nodes share an L2 network; a pod CIDR's next hop is its node's address on
//!   the uplink.
//! - `tunnel`: VXLAN between the nodes' addresses, through a collect-metadata vxlan device
//!   ([`TUNNEL_DEVICE`]): the tunnel endpoint is chosen per packet. Each node's device has the
//!   MAC [`tunnel::device_mac`] of its address and ARP off; a pod CIDR's next hop is its network
//!   address with a permanent neighbour entry for the owning node's device MAC, so frames are
//!   addressed to the receiving device (which drops frames from its own MAC as loops).
//!
//! Two layers carry the same routes. The node's routing table (rtnetlink; routes tagged with
//! [`ROUTE_PROTOCOL`], so a restart finds and prunes its own) serves the node's own traffic and
//! is the slow path. The `NODE_ROUTES` LPM map lets `tc_from_pod` send a pod's packet to the
//! owning node itself (`bpf_redirect_neigh` or tunnel key + redirect), skipping the node's
//! stack; `--routing-bpf off` leaves it empty (the kernel's plain routing, for comparison).
//!
//! The routes come from the Nodes: `spec.podCIDR` and the first `InternalIP` of every node
//! but this one.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::{Arc, Mutex, PoisonError},
};

use futures_util::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::Node;
use keelson_api::cidr::Ipv4Cidr;
use keelson_ebpf_common::{NodeRoute, route_mode, tunnel};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt as _, watcher},
};
use netlink_packet_route::{
    AddressFamily,
    link::LinkAttribute,
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteIpTunnel, RouteProtocol},
};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan, RouteMessageBuilder};

mod plan;

pub use plan::{Adopted, RouteOp, plan};

use crate::{
    datapath::lb::{LoadBalancer, TcHook},
    error_chain,
    network::ipam::parse_pod_cidr,
};

/// The vxlan device of `tunnel` mode.
pub const TUNNEL_DEVICE: &str = "keelson-vxlan";

/// The routing protocol number tagging keelson's routes (`ip route show proto 0x6b`).
pub const ROUTE_PROTOCOL: u8 = 0x6b;

/// How pod CIDRs of other nodes are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoutingMode {
    /// Next hop: the node's address (shared L2).
    Direct,
    /// VXLAN to the node's address.
    Tunnel,
}

/// A `--routing` value that names no mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is neither `direct` nor `tunnel`")]
pub struct UnknownRoutingMode {
    /// What was given.
    pub value: String,
}

impl std::str::FromStr for RoutingMode {
    type Err = UnknownRoutingMode;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "direct" => Ok(Self::Direct),
            "tunnel" | "vxlan" => Ok(Self::Tunnel),
            other => Err(UnknownRoutingMode {
                value: other.to_owned(),
            }),
        }
    }
}

impl std::fmt::Display for RoutingMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Direct => "direct",
            Self::Tunnel => "tunnel",
        })
    }
}

/// Cross-node routing failures.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    /// A netlink request the kernel refused.
    #[error("netlink: {what}")]
    Netlink {
        /// What was being done.
        what: &'static str,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// The netlink socket could not be opened.
    #[error("netlink connection")]
    Connection(#[source] std::io::Error),
    /// The uplink named for routing does not exist.
    #[error("the uplink {0} does not exist")]
    NoUplink(String),
    /// A datapath map or attachment failed.
    #[error("datapath")]
    Datapath(#[source] crate::datapath::DatapathError),
}

fn netlink(what: &'static str) -> impl FnOnce(rtnetlink::Error) -> RoutingError {
    move |source| RoutingError::Netlink { what, source }
}

/// The pod CIDR -> node address routes the Nodes ask for, other than `this_node`'s own: nodes
/// without a pod CIDR or an IPv4 InternalIP are skipped, as are CIDRs that overlap this node's.
pub fn desired_routes(
    nodes: &[Node],
    this_node: &str,
    own_cidr: Option<Ipv4Cidr>,
) -> BTreeMap<Ipv4Cidr, Ipv4Addr> {
    let mut routes = BTreeMap::new();
    for node in nodes {
        if node.metadata.name.as_deref() == Some(this_node) {
            continue;
        }
        let Some(cidr) = node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(|c| parse_pod_cidr(c).ok())
        else {
            continue;
        };
        if own_cidr.is_some_and(|own| own.overlaps(&cidr)) {
            continue;
        }
        let address = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|addresses| {
                addresses
                    .iter()
                    .filter(|a| a.type_ == "InternalIP")
                    .find_map(|a| a.address.parse::<Ipv4Addr>().ok())
            });
        if let Some(address) = address {
            routes.insert(cidr, address);
        }
    }
    routes
}

/// The node's cross-node routing: the netlink handle, the interface routes leave by, and what
/// is installed.
#[derive(Debug)]
pub struct Routing {
    handle: Handle,
    mode: RoutingMode,
    ifindex: u32,
    lb: Option<Arc<Mutex<LoadBalancer>>>,
    installed: BTreeMap<Ipv4Cidr, Ipv4Addr>,
    /// What an earlier run left (kernel routes tagged [`ROUTE_PROTOCOL`], `NODE_ROUTES`
    /// entries, tunnel neighbour entries): kept working until the first [`Routing::apply`]
    /// replaced what is still wanted, then the rest is removed, so an agent restart never cuts
    /// cross-node traffic.
    leftovers: Option<Leftovers>,
    /// The interface routes leave by changed, or its routes were flushed: the next
    /// [`Routing::apply`] installs every route again.
    reinstall: bool,
}

#[derive(Debug, Default)]
struct Leftovers {
    keys: Adopted,
    routes: BTreeMap<(Ipv4Addr, u8), netlink_packet_route::route::RouteMessage>,
}

impl Routing {
    /// Prepares `mode` routing out of `uplink` (this node's `address` is the tunnel's local
    /// end): in tunnel mode creates (or reuses) the vxlan
    /// device, MTU the uplink's minus the encapsulation, and attaches `tc_from_netdev` to it
    /// through `lb` (which delivers tunnelled packets into local pods). With `lb`, routes also
    /// go into `NODE_ROUTES`. Call within a tokio runtime, in the node's network namespace.
    pub async fn start(
        mode: RoutingMode,
        uplink: &str,
        address: Ipv4Addr,
        lb: Option<Arc<Mutex<LoadBalancer>>>,
        datapath: &Arc<Mutex<LoadBalancer>>,
    ) -> Result<Self, RoutingError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(RoutingError::Connection)?;
        tokio::spawn(connection);
        let (uplink_index, uplink_mtu) = link_info(&handle, uplink)
            .await?
            .ok_or_else(|| RoutingError::NoUplink(uplink.to_owned()))?;
        let ifindex = match mode {
            RoutingMode::Direct => uplink_index,
            RoutingMode::Tunnel => {
                let index = ensure_vxlan(&handle, uplink_mtu, address).await?;
                datapath
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .attach_tc(TUNNEL_DEVICE, TcHook::FromNetdev)
                    .map_err(RoutingError::Datapath)?;
                index
            }
        };
        let mut routing = Self {
            handle,
            mode,
            ifindex,
            lb,
            installed: BTreeMap::new(),
            leftovers: None,
            reinstall: false,
        };
        routing.leftovers = Some(routing.find_leftovers().await?);
        Ok(routing)
    }

    /// The MTU pods get in this mode (`None`: the default), from the uplink's.
    pub async fn pod_mtu(mode: RoutingMode, uplink: &str) -> Result<Option<u32>, RoutingError> {
        if mode == RoutingMode::Direct {
            return Ok(None);
        }
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(RoutingError::Connection)?;
        let task = tokio::spawn(connection);
        let info = link_info(&handle, uplink).await;
        task.abort();
        let (_, mtu) = info?.ok_or_else(|| RoutingError::NoUplink(uplink.to_owned()))?;
        Ok(Some(mtu - tunnel::OVERHEAD))
    }

    /// The uplink routes leave by is now `ifindex` (it was deleted and created again, or came
    /// back up and had its routes flushed): the next [`Self::apply`] installs every route
    /// again, through it in direct mode. Tunnel routes leave by the vxlan device, which stays.
    pub fn uplink_changed(&mut self, ifindex: u32) {
        if self.mode == RoutingMode::Direct {
            self.ifindex = ifindex;
            self.reinstall = true;
        }
    }

    /// The routes, `NODE_ROUTES` entries and tunnel neighbour entries a former run left.
    async fn find_leftovers(&self) -> Result<Leftovers, RoutingError> {
        let mut leftovers = Leftovers::default();
        let mut routes = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(route) = routes.try_next().await.map_err(netlink("listing routes"))? {
            if route.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL) {
                continue;
            }
            let destination = route.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(address)) => Some(*address),
                _ => None,
            });
            if let Some(destination) = destination {
                let key = (destination, route.header.destination_prefix_length);
                leftovers.keys.routes.insert(key);
                leftovers.routes.insert(key, route);
            }
        }
        if self.mode == RoutingMode::Tunnel {
            let mut neighbours = self
                .handle
                .neighbours()
                .get()
                .set_address_family(AddressFamily::Inet)
                .execute();
            while let Some(neighbour) = neighbours
                .try_next()
                .await
                .map_err(netlink("listing neighbour entries"))?
            {
                if let Some(address) = tunnel_neighbour(&neighbour, self.ifindex) {
                    leftovers.keys.neighbours.insert(address);
                }
            }
        }
        if let Some(lb) = &self.lb {
            let lb = lb.lock().unwrap_or_else(PoisonError::into_inner);
            leftovers.keys.map_entries = lb
                .node_routes()
                .map_err(RoutingError::Datapath)?
                .into_iter()
                .map(|(network, prefix, _)| (network, prefix))
                .collect();
        }
        Ok(leftovers)
    }

    /// Makes the installed routes `desired`: adds and changes what differs, removes the rest
    /// with their `NODE_ROUTES` and neighbour entries (the first call also removes what a
    /// former run left and `desired` does not hold). See [`plan`].
    pub async fn apply(
        &mut self,
        desired: &BTreeMap<Ipv4Cidr, Ipv4Addr>,
    ) -> Result<(), RoutingError> {
        let ops = plan(
            self.mode,
            &self.installed,
            desired,
            self.leftovers.as_ref().map(|l| &l.keys),
            self.reinstall,
        );
        // Cleared first: a failure below leaves the rest for the next call, which plans again.
        let mut leftovers = self.leftovers.take();
        let reinstall = std::mem::take(&mut self.reinstall);
        let result = self.execute(ops, leftovers.as_mut()).await;
        if result.is_err() {
            self.reinstall |= reinstall;
            self.leftovers = leftovers;
        }
        result
    }

    async fn execute(
        &mut self,
        ops: Vec<RouteOp>,
        mut leftovers: Option<&mut Leftovers>,
    ) -> Result<(), RoutingError> {
        for op in ops {
            match op {
                RouteOp::Remove { cidr, node } => {
                    self.remove(cidr, node).await?;
                    self.installed.remove(&cidr);
                    tracing::info!(%cidr, %node, "pod CIDR route removed");
                }
                RouteOp::RemoveAdoptedRoute(network, prefix) => {
                    if let Some(route) = leftovers
                        .as_deref_mut()
                        .and_then(|l| l.routes.remove(&(network, prefix)))
                    {
                        self.delete_route(route, "removing a stale pod CIDR route")
                            .await?;
                    }
                }
                RouteOp::RemoveAdoptedMapEntry(network, prefix) => {
                    if let Some(lb) = &self.lb {
                        lb.lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove_node_route(network, prefix)
                            .map_err(RoutingError::Datapath)?;
                    }
                }
                RouteOp::RemoveNeighbour(address) => {
                    self.remove_neighbour(address).await?;
                    tracing::info!(next_hop = %address, "tunnel neighbour entry removed");
                }
                RouteOp::Install { cidr, node } => {
                    self.install(cidr, node).await?;
                    self.installed.insert(cidr, node);
                    tracing::info!(%cidr, %node, mode = %self.mode, "pod CIDR routed to its node");
                }
            }
        }
        Ok(())
    }

    fn kernel_route(
        &self,
        cidr: Ipv4Cidr,
        node: Ipv4Addr,
    ) -> netlink_packet_route::route::RouteMessage {
        let builder = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(cidr.network(), cidr.prefix_len())
            .output_interface(self.ifindex)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
        match self.mode {
            RoutingMode::Direct => builder.gateway(node).build(),
            RoutingMode::Tunnel => builder
                .gateway(cidr.network())
                .onlink()
                .encap_ip(vec![
                    RouteIpTunnel::Id(u64::from(tunnel::VNI)),
                    RouteIpTunnel::Destination(node),
                    RouteIpTunnel::Ttl(64),
                ])
                .build(),
        }
    }

    async fn install(&self, cidr: Ipv4Cidr, node: Ipv4Addr) -> Result<(), RoutingError> {
        if self.mode == RoutingMode::Tunnel {
            let mac = tunnel::device_mac(u32::from_ne_bytes(node.octets()));
            self.handle
                .neighbours()
                .add(self.ifindex, cidr.network().into())
                .link_layer_address(&mac)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await
                .map_err(netlink("adding the tunnel next hop's neighbour entry"))?;
        }
        self.handle
            .route()
            .add(self.kernel_route(cidr, node))
            .replace()
            .execute()
            .await
            .map_err(netlink("adding a pod CIDR route"))?;
        if let Some(lb) = &self.lb {
            let route = NodeRoute {
                node_addr_be: u32::from_ne_bytes(node.octets()),
                ifindex: self.ifindex,
                mode: match self.mode {
                    RoutingMode::Direct => route_mode::DIRECT,
                    RoutingMode::Tunnel => route_mode::TUNNEL,
                },
                _pad: [0; 3],
            };
            lb.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .put_node_route(cidr.network(), cidr.prefix_len(), route)
                .map_err(RoutingError::Datapath)?;
        }
        Ok(())
    }

    async fn remove(&self, cidr: Ipv4Cidr, node: Ipv4Addr) -> Result<(), RoutingError> {
        if let Some(lb) = &self.lb {
            lb.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove_node_route(cidr.network(), cidr.prefix_len())
                .map_err(RoutingError::Datapath)?;
        }
        let mut route = self.kernel_route(cidr, node);
        // Matched by destination and protocol.
        route
            .attributes
            .retain(|a| !matches!(a, RouteAttribute::Encap(_) | RouteAttribute::EncapType(_)));
        self.delete_route(route, "removing a pod CIDR route").await
    }

    /// Deletes a route; one the kernel no longer has (flushed with its interface) is no error.
    async fn delete_route(
        &self,
        route: netlink_packet_route::route::RouteMessage,
        what: &'static str,
    ) -> Result<(), RoutingError> {
        match self.handle.route().del(route).execute().await {
            Ok(()) | Err(rtnetlink::Error::NetlinkError(_)) => Ok(()),
            Err(source) => Err(RoutingError::Netlink { what, source }),
        }
    }

    /// Deletes the permanent neighbour entry of `address` on the vxlan device; one already
    /// gone is no error.
    async fn remove_neighbour(&self, address: Ipv4Addr) -> Result<(), RoutingError> {
        let mut message = NeighbourMessage::default();
        message.header.family = AddressFamily::Inet;
        message.header.ifindex = self.ifindex;
        message
            .attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                address,
            )));
        match self.handle.neighbours().del(message).execute().await {
            Ok(()) | Err(rtnetlink::Error::NetlinkError(_)) => Ok(()),
            Err(source) => Err(RoutingError::Netlink {
                what: "removing a tunnel neighbour entry",
                source,
            }),
        }
    }
}

/// The address of `neighbour` if it is one of keelson's tunnel next hops: a permanent entry on
/// the vxlan device (`ifindex`) whose MAC is a tunnel device MAC ([`tunnel::device_mac`]).
fn tunnel_neighbour(neighbour: &NeighbourMessage, ifindex: u32) -> Option<Ipv4Addr> {
    if neighbour.header.ifindex != ifindex || neighbour.header.state != NeighbourState::Permanent {
        return None;
    }
    let mut address = None;
    let mut ours = false;
    for attribute in &neighbour.attributes {
        match attribute {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => address = Some(*a),
            NeighbourAttribute::LinkLayerAddress(mac) => {
                ours = mac.len() == 6 && mac[..2] == tunnel::device_mac(0)[..2];
            }
            _ => {}
        }
    }
    address.filter(|_| ours)
}

/// Keeps `routing` in step with the Nodes until the process stops. `uplink` carries the
/// routing uplink's interface index each time it changed or came back (from the uplink watcher,
/// [`crate::datapath::lb::watch_uplinks`]): every route is installed again through it. A failed
/// update is tried again after [`RETRY`].
pub async fn run(
    client: Client,
    mut routing: Routing,
    this_node: String,
    own_cidr: Option<Ipv4Cidr>,
    mut uplink: tokio::sync::mpsc::UnboundedReceiver<u32>,
) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client);
    let mut events = watcher(nodes, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut known: BTreeMap<String, Node> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, Node>> = None;
    let mut synced = false;
    let mut failed = false;
    let mut uplink_open = true;
    loop {
        let retry = async {
            if failed {
                tokio::time::sleep(RETRY).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            event = events.next() => {
                let Some(event) = event else { return Ok(()) };
                let event = match event {
                    Ok(event) => event,
                    Err(error) => {
                        tracing::warn!(error = %error_chain(&error), "watching Nodes for pod CIDR routes");
                        continue;
                    }
                };
                match event {
                    watcher::Event::Init => {
                        listing = Some(BTreeMap::new());
                        continue;
                    }
                    watcher::Event::InitApply(node) => {
                        if let Some(listing) = &mut listing {
                            listing.insert(node.metadata.name.clone().unwrap_or_default(), node);
                        }
                        continue;
                    }
                    watcher::Event::InitDone => {
                        known = listing.take().unwrap_or_default();
                        synced = true;
                    }
                    watcher::Event::Apply(node) => {
                        known.insert(node.metadata.name.clone().unwrap_or_default(), node);
                    }
                    watcher::Event::Delete(node) => {
                        known.remove(node.metadata.name.as_deref().unwrap_or_default());
                    }
                }
            }
            ifindex = uplink.recv(), if uplink_open => {
                match ifindex {
                    Some(ifindex) => {
                        tracing::info!(ifindex, "the routing uplink changed: routes installed again");
                        routing.uplink_changed(ifindex);
                    }
                    None => {
                        uplink_open = false;
                        continue;
                    }
                }
            }
            () = retry => {}
        }
        if !synced {
            continue;
        }
        let nodes: Vec<Node> = known.values().cloned().collect();
        let desired = desired_routes(&nodes, &this_node, own_cidr);
        failed = match routing.apply(&desired).await {
            Ok(()) => false,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "updating pod CIDR routes");
                true
            }
        };
    }
}

/// How long after a failed update [`run`] tries again.
pub const RETRY: std::time::Duration = std::time::Duration::from_secs(2);

/// Index and MTU of link `name`.
async fn link_info(handle: &Handle, name: &str) -> Result<Option<(u32, u32)>, RoutingError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(Some(link)) => {
            let mtu = link
                .attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::Mtu(mtu) => Some(*mtu),
                    _ => None,
                })
                .unwrap_or(1500);
            Ok(Some((link.header.index, mtu)))
        }
        Ok(None) | Err(rtnetlink::Error::NetlinkError(_)) => Ok(None),
        Err(source) => Err(RoutingError::Netlink {
            what: "looking up a link",
            source,
        }),
    }
}

/// The link-layer address of link `name`.
async fn link_address(handle: &Handle, name: &str) -> Result<Option<Vec<u8>>, RoutingError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.and_then(|link| {
            link.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::Address(address) => Some(address),
                _ => None,
            })
        })),
        Err(rtnetlink::Error::NetlinkError(_)) => Ok(None),
        Err(source) => Err(RoutingError::Netlink {
            what: "looking up a link",
            source,
        }),
    }
}

/// Creates the collect-metadata vxlan device (or reuses it) and brings it up: ARP off and the
/// MAC [`tunnel::device_mac`] of this node's `address`, which the other nodes address
/// tunnelled frames to.
async fn ensure_vxlan(
    handle: &Handle,
    uplink_mtu: u32,
    address: Ipv4Addr,
) -> Result<u32, RoutingError> {
    if link_info(handle, TUNNEL_DEVICE).await?.is_none() {
        handle
            .link()
            .add(
                // VNI 0 on the device: a collect-metadata device receives every VNI under 0
                // (the kernel files flow-based devices there); the VNI is set per packet.
                LinkVxlan::new(TUNNEL_DEVICE, 0)
                    .port(tunnel::PORT)
                    .collect_metadata(true)
                    .learning(false)
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink("creating the vxlan device"))?;
    }
    let (index, _) = link_info(handle, TUNNEL_DEVICE)
        .await?
        .ok_or_else(|| RoutingError::NoUplink(TUNNEL_DEVICE.to_owned()))?;
    let mac = tunnel::device_mac(u32::from_ne_bytes(address.octets()));
    let mut settings = LinkUnspec::new_with_index(index)
        .mtu(uplink_mtu - tunnel::OVERHEAD)
        .arp(false)
        .up();
    // Setting a device's MAC, even to the one it has, flushes its neighbour entries, the
    // permanent next hops of the routes an earlier run installed included: only when it differs.
    if link_address(handle, TUNNEL_DEVICE).await?.as_deref() != Some(mac.as_slice()) {
        settings = settings.address(mac.to_vec());
    }
    handle
        .link()
        .set(settings.build())
        .execute()
        .await
        .map_err(netlink("configuring the vxlan device"))?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};

    use super::*;

    fn node(name: &str, cidr: Option<&str>, addresses: &[(&str, &str)]) -> Node {
        Node {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(Into::into),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|(kind, address)| NodeAddress {
                            type_: (*kind).into(),
                            address: (*address).into(),
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn every_other_node_with_a_cidr_and_an_internal_ip_gets_a_route() {
        let nodes = [
            node("a", Some("10.244.1.0/24"), &[("InternalIP", "172.30.0.11")]),
            node(
                "b",
                Some("10.244.2.0/24"),
                &[("Hostname", "b"), ("InternalIP", "172.30.0.12")],
            ),
            node("c", None, &[("InternalIP", "172.30.0.13")]),
            node("d", Some("10.244.4.0/24"), &[("Hostname", "d")]),
            node("e", Some("10.244.5.0/24"), &[("InternalIP", "fd00::5")]),
            node("f", Some("not-a-cidr"), &[("InternalIP", "172.30.0.16")]),
        ];
        let own: Ipv4Cidr = "10.244.1.0/24".parse().expect("cidr");
        let routes = desired_routes(&nodes, "a", Some(own));
        let expected: BTreeMap<Ipv4Cidr, Ipv4Addr> = [(
            "10.244.2.0/24".parse().expect("cidr"),
            Ipv4Addr::new(172, 30, 0, 12),
        )]
        .into();
        assert_eq!(routes, expected);
    }

    #[test]
    fn a_cidr_overlapping_this_nodes_own_is_never_routed_away() {
        let nodes = [
            node("a", Some("10.244.1.0/24"), &[("InternalIP", "172.30.0.11")]),
            node("b", Some("10.244.1.0/24"), &[("InternalIP", "172.30.0.12")]),
            node("c", Some("10.244.0.0/16"), &[("InternalIP", "172.30.0.13")]),
        ];
        let own: Ipv4Cidr = "10.244.1.0/24".parse().expect("cidr");
        assert!(desired_routes(&nodes, "a", Some(own)).is_empty());
        assert_eq!(desired_routes(&nodes, "a", None).len(), 2);
    }

    #[test]
    fn modes_parse_and_print() {
        assert_eq!("direct".parse::<RoutingMode>(), Ok(RoutingMode::Direct));
        assert_eq!("tunnel".parse::<RoutingMode>(), Ok(RoutingMode::Tunnel));
        assert_eq!("vxlan".parse::<RoutingMode>(), Ok(RoutingMode::Tunnel));
        assert_eq!(
            "bgp".parse::<RoutingMode>().map_err(|e| e.to_string()),
            Err("\"bgp\" is neither `direct` nor `tunnel`".to_owned())
        );
        assert_eq!(RoutingMode::Tunnel.to_string(), "tunnel");
    }
}

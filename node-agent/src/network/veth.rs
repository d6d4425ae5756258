//! Links, addresses and routes through rtnetlink, in whichever namespace the handle belongs to.

use std::net::Ipv4Addr;

use futures_util::TryStreamExt as _;
use keelson_api::cidr::Ipv4Cidr;
use netlink_packet_route::route::{RouteScope, RouteType};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::NetworkError;

fn netlink(what: &'static str) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    move |source| NetworkError::Request { what, source }
}

/// The index of link `name`, `None` if there is none.
pub async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, NetworkError> {
    let mut links = handle.link().get().match_name(name.to_owned()).execute();
    match links.try_next().await {
        Ok(link) => Ok(link.map(|l| l.header.index)),
        // The kernel answers ENODEV for an unknown name.
        Err(rtnetlink::Error::NetlinkError(_)) => Ok(None),
        Err(source) => Err(NetworkError::Request {
            what: "looking up a link",
            source,
        }),
    }
}

/// Creates the veth pair `host` <-> `peer` (both in the handle's namespace).
pub async fn create_pair(handle: &Handle, host: &str, peer: &str) -> Result<(), NetworkError> {
    handle
        .link()
        .add(LinkVeth::new(host, peer).build())
        .execute()
        .await
        .map_err(netlink("creating a veth pair"))
}

/// Moves link `index` into the namespace behind the open file `ns`.
pub async fn move_to_netns(
    handle: &Handle,
    index: u32,
    ns: &std::fs::File,
) -> Result<(), NetworkError> {
    use std::os::fd::AsRawFd as _;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .setns_by_fd(ns.as_raw_fd())
                .build(),
        )
        .execute()
        .await
        .map_err(netlink("moving the veth peer into the pod's namespace"))
}

/// Deletes link `name` if it exists; returns whether it did.
pub async fn delete_link(handle: &Handle, name: &str) -> Result<bool, NetworkError> {
    let Some(index) = link_index(handle, name).await? else {
        return Ok(false);
    };
    match handle.link().del(index).execute().await {
        Ok(()) => Ok(true),
        // Gone in between (its pod's namespace went away).
        Err(rtnetlink::Error::NetlinkError(_)) => Ok(false),
        Err(source) => Err(NetworkError::Request {
            what: "deleting a veth",
            source,
        }),
    }
}

/// Sets link `index` up, optionally renaming it first.
pub async fn set_up(handle: &Handle, index: u32, rename: Option<&str>) -> Result<(), NetworkError> {
    let mut link = LinkUnspec::new_with_index(index);
    if let Some(name) = rename {
        handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .name(name.to_owned())
                    .build(),
            )
            .execute()
            .await
            .map_err(netlink("renaming a link"))?;
        link = LinkUnspec::new_with_index(index);
    }
    handle
        .link()
        .set(link.up().build())
        .execute()
        .await
        .map_err(netlink("setting a link up"))
}

/// Adds `addr/prefix` to link `index` (replacing an identical one).
pub async fn add_address(
    handle: &Handle,
    index: u32,
    addr: Ipv4Addr,
    prefix: u8,
) -> Result<(), NetworkError> {
    handle
        .address()
        .add(index, addr.into(), prefix)
        .replace()
        .execute()
        .await
        .map_err(netlink("adding an address"))
}

/// `ip route replace <dest>/<prefix> dev <index> scope link`.
pub async fn link_route(
    handle: &Handle,
    index: u32,
    dest: Ipv4Addr,
    prefix: u8,
) -> Result<(), NetworkError> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dest, prefix)
        .output_interface(index)
        .scope(RouteScope::Link)
        .build();
    handle
        .route()
        .add(route)
        .replace()
        .execute()
        .await
        .map_err(netlink("adding a link route"))
}

/// `ip route replace default via <gateway> dev <index>`.
pub async fn default_route(
    handle: &Handle,
    index: u32,
    gateway: Ipv4Addr,
) -> Result<(), NetworkError> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .output_interface(index)
        .gateway(gateway)
        .build();
    handle
        .route()
        .add(route)
        .replace()
        .execute()
        .await
        .map_err(netlink("adding the default route"))
}

/// `ip route replace blackhole <cidr>`: addresses of the pod CIDR that no pod holds are dropped
/// here instead of following the default route out of the machine.
pub async fn blackhole(handle: &Handle, cidr: Ipv4Cidr) -> Result<(), NetworkError> {
    replace_typed_route(handle, cidr, RouteType::BlackHole)
        .await
        .map_err(netlink("adding the pod CIDR blackhole route"))
}

/// `ip route replace unreachable <cidr>`: packets to `cidr` that nothing translated or routed
/// more specifically are refused on the node (ICMP host unreachable to a forwarded packet's
/// sender, EHOSTUNREACH to a local one) instead of following the default route out.
pub async fn unreachable(handle: &Handle, cidr: Ipv4Cidr) -> Result<(), NetworkError> {
    replace_typed_route(handle, cidr, RouteType::Unreachable)
        .await
        .map_err(netlink("adding the service CIDR unreachable route"))
}

/// `ip route replace <kind> <cidr>` for a route without a next hop.
async fn replace_typed_route(
    handle: &Handle,
    cidr: Ipv4Cidr,
    kind: RouteType,
) -> Result<(), rtnetlink::Error> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(cidr.network(), cidr.prefix_len())
        .kind(kind)
        .build();
    handle.route().add(route).replace().execute().await
}

/// Whether the namespace has a default route (a real uplink).
pub async fn has_default_route(handle: &Handle) -> Result<bool, NetworkError> {
    let mut routes = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(route) = routes.try_next().await.map_err(netlink("listing routes"))? {
        if route.header.destination_prefix_length == 0
            && route.header.kind == RouteType::Unicast
            && route.header.table == 254
        {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The hardware address of link `index`, `None` if it has none (or is gone).
pub async fn link_mac(handle: &Handle, index: u32) -> Result<Option<[u8; 6]>, NetworkError> {
    use netlink_packet_route::link::LinkAttribute;
    let mut links = handle.link().get().match_index(index).execute();
    let link = match links.try_next().await {
        Ok(link) => link,
        Err(rtnetlink::Error::NetlinkError(_)) => None,
        Err(source) => {
            return Err(NetworkError::Request {
                what: "reading a link's address",
                source,
            });
        }
    };
    Ok(link.and_then(|link| {
        link.attributes.into_iter().find_map(|a| match a {
            LinkAttribute::Address(mac) => <[u8; 6]>::try_from(mac.as_slice()).ok(),
            _ => None,
        })
    }))
}

/// Sets the MTU of link `index`.
pub async fn set_mtu(handle: &Handle, index: u32, mtu: u32) -> Result<(), NetworkError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
        .execute()
        .await
        .map_err(netlink("setting a link's MTU"))
}

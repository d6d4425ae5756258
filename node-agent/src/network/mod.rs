//! Pod networking on one node: a veth pair per pod, one end as `eth0` in the pod's sandbox
//! namespace with an address from the node's pod CIDR, the other end on the node with a /32 route
//! to the pod. Every pod routes through the CIDR's first address, which each node-side veth
//! carries, so pods reach each other and the node through the node's routing table.
//!
//! All link, address and route changes go through rtnetlink; nothing shells out to `ip`.

pub mod ipam;
pub mod netns;
pub mod veth;

use std::{net::Ipv4Addr, path::PathBuf};

use tokio::sync::Mutex;

use self::ipam::{Ipam, Ipv4Cidr};

/// Pod networking failures.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A netlink request the kernel refused.
    #[error("netlink: {what}")]
    Request {
        /// What was being done.
        what: &'static str,
        /// The kernel's answer.
        #[source]
        source: rtnetlink::Error,
    },
    /// The netlink socket or its thread could not be set up.
    #[error("netlink connection")]
    Netlink(#[source] std::io::Error),
    /// A network namespace could not be opened or entered.
    #[error("network namespace {path}")]
    Netns {
        /// The namespace file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The IPAM state file could not be read or written.
    #[error("IPAM state {path}")]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Every address of the pod CIDR is taken.
    #[error("no free address left in the pod CIDR {cidr}")]
    Exhausted {
        /// The CIDR.
        cidr: Ipv4Cidr,
    },
}

/// The node-side veth name of pod `uid` (at most 15 bytes, stable across restarts).
pub fn host_veth_name(uid: &str) -> String {
    format!(
        "kv{:011x}",
        xxhash_rust::xxh3::xxh3_64(uid.as_bytes()) >> 20
    )
}

fn peer_veth_name(uid: &str) -> String {
    format!(
        "kp{:011x}",
        xxhash_rust::xxh3::xxh3_64(uid.as_bytes()) >> 20
    )
}

/// The node's pod network: IPAM plus the netlink handle of the node's namespace.
#[derive(Debug)]
pub struct PodNetwork {
    cidr: Ipv4Cidr,
    ipam: Mutex<Ipam>,
    handle: rtnetlink::Handle,
}

impl PodNetwork {
    /// Opens IPAM state in `state` for `cidr`, connects to netlink and, when the node has a
    /// default route, installs the blackhole route for the CIDR. Call within a tokio runtime.
    pub async fn start(cidr: Ipv4Cidr, state: PathBuf) -> Result<Self, NetworkError> {
        let ipam = Ipam::open(&state, cidr)?;
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetworkError::Netlink)?;
        tokio::spawn(connection);
        if veth::has_default_route(&handle).await? {
            veth::blackhole(&handle, cidr).await?;
            tracing::info!(%cidr, "pod CIDR blackholed towards the uplink; pods get /32 routes");
        }
        // Pods reach each other and the node through the node's routing table.
        if let Err(error) = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1") {
            tracing::warn!(%error, "cannot enable net.ipv4.ip_forward; pods cannot reach each other");
        }
        Ok(Self {
            cidr,
            ipam: Mutex::new(ipam),
            handle,
        })
    }

    /// The pod CIDR.
    pub fn cidr(&self) -> Ipv4Cidr {
        self.cidr
    }

    /// The address pod `uid` holds, if any.
    pub async fn address_of(&self, uid: &str) -> Option<Ipv4Addr> {
        self.ipam.lock().await.get(uid)
    }

    /// The uids holding addresses.
    pub async fn owners(&self) -> Vec<String> {
        self.ipam.lock().await.owners()
    }

    /// How many addresses are in use.
    pub async fn in_use(&self) -> usize {
        self.ipam.lock().await.in_use()
    }

    /// Whether pod `uid`'s network is in place (its node-side veth exists and it holds an
    /// address): what an agent restart finds for a running pod.
    pub async fn is_attached(&self, uid: &str) -> Result<Option<Ipv4Addr>, NetworkError> {
        let Some(ip) = self.address_of(uid).await else {
            return Ok(None);
        };
        Ok(veth::link_index(&self.handle, &host_veth_name(uid))
            .await?
            .map(|_| ip))
    }

    /// Gives the sandbox process `pid` of pod `uid` its `eth0` and address; returns the address.
    /// On failure the veth is removed again (the address stays with the pod for the retry).
    pub async fn attach(&self, uid: &str, pid: u32) -> Result<Ipv4Addr, NetworkError> {
        let ip = self.ipam.lock().await.allocate(uid)?;
        let host = host_veth_name(uid);
        let result = self.attach_veth(&host, &peer_veth_name(uid), pid, ip).await;
        if result.is_err() {
            let _ = veth::delete_link(&self.handle, &host).await;
        }
        result.map(|()| ip)
    }

    async fn attach_veth(
        &self,
        host: &str,
        peer: &str,
        pid: u32,
        ip: Ipv4Addr,
    ) -> Result<(), NetworkError> {
        let gateway = self.cidr.gateway();
        // A leftover from an attempt that failed half way.
        veth::delete_link(&self.handle, host).await?;
        veth::delete_link(&self.handle, peer).await?;
        veth::create_pair(&self.handle, host, peer).await?;
        let peer_index =
            veth::link_index(&self.handle, peer)
                .await?
                .ok_or(NetworkError::Netlink(std::io::Error::other(
                    "the veth peer vanished after creation",
                )))?;
        let ns = netns::open(pid)?;
        veth::move_to_netns(&self.handle, peer_index, &ns).await?;
        let peer_name = peer.to_owned();
        netns::run_in(ns, move |handle| async move {
            if let Some(lo) = veth::link_index(&handle, "lo").await? {
                veth::set_up(&handle, lo, None).await?;
            }
            let index =
                veth::link_index(&handle, &peer_name)
                    .await?
                    .ok_or(NetworkError::Netlink(std::io::Error::other(
                        "the veth peer is not in the pod's namespace",
                    )))?;
            veth::set_up(&handle, index, Some("eth0")).await?;
            veth::add_address(&handle, index, ip, 32).await?;
            veth::link_route(&handle, index, gateway, 32).await?;
            veth::default_route(&handle, index, gateway).await
        })
        .await?;
        let host_index =
            veth::link_index(&self.handle, host)
                .await?
                .ok_or(NetworkError::Netlink(std::io::Error::other(
                    "the node-side veth vanished",
                )))?;
        veth::set_up(&self.handle, host_index, None).await?;
        veth::add_address(&self.handle, host_index, gateway, 32).await?;
        veth::link_route(&self.handle, host_index, ip, 32).await
    }

    /// Removes pod `uid`'s veth (if its namespace has not taken it along) and releases its
    /// address; returns the released address.
    pub async fn detach(&self, uid: &str) -> Result<Option<Ipv4Addr>, NetworkError> {
        veth::delete_link(&self.handle, &host_veth_name(uid)).await?;
        veth::delete_link(&self.handle, &peer_veth_name(uid)).await?;
        self.ipam.lock().await.release(uid)
    }
}

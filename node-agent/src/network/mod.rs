//! Pod networking on one node: a veth pair per pod, one end as `eth0` in the pod's sandbox
//! namespace with an address from the node's pod CIDR, the other end on the node with a /32 route
//! to the pod. Every pod routes through the CIDR's first address, which each node-side veth
//! carries, so pods reach each other and the node through the node's routing table.
//!
//! All link, address and route changes go through rtnetlink; nothing shells out to `ip`. What
//! else a pod's node-side veth needs (the service datapath's per-packet hook) comes in through a
//! [`PodHook`], so this module does not depend on the datapath.

pub mod ipam;
pub mod netns;
pub mod veth;

use std::{net::Ipv4Addr, path::PathBuf, sync::Arc};

use keelson_api::cidr::Ipv4Cidr;
use tokio::sync::Mutex;

use self::ipam::Ipam;

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
    /// The pod hook failed on a node-side veth.
    #[error("{what} {interface}")]
    Hook {
        /// What the hook was doing.
        what: &'static str,
        /// The node-side veth.
        interface: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What else happens to a pod's node-side veth once it is up and after it is gone: the service
/// datapath attaches its per-packet load balancer there. Calls are short and blocking.
pub trait PodHook: std::fmt::Debug + Send + Sync {
    /// The node-side veth `interface` of a pod is up: a fresh one, or one an agent restart found
    /// in place (then whatever an earlier run attached may still be there). Idempotent.
    fn veth_up(&self, interface: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
    /// The pod's veth `interface` was removed (or vanished with the pod's namespace): forget
    /// what [`Self::veth_up`] attached to it. Idempotent.
    fn veth_gone(&self, interface: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
    /// A fresh pod's network is complete: `pod` says where its packets are delivered. Called
    /// after [`Self::veth_up`]; idempotent.
    fn pod_up(&self, pod: &PodLink) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let _ = pod;
        Ok(())
    }
    /// The pod holding `address` is gone. Idempotent.
    fn pod_gone(&self, address: Ipv4Addr) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let _ = address;
        Ok(())
    }
}

/// A pod's link as the datapath delivers to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodLink {
    /// The pod's address.
    pub address: Ipv4Addr,
    /// The index of its node-side veth.
    pub host_ifindex: u32,
    /// The MAC address of the node-side veth (the pod's gateway).
    pub host_mac: [u8; 6],
    /// The MAC address of the pod's `eth0`.
    pub pod_mac: [u8; 6],
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

/// How the node's pod network is set up.
#[derive(Debug, Clone)]
pub struct NetworkSettings {
    /// The node's pod CIDR.
    pub cidr: Ipv4Cidr,
    /// The IPAM state file.
    pub state: PathBuf,
    /// The cluster's Service CIDR: made unreachable towards the uplink, so a service address
    /// the datapath did not translate never leaves the node. `None`: no route.
    pub service_cidr: Option<Ipv4Cidr>,
    /// Called for every pod's node-side veth; `None`: nothing more than the veth.
    pub hook: Option<Arc<dyn PodHook>>,
    /// The MTU of pods' veths (`None`: the kernel's default, 1500); smaller under a tunnel.
    pub mtu: Option<u32>,
}

/// The node's pod network: IPAM plus the netlink handle of the node's namespace.
#[derive(Debug)]
pub struct PodNetwork {
    cidr: Ipv4Cidr,
    ipam: Mutex<Ipam>,
    handle: rtnetlink::Handle,
    hook: Option<Arc<dyn PodHook>>,
    mtu: Option<u32>,
}

impl PodNetwork {
    /// Opens IPAM state for the pod CIDR, connects to netlink and, when the node has a default
    /// route, installs a blackhole route for the pod CIDR and an unreachable route for the
    /// Service CIDR. Call within a tokio runtime.
    pub async fn start(settings: NetworkSettings) -> Result<Self, NetworkError> {
        let NetworkSettings {
            cidr,
            state,
            service_cidr,
            hook,
            mtu,
        } = settings;
        let ipam = Ipam::open(&state, cidr)?;
        let (connection, handle, _) = rtnetlink::new_connection().map_err(NetworkError::Netlink)?;
        tokio::spawn(connection);
        if veth::has_default_route(&handle).await? {
            veth::blackhole(&handle, cidr).await?;
            tracing::info!(%cidr, "pod CIDR blackholed towards the uplink; pods get /32 routes");
            if let Some(services) = service_cidr {
                // Unreachable rather than blackhole: a pod (or the node) sending to a service
                // address nothing translated learns it at once (ICMP host unreachable,
                // EHOSTUNREACH) instead of waiting out its timeout.
                veth::unreachable(&handle, services).await?;
                tracing::info!(%services, "service CIDR unreachable towards the uplink");
            }
        }
        // Pods reach each other and the node through the node's routing table.
        if let Err(error) = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1") {
            tracing::warn!(%error, "cannot enable net.ipv4.ip_forward; pods cannot reach each other");
        }
        Ok(Self {
            cidr,
            ipam: Mutex::new(ipam),
            handle,
            hook,
            mtu,
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

    /// Takes over pod `uid`'s network if it is in place ([`Self::is_attached`]), as after an
    /// agent restart: the pod hook runs on its veth again. Returns the pod's address.
    pub async fn adopt(&self, uid: &str) -> Result<Option<Ipv4Addr>, NetworkError> {
        let Some(ip) = self.is_attached(uid).await? else {
            return Ok(None);
        };
        self.hook_up(&host_veth_name(uid))?;
        Ok(Some(ip))
    }

    fn hook_up(&self, interface: &str) -> Result<(), NetworkError> {
        match &self.hook {
            Some(hook) => hook
                .veth_up(interface)
                .map_err(|source| NetworkError::Hook {
                    what: "attaching the pod hook to",
                    interface: interface.to_owned(),
                    source,
                }),
            None => Ok(()),
        }
    }

    fn hook_gone(&self, interface: &str) -> Result<(), NetworkError> {
        match &self.hook {
            Some(hook) => hook
                .veth_gone(interface)
                .map_err(|source| NetworkError::Hook {
                    what: "detaching the pod hook from",
                    interface: interface.to_owned(),
                    source,
                }),
            None => Ok(()),
        }
    }

    /// Gives the sandbox process `pid` of pod `uid` its `eth0` and address; returns the address.
    /// On failure the veth is removed again (the address stays with the pod for the retry).
    pub async fn attach(&self, uid: &str, pid: u32) -> Result<Ipv4Addr, NetworkError> {
        let ip = self.ipam.lock().await.allocate(uid)?;
        let host = host_veth_name(uid);
        let mut result = self.attach_veth(&host, &peer_veth_name(uid), pid, ip).await;
        if let Ok(link) = &result {
            result = self
                .hook_up(&host)
                .and_then(|()| self.hook_pod_up(&host, link))
                .map(|()| *link);
        }
        if result.is_err() {
            let _ = veth::delete_link(&self.handle, &host).await;
            let _ = self.hook_gone(&host);
            if let Some(hook) = &self.hook {
                let _ = hook.pod_gone(ip);
            }
        }
        result.map(|_| ip)
    }

    fn hook_pod_up(&self, interface: &str, link: &PodLink) -> Result<(), NetworkError> {
        match &self.hook {
            Some(hook) => hook.pod_up(link).map_err(|source| NetworkError::Hook {
                what: "registering the pod with the datapath on",
                interface: interface.to_owned(),
                source,
            }),
            None => Ok(()),
        }
    }

    async fn attach_veth(
        &self,
        host: &str,
        peer: &str,
        pid: u32,
        ip: Ipv4Addr,
    ) -> Result<PodLink, NetworkError> {
        let gateway = ipam::gateway(self.cidr);
        let mtu = self.mtu;
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
        let pod_mac = netns::run_in(ns, move |handle| async move {
            if let Some(lo) = veth::link_index(&handle, "lo").await? {
                veth::set_up(&handle, lo, None).await?;
            }
            let index =
                veth::link_index(&handle, &peer_name)
                    .await?
                    .ok_or(NetworkError::Netlink(std::io::Error::other(
                        "the veth peer is not in the pod's namespace",
                    )))?;
            if let Some(mtu) = mtu {
                veth::set_mtu(&handle, index, mtu).await?;
            }
            veth::set_up(&handle, index, Some("eth0")).await?;
            veth::add_address(&handle, index, ip, 32).await?;
            veth::link_route(&handle, index, gateway, 32).await?;
            veth::default_route(&handle, index, gateway).await?;
            veth::link_mac(&handle, index)
                .await?
                .ok_or(NetworkError::Netlink(std::io::Error::other(
                    "the pod's eth0 has no MAC address",
                )))
        })
        .await?;
        let host_index =
            veth::link_index(&self.handle, host)
                .await?
                .ok_or(NetworkError::Netlink(std::io::Error::other(
                    "the node-side veth vanished",
                )))?;
        if let Some(mtu) = mtu {
            veth::set_mtu(&self.handle, host_index, mtu).await?;
        }
        veth::set_up(&self.handle, host_index, None).await?;
        // Replies the service datapath reverse-NATs enter here with a service address as their
        // source, which the node routes nowhere (unreachable): reverse-path filtering would drop
        // them. (`net.ipv4.conf.all.rp_filter` still wins when it is stricter.)
        let rp_filter = format!("/proc/sys/net/ipv4/conf/{host}/rp_filter");
        if let Err(error) = std::fs::write(&rp_filter, "0") {
            tracing::warn!(%error, interface = host, "cannot turn off reverse-path filtering");
        }
        veth::add_address(&self.handle, host_index, gateway, 32).await?;
        veth::link_route(&self.handle, host_index, ip, 32).await?;
        let host_mac =
            veth::link_mac(&self.handle, host_index)
                .await?
                .ok_or(NetworkError::Netlink(std::io::Error::other(
                    "the node-side veth has no MAC address",
                )))?;
        Ok(PodLink {
            address: ip,
            host_ifindex: host_index,
            host_mac,
            pod_mac,
        })
    }

    /// Removes pod `uid`'s veth (if its namespace has not taken it along) and releases its
    /// address; returns the released address.
    pub async fn detach(&self, uid: &str) -> Result<Option<Ipv4Addr>, NetworkError> {
        let host = host_veth_name(uid);
        veth::delete_link(&self.handle, &host).await?;
        veth::delete_link(&self.handle, &peer_veth_name(uid)).await?;
        self.hook_gone(&host)?;
        if let (Some(hook), Some(address)) = (&self.hook, self.address_of(uid).await) {
            hook.pod_gone(address)
                .map_err(|source| NetworkError::Hook {
                    what: "removing the pod from the datapath on",
                    interface: host.clone(),
                    source,
                })?;
        }
        self.ipam.lock().await.release(uid)
    }
}

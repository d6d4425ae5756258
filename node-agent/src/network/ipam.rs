//! Pod address management: addresses from the node's pod CIDR, one per pod uid, persisted in a
//! JSON file under the agent's data directory so an agent restart keeps every running pod's
//! address and never hands it to another pod.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use keelson_api::cidr::{CidrError, Ipv4Cidr};
use serde::{Deserialize, Serialize};

use super::NetworkError;

/// Why a pod CIDR (a Node's `spec.podCIDR`, `--pod-cidr`) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodCidrError {
    /// Not an IPv4 block.
    #[error(transparent)]
    Cidr(#[from] CidrError),
    /// Too large or too small for pods (and a gateway and a broadcast address).
    #[error("{text:?}: a pod CIDR needs a prefix length between 8 and 30")]
    PrefixLength {
        /// What was given.
        text: String,
    },
}

/// Parses a pod CIDR: an IPv4 block with a prefix length between 8 and 30; host bits are
/// cleared, as Kubernetes does for `spec.podCIDR` (`10.250.3.7/24` is `10.250.3.0/24`).
pub fn parse_pod_cidr(text: &str) -> Result<Ipv4Cidr, PodCidrError> {
    let cidr = Ipv4Cidr::parse_clearing_host_bits(text)?;
    if !(8..=30).contains(&cidr.prefix_len()) {
        return Err(PodCidrError::PrefixLength {
            text: text.to_owned(),
        });
    }
    Ok(cidr)
}

/// The gateway every pod of `cidr` routes through: its first host address.
/// The same rule the control plane uses for the `kube-dns` endpoints (this address is where the
/// agent answers cluster DNS).
pub fn gateway(cidr: Ipv4Cidr) -> Ipv4Addr {
    keelson_api::cluster_dns::first_host(cidr)
}

/// Addresses pods may get: after the gateway, before the broadcast address.
fn pod_range(cidr: Ipv4Cidr) -> std::ops::Range<u32> {
    let first = u32::from(cidr.network());
    let last = (u64::from(first) + cidr.size() - 1) as u32;
    first.saturating_add(2)..last
}

/// What the state file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    cidr: String,
    /// Address -> pod uid.
    allocations: BTreeMap<Ipv4Addr, String>,
}

/// The allocator; every change is written to disk before it is used.
#[derive(Debug)]
pub struct Ipam {
    cidr: Ipv4Cidr,
    path: PathBuf,
    allocations: BTreeMap<Ipv4Addr, String>,
}

impl Ipam {
    /// Opens (or starts) the state in `path` for `cidr`. Allocations outside `cidr` (the node's
    /// CIDR changed) are dropped.
    pub fn open(path: &Path, cidr: Ipv4Cidr) -> Result<Self, NetworkError> {
        let state: State = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| NetworkError::State {
                path: path.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, source),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(source) => {
                return Err(NetworkError::State {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let allocations = state
            .allocations
            .into_iter()
            .filter(|(ip, _)| cidr.contains(*ip) && pod_range(cidr).contains(&u32::from(*ip)))
            .collect();
        let ipam = Self {
            cidr,
            path: path.to_owned(),
            allocations,
        };
        ipam.save()?;
        Ok(ipam)
    }

    /// The CIDR addresses come from.
    pub fn cidr(&self) -> Ipv4Cidr {
        self.cidr
    }

    /// The address of pod `uid`, allocating the lowest free one if it has none.
    pub fn allocate(&mut self, uid: &str) -> Result<Ipv4Addr, NetworkError> {
        if let Some(ip) = self.get(uid) {
            return Ok(ip);
        }
        let ip = pod_range(self.cidr)
            .map(Ipv4Addr::from)
            .find(|ip| !self.allocations.contains_key(ip))
            .ok_or(NetworkError::Exhausted { cidr: self.cidr })?;
        self.allocations.insert(ip, uid.to_owned());
        if let Err(e) = self.save() {
            self.allocations.remove(&ip);
            return Err(e);
        }
        Ok(ip)
    }

    /// The address pod `uid` holds.
    pub fn get(&self, uid: &str) -> Option<Ipv4Addr> {
        self.allocations
            .iter()
            .find_map(|(ip, owner)| (owner == uid).then_some(*ip))
    }

    /// Releases pod `uid`'s address; returns it.
    pub fn release(&mut self, uid: &str) -> Result<Option<Ipv4Addr>, NetworkError> {
        let ip = self.get(uid);
        if let Some(ip) = ip {
            self.allocations.remove(&ip);
            self.save()?;
        }
        Ok(ip)
    }

    /// The uids holding addresses.
    pub fn owners(&self) -> Vec<String> {
        self.allocations.values().cloned().collect()
    }

    /// How many addresses are in use.
    pub fn in_use(&self) -> usize {
        self.allocations.len()
    }

    fn save(&self) -> Result<(), NetworkError> {
        let state = State {
            cidr: self.cidr.to_string(),
            allocations: self.allocations.clone(),
        };
        let error = |source| NetworkError::State {
            path: self.path.clone(),
            source,
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(error)?;
        }
        let tmp = self.path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(&state).map_err(|e| error(e.into()))?;
        {
            use std::io::Write as _;
            let mut file = std::fs::File::create(&tmp).map_err(error)?;
            file.write_all(&bytes).map_err(error)?;
            file.sync_all().map_err(error)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cidrs_parse_and_clear_host_bits() {
        let cidr = parse_pod_cidr("10.250.3.7/24").expect("valid");
        assert_eq!(cidr.to_string(), "10.250.3.0/24");
        assert_eq!(gateway(cidr), Ipv4Addr::new(10, 250, 3, 1));
        assert_eq!(
            pod_range(cidr),
            u32::from(Ipv4Addr::new(10, 250, 3, 2))..u32::from(Ipv4Addr::new(10, 250, 3, 255))
        );
        assert!(cidr.contains(Ipv4Addr::new(10, 250, 3, 254)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 250, 4, 1)));
        assert!(matches!(
            parse_pod_cidr("10.250.3.0"),
            Err(PodCidrError::Cidr(_))
        ));
        assert!(matches!(
            parse_pod_cidr("10.250.300.0/24"),
            Err(PodCidrError::Cidr(_))
        ));
        let error = parse_pod_cidr("10.250.3.0/31").expect_err("too small");
        assert_eq!(
            error.to_string(),
            "\"10.250.3.0/31\": a pod CIDR needs a prefix length between 8 and 30"
        );
        assert!(parse_pod_cidr("10.0.0.0/7").is_err());
    }

    #[test]
    fn allocations_persist_and_are_not_reused_while_held() {
        let dir = std::env::temp_dir().join(format!("keelson-ipam-{}", std::process::id()));
        let path = dir.join("ipam.json");
        let cidr = parse_pod_cidr("10.9.0.0/29").expect("valid");
        let mut ipam = Ipam::open(&path, cidr).expect("open");
        let a = ipam.allocate("a").expect("a");
        let b = ipam.allocate("b").expect("b");
        assert_eq!(a, Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(b, Ipv4Addr::new(10, 9, 0, 3));
        assert_eq!(ipam.allocate("a").expect("again"), a, "idempotent");
        drop(ipam);
        let mut ipam = Ipam::open(&path, cidr).expect("reopen");
        assert_eq!(ipam.get("b"), Some(b), "survives a restart");
        assert_eq!(ipam.allocate("c").expect("c"), Ipv4Addr::new(10, 9, 0, 4));
        assert_eq!(ipam.release("a").expect("release"), Some(a));
        assert_eq!(ipam.allocate("d").expect("d"), a, "freed address is free");
        for uid in ["e", "f"] {
            ipam.allocate(uid).expect("room");
        }
        assert!(matches!(
            ipam.allocate("g"),
            Err(NetworkError::Exhausted { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }
}

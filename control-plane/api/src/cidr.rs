//! IPv4 CIDR blocks: the service range the API server allocates ClusterIPs from, the cluster
//! range node IPAM cuts per-node pod CIDRs from, and the pod CIDRs node agents route.

use std::{fmt, net::Ipv4Addr, str::FromStr};

/// Why a CIDR string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Not `a.b.c.d/n` with `n <= 32`.
    #[error("invalid CIDR {text:?}: expected an IPv4 block like 10.96.0.0/12")]
    Syntax {
        /// What was given.
        text: String,
    },
    /// Host bits set, e.g. `10.96.0.1/12`.
    #[error("invalid CIDR {text:?}: host bits are set (the block is {canonical})")]
    HostBits {
        /// What was given.
        text: String,
        /// The block it probably meant.
        canonical: String,
    },
}

/// An IPv4 block `base/prefix_len`, base without host bits. Blocks order by base address, then
/// prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    base: u32,
    prefix_len: u8,
}

impl Ipv4Cidr {
    /// The block of `addr/prefix_len`; `None` if `prefix_len > 32` or host bits are set.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        let base = u32::from(addr);
        (prefix_len <= 32 && base & !mask(prefix_len) == 0).then_some(Self { base, prefix_len })
    }

    /// The `/prefix_len` block that holds `addr` (host bits cleared); `None` if
    /// `prefix_len > 32`.
    pub fn containing(addr: Ipv4Addr, prefix_len: u8) -> Option<Self> {
        (prefix_len <= 32).then(|| Self {
            base: u32::from(addr) & mask(prefix_len),
            prefix_len,
        })
    }

    /// Parses `a.b.c.d/n` like Go's `net.ParseCIDR` (and so Kubernetes for a Node's
    /// `spec.podCIDR`): host bits are cleared rather than refused (`10.244.1.7/24` is
    /// `10.244.1.0/24`). [`FromStr`] refuses them.
    pub fn parse_clearing_host_bits(text: &str) -> Result<Self, CidrError> {
        let (addr, len) = split(text)?;
        Self::containing(addr, len).ok_or_else(|| CidrError::Syntax {
            text: text.to_owned(),
        })
    }

    /// The first address.
    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base)
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// How many addresses the block holds.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix_len))
    }

    /// The `index`-th address of the block, if inside.
    pub fn nth(&self, index: u64) -> Option<Ipv4Addr> {
        (index < self.size()).then(|| Ipv4Addr::from(self.base.wrapping_add(index as u32)))
    }

    /// The offset of `addr` in the block, if inside.
    pub fn index_of(&self, addr: Ipv4Addr) -> Option<u64> {
        self.contains(addr)
            .then(|| u64::from(u32::from(addr).wrapping_sub(self.base)))
    }

    /// Whether `addr` is inside.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix_len) == self.base
    }

    /// Whether the two blocks share an address (one holds the other's base address).
    pub fn overlaps(&self, other: &Self) -> bool {
        self.contains(other.network()) || other.contains(self.network())
    }

    /// How many `/subnet_len` blocks fit (0 when `subnet_len` is shorter than the block's own).
    pub fn subnet_count(&self, subnet_len: u8) -> u64 {
        if subnet_len < self.prefix_len || subnet_len > 32 {
            0
        } else {
            1u64 << (subnet_len - self.prefix_len)
        }
    }

    /// The `index`-th `/subnet_len` block inside this one.
    pub fn subnet(&self, subnet_len: u8, index: u64) -> Option<Self> {
        (index < self.subnet_count(subnet_len)).then(|| Self {
            base: self
                .base
                .wrapping_add((index << (32 - u32::from(subnet_len))) as u32),
            prefix_len: subnet_len,
        })
    }
}

fn mask(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_len))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix_len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, len) = split(text)?;
        Self::new(addr, len).ok_or_else(|| CidrError::HostBits {
            text: text.to_owned(),
            canonical: format!("{}/{len}", Ipv4Addr::from(u32::from(addr) & mask(len))),
        })
    }
}

/// `a.b.c.d/n` (surrounding whitespace ignored) as its address and prefix length `n <= 32`.
fn split(text: &str) -> Result<(Ipv4Addr, u8), CidrError> {
    let syntax = || CidrError::Syntax {
        text: text.to_owned(),
    };
    let (addr, len) = text.trim().split_once('/').ok_or_else(syntax)?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
    let len: u8 = len.parse().map_err(|_| syntax())?;
    if len > 32 {
        return Err(syntax());
    }
    Ok((addr, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_indexes() {
        let cidr: Ipv4Cidr = "10.96.0.0/12".parse().unwrap();
        assert_eq!(cidr.size(), 1 << 20);
        assert_eq!(cidr.nth(1), Some(Ipv4Addr::new(10, 96, 0, 1)));
        assert_eq!(cidr.nth(1 << 20), None);
        assert!(cidr.contains(Ipv4Addr::new(10, 111, 255, 255)));
        assert!(!cidr.contains(Ipv4Addr::new(10, 112, 0, 0)));
        assert_eq!(cidr.index_of(Ipv4Addr::new(10, 96, 1, 0)), Some(256));
        assert_eq!(cidr.to_string(), "10.96.0.0/12");
    }

    #[test]
    fn refuses_bad_blocks() {
        assert!(matches!(
            "10.96.0.1/12".parse::<Ipv4Cidr>(),
            Err(CidrError::HostBits { canonical, .. }) if canonical == "10.96.0.0/12"
        ));
        assert!("10.96.0.0".parse::<Ipv4Cidr>().is_err());
        assert!("10.96.0.0/33".parse::<Ipv4Cidr>().is_err());
    }

    #[test]
    fn clears_host_bits_when_asked() {
        let parse = Ipv4Cidr::parse_clearing_host_bits;
        assert_eq!(
            parse("10.244.1.7/24").map(|c| c.to_string()),
            Ok("10.244.1.0/24".to_owned())
        );
        assert_eq!(
            Ipv4Cidr::containing(Ipv4Addr::new(10, 96, 7, 1), 12),
            "10.96.0.0/12".parse().ok()
        );
        assert_eq!(Ipv4Cidr::containing(Ipv4Addr::new(10, 0, 0, 1), 33), None);
        for bad in ["10.244.1.7", "10.244.1.0/33", "10.244.300.0/24", "x/8"] {
            assert!(matches!(parse(bad), Err(CidrError::Syntax { .. })), "{bad}");
        }
    }

    #[test]
    fn overlaps() {
        let block = |text: &str| text.parse::<Ipv4Cidr>().unwrap();
        for (a, b, expected) in [
            ("10.244.1.0/24", "10.244.1.0/24", true),
            ("10.244.0.0/16", "10.244.7.0/24", true),
            ("10.244.7.0/24", "10.244.0.0/16", true),
            ("10.244.1.0/24", "10.244.2.0/24", false),
            ("0.0.0.0/0", "192.0.2.1/32", true),
        ] {
            assert_eq!(block(a).overlaps(&block(b)), expected, "{a} {b}");
        }
    }

    #[test]
    fn orders_by_address_then_length() {
        let mut blocks: Vec<Ipv4Cidr> = ["10.244.2.0/24", "10.244.0.0/16", "10.244.0.0/24"]
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        blocks.sort();
        let texts: Vec<String> = blocks.iter().map(ToString::to_string).collect();
        assert_eq!(texts, ["10.244.0.0/16", "10.244.0.0/24", "10.244.2.0/24"]);
    }

    #[test]
    fn cuts_subnets() {
        let cluster: Ipv4Cidr = "10.244.0.0/16".parse().unwrap();
        assert_eq!(cluster.subnet_count(24), 256);
        assert_eq!(cluster.subnet(24, 3).unwrap().to_string(), "10.244.3.0/24");
        assert_eq!(cluster.subnet(24, 256), None);
        assert_eq!(cluster.subnet_count(8), 0);
    }
}

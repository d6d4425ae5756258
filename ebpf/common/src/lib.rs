//! The kernel/user ABI of keelson's eBPF maps.
//!
//! This crate is the only place where a map key or value is written down. Both the programs in
//! `ebpf/programs` (built for `bpfel-unknown-none`) and the node agent (with the `user` feature)
//! use these types, so a layout change is a compile-time change on both sides.
//!
//! Rules for every type here: `#[repr(C)]`, `Copy`, explicit padding fields, plain integers (no
//! `bool`, `Option` or enums), and byte order named in the field when it is not host order.
#![no_std]

/// Bumped on every incompatible change to a map layout below. Pinned maps carry it in their
/// names, so an agent of another ABI never reads a map it does not understand.
pub const ABI_VERSION: u32 = 1;

/// Name of the per-interface packet counter map (a per-CPU hash map).
pub const IFACE_COUNTERS_MAP: &str = "IFACE_COUNTERS";
/// Capacity of [`IFACE_COUNTERS_MAP`]: one entry per (interface, direction) the agent watches.
pub const IFACE_COUNTERS_MAX_ENTRIES: u32 = 1024;

/// Program names, as exported by the object and looked up by the agent.
pub mod programs {
    /// TC classifier counting packets on an interface's ingress hook.
    pub const TC_COUNT_INGRESS: &str = "tc_count_ingress";
    /// TC classifier counting packets on an interface's egress hook.
    pub const TC_COUNT_EGRESS: &str = "tc_count_egress";
}

/// Direction values for [`IfaceKey::direction`].
pub mod direction {
    /// Packets received by the interface (TC ingress).
    pub const INGRESS: u32 = 0;
    /// Packets sent by the interface (TC egress).
    pub const EGRESS: u32 = 1;
}

/// Key of [`IFACE_COUNTERS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IfaceKey {
    /// Interface index in the network namespace the program is attached in (host order).
    pub ifindex: u32,
    /// One of [`direction`]'s constants.
    pub direction: u32,
}

/// Value of [`IFACE_COUNTERS_MAP`], one per CPU; the agent sums them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceCounters {
    /// Packets seen.
    pub packets: u64,
    /// Bytes seen (`skb->len`, L2 header included).
    pub bytes: u64,
}

impl IfaceCounters {
    /// Adds another CPU's share to this one (used when summing per-CPU values).
    #[must_use]
    pub const fn merged(self, other: Self) -> Self {
        Self {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
        }
    }
}

#[cfg(feature = "user")]
mod user {
    use super::{IfaceCounters, IfaceKey};

    // SAFETY: `#[repr(C)]`, only `u32` fields, no padding: every bit pattern is valid.
    unsafe impl aya::Pod for IfaceKey {}
    // SAFETY: `#[repr(C)]`, only `u64` fields, no padding: every bit pattern is valid.
    unsafe impl aya::Pod for IfaceCounters {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_kernel_side() {
        assert_eq!(core::mem::size_of::<IfaceKey>(), 8);
        assert_eq!(core::mem::align_of::<IfaceKey>(), 4);
        assert_eq!(core::mem::size_of::<IfaceCounters>(), 16);
    }

    #[test]
    fn per_cpu_values_merge_by_adding() {
        let a = IfaceCounters {
            packets: 3,
            bytes: 300,
        };
        let b = IfaceCounters {
            packets: 4,
            bytes: 1000,
        };
        assert_eq!(
            a.merged(b),
            IfaceCounters {
                packets: 7,
                bytes: 1300
            }
        );
    }
}

//! Per-interface packet counters at TC (`tc_count_ingress` / `tc_count_egress`).

use std::fmt;

use aya::{
    Ebpf,
    maps::PerCpuHashMap,
    programs::{SchedClassifier, TcAttachType, tc},
    util::KernelVersion,
};
use keelson_ebpf_common::{
    IFACE_COUNTERS_MAP, IfaceCounters, IfaceKey, direction,
    programs::{TC_COUNT_EGRESS, TC_COUNT_INGRESS},
};

use super::{DatapathError, load_object, program_mut};

/// A TC hook of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Packets the interface receives.
    Ingress,
    /// Packets the interface sends.
    Egress,
}

impl Direction {
    const fn program(self) -> &'static str {
        match self {
            Self::Ingress => TC_COUNT_INGRESS,
            Self::Egress => TC_COUNT_EGRESS,
        }
    }

    const fn attach_type(self) -> TcAttachType {
        match self {
            Self::Ingress => TcAttachType::Ingress,
            Self::Egress => TcAttachType::Egress,
        }
    }

    const fn abi(self) -> u32 {
        match self {
            Self::Ingress => direction::INGRESS,
            Self::Egress => direction::EGRESS,
        }
    }

    const fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The packet counter programs, loaded into the kernel and ready to attach.
///
/// Attachments live as long as this value: dropping it detaches every program it attached.
/// Interface names resolve in the network namespace of the calling thread.
pub struct IfaceCounterProgram {
    ebpf: Ebpf,
}

impl fmt::Debug for IfaceCounterProgram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IfaceCounterProgram")
            .finish_non_exhaustive()
    }
}

impl IfaceCounterProgram {
    /// Loads the object and both counter programs (the verifier runs here).
    pub fn load() -> Result<Self, DatapathError> {
        let mut ebpf = load_object()?;
        for program in [TC_COUNT_INGRESS, TC_COUNT_EGRESS] {
            program_mut::<SchedClassifier>(&mut ebpf, program)?
                .load()
                .map_err(|source| DatapathError::LoadProgram {
                    program: program.to_owned(),
                    source: Box::new(source),
                })?;
        }
        Ok(Self { ebpf })
    }

    /// Attaches the counter to `interface`'s `direction` hook: through TCX on kernels >= 6.6,
    /// through a `clsact` qdisc and netlink before that.
    pub fn attach(&mut self, interface: &str, direction: Direction) -> Result<(), DatapathError> {
        let program = direction.program();
        if !tcx_supported() {
            // The qdisc may already be there (another program, an earlier run): attaching below
            // reports the real failure if it is missing.
            if let Err(error) = tc::qdisc_add_clsact(interface) {
                tracing::debug!(interface, %error, "adding the clsact qdisc");
            }
        }
        program_mut::<SchedClassifier>(&mut self.ebpf, program)?
            .attach(interface, direction.attach_type())
            .map_err(|source| DatapathError::Attach {
                program,
                interface: interface.to_owned(),
                direction: direction.as_str(),
                source: Box::new(source),
            })?;
        Ok(())
    }

    /// The packets and bytes counted so far on `interface`'s `direction` hook, summed over CPUs.
    /// Zero when nothing passed since the counter was attached.
    pub fn read(
        &self,
        interface: &str,
        direction: Direction,
    ) -> Result<IfaceCounters, DatapathError> {
        let ifindex = ifindex(interface)?;
        let map = self
            .ebpf
            .map(IFACE_COUNTERS_MAP)
            .ok_or(DatapathError::MissingMap {
                map: IFACE_COUNTERS_MAP,
            })?;
        let map: PerCpuHashMap<_, IfaceKey, IfaceCounters> =
            PerCpuHashMap::try_from(map).map_err(|source| DatapathError::Map {
                map: IFACE_COUNTERS_MAP,
                source: Box::new(source),
            })?;
        let key = IfaceKey {
            ifindex,
            direction: direction.abi(),
        };
        match map.get(&key, 0) {
            Ok(per_cpu) => Ok(per_cpu
                .iter()
                .fold(IfaceCounters::default(), |sum, cpu| sum.merged(*cpu))),
            Err(aya::maps::MapError::KeyNotFound) => Ok(IfaceCounters::default()),
            Err(source) => Err(DatapathError::Map {
                map: IFACE_COUNTERS_MAP,
                source: Box::new(source),
            }),
        }
    }
}

/// TCX links (kernel >= 6.6) attach without a qdisc and detach when their fd closes.
fn tcx_supported() -> bool {
    KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0))
}

fn ifindex(interface: &str) -> Result<u32, DatapathError> {
    nix::net::if_::if_nametoindex(interface).map_err(|errno| DatapathError::NoSuchInterface {
        interface: interface.to_owned(),
        source: std::io::Error::from(errno),
    })
}

//! Node allocatable and the pressure conditions, as the kubelet computes them: allocatable is
//! capacity minus `kubeReserved`, `systemReserved` and the hard eviction threshold; the
//! MemoryPressure / DiskPressure / PIDPressure conditions are true while an observed signal
//! (`memory.available`, `nodefs.available`, `imagefs.available`, `nodefs.inodesFree`,
//! `pid.available`) is below its `evictionHard` threshold.
//!
//! Sources: kubernetes `pkg/kubelet/cm/node_container_manager_linux.go`
//! (`GetNodeAllocatableAbsolute`, `hardEvictionReservation`), `pkg/kubelet/eviction/helpers.go`
//! (`ParseThresholdConfig`, signals), `pkg/kubelet/apis/config/v1beta1/defaults_linux.go`
//! (`DefaultEvictionHard`), `pkg/kubelet/nodestatus/setters.go` (condition reasons).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as QuantityObject;
use keelson_api::quantity::Quantity;

pub use super::threshold_error::{ReservationError, ThresholdError};

/// The kubelet's default `evictionHard` on Linux.
pub const DEFAULT_EVICTION_HARD: &str = "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,imagefs.available<15%,imagefs.inodesFree<5%";

/// A threshold's value: an absolute quantity or a share of the capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    /// Bytes (or a count, for pids and inodes).
    Absolute(i64),
    /// A fraction of the capacity (`10%` is 0.1).
    Percent(f64),
}

impl Amount {
    /// The amount against `capacity`.
    pub fn of(self, capacity: i64) -> i64 {
        match self {
            Self::Absolute(v) => v,
            Self::Percent(p) => (capacity as f64 * p) as i64,
        }
    }
}

/// `signal<amount` pairs, by signal.
pub type Thresholds = BTreeMap<String, Amount>;

/// The signals the kubelet knows (each one starves a [`super::eviction::Resource`]).
pub(super) const SIGNALS: &[&str] = &[
    "memory.available",
    "nodefs.available",
    "nodefs.inodesFree",
    "imagefs.available",
    "imagefs.inodesFree",
    "containerfs.available",
    "containerfs.inodesFree",
    "pid.available",
    "allocatableMemory.available",
];

/// Which flag a list of signal amounts comes from: the separator and the checks on amounts
/// differ, the rest of the syntax is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SignalList {
    /// `evictionHard`: `signal<amount`, percentages within 0..=100.
    EvictionHard,
    /// `evictionMinimumReclaim`: `signal=amount`, positive percentages, no negative quantity.
    MinimumReclaim,
}

impl SignalList {
    fn separator(self) -> char {
        match self {
            Self::EvictionHard => '<',
            Self::MinimumReclaim => '=',
        }
    }

    /// The error for an item without the separator.
    fn malformed(self, item: &str) -> ThresholdError {
        let item = item.to_owned();
        match self {
            Self::EvictionHard => ThresholdError::NotAThreshold { item },
            Self::MinimumReclaim => ThresholdError::NotAMinimumReclaim { item },
        }
    }

    /// Checks a percentage `p` (`value` as given) of `signal`.
    fn check_percent(self, signal: &str, value: &str, p: f64) -> Result<(), ThresholdError> {
        let (signal, value) = (signal.to_owned(), value.to_owned());
        match self {
            Self::EvictionHard if !(0.0..=100.0).contains(&p) => {
                Err(ThresholdError::PercentageRange { signal, value })
            }
            Self::MinimumReclaim if p <= 0.0 => {
                Err(ThresholdError::ReclaimPercentage { signal, value })
            }
            Self::EvictionHard | Self::MinimumReclaim => Ok(()),
        }
    }

    /// Checks a quantity of `signal`.
    fn check_quantity(self, signal: &str, q: &Quantity) -> Result<(), ThresholdError> {
        match self {
            Self::MinimumReclaim if q.is_negative() => Err(ThresholdError::NegativeReclaim {
                signal: signal.to_owned(),
            }),
            _ => Ok(()),
        }
    }
}

/// Parses a comma-separated list of `signal<amount` or `signal=amount` items, as `list` says.
pub(super) fn parse_signal_amounts(
    text: &str,
    list: SignalList,
) -> Result<Thresholds, ThresholdError> {
    let mut out = Thresholds::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (signal, value) = item
            .split_once(list.separator())
            .ok_or_else(|| list.malformed(item))?;
        let signal = signal.trim();
        if !SIGNALS.contains(&signal) {
            return Err(ThresholdError::UnsupportedSignal {
                signal: signal.to_owned(),
            });
        }
        let value = value.trim();
        let amount = if let Some(p) = value.strip_suffix('%') {
            let p: f64 = p.parse().map_err(|source| ThresholdError::Percentage {
                signal: signal.to_owned(),
                value: value.to_owned(),
                source,
            })?;
            list.check_percent(signal, value, p)?;
            Amount::Percent(p / 100.0)
        } else {
            let q = Quantity::parse(value).map_err(|source| ThresholdError::Quantity {
                signal: signal.to_owned(),
                value: value.to_owned(),
                source,
            })?;
            list.check_quantity(signal, &q)?;
            Amount::Absolute(q.value())
        };
        out.insert(signal.to_owned(), amount);
    }
    Ok(out)
}

/// Parses `evictionHard` (`memory.available<100Mi,nodefs.available<10%`).
pub fn parse_thresholds(text: &str) -> Result<Thresholds, ThresholdError> {
    parse_signal_amounts(text, SignalList::EvictionHard)
}

/// Parses a reservation (`cpu=100m,memory=1Gi,ephemeral-storage=1Gi,pid=1000`) into
/// quantities by resource (CPU in millicores, the others in units).
pub fn parse_reserved(text: &str) -> Result<BTreeMap<String, i64>, ReservationError> {
    let mut out = BTreeMap::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, value) =
            item.split_once('=')
                .ok_or_else(|| ReservationError::NotAReservation {
                    item: item.to_owned(),
                })?;
        let name = name.trim();
        if !matches!(name, "cpu" | "memory" | "ephemeral-storage" | "pid") {
            return Err(ReservationError::UnsupportedResource {
                resource: name.to_owned(),
            });
        }
        let q = Quantity::parse_trimmed(value).map_err(|source| ReservationError::Quantity {
            resource: name.to_owned(),
            value: value.to_owned(),
            source,
        })?;
        let v = if name == "cpu" {
            q.milli_value()
        } else {
            q.value()
        };
        if v < 0 {
            return Err(ReservationError::Negative {
                resource: name.to_owned(),
            });
        }
        out.insert(name.to_owned(), v);
    }
    Ok(out)
}

/// What the node reserves and when it is under pressure.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservations {
    /// `kubeReserved`.
    pub kube: BTreeMap<String, i64>,
    /// `systemReserved`.
    pub system: BTreeMap<String, i64>,
    /// `evictionHard`.
    pub eviction_hard: Thresholds,
}

impl Default for Reservations {
    fn default() -> Self {
        Self {
            kube: BTreeMap::new(),
            system: BTreeMap::new(),
            eviction_hard: parse_thresholds(DEFAULT_EVICTION_HARD).unwrap_or_default(),
        }
    }
}

/// Capacity quantities as numbers (CPU in millicores).
fn amount(capacity: &BTreeMap<String, QuantityObject>, name: &str) -> Option<i64> {
    let q = Quantity::try_from(capacity.get(name)?).ok()?;
    Some(if name == "cpu" {
        q.milli_value()
    } else {
        q.value()
    })
}

/// Allocatable: capacity minus both reservations and, for memory and ephemeral storage, the
/// hard eviction threshold (never below zero); other resources as in capacity.
pub fn allocatable(
    capacity: &BTreeMap<String, QuantityObject>,
    r: &Reservations,
) -> BTreeMap<String, QuantityObject> {
    let mut out = capacity.clone();
    for name in ["cpu", "memory", "ephemeral-storage"] {
        let Some(total) = amount(capacity, name) else {
            continue;
        };
        let eviction = match name {
            "memory" => r.eviction_hard.get("memory.available"),
            "ephemeral-storage" => r.eviction_hard.get("nodefs.available"),
            _ => None,
        }
        .map_or(0, |a| a.of(total));
        let reserved = r.kube.get(name).copied().unwrap_or(0)
            + r.system.get(name).copied().unwrap_or(0)
            + eviction;
        let left = (total - reserved).max(0);
        let text = match name {
            "cpu" if left % 1000 == 0 => (left / 1000).to_string(),
            "cpu" => format!("{left}m"),
            _ if left % 1024 == 0 => format!("{}Ki", left / 1024),
            _ => left.to_string(),
        };
        out.insert(name.to_owned(), QuantityObject(text));
    }
    out
}

/// What the node observes now: available amount and capacity per signal.
pub type Observations = BTreeMap<String, (i64, i64)>;

/// Whether any threshold of `signals` is crossed.
fn crossed(observed: &Observations, thresholds: &Thresholds, signals: &[&str]) -> bool {
    signals
        .iter()
        .any(|s| match (observed.get(*s), thresholds.get(*s)) {
            (Some((available, capacity)), Some(t)) => *available < t.of(*capacity),
            _ => false,
        })
}

/// One pressure condition: type, whether it holds, reason, message.
pub type Pressure = (&'static str, bool, &'static str, &'static str);

/// The three pressure conditions with the kubelet's reasons and messages.
pub fn conditions(observed: &Observations, thresholds: &Thresholds) -> [Pressure; 3] {
    let memory = crossed(observed, thresholds, &["memory.available"]);
    let disk = crossed(
        observed,
        thresholds,
        &[
            "nodefs.available",
            "nodefs.inodesFree",
            "imagefs.available",
            "imagefs.inodesFree",
        ],
    );
    let pid = crossed(observed, thresholds, &["pid.available"]);
    [
        if memory {
            (
                "MemoryPressure",
                true,
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            )
        } else {
            (
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            )
        },
        if disk {
            (
                "DiskPressure",
                true,
                "KubeletHasDiskPressure",
                "kubelet has disk pressure",
            )
        } else {
            (
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            )
        },
        if pid {
            (
                "PIDPressure",
                true,
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            )
        } else {
            (
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            )
        },
    ]
}

/// `MemAvailable` and `MemTotal` in bytes from `/proc/meminfo` text.
pub fn memory_from_meminfo(text: &str) -> Option<(i64, i64)> {
    let field = |name: &str| -> Option<i64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok())
            .map(|kib| kib * 1024)
    };
    Some((field("MemAvailable:")?, field("MemTotal:")?))
}

/// The pid signal: `pid_max` minus the processes running (as the kubelet counts them).
pub fn pids_available(pid_max: i64, running: i64) -> (i64, i64) {
    ((pid_max - running).max(0), pid_max)
}

/// Reads the node's signals: memory, the filesystems of `nodefs` (the agent's data
/// directory) and `imagefs` (Docker's root), and pids.
pub fn observe(nodefs: &std::path::Path, imagefs: &std::path::Path) -> Observations {
    let mut out = Observations::new();
    if let Some(m) = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .as_deref()
        .and_then(memory_from_meminfo)
    {
        out.insert("memory.available".into(), m);
    }
    for (prefix, path) in [("nodefs", nodefs), ("imagefs", imagefs)] {
        if let Ok(s) = nix::sys::statvfs::statvfs(path) {
            let block = s.fragment_size() as i64;
            out.insert(
                format!("{prefix}.available"),
                (
                    s.blocks_available() as i64 * block,
                    s.blocks() as i64 * block,
                ),
            );
            out.insert(
                format!("{prefix}.inodesFree"),
                (s.files_available() as i64, s.files() as i64),
            );
        }
    }
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|t| t.trim().parse::<i64>().ok());
    let running = std::fs::read_to_string("/proc/loadavg").ok().and_then(|t| {
        t.split_whitespace()
            .nth(3)?
            .split('/')
            .nth(1)?
            .parse::<i64>()
            .ok()
    });
    if let (Some(max), Some(running)) = (pid_max, running) {
        out.insert("pid.available".into(), pids_available(max, running));
    }
    out
}

/// The node's reservations and where its filesystems are, for the Node status.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeResources {
    /// Reservations and hard eviction thresholds.
    pub reservations: Reservations,
    /// The filesystem of `nodefs` (the agent's data directory).
    pub nodefs: std::path::PathBuf,
    /// The filesystem of `imagefs` (Docker's root directory).
    pub imagefs: std::path::PathBuf,
}

impl Default for NodeResources {
    fn default() -> Self {
        Self {
            reservations: Reservations::default(),
            nodefs: "/var/lib".into(),
            imagefs: "/var/lib/docker".into(),
        }
    }
}

#[cfg(test)]
#[path = "pressure_tests.rs"]
mod tests;

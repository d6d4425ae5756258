//! RLIMIT_MEMLOCK and BPF maps.
//!
//! Before Linux 5.11 the kernel charges the memory of every BPF map (and program) to the
//! creating process's RLIMIT_MEMLOCK; a root process whose limit is the kernel's default
//! (64 KiB before 5.16) cannot create the datapath's maps at all, and map creation fails with
//! `EPERM`, which reads like a missing capability. From 5.11 on maps are charged to the memory
//! cgroup instead and the limit does not matter. Like libbpf, the agent raises the limit to
//! infinity only where the kernel still charges it, before it creates the first map
//! ([`ensure`], called by every path that loads an object or probes a map type). The decision is
//! made on the kernel version ([`decide`]): memcg accounting arrived in 5.11 as a whole.
//!
//! aya 0.14 retries a map creation that fails with `EPERM` after raising the limit itself, but
//! not a program load (also charged before 5.11), and it only logs a refused raise; doing it
//! here, first, makes the outcome one line in `check` and a refusal one clear error.
//!
//! A refused `setrlimit` (no `CAP_SYS_RESOURCE`, e.g. a unit or container that drops it) is an
//! error only on such a kernel; elsewhere the limit is left as it is.

use std::{fmt, sync::OnceLock};

use aya::util::KernelVersion;
use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit, setrlimit};

/// The first kernel that charges BPF maps to the memory cgroup instead of RLIMIT_MEMLOCK.
pub const MEMCG_ACCOUNTING: KernelVersion = KernelVersion::new(5, 11, 0);

/// A resource limit's value as `getrlimit` reports it (`u64::MAX` is `RLIM_INFINITY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub u64);

impl Limit {
    /// No limit (`RLIM_INFINITY`).
    pub const UNLIMITED: Self = Self(libc::RLIM_INFINITY);
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        match self.0 {
            libc::RLIM_INFINITY => f.write_str("unlimited"),
            n if n >= MIB && n % MIB == 0 => write!(f, "{} MiB", n / MIB),
            n if n >= KIB && n % KIB == 0 => write!(f, "{} KiB", n / KIB),
            n => write!(f, "{n} bytes"),
        }
    }
}

/// What to do about RLIMIT_MEMLOCK on a kernel, given the current (soft) limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The kernel charges maps to the memory cgroup: leave the limit alone.
    NotCharged,
    /// The kernel charges maps to the limit, which is already unlimited.
    AlreadyUnlimited,
    /// The kernel charges maps to the limit: raise it to infinity.
    Raise,
}

/// The decision for a kernel of version `kernel` whose current soft limit is `current`.
pub fn decide(kernel: KernelVersion, current: Limit) -> Decision {
    if kernel >= MEMCG_ACCOUNTING {
        Decision::NotCharged
    } else if current == Limit::UNLIMITED {
        Decision::AlreadyUnlimited
    } else {
        Decision::Raise
    }
}

/// What [`ensure`] found and did; its `Display` is the line `check` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Memlock {
    /// The running kernel.
    pub kernel: KernelVersion,
    /// The soft limit before [`ensure`] ran.
    pub before: Limit,
    /// What was decided.
    pub decision: Decision,
}

impl fmt::Display for Memlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.decision {
            Decision::NotCharged => write!(
                f,
                "RLIMIT_MEMLOCK {} left as is: Linux {} charges BPF maps to the memory cgroup \
                 (Linux >= 5.11)",
                self.before, self.kernel
            ),
            Decision::AlreadyUnlimited => write!(
                f,
                "RLIMIT_MEMLOCK already unlimited: Linux {} charges BPF maps to it (before 5.11)",
                self.kernel
            ),
            Decision::Raise => write!(
                f,
                "RLIMIT_MEMLOCK raised from {} to unlimited: Linux {} charges BPF maps to it \
                 (before 5.11)",
                self.before, self.kernel
            ),
        }
    }
}

/// RLIMIT_MEMLOCK could not be read, or could not be raised on a kernel that charges BPF maps
/// to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemlockError {
    /// The running kernel's version could not be read.
    #[error("reading the kernel version for RLIMIT_MEMLOCK: {reason}")]
    KernelVersion { reason: String },
    /// `getrlimit(RLIMIT_MEMLOCK)` failed.
    #[error("reading RLIMIT_MEMLOCK")]
    Read(#[source] nix::errno::Errno),
    /// `setrlimit(RLIMIT_MEMLOCK, infinity)` was refused where the kernel needs it.
    #[error(
        "Linux {kernel} charges BPF maps to RLIMIT_MEMLOCK (before 5.11), which is {limit} and \
         cannot be raised (run as root with CAP_SYS_RESOURCE, or set LimitMEMLOCK=infinity in \
         the unit)"
    )]
    Raise {
        kernel: KernelVersion,
        limit: Limit,
        #[source]
        source: nix::errno::Errno,
    },
}

/// The current soft and hard RLIMIT_MEMLOCK.
fn current_limits() -> Result<(Limit, Limit), nix::errno::Errno> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_MEMLOCK)?;
    Ok((Limit(soft), Limit(hard)))
}

/// Sets the soft and hard RLIMIT_MEMLOCK to infinity.
fn raise_to_infinity() -> Result<(), nix::errno::Errno> {
    setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY)
}

/// Raises RLIMIT_MEMLOCK to infinity if the running kernel charges BPF maps to it, once per
/// process (later calls return the first outcome).
///
/// Every path that creates maps calls it first; on a kernel that charges maps to the limit a
/// refused raise is an error, elsewhere nothing is changed.
pub fn ensure() -> Result<Memlock, MemlockError> {
    static OUTCOME: OnceLock<Result<Memlock, MemlockError>> = OnceLock::new();
    OUTCOME.get_or_init(ensure_now).clone()
}

fn ensure_now() -> Result<Memlock, MemlockError> {
    let kernel = KernelVersion::current().map_err(|e| MemlockError::KernelVersion {
        reason: e.to_string(),
    })?;
    let (before, _) = current_limits().map_err(MemlockError::Read)?;
    let decision = decide(kernel, before);
    if decision == Decision::Raise {
        raise_to_infinity().map_err(|source| MemlockError::Raise {
            kernel,
            limit: before,
            source,
        })?;
    }
    Ok(Memlock {
        kernel,
        before,
        decision,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB64: Limit = Limit(64 * 1024);
    const MIB8: Limit = Limit(8 * 1024 * 1024);

    #[test]
    fn the_limit_is_raised_only_where_the_kernel_charges_maps_to_it() {
        let cases = [
            // (kernel, current soft limit, decision)
            ((4, 19, 0), KIB64, Decision::Raise),
            ((5, 10, 0), KIB64, Decision::Raise),
            ((5, 10, 237), MIB8, Decision::Raise),
            ((5, 10, 0), Limit::UNLIMITED, Decision::AlreadyUnlimited),
            ((5, 11, 0), KIB64, Decision::NotCharged),
            ((6, 1, 0), MIB8, Decision::NotCharged),
            ((6, 18, 0), MIB8, Decision::NotCharged),
        ];
        for ((major, minor, patch), limit, want) in cases {
            let kernel = KernelVersion::new(major, minor, patch);
            assert_eq!(
                decide(kernel, limit),
                want,
                "kernel {kernel}, limit {limit}"
            );
        }
    }

    #[test]
    fn check_says_what_was_done_and_why() {
        let line = |kernel: (u8, u8, u16), before: Limit, decision| {
            Memlock {
                kernel: KernelVersion::new(kernel.0, kernel.1, kernel.2),
                before,
                decision,
            }
            .to_string()
        };
        assert_eq!(
            line((5, 10, 0), KIB64, Decision::Raise),
            "RLIMIT_MEMLOCK raised from 64 KiB to unlimited: Linux 5.10.0 charges BPF maps to \
             it (before 5.11)"
        );
        assert_eq!(
            line((6, 18, 0), MIB8, Decision::NotCharged),
            "RLIMIT_MEMLOCK 8 MiB left as is: Linux 6.18.0 charges BPF maps to the memory \
             cgroup (Linux >= 5.11)"
        );
        assert_eq!(
            line((5, 10, 0), Limit::UNLIMITED, Decision::AlreadyUnlimited),
            "RLIMIT_MEMLOCK already unlimited: Linux 5.10.0 charges BPF maps to it (before 5.11)"
        );
    }

    #[test]
    fn a_refused_raise_names_the_kernel_the_limit_and_the_fix() {
        let error = MemlockError::Raise {
            kernel: KernelVersion::new(5, 10, 0),
            limit: KIB64,
            source: nix::errno::Errno::EPERM,
        };
        assert_eq!(
            crate::error_chain(&error),
            "Linux 5.10.0 charges BPF maps to RLIMIT_MEMLOCK (before 5.11), which is 64 KiB and \
             cannot be raised (run as root with CAP_SYS_RESOURCE, or set LimitMEMLOCK=infinity \
             in the unit): EPERM: Operation not permitted"
        );
    }

    #[test]
    fn limits_read_as_a_user_would_write_them() {
        assert_eq!(Limit(65536).to_string(), "64 KiB");
        assert_eq!(Limit(8 << 20).to_string(), "8 MiB");
        assert_eq!(Limit(1000).to_string(), "1000 bytes");
        assert_eq!(Limit::UNLIMITED.to_string(), "unlimited");
    }
}

//! RLIMIT_MEMLOCK and BPF maps: kernels before 5.11 charge the memory of every BPF map and
//! program to the creating process's locked-memory limit (often 64 KiB, or 8 MiB under
//! systemd), so the datapath's maps fail to load with EPERM unless the limit is raised; 5.11
//! and later charge the memory cgroup instead and ignore the limit.

/// The first kernel that accounts BPF memory to the memory cgroup (commit "bpf: Eliminate
/// rlimit-based memory accounting for bpf maps", v5.11).
pub const MEMCG_ACCOUNTING: (u32, u32) = (5, 11);

/// What the locked-memory limit means for this kernel, and what was done about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memlock {
    /// The kernel charges BPF memory to the memory cgroup: the limit is left alone.
    Memcg,
    /// The kernel charges BPF memory to RLIMIT_MEMLOCK, which is (now) unlimited.
    Unlimited,
    /// The kernel charges BPF memory to RLIMIT_MEMLOCK, limited to this many bytes (only
    /// reported by [`status`]; [`raise`] errs instead).
    Limited(u64),
}

impl std::fmt::Display for Memlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Memcg => f.write_str("BPF memory charged to the memory cgroup (kernel >= 5.11)"),
            Self::Unlimited => f.write_str("BPF memory charged to RLIMIT_MEMLOCK, unlimited"),
            Self::Limited(bytes) => write!(
                f,
                "BPF memory charged to RLIMIT_MEMLOCK, limited to {bytes} bytes (`run` raises it)"
            ),
        }
    }
}

/// The limit could not be raised on a kernel that charges it.
#[derive(Debug, thiserror::Error)]
#[error(
    "kernel {kernel} charges BPF maps to RLIMIT_MEMLOCK ({limit} bytes) and raising it was \
     refused: run as root with CAP_SYS_RESOURCE, or set LimitMEMLOCK=infinity in the unit"
)]
pub struct MemlockError {
    /// The kernel release.
    pub kernel: String,
    /// The limit in force.
    pub limit: u64,
    /// Why.
    #[source]
    pub source: nix::Error,
}

/// Whether kernel `major.minor` charges BPF memory to RLIMIT_MEMLOCK.
pub fn charged(kernel: (u32, u32)) -> bool {
    kernel < MEMCG_ACCOUNTING
}

/// `major.minor` of a kernel release string (`5.10.0-28-amd64` → `(5, 10)`).
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts
        .next()?
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()?;
    Some((major, minor))
}

fn release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// This kernel's accounting and the current soft limit; changes nothing.
pub fn status() -> Memlock {
    use nix::sys::resource::{RLIM_INFINITY, Resource, getrlimit};
    if !parse_release(&release()).is_some_and(charged) {
        return Memlock::Memcg;
    }
    match getrlimit(Resource::RLIMIT_MEMLOCK) {
        Ok((soft, _)) if soft == RLIM_INFINITY => Memlock::Unlimited,
        Ok((soft, _)) => Memlock::Limited(soft),
        Err(_) => Memlock::Limited(0),
    }
}

/// Raises RLIMIT_MEMLOCK to infinity where the kernel charges BPF memory to it. A refusal is
/// an error only there; on a memcg-accounting kernel nothing is touched.
pub fn raise() -> Result<Memlock, MemlockError> {
    use nix::sys::resource::{RLIM_INFINITY, Resource, setrlimit};
    match status() {
        Memlock::Limited(limit) => {
            setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY).map_err(
                |source| MemlockError {
                    kernel: release(),
                    limit,
                    source,
                },
            )?;
            Ok(Memlock::Unlimited)
        }
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_before_5_11_charge_the_limit() {
        let cases = [
            ("5.10.0-28-amd64", Some((5, 10)), true),
            ("4.19.0-26-cloud-amd64", Some((4, 19)), true),
            ("5.11.0", Some((5, 11)), false),
            ("6.1.0-18-amd64", Some((6, 1)), false),
            ("6.18.44-fc-v1300", Some((6, 18)), false),
            ("6.12", Some((6, 12)), false),
            ("5.4.0rc1", Some((5, 4)), true),
            ("garbage", None, false),
        ];
        for (release, version, want) in cases {
            assert_eq!(parse_release(release), version, "{release}");
            assert_eq!(version.is_some_and(charged), want, "{release}");
        }
    }

    #[test]
    fn the_refusal_names_the_fix() {
        let error = MemlockError {
            kernel: "5.10.0-28-amd64".into(),
            limit: 65_536,
            source: nix::Error::EPERM,
        };
        assert_eq!(
            error.to_string(),
            "kernel 5.10.0-28-amd64 charges BPF maps to RLIMIT_MEMLOCK (65536 bytes) and raising \
             it was refused: run as root with CAP_SYS_RESOURCE, or set LimitMEMLOCK=infinity in \
             the unit"
        );
    }
}

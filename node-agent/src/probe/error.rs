//! Why a kernel capability probe failed. A failed probe is not a missing feature: its text ends
//! up in [`super::Presence::Unknown`] (through [`crate::error_chain`]) and in `check`'s table.

use aya::{programs::ProgramError, sys::SyscallError};

use crate::datapath::{DatapathError, memlock::MemlockError};

/// A probe that could not tell.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The running kernel's version could not be read.
    #[error("reading the kernel version")]
    KernelVersion(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// RLIMIT_MEMLOCK could not be raised for the map probes.
    #[error(transparent)]
    Memlock(#[from] MemlockError),
    /// aya's program-type or helper probe failed.
    #[error(transparent)]
    Program(#[from] Box<ProgramError>),
    /// aya's map-type probe failed.
    #[error(transparent)]
    Syscall(#[from] SyscallError),
    /// A `bpf(2)` command failed in a way that answers nothing.
    #[error("bpf({command})")]
    Bpf {
        /// The command (`BPF_LINK_CREATE`, `BPF_PROG_LOAD`, ...).
        command: &'static str,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// The `BPF_FIB_LOOKUP_SRC` probe program's lookup failed even without the flag.
    #[error("bpf_fib_lookup without flags failed in the probe program: errno {errno}")]
    FibLookup {
        /// The helper's negated result.
        errno: i32,
    },
    /// The lookup with `BPF_FIB_LOOKUP_SRC` failed with something other than `EINVAL`.
    #[error("bpf_fib_lookup with BPF_FIB_LOOKUP_SRC failed in the probe program: errno {errno}")]
    FibLookupSrc {
        /// The helper's negated result.
        errno: i32,
    },
    /// The counters object, or a program in it, could not be had.
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    /// A probe program did not load.
    #[error("loading {program}")]
    Load {
        /// The program's name.
        program: &'static str,
        /// aya's error.
        #[source]
        source: Box<ProgramError>,
    },
}

impl From<ProgramError> for ProbeError {
    fn from(error: ProgramError) -> Self {
        Self::Program(Box::new(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_probe_reads_as_the_call_and_the_kernels_answer() {
        let cases = [
            (
                ProbeError::Bpf {
                    command: "BPF_LINK_CREATE",
                    source: std::io::Error::from_raw_os_error(libc::EPERM),
                },
                "bpf(BPF_LINK_CREATE): Operation not permitted (os error 1)",
            ),
            (
                ProbeError::FibLookup { errno: 22 },
                "bpf_fib_lookup without flags failed in the probe program: errno 22",
            ),
            (
                ProbeError::FibLookupSrc { errno: 19 },
                "bpf_fib_lookup with BPF_FIB_LOOKUP_SRC failed in the probe program: errno 19",
            ),
        ];
        for (error, want) in cases {
            assert_eq!(crate::error_chain(&error), want);
        }
    }
}

use aya::{EbpfError, maps::MapError, programs::ProgramError};

/// Everything that can go wrong between the embedded object and the kernel.
///
/// aya's errors are boxed: they are large, and this error travels through every datapath call.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// RLIMIT_MEMLOCK is too low on a kernel that charges BPF maps to it.
    #[error(transparent)]
    Memlock(#[from] super::memlock::MemlockError),

    /// The embedded object could not be parsed, or its maps could not be created.
    #[error("loading the eBPF object failed")]
    LoadObject(#[source] Box<EbpfError>),

    /// The object lacks a program the agent expects (agent and object out of step).
    #[error("the eBPF object has no program named {program}")]
    MissingProgram { program: &'static str },

    /// The object lacks a map the agent expects.
    #[error("the eBPF object has no map named {map}")]
    MissingMap { map: &'static str },

    /// A program has another type than the agent expects.
    #[error("program {program} has unexpected type {kind}")]
    UnexpectedProgramType { program: String, kind: String },

    /// The kernel refused a program (the verifier log is in the source).
    #[error("the kernel refused program {program}")]
    LoadProgram {
        program: String,
        #[source]
        source: Box<ProgramError>,
    },

    /// Attaching a program to an interface failed.
    #[error("attaching {program} to {interface} ({direction}) failed")]
    Attach {
        program: &'static str,
        interface: String,
        direction: &'static str,
        #[source]
        source: Box<ProgramError>,
    },

    /// A map operation failed.
    #[error("map {map}: operation failed")]
    Map {
        map: &'static str,
        #[source]
        source: Box<MapError>,
    },

    /// A filesystem step (pin directory, cgroup, bpffs mount) failed.
    #[error("{what}: {path}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Pinning or opening a pinned link failed.
    #[error("link {path}")]
    Link {
        path: std::path::PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The desired state cannot be expressed in the maps.
    #[error("load-balancer state")]
    State(#[from] super::lb::StateError),

    /// An interface name did not resolve in the current network namespace.
    #[error("no interface named {interface} in this network namespace")]
    NoSuchInterface {
        interface: String,
        #[source]
        source: std::io::Error,
    },

    /// Listing the addresses of this network namespace's interfaces failed.
    #[error("listing the interfaces' IPv4 addresses")]
    InterfaceAddresses(#[source] nix::errno::Errno),
}

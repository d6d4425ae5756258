//! The host the agent runs on: where cgroup v2 is mounted ([`cgroup`]), Docker's cgroup driver
//! ([`docker`]), the BPF filesystem ([`bpffs`]), the locked-memory limit BPF maps are charged
//! to on old kernels ([`crate::datapath::memlock`]), and removing everything the agent put on the host
//! ([`reset`]).
//!
//! `run` calls [`preflight`] before it loads or attaches anything: a host it cannot use is
//! refused in one line naming the fix, before anything is written to it.

pub mod bpffs;
pub mod cgroup;
pub mod docker;
pub mod reset;

use std::path::{Path, PathBuf};

/// `--cgroup`'s value that means the detected cgroup2 root.
pub const CGROUP_AUTO: &str = "auto";

/// Why the host cannot run the agent.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// No usable cgroup2 hierarchy (`--cgroup auto`).
    #[error("--cgroup auto: {0}")]
    Cgroup(#[from] cgroup::CgroupError),
    /// Docker is missing, or `--cgroup-parent` does not fit its driver.
    #[error(transparent)]
    Docker(#[from] docker::DockerError),
    /// RLIMIT_MEMLOCK could not be raised on a kernel that charges BPF maps to it.
    #[error(transparent)]
    Memlock(#[from] crate::datapath::memlock::MemlockError),
    /// The BPF filesystem could not be mounted.
    #[error("mounting the BPF filesystem at {}", bpffs::ROOT)]
    Bpffs(#[source] nix::Error),
    /// Another agent holds the data directory.
    #[error("{0}")]
    Locked(String),
    /// A local failure (a runtime, a directory).
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What [`preflight`] found and did.
#[derive(Debug, Clone)]
pub struct Host {
    /// The cgroup2 directory socket-LB attaches to.
    pub cgroup: PathBuf,
    /// The layout detected (`None` when `--cgroup` named a directory).
    pub layout: Option<cgroup::Layout>,
    /// The host's cgroup2 root (detected; `cgroup` when detection failed and `--cgroup` named
    /// a directory).
    pub cgroup_root: PathBuf,
    /// The Docker engine.
    pub engine: docker::Engine,
    /// The locked-memory limit's state.
    pub memlock: crate::datapath::memlock::Memlock,
    /// Whether the BPF filesystem had to be mounted.
    pub mounted_bpffs: bool,
}

/// `--cgroup`: [`CGROUP_AUTO`] is the detected cgroup2 root, anything else the path given.
pub fn resolve_cgroup(value: &Path) -> Result<(PathBuf, Option<cgroup::Layout>), HostError> {
    if value != Path::new(CGROUP_AUTO) {
        return Ok((value.to_path_buf(), None));
    }
    let found = cgroup::detect_host()?;
    Ok((found.root, Some(found.layout)))
}

/// Checks the host for `run` (cgroup2, Docker and `--cgroup-parent`), then raises
/// RLIMIT_MEMLOCK where needed and mounts bpffs if missing: nothing is written before the
/// checks pass.
pub fn preflight(
    cgroup_flag: &Path,
    docker_socket: &str,
    cgroup_parent: Option<&str>,
) -> Result<Host, HostError> {
    let (cgroup, layout) = resolve_cgroup(cgroup_flag)?;
    let cgroup_root = match layout {
        Some(_) => cgroup.clone(),
        None => cgroup::detect_host().map_or_else(|_| cgroup.clone(), |found| found.root),
    };
    let engine = block_on(docker::preflight(docker_socket, cgroup_parent))??;
    let memlock = crate::datapath::memlock::ensure()?;
    let mounted_bpffs = bpffs::ensure().map_err(HostError::Bpffs)?;
    Ok(Host {
        cgroup,
        layout,
        cgroup_root,
        engine,
        memlock,
        mounted_bpffs,
    })
}

fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, HostError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| HostError::Io {
            what: "starting an async runtime".to_owned(),
            source,
        })?;
    Ok(runtime.block_on(future))
}

/// The lock a running agent holds on `<data-dir>/agent.lock` (with its pid inside), so that a
/// second agent on the same data directory and `reset` refuse to run. Released on drop (or
/// when the process ends).
#[derive(Debug)]
pub struct AgentLock {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl AgentLock {
    /// Takes the lock of `data_dir` (created if missing).
    pub fn take(data_dir: &Path) -> Result<Self, HostError> {
        use std::io::Write as _;
        let path = reset::lock_path(data_dir);
        let io = |what: &str| {
            let what = format!("{what} {}", path.display());
            move |source| HostError::Io { what, source }
        };
        std::fs::create_dir_all(data_dir).map_err(io("creating the directory of"))?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("opening"))?;
        let mut lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            HostError::Locked(format!(
                "another agent (pid {}) holds {}: one agent per data directory",
                pid.trim(),
                path.display()
            ))
        })?;
        lock.set_len(0).map_err(io("truncating"))?;
        write!(lock, "{}", std::process::id()).map_err(io("writing"))?;
        Ok(Self { _lock: lock })
    }
}

/// The lines `check` prints about the host (what `run` would find), and whether `run` could
/// use it (a missing cgroup2 hierarchy refuses it; a missing Docker is reported, since `check`
/// also runs where Docker is not installed yet).
pub fn check_lines(docker_socket: &str) -> (Vec<String>, bool) {
    let mut lines = Vec::new();
    let mut ok = true;
    match cgroup::detect_host() {
        Ok(found) => lines.push(format!(
            "cgroup:  {} at {} (--cgroup auto)",
            found.layout,
            found.root.display()
        )),
        Err(error) => {
            ok = false;
            lines.push(format!("cgroup:  run refuses: {error}"));
        }
    }
    match block_on(docker::engine(docker_socket)) {
        Ok(Ok(engine)) => lines.push(format!(
            "docker:  {} at {docker_socket}, cgroup driver {}, cgroup v{} (--cgroup-parent: {})",
            engine.version,
            engine.driver,
            engine.cgroup_version,
            match engine.driver {
                docker::CgroupDriver::Systemd => "a slice, e.g. keelson-pods.slice",
                docker::CgroupDriver::Cgroupfs => "a path, e.g. /keelson-pods",
            }
        )),
        Ok(Err(error)) => lines.push(format!(
            "docker:  run refuses: {}",
            crate::error_chain(&error)
        )),
        Err(error) => lines.push(format!(
            "docker:  not checked: {}",
            crate::error_chain(&error)
        )),
    }
    lines.push(if bpffs::mounted_here() {
        format!("bpffs:   mounted at {}", bpffs::ROOT)
    } else {
        format!("bpffs:   not mounted at {} (run mounts it)", bpffs::ROOT)
    });
    lines.push(match crate::datapath::memlock::ensure() {
        Ok(memlock) => format!("memlock: {memlock}"),
        Err(error) => {
            ok = false;
            format!("memlock: run refuses: {}", crate::error_chain(&error))
        }
    });
    (lines, ok)
}

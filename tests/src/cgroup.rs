//! A child cgroup2 a test creates for its client processes: the socket-LB programs attach here,
//! never at the machine's root cgroup, so a faulty program cannot cut the machine's connections.

use std::path::{Path, PathBuf};

use crate::unique_name;

/// Where cgroup2 is mounted on this machine kind (hybrid hierarchy).
pub const CGROUP2_ROOT: &str = "/sys/fs/cgroup/unified";

/// A cgroup2 directory, removed on drop (processes still in it are killed first).
#[derive(Debug)]
pub struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    /// Creates `CGROUP2_ROOT/keelson-test-<unique>`.
    pub fn new() -> Self {
        let root = Path::new(CGROUP2_ROOT);
        assert!(
            root.join("cgroup.procs").exists(),
            "cgroup2 is not mounted at {CGROUP2_ROOT}: mount -t cgroup2 none {CGROUP2_ROOT}"
        );
        let path = root.join(unique_name("kt-cg"));
        std::fs::create_dir(&path)
            .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", path.display()));
        Self { path }
    }

    /// The cgroup directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A shell snippet prefix that moves the shell into this cgroup, for `sh -c`.
    pub fn enter_snippet(&self) -> String {
        format!("echo $$ > {}/cgroup.procs && ", self.path.display())
    }
}

impl Default for TestCgroup {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let procs = std::fs::read_to_string(self.path.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for _ in 0..50 {
            if std::fs::remove_dir(&self.path).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        if !std::thread::panicking() {
            panic!("could not remove cgroup {}", self.path.display());
        }
    }
}

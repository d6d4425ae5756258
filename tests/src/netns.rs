//! Network namespaces a test creates, enters and removes.

use std::{fs::File, path::PathBuf};

use nix::sched::{CloneFlags, setns};

use crate::{require_program, run, unique_name};

/// A named network namespace (`ip netns add`), deleted with everything in it on drop.
///
/// It starts with only `lo` (brought up) and no route anywhere, so nothing sent inside it can
/// reach the machine's uplink.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a fresh namespace with a unique name.
    pub fn new(prefix: &str) -> Self {
        require_program("ip", "iproute2");
        let name = unique_name(prefix);
        run("ip", &["netns", "add", &name]);
        let ns = Self { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// The namespace's name, as `ip netns` knows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs a command inside the namespace (`ip netns exec`), panicking if it fails.
    pub fn exec(&self, command: &[&str]) -> std::process::Output {
        let mut args = vec!["netns", "exec", self.name.as_str()];
        args.extend_from_slice(command);
        run("ip", &args)
    }

    /// Moves the calling thread into the namespace until the guard drops.
    pub fn enter(&self) -> NetNsGuard {
        let original = File::open("/proc/thread-self/ns/net")
            .unwrap_or_else(|e| panic!("cannot open this thread's network namespace: {e}"));
        let target = File::open(self.path())
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.path().display()));
        setns(&target, CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns into {} failed: {e}", self.name));
        NetNsGuard { original }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace destroys its interfaces (and the veth peers elsewhere).
        let status = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if !matches!(status, Ok(s) if s.success()) && !std::thread::panicking() {
            panic!("could not delete network namespace {}", self.name);
        }
    }
}

/// Returns the thread to the namespace it was in before [`NetNs::enter`].
#[derive(Debug)]
pub struct NetNsGuard {
    original: File,
}

impl Drop for NetNsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.original, CloneFlags::CLONE_NEWNET) {
            // Staying in the test namespace would run the rest of the thread in the wrong place.
            if !std::thread::panicking() {
                panic!("could not return to the original network namespace: {e}");
            }
        }
    }
}

//! The harness keelson's privileged and end-to-end tests share.
//!
//! Every helper cleans up after itself on drop, and every missing prerequisite is a panic that
//! names the command that installs it: a test here never passes by skipping.

pub mod cgroup;
pub mod cluster;
pub mod etcd;
pub mod lbkit;
pub mod netcluster;
pub mod netns;
pub mod netpol;
pub mod netpol_cases;
pub mod pods;
pub mod policykit;
pub mod rollout;
pub mod startup;
pub mod topology;

use std::process::{Command, Output};

/// Panics unless the test runs as root (network namespaces, eBPF, dockerd all need it).
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (CAP_NET_ADMIN, CAP_BPF): run `sudo cargo xtask test`"
    );
}

/// Panics unless `program` is on `PATH`, naming the setup step that installs it.
pub fn require_program(program: &str, apt_package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()));
    assert!(
        found,
        "`{program}` is not installed: run `cargo xtask setup` (or `apt-get install -y {apt_package}`)"
    );
}

/// Runs a command to completion and panics with its output if it fails.
pub fn run(program: &str, args: &[&str]) -> Output {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{program} {}`: {e}", args.join(" ")));
    assert!(
        output.status.success(),
        "`{program} {}` failed with {}:\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    output
}

/// A name unique to this test process and call, short enough for an interface name (15 bytes).
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{:x}{n:x}", std::process::id() % 0x10000);
    assert!(name.len() <= 15, "name {name} is too long for an interface");
    name
}

/// A number in `1..=count` that no other running test holds, and the lock that holds it: an
/// exclusive `flock` on `/run/keelson-tests/<name(n)>`, released when dropped or when the
/// process dies (tests run as separate processes at once). `None` if all are held.
pub fn claim_slot(
    count: u32,
    name: impl Fn(u32) -> String,
) -> Option<(u32, nix::fcntl::Flock<std::fs::File>)> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::path::Path::new("/run/keelson-tests");
    std::fs::create_dir_all(dir).expect("create /run/keelson-tests");
    let start = std::process::id() + NEXT.fetch_add(1, Ordering::Relaxed) * 37;
    (0..count).find_map(|k| {
        let n = (start + k) % count + 1;
        let path = dir.join(name(n));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .ok()
            .map(|lock| (n, lock))
    })
}

/// Polls `check` every 200 ms until it returns `Some`, for at most `limit`; on timeout panics
/// naming `what`, with `logs()` for the reader.
pub async fn eventually<T, F, Fut>(
    what: &str,
    limit: std::time::Duration,
    logs: impl Fn() -> String,
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}; logs:\n{}",
            logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

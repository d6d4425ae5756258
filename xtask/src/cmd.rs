//! Running external commands with their command line shown, and the paths they need.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail};

/// The repository root (the parent of `xtask/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the repository root")
        .to_path_buf()
}

/// `$CARGO_HOME/bin`, where `cargo install` puts bpf-linker.
pub fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// `PATH` with `$CARGO_HOME/bin` in front, so tools installed by setup are found by the builds
/// it starts even when the user's shell did not add it.
pub fn path_with_cargo_bin() -> OsString {
    let mut dirs = vec![cargo_bin_dir()];
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

/// A command with `PATH` prepared and the working directory at the repository root.
pub fn command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("PATH", path_with_cargo_bin())
        .current_dir(repo_root());
    cmd
}

/// Runs `cmd` with inherited output, printing it first and its wall time after.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    println!("$ {}", display(cmd));
    let started = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{}`", display(cmd)))?;
    if !status.success() {
        bail!("`{}` failed with {status}", display(cmd));
    }
    println!("  ({:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}

/// Runs `cmd` quietly and returns its stdout if it succeeds, `None` otherwise (also when the
/// program does not exist).
pub fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The command line as a user would type it.
pub fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The root check every privileged command starts with.
pub fn require_root(what: &str) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("{what} needs root (apt, eBPF, network namespaces, dockerd): run it with sudo");
    }
    Ok(())
}

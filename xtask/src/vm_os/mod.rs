//! `cargo xtask vm-test --os`: keelson as a user installs it, on a real OS in a VM.
//!
//! Builds the Debian packages (`dist`), the Debian 12 image if this machine has none cached
//! (see [`image`]), and a tarball of the test images (`docker save` of what `cargo xtask images`
//! builds: the VM has no registry either), then runs the host-side scenario test
//! `tests/tests/vm_os/`. That test boots the image under qemu on a bridge it creates, installs
//! the packages with dpkg, joins the VM to a control plane on the host with a token and checks
//! the node's life (see its doc). Its lines go to the terminal and `target/vm/os/`.

mod image;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::cmd::{self, command, repo_root};

/// The scenario's test binary (tests/tests/vm_os/).
const TEST: &str = "vm_os";

/// The images the scenario's pods use, saved into the tarball the VM loads.
const IMAGES: &[&str] = &["keelson/busybox:1", "keelson/httpd:1"];

/// Runs the scenario; `timeout` bounds the test binary.
pub fn run(accel: &str, timeout: Duration) -> anyhow::Result<()> {
    cmd::require_root("vm-test --os")?;
    for program in [
        "qemu-system-x86_64",
        "ssh",
        "scp",
        "docker",
        "ip",
        "cp",
        "dpkg-deb",
    ] {
        if !crate::dist::on_path(program) {
            bail!("`{program}` is not installed: run `cargo xtask setup`");
        }
    }
    let started = Instant::now();
    let debs = crate::dist::run()?;
    let release = debs
        .first()
        .and_then(|d| d.parent())
        .and_then(Path::parent)
        .context("target/dist has a parent")?
        .join("release");
    let image = image::ensure()?;

    let run_dir = release
        .parent()
        .context("the release directory has a parent")?
        .join("vm")
        .join("os");
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create {}", run_dir.display()))?;
    crate::images::run()?;
    let images_tar = run_dir.join("images.tar");
    cmd::run(
        command("docker")
            .arg("save")
            .arg("-o")
            .arg(&images_tar)
            .args(IMAGES),
    )?;

    let test = build_test()?;
    println!(
        "==> vm-test --os: the scenario ({} prepared in {:.0} s)",
        image.dir.display(),
        started.elapsed().as_secs_f64()
    );
    let dist_dir = debs
        .first()
        .and_then(|d| d.parent())
        .context("a package was built")?;
    let mut child = command(&test.to_string_lossy())
        .args(["--exact", "--nocapture", "--test-threads", "1"])
        .arg("debian12_node_joins_serves_restarts_reboots_and_resets")
        .env("KEELSON_VM_OS_ROOTFS", &image.rootfs)
        .env("KEELSON_VM_OS_KERNEL", &image.kernel)
        .env("KEELSON_VM_OS_INITRD", &image.initrd)
        .env("KEELSON_VM_OS_SSH_KEY", &image.ssh_key)
        .env("KEELSON_VM_OS_DEBS", dist_dir)
        .env("KEELSON_VM_OS_IMAGES", &images_tar)
        .env("KEELSON_VM_OS_RUN_DIR", &run_dir)
        .env(
            "KEELSON_VM_OS_CONTROL_PLANE",
            release.join("keelson-control-plane"),
        )
        .env("KEELSON_VM_ACCEL", accel)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", test.display()))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            // SIGTERM lets the test's guards remove the VM, tap, bridge and routes.
            let pid = nix::unistd::Pid::from_raw(
                i32::try_from(child.id()).context("the test's pid fits an i32")?,
            );
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
            bail!(
                "the scenario did not finish within {} s (logs in {})",
                timeout.as_secs(),
                run_dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if !status.success() {
        bail!(
            "the Debian 12 scenario failed ({status}); the VM's console is in {}",
            run_dir.join("console.log").display()
        );
    }
    println!(
        "==> vm-test --os: passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Builds the scenario's test binary; returns its path.
fn build_test() -> anyhow::Result<PathBuf> {
    let mut cargo = command("cargo");
    cargo
        .args(["build", "-p", "keelson-tests", "--test", TEST])
        .arg("--message-format=json-render-diagnostics")
        .stdout(Stdio::piped());
    if std::env::var_os("CARGO_INCREMENTAL").is_none() {
        cargo.env("CARGO_INCREMENTAL", "0");
    }
    println!("$ {}", cmd::display(&cargo));
    let output = cargo
        .current_dir(repo_root())
        .spawn()
        .and_then(std::process::Child::wait_with_output)
        .context("cannot start cargo")?;
    if !output.status.success() {
        bail!("building the {TEST} test failed with {}", output.status);
    }
    test_executable(&String::from_utf8_lossy(&output.stdout), TEST)
        .with_context(|| format!("cargo reported no test executable named {TEST}"))
}

/// The executable of test target `name` in cargo's JSON messages.
fn test_executable(json_lines: &str, name: &str) -> Option<PathBuf> {
    json_lines.lines().find_map(|line| {
        let message: serde_json::Value = serde_json::from_str(line).ok()?;
        let target = message.get("target")?;
        let is_test = target
            .get("kind")?
            .as_array()?
            .iter()
            .any(|k| k.as_str() == Some("test"));
        (is_test && target.get("name")?.as_str() == Some(name))
            .then(|| message.get("executable")?.as_str().map(PathBuf::from))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_test_executable_among_cargo_messages() {
        let lines = [
            r#"{"reason":"compiler-artifact","target":{"kind":["lib"],"name":"vm_os"},"executable":null}"#,
            r#"{"reason":"compiler-artifact","target":{"kind":["test"],"name":"vm_cluster"},"executable":"/t/vm_cluster-1"}"#,
            r#"{"reason":"compiler-artifact","target":{"kind":["test"],"name":"vm_os"},"executable":"/t/vm_os-2"}"#,
        ]
        .join("\n");
        assert_eq!(
            test_executable(&lines, "vm_os"),
            Some(PathBuf::from("/t/vm_os-2"))
        );
        assert_eq!(test_executable(&lines, "vm_nope"), None);
    }
}

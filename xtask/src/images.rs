//! `cargo xtask images`: the test images, built offline (no registry is reachable).
//!
//! Each image is a root filesystem holding Debian's statically linked busybox (package
//! `busybox-static`) with one symlink per applet, packed with tar and `docker import`-ed.
//! Building is skipped when Docker already has the image at the current revision, so setup and
//! test stay fast.

use std::path::Path;

use anyhow::{Context as _, bail};

use crate::cmd::{self, command};

/// Bumped when the contents change, so `images` rebuilds an outdated image.
const REVISION: &str = "1";
const REVISION_LABEL: &str = "io.keelson.image-revision";
const BUSYBOX: &str = "/bin/busybox";

/// An image: its name and the `docker import --change` lines that set its config.
struct Image {
    name: &'static str,
    what: &'static str,
    changes: &'static [&'static str],
}

/// The test images; README "Pods" lists them.
const IMAGES: &[Image] = &[
    Image {
        name: "keelson/busybox:1",
        what: "busybox applets (sh, sleep, cat, nc, httpd, wget, ...); runs `sh` by default",
        changes: &["CMD [\"sh\"]"],
    },
    Image {
        name: "keelson/httpd:1",
        what: "busybox httpd on port 80 (env PORT) serving the pod's hostname at /",
        changes: &[
            "ENV PORT=80",
            "CMD [\"sh\", \"-c\", \"mkdir -p /www && hostname > /www/index.html && exec httpd -f -p $PORT -h /www\"]",
        ],
    },
];

/// Builds every missing or outdated test image; returns what it did, for setup's report.
pub fn ensure() -> anyhow::Result<(bool, String)> {
    let missing: Vec<&Image> = IMAGES.iter().filter(|i| !current(i.name)).collect();
    if missing.is_empty() {
        let names: Vec<&str> = IMAGES.iter().map(|i| i.name).collect();
        return Ok((false, format!("present: {}", names.join(", "))));
    }
    if !Path::new(BUSYBOX).is_file() {
        bail!("{BUSYBOX} is missing (package busybox-static)");
    }
    let dir = tempfile_dir()?;
    let rootfs = dir.join("rootfs");
    let result = build_rootfs(&rootfs).and_then(|()| {
        let tarball = dir.join("rootfs.tar");
        cmd::run(
            command("tar")
                .arg("-C")
                .arg(&rootfs)
                .arg("-cf")
                .arg(&tarball)
                .arg("."),
        )?;
        for image in &missing {
            let mut import = command("docker");
            import.arg("import");
            for change in image.changes {
                import.args(["--change", change]);
            }
            import
                .args(["--change", &format!("LABEL {REVISION_LABEL}={REVISION}")])
                .arg(&tarball)
                .arg(image.name);
            cmd::run(&mut import)?;
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    let built: Vec<String> = missing
        .iter()
        .map(|i| format!("{} ({})", i.name, i.what))
        .collect();
    Ok((true, format!("imported {}", built.join("; "))))
}

/// `cargo xtask images`.
pub fn run() -> anyhow::Result<()> {
    cmd::require_root("cargo xtask images")?;
    let (_, what) = ensure()?;
    println!("==> images: {what}");
    Ok(())
}

/// Docker has `name` with the current revision label.
fn current(name: &str) -> bool {
    cmd::output(command("docker").args([
        "image",
        "inspect",
        "--format",
        &format!("{{{{ index .Config.Labels \"{REVISION_LABEL}\" }}}}"),
        name,
    ]))
    .is_some_and(|label| label.trim() == REVISION)
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("keelson-images-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// `/bin/busybox`, a symlink per applet in `/bin`, and the few files programs expect.
fn build_rootfs(rootfs: &Path) -> anyhow::Result<()> {
    let bin = rootfs.join("bin");
    for dir in ["bin", "etc", "tmp", "proc", "sys", "dev", "root", "www"] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    std::fs::copy(BUSYBOX, bin.join("busybox")).context("copying busybox")?;
    let applets = cmd::output(command(BUSYBOX).arg("--list")).context("`busybox --list` failed")?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
        if applet == "busybox" {
            continue;
        }
        std::os::unix::fs::symlink("busybox", bin.join(applet))
            .with_context(|| format!("linking applet {applet}"))?;
    }
    std::os::unix::fs::symlink("bin", rootfs.join("sbin"))?;
    std::fs::create_dir_all(rootfs.join("usr"))?;
    std::os::unix::fs::symlink("../bin", rootfs.join("usr/bin"))?;
    std::os::unix::fs::symlink("../bin", rootfs.join("usr/sbin"))?;
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    Ok(())
}

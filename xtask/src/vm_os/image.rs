//! The Debian 12 image `vm-test --os` boots, built once per machine from the package archive
//! with debootstrap (the recipe is `build-image.sh`, next to this file) and cached outside the
//! clone under `/var/cache/keelson/vm-os/debian12-<hash of the recipe>/`.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::cmd::{self, command};

/// The recipe; its hash names the cache directory, so a changed recipe builds a new image.
const RECIPE: &str = include_str!("build-image.sh");

/// Where built images are kept (one directory per recipe).
const CACHE: &str = "/var/cache/keelson/vm-os";

/// The files of a built image.
#[derive(Debug, Clone)]
pub struct Image {
    /// The cache directory holding the files below.
    pub dir: PathBuf,
    /// Raw ext4 root file system.
    pub rootfs: PathBuf,
    /// The image's kernel.
    pub kernel: PathBuf,
    /// The image's initramfs.
    pub initrd: PathBuf,
    /// root's ssh private key.
    pub ssh_key: PathBuf,
}

impl Image {
    fn in_dir(dir: PathBuf) -> Self {
        Self {
            rootfs: dir.join("rootfs.ext4"),
            kernel: dir.join("vmlinuz"),
            initrd: dir.join("initrd.img"),
            ssh_key: dir.join("id_ed25519"),
            dir,
        }
    }

    fn complete(&self) -> bool {
        [&self.rootfs, &self.kernel, &self.initrd, &self.ssh_key]
            .iter()
            .all(|f| f.is_file())
    }
}

/// The first 16 hex digits of the recipe's SHA-256.
fn recipe_hash() -> anyhow::Result<String> {
    let mut child = command("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot start sha256sum")?;
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().context("sha256sum's stdin")?;
        stdin.write_all(RECIPE.as_bytes())?;
    }
    let output = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    match text.get(..16) {
        Some(hex) if output.status.success() => Ok(hex.to_owned()),
        _ => bail!("sha256sum failed: {text}"),
    }
}

/// The cached image, built first if missing (as root: debootstrap, chroot, mkfs.ext4).
pub fn ensure() -> anyhow::Result<Image> {
    let image = Image::in_dir(Path::new(CACHE).join(format!("debian12-{}", recipe_hash()?)));
    if image.complete() {
        println!("  image {} (cached)", image.dir.display());
        return Ok(image);
    }
    for program in ["debootstrap", "mkfs.ext4", "ssh-keygen", "chroot"] {
        if !crate::dist::on_path(program) {
            bail!("`{program}` is not installed: run `cargo xtask setup`");
        }
    }
    fs::create_dir_all(CACHE).with_context(|| format!("cannot create {CACHE}"))?;
    let script = Path::new(CACHE).join("build-image.sh");
    fs::write(&script, RECIPE).with_context(|| format!("cannot write {}", script.display()))?;
    println!(
        "==> vm-test --os: building the Debian 12 image (debootstrap, once per machine) into {}",
        image.dir.display()
    );
    let started = Instant::now();
    cmd::run(command("sh").arg(&script).arg(&image.dir))?;
    if !image.complete() {
        bail!(
            "{} finished but {} is incomplete",
            script.display(),
            image.dir.display()
        );
    }
    println!(
        "  image built in {:.0} s ({} MB allocated)",
        started.elapsed().as_secs_f64(),
        allocated_mb(&image.rootfs)
    );
    // Images of earlier recipes are never booted again: a gigabyte each.
    for entry in fs::read_dir(CACHE)
        .with_context(|| format!("cannot read {CACHE}"))?
        .filter_map(Result::ok)
    {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("debian12-") && path != image.dir {
            println!("  removing the outdated image {}", path.display());
            fs::remove_dir_all(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(image)
}

/// Disk space a sparse file takes.
fn allocated_mb(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata(path).map_or(0, |m| m.blocks() * 512 / 1_000_000)
}

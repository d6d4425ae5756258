//! The BPF filesystem at `/sys/fs/bpf`, where the agent pins its maps and links. systemd mounts
//! it on most distributions; a minimal host or a container may not, and then the agent mounts
//! it itself.

use std::path::Path;

/// Where the BPF filesystem belongs.
pub const ROOT: &str = "/sys/fs/bpf";

/// Whether a filesystem of type `bpf` is mounted at `path` in the mount table `mountinfo`.
pub fn mounted(mountinfo: &str, path: &Path) -> bool {
    mountinfo
        .lines()
        .filter_map(super::cgroup::parse_line)
        .any(|m| m.fs_type == "bpf" && Path::new(&m.mount_point) == path)
}

/// Whether the BPF filesystem is mounted at [`ROOT`] on this host.
pub fn mounted_here() -> bool {
    std::fs::read_to_string(super::cgroup::MOUNTINFO)
        .is_ok_and(|table| mounted(&table, Path::new(ROOT)))
}

/// Mounts the BPF filesystem at [`ROOT`] unless it is there; returns whether it mounted it.
pub fn ensure() -> Result<bool, nix::Error> {
    if mounted_here() {
        return Ok(false);
    }
    std::fs::create_dir_all(ROOT).map_err(|e| {
        e.raw_os_error()
            .map_or(nix::Error::EIO, nix::Error::from_raw)
    })?;
    nix::mount::mount(
        Some("bpf"),
        ROOT,
        Some("bpf"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        Some("mode=0700"),
    )?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpffs_is_found_only_where_it_is_mounted() {
        let with = "32 22 0:28 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:11 - bpf bpf rw,mode=700\n";
        let elsewhere = "32 22 0:28 / /run/bpf rw,relatime - bpf bpf rw\n";
        let tmpfs = "32 22 0:28 / /sys/fs/bpf rw,relatime - tmpfs tmpfs rw\n";
        let cases = [
            (with, true),
            (elsewhere, false),
            (tmpfs, false),
            ("", false),
        ];
        for (table, want) in cases {
            assert_eq!(mounted(table, Path::new(ROOT)), want, "{table:?}");
        }
    }
}

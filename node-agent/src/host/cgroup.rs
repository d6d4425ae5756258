//! Where cgroup v2 is mounted, read from `/proc/self/mountinfo`.
//!
//! Three layouts occur on real hosts: cgroup2 alone at `/sys/fs/cgroup` (every current
//! distribution: Debian 12, Ubuntu 22.04+, Fedora), cgroup2 at `/sys/fs/cgroup/unified` beside
//! the v1 controllers (systemd's hybrid mode, older distributions), and v1 controllers alone
//! (cgroup2 unmounted). Socket-LB attaches to a cgroup2 directory, so the last one is an error
//! naming the fix. The detection is a pure function over the mount table's text.

use std::path::{Path, PathBuf};

/// The file the mount table is read from.
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

/// How the host's cgroup hierarchies are mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// cgroup2 alone (no v1 controller mounted).
    Unified,
    /// cgroup2 beside v1 controller hierarchies.
    Hybrid,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unified => "cgroup v2 (unified)",
            Self::Hybrid => "hybrid (cgroup v1 controllers beside cgroup v2)",
        })
    }
}

/// The cgroup2 hierarchy found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup2 {
    /// Pure or hybrid.
    pub layout: Layout,
    /// Where cgroup2 is mounted (the node's cgroup2 root, `--cgroup auto`).
    pub root: PathBuf,
}

/// Why no cgroup2 hierarchy can be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CgroupError {
    /// Only cgroup v1 controllers are mounted.
    #[error(
        "cgroup v2 is not mounted (this host mounts cgroup v1 only, at {v1}): boot with \
         `systemd.unified_cgroup_hierarchy=1` on the kernel command line, or mount it with \
         `mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none /sys/fs/cgroup/unified`"
    )]
    V1Only {
        /// Where the first v1 hierarchy is mounted.
        v1: String,
    },
    /// No cgroup filesystem at all.
    #[error(
        "no cgroup filesystem is mounted: mount cgroup v2 with `mount -t cgroup2 none /sys/fs/cgroup`"
    )]
    None,
    /// The mount table could not be read.
    #[error("cannot read {MOUNTINFO}: {0}")]
    Read(String),
}

/// One line of the mount table, the fields used here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mount {
    /// The directory of the filesystem mounted (the fourth field; `/` unless a bind mount or a
    /// cgroup namespace shows a subtree).
    pub(super) root: String,
    /// Where it is mounted.
    pub(super) mount_point: String,
    /// Its type (`cgroup2`, `bpf`, ...).
    pub(super) fs_type: String,
}

/// Parses one mountinfo line: `ID PARENT MAJ:MIN ROOT MOUNT-POINT OPTIONS [TAGS...] - TYPE
/// SOURCE SUPER-OPTIONS` (proc(5)). `None` for a line of another shape.
pub(super) fn parse_line(line: &str) -> Option<Mount> {
    let mut fields = line.split_whitespace();
    let root = fields.nth(3)?;
    let mount_point = fields.next()?;
    // Optional tagged fields end at the lone `-`.
    let mut fields = fields.skip_while(|field| *field != "-");
    fields.next()?;
    let fs_type = fields.next()?;
    Some(Mount {
        root: unescape(root),
        mount_point: unescape(mount_point),
        fs_type: fs_type.to_owned(),
    })
}

/// Undoes the kernel's octal escapes of space, tab, newline and backslash (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            std::str::from_utf8(digits)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup2 hierarchy in the mount table `mountinfo`: the mount at `/sys/fs/cgroup`, else at
/// `/sys/fs/cgroup/unified`, else the first cgroup2 mount of the hierarchy's root.
pub fn detect(mountinfo: &str) -> Result<Cgroup2, CgroupError> {
    let mounts: Vec<Mount> = mountinfo.lines().filter_map(parse_line).collect();
    let v1 = mounts.iter().find(|m| m.fs_type == "cgroup");
    let v2: Vec<&Mount> = mounts.iter().filter(|m| m.fs_type == "cgroup2").collect();
    let preferred = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];
    let chosen = preferred
        .iter()
        .find_map(|p| v2.iter().rev().find(|m| m.mount_point == *p))
        .or_else(|| v2.iter().find(|m| m.root == "/"))
        .or_else(|| v2.first());
    match (chosen, v1) {
        (Some(mount), v1) => Ok(Cgroup2 {
            layout: if v1.is_some() {
                Layout::Hybrid
            } else {
                Layout::Unified
            },
            root: PathBuf::from(&mount.mount_point),
        }),
        (None, Some(v1)) => Err(CgroupError::V1Only {
            v1: Path::new(&v1.mount_point)
                .parent()
                .filter(|p| p != &Path::new("/"))
                .unwrap_or_else(|| Path::new(&v1.mount_point))
                .display()
                .to_string(),
        }),
        (None, None) => Err(CgroupError::None),
    }
}

/// [`detect`] on this process's mount table.
pub fn detect_host() -> Result<Cgroup2, CgroupError> {
    let text = std::fs::read_to_string(MOUNTINFO).map_err(|e| CgroupError::Read(e.to_string()))?;
    detect(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian 12 / Ubuntu 22.04 under systemd: cgroup2 alone at /sys/fs/cgroup.
    const PURE_V2: &str = "\
22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
23 28 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw
28 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
31 22 0:27 / /sys/fs/pstore rw,nosuid,nodev,noexec,relatime shared:10 - pstore pstore rw
32 22 0:28 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:11 - bpf bpf rw,mode=700
";

    /// Ubuntu 20.04 / Debian 10 (systemd's hybrid mode): cgroup2 at /sys/fs/cgroup/unified.
    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
32 31 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
33 31 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,xattr,name=systemd
36 31 0:31 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory
37 31 0:32 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,cpu,cpuacct
";

    /// CentOS 7 style: v1 controllers only.
    const V1_ONLY: &str = "\
18 61 0:17 / /sys rw,nosuid,nodev,noexec,relatime shared:6 - sysfs sysfs rw
24 18 0:20 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:7 - tmpfs tmpfs ro,mode=755
25 24 0:21 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:8 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
28 24 0:24 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,memory
61 1 253:0 / / rw,relatime shared:1 - xfs /dev/mapper/centos-root rw,attr2,inode64,noquota
";

    /// A minimal container or initramfs: no cgroup filesystem.
    const NONE: &str = "\
61 1 0:52 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
62 61 0:55 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
63 61 0:56 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
";

    #[test]
    fn layouts_of_real_mount_tables() {
        let cases: [(&str, &str, Result<Cgroup2, CgroupError>); 4] = [
            (
                "pure v2",
                PURE_V2,
                Ok(Cgroup2 {
                    layout: Layout::Unified,
                    root: "/sys/fs/cgroup".into(),
                }),
            ),
            (
                "hybrid",
                HYBRID,
                Ok(Cgroup2 {
                    layout: Layout::Hybrid,
                    root: "/sys/fs/cgroup/unified".into(),
                }),
            ),
            (
                "v1 only",
                V1_ONLY,
                Err(CgroupError::V1Only {
                    v1: "/sys/fs/cgroup".into(),
                }),
            ),
            ("none", NONE, Err(CgroupError::None)),
        ];
        for (name, table, want) in cases {
            assert_eq!(detect(table), want, "{name}");
        }
    }

    #[test]
    fn errors_name_the_fix_on_one_line() {
        let v1 = detect(V1_ONLY).expect_err("v1 only").to_string();
        assert_eq!(
            v1,
            "cgroup v2 is not mounted (this host mounts cgroup v1 only, at /sys/fs/cgroup): \
             boot with `systemd.unified_cgroup_hierarchy=1` on the kernel command line, or \
             mount it with `mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 none \
             /sys/fs/cgroup/unified`"
        );
        let none = detect(NONE).expect_err("none").to_string();
        assert_eq!(
            none,
            "no cgroup filesystem is mounted: mount cgroup v2 with \
             `mount -t cgroup2 none /sys/fs/cgroup`"
        );
        assert!(!v1.contains('\n') && !none.contains('\n'));
    }

    #[test]
    fn other_cgroup2_mount_points_and_escapes() {
        // A cgroup2 mount elsewhere (and a bind of a subtree) is used when the usual ones are
        // missing; the hierarchy's root wins over the subtree, escapes are undone.
        let table = "\
40 1 0:40 /kubepods /mnt/sub rw - cgroup2 cgroup2 rw
41 1 0:40 / /run/my\\040cgroup rw shared:3 master:1 - cgroup2 none rw
";
        assert_eq!(
            detect(table),
            Ok(Cgroup2 {
                layout: Layout::Unified,
                root: "/run/my cgroup".into(),
            })
        );
        // Garbage lines are skipped, not fatal.
        assert_eq!(detect("garbage\n\n1 2 3\n"), Err(CgroupError::None));
    }
}

//! `fsGroup`: the kubelet gives a pod's volumes to the group (emptyDir, configMap, secret,
//! downwardAPI, projected; never hostPath): every file and directory gets that group, group
//! read (and write for writable volumes), directories also the setgid bit and group search, so
//! that files created later inherit the group. With `fsGroupChangePolicy: OnRootMismatch` the
//! walk is skipped when the volume's root already looks right.
//!
//! Source: kubernetes `pkg/volume/volume_linux.go` (`SetVolumeOwnership`,
//! `changeFilePermission`, `requiresPermissionChange`).

use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
};

use k8s_openapi::api::core::v1::Pod;

/// Group read and write, for a writable volume.
const RW_MASK: u32 = 0o660;
/// Group read, for a read-only volume (API data).
const RO_MASK: u32 = 0o440;
/// Search, for directories.
const EXEC_MASK: u32 = 0o110;
/// The setgid bit.
const SETGID: u32 = 0o2000;

/// The permission bits a file gets under `fsGroup`.
pub fn mode_with_group(mode: u32, is_dir: bool, read_only: bool) -> u32 {
    let mut mask = if read_only { RO_MASK } else { RW_MASK };
    if is_dir {
        mask |= SETGID | EXEC_MASK;
    }
    (mode & 0o7777) | mask
}

/// Whether the volume's root shows the group and bits already (`OnRootMismatch`).
pub fn root_matches(gid: u32, mode: u32, want_gid: u32, read_only: bool) -> bool {
    gid == want_gid && mode_with_group(mode, true, read_only) == (mode & 0o7777)
}

/// Gives the volume at `dir` to the pod's `fsGroup` (nothing without one).
pub fn apply(pod: &Pod, dir: &Path, read_only: bool) -> std::io::Result<()> {
    let sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let Some(group) = sc.and_then(|s| s.fs_group) else {
        return Ok(());
    };
    let gid = u32::try_from(group).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("fsGroup {group} is out of range"),
        )
    })?;
    if sc.and_then(|s| s.fs_group_change_policy.as_deref()) == Some("OnRootMismatch") {
        let meta = std::fs::metadata(dir)?;
        if root_matches(meta.gid(), meta.mode(), gid, read_only) {
            return Ok(());
        }
    }
    walk(dir, gid, read_only, 0)
}

/// The deepest directory level walked (volumes are shallow; a loop is not followed anyway,
/// symbolic links are left alone).
const MAX_DEPTH: usize = 64;

fn walk(path: &Path, gid: u32, read_only: bool, depth: usize) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    std::os::unix::fs::lchown(path, None, Some(gid))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    let mode = mode_with_group(meta.mode(), meta.is_dir(), read_only);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if meta.is_dir() && depth < MAX_DEPTH {
        for entry in std::fs::read_dir(path)? {
            walk(&entry?.path(), gid, read_only, depth + 1)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_gain_group_bits_as_the_kubelet_sets_them() {
        let cases = [
            // (mode, dir, read-only) -> mode
            (0o777, true, false, 0o2777),
            (0o755, true, false, 0o2775),
            (0o644, false, false, 0o664),
            (0o600, false, false, 0o660),
            (0o644, false, true, 0o644),
            (0o600, false, true, 0o640),
            (0o700, true, true, 0o2750),
            (0o100_644, false, false, 0o664),
        ];
        for (mode, dir, ro, want) in cases {
            assert_eq!(
                mode_with_group(mode, dir, ro),
                want,
                "{mode:o} dir={dir} ro={ro}"
            );
        }
    }

    #[test]
    fn on_root_mismatch_skips_a_root_already_right() {
        assert!(root_matches(2000, 0o2777, 2000, false));
        assert!(!root_matches(0, 0o2777, 2000, false));
        assert!(!root_matches(2000, 0o777, 2000, false));
        assert!(root_matches(2000, 0o2750, 2000, true));
    }

    #[test]
    fn a_volume_is_given_to_the_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).expect("mkdir");
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let file = sub.join("f");
        std::fs::write(&file, b"x").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::symlink("sub/f", dir.path().join("link")).expect("symlink");
        // Our own group: changing to it needs no privilege.
        let gid = std::fs::metadata(dir.path()).expect("meta").gid();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "spec": {"securityContext": {"fsGroup": gid}, "containers": []}
        }))
        .expect("pod");
        apply(&pod, dir.path(), false).expect("apply");
        let mode = |p: &Path| std::fs::symlink_metadata(p).expect("meta").mode() & 0o7777;
        assert_eq!(mode(&sub), 0o2770);
        assert_eq!(mode(&file), 0o660);
        assert_eq!(
            mode(&dir.path().join("link")),
            0o777,
            "links are not changed"
        );

        // No fsGroup: nothing changes.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let pod: Pod =
            serde_json::from_value(serde_json::json!({"spec": {"containers": []}})).expect("pod");
        apply(&pod, dir.path(), false).expect("apply");
        assert_eq!(mode(&file), 0o600);
    }
}

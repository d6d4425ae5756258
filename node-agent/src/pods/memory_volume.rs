//! `emptyDir` with `medium: Memory`: a tmpfs mounted on the volume's directory, sized as the
//! kubelet sizes it: the volume's `sizeLimit` when it is below the pod's memory limit, else
//! that limit (the sum of its containers' limits), else the node's memory. Unmounted before
//! the pod's directory is removed.
//!
//! Source: kubernetes `pkg/volume/emptydir/empty_dir.go` (`calculateEmptyDirMemorySize`,
//! `setupTmpfs`).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, Pod};
use keelson_api::quantity::Quantity;

/// Whether the emptyDir lives in memory.
pub fn is_memory(volume: &EmptyDirVolumeSource) -> bool {
    volume.medium.as_deref() == Some("Memory")
}

/// The pod's memory limit in bytes: the sum of its app containers' limits, or the largest
/// init container's if larger; `None` when a container has none (unbounded).
pub fn pod_memory_limit(pod: &Pod) -> Option<i64> {
    let spec = pod.spec.as_ref()?;
    let mut sum: i64 = 0;
    for c in &spec.containers {
        sum = sum.saturating_add(super::spec::resources(c).2?);
    }
    let mut init_max: i64 = 0;
    for c in spec.init_containers.iter().flatten() {
        init_max = init_max.max(super::spec::resources(c).2?);
    }
    Some(sum.max(init_max))
}

/// The tmpfs size in bytes for `volume` of `pod` on a node with `node_memory` bytes.
pub fn size_bytes(volume: &EmptyDirVolumeSource, pod: &Pod, node_memory: u64) -> u64 {
    let pod_limit = pod_memory_limit(pod)
        .and_then(|l| u64::try_from(l).ok())
        .filter(|l| *l > 0)
        .unwrap_or(node_memory);
    let size_limit = volume
        .size_limit
        .as_ref()
        .and_then(|q| Quantity::try_from(q).ok())
        .and_then(|q| u64::try_from(q.value()).ok())
        .filter(|s| *s > 0);
    match size_limit {
        Some(limit) if limit < pod_limit => limit,
        _ => pod_limit,
    }
}

/// The node's memory in bytes (`MemTotal`).
pub fn node_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// The mount points in `/proc/self/mountinfo` text at or below `dir`, deepest first.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        // The kernel escapes spaces and such as octal (`\040`).
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

fn mountinfo() -> String {
    std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
}

/// Mounts a tmpfs of `size` bytes on `dir` unless one is mounted there already (an agent
/// restart keeps the pod's data).
pub fn mount(dir: &Path, size: u64) -> Result<(), super::volume_error::MountError> {
    if mounts_under(&mountinfo(), dir).iter().any(|p| p == dir) {
        return Ok(());
    }
    use nix::mount::MsFlags;
    let options = format!("mode=1777,size={size}");
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(|source| super::volume_error::MountError::Tmpfs {
        size,
        path: dir.to_owned(),
        source,
    })
}

/// Unmounts every mount below `dir` (a pod's directory before it is removed).
pub fn unmount_under(dir: &Path) {
    for point in mounts_under(&mountinfo(), dir) {
        if let Err(error) = nix::mount::umount2(&point, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(path = %point.display(), %error, "unmounting a memory volume");
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;

    use super::*;

    fn pod(limits: &[Option<&str>]) -> Pod {
        let containers: Vec<serde_json::Value> = limits
            .iter()
            .enumerate()
            .map(|(i, l)| match l {
                Some(l) => serde_json::json!({"name": format!("c{i}"), "resources": {"limits": {"memory": l}}}),
                None => serde_json::json!({"name": format!("c{i}")}),
            })
            .collect();
        serde_json::from_value(serde_json::json!({"spec": {"containers": containers}}))
            .expect("pod")
    }

    #[test]
    fn tmpfs_size_is_the_smaller_of_size_limit_and_pod_limit() {
        const MI: u64 = 1 << 20;
        let node = 8192 * MI;
        let dir = |limit: Option<&str>| EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: limit.map(|l| Q(l.into())),
        };
        let cases = [
            (dir(None), pod(&[Some("64Mi"), Some("32Mi")]), 96 * MI),
            (dir(Some("16Mi")), pod(&[Some("64Mi")]), 16 * MI),
            (dir(Some("128Mi")), pod(&[Some("64Mi")]), 64 * MI),
            (dir(None), pod(&[Some("64Mi"), None]), node),
            (dir(Some("1Gi")), pod(&[None]), 1024 * MI),
        ];
        for (volume, pod, want) in cases {
            assert_eq!(size_bytes(&volume, &pod, node), want, "{volume:?}");
        }
        assert!(is_memory(&dir(None)));
        assert!(!is_memory(&EmptyDirVolumeSource::default()));
    }

    #[test]
    fn mounts_below_a_directory_are_found_deepest_first() {
        let info = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
90 22 0:50 / /var/lib/a/pods/u1/volumes/cache rw - tmpfs tmpfs rw
91 90 0:51 / /var/lib/a/pods/u1/volumes/cache/sub rw - tmpfs tmpfs rw
92 22 0:52 / /var/lib/a/pods/u10/volumes/x rw - tmpfs tmpfs rw
93 22 0:53 / /var/lib/a/pods/u1/volumes/with\\040space rw - tmpfs tmpfs rw
";
        assert_eq!(
            mounts_under(info, Path::new("/var/lib/a/pods/u1")),
            [
                PathBuf::from("/var/lib/a/pods/u1/volumes/cache/sub"),
                PathBuf::from("/var/lib/a/pods/u1/volumes/cache"),
                PathBuf::from("/var/lib/a/pods/u1/volumes/with space"),
            ]
        );
    }
}

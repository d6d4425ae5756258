//! Pod volumes as directories under the agent's data directory (`pods/<uid>/volumes/<name>`),
//! bind-mounted into every container that mounts them: emptyDir and hostPath as plain
//! directories, persistentVolumeClaim as its volume's directory ([`super::local_path`]);
//! configMap, secret, downwardAPI and projected written atomically ([`super::atomic_writer`])
//! so that a refresh (a new token, a changed ConfigMap) never shows a container half of it.

use std::{
    collections::HashMap,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use k8s_openapi::api::core::v1::{Container, Volume};

pub use super::volume_error::{MountError, VolumeError};
use super::{
    atomic_writer::{self, Payload},
    projection::{self, DEFAULT_MODE, Inputs, KeyKind},
    spec::ConfigError,
};

/// Where a volume is on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounted {
    /// The host path.
    pub path: PathBuf,
    /// API data (configMap, secret, downwardAPI, projected): always mounted read-only, as the
    /// kubelet does.
    pub read_only: bool,
}

/// The host paths of a pod's volumes, by volume name.
pub type VolumePaths = HashMap<String, Mounted>;

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> MountError {
    let path = path.to_owned();
    move |source| MountError::Io {
        action,
        path,
        source,
    }
}

/// Sets up one volume under `dir`; returns its host path (`None`: a kind keelson does not
/// support, reported when a container mounts it).
async fn prepare_one(
    inputs: &mut Inputs<'_>,
    volume: &Volume,
    dir: PathBuf,
) -> Result<Option<PathBuf>, MountError> {
    let write = |payload: &Payload| -> Result<Option<PathBuf>, MountError> {
        atomic_writer::write(&dir, payload)?;
        Ok(Some(dir.clone()))
    };
    if let Some(empty_dir) = &volume.empty_dir {
        std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
        if super::memory_volume::is_memory(empty_dir) {
            let size = super::memory_volume::size_bytes(
                empty_dir,
                inputs.pod,
                super::memory_volume::node_memory(),
            );
            super::memory_volume::mount(&dir, size)?;
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            .map_err(io("chmod", &dir))?;
        Ok(Some(dir))
    } else if let Some(cm) = &volume.config_map {
        let data = inputs.sources.config_map_data(&cm.name).await?;
        write(&projection::object_payload(
            KeyKind::ConfigMap,
            &cm.name,
            data.as_ref(),
            cm.items.as_deref(),
            projection::mode(cm.default_mode, DEFAULT_MODE),
            cm.optional == Some(true),
        )?)
    } else if let Some(secret) = &volume.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        let data = inputs.sources.secret_data(&name).await?;
        write(&projection::object_payload(
            KeyKind::Secret,
            &name,
            data.as_ref(),
            secret.items.as_deref(),
            projection::mode(secret.default_mode, DEFAULT_MODE),
            secret.optional == Some(true),
        )?)
    } else if let Some(downward) = &volume.downward_api {
        write(&projection::downward_payload(
            downward.items.as_deref().unwrap_or_default(),
            inputs.pod,
            projection::mode(downward.default_mode, DEFAULT_MODE),
            inputs.pod_ip,
            inputs.host_ip,
        )?)
    } else if let Some(projected) = &volume.projected {
        let payload = projection::projected_payload(inputs, projected).await?;
        write(&payload)
    } else if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        match host.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => {
                std::fs::create_dir_all(&path).map_err(io("creating hostPath", &path))?;
            }
            "FileOrCreate" if !path.exists() => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
                }
                std::fs::write(&path, b"").map_err(io("creating hostPath", &path))?;
            }
            "Directory" if !path.is_dir() => {
                return Err(MountError::HostPathType {
                    path,
                    expected: "directory",
                });
            }
            "File" if !path.is_file() => {
                return Err(MountError::HostPathType {
                    path,
                    expected: "file",
                });
            }
            _ => {}
        }
        Ok(Some(path))
    } else if let Some(claim) = &volume.persistent_volume_claim {
        let namespace = inputs.pod.metadata.namespace.as_deref().unwrap_or_default();
        super::local_path::claim_dir(inputs.client, namespace, &claim.claim_name)
            .await
            .map(Some)
            .map_err(MountError::from)
    } else {
        Ok(None)
    }
}

/// Creates (or refreshes) every volume of the pod under `pod_dir` and returns their host
/// paths; the first volume that fails stops it.
pub async fn prepare(inputs: &mut Inputs<'_>, pod_dir: &Path) -> Result<VolumePaths, VolumeError> {
    let mut paths = VolumePaths::new();
    // Tokens and Secrets live below: only root on the node reads the pod's directory (the
    // kubelet's 0750); containers reach their volumes through their bind mounts.
    std::fs::create_dir_all(pod_dir)
        .and_then(|()| std::fs::set_permissions(pod_dir, std::fs::Permissions::from_mode(0o750)))
        .map_err(|e| VolumeError {
            volume: String::new(),
            reason: io("preparing", pod_dir)(e),
        })?;
    let volumes = inputs
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for volume in volumes {
        let dir = pod_dir.join("volumes").join(&volume.name);
        match prepare_one(inputs, &volume, dir).await {
            Ok(Some(path)) => {
                let read_only = volume.config_map.is_some()
                    || volume.secret.is_some()
                    || volume.downward_api.is_some()
                    || volume.projected.is_some()
                    || volume
                        .persistent_volume_claim
                        .as_ref()
                        .and_then(|c| c.read_only)
                        == Some(true);
                // Host paths (and the local-path volumes behind claims) keep their owners,
                // as kubelet's hostPath and local volumes do not manage ownership.
                if volume.host_path.is_none() && volume.persistent_volume_claim.is_none() {
                    super::fs_group::apply(inputs.pod, &path, read_only).map_err(|e| {
                        VolumeError {
                            volume: volume.name.clone(),
                            reason: io("applying fsGroup ownership to", &path)(e),
                        }
                    })?;
                }
                paths.insert(volume.name.clone(), Mounted { path, read_only });
            }
            Ok(None) => {}
            Err(reason) => {
                return Err(VolumeError {
                    volume: volume.name.clone(),
                    reason,
                });
            }
        }
    }
    Ok(paths)
}

/// Docker bind specifications (`host:container[:ro]`) for the container's volume mounts.
pub fn binds(container: &Container, paths: &VolumePaths) -> Result<Vec<String>, ConfigError> {
    let mut binds = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let mounted = paths.get(&mount.name).ok_or_else(|| {
            ConfigError(format!(
                "volume \"{}\" mounted at {} is not defined or of a kind keelson does not \
                 support (emptyDir, configMap, secret, downwardAPI, projected, hostPath, \
                 persistentVolumeClaim)",
                mount.name, mount.mount_path
            ))
        })?;
        let base = &mounted.path;
        let mut source = base.clone();
        if let Some(sub) = mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if sub.split('/').any(|p| p == "..") || sub.starts_with('/') {
                return Err(ConfigError(format!("invalid subPath \"{sub}\"")));
            }
            source = base.join(sub);
            if !source.exists() {
                std::fs::create_dir_all(&source).map_err(|e| {
                    ConfigError(format!("creating subPath {}: {e}", source.display()))
                })?;
            }
        }
        let mut spec = format!("{}:{}", source.display(), mount.mount_path);
        if mount.read_only == Some(true) || mounted.read_only {
            spec.push_str(":ro");
        }
        binds.push(spec);
    }
    Ok(binds)
}

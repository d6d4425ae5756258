//! Pod volumes as directories under the agent's data directory (`pods/<uid>/volumes/<name>`),
//! bind-mounted into every container that mounts them: emptyDir, configMap, secret, hostPath.

use std::{
    collections::{BTreeMap, HashMap},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use k8s_openapi::api::core::v1::{Container, KeyToPath, Pod};

use super::spec::{ConfigError, Sources};

/// The host paths of a pod's volumes, by volume name.
pub type VolumePaths = HashMap<String, PathBuf>;

fn io(what: String) -> impl FnOnce(std::io::Error) -> ConfigError {
    move |e| ConfigError(format!("{what}: {e}"))
}

/// Writes `data` (selected by `items`) into `dir`. The directory itself stays (running
/// containers have it bind-mounted); files are rewritten in place.
fn write_projection(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    mode: u32,
    what: &str,
) -> Result<(), ConfigError> {
    std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let files: Vec<(String, &Vec<u8>, u32)> = match items {
        Some(items) => {
            let mut files = Vec::new();
            for item in items {
                let value = data.get(&item.key).ok_or_else(|| {
                    ConfigError(format!("{what}: key \"{}\" not found", item.key))
                })?;
                files.push((
                    item.path.clone(),
                    value,
                    item.mode.map_or(mode, |m| m as u32),
                ));
            }
            files
        }
        None => data.iter().map(|(k, v)| (k.clone(), v, mode)).collect(),
    };
    for (relative, value, mode) in files {
        if relative.split('/').any(|part| part == "..") || relative.starts_with('/') {
            return Err(ConfigError(format!("{what}: invalid path \"{relative}\"")));
        }
        let path = dir.join(&relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("creating {}", parent.display())))?;
        }
        std::fs::write(&path, value).map_err(io(format!("writing {}", path.display())))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(io(format!("chmod {}", path.display())))?;
    }
    Ok(())
}

/// Creates (or refreshes) every volume of `pod` under `pod_dir` and returns their host paths.
pub async fn prepare(
    sources: &mut Sources,
    pod: &Pod,
    pod_dir: &Path,
) -> Result<VolumePaths, ConfigError> {
    let mut paths = VolumePaths::new();
    let volumes = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .unwrap_or_default();
    for volume in volumes {
        let dir = pod_dir.join("volumes").join(&volume.name);
        let path = if volume.empty_dir.is_some() {
            std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
                .map_err(io(format!("chmod {}", dir.display())))?;
            dir
        } else if let Some(cm) = &volume.config_map {
            let what = format!("configmap \"{}\"", cm.name);
            match sources.config_map_data(&cm.name).await? {
                Some(data) => write_projection(
                    &dir,
                    &data,
                    cm.items.as_ref(),
                    cm.default_mode.map_or(0o644, |m| m as u32),
                    &what,
                )?,
                None if cm.optional == Some(true) => {
                    std::fs::create_dir_all(&dir)
                        .map_err(io(format!("creating {}", dir.display())))?;
                }
                None => return Err(ConfigError(format!("{what} not found"))),
            }
            dir
        } else if let Some(secret) = &volume.secret {
            let name = secret.secret_name.clone().unwrap_or_default();
            let what = format!("secret \"{name}\"");
            match sources.secret_data(&name).await? {
                Some(data) => write_projection(
                    &dir,
                    &data,
                    secret.items.as_ref(),
                    secret.default_mode.map_or(0o644, |m| m as u32),
                    &what,
                )?,
                None if secret.optional == Some(true) => {
                    std::fs::create_dir_all(&dir)
                        .map_err(io(format!("creating {}", dir.display())))?;
                }
                None => return Err(ConfigError(format!("{what} not found"))),
            }
            dir
        } else if let Some(host) = &volume.host_path {
            let path = PathBuf::from(&host.path);
            match host.type_.as_deref().unwrap_or("") {
                "DirectoryOrCreate" => std::fs::create_dir_all(&path)
                    .map_err(io(format!("creating hostPath {}", path.display())))?,
                "FileOrCreate" if !path.exists() => {
                    if let Some(parent) = path.parent() {
                        std::fs::create_dir_all(parent)
                            .map_err(io(format!("creating {}", parent.display())))?;
                    }
                    std::fs::write(&path, b"")
                        .map_err(io(format!("creating hostPath {}", path.display())))?;
                }
                "Directory" if !path.is_dir() => {
                    return Err(ConfigError(format!(
                        "hostPath type check failed: {} is not a directory",
                        path.display()
                    )));
                }
                "File" if !path.is_file() => {
                    return Err(ConfigError(format!(
                        "hostPath type check failed: {} is not a file",
                        path.display()
                    )));
                }
                _ => {}
            }
            path
        } else {
            // Unsupported kinds are reported when a container mounts them.
            continue;
        };
        paths.insert(volume.name.clone(), path);
    }
    Ok(paths)
}

/// Docker bind specifications (`host:container[:ro]`) for the container's volume mounts.
pub fn binds(container: &Container, paths: &VolumePaths) -> Result<Vec<String>, ConfigError> {
    let mut binds = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let base = paths.get(&mount.name).ok_or_else(|| {
            ConfigError(format!(
                "volume \"{}\" mounted at {} is not defined or of a kind keelson does not \
                 support (emptyDir, configMap, secret, hostPath)",
                mount.name, mount.mount_path
            ))
        })?;
        let mut source = base.clone();
        if let Some(sub) = mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if sub.split('/').any(|p| p == "..") || sub.starts_with('/') {
                return Err(ConfigError(format!("invalid subPath \"{sub}\"")));
            }
            source = base.join(sub);
            if !source.exists() {
                std::fs::create_dir_all(&source)
                    .map_err(io(format!("creating subPath {}", source.display())))?;
            }
        }
        let mut spec = format!("{}:{}", source.display(), mount.mount_path);
        if mount.read_only == Some(true) {
            spec.push_str(":ro");
        }
        binds.push(spec);
    }
    Ok(binds)
}

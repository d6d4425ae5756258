//! PersistentVolumeClaim volumes on the node: a pod's claim resolved to its bound volume's
//! host directory (hostPath or local volumes; keelson's local-path volumes are created here,
//! world-writable as k3s creates them), and the node's half of the local-path `Delete`
//! reclaim: a deleted local-path volume pinned to this node has its directory removed, then
//! its cleanup finalizer, so the API server lets it go.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use keelson_api::storage::{
    self as st, ANN_PROVISIONED_BY, LOCAL_PATH_FINALIZER, LOCAL_PATH_PROVISIONER,
};
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use serde_json::json;

/// Why a pod's claim has no directory on this node (the kubelet's wording, for `FailedMount`
/// events).
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The claim is not bound yet.
    #[error(
        "PVC {namespace}/{name} has non-bound phase (\"{phase}\") or empty \
         pvc.Spec.VolumeName (\"{volume}\")"
    )]
    NotBound {
        /// The claim's namespace.
        namespace: String,
        /// The claim's name.
        name: String,
        /// Its phase.
        phase: String,
        /// Its `spec.volumeName`.
        volume: String,
    },
    /// The claim or its volume does not exist.
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        /// `persistentvolumeclaims` or `persistentvolumes`.
        resource: &'static str,
        /// The object's name.
        name: String,
    },
    /// The volume is of a kind the agent does not mount.
    #[error("volume \"{0}\" is of a kind keelson does not mount (hostPath and local are)")]
    Unsupported(String),
    /// Reading the claim or the volume failed.
    #[error("getting {resource} \"{name}\"")]
    Api {
        /// `persistentvolumeclaim` or `persistentvolume`.
        resource: &'static str,
        /// The object's name.
        name: String,
        /// The API's answer.
        #[source]
        source: kube::Error,
    },
    /// The directory could not be created.
    #[error("creating {}", .0.display())]
    Create(PathBuf, #[source] std::io::Error),
    /// A pre-existing volume's directory is missing.
    #[error("path {} does not exist", .0.display())]
    Missing(PathBuf),
}

/// Where a claim's volume is on this node (pure): the bound volume's hostPath or local path,
/// whether the agent creates it (a local-path or `DirectoryOrCreate` volume), or why the
/// claim cannot be mounted (the kubelet's wording).
pub fn volume_path(
    claim: &PersistentVolumeClaim,
    volume: Option<&PersistentVolume>,
) -> Result<(PathBuf, bool), ClaimError> {
    let namespace = claim.metadata.namespace.as_deref().unwrap_or_default();
    let name = claim.metadata.name.as_deref().unwrap_or_default();
    let phase = claim
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("");
    let volume_name = claim
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.as_deref())
        .unwrap_or("");
    if phase != "Bound" || volume_name.is_empty() {
        return Err(ClaimError::NotBound {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            phase: phase.to_owned(),
            volume: volume_name.to_owned(),
        });
    }
    let Some(volume) = volume else {
        return Err(ClaimError::NotFound {
            resource: "persistentvolumes",
            name: volume_name.to_owned(),
        });
    };
    let spec = volume.spec.as_ref();
    let provisioned = st::annotation(&volume.metadata.annotations, ANN_PROVISIONED_BY)
        == Some(LOCAL_PATH_PROVISIONER);
    if let Some(host) = spec.and_then(|s| s.host_path.as_ref()) {
        let create = provisioned || host.type_.as_deref() == Some("DirectoryOrCreate");
        return Ok((PathBuf::from(&host.path), create));
    }
    if let Some(local) = spec.and_then(|s| s.local.as_ref()) {
        return Ok((PathBuf::from(&local.path), false));
    }
    Err(ClaimError::Unsupported(volume_name.to_owned()))
}

/// The host directory of the pod's claim `claim` in `namespace`, created if it is a
/// local-path (or `DirectoryOrCreate`) volume.
pub async fn claim_dir(
    client: &Client,
    namespace: &str,
    claim: &str,
) -> Result<PathBuf, ClaimError> {
    let found = Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .get_opt(claim)
        .await
        .map_err(|source| ClaimError::Api {
            resource: "persistentvolumeclaim",
            name: claim.to_owned(),
            source,
        })?
        .ok_or_else(|| ClaimError::NotFound {
            resource: "persistentvolumeclaims",
            name: claim.to_owned(),
        })?;
    let volume = match found.spec.as_ref().and_then(|s| s.volume_name.as_deref()) {
        Some(name) if !name.is_empty() => Api::<PersistentVolume>::all(client.clone())
            .get_opt(name)
            .await
            .map_err(|source| ClaimError::Api {
                resource: "persistentvolume",
                name: name.to_owned(),
                source,
            })?,
        _ => None,
    };
    let (path, create) = volume_path(&found, volume.as_ref())?;
    if create && !path.is_dir() {
        std::fs::create_dir_all(&path)
            .and_then(|()| std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)))
            .map_err(|e| ClaimError::Create(path.clone(), e))?;
        tracing::info!(path = %path.display(), claim = %format!("{namespace}/{claim}"), "created the volume directory");
    } else if !path.exists() {
        return Err(ClaimError::Missing(path));
    }
    Ok(path)
}

/// The directory to remove for a deleted local-path volume of `node` (pure): only volumes
/// being deleted that still carry the cleanup finalizer, provisioned by keelson, pinned to
/// this node, whose directory is an absolute path named `<volume>_...` as the provisioner
/// names them.
pub fn to_clean(volume: &PersistentVolume, node: &str) -> Option<PathBuf> {
    volume.metadata.deletion_timestamp.as_ref()?;
    let name = volume.metadata.name.as_deref()?;
    let finalizing = volume
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == LOCAL_PATH_FINALIZER);
    let ours = st::annotation(&volume.metadata.annotations, ANN_PROVISIONED_BY)
        == Some(LOCAL_PATH_PROVISIONER);
    if !finalizing || !ours || st::pinned_node(volume) != Some(node) {
        return None;
    }
    let path = PathBuf::from(&volume.spec.as_ref()?.host_path.as_ref()?.path);
    let named = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(&format!("{name}_")));
    let plain = path.is_absolute()
        && path
            .components()
            .all(|c| !matches!(c, std::path::Component::ParentDir));
    (named && plain).then_some(path)
}

/// Removes `path` and everything below it (already gone is fine).
pub fn remove_dir(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Watches PersistentVolumes and cleans up this node's deleted local-path volumes, for as
/// long as the agent runs.
pub async fn run(client: Client, node: String) -> anyhow::Result<()> {
    let api = Api::<PersistentVolume>::all(client);
    let mut events = std::pin::pin!(
        watcher(api.clone(), watcher::Config::default())
            .default_backoff()
            .applied_objects()
    );
    while let Some(event) = events.next().await {
        let volume = match event {
            Ok(volume) => volume,
            Err(error) => {
                tracing::debug!(%error, "persistentvolume watch");
                continue;
            }
        };
        let Some(path) = to_clean(&volume, &node) else {
            continue;
        };
        let name = volume.metadata.name.clone().unwrap_or_default();
        if let Err(error) = remove_dir(&path) {
            tracing::warn!(volume = name, path = %path.display(), %error, "cannot remove a local-path volume");
            continue;
        }
        let finalizers: Vec<&String> = volume
            .metadata
            .finalizers
            .iter()
            .flatten()
            .filter(|f| *f != LOCAL_PATH_FINALIZER)
            .collect();
        let patch = json!({"metadata": {
            "finalizers": finalizers,
            "resourceVersion": volume.metadata.resource_version,
        }});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::info!(volume = name, path = %path.display(), "removed a local-path volume")
            }
            Err(error) => {
                tracing::warn!(volume = name, %error, "cannot finish deleting a local-path volume")
            }
        }
    }
    // The watcher retries forever; this is only reached if it is dropped.
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn volume(extra: Value) -> PersistentVolume {
        let mut value = json!({
            "metadata": {
                "name": "pvc-1",
                "deletionTimestamp": "2026-01-01T00:00:00Z",
                "finalizers": [LOCAL_PATH_FINALIZER],
                "annotations": {ANN_PROVISIONED_BY: LOCAL_PATH_PROVISIONER},
            },
            "spec": {
                "hostPath": {"path": "/var/lib/keelson/storage/pvc-1_default_data",
                             "type": "DirectoryOrCreate"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}},
            },
        });
        for (pointer, v) in extra.as_object().cloned().unwrap_or_default() {
            if let Some(slot) = value.pointer_mut(&pointer) {
                *slot = v;
            }
        }
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn only_this_nodes_deleted_local_path_volumes_are_cleaned() {
        let path = Some(PathBuf::from("/var/lib/keelson/storage/pvc-1_default_data"));
        let cases = [
            (json!({}), "n1", path.clone()),
            (json!({}), "n2", None),
            (json!({"/metadata/deletionTimestamp": null}), "n1", None),
            (json!({"/metadata/finalizers": []}), "n1", None),
            (json!({"/metadata/annotations": {}}), "n1", None),
            (json!({"/spec/hostPath/path": "/"}), "n1", None),
            (
                json!({"/spec/hostPath/path": "/srv/../etc/pvc-1_x"}),
                "n1",
                None,
            ),
        ];
        for (extra, node, want) in cases {
            assert_eq!(
                to_clean(&volume(extra.clone()), node),
                want,
                "{extra} on {node}"
            );
        }
    }

    #[test]
    fn claims_resolve_to_their_volume_directory() {
        let claim =
            |value: Value| -> PersistentVolumeClaim { serde_json::from_value(value).unwrap() };
        let bound = claim(json!({
            "metadata": {"name": "data", "namespace": "default"},
            "spec": {"volumeName": "pvc-1"}, "status": {"phase": "Bound"},
        }));
        let pending = claim(json!({
            "metadata": {"name": "data", "namespace": "default"}, "status": {"phase": "Pending"},
        }));
        assert_eq!(
            volume_path(&pending, None).map_err(|e| e.to_string()),
            Err(
                "PVC default/data has non-bound phase (\"Pending\") or empty \
                 pvc.Spec.VolumeName (\"\")"
                    .to_owned()
            )
        );
        assert_eq!(
            volume_path(&bound, None).map_err(|e| e.to_string()),
            Err("persistentvolumes \"pvc-1\" not found".to_owned())
        );
        assert_eq!(
            volume_path(&bound, Some(&volume(json!({})))).map_err(|e| e.to_string()),
            Ok((
                PathBuf::from("/var/lib/keelson/storage/pvc-1_default_data"),
                true
            ))
        );
        let local: PersistentVolume = serde_json::from_value(
            json!({"metadata": {"name": "pvc-1"}, "spec": {"local": {"path": "/mnt/disk"}}}),
        )
        .unwrap();
        assert_eq!(
            volume_path(&bound, Some(&local)).map_err(|e| e.to_string()),
            Ok((PathBuf::from("/mnt/disk"), false))
        );
    }

    #[test]
    fn removing_twice_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pvc-1_default_data");
        std::fs::create_dir_all(path.join("sub")).unwrap();
        std::fs::write(path.join("sub/file"), b"x").unwrap();
        remove_dir(&path).unwrap();
        assert!(!path.exists());
        remove_dir(&path).unwrap();
    }
}

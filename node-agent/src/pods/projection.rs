//! The files of configMap, secret, downwardAPI and projected volumes, as the kubelet's volume
//! plugins compute them (`pkg/volume/{configmap,secret,downwardapi,projected}`): a payload of
//! relative paths with content and mode, which [`super::atomic_writer`] then writes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource};
use kube::Client;

use super::{
    atomic_writer::{FileProjection, Payload},
    spec::{self, ConfigError, Sources},
    tokens::{TokenCache, TokenError},
    volume_error::MountError,
};

/// The mode of a projected file when the volume sets none (the API's default `defaultMode`).
pub const DEFAULT_MODE: u32 = 0o644;

/// Which kind of object a key projection reads (for its error messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeyKind {
    /// A ConfigMap (`data` and `binaryData`).
    ConfigMap,
    /// A Secret.
    Secret,
}

/// A mode from the API (`int32`), limited to permission bits.
pub fn mode(value: Option<i32>, default: u32) -> u32 {
    value.map_or(default, |m| (m as u32) & 0o7777)
}

/// The files of a ConfigMap or Secret: every key, or the `items` chosen (a missing key is an
/// error unless the source is optional).
pub fn key_payload(
    kind: KeyKind,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
) -> Result<Payload, MountError> {
    let mut payload = Payload::new();
    let Some(items) = items.filter(|i| !i.is_empty()) else {
        for (key, value) in data {
            payload.insert(
                key.clone(),
                FileProjection {
                    data: value.clone(),
                    mode: default_mode,
                },
            );
        }
        return Ok(payload);
    };
    for item in items {
        let Some(value) = data.get(&item.key) else {
            if optional {
                continue;
            }
            return Err(MountError::MissingKey {
                kind,
                key: item.key.clone(),
            });
        };
        payload.insert(
            item.path.clone(),
            FileProjection {
                data: value.clone(),
                mode: mode(item.mode, default_mode),
            },
        );
    }
    Ok(payload)
}

/// The files of a downward API source: pod fields (`metadata.*`; whole label and annotation
/// maps as `key="value"` lines) and container resources.
pub fn downward_payload(
    items: &[DownwardAPIVolumeFile],
    pod: &Pod,
    default_mode: u32,
    pod_ip: &str,
    host_ip: &str,
) -> Result<Payload, MountError> {
    let mut payload = Payload::new();
    let mut errors = Vec::new();
    for item in items {
        let value = if let Some(field) = &item.field_ref {
            spec::pod_field(pod, &field.field_path, pod_ip, host_ip)
        } else if let Some(resource) = &item.resource_field_ref {
            spec::resource_value(pod, None, resource)
        } else {
            continue;
        };
        match value {
            Ok(value) => {
                payload.insert(
                    item.path.clone(),
                    FileProjection {
                        data: value.into_bytes(),
                        mode: mode(item.mode, default_mode),
                    },
                );
            }
            Err(error) => errors.push(MountError::Config(error)),
        }
    }
    MountError::aggregate(errors).map(|()| payload)
}

/// What a projected volume reads from.
pub struct Inputs<'a> {
    /// The pod's namespace's ConfigMaps and Secrets.
    pub sources: &'a mut Sources,
    /// The pod's service-account tokens.
    pub tokens: &'a mut TokenCache,
    /// The node's API client (TokenRequests).
    pub client: &'a Client,
    /// The pod.
    pub pod: &'a Pod,
    /// Its address (downward API).
    pub pod_ip: &'a str,
    /// The node's address (downward API).
    pub host_ip: &'a str,
}

impl std::fmt::Debug for Inputs<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inputs")
            .field("pod", &self.pod.metadata.name)
            .field("pod_ip", &self.pod_ip)
            .finish_non_exhaustive()
    }
}

/// The mode of a token file: the volume's `defaultMode`. (The kubelet uses 0600 when it also
/// changes the volume's ownership for `fsGroup`, which keelson does not do.)
fn token_mode(default_mode: u32) -> u32 {
    default_mode
}

/// The data of a ConfigMap (`data` and `binaryData`) or a Secret, by key.
pub type ObjectData = BTreeMap<String, Vec<u8>>;

/// The files of a ConfigMap or Secret source, the object read (`None`: it does not exist).
pub fn object_payload(
    kind: KeyKind,
    name: &str,
    data: Option<&ObjectData>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
) -> Result<Payload, MountError> {
    match data {
        Some(data) => key_payload(kind, data, items, default_mode, optional),
        None if optional => Ok(Payload::new()),
        None => Err(MountError::NotFound {
            kind,
            name: name.to_owned(),
        }),
    }
}

/// What a projected volume's sources read, resolved beforehand: the pure
/// [`projected_files`] takes its objects and tokens from here.
pub trait Resolved {
    /// ConfigMap or Secret `name` (`Ok(None)`: it does not exist).
    fn object(&self, kind: KeyKind, name: &str) -> Result<Option<ObjectData>, MountError>;
    /// The token of the source at `index` in the volume's `sources`.
    fn token(&mut self, index: usize) -> Result<Vec<u8>, MountError>;
}

/// The files of a projected volume: every source's, later sources winning a shared path; the
/// errors of all sources together. Pure: the objects and tokens come from `resolved`.
pub fn projected_files(
    volume: &ProjectedVolumeSource,
    pod: &Pod,
    pod_ip: &str,
    host_ip: &str,
    resolved: &mut dyn Resolved,
) -> Result<Payload, MountError> {
    let default_mode = mode(volume.default_mode, DEFAULT_MODE);
    let mut payload = Payload::new();
    let mut errors = Vec::new();
    for (index, source) in volume.sources.iter().flatten().enumerate() {
        let part = if let Some(cm) = &source.config_map {
            resolved
                .object(KeyKind::ConfigMap, &cm.name)
                .and_then(|data| {
                    object_payload(
                        KeyKind::ConfigMap,
                        &cm.name,
                        data.as_ref(),
                        cm.items.as_deref(),
                        default_mode,
                        cm.optional == Some(true),
                    )
                })
        } else if let Some(secret) = &source.secret {
            resolved
                .object(KeyKind::Secret, &secret.name)
                .and_then(|data| {
                    object_payload(
                        KeyKind::Secret,
                        &secret.name,
                        data.as_ref(),
                        secret.items.as_deref(),
                        default_mode,
                        secret.optional == Some(true),
                    )
                })
        } else if let Some(downward) = &source.downward_api {
            downward_payload(
                downward.items.as_deref().unwrap_or_default(),
                pod,
                default_mode,
                pod_ip,
                host_ip,
            )
        } else if let Some(token) = &source.service_account_token {
            resolved.token(index).map(|data| {
                Payload::from([(
                    token.path.clone(),
                    FileProjection {
                        data,
                        mode: token_mode(default_mode),
                    },
                )])
            })
        } else {
            // clusterTrustBundle: not served by keelson's API.
            Err(MountError::UnsupportedProjection)
        };
        match part {
            Ok(part) => payload.extend(part),
            Err(error) => errors.push(error),
        }
    }
    MountError::aggregate(errors).map(|()| payload)
}

/// Objects and tokens fetched for one projected volume.
#[derive(Default)]
struct Fetched {
    objects: BTreeMap<(bool, String), Result<Option<ObjectData>, ConfigError>>,
    tokens: BTreeMap<usize, Result<Vec<u8>, TokenError>>,
}

impl Resolved for Fetched {
    fn object(&self, kind: KeyKind, name: &str) -> Result<Option<ObjectData>, MountError> {
        match self
            .objects
            .get(&(kind == KeyKind::Secret, name.to_owned()))
        {
            Some(Ok(data)) => Ok(data.clone()),
            Some(Err(error)) => Err(MountError::Config(error.clone())),
            None => Ok(None),
        }
    }

    fn token(&mut self, index: usize) -> Result<Vec<u8>, MountError> {
        match self.tokens.remove(&index) {
            Some(result) => result.map_err(MountError::Token),
            None => Ok(Vec::new()),
        }
    }
}

/// The files of a projected volume, reading its objects and tokens through `inputs` first.
pub async fn projected_payload(
    inputs: &mut Inputs<'_>,
    volume: &ProjectedVolumeSource,
) -> Result<Payload, MountError> {
    let mut fetched = Fetched::default();
    for (index, source) in volume.sources.iter().flatten().enumerate() {
        if let Some(cm) = &source.config_map {
            let data = inputs.sources.config_map_data(&cm.name).await;
            fetched.objects.insert((false, cm.name.clone()), data);
        } else if let Some(secret) = &source.secret {
            let data = inputs.sources.secret_data(&secret.name).await;
            fetched.objects.insert((true, secret.name.clone()), data);
        } else if let Some(token) = &source.service_account_token {
            let data = inputs
                .tokens
                .token(inputs.client, inputs.pod, token)
                .await
                .map(String::into_bytes);
            fetched.tokens.insert(index, data);
        }
    }
    projected_files(
        volume,
        inputs.pod,
        inputs.pod_ip,
        inputs.host_ip,
        &mut fetched,
    )
}

#[cfg(test)]
#[path = "projection_tests.rs"]
mod tests;

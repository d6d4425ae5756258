//! The files of configMap, secret, downwardAPI and projected volumes, as the kubelet's volume
//! plugins compute them (`pkg/volume/{configmap,secret,downwardapi,projected}`): a payload of
//! relative paths with content and mode, which [`super::atomic_writer`] then writes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    DownwardAPIVolumeFile, KeyToPath, Pod, ProjectedVolumeSource, ServiceAccountTokenProjection,
};
use kube::Client;

use super::{
    atomic_writer::{FileProjection, Payload},
    spec::{self, Sources},
    tokens::TokenCache,
};

/// The mode of a projected file when the volume sets none (the API's default `defaultMode`).
pub const DEFAULT_MODE: u32 = 0o644;

/// Which kind of object a key projection reads (for its error messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// Kubernetes' aggregate error text: the one message, or `[a, b]`.
fn aggregate(errors: Vec<String>) -> Result<(), String> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.into_iter().next().unwrap_or_default()),
        _ => Err(format!("[{}]", errors.join(", "))),
    }
}

/// The files of a ConfigMap or Secret: every key, or the `items` chosen (a missing key is an
/// error unless the source is optional).
pub fn key_payload(
    kind: KeyKind,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: u32,
    optional: bool,
) -> Result<Payload, String> {
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
            return Err(match kind {
                KeyKind::ConfigMap => {
                    format!("configmap references non-existent config key: {}", item.key)
                }
                KeyKind::Secret => format!("references non-existent secret key: {}", item.key),
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
) -> Result<Payload, String> {
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
            Err(error) => errors.push(error.0),
        }
    }
    aggregate(errors).map(|()| payload)
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

async fn token_payload(
    inputs: &mut Inputs<'_>,
    source: &ServiceAccountTokenProjection,
    default_mode: u32,
) -> Result<(String, FileProjection), String> {
    let token = inputs
        .tokens
        .token(inputs.client, inputs.pod, source)
        .await
        .map_err(|e| crate::error_chain(&e))?;
    Ok((
        source.path.clone(),
        FileProjection {
            data: token.into_bytes(),
            mode: token_mode(default_mode),
        },
    ))
}

/// The files of a projected volume: every source's, later sources winning a shared path; the
/// errors of all sources together.
pub async fn projected_payload(
    inputs: &mut Inputs<'_>,
    volume: &ProjectedVolumeSource,
) -> Result<Payload, String> {
    let default_mode = mode(volume.default_mode, DEFAULT_MODE);
    let mut payload = Payload::new();
    let mut errors = Vec::new();
    for source in volume.sources.iter().flatten() {
        let part = if let Some(cm) = &source.config_map {
            let optional = cm.optional == Some(true);
            match inputs.sources.config_map_data(&cm.name).await {
                Ok(Some(data)) => key_payload(
                    KeyKind::ConfigMap,
                    &data,
                    cm.items.as_deref(),
                    default_mode,
                    optional,
                ),
                Ok(None) if optional => Ok(Payload::new()),
                Ok(None) => Err(format!("configmaps \"{}\" not found", cm.name)),
                Err(error) => Err(error.0),
            }
        } else if let Some(secret) = &source.secret {
            let optional = secret.optional == Some(true);
            match inputs.sources.secret_data(&secret.name).await {
                Ok(Some(data)) => key_payload(
                    KeyKind::Secret,
                    &data,
                    secret.items.as_deref(),
                    default_mode,
                    optional,
                ),
                Ok(None) if optional => Ok(Payload::new()),
                Ok(None) => Err(format!("secrets \"{}\" not found", secret.name)),
                Err(error) => Err(error.0),
            }
        } else if let Some(downward) = &source.downward_api {
            downward_payload(
                downward.items.as_deref().unwrap_or_default(),
                inputs.pod,
                default_mode,
                inputs.pod_ip,
                inputs.host_ip,
            )
        } else if let Some(token) = &source.service_account_token {
            token_payload(inputs, token, default_mode)
                .await
                .map(|file| Payload::from([file]))
        } else {
            // clusterTrustBundle: not served by keelson's API.
            Err(
                "a projected source keelson does not support (serviceAccountToken, configMap, \
                 secret, downwardAPI)"
                    .to_owned(),
            )
        };
        match part {
            Ok(part) => payload.extend(part),
            Err(error) => errors.push(error),
        }
    }
    aggregate(errors).map(|()| payload)
}

#[cfg(test)]
#[path = "projection_tests.rs"]
mod tests;

//! Why a pod volume could not be set up or refreshed. The texts keep the kubelet's wording
//! (`configmaps "x" not found`, `configmap references non-existent config key: k`) since they
//! reach users in `FailedMount` events.

use std::path::PathBuf;

use super::{atomic_writer::AtomicWriteError, projection::KeyKind, spec::ConfigError};

/// One volume's failure; [`VolumeError`] names the volume.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The ConfigMap or Secret a volume reads does not exist (and is not optional).
    #[error("{} \"{name}\" not found", .kind.resource())]
    NotFound {
        /// ConfigMap or Secret.
        kind: KeyKind,
        /// The object's name.
        name: String,
    },
    /// An `items` entry names a key the object does not have (and the source is not optional).
    #[error("{}", missing_key(.kind, .key))]
    MissingKey {
        /// ConfigMap or Secret.
        kind: KeyKind,
        /// The key asked for.
        key: String,
    },
    /// Reading an object from the API failed, or a downward API field could not be computed.
    #[error("{0}")]
    Config(ConfigError),
    /// No service-account token could be had.
    #[error(transparent)]
    Token(#[from] super::tokens::TokenError),
    /// A projected source keelson has no data for (clusterTrustBundle, podCertificate).
    #[error(
        "a projected source keelson does not support (serviceAccountToken, configMap, secret, \
         downwardAPI)"
    )]
    UnsupportedProjection,
    /// A hostPath's `type` check failed.
    #[error("hostPath type check failed: {} is not a {expected}", path.display())]
    HostPathType {
        /// The host path.
        path: PathBuf,
        /// `directory` or `file`.
        expected: &'static str,
    },
    /// A file system call failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done (`creating`, `chmod`, ...).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Writing the volume's files failed.
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
    /// An emptyDir with `medium: Memory` could not be mounted.
    #[error("mounting a tmpfs of {size} bytes on {}", path.display())]
    Tmpfs {
        /// Its size limit.
        size: u64,
        /// Where.
        path: PathBuf,
        /// The kernel's answer.
        #[source]
        source: nix::errno::Errno,
    },
    /// A claim's directory could not be found or made.
    #[error(transparent)]
    Claim(#[from] super::local_path::ClaimError),
    /// Several sources of one volume failed (Kubernetes' aggregate text `[a, b]`).
    #[error("[{}]", .0.iter().map(|e| crate::error_chain(e)).collect::<Vec<_>>().join(", "))]
    Several(Vec<MountError>),
}

impl From<ConfigError> for MountError {
    fn from(error: ConfigError) -> Self {
        Self::Config(error)
    }
}

impl MountError {
    /// `errors` as one: none is `Ok`, one is itself, more are [`MountError::Several`].
    pub fn aggregate(mut errors: Vec<MountError>) -> Result<(), MountError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Self::Several(errors)),
        }
    }
}

impl KeyKind {
    /// The API resource (`configmaps`, `secrets`).
    pub fn resource(self) -> &'static str {
        match self {
            Self::ConfigMap => "configmaps",
            Self::Secret => "secrets",
        }
    }
}

fn missing_key(kind: &KeyKind, key: &str) -> String {
    match kind {
        KeyKind::ConfigMap => format!("configmap references non-existent config key: {key}"),
        KeyKind::Secret => format!("references non-existent secret key: {key}"),
    }
}

/// A volume that could not be set up (the kubelet's `FailedMount`). Its text is the event's:
/// the kubelet's `MountVolume.SetUp failed for volume "v" : <why>`, the reason with its causes.
#[derive(Debug)]
pub struct VolumeError {
    /// The volume's name (empty: the pod's volume directory itself).
    pub volume: String,
    /// Why.
    pub reason: MountError,
}

impl std::fmt::Display for VolumeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The event text carries the whole chain, so `reason` is not also a `source`.
        write!(
            f,
            "MountVolume.SetUp failed for volume \"{}\" : {}",
            self.volume,
            crate::error_chain(&self.reason)
        )
    }
}

impl std::error::Error for VolumeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_texts_keep_the_kubelets_wording() {
        let denied = || std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let cases = [
            (
                MountError::NotFound {
                    kind: KeyKind::ConfigMap,
                    name: "app".into(),
                },
                "configmaps \"app\" not found",
            ),
            (
                MountError::NotFound {
                    kind: KeyKind::Secret,
                    name: "db".into(),
                },
                "secrets \"db\" not found",
            ),
            (
                MountError::MissingKey {
                    kind: KeyKind::ConfigMap,
                    key: "k".into(),
                },
                "configmap references non-existent config key: k",
            ),
            (
                MountError::MissingKey {
                    kind: KeyKind::Secret,
                    key: "k".into(),
                },
                "references non-existent secret key: k",
            ),
            (
                MountError::HostPathType {
                    path: "/srv".into(),
                    expected: "directory",
                },
                "hostPath type check failed: /srv is not a directory",
            ),
            (
                MountError::Several(vec![
                    MountError::NotFound {
                        kind: KeyKind::Secret,
                        name: "a".into(),
                    },
                    MountError::Io {
                        action: "creating",
                        path: "/x".into(),
                        source: denied(),
                    },
                ]),
                "[secrets \"a\" not found, creating /x: permission denied]",
            ),
        ];
        for (reason, want) in cases {
            assert_eq!(crate::error_chain(&reason), want);
            let event = VolumeError {
                volume: "cfg".into(),
                reason,
            }
            .to_string();
            assert_eq!(
                event,
                format!("MountVolume.SetUp failed for volume \"cfg\" : {want}")
            );
        }
    }

    #[test]
    fn aggregate_of_one_is_that_error() {
        assert!(MountError::aggregate(Vec::new()).is_ok());
        let one = MountError::aggregate(vec![MountError::UnsupportedProjection]);
        assert!(matches!(one, Err(MountError::UnsupportedProjection)));
    }
}

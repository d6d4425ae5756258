//! Why a pod's sync or teardown failed. These go to the agent's log (through
//! [`crate::error_chain`], which appends each source) and make the worker retry; what a user
//! reads in events and conditions keeps the kubelet's wording and is built where it is sent.

use crate::network::NetworkError;

use super::{runtime::RuntimeError, spec::ConfigError};

/// A pod worker's failure.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// A Docker call failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// Adopting, attaching or detaching the pod's network failed.
    #[error("setting up the pod network")]
    Network(#[from] NetworkError),
    /// The node has no pod CIDR yet.
    #[error("the node has no pod CIDR (spec.podCIDR) and the agent no --pod-cidr")]
    NoPodCidr,
    /// The sandbox image is missing (clusters here have no registry to pull it from).
    #[error(
        "sandbox image {image} is not present on the node (run `cargo xtask images` or pass \
         --sandbox-image)"
    )]
    SandboxImage {
        /// The configured sandbox image.
        image: String,
    },
    /// The sandbox runs but has no process to join.
    #[error("the sandbox has no process")]
    NoSandboxProcess,
    /// A file the pod needs (its resolv.conf) could not be written.
    #[error("{0}")]
    Config(ConfigError),
    /// Writing the pod's status to the API failed.
    #[error("writing the pod status")]
    WriteStatus(#[source] kube::Error),
}

impl From<ConfigError> for PodError {
    fn from(error: ConfigError) -> Self {
        Self::Config(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_as_before() {
        let cases = [
            (
                PodError::NoPodCidr,
                "the node has no pod CIDR (spec.podCIDR) and the agent no --pod-cidr",
            ),
            (
                PodError::SandboxImage {
                    image: "keelson/pause:1".into(),
                },
                "sandbox image keelson/pause:1 is not present on the node (run `cargo xtask \
                 images` or pass --sandbox-image)",
            ),
            (PodError::NoSandboxProcess, "the sandbox has no process"),
            (
                PodError::Config(ConfigError("writing /x: denied".into())),
                "writing /x: denied",
            ),
        ];
        for (error, want) in cases {
            assert_eq!(crate::error_chain(&error), want);
        }
    }
}

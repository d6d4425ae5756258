//! The container runtime as the pod worker sees it: one [`ContainerRuntime`] trait whose rules
//! are written down here, Docker through bollard as its implementation ([`DockerRuntime`]) and,
//! for tests, an in-memory fake that records every call and lets a test end containers
//! (`fake::FakeRuntime`).
//!
//! Rules every implementation keeps:
//! - a container carries the labels it was created with plus [`LABEL_NODE`]; the list calls find
//!   containers by these labels only, in every state (created, running, exited), so an agent that
//!   restarts adopts what it finds;
//! - [`ContainerRuntime::run`] creates and starts; a container that was created but failed to
//!   start stays (as the record of that attempt) and the error is returned;
//! - stopping or removing a container that is gone or already stopped is not an error;
//! - exec, pull and version errors keep the wording the pod's status and the Node condition show.

mod docker;
#[cfg(test)]
pub mod fake;
mod oom;
pub mod stream;

use std::{collections::HashMap, fmt, pin::Pin, time::Duration};

use async_trait::async_trait;
use bollard::{
    auth::DockerCredentials,
    models::{ContainerCreateBody, HostConfig},
};
use k8s_openapi::jiff::Timestamp;

pub use self::docker::{DockerRuntime, LogRotation, LogRotationError, is_not_found};
use self::stream::{Attached, StreamOptions, StreamTarget, TerminalSize};

/// Label: the node whose agent owns the container.
pub const LABEL_NODE: &str = "io.keelson.node";
/// Label: the pod's uid.
pub const LABEL_POD_UID: &str = "io.keelson.pod.uid";
/// Label: the pod's name.
pub const LABEL_POD_NAME: &str = "io.keelson.pod.name";
/// Label: the pod's namespace.
pub const LABEL_POD_NAMESPACE: &str = "io.keelson.pod.namespace";
/// Label: the container's name in the pod spec (`POD` for the sandbox).
pub const LABEL_CONTAINER: &str = "io.keelson.container";
/// Label: `sandbox`, `init` or `app`.
pub const LABEL_ROLE: &str = "io.keelson.role";
/// Label: how many times this container was restarted before (0 for the first run).
pub const LABEL_ATTEMPT: &str = "io.keelson.attempt";

/// The sandbox's container name in [`LABEL_CONTAINER`].
pub const SANDBOX: &str = "POD";

/// How long an image pull may take.
pub const PULL_LIMIT: Duration = Duration::from_secs(120);

/// Container runtime failures.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A Docker call failed; `what` says which.
    #[error("docker: {what}")]
    Docker {
        /// What was being done.
        what: String,
        /// Docker's answer.
        #[source]
        source: bollard::errors::Error,
    },
    /// Docker's own words, shown as they are: the engine does not answer (the Node's
    /// `Ready` condition) or a command could not be run in a container (a probe's message).
    #[error(transparent)]
    Engine(bollard::errors::Error),
    /// The registry or Docker refused the pull; `message` is their text.
    #[error("failed to pull and unpack image \"{image}\": {message}")]
    PullRefused {
        /// The image asked for.
        image: String,
        /// Docker's or the registry's message.
        message: String,
    },
    /// The pull failed on the way to Docker.
    #[error("failed to pull and unpack image \"{image}\"")]
    PullFailed {
        /// The image asked for.
        image: String,
        /// The transport's error.
        #[source]
        source: bollard::errors::Error,
    },
    /// The pull took longer than [`PULL_LIMIT`].
    #[error("failed to pull image \"{image}\": no answer within {} s", limit.as_secs())]
    PullTimeout {
        /// The image asked for.
        image: String,
        /// How long was waited.
        limit: Duration,
    },
    /// An exec did not finish in time.
    #[error("command timed out after {0:?}")]
    ExecTimeout(Duration),
    /// Signalling an exec's process failed.
    #[error("killing exec process {pid}")]
    Kill {
        /// The process on the node.
        pid: i32,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
}

/// One container of a pod as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// The runtime's id.
    pub id: String,
    /// [`LABEL_CONTAINER`].
    pub name: String,
    /// [`LABEL_ROLE`].
    pub role: String,
    /// [`LABEL_ATTEMPT`].
    pub attempt: u32,
    /// Running (or restarting/paused): not finished.
    pub running: bool,
    /// Created but never started.
    pub created_only: bool,
    /// When it was created (Unix seconds).
    pub created: i64,
}

/// The runtime's answer about one container, reduced to what pod status needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    /// The main process's pid on the node (0 when not running).
    pub pid: u32,
    /// Running now.
    pub running: bool,
    /// Exit code once finished.
    pub exit_code: i32,
    /// Killed by the OOM killer.
    pub oom_killed: bool,
    /// The runtime's error text for a start failure.
    pub error: String,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it finished.
    pub finished_at: Option<Timestamp>,
    /// The image id.
    pub image_id: String,
}

/// What `kubectl logs` asks of a container's output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep the stream open for new output.
    pub follow: bool,
    /// Only the last lines (`None`: all).
    pub tail: Option<i64>,
    /// Prefix each line with its time.
    pub timestamps: bool,
    /// Only output after this Unix time.
    pub since: Option<i64>,
}

/// A container's output, in chunks.
pub type LogStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<bytes::Bytes, RuntimeError>> + Send>>;

/// What the agent does with containers and images. Object safe (through `async_trait`'s boxed
/// futures): the pod workers share one `Arc<dyn ContainerRuntime>`, and a container call costs
/// far more than the allocation.
#[async_trait]
pub trait ContainerRuntime: Send + Sync + fmt::Debug {
    /// The engine's version (`20.10.24`); an error means it does not answer.
    async fn version(&self) -> Result<String, RuntimeError>;

    /// Every container of this node's pods, by pod uid (all states).
    async fn list(&self) -> Result<HashMap<String, Vec<Observed>>, RuntimeError>;

    /// The containers of pod `uid` (all states, the sandbox included).
    async fn list_pod(&self, uid: &str) -> Result<Vec<Observed>, RuntimeError>;

    /// The containers of this node's pod `namespace/name` (by its labels).
    async fn list_named(&self, namespace: &str, name: &str) -> Result<Vec<Observed>, RuntimeError>;

    /// The details of container `id`.
    async fn inspect(&self, id: &str) -> Result<Details, RuntimeError>;

    /// Creates a container named `name` with `labels` (plus [`LABEL_NODE`]) from `body` and
    /// starts it; returns its id. A leftover of the same name is replaced. A container that
    /// was created but did not start stays and the start's error is returned.
    async fn run(
        &self,
        name: &str,
        labels: HashMap<String, String>,
        body: ContainerCreateBody,
    ) -> Result<String, RuntimeError>;

    /// Stops container `id`: its stop signal (SIGTERM), then SIGKILL after `grace`. A
    /// container that is gone or already stopped is fine.
    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError>;

    /// Removes container `id` (killing it if it runs); a missing container is fine.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;

    /// Whether `image` is present on the node.
    async fn has_image(&self, image: &str) -> Result<bool, RuntimeError>;

    /// The image's `USER` (empty for root), for `runAsNonRoot`.
    async fn image_user(&self, image: &str) -> Result<String, RuntimeError>;

    /// The image's size in bytes (0 when unknown).
    async fn image_size(&self, image: &str) -> i64;

    /// Pulls `image` with registry `credentials` (anonymously with `None`), within
    /// [`PULL_LIMIT`].
    async fn pull(
        &self,
        image: &str,
        credentials: Option<DockerCredentials>,
    ) -> Result<(), RuntimeError>;

    /// Runs `command` in container `id` and returns its exit code and (the first 4 KiB of) its
    /// output; probes and hooks. Gives up after `timeout`.
    async fn exec(
        &self,
        id: &str,
        command: Vec<String>,
        timeout: Duration,
    ) -> Result<(i64, String), RuntimeError>;

    /// The output of container `id` (stdout and stderr interleaved), as the kubelet serves it.
    fn logs(&self, id: &str, options: LogOptions) -> LogStream;

    /// Sends the pod uid of every container of this node that starts, ends or is OOM-killed to
    /// `tx`, once the list calls show the change (a worker woken by an end must not list the
    /// container as still running); runs until `tx` closes.
    async fn forward_events(&self, tx: tokio::sync::mpsc::UnboundedSender<String>);

    // Interactive streams (`kubectl exec`, `attach`): see [`stream`] for their rules.

    /// Runs `command` in container `id` attached to the streams `options` asks for.
    async fn exec_attached(
        &self,
        id: &str,
        command: Vec<String>,
        options: StreamOptions,
    ) -> Result<Attached, RuntimeError>;

    /// Attaches to the main process of container `id`.
    async fn attach(&self, id: &str, options: StreamOptions) -> Result<Attached, RuntimeError>;

    /// Resizes the terminal of an exec or a container.
    async fn resize(&self, target: &StreamTarget, size: TerminalSize) -> Result<(), RuntimeError>;

    /// Pins the process of exec `exec_id` if it still runs, so that it can be killed later
    /// (what containerd's CRI does to an exec whose client went away). Call it while the
    /// exec's streams are still open.
    async fn exec_pin(&self, exec_id: &str) -> Result<Option<stream::ExecPin>, RuntimeError>;

    /// Ends a pinned exec with SIGKILL; `true` when it still ran.
    fn exec_kill(&self, pin: &stream::ExecPin) -> Result<bool, RuntimeError>;

    /// The exit code of an exec whose output ended (`None` when the runtime does not know it).
    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, RuntimeError>;
}

/// `name[:tag]` (a `@digest` stays in the name); the default tag is `latest`.
pub fn split_image(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

/// Kubernetes' default pull policy: `Always` for `:latest` or no tag, else `IfNotPresent`.
pub fn default_pull_policy(image: &str) -> &'static str {
    let (_, tag) = split_image(image);
    if tag == "latest" {
        "Always"
    } else {
        "IfNotPresent"
    }
}

/// The body for a container that joins the sandbox's network namespace.
pub fn joined_host_config(sandbox_id: &str) -> HostConfig {
    HostConfig {
        network_mode: Some(format!("container:{sandbox_id}")),
        ..HostConfig::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_split_and_default_policies() {
        assert_eq!(split_image("keelson/busybox:1"), ("keelson/busybox", "1"));
        assert_eq!(split_image("busybox"), ("busybox", "latest"));
        assert_eq!(
            split_image("localhost:5000/app"),
            ("localhost:5000/app", "latest")
        );
        assert_eq!(
            split_image("localhost:5000/app:v2"),
            ("localhost:5000/app", "v2")
        );
        assert_eq!(default_pull_policy("busybox"), "Always");
        assert_eq!(default_pull_policy("busybox:latest"), "Always");
        assert_eq!(default_pull_policy("keelson/busybox:1"), "IfNotPresent");
    }

    #[test]
    fn pull_and_exec_errors_read_as_before() {
        let server = |message: &str| bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message: message.into(),
        };
        let cases = [
            (
                RuntimeError::PullRefused {
                    image: "x:1".into(),
                    message: "manifest unknown".into(),
                },
                "failed to pull and unpack image \"x:1\": manifest unknown",
            ),
            (
                RuntimeError::PullTimeout {
                    image: "x:1".into(),
                    limit: PULL_LIMIT,
                },
                "failed to pull image \"x:1\": no answer within 120 s",
            ),
            (
                RuntimeError::ExecTimeout(Duration::from_secs(1)),
                "command timed out after 1s",
            ),
            (
                RuntimeError::Engine(server("container not running")),
                "Docker responded with status code 500: container not running",
            ),
            (
                RuntimeError::PullFailed {
                    image: "x:1".into(),
                    source: server("boom"),
                },
                "failed to pull and unpack image \"x:1\": Docker responded with status code \
                 500: boom",
            ),
        ];
        for (error, want) in cases {
            assert_eq!(crate::error_chain(&error), want);
        }
    }
}

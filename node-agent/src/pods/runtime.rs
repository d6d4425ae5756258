//! The Docker side of pods, through bollard: containers labelled with their pod so the agent
//! finds (and after a restart adopts) them, images honouring `imagePullPolicy`, exec for probes.

use std::{collections::HashMap, time::Duration};

use bollard::{
    Docker,
    models::{ContainerCreateBody, ContainerInspectResponse, ContainerSummary, HostConfig},
    query_parameters::{
        CreateContainerOptions, CreateImageOptions, KillContainerOptions, ListContainersOptions,
        RemoveContainerOptions, StopContainerOptions,
    },
};
use futures_util::StreamExt as _;
use k8s_openapi::jiff::Timestamp;

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

/// Docker failures, with what was being done.
#[derive(Debug, thiserror::Error)]
#[error("docker: {what}")]
pub struct RuntimeError {
    /// What was being done.
    pub what: String,
    /// Docker's answer.
    #[source]
    pub source: bollard::errors::Error,
}

fn docker_error(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError { what, source }
}

/// Whether a Docker error is a 404 (no such container/image).
pub fn is_not_found(error: &bollard::errors::Error) -> bool {
    matches!(
        error,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// One container of a pod as Docker reports it.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Docker's id.
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
    /// When Docker created it (Unix seconds).
    pub created: i64,
}

/// Docker's answer about one container, reduced to what pod status needs.
#[derive(Debug, Clone, Default)]
pub struct Details {
    /// The main process's pid on the node (0 when not running).
    pub pid: u32,
    /// Running now.
    pub running: bool,
    /// Exit code once finished.
    pub exit_code: i32,
    /// Killed by the OOM killer.
    pub oom_killed: bool,
    /// Docker's error text for a start failure.
    pub error: String,
    /// When it started.
    pub started_at: Option<Timestamp>,
    /// When it finished.
    pub finished_at: Option<Timestamp>,
    /// The image id.
    pub image_id: String,
}

fn timestamp(text: Option<&String>) -> Option<Timestamp> {
    text.and_then(|t| t.parse::<Timestamp>().ok())
        // Docker's "never": 0001-01-01T00:00:00Z.
        .filter(|t| t.as_second() > 0)
}

impl From<&ContainerInspectResponse> for Details {
    fn from(inspect: &ContainerInspectResponse) -> Self {
        let state = inspect.state.clone().unwrap_or_default();
        Self {
            pid: state.pid.unwrap_or(0).max(0) as u32,
            running: state.running.unwrap_or(false),
            exit_code: state.exit_code.unwrap_or(0) as i32,
            oom_killed: state.oom_killed.unwrap_or(false),
            error: state.error.unwrap_or_default(),
            started_at: timestamp(state.started_at.as_ref()),
            finished_at: timestamp(state.finished_at.as_ref()),
            image_id: inspect.image.clone().unwrap_or_default(),
        }
    }
}

fn observed(summary: &ContainerSummary) -> Option<(String, Observed)> {
    use bollard::models::ContainerSummaryStateEnum as S;
    let labels = summary.labels.as_ref()?;
    let uid = labels.get(LABEL_POD_UID)?.clone();
    let state = summary.state.unwrap_or(S::EMPTY);
    Some((
        uid,
        Observed {
            id: summary.id.clone()?,
            name: labels.get(LABEL_CONTAINER)?.clone(),
            role: labels.get(LABEL_ROLE).cloned().unwrap_or_default(),
            attempt: labels
                .get(LABEL_ATTEMPT)
                .and_then(|a| a.parse().ok())
                .unwrap_or(0),
            running: matches!(state, S::RUNNING | S::RESTARTING | S::PAUSED),
            created_only: matches!(state, S::CREATED),
            created: summary.created.unwrap_or(0),
        },
    ))
}

/// The agent's handle on Docker.
#[derive(Debug, Clone)]
pub struct Runtime {
    docker: Docker,
    node: String,
    /// Docker's `HostConfig.cgroup_parent` for every container created (`--cgroup-parent`).
    cgroup_parent: Option<String>,
}

impl Runtime {
    /// Connects to the Docker socket at `socket` and agrees on the API version (Debian's
    /// Docker 20.10 speaks 1.41, older than bollard's default).
    pub async fn connect(socket: &str, node: &str) -> Result<Self, RuntimeError> {
        let docker = Docker::connect_with_unix(socket, 120, bollard::API_DEFAULT_VERSION)
            .map_err(docker_error(format!("connecting to {socket}")))?
            .negotiate_version()
            .await
            .map_err(docker_error(format!(
                "negotiating the API version on {socket}"
            )))?;
        Ok(Self {
            docker,
            node: node.to_owned(),
            cgroup_parent: None,
        })
    }

    /// Creates every container under `cgroup_parent` (Docker's `--cgroup-parent`); `None`
    /// keeps Docker's default.
    pub fn with_cgroup_parent(mut self, cgroup_parent: Option<String>) -> Self {
        self.cgroup_parent = cgroup_parent;
        self
    }

    /// The engine's version (`20.10.24`), or why it does not answer.
    pub async fn version(&self) -> Result<String, String> {
        self.docker
            .version()
            .await
            .map(|v| v.version.unwrap_or_default())
            .map_err(|e| e.to_string())
    }

    /// Every container of this node's pods, by pod uid (all states).
    pub async fn list(&self) -> Result<HashMap<String, Vec<Observed>>, RuntimeError> {
        self.list_filtered(format!("{LABEL_NODE}={}", self.node))
            .await
    }

    /// The containers of pod `uid`.
    pub async fn list_pod(&self, uid: &str) -> Result<Vec<Observed>, RuntimeError> {
        Ok(self
            .list_filtered(format!("{LABEL_POD_UID}={uid}"))
            .await?
            .remove(uid)
            .unwrap_or_default())
    }

    /// The containers of the pod `namespace/name` (by its labels).
    pub async fn list_named(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<Observed>, RuntimeError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_owned(),
                vec![
                    format!("{LABEL_NODE}={}", self.node),
                    format!("{LABEL_POD_NAMESPACE}={namespace}"),
                    format!("{LABEL_POD_NAME}={name}"),
                ],
            )])),
            ..ListContainersOptions::default()
        };
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(docker_error("listing containers"))?;
        Ok(summaries
            .iter()
            .filter_map(observed)
            .map(|(_, c)| c)
            .collect())
    }

    async fn list_filtered(
        &self,
        label: String,
    ) -> Result<HashMap<String, Vec<Observed>>, RuntimeError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), vec![label])])),
            ..ListContainersOptions::default()
        };
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(docker_error("listing containers"))?;
        let mut pods: HashMap<String, Vec<Observed>> = HashMap::new();
        for (uid, container) in summaries.iter().filter_map(observed) {
            pods.entry(uid).or_default().push(container);
        }
        Ok(pods)
    }

    /// Forwards the pod uid of every container of this node that starts, ends or is OOM-killed
    /// to `tx`, resubscribing when Docker's event stream ends; runs until `tx` closes.
    pub async fn forward_events(&self, tx: tokio::sync::mpsc::UnboundedSender<String>) {
        use bollard::query_parameters::EventsOptions;
        loop {
            let options = EventsOptions {
                filters: Some(HashMap::from([
                    ("type".to_owned(), vec!["container".to_owned()]),
                    (
                        "label".to_owned(),
                        vec![format!("{LABEL_NODE}={}", self.node)],
                    ),
                    (
                        "event".to_owned(),
                        vec!["start".to_owned(), "die".to_owned(), "oom".to_owned()],
                    ),
                ])),
                ..EventsOptions::default()
            };
            let mut events = Box::pin(self.docker.events(Some(options)));
            while let Some(event) = events.next().await {
                let Ok(event) = event else { break };
                let uid = event
                    .actor
                    .and_then(|a| a.attributes)
                    .and_then(|mut a| a.remove(LABEL_POD_UID));
                if let Some(uid) = uid
                    && tx.send(uid).is_err()
                {
                    return;
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// The output of container `id` (stdout and stderr interleaved), as kubelet serves it.
    pub fn logs(
        &self,
        id: &str,
        follow: bool,
        tail: Option<i64>,
        timestamps: bool,
        since: Option<i64>,
    ) -> impl futures_util::Stream<Item = Result<bytes::Bytes, bollard::errors::Error>> + use<>
    {
        use bollard::query_parameters::LogsOptions;
        let options = LogsOptions {
            follow,
            stdout: true,
            stderr: true,
            timestamps,
            tail: tail.map_or_else(|| "all".to_owned(), |t| t.max(0).to_string()),
            since: since.map_or(0, |s| s as i32),
            ..LogsOptions::default()
        };
        self.docker
            .logs(id, Some(options))
            .map(|chunk| chunk.map(|c| c.into_bytes()))
    }

    /// Docker's details of container `id`.
    pub async fn inspect(&self, id: &str) -> Result<Details, RuntimeError> {
        self.docker
            .inspect_container(id, None)
            .await
            .map(|i| Details::from(&i))
            .map_err(docker_error(format!("inspecting container {id}")))
    }

    /// Creates and starts a container; returns its id. A container that fails to start is
    /// removed again and the error returned.
    pub async fn run(
        &self,
        docker_name: &str,
        labels: HashMap<String, String>,
        mut body: ContainerCreateBody,
    ) -> Result<String, RuntimeError> {
        let mut all_labels = labels;
        all_labels.insert(LABEL_NODE.to_owned(), self.node.clone());
        body.labels = Some(all_labels);
        if let Some(parent) = &self.cgroup_parent {
            body.host_config
                .get_or_insert_with(HostConfig::default)
                .cgroup_parent = Some(parent.clone());
        }
        let options = CreateContainerOptions {
            name: Some(docker_name.to_owned()),
            ..CreateContainerOptions::default()
        };
        let created = match self
            .docker
            .create_container(Some(options.clone()), body.clone())
            .await
        {
            Ok(c) => c,
            // A leftover with the same name (a crash between create and label bookkeeping).
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => {
                self.remove(docker_name).await?;
                self.docker
                    .create_container(Some(options), body)
                    .await
                    .map_err(docker_error(format!("creating container {docker_name}")))?
            }
            Err(source) => {
                return Err(RuntimeError {
                    what: format!("creating container {docker_name}"),
                    source,
                });
            }
        };
        if let Err(source) = self.docker.start_container(&created.id, None).await {
            return Err(RuntimeError {
                what: format!("starting container {docker_name}"),
                source,
            });
        }
        Ok(created.id)
    }

    /// Stops container `id`: its stop signal (SIGTERM), then SIGKILL after `grace`.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let options = StopContainerOptions {
            t: Some(i32::try_from(grace.as_secs()).unwrap_or(i32::MAX)),
            signal: None,
        };
        match self.docker.stop_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // 304: already stopped.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(source) => Err(RuntimeError {
                what: format!("stopping container {id}"),
                source,
            }),
        }
    }

    /// Sends SIGKILL to container `id` (a failed liveness probe).
    pub async fn kill(&self, id: &str) -> Result<(), RuntimeError> {
        let options = KillContainerOptions {
            signal: "KILL".to_owned(),
        };
        match self.docker.kill_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(()),
            Err(source) => Err(RuntimeError {
                what: format!("killing container {id}"),
                source,
            }),
        }
    }

    /// Removes container `id` (killing it if it runs); a missing container is fine.
    pub async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(source) => Err(RuntimeError {
                what: format!("removing container {id}"),
                source,
            }),
        }
    }

    /// Whether the image is present locally.
    pub async fn has_image(&self, image: &str) -> Result<bool, RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(source) => Err(RuntimeError {
                what: format!("inspecting image {image}"),
                source,
            }),
        }
    }

    /// The image's `USER` (Docker's `Config.User`; empty for root), for `runAsNonRoot`.
    pub async fn image_user(&self, image: &str) -> Result<String, RuntimeError> {
        self.docker
            .inspect_image(image)
            .await
            .map(|i| i.config.and_then(|c| c.user).unwrap_or_default())
            .map_err(docker_error(format!("inspecting image {image}")))
    }

    /// The Docker client (image archives, registry pulls with credentials).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The image's size in bytes (0 when unknown).
    pub async fn image_size(&self, image: &str) -> i64 {
        self.docker
            .inspect_image(image)
            .await
            .ok()
            .and_then(|i| i.size)
            .unwrap_or(0)
    }

    /// Pulls `image`; the error text is what the pod's status shows.
    pub async fn pull(&self, image: &str) -> Result<(), String> {
        self.pull_as(image, None).await
    }

    /// Pulls `image` with registry `credentials` (anonymous with `None`).
    pub async fn pull_as(
        &self,
        image: &str,
        credentials: Option<bollard::auth::DockerCredentials>,
    ) -> Result<(), String> {
        let (name, tag) = split_image(image);
        let options = CreateImageOptions {
            from_image: Some(name.to_owned()),
            tag: Some(tag.to_owned()),
            ..CreateImageOptions::default()
        };
        let mut stream = self.docker.create_image(Some(options), None, credentials);
        let pulled = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(info) => {
                        if let Some(error) = info.error_detail.and_then(|d| d.message) {
                            return Err(error);
                        }
                    }
                    Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                        return Err(message);
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(())
        })
        .await;
        match pulled {
            Ok(result) => {
                result.map_err(|e| format!("failed to pull and unpack image \"{image}\": {e}"))
            }
            Err(_) => Err(format!(
                "failed to pull image \"{image}\": no answer within 120 s"
            )),
        }
    }

    /// Runs `command` in container `id` and returns its exit code and output (probes).
    pub async fn exec(
        &self,
        id: &str,
        command: Vec<String>,
        timeout: Duration,
    ) -> Result<(i64, String), String> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        let exec = self
            .docker
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(command),
                    attach_stdout: Some(true),
                    attach_stderr: Some(true),
                    ..CreateExecOptions::default()
                },
            )
            .await
            .map_err(|e| e.to_string())?;
        let run = async {
            let mut text = String::new();
            if let StartExecResults::Attached { mut output, .. } = self
                .docker
                .start_exec(&exec.id, None)
                .await
                .map_err(|e| e.to_string())?
            {
                while let Some(Ok(chunk)) = output.next().await {
                    if text.len() < 4096 {
                        text.push_str(&chunk.to_string());
                    }
                }
            }
            let inspect = self
                .docker
                .inspect_exec(&exec.id)
                .await
                .map_err(|e| e.to_string())?;
            Ok((inspect.exit_code.unwrap_or(-1), text))
        };
        tokio::time::timeout(timeout, run)
            .await
            .unwrap_or_else(|_| Err(format!("command timed out after {timeout:?}")))
    }
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
}

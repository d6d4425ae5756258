//! [`ContainerRuntime`] on Docker, through bollard: containers labelled with their pod so the
//! agent finds (and after a restart adopts) them, images pulled with the pod's credentials,
//! exec for probes and hooks.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;
use bollard::{
    Docker,
    auth::DockerCredentials,
    models::{ContainerCreateBody, ContainerInspectResponse, ContainerSummary, HostConfig},
    query_parameters::{
        CreateContainerOptions, CreateImageOptions, ListContainersOptions, RemoveContainerOptions,
        StopContainerOptions,
    },
};
use futures_util::StreamExt as _;
use k8s_openapi::jiff::Timestamp;

use super::{
    ContainerRuntime, Details, LABEL_ATTEMPT, LABEL_CONTAINER, LABEL_NODE, LABEL_POD_NAME,
    LABEL_POD_NAMESPACE, LABEL_POD_UID, LABEL_ROLE, LogOptions, LogStream, Observed, PULL_LIMIT,
    RuntimeError,
    oom::OomLog,
    split_image,
    stream::{Attached, StreamOptions, StreamTarget, TerminalSize},
};

/// The longest a `die` event waits for the container list to show the exit.
const SETTLE_LIMIT: Duration = Duration::from_secs(2);

fn docker_error(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> RuntimeError {
    let what = what.into();
    move |source| RuntimeError::Docker { what, source }
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

/// A log rotation setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogRotationError {
    /// `--container-log-max-size` is not a size.
    #[error("container log max size {value:?}: {reason}")]
    Size {
        /// What was given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
}

/// How container logs are rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRotation {
    /// The size (bytes) at which the current file is rotated.
    pub max_size: u64,
    /// How many files are kept, the current one included (at least 2, as the kubelet requires).
    pub max_files: u32,
}

impl LogRotation {
    /// The kubelet's defaults: 10Mi, 5 files.
    pub const DEFAULT: Self = Self {
        max_size: 10 * 1024 * 1024,
        max_files: 5,
    };

    /// Parses `--container-log-max-size` (a quantity such as `10Mi`; at least 1Ki).
    pub fn parse_size(text: &str) -> Result<u64, LogRotationError> {
        let quantity = keelson_api::quantity::Quantity::parse_trimmed(text).map_err(|e| {
            LogRotationError::Size {
                value: text.to_owned(),
                reason: e.to_string(),
            }
        })?;
        u64::try_from(quantity.value())
            .ok()
            .filter(|bytes| *bytes >= 1024)
            .ok_or_else(|| LogRotationError::Size {
                value: text.to_owned(),
                reason: "must be at least 1Ki".to_owned(),
            })
    }

    /// Docker's log configuration for it.
    pub fn log_config(&self) -> bollard::models::HostConfigLogConfig {
        bollard::models::HostConfigLogConfig {
            typ: Some("json-file".to_owned()),
            config: Some(HashMap::from([
                ("max-size".to_owned(), self.max_size.to_string()),
                ("max-file".to_owned(), self.max_files.to_string()),
            ])),
        }
    }
}

/// The agent's handle on Docker.
#[derive(Debug, Clone)]
pub struct DockerRuntime {
    docker: Docker,
    node: String,
    /// Docker's `HostConfig.cgroup_parent` for every container created (`--cgroup-parent`).
    cgroup_parent: Option<String>,
    /// Log rotation of every container created: Docker's json-file `max-size` (bytes) and
    /// `max-file` (the kubelet's containerLogMaxSize and containerLogMaxFiles).
    log_rotation: Option<LogRotation>,
    /// OOM kills Docker's flag missed (see [`super::oom`]).
    ooms: Arc<OomLog>,
}

impl DockerRuntime {
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
            log_rotation: None,
            ooms: Arc::default(),
        })
    }

    /// Reads the kernel's OOM-kill records from now on, so an OOM kill Docker's flag missed
    /// still shows as `OOMKilled`; without `/dev/kmsg` Docker's flag and events are all.
    pub fn watch_kernel_oom_kills(&self) {
        if let Err(e) = super::oom::watch_kernel_log(self.ooms.clone()) {
            tracing::warn!(error = %e, "cannot read /dev/kmsg: OOM kills are known from Docker \
                only, which misses those in a container's first milliseconds");
        }
    }

    /// Creates every container under `cgroup_parent` (Docker's `--cgroup-parent`); `None`
    /// keeps Docker's default.
    pub fn with_cgroup_parent(mut self, cgroup_parent: Option<String>) -> Self {
        self.cgroup_parent = cgroup_parent;
        self
    }

    /// Rotates every container's log: Docker's `json-file` driver with `max-size` and
    /// `max-file`, whatever the engine's default driver is (the kubelet's containerLogMaxSize
    /// and containerLogMaxFiles; `docker logs` and so `kubectl logs` read across the files).
    pub fn with_log_rotation(mut self, rotation: LogRotation) -> Self {
        self.log_rotation = Some(rotation);
        self
    }

    /// The Docker client (the engine's root directory, image archives loaded at start).
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Waits (up to [`SETTLE_LIMIT`]) until the container list shows container `id` no
    /// longer running. Docker sends `die` before it updates the view the list reads
    /// (`handleContainerExit` logs the event, then checkpoints the container), so a worker
    /// woken by the event could list an ended init container as running and sleep until its
    /// next resync: the 10 s tail of pod start-up the `pods` bench measured.
    async fn settle_exit(&self, id: &str) {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("id".to_owned(), vec![id.to_owned()])])),
            ..ListContainersOptions::default()
        };
        let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
        loop {
            let still_running = match self.docker.list_containers(Some(options.clone())).await {
                Ok(list) => list
                    .iter()
                    .filter_map(observed)
                    .any(|(_, c)| c.id == id && c.running),
                Err(_) => false,
            };
            if !still_running || tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn list_labelled(
        &self,
        labels: Vec<String>,
    ) -> Result<Vec<ContainerSummary>, RuntimeError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), labels)])),
            ..ListContainersOptions::default()
        };
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(docker_error("listing containers"))
    }

    async fn list_filtered(
        &self,
        label: String,
    ) -> Result<HashMap<String, Vec<Observed>>, RuntimeError> {
        let summaries = self.list_labelled(vec![label]).await?;
        let mut pods: HashMap<String, Vec<Observed>> = HashMap::new();
        for (uid, container) in summaries.iter().filter_map(observed) {
            pods.entry(uid).or_default().push(container);
        }
        Ok(pods)
    }

    async fn exec_now(
        &self,
        id: &str,
        command: Vec<String>,
    ) -> Result<(i64, String), RuntimeError> {
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
            .map_err(RuntimeError::Engine)?;
        let mut text = String::new();
        if let StartExecResults::Attached { mut output, .. } = self
            .docker
            .start_exec(&exec.id, None)
            .await
            .map_err(RuntimeError::Engine)?
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
            .map_err(RuntimeError::Engine)?;
        Ok((inspect.exit_code.unwrap_or(-1), text))
    }

    async fn pull_now(
        &self,
        image: &str,
        credentials: Option<DockerCredentials>,
    ) -> Result<(), RuntimeError> {
        let (name, tag) = split_image(image);
        let options = CreateImageOptions {
            from_image: Some(name.to_owned()),
            tag: Some(tag.to_owned()),
            ..CreateImageOptions::default()
        };
        let mut stream = self.docker.create_image(Some(options), None, credentials);
        let refused = |message: String| RuntimeError::PullRefused {
            image: image.to_owned(),
            message,
        };
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(message) = info.error_detail.and_then(|d| d.message) {
                        return Err(refused(message));
                    }
                }
                Err(bollard::errors::Error::DockerResponseServerError { message, .. }) => {
                    return Err(refused(message));
                }
                Err(source) => {
                    return Err(RuntimeError::PullFailed {
                        image: image.to_owned(),
                        source,
                    });
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl ContainerRuntime for DockerRuntime {
    async fn version(&self) -> Result<String, RuntimeError> {
        self.docker
            .version()
            .await
            .map(|v| v.version.unwrap_or_default())
            .map_err(RuntimeError::Engine)
    }

    async fn list(&self) -> Result<HashMap<String, Vec<Observed>>, RuntimeError> {
        self.list_filtered(format!("{LABEL_NODE}={}", self.node))
            .await
    }

    async fn list_pod(&self, uid: &str) -> Result<Vec<Observed>, RuntimeError> {
        Ok(self
            .list_filtered(format!("{LABEL_POD_UID}={uid}"))
            .await?
            .remove(uid)
            .unwrap_or_default())
    }

    async fn list_named(&self, namespace: &str, name: &str) -> Result<Vec<Observed>, RuntimeError> {
        let summaries = self
            .list_labelled(vec![
                format!("{LABEL_NODE}={}", self.node),
                format!("{LABEL_POD_NAMESPACE}={namespace}"),
                format!("{LABEL_POD_NAME}={name}"),
            ])
            .await?;
        Ok(summaries
            .iter()
            .filter_map(observed)
            .map(|(_, c)| c)
            .collect())
    }

    async fn inspect(&self, id: &str) -> Result<Details, RuntimeError> {
        let inspect = self
            .docker
            .inspect_container(id, None)
            .await
            .map_err(docker_error(format!("inspecting container {id}")))?;
        let mut details = Details::from(&inspect);
        if !details.running && !details.oom_killed {
            let full = inspect.id.as_deref().unwrap_or(id);
            // Killed by a signal 9 a moment ago: the OOM record may still be on its way.
            let wait = if details.exit_code == 137 {
                super::oom::late_record_wait(details.finished_at, Timestamp::now())
            } else {
                Duration::ZERO
            };
            details.oom_killed = self.ooms.wait_for(full, wait).await;
        }
        Ok(details)
    }

    async fn run(
        &self,
        name: &str,
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
        if let Some(rotation) = &self.log_rotation {
            body.host_config
                .get_or_insert_with(HostConfig::default)
                .log_config = Some(rotation.log_config());
        }
        let options = CreateContainerOptions {
            name: Some(name.to_owned()),
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
                self.remove(name).await?;
                self.docker
                    .create_container(Some(options), body)
                    .await
                    .map_err(docker_error(format!("creating container {name}")))?
            }
            Err(source) => {
                return Err(RuntimeError::Docker {
                    what: format!("creating container {name}"),
                    source,
                });
            }
        };
        self.docker
            .start_container(&created.id, None)
            .await
            .map_err(docker_error(format!("starting container {name}")))?;
        Ok(created.id)
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
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
            Err(source) => Err(RuntimeError::Docker {
                what: format!("stopping container {id}"),
                source,
            }),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            link: false,
        };
        match self.docker.remove_container(id, Some(options)).await {
            Ok(()) => {
                self.ooms.forget(id);
                Ok(())
            }
            Err(e) if is_not_found(&e) => Ok(()),
            Err(source) => Err(RuntimeError::Docker {
                what: format!("removing container {id}"),
                source,
            }),
        }
    }

    async fn has_image(&self, image: &str) -> Result<bool, RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(source) => Err(RuntimeError::Docker {
                what: format!("inspecting image {image}"),
                source,
            }),
        }
    }

    async fn image_user(&self, image: &str) -> Result<String, RuntimeError> {
        self.docker
            .inspect_image(image)
            .await
            .map(|i| i.config.and_then(|c| c.user).unwrap_or_default())
            .map_err(docker_error(format!("inspecting image {image}")))
    }

    async fn image_size(&self, image: &str) -> i64 {
        self.docker
            .inspect_image(image)
            .await
            .ok()
            .and_then(|i| i.size)
            .unwrap_or(0)
    }

    async fn pull(
        &self,
        image: &str,
        credentials: Option<DockerCredentials>,
    ) -> Result<(), RuntimeError> {
        tokio::time::timeout(PULL_LIMIT, self.pull_now(image, credentials))
            .await
            .unwrap_or_else(|_| {
                Err(RuntimeError::PullTimeout {
                    image: image.to_owned(),
                    limit: PULL_LIMIT,
                })
            })
    }

    async fn exec(
        &self,
        id: &str,
        command: Vec<String>,
        timeout: Duration,
    ) -> Result<(i64, String), RuntimeError> {
        // The bound covers the exec's creation too, so a hung engine cannot hold a probe.
        tokio::time::timeout(timeout, self.exec_now(id, command))
            .await
            .unwrap_or(Err(RuntimeError::ExecTimeout(timeout)))
    }

    fn logs(&self, id: &str, options: LogOptions) -> LogStream {
        use bollard::query_parameters::LogsOptions;
        let query = LogsOptions {
            follow: options.follow,
            stdout: true,
            stderr: true,
            timestamps: options.timestamps,
            tail: options
                .tail
                .map_or_else(|| "all".to_owned(), |t| t.max(0).to_string()),
            since: options.since.map_or(0, |s| s as i32),
            ..LogsOptions::default()
        };
        let what = format!("reading the logs of container {id}");
        Box::pin(self.docker.logs(id, Some(query)).map(move |chunk| {
            chunk
                .map(|c| c.into_bytes())
                .map_err(docker_error(what.clone()))
        }))
    }

    async fn forward_events(&self, tx: tokio::sync::mpsc::UnboundedSender<String>) {
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
                if event.action.as_deref() == Some("oom")
                    && let Some(id) = event.actor.as_ref().and_then(|a| a.id.as_deref())
                {
                    self.ooms.record(id);
                }
                let id = event.actor.as_ref().and_then(|a| a.id.clone());
                let uid = event
                    .actor
                    .and_then(|a| a.attributes)
                    .and_then(|mut a| a.remove(LABEL_POD_UID));
                let Some(uid) = uid else { continue };
                match id {
                    Some(id) if event.action.as_deref() == Some("die") => {
                        let (runtime, tx) = (self.clone(), tx.clone());
                        tokio::spawn(async move {
                            runtime.settle_exit(&id).await;
                            let _ = tx.send(uid);
                        });
                    }
                    _ if tx.send(uid).is_err() => return,
                    _ => {}
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn exec_attached(
        &self,
        id: &str,
        command: Vec<String>,
        options: StreamOptions,
    ) -> Result<Attached, RuntimeError> {
        self.exec_attached_now(id, command, options).await
    }

    async fn attach(&self, id: &str, options: StreamOptions) -> Result<Attached, RuntimeError> {
        self.attach_now(id, options).await
    }

    async fn resize(&self, target: &StreamTarget, size: TerminalSize) -> Result<(), RuntimeError> {
        self.resize_now(target, size).await
    }

    async fn exec_pin(
        &self,
        exec_id: &str,
    ) -> Result<Option<super::stream::ExecPin>, RuntimeError> {
        self.exec_pin_now(exec_id).await
    }

    fn exec_kill(&self, pin: &super::stream::ExecPin) -> Result<bool, RuntimeError> {
        pin.kill()
    }

    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, RuntimeError> {
        self.exec_exit_code_now(exec_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sizes_parse_as_quantities() {
        assert_eq!(LogRotation::parse_size("10Mi"), Ok(10 * 1024 * 1024));
        assert_eq!(LogRotation::parse_size("1M"), Ok(1_000_000));
        assert_eq!(
            LogRotation::parse_size("100").map_err(|e| e.to_string()),
            Err("container log max size \"100\": must be at least 1Ki".to_owned())
        );
        assert!(LogRotation::parse_size("ten").is_err());
        let config = LogRotation::DEFAULT.log_config();
        assert_eq!(config.typ.as_deref(), Some("json-file"));
        let options = config.config.expect("options");
        assert_eq!(options["max-size"], "10485760");
        assert_eq!(options["max-file"], "5");
    }
}

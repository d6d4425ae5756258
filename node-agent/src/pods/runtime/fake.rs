//! An in-memory [`ContainerRuntime`] for tests: containers are records that start running when
//! created and end when the test says so ([`FakeRuntime::exit`]) or when stopped; every call
//! that changes something (and every exec and pull) is recorded as a [`Call`], in order.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use bollard::{auth::DockerCredentials, models::ContainerCreateBody};
use k8s_openapi::jiff::Timestamp;

use super::{
    ContainerRuntime, Details, LABEL_ATTEMPT, LABEL_CONTAINER, LABEL_NODE, LABEL_POD_NAME,
    LABEL_POD_NAMESPACE, LABEL_POD_UID, LABEL_ROLE, LogOptions, LogStream, Observed, RuntimeError,
    stream::{Attached, Output, StreamOptions, StreamTarget, TerminalSize},
};

/// The exit code of a container stopped through [`ContainerRuntime::stop`] (SIGTERM).
pub const STOPPED_EXIT_CODE: i32 = 143;

/// One recorded call; containers are named by their pod spec name ([`LABEL_CONTAINER`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// [`ContainerRuntime::run`].
    Run {
        /// The container.
        container: String,
        /// Its [`LABEL_ATTEMPT`].
        attempt: u32,
    },
    /// [`ContainerRuntime::stop`].
    Stop {
        /// The container.
        container: String,
        /// The grace period asked for.
        grace: Duration,
    },
    /// [`ContainerRuntime::remove`].
    Remove {
        /// The container.
        container: String,
    },
    /// [`ContainerRuntime::exec`].
    Exec {
        /// The container.
        container: String,
        /// The command.
        command: Vec<String>,
    },
    /// [`ContainerRuntime::pull`].
    Pull {
        /// The image.
        image: String,
    },
}

#[derive(Debug, Clone)]
struct Container {
    id: String,
    name: String,
    labels: HashMap<String, String>,
    body: ContainerCreateBody,
    running: bool,
    exit_code: i32,
    created: Timestamp,
    started_at: Option<Timestamp>,
    finished_at: Option<Timestamp>,
}

impl Container {
    fn label(&self, key: &str) -> String {
        self.labels.get(key).cloned().unwrap_or_default()
    }

    fn observed(&self) -> Observed {
        Observed {
            id: self.id.clone(),
            name: self.label(LABEL_CONTAINER),
            role: self.label(LABEL_ROLE),
            attempt: self.label(LABEL_ATTEMPT).parse().unwrap_or(0),
            running: self.running,
            created_only: false,
            created: self.created.as_second(),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    containers: Vec<Container>,
    images: HashSet<String>,
    calls: Vec<Call>,
    exec_results: HashMap<String, (i64, String)>,
    pull_errors: HashMap<String, String>,
}

/// The fake runtime of one node.
#[derive(Debug)]
pub struct FakeRuntime {
    node: String,
    state: Mutex<State>,
    streams: Arc<Mutex<Streams>>,
}

impl FakeRuntime {
    /// A runtime for `node` with `images` present.
    pub fn new(node: &str, images: &[&str]) -> Self {
        let state = State {
            images: images.iter().map(|i| (*i).to_owned()).collect(),
            ..State::default()
        };
        Self {
            node: node.to_owned(),
            state: Mutex::new(state),
            streams: Arc::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake runtime lock")
    }

    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// Forgets the calls so far.
    pub fn clear_calls(&self) {
        self.state().calls.clear();
    }

    /// Ends the running instance of `container` with exit `code`, now.
    pub fn exit(&self, container: &str, code: i32) {
        let mut state = self.state();
        let c = state
            .containers
            .iter_mut()
            .find(|c| c.running && c.label(LABEL_CONTAINER) == container)
            .unwrap_or_else(|| panic!("no running container {container}"));
        c.running = false;
        c.exit_code = code;
        c.finished_at = Some(Timestamp::now());
    }

    /// What an exec in `container` answers from now on (default: exit 0, no output).
    pub fn answer_exec(&self, container: &str, code: i64, output: &str) {
        self.state()
            .exec_results
            .insert(container.to_owned(), (code, output.to_owned()));
    }

    /// Pulls of `image` fail with `message` from now on.
    pub fn refuse_pull(&self, image: &str, message: &str) {
        self.state()
            .pull_errors
            .insert(image.to_owned(), message.to_owned());
    }

    /// The names of the running containers (the sandbox is `POD`), sorted.
    pub fn running(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .state()
            .containers
            .iter()
            .filter(|c| c.running)
            .map(|c| c.label(LABEL_CONTAINER))
            .collect();
        names.sort();
        names
    }

    /// The id of the running instance of `container`.
    pub fn running_id(&self, container: &str) -> String {
        self.state()
            .containers
            .iter()
            .find(|c| c.running && c.label(LABEL_CONTAINER) == container)
            .map(|c| c.id.clone())
            .unwrap_or_else(|| panic!("no running container {container}"))
    }

    /// The body the newest instance of `container` was created with.
    pub fn body(&self, container: &str) -> ContainerCreateBody {
        let state = self.state();
        let mut instances: Vec<&Container> = state
            .containers
            .iter()
            .filter(|c| c.label(LABEL_CONTAINER) == container)
            .collect();
        instances.sort_by_key(|c| c.observed().attempt);
        instances
            .last()
            .map(|c| c.body.clone())
            .unwrap_or_else(|| panic!("no container {container}"))
    }

    fn container_name(state: &State, id: &str) -> String {
        state
            .containers
            .iter()
            .find(|c| c.id == id)
            .map_or_else(|| id.to_owned(), |c| c.label(LABEL_CONTAINER))
    }

    fn list_where(&self, pred: impl Fn(&Container) -> bool) -> Vec<(String, Observed)> {
        self.state()
            .containers
            .iter()
            .filter(|c| pred(c))
            .map(|c| (c.label(LABEL_POD_UID), c.observed()))
            .collect()
    }
}

fn docker_answer(status_code: u16, message: String) -> bollard::errors::Error {
    bollard::errors::Error::DockerResponseServerError {
        status_code,
        message,
    }
}

#[async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn version(&self) -> Result<String, RuntimeError> {
        Ok("fake".into())
    }

    async fn list(&self) -> Result<HashMap<String, Vec<Observed>>, RuntimeError> {
        let mut pods: HashMap<String, Vec<Observed>> = HashMap::new();
        for (uid, c) in self.list_where(|c| c.label(LABEL_NODE) == self.node) {
            pods.entry(uid).or_default().push(c);
        }
        Ok(pods)
    }

    async fn list_pod(&self, uid: &str) -> Result<Vec<Observed>, RuntimeError> {
        let found = self.list_where(|c| c.label(LABEL_POD_UID) == uid);
        Ok(found.into_iter().map(|(_, c)| c).collect())
    }

    async fn list_named(&self, namespace: &str, name: &str) -> Result<Vec<Observed>, RuntimeError> {
        let found = self.list_where(|c| {
            c.label(LABEL_NODE) == self.node
                && c.label(LABEL_POD_NAMESPACE) == namespace
                && c.label(LABEL_POD_NAME) == name
        });
        Ok(found.into_iter().map(|(_, c)| c).collect())
    }

    async fn inspect(&self, id: &str) -> Result<Details, RuntimeError> {
        let state = self.state();
        let c = state
            .containers
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| RuntimeError::Docker {
                what: format!("inspecting container {id}"),
                source: docker_answer(404, format!("No such container: {id}")),
            })?;
        Ok(Details {
            pid: if c.running { 4242 } else { 0 },
            running: c.running,
            exit_code: c.exit_code,
            oom_killed: false,
            error: String::new(),
            started_at: c.started_at,
            finished_at: c.finished_at,
            image_id: format!("sha256:{}", c.body.image.clone().unwrap_or_default()),
        })
    }

    async fn run(
        &self,
        name: &str,
        mut labels: HashMap<String, String>,
        body: ContainerCreateBody,
    ) -> Result<String, RuntimeError> {
        let mut state = self.state();
        let image = body.image.clone().unwrap_or_default();
        if !state.images.contains(&image) {
            return Err(RuntimeError::Docker {
                what: format!("creating container {name}"),
                source: docker_answer(404, format!("No such image: {image}")),
            });
        }
        labels.insert(LABEL_NODE.to_owned(), self.node.clone());
        state.containers.retain(|c| c.name != name);
        state.next_id += 1;
        let id = format!("c{:04}", state.next_id);
        let now = Timestamp::now();
        let container = Container {
            id: id.clone(),
            name: name.to_owned(),
            labels,
            body,
            running: true,
            exit_code: 0,
            created: now,
            started_at: Some(now),
            finished_at: None,
        };
        let observed = container.observed();
        state.calls.push(Call::Run {
            container: observed.name,
            attempt: observed.attempt,
        });
        state.containers.push(container);
        Ok(id)
    }

    async fn stop(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let mut state = self.state();
        let container = Self::container_name(&state, id);
        state.calls.push(Call::Stop { container, grace });
        if let Some(c) = state
            .containers
            .iter_mut()
            .find(|c| c.id == id && c.running)
        {
            c.running = false;
            c.exit_code = STOPPED_EXIT_CODE;
            c.finished_at = Some(Timestamp::now());
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        let mut state = self.state();
        let container = Self::container_name(&state, id);
        state.calls.push(Call::Remove { container });
        state.containers.retain(|c| c.id != id);
        Ok(())
    }

    async fn has_image(&self, image: &str) -> Result<bool, RuntimeError> {
        Ok(self.state().images.contains(image))
    }

    async fn image_user(&self, _image: &str) -> Result<String, RuntimeError> {
        Ok(String::new())
    }

    async fn image_size(&self, _image: &str) -> i64 {
        1000
    }

    async fn pull(
        &self,
        image: &str,
        _credentials: Option<DockerCredentials>,
    ) -> Result<(), RuntimeError> {
        let mut state = self.state();
        state.calls.push(Call::Pull {
            image: image.to_owned(),
        });
        if let Some(message) = state.pull_errors.get(image) {
            return Err(RuntimeError::PullRefused {
                image: image.to_owned(),
                message: message.clone(),
            });
        }
        state.images.insert(image.to_owned());
        Ok(())
    }

    async fn exec(
        &self,
        id: &str,
        command: Vec<String>,
        _timeout: Duration,
    ) -> Result<(i64, String), RuntimeError> {
        let mut state = self.state();
        let container = Self::container_name(&state, id);
        state.calls.push(Call::Exec {
            container: container.clone(),
            command,
        });
        if !state.containers.iter().any(|c| c.id == id && c.running) {
            let message = format!("Container {id} is not running");
            return Err(RuntimeError::Engine(docker_answer(409, message)));
        }
        Ok(state
            .exec_results
            .get(&container)
            .cloned()
            .unwrap_or((0, String::new())))
    }

    fn logs(&self, _id: &str, _options: LogOptions) -> LogStream {
        Box::pin(futures_util::stream::empty())
    }

    async fn forward_events(&self, tx: tokio::sync::mpsc::UnboundedSender<String>) {
        tx.closed().await;
    }

    async fn exec_attached(
        &self,
        id: &str,
        command: Vec<String>,
        options: StreamOptions,
    ) -> Result<Attached, RuntimeError> {
        self.check_running(id)?;
        let exec_id = {
            let mut streams = self.streams.lock().expect("fake streams lock");
            streams.next_exec += 1;
            format!("e{:04}", streams.next_exec)
        };
        Ok(self.start_process(StreamTarget::Exec(exec_id), command, options))
    }

    async fn attach(&self, id: &str, options: StreamOptions) -> Result<Attached, RuntimeError> {
        self.check_running(id)?;
        Ok(self.start_process(
            StreamTarget::Container(id.to_owned()),
            vec!["cat".to_owned()],
            options,
        ))
    }

    async fn resize(&self, target: &StreamTarget, size: TerminalSize) -> Result<(), RuntimeError> {
        self.streams
            .lock()
            .expect("fake streams lock")
            .resizes
            .push((target.clone(), size));
        Ok(())
    }

    async fn exec_pin(
        &self,
        exec_id: &str,
    ) -> Result<Option<super::stream::ExecPin>, RuntimeError> {
        let streams = self.streams.lock().expect("fake streams lock");
        Ok(streams
            .killers
            .contains_key(exec_id)
            .then(|| super::stream::ExecPin::by_id(exec_id.to_owned())))
    }

    fn exec_kill(&self, pin: &super::stream::ExecPin) -> Result<bool, RuntimeError> {
        let mut streams = self.streams.lock().expect("fake streams lock");
        let Some(kill) = streams.killers.remove(&pin.exec_id) else {
            return Ok(false);
        };
        streams.killed += 1;
        Ok(kill.send(()).is_ok())
    }

    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, RuntimeError> {
        Ok(self
            .streams
            .lock()
            .expect("fake streams lock")
            .exit_codes
            .get(exec_id)
            .copied())
    }
}

/// What the fake's attached processes did.
#[derive(Debug, Default)]
struct Streams {
    next_exec: u64,
    exit_codes: HashMap<String, i64>,
    resizes: Vec<(StreamTarget, TerminalSize)>,
    /// Processes started and not yet ended.
    alive: usize,
    /// Processes that saw their stdin end.
    stdin_ends: usize,
    /// How to kill each running exec.
    killers: HashMap<String, tokio::sync::oneshot::Sender<()>>,
    /// Execs killed.
    killed: usize,
}

impl FakeRuntime {
    /// Terminal sizes asked for, in order.
    pub fn resizes(&self) -> Vec<(StreamTarget, TerminalSize)> {
        self.streams
            .lock()
            .expect("fake streams lock")
            .resizes
            .clone()
    }

    /// Execs ended by [`ContainerRuntime::exec_kill`].
    pub fn killed_execs(&self) -> usize {
        self.streams.lock().expect("fake streams lock").killed
    }

    /// Attached processes still running.
    pub fn alive_processes(&self) -> usize {
        self.streams.lock().expect("fake streams lock").alive
    }

    /// Attached processes that saw their stdin end.
    pub fn stdin_ends(&self) -> usize {
        self.streams.lock().expect("fake streams lock").stdin_ends
    }

    fn check_running(&self, id: &str) -> Result<(), RuntimeError> {
        let state = self.state();
        if state.containers.iter().any(|c| c.id == id && c.running) {
            Ok(())
        } else {
            let message = format!("Container {id} is not running");
            Err(RuntimeError::Engine(docker_answer(409, message)))
        }
    }

    /// A fake process: `cat` echoes stdin to stdout until stdin ends; `echo ARGS` prints its
    /// arguments; `fail N` writes `failing` to stderr and exits `N`; `wait` waits for stdin to
    /// end; anything else exits 127.
    fn start_process(
        &self,
        target: StreamTarget,
        command: Vec<String>,
        options: StreamOptions,
    ) -> Attached {
        use tokio::io::AsyncReadExt as _;
        let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let (tx, rx) = tokio::sync::mpsc::channel::<Output>(16);
        let streams = Arc::clone(&self.streams);
        streams.lock().expect("fake streams lock").alive += 1;
        let exec_id = match &target {
            StreamTarget::Exec(id) => Some(id.clone()),
            StreamTarget::Container(_) => None,
        };
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
        if let Some(id) = &exec_id {
            streams
                .lock()
                .expect("fake streams lock")
                .killers
                .insert(id.clone(), kill_tx);
        }
        tokio::spawn(async move {
            let program = command.first().cloned().unwrap_or_default();
            let mut buffer = vec![0u8; 16 * 1024];
            let mut read_to_end = async |echo: bool| loop {
                match theirs.read(&mut buffer).await {
                    Ok(0) | Err(_) => {
                        streams.lock().expect("fake streams lock").stdin_ends += 1;
                        return;
                    }
                    Ok(n) => {
                        let chunk = bytes::Bytes::copy_from_slice(&buffer[..n]);
                        if echo && options.stdout && tx.send(Output::Stdout(chunk)).await.is_err() {
                            return;
                        }
                    }
                }
            };
            let run = async {
                match program.as_str() {
                    "cat" => {
                        read_to_end(true).await;
                        0
                    }
                    // Ignores its stdin and runs until killed.
                    "hang" => std::future::pending().await,
                    "wait" => {
                        read_to_end(false).await;
                        0
                    }
                    "echo" => {
                        let line = format!("{}\n", command[1..].join(" "));
                        let _ = tx.send(Output::Stdout(line.into())).await;
                        0
                    }
                    "fail" => {
                        let _ = tx.send(Output::Stderr("failing\n".into())).await;
                        command.get(1).and_then(|c| c.parse().ok()).unwrap_or(1)
                    }
                    _ => 127,
                }
            };
            let code = tokio::select! {
                code = run => code,
                Ok(()) = kill_rx => 137,
            };
            let mut streams = streams.lock().expect("fake streams lock");
            streams.alive -= 1;
            if let Some(id) = exec_id {
                streams.killers.remove(&id);
                streams.exit_codes.insert(id, code);
            }
        });
        let output = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (Ok(chunk), rx))
        });
        Attached {
            target,
            input: Box::pin(ours),
            output: Box::pin(output),
        }
    }
}

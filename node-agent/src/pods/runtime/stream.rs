//! Interactive streams into containers, for `kubectl exec` and `kubectl attach`: the types the
//! [`ContainerRuntime`](super::ContainerRuntime) stream calls use, and their Docker
//! implementation (an exec created and started attached, or an attach to the container's
//! main process, both over Docker's hijacked connection).
//!
//! Rules every implementation keeps:
//! - [`Attached::input`] is the process's stdin: shutting it down is the process's stdin EOF
//!   (`kubectl cp` runs `tar` that reads until EOF);
//! - [`Attached::output`] ends when the process (or, for attach, the container) ends; with a
//!   TTY everything arrives as [`Output::Stdout`];
//! - dropping an [`Attached`] closes the connection and leaves the process to run to its end.

use std::{os::fd::OwnedFd, pin::Pin, time::Duration};

use bollard::{
    container::LogOutput,
    exec::{CreateExecOptions, StartExecResults},
    query_parameters::{AttachContainerOptions, ResizeContainerTTYOptions, ResizeExecOptions},
};
use bytes::Bytes;
use futures_util::StreamExt as _;
use serde::Deserialize;
use tokio::io::AsyncWrite;

use super::{RuntimeError, docker::DockerRuntime};

/// How long the exit code of an exec whose output ended may take to show in Docker's inspect.
const EXIT_CODE_WAIT: Duration = Duration::from_secs(2);

/// Which of the process's streams a client wants.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// Pass the client's input to the process's stdin.
    pub stdin: bool,
    /// Pass stdout to the client.
    pub stdout: bool,
    /// Pass stderr to the client (never with `tty`, as the kubelet does).
    pub stderr: bool,
    /// Run under a terminal.
    pub tty: bool,
}

/// A terminal size as clients send it on the resize stream (`{"Width":80,"Height":24}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct TerminalSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub height: u16,
}

/// A chunk of a process's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// From stdout (or the terminal).
    Stdout(Bytes),
    /// From stderr.
    Stderr(Bytes),
}

/// The output of an attached process.
pub type OutputStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<Output, RuntimeError>> + Send>>;

/// What a stream is attached to: resizes and exit codes are asked of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamTarget {
    /// An exec, by the runtime's exec id.
    Exec(String),
    /// A container's main process, by container id.
    Container(String),
}

/// A process the agent is attached to.
pub struct Attached {
    /// What it is.
    pub target: StreamTarget,
    /// Its stdin (a sink that discards when stdin was not asked for).
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
    /// Its output.
    pub output: OutputStream,
}

impl std::fmt::Debug for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attached")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

fn output_of(
    stream: Pin<
        Box<dyn futures_util::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
    >,
) -> OutputStream {
    Box::pin(stream.filter_map(|item| {
        std::future::ready(match item {
            Ok(LogOutput::StdErr { message }) => Some(Ok(Output::Stderr(message))),
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                Some(Ok(Output::Stdout(message)))
            }
            Ok(LogOutput::StdIn { .. }) => None,
            Err(e) => Some(Err(RuntimeError::Engine(e))),
        })
    }))
}

/// An exec's process, pinned by [`super::ContainerRuntime::exec_pin`] so that
/// [`ExecPin::kill`] reaches that process and no other, whatever the runtime says about the
/// exec by then.
#[derive(Debug)]
pub struct ExecPin {
    /// The runtime's exec id.
    pub exec_id: String,
    /// The process (pid on the node, pidfd); `None` for a runtime that kills by exec id (the
    /// fake runtime of the tests).
    process: Option<(i32, OwnedFd)>,
}

impl ExecPin {
    /// A pin that names the exec only (runtimes without processes on this node).
    pub fn by_id(exec_id: String) -> Self {
        Self {
            exec_id,
            process: None,
        }
    }

    /// Sends SIGKILL to the pinned process; `false` when it had already ended (or the pin names
    /// no process).
    pub fn kill(&self) -> Result<bool, RuntimeError> {
        let Some((pid, pidfd)) = &self.process else {
            return Ok(false);
        };
        match pidfd::kill(pidfd) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
            Err(source) => Err(RuntimeError::Kill { pid: *pid, source }),
        }
    }
}

impl DockerRuntime {
    /// Creates an exec of `command` in container `id` and starts it attached.
    pub(super) async fn exec_attached_now(
        &self,
        id: &str,
        command: Vec<String>,
        options: StreamOptions,
    ) -> Result<Attached, RuntimeError> {
        let exec = self
            .docker()
            .create_exec(
                id,
                CreateExecOptions {
                    cmd: Some(command),
                    attach_stdin: Some(options.stdin),
                    attach_stdout: Some(options.stdout),
                    attach_stderr: Some(options.stderr),
                    tty: Some(options.tty),
                    ..CreateExecOptions::default()
                },
            )
            .await
            .map_err(RuntimeError::Engine)?;
        let started = self
            .docker()
            .start_exec(
                &exec.id,
                Some(bollard::exec::StartExecOptions {
                    detach: false,
                    tty: options.tty,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(RuntimeError::Engine)?;
        match started {
            StartExecResults::Attached { output, input } => Ok(Attached {
                target: StreamTarget::Exec(exec.id),
                input,
                output: output_of(output),
            }),
            // Only asked for with `detach: true`.
            StartExecResults::Detached => Ok(Attached {
                target: StreamTarget::Exec(exec.id),
                input: Box::pin(tokio::io::sink()),
                output: Box::pin(futures_util::stream::empty()),
            }),
        }
    }

    /// Attaches to container `id`'s main process.
    pub(super) async fn attach_now(
        &self,
        id: &str,
        options: StreamOptions,
    ) -> Result<Attached, RuntimeError> {
        let attached = self
            .docker()
            .attach_container(
                id,
                Some(AttachContainerOptions {
                    stdin: options.stdin,
                    stdout: options.stdout,
                    stderr: options.stderr,
                    stream: true,
                    logs: false,
                    detach_keys: None,
                }),
            )
            .await
            .map_err(RuntimeError::Engine)?;
        Ok(Attached {
            target: StreamTarget::Container(id.to_owned()),
            input: attached.input,
            output: output_of(attached.output),
        })
    }

    /// Resizes the terminal of `target`.
    pub(super) async fn resize_now(
        &self,
        target: &StreamTarget,
        size: TerminalSize,
    ) -> Result<(), RuntimeError> {
        let (width, height) = (i32::from(size.width), i32::from(size.height));
        match target {
            StreamTarget::Exec(id) => self
                .docker()
                .resize_exec(
                    id,
                    ResizeExecOptions {
                        w: width,
                        h: height,
                    },
                )
                .await
                .map_err(RuntimeError::Engine),
            StreamTarget::Container(id) => self
                .docker()
                .resize_container_tty(
                    id,
                    ResizeContainerTTYOptions {
                        w: width,
                        h: height,
                    },
                )
                .await
                .map_err(RuntimeError::Engine),
        }
    }

    /// Pins exec `id`'s process while Docker shows it running: a pidfd opened before checking
    /// again that the pid is still the exec's, so a pid freed and reused in between is never
    /// pinned. Call it while the exec's streams are still open: once they close, Docker marks
    /// the exec ended (exit code 126) whether or not its process is, and may hold the exec's
    /// lock (its inspect call blocking) while it closes them.
    pub(super) async fn exec_pin_now(&self, id: &str) -> Result<Option<ExecPin>, RuntimeError> {
        let running_pid = async || -> Result<Option<i32>, RuntimeError> {
            let inspect = self
                .docker()
                .inspect_exec(id)
                .await
                .map_err(RuntimeError::Engine)?;
            Ok(match (inspect.running, inspect.pid) {
                (Some(true), Some(pid)) => i32::try_from(pid).ok().filter(|pid| *pid > 0),
                _ => None,
            })
        };
        let Some(pid) = running_pid().await? else {
            return Ok(None);
        };
        let pidfd = match pidfd::open(pid) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(None),
            Err(source) => return Err(RuntimeError::Kill { pid, source }),
        };
        if running_pid().await? != Some(pid) {
            return Ok(None);
        }
        Ok(Some(ExecPin {
            exec_id: id.to_owned(),
            process: Some((pid, pidfd)),
        }))
    }

    /// The exit code of exec `id` whose output ended (`None` while Docker still shows it
    /// running after [`EXIT_CODE_WAIT`]).
    pub(super) async fn exec_exit_code_now(&self, id: &str) -> Result<Option<i64>, RuntimeError> {
        let deadline = tokio::time::Instant::now() + EXIT_CODE_WAIT;
        loop {
            let inspect = self
                .docker()
                .inspect_exec(id)
                .await
                .map_err(RuntimeError::Engine)?;
            if inspect.running != Some(true) {
                return Ok(inspect.exit_code);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Process file descriptors (Linux 5.3+), which name one process whatever happens to its pid.
mod pidfd {
    use std::{
        io,
        os::fd::{FromRawFd as _, OwnedFd},
    };

    /// `pidfd_open(pid, 0)`.
    pub fn open(pid: i32) -> io::Result<OwnedFd> {
        // SAFETY: a plain syscall with integer arguments; on success it returns a new file
        // descriptor that nothing else owns.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
        // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// `pidfd_send_signal(fd, SIGKILL, NULL, 0)`.
    pub fn kill(fd: &OwnedFd) -> io::Result<()> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: a syscall on a file descriptor we own, with a null siginfo (allowed).
        let done = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if done < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_messages_read_as_clients_send_them() {
        let size: TerminalSize =
            serde_json::from_str(r#"{"Width":120,"Height":40}"#).expect("resize JSON");
        assert_eq!(
            size,
            TerminalSize {
                width: 120,
                height: 40
            }
        );
    }
}

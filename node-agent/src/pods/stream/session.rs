//! One exec or attach session, whatever carries it (WebSocket channels or SPDY streams): the
//! client's stdin and terminal sizes go to the process, its output to the client, and the way
//! it ended becomes the status the kubelet writes on the error stream.
//!
//! The transport gives a [`Client`]; [`run`] returns when the process's output ended (the
//! process or the container finished) or when the client vanished. In the second case an
//! exec'd process gets stdin EOF, a moment to finish on its own, then SIGKILL (as containerd's
//! CRI does); an attached container is left running. Nothing of the session stays.

use std::{future::Future, pin::Pin, time::Duration};

use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::{io::AsyncWriteExt as _, sync::mpsc};

use crate::pods::runtime::{
    ContainerRuntime,
    stream::{Output, StreamOptions, StreamTarget, TerminalSize},
};

/// How long a vanished client's process gets to take its stdin EOF before the connection to
/// the runtime closes.
const EOF_GRACE: Duration = Duration::from_secs(1);

/// What to attach the client to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Run `command` in container `container_id`.
    Exec {
        /// The runtime's container id.
        container_id: String,
        /// The command and its arguments.
        command: Vec<String>,
    },
    /// The main process of container `container_id`.
    Attach {
        /// The runtime's container id.
        container_id: String,
    },
}

/// The client's side of a session, as its transport delivers it.
pub struct Client {
    /// The client's stdin (`None` when not asked for); the channel closing is stdin EOF.
    pub stdin: Option<mpsc::Receiver<Bytes>>,
    /// Terminal sizes (`None` without a terminal).
    pub resize: Option<mpsc::Receiver<TerminalSize>>,
    /// Where the process's output goes; a send failing means the client is gone.
    pub output: mpsc::Sender<Output>,
    /// Resolves when the client's connection is gone.
    pub gone: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("stdin", &self.stdin.is_some())
            .field("resize", &self.resize.is_some())
            .finish_non_exhaustive()
    }
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The exec'd command exited with this code.
    Exited(i64),
    /// The attached container's output ended.
    Detached,
    /// The runtime failed; the text is the kubelet's (`error executing command in container: ...`).
    Failed(String),
    /// The client vanished.
    Gone,
}

/// Runs a session: starts `start` with `options` and passes bytes both ways until the output
/// ends or the client is gone.
pub async fn run(
    runtime: &dyn ContainerRuntime,
    start: &Start,
    options: StreamOptions,
    client: Client,
) -> Ending {
    let Client {
        stdin,
        resize,
        output,
        mut gone,
    } = client;
    let started = match start {
        Start::Exec {
            container_id,
            command,
        } => runtime
            .exec_attached(container_id, command.clone(), options)
            .await
            .map_err(|e| {
                format!(
                    "error executing command in container: {}",
                    crate::error_chain(&e)
                )
            }),
        Start::Attach { container_id } => runtime
            .attach(container_id, options)
            .await
            .map_err(|e| format!("error attaching to container: {}", crate::error_chain(&e))),
    };
    let (target, mut input, mut process_output) = match started {
        Ok(attached) => (attached.target, attached.input, attached.output),
        Err(message) => return Ending::Failed(message),
    };
    let has_stdin = stdin.is_some();
    // An exec'd process's stdin ends with the client's. A container's main process keeps its
    // stdin when one attached client's ends (and Docker would end the whole attach); Docker
    // itself closes it when the attach goes for a `stdinOnce` container (created StdinOnce).
    let close_stdin = matches!(start, Start::Exec { .. });
    let finished = {
        let input = &mut input;
        let target = &target;
        let feed_stdin = async move {
            if let Some(mut stdin) = stdin {
                while let Some(chunk) = stdin.recv().await {
                    if input.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                if close_stdin {
                    let _ = input.shutdown().await;
                }
            }
            std::future::pending::<()>().await;
        };
        let follow_resizes = async move {
            if let Some(mut resize) = resize {
                while let Some(size) = resize.recv().await {
                    if let Err(error) = runtime.resize(target, size).await {
                        tracing::debug!(error = %crate::error_chain(&error), "resize");
                    }
                }
            }
            std::future::pending::<()>().await;
        };
        let pass_output = async {
            while let Some(chunk) = process_output.next().await {
                match chunk {
                    Ok(chunk) => {
                        if output.send(chunk).await.is_err() {
                            return false;
                        }
                    }
                    Err(error) => {
                        tracing::debug!(error = %crate::error_chain(&error), "output stream");
                        break;
                    }
                }
            }
            true
        };
        tokio::select! {
            biased;
            () = &mut gone => false,
            done = pass_output => done,
            () = feed_stdin => false,
            () = follow_resizes => false,
        }
    };
    if !finished {
        // Nobody reads the process's output any more: an exec'd process that does not end on
        // its stdin EOF would block on its next write for ever. containerd's CRI kills the exec
        // of a vanished client; so does keelson, after a grace for ending on its own. The
        // process is pinned first, while the runtime's streams are open (see `exec_pin`).
        let pin = match &target {
            StreamTarget::Exec(id) => match runtime.exec_pin(id).await {
                Ok(pin) => pin,
                Err(error) => {
                    tracing::warn!(exec = %id, error = %crate::error_chain(&error), "exec pin");
                    None
                }
            },
            StreamTarget::Container(_) => None,
        };
        drop(output);
        drop(process_output);
        if has_stdin {
            let _ = tokio::time::timeout(EOF_GRACE, input.shutdown()).await;
        }
        drop(input);
        if let Some(pin) = pin {
            if has_stdin {
                tokio::time::sleep(EOF_GRACE).await;
            }
            match runtime.exec_kill(&pin) {
                Ok(true) => {
                    tracing::debug!(exec = %pin.exec_id, "killed the exec of a vanished client");
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(
                    exec = %pin.exec_id,
                    error = %crate::error_chain(&error),
                    "exec kill"
                ),
            }
        }
        return Ending::Gone;
    }
    drop(output);
    drop(process_output);
    match &target {
        StreamTarget::Exec(id) => match runtime.exec_exit_code(id).await {
            Ok(Some(code)) => Ending::Exited(code),
            Ok(None) => Ending::Failed(
                "error executing command in container: the runtime did not report the exit code"
                    .to_owned(),
            ),
            Err(e) => Ending::Failed(format!(
                "error executing command in container: {}",
                crate::error_chain(&e)
            )),
        },
        StreamTarget::Container(_) => Ending::Detached,
    }
}

/// `metav1.Status` with its fields in Go's order, as the kubelet marshals it.
#[derive(Debug, serde::Serialize)]
struct Status<'a> {
    metadata: Empty,
    status: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Details>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
}

/// An empty `metadata`.
#[derive(Debug, serde::Serialize)]
struct Empty {}

/// `metav1.StatusDetails`, with the causes only.
#[derive(Debug, serde::Serialize)]
struct Details {
    causes: Vec<Cause>,
}

/// `metav1.StatusCause` (its `Type` is `reason` in JSON).
#[derive(Debug, serde::Serialize)]
struct Cause {
    #[serde(skip_serializing_if = "str::is_empty")]
    reason: &'static str,
    message: String,
}

/// The status the v4/v5 protocols write on the error stream, as the kubelet marshals its
/// `metav1.Status` (`None` when the client is gone).
pub fn status_json(ending: &Ending, command: &[String]) -> Option<Vec<u8>> {
    let mut status = Status {
        metadata: Empty {},
        status: "Failure",
        message: "",
        reason: "",
        details: None,
        code: None,
    };
    let message;
    match ending {
        Ending::Exited(0) | Ending::Detached => status.status = "Success",
        Ending::Exited(code) => {
            message = format!(
                "command terminated with non-zero exit code: {}",
                exit_error(command, *code)
            );
            status.message = &message;
            status.reason = "NonZeroExitCode";
            status.details = Some(Details {
                causes: vec![Cause {
                    reason: "ExitCode",
                    message: code.to_string(),
                }],
            });
        }
        Ending::Failed(cause) => {
            message = format!("Internal error occurred: {cause}");
            status.message = &message;
            status.reason = "InternalError";
            status.details = Some(Details {
                causes: vec![Cause {
                    reason: "",
                    message: cause.clone(),
                }],
            });
            status.code = Some(500);
        }
        Ending::Gone => return None,
    }
    serde_json::to_vec(&status).ok()
}

/// What the protocols before v4 write on the error stream: the message of a failure, nothing
/// on success.
pub fn status_text(ending: &Ending, command: &[String]) -> Option<Vec<u8>> {
    match ending {
        Ending::Exited(0) | Ending::Detached | Ending::Gone => None,
        Ending::Exited(code) => Some(
            format!(
                "command terminated with non-zero exit code: {}",
                exit_error(command, *code)
            )
            .into_bytes(),
        ),
        Ending::Failed(message) => Some(format!("Internal error occurred: {message}").into_bytes()),
    }
}

/// The CRI runtime's exit error text (containerd: `error executing command [sh -c exit 3],
/// exit code 3`; the command as Go prints a string slice).
fn exit_error(command: &[String], code: i64) -> String {
    format!(
        "error executing command [{}], exit code {code}",
        command.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_the_kubelet_writes_them() {
        let command = ["sh", "-c", "exit 3"].map(str::to_owned);
        let cases = [
            (Ending::Exited(0), r#"{"metadata":{},"status":"Success"}"#),
            (Ending::Detached, r#"{"metadata":{},"status":"Success"}"#),
            (
                Ending::Exited(3),
                r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#,
            ),
            (
                Ending::Failed("error executing command in container: boom".into()),
                r#"{"metadata":{},"status":"Failure","message":"Internal error occurred: error executing command in container: boom","reason":"InternalError","details":{"causes":[{"message":"error executing command in container: boom"}]},"code":500}"#,
            ),
        ];
        for (ending, want) in cases {
            let got = status_json(&ending, &command).expect("a status");
            assert_eq!(String::from_utf8(got).expect("UTF-8"), want, "{ending:?}");
        }
        assert_eq!(status_json(&Ending::Gone, &command), None);
        assert_eq!(status_text(&Ending::Exited(0), &command), None);
        assert_eq!(
            status_text(&Ending::Exited(3), &command).map(String::from_utf8),
            Some(Ok(
                "command terminated with non-zero exit code: error executing command \
                 [sh -c exit 3], exit code 3"
                    .to_owned()
            ))
        );
    }
}

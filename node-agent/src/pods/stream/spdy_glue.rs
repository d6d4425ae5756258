//! The SPDY side of the streaming endpoints, over the SPDY session of `spdy/`
//! (`spdy::serve(io) -> (SpdyConnection, mpsc::Receiver<SpdyStream>)`).
//!
//! Exec and attach (the kubelet's `remotecommand/httpstream.go`): the client opens one stream
//! per `streamtype` (`error`, and `stdin`, `stdout`, `stderr`, `resize` as asked); the server
//! waits up to 30 s for all of them, runs the session, closes stdout and stderr, writes the
//! status on the error stream (JSON from v4, the message alone before) and closes.
//! Port-forward (`portforward/httpstream.go`): per forwarded connection a `data` and an
//! `error` stream with the same `requestid` and `port`; a pair incomplete after 30 s is
//! dropped with the kubelet's message.

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::mpsc,
    task::JoinSet,
    time::Instant,
};

use super::{
    AsyncIo,
    dial::Forwarder,
    session::{self, Client, Ending, Start},
    spdy::{self, SpdyStream},
};
use crate::pods::runtime::{
    ContainerRuntime,
    stream::{Output, StreamOptions, TerminalSize},
};

/// How long the client has to open the streams it announced (the kubelet's
/// `streamCreationTimeout`).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a stream is read at once.
const CHUNK: usize = 32 * 1024;

#[derive(Default)]
struct ExecStreams {
    error: Option<SpdyStream>,
    stdin: Option<SpdyStream>,
    stdout: Option<SpdyStream>,
    stderr: Option<SpdyStream>,
    resize: Option<SpdyStream>,
}

/// Serves an exec or attach session over SPDY.
pub async fn serve_exec(
    io: Box<dyn AsyncIo>,
    protocol: &'static str,
    runtime: Arc<dyn ContainerRuntime>,
    start: Start,
    options: StreamOptions,
) {
    let (connection, mut incoming) = spdy::serve(io);
    let json_status = protocol == "v4.channel.k8s.io";
    let resizable = matches!(protocol, "v4.channel.k8s.io" | "v3.channel.k8s.io");
    let expected = 1
        + usize::from(options.stdin)
        + usize::from(options.stdout)
        + usize::from(options.stderr)
        + usize::from(options.tty && resizable);
    let mut streams = ExecStreams::default();
    let mut received = 0;
    let deadline = tokio::time::sleep(STREAM_CREATION_TIMEOUT);
    tokio::pin!(deadline);
    while received < expected {
        tokio::select! {
            stream = incoming.recv() => {
                let Some(stream) = stream else { return };
                let slot = match stream.header("streamtype") {
                    Some("error") => &mut streams.error,
                    Some("stdin") => &mut streams.stdin,
                    Some("stdout") => &mut streams.stdout,
                    Some("stderr") => &mut streams.stderr,
                    Some("resize") => &mut streams.resize,
                    other => {
                        tracing::debug!(?other, "unexpected stream type");
                        stream.reset();
                        continue;
                    }
                };
                *slot = Some(stream);
                received += 1;
            }
            () = &mut deadline => {
                tracing::debug!("timed out waiting for client to create streams");
                connection.close();
                return;
            }
        }
    }

    // The client's stdin and terminal sizes, read from their streams.
    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(8);
    let (resize_tx, resize_rx) = mpsc::channel::<TerminalSize>(4);
    let has_stdin = streams.stdin.is_some();
    let has_resize = streams.resize.is_some();
    let mut stdin_stream = streams.stdin.take();
    let mut resize_stream = streams.resize.take();
    let read_stdin = async {
        if let Some(stream) = &mut stdin_stream {
            let mut buffer = vec![0u8; CHUNK];
            loop {
                match stream.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if stdin_tx
                            .send(Bytes::copy_from_slice(&buffer[..n]))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        }
        // Dropping the sender is the process's stdin EOF.
        drop(stdin_tx);
        std::future::pending::<()>().await;
    };
    let read_resizes = async {
        if let Some(stream) = &mut resize_stream {
            let mut pending = Vec::new();
            let mut buffer = vec![0u8; 1024];
            while let Ok(n) = stream.read(&mut buffer).await {
                if n == 0 {
                    break;
                }
                pending.extend_from_slice(&buffer[..n]);
                let mut sizes =
                    serde_json::Deserializer::from_slice(&pending).into_iter::<TerminalSize>();
                let mut used = 0;
                while let Some(Ok(size)) = sizes.next() {
                    used = sizes.byte_offset();
                    if resize_tx.send(size).await.is_err() {
                        break;
                    }
                }
                pending.drain(..used);
            }
        }
        std::future::pending::<()>().await;
    };

    // The process's output, written to its streams.
    let (out_tx, mut out_rx) = mpsc::channel::<Output>(16);
    let mut stdout = streams.stdout.take();
    let mut stderr = streams.stderr.take();
    let write_output = async {
        while let Some(chunk) = out_rx.recv().await {
            let (stream, data) = match chunk {
                Output::Stdout(data) => (&mut stdout, data),
                Output::Stderr(data) => (&mut stderr, data),
            };
            if let Some(stream) = stream
                && stream.write_all(&data).await.is_err()
            {
                return;
            }
        }
    };
    let client = Client {
        stdin: has_stdin.then_some(stdin_rx),
        resize: has_resize.then_some(resize_rx),
        output: out_tx,
        gone: Box::pin({
            let connection = connection.clone();
            async move { connection.closed().await }
        }),
    };
    let run = session::run(&*runtime, &start, options, client);
    let ending = tokio::select! {
        (ending, ()) = async { tokio::join!(run, write_output) } => ending,
        () = read_stdin => Ending::Gone,
        () = read_resizes => Ending::Gone,
    };
    // Every stream ends with a FIN (a stream dropped without one is reset).
    for stream in [
        &mut stdout,
        &mut stderr,
        &mut stdin_stream,
        &mut resize_stream,
    ]
    .into_iter()
    .flatten()
    {
        let _ = stream.shutdown().await;
    }
    let command = match &start {
        Start::Exec { command, .. } => command.clone(),
        Start::Attach { .. } => Vec::new(),
    };
    let status = if json_status {
        session::status_json(&ending, &command)
    } else {
        session::status_text(&ending, &command)
    };
    if let Some(mut error) = streams.error.take() {
        if let Some(status) = status {
            let _ = error.write_all(&status).await;
        }
        let _ = error.shutdown().await;
    }
    connection.close();
}

/// A forwarded connection's streams as they arrive.
struct Pair {
    port: u16,
    data: Option<SpdyStream>,
    error: Option<SpdyStream>,
    since: Instant,
}

/// Serves port-forward over SPDY: each complete (data, error) pair is one connection into the
/// pod; the session lasts until the client closes it.
pub async fn serve_port_forward(io: Box<dyn AsyncIo>, forwarder: Forwarder) {
    let (connection, mut incoming) = spdy::serve(io);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut forwards = JoinSet::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            () = connection.closed() => break,
            stream = incoming.recv() => {
                let Some(mut stream) = stream else { break };
                let port = match stream.header("port").map(str::parse::<u16>) {
                    Some(Ok(port)) if port > 0 => port,
                    _ => {
                        stream.reset();
                        continue;
                    }
                };
                let kind = stream.header("streamtype").map(str::to_owned);
                let id = match stream.header("requestid") {
                    Some(id) if !id.is_empty() => id.to_owned(),
                    // Clients before request ids open error then data, one connection at a
                    // time: the kubelet pairs them by stream id.
                    _ if kind.as_deref() == Some("data") => stream.id().saturating_sub(2).to_string(),
                    _ => stream.id().to_string(),
                };
                let pair = pairs.entry(id.clone()).or_insert_with(|| Pair {
                    port,
                    data: None,
                    error: None,
                    since: Instant::now(),
                });
                let slot = match kind.as_deref() {
                    Some("data") => &mut pair.data,
                    Some("error") => &mut pair.error,
                    _ => {
                        stream.reset();
                        continue;
                    }
                };
                if slot.is_some() {
                    let message = format!(
                        "error processing stream for request {id}: {} stream already assigned",
                        kind.as_deref().unwrap_or_default()
                    );
                    let _ = stream.write_all(message.as_bytes()).await;
                    stream.reset();
                    continue;
                }
                *slot = Some(stream);
                if pair.data.is_some() && pair.error.is_some()
                    && let Some(Pair { port, data: Some(data), error: Some(error), .. }) =
                        pairs.remove(&id)
                {
                    forwards.spawn(forward(forwarder.clone(), port, data, error));
                }
            }
            Some(_) = forwards.join_next(), if !forwards.is_empty() => {}
            _ = sweep.tick() => {
                let now = Instant::now();
                let stale: Vec<String> = pairs
                    .iter()
                    .filter(|(_, p)| now.duration_since(p.since) >= STREAM_CREATION_TIMEOUT)
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in stale {
                    if let Some(pair) = pairs.remove(&id) {
                        if let Some(mut error) = pair.error {
                            let message = format!("(conn=spdy, request={id}) timed out waiting for streams");
                            let _ = error.write_all(message.as_bytes()).await;
                            let _ = error.shutdown().await;
                        }
                        if let Some(data) = pair.data {
                            data.reset();
                        }
                    }
                }
            }
        }
    }
    forwards.abort_all();
    connection.close();
}

/// One forwarded connection: bytes both ways until the pod's side ends (then the data stream's
/// FIN and the error stream's end, as containerd's port-forward returns once the container's
/// side is done: kubectl 1.27-1.30 wait for the error stream's end before closing the local
/// connection), or the kubelet's message on the error stream when the port cannot be reached.
async fn forward(forwarder: Forwarder, port: u16, data: SpdyStream, mut error: SpdyStream) {
    let (mut data_read, mut data_write) = tokio::io::split(data);
    match forwarder.connect(port).await {
        Ok(connection) => {
            let (mut pod_read, mut pod_write) = connection.into_split();
            let upload = async {
                let _ = tokio::io::copy(&mut data_read, &mut pod_write).await;
                // The client is done sending: the pod reads its end, then answers and closes.
                let _ = pod_write.shutdown().await;
                std::future::pending::<()>().await;
            };
            let download = async {
                let _ = tokio::io::copy(&mut pod_read, &mut data_write).await;
            };
            tokio::select! {
                () = download => {}
                () = upload => {}
            }
        }
        Err(message) => {
            tracing::debug!(%message, "port-forward");
            let _ = error.write_all(message.as_bytes()).await;
        }
    }
    let _ = data_write.shutdown().await;
    let _ = error.shutdown().await;
}

#[cfg(test)]
#[path = "spdy_glue_tests.rs"]
mod tests;

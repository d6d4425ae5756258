//! The WebSocket channel protocols (`channel.k8s.io` and its `base64.`, `v4.` and `v5.`
//! forms): every message starts with its channel, 0 stdin, 1 stdout, 2 stderr, 3 error
//! (status), 4 resize; for port-forward a data and an error channel per port. `v5` adds the
//! CLOSE channel 255 (`[255, 0]`: the client's stdin ended). The base64 forms send text
//! messages whose first character is the channel digit. Also [`WsIo`]: the binary messages of a
//! WebSocket as a byte stream, for SPDY tunnelled in WebSocket (kubectl 1.31+ port-forward).

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use base64::Engine as _;
use bytes::{Buf as _, Bytes};
use futures_util::{Sink, SinkExt as _, Stream, StreamExt as _};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf},
    sync::{mpsc, oneshot},
    task::JoinHandle,
};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};

use super::{
    dial::Forwarder,
    session::{self, Client, Ending, Start},
};
use crate::pods::runtime::{
    ContainerRuntime,
    stream::{Output, StreamOptions, TerminalSize},
};

/// The close frame the server ends a session with: code 1000 (normal closure), as the
/// kubelet's (gorilla's) `FormatCloseMessage(CloseNormalClosure, "")`. client-go treats any
/// other close, an empty one (1005) included, as an error on every stream, the error stream
/// with the exit status too.
pub fn normal_close() -> Message {
    Message::Close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "".into(),
    }))
}

/// The v5 channel on which a client closes one of its channels.
const CLOSE_CHANNEL: u8 = 255;
/// How long a finished session waits for the client's half of the closing handshake (so the
/// last frames are not lost to a reset).
const CLOSE_WAIT: Duration = Duration::from_secs(2);
/// How much of a forwarded connection is read at once.
const FORWARD_CHUNK: usize = 32 * 1024;

/// A negotiated channel protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsProtocol {
    /// Its name (`""` when the client asked for none).
    pub name: &'static str,
    /// Text messages, base64 after the channel digit.
    pub base64: bool,
    /// The error channel carries a JSON `Status` (v4 and later) rather than a message.
    pub json_status: bool,
    /// The client may close channels (v5).
    pub close_channel: bool,
}

const fn protocol(
    name: &'static str,
    base64: bool,
    json_status: bool,
    close_channel: bool,
) -> WsProtocol {
    WsProtocol {
        name,
        base64,
        json_status,
        close_channel,
    }
}

/// The channel protocols served for exec and attach, the newest first.
pub const EXEC_PROTOCOLS: [WsProtocol; 6] = [
    protocol("v5.channel.k8s.io", false, true, true),
    protocol("v4.channel.k8s.io", false, true, false),
    protocol("v4.base64.channel.k8s.io", true, true, false),
    protocol("channel.k8s.io", false, false, false),
    protocol("base64.channel.k8s.io", true, false, false),
    protocol("", false, false, false),
];

/// The channel protocols served for port-forward.
pub const PORT_FORWARD_PROTOCOLS: [WsProtocol; 4] = [
    protocol("v4.channel.k8s.io", false, true, false),
    protocol("v4.base64.channel.k8s.io", true, true, false),
    protocol("portforward.k8s.io", false, true, false),
    protocol("", false, false, false),
];

/// The protocol of SPDY tunnelled in WebSocket binary messages (kubectl 1.31+ port-forward).
pub const SPDY_TUNNEL_PORT_FORWARD: &str = "SPDY/3.1+portforward.k8s.io";

/// Picks the first protocol the client lists that `served` has (the client's order, as the
/// kubelet's WebSocket handshake does); no protocol asked for means `""`.
pub fn choose(client: &[String], served: &[WsProtocol]) -> Option<WsProtocol> {
    if client.is_empty() {
        return served.iter().find(|p| p.name.is_empty()).copied();
    }
    client
        .iter()
        .find_map(|asked| served.iter().find(|p| p.name == asked).copied())
}

/// One message on `channel`.
pub fn encode(protocol: WsProtocol, channel: u8, data: &[u8]) -> Message {
    if protocol.base64 {
        let mut text = String::with_capacity(1 + data.len().div_ceil(3) * 4);
        text.push(char::from(b'0' + channel));
        base64::engine::general_purpose::STANDARD.encode_string(data, &mut text);
        Message::text(text)
    } else {
        let mut frame = Vec::with_capacity(1 + data.len());
        frame.push(channel);
        frame.extend_from_slice(data);
        Message::binary(frame)
    }
}

/// The channel and payload of a data message (`None` for control messages and malformed ones).
pub fn decode(protocol: WsProtocol, message: Message) -> Option<(u8, Bytes)> {
    match message {
        Message::Binary(mut data) if !protocol.base64 && !data.is_empty() => {
            let channel = data[0];
            data.advance(1);
            Some((channel, data))
        }
        Message::Text(text) if protocol.base64 && !text.is_empty() => {
            let bytes = text.as_bytes();
            let channel = bytes[0].checked_sub(b'0')?;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(&bytes[1..])
                .ok()?;
            Some((channel, Bytes::from(decoded)))
        }
        // The kubelet reads text frames like binary ones (Go's `websocket.Message.Receive`):
        // the Python client sends `str` stdin as text, the channel byte first.
        Message::Text(text) if !protocol.base64 && !text.is_empty() => {
            let mut data = Bytes::from(text);
            let channel = data[0];
            data.advance(1);
            Some((channel, data))
        }
        _ => None,
    }
}

/// Aborts a task when dropped.
#[derive(Debug)]
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves an exec or attach session over an upgraded WebSocket until the process ends (then
/// the status and a close) or the client goes.
pub async fn serve_exec<S>(
    ws: WebSocketStream<S>,
    protocol: WsProtocol,
    runtime: Arc<dyn ContainerRuntime>,
    start: Start,
    options: StreamOptions,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let (stdin_tx, stdin_rx) = channel_if::<Bytes>(options.stdin, 8);
    let (resize_tx, resize_rx) = channel_if::<TerminalSize>(options.tty, 4);
    let (gone_tx, gone_rx) = oneshot::channel::<()>();
    let (done_tx, done_rx) = oneshot::channel::<()>();
    let reader = AbortOnDrop(tokio::spawn(async move {
        let _gone = gone_tx;
        let _done = done_tx;
        let mut stdin = stdin_tx;
        loop {
            let message = match stream.next().await {
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    tracing::debug!(%error, "exec stream: the client's side failed");
                    break;
                }
                None => {
                    tracing::debug!("exec stream: the client's side ended");
                    break;
                }
            };
            let Some((channel, data)) = decode(protocol, message) else {
                continue;
            };
            match channel {
                0 => {
                    if let Some(tx) = &stdin
                        && tx.send(data).await.is_err()
                    {
                        stdin = None;
                    }
                }
                4 => {
                    if let (Some(tx), Ok(size)) =
                        (&resize_tx, serde_json::from_slice::<TerminalSize>(&data))
                    {
                        let _ = tx.send(size).await;
                    }
                }
                CLOSE_CHANNEL if protocol.close_channel && data.first() == Some(&0) => {
                    stdin = None;
                }
                _ => {}
            }
        }
    }));
    let (out_tx, mut out_rx) = mpsc::channel::<Output>(16);
    let (ending_tx, ending_rx) = oneshot::channel::<Ending>();
    let command = match &start {
        Start::Exec { command, .. } => command.clone(),
        Start::Attach { .. } => Vec::new(),
    };
    let client = Client {
        stdin: stdin_rx,
        resize: resize_rx,
        output: out_tx,
        gone: Box::pin(async move {
            let _ = gone_rx.await;
        }),
    };
    let run = async {
        let ending = session::run(&*runtime, &start, options, client).await;
        let _ = ending_tx.send(ending);
    };
    let write = async {
        // Like the kubelet: an empty message on the first channel written tells the client the
        // session is up.
        let first = if options.stdout {
            1
        } else if options.stderr {
            2
        } else {
            3
        };
        if sink.send(encode(protocol, first, &[])).await.is_err() {
            return;
        }
        while let Some(chunk) = out_rx.recv().await {
            let (channel, data) = match chunk {
                Output::Stdout(data) => (1, data),
                Output::Stderr(data) => (2, data),
            };
            if sink.send(encode(protocol, channel, &data)).await.is_err() {
                return;
            }
        }
        let Ok(ending) = ending_rx.await else { return };
        let status = if protocol.json_status {
            session::status_json(&ending, &command)
        } else {
            session::status_text(&ending, &command)
        };
        if let Some(status) = status
            && sink.send(encode(protocol, 3, &status)).await.is_err()
        {
            return;
        }
        let _ = sink.send(normal_close()).await;
        let _ = sink.close().await;
    };
    tokio::join!(run, write);
    let _ = tokio::time::timeout(CLOSE_WAIT, done_rx).await;
    drop(reader);
}

fn channel_if<T>(
    wanted: bool,
    size: usize,
) -> (Option<mpsc::Sender<T>>, Option<mpsc::Receiver<T>>) {
    if wanted {
        let (tx, rx) = mpsc::channel(size);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    }
}

/// Serves port-forward over an upgraded WebSocket: one connection per port of `ports`, data
/// on channel `2i` and errors on `2i+1`, both first carrying the port (two bytes, little
/// endian). The session ends when every connection has ended or the client goes.
pub async fn serve_port_forward<S>(
    ws: WebSocketStream<S>,
    protocol: WsProtocol,
    forwarder: Forwarder,
    ports: Vec<u16>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let mut inputs = Vec::with_capacity(ports.len());
    let mut receivers = Vec::with_capacity(ports.len());
    for _ in &ports {
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        inputs.push(Some(tx));
        receivers.push(rx);
    }
    let (gone_tx, mut gone_rx) = oneshot::channel::<()>();
    let reader = AbortOnDrop(tokio::spawn(async move {
        let _gone = gone_tx;
        while let Some(Ok(message)) = stream.next().await {
            let Some((channel, data)) = decode(protocol, message) else {
                continue;
            };
            let index = usize::from(channel / 2);
            if channel % 2 == 0
                && let Some(slot) = inputs.get_mut(index)
                && let Some(tx) = slot
                && tx.send(data).await.is_err()
            {
                *slot = None;
            }
        }
    }));
    let (out_tx, mut out_rx) = mpsc::channel::<(u8, Bytes)>(16);
    let forwards = futures_util::future::join_all(ports.iter().zip(receivers).enumerate().map(
        |(index, (&port, input))| {
            let out = out_tx.clone();
            let forwarder = &forwarder;
            async move {
                let data = (index * 2) as u8;
                let prefix = Bytes::copy_from_slice(&port.to_le_bytes());
                if out.send((data, prefix.clone())).await.is_err()
                    || out.send((data + 1, prefix)).await.is_err()
                {
                    return;
                }
                match forwarder.connect(port).await {
                    Ok(connection) => forward_messages(connection, input, &out, data).await,
                    Err(message) => {
                        tracing::debug!(%message, "port-forward");
                        let _ = out.send((data + 1, Bytes::from(message))).await;
                    }
                }
            }
        },
    ));
    drop(out_tx);
    let run = async {
        tokio::select! {
            _ = &mut gone_rx => {}
            _ = forwards => {}
        }
    };
    let write = async {
        while let Some((channel, data)) = out_rx.recv().await {
            if sink.send(encode(protocol, channel, &data)).await.is_err() {
                return;
            }
        }
        let _ = sink.send(normal_close()).await;
        let _ = sink.close().await;
    };
    tokio::join!(run, write);
    let _ = tokio::time::timeout(CLOSE_WAIT, gone_rx).await;
    drop(reader);
}

/// Copies between one forwarded connection and its channel until the pod's side ends.
async fn forward_messages(
    connection: tokio::net::TcpStream,
    mut input: mpsc::Receiver<Bytes>,
    out: &mpsc::Sender<(u8, Bytes)>,
    channel: u8,
) {
    let (mut from_pod, mut to_pod) = connection.into_split();
    let upstream = async {
        while let Some(chunk) = input.recv().await {
            if to_pod.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to_pod.shutdown().await;
        std::future::pending::<()>().await;
    };
    let downstream = async {
        let mut buffer = vec![0u8; FORWARD_CHUNK];
        loop {
            match from_pod.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if out
                        .send((channel, Bytes::copy_from_slice(&buffer[..n])))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

/// A WebSocket's binary messages as a byte stream: reads yield their payloads in order (other
/// messages are skipped; a close is the end), each write is sent as one binary message.
#[derive(Debug)]
pub struct WsIo<S> {
    ws: WebSocketStream<S>,
    pending: Bytes,
    close_sent: bool,
}

impl<S> WsIo<S> {
    /// Wraps an upgraded WebSocket.
    pub fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            pending: Bytes::new(),
            close_sent: false,
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => this.pending = data,
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                Some(Ok(_)) => {}
                Some(Err(error)) => return Poll::Ready(Err(io::Error::other(error))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(io::Error::other)?;
        Pin::new(&mut this.ws)
            .start_send(Message::binary(Bytes::copy_from_slice(buf)))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws)
            .poll_flush(cx)
            .map_err(io::Error::other)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(io::Error::other)?;
            Pin::new(&mut this.ws)
                .start_send(normal_close())
                .map_err(io::Error::other)?;
            this.close_sent = true;
        }
        Pin::new(&mut this.ws)
            .poll_close(cx)
            .map_err(io::Error::other)
    }
}

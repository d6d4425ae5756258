//! The kubelet's streaming endpoints, which the API server relays `pods/exec`, `pods/attach`
//! and `pods/portforward` to (the request as it came, then raw bytes both ways):
//!
//! - `GET|POST /exec/{namespace}/{pod}/{container}?command=..&stdin=1&stdout=1&stderr=1&tty=1`
//! - `GET|POST /attach/{namespace}/{pod}/{container}?stdin=1&stdout=1&stderr=1&tty=1`
//! - `GET|POST /portForward/{namespace}/{pod}` (WebSocket: `?port=80`, the API server's
//!   `ports=80` too)
//!
//! The protocol follows the request's headers, as the kubelet's does: `Upgrade: websocket` with
//! a channel protocol ([`ws`]), SPDY tunnelled in WebSocket for port-forward
//! ([`ws::SPDY_TUNNEL_PORT_FORWARD`]), or `Upgrade: SPDY/3.1` with `X-Stream-Protocol-Version`.
//! Errors found before the upgrade are HTTP answers in the kubelet's words (`pod does not
//! exist`, `container not found ("x")`); after it they travel on the error stream.

pub mod dial;
pub mod idle;
pub mod session;
pub mod spdy;
// SPDY/3.1 sessions (plain or tunnelled in WebSocket) mapped onto exec, attach and
// port-forward.
mod spdy_glue;
pub mod ws;

use std::sync::Arc;

use axum::{
    Router,
    body::Body,
    extract::{Path, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{handshake::derive_accept_key, protocol::Role},
};

use self::{
    dial::{Forwarder, PodDialer},
    idle::IdleIo,
    session::Start,
    ws::WsProtocol,
};
use super::runtime::{ContainerRuntime, SANDBOX, stream::StreamOptions};

/// The SPDY protocols served for exec and attach, in the kubelet's order of preference.
pub const SPDY_EXEC_PROTOCOLS: [&str; 4] = [
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];
/// The SPDY protocol of port-forward.
pub const SPDY_PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";
/// The header SPDY clients offer their protocols in, and the server answers its choice in.
pub const STREAM_PROTOCOL_HEADER: &str = "x-stream-protocol-version";

/// A byte stream a SPDY session runs over: the upgraded connection, or a WebSocket's binary
/// messages.
pub trait AsyncIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> AsyncIo for T {}

/// What the streaming endpoints need.
#[derive(Debug, Clone)]
pub struct StreamState {
    /// The container runtime.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// How port-forward connects inside pods.
    pub dialer: Arc<dyn PodDialer>,
    /// How long a streaming connection may stay idle (`--streaming-connection-idle-timeout`;
    /// zero: no limit).
    pub idle_timeout: std::time::Duration,
}

/// The streaming routes (the connection they are served on needs hyper's upgrades).
pub fn router(state: StreamState) -> Router {
    use axum::routing::get;
    Router::new()
        .route("/exec/{namespace}/{pod}/{container}", get(exec).post(exec))
        .route(
            "/attach/{namespace}/{pod}/{container}",
            get(attach).post(attach),
        )
        .route(
            "/portForward/{namespace}/{pod}",
            get(port_forward).post(port_forward),
        )
        .with_state(state)
}

/// A request refused before the upgrade: the status and the kubelet's plain-text message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    status: StatusCode,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.status, self.message).into_response()
    }
}

fn text(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

/// The query's pairs, decoded (`command` repeats).
fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(byte) = hex {
                    out.push(byte);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The stream options of an exec or attach request, as the kubelet reads them: `input`,
/// `output`, `error` and `tty` (what the API server sends), or the `stdin`, `stdout` and
/// `stderr` of the API's own query; `1` or `true` is true; a TTY has no separate stderr.
fn stream_options(query: &[(String, String)]) -> Result<StreamOptions, String> {
    let flag = |keys: &[&str]| {
        query
            .iter()
            .any(|(k, v)| keys.contains(&k.as_str()) && (v == "1" || v == "true"))
    };
    let tty = flag(&["tty"]);
    let options = StreamOptions {
        stdin: flag(&["input", "stdin"]),
        stdout: flag(&["output", "stdout"]),
        stderr: flag(&["error", "stderr"]) && !tty,
        tty,
    };
    if !options.stdin && !options.stdout && !options.stderr {
        return Err("you must specify at least 1 of stdin, stdout, stderr".to_owned());
    }
    Ok(options)
}

/// The ports of a WebSocket port-forward request (`port`, the API server's `ports` too; each
/// may hold a comma-separated list).
fn forward_ports(query: &[(String, String)]) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for (_, value) in query.iter().filter(|(k, _)| k == "port" || k == "ports") {
        if value.is_empty() {
            return Err("query parameter \"port\" cannot be empty".to_owned());
        }
        for part in value.split(',') {
            let port: u16 = part
                .parse()
                .map_err(|_| format!("unable to parse \"{value}\" as a port"))?;
            if port == 0 {
                return Err(format!("port \"{value}\" must be > 0"));
            }
            ports.push(port);
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".to_owned());
    }
    Ok(ports)
}

/// The comma-separated values of every `name` header.
fn header_list(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

fn upgrade_is(headers: &HeaderMap, protocol: &str) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(protocol))
        && header_list(headers, header::CONNECTION.as_str())
            .iter()
            .any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// The transport a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Transport {
    /// WebSocket with a channel protocol.
    WebSocket(WsProtocol),
    /// SPDY tunnelled in WebSocket binary messages.
    SpdyTunnel,
    /// SPDY/3.1 with the negotiated `X-Stream-Protocol-Version`.
    Spdy(&'static str),
}

/// Negotiates the transport like the kubelet: a WebSocket takes the client's first channel
/// protocol that is served; SPDY takes the server's most preferred protocol the client offers.
fn negotiate(
    headers: &HeaderMap,
    websocket: &[WsProtocol],
    tunnel: bool,
    spdy: &[&'static str],
) -> Result<Transport, Refusal> {
    if upgrade_is(headers, "websocket") {
        let asked = header_list(headers, "sec-websocket-protocol");
        if tunnel && asked.iter().any(|p| p == ws::SPDY_TUNNEL_PORT_FORWARD) {
            return Ok(Transport::SpdyTunnel);
        }
        return ws::choose(&asked, websocket)
            .map(Transport::WebSocket)
            .ok_or_else(|| {
                let served: Vec<&str> = websocket.iter().map(|p| p.name).collect();
                text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "requested protocol(s) are not supported: {asked:?}; supports {served:?}"
                    ),
                )
            });
    }
    if upgrade_is(headers, "SPDY/3.1") {
        let offered = header_list(headers, STREAM_PROTOCOL_HEADER);
        return spdy
            .iter()
            .find(|p| offered.iter().any(|o| o == *p))
            .map(|&p| Transport::Spdy(p))
            .ok_or_else(|| {
                text(
                    StatusCode::FORBIDDEN,
                    format!(
                        "unable to upgrade: unable to negotiate protocol: client supports \
                         {offered:?}, server accepts {spdy:?}"
                    ),
                )
            });
    }
    Err(text(
        StatusCode::BAD_REQUEST,
        "unable to upgrade: missing upgrade headers in request",
    ))
}

/// The 101 answer for `transport`, or the refusal when it cannot be served.
fn switching(headers: &HeaderMap, transport: &Transport) -> Result<Response, Refusal> {
    let mut response = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    match transport {
        Transport::WebSocket(_) | Transport::SpdyTunnel => {
            let key = headers
                .get("sec-websocket-key")
                .ok_or_else(|| text(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key"))?;
            let name = match transport {
                Transport::WebSocket(protocol) => protocol.name,
                _ => ws::SPDY_TUNNEL_PORT_FORWARD,
            };
            response = response
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "websocket")
                .header(
                    header::SEC_WEBSOCKET_ACCEPT,
                    derive_accept_key(key.as_bytes()),
                );
            if !name.is_empty() {
                response = response.header(header::SEC_WEBSOCKET_PROTOCOL, name);
            }
        }
        Transport::Spdy(protocol) => {
            response = response
                .header(header::CONNECTION, "Upgrade")
                .header(header::UPGRADE, "SPDY/3.1")
                .header(STREAM_PROTOCOL_HEADER, HeaderValue::from_static(protocol));
        }
    }
    response
        .body(Body::empty())
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The running instance of `container` in pod `namespace/pod`, as the kubelet finds it.
async fn find_container(
    runtime: &dyn ContainerRuntime,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Result<String, Refusal> {
    let containers = runtime
        .list_named(namespace, pod)
        .await
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, crate::error_chain(&e)))?;
    if containers.is_empty() {
        return Err(text(StatusCode::NOT_FOUND, "pod does not exist"));
    }
    containers
        .into_iter()
        .filter(|c| c.name == container && c.role != "sandbox" && c.running)
        .max_by_key(|c| c.attempt)
        .map(|c| c.id)
        .ok_or_else(|| {
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("container not found (\"{container}\")"),
            )
        })
}

/// The running sandbox of pod `namespace/pod` and its main process.
async fn find_sandbox(
    runtime: &dyn ContainerRuntime,
    namespace: &str,
    pod: &str,
) -> Result<(String, u32), Refusal> {
    let containers = runtime
        .list_named(namespace, pod)
        .await
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, crate::error_chain(&e)))?;
    if containers.is_empty() {
        return Err(text(StatusCode::NOT_FOUND, "pod does not exist"));
    }
    let not_found = || {
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("pod not found (\"{pod}_{namespace}\")"),
        )
    };
    let sandbox = containers
        .into_iter()
        .filter(|c| (c.role == "sandbox" || c.name == SANDBOX) && c.running)
        .max_by_key(|c| c.attempt)
        .ok_or_else(not_found)?;
    let details = runtime
        .inspect(&sandbox.id)
        .await
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, crate::error_chain(&e)))?;
    if !details.running || details.pid == 0 {
        return Err(not_found());
    }
    Ok((sandbox.id, details.pid))
}

async fn exec(
    State(state): State<StreamState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    let query = query_pairs(request.uri().query());
    let command: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if command.is_empty() {
        return text(StatusCode::BAD_REQUEST, "command is required").into_response();
    }
    streaming(state, namespace, pod, container, Some(command), request).await
}

async fn attach(
    State(state): State<StreamState>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    streaming(state, namespace, pod, container, None, request).await
}

/// Exec (with a command) or attach: checks, answers 101, then serves the session.
async fn streaming(
    state: StreamState,
    namespace: String,
    pod: String,
    container: String,
    command: Option<Vec<String>>,
    mut request: Request,
) -> Response {
    let query = query_pairs(request.uri().query());
    let options = match stream_options(&query) {
        Ok(options) => options,
        Err(message) => return text(StatusCode::BAD_REQUEST, message).into_response(),
    };
    let transport = match negotiate(
        request.headers(),
        &ws::EXEC_PROTOCOLS,
        false,
        &SPDY_EXEC_PROTOCOLS,
    ) {
        Ok(transport) => transport,
        Err(refusal) => return refusal.into_response(),
    };
    let container_id = match find_container(&*state.runtime, &namespace, &pod, &container).await {
        Ok(id) => id,
        Err(refusal) => return refusal.into_response(),
    };
    let response = match switching(request.headers(), &transport) {
        Ok(response) => response,
        Err(refusal) => return refusal.into_response(),
    };
    let start = match command {
        Some(command) => Start::Exec {
            container_id,
            command,
        },
        None => Start::Attach { container_id },
    };
    let upgrade = hyper::upgrade::on(&mut request);
    let runtime = state.runtime;
    let idle_timeout = state.idle_timeout;
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => IdleIo::new(TokioIo::new(upgraded), idle_timeout),
            Err(error) => {
                tracing::debug!(%error, "exec upgrade");
                return;
            }
        };
        match transport {
            Transport::WebSocket(protocol) => {
                let ws = WebSocketStream::from_raw_socket(upgraded, Role::Server, None).await;
                ws::serve_exec(ws, protocol, runtime, start, options).await;
            }
            Transport::Spdy(protocol) => {
                spdy_glue::serve_exec(Box::new(upgraded), protocol, runtime, start, options).await;
            }
            Transport::SpdyTunnel => {}
        }
    });
    response
}

async fn port_forward(
    State(state): State<StreamState>,
    Path((namespace, pod)): Path<(String, String)>,
    mut request: Request,
) -> Response {
    let query = query_pairs(request.uri().query());
    let transport = match negotiate(
        request.headers(),
        &ws::PORT_FORWARD_PROTOCOLS,
        true,
        &[SPDY_PORT_FORWARD_PROTOCOL],
    ) {
        Ok(transport) => transport,
        Err(refusal) => return refusal.into_response(),
    };
    let ports = match &transport {
        Transport::WebSocket(_) => match forward_ports(&query) {
            Ok(ports) => ports,
            Err(message) => return text(StatusCode::BAD_REQUEST, message).into_response(),
        },
        Transport::Spdy(_) | Transport::SpdyTunnel => Vec::new(),
    };
    let (sandbox_id, pid) = match find_sandbox(&*state.runtime, &namespace, &pod).await {
        Ok(found) => found,
        Err(refusal) => return refusal.into_response(),
    };
    let response = match switching(request.headers(), &transport) {
        Ok(response) => response,
        Err(refusal) => return refusal.into_response(),
    };
    let forwarder = Forwarder {
        dialer: state.dialer,
        pid,
        sandbox_id,
    };
    let upgrade = hyper::upgrade::on(&mut request);
    let idle_timeout = state.idle_timeout;
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => IdleIo::new(TokioIo::new(upgraded), idle_timeout),
            Err(error) => {
                tracing::debug!(%error, "port-forward upgrade");
                return;
            }
        };
        match transport {
            Transport::WebSocket(protocol) => {
                let ws = WebSocketStream::from_raw_socket(upgraded, Role::Server, None).await;
                ws::serve_port_forward(ws, protocol, forwarder, ports).await;
            }
            Transport::SpdyTunnel => {
                let ws = WebSocketStream::from_raw_socket(upgraded, Role::Server, None).await;
                spdy_glue::serve_port_forward(Box::new(ws::WsIo::new(ws)), forwarder).await;
            }
            Transport::Spdy(_) => {
                spdy_glue::serve_port_forward(Box::new(upgraded), forwarder).await;
            }
        }
    });
    response
}

#[cfg(test)]
mod tests;

//! The streaming endpoints end to end over a local TCP connection: hyper with upgrades serving
//! [`router`], tokio-tungstenite's client, the fake runtime's processes, and a dialer that
//! connects to local listeners instead of entering a namespace.

use std::{collections::HashMap, io, net::SocketAddr, sync::Arc, time::Duration};

use async_trait::async_trait;
use bollard::models::ContainerCreateBody;
use futures_util::{SinkExt as _, StreamExt as _};
use hyper_util::service::TowerToHyperService;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};
use tokio_tungstenite::{
    WebSocketStream, client_async,
    tungstenite::{self, Message, client::IntoClientRequest as _},
};
use tower::ServiceExt as _;

use super::*;
use crate::pods::runtime::{
    LABEL_CONTAINER, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID, LABEL_ROLE,
    fake::FakeRuntime, stream::TerminalSize,
};

type Ws = WebSocketStream<TcpStream>;

/// Connects pod ports to local listeners; a port without one is refused.
#[derive(Debug, Default)]
pub(super) struct LocalDialer {
    pub(super) ports: HashMap<u16, u16>,
}

#[async_trait]
impl PodDialer for LocalDialer {
    async fn dial(&self, _pid: u32, port: u16) -> io::Result<TcpStream> {
        match self.ports.get(&port) {
            Some(local) => TcpStream::connect(("127.0.0.1", *local)).await,
            None => Err(io::Error::from(io::ErrorKind::ConnectionRefused)),
        }
    }
}

/// Pod `ns/web` with a sandbox and a running container `app`.
pub(super) async fn fake_pod() -> Arc<FakeRuntime> {
    let runtime = Arc::new(FakeRuntime::new("n1", &["img"]));
    for (name, role) in [(SANDBOX, "sandbox"), ("app", "app")] {
        let labels = HashMap::from([
            (LABEL_POD_UID.to_owned(), "u1".to_owned()),
            (LABEL_POD_NAMESPACE.to_owned(), "ns".to_owned()),
            (LABEL_POD_NAME.to_owned(), "web".to_owned()),
            (LABEL_CONTAINER.to_owned(), name.to_owned()),
            (LABEL_ROLE.to_owned(), role.to_owned()),
        ]);
        let body = ContainerCreateBody {
            image: Some("img".to_owned()),
            ..ContainerCreateBody::default()
        };
        runtime
            .run(&format!("k_{name}_web"), labels, body)
            .await
            .expect("fake container");
    }
    runtime
}

/// Serves [`router`] on a local port, with upgrades, like the kubelet endpoint.
pub(super) async fn serve(runtime: Arc<FakeRuntime>, dialer: LocalDialer) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let app = router(StreamState {
        runtime,
        dialer: Arc::new(dialer),
        idle_timeout: idle::DEFAULT_IDLE_TIMEOUT,
    });
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let app = app
                .clone()
                .map_request(|r: Request<hyper::body::Incoming>| r.map(Body::new));
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app))
                    .with_upgrades()
                    .await;
            });
        }
    });
    address
}

async fn connect(
    address: SocketAddr,
    path: &str,
    protocol: &str,
) -> Result<Ws, Box<tungstenite::Error>> {
    let mut request = format!("ws://{address}{path}")
        .into_client_request()
        .map_err(Box::new)?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        protocol.parse().expect("header value"),
    );
    let tcp = TcpStream::connect(address).await.expect("connect");
    let (ws, response) = client_async(request, tcp).await.map_err(Box::new)?;
    assert_eq!(
        response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().expect("ASCII")),
        Some(protocol)
    );
    Ok(ws)
}

/// The next data message as (channel, payload); `None` once the server closed.
async fn next(ws: &mut Ws) -> Option<(u8, Vec<u8>)> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s");
        match message {
            Some(Ok(Message::Binary(data))) => return Some((data[0], data[1..].to_vec())),
            Some(Ok(Message::Text(text))) => {
                let bytes = text.as_bytes();
                return Some((bytes[0] - b'0', bytes[1..].to_vec()));
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => {}
        }
    }
}

/// Every data message until the server closes.
async fn rest(ws: &mut Ws) -> Vec<(u8, String)> {
    let mut all = Vec::new();
    while let Some((channel, data)) = next(ws).await {
        all.push((channel, String::from_utf8(data).expect("UTF-8")));
    }
    all
}

async fn send(ws: &mut Ws, channel: u8, data: &[u8]) {
    let mut frame = vec![channel];
    frame.extend_from_slice(data);
    ws.send(Message::binary(frame)).await.expect("send");
}

pub(super) const SUCCESS: &str = r#"{"metadata":{},"status":"Success"}"#;

#[tokio::test]
async fn exec_v5_echoes_stdin_until_the_client_closes_it() {
    let address = serve(fake_pod().await, LocalDialer::default()).await;
    let mut ws = connect(
        address,
        "/exec/ns/web/app?command=cat&stdin=1&stdout=1",
        "v5.channel.k8s.io",
    )
    .await
    .expect("upgrade");
    assert_eq!(next(&mut ws).await, Some((1, Vec::new())), "session is up");
    send(&mut ws, 0, b"hello\n").await;
    assert_eq!(next(&mut ws).await, Some((1, b"hello\n".to_vec())));
    send(&mut ws, 255, &[0]).await;
    assert_eq!(rest(&mut ws).await, vec![(3, SUCCESS.to_owned())]);
}

#[tokio::test]
async fn exec_reports_the_exit_code_on_the_error_channel() {
    let address = serve(fake_pod().await, LocalDialer::default()).await;
    let mut ws = connect(
        address,
        "/exec/ns/web/app?command=fail&command=3&stdout=1&stderr=1",
        "v4.channel.k8s.io",
    )
    .await
    .expect("upgrade");
    let status = r#"{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [fail 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}"#;
    assert_eq!(
        rest(&mut ws).await,
        vec![
            (1, String::new()),
            (2, "failing\n".to_owned()),
            (3, status.to_owned())
        ]
    );
}

#[tokio::test]
async fn exec_in_base64_and_with_older_protocols() {
    let address = serve(fake_pod().await, LocalDialer::default()).await;
    // "hi a\n" in base64; v4 writes the JSON status.
    let mut ws = connect(
        address,
        "/exec/ns/web/app?command=echo&command=hi%20a&stdout=1",
        "v4.base64.channel.k8s.io",
    )
    .await
    .expect("upgrade");
    assert_eq!(
        rest(&mut ws).await,
        vec![
            (1, String::new()),
            (1, "aGkgYQo=".to_owned()),
            (
                3,
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, SUCCESS)
            )
        ]
    );
    // channel.k8s.io (before v4): nothing on success, the message on failure.
    let mut ws = connect(
        address,
        "/exec/ns/web/app?command=fail&command=2&stderr=1",
        "channel.k8s.io",
    )
    .await
    .expect("upgrade");
    assert_eq!(
        rest(&mut ws).await,
        vec![
            (2, String::new()),
            (2, "failing\n".to_owned()),
            (
                3,
                "command terminated with non-zero exit code: error executing command \
                 [fail 2], exit code 2"
                    .to_owned()
            )
        ]
    );
}

#[tokio::test]
async fn attach_passes_stdin_and_resizes_the_terminal() {
    let runtime = fake_pod().await;
    let address = serve(runtime.clone(), LocalDialer::default()).await;
    let mut ws = connect(
        address,
        "/attach/ns/web/app?stdin=1&stdout=1&tty=1",
        "v5.channel.k8s.io",
    )
    .await
    .expect("upgrade");
    assert_eq!(next(&mut ws).await, Some((1, Vec::new())));
    send(&mut ws, 4, br#"{"Width":100,"Height":30}"#).await;
    send(&mut ws, 0, b"ls\n").await;
    assert_eq!(next(&mut ws).await, Some((1, b"ls\n".to_vec())));
    let sizes: Vec<TerminalSize> = runtime.resizes().into_iter().map(|(_, s)| s).collect();
    assert_eq!(
        sizes,
        vec![TerminalSize {
            width: 100,
            height: 30
        }]
    );
    // The client's stdin ending leaves the container's main process its stdin (the kubelet
    // closes it only for stdinOnce containers): the session goes on until the client leaves.
    send(&mut ws, 255, &[0]).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), ws.next())
            .await
            .is_err(),
        "the attach session goes on"
    );
    assert_eq!(runtime.stdin_ends(), 0);
    ws.close(None).await.expect("close");
    drop(ws);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while runtime.alive_processes() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn errors_before_the_upgrade_read_as_the_kubelet_words_them() {
    let runtime = fake_pod().await;
    let address = serve(runtime.clone(), LocalDialer::default()).await;
    let cases = [
        (
            "/exec/ns/web/nope?command=ls&stdout=1",
            "v5.channel.k8s.io",
            500,
            "container not found (\"nope\")",
        ),
        (
            "/exec/ns/gone/app?command=ls&stdout=1",
            "v5.channel.k8s.io",
            404,
            "pod does not exist",
        ),
        (
            "/exec/ns/web/app?command=ls",
            "v5.channel.k8s.io",
            400,
            "you must specify at least 1 of stdin, stdout, stderr",
        ),
        (
            "/portForward/ns/web",
            "v4.channel.k8s.io",
            400,
            "query parameter \"port\" is required",
        ),
    ];
    for (path, protocol, code, body) in cases {
        match connect(address, path, protocol).await.map(|_| ()) {
            Err(error) => match *error {
                tungstenite::Error::Http(response) => {
                    assert_eq!(response.status().as_u16(), code, "{path}");
                    let got = response.body().clone().unwrap_or_default();
                    assert_eq!(String::from_utf8_lossy(&got), body, "{path}");
                }
                other => panic!("{path}: {other}"),
            },
            Ok(()) => panic!("{path}: upgraded"),
        }
    }
    // A container that ended is not found either.
    runtime.exit("app", 0);
    let refused = connect(
        address,
        "/exec/ns/web/app?command=ls&stdout=1",
        "v5.channel.k8s.io",
    )
    .await;
    assert!(
        matches!(refused.map(|_| ()).map_err(|e| *e), Err(tungstenite::Error::Http(r)) if r.status() == 500)
    );
}

#[tokio::test]
async fn a_vanished_client_ends_its_process_stdin_and_every_task() {
    let runtime = fake_pod().await;
    let address = serve(runtime.clone(), LocalDialer::default()).await;
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut ws = connect(
            address,
            "/exec/ns/web/app?command=wait&stdin=1&stdout=1",
            "v4.channel.k8s.io",
        )
        .await
        .expect("upgrade");
        assert_eq!(next(&mut ws).await, Some((1, Vec::new())));
        clients.push(ws);
    }
    assert_eq!(runtime.alive_processes(), 20);
    drop(clients);
    for _ in 0..100 {
        if runtime.alive_processes() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(runtime.alive_processes(), 0, "every process got stdin EOF");
    assert_eq!(runtime.stdin_ends(), 20);
    for _ in 0..100 {
        if metrics.num_alive_tasks() == before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metrics.num_alive_tasks(),
        before,
        "no task of a session is left"
    );
}

#[tokio::test]
async fn the_exec_of_a_vanished_client_is_killed_when_stdin_eof_does_not_end_it() {
    let runtime = fake_pod().await;
    let address = serve(runtime.clone(), LocalDialer::default()).await;
    // One with stdin (EOF first, then the kill) and one without (killed at once).
    let mut clients = Vec::new();
    for path in [
        "/exec/ns/web/app?command=hang&stdin=1&stdout=1",
        "/exec/ns/web/app?command=hang&stdout=1",
        "/exec/ns/web/app?command=wait&stdin=1&stdout=1",
    ] {
        let mut ws = connect(address, path, "v5.channel.k8s.io")
            .await
            .expect("upgrade");
        assert_eq!(next(&mut ws).await, Some((1, Vec::new())));
        clients.push(ws);
    }
    assert_eq!(runtime.alive_processes(), 3);
    drop(clients);
    for _ in 0..200 {
        if runtime.alive_processes() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        runtime.alive_processes(),
        0,
        "no process outlives its client"
    );
    // `wait` ended on its stdin EOF; only the two `hang`s needed the kill.
    assert_eq!(runtime.killed_execs(), 2);
}

#[tokio::test]
async fn websocket_binary_messages_read_and_write_as_a_byte_stream() {
    use tokio_tungstenite::tungstenite::protocol::Role;
    let (server, client) = tokio::io::duplex(4096);
    let (server, mut client) = tokio::join!(
        WebSocketStream::from_raw_socket(server, Role::Server, None),
        WebSocketStream::from_raw_socket(client, Role::Client, None),
    );
    let mut io = ws::WsIo::new(server);
    client
        .send(Message::binary(b"SPDY".to_vec()))
        .await
        .expect("send");
    client.send(Message::text("skipped")).await.expect("send");
    client
        .send(Message::binary(b" frames".to_vec()))
        .await
        .expect("send");
    let mut got = vec![0u8; 11];
    io.read_exact(&mut got).await.expect("read");
    assert_eq!(got, b"SPDY frames");
    io.write_all(b"reply").await.expect("write");
    io.flush().await.expect("flush");
    let reply = client.next().await.expect("a message").expect("no error");
    assert_eq!(reply, Message::binary(b"reply".to_vec()));
    client.close(None).await.expect("close");
    let mut rest = Vec::new();
    io.read_to_end(&mut rest).await.expect("read to the end");
    assert!(rest.is_empty(), "a close is the end of the stream");
}

/// A local server that echoes each connection's bytes back.
pub(super) async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                while let Ok(n) = tcp.read(&mut buffer).await {
                    if n == 0 || tcp.write_all(&buffer[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn port_forward_carries_many_connections_and_reports_a_closed_port() {
    let echo = echo_server().await;
    let dialer = LocalDialer {
        ports: HashMap::from([(80, echo)]),
    };
    let address = serve(fake_pod().await, dialer).await;
    let sessions = (0..100).map(|i| async move {
        let mut ws = connect(address, "/portForward/ns/web?ports=80", "v4.channel.k8s.io")
            .await
            .expect("upgrade");
        let mut prefixes = vec![next(&mut ws).await, next(&mut ws).await];
        prefixes.sort();
        assert_eq!(
            prefixes,
            vec![Some((0, vec![80, 0])), Some((1, vec![80, 0]))]
        );
        let request = format!("request {i}");
        send(&mut ws, 0, request.as_bytes()).await;
        assert_eq!(next(&mut ws).await, Some((0, request.into_bytes())));
    });
    futures_util::future::join_all(sessions).await;

    let mut ws = connect(address, "/portForward/ns/web?port=81", "v4.channel.k8s.io")
        .await
        .expect("upgrade");
    let message = "error forwarding port 81 to pod c0001, uid : failed to connect to \
                   localhost:81 inside namespace \"c0001\", IPv4: dial tcp4 127.0.0.1:81: \
                   connect: connection refused";
    let mut all = rest(&mut ws).await;
    all.sort();
    assert_eq!(
        all,
        vec![
            (0, "Q\0".to_owned()),
            (1, "Q\0".to_owned()),
            (1, message.to_owned())
        ]
    );
}

#[tokio::test]
async fn spdy_is_upgraded_when_served_and_refused_before_the_upgrade_otherwise() {
    let address = serve(fake_pod().await, LocalDialer::default()).await;
    let mut tcp = TcpStream::connect(address).await.expect("connect");
    tcp.write_all(
        b"POST /exec/ns/web/app?command=ls&stdout=1 HTTP/1.1\r\nHost: x\r\n\
          Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\
          X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\
          X-Stream-Protocol-Version: v3.channel.k8s.io\r\nContent-Length: 0\r\n\r\n",
    )
    .await
    .expect("write");
    let mut answer = vec![0u8; 1024];
    let n = tcp.read(&mut answer).await.expect("read");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{answer}"
    );
}

#[test]
fn negotiation_follows_the_kubelet() {
    let mut headers = HeaderMap::new();
    headers.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.append(
        STREAM_PROTOCOL_HEADER,
        HeaderValue::from_static("v2.channel.k8s.io, v4.channel.k8s.io"),
    );
    assert_eq!(
        negotiate(&headers, &ws::EXEC_PROTOCOLS, false, &SPDY_EXEC_PROTOCOLS).ok(),
        Some(Transport::Spdy("v4.channel.k8s.io")),
        "SPDY: the server's preference"
    );
    let mut headers = HeaderMap::new();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(
        header::CONNECTION,
        HeaderValue::from_static("keep-alive, Upgrade"),
    );
    headers.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("v4.channel.k8s.io, v5.channel.k8s.io"),
    );
    let Ok(Transport::WebSocket(chosen)) =
        negotiate(&headers, &ws::EXEC_PROTOCOLS, false, &SPDY_EXEC_PROTOCOLS)
    else {
        panic!("a WebSocket protocol");
    };
    assert_eq!(
        chosen.name, "v4.channel.k8s.io",
        "WebSocket: the client's order"
    );
    headers.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("SPDY/3.1+portforward.k8s.io"),
    );
    assert_eq!(
        negotiate(
            &headers,
            &ws::PORT_FORWARD_PROTOCOLS,
            true,
            &[SPDY_PORT_FORWARD_PROTOCOL]
        )
        .ok(),
        Some(Transport::SpdyTunnel)
    );
}

#[test]
fn queries_decode_like_go() {
    let pairs = query_pairs(Some("command=sh&command=-c&command=echo%20a+b&stdin=1&tty"));
    let commands: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(commands, ["sh", "-c", "echo a b"]);
    assert_eq!(
        stream_options(&pairs),
        Ok(StreamOptions {
            stdin: true,
            ..StreamOptions::default()
        })
    );
    let tty = query_pairs(Some("stdout=1&stderr=1&tty=1"));
    assert_eq!(
        stream_options(&tty),
        Ok(StreamOptions {
            stdout: true,
            tty: true,
            ..StreamOptions::default()
        }),
        "a terminal has no stderr"
    );
    // The kubelet's own names, which the API server sends.
    let kubelet = query_pairs(Some("command=ls&input=1&output=1&error=1"));
    assert_eq!(
        stream_options(&kubelet),
        Ok(StreamOptions {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        })
    );
    assert_eq!(
        forward_ports(&query_pairs(Some("ports=80,8080&port=9090"))),
        Ok(vec![80, 8080, 9090])
    );
    assert_eq!(
        forward_ports(&query_pairs(Some("port=0"))),
        Err("port \"0\" must be > 0".to_owned())
    );
}

#[test]
fn text_frames_carry_channels_like_binary_ones() {
    let v4 = ws::EXEC_PROTOCOLS[1];
    let (channel, data) = ws::decode(v4, Message::Text("\u{0}hello\n".into())).expect("stdin");
    assert_eq!((channel, &data[..]), (0, &b"hello\n"[..]));
    let (channel, data) =
        ws::decode(v4, Message::Binary(b"\x04{}".to_vec().into())).expect("resize");
    assert_eq!((channel, &data[..]), (4, &b"{}"[..]));
    assert!(ws::decode(v4, Message::Text("".into())).is_none());
}

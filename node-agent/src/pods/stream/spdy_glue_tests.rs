//! The SPDY glue end to end: the router over local TCP, the HTTP upgrade, then a minimal SPDY
//! client built on the session's own frame codec.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use super::super::{
    spdy::{Decoder, Encoder, Frame, Headers, SynStream},
    tests::{LocalDialer, SUCCESS, echo_server, fake_pod, serve},
};

struct Client {
    tcp: TcpStream,
    encoder: Encoder,
    decoder: Decoder,
    buf: BytesMut,
}

impl Client {
    /// Sends the upgrade request; returns the client and the answer's head.
    async fn upgrade(address: SocketAddr, path: &str, protocols: &[&str]) -> (Self, String) {
        let mut tcp = TcpStream::connect(address).await.expect("connect");
        let mut request = format!(
            "POST {path} HTTP/1.1\r\nHost: node\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        );
        for protocol in protocols {
            request.push_str(&format!("X-Stream-Protocol-Version: {protocol}\r\n"));
        }
        request.push_str("Content-Length: 0\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.expect("write");
        let mut buf = BytesMut::new();
        let head = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = buf.split_to(end + 4);
                break String::from_utf8_lossy(&head).into_owned();
            }
            let n = tcp.read_buf(&mut buf).await.expect("read");
            assert!(n > 0, "the server closed before answering");
        };
        let client = Self {
            tcp,
            encoder: Encoder::new(),
            decoder: Decoder::new(),
            buf,
        };
        (client, head)
    }

    async fn send(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        self.encoder.encode(&frame, &mut out).expect("encode");
        self.tcp.write_all(&out).await.expect("write");
    }

    async fn open(&mut self, id: u32, headers: &[(&str, &str)]) {
        let mut block = Headers::new();
        for (name, value) in headers {
            block.push(name, value);
        }
        self.send(Frame::SynStream(SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers: block,
        }))
        .await;
    }

    async fn data(&mut self, id: u32, fin: bool, data: &[u8]) {
        self.send(Frame::Data {
            stream_id: id,
            fin,
            data: Bytes::copy_from_slice(data),
        })
        .await;
    }

    async fn recv(&mut self) -> Option<Frame> {
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if let Some(frame) = self.decoder.decode(&mut self.buf).expect("a frame") {
                    return Some(frame);
                }
                if self.tcp.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                    return None;
                }
            }
        })
        .await
        .expect("a frame within 5 s")
    }

    /// What arrives on each stream (data, whether it ended) until every stream of `until` has
    /// ended or the session does.
    async fn collect(&mut self, until: &[u32]) -> HashMap<u32, (String, bool)> {
        let mut streams: HashMap<u32, (String, bool)> = HashMap::new();
        while !until
            .iter()
            .all(|id| streams.get(id).is_some_and(|(_, fin)| *fin))
        {
            match self.recv().await {
                Some(Frame::Data {
                    stream_id,
                    fin,
                    data,
                }) => {
                    let entry = streams.entry(stream_id).or_default();
                    entry.0.push_str(&String::from_utf8_lossy(&data));
                    entry.1 |= fin;
                }
                Some(Frame::SynReply { stream_id, fin, .. }) => {
                    streams.entry(stream_id).or_default().1 |= fin;
                }
                Some(Frame::GoAway { .. }) | None => break,
                Some(_) => {}
            }
        }
        streams
    }
}

#[tokio::test]
async fn spdy_exec_passes_stdin_to_eof_then_the_status() {
    let address = serve(fake_pod().await, LocalDialer::default()).await;
    let (mut client, head) = Client::upgrade(
        address,
        "/exec/ns/web/app?command=cat&stdin=1&stdout=1",
        &["v4.channel.k8s.io", "v3.channel.k8s.io"],
    )
    .await;
    let head = head.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        head.contains("x-stream-protocol-version: v4.channel.k8s.io"),
        "{head}"
    );
    client.open(1, &[("streamtype", "error")]).await;
    client.open(3, &[("streamtype", "stdin")]).await;
    client.open(5, &[("streamtype", "stdout")]).await;
    client.data(3, true, b"hello\n").await;
    let streams = client.collect(&[1, 5]).await;
    assert_eq!(streams.get(&5), Some(&("hello\n".to_owned(), true)));
    assert_eq!(streams.get(&1), Some(&(SUCCESS.to_owned(), true)));
}

#[tokio::test]
async fn spdy_port_forward_pairs_streams_and_reports_a_closed_port() {
    let echo = echo_server().await;
    let dialer = LocalDialer {
        ports: HashMap::from([(80, echo)]),
    };
    let address = serve(fake_pod().await, dialer).await;
    let (mut client, head) =
        Client::upgrade(address, "/portForward/ns/web", &["portforward.k8s.io"]).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let pair = |kind: &'static str, port: &'static str, id: &'static str| {
        [("streamtype", kind), ("port", port), ("requestid", id)]
    };
    client.open(1, &pair("error", "80", "0")).await;
    client.open(3, &pair("data", "80", "0")).await;
    client.data(3, false, b"ping").await;
    client.open(5, &pair("error", "81", "1")).await;
    client.open(7, &pair("data", "81", "1")).await;
    client.data(3, true, b"").await;
    let streams = client.collect(&[1, 3, 5, 7]).await;
    assert_eq!(streams.get(&3), Some(&("ping".to_owned(), true)));
    assert_eq!(streams.get(&1), Some(&(String::new(), true)));
    let refused = "error forwarding port 81 to pod c0001, uid : failed to connect to \
                   localhost:81 inside namespace \"c0001\", IPv4: dial tcp4 127.0.0.1:81: \
                   connect: connection refused";
    assert_eq!(streams.get(&5), Some(&(refused.to_owned(), true)));
    assert_eq!(streams.get(&7), Some(&(String::new(), true)));
}

#[tokio::test]
async fn spdy_tunnelled_in_websocket_forwards_like_plain_spdy() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::{
        client_async,
        tungstenite::{Message, client::IntoClientRequest as _},
    };

    let echo = echo_server().await;
    let dialer = LocalDialer {
        ports: HashMap::from([(8080, echo)]),
    };
    let address = serve(fake_pod().await, dialer).await;
    let mut request = format!("ws://{address}/portForward/ns/web")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "SPDY/3.1+portforward.k8s.io".parse().expect("header value"),
    );
    let tcp = TcpStream::connect(address).await.expect("connect");
    let (mut ws, response) = client_async(request, tcp).await.expect("upgrade");
    assert_eq!(
        response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().expect("ASCII")),
        Some("SPDY/3.1+portforward.k8s.io")
    );
    let mut encoder = Encoder::new();
    let mut decoder = Decoder::new();
    let mut frames = Vec::new();
    for (id, kind) in [(1, "error"), (3, "data")] {
        let mut headers = Headers::new();
        for (name, value) in [("streamtype", kind), ("port", "8080"), ("requestid", "0")] {
            headers.push(name, value);
        }
        frames.push(Frame::SynStream(SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers,
        }));
    }
    frames.push(Frame::Data {
        stream_id: 3,
        fin: true,
        data: Bytes::from_static(b"through the tunnel"),
    });
    for frame in frames {
        let mut out = BytesMut::new();
        encoder.encode(&frame, &mut out).expect("encode");
        ws.send(Message::binary(out.freeze())).await.expect("send");
    }
    let mut buf = BytesMut::new();
    let mut echoed = String::new();
    let mut ended = false;
    while !ended {
        while let Some(frame) = decoder.decode(&mut buf).expect("a frame") {
            if let Frame::Data {
                stream_id: 3,
                fin,
                data,
            } = frame
            {
                echoed.push_str(&String::from_utf8_lossy(&data));
                ended |= fin;
            }
        }
        if ended {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
        {
            Some(Ok(Message::Binary(data))) => buf.extend_from_slice(&data),
            Some(Ok(_)) => {}
            _ => break,
        }
    }
    assert_eq!(echoed, "through the tunnel");
    assert!(ended, "the data stream ended after the pod's side closed");
}

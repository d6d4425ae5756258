//! The session against a minimal client written here: its own frame encoder and decoder
//! (so its own compression contexts), over an in-memory duplex pipe.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

use super::*;

const TIMEOUT: Duration = Duration::from_secs(10);

struct ClientTx {
    wr: WriteHalf<DuplexStream>,
    encoder: Encoder,
}

impl ClientTx {
    async fn send(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        self.encoder
            .encode(&frame, &mut out)
            .expect("client encodes");
        self.wr.write_all(&out).await.expect("client writes");
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
}

struct ClientRx {
    rd: ReadHalf<DuplexStream>,
    decoder: Decoder,
    buf: BytesMut,
}

impl ClientRx {
    /// The next frame, `None` at EOF.
    async fn recv(&mut self) -> Option<Frame> {
        tokio::time::timeout(TIMEOUT, async {
            loop {
                if let Some(frame) = self.decoder.decode(&mut self.buf).expect("server frame") {
                    return Some(frame);
                }
                if self.rd.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                    return None;
                }
            }
        })
        .await
        .expect("a frame from the server in time")
    }

    /// The next frame that is not a WINDOW_UPDATE.
    async fn recv_skipping_updates(&mut self) -> Option<Frame> {
        loop {
            match self.recv().await {
                Some(Frame::WindowUpdate { .. }) => {}
                other => return other,
            }
        }
    }
}

fn start(
    config: Config,
) -> (
    SpdyConnection,
    mpsc::Receiver<SpdyStream>,
    ClientTx,
    ClientRx,
) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (conn, incoming) = serve_with(server, config);
    let (rd, wr) = tokio::io::split(client);
    (
        conn,
        incoming,
        ClientTx {
            wr,
            encoder: Encoder::new(),
        },
        ClientRx {
            rd,
            decoder: Decoder::new(),
            buf: BytesMut::new(),
        },
    )
}

async fn accept(incoming: &mut mpsc::Receiver<SpdyStream>) -> SpdyStream {
    tokio::time::timeout(TIMEOUT, incoming.recv())
        .await
        .expect("a stream in time")
        .expect("the session is open")
}

/// Opens stream `id` and consumes its SYN_REPLY.
async fn open_accepted(
    tx: &mut ClientTx,
    rx: &mut ClientRx,
    incoming: &mut mpsc::Receiver<SpdyStream>,
    id: u32,
) -> SpdyStream {
    tx.open(id, &[("streamtype", "data")]).await;
    let stream = accept(incoming).await;
    assert_eq!(
        rx.recv().await,
        Some(Frame::SynReply {
            stream_id: id,
            fin: false,
            headers: Headers::new(),
        })
    );
    stream
}

async fn assert_no_tasks_left() {
    let metrics = tokio::runtime::Handle::current().metrics();
    for _ in 0..200 {
        if metrics.num_alive_tasks() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{} tasks still alive", metrics.num_alive_tasks());
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test]
async fn syn_stream_headers_arrive_decoded_and_get_an_empty_reply() {
    let (_conn, mut incoming, mut tx, mut rx) = start(Config::default());
    tx.open(
        1,
        &[
            ("streamtype", "data"),
            ("port", "8080"),
            ("requestid", "0"),
            ("x-multi", "a\0b"),
        ],
    )
    .await;
    let stream = accept(&mut incoming).await;
    assert_eq!(stream.id(), 1);
    assert_eq!(stream.header("streamtype"), Some("data"));
    assert_eq!(stream.header("Port"), Some("8080"));
    assert_eq!(stream.header("requestid"), Some("0"));
    assert_eq!(stream.header("x-multi"), Some("a"));
    assert_eq!(stream.header("missing"), None);
    assert_eq!(
        stream.headers().values("x-multi").collect::<Vec<_>>(),
        ["a", "b"]
    );
    assert_eq!(
        rx.recv().await,
        Some(Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: Headers::new(),
        })
    );
    // The second block goes through the same compression contexts.
    tx.open(
        3,
        &[
            ("streamtype", "error"),
            ("port", "8080"),
            ("requestid", "0"),
        ],
    )
    .await;
    let second = accept(&mut incoming).await;
    assert_eq!(second.header("streamtype"), Some("error"));
    assert!(matches!(
        rx.recv().await,
        Some(Frame::SynReply { stream_id: 3, .. })
    ));
}

#[tokio::test]
async fn data_is_echoed_both_ways() {
    let (_conn, mut incoming, mut tx, mut rx) = start(Config::default());
    let mut stream = open_accepted(&mut tx, &mut rx, &mut incoming, 1).await;
    tx.data(1, false, b"hello ").await;
    tx.data(1, false, b"world").await;
    let mut got = vec![0u8; 11];
    stream.read_exact(&mut got).await.expect("reads");
    assert_eq!(got, b"hello world");
    stream.write_all(b"back at you").await.expect("writes");
    stream.flush().await.expect("flushes");
    assert_eq!(
        rx.recv_skipping_updates().await,
        Some(Frame::Data {
            stream_id: 1,
            fin: false,
            data: Bytes::from_static(b"back at you"),
        })
    );
}

#[tokio::test]
async fn fin_half_closes_the_read_side_only() {
    let (_conn, mut incoming, mut tx, mut rx) = start(Config::default());
    let mut stream = open_accepted(&mut tx, &mut rx, &mut incoming, 1).await;
    tx.data(1, true, b"abc").await;
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.expect("reads to EOF");
    assert_eq!(got, b"abc");
    stream
        .write_all(b"still open")
        .await
        .expect("writes after the peer's FIN");
    stream.shutdown().await.expect("shuts down");
    // The data and the FIN may share a frame; what the client sees is the bytes, then FIN.
    let mut echoed = Vec::new();
    for _ in 0..10 {
        match rx.recv_skipping_updates().await {
            Some(Frame::Data {
                stream_id: 1,
                fin,
                data,
            }) => {
                echoed.extend_from_slice(&data);
                if fin {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(echoed, b"still open");
    assert!(stream.shared.lock().streams[&1].fin_sent, "FIN sent");
    let error = stream
        .write_all(b"x")
        .await
        .expect_err("write after shutdown");
    assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
}

#[tokio::test]
async fn client_reset_ends_the_stream() {
    let (_conn, mut incoming, mut tx, mut rx) = start(Config::default());
    let mut stream = open_accepted(&mut tx, &mut rx, &mut incoming, 1).await;
    tx.data(1, false, b"dropped").await;
    tx.send(Frame::RstStream {
        stream_id: 1,
        status: RstStatus::CANCEL,
    })
    .await;
    // A PING round trip: the reset has been handled once it comes back.
    tx.send(Frame::Ping { id: 1 }).await;
    assert_eq!(rx.recv().await, Some(Frame::Ping { id: 1 }));
    let mut buf = [0u8; 16];
    let read = stream.read(&mut buf).await.expect_err("read after reset");
    assert_eq!(read.kind(), io::ErrorKind::ConnectionReset);
    let write = stream.write_all(b"x").await.expect_err("write after reset");
    assert_eq!(write.kind(), io::ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn reset_and_drop_without_shutdown_send_rst_cancel() {
    let (_conn, mut incoming, mut tx, mut rx) = start(Config::default());
    let first = open_accepted(&mut tx, &mut rx, &mut incoming, 1).await;
    let second = open_accepted(&mut tx, &mut rx, &mut incoming, 3).await;
    let mut third = open_accepted(&mut tx, &mut rx, &mut incoming, 5).await;
    first.reset();
    assert_eq!(
        rx.recv().await,
        Some(Frame::RstStream {
            stream_id: 1,
            status: RstStatus::CANCEL,
        })
    );
    drop(second);
    assert_eq!(
        rx.recv().await,
        Some(Frame::RstStream {
            stream_id: 3,
            status: RstStatus::CANCEL,
        })
    );
    // Dropped after shutdown: a FIN, no reset.
    third.shutdown().await.expect("shuts down");
    drop(third);
    tx.send(Frame::Ping { id: 7 }).await;
    assert_eq!(
        rx.recv().await,
        Some(Frame::Data {
            stream_id: 5,
            fin: true,
            data: Bytes::new(),
        })
    );
    assert_eq!(rx.recv().await, Some(Frame::Ping { id: 7 }));
}

#[tokio::test]
async fn client_pings_are_echoed() {
    let (_conn, _incoming, mut tx, mut rx) = start(Config::default());
    tx.send(Frame::Ping { id: 1 }).await;
    assert_eq!(rx.recv().await, Some(Frame::Ping { id: 1 }));
    // An even id would be the answer to a server ping: not echoed.
    tx.send(Frame::Ping { id: 2 }).await;
    tx.send(Frame::Ping { id: 5 }).await;
    assert_eq!(rx.recv().await, Some(Frame::Ping { id: 5 }));
}

#[tokio::test]
async fn bad_stream_ids_are_refused() {
    let (_conn, mut incoming, mut tx, mut rx) = start(Config::default());
    let _stream = open_accepted(&mut tx, &mut rx, &mut incoming, 3).await;
    tx.open(3, &[]).await;
    tx.open(1, &[]).await;
    tx.open(4, &[]).await;
    let mut frames = Vec::new();
    for _ in 0..3 {
        frames.push(rx.recv().await);
    }
    assert_eq!(
        frames,
        [
            Some(Frame::RstStream {
                stream_id: 3,
                status: RstStatus::STREAM_IN_USE,
            }),
            Some(Frame::RstStream {
                stream_id: 1,
                status: RstStatus::PROTOCOL_ERROR,
            }),
            Some(Frame::RstStream {
                stream_id: 4,
                status: RstStatus::PROTOCOL_ERROR,
            }),
        ]
    );
}

/// The server sends 4 MiB to a client that grants window as it reads; the client checks
/// nothing arrives beyond what it granted, per stream and for the session.
#[tokio::test]
async fn large_download_stays_within_the_clients_windows() {
    const TOTAL: usize = 4 * 1024 * 1024;
    let (conn, mut incoming, mut tx, mut rx) = start(Config::default());
    let mut stream = open_accepted(&mut tx, &mut rx, &mut incoming, 1).await;
    // Announce flow control up front, as a SPDY/3.1 client may; the PING round trip makes
    // sure the server has seen it before it writes.
    tx.send(Frame::WindowUpdate {
        stream_id: 0,
        delta: 1,
    })
    .await;
    tx.send(Frame::Ping { id: 1 }).await;
    assert_eq!(rx.recv().await, Some(Frame::Ping { id: 1 }));
    let writer = tokio::spawn(async move {
        stream.write_all(&pattern(TOTAL)).await.expect("writes");
        stream.shutdown().await.expect("shuts down");
        stream
    });
    let initial = DEFAULT_WINDOW as usize;
    let (mut stream_granted, mut session_granted) = (initial, initial + 1);
    let mut received = Vec::with_capacity(TOTAL);
    let mut unacked = 0usize;
    let mut frames = 0;
    loop {
        frames += 1;
        assert!(frames < 10_000, "too many frames");
        let Some(frame) = rx.recv().await else {
            panic!("EOF before FIN");
        };
        let Frame::Data {
            stream_id,
            fin,
            data,
        } = frame
        else {
            panic!("unexpected {frame:?}");
        };
        assert_eq!(stream_id, 1);
        assert!(
            data.len() <= 16 * 1024,
            "DATA frame of {} bytes",
            data.len()
        );
        received.extend_from_slice(&data);
        assert!(received.len() <= stream_granted, "stream window overrun");
        assert!(received.len() <= session_granted, "session window overrun");
        unacked += data.len();
        if unacked >= initial / 2 {
            for stream_id in [0, 1] {
                tx.send(Frame::WindowUpdate {
                    stream_id,
                    delta: u32::try_from(unacked).expect("small"),
                })
                .await;
            }
            stream_granted += unacked;
            session_granted += unacked;
            unacked = 0;
        }
        if fin {
            break;
        }
    }
    assert_eq!(received.len(), TOTAL);
    assert!(received == pattern(TOTAL), "payload differs");
    drop(writer.await.expect("writer task"));
    conn.close();
    conn.closed().await;
}

/// The client sends 4 MiB and only as much as the server's windows allow: it finishes only
/// because the server grants window (WINDOW_UPDATE) as its consumer reads.
#[tokio::test]
async fn large_upload_is_paced_by_our_window_updates() {
    const TOTAL: usize = 4 * 1024 * 1024;
    let (conn, mut incoming, mut tx, mut rx) = start(Config::default());
    let mut stream = open_accepted(&mut tx, &mut rx, &mut incoming, 1).await;
    let reader = tokio::spawn(async move {
        let mut got = Vec::with_capacity(TOTAL);
        stream.read_to_end(&mut got).await.expect("reads");
        got
    });
    let payload = pattern(TOTAL);
    let initial = i64::from(DEFAULT_WINDOW);
    let (mut stream_window, mut session_window) = (initial, initial);
    let mut sent = 0usize;
    let mut rounds = 0;
    while sent < TOTAL {
        rounds += 1;
        assert!(rounds < 100_000, "no progress");
        let window = usize::try_from(stream_window.min(session_window)).unwrap_or(0);
        if window == 0 {
            match rx.recv().await {
                Some(Frame::WindowUpdate { stream_id, delta }) => {
                    if stream_id == 0 {
                        session_window += i64::from(delta);
                    } else {
                        assert_eq!(stream_id, 1);
                        stream_window += i64::from(delta);
                    }
                }
                other => panic!("expected WINDOW_UPDATE, got {other:?}"),
            }
            continue;
        }
        let n = window.min(16 * 1024).min(TOTAL - sent);
        let last = sent + n == TOTAL;
        tx.data(1, last, &payload[sent..sent + n]).await;
        sent += n;
        stream_window -= i64::try_from(n).expect("small");
        session_window -= i64::try_from(n).expect("small");
    }
    let got = reader.await.expect("reader task");
    assert_eq!(got.len(), TOTAL);
    assert!(got == payload, "payload differs");
    conn.close();
    conn.closed().await;
}

/// spdystream never sends WINDOW_UPDATE: in the default mode the server does not wait for
/// one, or `kubectl exec` would stall after 64 KiB of output.
#[tokio::test]
async fn a_client_without_flow_control_still_gets_everything() {
    const TOTAL: usize = 1024 * 1024;
    let (_conn, mut incoming, mut tx, mut rx) = start(Config::default());
    let mut stream = open_accepted(&mut tx, &mut rx, &mut incoming, 1).await;
    let writer = tokio::spawn(async move {
        stream.write_all(&pattern(TOTAL)).await.expect("writes");
        stream.shutdown().await.expect("shuts down");
        stream
    });
    let mut received = 0usize;
    loop {
        match rx.recv().await {
            Some(Frame::Data { data, fin, .. }) => {
                received += data.len();
                if fin {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(received, TOTAL);
    drop(writer.await.expect("writer task"));
}

/// In `Honour` mode the server stops at the peer's window and goes on when it grows.
#[tokio::test]
async fn honour_mode_waits_for_window_updates() {
    let config = Config {
        peer_windows: PeerWindows::Honour,
        ..Config::default()
    };
    let (_conn, mut incoming, mut tx, mut rx) = start(config);
    let mut stream = open_accepted(&mut tx, &mut rx, &mut incoming, 1).await;
    let writer = tokio::spawn(async move {
        stream.write_all(&pattern(100_000)).await.expect("writes");
        stream.shutdown().await.expect("shuts down");
        stream
    });
    let mut received = 0usize;
    while received < DEFAULT_WINDOW as usize {
        let Some(Frame::Data { data, .. }) = rx.recv().await else {
            panic!("expected DATA");
        };
        received += data.len();
    }
    assert_eq!(received, DEFAULT_WINDOW as usize);
    // Nothing more until the window grows: the next frame is our PING's answer.
    tx.send(Frame::Ping { id: 1 }).await;
    assert_eq!(rx.recv().await, Some(Frame::Ping { id: 1 }));
    for stream_id in [0, 1] {
        tx.send(Frame::WindowUpdate {
            stream_id,
            delta: 40_000,
        })
        .await;
    }
    loop {
        let Some(Frame::Data { data, fin, .. }) = rx.recv().await else {
            panic!("expected DATA");
        };
        received += data.len();
        if fin {
            break;
        }
    }
    assert_eq!(received, 100_000);
    drop(writer.await.expect("writer task"));
}

/// A client that ignores our window cannot make the session buffer without bound: the
/// server stops reading the socket while the stream holds a window's worth.
#[tokio::test]
async fn a_slow_reader_bounds_what_the_session_buffers() {
    const TOTAL: usize = 1024 * 1024;
    let (conn, mut incoming, mut tx, mut rx) = start(Config::default());
    let mut stream = open_accepted(&mut tx, &mut rx, &mut incoming, 1).await;
    let flood = tokio::spawn(async move {
        let payload = pattern(TOTAL);
        for chunk in payload.chunks(32 * 1024) {
            tx.data(1, false, chunk).await;
        }
        tx.data(1, true, b"").await;
        tx
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let buffered = conn.shared.lock().streams.get(&1).map(|slot| slot.recv_len);
    let limit = DEFAULT_WINDOW as usize + 32 * 1024;
    assert!(
        buffered.is_some_and(|n| n > 0 && n <= limit),
        "buffered {buffered:?}"
    );
    assert!(!flood.is_finished(), "the client should be held back");
    let mut got = Vec::with_capacity(TOTAL);
    stream.read_to_end(&mut got).await.expect("reads");
    assert!(got == pattern(TOTAL), "payload differs");
    drop(flood.await.expect("flood task"));
    drop(rx);
}

#[tokio::test]
async fn a_hundred_concurrent_streams_echo() {
    const STREAMS: u32 = 100;
    let (conn, mut incoming, mut tx, mut rx) = start(Config::default());
    let server = tokio::spawn(async move {
        let mut handlers = Vec::new();
        while let Some(mut stream) = incoming.recv().await {
            handlers.push(tokio::spawn(async move {
                let mut got = Vec::new();
                stream.read_to_end(&mut got).await.expect("reads");
                stream.write_all(&got).await.expect("writes");
                stream.shutdown().await.expect("shuts down");
            }));
        }
        for handler in handlers {
            handler.await.expect("handler");
        }
    });
    let payload = |i: u32| format!("stream {i} ").repeat(usize::try_from(i).expect("small") + 1);
    for i in 0..STREAMS {
        let id = 2 * i + 1;
        tx.open(id, &[("streamtype", "data"), ("requestid", &i.to_string())])
            .await;
    }
    for i in 0..STREAMS {
        tx.data(2 * i + 1, true, payload(i).as_bytes()).await;
    }
    let mut echoed: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut finished = 0;
    let mut replies = 0;
    while finished < STREAMS {
        match rx.recv().await {
            Some(Frame::SynReply { .. }) => replies += 1,
            Some(Frame::Data {
                stream_id,
                fin,
                data,
            }) => {
                echoed
                    .entry(stream_id)
                    .or_default()
                    .extend_from_slice(&data);
                if fin {
                    finished += 1;
                }
            }
            Some(Frame::WindowUpdate { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(replies, STREAMS);
    for i in 0..STREAMS {
        assert_eq!(echoed[&(2 * i + 1)], payload(i).as_bytes(), "stream {i}");
    }
    tx.send(Frame::GoAway {
        last_good_stream_id: 0,
        status: GoAwayStatus::OK,
    })
    .await;
    conn.closed().await;
    server.await.expect("server task");
    // Every stream was fully closed both ways, so none is left behind.
    assert!(conn.shared.lock().streams.is_empty());
}

#[tokio::test]
async fn client_goaway_ends_every_stream_and_the_task() {
    let (conn, mut incoming, mut tx, mut rx) = start(Config::default());
    let mut first = open_accepted(&mut tx, &mut rx, &mut incoming, 1).await;
    let mut second = open_accepted(&mut tx, &mut rx, &mut incoming, 3).await;
    tx.data(1, false, b"last words").await;
    tx.send(Frame::GoAway {
        last_good_stream_id: 0,
        status: GoAwayStatus::OK,
    })
    .await;
    tokio::time::timeout(TIMEOUT, conn.closed())
        .await
        .expect("the session ends");
    assert!(conn.is_closed());
    let mut got = Vec::new();
    first
        .read_to_end(&mut got)
        .await
        .expect("buffered data, then EOF");
    assert_eq!(got, b"last words");
    let mut none = Vec::new();
    second.read_to_end(&mut none).await.expect("EOF");
    assert!(none.is_empty());
    let error = second
        .write_all(b"x")
        .await
        .expect_err("write after the end");
    assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    assert!(incoming.recv().await.is_none(), "no more streams");
    drop((first, second, rx, tx));
    assert_no_tasks_left().await;
}

#[tokio::test]
async fn client_eof_ends_the_session() {
    let (conn, mut incoming, mut tx, mut rx) = start(Config::default());
    let mut stream = open_accepted(&mut tx, &mut rx, &mut incoming, 1).await;
    drop(tx);
    drop(rx);
    tokio::time::timeout(TIMEOUT, conn.closed())
        .await
        .expect("the session ends");
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.expect("EOF");
    assert!(incoming.recv().await.is_none());
    drop(stream);
    assert_no_tasks_left().await;
}

#[tokio::test]
async fn close_flushes_then_sends_goaway() {
    let (conn, mut incoming, mut tx, mut rx) = start(Config::default());
    let _first = open_accepted(&mut tx, &mut rx, &mut incoming, 1).await;
    let mut third = open_accepted(&mut tx, &mut rx, &mut incoming, 3).await;
    third.write_all(b"bye").await.expect("writes");
    conn.close();
    assert_eq!(
        rx.recv().await,
        Some(Frame::Data {
            stream_id: 3,
            fin: false,
            data: Bytes::from_static(b"bye"),
        })
    );
    assert_eq!(
        rx.recv().await,
        Some(Frame::GoAway {
            last_good_stream_id: 3,
            status: GoAwayStatus::OK,
        })
    );
    assert_eq!(rx.recv().await, None, "the server closed the connection");
    conn.closed().await;
    drop((third, tx, rx, incoming));
    assert_no_tasks_left().await;
}

#[tokio::test]
async fn a_bad_frame_ends_the_session_with_protocol_error() {
    let (conn, _incoming, mut tx, mut rx) = start(Config::default());
    tx.wr
        .write_all(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1])
        .await
        .expect("writes");
    assert_eq!(
        rx.recv().await,
        Some(Frame::GoAway {
            last_good_stream_id: 0,
            status: GoAwayStatus::PROTOCOL_ERROR,
        })
    );
    conn.closed().await;
}

#[tokio::test]
async fn dropping_the_receiver_refuses_new_streams() {
    let (_conn, incoming, mut tx, mut rx) = start(Config::default());
    drop(incoming);
    tx.open(1, &[]).await;
    let mut frames = Vec::new();
    for _ in 0..2 {
        frames.push(rx.recv().await);
    }
    assert_eq!(
        frames,
        [
            Some(Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: Headers::new(),
            }),
            Some(Frame::RstStream {
                stream_id: 1,
                status: RstStatus::CANCEL,
            }),
        ]
    );
}

/// Port-forward shape, 100 times over: 100 sessions at once, each with an error stream and
/// a data stream carrying 64 KiB each way; every session task ends afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_sessions() {
    const PAYLOAD: usize = 64 * 1024;
    let mut clients = Vec::new();
    for session in 0..100u32 {
        let (conn, mut incoming, mut tx, mut rx) = start(Config::default());
        let server = tokio::spawn(async move {
            let mut handlers = Vec::new();
            while let Some(mut stream) = incoming.recv().await {
                handlers.push(tokio::spawn(async move {
                    if stream.header("streamtype") == Some("error") {
                        stream.shutdown().await.expect("shuts down");
                        return;
                    }
                    let mut got = Vec::new();
                    stream.read_to_end(&mut got).await.expect("reads");
                    stream.write_all(&got).await.expect("writes");
                    stream.shutdown().await.expect("shuts down");
                }));
            }
            for handler in handlers {
                handler.await.expect("handler");
            }
        });
        clients.push(tokio::spawn(async move {
            let requestid = session.to_string();
            tx.open(1, &[("streamtype", "error"), ("requestid", &requestid)])
                .await;
            tx.open(3, &[("streamtype", "data"), ("requestid", &requestid)])
                .await;
            let payload = pattern(PAYLOAD);
            let sender = tokio::spawn(async move {
                for chunk in payload.chunks(16 * 1024) {
                    tx.data(3, false, chunk).await;
                }
                tx.data(3, true, b"").await;
                tx
            });
            let mut echoed = Vec::new();
            let mut fins = 0;
            while fins < 2 {
                match rx.recv().await {
                    Some(Frame::Data {
                        stream_id,
                        fin,
                        data,
                    }) => {
                        if stream_id == 3 {
                            echoed.extend_from_slice(&data);
                        }
                        if fin {
                            fins += 1;
                        }
                    }
                    Some(Frame::SynReply { .. } | Frame::WindowUpdate { .. }) => {}
                    other => panic!("session {session}: unexpected {other:?}"),
                }
            }
            assert!(
                echoed == pattern(PAYLOAD),
                "session {session}: payload differs"
            );
            let mut tx = sender.await.expect("sender task");
            tx.send(Frame::GoAway {
                last_good_stream_id: 0,
                status: GoAwayStatus::OK,
            })
            .await;
            conn.closed().await;
            server.await.expect("server task");
        }));
    }
    for client in clients {
        tokio::time::timeout(TIMEOUT, client)
            .await
            .expect("session done in time")
            .expect("client task");
    }
    assert_no_tasks_left().await;
}

/// Data for a stream whose handle is gone is dropped, but the session window it used is
/// given back, or a flow-controlled client would stall the other streams.
#[tokio::test]
async fn data_for_a_dropped_stream_still_replenishes_the_session_window() {
    let (_conn, mut incoming, mut tx, mut rx) = start(Config::default());
    let mut stream = open_accepted(&mut tx, &mut rx, &mut incoming, 1).await;
    stream.shutdown().await.expect("shuts down");
    drop(stream);
    assert_eq!(
        rx.recv().await,
        Some(Frame::Data {
            stream_id: 1,
            fin: true,
            data: Bytes::new(),
        })
    );
    tx.data(1, false, &pattern(40 * 1024)).await;
    assert_eq!(
        rx.recv().await,
        Some(Frame::WindowUpdate {
            stream_id: 0,
            delta: 40 * 1024,
        })
    );
}

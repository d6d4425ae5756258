//! A server-side SPDY/3.1 session, as kubectl speaks it for exec, attach, cp and port-forward
//! (Go's `moby/spdystream` after an HTTP/1.1 `Upgrade: SPDY/3.1`).
//!
//! [`serve`] takes the upgraded connection and runs it on one spawned task (a reader and a
//! writer joined); every stream the client opens arrives as a [`SpdyStream`], already answered
//! with an empty SYN_REPLY (what the kubelet does for every stream it accepts). A stream reads
//! the client's DATA and writes DATA back; shutting it down sends an empty DATA frame with FIN.
//!
//! Flow control: we advertise the SPDY/3.1 default windows (64 KiB per stream and for the
//! session) and send WINDOW_UPDATE as the consumer reads. What we buffer per stream is bounded:
//! a peer that ignores our window (spdystream does; it has no flow control at all) is slowed
//! by not reading the socket until the consumer catches up, as spdystream itself does.
//! Honouring the peer's windows when sending is [`PeerWindows::Auto`] by default: once the
//! peer shows it does flow control (it sends WINDOW_UPDATE or an initial window in SETTINGS)
//! its windows bound what we send; spdystream never does, and waiting for a WINDOW_UPDATE
//! that never comes would stall every exec after 64 KiB of output.
//!
//! The session ends when the client sends GOAWAY or closes the connection, on a protocol
//! error, or when [`SpdyConnection::close`] sends our GOAWAY. Then every stream reads what it
//! had buffered and then EOF, writes fail, and the task ends.

mod connection;
pub mod dictionary;
pub mod frame;

use std::{
    collections::{HashMap, VecDeque},
    io,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::{Buf, Bytes, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::{Notify, mpsc, watch},
};

pub use frame::{
    DEFAULT_WINDOW, Decoder, Encoder, Frame, FrameError, GoAwayStatus, Headers, RstStatus, Setting,
    SynStream,
};

/// Whether the session bounds what it sends by the peer's flow-control windows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PeerWindows {
    /// Honour them once the peer has sent a WINDOW_UPDATE or a SETTINGS initial window; a
    /// peer that never does (spdystream) is sent to without limit.
    #[default]
    Auto,
    /// Always honour them, as the SPDY/3.1 draft requires.
    Honour,
    /// Never honour them (SPDY/3 without flow control).
    Ignore,
}

/// Tuning of one session.
#[derive(Debug, Clone)]
pub struct Config {
    /// How to treat the peer's windows.
    pub peer_windows: PeerWindows,
    /// The largest DATA payload we send.
    pub max_data_frame: usize,
    /// How much received data one stream may hold before we stop reading the socket. We
    /// send no SETTINGS, so the peer assumes the default 64 KiB window; a stream's window is
    /// replenished each time half of this has been read.
    pub receive_buffer: usize,
    /// How much written data one stream may hold before writes wait.
    pub send_buffer: usize,
    /// How many accepted streams may wait on the receiver before we stop reading.
    pub accept_backlog: usize,
    /// How long the final writes may take once the session is ending.
    pub close_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            peer_windows: PeerWindows::Auto,
            max_data_frame: 16 * 1024,
            receive_buffer: DEFAULT_WINDOW as usize,
            send_buffer: 64 * 1024,
            accept_backlog: 32,
            close_grace: Duration::from_secs(5),
        }
    }
}

/// How many queued control frames make the reader wait for the writer (a PING flood).
const MAX_QUEUED_CONTROL: usize = 1024;
/// How many bytes of DATA the writer puts in one socket write.
const WRITE_BATCH: usize = 64 * 1024;

/// Serves SPDY/3.1 on `io` (the connection after the HTTP 101), with [`Config::default`].
/// Streams the client opens arrive on the receiver; it ends when the session does.
pub fn serve<IO>(io: IO) -> (SpdyConnection, mpsc::Receiver<SpdyStream>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    serve_with(io, Config::default())
}

/// [`serve`] with explicit tuning.
pub fn serve_with<IO>(io: IO, config: Config) -> (SpdyConnection, mpsc::Receiver<SpdyStream>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (accept_tx, accept_rx) = mpsc::channel(config.accept_backlog.max(1));
    let initial = i64::from(DEFAULT_WINDOW);
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            streams: HashMap::new(),
            control: VecDeque::new(),
            ready: VecDeque::new(),
            send_session_window: initial,
            peer_initial_window: initial,
            enforce_peer_windows: config.peer_windows == PeerWindows::Honour,
            recv_session_unacked: 0,
            last_peer_stream: 0,
            ending: false,
            goaway_requested: false,
            goaway_sent: false,
        }),
        writer_wake: Notify::new(),
        reader_wake: Notify::new(),
        ending: watch::Sender::new(false),
        done: watch::Sender::new(false),
        config,
    });
    tokio::spawn(connection::drive(Arc::clone(&shared), io, accept_tx));
    (SpdyConnection { shared }, accept_rx)
}

/// The session as a whole.
#[derive(Debug, Clone)]
pub struct SpdyConnection {
    shared: Arc<Shared>,
}

impl SpdyConnection {
    /// Waits until the session has ended and its task has finished.
    pub async fn closed(&self) {
        let mut done = self.shared.done.subscribe();
        // The sender lives in `shared`, which we hold: this cannot fail.
        let _ = done.wait_for(|done| *done).await;
    }

    /// Sends GOAWAY (after what streams have queued and may send) and ends the session.
    /// Dropping every handle does not: the session then lasts until the client leaves.
    pub fn close(&self) {
        let mut state = self.shared.lock();
        if !state.ending {
            state.goaway_requested = true;
        }
        drop(state);
        self.shared.writer_wake.notify_one();
    }

    /// Whether the session has ended (or is ending).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().ending
    }
}

/// One stream the client opened.
#[derive(Debug)]
pub struct SpdyStream {
    id: u32,
    headers: Headers,
    shared: Arc<Shared>,
}

impl SpdyStream {
    /// The stream id (odd: the client opened it).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The first value of header `name` (e.g. "streamtype", "port", "requestid").
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.values(name).next()
    }

    /// Every header of the SYN_STREAM.
    pub fn headers(&self) -> &Headers {
        &self.headers
    }

    /// Ends the stream abnormally: RST_STREAM CANCEL; later reads and writes fail.
    pub fn reset(&self) {
        let mut state = self.shared.lock();
        state.reset_stream(self.id, true);
        drop(state);
        self.shared.wake_io();
    }
}

impl Drop for SpdyStream {
    /// A stream dropped before its FIN was queued is reset (RST_STREAM CANCEL); one already
    /// shut down keeps sending what it queued and discards what still arrives.
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        let ending = state.ending;
        let Some(slot) = state.streams.get_mut(&self.id) else {
            return;
        };
        slot.detached = true;
        if !slot.fin_queued && !slot.reset && !ending {
            state.reset_stream(self.id, true);
        } else {
            let discarded = slot.discard_received();
            state.credit_session(discarded);
            state.remove_if_done(self.id);
        }
        drop(state);
        self.shared.wake_io();
    }
}

impl AsyncRead for SpdyStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let shared = Arc::clone(&self.shared);
        let mut state = shared.lock();
        let ending = state.ending;
        let receive_window = shared.config.receive_buffer;
        let Some(slot) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Ok(()));
        };
        if slot.reset {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "SPDY stream was reset",
            )));
        }
        let mut copied = 0usize;
        while buf.remaining() > 0 {
            let Some(front) = slot.recv.front_mut() else {
                break;
            };
            let n = front.len().min(buf.remaining());
            buf.put_slice(&front[..n]);
            front.advance(n);
            if front.is_empty() {
                slot.recv.pop_front();
            }
            copied += n;
        }
        if copied == 0 {
            if slot.recv_fin || ending {
                return Poll::Ready(Ok(()));
            }
            slot.read_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        slot.recv_len -= copied;
        slot.recv_unacked += copied;
        let ack_stream = if !slot.recv_fin && slot.recv_unacked >= receive_window / 2 {
            Some(std::mem::take(&mut slot.recv_unacked))
        } else {
            None
        };
        let id = self.id;
        if let Some(delta) = ack_stream {
            state.queue_window_update(id, delta);
        }
        state.credit_session_threshold(copied, receive_window);
        drop(state);
        shared.writer_wake.notify_one();
        shared.reader_wake.notify_one();
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for SpdyStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let shared = Arc::clone(&self.shared);
        let mut state = shared.lock();
        let ending = state.ending;
        let limit = shared.config.send_buffer.max(1);
        let Some(slot) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Err(broken_pipe("SPDY stream is gone")));
        };
        if slot.reset {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "SPDY stream was reset",
            )));
        }
        if ending {
            return Poll::Ready(Err(broken_pipe("SPDY session has ended")));
        }
        if slot.fin_queued {
            return Poll::Ready(Err(broken_pipe("SPDY stream was shut down")));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if slot.send_len >= limit {
            slot.write_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let n = data.len().min(limit - slot.send_len);
        slot.send.push_back(Bytes::copy_from_slice(&data[..n]));
        slot.send_len += n;
        let id = self.id;
        state.mark_ready(id);
        drop(state);
        shared.writer_wake.notify_one();
        Poll::Ready(Ok(n))
    }

    /// Waits until everything written has been handed to the connection.
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut state = self.shared.lock();
        let ending = state.ending;
        let Some(slot) = state.streams.get_mut(&self.id) else {
            return Poll::Ready(Ok(()));
        };
        if slot.reset {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "SPDY stream was reset",
            )));
        }
        if slot.send_len == 0 || ending {
            return Poll::Ready(Ok(()));
        }
        slot.write_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Queues an empty DATA frame with FIN after what was written, and waits until it is
    /// handed to the connection. Reads keep working (a half-close).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shared = Arc::clone(&self.shared);
        let mut state = shared.lock();
        let ending = state.ending;
        let id = self.id;
        let Some(slot) = state.streams.get_mut(&id) else {
            return Poll::Ready(Ok(()));
        };
        if slot.reset {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "SPDY stream was reset",
            )));
        }
        if slot.fin_sent || ending {
            return Poll::Ready(Ok(()));
        }
        slot.write_waker = Some(cx.waker().clone());
        if !slot.fin_queued {
            slot.fin_queued = true;
            state.mark_ready(id);
            drop(state);
            shared.writer_wake.notify_one();
        }
        Poll::Pending
    }
}

fn broken_pipe(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, message)
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the writer: control frames or stream data are waiting, or the session ends.
    writer_wake: Notify,
    /// Wakes the reader when a consumer made room in a receive buffer (or the control queue).
    reader_wake: Notify,
    /// Set once the session is ending.
    ending: watch::Sender<bool>,
    /// Set once the session's task has finished.
    done: watch::Sender<bool>,
    config: Config,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind; carry on with them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake_io(&self) {
        self.writer_wake.notify_one();
        self.reader_wake.notify_one();
    }

    /// Ends the session: streams read EOF after their buffers, writes fail.
    fn end(&self) {
        let mut state = self.lock();
        state.ending = true;
        for slot in state.streams.values_mut() {
            slot.wake_all();
        }
        drop(state);
        self.ending.send_replace(true);
        self.wake_io();
    }
}

#[derive(Debug)]
struct State {
    streams: HashMap<u32, Slot>,
    /// Control frames waiting for the writer, in order.
    control: VecDeque<Frame>,
    /// Streams with data or a FIN the writer may send, round-robin.
    ready: VecDeque<u32>,
    send_session_window: i64,
    peer_initial_window: i64,
    enforce_peer_windows: bool,
    /// Bytes consumed (or discarded) since the last session WINDOW_UPDATE.
    recv_session_unacked: usize,
    last_peer_stream: u32,
    ending: bool,
    goaway_requested: bool,
    goaway_sent: bool,
}

#[derive(Debug, Default)]
struct Slot {
    recv: VecDeque<Bytes>,
    recv_len: usize,
    recv_fin: bool,
    /// Bytes consumed since the last WINDOW_UPDATE for this stream.
    recv_unacked: usize,
    /// Reset by either side: reads and writes fail.
    reset: bool,
    /// The handle was dropped: arriving data is discarded.
    detached: bool,
    read_waker: Option<Waker>,
    send: VecDeque<Bytes>,
    send_len: usize,
    fin_queued: bool,
    fin_sent: bool,
    send_window: i64,
    write_waker: Option<Waker>,
    /// In `State::ready`.
    queued: bool,
}

impl Slot {
    fn wake_all(&mut self) {
        if let Some(waker) = self.read_waker.take() {
            waker.wake();
        }
        if let Some(waker) = self.write_waker.take() {
            waker.wake();
        }
    }

    /// Drops what was received and not read; returns how many bytes that was.
    fn discard_received(&mut self) -> usize {
        let n = self.recv_len;
        self.recv.clear();
        self.recv_len = 0;
        n
    }

    fn has_sendable(&self) -> bool {
        self.send_len > 0 || (self.fin_queued && !self.fin_sent)
    }

    fn done(&self) -> bool {
        self.detached && (self.reset || (self.recv_fin && self.fin_sent))
    }
}

impl State {
    fn mark_ready(&mut self, id: u32) {
        if let Some(slot) = self.streams.get_mut(&id)
            && !slot.queued
            && slot.has_sendable()
        {
            slot.queued = true;
            self.ready.push_back(id);
        }
    }

    fn queue_window_update(&mut self, stream_id: u32, delta: usize) {
        let delta = u32::try_from(delta).unwrap_or(frame::MAX_WINDOW);
        if delta > 0 && !self.ending {
            self.control
                .push_back(Frame::WindowUpdate { stream_id, delta });
        }
    }

    /// Counts bytes the session consumed; acknowledges them when half a window is due.
    fn credit_session_threshold(&mut self, consumed: usize, window: usize) {
        self.recv_session_unacked += consumed;
        if self.recv_session_unacked >= window / 2 {
            let delta = std::mem::take(&mut self.recv_session_unacked);
            self.queue_window_update(0, delta);
        }
    }

    fn credit_session(&mut self, consumed: usize) {
        self.credit_session_threshold(consumed, DEFAULT_WINDOW as usize);
    }

    /// Marks the stream reset, drops its buffers and (when `send_rst`) queues RST_STREAM
    /// CANCEL.
    fn reset_stream(&mut self, id: u32, send_rst: bool) {
        let ending = self.ending;
        let Some(slot) = self.streams.get_mut(&id) else {
            return;
        };
        if slot.reset {
            return;
        }
        slot.reset = true;
        let discarded = slot.discard_received();
        slot.send.clear();
        slot.send_len = 0;
        slot.wake_all();
        if send_rst && !ending {
            self.control.push_back(Frame::RstStream {
                stream_id: id,
                status: RstStatus::CANCEL,
            });
        }
        self.credit_session(discarded);
        self.remove_if_done(id);
    }

    fn remove_if_done(&mut self, id: u32) {
        if self.streams.get(&id).is_some_and(Slot::done) {
            self.streams.remove(&id);
        }
    }

    /// The next frames for the writer: control frames first, then up to [`WRITE_BATCH`] bytes
    /// of DATA taken round-robin from the streams, then our GOAWAY once nothing is sendable.
    fn next_batch(&mut self, config: &Config, out: &mut Vec<Frame>) {
        let control = self.control.len().min(256);
        out.extend(self.control.drain(..control));
        let mut budget = WRITE_BATCH;
        let mut turns = self.ready.len();
        while budget > 0 && turns > 0 {
            turns -= 1;
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let enforce = self.enforce_peer_windows;
            let session_window = self.send_session_window;
            let Some(slot) = self.streams.get_mut(&id) else {
                continue;
            };
            slot.queued = false;
            if slot.reset {
                continue;
            }
            let mut allowed = slot.send_len.min(config.max_data_frame).min(budget);
            if enforce {
                let window = slot.send_window.min(session_window).max(0);
                allowed = allowed.min(usize::try_from(window).unwrap_or(0));
            }
            let mut data = BytesMut::with_capacity(allowed);
            while data.len() < allowed {
                let Some(front) = slot.send.front_mut() else {
                    break;
                };
                let n = front.len().min(allowed - data.len());
                data.extend_from_slice(&front[..n]);
                front.advance(n);
                if front.is_empty() {
                    slot.send.pop_front();
                }
            }
            let n = data.len();
            slot.send_len -= n;
            let fin = slot.fin_queued && !slot.fin_sent && slot.send_len == 0;
            if n == 0 && !fin {
                // Blocked by a window; a WINDOW_UPDATE puts it back in line.
                continue;
            }
            let signed = i64::try_from(n).unwrap_or(i64::MAX);
            slot.send_window -= signed;
            if fin {
                slot.fin_sent = true;
            }
            if let Some(waker) = slot.write_waker.take() {
                waker.wake();
            }
            let again = slot.has_sendable();
            self.send_session_window -= signed;
            budget -= n;
            out.push(Frame::Data {
                stream_id: id,
                fin,
                data: data.freeze(),
            });
            if again {
                self.mark_ready(id);
            }
            if fin {
                self.remove_if_done(id);
            }
        }
        let sendable = self
            .ready
            .iter()
            .any(|id| self.streams.get(id).is_some_and(|slot| !slot.reset));
        if self.goaway_requested && !self.goaway_sent && !sendable && self.control.is_empty() {
            self.goaway_sent = true;
            out.push(Frame::GoAway {
                last_good_stream_id: self.last_peer_stream,
                status: GoAwayStatus::OK,
            });
        }
    }

    /// The peer's windows changed: streams blocked on them may send again.
    fn requeue_blocked(&mut self) {
        let ids: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, slot)| !slot.queued && slot.has_sendable() && !slot.reset)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.mark_ready(id);
        }
    }
}

#[cfg(test)]
mod tests;

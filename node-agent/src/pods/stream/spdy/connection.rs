//! The session's task: a reader turning frames into stream state and a writer draining the
//! control queue and the streams' data, joined until the session ends.

use std::{io, sync::Arc};

use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::mpsc,
};

use super::*;

/// Runs the session: the reader and the writer on this one task.
pub(super) async fn drive<IO>(shared: Arc<Shared>, io: IO, accept: mpsc::Sender<SpdyStream>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let mut ending = shared.ending.subscribe();
    let reader = async {
        tokio::select! {
            result = read_loop(&shared, rd, accept) => {
                if let Err(error) = result {
                    tracing::debug!(%error, "SPDY session: bad frame from the client");
                    let mut state = shared.lock();
                    let last_good_stream_id = state.last_peer_stream;
                    state.control.push_back(Frame::GoAway {
                        last_good_stream_id,
                        status: GoAwayStatus::PROTOCOL_ERROR,
                    });
                    state.goaway_sent = true;
                }
            }
            _ = ending.wait_for(|ending| *ending) => {}
        }
        shared.end();
    };
    let writer = write_loop(&shared, wr);
    tokio::join!(reader, writer);
    shared.done.send_replace(true);
}

/// Reads and handles frames until EOF, a read error, GOAWAY or a frame error.
async fn read_loop<R>(
    shared: &Arc<Shared>,
    mut rd: R,
    accept: mpsc::Sender<SpdyStream>,
) -> Result<(), FrameError>
where
    R: AsyncRead + Unpin,
{
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        while let Some(frame) = decoder.decode(&mut buf)? {
            if !handle_frame(shared, frame, &accept).await {
                return Ok(());
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "SPDY session: read failed");
                return Ok(());
            }
        }
    }
}

/// Handles one frame; false when the session ends.
async fn handle_frame(
    shared: &Arc<Shared>,
    frame: Frame,
    accept: &mpsc::Sender<SpdyStream>,
) -> bool {
    match frame {
        Frame::SynStream(syn) => {
            let Some(stream) = open_stream(shared, syn) else {
                return true;
            };
            // A dropped receiver drops the stream, which resets it.
            let _ = accept.send(stream).await;
        }
        Frame::Data {
            stream_id,
            fin,
            data,
        } => {
            receive_data(shared, stream_id, fin, data);
            wait_for_room(shared, stream_id).await;
        }
        Frame::Headers { stream_id, fin, .. } => {
            if fin {
                receive_data(shared, stream_id, true, Bytes::new());
            }
        }
        Frame::RstStream { stream_id, .. } => {
            let mut state = shared.lock();
            state.reset_stream(stream_id, false);
        }
        Frame::Settings { entries, .. } => {
            let mut state = shared.lock();
            for setting in entries {
                if setting.id == frame::SETTINGS_INITIAL_WINDOW_SIZE {
                    let value = i64::from(setting.value.min(frame::MAX_WINDOW));
                    let delta = value - state.peer_initial_window;
                    state.peer_initial_window = value;
                    for slot in state.streams.values_mut() {
                        slot.send_window += delta;
                    }
                    if shared.config.peer_windows == PeerWindows::Auto {
                        state.enforce_peer_windows = true;
                    }
                }
            }
            state.requeue_blocked();
            drop(state);
            shared.writer_wake.notify_one();
        }
        Frame::WindowUpdate { stream_id, delta } => {
            let mut state = shared.lock();
            let delta = i64::from(delta);
            let max = i64::from(frame::MAX_WINDOW);
            if stream_id == 0 {
                state.send_session_window = (state.send_session_window + delta).min(max);
            } else if let Some(slot) = state.streams.get_mut(&stream_id) {
                slot.send_window = (slot.send_window + delta).min(max);
            }
            if shared.config.peer_windows == PeerWindows::Auto {
                state.enforce_peer_windows = true;
            }
            state.requeue_blocked();
            drop(state);
            shared.writer_wake.notify_one();
        }
        Frame::Ping { id } => {
            // Client pings are odd; even ids would answer our own pings, and we send none.
            if !id.is_multiple_of(2) {
                shared.lock().control.push_back(Frame::Ping { id });
                shared.writer_wake.notify_one();
                wait_for_control_room(shared).await;
            }
        }
        Frame::GoAway { .. } => return false,
        Frame::SynReply { .. } | Frame::Unknown { .. } => {}
    }
    true
}

/// Registers a client stream and queues its SYN_REPLY; `None` when it is refused.
fn open_stream(shared: &Arc<Shared>, syn: SynStream) -> Option<SpdyStream> {
    let mut state = shared.lock();
    let id = syn.stream_id;
    if state.goaway_requested || state.goaway_sent || state.ending {
        state.control.push_back(Frame::RstStream {
            stream_id: id,
            status: RstStatus::REFUSED_STREAM,
        });
        drop(state);
        shared.writer_wake.notify_one();
        return None;
    }
    if id.is_multiple_of(2) || id <= state.last_peer_stream {
        let status = if state.streams.contains_key(&id) {
            RstStatus::STREAM_IN_USE
        } else {
            RstStatus::PROTOCOL_ERROR
        };
        state.control.push_back(Frame::RstStream {
            stream_id: id,
            status,
        });
        drop(state);
        shared.writer_wake.notify_one();
        return None;
    }
    state.last_peer_stream = id;
    let slot = Slot {
        recv_fin: syn.fin,
        // A unidirectional stream is closed for our side from the start.
        fin_queued: syn.unidirectional,
        fin_sent: syn.unidirectional,
        send_window: state.peer_initial_window,
        ..Slot::default()
    };
    state.streams.insert(id, slot);
    if !syn.unidirectional {
        state.control.push_back(Frame::SynReply {
            stream_id: id,
            fin: false,
            headers: Headers::new(),
        });
    }
    drop(state);
    shared.writer_wake.notify_one();
    Some(SpdyStream {
        id,
        headers: syn.headers,
        shared: Arc::clone(shared),
    })
}

fn receive_data(shared: &Shared, id: u32, fin: bool, data: Bytes) {
    let mut state = shared.lock();
    let n = data.len();
    let accepted = match state.streams.get_mut(&id) {
        Some(slot) if !slot.reset && !slot.detached && !slot.recv_fin => {
            if n > 0 {
                slot.recv.push_back(data);
                slot.recv_len += n;
            }
            if fin {
                slot.recv_fin = true;
            }
            if let Some(waker) = slot.read_waker.take() {
                waker.wake();
            }
            true
        }
        Some(slot) => {
            if fin {
                slot.recv_fin = true;
            }
            false
        }
        None => false,
    };
    if !accepted {
        // Discarded bytes still count against the session window: give them back.
        state.credit_session(n);
    }
    state.remove_if_done(id);
    drop(state);
    shared.writer_wake.notify_one();
}

/// Waits while `id` holds more than its receive buffer (a peer ignoring our window).
async fn wait_for_room(shared: &Shared, id: u32) {
    let limit = shared.config.receive_buffer;
    loop {
        let notified = shared.reader_wake.notified();
        {
            let state = shared.lock();
            let full = state
                .streams
                .get(&id)
                .is_some_and(|slot| slot.recv_len > limit && !slot.reset && !slot.detached);
            if !full || state.ending {
                return;
            }
        }
        notified.await;
    }
}

/// Waits while the control queue is longer than [`MAX_QUEUED_CONTROL`].
async fn wait_for_control_room(shared: &Shared) {
    loop {
        let notified = shared.reader_wake.notified();
        {
            let state = shared.lock();
            if state.control.len() <= MAX_QUEUED_CONTROL || state.ending {
                return;
            }
        }
        notified.await;
    }
}

/// Writes queued frames until the session has ended and nothing is left to send.
async fn write_loop<W>(shared: &Shared, mut wr: W)
where
    W: AsyncWrite + Unpin,
{
    let mut encoder = Encoder::new();
    let mut out = BytesMut::with_capacity(WRITE_BATCH + 1024);
    let mut frames = Vec::new();
    let mut ending = shared.ending.subscribe();
    loop {
        let notified = shared.writer_wake.notified();
        let finished = {
            let mut state = shared.lock();
            state.next_batch(&shared.config, &mut frames);
            state.ending
        };
        if frames.is_empty() {
            if finished {
                break;
            }
            notified.await;
            continue;
        }
        // Room in the control queue for a reader that waits on it.
        shared.reader_wake.notify_one();
        let mut sent_goaway = false;
        for frame in frames.drain(..) {
            sent_goaway |= matches!(frame, Frame::GoAway { .. });
            if let Err(error) = encoder.encode(&frame, &mut out) {
                tracing::debug!(%error, "SPDY session: cannot encode a frame");
            }
        }
        let grace = shared.config.close_grace;
        let write = async {
            wr.write_all(&out).await?;
            wr.flush().await
        };
        let result = tokio::select! {
            result = write => result,
            _ = async {
                let _ = ending.wait_for(|ending| *ending).await;
                tokio::time::sleep(grace).await;
            } => Err(io::Error::new(io::ErrorKind::TimedOut, "peer stopped reading")),
        };
        out.clear();
        if let Err(error) = result {
            tracing::debug!(%error, "SPDY session: write failed");
            shared.end();
            break;
        }
        if sent_goaway {
            shared.end();
        }
    }
    let _ = tokio::time::timeout(shared.config.close_grace, wr.shutdown()).await;
}

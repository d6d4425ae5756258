//! SPDY/3.1 frames: a pure codec, no IO.
//!
//! Every frame starts with 8 bytes. A control frame: the control bit, a 15-bit version (3),
//! a 16-bit type, 8 bits of flags and a 24-bit length. A data frame: a clear top bit, the
//! 31-bit stream id, 8 bits of flags and a 24-bit length. All integers are big-endian.
//!
//! SYN_STREAM, SYN_REPLY and HEADERS carry a header block: a 32-bit count, then for each
//! header a 32-bit name length, the (lower-case) name, a 32-bit value length and the value,
//! several values of one name joined by NUL. Header blocks are zlib-compressed with the
//! SPDY/3 dictionary through one compression context per direction that lives as long as
//! the connection ([`Encoder`] for what we send, [`Decoder`] for what we receive), each
//! block ending on a SYNC_FLUSH boundary.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use super::dictionary::DICTIONARY;

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// The size of every frame header.
pub const HEADER_LEN: usize = 8;
/// The largest payload the 24-bit length field can describe.
pub const MAX_PAYLOAD: usize = (1 << 24) - 1;
/// The initial stream and session flow-control window of SPDY/3.1 (64 KiB).
pub const DEFAULT_WINDOW: u32 = 65_536;
/// The largest a flow-control window may grow (2^31 - 1).
pub const MAX_WINDOW: u32 = 0x7fff_ffff;
/// How large a decompressed header block may be before we refuse it.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// Control frame types.
mod kind {
    pub const SYN_STREAM: u16 = 1;
    pub const SYN_REPLY: u16 = 2;
    pub const RST_STREAM: u16 = 3;
    pub const SETTINGS: u16 = 4;
    pub const PING: u16 = 6;
    pub const GOAWAY: u16 = 7;
    pub const HEADERS: u16 = 8;
    pub const WINDOW_UPDATE: u16 = 9;
}

/// FLAG_FIN on SYN_STREAM, SYN_REPLY, HEADERS and DATA.
const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL on SYN_STREAM.
const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// FLAG_SETTINGS_CLEAR_SETTINGS on SETTINGS.
const FLAG_CLEAR_SETTINGS: u8 = 0x01;

/// The status code of a RST_STREAM frame (draft section 2.6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RstStatus(pub u32);

impl RstStatus {
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: Self = Self(1);
    /// INVALID_STREAM: a frame for a stream that is not active.
    pub const INVALID_STREAM: Self = Self(2);
    /// REFUSED_STREAM: the stream was refused before any processing.
    pub const REFUSED_STREAM: Self = Self(3);
    /// UNSUPPORTED_VERSION.
    pub const UNSUPPORTED_VERSION: Self = Self(4);
    /// CANCEL: the stream is no longer needed.
    pub const CANCEL: Self = Self(5);
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: Self = Self(6);
    /// FLOW_CONTROL_ERROR: the peer sent more than the window allowed.
    pub const FLOW_CONTROL_ERROR: Self = Self(7);
    /// STREAM_IN_USE: a SYN_STREAM for an id already open.
    pub const STREAM_IN_USE: Self = Self(8);
    /// STREAM_ALREADY_CLOSED: data on a stream the peer already half-closed.
    pub const STREAM_ALREADY_CLOSED: Self = Self(9);
}

/// The status code of a GOAWAY frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoAwayStatus(pub u32);

impl GoAwayStatus {
    /// OK: a normal session teardown.
    pub const OK: Self = Self(0);
    /// PROTOCOL_ERROR.
    pub const PROTOCOL_ERROR: Self = Self(1);
    /// INTERNAL_ERROR.
    pub const INTERNAL_ERROR: Self = Self(2);
}

/// SETTINGS_INITIAL_WINDOW_SIZE: the sender's initial stream window.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

/// One id/value pair of a SETTINGS frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// FLAG_SETTINGS_PERSIST_VALUE (1) / FLAG_SETTINGS_PERSISTED (2).
    pub flags: u8,
    /// The 24-bit setting id.
    pub id: u32,
    /// The value.
    pub value: u32,
}

/// A decoded header block: lower-case names in the order they came, values as sent (several
/// values of one name joined by NUL).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(String, String)>,
}

impl Headers {
    /// An empty block.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a header; the name is lower-cased (SPDY requires lower-case names).
    pub fn push(&mut self, name: &str, value: &str) {
        self.entries
            .push((name.to_ascii_lowercase(), value.to_owned()));
    }

    /// The raw value of `name` (several values joined by NUL), if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The values of `name`, split at NUL.
    pub fn values<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a str> + use<'a> {
        self.get(name).into_iter().flat_map(|v| v.split('\0'))
    }

    /// All headers as (name, raw value) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// How many headers the block holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the block is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl<const N: usize> From<[(&str, &str); N]> for Headers {
    fn from(pairs: [(&str, &str); N]) -> Self {
        let mut headers = Self::new();
        for (name, value) in pairs {
            headers.push(name, value);
        }
        headers
    }
}

/// A SYN_STREAM frame: the peer opens a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynStream {
    /// The new stream's id (odd when the client opens it).
    pub stream_id: u32,
    /// The stream this one is associated with, 0 for none.
    pub associated_to: u32,
    /// 3-bit priority, 0 the highest.
    pub priority: u8,
    /// The credential slot (unused by kubectl).
    pub slot: u8,
    /// FLAG_FIN: the opener sends nothing more.
    pub fin: bool,
    /// FLAG_UNIDIRECTIONAL: the receiver must not send on it.
    pub unidirectional: bool,
    /// The header block.
    pub headers: Headers,
}

/// One SPDY/3.1 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// SYN_STREAM.
    SynStream(SynStream),
    /// SYN_REPLY: the answer to a SYN_STREAM.
    SynReply {
        /// The stream answered.
        stream_id: u32,
        /// FLAG_FIN.
        fin: bool,
        /// The header block.
        headers: Headers,
    },
    /// RST_STREAM: the stream ends abnormally.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// Why.
        status: RstStatus,
    },
    /// SETTINGS.
    Settings {
        /// FLAG_SETTINGS_CLEAR_SETTINGS.
        clear: bool,
        /// The id/value pairs.
        entries: Vec<Setting>,
    },
    /// PING: echoed unchanged by the receiver of a peer-initiated one.
    Ping {
        /// The ping id (odd from the client, even from the server).
        id: u32,
    },
    /// GOAWAY: the sender accepts no new streams and is ending the session.
    GoAway {
        /// The last stream the sender accepted.
        last_good_stream_id: u32,
        /// Why.
        status: GoAwayStatus,
    },
    /// HEADERS: more headers for a stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// FLAG_FIN.
        fin: bool,
        /// The header block.
        headers: Headers,
    },
    /// WINDOW_UPDATE: the receiver may take `delta` more bytes (stream 0: the session).
    WindowUpdate {
        /// The stream, 0 for the session window.
        stream_id: u32,
        /// Bytes added to the window, 1 to 2^31 - 1.
        delta: u32,
    },
    /// DATA.
    Data {
        /// The stream.
        stream_id: u32,
        /// FLAG_FIN: the sender's last frame on this stream.
        fin: bool,
        /// The payload.
        data: Bytes,
    },
    /// A control frame of a type this codec does not know (the draft says to ignore it).
    Unknown {
        /// The control frame type.
        frame_type: u16,
    },
}

/// Why a frame could not be decoded or encoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A control frame of another SPDY version.
    #[error("unsupported SPDY version {version}")]
    UnsupportedVersion {
        /// The version in the frame.
        version: u16,
    },
    /// A control frame whose length does not fit its type.
    #[error("control frame type {frame_type} has invalid length {length}")]
    BadLength {
        /// The control frame type.
        frame_type: u16,
        /// The length field.
        length: usize,
    },
    /// A frame that names stream 0 where a stream is required.
    #[error("control frame type {frame_type} names stream 0")]
    ZeroStreamId {
        /// The control frame type (0 for DATA).
        frame_type: u16,
    },
    /// RST_STREAM with status 0, or a WINDOW_UPDATE with delta 0.
    #[error("control frame type {frame_type} carries invalid value {value}")]
    InvalidValue {
        /// The control frame type.
        frame_type: u16,
        /// The offending value.
        value: u32,
    },
    /// The header block did not inflate with the SPDY dictionary.
    #[error("header block does not decompress: {reason}")]
    Decompress {
        /// What zlib reported.
        reason: String,
    },
    /// The header block inflates to more than [`MAX_HEADER_BLOCK`] bytes.
    #[error("header block larger than {MAX_HEADER_BLOCK} bytes")]
    HeaderBlockTooLarge,
    /// The inflated header block is shorter than its counts say, or has bytes left over.
    #[error("malformed header block")]
    MalformedHeaderBlock,
    /// A header name with upper-case letters, or an empty one.
    #[error("invalid header name {name:?}")]
    InvalidHeaderName {
        /// The name as sent.
        name: String,
    },
    /// The same header name twice in one block.
    #[error("duplicate header {name:?}")]
    DuplicateHeader {
        /// The name.
        name: String,
    },
    /// A header name or value that is not UTF-8.
    #[error("header is not UTF-8")]
    NotUtf8,
    /// A payload too large for the 24-bit length field.
    #[error("frame payload of {length} bytes exceeds the 24-bit length")]
    TooLarge {
        /// The payload length.
        length: usize,
    },
    /// The header block could not be compressed.
    #[error("header block does not compress: {reason}")]
    Compress {
        /// What zlib reported.
        reason: String,
    },
}

/// Writes frames, compressing header blocks through one zlib context.
pub struct Encoder {
    deflate: Compress,
    primed: bool,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").finish_non_exhaustive()
    }
}

impl Default for Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Encoder {
    /// A fresh compression context, for one connection direction.
    pub fn new() -> Self {
        Self {
            deflate: Compress::new(Compression::default(), true),
            primed: false,
        }
    }

    /// Appends `frame` to `out`.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), FrameError> {
        match frame {
            Frame::SynStream(syn) => {
                let block = self.compress(&syn.headers)?;
                let flags = if syn.fin { FLAG_FIN } else { 0 }
                    | if syn.unidirectional {
                        FLAG_UNIDIRECTIONAL
                    } else {
                        0
                    };
                control_header(out, kind::SYN_STREAM, flags, 10 + block.len())?;
                out.put_u32(syn.stream_id & MAX_WINDOW);
                out.put_u32(syn.associated_to & MAX_WINDOW);
                out.put_u8((syn.priority & 0x07) << 5);
                out.put_u8(syn.slot);
                out.put_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            } => self.stream_headers(out, kind::SYN_REPLY, *stream_id, *fin, headers)?,
            Frame::Headers {
                stream_id,
                fin,
                headers,
            } => self.stream_headers(out, kind::HEADERS, *stream_id, *fin, headers)?,
            Frame::RstStream { stream_id, status } => {
                control_header(out, kind::RST_STREAM, 0, 8)?;
                out.put_u32(stream_id & MAX_WINDOW);
                out.put_u32(status.0);
            }
            Frame::Settings { clear, entries } => {
                let flags = if *clear { FLAG_CLEAR_SETTINGS } else { 0 };
                control_header(out, kind::SETTINGS, flags, 4 + 8 * entries.len())?;
                out.put_u32(u32::try_from(entries.len()).unwrap_or(u32::MAX));
                for entry in entries {
                    out.put_u32((u32::from(entry.flags) << 24) | (entry.id & 0x00ff_ffff));
                    out.put_u32(entry.value);
                }
            }
            Frame::Ping { id } => {
                control_header(out, kind::PING, 0, 4)?;
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control_header(out, kind::GOAWAY, 0, 8)?;
                out.put_u32(last_good_stream_id & MAX_WINDOW);
                out.put_u32(status.0);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control_header(out, kind::WINDOW_UPDATE, 0, 8)?;
                out.put_u32(stream_id & MAX_WINDOW);
                out.put_u32(delta & MAX_WINDOW);
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                let length = checked_length(data.len())?;
                out.reserve(HEADER_LEN + data.len());
                out.put_u32(stream_id & MAX_WINDOW);
                out.put_u32((u32::from(if *fin { FLAG_FIN } else { 0 }) << 24) | length);
                out.put_slice(data);
            }
            Frame::Unknown { frame_type } => control_header(out, *frame_type, 0, 0)?,
        }
        Ok(())
    }

    fn stream_headers(
        &mut self,
        out: &mut BytesMut,
        frame_type: u16,
        stream_id: u32,
        fin: bool,
        headers: &Headers,
    ) -> Result<(), FrameError> {
        let block = self.compress(headers)?;
        control_header(
            out,
            frame_type,
            if fin { FLAG_FIN } else { 0 },
            4 + block.len(),
        )?;
        out.put_u32(stream_id & MAX_WINDOW);
        out.put_slice(&block);
        Ok(())
    }

    fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, FrameError> {
        let raw = raw_header_block(headers)?;
        if !self.primed {
            self.deflate
                .set_dictionary(&DICTIONARY)
                .map_err(|e| FrameError::Compress {
                    reason: e.to_string(),
                })?;
            self.primed = true;
        }
        let mut out = Vec::with_capacity(raw.len() / 2 + 64);
        let mut consumed = 0usize;
        // Each round either consumes input or fills the spare room; the output needed is
        // bounded (deflate never grows data by more than a few bytes per block).
        for _ in 0..1024 {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(&raw[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| FrameError::Compress {
                    reason: e.to_string(),
                })?;
            consumed += usize::try_from(self.deflate.total_in() - before).unwrap_or(usize::MAX);
            if consumed >= raw.len() && out.capacity() - out.len() >= 64 {
                return Ok(out);
            }
        }
        Err(FrameError::Compress {
            reason: "deflate made no progress".to_owned(),
        })
    }
}

/// The uncompressed header block of `headers`.
pub fn raw_header_block(headers: &Headers) -> Result<Vec<u8>, FrameError> {
    let mut raw = Vec::with_capacity(64);
    raw.put_u32(checked_length(headers.len())?);
    for (name, value) in headers.iter() {
        raw.put_u32(checked_length(name.len())?);
        raw.put_slice(name.as_bytes());
        raw.put_u32(checked_length(value.len())?);
        raw.put_slice(value.as_bytes());
    }
    Ok(raw)
}

fn checked_length(length: usize) -> Result<u32, FrameError> {
    if length > MAX_PAYLOAD {
        return Err(FrameError::TooLarge { length });
    }
    u32::try_from(length).map_err(|_| FrameError::TooLarge { length })
}

fn control_header(
    out: &mut BytesMut,
    frame_type: u16,
    flags: u8,
    length: usize,
) -> Result<(), FrameError> {
    let length = checked_length(length)?;
    out.reserve(HEADER_LEN + length as usize);
    out.put_u16(0x8000 | VERSION);
    out.put_u16(frame_type);
    out.put_u32((u32::from(flags) << 24) | length);
    Ok(())
}

/// Reads frames, inflating header blocks through one zlib context.
pub struct Decoder {
    inflate: Decompress,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").finish_non_exhaustive()
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A fresh decompression context, for one connection direction.
    pub fn new() -> Self {
        Self {
            inflate: Decompress::new(true),
        }
    }

    /// Takes one whole frame off the front of `buf`; `Ok(None)` when `buf` holds less than
    /// a frame (nothing is consumed then). An error leaves the connection unusable: the
    /// compression context may be out of step with the peer's.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let first = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let second = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let flags = (second >> 24) as u8;
        let length = (second & 0x00ff_ffff) as usize;
        if buf.len() < HEADER_LEN + length {
            buf.reserve(HEADER_LEN + length - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let mut body = buf.split_to(length).freeze();
        if first & 0x8000_0000 == 0 {
            let stream_id = first & MAX_WINDOW;
            if stream_id == 0 {
                return Err(FrameError::ZeroStreamId { frame_type: 0 });
            }
            return Ok(Some(Frame::Data {
                stream_id,
                fin: flags & FLAG_FIN != 0,
                data: body,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        let frame_type = (first & 0xffff) as u16;
        if version != VERSION {
            return Err(FrameError::UnsupportedVersion { version });
        }
        let bad_length = || FrameError::BadLength { frame_type, length };
        let frame = match frame_type {
            kind::SYN_STREAM => {
                if length < 10 {
                    return Err(bad_length());
                }
                let stream_id = body.get_u32() & MAX_WINDOW;
                let associated_to = body.get_u32() & MAX_WINDOW;
                let priority = body.get_u8() >> 5;
                let slot = body.get_u8();
                let headers = self.headers(&body)?;
                require_stream(frame_type, stream_id)?;
                Frame::SynStream(SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    slot,
                    fin: flags & FLAG_FIN != 0,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers,
                })
            }
            kind::SYN_REPLY | kind::HEADERS => {
                if length < 4 {
                    return Err(bad_length());
                }
                let stream_id = body.get_u32() & MAX_WINDOW;
                let headers = self.headers(&body)?;
                require_stream(frame_type, stream_id)?;
                let fin = flags & FLAG_FIN != 0;
                if frame_type == kind::SYN_REPLY {
                    Frame::SynReply {
                        stream_id,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        fin,
                        headers,
                    }
                }
            }
            kind::RST_STREAM => {
                if length != 8 {
                    return Err(bad_length());
                }
                let stream_id = body.get_u32() & MAX_WINDOW;
                let status = body.get_u32();
                require_stream(frame_type, stream_id)?;
                if status == 0 {
                    return Err(FrameError::InvalidValue {
                        frame_type,
                        value: status,
                    });
                }
                Frame::RstStream {
                    stream_id,
                    status: RstStatus(status),
                }
            }
            kind::SETTINGS => {
                if length < 4 {
                    return Err(bad_length());
                }
                let count = body.get_u32() as usize;
                if count.checked_mul(8) != Some(length - 4) {
                    return Err(bad_length());
                }
                let entries = (0..count)
                    .map(|_| {
                        let flags_id = body.get_u32();
                        Setting {
                            flags: (flags_id >> 24) as u8,
                            id: flags_id & 0x00ff_ffff,
                            value: body.get_u32(),
                        }
                    })
                    .collect();
                Frame::Settings {
                    clear: flags & FLAG_CLEAR_SETTINGS != 0,
                    entries,
                }
            }
            kind::PING => {
                if length != 4 {
                    return Err(bad_length());
                }
                Frame::Ping { id: body.get_u32() }
            }
            kind::GOAWAY => {
                if length != 8 {
                    return Err(bad_length());
                }
                Frame::GoAway {
                    last_good_stream_id: body.get_u32() & MAX_WINDOW,
                    status: GoAwayStatus(body.get_u32()),
                }
            }
            kind::WINDOW_UPDATE => {
                if length != 8 {
                    return Err(bad_length());
                }
                let stream_id = body.get_u32() & MAX_WINDOW;
                let delta = body.get_u32() & MAX_WINDOW;
                if delta == 0 {
                    return Err(FrameError::InvalidValue {
                        frame_type,
                        value: delta,
                    });
                }
                Frame::WindowUpdate { stream_id, delta }
            }
            other => Frame::Unknown { frame_type: other },
        };
        Ok(Some(frame))
    }

    fn headers(&mut self, compressed: &[u8]) -> Result<Headers, FrameError> {
        let raw = self.inflate_block(compressed)?;
        parse_header_block(&raw)
    }

    fn inflate_block(&mut self, input: &[u8]) -> Result<Vec<u8>, FrameError> {
        let failed = |reason: String| FrameError::Decompress { reason };
        let mut out = Vec::with_capacity(input.len().saturating_mul(4).clamp(256, 64 * 1024));
        let mut consumed = 0usize;
        // Every round consumes input, produces output or sets the dictionary once; output is
        // capped, so the rounds are bounded too.
        for _ in 0..4096 {
            if out.capacity() - out.len() < 256 {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(FrameError::HeaderBlockTooLarge);
                }
                out.reserve(out.capacity().max(1024));
            }
            let before_in = self.inflate.total_in();
            let before_out = self.inflate.total_out();
            let result =
                self.inflate
                    .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync);
            consumed += usize::try_from(self.inflate.total_in() - before_in).unwrap_or(usize::MAX);
            let progressed =
                self.inflate.total_in() != before_in || self.inflate.total_out() != before_out;
            match result {
                Ok(_) => {
                    if consumed >= input.len() && out.capacity() - out.len() >= 256 {
                        break;
                    }
                    if !progressed && consumed >= input.len() {
                        break;
                    }
                    if !progressed {
                        return Err(failed("inflate made no progress".to_owned()));
                    }
                }
                Err(e) => match e.needs_dictionary() {
                    Some(_) => {
                        self.inflate
                            .set_dictionary(&DICTIONARY)
                            .map_err(|e| failed(e.to_string()))?;
                    }
                    None => return Err(failed(e.to_string())),
                },
            }
            if out.len() > MAX_HEADER_BLOCK {
                return Err(FrameError::HeaderBlockTooLarge);
            }
        }
        if out.len() > MAX_HEADER_BLOCK {
            return Err(FrameError::HeaderBlockTooLarge);
        }
        Ok(out)
    }
}

fn require_stream(frame_type: u16, stream_id: u32) -> Result<(), FrameError> {
    if stream_id == 0 {
        return Err(FrameError::ZeroStreamId { frame_type });
    }
    Ok(())
}

/// Parses an inflated header block.
pub fn parse_header_block(mut raw: &[u8]) -> Result<Headers, FrameError> {
    fn take<'a>(raw: &mut &'a [u8]) -> Result<&'a [u8], FrameError> {
        if raw.len() < 4 {
            return Err(FrameError::MalformedHeaderBlock);
        }
        let len = raw.get_u32() as usize;
        if raw.len() < len {
            return Err(FrameError::MalformedHeaderBlock);
        }
        let (value, rest) = raw.split_at(len);
        *raw = rest;
        Ok(value)
    }
    if raw.len() < 4 {
        return Err(FrameError::MalformedHeaderBlock);
    }
    let count = raw.get_u32() as usize;
    // Every header takes at least 8 bytes, which bounds a hostile count.
    if count > raw.len() / 8 {
        return Err(FrameError::MalformedHeaderBlock);
    }
    let mut headers = Headers::new();
    for _ in 0..count {
        let name = std::str::from_utf8(take(&mut raw)?).map_err(|_| FrameError::NotUtf8)?;
        let value = std::str::from_utf8(take(&mut raw)?).map_err(|_| FrameError::NotUtf8)?;
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(FrameError::InvalidHeaderName {
                name: name.to_owned(),
            });
        }
        if headers.get(name).is_some() {
            return Err(FrameError::DuplicateHeader {
                name: name.to_owned(),
            });
        }
        headers.entries.push((name.to_owned(), value.to_owned()));
    }
    if !raw.is_empty() {
        return Err(FrameError::MalformedHeaderBlock);
    }
    Ok(headers)
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;

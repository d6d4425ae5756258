use super::*;

fn encode(frames: &[Frame]) -> BytesMut {
    let mut encoder = Encoder::new();
    let mut out = BytesMut::new();
    for frame in frames {
        encoder.encode(frame, &mut out).expect("encodes");
    }
    out
}

fn decode_all(mut bytes: BytesMut) -> Vec<Result<Frame, FrameError>> {
    let mut decoder = Decoder::new();
    let mut frames = Vec::new();
    for _ in 0..100 {
        match decoder.decode(&mut bytes) {
            Ok(Some(frame)) => frames.push(Ok(frame)),
            Ok(None) => break,
            Err(error) => {
                frames.push(Err(error));
                break;
            }
        }
    }
    assert!(bytes.is_empty(), "bytes left over: {bytes:?}");
    frames
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn unhex(text: &str) -> BytesMut {
    let bytes: Vec<u8> = text
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).expect("hex"))
        .collect();
    BytesMut::from(&bytes[..])
}

/// The bytes of fixed-size frames, as laid out in the draft (section 2.2 and 2.6).
#[test]
fn fixed_frames_have_the_drafts_layout() {
    let cases = [
        (Frame::Ping { id: 1 }, "80 03 00 06 00 00 00 04 00 00 00 01"),
        (
            Frame::RstStream {
                stream_id: 3,
                status: RstStatus::CANCEL,
            },
            "80 03 00 03 00 00 00 08 00 00 00 03 00 00 00 05",
        ),
        (
            Frame::GoAway {
                last_good_stream_id: 5,
                status: GoAwayStatus::OK,
            },
            "80 03 00 07 00 00 00 08 00 00 00 05 00 00 00 00",
        ),
        (
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 32_768,
            },
            "80 03 00 09 00 00 00 08 00 00 00 01 00 00 80 00",
        ),
        (
            Frame::Settings {
                clear: false,
                entries: vec![Setting {
                    flags: 0,
                    id: SETTINGS_INITIAL_WINDOW_SIZE,
                    value: 131_072,
                }],
            },
            "80 03 00 04 00 00 00 0c 00 00 00 01 00 00 00 07 00 02 00 00",
        ),
        (
            Frame::Data {
                stream_id: 1,
                fin: true,
                data: Bytes::from_static(b"hi"),
            },
            "00 00 00 01 01 00 00 02 68 69",
        ),
        (
            Frame::Data {
                stream_id: 7,
                fin: true,
                data: Bytes::new(),
            },
            "00 00 00 07 01 00 00 00",
        ),
    ];
    for (frame, bytes) in cases {
        assert_eq!(
            hex(&encode(std::slice::from_ref(&frame))),
            bytes,
            "{frame:?}"
        );
        assert_eq!(decode_all(unhex(bytes)), vec![Ok(frame)], "{bytes}");
    }
}

/// A SYN_STREAM as spdystream sends it (priority 0, slot 0), its header block hand-assembled
/// as a stored deflate block behind the zlib header Go's level-9 writer emits with the SPDY
/// dictionary (78 f9, then the dictionary's Adler-32). Go's compressed bytes themselves are
/// not derivable from the spec, so the compressed case is covered by round trips.
#[test]
fn decodes_a_hand_assembled_syn_stream() {
    let mut raw = Vec::new();
    for part in [
        &[0, 0, 0, 2][..],
        &[0, 0, 0, 10],
        b"streamtype",
        &[0, 0, 0, 5],
        b"error",
        &[0, 0, 0, 9],
        b"requestid",
        &[0, 0, 0, 1],
        b"0",
    ] {
        raw.extend_from_slice(part);
    }
    let len = u16::try_from(raw.len()).expect("small");
    let mut block = vec![0x78, 0xf9, 0xe3, 0xc6, 0xa7, 0xc2, 0x00];
    block.extend_from_slice(&len.to_le_bytes());
    block.extend_from_slice(&(!len).to_le_bytes());
    block.extend_from_slice(&raw);
    block.extend_from_slice(&[0x00, 0x00, 0x00, 0xff, 0xff]);
    let mut frame = unhex("80 03 00 01 00 00 00 00 00 00 00 01 00 00 00 00 00 00");
    let length = u32::try_from(10 + block.len()).expect("small");
    frame[5..8].copy_from_slice(&length.to_be_bytes()[1..]);
    frame.extend_from_slice(&block);

    let decoded = decode_all(frame);
    let expected = Frame::SynStream(SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 0,
        slot: 0,
        fin: false,
        unidirectional: false,
        headers: Headers::from([("streamtype", "error"), ("requestid", "0")]),
    });
    assert_eq!(decoded, vec![Ok(expected)]);
}

#[test]
fn our_header_blocks_name_the_spdy_dictionary() {
    let syn = Frame::SynStream(SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 0,
        slot: 0,
        fin: false,
        unidirectional: false,
        headers: Headers::from([("streamtype", "data")]),
    });
    let bytes = encode(&[syn]);
    assert_eq!(
        hex(&bytes[..18]),
        format!(
            "80 03 00 01 00 00 00 {:02x} 00 00 00 01 00 00 00 00 00 00",
            bytes.len() - 8
        )
    );
    // zlib header (default level, FDICT) and the dictionary id.
    assert_eq!(hex(&bytes[18..24]), "78 bb e3 c6 a7 c2");
    // SYNC_FLUSH ends the block on an empty stored block.
    assert_eq!(hex(&bytes[bytes.len() - 4..]), "00 00 ff ff");
}

#[test]
fn raw_header_block_layout() {
    let headers = Headers::from([("Port", "8080"), ("x", "a\0b")]);
    assert_eq!(
        hex(&raw_header_block(&headers).expect("fits")),
        "00 00 00 02 00 00 00 04 70 6f 72 74 00 00 00 04 38 30 38 30 \
         00 00 00 01 78 00 00 00 03 61 00 62"
    );
}

#[test]
fn frames_round_trip_through_one_context_per_direction() {
    let frames = vec![
        Frame::SynStream(SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 7,
            slot: 0,
            fin: false,
            unidirectional: false,
            headers: Headers::from([("streamtype", "error"), ("requestid", "0")]),
        }),
        Frame::SynStream(SynStream {
            stream_id: 3,
            associated_to: 1,
            priority: 0,
            slot: 2,
            fin: true,
            unidirectional: true,
            headers: Headers::from([("streamtype", "data"), ("requestid", "0"), ("port", "80")]),
        }),
        Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: Headers::new(),
        },
        Frame::Headers {
            stream_id: 3,
            fin: true,
            headers: Headers::from([("accept", "a\0b\0c")]),
        },
        Frame::Data {
            stream_id: 3,
            fin: false,
            data: Bytes::from(vec![7u8; 70_000]),
        },
        Frame::Settings {
            clear: true,
            entries: vec![
                Setting {
                    flags: 1,
                    id: 4,
                    value: 100,
                },
                Setting {
                    flags: 0,
                    id: SETTINGS_INITIAL_WINDOW_SIZE,
                    value: 1,
                },
            ],
        },
        Frame::SynReply {
            stream_id: 3,
            fin: true,
            headers: Headers::from([("status", "200")]),
        },
    ];
    let decoded = decode_all(encode(&frames));
    assert_eq!(decoded, frames.into_iter().map(Ok).collect::<Vec<_>>());
}

#[test]
fn nul_separates_values_of_one_header() {
    let headers = Headers::from([("accept", "a\0b"), ("port", "80")]);
    assert_eq!(headers.get("accept"), Some("a\0b"));
    assert_eq!(headers.values("accept").collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(headers.values("Port").collect::<Vec<_>>(), ["80"]);
    assert_eq!(headers.values("missing").count(), 0);
}

#[test]
fn a_partial_frame_waits_for_more_bytes() {
    let whole = encode(&[
        Frame::SynReply {
            stream_id: 1,
            fin: false,
            headers: Headers::from([("a", "b")]),
        },
        Frame::Ping { id: 3 },
    ]);
    let mut decoder = Decoder::new();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for byte in whole.iter() {
        buf.extend_from_slice(&[*byte]);
        let before = buf.len();
        match decoder.decode(&mut buf).expect("valid") {
            Some(frame) => frames.push(frame),
            None => assert_eq!(buf.len(), before, "nothing consumed"),
        }
    }
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[1], Frame::Ping { id: 3 });
}

#[test]
fn bad_frames_are_rejected_with_their_reason() {
    let cases = [
        (
            "80 02 00 06 00 00 00 04 00 00 00 01",
            FrameError::UnsupportedVersion { version: 2 },
        ),
        (
            "80 03 00 06 00 00 00 08 00 00 00 01 00 00 00 02",
            FrameError::BadLength {
                frame_type: 6,
                length: 8,
            },
        ),
        (
            "80 03 00 03 00 00 00 08 00 00 00 00 00 00 00 05",
            FrameError::ZeroStreamId { frame_type: 3 },
        ),
        (
            "80 03 00 03 00 00 00 08 00 00 00 01 00 00 00 00",
            FrameError::InvalidValue {
                frame_type: 3,
                value: 0,
            },
        ),
        (
            "80 03 00 09 00 00 00 08 00 00 00 01 00 00 00 00",
            FrameError::InvalidValue {
                frame_type: 9,
                value: 0,
            },
        ),
        (
            "80 03 00 07 00 00 00 04 00 00 00 01",
            FrameError::BadLength {
                frame_type: 7,
                length: 4,
            },
        ),
        (
            "80 03 00 04 00 00 00 0c 00 00 00 02 00 00 00 07 00 00 00 01",
            FrameError::BadLength {
                frame_type: 4,
                length: 12,
            },
        ),
        (
            "80 03 00 01 00 00 00 04 00 00 00 01",
            FrameError::BadLength {
                frame_type: 1,
                length: 4,
            },
        ),
        (
            "00 00 00 00 00 00 00 01 41",
            FrameError::ZeroStreamId { frame_type: 0 },
        ),
    ];
    for (bytes, error) in cases {
        assert_eq!(decode_all(unhex(bytes)), vec![Err(error)], "{bytes}");
    }
}

#[test]
fn a_header_block_that_is_not_zlib_is_rejected() {
    let decoded = decode_all(unhex("80 03 00 02 00 00 00 08 00 00 00 01 de ad be ef"));
    assert!(
        matches!(decoded[..], [Err(FrameError::Decompress { .. })]),
        "{decoded:?}"
    );
}

#[test]
fn unknown_control_frames_are_passed_over() {
    let decoded = decode_all(unhex(
        "80 03 00 0a 00 00 00 02 ab cd 80 03 00 06 00 00 00 04 00 00 00 09",
    ));
    assert_eq!(
        decoded,
        vec![
            Ok(Frame::Unknown { frame_type: 10 }),
            Ok(Frame::Ping { id: 9 })
        ]
    );
}

#[test]
fn header_blocks_with_bad_names_are_rejected() {
    let mut upper = Headers::new();
    upper.entries.push(("Port".to_owned(), "80".to_owned()));
    let mut duplicate = Headers::from([("port", "80")]);
    duplicate.entries.push(("port".to_owned(), "81".to_owned()));
    let mut empty = Headers::new();
    empty.entries.push((String::new(), "x".to_owned()));
    let cases = [
        (
            upper,
            FrameError::InvalidHeaderName {
                name: "Port".to_owned(),
            },
        ),
        (
            duplicate,
            FrameError::DuplicateHeader {
                name: "port".to_owned(),
            },
        ),
        (
            empty,
            FrameError::InvalidHeaderName {
                name: String::new(),
            },
        ),
        (
            Headers::from([("big", "x".repeat(MAX_HEADER_BLOCK).as_str())]),
            FrameError::HeaderBlockTooLarge,
        ),
    ];
    for (headers, error) in cases {
        let frame = Frame::Headers {
            stream_id: 1,
            fin: false,
            headers,
        };
        assert_eq!(decode_all(encode(&[frame])), vec![Err(error)]);
    }
}

#[test]
fn malformed_raw_header_blocks_are_rejected() {
    let cases: [(&[u8], FrameError); 4] = [
        (&[0, 0], FrameError::MalformedHeaderBlock),
        (
            &[0, 0, 0, 1, 0, 0, 0, 9, b'a'],
            FrameError::MalformedHeaderBlock,
        ),
        (&[0xff, 0xff, 0xff, 0xff], FrameError::MalformedHeaderBlock),
        (&[0, 0, 0, 0, 1], FrameError::MalformedHeaderBlock),
    ];
    for (raw, error) in cases {
        assert_eq!(parse_header_block(raw), Err(error), "{raw:?}");
    }
    assert_eq!(parse_header_block(&[0, 0, 0, 0]), Ok(Headers::new()));
}

//! permessage-deflate in `Connection`: round trips, the RFC 7692 examples, RSV1 rules,
//! size limits on decompressed data, corrupt data and UTF-8 checks through the
//! decompressor.

use bytes::{Bytes, BytesMut};
use pylon_proto::frame::{self, FrameHeader, OpCode};
use pylon_proto::mask::apply_mask;
use pylon_proto::{
    CloseCode, Config, Connection, DeflateConfig, DeflateParams, Limits, Message,
    PerMessageDeflate, ProtocolError, Role,
};
use rand::Rng;

/// Masking key of the client frames built by hand.
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Local settings that compress every message, however short.
fn compress_all() -> DeflateConfig {
    DeflateConfig {
        min_message_size: 0,
        ..DeflateConfig::default()
    }
}

fn connection(
    role: Role,
    params: DeflateParams,
    local: &DeflateConfig,
    limits: Limits,
) -> Connection {
    let config = Config {
        limits,
        deflate: Some(PerMessageDeflate::new(role, params, local)),
        ..Config::default()
    };
    Connection::new(role, config)
}

/// Returns a client and a server that agreed on `params`.
fn pair(params: DeflateParams, local: &DeflateConfig) -> (Connection, Connection) {
    (
        connection(Role::Client, params, local, Limits::default()),
        connection(Role::Server, params, local, Limits::default()),
    )
}

/// Decodes every whole message in `src`, panicking on a protocol fault.
fn receive(conn: &mut Connection, src: &mut BytesMut) -> Vec<Message> {
    let mut messages = Vec::new();
    while let Some(message) = conn.decode(src).expect("valid stream") {
        messages.push(message);
    }
    messages
}

/// Decodes until the first fault and returns it.
fn receive_error(conn: &mut Connection, src: &mut BytesMut) -> ProtocolError {
    loop {
        match conn.decode(src) {
            Ok(Some(_)) => {}
            Ok(None) => panic!("stream ended without a protocol fault"),
            Err(err) => return err,
        }
    }
}

/// Splits an encoded stream into frame headers and their payloads (unmasked).
fn frames(mut wire: &[u8]) -> Vec<(FrameHeader, Vec<u8>)> {
    let mut frames = Vec::new();
    while !wire.is_empty() {
        let (header, header_len) = frame::decode_header(wire).unwrap().unwrap();
        let end = header_len + header.payload_len as usize;
        let mut payload = wire[header_len..end].to_vec();
        if let Some(key) = header.mask {
            apply_mask(&mut payload, key, 0);
        }
        frames.push((header, payload));
        wire = &wire[end..];
    }
    frames
}

/// Builds a masked client frame from its first header byte and payload.
fn client_frame(first_byte: u8, payload: &[u8]) -> BytesMut {
    let header = FrameHeader {
        fin: first_byte & 0x80 != 0,
        rsv1: first_byte & 0x40 != 0,
        rsv2: first_byte & 0x20 != 0,
        rsv3: first_byte & 0x10 != 0,
        opcode: OpCode::from_u8(first_byte & 0x0F).unwrap(),
        mask: Some(KEY),
        payload_len: payload.len() as u64,
    };
    let mut out = BytesMut::new();
    frame::encode_header(&header, &mut out);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], KEY, 0);
    out
}

/// Returns the close code of the close frame that a failed connection queued.
fn queued_close_code(conn: &mut Connection) -> u16 {
    let mut out = BytesMut::new();
    conn.write_pending(&mut out);
    let frames = frames(&out);
    let (header, payload) = frames.last().expect("a queued close frame");
    assert_eq!(header.opcode, OpCode::CLOSE);
    u16::from_be_bytes([payload[0], payload[1]])
}

/// Compressible text with multi-byte characters, longer than one 64 KiB decompressor step.
fn sample_text(len: usize) -> String {
    let mut text = String::new();
    let mut i = 0u32;
    while text.len() < len {
        text.push_str(&format!("message {i}: grüße, 日本語, 🚀 "));
        i += 1;
    }
    text
}

#[test]
fn rfc_examples_decode_byte_exact() {
    let hello = Message::text("Hello");
    // RFC 7692 section 7.2.3: each stream contains one message "Hello".
    let cases: [(&str, &[u8]); 5] = [
        (
            "compressed in one frame",
            &[0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
        ),
        (
            "compressed in two fragments",
            &[
                0x41, 0x03, 0xf2, 0x48, 0xcd, 0x80, 0x04, 0xc9, 0xc9, 0x07, 0x00,
            ],
        ),
        (
            "stored block",
            &[
                0xc1, 0x0b, 0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
            ],
        ),
        (
            "block with BFINAL set",
            &[0xc1, 0x08, 0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00],
        ),
        (
            "two DEFLATE blocks",
            &[
                0xc1, 0x0d, 0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff, 0xff, 0xca, 0xc9, 0xc9, 0x07,
                0x00,
            ],
        ),
    ];
    for (name, bytes) in cases {
        let mut client = connection(
            Role::Client,
            DeflateParams::default(),
            &DeflateConfig::default(),
            Limits::default(),
        );
        let mut wire = BytesMut::from(bytes);
        assert_eq!(
            receive(&mut client, &mut wire),
            vec![hello.clone()],
            "{name}"
        );
    }

    // Section 7.2.3.2: with context takeover the second "Hello" refers to the first.
    let mut client = connection(
        Role::Client,
        DeflateParams::default(),
        &DeflateConfig::default(),
        Limits::default(),
    );
    let mut wire = BytesMut::from(
        &[
            0xc1, 0x07, 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0xc1, 0x05, 0xf2, 0x00, 0x11,
            0x00, 0x00,
        ][..],
    );
    assert_eq!(receive(&mut client, &mut wire), vec![hello.clone(), hello]);
}

#[test]
fn encoder_sets_rsv1_and_strips_tail() {
    // A message long enough to beat its compressed form, so that the encoder compresses.
    // The byte-exact RFC 7692 encoding of "Hello" is checked by the compressor's unit test.
    let mut server = connection(
        Role::Server,
        DeflateParams::default(),
        &compress_all(),
        Limits::default(),
    );
    let mut wire = BytesMut::new();
    server
        .encode(Message::text("Hello Hello Hello Hello"), &mut wire)
        .unwrap();
    let sent = frames(&wire);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].0.rsv1);
    assert!(sent[0].0.fin);
    assert!(!sent[0].1.ends_with(&[0x00, 0x00, 0xff, 0xff]));
    let mut client = connection(
        Role::Client,
        DeflateParams::default(),
        &DeflateConfig::default(),
        Limits::default(),
    );
    assert_eq!(
        receive(&mut client, &mut wire),
        vec![Message::text("Hello Hello Hello Hello")]
    );
}

#[test]
fn bfinal_stream_then_next_message() {
    let mut client = connection(
        Role::Client,
        DeflateParams::default(),
        &DeflateConfig::default(),
        Limits::default(),
    );
    let mut wire = BytesMut::from(
        &[
            0xc1, 0x08, 0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00, 0xc1, 0x07, 0xf2, 0x48,
            0xcd, 0xc9, 0xc9, 0x07, 0x00,
        ][..],
    );
    assert_eq!(
        receive(&mut client, &mut wire),
        vec![Message::text("Hello"), Message::text("Hello")]
    );
}

#[test]
fn empty_compressed_messages_decode() {
    let mut server = connection(
        Role::Server,
        DeflateParams::default(),
        &DeflateConfig::default(),
        Limits::default(),
    );
    // RFC 7692 section 7.2.3.6: an empty message is the single byte 0x00 compressed.
    let mut wire = client_frame(0xc1, &[0x00]);
    wire.extend_from_slice(&client_frame(0xc2, &[]));
    assert_eq!(
        receive(&mut server, &mut wire),
        vec![Message::text(""), Message::binary(Bytes::new())]
    );
}

/// Sends `messages` from `sender` to `receiver` and checks what arrives. Returns the
/// payload length of each message's frames on the wire.
fn exchange(
    sender: &mut Connection,
    receiver: &mut Connection,
    messages: &[Message],
) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut wire = BytesMut::new();
    for message in messages {
        let start = wire.len();
        sender.encode(message.clone(), &mut wire).unwrap();
        let payload: usize = frames(&wire[start..]).iter().map(|(_, p)| p.len()).sum();
        sizes.push(payload);
    }
    assert_eq!(&receive(receiver, &mut wire), messages);
    sizes
}

#[test]
fn round_trip_every_window_and_takeover() {
    let mut random = vec![0u8; 3000];
    rand::rng().fill(&mut random[..]);
    let text = sample_text(20_000);
    let messages = vec![
        Message::text(text.clone()),
        Message::text(text.clone()),
        Message::binary(random),
        Message::binary(vec![7u8; 5000]),
        Message::text("short"),
        Message::text(text),
    ];
    for bits in 9..=15u8 {
        for server_reset in [false, true] {
            for client_reset in [false, true] {
                let params = DeflateParams {
                    server_no_context_takeover: server_reset,
                    client_no_context_takeover: client_reset,
                    server_max_window_bits: Some(bits),
                    client_max_window_bits: Some(bits),
                };
                let case = format!("{params}");
                let (mut client, mut server) = pair(params, &DeflateConfig::default());
                let up = exchange(&mut client, &mut server, &messages);
                let down = exchange(&mut server, &mut client, &messages);
                for (sizes, reset) in [(&up, client_reset), (&down, server_reset)] {
                    assert!(sizes[0] < 20_000 / 2, "{case}: {sizes:?}");
                    // The random message goes out uncompressed, at its own length.
                    assert_eq!(sizes[2], 3000, "{case}: {sizes:?}");
                    assert_eq!(sizes[4], 5, "{case}: {sizes:?}");
                    if reset {
                        assert_eq!(sizes[0], sizes[1], "{case}: {sizes:?}");
                    } else if bits == 15 {
                        // With context takeover and a 32 KiB window the repeat refers to
                        // the first copy.
                        assert!(sizes[1] < sizes[0] / 4, "{case}: {sizes:?}");
                    } else {
                        assert!(sizes[1] <= sizes[0], "{case}: {sizes:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn round_trip_with_reset_requested_locally() {
    let local = DeflateConfig {
        no_context_takeover: true,
        max_window_bits: 10,
        level: 1,
        ..DeflateConfig::default()
    };
    let (mut client, mut server) = pair(DeflateParams::default(), &local);
    let text = Message::text(sample_text(10_000));
    let sizes = exchange(&mut client, &mut server, &[text.clone(), text.clone()]);
    assert_eq!(sizes[0], sizes[1]);
    let sizes = exchange(&mut server, &mut client, &[text.clone(), text]);
    assert_eq!(sizes[0], sizes[1]);
}

#[test]
fn many_fragments_set_rsv1_on_first_only() {
    let params = DeflateParams::default();
    let local = DeflateConfig::default();
    let config = Config {
        max_send_frame_size: Some(7),
        deflate: Some(PerMessageDeflate::new(Role::Client, params, &local)),
        ..Config::default()
    };
    let mut client = Connection::new(Role::Client, config);
    let mut server = connection(Role::Server, params, &local, Limits::default());
    let text = sample_text(100_000);
    let mut wire = BytesMut::new();
    client
        .encode(Message::text(text.clone()), &mut wire)
        .unwrap();

    let sent = frames(&wire);
    assert!(sent.len() > 100, "{} frames", sent.len());
    assert!(sent[0].0.rsv1);
    assert_eq!(sent[0].0.opcode, OpCode::TEXT);
    assert!(sent[1..].iter().all(|(header, _)| !header.rsv1));
    assert!(
        sent[1..]
            .iter()
            .all(|(header, _)| header.opcode == OpCode::CONTINUATION)
    );
    assert!(sent.last().unwrap().0.fin);

    // Feeding one byte at a time exercises every split of headers and DEFLATE data.
    let mut src = BytesMut::new();
    let mut received = Vec::new();
    for byte in wire.iter() {
        src.extend_from_slice(&[*byte]);
        while let Some(message) = server.decode(&mut src).unwrap() {
            received.push(message);
        }
    }
    assert_eq!(received, vec![Message::text(text)]);
}

#[test]
fn small_messages_go_uncompressed() {
    let (mut client, mut server) = pair(DeflateParams::default(), &DeflateConfig::default());
    let mut wire = BytesMut::new();
    client
        .encode(Message::text("x".repeat(63)), &mut wire)
        .unwrap();
    client
        .encode(Message::text("x".repeat(64)), &mut wire)
        .unwrap();
    let sent = frames(&wire);
    assert!(!sent[0].0.rsv1);
    assert!(sent[1].0.rsv1);
    assert_eq!(
        receive(&mut server, &mut wire),
        vec![Message::text("x".repeat(63)), Message::text("x".repeat(64))]
    );
}

#[test]
fn control_frames_never_compressed() {
    let (mut client, mut server) = pair(DeflateParams::default(), &compress_all());
    let mut wire = BytesMut::new();
    client
        .encode(Message::Ping(Bytes::from(vec![b'p'; 100])), &mut wire)
        .unwrap();
    client
        .encode(
            Message::close(CloseCode::NORMAL, "x".repeat(100)),
            &mut wire,
        )
        .unwrap();
    assert!(frames(&wire).iter().all(|(header, _)| !header.rsv1));
    let received = receive(&mut server, &mut wire);
    assert_eq!(received.len(), 2);
}

#[test]
fn rsv1_faults_are_1002() {
    let negotiated = || {
        connection(
            Role::Server,
            DeflateParams::default(),
            &DeflateConfig::default(),
            Limits::default(),
        )
    };
    let plain = || Connection::new(Role::Server, Config::default());

    let mut continuation = client_frame(0x41, &[0xf2, 0x48, 0xcd]);
    continuation.extend_from_slice(&client_frame(0xc0, &[0xc9, 0xc9, 0x07, 0x00]));
    let mut uncompressed_then_rsv1 = client_frame(0x01, b"He");
    uncompressed_then_rsv1.extend_from_slice(&client_frame(0xc0, b"llo"));

    let cases: [(&str, Connection, BytesMut, ProtocolError); 7] = [
        (
            "RSV1 on ping",
            negotiated(),
            client_frame(0xc9, b"x"),
            ProtocolError::CompressedControlFrame,
        ),
        (
            "RSV1 on close",
            negotiated(),
            client_frame(0xc8, &[0x03, 0xe8]),
            ProtocolError::CompressedControlFrame,
        ),
        (
            "RSV1 on pong",
            negotiated(),
            client_frame(0xca, b""),
            ProtocolError::CompressedControlFrame,
        ),
        (
            "RSV1 on continuation",
            negotiated(),
            continuation,
            ProtocolError::CompressedContinuation,
        ),
        (
            "RSV1 on continuation of an uncompressed message",
            negotiated(),
            uncompressed_then_rsv1,
            ProtocolError::CompressedContinuation,
        ),
        (
            "RSV2 with permessage-deflate",
            negotiated(),
            client_frame(0xa1, b"x"),
            ProtocolError::ReservedBits,
        ),
        (
            "RSV1 without permessage-deflate",
            plain(),
            client_frame(0xc1, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]),
            ProtocolError::ReservedBits,
        ),
    ];
    for (name, mut conn, mut wire, expected) in cases {
        assert_eq!(receive_error(&mut conn, &mut wire), expected, "{name}");
        assert_eq!(expected.close_code(), CloseCode::PROTOCOL_ERROR, "{name}");
        assert_eq!(queued_close_code(&mut conn), 1002, "{name}");
    }
}

#[test]
fn corrupt_data_is_1007() {
    let cases: [(&str, &[u8]); 3] = [
        ("reserved block type 11", &[0xff, 0xff, 0xff]),
        // A stored block whose NLEN is not the complement of LEN.
        (
            "stored block length mismatch",
            &[0x00, 0x05, 0x00, 0x00, 0x00, b'H'],
        ),
        // A back-reference before the start of the window, in a fixed-Huffman block.
        ("distance too far back", &[0x02, 0x02, 0x00]),
    ];
    for (name, payload) in cases {
        let mut server = connection(
            Role::Server,
            DeflateParams::default(),
            &DeflateConfig::default(),
            Limits::default(),
        );
        let mut wire = client_frame(0xc2, payload);
        let err = receive_error(&mut server, &mut wire);
        assert_eq!(err, ProtocolError::InvalidCompressedData, "{name}");
        assert_eq!(err.close_code(), CloseCode::INVALID_PAYLOAD, "{name}");
        assert_eq!(queued_close_code(&mut server), 1007, "{name}");
        assert!(server.is_failed(), "{name}");
    }
}

/// Compresses `payload` as one message with a server connection and returns the frame
/// bytes, with the opcode replaced by `opcode`.
fn server_compressed_frame(payload: &[u8], opcode: OpCode) -> BytesMut {
    let mut server = connection(
        Role::Server,
        DeflateParams::default(),
        &compress_all(),
        Limits::default(),
    );
    let mut wire = BytesMut::new();
    server
        .encode(Message::binary(payload.to_vec()), &mut wire)
        .unwrap();
    assert_eq!(wire[0] & 0x40, 0x40, "the message was compressed");
    wire[0] = (wire[0] & 0xf0) | opcode.as_u8();
    wire
}

#[test]
fn decompressed_size_limit_is_1009() {
    let limits = Limits {
        max_frame_size: 1 << 20,
        max_message_size: 1 << 20,
    };
    let client = || {
        connection(
            Role::Client,
            DeflateParams::default(),
            &DeflateConfig::default(),
            limits,
        )
    };

    let mut exact = server_compressed_frame(&vec![0u8; 1 << 20], OpCode::BINARY);
    let mut conn = client();
    assert_eq!(
        receive(&mut conn, &mut exact),
        vec![Message::binary(vec![0u8; 1 << 20])]
    );

    // 16 MiB of zeros compress to about 16 KiB.
    let mut bomb = server_compressed_frame(&vec![0u8; 16 << 20], OpCode::BINARY);
    assert!(bomb.len() < 64 << 10, "{} bytes compressed", bomb.len());
    let mut conn = client();
    let err = receive_error(&mut conn, &mut bomb);
    assert_eq!(
        err,
        ProtocolError::MessageTooLarge {
            size: (1 << 20) + 1,
            max: 1 << 20,
        }
    );
    assert_eq!(queued_close_code(&mut conn), 1009);
    assert_eq!(conn.buffered(), 0);

    let mut one_over = server_compressed_frame(&vec![0u8; (1 << 20) + 1], OpCode::BINARY);
    let mut conn = client();
    assert!(matches!(
        receive_error(&mut conn, &mut one_over),
        ProtocolError::MessageTooLarge { .. }
    ));
}

#[test]
fn compressed_frames_get_headroom_over_frame_limit() {
    let limits = Limits {
        max_frame_size: 100_000,
        max_message_size: 100_000,
    };
    let mut random = vec![0u8; 100_000];
    rand::rng().fill(&mut random[..]);
    // Stored blocks make the frame a little longer than the message.
    let stored = DeflateConfig {
        level: 0,
        min_message_size: 0,
        ..DeflateConfig::default()
    };
    let params = DeflateParams {
        client_no_context_takeover: true,
        ..DeflateParams::default()
    };
    let mut encoder = connection(Role::Server, params, &stored, Limits::default());
    let mut wire = BytesMut::new();
    // The encoder falls back to plain frames when compressing does not help, so the
    // compressed frame is built by hand from the stored-block form.
    let mut reference = flate2::Compress::new(flate2::Compression::new(0), false);
    let mut deflated = Vec::with_capacity(200_000);
    reference
        .compress_vec(&random, &mut deflated, flate2::FlushCompress::Sync)
        .unwrap();
    assert!(deflated.ends_with(&[0x00, 0x00, 0xff, 0xff]));
    deflated.truncate(deflated.len() - 4);
    assert!(deflated.len() > 100_000);
    let header = FrameHeader {
        fin: true,
        rsv1: true,
        rsv2: false,
        rsv3: false,
        opcode: OpCode::BINARY,
        mask: None,
        payload_len: deflated.len() as u64,
    };
    frame::encode_header(&header, &mut wire);
    wire.extend_from_slice(&deflated);
    let mut client = connection(Role::Client, params, &DeflateConfig::default(), limits);
    assert_eq!(
        receive(&mut client, &mut wire),
        vec![Message::binary(random)]
    );

    // An uncompressed frame gets no headroom.
    encoder
        .encode(Message::binary(vec![1u8; 100_001]), &mut wire)
        .unwrap();
    let mut client = connection(Role::Client, params, &DeflateConfig::default(), limits);
    let err = receive_error(&mut client, &mut wire);
    assert!(
        matches!(err, ProtocolError::FrameTooLarge { .. }),
        "{err:?}"
    );
}

#[test]
fn limit_counts_all_fragments_decompressed() {
    let limits = Limits {
        max_frame_size: 1 << 20,
        max_message_size: 100_000,
    };
    let params = DeflateParams::default();
    let config = Config {
        max_send_frame_size: Some(1000),
        deflate: Some(PerMessageDeflate::new(
            Role::Client,
            params,
            &compress_all(),
        )),
        ..Config::default()
    };
    let mut sender = Connection::new(Role::Client, config);
    let mut receiver = connection(Role::Server, params, &DeflateConfig::default(), limits);
    let mut wire = BytesMut::new();
    sender
        .encode(Message::text(sample_text(300_000)), &mut wire)
        .unwrap();
    assert!(matches!(
        receive_error(&mut receiver, &mut wire),
        ProtocolError::MessageTooLarge { max: 100_000, .. }
    ));
}

#[test]
fn invalid_utf8_fails_before_frame_ends() {
    // The invalid byte comes early, followed by about 4 MiB of text.
    let mut payload = b"valid start ".to_vec();
    payload.push(0xff);
    payload.extend_from_slice(sample_text(4 << 20).as_bytes());
    let mut rng = rand::rng();
    // Random letters keep the compressed frame long, so it arrives in pieces.
    payload.extend((0..200_000).map(|_| rng.random_range(b'a'..=b'z')));
    let wire = server_compressed_frame(&payload, OpCode::TEXT);

    let mut client = connection(
        Role::Client,
        DeflateParams::default(),
        &DeflateConfig::default(),
        Limits::default(),
    );
    let mut first_part = BytesMut::from(&wire[..4096]);
    assert_eq!(
        client.decode(&mut first_part),
        Err(ProtocolError::InvalidUtf8)
    );
    assert_eq!(queued_close_code(&mut client), 1007);

    // A text message cut inside a multi-byte character fails at its end.
    let mut cut = "é".repeat(100).into_bytes();
    cut.pop();
    let mut wire = server_compressed_frame(&cut, OpCode::TEXT);
    let mut client = connection(
        Role::Client,
        DeflateParams::default(),
        &DeflateConfig::default(),
        Limits::default(),
    );
    assert_eq!(
        receive_error(&mut client, &mut wire),
        ProtocolError::InvalidUtf8
    );
}

#[test]
fn uncompressed_messages_still_decode() {
    let mut server = connection(
        Role::Server,
        DeflateParams::default(),
        &DeflateConfig::default(),
        Limits::default(),
    );
    let mut wire = client_frame(0x81, b"plain");
    wire.extend_from_slice(&client_frame(
        0xc1,
        &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
    ));
    wire.extend_from_slice(&client_frame(0x02, b"frag"));
    wire.extend_from_slice(&client_frame(0x89, b"ping"));
    wire.extend_from_slice(&client_frame(0x80, b"ment"));
    assert_eq!(
        receive(&mut server, &mut wire),
        vec![
            Message::text("plain"),
            Message::text("Hello"),
            Message::Ping(Bytes::from_static(b"ping")),
            Message::binary(Bytes::from_static(b"fragment")),
        ]
    );
}

#[test]
fn compressed_message_interleaves_control_frames() {
    let mut server = connection(
        Role::Server,
        DeflateParams::default(),
        &DeflateConfig::default(),
        Limits::default(),
    );
    let mut wire = client_frame(0x41, &[0xf2, 0x48, 0xcd]);
    wire.extend_from_slice(&client_frame(0x89, b"ping"));
    wire.extend_from_slice(&client_frame(0x80, &[0xc9, 0xc9, 0x07, 0x00]));
    assert_eq!(
        receive(&mut server, &mut wire),
        vec![
            Message::Ping(Bytes::from_static(b"ping")),
            Message::text("Hello"),
        ]
    );
}

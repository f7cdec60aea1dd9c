use super::*;
use proptest::prelude::*;

const KEY: [u8; 4] = [0x11, 0x22, 0x33, 0x44];

fn server() -> Connection {
    Connection::new(Role::Server, Config::default())
}

fn client() -> Connection {
    Connection::new(Role::Client, Config::default())
}

fn with_limits(role: Role, max_frame_size: usize, max_message_size: usize) -> Connection {
    let config = Config {
        limits: Limits {
            max_frame_size,
            max_message_size,
        },
        ..Config::default()
    };
    Connection::new(role, config)
}

/// Encodes one frame with full control over the header, masked with `KEY` when `masked`.
fn raw_frame(first_byte: u8, payload: &[u8], masked: bool) -> BytesMut {
    let header = FrameHeader {
        fin: first_byte & 0x80 != 0,
        rsv1: first_byte & 0x40 != 0,
        rsv2: first_byte & 0x20 != 0,
        rsv3: first_byte & 0x10 != 0,
        opcode: OpCode::from_u8(first_byte & 0x0F).unwrap(),
        mask: masked.then_some(KEY),
        payload_len: payload.len() as u64,
    };
    let mut out = BytesMut::new();
    frame::encode_header(&header, &mut out);
    let start = out.len();
    out.extend_from_slice(payload);
    if masked {
        apply_mask(&mut out[start..], KEY, 0);
    }
    out
}

/// Encodes a frame masked with `KEY`, as a client sends it, for a server to decode.
fn client_frame(fin: bool, opcode: OpCode, payload: &[u8]) -> BytesMut {
    let first = if fin { 0x80 } else { 0 } | opcode.as_u8();
    raw_frame(first, payload, true)
}

fn close_payload_bytes(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    payload
}

/// Decodes all messages in `src`, stopping at the first error.
fn decode_all(conn: &mut Connection, src: &mut BytesMut) -> Result<Vec<Message>, ProtocolError> {
    let mut messages = Vec::new();
    while let Some(message) = conn.decode(src)? {
        messages.push(message);
    }
    Ok(messages)
}

/// Writes the pending frames of `conn` and decodes them with a fresh peer.
fn pending_messages(conn: &mut Connection) -> Vec<Message> {
    let mut out = BytesMut::new();
    conn.write_pending(&mut out);
    let peer_role = match conn.role() {
        Role::Client => Role::Server,
        Role::Server => Role::Client,
    };
    let mut peer = Connection::new(peer_role, Config::default());
    decode_all(&mut peer, &mut out).expect("pending frames decode")
}

/// Asserts that `bytes` fails a server with `expected`, and that the connection queued a
/// close frame with the matching code and then stopped decoding.
fn assert_server_fault(bytes: &[u8], expected: ProtocolError) {
    let mut conn = server();
    let mut src = BytesMut::from(bytes);
    let err = decode_all(&mut conn, &mut src).unwrap_err();
    assert_eq!(err, expected);
    assert!(conn.is_failed());
    assert!(src.is_empty(), "faulty input stays in src");
    assert_eq!(conn.buffered(), 0);

    let mut out = BytesMut::new();
    conn.write_pending(&mut out);
    let code = expected.close_code().0.to_be_bytes();
    assert_eq!(&out[..], &[0x88, 0x02, code[0], code[1]][..]);
    assert_eq!(conn.state(), State::CloseSent);
    assert!(conn.is_closed());

    let mut more = client_frame(true, OpCode::TEXT, b"late");
    assert_eq!(conn.decode(&mut more), Ok(None));
    assert!(more.is_empty());
}

#[test]
fn server_decodes_masked_text() {
    let mut conn = server();
    let mut src = client_frame(true, OpCode::TEXT, b"Hello");
    assert_eq!(conn.decode(&mut src), Ok(Some(Message::text("Hello"))));
    assert!(src.is_empty());
    assert_eq!(conn.decode(&mut src), Ok(None));
}

#[test]
fn client_decodes_unmasked_rfc_example() {
    let mut conn = client();
    let mut src = BytesMut::from(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f][..]);
    assert_eq!(conn.decode(&mut src), Ok(Some(Message::text("Hello"))));
}

#[test]
fn rsv_bits_fail_with_1002() {
    for bit in [0x40u8, 0x20, 0x10] {
        let frame = raw_frame(0x80 | bit | 0x1, b"x", true);
        assert_server_fault(&frame, ProtocolError::ReservedBits);
    }
}

#[test]
fn reserved_opcodes_fail_with_1002() {
    for opcode in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        let frame = raw_frame(0x80 | opcode, b"", true);
        assert_server_fault(&frame, ProtocolError::ReservedOpcode(opcode));
    }
}

#[test]
fn fragmented_control_fails_with_1002() {
    let frame = raw_frame(0x09, b"ping", true);
    assert_server_fault(&frame, ProtocolError::FragmentedControl);
}

#[test]
fn long_control_fails_with_1002() {
    let frame = client_frame(true, OpCode::PING, &[0u8; 126]);
    assert_server_fault(&frame, ProtocolError::ControlTooLong(126));
}

#[test]
fn length_top_bit_fails_with_1002() {
    let bytes = [0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4];
    assert_server_fault(&bytes, ProtocolError::LengthTopBit);
}

#[test]
fn server_rejects_unmasked_frame() {
    let frame = raw_frame(0x81, b"Hello", false);
    assert_server_fault(&frame, ProtocolError::UnmaskedClientFrame);
}

#[test]
fn client_rejects_masked_frame() {
    let mut conn = client();
    let mut src = raw_frame(0x81, b"Hello", true);
    assert_eq!(conn.decode(&mut src), Err(ProtocolError::MaskedServerFrame));
    let mut out = BytesMut::new();
    conn.write_pending(&mut out);
    // The client's fault close is masked: FIN + close, MASK bit + length 2.
    assert_eq!(&out[..2], &[0x88, 0x82]);
    assert_eq!(out.len(), 8);
}

#[test]
fn non_minimal_length_is_accepted() {
    let mut src = BytesMut::from(&[0x82, 0xFE, 0x00, 0x03][..]);
    src.extend_from_slice(&KEY);
    let mut payload = *b"abc";
    apply_mask(&mut payload, KEY, 0);
    src.extend_from_slice(&payload);
    let mut conn = server();
    assert_eq!(
        conn.decode(&mut src),
        Ok(Some(Message::binary(&b"abc"[..])))
    );
}

#[test]
fn frame_over_limit_fails_from_header() {
    let mut conn = with_limits(Role::Server, 100, 1000);
    let frame = client_frame(true, OpCode::BINARY, &[7u8; 101]);
    // Only the header arrives: the fault is reported before any payload.
    let mut src = BytesMut::from(&frame[..8]);
    let err = conn.decode(&mut src).unwrap_err();
    assert_eq!(
        err,
        ProtocolError::FrameTooLarge {
            size: 101,
            max: 100
        }
    );
    assert_eq!(err.close_code(), CloseCode::MESSAGE_TOO_BIG);
    assert_eq!(conn.buffered(), 0);
}

#[test]
fn huge_declared_length_reserves_nothing() {
    let mut conn = with_limits(Role::Server, usize::MAX, usize::MAX);
    let mut src = BytesMut::from(&[0x82, 0xFF, 0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF][..]);
    src.extend_from_slice(&KEY);
    src.extend_from_slice(b"abc");
    assert_eq!(conn.decode(&mut src), Ok(None));
    assert_eq!(conn.buffered(), 3);
    assert!(conn.message.capacity() <= MIN_BUFFER_GROWTH);
}

#[test]
fn message_over_limit_fails_at_fragment_header() {
    let mut conn = with_limits(Role::Server, 100, 150);
    let mut src = client_frame(false, OpCode::BINARY, &[1u8; 100]);
    assert_eq!(conn.decode(&mut src), Ok(None));
    assert_eq!(conn.buffered(), 100);
    let next = client_frame(true, OpCode::CONTINUATION, &[2u8; 51]);
    let mut src = BytesMut::from(&next[..6]);
    let err = conn.decode(&mut src).unwrap_err();
    assert_eq!(
        err,
        ProtocolError::MessageTooLarge {
            size: 151,
            max: 150
        }
    );
    assert_eq!(conn.buffered(), 0);
}

#[test]
fn message_at_limit_is_accepted() {
    let mut conn = with_limits(Role::Server, 100, 150);
    let mut src = client_frame(false, OpCode::BINARY, &[1u8; 100]);
    src.extend_from_slice(&client_frame(true, OpCode::CONTINUATION, &[2u8; 50]));
    let message = conn.decode(&mut src).unwrap().unwrap();
    assert_eq!(message.len(), 150);
}

#[test]
fn continuation_without_message_fails() {
    let frame = client_frame(true, OpCode::CONTINUATION, b"x");
    assert_server_fault(&frame, ProtocolError::UnexpectedContinuation);
}

#[test]
fn data_frame_inside_fragmented_message_fails() {
    let mut bytes = client_frame(false, OpCode::TEXT, b"part");
    bytes.extend_from_slice(&client_frame(true, OpCode::BINARY, b"new"));
    assert_server_fault(&bytes, ProtocolError::ExpectedContinuation);
}

#[test]
fn fragments_assemble_into_one_message() {
    let mut conn = server();
    let mut src = client_frame(false, OpCode::BINARY, b"ab");
    src.extend_from_slice(&client_frame(false, OpCode::CONTINUATION, b""));
    src.extend_from_slice(&client_frame(true, OpCode::CONTINUATION, b"cd"));
    assert_eq!(
        decode_all(&mut conn, &mut src),
        Ok(vec![Message::binary(&b"abcd"[..])])
    );
}

#[test]
fn control_frames_interleave_with_fragments() {
    let mut conn = server();
    let mut src = client_frame(false, OpCode::TEXT, b"fra");
    src.extend_from_slice(&client_frame(true, OpCode::PING, b"p"));
    src.extend_from_slice(&client_frame(false, OpCode::CONTINUATION, b"gme"));
    src.extend_from_slice(&client_frame(true, OpCode::PONG, b"q"));
    src.extend_from_slice(&client_frame(true, OpCode::CONTINUATION, b"nted"));
    assert_eq!(
        decode_all(&mut conn, &mut src),
        Ok(vec![
            Message::Ping(Bytes::from_static(b"p")),
            Message::Pong(Bytes::from_static(b"q")),
            Message::text("fragmented"),
        ])
    );
}

#[test]
fn ping_queues_pong_with_same_payload() {
    for role in [Role::Server, Role::Client] {
        let mut conn = Connection::new(role, Config::default());
        let mut src = raw_frame(0x89, b"are you there", role == Role::Server);
        assert_eq!(
            conn.decode(&mut src),
            Ok(Some(Message::Ping(Bytes::from_static(b"are you there"))))
        );
        assert!(conn.has_pending());
        assert_eq!(
            pending_messages(&mut conn),
            vec![Message::Pong(Bytes::from_static(b"are you there"))]
        );
        assert!(!conn.has_pending());
        assert_eq!(conn.pending_pongs.capacity(), 0, "pong buffer is released");
    }
}

#[test]
fn auto_pong_disabled_queues_nothing() {
    let config = Config {
        auto_pong: false,
        ..Config::default()
    };
    let mut conn = Connection::new(Role::Server, config);
    let mut src = client_frame(true, OpCode::PING, b"x");
    assert_eq!(
        conn.decode(&mut src),
        Ok(Some(Message::Ping(Bytes::from_static(b"x"))))
    );
    assert!(!conn.has_pending());
}

#[test]
fn many_pings_keep_pending_bounded() {
    let mut conn = server();
    for i in 0..100u8 {
        let mut src = client_frame(true, OpCode::PING, &[i; 125]);
        assert!(conn.decode(&mut src).unwrap().is_some());
        assert!(conn.pending_pongs.len() <= MAX_PENDING_PONG_BYTES);
    }
    let pongs = pending_messages(&mut conn);
    assert!(!pongs.is_empty());
    assert_eq!(
        pongs.last(),
        Some(&Message::Pong(Bytes::from(vec![99u8; 125])))
    );
}

#[test]
fn pong_queue_drops_oldest_first() {
    for role in [Role::Server, Role::Client] {
        let mut conn = Connection::new(role, Config::default());
        for i in 0..40u8 {
            let mut src = raw_frame(0x89, &[i; 125], role == Role::Server);
            assert!(conn.decode(&mut src).unwrap().is_some());
            assert!(conn.pending_pongs.len() <= MAX_PENDING_PONG_BYTES);
        }
        // The pongs that remain are the most recent ones, in order.
        let pongs = pending_messages(&mut conn);
        let frame_len = if role == Role::Client { 131 } else { 127 };
        let kept = MAX_PENDING_PONG_BYTES / frame_len;
        let expected: Vec<Message> = (40 - kept as u8..40)
            .map(|i| Message::Pong(Bytes::from(vec![i; 125])))
            .collect();
        assert_eq!(pongs, expected, "{role:?}");
        assert!(kept >= 10, "{role:?} keeps {kept} pongs");
    }
}

#[test]
fn pong_is_returned() {
    let mut conn = server();
    let mut src = client_frame(true, OpCode::PONG, b"late");
    assert_eq!(
        conn.decode(&mut src),
        Ok(Some(Message::Pong(Bytes::from_static(b"late"))))
    );
    assert!(!conn.has_pending());
}

#[test]
fn control_frame_waits_in_src_until_complete() {
    let mut conn = server();
    let frame = client_frame(true, OpCode::PING, b"0123456789");
    let mut src = BytesMut::from(&frame[..9]);
    assert_eq!(conn.decode(&mut src), Ok(None));
    assert_eq!(src.len(), 9);
    src.extend_from_slice(&frame[9..]);
    assert_eq!(
        conn.decode(&mut src),
        Ok(Some(Message::Ping(Bytes::from_static(b"0123456789"))))
    );
    assert!(src.is_empty());
}

#[test]
fn empty_close_gets_empty_reply() {
    let mut conn = server();
    let mut src = client_frame(true, OpCode::CLOSE, b"");
    assert_eq!(conn.decode(&mut src), Ok(Some(Message::Close(None))));
    assert_eq!(conn.state(), State::CloseReceived);
    assert!(!conn.is_closed(), "reply not written yet");

    let mut out = BytesMut::new();
    conn.write_pending(&mut out);
    assert_eq!(&out[..], &[0x88, 0x00][..]);
    assert_eq!(conn.state(), State::Closed);
    assert!(conn.is_closed());
}

#[test]
fn close_reply_echoes_code() {
    let mut conn = server();
    let payload = close_payload_bytes(4001, b"custom reason");
    let mut src = client_frame(true, OpCode::CLOSE, &payload);
    assert_eq!(
        conn.decode(&mut src),
        Ok(Some(Message::close(CloseCode(4001), "custom reason")))
    );
    assert_eq!(
        pending_messages(&mut conn),
        vec![Message::close(CloseCode(4001), "")]
    );
}

#[test]
fn close_with_one_byte_fails() {
    let frame = client_frame(true, OpCode::CLOSE, &[0x03]);
    assert_server_fault(&frame, ProtocolError::InvalidClosePayload);
}

#[test]
fn close_with_invalid_code_fails() {
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        let frame = client_frame(true, OpCode::CLOSE, &close_payload_bytes(code, b""));
        assert_server_fault(&frame, ProtocolError::InvalidCloseCode(code));
    }
}

#[test]
fn close_with_valid_code_is_echoed() {
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
        4000, 4999,
    ] {
        let mut conn = server();
        let mut src = client_frame(true, OpCode::CLOSE, &close_payload_bytes(code, b""));
        assert_eq!(
            conn.decode(&mut src),
            Ok(Some(Message::close(CloseCode(code), ""))),
            "code {code}"
        );
        let mut out = BytesMut::new();
        conn.write_pending(&mut out);
        let expected = code.to_be_bytes();
        assert_eq!(
            &out[..],
            &[0x88, 0x02, expected[0], expected[1]][..],
            "code {code}"
        );
    }
}

#[test]
fn close_with_invalid_reason_fails_with_1007() {
    let frame = client_frame(
        true,
        OpCode::CLOSE,
        &close_payload_bytes(1000, b"\xce\xba\xe1\xbd"),
    );
    assert_server_fault(&frame, ProtocolError::InvalidCloseReason);
    assert_eq!(
        ProtocolError::InvalidCloseReason.close_code(),
        CloseCode::INVALID_PAYLOAD
    );
}

#[test]
fn close_interrupts_fragmented_message() {
    let mut conn = server();
    let mut src = client_frame(false, OpCode::TEXT, b"unfinished");
    src.extend_from_slice(&client_frame(
        true,
        OpCode::CLOSE,
        &close_payload_bytes(1000, b""),
    ));
    assert_eq!(
        decode_all(&mut conn, &mut src),
        Ok(vec![Message::close(CloseCode::NORMAL, "")])
    );
    assert_eq!(conn.buffered(), 0);
    assert_eq!(conn.message.capacity(), 0);
}

#[test]
fn bytes_after_peer_close_are_discarded() {
    let mut conn = server();
    let mut src = client_frame(true, OpCode::CLOSE, b"");
    src.extend_from_slice(&client_frame(true, OpCode::TEXT, b"after"));
    src.extend_from_slice(&[0xFF, 0xFF]);
    assert_eq!(
        decode_all(&mut conn, &mut src),
        Ok(vec![Message::Close(None)])
    );
    assert!(src.is_empty());
}

#[test]
fn encode_rejects_data_after_close_sent() {
    let mut conn = server();
    let mut out = BytesMut::new();
    conn.encode(Message::close(CloseCode::GOING_AWAY, "restart"), &mut out)
        .unwrap();
    assert_eq!(conn.state(), State::CloseSent);
    let written = out.len();
    for message in [
        Message::text("late"),
        Message::binary(&b"late"[..]),
        Message::Ping(Bytes::new()),
        Message::Pong(Bytes::new()),
        Message::Close(None),
    ] {
        assert_eq!(conn.encode(message, &mut out), Err(SendError::Closed));
    }
    assert_eq!(out.len(), written, "nothing written after close");
}

#[test]
fn encode_rejects_data_after_close_received() {
    let mut conn = server();
    let mut src = client_frame(true, OpCode::CLOSE, &close_payload_bytes(1000, b""));
    conn.decode(&mut src).unwrap();
    let mut out = BytesMut::new();
    assert_eq!(
        conn.encode(Message::text("late"), &mut out),
        Err(SendError::Closed)
    );
    assert!(out.is_empty());

    // An explicit close replaces the queued automatic reply.
    conn.encode(Message::close(CloseCode::GOING_AWAY, "bye"), &mut out)
        .unwrap();
    assert_eq!(conn.state(), State::Closed);
    assert!(!conn.has_pending());
    assert!(conn.is_closed());
    assert_eq!(&out[..4], &[0x88, 0x05, 0x03, 0xE9]);
}

#[test]
fn close_handshake_started_locally() {
    let mut conn = server();
    let mut out = BytesMut::new();
    conn.encode(Message::close(CloseCode::NORMAL, ""), &mut out)
        .unwrap();
    assert_eq!(conn.state(), State::CloseSent);
    assert!(!conn.is_closed());

    // Data the peer sent before it saw the close is still delivered.
    let mut src = client_frame(true, OpCode::TEXT, b"in flight");
    assert_eq!(conn.decode(&mut src), Ok(Some(Message::text("in flight"))));

    // A ping after our close gets no pong.
    let mut src = client_frame(true, OpCode::PING, b"");
    conn.decode(&mut src).unwrap();
    assert!(!conn.has_pending());

    let mut src = client_frame(true, OpCode::CLOSE, &close_payload_bytes(1000, b""));
    assert_eq!(
        conn.decode(&mut src),
        Ok(Some(Message::close(CloseCode::NORMAL, "")))
    );
    assert_eq!(conn.state(), State::Closed);
    assert!(!conn.has_pending(), "no second close");
    assert!(conn.is_closed());
}

#[test]
fn fault_after_close_sent_queues_no_second_close() {
    let mut conn = server();
    let mut out = BytesMut::new();
    conn.encode(Message::Close(None), &mut out).unwrap();
    let mut src = raw_frame(0x81, b"unmasked", false);
    assert_eq!(
        conn.decode(&mut src),
        Err(ProtocolError::UnmaskedClientFrame)
    );
    assert!(!conn.has_pending());
    assert!(conn.is_closed());
}

#[test]
fn encode_after_fault_is_rejected() {
    let mut conn = server();
    let mut src = raw_frame(0x81, b"unmasked", false);
    conn.decode(&mut src).unwrap_err();
    let mut out = BytesMut::new();
    assert_eq!(
        conn.encode(Message::text("x"), &mut out),
        Err(SendError::Closed)
    );
    assert_eq!(
        conn.encode(Message::close(CloseCode::NORMAL, ""), &mut out),
        Err(SendError::Closed)
    );
    assert!(out.is_empty());
}

#[test]
fn pongs_go_out_before_local_close() {
    let mut conn = server();
    let mut src = client_frame(true, OpCode::PING, b"p");
    conn.decode(&mut src).unwrap();
    let mut out = BytesMut::new();
    conn.encode(Message::Close(None), &mut out).unwrap();
    assert_eq!(&out[..], &[0x8A, 0x01, b'p', 0x88, 0x00][..]);
    assert!(!conn.has_pending());
}

#[test]
fn invalid_utf8_fails_before_frame_ends() {
    let mut conn = server();
    let mut payload = b"valid so far ".to_vec();
    payload.push(0xFF);
    payload.extend_from_slice(&[b'x'; 100]);
    let frame = client_frame(true, OpCode::TEXT, &payload);
    // Deliver the header and payload up to and including the invalid byte.
    let invalid_at = 6 + 13 + 1;
    let mut src = BytesMut::from(&frame[..invalid_at]);
    assert_eq!(conn.decode(&mut src), Err(ProtocolError::InvalidUtf8));
    assert_eq!(
        ProtocolError::InvalidUtf8.close_code(),
        CloseCode::INVALID_PAYLOAD
    );
}

#[test]
fn invalid_utf8_in_later_fragment_fails() {
    let mut src = client_frame(false, OpCode::TEXT, "κόσμε".as_bytes());
    src.extend_from_slice(&client_frame(true, OpCode::CONTINUATION, b"\xed\xa0\x80"));
    assert_server_fault(&src, ProtocolError::InvalidUtf8);
}

#[test]
fn utf8_split_across_fragments_is_valid() {
    let mut conn = server();
    // U+20AC (euro sign) is E2 82 AC, split over three fragments.
    let mut src = client_frame(false, OpCode::TEXT, b"a\xe2");
    src.extend_from_slice(&client_frame(false, OpCode::CONTINUATION, b"\x82"));
    src.extend_from_slice(&client_frame(true, OpCode::CONTINUATION, b"\xacb"));
    assert_eq!(
        decode_all(&mut conn, &mut src),
        Ok(vec![Message::text("a€b")])
    );
}

#[test]
fn utf8_split_across_reads_is_valid() {
    let mut conn = server();
    let text = "ÿ€𝄞 mixed widths 日本語";
    let frame = client_frame(true, OpCode::TEXT, text.as_bytes());
    let mut src = BytesMut::new();
    let mut messages = Vec::new();
    for byte in frame.iter() {
        src.extend_from_slice(&[*byte]);
        if let Some(message) = conn.decode(&mut src).unwrap() {
            messages.push(message);
        }
        assert!(src.len() <= FrameHeader::MAX_LEN, "payload left in src");
    }
    assert_eq!(messages, vec![Message::text(text)]);
}

#[test]
fn truncated_utf8_at_message_end_fails() {
    let frame = client_frame(true, OpCode::TEXT, b"abc\xe2\x82");
    assert_server_fault(&frame, ProtocolError::InvalidUtf8);

    let mut src = client_frame(false, OpCode::TEXT, b"abc\xe2\x82");
    src.extend_from_slice(&client_frame(true, OpCode::CONTINUATION, b""));
    assert_server_fault(&src, ProtocolError::InvalidUtf8);
}

#[test]
fn binary_is_not_checked_for_utf8() {
    let mut conn = server();
    let mut src = client_frame(true, OpCode::BINARY, b"\xff\xfe");
    assert_eq!(
        conn.decode(&mut src),
        Ok(Some(Message::binary(&b"\xff\xfe"[..])))
    );
}

#[test]
fn partial_payload_leaves_src() {
    let mut conn = server();
    let frame = client_frame(true, OpCode::BINARY, &[9u8; 1000]);
    let mut src = BytesMut::from(&frame[..508]);
    assert_eq!(conn.decode(&mut src), Ok(None));
    assert!(src.is_empty());
    assert_eq!(conn.buffered(), 500);
    src.extend_from_slice(&frame[508..]);
    assert_eq!(
        conn.decode(&mut src),
        Ok(Some(Message::binary(vec![9u8; 1000])))
    );
}

#[test]
fn idle_connection_holds_no_buffer() {
    let mut conn = server();
    let mut src = client_frame(true, OpCode::TEXT, &[b'a'; 5000]);
    conn.decode(&mut src).unwrap().unwrap();
    assert_eq!(conn.buffered(), 0);
    assert_eq!(conn.message.capacity(), 0);
    assert_eq!(conn.pending_pongs.capacity(), 0);
}

#[test]
fn complete_frame_allocates_exactly_once() {
    let mut conn = server();
    let frame = client_frame(true, OpCode::BINARY, &[1u8; 70_000]);
    // All but the last byte: the buffer was sized for the whole frame, and 1/64 of it
    // past its end, in one step.
    let mut src = BytesMut::from(&frame[..frame.len() - 1]);
    assert_eq!(conn.decode(&mut src), Ok(None));
    assert_eq!(conn.message.capacity(), 70_000 + 70_000 / 64);
}

#[test]
fn streamed_frame_capacity_stays_within_frame() {
    let mut conn = server();
    let frame = client_frame(true, OpCode::BINARY, &[1u8; 100_000]);
    for piece in frame[..frame.len() - 1].chunks(1400) {
        let mut src = BytesMut::from(piece);
        assert_eq!(conn.decode(&mut src), Ok(None));
        assert!(conn.message.capacity() <= 100_000 + 100_000 / 64);
    }
}

#[test]
fn small_fragments_grow_buffer_geometrically() {
    let mut conn = with_limits(Role::Server, 1 << 20, 1 << 20);
    let mut src = client_frame(false, OpCode::BINARY, &[0u8; 64]);
    assert_eq!(conn.decode(&mut src), Ok(None));
    let mut reallocations = 0;
    let mut capacity = conn.message.capacity();
    for _ in 0..4000 {
        let mut src = client_frame(false, OpCode::CONTINUATION, &[0u8; 64]);
        assert_eq!(conn.decode(&mut src), Ok(None));
        if conn.message.capacity() != capacity {
            reallocations += 1;
            capacity = conn.message.capacity();
        }
        assert!(capacity <= 1 << 20);
    }
    assert!(
        reallocations <= 8,
        "{reallocations} reallocations for 256 KB"
    );
    let mut src = client_frame(true, OpCode::CONTINUATION, b"");
    let message = conn.decode(&mut src).unwrap().unwrap();
    assert_eq!(message.len(), 64 * 4001);
}

#[test]
fn client_encode_masks_and_server_decodes() {
    let mut sender = client();
    let mut out = BytesMut::new();
    sender.encode(Message::text("masked"), &mut out).unwrap();
    assert_eq!(out[1] & 0x80, 0x80, "MASK bit set");
    assert_eq!(out.len(), 2 + 4 + 6);
    let mut receiver = server();
    assert_eq!(receiver.decode(&mut out), Ok(Some(Message::text("masked"))));
}

#[test]
fn server_encode_is_unmasked() {
    let mut sender = server();
    let mut out = BytesMut::new();
    sender
        .encode(Message::binary(&b"abc"[..]), &mut out)
        .unwrap();
    assert_eq!(&out[..], &[0x82, 0x03, b'a', b'b', b'c'][..]);
}

#[test]
fn client_uses_fresh_mask_keys() {
    let mut sender = client();
    let mut keys = std::collections::HashSet::new();
    for _ in 0..16 {
        let mut out = BytesMut::new();
        sender.encode(Message::text("k"), &mut out).unwrap();
        keys.insert([out[2], out[3], out[4], out[5]]);
    }
    assert!(keys.len() > 1, "every frame used the same key");
}

#[test]
fn encode_validates_control_frames() {
    let mut conn = server();
    let mut out = BytesMut::new();
    assert_eq!(
        conn.encode(Message::Ping(Bytes::from(vec![0u8; 126])), &mut out),
        Err(SendError::ControlTooLong(126))
    );
    assert_eq!(
        conn.encode(Message::Pong(Bytes::from(vec![0u8; 126])), &mut out),
        Err(SendError::ControlTooLong(126))
    );
    for code in [0u16, 1005, 1006, 1015, 2000, 5000] {
        assert_eq!(
            conn.encode(Message::close(CloseCode(code), ""), &mut out),
            Err(SendError::InvalidCloseCode(code))
        );
    }
    let long_reason = "r".repeat(124);
    assert_eq!(
        conn.encode(Message::close(CloseCode::NORMAL, long_reason), &mut out),
        Err(SendError::CloseReasonTooLong(124))
    );
    assert!(out.is_empty());
    assert_eq!(conn.state(), State::Open);

    conn.encode(Message::Ping(Bytes::from(vec![0u8; 125])), &mut out)
        .unwrap();
    conn.encode(Message::close(CloseCode::NORMAL, "r".repeat(123)), &mut out)
        .unwrap();
}

#[test]
fn encode_fragments_long_messages() {
    let config = Config {
        max_send_frame_size: Some(4),
        ..Config::default()
    };
    let mut sender = Connection::new(Role::Server, config);
    let mut out = BytesMut::new();
    sender
        .encode(Message::text("0123456789"), &mut out)
        .unwrap();
    let mut offset = 0;
    let mut frames = Vec::new();
    while let Some((header, len)) = frame::decode_header(&out[offset..]).unwrap() {
        frames.push((header.fin, header.opcode, header.payload_len));
        offset += len + header.payload_len as usize;
    }
    assert_eq!(
        frames,
        vec![
            (false, OpCode::TEXT, 4),
            (false, OpCode::CONTINUATION, 4),
            (true, OpCode::CONTINUATION, 2),
        ]
    );

    // Short messages and control frames stay whole.
    let mut out = BytesMut::new();
    sender.encode(Message::text("0123"), &mut out).unwrap();
    assert_eq!(out[0], 0x81);
    let mut out = BytesMut::new();
    sender
        .encode(Message::Ping(Bytes::from_static(b"012345")), &mut out)
        .unwrap();
    assert_eq!(out[0], 0x89);
}

#[test]
fn zero_send_frame_size_means_one_byte() {
    let config = Config {
        max_send_frame_size: Some(0),
        ..Config::default()
    };
    let mut sender = Connection::new(Role::Server, config);
    let mut out = BytesMut::new();
    sender
        .encode(Message::binary(&b"ab"[..]), &mut out)
        .unwrap();
    assert_eq!(&out[..], &[0x02, 0x01, b'a', 0x80, 0x01, b'b'][..]);
}

#[test]
fn empty_messages_roundtrip() {
    let mut sender = client();
    let mut receiver = server();
    let mut out = BytesMut::new();
    sender.encode(Message::text(""), &mut out).unwrap();
    sender
        .encode(Message::binary(Bytes::new()), &mut out)
        .unwrap();
    assert_eq!(
        decode_all(&mut receiver, &mut out),
        Ok(vec![Message::text(""), Message::binary(Bytes::new())])
    );
}

#[test]
fn connection_stays_small() {
    // 192 bytes, plus 8 for `payload_buf_start`, which saves a copy of every large
    // received payload, and 8 for the boxed bytes past a frame end.
    assert!(
        size_of::<Connection>() <= 208,
        "Connection is {} bytes",
        size_of::<Connection>()
    );
}

/// Builds a byte stream of loosely valid frames from fuzz input, so that decoding gets
/// past the header checks and exercises assembly, UTF-8 and limits.
fn frames_from_fuzz(parts: &[(u8, Vec<u8>, bool)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (first, payload, masked) in parts {
        out.extend_from_slice(&raw_frame(*first, payload, *masked));
    }
    out
}

/// Maximum bytes `decode` leaves in `src` after `Ok(None)`: an incomplete control frame,
/// header and 125-byte payload.
const MAX_LEFT_IN_SRC: usize = FrameHeader::MAX_LEN + MAX_CONTROL_PAYLOAD;

fn feed_in_chunks(conn: &mut Connection, bytes: &[u8], cuts: &[usize], max: usize) {
    let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (bytes.len() + 1)).collect();
    cuts.push(0);
    cuts.push(bytes.len());
    cuts.sort_unstable();
    let mut src = BytesMut::new();
    for pair in cuts.windows(2) {
        src.extend_from_slice(&bytes[pair[0]..pair[1]]);
        while let Ok(Some(message)) = conn.decode(&mut src) {
            assert!(message.len() <= max.max(MAX_CONTROL_PAYLOAD));
        }
        assert!(
            src.len() <= MAX_LEFT_IN_SRC,
            "{} bytes left in src",
            src.len()
        );
        assert!(conn.buffered() <= max, "buffered {}", conn.buffered());
        assert!(
            conn.message.capacity() <= max,
            "capacity {}",
            conn.message.capacity()
        );
        assert!(conn.pending_pongs.len() <= MAX_PENDING_PONG_BYTES);
        let mut out = BytesMut::new();
        conn.write_pending(&mut out);
    }
}

/// Messages and errors in the order a decoder returned them.
type Decoded = Vec<Result<Message, ProtocolError>>;

/// Decodes `bytes` in pieces cut at `cuts`, once through `decode` and once through
/// `decode_slice` with the unconsumed bytes carried over, and returns both result lists.
fn decode_both_ways(bytes: &[u8], cuts: &[usize], role: Role) -> (Decoded, Decoded) {
    let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (bytes.len() + 1)).collect();
    cuts.push(0);
    cuts.push(bytes.len());
    cuts.sort_unstable();

    let mut owned = with_limits(role, 64, 200);
    let mut borrowed = with_limits(role, 64, 200);
    let mut owned_results = Vec::new();
    let mut borrowed_results = Vec::new();
    let mut src = BytesMut::new();
    let mut carried = Vec::new();
    for pair in cuts.windows(2) {
        let piece = &bytes[pair[0]..pair[1]];
        src.extend_from_slice(piece);
        loop {
            match owned.decode(&mut src) {
                Ok(Some(message)) => owned_results.push(Ok(message)),
                Ok(None) => break,
                Err(err) => owned_results.push(Err(err)),
            }
        }

        carried.extend_from_slice(piece);
        loop {
            let before = carried.len();
            match borrowed.decode_slice(&mut carried) {
                Ok((message, consumed)) => {
                    assert!(consumed <= before, "consumed {consumed} of {before}");
                    carried.drain(..consumed);
                    match message {
                        Some(message) => borrowed_results.push(Ok(message)),
                        None => break,
                    }
                }
                Err(err) => {
                    carried.clear();
                    borrowed_results.push(Err(err));
                }
            }
        }
        assert_eq!(carried.len(), src.len(), "unconsumed bytes differ");
    }
    (owned_results, borrowed_results)
}

#[test]
fn decode_slice_reports_consumed_bytes() {
    let mut conn = server();
    let mut bytes = client_frame(true, OpCode::BINARY, b"first").to_vec();
    let second = client_frame(true, OpCode::TEXT, b"second");
    bytes.extend_from_slice(&second[..3]);

    let (message, consumed) = conn.decode_slice(&mut bytes).unwrap();
    assert_eq!(message, Some(Message::binary(&b"first"[..])));
    assert_eq!(consumed, 2 + 4 + 5);
    assert_eq!(&bytes[consumed..], &second[..3], "unconsumed bytes changed");

    let mut rest = bytes[consumed..].to_vec();
    rest.extend_from_slice(&second[3..]);
    let (message, consumed) = conn.decode_slice(&mut rest).unwrap();
    assert_eq!(message, Some(Message::text("second")));
    assert_eq!(consumed, rest.len());
}

#[test]
fn decode_slice_keeps_partial_header() {
    let mut conn = server();
    let frame = client_frame(true, OpCode::BINARY, &[9u8; 300]);
    let mut head = frame[..3].to_vec();
    let (message, consumed) = conn.decode_slice(&mut head).unwrap();
    assert_eq!(message, None);
    assert_eq!(consumed, 0, "a partial header is not consumed");
}

#[test]
fn decode_slice_error_consumes_everything() {
    let mut conn = server();
    let mut bytes = raw_frame(0x82, b"unmasked", false).to_vec();
    let err = conn.decode_slice(&mut bytes).unwrap_err();
    assert_eq!(err, ProtocolError::UnmaskedClientFrame);
    assert!(conn.is_failed());
    let mut more = client_frame(true, OpCode::TEXT, b"late").to_vec();
    let len = more.len();
    assert_eq!(conn.decode_slice(&mut more), Ok((None, len)));
}

/// Decodes `bytes` as the pylon_ws driver reads them. While the input buffer is empty
/// and a frame is arriving, the next read goes into `payload_buf(max_read)` and takes at
/// most its room. Otherwise it goes into the input buffer. Read sizes cycle through
/// `reads`. Returns the messages and the first error, if any. Checks after each decode
/// that the message buffer kept within [`Limits::max_message_size`].
fn decode_through_payload_buf(
    conn: &mut Connection,
    bytes: &[u8],
    reads: &[usize],
    max_read: usize,
) -> (Vec<Message>, Option<ProtocolError>) {
    let max_capacity = conn.config.limits.max_message_size;
    let mut messages = Vec::new();
    let mut src = BytesMut::new();
    let mut pos = 0;
    let mut read_sizes = reads.iter().map(|size| size.max(&1)).cycle();
    loop {
        loop {
            match conn.decode(&mut src) {
                Ok(Some(message)) => messages.push(message),
                Ok(None) => break,
                Err(err) => return (messages, Some(err)),
            }
        }
        assert!(
            conn.message.capacity() <= max_capacity,
            "capacity {}, limit {max_capacity}",
            conn.message.capacity()
        );
        if pos == bytes.len() {
            return (messages, None);
        }
        let size = (*read_sizes.next().unwrap()).min(bytes.len() - pos);
        if src.is_empty()
            && let Some(mut buf) = conn.payload_buf(max_read)
        {
            let take = size.min(buf.remaining_mut());
            buf.put_slice(&bytes[pos..pos + take]);
            pos += take;
            continue;
        }
        src.extend_from_slice(&bytes[pos..pos + size]);
        pos += size;
    }
}

proptest! {
    #[test]
    fn decode_slice_matches_decode(
        parts in proptest::collection::vec(
            (
                prop::sample::select(vec![0x00u8, 0x01, 0x02, 0x80, 0x81, 0x82, 0x88, 0x89, 0x8A, 0xC1]),
                proptest::collection::vec(any::<u8>(), 0..100),
                prop::bool::weighted(0.95),
            ),
            0..12,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        server_role in any::<bool>(),
    ) {
        let role = if server_role { Role::Server } else { Role::Client };
        let parts: Vec<(u8, Vec<u8>, bool)> = parts
            .into_iter()
            .map(|(first, payload, mask_ok)| (first, payload, mask_ok == server_role))
            .collect();
        let bytes = frames_from_fuzz(&parts);
        let (owned, borrowed) = decode_both_ways(&bytes, &cuts, role);
        prop_assert_eq!(owned, borrowed);
    }

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
        server_role in any::<bool>(),
    ) {
        let role = if server_role { Role::Server } else { Role::Client };
        let mut conn = with_limits(role, 64, 200);
        feed_in_chunks(&mut conn, &bytes, &cuts, 200);
    }

    #[test]
    fn arbitrary_frames_respect_any_limits(
        parts in proptest::collection::vec(
            (
                prop::sample::select(vec![0x00u8, 0x01, 0x02, 0x80, 0x81, 0x82, 0x89, 0x8A, 0x88]),
                proptest::collection::vec(any::<u8>(), 0..300),
                prop::bool::weighted(0.95),
            ),
            0..16,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
        max_frame_size in 0usize..400,
        max_message_size in 0usize..800,
        server_role in any::<bool>(),
    ) {
        let role = if server_role { Role::Server } else { Role::Client };
        let parts: Vec<(u8, Vec<u8>, bool)> = parts
            .into_iter()
            .map(|(first, payload, mask_ok)| (first, payload, mask_ok == server_role))
            .collect();
        let bytes = frames_from_fuzz(&parts);
        let mut conn = with_limits(role, max_frame_size, max_message_size);
        feed_in_chunks(&mut conn, &bytes, &cuts, max_message_size);
    }

    #[test]
    fn arbitrary_frames_never_panic(
        parts in proptest::collection::vec(
            (
                prop::sample::select(vec![0x00u8, 0x01, 0x02, 0x80, 0x81, 0x82, 0x88, 0x89, 0x8A, 0xC1, 0x83]),
                proptest::collection::vec(any::<u8>(), 0..100),
                prop::bool::weighted(0.95),
            ),
            0..12,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let bytes = frames_from_fuzz(&parts);
        let mut conn = with_limits(Role::Server, 64, 200);
        feed_in_chunks(&mut conn, &bytes, &cuts, 200);
    }

    #[test]
    fn payload_buf_reads_match_whole_decode(
        parts in proptest::collection::vec(
            (
                prop::sample::select(vec![0x00u8, 0x01, 0x02, 0x80, 0x81, 0x82, 0x88, 0x89, 0x8A, 0x83]),
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..130),
                    proptest::collection::vec(prop::sample::select(b"ab\xc3\xa9\xff".to_vec()), 1000..5000),
                ],
                prop::bool::weighted(0.97),
            ),
            0..10,
        ),
        reads in proptest::collection::vec(1usize..6000, 1..8),
        max_read in 1usize..8000,
        max_size in prop::sample::select(vec![4000usize, 5000, 1 << 20]),
    ) {
        let bytes = frames_from_fuzz(&parts);
        let mut reference = with_limits(Role::Server, max_size, max_size);
        let mut whole = BytesMut::from(&bytes[..]);
        let mut expected = Vec::new();
        let mut expected_err = None;
        loop {
            match reference.decode(&mut whole) {
                Ok(Some(message)) => expected.push(message),
                Ok(None) => break,
                Err(err) => {
                    expected_err = Some(err);
                    break;
                }
            }
        }

        let mut conn = with_limits(Role::Server, max_size, max_size);
        let (messages, err) = decode_through_payload_buf(&mut conn, &bytes, &reads, max_read);
        prop_assert_eq!(messages, expected);
        prop_assert_eq!(err, expected_err);
    }
}

#[test]
fn encode_split_returns_large_server_payload() {
    let mut sender = server();
    let payload = Bytes::from(vec![7u8; 60 << 10]);
    let mut out = BytesMut::new();
    let rest = sender
        .encode_split(Message::binary(payload.clone()), &mut out)
        .unwrap()
        .expect("a 60 KiB server message is split");
    assert_eq!(out.len(), 4, "only the 16-bit length header is written");
    assert_eq!(rest, payload);
    assert_eq!(rest.as_ptr(), payload.as_ptr(), "the payload was copied");

    // Header and payload together are an ordinary frame.
    out.extend_from_slice(&rest);
    let (header, header_len) = frame::decode_header(&out).unwrap().unwrap();
    assert!(header.fin);
    assert_eq!(header.opcode, OpCode::BINARY);
    assert_eq!(header.payload_len, 60 << 10);
    assert_eq!(&out[header_len..], &payload[..]);
}

#[test]
fn encode_split_copies_when_it_must() {
    let large = "x".repeat(8 << 10);
    let fragmenting = Connection::new(
        Role::Server,
        Config {
            max_send_frame_size: Some(1024),
            ..Config::default()
        },
    );
    let compressing = Connection::new(
        Role::Server,
        Config {
            deflate: Some(PerMessageDeflate::new(
                Role::Server,
                crate::DeflateParams::default(),
                &crate::DeflateConfig::default(),
            )),
            ..Config::default()
        },
    );
    let cases = [
        ("short message", server(), Message::text("short")),
        ("client masks", client(), Message::text(large.clone())),
        ("fragmented", fragmenting, Message::text(large.clone())),
        ("compressed", compressing, Message::text(large.clone())),
        (
            "control frame",
            server(),
            Message::Ping(Bytes::from_static(b"p")),
        ),
    ];
    for (name, mut sender, message) in cases {
        let mut split_out = BytesMut::new();
        let rest = sender.encode_split(message.clone(), &mut split_out);
        assert_eq!(rest, Ok(None), "{name}");
        assert!(!split_out.is_empty(), "{name}");
    }
}

#[test]
fn encode_split_rejects_after_close() {
    let mut sender = server();
    let mut out = BytesMut::new();
    sender
        .encode(Message::close(CloseCode::NORMAL, ""), &mut out)
        .unwrap();
    let mut after = BytesMut::new();
    let result = sender.encode_split(Message::binary(vec![0u8; 8 << 10]), &mut after);
    assert_eq!(result, Err(SendError::Closed));
    assert!(after.is_empty());
}

#[test]
fn pending_payload_len_tracks_frame() {
    let mut receiver = server();
    let payload = vec![1u8; 1000];
    let mut wire = raw_frame(0x82, &payload, true);
    let mut src = wire.split_to(wire.len() - 400);
    assert_eq!(receiver.pending_payload_len(), 0);
    assert_eq!(receiver.decode(&mut src).unwrap(), None);
    assert_eq!(receiver.pending_payload_len(), 400);
    let message = receiver.decode(&mut wire).unwrap();
    assert_eq!(message, Some(Message::binary(payload)));
    assert_eq!(receiver.pending_payload_len(), 0);
}

/// Feeds the payload of a masked data frame through `payload_buf` in pieces of at most
/// `piece` bytes, after `decode` has consumed the header.
fn decode_via_payload_buf(
    receiver: &mut Connection,
    first_byte: u8,
    payload: &[u8],
    piece: usize,
) -> Result<Option<Message>, ProtocolError> {
    let wire = raw_frame(first_byte, payload, true);
    let header_len = wire.len() - payload.len();
    let mut header = BytesMut::from(&wire[..header_len]);
    assert_eq!(receiver.decode(&mut header)?, None);
    let mut rest = &wire[header_len..];
    while !rest.is_empty() {
        let mut buf = receiver
            .payload_buf(piece)
            .expect("payload_buf is available mid-frame");
        let take = rest.len().min(buf.remaining_mut());
        buf.put_slice(&rest[..take]);
        rest = &rest[take..];
        if let Some(message) = receiver.decode(&mut BytesMut::new())? {
            return Ok(Some(message));
        }
    }
    Ok(None)
}

#[test]
fn payload_buf_reads_frame_in_pieces() {
    let text = "é".repeat(3000);
    let mut receiver = server();
    let message = decode_via_payload_buf(&mut receiver, 0x81, text.as_bytes(), 1001);
    assert_eq!(message, Ok(Some(Message::text(text))));
    assert_eq!(receiver.buffered(), 0);
    assert!(
        receiver.payload_buf(1024).is_none(),
        "no frame is in progress"
    );
}

#[test]
fn payload_buf_is_limited_to_frame_rest_and_small_room() {
    let mut receiver = server();
    let mut header = raw_frame(0x82, &[0u8; 100], true);
    header.truncate(header.len() - 100);
    assert_eq!(receiver.decode(&mut header), Ok(None));
    let buf = receiver.payload_buf(1 << 20).unwrap();
    // 16 bytes of room past the frame end, the least that `past_frame_room` gives.
    assert_eq!(bytes::buf::Limit::limit(&buf), 116);
    // A piece that ends before the frame end gets no room past it.
    let buf = receiver.payload_buf(40).unwrap();
    assert_eq!(bytes::buf::Limit::limit(&buf), 40);
}

#[test]
fn room_past_frame_stays_within_message_limit() {
    // Limits below and above MAX_EAGER_FRAME_CAPACITY, with frames at the limit and just
    // under it, so that the room past the frame end would cross the limit.
    for max in [1000, 2 << 20] {
        for frame_len in [max, max - 10] {
            let payload = vec![3u8; frame_len];
            let wire = raw_frame(0x82, &payload, true);
            let header_len = wire.len() - frame_len;

            // Payload arriving through `decode`, cut in the middle.
            let mut receiver = with_limits(Role::Server, max, max);
            let mut src = BytesMut::from(&wire[..header_len + frame_len / 2]);
            assert_eq!(receiver.decode(&mut src), Ok(None));
            assert!(
                receiver.message.capacity() <= max,
                "decode: capacity {} for frame {frame_len}, limit {max}",
                receiver.message.capacity()
            );

            // Payload read through `payload_buf` up to the frame end.
            let mut receiver = with_limits(Role::Server, max, max);
            let mut head = BytesMut::from(&wire[..header_len]);
            assert_eq!(receiver.decode(&mut head), Ok(None));
            let mut rest = &wire[header_len..];
            while !rest.is_empty() {
                let mut buf = receiver.payload_buf(256 << 10).unwrap();
                let take = rest.len().min(buf.remaining_mut());
                buf.put_slice(&rest[..take]);
                rest = &rest[take..];
                assert!(
                    receiver.message.capacity() <= max,
                    "payload_buf: capacity {} for frame {frame_len}, limit {max}",
                    receiver.message.capacity()
                );
                if !rest.is_empty() {
                    assert_eq!(receiver.decode(&mut BytesMut::new()), Ok(None));
                }
            }
            assert_eq!(
                receiver.decode(&mut BytesMut::new()),
                Ok(Some(Message::binary(payload))),
                "frame {frame_len}, limit {max}"
            );
        }
    }
}

#[test]
fn past_frame_bytes_decoded_next() {
    let first = vec![7u8; 64 << 10];
    let second = b"next frame".to_vec();
    let third = vec![9u8; 3000];
    let wire_first = raw_frame(0x82, &first, true);
    let mut after = raw_frame(0x81, &second, true).to_vec();
    after.extend_from_slice(&raw_frame(0x82, &third, true));

    let mut receiver = server();
    let header_len = wire_first.len() - first.len();
    let mut head = BytesMut::from(&wire_first[..header_len]);
    assert_eq!(receiver.decode(&mut head), Ok(None));

    // One read takes the whole payload and, in the room past the frame, the next frame
    // and the start of the one after it.
    let mut buf = receiver.payload_buf(1 << 20).unwrap();
    let room = buf.remaining_mut();
    assert_eq!(room, first.len() + (64 << 10) / 64);
    let mut input = wire_first[header_len..].to_vec();
    input.extend_from_slice(&after);
    buf.put_slice(&input[..room]);
    let mut rest = BytesMut::from(&input[room..]);

    assert_eq!(receiver.decode(&mut rest), Ok(Some(Message::binary(first))));
    assert_eq!(
        receiver.decode(&mut rest),
        Ok(Some(Message::text("next frame")))
    );
    assert_eq!(receiver.decode(&mut rest), Ok(Some(Message::binary(third))));
    assert!(rest.is_empty());
    assert_eq!(receiver.buffered(), 0);
}

#[test]
fn payload_buf_none_once_frame_is_read() {
    let payload = [5u8; 100];
    let wire_first = raw_frame(0x82, &payload, true);
    let wire_next = raw_frame(0x81, b"next frame", true);
    let header_len = wire_first.len() - payload.len();
    let mut input = wire_first[header_len..].to_vec();
    input.extend_from_slice(&wire_next);

    // Pieces that reach the frame end: at once, and after a read that stops short of it.
    for first_piece in [0, 40] {
        let mut receiver = server();
        let mut head = BytesMut::from(&wire_first[..header_len]);
        assert_eq!(receiver.decode(&mut head), Ok(None));
        let mut read = 0;
        if first_piece > 0 {
            let mut buf = receiver.payload_buf(first_piece).unwrap();
            buf.put_slice(&input[..first_piece]);
            read = first_piece;
        }
        // This read ends 5 bytes past the frame, inside the next frame's header and mask.
        let mut buf = receiver.payload_buf(1 << 20).unwrap();
        let end = payload.len() + 5;
        assert!(
            buf.remaining_mut() >= end - read,
            "first piece {first_piece}"
        );
        buf.put_slice(&input[read..end]);

        // Nothing of the frame is left to read, though `decode` has not run since.
        assert!(
            receiver.payload_buf(1 << 20).is_none(),
            "first piece {first_piece}"
        );

        let mut rest = BytesMut::from(&input[end..]);
        assert_eq!(
            receiver.decode(&mut rest),
            Ok(Some(Message::binary(payload.to_vec()))),
            "first piece {first_piece}"
        );
        assert_eq!(
            receiver.decode(&mut rest),
            Ok(Some(Message::text("next frame"))),
            "first piece {first_piece}"
        );
        assert!(rest.is_empty(), "first piece {first_piece}");
    }
}

#[test]
fn decode_slice_past_frame_bytes_first() {
    let first = vec![5u8; 100];
    let mut after = raw_frame(0x89, b"ping", true).to_vec();
    after.extend_from_slice(&raw_frame(0x81, b"second", true));
    let third = raw_frame(0x81, b"third", true).to_vec();

    let mut receiver = server();
    let wire = raw_frame(0x82, &first, true);
    let mut header = BytesMut::from(&wire[..wire.len() - first.len()]);
    assert_eq!(receiver.decode(&mut header), Ok(None));
    let mut buf = receiver.payload_buf(1 << 20).unwrap();
    // The payload, then the ping and the start of the second frame in the room past it.
    let room = buf.remaining_mut();
    let mut input = wire[wire.len() - first.len()..].to_vec();
    input.extend_from_slice(&after);
    buf.put_slice(&input[..room]);
    let mut rest = input[room..].to_vec();
    rest.extend_from_slice(&third);

    let (message, consumed) = receiver.decode_slice(&mut rest).unwrap();
    assert_eq!(message, Some(Message::binary(first)));
    assert_eq!(consumed, 0);
    let (message, consumed) = receiver.decode_slice(&mut rest).unwrap();
    assert_eq!(message, Some(Message::Ping(Bytes::from_static(b"ping"))));
    assert_eq!(consumed, 0);
    let (message, consumed) = receiver.decode_slice(&mut rest).unwrap();
    assert_eq!(message, Some(Message::text("second")));
    let mut rest = rest[consumed..].to_vec();
    assert_eq!(rest, third);
    let (message, consumed) = receiver.decode_slice(&mut rest).unwrap();
    assert_eq!(message, Some(Message::text("third")));
    assert_eq!(consumed, third.len());
    assert_eq!(receiver.decode_slice(&mut []), Ok((None, 0)));
}

#[test]
fn payload_buf_fails_invalid_utf8_early() {
    let mut payload = b"valid start ".to_vec();
    payload.push(0xff);
    payload.extend_from_slice(&[b'a'; 5000]);
    let mut receiver = server();
    let result = decode_via_payload_buf(&mut receiver, 0x81, &payload, 16);
    assert_eq!(result, Err(ProtocolError::InvalidUtf8));
    assert!(receiver.is_failed());
    assert!(receiver.payload_buf(16).is_none());
}

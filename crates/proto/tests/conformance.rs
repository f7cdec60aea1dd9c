//! Frame-level conformance with RFC 6455 for a receiving [`Connection`] that echoes every
//! data message, the behaviour that the Autobahn TestSuite expects from a server under test.
//!
//! Every case is a fixed byte sequence. It is fed whole, split in two at every byte
//! boundary (for short inputs), one byte at a time and in seeded random chunks. Every
//! feeding must give the same outcome: the messages `decode` returned, the fault, and the
//! frames the connection wrote back (echoes, pongs, close replies).

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use pylon_proto::{CloseCode, Config, Connection, Message, ProtocolError, Role};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CONTINUATION: u8 = 0x0;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Inputs up to this length are also fed split in two at every byte boundary.
const MAX_LEN_FOR_EVERY_SPLIT: usize = 4096;

/// Number of seeded random chunkings per input.
const RANDOM_CHUNKINGS: u64 = 16;

/// Builder of the bytes a peer sends to a connection in `receiver` role: masked with a
/// different key per frame when the receiver is a server, unmasked for a client.
struct Wire {
    receiver: Role,
    bytes: Vec<u8>,
    frames: u8,
}

impl Wire {
    fn to(receiver: Role) -> Self {
        Wire {
            receiver,
            bytes: Vec::new(),
            frames: 0,
        }
    }

    /// Appends a frame with the given first header byte (FIN, RSV bits and opcode).
    fn raw(mut self, first_byte: u8, payload: &[u8]) -> Self {
        self.frames = self.frames.wrapping_add(1);
        let key = match self.receiver {
            Role::Server => Some([0xA5, self.frames, 0x3C, !self.frames]),
            Role::Client => None,
        };
        append_frame(&mut self.bytes, first_byte, payload, key);
        self
    }

    /// Appends a frame with FIN set or clear and no RSV bits.
    fn frame(self, fin: bool, opcode: u8, payload: &[u8]) -> Self {
        let fin_bit = if fin { 0x80 } else { 0 };
        self.raw(fin_bit | opcode, payload)
    }

    fn text(self, payload: &[u8]) -> Self {
        self.frame(true, TEXT, payload)
    }

    fn close(self, code: u16, reason: &[u8]) -> Self {
        let mut payload = code.to_be_bytes().to_vec();
        payload.extend_from_slice(reason);
        self.frame(true, CLOSE, &payload)
    }

    fn close_normal(self) -> Self {
        self.close(1000, b"")
    }
}

/// Appends one frame with the minimal length form, masked with `key` if present. This is
/// written out here, apart from the crate's encoder, so that the tests check the decoder
/// against an independent encoding.
fn append_frame(out: &mut Vec<u8>, first_byte: u8, payload: &[u8], key: Option<[u8; 4]>) {
    out.push(first_byte);
    let mask_bit = if key.is_some() { 0x80 } else { 0 };
    match payload.len() {
        len @ 0..=125 => out.push(mask_bit | len as u8),
        len @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    match key {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(
                payload
                    .iter()
                    .enumerate()
                    .map(|(i, byte)| byte ^ key[i % 4]),
            );
        }
        None => out.extend_from_slice(payload),
    }
}

/// What a connection did with one input.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// Messages returned by `decode`, in order.
    received: Vec<Message>,
    /// The fault `decode` returned, if any.
    error: Option<ProtocolError>,
    /// Frames the connection wrote, as the peer decodes them.
    sent: Vec<Message>,
    /// `Connection::is_closed` after the input.
    closed: bool,
}

/// Feeds `bytes` in the pieces between `cuts` to a connection in `role` that echoes every
/// data message and writes its automatic frames after each `decode` call.
fn run(role: Role, config: Config, bytes: &[u8], cuts: &[usize]) -> Outcome {
    let mut conn = Connection::new(role, config);
    let mut src = BytesMut::new();
    let mut out = BytesMut::new();
    let mut received = Vec::new();
    let mut error = None;

    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(bytes.len());
    'feed: for piece in bounds.windows(2) {
        src.extend_from_slice(&bytes[piece[0]..piece[1]]);
        loop {
            let result = conn.decode(&mut src);
            conn.write_pending(&mut out);
            match result {
                Ok(Some(message)) => {
                    if matches!(message, Message::Text(_) | Message::Binary(_)) {
                        conn.encode(message.clone(), &mut out).expect("echo");
                    }
                    received.push(message);
                }
                Ok(None) => break,
                Err(err) => {
                    assert!(conn.is_failed());
                    error = Some(err);
                    break 'feed;
                }
            }
        }
        assert!(src.len() <= 14 + 125, "{} bytes left in src", src.len());
    }
    if error.is_none() {
        assert_eq!(conn.buffered(), 0, "message buffer retained");
    }
    Outcome {
        received,
        error,
        sent: decode_as_peer(role, &mut out),
        closed: conn.is_closed(),
    }
}

fn decode_as_peer(role: Role, wire: &mut BytesMut) -> Vec<Message> {
    let peer_role = match role {
        Role::Client => Role::Server,
        Role::Server => Role::Client,
    };
    let mut peer = Connection::new(peer_role, Config::default());
    let mut messages = Vec::new();
    while let Some(message) = peer.decode(wire).expect("frames written by the connection") {
        messages.push(message);
    }
    messages
}

/// Returns the cut points of every feeding of an input of `len` bytes.
fn chunkings(len: usize) -> Vec<Vec<usize>> {
    let mut all = vec![Vec::new(), (1..len).collect()];
    if len <= MAX_LEN_FOR_EVERY_SPLIT {
        all.extend((1..len).map(|cut| vec![cut]));
    }
    for seed in 0..RANDOM_CHUNKINGS {
        let mut rng = StdRng::seed_from_u64(seed);
        let max_piece = [3, 17, 200, 1400][seed as usize % 4];
        let mut cuts = Vec::new();
        let mut at = 0;
        loop {
            at += rng.random_range(1..=max_piece);
            if at >= len {
                break;
            }
            cuts.push(at);
        }
        all.push(cuts);
    }
    all
}

/// Asserts that every feeding of `bytes` gives `expected`.
fn check_with(role: Role, config: Config, bytes: &[u8], expected: &Outcome) {
    for cuts in chunkings(bytes.len()) {
        let outcome = run(role, config, bytes, &cuts);
        let first_cuts: Vec<usize> = cuts.iter().copied().take(8).collect();
        assert_eq!(&outcome, expected, "{role:?}, cuts starting {first_cuts:?}");
    }
}

fn check(wire: Wire, expected: &Outcome) {
    check_with(wire.receiver, Config::default(), &wire.bytes, expected);
}

/// Outcome of a clean exchange: `received` followed by the peer's close 1000, and
/// `sent_before_close` (echoes and pongs) followed by the close reply.
fn clean(received: Vec<Message>, sent_before_close: Vec<Message>) -> Outcome {
    let mut received = received;
    received.push(Message::close(CloseCode::NORMAL, ""));
    let mut sent = sent_before_close;
    sent.push(Message::close(CloseCode::NORMAL, ""));
    Outcome {
        received,
        error: None,
        sent,
        closed: true,
    }
}

/// Outcome of a fault after `received`, with `sent_before_close` written before the fault's
/// close frame.
fn fault(received: Vec<Message>, sent_before_close: Vec<Message>, err: ProtocolError) -> Outcome {
    let mut sent = sent_before_close;
    sent.push(Message::close(err.close_code(), ""));
    Outcome {
        received,
        error: Some(err),
        sent,
        closed: true,
    }
}

fn ping(payload: &[u8]) -> Message {
    Message::Ping(Bytes::copy_from_slice(payload))
}

fn pong(payload: &[u8]) -> Message {
    Message::Pong(Bytes::copy_from_slice(payload))
}

fn text(payload: &[u8]) -> Message {
    Message::text(String::from_utf8(payload.to_vec()).unwrap())
}

fn binary(payload: &[u8]) -> Message {
    Message::binary(payload.to_vec())
}

const ROLES: [Role; 2] = [Role::Server, Role::Client];

// Framing: payload lengths around the 7-bit, 16-bit and 64-bit length forms.

#[test]
fn data_lengths_echo() {
    for role in ROLES {
        for len in [0usize, 1, 125, 126, 127, 128, 65535, 65536] {
            let payload: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let wire = Wire::to(role).text(&payload).close_normal();
            let message = text(&payload);
            check(wire, &clean(vec![message.clone()], vec![message]));

            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let wire = Wire::to(role).frame(true, BINARY, &payload).close_normal();
            let message = binary(&payload);
            check(wire, &clean(vec![message.clone()], vec![message]));
        }
    }
}

#[test]
fn non_minimal_length_is_accepted() {
    // RFC 6455 section 5.2 requires senders to use the minimal form. The decoder accepts a
    // longer one because its meaning is unambiguous.
    let mut bytes = vec![0x82, 0x7E, 0x00, 0x03, b'a', b'b', b'c'];
    bytes.extend_from_slice(&[0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0, 0x01, b'z']);
    let expected = Outcome {
        received: vec![binary(b"abc"), binary(b"z")],
        error: None,
        sent: vec![binary(b"abc"), binary(b"z")],
        closed: false,
    };
    check_with(Role::Client, Config::default(), &bytes, &expected);
}

// Pings and pongs.

#[test]
fn ping_payload_is_echoed() {
    let binary_payload: Vec<u8> = (0..125u8).map(|i| i.wrapping_mul(37) ^ 0xFF).collect();
    for role in ROLES {
        for payload in [&b""[..], b"Hello, world!", &binary_payload, &[0u8; 125]] {
            let wire = Wire::to(role).frame(true, PING, payload).close_normal();
            check(wire, &clean(vec![ping(payload)], vec![pong(payload)]));
        }
    }
}

#[test]
fn ping_over_125_bytes_fails() {
    for role in ROLES {
        let wire = Wire::to(role)
            .frame(true, PING, &[b'x'; 126])
            .close_normal();
        check(
            wire,
            &fault(vec![], vec![], ProtocolError::ControlTooLong(126)),
        );
    }
}

#[test]
fn unsolicited_pong_is_ignored() {
    for role in ROLES {
        let wire = Wire::to(role)
            .frame(true, PONG, b"unsolicited")
            .frame(true, PONG, b"")
            .close_normal();
        check(wire, &clean(vec![pong(b"unsolicited"), pong(b"")], vec![]));

        let wire = Wire::to(role)
            .frame(true, PONG, b"unsolicited")
            .frame(true, PING, b"solicited")
            .close_normal();
        check(
            wire,
            &clean(
                vec![pong(b"unsolicited"), ping(b"solicited")],
                vec![pong(b"solicited")],
            ),
        );
    }
}

#[test]
fn ten_pings_get_ten_pongs_in_order() {
    for role in ROLES {
        for len in [9usize, 125] {
            let mut wire = Wire::to(role);
            let mut pings = Vec::new();
            let mut pongs = Vec::new();
            for i in 0..10u8 {
                let payload = vec![b'0' + i; len];
                wire = wire.frame(true, PING, &payload);
                pings.push(ping(&payload));
                pongs.push(pong(&payload));
            }
            check(wire.close_normal(), &clean(pings, pongs));
        }
    }
}

#[test]
fn ten_pings_before_one_write_get_ten_pongs() {
    for role in ROLES {
        let mut wire = Wire::to(role);
        let mut expected = Vec::new();
        for i in 0..10u8 {
            let payload = vec![i; 125];
            wire = wire.frame(true, PING, &payload);
            expected.push(pong(&payload));
        }
        let mut conn = Connection::new(role, Config::default());
        let mut src = BytesMut::from(&wire.bytes[..]);
        let mut pings = 0;
        while let Some(message) = conn.decode(&mut src).unwrap() {
            assert!(matches!(message, Message::Ping(_)));
            pings += 1;
        }
        assert_eq!(pings, 10);
        let mut out = BytesMut::new();
        conn.write_pending(&mut out);
        assert_eq!(decode_as_peer(role, &mut out), expected, "{role:?}");
    }
}

// Reserved bits and opcodes.

#[test]
fn reserved_bits_fail_with_1002() {
    for role in ROLES {
        for rsv in [0x40u8, 0x20, 0x10, 0x60, 0x50, 0x30, 0x70] {
            for opcode in [TEXT, BINARY, PING, CLOSE] {
                let wire = Wire::to(role)
                    .raw(0x80 | rsv | opcode, b"")
                    .frame(true, PING, b"after");
                check(wire, &fault(vec![], vec![], ProtocolError::ReservedBits));
            }

            // A valid message before the faulty frame is still echoed first.
            let wire = Wire::to(role)
                .text(b"Hello, world!")
                .raw(0x80 | rsv | TEXT, b"Hello, world!")
                .frame(true, PING, b"");
            let message = text(b"Hello, world!");
            let expected = fault(
                vec![message.clone()],
                vec![message],
                ProtocolError::ReservedBits,
            );
            check(wire, &expected);
        }

        // RSV on a continuation of an open fragmented message.
        let wire = Wire::to(role)
            .frame(false, TEXT, b"frag")
            .raw(0x80 | 0x40, b"ment");
        check(wire, &fault(vec![], vec![], ProtocolError::ReservedBits));
    }
}

#[test]
fn reserved_opcodes_fail_with_1002() {
    for role in ROLES {
        for opcode in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            let expected_err = ProtocolError::ReservedOpcode(opcode);
            let wire = Wire::to(role).raw(0x80 | opcode, b"");
            check(wire, &fault(vec![], vec![], expected_err.clone()));

            let wire = Wire::to(role).raw(0x80 | opcode, b"reserved opcode payload");
            check(wire, &fault(vec![], vec![], expected_err.clone()));

            // Reserved opcode after a valid message, then a ping that must get no pong.
            let wire = Wire::to(role)
                .text(b"Hello, world!")
                .raw(0x80 | opcode, b"")
                .frame(true, PING, b"");
            let message = text(b"Hello, world!");
            check(
                wire,
                &fault(vec![message.clone()], vec![message], expected_err.clone()),
            );

            // Inside a fragmented message.
            let wire = Wire::to(role)
                .frame(false, TEXT, b"frag")
                .raw(0x80 | opcode, b"x");
            check(wire, &fault(vec![], vec![], expected_err));
        }
    }
}

// Fragmentation.

#[test]
fn fragmented_control_frames_fail() {
    for role in ROLES {
        for opcode in [PING, PONG, CLOSE] {
            let wire = Wire::to(role)
                .frame(false, opcode, b"hello, ")
                .frame(true, CONTINUATION, b"world")
                .close_normal();
            check(
                wire,
                &fault(vec![], vec![], ProtocolError::FragmentedControl),
            );
        }
    }
}

#[test]
fn fragments_assemble() {
    for role in ROLES {
        let wire = Wire::to(role)
            .frame(false, TEXT, b"hello, ")
            .frame(true, CONTINUATION, b"world")
            .close_normal();
        let message = text(b"hello, world");
        check(wire, &clean(vec![message.clone()], vec![message]));

        let wire = Wire::to(role)
            .frame(false, BINARY, b"")
            .frame(false, CONTINUATION, b"")
            .frame(false, CONTINUATION, b"\x00\xff")
            .frame(true, CONTINUATION, b"")
            .close_normal();
        let message = binary(b"\x00\xff");
        check(wire, &clean(vec![message.clone()], vec![message]));

        // One fragment per byte.
        let payload = "fragments of one byte: κόσμε".as_bytes();
        let mut wire = Wire::to(role).frame(false, TEXT, &payload[..1]);
        for byte in &payload[1..payload.len() - 1] {
            wire = wire.frame(false, CONTINUATION, &[*byte]);
        }
        let wire = wire
            .frame(true, CONTINUATION, &payload[payload.len() - 1..])
            .close_normal();
        let message = text(payload);
        check(wire, &clean(vec![message.clone()], vec![message]));
    }
}

#[test]
fn pings_between_fragments_are_answered_first() {
    for role in ROLES {
        let wire = Wire::to(role)
            .frame(false, TEXT, b"fragment1")
            .frame(true, PING, b"ping payload")
            .frame(false, CONTINUATION, b"fragment2")
            .frame(true, PONG, b"pong payload")
            .frame(true, PING, b"second ping")
            .frame(true, CONTINUATION, b"fragment3")
            .close_normal();
        let message = text(b"fragment1fragment2fragment3");
        let expected = clean(
            vec![
                ping(b"ping payload"),
                pong(b"pong payload"),
                ping(b"second ping"),
                message.clone(),
            ],
            vec![pong(b"ping payload"), pong(b"second ping"), message],
        );
        check(wire, &expected);
    }
}

#[test]
fn continuation_without_start_fails() {
    for role in ROLES {
        for fin in [true, false] {
            let wire = Wire::to(role)
                .frame(fin, CONTINUATION, b"payload")
                .text(b"Hello, world!");
            check(
                wire,
                &fault(vec![], vec![], ProtocolError::UnexpectedContinuation),
            );
        }

        // After a whole fragmented message, nothing is left to continue.
        let wire = Wire::to(role)
            .frame(false, TEXT, b"fragment1")
            .frame(true, CONTINUATION, b"fragment2")
            .frame(false, CONTINUATION, b"fragment3")
            .text(b"Hello, world!");
        let message = text(b"fragment1fragment2");
        check(
            wire,
            &fault(
                vec![message.clone()],
                vec![message],
                ProtocolError::UnexpectedContinuation,
            ),
        );
    }
}

#[test]
fn data_frame_after_fragment_start_fails() {
    for role in ROLES {
        for (first, second) in [
            (TEXT, TEXT),
            (TEXT, BINARY),
            (BINARY, TEXT),
            (BINARY, BINARY),
        ] {
            for fin in [true, false] {
                let wire = Wire::to(role).frame(false, first, b"fragment1").frame(
                    fin,
                    second,
                    b"fragment2",
                );
                check(
                    wire,
                    &fault(vec![], vec![], ProtocolError::ExpectedContinuation),
                );
            }
        }
    }
}

// UTF-8 in text messages.

/// Returns the offset at which `bytes` is first known to be invalid UTF-8, following the
/// well-formed byte sequences of the Unicode Standard, Table 3-7.
///
/// The result is `Some(i)` when byte `i` cannot continue any valid sequence,
/// `Some(bytes.len())` when the bytes end inside a sequence, and `None` for valid UTF-8.
fn utf8_fault_at(bytes: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i < bytes.len() {
        let (continuations, second) = match bytes[i] {
            0x00..=0x7F => (0, 0x80..=0xBF),
            0xC2..=0xDF => (1, 0x80..=0xBF),
            0xE0 => (2, 0xA0..=0xBF),
            0xE1..=0xEC | 0xEE..=0xEF => (2, 0x80..=0xBF),
            0xED => (2, 0x80..=0x9F),
            0xF0 => (3, 0x90..=0xBF),
            0xF1..=0xF3 => (3, 0x80..=0xBF),
            0xF4 => (3, 0x80..=0x8F),
            _ => return Some(i),
        };
        for k in 1..=continuations {
            let Some(&byte) = bytes.get(i + k) else {
                return Some(bytes.len());
            };
            let allowed = if k == 1 {
                second.contains(&byte)
            } else {
                (0x80..=0xBF).contains(&byte)
            };
            if !allowed {
                return Some(i + k);
            }
        }
        i += 1 + continuations;
    }
    None
}

/// Valid UTF-8 at the edges of the encoding ranges.
const VALID_UTF8: &[&[u8]] = &[
    b"",
    b"\x00",
    b"\x7f",
    b"\xc2\x80",
    b"\xdf\xbf",
    b"\xe0\xa0\x80",
    b"\xed\x9f\xbf",
    b"\xee\x80\x80",
    b"\xef\xbf\xbd",
    // Noncharacters U+FFFE and U+FFFF are valid UTF-8.
    b"\xef\xbf\xbe",
    b"\xef\xbf\xbf",
    b"\xf0\x90\x80\x80",
    b"\xf4\x8f\xbf\xbf",
    "κόσμε".as_bytes(),
    "Hello-µ@ßöäüàá-UTF-8!!".as_bytes(),
];

/// Invalid UTF-8: overlong forms, UTF-16 surrogates, code points above U+10FFFF, bytes
/// that never occur, stray continuation bytes and truncated sequences.
const INVALID_UTF8: &[&[u8]] = &[
    // Overlong forms, including overlong NUL and the largest overlong of each length.
    b"\xc0\x80",
    b"\xc0\xaf",
    b"\xc1\xbf",
    b"\xe0\x80\x80",
    b"\xe0\x80\xaf",
    b"\xe0\x9f\xbf",
    b"\xf0\x80\x80\x80",
    b"\xf0\x80\x80\xaf",
    b"\xf0\x8f\xbf\xbf",
    b"\xf8\x80\x80\x80\xaf",
    b"\xfc\x80\x80\x80\x80\xaf",
    // Single and paired surrogates U+D800-U+DFFF.
    b"\xed\xa0\x80",
    b"\xed\xad\xbf",
    b"\xed\xae\x80",
    b"\xed\xaf\xbf",
    b"\xed\xb0\x80",
    b"\xed\xbe\x80",
    b"\xed\xbf\xbf",
    b"\xed\xa0\x80\xed\xb0\x80",
    b"\xed\xaf\xbf\xed\xbf\xbf",
    // Code points above U+10FFFF.
    b"\xf4\x90\x80\x80",
    b"\xf7\xbf\xbf\xbf",
    b"\xf8\x88\x80\x80\x80",
    b"\xfc\x84\x80\x80\x80\x80",
    // Bytes that never occur.
    b"\xf5",
    b"\xf8",
    b"\xfc",
    b"\xfe",
    b"\xff",
    b"\xfe\xfe\xff\xff",
    // Stray continuation bytes.
    b"\x80",
    b"\xbf",
    b"\x80\xbf\x80",
    // Start bytes followed by a space, and truncated sequences at the end.
    b"\xc2 ",
    b"\xe2\x82 ",
    b"\xf0\x9f\x98 ",
    b"\xc2",
    b"\xe2",
    b"\xe2\x82",
    b"\xf0",
    b"\xf0\x9f",
    b"\xf0\x9f\x98",
    b"\xf4\x8f\xbf",
    // A valid prefix, then a fault.
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
    b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80edited",
];

#[test]
fn utf8_oracle_matches_std() {
    for sample in VALID_UTF8 {
        assert_eq!(utf8_fault_at(sample), None, "{sample:x?}");
        assert!(std::str::from_utf8(sample).is_ok(), "{sample:x?}");
    }
    for sample in INVALID_UTF8 {
        assert!(utf8_fault_at(sample).is_some(), "{sample:x?}");
        assert!(std::str::from_utf8(sample).is_err(), "{sample:x?}");
    }
}

/// Checks a text message with `payload`, sent whole and split into two fragments at every
/// boundary, against [`utf8_fault_at`].
fn check_text_payload(role: Role, payload: &[u8]) {
    let message = || text(payload);
    let expected = match utf8_fault_at(payload) {
        None => clean(vec![message()], vec![message()]),
        Some(_) => fault(vec![], vec![], ProtocolError::InvalidUtf8),
    };
    check(Wire::to(role).text(payload).close_normal(), &expected);
    for split in 0..=payload.len() {
        let wire = Wire::to(role)
            .frame(false, TEXT, &payload[..split])
            .frame(true, CONTINUATION, &payload[split..])
            .close_normal();
        check(wire, &expected);
    }
}

#[test]
fn valid_utf8_is_accepted() {
    for role in ROLES {
        for sample in VALID_UTF8 {
            check_text_payload(role, sample);
        }
    }
}

#[test]
fn invalid_utf8_fails_with_1007() {
    for role in ROLES {
        for sample in INVALID_UTF8 {
            check_text_payload(role, sample);
            let mut padded = b"valid ".to_vec();
            padded.extend_from_slice(sample);
            check_text_payload(role, &padded);
        }
    }
}

/// Feeds `bytes` one byte at a time and returns the index of the byte after which
/// `decode` returned a fault.
fn fault_byte(role: Role, bytes: &[u8]) -> Option<usize> {
    let mut conn = Connection::new(role, Config::default());
    let mut src = BytesMut::new();
    for (i, byte) in bytes.iter().enumerate() {
        src.extend_from_slice(&[*byte]);
        loop {
            match conn.decode(&mut src) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(err) => {
                    assert_eq!(err, ProtocolError::InvalidUtf8);
                    return Some(i);
                }
            }
        }
    }
    None
}

/// Returns the frame header length the [`Wire`] builder uses for `payload_len` bytes.
fn header_len(role: Role, payload_len: usize) -> usize {
    let length_bytes = match payload_len {
        0..=125 => 0,
        126..=0xFFFF => 2,
        _ => 8,
    };
    let mask_bytes = if role == Role::Server { 4 } else { 0 };
    2 + length_bytes + mask_bytes
}

#[test]
fn invalid_utf8_fails_at_first_invalid_byte() {
    for role in ROLES {
        for sample in INVALID_UTF8 {
            // A single frame with 100 more bytes declared: the fault must come as soon as
            // the byte that makes the text invalid arrives, not at the end of the frame.
            // A sample that ends inside a sequence fails at the first `x`, because `x` is
            // no continuation byte.
            let mut payload = sample.to_vec();
            payload.extend_from_slice(&[b'x'; 100]);
            let at = utf8_fault_at(&payload).unwrap();
            let wire = Wire::to(role).text(&payload);
            let header = header_len(role, payload.len());
            assert_eq!(
                fault_byte(role, &wire.bytes),
                Some(header + at),
                "{role:?} {sample:x?}"
            );

            // The first fragment of a message whose later fragments never arrive.
            let at = utf8_fault_at(sample).unwrap();
            if at < sample.len() {
                let wire = Wire::to(role).frame(false, TEXT, sample);
                let header = header_len(role, sample.len());
                assert_eq!(
                    fault_byte(role, &wire.bytes),
                    Some(header + at),
                    "{role:?} first fragment {sample:x?}"
                );
            }
        }
    }
}

#[test]
fn truncated_utf8_fails_at_message_end() {
    for role in ROLES {
        for sample in [
            &b"\xc2"[..],
            b"\xe2\x82",
            b"\xf0\x9f\x98",
            b"ab\xf4\x8f\xbf",
        ] {
            // In a non-final fragment the sequence may still be completed.
            let wire = Wire::to(role).frame(false, TEXT, sample);
            assert_eq!(fault_byte(role, &wire.bytes), None, "{sample:x?}");

            // The message ends with the final frame, so its last byte is the fault.
            let wire = Wire::to(role).text(sample);
            assert_eq!(
                fault_byte(role, &wire.bytes),
                Some(wire.bytes.len() - 1),
                "{sample:x?}"
            );

            // An empty final fragment ends the message too.
            let wire = Wire::to(role)
                .frame(false, TEXT, sample)
                .frame(true, CONTINUATION, b"");
            assert_eq!(
                fault_byte(role, &wire.bytes),
                Some(wire.bytes.len() - 1),
                "{sample:x?} then empty fragment"
            );
        }
    }
}

#[test]
fn utf8_split_across_frames_is_checked_as_one() {
    for role in ROLES {
        // A surrogate whose bytes arrive in three fragments fails on the second byte.
        let wire = Wire::to(role)
            .frame(false, TEXT, b"ab\xed")
            .frame(false, CONTINUATION, b"\xa0")
            .frame(true, CONTINUATION, b"\x80");
        let fault_at = header_len(role, 3) + 3 + header_len(role, 1);
        assert_eq!(fault_byte(role, &wire.bytes), Some(fault_at));

        // A four-byte character split over frames with a ping between them.
        let wire = Wire::to(role)
            .frame(false, TEXT, b"\xf0\x9f")
            .frame(true, PING, b"")
            .frame(false, CONTINUATION, b"\x98")
            .frame(true, CONTINUATION, b"\x80")
            .close_normal();
        let expected = clean(
            vec![ping(b""), text("😀".as_bytes())],
            vec![pong(b""), text("😀".as_bytes())],
        );
        check(wire, &expected);
    }
}

// Close frames.

#[test]
fn close_with_empty_payload_gets_empty_reply() {
    for role in ROLES {
        let wire = Wire::to(role).frame(true, CLOSE, b"");
        let expected = Outcome {
            received: vec![Message::Close(None)],
            error: None,
            sent: vec![Message::Close(None)],
            closed: true,
        };
        check(wire, &expected);
    }
}

#[test]
fn close_with_one_byte_fails() {
    for role in ROLES {
        let wire = Wire::to(role).frame(true, CLOSE, b"\x03");
        check(
            wire,
            &fault(vec![], vec![], ProtocolError::InvalidClosePayload),
        );
    }
}

#[test]
fn close_reasons() {
    for role in ROLES {
        for reason in [&b""[..], b"Hello World!", "κόσμε".as_bytes(), &[b'*'; 123]] {
            let wire = Wire::to(role).close(1000, reason);
            let expected = Outcome {
                received: vec![text_close(1000, reason)],
                error: None,
                sent: vec![Message::close(CloseCode::NORMAL, "")],
                closed: true,
            };
            check(wire, &expected);
        }

        // 124 bytes of reason make a 126-byte control frame.
        let wire = Wire::to(role).close(1000, &[b'*'; 124]);
        check(
            wire,
            &fault(vec![], vec![], ProtocolError::ControlTooLong(126)),
        );

        for reason in INVALID_UTF8 {
            let wire = Wire::to(role).close(1000, reason);
            check(
                wire,
                &fault(vec![], vec![], ProtocolError::InvalidCloseReason),
            );
        }
    }
}

fn text_close(code: u16, reason: &[u8]) -> Message {
    Message::close(CloseCode(code), String::from_utf8(reason.to_vec()).unwrap())
}

/// Close codes that may appear on the wire: RFC 6455 section 7.4.1, the codes 1012-1014
/// registered with IANA since, and the 3000-4999 registered and private ranges.
fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1011 | 1012..=1014 | 3000..=4999)
}

#[test]
fn every_close_code_is_classified() {
    let codes = (0..=5000u16).chain([5001, 6000, 0x7FFF, 0x8000, 0xFFFF]);
    for code in codes {
        for role in ROLES {
            let mut conn = Connection::new(role, Config::default());
            let mut src = BytesMut::from(&Wire::to(role).close(code, b"reason").bytes[..]);
            let result = conn.decode(&mut src);
            let mut out = BytesMut::new();
            conn.write_pending(&mut out);
            let reply = decode_as_peer(role, &mut out);
            if is_valid_close_code(code) {
                assert_eq!(result, Ok(Some(text_close(code, b"reason"))), "{code}");
                assert_eq!(reply, vec![text_close(code, b"")], "{code}");
            } else {
                assert_eq!(result, Err(ProtocolError::InvalidCloseCode(code)), "{code}");
                assert_eq!(reply, vec![text_close(1002, b"")], "{code}");
            }
            assert_eq!(CloseCode(code).is_sendable(), is_valid_close_code(code));
        }
    }
}

#[test]
fn frames_after_close_are_discarded() {
    for role in ROLES {
        let wire = Wire::to(role)
            .close_normal()
            .text(b"after close")
            .frame(true, PING, b"after close")
            .close(1001, b"second close")
            .raw(0x83, b"reserved opcode after close");
        let expected = clean(vec![], vec![]);
        check(wire, &expected);
    }
}

#[test]
fn close_interrupts_fragmented_message() {
    for role in ROLES {
        let wire = Wire::to(role)
            .frame(false, TEXT, b"fragment1")
            .close_normal()
            .frame(true, CONTINUATION, b"fragment2");
        check(wire, &clean(vec![], vec![]));
    }
}

#[test]
fn large_message_then_close_then_ping() {
    for role in ROLES {
        let payload = vec![b'*'; 256 << 10];
        let wire = Wire::to(role)
            .text(&payload)
            .close_normal()
            .frame(true, PING, b"");
        let message = text(&payload);
        let outcome = run(role, Config::default(), &wire.bytes, &[]);
        assert_eq!(outcome, clean(vec![message.clone()], vec![message]));
    }
}

// Masking rules.

#[test]
fn server_rejects_unmasked_frames() {
    for opcode in [TEXT, BINARY, PING, PONG, CLOSE] {
        let mut bytes = Vec::new();
        append_frame(&mut bytes, 0x80 | opcode, b"", None);
        let expected = fault(vec![], vec![], ProtocolError::UnmaskedClientFrame);
        check_with(Role::Server, Config::default(), &bytes, &expected);
    }
}

#[test]
fn client_rejects_masked_frames() {
    for opcode in [TEXT, BINARY, PING, PONG, CLOSE] {
        for key in [[0, 0, 0, 0], [1, 2, 3, 4]] {
            let mut bytes = Vec::new();
            append_frame(&mut bytes, 0x80 | opcode, b"", Some(key));
            let expected = fault(vec![], vec![], ProtocolError::MaskedServerFrame);
            check_with(Role::Client, Config::default(), &bytes, &expected);
        }
    }
}

#[test]
fn client_masks_every_frame_with_fresh_key() {
    let config = Config {
        max_send_frame_size: Some(4),
        ..Config::default()
    };
    let mut client = Connection::new(Role::Client, config);
    let mut out = BytesMut::new();
    for _ in 0..16 {
        client
            .encode(Message::text("0123456789abcdef"), &mut out)
            .unwrap();
        client
            .encode(Message::Ping(Bytes::from_static(b"ping")), &mut out)
            .unwrap();
    }
    client
        .encode(Message::close(CloseCode::NORMAL, "bye"), &mut out)
        .unwrap();

    let mut keys = std::collections::HashSet::new();
    let mut frames = 0;
    let mut rest = &out[..];
    while !rest.is_empty() {
        let (header, len) = pylon_proto::frame::decode_header(rest).unwrap().unwrap();
        keys.insert(header.mask.expect("client frame is masked"));
        frames += 1;
        rest = &rest[len + header.payload_len as usize..];
    }
    assert_eq!(frames, 16 * 5 + 1);
    // 81 random 32-bit keys collide with a probability below 1e-6.
    assert_eq!(keys.len(), frames, "a masking key was reused");
}

// Properties.

/// Strategy for text payloads near the UTF-8 edge cases: valid characters of every width
/// mixed with bytes that start, continue or break sequences.
fn near_utf8() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        4 => any::<char>().prop_map(|c| c.to_string().into_bytes()),
        1 => prop::sample::select(vec![
            0x80u8, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF,
            0x9F, 0xA0, 0x8F, 0x90,
        ])
        .prop_map(|byte| vec![byte]),
    ];
    prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.concat())
}

proptest! {
    /// A text message split into fragments at arbitrary points and fed one byte at a
    /// time is accepted exactly when it is valid UTF-8. Otherwise the fault is reported at
    /// the byte that `utf8_fault_at` returns.
    #[test]
    fn text_validity_matches_oracle(
        payload in near_utf8(),
        splits in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        server in any::<bool>(),
    ) {
        let role = if server { Role::Server } else { Role::Client };
        let mut splits: Vec<usize> = splits.iter().map(|s| s.index(payload.len() + 1)).collect();
        splits.sort_unstable();
        splits.dedup();
        let mut bounds = vec![0];
        bounds.extend(splits);
        bounds.push(payload.len());
        bounds.dedup();
        if bounds.len() == 1 {
            bounds.push(payload.len());
        }

        let mut wire = Wire::to(role);
        let mut payload_ends = Vec::new();
        let fragments = bounds.len() - 1;
        for (i, pair) in bounds.windows(2).enumerate() {
            let opcode = if i == 0 { TEXT } else { CONTINUATION };
            wire = wire.frame(i + 1 == fragments, opcode, &payload[pair[0]..pair[1]]);
            payload_ends.push((pair[0], wire.bytes.len() - (pair[1] - pair[0])));
        }

        let fault = fault_byte(role, &wire.bytes);
        match utf8_fault_at(&payload) {
            None => prop_assert_eq!(fault, None),
            Some(at) if at == payload.len() => {
                prop_assert_eq!(fault, Some(wire.bytes.len() - 1));
            }
            Some(at) => {
                // Map the payload offset to its byte in the frame stream.
                let (start, wire_start) = payload_ends
                    .iter()
                    .rev()
                    .find(|(start, _)| *start <= at)
                    .copied()
                    .unwrap();
                prop_assert_eq!(fault, Some(wire_start + at - start));
            }
        }
    }
}

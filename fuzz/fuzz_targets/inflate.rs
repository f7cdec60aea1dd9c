//! Negotiates permessage-deflate through the real handshake, then feeds a receiving
//! `Connection` with a small `max_message_size` a mix of messages that the peer
//! `Connection` compresses and raw frames with arbitrary RSV1 bits and payloads.
//!
//! Checks after every `decode` call: the message buffer stays within `max_message_size`,
//! text messages are valid UTF-8, and nothing is returned after an error or a close. When
//! the input has no raw frames, the decoded messages must also equal the sent ones, up to
//! the first message above the limit, which must fail with a size error.

#![no_main]

use arbitrary::Arbitrary;
use bytes::{BufMut, BytesMut};
use http::{Method, Version};
use libfuzzer_sys::fuzz_target;
use pylon_proto::frame::encode_header;
use pylon_proto::handshake::validate_request;
use pylon_proto::{
    ClientRequest, Config, Connection, FrameHeader, Limits, Message, OpCode, PerMessageDeflate,
    ProtocolError, Role, ServerConfig,
};
use pylon_proto_fuzz::{DeflateInput, check_deflate_pair};

/// Maximum length of one repeated-byte message, in bytes: well above every
/// `max_message_size` the input can choose, so the limit is crossed while inflating.
const MAX_REPEATED_LEN: u32 = 128 << 10;

/// Frame size limit of the receiver, in bytes. A compressed frame is smaller than its
/// message, so the message limit is the one under test.
const MAX_FRAME_SIZE: usize = 64 << 10;

#[derive(Arbitrary, Debug)]
enum FrameInput {
    /// A text message that the peer encodes, compressed if long enough.
    Text(String),
    /// A binary message that the peer encodes, compressed if long enough.
    Binary(Vec<u8>),
    /// A message of one repeated byte, up to [`MAX_REPEATED_LEN`] bytes, which
    /// compresses to a few hundred bytes.
    Repeated { byte: u8, len: u32, text: bool },
    /// A ping that the peer encodes between data messages.
    Ping(Vec<u8>),
    /// A frame written as is, masked as the peer's role requires.
    Raw {
        opcode: u8,
        fin: bool,
        rsv1: bool,
        payload: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    client_deflate: DeflateInput,
    server_deflate: DeflateInput,
    /// The receiver is the server if set, else the client.
    server_receives: bool,
    max_message_size: u16,
    /// `Config::max_send_frame_size` of the peer, which fragments compressed messages.
    peer_max_send_frame_size: Option<u16>,
    frames: Vec<FrameInput>,
    /// Sizes of the chunks the wire bytes are split into, repeated until all are used.
    chunk_sizes: Vec<u8>,
}

/// Result that the receiver must return for one sent message.
#[derive(Debug)]
enum Expected {
    Message(Message),
    /// The message exceeds `max_message_size`, so decoding fails with close code 1009.
    SizeError,
}

fuzz_target!(|input: Input| {
    let Some((server, client)) = negotiate(&input.client_deflate, &input.server_deflate) else {
        return;
    };
    let (receiver_role, receiver_deflate, peer_deflate) = if input.server_receives {
        (Role::Server, server, client)
    } else {
        (Role::Client, client, server)
    };
    let max_message_size = usize::from(input.max_message_size);
    let mut receiver = Connection::new(
        receiver_role,
        Config {
            limits: Limits {
                max_frame_size: MAX_FRAME_SIZE,
                max_message_size,
            },
            deflate: Some(receiver_deflate),
            ..Config::default()
        },
    );
    let peer_role = match receiver_role {
        Role::Server => Role::Client,
        Role::Client => Role::Server,
    };
    let mut peer = Connection::new(
        peer_role,
        Config {
            deflate: Some(peer_deflate),
            max_send_frame_size: input.peer_max_send_frame_size.map(usize::from),
            ..Config::default()
        },
    );

    let (wire, expected, strict) = build_wire(&mut peer, input.frames, max_message_size);
    let outcome = decode_chunked(&mut receiver, &wire, &input.chunk_sizes);
    if strict {
        check_expected(&outcome, &expected);
    }
});

/// Runs the client and server handshake with the given compression settings and returns
/// the server's and the client's permessage-deflate, or `None` if the server declined.
fn negotiate(
    client: &DeflateInput,
    server: &DeflateInput,
) -> Option<(PerMessageDeflate, PerMessageDeflate)> {
    let request = ClientRequest::new(Vec::new()).with_deflate(Some(client.to_config()));
    let headers = request
        .try_headers("localhost:8080")
        .unwrap_or_else(|err| panic!("client request headers: {err}"));
    let config = ServerConfig {
        deflate: Some(server.to_config()),
        ..ServerConfig::default()
    };
    let accept = validate_request(&Method::GET, Version::HTTP_11, &headers, &config)
        .unwrap_or_else(|err| panic!("server rejected the client's own request: {err}"));
    let response = accept.response();
    // The handshake_response target asserts that this succeeds. Here a failed
    // negotiation only skips the input, so that this target keeps exploring the decoder.
    let Ok(negotiated) = request.verify(response.status(), response.headers()) else {
        return None;
    };
    match (accept.deflate, negotiated.deflate) {
        (Some(server), Some(client)) => {
            check_deflate_pair(&server, &client);
            Some((server, client))
        }
        (None, None) => None,
        (server, client) => panic!("server agreed {server:?}, client agreed {client:?}"),
    }
}

/// Encodes the input frames as the peer sends them and returns the wire bytes, the
/// expected results, and whether the expectation is exact (no raw frames).
fn build_wire(
    peer: &mut Connection,
    frames: Vec<FrameInput>,
    max_message_size: usize,
) -> (BytesMut, Vec<Expected>, bool) {
    let mut wire = BytesMut::new();
    let mut expected = Vec::new();
    let mut strict = true;
    for frame in frames {
        let message = match frame {
            FrameInput::Text(text) => Message::text(text),
            FrameInput::Binary(data) => Message::binary(data),
            FrameInput::Repeated { byte, len, text } => {
                let len = (len % (MAX_REPEATED_LEN + 1)) as usize;
                if text {
                    Message::text(char::from(byte & 0x7F).to_string().repeat(len))
                } else {
                    Message::binary(vec![byte; len])
                }
            }
            FrameInput::Ping(mut data) => {
                data.truncate(125);
                Message::Ping(data.into())
            }
            FrameInput::Raw {
                opcode,
                fin,
                rsv1,
                payload,
            } => {
                write_raw_frame(&mut wire, peer.role(), opcode, fin, rsv1, &payload);
                strict = false;
                continue;
            }
        };
        let too_large = !message.is_control() && message.len() > max_message_size;
        peer.encode(message.clone(), &mut wire)
            .unwrap_or_else(|err| panic!("peer could not encode {message:?}: {err}"));
        if too_large {
            expected.push(Expected::SizeError);
            // The receiver fails on this message, so later ones are never decoded.
            break;
        }
        expected.push(Expected::Message(message));
    }
    (wire, expected, strict)
}

fn write_raw_frame(
    wire: &mut BytesMut,
    sender: Role,
    opcode: u8,
    fin: bool,
    rsv1: bool,
    payload: &[u8],
) {
    let mask = match sender {
        Role::Client => Some([0x12, 0x34, 0x56, 0x78]),
        Role::Server => None,
    };
    let header = FrameHeader {
        fin,
        rsv1,
        rsv2: false,
        rsv3: false,
        opcode: OpCode::from_u8(opcode & 0x0F).expect("4-bit opcode"),
        mask,
        payload_len: payload.len() as u64,
    };
    encode_header(&header, wire);
    let start = wire.len();
    wire.put_slice(payload);
    if let Some(key) = mask {
        pylon_proto::mask::apply_mask(&mut wire[start..], key, 0);
    }
}

/// Messages the receiver returned, and the error that ended decoding, if any.
struct Outcome {
    messages: Vec<Message>,
    error: Option<ProtocolError>,
}

fn decode_chunked(receiver: &mut Connection, wire: &[u8], chunk_sizes: &[u8]) -> Outcome {
    let max_message_size = receiver.config().limits.max_message_size;
    let mut outcome = Outcome {
        messages: Vec::new(),
        error: None,
    };
    let mut finished = false;
    let mut src = BytesMut::new();
    let mut replies = BytesMut::new();
    let mut offset = 0;
    let mut step = 0;
    while offset < wire.len() {
        // A size of 0 stands for 256, so every chunk makes progress.
        let size = match chunk_sizes.get(step % chunk_sizes.len().max(1)) {
            Some(&size) if size > 0 => usize::from(size),
            Some(_) => 256,
            None => wire.len(),
        };
        let end = (offset + size).min(wire.len());
        src.extend_from_slice(&wire[offset..end]);
        offset = end;
        step += 1;
        loop {
            let result = receiver.decode(&mut src);
            assert!(
                receiver.buffered() <= max_message_size,
                "buffered {} above max_message_size {max_message_size}",
                receiver.buffered()
            );
            match result {
                Ok(None) => break,
                Ok(Some(message)) => {
                    assert!(!finished, "message {message:?} after an error or a close");
                    check_message(&message, max_message_size);
                    finished = matches!(message, Message::Close(_));
                    outcome.messages.push(message);
                }
                Err(err) => {
                    assert!(!finished, "error {err:?} after an error or a close");
                    assert!(receiver.is_failed());
                    assert_eq!(receiver.buffered(), 0, "message buffer kept after {err:?}");
                    finished = true;
                    outcome.error = Some(err);
                }
            }
            receiver.write_pending(&mut replies);
            replies.clear();
        }
    }
    outcome
}

fn check_message(message: &Message, max_message_size: usize) {
    match message {
        Message::Text(text) => {
            assert!(
                std::str::from_utf8(text.as_bytes()).is_ok(),
                "invalid UTF-8 in text message"
            );
            assert!(
                text.len() <= max_message_size,
                "text of {} bytes",
                text.len()
            );
        }
        Message::Binary(data) => {
            assert!(
                data.len() <= max_message_size,
                "binary of {} bytes",
                data.len()
            );
        }
        Message::Ping(data) | Message::Pong(data) => {
            assert!(data.len() <= 125, "control payload of {} bytes", data.len());
        }
        Message::Close(_) => {}
    }
}

fn check_expected(outcome: &Outcome, expected: &[Expected]) {
    let mut received = outcome.messages.iter();
    for item in expected {
        match item {
            Expected::Message(message) => {
                assert_eq!(received.next(), Some(message), "decoded message differs");
            }
            Expected::SizeError => {
                let code = outcome.error.as_ref().map(ProtocolError::close_code);
                assert_eq!(
                    code.map(|code| code.0),
                    Some(1009),
                    "expected a size error, got {:?}",
                    outcome.error
                );
                assert_eq!(received.next(), None, "message after the size error");
                return;
            }
        }
    }
    assert_eq!(received.next(), None, "more messages decoded than sent");
    assert_eq!(outcome.error, None, "decoding the peer's frames failed");
}

//! Feeds arbitrary bytes, split into chunks of arbitrary sizes, to `Connection::decode` in
//! either role with small limits, and checks the decoder's invariants after every call.
//!
//! Input layout, chosen so that a seed is a short prefix followed by raw frames:
//! - byte 0: flags. Bit 0 selects the client role (else server), bit 1 clears
//!   `auto_pong`, bit 2 defers `write_pending` to the end of the input. Bit 3 reads
//!   each chunk into `Connection::payload_buf` where it offers room, as the I/O layer
//!   does. A second connection then gets every byte through `decode`, and the results of
//!   both must be equal.
//! - bytes 1-2 and 3-4: `max_message_size` and `max_frame_size`, big-endian, so at most
//!   64 KiB.
//! - byte 5: the number N of chunk sizes, modulo 16. Then N bytes, each one chunk size
//!   (0 calls `decode` with no new bytes). The sizes repeat until the stream is used up.
//!   With N = 0 the stream is one chunk.
//! - the rest: the received byte stream.

#![no_main]

use bytes::{BufMut, BytesMut};
use libfuzzer_sys::fuzz_target;
use pylon_proto::{CloseFrame, Config, Connection, Limits, Message, ProtocolError, Role, State};

/// Bytes that `decode` may leave in `src` after `Ok(None)`: a 14-byte header and a
/// 125-byte control payload, at least one byte short.
const MAX_LEFTOVER: usize = 139;

/// Maximum output of one `write_pending` call: the pong queue, which `Connection` caps at
/// 2 KiB by dropping the oldest pongs, and a masked close frame with a status code.
const MAX_PENDING_OUTPUT: usize = 2048 + 8;

const SETTINGS_LEN: usize = 6;

fuzz_target!(|data: &[u8]| {
    let Some((config_bytes, rest)) = data.split_first_chunk::<SETTINGS_LEN>() else {
        return;
    };
    let flags = config_bytes[0];
    let role = if flags & 1 != 0 {
        Role::Client
    } else {
        Role::Server
    };
    let defer_pending = flags & 4 != 0;
    let via_payload_buf = flags & 8 != 0;
    let config = Config {
        limits: Limits {
            max_message_size: usize::from(u16::from_be_bytes([config_bytes[1], config_bytes[2]])),
            max_frame_size: usize::from(u16::from_be_bytes([config_bytes[3], config_bytes[4]])),
        },
        auto_pong: flags & 2 == 0,
        ..Config::default()
    };
    let plan_len = usize::from(config_bytes[5] % 16).min(rest.len());
    let (chunk_sizes, stream) = rest.split_at(plan_len);

    let mut harness = Harness::new(role, config, via_payload_buf);
    let mut offset = 0;
    let mut steps = 0;
    // Zero-size chunks make progress only by `steps`, so the loop is bounded by both.
    while offset < stream.len() && !chunk_sizes.is_empty() && steps < stream.len() + 16 {
        let size = usize::from(chunk_sizes[steps % chunk_sizes.len()]).min(stream.len() - offset);
        harness.receive(&stream[offset..offset + size], defer_pending);
        offset += size;
        steps += 1;
    }
    harness.receive(&stream[offset..], defer_pending);
    harness.flush_pending();
    harness.peer_decode_output();
    harness.compare_with_shadow();
});

/// A connection under test, the bytes it wrote, and what it returned so far.
struct Harness {
    connection: Connection,
    src: BytesMut,
    output: BytesMut,
    /// Set once `decode` returned an error or a close message, after which it must
    /// return no message.
    finished: bool,
    pending_in_output: bool,
    /// With `payload_buf` reads: a connection that decodes the same bytes through
    /// `decode` alone, its receive buffer, and the results of both, in order.
    shadow: Option<Shadow>,
}

struct Shadow {
    connection: Connection,
    src: BytesMut,
    results: Vec<String>,
    expected: Vec<String>,
}

impl Harness {
    fn new(role: Role, config: Config, via_payload_buf: bool) -> Self {
        let shadow = via_payload_buf.then(|| Shadow {
            connection: Connection::new(role, config),
            src: BytesMut::new(),
            results: Vec::new(),
            expected: Vec::new(),
        });
        Harness {
            connection: Connection::new(role, config),
            src: BytesMut::new(),
            output: BytesMut::new(),
            finished: false,
            pending_in_output: false,
            shadow,
        }
    }

    /// Appends `chunk` to the receive buffer and decodes until `decode` needs more bytes.
    /// With a shadow, the front of `chunk` goes into the room of `payload_buf` instead
    /// while the receive buffer is empty, and the shadow decodes `chunk` as it is.
    fn receive(&mut self, chunk: &[u8], defer_pending: bool) {
        let mut rest = chunk;
        if let Some(shadow) = &mut self.shadow {
            shadow.receive(chunk);
            if self.src.is_empty()
                && let Some(mut room) = self.connection.payload_buf(chunk.len().max(1))
            {
                let take = room.remaining_mut().min(rest.len());
                room.put_slice(&rest[..take]);
                rest = &rest[take..];
            }
        }
        self.src.extend_from_slice(rest);
        loop {
            let result = self.connection.decode(&mut self.src);
            if let Some(shadow) = &mut self.shadow {
                shadow.results.push(describe(&result));
            }
            let max_message_size = self.connection.config().limits.max_message_size;
            assert!(
                self.connection.buffered() <= max_message_size,
                "buffered {} above max_message_size {max_message_size}",
                self.connection.buffered()
            );
            match result {
                Ok(Some(message)) => {
                    assert!(
                        !self.finished,
                        "message {message:?} after an error or a close"
                    );
                    self.check_message(&message);
                }
                Ok(None) => {
                    assert!(
                        self.src.len() <= MAX_LEFTOVER,
                        "{} bytes left in src",
                        self.src.len()
                    );
                    break;
                }
                Err(err) => self.on_error(&err),
            }
            if !defer_pending {
                self.flush_pending();
            }
        }
        if self.finished {
            assert!(
                self.src.is_empty(),
                "src keeps {} bytes after the end",
                self.src.len()
            );
        }
    }

    fn check_message(&mut self, message: &Message) {
        let limits = self.connection.config().limits;
        match message {
            Message::Text(text) => {
                assert!(
                    std::str::from_utf8(text.as_bytes()).is_ok(),
                    "invalid UTF-8 in text message"
                );
                assert!(
                    text.len() <= limits.max_message_size,
                    "text of {} bytes",
                    text.len()
                );
            }
            Message::Binary(data) => {
                assert!(
                    data.len() <= limits.max_message_size,
                    "binary of {} bytes",
                    data.len()
                );
            }
            Message::Ping(data) | Message::Pong(data) => {
                assert!(data.len() <= 125, "control payload of {} bytes", data.len());
            }
            Message::Close(frame) => {
                if let Some(frame) = frame {
                    assert!(frame.code.is_sendable(), "close code {}", frame.code);
                    assert!(frame.reason.len() <= CloseFrame::MAX_REASON_LEN);
                    assert!(std::str::from_utf8(frame.reason.as_bytes()).is_ok());
                }
                assert!(
                    matches!(
                        self.connection.state(),
                        State::CloseReceived | State::Closed
                    ),
                    "state {:?} after a close",
                    self.connection.state()
                );
                assert_eq!(
                    self.connection.buffered(),
                    0,
                    "message buffer kept after a close"
                );
                self.finished = true;
            }
        }
    }

    fn on_error(&mut self, err: &ProtocolError) {
        assert!(!self.finished, "error {err:?} after an error or a close");
        assert!(
            self.connection.is_failed(),
            "error {err:?} without failing the connection"
        );
        assert!(
            self.src.is_empty(),
            "src keeps {} bytes after {err:?}",
            self.src.len()
        );
        assert_eq!(
            self.connection.buffered(),
            0,
            "message buffer kept after {err:?}"
        );
        let code = err.close_code();
        assert!(code.is_sendable(), "fault close code {code}");
        assert!(!err.to_string().is_empty());
        self.finished = true;
    }

    fn flush_pending(&mut self) {
        let before = self.output.len();
        self.connection.write_pending(&mut self.output);
        let written = self.output.len() - before;
        assert!(
            written <= MAX_PENDING_OUTPUT,
            "write_pending wrote {written} bytes"
        );
        assert!(
            !self.connection.has_pending(),
            "frames pending after write_pending"
        );
        self.pending_in_output |= written > 0;
        if self.connection.is_failed() {
            assert!(
                self.connection.is_closed(),
                "failed connection not closed after write_pending"
            );
        }
    }

    /// Checks that reading through `payload_buf` gave the messages and the error that
    /// `decode` alone gave.
    fn compare_with_shadow(&self) {
        let Some(shadow) = &self.shadow else {
            return;
        };
        let results: Vec<&String> = shadow.results.iter().filter(|r| *r != "none").collect();
        let expected: Vec<&String> = shadow.expected.iter().filter(|r| *r != "none").collect();
        assert_eq!(results, expected, "payload_buf reads changed the results");
    }

    /// Checks that every frame the connection wrote on its own (pongs and close frames) is
    /// valid for a peer in the opposite role.
    fn peer_decode_output(&mut self) {
        if !self.pending_in_output {
            return;
        }
        let peer_role = match self.connection.role() {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        };
        let mut peer = Connection::new(peer_role, Config::default());
        while let Some(message) = peer
            .decode(&mut self.output)
            .unwrap_or_else(|err| panic!("peer rejected an automatic frame: {err}"))
        {
            match message {
                Message::Pong(_) => {}
                Message::Close(_) => {
                    // RFC 6455 section 5.5.1: no frame may follow a close frame.
                    assert!(
                        self.output.is_empty(),
                        "{} bytes after the close frame",
                        self.output.len()
                    );
                    break;
                }
                other => panic!("automatic frame decoded as {other:?}"),
            }
        }
        assert!(
            self.output.is_empty(),
            "{} bytes of an incomplete automatic frame",
            self.output.len()
        );
    }
}

impl Shadow {
    /// Decodes `chunk` through `decode` alone until it needs more bytes.
    fn receive(&mut self, chunk: &[u8]) {
        self.src.extend_from_slice(chunk);
        loop {
            let result = self.connection.decode(&mut self.src);
            let done = !matches!(result, Ok(Some(_)));
            self.expected.push(describe(&result));
            if done {
                break;
            }
        }
    }
}

/// Describes a decode result for comparison: the message, the error, or "none".
fn describe(result: &Result<Option<Message>, ProtocolError>) -> String {
    match result {
        Ok(Some(message)) => format!("{message:?}"),
        Ok(None) => "none".to_owned(),
        Err(err) => format!("error {err:?}"),
    }
}

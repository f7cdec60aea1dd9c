//! Encodes arbitrary messages with one `Connection` and decodes them with a `Connection`
//! in the opposite role, from arbitrarily split chunks. The decoded messages must equal
//! the encoded ones, and the receiver's automatic frames (pongs and the close reply) must
//! decode on the sender's side.

#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pylon_proto::{CloseCode, CloseFrame, Config, Connection, Message, Role, State};

#[derive(Arbitrary, Debug)]
enum InputMessage {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

impl InputMessage {
    fn into_message(self) -> Message {
        match self {
            InputMessage::Text(text) => Message::text(text),
            InputMessage::Binary(data) => Message::binary(data),
            InputMessage::Ping(data) => Message::Ping(data.into()),
            InputMessage::Pong(data) => Message::Pong(data.into()),
            InputMessage::Close(None) => Message::Close(None),
            InputMessage::Close(Some((code, reason))) => {
                Message::Close(Some(CloseFrame::new(CloseCode(code), reason)))
            }
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// The sender is a client if set, else a server.
    client_sends: bool,
    /// `Config::max_send_frame_size` of the sender, which fragments data messages.
    max_send_frame_size: Option<u8>,
    receiver_auto_pong: bool,
    messages: Vec<InputMessage>,
    /// Sizes of the chunks the wire bytes are split into, repeated until all are used.
    chunk_sizes: Vec<u8>,
}

fuzz_target!(|input: Input| {
    let (sender_role, receiver_role) = if input.client_sends {
        (Role::Client, Role::Server)
    } else {
        (Role::Server, Role::Client)
    };
    let sender_config = Config {
        max_send_frame_size: input.max_send_frame_size.map(usize::from),
        ..Config::default()
    };
    let receiver_config = Config {
        auto_pong: input.receiver_auto_pong,
        ..Config::default()
    };
    let mut sender = Connection::new(sender_role, sender_config);
    let mut receiver = Connection::new(receiver_role, receiver_config);

    let (wire, sent) = encode_all(&mut sender, input.messages);
    let (received, replies) = decode_chunked(&mut receiver, &wire, &input.chunk_sizes);
    assert_eq!(
        received, sent,
        "decoded messages differ from the encoded ones"
    );

    check_replies(
        &mut sender,
        &receiver,
        &sent,
        replies,
        input.receiver_auto_pong,
    );
});

/// Encodes the messages that `encode` accepts, up to and including the first close, and
/// returns the wire bytes and the accepted messages.
fn encode_all(sender: &mut Connection, messages: Vec<InputMessage>) -> (BytesMut, Vec<Message>) {
    let mut wire = BytesMut::new();
    let mut sent = Vec::new();
    for message in messages {
        let message = message.into_message();
        let before = wire.len();
        match sender.encode(message.clone(), &mut wire) {
            Ok(()) => {
                let is_close = matches!(message, Message::Close(_));
                sent.push(message);
                if is_close {
                    assert_eq!(sender.state(), State::CloseSent);
                    break;
                }
            }
            Err(err) => {
                assert_eq!(
                    wire.len(),
                    before,
                    "encode wrote bytes and returned {err:?}"
                );
                assert!(
                    !valid_to_send(&message),
                    "encode rejected {message:?}: {err}"
                );
            }
        }
    }
    (wire, sent)
}

/// Returns `true` if the protocol allows sending `message` on an open connection.
fn valid_to_send(message: &Message) -> bool {
    match message {
        Message::Text(_) | Message::Binary(_) | Message::Close(None) => true,
        Message::Ping(data) | Message::Pong(data) => data.len() <= 125,
        Message::Close(Some(frame)) => {
            frame.code.is_sendable() && frame.reason.len() <= CloseFrame::MAX_REASON_LEN
        }
    }
}

/// Decodes `wire` from chunks of the given sizes and returns the messages and the bytes
/// the receiver wrote with `write_pending` after each message.
fn decode_chunked(
    receiver: &mut Connection,
    wire: &[u8],
    chunk_sizes: &[u8],
) -> (Vec<Message>, BytesMut) {
    let mut src = BytesMut::new();
    let mut received = Vec::new();
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
        while let Some(message) = receiver
            .decode(&mut src)
            .unwrap_or_else(|err| panic!("receiver rejected encoded frames: {err}"))
        {
            received.push(message);
            receiver.write_pending(&mut replies);
        }
    }
    assert!(src.is_empty(), "{} wire bytes left undecoded", src.len());
    (received, replies)
}

/// Decodes the receiver's automatic frames on the sender and checks that they are the
/// pongs and the close reply that the sent messages call for.
fn check_replies(
    sender: &mut Connection,
    receiver: &Connection,
    sent: &[Message],
    mut replies: BytesMut,
    auto_pong: bool,
) {
    let mut expected = Vec::new();
    for message in sent {
        match message {
            Message::Ping(data) if auto_pong => expected.push(Message::Pong(data.clone())),
            Message::Close(frame) => {
                // The reply echoes the status code with an empty reason.
                let code = frame.as_ref().map(|frame| frame.code);
                expected.push(Message::Close(code.map(|code| CloseFrame::new(code, ""))));
            }
            _ => {}
        }
    }

    let mut answers = Vec::new();
    while let Some(message) = sender
        .decode(&mut replies)
        .unwrap_or_else(|err| panic!("sender rejected the receiver's automatic frames: {err}"))
    {
        answers.push(message);
    }
    assert!(
        replies.is_empty(),
        "{} reply bytes left undecoded",
        replies.len()
    );
    assert_eq!(
        answers, expected,
        "automatic frames differ from the expected ones"
    );

    let closed = sent
        .iter()
        .any(|message| matches!(message, Message::Close(_)));
    if closed {
        assert_eq!(sender.state(), State::Closed);
        assert_eq!(receiver.state(), State::Closed);
        assert!(receiver.is_closed());
    } else {
        assert_eq!(receiver.state(), State::Open);
    }
    // Neither side buffers a message once everything was decoded.
    assert_eq!(receiver.buffered(), 0);
    assert_eq!(sender.buffered(), 0);
}

//! Two-party tests: one role encodes, the other decodes, over an in-memory byte stream.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use pylon_proto::{CloseCode, Config, Connection, Message, Role, State};

fn pair(config: Config) -> (Connection, Connection) {
    (
        Connection::new(Role::Client, config),
        Connection::new(Role::Server, config),
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

#[test]
fn client_to_server_messages() {
    let (mut client, mut server) = pair(Config::default());
    let sent = vec![
        Message::text("hello"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text("x".repeat(70_000)),
        Message::Ping(Bytes::from_static(b"ping")),
        Message::Pong(Bytes::from_static(b"pong")),
    ];
    let mut wire = BytesMut::new();
    for message in &sent {
        client.encode(message.clone(), &mut wire).unwrap();
    }
    assert_eq!(receive(&mut server, &mut wire), sent);

    // The server's automatic pong reaches the client.
    let mut back = BytesMut::new();
    server.write_pending(&mut back);
    assert_eq!(
        receive(&mut client, &mut back),
        vec![Message::Pong(Bytes::from_static(b"ping"))]
    );
}

#[test]
fn server_to_client_fragmented_messages() {
    let config = Config {
        max_send_frame_size: Some(3),
        ..Config::default()
    };
    let mut server = Connection::new(Role::Server, config);
    let mut client = Connection::new(Role::Client, Config::default());
    let sent = vec![
        Message::text("fragmented €uro text"),
        Message::binary(vec![7u8; 10]),
    ];
    let mut wire = BytesMut::new();
    for message in &sent {
        server.encode(message.clone(), &mut wire).unwrap();
    }
    assert_eq!(receive(&mut client, &mut wire), sent);
}

#[test]
fn close_handshake_started_by_client() {
    let (mut client, mut server) = pair(Config::default());
    let mut to_server = BytesMut::new();
    client
        .encode(Message::close(CloseCode::NORMAL, "done"), &mut to_server)
        .unwrap();
    assert_eq!(client.state(), State::CloseSent);

    assert_eq!(
        receive(&mut server, &mut to_server),
        vec![Message::close(CloseCode::NORMAL, "done")]
    );
    assert_eq!(server.state(), State::CloseReceived);
    let mut to_client = BytesMut::new();
    server.write_pending(&mut to_client);
    assert_eq!(server.state(), State::Closed);
    assert!(server.is_closed(), "server closes the transport first");

    assert_eq!(
        receive(&mut client, &mut to_client),
        vec![Message::close(CloseCode::NORMAL, "")]
    );
    assert_eq!(client.state(), State::Closed);
    assert!(client.is_closed());
    assert!(!client.has_pending());
}

#[test]
fn close_handshake_started_by_server() {
    let (mut client, mut server) = pair(Config::default());
    let mut to_client = BytesMut::new();
    server
        .encode(
            Message::close(CloseCode::GOING_AWAY, "shutdown"),
            &mut to_client,
        )
        .unwrap();
    assert_eq!(server.state(), State::CloseSent);
    assert!(!server.is_closed());

    assert_eq!(
        receive(&mut client, &mut to_client),
        vec![Message::close(CloseCode::GOING_AWAY, "shutdown")]
    );
    let mut to_server = BytesMut::new();
    client.write_pending(&mut to_server);
    assert!(client.is_closed());

    assert_eq!(
        receive(&mut server, &mut to_server),
        vec![Message::close(CloseCode::GOING_AWAY, "")]
    );
    assert_eq!(server.state(), State::Closed);
    assert!(server.is_closed());
}

#[test]
fn simultaneous_close() {
    let (mut client, mut server) = pair(Config::default());
    let mut to_server = BytesMut::new();
    let mut to_client = BytesMut::new();
    client.encode(Message::Close(None), &mut to_server).unwrap();
    server
        .encode(Message::close(CloseCode::NORMAL, ""), &mut to_client)
        .unwrap();
    assert_eq!(
        receive(&mut server, &mut to_server),
        vec![Message::Close(None)]
    );
    assert_eq!(
        receive(&mut client, &mut to_client),
        vec![Message::close(CloseCode::NORMAL, "")]
    );
    assert!(!server.has_pending());
    assert!(!client.has_pending());
    assert!(server.is_closed());
    assert!(client.is_closed());
}

#[test]
fn protocol_fault_reaches_peer_as_close() {
    let mut server = Connection::new(Role::Server, Config::default());
    let mut client = Connection::new(Role::Client, Config::default());
    // A server frame sent to a server is unmasked: a fault.
    let mut wire = BytesMut::new();
    let mut other_server = Connection::new(Role::Server, Config::default());
    other_server
        .encode(Message::text("unmasked"), &mut wire)
        .unwrap();
    let err = server.decode(&mut wire).unwrap_err();
    assert_eq!(err.close_code(), CloseCode::PROTOCOL_ERROR);

    let mut to_client = BytesMut::new();
    server.write_pending(&mut to_client);
    assert!(server.is_closed());
    assert_eq!(
        receive(&mut client, &mut to_client),
        vec![Message::close(CloseCode::PROTOCOL_ERROR, "")]
    );
}

fn message_strategy() -> impl Strategy<Value = Message> {
    prop_oneof![
        ".{0,40}".prop_map(Message::text),
        proptest::collection::vec(any::<u8>(), 0..300).prop_map(Message::binary),
        // Lengths at the edges of the 7-bit, 16-bit and 64-bit length forms.
        (
            prop::sample::select(vec![125usize, 126, 127, 65535, 65536, 65537]),
            any::<u8>(),
        )
            .prop_map(|(len, byte)| Message::binary(vec![byte; len])),
        (
            prop::sample::select(vec![42usize, 63, 21845]),
            any::<char>()
        )
            .prop_map(|(count, c)| Message::text(c.to_string().repeat(count))),
        proptest::collection::vec(any::<u8>(), 0..=125)
            .prop_map(|data| Message::Ping(Bytes::from(data))),
        proptest::collection::vec(any::<u8>(), 0..=125)
            .prop_map(|data| Message::Pong(Bytes::from(data))),
    ]
}

/// Feeds `wire` to `conn` in pieces cut at `cuts`, collecting decoded messages.
fn receive_in_pieces(conn: &mut Connection, wire: &[u8], cuts: &[usize]) -> Vec<Message> {
    let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (wire.len() + 1)).collect();
    cuts.push(0);
    cuts.push(wire.len());
    cuts.sort_unstable();
    let mut src = BytesMut::new();
    let mut messages = Vec::new();
    for pair in cuts.windows(2) {
        src.extend_from_slice(&wire[pair[0]..pair[1]]);
        messages.extend(receive(conn, &mut src));
    }
    assert!(src.is_empty(), "{} bytes left undecoded", src.len());
    assert_eq!(conn.buffered(), 0);
    messages
}

proptest! {
    #[test]
    fn messages_roundtrip_in_both_directions(
        messages in proptest::collection::vec(message_strategy(), 0..20),
        fragment_size in proptest::option::of(0usize..64),
        cuts in proptest::collection::vec(any::<usize>(), 0..30),
        client_sends in any::<bool>(),
    ) {
        let config = Config {
            max_send_frame_size: fragment_size,
            ..Config::default()
        };
        let (sender_role, receiver_role) = if client_sends {
            (Role::Client, Role::Server)
        } else {
            (Role::Server, Role::Client)
        };
        let mut sender = Connection::new(sender_role, config);
        let mut receiver = Connection::new(receiver_role, Config::default());

        let mut wire = BytesMut::new();
        for message in &messages {
            sender.encode(message.clone(), &mut wire).unwrap();
        }
        sender.encode(Message::close(CloseCode::NORMAL, "end"), &mut wire).unwrap();

        let mut expected = messages.clone();
        expected.push(Message::close(CloseCode::NORMAL, "end"));
        let received = receive_in_pieces(&mut receiver, &wire, &cuts);
        prop_assert_eq!(received, expected);
        prop_assert_eq!(receiver.state(), State::CloseReceived);

        // The replies are pongs (only the latest few may remain) and then the close reply.
        let mut back = BytesMut::new();
        receiver.write_pending(&mut back);
        prop_assert!(receiver.is_closed());
        let replies = receive_in_pieces(&mut sender, &back, &[]);
        prop_assert_eq!(replies.last(), Some(&Message::close(CloseCode::NORMAL, "")));
        prop_assert!(sender.is_closed());
    }
}

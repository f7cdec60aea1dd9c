//! Messages from `send` over transports that take only a few bytes per write, so that the
//! direct write of header and payload is cut inside the header, inside the payload and
//! between them.

use std::time::Duration;

use bytes::Bytes;
use pylon_ws::{Config, Message, Role, WebSocket};

/// Payload sizes around the 128-byte split threshold, the 16-bit length header and the
/// 64-bit length header.
const SIZES: [usize; 6] = [0, 16, 127, 128, 1024, 70_000];

/// Capacities of the in-memory pipe: 1 and 3 bytes cut every header, 64 cuts payloads.
const PIPE_CAPACITIES: [usize; 4] = [1, 3, 64, 256 << 10];

fn payload(size: usize, seed: usize) -> Bytes {
    (0..size).map(|i| (i * 31 + seed) as u8).collect()
}

#[tokio::test]
async fn send_survives_partial_writes() {
    for capacity in PIPE_CAPACITIES {
        let (server_io, client_io) = tokio::io::duplex(capacity);
        let mut server =
            WebSocket::from_raw(server_io, Role::Server, Config::default(), Bytes::new());
        let mut client =
            WebSocket::from_raw(client_io, Role::Client, Config::default(), Bytes::new());

        let receiver = tokio::spawn(async move {
            let mut received = Vec::new();
            for _ in 0..SIZES.len() * 2 {
                match client.recv().await {
                    Some(Ok(message)) => received.push(message),
                    other => panic!("client stopped early: {other:?}"),
                }
            }
            received
        });

        let mut expected = Vec::new();
        for (seed, size) in SIZES.into_iter().enumerate() {
            let binary = Message::Binary(payload(size, seed));
            let text = Message::text("é".repeat(size / 2));
            for message in [binary, text] {
                expected.push(message.clone());
                tokio::time::timeout(Duration::from_secs(10), server.send(message))
                    .await
                    .expect("send timed out")
                    .expect("send failed");
            }
        }

        let received = tokio::time::timeout(Duration::from_secs(10), receiver)
            .await
            .expect("receive timed out")
            .expect("receiver panicked");
        assert_eq!(received.len(), expected.len(), "pipe capacity {capacity}");
        for (index, (got, want)) in received.iter().zip(&expected).enumerate() {
            assert_eq!(got, want, "message {index}, pipe capacity {capacity}");
        }
        assert_eq!(server.buffered_len(), 0, "pipe capacity {capacity}");
    }
}

/// Encodes messages as a client sends them: masked frames.
fn client_frames(messages: &[Message]) -> Vec<u8> {
    let mut encoder = pylon_proto::Connection::new(Role::Client, Default::default());
    let mut wire = bytes::BytesMut::new();
    for message in messages {
        encoder.encode(message.clone(), &mut wire).unwrap();
    }
    wire.to_vec()
}

#[tokio::test]
async fn frame_tail_with_next_frames() {
    use tokio::io::AsyncWriteExt;

    let messages = [
        Message::Binary(payload(64 << 10, 1)),
        Message::text("next"),
        Message::Binary(payload(3000, 2)),
        Message::text("é".repeat(20_000)),
    ];
    let wire = client_frames(&messages);
    // Cut points inside the first payload: the server has started reading it into the
    // message buffer when the rest arrives together with the frames after it.
    for first_part in [10, 4 << 10, 40_000, (64 << 10) - 5] {
        let (server_io, mut client_io) = tokio::io::duplex(1 << 20);
        let mut server =
            WebSocket::from_raw(server_io, Role::Server, Config::default(), Bytes::new());
        let writer = {
            let wire = wire.clone();
            tokio::spawn(async move {
                client_io.write_all(&wire[..first_part]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(30)).await;
                client_io.write_all(&wire[first_part..]).await.unwrap();
                client_io
            })
        };
        for (index, want) in messages.iter().enumerate() {
            let got = tokio::time::timeout(Duration::from_secs(10), server.recv())
                .await
                .expect("receive timed out");
            match got {
                Some(Ok(got)) => assert_eq!(&got, want, "message {index}, cut {first_part}"),
                other => panic!("message {index}, cut {first_part}: {other:?}"),
            }
        }
        drop(writer.await.unwrap());
    }
}

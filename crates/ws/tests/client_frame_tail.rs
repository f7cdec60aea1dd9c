//! The client against a scripted raw server that writes the last bytes of a large frame in
//! the same write as the frames after it. The client reads a large frame's payload into its
//! message buffer with room past the frame end, so that read takes bytes of the next
//! frames too. The next frames are control frames, continuations, invalid UTF-8,
//! oversized and reserved-bit headers, and a header cut at the end of the room.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{frame_header, masked_frame, unmasked_frame, within};
use pylon_proto::handshake::accept_key;
use pylon_ws::client::{ClientConfig, connect};
use pylon_ws::{CloseCode, Error, Message, ProtocolError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// Room that the receiver reserves past the end of a final frame of `len` bytes: 1/64 of
/// it, from 16 bytes to 4 KiB, as `pylon_proto::Connection::payload_buf` offers it.
fn room_past_frame(len: usize) -> usize {
    (len / 64).clamp(16, 4 << 10)
}

fn payload(size: usize, seed: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 31 + seed) as u8).collect()
}

fn close_frame(code: u16) -> Vec<u8> {
    unmasked_frame(true, CLOSE, &code.to_be_bytes())
}

/// One frame that the client sent, unmasked.
#[derive(Debug, PartialEq, Eq)]
struct ClientFrame {
    opcode: u8,
    payload: Vec<u8>,
}

impl ClientFrame {
    fn close(code: u16) -> ClientFrame {
        ClientFrame {
            opcode: CLOSE,
            payload: code.to_be_bytes().to_vec(),
        }
    }

    fn pong(payload: &[u8]) -> ClientFrame {
        ClientFrame {
            opcode: PONG,
            payload: payload.to_vec(),
        }
    }
}

/// Reads one masked client frame, starting with the bytes in `pending`. Returns `None` at
/// the end of the stream.
async fn read_client_frame(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<ClientFrame> {
    loop {
        if let Some((frame, used)) = parse_client_frame(pending) {
            pending.drain(..used);
            return Some(frame);
        }
        let mut chunk = [0u8; 4096];
        let n = within("client frame", stream.read(&mut chunk))
            .await
            .unwrap_or_default();
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&chunk[..n]);
    }
}

fn parse_client_frame(buf: &[u8]) -> Option<(ClientFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_ne!(buf[1] & 0x80, 0, "client frame is not masked");
    let (len, mut header_len) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().unwrap()), 10),
        126 | 127 => return None,
        len => (u64::from(len), 2),
    };
    header_len += 4;
    let end = header_len + len as usize;
    if buf.len() < end {
        return None;
    }
    let key = &buf[header_len - 4..header_len];
    let payload = buf[header_len..end]
        .iter()
        .enumerate()
        .map(|(i, byte)| byte ^ key[i % 4])
        .collect();
    let frame = ClientFrame {
        opcode: buf[0] & 0x0f,
        payload,
    };
    Some((frame, end))
}

/// Starts a server that accepts one client, completes the handshake, writes `wire` cut at
/// each offset in `cuts` with a pause after each piece, and then records the client's
/// frames up to its close frame. It closes the connection after that close frame.
async fn scripted_server(
    wire: Vec<u8>,
    cuts: Vec<usize>,
) -> (SocketAddr, JoinHandle<Vec<ClientFrame>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = within("accept", listener.accept()).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            let n = within("request head", stream.read(&mut byte))
                .await
                .unwrap();
            assert_eq!(n, 1, "client closed during the handshake");
            request.push(byte[0]);
        }
        let request = String::from_utf8_lossy(&request).into_owned();
        let key = request
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("sec-websocket-key")
                    .then(|| value.trim().to_owned())
            })
            .expect("request has a Sec-WebSocket-Key");
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(key.as_bytes())
        );
        stream.write_all(response.as_bytes()).await.unwrap();

        let mut start = 0;
        for cut in cuts.into_iter().chain([wire.len()]) {
            // The client may already have failed and closed, so write errors are expected.
            if stream.write_all(&wire[start..cut]).await.is_err() {
                break;
            }
            start = cut;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }

        let mut frames = Vec::new();
        let mut pending = Vec::new();
        while let Some(frame) = read_client_frame(&mut stream, &mut pending).await {
            let is_close = frame.opcode == CLOSE;
            frames.push(frame);
            if is_close {
                break;
            }
        }
        frames
    });
    (addr, server)
}

/// Connects a client to `addr` and collects what its `recv` returns, in order, with errors
/// as text.
async fn client_items(addr: SocketAddr) -> Vec<Result<Message, String>> {
    let (mut ws, _) = within(
        "connect",
        connect(&format!("ws://{addr}/"), ClientConfig::default()),
    )
    .await
    .unwrap();
    let mut items = Vec::new();
    while let Some(item) = within("recv", ws.recv()).await {
        items.push(item.map_err(|err| match err {
            Error::Protocol(err) => format!("protocol: {err:?}"),
            other => other.to_string(),
        }));
    }
    items
}

/// Sends `wire` from a scripted server, cut at `cuts`, and checks what the client
/// received and the frames it sent back.
async fn check_client(
    name: &str,
    wire: Vec<u8>,
    cuts: Vec<usize>,
    expected_items: Vec<Result<Message, String>>,
    expected_frames: Vec<ClientFrame>,
) {
    let (addr, server) = scripted_server(wire, cuts).await;
    let items = client_items(addr).await;
    let frames = within("server", server).await.unwrap();
    assert_eq!(items, expected_items, "{name}: client items");
    assert_eq!(frames, expected_frames, "{name}: client frames");
}

fn protocol_error(err: ProtocolError) -> Result<Message, String> {
    Err(format!("protocol: {err:?}"))
}

fn normal_close() -> Result<Message, String> {
    Ok(Message::close(CloseCode::NORMAL, ""))
}

/// Builds a large binary frame, cut in the middle of its payload, whose tail arrives
/// together with `after`. Returns the wire bytes and the cut.
fn large_then(size: usize, after: &[u8]) -> (Vec<u8>, Vec<usize>) {
    let mut wire = unmasked_frame(true, BINARY, &payload(size, 1));
    let cut = wire.len() - size / 2;
    wire.extend_from_slice(after);
    (wire, vec![cut])
}

#[tokio::test]
async fn control_and_data_frames_after_large_frame_tail() {
    for size in [70_000, 1 << 20] {
        let mut after = unmasked_frame(true, PING, b"hi");
        after.extend(unmasked_frame(true, TEXT, b"next"));
        after.extend(unmasked_frame(true, PONG, b"po"));
        after.extend(close_frame(1000));
        let (wire, cuts) = large_then(size, &after);
        check_client(
            &format!("frame of {size}"),
            wire,
            cuts,
            vec![
                Ok(Message::binary(payload(size, 1))),
                Ok(Message::Ping("hi".into())),
                Ok(Message::text("next")),
                Ok(Message::Pong("po".into())),
                normal_close(),
            ],
            vec![ClientFrame::pong(b"hi"), ClientFrame::close(1000)],
        )
        .await;
    }
}

#[tokio::test]
async fn fragments_arrive_with_large_fragment_tail() {
    // Two large text fragments with a ping between them, each cut in its payload so that
    // its tail arrives with the ping and the next fragment's header.
    let text = "grüße 🚀 ".repeat(12_000);
    let (first, second) = text.as_bytes().split_at(70_001);
    let mut wire = unmasked_frame(false, TEXT, first);
    let first_cut = wire.len() - 20_000;
    wire.extend(unmasked_frame(true, PING, b"between"));
    wire.extend(unmasked_frame(false, CONTINUATION, &second[..40_000]));
    let second_cut = wire.len() - 3;
    wire.extend(unmasked_frame(true, CONTINUATION, &second[40_000..]));
    wire.extend(close_frame(1000));
    check_client(
        "fragmented text",
        wire,
        vec![first_cut, second_cut],
        vec![
            Ok(Message::Ping("between".into())),
            Ok(Message::text(text.clone())),
            normal_close(),
        ],
        vec![ClientFrame::pong(b"between"), ClientFrame::close(1000)],
    )
    .await;
}

#[tokio::test]
async fn faults_after_frame_tail_close() {
    let mut bad_utf8 = b"ok".repeat(200);
    bad_utf8.push(0xff);
    let mut oversized = frame_header(true, BINARY, false, (16 << 20) + 1);
    oversized.extend_from_slice(&[0u8; 64]);
    let mut reserved = unmasked_frame(true, BINARY, b"rsv1");
    reserved[0] |= 0x40;
    let cases = [
        (
            "invalid utf-8 in the room",
            unmasked_frame(true, TEXT, &bad_utf8),
            ProtocolError::InvalidUtf8,
            1007,
        ),
        (
            "frame over the limit",
            oversized,
            ProtocolError::FrameTooLarge {
                size: (16 << 20) + 1,
                max: 16 << 20,
            },
            1009,
        ),
        (
            "masked server frame",
            masked_frame(true, TEXT, b"masked"),
            ProtocolError::MaskedServerFrame,
            1002,
        ),
        (
            "rsv1 without compression",
            reserved,
            ProtocolError::ReservedBits,
            1002,
        ),
        (
            "continuation without a message",
            unmasked_frame(true, CONTINUATION, b"stray"),
            ProtocolError::UnexpectedContinuation,
            1002,
        ),
    ];
    for (name, after, err, code) in cases {
        let (wire, cuts) = large_then(70_000, &after);
        check_client(
            name,
            wire,
            cuts,
            vec![Ok(Message::binary(payload(70_000, 1))), protocol_error(err)],
            vec![ClientFrame::close(code)],
        )
        .await;
    }
}

#[tokio::test]
async fn header_cut_at_room_end_is_decoded() {
    let size = 70_000;
    let room = room_past_frame(size);
    let next = payload(3000, 5);
    // A filler frame ends `k` bytes before the room does, so the read that completes the
    // large frame cuts the next frame's 4-byte header after `k` bytes for `k` up to 3. At
    // 4 the room ends with that header, and at 9 it ends inside the payload.
    for k in [1, 2, 3, 4, 9] {
        let filler = payload(room - k - 4, 3);
        let mut after = unmasked_frame(true, BINARY, &filler);
        assert_eq!(after.len(), room - k, "filler uses a 4-byte header");
        after.extend(unmasked_frame(true, BINARY, &next));
        after.extend(close_frame(1000));
        let (wire, cuts) = large_then(size, &after);
        check_client(
            &format!("header cut after {k} bytes"),
            wire,
            cuts,
            vec![
                Ok(Message::binary(payload(size, 1))),
                Ok(Message::binary(filler)),
                Ok(Message::binary(next.clone())),
                normal_close(),
            ],
            vec![ClientFrame::close(1000)],
        )
        .await;
    }
}

#[tokio::test]
async fn pipelined_large_frames_are_received_in_order() {
    let messages: Vec<Vec<u8>> = (0..60).map(|seed| payload(70_000, seed)).collect();
    let mut wire = Vec::new();
    for message in &messages {
        wire.extend(unmasked_frame(true, BINARY, message));
    }
    wire.extend(close_frame(1000));
    // Pieces of 100,003 bytes end at a different offset in each frame.
    let cuts = (100_003..wire.len()).step_by(100_003).collect();
    let mut expected: Vec<_> = messages
        .into_iter()
        .map(|message| Ok(Message::binary(message)))
        .collect();
    expected.push(normal_close());
    check_client(
        "pipelined",
        wire,
        cuts,
        expected,
        vec![ClientFrame::close(1000)],
    )
    .await;
}

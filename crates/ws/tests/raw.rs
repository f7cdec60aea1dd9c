//! The server against a hand-written peer on a raw TCP socket: bad input and wire details.

mod common;

use std::time::Duration;

use common::{
    echo, frame_header, masked_frame, quick_config, raw_handshake, raw_handshake_with, read_frame,
    read_to_end, spawn_server, unmasked_frame, within,
};
use pylon_ws::{Error, Message, ProtocolError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;

/// What the server handler saw: every item from `recv`, with errors as text, and the bytes
/// the connection still buffered at the end.
type Seen = (Vec<Result<Message, String>>, usize);

async fn spawn_recording_server() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Seen>) {
    let (seen_tx, seen_rx) = mpsc::unbounded_channel();
    let addr = spawn_server(quick_config(), move |mut ws| {
        let seen_tx = seen_tx.clone();
        async move {
            let mut seen = Vec::new();
            while let Some(item) = ws.recv().await {
                if let Err(Error::Protocol(err)) = &item {
                    seen.push(Err(format!("protocol: {err:?}")));
                    continue;
                }
                seen.push(item.map_err(|err| err.to_string()));
            }
            let _ = seen_tx.send((seen, ws.buffered_len()));
        }
    })
    .await;
    (addr, seen_rx)
}

#[tokio::test]
async fn oversized_frame_rejected_from_header() {
    let (addr, mut seen_rx) = spawn_recording_server().await;
    let (mut stream, mut pending) = raw_handshake(addr).await;

    // A binary frame that declares 4 GiB and then sends only its mask key.
    let mut header = frame_header(true, BINARY, true, 4 * 1024 * 1024 * 1024);
    header.extend_from_slice(&[1, 2, 3, 4]);
    stream.write_all(&header).await.unwrap();

    let close = read_frame(&mut stream, &mut pending).await.unwrap();
    assert_eq!(close.close_code(), Some(1009));
    assert!(read_frame(&mut stream, &mut pending).await.is_none());

    let (seen, buffered) = within("server result", seen_rx.recv()).await.unwrap();
    let expected = ProtocolError::FrameTooLarge {
        size: 4 * 1024 * 1024 * 1024,
        max: 16 * 1024 * 1024,
    };
    assert_eq!(seen, vec![Err(format!("protocol: {expected:?}"))]);
    assert_eq!(buffered, 0);
}

#[tokio::test]
async fn unmasked_client_frame_closes_with_1002() {
    let (addr, mut seen_rx) = spawn_recording_server().await;
    let (mut stream, mut pending) = raw_handshake(addr).await;

    stream
        .write_all(&unmasked_frame(true, TEXT, b"not masked"))
        .await
        .unwrap();
    let close = read_frame(&mut stream, &mut pending).await.unwrap();
    assert_eq!(close.close_code(), Some(1002));
    assert!(read_frame(&mut stream, &mut pending).await.is_none());

    let (seen, _) = within("server result", seen_rx.recv()).await.unwrap();
    let expected = format!("protocol: {:?}", ProtocolError::UnmaskedClientFrame);
    assert_eq!(seen, vec![Err(expected)]);
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let (addr, mut seen_rx) = spawn_recording_server().await;
    let (mut stream, mut pending) = raw_handshake(addr).await;

    stream
        .write_all(&masked_frame(true, TEXT, b"ok \xff bad"))
        .await
        .unwrap();
    let close = read_frame(&mut stream, &mut pending).await.unwrap();
    assert_eq!(close.close_code(), Some(1007));
    assert!(read_frame(&mut stream, &mut pending).await.is_none());
    let (seen, _) = within("server result", seen_rx.recv()).await.unwrap();
    assert_eq!(seen.len(), 1);
}

#[tokio::test]
async fn peer_vanishing_is_abnormal_closure() {
    let (addr, mut seen_rx) = spawn_recording_server().await;
    let (stream, _) = raw_handshake(addr).await;
    drop(stream);
    let (seen, _) = within("server result", seen_rx.recv()).await.unwrap();
    assert_eq!(seen, vec![Err(Error::AbnormalClosure.to_string())]);
}

#[tokio::test]
async fn frames_in_handshake_packet_are_decoded() {
    let addr = spawn_server(quick_config(), echo).await;
    // The first frame goes out in the same write as the request head, so hyper reads it
    // together with the head and must hand it over.
    let early = masked_frame(true, TEXT, b"early");
    let (mut stream, mut pending) = raw_handshake_with(addr, &early).await;
    let reply = read_frame(&mut stream, &mut pending).await.unwrap();
    assert_eq!(reply.opcode, TEXT);
    assert_eq!(reply.payload, b"early");
}

#[tokio::test]
async fn server_sends_fragments_and_pongs() {
    let mut config = quick_config();
    config.ws.proto.max_send_frame_size = Some(4);
    let addr = spawn_server(config, echo).await;
    let (mut stream, mut pending) = raw_handshake(addr).await;

    // A ping between two fragments of the client's message: the pong comes first, then
    // the echo of the reassembled message in fragments of at most 4 bytes.
    let mut input = masked_frame(false, TEXT, b"hello ");
    input.extend(masked_frame(true, PING, b"p"));
    input.extend(masked_frame(true, CONTINUATION, b"world"));
    stream.write_all(&input).await.unwrap();

    let pong = read_frame(&mut stream, &mut pending).await.unwrap();
    assert_eq!((pong.opcode, pong.payload.as_slice()), (PONG, &b"p"[..]));

    let mut fragments = Vec::new();
    loop {
        let frame = read_frame(&mut stream, &mut pending).await.unwrap();
        let fin = frame.fin;
        fragments.push(frame);
        if fin {
            break;
        }
    }
    assert_eq!(fragments.len(), 3);
    assert_eq!(fragments[0].opcode, TEXT);
    assert!(
        fragments[1..]
            .iter()
            .all(|frame| frame.opcode == CONTINUATION)
    );
    assert!(fragments.iter().all(|frame| frame.payload.len() <= 4));
    let joined: Vec<u8> = fragments
        .into_iter()
        .flat_map(|frame| frame.payload)
        .collect();
    assert_eq!(joined, b"hello world");
}

#[tokio::test]
async fn server_closes_tcp_first() {
    let (addr, mut seen_rx) = spawn_recording_server().await;
    let (mut stream, mut pending) = raw_handshake(addr).await;

    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"done");
    stream
        .write_all(&masked_frame(true, CLOSE, &payload))
        .await
        .unwrap();

    let reply = read_frame(&mut stream, &mut pending).await.unwrap();
    assert_eq!(reply.close_code(), Some(1000));
    // The raw peer never closes its side, so end of stream here means the server closed
    // TCP on its own after the handshake (RFC 6455 section 7.1.1).
    let started = std::time::Instant::now();
    let rest = read_to_end(&mut stream).await;
    assert!(rest.is_empty(), "bytes after the close reply: {rest:?}");
    assert!(started.elapsed() < Duration::from_secs(1));

    let (seen, _) = within("server result", seen_rx.recv()).await.unwrap();
    assert_eq!(
        seen,
        vec![Ok(Message::close(pylon_ws::CloseCode::NORMAL, "done"))]
    );
}

#[tokio::test]
async fn bad_upgrade_requests_get_http_errors() {
    let addr = spawn_server(quick_config(), echo).await;
    let cases = [
        (
            "missing key",
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
            "400",
            None,
        ),
        (
            "wrong version",
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
            "426",
            Some("sec-websocket-version: 13"),
        ),
        (
            "post method",
            "POST / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n",
            "400",
            None,
        ),
    ];
    for (name, request, status, header) in cases {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = vec![0u8; 4096];
        let n = within(name, stream.read(&mut response)).await.unwrap();
        let response = String::from_utf8_lossy(&response[..n]).to_lowercase();
        assert!(
            response.starts_with(&format!("http/1.1 {status}")),
            "{name}: {response}"
        );
        if let Some(header) = header {
            assert!(response.contains(header), "{name}: {response}");
        }
    }
}

/// Starts a hand-written server on 127.0.0.1 for one connection. It reads the upgrade
/// request, sends a valid `101` response followed by `after_head` in the same write, and
/// then reports every byte the client sends until it closes.
async fn spawn_raw_server(
    after_head: Vec<u8>,
) -> (std::net::SocketAddr, mpsc::UnboundedReceiver<Vec<u8>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (bytes_tx, bytes_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        while !request.windows(4).any(|window| window == b"\r\n\r\n") {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed during the request");
            request.extend_from_slice(&chunk[..n]);
        }
        let request = String::from_utf8(request).unwrap();
        let key = request
            .lines()
            .find_map(|line| line.strip_prefix("sec-websocket-key: "))
            .expect("request has no sec-websocket-key header");
        let accept = pylon_proto::handshake::accept_key(key.trim().as_bytes());
        let mut response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes();
        response.extend_from_slice(&after_head);
        stream.write_all(&response).await.unwrap();

        let mut received = Vec::new();
        let _ = tokio::time::timeout(common::TEST_TIMEOUT, stream.read_to_end(&mut received)).await;
        let _ = bytes_tx.send(received);
    });
    (addr, bytes_rx)
}

#[tokio::test]
async fn client_keeps_bytes_after_response_head() {
    // An unmasked text frame and a close frame in the same packet as the response head.
    let mut tail = unmasked_frame(true, TEXT, b"right away");
    tail.extend(unmasked_frame(true, CLOSE, &1000u16.to_be_bytes()));
    let (addr, mut received) = spawn_raw_server(tail).await;

    let (mut ws, _) = within(
        "connect",
        pylon_ws::client::connect(
            &format!("ws://{addr}/"),
            pylon_ws::client::ClientConfig::default(),
        ),
    )
    .await
    .unwrap();
    let first = within("first message", ws.recv()).await.unwrap().unwrap();
    assert_eq!(first, Message::text("right away"));
    let close = within("close", ws.recv()).await.unwrap().unwrap();
    assert_eq!(close, Message::close(pylon_ws::CloseCode::NORMAL, ""));
    drop(ws);

    // The client replied with a masked close frame echoing 1000.
    let bytes = within("client bytes", received.recv()).await.unwrap();
    assert_eq!(
        bytes.len(),
        2 + 4 + 2,
        "expected one masked close frame: {bytes:?}"
    );
    assert_eq!(bytes[0], 0x88);
    assert_eq!(bytes[1], 0x80 | 2);
    let key = &bytes[2..6];
    let code = [bytes[6] ^ key[0], bytes[7] ^ key[1]];
    assert_eq!(u16::from_be_bytes(code), 1000);
}

#[tokio::test]
async fn masked_server_frame_fails_client() {
    let (addr, mut received) = spawn_raw_server(masked_frame(true, TEXT, b"masked")).await;
    let (mut ws, _) = within(
        "connect",
        pylon_ws::client::connect(
            &format!("ws://{addr}/"),
            pylon_ws::client::ClientConfig::default(),
        ),
    )
    .await
    .unwrap();
    let item = within("client recv", ws.recv()).await.unwrap();
    assert!(
        matches!(item, Err(Error::Protocol(ProtocolError::MaskedServerFrame))),
        "{item:?}"
    );
    // After a protocol fault the client closes the transport itself.
    assert!(within("client end", ws.recv()).await.is_none());

    let bytes = within("client bytes", received.recv()).await.unwrap();
    assert_eq!(
        bytes.len(),
        2 + 4 + 2,
        "expected one masked close frame: {bytes:?}"
    );
    let key = &bytes[2..6];
    let code = [bytes[6] ^ key[0], bytes[7] ^ key[1]];
    assert_eq!(u16::from_be_bytes(code), 1002);
}

#[tokio::test]
async fn oversized_message_close_survives_unread_payload() {
    let mut config = quick_config();
    config.ws.proto.limits.max_frame_size = 1 << 20;
    config.ws.proto.limits.max_message_size = 1 << 20;
    // The handler stops at the first error, as the echo loop of `pylon serve` does.
    let addr = spawn_server(config, echo).await;
    let (mut stream, mut pending) = raw_handshake(addr).await;

    // An 8 MiB frame against a 1 MiB limit. The server fails the connection on the header
    // while most of the payload is still on its way.
    let frame = masked_frame(true, BINARY, &vec![0x42; 8 << 20]);
    let written = within("8 MiB write", stream.write_all(&frame)).await;
    assert!(written.is_ok(), "write failed: {written:?}");

    let close = read_frame(&mut stream, &mut pending).await.unwrap();
    assert_eq!(close.close_code(), Some(1009));
    // The server ends with FIN after discarding the rest, not with a reset.
    let mut rest = Vec::new();
    let end = within("end of stream", stream.read_to_end(&mut rest)).await;
    assert!(end.is_ok(), "stream ended with {end:?}");
    assert!(rest.is_empty(), "bytes after the close frame: {rest:?}");
}

/// Writes a masked 70,000-byte binary frame cut in the middle of its payload, then its
/// tail in the same write as `after`. The server reads the tail into its message buffer
/// with room past the frame end (1,093 bytes, 1/64 of the frame), which takes the start of
/// `after` too. Returns the stream after checking the echo of the large frame.
async fn send_large_frame_then(addr: std::net::SocketAddr, after: &[u8]) -> (TcpStream, Vec<u8>) {
    let (mut stream, mut pending) = raw_handshake(addr).await;
    stream.set_nodelay(true).unwrap();
    let large: Vec<u8> = (0..70_000u32).map(|i| (i * 31) as u8).collect();
    let mut wire = masked_frame(true, BINARY, &large);
    let cut = wire.len() - 35_000;
    wire.extend_from_slice(after);
    stream.write_all(&wire[..cut]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    stream.write_all(&wire[cut..]).await.unwrap();
    let echo = read_frame(&mut stream, &mut pending).await.unwrap();
    assert_eq!((echo.opcode, echo.payload), (BINARY, large));
    (stream, pending)
}

#[tokio::test]
async fn frames_after_large_frame_tail_are_decoded() {
    let addr = spawn_server(quick_config(), echo).await;
    let mut after = masked_frame(true, PING, b"hi");
    after.extend(masked_frame(false, TEXT, "grüß".as_bytes()));
    after.extend(masked_frame(true, CONTINUATION, "e 🚀".as_bytes()));
    after.extend(masked_frame(true, CLOSE, &1000u16.to_be_bytes()));
    let (mut stream, mut pending) = send_large_frame_then(addr, &after).await;

    let pong = read_frame(&mut stream, &mut pending).await.unwrap();
    assert_eq!((pong.opcode, pong.payload), (PONG, b"hi".to_vec()));
    let text = read_frame(&mut stream, &mut pending).await.unwrap();
    assert_eq!((text.opcode, text.payload), (TEXT, "grüße 🚀".into()));
    let close = read_frame(&mut stream, &mut pending).await.unwrap();
    assert_eq!(close.close_code(), Some(1000));
    assert!(read_frame(&mut stream, &mut pending).await.is_none());
}

#[tokio::test]
async fn faults_after_frame_tail_close() {
    let addr = spawn_server(quick_config(), echo).await;
    let mut bad_utf8 = b"ok".repeat(200);
    bad_utf8.push(0xff);
    let mut oversized = frame_header(true, BINARY, true, (16 << 20) + 1);
    oversized.extend_from_slice(&[1, 2, 3, 4]);
    let cases = [
        ("invalid utf-8", masked_frame(true, TEXT, &bad_utf8), 1007),
        ("frame over the limit", oversized, 1009),
        ("unmasked frame", unmasked_frame(true, TEXT, b"plain"), 1002),
        (
            "continuation without a message",
            masked_frame(true, CONTINUATION, b"stray"),
            1002,
        ),
    ];
    for (name, after, code) in cases {
        let (mut stream, mut pending) = send_large_frame_then(addr, &after).await;
        let close = read_frame(&mut stream, &mut pending).await.unwrap();
        assert_eq!(close.close_code(), Some(code), "{name}");
        assert!(
            read_frame(&mut stream, &mut pending).await.is_none(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn header_cut_at_room_end_is_decoded() {
    let addr = spawn_server(quick_config(), echo).await;
    // Room past the end of the 70,000-byte frame: 70,000 / 64 bytes.
    let room = 70_000 / 64;
    let next: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    // A filler frame ends `k` bytes before the room does, so the read that completes the
    // large frame cuts the next frame's 8-byte header (with its mask key) after `k` bytes.
    for k in [1, 2, 4, 7, 8] {
        let filler = vec![b'f'; room - k - 8];
        let mut after = masked_frame(true, BINARY, &filler);
        assert_eq!(after.len(), room - k, "filler uses an 8-byte header");
        after.extend(masked_frame(true, BINARY, &next));
        let (mut stream, mut pending) = send_large_frame_then(addr, &after).await;

        let echo = read_frame(&mut stream, &mut pending).await.unwrap();
        assert_eq!(echo.payload, filler, "filler, cut after {k}");
        let echo = read_frame(&mut stream, &mut pending).await.unwrap();
        assert_eq!(echo.payload, next, "next frame, cut after {k}");
    }
}

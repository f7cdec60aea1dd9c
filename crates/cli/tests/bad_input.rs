//! Bad input against a running node: each class gets its HTTP status or close code, and the
//! node keeps serving other clients with bounded memory.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Server, raw_exchange, status_of};
use pylon_ws::Message;
use pylon_ws::client::{ClientConfig, connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Opens a WebSocket by hand and returns the stream right after the 101 response.
async fn raw_websocket(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(upgrade_request(path, "").as_bytes())
        .await
        .expect("write handshake");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("handshake response within 5 s")
            .expect("read handshake response");
        assert_eq!(n, 1, "server closed during the handshake");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert_eq!(status_of(&head), 101, "handshake failed: {head}");
    stream
}

/// Builds a masked client frame.
fn client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut frame = vec![first_byte];
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=65535 => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// Reads frames from the server until a close frame and returns its code (None for an
/// empty close payload). Fails if the server does not close within 5 s.
async fn read_close_code(stream: &mut TcpStream) -> Option<u16> {
    let read = async {
        loop {
            let mut head = [0u8; 2];
            stream
                .read_exact(&mut head)
                .await
                .expect("server frame header");
            assert_eq!(head[1] & 0x80, 0, "server frames must not be masked");
            let len = match head[1] & 0x7f {
                126 => u64::from(stream.read_u16().await.expect("16-bit length")),
                127 => stream.read_u64().await.expect("64-bit length"),
                len => u64::from(len),
            };
            let mut payload = vec![0u8; usize::try_from(len).expect("frame fits memory")];
            stream
                .read_exact(&mut payload)
                .await
                .expect("frame payload");
            if head[0] & 0x0f == 0x8 {
                return (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("server sent a close frame within 5 s")
}

/// Asserts that the server closes the TCP connection after its close frame.
async fn assert_tcp_closed(stream: &mut TcpStream) {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "server did not close TCP within 5 s");
}

async fn assert_echo_works(server: &Server) {
    let (mut ws, _) = connect(&server.url("/ws/echo"), ClientConfig::default())
        .await
        .expect("echo connection after bad input");
    ws.send(Message::text("still serving")).await.expect("send");
    let echoed = tokio::time::timeout(Duration::from_secs(5), ws.recv())
        .await
        .expect("echo within 5 s")
        .expect("a message")
        .expect("no error");
    assert_eq!(echoed, Message::text("still serving"));
}

#[tokio::test]
async fn handshake_faults_get_their_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let valid = "Host: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n";
    let cases: Vec<(&str, String, u16)> = vec![
        (
            "POST method",
            format!(
                "POST /ws/echo HTTP/1.1\r\n{valid}Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n"
            ),
            400,
        ),
        (
            "HTTP/1.0",
            format!(
                "GET /ws/echo HTTP/1.0\r\n{valid}Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ),
            400,
        ),
        (
            "missing Upgrade",
            format!(
                "GET /ws/echo HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ),
            400,
        ),
        (
            "Connection without upgrade token",
            format!(
                "GET /ws/echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: keep-alive\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ),
            400,
        ),
        (
            "missing key",
            format!("GET /ws/echo HTTP/1.1\r\n{valid}Sec-WebSocket-Version: 13\r\n\r\n"),
            400,
        ),
        (
            "key of 15 bytes",
            format!(
                "GET /ws/echo HTTP/1.1\r\n{valid}Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ),
            400,
        ),
        (
            "key not base64",
            format!(
                "GET /ws/echo HTTP/1.1\r\n{valid}Sec-WebSocket-Key: !!!not-base64!!!!!!!!!==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ),
            400,
        ),
        (
            "version 8",
            format!(
                "GET /ws/echo HTTP/1.1\r\n{valid}Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 8\r\n\r\n"
            ),
            426,
        ),
        ("garbage request line", "HELLO\r\n\r\n".to_owned(), 400),
    ];
    for (name, request, expected) in cases {
        let response = raw_exchange(server.addr, request.as_bytes()).await;
        let text = String::from_utf8_lossy(&response);
        assert_eq!(status_of(&text), expected, "{name}: {text}");
        if expected == 426 {
            assert!(
                text.to_ascii_lowercase()
                    .contains("sec-websocket-version: 13"),
                "{name}: 426 without Sec-WebSocket-Version: 13: {text}"
            );
        }
    }

    // Token lists and letter case in Connection and Upgrade are accepted.
    let request = format!(
        "GET /ws/echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: WebSocket\r\nConnection: keep-alive, UPGRADE\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("response within 5 s")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert_eq!(status_of(&head), 101, "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");

    let (_, metrics) = common::http_get(server.addr, "/metrics").await;
    assert!(
        metrics.contains("pylon_ws_handshake_failures_total"),
        "{metrics}"
    );
    assert_echo_works(&server).await;
}

#[tokio::test]
async fn origin_outside_allow_list_gets_403() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--allow-origin", "http://good.example"]);
    let bad = raw_exchange(
        server.addr,
        upgrade_request("/ws/echo", "Origin: http://evil.example\r\n").as_bytes(),
    )
    .await;
    assert_eq!(status_of(&String::from_utf8_lossy(&bad)), 403);

    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(upgrade_request("/ws/echo", "Origin: http://good.example\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = stream.read(&mut buf).await.unwrap();
    assert_eq!(status_of(&String::from_utf8_lossy(&buf[..n])), 101);
}

#[tokio::test]
async fn incomplete_request_is_dropped_after_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--handshake-timeout", "1"]);
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /ws/echo HTTP/1.1\r\nHost: loc")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "a half-sent request was not dropped within 5 s"
    );
    assert_echo_works(&server).await;
}

#[tokio::test]
async fn frame_faults_get_their_close_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut unmasked = client_frame(0x81, b"hi");
    unmasked[1] &= 0x7f;
    unmasked.drain(2..6);
    let two_mib = 2u64 << 20;
    let mut oversized = vec![0x82, 0x80 | 127];
    oversized.extend_from_slice(&two_mib.to_be_bytes());
    oversized.extend_from_slice(&[1, 2, 3, 4]);
    let mut top_bit = vec![0x82, 0x80 | 127];
    top_bit.extend_from_slice(&(1u64 << 63).to_be_bytes());
    top_bit.extend_from_slice(&[1, 2, 3, 4]);
    let mut bad_utf8_split = client_frame(0x01, &[b'a', 0xce]);
    bad_utf8_split.extend(client_frame(0x80, &[0x28]));

    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unmasked client frame", unmasked, 1002),
        ("RSV1 without extension", client_frame(0xc1, b"hi"), 1002),
        ("RSV2", client_frame(0xa1, b"hi"), 1002),
        ("reserved opcode 3", client_frame(0x83, b""), 1002),
        ("reserved control opcode 11", client_frame(0x8b, b""), 1002),
        ("ping of 126 bytes", client_frame(0x89, &[0u8; 126]), 1002),
        ("fragmented ping", client_frame(0x09, b"x"), 1002),
        ("continuation without start", client_frame(0x80, b"x"), 1002),
        (
            "new message inside a fragmented one",
            [client_frame(0x01, b"a"), client_frame(0x81, b"b")].concat(),
            1002,
        ),
        (
            "invalid UTF-8 text",
            client_frame(0x81, &[0xff, 0xfe]),
            1007,
        ),
        ("invalid UTF-8 across fragments", bad_utf8_split, 1007),
        ("close with 1 byte", client_frame(0x88, &[3]), 1002),
        (
            "close code 1005",
            client_frame(0x88, &1005u16.to_be_bytes()),
            1002,
        ),
        (
            "close code 999",
            client_frame(0x88, &999u16.to_be_bytes()),
            1002,
        ),
        (
            "close reason not UTF-8",
            client_frame(0x88, &[0x03, 0xe8, 0xff]),
            1007,
        ),
        ("message over the size limit", oversized, 1009),
        ("length with top bit set", top_bit, 1002),
    ];
    for (name, bytes, expected) in cases {
        let mut stream = raw_websocket(server.addr, "/ws/echo").await;
        stream.write_all(&bytes).await.unwrap();
        let code = read_close_code(&mut stream).await;
        assert_eq!(code, Some(expected), "{name}");
        assert_tcp_closed(&mut stream).await;
    }

    // A valid close gets the same code echoed, and the server closes TCP first.
    let mut stream = raw_websocket(server.addr, "/ws/echo").await;
    stream
        .write_all(&client_frame(0x88, &[0x0f, 0xa0, b'b', b'y', b'e']))
        .await
        .unwrap();
    assert_eq!(read_close_code(&mut stream).await, Some(4000));
    assert_tcp_closed(&mut stream).await;

    assert_echo_works(&server).await;
}

#[tokio::test]
async fn huge_declared_length_keeps_memory_flat() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    assert_echo_works(&server).await;
    let before = server.rss_kib();

    // 200 clients each declare a 4 GiB frame and send nothing after the header.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(4u64 << 30).to_be_bytes());
    header.extend_from_slice(&[9, 9, 9, 9]);
    let mut streams = Vec::new();
    for _ in 0..200 {
        let mut stream = raw_websocket(server.addr, "/ws/echo").await;
        stream.write_all(&header).await.unwrap();
        streams.push(stream);
    }
    for stream in &mut streams {
        assert_eq!(read_close_code(stream).await, Some(1009));
    }
    let after = server.rss_kib();
    assert!(
        after < before + 16 * 1024,
        "server RSS grew from {before} KiB to {after} KiB after 200 oversized frame headers"
    );
    assert_echo_works(&server).await;
}

#[tokio::test]
async fn bad_chat_messages_get_error_events() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (mut ws, _) = connect(&server.url("/ws/chat"), ClientConfig::default())
        .await
        .expect("chat connection");
    let long_room = "r".repeat(200);
    let long_text = "x".repeat(100_000);
    let cases = [
        ("{not json".to_owned(), "invalid_json"),
        (r#"{"type":"dance"}"#.to_owned(), "unknown_type"),
        (
            r#"{"type":"join","nick":"ann"}"#.to_owned(),
            "missing_field",
        ),
        (
            r#"{"type":"join","room":"","nick":"ann"}"#.to_owned(),
            "invalid_room",
        ),
        (
            format!(r#"{{"type":"join","room":"{long_room}","nick":"ann"}}"#),
            "invalid_room",
        ),
        (
            r#"{"type":"send","room":"lobby","text":"hi"}"#.to_owned(),
            "not_joined",
        ),
        (
            format!(r#"{{"type":"send","room":"lobby","text":"{long_text}"}}"#),
            "too_large",
        ),
    ];
    for (request, code) in cases {
        ws.send(Message::text(request.clone())).await.unwrap();
        let reply = next_text(&mut ws).await;
        let event: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(event["type"], "error", "{request}: {reply}");
        assert_eq!(event["code"], code, "{request}: {reply}");
        assert!(
            event["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{request}: error without a message: {reply}"
        );
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    let reply = next_text(&mut ws).await;
    assert!(reply.contains("binary_not_supported"), "{reply}");

    // The connection still works after every bad message.
    ws.send(Message::text(
        r#"{"type":"join","room":"lobby","nick":"ann"}"#,
    ))
    .await
    .unwrap();
    let joined = next_text(&mut ws).await;
    assert!(joined.contains(r#""type":"joined""#), "{joined}");
}

async fn next_text(ws: &mut pylon_ws::WebSocket<TcpStream>) -> String {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.recv())
            .await
            .expect("a reply within 5 s")
            .expect("connection open")
            .expect("no protocol error");
        if let Message::Text(text) = msg {
            return text.as_str().to_owned();
        }
    }
}

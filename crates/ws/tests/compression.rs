//! permessage-deflate between the pylon-ws client and server, and against raw peers that
//! send hand-written offers, responses and compressed frames.

mod common;

use std::net::SocketAddr;

use bytes::BytesMut;
use common::{
    SAMPLE_KEY, echo, masked_frame, quick_config, read_frame, read_upgrade_response, spawn_server,
    within,
};
use pylon_proto::handshake::accept_key;
use pylon_proto::{Config as ProtoConfig, Connection, Limits};
use pylon_ws::client::{ClientConfig, connect};
use pylon_ws::server::ServerConfig;
use pylon_ws::{
    CloseCode, DeflateConfig, DeflateParams, Error, HandshakeError, Message, PerMessageDeflate,
    Role,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Compressible text with multi-byte characters.
fn sample_text(len: usize) -> String {
    let mut text = String::new();
    let mut i = 0u32;
    while text.len() < len {
        text.push_str(&format!("line {i}: grüße 🚀; "));
        i += 1;
    }
    text
}

/// Starts an echo server that reports each connection's agreed compression.
async fn spawn_reporting_echo(
    config: ServerConfig,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<Option<PerMessageDeflate>>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let addr = spawn_server(config, move |ws| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(ws.compression().copied());
            echo(ws).await;
        }
    })
    .await;
    (addr, rx)
}

/// Sends each message and checks that the echo is identical.
async fn check_echoes(url: &str, config: ClientConfig) -> Option<PerMessageDeflate> {
    let (mut ws, _) = within("connect", connect(url, config)).await.unwrap();
    let messages = [
        Message::text(sample_text(200_000)),
        Message::text(sample_text(200_000)),
        Message::text("short"),
        Message::text(""),
        Message::binary(vec![0u8; 300_000]),
        Message::binary((0..=255u8).cycle().take(70_000).collect::<Vec<u8>>()),
    ];
    for message in messages {
        ws.send(message.clone()).await.unwrap();
        let echoed = within("echo", ws.recv()).await.unwrap().unwrap();
        assert_eq!(echoed, message);
    }
    let compression = ws.compression().copied();
    within("close", ws.close(CloseCode::NORMAL, "done"))
        .await
        .unwrap();
    compression
}

#[tokio::test]
async fn defaults_negotiate_and_echo() {
    let (addr, mut agreed) = spawn_reporting_echo(quick_config()).await;
    let client_side = check_echoes(&format!("ws://{addr}/"), ClientConfig::default()).await;
    let server_side = agreed.recv().await.unwrap();
    let client_side = client_side.expect("client negotiated compression");
    let server_side = server_side.expect("server negotiated compression");
    assert_eq!(client_side.params, DeflateParams::default());
    assert_eq!(server_side.params, client_side.params);
    assert_eq!(client_side.send_window_bits, 15);
    assert!(!client_side.send_no_context_takeover);
}

#[tokio::test]
async fn parameter_combinations_echo() {
    let client_configs = [
        DeflateConfig::default(),
        DeflateConfig {
            no_context_takeover: true,
            ..DeflateConfig::default()
        },
        DeflateConfig {
            peer_no_context_takeover: true,
            peer_max_window_bits: Some(10),
            ..DeflateConfig::default()
        },
        DeflateConfig {
            max_window_bits: 9,
            level: 1,
            min_message_size: 0,
            ..DeflateConfig::default()
        },
    ];
    let server_configs = [
        DeflateConfig::default(),
        DeflateConfig {
            max_window_bits: 9,
            no_context_takeover: true,
            ..DeflateConfig::default()
        },
        DeflateConfig {
            peer_max_window_bits: Some(11),
            peer_no_context_takeover: true,
            level: 9,
            ..DeflateConfig::default()
        },
    ];
    for server_deflate in server_configs {
        let mut config = quick_config();
        config.handshake.deflate = Some(server_deflate);
        let (addr, mut agreed) = spawn_reporting_echo(config).await;
        for client_deflate in client_configs {
            let client = ClientConfig {
                compression: Some(client_deflate),
                ..ClientConfig::default()
            };
            let client_side = check_echoes(&format!("ws://{addr}/"), client).await;
            let server_side = agreed.recv().await.unwrap();
            let case = format!("server {server_deflate:?}, client {client_deflate:?}");
            let client_side = client_side.unwrap_or_else(|| panic!("{case}: not negotiated"));
            let server_side = server_side.unwrap_or_else(|| panic!("{case}: not negotiated"));
            assert_eq!(client_side.params, server_side.params, "{case}");
            assert_eq!(
                client_side.send_window_bits,
                server_side.receive_window_bits.max(9),
                "{case}"
            );
            assert!(
                client_side.send_window_bits <= client_deflate.max_window_bits.max(9),
                "{case}"
            );
            assert!(
                server_side.send_window_bits <= server_deflate.max_window_bits.max(9),
                "{case}"
            );
            if client_deflate.no_context_takeover {
                assert!(client_side.send_no_context_takeover, "{case}");
            }
            if server_deflate.no_context_takeover || client_deflate.peer_no_context_takeover {
                assert!(server_side.send_no_context_takeover, "{case}");
                assert!(client_side.receive_no_context_takeover, "{case}");
            }
        }
    }
}

#[tokio::test]
async fn compression_off_on_either_side() {
    let mut off = quick_config();
    off.handshake.deflate = None;
    let (addr, mut agreed) = spawn_reporting_echo(off).await;
    let client_side = check_echoes(&format!("ws://{addr}/"), ClientConfig::default()).await;
    assert_eq!(client_side, None);
    assert_eq!(agreed.recv().await.unwrap(), None);

    let (addr, mut agreed) = spawn_reporting_echo(quick_config()).await;
    let client = ClientConfig {
        compression: None,
        ..ClientConfig::default()
    };
    let client_side = check_echoes(&format!("ws://{addr}/"), client).await;
    assert_eq!(client_side, None);
    assert_eq!(agreed.recv().await.unwrap(), None);
}

/// Sends an upgrade request with `extensions` as `Sec-WebSocket-Extensions` lines and
/// returns the stream, the response head and the bytes after it.
async fn raw_handshake_offering(
    addr: SocketAddr,
    extensions: &[&str],
) -> (TcpStream, String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for line in extensions {
        request.push_str(&format!("Sec-WebSocket-Extensions: {line}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();

    let (head, rest) = read_upgrade_response(&mut stream).await;
    (stream, head.to_ascii_lowercase(), rest)
}

#[tokio::test]
async fn server_response_header_for_offers() {
    let addr = spawn_server(quick_config(), echo).await;
    let cases: [(&[&str], Option<&str>); 4] = [
        (
            &["permessage-deflate; client_max_window_bits"],
            Some("permessage-deflate"),
        ),
        (
            &[
                "permessage-deflate; server_max_window_bits=8",
                "permessage-deflate; server_no_context_takeover",
            ],
            Some("permessage-deflate; server_no_context_takeover"),
        ),
        (&["permessage-deflate; bogus=1"], None),
        (&["x-webkit-deflate-frame"], None),
    ];
    for (offers, expected) in cases {
        let (_stream, head, _) = raw_handshake_offering(addr, offers).await;
        let line = head
            .lines()
            .find_map(|line| line.strip_prefix("sec-websocket-extensions: "));
        assert_eq!(line, expected, "{offers:?}");
    }
}

#[tokio::test]
async fn raw_compressed_frames_against_server() {
    let addr = spawn_server(quick_config(), echo).await;
    let (mut stream, _, mut pending) = raw_handshake_offering(addr, &["permessage-deflate"]).await;

    // RFC 7692 section 7.2.3.1: "Hello" compressed, with RSV1 set.
    let mut hello = masked_frame(true, 0x1, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
    hello[0] |= 0x40;
    stream.write_all(&hello).await.unwrap();
    let frame = read_frame(&mut stream, &mut pending).await.unwrap();
    // The 5-byte echo is below the 64-byte minimum, so it goes back uncompressed.
    assert_eq!(frame.opcode, 0x1);
    assert_eq!(frame.payload, b"Hello");

    // RSV1 on a ping fails the connection with 1002.
    let mut ping = masked_frame(true, 0x9, b"x");
    ping[0] |= 0x40;
    stream.write_all(&ping).await.unwrap();
    let frame = read_frame(&mut stream, &mut pending).await.unwrap();
    assert_eq!(frame.close_code(), Some(1002));
}

#[tokio::test]
async fn zip_bomb_closes_with_1009() {
    let mut config = quick_config();
    config.ws.proto.limits = Limits {
        max_frame_size: 1 << 20,
        max_message_size: 1 << 20,
    };
    let addr = spawn_server(config, echo).await;
    let (mut stream, _, mut pending) = raw_handshake_offering(addr, &["permessage-deflate"]).await;

    // A client connection compresses 16 MiB of zeros to about 16 KiB.
    let params = DeflateParams::default();
    let mut encoder = Connection::new(
        Role::Client,
        ProtoConfig {
            deflate: Some(PerMessageDeflate::new(
                Role::Client,
                params,
                &DeflateConfig::default(),
            )),
            ..ProtoConfig::default()
        },
    );
    let mut bomb = BytesMut::new();
    encoder
        .encode(Message::binary(vec![0u8; 16 << 20]), &mut bomb)
        .unwrap();
    assert!(bomb.len() < 64 << 10, "{} bytes", bomb.len());
    stream.write_all(&bomb).await.unwrap();

    let frame = read_frame(&mut stream, &mut pending).await.unwrap();
    assert_eq!(frame.close_code(), Some(1009));
}

#[tokio::test]
async fn client_fails_invalid_extension_responses() {
    let cases = [
        "permessage-deflate; server_max_window_bits=99",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; mystery",
        "permessage-deflate, permessage-deflate",
        "permessage-deflate; client_max_window_bits=8",
    ];
    for value in cases {
        let result = connect_to_fake_server(value).await;
        assert!(
            matches!(
                result,
                Err(Error::Handshake(HandshakeError::InvalidExtension(_)))
            ),
            "{value}: {result:?}"
        );
    }
    let result = connect_to_fake_server("x-webkit-deflate-frame").await;
    assert!(
        matches!(
            result,
            Err(Error::Handshake(HandshakeError::UnexpectedExtension(_)))
        ),
        "{result:?}"
    );
}

/// Runs a fake server that responds to one upgrade with `Sec-WebSocket-Extensions: value`,
/// and returns the result of connecting to it with the default client settings.
async fn connect_to_fake_server(value: &str) -> Result<(), Error> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let value = value.to_owned();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut request = Vec::new();
        while !request.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            if stream.read(&mut byte).await.unwrap() == 0 {
                return;
            }
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
             Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Extensions: {value}\r\n\r\n",
            accept_key(key.as_bytes())
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.read(&mut [0u8; 16]).await;
    });
    let result = within(
        "connect",
        connect(&format!("ws://{addr}/"), ClientConfig::default()),
    )
    .await
    .map(|_| ());
    server.abort();
    result
}

//! Loopback servers and raw-socket peers shared by the integration tests.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use pylon_ws::server::{self, ServerConfig};
use pylon_ws::{Config, Message, WebSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Connections a test server accepts before its accept loop ends.
const MAX_CONNECTIONS: usize = 16;

/// Upper bound for any single wait in a test.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Sample key from RFC 6455 section 1.3 and its accept value.
pub(crate) const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
pub(crate) const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// Awaits `future`, failing the test if it takes longer than [`TEST_TIMEOUT`].
pub(crate) async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(TEST_TIMEOUT, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not finish within {TEST_TIMEOUT:?}"),
    }
}

/// Starts a hyper server on 127.0.0.1 that upgrades every request and runs `handler` on
/// each WebSocket. Returns the bound address.
pub(crate) async fn spawn_server<F, Fut>(config: ServerConfig, handler: F) -> SocketAddr
where
    F: Fn(WebSocket<TcpStream>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Arc::new(config);
    tokio::spawn(async move {
        for _ in 0..MAX_CONNECTIONS {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let config = config.clone();
            let handler = handler.clone();
            tokio::spawn(async move {
                let ws_config = config.ws.clone();
                let service = service_fn(move |mut req: Request<Incoming>| {
                    let config = config.clone();
                    let handler = handler.clone();
                    async move {
                        match server::upgrade(&mut req, &config) {
                            Ok((response, pending)) => {
                                tokio::spawn(async move {
                                    if let Ok(ws) = pending.finish().await {
                                        handler(ws).await;
                                    }
                                });
                                Ok::<_, Infallible>(response)
                            }
                            Err(err) => Ok(server::reject(&err)),
                        }
                    }
                });
                let _ = server::serve_connection(stream, service, &ws_config).await;
            });
        }
    });
    addr
}

/// Server handler that echoes text and binary messages until the connection ends.
pub(crate) async fn echo(mut ws: WebSocket<TcpStream>) {
    while let Some(Ok(message)) = ws.recv().await {
        if matches!(message, Message::Text(_) | Message::Binary(_))
            && ws.send(message).await.is_err()
        {
            break;
        }
    }
}

/// Server settings with short timeouts for tests.
pub(crate) fn quick_config() -> ServerConfig {
    ServerConfig {
        ws: Config {
            close_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(2),
            ..Config::default()
        },
        ..ServerConfig::default()
    }
}

/// Opens a TCP connection and completes the upgrade handshake by hand. Returns the stream
/// and any bytes that arrived after the response head.
pub(crate) async fn raw_handshake(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    raw_handshake_with(addr, &[]).await
}

/// Like [`raw_handshake`], and sends `after_head` in the same write as the request head.
pub(crate) async fn raw_handshake_with(
    addr: SocketAddr,
    after_head: &[u8],
) -> (TcpStream, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(after_head);
    stream.write_all(&request).await.unwrap();

    let (head, rest) = read_upgrade_response(&mut stream).await;
    assert!(head.contains(SAMPLE_ACCEPT), "missing accept key: {head}");
    (stream, rest)
}

/// Reads a `101` response head from `stream`. Returns the head and any bytes that arrived
/// after it.
pub(crate) async fn read_upgrade_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut received = Vec::new();
    let head_end = loop {
        let mut chunk = [0u8; 1024];
        let n = within("response head", stream.read(&mut chunk))
            .await
            .unwrap();
        assert!(n > 0, "server closed the connection during the handshake");
        received.extend_from_slice(&chunk[..n]);
        if let Some(pos) = received.windows(4).position(|window| window == b"\r\n\r\n") {
            break pos + 4;
        }
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "unexpected response: {head}"
    );
    let rest = received.split_off(head_end);
    (head, rest)
}

/// Encodes one client frame, masked with a fixed key.
pub(crate) fn masked_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = frame_header(fin, opcode, true, payload.len() as u64);
    frame.extend_from_slice(&key);
    frame.extend(
        payload
            .iter()
            .enumerate()
            .map(|(i, byte)| byte ^ key[i % 4]),
    );
    frame
}

/// Encodes one frame without a mask, which a server must reject from a client.
pub(crate) fn unmasked_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = frame_header(fin, opcode, false, payload.len() as u64);
    frame.extend_from_slice(payload);
    frame
}

/// Encodes the first two bytes and the extended length of a frame header.
pub(crate) fn frame_header(fin: bool, opcode: u8, masked: bool, len: u64) -> Vec<u8> {
    let mut header = vec![(u8::from(fin) << 7) | opcode];
    let mask_bit = u8::from(masked) << 7;
    if len < 126 {
        header.push(mask_bit | len as u8);
    } else if len <= u64::from(u16::MAX) {
        header.push(mask_bit | 126);
        header.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        header.push(mask_bit | 127);
        header.extend_from_slice(&len.to_be_bytes());
    }
    header
}

/// One unmasked frame read from a server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RawFrame {
    pub(crate) fin: bool,
    pub(crate) opcode: u8,
    pub(crate) payload: Vec<u8>,
}

impl RawFrame {
    /// Returns the status code of a close frame.
    pub(crate) fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, 0x8, "not a close frame: {self:?}");
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Reads one server frame, starting with the bytes in `pending`. Returns `None` at end of
/// stream.
pub(crate) async fn read_frame(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<RawFrame> {
    read_frame_for(stream, pending, TEST_TIMEOUT).await
}

/// Like [`read_frame`], waiting at most `limit` for each read.
pub(crate) async fn read_frame_for(
    stream: &mut TcpStream,
    pending: &mut Vec<u8>,
    limit: Duration,
) -> Option<RawFrame> {
    loop {
        if let Some((frame, used)) = parse_frame(pending) {
            pending.drain(..used);
            return Some(frame);
        }
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout(limit, stream.read(&mut chunk)).await;
        // A read error such as a reset counts as the end of the stream.
        let n: usize = read
            .expect("no server frame within the time limit")
            .unwrap_or_default();
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&chunk[..n]);
    }
}

fn parse_frame(buf: &[u8]) -> Option<(RawFrame, usize)> {
    if buf.len() < 2 {
        return None;
    }
    assert_eq!(buf[1] & 0x80, 0, "server frame is masked");
    let (len, header_len) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into().unwrap()), 10),
        126 | 127 => return None,
        len => (u64::from(len), 2),
    };
    let end = header_len + len as usize;
    if buf.len() < end {
        return None;
    }
    let frame = RawFrame {
        fin: buf[0] & 0x80 != 0,
        opcode: buf[0] & 0x0f,
        payload: buf[header_len..end].to_vec(),
    };
    Some((frame, end))
}

/// Reads until the server closes the connection and returns the bytes it sent before.
pub(crate) async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    let _ = within("end of stream", stream.read_to_end(&mut rest)).await;
    rest
}

//! End-to-end conformance of `pylon_ws::client` with RFC 6455 and RFC 7692: a scripted
//! server on 127.0.0.1 completes the handshake by hand and then sends exact bytes to a
//! client connection. Case ids are prefixed with `c` and otherwise follow the sections of
//! `conformance_server.rs` (2 ping, 3 reserved bits, 4 opcodes, 5 fragmentation,
//! 6 UTF-8, 7 close, 9 limits, 10 auto-fragmentation, 12 and 13 permessage-deflate).
//!
//! Every section runs over five transports, as the tests `SECTION::h1`, `SECTION::h1_tls`,
//! `SECTION::h2`, `SECTION::h2_tls` and `SECTION::h3`. Over an HTTP/1.1 upgrade, on TCP or
//! TLS, the script writes the `101` head itself. Over an HTTP/2 extended CONNECT stream
//! (RFC 8441), with prior knowledge or over TLS with ALPN `h2`, hyper's HTTP/2 server
//! responds to the CONNECT with `200` and hands the stream to the script. Over an HTTP/3
//! extended CONNECT stream (RFC 9220), Pylon's own HTTP/3 server responds with `200`
//! through `H3Request::respond` and hands the stream to the script. Over HTTP/2 and HTTP/3, ending
//! the stream takes the place of closing TCP.

mod conformance;

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use conformance::{
    BINARY, CLOSE, CONTINUATION, Deflater, FIN, Frame, Inflater, PING, PONG, RSV1, RSV2, RSV3,
    STEP_TIMEOUT, TEXT, close_payload, deflate_params, expect_frame, head_text, header_value,
    masked, repetitive_text, unmasked, write_all,
};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pylon_ws::client::{ClientConfig, HttpVersion, connect, connect_any};
use pylon_ws::h3::{H3Connection, H3Request};
use pylon_ws::tls::{ClientTls, SelfSigned};
use pylon_ws::{CloseCode, DeflateConfig, Error, Message, Sender, WebSocket};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Transport of the connection between the client and the scripted server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    /// HTTP/1.1 upgrade over TCP.
    Http1,
    /// HTTP/1.1 upgrade over TLS, with ALPN `http/1.1`.
    Http1Tls,
    /// HTTP/2 extended CONNECT over TCP with prior knowledge.
    Http2,
    /// HTTP/2 extended CONNECT over TLS, with ALPN `h2`.
    Http2Tls,
    /// HTTP/3 extended CONNECT over QUIC.
    Http3,
}

tokio::task_local! {
    /// Transport of the test that runs in this task, set by the test wrappers.
    static TRANSPORT: Transport;
}

fn transport() -> Transport {
    TRANSPORT
        .try_with(|transport| *transport)
        .unwrap_or(Transport::Http1)
}

/// Declares, for each section function, a test per transport in a module named after the
/// section.
macro_rules! on_every_transport {
    ($($section:ident),* $(,)?) => {
        $(
            mod $section {
                use super::{TRANSPORT, Transport};

                #[tokio::test]
                async fn h1() {
                    TRANSPORT.scope(Transport::Http1, super::$section()).await;
                }

                #[tokio::test]
                async fn h1_tls() {
                    TRANSPORT.scope(Transport::Http1Tls, super::$section()).await;
                }

                #[tokio::test]
                async fn h2() {
                    TRANSPORT.scope(Transport::Http2, super::$section()).await;
                }

                #[tokio::test]
                async fn h2_tls() {
                    TRANSPORT.scope(Transport::Http2Tls, super::$section()).await;
                }

                #[tokio::test]
                async fn h3() {
                    TRANSPORT.scope(Transport::Http3, super::$section()).await;
                }
            }
        )*
    };
}

on_every_transport!(
    client_rejects_masked_server_frames,
    client_ping_pong,
    client_rejects_reserved_bits_and_opcodes,
    client_fragmentation,
    client_rejects_invalid_utf8,
    client_close_handshake,
    client_rejects_oversized_messages,
    case_10_client_auto_fragmentation,
    client_masks_every_frame_with_a_fresh_key,
    case_12_client_compression,
    case_13_client_rejects_bad_compression_responses,
);

/// The byte stream of one scripted connection: TCP, or an HTTP/2 or HTTP/3 stream.
trait ScriptStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> ScriptStream for S {}

/// The server side of one scripted connection.
struct Script {
    stream: Box<dyn ScriptStream>,
    case: String,
    /// The client's request head. Over HTTP/2 and HTTP/3 it is rebuilt from the request as
    /// `CONNECT <path> HTTP/2` (or `HTTP/3`) and one `name: value` line per header.
    request: String,
}

impl Script {
    async fn send(&mut self, bytes: &[u8]) {
        write_all(&mut self.stream, bytes, &self.case).await;
    }

    /// Reads one client frame and checks that it is masked.
    async fn frame(&mut self) -> Frame {
        let frame = expect_frame(&mut self.stream, &self.case).await;
        let case = &self.case;
        assert!(
            frame.mask.is_some(),
            "{case}: the client sent an unmasked frame"
        );
        frame
    }

    /// Expects the client's close frame with `code`.
    async fn expect_close(&mut self, code: u16) -> Frame {
        let frame = self.frame().await;
        let case = &self.case;
        assert_eq!(
            frame.opcode, CLOSE,
            "{case}: expected a close frame, got {frame:02x?}"
        );
        assert_eq!(
            frame.close_code(),
            Some(code),
            "{case}: wrong close code from the client"
        );
        frame
    }

    /// Asserts that the client keeps TCP open for `wait`. RFC 6455 section 7.1.1 has the
    /// server close TCP first, so a client waits for it after the close handshake.
    async fn expect_no_tcp_close(&mut self, wait: Duration) {
        let mut buf = [0u8; 64];
        let case = &self.case;
        match tokio::time::timeout(wait, self.stream.read(&mut buf)).await {
            Err(_) => {}
            Ok(Ok(0)) => panic!("{case}: the client closed TCP before the server did"),
            Ok(Ok(n)) => panic!("{case}: the client sent {n} more bytes after its close frame"),
            Ok(Err(error)) => panic!("{case}: the client reset TCP: {error}"),
        }
    }
}

/// Everything that `recv` returned on the client, in order.
type Events = mpsc::UnboundedReceiver<Result<Message, Error>>;

/// A client connection driven by its own task, which polls `recv` and forwards every
/// result.
struct Client {
    events: Events,
    sender: Sender,
    compression: Option<String>,
    task: JoinHandle<()>,
}

impl Client {
    /// Returns the next thing `recv` returned, or `None` once it returned `None`.
    async fn next(&mut self, case: &str) -> Option<Result<Message, Error>> {
        tokio::time::timeout(STEP_TIMEOUT, self.events.recv())
            .await
            .unwrap_or_else(|_| {
                panic!("{case}: the client reported nothing within {STEP_TIMEOUT:?}")
            })
    }

    async fn expect_message(&mut self, case: &str) -> Message {
        match self.next(case).await {
            Some(Ok(message)) => message,
            Some(Err(error)) => panic!("{case}: the client failed: {error}"),
            None => panic!("{case}: the client connection ended"),
        }
    }

    /// Expects `recv` to fail with a protocol error whose close code is `code`.
    async fn expect_protocol_error(&mut self, case: &str, code: u16) {
        loop {
            match self.next(case).await {
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(message)) => panic!("{case}: expected a protocol error, got {message:?}"),
                Some(Err(Error::Protocol(error))) => {
                    assert_eq!(
                        error.close_code(),
                        CloseCode(code),
                        "{case}: wrong close code for {error}"
                    );
                    return;
                }
                Some(Err(error)) => panic!("{case}: expected a protocol error, got {error}"),
                None => panic!("{case}: the connection ended without a protocol error"),
            }
        }
    }

    fn send(&self, message: Message, case: &str) {
        self.sender
            .try_send(message)
            .unwrap_or_else(|error| panic!("{case}: queueing a message failed: {error}"));
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Builds the scripted server's 101 response to `request`, with `extensions` if given.
fn switching_protocols(request: &str, extensions: Option<&str>) -> String {
    let key = header_value(request, "sec-websocket-key").expect("Sec-WebSocket-Key in the request");
    let accept = pylon_proto::handshake::accept_key(key.as_bytes());
    let extension_line = extensions
        .map(|value| format!("Sec-WebSocket-Extensions: {value}\r\n"))
        .unwrap_or_default();
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n{extension_line}\r\n"
    )
}

/// Accepts one connection and reads its request head, over TLS with ALPN `http/1.1` if
/// the running test is `h1_tls`.
async fn accept(listener: &TcpListener, case: &str) -> (Box<dyn ScriptStream>, String) {
    let (tcp, _) = tokio::time::timeout(STEP_TIMEOUT, listener.accept())
        .await
        .unwrap_or_else(|_| panic!("{case}: the client did not connect"))
        .expect("accept");
    let mut stream: Box<dyn ScriptStream> = if transport() == Transport::Http1Tls {
        let acceptor = test_cert().acceptor().expect("TLS acceptor");
        let tls = tokio::time::timeout(STEP_TIMEOUT, acceptor.accept(tcp))
            .await
            .unwrap_or_else(|_| panic!("{case}: TLS handshake timed out"))
            .unwrap_or_else(|error| panic!("{case}: TLS handshake failed: {error}"));
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(&b"http/1.1"[..]),
            "{case}: the client did not select ALPN http/1.1"
        );
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(STEP_TIMEOUT, stream.read(&mut byte))
            .await
            .unwrap_or_else(|_| panic!("{case}: no request head within {STEP_TIMEOUT:?}"))
            .expect("read the request head");
        assert_eq!(read, 1, "{case}: the client closed during the handshake");
        head.push(byte[0]);
    }
    (stream, String::from_utf8(head).expect("ASCII request head"))
}

/// Returns the certificate of the scripted TLS and QUIC servers, for `localhost`.
fn test_cert() -> &'static SelfSigned {
    static CERT: OnceLock<SelfSigned> = OnceLock::new();
    CERT.get_or_init(|| {
        pylon_ws::tls::self_signed_localhost().expect("generate a certificate for localhost")
    })
}

/// The listening side of a scripted server: TCP, or a QUIC endpoint for HTTP/3.
enum Listener {
    Tcp(TcpListener),
    Quic(quinn::Endpoint),
}

/// Starts listening on 127.0.0.1 for the transport of the running test, and returns the
/// listener and the URL that the client dials.
async fn listen() -> (Listener, String) {
    let transport = transport();
    if transport == Transport::Http3 {
        let cert = test_cert();
        let config =
            pylon_ws::h3::server_config(vec![cert.cert_der.clone()], cert.key_der.clone_key())
                .expect("QUIC server settings");
        let addr = "127.0.0.1:0".parse().expect("valid address");
        let endpoint = pylon_ws::h3::server_endpoint(addr, config).expect("bind UDP");
        let port = endpoint.local_addr().expect("local address").port();
        return (
            Listener::Quic(endpoint),
            format!("wss://localhost:{port}/conformance"),
        );
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    let url = match transport {
        Transport::Http1Tls | Transport::Http2Tls => {
            format!("wss://localhost:{}/conformance", addr.port())
        }
        _ => format!("ws://{addr}/conformance"),
    };
    (Listener::Tcp(listener), url)
}

/// Sets the HTTP version and TLS trust of `config` for `transport`.
fn client_config(transport: Transport, config: ClientConfig) -> ClientConfig {
    let trust_test_cert = || ClientTls {
        ca_certs: vec![test_cert().cert_der.clone()],
        webpki_roots: false,
        ..ClientTls::default()
    };
    match transport {
        Transport::Http1 => config,
        Transport::Http1Tls => ClientConfig {
            tls: trust_test_cert(),
            ..config
        },
        Transport::Http2 => ClientConfig {
            http_version: HttpVersion::Http2,
            ..config
        },
        Transport::Http2Tls => ClientConfig {
            http_version: HttpVersion::Http2,
            tls: trust_test_cert(),
            ..config
        },
        Transport::Http3 => ClientConfig {
            http_version: HttpVersion::Http3,
            tls: trust_test_cert(),
            ..config
        },
    }
}

/// Opens a client connection with `config` to a scripted server that responds with
/// `extensions`, over the transport of the running test, and starts the task that drives
/// the client.
async fn open(case: &str, config: ClientConfig, extensions: Option<&str>) -> (Script, Client) {
    let (listener, url) = listen().await;
    let (events_tx, events) = mpsc::unbounded_channel();
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let transport = transport();
    let config = client_config(transport, config);
    let task = tokio::spawn(async move {
        if transport == Transport::Http1 {
            match connect(&url, config).await {
                Ok((ws, _)) => drive(ws, ready_tx, events_tx).await,
                Err(error) => {
                    let _ = events_tx.send(Err(error));
                }
            }
            return;
        }
        match connect_any(&url, config).await {
            Ok((ws, _)) => drive(ws, ready_tx, events_tx).await,
            Err(error) => {
                let _ = events_tx.send(Err(error));
            }
        }
    });
    let (stream, request) = match (transport, &listener) {
        (Transport::Http1 | Transport::Http1Tls, Listener::Tcp(listener)) => {
            let (mut stream, request) = accept(listener, case).await;
            write_all(
                &mut stream,
                switching_protocols(&request, extensions).as_bytes(),
                case,
            )
            .await;
            (stream, request)
        }
        (Transport::Http2 | Transport::Http2Tls, Listener::Tcp(listener)) => {
            accept_http2(listener, case, extensions).await
        }
        (Transport::Http3, Listener::Quic(endpoint)) => {
            accept_http3(endpoint, case, extensions).await
        }
        _ => panic!("{case}: listen() returned a listener of another transport"),
    };
    let (sender, compression) = tokio::time::timeout(STEP_TIMEOUT, ready)
        .await
        .unwrap_or_else(|_| panic!("{case}: the client did not finish the handshake"))
        .unwrap_or_else(|_| panic!("{case}: the client rejected the handshake response"));
    let script = Script {
        stream,
        case: case.to_owned(),
        request,
    };
    let client = Client {
        events,
        sender,
        compression,
        task,
    };
    (script, client)
}

/// Reports the client's sender and compression once, then forwards everything that
/// `recv` returns.
async fn drive<S>(
    mut ws: WebSocket<S>,
    ready: tokio::sync::oneshot::Sender<(Sender, Option<String>)>,
    events: mpsc::UnboundedSender<Result<Message, Error>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let compression = ws.compression().map(|deflate| deflate.params.to_string());
    let _ = ready.send((ws.sender(), compression));
    while let Some(item) = ws.recv().await {
        if events.send(item).is_err() {
            return;
        }
    }
}

/// Accepts one connection, serves HTTP/2 on it with extended CONNECT enabled, over TLS
/// with ALPN `h2` if the running test is `h2_tls`, and responds to the first request with
/// `200` and `extensions`. Returns the request head and the pending stream.
async fn accept_http2_request(
    listener: &TcpListener,
    case: &str,
    extensions: Option<&str>,
) -> (String, hyper::upgrade::OnUpgrade) {
    let (tcp, _) = tokio::time::timeout(STEP_TIMEOUT, listener.accept())
        .await
        .unwrap_or_else(|_| panic!("{case}: the client did not connect"))
        .expect("accept");
    let io: Box<dyn ScriptStream> = if transport() == Transport::Http2Tls {
        let acceptor = test_cert().acceptor().expect("TLS acceptor");
        let tls = tokio::time::timeout(STEP_TIMEOUT, acceptor.accept(tcp))
            .await
            .unwrap_or_else(|_| panic!("{case}: TLS handshake timed out"))
            .unwrap_or_else(|error| panic!("{case}: TLS handshake failed: {error}"));
        assert_eq!(
            tls.get_ref().1.alpn_protocol(),
            Some(&b"h2"[..]),
            "{case}: the client did not select ALPN h2"
        );
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    let (request_tx, mut request_rx) = mpsc::unbounded_channel();
    let extensions = extensions.map(str::to_owned);
    let service = service_fn(move |mut request: http::Request<Incoming>| {
        let request_line = format!("{} {} HTTP/2", request.method(), request.uri().path());
        let head = head_text(&request_line, request.headers());
        let protocol = request
            .extensions()
            .get::<hyper::ext::Protocol>()
            .map(|protocol| protocol.as_str().to_owned());
        let on_upgrade = hyper::upgrade::on(&mut request);
        let _ = request_tx.send((head, protocol, on_upgrade));
        let mut response = http::Response::new(Empty::<Bytes>::new());
        if let Some(value) = &extensions {
            response.headers_mut().insert(
                "sec-websocket-extensions",
                value.parse().expect("valid extension header"),
            );
        }
        async move { Ok::<_, Infallible>(response) }
    });
    tokio::spawn(async move {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder.enable_connect_protocol();
        let _ = builder.serve_connection(TokioIo::new(io), service).await;
    });
    let (head, protocol, on_upgrade) = tokio::time::timeout(STEP_TIMEOUT, request_rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{case}: no CONNECT request within {STEP_TIMEOUT:?}"))
        .expect("the HTTP/2 server task ended");
    assert!(head.starts_with("CONNECT "), "{case}: {head}");
    assert_eq!(protocol.as_deref(), Some("websocket"), "{case}: {head}");
    (head, on_upgrade)
}

/// Like [`accept_http2_request`], and waits for hyper to hand the stream over.
async fn accept_http2(
    listener: &TcpListener,
    case: &str,
    extensions: Option<&str>,
) -> (Box<dyn ScriptStream>, String) {
    let (head, on_upgrade) = accept_http2_request(listener, case, extensions).await;
    let upgraded = tokio::time::timeout(STEP_TIMEOUT, on_upgrade)
        .await
        .unwrap_or_else(|_| panic!("{case}: the CONNECT stream was not handed over"))
        .unwrap_or_else(|error| panic!("{case}: the CONNECT stream failed: {error}"));
    (Box::new(TokioIo::new(upgraded)), head)
}

/// Accepts one QUIC connection, starts HTTP/3 on it, and returns the head of its first
/// request, rebuilt as `CONNECT <path> HTTP/3` and one `name: value` line per header, and
/// the request. A task keeps the connection open, and rejects any later request with 404,
/// until the client closes it.
async fn accept_http3_request(endpoint: &quinn::Endpoint, case: &str) -> (String, H3Request) {
    let incoming = tokio::time::timeout(STEP_TIMEOUT, endpoint.accept())
        .await
        .unwrap_or_else(|_| panic!("{case}: the client did not connect over QUIC"))
        .expect("the QUIC endpoint is open");
    let mut connection = H3Connection::accept(incoming, STEP_TIMEOUT)
        .await
        .unwrap_or_else(|error| panic!("{case}: HTTP/3 connection setup failed: {error}"));
    let request = tokio::time::timeout(STEP_TIMEOUT, connection.next_request())
        .await
        .unwrap_or_else(|_| panic!("{case}: no CONNECT request within {STEP_TIMEOUT:?}"))
        .unwrap_or_else(|| panic!("{case}: the connection closed before a valid CONNECT"));
    tokio::spawn(async move {
        while let Some(extra) = connection.next_request().await {
            extra
                .reject(
                    http::StatusCode::NOT_FOUND,
                    "the scripted server takes one request per connection",
                )
                .await;
        }
    });
    let inner = request.request();
    let request_line = format!("{} {} HTTP/3", inner.method(), inner.uri().path());
    let head = head_text(&request_line, inner.headers());
    let protocol = inner
        .extensions()
        .get::<pylon_h3::Protocol>()
        .map(|protocol| protocol.0.clone());
    assert!(head.starts_with("CONNECT "), "{case}: {head}");
    assert_eq!(protocol.as_deref(), Some("websocket"), "{case}: {head}");
    (head, request)
}

/// Responds to the client's first HTTP/3 request with `200` and `extensions`, and returns
/// the tunnel and the request head.
async fn accept_http3(
    endpoint: &quinn::Endpoint,
    case: &str,
    extensions: Option<&str>,
) -> (Box<dyn ScriptStream>, String) {
    let (head, request) = accept_http3_request(endpoint, case).await;
    let tunnel = request
        .respond(&connect_response(extensions))
        .await
        .unwrap_or_else(|error| panic!("{case}: sending the HTTP/3 response failed: {error}"));
    (Box::new(tunnel), head)
}

/// Builds the `200` response to an extended CONNECT, with `extensions` if given.
fn connect_response(extensions: Option<&str>) -> http::Response<()> {
    let mut response = http::Response::new(());
    if let Some(value) = extensions {
        response.headers_mut().insert(
            "sec-websocket-extensions",
            value.parse().expect("valid extension header"),
        );
    }
    response
}

fn no_compression() -> ClientConfig {
    ClientConfig {
        compression: None,
        ..ClientConfig::default()
    }
}

/// Sends `bytes` to a fresh client and expects it to fail with `code`. The client must send
/// a masked close frame with that code. The scripted server then closes TCP, as a server
/// does after a close frame, and `recv` must report the error.
async fn fault_case(
    case: &str,
    config: ClientConfig,
    extensions: Option<&str>,
    bytes: &[u8],
    code: u16,
) {
    let (mut script, mut client) = open(case, config, extensions).await;
    script.send(bytes).await;
    script.expect_close(code).await;
    drop(script);
    client.expect_protocol_error(case, code).await;
}

async fn client_rejects_masked_server_frames() {
    for (case, bytes) in [
        ("c1.1 (masked text)", masked(FIN | TEXT, b"Hello")),
        ("c1.2 (masked ping)", masked(FIN | PING, b"")),
        (
            "c1.3 (masked close)",
            masked(FIN | CLOSE, &close_payload(1000, b"")),
        ),
    ] {
        fault_case(case, no_compression(), None, &bytes, 1002).await;
    }
}

async fn client_ping_pong() {
    let (mut script, mut client) =
        open("c2.1 (pings of every length)", no_compression(), None).await;
    for len in [0usize, 1, 13, 125] {
        let payload = repetitive_text(len);
        script.send(&unmasked(FIN | PING, &payload)).await;
        let pong = script.frame().await;
        assert_eq!(
            pong.opcode, PONG,
            "c2.1: expected a pong to a {len}-byte ping"
        );
        assert_eq!(pong.payload, payload, "c2.1: pong payload differs");
        let event = client.expect_message("c2.1").await;
        assert_eq!(
            event,
            Message::Ping(Bytes::from(payload)),
            "c2.1: recv result"
        );
    }

    // Ten pings in one write get ten pongs in order.
    let pings: Vec<u8> = (0..10u8).flat_map(|i| unmasked(FIN | PING, &[i])).collect();
    script.send(&pings).await;
    for i in 0..10u8 {
        let pong = script.frame().await;
        assert_eq!(
            (pong.opcode, pong.payload),
            (PONG, vec![i]),
            "c2.10: pong {i}"
        );
    }

    for i in 0..10u8 {
        let event = client.expect_message("c2.10").await;
        assert_eq!(
            event,
            Message::Ping(Bytes::from(vec![i])),
            "c2.10: recv result {i}"
        );
    }

    // An unsolicited pong is reported and not answered.
    script.send(&unmasked(FIN | PONG, b"unsolicited")).await;
    let event = client.expect_message("c2.7").await;
    assert_eq!(
        event,
        Message::Pong(Bytes::from_static(b"unsolicited")),
        "c2.7"
    );

    fault_case(
        "c2.5 (ping of 126 bytes)",
        no_compression(),
        None,
        &unmasked(FIN | PING, &[0x55; 126]),
        1002,
    )
    .await;
}

async fn client_rejects_reserved_bits_and_opcodes() {
    let faults: Vec<(String, Vec<u8>)> = vec![
        (
            "c3.1 (RSV1 without the extension)".into(),
            unmasked(FIN | RSV1 | TEXT, b"Hello"),
        ),
        ("c3.2 (RSV2)".into(), unmasked(FIN | RSV2 | TEXT, b"Hello")),
        (
            "c3.3 (RSV3 on a ping)".into(),
            unmasked(FIN | RSV3 | PING, b""),
        ),
    ];
    let opcodes = [3u8, 4, 5, 6, 7, 11, 12, 13, 14, 15]
        .into_iter()
        .map(|opcode| (format!("c4 (opcode {opcode})"), unmasked(FIN | opcode, b"")));
    for (case, bytes) in faults.into_iter().chain(opcodes) {
        fault_case(&case, no_compression(), None, &bytes, 1002).await;
    }
}

async fn client_fragmentation() {
    let (mut script, mut client) =
        open("c5.1 (fragments with pings)", no_compression(), None).await;
    let frames = [
        unmasked(TEXT, "fragment1 κό".as_bytes()),
        unmasked(FIN | PING, b"between"),
        unmasked(CONTINUATION, "σμε".as_bytes()),
        unmasked(FIN | CONTINUATION, b" fragment3"),
        unmasked(BINARY, &[1, 2]),
        unmasked(FIN | CONTINUATION, &[3]),
    ]
    .concat();
    script.send(&frames).await;
    let pong = script.frame().await;
    assert_eq!(
        (pong.opcode, pong.payload.as_slice()),
        (PONG, &b"between"[..]),
        "c5.1"
    );
    assert_eq!(
        client.expect_message("c5.1").await,
        Message::Ping(Bytes::from_static(b"between")),
        "c5.1: the ping is reported first"
    );
    assert_eq!(
        client.expect_message("c5.1").await,
        Message::text("fragment1 κόσμε fragment3"),
        "c5.1: text reassembled"
    );
    assert_eq!(
        client.expect_message("c5.1").await,
        Message::binary(vec![1u8, 2, 3]),
        "c5.1: binary reassembled"
    );

    let faults: [(&str, Vec<u8>); 4] = [
        (
            "c5.2 (fragmented ping)",
            [unmasked(PING, b"a"), unmasked(FIN | CONTINUATION, b"b")].concat(),
        ),
        (
            "c5.9 (continuation without a start)",
            unmasked(FIN | CONTINUATION, b"x"),
        ),
        (
            "c5.18 (new message inside a fragmented one)",
            [unmasked(TEXT, b"a"), unmasked(FIN | TEXT, b"b")].concat(),
        ),
        (
            "c5.2b (fragmented close)",
            [
                unmasked(CLOSE, &[0x03]),
                unmasked(FIN | CONTINUATION, &[0xe8]),
            ]
            .concat(),
        ),
    ];
    for (case, bytes) in faults {
        fault_case(case, no_compression(), None, &bytes, 1002).await;
    }
}

async fn client_rejects_invalid_utf8() {
    let split = [
        unmasked(TEXT, &[b'a', 0xce]),
        unmasked(FIN | CONTINUATION, &[0x28]),
    ]
    .concat();
    let faults: [(&str, Vec<u8>); 4] = [
        ("c6.3 (byte 0xFF)", unmasked(FIN | TEXT, &[b'a', 0xff])),
        (
            "c6.11 (surrogate)",
            unmasked(FIN | TEXT, &[0xed, 0xa0, 0x80]),
        ),
        (
            "c6.13 (truncated at the end)",
            unmasked(FIN | TEXT, &[b'a', 0xe2, 0x82]),
        ),
        ("c6.3b (invalid across fragments)", split),
    ];
    for (case, bytes) in faults {
        fault_case(case, no_compression(), None, &bytes, 1007).await;
    }
    // Fail fast: the first fragment is invalid, the last never comes.
    fault_case(
        "c6.4 (invalid in an unfinished message)",
        no_compression(),
        None,
        &unmasked(TEXT, &[0xf4, 0x90, 0x80, 0x80]),
        1007,
    )
    .await;
    fault_case(
        "c7.5.1 (close reason not UTF-8)",
        no_compression(),
        None,
        &unmasked(FIN | CLOSE, &close_payload(1000, &[0xff])),
        1007,
    )
    .await;
}

async fn client_close_handshake() {
    for (case, code) in [
        ("c7.1 (server closes with 1001)", 1001u16),
        ("c7.2 (server closes with 4000)", 4000),
    ] {
        let (mut script, mut client) = open(case, no_compression(), None).await;
        script
            .send(&unmasked(FIN | CLOSE, &close_payload(code, b"bye")))
            .await;
        match client.expect_message(case).await {
            Message::Close(Some(frame)) => {
                assert_eq!(frame.code, CloseCode(code), "{case}: code reported by recv");
                assert_eq!(
                    frame.reason.as_str(),
                    "bye",
                    "{case}: reason reported by recv"
                );
            }
            other => panic!("{case}: expected the close frame, got {other:?}"),
        }
        let reply = script.expect_close(code).await;
        assert!(reply.fin, "{case}: fragmented close reply");
        // The client waits for the server to close TCP.
        script.expect_no_tcp_close(Duration::from_millis(300)).await;
        drop(script);
        let end = client.next(case).await;
        assert!(
            end.is_none(),
            "{case}: expected recv to end after TCP closed, got {end:?}"
        );
    }

    let (mut script, mut client) = open("c7.3 (empty close payload)", no_compression(), None).await;
    script.send(&unmasked(FIN | CLOSE, b"")).await;
    assert_eq!(
        client.expect_message("c7.3").await,
        Message::Close(None),
        "c7.3"
    );
    let reply = script.frame().await;
    assert_eq!(reply.opcode, CLOSE, "c7.3: expected a close reply");
    assert!(
        matches!(reply.close_code(), None | Some(1000)),
        "c7.3: empty close answered with {:?}",
        reply.close_code()
    );

    // Data after the server's close frame is ignored.
    let (mut script, mut client) = open("c7.4 (text after close)", no_compression(), None).await;
    let bytes = [
        unmasked(FIN | CLOSE, &close_payload(1000, b"")),
        unmasked(FIN | TEXT, b"late"),
    ]
    .concat();
    script.send(&bytes).await;
    assert_eq!(
        client.expect_message("c7.4").await,
        Message::close(CloseCode::NORMAL, ""),
        "c7.4"
    );
    script.expect_close(1000).await;
    drop(script);
    let end = client.next("c7.4").await;
    assert!(end.is_none(), "c7.4: expected recv to end, got {end:?}");

    let faults: [(&str, Vec<u8>); 4] = [
        ("c7.3.2 (1-byte close payload)", vec![0x03]),
        ("c7.9 (close code 1005)", close_payload(1005, b"")),
        ("c7.9b (close code 999)", close_payload(999, b"")),
        (
            "c7.3.6 (126-byte close payload)",
            close_payload(1000, &[b'*'; 124]),
        ),
    ];
    for (case, payload) in faults {
        fault_case(
            case,
            no_compression(),
            None,
            &unmasked(FIN | CLOSE, &payload),
            1002,
        )
        .await;
    }

    // A close started by the client: it waits for the server's close and its TCP close.
    let (mut script, mut client) = open("c7.6 (client closes)", no_compression(), None).await;
    client.sender.close(CloseCode::NORMAL, "done");
    let frame = script.expect_close(1000).await;
    assert_eq!(&frame.payload[2..], b"done", "c7.6: reason");
    script.expect_no_tcp_close(Duration::from_millis(300)).await;
    script
        .send(&unmasked(FIN | CLOSE, &close_payload(1000, b"")))
        .await;
    let reported = client.expect_message("c7.6").await;
    assert_eq!(
        reported,
        Message::close(CloseCode::NORMAL, ""),
        "c7.6: close reply reported"
    );
    drop(script);
    let end = client.next("c7.6").await;
    assert!(end.is_none(), "c7.6: expected recv to end, got {end:?}");
}

async fn client_rejects_oversized_messages() {
    let mut config = no_compression();
    config.ws.proto.limits.max_message_size = 1024;
    config.ws.proto.limits.max_frame_size = 1024;
    let mut header_only = vec![FIN | BINARY, 127];
    header_only.extend_from_slice(&(1u64 << 40).to_be_bytes());
    let faults: [(&str, Vec<u8>); 3] = [
        (
            "c9.1 (frame over the limit)",
            unmasked(FIN | BINARY, &[0; 1025]),
        ),
        ("c9.2 (declared length of 1 TiB)", header_only),
        (
            "c9.3 (fragments over the limit)",
            [
                unmasked(TEXT, &[b'a'; 600]),
                unmasked(FIN | CONTINUATION, &[b'a'; 600]),
            ]
            .concat(),
        ),
    ];
    for (case, bytes) in faults {
        fault_case(case, config.clone(), None, &bytes, 1009).await;
    }

    // At the limit the message is delivered.
    let (mut script, mut client) = open("c9.4 (message at the limit)", config, None).await;
    script.send(&unmasked(FIN | BINARY, &[7; 1024])).await;
    assert_eq!(
        client.expect_message("c9.4").await,
        Message::binary(vec![7u8; 1024]),
        "c9.4"
    );
}

/// Reads one message from the client, assembling fragments, and checks the fragment
/// rules. Returns the RSV1 bit of the first frame and the payload.
async fn read_client_message(
    script: &mut Script,
    opcode: u8,
    max_frame: Option<usize>,
) -> (bool, Vec<u8>, usize) {
    let first = script.frame().await;
    let case = script.case.clone();
    assert_eq!(first.opcode, opcode, "{case}: first frame opcode");
    let compressed = first.rsv1();
    let mut payload = first.payload;
    let mut fin = first.fin;
    let mut frames = 1;
    while !fin {
        let next = script.frame().await;
        assert_eq!(
            next.opcode, CONTINUATION,
            "{case}: frame {frames} is not a continuation"
        );
        assert_eq!(next.rsv, 0, "{case}: RSV bits on continuation {frames}");
        if let Some(max) = max_frame {
            assert!(
                next.payload.len() <= max,
                "{case}: frame of {} bytes",
                next.payload.len()
            );
        }
        payload.extend_from_slice(&next.payload);
        fin = next.fin;
        frames += 1;
    }
    (compressed, payload, frames)
}

async fn case_10_client_auto_fragmentation() {
    let text = "ab🚀".repeat(65536 / 6 + 1);
    for frame_size in [1usize, 125, 1000, 4096] {
        let case = format!("10.1 (64 KiB text in frames of {frame_size} bytes)");
        let mut config = no_compression();
        config.ws.proto.max_send_frame_size = Some(frame_size);
        let (mut script, client) = open(&case, config, None).await;
        let message = if frame_size == 1 {
            text[..3996].to_owned()
        } else {
            text.clone()
        };
        client.send(Message::text(message.clone()), &case);
        let (compressed, payload, frames) =
            read_client_message(&mut script, TEXT, Some(frame_size)).await;
        assert!(!compressed, "{case}: RSV1 without the extension");
        assert_eq!(
            frames,
            message.len().div_ceil(frame_size),
            "{case}: number of frames"
        );
        assert!(
            payload == message.as_bytes(),
            "{case}: reassembled message differs"
        );
    }

    // With compression, fragmentation applies to the compressed bytes, and RSV1 is set on
    // the first frame only.
    let case = "10.2 (compressed message in 100-byte frames)";
    let mut config = ClientConfig::default();
    config.ws.proto.max_send_frame_size = Some(100);
    let (mut script, client) = open(case, config, Some("permessage-deflate")).await;
    let message = repetitive_text(64 * 1024);
    client.send(Message::binary(message.clone()), case);
    let (compressed, payload, frames) = read_client_message(&mut script, BINARY, Some(100)).await;
    assert!(compressed, "{case}: RSV1 missing on the first frame");
    assert!(frames > 1, "{case}: the message was not fragmented");
    let inflated = Inflater::new(15, false)
        .decompress(&payload)
        .unwrap_or_else(|error| panic!("{case}: {error}"));
    assert!(inflated == message, "{case}: decompressed message differs");
}

async fn client_masks_every_frame_with_a_fresh_key() {
    let case = "c1.4 (fresh masking keys)";
    let (mut script, mut client) = open(case, no_compression(), None).await;
    let mut keys = HashSet::new();
    for i in 0..100u32 {
        let message = if i % 2 == 0 {
            Message::text(format!("message {i}"))
        } else {
            Message::binary(i.to_be_bytes().to_vec())
        };
        client.send(message, case);
        let frame = script.frame().await;
        keys.insert(frame.mask.expect("masked"));
    }
    for i in 0..20u8 {
        script.send(&unmasked(FIN | PING, &[i])).await;
        let pong = script.frame().await;
        assert_eq!(pong.opcode, PONG, "{case}: expected a pong");
        keys.insert(pong.mask.expect("masked"));
        let _ = client.expect_message(case).await;
    }
    client.sender.close(CloseCode::NORMAL, "");
    keys.insert(script.expect_close(1000).await.mask.expect("masked"));
    assert_eq!(
        keys.len(),
        121,
        "{case}: masking keys repeat across 121 frames"
    );
    assert!(
        !keys.contains(&[0, 0, 0, 0]),
        "{case}: all-zero masking key"
    );
}

async fn case_12_client_compression() {
    // Each response the client must accept, and the window and context rules it implies
    // for the client's compressor.
    let accepted: [(&str, &str, u8, bool); 5] = [
        ("c13.1 (no parameters)", "permessage-deflate", 15, false),
        (
            "c13.2 (server_no_context_takeover)",
            "permessage-deflate; server_no_context_takeover",
            15,
            false,
        ),
        (
            "c13.3 (client_no_context_takeover)",
            "permessage-deflate; client_no_context_takeover",
            15,
            true,
        ),
        (
            "c13.4 (client_max_window_bits=9)",
            "permessage-deflate; client_max_window_bits=9",
            9,
            false,
        ),
        (
            "c13.5 (every parameter)",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=10",
            10,
            true,
        ),
    ];
    for (case, response, client_window, client_reset) in accepted {
        let (mut script, mut client) = open(case, ClientConfig::default(), Some(response)).await;
        let offer =
            header_value(&script.request, "sec-websocket-extensions").and_then(deflate_params);
        assert!(
            offer.is_some(),
            "{case}: the client offered no permessage-deflate: {}",
            script.request
        );
        assert!(
            client.compression.is_some(),
            "{case}: the client did not agree"
        );
        let params = deflate_params(response).expect("test response");
        let server_reset = params.iter().any(|p| p == "server_no_context_takeover");
        let server_window = params
            .iter()
            .find_map(|p| p.strip_prefix("server_max_window_bits="))
            .map_or(15, |bits| bits.parse().unwrap());
        let mut deflater = Deflater::new(server_window, 6, server_reset);
        let mut inflater = Inflater::new(client_window, client_reset);
        let text = repetitive_text(400);
        for round in 0..3 {
            let step = format!("{case} round {round}");
            // Server to client: a compressed message, the first frame with RSV1.
            script
                .send(&unmasked(FIN | RSV1 | TEXT, &deflater.compress(&text)))
                .await;
            let received = client.expect_message(&step).await;
            assert_eq!(
                received,
                Message::text(String::from_utf8(text.clone()).unwrap()),
                "{step}: recv"
            );

            // Client to server: compressed within the agreed window and context rules.
            client.send(
                Message::text(String::from_utf8(text.clone()).unwrap()),
                &step,
            );
            let (compressed, payload, _) = read_client_message(&mut script, TEXT, None).await;
            assert!(
                compressed,
                "{step}: the client did not compress a 400-byte text"
            );
            let inflated = inflater
                .decompress(&payload)
                .unwrap_or_else(|error| panic!("{step}: {error}"));
            assert!(inflated == text, "{step}: decompressed message differs");
        }
    }

    let hello = Deflater::new(15, 6, false).compress(b"Hello, compressed world");
    let faults: [(&str, Vec<u8>, u16); 3] = [
        (
            "c13.6 (RSV1 on a continuation)",
            [
                unmasked(RSV1 | TEXT, &hello[..3]),
                unmasked(FIN | RSV1 | CONTINUATION, &hello[3..]),
            ]
            .concat(),
            1002,
        ),
        (
            "c13.7 (RSV1 on a ping)",
            unmasked(FIN | RSV1 | PING, b""),
            1002,
        ),
        (
            "c13.8 (invalid DEFLATE data)",
            unmasked(FIN | RSV1 | BINARY, &[0xff; 8]),
            1007,
        ),
    ];
    for (case, bytes, code) in faults {
        fault_case(
            case,
            ClientConfig::default(),
            Some("permessage-deflate"),
            &bytes,
            code,
        )
        .await;
    }
}

/// Runs a handshake whose response has `extensions` and returns what the connect returned.
async fn connect_with_response(
    case: &str,
    config: ClientConfig,
    extensions: &str,
) -> Result<(), Error> {
    let (listener, url) = listen().await;
    let transport = transport();
    let config = client_config(transport, config);
    let client = match (transport, &listener) {
        (Transport::Http1 | Transport::Http1Tls, Listener::Tcp(listener)) => {
            let client = tokio::spawn(async move { connect_any(&url, config).await.map(|_| ()) });
            let (mut stream, request) = accept(listener, case).await;
            write_all(
                &mut stream,
                switching_protocols(&request, Some(extensions)).as_bytes(),
                case,
            )
            .await;
            client
        }
        (Transport::Http2 | Transport::Http2Tls, Listener::Tcp(listener)) => {
            let client = tokio::spawn(async move { connect_any(&url, config).await.map(|_| ()) });
            // The client rejects the response before the stream is handed over, so the
            // script waits only for the request.
            accept_http2_request(listener, case, Some(extensions)).await;
            client
        }
        (Transport::Http3, Listener::Quic(endpoint)) => {
            let client = tokio::spawn(async move { connect_any(&url, config).await.map(|_| ()) });
            let (_, request) = accept_http3_request(endpoint, case).await;
            // The client may reject the response and reset the stream at once, so a
            // failure to hand the stream over is not an error of the case.
            let _tunnel = request.respond(&connect_response(Some(extensions))).await;
            client
        }
        _ => panic!("{case}: listen() returned a listener of another transport"),
    };
    tokio::time::timeout(STEP_TIMEOUT, client)
        .await
        .unwrap_or_else(|_| panic!("{case}: connect did not return"))
        .expect("client task")
}

/// Returns whether `connect` failed because the handshake response was rejected. Every transport
/// reports that as `Error::Handshake`.
fn is_handshake_error(result: &Result<(), Error>) -> bool {
    matches!(result, Err(Error::Handshake(_)))
}

async fn case_13_client_rejects_bad_compression_responses() {
    let invalid: [(&str, bool, &str); 10] = [
        (
            "c13.10 (extension not offered)",
            false,
            "permessage-deflate",
        ),
        ("c13.11 (unknown extension)", true, "x-webkit-deflate-frame"),
        (
            "c13.12 (unknown parameter)",
            true,
            "permessage-deflate; foo",
        ),
        (
            "c13.13 (permessage-deflate twice)",
            true,
            "permessage-deflate, permessage-deflate",
        ),
        (
            "c13.14 (repeated parameter)",
            true,
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        ),
        (
            "c13.15 (client_max_window_bits without a value)",
            true,
            "permessage-deflate; client_max_window_bits",
        ),
        (
            "c13.16 (server_max_window_bits=16)",
            true,
            "permessage-deflate; server_max_window_bits=16",
        ),
        (
            "c13.17 (server_max_window_bits=7)",
            true,
            "permessage-deflate; server_max_window_bits=7",
        ),
        (
            "c13.18 (client_max_window_bits=8)",
            true,
            "permessage-deflate; client_max_window_bits=8",
        ),
        (
            "c13.19 (value on a flag)",
            true,
            "permessage-deflate; server_no_context_takeover=1",
        ),
    ];
    for (case, offer, response) in invalid {
        let config = if offer {
            ClientConfig::default()
        } else {
            no_compression()
        };
        let result = connect_with_response(case, config, response).await;
        assert!(
            is_handshake_error(&result),
            "{case}: expected a handshake failure, got {result:?}"
        );
    }

    // The client asked for server_no_context_takeover, so a response without it fails.
    let config = ClientConfig {
        compression: Some(DeflateConfig {
            peer_no_context_takeover: true,
            ..DeflateConfig::default()
        }),
        ..ClientConfig::default()
    };
    let result = connect_with_response(
        "c13.20 (requested reset missing)",
        config,
        "permessage-deflate",
    )
    .await;
    assert!(
        is_handshake_error(&result),
        "c13.20: expected a handshake failure, got {result:?}"
    );

    // A window above the one the client requested fails.
    let config = ClientConfig {
        compression: Some(DeflateConfig {
            peer_max_window_bits: Some(10),
            ..DeflateConfig::default()
        }),
        ..ClientConfig::default()
    };
    let result = connect_with_response(
        "c13.21 (server window above the request)",
        config,
        "permessage-deflate; server_max_window_bits=12",
    )
    .await;
    assert!(
        is_handshake_error(&result),
        "c13.21: expected a handshake failure, got {result:?}"
    );
}

//! End-to-end conformance of `pylon serve` at `/ws/echo` with RFC 6455 and RFC 7692, with
//! hand-built frames. Sections and case ids follow the Autobahn TestSuite where a case has
//! a counterpart there: 1 framing, 2 ping and pong, 3 reserved bits, 4 opcodes,
//! 5 fragmentation, 6 UTF-8, 7 close, 9 limits and throughput, 12 and 13 permessage-deflate.
//! Every assertion message starts with the case id.
//!
//! Every section runs over five transports, each as a test of its own named after the
//! section and the transport (`case_1_framing::h2_tls`). The transports are an HTTP/1.1
//! upgrade over TCP and over TLS, an HTTP/2 extended CONNECT stream (RFC 8441) over TLS
//! with ALPN `h2` and over TCP with prior knowledge, and an HTTP/3 extended CONNECT stream
//! (RFC 9220) over QUIC.
//! The frames are the same on all of them. Over HTTP/2 the end of the stream
//! (`END_STREAM`) takes the place of the end of TCP (FIN) in HTTP/1.1, and `RST_STREAM` that of
//! it has a TCP reset. Over HTTP/3 the FIN of the QUIC stream stands for the end of TCP,
//! and `RESET_STREAM` for a TCP reset.
//!
//! Handshake faults are covered by `handshake_faults_get_their_status` in `bad_input.rs`
//! and, over HTTP/2, by `crates/ws/tests/http2.rs`, and `pylon_proto::Connection` alone by
//! `crates/proto/tests/conformance.rs`.

mod common;
mod conformance;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use common::{Server, run_with_timeout, status_of};
use conformance::{
    BINARY, CLOSE, CONTINUATION, Deflater, FIN, Frame, Inflater, PING, PONG, RSV1, RSV2, RSV3,
    STEP_TIMEOUT, TEXT, TcpEnd, close_payload, deflate_params, expect_frame, expect_tcp_end,
    head_text, header_value, masked, noise, repetitive_text, write_all, write_chunked,
};
use http::{HeaderMap, HeaderValue, Method, Request};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pylon_ws::h3::H3Client;
use pylon_ws::tls::ClientTls;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, RootCertStore};

/// `--max-message-size` of the node under test, its default.
const MAX_MESSAGE_SIZE: usize = 1 << 20;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Transport of the WebSockets that a test opens.
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
    /// HTTP/3 extended CONNECT over QUIC, on the UDP port of the TLS listener.
    Http3,
}

impl Transport {
    const ALL: [Transport; 5] = [
        Transport::Http1,
        Transport::Http1Tls,
        Transport::Http2,
        Transport::Http2Tls,
        Transport::Http3,
    ];

    fn is_tls(self) -> bool {
        matches!(
            self,
            Transport::Http1Tls | Transport::Http2Tls | Transport::Http3
        )
    }
}

/// Address of a node and the transport to reach it with.
#[derive(Clone, Copy, Debug)]
struct Target {
    addr: SocketAddr,
    transport: Transport,
}

/// A certificate and key for `localhost` from `pylon cert`, shared by every TLS node of
/// this test binary.
struct TestCert {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    client_config: Arc<rustls::ClientConfig>,
    /// Trust settings of the HTTP/3 client, with `cert.pem` as the only root.
    client_tls: ClientTls,
}

fn test_cert() -> &'static TestCert {
    static CERT: OnceLock<TestCert> = OnceLock::new();
    CERT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("create a certificate directory");
        let (status, output) = run_with_timeout(
            Command::new(env!("CARGO_BIN_EXE_pylon"))
                .args(["cert", "--out"])
                .arg(dir.path()),
            Duration::from_secs(30),
        );
        assert!(status.success(), "pylon cert failed:\n{output}");
        let cert = dir.path().join("cert.pem");
        let mut roots = RootCertStore::empty();
        let mut client_tls = ClientTls {
            webpki_roots: false,
            ..ClientTls::default()
        };
        for der in pylon_ws::tls::read_certs_pem(&cert).expect("read cert.pem") {
            client_tls.ca_certs.push(der.clone());
            roots.add(der).expect("add cert.pem to the roots");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        TestCert {
            key: dir.path().join("key.pem"),
            cert,
            _dir: dir,
            client_config: Arc::new(client_config),
            client_tls,
        }
    })
}

/// A `pylon serve` process and its data directory, which outlives it.
struct Node {
    server: Server,
    transport: Transport,
    _dir: tempfile::TempDir,
}

impl Node {
    /// Starts a node with `args`, with TLS if `transport` needs it.
    fn start(transport: Transport, args: &[&str]) -> Node {
        let dir = tempfile::tempdir().expect("create a data directory");
        let mut all_args: Vec<&str> = args.to_vec();
        if transport.is_tls() {
            let cert = test_cert();
            all_args.extend([
                "--tls-cert",
                cert.cert.to_str().expect("UTF-8 path"),
                "--tls-key",
                cert.key.to_str().expect("UTF-8 path"),
            ]);
        }
        let server = Server::start_with(dir.path(), &all_args);
        Node {
            server,
            transport,
            _dir: dir,
        }
    }

    fn addr(&self) -> Target {
        Target {
            addr: self.server.addr,
            transport: self.transport,
        }
    }
}

/// Returns the node with default settings that the tests of this file share for
/// `transport`: plain for the plain transports, with TLS for the others. It is started by
/// the first test that needs it and killed when the last running test drops it, so a
/// node never outlives the test binary.
fn shared_node(transport: Transport) -> Arc<Node> {
    static SLOTS: Mutex<[Weak<Node>; 5]> = Mutex::new([
        Weak::new(),
        Weak::new(),
        Weak::new(),
        Weak::new(),
        Weak::new(),
    ]);
    let index = Transport::ALL
        .iter()
        .position(|&candidate| candidate == transport)
        .expect("every transport is in Transport::ALL");
    let mut slots = SLOTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(node) = slots[index].upgrade() {
        return node;
    }
    let node = Arc::new(Node::start(transport, &[]));
    slots[index] = Arc::downgrade(&node);
    node
}

/// Declares, for each section function, one test per transport in a module named after
/// the section.
macro_rules! on_every_transport {
    ($($section:ident),* $(,)?) => {
        $(
            mod $section {
                use super::{Transport, shared_node};

                #[tokio::test]
                async fn h1() {
                    super::$section(shared_node(Transport::Http1)).await;
                }

                #[tokio::test]
                async fn h1_tls() {
                    super::$section(shared_node(Transport::Http1Tls)).await;
                }

                #[tokio::test]
                async fn h2() {
                    super::$section(shared_node(Transport::Http2)).await;
                }

                #[tokio::test]
                async fn h2_tls() {
                    super::$section(shared_node(Transport::Http2Tls)).await;
                }

                #[tokio::test]
                async fn h3() {
                    super::$section(shared_node(Transport::Http3)).await;
                }
            }
        )*
    };
}

on_every_transport!(
    case_1_framing,
    case_1_3_non_minimal_lengths_echo,
    case_2_ping_pong,
    case_3_reserved_bits,
    case_4_reserved_opcodes,
    case_5_fragmentation,
    case_6_valid_utf8,
    case_6_invalid_utf8,
    case_6_4_utf8_fails_fast,
    case_7_close,
    case_9_large_messages,
    case_9_7_many_small_messages_pipelined,
    case_9_over_limit_gets_1009,
    case_12_compressed_payloads,
    case_13_compression_parameters,
    case_13_compression_faults,
);

mod case_13_server_settings {
    use super::Transport;

    #[tokio::test]
    async fn h1() {
        super::case_13_server_settings(Transport::Http1).await;
    }

    #[tokio::test]
    async fn h1_tls() {
        super::case_13_server_settings(Transport::Http1Tls).await;
    }

    #[tokio::test]
    async fn h2() {
        super::case_13_server_settings(Transport::Http2).await;
    }

    #[tokio::test]
    async fn h2_tls() {
        super::case_13_server_settings(Transport::Http2Tls).await;
    }

    #[tokio::test]
    async fn h3() {
        super::case_13_server_settings(Transport::Http3).await;
    }
}

/// The byte stream of one WebSocket: a TCP or TLS connection, or an HTTP/2 or HTTP/3
/// stream.
trait PeerStream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> PeerStream for S {}

/// A raw client WebSocket to `/ws/echo`, labelled with the id of the case it runs.
struct Peer {
    stream: Box<dyn PeerStream>,
    case: String,
    /// The server's response head. Over HTTP/2 and HTTP/3 it is rebuilt from the response
    /// as `HTTP/2 <status>` or `HTTP/3 <status>` and one `name: value` line per header.
    response: String,
}

impl Peer {
    /// Completes the opening handshake, offering `extensions` if given.
    async fn open(addr: Target, case: &str, extensions: Option<&str>) -> Peer {
        let case = case.to_owned();
        if addr.transport == Transport::Http3 {
            let (stream, response) = http3_handshake(addr, &case, extensions).await;
            return Peer {
                stream,
                case,
                response,
            };
        }
        let tcp = tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(addr.addr))
            .await
            .unwrap_or_else(|_| panic!("{case}: connect timed out"))
            .unwrap_or_else(|error| panic!("{case}: connect failed: {error}"));
        tcp.set_nodelay(true).expect("set TCP_NODELAY");
        let (stream, response) = match addr.transport {
            Transport::Http1 => http1_handshake(Box::new(tcp), addr, &case, extensions).await,
            Transport::Http1Tls => {
                let tls = tls_connect(tcp, b"http/1.1", &case).await;
                http1_handshake(tls, addr, &case, extensions).await
            }
            Transport::Http2 => http2_handshake(Box::new(tcp), addr, &case, extensions).await,
            Transport::Http2Tls => {
                let tls = tls_connect(tcp, b"h2", &case).await;
                http2_handshake(tls, addr, &case, extensions).await
            }
            Transport::Http3 => unreachable!("HTTP/3 does not use TCP and returned above"),
        };
        Peer {
            stream,
            case,
            response,
        }
    }

    /// The parameters of the agreed permessage-deflate, or `None` if none was agreed.
    fn agreed_deflate(&self) -> Option<Vec<String>> {
        header_value(&self.response, "sec-websocket-extensions").and_then(deflate_params)
    }

    async fn send(&mut self, bytes: &[u8]) {
        write_all(&mut self.stream, bytes, &self.case).await;
    }

    async fn send_chunked(&mut self, bytes: &[u8], chunk: usize) {
        write_chunked(&mut self.stream, bytes, chunk, &self.case).await;
    }

    async fn frame(&mut self) -> Frame {
        let frame = expect_frame(&mut self.stream, &self.case).await;
        assert!(
            frame.mask.is_none(),
            "{}: the server sent a masked frame",
            self.case
        );
        frame
    }

    /// Reads one data message, assembling fragments. Returns its opcode, whether RSV1 was
    /// set on its first frame, and its payload.
    async fn message(&mut self) -> (u8, bool, Vec<u8>) {
        let first = self.frame().await;
        let case = &self.case;
        assert!(
            first.opcode == TEXT || first.opcode == BINARY,
            "{case}: expected a data message, got opcode {:#x} with payload {:02x?}",
            first.opcode,
            &first.payload[..first.payload.len().min(32)]
        );
        assert_eq!(first.rsv & (RSV2 | RSV3), 0, "{case}: RSV2 or RSV3 set");
        let (opcode, compressed) = (first.opcode, first.rsv1());
        let mut payload = first.payload;
        let mut fin = first.fin;
        while !fin {
            let next = self.frame().await;
            let case = &self.case;
            assert_eq!(next.opcode, CONTINUATION, "{case}: expected a continuation");
            assert_eq!(next.rsv, 0, "{case}: RSV bits on a continuation frame");
            payload.extend_from_slice(&next.payload);
            fin = next.fin;
        }
        (opcode, compressed, payload)
    }

    /// Expects an uncompressed echo of a message with `opcode` and `payload`.
    async fn expect_echo(&mut self, opcode: u8, payload: &[u8]) {
        let (got_opcode, compressed, got) = self.message().await;
        let case = &self.case;
        assert_eq!(got_opcode, opcode, "{case}: echo has the wrong opcode");
        assert!(
            !compressed,
            "{case}: echo is compressed without the extension"
        );
        assert_eq!(
            got.len(),
            payload.len(),
            "{case}: echo has the wrong length"
        );
        assert!(got == payload, "{case}: echo differs from the message sent");
    }

    async fn expect_pong(&mut self, payload: &[u8]) {
        let frame = self.frame().await;
        let case = &self.case;
        assert_eq!(
            frame.opcode, PONG,
            "{case}: expected a pong, got {frame:02x?}"
        );
        assert!(frame.fin, "{case}: fragmented pong");
        assert_eq!(
            frame.payload, payload,
            "{case}: pong payload differs from the ping's"
        );
    }

    /// Expects a close frame with `code` (`None` for an empty payload) as the next frame,
    /// and then the server closing TCP with FIN.
    async fn expect_close(&mut self, code: Option<u16>) {
        let frame = self.frame().await;
        let case = &self.case;
        assert_eq!(
            frame.opcode, CLOSE,
            "{case}: expected a close frame with {code:?}, got {frame:02x?}"
        );
        assert!(frame.fin, "{case}: fragmented close frame");
        assert_eq!(frame.close_code(), code, "{case}: wrong close code");
        if frame.payload.len() > 2 {
            assert!(
                std::str::from_utf8(&frame.payload[2..]).is_ok(),
                "{case}: close reason is not UTF-8"
            );
        }
        let end = expect_tcp_end(&mut self.stream, case).await;
        assert_eq!(
            end,
            TcpEnd::Fin,
            "{case}: the server reset TCP after closing"
        );
    }

    /// Runs the client side of a clean close: sends 1000 and expects 1000 back and TCP
    /// closed by the server.
    async fn close_cleanly(&mut self) {
        self.send(&masked(FIN | CLOSE, &close_payload(1000, b"")))
            .await;
        self.expect_close(Some(1000)).await;
    }

    /// Sends a text message and expects its echo, to show that the connection is open and
    /// that nothing else was sent before it.
    async fn expect_open(&mut self) {
        let probe = b"still open";
        self.send(&masked(FIN | TEXT, probe)).await;
        self.expect_echo(TEXT, probe).await;
    }
}

/// Runs the TLS handshake for `localhost` with ALPN `alpn`, trusting [`test_cert`].
async fn tls_connect(tcp: TcpStream, alpn: &[u8], case: &str) -> Box<dyn PeerStream> {
    let mut config = (*test_cert().client_config).clone();
    config.alpn_protocols = vec![alpn.to_vec()];
    let name = ServerName::try_from("localhost").expect("valid server name");
    let tls = tokio::time::timeout(
        STEP_TIMEOUT,
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .unwrap_or_else(|_| panic!("{case}: TLS handshake timed out"))
    .unwrap_or_else(|error| panic!("{case}: TLS handshake failed: {error}"));
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(alpn),
        "{case}: the server selected another ALPN protocol"
    );
    Box::new(tls)
}

/// Sends the HTTP/1.1 upgrade request over `stream` and reads the `101` response head.
async fn http1_handshake(
    mut stream: Box<dyn PeerStream>,
    addr: Target,
    case: &str,
    extensions: Option<&str>,
) -> (Box<dyn PeerStream>, String) {
    let host = addr.addr;
    let extension_line = extensions
        .map(|value| format!("Sec-WebSocket-Extensions: {value}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET /ws/echo HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{extension_line}\r\n"
    );
    write_all(&mut stream, request.as_bytes(), case).await;

    // Byte by byte, so that no frame byte after the head is consumed here.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(STEP_TIMEOUT, stream.read(&mut byte))
            .await
            .unwrap_or_else(|_| panic!("{case}: no handshake response within {STEP_TIMEOUT:?}"))
            .unwrap_or_else(|error| panic!("{case}: reading the handshake failed: {error}"));
        assert_eq!(read, 1, "{case}: server closed during the handshake");
        head.push(byte[0]);
    }
    let response = String::from_utf8_lossy(&head).into_owned();
    assert_eq!(status_of(&response), 101, "{case}: {response}");
    (stream, response)
}

/// Opens an HTTP/2 connection over `io` and a WebSocket on it with an extended CONNECT
/// request, and returns the stream and the `200` response rebuilt as text.
async fn http2_handshake(
    io: Box<dyn PeerStream>,
    addr: Target,
    case: &str,
    extensions: Option<&str>,
) -> (Box<dyn PeerStream>, String) {
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap_or_else(|error| panic!("{case}: HTTP/2 handshake failed: {error}"));
    tokio::spawn(connection);
    let scheme = if addr.transport.is_tls() {
        "https"
    } else {
        "http"
    };
    let authority = if addr.transport.is_tls() {
        format!("localhost:{}", addr.addr.port())
    } else {
        addr.addr.to_string()
    };
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("{scheme}://{authority}/ws/echo"))
        .header("sec-websocket-version", "13");
    if let Some(value) = extensions {
        request = request.header("sec-websocket-extensions", value);
    }
    let mut request = request
        .body(Empty::<Bytes>::new())
        .expect("valid CONNECT request");
    request
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let response = tokio::time::timeout(STEP_TIMEOUT, sender.send_request(request))
        .await
        .unwrap_or_else(|_| panic!("{case}: no CONNECT response within {STEP_TIMEOUT:?}"))
        .unwrap_or_else(|error| panic!("{case}: extended CONNECT failed: {error}"));
    let status_line = format!("HTTP/2 {}", response.status().as_u16());
    let head = head_text(&status_line, response.headers());
    assert_eq!(status_of(&head), 200, "{case}: {head}");
    let upgraded = tokio::time::timeout(STEP_TIMEOUT, hyper::upgrade::on(response))
        .await
        .unwrap_or_else(|_| panic!("{case}: the CONNECT stream was not handed over in time"))
        .unwrap_or_else(|error| panic!("{case}: the CONNECT stream failed: {error}"));
    (Box::new(TokioIo::new(upgraded)), head)
}

/// Opens a QUIC connection to the node, sends an extended CONNECT for `/ws/echo` on it
/// and returns the tunnel and the `200` response rebuilt as text. Every peer has a QUIC
/// connection of its own, as every HTTP/1.1 peer has its own TCP connection.
async fn http3_handshake(
    addr: Target,
    case: &str,
    extensions: Option<&str>,
) -> (Box<dyn PeerStream>, String) {
    let client = H3Client::new(&test_cert().client_tls, STEP_TIMEOUT)
        .unwrap_or_else(|error| panic!("{case}: HTTP/3 client setup failed: {error}"));
    let mut headers = HeaderMap::new();
    headers.insert("sec-websocket-version", HeaderValue::from_static("13"));
    if let Some(value) = extensions {
        let value = HeaderValue::from_str(value).expect("valid extension header");
        headers.insert("sec-websocket-extensions", value);
    }
    let url = format!("wss://localhost:{}/ws/echo", addr.addr.port());
    let (response, tunnel) = client
        .tunnel(&url, headers)
        .await
        .unwrap_or_else(|error| panic!("{case}: extended CONNECT over HTTP/3 failed: {error}"));
    let status_line = format!("HTTP/3 {}", response.status().as_u16());
    let head = head_text(&status_line, response.headers());
    assert_eq!(status_of(&head), 200, "{case}: {head}");
    (Box::new(tunnel), head)
}

/// Lengths of section 1: every boundary of the 7-bit, 16-bit and 64-bit length forms, and
/// the node's message limit.
const FRAME_LENGTHS: [usize; 8] = [0, 125, 126, 127, 128, 65535, 65536, MAX_MESSAGE_SIZE];

/// Write size used to trickle a message: one byte for short ones, 997 bytes (a prime, so
/// that chunks fall at every offset of the header and mask) for longer ones.
fn trickle_chunk(len: usize) -> usize {
    if len <= 128 { 1 } else { 997 }
}

fn payload_for(opcode: u8, len: usize, seed: u32) -> Vec<u8> {
    if opcode == TEXT {
        repetitive_text(len)
    } else {
        noise(len, seed)
    }
}

async fn echo_case(addr: Target, case: &str, opcode: u8, payload: &[u8], chunk: Option<usize>) {
    let mut peer = Peer::open(addr, case, None).await;
    let frame = masked(FIN | opcode, payload);
    match chunk {
        Some(chunk) => peer.send_chunked(&frame, chunk).await,
        None => peer.send(&frame).await,
    }
    peer.expect_echo(opcode, payload).await;
    peer.close_cleanly().await;
}

async fn case_1_framing(node: Arc<Node>) {
    for (group, opcode) in [(1, TEXT), (2, BINARY)] {
        for (index, len) in FRAME_LENGTHS.into_iter().enumerate() {
            let payload = payload_for(opcode, len, index as u32);
            let case = format!("1.{group}.{} ({len} bytes, one write)", index + 1);
            echo_case(node.addr(), &case, opcode, &payload, None).await;
            let chunk = trickle_chunk(len);
            let case = format!("1.{group}.{} ({len} bytes, {chunk}-byte writes)", index + 1);
            echo_case(node.addr(), &case, opcode, &payload, Some(chunk)).await;
        }
    }
}

async fn case_1_3_non_minimal_lengths_echo(node: Arc<Node>) {
    // RFC 6455 section 5.2 asks for the minimal length form but gives no way to fail on
    // a longer one, and the Autobahn TestSuite expects such frames to be accepted.
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let payload = b"Hello";
    let masked_payload: Vec<u8> = payload
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[i % 4])
        .collect();
    let mut sixteen = vec![FIN | TEXT, 0x80 | 126, 0, 5];
    sixteen.extend_from_slice(&key);
    sixteen.extend_from_slice(&masked_payload);
    let mut sixty_four = vec![FIN | TEXT, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 5];
    sixty_four.extend_from_slice(&key);
    sixty_four.extend_from_slice(&masked_payload);
    for (case, frame) in [
        ("1.3.1 (5 bytes in a 16-bit length)", sixteen),
        ("1.3.2 (5 bytes in a 64-bit length)", sixty_four),
    ] {
        let mut peer = Peer::open(node.addr(), case, None).await;
        peer.send(&frame).await;
        peer.expect_echo(TEXT, payload).await;
        peer.close_cleanly().await;
    }
}

async fn case_2_ping_pong(node: Arc<Node>) {
    let addr = node.addr();
    let binary = [0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff];
    let payload_125 = noise(125, 2);
    let single_pings: [(&str, &[u8], Option<usize>); 5] = [
        ("2.1 (empty ping)", b"", None),
        ("2.2 (text payload)", b"Hello, world!", None),
        ("2.3 (binary payload)", &binary, None),
        ("2.4 (125 bytes)", &payload_125, None),
        ("2.6 (125 bytes in 1-byte writes)", &payload_125, Some(1)),
    ];
    for (case, payload, chunk) in single_pings {
        let mut peer = Peer::open(addr, case, None).await;
        let frame = masked(FIN | PING, payload);
        match chunk {
            Some(chunk) => peer.send_chunked(&frame, chunk).await,
            None => peer.send(&frame).await,
        }
        peer.expect_pong(payload).await;
        peer.close_cleanly().await;
    }

    let mut peer = Peer::open(addr, "2.5 (ping of 126 bytes)", None).await;
    peer.send(&masked(FIN | PING, &[0x55; 126])).await;
    peer.expect_close(Some(1002)).await;

    let mut peer = Peer::open(addr, "2.7 (unsolicited empty pong)", None).await;
    peer.send(&masked(FIN | PONG, b"")).await;
    peer.expect_open().await;
    peer.close_cleanly().await;

    let mut peer = Peer::open(addr, "2.8 (unsolicited pong with payload)", None).await;
    peer.send(&masked(FIN | PONG, b"unsolicited pong payload"))
        .await;
    peer.expect_open().await;
    peer.close_cleanly().await;

    let mut peer = Peer::open(addr, "2.9 (unsolicited pong, then ping)", None).await;
    let both = [
        masked(FIN | PONG, b"unsolicited pong payload"),
        masked(FIN | PING, b"ping payload"),
    ]
    .concat();
    peer.send(&both).await;
    peer.expect_pong(b"ping payload").await;
    peer.expect_open().await;
    peer.close_cleanly().await;

    for (case, chunk) in [
        ("2.10 (10 pings in one write)", None),
        ("2.11 (10 pings in 1-byte writes)", Some(1)),
    ] {
        let mut peer = Peer::open(addr, case, None).await;
        let pings: Vec<u8> = (0..10u8)
            .flat_map(|i| masked(FIN | PING, format!("payload-{i}").as_bytes()))
            .collect();
        match chunk {
            Some(chunk) => peer.send_chunked(&pings, chunk).await,
            None => peer.send(&pings).await,
        }
        for i in 0..10u8 {
            peer.expect_pong(format!("payload-{i}").as_bytes()).await;
        }
        peer.close_cleanly().await;
    }

    let mut peer = Peer::open(addr, "2.12 (pings of every length 0 to 125)", None).await;
    for len in 0..=125usize {
        let payload = noise(len, len as u32);
        peer.send(&masked(FIN | PING, &payload)).await;
        peer.expect_pong(&payload).await;
    }
    peer.close_cleanly().await;
}

async fn case_3_reserved_bits(node: Arc<Node>) {
    let addr = node.addr();

    let mut peer = Peer::open(addr, "3.1 (RSV1 on text)", None).await;
    peer.send(&masked(FIN | RSV1 | TEXT, b"Hello")).await;
    peer.expect_close(Some(1002)).await;

    let mut peer = Peer::open(addr, "3.2 (RSV2 on text after an echo)", None).await;
    peer.send(&masked(FIN | TEXT, b"Hello")).await;
    peer.expect_echo(TEXT, b"Hello").await;
    peer.send(&masked(FIN | RSV2 | TEXT, b"Hello")).await;
    peer.expect_close(Some(1002)).await;

    // Text, a frame with RSV2 and RSV3, and a ping, in one write: the text is echoed,
    // the ping never answered.
    let mut peer = Peer::open(
        addr,
        "3.3 (RSV2+RSV3 in one write with text and ping)",
        None,
    )
    .await;
    let burst = [
        masked(FIN | TEXT, b"Hello"),
        masked(FIN | RSV2 | RSV3 | TEXT, b"Hello"),
        masked(FIN | PING, b""),
    ]
    .concat();
    peer.send(&burst).await;
    peer.expect_echo(TEXT, b"Hello").await;
    peer.expect_close(Some(1002)).await;

    let mut peer = Peer::open(
        addr,
        "3.4 (RSV1 between text and ping, 1-byte writes)",
        None,
    )
    .await;
    let burst = [
        masked(FIN | TEXT, b"Hello"),
        masked(FIN | RSV1 | TEXT, b"Hello"),
        masked(FIN | PING, b""),
    ]
    .concat();
    peer.send_chunked(&burst, 1).await;
    peer.expect_echo(TEXT, b"Hello").await;
    peer.expect_close(Some(1002)).await;

    let faults: [(&str, u8, &[u8]); 3] = [
        (
            "3.5 (RSV1+RSV3 on binary)",
            FIN | RSV1 | RSV3 | BINARY,
            &[0, 1, 2],
        ),
        ("3.6 (RSV1+RSV2 on ping)", FIN | RSV1 | RSV2 | PING, b"ping"),
        (
            "3.7 (all RSV bits on close)",
            FIN | RSV1 | RSV2 | RSV3 | CLOSE,
            &[0x03, 0xe8],
        ),
    ];
    for (case, first_byte, payload) in faults {
        let mut peer = Peer::open(addr, case, None).await;
        peer.send(&masked(first_byte, payload)).await;
        peer.expect_close(Some(1002)).await;
    }
}

async fn case_4_reserved_opcodes(node: Arc<Node>) {
    let addr = node.addr();
    let opcodes = [(1, [3u8, 4, 5, 6, 7]), (2, [11, 12, 13, 14, 15])];
    for (group, codes) in opcodes {
        for (index, opcode) in codes.into_iter().enumerate() {
            let number = index + 1;
            let case = format!("4.{group}.{number}a (opcode {opcode}, empty)");
            let mut peer = Peer::open(addr, &case, None).await;
            peer.send(&masked(FIN | opcode, b"")).await;
            peer.expect_close(Some(1002)).await;

            // After a valid echo, with a payload, and followed by a ping that must go
            // unanswered.
            let case = format!("4.{group}.{number}b (opcode {opcode} between text and ping)");
            let mut peer = Peer::open(addr, &case, None).await;
            let burst = [
                masked(FIN | TEXT, b"Hello"),
                masked(FIN | opcode, b"reserved opcode payload"),
                masked(FIN | PING, b""),
            ]
            .concat();
            peer.send(&burst).await;
            peer.expect_echo(TEXT, b"Hello").await;
            peer.expect_close(Some(1002)).await;
        }
    }
}

async fn case_5_fragmentation(node: Arc<Node>) {
    let addr = node.addr();

    for (case, opcode) in [
        ("5.1 (fragmented ping)", PING),
        ("5.2 (fragmented pong)", PONG),
    ] {
        let mut peer = Peer::open(addr, case, None).await;
        let frames = [
            masked(opcode, b"fragment1"),
            masked(FIN | CONTINUATION, b"fragment2"),
        ]
        .concat();
        peer.send(&frames).await;
        peer.expect_close(Some(1002)).await;
    }

    let mut peer = Peer::open(addr, "5.2b (fragmented close)", None).await;
    let frames = [
        masked(CLOSE, &close_payload(1000, b"a")),
        masked(FIN | CONTINUATION, b"b"),
    ]
    .concat();
    peer.send(&frames).await;
    peer.expect_close(Some(1002)).await;

    // Two fragments, whole and trickled, for text and binary.
    for (group, opcode) in [("5.3", TEXT), ("5.3b", BINARY)] {
        for (mode, chunk) in [("one write", None), ("1-byte writes", Some(1))] {
            let case = format!("{group} (two fragments, {mode})");
            let mut peer = Peer::open(addr, &case, None).await;
            let frames = [
                masked(opcode, b"fragment1"),
                masked(FIN | CONTINUATION, b"fragment2"),
            ]
            .concat();
            match chunk {
                Some(chunk) => peer.send_chunked(&frames, chunk).await,
                None => peer.send(&frames).await,
            }
            peer.expect_echo(opcode, b"fragment1fragment2").await;
            peer.close_cleanly().await;
        }
    }

    // A ping between the fragments is answered before the message is echoed.
    for (case, chunk) in [
        ("5.6 (ping between two fragments)", None),
        ("5.8 (ping between two fragments, 1-byte writes)", Some(1)),
    ] {
        let mut peer = Peer::open(addr, case, None).await;
        let frames = [
            masked(TEXT, b"fragment1"),
            masked(FIN | PING, b"ping payload"),
            masked(FIN | CONTINUATION, b"fragment2"),
        ]
        .concat();
        match chunk {
            Some(chunk) => peer.send_chunked(&frames, chunk).await,
            None => peer.send(&frames).await,
        }
        peer.expect_pong(b"ping payload").await;
        peer.expect_echo(TEXT, b"fragment1fragment2").await;
        peer.close_cleanly().await;
    }

    // A ping whose pong is read before the rest of the message is sent: the server must
    // answer control frames while a message is incomplete.
    let mut peer = Peer::open(addr, "5.7 (pong arrives before the final fragment)", None).await;
    peer.send(&masked(TEXT, b"fragment1")).await;
    peer.send(&masked(FIN | PING, b"ping payload")).await;
    peer.expect_pong(b"ping payload").await;
    peer.send(&masked(FIN | CONTINUATION, b"fragment2")).await;
    peer.expect_echo(TEXT, b"fragment1fragment2").await;
    peer.close_cleanly().await;

    let unexpected_continuations: [(&str, Vec<u8>, Option<usize>); 4] = [
        (
            "5.9 (final continuation without a start)",
            [
                masked(FIN | CONTINUATION, b"non-continuation payload"),
                masked(FIN | TEXT, b"Hello, world!"),
            ]
            .concat(),
            None,
        ),
        (
            "5.10 (final continuation without a start, 1-byte writes)",
            [
                masked(FIN | CONTINUATION, b"non-continuation payload"),
                masked(FIN | TEXT, b"Hello, world!"),
            ]
            .concat(),
            Some(1),
        ),
        (
            "5.12 (non-final continuation without a start)",
            [
                masked(CONTINUATION, b"non-continuation payload"),
                masked(FIN | TEXT, b"Hello, world!"),
            ]
            .concat(),
            None,
        ),
        (
            "5.15 (continuation after a finished message)",
            [
                masked(TEXT, b"fragment1"),
                masked(FIN | CONTINUATION, b"fragment2"),
                masked(CONTINUATION, b"fragment3"),
                masked(FIN | TEXT, b"fragment4"),
            ]
            .concat(),
            None,
        ),
    ];
    for (case, bytes, chunk) in unexpected_continuations {
        let mut peer = Peer::open(addr, case, None).await;
        match chunk {
            Some(chunk) => peer.send_chunked(&bytes, chunk).await,
            None => peer.send(&bytes).await,
        }
        if case.starts_with("5.15") {
            peer.expect_echo(TEXT, b"fragment1fragment2").await;
        }
        peer.expect_close(Some(1002)).await;
    }

    for (case, second) in [
        ("5.18 (text frame inside a fragmented text)", TEXT),
        ("5.18b (binary frame inside a fragmented text)", BINARY),
        (
            "5.18c (non-final text inside a fragmented text)",
            TEXT & 0x7f,
        ),
    ] {
        let fin = if case.starts_with("5.18c") { 0 } else { FIN };
        let mut peer = Peer::open(addr, case, None).await;
        let frames = [
            masked(TEXT, b"fragment1"),
            masked(fin | second, b"fragment2"),
        ]
        .concat();
        peer.send(&frames).await;
        peer.expect_close(Some(1002)).await;
    }

    // Five fragments with a ping after each, sent with pauses, and the same trickled.
    for (case, chunk) in [
        ("5.19 (five fragments with pings, paused)", None),
        ("5.20 (five fragments with pings, 1-byte writes)", Some(1)),
    ] {
        let mut peer = Peer::open(addr, case, None).await;
        for i in 1..=5u8 {
            let opcode = if i == 1 { TEXT } else { CONTINUATION };
            let fin = if i == 5 { FIN } else { 0 };
            let bytes = [
                masked(fin | opcode, format!("fragment{i}").as_bytes()),
                masked(FIN | PING, format!("pongme {i}!").as_bytes()),
            ]
            .concat();
            match chunk {
                Some(chunk) => peer.send_chunked(&bytes, chunk).await,
                None => {
                    peer.send(&bytes).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            // The final fragment completes the message, so its echo precedes the last pong.
            if i == 5 {
                peer.expect_echo(TEXT, b"fragment1fragment2fragment3fragment4fragment5")
                    .await;
            }
            peer.expect_pong(format!("pongme {i}!").as_bytes()).await;
        }
        peer.close_cleanly().await;
    }

    // Empty fragments are valid.
    let mut peer = Peer::open(addr, "6.1.2 (three empty text fragments)", None).await;
    let frames = [
        masked(TEXT, b""),
        masked(CONTINUATION, b""),
        masked(FIN | CONTINUATION, b""),
    ]
    .concat();
    peer.send(&frames).await;
    peer.expect_echo(TEXT, b"").await;
    peer.close_cleanly().await;

    let mut peer = Peer::open(addr, "6.1.3 (empty, middle, empty fragments)", None).await;
    let frames = [
        masked(TEXT, b""),
        masked(CONTINUATION, b"middle frame payload"),
        masked(FIN | CONTINUATION, b""),
    ]
    .concat();
    peer.send(&frames).await;
    peer.expect_echo(TEXT, b"middle frame payload").await;
    peer.close_cleanly().await;
}

/// Valid UTF-8 texts: every length of sequence and the boundaries of each.
fn valid_utf8_texts() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("6.2.1 mixed", "Hello-µ@ßöäüàá-UTF-8!!".as_bytes().to_vec()),
        ("6.5.1 Greek", "κόσμε".as_bytes().to_vec()),
        (
            "6.5.2 one of each length",
            "a\u{e9}\u{20ac}\u{1d11e}".as_bytes().to_vec(),
        ),
        ("6.6 U+0000", vec![0x00]),
        ("6.7.1 U+007F", vec![0x7f]),
        ("6.7.2 U+0080", vec![0xc2, 0x80]),
        ("6.7.3 U+07FF", vec![0xdf, 0xbf]),
        ("6.7.4 U+0800", vec![0xe0, 0xa0, 0x80]),
        ("6.7.5 U+D7FF", vec![0xed, 0x9f, 0xbf]),
        ("6.7.6 U+E000", vec![0xee, 0x80, 0x80]),
        ("6.7.7 U+FEFF", vec![0xef, 0xbb, 0xbf]),
        ("6.7.8 U+FFFD", vec![0xef, 0xbf, 0xbd]),
        ("6.7.9 U+FFFF", vec![0xef, 0xbf, 0xbf]),
        ("6.7.10 U+10000", vec![0xf0, 0x90, 0x80, 0x80]),
        ("6.7.11 U+10FFFF", vec![0xf4, 0x8f, 0xbf, 0xbf]),
    ]
}

/// Invalid UTF-8 sequences, each placed after valid text.
fn invalid_utf8_sequences() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("6.3.1 byte 0xFF", vec![0xff]),
        ("6.3.2 byte 0xFE", vec![0xfe]),
        ("6.8.1 lone continuation byte", vec![0x80]),
        ("6.8.2 two continuation bytes", vec![0x80, 0xbf]),
        ("6.9.1 lead byte then ASCII", vec![0xc2, 0x41]),
        ("6.9.2 3-byte lead then ASCII", vec![0xe2, 0x82, 0x41]),
        ("6.10.1 overlong '/' in 2 bytes", vec![0xc0, 0xaf]),
        ("6.10.2 overlong U+007F in 2 bytes", vec![0xc1, 0xbf]),
        ("6.10.3 overlong '/' in 3 bytes", vec![0xe0, 0x80, 0xaf]),
        (
            "6.10.4 overlong '/' in 4 bytes",
            vec![0xf0, 0x80, 0x80, 0xaf],
        ),
        ("6.11.1 surrogate U+D800", vec![0xed, 0xa0, 0x80]),
        ("6.11.2 surrogate U+DFFF", vec![0xed, 0xbf, 0xbf]),
        (
            "6.11.3 surrogate pair",
            vec![0xed, 0xa0, 0x80, 0xed, 0xb0, 0x80],
        ),
        ("6.12.1 above U+10FFFF", vec![0xf4, 0x90, 0x80, 0x80]),
        ("6.12.2 5-byte form", vec![0xf8, 0x88, 0x80, 0x80, 0x80]),
        (
            "6.12.3 6-byte form",
            vec![0xfc, 0x84, 0x80, 0x80, 0x80, 0x80],
        ),
        ("6.13.1 truncated 2-byte sequence at the end", vec![0xc2]),
        (
            "6.13.2 truncated 3-byte sequence at the end",
            vec![0xe2, 0x82],
        ),
        (
            "6.13.3 truncated 4-byte sequence at the end",
            vec![0xf0, 0x9f, 0x98],
        ),
    ]
}

async fn case_6_valid_utf8(node: Arc<Node>) {
    let mut peer = Peer::open(node.addr(), "6.1.1 (empty text)", None).await;
    peer.send(&masked(FIN | TEXT, b"")).await;
    peer.expect_echo(TEXT, b"").await;
    peer.close_cleanly().await;

    for (name, text) in valid_utf8_texts() {
        let mut peer = Peer::open(node.addr(), name, None).await;
        // One frame, then two fragments split at every byte, then one byte per fragment.
        peer.send(&masked(FIN | TEXT, &text)).await;
        peer.expect_echo(TEXT, &text).await;
        for split in 1..text.len() {
            let frames = [
                masked(TEXT, &text[..split]),
                masked(FIN | CONTINUATION, &text[split..]),
            ]
            .concat();
            peer.send(&frames).await;
            peer.expect_echo(TEXT, &text).await;
        }
        let mut frames = Vec::new();
        for (i, byte) in text.iter().enumerate() {
            let opcode = if i == 0 { TEXT } else { CONTINUATION };
            let fin = if i + 1 == text.len() { FIN } else { 0 };
            frames.extend(masked(fin | opcode, &[*byte]));
        }
        peer.send(&frames).await;
        peer.expect_echo(TEXT, &text).await;
        peer.close_cleanly().await;
    }
}

async fn case_6_invalid_utf8(node: Arc<Node>) {
    for (name, sequence) in invalid_utf8_sequences() {
        let mut text = "κόσμε".as_bytes().to_vec();
        text.extend_from_slice(&sequence);
        // A truncated sequence is invalid only because the message ends, so nothing may
        // follow it.
        if !name.contains("truncated") {
            text.extend_from_slice(b"edited");
        }

        let case = format!("{name} (one frame)");
        let mut peer = Peer::open(node.addr(), &case, None).await;
        peer.send(&masked(FIN | TEXT, &text)).await;
        peer.expect_close(Some(1007)).await;

        for split in 1..text.len() {
            let case = format!("{name} (fragments split at byte {split})");
            let mut peer = Peer::open(node.addr(), &case, None).await;
            let frames = [
                masked(TEXT, &text[..split]),
                masked(FIN | CONTINUATION, &text[split..]),
            ]
            .concat();
            peer.send(&frames).await;
            peer.expect_close(Some(1007)).await;
        }
    }
}

async fn case_6_4_utf8_fails_fast(node: Arc<Node>) {
    let addr = node.addr();
    let valid = "κόσμε".as_bytes();
    let invalid = [0xf4, 0x90, 0x80, 0x80];

    // 6.4.1: a text frame declares 64 KiB, but only a valid prefix and an invalid sequence
    // arrive. The server must fail before the rest of the frame.
    let mut peer = Peer::open(addr, "6.4.1 (invalid bytes early in a long frame)", None).await;
    let mut text = valid.to_vec();
    text.extend_from_slice(&invalid);
    text.resize(60_000, b'a');
    let frame = masked(FIN | TEXT, &text);
    let header_len = 2 + 2 + 4;
    peer.send(&frame[..header_len + valid.len() + invalid.len()])
        .await;
    peer.expect_close(Some(1007)).await;

    // 6.4.2: the invalid sequence arrives in the first fragment of a message whose last
    // fragment is never sent.
    let mut peer = Peer::open(addr, "6.4.2 (invalid bytes in an unfinished message)", None).await;
    let mut first = valid.to_vec();
    first.extend_from_slice(&invalid);
    peer.send(&masked(TEXT, &first)).await;
    peer.expect_close(Some(1007)).await;

    // 6.4.3: a sequence that can never become valid (0xF4 0x90) ends the first write.
    let mut peer = Peer::open(addr, "6.4.3 (invalid prefix of a sequence)", None).await;
    let mut text = valid.to_vec();
    text.extend_from_slice(&[0xf4, 0x90]);
    text.resize(4096, b'a');
    let frame = masked(FIN | TEXT, &text);
    peer.send(&frame[..header_len + valid.len() + 2]).await;
    peer.expect_close(Some(1007)).await;

    // 6.4.4: the same in a later fragment that is cut short.
    let mut peer = Peer::open(addr, "6.4.4 (invalid bytes early in a long fragment)", None).await;
    peer.send(&masked(TEXT, valid)).await;
    let mut rest = invalid.to_vec();
    rest.resize(60_000, b'a');
    let frame = masked(FIN | CONTINUATION, &rest);
    peer.send(&frame[..header_len + invalid.len()]).await;
    peer.expect_close(Some(1007)).await;
}

async fn case_7_close(node: Arc<Node>) {
    let addr = node.addr();

    let mut peer = Peer::open(addr, "7.1.1 (echo, then close)", None).await;
    peer.send(&masked(FIN | TEXT, b"Hello World!")).await;
    peer.expect_echo(TEXT, b"Hello World!").await;
    peer.close_cleanly().await;

    // After the close frame nothing is echoed or answered.
    let after_close: [(&str, Vec<u8>); 4] = [
        (
            "7.1.2 (second close)",
            masked(FIN | CLOSE, &close_payload(1000, b"")),
        ),
        (
            "7.1.3 (ping after close)",
            masked(FIN | PING, b"Hello World!"),
        ),
        (
            "7.1.4 (text after close)",
            masked(FIN | TEXT, b"Hello World!"),
        ),
        ("7.1.4b (garbage after close)", vec![0xff; 16]),
    ];
    for (case, trailing) in after_close {
        let mut peer = Peer::open(addr, case, None).await;
        let bytes = [masked(FIN | CLOSE, &close_payload(1000, b"")), trailing].concat();
        peer.send(&bytes).await;
        peer.expect_close(Some(1000)).await;
    }

    let mut peer = Peer::open(addr, "7.1.5 (close inside a fragmented message)", None).await;
    let bytes = [
        masked(TEXT, b"fragment1"),
        masked(FIN | CLOSE, &close_payload(1000, b"")),
        masked(FIN | CONTINUATION, b"fragment2"),
    ]
    .concat();
    peer.send(&bytes).await;
    peer.expect_close(Some(1000)).await;

    let mut peer = Peer::open(addr, "7.1.6 (large message, close, ping)", None).await;
    let big = repetitive_text(256 * 1024);
    let bytes = [
        masked(FIN | TEXT, &big),
        masked(FIN | CLOSE, &close_payload(1000, b"")),
        masked(FIN | PING, b"Hello World!"),
    ]
    .concat();
    peer.send(&bytes).await;
    peer.expect_echo(TEXT, &big).await;
    peer.expect_close(Some(1000)).await;

    // An empty close payload may be answered empty or with 1000 (RFC 6455 section 5.5.1
    // asks only that the endpoint "typically" echo the code it received).
    let mut peer = Peer::open(addr, "7.3.1 (empty close payload)", None).await;
    peer.send(&masked(FIN | CLOSE, b"")).await;
    let reply = peer.frame().await;
    assert_eq!(
        reply.opcode, CLOSE,
        "7.3.1: expected a close frame, got {reply:02x?}"
    );
    assert!(
        matches!(reply.close_code(), None | Some(1000)),
        "7.3.1: empty close answered with {:?}",
        reply.close_code()
    );
    let end = expect_tcp_end(&mut peer.stream, "7.3.1").await;
    assert_eq!(
        end,
        TcpEnd::Fin,
        "7.3.1: the server reset TCP after closing"
    );

    let payloads: [(&str, Vec<u8>, u16); 6] = [
        ("7.3.2 (1-byte close payload)", vec![0x03], 1002),
        ("7.3.3 (code only)", close_payload(1000, b""), 1000),
        (
            "7.3.4 (code and reason)",
            close_payload(1000, b"Hello World!"),
            1000,
        ),
        (
            "7.3.5 (123-byte reason)",
            close_payload(1000, &[b'*'; 123]),
            1000,
        ),
        (
            "7.3.6 (124-byte reason, 126-byte payload)",
            close_payload(1000, &[b'*'; 124]),
            1002,
        ),
        (
            "7.5.1 (reason not UTF-8)",
            close_payload(
                1000,
                &[0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xf4, 0x90, 0x80, 0x80],
            ),
            1007,
        ),
    ];
    for (case, payload, expected) in payloads {
        let mut peer = Peer::open(addr, case, None).await;
        peer.send(&masked(FIN | CLOSE, &payload)).await;
        peer.expect_close(Some(expected)).await;
    }

    let valid = [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
        4000, 4999,
    ];
    for code in valid {
        let case = format!("7.7 (valid close code {code})");
        let mut peer = Peer::open(addr, &case, None).await;
        peer.send(&masked(FIN | CLOSE, &close_payload(code, b"reason")))
            .await;
        peer.expect_close(Some(code)).await;
    }
    let invalid = [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ];
    for code in invalid {
        let case = format!("7.9 (invalid close code {code})");
        let mut peer = Peer::open(addr, &case, None).await;
        peer.send(&masked(FIN | CLOSE, &close_payload(code, b"")))
            .await;
        peer.expect_close(Some(1002)).await;
    }
}

async fn case_9_large_messages(node: Arc<Node>) {
    let addr = node.addr();
    let sizes = [64 * 1024, 256 * 1024, MAX_MESSAGE_SIZE];
    for (group, opcode) in [(1, TEXT), (2, BINARY)] {
        for (index, size) in sizes.into_iter().enumerate() {
            let case = format!("9.{group}.{} ({size} bytes)", index + 1);
            let payload = payload_for(opcode, size, 9);
            echo_case(addr, &case, opcode, &payload, None).await;
        }
    }

    // One message at the limit, in fragments of every power of four from 64 bytes.
    let fragment_sizes = [
        64usize,
        256,
        1024,
        4096,
        16384,
        65536,
        262_144,
        MAX_MESSAGE_SIZE,
    ];
    for (group, opcode) in [(3, TEXT), (4, BINARY)] {
        let payload = payload_for(opcode, MAX_MESSAGE_SIZE, 94);
        for (index, fragment) in fragment_sizes.into_iter().enumerate() {
            let case = format!("9.{group}.{} ({fragment}-byte fragments)", index + 1);
            let mut peer = Peer::open(addr, &case, None).await;
            let count = payload.len().div_ceil(fragment);
            let mut bytes = Vec::with_capacity(payload.len() + count * 14);
            for (i, part) in payload.chunks(fragment).enumerate() {
                let op = if i == 0 { opcode } else { CONTINUATION };
                let fin = if i + 1 == count { FIN } else { 0 };
                bytes.extend(masked(fin | op, part));
            }
            peer.send(&bytes).await;
            peer.expect_echo(opcode, &payload).await;
            peer.close_cleanly().await;
        }
    }

    // One message at the limit, written in chunks.
    for (group, opcode) in [(5, TEXT), (6, BINARY)] {
        let payload = payload_for(opcode, MAX_MESSAGE_SIZE, 95);
        for (index, chunk) in [256usize, 4096, 65536].into_iter().enumerate() {
            let case = format!("9.{group}.{} ({chunk}-byte writes)", index + 1);
            let mut peer = Peer::open(addr, &case, None).await;
            peer.send_chunked(&masked(FIN | opcode, &payload), chunk)
                .await;
            peer.expect_echo(opcode, &payload).await;
            peer.close_cleanly().await;
        }
    }
}

async fn case_9_7_many_small_messages_pipelined(node: Arc<Node>) {
    for (case, opcode) in [
        ("9.7 (10,000 x 16 B text)", TEXT),
        ("9.8 (10,000 x 16 B binary)", BINARY),
    ] {
        let peer = Peer::open(node.addr(), case, None).await;
        let (mut reader, mut writer) = tokio::io::split(peer.stream);
        let messages: Vec<Vec<u8>> = (0..10_000u32)
            .map(|i| format!("message {i:>8}").into_bytes())
            .collect();
        assert!(messages.iter().all(|m| m.len() == 16));
        let bytes: Vec<u8> = messages
            .iter()
            .flat_map(|m| masked(FIN | opcode, m))
            .collect();
        let writer_case = case.to_owned();
        let write = tokio::spawn(async move {
            write_all(&mut writer, &bytes, &writer_case).await;
            writer
        });
        let started = std::time::Instant::now();
        for (i, message) in messages.iter().enumerate() {
            let frame = expect_frame(&mut reader, case).await;
            assert_eq!(
                frame.opcode, opcode,
                "{case}: echo {i} has the wrong opcode"
            );
            assert!(frame.fin, "{case}: echo {i} is fragmented");
            assert_eq!(
                &frame.payload, message,
                "{case}: echo {i} is out of order or wrong"
            );
        }
        eprintln!("{case}: 10,000 echoes in {:?}", started.elapsed());
        let mut writer = write.await.expect("writer task");
        write_all(
            &mut writer,
            &masked(FIN | CLOSE, &close_payload(1000, b"")),
            case,
        )
        .await;
        let reply = expect_frame(&mut reader, case).await;
        assert_eq!(reply.opcode, CLOSE, "{case}: expected the close reply");
        assert_eq!(reply.close_code(), Some(1000), "{case}: wrong close code");
        let end = expect_tcp_end(&mut reader, case).await;
        assert_eq!(
            end,
            TcpEnd::Fin,
            "{case}: the server reset TCP after closing"
        );
    }
}

async fn case_9_over_limit_gets_1009(node: Arc<Node>) {
    let addr = node.addr();

    // Only the header and a few payload bytes are sent: the limit applies to the declared
    // length, before the payload arrives.
    let header_only = |len: u64| {
        let mut bytes = vec![FIN | BINARY, 0x80 | 127];
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        bytes.extend_from_slice(&[0; 16]);
        bytes
    };
    let mut peer = Peer::open(addr, "9.9.1 (one frame of limit + 1 bytes)", None).await;
    peer.send(&header_only(MAX_MESSAGE_SIZE as u64 + 1)).await;
    peer.expect_close(Some(1009)).await;

    let mut peer = Peer::open(addr, "9.9.2 (one full frame of limit + 1 bytes)", None).await;
    peer.send(&masked(FIN | TEXT, &repetitive_text(MAX_MESSAGE_SIZE + 1)))
        .await;
    peer.expect_close(Some(1009)).await;

    // Fragments that are each under the limit but add up to more.
    let mut peer = Peer::open(addr, "9.9.3 (fragments adding up past the limit)", None).await;
    let half = noise(MAX_MESSAGE_SIZE / 2, 7);
    peer.send(&masked(BINARY, &half)).await;
    peer.send(&masked(CONTINUATION, &half)).await;
    peer.send(&masked(FIN | CONTINUATION, &[0])).await;
    peer.expect_close(Some(1009)).await;

    let mut peer = Peer::open(
        addr,
        "9.9.4 (text fragments adding up past the limit)",
        None,
    )
    .await;
    let half = repetitive_text(MAX_MESSAGE_SIZE / 2);
    peer.send(&masked(TEXT, &half)).await;
    peer.send(&masked(CONTINUATION, &half)).await;
    let mut third = vec![FIN | CONTINUATION, 0x80 | 126];
    third.extend_from_slice(&1000u16.to_be_bytes());
    third.extend_from_slice(&[1, 2, 3, 4]);
    peer.send(&third).await;
    peer.expect_close(Some(1009)).await;
}

/// Offers `offer`, runs a set of compressed messages through the echo, and returns the
/// agreed parameters. `expected` lists the parameters the response must contain.
async fn compressed_echo_case(addr: Target, case: &str, offer: &str, expected: &[&str]) {
    let mut peer = Peer::open(addr, case, Some(offer)).await;
    let params = peer
        .agreed_deflate()
        .unwrap_or_else(|| panic!("{case}: permessage-deflate not agreed: {}", peer.response));
    let mut expected: Vec<String> = expected.iter().map(|p| p.to_string()).collect();
    expected.sort();
    assert_eq!(params, expected, "{case}: agreed parameters");

    let value = |name: &str| -> Option<u8> {
        params
            .iter()
            .find_map(|p| p.strip_prefix(&format!("{name}=")))
            .map(|bits| bits.parse().expect("window bits"))
    };
    let server_window = value("server_max_window_bits").unwrap_or(15);
    let client_window = value("client_max_window_bits").unwrap_or(15);
    let server_reset = params.iter().any(|p| p == "server_no_context_takeover");
    let client_reset = params.iter().any(|p| p == "client_no_context_takeover");

    // A client limited to 8 bits uses stored blocks, which zlib can write for any window.
    let (window, level) = if client_window < 9 {
        (9, 0)
    } else {
        (client_window, 6)
    };
    let mut deflater = Deflater::new(window, level, client_reset);
    let mut inflater = Inflater::new(server_window, server_reset);
    let text = repetitive_text(300);
    let messages: Vec<(u8, Vec<u8>)> = vec![
        (TEXT, text.clone()),
        // The same again: with context takeover on both sides, both compressed forms are
        // back-references into the first message.
        (TEXT, text),
        (BINARY, noise(2000, 13)),
        (BINARY, repetitive_text(70_000)),
        (TEXT, b"short".to_vec()),
        (TEXT, "ünïcödé ✓ 𝄞".repeat(40).into_bytes()),
    ];
    for (index, (opcode, payload)) in messages.iter().enumerate() {
        let step = format!("{case} message {}", index + 1);
        let compressed = deflater.compress(payload);
        peer.send(&masked(FIN | RSV1 | opcode, &compressed)).await;
        let (got_opcode, got_rsv1, got) = peer.message().await;
        assert_eq!(got_opcode, *opcode, "{step}: echo has the wrong opcode");
        let echoed = if got_rsv1 {
            inflater
                .decompress(&got)
                .unwrap_or_else(|error| panic!("{step}: echo does not decompress: {error}"))
        } else {
            got
        };
        assert!(
            echoed == *payload,
            "{step}: echo differs after decompression"
        );
    }

    // A compressed message in three fragments: RSV1 on the first frame only.
    let step = format!("{case} fragmented");
    let payload = repetitive_text(8000);
    let compressed = deflater.compress(&payload);
    let third = compressed.len() / 3;
    let frames = [
        masked(RSV1 | TEXT, &compressed[..third]),
        masked(CONTINUATION, &compressed[third..2 * third]),
        masked(FIN | CONTINUATION, &compressed[2 * third..]),
    ]
    .concat();
    peer.send(&frames).await;
    let (_, got_rsv1, got) = peer.message().await;
    let echoed = if got_rsv1 {
        inflater
            .decompress(&got)
            .unwrap_or_else(|error| panic!("{step}: {error}"))
    } else {
        got
    };
    assert!(
        echoed == payload,
        "{step}: echo differs after decompression"
    );

    // An uncompressed message is still allowed.
    let step = format!("{case} uncompressed");
    let plain = repetitive_text(100);
    peer.send(&masked(FIN | TEXT, &plain)).await;
    let (_, got_rsv1, got) = peer.message().await;
    let echoed = if got_rsv1 {
        inflater
            .decompress(&got)
            .unwrap_or_else(|error| panic!("{step}: {error}"))
    } else {
        got
    };
    assert!(echoed == plain, "{step}: echo differs after decompression");
    peer.close_cleanly().await;
}

async fn case_12_compressed_payloads(node: Arc<Node>) {
    let addr = node.addr();
    let mut peer = Peer::open(addr, "12.1 (payload sizes)", Some("permessage-deflate")).await;
    assert_eq!(
        peer.agreed_deflate(),
        Some(vec![]),
        "12.1: {}",
        peer.response
    );
    let mut deflater = Deflater::new(15, 6, false);
    let mut inflater = Inflater::new(15, false);
    let sizes = [
        0usize,
        1,
        16,
        63,
        64,
        65,
        125,
        126,
        1000,
        16 * 1024,
        64 * 1024,
        256 * 1024,
    ];
    for (opcode, kind) in [(TEXT, "text"), (BINARY, "binary")] {
        for size in sizes {
            let step = format!("12.1 ({size}-byte {kind})");
            let payload = payload_for(opcode, size, size as u32);
            peer.send(&masked(FIN | RSV1 | opcode, &deflater.compress(&payload)))
                .await;
            let (got_opcode, got_rsv1, got) = peer.message().await;
            assert_eq!(got_opcode, opcode, "{step}: wrong opcode");
            let echoed = if got_rsv1 {
                inflater
                    .decompress(&got)
                    .unwrap_or_else(|error| panic!("{step}: {error}"))
            } else {
                got
            };
            assert!(
                echoed == payload,
                "{step}: echo differs after decompression"
            );
            // The server compresses text of at least 64 bytes, which compresses well.
            if opcode == TEXT && size >= 64 {
                assert!(
                    got_rsv1,
                    "{step}: the echo of compressible text is not compressed"
                );
            }
            if size < 64 {
                assert!(!got_rsv1, "{step}: a message under 64 bytes was compressed");
            }
        }
    }
    peer.close_cleanly().await;

    // A compressed empty message as the single byte 0x00 (an empty stored block without
    // BFINAL is 00 00 00 ff ff, of which permessage-deflate strips 00 00 ff ff).
    let mut peer = Peer::open(
        addr,
        "12.2 (empty message as 0x00)",
        Some("permessage-deflate"),
    )
    .await;
    peer.send(&masked(FIN | RSV1 | TEXT, &[0x00])).await;
    peer.expect_echo(TEXT, b"").await;
    peer.close_cleanly().await;

    // A message ended with a BFINAL block (RFC 7692 section 7.2.3.4).
    let mut peer = Peer::open(
        addr,
        "12.3 (message ending with BFINAL)",
        Some("permessage-deflate"),
    )
    .await;
    let payload = repetitive_text(500);
    let mut stream = flate2::Compress::new(flate2::Compression::new(6), false);
    let mut compressed = Vec::with_capacity(2048);
    stream
        .compress_vec(&payload, &mut compressed, flate2::FlushCompress::Finish)
        .expect("deflate with BFINAL");
    peer.send(&masked(FIN | RSV1 | TEXT, &compressed)).await;
    let (_, got_rsv1, got) = peer.message().await;
    let echoed = if got_rsv1 {
        Inflater::new(15, false)
            .decompress(&got)
            .unwrap_or_else(|error| panic!("12.3: {error}"))
    } else {
        got
    };
    assert!(echoed == payload, "12.3: echo differs after decompression");
    peer.close_cleanly().await;
}

async fn case_13_compression_parameters(node: Arc<Node>) {
    let addr = node.addr();
    let mut cases: Vec<(String, String, Vec<String>)> = vec![
        (
            "13.1 (no parameters)".into(),
            "permessage-deflate".into(),
            vec![],
        ),
        (
            "13.2 (client_max_window_bits without a value)".into(),
            "permessage-deflate; client_max_window_bits".into(),
            vec![],
        ),
        (
            "13.3 (server_no_context_takeover)".into(),
            "permessage-deflate; server_no_context_takeover".into(),
            vec!["server_no_context_takeover".into()],
        ),
        (
            "13.4 (client_no_context_takeover)".into(),
            "permessage-deflate; client_no_context_takeover".into(),
            vec!["client_no_context_takeover".into()],
        ),
        (
            "13.5 (both no_context_takeover)".into(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover".into(),
            vec![
                "client_no_context_takeover".into(),
                "server_no_context_takeover".into(),
            ],
        ),
    ];
    for bits in 9..=15u8 {
        cases.push((
            format!("13.6.{bits} (server_max_window_bits={bits})"),
            format!("permessage-deflate; server_max_window_bits={bits}"),
            vec![format!("server_max_window_bits={bits}")],
        ));
    }
    for bits in 8..=15u8 {
        cases.push((
            format!("13.7.{bits} (client_max_window_bits={bits})"),
            format!("permessage-deflate; client_max_window_bits={bits}"),
            vec![format!("client_max_window_bits={bits}")],
        ));
    }
    for bits in [9u8, 12, 15] {
        cases.push((
            format!("13.8.{bits} (every parameter, windows of {bits} bits)"),
            format!(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits={bits}; client_max_window_bits={bits}"
            ),
            vec![
                "client_no_context_takeover".into(),
                format!("client_max_window_bits={bits}"),
                "server_no_context_takeover".into(),
                format!("server_max_window_bits={bits}"),
            ],
        ));
    }
    cases.push((
        "13.9 (quoted value, odd case and spacing)".into(),
        "Permessage-Deflate ;SERVER_MAX_WINDOW_BITS=\"10\";  client_max_window_bits".into(),
        vec!["server_max_window_bits=10".into()],
    ));
    cases.push((
        "13.10 (first offer declined, second taken)".into(),
        "permessage-deflate; server_max_window_bits=8, permessage-deflate; server_no_context_takeover"
            .into(),
        vec!["server_no_context_takeover".into()],
    ));
    for (case, offer, expected) in &cases {
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        compressed_echo_case(addr, case, offer, &expected).await;
    }

    // Offers the server must decline without failing the handshake.
    let declined = [
        (
            "13.11.1 (server_max_window_bits=8)",
            "permessage-deflate; server_max_window_bits=8",
        ),
        (
            "13.11.2 (window of 16 bits)",
            "permessage-deflate; server_max_window_bits=16",
        ),
        (
            "13.11.3 (server_max_window_bits without a value)",
            "permessage-deflate; server_max_window_bits",
        ),
        ("13.11.4 (unknown parameter)", "permessage-deflate; foo=1"),
        (
            "13.11.5 (repeated parameter)",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        ),
        (
            "13.11.6 (value on a flag)",
            "permessage-deflate; client_no_context_takeover=1",
        ),
        ("13.11.7 (another extension only)", "x-webkit-deflate-frame"),
    ];
    for (case, offer) in declined {
        let mut peer = Peer::open(addr, case, Some(offer)).await;
        assert_eq!(
            header_value(&peer.response, "sec-websocket-extensions"),
            None,
            "{case}: the offer was not declined: {}",
            peer.response
        );
        // Without the extension, RSV1 is a protocol error.
        peer.send(&masked(
            FIN | RSV1 | TEXT,
            &Deflater::new(15, 6, false).compress(b"Hello"),
        ))
        .await;
        peer.expect_close(Some(1002)).await;
    }
}

async fn case_13_compression_faults(node: Arc<Node>) {
    let addr = node.addr();
    let offer = Some("permessage-deflate");
    let compressed_hello = Deflater::new(15, 6, false).compress(b"Hello, compressed world");

    let faults: [(&str, Vec<u8>, u16); 7] = [
        (
            "13.12.1 (RSV1 on a continuation)",
            [
                masked(RSV1 | TEXT, &compressed_hello[..4]),
                masked(FIN | RSV1 | CONTINUATION, &compressed_hello[4..]),
            ]
            .concat(),
            1002,
        ),
        (
            "13.12.2 (RSV1 on a continuation of an uncompressed message)",
            [
                masked(TEXT, b"Hello"),
                masked(FIN | RSV1 | CONTINUATION, b"World"),
            ]
            .concat(),
            1002,
        ),
        (
            "13.12.3 (RSV1 on a ping)",
            masked(FIN | RSV1 | PING, b"ping"),
            1002,
        ),
        (
            "13.12.4 (RSV1 on a pong)",
            masked(FIN | RSV1 | PONG, b"pong"),
            1002,
        ),
        (
            "13.12.5 (RSV1 on a close)",
            masked(FIN | RSV1 | CLOSE, &close_payload(1000, b"")),
            1002,
        ),
        (
            "13.12.6 (RSV2 with the extension)",
            masked(FIN | RSV2 | TEXT, b"Hello"),
            1002,
        ),
        (
            "13.12.7 (invalid DEFLATE data)",
            masked(FIN | RSV1 | BINARY, &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            1007,
        ),
    ];
    for (case, bytes, expected) in faults {
        let mut peer = Peer::open(addr, case, offer).await;
        assert!(peer.agreed_deflate().is_some(), "{case}: not agreed");
        peer.send(&bytes).await;
        peer.expect_close(Some(expected)).await;
    }

    let mut peer = Peer::open(addr, "13.12.8 (compressed text that is not UTF-8)", offer).await;
    let invalid = Deflater::new(15, 6, false).compress(&[b'a', 0xff, 0xfe, b'b']);
    peer.send(&masked(FIN | RSV1 | TEXT, &invalid)).await;
    peer.expect_close(Some(1007)).await;

    // 2 MiB of zeros compress to about 2 KiB, and decompress past the 1 MiB limit.
    let mut peer = Peer::open(addr, "13.12.9 (compressed message over the limit)", offer).await;
    let bomb = Deflater::new(15, 9, false).compress(&vec![0u8; 2 * MAX_MESSAGE_SIZE]);
    assert!(
        bomb.len() < 16 * 1024,
        "13.12.9: the test payload compressed poorly"
    );
    peer.send(&masked(FIN | RSV1 | BINARY, &bomb)).await;
    peer.expect_close(Some(1009)).await;

    // The same message at exactly the limit passes.
    let mut peer = Peer::open(addr, "13.12.10 (compressed message at the limit)", offer).await;
    let zeros = vec![0u8; MAX_MESSAGE_SIZE];
    let mut inflater = Inflater::new(15, false);
    peer.send(&masked(
        FIN | RSV1 | BINARY,
        &Deflater::new(15, 9, false).compress(&zeros),
    ))
    .await;
    let (_, got_rsv1, got) = peer.message().await;
    assert!(
        got_rsv1,
        "13.12.10: the echo of 1 MiB of zeros is not compressed"
    );
    let echoed = inflater
        .decompress(&got)
        .unwrap_or_else(|error| panic!("13.12.10: {error}"));
    assert!(
        echoed == zeros,
        "13.12.10: echo differs after decompression"
    );
    peer.close_cleanly().await;
}

async fn case_13_server_settings(transport: Transport) {
    let node = Node::start(transport, &["--compression-window-bits", "10"]);
    compressed_echo_case(
        node.addr(),
        "13.13.1 (node with a 10-bit window, plain offer)",
        "permessage-deflate",
        &["server_max_window_bits=10"],
    )
    .await;
    compressed_echo_case(
        node.addr(),
        "13.13.2 (node with a 10-bit window, client asks for 12)",
        "permessage-deflate; server_max_window_bits=12",
        &["server_max_window_bits=10"],
    )
    .await;
    compressed_echo_case(
        node.addr(),
        "13.13.3 (node with a 10-bit window, client asks for 9)",
        "permessage-deflate; server_max_window_bits=9",
        &["server_max_window_bits=9"],
    )
    .await;

    let node = Node::start(transport, &["--no-compression"]);
    let case = "13.13.4 (node without compression)";
    let mut peer = Peer::open(node.addr(), case, Some("permessage-deflate")).await;
    assert_eq!(
        header_value(&peer.response, "sec-websocket-extensions"),
        None,
        "{case}: {}",
        peer.response
    );
    peer.send(&masked(
        FIN | RSV1 | TEXT,
        &Deflater::new(15, 6, false).compress(b"Hello"),
    ))
    .await;
    peer.expect_close(Some(1002)).await;
}

/// The window check of [`Inflater`] must be able to fail, or the window cases above would
/// prove nothing: a stream made with a 15-bit window that refers 1000 bytes back must not
/// decompress with a 9-bit window.
#[tokio::test]
async fn inflater_rejects_distances_beyond_its_window() {
    let block = noise(1000, 99);
    let message = [block.clone(), block].concat();
    let compressed = Deflater::new(15, 6, false).compress(&message);
    assert!(compressed.len() < 1500, "the test data did not compress");
    assert_eq!(
        Inflater::new(15, false).decompress(&compressed).as_deref(),
        Ok(&message[..])
    );
    assert!(Inflater::new(9, false).decompress(&compressed).is_err());
}

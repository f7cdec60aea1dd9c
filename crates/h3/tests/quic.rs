//! pylon-h3 over real QUIC connections on loopback: tunnels, faults and GOAWAY.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use pylon_h3::{
    ClientConnection, Code, Config, Error, H3Stream, IncomingRequest, Protocol, ServerConnection,
};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

struct Certificate {
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn certificate() -> Certificate {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    Certificate {
        cert: generated.cert.der().clone(),
        key: PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()).into(),
    }
}

fn server_endpoint(certificate: &Certificate) -> quinn::Endpoint {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certificate.cert.clone()], certificate.key.clone_key())
        .unwrap();
    tls.alpn_protocols = vec![pylon_h3::ALPN.to_vec()];
    let config =
        quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls).unwrap()));
    quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap()
}

fn client_endpoint(certificate: &Certificate) -> quinn::Endpoint {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certificate.cert.clone()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![pylon_h3::ALPN.to_vec()];
    let mut config = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
    let mut transport = quinn::TransportConfig::default();
    // A server must not open bidirectional streams (RFC 9114 section 6.1).
    transport.max_concurrent_bidi_streams(0u32.into());
    config.transport_config(Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(config);
    endpoint
}

/// Echoes every tunnel opened with `:protocol = echo`; other requests get 400.
async fn serve_echo(endpoint: quinn::Endpoint, config: Config) {
    while let Some(incoming) = endpoint.accept().await {
        let config = config.clone();
        tokio::spawn(async move {
            let Ok(quic) = incoming.await else { return };
            let mut server = ServerConnection::new(quic, config).await.unwrap();
            while let Some(IncomingRequest {
                request,
                mut stream,
            }) = server.accept().await
            {
                let protocol = request.extensions().get::<Protocol>().cloned();
                if protocol != Some(Protocol("echo".into())) {
                    let response = Response::builder()
                        .status(StatusCode::BAD_REQUEST)
                        .body(())
                        .unwrap();
                    stream.send_final_response(&response).await.unwrap();
                    continue;
                }
                let response = Response::builder()
                    .status(StatusCode::OK)
                    .header("x-path", request.uri().path())
                    .body(())
                    .unwrap();
                stream.send_response(&response).await.unwrap();
                let mut tunnel = stream.into_tunnel();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    loop {
                        match tunnel.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if tunnel.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = tunnel.shutdown().await;
                });
            }
        });
    }
}

struct Setup {
    addr: SocketAddr,
    client: quinn::Endpoint,
}

fn start_echo() -> Setup {
    start_echo_with(Config::default())
}

fn start_echo_with(config: Config) -> Setup {
    let certificate = certificate();
    let server = server_endpoint(&certificate);
    let addr = server.local_addr().unwrap();
    tokio::spawn(serve_echo(server, config));
    Setup {
        addr,
        client: client_endpoint(&certificate),
    }
}

async fn quic_connect(setup: &Setup) -> quinn::Connection {
    setup
        .client
        .connect(setup.addr, "localhost")
        .unwrap()
        .await
        .unwrap()
}

fn connect_request(path: &str) -> Request<()> {
    Request::builder()
        .method(Method::CONNECT)
        .uri(format!("https://localhost{path}"))
        .body(())
        .unwrap()
}

async fn open_echo(client: &ClientConnection, path: &str) -> H3Stream {
    let (response, tunnel) = client
        .connect(&connect_request(path), Some("echo"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-path"], path);
    tunnel
}

#[tokio::test]
async fn many_tunnels_share_one_connection() {
    let setup = start_echo();
    let client = ClientConnection::new(quic_connect(&setup).await, Config::default())
        .await
        .unwrap();
    assert!(client.peer_settings().enable_connect_protocol);
    let mut tasks = Vec::new();
    for index in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut tunnel = open_echo(&client, &format!("/echo/{index}")).await;
            for round in 0..20usize {
                let message: Vec<u8> = (0..(round * 997 + index))
                    .map(|i| (i + index) as u8)
                    .collect();
                tunnel.write_all(&message).await.unwrap();
                let mut echoed = vec![0u8; message.len()];
                tunnel.read_exact(&mut echoed).await.unwrap();
                assert_eq!(echoed, message, "tunnel {index} round {round}");
            }
            tunnel.shutdown().await.unwrap();
            let mut rest = Vec::new();
            tunnel.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
        }));
    }
    for task in tasks {
        tokio::time::timeout(TIMEOUT, task).await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn unknown_protocol_gets_response_not_tunnel() {
    let setup = start_echo();
    let client = ClientConnection::new(quic_connect(&setup).await, Config::default())
        .await
        .unwrap();
    let (response, _) = client
        .connect(&connect_request("/x"), Some("other"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // The connection still carries other tunnels.
    let mut tunnel = open_echo(&client, "/after").await;
    tunnel.write_all(b"still here").await.unwrap();
    let mut echoed = [0u8; 10];
    tunnel.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"still here");
}

#[tokio::test]
async fn reset_tunnel_leaves_others_running() {
    let setup = start_echo();
    let client = ClientConnection::new(quic_connect(&setup).await, Config::default())
        .await
        .unwrap();
    let mut kept = open_echo(&client, "/kept").await;
    let mut reset = open_echo(&client, "/reset").await;
    // Half a message, then a reset.
    reset.write_all(b"partial").await.unwrap();
    reset.reset(Code::H3_REQUEST_CANCELLED);
    let mut buf = [0u8; 8];
    assert!(reset.read(&mut buf).await.map(|n| n == 0).unwrap_or(true));
    kept.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tokio::time::timeout(TIMEOUT, kept.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"ping");
}

#[tokio::test]
async fn server_reset_ends_client_read_with_error() {
    let certificate = certificate();
    let server = server_endpoint(&certificate);
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        let quic = server.accept().await.unwrap().await.unwrap();
        let mut h3 = ServerConnection::new(quic, Config::default())
            .await
            .unwrap();
        let mut tunnels = Vec::new();
        while let Some(incoming) = h3.accept().await {
            let mut stream = incoming.stream;
            stream.send_response(&Response::new(())).await.unwrap();
            let mut tunnel = stream.into_tunnel();
            if incoming.request.uri().path() == "/reset" {
                // Part of a DATA frame, then a reset in the middle of it.
                // The reset waits for the client's signal, so the response is not
                // discarded with it.
                tunnel.write_all(b"half").await.unwrap();
                let mut signal = [0u8; 1];
                tunnel.read_exact(&mut signal).await.unwrap();
                tunnel.reset(Code::H3_INTERNAL_ERROR);
            } else {
                tunnel.write_all(b"whole").await.unwrap();
            }
            tunnels.push(tunnel);
        }
    });
    let client_endpoint = client_endpoint(&certificate);
    let quic = client_endpoint
        .connect(addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let client = ClientConnection::new(quic, Config::default())
        .await
        .unwrap();
    let (_, mut reset) = client
        .connect(&connect_request("/reset"), Some("echo"))
        .await
        .unwrap();
    let mut half = [0u8; 4];
    reset.read_exact(&mut half).await.unwrap();
    assert_eq!(&half, b"half");
    reset.write_all(b"!").await.unwrap();
    let mut buf = Vec::new();
    let error = tokio::time::timeout(TIMEOUT, reset.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap_err();
    assert!(error.to_string().contains("reset"), "{error}");
    let (_, mut whole) = client
        .connect(&connect_request("/whole"), Some("echo"))
        .await
        .unwrap();
    let mut echoed = [0u8; 5];
    tokio::time::timeout(TIMEOUT, whole.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"whole");
}

#[tokio::test]
async fn goaway_stops_new_requests_only() {
    let certificate = certificate();
    let server = server_endpoint(&certificate);
    let addr = server.local_addr().unwrap();
    let (shutdown_sender, shutdown_receiver) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let quic = server.accept().await.unwrap().await.unwrap();
        let mut h3 = ServerConnection::new(quic, Config::default())
            .await
            .unwrap();
        let incoming = h3.accept().await.unwrap();
        let mut stream = incoming.stream;
        stream.send_response(&Response::new(())).await.unwrap();
        let mut tunnel = stream.into_tunnel();
        shutdown_receiver.await.unwrap();
        h3.shutdown().await.unwrap();
        let mut buf = [0u8; 5];
        tunnel.read_exact(&mut buf).await.unwrap();
        tunnel.write_all(&buf).await.unwrap();
        tunnel.shutdown().await.unwrap();
        // Keep the connection until the client is done.
        let _ = h3.accept().await;
    });
    let client_endpoint = client_endpoint(&certificate);
    let quic = client_endpoint
        .connect(addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let client = ClientConnection::new(quic, Config::default())
        .await
        .unwrap();
    let (_, mut tunnel) = client
        .connect(&connect_request("/a"), Some("echo"))
        .await
        .unwrap();
    shutdown_sender.send(()).unwrap();
    tokio::time::timeout(TIMEOUT, async {
        while client.is_usable() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    let error = client
        .connect(&connect_request("/b"), Some("echo"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::GoingAway), "{error}");
    tunnel.write_all(b"after").await.unwrap();
    let mut echoed = [0u8; 5];
    tokio::time::timeout(TIMEOUT, tunnel.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"after");
}

#[tokio::test]
async fn client_times_out_without_settings() {
    let certificate = certificate();
    let server = server_endpoint(&certificate);
    let addr = server.local_addr().unwrap();
    // A QUIC server that never opens a control stream.
    tokio::spawn(async move {
        let quic = server.accept().await.unwrap().await.unwrap();
        quic.closed().await;
    });
    let client_endpoint = client_endpoint(&certificate);
    let quic = client_endpoint
        .connect(addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let config = Config {
        settings_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let error = tokio::time::timeout(TIMEOUT, ClientConnection::new(quic, config))
        .await
        .unwrap()
        .unwrap_err();
    assert!(matches!(error, Error::SettingsTimeout(_)), "{error}");
}

#[tokio::test]
async fn extended_connect_needs_server_setting() {
    let certificate = certificate();
    let server = server_endpoint(&certificate);
    let addr = server.local_addr().unwrap();
    // A server whose SETTINGS lack SETTINGS_ENABLE_CONNECT_PROTOCOL.
    tokio::spawn(async move {
        let quic = server.accept().await.unwrap().await.unwrap();
        let mut control = quic.open_uni().await.unwrap();
        // Stream type 0x00, then SETTINGS (0x04) of 4 bytes: QPACK capacity 0, blocked 0.
        control
            .write_all(&[0x00, 0x04, 0x04, 0x01, 0x00, 0x07, 0x00])
            .await
            .unwrap();
        quic.closed().await;
    });
    let client_endpoint = client_endpoint(&certificate);
    let quic = client_endpoint
        .connect(addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let client = tokio::time::timeout(TIMEOUT, ClientConnection::new(quic, Config::default()))
        .await
        .unwrap()
        .unwrap();
    let error = tokio::time::timeout(
        TIMEOUT,
        client.connect(&connect_request("/ws"), Some("websocket")),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(error, Error::ConnectProtocolDisabled), "{error}");
}

/// A raw QUIC client that speaks to a pylon-h3 server byte by byte.
struct RawClient {
    quic: quinn::Connection,
}

impl RawClient {
    async fn connect(setup: &Setup) -> Self {
        Self {
            quic: quic_connect(setup).await,
        }
    }

    async fn open_control(&self, bytes: &[u8]) -> quinn::SendStream {
        let mut control = self.quic.open_uni().await.unwrap();
        control.write_all(bytes).await.unwrap();
        control
    }

    /// Sends a valid control stream with empty SETTINGS.
    async fn valid_control(&self) -> quinn::SendStream {
        self.open_control(&[0x00, 0x04, 0x00]).await
    }

    async fn closed_with(&self) -> u64 {
        let error = tokio::time::timeout(TIMEOUT, self.quic.closed())
            .await
            .unwrap();
        match error {
            quinn::ConnectionError::ApplicationClosed(close) => close.error_code.into_inner(),
            other => panic!("connection closed without an application code: {other}"),
        }
    }

    async fn request(&self, bytes: &[u8]) -> (quinn::SendStream, quinn::RecvStream) {
        let (mut send, recv) = self.quic.open_bi().await.unwrap();
        send.write_all(bytes).await.unwrap();
        (send, recv)
    }
}

/// Encodes a HEADERS frame from field lines.
fn headers_frame(lines: &[(&str, &str)]) -> Vec<u8> {
    let section = pylon_h3::qpack::encode_field_section(
        lines
            .iter()
            .map(|(name, value)| (name.as_bytes(), value.as_bytes())),
    );
    let mut bytes = Vec::new();
    pylon_h3::frame::encode(pylon_h3::frame::HEADERS, &section, &mut bytes);
    bytes
}

const ECHO_REQUEST: [(&str, &str); 5] = [
    (":method", "CONNECT"),
    (":protocol", "echo"),
    (":scheme", "https"),
    (":authority", "localhost"),
    (":path", "/raw"),
];

#[tokio::test]
async fn connection_faults_close_with_right_code() {
    let setup = start_echo();
    let cases: Vec<(&str, Vec<Vec<u8>>, Code)> = vec![
        (
            "first frame not SETTINGS",
            vec![vec![0x00, 0x07, 0x01, 0x00]],
            Code::H3_MISSING_SETTINGS,
        ),
        (
            "HTTP/2 setting",
            vec![vec![0x00, 0x04, 0x02, 0x02, 0x00]],
            Code::H3_SETTINGS_ERROR,
        ),
        (
            "second SETTINGS",
            vec![vec![0x00, 0x04, 0x00, 0x04, 0x00]],
            Code::H3_FRAME_UNEXPECTED,
        ),
        (
            "DATA on control",
            vec![vec![0x00, 0x04, 0x00, 0x00, 0x01, 0xff]],
            Code::H3_FRAME_UNEXPECTED,
        ),
        (
            "HTTP/2 PING frame",
            vec![vec![0x00, 0x04, 0x00, 0x06, 0x00]],
            Code::H3_FRAME_UNEXPECTED,
        ),
        (
            "GOAWAY with two varints",
            vec![vec![0x00, 0x04, 0x00, 0x07, 0x02, 0x00, 0x00]],
            Code::H3_FRAME_ERROR,
        ),
        (
            "oversized SETTINGS",
            vec![vec![0x00, 0x04, 0x80, 0x10, 0x00, 0x00]],
            Code::H3_EXCESSIVE_LOAD,
        ),
        (
            "two control streams",
            vec![vec![0x00, 0x04, 0x00], vec![0x00, 0x04, 0x00]],
            Code::H3_STREAM_CREATION_ERROR,
        ),
        (
            "control stream closed",
            vec![],
            Code::H3_CLOSED_CRITICAL_STREAM,
        ),
        (
            "push stream to a server",
            vec![vec![0x00, 0x04, 0x00], vec![0x01, 0x00]],
            Code::H3_STREAM_CREATION_ERROR,
        ),
        (
            "encoder inserts",
            vec![vec![0x00, 0x04, 0x00], vec![0x02, 0xc0, 0x00]],
            Code::QPACK_ENCODER_STREAM_ERROR,
        ),
        (
            "decoder acknowledges",
            vec![vec![0x00, 0x04, 0x00], vec![0x03, 0x80]],
            Code::QPACK_DECODER_STREAM_ERROR,
        ),
    ];
    for (case, streams, code) in cases {
        let raw = RawClient::connect(&setup).await;
        let mut kept = Vec::new();
        if streams.is_empty() {
            let mut control = raw.valid_control().await;
            control.finish().unwrap();
            kept.push(control);
        }
        for bytes in &streams {
            kept.push(raw.open_control(bytes).await);
        }
        if case == "control stream ends inside a varint" {
            for stream in &mut kept {
                stream.finish().unwrap();
            }
        }
        assert_eq!(raw.closed_with().await, code.0, "{case}");
    }
}

#[tokio::test]
async fn request_stream_faults() {
    let setup = start_echo();

    // Bad QPACK closes the connection.
    let raw = RawClient::connect(&setup).await;
    let _control = raw.valid_control().await;
    let _stream = raw.request(&[0x01, 0x03, 0x00, 0x00, 0x80]).await;
    assert_eq!(
        raw.closed_with().await,
        Code::QPACK_DECOMPRESSION_FAILED.0,
        "dynamic reference"
    );

    // DATA before HEADERS closes the connection.
    let raw = RawClient::connect(&setup).await;
    let _control = raw.valid_control().await;
    let _stream = raw.request(&[0x00, 0x01, 0xaa]).await;
    assert_eq!(
        raw.closed_with().await,
        Code::H3_FRAME_UNEXPECTED.0,
        "DATA before HEADERS"
    );

    // PUSH_PROMISE sent to a server closes the connection.
    let raw = RawClient::connect(&setup).await;
    let _control = raw.valid_control().await;
    let _stream = raw.request(&[0x05, 0x01, 0x00]).await;
    assert_eq!(
        raw.closed_with().await,
        Code::H3_FRAME_UNEXPECTED.0,
        "PUSH_PROMISE"
    );
}

async fn reset_code(recv: &mut quinn::RecvStream) -> u64 {
    let mut buf = Vec::new();
    let result = tokio::time::timeout(TIMEOUT, async {
        loop {
            match recv.read_chunk(1024, true).await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
                Ok(None) => return None,
                Err(quinn::ReadError::Reset(code)) => return Some(code.into_inner()),
                Err(error) => panic!("read failed: {error}"),
            }
        }
    })
    .await
    .unwrap();
    result.unwrap_or_else(|| panic!("stream finished without reset after {} bytes", buf.len()))
}

#[tokio::test]
async fn malformed_requests_reset_only_their_stream() {
    let setup = start_echo();
    let raw = RawClient::connect(&setup).await;
    let _control = raw.valid_control().await;

    let missing_path: Vec<(&str, &str)> = ECHO_REQUEST
        .iter()
        .copied()
        .filter(|(name, _)| *name != ":path")
        .collect();
    let mut uppercase = ECHO_REQUEST.to_vec();
    uppercase.push(("Sec-WebSocket-Version", "13"));
    let mut connection_header = ECHO_REQUEST.to_vec();
    connection_header.push(("connection", "upgrade"));
    let mut oversized = vec![0x01];
    oversized.extend_from_slice(&[0x80, 0x10, 0x00, 0x00]);
    let cases: Vec<(&str, Vec<u8>, Code)> = vec![
        (
            "missing :path",
            headers_frame(&missing_path),
            Code::H3_MESSAGE_ERROR,
        ),
        (
            "uppercase name",
            headers_frame(&uppercase),
            Code::H3_MESSAGE_ERROR,
        ),
        (
            "connection header",
            headers_frame(&connection_header),
            Code::H3_MESSAGE_ERROR,
        ),
        ("HEADERS over the limit", oversized, Code::H3_EXCESSIVE_LOAD),
    ];
    for (case, bytes, code) in cases {
        let (_send, mut recv) = raw.request(&bytes).await;
        assert_eq!(reset_code(&mut recv).await, code.0, "{case}");
    }

    // The connection still serves a valid request, after an unknown frame type.
    let mut request = vec![0x21, 0x02, 0xab, 0xcd];
    request.extend_from_slice(&headers_frame(&ECHO_REQUEST));
    let (mut send, mut recv) = raw.request(&request).await;
    let mut frame = Vec::new();
    pylon_h3::frame::encode(pylon_h3::frame::DATA, b"hello", &mut frame);
    send.write_all(&frame).await.unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(TIMEOUT, async {
        while !received.ends_with(b"hello") {
            let chunk = recv.read_chunk(1024, true).await.unwrap().unwrap();
            received.extend_from_slice(&chunk.bytes);
        }
    })
    .await
    .unwrap();
    assert!(raw.quic.close_reason().is_none());
}

#[tokio::test]
async fn tunnel_rejects_headers_after_connect() {
    let setup = start_echo();
    let raw = RawClient::connect(&setup).await;
    let _control = raw.valid_control().await;
    let mut request = headers_frame(&ECHO_REQUEST);
    // Trailers on a CONNECT stream are not allowed.
    request.extend_from_slice(&headers_frame(&[("x-trailer", "1")]));
    let _stream = raw.request(&request).await;
    assert_eq!(raw.closed_with().await, Code::H3_FRAME_UNEXPECTED.0);
}

#[tokio::test]
async fn vectored_write_is_one_data_frame() {
    let certificate = certificate();
    let server = server_endpoint(&certificate);
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        let quic = server.accept().await.unwrap().await.unwrap();
        let mut h3 = ServerConnection::new(quic, Config::default())
            .await
            .unwrap();
        let incoming = h3.accept().await.unwrap();
        let mut stream = incoming.stream;
        stream.send_response(&Response::new(())).await.unwrap();
        let mut tunnel = stream.into_tunnel();
        let slices = [std::io::IoSlice::new(b"ab"), std::io::IoSlice::new(b"cd")];
        let written = tunnel.write_vectored(&slices).await.unwrap();
        assert_eq!(written, 4);
        tunnel.shutdown().await.unwrap();
        let _ = h3.accept().await;
    });
    let setup = Setup {
        addr,
        client: client_endpoint(&certificate),
    };
    let raw = RawClient::connect(&setup).await;
    let _control = raw.valid_control().await;
    let (_send, mut recv) = raw.request(&headers_frame(&ECHO_REQUEST)).await;
    let bytes = tokio::time::timeout(TIMEOUT, recv.read_to_end(1024))
        .await
        .unwrap()
        .unwrap();
    // Skip the HEADERS frame of the response; the rest must be one DATA frame.
    assert_eq!(bytes[0], 0x01, "response starts with HEADERS");
    let headers_len = usize::from(bytes[1]);
    assert_eq!(
        &bytes[2 + headers_len..],
        [0x00, 0x04, b'a', b'b', b'c', b'd']
    );
}

#[tokio::test]
async fn tunnel_reads_frames_split_into_bytes() {
    let setup = start_echo();
    let raw = RawClient::connect(&setup).await;
    let _control = raw.valid_control().await;
    let (mut send, mut recv) = raw.request(&headers_frame(&ECHO_REQUEST)).await;
    // A reserved frame type, then two DATA frames, sent one byte per write with a pause,
    // so each byte arrives in a packet of its own.
    let mut bytes = vec![0x21, 0x01, 0xff];
    pylon_h3::frame::encode(pylon_h3::frame::DATA, b"split", &mut bytes);
    pylon_h3::frame::encode(pylon_h3::frame::DATA, &[7u8; 300], &mut bytes);
    for byte in &bytes {
        send.write_all(std::slice::from_ref(byte)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    send.finish().unwrap();
    let received = tokio::time::timeout(TIMEOUT, recv.read_to_end(4096))
        .await
        .unwrap()
        .unwrap();
    // Skip the response HEADERS; the echo of 305 payload bytes follows in DATA frames.
    let headers_len = usize::from(received[1]);
    let mut payload = Vec::new();
    let mut rest = &received[2 + headers_len..];
    while !rest.is_empty() {
        let (frame_type, used) = pylon_h3::varint::decode(rest).unwrap();
        assert_eq!(frame_type, pylon_h3::frame::DATA);
        let (len, len_used) = pylon_h3::varint::decode(&rest[used..]).unwrap();
        let start = used + len_used;
        payload.extend_from_slice(&rest[start..start + len as usize]);
        rest = &rest[start + len as usize..];
    }
    let mut expected = b"split".to_vec();
    expected.extend_from_slice(&[7u8; 300]);
    assert_eq!(payload, expected);
}

#[tokio::test]
async fn dropping_every_handle_closes_connection() {
    let certificate = certificate();
    let server = server_endpoint(&certificate);
    let addr = server.local_addr().unwrap();
    let (closed_sender, closed_receiver) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let quic = server.accept().await.unwrap().await.unwrap();
        let mut h3 = ServerConnection::new(quic.clone(), Config::default())
            .await
            .unwrap();
        let incoming = h3.accept().await.unwrap();
        let mut stream = incoming.stream;
        stream.send_response(&Response::new(())).await.unwrap();
        let mut tunnel = stream.into_tunnel();
        let mut buf = [0u8; 4];
        tunnel.read_exact(&mut buf).await.unwrap();
        tunnel.write_all(&buf).await.unwrap();
        // The server keeps its handles; the client's close must end the connection.
        let reason = quic.closed().await;
        let _ = closed_sender.send(reason);
        drop(tunnel);
    });
    let client_endpoint = client_endpoint(&certificate);
    let quic = client_endpoint
        .connect(addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let client = ClientConnection::new(quic, Config::default())
        .await
        .unwrap();
    let (_, mut tunnel) = client
        .connect(&connect_request("/a"), Some("echo"))
        .await
        .unwrap();
    // The tunnel keeps the connection open after the connection handle is gone.
    drop(client);
    tunnel.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tokio::time::timeout(TIMEOUT, tunnel.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"ping");
    drop(tunnel);
    let reason = tokio::time::timeout(TIMEOUT, closed_receiver)
        .await
        .unwrap()
        .unwrap();
    match reason {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(close.error_code.into_inner(), Code::H3_NO_ERROR.0);
        }
        other => panic!("connection closed with {other}"),
    }
}

fn application_code(error: &quinn::ConnectionError) -> Option<u64> {
    match error {
        quinn::ConnectionError::ApplicationClosed(close) => Some(close.error_code.into_inner()),
        _ => None,
    }
}

#[tokio::test]
async fn idle_connection_closed_only_without_requests() {
    let idle_timeout = Duration::from_millis(300);
    let setup = start_echo_with(Config {
        idle_connection_timeout: Some(idle_timeout),
        ..Config::default()
    });

    // A connection that never sends a request is closed with H3_NO_ERROR.
    let started = tokio::time::Instant::now();
    let idle = ClientConnection::new(quic_connect(&setup).await, Config::default())
        .await
        .unwrap();
    let error = tokio::time::timeout(TIMEOUT, idle.quic().closed())
        .await
        .unwrap();
    assert_eq!(application_code(&error), Some(0x100), "{error}");
    assert!(started.elapsed() >= idle_timeout, "{:?}", started.elapsed());

    // An open tunnel keeps its connection open past the timeout.
    let busy = ClientConnection::new(quic_connect(&setup).await, Config::default())
        .await
        .unwrap();
    let mut tunnel = open_echo(&busy, "/a").await;
    tokio::time::sleep(idle_timeout * 3).await;
    assert!(busy.quic().close_reason().is_none());
    tunnel.write_all(b"ping").await.unwrap();
    let mut echoed = [0u8; 4];
    tunnel.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed, b"ping");

    // Once the tunnel ends on both sides, the connection is idle and is closed.
    tunnel.shutdown().await.unwrap();
    let mut rest = Vec::new();
    tunnel.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    drop(tunnel);
    let error = tokio::time::timeout(TIMEOUT, busy.quic().closed())
        .await
        .unwrap();
    assert_eq!(application_code(&error), Some(0x100), "{error}");
}

#[tokio::test]
async fn request_awaiting_headers_keeps_connection_open() {
    let idle_timeout = Duration::from_millis(300);
    let setup = start_echo_with(Config {
        idle_connection_timeout: Some(idle_timeout),
        request_header_timeout: Duration::from_secs(1),
        ..Config::default()
    });
    let raw = RawClient::connect(&setup).await;
    let _control = raw.valid_control().await;
    // A HEADERS frame header that announces more bytes than are sent.
    let (_send, mut recv) = raw.request(&[0x01, 0x10, 0x00]).await;
    tokio::time::sleep(idle_timeout * 2).await;
    assert!(raw.quic.close_reason().is_none());
    // The request is reset when its header timeout passes, and the idle timeout then
    // closes the connection.
    assert_eq!(reset_code(&mut recv).await, 0x10d);
    assert_eq!(raw.closed_with().await, 0x100);
}

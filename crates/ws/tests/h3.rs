//! WebSockets over HTTP/3 between Pylon's server and client on loopback: echo on shared
//! connections, handshake faults, resets and the raw tunnel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Request, StatusCode};
use pylon_ws::client::{Client, ClientConfig, ClientStream, HttpVersion, connect_any};
use pylon_ws::h3::{self, H3Client, H3Connection, H3Error};
use pylon_ws::server::ServerConfig;
use pylon_ws::tls::{self, ClientTls};
use pylon_ws::{CloseCode, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

mod common;

const TIMEOUT: Duration = Duration::from_secs(10);

struct TestServer {
    addr: SocketAddr,
    tls: ClientTls,
    /// The outcome of each server-side WebSocket: its path and whether it ended cleanly.
    outcomes: mpsc::UnboundedReceiver<(String, Result<(), String>)>,
    /// QUIC connections accepted so far.
    connections: Arc<AtomicUsize>,
}

/// Starts an HTTP/3 WebSocket server on loopback that echoes `/ws/echo` and responds 404
/// elsewhere.
fn start_server() -> TestServer {
    start_server_with(ServerConfig::default())
}

/// Starts the server of [`start_server`] with `config` for every route.
fn start_server_with(config: ServerConfig) -> TestServer {
    let certificate = tls::self_signed_localhost().unwrap();
    let quic_config = h3::server_config(
        vec![certificate.cert_der.clone()],
        certificate.key_der.clone_key(),
    )
    .unwrap();
    let endpoint = h3::server_endpoint("127.0.0.1:0".parse().unwrap(), quic_config).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let (sender, outcomes) = mpsc::unbounded_channel();
    let config = Arc::new(config);
    let timeout = config.ws.handshake_timeout;
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let config = Arc::clone(&config);
            let sender = sender.clone();
            tokio::spawn(async move {
                let Ok(mut connection) = H3Connection::accept(incoming, timeout).await else {
                    return;
                };
                while let Some(request) = connection.next_request().await {
                    if request.path() != "/ws/echo" {
                        request.reject(StatusCode::NOT_FOUND, "no such path").await;
                        continue;
                    }
                    let path = request.request().uri().to_string();
                    let Ok(mut ws) = request.accept(&config).await else {
                        continue;
                    };
                    let sender = sender.clone();
                    tokio::spawn(async move {
                        let outcome = loop {
                            match ws.recv().await {
                                None => break Ok(()),
                                Some(Err(error)) => break Err(error.to_string()),
                                Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                                    if let Err(error) = ws.send(message).await {
                                        break Err(error.to_string());
                                    }
                                }
                                Some(Ok(_)) => {}
                            }
                        };
                        let _ = sender.send((path, outcome));
                    });
                }
            });
        }
    });
    let mut tls = ClientTls {
        webpki_roots: false,
        ..ClientTls::default()
    };
    tls.ca_certs.push(certificate.cert_der.clone());
    TestServer {
        addr,
        tls,
        outcomes,
        connections,
    }
}

/// Returns the next message of `ws`, failing the test on an error, the end of the
/// stream or a timeout.
async fn next_message(ws: &mut pylon_ws::WebSocket<h3::H3Stream>) -> Message {
    tokio::time::timeout(TIMEOUT, ws.recv())
        .await
        .expect("no message within the timeout")
        .expect("websocket ended")
        .expect("websocket failed")
}

fn client_config(server: &TestServer) -> ClientConfig {
    ClientConfig {
        tls: server.tls.clone(),
        ..ClientConfig::default()
    }
}

fn url(server: &TestServer, path: &str) -> String {
    format!("wss://localhost:{}{path}", server.addr.port())
}

#[tokio::test]
async fn echo_on_one_shared_connection() {
    let server = start_server();
    let config = client_config(&server);
    let client = H3Client::new(&config.tls, TIMEOUT).unwrap();
    let mut tasks = Vec::new();
    for index in 0..6 {
        let client = client.clone();
        let config = config.clone();
        let url = url(&server, &format!("/ws/echo?n={index}"));
        tasks.push(tokio::spawn(async move {
            let (mut ws, response) = client.connect(&url, &config).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            assert!(
                ws.compression().is_some(),
                "permessage-deflate was not agreed"
            );
            for round in 0..10 {
                let text = format!("socket {index} round {round} ").repeat(round * 50 + 1);
                ws.send(Message::text(text.clone())).await.unwrap();
                let reply = next_message(&mut ws).await;
                assert_eq!(reply, Message::text(text));
            }
            let binary: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
            ws.send(Message::binary(binary.clone())).await.unwrap();
            let reply = next_message(&mut ws).await;
            assert_eq!(reply, Message::binary(binary));
            ws.close(CloseCode::NORMAL, "done").await.unwrap();
        }));
    }
    for task in tasks {
        tokio::time::timeout(TIMEOUT, task).await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn connect_h3_opens_one_websocket() {
    let server = start_server();
    let (mut ws, _) = h3::connect_h3(&url(&server, "/ws/echo"), client_config(&server))
        .await
        .unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    let reply = next_message(&mut ws).await;
    assert_eq!(reply, Message::text("hello"));
}

#[tokio::test]
async fn generic_client_pools_http3() {
    let server = start_server();
    let client = Client::new(ClientConfig {
        http_version: HttpVersion::Http3,
        ..client_config(&server)
    });
    let mut sockets = Vec::new();
    for index in 0..3 {
        let (mut ws, response) = client.connect(&url(&server, "/ws/echo")).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let text = format!("pooled {index}");
        ws.send(Message::text(text.clone())).await.unwrap();
        let reply = tokio::time::timeout(TIMEOUT, ws.recv()).await.unwrap();
        assert_eq!(reply.unwrap().unwrap(), Message::text(text));
        assert!(matches!(ws.get_ref(), ClientStream::Http3(_)));
        sockets.push(ws);
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    for mut ws in sockets {
        ws.close(CloseCode::NORMAL, "done").await.unwrap();
    }
}

#[tokio::test]
async fn connect_any_over_http3() {
    let server = start_server();
    let config = ClientConfig {
        http_version: HttpVersion::Http3,
        ..client_config(&server)
    };
    let (mut ws, _) = connect_any(&url(&server, "/ws/echo"), config.clone())
        .await
        .unwrap();
    ws.send(Message::binary(vec![7u8; 100_000])).await.unwrap();
    let reply = tokio::time::timeout(TIMEOUT, ws.recv()).await.unwrap();
    assert_eq!(reply.unwrap().unwrap(), Message::binary(vec![7u8; 100_000]));
    ws.close(CloseCode::NORMAL, "done").await.unwrap();

    let plain = format!("ws://localhost:{}/ws/echo", server.addr.port());
    let err = connect_any(&plain, config).await.unwrap_err();
    assert!(matches!(err, pylon_ws::Error::Http3(_)), "{err:?}");
    assert!(
        err.to_string().contains("HTTP/3 always runs over TLS"),
        "{err}"
    );
}

/// Returns a QUIC client configuration that trusts the server's certificate and offers
/// ALPN `h3`, with `transport`.
fn quic_client_config(
    server: &TestServer,
    transport: quinn::TransportConfig,
) -> quinn::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.tls.ca_certs[0].clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![pylon_h3::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    config
}

/// Sends a CONNECT through the HTTP/3 layer directly, to build requests that the
/// WebSocket client never sends: `protocol` `None` is a plain CONNECT.
async fn raw_connect(
    server: &TestServer,
    protocol: Option<&str>,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap) {
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let config = quic_client_config(server, quinn::TransportConfig::default());
    let quic = endpoint
        .connect_with(config, server.addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let connection = pylon_h3::ClientConnection::new(quic, pylon_h3::Config::default())
        .await
        .unwrap();
    let uri = match protocol {
        None => format!("localhost:{}", server.addr.port()),
        Some(_) => format!("https://localhost:{}/ws/echo", server.addr.port()),
    };
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(uri)
        .body(())
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let (response, _) = connection.connect(&request, protocol).await.unwrap();
    (response.status(), response.headers().clone())
}

#[tokio::test]
async fn handshake_faults_get_status_codes() {
    let server = start_server();
    let (status, _) = raw_connect(&server, None, &[("sec-websocket-version", "13")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "CONNECT without :protocol");
    let (status, _) = raw_connect(&server, Some("chat"), &[("sec-websocket-version", "13")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "unknown :protocol");
    let (status, headers) = raw_connect(
        &server,
        Some("websocket"),
        &[("sec-websocket-version", "12")],
    )
    .await;
    assert_eq!(status, StatusCode::UPGRADE_REQUIRED, "version 12");
    assert_eq!(headers["sec-websocket-version"], "13");
    let (status, _) = raw_connect(&server, Some("websocket"), &[]).await;
    assert_eq!(status, StatusCode::UPGRADE_REQUIRED, "no version");
}

#[tokio::test]
async fn unknown_path_is_404_and_connection_survives() {
    let server = start_server();
    let config = client_config(&server);
    let client = H3Client::new(&config.tls, TIMEOUT).unwrap();
    let error = client
        .connect(&url(&server, "/nope"), &config)
        .await
        .unwrap_err();
    assert!(matches!(error, H3Error::Handshake(_)), "{error}");
    let (mut ws, _) = client
        .connect(&url(&server, "/ws/echo"), &config)
        .await
        .unwrap();
    ws.send(Message::text("after 404")).await.unwrap();
    let reply = next_message(&mut ws).await;
    assert_eq!(reply, Message::text("after 404"));
}

async fn read_exact_reply(tunnel: &mut pylon_ws::h3::H3Stream, len: usize) -> Vec<u8> {
    let mut reply = vec![0u8; len];
    tokio::time::timeout(TIMEOUT, tunnel.read_exact(&mut reply))
        .await
        .unwrap()
        .unwrap();
    reply
}

#[tokio::test]
async fn raw_tunnel_conformance_smoke() {
    let server = start_server();
    let (response, mut tunnel) = h3::open_tunnel(&url(&server, "/ws/echo"), &server.tls, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // No compression was offered, so replies are plain frames.
    assert!(response.headers().get("sec-websocket-extensions").is_none());

    tunnel
        .write_all(&common::masked_frame(true, 0x1, b"hello"))
        .await
        .unwrap();
    assert_eq!(read_exact_reply(&mut tunnel, 7).await, b"\x81\x05hello");

    tunnel
        .write_all(&common::masked_frame(true, 0x9, b"ping!"))
        .await
        .unwrap();
    assert_eq!(read_exact_reply(&mut tunnel, 7).await, b"\x8a\x05ping!");

    // A fragmented text message comes back whole.
    tunnel
        .write_all(&common::masked_frame(false, 0x1, b"frag"))
        .await
        .unwrap();
    tunnel
        .write_all(&common::masked_frame(true, 0x0, b"ment"))
        .await
        .unwrap();
    assert_eq!(read_exact_reply(&mut tunnel, 10).await, b"\x81\x08fragment");

    // Opcode 0x3 is reserved: the server closes with 1002 (protocol error).
    tunnel
        .write_all(&common::masked_frame(true, 0x3, b""))
        .await
        .unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(TIMEOUT, tunnel.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    // Exactly one unmasked close frame with code 1002 and no reason, then the end.
    assert_eq!(reply, [0x88, 0x02, 0x03, 0xea]);
}

#[tokio::test]
async fn reset_mid_message_ends_only_that_websocket() {
    let mut server = start_server();
    let config = client_config(&server);
    let client = H3Client::new(&config.tls, TIMEOUT).unwrap();
    let (mut kept, _) = client
        .connect(&url(&server, "/ws/echo?kept"), &config)
        .await
        .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("sec-websocket-version", HeaderValue::from_static("13"));
    let (_, mut tunnel) = client
        .tunnel(&url(&server, "/ws/echo?reset"), headers)
        .await
        .unwrap();
    // The header of a 100-byte binary frame and 10 bytes of its payload, then a reset.
    let mut partial = vec![0x82, 0x80 | 100, 1, 2, 3, 4];
    partial.extend_from_slice(&[0u8; 10]);
    tunnel.write_all(&partial).await.unwrap();
    tunnel.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    tunnel.reset(pylon_h3::Code::H3_REQUEST_CANCELLED);

    let (path, outcome) = tokio::time::timeout(TIMEOUT, server.outcomes.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(path.ends_with("?reset"), "{path}");
    let error = outcome.unwrap_err();
    assert!(error.contains("reset"), "{error}");

    kept.send(Message::text("still open")).await.unwrap();
    let reply = next_message(&mut kept).await;
    assert_eq!(reply, Message::text("still open"));
}

/// Opens a QUIC server endpoint on loopback that presents `certificate`, for tests that
/// drive the HTTP/3 server side themselves.
fn bare_endpoint(certificate: &tls::SelfSigned) -> quinn::Endpoint {
    let quic_config = h3::server_config(
        vec![certificate.cert_der.clone()],
        certificate.key_der.clone_key(),
    )
    .unwrap();
    h3::server_endpoint("127.0.0.1:0".parse().unwrap(), quic_config).unwrap()
}

#[tokio::test]
async fn server_without_connect_protocol_is_typed_error() {
    let certificate = tls::self_signed_localhost().unwrap();
    let endpoint = bare_endpoint(&certificate);
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(async move {
        let quic = endpoint.accept().await.unwrap().await.unwrap();
        let mut control = quic.open_uni().await.unwrap();
        // Control stream type 0x00 and SETTINGS with only the QPACK settings.
        control
            .write_all(&[0x00, 0x04, 0x04, 0x01, 0x00, 0x07, 0x00])
            .await
            .unwrap();
        quic.closed().await;
    });
    let mut tls = ClientTls {
        webpki_roots: false,
        ..ClientTls::default()
    };
    tls.ca_certs.push(certificate.cert_der.clone());
    let config = ClientConfig {
        tls,
        ..ClientConfig::default()
    };
    let url = format!("wss://localhost:{}/ws/echo", addr.port());
    let error = tokio::time::timeout(TIMEOUT, h3::connect_h3(&url, config))
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(
            error,
            H3Error::Http3(pylon_h3::Error::ConnectProtocolDisabled)
        ),
        "{error}"
    );
}

/// Encodes a CONNECT request for `/ws/echo` as a HEADERS frame.
fn websocket_headers_frame(port: u16, version: &str) -> Vec<u8> {
    let authority = format!("localhost:{port}");
    let lines: [(&[u8], &[u8]); 6] = [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", b"https"),
        (b":authority", authority.as_bytes()),
        (b":path", b"/ws/echo"),
        (b"sec-websocket-version", version.as_bytes()),
    ];
    let section = pylon_h3::qpack::encode_field_section(lines);
    let mut frame = Vec::new();
    pylon_h3::frame::encode(pylon_h3::frame::HEADERS, &section, &mut frame);
    frame
}

#[tokio::test]
async fn unread_error_response_is_reset_and_blocks_nothing() {
    let mut config = ServerConfig::default();
    let response_timeout = Duration::from_millis(500);
    config.ws.handshake_timeout = response_timeout;
    let server = start_server_with(config);

    // A client whose stream windows are 16 bytes: a stream it does not read cannot take
    // a whole response.
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(16u32.into());
    let config = quic_client_config(&server, transport);
    let quic = endpoint
        .connect_with(config, server.addr, "localhost")
        .unwrap()
        .await
        .unwrap();
    let connection = pylon_h3::ClientConnection::new(quic.clone(), pylon_h3::Config::default())
        .await
        .unwrap();

    // Version 12 gets 426 with a body, which this stream never reads.
    let (mut send, mut unread) = quic.open_bi().await.unwrap();
    send.write_all(&websocket_headers_frame(server.addr.port(), "12"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The next request on the connection is still answered.
    let request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("https://localhost:{}/ws/echo", server.addr.port()))
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    let (response, _tunnel) =
        tokio::time::timeout(TIMEOUT, connection.connect(&request, Some("websocket")))
            .await
            .expect("a stalled error response held up the next request")
            .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // The stalled response is reset once its timeout passes.
    tokio::time::sleep(response_timeout * 2).await;
    let reset = tokio::time::timeout(TIMEOUT, async {
        loop {
            match unread.read_chunk(1024, true).await {
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(quinn::ReadError::Reset(code)) => return Some(code.into_inner()),
                Err(error) => panic!("read failed: {error}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(reset, Some(0x10c));
}

/// `H3Request::respond` sends the given status and headers unchecked, and a 200 response
/// turns the stream into a raw tunnel: the client's WebSocket frames arrive as bytes, and
/// bytes written by the server arrive as frames at the client.
#[tokio::test]
async fn respond_sends_headers_and_returns_raw_tunnel() {
    let certificate = tls::self_signed_localhost().unwrap();
    let endpoint = bare_endpoint(&certificate);
    let port = endpoint.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let incoming = endpoint.accept().await.unwrap();
        let mut connection = H3Connection::accept(incoming, TIMEOUT).await.unwrap();
        let request = connection.next_request().await.unwrap();
        let offer = request
            .request()
            .headers()
            .get("sec-websocket-extensions")
            .map(|value| value.to_str().unwrap().to_owned());
        let response = http::Response::builder()
            .status(StatusCode::OK)
            .header("sec-websocket-extensions", "permessage-deflate")
            .header("x-scripted", "yes")
            .body(())
            .unwrap();
        let mut tunnel = request.respond(&response).await.unwrap();
        // The client's masked text frame "hi": 2 header bytes, 4 mask bytes, 2 payload bytes.
        let mut frame = [0u8; 8];
        tokio::time::timeout(TIMEOUT, tunnel.read_exact(&mut frame))
            .await
            .unwrap()
            .unwrap();
        tunnel.write_all(b"\x81\x05hello").await.unwrap();
        tunnel.flush().await.unwrap();
        // Keeps the connection open until the client has read the reply.
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(TIMEOUT, tunnel.read_to_end(&mut rest)).await;
        (offer, frame)
    });

    let mut tls = ClientTls {
        webpki_roots: false,
        ..ClientTls::default()
    };
    tls.ca_certs.push(certificate.cert_der.clone());
    let client = H3Client::new(&tls, TIMEOUT).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("sec-websocket-version", HeaderValue::from_static("13"));
    headers.insert(
        "sec-websocket-extensions",
        HeaderValue::from_static("permessage-deflate; client_max_window_bits"),
    );
    let url = format!("wss://localhost:{port}/scripted");
    let (response, mut tunnel) = client.tunnel(&url, headers).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers().get("sec-websocket-extensions").unwrap(),
        "permessage-deflate"
    );
    assert_eq!(response.headers().get("x-scripted").unwrap(), "yes");

    let frame = common::masked_frame(true, 0x1, b"hi");
    tunnel.write_all(&frame).await.unwrap();
    tunnel.flush().await.unwrap();
    assert_eq!(read_exact_reply(&mut tunnel, 7).await, b"\x81\x05hello");
    tunnel.shutdown().await.unwrap();

    let (offer, received) = tokio::time::timeout(TIMEOUT, server)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        offer.as_deref(),
        Some("permessage-deflate; client_max_window_bits")
    );
    assert_eq!(received.as_slice(), frame.as_slice());
}

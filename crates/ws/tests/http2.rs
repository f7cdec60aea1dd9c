//! WebSockets over HTTP/2 (RFC 8441): the pylon-ws server and pooled client, over TLS
//! with ALPN and over plain TCP with prior knowledge, many WebSockets on one connection,
//! and the server's responses to faulty extended CONNECT requests from a raw h2 client.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pylon_ws::client::{self, Client, ClientConfig, ClientStream, HttpVersion};
use pylon_ws::server::{self, ServerConfig, ServerStream, Transport};
use pylon_ws::tls::{self, SelfSigned, TlsAcceptor};
use pylon_ws::{CloseCode, Error, Message, WebSocket};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const TEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections a test server accepts before its accept loop ends.
const MAX_CONNECTIONS: usize = 8;

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(TEST_TIMEOUT, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not finish within {TEST_TIMEOUT:?}"),
    }
}

/// How one server WebSocket ended, as the echo handler reports it.
#[derive(Debug)]
struct Ended {
    transport: Transport,
    /// `None` after a close handshake, or the error that `recv` returned.
    error: Option<String>,
}

/// A loopback echo server for these tests.
struct TestServer {
    addr: SocketAddr,
    /// Accepted TCP connections.
    accepted: Arc<AtomicUsize>,
    ended: mpsc::UnboundedReceiver<Ended>,
}

/// Starts an echo server on 127.0.0.1 that serves TLS with `acceptor`, or plain TCP
/// without it, and finishes every WebSocket as a `ServerStream`.
async fn spawn_echo(acceptor: Option<TlsAcceptor>) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (ended_tx, ended) = mpsc::unbounded_channel();
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        for _ in 0..MAX_CONNECTIONS {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            let ended_tx = ended_tx.clone();
            tokio::spawn(async move {
                let config = ServerConfig::default();
                let ws_config = config.ws.clone();
                let service = service_fn(move |mut req: Request<Incoming>| {
                    let config = config.clone();
                    let ended_tx = ended_tx.clone();
                    async move {
                        match server::upgrade(&mut req, &config) {
                            Ok((response, pending)) => {
                                let transport = pending.transport();
                                tokio::spawn(async move {
                                    if let Ok(ws) = pending.finish::<ServerStream>().await {
                                        let error = echo(ws).await;
                                        let _ = ended_tx.send(Ended { transport, error });
                                    }
                                });
                                Ok::<_, Infallible>(response)
                            }
                            Err(err) => Ok(server::reject(&err)),
                        }
                    }
                });
                let _ = match acceptor {
                    Some(acceptor) => {
                        server::serve_tls_connection(stream, &acceptor, service, &ws_config).await
                    }
                    None => server::serve_connection(stream, service, &ws_config).await,
                };
            });
        }
    });
    TestServer {
        addr,
        accepted,
        ended,
    }
}

/// Echoes text and binary messages. Returns the error that ended the connection, if any.
async fn echo(mut ws: WebSocket<ServerStream>) -> Option<String> {
    loop {
        match ws.recv().await {
            Some(Ok(message)) => {
                if matches!(message, Message::Text(_) | Message::Binary(_))
                    && let Err(err) = ws.send(message).await
                {
                    return Some(err.to_string());
                }
            }
            Some(Err(err)) => return Some(err.to_string()),
            None => return None,
        }
    }
}

fn http2_config() -> ClientConfig {
    ClientConfig {
        http_version: HttpVersion::Http2,
        ..ClientConfig::default()
    }
}

fn trusting(cert: &SelfSigned, http_version: HttpVersion) -> ClientConfig {
    let mut config = ClientConfig {
        http_version,
        ..ClientConfig::default()
    };
    config.tls.ca_certs.push(cert.cert_der.clone());
    config
}

async fn assert_echoes(ws: &mut WebSocket<ClientStream>, text: &str) {
    ws.send(Message::text(text.to_owned())).await.unwrap();
    let reply = within("echo reply", ws.recv()).await.unwrap().unwrap();
    assert_eq!(reply, Message::text(text.to_owned()));
}

#[tokio::test]
async fn prior_knowledge_shares_one_connection() {
    let server = spawn_echo(None).await;
    let client = Client::new(http2_config());
    let url = format!("ws://{}/ws/echo", server.addr);

    let mut sockets = Vec::new();
    for _ in 0..5 {
        let (ws, response) = within("connect", client.connect(&url)).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(matches!(ws.get_ref(), ClientStream::Http2(_)));
        sockets.push(ws);
    }
    assert_eq!(client.http2_connections(), 1);
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);

    for (index, ws) in sockets.iter_mut().enumerate() {
        assert_echoes(ws, &format!("message on stream {index}")).await;
    }
    for ws in &mut sockets {
        within("close", ws.close(CloseCode::NORMAL, "done"))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn http2_compresses_and_closes_cleanly() {
    let mut server = spawn_echo(None).await;
    let url = format!("ws://{}/ws/echo", server.addr);
    let (mut ws, _) = within("connect", client::connect_any(&url, http2_config()))
        .await
        .unwrap();
    assert!(ws.compression().is_some(), "permessage-deflate not agreed");
    let large = "x".repeat(600 * 1024);
    assert_echoes(&mut ws, &large).await;
    within("close", ws.close(CloseCode::NORMAL, "done"))
        .await
        .unwrap();
    // Dropping the client's stream ends it with END_STREAM, as dropping a TCP socket
    // sends FIN, so the server finishes well before its close timeout.
    drop(ws);
    let ended = tokio::time::timeout(Duration::from_secs(2), server.ended.recv())
        .await
        .expect("server WebSocket still open 2 s after the client dropped its stream")
        .unwrap();
    assert_eq!(ended.transport, Transport::Http2);
    assert_eq!(ended.error, None);
}

#[tokio::test]
async fn tls_alpn_serves_http2_and_http1() {
    let cert = tls::self_signed_localhost().unwrap();
    let server = spawn_echo(Some(cert.acceptor().unwrap())).await;
    let url = format!("wss://localhost:{}/ws/echo", server.addr.port());

    let client = Client::new(trusting(&cert, HttpVersion::Http2));
    let (mut first, _) = within("connect", client.connect(&url)).await.unwrap();
    let (mut second, _) = within("connect", client.connect(&url)).await.unwrap();
    assert!(matches!(first.get_ref(), ClientStream::Http2(_)));
    assert_echoes(&mut first, "first").await;
    assert_echoes(&mut second, "second").await;
    assert_eq!(client.http2_connections(), 1);

    let (mut http1, _) = within(
        "connect over HTTP/1.1",
        client::connect_any(&url, trusting(&cert, HttpVersion::Http1)),
    )
    .await
    .unwrap();
    assert!(matches!(http1.get_ref(), ClientStream::Tls(_)));
    assert_echoes(&mut http1, "http/1.1").await;
    assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn http2_client_verifies_certificates() {
    let cert = tls::self_signed_localhost().unwrap();
    let server = spawn_echo(Some(cert.acceptor().unwrap())).await;
    let url = format!("wss://localhost:{}/ws/echo", server.addr.port());

    let err = within("connect", client::connect_any(&url, http2_config()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Tls(_)), "{err}");

    let mut insecure = http2_config();
    insecure.tls.dangerous_accept_any_certificate = true;
    let (mut ws, _) = within("connect", client::connect_any(&url, insecure))
        .await
        .unwrap();
    assert_echoes(&mut ws, "insecure but encrypted").await;
}

#[tokio::test]
async fn large_message_does_not_block_other_streams() {
    let server = spawn_echo(None).await;
    let mut config = http2_config();
    config.compression = None;
    let client = Client::new(config);
    let url = format!("ws://{}/ws/echo", server.addr);
    let (mut bulk, _) = within("connect", client.connect(&url)).await.unwrap();
    let (mut chatty, _) = within("connect", client.connect(&url)).await.unwrap();

    // Four times the stream window, so the bulk stream waits for flow control while the
    // other one goes on.
    let payload = Bytes::from(vec![7u8; 1024 * 1024 - 64]);
    let bulk_task = tokio::spawn(async move {
        bulk.send(Message::Binary(payload.clone())).await.unwrap();
        let reply = bulk.recv().await.unwrap().unwrap();
        assert_eq!(reply, Message::Binary(payload));
    });
    for index in 0..20 {
        assert_echoes(&mut chatty, &format!("small {index}")).await;
    }
    within("bulk echo", bulk_task).await.unwrap();
}

#[tokio::test]
async fn client_rejects_server_without_extended_connect() {
    // A plain hyper HTTP/2 server that does not enable extended CONNECT.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let service = service_fn(|_req: Request<Incoming>| async {
            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from_static(b"hi"))))
        });
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .await;
    });

    let url = format!("ws://{addr}/ws/echo");
    let err = within("connect", Client::new(http2_config()).connect(&url))
        .await
        .unwrap_err();
    match &err {
        Error::ExtendedConnectDisabled(authority) => assert_eq!(authority, &addr.to_string()),
        other => panic!("expected ExtendedConnectDisabled, got {other:?}"),
    }
    assert!(err.to_string().contains("HttpVersion::Http1"), "{err}");
}

#[tokio::test]
async fn one_shot_connect_rejects_http2() {
    let err = client::connect("ws://127.0.0.1:9/", http2_config())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnsupportedHttpVersion(_)), "{err}");
}

/// Opens a raw h2 client connection to `addr` with prior knowledge and waits until the
/// server's SETTINGS arrived.
async fn raw_h2(addr: SocketAddr) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send_request, mut connection) = h2::client::handshake(tcp).await.unwrap();
    let mut ping_pong = connection.ping_pong().unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    within("ping", ping_pong.ping(h2::Ping::opaque()))
        .await
        .unwrap();
    assert!(send_request.is_extended_connect_protocol_enabled());
    send_request
}

/// Builds an extended CONNECT request to `/ws/echo` on `addr`.
fn connect_request(addr: SocketAddr, protocol: Option<&'static str>) -> Request<()> {
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(format!("http://{addr}/ws/echo"))
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    if let Some(protocol) = protocol {
        request
            .extensions_mut()
            .insert(h2::ext::Protocol::from_static(protocol));
    }
    request
}

/// Sends `request` on a new stream and returns the response, or the stream's error.
async fn send(
    send_request: &h2::client::SendRequest<Bytes>,
    request: Request<()>,
) -> Result<(http::Response<h2::RecvStream>, h2::SendStream<Bytes>), h2::Error> {
    let mut ready = within("stream slot", send_request.clone().ready())
        .await
        .unwrap();
    let (response, send) = ready.send_request(request, false)?;
    let response = within("response", response).await?;
    Ok((response, send))
}

/// Encodes a masked client frame with the all-zero masking key, so the payload is sent
/// as it is.
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x80 | opcode];
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(payload);
    frame
}

/// Reads DATA from `recv` until `len` bytes arrived.
async fn read_bytes(recv: &mut h2::RecvStream, len: usize) -> Vec<u8> {
    let mut received = Vec::new();
    while received.len() < len {
        let data = within("data", recv.data()).await.unwrap().unwrap();
        let _ = recv.flow_control().release_capacity(data.len());
        received.extend_from_slice(&data);
    }
    received
}

/// Opens a WebSocket on a raw stream and checks that it echoes one text message.
async fn open_raw_echo(
    send_request: &h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
) -> (h2::RecvStream, h2::SendStream<Bytes>) {
    let (response, mut send) = send(send_request, connect_request(addr, Some("websocket")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut recv = response.into_body();
    send.send_data(Bytes::from(masked_frame(0x1, b"ping")), false)
        .unwrap();
    // The server's reply is unmasked: two header bytes and the payload.
    assert_eq!(read_bytes(&mut recv, 6).await, b"\x81\x04ping");
    (recv, send)
}

#[tokio::test]
async fn faults_are_answered_per_stream() {
    let mut server = spawn_echo(None).await;
    let send_request = raw_h2(server.addr).await;
    let (mut healthy_recv, mut healthy_send) = open_raw_echo(&send_request, server.addr).await;

    // CONNECT without :protocol is a plain tunnel request, which has no WebSocket.
    let (response, _) = send(&send_request, connect_request(server.addr, None))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let (response, _) = send(
        &send_request,
        connect_request(server.addr, Some("webtransport")),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let mut old_version = connect_request(server.addr, Some("websocket"));
    old_version
        .headers_mut()
        .insert("sec-websocket-version", "8".parse().unwrap());
    let (response, _) = send(&send_request, old_version).await.unwrap();
    assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
    assert_eq!(response.headers()["sec-websocket-version"], "13");

    let get = Request::builder()
        .method(Method::GET)
        .uri(format!("http://{}/ws/echo", server.addr))
        .body(())
        .unwrap();
    let (response, _) = send(&send_request, get).await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    // An authority-only URI gives an extended CONNECT without :scheme. h2 0.4 on the
    // server resets such a stream with PROTOCOL_ERROR before hyper receives it.
    let mut no_scheme = Request::builder()
        .method(Method::CONNECT)
        .uri(server.addr.to_string())
        .header("sec-websocket-version", "13")
        .body(())
        .unwrap();
    no_scheme
        .extensions_mut()
        .insert(h2::ext::Protocol::from_static("websocket"));
    let err = send(&send_request, no_scheme).await.unwrap_err();
    assert_eq!(err.reason(), Some(h2::Reason::PROTOCOL_ERROR), "{err}");

    // The WebSocket opened first is unaffected by all of the above.
    healthy_send
        .send_data(Bytes::from(masked_frame(0x1, b"still here")), false)
        .unwrap();
    assert_eq!(
        read_bytes(&mut healthy_recv, 12).await,
        b"\x81\x0astill here"
    );
    assert!(server.ended.try_recv().is_err(), "a WebSocket ended");
}

#[tokio::test]
async fn reset_mid_message_ends_only_that_websocket() {
    let mut server = spawn_echo(None).await;
    let send_request = raw_h2(server.addr).await;
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(open_raw_echo(&send_request, server.addr).await);
    }

    // Half of a 200-byte text frame, then RST_STREAM on that stream.
    let (_, broken_send) = &mut sockets[1];
    let frame = masked_frame(0x1, &[b'a'; 200]);
    broken_send
        .send_data(Bytes::copy_from_slice(&frame[..100]), false)
        .unwrap();
    broken_send.send_reset(h2::Reason::CANCEL);

    let ended = within("broken WebSocket ends", server.ended.recv())
        .await
        .unwrap();
    assert_eq!(ended.transport, Transport::Http2);
    assert!(ended.error.is_some(), "reset stream ended without an error");

    for (index, (recv, send)) in sockets.iter_mut().enumerate() {
        if index == 1 {
            continue;
        }
        send.send_data(Bytes::from(masked_frame(0x2, &[index as u8; 3])), false)
            .unwrap();
        assert_eq!(
            read_bytes(recv, 5).await,
            [0x82, 3, index as u8, index as u8, index as u8]
        );
    }
    assert!(server.ended.try_recv().is_err(), "another WebSocket ended");
}

#[tokio::test]
async fn many_websockets_run_concurrently() {
    let server = spawn_echo(None).await;
    let client = Arc::new(Client::new(http2_config()));
    let url = format!("ws://{}/ws/echo", server.addr);
    let tasks = (0..32).map(|index| {
        let client = Arc::clone(&client);
        let url = url.clone();
        async move {
            let (mut ws, _) = client.connect(&url).await.unwrap();
            for round in 0..10 {
                assert_echoes(&mut ws, &format!("{index}/{round}")).await;
            }
            ws.close(CloseCode::NORMAL, "done").await.unwrap();
        }
    });
    within("32 WebSockets", join_all(tasks)).await;
    assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn pool_redials_closed_connection() {
    // A server that drops each connection 300 ms after accepting it.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        for _ in 0..MAX_CONNECTIONS {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let config = ServerConfig::default();
                let ws_config = config.ws.clone();
                let service = service_fn(move |mut req: Request<Incoming>| {
                    let config = config.clone();
                    async move {
                        match server::upgrade(&mut req, &config) {
                            Ok((response, pending)) => {
                                tokio::spawn(async move {
                                    if let Ok(ws) = pending.finish::<ServerStream>().await {
                                        echo(ws).await;
                                    }
                                });
                                Ok::<_, Infallible>(response)
                            }
                            Err(err) => Ok(server::reject(&err)),
                        }
                    }
                });
                let serve = server::serve_connection(stream, service, &ws_config);
                let _ = tokio::time::timeout(Duration::from_millis(300), serve).await;
            });
        }
    });

    let client = Client::new(http2_config());
    let url = format!("ws://{addr}/ws/echo");
    let (mut first, _) = within("connect", client.connect(&url)).await.unwrap();
    assert_echoes(&mut first, "first connection").await;
    tokio::time::sleep(Duration::from_millis(600)).await;

    let (mut second, _) = within("connect after the server closed", client.connect(&url))
        .await
        .unwrap();
    assert_echoes(&mut second, "second connection").await;
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    assert_eq!(client.http2_connections(), 1);
}

/// Encodes a header field as an HPACK literal without indexing, with a new name and no
/// Huffman coding (RFC 7541 section 6.2.2). Names and values here are shorter than 127
/// bytes, so each length fits the 7-bit prefix.
fn hpack_literal(name: &str, value: &str) -> Vec<u8> {
    let mut field = vec![0x00, name.len() as u8];
    field.extend_from_slice(name.as_bytes());
    field.push(value.len() as u8);
    field.extend_from_slice(value.as_bytes());
    field
}

/// Encodes an HTTP/2 frame header and payload (RFC 9113 section 4.1).
fn h2_frame(kind: u8, flags: u8, stream_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.push(kind);
    frame.push(flags);
    frame.extend_from_slice(&stream_id.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test]
async fn connect_without_path_resets_stream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const HEADERS: u8 = 0x1;
    const RST_STREAM: u8 = 0x3;
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const GOAWAY: u8 = 0x7;
    const END_HEADERS: u8 = 0x4;
    const ACK: u8 = 0x1;

    let server = spawn_echo(None).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let authority = server.addr.to_string();
    // An extended CONNECT with every pseudo-header but :path, which the h2 client crate
    // cannot send, so the frames are written by hand.
    let mut block = Vec::new();
    for (name, value) in [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "http"),
        (":authority", authority.as_str()),
        ("sec-websocket-version", "13"),
    ] {
        block.extend(hpack_literal(name, value));
    }
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(h2_frame(SETTINGS, 0, 0, &[]));
    bytes.extend(h2_frame(HEADERS, END_HEADERS, 1, &block));
    bytes.extend(h2_frame(PING, 0, 0, b"pingpong"));
    tcp.write_all(&bytes).await.unwrap();

    let mut reset = None;
    let mut ping_acked = false;
    // The server sends SETTINGS, its ACK of ours, a WINDOW_UPDATE, the reset and the PING
    // ACK, so 32 frames are plenty.
    for _ in 0..32 {
        if reset.is_some() && ping_acked {
            break;
        }
        let mut head = [0u8; 9];
        within("frame header", tcp.read_exact(&mut head))
            .await
            .unwrap();
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream_id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        let mut payload = vec![0u8; len];
        within("frame payload", tcp.read_exact(&mut payload))
            .await
            .unwrap();
        assert_ne!(
            kind, GOAWAY,
            "the server closed the connection: {payload:02x?}"
        );
        assert_ne!(
            kind, HEADERS,
            "the server answered the request without :path"
        );
        if kind == RST_STREAM {
            assert_eq!(stream_id, 1);
            reset = Some(u32::from_be_bytes([
                payload[0], payload[1], payload[2], payload[3],
            ]));
        }
        if kind == PING && flags & ACK != 0 {
            ping_acked = true;
        }
    }
    // PROTOCOL_ERROR (RFC 9113 section 7), and the connection still responds to a PING.
    assert_eq!(reset, Some(0x1));
    assert!(ping_acked);
}

//! `pylon serve` over HTTP/2: every endpoint with prior knowledge on plain TCP, WebSockets
//! over TLS with ALPN `h2` next to HTTP/1.1 ones, the `transport` label of the connection
//! metrics, and a graceful shutdown that closes WebSockets over HTTP/2 with 1001.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{Server, run_with_timeout};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pylon_ws::client::{Client, ClientConfig, ClientStream, HttpVersion, connect_any};
use pylon_ws::tls;
use pylon_ws::{CloseCode, Message, WebSocket};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

const STEP_TIMEOUT: Duration = Duration::from_secs(10);

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP_TIMEOUT, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not finish within {STEP_TIMEOUT:?}"),
    }
}

fn http2_client() -> Client {
    Client::new(ClientConfig {
        http_version: HttpVersion::Http2,
        ..ClientConfig::default()
    })
}

/// Sends GET requests for `paths` over one HTTP/2 connection with prior knowledge and
/// returns each status and body.
async fn h2c_get(server: &Server, paths: &[&str]) -> Vec<(StatusCode, String)> {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    let mut responses = Vec::new();
    for path in paths {
        let request = Request::builder()
            .method(Method::GET)
            .uri(format!("http://{}{path}", server.addr))
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = within("GET over HTTP/2", sender.send_request(request))
            .await
            .unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        let status = response.status();
        let body = within("response body", response.into_body().collect())
            .await
            .unwrap()
            .to_bytes();
        responses.push((status, String::from_utf8_lossy(&body).into_owned()));
    }
    responses
}

async fn expect_echo(ws: &mut WebSocket<ClientStream>, message: Message) {
    within("send", ws.send(message.clone())).await.unwrap();
    let reply = within("echo", ws.recv()).await.unwrap().unwrap();
    assert_eq!(reply, message);
}

async fn next_event(ws: &mut WebSocket<ClientStream>, kind: &str) -> Value {
    for _ in 0..100 {
        let message = within("chat event", ws.recv()).await.unwrap().unwrap();
        if let Message::Text(text) = message {
            let event: Value = serde_json::from_str(text.as_str()).unwrap();
            if event["type"] == kind {
                return event;
            }
        }
    }
    panic!("no {kind:?} event within 100 events");
}

fn metric_line(metrics: &str, prefix: &str) -> Option<String> {
    metrics
        .lines()
        .find(|line| line.starts_with(prefix))
        .map(str::to_owned)
}

#[tokio::test]
async fn prior_knowledge_serves_every_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());

    let responses = h2c_get(&server, &["/healthz", "/readyz", "/chat", "/no-such-page"]).await;
    assert_eq!(responses[0], (StatusCode::OK, "ok\n".to_owned()));
    assert_eq!(responses[1], (StatusCode::OK, "ready\n".to_owned()));
    assert_eq!(responses[2].0, StatusCode::OK);
    assert!(responses[2].1.contains("/ws/chat"), "chat page over HTTP/2");
    assert_eq!(responses[3].0, StatusCode::NOT_FOUND);

    let client = http2_client();
    let (mut echo, response) = within("echo connect", client.connect(&server.url("/ws/echo")))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let (mut chat, _) = within("chat connect", client.connect(&server.url("/ws/chat")))
        .await
        .unwrap();
    assert_eq!(client.http2_connections(), 1);

    expect_echo(&mut echo, Message::text("héllo over h2")).await;
    expect_echo(&mut echo, Message::binary(vec![3u8; 100_000])).await;
    let join = json!({"type": "join", "room": "h2", "nick": "ann"}).to_string();
    within("join", chat.send(Message::text(join)))
        .await
        .unwrap();
    next_event(&mut chat, "joined").await;

    // A GET to a WebSocket path over HTTP/2 is not a WebSocket handshake.
    let responses = h2c_get(&server, &["/ws/echo", "/metrics"]).await;
    assert_eq!(responses[0].0, StatusCode::BAD_REQUEST);
    let metrics = &responses[1].1;
    for line in [
        "pylon_ws_connections_open{endpoint=\"echo\",transport=\"h2\"} 1",
        "pylon_ws_connections_open{endpoint=\"chat\",transport=\"h2\"} 1",
        "pylon_ws_connections_open{endpoint=\"echo\",transport=\"h1\"} 0",
        "pylon_ws_connections_total{endpoint=\"echo\",transport=\"h2\"} 1",
        "pylon_ws_handshake_failures_total{reason=\"method_not_connect\"} 1",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    }

    within("close echo", echo.close(CloseCode::NORMAL, "done"))
        .await
        .unwrap();
    within("close chat", chat.close(CloseCode::NORMAL, "done"))
        .await
        .unwrap();
}

#[tokio::test]
async fn tls_serves_http2_and_http1_websockets() {
    let dir = tempfile::tempdir().unwrap();
    let (status, output) = run_with_timeout(
        Command::new(env!("CARGO_BIN_EXE_pylon"))
            .args(["cert", "--out"])
            .arg(dir.path()),
        Duration::from_secs(30),
    );
    assert!(status.success(), "pylon cert failed: {output}");
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    let server = Server::start_with(
        dir.path(),
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    let url = format!("wss://localhost:{}/ws/echo", server.addr.port());

    let mut config = ClientConfig {
        http_version: HttpVersion::Http2,
        ..ClientConfig::default()
    };
    config.tls.add_ca_pem_file(&cert_path).unwrap();
    let client = Client::new(config.clone());
    let (mut first, _) = within("connect h2", client.connect(&url)).await.unwrap();
    let (mut second, _) = within("connect h2", client.connect(&url)).await.unwrap();
    assert!(matches!(first.get_ref(), ClientStream::Http2(_)));
    expect_echo(&mut first, Message::text("first")).await;
    expect_echo(&mut second, Message::text("second")).await;
    assert_eq!(client.http2_connections(), 1);

    config.http_version = HttpVersion::Http1;
    let (mut http1, response) = within("connect h1", connect_any(&url, config))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    expect_echo(&mut http1, Message::text("third")).await;

    let metrics = h2_tls_get(&server, &cert_path, "/metrics").await;
    for line in [
        "pylon_ws_connections_open{endpoint=\"echo\",transport=\"h2_tls\"} 2",
        "pylon_ws_connections_open{endpoint=\"echo\",transport=\"h1_tls\"} 1",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    }
    for ws in [&mut first, &mut second, &mut http1] {
        within("close", ws.close(CloseCode::NORMAL, "done"))
            .await
            .unwrap();
    }
}

/// Sends one GET request for `path` over HTTP/2 with TLS (ALPN `h2`), trusting the
/// certificate in `cert_path`, and returns the body of its 200 response.
async fn h2_tls_get(server: &Server, cert_path: &Path, path: &str) -> String {
    let mut roots = tls::rustls::RootCertStore::empty();
    for cert in tls::read_certs_pem(cert_path).unwrap() {
        roots.add(cert).unwrap();
    }
    let provider = Arc::new(tls::rustls::crypto::ring::default_provider());
    let mut config = tls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let stream = within(
        "TLS handshake",
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = Request::builder()
        .uri(format!("https://localhost:{}{path}", server.addr.port()))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = within("GET over h2", sender.send_request(request))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = within("body", response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test]
async fn sigterm_closes_http2_websockets_with_1001() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let client = http2_client();
    let (mut echo, _) = within("connect", client.connect(&server.url("/ws/echo")))
        .await
        .unwrap();
    let (mut chat, _) = within("connect", client.connect(&server.url("/ws/chat")))
        .await
        .unwrap();
    expect_echo(&mut echo, Message::text("before shutdown")).await;

    let terminate = tokio::task::spawn_blocking(move || {
        let status = server.terminate(Duration::from_secs(15));
        (server, status)
    });
    for ws in [&mut echo, &mut chat] {
        let close = loop {
            match within("close after SIGTERM", ws.recv()).await {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        assert_eq!(close.expect("close code").code, CloseCode::GOING_AWAY);
    }
    let (_server, status) = terminate.await.unwrap();
    assert!(status.success(), "pylon exited with {status} after SIGTERM");
}

#[tokio::test]
async fn metrics_count_websockets_by_transport() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (mut http1, _) = within(
        "connect h1",
        connect_any(&server.url("/ws/echo"), ClientConfig::default()),
    )
    .await
    .unwrap();
    let client = http2_client();
    let (mut http2, _) = within("connect h2", client.connect(&server.url("/ws/echo")))
        .await
        .unwrap();
    expect_echo(&mut http1, Message::text("one")).await;
    expect_echo(&mut http2, Message::text("two")).await;

    let responses = h2c_get(&server, &["/metrics"]).await;
    let metrics = &responses[0].1;
    let open = |transport: &str| {
        metric_line(
            metrics,
            &format!("pylon_ws_connections_open{{endpoint=\"echo\",transport=\"{transport}\"}}"),
        )
    };
    assert_eq!(
        open("h1").as_deref(),
        Some("pylon_ws_connections_open{endpoint=\"echo\",transport=\"h1\"} 1")
    );
    assert_eq!(
        open("h2").as_deref(),
        Some("pylon_ws_connections_open{endpoint=\"echo\",transport=\"h2\"} 1")
    );
    within("close", http1.close(CloseCode::NORMAL, "done"))
        .await
        .unwrap();
    within("close", http2.close(CloseCode::NORMAL, "done"))
        .await
        .unwrap();
}

#[tokio::test]
async fn drain_sends_goaway_to_http2_connections() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(dir.path(), &["--drain-timeout", "8"]);

    // A WebSocket client that never replies to the close frame keeps the node draining for
    // up to the close timeout, so the HTTP/2 connection must end before the process does.
    let mut stuck = TcpStream::connect(server.addr).await.unwrap();
    let upgrade = format!(
        "GET /ws/echo HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr
    );
    tokio::io::AsyncWriteExt::write_all(&mut stuck, upgrade.as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut stuck, &mut head)
        .await
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");

    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = Request::builder()
        .uri(format!("http://{}/healthz", server.addr))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = within("GET before drain", sender.send_request(request))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let pid = server.pid().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let ended = within("HTTP/2 connection end after GOAWAY", connection)
        .await
        .unwrap();
    assert!(ended.is_ok(), "HTTP/2 connection failed: {ended:?}");
    assert!(
        server.is_running(),
        "the node exited before its HTTP/2 connection was shut down"
    );
    drop(stuck);
    let status = server.terminate(Duration::from_secs(15));
    assert!(status.success(), "pylon exited with {status}");
}

/// Opens a raw HTTP/2 connection to a plain node with prior knowledge, for requests that
/// `pylon_ws::client` does not send, and waits for the node's SETTINGS.
async fn raw_h2c(server: &Server) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (send_request, mut connection) = within("HTTP/2 handshake", h2::client::handshake(tcp))
        .await
        .unwrap();
    let mut ping_pong = connection.ping_pong().expect("a ping handle");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    within("ping", ping_pong.ping(h2::Ping::opaque()))
        .await
        .unwrap();
    assert!(
        send_request.is_extended_connect_protocol_enabled(),
        "the node did not send SETTINGS_ENABLE_CONNECT_PROTOCOL"
    );
    send_request
}

/// Builds a CONNECT request to `uri` with `sec-websocket-version: version` and, if given,
/// the `:protocol` pseudo-header.
fn connect_request(uri: &str, protocol: Option<&'static str>, version: &str) -> Request<()> {
    let mut request = Request::builder()
        .method(Method::CONNECT)
        .uri(uri)
        .header("sec-websocket-version", version)
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
async fn send_raw(
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
/// as it is. Payloads here are shorter than 126 bytes.
fn masked_frame(first_byte: u8, payload: &[u8]) -> Bytes {
    let mut frame = vec![first_byte, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

/// Writes a text message on a raw WebSocket stream and expects its unmasked echo.
async fn expect_raw_echo(recv: &mut h2::RecvStream, send: &mut h2::SendStream<Bytes>, text: &[u8]) {
    send.send_data(masked_frame(0x81, text), false).unwrap();
    let mut echo = Vec::new();
    while echo.len() < text.len() + 2 {
        let data = within("echo", recv.data())
            .await
            .expect("the stream ended before the echo")
            .unwrap();
        let _ = recv.flow_control().release_capacity(data.len());
        echo.extend_from_slice(&data);
    }
    assert_eq!(echo[..2], [0x81, text.len() as u8], "echo header");
    assert_eq!(&echo[2..], text, "echo payload");
}

/// Sends the extended CONNECT faults of RFC 8441 to `pylon serve` with prior knowledge,
/// all on one HTTP/2 connection. Each gets its status or stream reset. Neither the
/// WebSocket opened first nor the connection is affected.
#[tokio::test]
async fn http2_connect_faults_affect_only_their_stream() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let echo_uri = format!("http://{}/ws/echo", server.addr);
    let send_request = raw_h2c(&server).await;
    let (response, mut healthy_send) = send_raw(
        &send_request,
        connect_request(&echo_uri, Some("websocket"), "13"),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut healthy_recv = response.into_body();
    expect_raw_echo(&mut healthy_recv, &mut healthy_send, b"first").await;

    // Without :protocol, h2 sends a plain CONNECT: :method and :authority only.
    let (response, _) = send_raw(&send_request, connect_request(&echo_uri, None, "13"))
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "CONNECT without :protocol"
    );

    let (response, _) = send_raw(
        &send_request,
        connect_request(&echo_uri, Some("webtransport"), "13"),
    )
    .await
    .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "unknown :protocol"
    );

    for version in ["8", "12", "14"] {
        let (response, _) = send_raw(
            &send_request,
            connect_request(&echo_uri, Some("websocket"), version),
        )
        .await
        .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UPGRADE_REQUIRED,
            "Sec-WebSocket-Version {version}"
        );
        assert_eq!(
            response.headers()["sec-websocket-version"],
            "13",
            "Sec-WebSocket-Version {version}"
        );
    }

    // An authority-only URI makes h2 send an extended CONNECT without :scheme and :path,
    // which the node resets with PROTOCOL_ERROR as a malformed request.
    let no_path = connect_request(&server.addr.to_string(), Some("websocket"), "13");
    let error = send_raw(&send_request, no_path).await.unwrap_err();
    assert_eq!(
        error.reason(),
        Some(h2::Reason::PROTOCOL_ERROR),
        "extended CONNECT without :path: {error}"
    );

    // Half of a 100-byte binary frame, then RST_STREAM on that stream.
    let (response, mut broken) = send_raw(
        &send_request,
        connect_request(&echo_uri, Some("websocket"), "13"),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut partial = vec![0x82, 0x80 | 100, 0, 0, 0, 0];
    partial.extend_from_slice(&[b'x'; 40]);
    broken.send_data(Bytes::from(partial), false).unwrap();
    broken.send_reset(h2::Reason::CANCEL);

    expect_raw_echo(&mut healthy_recv, &mut healthy_send, b"after every fault").await;
    let (response, mut fresh_send) = send_raw(
        &send_request,
        connect_request(&echo_uri, Some("websocket"), "13"),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut fresh_recv = response.into_body();
    expect_raw_echo(&mut fresh_recv, &mut fresh_send, b"new stream").await;

    // The node ended the reset WebSocket and kept the other two open.
    let total = "pylon_ws_connections_total{endpoint=\"echo\",transport=\"h2\"} 3";
    let open = "pylon_ws_connections_open{endpoint=\"echo\",transport=\"h2\"} 2";
    let mut metrics = String::new();
    for _ in 0..20 {
        metrics = h2c_get(&server, &["/metrics"]).await.remove(0).1;
        if metrics.contains(open) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metrics.contains(total), "missing `{total}` in:\n{metrics}");
    assert!(metrics.contains(open), "missing `{open}` in:\n{metrics}");
}

//! `pylon serve` over HTTP/3: WebSockets on the QUIC listener that runs next to the TLS
//! listener, `Alt-Svc`, metrics, `--no-http3`, and handshake faults.

mod common;

use std::time::Duration;

use common::{Server, fetch_metrics_tls};
use http::{HeaderMap, HeaderValue, StatusCode};
use pylon_ws::client::{ClientConfig, connect_any};
use pylon_ws::h3::{H3Client, H3Error};
use pylon_ws::tls::ClientTls;
use pylon_ws::{CloseCode, Message};
use serde_json::{Value, json};

const STEP_TIMEOUT: Duration = Duration::from_secs(10);

fn url(server: &Server, path: &str) -> String {
    format!("wss://localhost:{}{path}", server.addr.port())
}

/// A client for a node with `--tls-self-signed`, whose certificate is generated at start.
fn insecure_config() -> ClientConfig {
    ClientConfig {
        tls: ClientTls {
            dangerous_accept_any_certificate: true,
            ..ClientTls::default()
        },
        ..ClientConfig::default()
    }
}

async fn next_message<S>(ws: &mut pylon_ws::WebSocket<S>) -> Message
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::time::timeout(STEP_TIMEOUT, ws.recv())
        .await
        .expect("no message within the timeout")
        .expect("websocket ended")
        .expect("websocket failed")
}

#[tokio::test]
async fn echo_and_chat_over_http3() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--tls-self-signed"]);
    let config = insecure_config();
    let client = H3Client::new(&config.tls, STEP_TIMEOUT).unwrap();

    let mut echoes = Vec::new();
    for index in 0..3 {
        let (ws, response) = client
            .connect(&url(&server, &format!("/ws/echo?n={index}")), &config)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        echoes.push(ws);
    }
    for (index, ws) in echoes.iter_mut().enumerate() {
        let text = format!("hello over HTTP/3 from {index}");
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(next_message(ws).await, Message::text(text));
        let binary = vec![index as u8; 100_000];
        ws.send(Message::binary(binary.clone())).await.unwrap();
        assert_eq!(next_message(ws).await, Message::binary(binary));
    }

    let (mut chat, _) = client
        .connect(&url(&server, "/ws/chat"), &config)
        .await
        .unwrap();
    let join = json!({"type": "join", "room": "h3", "nick": "quic"});
    chat.send(Message::text(join.to_string())).await.unwrap();
    let mut joined = None;
    for _ in 0..100 {
        let Message::Text(text) = next_message(&mut chat).await else {
            continue;
        };
        let event: Value = serde_json::from_str(text.as_str()).unwrap();
        if event["type"] == "joined" {
            joined = Some(event);
            break;
        }
    }
    let joined = joined.expect("no joined event among the first 100 messages");
    assert_eq!(joined["room"], "h3", "{joined}");

    for mut ws in echoes {
        ws.close(CloseCode::NORMAL, "done").await.unwrap();
    }
    chat.close(CloseCode::NORMAL, "done").await.unwrap();

    let metrics = fetch_metrics_tls(&server);
    let echo_line = "pylon_ws_connections_total{endpoint=\"echo\",transport=\"h3\"} 3";
    assert!(
        metrics.contains(echo_line),
        "missing `{echo_line}` in:\n{metrics}"
    );
    let chat_line = "pylon_ws_connections_total{endpoint=\"chat\",transport=\"h3\"} 1";
    assert!(
        metrics.contains(chat_line),
        "missing `{chat_line}` in:\n{metrics}"
    );
}

#[tokio::test]
async fn tcp_responses_advertise_http3() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--tls-self-signed"]);
    let (_ws, response) = connect_any(&url(&server, "/ws/echo"), insecure_config())
        .await
        .unwrap();
    let expected = format!("h3=\":{}\"; ma=86400", server.addr.port());
    assert_eq!(response.headers()["alt-svc"], expected.as_str());
}

#[tokio::test]
async fn no_http3_flag_turns_quic_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--tls-self-signed", "--no-http3"]);
    let (_ws, response) = connect_any(&url(&server, "/ws/echo"), insecure_config())
        .await
        .unwrap();
    assert!(response.headers().get("alt-svc").is_none());
    let config = insecure_config();
    let client = H3Client::new(&config.tls, Duration::from_millis(500)).unwrap();
    let error = client
        .connect(&url(&server, "/ws/echo"), &config)
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            H3Error::HandshakeTimeout(_) | H3Error::Connect { .. }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn http3_handshake_faults() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--tls-self-signed"]);
    let config = insecure_config();
    let client = H3Client::new(&config.tls, STEP_TIMEOUT).unwrap();

    let mut version_12 = HeaderMap::new();
    version_12.insert("sec-websocket-version", HeaderValue::from_static("12"));
    let (response, _) = client
        .tunnel(&url(&server, "/ws/echo"), version_12)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
    assert_eq!(response.headers()["sec-websocket-version"], "13");

    let error = client
        .connect(&url(&server, "/nowhere"), &config)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, H3Error::Handshake(handshake) if handshake.to_string().contains("404")),
        "{error}"
    );

    // The connection that carried the faults still opens WebSockets.
    let (mut ws, _) = client
        .connect(&url(&server, "/ws/echo"), &config)
        .await
        .unwrap();
    ws.send(Message::text("after faults")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("after faults"));
}

/// Opens a raw HTTP/3 client connection to a node that presents `cert`, for requests that
/// `H3Client` does not send, such as a CONNECT without `:protocol`.
async fn raw_h3(server: &Server, cert: &pylon_ws::tls::SelfSigned) -> pylon_h3::ClientConnection {
    use tokio_rustls::rustls;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert_der.clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![pylon_h3::ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    let quic = endpoint
        .connect_with(
            quinn::ClientConfig::new(std::sync::Arc::new(crypto)),
            server.addr,
            "localhost",
        )
        .unwrap();
    let quic = tokio::time::timeout(STEP_TIMEOUT, quic)
        .await
        .expect("QUIC handshake timed out")
        .unwrap();
    pylon_h3::ClientConnection::new(quic, pylon_h3::Config::default())
        .await
        .unwrap()
}

/// Builds a CONNECT request to `/ws/echo` with `sec-websocket-version: version`. Without a
/// `:protocol` the request is a plain CONNECT, whose URI is the authority alone.
fn connect_request(server: &Server, extended: bool, version: &str) -> http::Request<()> {
    let uri = if extended {
        format!("https://localhost:{}/ws/echo", server.addr.port())
    } else {
        format!("localhost:{}", server.addr.port())
    };
    http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(uri)
        .header("sec-websocket-version", version)
        .body(())
        .unwrap()
}

/// Encodes a masked client frame with the all-zero masking key, so the payload is sent
/// as it is. Payloads here are shorter than 126 bytes.
fn masked_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![first_byte, 0x80 | payload.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    frame
}

/// Writes a text message on a raw tunnel and expects its unmasked echo.
async fn expect_raw_echo(tunnel: &mut pylon_ws::h3::H3Stream, text: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    tunnel.write_all(&masked_frame(0x81, text)).await.unwrap();
    tunnel.flush().await.unwrap();
    let mut echo = vec![0u8; text.len() + 2];
    tokio::time::timeout(STEP_TIMEOUT, tunnel.read_exact(&mut echo))
        .await
        .expect("no echo within the timeout")
        .unwrap();
    assert_eq!(echo[..2], [0x81, text.len() as u8], "echo header");
    assert_eq!(&echo[2..], text, "echo payload");
}

/// Sends the extended CONNECT faults of RFC 9220 to `pylon serve`, all on one QUIC
/// connection. Each gets its status or stream reset. Neither the WebSocket opened first
/// nor the connection is affected.
#[tokio::test]
async fn http3_connect_faults_affect_only_their_stream() {
    use tokio::io::AsyncWriteExt;

    let dir = tempfile::tempdir().unwrap();
    let cert = pylon_ws::tls::self_signed_localhost().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, &cert.cert_pem).unwrap();
    std::fs::write(&key_path, &cert.key_pem).unwrap();
    let data_dir = dir.path().join("data");
    let server = Server::start_with(
        &data_dir,
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    let connection = raw_h3(&server, &cert).await;
    let (response, mut healthy) = connection
        .connect(&connect_request(&server, true, "13"), Some("websocket"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    expect_raw_echo(&mut healthy, b"first").await;

    let (response, _) = connection
        .connect(&connect_request(&server, false, "13"), None)
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "CONNECT without :protocol"
    );

    let (response, _) = connection
        .connect(&connect_request(&server, true, "13"), Some("webtransport"))
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        StatusCode::BAD_REQUEST,
        "unknown :protocol"
    );

    for version in ["8", "12", "14"] {
        let (response, _) = connection
            .connect(&connect_request(&server, true, version), Some("websocket"))
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

    // An extended CONNECT without :path, which the client API cannot send, so the HEADERS
    // frame is written by hand. An extended CONNECT must carry :path, so the node resets
    // the stream as malformed with H3_MESSAGE_ERROR.
    let authority = format!("localhost:{}", server.addr.port());
    let lines = [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "https"),
        (":authority", authority.as_str()),
        ("sec-websocket-version", "13"),
    ];
    let section = pylon_h3::qpack::encode_field_section(
        lines
            .iter()
            .map(|(name, value)| (name.as_bytes(), value.as_bytes())),
    );
    let mut headers_frame = Vec::new();
    pylon_h3::frame::encode(pylon_h3::frame::HEADERS, &section, &mut headers_frame);
    let (mut send, mut recv) = connection.quic().open_bi().await.unwrap();
    send.write_all(&headers_frame).await.unwrap();
    let reset = tokio::time::timeout(STEP_TIMEOUT, recv.read_to_end(1024))
        .await
        .expect("no answer to a CONNECT without :path");
    match reset {
        Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => assert_eq!(
            code.into_inner(),
            pylon_h3::Code::H3_MESSAGE_ERROR.0,
            "reset code for a CONNECT without :path"
        ),
        other => panic!("expected a reset for a CONNECT without :path, got {other:?}"),
    }

    // Half of a 100-byte binary frame, then a reset of that stream.
    let (response, mut broken) = connection
        .connect(&connect_request(&server, true, "13"), Some("websocket"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut partial = vec![0x82, 0x80 | 100, 0, 0, 0, 0];
    partial.extend_from_slice(&[b'x'; 40]);
    broken.write_all(&partial).await.unwrap();
    broken.flush().await.unwrap();
    broken.reset(pylon_h3::Code::H3_REQUEST_CANCELLED);

    expect_raw_echo(&mut healthy, b"after every fault").await;
    let (response, mut fresh) = connection
        .connect(&connect_request(&server, true, "13"), Some("websocket"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    expect_raw_echo(&mut fresh, b"new stream").await;
    assert!(
        connection.quic().close_reason().is_none(),
        "the node closed the connection: {:?}",
        connection.quic().close_reason()
    );

    // The node ended the reset WebSocket and kept the other two open.
    let total = "pylon_ws_connections_total{endpoint=\"echo\",transport=\"h3\"} 3";
    let open = "pylon_ws_connections_open{endpoint=\"echo\",transport=\"h3\"} 2";
    let mut metrics = String::new();
    for _ in 0..20 {
        metrics = fetch_metrics_tls(&server);
        if metrics.contains(open) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(metrics.contains(total), "missing `{total}` in:\n{metrics}");
    assert!(metrics.contains(open), "missing `{open}` in:\n{metrics}");
}

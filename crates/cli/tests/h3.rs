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

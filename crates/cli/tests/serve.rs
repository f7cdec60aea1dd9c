//! `pylon serve` as a user runs it: pages, health, metrics, echo, chat persistence across a
//! restart, and a graceful shutdown on SIGTERM.

mod common;

use std::time::Duration;

use common::{Server, http_get};
use pylon_ws::client::{ClientConfig, connect};
use pylon_ws::{CloseCode, Message, WebSocket};
use serde_json::{Value, json};
use tokio::net::TcpStream;

async fn next_event(ws: &mut WebSocket<TcpStream>) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.recv())
            .await
            .expect("an event within 5 s")
            .expect("connection open")
            .expect("no protocol error");
        if let Message::Text(text) = msg {
            return serde_json::from_str(text.as_str()).expect("events are JSON");
        }
    }
}

/// Reads events until one of type `kind` arrives.
async fn event_of_type(ws: &mut WebSocket<TcpStream>, kind: &str) -> Value {
    for _ in 0..100 {
        let event = next_event(ws).await;
        if event["type"] == kind {
            return event;
        }
    }
    panic!("no {kind} event among the next 100 events");
}

async fn send_json(ws: &mut WebSocket<TcpStream>, value: Value) {
    ws.send(Message::text(value.to_string()))
        .await
        .expect("send a chat request");
}

#[tokio::test]
async fn pages_health_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());

    let (status, body) = http_get(server.addr, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(server.addr, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = http_get(server.addr, "/").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("href=\"/chat\""),
        "index does not link the chat: {body}"
    );
    let (status, body) = http_get(server.addr, "/chat").await;
    assert_eq!(status, 200);
    assert!(body.contains("/ws/chat"), "chat page does not use /ws/chat");
    let (status, _) = http_get(server.addr, "/no-such-page").await;
    assert_eq!(status, 404);
    let (status, _) = http_get(server.addr, "/favicon.ico").await;
    assert_eq!(status, 204);
    let post = common::raw_exchange(
        server.addr,
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(common::status_of(&String::from_utf8_lossy(&post)), 405);

    let (mut ws, _) = connect(&server.url("/ws/echo"), ClientConfig::default())
        .await
        .unwrap();
    ws.send(Message::text("héllo")).await.unwrap();
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::text("héllo"));
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.recv().await.unwrap().unwrap(),
        Message::binary(vec![0u8, 1, 2, 255])
    );

    let (status, metrics) = http_get(server.addr, "/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("text/plain; version=0.0.4"), "{metrics}");
    for line in [
        "pylon_ws_connections_open{endpoint=\"echo\",transport=\"h1\"} 1",
        "pylon_ws_messages_received_total{endpoint=\"echo\"} 2",
        "pylon_ws_messages_sent_total{endpoint=\"echo\"} 2",
        "pylon_ws_received_bytes_total{endpoint=\"echo\"} 10",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    }
    ws.close(CloseCode::NORMAL, "done").await.unwrap();
}

#[tokio::test]
async fn sigterm_closes_websockets_with_1001() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let (mut echo, _) = connect(&server.url("/ws/echo"), ClientConfig::default())
        .await
        .unwrap();
    let (mut chat, _) = connect(&server.url("/ws/chat"), ClientConfig::default())
        .await
        .unwrap();
    send_json(
        &mut chat,
        json!({"type": "join", "room": "r", "nick": "ann"}),
    )
    .await;
    event_of_type(&mut chat, "joined").await;

    let terminate = tokio::task::spawn_blocking(move || {
        let status = server.terminate(Duration::from_secs(15));
        (server, status)
    });
    for ws in [&mut echo, &mut chat] {
        let close = loop {
            match tokio::time::timeout(Duration::from_secs(10), ws.recv())
                .await
                .expect("close within 10 s of SIGTERM")
            {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        let frame = close.expect("close frame with a code");
        assert_eq!(frame.code, CloseCode::GOING_AWAY);
    }
    let (_server, status) = terminate.await.unwrap();
    assert!(status.success(), "pylon exited with {status} after SIGTERM");
}

#[tokio::test]
async fn chat_history_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let (mut ws, _) = connect(&server.url("/ws/chat"), ClientConfig::default())
        .await
        .unwrap();
    send_json(
        &mut ws,
        json!({"type": "join", "room": "keep", "nick": "ann"}),
    )
    .await;
    event_of_type(&mut ws, "joined").await;
    for i in 0..3 {
        send_json(
            &mut ws,
            json!({"type": "send", "room": "keep", "text": format!("m{i}"), "client_id": format!("c{i}")}),
        )
        .await;
        let ack = event_of_type(&mut ws, "ack").await;
        assert_eq!(ack["seq"], i + 1);
    }
    drop(ws);
    let status = server.terminate(Duration::from_secs(15));
    assert!(status.success());

    let server = Server::start(dir.path());
    let (mut ws, _) = connect(&server.url("/ws/chat"), ClientConfig::default())
        .await
        .unwrap();
    send_json(
        &mut ws,
        json!({"type": "join", "room": "keep", "nick": "bob"}),
    )
    .await;
    let joined = event_of_type(&mut ws, "joined").await;
    assert_eq!(joined["last_seq"], 3);
    let history = event_of_type(&mut ws, "history").await;
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .expect("messages array")
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["m0", "m1", "m2"]);

    // Recovery: a client that saw seq 1 gets exactly 2 and 3.
    let (mut late, _) = connect(&server.url("/ws/chat"), ClientConfig::default())
        .await
        .unwrap();
    send_json(
        &mut late,
        json!({"type": "join", "room": "keep", "nick": "cy", "since": 1}),
    )
    .await;
    let history = event_of_type(&mut late, "history").await;
    let seqs: Vec<u64> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [2, 3]);
}

#[tokio::test]
async fn chat_compression_keeps_no_context() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let extensions = |response: &http::Response<()>| {
        response
            .headers()
            .get("sec-websocket-extensions")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };

    let (_chat, response) = connect(&server.url("/ws/chat"), ClientConfig::default())
        .await
        .unwrap();
    let agreed = extensions(&response);
    assert!(
        agreed.starts_with("permessage-deflate"),
        "chat agreed {agreed:?}"
    );
    assert!(
        agreed.contains("server_no_context_takeover"),
        "chat agreed {agreed:?}"
    );
    assert!(
        agreed.contains("client_no_context_takeover"),
        "chat agreed {agreed:?}"
    );

    let (_echo, response) = connect(&server.url("/ws/echo"), ClientConfig::default())
        .await
        .unwrap();
    let agreed = extensions(&response);
    assert!(
        agreed.starts_with("permessage-deflate"),
        "echo agreed {agreed:?}"
    );
    assert!(
        !agreed.contains("no_context_takeover"),
        "echo agreed {agreed:?}"
    );
}

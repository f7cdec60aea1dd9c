//! Pylon client against Pylon server over loopback TCP.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{echo, quick_config, spawn_server, within};
use futures_util::{SinkExt, StreamExt};
use pylon_ws::client::{self, ClientConfig};
use pylon_ws::server::{OriginPolicy, ServerConfig};
use pylon_ws::{CloseCode, CloseFrame, Config, Error, Message, State};
use tokio::sync::mpsc;

fn url(addr: std::net::SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

fn quick_client() -> ClientConfig {
    ClientConfig {
        ws: quick_config().ws,
        ..ClientConfig::default()
    }
}

#[tokio::test]
async fn echo_text_and_binary() {
    let addr = spawn_server(quick_config(), echo).await;
    let (mut ws, response) = within("connect", client::connect(&url(addr), quick_client()))
        .await
        .unwrap();
    assert_eq!(response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(ws.protocol(), None);

    ws.send(Message::text("hello")).await.unwrap();
    let reply = within("text echo", ws.recv()).await.unwrap().unwrap();
    assert_eq!(reply, Message::text("hello"));

    let data = Bytes::from_static(&[0, 1, 2, 255]);
    ws.send(Message::binary(data.clone())).await.unwrap();
    let reply = within("binary echo", ws.recv()).await.unwrap().unwrap();
    assert_eq!(reply, Message::Binary(data));

    ws.send(Message::text("")).await.unwrap();
    let reply = within("empty echo", ws.recv()).await.unwrap().unwrap();
    assert_eq!(reply, Message::text(""));
}

#[tokio::test]
async fn echo_large_messages() {
    let addr = spawn_server(quick_config(), echo).await;
    let (mut ws, _) = within("connect", client::connect(&url(addr), quick_client()))
        .await
        .unwrap();

    for len in [125, 126, 65_535, 65_536, 3 * 1024 * 1024 + 7] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let data = Bytes::from(data);
        ws.send(Message::binary(data.clone())).await.unwrap();
        let reply = within("large echo", ws.recv()).await.unwrap().unwrap();
        assert_eq!(reply.len(), len, "echo of {len} bytes has the wrong length");
        assert_eq!(reply, Message::Binary(data), "echo of {len} bytes differs");
    }
    assert_eq!(ws.buffered_len(), 0);
}

#[tokio::test]
async fn fragmented_messages_reassemble() {
    let mut server_config = quick_config();
    server_config.ws.proto.max_send_frame_size = Some(100);
    let addr = spawn_server(server_config, echo).await;

    let mut client_config = quick_client();
    client_config.ws.proto.max_send_frame_size = Some(7);
    let (mut ws, _) = within("connect", client::connect(&url(addr), client_config))
        .await
        .unwrap();

    let text = "fragmented é text ".repeat(200);
    ws.send(Message::text(text.clone())).await.unwrap();
    let reply = within("fragmented echo", ws.recv()).await.unwrap().unwrap();
    assert_eq!(reply, Message::text(text));

    let data = Bytes::from(vec![9u8; 10_000]);
    ws.send(Message::binary(data.clone())).await.unwrap();
    let reply = within("fragmented echo", ws.recv()).await.unwrap().unwrap();
    assert_eq!(reply, Message::Binary(data));
}

#[tokio::test]
async fn ping_gets_automatic_pong() {
    let addr = spawn_server(quick_config(), echo).await;
    let (mut ws, _) = within("connect", client::connect(&url(addr), quick_client()))
        .await
        .unwrap();

    ws.send(Message::Ping(Bytes::from_static(b"are you there")))
        .await
        .unwrap();
    let reply = within("pong", ws.recv()).await.unwrap().unwrap();
    assert_eq!(reply, Message::Pong(Bytes::from_static(b"are you there")));
}

#[tokio::test]
async fn keepalive_ping_gets_pong() {
    let mut server_config = quick_config();
    server_config.ws.ping_interval = Some(Duration::from_millis(50));
    server_config.ws.pong_timeout = Duration::from_millis(500);
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel();
    let addr = spawn_server(server_config, move |mut ws| {
        let seen_tx = seen_tx.clone();
        async move {
            while let Some(item) = ws.recv().await {
                let _ = seen_tx.send(item.map_err(|err| err.to_string()));
            }
        }
    })
    .await;

    let mut client_config = quick_client();
    client_config.ws.ping_interval = None;
    let (mut ws, _) = within("connect", client::connect(&url(addr), client_config))
        .await
        .unwrap();

    // The client keeps receiving (it gets the pings) and replies to them automatically, so
    // the server sees pongs and no timeout.
    let client = tokio::spawn(async move {
        let receive = async {
            while let Some(Ok(message)) = ws.recv().await {
                assert_eq!(message, Message::Ping(Bytes::new()));
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), receive).await;
        ws
    });
    for _ in 0..3 {
        let item = within("pong on server", seen_rx.recv()).await.unwrap();
        assert_eq!(item, Ok(Message::Pong(Bytes::new())));
    }
    drop(client);
}

#[tokio::test]
async fn client_initiated_close() {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let addr = spawn_server(quick_config(), move |mut ws| {
        let done_tx = done_tx.clone();
        async move {
            let mut seen = Vec::new();
            while let Some(item) = ws.recv().await {
                seen.push(item.map_err(|err| err.to_string()));
            }
            let _ = done_tx.send((seen, ws.state()));
        }
    })
    .await;

    let (mut ws, _) = within("connect", client::connect(&url(addr), quick_client()))
        .await
        .unwrap();
    let started = Instant::now();
    within("client close", ws.close(CloseCode::NORMAL, "bye"))
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "close took {:?}, the server should close TCP right after the handshake",
        started.elapsed()
    );
    assert_eq!(ws.state(), State::Closed);
    assert!(ws.recv().await.is_none());

    let (seen, server_state) = within("server end", done_rx.recv()).await.unwrap();
    let expected = Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "bye")));
    assert_eq!(seen, vec![Ok(expected)]);
    assert_eq!(server_state, State::Closed);
}

#[tokio::test]
async fn server_initiated_close() {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let addr = spawn_server(quick_config(), move |mut ws| {
        let done_tx = done_tx.clone();
        async move {
            let result = ws.close(CloseCode(4000), "server says bye").await;
            let _ = done_tx.send(result.map_err(|err| err.to_string()));
        }
    })
    .await;

    let (mut ws, _) = within("connect", client::connect(&url(addr), quick_client()))
        .await
        .unwrap();
    let first = within("close frame", ws.recv()).await.unwrap().unwrap();
    let expected = Message::Close(Some(CloseFrame::new(CloseCode(4000), "server says bye")));
    assert_eq!(first, expected);

    // The reply goes out with the close frame, and the server then closes TCP, which ends
    // the client without waiting for the close timeout.
    let started = Instant::now();
    assert!(within("end", ws.recv()).await.is_none());
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(ws.state(), State::Closed);

    let server_result = within("server close", done_rx.recv()).await.unwrap();
    assert_eq!(server_result, Ok(()));
}

#[tokio::test]
async fn send_after_close_fails() {
    let addr = spawn_server(quick_config(), echo).await;
    let (mut ws, _) = within("connect", client::connect(&url(addr), quick_client()))
        .await
        .unwrap();
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    let result = ws.send(Message::text("late")).await;
    assert!(matches!(result, Err(Error::ConnectionClosed)), "{result:?}");
}

#[tokio::test]
async fn invalid_close_code_is_rejected() {
    let addr = spawn_server(quick_config(), echo).await;
    let (mut ws, _) = within("connect", client::connect(&url(addr), quick_client()))
        .await
        .unwrap();
    let result = ws.close(CloseCode::ABNORMAL, "").await;
    assert!(matches!(result, Err(Error::Send(_))), "{result:?}");
    assert_eq!(ws.state(), State::Open);
}

#[tokio::test]
async fn sink_and_stream_traits() {
    let addr = spawn_server(quick_config(), echo).await;
    let (ws, _) = within("connect", client::connect(&url(addr), quick_client()))
        .await
        .unwrap();
    let (mut sink, mut stream) = ws.split();

    sink.send(Message::text("one")).await.unwrap();
    let mut batch =
        futures_util::stream::iter(["two", "three", "four"].map(|text| Ok(Message::text(text))));
    sink.send_all(&mut batch).await.unwrap();

    let mut received = Vec::new();
    for _ in 0..4 {
        let message = within("stream item", stream.next()).await.unwrap().unwrap();
        received.push(message);
    }
    let expected: Vec<Message> = ["one", "two", "three", "four"].map(Message::text).to_vec();
    assert_eq!(received, expected);

    // Closing the sink sends a 1000 close; the stream then yields the server's reply and
    // ends.
    within("sink close", sink.close()).await.unwrap();
    let reply = within("close reply", stream.next()).await.unwrap().unwrap();
    let expected = Message::Close(Some(CloseFrame::new(CloseCode::NORMAL, "")));
    assert_eq!(reply, expected);
    assert!(within("end", stream.next()).await.is_none());
}

#[tokio::test]
async fn subprotocol_is_negotiated() {
    let mut server_config = quick_config();
    server_config.handshake.protocols = vec!["pylon.chat.v1".to_owned(), "other".to_owned()];
    let (protocol_tx, mut protocol_rx) = mpsc::unbounded_channel();
    let addr = spawn_server(server_config, move |ws| {
        let protocol_tx = protocol_tx.clone();
        async move {
            let _ = protocol_tx.send(ws.protocol().map(str::to_owned));
        }
    })
    .await;

    let client_config = ClientConfig {
        protocols: vec!["unknown".to_owned(), "pylon.chat.v1".to_owned()],
        ..quick_client()
    };
    let (ws, response) = within("connect", client::connect(&url(addr), client_config))
        .await
        .unwrap();
    assert_eq!(ws.protocol(), Some("pylon.chat.v1"));
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "pylon.chat.v1"
    );
    let server_protocol = within("server protocol", protocol_rx.recv()).await.unwrap();
    assert_eq!(server_protocol.as_deref(), Some("pylon.chat.v1"));
}

#[tokio::test]
async fn extra_headers_reach_server_and_reserved_are_rejected() {
    let mut server_config = quick_config();
    server_config.handshake.origins = OriginPolicy::AllowList(vec!["http://127.0.0.1".to_owned()]);
    let addr = spawn_server(server_config, echo).await;

    let mut allowed = quick_client();
    allowed
        .headers
        .insert("origin", http::HeaderValue::from_static("http://127.0.0.1"));
    let result = within("connect", client::connect(&url(addr), allowed)).await;
    assert!(result.is_ok(), "{result:?}");

    let mut forbidden = quick_client();
    forbidden.headers.insert(
        "origin",
        http::HeaderValue::from_static("http://evil.invalid"),
    );
    let result = within("connect", client::connect(&url(addr), forbidden)).await;
    assert!(
        matches!(
            result,
            Err(Error::Handshake(
                pylon_ws::HandshakeError::UnexpectedStatus(403)
            ))
        ),
        "{result:?}"
    );

    let mut reserved = quick_client();
    reserved
        .headers
        .insert("sec-websocket-key", http::HeaderValue::from_static("x"));
    let result = client::connect(&url(addr), reserved).await;
    assert!(
        matches!(result, Err(Error::ReservedHeader(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn connect_over_ipv6_loopback() {
    let Ok(listener) = tokio::net::TcpListener::bind("[::1]:0").await else {
        eprintln!("skipping: IPv6 loopback is not available");
        return;
    };
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(|mut req| async move {
            let (response, pending) =
                pylon_ws::server::upgrade(&mut req, &ServerConfig::default()).unwrap();
            tokio::spawn(async move {
                echo(pending.finish::<tokio::net::TcpStream>().await.unwrap()).await;
            });
            Ok::<_, std::convert::Infallible>(response)
        });
        let _ = pylon_ws::server::serve_connection(stream, service, &Config::default()).await;
    });

    let (mut ws, _) = within(
        "connect",
        client::connect(&format!("ws://[::1]:{}/", addr.port()), quick_client()),
    )
    .await
    .unwrap();
    ws.send(Message::text("over v6")).await.unwrap();
    let reply = within("echo", ws.recv()).await.unwrap().unwrap();
    assert_eq!(reply, Message::text("over v6"));
    drop(ws);
    server.abort();
}

#[tokio::test]
async fn plain_connect_rejects_wss_url() {
    let result = client::connect("wss://127.0.0.1:1/", ClientConfig::default()).await;
    let Err(Error::Url(message)) = result else {
        panic!("expected a URL error, got {result:?}");
    };
    assert!(message.contains("client::connect_any"), "{message}");
}

#[tokio::test]
async fn connect_to_plain_http_fails_handshake() {
    // A hyper server that responds to every request with 200 instead of upgrading.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                Bytes::from_static(b"not a websocket"),
            )))
        });
        let _ = pylon_ws::server::serve_connection(stream, service, &Config::default()).await;
    });

    let result = within("connect", client::connect(&url(addr), quick_client())).await;
    assert!(
        matches!(
            result,
            Err(Error::Handshake(
                pylon_ws::HandshakeError::UnexpectedStatus(200)
            ))
        ),
        "{result:?}"
    );
}

#[tokio::test]
async fn select_loop_with_recv_is_cancel_safe() {
    let addr = spawn_server(quick_config(), echo).await;
    let (mut ws, _) = within("connect", client::connect(&url(addr), quick_client()))
        .await
        .unwrap();

    // Cancel `recv` many times by racing it against a short timer while a large echo is in
    // flight; no bytes may be lost.
    let data = Bytes::from(vec![7u8; 512 * 1024]);
    ws.send(Message::binary(data.clone())).await.unwrap();
    let mut cancelled = 0;
    let reply = loop {
        tokio::select! {
            item = ws.recv() => break item.unwrap().unwrap(),
            () = tokio::time::sleep(Duration::from_micros(50)) => cancelled += 1,
        }
        assert!(cancelled < 1_000_000, "recv never completed");
    };
    assert_eq!(reply, Message::Binary(data));
}

#[tokio::test]
async fn connect_with_stream_uses_given_socket() {
    let addr = spawn_server(quick_config(), echo).await;
    // A socket bound to a chosen source address before it connects.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let source = socket.local_addr().unwrap();
    let stream = within("tcp connect", socket.connect(addr)).await.unwrap();

    let (mut ws, response) = within(
        "handshake",
        client::connect_with_stream(stream, &url(addr), quick_client()),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), http::StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(ws.get_ref().local_addr().unwrap(), source);
    assert!(ws.compression().is_some(), "compression was not agreed");

    ws.send(Message::text("through my socket")).await.unwrap();
    let reply = within("echo", ws.recv()).await.unwrap().unwrap();
    assert_eq!(reply, Message::text("through my socket"));
    within("close", ws.close(CloseCode::NORMAL, ""))
        .await
        .unwrap();
}

#[tokio::test]
async fn connect_with_stream_rejects_bad_url() {
    let addr = spawn_server(quick_config(), echo).await;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let result = client::connect_with_stream(stream, "http://127.0.0.1/", quick_client()).await;
    assert!(matches!(result, Err(Error::Url(_))), "{result:?}");
}

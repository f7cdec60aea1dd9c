//! Keep-alive, idle, close and handshake timeouts.

mod common;

use std::time::{Duration, Instant};

use common::{
    quick_config, raw_handshake, read_frame, read_frame_for, read_to_end, spawn_server, within,
};
use pylon_ws::client::{self, ClientConfig};
use pylon_ws::{CloseCode, CloseFrame, Config, Error, Message, State};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Spawns a server whose handler reports every `recv` item, with errors as text.
async fn spawn_reporting_server(
    config: pylon_ws::server::ServerConfig,
) -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<Option<Result<Message, String>>>,
) {
    let (item_tx, item_rx) = mpsc::unbounded_channel();
    let addr = spawn_server(config, move |mut ws| {
        let item_tx = item_tx.clone();
        async move {
            loop {
                let item = ws.recv().await;
                let end = item.is_none();
                let _ = item_tx.send(item.map(|item| item.map_err(|err| err.to_string())));
                if end {
                    break;
                }
            }
        }
    })
    .await;
    (addr, item_rx)
}

/// Asserts that paused-clock time `elapsed` is `expected`, allowing for the timer's
/// millisecond rounding and the real time spent before the clock was paused.
fn assert_close_to(elapsed: Duration, expected: Duration) {
    let slack = Duration::from_millis(50);
    assert!(
        elapsed + slack >= expected && elapsed <= expected + slack,
        "elapsed {elapsed:?}, expected {expected:?}"
    );
}

#[tokio::test]
async fn pong_timeout_closes_silent_peer() {
    // Default keep-alive settings: a ping after 30 s of silence, then 10 s for any reply.
    let (addr, mut items) = spawn_reporting_server(quick_config()).await;
    let (mut stream, mut pending) = raw_handshake(addr).await;

    // The connection is set up with the real clock. From here the clock is paused and
    // advances on its own whenever every task waits, so 40 s pass at once.
    tokio::time::pause();
    let started = tokio::time::Instant::now();

    // Waits here are bounded by 60 s of paused time, because the usual 10 s bound would
    // expire before the 30 s ping interval.
    let limit = Duration::from_secs(60);
    let ping = read_frame_for(&mut stream, &mut pending, limit)
        .await
        .unwrap();
    assert_eq!(ping.opcode, 0x9);
    assert_close_to(started.elapsed(), Duration::from_secs(30));

    // The raw peer never replies, so the server drops it without a close frame.
    assert!(
        read_frame_for(&mut stream, &mut pending, limit)
            .await
            .is_none()
    );
    assert_close_to(started.elapsed(), Duration::from_secs(40));
    let item = tokio::time::timeout(limit, items.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(item, Some(Err(Error::PongTimeout.to_string())));
    let end = tokio::time::timeout(limit, items.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(end, None);
}

#[tokio::test]
async fn any_frame_counts_as_pong() {
    let mut config = quick_config();
    config.ws.ping_interval = Some(Duration::from_millis(100));
    config.ws.pong_timeout = Duration::from_millis(200);
    let (addr, mut items) = spawn_reporting_server(config).await;
    let (mut stream, mut pending) = raw_handshake(addr).await;

    // Instead of pongs the peer replies to each ping with a text message, which also proves
    // it is alive.
    for i in 0..3 {
        let ping = read_frame(&mut stream, &mut pending).await.unwrap();
        assert_eq!(ping.opcode, 0x9, "frame {i}");
        let text = format!("alive {i}");
        stream
            .write_all(&common::masked_frame(true, 0x1, text.as_bytes()))
            .await
            .unwrap();
        let item = within("server item", items.recv()).await.unwrap();
        assert_eq!(item, Some(Ok(Message::text(text))));
    }
}

#[tokio::test]
async fn idle_timeout_closes_with_going_away() {
    let mut config = quick_config();
    config.ws.idle_timeout = Some(Duration::from_millis(300));
    // Pings and pongs flow meanwhile, but do not count as activity.
    config.ws.ping_interval = Some(Duration::from_millis(50));
    let (addr, mut items) = spawn_reporting_server(config).await;

    let client_config = ClientConfig {
        ws: quick_config().ws,
        ..ClientConfig::default()
    };
    let (mut ws, _) = within(
        "connect",
        client::connect(&format!("ws://{addr}/"), client_config),
    )
    .await
    .unwrap();
    let started = Instant::now();

    let mut pings = 0;
    let close = loop {
        match within("client recv", ws.recv()).await.unwrap().unwrap() {
            Message::Ping(_) => pings += 1,
            other => break other,
        }
    };
    let elapsed = started.elapsed();
    assert!(
        pings >= 2,
        "only {pings} keep-alive pings before the idle close"
    );
    let expected = Message::Close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "idle timeout")));
    assert_eq!(close, expected);
    assert!(
        elapsed >= Duration::from_millis(250),
        "closed after {elapsed:?}"
    );
    assert!(within("client end", ws.recv()).await.is_none());

    let mut server_items = Vec::new();
    while let Some(item) = within("server item", items.recv()).await.unwrap() {
        if !matches!(item, Ok(Message::Pong(_))) {
            server_items.push(item);
        }
    }
    // The client's reply echoes the status code without a reason.
    let expected_close = Message::Close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "")));
    assert_eq!(
        server_items,
        vec![Err(Error::IdleTimeout.to_string()), Ok(expected_close)]
    );
}

#[tokio::test]
async fn idle_timeout_is_reset_by_messages() {
    let mut config = quick_config();
    config.ws.idle_timeout = Some(Duration::from_millis(300));
    config.ws.ping_interval = None;
    let addr = spawn_server(config, common::echo).await;
    let client_config = ClientConfig {
        ws: quick_config().ws,
        ..ClientConfig::default()
    };
    let (mut ws, _) = within(
        "connect",
        client::connect(&format!("ws://{addr}/"), client_config),
    )
    .await
    .unwrap();

    // Messages every 100 ms keep the connection open past several idle timeouts.
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        ws.send(Message::text(format!("{i}"))).await.unwrap();
        let reply = within("echo", ws.recv()).await.unwrap().unwrap();
        assert_eq!(reply, Message::text(format!("{i}")));
    }
    assert_eq!(ws.state(), State::Open);
}

#[tokio::test]
async fn close_timeout_drops_unresponsive_peer() {
    let mut config = quick_config();
    config.ws.close_timeout = Duration::from_millis(300);
    let (result_tx, mut result_rx) = mpsc::unbounded_channel();
    let addr = spawn_server(config, move |mut ws| {
        let result_tx = result_tx.clone();
        async move {
            let started = Instant::now();
            let result = ws.close(CloseCode::NORMAL, "bye").await;
            let _ = result_tx.send((result.map_err(|err| err.to_string()), started.elapsed()));
        }
    })
    .await;
    let (mut stream, mut pending) = raw_handshake(addr).await;

    // The raw peer reads the close frame but never replies to it.
    let close = read_frame(&mut stream, &mut pending).await.unwrap();
    assert_eq!(close.close_code(), Some(1000));
    let (result, elapsed) = within("server close", result_rx.recv()).await.unwrap();
    assert_eq!(result, Err(Error::CloseTimeout.to_string()));
    assert!(
        elapsed >= Duration::from_millis(250),
        "gave up after {elapsed:?}"
    );
    assert!(read_to_end(&mut stream).await.is_empty());
}

#[tokio::test]
async fn handshake_timeout_drops_half_request() {
    let mut config = quick_config();
    config.ws.handshake_timeout = Duration::from_millis(300);
    let addr = spawn_server(config, common::echo).await;

    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: webs")
        .await
        .unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let read = within("server drop", stream.read(&mut buf)).await;
    let elapsed = started.elapsed();
    // hyper may respond with an error status before it closes; either way the connection
    // ends and no upgrade happens.
    match read {
        Ok(0) | Err(_) => {}
        Ok(n) => {
            let response = String::from_utf8_lossy(&buf[..n]);
            assert!(
                !response.contains(" 101 "),
                "unexpected upgrade: {response}"
            );
            assert_eq!(within("end", stream.read(&mut buf)).await.unwrap_or(0), 0);
        }
    }
    assert!(
        elapsed >= Duration::from_millis(250),
        "dropped after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "dropped after {elapsed:?}"
    );
}

#[tokio::test]
async fn client_handshake_timeout() {
    // A listener that accepts and then never responds.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        drop(stream);
    });

    let config = ClientConfig {
        ws: Config {
            handshake_timeout: Duration::from_millis(300),
            ..Config::default()
        },
        ..ClientConfig::default()
    };
    let started = Instant::now();
    let result = within("connect", client::connect(&format!("ws://{addr}/"), config)).await;
    assert!(matches!(result, Err(Error::HandshakeTimeout)), "{result:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
    holder.abort();
}

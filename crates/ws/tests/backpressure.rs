//! Peers that send but never read: bounded buffers, write timeouts and closes that still
//! take effect while a `send` waits.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{masked_frame, quick_config, raw_handshake, spawn_server, within};
use pylon_ws::server::ServerConfig;
use pylon_ws::{CloseCode, Error, Message, Sender};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const BINARY: u8 = 0x2;
const PING: u8 = 0x9;

/// Maximum bytes a flooding peer writes before the test gives up on seeing it stall.
const MAX_FLOOD: usize = 64 << 20;

/// Time without write progress after which the flooding peer counts as stalled.
const STALL: Duration = Duration::from_millis(500);

/// Upper bound for the server's buffered bytes under a flood: the 64 KiB write buffer
/// high-water mark, one 16 KiB read, 2 KiB of queued pongs and one frame of slack.
const BUFFERED_BOUND: usize = 64 * 1024 + 16 * 1024 + 2 * 1024 + 16 * 1024;

/// How a flood of writes ended.
#[derive(Debug, PartialEq, Eq)]
enum FloodEnd {
    /// A write made no progress for [`STALL`].
    Stalled,
    /// A write failed, because the server dropped the connection.
    Failed,
    /// [`MAX_FLOOD`] bytes were written.
    AllWritten,
}

/// Writes `chunk` repeatedly until a write makes no progress for [`STALL`], a write fails
/// or [`MAX_FLOOD`] bytes are out. Returns how it ended and the bytes written.
async fn flood(stream: &mut TcpStream, chunk: &[u8]) -> (FloodEnd, usize) {
    let mut written = 0;
    while written < MAX_FLOOD {
        match tokio::time::timeout(STALL, stream.write_all(chunk)).await {
            Ok(Ok(())) => written += chunk.len(),
            Ok(Err(_)) => return (FloodEnd::Failed, written),
            Err(_) => return (FloodEnd::Stalled, written),
        }
    }
    (FloodEnd::AllWritten, written)
}

/// How a server-side echo loop ended, and when.
#[derive(Debug)]
struct EchoEnd {
    /// The error `send` or `recv` returned, as text, or `None` if `recv` returned `None`.
    error: Option<String>,
    at: Instant,
}

/// Starts a server that runs the echo loop of `pylon serve` (receive, then await `send`)
/// and reports how each connection ended. Each connection's `Sender` is reported first.
async fn spawn_echo_server(
    config: ServerConfig,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<Sender>,
    mpsc::UnboundedReceiver<EchoEnd>,
) {
    let (sender_tx, sender_rx) = mpsc::unbounded_channel();
    let (end_tx, end_rx) = mpsc::unbounded_channel();
    let addr = spawn_server(config, move |mut ws| {
        let sender_tx = sender_tx.clone();
        let end_tx = end_tx.clone();
        async move {
            let _ = sender_tx.send(ws.sender());
            let error = loop {
                let message = match ws.recv().await {
                    None => break None,
                    Some(Err(err)) => break Some(err.to_string()),
                    Some(Ok(message)) => message,
                };
                if !matches!(message, Message::Text(_) | Message::Binary(_)) {
                    continue;
                }
                if let Err(err) = ws.send(message).await {
                    break Some(err.to_string());
                }
            };
            let _ = end_tx.send(EchoEnd {
                error,
                at: Instant::now(),
            });
        }
    })
    .await;
    (addr, sender_rx, end_rx)
}

/// 64 KiB of masked binary frames.
fn binary_chunk() -> Vec<u8> {
    masked_frame(true, BINARY, &vec![0x5a; 64 * 1024 - 14])
}

#[tokio::test]
async fn ping_flood_keeps_server_buffers_bounded() {
    let mut config = quick_config();
    config.ws.ping_interval = None;
    config.ws.write_timeout = None;
    let max_buffered = Arc::new(AtomicUsize::new(0));
    let pings = Arc::new(AtomicUsize::new(0));
    let observed = (Arc::clone(&max_buffered), Arc::clone(&pings));
    let addr = spawn_server(config, move |mut ws| {
        let (max_buffered, pings) = observed.clone();
        async move {
            while let Some(Ok(message)) = ws.recv().await {
                if matches!(message, Message::Ping(_)) {
                    pings.fetch_add(1, Ordering::Relaxed);
                }
                max_buffered.fetch_max(ws.buffered_len(), Ordering::Relaxed);
            }
        }
    })
    .await;
    let (mut stream, _) = raw_handshake(addr).await;

    // About 64 KiB of pings with the maximum control payload, sent again and again while
    // nothing is ever read, so that every automatic pong stays unsent.
    let ping = masked_frame(true, PING, &[0x70; 125]);
    let chunk = ping.repeat(64 * 1024 / ping.len());
    let (flood_end, written) = flood(&mut stream, &chunk).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let max_buffered = max_buffered.load(Ordering::Relaxed);
    let pings = pings.load(Ordering::Relaxed);
    println!("flooded {written} bytes, server received {pings} pings, max buffered {max_buffered}");
    assert!(pings > 0, "server received no ping");
    assert!(
        max_buffered <= BUFFERED_BOUND,
        "server buffered {max_buffered} bytes, bound {BUFFERED_BOUND}"
    );
    assert_eq!(
        flood_end,
        FloodEnd::Stalled,
        "flood of pings ended after {written} bytes"
    );
}

#[tokio::test]
async fn write_timeout_ends_blocked_send() {
    let mut config = quick_config();
    config.ws.ping_interval = None;
    config.ws.write_timeout = Some(Duration::from_millis(300));
    let (addr, _senders, mut ends) = spawn_echo_server(config).await;
    let (mut stream, _) = raw_handshake(addr).await;

    // The server's send stalls before the peer's writes do, so the server may drop the
    // connection while the peer still writes, which makes that write fail.
    let (flood_end, written) = flood(&mut stream, &binary_chunk()).await;
    assert_ne!(flood_end, FloodEnd::AllWritten, "{written} bytes written");
    let flood_ended_at = Instant::now();

    let end = within("echo loop end", ends.recv()).await.unwrap();
    assert_eq!(end.error, Some(Error::WriteTimeout.to_string()));
    let after_flood = end.at.saturating_duration_since(flood_ended_at);
    assert!(
        after_flood < Duration::from_secs(2),
        "ended {after_flood:?} after the flood"
    );
}

#[tokio::test]
async fn sender_close_ends_blocked_send() {
    let mut config = quick_config();
    config.ws.ping_interval = None;
    config.ws.write_timeout = None;
    config.ws.close_timeout = Duration::from_millis(300);
    let (addr, mut senders, mut ends) = spawn_echo_server(config).await;
    let (mut stream, _) = raw_handshake(addr).await;
    let sender = within("sender", senders.recv()).await.unwrap();

    let (flood_end, written) = flood(&mut stream, &binary_chunk()).await;
    assert_eq!(flood_end, FloodEnd::Stalled, "{written} bytes written");
    let no_end = tokio::time::timeout(Duration::from_millis(500), ends.recv()).await;
    assert!(
        no_end.is_err(),
        "echo loop ended before the close: {no_end:?}"
    );

    let closed_at = Instant::now();
    sender.close(CloseCode::GOING_AWAY, "server shutting down");
    let end = within("echo loop end", ends.recv()).await.unwrap();
    let elapsed = end.at.duration_since(closed_at);
    assert_eq!(end.error, Some(Error::CloseTimeout.to_string()));
    assert!(
        elapsed >= Duration::from_millis(250),
        "ended {elapsed:?} after the close"
    );
    assert!(
        elapsed < Duration::from_secs(2),
        "ended {elapsed:?} after the close"
    );
}

#[tokio::test]
async fn pong_timeout_ends_blocked_send() {
    let mut config = quick_config();
    config.ws.ping_interval = Some(Duration::from_millis(100));
    config.ws.pong_timeout = Duration::from_millis(200);
    config.ws.write_timeout = None;
    let (addr, _senders, mut ends) = spawn_echo_server(config).await;
    let (mut stream, _) = raw_handshake(addr).await;

    let (flood_end, written) = flood(&mut stream, &binary_chunk()).await;
    assert_ne!(flood_end, FloodEnd::AllWritten, "{written} bytes written");
    let end = within("echo loop end", ends.recv()).await.unwrap();
    assert_eq!(end.error, Some(Error::PongTimeout.to_string()));
}

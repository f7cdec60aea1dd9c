//! In-process WebSocket servers on 127.0.0.1 for the benchmark tests.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use pylon_ws::server::{self, ServerConfig};
use pylon_ws::{CloseCode, Message, WebSocket};
use tokio::net::{TcpListener, TcpStream};

/// Upper bound for a whole benchmark run in a test.
pub(crate) const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the test server does with each WebSocket.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Behavior {
    /// Returns every text and binary message unchanged.
    Echo,
    /// Returns every text and binary message with its last byte changed.
    Corrupt,
    /// Closes each connection with 1001 right after the upgrade.
    CloseAtOnce,
}

/// A test server, the peer addresses of the connections it accepted and counts of its
/// WebSockets.
pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    peers: Arc<Mutex<BTreeSet<IpAddr>>>,
    counts: Arc<WebSocketCounts>,
}

/// WebSockets that a test server upgraded: in total, open now, and open at most at once.
#[derive(Default)]
pub(crate) struct WebSocketCounts {
    total: AtomicUsize,
    open: AtomicUsize,
    max_open: AtomicUsize,
}

impl WebSocketCounts {
    fn opened(&self) {
        self.total.fetch_add(1, Ordering::SeqCst);
        let open = self.open.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_open.fetch_max(open, Ordering::SeqCst);
    }

    fn closed(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
    }
}

impl TestServer {
    /// Returns `ws://ADDR/ws/echo` for this server.
    pub(crate) fn url(&self) -> String {
        format!("ws://{}/ws/echo", self.addr)
    }

    /// Returns the distinct source addresses of accepted connections.
    pub(crate) fn peer_ips(&self) -> BTreeSet<IpAddr> {
        self.peers.lock().unwrap().clone()
    }

    /// Returns the number of WebSockets upgraded so far.
    pub(crate) fn total_websockets(&self) -> usize {
        self.counts.total.load(Ordering::SeqCst)
    }

    /// Returns the largest number of WebSockets that were open at the same time.
    pub(crate) fn max_open_websockets(&self) -> usize {
        self.counts.max_open.load(Ordering::SeqCst)
    }
}

/// Starts a server on 127.0.0.1 that upgrades every request. It runs until the test's
/// runtime shuts down.
pub(crate) async fn spawn_server(behavior: Behavior) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let peers = Arc::new(Mutex::new(BTreeSet::new()));
    let accepted = Arc::clone(&peers);
    let config = Arc::new(ServerConfig::default());
    let counts = Arc::new(WebSocketCounts::default());
    let server_counts = Arc::clone(&counts);
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            accepted.lock().unwrap().insert(peer.ip());
            let config = Arc::clone(&config);
            tokio::spawn(serve(stream, config, behavior, Arc::clone(&server_counts)));
        }
    });
    TestServer {
        addr,
        peers,
        counts,
    }
}

async fn serve(
    stream: TcpStream,
    config: Arc<ServerConfig>,
    behavior: Behavior,
    counts: Arc<WebSocketCounts>,
) {
    let ws_config = config.ws.clone();
    let service = service_fn(move |mut req: Request<Incoming>| {
        let config = Arc::clone(&config);
        let counts = Arc::clone(&counts);
        async move {
            match server::upgrade(&mut req, &config) {
                Ok((response, pending)) => {
                    tokio::spawn(async move {
                        if let Ok(ws) = pending.finish().await {
                            counts.opened();
                            handle(ws, behavior).await;
                            counts.closed();
                        }
                    });
                    Ok::<_, Infallible>(response)
                }
                Err(err) => Ok(server::reject(&err)),
            }
        }
    });
    let _ = server::serve_connection(stream, service, &ws_config).await;
}

async fn handle(mut ws: WebSocket<TcpStream>, behavior: Behavior) {
    if let Behavior::CloseAtOnce = behavior {
        let _ = ws.close(CloseCode::GOING_AWAY, "test server closes").await;
        return;
    }
    while let Some(Ok(message)) = ws.recv().await {
        let reply = match (behavior, message) {
            (Behavior::Corrupt, Message::Binary(data)) => {
                let mut data = data.to_vec();
                if let Some(last) = data.last_mut() {
                    *last ^= 0x01;
                }
                Message::binary(data)
            }
            (_, message @ (Message::Text(_) | Message::Binary(_))) => message,
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
}

/// Returns a loopback URL on which nothing listens: the port of a listener that was
/// bound and then dropped.
pub(crate) async fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("ws://{addr}/ws/echo")
}

/// Awaits `future`, failing the test if it takes longer than [`TEST_TIMEOUT`].
pub(crate) async fn within<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(TEST_TIMEOUT, future).await {
        Ok(output) => output,
        Err(_) => panic!("{what} did not finish within {TEST_TIMEOUT:?}"),
    }
}

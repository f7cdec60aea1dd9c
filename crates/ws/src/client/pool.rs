//! A client that shares one HTTP/2 or HTTP/3 connection per origin among many WebSockets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::Response;

use super::http2::Http2Connection;
use super::with_handshake_timeout;
use super::{ClientConfig, ClientStream, HttpVersion, Target, check_headers, connect_any};
use crate::h3::H3Client;
use crate::{Error, WebSocket};

/// Scheme, host and port of a URL: WebSockets to the same origin share a connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Origin {
    secure: bool,
    host: String,
    port: u16,
}

/// The connection of one origin, dialed at most once at a time.
type Slot = Arc<tokio::sync::Mutex<Option<Http2Connection>>>;

/// A WebSocket client that keeps one HTTP/2 connection per origin (scheme, host and port),
/// or one QUIC connection per server address for HTTP/3, and opens each WebSocket as a
/// stream on it (RFC 8441, RFC 9220).
///
/// With `ClientConfig::http_version` set to [`HttpVersion::Http1`], every
/// [`Client::connect`] opens a connection of its own, as [`connect_any`] does. A
/// connection that the server closed, or that failed, is dialed again on the next
/// connect. Connections stay open while the `Client` lives, even with no WebSocket on
/// them, unless the server closes them.
///
/// ```no_run
/// use pylon_ws::client::{Client, ClientConfig, HttpVersion};
///
/// # async fn run() -> Result<(), pylon_ws::Error> {
/// let client = Client::new(ClientConfig {
///     http_version: HttpVersion::Http2,
///     ..ClientConfig::default()
/// });
/// let (first, _) = client.connect("wss://localhost:8443/ws/echo").await?;
/// let (second, _) = client.connect("wss://localhost:8443/ws/chat").await?;
/// assert_eq!(client.http2_connections(), 1);
/// # drop((first, second));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Client {
    cfg: ClientConfig,
    connections: Mutex<HashMap<Origin, Slot>>,
    /// The HTTP/3 connection pool, created on the first HTTP/3 connect.
    http3: Mutex<Option<H3Client>>,
}

impl Client {
    /// Creates a client whose WebSockets all use `cfg`.
    pub fn new(cfg: ClientConfig) -> Self {
        Client {
            cfg,
            connections: Mutex::new(HashMap::new()),
            http3: Mutex::new(None),
        }
    }

    /// Returns the settings of this client.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// Returns the number of origins with an HTTP/2 connection, open or not yet found
    /// closed.
    pub fn http2_connections(&self) -> usize {
        let connections = lock(&self.connections);
        connections
            .values()
            .filter(|slot| slot.try_lock().map(|conn| conn.is_some()).unwrap_or(true))
            .count()
    }

    /// Opens a WebSocket to a `ws://` or `wss://` URL, over the origin's HTTP/2 connection
    /// if the client uses HTTP/2, dialing it first if there is none.
    ///
    /// Dialing, the wait for the server's SETTINGS and the extended CONNECT request
    /// together must finish within `ws.handshake_timeout`.
    ///
    /// # Errors
    ///
    /// The errors of [`connect_any`], and over HTTP/2 also
    /// [`Error::ExtendedConnectDisabled`] for a server that cannot carry WebSockets over
    /// HTTP/2, [`Error::Http2NotNegotiated`] for a TLS server that did not select `h2`,
    /// and [`Error::Http2`] if the connection or the stream fails.
    pub async fn connect(
        &self,
        url: &str,
    ) -> Result<(WebSocket<ClientStream>, Response<()>), Error> {
        if self.cfg.http_version == HttpVersion::Http1 {
            return connect_any(url, self.cfg.clone()).await;
        }
        if self.cfg.http_version == HttpVersion::Http3 {
            let client = self.http3_client()?;
            return with_handshake_timeout(url, self.cfg.ws.handshake_timeout, async {
                client
                    .connect_wrapped(url, &self.cfg, |tunnel| {
                        ClientStream::Http3(Box::new(tunnel))
                    })
                    .await
                    .map_err(Error::from)
            })
            .await;
        }
        let target = Target::parse(url)?;
        check_headers(&self.cfg.headers)?;
        with_handshake_timeout(url, self.cfg.ws.handshake_timeout, async {
            let connection = self.connection(&target).await?;
            connection.open(&target, self.cfg.clone()).await
        })
        .await
    }

    /// Closes the pooled connections. HTTP/3 connections are closed with H3_NO_ERROR,
    /// waiting at most `timeout` until the servers were notified, because QUIC runs in the
    /// process and a process that exits without this leaves the server waiting for its
    /// timeouts. HTTP/2 connections are dropped, and the kernel closes their TCP
    /// connections. WebSockets still open on them fail.
    pub async fn close(&self, timeout: Duration) {
        lock(&self.connections).clear();
        let http3 = lock(&self.http3).take();
        if let Some(http3) = http3 {
            http3.close(timeout).await;
        }
    }

    /// Returns the HTTP/3 pool, creating it on the first call.
    fn http3_client(&self) -> Result<H3Client, Error> {
        let mut http3 = lock(&self.http3);
        if let Some(client) = http3.as_ref() {
            return Ok(client.clone());
        }
        let client = H3Client::new(&self.cfg.tls, self.cfg.ws.handshake_timeout)?;
        *http3 = Some(client.clone());
        Ok(client)
    }

    /// Returns the usable connection of the target's origin, dialing one if needed.
    async fn connection(&self, target: &Target) -> Result<Http2Connection, Error> {
        let origin = Origin {
            secure: target.secure,
            host: target.connect_host.to_ascii_lowercase(),
            port: target.port,
        };
        let slot = Arc::clone(lock(&self.connections).entry(origin).or_default());
        let mut slot = slot.lock().await;
        if let Some(connection) = slot.as_ref() {
            if connection.is_usable().await {
                return Ok(connection.clone());
            }
            tracing::debug!(
                host = %target.host_header,
                "pooled HTTP/2 connection is closed; dialing a new one"
            );
        }
        *slot = None;
        let connection = Http2Connection::dial(target, &self.cfg).await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update of the map is a single insert, so it stays consistent after a panic.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

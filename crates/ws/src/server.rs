//! Server side: accept WebSocket upgrades in a hyper 1.x HTTP/1.1 server.
//!
//! Serve each accepted `TcpStream` with [`serve_connection`], and in the service call
//! [`upgrade`] for WebSocket paths. Return the `101` response from the service and spawn
//! [`PendingUpgrade::finish`], which yields the [`WebSocket`] once hyper hands the
//! connection over:
//!
//! ```no_run
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper::body::Incoming;
//! use hyper::service::service_fn;
//! use hyper::{Request, Response};
//! use pylon_ws::server::{self, ServerConfig};
//! use pylon_ws::Message;
//!
//! async fn handle(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
//!     let config = ServerConfig::default();
//!     match server::upgrade(&mut req, &config) {
//!         Ok((response, pending)) => {
//!             tokio::spawn(async move {
//!                 let Ok(mut ws) = pending.finish().await else { return };
//!                 while let Some(Ok(message)) = ws.recv().await {
//!                     if matches!(message, Message::Text(_) | Message::Binary(_)) {
//!                         let _ = ws.send(message).await;
//!                     }
//!                 }
//!             });
//!             Ok(response)
//!         }
//!         Err(err) => Ok(server::reject(&err)),
//!     }
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let config = pylon_ws::Config::default();
//! loop {
//!     let (stream, _) = listener.accept().await?;
//!     let config = config.clone();
//!     tokio::spawn(async move {
//!         let _ = server::serve_connection(stream, service_fn(handle), &config).await;
//!     });
//! }
//! # }
//! ```

use std::error::Error as StdError;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use pylon_proto::handshake::{self, HandshakeError};
use pylon_proto::{DeflateConfig, PerMessageDeflate, Role};
use tokio::net::TcpStream;

pub use pylon_proto::handshake::OriginPolicy;

use crate::{Config, Error, WebSocket};

/// Settings of a WebSocket endpoint: handshake rules and connection settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Accepted subprotocols and origins, and the permessage-deflate settings
    /// (`handshake.deflate`, `None` to decline compression).
    pub handshake: handshake::ServerConfig,
    /// Settings of each accepted connection. The handshake sets `ws.proto.deflate` of each
    /// connection to what was agreed.
    pub ws: Config,
}

/// Accepts permessage-deflate with [`DeflateConfig::default`], unlike
/// [`handshake::ServerConfig::default`], because [`upgrade`] configures each connection
/// with what was agreed.
impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            handshake: handshake::ServerConfig {
                deflate: Some(DeflateConfig::default()),
                ..handshake::ServerConfig::default()
            },
            ws: Config::default(),
        }
    }
}

/// An accepted upgrade whose connection hyper has not handed over yet.
///
/// hyper hands the connection over only after the `101` response was returned from the
/// service, so await [`PendingUpgrade::finish`] in a spawned task, not in the service.
#[derive(Debug)]
pub struct PendingUpgrade {
    on_upgrade: OnUpgrade,
    config: Config,
    protocol: Option<String>,
}

impl PendingUpgrade {
    /// Returns the subprotocol selected for this connection, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Returns the permessage-deflate agreed for this connection, or `None` if it runs
    /// uncompressed.
    pub fn compression(&self) -> Option<&PerMessageDeflate> {
        self.config.proto.deflate.as_ref()
    }

    /// Waits for hyper to hand over the connection and returns the WebSocket over the raw
    /// `TcpStream`.
    ///
    /// The stream is taken out of hyper's wrapper, so frames are read and written without
    /// hyper in between. Bytes that hyper read past the request head are decoded first.
    ///
    /// # Errors
    ///
    /// [`Error::Upgrade`] if hyper fails the upgrade, for example because the connection
    /// was closed before the `101` response was sent or because it is not served with
    /// `with_upgrades()`. [`Error::UnsupportedTransport`] if the connection is not a
    /// `TcpStream` wrapped in `hyper_util::rt::TokioIo`: serve it with
    /// [`serve_connection`].
    pub async fn finish(self) -> Result<WebSocket<TcpStream>, Error> {
        let upgraded = self.on_upgrade.await.map_err(Error::Upgrade)?;
        let parts = upgraded
            .downcast::<TokioIo<TcpStream>>()
            .map_err(|_| Error::UnsupportedTransport)?;
        let stream = parts.io.into_inner();
        tracing::debug!(
            peer = ?stream.peer_addr().ok(),
            protocol = self.protocol.as_deref(),
            compression = self.config.proto.deflate.map(|deflate| deflate.params.to_string()),
            already_read = parts.read_buf.len(),
            "websocket upgrade complete"
        );
        let mut ws = WebSocket::from_raw(stream, Role::Server, self.config, parts.read_buf);
        ws.set_protocol(self.protocol);
        Ok(ws)
    }
}

/// Validates a WebSocket upgrade request and accepts it.
///
/// Returns the `101 Switching Protocols` response for the service to return, and the
/// [`PendingUpgrade`] that yields the WebSocket afterwards. With `cfg.handshake.deflate`
/// set, the first acceptable permessage-deflate offer is accepted and the connection
/// compresses accordingly; an invalid offer is declined and the connection runs
/// uncompressed. The request must come from a
/// connection served by [`serve_connection`], because [`PendingUpgrade::finish`] recovers
/// the raw `TcpStream`.
///
/// # Errors
///
/// Returns the [`HandshakeError`] of the first failed check of
/// [`pylon_proto::handshake::validate_request`]. Build the error response with [`reject`].
pub fn upgrade<B>(
    req: &mut Request<B>,
    cfg: &ServerConfig,
) -> Result<(Response<Full<Bytes>>, PendingUpgrade), HandshakeError> {
    let accept = handshake::validate_request(req.method(), req.version(), req.headers(), &cfg.handshake)
        .inspect_err(|err| {
            tracing::debug!(error = %err, label = err.label(), uri = %req.uri(), "websocket upgrade rejected");
        })?;
    let on_upgrade = hyper::upgrade::on(&mut *req);
    let response = accept.response().map(|()| Full::new(Bytes::new()));
    let mut config = cfg.ws.clone();
    config.proto.deflate = accept.deflate;
    let pending = PendingUpgrade {
        on_upgrade,
        config,
        protocol: accept.protocol,
    };
    Ok((response, pending))
}

/// Builds the HTTP response for a failed handshake: 400 with the reason as plain text,
/// 403 for an origin that is not allowed, or 426 with `Sec-WebSocket-Version: 13` for an
/// unsupported version.
pub fn reject(err: &HandshakeError) -> Response<Full<Bytes>> {
    err.response().map(|body| Full::new(Bytes::from(body)))
}

/// Serves one accepted TCP connection with hyper's HTTP/1.1 server, with keep-alive and
/// upgrades enabled.
///
/// A client that does not send a complete request head within `cfg.handshake_timeout`
/// is disconnected. This also bounds the wait for the next request on an idle keep-alive
/// connection, because hyper (1.13) starts the timer whenever it waits for a request head. Sets `TCP_NODELAY`, because WebSocket frames are latency-sensitive and this
/// crate already writes each batch of frames with one write.
///
/// # Errors
///
/// Returns hyper's error when the connection fails, including a header read timeout.
pub async fn serve_connection<Svc, B>(
    stream: TcpStream,
    svc: Svc,
    cfg: &Config,
) -> Result<(), hyper::Error>
where
    Svc: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    Svc::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(error = %err, "cannot set TCP_NODELAY");
    }
    hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.handshake_timeout)
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades()
        .await
}

//! Server side: accept WebSocket upgrades in a hyper 1.x HTTP/1.1 server.
//!
//! Serve each accepted `TcpStream` with [`serve_connection`], and in the service call
//! [`upgrade`] for WebSocket paths. Return the `101` response from the service and spawn
//! [`PendingUpgrade::finish`], which yields the [`WebSocket`] once hyper hands the
//! connection over. For HTTPS and `wss://`, serve the stream with
//! [`serve_tls_connection`] instead and finish upgrades as
//! `pending.finish::<server::TlsStream>()`:
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
//!                 let Ok(mut ws) = pending.finish::<tokio::net::TcpStream>().await else { return };
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
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

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
    /// stream `S`: `TcpStream` for a connection served by [`serve_connection`], or
    /// [`TlsStream`] for one served by [`serve_tls_connection`].
    ///
    /// The stream is taken out of hyper's wrapper, so frames are read and written without
    /// hyper in between. Bytes that hyper read past the request head are decoded first.
    ///
    /// # Errors
    ///
    /// [`Error::Upgrade`] if hyper fails the upgrade, for example because the connection
    /// was closed before the `101` response was sent or because it is not served with
    /// `with_upgrades()`. [`Error::UnsupportedTransport`] if the connection is not an `S`
    /// wrapped in `hyper_util::rt::TokioIo`.
    pub async fn finish<S>(self) -> Result<WebSocket<S>, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let upgraded = self.on_upgrade.await.map_err(Error::Upgrade)?;
        let parts = upgraded
            .downcast::<TokioIo<S>>()
            .map_err(|_| Error::UnsupportedTransport)?;
        let stream = parts.io.into_inner();
        tracing::debug!(
            protocol = self.protocol.as_deref(),
            compression = self
                .config
                .proto
                .deflate
                .map(|deflate| deflate.params.to_string()),
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
/// uncompressed. The request must come from a connection served by [`serve_connection`]
/// or [`serve_tls_connection`], because [`PendingUpgrade::finish`] recovers the raw stream.
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

/// Server side of a TLS connection, as [`serve_tls_connection`] hands it to hyper and
/// [`PendingUpgrade::finish`] recovers it.
pub type TlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// Serves one accepted TCP connection with hyper's HTTP/1.1 server, with keep-alive and
/// upgrades enabled. Finish its upgrades as `PendingUpgrade::finish::<TcpStream>`.
///
/// A client that does not send a complete request head within `cfg.handshake_timeout`
/// is disconnected. This also bounds the wait for the next request on an idle keep-alive
/// connection, because hyper (1.13) starts the timer whenever it waits for a request head.
/// Sets `TCP_NODELAY`, because WebSocket frames are latency-sensitive and this crate
/// already writes each batch of frames with one write.
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
    set_nodelay(&stream);
    serve_http1(stream, svc, cfg).await
}

/// Runs the TLS handshake on one accepted TCP connection, then serves it like
/// [`serve_connection`]. Finish its upgrades as `PendingUpgrade::finish::<TlsStream>`.
///
/// The TLS handshake must finish within `cfg.handshake_timeout`, and the request head must
/// then arrive within another `cfg.handshake_timeout`, so a client gets at most twice that
/// time before its first request is read. Only HTTP/1.1 is served, whatever ALPN the
/// acceptor offers.
///
/// # Errors
///
/// [`Error::HandshakeTimeout`] if the TLS handshake takes too long, [`Error::Tls`] if it
/// fails, and [`Error::Http`] with hyper's error when the HTTP connection fails.
pub async fn serve_tls_connection<Svc, B>(
    stream: TcpStream,
    acceptor: &TlsAcceptor,
    svc: Svc,
    cfg: &Config,
) -> Result<(), Error>
where
    Svc: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    Svc::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    set_nodelay(&stream);
    let tls = match tokio::time::timeout(cfg.handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => return Err(Error::Tls(err)),
        Err(_) => return Err(Error::HandshakeTimeout),
    };
    serve_http1(tls, svc, cfg).await.map_err(Error::Http)
}

fn set_nodelay(stream: &TcpStream) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(error = %err, "cannot set TCP_NODELAY");
    }
}

async fn serve_http1<S, Svc, B>(stream: S, svc: Svc, cfg: &Config) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    Svc::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.handshake_timeout)
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades()
        .await
}

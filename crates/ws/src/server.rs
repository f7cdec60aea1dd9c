//! Server side: accept WebSocket handshakes in a hyper 1.x server, over HTTP/1.1 (RFC 6455
//! upgrade) and HTTP/2 (RFC 8441 extended CONNECT).
//!
//! Serve each accepted `TcpStream` with [`serve_connection`], which serves HTTP/2 to a
//! client that opens with the HTTP/2 connection preface (prior knowledge) and HTTP/1.1
//! otherwise. For HTTPS and `wss://`, serve it with [`serve_tls_connection`], which serves
//! HTTP/2 when ALPN selects `h2`. In the service, call [`upgrade`] for WebSocket paths: it
//! validates either kind of request and returns the response (`101` or `200`). Return
//! that response from the service and spawn [`PendingUpgrade::finish`], which yields the
//! [`WebSocket`] once hyper hands the stream over. [`ServerStream`] covers every
//! transport, and [`PendingUpgrade::transport`] returns the one a request came over, for
//! callers that finish with the exact stream type instead:
//!
//! ```no_run
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use http_body_util::Full;
//! use hyper::body::Incoming;
//! use hyper::service::service_fn;
//! use hyper::{Request, Response};
//! use pylon_ws::server::{self, ServerConfig, ServerStream};
//! use pylon_ws::Message;
//!
//! async fn handle(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
//!     let config = ServerConfig::default();
//!     match server::upgrade(&mut req, &config) {
//!         Ok((response, pending)) => {
//!             tokio::spawn(async move {
//!                 let Ok(mut ws) = pending.finish::<ServerStream>().await else { return };
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

mod stream;

use std::error::Error as StdError;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::Full;
use hyper::body::{Body, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use pylon_proto::handshake::{self, HandshakeError};
use pylon_proto::{DeflateConfig, PerMessageDeflate, Role};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

pub use pylon_proto::handshake::OriginPolicy;
pub use stream::{Http2Stream, ServerStream, UpgradeStream};

use crate::{Config, Error, WebSocket};

/// The HTTP/2 connection preface that a client sends first (RFC 9113 section 3.4).
const HTTP2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Wait between two looks at a socket whose first bytes are a partial HTTP/2 preface.
const PREFACE_POLL_INTERVAL: Duration = Duration::from_millis(5);

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

/// HTTP version that carries a WebSocket, as [`PendingUpgrade::transport`] returns it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// An HTTP/1.1 `Upgrade` that takes over the whole connection.
    Http1,
    /// An extended CONNECT stream of an HTTP/2 connection, shared with other streams.
    Http2,
}

/// An accepted handshake whose stream hyper has not handed over yet.
///
/// hyper hands the stream over only after the response was returned from the service, so
/// await [`PendingUpgrade::finish`] in a spawned task, not in the service.
#[derive(Debug)]
pub struct PendingUpgrade {
    on_upgrade: OnUpgrade,
    config: Config,
    protocol: Option<String>,
    transport: Transport,
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

    /// Returns the HTTP version that carries this WebSocket.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Waits for hyper to hand over the stream and returns the WebSocket over it as `S`.
    ///
    /// `S` is [`ServerStream`] for any transport, or the exact type for the transport:
    /// `TcpStream` for HTTP/1.1 on a connection served by [`serve_connection`],
    /// [`TlsStream`] for HTTP/1.1 on one served by [`serve_tls_connection`], and
    /// [`Http2Stream`] for HTTP/2. For HTTP/1.1 the raw stream is taken out of hyper's
    /// wrapper, so frames are read and written without hyper in between, and bytes that
    /// hyper read past the request head are decoded first. Over HTTP/2, hyper's stream
    /// carries the frames and applies HTTP/2 flow control.
    ///
    /// # Errors
    ///
    /// [`Error::Upgrade`] if hyper fails the upgrade, for example because the connection
    /// was closed before the response was sent or because it is not served with
    /// `with_upgrades()`. [`Error::UnsupportedTransport`] if the stream is not an `S`.
    pub async fn finish<S: UpgradeStream>(self) -> Result<WebSocket<S>, Error> {
        let upgraded = self.on_upgrade.await.map_err(Error::Upgrade)?;
        let (stream, already_read) =
            S::from_upgraded(upgraded).map_err(|_| Error::UnsupportedTransport)?;
        tracing::debug!(
            protocol = self.protocol.as_deref(),
            transport = ?self.transport,
            compression = self
                .config
                .proto
                .deflate
                .map(|deflate| deflate.params.to_string()),
            already_read = already_read.len(),
            "websocket upgrade complete"
        );
        let mut ws = WebSocket::from_raw(stream, Role::Server, self.config, already_read);
        ws.set_protocol(self.protocol);
        Ok(ws)
    }
}

/// Validates a WebSocket handshake request and accepts it.
///
/// An HTTP/1.1 request is validated as an `Upgrade` (RFC 6455) and gets
/// `101 Switching Protocols`. An HTTP/2 request is validated as an extended CONNECT with
/// `:protocol = websocket` (RFC 8441) and gets `200 OK`. The request must come from a
/// connection served by [`serve_connection`] or [`serve_tls_connection`], because
/// [`PendingUpgrade::finish`] recovers their streams. With `cfg.handshake.deflate` set,
/// the first acceptable permessage-deflate offer is accepted and the connection
/// compresses accordingly. An invalid offer is declined and the connection runs
/// uncompressed.
///
/// # Errors
///
/// Returns the [`HandshakeError`] of the first failed check of
/// [`pylon_proto::handshake::validate_request`] or, over HTTP/2,
/// [`pylon_proto::handshake::validate_connect_request`]. A `GET` over HTTP/2 fails with
/// [`HandshakeError::MethodNotConnect`]. Build the error response with [`reject`].
pub fn upgrade<B>(
    req: &mut Request<B>,
    cfg: &ServerConfig,
) -> Result<(Response<Full<Bytes>>, PendingUpgrade), HandshakeError> {
    // HTTP/3 requests do not pass through hyper: `crate::h3::H3Request::accept` validates
    // them. An HTTP/3 request given here would fail like HTTP/1.0 does.
    let (validated, transport) = if req.version() == Version::HTTP_2 {
        let protocol = req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .map(hyper::ext::Protocol::as_str);
        let validated = handshake::validate_connect_request(
            req.method(),
            protocol,
            req.uri(),
            req.headers(),
            &cfg.handshake,
        );
        (validated, Transport::Http2)
    } else {
        let validated =
            handshake::validate_request(req.method(), req.version(), req.headers(), &cfg.handshake);
        (validated, Transport::Http1)
    };
    let accept = validated.inspect_err(|err| {
        tracing::debug!(
            error = %err,
            label = err.label(),
            uri = %req.uri(),
            version = ?req.version(),
            "websocket handshake rejected"
        );
    })?;
    let on_upgrade = hyper::upgrade::on(&mut *req);
    let response = accept.response().map(|()| Full::new(Bytes::new()));
    let mut config = cfg.ws.clone();
    config.proto.deflate = accept.deflate;
    let pending = PendingUpgrade {
        on_upgrade,
        config,
        protocol: accept.protocol,
        transport,
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

/// Serves one accepted TCP connection with hyper: HTTP/2 if the client opens with the
/// HTTP/2 connection preface (prior knowledge, as `h2c` clients do), HTTP/1.1 otherwise.
///
/// HTTP/1.1 is served with keep-alive and upgrades, and its upgrades finish as
/// `PendingUpgrade::finish::<TcpStream>`. HTTP/2 is served with `cfg.http2` and
/// `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1`, and its WebSockets finish as
/// `PendingUpgrade::finish::<Http2Stream>`. The first bytes are examined with
/// `MSG_PEEK` and stay in the socket, so the HTTP/1.1 stream is the bare `TcpStream`.
///
/// A client that sends no bytes within `cfg.handshake_timeout` is disconnected, and an
/// HTTP/1.1 client also gets that long for a complete request head. This also bounds the
/// wait for the next request on an idle keep-alive connection, because hyper (1.13)
/// starts the timer whenever it waits for a request head. Sets `TCP_NODELAY`, because
/// WebSocket frames are latency-sensitive and this crate already writes each batch of
/// frames with one write.
///
/// # Errors
///
/// [`Error::HandshakeTimeout`] if the client sends nothing in time, [`Error::Io`] if
/// reading the first bytes fails, and [`Error::Http`] with hyper's error when the
/// connection fails, including a header read timeout.
pub async fn serve_connection<Svc, B>(
    stream: TcpStream,
    svc: Svc,
    cfg: &Config,
) -> Result<(), Error>
where
    Svc: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    Svc::Error: Into<Box<dyn StdError + Send + Sync>>,
    Svc::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    serve_connection_until(stream, svc, cfg, std::future::pending()).await
}

/// Serves one accepted TCP connection like [`serve_connection`], and shuts it down
/// gracefully once `shutdown` completes: HTTP/2 sends GOAWAY, accepts no new streams and
/// ends after its open streams (WebSockets included) have ended, and HTTP/1.1 ends after
/// the response in progress. WebSockets upgraded from HTTP/1.1 no longer belong to the
/// connection and are not affected.
///
/// # Errors
///
/// The errors of [`serve_connection`].
pub async fn serve_connection_until<Svc, B>(
    stream: TcpStream,
    svc: Svc,
    cfg: &Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error>
where
    Svc: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    Svc::Error: Into<Box<dyn StdError + Send + Sync>>,
    Svc::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    set_nodelay(&stream);
    let is_http2 =
        match tokio::time::timeout(cfg.handshake_timeout, starts_with_preface(&stream)).await {
            Ok(Ok(Some(is_http2))) => is_http2,
            // The client closed the connection without sending anything.
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(err)) => return Err(Error::Io(err)),
            Err(_) => return Err(Error::HandshakeTimeout),
        };
    if is_http2 {
        tracing::debug!("serving HTTP/2 with prior knowledge");
        serve_http2(stream, svc, cfg, shutdown).await
    } else {
        serve_http1(stream, svc, cfg, shutdown).await
    }
    .map_err(Error::Http)
}

/// Returns whether the first bytes on `stream` are the HTTP/2 connection preface,
/// without consuming them, or `None` if the peer closed before sending a byte.
///
/// `peek` returns at once while unread bytes are waiting, so a partial preface is looked
/// at again after [`PREFACE_POLL_INTERVAL`] instead of in a busy loop. HTTP/1.1 requests
/// differ from the preface within their first three bytes (`PRI` is not an HTTP/1.1
/// method that browsers or clients send), so they are not delayed.
async fn starts_with_preface(stream: &TcpStream) -> std::io::Result<Option<bool>> {
    let mut buf = [0u8; HTTP2_PREFACE.len()];
    loop {
        let peeked = stream.peek(&mut buf).await?;
        if peeked == 0 {
            return Ok(None);
        }
        if buf[..peeked] != HTTP2_PREFACE[..peeked] {
            return Ok(Some(false));
        }
        if peeked == HTTP2_PREFACE.len() {
            return Ok(Some(true));
        }
        tokio::time::sleep(PREFACE_POLL_INTERVAL).await;
    }
}

/// Runs the TLS handshake on one accepted TCP connection, then serves HTTP/2 if ALPN
/// selected `h2` and HTTP/1.1 otherwise, like [`serve_connection`]. Finish its HTTP/1.1
/// upgrades as `PendingUpgrade::finish::<TlsStream>` and its HTTP/2 WebSockets as
/// `PendingUpgrade::finish::<Http2Stream>`.
///
/// The TLS handshake must finish within `cfg.handshake_timeout`, and an HTTP/1.1 request
/// head must then arrive within another `cfg.handshake_timeout`, so a client gets at most
/// twice that time before its first request is read. The acceptors of [`crate::tls`]
/// offer `h2` and `http/1.1`.
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
    Svc::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    serve_tls_connection_until(stream, acceptor, svc, cfg, std::future::pending()).await
}

/// Serves one accepted TCP connection over TLS like [`serve_tls_connection`], and shuts it
/// down gracefully once `shutdown` completes, as [`serve_connection_until`] does. A
/// shutdown during the TLS handshake does not cut the handshake short.
///
/// # Errors
///
/// The errors of [`serve_tls_connection`].
pub async fn serve_tls_connection_until<Svc, B>(
    stream: TcpStream,
    acceptor: &TlsAcceptor,
    svc: Svc,
    cfg: &Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error>
where
    Svc: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    Svc::Error: Into<Box<dyn StdError + Send + Sync>>,
    Svc::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    set_nodelay(&stream);
    let tls = match tokio::time::timeout(cfg.handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => return Err(Error::Tls(err)),
        Err(_) => return Err(Error::HandshakeTimeout),
    };
    let is_http2 = tls.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN_HTTP2);
    if is_http2 {
        tracing::debug!("serving HTTP/2 over TLS (ALPN h2)");
        serve_http2(tls, svc, cfg, shutdown).await
    } else {
        serve_http1(tls, svc, cfg, shutdown).await
    }
    .map_err(Error::Http)
}

fn set_nodelay(stream: &TcpStream) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(error = %err, "cannot set TCP_NODELAY");
    }
}

async fn serve_http1<S, Svc, B>(
    stream: S,
    svc: Svc,
    cfg: &Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    Svc::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.handshake_timeout)
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return result,
        () = shutdown => {}
    }
    connection.as_mut().graceful_shutdown();
    connection.await
}

/// Serves HTTP/2 with `cfg.http2` and the extended CONNECT protocol enabled.
///
/// NOTE: an HTTP/2 connection with no open stream stays open as long as the client
/// acknowledges keep-alive PINGs, because hyper (1.13) has no idle timeout for HTTP/2.
async fn serve_http2<S, Svc, B>(
    stream: S,
    svc: Svc,
    cfg: &Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    Svc::Error: Into<Box<dyn StdError + Send + Sync>>,
    Svc::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let settings = &cfg.http2;
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .enable_connect_protocol()
        .max_concurrent_streams(settings.max_concurrent_streams)
        .initial_stream_window_size(settings.initial_stream_window_size)
        .initial_connection_window_size(settings.initial_connection_window_size)
        .max_frame_size(settings.max_frame_size)
        .max_header_list_size(settings.max_header_list_size)
        .max_send_buf_size(settings.max_send_buf_size)
        .keep_alive_interval(settings.keep_alive_interval)
        .keep_alive_timeout(settings.keep_alive_timeout);
    let mut connection = std::pin::pin!(builder.serve_connection(TokioIo::new(stream), svc));
    tokio::select! {
        result = connection.as_mut() => return result,
        () = shutdown => {}
    }
    tracing::debug!("sending GOAWAY: the server is shutting down");
    connection.as_mut().graceful_shutdown();
    connection.await
}

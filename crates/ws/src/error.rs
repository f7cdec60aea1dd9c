//! Errors of the WebSocket I/O layer.

use pylon_proto::{HandshakeError, Message, ProtocolError, SendError};

/// An error from a [`crate::WebSocket`], the server upgrade or the client connect.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum Error {
    /// Reading from or writing to the transport failed.
    #[error("websocket transport i/o failed: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the WebSocket protocol. Unless a close frame was already sent, a
    /// close frame with [`ProtocolError::close_code`] is written to the peer. `recv`
    /// returns this error once that frame is written and the transport has ended, or the
    /// close timeout has passed.
    #[error("peer violated the websocket protocol: {0}")]
    Protocol(#[from] ProtocolError),
    /// The HTTP upgrade handshake failed.
    #[error("websocket handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// A message could not be encoded, for example after a close frame was sent.
    #[error("cannot send websocket message: {0}")]
    Send(#[from] SendError),
    /// The peer sent nothing within the pong timeout after a keep-alive ping, so the
    /// transport was shut down.
    #[error(
        "ping timed out: the peer sent nothing within the pong timeout, the connection was \
         dropped (raise Config::pong_timeout if the peer is slow rather than dead)"
    )]
    PongTimeout,
    /// A write to the transport made no progress within `Config::write_timeout`, so the
    /// connection was dropped without a close handshake.
    #[error(
        "write timed out: the peer accepted no bytes within the write timeout, the connection \
         was dropped (raise Config::write_timeout if the peer is slow rather than stuck)"
    )]
    WriteTimeout,
    /// No text or binary message moved in either direction within the idle timeout, so a
    /// close frame with 1001 was sent.
    #[error(
        "no message was sent or received within the idle timeout, the connection is closing \
         (raise or unset Config::idle_timeout to keep quiet connections)"
    )]
    IdleTimeout,
    /// The HTTP upgrade handshake did not finish within `Config::handshake_timeout`.
    #[error(
        "websocket handshake timed out (check that the server is reachable or raise \
         Config::handshake_timeout)"
    )]
    HandshakeTimeout,
    /// A close frame was sent, or queued through a [`crate::Sender`], but the peer did not
    /// send its own close frame within `Config::close_timeout`, so the transport was
    /// dropped.
    #[error(
        "close handshake timed out: the peer sent no close frame within the close timeout, the \
         transport was dropped (raise Config::close_timeout for slow peers)"
    )]
    CloseTimeout,
    /// The peer closed the transport without a close frame (reported to applications as
    /// close code 1006, abnormal closure).
    #[error("peer closed the transport without a close frame (abnormal closure, 1006)")]
    AbnormalClosure,
    /// The connection is already closed, so nothing can be sent or received.
    #[error("websocket connection is closed")]
    ConnectionClosed,
    /// The TLS handshake failed, for example because the client does not trust the
    /// server's certificate or the host name does not match it.
    #[error(
        "TLS handshake failed: {0} (a client that connects to a server with a self-signed or \
         private CA certificate must add that certificate to ClientConfig::tls.ca_certs)"
    )]
    Tls(#[source] std::io::Error),
    /// A certificate, key or other TLS setting is unusable.
    #[error("invalid TLS configuration: {0}")]
    TlsConfig(String),
    /// hyper failed while serving an HTTP connection.
    #[error("http connection failed: {0}")]
    Http(#[source] hyper::Error),
    /// The URL passed to [`crate::client::connect`] is not usable.
    #[error("invalid websocket url: {0}")]
    Url(String),
    /// The server's HTTP response head could not be read.
    #[error("invalid http response to the websocket upgrade: {0}")]
    InvalidResponse(String),
    /// A header in `ClientConfig::headers` is one that the handshake sets itself.
    #[error(
        "header {0} is set by the websocket handshake, remove it from ClientConfig::headers \
         (use ClientConfig::protocols for subprotocols and ClientConfig::compression for \
         permessage-deflate)"
    )]
    ReservedHeader(http::HeaderName),
    /// hyper failed to hand over the upgraded connection.
    #[error("http upgrade failed: {0}")]
    Upgrade(#[source] hyper::Error),
    /// The upgraded stream is not the stream type requested from
    /// `PendingUpgrade::finish`, so it could not be recovered.
    #[error(
        "upgraded stream is not the requested stream type: finish HTTP/1.1 upgrades served by \
         serve_connection as TcpStream, those served by serve_tls_connection as \
         server::TlsStream, HTTP/2 ones as server::Http2Stream, or any of them as \
         server::ServerStream"
    )]
    UnsupportedTransport,
    /// An HTTP/2 connection or stream failed: the handshake, the wait for the server's
    /// SETTINGS, opening a stream, or its response.
    #[error("http/2 connection failed: {0}")]
    Http2(#[source] h2::Error),
    /// The server did not send `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1` (RFC 8441), so it
    /// cannot carry WebSockets over HTTP/2. Contains the server's authority.
    #[error(
        "server {0} does not accept WebSockets over HTTP/2: its SETTINGS did not enable \
         extended CONNECT (SETTINGS_ENABLE_CONNECT_PROTOCOL = 1); connect with \
         HttpVersion::Http1 instead"
    )]
    ExtendedConnectDisabled(String),
    /// A TLS server did not select `h2` over ALPN. Contains the server's authority.
    #[error(
        "server {0} did not select HTTP/2 (ALPN h2) in the TLS handshake; connect with \
         HttpVersion::Http1 instead"
    )]
    Http2NotNegotiated(String),
    /// An HTTP/3 WebSocket could not be opened: QUIC, the HTTP/3 layer, the server's
    /// SETTINGS (no extended CONNECT), or the WebSocket handshake over it failed.
    #[error("websocket over HTTP/3 failed: {0}")]
    Http3(#[from] Box<crate::h3::H3Error>),
    /// The function called supports only another HTTP version than
    /// `ClientConfig::http_version`.
    #[error("unsupported http version: {0}")]
    UnsupportedHttpVersion(String),
}

/// An error from [`crate::Sender::try_send`]. Each variant contains the message that was
/// not queued.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum TrySendError {
    /// The outbound queue was full and the [`crate::FullPolicy`] was applied: the message
    /// was discarded (`Drop`) or the connection is now closing (`Close`).
    #[error("outbound websocket queue is full, the message was not queued")]
    Full(Message),
    /// The connection is closing or closed, or the [`crate::WebSocket`] was dropped.
    #[error("websocket connection is closed, the message was not queued")]
    Closed(Message),
}

impl TrySendError {
    /// Returns the message that was not queued.
    pub fn into_message(self) -> Message {
        match self {
            TrySendError::Full(message) | TrySendError::Closed(message) => message,
        }
    }
}

/// A rejected WebSocket handshake becomes [`Error::Handshake`], as over HTTP/1.1 and
/// HTTP/2, so that callers match one variant whatever the transport.
impl From<crate::h3::H3Error> for Error {
    fn from(err: crate::h3::H3Error) -> Self {
        match err {
            crate::h3::H3Error::Handshake(err) => Error::Handshake(err),
            err => Error::Http3(Box::new(err)),
        }
    }
}

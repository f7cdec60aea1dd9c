//! Per-connection settings of the I/O layer.

use std::time::Duration;

use pylon_proto::CloseCode;

/// Settings of one [`crate::WebSocket`].
///
/// Every timer runs only while [`crate::WebSocket::recv`] (or the `Stream` implementation),
/// [`crate::WebSocket::send`] or the `Sink` is being polled, because those polls drive the
/// connection. [`Config::default`] gives the
/// values stated on each field.
#[derive(Clone, Debug)]
pub struct Config {
    /// Protocol settings: frame and message size limits, automatic pongs and outgoing
    /// fragmentation. Default: [`pylon_proto::Config::default`]. The server upgrade and
    /// the client connect overwrite `proto.deflate` with what the handshake agreed.
    pub proto: pylon_proto::Config,
    /// Time without any bytes from the peer after which this side sends a ping.
    ///
    /// Every received byte restarts the interval, so a busy connection sends no pings.
    /// Both roles send pings when this is set. `None` disables keep-alive pings and with
    /// them the pong timeout. Default: 30 seconds.
    pub ping_interval: Option<Duration>,
    /// Time to wait for any bytes from the peer after a keep-alive ping.
    ///
    /// A pong or any other frame ends the wait. When it expires, the peer is considered
    /// dead: the transport is shut down without a close handshake and `recv` returns
    /// [`crate::Error::PongTimeout`]. Default: 10 seconds.
    pub pong_timeout: Duration,
    /// Time that a write to the transport may make no progress before the connection is
    /// dropped.
    ///
    /// The clock starts when the transport stops accepting bytes while frames wait to be
    /// written, and restarts on every byte written. When it expires, the peer is
    /// considered stuck: the connection ends without a close handshake and `recv` or
    /// `send` returns [`crate::Error::WriteTimeout`]. This bounds a peer that sends but
    /// never reads. `None` disables it. Default: 10 seconds, the same as `pong_timeout`.
    pub write_timeout: Option<Duration>,
    /// Time without a text or binary message in either direction after which the
    /// connection is closed with 1001 (going away) and `recv` returns
    /// [`crate::Error::IdleTimeout`].
    ///
    /// Control frames do not count, so keep-alive pings do not hold an idle connection
    /// open. Default: `None` (no idle timeout).
    pub idle_timeout: Option<Duration>,
    /// Time to wait, once a close frame was sent, received or queued through
    /// [`crate::Sender::close`], or the connection failed, for the close handshake and the
    /// end of the transport to finish before the transport is dropped.
    ///
    /// This bounds the wait for the peer's close frame, the write of a queued close frame,
    /// and the wait for the peer to close TCP. A client waits for the server to close
    /// first. A server, or either side after a protocol fault, shuts down its write side
    /// and discards received bytes until the peer closes. Default: 5 seconds.
    pub close_timeout: Duration,
    /// Time allowed for the HTTP upgrade handshake.
    ///
    /// On the server, [`crate::server::serve_connection`] drops a client that has not sent
    /// a complete request head within it. On the client, [`crate::client::connect`] fails
    /// with [`crate::Error::HandshakeTimeout`] when TCP connect, request and response head
    /// together take longer. Default: 10 seconds.
    pub handshake_timeout: Duration,
    /// Maximum number of messages waiting in the outbound queue of a
    /// [`crate::Sender`]. Default: 256.
    pub outbound_capacity: usize,
    /// Action of [`crate::Sender::try_send`] on a full outbound queue.
    /// Default: [`FullPolicy::Close`] with 1013 (try again later).
    pub full_policy: FullPolicy,
    /// Settings of the HTTP/2 connections that carry WebSockets: those that
    /// [`crate::server::serve_connection`] and [`crate::server::serve_tls_connection`]
    /// serve, and those that the client opens with [`crate::client::HttpVersion::Http2`].
    /// Default: [`Http2Config::default`].
    pub http2: Http2Config,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            proto: pylon_proto::Config::default(),
            ping_interval: Some(Duration::from_secs(30)),
            pong_timeout: Duration::from_secs(10),
            write_timeout: Some(Duration::from_secs(10)),
            idle_timeout: None,
            close_timeout: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(10),
            outbound_capacity: 256,
            full_policy: FullPolicy::Close(CloseCode::TRY_AGAIN_LATER),
            http2: Http2Config::default(),
        }
    }
}

/// Settings and limits of one HTTP/2 connection, on either side.
///
/// Each WebSocket over HTTP/2 is one stream (RFC 8441), so these bound how many
/// WebSockets share a connection and how many received bytes wait in memory for them.
/// A connection buffers at most `initial_connection_window_size` received bytes in all,
/// and a stream at most `initial_stream_window_size`, until the WebSocket reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Http2Config {
    /// Maximum number of streams, and so of WebSockets, that the peer may open at once
    /// (`SETTINGS_MAX_CONCURRENT_STREAMS`). Default: 128.
    pub max_concurrent_streams: u32,
    /// Flow-control window of each stream, in bytes (`SETTINGS_INITIAL_WINDOW_SIZE`).
    /// A WebSocket that does not read stops its peer after this many bytes, without
    /// slowing the other streams. Default: 256 KiB.
    pub initial_stream_window_size: u32,
    /// Flow-control window of the whole connection, in bytes. Default: 4 MiB.
    pub initial_connection_window_size: u32,
    /// Largest frame payload this side accepts, in bytes (`SETTINGS_MAX_FRAME_SIZE`,
    /// 16 KiB to 16 MiB - 1). Default: 16 KiB, the protocol's initial value.
    pub max_frame_size: u32,
    /// Largest header list this side accepts, in bytes as HTTP/2 counts them
    /// (`SETTINGS_MAX_HEADER_LIST_SIZE`). Default: 16 KiB.
    pub max_header_list_size: u32,
    /// Bytes that each stream may queue for sending before writes to it wait. Default:
    /// 256 KiB.
    pub max_send_buf_size: usize,
    /// Interval of the HTTP/2 PING frames that a server sends to check that a connection
    /// is alive, or `None` for no pings. The client sends none. Default: 30 seconds.
    pub keep_alive_interval: Option<Duration>,
    /// Time to wait for the acknowledgement of such a PING before the connection and every
    /// WebSocket on it are closed. Default: 15 seconds.
    pub keep_alive_timeout: Duration,
}

impl Default for Http2Config {
    fn default() -> Self {
        Http2Config {
            max_concurrent_streams: 128,
            initial_stream_window_size: 256 * 1024,
            initial_connection_window_size: 4 * 1024 * 1024,
            max_frame_size: 16 * 1024,
            max_header_list_size: 16 * 1024,
            max_send_buf_size: 256 * 1024,
            keep_alive_interval: Some(Duration::from_secs(30)),
            keep_alive_timeout: Duration::from_secs(15),
        }
    }
}

/// Action taken when a message is offered to a full outbound queue.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FullPolicy {
    /// Discard the new message and count it in [`crate::Sender::dropped`]. The connection
    /// stays open, so the peer misses that message.
    Drop,
    /// Discard the new message and every queued one, then close the connection with this
    /// code. Use 1008 (policy violation) or 1013 (try again later) so that the peer can
    /// tell a slow-consumer close from other closes.
    Close(CloseCode),
}

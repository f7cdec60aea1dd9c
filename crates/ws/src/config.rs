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

//! The sending side of one client connection, as seen by the chat service.

/// Queue of JSON texts for one client connection.
///
/// The transport implements it, for example on top of a WebSocket sender. `send_text` is
/// called while the service has a room locked, so it must queue the text and return
/// without waiting.
pub trait Outbound: Send + Sync + 'static {
    /// Queues one JSON text for the client.
    ///
    /// An error means the client is gone, or its queue is full and the transport dropped the
    /// text. The service logs it at debug level and keeps going. A client that misses a
    /// message finds a gap in `seq` and can recover with `join` and `since`.
    fn send_text(&self, text: String) -> Result<(), OutboundError>;
}

/// Reason why a text could not be queued for a client.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutboundError {
    /// The client connection is closed.
    #[error("client connection is closed")]
    Closed,
    /// The client's send queue is full and the text was dropped.
    #[error("client send queue is full, text dropped")]
    Full,
}

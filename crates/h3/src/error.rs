//! HTTP/3 and QPACK error codes and the errors of this crate.

use std::fmt;

/// An HTTP/3 or QPACK application error code, as sent in CONNECTION_CLOSE,
/// RESET_STREAM and STOP_SENDING frames.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code(pub u64);

impl Code {
    /// No error, used to close a connection or stream that is no longer needed.
    pub const H3_NO_ERROR: Self = Self(0x100);
    /// A protocol error with no more specific code.
    pub const H3_GENERAL_PROTOCOL_ERROR: Self = Self(0x101);
    /// An internal error of the HTTP stack.
    pub const H3_INTERNAL_ERROR: Self = Self(0x102);
    /// The peer created a stream it must not create.
    pub const H3_STREAM_CREATION_ERROR: Self = Self(0x103);
    /// A control stream or QPACK stream was closed or reset.
    pub const H3_CLOSED_CRITICAL_STREAM: Self = Self(0x104);
    /// A frame arrived where it is not permitted.
    pub const H3_FRAME_UNEXPECTED: Self = Self(0x105);
    /// A frame did not fit its layout.
    pub const H3_FRAME_ERROR: Self = Self(0x106);
    /// The peer makes this endpoint do or keep too much.
    pub const H3_EXCESSIVE_LOAD: Self = Self(0x107);
    /// A stream or push identifier was used wrongly.
    pub const H3_ID_ERROR: Self = Self(0x108);
    /// A SETTINGS frame had an invalid value or identifier.
    pub const H3_SETTINGS_ERROR: Self = Self(0x109);
    /// The first frame on the control stream was not SETTINGS.
    pub const H3_MISSING_SETTINGS: Self = Self(0x10a);
    /// A request was not processed.
    pub const H3_REQUEST_REJECTED: Self = Self(0x10b);
    /// A request or its response was cancelled.
    pub const H3_REQUEST_CANCELLED: Self = Self(0x10c);
    /// The stream ended before the request was complete.
    pub const H3_REQUEST_INCOMPLETE: Self = Self(0x10d);
    /// A malformed message.
    pub const H3_MESSAGE_ERROR: Self = Self(0x10e);
    /// The TCP connection of a CONNECT request was reset or closed abnormally.
    pub const H3_CONNECT_ERROR: Self = Self(0x10f);
    /// The request should be retried over HTTP/1.1.
    pub const H3_VERSION_FALLBACK: Self = Self(0x110);
    /// A field section could not be decoded.
    pub const QPACK_DECOMPRESSION_FAILED: Self = Self(0x200);
    /// An instruction on the peer's QPACK encoder stream could not be processed.
    pub const QPACK_ENCODER_STREAM_ERROR: Self = Self(0x201);
    /// An instruction on the peer's QPACK decoder stream could not be processed.
    pub const QPACK_DECODER_STREAM_ERROR: Self = Self(0x202);

    /// Returns the name of a code defined by RFC 9114 or RFC 9204.
    pub fn name(self) -> Option<&'static str> {
        let name = match self.0 {
            0x100 => "H3_NO_ERROR",
            0x101 => "H3_GENERAL_PROTOCOL_ERROR",
            0x102 => "H3_INTERNAL_ERROR",
            0x103 => "H3_STREAM_CREATION_ERROR",
            0x104 => "H3_CLOSED_CRITICAL_STREAM",
            0x105 => "H3_FRAME_UNEXPECTED",
            0x106 => "H3_FRAME_ERROR",
            0x107 => "H3_EXCESSIVE_LOAD",
            0x108 => "H3_ID_ERROR",
            0x109 => "H3_SETTINGS_ERROR",
            0x10a => "H3_MISSING_SETTINGS",
            0x10b => "H3_REQUEST_REJECTED",
            0x10c => "H3_REQUEST_CANCELLED",
            0x10d => "H3_REQUEST_INCOMPLETE",
            0x10e => "H3_MESSAGE_ERROR",
            0x10f => "H3_CONNECT_ERROR",
            0x110 => "H3_VERSION_FALLBACK",
            0x200 => "QPACK_DECOMPRESSION_FAILED",
            0x201 => "QPACK_ENCODER_STREAM_ERROR",
            0x202 => "QPACK_DECODER_STREAM_ERROR",
            _ => return None,
        };
        Some(name)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} (0x{:x})", self.0),
            None => write!(f, "0x{:x}", self.0),
        }
    }
}

impl fmt::Debug for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<Code> for quinn::VarInt {
    fn from(code: Code) -> Self {
        // Every code this crate sends is below 2^62.
        quinn::VarInt::from_u64(code.0).unwrap_or(quinn::VarInt::MAX)
    }
}

/// A protocol violation found while parsing what the peer sent, with the code to close
/// the connection or reset the stream with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {reason}")]
pub struct ProtocolError {
    /// The code sent to the peer.
    pub code: Code,
    /// Description of the peer's fault, for logs and the CONNECTION_CLOSE reason phrase.
    pub reason: String,
}

impl ProtocolError {
    pub(crate) fn new(code: Code, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// An error of an HTTP/3 connection or request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The peer violated the protocol and this endpoint closed the connection with
    /// `code`.
    #[error("closed the HTTP/3 connection because the peer violated the protocol: {0}")]
    Connection(ProtocolError),
    /// The peer violated the protocol on one request stream, which was reset with
    /// `code`. Other requests go on.
    #[error("reset the HTTP/3 request stream because the peer violated the protocol: {0}")]
    Stream(ProtocolError),
    /// The QUIC connection is closed, by either side or by a timeout.
    #[error("the QUIC connection is closed: {0}")]
    ConnectionLost(#[from] quinn::ConnectionError),
    /// Reading a stream failed, for instance because the peer reset it.
    #[error("reading the HTTP/3 stream failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// Writing a stream failed, for instance because the peer sent STOP_SENDING.
    #[error("writing the HTTP/3 stream failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// The stream ended before a complete response header section arrived.
    #[error("the HTTP/3 stream ended before the response headers arrived")]
    IncompleteResponse,
    /// The server's SETTINGS do not enable extended CONNECT (RFC 9220), so it cannot
    /// carry WebSockets or other tunnels over HTTP/3.
    #[error(
        "the HTTP/3 server did not send SETTINGS_ENABLE_CONNECT_PROTOCOL = 1, so it does not \
         accept extended CONNECT; use another transport for this server"
    )]
    ConnectProtocolDisabled,
    /// The peer's SETTINGS frame did not arrive in time.
    #[error("the peer's HTTP/3 SETTINGS did not arrive within {0:?}; check that it speaks HTTP/3")]
    SettingsTimeout(std::time::Duration),
    /// The peer sent GOAWAY, so this connection takes no new requests.
    #[error("the HTTP/3 connection is shutting down (GOAWAY); open a new connection")]
    GoingAway,
    /// A request or response this endpoint was asked to send cannot be encoded.
    #[error("cannot send this HTTP/3 message: {0}")]
    InvalidMessage(String),
    /// The encoded header section is larger than the peer's SETTINGS_MAX_FIELD_SECTION_SIZE.
    #[error("the header section size {size} exceeds the peer's limit of {limit} bytes")]
    HeadersTooLarge {
        /// The size as RFC 9114 section 4.2.2 counts it.
        size: u64,
        /// The peer's SETTINGS_MAX_FIELD_SECTION_SIZE.
        limit: u64,
    },
}

//! Errors of the frame decoder and encoder.

use crate::CloseCode;

/// A protocol fault in received data.
///
/// Each variant maps to the close code that [`crate::Connection`] sends when it fails the
/// connection (RFC 6455 section 7.1.7), see [`ProtocolError::close_code`].
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// RSV1, RSV2 or RSV3 was set but no extension that defines them was negotiated
    /// (RFC 6455 section 5.2). permessage-deflate defines only RSV1.
    #[error("frame has reserved bits set but no extension that defines them was negotiated")]
    ReservedBits,
    /// A control frame had RSV1 set while permessage-deflate was negotiated, which only
    /// data messages may use (RFC 7692 section 6.1).
    #[error("control frame has RSV1 set, but only data messages can be compressed")]
    CompressedControlFrame,
    /// A continuation frame had RSV1 set, which permessage-deflate allows on the first
    /// frame of a message only (RFC 7692 section 6.1).
    #[error("continuation frame has RSV1 set, which only the first frame of a message may set")]
    CompressedContinuation,
    /// A compressed message was not valid DEFLATE data. RFC 7692 section 8.1 names no
    /// close code for this, and 1007 (invalid payload data) is the usual choice.
    #[error("compressed message is not valid DEFLATE data")]
    InvalidCompressedData,
    /// The opcode is one of the reserved values 0x3-0x7 or 0xB-0xF (RFC 6455 section 5.2).
    #[error("frame has reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A control frame had FIN clear (RFC 6455 section 5.5).
    #[error("control frame is fragmented (FIN clear)")]
    FragmentedControl,
    /// A control frame declared a payload above 125 bytes (RFC 6455 section 5.5).
    #[error("control frame payload is {0} bytes, the maximum is 125")]
    ControlTooLong(u64),
    /// A 64-bit payload length had its most significant bit set (RFC 6455 section 5.2).
    #[error("frame payload length has the most significant bit set")]
    LengthTopBit,
    /// A server received an unmasked frame (RFC 6455 section 5.1).
    #[error("client frame is not masked")]
    UnmaskedClientFrame,
    /// A client received a masked frame (RFC 6455 section 5.1).
    #[error("server frame is masked")]
    MaskedServerFrame,
    /// A continuation frame arrived while no fragmented message was open
    /// (RFC 6455 section 5.4).
    #[error("continuation frame without a fragmented message to continue")]
    UnexpectedContinuation,
    /// A text or binary frame arrived while a fragmented message was still open
    /// (RFC 6455 section 5.4).
    #[error(
        "new data frame while a fragmented message is unfinished, expected a continuation frame"
    )]
    ExpectedContinuation,
    /// A text message was not valid UTF-8 (RFC 6455 sections 5.6 and 8.1).
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    /// A close frame carried a status code that may not be sent (RFC 6455 section 7.4).
    #[error("close frame has invalid status code {0}")]
    InvalidCloseCode(u16),
    /// A close frame had a 1-byte payload, too short for a status code
    /// (RFC 6455 section 5.5.1).
    #[error("close frame payload is 1 byte, expected 0 or at least 2")]
    InvalidClosePayload,
    /// A close frame reason was not valid UTF-8 (RFC 6455 section 5.5.1).
    #[error("close frame reason is not valid UTF-8")]
    InvalidCloseReason,
    /// A frame declared a payload above [`crate::Limits::max_frame_size`].
    #[error(
        "frame payload is {size} bytes, the limit is {max} (raise max_frame_size to accept it)"
    )]
    FrameTooLarge {
        /// Declared payload length.
        size: u64,
        /// Configured limit.
        max: usize,
    },
    /// A message grew above [`crate::Limits::max_message_size`]. For a compressed message
    /// the limit applies to the decompressed size, which is checked as it grows.
    #[error(
        "message would be {size} bytes, the limit is {max} (raise max_message_size to accept it)"
    )]
    MessageTooLarge {
        /// Message length including the frame whose header went over the limit.
        size: u64,
        /// Configured limit.
        max: usize,
    },
}

impl ProtocolError {
    /// Returns the close code that reports this fault to the peer: 1007 for invalid UTF-8
    /// and invalid compressed data, 1009 for exceeded size limits, 1002 for everything
    /// else.
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8
            | ProtocolError::InvalidCloseReason
            | ProtocolError::InvalidCompressedData => CloseCode::INVALID_PAYLOAD,
            ProtocolError::FrameTooLarge { .. } | ProtocolError::MessageTooLarge { .. } => {
                CloseCode::MESSAGE_TOO_BIG
            }
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }

    /// Returns a short snake_case identifier of the fault, for metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            ProtocolError::ReservedBits => "reserved_bits",
            ProtocolError::CompressedControlFrame => "compressed_control_frame",
            ProtocolError::CompressedContinuation => "compressed_continuation",
            ProtocolError::InvalidCompressedData => "invalid_compressed_data",
            ProtocolError::ReservedOpcode(_) => "reserved_opcode",
            ProtocolError::FragmentedControl => "fragmented_control",
            ProtocolError::ControlTooLong(_) => "control_too_long",
            ProtocolError::LengthTopBit => "length_top_bit",
            ProtocolError::UnmaskedClientFrame => "unmasked_client_frame",
            ProtocolError::MaskedServerFrame => "masked_server_frame",
            ProtocolError::UnexpectedContinuation => "unexpected_continuation",
            ProtocolError::ExpectedContinuation => "expected_continuation",
            ProtocolError::InvalidUtf8 => "invalid_utf8",
            ProtocolError::InvalidCloseCode(_) => "invalid_close_code",
            ProtocolError::InvalidClosePayload => "invalid_close_payload",
            ProtocolError::InvalidCloseReason => "invalid_close_reason",
            ProtocolError::FrameTooLarge { .. } => "frame_too_large",
            ProtocolError::MessageTooLarge { .. } => "message_too_large",
        }
    }
}

/// A message that [`crate::Connection::encode`] cannot send.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// A close frame was already sent or queued, or the connection failed, so no further
    /// frame may be sent (RFC 6455 section 5.5.1).
    #[error("connection is closing, no message can be sent after a close frame")]
    Closed,
    /// The close code may not be sent on the wire (see [`CloseCode::is_sendable`]).
    #[error("close code {0} cannot be sent, use 1000-1003, 1007-1014 or 3000-4999")]
    InvalidCloseCode(u16),
    /// A ping or pong payload exceeded 125 bytes (RFC 6455 section 5.5).
    #[error("control frame payload is {0} bytes, the maximum is 125")]
    ControlTooLong(usize),
    /// A close reason exceeded 123 bytes (RFC 6455 section 5.5).
    #[error("close reason is {0} bytes, the maximum is 123")]
    CloseReasonTooLong(usize),
}

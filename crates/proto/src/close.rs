//! Close status codes and close frame bodies (RFC 6455 sections 5.5.1 and 7.4).

use std::fmt;

use crate::Utf8Bytes;

/// Status code of a close frame (RFC 6455 section 7.4).
///
/// An open newtype: any `u16` can be stored, and [`CloseCode::is_sendable`] checks whether
/// a value may appear on the wire.
#[derive(Copy, Clone, PartialEq, Eq, Debug, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection was fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away, such as a server shutting down.
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer violated the protocol.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: the endpoint received a data type it cannot accept.
    pub const UNSUPPORTED_DATA: CloseCode = CloseCode(1003);
    /// 1005: no status code was present. Reserved for local use, never sent.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection closed without a close frame. Reserved for local use, never sent.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: a message contained data inconsistent with its type, such as invalid UTF-8.
    pub const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    /// 1008: a message violated the endpoint's policy.
    pub const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    /// 1009: a message was too big to process.
    pub const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: the client expected the server to negotiate an extension.
    pub const MANDATORY_EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: the server hit an unexpected condition.
    pub const INTERNAL_ERROR: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting (IANA registry).
    pub const SERVICE_RESTART: CloseCode = CloseCode(1012);
    /// 1013: the service is overloaded, try again later (IANA registry).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1014: a gateway received an invalid response from upstream (IANA registry).
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);
    /// 1015: the TLS handshake failed. Reserved for local use, never sent.
    pub const TLS_HANDSHAKE: CloseCode = CloseCode(1015);

    /// Returns `true` if this code may appear in a close frame on the wire.
    ///
    /// Sendable codes are 1000-1003 and 1007-1011 (RFC 6455 section 7.4.1), 1012-1014
    /// (registered with IANA later), and 3000-4999 (registered and private use, RFC 6455
    /// section 7.4.2). 1004-1006 and 1015 are reserved, and 0-999, 1016-2999 and 5000 and
    /// above are not defined, so a received frame with one of them is a protocol error.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl From<u16> for CloseCode {
    fn from(code: u16) -> Self {
        CloseCode(code)
    }
}

impl From<CloseCode> for u16 {
    fn from(code: CloseCode) -> Self {
        code.0
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Body of a close frame: a status code and a UTF-8 reason of at most 123 bytes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CloseFrame {
    /// Status code.
    pub code: CloseCode,
    /// Human-readable reason, possibly empty. At most [`CloseFrame::MAX_REASON_LEN`] bytes.
    pub reason: Utf8Bytes,
}

impl CloseFrame {
    /// Maximum reason length in bytes: a control frame payload is at most 125 bytes
    /// (RFC 6455 section 5.5) and the status code takes 2 of them.
    pub const MAX_REASON_LEN: usize = 123;

    /// Creates a close frame body from a code and a reason.
    pub fn new(code: CloseCode, reason: impl Into<Utf8Bytes>) -> Self {
        CloseFrame {
            code,
            reason: reason.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendable_codes_match_registry() {
        let sendable = [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999,
            4000, 4999,
        ];
        for code in sendable {
            assert!(CloseCode(code).is_sendable(), "{code} should be sendable");
        }
        let not_sendable = [
            0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ];
        for code in not_sendable {
            assert!(
                !CloseCode(code).is_sendable(),
                "{code} should not be sendable"
            );
        }
    }
}

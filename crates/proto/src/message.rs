//! Whole WebSocket messages as the application receives and sends them.

use bytes::Bytes;

use crate::{CloseCode, CloseFrame, Utf8Bytes};

/// One WebSocket message: a whole data message or a single control frame.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Message {
    /// A text message, valid UTF-8.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping control frame with its payload (at most 125 bytes).
    Ping(Bytes),
    /// A pong control frame with its payload (at most 125 bytes).
    Pong(Bytes),
    /// A close control frame. `None` is a close frame with an empty body, which the peer
    /// reports as [`CloseCode::NO_STATUS`].
    Close(Option<CloseFrame>),
}

impl Message {
    /// Creates a text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Self {
        Message::Text(text.into())
    }

    /// Creates a binary message.
    pub fn binary(data: impl Into<Bytes>) -> Self {
        Message::Binary(data.into())
    }

    /// Creates a close message with a status code and a reason.
    pub fn close(code: CloseCode, reason: impl Into<Utf8Bytes>) -> Self {
        Message::Close(Some(CloseFrame::new(code, reason)))
    }

    /// Returns the payload length in bytes, as it is sent in the frame.
    ///
    /// For a close message this counts the 2-byte status code plus the reason.
    pub fn len(&self) -> usize {
        match self {
            Message::Text(text) => text.len(),
            Message::Binary(data) | Message::Ping(data) | Message::Pong(data) => data.len(),
            Message::Close(None) => 0,
            Message::Close(Some(frame)) => 2 + frame.reason.len(),
        }
    }

    /// Returns `true` if the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Returns `true` for ping, pong and close messages.
    pub fn is_control(&self) -> bool {
        matches!(
            self,
            Message::Ping(_) | Message::Pong(_) | Message::Close(_)
        )
    }
}

impl From<String> for Message {
    fn from(text: String) -> Self {
        Message::text(text)
    }
}

impl From<&'static str> for Message {
    fn from(text: &'static str) -> Self {
        Message::text(text)
    }
}

impl From<Utf8Bytes> for Message {
    fn from(text: Utf8Bytes) -> Self {
        Message::Text(text)
    }
}

impl From<Bytes> for Message {
    fn from(data: Bytes) -> Self {
        Message::Binary(data)
    }
}

impl From<Vec<u8>> for Message {
    fn from(data: Vec<u8>) -> Self {
        Message::Binary(data.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn len_counts_payload_bytes() {
        assert_eq!(Message::text("héllo").len(), 6);
        assert_eq!(Message::binary(vec![1, 2, 3]).len(), 3);
        assert_eq!(Message::Ping(Bytes::from_static(b"p")).len(), 1);
        assert_eq!(Message::Close(None).len(), 0);
        assert_eq!(Message::close(CloseCode::NORMAL, "bye").len(), 5);
        assert!(Message::binary(Bytes::new()).is_empty());
    }
}

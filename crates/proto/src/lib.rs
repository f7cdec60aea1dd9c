//! Sans-IO core of the WebSocket protocol (RFC 6455) for Pylon.
//!
//! This crate performs no I/O, spawns no tasks and reads no clock. The caller owns the
//! transport and moves bytes in and out:
//!
//! - [`handshake`] validates an HTTP/1.1 upgrade request and builds the `101` response
//!   (server side), or builds the request headers and checks the response (client side).
//! - [`Connection`] is the state machine for one established WebSocket in either [`Role`].
//!   [`Connection::decode`] consumes received bytes from a [`bytes::BytesMut`] and returns
//!   whole [`Message`]s. [`Connection::encode`] writes one message as frames into an output
//!   buffer. Frames that the protocol sends on its own (pongs, close replies and the close
//!   frame that reports a protocol fault) wait in the connection until
//!   [`Connection::write_pending`] moves them into an output buffer.
//! - [`frame`] and [`mask`] expose the wire format for callers that need single frames.
//! - [`deflate`] negotiates permessage-deflate (RFC 7692). With [`Config::deflate`] set, the
//!   connection compresses and decompresses data messages itself.
//!
//! A typical read loop appends received bytes to a `BytesMut`, calls `decode` until it
//! returns `Ok(None)`, calls `write_pending` and writes the output, and closes the
//! transport once [`Connection::is_closed`] returns `true`. Timeouts (close handshake,
//! keepalive) belong to the I/O layer because this crate has no clock.
//!
//! ```
//! use bytes::BytesMut;
//! use pylon_proto::{CloseCode, Config, Connection, Message, Role, State};
//!
//! let mut client = Connection::new(Role::Client, Config::default());
//! let mut server = Connection::new(Role::Server, Config::default());
//!
//! // The client encodes a message and a close frame into its output buffer.
//! let mut wire = BytesMut::new();
//! client.encode(Message::text("hello"), &mut wire).unwrap();
//! client.encode(Message::close(CloseCode::NORMAL, "bye"), &mut wire).unwrap();
//!
//! // The server decodes them from its input buffer, one message per call.
//! assert_eq!(server.decode(&mut wire).unwrap(), Some(Message::text("hello")));
//! assert!(matches!(server.decode(&mut wire).unwrap(), Some(Message::Close(_))));
//! assert_eq!(server.decode(&mut wire).unwrap(), None);
//!
//! // The close reply was queued automatically. Once it is written, the server closes TCP.
//! let mut reply = BytesMut::new();
//! server.write_pending(&mut reply);
//! assert_eq!(server.state(), State::Closed);
//! assert!(server.is_closed());
//! ```
//!
//! Received payloads are unmasked and moved into the connection's message buffer as they
//! arrive, so a text message is checked for UTF-8 incrementally and a fault is reported at
//! the first invalid byte. To save a copy of large payloads, an I/O layer can read a
//! frame's payload straight into the message buffer through [`Connection::payload_buf`],
//! and send a large payload with [`Connection::encode_split`], which writes only the frame
//! header. Size limits ([`Limits`]) are enforced from frame headers, before
//! any payload is buffered. A compressed message is decompressed as its payload arrives,
//! and its decompressed size is checked as it grows.

#![warn(missing_docs)]

mod close;
mod connection;
pub mod deflate;
mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
mod message;
mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use connection::{Config, Connection, Limits, State};
pub use deflate::{DeflateConfig, DeflateParams, PerMessageDeflate};
pub use error::{ProtocolError, SendError};
pub use frame::{FrameHeader, OpCode};
pub use handshake::{
    Accept, ClientRequest, HandshakeError, Negotiated, OriginPolicy, ServerConfig,
};
pub use message::Message;
pub use utf8::Utf8Bytes;

/// Side of the connection that a [`Connection`] plays.
///
/// The role decides masking (RFC 6455 section 5.1): a client masks every frame it sends
/// and rejects masked frames, a server rejects unmasked frames and never masks.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The endpoint that opened the connection and sent the upgrade request.
    Client,
    /// The endpoint that accepted the upgrade request.
    Server,
}

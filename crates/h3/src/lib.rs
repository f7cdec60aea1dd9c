//! A small HTTP/3 layer (RFC 9114) on quinn, with QPACK (RFC 9204) limited to the static
//! table and extended CONNECT (RFC 9220) for tunnels such as WebSockets.
//!
//! The layer has no WebSocket code: a server accepts requests as [`http::Request<()>`]
//! and sends their responses, a client sends CONNECT requests, and a 2xx response turns
//! the request stream into an [`H3Stream`], a byte stream of DATA frames.
//! Server push, the QPACK dynamic table and HTTP datagrams are not implemented.

mod client;
mod connection;
pub mod error;
pub mod frame;
pub mod headers;
pub mod qpack;
mod server;
pub mod settings;
mod stream;
pub mod varint;

pub use client::ClientConnection;
pub use connection::Config;
pub use error::{Code, Error, ProtocolError};
pub use headers::Protocol;
pub use server::{IncomingRequest, RequestStream, ServerConnection};
pub use settings::Settings;
pub use stream::H3Stream;

/// The ALPN protocol ID of HTTP/3.
pub const ALPN: &[u8] = b"h3";

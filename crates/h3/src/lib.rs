//! A small HTTP/3 layer (RFC 9114) on quinn, with QPACK (RFC 9204) limited to the static
//! table and extended CONNECT (RFC 9220) for tunnels such as WebSockets.

pub mod error;
pub mod qpack;
pub mod varint;

pub use error::{Code, Error, ProtocolError};

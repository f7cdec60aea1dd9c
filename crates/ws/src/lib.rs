//! Async WebSocket connections for Pylon on tokio, with a hyper 1.x server integration.
//!
//! The protocol itself (framing, masking, UTF-8 checks, the close handshake) lives in the
//! sans-I/O crate [`pylon_proto`]. This crate adds the I/O around it:
//!
//! - [`WebSocket`] drives a [`pylon_proto::Connection`] over any
//!   `AsyncRead + AsyncWrite + Unpin` stream: reading and decoding, keep-alive pings,
//!   timeouts, and coalesced writes. It implements `Stream` and `Sink<Message>`.
//! - [`Sender`] is a cloneable handle to a bounded outbound queue, for writing to a
//!   connection from other tasks, with a [`FullPolicy`] for slow peers.
//! - [`server`] accepts WebSocket handshakes in a hyper server, over HTTP/1.1 upgrades and
//!   HTTP/2 extended CONNECT (RFC 8441), with TLS and ALPN or over plain TCP.
//! - [`client`] connects to `ws://` and `wss://` URLs over HTTP/1.1 or HTTP/2, and
//!   [`client::Client`] shares one HTTP/2 connection per origin.
//! - [`tls`] builds rustls settings: server certificates from PEM files, self-signed
//!   development certificates, and the client's trusted CA certificates.
//!
//! Both sides negotiate permessage-deflate (RFC 7692) by default: the server accepts it
//! and the client offers it, with [`DeflateConfig::default`]. Set
//! `server::ServerConfig::handshake.deflate` or `client::ClientConfig::compression` to
//! `None` to turn it off.
//!
//! ```no_run
//! use pylon_ws::client::{self, ClientConfig};
//! use pylon_ws::{CloseCode, Message};
//!
//! # async fn run() -> Result<(), pylon_ws::Error> {
//! let (mut ws, _response) = client::connect("ws://127.0.0.1:8080/ws/echo", ClientConfig::default()).await?;
//! ws.send(Message::text("hello")).await?;
//! if let Some(reply) = ws.recv().await {
//!     println!("{:?}", reply?);
//! }
//! ws.close(CloseCode::NORMAL, "done").await?;
//! # Ok(())
//! # }
//! ```

/// Implements tokio's `AsyncRead` and `AsyncWrite` for an enum of streams by passing
/// every call to the stream of the current variant. Each variant holds one value that
/// implements both traits and `Unpin`, such as a `TcpStream` or a `Box` of a stream.
macro_rules! delegate_async_io {
    ($name:ident { $($variant:ident),+ $(,)? }) => {
        impl ::tokio::io::AsyncRead for $name {
            fn poll_read(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &mut ::tokio::io::ReadBuf<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                match self.get_mut() {
                    $($name::$variant(inner) => ::std::pin::Pin::new(inner).poll_read(cx, buf),)+
                }
            }
        }

        impl ::tokio::io::AsyncWrite for $name {
            fn poll_write(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &[u8],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                match self.get_mut() {
                    $($name::$variant(inner) => ::std::pin::Pin::new(inner).poll_write(cx, buf),)+
                }
            }

            fn poll_write_vectored(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                bufs: &[::std::io::IoSlice<'_>],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                match self.get_mut() {
                    $($name::$variant(inner) => {
                        ::std::pin::Pin::new(inner).poll_write_vectored(cx, bufs)
                    })+
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $($name::$variant(inner) => inner.is_write_vectored(),)+
                }
            }

            fn poll_flush(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                match self.get_mut() {
                    $($name::$variant(inner) => ::std::pin::Pin::new(inner).poll_flush(cx),)+
                }
            }

            fn poll_shutdown(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                match self.get_mut() {
                    $($name::$variant(inner) => ::std::pin::Pin::new(inner).poll_shutdown(cx),)+
                }
            }
        }
    };
}

pub mod client;
mod config;
mod error;
pub mod h3;
mod outbound;
pub mod server;
mod socket;
pub mod tls;

pub use config::{Config, FullPolicy, Http2Config};
pub use error::{Error, TrySendError};
pub use outbound::Sender;
pub use pylon_proto::{
    CloseCode, CloseFrame, DeflateConfig, DeflateParams, HandshakeError, Message,
    PerMessageDeflate, ProtocolError, Role, SendError, State, Utf8Bytes,
};
pub use socket::WebSocket;

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}

    #[test]
    fn public_types_are_send() {
        assert_send_sync::<Sender>();
        assert_send_sync::<Error>();
        assert_send::<WebSocket<tokio::net::TcpStream>>();
        assert_send::<server::PendingUpgrade>();
        assert_send::<WebSocket<server::TlsStream>>();
        assert_send::<WebSocket<client::ClientStream>>();
        assert_send::<WebSocket<server::ServerStream>>();
        assert_send::<WebSocket<server::Http2Stream>>();
        assert_send_sync::<client::Client>();
    }
}

//! Stream types that [`super::PendingUpgrade::finish`] recovers from hyper.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::TlsStream;

/// A stream that a WebSocket can run over once hyper hands it over.
pub trait UpgradeStream: AsyncRead + AsyncWrite + Unpin + Send + Sized + 'static {
    /// Takes the stream out of hyper's `Upgraded`, with the bytes that hyper read past
    /// the request head. Returns `upgraded` unchanged if it does not contain a `Self`.
    ///
    /// # Errors
    ///
    /// Returns `upgraded` when it wraps another stream type.
    fn from_upgraded(upgraded: Upgraded) -> Result<(Self, Bytes), Upgraded>;
}

/// Downcasts an HTTP/1.1 upgrade to the raw stream `S` that was served.
fn downcast<S>(upgraded: Upgraded) -> Result<(S, Bytes), Upgraded>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let parts = upgraded.downcast::<TokioIo<S>>()?;
    Ok((parts.io.into_inner(), parts.read_buf))
}

impl UpgradeStream for TcpStream {
    fn from_upgraded(upgraded: Upgraded) -> Result<(Self, Bytes), Upgraded> {
        downcast(upgraded)
    }
}

impl UpgradeStream for TlsStream {
    fn from_upgraded(upgraded: Upgraded) -> Result<(Self, Bytes), Upgraded> {
        downcast(upgraded)
    }
}

/// One HTTP/2 stream opened by extended CONNECT, which carries one WebSocket.
///
/// Reads and writes go through hyper's HTTP/2 connection task, which applies flow
/// control: received bytes are credited back to the peer as the WebSocket reads them.
/// Shutting down the write side sends `END_STREAM`, and dropping the stream before both
/// sides ended resets it with `RST_STREAM`. Any upgraded connection can be finished as
/// an `Http2Stream`, but an HTTP/1.1 one then keeps hyper's wrapper in between.
#[derive(Debug)]
pub struct Http2Stream {
    io: TokioIo<Upgraded>,
}

impl UpgradeStream for Http2Stream {
    fn from_upgraded(upgraded: Upgraded) -> Result<(Self, Bytes), Upgraded> {
        Ok((
            Http2Stream {
                io: TokioIo::new(upgraded),
            },
            Bytes::new(),
        ))
    }
}

impl AsyncRead for Http2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Http2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The stream of a server WebSocket over any transport, for callers that handle every
/// transport with one type.
///
/// The TLS and HTTP/2 variants are boxed, so the enum is one word larger than a bare
/// `TcpStream`. A caller that keeps many idle HTTP/1.1 WebSockets can finish them with
/// the exact stream type instead, which [`super::PendingUpgrade::transport`] and the
/// serving function tell.
#[derive(Debug)]
pub enum ServerStream {
    /// HTTP/1.1 over plain TCP.
    Tcp(TcpStream),
    /// HTTP/1.1 over TLS.
    Tls(Box<TlsStream>),
    /// A stream of an HTTP/2 connection, over TLS or plain TCP.
    Http2(Box<Http2Stream>),
}

impl UpgradeStream for ServerStream {
    fn from_upgraded(upgraded: Upgraded) -> Result<(Self, Bytes), Upgraded> {
        let upgraded = match downcast::<TcpStream>(upgraded) {
            Ok((tcp, read)) => return Ok((ServerStream::Tcp(tcp), read)),
            Err(upgraded) => upgraded,
        };
        let upgraded = match downcast::<TlsStream>(upgraded) {
            Ok((tls, read)) => return Ok((ServerStream::Tls(Box::new(tls)), read)),
            Err(upgraded) => upgraded,
        };
        let (http2, read) = Http2Stream::from_upgraded(upgraded)?;
        Ok((ServerStream::Http2(Box::new(http2)), read))
    }
}

delegate_async_io!(ServerStream { Tcp, Tls, Http2 });

//! WebSockets over HTTP/2 (RFC 8441) on the client: dialing a connection, checking that
//! the server enabled extended CONNECT, and opening one stream per WebSocket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h2::client::SendRequest;
use h2::{RecvStream, SendStream};
use http::{Method, Request, Response, Uri};
use pylon_proto::Role;
use pylon_proto::handshake::{CONNECT_PROTOCOL, ClientRequest};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::TlsConnector;

use super::{ClientConfig, ClientStream, Target, connect_tcp};
use crate::tls::{self, ALPN_HTTP2};
use crate::{Error, Http2Config, WebSocket};

/// A client HTTP/2 connection that can open WebSocket streams. Cloning shares the
/// connection.
#[derive(Clone, Debug)]
pub(crate) struct Http2Connection {
    send_request: SendRequest<Bytes>,
}

impl Http2Connection {
    /// Dials `target` over TCP, with TLS and ALPN `h2` for `wss://`, runs the HTTP/2
    /// handshake, and waits until the server's SETTINGS arrived.
    ///
    /// The connection task runs until the server closes the connection or every handle
    /// and stream of it is dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Io`], [`Error::Tls`] or [`Error::TlsConfig`] if the transport fails,
    /// [`Error::Http2NotNegotiated`] if a TLS server did not select `h2`,
    /// [`Error::Http2`] if the HTTP/2 handshake fails, and
    /// [`Error::ExtendedConnectDisabled`] if the server did not send
    /// `SETTINGS_ENABLE_CONNECT_PROTOCOL = 1`.
    pub(crate) async fn dial(target: &Target, cfg: &ClientConfig) -> Result<Self, Error> {
        let tcp = connect_tcp(target).await?;
        let authority = target.host_header.as_str();
        if target.secure {
            let connector = TlsConnector::from(cfg.tls.rustls_config(ALPN_HTTP2)?);
            let server_name = tls::server_name(&target.connect_host)?;
            let stream = connector
                .connect(server_name, tcp)
                .await
                .map_err(Error::Tls)?;
            if stream.get_ref().1.alpn_protocol() != Some(ALPN_HTTP2) {
                return Err(Error::Http2NotNegotiated(authority.to_owned()));
            }
            Self::handshake(stream, authority, &cfg.ws.http2).await
        } else {
            Self::handshake(tcp, authority, &cfg.ws.http2).await
        }
    }

    async fn handshake<S>(io: S, authority: &str, settings: &Http2Config) -> Result<Self, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (send_request, mut connection) = h2::client::Builder::new()
            .enable_push(false)
            .initial_window_size(settings.initial_stream_window_size)
            .initial_connection_window_size(settings.initial_connection_window_size)
            .max_frame_size(settings.max_frame_size)
            .max_header_list_size(settings.max_header_list_size)
            .max_send_buffer_size(settings.max_send_buf_size)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(Error::Http2)?;
        let ping_pong = connection.ping_pong();
        let task_authority = authority.to_owned();
        tokio::spawn(async move {
            match connection.await {
                Ok(()) => tracing::debug!(authority = task_authority, "HTTP/2 connection closed"),
                Err(error) => tracing::debug!(
                    %error,
                    authority = task_authority,
                    "HTTP/2 connection failed"
                ),
            }
        });

        // A server sends its SETTINGS first, and frames are processed in order, so once
        // the PING acknowledgement is in, the server's SETTINGS have been applied.
        if let Some(mut ping_pong) = ping_pong {
            ping_pong
                .ping(h2::Ping::opaque())
                .await
                .map_err(Error::Http2)?;
        }
        if !send_request.is_extended_connect_protocol_enabled() {
            return Err(Error::ExtendedConnectDisabled(authority.to_owned()));
        }
        tracing::debug!(authority, "HTTP/2 connection ready for WebSockets");
        Ok(Http2Connection { send_request })
    }

    /// Returns whether the connection can still open streams.
    pub(crate) async fn is_usable(&self) -> bool {
        self.send_request.clone().ready().await.is_ok()
    }

    /// Opens a WebSocket on a new stream with an extended CONNECT request to `target`.
    ///
    /// # Errors
    ///
    /// [`Error::Http2`] if the stream cannot be opened or the response does not arrive,
    /// and [`Error::Handshake`] if the response is not a 2xx or its headers do not fit
    /// the offer.
    pub(crate) async fn open(
        &self,
        target: &Target,
        cfg: ClientConfig,
    ) -> Result<(WebSocket<ClientStream>, Response<()>), Error> {
        let offer = ClientRequest::new(cfg.protocols).with_deflate(cfg.compression);
        let scheme = if target.secure { "https" } else { "http" };
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(target.host_header.as_str())
            .path_and_query(target.path.as_str())
            .build()
            .map_err(|err| {
                Error::Url(format!(
                    "cannot build the request URI for {}{}: {err}",
                    target.host_header, target.path
                ))
            })?;
        let mut request = Request::builder()
            .method(Method::CONNECT)
            .uri(uri)
            .body(())
            .map_err(|err| Error::Url(format!("cannot build the CONNECT request: {err}")))?;
        request
            .extensions_mut()
            .insert(h2::ext::Protocol::from_static(CONNECT_PROTOCOL));
        let headers = request.headers_mut();
        headers.extend(offer.connect_headers()?);
        headers.extend(cfg.headers);

        let mut send_request = self
            .send_request
            .clone()
            .ready()
            .await
            .map_err(Error::Http2)?;
        let (response, send) = send_request
            .send_request(request, false)
            .map_err(Error::Http2)?;
        let response = response.await.map_err(Error::Http2)?;
        let (parts, recv) = response.into_parts();
        // A rejected stream is dropped here, which resets it if the server left it open.
        let negotiated = offer.verify_connect(parts.status, &parts.headers)?;
        tracing::debug!(
            authority = %target.host_header,
            path = %target.path,
            stream_id = send.stream_id().as_u32(),
            protocol = negotiated.protocol.as_deref(),
            compression = negotiated.deflate.map(|deflate| deflate.params.to_string()),
            "websocket connected over HTTP/2"
        );

        let stream = Http2Stream {
            send,
            recv,
            received: Bytes::new(),
            write_ended: false,
        };
        let mut ws_config = cfg.ws;
        ws_config.proto.deflate = negotiated.deflate;
        let mut ws = WebSocket::from_raw(
            ClientStream::Http2(Box::new(stream)),
            Role::Client,
            ws_config,
            Bytes::new(),
        );
        ws.set_protocol(negotiated.protocol);
        Ok((ws, Response::from_parts(parts, ())))
    }
}

/// One HTTP/2 stream opened by extended CONNECT, as a byte stream for a client
/// WebSocket.
///
/// Received bytes are credited back to the server's flow-control window as soon as they
/// are taken from h2, so at most one DATA frame waits here. Writes wait for send capacity
/// of the stream and the connection. Shutting down the write side sends `END_STREAM`, and
/// so does dropping the stream, as closing a TCP socket sends FIN.
#[derive(Debug)]
pub struct Http2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Rest of the last DATA frame, not yet read.
    received: Bytes,
    write_ended: bool,
}

impl Drop for Http2Stream {
    fn drop(&mut self) {
        if !self.write_ended {
            // Fails only if the stream was already reset or closed, which ends it anyway.
            let _ = self.send.send_data(Bytes::new(), true);
        }
    }
}

impl Http2Stream {
    /// Returns the HTTP/2 stream ID.
    pub fn stream_id(&self) -> u32 {
        self.send.stream_id().as_u32()
    }
}

fn h2_to_io(err: h2::Error) -> io::Error {
    if err.is_io() {
        return err
            .into_io()
            .unwrap_or_else(|| io::Error::other("HTTP/2 i/o error"));
    }
    io::Error::new(io::ErrorKind::ConnectionReset, err)
}

impl AsyncRead for Http2Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.received.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // The stream's window is credited back now that the frame left h2.
                    if let Err(err) = this.recv.flow_control().release_capacity(data.len()) {
                        return Poll::Ready(Err(h2_to_io(err)));
                    }
                    this.received = data;
                }
                // A server that resets with NO_ERROR after it finished sending has
                // ended the stream normally (RFC 9113 section 8.1).
                Some(Err(err)) if err.reason() == Some(h2::Reason::NO_ERROR) => {
                    return Poll::Ready(Ok(()));
                }
                Some(Err(err)) => return Poll::Ready(Err(h2_to_io(err))),
                None => return Poll::Ready(Ok(())),
            }
        }
        let len = this.received.len().min(buf.remaining());
        buf.put_slice(&this.received[..len]);
        this.received.advance(len);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Http2Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            let capacity = this.send.capacity();
            if capacity > 0 {
                let len = capacity.min(buf.len());
                this.send
                    .send_data(Bytes::copy_from_slice(&buf[..len]), false)
                    .map_err(h2_to_io)?;
                return Poll::Ready(Ok(len));
            }
            this.send.reserve_capacity(buf.len());
            match this.send.poll_capacity(cx) {
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(err))) => return Poll::Ready(Err(h2_to_io(err))),
                Poll::Ready(None) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "HTTP/2 stream is closed for sending",
                    )));
                }
                Poll::Pending => {
                    // A reset would otherwise leave the writer waiting for capacity.
                    if let Poll::Ready(reset) = this.send.poll_reset(cx) {
                        let err = match reset {
                            Ok(reason) => io::Error::new(
                                io::ErrorKind::ConnectionReset,
                                format!("HTTP/2 stream was reset by the server: {reason}"),
                            ),
                            Err(err) => h2_to_io(err),
                        };
                        return Poll::Ready(Err(err));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection task writes queued DATA frames on its own.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_ended {
            this.write_ended = true;
            this.send.send_data(Bytes::new(), true).map_err(h2_to_io)?;
        }
        Poll::Ready(Ok(()))
    }
}

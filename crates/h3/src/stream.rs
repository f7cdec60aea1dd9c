//! A request stream after its headers: DATA frames in both directions, exposed as a byte
//! stream for tunnels such as WebSockets (RFC 9220).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use quinn::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::connection::{Liveness, RequestGuard, Shared};
use crate::error::{Code, ProtocolError};
use crate::{frame, varint};

/// The largest frame header: two 8-byte varints.
const MAX_HEADER: usize = 16;

/// The byte stream of an extended CONNECT request or response: reads return the payload
/// of the peer's DATA frames and each write sends one DATA frame.
///
/// Reading skips reserved and unknown frame types. Any other frame type closes the
/// connection with H3_FRAME_UNEXPECTED, because only DATA may follow the headers of a
/// CONNECT (RFC 9114 section 4.4). A stream that ends inside a frame closes the
/// connection with H3_FRAME_ERROR. A reset by the peer surfaces as an I/O error of this
/// stream only.
pub struct H3Stream {
    send: SendStream,
    recv: RecvStream,
    shared: Arc<Shared>,
    _liveness: Arc<Liveness>,
    /// On a server, counts the tunnel as a request in progress.
    _request_guard: Option<RequestGuard>,
    /// Bytes of the frame header being read.
    read_header: [u8; MAX_HEADER],
    read_header_len: usize,
    /// Payload bytes left in the current DATA frame.
    data_left: u64,
    /// Payload bytes left in the current frame of a skipped type.
    skip_left: u64,
    read_done: bool,
    /// The header of the DATA frame being written and how much of it is sent.
    write_header: [u8; MAX_HEADER],
    write_header_len: usize,
    write_header_sent: usize,
    /// Payload bytes left in the DATA frame being written.
    write_left: usize,
}

impl H3Stream {
    pub(crate) fn new(
        send: SendStream,
        recv: RecvStream,
        shared: Arc<Shared>,
        liveness: Arc<Liveness>,
    ) -> Self {
        Self {
            send,
            recv,
            shared,
            _liveness: liveness,
            _request_guard: None,
            read_header: [0; MAX_HEADER],
            read_header_len: 0,
            data_left: 0,
            skip_left: 0,
            read_done: false,
            write_header: [0; MAX_HEADER],
            write_header_len: 0,
            write_header_sent: 0,
            write_left: 0,
        }
    }

    pub(crate) fn with_request_guard(mut self, guard: RequestGuard) -> Self {
        self._request_guard = Some(guard);
        self
    }

    /// Returns the QUIC stream ID.
    pub fn id(&self) -> u64 {
        quinn::VarInt::from(self.send.id()).into_inner()
    }

    /// Aborts both directions with `code`: RESET_STREAM for sending, STOP_SENDING for
    /// receiving. Other streams of the connection are not affected.
    pub fn reset(&mut self, code: crate::Code) {
        let _ = self.send.reset(code.into());
        let _ = self.recv.stop(code.into());
        self.read_done = true;
    }

    /// Closes the connection after the peer broke the framing of this stream.
    fn protocol_error(&self, code: Code, reason: &str) -> io::Error {
        let error = ProtocolError::new(code, reason);
        self.shared.close(&error);
        io::Error::new(io::ErrorKind::InvalidData, error)
    }

    /// Returns the number of header bytes needed to know the whole frame header, given
    /// the bytes read so far.
    fn header_needed(&self) -> usize {
        let header = &self.read_header[..self.read_header_len];
        let Some(&first) = header.first() else {
            return 1;
        };
        let type_len = varint::len_from_first(first);
        match header.get(type_len) {
            None => type_len + 1,
            Some(&length_first) => type_len + varint::len_from_first(length_first),
        }
    }

    fn poll_read_recv(&mut self, cx: &mut Context<'_>, dst: &mut [u8]) -> Poll<io::Result<usize>> {
        let n = ready!(self.recv.poll_read(cx, dst)).map_err(io::Error::from)?;
        Poll::Ready(Ok(n))
    }
}

impl AsyncRead for H3Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.read_done {
                return Poll::Ready(Ok(()));
            }
            if this.data_left > 0 {
                let max = usize::try_from(this.data_left)
                    .unwrap_or(usize::MAX)
                    .min(buf.remaining());
                let dst = buf.initialize_unfilled_to(max);
                let n = ready!(this.poll_read_recv(cx, dst))?;
                if n == 0 {
                    return Poll::Ready(Err(this.protocol_error(
                        Code::H3_FRAME_ERROR,
                        "stream ended inside a DATA frame",
                    )));
                }
                buf.advance(n);
                this.data_left -= n as u64;
                return Poll::Ready(Ok(()));
            }
            if this.skip_left > 0 {
                let mut scratch = [0u8; 512];
                let max = usize::try_from(this.skip_left)
                    .unwrap_or(usize::MAX)
                    .min(scratch.len());
                let n = ready!(this.poll_read_recv(cx, &mut scratch[..max]))?;
                if n == 0 {
                    return Poll::Ready(Err(
                        this.protocol_error(Code::H3_FRAME_ERROR, "stream ended inside a frame")
                    ));
                }
                this.skip_left -= n as u64;
                continue;
            }
            let needed = this.header_needed();
            if this.read_header_len < needed {
                let start = this.read_header_len;
                let mut header = this.read_header;
                let n = ready!(this.poll_read_recv(cx, &mut header[start..needed]))?;
                this.read_header = header;
                if n == 0 {
                    if start == 0 {
                        this.read_done = true;
                        return Poll::Ready(Ok(()));
                    }
                    return Poll::Ready(Err(this.protocol_error(
                        Code::H3_FRAME_ERROR,
                        "stream ended inside a frame header",
                    )));
                }
                this.read_header_len += n;
                if this.read_header_len < this.header_needed() || this.read_header_len < 2 {
                    continue;
                }
            }
            // The header is complete.
            let header = &this.read_header[..this.read_header_len];
            let Some((frame_type, type_len)) = varint::decode(header) else {
                continue;
            };
            let Some((len, _)) = varint::decode(&header[type_len..]) else {
                continue;
            };
            this.read_header_len = 0;
            match frame_type {
                frame::DATA => this.data_left = len,
                frame::HEADERS
                | frame::CANCEL_PUSH
                | frame::SETTINGS
                | frame::PUSH_PROMISE
                | frame::GOAWAY
                | frame::MAX_PUSH_ID
                | 0x2
                | 0x6
                | 0x8
                | 0x9 => {
                    let reason = format!("{} frame on a CONNECT stream", frame::name(frame_type));
                    return Poll::Ready(Err(
                        this.protocol_error(Code::H3_FRAME_UNEXPECTED, &reason)
                    ));
                }
                _ => this.skip_left = len,
            }
        }
    }
}

impl AsyncWrite for H3Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    /// Writes the buffers as one DATA frame, so that a batch of WebSocket frames written
    /// together travels as one HTTP/3 frame. If the stream takes only part of it, the
    /// frame stays open and the next write continues its payload.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let total: usize = bufs.iter().map(|buf| buf.len()).sum();
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        if this.write_left == 0 {
            let mut header = &mut this.write_header[..];
            let before = header.len();
            frame::encode_header(frame::DATA, total as u64, &mut header);
            this.write_header_len = before - header.len();
            this.write_header_sent = 0;
            this.write_left = total;
        }
        while this.write_header_sent < this.write_header_len {
            let header = &this.write_header[this.write_header_sent..this.write_header_len];
            let n = ready!(Pin::new(&mut this.send).poll_write(cx, header))?;
            this.write_header_sent += n;
        }
        let mut written = 0;
        for buf in bufs {
            let mut offset = 0;
            while offset < buf.len() && this.write_left > 0 {
                let end = buf.len().min(offset + this.write_left);
                match Pin::new(&mut this.send).poll_write(cx, &buf[offset..end]) {
                    Poll::Ready(Ok(n)) => {
                        offset += n;
                        written += n;
                        this.write_left -= n;
                    }
                    Poll::Ready(Err(error)) if written == 0 => {
                        return Poll::Ready(Err(error.into()));
                    }
                    Poll::Pending if written == 0 => return Poll::Pending,
                    // Report what was written; the error or the wait comes on the next call.
                    Poll::Ready(Err(_)) | Poll::Pending => return Poll::Ready(Ok(written)),
                }
            }
            if this.write_left == 0 {
                break;
            }
        }
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().send).poll_flush(cx)
    }

    /// Finishes the sending side. Fails while a DATA frame is only partly written,
    /// because the peer would read the truncated frame as H3_FRAME_ERROR.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.write_left > 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot finish the stream: {} bytes of the current DATA frame are unwritten",
                    this.write_left
                ),
            )));
        }
        Pin::new(&mut this.send).poll_shutdown(cx)
    }
}

impl Drop for H3Stream {
    fn drop(&mut self) {
        if !self.read_done {
            // Tell the peer to stop sending; fails harmlessly if the stream is done.
            let _ = self.recv.stop(Code::H3_NO_ERROR.into());
        }
    }
}

impl std::fmt::Debug for H3Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Stream")
            .field("id", &self.send.id())
            .finish_non_exhaustive()
    }
}

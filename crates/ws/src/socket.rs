//! [`WebSocket`]: one established WebSocket connection over an async byte stream.

mod driver;

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::stream::FusedStream;
use futures_util::{Sink, Stream};
use pylon_proto::{
    CloseCode, CloseFrame, Connection, Message, PerMessageDeflate, ProtocolError, Role, State,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

use crate::outbound::Outbound;
use crate::{Config, Error, FullPolicy, Sender};

/// Once the write buffer contains this many bytes, `recv` stops reading from the transport
/// and stops moving queued messages and automatic frames into the buffer, and the `Sink`
/// waits for the transport before accepting more. A peer that sends without reading is
/// then held back by TCP flow control instead of growing the buffer.
const WRITE_BUF_HIGH_WATER: usize = 64 * 1024;

/// A write buffer with at most this capacity is kept after it was written out, so that
/// pings, pongs and short messages reuse it. A larger one is released.
const WRITE_BUF_RETAIN: usize = 256;

/// A WebSocket connection after the handshake, over any async byte stream.
///
/// The connection makes progress only while it is polled: [`WebSocket::recv`] (or the
/// `Stream` implementation) reads and decodes frames, writes automatic pongs and close
/// replies, sends keep-alive pings, enforces the timeouts of [`Config`] and writes the
/// messages queued through [`WebSocket::sender`]. Keep a task polling `recv` for the life of
/// the connection, for example in a `tokio::select!` loop next to other work.
///
/// Received pings and pongs are returned by `recv` as well; the automatic pong has already
/// been queued when a ping is returned. A received close frame is returned as
/// [`Message::Close`], and after the close handshake `recv` returns `None`.
///
/// Reads stop while 64 KiB or more wait to be written, so a peer that sends without
/// reading is held back by TCP flow control rather than by buffering. A write that makes
/// no progress for `Config::write_timeout` ends the connection.
///
/// An idle connection holds no read buffer, and its write buffer is released once written
/// unless it is at most 256 bytes. The keep-alive timer is a boxed `tokio::time::Sleep`
/// that is allocated the first time a timeout or ping interval needs it.
pub struct WebSocket<S> {
    io: S,
    conn: Connection,
    /// Received bytes that `decode` has not consumed. Unallocated while empty between
    /// messages.
    read_buf: BytesMut,
    /// Encoded bytes to write before `write_buf`: the frame headers and the payloads that
    /// `Connection::encode_split` returned without copying, in order.
    write_chunks: VecDeque<Bytes>,
    /// Total length of `write_chunks`.
    write_chunks_len: usize,
    /// Encoded frames waiting to be written, after `write_chunks`.
    write_buf: BytesMut,
    /// Outbound queue, created by the first call to [`WebSocket::sender`].
    outbound: Option<Arc<Outbound>>,
    /// One timer, armed for the earliest deadline of the ping interval, pong timeout, idle
    /// timeout and close timeout.
    timer: Option<Pin<Box<Sleep>>>,
    timing: Timing,
    /// Subprotocol agreed in the handshake.
    protocol: Option<Box<str>>,
    /// When bytes last arrived from the peer.
    last_received: Instant,
    /// When a text or binary message last moved in either direction.
    last_data: Instant,
    /// When the unanswered keep-alive ping was sent.
    ping_sent: Option<Instant>,
    /// When a close frame was first sent, received or queued through a `Sender`, or the
    /// connection failed.
    closing_since: Option<Instant>,
    /// When the transport last refused bytes while the write buffer was not empty.
    /// `None` while writes make progress.
    write_stalled_since: Option<Instant>,
    /// A deadline may have moved earlier than the one the timer is armed for (or there is
    /// no timer yet), so the next timer check computes the deadlines again instead of
    /// only polling the timer.
    rearm_timer: bool,
    /// The write side of the transport was shut down after the close.
    write_shut: bool,
    /// Protocol fault that `recv` reports once the transport has ended, so that the close
    /// frame reaches the peer even if the caller drops the connection on the error.
    fault: Option<ProtocolError>,
    /// Bytes were written since the last flush of the transport.
    flush_needed: bool,
    /// The connection ended; `recv` returns `None`.
    done: bool,
}

/// The parts of [`Config`] that the I/O layer reads after construction.
#[derive(Clone, Copy, Debug)]
struct Timing {
    ping_interval: Option<Duration>,
    pong_timeout: Duration,
    write_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    close_timeout: Duration,
    outbound_capacity: usize,
    full_policy: FullPolicy,
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Wraps a stream on which the WebSocket handshake has completed.
    ///
    /// `already_read` contains bytes that were read from `io` after the handshake, such as
    /// frames that arrived in the same packet as the HTTP head. They are decoded before
    /// anything new is read. `config.proto.deflate` must be the permessage-deflate agreed
    /// in the handshake, or `None` if none was.
    pub fn from_raw(io: S, role: Role, config: Config, already_read: Bytes) -> Self {
        let now = Instant::now();
        // Copy instead of converting: hyper hands over its whole read-ahead buffer (8 KiB in
        // hyper 1.13) even when it holds no bytes, and an idle connection must not keep it.
        let read_buf = if already_read.is_empty() {
            BytesMut::new()
        } else {
            BytesMut::from(&already_read[..])
        };
        WebSocket {
            io,
            conn: Connection::new(role, config.proto),
            read_buf,
            write_chunks: VecDeque::new(),
            write_chunks_len: 0,
            write_buf: BytesMut::new(),
            outbound: None,
            timer: None,
            timing: Timing {
                ping_interval: config.ping_interval,
                pong_timeout: config.pong_timeout,
                write_timeout: config.write_timeout,
                idle_timeout: config.idle_timeout,
                close_timeout: config.close_timeout,
                outbound_capacity: config.outbound_capacity,
                full_policy: config.full_policy,
            },
            protocol: None,
            last_received: now,
            last_data: now,
            ping_sent: None,
            closing_since: None,
            write_stalled_since: None,
            rearm_timer: true,
            write_shut: false,
            fault: None,
            flush_needed: false,
            done: false,
        }
    }

    /// Receives the next message, driving the connection while waiting.
    ///
    /// Returns `None` once the connection has ended: after the close handshake, after a
    /// returned error that ended it, or when the peer closed the transport after a close
    /// frame. An `Err` ends the connection except [`Error::IdleTimeout`], after which the
    /// close handshake continues on later calls.
    ///
    /// After the close handshake or a protocol fault, the connection ends only once the
    /// transport has ended. A server, or either side after a fault, shuts down its write
    /// side. Received bytes are then discarded until the peer closes the transport or
    /// `Config::close_timeout` passes. [`Error::Protocol`] is returned only after that, so
    /// the close frame that reports the fault reaches the peer even if the caller drops
    /// the connection on the error.
    ///
    /// # Cancel safety
    ///
    /// This method is cancel safe: every byte read is kept in the connection, and a
    /// message is only taken out of it in the poll that returns it. Use it in
    /// `tokio::select!` freely.
    pub async fn recv(&mut self) -> Option<Result<Message, Error>> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Sends one message and waits until it is written to the transport.
    ///
    /// Automatic frames that wait in the connection (pongs, close replies) are written
    /// first. Messages queued through a [`Sender`] are written by `recv`, not here.
    ///
    /// While the write waits for the transport, the deadlines that `recv` enforces keep
    /// running: the write timeout, the pong timeout, and the close timeout, which starts
    /// when a [`Sender`] queues a close. Received bytes are not read during `send`, so a
    /// peer's pong cannot stop a pong timeout until the next `recv`.
    ///
    /// If the future is dropped before it completes, the message is either not encoded at
    /// all or fully encoded, and in the latter case a later `send`, `recv` or flush writes
    /// it.
    ///
    /// # Errors
    ///
    /// [`Error::ConnectionClosed`] once the connection has ended, [`Error::Send`] if the
    /// message cannot be sent (after a close frame, or an invalid close code or a control
    /// payload above 125 bytes), and [`Error::Io`] if the write fails.
    /// [`Error::WriteTimeout`], [`Error::PongTimeout`] or [`Error::CloseTimeout`] if that
    /// deadline passed while the write waited, which ends the connection.
    // Not an `async fn`: its future would keep the message argument and the message in
    // flight in separate fields, and a connection task that awaits `send` is as large as
    // its largest await.
    pub fn send(&mut self, message: Message) -> impl Future<Output = Result<(), Error>> + '_ {
        let mut message = Some(message);
        poll_fn(move |cx| {
            if let Some(message) = message.take() {
                if self.done {
                    return Poll::Ready(Err(Error::ConnectionClosed));
                }
                self.encode_and_write(message, cx)?;
            }
            self.poll_flush_writes(cx)
        })
    }

    /// Closes the connection: sends a close frame with `code` and `reason`, waits for the
    /// peer's close frame and ends the transport, all within `Config::close_timeout`.
    ///
    /// Messages that arrive before the peer's close frame are discarded. To read them,
    /// send [`Message::Close`] with [`WebSocket::send`] instead and keep calling `recv`
    /// until it returns `None`. If the peer already sent its close frame, this sends the
    /// reply and finishes the close handshake, ignoring `code` and `reason`.
    ///
    /// # Errors
    ///
    /// [`Error::Send`] for a code that may not be sent or a reason above 123 bytes,
    /// [`Error::CloseTimeout`] if the peer does not send its close frame in time, and any error `recv`
    /// reports while the handshake finishes.
    pub async fn close(&mut self, code: CloseCode, reason: &str) -> Result<(), Error> {
        if self.done {
            return Ok(());
        }
        if self.conn.state() == State::Open && !self.conn.is_failed() {
            let frame = CloseFrame::new(code, reason.to_owned());
            self.encode_message(Message::Close(Some(frame)))?;
        }
        poll_fn(|cx| self.poll_flush_writes(cx)).await?;

        while let Some(item) = self.recv().await {
            let message = item?;
            tracing::trace!(
                len = message.len(),
                "discarding message received while closing"
            );
        }
        Ok(())
    }

    /// Returns a handle that queues messages for this connection from other tasks.
    ///
    /// The queue is created on the first call, with `Config::outbound_capacity` and
    /// `Config::full_policy`, so a connection that never requests a sender pays nothing
    /// for it. `recv` writes the queued messages, so it must keep being polled.
    pub fn sender(&mut self) -> Sender {
        let timing = self.timing;
        let shared = self.outbound.get_or_insert_with(|| {
            Arc::new(Outbound::new(timing.outbound_capacity, timing.full_policy))
        });
        if self.done || self.closing_since.is_some() {
            shared.shut();
        }
        Sender::new(Arc::clone(shared))
    }
}

impl<S> WebSocket<S> {
    /// Returns the subprotocol agreed in the handshake, if any.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Returns the permessage-deflate agreed in the handshake, or `None` if the connection
    /// runs uncompressed. [`PerMessageDeflate::params`] contains the agreed parameters.
    pub fn compression(&self) -> Option<&PerMessageDeflate> {
        self.conn.config().deflate.as_ref()
    }

    /// Returns the role of this endpoint.
    pub fn role(&self) -> Role {
        self.conn.role()
    }

    /// Returns the progress of the close handshake.
    pub fn state(&self) -> State {
        self.conn.state()
    }

    /// Returns a reference to the underlying stream, for example to read the peer address.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// Returns the number of bytes in this connection's read, write and message buffers
    /// (by length, not capacity). It is 0 for an idle connection.
    pub fn buffered_len(&self) -> usize {
        self.read_buf.len() + self.unwritten_len() + self.conn.buffered()
    }

    /// Returns the number of encoded bytes not yet written to the transport.
    fn unwritten_len(&self) -> usize {
        self.write_chunks_len + self.write_buf.len()
    }

    pub(crate) fn set_protocol(&mut self, protocol: Option<String>) {
        self.protocol = protocol.map(String::into_boxed_str);
    }
}

impl<S> Drop for WebSocket<S> {
    fn drop(&mut self) {
        if let Some(outbound) = &self.outbound {
            outbound.shut();
        }
    }
}

impl<S> fmt::Debug for WebSocket<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocket")
            .field("role", &self.conn.role())
            .field("state", &self.conn.state())
            .field("protocol", &self.protocol)
            .field("read_buffered", &self.read_buf.len())
            .field("write_buffered", &self.unwritten_len())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<S> Stream for WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Item = Result<Message, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx)
    }
}

impl<S> FusedStream for WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn is_terminated(&self) -> bool {
        self.done
    }
}

/// Sends messages through the `Sink` contract: `poll_ready` first writes out the buffer when
/// 64 KiB or more are unwritten, `start_send` encodes, `poll_flush` writes and flushes the transport, and
/// `poll_close` sends a close frame with 1000 (normal) if none was sent and flushes. Closing
/// the sink does not wait for the peer's close frame: keep polling the `Stream` half for
/// that.
impl<S> Sink<Message> for WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(Err(Error::ConnectionClosed));
        }
        if this.unwritten_len() >= WRITE_BUF_HIGH_WATER {
            ready!(this.poll_flush_writes(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), Error> {
        let this = self.get_mut();
        if this.done {
            return Err(Error::ConnectionClosed);
        }
        this.encode_message(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.get_mut().poll_flush_writes(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if !this.done && this.conn.state() == State::Open && !this.conn.is_failed() {
            let frame = CloseFrame::new(CloseCode::NORMAL, "");
            this.encode_message(Message::Close(Some(frame)))?;
        }
        this.poll_flush_writes(cx)
    }
}

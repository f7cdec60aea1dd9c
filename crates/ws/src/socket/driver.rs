//! The poll loop behind [`WebSocket::recv`]: reads, decoding, writes and timers.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::mem::{self, MaybeUninit};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use pylon_proto::{CloseCode, CloseFrame, Message, ProtocolError, Role, SendError, State};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use super::{WRITE_BUF_HIGH_WATER, WRITE_BUF_RETAIN, WebSocket};
use crate::Error;

/// Size of the stack buffer used for a read while no read buffer is allocated. Received
/// bytes are copied into a heap buffer of exactly their length, so a connection waiting for
/// its next message has no read buffer allocated.
const READ_SCRATCH: usize = 4 * 1024;

/// Bytes requested per read into the read buffer, which is allocated while a frame or
/// message is partly received.
const READ_CHUNK: usize = 16 * 1024;

/// Maximum bytes requested per read straight into the message buffer, which takes the
/// payload of the data frame being received.
const MAX_READ_CHUNK: usize = 256 * 1024;

/// Maximum buffers passed to one vectored write.
const MAX_WRITE_SLICES: usize = 8;

/// Reads per call of `poll_recv`. After this many, the task yields so that a peer that
/// sends without pause cannot hold the executor thread when the transport has no
/// cooperative budget of its own.
const MAX_READS_PER_POLL: usize = 64;

/// Maximum timer rounds per poll. A round handles the deadlines that passed and re-arms the
/// timer, and another round runs only if the re-armed timer is already due, so the bound
/// matters only when the clock jumps ahead during a poll.
const MAX_TIMER_ROUNDS: usize = 4;

/// Close reason sent when the idle timeout expires.
const IDLE_REASON: &str = "idle timeout";

type RecvPoll = Poll<Option<Result<Message, Error>>>;

/// Outcome of one successful read from the transport.
enum Read {
    /// The peer closed its write side.
    Eof,
    /// This many bytes were read into the read buffer or the message buffer, for
    /// `decode_next`.
    Kept(usize),
    /// This many bytes were read into a stack buffer and decoded from there.
    Decoded(usize, Result<Option<Message>, ProtocolError>),
}

impl Read {
    fn kept(len: usize) -> Read {
        if len == 0 { Read::Eof } else { Read::Kept(len) }
    }
}

impl<S> WebSocket<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    pub(super) fn poll_recv(&mut self, cx: &mut Context<'_>) -> RecvPoll {
        match self.poll_recv_inner(cx) {
            // A protocol fault is reported once the transport has ended.
            Poll::Ready(None) => match self.fault.take() {
                Some(err) => Poll::Ready(Some(Err(Error::Protocol(err)))),
                None => Poll::Ready(None),
            },
            poll => poll,
        }
    }

    fn poll_recv_inner(&mut self, cx: &mut Context<'_>) -> RecvPoll {
        if self.done {
            return Poll::Ready(None);
        }
        if let Some(outbound) = &self.outbound {
            outbound.register(cx.waker());
        }

        let mut reads = 0;
        loop {
            // Later rounds check the timers only when a deadline moved earlier, because the
            // first round registered the waker with the timer already.
            if (reads == 0 || self.rearm_timer)
                && let Poll::Ready(item) = self.poll_timers(cx)
            {
                return Poll::Ready(item);
            }

            self.fill_write_buf();
            let write = self.poll_write_buf(cx);
            if let Poll::Ready(Err(err)) = write {
                return self.on_write_error(err);
            }

            if self.conn.is_closed() {
                // The last frames must be out before the transport ends. The pending write
                // has registered the waker.
                if write.is_pending() {
                    return Poll::Pending;
                }
                return self.poll_end_transport(cx);
            }

            // A partly received message may have payload bytes that were read straight
            // into its buffer, which `decode` processes too.
            if (!self.read_buf.is_empty() || self.conn.buffered() > 0)
                && let Some(item) = self.decode_next(cx)
            {
                return Poll::Ready(Some(item));
            }

            if self.conn.is_failed() {
                // The fault close waits behind a full write buffer. A pending write has
                // registered the waker, and after a finished one the next round moves the
                // close frame into the buffer.
                if write.is_pending() {
                    return Poll::Pending;
                }
                continue;
            }
            if self.unwritten_len() >= WRITE_BUF_HIGH_WATER && self.conn.has_pending() {
                // Backpressure on a peer whose pings pile up pongs it does not read: read
                // nothing more until it takes some of what it was sent. Reading goes on while
                // only data waits, because a peer that pipelines may read only after its own
                // writes drain, and pausing then would deadlock both sides. The buffer is only
                // left this full by a pending write, which has registered the waker.
                return Poll::Pending;
            }

            if reads == MAX_READS_PER_POLL {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            reads += 1;
            let decoded = match self.poll_read_some(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(err)) => return self.on_read_error(err),
                Poll::Ready(Ok(Read::Eof)) => return self.on_eof(),
                Poll::Ready(Ok(Read::Kept(n))) => {
                    tracing::trace!(bytes = n, "read from transport");
                    None
                }
                Poll::Ready(Ok(Read::Decoded(n, result))) => {
                    tracing::trace!(bytes = n, "read from transport");
                    Some(result)
                }
            };
            self.last_received = Instant::now();
            // The next ping is due one interval after this read, which can be earlier
            // than the pong timeout that the timer waits for.
            if self.ping_sent.take().is_some() {
                self.rearm_timer = true;
            }
            if let Some(result) = decoded
                && let Some(item) = self.on_decoded(result, cx)
            {
                return Poll::Ready(Some(item));
            }
        }
    }

    /// Decodes the next message from the read buffer. Returns `None` when more bytes are
    /// needed.
    fn decode_next(&mut self, cx: &mut Context<'_>) -> Option<Result<Message, Error>> {
        let result = self.conn.decode(&mut self.read_buf);
        if self.read_buf.is_empty() && self.conn.buffered() == 0 {
            self.read_buf = BytesMut::new();
        }
        self.on_decoded(result, cx)
    }

    /// Turns the result of a decode into the item for `recv`, or `None` when more bytes are
    /// needed or the connection failed.
    fn on_decoded(
        &mut self,
        result: Result<Option<Message>, ProtocolError>,
        cx: &mut Context<'_>,
    ) -> Option<Result<Message, Error>> {
        let item = match result {
            Ok(None) => return None,
            Ok(Some(message)) => {
                self.on_message(&message);
                Ok(message)
            }
            Err(err) => {
                tracing::warn!(
                    error = %err,
                    code = err.close_code().0,
                    role = ?self.conn.role(),
                    "peer violated the websocket protocol, failing the connection"
                );
                // Reported by `poll_recv` once the close frame is out and the transport
                // has ended.
                self.fault = Some(err);
                self.note_state();
                return None;
            }
        };

        // Write the automatic pong, close reply or fault close right away, because the
        // caller may stop polling after this item. A failed write shows up again on the
        // next poll.
        self.note_state();
        if self.conn.has_pending() {
            self.fill_write_buf();
            let _ = self.poll_write_buf(cx);
        }
        Some(item)
    }

    fn on_message(&mut self, message: &Message) {
        match message {
            Message::Text(text) => {
                tracing::trace!(len = text.len(), "received text message");
                self.note_data();
            }
            Message::Binary(data) => {
                tracing::trace!(len = data.len(), "received binary message");
                self.note_data();
            }
            Message::Ping(data) => tracing::trace!(len = data.len(), "received ping"),
            Message::Pong(data) => tracing::trace!(len = data.len(), "received pong"),
            Message::Close(frame) => {
                let code = frame.as_ref().map(|frame| frame.code.0);
                let reason = frame.as_ref().map(|frame| frame.reason.as_str());
                tracing::debug!(?code, ?reason, "received close frame");
            }
        }
    }

    /// Encodes a message from the caller into the write buffer, after the automatic frames
    /// waiting in the connection.
    pub(super) fn encode_message(&mut self, message: Message) -> Result<(), Error> {
        if self.conn.has_pending() {
            self.conn.write_pending(&mut self.write_buf);
        }
        let is_data = matches!(message, Message::Text(_) | Message::Binary(_));
        let result = self.conn.encode_split(message, &mut self.write_buf);
        self.note_state();
        if let Some(payload) = result? {
            // The frame header is the last thing in `write_buf`, and the payload follows it.
            self.queue_split(payload);
        }
        if is_data {
            self.note_data();
        }
        Ok(())
    }

    /// Encodes a message from `send`. When nothing else waits to be written, a payload
    /// that `encode_split` hands back is written right away with one vectored write
    /// after its header, so it is neither copied nor queued. What the transport does not
    /// take is queued as usual.
    pub(super) fn encode_and_write(
        &mut self,
        message: Message,
        cx: &mut Context<'_>,
    ) -> Result<(), Error> {
        if self.unwritten_len() > 0 || self.conn.has_pending() {
            return self.encode_message(message);
        }
        let is_data = matches!(message, Message::Text(_) | Message::Binary(_));
        let result = self.conn.encode_split(message, &mut self.write_buf);
        self.note_state();
        let payload = result?;
        if is_data {
            self.note_data();
        }
        let Some(payload) = payload else {
            return Ok(());
        };

        let slices = [IoSlice::new(&self.write_buf), IoSlice::new(&payload)];
        let written = match Pin::new(&mut self.io).poll_write_vectored(cx, &slices) {
            Poll::Ready(Ok(written)) => written,
            // `poll_flush_writes` retries the write, and registers the waker or returns
            // the error from there.
            Poll::Ready(Err(_)) | Poll::Pending => {
                self.queue_split(payload);
                return Ok(());
            }
        };
        tracing::trace!(bytes = written, "wrote to transport");
        self.flush_needed = true;
        let head_len = self.write_buf.len();
        if written < head_len {
            self.write_buf.advance(written);
            self.queue_split(payload);
            return Ok(());
        }
        self.release_write_buf();
        let rest = payload.slice((written - head_len).min(payload.len())..);
        if !rest.is_empty() {
            self.write_chunks_len += rest.len();
            self.write_chunks.push_back(rest);
        }
        Ok(())
    }

    /// Queues the encoded bytes in the write buffer, which end with the header of
    /// `payload`, and then `payload`, behind the chunks already queued.
    fn queue_split(&mut self, payload: Bytes) {
        let head = mem::take(&mut self.write_buf).freeze();
        self.write_chunks_len += head.len() + payload.len();
        self.write_chunks.push_back(head);
        self.write_chunks.push_back(payload);
    }

    /// Empties the write buffer after it was written, keeping its memory only if small.
    fn release_write_buf(&mut self) {
        if self.write_buf.capacity() > WRITE_BUF_RETAIN {
            self.write_buf = BytesMut::new();
        } else {
            self.write_buf.clear();
        }
    }

    /// Records that a text or binary message moved, for the idle timeout. Without one the
    /// clock is not read.
    fn note_data(&mut self) {
        if self.timing.idle_timeout.is_some() {
            self.last_data = Instant::now();
        }
    }

    /// Moves automatic frames and queued messages into the write buffer while it is below
    /// its high-water mark. Above it, automatic pongs wait in the connection, which keeps
    /// at most 2 KiB of them.
    fn fill_write_buf(&mut self) {
        self.note_close_request();
        if self.conn.has_pending() && self.unwritten_len() < WRITE_BUF_HIGH_WATER {
            self.conn.write_pending(&mut self.write_buf);
        }
        self.note_state();
        while self.unwritten_len() < WRITE_BUF_HIGH_WATER
            && self.conn.state() == State::Open
            && !self.conn.is_failed()
        {
            let Some(message) = self.outbound.as_ref().and_then(|outbound| outbound.pop()) else {
                break;
            };
            self.encode_queued(message);
        }
    }

    fn encode_queued(&mut self, message: Message) {
        let is_close = matches!(message, Message::Close(_));
        let Err(err) = self.encode_message(message) else {
            return;
        };
        match err {
            Error::Send(SendError::Closed) => {}
            err if is_close => {
                // A close from `Sender::close` with a code that may not be sent: close
                // with 1011 instead so that the connection still ends.
                tracing::warn!(error = %err, "queued close frame is invalid, closing with 1011");
                let fallback = CloseFrame::new(CloseCode::INTERNAL_ERROR, "");
                let _ = self.encode_message(Message::Close(Some(fallback)));
            }
            err => tracing::debug!(error = %err, "queued message cannot be sent, skipped"),
        }
    }

    /// Starts the close timeout once a `Sender` has queued a close frame, before the frame
    /// reaches the write buffer. A write that makes no progress would otherwise hold that
    /// frame in the queue, and the connection open, indefinitely.
    fn note_close_request(&mut self) {
        if self.closing_since.is_some() {
            return;
        }
        let Some(outbound) = &self.outbound else {
            return;
        };
        if outbound.close_requested() {
            tracing::debug!("close frame queued through a sender, close timeout started");
            self.closing_since = Some(Instant::now());
            self.rearm_timer = true;
            self.ping_sent = None;
        }
    }

    /// Starts the close bookkeeping the first time the connection leaves the open state:
    /// the close timeout starts, keep-alive stops and the outbound queue is shut.
    fn note_state(&mut self) {
        if self.closing_since.is_some() {
            return;
        }
        if self.conn.state() == State::Open && !self.conn.is_failed() {
            return;
        }
        tracing::debug!(state = ?self.conn.state(), failed = self.conn.is_failed(), "websocket closing");
        self.closing_since = Some(Instant::now());
        self.rearm_timer = true;
        self.ping_sent = None;
        if let Some(outbound) = &self.outbound {
            outbound.shut();
        }
    }

    /// Writes the write buffer and flushes the transport. Used by `send`, `close` and the
    /// `Sink`.
    ///
    /// While the write waits, the deadlines of `poll_recv` apply as well (write timeout,
    /// pong timeout, close timeout, and the close timeout of a close queued through a
    /// `Sender`), so a peer that never reads cannot hold the caller forever. Returns the
    /// error that ended the connection, or [`Error::ConnectionClosed`] if it ended
    /// without one.
    pub(super) fn poll_flush_writes(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        for _ in 0..MAX_TIMER_ROUNDS {
            if self.done {
                return Poll::Ready(Err(Error::ConnectionClosed));
            }
            self.note_close_request();
            if self.conn.has_pending() {
                self.conn.write_pending(&mut self.write_buf);
            }
            self.note_state();
            if let Poll::Ready(result) = self.poll_write_buf(cx) {
                return Poll::Ready(result.map_err(Error::Io));
            }
            match self.poll_timers(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(Err(Error::ConnectionClosed)),
                Poll::Ready(Some(Err(err))) if self.done => return Poll::Ready(Err(err)),
                // The idle timeout queued a close frame and the connection goes on, so
                // another round writes it and arms the close timeout.
                Poll::Ready(Some(_)) => {}
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Writes `write_chunks` and the write buffer, then flushes the transport.
    fn poll_write_buf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.unwritten_len() > 0 {
            let allocated = self.write_buf.capacity();
            while self.unwritten_len() > 0 {
                let written = match self.poll_write_some(cx) {
                    Poll::Pending => {
                        if self.write_stalled_since.is_none() {
                            self.write_stalled_since = Some(Instant::now());
                            self.rearm_timer = true;
                        }
                        return Poll::Pending;
                    }
                    Poll::Ready(result) => result?,
                };
                if written == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                tracing::trace!(bytes = written, "wrote to transport");
                self.consume_written(written);
                self.write_stalled_since = None;
                self.flush_needed = true;
            }
            if allocated > WRITE_BUF_RETAIN {
                self.write_buf = BytesMut::new();
            } else {
                self.write_buf.clear();
            }
            self.write_chunks = VecDeque::new();
        }
        if self.flush_needed {
            ready!(Pin::new(&mut self.io).poll_flush(cx))?;
            self.flush_needed = false;
        }
        Poll::Ready(Ok(()))
    }

    /// Writes once from `write_chunks` and the write buffer, with one vectored write when
    /// there are chunks.
    fn poll_write_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.write_chunks.is_empty() {
            return Pin::new(&mut self.io).poll_write(cx, &self.write_buf);
        }
        let mut slices = [IoSlice::new(&[]); MAX_WRITE_SLICES];
        let mut count = 0;
        let buffers = self
            .write_chunks
            .iter()
            .map(|chunk| &chunk[..])
            .chain([&self.write_buf[..]]);
        for buffer in buffers.filter(|buffer| !buffer.is_empty()) {
            if count == MAX_WRITE_SLICES {
                break;
            }
            slices[count] = IoSlice::new(buffer);
            count += 1;
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count])
    }

    /// Removes `written` bytes from the front of `write_chunks` and then the write buffer.
    fn consume_written(&mut self, mut written: usize) {
        while written > 0 {
            let Some(chunk) = self.write_chunks.front_mut() else {
                self.write_buf.advance(written);
                return;
            };
            let consumed = written.min(chunk.len());
            chunk.advance(consumed);
            self.write_chunks_len -= consumed;
            written -= consumed;
            if chunk.is_empty() {
                self.write_chunks.pop_front();
            }
        }
    }

    /// Reads once from the transport.
    ///
    /// The payload of a large data frame is read straight into the connection's message
    /// buffer. Other bytes go into the read buffer. Without an allocated read buffer they
    /// land in a stack buffer instead and are decoded from there, so that waiting for data
    /// allocates nothing and a message that arrives whole is not copied an extra time.
    fn poll_read_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Read>> {
        if self.read_buf.is_empty() {
            if let Some(mut payload) = self.conn.payload_buf(MAX_READ_CHUNK) {
                // `read_buf` reads into the spare capacity without zeroing it first, and
                // is cancel safe: a pending read consumes nothing. The room may reach past
                // the frame end, so that a read that completes the frame usually comes up
                // short and tokio waits for readiness before reading again. `decode`
                // moves bytes of the next frame out of the message buffer.
                let read = std::pin::pin!(self.io.read_buf(&mut payload));
                return read.poll(cx).map_ok(Read::kept);
            }
            if self.conn.buffered() == 0 {
                return self.poll_read_scratch(cx);
            }
        }

        self.read_buf.reserve(READ_CHUNK);
        let mut limited = (&mut self.read_buf).limit(READ_CHUNK);
        let read = std::pin::pin!(self.io.read_buf(&mut limited));
        read.poll(cx).map_ok(Read::kept)
    }

    /// Reads into a stack buffer and decodes the first message from it. Bytes that the
    /// decode did not consume (the next frames, or an incomplete header or control frame)
    /// are copied into the read buffer.
    fn poll_read_scratch(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Read>> {
        let mut scratch = [MaybeUninit::<u8>::uninit(); READ_SCRATCH];
        let mut buf = ReadBuf::uninit(&mut scratch);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        let len = buf.filled().len();
        if len == 0 {
            return Poll::Ready(Ok(Read::Eof));
        }
        let filled = buf.filled_mut();
        let result = match self.conn.decode_slice(filled) {
            Ok((message, consumed)) => {
                let rest = &filled[consumed..];
                if !rest.is_empty() {
                    self.read_buf = BytesMut::from(rest);
                }
                Ok(message)
            }
            Err(err) => Err(err),
        };
        Poll::Ready(Ok(Read::Decoded(len, result)))
    }

    /// Handles the end of the peer's byte stream.
    fn on_eof(&mut self) -> RecvPoll {
        let state = self.conn.state();
        self.finish();
        if state == State::Open && !self.conn.is_failed() {
            tracing::debug!("peer closed the transport without a close frame");
            return Poll::Ready(Some(Err(Error::AbnormalClosure)));
        }
        tracing::debug!(?state, "peer closed the transport while closing");
        Poll::Ready(None)
    }

    fn on_read_error(&mut self, err: io::Error) -> RecvPoll {
        self.finish();
        if self.closing_since.is_some() {
            tracing::debug!(error = %err, "read failed while closing, connection ended");
            return Poll::Ready(None);
        }
        tracing::debug!(error = %err, "read from websocket transport failed");
        Poll::Ready(Some(Err(Error::Io(err))))
    }

    fn on_write_error(&mut self, err: io::Error) -> RecvPoll {
        self.finish();
        if self.closing_since.is_some() {
            tracing::debug!(error = %err, "write failed while closing, connection ended");
            return Poll::Ready(None);
        }
        tracing::debug!(error = %err, "write to websocket transport failed");
        Poll::Ready(Some(Err(Error::Io(err))))
    }

    /// Ends the transport once the close handshake completed or the connection failed.
    ///
    /// A server, or either side after a protocol fault, shuts down its write side (TCP
    /// FIN) first. A client after a clean close waits for the server to close TCP first
    /// (RFC 6455 section 7.1.1). Either way, incoming bytes are then read and discarded
    /// until the peer closes its side, bounded by the close timeout. Dropping a socket
    /// with unread received data makes the kernel send RST instead of FIN, and an RST can
    /// destroy the close frame before the peer reads it.
    fn poll_end_transport(&mut self, cx: &mut Context<'_>) -> RecvPoll {
        let shut_write_first = self.conn.role() == Role::Server || self.conn.is_failed();
        if shut_write_first && !self.write_shut {
            if let Err(err) = ready!(Pin::new(&mut self.io).poll_shutdown(cx)) {
                tracing::debug!(error = %err, "transport shutdown failed");
            }
            self.write_shut = true;
            self.read_buf = BytesMut::new();
            tracing::debug!(role = ?self.conn.role(), "write side shut down, waiting for the peer to close the transport");
        }

        for _ in 0..MAX_READS_PER_POLL {
            let mut scratch = [MaybeUninit::<u8>::uninit(); READ_SCRATCH];
            let mut buf = ReadBuf::uninit(&mut scratch);
            let result = ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf));
            match result {
                Ok(()) if buf.filled().is_empty() => {
                    tracing::debug!(role = ?self.conn.role(), "websocket closed, peer closed the transport");
                    self.finish();
                    return Poll::Ready(None);
                }
                Ok(()) => {
                    tracing::trace!(bytes = buf.filled().len(), "discarding bytes after close")
                }
                Err(err) => {
                    tracing::debug!(error = %err, "read failed after close, connection ended");
                    self.finish();
                    return Poll::Ready(None);
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Marks the connection as ended and releases what it holds.
    fn finish(&mut self) {
        self.done = true;
        self.timer = None;
        self.rearm_timer = true;
        self.write_stalled_since = None;
        self.read_buf = BytesMut::new();
        self.write_buf = BytesMut::new();
        self.write_chunks = VecDeque::new();
        self.write_chunks_len = 0;
        if let Some(outbound) = &self.outbound {
            outbound.shut();
        }
    }

    /// Handles expired deadlines and arms the timer for the next one. Returns `Ready` with
    /// the item for `recv` when a deadline ends the connection or must be reported.
    fn poll_timers(&mut self, cx: &mut Context<'_>) -> RecvPoll {
        if !self.rearm_timer {
            // The timer was armed for the earliest deadline, and no deadline moved earlier
            // since then, so none has passed while the timer (if any) has not fired.
            let Some(timer) = &mut self.timer else {
                return Poll::Pending;
            };
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        self.rearm_timer = false;
        for _ in 0..MAX_TIMER_ROUNDS {
            if let Some(item) = self.handle_deadlines(cx) {
                return Poll::Ready(item);
            }
            let Some(deadline) = self.next_deadline() else {
                return Poll::Pending;
            };
            let timer = self
                .timer
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            // The timer stays armed for an earlier deadline and is reset when that fires,
            // so that each received byte does not reset it.
            if timer.is_elapsed() || timer.deadline() > deadline {
                timer.as_mut().reset(deadline);
            }
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Acts on every deadline that has passed.
    fn handle_deadlines(&mut self, cx: &mut Context<'_>) -> Option<Option<Result<Message, Error>>> {
        let now = Instant::now();
        let timing = self.timing;

        if let Some(since) = self.closing_since {
            if !is_due(since, timing.close_timeout, now) {
                return None;
            }
            // `Open` here means a close queued through a `Sender` never got out.
            let waiting_for_peer = matches!(self.conn.state(), State::Open | State::CloseSent)
                && !self.conn.is_failed();
            self.finish();
            if waiting_for_peer {
                tracing::debug!(timeout = ?timing.close_timeout, "peer sent no close frame within the close timeout, dropping the transport");
                return Some(Some(Err(Error::CloseTimeout)));
            }
            tracing::debug!(timeout = ?timing.close_timeout, "transport did not end within the close timeout, dropping it");
            return Some(None);
        }

        if let Some(stalled) = self.write_stalled_since
            && let Some(limit) = timing.write_timeout
            && is_due(stalled, limit, now)
        {
            tracing::debug!(
                timeout = ?limit,
                unwritten = self.unwritten_len(),
                "peer accepted no bytes within the write timeout, dropping the connection"
            );
            self.finish();
            return Some(Some(Err(Error::WriteTimeout)));
        }

        if let Some(sent) = self.ping_sent
            && is_due(sent, timing.pong_timeout, now)
        {
            tracing::debug!(timeout = ?timing.pong_timeout, "no reply to ping, dropping the connection");
            // Best effort: the peer is presumed dead, so do not wait for the shutdown.
            let _ = Pin::new(&mut self.io).poll_shutdown(cx);
            self.finish();
            return Some(Some(Err(Error::PongTimeout)));
        }

        if let Some(idle) = timing.idle_timeout
            && is_due(self.last_data, idle, now)
        {
            tracing::debug!(timeout = ?idle, "connection idle, closing with 1001");
            let frame = CloseFrame::new(CloseCode::GOING_AWAY, IDLE_REASON);
            if let Err(err) = self.encode_message(Message::Close(Some(frame))) {
                tracing::debug!(error = %err, "cannot send idle close frame");
            }
            let _ = self.poll_write_buf(cx);
            return Some(Some(Err(Error::IdleTimeout)));
        }

        if let Some(interval) = timing.ping_interval
            && self.ping_sent.is_none()
            && is_due(self.last_received, interval, now)
        {
            match self.encode_message(Message::Ping(bytes::Bytes::new())) {
                Ok(()) => {
                    tracing::trace!("sent keep-alive ping");
                    self.ping_sent = Some(now);
                }
                Err(err) => tracing::debug!(error = %err, "cannot send keep-alive ping"),
            }
        }
        None
    }

    /// Returns the earliest deadline that the timer must wake up for.
    fn next_deadline(&self) -> Option<Instant> {
        let timing = &self.timing;
        if let Some(since) = self.closing_since {
            return since.checked_add(timing.close_timeout);
        }

        let keepalive = match (self.ping_sent, timing.ping_interval) {
            (Some(sent), _) => sent.checked_add(timing.pong_timeout),
            (None, Some(interval)) => self.last_received.checked_add(interval),
            (None, None) => None,
        };
        let idle = timing
            .idle_timeout
            .and_then(|idle| self.last_data.checked_add(idle));
        let write = self
            .write_stalled_since
            .zip(timing.write_timeout)
            .and_then(|(stalled, limit)| stalled.checked_add(limit));
        [keepalive, idle, write].into_iter().flatten().min()
    }
}

/// Returns `true` once `timeout` has passed since `start`. A timeout too large to add to
/// the clock never passes.
fn is_due(start: Instant, timeout: Duration, now: Instant) -> bool {
    start
        .checked_add(timeout)
        .is_some_and(|deadline| now >= deadline)
}

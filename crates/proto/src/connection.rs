//! The per-connection state machine: message assembly, control frames, the close handshake.

use std::mem;
use std::ops::{Deref, DerefMut};

use bytes::buf::Limit;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use rand::Rng;

use crate::deflate::{Deflater, Inflater, PerMessageDeflate};
use crate::frame::{self, FrameHeader, OpCode};
use crate::mask::apply_mask;
use crate::utf8::{Utf8Prefix, check_utf8_prefix};
use crate::{CloseCode, CloseFrame, Message, ProtocolError, Role, SendError, Utf8Bytes};

/// Default for [`Limits::max_frame_size`] and [`Limits::max_message_size`]: 16 MiB.
const DEFAULT_MAX_SIZE: usize = 16 << 20;

/// Smallest capacity the message buffer grows to while a frame payload streams in, so that
/// small reads do not cause a reallocation each.
const MIN_BUFFER_GROWTH: usize = 8 << 10;

/// Largest final frame whose whole payload length the message buffer reserves when its
/// first payload bytes arrive (or are about to be read into it), instead of growing in
/// steps that copy the received part each time. A peer that declares such a frame and
/// then sends nothing more keeps this much memory allocated, as it could by sending it.
const MAX_EAGER_FRAME_CAPACITY: usize = 1 << 20;

/// Maximum room past the end of a partly received frame that the message buffer
/// reserves and [`Connection::payload_buf`] offers. A read that requests more bytes than
/// the frame lacks and returns fewer shows that the transport has nothing more, so the
/// I/O layer waits for readiness instead of issuing one more read that would fail with
/// `WouldBlock`. In `pylon serve`'s echo of 64 KiB messages that cut the reads per
/// message from 3 to 2, as many as fastwebsockets needs.
const MAX_PAST_FRAME_ROOM: usize = 4 << 10;

/// Maximum bytes of encoded automatic pongs that wait for [`Connection::write_pending`].
/// Past it the oldest pongs are dropped, which RFC 6455 section 5.5.3 allows because an
/// endpoint may send a pong for the most recent ping only. 2 KiB contains 15 pongs with
/// the maximum payload of 125 bytes, masked.
const MAX_PENDING_PONG_BYTES: usize = 2 << 10;

/// Maximum payload of a control frame (RFC 6455 section 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// Smallest payload that [`Connection::encode_split`] hands back instead of copying.
/// Smaller payloads are copied, so that header and payload fit a write buffer small
/// enough for the I/O layer to keep between messages. In `pylon serve`'s echo (100
/// connections x 1 KiB), handing back the 1 KiB payloads and writing each with its
/// header in one vectored write cut the instructions per message from 4,825 to 4,257
/// (callgrind).
const MIN_SPLIT_PAYLOAD: usize = 128;

/// Size limits for received data, checked from frame headers before any payload is
/// buffered. Exceeding one fails the connection with close code 1009.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Maximum payload of one received frame, in bytes. Default 16 MiB. A frame of a
    /// compressed message may be one eighth plus 64 bytes longer, because compressing
    /// incompressible data makes it slightly longer.
    pub max_frame_size: usize,
    /// Maximum payload of one received message, all its fragments together, in bytes.
    /// Default 16 MiB. The message buffer never grows above this, except by one byte while
    /// a compressed message is decompressed, which shows that the output exceeds it.
    pub max_message_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size: DEFAULT_MAX_SIZE,
            max_message_size: DEFAULT_MAX_SIZE,
        }
    }
}

/// Settings of a [`Connection`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Limits for received frames and messages.
    pub limits: Limits,
    /// Whether a received ping queues a pong with the same payload. Default `true`.
    /// The ping is returned by [`Connection::decode`] either way.
    pub auto_pong: bool,
    /// Maximum payload of one sent data frame, in bytes. A longer message is split into
    /// fragments. `None`, the default, sends every message as one frame. `Some(0)` is
    /// treated as `Some(1)`. With compression, the limit applies to the compressed bytes.
    pub max_send_frame_size: Option<usize>,
    /// permessage-deflate as negotiated in the handshake, or `None`, the default, for no
    /// compression. [`crate::handshake::Accept::deflate`] and
    /// [`crate::handshake::Negotiated::deflate`] contain the value to set here.
    pub deflate: Option<PerMessageDeflate>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            limits: Limits::default(),
            auto_pong: true,
            max_send_frame_size: None,
            deflate: None,
        }
    }
}

/// Progress of the close handshake (RFC 6455 section 7).
///
/// A close frame counts as sent once it is written into an output buffer by
/// [`Connection::encode`] or [`Connection::write_pending`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum State {
    /// No close frame was sent or received.
    Open,
    /// This endpoint sent a close frame and waits for the peer's.
    CloseSent,
    /// The peer sent a close frame. The reply waits in the pending frames.
    CloseReceived,
    /// Both endpoints sent a close frame.
    Closed,
}

/// Kind of the data message being assembled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DataKind {
    Text,
    Binary,
}

/// A data frame whose header was consumed and whose payload is still arriving.
#[derive(Clone, Copy, Debug)]
struct PayloadProgress {
    /// Payload bytes still to come.
    remaining: u64,
    /// Payload bytes already received, which is the masking key phase.
    received: usize,
    mask: Option<[u8; 4]>,
    fin: bool,
}

/// Sans-IO state machine for one WebSocket connection in either role.
///
/// It has no I/O handle and no clock. [`Connection::decode`] takes received bytes,
/// [`Connection::encode`] and [`Connection::write_pending`] produce bytes to send. While no
/// message is partly received and nothing is pending, it owns no heap allocation, except
/// for the compressor and decompressor of permessage-deflate where context takeover keeps
/// them between messages.
///
/// With [`Config::deflate`] set, data messages of at least
/// [`PerMessageDeflate::min_message_size`] bytes are sent compressed, and received
/// messages with RSV1 set are decompressed as their payload arrives. The decompressed size
/// is checked against [`Limits::max_message_size`] while it grows.
#[derive(Debug)]
pub struct Connection {
    role: Role,
    config: Config,
    state: State,
    /// Set after a protocol fault. Decoding stops and nothing but the fault close is sent.
    failed: bool,
    /// Automatic close frame waiting for `write_pending`: `Some(None)` has an empty body.
    queued_close: Option<Option<CloseCode>>,
    /// Encoded automatic pongs waiting for `write_pending`.
    pending_pongs: BytesMut,
    /// Data message being assembled, if any.
    message_kind: Option<DataKind>,
    /// Data frame whose payload is arriving, if any.
    payload: Option<PayloadProgress>,
    /// Length of `message` when [`Connection::payload_buf`] handed it out. The payload
    /// bytes the caller appended after it are unmasked and checked by the next `decode`.
    /// A `u32` keeps the connection small, so messages past 4 GiB are copied instead.
    payload_buf_start: Option<u32>,
    /// Unmasked payload of the message being assembled.
    message: BytesMut,
    /// Bytes of later frames that a read into [`Connection::payload_buf`] appended past
    /// the frame end and that [`Connection::decode_slice`] has not consumed yet. They
    /// come before its next input. Boxed because it is rarely used.
    past_input: Option<Box<BytesMut>>,
    /// Length of the prefix of `message` that is checked, complete UTF-8 (text only).
    utf8_checked: usize,
    /// The message being assembled had RSV1 set on its first frame, so its payload is
    /// compressed.
    message_compressed: bool,
    /// Compressor of sent messages, created on first use and dropped after each message
    /// without context takeover. Boxed because the zlib-rs stream state is large and a
    /// connection without compression needs no room for it.
    deflater: Option<Box<Deflater>>,
    /// Decompressor of received messages, created on first use and dropped after each
    /// message without context takeover. Boxed like `deflater`.
    inflater: Option<Box<Inflater>>,
}

impl Connection {
    /// Creates a connection in state [`State::Open`], for use after a successful handshake.
    pub fn new(role: Role, config: Config) -> Self {
        Connection {
            role,
            config,
            state: State::Open,
            failed: false,
            queued_close: None,
            pending_pongs: BytesMut::new(),
            message_kind: None,
            payload: None,
            payload_buf_start: None,
            message: BytesMut::new(),
            past_input: None,
            utf8_checked: 0,
            message_compressed: false,
            deflater: None,
            inflater: None,
        }
    }

    /// Returns the role given to [`Connection::new`].
    pub fn role(&self) -> Role {
        self.role
    }

    /// Returns the configuration given to [`Connection::new`].
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Returns the progress of the close handshake.
    pub fn state(&self) -> State {
        self.state
    }

    /// Returns `true` when the caller should close the transport.
    ///
    /// That is the case once both close frames were exchanged and the pending frames were
    /// written, or once the connection failed on a protocol fault and its close frame was
    /// written (RFC 6455 section 7.1.7). A server closes the TCP connection right away
    /// (RFC 6455 section 7.1.1). A client should wait for the server to close it, with a
    /// timeout in the I/O layer.
    pub fn is_closed(&self) -> bool {
        (self.state == State::Closed || self.failed) && !self.has_pending()
    }

    /// Returns `true` if the connection failed on a protocol fault.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Returns the number of payload bytes in the message buffer: 0 for an idle
    /// connection, which has no buffer.
    pub fn buffered(&self) -> usize {
        self.message.len()
    }

    /// Returns the number of payload bytes of the data frame being received that have not
    /// arrived yet, or 0 between frames. An I/O layer can size its next read with it.
    pub fn pending_payload_len(&self) -> u64 {
        self.payload.map_or(0, |progress| progress.remaining)
    }

    /// Returns `true` if automatic frames wait for [`Connection::write_pending`].
    pub fn has_pending(&self) -> bool {
        !self.pending_pongs.is_empty() || self.queued_close.is_some()
    }

    /// Decodes received bytes from `src`, consuming the bytes it uses, and returns the next
    /// whole message, or `Ok(None)` when more bytes are needed.
    ///
    /// Call it again after each message, because `src` may contain more. Data frame
    /// payloads are unmasked and moved from `src` into the message buffer as they arrive.
    /// So after `Ok(None)`, `src` contains at most an incomplete header or an incomplete
    /// control frame (at most 139 bytes). A text message fails at its first invalid UTF-8
    /// byte, even when the rest of its frame has not arrived.
    ///
    /// - Ping: a pong with the same payload is queued if [`Config::auto_pong`] is set,
    ///   and the ping is returned.
    /// - Pong: returned.
    /// - Close: returned, and a reply echoing the status code (with an empty body if the
    ///   received one was empty) is queued unless this endpoint already sent a close
    ///   (RFC 6455 section 5.5.1). Bytes after the peer's close are discarded.
    ///
    /// Data frames received after this endpoint sent a close are still returned, because
    /// the peer may send them before it receives the close.
    ///
    /// # Errors
    ///
    /// On a protocol fault, returns the [`ProtocolError`], queues a close frame with
    /// [`ProtocolError::close_code`] unless a close was already sent, and releases the
    /// message buffer. After that, every call discards `src` and returns `Ok(None)`.
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, ProtocolError> {
        if let Some(mut joined) = self.take_past_input() {
            // Bytes read past the frame into the room of `payload_buf` came before `src`.
            joined.extend_from_slice(src);
            *src = joined;
        }
        self.decode_input(src)
    }

    /// Decodes received bytes from a borrowed buffer, as [`Connection::decode`] does, and
    /// returns the message (or `None` when more bytes are needed) with the number of bytes
    /// at the front of `src` that were consumed.
    ///
    /// The caller keeps the bytes after the consumed ones and passes them first next time.
    /// An I/O layer can read into a stack buffer and decode from there, so that a message
    /// that arrives whole is not copied into a heap read buffer first. Consumed bytes may
    /// be changed in place (unmasked). Bytes after them are left unchanged.
    ///
    /// Bytes that a read into [`Connection::payload_buf`] appended past the frame end are
    /// decoded before `src`. They are kept inside the connection until consumed, and the
    /// count returned covers only bytes of `src`.
    ///
    /// # Errors
    ///
    /// As for [`Connection::decode`]. After an error, all of `src` counts as consumed.
    pub fn decode_slice(
        &mut self,
        src: &mut [u8],
    ) -> Result<(Option<Message>, usize), ProtocolError> {
        let Some(mut joined) = self.take_past_input() else {
            let len = src.len();
            let mut input = SliceInput { rest: src };
            let message = self.decode_input(&mut input)?;
            return Ok((message, len - input.rest.len()));
        };
        // Rare: decode a copy of the earlier bytes followed by `src`.
        let past_len = joined.len();
        joined.extend_from_slice(src);
        let joined_len = joined.len();
        let message = self.decode_input(&mut joined)?;
        let consumed = joined_len - joined.len();
        if consumed >= past_len {
            return Ok((message, consumed - past_len));
        }
        // The earlier bytes that were not consumed stay first in line.
        joined.truncate(past_len - consumed);
        self.past_input = Some(Box::new(joined));
        Ok((message, 0))
    }

    /// Takes the bytes that must be decoded before the next input: those left over by
    /// [`Connection::decode_slice`], followed by those that a read into
    /// [`Connection::payload_buf`] appended past the frame end.
    fn take_past_input(&mut self) -> Option<BytesMut> {
        let left_over = self.past_input.take().map(|bytes| *bytes);
        match (left_over, self.take_past_frame()) {
            (Some(mut left_over), Some(past_frame)) => {
                left_over.extend_from_slice(&past_frame);
                Some(left_over)
            }
            (left_over, past_frame) => left_over.or(past_frame),
        }
    }

    fn decode_input<I: Input>(&mut self, src: &mut I) -> Result<Option<Message>, ProtocolError> {
        if self.failed || matches!(self.state, State::CloseReceived | State::Closed) {
            if !src.is_empty() {
                tracing::trace!(bytes = src.len(), "discarding bytes after close");
                src.consume_all();
            }
            return Ok(None);
        }
        match self.decode_inner(src) {
            Ok(message) => Ok(message),
            Err(err) => {
                self.fail(&err);
                src.consume_all();
                Err(err)
            }
        }
    }

    fn decode_inner<I: Input>(&mut self, src: &mut I) -> Result<Option<Message>, ProtocolError> {
        if let Some(start) = self.payload_buf_start.take()
            && let Some(progress) = self.payload
        {
            let start = start as usize;
            let appended = self.message.len() - start;
            if self.account_payload(progress, start, appended)? && progress.fin {
                return Ok(Some(self.take_message()));
            }
        }
        loop {
            if let Some(progress) = self.payload {
                if !self.read_payload(progress, src)? {
                    return Ok(None);
                }
                if progress.fin {
                    return Ok(Some(self.take_message()));
                }
                continue;
            }

            let Some((header, header_len)) = frame::decode_header(src)? else {
                return Ok(None);
            };
            self.check_header(&header)?;
            if header.opcode.is_control() {
                // Control frames are short, so they wait in `src` until they are complete.
                let payload_len = header.payload_len as usize;
                if src.len() < header_len + payload_len {
                    return Ok(None);
                }
                src.consume(header_len);
                let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
                let payload = &mut payload[..payload_len];
                payload.copy_from_slice(&src[..payload_len]);
                src.consume(payload_len);
                if let Some(key) = header.mask {
                    apply_mask(payload, key, 0);
                }
                return self.on_control(header.opcode, payload).map(Some);
            }

            self.start_data_frame(&header)?;
            src.consume(header_len);
            self.payload = Some(PayloadProgress {
                remaining: header.payload_len,
                received: 0,
                mask: header.mask,
                fin: header.fin,
            });
        }
    }

    /// Checks the header fields whose validity depends on the connection.
    fn check_header(&self, header: &FrameHeader) -> Result<(), ProtocolError> {
        // Only permessage-deflate defines a reserved bit, RSV1 (RFC 6455 section 5.2).
        if header.rsv2 || header.rsv3 || (header.rsv1 && self.config.deflate.is_none()) {
            return Err(ProtocolError::ReservedBits);
        }
        // RSV1 marks a compressed message on its first frame only (RFC 7692 section 6).
        if header.rsv1 && header.opcode.is_control() {
            return Err(ProtocolError::CompressedControlFrame);
        }
        if header.rsv1 && header.opcode == OpCode::CONTINUATION {
            return Err(ProtocolError::CompressedContinuation);
        }
        match (self.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedClientFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedServerFrame),
            _ => {}
        }
        let compressed =
            header.rsv1 || (header.opcode == OpCode::CONTINUATION && self.message_compressed);
        let max = if compressed {
            compressed_frame_limit(self.config.limits.max_frame_size)
        } else {
            self.config.limits.max_frame_size
        };
        if header.payload_len > max as u64 {
            return Err(ProtocolError::FrameTooLarge {
                size: header.payload_len,
                max,
            });
        }
        Ok(())
    }

    /// Applies the fragmentation rules (RFC 6455 section 5.4) and the message size limit
    /// to the header of a data frame.
    fn start_data_frame(&mut self, header: &FrameHeader) -> Result<(), ProtocolError> {
        if header.opcode == OpCode::CONTINUATION {
            if self.message_kind.is_none() {
                return Err(ProtocolError::UnexpectedContinuation);
            }
        } else if self.message_kind.is_some() {
            return Err(ProtocolError::ExpectedContinuation);
        } else {
            self.message_compressed = header.rsv1;
        }

        // The decompressed size of a compressed message is checked as it grows instead.
        if !self.message_compressed {
            let size = self.message.len() as u64 + header.payload_len;
            let max = self.config.limits.max_message_size;
            if size > max as u64 {
                return Err(ProtocolError::MessageTooLarge { size, max });
            }
        }

        if header.opcode == OpCode::TEXT {
            self.message_kind = Some(DataKind::Text);
            self.utf8_checked = 0;
        } else if header.opcode == OpCode::BINARY {
            self.message_kind = Some(DataKind::Binary);
        }
        Ok(())
    }

    /// Moves available payload bytes of the current data frame from `src` into the message
    /// buffer. Returns `true` when the frame is complete.
    fn read_payload<I: Input>(
        &mut self,
        progress: PayloadProgress,
        src: &mut I,
    ) -> Result<bool, ProtocolError> {
        if self.message_compressed {
            return self.read_compressed_payload(progress, src);
        }
        // `remaining` fits in usize once it is at most `src.len()`.
        let count = progress.remaining.min(src.len() as u64) as usize;
        let start = self.message.len();
        if count > 0 {
            let arriving = (count as u64) < progress.remaining;
            self.reserve_message(count, progress.remaining, progress.fin, arriving);
            self.message.extend_from_slice(&src[..count]);
            src.consume(count);
        }
        self.account_payload(progress, start, count)
    }

    /// Unmasks and checks the `count` payload bytes of the current data frame that were
    /// appended to the message buffer at `start`. Returns `true` when the frame is
    /// complete.
    fn account_payload(
        &mut self,
        mut progress: PayloadProgress,
        start: usize,
        count: usize,
    ) -> Result<bool, ProtocolError> {
        assert!(
            count as u64 <= progress.remaining,
            "{count} payload bytes were appended, but only {} remain in the frame",
            progress.remaining
        );
        if count > 0 {
            if let Some(key) = progress.mask {
                apply_mask(&mut self.message[start..], key, progress.received);
            }
            progress.received += count;
            progress.remaining -= count as u64;
        }

        let complete = progress.remaining == 0;
        if self.message_kind == Some(DataKind::Text) && (count > 0 || complete) {
            self.check_text(complete && progress.fin)?;
        }
        self.payload = if complete { None } else { Some(progress) };
        Ok(complete)
    }

    /// Returns the message buffer, with room for up to `max` more payload bytes of the
    /// data frame being received, so that the caller can read them from the transport
    /// straight into it and save a copy.
    ///
    /// When the room reaches the end of the frame, it may go on past it by up to 4 KiB
    /// where the buffer has the capacity, which stays within
    /// [`Limits::max_message_size`]. A read into it then returns fewer bytes than
    /// requested when the frame's last bytes are all the transport has. The next
    /// [`Connection::decode`] call unmasks and checks the bytes appended to it, before it
    /// looks at its `src`, and puts bytes appended past the frame end in front of `src`.
    /// Returns `None` between frames, for a compressed message and after a close or
    /// fault: those bytes must go through `decode`. The room follows the
    /// growth rule of the message buffer, so it is at most twice the payload received so
    /// far plus `max`.
    pub fn payload_buf(&mut self, max: usize) -> Option<Limit<&mut BytesMut>> {
        let progress = self.payload?;
        if self.failed || self.message_compressed {
            return None;
        }
        let start = match self.payload_buf_start {
            Some(start) => start as usize,
            None => {
                let start = self.message.len();
                self.payload_buf_start = Some(u32::try_from(start).ok()?);
                start
            }
        };
        // Bytes appended since the last `decode` count against the frame too. They can
        // reach past its end when an earlier read filled the room after it, and then
        // nothing of the frame is left to read.
        let appended = (self.message.len() - start) as u64;
        let frame_rest = progress.remaining.saturating_sub(appended);
        // `count` fits in usize because it is at most `max`.
        let count = frame_rest.min(max as u64) as usize;
        if count == 0 {
            return None;
        }
        self.reserve_message(count, frame_rest, progress.fin, true);
        let mut room = count;
        if count as u64 == frame_rest {
            // The room may reach past the frame end, as far as the buffer has capacity.
            let spare = self.message.capacity() - self.message.len();
            room = spare.clamp(count, count + MAX_PAST_FRAME_ROOM);
        }
        Some((&mut self.message).limit(room))
    }

    /// Takes the bytes that a read into [`Connection::payload_buf`] appended past the end
    /// of the current frame. They belong to the next frame.
    fn take_past_frame(&mut self) -> Option<BytesMut> {
        let start = self.payload_buf_start? as usize;
        let progress = self.payload?;
        // `payload_buf` handed out room for at most `remaining` bytes plus the extra room,
        // so the frame end lies within the buffer's capacity and fits in usize.
        let frame_end = start + progress.remaining as usize;
        if self.message.len() <= frame_end {
            return None;
        }
        let past = BytesMut::from(&self.message[frame_end..]);
        self.message.truncate(frame_end);
        Some(past)
    }

    /// Ensures room for `incoming` more bytes in the message buffer.
    ///
    /// A final frame of at most [`MAX_EAGER_FRAME_CAPACITY`] gets room for its whole
    /// declared length at once. While more of it is `arriving` than `incoming` brings, it
    /// also gets the room past its end that [`past_frame_room`] returns. Otherwise the
    /// buffer grows to twice the received size, and the growth stops at the end of a final
    /// frame plus that room, so a single-frame message takes few allocations. Inside a
    /// fragmented message the final size is unknown, so the growth stops at
    /// [`Limits::max_message_size`] instead, which keeps many small fragments from copying
    /// the message once per fragment.
    fn reserve_message(
        &mut self,
        incoming: usize,
        frame_remaining: u64,
        fin: bool,
        arriving: bool,
    ) {
        let len = self.message.len();
        let needed = len + incoming;
        let capacity = self.message.capacity();
        if capacity >= needed {
            return;
        }
        // The header check kept the message within the limit, so this fits in usize.
        let frame_end = len + frame_remaining as usize;
        let max_message_size = self.config.limits.max_message_size;
        let max_capacity = if fin {
            frame_end + past_frame_room(frame_end, max_message_size)
        } else {
            max_message_size
        };
        if fin && frame_end <= MAX_EAGER_FRAME_CAPACITY {
            // Growing in steps would copy the received part of the payload each time. A
            // frame that is still arriving gets room past its end for `payload_buf`.
            let room = if arriving {
                past_frame_room(frame_end, max_message_size)
            } else {
                0
            };
            self.allocate_message(frame_end + room);
            return;
        }
        let target = (capacity * 2)
            .max(needed.saturating_mul(2))
            .max(MIN_BUFFER_GROWTH)
            .min(max_capacity)
            .max(needed);
        self.allocate_message(target);
    }

    /// Moves the message buffer into an allocation of exactly `capacity` bytes.
    fn allocate_message(&mut self, capacity: usize) {
        if self.message.is_empty() {
            self.message = BytesMut::with_capacity(capacity);
        } else {
            self.message = grow_exact(mem::take(&mut self.message), capacity);
        }
    }

    /// Checks the unchecked tail of a text message. At the end of the message an
    /// incomplete sequence is invalid too.
    fn check_text(&mut self, message_end: bool) -> Result<(), ProtocolError> {
        match check_utf8_prefix(&self.message[self.utf8_checked..]) {
            Utf8Prefix::Valid(count) => {
                self.utf8_checked += count;
                if message_end && self.utf8_checked != self.message.len() {
                    return Err(ProtocolError::InvalidUtf8);
                }
                Ok(())
            }
            Utf8Prefix::Invalid => Err(ProtocolError::InvalidUtf8),
        }
    }

    /// Hands out the assembled message and releases the buffer.
    fn take_message(&mut self) -> Message {
        let data = mem::take(&mut self.message).freeze();
        self.utf8_checked = 0;
        self.message_compressed = false;
        match self.message_kind.take() {
            Some(DataKind::Text) => {
                // SAFETY: `check_text` verified the whole message when its last frame ended.
                Message::Text(unsafe { Utf8Bytes::from_bytes_unchecked(data) })
            }
            Some(DataKind::Binary) | None => Message::Binary(data),
        }
    }

    /// Handles a complete, unmasked control frame.
    fn on_control(&mut self, opcode: OpCode, payload: &[u8]) -> Result<Message, ProtocolError> {
        match opcode {
            OpCode::PING => {
                let payload = Bytes::copy_from_slice(payload);
                if self.config.auto_pong && !self.close_pending_or_sent() {
                    self.queue_pong(&payload);
                }
                Ok(Message::Ping(payload))
            }
            OpCode::PONG => Ok(Message::Pong(Bytes::copy_from_slice(payload))),
            _ => {
                let frame = parse_close_payload(payload)?;
                self.on_close_received(frame.as_ref().map(|frame| frame.code));
                Ok(Message::Close(frame))
            }
        }
    }

    fn on_close_received(&mut self, code: Option<CloseCode>) {
        // A message the close interrupted will never complete, and no data follows.
        self.release_message();
        self.inflater = None;
        self.state = match self.state {
            State::CloseSent => State::Closed,
            _ => {
                self.queued_close = Some(code);
                State::CloseReceived
            }
        };
    }

    fn queue_pong(&mut self, payload: &[u8]) {
        let mut pongs = mem::take(&mut self.pending_pongs);
        self.write_frame(&mut pongs, true, OpCode::PONG, payload);
        while pongs.len() > MAX_PENDING_PONG_BYTES {
            pongs.advance(self.pong_frame_len(pongs[1]));
        }
        self.pending_pongs = pongs;
    }

    /// Returns the encoded length of a pong that this connection wrote, from the second
    /// byte of its header. A pong payload is at most 125 bytes, so it uses the 7-bit
    /// length form, and only a client masks it.
    fn pong_frame_len(&self, second_byte: u8) -> usize {
        let mask_len = if self.role == Role::Client { 4 } else { 0 };
        2 + mask_len + usize::from(second_byte & 0x7F)
    }

    fn close_pending_or_sent(&self) -> bool {
        self.queued_close.is_some() || matches!(self.state, State::CloseSent | State::Closed)
    }

    fn release_message(&mut self) {
        self.message = BytesMut::new();
        self.payload_buf_start = None;
        self.message_kind = None;
        self.payload = None;
        self.utf8_checked = 0;
        self.message_compressed = false;
    }

    /// Fails the connection (RFC 6455 section 7.1.7): stops decoding and queues a close
    /// frame with the fault's code unless a close was already sent.
    fn fail(&mut self, err: &ProtocolError) {
        tracing::debug!(error = %err, code = err.close_code().0, "websocket protocol fault");
        self.failed = true;
        self.release_message();
        self.past_input = None;
        self.inflater = None;
        self.deflater = None;
        self.pending_pongs = BytesMut::new();
        if !matches!(self.state, State::CloseSent | State::Closed) {
            self.queued_close = Some(Some(err.close_code()));
        }
    }

    /// Moves the queued automatic frames (pongs, the close reply or the fault close) into
    /// `dst`, and releases the queue's buffer.
    pub fn write_pending(&mut self, dst: &mut BytesMut) {
        let pongs = mem::take(&mut self.pending_pongs);
        if !pongs.is_empty() && !matches!(self.state, State::CloseSent | State::Closed) {
            dst.extend_from_slice(&pongs);
        }
        if let Some(code) = self.queued_close.take() {
            let code_bytes = code.map(|code| code.0.to_be_bytes());
            let payload = code_bytes.as_ref().map_or(&[][..], |bytes| &bytes[..]);
            self.write_frame(dst, true, OpCode::CLOSE, payload);
            self.on_close_sent();
        }
    }

    fn on_close_sent(&mut self) {
        // No data message follows a close frame.
        self.deflater = None;
        self.state = match self.state {
            State::CloseReceived | State::Closed => State::Closed,
            State::Open | State::CloseSent => State::CloseSent,
        };
    }

    /// Encodes `msg` into `dst` as one frame, or as fragments of at most
    /// [`Config::max_send_frame_size`] bytes for a data message. As a client every frame is
    /// masked with a fresh random key (RFC 6455 section 5.3).
    ///
    /// With permessage-deflate negotiated, a text or binary message of at least
    /// [`PerMessageDeflate::min_message_size`] bytes is compressed, and RSV1 is set on its
    /// first frame. A message whose compressed form is not shorter is sent uncompressed,
    /// and the compressor is then dropped so that its window matches what the peer saw.
    ///
    /// Sending a close frame moves the state to [`State::CloseSent`], or to
    /// [`State::Closed`] if the peer's close was received; it replaces a queued automatic
    /// close reply.
    ///
    /// # Errors
    ///
    /// - [`SendError::Closed`] after a close frame was sent, after the peer's close was
    ///   received (except for the close reply itself), or after a protocol fault.
    /// - [`SendError::ControlTooLong`] for a ping or pong payload above 125 bytes.
    /// - [`SendError::InvalidCloseCode`] for a code that [`CloseCode::is_sendable`] rejects.
    /// - [`SendError::CloseReasonTooLong`] for a reason above 123 bytes.
    ///
    /// On error nothing is written.
    pub fn encode(&mut self, msg: Message, dst: &mut BytesMut) -> Result<(), SendError> {
        if self.failed || matches!(self.state, State::CloseSent | State::Closed) {
            return Err(SendError::Closed);
        }
        if self.state == State::CloseReceived && !matches!(msg, Message::Close(_)) {
            return Err(SendError::Closed);
        }
        match msg {
            Message::Text(text) => self.write_data(dst, OpCode::TEXT, text.as_bytes()),
            Message::Binary(data) => self.write_data(dst, OpCode::BINARY, &data),
            Message::Ping(data) | Message::Pong(data) if data.len() > MAX_CONTROL_PAYLOAD => {
                return Err(SendError::ControlTooLong(data.len()));
            }
            Message::Ping(data) => self.write_frame(dst, true, OpCode::PING, &data),
            Message::Pong(data) => self.write_frame(dst, true, OpCode::PONG, &data),
            Message::Close(None) => self.write_close(dst, &[]),
            Message::Close(Some(frame)) => {
                let payload = close_payload(&frame)?;
                self.write_close(dst, &payload);
            }
        }
        Ok(())
    }

    /// Encodes `msg` like [`Connection::encode`], except that the payload of a large data
    /// message that goes out as a single unmasked, uncompressed frame is not copied.
    ///
    /// In that case only the frame header is written into `dst`, and the payload is
    /// returned: the caller must send it right after the bytes in `dst`, before anything
    /// encoded later. That applies to a server's text or binary message of at least
    /// 128 bytes without permessage-deflate and without fragmentation. Otherwise the whole
    /// message is written into `dst` and `Ok(None)` is returned.
    ///
    /// # Errors
    ///
    /// The errors of [`Connection::encode`]. On error nothing is written.
    pub fn encode_split(
        &mut self,
        msg: Message,
        dst: &mut BytesMut,
    ) -> Result<Option<Bytes>, SendError> {
        let (opcode, payload) = match msg {
            Message::Text(text) => (OpCode::TEXT, text.into_bytes()),
            Message::Binary(data) => (OpCode::BINARY, data),
            control => return self.encode(control, dst).map(|()| None),
        };
        // The checks of `encode` for a data message.
        if self.failed || self.state != State::Open {
            return Err(SendError::Closed);
        }

        let fits_one_frame = self
            .config
            .max_send_frame_size
            .is_none_or(|size| payload.len() <= size.max(1));
        let splittable = self.role == Role::Server
            && self.config.deflate.is_none()
            && fits_one_frame
            && payload.len() >= MIN_SPLIT_PAYLOAD;
        if !splittable {
            self.write_data(dst, opcode, &payload);
            return Ok(None);
        }

        let header = FrameHeader {
            fin: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: None,
            payload_len: payload.len() as u64,
        };
        frame::encode_header(&header, dst);
        Ok(Some(payload))
    }

    fn write_close(&mut self, dst: &mut BytesMut, payload: &[u8]) {
        // Pongs queued before the close go out first, because none may follow it.
        let pongs = mem::take(&mut self.pending_pongs);
        dst.extend_from_slice(&pongs);
        self.queued_close = None;
        self.write_frame(dst, true, OpCode::CLOSE, payload);
        self.on_close_sent();
    }

    fn write_data(&mut self, dst: &mut BytesMut, opcode: OpCode, payload: &[u8]) {
        match self.compress(payload) {
            Some(compressed) => self.write_fragments(dst, opcode, &compressed, true),
            None => self.write_fragments(dst, opcode, payload, false),
        }
    }

    /// Writes a data message as one frame or as fragments, with RSV1 on the first frame
    /// when `compressed`.
    fn write_fragments(
        &self,
        dst: &mut BytesMut,
        opcode: OpCode,
        payload: &[u8],
        compressed: bool,
    ) {
        let fragment_size = match self.config.max_send_frame_size {
            Some(size) if payload.len() > size.max(1) => size.max(1),
            _ => {
                self.write_frame_rsv1(dst, true, compressed, opcode, payload);
                return;
            }
        };
        let fragments = payload.len().div_ceil(fragment_size);
        dst.reserve(payload.len() + fragments * FrameHeader::MAX_LEN);
        let mut opcode = opcode;
        let mut rsv1 = compressed;
        let mut chunks = payload.chunks(fragment_size).peekable();
        while let Some(chunk) = chunks.next() {
            let fin = chunks.peek().is_none();
            self.write_frame_rsv1(dst, fin, rsv1, opcode, chunk);
            opcode = OpCode::CONTINUATION;
            rsv1 = false;
        }
    }

    /// Writes one frame, masked with a fresh key as a client.
    fn write_frame(&self, dst: &mut BytesMut, fin: bool, opcode: OpCode, payload: &[u8]) {
        self.write_frame_rsv1(dst, fin, false, opcode, payload);
    }

    /// Writes one frame with the given RSV1 bit, masked with a fresh key as a client.
    fn write_frame_rsv1(
        &self,
        dst: &mut BytesMut,
        fin: bool,
        rsv1: bool,
        opcode: OpCode,
        payload: &[u8],
    ) {
        let mask = match self.role {
            Role::Client => Some(rand::rng().random::<[u8; 4]>()),
            Role::Server => None,
        };
        let header = FrameHeader {
            fin,
            rsv1,
            rsv2: false,
            rsv3: false,
            opcode,
            mask,
            payload_len: payload.len() as u64,
        };
        dst.reserve(header.encoded_len() + payload.len());
        frame::encode_header(&header, dst);
        let start = dst.len();
        dst.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut dst[start..], key, 0);
        }
    }
}

/// Returns the room past the end of a final frame of `frame_end` message bytes that the
/// message buffer reserves while the frame arrives: 1/64 of its size, from 16 bytes up to
/// [`MAX_PAST_FRAME_ROOM`]. The room ends at `max_message_size`, so the buffer keeps
/// within [`Limits::max_message_size`]. Any room lets a read return fewer bytes than
/// requested, and more room saves reads when the peer sends the next frame right behind.
fn past_frame_room(frame_end: usize, max_message_size: usize) -> usize {
    let room = (frame_end / 64).clamp(16, MAX_PAST_FRAME_ROOM);
    room.min(max_message_size.saturating_sub(frame_end))
}

/// Grows `buf` to a capacity of `target` bytes, keeping its contents.
///
/// `BytesMut::reserve` may round the capacity up past a size limit, so this goes through
/// `Vec::reserve_exact` instead. For the message buffer, which is never split or advanced,
/// both conversions are free, and the allocator can often grow the block in place or
/// remap its pages rather than copy them.
fn grow_exact(buf: BytesMut, target: usize) -> BytesMut {
    let mut vec = Vec::from(buf);
    vec.reserve_exact(target.saturating_sub(vec.len()));
    BytesMut::from(Bytes::from(vec))
}

/// Returns the payload limit for a frame of a compressed message: `max_frame_size` plus
/// one eighth and 64 bytes. DEFLATE can make incompressible data longer (by at most one
/// eighth with fixed Huffman codes), so a peer may send a message of `max_frame_size`
/// bytes as a longer compressed frame. The payload is decompressed as it arrives rather
/// than buffered, so the headroom costs no memory.
fn compressed_frame_limit(max_frame_size: usize) -> usize {
    max_frame_size
        .saturating_add(max_frame_size / 8)
        .saturating_add(64)
}

/// Parses and validates a received close frame payload (RFC 6455 section 5.5.1).
fn parse_close_payload(payload: &[u8]) -> Result<Option<CloseFrame>, ProtocolError> {
    match payload {
        [] => Ok(None),
        [_] => Err(ProtocolError::InvalidClosePayload),
        [high, low, reason @ ..] => {
            let code = CloseCode(u16::from_be_bytes([*high, *low]));
            if !code.is_sendable() {
                return Err(ProtocolError::InvalidCloseCode(code.0));
            }
            let reason = Utf8Bytes::try_from_bytes(Bytes::copy_from_slice(reason))
                .map_err(|_| ProtocolError::InvalidCloseReason)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

/// Validates a close frame for sending and returns its payload.
fn close_payload(frame: &CloseFrame) -> Result<Vec<u8>, SendError> {
    if !frame.code.is_sendable() {
        return Err(SendError::InvalidCloseCode(frame.code.0));
    }
    if frame.reason.len() > CloseFrame::MAX_REASON_LEN {
        return Err(SendError::CloseReasonTooLong(frame.reason.len()));
    }
    let mut payload = Vec::with_capacity(2 + frame.reason.len());
    payload.extend_from_slice(&frame.code.0.to_be_bytes());
    payload.extend_from_slice(frame.reason.as_bytes());
    Ok(payload)
}

/// Received bytes that [`Connection`] decodes and consumes from the front: the caller's
/// `BytesMut`, or a borrowed slice for [`Connection::decode_slice`].
trait Input: DerefMut<Target = [u8]> {
    /// Removes the first `count` bytes, which must be at most the length.
    fn consume(&mut self, count: usize);

    /// Removes every byte.
    fn consume_all(&mut self);
}

impl Input for BytesMut {
    fn consume(&mut self, count: usize) {
        self.advance(count);
    }

    fn consume_all(&mut self) {
        self.clear();
    }
}

/// The bytes of a borrowed buffer that were not consumed yet.
struct SliceInput<'a> {
    rest: &'a mut [u8],
}

impl Deref for SliceInput<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.rest
    }
}

impl DerefMut for SliceInput<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.rest
    }
}

impl Input for SliceInput<'_> {
    fn consume(&mut self, count: usize) {
        let rest = mem::take(&mut self.rest);
        self.rest = &mut rest[count..];
    }

    fn consume_all(&mut self) {
        self.rest = &mut [];
    }
}

mod compressed;
#[cfg(test)]
mod tests;

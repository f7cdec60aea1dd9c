//! permessage-deflate in the connection: compressing sent messages and decompressing
//! received ones as their payload arrives (RFC 7692 sections 6 and 7.2).

use bytes::BytesMut;

use super::{Connection, DataKind, Input, MIN_BUFFER_GROWTH, PayloadProgress};
use crate::ProtocolError;
use crate::deflate::{Deflater, Inflater, SYNC_FLUSH_TAIL};
use crate::mask::apply_mask;

/// Maximum output of one decompressor call, in bytes. The UTF-8 check and the size limit
/// run after each call, so a text message fails within this many bytes of its first
/// invalid sequence.
const INFLATE_STEP: usize = 64 << 10;

impl Connection {
    /// Unmasks the available payload bytes of a compressed message's frame and
    /// decompresses them into the message buffer. Returns `true` when the frame is
    /// complete.
    pub(super) fn read_compressed_payload<I: Input>(
        &mut self,
        mut progress: PayloadProgress,
        src: &mut I,
    ) -> Result<bool, ProtocolError> {
        // `remaining` fits in usize once it is at most `src.len()`.
        let count = progress.remaining.min(src.len() as u64) as usize;
        if count > 0 {
            // The bytes are consumed here, so they are unmasked in place.
            if let Some(key) = progress.mask {
                apply_mask(&mut src[..count], key, progress.received);
            }
            self.inflate_into_message(&src[..count])?;
            src.consume(count);
            progress.received += count;
            progress.remaining -= count as u64;
        }

        let complete = progress.remaining == 0;
        if complete && progress.fin {
            self.inflate_into_message(&SYNC_FLUSH_TAIL)?;
            if self.message_kind == Some(DataKind::Text) {
                self.check_text(true)?;
            }
            self.end_compressed_message();
        }
        self.payload = if complete { None } else { Some(progress) };
        Ok(complete)
    }

    /// Decompresses `input` into the message buffer, checking the size limit and UTF-8
    /// after each step, so that neither waits for the whole message.
    fn inflate_into_message(&mut self, mut input: &[u8]) -> Result<(), ProtocolError> {
        let Some(deflate) = self.config.deflate else {
            // `check_header` accepts RSV1 only with permessage-deflate negotiated.
            return Err(ProtocolError::ReservedBits);
        };
        let max = self.config.limits.max_message_size;
        let mut inflater = self
            .inflater
            .take()
            .unwrap_or_else(|| Box::new(Inflater::new(deflate.receive_window_bits)));
        while !inflater.is_finished() {
            let len = self.message.len();
            if self.message.capacity() == len {
                self.grow_inflate_buffer(max);
            }
            // One byte of room past the limit shows whether the output exceeds it.
            let room = (self.message.capacity() - len)
                .min(max.saturating_add(1) - len)
                .min(INFLATE_STEP);
            let step = inflater
                .inflate(input, &mut self.message, room)
                .map_err(|err| {
                    tracing::debug!(error = %err, "invalid compressed data");
                    ProtocolError::InvalidCompressedData
                })?;
            input = &input[step.consumed..];
            if self.message.len() > max {
                return Err(ProtocolError::MessageTooLarge {
                    size: self.message.len() as u64,
                    max,
                });
            }
            if step.produced > 0 && self.message_kind == Some(DataKind::Text) {
                self.check_text(false)?;
            }
            let output_full = step.produced == room;
            if input.is_empty() && !output_full {
                break;
            }
            if step.consumed == 0 && step.produced == 0 && !step.stream_end {
                // The decompressor made no progress with input and output room left.
                return Err(ProtocolError::InvalidCompressedData);
            }
        }
        self.inflater = Some(inflater);
        Ok(())
    }

    /// Grows the message buffer for decompressed output: doubling, at least 8 KiB, and at
    /// most one byte past [`crate::Limits::max_message_size`].
    fn grow_inflate_buffer(&mut self, max: usize) {
        let len = self.message.len();
        let target = len
            .saturating_mul(2)
            .max(MIN_BUFFER_GROWTH)
            .min(max.saturating_add(1))
            .max(len + 1);
        // `BytesMut::reserve` may round up past the limit, so the copy is explicit.
        let mut grown = BytesMut::with_capacity(target);
        grown.extend_from_slice(&self.message);
        self.message = grown;
    }

    /// Drops the decompressor after a message if the peer resets its compressor after
    /// each message, or if the peer ended its DEFLATE stream with a BFINAL block.
    fn end_compressed_message(&mut self) {
        let peer_resets = self
            .config
            .deflate
            .is_some_and(|deflate| deflate.receive_no_context_takeover);
        if peer_resets
            || self
                .inflater
                .as_ref()
                .is_some_and(|inflater| inflater.is_finished())
        {
            self.inflater = None;
        }
    }

    /// Returns the compressed form of a data message's payload, or `None` to send it
    /// uncompressed: without permessage-deflate, below the minimum size, or when
    /// compressing does not make it shorter.
    pub(super) fn compress(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        let deflate = self.config.deflate?;
        if payload.len() < deflate.min_message_size {
            return None;
        }
        let mut deflater = self
            .deflater
            .take()
            .unwrap_or_else(|| Box::new(Deflater::new(deflate.level, deflate.send_window_bits)));
        let compressed = match deflater.compress_message(payload) {
            Ok(compressed) => compressed,
            Err(err) => {
                // A fresh compressor never refers to earlier messages, so the next one
                // starts clean and the peer's decompressor still reads it.
                tracing::warn!(error = %err, "compressor failed, sending the message uncompressed");
                return None;
            }
        };
        if compressed.len() >= payload.len() {
            // The peer's decompressor never receives this message, so the compressor,
            // whose window now contains it, is dropped.
            return None;
        }
        if !deflate.send_no_context_takeover {
            self.deflater = Some(deflater);
        }
        Some(compressed)
    }
}

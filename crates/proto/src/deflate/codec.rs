//! Raw DEFLATE compressor and decompressor for one direction of a connection, on flate2
//! with the zlib-rs backend.

use std::fmt;

use bytes::BytesMut;
use flate2::{
    Compress, CompressError, Compression, Decompress, DecompressError, FlushCompress,
    FlushDecompress, Status,
};

/// The empty stored block that ends a sync flush. A sender removes it from the end of each
/// compressed message, and the receiver appends it again (RFC 7692 section 7.2).
pub(crate) const SYNC_FLUSH_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Output room added to the compressor's buffer whenever it runs short, in bytes.
const MIN_COMPRESS_GROWTH: usize = 256;

/// Compressor of the messages this endpoint sends.
pub(crate) struct Deflater {
    compress: Compress,
}

impl Deflater {
    /// Creates a raw DEFLATE compressor. `window_bits` must be in 9..=15.
    pub(crate) fn new(level: u8, window_bits: u8) -> Self {
        Deflater {
            compress: Compress::new_with_window_bits(
                Compression::new(u32::from(level)),
                false,
                window_bits,
            ),
        }
    }

    /// Compresses one message and ends it with a sync flush, without the final
    /// `00 00 FF FF` (RFC 7692 section 7.2.1).
    ///
    /// # Errors
    ///
    /// Returns the backend's error. The compressor must then be dropped.
    pub(crate) fn compress_message(&mut self, input: &[u8]) -> Result<Vec<u8>, CompressError> {
        let mut out = Vec::with_capacity(input.len() / 2 + 64);
        let mut consumed = 0;
        loop {
            if out.capacity() - out.len() < MIN_COMPRESS_GROWTH {
                out.reserve(out.capacity().max(MIN_COMPRESS_GROWTH));
            }
            let before = self.compress.total_in();
            self.compress
                .compress_vec(&input[consumed..], &mut out, FlushCompress::Sync)?;
            consumed += (self.compress.total_in() - before) as usize;
            // The flush is complete once all input is consumed and output room is left.
            if consumed == input.len() && out.len() < out.capacity() {
                break;
            }
        }
        if out.ends_with(&SYNC_FLUSH_TAIL) {
            out.truncate(out.len() - SYNC_FLUSH_TAIL.len());
        }
        Ok(out)
    }
}

impl fmt::Debug for Deflater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deflater")
            .field("total_in", &self.compress.total_in())
            .finish_non_exhaustive()
    }
}

/// Result of one [`Inflater::inflate`] call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct InflateStep {
    /// Input bytes consumed.
    pub(crate) consumed: usize,
    /// Output bytes appended.
    pub(crate) produced: usize,
    /// The stream ended with a block that has BFINAL set.
    pub(crate) stream_end: bool,
}

/// Decompressor of the messages this endpoint receives.
pub(crate) struct Inflater {
    decompress: Decompress,
    /// The peer ended the DEFLATE stream with a BFINAL block, so the rest of the message
    /// is ignored and the decompressor is replaced before the next message.
    finished: bool,
}

impl Inflater {
    /// Creates a raw DEFLATE decompressor. `window_bits` must be in 9..=15, and a window of
    /// 9 bits also reads streams made with 8.
    pub(crate) fn new(window_bits: u8) -> Self {
        Inflater {
            decompress: Decompress::new_with_window_bits(false, window_bits),
            finished: false,
        }
    }

    /// Returns `true` once the stream ended with a BFINAL block.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }

    /// Decompresses from `input` into the spare capacity of `out`, appending at most
    /// `room` bytes. `room` must not exceed the spare capacity.
    ///
    /// # Errors
    ///
    /// Returns the backend's error for data that is not valid DEFLATE.
    pub(crate) fn inflate(
        &mut self,
        input: &[u8],
        out: &mut BytesMut,
        room: usize,
    ) -> Result<InflateStep, DecompressError> {
        if self.finished {
            return Ok(InflateStep {
                consumed: input.len(),
                produced: 0,
                stream_end: true,
            });
        }
        let spare = &mut out.spare_capacity_mut()[..room];
        let in_before = self.decompress.total_in();
        let out_before = self.decompress.total_out();
        let status = self
            .decompress
            .decompress_uninit(input, spare, FlushDecompress::None)?;
        let consumed = (self.decompress.total_in() - in_before) as usize;
        let produced = (self.decompress.total_out() - out_before) as usize;
        // SAFETY: the decompressor wrote `produced` bytes to the start of the spare
        // capacity, so they are initialized, and `produced <= room <= spare capacity`.
        unsafe { out.set_len(out.len() + produced) };
        let stream_end = status == Status::StreamEnd;
        self.finished = stream_end;
        Ok(InflateStep {
            consumed,
            produced,
            stream_end,
        })
    }
}

impl fmt::Debug for Inflater {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Inflater")
            .field("total_out", &self.decompress.total_out())
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decompresses one message the way a receiver does, with the tail appended.
    fn inflate_message(inflater: &mut Inflater, data: &[u8]) -> Vec<u8> {
        let mut input = data.to_vec();
        input.extend_from_slice(&SYNC_FLUSH_TAIL);
        let mut out = BytesMut::with_capacity(1024);
        let step = inflater.inflate(&input, &mut out, 1024).unwrap();
        assert_eq!(step.consumed, input.len());
        out.to_vec()
    }

    #[test]
    fn hello_matches_rfc_7692_examples() {
        // RFC 7692 section 7.2.3.1 and 7.2.3.2: "Hello" compressed, then again with the
        // first one in the window.
        let mut deflater = Deflater::new(6, 15);
        let first = deflater.compress_message(b"Hello").unwrap();
        assert_eq!(first, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
        let second = deflater.compress_message(b"Hello").unwrap();
        assert_eq!(second, [0xf2, 0x00, 0x11, 0x00, 0x00]);

        let mut inflater = Inflater::new(15);
        assert_eq!(inflate_message(&mut inflater, &first), b"Hello");
        assert_eq!(inflate_message(&mut inflater, &second), b"Hello");
    }

    #[test]
    fn empty_message_is_one_zero_byte() {
        // RFC 7692 section 7.2.3.6.
        let mut deflater = Deflater::new(6, 15);
        assert_eq!(deflater.compress_message(b"").unwrap(), [0x00]);
    }

    #[test]
    fn small_windows_round_trip() {
        let data: Vec<u8> = (0..50_000u32)
            .map(|i| (i % 97) as u8 ^ (i / 1000) as u8)
            .collect();
        for bits in 9..=15 {
            let mut deflater = Deflater::new(9, bits);
            let compressed = deflater.compress_message(&data).unwrap();
            let mut inflater = Inflater::new(bits);
            let mut input = compressed.clone();
            input.extend_from_slice(&SYNC_FLUSH_TAIL);
            let mut out = BytesMut::with_capacity(data.len() + 1);
            let step = inflater.inflate(&input, &mut out, data.len() + 1).unwrap();
            assert_eq!(step.consumed, input.len(), "{bits} bits");
            assert_eq!(&out[..], &data[..], "{bits} bits");
        }
    }
}

//! The encoder and decoder stream instructions a peer may send when this endpoint's
//! dynamic table capacity is zero (RFC 9204 sections 4.3 and 4.4).

use super::decode_int;
use crate::error::{Code, ProtocolError};

/// The maximum number of bytes of one unfinished instruction kept between reads. Every instruction
/// this endpoint accepts is a prefixed integer of at most 10 bytes.
const MAX_PENDING: usize = 16;

/// Parses the peer's QPACK encoder stream. With a capacity of zero the only valid
/// instruction is Set Dynamic Table Capacity with value 0; any insert is an error.
#[derive(Debug, Default)]
pub struct EncoderStreamParser {
    pending: Vec<u8>,
}

impl EncoderStreamParser {
    /// Consumes bytes from the stream.
    ///
    /// # Errors
    ///
    /// QPACK_ENCODER_STREAM_ERROR for a capacity above zero or any insert instruction.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        let error = |reason: String| ProtocolError::new(Code::QPACK_ENCODER_STREAM_ERROR, reason);
        self.pending.extend_from_slice(bytes);
        let mut position = 0;
        while position < self.pending.len() {
            let first = self.pending[position];
            if first & 0xe0 != 0x20 {
                return Err(error(format!(
                    "encoder stream instruction 0x{first:02x} inserts into a dynamic table of capacity 0"
                )));
            }
            match decode_int(&self.pending[position..], 5).map_err(error)? {
                Some((0, used)) => position += used,
                Some((capacity, _)) => {
                    return Err(error(format!(
                        "Set Dynamic Table Capacity to {capacity} exceeds SETTINGS_QPACK_MAX_TABLE_CAPACITY 0"
                    )));
                }
                None => break,
            }
        }
        self.pending.drain(..position);
        if self.pending.len() > MAX_PENDING {
            return Err(error("encoder stream instruction is too long".into()));
        }
        Ok(())
    }
}

/// Parses the peer's QPACK decoder stream. Stream Cancellation is accepted and ignored.
/// Section Acknowledgment and Insert Count Increment are errors, because this endpoint
/// never sends a section that needs acknowledging or inserts an entry.
#[derive(Debug, Default)]
pub struct DecoderStreamParser {
    pending: Vec<u8>,
}

impl DecoderStreamParser {
    /// Consumes bytes from the stream.
    ///
    /// # Errors
    ///
    /// QPACK_DECODER_STREAM_ERROR for Section Acknowledgment or Insert Count Increment.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        let error = |reason: String| ProtocolError::new(Code::QPACK_DECODER_STREAM_ERROR, reason);
        self.pending.extend_from_slice(bytes);
        let mut position = 0;
        while position < self.pending.len() {
            let first = self.pending[position];
            if first & 0x80 != 0 {
                return Err(error(
                    "Section Acknowledgment for a section that had no dynamic references".into(),
                ));
            }
            if first & 0x40 == 0 {
                return Err(error(
                    "Insert Count Increment, but no entry was inserted".into(),
                ));
            }
            match decode_int(&self.pending[position..], 6).map_err(error)? {
                Some((_, used)) => position += used,
                None => break,
            }
        }
        self.pending.drain(..position);
        if self.pending.len() > MAX_PENDING {
            return Err(error("decoder stream instruction is too long".into()));
        }
        Ok(())
    }
}

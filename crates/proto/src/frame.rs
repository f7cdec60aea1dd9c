//! Frame headers: opcodes, decoding and encoding (RFC 6455 section 5.2).

use bytes::{BufMut, BytesMut};

use crate::ProtocolError;

/// Frame opcode (RFC 6455 section 5.2): a 4-bit value.
#[derive(Copy, Clone, PartialEq, Eq, Debug, Hash)]
pub struct OpCode(u8);

impl OpCode {
    /// 0x0: continues a fragmented message.
    pub const CONTINUATION: OpCode = OpCode(0x0);
    /// 0x1: first frame of a text message.
    pub const TEXT: OpCode = OpCode(0x1);
    /// 0x2: first frame of a binary message.
    pub const BINARY: OpCode = OpCode(0x2);
    /// 0x8: close control frame.
    pub const CLOSE: OpCode = OpCode(0x8);
    /// 0x9: ping control frame.
    pub const PING: OpCode = OpCode(0x9);
    /// 0xA: pong control frame.
    pub const PONG: OpCode = OpCode(0xA);

    /// Creates an opcode from its 4-bit value, or returns `None` if `value` exceeds 0xF.
    pub const fn from_u8(value: u8) -> Option<OpCode> {
        if value <= 0x0F {
            Some(OpCode(value))
        } else {
            None
        }
    }

    /// Returns `true` for control opcodes (0x8-0xF, the most significant bit set).
    pub const fn is_control(self) -> bool {
        self.0 & 0x08 != 0
    }

    /// Returns `true` for the reserved opcodes 0x3-0x7 and 0xB-0xF.
    pub const fn is_reserved(self) -> bool {
        matches!(self.0, 0x3..=0x7 | 0xB..=0xF)
    }

    /// Returns the 4-bit value.
    pub const fn as_u8(self) -> u8 {
        self.0
    }
}

/// Decoded fields of a frame header.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FrameHeader {
    /// FIN bit: this is the final frame of a message.
    pub fin: bool,
    /// RSV1 bit, defined only by a negotiated extension.
    pub rsv1: bool,
    /// RSV2 bit, defined only by a negotiated extension.
    pub rsv2: bool,
    /// RSV3 bit, defined only by a negotiated extension.
    pub rsv3: bool,
    /// Frame opcode.
    pub opcode: OpCode,
    /// Masking key, present when the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: u64,
}

impl FrameHeader {
    /// Maximum encoded header length: 2 fixed bytes, 8 length bytes, 4 mask bytes.
    pub const MAX_LEN: usize = 14;

    /// Returns the number of bytes [`encode_header`] writes for this header.
    pub fn encoded_len(&self) -> usize {
        let length_bytes = match self.payload_len {
            0..=125 => 0,
            126..=0xFFFF => 2,
            _ => 8,
        };
        let mask_bytes = if self.mask.is_some() { 4 } else { 0 };
        2 + length_bytes + mask_bytes
    }
}

/// Decodes a frame header from the start of `buf`.
///
/// Returns `Ok(None)` if `buf` does not yet contain the whole header, or the header and
/// its encoded length.
///
/// This function applies the checks that need no connection state, as soon as the bytes
/// they need are present:
/// - a reserved opcode is [`ProtocolError::ReservedOpcode`],
/// - a control frame with FIN clear is [`ProtocolError::FragmentedControl`],
/// - a 64-bit length with the most significant bit set is [`ProtocolError::LengthTopBit`],
/// - a control frame longer than 125 bytes is [`ProtocolError::ControlTooLong`].
///
/// The RSV bits and the MASK bit are returned as they are, because whether they are
/// allowed depends on the negotiated extensions and the role; [`crate::Connection`] checks
/// them.
///
/// A length that uses more bytes than needed (for example 5 in the 16-bit form) is
/// accepted. RFC 6455 section 5.2 requires senders to use the minimal form, but a longer
/// form still has exactly one meaning, and common implementations accept it.
///
/// # Errors
///
/// Returns the first of the faults above that the available bytes show.
pub fn decode_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    let fin = first & 0x80 != 0;
    let opcode = OpCode(first & 0x0F);
    if opcode.is_reserved() {
        return Err(ProtocolError::ReservedOpcode(opcode.0));
    }
    if opcode.is_control() && !fin {
        return Err(ProtocolError::FragmentedControl);
    }

    let (payload_len, mut len) = match second & 0x7F {
        126 => {
            let Some(bytes) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4)
        }
        127 => {
            let Some(bytes) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut word = [0u8; 8];
            word.copy_from_slice(bytes);
            let value = u64::from_be_bytes(word);
            if value >> 63 != 0 {
                return Err(ProtocolError::LengthTopBit);
            }
            (value, 10)
        }
        short => (u64::from(short), 2),
    };
    if opcode.is_control() && payload_len > 125 {
        return Err(ProtocolError::ControlTooLong(payload_len));
    }

    let mask = if second & 0x80 != 0 {
        let Some(bytes) = buf.get(len..len + 4) else {
            return Ok(None);
        };
        len += 4;
        Some([bytes[0], bytes[1], bytes[2], bytes[3]])
    } else {
        None
    };

    let header = FrameHeader {
        fin,
        rsv1: first & 0x40 != 0,
        rsv2: first & 0x20 != 0,
        rsv3: first & 0x10 != 0,
        opcode,
        mask,
        payload_len,
    };
    Ok(Some((header, len)))
}

/// Appends the encoding of `header` to `dst`, using the minimal length form.
///
/// The caller is responsible for a valid header: a `payload_len` below 2^63 and, for a
/// control frame, FIN set and at most 125 bytes.
pub fn encode_header(header: &FrameHeader, dst: &mut BytesMut) {
    let mut first = header.opcode.0 & 0x0F;
    if header.fin {
        first |= 0x80;
    }
    if header.rsv1 {
        first |= 0x40;
    }
    if header.rsv2 {
        first |= 0x20;
    }
    if header.rsv3 {
        first |= 0x10;
    }
    let mask_bit = if header.mask.is_some() { 0x80 } else { 0 };

    dst.reserve(header.encoded_len());
    dst.put_u8(first);
    match header.payload_len {
        len @ 0..=125 => dst.put_u8(mask_bit | len as u8),
        len @ 126..=0xFFFF => {
            dst.put_u8(mask_bit | 126);
            dst.put_u16(len as u16);
        }
        len => {
            dst.put_u8(mask_bit | 127);
            dst.put_u64(len);
        }
    }
    if let Some(key) = header.mask {
        dst.put_slice(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(opcode: OpCode, payload_len: u64, mask: Option<[u8; 4]>) -> FrameHeader {
        FrameHeader {
            fin: true,
            rsv1: false,
            rsv2: false,
            rsv3: false,
            opcode,
            mask,
            payload_len,
        }
    }

    #[test]
    fn opcode_classes() {
        for value in 0..=0x0F {
            let opcode = OpCode::from_u8(value).unwrap();
            assert_eq!(opcode.is_control(), value >= 8, "control {value:#x}");
            let reserved = matches!(value, 3..=7 | 0xB..=0xF);
            assert_eq!(opcode.is_reserved(), reserved, "reserved {value:#x}");
        }
        assert_eq!(OpCode::from_u8(0x10), None);
    }

    #[test]
    fn decode_rfc_examples() {
        // RFC 6455 section 5.7: unmasked "Hello" and masked "Hello".
        let (h, len) = decode_header(&[0x81, 0x05, b'H']).unwrap().unwrap();
        assert_eq!(len, 2);
        assert_eq!(h, header(OpCode::TEXT, 5, None));

        let bytes = [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f];
        let (h, len) = decode_header(&bytes).unwrap().unwrap();
        assert_eq!(len, 6);
        assert_eq!(h, header(OpCode::TEXT, 5, Some([0x37, 0xfa, 0x21, 0x3d])));

        // 256 bytes binary, 16-bit length.
        let (h, len) = decode_header(&[0x82, 0x7E, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!(len, 4);
        assert_eq!(h.payload_len, 256);

        // 64 KiB binary, 64-bit length.
        let bytes = [0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0];
        let (h, len) = decode_header(&bytes).unwrap().unwrap();
        assert_eq!(len, 10);
        assert_eq!(h.payload_len, 65536);
    }

    #[test]
    fn decode_needs_whole_header() {
        let full = [0x82, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for cut in 0..full.len() {
            assert_eq!(decode_header(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(decode_header(&full).unwrap().is_some());
    }

    #[test]
    fn decode_returns_rsv_bits() {
        let (h, _) = decode_header(&[0xF1, 0x00]).unwrap().unwrap();
        assert!(h.rsv1);
        assert!(h.rsv2);
        assert!(h.rsv3);
    }

    #[test]
    fn decode_rejects_reserved_opcodes() {
        for opcode in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
            assert_eq!(
                decode_header(&[0x80 | opcode, 0x00]),
                Err(ProtocolError::ReservedOpcode(opcode))
            );
        }
    }

    #[test]
    fn decode_rejects_fragmented_control() {
        for opcode in [0x8u8, 0x9, 0xA] {
            assert_eq!(
                decode_header(&[opcode, 0x00]),
                Err(ProtocolError::FragmentedControl)
            );
        }
    }

    #[test]
    fn decode_rejects_long_control() {
        assert_eq!(
            decode_header(&[0x89, 0x7E, 0x00, 0x7E]),
            Err(ProtocolError::ControlTooLong(126))
        );
        assert!(decode_header(&[0x89, 0x7D]).unwrap().is_some());
    }

    #[test]
    fn decode_rejects_length_top_bit() {
        let bytes = [0x82, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(decode_header(&bytes), Err(ProtocolError::LengthTopBit));
    }

    #[test]
    fn decode_accepts_non_minimal_length() {
        let (h, len) = decode_header(&[0x82, 0x7E, 0x00, 0x05]).unwrap().unwrap();
        assert_eq!((h.payload_len, len), (5, 4));
        let bytes = [0x82, 0x7F, 0, 0, 0, 0, 0, 0, 0, 5];
        let (h, len) = decode_header(&bytes).unwrap().unwrap();
        assert_eq!((h.payload_len, len), (5, 10));
    }

    #[test]
    fn encode_uses_minimal_length() {
        for (payload_len, expected) in [(0u64, 2usize), (125, 2), (126, 4), (65535, 4), (65536, 10)]
        {
            let h = header(OpCode::BINARY, payload_len, None);
            let mut dst = BytesMut::new();
            encode_header(&h, &mut dst);
            assert_eq!(dst.len(), expected, "payload_len {payload_len}");
            assert_eq!(h.encoded_len(), expected);
        }
    }

    proptest! {
        #[test]
        fn header_roundtrip(
            fin in any::<bool>(),
            rsv in 0u8..8,
            opcode in prop::sample::select(vec![0u8, 1, 2, 8, 9, 10]),
            mask in any::<Option<[u8; 4]>>(),
            payload_len in prop_oneof![0u64..=125, 126u64..=0xFFFF, 0x1_0000u64..(1 << 63)],
        ) {
            let opcode = OpCode(opcode);
            let payload_len = if opcode.is_control() { payload_len % 126 } else { payload_len };
            let h = FrameHeader {
                fin: fin || opcode.is_control(),
                rsv1: rsv & 4 != 0,
                rsv2: rsv & 2 != 0,
                rsv3: rsv & 1 != 0,
                opcode,
                mask,
                payload_len,
            };
            let mut dst = BytesMut::new();
            encode_header(&h, &mut dst);
            prop_assert_eq!(dst.len(), h.encoded_len());
            let decoded = decode_header(&dst).unwrap();
            prop_assert_eq!(decoded, Some((h, dst.len())));
        }
    }
}

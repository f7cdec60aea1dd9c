//! QUIC variable-length integers (RFC 9000 section 16): the two most significant bits of
//! the first byte give the length (1, 2, 4 or 8 bytes) and the rest is the value, big
//! endian.

use bytes::BufMut;

/// The largest value a varint can carry, 2^62 - 1.
pub const MAX: u64 = (1 << 62) - 1;

/// Returns the encoded length of a varint whose first byte is `first`.
pub fn len_from_first(first: u8) -> usize {
    1 << (first >> 6)
}

/// Returns the number of bytes `value` takes as a varint, or `None` above [`MAX`].
pub fn encoded_len(value: u64) -> Option<usize> {
    match value {
        0..=63 => Some(1),
        64..=16_383 => Some(2),
        16_384..=1_073_741_823 => Some(4),
        1_073_741_824..=MAX => Some(8),
        _ => None,
    }
}

/// Decodes a varint from the start of `input`, returning the value and its length, or
/// `None` if `input` is shorter than the varint.
pub fn decode(input: &[u8]) -> Option<(u64, usize)> {
    let first = *input.first()?;
    let len = len_from_first(first);
    let bytes = input.get(..len)?;
    let mut value = u64::from(first & 0x3f);
    for byte in &bytes[1..] {
        value = (value << 8) | u64::from(*byte);
    }
    Some((value, len))
}

/// Appends `value` as a varint in its shortest form.
///
/// # Panics
///
/// Panics if `value` is above [`MAX`]. Callers encode only lengths, stream types,
/// setting identifiers and codes they chose, which all fit.
pub fn encode(value: u64, out: &mut impl BufMut) {
    match encoded_len(value) {
        Some(1) => out.put_u8(value as u8),
        Some(2) => out.put_u16(0x4000 | value as u16),
        Some(4) => out.put_u32(0x8000_0000 | value as u32),
        Some(8) => out.put_u64(0xc000_0000_0000_0000 | value),
        _ => panic!("varint value {value} is above 2^62 - 1"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The examples of RFC 9000 Appendix A.1.
    #[test]
    fn decode_rfc9000_examples() {
        let cases: [(&[u8], u64); 4] = [
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (bytes, value) in cases {
            assert_eq!(decode(bytes), Some((value, bytes.len())), "{bytes:02x?}");
        }
        // A two-byte encoding of 37 is valid too, though not the shortest.
        assert_eq!(decode(&[0x40, 0x25]), Some((37, 2)));
    }

    #[test]
    fn encode_shortest_form() {
        for (value, len) in [(0, 1), (63, 1), (64, 2), (16_383, 2), (16_384, 4), (MAX, 8)] {
            let mut out = Vec::new();
            encode(value, &mut out);
            assert_eq!(out.len(), len, "value {value}");
            assert_eq!(decode(&out), Some((value, len)), "value {value}");
        }
    }

    #[test]
    fn decode_truncated_input() {
        assert_eq!(decode(&[]), None);
        assert_eq!(decode(&[0x40]), None);
        assert_eq!(decode(&[0xc0, 0, 0, 0, 0, 0, 0]), None);
    }

    #[test]
    fn encoded_len_above_max() {
        assert_eq!(encoded_len(MAX + 1), None);
    }
}

//! The Huffman code of HPACK (RFC 7541 Appendix B), which QPACK uses for string literals
//! (RFC 9204 section 4.1.2).

use std::sync::OnceLock;

/// The code of each symbol as `(code, length in bits)`, the code aligned to the least
/// significant bit. Index 0 to 255 are the byte values and index 256 is EOS. Transcribed
/// from the table in RFC 7541 Appendix B.
const CODES: [(u32, u8); 257] = [
    // 0 to 31: control characters.
    (0x1ff8, 13),
    (0x7fffd8, 23),
    (0xfffffe2, 28),
    (0xfffffe3, 28),
    (0xfffffe4, 28),
    (0xfffffe5, 28),
    (0xfffffe6, 28),
    (0xfffffe7, 28),
    (0xfffffe8, 28),
    (0xffffea, 24),
    (0x3ffffffc, 30),
    (0xfffffe9, 28),
    (0xfffffea, 28),
    (0x3ffffffd, 30),
    (0xfffffeb, 28),
    (0xfffffec, 28),
    (0xfffffed, 28),
    (0xfffffee, 28),
    (0xfffffef, 28),
    (0xffffff0, 28),
    (0xffffff1, 28),
    (0xffffff2, 28),
    (0x3ffffffe, 30),
    (0xffffff3, 28),
    (0xffffff4, 28),
    (0xffffff5, 28),
    (0xffffff6, 28),
    (0xffffff7, 28),
    (0xffffff8, 28),
    (0xffffff9, 28),
    (0xffffffa, 28),
    (0xffffffb, 28),
    // 32 to 47: ' ' ! " # $ % & ' ( ) * + , - . /
    (0x14, 6),
    (0x3f8, 10),
    (0x3f9, 10),
    (0xffa, 12),
    (0x1ff9, 13),
    (0x15, 6),
    (0xf8, 8),
    (0x7fa, 11),
    (0x3fa, 10),
    (0x3fb, 10),
    (0xf9, 8),
    (0x7fb, 11),
    (0xfa, 8),
    (0x16, 6),
    (0x17, 6),
    (0x18, 6),
    // 48 to 63: 0 to 9 : ; < = > ?
    (0x0, 5),
    (0x1, 5),
    (0x2, 5),
    (0x19, 6),
    (0x1a, 6),
    (0x1b, 6),
    (0x1c, 6),
    (0x1d, 6),
    (0x1e, 6),
    (0x1f, 6),
    (0x5c, 7),
    (0xfb, 8),
    (0x7ffc, 15),
    (0x20, 6),
    (0xffb, 12),
    (0x3fc, 10),
    // 64 to 95: @ A to Z [ \ ] ^ _
    (0x1ffa, 13),
    (0x21, 6),
    (0x5d, 7),
    (0x5e, 7),
    (0x5f, 7),
    (0x60, 7),
    (0x61, 7),
    (0x62, 7),
    (0x63, 7),
    (0x64, 7),
    (0x65, 7),
    (0x66, 7),
    (0x67, 7),
    (0x68, 7),
    (0x69, 7),
    (0x6a, 7),
    (0x6b, 7),
    (0x6c, 7),
    (0x6d, 7),
    (0x6e, 7),
    (0x6f, 7),
    (0x70, 7),
    (0x71, 7),
    (0x72, 7),
    (0xfc, 8),
    (0x73, 7),
    (0xfd, 8),
    (0x1ffb, 13),
    (0x7fff0, 19),
    (0x1ffc, 13),
    (0x3ffc, 14),
    (0x22, 6),
    // 96 to 127: ` a to z { | } ~ DEL
    (0x7ffd, 15),
    (0x3, 5),
    (0x23, 6),
    (0x4, 5),
    (0x24, 6),
    (0x5, 5),
    (0x25, 6),
    (0x26, 6),
    (0x27, 6),
    (0x6, 5),
    (0x74, 7),
    (0x75, 7),
    (0x28, 6),
    (0x29, 6),
    (0x2a, 6),
    (0x7, 5),
    (0x2b, 6),
    (0x76, 7),
    (0x2c, 6),
    (0x8, 5),
    (0x9, 5),
    (0x2d, 6),
    (0x77, 7),
    (0x78, 7),
    (0x79, 7),
    (0x7a, 7),
    (0x7b, 7),
    (0x7ffe, 15),
    (0x7fc, 11),
    (0x3ffd, 14),
    (0x1ffd, 13),
    (0xffffffc, 28),
    // 128 to 255.
    (0xfffe6, 20),
    (0x3fffd2, 22),
    (0xfffe7, 20),
    (0xfffe8, 20),
    (0x3fffd3, 22),
    (0x3fffd4, 22),
    (0x3fffd5, 22),
    (0x7fffd9, 23),
    (0x3fffd6, 22),
    (0x7fffda, 23),
    (0x7fffdb, 23),
    (0x7fffdc, 23),
    (0x7fffdd, 23),
    (0x7fffde, 23),
    (0xffffeb, 24),
    (0x7fffdf, 23),
    (0xffffec, 24),
    (0xffffed, 24),
    (0x3fffd7, 22),
    (0x7fffe0, 23),
    (0xffffee, 24),
    (0x7fffe1, 23),
    (0x7fffe2, 23),
    (0x7fffe3, 23),
    (0x7fffe4, 23),
    (0x1fffdc, 21),
    (0x3fffd8, 22),
    (0x7fffe5, 23),
    (0x3fffd9, 22),
    (0x7fffe6, 23),
    (0x7fffe7, 23),
    (0xffffef, 24),
    (0x3fffda, 22),
    (0x1fffdd, 21),
    (0xfffe9, 20),
    (0x3fffdb, 22),
    (0x3fffdc, 22),
    (0x7fffe8, 23),
    (0x7fffe9, 23),
    (0x1fffde, 21),
    (0x7fffea, 23),
    (0x3fffdd, 22),
    (0x3fffde, 22),
    (0xfffff0, 24),
    (0x1fffdf, 21),
    (0x3fffdf, 22),
    (0x7fffeb, 23),
    (0x7fffec, 23),
    (0x1fffe0, 21),
    (0x1fffe1, 21),
    (0x3fffe0, 22),
    (0x1fffe2, 21),
    (0x7fffed, 23),
    (0x3fffe1, 22),
    (0x7fffee, 23),
    (0x7fffef, 23),
    (0xfffea, 20),
    (0x3fffe2, 22),
    (0x3fffe3, 22),
    (0x3fffe4, 22),
    (0x7ffff0, 23),
    (0x3fffe5, 22),
    (0x3fffe6, 22),
    (0x7ffff1, 23),
    (0x3ffffe0, 26),
    (0x3ffffe1, 26),
    (0xfffeb, 20),
    (0x7fff1, 19),
    (0x3fffe7, 22),
    (0x7ffff2, 23),
    (0x3fffe8, 22),
    (0x1ffffec, 25),
    (0x3ffffe2, 26),
    (0x3ffffe3, 26),
    (0x3ffffe4, 26),
    (0x7ffffde, 27),
    (0x7ffffdf, 27),
    (0x3ffffe5, 26),
    (0xfffff1, 24),
    (0x1ffffed, 25),
    (0x7fff2, 19),
    (0x1fffe3, 21),
    (0x3ffffe6, 26),
    (0x7ffffe0, 27),
    (0x7ffffe1, 27),
    (0x3ffffe7, 26),
    (0x7ffffe2, 27),
    (0xfffff2, 24),
    (0x1fffe4, 21),
    (0x1fffe5, 21),
    (0x3ffffe8, 26),
    (0x3ffffe9, 26),
    (0xffffffd, 28),
    (0x7ffffe3, 27),
    (0x7ffffe4, 27),
    (0x7ffffe5, 27),
    (0xfffec, 20),
    (0xfffff3, 24),
    (0xfffed, 20),
    (0x1fffe6, 21),
    (0x3fffe9, 22),
    (0x1fffe7, 21),
    (0x1fffe8, 21),
    (0x7ffff3, 23),
    (0x3fffea, 22),
    (0x3fffeb, 22),
    (0x1ffffee, 25),
    (0x1ffffef, 25),
    (0xfffff4, 24),
    (0xfffff5, 24),
    (0x3ffffea, 26),
    (0x7ffff4, 23),
    (0x3ffffeb, 26),
    (0x7ffffe6, 27),
    (0x3ffffec, 26),
    (0x3ffffed, 26),
    (0x7ffffe7, 27),
    (0x7ffffe8, 27),
    (0x7ffffe9, 27),
    (0x7ffffea, 27),
    (0x7ffffeb, 27),
    (0xffffffe, 28),
    (0x7ffffec, 27),
    (0x7ffffed, 27),
    (0x7ffffee, 27),
    (0x7ffffef, 27),
    (0x7fffff0, 27),
    (0x3ffffee, 26),
    // 256: EOS.
    (0x3fffffff, 30),
];

const EOS: u16 = 256;
const MIN_LEN: usize = 5;
const MAX_LEN: usize = 30;

/// A failure to decode a Huffman-coded string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HuffmanError {
    /// The string contains the EOS symbol, which RFC 7541 section 5.2 forbids.
    #[error("Huffman-coded string contains the EOS symbol")]
    Eos,
    /// The padding is longer than 7 bits or is not the most significant bits of EOS.
    #[error("Huffman-coded string has invalid padding")]
    Padding,
}

/// The decoding tables of the canonical code: for each code length, the first code of
/// that length and where its symbols start in `symbols`, which lists every symbol ordered
/// by (length, code).
struct Canonical {
    first_code: [u32; MAX_LEN + 1],
    count: [u32; MAX_LEN + 1],
    offset: [usize; MAX_LEN + 1],
    symbols: Vec<u16>,
}

fn canonical() -> &'static Canonical {
    static TABLE: OnceLock<Canonical> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut symbols: Vec<u16> = (0..=EOS).collect();
        symbols.sort_by_key(|&symbol| {
            let (code, len) = CODES[usize::from(symbol)];
            (len, code)
        });
        let mut first_code = [u32::MAX; MAX_LEN + 1];
        let mut count = [0; MAX_LEN + 1];
        let mut offset = [0; MAX_LEN + 1];
        for (position, &symbol) in symbols.iter().enumerate() {
            let (code, len) = CODES[usize::from(symbol)];
            let len = usize::from(len);
            if count[len] == 0 {
                first_code[len] = code;
                offset[len] = position;
            }
            count[len] += 1;
        }
        Canonical {
            first_code,
            count,
            offset,
            symbols,
        }
    })
}

/// Decodes a Huffman-coded string and appends the bytes to `out`.
pub fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), HuffmanError> {
    let table = canonical();
    let mut code: u32 = 0;
    let mut len: usize = 0;
    for byte in input {
        for shift in (0..8).rev() {
            code = (code << 1) | u32::from((byte >> shift) & 1);
            len += 1;
            if len < MIN_LEN {
                continue;
            }
            let count = table.count[len];
            if count > 0 && code >= table.first_code[len] {
                let index = code - table.first_code[len];
                if index < count {
                    let symbol = table.symbols[table.offset[len] + index as usize];
                    if symbol == EOS {
                        return Err(HuffmanError::Eos);
                    }
                    // Symbols below EOS are byte values.
                    out.push(symbol as u8);
                    code = 0;
                    len = 0;
                }
            }
            if len >= MAX_LEN {
                // Every 30-bit code is assigned, so this is only reached through EOS,
                // which returned above. Kept as a guard against a corrupt table.
                return Err(HuffmanError::Eos);
            }
        }
    }
    // What is left must be a prefix of EOS, so all ones, and shorter than a byte.
    if len > 7 || code != (1 << len) - 1 {
        return Err(HuffmanError::Padding);
    }
    Ok(())
}

/// Returns the length in bytes of the Huffman coding of `input`.
pub fn encoded_len(input: &[u8]) -> usize {
    let bits: usize = input
        .iter()
        .map(|&byte| usize::from(CODES[usize::from(byte)].1))
        .sum();
    bits.div_ceil(8)
}

/// Appends the Huffman coding of `input` to `out`, padded with the most significant bits
/// of EOS (all ones).
pub fn encode(input: &[u8], out: &mut Vec<u8>) {
    let mut pending: u64 = 0;
    let mut pending_bits: u32 = 0;
    for &byte in input {
        let (code, len) = CODES[usize::from(byte)];
        pending = (pending << len) | u64::from(code);
        pending_bits += u32::from(len);
        while pending_bits >= 8 {
            pending_bits -= 8;
            out.push((pending >> pending_bits) as u8);
        }
        pending &= (1 << pending_bits) - 1;
    }
    if pending_bits > 0 {
        let padding = 8 - pending_bits;
        out.push(((pending << padding) | ((1 << padding) - 1)) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        digits
            .chunks(2)
            .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
            .collect()
    }

    /// String literals of the Huffman examples in RFC 7541 Appendix C.4 and C.6.
    const RFC7541_EXAMPLES: [(&str, &str); 9] = [
        ("www.example.com", "f1e3 c2e5 f23a 6ba0 ab90 f4ff"),
        ("no-cache", "a8eb 1064 9cbf"),
        ("custom-key", "25a8 49e9 5ba9 7d7f"),
        ("custom-value", "25a8 49e9 5bb8 e8b4 bf"),
        ("302", "6402"),
        ("private", "aec3 771a 4b"),
        (
            "Mon, 21 Oct 2013 20:13:21 GMT",
            "d07a be94 1054 d444 a820 0595 040b 8166 e082 a62d 1bff",
        ),
        (
            "https://www.example.com",
            "9d29 ad17 1863 c78f 0b97 c8e9 ae82 ae43 d3",
        ),
        ("307", "640e ff"),
    ];

    #[test]
    fn encode_rfc7541_examples() {
        for (text, coded) in RFC7541_EXAMPLES {
            let mut out = Vec::new();
            encode(text.as_bytes(), &mut out);
            assert_eq!(out, hex(coded), "{text}");
            assert_eq!(encoded_len(text.as_bytes()), out.len(), "{text}");
        }
    }

    #[test]
    fn decode_rfc7541_examples() {
        for (text, coded) in RFC7541_EXAMPLES {
            let mut out = Vec::new();
            decode(&hex(coded), &mut out).unwrap();
            assert_eq!(out, text.as_bytes(), "{coded}");
        }
    }

    #[test]
    fn table_is_a_canonical_prefix_code() {
        // In a canonical code, the next code of the same length is one more, and moving
        // to a longer length shifts left. The Kraft sum of a complete code is exactly 1.
        let table = canonical();
        let mut expected: u64 = 0;
        let mut previous_len = 0;
        for &symbol in &table.symbols {
            let (code, len) = CODES[usize::from(symbol)];
            expected <<= u32::from(len) - previous_len;
            assert_eq!(u64::from(code), expected, "symbol {symbol}");
            expected += 1;
            previous_len = u32::from(len);
        }
        assert_eq!(expected, 1 << MAX_LEN, "code space is not filled exactly");
    }

    #[test]
    fn round_trip_every_byte() {
        let input: Vec<u8> = (0..=255).collect();
        let mut coded = Vec::new();
        encode(&input, &mut coded);
        let mut out = Vec::new();
        decode(&coded, &mut out).unwrap();
        assert_eq!(out, input);
    }

    #[test]
    fn decode_rejects_eos() {
        // EOS is 30 ones, followed by two ones of padding.
        let mut out = Vec::new();
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff], &mut out),
            Err(HuffmanError::Eos)
        );
    }

    #[test]
    fn decode_rejects_long_padding() {
        // 'a' is 00011 and then 11 bits of ones, longer than 7 bits of padding.
        let mut out = Vec::new();
        assert_eq!(decode(&[0x1f, 0xff], &mut out), Err(HuffmanError::Padding));
    }

    #[test]
    fn decode_rejects_zero_padding() {
        // 'a' is 00011, then three zero bits instead of ones.
        let mut out = Vec::new();
        assert_eq!(decode(&[0x18], &mut out), Err(HuffmanError::Padding));
    }
}

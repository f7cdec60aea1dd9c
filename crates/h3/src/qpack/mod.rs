//! QPACK (RFC 9204) with a dynamic table capacity of zero: field sections use only the
//! static table and literals, so no encoder or decoder stream instruction is ever needed
//! and no stream can block.
//!
//! Any reference to the dynamic table, including the post-base forms, is a decoding
//! error (QPACK_DECOMPRESSION_FAILED), because this endpoint advertises
//! SETTINGS_QPACK_MAX_TABLE_CAPACITY = 0.

pub mod huffman;
mod instructions;
pub mod static_table;

pub use instructions::{DecoderStreamParser, EncoderStreamParser};

use crate::error::{Code, ProtocolError};

/// Bytes RFC 9114 section 4.2.2 adds to each field line when it counts the size of a
/// header section.
pub const FIELD_LINE_OVERHEAD: u64 = 32;

/// One field line of a decoded header section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldLine {
    /// The name as sent; HTTP/3 validation later checks that it is lowercase.
    pub name: Vec<u8>,
    /// The value as sent.
    pub value: Vec<u8>,
}

impl FieldLine {
    /// Builds a field line from a name and a value.
    pub fn new(name: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }

    /// Returns the size RFC 9114 section 4.2.2 counts for this line.
    pub fn size(&self) -> u64 {
        (self.name.len() + self.value.len()) as u64 + FIELD_LINE_OVERHEAD
    }
}

fn decompression_failed(reason: impl Into<String>) -> ProtocolError {
    ProtocolError::new(Code::QPACK_DECOMPRESSION_FAILED, reason)
}

/// Decodes a prefixed integer (RFC 7541 section 5.1) whose prefix is the low
/// `prefix_bits` of `input[0]`. Returns the value and the bytes used, `Ok(None)` if
/// `input` ends first, or an error for a value above 2^62 - 1.
pub(crate) fn decode_int(input: &[u8], prefix_bits: u8) -> Result<Option<(u64, usize)>, String> {
    let Some(&first) = input.first() else {
        return Ok(None);
    };
    let max_prefix = (1u64 << prefix_bits) - 1;
    let mut value = u64::from(first) & max_prefix;
    if value < max_prefix {
        return Ok(Some((value, 1)));
    }
    let mut shift = 0u32;
    for (position, &byte) in input.iter().enumerate().skip(1) {
        let addend = u64::from(byte & 0x7f)
            .checked_shl(shift)
            .filter(|addend| addend >> shift == u64::from(byte & 0x7f))
            .ok_or("prefixed integer overflows 62 bits")?;
        value = value
            .checked_add(addend)
            .filter(|&value| value <= crate::varint::MAX)
            .ok_or("prefixed integer overflows 62 bits")?;
        if byte & 0x80 == 0 {
            return Ok(Some((value, position + 1)));
        }
        shift += 7;
        if shift > 62 {
            return Err("prefixed integer overflows 62 bits".into());
        }
    }
    Ok(None)
}

/// Appends a prefixed integer whose first byte carries `flags` in the bits above the
/// `prefix_bits`-bit prefix.
pub(crate) fn encode_int(value: u64, prefix_bits: u8, flags: u8, out: &mut Vec<u8>) {
    let max_prefix = (1u64 << prefix_bits) - 1;
    if value < max_prefix {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max_prefix as u8);
    let mut rest = value - max_prefix;
    while rest >= 0x80 {
        out.push(0x80 | (rest & 0x7f) as u8);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Decodes a string literal whose Huffman flag is bit `prefix_bits` of `input[0]` and
/// whose length is the prefixed integer below it. Returns the string and the bytes used.
/// `max_len` bounds the encoded length so a peer cannot make this allocate without limit.
fn decode_string(
    input: &[u8],
    prefix_bits: u8,
    max_len: u64,
) -> Result<(Vec<u8>, usize), ProtocolError> {
    let huffman = input
        .first()
        .is_some_and(|first| first & (1 << prefix_bits) != 0);
    let (len, used) = decode_int(input, prefix_bits)
        .map_err(decompression_failed)?
        .ok_or_else(|| decompression_failed("field section ends inside a string length"))?;
    if len > max_len {
        return Err(decompression_failed(format!(
            "string literal of {len} bytes exceeds the field section limit of {max_len} bytes"
        )));
    }
    let end = used + len as usize;
    let bytes = input
        .get(used..end)
        .ok_or_else(|| decompression_failed("field section ends inside a string literal"))?;
    let mut out = Vec::with_capacity(bytes.len());
    if huffman {
        huffman::decode(bytes, &mut out)
            .map_err(|error| decompression_failed(error.to_string()))?;
    } else {
        out.extend_from_slice(bytes);
    }
    Ok((out, end))
}

/// Appends a string literal, Huffman-coded when that is shorter, with the Huffman flag
/// at bit `prefix_bits` of the first byte above `flags`.
fn encode_string(value: &[u8], prefix_bits: u8, flags: u8, out: &mut Vec<u8>) {
    let huffman_len = huffman::encoded_len(value);
    if huffman_len < value.len() {
        encode_int(
            huffman_len as u64,
            prefix_bits,
            flags | (1 << prefix_bits),
            out,
        );
        huffman::encode(value, out);
    } else {
        encode_int(value.len() as u64, prefix_bits, flags, out);
        out.extend_from_slice(value);
    }
}

fn static_entry(index: u64) -> Result<(&'static str, &'static str), ProtocolError> {
    usize::try_from(index)
        .ok()
        .and_then(|index| static_table::ENTRIES.get(index))
        .copied()
        .ok_or_else(|| decompression_failed(format!("static table index {index} is above 98")))
}

/// Decodes an encoded field section (RFC 9204 section 4.5) into its field lines.
///
/// `max_size` is this endpoint's SETTINGS_MAX_FIELD_SECTION_SIZE: a section whose lines
/// add up to more, counted as in RFC 9114 section 4.2.2, is rejected before it is fully
/// decoded, with `H3_EXCESSIVE_LOAD`.
///
/// # Errors
///
/// QPACK_DECOMPRESSION_FAILED for a nonzero Required Insert Count, any dynamic table or
/// post-base reference, a static index above 98, bad Huffman coding or a truncated
/// section; H3_EXCESSIVE_LOAD for a section over `max_size`.
pub fn decode_field_section(input: &[u8], max_size: u64) -> Result<Vec<FieldLine>, ProtocolError> {
    let (required_insert_count, used) = decode_int(input, 8)
        .map_err(decompression_failed)?
        .ok_or_else(|| decompression_failed("field section prefix is truncated"))?;
    if required_insert_count != 0 {
        return Err(decompression_failed(format!(
            "Required Insert Count is {required_insert_count}, but the dynamic table capacity is 0"
        )));
    }
    let mut position = used;
    // The Base (sign bit and Delta Base) is meaningless without dynamic references.
    let (_, used) = decode_int(&input[position..], 7)
        .map_err(decompression_failed)?
        .ok_or_else(|| decompression_failed("field section prefix is truncated"))?;
    position += used;

    let mut lines = Vec::new();
    let mut size = 0u64;
    while position < input.len() {
        let rest = &input[position..];
        let first = rest[0];
        let budget = max_size.saturating_sub(size);
        let (line, used) = if first & 0x80 != 0 {
            // Indexed field line: 1 T index(6).
            if first & 0x40 == 0 {
                return Err(decompression_failed(
                    "indexed field line refers to the dynamic table",
                ));
            }
            let (index, used) = decode_int(rest, 6)
                .map_err(decompression_failed)?
                .ok_or_else(|| decompression_failed("field section ends inside an index"))?;
            let (name, value) = static_entry(index)?;
            (FieldLine::new(name, value), used)
        } else if first & 0x40 != 0 {
            // Literal field line with name reference: 01 N T index(4), then the value.
            if first & 0x10 == 0 {
                return Err(decompression_failed(
                    "literal field line refers to a dynamic table name",
                ));
            }
            let (index, used) = decode_int(rest, 4)
                .map_err(decompression_failed)?
                .ok_or_else(|| decompression_failed("field section ends inside an index"))?;
            let (name, _) = static_entry(index)?;
            let (value, value_used) = decode_string(&rest[used..], 7, budget)?;
            (FieldLine::new(name, value), used + value_used)
        } else if first & 0x20 != 0 {
            // Literal field line with literal name: 001 N H length(3) name, then the value.
            let (name, name_used) = decode_string(rest, 3, budget)?;
            let (value, value_used) = decode_string(&rest[name_used..], 7, budget)?;
            (FieldLine::new(name, value), name_used + value_used)
        } else {
            return Err(decompression_failed(
                "post-base field line refers to the dynamic table",
            ));
        };
        size += line.size();
        if size > max_size {
            return Err(ProtocolError::new(
                Code::H3_EXCESSIVE_LOAD,
                format!(
                    "header section exceeds SETTINGS_MAX_FIELD_SECTION_SIZE of {max_size} bytes"
                ),
            ));
        }
        lines.push(line);
        position += used;
    }
    Ok(lines)
}

/// Encodes field lines as a field section with Required Insert Count 0, using static
/// table references where an entry matches and Huffman coding where it is shorter.
/// Names are sent as given, so callers pass lowercase names.
pub fn encode_field_section<'a>(lines: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    // Required Insert Count 0, then Base: sign 0 and Delta Base 0.
    let mut out = vec![0x00, 0x00];
    for (name, value) in lines {
        match static_table::find(name, value) {
            Some(static_table::Match::Field(index)) => {
                // 1 T=1 index(6).
                encode_int(index as u64, 6, 0xc0, &mut out);
            }
            Some(static_table::Match::Name(index)) => {
                // 01 N=0 T=1 index(4), then H length(7) value.
                encode_int(index as u64, 4, 0x50, &mut out);
                encode_string(value, 7, 0x00, &mut out);
            }
            None => {
                // 001 N=0 H length(3) name, then H length(7) value.
                encode_string(name, 3, 0x20, &mut out);
                encode_string(value, 7, 0x00, &mut out);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;

use super::*;

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap())
        .collect()
}

const LIMIT: u64 = 16 * 1024;

/// Integer examples of RFC 7541 Appendix C.1.
#[test]
fn prefixed_integer_rfc7541_examples() {
    let cases: [(u64, u8, &[u8]); 3] = [
        (10, 5, &[0x0a]),
        (1337, 5, &[0x1f, 0x9a, 0x0a]),
        (42, 8, &[0x2a]),
    ];
    for (value, prefix, bytes) in cases {
        let mut out = Vec::new();
        encode_int(value, prefix, 0, &mut out);
        assert_eq!(out, bytes, "encode {value}");
        assert_eq!(
            decode_int(bytes, prefix),
            Ok(Some((value, bytes.len()))),
            "decode {value}"
        );
    }
}

#[test]
fn prefixed_integer_truncated_and_overflow() {
    assert_eq!(decode_int(&[0x1f, 0x9a], 5), Ok(None));
    let overflow = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
    ];
    assert!(decode_int(&overflow, 8).is_err());
}

/// RFC 9204 Appendix B.1: a literal field line with a static name reference.
#[test]
fn decode_rfc9204_b1_example() {
    let section = hex("0000 510b 2f69 6e64 6578 2e68 746d 6c");
    let lines = decode_field_section(&section, LIMIT).unwrap();
    assert_eq!(lines, vec![FieldLine::new(":path", "/index.html")]);
}

#[test]
fn encode_decode_round_trip() {
    let fields: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", b"https"),
        (b":authority", b"localhost:8443"),
        (b":path", b"/ws/chat?room=a%20b"),
        (b"sec-websocket-version", b"13"),
        (b"x-binary", &[0x00, 0xff, 0x7f]),
        (b"empty", b""),
    ];
    let section = encode_field_section(fields.iter().copied());
    let lines = decode_field_section(&section, LIMIT).unwrap();
    let decoded: Vec<(&[u8], &[u8])> = lines
        .iter()
        .map(|line| (line.name.as_slice(), line.value.as_slice()))
        .collect();
    assert_eq!(decoded, fields);
}

#[test]
fn encode_uses_static_index() {
    let section = encode_field_section([(&b":method"[..], &b"CONNECT"[..]), (b":status", b"200")]);
    // Prefix 00 00, then 1 T=1 index 15 and 1 T=1 index 25.
    assert_eq!(section, [0x00, 0x00, 0xc0 | 15, 0xc0 | 25]);
}

#[test]
fn decode_rejects_dynamic_references() {
    let cases: [(&str, &[u8]); 6] = [
        ("required insert count", &[0x01, 0x00]),
        ("indexed dynamic", &[0x00, 0x00, 0x80]),
        ("indexed post-base", &[0x00, 0x00, 0x10]),
        ("literal dynamic name", &[0x00, 0x00, 0x40, 0x00]),
        ("literal post-base name", &[0x00, 0x00, 0x00, 0x00]),
        ("static index 99", &[0x00, 0x00, 0xc0 | 0x3f, 99 - 63]),
    ];
    for (case, section) in cases {
        let error = decode_field_section(section, LIMIT).unwrap_err();
        assert_eq!(error.code, Code::QPACK_DECOMPRESSION_FAILED, "{case}");
    }
}

#[test]
fn decode_rejects_truncated_sections() {
    let section = encode_field_section([(&b"name"[..], &b"a value long enough"[..])]);
    for end in 0..section.len() {
        if end == 2 {
            // A prefix alone is an empty section, which is valid.
            continue;
        }
        let error = decode_field_section(&section[..end], LIMIT).unwrap_err();
        assert_eq!(
            error.code,
            Code::QPACK_DECOMPRESSION_FAILED,
            "truncated at {end}"
        );
    }
}

#[test]
fn decode_enforces_max_field_section_size() {
    let value = vec![b'v'; 100];
    let section = encode_field_section([(&b"name"[..], value.as_slice())]);
    assert!(decode_field_section(&section, 136).is_ok());
    let error = decode_field_section(&section, 135).unwrap_err();
    assert_eq!(error.code, Code::H3_EXCESSIVE_LOAD);
}

#[test]
fn decode_bounds_string_length_before_reading() {
    // A literal name claiming 2^40 bytes must fail on the length, not on allocation.
    let mut section = vec![0x00, 0x00];
    encode_int(1 << 40, 3, 0x20, &mut section);
    let error = decode_field_section(&section, LIMIT).unwrap_err();
    assert_eq!(error.code, Code::QPACK_DECOMPRESSION_FAILED);
}

#[test]
fn encoder_stream_accepts_only_zero_capacity() {
    let mut parser = EncoderStreamParser::default();
    assert!(parser.feed(&[0x20]).is_ok());
    let error = parser.feed(&[0x3f, 0x01]).unwrap_err();
    assert_eq!(error.code, Code::QPACK_ENCODER_STREAM_ERROR);
    let mut parser = EncoderStreamParser::default();
    let error = parser.feed(&[0xc0, 0x00]).unwrap_err();
    assert_eq!(error.code, Code::QPACK_ENCODER_STREAM_ERROR);
}

#[test]
fn decoder_stream_accepts_only_cancellation() {
    let mut parser = DecoderStreamParser::default();
    // Stream Cancellation of stream 4, then of stream 100 split across two reads.
    assert!(parser.feed(&[0x44, 0x7f]).is_ok());
    assert!(parser.feed(&[100 - 63]).is_ok());
    let error = parser.feed(&[0x81]).unwrap_err();
    assert_eq!(error.code, Code::QPACK_DECODER_STREAM_ERROR);
    let mut parser = DecoderStreamParser::default();
    let error = parser.feed(&[0x01]).unwrap_err();
    assert_eq!(error.code, Code::QPACK_DECODER_STREAM_ERROR);
}

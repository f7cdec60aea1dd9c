//! Arbitrary bytes from a peer must produce errors, never panics, and encoders must
//! round-trip through the decoders.

use proptest::prelude::*;
use pylon_h3::qpack::{self, DecoderStreamParser, EncoderStreamParser, huffman};
use pylon_h3::{Settings, headers, varint};

proptest! {
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = varint::decode(&bytes);
        let _ = Settings::decode(&bytes);
        let _ = pylon_h3::frame::parse_single_varint(pylon_h3::frame::GOAWAY, &bytes);
        let mut out = Vec::new();
        let _ = huffman::decode(&bytes, &mut out);
        let _ = EncoderStreamParser::default().feed(&bytes);
        let _ = DecoderStreamParser::default().feed(&bytes);
        if let Ok(lines) = qpack::decode_field_section(&bytes, 16 * 1024) {
            let _ = headers::parse_request(lines.clone());
            let _ = headers::parse_response(lines);
        }
    }

    #[test]
    fn field_section_prefix_then_noise(noise in proptest::collection::vec(any::<u8>(), 0..256)) {
        // A valid prefix, so the field line decoders see the noise.
        let mut section = vec![0x00, 0x00];
        section.extend_from_slice(&noise);
        let _ = qpack::decode_field_section(&section, 1024);
    }

    #[test]
    fn huffman_round_trip(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let mut coded = Vec::new();
        huffman::encode(&bytes, &mut coded);
        prop_assert_eq!(coded.len(), huffman::encoded_len(&bytes));
        let mut decoded = Vec::new();
        huffman::decode(&coded, &mut decoded).unwrap();
        prop_assert_eq!(decoded, bytes);
    }

    #[test]
    fn field_section_round_trip(
        fields in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..40), proptest::collection::vec(any::<u8>(), 0..200)),
            0..20,
        )
    ) {
        let section = qpack::encode_field_section(
            fields.iter().map(|(name, value)| (name.as_slice(), value.as_slice())),
        );
        let lines = qpack::decode_field_section(&section, u64::MAX).unwrap();
        let decoded: Vec<(Vec<u8>, Vec<u8>)> =
            lines.into_iter().map(|line| (line.name, line.value)).collect();
        prop_assert_eq!(decoded, fields);
    }

    #[test]
    fn varint_round_trip(value in 0..=varint::MAX) {
        let mut out = Vec::new();
        varint::encode(value, &mut out);
        prop_assert_eq!(varint::decode(&out), Some((value, out.len())));
    }
}

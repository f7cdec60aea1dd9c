//! Decodes arbitrary bytes as a frame header and checks the round trip through
//! `encode_header` for every header that decodes.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pylon_proto::FrameHeader;
use pylon_proto::frame::{decode_header, encode_header};

fuzz_target!(|data: &[u8]| {
    let decoded = decode_header(data);
    match decoded {
        Ok(None) => {
            assert!(
                data.len() < FrameHeader::MAX_LEN,
                "incomplete header of {} bytes",
                data.len()
            );
        }
        Err(err) => {
            // Faults are decided by the bytes already present, so more bytes keep the fault.
            let mut longer = data.to_vec();
            longer.extend_from_slice(&[0xAA; FrameHeader::MAX_LEN]);
            assert_eq!(decode_header(&longer), Err(err));
        }
        Ok(Some((header, len))) => check_header(data, &header, len),
    }
});

fn check_header(data: &[u8], header: &FrameHeader, len: usize) {
    assert!(
        len <= data.len(),
        "header length {len} beyond input of {}",
        data.len()
    );
    assert!(len <= FrameHeader::MAX_LEN, "header length {len}");
    assert!(
        !header.opcode.is_reserved(),
        "reserved opcode {:?}",
        header.opcode
    );
    assert!(
        header.payload_len < 1 << 63,
        "payload length {}",
        header.payload_len
    );
    if header.opcode.is_control() {
        assert!(header.fin, "fragmented control frame");
        assert!(
            header.payload_len <= 125,
            "control payload {}",
            header.payload_len
        );
    }

    // Trailing bytes are not part of the header.
    assert_eq!(decode_header(&data[..len]), Ok(Some((*header, len))));
    for cut in 0..len {
        assert_eq!(
            decode_header(&data[..cut]),
            Ok(None),
            "prefix of {cut} bytes"
        );
    }

    let mut encoded = BytesMut::new();
    encode_header(header, &mut encoded);
    assert_eq!(encoded.len(), header.encoded_len());
    assert!(
        encoded.len() <= len,
        "minimal form {} longer than input form {len}",
        encoded.len()
    );
    assert_eq!(decode_header(&encoded), Ok(Some((*header, encoded.len()))));
    if encoded.len() == len {
        // The input used the minimal length form, so the encoder reproduces it exactly.
        assert_eq!(&encoded[..], &data[..len]);
    }
}

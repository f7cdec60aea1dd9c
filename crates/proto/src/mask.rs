//! Payload masking (RFC 6455 section 5.3).

/// XORs `buf` in place with the masking key `key`, starting at key phase `offset`.
///
/// Masking is its own inverse, so the same call masks and unmasks. Byte `i` of `buf` is
/// XORed with `key[(offset + i) % 4]`, so a payload processed in pieces stays correct when
/// `offset` is the number of payload bytes that earlier pieces covered.
///
/// The bulk of the slice is processed 8 bytes at a time.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let mut key = key;
    key.rotate_left(offset % 4);
    let key_word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);

    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let masked = u64::from_ne_bytes(word) ^ key_word;
        chunk.copy_from_slice(&masked.to_ne_bytes());
    }
    // Each chunk covers a whole number of key periods, so the remainder starts at phase 0.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mask_bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, byte) in buf.iter_mut().enumerate() {
            *byte ^= key[(offset + i) % 4];
        }
    }

    #[test]
    fn mask_matches_rfc_example() {
        // RFC 6455 section 5.7: masked "Hello" with key 37 fa 21 3d.
        let mut payload = *b"Hello";
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(payload, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn mask_twice_restores_input() {
        let original: Vec<u8> = (0..=255).collect();
        let mut buf = original.clone();
        apply_mask(&mut buf, [1, 2, 3, 4], 3);
        assert_ne!(buf, original);
        apply_mask(&mut buf, [1, 2, 3, 4], 3);
        assert_eq!(buf, original);
    }

    proptest! {
        #[test]
        fn mask_matches_bytewise_reference(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            key in any::<[u8; 4]>(),
            offset in 0usize..16,
        ) {
            let mut fast = data.clone();
            let mut reference = data;
            apply_mask(&mut fast, key, offset);
            mask_bytewise(&mut reference, key, offset);
            prop_assert_eq!(fast, reference);
        }

        #[test]
        fn mask_in_pieces_matches_whole(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            key in any::<[u8; 4]>(),
            cuts in proptest::collection::vec(0usize..300, 0..6),
        ) {
            let mut whole = data.clone();
            apply_mask(&mut whole, key, 0);

            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            cuts.push(0);
            cuts.push(data.len());
            cuts.sort_unstable();
            let mut pieces = data;
            for pair in cuts.windows(2) {
                let (start, end) = (pair[0], pair[1]);
                apply_mask(&mut pieces[start..end], key, start);
            }
            prop_assert_eq!(pieces, whole);
        }
    }
}

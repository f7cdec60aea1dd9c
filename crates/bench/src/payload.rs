//! Echo payloads: a fixed ASCII pattern stamped with a sequence number, so that an echo
//! can be checked against the message it echoes.

use bytes::{Bytes, BytesMut};
use pylon_ws::{Message, Utf8Bytes};

/// Maximum number of hex digits of the sequence number stamped at the start of a payload.
const STAMP_DIGITS: usize = 16;

/// Builds and verifies the messages of one connection.
#[derive(Clone, Debug)]
pub(crate) struct Payload {
    /// The unstamped pattern, `size` bytes of `a..z` repeated. ASCII, so it is valid
    /// UTF-8 for text messages too.
    pattern: Bytes,
    text: bool,
}

/// Reason an echo differs from the message it echoes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Mismatch {
    /// Text where binary was sent, or the reverse.
    Kind,
    Length {
        expected: usize,
        actual: usize,
    },
    /// The sequence number or the pattern differs.
    Content,
}

impl Payload {
    pub(crate) fn new(size: usize, text: bool) -> Self {
        let pattern: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
        Payload {
            pattern: Bytes::from(pattern),
            text,
        }
    }

    fn stamp_len(&self) -> usize {
        self.pattern.len().min(STAMP_DIGITS)
    }

    /// Builds the message with sequence number `seq`: the pattern with the low digits of
    /// `seq` in hex over its first (at most 16) bytes.
    pub(crate) fn message(&self, seq: u64) -> Message {
        let mut buf = BytesMut::from(&self.pattern[..]);
        write_stamp(&mut buf[..self.stamp_len()], seq);
        let bytes = buf.freeze();
        if self.text {
            let text = Utf8Bytes::try_from_bytes(bytes).expect("payload is ASCII");
            Message::Text(text)
        } else {
            Message::Binary(bytes)
        }
    }

    /// Checks that `echo` is the message [`Payload::message`] builds for `seq`.
    pub(crate) fn verify(&self, echo: &Message, seq: u64) -> Result<(), Mismatch> {
        let data: &[u8] = match (echo, self.text) {
            (Message::Text(text), true) => text.as_bytes(),
            (Message::Binary(data), false) => data,
            _ => return Err(Mismatch::Kind),
        };
        if data.len() != self.pattern.len() {
            return Err(Mismatch::Length {
                expected: self.pattern.len(),
                actual: data.len(),
            });
        }
        let stamp_len = self.stamp_len();
        let mut expected_stamp = [0u8; STAMP_DIGITS];
        write_stamp(&mut expected_stamp[..stamp_len], seq);
        if data[..stamp_len] != expected_stamp[..stamp_len]
            || data[stamp_len..] != self.pattern[stamp_len..]
        {
            return Err(Mismatch::Content);
        }
        Ok(())
    }
}

/// Writes the low `out.len()` hex digits of `seq`, most significant first.
fn write_stamp(out: &mut [u8], seq: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut rest = seq;
    for byte in out.iter_mut().rev() {
        *byte = DIGITS[(rest & 0xf) as usize];
        rest >>= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_verifies_against_own_seq() {
        for size in [0, 1, 5, 16, 17, 1024] {
            for text in [false, true] {
                let payload = Payload::new(size, text);
                let message = payload.message(0x1234_5678_9abc);
                assert_eq!(message.len(), size);
                assert_eq!(payload.verify(&message, 0x1234_5678_9abc), Ok(()));
            }
        }
    }

    #[test]
    fn stamp_distinguishes_sequence_numbers() {
        let payload = Payload::new(32, false);
        let message = payload.message(7);
        assert_eq!(payload.verify(&message, 8), Err(Mismatch::Content));
    }

    #[test]
    fn verify_rejects_kind_length_and_content() {
        let payload = Payload::new(20, false);
        let text = Payload::new(20, true).message(1);
        assert_eq!(payload.verify(&text, 1), Err(Mismatch::Kind));

        let short = Message::binary(vec![b'a'; 19]);
        assert_eq!(
            payload.verify(&short, 1),
            Err(Mismatch::Length {
                expected: 20,
                actual: 19
            })
        );

        let Message::Binary(data) = payload.message(1) else {
            panic!("binary payload built a non-binary message");
        };
        let mut corrupted = data.to_vec();
        corrupted[19] ^= 0x01;
        assert_eq!(
            payload.verify(&Message::binary(corrupted), 1),
            Err(Mismatch::Content)
        );
    }
}

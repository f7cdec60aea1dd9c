//! Validated UTF-8 byte buffers and incremental UTF-8 checking.

use std::fmt;
use std::ops::Deref;
use std::str::Utf8Error;

use bytes::Bytes;

/// Immutable bytes that are known to be valid UTF-8.
///
/// A cheap-to-clone string backed by [`Bytes`], so a received text message is handed out
/// without copying.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Creates a value from a static string without copying.
    pub const fn from_static(text: &'static str) -> Self {
        Utf8Bytes(Bytes::from_static(text.as_bytes()))
    }

    /// Wraps `bytes` after checking that they are valid UTF-8.
    ///
    /// # Errors
    ///
    /// Returns the [`Utf8Error`] of the first invalid sequence.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, Utf8Error> {
        if simdutf8::basic::from_utf8(&bytes).is_err() {
            // The fast check does not locate the error, so the standard one runs to build it.
            std::str::from_utf8(&bytes)?;
        }
        Ok(Utf8Bytes(bytes))
    }

    /// Wraps `bytes` without checking them.
    ///
    /// # Safety
    ///
    /// `bytes` must be valid UTF-8, because [`Utf8Bytes::as_str`] relies on it.
    pub(crate) unsafe fn from_bytes_unchecked(bytes: Bytes) -> Self {
        Utf8Bytes(bytes)
    }

    /// Returns the text as a string slice.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor either checks the bytes or takes them from a `str`,
        // and `from_bytes_unchecked` requires its caller to have checked them.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// Returns the underlying bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Returns the underlying bytes without consuming the value.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

impl Deref for Utf8Bytes {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8Bytes {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Utf8Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<String> for Utf8Bytes {
    fn from(text: String) -> Self {
        Utf8Bytes(Bytes::from(text))
    }
}

impl From<&'static str> for Utf8Bytes {
    fn from(text: &'static str) -> Self {
        Utf8Bytes::from_static(text)
    }
}

impl From<Utf8Bytes> for Bytes {
    fn from(text: Utf8Bytes) -> Self {
        text.0
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = Utf8Error;

    fn try_from(bytes: Bytes) -> Result<Self, Utf8Error> {
        Utf8Bytes::try_from_bytes(bytes)
    }
}

impl PartialEq<str> for Utf8Bytes {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8Bytes {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// Outcome of checking a byte slice that may end in the middle of a UTF-8 sequence.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Utf8Prefix {
    /// The first `n` bytes are complete, valid characters, and the rest (at most 3 bytes)
    /// is a valid start of a character that later bytes may complete.
    Valid(usize),
    /// The slice contains a sequence that no later bytes can make valid.
    Invalid,
}

/// Checks `bytes`, allowing an incomplete but so far valid sequence at the end.
pub(crate) fn check_utf8_prefix(bytes: &[u8]) -> Utf8Prefix {
    match simdutf8::compat::from_utf8(bytes) {
        Ok(_) => Utf8Prefix::Valid(bytes.len()),
        // `error_len() == None` means the input ended inside a sequence that is valid so far.
        Err(err) if err.error_len().is_none() => Utf8Prefix::Valid(err.valid_up_to()),
        Err(_) => Utf8Prefix::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Classifies `bytes` as a prefix of a longer text with the standard library's check.
    fn std_prefix(bytes: &[u8]) -> Utf8Prefix {
        match std::str::from_utf8(bytes) {
            Ok(_) => Utf8Prefix::Valid(bytes.len()),
            Err(err) if err.error_len().is_none() => Utf8Prefix::Valid(err.valid_up_to()),
            Err(_) => Utf8Prefix::Invalid,
        }
    }

    /// Text near the UTF-8 edge cases, often longer than 64 bytes, the block size that
    /// `simdutf8` 0.1.5 checks with SIMD instructions.
    fn near_utf8() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            6 => "[a-z]{1,40}".prop_map(String::into_bytes),
            4 => any::<char>().prop_map(|c| c.to_string().into_bytes()),
            1 => (0x80u8..=0xFF).prop_map(|byte| vec![byte]),
        ];
        prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn prefix_check_matches_std(bytes in near_utf8(), cut in any::<prop::sample::Index>()) {
            let bytes = &bytes[..cut.index(bytes.len() + 1)];
            prop_assert_eq!(check_utf8_prefix(bytes), std_prefix(bytes));
        }
    }

    #[test]
    fn prefix_check_matches_std_at_every_offset() {
        let samples: [&[u8]; 8] = [
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
            b"\xe0\x9f\xbf",
            b"\xc1\xbf",
            b"\xf0\x9f\x98",
            b"\xe2\x82",
            b"\xff",
            "€𝄞".as_bytes(),
        ];
        for padding in 0..80 {
            for sample in samples {
                let mut bytes = vec![b'a'; padding];
                bytes.extend_from_slice(sample);
                for end in padding..=bytes.len() {
                    let prefix = &bytes[..end];
                    assert_eq!(check_utf8_prefix(prefix), std_prefix(prefix), "{prefix:x?}");
                }
            }
        }
    }

    #[test]
    fn try_from_bytes_rejects_invalid() {
        let err = Utf8Bytes::try_from_bytes(Bytes::from_static(b"ab\xffcd")).unwrap_err();
        assert_eq!(err.valid_up_to(), 2);
        let ok = Utf8Bytes::try_from_bytes(Bytes::from_static("héllo".as_bytes())).unwrap();
        assert_eq!(ok.as_str(), "héllo");
    }

    #[test]
    fn prefix_accepts_truncated_sequence() {
        // U+20AC (euro sign) is E2 82 AC.
        assert_eq!(check_utf8_prefix(b"a\xe2\x82"), Utf8Prefix::Valid(1));
        assert_eq!(check_utf8_prefix(b"a\xe2"), Utf8Prefix::Valid(1));
        assert_eq!(check_utf8_prefix(b"a\xe2\x82\xac"), Utf8Prefix::Valid(4));
    }

    #[test]
    fn prefix_rejects_impossible_start() {
        // ED A0 starts a UTF-16 surrogate, F4 90 is above U+10FFFF, C0 is never valid:
        // no continuation can repair them, so they fail before the sequence is complete.
        assert_eq!(check_utf8_prefix(b"a\xed\xa0"), Utf8Prefix::Invalid);
        assert_eq!(check_utf8_prefix(b"a\xf4\x90"), Utf8Prefix::Invalid);
        assert_eq!(check_utf8_prefix(b"a\xc0"), Utf8Prefix::Invalid);
        assert_eq!(check_utf8_prefix(b"\xe2\x82a"), Utf8Prefix::Invalid);
    }
}

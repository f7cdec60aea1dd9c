//! HTTP/3 frames (RFC 9114 section 7): a varint type, a varint length and the payload.

use bytes::BufMut;
use quinn::RecvStream;

use crate::error::{Code, Error, ProtocolError};
use crate::varint;

/// DATA: part of a message body or tunnel.
pub const DATA: u64 = 0x0;
/// HEADERS: an encoded field section.
pub const HEADERS: u64 = 0x1;
/// CANCEL_PUSH: cancels a server push.
pub const CANCEL_PUSH: u64 = 0x3;
/// SETTINGS: the first frame of each control stream.
pub const SETTINGS: u64 = 0x4;
/// PUSH_PROMISE: announces a server push.
pub const PUSH_PROMISE: u64 = 0x5;
/// GOAWAY: starts a graceful shutdown.
pub const GOAWAY: u64 = 0x7;
/// MAX_PUSH_ID: the largest push ID a client accepts.
pub const MAX_PUSH_ID: u64 = 0xd;

/// Returns whether `frame_type` is an HTTP/2 frame type with no HTTP/3 meaning
/// (PRIORITY, PING, WINDOW_UPDATE and CONTINUATION), whose receipt is
/// H3_FRAME_UNEXPECTED (RFC 9114 section 7.2.8).
pub fn is_http2_only(frame_type: u64) -> bool {
    matches!(frame_type, 0x2 | 0x6 | 0x8 | 0x9)
}

/// Returns the name of a frame type for error messages.
pub fn name(frame_type: u64) -> String {
    match frame_type {
        DATA => "DATA".into(),
        HEADERS => "HEADERS".into(),
        CANCEL_PUSH => "CANCEL_PUSH".into(),
        SETTINGS => "SETTINGS".into(),
        PUSH_PROMISE => "PUSH_PROMISE".into(),
        GOAWAY => "GOAWAY".into(),
        MAX_PUSH_ID => "MAX_PUSH_ID".into(),
        other if is_http2_only(other) => format!("HTTP/2 frame type 0x{other:x}"),
        other => format!("frame type 0x{other:x}"),
    }
}

/// Appends a frame header for a payload of `len` bytes.
pub fn encode_header(frame_type: u64, len: u64, out: &mut impl BufMut) {
    varint::encode(frame_type, out);
    varint::encode(len, out);
}

/// Appends a whole frame.
pub fn encode(frame_type: u64, payload: &[u8], out: &mut impl BufMut) {
    encode_header(frame_type, payload.len() as u64, out);
    out.put_slice(payload);
}

/// A frame read from a stream. The payload of a frame type that the caller did not ask
/// to buffer is discarded as it is read, and `payload` is empty.
#[derive(Debug)]
pub struct Frame {
    /// The frame type.
    pub frame_type: u64,
    /// The payload, if the type was buffered.
    pub payload: Vec<u8>,
}

/// Reads one varint from `recv`, reading exactly its bytes. Returns `Ok(None)` if the
/// stream ends before its first byte, and an H3_FRAME_ERROR if it ends inside.
pub(crate) async fn read_varint(recv: &mut RecvStream) -> Result<Option<u64>, Error> {
    let mut bytes = [0u8; 8];
    if recv.read(&mut bytes[..1]).await?.is_none_or(|n| n == 0) {
        return Ok(None);
    }
    let len = varint::len_from_first(bytes[0]);
    read_exact(recv, &mut bytes[1..len]).await?;
    Ok(varint::decode(&bytes[..len]).map(|(value, _)| value))
}

async fn read_exact(recv: &mut RecvStream, out: &mut [u8]) -> Result<(), Error> {
    recv.read_exact(out).await.map_err(|error| match error {
        quinn::ReadExactError::FinishedEarly(_) => Error::Connection(ProtocolError::new(
            Code::H3_FRAME_ERROR,
            "stream ended inside a frame",
        )),
        quinn::ReadExactError::ReadError(error) => Error::Read(error),
    })
}

/// Reads the next frame from `recv`. Returns `Ok(None)` when the stream ends cleanly
/// between frames.
///
/// The payloads of the types in `buffered` are read into memory up to `max_payload`
/// bytes; a longer one is H3_EXCESSIVE_LOAD. Other payloads, such as those of reserved
/// and unknown types, are read and discarded in chunks, so memory stays bounded.
///
/// # Errors
///
/// [`Error::Connection`] with H3_FRAME_ERROR for a stream that ends inside a frame, or
/// H3_EXCESSIVE_LOAD for an oversized buffered payload, and [`Error::Read`] if the
/// stream fails.
pub async fn read(
    recv: &mut RecvStream,
    buffered: &[u64],
    max_payload: u64,
) -> Result<Option<Frame>, Error> {
    let Some(frame_type) = read_varint(recv).await? else {
        return Ok(None);
    };
    let len = read_varint(recv).await?.ok_or_else(|| {
        Error::Connection(ProtocolError::new(
            Code::H3_FRAME_ERROR,
            "stream ended inside a frame header",
        ))
    })?;
    if !buffered.contains(&frame_type) {
        skip(recv, len).await?;
        return Ok(Some(Frame {
            frame_type,
            payload: Vec::new(),
        }));
    }
    if len > max_payload {
        return Err(Error::Connection(ProtocolError::new(
            Code::H3_EXCESSIVE_LOAD,
            format!(
                "{} frame of {len} bytes exceeds the limit of {max_payload} bytes",
                name(frame_type)
            ),
        )));
    }
    let mut payload = vec![0; len as usize];
    read_exact(recv, &mut payload).await?;
    Ok(Some(Frame {
        frame_type,
        payload,
    }))
}

/// Reads and discards `len` bytes.
async fn skip(recv: &mut RecvStream, mut len: u64) -> Result<(), Error> {
    while len > 0 {
        let chunk = recv
            .read_chunk(usize::try_from(len).unwrap_or(usize::MAX), true)
            .await?
            .ok_or_else(|| {
                Error::Connection(ProtocolError::new(
                    Code::H3_FRAME_ERROR,
                    "stream ended inside a frame",
                ))
            })?;
        len -= chunk.bytes.len() as u64;
    }
    Ok(())
}

/// Parses a payload that must be exactly one varint, as in GOAWAY, CANCEL_PUSH and
/// MAX_PUSH_ID.
pub fn parse_single_varint(frame_type: u64, payload: &[u8]) -> Result<u64, ProtocolError> {
    match varint::decode(payload) {
        Some((value, len)) if len == payload.len() => Ok(value),
        _ => Err(ProtocolError::new(
            Code::H3_FRAME_ERROR,
            format!("{} payload is not exactly one varint", name(frame_type)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_frame_layout() {
        let mut out = Vec::new();
        encode(HEADERS, b"abc", &mut out);
        assert_eq!(out, [0x01, 0x03, b'a', b'b', b'c']);
        let mut out = Vec::new();
        encode_header(DATA, 70_000, &mut out);
        assert_eq!(out, [0x00, 0x80, 0x01, 0x11, 0x70]);
    }

    #[test]
    fn single_varint_payload() {
        assert_eq!(parse_single_varint(GOAWAY, &[0x40, 0x04]), Ok(4));
        let error = parse_single_varint(GOAWAY, &[0x04, 0x00]).unwrap_err();
        assert_eq!(error.code, Code::H3_FRAME_ERROR);
        let error = parse_single_varint(GOAWAY, &[]).unwrap_err();
        assert_eq!(error.code, Code::H3_FRAME_ERROR);
    }

    #[test]
    fn http2_only_types() {
        for frame_type in [0x2, 0x6, 0x8, 0x9] {
            assert!(is_http2_only(frame_type), "0x{frame_type:x}");
        }
        for frame_type in [DATA, HEADERS, SETTINGS, GOAWAY, 0x21] {
            assert!(!is_http2_only(frame_type), "0x{frame_type:x}");
        }
    }
}

//! Raw frame codec and DEFLATE helpers of the end-to-end conformance suites. The frames are
//! built and parsed here, apart from `pylon-proto`, so that the suites check Pylon against
//! an independent encoding of RFC 6455 and RFC 7692.

#![allow(dead_code, unreachable_pub)]

use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

pub const FIN: u8 = 0x80;
pub const RSV1: u8 = 0x40;
pub const RSV2: u8 = 0x20;
pub const RSV3: u8 = 0x10;

/// Time limit of one step: a read of one frame, a write, or the wait for TCP to close.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Trailing bytes of a DEFLATE sync flush, which permessage-deflate removes from every
/// compressed message (RFC 7692 section 7.2.1).
pub const SYNC_FLUSH_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// One frame as read from the wire, with the payload unmasked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    /// RSV1, RSV2 and RSV3 as the bits 0x40, 0x20 and 0x10 of the first header byte.
    pub rsv: u8,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn rsv1(&self) -> bool {
        self.rsv & RSV1 != 0
    }

    /// Close code of a close frame, or `None` for an empty close payload.
    pub fn close_code(&self) -> Option<u16> {
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// Returns a masking key that differs from every earlier one in this process, and has
/// no zero byte, so that a receiver that ignores the mask sees garbage.
pub fn next_mask() -> [u8; 4] {
    static COUNTER: AtomicU32 = AtomicU32::new(0x1357_9bdf);
    let value = COUNTER
        .fetch_add(0x0101_0101, Ordering::Relaxed)
        .to_be_bytes();
    value.map(|byte| byte | 0x01)
}

/// Encodes one frame with the minimal length form, masked with `mask` if present.
pub fn encode_frame(first_byte: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut frame = Vec::with_capacity(payload.len() + 14);
    frame.push(first_byte);
    match payload.len() {
        len @ 0..=125 => frame.push(mask_bit | len as u8),
        len @ 126..=65535 => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => frame.extend_from_slice(payload),
    }
    frame
}

/// Encodes a frame as a client sends it: masked with a fresh key.
pub fn masked(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(first_byte, payload, Some(next_mask()))
}

/// Encodes a frame as a server sends it: unmasked.
pub fn unmasked(first_byte: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(first_byte, payload, None)
}

/// A close payload: the code in network byte order followed by the reason.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    payload
}

/// Reads one frame. Returns `Ok(None)` if the peer ended the stream before the first
/// header byte.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 2];
    let first = reader.read(&mut head[..1]).await?;
    if first == 0 {
        return Ok(None);
    }
    reader.read_exact(&mut head[1..]).await?;
    let len = match head[1] & 0x7f {
        126 => u64::from(reader.read_u16().await?),
        127 => reader.read_u64().await?,
        len => u64::from(len),
    };
    let mask = if head[1] & 0x80 != 0 {
        let mut key = [0u8; 4];
        reader.read_exact(&mut key).await?;
        Some(key)
    } else {
        None
    };
    let len = usize::try_from(len).map_err(|_| io::Error::other("frame length overflows"))?;
    if len > 64 << 20 {
        return Err(io::Error::other(format!(
            "frame of {len} bytes is larger than any frame these suites expect"
        )));
    }
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await?;
    if let Some(key) = mask {
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= key[i % 4];
        }
    }
    Ok(Some(Frame {
        fin: head[0] & FIN != 0,
        rsv: head[0] & (RSV1 | RSV2 | RSV3),
        opcode: head[0] & 0x0f,
        mask,
        payload,
    }))
}

/// Reads one frame within [`STEP_TIMEOUT`], panicking with `case` in the message if none
/// arrives.
pub async fn expect_frame<R: AsyncRead + Unpin>(reader: &mut R, case: &str) -> Frame {
    match tokio::time::timeout(STEP_TIMEOUT, read_frame(reader)).await {
        Err(_) => panic!("{case}: no frame within {STEP_TIMEOUT:?}"),
        Ok(Err(error)) => panic!("{case}: reading a frame failed: {error}"),
        Ok(Ok(None)) => panic!("{case}: the peer closed TCP where a frame was expected"),
        Ok(Ok(Some(frame))) => frame,
    }
}

/// How the peer ended the TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpEnd {
    /// An orderly close (FIN): a read returned 0.
    Fin,
    /// The connection was reset (RST).
    Reset,
}

/// Waits for the peer to end the TCP connection and returns how it did. Fails if any
/// byte arrives first or the peer keeps the connection open past [`STEP_TIMEOUT`].
pub async fn expect_tcp_end<R: AsyncRead + Unpin>(reader: &mut R, case: &str) -> TcpEnd {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(STEP_TIMEOUT, reader.read(&mut buf)).await {
        Err(_) => panic!("{case}: the peer did not close TCP within {STEP_TIMEOUT:?}"),
        Ok(Ok(0)) => TcpEnd::Fin,
        Ok(Ok(n)) => panic!(
            "{case}: expected TCP to close, got {n} more bytes: {:02x?}",
            &buf[..n.min(32)]
        ),
        Ok(Err(error)) if error.kind() == io::ErrorKind::ConnectionReset => TcpEnd::Reset,
        Ok(Err(error)) => panic!("{case}: reading after the close frame failed: {error}"),
    }
}

/// Writes `bytes` within [`STEP_TIMEOUT`].
pub async fn write_all<W: AsyncWrite + Unpin>(writer: &mut W, bytes: &[u8], case: &str) {
    let write = async {
        writer.write_all(bytes).await?;
        writer.flush().await
    };
    match tokio::time::timeout(STEP_TIMEOUT, write).await {
        Err(_) => panic!(
            "{case}: writing {} bytes took over {STEP_TIMEOUT:?}",
            bytes.len()
        ),
        Ok(Err(error)) => panic!("{case}: writing {} bytes failed: {error}", bytes.len()),
        Ok(Ok(())) => {}
    }
}

/// Writes `bytes` in chunks of `chunk` bytes, one write and one scheduler yield per chunk,
/// so that the receiver sees frame headers and payloads split at many offsets.
pub async fn write_chunked<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    chunk: usize,
    case: &str,
) {
    let trickle = async {
        for part in bytes.chunks(chunk.max(1)) {
            writer.write_all(part).await?;
            writer.flush().await?;
            tokio::task::yield_now().await;
        }
        io::Result::Ok(())
    };
    let limit = STEP_TIMEOUT * 3;
    match tokio::time::timeout(limit, trickle).await {
        Err(_) => panic!(
            "{case}: trickling {} bytes took over {limit:?}",
            bytes.len()
        ),
        Ok(Err(error)) => panic!("{case}: trickling {} bytes failed: {error}", bytes.len()),
        Ok(Ok(())) => {}
    }
}

/// Deterministic bytes that compress poorly, for messages whose size matters more than
/// their content.
pub fn noise(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

/// Deterministic ASCII text of `len` bytes that compresses well.
pub fn repetitive_text(len: usize) -> Vec<u8> {
    b"pylon conformance: the quick brown fox jumps over the lazy dog. "
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

/// A permessage-deflate compressor for one direction, made with flate2 raw DEFLATE.
pub struct Deflater {
    window_bits: u8,
    level: u32,
    no_context_takeover: bool,
    stream: Compress,
}

impl Deflater {
    /// A compressor with a `window_bits` window (9 to 15). With `no_context_takeover`, every
    /// message starts with an empty window. Level 0 writes stored blocks only, which keeps
    /// within any window, including the 8-bit one that zlib cannot write.
    pub fn new(window_bits: u8, level: u32, no_context_takeover: bool) -> Deflater {
        Deflater {
            window_bits,
            level,
            no_context_takeover,
            stream: Compress::new_with_window_bits(Compression::new(level), false, window_bits),
        }
    }

    /// Compresses one message and removes the sync flush tail.
    ///
    /// An empty message becomes the single byte 0x00, an empty stored block whose
    /// length fields are the stripped tail (RFC 7692 section 7.2.3.6). zlib cannot be asked
    /// for it, because it writes no second sync flush without new input.
    pub fn compress(&mut self, message: &[u8]) -> Vec<u8> {
        if message.is_empty() {
            return vec![0x00];
        }
        if self.no_context_takeover {
            self.stream = Compress::new_with_window_bits(
                Compression::new(self.level),
                false,
                self.window_bits,
            );
        }
        let mut out = Vec::with_capacity(message.len() / 2 + 64);
        let mut input = message;
        loop {
            out.reserve(4096);
            let before_in = self.stream.total_in();
            let before_out = out.len();
            self.stream
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .expect("raw deflate of a test message");
            let consumed = (self.stream.total_in() - before_in) as usize;
            input = &input[consumed..];
            assert!(
                consumed > 0 || out.len() > before_out || out.ends_with(&SYNC_FLUSH_TAIL),
                "raw deflate made no progress"
            );
            if input.is_empty() && out.ends_with(&SYNC_FLUSH_TAIL) && out.len() < out.capacity() {
                break;
            }
        }
        assert!(out.ends_with(&SYNC_FLUSH_TAIL), "sync flush tail missing");
        out.truncate(out.len() - SYNC_FLUSH_TAIL.len());
        out
    }
}

/// A permessage-deflate decompressor for one direction.
pub struct Inflater {
    window_bits: u8,
    no_context_takeover: bool,
    stream: Decompress,
}

impl Inflater {
    /// A decompressor with a `window_bits` window (9 to 15). With `no_context_takeover`,
    /// every message is decompressed with an empty window, so a back-reference into an
    /// earlier message fails.
    pub fn new(window_bits: u8, no_context_takeover: bool) -> Inflater {
        Inflater {
            window_bits,
            no_context_takeover,
            stream: Decompress::new_with_window_bits(false, window_bits),
        }
    }

    /// Decompresses one message: its payload with the sync flush tail appended.
    ///
    /// Output is produced 64 bytes at a time, so that every back-reference longer than
    /// that is read from the decompressor's window, and a distance beyond the window fails
    /// instead of being served from the output buffer.
    pub fn decompress(&mut self, payload: &[u8]) -> Result<Vec<u8>, String> {
        if self.no_context_takeover {
            self.stream = Decompress::new_with_window_bits(false, self.window_bits);
        }
        let mut input = payload.to_vec();
        input.extend_from_slice(&SYNC_FLUSH_TAIL);
        let mut rest = &input[..];
        let mut out = Vec::new();
        let mut chunk = [0u8; 64];
        loop {
            let before_in = self.stream.total_in();
            let before_out = self.stream.total_out();
            let status = self
                .stream
                .decompress(rest, &mut chunk, FlushDecompress::Sync)
                .map_err(|error| format!("invalid DEFLATE data: {error}"))?;
            let consumed = (self.stream.total_in() - before_in) as usize;
            let produced = (self.stream.total_out() - before_out) as usize;
            rest = &rest[consumed..];
            out.extend_from_slice(&chunk[..produced]);
            if status == Status::StreamEnd {
                return Ok(out);
            }
            if rest.is_empty() && produced < chunk.len() {
                return Ok(out);
            }
            if consumed == 0 && produced == 0 {
                return Err(format!(
                    "DEFLATE stream stalled with {} input bytes left",
                    rest.len()
                ));
            }
        }
    }
}

/// The parameters of the `permessage-deflate` element of a `Sec-WebSocket-Extensions`
/// value, lowercased and sorted, or `None` if the value has no such element.
pub fn deflate_params(extensions: &str) -> Option<Vec<String>> {
    let element = extensions
        .split(',')
        .find(|element| element.split(';').next().map(str::trim) == Some("permessage-deflate"))?;
    let mut params: Vec<String> = element
        .split(';')
        .skip(1)
        .map(|param| param.trim().replace(' ', "").to_ascii_lowercase())
        .collect();
    params.sort();
    Some(params)
}

/// The value of header `name` in a raw HTTP response head, if present.
pub fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// Rebuilds an HTTP/2 or HTTP/3 message head as text: `first_line`, then one
/// `name: value` line per header, each ending in CRLF, so that [`header_value`] reads it
/// like an HTTP/1.1 head.
pub fn head_text(first_line: &str, headers: &http::HeaderMap) -> String {
    let mut head = format!("{first_line}\r\n");
    for (name, value) in headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head
}

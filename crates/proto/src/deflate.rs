//! The permessage-deflate extension (RFC 7692): negotiation of its parameters and the
//! settings of the per-message compressor and decompressor.
//!
//! [`DeflateConfig`] contains one endpoint's settings. A server puts it in
//! [`crate::handshake::ServerConfig::deflate`], a client in
//! [`crate::handshake::ClientRequest::deflate`]. The handshake then returns a
//! [`PerMessageDeflate`]: the agreed [`DeflateParams`] and the settings of both directions
//! of one connection. Put it in [`crate::Config::deflate`] before creating the
//! [`crate::Connection`], which then compresses and decompresses data messages.
//!
//! The compressor is zlib-rs, through flate2. zlib-family deflaters cannot write a raw
//! DEFLATE stream with a 256-byte window (zlib turns window bits 8 into 9), so this endpoint
//! never agrees to compress with `server_max_window_bits=8` or `client_max_window_bits=8`.
//! The decompressor reads streams made with every window size from 8 to 15 bits.

mod codec;
mod negotiate;
#[cfg(test)]
mod tests;

use std::fmt;

use crate::Role;

pub(crate) use codec::{Deflater, Inflater, SYNC_FLUSH_TAIL};
pub(crate) use negotiate::{negotiate_server, offer_header, verify_response};

/// Extension token of permessage-deflate in `Sec-WebSocket-Extensions`.
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// Smallest window, in bits, that this endpoint's compressor can use. RFC 7692 allows 8,
/// but zlib-family deflaters turn 8 into 9 for a raw stream.
pub const MIN_COMPRESS_WINDOW_BITS: u8 = 9;

/// Largest window, in bits, of permessage-deflate (32 KiB, RFC 7692 section 7.1.2).
pub const MAX_WINDOW_BITS: u8 = 15;

/// Smallest window size parameter that RFC 7692 section 7.1.2 allows.
pub const MIN_WINDOW_BITS: u8 = 8;

/// One endpoint's settings for permessage-deflate.
///
/// The `peer_*` fields request limits on the other endpoint's compressor. A server puts them in its
/// response. A client puts them in its offer, and the server may agree or decline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeflateConfig {
    /// Maximum window of this endpoint's compressor, in bits, from 9 to 15. A smaller
    /// window uses less memory and usually compresses less. Values outside 9..=15 are
    /// clamped. Default 15.
    pub max_window_bits: u8,
    /// Whether this endpoint resets its compressor after every message. It then keeps no
    /// compressor between messages, and announces this to the peer so that the peer can
    /// drop its decompressor too. Default `false`.
    pub no_context_takeover: bool,
    /// Whether to request that the peer reset its compressor after every message, so that
    /// this endpoint keeps no decompressor between messages. Default `false`.
    pub peer_no_context_takeover: bool,
    /// Maximum window to request for the peer's compressor, in bits, from 9 to 15; 8 is
    /// raised to 9 because zlib-based compressors, Pylon's among them, cannot compress with
    /// a 256-byte window and would fail the handshake. `None` requests no limit. A server
    /// can only limit a client that offered `client_max_window_bits`. Default `None`.
    pub peer_max_window_bits: Option<u8>,
    /// Compression level from 0 (stored blocks only) to 9 (smallest output). Values above
    /// 9 are treated as 9. Default 6, the zlib default.
    pub level: u8,
    /// Messages shorter than this many bytes are sent uncompressed, because compressing
    /// them costs more CPU time than the bytes it saves. Default 64.
    pub min_message_size: usize,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        DeflateConfig {
            max_window_bits: MAX_WINDOW_BITS,
            no_context_takeover: false,
            peer_no_context_takeover: false,
            peer_max_window_bits: None,
            level: 6,
            min_message_size: 64,
        }
    }
}

impl DeflateConfig {
    /// Returns [`DeflateConfig::max_window_bits`] clamped to the range the compressor
    /// supports.
    pub(crate) fn compress_window_bits(&self) -> u8 {
        self.max_window_bits
            .clamp(MIN_COMPRESS_WINDOW_BITS, MAX_WINDOW_BITS)
    }

    /// Returns [`DeflateConfig::peer_max_window_bits`] clamped to 9..=15.
    pub(crate) fn peer_window_bits(&self) -> Option<u8> {
        self.peer_max_window_bits
            .map(|bits| bits.clamp(MIN_COMPRESS_WINDOW_BITS, MAX_WINDOW_BITS))
    }
}

/// Agreed parameters of permessage-deflate, as the server's response lists them
/// (RFC 7692 section 7.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DeflateParams {
    /// The server resets its compressor after every message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after every message.
    pub client_no_context_takeover: bool,
    /// Maximum window of the server's compressor, in bits. `None` means 15.
    pub server_max_window_bits: Option<u8>,
    /// Maximum window of the client's compressor, in bits. `None` means 15.
    pub client_max_window_bits: Option<u8>,
}

impl DeflateParams {
    /// Returns whether the endpoint in `role` resets its compressor after every message.
    pub fn no_context_takeover(&self, role: Role) -> bool {
        match role {
            Role::Server => self.server_no_context_takeover,
            Role::Client => self.client_no_context_takeover,
        }
    }

    /// Returns the maximum window, in bits, of the compressor of the endpoint in `role`.
    pub fn max_window_bits(&self, role: Role) -> u8 {
        let bits = match role {
            Role::Server => self.server_max_window_bits,
            Role::Client => self.client_max_window_bits,
        };
        bits.unwrap_or(MAX_WINDOW_BITS)
    }
}

/// Formats the parameters as a `Sec-WebSocket-Extensions` element, such as
/// `permessage-deflate; server_no_context_takeover; client_max_window_bits=12`.
impl fmt::Display for DeflateParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXTENSION_NAME)?;
        if self.server_no_context_takeover {
            f.write_str("; server_no_context_takeover")?;
        }
        if self.client_no_context_takeover {
            f.write_str("; client_no_context_takeover")?;
        }
        if let Some(bits) = self.server_max_window_bits {
            write!(f, "; server_max_window_bits={bits}")?;
        }
        if let Some(bits) = self.client_max_window_bits {
            write!(f, "; client_max_window_bits={bits}")?;
        }
        Ok(())
    }
}

/// permessage-deflate as one connection runs it: the agreed parameters and the settings
/// of this endpoint's compressor (send side) and decompressor (receive side).
///
/// The handshake builds it with [`PerMessageDeflate::new`]. Put it in
/// [`crate::Config::deflate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PerMessageDeflate {
    /// Parameters agreed in the handshake.
    pub params: DeflateParams,
    /// Window of this endpoint's compressor, in bits, from 9 to 15.
    pub send_window_bits: u8,
    /// Whether this endpoint drops its compressor after every message.
    pub send_no_context_takeover: bool,
    /// Window of this endpoint's decompressor, in bits, from 9 to 15.
    pub receive_window_bits: u8,
    /// Whether this endpoint drops its decompressor after every message.
    pub receive_no_context_takeover: bool,
    /// Compression level from 0 to 9.
    pub level: u8,
    /// Messages shorter than this many bytes are sent uncompressed.
    pub min_message_size: usize,
}

impl PerMessageDeflate {
    /// Combines the agreed `params` with the local `config` of the endpoint in `role`.
    ///
    /// This endpoint's compressor uses the smaller of the agreed window and
    /// [`DeflateConfig::max_window_bits`], and at least 9 bits. It resets after every
    /// message if the parameters require it or [`DeflateConfig::no_context_takeover`] is
    /// set. The decompressor uses the peer's agreed window (at least 9 bits, which reads
    /// streams made with 8), and keeps no context between messages if the peer resets.
    pub fn new(role: Role, params: DeflateParams, config: &DeflateConfig) -> Self {
        let peer = match role {
            Role::Server => Role::Client,
            Role::Client => Role::Server,
        };
        PerMessageDeflate {
            params,
            send_window_bits: params
                .max_window_bits(role)
                .min(config.compress_window_bits())
                .max(MIN_COMPRESS_WINDOW_BITS),
            send_no_context_takeover: params.no_context_takeover(role)
                || config.no_context_takeover,
            receive_window_bits: params
                .max_window_bits(peer)
                .clamp(MIN_COMPRESS_WINDOW_BITS, MAX_WINDOW_BITS),
            receive_no_context_takeover: params.no_context_takeover(peer),
            level: config.level.min(9),
            min_message_size: config.min_message_size,
        }
    }
}

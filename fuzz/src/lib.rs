//! Input types and checks shared by the handshake and compression fuzz targets.
//!
//! Header names and values are mostly drawn from the ones the WebSocket handshake reads,
//! so that the fuzzer reaches the checks behind the first few, and partly raw bytes, so
//! that malformed values are covered too.

use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::{
    CONNECTION, HOST, HeaderName, ORIGIN, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS,
    SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderValue};
use pylon_proto::{DeflateConfig, PerMessageDeflate};

/// Values that the handshake compares against, in the forms clients and servers send.
const KNOWN_VALUES: &[&str] = &[
    "websocket",
    "WebSocket",
    "Upgrade",
    "keep-alive, Upgrade",
    "13",
    " 13 ",
    "8",
    "chat",
    "chat, superchat",
    "https://example.com",
    "permessage-deflate",
    "permessage-deflate; client_max_window_bits",
    "permessage-deflate; server_no_context_takeover; client_max_window_bits=10",
    "permessage-deflate; server_max_window_bits=8, permessage-deflate",
    "permessage-deflate; client_no_context_takeover; server_max_window_bits=\"12\"",
    "x-webkit-deflate-frame",
    "localhost:8080",
    "dGhlIHNhbXBsZSBub25jZQ==",
    "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=",
    "",
];

/// Header name of one input header line.
#[derive(Arbitrary, Debug)]
pub enum NameInput {
    Host,
    Upgrade,
    Connection,
    Key,
    Version,
    Protocol,
    Extensions,
    Origin,
    Accept,
    /// Any name, skipped when it is not a valid header name.
    Other(Vec<u8>),
}

impl NameInput {
    fn to_name(&self) -> Option<HeaderName> {
        let name = match self {
            NameInput::Host => HOST,
            NameInput::Upgrade => UPGRADE,
            NameInput::Connection => CONNECTION,
            NameInput::Key => SEC_WEBSOCKET_KEY,
            NameInput::Version => SEC_WEBSOCKET_VERSION,
            NameInput::Protocol => SEC_WEBSOCKET_PROTOCOL,
            NameInput::Extensions => SEC_WEBSOCKET_EXTENSIONS,
            NameInput::Origin => ORIGIN,
            NameInput::Accept => SEC_WEBSOCKET_ACCEPT,
            NameInput::Other(bytes) => return HeaderName::from_bytes(bytes).ok(),
        };
        Some(name)
    }
}

/// Header value of one input header line.
#[derive(Arbitrary, Debug)]
pub enum ValueInput {
    /// One of [`KNOWN_VALUES`], chosen modulo its length.
    Known(u8),
    /// The base64 encoding of 16 bytes: a valid `Sec-WebSocket-Key`.
    Key([u8; 16]),
    /// The accept value that matches the request key of the target, if it has one.
    ExpectedAccept,
    /// Any bytes, skipped when they are not a valid header value.
    Raw(Vec<u8>),
}

impl ValueInput {
    fn to_value(&self, expected_accept: &str) -> Option<HeaderValue> {
        match self {
            ValueInput::Known(index) => {
                let text = KNOWN_VALUES[usize::from(*index) % KNOWN_VALUES.len()];
                Some(HeaderValue::from_static(text))
            }
            ValueInput::Key(nonce) => HeaderValue::from_str(&BASE64.encode(nonce)).ok(),
            ValueInput::ExpectedAccept => HeaderValue::from_str(expected_accept).ok(),
            ValueInput::Raw(bytes) => HeaderValue::from_bytes(bytes).ok(),
        }
    }
}

/// Builds a header map from the input lines in order, skipping lines whose name or value
/// is invalid. `expected_accept` is the value of [`ValueInput::ExpectedAccept`].
pub fn build_headers(lines: &[(NameInput, ValueInput)], expected_accept: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in lines {
        if let (Some(name), Some(value)) = (name.to_name(), value.to_value(expected_accept)) {
            headers.append(name, value);
        }
    }
    headers
}

/// permessage-deflate settings of one endpoint. Out-of-range values are kept, because
/// `DeflateConfig` documents how it clamps them.
#[derive(Arbitrary, Debug)]
pub struct DeflateInput {
    pub max_window_bits: u8,
    pub no_context_takeover: bool,
    pub peer_no_context_takeover: bool,
    pub peer_max_window_bits: Option<u8>,
    pub level: u8,
    pub min_message_size: u8,
}

impl DeflateInput {
    pub fn to_config(&self) -> DeflateConfig {
        DeflateConfig {
            max_window_bits: self.max_window_bits,
            no_context_takeover: self.no_context_takeover,
            peer_no_context_takeover: self.peer_no_context_takeover,
            peer_max_window_bits: self.peer_max_window_bits,
            level: self.level,
            min_message_size: usize::from(self.min_message_size),
        }
    }
}

/// Checks that the compression settings the two endpoints derived from one handshake fit
/// together: both saw the same parameters, each compressor's window fits the peer's
/// decompressor, and a decompressor that drops its context after each message faces a
/// compressor that resets after each message.
pub fn check_deflate_pair(server: &PerMessageDeflate, client: &PerMessageDeflate) {
    assert_eq!(
        server.params, client.params,
        "endpoints disagree on the parameters"
    );
    for (sender, receiver, direction) in [
        (server, client, "server to client"),
        (client, server, "client to server"),
    ] {
        assert!(
            sender.send_window_bits <= receiver.receive_window_bits,
            "{direction}: compressor window {} above decompressor window {}",
            sender.send_window_bits,
            receiver.receive_window_bits
        );
        assert!(
            (9..=15).contains(&sender.send_window_bits),
            "{direction}: compressor window {}",
            sender.send_window_bits
        );
        if receiver.receive_no_context_takeover {
            assert!(
                sender.send_no_context_takeover,
                "{direction}: decompressor drops its context but the compressor keeps it"
            );
        }
    }
}

//! The opening handshake (RFC 6455 section 4) on top of the `http` crate's types.
//!
//! Server side: [`validate_request`] checks an upgrade request and returns an [`Accept`],
//! whose [`Accept::response`] is the `101 Switching Protocols` response, or a
//! [`HandshakeError`], whose [`HandshakeError::response`] is the error response.
//!
//! Client side: [`ClientRequest`] contains a random key and the offered subprotocols, builds
//! the request headers and verifies the server's response.
//!
//! Over HTTP/2 and HTTP/3 a WebSocket opens with an extended CONNECT request instead
//! (RFC 8441, RFC 9220): [`validate_connect_request`] checks it on the server, and
//! [`ClientRequest::connect_headers`] and [`ClientRequest::verify_connect`] serve the
//! client. [`Accept::response`] is then `200 OK`.
//!
//! The only extension is permessage-deflate (RFC 7692, see [`crate::deflate`]), negotiated
//! when [`ServerConfig::deflate`] or [`ClientRequest::deflate`] is set. A server ignores
//! other extension offers, and a client rejects every extension it did not offer.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::{
    CONNECTION, CONTENT_TYPE, HOST, HeaderName, ORIGIN, SEC_WEBSOCKET_ACCEPT,
    SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION,
    UPGRADE,
};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, Version};
use rand::Rng;
use sha1::{Digest, Sha1};

use crate::Role;
use crate::deflate::{self, DeflateConfig, PerMessageDeflate};

/// GUID appended to the client key before hashing (RFC 6455 section 1.3).
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version this crate speaks (RFC 6455 section 4.1).
pub const VERSION: &str = "13";

/// Computes the `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key` value: the base64
/// encoding of the SHA-1 hash of the key followed by [`GUID`] (RFC 6455 section 4.2.2).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(GUID.as_bytes());
    BASE64.encode(sha1.finalize())
}

/// Server settings for the opening handshake.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerConfig {
    /// Supported subprotocols in server preference order. The first one that the client
    /// also offers is selected. Names are compared case-sensitively.
    pub protocols: Vec<String>,
    /// Policy for the request's `Origin` header.
    pub origins: OriginPolicy,
    /// permessage-deflate settings, or `None`, the default, to decline every offer of
    /// compression.
    pub deflate: Option<DeflateConfig>,
}

/// Set of request origins that the server accepts (RFC 6455 section 10.2).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum OriginPolicy {
    /// Accept every origin.
    #[default]
    Any,
    /// Accept only these origins, such as `https://chat.example.com`, compared with ASCII
    /// case-insensitive equality.
    ///
    /// A request without an `Origin` header is accepted. Browsers always send `Origin` on
    /// WebSocket requests, so this still rejects cross-site pages, and a client that is
    /// not a browser can send any `Origin` it likes, so requiring the header would not
    /// stop it.
    AllowList(Vec<String>),
}

/// Result of a valid opening request, from which the successful response is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accept {
    /// Value of the `Sec-WebSocket-Accept` response header, or `None` for a WebSocket
    /// opened by extended CONNECT over HTTP/2 or HTTP/3, which has no key (RFC 8441
    /// section 5).
    pub accept_key: Option<String>,
    /// Selected subprotocol, or `None` if the client offered none that the server supports.
    pub protocol: Option<String>,
    /// Agreed permessage-deflate, or `None` if compression is off or no offer was
    /// acceptable. Set it as [`crate::Config::deflate`] of the server's connection.
    pub deflate: Option<PerMessageDeflate>,
}

impl Accept {
    /// Builds the successful response.
    ///
    /// For an HTTP/1.1 upgrade it is `101 Switching Protocols` with the `Upgrade`,
    /// `Connection` and `Sec-WebSocket-Accept` headers. For an extended CONNECT it is
    /// `200 OK` without them (RFC 8441 section 5). Both carry `Sec-WebSocket-Protocol` if a
    /// subprotocol was selected and `Sec-WebSocket-Extensions` if permessage-deflate was
    /// agreed.
    pub fn response(&self) -> Response<()> {
        let mut response = Response::new(());
        let headers = response.headers_mut();
        if let Some(accept_key) = &self.accept_key {
            headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
            headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
            // The accept key is base64, so it is a valid header value.
            if let Ok(value) = HeaderValue::from_str(accept_key) {
                headers.insert(SEC_WEBSOCKET_ACCEPT, value);
            }
            *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        }
        let headers = response.headers_mut();
        // The protocol is a token the client sent, so it is a valid header value.
        if let Some(protocol) = &self.protocol
            && let Ok(value) = HeaderValue::from_str(protocol)
        {
            headers.insert(SEC_WEBSOCKET_PROTOCOL, value);
        }
        // The parameters are tokens and digits, so the value is a valid header value.
        if let Some(deflate) = &self.deflate
            && let Ok(value) = HeaderValue::from_str(&deflate.params.to_string())
        {
            headers.insert(SEC_WEBSOCKET_EXTENSIONS, value);
        }
        response
    }
}

/// A failed opening handshake.
///
/// Variants up to [`HandshakeError::OriginNotAllowed`] are faults in a client's request
/// that [`validate_request`] reports, and the rest are faults in a server's response that
/// [`ClientRequest::verify_response`] reports.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// The request method was not GET (RFC 6455 section 4.1).
    #[error("websocket upgrade request must use the GET method")]
    MethodNotGet,
    /// The request did not use HTTP/1.1, which the `Upgrade` mechanism requires
    /// (RFC 6455 section 4.1). HTTP/2 and HTTP/3 forbid the `Upgrade` and `Connection`
    /// headers, and carry WebSocket over extended CONNECT (RFC 8441, RFC 9220) instead.
    #[error("websocket upgrade request must use HTTP/1.1")]
    HttpVersion,
    /// The request had no `Host` header.
    #[error("websocket upgrade request is missing the Host header")]
    MissingHost,
    /// The request had more than one `Host` header (RFC 9112 section 3.2).
    #[error("websocket upgrade request has more than one Host header")]
    InvalidHost,
    /// No `Upgrade` header contained the `websocket` token.
    #[error("missing `websocket` token in the Upgrade header")]
    MissingUpgrade,
    /// No `Connection` header contained the `upgrade` token.
    #[error("missing `upgrade` token in the Connection header")]
    MissingConnectionUpgrade,
    /// The request had no `Sec-WebSocket-Key` header.
    #[error("websocket upgrade request is missing the Sec-WebSocket-Key header")]
    MissingKey,
    /// `Sec-WebSocket-Key` was repeated or was not the base64 encoding of 16 bytes.
    #[error("Sec-WebSocket-Key must be one base64-encoded 16-byte value")]
    InvalidKey,
    /// The request had no `Sec-WebSocket-Version` header.
    #[error(
        "websocket upgrade request is missing Sec-WebSocket-Version, the supported version is 13"
    )]
    MissingVersion,
    /// `Sec-WebSocket-Version` was not `13`.
    #[error("Sec-WebSocket-Version {0:?} is not supported, the supported version is 13")]
    UnsupportedVersion(String),
    /// A WebSocket request over HTTP/2 or HTTP/3 did not use the CONNECT method, which
    /// those versions require (RFC 8441 section 4, RFC 9220 section 3).
    #[error("websocket request over HTTP/2 or HTTP/3 must be an extended CONNECT request")]
    MethodNotConnect,
    /// A CONNECT request had no `:protocol` pseudo-header, so it asked for a TCP tunnel,
    /// which this server does not provide.
    #[error(
        "CONNECT request is missing the :protocol pseudo-header, expected :protocol = websocket"
    )]
    MissingProtocol,
    /// The `:protocol` pseudo-header of an extended CONNECT request was not `websocket`.
    #[error(
        "extended CONNECT :protocol {0:?} is not supported, the supported protocol is websocket"
    )]
    UnsupportedProtocol(String),
    /// An extended CONNECT request lacked `:scheme`, `:path` or `:authority`
    /// (RFC 8441 section 4).
    #[error("extended CONNECT request is missing the {0} pseudo-header")]
    MissingPseudoHeader(&'static str),
    /// The `Origin` header was not in [`OriginPolicy::AllowList`].
    #[error("origin {0:?} is not allowed")]
    OriginNotAllowed(String),
    /// The server's response status was not `101 Switching Protocols` for an HTTP/1.1
    /// upgrade, or not 2xx for an extended CONNECT.
    #[error("server returned status {0}, which does not accept the websocket request")]
    UnexpectedStatus(u16),
    /// The server's response had no `Sec-WebSocket-Accept` header.
    #[error("server response is missing the Sec-WebSocket-Accept header")]
    MissingAccept,
    /// `Sec-WebSocket-Accept` did not match the request key (RFC 6455 section 4.1).
    #[error("Sec-WebSocket-Accept does not match the Sec-WebSocket-Key that was sent")]
    AcceptMismatch,
    /// The server selected a subprotocol that the client did not offer, or several.
    #[error("server selected subprotocol {0:?}, which the client did not offer")]
    UnknownProtocol(String),
    /// The server selected an extension that the client did not offer.
    #[error("server selected extension {0:?}, which the client did not offer")]
    UnexpectedExtension(String),
    /// The server's permessage-deflate parameters are malformed or do not fit the offer
    /// (RFC 7692 section 7.1).
    #[error("server response has invalid permessage-deflate parameters: {0}")]
    InvalidExtension(String),
    /// A value for a client request header was not valid: a host with control
    /// characters, or a subprotocol that is not an HTTP token.
    #[error("invalid value {0:?} for a websocket request header, expected an HTTP token or host")]
    InvalidHeaderValue(String),
}

impl HandshakeError {
    /// Returns the HTTP status of the response to this fault.
    ///
    /// - `426 Upgrade Required` for a missing or unsupported `Sec-WebSocket-Version`
    ///   (RFC 6455 section 4.4). A missing version counts as unsupported, since the client
    ///   did not ask for version 13.
    /// - `403 Forbidden` for an origin that is not allowed (RFC 6455 section 4.2.2).
    /// - `400 Bad Request` for every other request fault, a non-GET method included.
    /// - `502 Bad Gateway` for faults in a server's response, the status a proxy reports for
    ///   an invalid upstream response.
    pub fn status(&self) -> StatusCode {
        match self {
            HandshakeError::MissingVersion | HandshakeError::UnsupportedVersion(_) => {
                StatusCode::UPGRADE_REQUIRED
            }
            HandshakeError::OriginNotAllowed(_) => StatusCode::FORBIDDEN,
            HandshakeError::MethodNotGet
            | HandshakeError::MethodNotConnect
            | HandshakeError::MissingProtocol
            | HandshakeError::UnsupportedProtocol(_)
            | HandshakeError::MissingPseudoHeader(_)
            | HandshakeError::HttpVersion
            | HandshakeError::MissingHost
            | HandshakeError::InvalidHost
            | HandshakeError::MissingUpgrade
            | HandshakeError::MissingConnectionUpgrade
            | HandshakeError::MissingKey
            | HandshakeError::InvalidKey
            | HandshakeError::InvalidHeaderValue(_) => StatusCode::BAD_REQUEST,
            HandshakeError::UnexpectedStatus(_)
            | HandshakeError::MissingAccept
            | HandshakeError::AcceptMismatch
            | HandshakeError::UnknownProtocol(_)
            | HandshakeError::UnexpectedExtension(_)
            | HandshakeError::InvalidExtension(_) => StatusCode::BAD_GATEWAY,
        }
    }

    /// Returns a short snake_case identifier of the fault, for metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            HandshakeError::MethodNotGet => "bad_method",
            HandshakeError::HttpVersion => "bad_http_version",
            HandshakeError::MissingHost => "missing_host",
            HandshakeError::InvalidHost => "invalid_host",
            HandshakeError::MissingUpgrade => "missing_upgrade",
            HandshakeError::MissingConnectionUpgrade => "missing_connection_upgrade",
            HandshakeError::MissingKey => "missing_key",
            HandshakeError::InvalidKey => "invalid_key",
            HandshakeError::MissingVersion => "missing_version",
            HandshakeError::UnsupportedVersion(_) => "unsupported_version",
            HandshakeError::MethodNotConnect => "method_not_connect",
            HandshakeError::MissingProtocol => "missing_protocol",
            HandshakeError::UnsupportedProtocol(_) => "unsupported_protocol",
            HandshakeError::MissingPseudoHeader(_) => "missing_pseudo_header",
            HandshakeError::OriginNotAllowed(_) => "origin_not_allowed",
            HandshakeError::UnexpectedStatus(_) => "unexpected_status",
            HandshakeError::MissingAccept => "missing_accept",
            HandshakeError::AcceptMismatch => "accept_mismatch",
            HandshakeError::UnknownProtocol(_) => "unknown_protocol",
            HandshakeError::UnexpectedExtension(_) => "unexpected_extension",
            HandshakeError::InvalidExtension(_) => "invalid_extension",
            HandshakeError::InvalidHeaderValue(_) => "invalid_header_value",
        }
    }

    /// Builds the error response: [`HandshakeError::status`], a plain text body with the
    /// error message, and `Sec-WebSocket-Version: 13` on a `426` (RFC 6455 section 4.4).
    pub fn response(&self) -> Response<String> {
        let mut response = Response::new(format!("{self}\n"));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self.status() == StatusCode::UPGRADE_REQUIRED {
            headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static(VERSION));
        }
        response
    }
}

/// Validates an HTTP upgrade request from its parts (RFC 6455 section 4.2.1) and selects
/// a subprotocol.
///
/// The checks run in this order, and the first failure is returned:
/// 1. method GET,
/// 2. HTTP/1.1 exactly,
/// 3. exactly one `Host`,
/// 4. an `Upgrade` header with the `websocket` token,
/// 5. a `Connection` header with the `upgrade` token,
/// 6. `Sec-WebSocket-Version: 13`,
/// 7. one `Sec-WebSocket-Key` that is base64 of 16 bytes,
/// 8. the origin policy.
///
/// The version is
/// checked before the key so that a client speaking another version learns the supported
/// one from the `426` response.
///
/// This function handles only the HTTP/1.1 `Upgrade` handshake, so HTTP/1.0, HTTP/2 and
/// HTTP/3 requests fail with [`HandshakeError::HttpVersion`]. A WebSocket over HTTP/2 or
/// HTTP/3 opens with an extended CONNECT request (RFC 8441, RFC 9220), which has no
/// `Upgrade`, `Connection` or `Sec-WebSocket-Key` header and needs its own validation.
///
/// Token lists are matched case-insensitively, across all lines of a header and all
/// comma-separated elements, so `Connection: keep-alive, Upgrade` is accepted.
///
/// The client's subprotocols are collected from every `Sec-WebSocket-Protocol` line. The
/// first entry of [`ServerConfig::protocols`] that the client offered is selected. No
/// match is not an error: the response then has no `Sec-WebSocket-Protocol` header.
///
/// With [`ServerConfig::deflate`] set, the first acceptable permessage-deflate offer in the
/// client's order is accepted. An offer with unknown, repeated or invalid parameters, or
/// one that requests an 8-bit window for the server's compressor, is declined. The
/// connection then runs uncompressed, and the handshake does not fail.
///
/// # Errors
///
/// Returns the [`HandshakeError`] of the first failed check.
pub fn validate_request(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
    cfg: &ServerConfig,
) -> Result<Accept, HandshakeError> {
    if method != Method::GET {
        return Err(HandshakeError::MethodNotGet);
    }
    if version != Version::HTTP_11 {
        return Err(HandshakeError::HttpVersion);
    }
    match headers.get_all(HOST).iter().count() {
        0 => return Err(HandshakeError::MissingHost),
        1 => {}
        _ => return Err(HandshakeError::InvalidHost),
    }
    if !has_token(headers, &UPGRADE, "websocket") {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !has_token(headers, &CONNECTION, "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    check_version(headers)?;
    let key = request_key(headers)?;
    check_origin(headers, &cfg.origins)?;

    let protocol = select_protocol(headers, &cfg.protocols);
    let deflate = cfg.deflate.as_ref().and_then(|config| {
        deflate::negotiate_server(headers, config)
            .map(|params| PerMessageDeflate::new(Role::Server, params, config))
    });
    Ok(Accept {
        accept_key: Some(accept_key(key)),
        protocol,
        deflate,
    })
}

fn check_version(headers: &HeaderMap) -> Result<(), HandshakeError> {
    let mut values = headers.get_all(SEC_WEBSOCKET_VERSION).iter();
    let Some(value) = values.next() else {
        return Err(HandshakeError::MissingVersion);
    };
    if values.next().is_some() {
        let all: Vec<String> = headers
            .get_all(SEC_WEBSOCKET_VERSION)
            .iter()
            .map(lossy)
            .collect();
        return Err(HandshakeError::UnsupportedVersion(all.join(", ")));
    }
    if value.as_bytes().trim_ascii() != VERSION.as_bytes() {
        return Err(HandshakeError::UnsupportedVersion(lossy(value)));
    }
    Ok(())
}

/// Returns the trimmed `Sec-WebSocket-Key` after checking that it decodes to 16 bytes.
fn request_key(headers: &HeaderMap) -> Result<&[u8], HandshakeError> {
    let mut values = headers.get_all(SEC_WEBSOCKET_KEY).iter();
    let Some(value) = values.next() else {
        return Err(HandshakeError::MissingKey);
    };
    if values.next().is_some() {
        return Err(HandshakeError::InvalidKey);
    }
    let key = value.as_bytes().trim_ascii();
    // 16 bytes encode to 24 characters, so a longer value is rejected before decoding.
    if key.len() != 24 {
        return Err(HandshakeError::InvalidKey);
    }
    match BASE64.decode(key) {
        Ok(decoded) if decoded.len() == 16 => Ok(key),
        _ => Err(HandshakeError::InvalidKey),
    }
}

fn check_origin(headers: &HeaderMap, policy: &OriginPolicy) -> Result<(), HandshakeError> {
    let OriginPolicy::AllowList(allowed) = policy else {
        return Ok(());
    };
    for origin in headers.get_all(ORIGIN) {
        let origin = origin.as_bytes().trim_ascii();
        let is_allowed = allowed
            .iter()
            .any(|candidate| candidate.as_bytes().eq_ignore_ascii_case(origin));
        if !is_allowed {
            return Err(HandshakeError::OriginNotAllowed(
                String::from_utf8_lossy(origin).into_owned(),
            ));
        }
    }
    Ok(())
}

fn select_protocol(headers: &HeaderMap, supported: &[String]) -> Option<String> {
    if supported.is_empty() {
        return None;
    }
    let offered: Vec<&[u8]> = list_elements(headers, &SEC_WEBSOCKET_PROTOCOL).collect();
    supported
        .iter()
        .find(|protocol| offered.contains(&protocol.as_bytes()))
        .cloned()
}

/// Iterates the non-empty, trimmed elements of a comma-separated header, over all lines.
fn list_elements<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|value| value.as_bytes().split(|&byte| byte == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|element| !element.is_empty())
}

/// Returns `true` if any element of the comma-separated header `name` equals `token`,
/// ignoring ASCII case.
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    list_elements(headers, name).any(|element| element.eq_ignore_ascii_case(token.as_bytes()))
}

fn lossy(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

/// Returns `true` if `value` is an HTTP token (RFC 9110 section 5.6.2), the form a
/// subprotocol name must have (RFC 6455 section 4.1).
fn is_token(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

/// Client side of the opening handshake: the request key, the offered subprotocols and
/// the offered compression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRequest {
    /// `Sec-WebSocket-Key`: base64 of 16 random bytes (RFC 6455 section 4.1).
    pub key: String,
    /// Offered subprotocols, in client preference order.
    pub protocols: Vec<String>,
    /// permessage-deflate settings to offer, or `None` to offer no compression. With it
    /// set, check the response with [`ClientRequest::verify`], which returns the agreed
    /// compression.
    pub deflate: Option<DeflateConfig>,
}

/// Subprotocol and compression agreed in a valid server response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    /// Selected subprotocol, if any.
    pub protocol: Option<String>,
    /// Agreed permessage-deflate, or `None` if the server declined it or none was offered.
    /// Set it as [`crate::Config::deflate`] of the client's connection.
    pub deflate: Option<PerMessageDeflate>,
}

impl ClientRequest {
    /// Creates a request with a fresh random key from the thread-local CSPRNG, offering no
    /// compression.
    pub fn new(protocols: Vec<String>) -> Self {
        let nonce: [u8; 16] = rand::rng().random();
        ClientRequest {
            key: BASE64.encode(nonce),
            protocols,
            deflate: None,
        }
    }

    /// Sets the permessage-deflate settings to offer (`None` offers no compression).
    pub fn with_deflate(mut self, deflate: Option<DeflateConfig>) -> Self {
        self.deflate = deflate;
        self
    }

    /// Builds the upgrade request headers: `Host`, `Upgrade`, `Connection`,
    /// `Sec-WebSocket-Key`, `Sec-WebSocket-Version`, `Sec-WebSocket-Protocol` if any
    /// protocol is offered, and `Sec-WebSocket-Extensions` if compression is offered.
    ///
    /// # Panics
    ///
    /// Panics if `host` is not a valid header value or a protocol is not an HTTP token.
    /// [`ClientRequest::try_headers`] returns an error instead.
    pub fn headers(&self, host: &str) -> HeaderMap {
        match self.try_headers(host) {
            Ok(headers) => headers,
            Err(err) => panic!("cannot build websocket request headers: {err}"),
        }
    }

    /// Builds the same headers as [`ClientRequest::headers`].
    ///
    /// # Errors
    ///
    /// Returns [`HandshakeError::InvalidHeaderValue`] if `host` is not a valid header
    /// value or a protocol is not an HTTP token.
    pub fn try_headers(&self, host: &str) -> Result<HeaderMap, HandshakeError> {
        let invalid = |value: &str| HandshakeError::InvalidHeaderValue(value.to_owned());
        let mut headers = HeaderMap::with_capacity(6);
        headers.insert(
            HOST,
            HeaderValue::from_str(host).map_err(|_| invalid(host))?,
        );
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(
            SEC_WEBSOCKET_KEY,
            HeaderValue::from_str(&self.key).map_err(|_| invalid(&self.key))?,
        );
        headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static(VERSION));
        self.insert_offers(&mut headers)?;
        Ok(headers)
    }

    /// Inserts `Sec-WebSocket-Protocol` if any protocol is offered and
    /// `Sec-WebSocket-Extensions` if compression is offered.
    fn insert_offers(&self, headers: &mut HeaderMap) -> Result<(), HandshakeError> {
        let invalid = |value: &str| HandshakeError::InvalidHeaderValue(value.to_owned());
        if !self.protocols.is_empty() {
            if let Some(bad) = self.protocols.iter().find(|protocol| !is_token(protocol)) {
                return Err(invalid(bad));
            }
            let joined = self.protocols.join(", ");
            headers.insert(
                SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_str(&joined).map_err(|_| invalid(&joined))?,
            );
        }
        if let Some(deflate) = &self.deflate {
            let offer = deflate::offer_header(deflate);
            headers.insert(
                SEC_WEBSOCKET_EXTENSIONS,
                HeaderValue::from_str(&offer).map_err(|_| invalid(&offer))?,
            );
        }
        Ok(())
    }

    /// Returns the `Sec-WebSocket-Accept` value the server must send for this key.
    pub fn expected_accept(&self) -> String {
        accept_key(self.key.as_bytes())
    }

    /// Verifies the server's response like [`ClientRequest::verify`] and returns the
    /// selected subprotocol only.
    ///
    /// A caller that offers compression needs the agreed parameters to configure its
    /// connection, so it must call [`ClientRequest::verify`] instead.
    ///
    /// # Errors
    ///
    /// Returns the [`HandshakeError`] of the first failed check.
    pub fn verify_response(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Result<Option<String>, HandshakeError> {
        self.verify(status, headers)
            .map(|negotiated| negotiated.protocol)
    }

    /// Verifies the server's response (RFC 6455 section 4.1) and returns the selected
    /// subprotocol and the agreed compression.
    ///
    /// Checks status 101, the `Upgrade: websocket` and `Connection: upgrade` tokens, the
    /// `Sec-WebSocket-Accept` value, that the extensions are at most one permessage-deflate
    /// whose parameters fit the offer (RFC 7692 section 7.1), and that a selected
    /// subprotocol is a single one the client offered. Without an offer of compression,
    /// any `Sec-WebSocket-Extensions` header fails.
    ///
    /// # Errors
    ///
    /// Returns the [`HandshakeError`] of the first failed check.
    pub fn verify(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Result<Negotiated, HandshakeError> {
        if status != StatusCode::SWITCHING_PROTOCOLS {
            return Err(HandshakeError::UnexpectedStatus(status.as_u16()));
        }
        if !has_token(headers, &UPGRADE, "websocket") {
            return Err(HandshakeError::MissingUpgrade);
        }
        if !has_token(headers, &CONNECTION, "upgrade") {
            return Err(HandshakeError::MissingConnectionUpgrade);
        }
        let mut accepts = headers.get_all(SEC_WEBSOCKET_ACCEPT).iter();
        let Some(accept) = accepts.next() else {
            return Err(HandshakeError::MissingAccept);
        };
        if accepts.next().is_some()
            || accept.as_bytes().trim_ascii() != self.expected_accept().as_bytes()
        {
            return Err(HandshakeError::AcceptMismatch);
        }
        self.verify_offers(headers)
    }

    /// Checks the subprotocol and extension headers of a successful response.
    fn verify_offers(&self, headers: &HeaderMap) -> Result<Negotiated, HandshakeError> {
        let params = deflate::verify_response(headers, self.deflate.as_ref())?;
        let deflate = params
            .zip(self.deflate.as_ref())
            .map(|(params, config)| PerMessageDeflate::new(Role::Client, params, config));
        let protocol = self.selected_protocol(headers)?;
        Ok(Negotiated { protocol, deflate })
    }

    /// Returns the subprotocol that the response selected, after checking that it is a
    /// single one that the client offered.
    fn selected_protocol(&self, headers: &HeaderMap) -> Result<Option<String>, HandshakeError> {
        let mut selected = list_elements(headers, &SEC_WEBSOCKET_PROTOCOL);
        let Some(protocol) = selected.next() else {
            return Ok(None);
        };
        let protocol = String::from_utf8_lossy(protocol).into_owned();
        if let Some(second) = selected.next() {
            let both = format!("{protocol}, {}", String::from_utf8_lossy(second));
            return Err(HandshakeError::UnknownProtocol(both));
        }
        if !self.protocols.contains(&protocol) {
            return Err(HandshakeError::UnknownProtocol(protocol));
        }
        Ok(Some(protocol))
    }
}

mod connect;

pub use connect::{CONNECT_PROTOCOL, validate_connect_request};

#[cfg(test)]
mod tests;

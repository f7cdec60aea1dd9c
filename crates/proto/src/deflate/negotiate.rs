//! Parsing of `Sec-WebSocket-Extensions` and the permessage-deflate negotiation rules of
//! RFC 7692 section 7.1, for the server's choice and the client's check of it.

use std::fmt;

use http::HeaderMap;
use http::header::SEC_WEBSOCKET_EXTENSIONS;

use super::{
    DeflateConfig, DeflateParams, EXTENSION_NAME, MAX_WINDOW_BITS, MIN_COMPRESS_WINDOW_BITS,
};
use crate::HandshakeError;

/// One element of a `Sec-WebSocket-Extensions` header: an extension name and its
/// parameters in the order sent (RFC 6455 section 9.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Extension {
    /// Extension token as sent.
    pub(crate) name: String,
    /// Parameter names as sent, with their values after quoted-string unescaping.
    pub(crate) params: Vec<(String, Option<String>)>,
}

/// An element of `Sec-WebSocket-Extensions` that does not follow the grammar of
/// RFC 6455 section 9.1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    /// The element as sent, trimmed.
    pub(crate) element: String,
    pub(crate) reason: &'static str,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed extension {:?}: {}", self.element, self.reason)
    }
}

/// Parses every line of `Sec-WebSocket-Extensions` into its comma-separated elements, in
/// order. Empty elements are skipped, as the list rule of RFC 9110 section 5.6.1 allows.
pub(crate) fn parse_extensions(headers: &HeaderMap) -> Vec<Result<Extension, SyntaxError>> {
    headers
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .flat_map(|value| split_outside_quotes(value.as_bytes(), b','))
        .map(<[u8]>::trim_ascii)
        .filter(|element| !element.is_empty())
        .map(parse_element)
        .collect()
}

/// Splits `text` at each `separator` that is not inside a quoted-string. An unterminated
/// quoted-string runs to the end of `text`.
fn split_outside_quotes(text: &[u8], separator: u8) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, &byte) in text.iter().enumerate() {
        if in_quotes {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_quotes = false;
            }
        } else if byte == b'"' {
            in_quotes = true;
        } else if byte == separator {
            parts.push(&text[start..i]);
            start = i + 1;
        }
    }
    parts.push(&text[start..]);
    parts
}

/// Parses one element: `name *( ";" param [ "=" ( token / quoted-string ) ] )`, with
/// optional whitespace around each part.
fn parse_element(element: &[u8]) -> Result<Extension, SyntaxError> {
    let error = |reason| SyntaxError {
        element: String::from_utf8_lossy(element).into_owned(),
        reason,
    };
    let mut parts = split_outside_quotes(element, b';').into_iter();
    let name = parts.next().unwrap_or_default().trim_ascii();
    if !is_token(name) {
        return Err(error("the extension name is not a token"));
    }
    let mut params = Vec::new();
    for part in parts {
        let (param_name, value) = match part.iter().position(|&byte| byte == b'=') {
            Some(eq) => (part[..eq].trim_ascii(), Some(part[eq + 1..].trim_ascii())),
            None => (part.trim_ascii(), None),
        };
        if !is_token(param_name) {
            return Err(error("a parameter name is empty or not a token"));
        }
        let value = match value {
            None => None,
            Some(raw) => Some(parse_value(raw).ok_or_else(|| {
                error("a parameter value is not a token or a quoted-string containing a token")
            })?),
        };
        params.push((ascii_string(param_name), value));
    }
    Ok(Extension {
        name: ascii_string(name),
        params,
    })
}

/// Parses a parameter value: a token, or a quoted-string whose unescaped content is a
/// token (RFC 6455 section 9.1).
fn parse_value(raw: &[u8]) -> Option<String> {
    if is_token(raw) {
        return Some(ascii_string(raw));
    }
    let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    let mut unescaped = Vec::with_capacity(inner.len());
    let mut bytes = inner.iter();
    while let Some(&byte) = bytes.next() {
        match byte {
            b'\\' => unescaped.push(*bytes.next()?),
            b'"' => return None,
            _ => unescaped.push(byte),
        }
    }
    is_token(&unescaped).then(|| ascii_string(&unescaped))
}

/// Returns `true` if `value` is an HTTP token (RFC 9110 section 5.6.2).
fn is_token(value: &[u8]) -> bool {
    !value.is_empty()
        && value
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(byte))
}

/// Converts bytes that `is_token` accepted, which are ASCII.
fn ascii_string(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A permessage-deflate parameter list that is invalid (RFC 7692 section 7.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ParamError {
    Unknown(String),
    Duplicate(String),
    UnexpectedValue(String),
    MissingValue(String),
    InvalidWindowBits { name: String, value: String },
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamError::Unknown(name) => write!(f, "unknown parameter {name:?}"),
            ParamError::Duplicate(name) => write!(f, "parameter {name:?} appears twice"),
            ParamError::UnexpectedValue(name) => {
                write!(f, "parameter {name:?} must not have a value")
            }
            ParamError::MissingValue(name) => write!(f, "parameter {name:?} requires a value"),
            ParamError::InvalidWindowBits { name, value } => {
                write!(
                    f,
                    "parameter {name:?} has value {value:?}, expected 8 to 15"
                )
            }
        }
    }
}

/// The permessage-deflate parameters of one offer or response, checked for syntax.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ParsedParams {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// `Some(None)` is the parameter without a value, which only an offer may send.
    client_max_window_bits: Option<Option<u8>>,
}

/// Endpoint that sent the parameters. Only an offer may send `client_max_window_bits`
/// without a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sender {
    Client,
    Server,
}

/// Checks each parameter once: names are compared ignoring ASCII case, and the window bits
/// must be exactly one of `8` to `15` (no sign, no leading zero).
fn parse_params(
    params: &[(String, Option<String>)],
    sender: Sender,
) -> Result<ParsedParams, ParamError> {
    let mut parsed = ParsedParams::default();
    let mut seen = [false; 4];
    for (name, value) in params {
        let lower = name.to_ascii_lowercase();
        let index = match lower.as_str() {
            "server_no_context_takeover" => 0,
            "client_no_context_takeover" => 1,
            "server_max_window_bits" => 2,
            "client_max_window_bits" => 3,
            _ => return Err(ParamError::Unknown(name.clone())),
        };
        if std::mem::replace(&mut seen[index], true) {
            return Err(ParamError::Duplicate(name.clone()));
        }
        match index {
            0 | 1 => {
                if value.is_some() {
                    return Err(ParamError::UnexpectedValue(name.clone()));
                }
                if index == 0 {
                    parsed.server_no_context_takeover = true;
                } else {
                    parsed.client_no_context_takeover = true;
                }
            }
            2 => {
                let value = value
                    .as_deref()
                    .ok_or_else(|| ParamError::MissingValue(name.clone()))?;
                parsed.server_max_window_bits = Some(window_bits(name, value)?);
            }
            _ => {
                parsed.client_max_window_bits = match (value.as_deref(), sender) {
                    (Some(value), _) => Some(Some(window_bits(name, value)?)),
                    (None, Sender::Client) => Some(None),
                    (None, Sender::Server) => return Err(ParamError::MissingValue(name.clone())),
                };
            }
        }
    }
    Ok(parsed)
}

fn window_bits(name: &str, value: &str) -> Result<u8, ParamError> {
    const VALUES: [&str; 8] = ["8", "9", "10", "11", "12", "13", "14", "15"];
    match VALUES.iter().position(|candidate| *candidate == value) {
        Some(index) => Ok(8 + index as u8),
        None => Err(ParamError::InvalidWindowBits {
            name: name.to_owned(),
            value: value.to_owned(),
        }),
    }
}

/// Reason why a server declines one permessage-deflate offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Decline {
    Invalid(ParamError),
    /// The offer requests a compressor window smaller than this server can produce.
    WindowTooSmall(u8),
}

impl fmt::Display for Decline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Decline::Invalid(err) => err.fmt(f),
            Decline::WindowTooSmall(bits) => write!(
                f,
                "server_max_window_bits={bits} is below the {MIN_COMPRESS_WINDOW_BITS}-bit \
                 minimum of the zlib compressor"
            ),
        }
    }
}

/// Selects the first acceptable permessage-deflate offer in the client's order and returns
/// the parameters of the response, or `None` if no offer is acceptable.
///
/// An invalid offer is declined, never a failed handshake, so the connection then runs
/// uncompressed. Other extensions are ignored.
pub(crate) fn negotiate_server(
    headers: &HeaderMap,
    config: &DeflateConfig,
) -> Option<DeflateParams> {
    for element in parse_extensions(headers) {
        let offer = match element {
            Ok(offer) => offer,
            Err(err) => {
                tracing::debug!(error = %err, "ignoring extension offer");
                continue;
            }
        };
        if !offer.name.eq_ignore_ascii_case(EXTENSION_NAME) {
            continue;
        }
        match accept_offer(&offer.params, config) {
            Ok(params) => return Some(params),
            Err(reason) => {
                tracing::debug!(%reason, "declining permessage-deflate offer");
            }
        }
    }
    None
}

/// Applies RFC 7692 section 7.1 to one offer and the server's `config`.
pub(crate) fn accept_offer(
    params: &[(String, Option<String>)],
    config: &DeflateConfig,
) -> Result<DeflateParams, Decline> {
    let offer = parse_params(params, Sender::Client).map_err(Decline::Invalid)?;
    let own_bits = config.compress_window_bits();
    let server_max_window_bits = match offer.server_max_window_bits {
        Some(bits) if bits < MIN_COMPRESS_WINDOW_BITS => return Err(Decline::WindowTooSmall(bits)),
        // The response must carry the parameter, with the offered value or a smaller one.
        Some(bits) => Some(bits.min(own_bits)),
        // A server may limit its own window even when the client did not ask.
        None => (own_bits < MAX_WINDOW_BITS).then_some(own_bits),
    };
    // The server may limit the client's window only if the client offered the parameter.
    // Echoing the client's own value makes it binding, so the decompressor can use it.
    let client_max_window_bits = match (offer.client_max_window_bits, config.peer_window_bits()) {
        (None, _) => None,
        (Some(Some(offered)), Some(wanted)) => Some(offered.min(wanted)),
        (Some(Some(offered)), None) => Some(offered),
        (Some(None), wanted) => wanted,
    };
    Ok(DeflateParams {
        server_no_context_takeover: offer.server_no_context_takeover || config.no_context_takeover,
        // The client's own hint is echoed so that it binds, and the server keeps no
        // decompressor between messages.
        client_no_context_takeover: offer.client_no_context_takeover
            || config.peer_no_context_takeover,
        server_max_window_bits,
        client_max_window_bits,
    })
}

/// Builds the client's offer from its `config`.
///
/// It always contains `client_max_window_bits`, so that the server may limit the client's
/// window, with a value when the client's own compressor is limited.
pub(crate) fn offer_header(config: &DeflateConfig) -> String {
    let mut offer = String::from(EXTENSION_NAME);
    if config.no_context_takeover {
        offer.push_str("; client_no_context_takeover");
    }
    if config.peer_no_context_takeover {
        offer.push_str("; server_no_context_takeover");
    }
    if let Some(bits) = config.peer_window_bits() {
        offer.push_str(&format!("; server_max_window_bits={bits}"));
    }
    let own_bits = config.compress_window_bits();
    if own_bits < MAX_WINDOW_BITS {
        offer.push_str(&format!("; client_max_window_bits={own_bits}"));
    } else {
        offer.push_str("; client_max_window_bits");
    }
    offer
}

/// Checks the server's `Sec-WebSocket-Extensions` against the client's offer, built from
/// `offered` by [`offer_header`], and returns the agreed parameters. `None` means the
/// server declined compression.
///
/// RFC 7692 section 7.1 requires the client to fail the connection when the response
/// selects an extension that was not offered, lists permessage-deflate twice, or has
/// parameters that are invalid for the offer.
pub(crate) fn verify_response(
    headers: &HeaderMap,
    offered: Option<&DeflateConfig>,
) -> Result<Option<DeflateParams>, HandshakeError> {
    let elements = parse_extensions(headers);
    let mut agreed = None;
    for element in elements {
        let extension = match (element, offered) {
            (Err(err), None) => return Err(HandshakeError::UnexpectedExtension(err.element)),
            (Err(err), Some(_)) => return Err(HandshakeError::InvalidExtension(err.to_string())),
            (Ok(extension), _) => extension,
        };
        let Some(config) = offered else {
            return Err(HandshakeError::UnexpectedExtension(extension.name));
        };
        if !extension.name.eq_ignore_ascii_case(EXTENSION_NAME) {
            return Err(HandshakeError::UnexpectedExtension(extension.name));
        }
        if agreed.is_some() {
            return Err(HandshakeError::InvalidExtension(
                "the server accepted permessage-deflate twice".to_owned(),
            ));
        }
        agreed = Some(check_response_params(&extension.params, config)?);
    }
    Ok(agreed)
}

fn check_response_params(
    params: &[(String, Option<String>)],
    offered: &DeflateConfig,
) -> Result<DeflateParams, HandshakeError> {
    let invalid = |reason: String| HandshakeError::InvalidExtension(reason);
    let response = parse_params(params, Sender::Server).map_err(|err| invalid(err.to_string()))?;

    if offered.peer_no_context_takeover && !response.server_no_context_takeover {
        return Err(invalid(
            "the response lacks server_no_context_takeover, which the offer requested".to_owned(),
        ));
    }
    if let Some(requested) = offered.peer_window_bits() {
        match response.server_max_window_bits {
            None => {
                return Err(invalid(format!(
                    "the response lacks server_max_window_bits, the offer requested \
                     {requested} or less"
                )));
            }
            Some(bits) if bits > requested => {
                return Err(invalid(format!(
                    "server_max_window_bits={bits} is above the {requested} that the offer \
                     requested"
                )));
            }
            Some(_) => {}
        }
    }
    let client_max_window_bits = response.client_max_window_bits.flatten();
    if let Some(bits) = client_max_window_bits {
        let offered_bits = offered.compress_window_bits();
        if bits > offered_bits {
            return Err(invalid(format!(
                "client_max_window_bits={bits} is above the {offered_bits} that the offer \
                 allowed"
            )));
        }
        if bits < MIN_COMPRESS_WINDOW_BITS {
            return Err(invalid(format!(
                "client_max_window_bits={bits} is below the {MIN_COMPRESS_WINDOW_BITS}-bit \
                 minimum of the zlib compressor"
            )));
        }
    }
    Ok(DeflateParams {
        server_no_context_takeover: response.server_no_context_takeover,
        client_no_context_takeover: response.client_no_context_takeover,
        server_max_window_bits: response.server_max_window_bits,
        client_max_window_bits,
    })
}

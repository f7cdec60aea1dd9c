//! Conversion between QPACK field lines and `http` requests and responses, with the
//! checks of RFC 9114 section 4.3 and of extended CONNECT (RFC 9220).

use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};

use crate::error::{Code, Error, ProtocolError};
use crate::qpack::FieldLine;

/// The `:protocol` pseudo-header of an extended CONNECT request, stored in the
/// extensions of the [`Request`] that [`crate::server::IncomingRequest`] carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol(pub String);

/// Header fields that are specific to a connection and must not appear in HTTP/3
/// (RFC 9114 section 4.2). `te` is allowed with the value `trailers` only.
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// A field line to encode, as `(name, value)`.
pub type Line = (Vec<u8>, Vec<u8>);

fn malformed(reason: impl Into<String>) -> ProtocolError {
    ProtocolError::new(Code::H3_MESSAGE_ERROR, reason)
}

/// Checks a regular field line and adds it to `headers`.
fn push_regular(headers: &mut HeaderMap, line: &FieldLine) -> Result<(), ProtocolError> {
    if line.name.iter().any(u8::is_ascii_uppercase) {
        return Err(malformed(format!(
            "field name {:?} has uppercase characters",
            String::from_utf8_lossy(&line.name)
        )));
    }
    let name = HeaderName::from_bytes(&line.name).map_err(|_| {
        malformed(format!(
            "field name {:?} is not a valid token",
            String::from_utf8_lossy(&line.name)
        ))
    })?;
    if CONNECTION_SPECIFIC.contains(&name.as_str()) {
        return Err(malformed(format!(
            "connection-specific field {name} is not allowed in HTTP/3"
        )));
    }
    if name == http::header::TE && line.value != b"trailers" {
        return Err(malformed("te field has a value other than trailers"));
    }
    let value = HeaderValue::from_bytes(&line.value)
        .map_err(|_| malformed(format!("field {name} has an invalid value")))?;
    headers.append(name, value);
    Ok(())
}

fn utf8_value(name: &str, value: &[u8]) -> Result<String, ProtocolError> {
    String::from_utf8(value.to_vec())
        .map_err(|_| malformed(format!("pseudo-header {name} is not UTF-8")))
}

/// The pseudo-headers of a request. `parse_request` rejects a second one of a kind.
#[derive(Default)]
struct RequestPseudo {
    method: Option<String>,
    scheme: Option<String>,
    authority: Option<String>,
    path: Option<String>,
    protocol: Option<String>,
}

/// Builds a request from a decoded header section.
///
/// A CONNECT request without `:protocol` needs `:authority` and no `:scheme` or `:path`.
/// An extended CONNECT request (with `:protocol`) needs `:scheme`, `:authority` and
/// `:path` (RFC 9220 section 3 and RFC 8441 section 4). Other requests need `:method`,
/// `:scheme` and a nonempty `:path`.
///
/// # Errors
///
/// H3_MESSAGE_ERROR, to be sent as a stream error, for a malformed request.
pub fn parse_request(lines: Vec<FieldLine>) -> Result<Request<()>, ProtocolError> {
    let mut pseudo = RequestPseudo::default();
    let mut headers = HeaderMap::new();
    let mut regular_seen = false;
    for line in &lines {
        if line.name.first() != Some(&b':') {
            regular_seen = true;
            push_regular(&mut headers, line)?;
            continue;
        }
        if regular_seen {
            return Err(malformed("pseudo-header after a regular field"));
        }
        let name = String::from_utf8_lossy(&line.name).into_owned();
        let slot = match name.as_str() {
            ":method" => &mut pseudo.method,
            ":scheme" => &mut pseudo.scheme,
            ":authority" => &mut pseudo.authority,
            ":path" => &mut pseudo.path,
            ":protocol" => &mut pseudo.protocol,
            _ => {
                return Err(malformed(format!(
                    "pseudo-header {name} is not allowed in a request"
                )));
            }
        };
        if slot.is_some() {
            return Err(malformed(format!("pseudo-header {name} appears twice")));
        }
        *slot = Some(utf8_value(&name, &line.value)?);
    }

    let method = pseudo
        .method
        .ok_or_else(|| malformed("request has no :method"))?;
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| malformed(format!(":method {method:?} is not a valid method")))?;
    let is_connect = method == Method::CONNECT;
    if pseudo.protocol.is_some() && !is_connect {
        return Err(malformed(":protocol is only allowed with CONNECT"));
    }

    let uri = if is_connect && pseudo.protocol.is_none() {
        if pseudo.scheme.is_some() || pseudo.path.is_some() {
            return Err(malformed(
                "CONNECT without :protocol must not have :scheme or :path",
            ));
        }
        let authority = pseudo
            .authority
            .ok_or_else(|| malformed("CONNECT request has no :authority"))?;
        Uri::builder().authority(authority).build()
    } else {
        let scheme = pseudo
            .scheme
            .ok_or_else(|| malformed("request has no :scheme"))?;
        let path = pseudo
            .path
            .filter(|path| !path.is_empty())
            .ok_or_else(|| malformed("request has no :path"))?;
        if is_connect && pseudo.authority.is_none() {
            return Err(malformed("extended CONNECT request has no :authority"));
        }
        let mut builder = Uri::builder().scheme(scheme.as_str()).path_and_query(path);
        if let Some(authority) = pseudo.authority {
            builder = builder.authority(authority);
        }
        builder.build()
    }
    .map_err(|error| malformed(format!("request target is not a valid URI: {error}")))?;

    let mut request = Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = http::Version::HTTP_3;
    *request.headers_mut() = headers;
    if let Some(protocol) = pseudo.protocol {
        request.extensions_mut().insert(Protocol(protocol));
    }
    Ok(request)
}

/// Builds a response from a decoded header section: exactly one `:status` and no other
/// pseudo-header.
///
/// # Errors
///
/// H3_MESSAGE_ERROR for a malformed response.
pub fn parse_response(lines: Vec<FieldLine>) -> Result<Response<()>, ProtocolError> {
    let mut status = None;
    let mut headers = HeaderMap::new();
    let mut regular_seen = false;
    for line in &lines {
        if line.name.first() != Some(&b':') {
            regular_seen = true;
            push_regular(&mut headers, line)?;
            continue;
        }
        if regular_seen {
            return Err(malformed("pseudo-header after a regular field"));
        }
        if line.name != b":status" {
            return Err(malformed(format!(
                "pseudo-header {} is not allowed in a response",
                String::from_utf8_lossy(&line.name)
            )));
        }
        if status.is_some() {
            return Err(malformed(":status appears twice"));
        }
        let code = StatusCode::from_bytes(&line.value).map_err(|_| {
            malformed(format!(
                ":status {:?} is not a status code",
                String::from_utf8_lossy(&line.value)
            ))
        })?;
        status = Some(code);
    }
    let status = status.ok_or_else(|| malformed("response has no :status"))?;
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = http::Version::HTTP_3;
    *response.headers_mut() = headers;
    Ok(response)
}

fn check_outgoing(headers: &HeaderMap) -> Result<(), Error> {
    for name in headers.keys() {
        if CONNECTION_SPECIFIC.contains(&name.as_str()) {
            return Err(Error::InvalidMessage(format!(
                "connection-specific header {name} is not allowed in HTTP/3"
            )));
        }
    }
    Ok(())
}

/// Returns the field lines of a request, pseudo-headers first. `protocol` is the
/// `:protocol` of an extended CONNECT.
///
/// # Errors
///
/// [`Error::InvalidMessage`] for a URI without scheme, authority or path, or a
/// connection-specific header.
pub fn request_lines(request: &Request<()>, protocol: Option<&str>) -> Result<Vec<Line>, Error> {
    check_outgoing(request.headers())?;
    let uri = request.uri();
    let mut lines: Vec<Line> = vec![(
        b":method".to_vec(),
        request.method().as_str().as_bytes().to_vec(),
    )];
    let authority = uri
        .authority()
        .ok_or_else(|| Error::InvalidMessage(format!("request URI {uri} has no authority")))?;
    let plain_connect = request.method() == Method::CONNECT && protocol.is_none();
    if !plain_connect {
        let scheme = uri
            .scheme_str()
            .ok_or_else(|| Error::InvalidMessage(format!("request URI {uri} has no scheme")))?;
        lines.push((b":scheme".to_vec(), scheme.as_bytes().to_vec()));
    }
    lines.push((
        b":authority".to_vec(),
        authority.as_str().as_bytes().to_vec(),
    ));
    if !plain_connect {
        let path = uri.path_and_query().map_or("/", |path| path.as_str());
        lines.push((b":path".to_vec(), path.as_bytes().to_vec()));
    }
    if let Some(protocol) = protocol {
        lines.push((b":protocol".to_vec(), protocol.as_bytes().to_vec()));
    }
    for (name, value) in request.headers() {
        lines.push((name.as_str().as_bytes().to_vec(), value.as_bytes().to_vec()));
    }
    Ok(lines)
}

/// Returns the field lines of a response, `:status` first.
///
/// # Errors
///
/// [`Error::InvalidMessage`] for a connection-specific header.
pub fn response_lines(response: &Response<()>) -> Result<Vec<Line>, Error> {
    check_outgoing(response.headers())?;
    let mut lines = vec![(
        b":status".to_vec(),
        response.status().as_str().as_bytes().to_vec(),
    )];
    for (name, value) in response.headers() {
        lines.push((name.as_str().as_bytes().to_vec(), value.as_bytes().to_vec()));
    }
    Ok(lines)
}

/// Returns the size RFC 9114 section 4.2.2 counts for these lines.
pub fn section_size(lines: &[Line]) -> u64 {
    lines
        .iter()
        .map(|(name, value)| (name.len() + value.len()) as u64 + crate::qpack::FIELD_LINE_OVERHEAD)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(pairs: &[(&str, &str)]) -> Vec<FieldLine> {
        pairs
            .iter()
            .map(|(name, value)| FieldLine::new(*name, *value))
            .collect()
    }

    const EXTENDED_CONNECT: [(&str, &str); 6] = [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "https"),
        (":authority", "localhost:8443"),
        (":path", "/ws/echo?x=1"),
        ("sec-websocket-version", "13"),
    ];

    #[test]
    fn extended_connect_parsed() {
        let request = parse_request(lines(&EXTENDED_CONNECT)).unwrap();
        assert_eq!(request.method(), Method::CONNECT);
        assert_eq!(
            request.uri().to_string(),
            "https://localhost:8443/ws/echo?x=1"
        );
        assert_eq!(
            request.extensions().get::<Protocol>(),
            Some(&Protocol("websocket".into()))
        );
        assert_eq!(request.headers()["sec-websocket-version"], "13");
    }

    #[test]
    fn plain_connect_parsed() {
        let request = parse_request(lines(&[
            (":method", "CONNECT"),
            (":authority", "example.test:443"),
        ]))
        .unwrap();
        assert_eq!(
            request.uri().authority().unwrap().as_str(),
            "example.test:443"
        );
        assert!(request.extensions().get::<Protocol>().is_none());
    }

    #[test]
    fn malformed_requests_rejected() {
        let mut cases: Vec<(&str, Vec<FieldLine>)> = Vec::new();
        let without = |name: &str| {
            lines(
                &EXTENDED_CONNECT
                    .iter()
                    .copied()
                    .filter(|(n, _)| *n != name)
                    .collect::<Vec<_>>(),
            )
        };
        cases.push(("missing :path", without(":path")));
        cases.push(("missing :scheme", without(":scheme")));
        cases.push(("missing :authority", without(":authority")));
        cases.push(("missing :method", without(":method")));
        let mut after = lines(&EXTENDED_CONNECT);
        after.push(FieldLine::new(":path", "/again"));
        cases.push(("pseudo after regular", after));
        let mut unknown = lines(&EXTENDED_CONNECT);
        unknown.insert(0, FieldLine::new(":unknown", "x"));
        cases.push(("unknown pseudo", unknown));
        let mut status = lines(&EXTENDED_CONNECT);
        status.insert(0, FieldLine::new(":status", "200"));
        cases.push(("response pseudo", status));
        let mut duplicate = lines(&EXTENDED_CONNECT);
        duplicate.insert(0, FieldLine::new(":method", "CONNECT"));
        cases.push(("duplicate pseudo", duplicate));
        let mut upper = lines(&EXTENDED_CONNECT);
        upper.push(FieldLine::new("Sec-WebSocket-Protocol", "chat"));
        cases.push(("uppercase name", upper));
        for name in CONNECTION_SPECIFIC {
            let mut specific = lines(&EXTENDED_CONNECT);
            specific.push(FieldLine::new(name, "x"));
            cases.push((name, specific));
        }
        let mut te = lines(&EXTENDED_CONNECT);
        te.push(FieldLine::new("te", "gzip"));
        cases.push(("te gzip", te));
        cases.push((
            "protocol without CONNECT",
            lines(&[
                (":method", "GET"),
                (":protocol", "websocket"),
                (":scheme", "https"),
                (":path", "/"),
            ]),
        ));
        cases.push((
            "plain CONNECT with path",
            lines(&[
                (":method", "CONNECT"),
                (":authority", "a:1"),
                (":path", "/"),
            ]),
        ));
        cases.push((
            "empty path",
            lines(&[(":method", "GET"), (":scheme", "https"), (":path", "")]),
        ));
        for (case, request) in cases {
            let error = parse_request(request).unwrap_err();
            assert_eq!(error.code, Code::H3_MESSAGE_ERROR, "{case}");
        }
    }

    #[test]
    fn response_parsed_and_checked() {
        let response = parse_response(lines(&[
            (":status", "200"),
            ("sec-websocket-protocol", "chat"),
        ]))
        .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["sec-websocket-protocol"], "chat");
        for bad in [
            lines(&[("server", "x")]),
            lines(&[(":status", "200"), (":status", "200")]),
            lines(&[(":status", "20")]),
            lines(&[(":status", "200"), (":path", "/")]),
        ] {
            assert_eq!(
                parse_response(bad).unwrap_err().code,
                Code::H3_MESSAGE_ERROR
            );
        }
    }

    #[test]
    fn request_lines_for_extended_connect() {
        let request = Request::builder()
            .method(Method::CONNECT)
            .uri("https://localhost:8443/ws/chat")
            .header("sec-websocket-version", "13")
            .body(())
            .unwrap();
        let encoded = request_lines(&request, Some("websocket")).unwrap();
        let names: Vec<&[u8]> = encoded.iter().map(|(name, _)| name.as_slice()).collect();
        assert_eq!(
            names,
            [
                &b":method"[..],
                b":scheme",
                b":authority",
                b":path",
                b":protocol",
                b"sec-websocket-version"
            ]
        );
        let parsed: Vec<FieldLine> = encoded
            .into_iter()
            .map(|(name, value)| FieldLine::new(name, value))
            .collect();
        let round_trip = parse_request(parsed).unwrap();
        assert_eq!(round_trip.uri(), request.uri());
    }
}

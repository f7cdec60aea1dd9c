//! The opening handshake of a WebSocket over HTTP/2 (RFC 8441) and HTTP/3 (RFC 9220): an
//! extended CONNECT request with `:protocol = websocket` that gets a 2xx response.
//!
//! The request has no `Upgrade`, `Connection` or `Sec-WebSocket-Key` header, and the
//! response no `Sec-WebSocket-Accept`, because the stream itself is the tunnel. The
//! version, origin, subprotocol and extension headers work as in RFC 6455.

use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};

use super::{
    Accept, ClientRequest, HandshakeError, Negotiated, SEC_WEBSOCKET_VERSION, ServerConfig,
    VERSION, check_origin, check_version, select_protocol,
};
use crate::Role;
use crate::deflate::{self, PerMessageDeflate};

/// Value of the `:protocol` pseudo-header that opens a WebSocket (RFC 8441 section 4).
pub const CONNECT_PROTOCOL: &str = "websocket";

/// Validates an extended CONNECT request that opens a WebSocket over HTTP/2 or HTTP/3,
/// and selects a subprotocol and compression.
///
/// `protocol` is the `:protocol` pseudo-header, and `uri` carries `:scheme`,
/// `:authority` and `:path`. The checks run in this order, and the first failure is
/// returned:
/// 1. method CONNECT ([`HandshakeError::MethodNotConnect`]),
/// 2. a `:protocol` ([`HandshakeError::MissingProtocol`]) equal to `websocket`, ignoring
///    ASCII case ([`HandshakeError::UnsupportedProtocol`]),
/// 3. `:scheme`, `:path` and `:authority` present
///    ([`HandshakeError::MissingPseudoHeader`]),
/// 4. `Sec-WebSocket-Version: 13`, or else `426` as over HTTP/1.1,
/// 5. the origin policy.
///
/// Subprotocol and permessage-deflate selection follow [`super::validate_request`]. A
/// `Sec-WebSocket-Key` header is ignored, and the returned [`Accept`] has no accept key,
/// so [`Accept::response`] builds `200 OK`.
///
/// # Errors
///
/// Returns the [`HandshakeError`] of the first failed check.
pub fn validate_connect_request(
    method: &Method,
    protocol: Option<&str>,
    uri: &Uri,
    headers: &HeaderMap,
    cfg: &ServerConfig,
) -> Result<Accept, HandshakeError> {
    if method != Method::CONNECT {
        return Err(HandshakeError::MethodNotConnect);
    }
    let Some(protocol) = protocol else {
        return Err(HandshakeError::MissingProtocol);
    };
    if !protocol.eq_ignore_ascii_case(CONNECT_PROTOCOL) {
        return Err(HandshakeError::UnsupportedProtocol(protocol.to_owned()));
    }
    if uri.scheme().is_none() {
        return Err(HandshakeError::MissingPseudoHeader(":scheme"));
    }
    if uri
        .path_and_query()
        .is_none_or(|path| path.as_str().is_empty())
    {
        return Err(HandshakeError::MissingPseudoHeader(":path"));
    }
    if uri.authority().is_none() {
        return Err(HandshakeError::MissingPseudoHeader(":authority"));
    }
    check_version(headers)?;
    check_origin(headers, &cfg.origins)?;

    let protocol = select_protocol(headers, &cfg.protocols);
    let deflate = cfg.deflate.as_ref().and_then(|config| {
        deflate::negotiate_server(headers, config)
            .map(|params| PerMessageDeflate::new(Role::Server, params, config))
    });
    Ok(Accept {
        accept_key: None,
        protocol,
        deflate,
    })
}

impl ClientRequest {
    /// Builds the headers of an extended CONNECT request: `Sec-WebSocket-Version`,
    /// `Sec-WebSocket-Protocol` if any protocol is offered, and `Sec-WebSocket-Extensions`
    /// if compression is offered. The caller sets the method, `:protocol` (see
    /// [`CONNECT_PROTOCOL`]), `:scheme`, `:authority` and `:path`.
    ///
    /// # Errors
    ///
    /// Returns [`HandshakeError::InvalidHeaderValue`] if a protocol is not an HTTP token.
    pub fn connect_headers(&self) -> Result<HeaderMap, HandshakeError> {
        let mut headers = HeaderMap::with_capacity(3);
        headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static(VERSION));
        self.insert_offers(&mut headers)?;
        Ok(headers)
    }

    /// Verifies the response to an extended CONNECT request and returns the selected
    /// subprotocol and the agreed compression.
    ///
    /// Checks for a 2xx status (RFC 8441 section 5), that the extensions are at most one
    /// permessage-deflate whose parameters fit the offer, and that a selected subprotocol
    /// is a single one the client offered.
    ///
    /// # Errors
    ///
    /// Returns the [`HandshakeError`] of the first failed check.
    pub fn verify_connect(
        &self,
        status: StatusCode,
        headers: &HeaderMap,
    ) -> Result<Negotiated, HandshakeError> {
        if !status.is_success() {
            return Err(HandshakeError::UnexpectedStatus(status.as_u16()));
        }
        self.verify_offers(headers)
    }
}

#[cfg(test)]
mod tests {
    use http::header::{
        ORIGIN, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_PROTOCOL, UPGRADE,
    };

    use super::*;
    use crate::DeflateConfig;
    use crate::handshake::OriginPolicy;

    fn uri() -> Uri {
        "https://example.test/ws/echo".parse().unwrap()
    }

    fn version_13() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        headers
    }

    fn validate(
        method: &Method,
        protocol: Option<&str>,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<Accept, HandshakeError> {
        validate_connect_request(method, protocol, uri, headers, &ServerConfig::default())
    }

    #[test]
    fn valid_request_gets_200_without_accept() {
        let accept = validate(&Method::CONNECT, Some("websocket"), &uri(), &version_13()).unwrap();
        assert_eq!(accept.accept_key, None);
        let response = accept.response();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get(SEC_WEBSOCKET_ACCEPT).is_none());
        assert!(response.headers().get(UPGRADE).is_none());
    }

    #[test]
    fn protocol_matches_ignoring_case() {
        let accept = validate(&Method::CONNECT, Some("WebSocket"), &uri(), &version_13());
        assert!(accept.is_ok());
    }

    #[test]
    fn get_is_rejected() {
        let err = validate(&Method::GET, None, &uri(), &version_13()).unwrap_err();
        assert_eq!(err, HandshakeError::MethodNotConnect);
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn connect_without_protocol_is_rejected() {
        let authority_only: Uri = "example.test:443".parse().unwrap();
        let err = validate(&Method::CONNECT, None, &authority_only, &version_13()).unwrap_err();
        assert_eq!(err, HandshakeError::MissingProtocol);
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn unknown_protocol_is_rejected() {
        let err = validate(
            &Method::CONNECT,
            Some("webtransport"),
            &uri(),
            &version_13(),
        );
        assert_eq!(
            err.unwrap_err(),
            HandshakeError::UnsupportedProtocol("webtransport".into())
        );
    }

    #[test]
    fn missing_pseudo_headers_are_named() {
        let no_scheme: Uri = "example.test".parse().unwrap();
        let err = validate(
            &Method::CONNECT,
            Some("websocket"),
            &no_scheme,
            &version_13(),
        );
        assert_eq!(
            err.unwrap_err(),
            HandshakeError::MissingPseudoHeader(":scheme")
        );

        let path_only: Uri = "/ws/echo".parse().unwrap();
        let err = validate(
            &Method::CONNECT,
            Some("websocket"),
            &path_only,
            &version_13(),
        );
        assert_eq!(
            err.unwrap_err(),
            HandshakeError::MissingPseudoHeader(":scheme")
        );

        let no_authority = Uri::builder()
            .scheme("https")
            .path_and_query("/ws/echo")
            .build();
        // The http crate requires an authority with a scheme, so this Uri cannot be built,
        // and an HTTP/2 or HTTP/3 layer reports such a request before it gets here.
        assert!(no_authority.is_err());
    }

    #[test]
    fn wrong_version_gets_426() {
        let mut headers = HeaderMap::new();
        headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        let err = validate(&Method::CONNECT, Some("websocket"), &uri(), &headers).unwrap_err();
        assert_eq!(err, HandshakeError::UnsupportedVersion("8".into()));
        assert_eq!(err.status(), StatusCode::UPGRADE_REQUIRED);

        let err = validate(
            &Method::CONNECT,
            Some("websocket"),
            &uri(),
            &HeaderMap::new(),
        );
        assert_eq!(err.unwrap_err(), HandshakeError::MissingVersion);
    }

    #[test]
    fn origin_policy_applies() {
        let cfg = ServerConfig {
            origins: OriginPolicy::AllowList(vec!["https://good.test".into()]),
            ..ServerConfig::default()
        };
        let mut headers = version_13();
        headers.insert(ORIGIN, HeaderValue::from_static("https://evil.test"));
        let err =
            validate_connect_request(&Method::CONNECT, Some("websocket"), &uri(), &headers, &cfg);
        assert_eq!(
            err.unwrap_err(),
            HandshakeError::OriginNotAllowed("https://evil.test".into())
        );
    }

    #[test]
    fn client_and_server_agree_on_protocol_and_deflate() {
        let request = ClientRequest::new(vec!["chat".into(), "echo".into()])
            .with_deflate(Some(DeflateConfig::default()));
        let headers = request.connect_headers().unwrap();
        assert!(headers.get(SEC_WEBSOCKET_PROTOCOL).is_some());
        assert!(headers.get(SEC_WEBSOCKET_EXTENSIONS).is_some());
        let cfg = ServerConfig {
            protocols: vec!["echo".into()],
            deflate: Some(DeflateConfig::default()),
            ..ServerConfig::default()
        };
        let accept =
            validate_connect_request(&Method::CONNECT, Some("websocket"), &uri(), &headers, &cfg)
                .unwrap();
        let response = accept.response();
        let negotiated = request
            .verify_connect(response.status(), response.headers())
            .unwrap();
        assert_eq!(negotiated.protocol.as_deref(), Some("echo"));
        assert!(negotiated.deflate.is_some());
    }

    #[test]
    fn client_rejects_non_2xx() {
        let request = ClientRequest::new(Vec::new());
        let err = request.verify_connect(StatusCode::BAD_REQUEST, &HeaderMap::new());
        assert_eq!(err.unwrap_err(), HandshakeError::UnexpectedStatus(400));
        let err = request.verify_connect(StatusCode::SWITCHING_PROTOCOLS, &HeaderMap::new());
        assert_eq!(err.unwrap_err(), HandshakeError::UnexpectedStatus(101));
    }
}

//! Validates arbitrary upgrade requests with `handshake::validate_request`, and arbitrary
//! extended CONNECT requests with `handshake::validate_connect_request`, and checks the
//! response of every valid one and the status of every rejected one.

#![no_main]

use arbitrary::Arbitrary;
use http::header::{
    HOST, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION,
};
use http::{HeaderMap, Method, StatusCode, Uri, Version};
use libfuzzer_sys::fuzz_target;
use pylon_proto::handshake::{self, validate_connect_request, validate_request};
use pylon_proto::{Accept, HandshakeError, OriginPolicy, ServerConfig};
use pylon_proto_fuzz::{DeflateInput, NameInput, ValueInput, build_headers};

#[derive(Arbitrary, Debug)]
enum MethodInput {
    Get,
    Post,
    Connect,
    /// Any method, skipped when it is not a valid method token.
    Other(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    method: MethodInput,
    /// HTTP version, chosen modulo 5 from 0.9, 1.0, 1.1, 2 and 3.
    version: u8,
    headers: Vec<(NameInput, ValueInput)>,
    protocols: Vec<String>,
    /// Allowed origins, or `None` for `OriginPolicy::Any`.
    allowed_origins: Option<Vec<String>>,
    /// Server permessage-deflate settings, or `None` to decline compression.
    deflate: Option<DeflateInput>,
    /// `:protocol` of the extended CONNECT request.
    connect_protocol: Option<String>,
    /// `:scheme`, `:authority` and `:path` of the extended CONNECT request, skipped when
    /// they do not parse as a URI.
    connect_uri: String,
}

fuzz_target!(|input: Input| {
    let method = match &input.method {
        MethodInput::Get => Method::GET,
        MethodInput::Post => Method::POST,
        MethodInput::Connect => Method::CONNECT,
        MethodInput::Other(bytes) => match Method::from_bytes(bytes) {
            Ok(method) => method,
            Err(_) => return,
        },
    };
    let version = [
        Version::HTTP_09,
        Version::HTTP_10,
        Version::HTTP_11,
        Version::HTTP_2,
        Version::HTTP_3,
    ][usize::from(input.version % 5)];
    let headers = build_headers(&input.headers, "");
    let config = ServerConfig {
        protocols: input.protocols,
        origins: match input.allowed_origins {
            Some(origins) => OriginPolicy::AllowList(origins),
            None => OriginPolicy::Any,
        },
        deflate: input.deflate.as_ref().map(DeflateInput::to_config),
    };

    match validate_request(&method, version, &headers, &config) {
        Ok(accept) => check_accept(&accept, &method, version, &headers, &config),
        Err(err) => check_error(&err),
    }

    let Ok(uri) = input.connect_uri.parse::<Uri>() else {
        return;
    };
    let protocol = input.connect_protocol.as_deref();
    match validate_connect_request(&method, protocol, &uri, &headers, &config) {
        Ok(accept) => check_connect_accept(&accept, &method, protocol, &uri, &headers),
        Err(err) => check_error(&err),
    }
});

fn check_connect_accept(
    accept: &Accept,
    method: &Method,
    protocol: Option<&str>,
    uri: &Uri,
    headers: &HeaderMap,
) {
    assert_eq!(method, Method::CONNECT);
    assert!(
        protocol.is_some_and(|protocol| protocol.eq_ignore_ascii_case("websocket")),
        "accepted :protocol {protocol:?}"
    );
    assert!(uri.scheme().is_some(), "{uri}");
    assert!(uri.authority().is_some(), "{uri}");
    assert_eq!(accept.accept_key, None);
    assert_eq!(headers.get_all(SEC_WEBSOCKET_VERSION).iter().count(), 1);

    let response = accept.response();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!response.headers().contains_key(SEC_WEBSOCKET_ACCEPT));
    assert_eq!(
        response.headers().contains_key(SEC_WEBSOCKET_EXTENSIONS),
        accept.deflate.is_some()
    );
}

fn check_accept(
    accept: &Accept,
    method: &Method,
    version: Version,
    headers: &HeaderMap,
    config: &ServerConfig,
) {
    assert_eq!(method, Method::GET);
    assert_eq!(version, Version::HTTP_11);
    assert_eq!(headers.get_all(HOST).iter().count(), 1);
    assert_eq!(headers.get_all(SEC_WEBSOCKET_KEY).iter().count(), 1);

    let accept_key = accept
        .accept_key
        .as_deref()
        .expect("an HTTP/1.1 upgrade always has an accept key");
    // Base64 of a 20-byte SHA-1 digest is 28 characters.
    assert_eq!(accept_key.len(), 28, "accept key {accept_key:?}");
    let key = headers[SEC_WEBSOCKET_KEY].as_bytes().trim_ascii();
    assert_eq!(accept_key, handshake::accept_key(key));

    if let Some(protocol) = &accept.protocol {
        assert!(
            config.protocols.contains(protocol),
            "selected {protocol:?}, not supported"
        );
    }

    if let Some(deflate) = &accept.deflate {
        assert!(
            config.deflate.is_some(),
            "compression agreed but not enabled"
        );
        assert!(
            headers.contains_key(SEC_WEBSOCKET_EXTENSIONS),
            "compression agreed, not offered"
        );
        assert!((9..=15).contains(&deflate.send_window_bits), "{deflate:?}");
        assert!(
            (9..=15).contains(&deflate.receive_window_bits),
            "{deflate:?}"
        );
    }

    let response = accept.response();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(
        response.headers().contains_key(SEC_WEBSOCKET_EXTENSIONS),
        accept.deflate.is_some()
    );
    assert_eq!(
        response
            .headers()
            .get(SEC_WEBSOCKET_ACCEPT)
            .map(|value| value.as_bytes()),
        Some(accept_key.as_bytes())
    );
}

fn check_error(err: &HandshakeError) {
    let status = err.status();
    assert!(
        matches!(status.as_u16(), 400 | 403 | 426),
        "request fault {err:?} has status {status}"
    );
    let response = err.response();
    assert_eq!(response.status(), status);
    assert!(!response.body().is_empty());
    if status == StatusCode::UPGRADE_REQUIRED {
        assert_eq!(
            response
                .headers()
                .get(SEC_WEBSOCKET_VERSION)
                .map(|value| value.as_bytes()),
            Some(&b"13"[..])
        );
    }
    assert!(!err.label().is_empty());
}

use super::*;

/// The sample key and accept value from RFC 6455 section 1.3.
const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const SAMPLE_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

fn request_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(HOST, HeaderValue::from_static("server.example.com"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(SEC_WEBSOCKET_KEY, HeaderValue::from_static(SAMPLE_KEY));
    headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    headers
}

fn validate(headers: &HeaderMap, cfg: &ServerConfig) -> Result<Accept, HandshakeError> {
    validate_request(&Method::GET, Version::HTTP_11, headers, cfg)
}

fn server_config(protocols: &[&str]) -> ServerConfig {
    ServerConfig {
        protocols: protocols.iter().map(|p| p.to_string()).collect(),
        origins: OriginPolicy::Any,
        deflate: None,
    }
}

#[test]
fn accept_key_matches_rfc_sample() {
    assert_eq!(accept_key(SAMPLE_KEY.as_bytes()), SAMPLE_ACCEPT);
}

#[test]
fn valid_request_is_accepted() {
    let accept = validate(&request_headers(), &ServerConfig::default()).unwrap();
    assert_eq!(accept.accept_key.as_deref(), Some(SAMPLE_ACCEPT));
    assert_eq!(accept.protocol, None);

    let response = accept.response();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(response.headers()[UPGRADE], "websocket");
    assert_eq!(response.headers()[CONNECTION], "Upgrade");
    assert_eq!(response.headers()[SEC_WEBSOCKET_ACCEPT], SAMPLE_ACCEPT);
    assert!(!response.headers().contains_key(SEC_WEBSOCKET_PROTOCOL));
}

#[test]
fn versions_other_than_http11_are_400() {
    let headers = request_headers();
    let cfg = ServerConfig::default();
    for version in [
        Version::HTTP_09,
        Version::HTTP_10,
        Version::HTTP_2,
        Version::HTTP_3,
    ] {
        let err = validate_request(&Method::GET, version, &headers, &cfg).unwrap_err();
        assert_eq!(err, HandshakeError::HttpVersion, "{version:?}");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{version:?}");
    }
    assert!(validate_request(&Method::GET, Version::HTTP_11, &headers, &cfg).is_ok());
}

#[test]
fn non_get_method_is_400() {
    for method in [Method::POST, Method::HEAD, Method::CONNECT] {
        let err = validate_request(
            &method,
            Version::HTTP_11,
            &request_headers(),
            &ServerConfig::default(),
        )
        .unwrap_err();
        assert_eq!(err, HandshakeError::MethodNotGet);
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert_eq!(err.label(), "bad_method");
    }
}

#[test]
fn http10_is_400() {
    let err = validate_request(
        &Method::GET,
        Version::HTTP_10,
        &request_headers(),
        &ServerConfig::default(),
    )
    .unwrap_err();
    assert_eq!(err, HandshakeError::HttpVersion);
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn host_is_required_once() {
    let mut headers = request_headers();
    headers.remove(HOST);
    assert_eq!(
        validate(&headers, &ServerConfig::default()),
        Err(HandshakeError::MissingHost)
    );

    let mut headers = request_headers();
    headers.append(HOST, HeaderValue::from_static("other.example.com"));
    assert_eq!(
        validate(&headers, &ServerConfig::default()),
        Err(HandshakeError::InvalidHost)
    );
}

#[test]
fn upgrade_token_is_required() {
    let mut headers = request_headers();
    headers.remove(UPGRADE);
    assert_eq!(
        validate(&headers, &ServerConfig::default()),
        Err(HandshakeError::MissingUpgrade)
    );

    headers.insert(UPGRADE, HeaderValue::from_static("h2c"));
    assert_eq!(
        validate(&headers, &ServerConfig::default()),
        Err(HandshakeError::MissingUpgrade)
    );

    headers.insert(UPGRADE, HeaderValue::from_static("websockets"));
    assert_eq!(
        validate(&headers, &ServerConfig::default()),
        Err(HandshakeError::MissingUpgrade)
    );
}

#[test]
fn upgrade_token_matches_case_and_lists() {
    for value in [
        "WebSocket",
        "WEBSOCKET",
        "h2c, websocket",
        " websocket ,foo",
    ] {
        let mut headers = request_headers();
        headers.insert(UPGRADE, HeaderValue::from_static(value));
        assert!(
            validate(&headers, &ServerConfig::default()).is_ok(),
            "{value}"
        );
    }
}

#[test]
fn connection_upgrade_is_required() {
    let mut headers = request_headers();
    headers.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
    let err = validate(&headers, &ServerConfig::default()).unwrap_err();
    assert_eq!(err, HandshakeError::MissingConnectionUpgrade);
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);

    headers.insert(CONNECTION, HeaderValue::from_static("upgrades"));
    assert_eq!(
        validate(&headers, &ServerConfig::default()),
        Err(HandshakeError::MissingConnectionUpgrade)
    );
}

#[test]
fn connection_token_matches_case_and_lines() {
    for value in ["upgrade", "keep-alive, Upgrade", "UPGRADE,keep-alive"] {
        let mut headers = request_headers();
        headers.insert(CONNECTION, HeaderValue::from_static(value));
        assert!(
            validate(&headers, &ServerConfig::default()).is_ok(),
            "{value}"
        );
    }
    let mut headers = request_headers();
    headers.insert(CONNECTION, HeaderValue::from_static("keep-alive"));
    headers.append(CONNECTION, HeaderValue::from_static("Upgrade"));
    assert!(validate(&headers, &ServerConfig::default()).is_ok());

    // Empty list elements are skipped, and a token must match a whole element.
    for value in [", ,Upgrade,", "keep-alive,,upgrade"] {
        let mut headers = request_headers();
        headers.insert(CONNECTION, HeaderValue::from_static(value));
        assert!(
            validate(&headers, &ServerConfig::default()).is_ok(),
            "{value}"
        );
    }
    for value in ["keep-alive upgrade", "upgrade-insecure", ","] {
        let mut headers = request_headers();
        headers.insert(CONNECTION, HeaderValue::from_static(value));
        assert_eq!(
            validate(&headers, &ServerConfig::default()),
            Err(HandshakeError::MissingConnectionUpgrade),
            "{value}"
        );
    }
}

#[test]
fn key_is_required() {
    let mut headers = request_headers();
    headers.remove(SEC_WEBSOCKET_KEY);
    let err = validate(&headers, &ServerConfig::default()).unwrap_err();
    assert_eq!(err, HandshakeError::MissingKey);
    assert_eq!(err.status(), StatusCode::BAD_REQUEST);
}

#[test]
fn key_must_decode_to_16_bytes() {
    let invalid = [
        "",
        "short",
        // 15 bytes.
        "dGhlIHNhbXBsZSBub25j",
        // 17 bytes.
        "dGhlIHNhbXBsZSBub25jZTE=",
        // 24 characters that are not base64.
        "!!!!!!!!!!!!!!!!!!!!!!!!",
        // Valid length but non-canonical trailing bits.
        "dGhlIHNhbXBsZSBub25jZR==",
    ];
    for value in invalid {
        let mut headers = request_headers();
        headers.insert(SEC_WEBSOCKET_KEY, HeaderValue::from_static(value));
        let err = validate(&headers, &ServerConfig::default()).unwrap_err();
        assert_eq!(err, HandshakeError::InvalidKey, "{value:?}");
        assert_eq!(err.label(), "invalid_key");
    }

    let mut headers = request_headers();
    headers.append(SEC_WEBSOCKET_KEY, HeaderValue::from_static(SAMPLE_KEY));
    assert_eq!(
        validate(&headers, &ServerConfig::default()),
        Err(HandshakeError::InvalidKey)
    );
}

#[test]
fn key_whitespace_is_trimmed() {
    for value in [
        " dGhlIHNhbXBsZSBub25jZQ==",
        "dGhlIHNhbXBsZSBub25jZQ==\t",
        "\t dGhlIHNhbXBsZSBub25jZQ== ",
    ] {
        let mut headers = request_headers();
        headers.insert(SEC_WEBSOCKET_KEY, HeaderValue::from_static(value));
        let accept = validate(&headers, &ServerConfig::default()).unwrap();
        assert_eq!(
            accept.accept_key.as_deref(),
            Some(SAMPLE_ACCEPT),
            "{value:?}"
        );
    }

    // Whitespace inside the key is not trimmed, and the value is then not base64.
    let mut headers = request_headers();
    headers.insert(
        SEC_WEBSOCKET_KEY,
        HeaderValue::from_static("dGhlIHNhbXBsZS Bub25jZQ=="),
    );
    assert_eq!(
        validate(&headers, &ServerConfig::default()),
        Err(HandshakeError::InvalidKey)
    );
}

#[test]
fn key_case_is_preserved() {
    // Base64 is case-sensitive: a differently cased key is another valid 16-byte nonce,
    // and the accept value is computed from the key exactly as sent. The last character
    // before the padding keeps its case, so that the trailing bits stay canonical.
    let (head, tail) = SAMPLE_KEY.split_at(21);
    let lower = format!("{}{tail}", head.to_ascii_lowercase());
    let upper = format!("{}{tail}", head.to_ascii_uppercase());
    for key in [lower, upper] {
        let mut headers = request_headers();
        headers.insert(SEC_WEBSOCKET_KEY, HeaderValue::from_str(&key).unwrap());
        let accept = validate(&headers, &ServerConfig::default()).unwrap();
        assert_eq!(accept.accept_key, Some(accept_key(key.as_bytes())), "{key}");
        assert_ne!(accept.accept_key.as_deref(), Some(SAMPLE_ACCEPT), "{key}");
    }
}

#[test]
fn header_names_are_case_insensitive() {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("HOST", "server.example.com"),
        ("UPGRADE", "WebSocket"),
        ("CONNECTION", "keep-alive, Upgrade"),
        ("SEC-WEBSOCKET-KEY", SAMPLE_KEY),
        ("sec-websocket-version", "13"),
    ] {
        let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
        headers.append(name, HeaderValue::from_static(value));
    }
    let accept = validate(&headers, &ServerConfig::default()).unwrap();
    assert_eq!(accept.accept_key.as_deref(), Some(SAMPLE_ACCEPT));
}

#[test]
fn missing_version_is_426() {
    let mut headers = request_headers();
    headers.remove(SEC_WEBSOCKET_VERSION);
    let err = validate(&headers, &ServerConfig::default()).unwrap_err();
    assert_eq!(err, HandshakeError::MissingVersion);
    assert_eq!(err.status(), StatusCode::UPGRADE_REQUIRED);
    let response = err.response();
    assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
    assert_eq!(response.headers()[SEC_WEBSOCKET_VERSION], "13");
}

#[test]
fn unsupported_version_is_426() {
    for value in ["8", "12", "14", "13, 8"] {
        let mut headers = request_headers();
        headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static(value));
        let err = validate(&headers, &ServerConfig::default()).unwrap_err();
        assert_eq!(err, HandshakeError::UnsupportedVersion(value.to_string()));
        assert_eq!(err.response().headers()[SEC_WEBSOCKET_VERSION], "13");
    }
}

#[test]
fn version_is_checked_before_key() {
    let mut headers = request_headers();
    headers.remove(SEC_WEBSOCKET_KEY);
    headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
    let err = validate(&headers, &ServerConfig::default()).unwrap_err();
    assert_eq!(err.status(), StatusCode::UPGRADE_REQUIRED);
}

#[test]
fn origin_allow_list_is_403() {
    let cfg = ServerConfig {
        protocols: Vec::new(),
        origins: OriginPolicy::AllowList(vec!["https://chat.example.com".to_string()]),
        deflate: None,
    };
    let mut headers = request_headers();
    headers.insert(ORIGIN, HeaderValue::from_static("https://evil.example.net"));
    let err = validate(&headers, &cfg).unwrap_err();
    assert_eq!(
        err,
        HandshakeError::OriginNotAllowed("https://evil.example.net".to_string())
    );
    assert_eq!(err.status(), StatusCode::FORBIDDEN);
    assert_eq!(err.response().status(), StatusCode::FORBIDDEN);
    assert!(!err.response().headers().contains_key(SEC_WEBSOCKET_VERSION));

    headers.insert(ORIGIN, HeaderValue::from_static("HTTPS://Chat.Example.com"));
    assert!(validate(&headers, &cfg).is_ok());

    headers.remove(ORIGIN);
    assert!(
        validate(&headers, &cfg).is_ok(),
        "requests without Origin pass"
    );
}

#[test]
fn any_origin_policy_accepts_all() {
    let mut headers = request_headers();
    headers.insert(ORIGIN, HeaderValue::from_static("https://anywhere.example"));
    assert!(validate(&headers, &ServerConfig::default()).is_ok());
}

#[test]
fn protocol_follows_server_preference() {
    let mut headers = request_headers();
    headers.insert(
        SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static("chat.v1, chat.v2"),
    );
    let accept = validate(&headers, &server_config(&["chat.v2", "chat.v1"])).unwrap();
    assert_eq!(accept.protocol.as_deref(), Some("chat.v2"));
    assert_eq!(
        accept.response().headers()[SEC_WEBSOCKET_PROTOCOL],
        "chat.v2"
    );
}

#[test]
fn protocol_collects_all_header_lines() {
    let mut headers = request_headers();
    headers.append(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("a"));
    headers.append(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("b ,c"));
    let accept = validate(&headers, &server_config(&["c"])).unwrap();
    assert_eq!(accept.protocol.as_deref(), Some("c"));
}

#[test]
fn protocol_without_match_is_omitted() {
    let mut headers = request_headers();
    headers.insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("Chat.V1"));
    let accept = validate(&headers, &server_config(&["chat.v1"])).unwrap();
    assert_eq!(accept.protocol, None);
    assert!(
        !accept
            .response()
            .headers()
            .contains_key(SEC_WEBSOCKET_PROTOCOL)
    );
}

#[test]
fn error_response_has_reason_body() {
    let err = HandshakeError::MissingKey;
    let response = err.response();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.headers()[CONTENT_TYPE],
        "text/plain; charset=utf-8"
    );
    assert!(response.body().contains("Sec-WebSocket-Key"));
}

#[test]
fn labels_are_unique_snake_case() {
    let errors = [
        HandshakeError::MethodNotGet,
        HandshakeError::HttpVersion,
        HandshakeError::MissingHost,
        HandshakeError::InvalidHost,
        HandshakeError::MissingUpgrade,
        HandshakeError::MissingConnectionUpgrade,
        HandshakeError::MissingKey,
        HandshakeError::InvalidKey,
        HandshakeError::MissingVersion,
        HandshakeError::UnsupportedVersion(String::new()),
        HandshakeError::OriginNotAllowed(String::new()),
        HandshakeError::UnexpectedStatus(200),
        HandshakeError::MissingAccept,
        HandshakeError::AcceptMismatch,
        HandshakeError::UnknownProtocol(String::new()),
        HandshakeError::UnexpectedExtension(String::new()),
        HandshakeError::InvalidHeaderValue(String::new()),
    ];
    let mut labels = std::collections::HashSet::new();
    for err in &errors {
        let label = err.label();
        assert!(labels.insert(label), "duplicate label {label}");
        assert!(
            label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "label {label} is not snake_case"
        );
    }
}

fn server_response(request: &ClientRequest, protocols: &[&str]) -> Response<()> {
    let headers = request.headers("server.example.com");
    validate(&headers, &server_config(protocols))
        .unwrap()
        .response()
}

#[test]
fn client_key_is_random_16_bytes() {
    let first = ClientRequest::new(Vec::new());
    let second = ClientRequest::new(Vec::new());
    assert_ne!(first.key, second.key);
    assert_eq!(BASE64.decode(&first.key).unwrap().len(), 16);
}

#[test]
fn client_headers_are_complete() {
    let request = ClientRequest::new(vec!["chat.v1".into(), "chat.v2".into()]);
    let headers = request.headers("localhost:8080");
    assert_eq!(headers[HOST], "localhost:8080");
    assert_eq!(headers[UPGRADE], "websocket");
    assert_eq!(headers[CONNECTION], "Upgrade");
    assert_eq!(headers[SEC_WEBSOCKET_KEY], request.key.as_str());
    assert_eq!(headers[SEC_WEBSOCKET_VERSION], "13");
    assert_eq!(headers[SEC_WEBSOCKET_PROTOCOL], "chat.v1, chat.v2");

    let plain = ClientRequest::new(Vec::new()).headers("localhost");
    assert!(!plain.contains_key(SEC_WEBSOCKET_PROTOCOL));
}

#[test]
fn client_rejects_invalid_header_values() {
    let request = ClientRequest::new(vec!["bad protocol".into()]);
    assert_eq!(
        request.try_headers("localhost"),
        Err(HandshakeError::InvalidHeaderValue("bad protocol".into()))
    );
    let request = ClientRequest::new(Vec::new());
    assert_eq!(
        request.try_headers("local\nhost"),
        Err(HandshakeError::InvalidHeaderValue("local\nhost".into()))
    );
}

#[test]
fn client_accepts_matching_response() {
    let request = ClientRequest::new(vec!["chat.v1".into()]);
    let response = server_response(&request, &["chat.v1"]);
    assert_eq!(
        request.verify_response(response.status(), response.headers()),
        Ok(Some("chat.v1".to_string()))
    );

    let request = ClientRequest::new(Vec::new());
    let response = server_response(&request, &[]);
    assert_eq!(
        request.verify_response(response.status(), response.headers()),
        Ok(None)
    );
}

#[test]
fn client_rejects_wrong_status() {
    let request = ClientRequest::new(Vec::new());
    let response = server_response(&request, &[]);
    let err = request
        .verify_response(StatusCode::OK, response.headers())
        .unwrap_err();
    assert_eq!(err, HandshakeError::UnexpectedStatus(200));
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
}

#[test]
fn client_rejects_missing_upgrade_tokens() {
    let request = ClientRequest::new(Vec::new());
    let mut response = server_response(&request, &[]);
    response.headers_mut().remove(UPGRADE);
    assert_eq!(
        request.verify_response(response.status(), response.headers()),
        Err(HandshakeError::MissingUpgrade)
    );

    let mut response = server_response(&request, &[]);
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    assert_eq!(
        request.verify_response(response.status(), response.headers()),
        Err(HandshakeError::MissingConnectionUpgrade)
    );
}

#[test]
fn client_rejects_bad_accept() {
    let request = ClientRequest::new(Vec::new());
    let mut response = server_response(&request, &[]);
    response.headers_mut().remove(SEC_WEBSOCKET_ACCEPT);
    assert_eq!(
        request.verify_response(response.status(), response.headers()),
        Err(HandshakeError::MissingAccept)
    );

    response.headers_mut().insert(
        SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_static(SAMPLE_ACCEPT),
    );
    assert_eq!(
        request.verify_response(response.status(), response.headers()),
        Err(HandshakeError::AcceptMismatch)
    );
}

#[test]
fn client_rejects_unoffered_protocol() {
    let request = ClientRequest::new(vec!["chat.v1".into()]);
    let mut response = server_response(&request, &[]);
    response
        .headers_mut()
        .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("chat.v9"));
    assert_eq!(
        request.verify_response(response.status(), response.headers()),
        Err(HandshakeError::UnknownProtocol("chat.v9".into()))
    );

    response.headers_mut().insert(
        SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static("chat.v1, chat.v1"),
    );
    assert_eq!(
        request.verify_response(response.status(), response.headers()),
        Err(HandshakeError::UnknownProtocol("chat.v1, chat.v1".into()))
    );

    let no_offer = ClientRequest::new(Vec::new());
    let mut response = server_response(&no_offer, &[]);
    response
        .headers_mut()
        .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("chat.v1"));
    assert_eq!(
        no_offer.verify_response(response.status(), response.headers()),
        Err(HandshakeError::UnknownProtocol("chat.v1".into()))
    );
}

#[test]
fn client_rejects_any_extension() {
    let request = ClientRequest::new(Vec::new());
    let mut response = server_response(&request, &[]);
    response.headers_mut().insert(
        SEC_WEBSOCKET_EXTENSIONS,
        HeaderValue::from_static("permessage-deflate"),
    );
    assert_eq!(
        request.verify_response(response.status(), response.headers()),
        Err(HandshakeError::UnexpectedExtension(
            "permessage-deflate".into()
        ))
    );
}

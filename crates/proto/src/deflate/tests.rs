use http::header::{
    CONNECTION, HOST, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Method, StatusCode, Version};

use super::negotiate::{Decline, Extension, ParamError, accept_offer, parse_extensions};
use super::*;
use crate::HandshakeError;
use crate::handshake::{ClientRequest, ServerConfig, validate_request};

/// Builds a header map with one `Sec-WebSocket-Extensions` line per entry.
fn extension_headers(lines: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for line in lines {
        headers.append(
            SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_str(line).unwrap(),
        );
    }
    headers
}

/// Negotiates the offers in `lines` with `config` and formats the response element.
fn server_response(lines: &[&str], config: &DeflateConfig) -> Option<String> {
    negotiate_server(&extension_headers(lines), config).map(|params| params.to_string())
}

/// Parses one offer and applies the server rules with `config`.
fn accept(offer: &str, config: &DeflateConfig) -> Result<DeflateParams, Decline> {
    let mut elements = parse_extensions(&extension_headers(&[offer]));
    assert_eq!(elements.len(), 1, "{offer}");
    let extension = elements.remove(0).unwrap();
    accept_offer(&extension.params, config)
}

fn verify(
    response: &[&str],
    offered: &DeflateConfig,
) -> Result<Option<DeflateParams>, HandshakeError> {
    verify_response(&extension_headers(response), Some(offered))
}

fn params(line: &str) -> Vec<(String, Option<String>)> {
    let mut elements = parse_extensions(&extension_headers(&[line]));
    elements.remove(0).unwrap().params
}

#[test]
fn parse_splits_lines_elements_and_params() {
    let headers = extension_headers(&[
        "foo, permessage-deflate ;client_max_window_bits",
        " ,Permessage-Deflate; server_max_window_bits = \"10\" ; server_no_context_takeover ",
    ]);
    let elements: Vec<Extension> = parse_extensions(&headers)
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(elements.len(), 3);
    assert_eq!(elements[0].name, "foo");
    assert!(elements[0].params.is_empty());
    assert_eq!(elements[1].name, "permessage-deflate");
    assert_eq!(
        elements[1].params,
        vec![("client_max_window_bits".to_owned(), None)]
    );
    assert_eq!(elements[2].name, "Permessage-Deflate");
    assert_eq!(
        elements[2].params,
        vec![
            ("server_max_window_bits".to_owned(), Some("10".to_owned())),
            ("server_no_context_takeover".to_owned(), None),
        ]
    );
}

#[test]
fn parse_keeps_commas_and_semicolons_in_quotes() {
    let elements = parse_extensions(&extension_headers(&[r#"x; a="1,2;3", y; b="q\"uote""#]));
    assert_eq!(elements.len(), 2);
    // "1,2;3" unquotes to text that is not a token, so the element is malformed.
    assert!(elements[0].is_err(), "{:?}", elements[0]);
    // The unescaped value q"uote contains a quote, which is not a token character.
    assert!(elements[1].is_err(), "{:?}", elements[1]);

    let escaped = parse_extensions(&extension_headers(&[r#"x; a="t\oken""#]));
    assert_eq!(
        escaped[0].as_ref().unwrap().params,
        vec![("a".to_owned(), Some("token".to_owned()))]
    );
}

#[test]
fn parse_reports_malformed_elements() {
    for element in [
        "; server_no_context_takeover",
        "perm@ssage-deflate",
        "permessage-deflate; =10",
        "permessage-deflate;;",
        "permessage-deflate; server_max_window_bits=",
        "permessage-deflate; server_max_window_bits=\"10",
        "permessage-deflate; server_max_window_bits=1 0",
        "permessage-deflate; client max window bits",
        "permessage-deflate; server_max_window_bits=\"\"",
    ] {
        let elements = parse_extensions(&extension_headers(&[element]));
        assert_eq!(elements.len(), 1, "{element}");
        assert!(elements[0].is_err(), "{element}: {:?}", elements[0]);
    }
}

#[test]
fn server_accepts_plain_offer() {
    let config = DeflateConfig::default();
    assert_eq!(
        server_response(&["permessage-deflate"], &config).as_deref(),
        Some("permessage-deflate")
    );
    assert_eq!(
        server_response(&["permessage-deflate; client_max_window_bits"], &config).as_deref(),
        Some("permessage-deflate")
    );
}

#[test]
fn server_honours_each_offered_parameter() {
    let config = DeflateConfig::default();
    let cases = [
        (
            "permessage-deflate; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover",
        ),
        (
            "permessage-deflate; client_no_context_takeover",
            "permessage-deflate; client_no_context_takeover",
        ),
        (
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10",
        ),
        (
            "permessage-deflate; server_max_window_bits=9",
            "permessage-deflate; server_max_window_bits=9",
        ),
        (
            "permessage-deflate; client_max_window_bits=12",
            "permessage-deflate; client_max_window_bits=12",
        ),
        (
            "permessage-deflate; client_max_window_bits=8",
            "permessage-deflate; client_max_window_bits=8",
        ),
        (
            "permessage-deflate; server_max_window_bits=\"11\"",
            "permessage-deflate; server_max_window_bits=11",
        ),
        (
            "PERMESSAGE-DEFLATE; Server_No_Context_Takeover; CLIENT_MAX_WINDOW_BITS=9",
            "permessage-deflate; server_no_context_takeover; client_max_window_bits=9",
        ),
        (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=12; client_max_window_bits=13",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=12; client_max_window_bits=13",
        ),
    ];
    for (offer, expected) in cases {
        assert_eq!(
            server_response(&[offer], &config).as_deref(),
            Some(expected),
            "{offer}"
        );
    }
}

#[test]
fn server_applies_its_own_settings() {
    let limited = DeflateConfig {
        max_window_bits: 12,
        ..DeflateConfig::default()
    };
    assert_eq!(
        accept("permessage-deflate", &limited)
            .unwrap()
            .server_max_window_bits,
        Some(12)
    );
    assert_eq!(
        accept("permessage-deflate; server_max_window_bits=14", &limited)
            .unwrap()
            .server_max_window_bits,
        Some(12)
    );
    assert_eq!(
        accept("permessage-deflate; server_max_window_bits=10", &limited)
            .unwrap()
            .server_max_window_bits,
        Some(10)
    );

    let resets = DeflateConfig {
        no_context_takeover: true,
        peer_no_context_takeover: true,
        ..DeflateConfig::default()
    };
    let agreed = accept("permessage-deflate", &resets).unwrap();
    assert!(agreed.server_no_context_takeover);
    assert!(agreed.client_no_context_takeover);

    let peer_limit = DeflateConfig {
        peer_max_window_bits: Some(10),
        ..DeflateConfig::default()
    };
    let cases = [
        ("permessage-deflate; client_max_window_bits", Some(10)),
        ("permessage-deflate; client_max_window_bits=12", Some(10)),
        ("permessage-deflate; client_max_window_bits=9", Some(9)),
        // Without the parameter in the offer the server cannot limit the client.
        ("permessage-deflate", None),
    ];
    for (offer, expected) in cases {
        assert_eq!(
            accept(offer, &peer_limit).unwrap().client_max_window_bits,
            expected,
            "{offer}"
        );
    }

    let out_of_range = DeflateConfig {
        max_window_bits: 4,
        peer_max_window_bits: Some(20),
        ..DeflateConfig::default()
    };
    let agreed = accept("permessage-deflate; client_max_window_bits", &out_of_range).unwrap();
    assert_eq!(agreed.server_max_window_bits, Some(9));
    assert_eq!(agreed.client_max_window_bits, Some(15));
}

#[test]
fn server_declines_window_bits_8_for_itself() {
    let config = DeflateConfig::default();
    assert_eq!(
        accept("permessage-deflate; server_max_window_bits=8", &config),
        Err(Decline::WindowTooSmall(8))
    );
    assert_eq!(
        server_response(&["permessage-deflate; server_max_window_bits=8"], &config),
        None
    );
    // The next offer in the list fits, so it is accepted.
    assert_eq!(
        server_response(
            &["permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=9"],
            &config
        )
        .as_deref(),
        Some("permessage-deflate; server_max_window_bits=9")
    );
}

#[test]
fn server_declines_malformed_offers() {
    let config = DeflateConfig::default();
    let cases: [(&str, ParamError); 16] = [
        (
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            ParamError::Duplicate("server_no_context_takeover".into()),
        ),
        (
            "permessage-deflate; client_max_window_bits; CLIENT_MAX_WINDOW_BITS=10",
            ParamError::Duplicate("CLIENT_MAX_WINDOW_BITS".into()),
        ),
        (
            "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
            ParamError::Duplicate("server_max_window_bits".into()),
        ),
        (
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            ParamError::Duplicate("client_no_context_takeover".into()),
        ),
        (
            "permessage-deflate; mystery",
            ParamError::Unknown("mystery".into()),
        ),
        (
            "permessage-deflate; x-window=10",
            ParamError::Unknown("x-window".into()),
        ),
        (
            "permessage-deflate; server_no_context_takeover=1",
            ParamError::UnexpectedValue("server_no_context_takeover".into()),
        ),
        (
            "permessage-deflate; client_no_context_takeover=\"x\"",
            ParamError::UnexpectedValue("client_no_context_takeover".into()),
        ),
        (
            "permessage-deflate; server_max_window_bits",
            ParamError::MissingValue("server_max_window_bits".into()),
        ),
        (
            "permessage-deflate; server_max_window_bits=7",
            window_error("server_max_window_bits", "7"),
        ),
        (
            "permessage-deflate; server_max_window_bits=16",
            window_error("server_max_window_bits", "16"),
        ),
        (
            "permessage-deflate; client_max_window_bits=0",
            window_error("client_max_window_bits", "0"),
        ),
        (
            "permessage-deflate; client_max_window_bits=abc",
            window_error("client_max_window_bits", "abc"),
        ),
        (
            "permessage-deflate; client_max_window_bits=010",
            window_error("client_max_window_bits", "010"),
        ),
        (
            "permessage-deflate; server_max_window_bits=+9",
            window_error("server_max_window_bits", "+9"),
        ),
        (
            "permessage-deflate; client_max_window_bits=\"99\"",
            window_error("client_max_window_bits", "99"),
        ),
    ];
    for (offer, expected) in cases {
        assert_eq!(
            accept(offer, &config),
            Err(Decline::Invalid(expected)),
            "{offer}"
        );
        assert_eq!(server_response(&[offer], &config), None, "{offer}");
    }
}

fn window_error(name: &str, value: &str) -> ParamError {
    ParamError::InvalidWindowBits {
        name: name.into(),
        value: value.into(),
    }
}

#[test]
fn server_takes_first_acceptable_offer_in_client_order() {
    let config = DeflateConfig::default();
    let cases: [(&[&str], Option<&str>); 6] = [
        (
            &["x-webkit-deflate-frame, permessage-deflate; client_max_window_bits=10"],
            Some("permessage-deflate; client_max_window_bits=10"),
        ),
        (
            &[
                "permessage-deflate; mystery",
                "permessage-deflate; server_no_context_takeover",
            ],
            Some("permessage-deflate; server_no_context_takeover"),
        ),
        (
            &["permessage-deflate; a=\"unterminated, permessage-deflate"],
            None,
        ),
        (
            &["perm@ssage, permessage-deflate; server_max_window_bits=12"],
            Some("permessage-deflate; server_max_window_bits=12"),
        ),
        (
            &["permessage-deflate; server_max_window_bits=13, permessage-deflate"],
            Some("permessage-deflate; server_max_window_bits=13"),
        ),
        (&["x-other; server_max_window_bits=10"], None),
    ];
    for (lines, expected) in cases {
        assert_eq!(
            server_response(lines, &config).as_deref(),
            expected,
            "{lines:?}"
        );
    }
}

#[test]
fn validate_request_negotiates_only_when_enabled() {
    let mut headers = HeaderMap::new();
    headers.insert(HOST, HeaderValue::from_static("server.example.com"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(
        SEC_WEBSOCKET_KEY,
        HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
    );
    headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    headers.insert(
        SEC_WEBSOCKET_EXTENSIONS,
        HeaderValue::from_static("permessage-deflate; client_max_window_bits"),
    );

    let off = ServerConfig::default();
    let accept = validate_request(&Method::GET, Version::HTTP_11, &headers, &off).unwrap();
    assert_eq!(accept.deflate, None);
    assert!(
        !accept
            .response()
            .headers()
            .contains_key(SEC_WEBSOCKET_EXTENSIONS)
    );

    let on = ServerConfig {
        deflate: Some(DeflateConfig::default()),
        ..ServerConfig::default()
    };
    let accept = validate_request(&Method::GET, Version::HTTP_11, &headers, &on).unwrap();
    let deflate = accept.deflate.unwrap();
    assert_eq!(deflate.params, DeflateParams::default());
    assert_eq!(
        accept.response().headers()[SEC_WEBSOCKET_EXTENSIONS],
        "permessage-deflate"
    );

    // An invalid offer is declined, and the handshake still succeeds.
    headers.insert(
        SEC_WEBSOCKET_EXTENSIONS,
        HeaderValue::from_static("permessage-deflate; server_max_window_bits=99"),
    );
    let accept = validate_request(&Method::GET, Version::HTTP_11, &headers, &on).unwrap();
    assert_eq!(accept.deflate, None);
    assert!(
        !accept
            .response()
            .headers()
            .contains_key(SEC_WEBSOCKET_EXTENSIONS)
    );
}

#[test]
fn client_offer_lists_configured_parameters() {
    assert_eq!(
        offer_header(&DeflateConfig::default()),
        "permessage-deflate; client_max_window_bits"
    );
    let config = DeflateConfig {
        max_window_bits: 11,
        no_context_takeover: true,
        peer_no_context_takeover: true,
        peer_max_window_bits: Some(10),
        ..DeflateConfig::default()
    };
    assert_eq!(
        offer_header(&config),
        "permessage-deflate; client_no_context_takeover; server_no_context_takeover; \
         server_max_window_bits=10; client_max_window_bits=11"
    );
}

#[test]
fn client_offer_is_accepted_by_server() {
    let client = DeflateConfig {
        max_window_bits: 11,
        no_context_takeover: true,
        peer_no_context_takeover: true,
        peer_max_window_bits: Some(10),
        ..DeflateConfig::default()
    };
    let offer = offer_header(&client);
    let response = server_response(&[&offer], &DeflateConfig::default()).unwrap();
    let agreed = verify(&[&response], &client).unwrap().unwrap();
    assert_eq!(
        agreed,
        DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            server_max_window_bits: Some(10),
            client_max_window_bits: Some(11),
        }
    );
}

#[test]
fn client_accepts_valid_responses() {
    let offered = DeflateConfig::default();
    assert_eq!(verify(&[], &offered), Ok(None));
    let cases = [
        ("permessage-deflate", DeflateParams::default()),
        (
            "Permessage-Deflate; SERVER_NO_CONTEXT_TAKEOVER",
            DeflateParams {
                server_no_context_takeover: true,
                ..DeflateParams::default()
            },
        ),
        (
            "permessage-deflate; client_no_context_takeover",
            DeflateParams {
                client_no_context_takeover: true,
                ..DeflateParams::default()
            },
        ),
        (
            "permessage-deflate; server_max_window_bits=8",
            DeflateParams {
                server_max_window_bits: Some(8),
                ..DeflateParams::default()
            },
        ),
        (
            "permessage-deflate; client_max_window_bits=\"9\"",
            DeflateParams {
                client_max_window_bits: Some(9),
                ..DeflateParams::default()
            },
        ),
    ];
    for (response, expected) in cases {
        assert_eq!(
            verify(&[response], &offered),
            Ok(Some(expected)),
            "{response}"
        );
    }
}

#[test]
fn client_rejects_invalid_responses() {
    let offered = DeflateConfig {
        max_window_bits: 12,
        peer_max_window_bits: Some(10),
        peer_no_context_takeover: true,
        ..DeflateConfig::default()
    };
    let valid = "permessage-deflate; server_no_context_takeover; server_max_window_bits=10";
    assert!(verify(&[valid], &offered).unwrap().is_some());

    let invalid = [
        // Parameter faults.
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; mystery",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover; server_max_window_bits=10",
        "permessage-deflate; server_no_context_takeover=1; server_max_window_bits=10",
        "permessage-deflate; server_no_context_takeover; server_max_window_bits",
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=16",
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits",
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=x",
        // Values that do not fit the offer.
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=11",
        "permessage-deflate; server_no_context_takeover",
        "permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=13",
        // The client's compressor cannot use an 8-bit window.
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_max_window_bits=8",
        // Syntax faults and a repeated extension.
        "permessage-deflate; server_max_window_bits=\"10",
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10, permessage-deflate; server_no_context_takeover; server_max_window_bits=10",
    ];
    for response in invalid {
        let result = verify(&[response], &offered);
        assert!(
            matches!(result, Err(HandshakeError::InvalidExtension(_))),
            "{response}: {result:?}"
        );
    }
}

#[test]
fn client_rejects_extensions_not_offered() {
    let offered = DeflateConfig::default();
    assert_eq!(
        verify(&["x-webkit-deflate-frame"], &offered),
        Err(HandshakeError::UnexpectedExtension(
            "x-webkit-deflate-frame".into()
        ))
    );
    assert_eq!(
        verify(&["permessage-deflate", "x-other"], &offered),
        Err(HandshakeError::UnexpectedExtension("x-other".into()))
    );
    assert_eq!(
        verify_response(&extension_headers(&["permessage-deflate"]), None),
        Err(HandshakeError::UnexpectedExtension(
            "permessage-deflate".into()
        ))
    );
    assert_eq!(
        verify_response(&extension_headers(&["perm@ssage"]), None),
        Err(HandshakeError::UnexpectedExtension("perm@ssage".into()))
    );
}

#[test]
fn client_request_round_trip_configures_both_sides() {
    let request = ClientRequest::new(Vec::new()).with_deflate(Some(DeflateConfig {
        no_context_takeover: true,
        ..DeflateConfig::default()
    }));
    let headers = request.headers("server.example.com");
    assert_eq!(
        headers[SEC_WEBSOCKET_EXTENSIONS],
        "permessage-deflate; client_no_context_takeover; client_max_window_bits"
    );
    let server = ServerConfig {
        deflate: Some(DeflateConfig {
            max_window_bits: 10,
            peer_max_window_bits: Some(12),
            ..DeflateConfig::default()
        }),
        ..ServerConfig::default()
    };
    let accept = validate_request(&Method::GET, Version::HTTP_11, &headers, &server).unwrap();
    let server_side = accept.deflate.unwrap();
    let response = accept.response();
    assert_eq!(
        response.headers()[SEC_WEBSOCKET_EXTENSIONS],
        "permessage-deflate; client_no_context_takeover; server_max_window_bits=10; \
         client_max_window_bits=12"
    );
    let negotiated = request
        .verify(StatusCode::SWITCHING_PROTOCOLS, response.headers())
        .unwrap();
    let client_side = negotiated.deflate.unwrap();
    assert_eq!(client_side.params, server_side.params);

    assert_eq!(server_side.send_window_bits, 10);
    assert!(!server_side.send_no_context_takeover);
    assert_eq!(server_side.receive_window_bits, 12);
    assert!(server_side.receive_no_context_takeover);

    assert_eq!(client_side.send_window_bits, 12);
    assert!(client_side.send_no_context_takeover);
    assert_eq!(client_side.receive_window_bits, 10);
    assert!(!client_side.receive_no_context_takeover);

    // A caller of `verify_response` gets the protocol only.
    assert_eq!(
        request.verify_response(StatusCode::SWITCHING_PROTOCOLS, response.headers()),
        Ok(None)
    );
}

#[test]
fn per_message_deflate_clamps_windows() {
    let params = DeflateParams {
        server_max_window_bits: Some(8),
        client_max_window_bits: Some(8),
        ..DeflateParams::default()
    };
    let config = DeflateConfig {
        max_window_bits: 12,
        level: 42,
        ..DeflateConfig::default()
    };
    let client = PerMessageDeflate::new(Role::Client, params, &config);
    assert_eq!(client.send_window_bits, 9);
    assert_eq!(client.receive_window_bits, 9);
    assert_eq!(client.level, 9);

    let unlimited = PerMessageDeflate::new(Role::Server, DeflateParams::default(), &config);
    assert_eq!(unlimited.send_window_bits, 12);
    assert_eq!(unlimited.receive_window_bits, 15);
}

#[test]
fn params_display_round_trips() {
    let all = DeflateParams {
        server_no_context_takeover: true,
        client_no_context_takeover: true,
        server_max_window_bits: Some(9),
        client_max_window_bits: Some(14),
    };
    let text = all.to_string();
    let offered = DeflateConfig {
        peer_no_context_takeover: true,
        peer_max_window_bits: Some(9),
        ..DeflateConfig::default()
    };
    assert_eq!(verify(&[&text], &offered), Ok(Some(all)));
    assert_eq!(
        params(&text),
        vec![
            ("server_no_context_takeover".to_owned(), None),
            ("client_no_context_takeover".to_owned(), None),
            ("server_max_window_bits".to_owned(), Some("9".to_owned())),
            ("client_max_window_bits".to_owned(), Some("14".to_owned())),
        ]
    );
}

#[test]
fn peer_window_8_raised_to_9() {
    let server = DeflateConfig {
        peer_max_window_bits: Some(8),
        ..DeflateConfig::default()
    };
    let client = DeflateConfig::default();
    let offer = offer_header(&client);
    let response = server_response(&[&offer], &server).unwrap();
    assert!(
        response.contains("client_max_window_bits=9"),
        "response: {response}"
    );
    let agreed = verify(&[&response], &client).unwrap().unwrap();
    assert_eq!(agreed.client_max_window_bits, Some(9));
}

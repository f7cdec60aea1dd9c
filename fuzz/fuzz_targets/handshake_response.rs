//! Verifies arbitrary server responses with `ClientRequest::verify`, and checks that a
//! response built by `validate_request` from the client's own request headers always
//! passes, with matching compression settings on both sides.

#![no_main]

use arbitrary::Arbitrary;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::header::SEC_WEBSOCKET_EXTENSIONS;
use http::{Method, StatusCode, Version};
use libfuzzer_sys::fuzz_target;
use pylon_proto::handshake::validate_request;
use pylon_proto::{ClientRequest, HandshakeError, ServerConfig};
use pylon_proto_fuzz::{DeflateInput, NameInput, ValueInput, build_headers, check_deflate_pair};

#[derive(Arbitrary, Debug)]
enum StatusInput {
    SwitchingProtocols,
    /// Any status, skipped when it is outside 100-999.
    Other(u16),
}

#[derive(Arbitrary, Debug)]
struct Input {
    nonce: [u8; 16],
    /// Subprotocols the client offers.
    protocols: Vec<String>,
    /// Client permessage-deflate offer, or `None` to offer no compression.
    client_deflate: Option<DeflateInput>,
    /// Subprotocols the server supports, for the response built from the request.
    server_protocols: Vec<String>,
    /// Server permessage-deflate settings, for the response built from the request.
    server_deflate: Option<DeflateInput>,
    status: StatusInput,
    headers: Vec<(NameInput, ValueInput)>,
}

fuzz_target!(|input: Input| {
    let mut request = ClientRequest::new(input.protocols)
        .with_deflate(input.client_deflate.as_ref().map(DeflateInput::to_config));
    request.key = BASE64.encode(input.nonce);
    let status = match input.status {
        StatusInput::SwitchingProtocols => StatusCode::SWITCHING_PROTOCOLS,
        StatusInput::Other(code) => match StatusCode::from_u16(code) {
            Ok(status) => status,
            Err(_) => return,
        },
    };
    let headers = build_headers(&input.headers, &request.expected_accept());

    let verified = request.verify(status, &headers);
    assert_eq!(
        request.verify_response(status, &headers),
        verified.clone().map(|negotiated| negotiated.protocol),
        "verify_response and verify disagree"
    );
    match verified {
        Ok(negotiated) => {
            assert_eq!(status, StatusCode::SWITCHING_PROTOCOLS);
            if let Some(protocol) = &negotiated.protocol {
                assert!(
                    request.protocols.contains(protocol),
                    "selected {protocol:?}, not offered"
                );
            }
            if negotiated.deflate.is_some() {
                assert!(
                    request.deflate.is_some(),
                    "compression agreed but not offered"
                );
                assert!(headers.contains_key(SEC_WEBSOCKET_EXTENSIONS));
            }
        }
        Err(err) => check_error(&err),
    }

    let server_deflate = input.server_deflate.as_ref().map(DeflateInput::to_config);
    check_own_server(&request, input.server_protocols, server_deflate);
});

fn check_error(err: &HandshakeError) {
    // Response faults map to 502 Bad Gateway, except the `Upgrade` and `Connection` token
    // checks, which share their variants (and 400) with the request side.
    let shared = matches!(
        err,
        HandshakeError::MissingUpgrade | HandshakeError::MissingConnectionUpgrade
    );
    let expected = if shared {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::BAD_GATEWAY
    };
    assert_eq!(err.status(), expected, "response fault {err:?}");
    assert!(!err.to_string().is_empty());
    assert!(!err.label().is_empty());
}

/// Runs the server side on the client's request headers and verifies its response.
fn check_own_server(
    request: &ClientRequest,
    server_protocols: Vec<String>,
    server_deflate: Option<pylon_proto::DeflateConfig>,
) {
    let request_headers = match request.try_headers("localhost:8080") {
        Ok(headers) => headers,
        Err(err) => {
            assert!(
                matches!(err, HandshakeError::InvalidHeaderValue(_)),
                "{err:?}"
            );
            return;
        }
    };
    let config = ServerConfig {
        protocols: server_protocols,
        deflate: server_deflate,
        ..ServerConfig::default()
    };
    let accept = validate_request(&Method::GET, Version::HTTP_11, &request_headers, &config)
        .unwrap_or_else(|err| panic!("server rejected the client's own request: {err}"));
    let response = accept.response();
    let negotiated = request
        .verify(response.status(), response.headers())
        .unwrap_or_else(|err| panic!("client rejected the server's own response: {err}"));
    assert_eq!(negotiated.protocol, accept.protocol);
    match (&accept.deflate, &negotiated.deflate) {
        (Some(server), Some(client)) => check_deflate_pair(server, client),
        (None, None) => {}
        (server, client) => panic!("server agreed {server:?}, client agreed {client:?}"),
    }
}

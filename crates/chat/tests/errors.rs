//! Every class of invalid input gets its own error code, and the session keeps working.

mod common;

use common::{TestService, error_codes};
use pylon_chat::{ChatConfig, ErrorCode, ServerEvent};
use serde_json::json;

/// Sends `text` on a fresh joined session and returns the error event it produced, after
/// checking that the session still handles a valid send afterwards.
async fn error_for(text: &str) -> pylon_chat::ErrorEvent {
    let test = TestService::new(ChatConfig::default());
    let mut ann = test.client(1);
    ann.join("lobby", "ann").await;
    let before = ann.events().len();

    ann.session.handle_text(text).await;
    let events = ann.events();
    assert_eq!(
        events.len(),
        before + 1,
        "one event for {text:.80}: {events:#?}"
    );
    let ServerEvent::Error(error) = events[before].clone() else {
        panic!("no error event for {text:.80}: {events:#?}");
    };

    ann.send("lobby", "still works").await;
    let ServerEvent::Ack(ack) = ann.last_event() else {
        panic!("send after {text:.80} was not acked: {:#?}", ann.events());
    };
    assert_eq!(ack.seq, 1);
    error
}

#[tokio::test]
async fn each_bad_input_gets_its_code() {
    let config = ChatConfig::default();
    let long_text = "x".repeat(config.max_text_bytes + 1);
    let long_room = "r".repeat(config.max_room_len + 1);
    let long_nick = "n".repeat(config.max_nick_len + 1);
    let huge_frame = format!(
        r#"{{"type":"send","room":"lobby","text":"{}"}}"#,
        "y".repeat(config.max_request_bytes())
    );

    let cases: Vec<(String, ErrorCode, &str)> = vec![
        ("not json".into(), ErrorCode::InvalidJson, "invalid JSON"),
        ("[1,2]".into(), ErrorCode::InvalidJson, "got an array"),
        (
            r#"{"room":"lobby"}"#.into(),
            ErrorCode::MissingField,
            "missing field `type`",
        ),
        (
            r#"{"type":"dance"}"#.into(),
            ErrorCode::UnknownType,
            "unknown request type `dance`",
        ),
        (
            r#"{"type":"send","text":"hi"}"#.into(),
            ErrorCode::MissingField,
            "missing field `room` in `send`",
        ),
        (
            r#"{"type":"send","room":"lobby"}"#.into(),
            ErrorCode::MissingField,
            "missing field `text` in `send`",
        ),
        (
            r#"{"type":"send","room":"lobby","text":5}"#.into(),
            ErrorCode::InvalidField,
            "field `text` in `send` must be a string, got 5",
        ),
        (
            r#"{"type":"join","room":"lobby","nick":"ann","since":-3}"#.into(),
            ErrorCode::InvalidField,
            "field `since` in `join` must be a non-negative integer, got -3",
        ),
        (
            json!({"type": "send", "room": "lobby", "text": long_text}).to_string(),
            ErrorCode::TooLarge,
            "field `text` in `send` is 4097 bytes, over the limit of 4096 bytes",
        ),
        (huge_frame, ErrorCode::TooLarge, "over the limit of"),
        (
            r#"{"type":"join","room":"","nick":"ann"}"#.into(),
            ErrorCode::InvalidRoom,
            "room name must not be empty",
        ),
        (
            json!({"type": "join", "room": long_room, "nick": "ann"}).to_string(),
            ErrorCode::InvalidRoom,
            "65 characters, over the limit of 64",
        ),
        (
            json!({"type": "join", "room": "lob\nby", "nick": "ann"}).to_string(),
            ErrorCode::InvalidRoom,
            "must not contain control characters, found U+000A",
        ),
        (
            r#"{"type":"join","room":"lobby","nick":""}"#.into(),
            ErrorCode::InvalidNick,
            "nick must not be empty",
        ),
        (
            json!({"type": "join", "room": "lobby", "nick": long_nick}).to_string(),
            ErrorCode::InvalidNick,
            "33 characters, over the limit of 32",
        ),
        (
            r#"{"type":"history","room":"kitchen"}"#.into(),
            ErrorCode::NotJoined,
            "not joined to room `kitchen`",
        ),
        (
            r#"{"type":"join","room":"kitchen","nick":"bob"}"#.into(),
            ErrorCode::NickMismatch,
            "cannot join as `bob`",
        ),
    ];

    for (text, code, message_part) in cases {
        let error = error_for(&text).await;
        assert_eq!(error.code, code, "code for {text:.80}");
        assert!(
            error.message.contains(message_part),
            "message for {text:.80} is {:?}, expected it to contain {message_part:?}",
            error.message
        );
    }
}

#[tokio::test]
async fn error_event_names_request_type() {
    let error = error_for(r#"{"type":"send","room":"lobby","text":"","client_id":"c9"}"#).await;
    assert_eq!(error.code, ErrorCode::InvalidField);
    assert_eq!(error.request.as_deref(), Some("send"));
    assert_eq!(error.room.as_deref(), Some("lobby"));
    assert_eq!(error.client_id.as_deref(), Some("c9"));
}

#[tokio::test]
async fn error_event_wire_shape() {
    let test = TestService::new(ChatConfig::default());
    let mut ann = test.client(1);
    ann.session
        .handle_text(r#"{"type":"leave","room":"lobby"}"#)
        .await;
    assert_eq!(
        ann.out.texts(),
        [concat!(
            r#"{"type":"error","code":"not_joined","#,
            r#""message":"not joined to room `lobby`; send `join` first","#,
            r#""ref":"leave","room":"lobby"}"#
        )]
    );
}

#[tokio::test]
async fn binary_frames_are_rejected() {
    let test = TestService::new(ChatConfig::default());
    let mut ann = test.client(1);
    ann.session.handle_binary(&[1, 2, 3]).await;
    ann.request(json!({"type": "ping"})).await;

    let events = ann.events();
    assert_eq!(error_codes(&events), ["binary_not_supported"]);
    assert_eq!(events[1], ServerEvent::Pong);
}

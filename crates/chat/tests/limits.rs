//! Per-connection and per-node limits: joined rooms, open rooms and the request rate.

mod common;

use std::time::Duration;

use common::{TestService, error_codes};
use pylon_chat::{ChatConfig, ErrorCode, RateLimit, ServerEvent, Store};
use serde_json::json;

fn last_error(client: &common::Client) -> pylon_chat::ErrorEvent {
    match client.last_event() {
        ServerEvent::Error(error) => error,
        other => panic!("expected an error event, got {other:?}"),
    }
}

fn config_without_rate_limit() -> ChatConfig {
    ChatConfig {
        request_rate: None,
        ..ChatConfig::default()
    }
}

#[tokio::test]
async fn joined_rooms_per_connection_are_capped() {
    let test = TestService::new(ChatConfig::default());
    let max = ChatConfig::default().max_rooms_per_connection;
    let mut ann = test.client(1);
    for room in 0..max {
        ann.join(&format!("room-{room}"), "ann").await;
    }
    assert_eq!(error_codes(&ann.events()), Vec::<String>::new());

    ann.join("one-too-many", "ann").await;
    let error = last_error(&ann);
    assert_eq!(error.code.as_str(), "too_many_rooms");
    assert_eq!(error.request.as_deref(), Some("join"));
    assert_eq!(error.room.as_deref(), Some("one-too-many"));
    assert!(
        error.message.contains(&format!("limit of {max} rooms")),
        "{}",
        error.message
    );
    assert!(!ann.session.is_joined("one-too-many"));
    assert_eq!(test.service.room_count(), max);

    // A joined room can be joined again, and leaving one makes room for another.
    ann.join("room-0", "ann").await;
    assert!(matches!(ann.last_event(), ServerEvent::History(_)));
    ann.request(json!({"type": "leave", "room": "room-1"}))
        .await;
    ann.join("one-too-many", "ann").await;
    assert!(ann.session.is_joined("one-too-many"));
}

#[tokio::test]
async fn open_rooms_per_node_are_capped() {
    let test = TestService::new(ChatConfig {
        max_rooms_per_node: 3,
        ..config_without_rate_limit()
    });
    let mut ann = test.client(1);
    let mut bob = test.client(2);
    ann.join("a", "ann").await;
    ann.join("b", "ann").await;
    bob.join("c", "bob").await;

    bob.join("d", "bob").await;
    let error = last_error(&bob);
    assert_eq!(error.code, ErrorCode::ServerBusy);
    assert_eq!(error.room.as_deref(), Some("d"));
    assert!(!bob.session.is_joined("d"));
    assert_eq!(test.service.room_count(), 3);

    // Rooms that are already open on the node can still be joined.
    bob.join("a", "bob").await;
    assert!(bob.session.is_joined("a"));

    // Closing a room frees its place.
    ann.request(json!({"type": "leave", "room": "b"})).await;
    bob.join("d", "bob").await;
    assert!(bob.session.is_joined("d"));
    assert_eq!(test.service.room_count(), 3);
}

#[tokio::test(start_paused = true)]
async fn requests_over_rate_are_rejected() {
    let test = TestService::new(ChatConfig::default());
    let RateLimit {
        requests_per_second,
        burst,
    } = ChatConfig::default()
        .request_rate
        .expect("the default config limits the request rate");
    let mut ann = test.client(1);
    for _ in 0..burst {
        ann.request(json!({"type": "ping"})).await;
    }
    assert_eq!(error_codes(&ann.events()), Vec::<String>::new());

    ann.request(json!({"type": "ping"})).await;
    let error = last_error(&ann);
    assert_eq!(error.code.as_str(), "rate_limited");
    assert_eq!(error.request.as_deref(), Some("ping"));
    let limit = format!("{requests_per_second} requests per second with bursts of {burst}");
    assert!(error.message.contains(&limit), "{}", error.message);

    // One token comes back every 1/rate seconds.
    tokio::time::advance(Duration::from_secs(1) / requests_per_second).await;
    ann.request(json!({"type": "ping"})).await;
    assert_eq!(ann.last_event(), ServerEvent::Pong);
    ann.request(json!({"type": "ping"})).await;
    assert_eq!(last_error(&ann).code, ErrorCode::RateLimited);

    // A full second refills `requests_per_second` tokens.
    tokio::time::advance(Duration::from_secs(1)).await;
    let before = ann.events().len();
    for _ in 0..requests_per_second {
        ann.request(json!({"type": "ping"})).await;
    }
    let replies = &ann.events()[before..];
    assert!(
        replies.iter().all(|event| *event == ServerEvent::Pong),
        "{replies:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn rate_limited_send_is_not_stored() {
    let test = TestService::new(ChatConfig {
        request_rate: Some(RateLimit {
            requests_per_second: 2,
            burst: 2,
        }),
        ..ChatConfig::default()
    });
    let mut ann = test.client(1);
    ann.join("lobby", "ann").await;
    ann.send_with_id("lobby", "first", "c1").await;
    ann.send_with_id("lobby", "second", "c2").await;

    let error = last_error(&ann);
    assert_eq!(error.code, ErrorCode::RateLimited);
    assert_eq!(error.request.as_deref(), Some("send"));
    assert_eq!(error.room.as_deref(), Some("lobby"));
    assert_eq!(error.client_id.as_deref(), Some("c2"));
    assert_eq!(
        error.message,
        "too many requests: the limit is 2 requests per second with bursts of 2; \
         the `send` was not executed, retry it in 500 ms"
    );
    let stored: Vec<String> = test
        .store
        .latest("lobby", 10)
        .await
        .expect("store reads")
        .into_iter()
        .map(|message| message.text)
        .collect();
    assert_eq!(stored, ["first"]);

    // Binary frames and invalid requests take tokens too.
    tokio::time::advance(Duration::from_secs(1)).await;
    ann.session.handle_binary(&[1, 2, 3]).await;
    assert_eq!(last_error(&ann).code, ErrorCode::BinaryNotSupported);
    ann.session.handle_text("not json").await;
    assert_eq!(last_error(&ann).code, ErrorCode::InvalidJson);
    ann.session.handle_binary(&[1, 2, 3]).await;
    assert_eq!(last_error(&ann).code, ErrorCode::RateLimited);
    ann.session.handle_text("not json").await;
    let error = last_error(&ann);
    assert_eq!(error.code, ErrorCode::RateLimited);
    assert!(
        error.message.contains("the request was not executed"),
        "{}",
        error.message
    );
}

#[tokio::test(start_paused = true)]
async fn rate_limit_can_be_disabled() {
    let test = TestService::new(config_without_rate_limit());
    let mut ann = test.client(1);
    for _ in 0..1000 {
        ann.request(json!({"type": "ping"})).await;
    }
    let events = ann.events();
    assert_eq!(events.len(), 1000);
    assert!(events.iter().all(|event| *event == ServerEvent::Pong));
}

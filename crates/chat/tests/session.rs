//! Joining, sending, history paging, idempotent resend and presence.

mod common;

use common::{Client, TestService, assert_contiguous, error_codes, live_messages, received_seqs};
use pylon_chat::{ChatConfig, ErrorCode, PresenceKind, ServerEvent};
use serde_json::json;

fn presence_events(client: &Client) -> Vec<(PresenceKind, String, Vec<String>)> {
    client
        .events()
        .into_iter()
        .filter_map(|event| match event {
            ServerEvent::Presence(presence) => {
                Some((presence.event, presence.nick, presence.members))
            }
            _ => None,
        })
        .collect()
}

fn members(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

#[tokio::test]
async fn two_sessions_see_messages_in_order() {
    let test = TestService::new(ChatConfig::default());
    let mut ann = test.client(1);
    let mut bob = test.client(2);
    ann.join("lobby", "ann").await;
    bob.join("lobby", "bob").await;

    for i in 0..5 {
        ann.send("lobby", &format!("ann {i}")).await;
        bob.send("lobby", &format!("bob {i}")).await;
    }
    ann.wait_for_seq("lobby", 10).await;
    bob.wait_for_seq("lobby", 10).await;

    for client in [&ann, &bob] {
        let messages = live_messages(&client.events(), "lobby");
        let seqs: Vec<u64> = messages.iter().map(|message| message.seq).collect();
        assert_contiguous(&seqs, 1, 10, "live seqs");
        assert_eq!(messages[0].nick, "ann");
        assert_eq!(messages[0].text, "ann 0");
        assert_eq!(messages[1].nick, "bob");
        assert!(messages.iter().all(|message| message.ts > 0));
    }

    let acks: Vec<(u64, bool)> = ann
        .events()
        .into_iter()
        .filter_map(|event| match event {
            ServerEvent::Ack(ack) => Some((ack.seq, ack.duplicate)),
            _ => None,
        })
        .collect();
    assert_eq!(
        acks,
        [(1, false), (3, false), (5, false), (7, false), (9, false)]
    );
}

#[tokio::test]
async fn join_sends_joined_then_latest_history() {
    let test = TestService::new(ChatConfig {
        history_on_join: 5,
        ..ChatConfig::default()
    });
    test.seed("lobby", 8).await;
    let mut ann = test.client(1);
    ann.join("lobby", "ann").await;

    let events = ann.events();
    assert_eq!(events.len(), 2, "{events:#?}");
    let ServerEvent::Joined(joined) = &events[0] else {
        panic!("first event is not joined: {events:#?}");
    };
    assert_eq!(joined.room, "lobby");
    assert_eq!(joined.nick, "ann");
    assert_eq!(joined.members, members(&["ann"]));
    assert_eq!(joined.last_seq, 8);
    let ServerEvent::History(history) = &events[1] else {
        panic!("second event is not history: {events:#?}");
    };
    assert!(history.has_more);
    assert_contiguous(&received_seqs(&events, "lobby"), 4, 8, "join history");
}

#[tokio::test]
async fn join_empty_room_sends_empty_history() {
    let test = TestService::new(ChatConfig::default());
    let mut ann = test.client(1);
    ann.join("new-room", "ann").await;
    let ServerEvent::History(history) = ann.last_event() else {
        panic!("last event is not history");
    };
    assert!(history.messages.is_empty());
    assert!(!history.has_more);
}

#[tokio::test]
async fn join_since_sends_exactly_missed_messages() {
    let test = TestService::new(ChatConfig {
        max_page: 4,
        ..ChatConfig::default()
    });
    test.seed("lobby", 11).await;
    let mut ann = test.client(1);
    ann.join_since("lobby", "ann", 2).await;

    let events = ann.events();
    assert_contiguous(&received_seqs(&events, "lobby"), 3, 11, "recovered seqs");
    let pages: Vec<(usize, bool)> = events
        .iter()
        .filter_map(|event| match event {
            ServerEvent::History(history) => Some((history.messages.len(), history.has_more)),
            _ => None,
        })
        .collect();
    assert_eq!(pages, [(4, true), (4, true), (1, false)]);

    let mut bob = test.client(2);
    bob.join("lobby", "bob").await;
    bob.send("lobby", "after recovery").await;
    let events = ann.wait_for_seq("lobby", 12).await;
    assert_contiguous(
        &received_seqs(&events, "lobby"),
        3,
        12,
        "recovered then live",
    );
}

#[tokio::test]
async fn join_since_latest_seq_sends_empty_history() {
    let test = TestService::new(ChatConfig::default());
    test.seed("lobby", 3).await;
    let mut ann = test.client(1);
    ann.join_since("lobby", "ann", 3).await;
    assert!(received_seqs(&ann.events(), "lobby").is_empty());

    let mut bob = test.client(2);
    bob.join_since("lobby", "bob", 100).await;
    bob.send("lobby", "next").await;
    // A `since` beyond the room's last seq does not hide the next message.
    let events = bob.wait_for_seq("lobby", 4).await;
    assert_eq!(received_seqs(&events, "lobby"), [4]);
}

#[tokio::test]
async fn resend_with_client_id_is_acked_once_stored() {
    let test = TestService::new(ChatConfig::default());
    let mut ann = test.client(1);
    let mut bob = test.client(2);
    ann.join("lobby", "ann").await;
    bob.join("lobby", "bob").await;

    ann.send_with_id("lobby", "hello", "ann-1").await;
    ann.send_with_id("lobby", "hello", "ann-1").await;
    ann.send_with_id("lobby", "second", "ann-2").await;
    bob.wait_for_seq("lobby", 2).await;

    let acks: Vec<(Option<String>, u64, bool)> = ann
        .events()
        .into_iter()
        .filter_map(|event| match event {
            ServerEvent::Ack(ack) => Some((ack.client_id, ack.seq, ack.duplicate)),
            _ => None,
        })
        .collect();
    assert_eq!(
        acks,
        [
            (Some("ann-1".to_owned()), 1, false),
            (Some("ann-1".to_owned()), 1, true),
            (Some("ann-2".to_owned()), 2, false),
        ]
    );
    let texts: Vec<String> = live_messages(&bob.events(), "lobby")
        .into_iter()
        .map(|message| message.text)
        .collect();
    assert_eq!(texts, ["hello", "second"]);
    let first = &live_messages(&bob.events(), "lobby")[0];
    assert_eq!(first.client_id.as_deref(), Some("ann-1"));
}

#[tokio::test]
async fn history_pages_backwards() {
    let test = TestService::new(ChatConfig {
        history_on_join: 0,
        max_page: 10,
        ..ChatConfig::default()
    });
    test.seed("lobby", 25).await;
    let mut ann = test.client(1);
    ann.join("lobby", "ann").await;

    let mut pages = Vec::new();
    let requests = [
        json!({"type": "history", "room": "lobby", "limit": 8}),
        json!({"type": "history", "room": "lobby", "before": 18, "limit": 8}),
        json!({"type": "history", "room": "lobby", "before": 10, "limit": 8}),
        json!({"type": "history", "room": "lobby", "before": 2, "limit": 8}),
        json!({"type": "history", "room": "lobby", "before": 30, "limit": 500}),
    ];
    for request in requests {
        ann.request(request).await;
        let ServerEvent::History(history) = ann.last_event() else {
            panic!("history request got no history event: {:#?}", ann.events());
        };
        let seqs: Vec<u64> = history.messages.iter().map(|message| message.seq).collect();
        pages.push((seqs, history.has_more));
    }
    assert_eq!(pages[0], ((18..=25).collect::<Vec<u64>>(), true));
    assert_eq!(pages[1], ((10..=17).collect::<Vec<u64>>(), true));
    assert_eq!(pages[2], ((2..=9).collect::<Vec<u64>>(), true));
    assert_eq!(pages[3], (vec![1], false));
    // A limit over max_page is capped to max_page.
    assert_eq!(pages[4], ((16..=25).collect::<Vec<u64>>(), true));
}

#[tokio::test]
async fn presence_counts_connections_per_nick() {
    let test = TestService::new(ChatConfig::default());
    let mut ann = test.client(1);
    let mut bob_phone = test.client(2);
    let mut bob_laptop = test.client(3);
    ann.join("lobby", "ann").await;
    bob_phone.join("lobby", "bob").await;
    bob_laptop.join("lobby", "bob").await;

    let ServerEvent::Joined(joined) = &bob_laptop.events()[0] else {
        panic!("first event is not joined");
    };
    assert_eq!(joined.members, members(&["ann", "bob"]));
    assert_eq!(
        presence_events(&ann),
        [(
            PresenceKind::Join,
            "bob".to_owned(),
            members(&["ann", "bob"])
        )]
    );
    assert!(presence_events(&bob_phone).is_empty());

    bob_phone
        .request(json!({"type": "leave", "room": "lobby"}))
        .await;
    assert!(matches!(bob_phone.last_event(), ServerEvent::Left(left) if left.room == "lobby"));
    assert_eq!(presence_events(&ann).len(), 1, "bob still has a connection");

    bob_laptop
        .request(json!({"type": "leave", "room": "lobby"}))
        .await;
    assert_eq!(
        presence_events(&ann)[1],
        (PresenceKind::Leave, "bob".to_owned(), members(&["ann"]))
    );
}

#[tokio::test]
async fn close_without_leave_sends_presence_leave() {
    let test = TestService::new(ChatConfig::default());
    let mut ann = test.client(1);
    let mut bob = test.client(2);
    ann.join("lobby", "ann").await;
    ann.join("kitchen", "ann").await;
    bob.join("lobby", "bob").await;
    bob.join("kitchen", "bob").await;
    assert_eq!(test.service.room_count(), 2);

    bob.session.close().await;
    let leaves: Vec<(PresenceKind, String, Vec<String>)> = presence_events(&ann)
        .into_iter()
        .filter(|(kind, _, _)| *kind == PresenceKind::Leave)
        .collect();
    assert_eq!(
        leaves,
        [
            (PresenceKind::Leave, "bob".to_owned(), members(&["ann"])),
            (PresenceKind::Leave, "bob".to_owned(), members(&["ann"])),
        ]
    );

    // Dropping a session, as when its task ends, leaves too and closes unused rooms.
    drop(ann);
    assert_eq!(test.service.room_count(), 0);
    // The hub task drops its subscription when the runtime cancels it.
    for _ in 0..100 {
        if test.broker.room_count() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        test.broker.room_count(),
        0,
        "room subscriptions are dropped"
    );
}

#[tokio::test]
async fn rooms_reopen_after_last_member_leaves() {
    let test = TestService::new(ChatConfig::default());
    let mut ann = test.client(1);
    ann.join("lobby", "ann").await;
    ann.send("lobby", "one").await;
    ann.request(json!({"type": "leave", "room": "lobby"})).await;
    assert_eq!(test.service.room_count(), 0);

    let mut bob = test.client(2);
    bob.join("lobby", "bob").await;
    ann.join("lobby", "ann").await;
    ann.send("lobby", "two").await;
    let events = bob.wait_for_seq("lobby", 2).await;
    assert_eq!(received_seqs(&events, "lobby"), [1, 2]);
}

#[tokio::test]
async fn nick_is_fixed_by_first_join() {
    let test = TestService::new(ChatConfig::default());
    let mut ann = test.client(1);
    ann.join("lobby", "ann").await;
    ann.join("kitchen", "anna").await;

    let ServerEvent::Error(error) = ann.last_event() else {
        panic!("second nick was accepted: {:#?}", ann.events());
    };
    assert_eq!(error.code, ErrorCode::NickMismatch);
    assert_eq!(error.room.as_deref(), Some("kitchen"));
    assert!(error.message.contains("`ann`"), "{}", error.message);
    assert!(!ann.session.is_joined("kitchen"));

    ann.join("kitchen", "ann").await;
    assert!(ann.session.is_joined("kitchen"));
    assert_eq!(ann.session.nick(), Some("ann"));
}

#[tokio::test]
async fn rejoin_resends_history_without_presence() {
    let test = TestService::new(ChatConfig::default());
    let mut ann = test.client(1);
    let mut bob = test.client(2);
    ann.join("lobby", "ann").await;
    bob.join("lobby", "bob").await;
    ann.send("lobby", "one").await;
    ann.send("lobby", "two").await;
    bob.wait_for_seq("lobby", 2).await;

    let before = bob.events().len();
    bob.join_since("lobby", "bob", 1).await;
    ann.send("lobby", "three").await;
    let events = bob.wait_for_seq("lobby", 3).await;
    assert_eq!(received_seqs(&events[before..], "lobby"), [2, 3]);
    assert_eq!(
        presence_events(&ann).len(),
        1,
        "only bob's first join is announced"
    );
}

#[tokio::test]
async fn requests_for_rooms_not_joined_fail() {
    let test = TestService::new(ChatConfig::default());
    let mut ann = test.client(1);
    ann.send_with_id("lobby", "hi", "c1").await;
    ann.request(json!({"type": "history", "room": "lobby"}))
        .await;
    ann.request(json!({"type": "leave", "room": "lobby"})).await;

    let events = ann.events();
    assert_eq!(
        error_codes(&events),
        ["not_joined", "not_joined", "not_joined"]
    );
    let ServerEvent::Error(first) = &events[0] else {
        unreachable!("checked above");
    };
    assert_eq!(first.request.as_deref(), Some("send"));
    assert_eq!(first.client_id.as_deref(), Some("c1"));
    assert_eq!(
        first.message,
        "not joined to room `lobby`; send `join` first"
    );
}

#[tokio::test]
async fn ping_gets_pong() {
    let test = TestService::new(ChatConfig::default());
    let mut ann = test.client(1);
    ann.request(json!({"type": "ping"})).await;
    assert_eq!(ann.out.texts(), [r#"{"type":"pong"}"#]);
}

//! Test client for chat sessions: an `Outbound` that collects events, and helpers to drive
//! a `Session` and wait for events.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pylon_chat::{
    ChatConfig, ChatMessage, ChatService, MemoryBroker, Outbound, OutboundError, ServerEvent,
    Session, SqliteStore, Store,
};
use serde_json::json;
use tokio::sync::Notify;

/// Maximum time a test waits for an expected event.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Outbound that records every text and wakes waiters.
#[derive(Default)]
pub(crate) struct RecordingOutbound {
    texts: Mutex<Vec<String>>,
    changed: Notify,
}

impl Outbound for RecordingOutbound {
    fn send_text(&self, text: String) -> Result<(), OutboundError> {
        self.texts.lock().unwrap().push(text);
        self.changed.notify_waiters();
        Ok(())
    }
}

impl RecordingOutbound {
    pub(crate) fn events(&self) -> Vec<ServerEvent> {
        self.texts
            .lock()
            .unwrap()
            .iter()
            .map(|text| {
                serde_json::from_str(text)
                    .unwrap_or_else(|err| panic!("server sent invalid event {text}: {err}"))
            })
            .collect()
    }

    pub(crate) fn texts(&self) -> Vec<String> {
        self.texts.lock().unwrap().clone()
    }

    /// Waits until `ready` holds for the events received so far, and returns them.
    pub(crate) async fn wait_for(
        &self,
        description: &str,
        ready: impl Fn(&[ServerEvent]) -> bool,
    ) -> Vec<ServerEvent> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let changed = self.changed.notified();
            let events = self.events();
            if ready(&events) {
                return events;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!("timed out after {WAIT:?} waiting for {description}; received {events:#?}");
            }
        }
    }
}

/// One client connection: a session and the events it received.
pub(crate) struct Client {
    pub(crate) session: Session,
    pub(crate) out: Arc<RecordingOutbound>,
}

impl Client {
    pub(crate) fn connect(service: &ChatService, conn_id: u64) -> Self {
        let out = Arc::new(RecordingOutbound::default());
        let session = service.connect(conn_id, Arc::clone(&out) as Arc<dyn Outbound>);
        Self { session, out }
    }

    pub(crate) async fn request(&mut self, request: serde_json::Value) {
        self.session.handle_text(&request.to_string()).await;
    }

    pub(crate) async fn join(&mut self, room: &str, nick: &str) {
        self.request(json!({"type": "join", "room": room, "nick": nick}))
            .await;
    }

    pub(crate) async fn join_since(&mut self, room: &str, nick: &str, since: u64) {
        self.request(json!({"type": "join", "room": room, "nick": nick, "since": since}))
            .await;
    }

    pub(crate) async fn send(&mut self, room: &str, text: &str) {
        self.request(json!({"type": "send", "room": room, "text": text}))
            .await;
    }

    pub(crate) async fn send_with_id(&mut self, room: &str, text: &str, client_id: &str) {
        self.request(json!({"type": "send", "room": room, "text": text, "client_id": client_id}))
            .await;
    }

    pub(crate) fn events(&self) -> Vec<ServerEvent> {
        self.out.events()
    }

    /// Returns the last event received, failing the test if there is none.
    pub(crate) fn last_event(&self) -> ServerEvent {
        self.events().pop().expect("client received no event")
    }

    /// Waits until the client received a live `message` with seq `seq` in `room`.
    pub(crate) async fn wait_for_seq(&self, room: &str, seq: u64) -> Vec<ServerEvent> {
        self.out
            .wait_for(&format!("message {seq} in {room}"), |events| {
                received_seqs(events, room).contains(&seq)
            })
            .await
    }
}

/// Seqs of every message received for `room`, from `history` events and live `message`
/// events, in order of arrival.
pub(crate) fn received_seqs(events: &[ServerEvent], room: &str) -> Vec<u64> {
    let mut seqs = Vec::new();
    for event in events {
        match event {
            ServerEvent::History(history) if history.room == room => {
                seqs.extend(history.messages.iter().map(|message| message.seq));
            }
            ServerEvent::Message(message) if message.room == room => seqs.push(message.seq),
            _ => {}
        }
    }
    seqs
}

/// Live `message` events for `room`, in order of arrival.
pub(crate) fn live_messages(events: &[ServerEvent], room: &str) -> Vec<ChatMessage> {
    events
        .iter()
        .filter_map(|event| match event {
            ServerEvent::Message(message) if message.room == room => Some(message.clone()),
            _ => None,
        })
        .collect()
}

pub(crate) fn error_codes(events: &[ServerEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|event| match event {
            ServerEvent::Error(error) => Some(error.code.as_str().to_owned()),
            _ => None,
        })
        .collect()
}

/// A service on an in-memory SQLite store and a memory broker.
pub(crate) struct TestService {
    pub(crate) service: ChatService,
    pub(crate) store: Arc<SqliteStore>,
    pub(crate) broker: Arc<MemoryBroker>,
}

impl TestService {
    pub(crate) fn new(config: ChatConfig) -> Self {
        Self::with_broker(config, MemoryBroker::new())
    }

    pub(crate) fn with_broker(config: ChatConfig, broker: MemoryBroker) -> Self {
        let store = Arc::new(SqliteStore::open_in_memory().expect("in-memory store opens"));
        let broker = Arc::new(broker);
        let service = ChatService::new(
            config,
            Arc::clone(&store) as Arc<dyn Store>,
            Arc::clone(&broker) as Arc<dyn pylon_chat::Broker>,
        );
        Self {
            service,
            store,
            broker,
        }
    }

    pub(crate) fn client(&self, conn_id: u64) -> Client {
        Client::connect(&self.service, conn_id)
    }

    /// Stores `count` messages in `room` directly, bypassing sessions and the broker.
    pub(crate) async fn seed(&self, room: &str, count: usize) {
        for i in 0..count {
            self.store
                .append(room, "seed", &format!("seeded {i}"), None)
                .await
                .expect("seeding the store succeeds");
        }
    }
}

/// Asserts that `seqs` is exactly `first..=last`.
pub(crate) fn assert_contiguous(seqs: &[u64], first: u64, last: u64, context: &str) {
    let expected: Vec<u64> = (first..=last).collect();
    assert_eq!(seqs, expected.as_slice(), "{context}");
}

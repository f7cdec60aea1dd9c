//! Ordering and recovery: joins that race with sends, reordered, lost or lagged broker
//! deliveries, and failing store or broker calls.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::{Client, TestService, assert_contiguous, error_codes, received_seqs};
use pylon_chat::{
    Appended, Broker, BrokerError, ChatConfig, ChatEvent, ChatMessage, ChatService, ErrorCode,
    MemoryBroker, ServerEvent, SqliteStore, Store, StoreError, Subscription,
};

fn message_event(appended: Appended) -> ChatEvent {
    ChatEvent::Message(appended.message)
}

/// Runs many joins while several writers send, and checks that each joiner receives every
/// message from its join point once, in seq order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_racing_sends_has_no_gap_or_duplicate() {
    const ITERATIONS: u64 = 60;
    const WRITERS: u64 = 3;
    const SENDS_PER_WRITER: u64 = 15;
    const SEEDED: u64 = 10;
    const TOTAL: u64 = SEEDED + WRITERS * SENDS_PER_WRITER;

    let run = async {
        for iteration in 0..ITERATIONS {
            // A small page makes recovery read several pages while writers append.
            let test = TestService::new(ChatConfig {
                history_on_join: 4,
                max_page: 3,
                ..ChatConfig::default()
            });
            test.seed("lobby", SEEDED as usize).await;

            let mut writer_tasks = Vec::new();
            for writer in 0..WRITERS {
                let mut client = test.client(100 + writer);
                client.join("lobby", &format!("writer{writer}")).await;
                writer_tasks.push(tokio::spawn(async move {
                    for i in 0..SENDS_PER_WRITER {
                        client.send("lobby", &format!("message {i}")).await;
                        tokio::task::yield_now().await;
                    }
                    client
                }));
            }

            // Vary the point at which the reader joins relative to the writers.
            for _ in 0..iteration % 7 {
                tokio::task::yield_now().await;
            }
            let mut reader = test.client(1);
            let since = (iteration % 2 == 0).then_some(iteration % SEEDED);
            match since {
                Some(since) => reader.join_since("lobby", "reader", since).await,
                None => reader.join("lobby", "reader").await,
            }

            let mut writers: Vec<Client> = Vec::new();
            for task in writer_tasks {
                writers.push(task.await.expect("writer task finished"));
            }
            reader.wait_for_seq("lobby", TOTAL).await;
            // Give late duplicates a chance to show up before checking.
            tokio::time::sleep(Duration::from_millis(5)).await;

            let events = reader.events();
            assert!(
                matches!(events.first(), Some(ServerEvent::Joined(_))),
                "iteration {iteration}: first event is not joined"
            );
            let seqs = received_seqs(&events, "lobby");
            let first = match since {
                Some(since) => since + 1,
                None => seqs[0],
            };
            assert_contiguous(
                &seqs,
                first,
                TOTAL,
                &format!("iteration {iteration}, since {since:?}"),
            );
            for writer in &writers {
                let seqs = received_seqs(&writer.events(), "lobby");
                assert_contiguous(
                    &seqs,
                    seqs[0],
                    TOTAL,
                    &format!("iteration {iteration}, writer"),
                );
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("race iterations finish within 120 s");
}

#[tokio::test]
async fn reordered_publishes_are_delivered_in_order() {
    let test = TestService::new(ChatConfig::default());
    let mut ann = test.client(1);
    ann.join("lobby", "ann").await;

    let mut appended = Vec::new();
    for i in 0..3 {
        appended.push(
            test.store
                .append("lobby", "bob", &format!("{i}"), None)
                .await
                .unwrap(),
        );
    }
    for index in [2, 0, 1] {
        let event = message_event(appended[index].clone());
        test.broker.publish("lobby", event).await.unwrap();
    }
    let events = ann.wait_for_seq("lobby", 3).await;
    assert_eq!(received_seqs(&events, "lobby"), [1, 2, 3]);
}

#[tokio::test]
async fn lost_publish_is_filled_from_store() {
    let test = TestService::new(ChatConfig::default());
    let mut ann = test.client(1);
    ann.join("lobby", "ann").await;

    test.store
        .append("lobby", "bob", "lost", None)
        .await
        .unwrap();
    let second = test
        .store
        .append("lobby", "bob", "kept", None)
        .await
        .unwrap();
    test.broker
        .publish("lobby", message_event(second))
        .await
        .unwrap();

    let events = ann.wait_for_seq("lobby", 2).await;
    assert_eq!(received_seqs(&events, "lobby"), [1, 2]);
}

/// Publishes more events than the broker buffers without letting the hub task run, so its
/// subscription lags, and checks that the hub reads the skipped messages from the store.
#[tokio::test(flavor = "current_thread")]
async fn lagged_subscription_is_filled_from_store() {
    let test = TestService::with_broker(ChatConfig::default(), MemoryBroker::with_capacity(2));
    let mut ann = test.client(1);
    ann.join("lobby", "ann").await;

    let mut appended = Vec::new();
    for i in 0..20 {
        appended.push(
            test.store
                .append("lobby", "bob", &format!("{i}"), None)
                .await
                .unwrap(),
        );
    }
    // MemoryBroker::publish never waits, so the hub task cannot run inside this loop on a
    // current-thread runtime.
    for message in appended {
        test.broker
            .publish("lobby", message_event(message))
            .await
            .unwrap();
    }

    let events = ann.wait_for_seq("lobby", 20).await;
    assert_contiguous(&received_seqs(&events, "lobby"), 1, 20, "after lag");
}

/// Broker whose publish fails while `fail_publish` is set.
struct FlakyBroker {
    inner: MemoryBroker,
    fail_publish: AtomicBool,
}

#[async_trait]
impl Broker for FlakyBroker {
    async fn publish(&self, room: &str, event: ChatEvent) -> Result<(), BrokerError> {
        if self.fail_publish.load(Ordering::SeqCst) {
            return Err(BrokerError::Backend("test broker is down".into()));
        }
        self.inner.publish(room, event).await
    }

    async fn subscribe(&self, room: &str) -> Result<Subscription, BrokerError> {
        self.inner.subscribe(room).await
    }
}

#[tokio::test]
async fn failed_publish_still_reaches_local_members() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let broker = Arc::new(FlakyBroker {
        inner: MemoryBroker::new(),
        fail_publish: AtomicBool::new(true),
    });
    let service = ChatService::new(ChatConfig::default(), store, broker.clone());
    let mut ann = Client::connect(&service, 1);
    let mut bob = Client::connect(&service, 2);
    ann.join("lobby", "ann").await;
    bob.join("lobby", "bob").await;

    ann.send_with_id("lobby", "through the store", "a1").await;
    let ServerEvent::Ack(ack) = ann.last_event() else {
        panic!("send was not acked: {:#?}", ann.events());
    };
    assert_eq!(ack.seq, 1);
    let events = bob.wait_for_seq("lobby", 1).await;
    assert_eq!(received_seqs(&events, "lobby"), [1]);

    broker.fail_publish.store(false, Ordering::SeqCst);
    ann.send("lobby", "through the broker").await;
    let events = bob.wait_for_seq("lobby", 2).await;
    assert_eq!(received_seqs(&events, "lobby"), [1, 2]);
}

/// Store whose appends, or reads other than `last_seq`, fail while the matching flag is set.
struct FlakyStore {
    inner: SqliteStore,
    fail_append: AtomicBool,
    fail_reads: AtomicBool,
}

impl FlakyStore {
    fn check(flag: &AtomicBool) -> Result<(), StoreError> {
        if flag.load(Ordering::SeqCst) {
            return Err(StoreError::Backend("test store is down".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for FlakyStore {
    async fn append(
        &self,
        room: &str,
        nick: &str,
        text: &str,
        client_id: Option<&str>,
    ) -> Result<Appended, StoreError> {
        Self::check(&self.fail_append)?;
        self.inner.append(room, nick, text, client_id).await
    }

    async fn latest(&self, room: &str, limit: usize) -> Result<Vec<ChatMessage>, StoreError> {
        Self::check(&self.fail_reads)?;
        self.inner.latest(room, limit).await
    }

    async fn since(
        &self,
        room: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        Self::check(&self.fail_reads)?;
        self.inner.since(room, after_seq, limit).await
    }

    async fn before(
        &self,
        room: &str,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        Self::check(&self.fail_reads)?;
        self.inner.before(room, before_seq, limit).await
    }

    async fn last_seq(&self, room: &str) -> Result<u64, StoreError> {
        self.inner.last_seq(room).await
    }
}

#[tokio::test]
async fn store_failures_become_internal_errors() {
    let store = Arc::new(FlakyStore {
        inner: SqliteStore::open_in_memory().unwrap(),
        fail_append: AtomicBool::new(false),
        fail_reads: AtomicBool::new(false),
    });
    let service = ChatService::new(
        ChatConfig::default(),
        store.clone(),
        Arc::new(MemoryBroker::new()),
    );
    let mut ann = Client::connect(&service, 1);
    let mut bob = Client::connect(&service, 2);
    ann.join("lobby", "ann").await;

    store.fail_append.store(true, Ordering::SeqCst);
    ann.send_with_id("lobby", "hi", "a1").await;
    let ServerEvent::Error(error) = ann.last_event() else {
        panic!("failed send was not reported: {:#?}", ann.events());
    };
    assert_eq!(error.code, ErrorCode::Internal);
    assert_eq!(error.client_id.as_deref(), Some("a1"));
    store.fail_append.store(false, Ordering::SeqCst);
    ann.send_with_id("lobby", "hi", "a1").await;
    let ServerEvent::Ack(ack) = ann.last_event() else {
        panic!("retried send was not acked: {:#?}", ann.events());
    };
    assert_eq!(ack.seq, 1);
    assert!(!ack.duplicate);

    // A join whose history read fails reports the error and leaves the room again.
    store.fail_reads.store(true, Ordering::SeqCst);
    bob.join("lobby", "bob").await;
    let events = bob.events();
    assert_eq!(error_codes(&events), ["internal"]);
    assert!(
        matches!(events.last(), Some(ServerEvent::Left(_))),
        "{events:#?}"
    );
    assert!(!bob.session.is_joined("lobby"));

    ann.request(serde_json::json!({"type": "history", "room": "lobby"}))
        .await;
    assert_eq!(error_codes(&ann.events()), ["internal", "internal"]);

    store.fail_reads.store(false, Ordering::SeqCst);
    bob.join("lobby", "bob").await;
    assert!(bob.session.is_joined("lobby"));
    assert_eq!(received_seqs(&bob.events(), "lobby"), [1]);
}

/// Subscription source that ends at once, like a broker connection lost right away.
struct EndedSource;

#[async_trait]
impl pylon_chat::SubscriptionSource for EndedSource {
    async fn recv(&mut self) -> Option<pylon_chat::Delivery> {
        None
    }
}

/// Broker whose first subscription ends immediately, and whose later ones work.
struct DroppingBroker {
    inner: MemoryBroker,
    subscriptions: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl Broker for DroppingBroker {
    async fn publish(&self, room: &str, event: ChatEvent) -> Result<(), BrokerError> {
        self.inner.publish(room, event).await
    }

    async fn subscribe(&self, room: &str) -> Result<Subscription, BrokerError> {
        if self.subscriptions.fetch_add(1, Ordering::SeqCst) == 0 {
            return Ok(Subscription::new(EndedSource));
        }
        self.inner.subscribe(room).await
    }
}

#[tokio::test]
async fn ended_subscription_is_renewed() {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open_in_memory().unwrap());
    let broker = Arc::new(DroppingBroker {
        inner: MemoryBroker::new(),
        subscriptions: std::sync::atomic::AtomicUsize::new(0),
    });
    let service = ChatService::new(ChatConfig::default(), store, broker.clone());
    let mut ann = Client::connect(&service, 1);
    let mut bob = Client::connect(&service, 2);
    ann.join("lobby", "ann").await;
    bob.join("lobby", "bob").await;

    for i in 0..3 {
        bob.send("lobby", &format!("{i}")).await;
    }
    let events = ann.wait_for_seq("lobby", 3).await;
    assert_eq!(received_seqs(&events, "lobby"), [1, 2, 3]);
    assert_eq!(broker.subscriptions.load(Ordering::SeqCst), 2);
}

/// Store whose `latest` waits for a permit after reading, so that a test can store
/// messages while a join is between its history read and live delivery.
struct GatedStore {
    inner: SqliteStore,
    gate: tokio::sync::Semaphore,
}

#[async_trait]
impl Store for GatedStore {
    async fn append(
        &self,
        room: &str,
        nick: &str,
        text: &str,
        client_id: Option<&str>,
    ) -> Result<Appended, StoreError> {
        self.inner.append(room, nick, text, client_id).await
    }

    async fn latest(&self, room: &str, limit: usize) -> Result<Vec<ChatMessage>, StoreError> {
        let messages = self.inner.latest(room, limit).await;
        self.gate
            .acquire()
            .await
            .expect("gate semaphore stays open")
            .forget();
        messages
    }

    async fn since(
        &self,
        room: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        self.inner.since(room, after_seq, limit).await
    }

    async fn before(
        &self,
        room: &str,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        self.inner.before(room, before_seq, limit).await
    }

    async fn last_seq(&self, room: &str) -> Result<u64, StoreError> {
        self.inner.last_seq(room).await
    }
}

/// Stores more messages during a join than the join buffer keeps (10,000), and checks
/// that the joiner still receives all of them in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_buffer_overflow_is_refilled() {
    const FLOOD: u64 = 10_050;

    let store = Arc::new(GatedStore {
        inner: SqliteStore::open_in_memory().unwrap(),
        gate: tokio::sync::Semaphore::new(0),
    });
    let broker = Arc::new(MemoryBroker::new());
    let service = ChatService::new(ChatConfig::default(), store.clone(), broker.clone());
    let mut ann = Client::connect(&service, 1);
    let out = Arc::clone(&ann.out);
    let join = tokio::spawn(async move {
        ann.join("lobby", "ann").await;
        ann
    });
    out.wait_for("joined", |events| !events.is_empty()).await;

    for i in 0..FLOOD {
        let appended = store
            .append("lobby", "bob", &format!("{i}"), None)
            .await
            .unwrap();
        broker
            .publish("lobby", message_event(appended))
            .await
            .unwrap();
    }
    store.gate.add_permits(1);
    let ann = join.await.expect("join task finished");

    let appended = store.append("lobby", "bob", "live", None).await.unwrap();
    broker
        .publish("lobby", message_event(appended))
        .await
        .unwrap();
    let events = ann.wait_for_seq("lobby", FLOOD + 1).await;
    assert_contiguous(
        &received_seqs(&events, "lobby"),
        1,
        FLOOD + 1,
        "after overflow",
    );
}

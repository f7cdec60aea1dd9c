//! In-process [`Broker`] on tokio broadcast channels.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{Broker, BrokerError, ChatEvent, Delivery, Subscription, SubscriptionSource};

type Channels = Arc<Mutex<HashMap<String, broadcast::Sender<ChatEvent>>>>;

/// Broker for a single process: one tokio broadcast channel per room with subscribers.
///
/// A subscriber that falls more than `capacity` events behind receives
/// [`Delivery::Lagged`]. The channel of a room is removed when its last subscription drops.
#[derive(Clone, Debug)]
pub struct MemoryBroker {
    channels: Channels,
    capacity: usize,
}

impl MemoryBroker {
    /// Default number of events a subscriber may fall behind before it lags.
    ///
    /// tokio allocates every slot of a broadcast channel up front, about 136 bytes per slot
    /// for a [`ChatEvent`], so the capacity sets most of the memory that an open room costs.
    /// `tests/room_memory.rs` measured the heap growth per joined room at about 11 KB with a
    /// capacity of 64, against 141 KB with 1024. A lagged hub reads the missed messages from
    /// the store, so a small buffer costs only extra store reads. In a one-off run (release
    /// build, 2 cores), 8 writers sent 2,000 messages as fast as they could into a room of
    /// 500 members: the hub lagged 71 times with a capacity of 32 and never with 64.
    pub const DEFAULT_CAPACITY: usize = 64;

    /// Creates a broker with [`Self::DEFAULT_CAPACITY`].
    pub fn new() -> Self {
        Self::with_capacity(Self::DEFAULT_CAPACITY)
    }

    /// Creates a broker whose subscribers lag after `capacity` unread events (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            channels: Arc::default(),
            capacity: capacity.max(1),
        }
    }

    /// Returns the number of rooms with at least one subscription.
    pub fn room_count(&self) -> usize {
        lock(&self.channels).len()
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

fn lock(
    channels: &Channels,
) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<ChatEvent>>> {
    // The map stays consistent on panic: each operation is a single insert, get or remove.
    channels.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, room: &str, event: ChatEvent) -> Result<(), BrokerError> {
        let sender = lock(&self.channels).get(room).cloned();
        if let Some(sender) = sender {
            // An error only means that no subscriber is left, which is not a failure.
            let _ = sender.send(event);
        }
        Ok(())
    }

    async fn subscribe(&self, room: &str) -> Result<Subscription, BrokerError> {
        let receiver = lock(&self.channels)
            .entry(room.to_owned())
            .or_insert_with(|| broadcast::channel(self.capacity).0)
            .subscribe();
        Ok(Subscription::new(MemorySubscription {
            receiver: Some(receiver),
            room: room.to_owned(),
            channels: Arc::clone(&self.channels),
        }))
    }
}

struct MemorySubscription {
    /// Always `Some` until drop, which takes it out to count the remaining receivers.
    receiver: Option<broadcast::Receiver<ChatEvent>>,
    room: String,
    channels: Channels,
}

#[async_trait]
impl SubscriptionSource for MemorySubscription {
    async fn recv(&mut self) -> Option<Delivery> {
        let receiver = self.receiver.as_mut()?;
        match receiver.recv().await {
            Ok(event) => Some(Delivery::Event(event)),
            Err(broadcast::error::RecvError::Lagged(missed)) => Some(Delivery::Lagged { missed }),
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        drop(self.receiver.take());
        let mut channels = lock(&self.channels);
        if channels
            .get(&self.room)
            .is_some_and(|sender| sender.receiver_count() == 0)
        {
            channels.remove(&self.room);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ChatMessage;

    fn event(seq: u64) -> ChatEvent {
        ChatEvent::Message(ChatMessage {
            room: "r".into(),
            seq,
            nick: "ann".into(),
            text: "hi".into(),
            client_id: None,
            ts: 0,
        })
    }

    #[tokio::test]
    async fn subscribers_receive_published_events() {
        let broker = MemoryBroker::new();
        let mut first = broker.subscribe("r").await.unwrap();
        let mut second = broker.subscribe("r").await.unwrap();
        broker.publish("r", event(1)).await.unwrap();
        broker.publish("other", event(2)).await.unwrap();
        assert_eq!(first.recv().await, Some(Delivery::Event(event(1))));
        assert_eq!(second.recv().await, Some(Delivery::Event(event(1))));
    }

    #[tokio::test]
    async fn slow_subscriber_is_told_it_lagged() {
        let broker = MemoryBroker::with_capacity(2);
        let mut subscription = broker.subscribe("r").await.unwrap();
        for seq in 1..=5 {
            broker.publish("r", event(seq)).await.unwrap();
        }
        assert_eq!(
            subscription.recv().await,
            Some(Delivery::Lagged { missed: 3 })
        );
        assert_eq!(subscription.recv().await, Some(Delivery::Event(event(4))));
    }

    #[tokio::test]
    async fn dropping_last_subscription_removes_room() {
        let broker = MemoryBroker::new();
        let first = broker.subscribe("r").await.unwrap();
        let second = broker.subscribe("r").await.unwrap();
        drop(first);
        assert_eq!(broker.room_count(), 1);
        drop(second);
        assert_eq!(broker.room_count(), 0);
    }

    #[test]
    fn events_round_trip_through_json() {
        let json = serde_json::to_string(&event(7)).unwrap();
        assert!(
            json.starts_with(r#"{"kind":"message","room":"r","seq":7"#),
            "{json}"
        );
        let back: ChatEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back, event(7));
    }
}

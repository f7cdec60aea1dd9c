//! Publish/subscribe of chat events between the nodes that serve a room.

mod memory;

pub use memory::MemoryBroker;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::protocol::ChatMessage;
use crate::store::BackendError;

/// Event published to every node that serves a room.
///
/// It serializes to JSON (`{"kind":"message","room":...}`), so a broker between processes
/// can carry it as text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChatEvent {
    /// A message that is already stored.
    Message(ChatMessage),
}

/// Publish/subscribe channel for chat events, keyed by room.
///
/// The chat service keeps one subscription per room per node and fans events out to the
/// node's connections itself. Delivery may be lossy and may reorder events: the service
/// orders messages by seq and fills gaps from the [`Store`](crate::Store). A broker should
/// report a known loss as [`Delivery::Lagged`] so that the gap is filled at once.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Publishes an event to the current subscribers of `room`, on every node.
    async fn publish(&self, room: &str, event: ChatEvent) -> Result<(), BrokerError>;

    /// Subscribes to the events of `room`.
    ///
    /// Every event published after this call returns must reach the subscription, unless it
    /// is reported as lagged. Dropping the subscription unsubscribes.
    async fn subscribe(&self, room: &str) -> Result<Subscription, BrokerError>;
}

/// One item received from a [`Subscription`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    Event(ChatEvent),
    /// The subscriber fell behind and `missed` events were dropped for it.
    Lagged {
        missed: u64,
    },
}

/// Receiving side of a broker subscription, implemented by each broker.
#[async_trait]
pub trait SubscriptionSource: Send + 'static {
    /// Waits for the next item. Returns `None` when the subscription ended, for example
    /// because the broker connection was lost.
    ///
    /// Must be cancel safe: if the future is dropped before it completes, no event is lost.
    async fn recv(&mut self) -> Option<Delivery>;
}

/// Stream of events for one room. Dropping it unsubscribes.
pub struct Subscription {
    source: Box<dyn SubscriptionSource>,
}

impl Subscription {
    /// Wraps a broker's receiving side.
    pub fn new(source: impl SubscriptionSource) -> Self {
        Self {
            source: Box::new(source),
        }
    }

    /// Waits for the next item, or returns `None` when the subscription ended. Cancel safe.
    pub async fn recv(&mut self) -> Option<Delivery> {
        self.source.recv().await
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// Failure of a [`Broker`] operation.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker is shut down.
    #[error("chat broker is closed")]
    Closed,
    /// The broker backend failed, for example on a lost connection.
    #[error("chat broker failed: {0}")]
    Backend(BackendError),
}

//! Group chat service of Pylon: rooms, ordered and durable history, presence, and recovery
//! after a reconnect.
//!
//! The crate is transport-agnostic. The server creates a [`ChatService`] with a [`Store`]
//! and a [`Broker`], calls [`ChatService::connect`] for each client connection, feeds the
//! connection's text frames to [`Session::handle_text`], and delivers the JSON texts that
//! the session queues on its [`Outbound`]. `docs/chat-protocol.md` describes the wire
//! protocol.
//!
//! Each node keeps one broker subscription per room that has local connections, and fans
//! the room's messages out to them in seq order. Gaps in what the broker delivers are
//! filled from the store, so a connection receives every message of a room from its join
//! on, in increasing seq and without duplicates. A connection can miss messages only when
//! its [`Outbound`] drops them, and it recovers them by joining again with `since`.

mod broker;
mod config;
mod hub;
mod outbound;
mod protocol;
mod rate;
mod service;
mod store;

pub use broker::{
    Broker, BrokerError, ChatEvent, Delivery, MemoryBroker, Subscription, SubscriptionSource,
};
pub use config::{ChatConfig, MAX_CLIENT_ID_BYTES, RateLimit};
pub use outbound::{Outbound, OutboundError};
pub use protocol::{
    AckEvent, ChatMessage, ClientRequest, ErrorCode, ErrorEvent, HistoryEvent, HistoryRequest,
    JoinRequest, JoinedEvent, LeaveRequest, LeftEvent, PresenceEvent, PresenceKind, RequestError,
    SendRequest, ServerEvent, parse_request,
};
pub use service::{ChatService, Session};
pub use store::{Appended, BackendError, DATABASE_FILE, SqliteStore, Store, StoreError};

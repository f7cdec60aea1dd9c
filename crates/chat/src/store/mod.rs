//! Message storage with per-room sequence numbers.

mod sqlite;

pub use sqlite::{DATABASE_FILE, SqliteStore};

use async_trait::async_trait;

use crate::protocol::ChatMessage;

/// Boxed error of a storage or broker backend.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result of [`Store::append`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The stored message. For a duplicate, the message stored first with this `client_id`.
    pub message: ChatMessage,
    /// True when the room already had a message with this `client_id`, so nothing was stored.
    pub duplicate: bool,
}

/// Durable, ordered message storage.
///
/// Implementations must give every room its own sequence: the first message gets seq 1 and
/// each later one the previous seq plus 1, assigned in the same transaction that stores the
/// message. A message must be visible to every query once `append` has returned. The chat
/// service relies on this when it fills gaps in live delivery from the store.
///
/// All returned lists are in ascending seq order.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a message and returns it with its seq and server timestamp.
    ///
    /// When `client_id` is set and the room already has a message with that id, stores
    /// nothing and returns the earlier message with `duplicate: true`.
    async fn append(
        &self,
        room: &str,
        nick: &str,
        text: &str,
        client_id: Option<&str>,
    ) -> Result<Appended, StoreError>;

    /// Returns the `limit` most recent messages of a room.
    async fn latest(&self, room: &str, limit: usize) -> Result<Vec<ChatMessage>, StoreError>;

    /// Returns up to `limit` messages with seq greater than `after_seq`, starting with the
    /// oldest.
    async fn since(
        &self,
        room: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError>;

    /// Returns up to `limit` messages with seq less than `before_seq`, the newest of them.
    async fn before(
        &self,
        room: &str,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError>;

    /// Returns the seq of the latest message of a room, or 0 for a room without messages.
    async fn last_seq(&self, room: &str) -> Result<u64, StoreError>;
}

/// Failure of a [`Store`] operation.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be opened or prepared.
    #[error("failed to open chat database {path}: {error}")]
    Open {
        path: std::path::PathBuf,
        error: BackendError,
    },
    /// The database was written by a newer version of this software.
    #[error(
        "chat database schema version {found} is newer than supported version {supported}; \
         run a newer pylon or use another data directory"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    /// A query failed.
    #[error("chat database query failed: {0}")]
    Backend(BackendError),
    /// The database contains a value that the store cannot read back.
    #[error("chat database holds an invalid value: {0}")]
    InvalidData(String),
    /// The worker that runs the blocking database call failed.
    #[error("chat database worker failed: {0}")]
    Worker(String),
}

//! [`Store`] on SQLite.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::{Appended, Store, StoreError};
use crate::protocol::ChatMessage;

/// File name of the database inside the data directory.
pub const DATABASE_FILE: &str = "chat.sqlite3";

const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE rooms (
    name     TEXT PRIMARY KEY NOT NULL,
    last_seq INTEGER NOT NULL
);
CREATE TABLE messages (
    room      TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    nick      TEXT NOT NULL,
    text      TEXT NOT NULL,
    client_id TEXT,
    ts        INTEGER NOT NULL,
    PRIMARY KEY (room, seq)
);
CREATE UNIQUE INDEX messages_room_client_id ON messages (room, client_id)
    WHERE client_id IS NOT NULL;
";

const MESSAGE_COLUMNS: &str = "room, seq, nick, text, client_id, ts";

/// Message store in one SQLite database file, in WAL mode.
///
/// The connection sits behind a mutex and every query runs on tokio's blocking thread pool,
/// so queries do not block a runtime worker. Opening is synchronous. Queries are serialized,
/// which matches SQLite's single writer. Writes use `synchronous=NORMAL`: a stored message survives a
/// crash of the process, but a power loss can lose the last transactions.
#[derive(Clone)]
pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens or creates the chat database file at `path`, and creates its parent directory
    /// if it is missing.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|err| StoreError::Open {
                path: path.to_owned(),
                error: Box::new(err),
            })?;
        }
        let open_error = |err: rusqlite::Error| StoreError::Open {
            path: path.to_owned(),
            error: Box::new(err),
        };
        let connection = Connection::open(path).map_err(open_error)?;
        let journal_mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(open_error)?;
        if !journal_mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(
                path = %path.display(),
                journal_mode,
                "chat database is not in WAL mode; readers may wait for writers"
            );
        }
        Self::prepare(connection, path.to_owned())
    }

    /// Opens or creates the database [`DATABASE_FILE`] in the data directory `dir`.
    pub fn open_in_dir(dir: &Path) -> Result<Self, StoreError> {
        Self::open(&dir.join(DATABASE_FILE))
    }

    /// Opens a private in-memory database, for tests and throwaway servers.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let connection = Connection::open_in_memory().map_err(|err| StoreError::Open {
            path: PathBuf::from(":memory:"),
            error: Box::new(err),
        })?;
        Self::prepare(connection, PathBuf::from(":memory:"))
    }

    fn prepare(mut connection: Connection, path: PathBuf) -> Result<Self, StoreError> {
        let open_error = |err: rusqlite::Error| StoreError::Open {
            path: path.clone(),
            error: Box::new(err),
        };
        connection
            .execute_batch("PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000;")
            .map_err(open_error)?;

        let transaction = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(open_error)?;
        let version: i64 = transaction
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(open_error)?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        if version == 0 {
            transaction.execute_batch(SCHEMA).map_err(open_error)?;
            transaction
                .pragma_update(None, "user_version", SCHEMA_VERSION)
                .map_err(open_error)?;
        }
        transaction.commit().map_err(open_error)?;

        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// Runs `operation` with the connection on the blocking thread pool.
    async fn run<T, F>(&self, operation: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            // A panic in an earlier operation poisons the mutex. Its open transaction was
            // rolled back when the transaction guard dropped, so the connection is usable.
            let mut connection = connection
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            operation(&mut connection)
        })
        .await
        .map_err(|err| StoreError::Worker(err.to_string()))?
    }
}

fn query_error(err: rusqlite::Error) -> StoreError {
    StoreError::Backend(Box::new(err))
}

/// Converts a seq from the wire to SQLite's signed integer, saturating at `i64::MAX`.
fn seq_param(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn read_seq(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::InvalidData(format!("negative seq {value}")))
}

fn unix_millis_now() -> i64 {
    let elapsed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
}

/// Raw row before the seq is checked, because rusqlite's row closure can only return
/// `rusqlite::Error`.
struct MessageRow {
    room: String,
    seq: i64,
    nick: String,
    text: String,
    client_id: Option<String>,
    ts: i64,
}

impl MessageRow {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(Self {
            room: row.get(0)?,
            seq: row.get(1)?,
            nick: row.get(2)?,
            text: row.get(3)?,
            client_id: row.get(4)?,
            ts: row.get(5)?,
        })
    }

    fn into_message(self) -> Result<ChatMessage, StoreError> {
        Ok(ChatMessage {
            room: self.room,
            seq: read_seq(self.seq)?,
            nick: self.nick,
            text: self.text,
            client_id: self.client_id,
            ts: self.ts,
        })
    }
}

/// Runs a message query and returns the rows in ascending seq order.
fn query_messages(
    connection: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    descending: bool,
) -> Result<Vec<ChatMessage>, StoreError> {
    let mut statement = connection.prepare_cached(sql).map_err(query_error)?;
    let rows = statement
        .query_map(params, MessageRow::from_row)
        .map_err(query_error)?;
    let mut messages = Vec::new();
    for row in rows {
        messages.push(row.map_err(query_error)?.into_message()?);
    }
    if descending {
        messages.reverse();
    }
    Ok(messages)
}

fn append_blocking(
    connection: &mut Connection,
    room: &str,
    nick: &str,
    text: &str,
    client_id: Option<&str>,
) -> Result<Appended, StoreError> {
    // IMMEDIATE takes the write lock up front, so another process that shares the file
    // cannot assign the same seq between the read of last_seq and the insert.
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(query_error)?;

    if let Some(client_id) = client_id {
        let existing = transaction
            .query_row(
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = ?1 AND client_id = ?2"
                ),
                params![room, client_id],
                MessageRow::from_row,
            )
            .optional()
            .map_err(query_error)?;
        if let Some(row) = existing {
            return Ok(Appended {
                message: row.into_message()?,
                duplicate: true,
            });
        }
    }

    let seq: i64 = transaction
        .query_row(
            "INSERT INTO rooms (name, last_seq) VALUES (?1, 1)
             ON CONFLICT (name) DO UPDATE SET last_seq = last_seq + 1
             RETURNING last_seq",
            params![room],
            |row| row.get(0),
        )
        .map_err(query_error)?;
    let ts = unix_millis_now();
    transaction
        .execute(
            "INSERT INTO messages (room, seq, nick, text, client_id, ts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![room, seq, nick, text, client_id, ts],
        )
        .map_err(query_error)?;
    transaction.commit().map_err(query_error)?;

    Ok(Appended {
        message: ChatMessage {
            room: room.to_owned(),
            seq: read_seq(seq)?,
            nick: nick.to_owned(),
            text: text.to_owned(),
            client_id: client_id.map(str::to_owned),
            ts,
        },
        duplicate: false,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn append(
        &self,
        room: &str,
        nick: &str,
        text: &str,
        client_id: Option<&str>,
    ) -> Result<Appended, StoreError> {
        let (room, nick, text) = (room.to_owned(), nick.to_owned(), text.to_owned());
        let client_id = client_id.map(str::to_owned);
        self.run(move |connection| {
            append_blocking(connection, &room, &nick, &text, client_id.as_deref())
        })
        .await
    }

    async fn latest(&self, room: &str, limit: usize) -> Result<Vec<ChatMessage>, StoreError> {
        let room = room.to_owned();
        self.run(move |connection| {
            query_messages(
                connection,
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = ?1
                     ORDER BY seq DESC LIMIT ?2"
                ),
                params![room, limit_param(limit)],
                true,
            )
        })
        .await
    }

    async fn since(
        &self,
        room: &str,
        after_seq: u64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        let room = room.to_owned();
        self.run(move |connection| {
            query_messages(
                connection,
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = ?1 AND seq > ?2
                     ORDER BY seq ASC LIMIT ?3"
                ),
                params![room, seq_param(after_seq), limit_param(limit)],
                false,
            )
        })
        .await
    }

    async fn before(
        &self,
        room: &str,
        before_seq: u64,
        limit: usize,
    ) -> Result<Vec<ChatMessage>, StoreError> {
        let room = room.to_owned();
        self.run(move |connection| {
            query_messages(
                connection,
                &format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE room = ?1 AND seq < ?2
                     ORDER BY seq DESC LIMIT ?3"
                ),
                params![room, seq_param(before_seq), limit_param(limit)],
                true,
            )
        })
        .await
    }

    async fn last_seq(&self, room: &str) -> Result<u64, StoreError> {
        let room = room.to_owned();
        self.run(move |connection| {
            let seq: Option<i64> = connection
                .query_row(
                    "SELECT last_seq FROM rooms WHERE name = ?1",
                    params![room],
                    |row| row.get(0),
                )
                .optional()
                .map_err(query_error)?;
            read_seq(seq.unwrap_or(0))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(messages: &[ChatMessage]) -> Vec<u64> {
        messages.iter().map(|message| message.seq).collect()
    }

    #[tokio::test]
    async fn rooms_have_separate_sequences() {
        let store = SqliteStore::open_in_memory().unwrap();
        for _ in 0..3 {
            store.append("a", "ann", "x", None).await.unwrap();
        }
        let first_b = store.append("b", "bob", "y", None).await.unwrap();
        assert_eq!(first_b.message.seq, 1);
        assert_eq!(store.last_seq("a").await.unwrap(), 3);
        assert_eq!(store.last_seq("b").await.unwrap(), 1);
        assert_eq!(store.last_seq("none").await.unwrap(), 0);
    }

    #[tokio::test]
    async fn queries_return_ascending_pages() {
        let store = SqliteStore::open_in_memory().unwrap();
        for i in 1..=10 {
            store
                .append("r", "ann", &format!("m{i}"), None)
                .await
                .unwrap();
        }
        assert_eq!(seqs(&store.latest("r", 3).await.unwrap()), [8, 9, 10]);
        assert_eq!(seqs(&store.since("r", 4, 3).await.unwrap()), [5, 6, 7]);
        assert_eq!(seqs(&store.since("r", 9, 3).await.unwrap()), [10]);
        assert_eq!(seqs(&store.before("r", 5, 3).await.unwrap()), [2, 3, 4]);
        assert_eq!(seqs(&store.before("r", 3, 10).await.unwrap()), [1, 2]);
        assert!(store.since("r", u64::MAX, 3).await.unwrap().is_empty());
        assert_eq!(
            seqs(&store.before("r", u64::MAX, 2).await.unwrap()),
            [9, 10]
        );
    }

    #[tokio::test]
    async fn client_id_makes_append_idempotent() {
        let store = SqliteStore::open_in_memory().unwrap();
        let first = store.append("r", "ann", "hi", Some("c1")).await.unwrap();
        let again = store.append("r", "ann", "hi", Some("c1")).await.unwrap();
        let other_room = store.append("s", "ann", "hi", Some("c1")).await.unwrap();
        assert!(!first.duplicate);
        assert!(again.duplicate);
        assert_eq!(again.message, first.message);
        assert!(!other_room.duplicate);
        assert_eq!(store.last_seq("r").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn concurrent_appends_get_distinct_seqs() {
        let store = SqliteStore::open_in_memory().unwrap();
        let mut tasks = Vec::new();
        for i in 0..40 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .append("r", "ann", &format!("m{i}"), None)
                    .await
                    .unwrap()
                    .message
                    .seq
            }));
        }
        let mut assigned = Vec::new();
        for task in tasks {
            assigned.push(task.await.unwrap());
        }
        assigned.sort_unstable();
        assert_eq!(assigned, (1..=40).collect::<Vec<u64>>());
    }
}

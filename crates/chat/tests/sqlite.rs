//! SQLite store on disk: persistence across reopen, WAL mode and schema versions.

mod common;

use std::sync::Arc;

use common::{Client, received_seqs};
use pylon_chat::{
    ChatConfig, ChatService, DATABASE_FILE, MemoryBroker, SqliteStore, Store, StoreError,
};

#[tokio::test]
async fn messages_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("nested").join("data");
    {
        let store = SqliteStore::open_in_dir(&data_dir).unwrap();
        store
            .append("lobby", "ann", "one", Some("a1"))
            .await
            .unwrap();
        store.append("lobby", "bob", "two", None).await.unwrap();
        store.append("kitchen", "ann", "three", None).await.unwrap();
    }
    assert!(data_dir.join(DATABASE_FILE).is_file());

    let store = SqliteStore::open_in_dir(&data_dir).unwrap();
    assert_eq!(store.last_seq("lobby").await.unwrap(), 2);
    assert_eq!(store.last_seq("kitchen").await.unwrap(), 1);
    let lobby = store.latest("lobby", 10).await.unwrap();
    let texts: Vec<&str> = lobby.iter().map(|message| message.text.as_str()).collect();
    assert_eq!(texts, ["one", "two"]);
    assert_eq!(lobby[0].client_id.as_deref(), Some("a1"));
    assert!(lobby[0].ts > 0);

    let resent = store
        .append("lobby", "ann", "one", Some("a1"))
        .await
        .unwrap();
    assert!(resent.duplicate, "client ids survive reopen");
    assert_eq!(resent.message.seq, 1);
    let next = store.append("lobby", "ann", "four", None).await.unwrap();
    assert_eq!(next.message.seq, 3);
}

#[tokio::test]
async fn database_uses_wal_journal() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in_dir(dir.path()).unwrap();
    store.append("lobby", "ann", "one", None).await.unwrap();

    let connection = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
    let mode: String = connection
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn newer_schema_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    {
        let connection = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).unwrap();
        connection.pragma_update(None, "user_version", 99).unwrap();
    }
    let err = SqliteStore::open_in_dir(dir.path()).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::SchemaTooNew {
                found: 99,
                supported: 1
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn open_reports_unusable_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let err = SqliteStore::open_in_dir(&file).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
    assert!(err.to_string().contains("not-a-directory"), "{err}");
}

#[tokio::test]
async fn chat_history_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Arc::new(SqliteStore::open_in_dir(dir.path()).unwrap());
        let service = ChatService::new(ChatConfig::default(), store, Arc::new(MemoryBroker::new()));
        let mut ann = Client::connect(&service, 1);
        ann.join("lobby", "ann").await;
        ann.send("lobby", "before restart").await;
        ann.wait_for_seq("lobby", 1).await;
        ann.session.close().await;
    }

    let store = Arc::new(SqliteStore::open_in_dir(dir.path()).unwrap());
    let service = ChatService::new(ChatConfig::default(), store, Arc::new(MemoryBroker::new()));
    let mut bob = Client::connect(&service, 1);
    bob.join_since("lobby", "bob", 0).await;
    assert_eq!(received_seqs(&bob.events(), "lobby"), [1]);
    bob.send("lobby", "after restart").await;
    let events = bob.wait_for_seq("lobby", 2).await;
    assert_eq!(received_seqs(&events, "lobby"), [1, 2]);
}

#[tokio::test]
async fn open_takes_database_file_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("custom.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        store.append("lobby", "ann", "one", None).await.unwrap();
    }
    assert!(path.is_file());

    let store = SqliteStore::open(&path).unwrap();
    assert_eq!(store.last_seq("lobby").await.unwrap(), 1);
}

//! Wire types of the chat protocol: client requests and server events.
//!
//! Every frame is one JSON object with a `type` field. `docs/chat-protocol.md` is the
//! normative description.

mod parse;

pub use parse::{RequestError, parse_request};

use serde::{Deserialize, Serialize};

/// A stored chat message, as sent in `message` events and in `history` pages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub room: String,
    /// Per-room sequence number. The first message of a room has seq 1, and each stored
    /// message gets the previous seq plus 1.
    pub seq: u64,
    pub nick: String,
    pub text: String,
    /// Client-chosen id that makes a resend idempotent, unique per room.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Server time when the message was stored, in Unix milliseconds.
    pub ts: i64,
}

/// A request from a client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientRequest {
    Join(JoinRequest),
    Send(SendRequest),
    History(HistoryRequest),
    Leave(LeaveRequest),
    Ping,
}

impl ClientRequest {
    /// Returns the value of the `type` field of this request.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientRequest::Join(_) => "join",
            ClientRequest::Send(_) => "send",
            ClientRequest::History(_) => "history",
            ClientRequest::Leave(_) => "leave",
            ClientRequest::Ping => "ping",
        }
    }

    /// Serializes the request to its JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("client requests contain only strings and integers")
    }
}

/// `join`: enter a room, with an optional recovery point.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub room: String,
    pub nick: String,
    /// Last seq the client has seen in this room. The server then sends every message with
    /// a greater seq.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<u64>,
}

/// `send`: post a message to a joined room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendRequest {
    pub room: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

/// `history`: page backwards through a joined room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRequest {
    pub room: String,
    /// Only messages with a smaller seq. Without it, the latest messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
    /// Maximum number of messages, capped to the server's page size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// `leave`: stop receiving a room's messages and presence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaveRequest {
    pub room: String,
}

/// An event from the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent {
    Joined(JoinedEvent),
    History(HistoryEvent),
    Message(ChatMessage),
    Ack(AckEvent),
    Presence(PresenceEvent),
    Left(LeftEvent),
    Pong,
    Error(ErrorEvent),
}

impl ServerEvent {
    /// Serializes the event to its JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server events contain only strings and integers")
    }
}

/// `joined`: the first event for a room after a `join`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinedEvent {
    pub room: String,
    pub nick: String,
    /// Distinct nicks with at least one connection in the room, sorted, including the joiner.
    pub members: Vec<String>,
    /// Seq of the latest message stored in the room when the join was handled, 0 if none.
    pub last_seq: u64,
}

/// `history`: a page of stored messages in ascending seq.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEvent {
    pub room: String,
    pub messages: Vec<ChatMessage>,
    /// For a recovery `join` with `since`: another `history` page follows. Otherwise: older
    /// messages exist, and a `history` request with `before` set to the first seq gets them.
    pub has_more: bool,
}

/// `ack`: a `send` was stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckEvent {
    pub room: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub seq: u64,
    /// True when a message with this `client_id` was already stored. `seq` is then the seq
    /// of that earlier message, and nothing new was broadcast.
    pub duplicate: bool,
}

/// Whether a nick arrived in or left a room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceKind {
    Join,
    Leave,
}

/// `presence`: a nick's first connection joined the room, or its last one left.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEvent {
    pub room: String,
    pub event: PresenceKind,
    pub nick: String,
    /// Member list after the change, sorted.
    pub members: Vec<String>,
}

/// `left`: reply to a `leave`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeftEvent {
    pub room: String,
}

/// Machine-readable reason of an `error` event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON, or not a JSON object.
    InvalidJson,
    /// The `type` field names no known request.
    UnknownType,
    /// A required field is absent.
    MissingField,
    /// A field has the wrong JSON type or an invalid value.
    InvalidField,
    /// The frame or the message text is over its size limit.
    TooLarge,
    /// The room name is empty, too long or contains invalid characters.
    InvalidRoom,
    /// The nick is empty, too long or contains invalid characters.
    InvalidNick,
    /// The request names a room that this connection has not joined.
    NotJoined,
    /// The join names another nick than the connection's first join.
    NickMismatch,
    /// The client sent a binary frame.
    BinaryNotSupported,
    /// The connection sent requests faster than its rate limit. The request was not
    /// executed and can be retried later.
    RateLimited,
    /// The join would take the connection over its maximum number of joined rooms.
    TooManyRooms,
    /// The node serves its maximum number of rooms and cannot open another. Joins of rooms
    /// that are already open still succeed.
    ServerBusy,
    /// The server failed, for example on a storage error. The request may be retried.
    Internal,
}

impl ErrorCode {
    /// Returns the wire name of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::MissingField => "missing_field",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::InvalidRoom => "invalid_room",
            ErrorCode::InvalidNick => "invalid_nick",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::NickMismatch => "nick_mismatch",
            ErrorCode::BinaryNotSupported => "binary_not_supported",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManyRooms => "too_many_rooms",
            ErrorCode::ServerBusy => "server_busy",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `error`: a request failed. The connection stays usable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorEvent {
    pub code: ErrorCode,
    /// Human-readable description that names the field or value and the fix.
    pub message: String,
    /// `type` of the failed request, when it could be read.
    #[serde(rename = "ref", default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// Room of the failed request, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// `client_id` of the failed `send`, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

impl ErrorEvent {
    /// Creates an error event with only a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            request: None,
            room: None,
            client_id: None,
        }
    }
}

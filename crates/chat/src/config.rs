//! Limits and defaults of the chat service.

/// Maximum length of a `client_id`, in bytes.
pub const MAX_CLIENT_ID_BYTES: usize = 128;

/// Limits and defaults of the chat service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatConfig {
    /// Number of most recent messages sent in `history` after a `join` without `since`.
    pub history_on_join: usize,
    /// Maximum size of a message `text`, in UTF-8 bytes.
    pub max_text_bytes: usize,
    /// Maximum length of a room name, in characters (Unicode scalar values).
    pub max_room_len: usize,
    /// Maximum length of a nick, in characters (Unicode scalar values).
    pub max_nick_len: usize,
    /// Maximum number of messages in one `history` event. A larger `limit` is capped to it.
    pub max_page: usize,
    /// Maximum number of rooms one connection can be joined to at once. A join of another
    /// room fails with `too_many_rooms`.
    pub max_rooms_per_connection: usize,
    /// Maximum number of rooms with at least one connection on this node. A join that would
    /// open another room fails with `server_busy`. Each open room costs a broker
    /// subscription and a task: about 11 KB of heap by a counting allocator, and about
    /// 22 KB of resident memory when a fresh debug-build node first opens it.
    pub max_rooms_per_node: usize,
    /// Rate limit on the frames of one connection, or `None` for no limit. A frame over the
    /// limit gets a `rate_limited` error and is not executed.
    pub request_rate: Option<RateLimit>,
}

/// Token bucket limit: `burst` requests at once, refilled at `requests_per_second`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained rate, in requests per second. Values below 1 count as 1.
    pub requests_per_second: u32,
    /// Number of requests that can be sent at once after a quiet period. Values below 1
    /// count as 1.
    pub burst: u32,
}

impl Default for ChatConfig {
    fn default() -> Self {
        Self {
            history_on_join: 50,
            max_text_bytes: 4096,
            max_room_len: 64,
            max_nick_len: 32,
            max_page: 200,
            max_rooms_per_connection: 32,
            max_rooms_per_node: 10_000,
            request_rate: Some(RateLimit {
                requests_per_second: 20,
                burst: 50,
            }),
        }
    }
}

impl ChatConfig {
    /// Returns the maximum size in bytes of one client request frame.
    ///
    /// A JSON string escape takes at most 6 bytes (`\u001f`) per byte of text, so a request
    /// whose fields are within their limits always fits. The transport can use this value as
    /// its maximum message size. Larger requests get a `too_large` error without being parsed.
    pub fn max_request_bytes(&self) -> usize {
        let fields = self.max_text_bytes
            + self.max_room_len * 4
            + self.max_nick_len * 4
            + MAX_CLIENT_ID_BYTES;
        fields * 6 + 1024
    }

    /// Returns the page size used for `history` events, at least 1.
    pub(crate) fn page_size(&self) -> usize {
        self.max_page.max(1)
    }
}

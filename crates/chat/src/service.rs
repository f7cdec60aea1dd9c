//! The chat service and the per-connection session.

use std::collections::HashMap;
use std::sync::Arc;

use crate::broker::{Broker, ChatEvent};
use crate::config::ChatConfig;
use crate::hub::{GoLive, HubRegistry, RoomHub, StartError};
use crate::outbound::Outbound;
use crate::protocol::{
    AckEvent, ChatMessage, ClientRequest, ErrorCode, ErrorEvent, HistoryEvent, HistoryRequest,
    JoinRequest, LeftEvent, SendRequest, ServerEvent, parse_request,
};
use crate::rate::TokenBucket;
use crate::store::{Appended, Store, StoreError};

/// Group chat service of one node. Cloning is cheap and shares the rooms.
#[derive(Clone)]
pub struct ChatService {
    inner: Arc<ServiceInner>,
}

struct ServiceInner {
    config: ChatConfig,
    store: Arc<dyn Store>,
    broker: Arc<dyn Broker>,
    hubs: Arc<HubRegistry>,
}

impl ChatService {
    /// Creates a service that stores messages in `store` and shares them with other nodes
    /// through `broker`.
    pub fn new(config: ChatConfig, store: Arc<dyn Store>, broker: Arc<dyn Broker>) -> Self {
        let hubs = Arc::new(HubRegistry::new(
            Arc::clone(&store),
            Arc::clone(&broker),
            config.max_rooms_per_node,
        ));
        Self {
            inner: Arc::new(ServiceInner {
                config,
                store,
                broker,
                hubs,
            }),
        }
    }

    /// Creates the session of a new client connection. `conn_id` identifies the connection
    /// in logs and must be unique among the node's open connections.
    pub fn connect(&self, conn_id: u64, out: Arc<dyn Outbound>) -> Session {
        tracing::debug!(conn_id, "chat connection opened");
        Session {
            conn_id,
            out,
            inner: Arc::clone(&self.inner),
            nick: None,
            rooms: HashMap::new(),
            rate: self.inner.config.request_rate.map(TokenBucket::new),
            rate_limited: false,
        }
    }

    pub fn config(&self) -> &ChatConfig {
        &self.inner.config
    }

    /// Returns the number of rooms with at least one connection on this node.
    pub fn room_count(&self) -> usize {
        self.inner.hubs.room_count()
    }
}

impl std::fmt::Debug for ChatService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatService")
            .field("config", &self.inner.config)
            .field("rooms", &self.room_count())
            .finish_non_exhaustive()
    }
}

/// Chat state of one client connection: its nick and joined rooms.
///
/// The transport calls [`Session::handle_text`] for each text frame, one at a time, and
/// runs each call to completion. Dropping the session, or [`Session::close`], leaves every
/// joined room.
pub struct Session {
    conn_id: u64,
    out: Arc<dyn Outbound>,
    inner: Arc<ServiceInner>,
    /// Set by the first successful join and fixed for the connection's lifetime.
    nick: Option<String>,
    rooms: HashMap<String, Arc<RoomHub>>,
    /// Request rate limit, `None` when the config sets none.
    rate: Option<TokenBucket>,
    /// Whether the last frame was rejected by the rate limit, so that only the first
    /// rejection of a run is logged above debug level.
    rate_limited: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("conn_id", &self.conn_id)
            .field("nick", &self.nick)
            .field("rooms", &self.rooms.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Session {
    pub fn conn_id(&self) -> u64 {
        self.conn_id
    }

    /// Returns the connection's nick, set by its first successful join.
    pub fn nick(&self) -> Option<&str> {
        self.nick.as_deref()
    }

    /// Returns whether the connection is a member of `room`.
    pub fn is_joined(&self, room: &str) -> bool {
        self.rooms.contains_key(room)
    }

    /// Parses and handles one client text frame. Every failure, including an invalid
    /// request, is sent to the client as an `error` event, and the session keeps going.
    ///
    /// Not cancel safe: dropping the future during a join can leave the connection in the
    /// room without live messages until the session is dropped.
    ///
    /// Each frame takes one token of the connection's rate limit, valid or not. A frame
    /// without a token gets a `rate_limited` error and is not executed.
    pub async fn handle_text(&mut self, text: &str) {
        let parsed = parse_request(text, &self.inner.config);
        let kind = match &parsed {
            Ok(request) => Some(request.kind()),
            Err(err) => err.request,
        };
        if let Err(mut error) = self.take_token(kind) {
            // The ids let the client tell which request to retry.
            match &parsed {
                Ok(request) => {
                    error.room = request_room(request).map(str::to_owned);
                    if let ClientRequest::Send(send) = request {
                        error.client_id.clone_from(&send.client_id);
                    }
                }
                Err(err) => {
                    error.room.clone_from(&err.room);
                    error.client_id.clone_from(&err.client_id);
                }
            }
            self.send_error(error);
            return;
        }
        match parsed {
            Ok(request) => self.handle_request(request).await,
            Err(err) => {
                tracing::debug!(
                    conn_id = self.conn_id,
                    code = %err.code,
                    message = %err.message,
                    "rejected chat request"
                );
                self.send_event(ServerEvent::Error(err.to_event()));
            }
        }
    }

    /// Handles one binary frame, which the protocol does not use, with a
    /// `binary_not_supported` error.
    pub async fn handle_binary(&mut self, data: &[u8]) {
        if let Err(error) = self.take_token(None) {
            self.send_error(error);
            return;
        }
        tracing::debug!(
            conn_id = self.conn_id,
            bytes = data.len(),
            "rejected binary frame"
        );
        self.send_error(ErrorEvent::new(
            ErrorCode::BinaryNotSupported,
            format!(
                "binary frames are not supported (got {} bytes); send JSON requests as text frames",
                data.len()
            ),
        ));
    }

    /// Leaves every joined room, with presence `leave` events to the remaining members.
    /// The transport calls it when the connection ends, with or without a close frame.
    pub async fn close(mut self) {
        self.leave_all();
    }

    /// Takes a token from the rate limit for a request of type `kind`, when it is known.
    /// Returns the `rate_limited` error to send when no token is left.
    fn take_token(&mut self, kind: Option<&'static str>) -> Result<(), ErrorEvent> {
        let Some(bucket) = &mut self.rate else {
            return Ok(());
        };
        let token = bucket.try_take();
        let was_limited = std::mem::replace(&mut self.rate_limited, token.is_err());
        let Err(retry_in) = token else {
            return Ok(());
        };

        // Round up, so that a client that waits the stated time gets a token.
        let retry_in_ms = retry_in.as_micros().div_ceil(1000);
        if was_limited {
            tracing::debug!(
                conn_id = self.conn_id,
                request = kind,
                retry_in_ms,
                "rejected request over the rate limit"
            );
        } else {
            tracing::info!(
                conn_id = self.conn_id,
                request = kind,
                retry_in_ms,
                "connection exceeded its request rate limit"
            );
        }
        let limit = bucket.limit();
        let request = match kind {
            Some(kind) => format!("the `{kind}`"),
            None => "the request".to_owned(),
        };
        let message = format!(
            "too many requests: the limit is {} requests per second with bursts of {}; \
             {request} was not executed, retry it in {retry_in_ms} ms",
            limit.requests_per_second, limit.burst,
        );
        let mut error = ErrorEvent::new(ErrorCode::RateLimited, message);
        error.request = kind.map(str::to_owned);
        Err(error)
    }

    /// Handles a request that already passed validation. The rate limit does not apply.
    pub async fn handle_request(&mut self, request: ClientRequest) {
        match request {
            ClientRequest::Join(request) => self.join(request).await,
            ClientRequest::Send(request) => self.send_message(request).await,
            ClientRequest::History(request) => self.history(request).await,
            ClientRequest::Leave(request) => self.leave(&request.room),
            ClientRequest::Ping => self.send_event(ServerEvent::Pong),
        }
    }

    async fn join(&mut self, request: JoinRequest) {
        let JoinRequest { room, nick, since } = request;
        if let Some(current) = &self.nick
            && *current != nick
        {
            let message = format!(
                "this connection joined as `{current}` and cannot join as `{nick}`; \
                 join with nick `{current}` or open another connection"
            );
            self.send_room_error(ErrorCode::NickMismatch, "join", &room, message);
            return;
        }

        let store_last_seq = match self.inner.store.last_seq(&room).await {
            Ok(seq) => seq,
            Err(err) => {
                self.report_store_error("join", &room, &err);
                return;
            }
        };

        let max_rooms = self.inner.config.max_rooms_per_connection;
        if !self.rooms.contains_key(&room) && self.rooms.len() >= max_rooms {
            let message = format!(
                "this connection is joined to {} rooms, the limit of {max_rooms} rooms; \
                 leave a room before joining `{room}`",
                self.rooms.len()
            );
            self.send_room_error(ErrorCode::TooManyRooms, "join", &room, message);
            return;
        }

        let (hub, registered_at) = match self.rooms.get(&room) {
            Some(hub) => {
                let hub = Arc::clone(hub);
                let registered_at =
                    hub.register(self.conn_id, &nick, &self.out, store_last_seq, false);
                (hub, registered_at)
            }
            None => {
                let reservation = match self.inner.hubs.reserve(&room).await {
                    Ok(reservation) => reservation,
                    Err(StartError::NodeFull { max }) => {
                        tracing::warn!(
                            conn_id = self.conn_id,
                            room,
                            max_rooms = max,
                            "rejected join: node serves its maximum number of rooms"
                        );
                        let message = format!(
                            "the server serves its maximum of {max} rooms and cannot open \
                             room `{room}`; retry later"
                        );
                        self.send_room_error(ErrorCode::ServerBusy, "join", &room, message);
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(
                            conn_id = self.conn_id,
                            room,
                            error = %err,
                            "failed to open room"
                        );
                        let message = format!("failed to open room `{room}`; retry the join");
                        self.send_room_error(ErrorCode::Internal, "join", &room, message);
                        return;
                    }
                };
                let (hub, registered_at) =
                    reservation.register(self.conn_id, &nick, &self.out, store_last_seq);
                self.rooms.insert(room.clone(), Arc::clone(&hub));
                (hub, registered_at)
            }
        };
        self.nick = Some(nick);
        tracing::debug!(
            conn_id = self.conn_id,
            room,
            since,
            registered_at,
            "joined room"
        );

        let cutoff = match since {
            Some(since) => self.send_missed(&room, since, registered_at).await,
            None => self.send_latest(&room).await,
        };
        let live = match cutoff {
            Ok(cutoff) => self.go_live(&hub, &room, cutoff).await,
            Err(err) => Err(err),
        };
        if let Err(err) = live {
            self.report_store_error("join", &room, &err);
            if let Some(hub) = self.rooms.remove(&room) {
                self.inner.hubs.leave(&hub, self.conn_id);
            }
            self.send_event(ServerEvent::Left(LeftEvent { room }));
        }
    }

    /// Sends every message with seq greater than `since` as `history` pages. Returns the
    /// last seq covered, from which live delivery continues.
    ///
    /// Reading stops at a short page or once it reaches `registered_at`, because the
    /// member's buffer contains every message after `registered_at`.
    async fn send_missed(
        &mut self,
        room: &str,
        since: u64,
        registered_at: u64,
    ) -> Result<u64, StoreError> {
        let page = self.inner.config.page_size();
        let mut after = since;
        let mut read_any = false;
        loop {
            let messages = self.inner.store.since(room, after, page).await?;
            let full = messages.len() == page;
            if let Some(last) = messages.last() {
                after = last.seq;
                read_any = true;
            }
            let has_more = full && after < registered_at;
            self.send_history(room, messages, has_more);
            if !has_more {
                break;
            }
        }
        if read_any {
            return Ok(after);
        }
        // Nothing is newer than `since`. A `since` beyond the room's last seq is treated as
        // the last seq, so that later messages are not skipped.
        let last_seq = self.inner.store.last_seq(room).await?;
        Ok(since.min(last_seq))
    }

    /// Sends the `history_on_join` latest messages as one `history` event. Returns the seq
    /// of the newest stored message, from which live delivery continues.
    async fn send_latest(&mut self, room: &str) -> Result<u64, StoreError> {
        let count = self
            .inner
            .config
            .history_on_join
            .min(self.inner.config.page_size());
        // One extra message shows whether older ones exist, and gives the newest seq even
        // when `count` is 0.
        let mut messages = self.inner.store.latest(room, count + 1).await?;
        let newest = messages.last().map_or(0, |message| message.seq);
        let has_more = messages.len() > count;
        if has_more {
            messages.drain(..messages.len() - count);
        }
        self.send_history(room, messages, has_more);
        Ok(newest)
    }

    /// Switches the connection to live delivery, first sending from the store whatever an
    /// overflowed join buffer dropped.
    async fn go_live(
        &mut self,
        hub: &Arc<RoomHub>,
        room: &str,
        mut cutoff: u64,
    ) -> Result<(), StoreError> {
        let page = self.inner.config.page_size();
        loop {
            let until = match hub.go_live(self.conn_id, cutoff) {
                GoLive::Done => return Ok(()),
                GoLive::Refill { until } => until,
            };
            tracing::warn!(
                conn_id = self.conn_id,
                room,
                after_seq = cutoff,
                until_seq = until,
                "join buffer overflowed; sending missed messages from the store"
            );
            loop {
                let messages = self.inner.store.since(room, cutoff, page).await?;
                let full = messages.len() == page;
                for message in messages {
                    cutoff = message.seq;
                    self.send_event(ServerEvent::Message(message));
                }
                if !full || cutoff >= until {
                    break;
                }
            }
        }
    }

    async fn send_message(&mut self, request: SendRequest) {
        let SendRequest {
            room,
            text,
            client_id,
        } = request;
        let Some(nick) = self.nick.clone().filter(|_| self.rooms.contains_key(&room)) else {
            let mut error = ErrorEvent::new(ErrorCode::NotJoined, not_joined_message(&room));
            error.request = Some("send".to_owned());
            error.room = Some(room);
            error.client_id = client_id;
            self.send_error(error);
            return;
        };

        let appended = self
            .inner
            .store
            .append(&room, &nick, &text, client_id.as_deref())
            .await;
        let Appended { message, duplicate } = match appended {
            Ok(appended) => appended,
            Err(err) => {
                tracing::warn!(
                    conn_id = self.conn_id,
                    room,
                    error = %err,
                    "failed to store message"
                );
                let mut error = ErrorEvent::new(
                    ErrorCode::Internal,
                    "failed to store the message; resend it with the same client_id",
                );
                error.request = Some("send".to_owned());
                error.room = Some(room);
                error.client_id = client_id;
                self.send_error(error);
                return;
            }
        };
        tracing::debug!(
            conn_id = self.conn_id,
            room,
            seq = message.seq,
            duplicate,
            "stored message"
        );

        self.send_event(ServerEvent::Ack(AckEvent {
            room: room.clone(),
            client_id,
            seq: message.seq,
            duplicate,
        }));
        if duplicate {
            return;
        }
        let seq = message.seq;
        if let Err(err) = self
            .inner
            .broker
            .publish(&room, ChatEvent::Message(message))
            .await
        {
            // The message is stored, so the local hub reads it from the store.
            // NOTE: other nodes get it only after a later message of the room reveals the gap.
            tracing::warn!(
                conn_id = self.conn_id,
                room,
                seq,
                error = %err,
                "failed to publish message"
            );
            if let Some(hub) = self.rooms.get(&room) {
                hub.request_fill();
            }
        }
    }

    async fn history(&mut self, request: HistoryRequest) {
        let HistoryRequest {
            room,
            before,
            limit,
        } = request;
        if !self.rooms.contains_key(&room) {
            self.send_room_error(
                ErrorCode::NotJoined,
                "history",
                &room,
                not_joined_message(&room),
            );
            return;
        }

        let page = self.inner.config.page_size();
        let limit = limit
            .unwrap_or(self.inner.config.history_on_join)
            .clamp(1, page);
        // One extra message shows whether older ones exist.
        let fetch = limit.saturating_add(1);
        let fetched = match before {
            Some(before) => self.inner.store.before(&room, before, fetch).await,
            None => self.inner.store.latest(&room, fetch).await,
        };
        let mut messages = match fetched {
            Ok(messages) => messages,
            Err(err) => {
                self.report_store_error("history", &room, &err);
                return;
            }
        };
        let has_more = messages.len() > limit;
        if has_more {
            messages.drain(..messages.len() - limit);
        }
        self.send_history(&room, messages, has_more);
    }

    fn leave(&mut self, room: &str) {
        let Some(hub) = self.rooms.remove(room) else {
            self.send_room_error(
                ErrorCode::NotJoined,
                "leave",
                room,
                not_joined_message(room),
            );
            return;
        };
        self.inner.hubs.leave(&hub, self.conn_id);
        tracing::debug!(conn_id = self.conn_id, room, "left room");
        self.send_event(ServerEvent::Left(LeftEvent {
            room: room.to_owned(),
        }));
    }

    fn leave_all(&mut self) {
        for (room, hub) in self.rooms.drain() {
            self.inner.hubs.leave(&hub, self.conn_id);
            tracing::debug!(conn_id = self.conn_id, room, "left room on close");
        }
    }

    fn send_history(&self, room: &str, messages: Vec<ChatMessage>, has_more: bool) {
        self.send_event(ServerEvent::History(HistoryEvent {
            room: room.to_owned(),
            messages,
            has_more,
        }));
    }

    fn report_store_error(&self, request: &str, room: &str, err: &StoreError) {
        tracing::warn!(
            conn_id = self.conn_id,
            room,
            request,
            error = %err,
            "chat store failed"
        );
        let message = format!("failed to read room `{room}` from the store; retry the {request}");
        self.send_room_error(ErrorCode::Internal, request, room, message);
    }

    fn send_room_error(&self, code: ErrorCode, request: &str, room: &str, message: String) {
        let mut error = ErrorEvent::new(code, message);
        error.request = Some(request.to_owned());
        error.room = Some(room.to_owned());
        self.send_error(error);
    }

    fn send_error(&self, error: ErrorEvent) {
        self.send_event(ServerEvent::Error(error));
    }

    fn send_event(&self, event: ServerEvent) {
        if let Err(err) = self.out.send_text(event.to_json()) {
            tracing::debug!(conn_id = self.conn_id, error = %err, "failed to queue event");
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.leave_all();
        tracing::debug!(conn_id = self.conn_id, "chat connection closed");
    }
}

/// Returns the room that a request names, if any.
fn request_room(request: &ClientRequest) -> Option<&str> {
    match request {
        ClientRequest::Join(join) => Some(&join.room),
        ClientRequest::Send(send) => Some(&send.room),
        ClientRequest::History(history) => Some(&history.room),
        ClientRequest::Leave(leave) => Some(&leave.room),
        ClientRequest::Ping => None,
    }
}

fn not_joined_message(room: &str) -> String {
    format!("not joined to room `{room}`; send `join` first")
}

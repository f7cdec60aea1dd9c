//! Per-room hubs of one node.
//!
//! A hub owns the node's single broker subscription for a room and the room's local
//! members. It puts messages into seq order, fans them out to the members, fills gaps from
//! the store, and tracks presence, which therefore covers this node's connections only.
//! The hub is created when the first local connection joins and closed, with its
//! subscription, when the last one leaves.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, OnceCell};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::broker::{Broker, BrokerError, ChatEvent, Delivery, Subscription};
use crate::outbound::Outbound;
use crate::protocol::{ChatMessage, JoinedEvent, PresenceEvent, PresenceKind, ServerEvent};
use crate::store::{Store, StoreError};

/// Time a message may wait for a missing earlier seq before the hub reads the gap from the
/// store. Concurrent sends publish out of order only for the time between their store
/// commits and their publishes, so a longer gap most likely means a lost publish. Filling a
/// gap too early costs one store read and loses nothing.
const GAP_TIMEOUT: Duration = Duration::from_millis(250);

/// Number of messages per store read when the hub fills a gap.
const FILL_PAGE: usize = 256;

/// Maximum number of out-of-order messages held before the hub fills the gap at once.
const MAX_EARLY: usize = 4096;

/// Maximum number of live messages buffered for a member while it reads its join history.
/// Past it the buffer is dropped and the member reads the missed messages from the store.
const MAX_JOIN_BUFFER: usize = 10_000;

const RESUBSCRIBE_MIN_DELAY: Duration = Duration::from_millis(100);
const RESUBSCRIBE_MAX_DELAY: Duration = Duration::from_secs(5);

/// Failure to start a room hub.
#[derive(thiserror::Error, Debug)]
pub(crate) enum StartError {
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Opening the room would exceed the node's maximum number of open rooms.
    #[error("this node already serves its maximum of {max} rooms")]
    NodeFull { max: usize },
}

/// Next step for a member that finished its join history, returned by [`RoomHub::go_live`].
pub(crate) enum GoLive {
    /// The member now receives live messages.
    Done,
    /// The join buffer overflowed. The caller sends the messages after its cutoff up to at
    /// least `until` from the store and calls `go_live` again.
    Refill { until: u64 },
}

/// The hubs of one node, by room name.
pub(crate) struct HubRegistry {
    hubs: Mutex<HashMap<String, Arc<RoomHub>>>,
    store: Arc<dyn Store>,
    broker: Arc<dyn Broker>,
    /// Maximum number of hubs. Reserving a room beyond it fails with
    /// [`StartError::NodeFull`].
    max_rooms: usize,
}

impl HubRegistry {
    pub(crate) fn new(store: Arc<dyn Store>, broker: Arc<dyn Broker>, max_rooms: usize) -> Self {
        Self {
            hubs: Mutex::default(),
            store,
            broker,
            max_rooms,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<RoomHub>>> {
        // Each critical section is a single map operation, so the map is consistent even
        // after a panic elsewhere.
        self.hubs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Returns a started hub for `room`, creating and subscribing it if needed. The
    /// reservation keeps the hub open until the caller registers as a member.
    pub(crate) async fn reserve(self: &Arc<Self>, room: &str) -> Result<Reservation, StartError> {
        let hub = loop {
            let hub = {
                let mut hubs = self.lock();
                let open = hubs.len();
                match hubs.entry(room.to_owned()) {
                    Entry::Occupied(entry) => Arc::clone(entry.get()),
                    Entry::Vacant(_) if open >= self.max_rooms => {
                        return Err(StartError::NodeFull {
                            max: self.max_rooms,
                        });
                    }
                    Entry::Vacant(entry) => Arc::clone(entry.insert(RoomHub::new(
                        room,
                        Arc::clone(&self.store),
                        Arc::clone(&self.broker),
                    ))),
                }
            };
            if hub.try_reserve() {
                break hub;
            }
            // The last member left this hub after the lookup. Remove it, then retry.
            self.forget(&hub);
        };
        let reservation = Reservation {
            registry: Arc::clone(self),
            hub,
            active: true,
        };
        // On error the reservation drops here and releases the hub.
        reservation.hub.ensure_started().await?;
        Ok(reservation)
    }

    /// Removes a member from its hub and closes the hub if it has no members left.
    pub(crate) fn leave(&self, hub: &Arc<RoomHub>, conn_id: u64) {
        if hub.remove_member(conn_id) {
            self.forget(hub);
        }
    }

    fn forget(&self, hub: &Arc<RoomHub>) {
        {
            let mut hubs = self.lock();
            if hubs
                .get(&hub.room)
                .is_some_and(|current| Arc::ptr_eq(current, hub))
            {
                hubs.remove(&hub.room);
            }
        }
        hub.shutdown();
    }

    pub(crate) fn room_count(&self) -> usize {
        self.lock().len()
    }
}

/// Claim on a started hub that keeps it open until [`Reservation::register`] turns it into
/// a membership. Dropping it releases the claim.
pub(crate) struct Reservation {
    registry: Arc<HubRegistry>,
    hub: Arc<RoomHub>,
    active: bool,
}

impl Reservation {
    /// Registers the connection as a member (see [`RoomHub::register`]) and releases the
    /// claim. Returns the hub and its delivered seq at registration.
    pub(crate) fn register(
        mut self,
        conn_id: u64,
        nick: &str,
        out: &Arc<dyn Outbound>,
        store_last_seq: u64,
    ) -> (Arc<RoomHub>, u64) {
        self.active = false;
        let registered_at = self.hub.register(conn_id, nick, out, store_last_seq, true);
        (Arc::clone(&self.hub), registered_at)
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.active && self.hub.release_reservation() {
            self.registry.forget(&self.hub);
        }
    }
}

/// Hub of one room on this node.
pub(crate) struct RoomHub {
    room: String,
    store: Arc<dyn Store>,
    broker: Arc<dyn Broker>,
    state: Mutex<HubState>,
    /// Task that receives the room's broker subscription, set once the hub started.
    task: OnceCell<JoinHandle<()>>,
    /// Wakes the task to read new messages from the store, for example after a failed
    /// publish on this node.
    fill_requested: Notify,
}

struct HubState {
    /// Set when the last member left. A closed hub accepts no new members.
    closed: bool,
    /// Joins between lookup and registration that keep the hub open.
    reservations: usize,
    /// Highest seq fanned out. Every message up to it was delivered in order.
    delivered: u64,
    /// Messages received ahead of a missing seq, by seq.
    early: BTreeMap<u64, ChatMessage>,
    /// When the task reads the store to fill a gap or retry a failed read.
    fill_due: Option<Instant>,
    members: HashMap<u64, Member>,
    /// Number of member connections per nick. Its keys are the member list.
    nicks: BTreeMap<String, usize>,
}

struct Member {
    nick: String,
    out: Arc<dyn Outbound>,
    delivery: MemberDelivery,
}

enum MemberDelivery {
    /// The member reads its join history. Live messages wait here as (seq, JSON text).
    Buffering {
        messages: Vec<(u64, String)>,
        overflowed: bool,
    },
    /// The member receives live messages with seq greater than `last_sent`.
    Live { last_sent: u64 },
}

impl MemberDelivery {
    fn buffering() -> Self {
        MemberDelivery::Buffering {
            messages: Vec::new(),
            overflowed: false,
        }
    }
}

fn send_to(out: &Arc<dyn Outbound>, room: &str, conn_id: u64, text: String) {
    if let Err(err) = out.send_text(text) {
        tracing::debug!(room, conn_id, error = %err, "failed to queue event for connection");
    }
}

impl HubState {
    fn member_list(&self) -> Vec<String> {
        self.nicks.keys().cloned().collect()
    }

    fn close_if_unused(&mut self) -> bool {
        if !self.closed && self.members.is_empty() && self.reservations == 0 {
            self.closed = true;
            return true;
        }
        false
    }

    /// Sends a presence event to every member except `skip_conn`.
    fn broadcast_presence(&self, room: &str, kind: PresenceKind, nick: &str, skip_conn: u64) {
        let text = ServerEvent::Presence(PresenceEvent {
            room: room.to_owned(),
            event: kind,
            nick: nick.to_owned(),
            members: self.member_list(),
        })
        .to_json();
        for (&conn_id, member) in &self.members {
            if conn_id != skip_conn {
                send_to(&member.out, room, conn_id, text.clone());
            }
        }
    }

    /// Takes a message from the broker or the store and fans out every message that is now
    /// next in seq order. Returns true when so many messages wait for a gap that the caller
    /// should fill it from the store at once.
    fn accept(&mut self, room: &str, message: ChatMessage) -> bool {
        if message.seq <= self.delivered {
            return false;
        }
        if message.seq > self.delivered + 1 {
            self.early.insert(message.seq, message);
            self.fill_due
                .get_or_insert_with(|| Instant::now() + GAP_TIMEOUT);
            return self.early.len() > MAX_EARLY;
        }

        self.fan_out(room, message);
        while let Some(next) = self.early.remove(&(self.delivered + 1)) {
            self.fan_out(room, next);
        }
        // Progress was made, so a remaining gap gets a fresh timeout.
        self.fill_due = if self.early.is_empty() {
            None
        } else {
            Some(Instant::now() + GAP_TIMEOUT)
        };
        false
    }

    fn fan_out(&mut self, room: &str, message: ChatMessage) {
        let seq = message.seq;
        self.delivered = seq;
        let text = ServerEvent::Message(message).to_json();
        for (&conn_id, member) in &mut self.members {
            match &mut member.delivery {
                MemberDelivery::Live { last_sent } => {
                    if seq > *last_sent {
                        *last_sent = seq;
                        send_to(&member.out, room, conn_id, text.clone());
                    }
                }
                MemberDelivery::Buffering {
                    messages,
                    overflowed,
                } => {
                    if *overflowed {
                        continue;
                    }
                    if messages.len() >= MAX_JOIN_BUFFER {
                        messages.clear();
                        *overflowed = true;
                    } else {
                        messages.push((seq, text.clone()));
                    }
                }
            }
        }
        tracing::debug!(
            room,
            seq,
            members = self.members.len(),
            "fanned out message"
        );
    }
}

impl RoomHub {
    fn new(room: &str, store: Arc<dyn Store>, broker: Arc<dyn Broker>) -> Arc<Self> {
        Arc::new(Self {
            room: room.to_owned(),
            store,
            broker,
            state: Mutex::new(HubState {
                closed: false,
                reservations: 0,
                delivered: 0,
                early: BTreeMap::new(),
                fill_due: None,
                members: HashMap::new(),
                nicks: BTreeMap::new(),
            }),
            task: OnceCell::new(),
            fill_requested: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HubState> {
        // Members and counters are updated together inside each critical section, and no
        // code in them is expected to panic. Keep serving the room if one did.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn try_reserve(&self) -> bool {
        let mut state = self.lock();
        if state.closed {
            return false;
        }
        state.reservations += 1;
        true
    }

    /// Releases a reservation. Returns true when this closed the hub.
    fn release_reservation(&self) -> bool {
        let mut state = self.lock();
        state.reservations -= 1;
        state.close_if_unused()
    }

    /// Subscribes to the room and starts the hub task, once. The subscription starts
    /// before the store's last seq is read, so every later message arrives live.
    async fn ensure_started(self: &Arc<Self>) -> Result<(), StartError> {
        self.task
            .get_or_try_init(|| async {
                let subscription = self.broker.subscribe(&self.room).await?;
                let last_seq = self.store.last_seq(&self.room).await?;
                self.lock().delivered = last_seq;
                tracing::debug!(room = %self.room, last_seq, "subscribed to room");
                Ok::<_, StartError>(tokio::spawn(run_hub(Arc::clone(self), subscription)))
            })
            .await?;
        Ok(())
    }

    fn shutdown(&self) {
        if let Some(task) = self.task.get() {
            task.abort();
        }
        tracing::debug!(room = %self.room, "closed room hub");
    }

    /// Registers a connection as a member whose live messages are buffered until
    /// [`Self::go_live`], and sends it `joined`. A connection that is already a member
    /// starts buffering again. Sends a presence `join` to the other members when this is
    /// the nick's first connection. `reserved` converts a reservation into the membership.
    ///
    /// Returns the delivered seq at registration. Every later message reaches the buffer.
    pub(crate) fn register(
        &self,
        conn_id: u64,
        nick: &str,
        out: &Arc<dyn Outbound>,
        store_last_seq: u64,
        reserved: bool,
    ) -> u64 {
        let mut state = self.lock();
        if reserved {
            state.reservations -= 1;
        }
        let registered_at = state.delivered;

        let first_connection = match state.members.get_mut(&conn_id) {
            Some(member) => {
                member.delivery = MemberDelivery::buffering();
                false
            }
            None => {
                state.members.insert(
                    conn_id,
                    Member {
                        nick: nick.to_owned(),
                        out: Arc::clone(out),
                        delivery: MemberDelivery::buffering(),
                    },
                );
                let count = state.nicks.entry(nick.to_owned()).or_insert(0);
                *count += 1;
                *count == 1
            }
        };

        // `joined` goes out under the lock so that it precedes any presence event for the
        // room on this connection.
        let joined = ServerEvent::Joined(JoinedEvent {
            room: self.room.clone(),
            nick: nick.to_owned(),
            members: state.member_list(),
            last_seq: store_last_seq.max(registered_at),
        });
        send_to(out, &self.room, conn_id, joined.to_json());
        if first_connection {
            state.broadcast_presence(&self.room, PresenceKind::Join, nick, conn_id);
        }
        registered_at
    }

    /// Switches a member from buffering to live delivery. The buffered messages with seq
    /// greater than `cutoff`, the last seq the member already sent, go out first.
    pub(crate) fn go_live(&self, conn_id: u64, cutoff: u64) -> GoLive {
        let mut state = self.lock();
        let delivered = state.delivered;
        let Some(member) = state.members.get_mut(&conn_id) else {
            return GoLive::Done;
        };
        let buffered = match &mut member.delivery {
            MemberDelivery::Live { .. } => return GoLive::Done,
            MemberDelivery::Buffering {
                messages,
                overflowed,
            } => {
                if *overflowed {
                    messages.clear();
                    *overflowed = false;
                    return GoLive::Refill { until: delivered };
                }
                std::mem::take(messages)
            }
        };

        let mut last_sent = cutoff;
        for (seq, text) in buffered {
            if seq > last_sent {
                last_sent = seq;
                send_to(&member.out, &self.room, conn_id, text);
            }
        }
        member.delivery = MemberDelivery::Live { last_sent };
        GoLive::Done
    }

    /// Removes a member and sends a presence `leave` when it was the nick's last
    /// connection. Returns true when this closed the hub.
    fn remove_member(&self, conn_id: u64) -> bool {
        let mut state = self.lock();
        if let Some(member) = state.members.remove(&conn_id) {
            let last_connection = match state.nicks.get_mut(&member.nick) {
                Some(count) if *count > 1 => {
                    *count -= 1;
                    false
                }
                _ => {
                    state.nicks.remove(&member.nick);
                    true
                }
            };
            if last_connection {
                state.broadcast_presence(&self.room, PresenceKind::Leave, &member.nick, conn_id);
            }
        }
        state.close_if_unused()
    }

    /// Asks the hub task to read new messages from the store.
    pub(crate) fn request_fill(&self) {
        self.fill_requested.notify_one();
    }

    fn accept(&self, message: ChatMessage) -> bool {
        self.lock().accept(&self.room, message)
    }

    /// Reads every stored message after the delivered seq and fans it out. On a store
    /// error it schedules a retry after [`GAP_TIMEOUT`].
    async fn fill_from_store(&self) {
        loop {
            let after = self.lock().delivered;
            let messages = match self.store.since(&self.room, after, FILL_PAGE).await {
                Ok(messages) => messages,
                Err(err) => {
                    tracing::warn!(
                        room = %self.room,
                        after_seq = after,
                        error = %err,
                        "failed to read missed messages from the store; retrying"
                    );
                    self.lock().fill_due = Some(Instant::now() + GAP_TIMEOUT);
                    return;
                }
            };
            let complete = messages.len() < FILL_PAGE;
            let mut state = self.lock();
            for message in messages {
                state.accept(&self.room, message);
            }
            if complete {
                if !state.early.is_empty() && state.fill_due.is_none() {
                    state.fill_due = Some(Instant::now() + GAP_TIMEOUT);
                }
                return;
            }
        }
    }

    async fn resubscribe(&self) -> Subscription {
        let mut delay = RESUBSCRIBE_MIN_DELAY;
        loop {
            match self.broker.subscribe(&self.room).await {
                Ok(subscription) => return subscription,
                Err(err) => {
                    tracing::warn!(
                        room = %self.room,
                        error = %err,
                        retry_in_ms = delay.as_millis() as u64,
                        "failed to resubscribe to room"
                    );
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RESUBSCRIBE_MAX_DELAY);
                }
            }
        }
    }
}

/// Receives the room's broker events until the hub shuts the task down.
async fn run_hub(hub: Arc<RoomHub>, mut subscription: Subscription) {
    loop {
        let fill_due = hub.lock().fill_due;
        tokio::select! {
            delivery = subscription.recv() => match delivery {
                Some(Delivery::Event(ChatEvent::Message(message))) => {
                    if message.room != hub.room {
                        tracing::warn!(
                            room = %hub.room,
                            message_room = %message.room,
                            seq = message.seq,
                            "dropped broker message for another room"
                        );
                        continue;
                    }
                    if hub.accept(message) {
                        hub.fill_from_store().await;
                    }
                }
                Some(Delivery::Lagged { missed }) => {
                    tracing::warn!(
                        room = %hub.room,
                        missed,
                        "room subscription lagged; reading missed messages from the store"
                    );
                    hub.fill_from_store().await;
                }
                None => {
                    tracing::warn!(room = %hub.room, "room subscription ended; resubscribing");
                    subscription = hub.resubscribe().await;
                    hub.fill_from_store().await;
                }
            },
            () = tokio::time::sleep_until(fill_due.unwrap_or_else(Instant::now)),
                if fill_due.is_some() =>
            {
                tracing::debug!(room = %hub.room, "gap in seq timed out; reading the store");
                hub.lock().fill_due = None;
                hub.fill_from_store().await;
            }
            () = hub.fill_requested.notified() => hub.fill_from_store().await,
        }
    }
}

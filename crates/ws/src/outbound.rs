//! Bounded outbound queue shared between a [`crate::WebSocket`] and its [`Sender`]s.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use futures_util::task::AtomicWaker;
use pylon_proto::{CloseCode, CloseFrame, Message};

use crate::{FullPolicy, TrySendError};

/// Close reason sent when [`FullPolicy::Close`] closes a connection.
const QUEUE_FULL_REASON: &str = "outbound queue full";

/// Handle that queues messages for a [`crate::WebSocket`] from any task.
///
/// Cloning is cheap (one reference count). Messages are written by the task that polls the
/// WebSocket's `recv`, in the order they were queued. Messages passed to
/// [`crate::WebSocket::send`] bypass this queue, so there is no ordering between the two.
#[derive(Clone)]
pub struct Sender {
    shared: Arc<Outbound>,
}

/// State shared by the senders and the WebSocket.
pub(crate) struct Outbound {
    queue: Mutex<Queue>,
    /// Waker of the task that polls the WebSocket.
    waker: AtomicWaker,
    /// Messages discarded by the full policy.
    dropped: AtomicU64,
    /// Set once no message can be queued any more. Written only while `queue` is locked.
    closed: AtomicBool,
    /// Number of queued messages, written only while `queue` is locked, so that
    /// [`Outbound::pop`] can return without locking while the queue is empty.
    queued: AtomicUsize,
    capacity: usize,
    policy: FullPolicy,
}

struct Queue {
    messages: VecDeque<Message>,
    /// Close frame to send after the queued messages.
    close: Option<CloseFrame>,
}

impl Sender {
    pub(crate) fn new(shared: Arc<Outbound>) -> Self {
        Sender { shared }
    }

    /// Queues a message without waiting.
    ///
    /// Returns [`TrySendError::Full`] when the queue contains `Config::outbound_capacity`
    /// messages. The configured [`FullPolicy`] has then already been applied: the message
    /// was counted in [`Sender::dropped`], or the connection is closing. Returns
    /// [`TrySendError::Closed`] once the connection is closing or the WebSocket was dropped.
    pub fn try_send(&self, message: Message) -> Result<(), TrySendError> {
        let shared = &*self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return Err(TrySendError::Closed(message));
        }

        let mut queue = shared.lock();
        if shared.closed.load(Ordering::Relaxed) {
            return Err(TrySendError::Closed(message));
        }
        if queue.messages.len() < shared.capacity {
            queue.messages.push_back(message);
            shared.queued.store(queue.messages.len(), Ordering::Release);
            drop(queue);
            shared.waker.wake();
            return Ok(());
        }

        match shared.policy {
            FullPolicy::Drop => {
                drop(queue);
                let dropped = shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::debug!(dropped, "outbound queue full, message dropped");
            }
            FullPolicy::Close(code) => {
                let discarded = queue.messages.len() as u64 + 1;
                queue.messages = VecDeque::new();
                shared.queued.store(0, Ordering::Release);
                queue.close = Some(CloseFrame::new(code, QUEUE_FULL_REASON));
                shared.closed.store(true, Ordering::Release);
                drop(queue);
                shared.dropped.fetch_add(discarded, Ordering::Relaxed);
                shared.waker.wake();
                // Debug, not warn: this runs in the span of the task that called
                // `try_send`, which is usually another connection's. The caller sees
                // `TrySendError::Full` and can log it with the right connection id.
                tracing::debug!(
                    code = code.0,
                    discarded,
                    "outbound queue full, peer reads too slowly, closing the connection"
                );
            }
        }
        Err(TrySendError::Full(message))
    }

    /// Queues a close frame behind the messages already queued, for example 1001 (going
    /// away) on server shutdown.
    ///
    /// Later [`Sender::try_send`] calls return [`TrySendError::Closed`]. Does nothing if the
    /// connection is already closing. A reason longer than the 123 bytes a close frame can
    /// carry is cut at a character boundary. A code that may not be sent on the wire (see
    /// [`CloseCode::is_sendable`]) is replaced by 1011 (internal error) when the frame is
    /// written.
    pub fn close(&self, code: CloseCode, reason: &str) {
        let shared = &*self.shared;
        let mut queue = shared.lock();
        if shared.closed.load(Ordering::Relaxed) {
            return;
        }
        let reason = truncate_reason(reason).to_owned();
        queue.close = Some(CloseFrame::new(code, reason));
        shared.closed.store(true, Ordering::Release);
        drop(queue);
        shared.waker.wake();
    }

    /// Returns the number of messages discarded because the queue was full: each message
    /// refused under [`FullPolicy::Drop`], or under [`FullPolicy::Close`] the refused message
    /// plus the queued ones that were discarded with it.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Returns `true` once no message can be queued: the connection is closing or closed,
    /// or the WebSocket was dropped.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("capacity", &self.shared.capacity)
            .field("queued", &self.shared.lock().messages.len())
            .field("dropped", &self.dropped())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Outbound {
    pub(crate) fn new(capacity: usize, policy: FullPolicy) -> Self {
        Outbound {
            queue: Mutex::new(Queue {
                messages: VecDeque::new(),
                close: None,
            }),
            waker: AtomicWaker::new(),
            dropped: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            capacity,
            policy,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while the lock was held cannot leave the queue inconsistent: each
        // critical section is a single push, pop or assignment.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers the task to wake when a message or a close is queued. Call it before
    /// [`Outbound::pop`] so that no wake-up is lost.
    pub(crate) fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    /// Returns `true` while a close frame from [`Sender::close`] or [`FullPolicy::Close`]
    /// waits in the queue.
    pub(crate) fn close_requested(&self) -> bool {
        self.closed.load(Ordering::Acquire) && self.lock().close.is_some()
    }

    /// Removes the next item to write: a queued message, or the close frame once the
    /// messages are gone.
    pub(crate) fn pop(&self) -> Option<Message> {
        // A close request sets `closed`, so with neither there is nothing to take. A sender
        // that queues after these loads wakes the task, which then pops again.
        if self.queued.load(Ordering::Acquire) == 0 && !self.closed.load(Ordering::Acquire) {
            return None;
        }
        let mut queue = self.lock();
        if let Some(message) = queue.messages.pop_front() {
            self.queued.store(queue.messages.len(), Ordering::Release);
            return Some(message);
        }
        queue.close.take().map(|frame| Message::Close(Some(frame)))
    }

    /// Stops accepting messages and discards the queued ones, because the connection is
    /// closing or gone.
    pub(crate) fn shut(&self) {
        let mut queue = self.lock();
        self.closed.store(true, Ordering::Release);
        let discarded = queue.messages.len();
        queue.messages = VecDeque::new();
        self.queued.store(0, Ordering::Release);
        queue.close = None;
        drop(queue);
        if discarded > 0 {
            tracing::debug!(discarded, "connection closed, queued messages discarded");
        }
    }
}

/// Cuts `reason` to at most [`CloseFrame::MAX_REASON_LEN`] bytes at a character boundary.
fn truncate_reason(reason: &str) -> &str {
    let max = CloseFrame::MAX_REASON_LEN;
    if reason.len() <= max {
        return reason;
    }
    let mut end = max;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sender(capacity: usize, policy: FullPolicy) -> (Sender, Arc<Outbound>) {
        let shared = Arc::new(Outbound::new(capacity, policy));
        (Sender::new(shared.clone()), shared)
    }

    #[test]
    fn drop_policy_counts_refused_messages() {
        let (sender, shared) = sender(2, FullPolicy::Drop);
        assert!(sender.try_send(Message::text("a")).is_ok());
        assert!(sender.try_send(Message::text("b")).is_ok());
        let refused = sender.try_send(Message::text("c"));
        assert_eq!(refused, Err(TrySendError::Full(Message::text("c"))));
        assert_eq!(sender.dropped(), 1);
        assert!(!sender.is_closed());
        assert_eq!(shared.pop(), Some(Message::text("a")));
        assert_eq!(shared.pop(), Some(Message::text("b")));
        assert_eq!(shared.pop(), None);
    }

    #[test]
    fn close_policy_discards_queue_and_closes() {
        let (sender, shared) = sender(2, FullPolicy::Close(CloseCode::POLICY_VIOLATION));
        sender.try_send(Message::text("a")).unwrap();
        sender.try_send(Message::text("b")).unwrap();
        let refused = sender.try_send(Message::text("c"));
        assert_eq!(refused, Err(TrySendError::Full(Message::text("c"))));
        assert!(sender.is_closed());
        assert_eq!(sender.dropped(), 3);
        let expected = Message::Close(Some(CloseFrame::new(
            CloseCode::POLICY_VIOLATION,
            QUEUE_FULL_REASON,
        )));
        assert_eq!(shared.pop(), Some(expected));
        assert_eq!(shared.pop(), None);
        let late = sender.try_send(Message::text("d"));
        assert_eq!(late, Err(TrySendError::Closed(Message::text("d"))));
    }

    #[test]
    fn close_goes_after_queued_messages() {
        let (sender, shared) = sender(4, FullPolicy::Drop);
        sender.try_send(Message::text("a")).unwrap();
        sender.close(CloseCode::GOING_AWAY, "shutdown");
        sender.close(CloseCode::NORMAL, "second close is ignored");
        assert!(sender.is_closed());
        assert_eq!(shared.pop(), Some(Message::text("a")));
        let expected = Message::Close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "shutdown")));
        assert_eq!(shared.pop(), Some(expected));
        assert_eq!(shared.pop(), None);
    }

    #[test]
    fn close_request_is_visible_until_popped() {
        let (sender, shared) = sender(4, FullPolicy::Drop);
        assert!(!shared.close_requested());
        sender.try_send(Message::text("a")).unwrap();
        sender.close(CloseCode::GOING_AWAY, "shutdown");
        assert!(shared.close_requested());
        assert_eq!(shared.pop(), Some(Message::text("a")));
        assert!(shared.close_requested());
        assert!(matches!(shared.pop(), Some(Message::Close(_))));
        assert!(!shared.close_requested());
    }

    #[test]
    fn shut_is_no_close_request() {
        let (sender, shared) = sender(4, FullPolicy::Drop);
        sender.close(CloseCode::GOING_AWAY, "shutdown");
        shared.shut();
        assert!(!shared.close_requested());
    }

    #[test]
    fn shut_rejects_and_discards() {
        let (sender, shared) = sender(4, FullPolicy::Drop);
        sender.try_send(Message::text("a")).unwrap();
        shared.shut();
        assert!(sender.is_closed());
        assert_eq!(shared.pop(), None);
        let late = sender.try_send(Message::text("b"));
        assert_eq!(late, Err(TrySendError::Closed(Message::text("b"))));
    }

    #[test]
    fn long_reason_is_cut_at_char_boundary() {
        let reason = "é".repeat(100);
        let cut = truncate_reason(&reason);
        assert_eq!(cut.len(), 122);
        assert!(truncate_reason("short") == "short");
    }
}

//! The send and receive loop of one echo connection.

use std::collections::VecDeque;
use std::time::Duration;

use pylon_ws::{CloseCode, Message, Sender, TrySendError, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, sleep_until};

use crate::latency::LatencyBatch;
use crate::payload::Payload;
use crate::progress::Progress;

/// When one connection sends.
#[derive(Clone, Copy, Debug)]
pub(super) enum Schedule {
    /// Keep `pipeline` messages in flight: send one whenever an echo arrives.
    Closed { pipeline: usize },
    /// Send at `first`, `first + period`, `first + 2 * period`, ... whatever the replies.
    /// Latency counts from these scheduled times.
    Open { first: Instant, period: Duration },
}

/// The send plan of one connection.
#[derive(Clone, Copy, Debug)]
pub(super) struct Plan {
    pub(super) start: Instant,
    /// Messages sent (or scheduled) before this are warmup and not measured.
    pub(super) measure_from: Instant,
    /// No message is sent at or after this, in a run bounded by time.
    pub(super) send_until: Option<Instant>,
    /// Measured messages to send, in a run bounded by a message count.
    pub(super) quota: Option<u64>,
    pub(super) schedule: Schedule,
    pub(super) drain_timeout: Duration,
    pub(super) hard_deadline: Instant,
}

/// Measurements of one connection.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// Measured echoes that matched their message.
    pub(super) messages: u64,
    /// Echoes that differed from their message, or arrived with no message in flight.
    pub(super) mismatched: u64,
    /// Messages whose echo never arrived before the end of the run.
    pub(super) unanswered: u64,
    /// Sends rejected because the outbound queue was full (open loop only).
    pub(super) queue_full: u64,
    /// The connection ended before the run did.
    pub(super) lost: bool,
    /// The run hit its hard timeout while this connection was busy.
    pub(super) timed_out: bool,
    /// When the last measured echo arrived.
    pub(super) last_echo: Option<Instant>,
    /// Description of the first error.
    pub(super) first_error: Option<String>,
}

impl Outcome {
    fn note_error(&mut self, error: impl FnOnce() -> String) {
        if self.first_error.is_none() {
            let text = error();
            tracing::debug!(error = %text, "echo benchmark error");
            self.first_error = Some(text);
        }
    }
}

/// A message whose echo has not arrived yet.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    seq: u64,
    /// Send time, or the scheduled send time in open loop.
    sent_at: Instant,
    measured: bool,
}

struct Connection<'a> {
    plan: Plan,
    payload: Payload,
    sender: Sender,
    latencies: LatencyBatch<'a>,
    progress: &'a Progress,
    in_flight: VecDeque<InFlight>,
    next_seq: u64,
    measured_sent: u64,
    /// Set once the plan allows no more sends.
    sending_done: bool,
    /// When to give up waiting for outstanding echoes, once sending is done.
    drain_deadline: Option<Instant>,
    outcome: Outcome,
}

/// Runs one connection through its plan, then closes it.
pub(super) async fn run<S>(
    mut ws: WebSocket<S>,
    plan: Plan,
    payload: Payload,
    latencies: LatencyBatch<'_>,
    progress: &Progress,
) -> Outcome
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let sender = ws.sender();
    let mut conn = Connection {
        plan,
        payload,
        sender,
        latencies,
        progress,
        in_flight: VecDeque::new(),
        next_seq: 0,
        measured_sent: 0,
        sending_done: false,
        drain_deadline: None,
        outcome: Outcome::default(),
    };
    sleep_until(plan.start).await;
    conn.drive(&mut ws).await;
    conn.latencies.flush();

    let mut outcome = conn.outcome;
    if !outcome.lost
        && !outcome.timed_out
        && let Err(err) = ws.close(CloseCode::NORMAL, "benchmark finished").await
    {
        tracing::debug!(error = %err, "close handshake after the benchmark failed");
    }
    let unanswered = conn.in_flight.len() as u64;
    if unanswered > 0 {
        outcome.unanswered += unanswered;
        progress.add_errors(unanswered);
        outcome.note_error(|| format!("{unanswered} messages got no echo"));
    }
    outcome
}

impl Connection<'_> {
    async fn drive<S>(&mut self, ws: &mut WebSocket<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut next_tick = match self.plan.schedule {
            Schedule::Closed { pipeline } => {
                let now = Instant::now();
                for _ in 0..pipeline {
                    self.send(now);
                }
                None
            }
            Schedule::Open { first, .. } => Some(first),
        };

        loop {
            if self.sending_done && self.in_flight.is_empty() {
                return;
            }
            let give_up = self
                .drain_deadline
                .map_or(self.plan.hard_deadline, |drain| {
                    drain.min(self.plan.hard_deadline)
                });
            let tick = next_tick.filter(|_| !self.sending_done);
            tokio::select! {
                biased;
                item = ws.recv() => {
                    if !self.on_item(item) {
                        return;
                    }
                }
                () = sleep_until(tick.unwrap_or(give_up)), if tick.is_some() => {
                    next_tick = Some(self.send_due(tick.unwrap_or(give_up)));
                }
                () = sleep_until(give_up) => {
                    if give_up >= self.plan.hard_deadline {
                        self.outcome.timed_out = true;
                        self.outcome.note_error(|| "the run hit its hard timeout".to_owned());
                    }
                    return;
                }
            }
        }
    }

    /// Sends every open-loop message scheduled at or before now, starting at `tick`.
    /// Returns the next scheduled time.
    ///
    /// NOTE: tokio timers fire on a 1 ms grid, so a send can start up to about 1 ms after
    /// its scheduled time, and that delay counts as latency.
    fn send_due(&mut self, mut tick: Instant) -> Instant {
        let Schedule::Open { period, .. } = self.plan.schedule else {
            unreachable!("only open-loop connections have a send schedule");
        };
        let now = Instant::now();
        while !self.sending_done && tick <= now {
            self.send(tick);
            tick += period;
        }
        tick
    }

    /// Handles one result of `recv`. Returns `false` when the connection ended.
    fn on_item(&mut self, item: Option<Result<Message, pylon_ws::Error>>) -> bool {
        match item {
            Some(Ok(message @ (Message::Text(_) | Message::Binary(_)))) => {
                self.on_echo(&message);
                if matches!(self.plan.schedule, Schedule::Closed { .. }) {
                    self.send(Instant::now());
                }
                true
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => true,
            Some(Ok(Message::Close(frame))) => {
                self.lose(format!("server closed the connection: {frame:?}"));
                false
            }
            Some(Err(err)) => {
                self.lose(format!("connection failed: {err}"));
                false
            }
            None => {
                self.lose("connection ended".to_owned());
                false
            }
        }
    }

    fn on_echo(&mut self, echo: &Message) {
        let now = Instant::now();
        let Some(sent) = self.in_flight.pop_front() else {
            self.outcome.mismatched += 1;
            self.progress.add_errors(1);
            self.outcome
                .note_error(|| "received an echo with no message in flight".to_owned());
            return;
        };
        if let Err(mismatch) = self.payload.verify(echo, sent.seq) {
            self.outcome.mismatched += 1;
            self.progress.add_errors(1);
            self.outcome.note_error(|| {
                format!(
                    "echo of message {} differs from the message: {mismatch:?}",
                    sent.seq
                )
            });
            return;
        }
        self.progress.add_message();
        if sent.measured {
            self.outcome.messages += 1;
            self.outcome.last_echo = Some(now);
            self.latencies
                .record(now.saturating_duration_since(sent.sent_at));
        }
    }

    fn lose(&mut self, reason: String) {
        self.outcome.lost = true;
        self.progress.add_errors(1);
        self.outcome.note_error(|| reason);
    }

    /// Returns whether the plan allows a message sent (or scheduled) at `at`.
    fn may_send(&self, at: Instant) -> bool {
        if let Some(until) = self.plan.send_until
            && at >= until
        {
            return false;
        }
        match self.plan.quota {
            Some(quota) => at < self.plan.measure_from || self.measured_sent < quota,
            None => true,
        }
    }

    /// Queues the next message, sent (or scheduled) at `at`, or ends sending when the
    /// plan is complete.
    fn send(&mut self, at: Instant) {
        if self.sending_done {
            return;
        }
        if !self.may_send(at) {
            self.sending_done = true;
            self.drain_deadline = Some(Instant::now() + self.plan.drain_timeout);
            return;
        }
        let measured = at >= self.plan.measure_from;
        if measured {
            self.measured_sent += 1;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        match self.sender.try_send(self.payload.message(seq)) {
            Ok(()) => self.in_flight.push_back(InFlight {
                seq,
                sent_at: at,
                measured,
            }),
            Err(TrySendError::Full(_)) => {
                self.outcome.queue_full += 1;
                self.progress.add_errors(1);
                self.outcome.note_error(|| {
                    "outbound queue full: the connection cannot keep up with the requested rate"
                        .to_owned()
                });
            }
            Err(TrySendError::Closed(_)) => {
                self.sending_done = true;
                self.drain_deadline = Some(Instant::now());
            }
        }
    }
}

//! Load generator for Pylon WebSocket endpoints, behind `pylon bench`.
//!
//! Two benchmarks:
//!
//! - [`echo::run`] drives an echo endpoint (such as `/ws/echo`) from many connections and
//!   measures throughput and round-trip latency. In closed loop each connection keeps a
//!   fixed number of messages in flight. In open loop messages are sent on a fixed
//!   schedule and latency counts from the scheduled send time, so a stalled server shows
//!   up in the latency instead of lowering the send rate.
//! - [`connections::run`] opens many idle WebSockets, holds them with keep-alive pings and
//!   measures connect latency and, given the server's process id, its resident memory per
//!   connection.
//!
//! Both report through [`Progress`] while they run and return a report that serializes to
//! JSON and prints as a short table.

pub mod connections;
mod dial;
pub mod echo;
mod latency;
mod payload;
mod proc;
mod progress;

pub use dial::{DEFAULT_STREAMS_PER_CONNECTION, Transport};
pub use latency::LatencySummary;
pub use progress::Progress;

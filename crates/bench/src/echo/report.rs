//! The result of an echo run, as JSON and as a table.

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::EchoConfig;
use super::connection::Outcome;
use crate::latency::{LatencySummary, round_tenth};

/// Result of an echo run.
///
/// Only messages sent (or, in open loop, scheduled) after the warmup are measured.
/// Errors count every failure, warmup included.
#[derive(Clone, Debug, Serialize)]
pub struct EchoReport {
    /// URL of the echo endpoint.
    pub url: String,
    /// Transport of the WebSockets: `h1`, `h1+tls`, `h2`, `h2+tls` or `h3`.
    pub transport: String,
    /// WebSockets per HTTP/2 or HTTP/3 connection, `None` over HTTP/1.1.
    pub streams_per_connection: Option<usize>,
    /// Number of connections.
    pub connections: usize,
    /// Payload size of each message, in bytes.
    pub size: usize,
    /// `true` for text messages, `false` for binary ones.
    pub text: bool,
    /// `"closed"` or `"open"` loop.
    pub mode: &'static str,
    /// Messages in flight per connection (closed loop).
    pub pipeline: usize,
    /// Target rate over all connections in messages per second (open loop).
    pub target_rate: Option<f64>,
    /// Warmup before measuring, in seconds.
    pub warmup_secs: f64,
    /// Measured echoes that matched their message.
    pub messages: u64,
    /// Total of `error_counts`.
    pub errors: u64,
    /// Errors by cause.
    pub error_counts: ErrorCounts,
    /// Measured time: from the end of the warmup to the last measured echo, in seconds.
    pub duration_secs: f64,
    /// `messages / duration_secs`.
    pub msgs_per_sec: f64,
    /// Payload bytes of the measured messages in both directions (sent and echoed) per
    /// second, in MB/s with 1 MB = 10^6 bytes. WebSocket and TCP framing is not counted.
    pub mb_per_sec: f64,
    /// Round-trip latency of the measured messages, in microseconds. Closed loop counts
    /// from the send, open loop from the scheduled send time.
    pub latency_us: LatencySummary,
    /// Time to open each connection (TCP connect and WebSocket handshake), in
    /// microseconds.
    pub connect_us: LatencySummary,
    /// The run hit its hard timeout before it finished.
    pub timed_out: bool,
    /// Description of the first error, if any.
    pub first_error: Option<String>,
}

/// Errors of an echo run by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ErrorCounts {
    /// Echoes that differed from their message in kind, length or content.
    pub mismatched: u64,
    /// Messages whose echo had not arrived when the run ended.
    pub unanswered: u64,
    /// Open-loop sends rejected because the connection's outbound queue was full.
    pub queue_full: u64,
    /// Connections that ended before the run did.
    pub connections_lost: u64,
}

impl ErrorCounts {
    /// Returns the sum of all counts.
    pub fn total(&self) -> u64 {
        self.mismatched + self.unanswered + self.queue_full + self.connections_lost
    }
}

impl EchoReport {
    pub(super) fn new(
        config: &EchoConfig,
        outcomes: &[Outcome],
        duration: Duration,
        latency_us: LatencySummary,
        connect_us: LatencySummary,
    ) -> Self {
        let mut error_counts = ErrorCounts::default();
        let mut messages = 0;
        for outcome in outcomes {
            messages += outcome.messages;
            error_counts.mismatched += outcome.mismatched;
            error_counts.unanswered += outcome.unanswered;
            error_counts.queue_full += outcome.queue_full;
            error_counts.connections_lost += u64::from(outcome.lost);
        }
        let secs = duration.as_secs_f64();
        let per_sec = |count: f64| if secs > 0.0 { count / secs } else { 0.0 };
        let payload_bytes = messages as f64 * config.size as f64 * 2.0;
        EchoReport {
            url: config.url.clone(),
            transport: config.transport.label(&config.url),
            streams_per_connection: config.transport.shares_connections().then_some(
                config
                    .transport
                    .streams_per_connection
                    .min(config.connections),
            ),
            connections: config.connections,
            size: config.size,
            text: config.text,
            mode: if config.rate.is_some() {
                "open"
            } else {
                "closed"
            },
            pipeline: config.pipeline,
            target_rate: config.rate,
            warmup_secs: config.warmup.as_secs_f64(),
            messages,
            errors: error_counts.total(),
            error_counts,
            duration_secs: (secs * 1e6).round() / 1e6,
            msgs_per_sec: round_tenth(per_sec(messages as f64)),
            mb_per_sec: (per_sec(payload_bytes) / 1e6 * 1_000.0).round() / 1_000.0,
            latency_us,
            connect_us,
            timed_out: outcomes.iter().any(|outcome| outcome.timed_out),
            first_error: outcomes
                .iter()
                .find_map(|outcome| outcome.first_error.clone()),
        }
    }

    /// Serializes the report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("the report contains only serializable values")
    }

    fn describe_load(&self) -> String {
        let kind = if self.text { "text" } else { "binary" };
        let mut load = format!(
            "{} connections x {} B {kind}, ",
            self.connections, self.size
        );
        match self.target_rate {
            Some(rate) => load.push_str(&format!("open loop at {rate} msgs/s")),
            None => load.push_str(&format!("closed loop, pipeline {}", self.pipeline)),
        }
        if self.warmup_secs > 0.0 {
            load.push_str(&format!(", warmup {} s", self.warmup_secs));
        }
        load
    }
}

impl fmt::Display for EchoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "echo {} over {}", self.url, self.transport)?;
        writeln!(f, "{:<14}{}", "load", self.describe_load())?;
        writeln!(f, "{:<14}{}", "messages", self.messages)?;
        let counts = &self.error_counts;
        writeln!(
            f,
            "{:<14}{} (mismatched {}, unanswered {}, queue full {}, connections lost {})",
            "errors",
            self.errors,
            counts.mismatched,
            counts.unanswered,
            counts.queue_full,
            counts.connections_lost
        )?;

        writeln!(f, "{:<14}{:.3} s", "duration", self.duration_secs)?;
        writeln!(f, "{:<14}{:.1} msgs/s", "throughput", self.msgs_per_sec)?;
        writeln!(
            f,
            "{:<14}{:.3} MB/s (payload, both directions, 1 MB = 10^6 B)",
            "bandwidth", self.mb_per_sec
        )?;
        self.latency_us.write_table(f, "latency (µs)")?;
        self.connect_us.write_table(f, "connect (µs)")?;

        if self.timed_out {
            writeln!(
                f,
                "the run hit its hard timeout; the numbers cover what completed"
            )?;
        }
        if let Some(error) = &self.first_error {
            writeln!(f, "{:<14}{error}", "first error")?;
        }
        Ok(())
    }
}

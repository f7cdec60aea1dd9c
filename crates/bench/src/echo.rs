//! Echo benchmark: throughput and round-trip latency against an endpoint that returns every
//! message unchanged, such as Pylon's `/ws/echo`.
//!
//! All connections are opened first (at most `connect_concurrency` at a time), and the
//! load starts on all of them at the same instant. Each connection sends through the
//! outbound queue of its [`WebSocket`] while one task polls `recv`, so the connection
//! keeps reading while its writes wait, and a full socket buffer on both sides cannot
//! deadlock a large pipeline.
//!
//! Echoes are matched to messages in order, because one WebSocket delivers messages in
//! the order they were sent and an echo server answers in that order.

mod connection;
mod report;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use pylon_ws::{Config, Error, FullPolicy, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use report::{EchoReport, ErrorCounts};

use crate::dial::{self, Pool, Transport};
use crate::latency::{LatencyRecorder, LatencySummary};
use crate::payload::Payload;
use crate::progress::Progress;
use connection::{Plan, Schedule};

/// Time between the end of the connect phase and the first send, so that every
/// connection task is spawned and waiting when the load starts.
const START_DELAY: Duration = Duration::from_millis(20);

/// Time a connection waits for its outstanding echoes after it stopped sending. Echoes
/// still missing then count as unanswered.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Messages an open-loop connection can queue unsent. A send that finds the queue full
/// counts as an error, because the server (or this client) does not keep up with the rate.
const OPEN_LOOP_QUEUE: usize = 1024;

/// Time allowed for each close handshake at the end of a run.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Extra time past the warmup and duration that the default hard timeout allows.
const TIMEOUT_SLACK: Duration = Duration::from_secs(30);

/// Default hard timeout of a run bounded by a message count.
const MESSAGES_TIMEOUT: Duration = Duration::from_secs(600);

/// When a run stops sending.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stop {
    /// After this many measured messages in total, split evenly over the connections.
    Messages(u64),
    /// After this long, counted from the end of the warmup.
    Duration(Duration),
}

/// Settings of an echo run.
#[derive(Clone, Debug)]
pub struct EchoConfig {
    /// `ws://` or `wss://` URL of the echo endpoint.
    pub url: String,
    /// HTTP version, TLS trust and connection sharing.
    pub transport: Transport,
    /// Number of WebSocket connections.
    pub connections: usize,
    /// Payload size of each message, in bytes.
    pub size: usize,
    /// Send text messages instead of binary ones.
    pub text: bool,
    /// Offer permessage-deflate when connecting. Off by default, so that the benchmark
    /// measures framing, not compression.
    pub compress: bool,
    /// When the run stops sending.
    pub stop: Stop,
    /// Open-loop target rate in messages per second over all connections. `None` runs
    /// closed loop.
    pub rate: Option<f64>,
    /// Messages in flight per connection in closed loop.
    pub pipeline: usize,
    /// Time to run before measuring. Messages sent during it are not counted.
    pub warmup: Duration,
    /// Maximum number of connections being opened at the same time.
    pub connect_concurrency: usize,
    /// Hard limit on the whole run, connect phase included. `None` allows the warmup and
    /// duration plus 30 seconds, or 600 seconds for a message count.
    pub timeout: Option<Duration>,
}

impl EchoConfig {
    /// Creates a closed-loop configuration over HTTP/1.1 with one message in flight per
    /// connection, binary payloads, no warmup and at most 64 concurrent connects.
    pub fn new(url: impl Into<String>, connections: usize, size: usize, stop: Stop) -> Self {
        EchoConfig {
            url: url.into(),
            transport: Transport::default(),
            connections,
            size,
            text: false,
            compress: false,
            stop,
            rate: None,
            pipeline: 1,
            warmup: Duration::ZERO,
            connect_concurrency: 64,
            timeout: None,
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.transport.validate(&self.url)?;
        if self.connections == 0 {
            anyhow::bail!("invalid connection count 0: expected at least 1");
        }
        if self.pipeline == 0 {
            anyhow::bail!("invalid pipeline depth 0: expected at least 1");
        }
        if self.connect_concurrency == 0 {
            anyhow::bail!("invalid connect concurrency 0: expected at least 1");
        }
        if let Some(rate) = self.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            anyhow::bail!("invalid rate {rate}: expected a positive number of messages per second");
        }
        match self.stop {
            Stop::Messages(0) => anyhow::bail!("invalid message count 0: expected at least 1"),
            Stop::Duration(duration) if duration.is_zero() => {
                anyhow::bail!("invalid duration 0: expected a positive number of seconds")
            }
            _ => Ok(()),
        }
    }

    /// Returns the hard limit on the whole run.
    pub fn hard_timeout(&self) -> Duration {
        self.timeout.unwrap_or(match self.stop {
            Stop::Duration(duration) => self.warmup + duration + TIMEOUT_SLACK,
            Stop::Messages(_) => MESSAGES_TIMEOUT,
        })
    }

    /// Returns the settings of each client connection.
    fn ws_config(&self) -> Config {
        let mut config = Config {
            // The benchmark traffic keeps every connection busy, and a ping would only
            // add a frame to the measured stream.
            ping_interval: None,
            close_timeout: CLOSE_TIMEOUT,
            outbound_capacity: match self.rate {
                Some(_) => OPEN_LOOP_QUEUE,
                None => self.pipeline,
            },
            full_policy: FullPolicy::Drop,
            ..Config::default()
        };
        let limits = &mut config.proto.limits;
        limits.max_message_size = limits.max_message_size.max(self.size);
        limits.max_frame_size = limits.max_frame_size.max(self.size);
        config
    }
}

/// Runs the echo benchmark and returns its report.
///
/// # Errors
///
/// Fails for an invalid configuration, when any connection cannot be opened (with the
/// cause and a hint, such as a refused connection), or when the connect phase outlasts
/// the hard timeout. A run that hits the hard timeout later returns a report with
/// `timed_out` set.
pub async fn run(config: &EchoConfig, progress: Arc<Progress>) -> anyhow::Result<EchoReport> {
    config.validate()?;
    let hard_deadline = Instant::now() + config.hard_timeout();
    let ws_config = config.ws_config();

    // A ws:// URL over HTTP/1.1 keeps its WebSockets over a bare `TcpStream`, so that
    // this CPU benchmark adds no per-message dispatch to that transport.
    if config.transport.is_plain_http1(&config.url) {
        let url: Arc<str> = Arc::from(config.url.as_str());
        let compress = config.compress;
        let connect_config = ws_config.clone();
        let dial = move |_index| {
            let url = Arc::clone(&url);
            let connect_config = connect_config.clone();
            async move { dial::connect(&url, &connect_config, compress).await }
        };
        return run_with(config, dial, progress, hard_deadline).await;
    }
    let pool = Pool::new(
        &config.url,
        &config.transport,
        &ws_config,
        config.compress,
        config.connections,
    );
    let dial = move |index| {
        let pool = pool.clone();
        async move { pool.connect(index).await }
    };
    run_with(config, dial, progress, hard_deadline).await
}

/// Opens every connection with `dial` and runs the load on them.
async fn run_with<S, D, F>(
    config: &EchoConfig,
    dial: D,
    progress: Arc<Progress>,
    hard_deadline: Instant,
) -> anyhow::Result<EchoReport>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    D: Fn(usize) -> F,
    F: Future<Output = Result<WebSocket<S>, Error>> + Send + 'static,
{
    let (sockets, connect_histogram) =
        tokio::time::timeout_at(hard_deadline, open_all(config, dial, &progress))
            .await
            .with_context(|| {
                format!(
                    "opening {} connections to {} took longer than the hard timeout of {:?}",
                    config.connections,
                    config.url,
                    config.hard_timeout()
                )
            })??;

    let start = Instant::now() + START_DELAY;
    let measure_from = start + config.warmup;
    let recorder = Arc::new(LatencyRecorder::new((config.connections / 8).clamp(1, 64)));
    let payload = Payload::new(config.size, config.text);

    let mut tasks = JoinSet::new();
    for (index, ws) in sockets.into_iter().enumerate() {
        let plan = plan_for(config, index, start, measure_from, hard_deadline);
        let payload = payload.clone();
        let recorder = Arc::clone(&recorder);
        let progress = Arc::clone(&progress);
        tasks.spawn(async move {
            let batch = recorder.batch(index);
            connection::run(ws, plan, payload, batch, &progress).await
        });
    }

    let mut outcomes = Vec::with_capacity(config.connections);
    while let Some(joined) = tasks.join_next().await {
        outcomes.push(joined.context("echo connection task panicked")?);
    }

    let measure_end = outcomes
        .iter()
        .filter_map(|outcome| outcome.last_echo)
        .max()
        .unwrap_or_else(Instant::now);
    let duration = measure_end.saturating_duration_since(measure_from);
    Ok(EchoReport::new(
        config,
        &outcomes,
        duration,
        LatencySummary::from_histogram(&recorder.merged()),
        LatencySummary::from_histogram(&connect_histogram),
    ))
}

/// Builds the send plan of connection `index`.
fn plan_for(
    config: &EchoConfig,
    index: usize,
    start: Instant,
    measure_from: Instant,
    hard_deadline: Instant,
) -> Plan {
    let connections = config.connections as u64;
    let quota = match config.stop {
        Stop::Messages(total) => {
            let extra = u64::from((index as u64) < total % connections);
            Some(total / connections + extra)
        }
        Stop::Duration(_) => None,
    };
    let send_until = match config.stop {
        Stop::Duration(duration) => Some(measure_from + duration),
        Stop::Messages(_) => None,
    };
    let schedule = match config.rate {
        None => Schedule::Closed {
            pipeline: config.pipeline,
        },
        Some(rate) => {
            // Each connection sends at rate / connections, and connection i starts i / rate
            // seconds in, so that the sends of all connections interleave evenly.
            let period = Duration::from_secs_f64(config.connections as f64 / rate);
            let offset = Duration::from_secs_f64(index as f64 / rate);
            Schedule::Open {
                first: start + offset,
                period,
            }
        }
    };
    Plan {
        start,
        measure_from,
        send_until,
        quota,
        schedule,
        drain_timeout: DRAIN_TIMEOUT,
        hard_deadline,
    }
}

/// Opens every connection with `dial`, at most `connect_concurrency` at a time. Returns
/// them in index order with a histogram of connect times in nanoseconds.
async fn open_all<S, D, F>(
    config: &EchoConfig,
    dial: D,
    progress: &Progress,
) -> anyhow::Result<(Vec<WebSocket<S>>, Histogram<u64>)>
where
    S: Send + 'static,
    D: Fn(usize) -> F,
    F: Future<Output = Result<WebSocket<S>, Error>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(config.connect_concurrency));
    let mut tasks = JoinSet::new();
    for index in 0..config.connections {
        let permits = Arc::clone(&permits);
        let connect = dial(index);
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let started = Instant::now();
            let result = connect.await;
            (index, result, started.elapsed())
        });
    }

    let recorder = LatencyRecorder::new(1);
    let mut batch = recorder.batch(0);
    let mut opened = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (index, result, elapsed) = joined.context("connect task panicked")?;
        match result {
            Ok(ws) => {
                progress.add_connected();
                batch.record(elapsed);
                opened.insert(index, ws);
            }
            Err(err) => {
                progress.add_failed();
                // Dropping the JoinSet aborts the connects still running.
                anyhow::bail!(
                    "{} (connection {} of {})",
                    dial::describe_failure(&err, &config.url),
                    index + 1,
                    config.connections
                );
            }
        }
    }
    drop(batch);
    Ok((opened.into_values().collect(), recorder.merged()))
}

//! Connection capacity benchmark: opens many idle WebSockets, keeps them open with
//! keep-alive pings, and measures connect latency and the server's resident memory per connection.
//!
//! Each connection takes one file descriptor in this process and one in the server. A
//! process on Linux may have at most `ulimit -n` open files, so for more connections
//! than that, run several `pylon bench connections` processes at once, each with its own
//! `--count` below the limit. Past about 28,000 connections to one server address, also
//! give each process its own source addresses (`--source-ips 127.0.0.2,127.0.0.3`),
//! because the kernel's ephemeral ports (32768-60999 by default) are per source address.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pylon_ws::{CloseCode, Config, Error, Message, WebSocket};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::dial::{self, Endpoint, Pool, Transport};
use crate::latency::{LatencyRecorder, LatencySummary};
use crate::proc;
use crate::progress::Progress;

/// File descriptors kept free for the runtime, stdio and the procfs reads.
const FD_RESERVE: u64 = 64;

/// Time allowed for each close handshake at the end of the hold.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Extra time past the hold that the default hard timeout allows for connecting and
/// closing.
const TIMEOUT_SLACK: Duration = Duration::from_secs(120);

/// Settings of a connection capacity run.
#[derive(Clone, Debug)]
pub struct ConnectionsConfig {
    /// `ws://` or `wss://` URL of a WebSocket endpoint that keeps idle connections open,
    /// such as `/ws/echo`.
    pub url: String,
    /// HTTP version, TLS trust and connection sharing.
    pub transport: Transport,
    /// Number of connections to open.
    pub count: usize,
    /// Time to hold the connections open once all connects finished.
    pub hold: Duration,
    /// Time without any frame from the server after which a connection sends a ping.
    /// `None` sends no pings.
    pub ping_interval: Option<Duration>,
    /// Source addresses to bind, assigned to connections in turn. Empty leaves the
    /// choice to the kernel. Only for `ws://` URLs over HTTP/1.1.
    pub source_ips: Vec<IpAddr>,
    /// Maximum number of connections being opened at the same time.
    pub connect_concurrency: usize,
    /// Process id of the server, to read its resident memory from `/proc`.
    pub server_pid: Option<u32>,
    /// Connections opened before the memory baseline is read and held open with the
    /// measured ones. The measured growth then leaves out what a server allocates once,
    /// such as code pages of the executable read in on first use, lazily built tables and
    /// the peak of concurrent handshakes. Because they stay open, the measured connections
    /// cannot reuse their memory. 0 reads the baseline from a server that has not served
    /// yet.
    pub warmup_connections: usize,
    /// Time to wait after the last connect before reading the server's memory, so that
    /// the server finishes setting up the last connections.
    pub settle: Duration,
    /// Hard limit on the whole run. `None` allows the hold plus 120 seconds.
    pub timeout: Option<Duration>,
    /// Offer permessage-deflate when connecting. Off by default.
    pub compress: bool,
}

impl ConnectionsConfig {
    /// Creates a configuration over HTTP/1.1 that holds for 10 seconds with pings every 5
    /// seconds, at most 64 concurrent connects and 1 second of settling.
    pub fn new(url: impl Into<String>, count: usize) -> Self {
        ConnectionsConfig {
            url: url.into(),
            transport: Transport::default(),
            count,
            hold: Duration::from_secs(10),
            ping_interval: Some(Duration::from_secs(5)),
            source_ips: Vec::new(),
            connect_concurrency: 64,
            server_pid: None,
            warmup_connections: 0,
            settle: Duration::from_secs(1),
            timeout: None,
            compress: false,
        }
    }

    /// Returns the hard limit on the whole run.
    pub fn hard_timeout(&self) -> Duration {
        self.timeout.unwrap_or(self.hold + TIMEOUT_SLACK)
    }

    fn validate(&self) -> anyhow::Result<()> {
        self.transport.validate(&self.url)?;
        if !self.source_ips.is_empty() && !self.transport.is_plain_http1(&self.url) {
            anyhow::bail!(
                "--source-ips works only for ws:// URLs over HTTP/1.1, not for {} over {}; \
                 drop --source-ips",
                self.url,
                self.transport.label(&self.url)
            );
        }
        if self.count == 0 {
            anyhow::bail!("invalid connection count 0: expected at least 1");
        }
        if self.connect_concurrency == 0 {
            anyhow::bail!("invalid connect concurrency 0: expected at least 1");
        }
        if let Some(limit) = proc::open_files_limit()
            && (self.count + self.warmup_connections) as u64 + FD_RESERVE > limit
        {
            anyhow::bail!(
                "--count {} needs about {} open files, but this process may open {limit} \
                 (ulimit -n); run several processes with a smaller --count each, and give \
                 each its own --source-ips past 28000 connections in total",
                self.count,
                self.count as u64 + FD_RESERVE
            );
        }
        Ok(())
    }

    fn ws_config(&self) -> Config {
        Config {
            ping_interval: self.ping_interval,
            close_timeout: CLOSE_TIMEOUT,
            ..Config::default()
        }
    }
}

/// Result of a connection capacity run.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectionsReport {
    /// URL the connections were opened to.
    pub url: String,
    /// Transport of the WebSockets: `h1`, `h1+tls`, `h2`, `h2+tls` or `h3`.
    pub transport: String,
    /// WebSockets per HTTP/2 or HTTP/3 connection, `None` over HTTP/1.1.
    pub streams_per_connection: Option<usize>,
    /// Warm-up connections that opened before the memory baseline. They are held and
    /// closed with the measured ones, and count in `closed_early`.
    pub warmup_connections: usize,
    /// Connections requested.
    pub requested: usize,
    /// Connections opened.
    pub opened: usize,
    /// Connections that failed to open.
    pub failed: usize,
    /// Failed connects by cause, such as `"connection refused"`.
    pub failures: BTreeMap<String, u64>,
    /// Description of the first failed connect, if any.
    pub first_failure: Option<String>,
    /// Time to open each connection (TCP connect and WebSocket handshake, without the
    /// wait for a connect slot), in microseconds.
    pub connect_us: LatencySummary,
    /// Time from the first connect to the last one finishing, in seconds.
    pub connect_phase_secs: f64,
    /// Time the connections were held, in seconds.
    pub hold_secs: f64,
    /// Opened connections that ended during the hold.
    pub closed_early: u64,
    /// Description of the first early close, if any.
    pub first_close: Option<String>,
    /// Source addresses the connections were bound to; empty when the kernel chose.
    pub source_ips: Vec<IpAddr>,
    /// Server memory, present when a server process id was given.
    pub server_memory: Option<MemoryDelta>,
    /// Memory of this process, the client side of the connections.
    pub client_memory: Option<MemoryDelta>,
    /// The run hit its hard timeout before it finished.
    pub timed_out: bool,
}

/// Resident memory of a process before and after opening the connections.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct MemoryDelta {
    /// `VmRSS` before the first measured connect (after the warm-up connections opened),
    /// in bytes.
    pub rss_before_bytes: u64,
    /// `VmRSS` after all connects finished and the settle time passed, in bytes.
    pub rss_after_bytes: u64,
    /// `(rss_after_bytes - rss_before_bytes) / opened`, in bytes. It includes every
    /// allocation the process made meanwhile and the executable's code pages read in
    /// meanwhile, and can be negative if memory was returned to the system.
    pub bytes_per_connection: f64,
    /// `RssAnon` (resident heap, stacks and other private memory) before the first
    /// measured connect, in bytes.
    pub anon_before_bytes: u64,
    /// `RssAnon` after all connects finished and the settle time passed, in bytes.
    pub anon_after_bytes: u64,
    /// `(anon_after_bytes - anon_before_bytes) / opened`, in bytes: the growth without
    /// pages mapped from files, such as the executable's code.
    pub anon_bytes_per_connection: f64,
}

impl MemoryDelta {
    fn new(before: proc::Resident, after: proc::Resident, opened: usize) -> Self {
        let per_connection = |before: u64, after: u64| {
            if opened == 0 {
                return 0.0;
            }
            ((after as f64 - before as f64) / opened as f64).round()
        };
        MemoryDelta {
            rss_before_bytes: before.total,
            rss_after_bytes: after.total,
            bytes_per_connection: per_connection(before.total, after.total),
            anon_before_bytes: before.anon,
            anon_after_bytes: after.anon,
            anon_bytes_per_connection: per_connection(before.anon, after.anon),
        }
    }
}

/// Outcome of the connect phase.
struct Opened<S> {
    sockets: Vec<WebSocket<S>>,
    failures: BTreeMap<String, u64>,
    first_failure: Option<String>,
    connect_us: LatencySummary,
    elapsed: Duration,
}

/// Runs the connection capacity benchmark and returns its report.
///
/// # Errors
///
/// Fails for an invalid configuration, when the count exceeds this process's open-file
/// limit, when the URL cannot be resolved for `source_ips`, or when the server's memory
/// cannot be read from `/proc`. Failed connects do not fail the run: they are counted
/// in the report.
pub async fn run(
    config: &ConnectionsConfig,
    progress: Arc<Progress>,
) -> anyhow::Result<ConnectionsReport> {
    config.validate()?;
    let hard_deadline = Instant::now() + config.hard_timeout();
    if config.transport.is_plain_http1(&config.url) {
        let endpoint = match config.source_ips.is_empty() {
            true => None,
            false => Some(Arc::new(Endpoint::resolve(&config.url).await?)),
        };
        let url: Arc<str> = Arc::from(config.url.as_str());
        let ws_config = config.ws_config();
        let compress = config.compress;
        let source_ips = config.source_ips.clone();
        let dial = move |index: usize| {
            let url = Arc::clone(&url);
            let ws_config = ws_config.clone();
            // Connection i binds source address i modulo the number of source addresses.
            let source = endpoint
                .clone()
                .map(|endpoint| (endpoint, source_ips[index % source_ips.len()]));
            async move {
                match source {
                    Some((endpoint, ip)) => {
                        dial::connect_from(&endpoint, ip, &ws_config, compress).await
                    }
                    None => dial::connect(&url, &ws_config, compress).await,
                }
            }
        };
        return run_with(config, dial, progress, hard_deadline).await;
    }
    let pool = Pool::new(
        &config.url,
        &config.transport,
        &config.ws_config(),
        config.compress,
        config.count,
    );
    let dial = move |index| {
        let pool = pool.clone();
        async move { pool.connect(index).await }
    };
    run_with(config, dial, progress, hard_deadline).await
}

/// Opens the connections with `dial`, measures, holds and closes them.
async fn run_with<S, D, F>(
    config: &ConnectionsConfig,
    dial: D,
    progress: Arc<Progress>,
    hard_deadline: Instant,
) -> anyhow::Result<ConnectionsReport>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    D: Fn(usize) -> F,
    F: Future<Output = Result<WebSocket<S>, Error>> + Send + 'static,
{
    let warmup = warm_up(config, &dial, hard_deadline).await?;
    let warmup_count = warmup.len();
    let server_before = config
        .server_pid
        .map(|pid| proc::resident(Some(pid)))
        .transpose()?;
    let client_before = proc::resident(None).ok();

    let indexes = warmup_count..warmup_count + config.count;
    let opened = open_all(config, &dial, indexes, &progress);
    let opened = tokio::time::timeout_at(hard_deadline, opened)
        .await
        .with_context(|| {
            format!(
                "opening {} connections to {} took longer than the hard timeout of {:?}",
                config.count,
                config.url,
                config.hard_timeout()
            )
        })??;

    tokio::time::sleep(config.settle).await;
    let count = opened.sockets.len();
    let server_memory = match (config.server_pid, server_before) {
        (Some(pid), Some(before)) => {
            let after = proc::resident(Some(pid))?;
            Some(MemoryDelta::new(before, after, count))
        }
        _ => None,
    };
    let client_memory = client_before
        .zip(proc::resident(None).ok())
        .map(|(before, after)| MemoryDelta::new(before, after, count));

    let hold_started = Instant::now();
    let hold_end = (hold_started + config.hold).min(hard_deadline);
    let mut sockets = opened.sockets;
    sockets.extend(warmup);
    let (closed_early, first_close) = hold_all(sockets, hold_end).await;

    Ok(ConnectionsReport {
        url: config.url.clone(),
        transport: config.transport.label(&config.url),
        streams_per_connection: config
            .transport
            .shares_connections()
            .then_some(config.transport.streams_per_connection.min(config.count)),
        warmup_connections: warmup_count,
        requested: config.count,
        opened: count,
        failed: config.count - count,
        failures: opened.failures,
        first_failure: opened.first_failure,
        connect_us: opened.connect_us,
        connect_phase_secs: round_millis(opened.elapsed),
        hold_secs: round_millis(hold_end.saturating_duration_since(hold_started)),
        closed_early,
        first_close,
        source_ips: config.source_ips.clone(),
        server_memory,
        client_memory,
        timed_out: hold_end < hold_started + config.hold,
    })
}

/// Opens `config.warmup_connections` connections with `dial` and waits the settle time.
/// Returns the connections that opened.
async fn warm_up<S, D, F>(
    config: &ConnectionsConfig,
    dial: &D,
    hard_deadline: Instant,
) -> anyhow::Result<Vec<WebSocket<S>>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    D: Fn(usize) -> F,
    F: Future<Output = Result<WebSocket<S>, Error>> + Send + 'static,
{
    if config.warmup_connections == 0 {
        return Ok(Vec::new());
    }
    // The warm-up takes no part in the progress bar.
    let progress = Progress::new();
    let opened = open_all(config, dial, 0..config.warmup_connections, &progress);
    let opened = tokio::time::timeout_at(hard_deadline, opened)
        .await
        .context(
            "opening the warm-up connections timed out at the hard timeout; raise --timeout",
        )??;
    if let Some(failure) = &opened.first_failure {
        tracing::warn!(
            failed = config.warmup_connections - opened.sockets.len(),
            %failure,
            "warm-up connections failed to open"
        );
    }
    tracing::debug!(count = opened.sockets.len(), "warm-up connections opened");
    tokio::time::sleep(config.settle).await;
    Ok(opened.sockets)
}

fn round_millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1_000.0).round() / 1_000.0
}

/// Opens one connection with `dial` for each of `indexes`, at most `connect_concurrency`
/// at a time.
async fn open_all<S, D, F>(
    config: &ConnectionsConfig,
    dial: &D,
    indexes: Range<usize>,
    progress: &Progress,
) -> anyhow::Result<Opened<S>>
where
    S: Send + 'static,
    D: Fn(usize) -> F,
    F: Future<Output = Result<WebSocket<S>, Error>> + Send + 'static,
{
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(config.connect_concurrency));
    let mut tasks = JoinSet::new();
    let count = indexes.len();
    for index in indexes {
        let permits = Arc::clone(&permits);
        let connect = dial(index);
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            let connect_started = Instant::now();
            let result = connect.await;
            (result, connect_started.elapsed())
        });
    }

    let recorder = LatencyRecorder::new(1);
    let mut batch = recorder.batch(0);
    let mut sockets = Vec::with_capacity(count);
    let mut failures = BTreeMap::new();
    let mut first_failure = None;
    while let Some(joined) = tasks.join_next().await {
        let (result, elapsed) = joined.context("connect task panicked")?;
        match result {
            Ok(ws) => {
                progress.add_connected();
                batch.record(elapsed);
                sockets.push(ws);
            }
            Err(err) => {
                progress.add_failed();
                *failures
                    .entry(dial::failure_kind(&err).to_owned())
                    .or_insert(0) += 1;
                if first_failure.is_none() {
                    let text = dial::describe_failure(&err, &config.url);
                    tracing::warn!(error = %text, "connect failed");
                    first_failure = Some(text);
                }
            }
        }
    }
    drop(batch);
    Ok(Opened {
        sockets,
        failures,
        first_failure,
        connect_us: LatencySummary::from_histogram(&recorder.merged()),
        elapsed: started.elapsed(),
    })
}

/// Keeps every connection polled (so that pings and pongs flow) until `hold_end`, then
/// closes them. Returns the number that ended earlier, with the first reason.
async fn hold_all<S>(sockets: Vec<WebSocket<S>>, hold_end: Instant) -> (u64, Option<String>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut tasks = JoinSet::new();
    for ws in sockets {
        tasks.spawn(hold_one(ws, hold_end));
    }
    let mut closed_early = 0;
    let mut first_close = None;
    while let Some(joined) = tasks.join_next().await {
        let early = match joined {
            Ok(early) => early,
            Err(err) => Some(format!("connection task failed: {err}")),
        };
        if let Some(reason) = early {
            closed_early += 1;
            first_close.get_or_insert(reason);
        }
    }
    (closed_early, first_close)
}

/// Holds one connection until `hold_end` and closes it. Returns why it ended early, if
/// it did.
async fn hold_one<S>(mut ws: WebSocket<S>, hold_end: Instant) -> Option<String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        tokio::select! {
            item = ws.recv() => match item {
                Some(Ok(Message::Close(frame))) => {
                    return Some(format!("server closed the connection: {frame:?}"));
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Some(format!("connection failed: {err}")),
                None => return Some("connection ended".to_owned()),
            },
            () = tokio::time::sleep_until(hold_end) => break,
        }
    }
    if let Err(err) = ws.close(CloseCode::NORMAL, "benchmark finished").await {
        tracing::debug!(error = %err, "close handshake after the hold failed");
    }
    None
}

impl ConnectionsReport {
    /// Serializes the report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("the report contains only serializable values")
    }
}

impl std::fmt::Display for ConnectionsReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "connections {} over {}", self.url, self.transport)?;
        writeln!(
            f,
            "{:<14}{} of {} ({} failed)",
            "opened", self.opened, self.requested, self.failed
        )?;
        for (kind, count) in &self.failures {
            writeln!(f, "{:<14}{count} {kind}", "")?;
        }

        writeln!(f, "{:<14}{:.3} s", "connect phase", self.connect_phase_secs)?;
        self.connect_us.write_table(f, "connect (µs)")?;
        writeln!(
            f,
            "{:<14}{:.3} s, {} closed early",
            "held", self.hold_secs, self.closed_early
        )?;

        if self.warmup_connections > 0 {
            writeln!(
                f,
                "{:<14}{} connections opened before the memory baseline, held with the rest",
                "warm-up", self.warmup_connections
            )?;
        }
        if !self.source_ips.is_empty() {
            let ips: Vec<String> = self.source_ips.iter().map(IpAddr::to_string).collect();
            writeln!(f, "{:<14}{}", "source ips", ips.join(","))?;
        }
        for (name, memory) in [
            ("server", &self.server_memory),
            ("client", &self.client_memory),
        ] {
            let Some(memory) = memory else {
                continue;
            };
            for (kind, before, after, per_connection) in [
                (
                    "VmRSS",
                    memory.rss_before_bytes,
                    memory.rss_after_bytes,
                    memory.bytes_per_connection,
                ),
                (
                    "RssAnon",
                    memory.anon_before_bytes,
                    memory.anon_after_bytes,
                    memory.anon_bytes_per_connection,
                ),
            ] {
                writeln!(
                    f,
                    "{:<16}{:.1} MiB -> {:.1} MiB, {per_connection:.0} B per connection",
                    format!("{name} {kind}"),
                    before as f64 / 1_048_576.0,
                    after as f64 / 1_048_576.0,
                )?;
            }
        }

        if self.timed_out {
            writeln!(f, "the run hit its hard timeout; the hold was cut short")?;
        }
        if let Some(failure) = &self.first_failure {
            writeln!(f, "{:<14}{failure}", "first failure")?;
        }
        if let Some(close) = &self.first_close {
            writeln!(f, "{:<14}{close}", "first close")?;
        }
        Ok(())
    }
}

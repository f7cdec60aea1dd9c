//! `pylon bench`: load generation against a running node, with the benchmarks of
//! `pylon_bench`.

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use pylon_bench::connections::{self, ConnectionsConfig};
use pylon_bench::echo::{self, EchoConfig, Stop};
use pylon_bench::{DEFAULT_STREAMS_PER_CONNECTION, Progress, Transport};

use crate::client::Http;

/// Options of `pylon bench`.
#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    benchmark: Benchmark,
}

#[derive(Subcommand, Debug)]
enum Benchmark {
    /// Measure echo throughput and round-trip latency (closed loop, or open loop with
    /// --rate).
    Echo(EchoArgs),
    /// Open many idle WebSockets, hold them, and measure connect latency and server memory
    /// per connection.
    Connections(ConnectionsArgs),
}

/// Options shared by every benchmark.
#[derive(Args, Debug)]
struct CommonArgs {
    /// Worker threads of the load generator's tokio runtime [default: CPUs available to
    /// this process].
    #[arg(long)]
    threads: Option<usize>,

    /// Maximum number of connections being opened at the same time.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,

    /// Hard limit on the whole run, in seconds [default: echo: warmup + duration + 30,
    /// or 600 with --messages; connections: hold + 120].
    #[arg(long)]
    timeout: Option<f64>,

    /// Print one JSON object to stdout instead of a table, and no progress bar.
    #[arg(long)]
    json: bool,

    /// Offer permessage-deflate on every connection. Without it the benchmark offers no
    /// compression, so that it measures framing rather than zlib.
    #[arg(long)]
    compress: bool,
}

/// Options that choose how the WebSockets reach the server.
#[derive(Args, Debug)]
struct TransportArgs {
    /// HTTP version that carries each WebSocket: 1.1 (Upgrade, one TCP connection per
    /// WebSocket), 2 (extended CONNECT, with ALPN h2 for wss:// and prior knowledge for
    /// ws://) or 3 (extended CONNECT over QUIC, wss:// only).
    #[arg(long = "http", value_enum, default_value = "1.1")]
    http: Http,

    /// WebSockets that share one HTTP/2 or HTTP/3 connection. Connection i of the run
    /// goes over shared connection i / N. Ignored over HTTP/1.1. Keep it at or below the
    /// server's stream limit (pylon serve: 128 over HTTP/2, 100 over HTTP/3), because
    /// WebSockets past it wait for a free stream and fail at the 10 s handshake timeout.
    #[arg(long, default_value_t = DEFAULT_STREAMS_PER_CONNECTION)]
    streams_per_connection: usize,

    /// PEM file with extra CA certificates to trust for wss://, such as the cert.pem of a
    /// server started with `pylon cert`.
    #[arg(long)]
    ca_file: Option<PathBuf>,

    /// Accept any server certificate for wss://, without verification, as a server
    /// started with --tls-self-signed needs. Use it only against a development server.
    #[arg(long)]
    insecure: bool,
}

impl TransportArgs {
    fn transport(&self) -> anyhow::Result<Transport> {
        let mut transport = Transport {
            http_version: self.http.version(),
            streams_per_connection: self.streams_per_connection,
            ..Transport::default()
        };
        if let Some(path) = &self.ca_file {
            transport.tls.add_ca_pem_file(path)?;
        }
        transport.tls.dangerous_accept_any_certificate = self.insecure;
        Ok(transport)
    }
}

/// Options of `pylon bench echo`.
#[derive(Args, Debug)]
struct EchoArgs {
    /// URL of the echo endpoint: ws://HOST:PORT/PATH or wss://HOST:PORT/PATH.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws/echo")]
    url: String,

    /// Number of WebSocket connections.
    #[arg(long, default_value_t = 1)]
    connections: usize,

    /// Payload size of each message, in bytes.
    #[arg(long, default_value_t = 16)]
    size: usize,

    /// Total number of measured messages, split evenly over the connections.
    #[arg(
        long,
        required_unless_present = "duration",
        conflicts_with = "duration"
    )]
    messages: Option<u64>,

    /// Measured run time in seconds, after the warmup.
    #[arg(long)]
    duration: Option<f64>,

    /// Open loop: send this many messages per second in total, on a fixed schedule
    /// whatever the replies, and measure latency from the scheduled send times.
    #[arg(long, conflicts_with = "pipeline")]
    rate: Option<f64>,

    /// Closed loop: messages in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,

    /// Send text messages (ASCII) instead of binary ones.
    #[arg(long)]
    text: bool,

    /// Seconds to run before measuring; messages sent meanwhile are not counted.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,

    #[command(flatten)]
    transport: TransportArgs,

    #[command(flatten)]
    common: CommonArgs,
}

/// Options of `pylon bench connections`.
#[derive(Args, Debug)]
struct ConnectionsArgs {
    /// URL of a WebSocket endpoint that keeps idle connections open: ws:// or wss://.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws/echo")]
    url: String,

    /// Number of connections to open. Each takes one open file in this process, so stay
    /// below `ulimit -n` and split larger counts over several processes.
    #[arg(long)]
    count: usize,

    /// Seconds to hold the connections open after all connects finished.
    #[arg(long, default_value_t = 10.0)]
    hold: f64,

    /// Seconds without a frame from the server after which a connection sends a ping
    /// (0 turns pings off).
    #[arg(long, default_value_t = 5.0)]
    ping_interval: f64,

    /// Comma-separated source addresses to bind, such as 127.0.0.1,127.0.0.2, used by
    /// the connections in turn. Each address has its own ephemeral port range, about
    /// 28000 ports by default. Only for ws:// over HTTP/1.1.
    #[arg(long, value_delimiter = ',')]
    source_ips: Vec<IpAddr>,

    /// Process id of the server, to report its resident memory (VmRSS, and RssAnon
    /// without the pages mapped from files) per connection.
    #[arg(long)]
    server_pid: Option<u32>,

    /// Connections to open before the server's memory baseline is read. They stay open
    /// with the measured ones, whose growth per connection then leaves out what the server
    /// allocates once, such as code pages read in on first use and the peak of concurrent
    /// handshakes.
    #[arg(long, default_value_t = 0)]
    warmup_connections: usize,

    #[command(flatten)]
    transport: TransportArgs,

    #[command(flatten)]
    common: CommonArgs,
}

/// Runs a benchmark on its own multi-thread runtime.
pub(crate) fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.benchmark {
        Benchmark::Echo(args) => run_echo(args),
        Benchmark::Connections(args) => run_connections(args),
    }
}

fn run_echo(args: EchoArgs) -> anyhow::Result<()> {
    let stop = match (args.messages, args.duration) {
        (Some(messages), _) => Stop::Messages(messages),
        (None, Some(duration)) => Stop::Duration(seconds("--duration", duration)?),
        (None, None) => anyhow::bail!("missing --messages N or --duration SECS"),
    };
    let mut config = EchoConfig::new(args.url, args.connections, args.size, stop);
    config.transport = args.transport.transport()?;
    config.text = args.text;
    config.compress = args.common.compress;
    config.rate = args.rate;
    config.pipeline = args.pipeline;
    config.warmup = seconds("--warmup", args.warmup)?;
    config.connect_concurrency = args.common.connect_concurrency;
    config.timeout = optional_seconds("--timeout", args.common.timeout)?;

    let runtime = build_runtime(args.common.threads)?;
    let progress = Arc::new(Progress::new());
    let bar = echo_progress_bar(&config, args.common.json);
    let report = runtime.block_on(async {
        let display = tokio::spawn(update_echo_bar(
            bar.clone(),
            Arc::clone(&progress),
            config.clone(),
        ));
        let report = echo::run(&config, Arc::clone(&progress)).await;
        display.abort();
        report
    });
    bar.finish_and_clear();
    let report = report?;

    if args.common.json {
        write_stdout(&format!("{}\n", report.to_json()))?;
    } else {
        write_stdout(&report.to_string())?;
    }
    if report.timed_out {
        anyhow::bail!(
            "the run hit its hard timeout of {:?}; raise --timeout",
            config.hard_timeout()
        );
    }
    Ok(())
}

fn run_connections(args: ConnectionsArgs) -> anyhow::Result<()> {
    let mut config = ConnectionsConfig::new(args.url, args.count);
    config.transport = args.transport.transport()?;
    config.hold = seconds("--hold", args.hold)?;
    let ping_interval = seconds("--ping-interval", args.ping_interval)?;
    config.ping_interval = (!ping_interval.is_zero()).then_some(ping_interval);
    config.source_ips = args.source_ips;
    config.server_pid = args.server_pid;
    config.warmup_connections = args.warmup_connections;
    config.connect_concurrency = args.common.connect_concurrency;
    config.timeout = optional_seconds("--timeout", args.common.timeout)?;
    config.compress = args.common.compress;

    let runtime = build_runtime(args.common.threads)?;
    let progress = Arc::new(Progress::new());
    let bar = new_bar(config.count as u64, args.common.json);
    let report = runtime.block_on(async {
        let display = tokio::spawn(update_connections_bar(bar.clone(), Arc::clone(&progress)));
        let report = connections::run(&config, Arc::clone(&progress)).await;
        display.abort();
        report
    });
    bar.finish_and_clear();
    let report = report?;

    if args.common.json {
        write_stdout(&format!("{}\n", report.to_json()))?;
    } else {
        write_stdout(&report.to_string())?;
    }
    if report.opened == 0 {
        anyhow::bail!(
            "no connection to {} opened: {}",
            report.url,
            report
                .first_failure
                .as_deref()
                .unwrap_or("no error recorded")
        );
    }
    Ok(())
}

fn build_runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let threads = match threads {
        Some(0) => anyhow::bail!("invalid --threads 0: expected at least 1"),
        Some(threads) => threads,
        None => std::thread::available_parallelism().map_or(1, usize::from),
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("failed to start the tokio runtime")
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| {
        format!("invalid {flag} {value}: expected a non-negative number of seconds")
    })
}

fn optional_seconds(flag: &str, value: Option<f64>) -> anyhow::Result<Option<Duration>> {
    value.map(|value| seconds(flag, value)).transpose()
}

/// Creates a progress bar on stderr, hidden when stderr is not a terminal or the output
/// is JSON.
fn new_bar(length: u64, json: bool) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(length);
    let style = ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
        .expect("constant progress template is valid")
        .progress_chars("=> ");
    bar.set_style(style);
    bar
}

/// Creates the echo progress bar. It counts measured messages for a run bounded by a
/// message count, and milliseconds for a run bounded by time.
fn echo_progress_bar(config: &EchoConfig, json: bool) -> ProgressBar {
    let length = match config.stop {
        Stop::Messages(messages) => messages,
        Stop::Duration(duration) => (config.warmup + duration).as_millis() as u64,
    };
    new_bar(length, json)
}

/// Refreshes the echo bar 10 times a second until aborted.
async fn update_echo_bar(bar: ProgressBar, progress: Arc<Progress>, config: EchoConfig) {
    let connections = config.connections as u64;
    let by_time = matches!(config.stop, Stop::Duration(_));
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let mut load_started = None;
    let mut last_messages = 0;
    loop {
        ticker.tick().await;
        let connected = progress.connected();
        if connected < connections {
            bar.set_message(format!("connecting {connected}/{connections}"));
            continue;
        }
        let started = *load_started.get_or_insert_with(tokio::time::Instant::now);
        let messages = progress.messages();
        let rate = (messages - last_messages) * 10;
        last_messages = messages;
        if by_time {
            bar.set_position(started.elapsed().as_millis() as u64);
        } else {
            bar.set_position(messages);
        }
        bar.set_message(format!(
            "{messages} msgs, {rate} msgs/s, {} errors",
            progress.errors()
        ));
    }
}

/// Refreshes the connections bar 10 times a second until aborted.
async fn update_connections_bar(bar: ProgressBar, progress: Arc<Progress>) {
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    loop {
        ticker.tick().await;
        let connected = progress.connected();
        let failed = progress.failed();
        bar.set_position(connected + failed);
        bar.set_message(format!("{connected} open, {failed} failed"));
    }
}

/// Writes a report to stdout. A closed pipe, as from `pylon bench ... | head`, ends the
/// output quietly instead of failing the run.
fn write_stdout(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(err).context("failed to write the report to stdout")
        }
        _ => Ok(()),
    }
}

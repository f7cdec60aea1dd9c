//! The `pylon` binary: runs a node (`pylon serve`), load-tests one (`pylon bench`) and
//! talks to a WebSocket endpoint (`pylon client`).

mod bench;
mod cert;
mod client;
mod metrics;
mod serve;
mod web;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// Pylon: a real-time backend with its own WebSocket stack.
#[derive(Parser, Debug)]
#[command(name = "pylon", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the chat, the echo endpoint, health checks and metrics.
    Serve(ServeArgs),
    /// Load-test a running node: echo throughput and latency, or idle connection capacity.
    Bench(bench::BenchArgs),
    /// Write a self-signed development certificate and key for localhost as PEM files.
    Cert(cert::CertArgs),
    /// Connect to a WebSocket URL, send each line of stdin and print each message received.
    Client(client::ClientArgs),
}

/// Options of `pylon serve`.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ServeArgs {
    /// Address and port to listen on for HTTP and WebSocket connections.
    #[arg(long, env = "PYLON_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,

    /// Directory for the chat history database. Defaults to
    /// $XDG_DATA_HOME/pylon, or ~/.local/share/pylon when XDG_DATA_HOME is unset.
    #[arg(long, env = "PYLON_DATA_DIR")]
    pub(crate) data_dir: Option<PathBuf>,

    /// Seconds to wait, after SIGTERM or Ctrl-C, for WebSockets to finish their close handshake.
    #[arg(long, env = "PYLON_DRAIN_TIMEOUT", default_value_t = 10.0)]
    pub(crate) drain_timeout: f64,

    /// Seconds between the server's keepalive pings on each WebSocket (0 turns pings off).
    #[arg(long, env = "PYLON_PING_INTERVAL", default_value_t = 30.0)]
    pub(crate) ping_interval: f64,

    /// Seconds to wait for any frame after a ping before closing the connection as dead.
    #[arg(long, env = "PYLON_PONG_TIMEOUT", default_value_t = 15.0)]
    pub(crate) pong_timeout: f64,

    /// Seconds a client gets to send a complete HTTP request head before it is dropped.
    #[arg(long, env = "PYLON_HANDSHAKE_TIMEOUT", default_value_t = 10.0)]
    pub(crate) handshake_timeout: f64,

    /// Largest WebSocket message accepted from a client, in bytes; a larger one closes the
    /// connection with 1009.
    #[arg(long, env = "PYLON_MAX_MESSAGE_SIZE", default_value_t = 1 << 20)]
    pub(crate) max_message_size: usize,

    /// Origin allowed to open WebSockets, such as https://chat.example.com (repeat the flag
    /// for several). Without it every origin is allowed; with it, other origins get 403.
    #[arg(
        long = "allow-origin",
        env = "PYLON_ALLOW_ORIGINS",
        value_delimiter = ','
    )]
    pub(crate) allow_origins: Vec<String>,

    /// Turn off permessage-deflate: offers of compression are declined and every WebSocket
    /// runs uncompressed.
    #[arg(long, env = "PYLON_NO_COMPRESSION")]
    pub(crate) no_compression: bool,

    /// Maximum window of the server's compressor, in bits (9 to 15). A smaller window uses
    /// less memory per connection and usually compresses less; zlib cannot compress with 8.
    #[arg(
        long,
        env = "PYLON_COMPRESSION_WINDOW_BITS",
        default_value_t = 15,
        value_parser = clap::value_parser!(u8).range(9..=15)
    )]
    pub(crate) compression_window_bits: u8,

    /// PEM file with the TLS certificate chain, leaf first. With --tls-key, the listener
    /// serves HTTPS and WSS instead of HTTP and WS. SIGHUP rereads both files.
    #[arg(long, env = "PYLON_TLS_CERT", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// PEM file with the private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "PYLON_TLS_KEY", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,

    /// Serve HTTPS and WSS with a certificate for localhost, 127.0.0.1 and ::1 generated
    /// at start and kept in memory only. Clients must skip verification or trust the
    /// SHA-256 fingerprint that is logged. For development only.
    #[arg(
        long,
        env = "PYLON_TLS_SELF_SIGNED",
        conflicts_with_all = ["tls_cert", "tls_key"]
    )]
    pub(crate) tls_self_signed: bool,

    /// Do not serve HTTP/3. Without this flag, a node with TLS also listens for QUIC on
    /// the UDP port of --listen and serves /ws/echo and /ws/chat over HTTP/3.
    #[arg(long, env = "PYLON_NO_HTTP3")]
    pub(crate) no_http3: bool,
}

impl ServeArgs {
    pub(crate) fn drain_timeout(&self) -> anyhow::Result<Duration> {
        seconds("--drain-timeout", self.drain_timeout)
    }

    pub(crate) fn ping_interval(&self) -> anyhow::Result<Option<Duration>> {
        let interval = seconds("--ping-interval", self.ping_interval)?;
        Ok((!interval.is_zero()).then_some(interval))
    }

    pub(crate) fn pong_timeout(&self) -> anyhow::Result<Duration> {
        seconds("--pong-timeout", self.pong_timeout)
    }

    pub(crate) fn handshake_timeout(&self) -> anyhow::Result<Duration> {
        seconds("--handshake-timeout", self.handshake_timeout)
    }

    /// Returns the data directory from the flag, or the per-user default.
    pub(crate) fn resolve_data_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(dir) = &self.data_dir {
            return Ok(dir.clone());
        }
        if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(xdg).join("pylon"));
        }
        let home = std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .context("no data directory: HOME and XDG_DATA_HOME are unset; pass --data-dir DIR")?;
        Ok(PathBuf::from(home).join(".local/share/pylon"))
    }
}

fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| {
        format!("invalid {flag} {value}: expected a non-negative number of seconds")
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The client's stdout and stderr belong to the conversation, so it logs only warnings.
    let default_level = match cli.command {
        Command::Client(_) => "warn",
        _ => "info",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("PYLON_LOG").unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let serve_args = match cli.command {
        Command::Serve(args) => args,
        // The benchmark builds its own runtime, sized by --threads.
        Command::Bench(args) => return bench::run(args),
        Command::Cert(args) => return cert::run(&args),
        Command::Client(args) => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("failed to start the tokio runtime")?;
            return runtime.block_on(client::run(args));
        }
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the tokio runtime")?;
    let result = runtime.block_on(serve::run(serve_args));
    // Connections still open after the drain are dropped here instead of holding up the exit.
    runtime.shutdown_timeout(Duration::from_millis(500));
    result
}

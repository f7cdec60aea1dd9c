//! `pylon client URL`: an interactive WebSocket client. Each line read from stdin is sent
//! as a message, and each message received is printed to stdout, one per line, so the
//! command also works in pipes and scripts. Status lines go to stderr.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use http::{HeaderName, HeaderValue};
use pylon_ws::client::{ClientConfig, HttpVersion, connect_any};
use pylon_ws::{CloseCode, Message, WebSocket};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// Bytes of a binary message that are printed, as hex, before the rest is elided.
const BINARY_PREVIEW: usize = 256;

/// Options of `pylon client`.
#[derive(clap::Args, Debug)]
pub(crate) struct ClientArgs {
    /// WebSocket URL to connect to: ws://HOST[:PORT]/PATH or wss://HOST[:PORT]/PATH.
    url: String,

    /// HTTP version that carries the WebSocket: 1.1 (Upgrade), 2 (extended CONNECT, with
    /// ALPN h2 for wss:// and prior knowledge for ws://) or 3 (extended CONNECT over QUIC,
    /// wss:// only).
    #[arg(long = "http", value_enum, default_value = "1.1")]
    http: Http,

    /// Subprotocol to offer, in preference order; repeat for several.
    #[arg(short = 'p', long = "protocol")]
    protocols: Vec<String>,

    /// Extra request header as "Name: value", such as an Origin or Authorization
    /// header; repeat for several.
    #[arg(short = 'H', long = "header")]
    headers: Vec<String>,

    /// Offer no permessage-deflate compression. By default it is offered, and used if the
    /// server accepts.
    #[arg(long)]
    no_compression: bool,

    /// PEM file with extra CA certificates to trust for wss://, such as the cert.pem of a
    /// server started with `pylon cert`.
    #[arg(long)]
    ca_file: Option<PathBuf>,

    /// Accept any server certificate for wss://, without verification. Anyone on the
    /// network path can then read and change the traffic: use it only for development.
    #[arg(long)]
    insecure: bool,

    /// Send each line as a binary message instead of a text message.
    #[arg(long)]
    binary: bool,

    /// Send this message instead of reading stdin, then close after --wait seconds;
    /// repeat for several messages.
    #[arg(short = 'x', long = "execute")]
    execute: Vec<String>,

    /// Seconds to wait for replies after the --execute messages before closing.
    #[arg(short = 'w', long, default_value_t = 2.0)]
    wait: f64,

    /// Print pings and pongs received, to stderr.
    #[arg(long)]
    show_ping_pong: bool,

    /// Seconds between keepalive pings sent by the client (0 turns them off).
    #[arg(long, default_value_t = 30.0)]
    ping_interval: f64,
}

/// Value of `--http`, shared with `pylon bench`.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub(crate) enum Http {
    #[value(name = "1.1")]
    Http1,
    #[value(name = "2")]
    Http2,
    #[value(name = "3")]
    Http3,
}

impl Http {
    pub(crate) fn version(self) -> HttpVersion {
        match self {
            Http::Http1 => HttpVersion::Http1,
            Http::Http2 => HttpVersion::Http2,
            Http::Http3 => HttpVersion::Http3,
        }
    }
}

/// Connects, exchanges messages until stdin ends or the server closes, and returns an
/// error if the connection ended abnormally.
pub(crate) async fn run(args: ClientArgs) -> anyhow::Result<()> {
    let config = client_config(&args)?;
    let (ws, _response) = connect_any(&args.url, config)
        .await
        .with_context(|| format!("failed to connect to {}", args.url))?;
    let mut status = format!(
        "connected to {} over HTTP/{}",
        args.url,
        match args.http {
            Http::Http1 => "1.1",
            Http::Http2 => "2",
            Http::Http3 => "3",
        }
    );
    if let Some(protocol) = ws.protocol() {
        let _ = write!(status, ", subprotocol {protocol}");
    }
    if let Some(deflate) = ws.compression() {
        let _ = write!(status, ", compression {}", deflate.params);
    }
    eprintln!("{status}");
    session(ws, &args).await
}

fn client_config(args: &ClientArgs) -> anyhow::Result<ClientConfig> {
    let mut config = ClientConfig {
        http_version: args.http.version(),
        ..ClientConfig::default()
    };
    config.protocols.clone_from(&args.protocols);
    if args.no_compression {
        config.compression = None;
    }
    for header in &args.headers {
        let (name, value) = parse_header(header)?;
        config.headers.append(name, value);
    }
    if let Some(path) = &args.ca_file {
        config.tls.add_ca_pem_file(path)?;
    }
    config.tls.dangerous_accept_any_certificate = args.insecure;
    let interval = Duration::try_from_secs_f64(args.ping_interval).with_context(|| {
        format!(
            "invalid --ping-interval {}: expected a non-negative number of seconds",
            args.ping_interval
        )
    })?;
    config.ws.ping_interval = (!interval.is_zero()).then_some(interval);
    Ok(config)
}

/// Parses a `Name: value` header argument.
fn parse_header(header: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let (name, value) = header
        .split_once(':')
        .with_context(|| format!("invalid --header {header:?}: expected \"Name: value\""))?;
    let name = HeaderName::try_from(name.trim())
        .with_context(|| format!("invalid header name {:?} in --header", name.trim()))?;
    let value = HeaderValue::try_from(value.trim())
        .with_context(|| format!("invalid header value {:?} in --header", value.trim()))?;
    Ok((name, value))
}

async fn session<S>(mut ws: WebSocket<S>, args: &ClientArgs) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stdout = tokio::io::stdout();
    if !args.execute.is_empty() {
        for text in &args.execute {
            ws.send(outgoing(text, args.binary)).await?;
        }
        let wait = Duration::try_from_secs_f64(args.wait).with_context(|| {
            format!(
                "invalid --wait {}: expected a non-negative number of seconds",
                args.wait
            )
        })?;
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => break,
                item = ws.recv() => match item {
                    Some(item) => print_message(&mut stdout, item?, args).await?,
                    None => return Ok(()),
                },
            }
        }
        return finish(ws, &mut stdout, args).await;
    }

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line.context("failed to read stdin")? {
                Some(line) => ws.send(outgoing(&line, args.binary)).await?,
                None => break,
            },
            item = ws.recv() => match item {
                Some(item) => print_message(&mut stdout, item?, args).await?,
                None => return Ok(()),
            },
        }
    }
    finish(ws, &mut stdout, args).await
}

fn outgoing(line: &str, binary: bool) -> Message {
    if binary {
        Message::binary(line.as_bytes().to_vec())
    } else {
        Message::text(line.to_owned())
    }
}

/// Starts the close handshake with 1000 and prints what arrives until it completes.
async fn finish<S>(
    mut ws: WebSocket<S>,
    stdout: &mut tokio::io::Stdout,
    args: &ClientArgs,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    ws.send(Message::close(CloseCode::NORMAL, "")).await?;
    while let Some(item) = ws.recv().await {
        print_message(stdout, item?, args).await?;
    }
    Ok(())
}

async fn print_message(
    stdout: &mut tokio::io::Stdout,
    message: Message,
    args: &ClientArgs,
) -> anyhow::Result<()> {
    match message {
        Message::Text(text) => {
            let mut line = text.as_str().to_owned();
            line.push('\n');
            stdout.write_all(line.as_bytes()).await?;
            stdout.flush().await?;
        }
        Message::Binary(data) => {
            let mut line = format!("[binary, {} bytes] ", data.len());
            for byte in data.iter().take(BINARY_PREVIEW) {
                let _ = write!(line, "{byte:02x}");
            }
            if data.len() > BINARY_PREVIEW {
                line.push_str("...");
            }
            line.push('\n');
            stdout.write_all(line.as_bytes()).await?;
            stdout.flush().await?;
        }
        Message::Ping(payload) if args.show_ping_pong => {
            eprintln!("ping ({} bytes)", payload.len());
        }
        Message::Pong(payload) if args.show_ping_pong => {
            eprintln!("pong ({} bytes)", payload.len());
        }
        Message::Ping(_) | Message::Pong(_) => {}
        Message::Close(frame) => {
            let (code, reason) = match &frame {
                Some(frame) => (frame.code, frame.reason.as_str().to_owned()),
                None => (CloseCode::NO_STATUS, String::new()),
            };
            eprintln!(
                "disconnected: close code {}, reason {reason:?}",
                u16::from(code)
            );
            if !matches!(
                code,
                CloseCode::NORMAL | CloseCode::GOING_AWAY | CloseCode::NO_STATUS
            ) {
                anyhow::bail!(
                    "server closed the connection with code {} ({reason:?})",
                    u16::from(code)
                );
            }
        }
    }
    Ok(())
}

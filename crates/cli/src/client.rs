//! `pylon client URL`: an interactive WebSocket client. Each line read from stdin is sent
//! as a message, and each message received is printed to stdout, one per line, so the
//! command also works in pipes and scripts. Status lines go to stderr.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use http::{HeaderName, HeaderValue};
use pylon_ws::client::{Client, ClientConfig, HttpVersion};
use pylon_ws::{CloseCode, Message, WebSocket};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

/// Maximum wait for the pooled connections to close before the process exits.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

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

    /// Send each line as a binary message instead of a text message. Lines are sent as
    /// read, so they may contain bytes that are not UTF-8; in text mode such a line is
    /// skipped with a warning.
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
    let line_limit = config.ws.proto.limits.max_message_size;
    let client = Client::new(config);
    let (ws, _response) = match client.connect(&args.url).await {
        Ok(connected) => connected,
        Err(error) => {
            let hint = connect_hint(&error, args.http);
            return Err(anyhow::Error::new(error)
                .context(format!("failed to connect to {}{hint}", args.url)));
        }
    };
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
    let result = session(ws, &args, line_limit).await;
    // Over HTTP/3 the end of the stream and the connection close are sent by this process,
    // so it waits until they left before it exits.
    client.close(CLOSE_TIMEOUT).await;
    result
}

/// Returns advice, in command-line terms, for connect errors that have a usual cause.
fn connect_hint(error: &pylon_ws::Error, http: Http) -> &'static str {
    let text = error.to_string();
    if text.contains("UnknownIssuer") || text.contains("invalid peer certificate") {
        return "; to trust a private or self-signed certificate pass --ca-file PEM, or \
                --insecure for development";
    }
    if text.contains("InvalidContentType") {
        return "; the server did not answer with TLS: use ws:// for a server without TLS";
    }
    if matches!(http, Http::Http3) && text.contains("timed out") {
        return "; no HTTP/3 answer: the server listens for QUIC only with TLS on and \
                without --no-http3";
    }
    ""
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

/// Sends the stdin lines, or the `--execute` messages, and prints what arrives. A stdin
/// line longer than `line_limit` bytes is skipped with a warning, so that a stream
/// without newlines cannot make the client buffer without bound.
async fn session<S>(
    mut ws: WebSocket<S>,
    args: &ClientArgs,
    line_limit: usize,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut stdout = tokio::io::stdout();
    if !args.execute.is_empty() {
        for text in &args.execute {
            ws.send(outgoing(text.clone().into_bytes(), args.binary)?)
                .await?;
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

    let mut lines = LineReader::new(tokio::io::stdin(), line_limit);
    let mut line_number = 0u64;
    loop {
        tokio::select! {
            line = lines.next_line() => {
                let Some(line) = line.context("failed to read stdin")? else {
                    break;
                };
                line_number += 1;
                match line {
                    StdinLine::Complete(bytes) => match outgoing(bytes, args.binary) {
                        Ok(message) => ws.send(message).await?,
                        Err(error) => eprintln!(
                            "skipped stdin line {line_number}: it is not valid UTF-8 ({error}); \
                             pass --binary to send lines as binary messages"
                        ),
                    },
                    StdinLine::TooLong(len) => eprintln!(
                        "skipped stdin line {line_number}: its {len} bytes exceed the limit of \
                         {line_limit} bytes"
                    ),
                }
            }
            item = ws.recv() => match item {
                Some(item) => print_message(&mut stdout, item?, args).await?,
                None => return Ok(()),
            },
        }
    }
    finish(ws, &mut stdout, args).await
}

/// Builds the message for one line: binary as it is, or text if it is valid UTF-8.
fn outgoing(line: Vec<u8>, binary: bool) -> Result<Message, std::string::FromUtf8Error> {
    if binary {
        Ok(Message::binary(line))
    } else {
        String::from_utf8(line).map(Message::text)
    }
}

/// One line of stdin, without its line ending (`\n` or `\r\n`).
#[derive(Debug, PartialEq, Eq)]
enum StdinLine {
    Complete(Vec<u8>),
    /// A line longer than the limit, whose bytes were read and discarded, with its
    /// length.
    TooLong(usize),
}

/// Splits a byte stream into lines of at most `limit` bytes.
///
/// `next_line` is cancel safe, so it can be a branch of `tokio::select!`: the part of a
/// line read so far stays in `pending`.
struct LineReader<R> {
    reader: BufReader<R>,
    limit: usize,
    /// The bytes of the current line read so far.
    pending: Vec<u8>,
    /// The bytes of the current line discarded so far, once it exceeded `limit`.
    discarded: usize,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    fn new(reader: R, limit: usize) -> Self {
        Self {
            reader: BufReader::new(reader),
            limit,
            pending: Vec::new(),
            discarded: 0,
        }
    }

    /// Returns the next line, or `None` at the end of the input. A last line without a
    /// line ending is returned too.
    async fn next_line(&mut self) -> std::io::Result<Option<StdinLine>> {
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                if self.discarded > 0 {
                    return Ok(Some(StdinLine::TooLong(std::mem::take(
                        &mut self.discarded,
                    ))));
                }
                if self.pending.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(StdinLine::Complete(std::mem::take(&mut self.pending))));
            }
            let newline = available.iter().position(|&byte| byte == b'\n');
            let part = &available[..newline.unwrap_or(available.len())];
            if self.discarded > 0 || self.pending.len() + part.len() > self.limit {
                self.discarded += self.pending.len() + part.len();
                self.pending = Vec::new();
            } else {
                self.pending.extend_from_slice(part);
            }
            let consumed = part.len() + usize::from(newline.is_some());
            self.reader.consume(consumed);
            if newline.is_none() {
                continue;
            }
            if self.discarded > 0 {
                return Ok(Some(StdinLine::TooLong(std::mem::take(
                    &mut self.discarded,
                ))));
            }
            let mut line = std::mem::take(&mut self.pending);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            return Ok(Some(StdinLine::Complete(line)));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn read_all(input: &[u8], limit: usize) -> Vec<StdinLine> {
        let mut reader = LineReader::new(input, limit);
        let mut lines = Vec::new();
        while let Some(line) = reader.next_line().await.unwrap() {
            lines.push(line);
        }
        lines
    }

    fn complete(bytes: &[u8]) -> StdinLine {
        StdinLine::Complete(bytes.to_vec())
    }

    #[tokio::test]
    async fn lines_keep_bytes_that_are_not_utf8() {
        let lines = read_all(b"a\xff\xfe\r\n\nlast", 100).await;
        assert_eq!(
            lines,
            [complete(b"a\xff\xfe"), complete(b""), complete(b"last")]
        );
    }

    #[tokio::test]
    async fn overlong_lines_are_discarded() {
        let mut input = vec![b'x'; 10_000];
        input.extend_from_slice(b"\nshort\n");
        input.extend_from_slice(&[b'y'; 11]);
        let lines = read_all(&input, 10).await;
        assert_eq!(
            lines,
            [
                StdinLine::TooLong(10_000),
                complete(b"short"),
                StdinLine::TooLong(11)
            ]
        );
    }

    #[tokio::test]
    async fn line_at_limit_is_complete() {
        let lines = read_all(b"0123456789\n", 10).await;
        assert_eq!(lines, [complete(b"0123456789")]);
    }

    #[test]
    fn text_lines_must_be_utf8() {
        assert!(outgoing(b"\xff".to_vec(), false).is_err());
        assert_eq!(
            outgoing(b"\xff".to_vec(), true).unwrap(),
            Message::binary(vec![0xff])
        );
    }
}

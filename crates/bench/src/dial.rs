//! Opening benchmark connections. A `ws://` URL over HTTP/1.1 opens a bare TCP
//! WebSocket, from the default source address through [`pylon_ws::client::connect`] or
//! from a chosen one through [`pylon_ws::client::connect_with_stream`]. Every other
//! transport (`wss://`, HTTP/2, HTTP/3) goes through a [`Pool`] of
//! [`pylon_ws::client::Client`]s, so that WebSockets over HTTP/2 and HTTP/3 share
//! connections.
//!
//! Binding the source address matters past about 28,000 connections to one server
//! address and port: Linux gives each source address its own ephemeral port range
//! (`net.ipv4.ip_local_port_range`, 32768-60999 by default), so spreading connections
//! over 127.0.0.1, 127.0.0.2, ... multiplies the number that fit.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use anyhow::Context;
use http::Uri;
use pylon_ws::client::{self, Client, ClientConfig, ClientStream, HttpVersion};
use pylon_ws::tls::ClientTls;
use pylon_ws::{Config, Error, WebSocket};
use tokio::net::{TcpSocket, TcpStream};

/// A `ws://` URL resolved once, for connections that bind their source address.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    url: String,
    addrs: Vec<SocketAddr>,
}

impl Endpoint {
    /// Parses `url` and resolves its host.
    pub(crate) async fn resolve(url: &str) -> anyhow::Result<Endpoint> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("invalid url {url:?}: expected ws://host:port/path"))?;
        if !uri
            .scheme_str()
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("ws"))
        {
            anyhow::bail!("invalid url {url:?}: only ws://host:port/path is supported");
        }
        let authority = uri
            .authority()
            .with_context(|| format!("invalid url {url:?}: missing host"))?;
        let host = authority.host();
        let bare_host = host
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))
            .unwrap_or(host);
        let port = authority.port_u16().unwrap_or(80);
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare_host, port))
            .await
            .with_context(|| format!("failed to resolve host {host:?} of {url:?}"))?
            .collect();
        if addrs.is_empty() {
            anyhow::bail!("host {host:?} of {url:?} resolved to no address");
        }
        Ok(Endpoint {
            url: url.to_owned(),
            addrs,
        })
    }

    /// Returns the first resolved address of the same IP family as `source`.
    pub(crate) fn addr_for(&self, source: IpAddr) -> anyhow::Result<SocketAddr> {
        self.addrs
            .iter()
            .copied()
            .find(|addr| addr.is_ipv4() == source.is_ipv4())
            .with_context(|| {
                format!(
                    "{} resolves to no address of the same IP version as source address {source}",
                    self.url
                )
            })
    }
}

/// Default number of WebSockets that share one HTTP/2 or HTTP/3 connection. It stays
/// below the stream limits of `pylon serve`: 128 concurrent HTTP/2 streams
/// (`Http2Config::max_concurrent_streams`) and 100 QUIC bidirectional streams (the quinn
/// 0.11 default that its HTTP/3 endpoint keeps).
pub const DEFAULT_STREAMS_PER_CONNECTION: usize = 100;

/// Transport settings of benchmark connections: HTTP version, TLS trust and connection
/// sharing.
#[derive(Clone, Debug)]
pub struct Transport {
    /// HTTP version that carries each WebSocket. HTTP/3 requires a `wss://` URL.
    pub http_version: HttpVersion,
    /// Trusted certificates for `wss://` URLs, or certificate checks turned off.
    pub tls: ClientTls,
    /// WebSockets per HTTP/2 or HTTP/3 connection. Ignored over HTTP/1.1, where each
    /// WebSocket has a connection of its own.
    pub streams_per_connection: usize,
}

impl Default for Transport {
    /// HTTP/1.1, certificates checked against the bundled Mozilla roots, and
    /// [`DEFAULT_STREAMS_PER_CONNECTION`].
    fn default() -> Self {
        Transport {
            http_version: HttpVersion::Http1,
            tls: ClientTls::default(),
            streams_per_connection: DEFAULT_STREAMS_PER_CONNECTION,
        }
    }
}

impl Transport {
    /// Returns whether `url` over this transport is a `ws://` URL over HTTP/1.1, the
    /// transport whose WebSockets run over a bare `TcpStream`.
    pub(crate) fn is_plain_http1(&self, url: &str) -> bool {
        self.http_version == HttpVersion::Http1 && has_scheme(url, "ws")
    }

    /// Returns a short label of the transport for reports: `h1`, `h2` or `h3`, with
    /// `+tls` for `wss://`.
    pub fn label(&self, url: &str) -> String {
        let version = match self.http_version {
            HttpVersion::Http2 => "h2",
            HttpVersion::Http3 => "h3",
            _ => "h1",
        };
        if has_scheme(url, "wss") && self.http_version != HttpVersion::Http3 {
            format!("{version}+tls")
        } else {
            version.to_owned()
        }
    }

    /// Returns whether WebSockets share connections: over HTTP/2 and HTTP/3.
    pub fn shares_connections(&self) -> bool {
        self.http_version != HttpVersion::Http1
    }

    /// Checks the transport against `url`.
    pub(crate) fn validate(&self, url: &str) -> anyhow::Result<()> {
        if self.streams_per_connection == 0 {
            anyhow::bail!("invalid streams per connection 0: expected at least 1");
        }
        if self.http_version == HttpVersion::Http3 && !has_scheme(url, "wss") {
            anyhow::bail!(
                "invalid url {url:?} for HTTP/3: QUIC always runs TLS, so use a wss:// URL"
            );
        }
        Ok(())
    }
}

fn has_scheme(url: &str, scheme: &str) -> bool {
    url.split_once("://")
        .is_some_and(|(found, _)| found.eq_ignore_ascii_case(scheme))
}

/// The clients of a run over any transport but `ws://` HTTP/1.1. WebSocket `index`
/// goes through client `index / streams_per_connection`, and each client keeps one
/// HTTP/2 or HTTP/3 connection to the server, so consecutive WebSockets share a
/// connection. Over HTTP/1.1 (`wss://`) one client opens a connection per WebSocket.
#[derive(Clone, Debug)]
pub(crate) struct Pool {
    url: Arc<str>,
    clients: Arc<[Client]>,
    streams_per_connection: usize,
}

impl Pool {
    /// Creates enough clients for `count` WebSockets to `url`. Connections are dialed
    /// by the first [`Pool::connect`] of each client.
    pub(crate) fn new(
        url: &str,
        transport: &Transport,
        config: &Config,
        compress: bool,
        count: usize,
    ) -> Self {
        let client_count = if transport.shares_connections() {
            count.div_ceil(transport.streams_per_connection).max(1)
        } else {
            1
        };
        let client_config = ClientConfig {
            http_version: transport.http_version,
            tls: transport.tls.clone(),
            ..client_config(config, compress)
        };
        let clients = (0..client_count)
            .map(|_| Client::new(client_config.clone()))
            .collect();
        Pool {
            url: Arc::from(url),
            clients,
            streams_per_connection: transport.streams_per_connection,
        }
    }

    /// Opens WebSocket `index` through its client, within `config.handshake_timeout`.
    pub(crate) async fn connect(&self, index: usize) -> Result<WebSocket<ClientStream>, Error> {
        let client = &self.clients[(index / self.streams_per_connection) % self.clients.len()];
        let (ws, _response) = client.connect(&self.url).await?;
        Ok(ws)
    }
}

/// Returns the client settings of every benchmark connection: `config` once open, the
/// default permessage-deflate offer when `compress` is set, and no offer otherwise.
fn client_config(config: &Config, compress: bool) -> ClientConfig {
    let defaults = ClientConfig::default();
    ClientConfig {
        ws: config.clone(),
        compression: if compress { defaults.compression } else { None },
        ..defaults
    }
}

/// Opens a WebSocket to `url` with `pylon_ws::client::connect`, within
/// `config.handshake_timeout`.
pub(crate) async fn connect(
    url: &str,
    config: &Config,
    compress: bool,
) -> Result<WebSocket<TcpStream>, Error> {
    let (ws, _response) = client::connect(url, client_config(config, compress)).await?;
    Ok(ws)
}

/// Opens a WebSocket to `endpoint` from `source` (port chosen by the kernel), within
/// `config.handshake_timeout`.
pub(crate) async fn connect_from(
    endpoint: &Endpoint,
    source: IpAddr,
    config: &Config,
    compress: bool,
) -> Result<WebSocket<TcpStream>, Error> {
    let addr = endpoint
        .addr_for(source)
        .map_err(|err| Error::Url(err.to_string()))?;
    let socket = if source.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    let open = async {
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        let (ws, _response) =
            client::connect_with_stream(stream, &endpoint.url, client_config(config, compress))
                .await?;
        Ok(ws)
    };
    match tokio::time::timeout(config.handshake_timeout, open).await {
        Ok(result) => result,
        Err(_) => Err(Error::HandshakeTimeout),
    }
}

/// Returns a short, stable label for a failed connect, used to count failures by cause.
pub(crate) fn failure_kind(err: &Error) -> &'static str {
    match err {
        Error::Io(io_err) => match io_err.kind() {
            io::ErrorKind::ConnectionRefused => "connection refused",
            io::ErrorKind::ConnectionReset => "connection reset",
            io::ErrorKind::AddrNotAvailable => "no free source port",
            io::ErrorKind::TimedOut => "timed out",
            _ if io_err.raw_os_error() == Some(EMFILE) => "too many open files",
            _ => "i/o error",
        },
        Error::HandshakeTimeout => "handshake timed out",
        Error::Handshake(_) => "handshake rejected",
        Error::InvalidResponse(_) => "invalid response",
        Error::Url(_) => "invalid url",
        Error::Tls(_) | Error::TlsConfig(_) => "tls error",
        Error::Http2(_) | Error::Http2NotNegotiated(_) | Error::ExtendedConnectDisabled(_) => {
            "http/2 error"
        }
        Error::Http3(_) => "http/3 error",
        _ => "other error",
    }
}

/// `EMFILE` on Linux: the process reached its open-file limit.
const EMFILE: i32 = 24;

/// Describes a failed connect with a hint at the usual cause.
pub(crate) fn describe_failure(err: &Error, url: &str) -> String {
    let hint = match failure_kind(err) {
        "connection refused" => "is a server listening at that address and port?",
        "no free source port" => {
            "the ephemeral ports of the source address are used up; spread connections over \
             more source addresses with --source-ips"
        }
        "too many open files" => {
            "the process reached its open-file limit (ulimit -n); open fewer connections per \
             process"
        }
        "handshake timed out" => "the server did not complete the upgrade in time",
        "handshake rejected" => "is the path a WebSocket endpoint, such as /ws/echo?",
        "tls error" => {
            "does the server use TLS, and is its certificate trusted? Pass --ca-file PEM, \
             or --insecure for a development server"
        }
        _ => "",
    };
    if hint.is_empty() {
        format!("failed to connect to {url}: {err}")
    } else {
        format!("failed to connect to {url}: {err} ({hint})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_connect_gets_hint() {
        let err = Error::Io(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(failure_kind(&err), "connection refused");
        let text = describe_failure(&err, "ws://127.0.0.1:9/ws/echo");
        assert!(text.contains("ws://127.0.0.1:9/ws/echo"), "{text}");
        assert!(text.contains("is a server listening"), "{text}");
    }

    #[test]
    fn pool_shares_connections_over_http2_and_http3() {
        let config = Config::default();
        for version in [HttpVersion::Http2, HttpVersion::Http3] {
            let transport = Transport {
                http_version: version,
                streams_per_connection: 100,
                ..Transport::default()
            };
            let pool = Pool::new("wss://localhost/ws/echo", &transport, &config, false, 250);
            assert_eq!(pool.clients.len(), 3, "{version:?}");
        }
        let http1 = Pool::new(
            "wss://localhost/ws/echo",
            &Transport::default(),
            &config,
            false,
            250,
        );
        assert_eq!(http1.clients.len(), 1);
    }

    #[test]
    fn transport_labels_and_checks_urls() {
        let mut transport = Transport::default();
        assert!(transport.is_plain_http1("ws://127.0.0.1/ws/echo"));
        assert!(!transport.is_plain_http1("wss://localhost/ws/echo"));
        assert_eq!(transport.label("wss://localhost/"), "h1+tls");
        transport.http_version = HttpVersion::Http2;
        assert!(!transport.is_plain_http1("ws://127.0.0.1/ws/echo"));
        assert_eq!(transport.label("ws://127.0.0.1/"), "h2");
        transport.http_version = HttpVersion::Http3;
        assert_eq!(transport.label("wss://localhost/"), "h3");
        assert!(transport.validate("ws://127.0.0.1/").is_err());
        assert!(transport.validate("wss://localhost/").is_ok());
        transport.streams_per_connection = 0;
        assert!(transport.validate("wss://localhost/").is_err());
    }

    #[test]
    fn open_file_limit_is_classified() {
        let err = Error::Io(io::Error::from_raw_os_error(EMFILE));
        assert_eq!(failure_kind(&err), "too many open files");
    }
}

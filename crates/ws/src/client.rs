//! Client side: open a WebSocket connection to a `ws://` or `wss://` URL.
//!
//! [`connect_any`] accepts both schemes and returns a WebSocket over a [`ClientStream`].
//! [`connect`] accepts only `ws://` and returns a WebSocket over the bare `TcpStream`.
//! With [`ClientConfig::http_version`] set to [`HttpVersion::Http2`], [`connect_any`]
//! opens the WebSocket as a stream of a new HTTP/2 connection (RFC 8441), and a
//! [`Client`] shares one HTTP/2 connection per origin among many WebSockets.

mod http2;
mod pool;

pub use http2::Http2Stream;
pub use pool::Client;

use std::fmt::Write as _;

use bytes::BytesMut;
use http::header::{
    CONNECTION, HOST, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_PROTOCOL, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Uri, Version};
use pylon_proto::handshake::ClientRequest;
use pylon_proto::{DeflateConfig, Role};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::tls::{self, ClientTls};
use crate::{Config, Error, WebSocket};

/// Maximum size of the server's response head (status line and headers), in bytes.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Maximum number of headers in the server's response.
const MAX_RESPONSE_HEADERS: usize = 64;

/// Headers that the handshake sets itself and that `ClientConfig::headers` may not set.
const RESERVED_HEADERS: [HeaderName; 8] = [
    HOST,
    UPGRADE,
    CONNECTION,
    SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION,
    SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_EXTENSIONS,
    SEC_WEBSOCKET_ACCEPT,
];

/// Settings of a client connection.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Settings of the connection once it is open. `ws.handshake_timeout` bounds the whole
    /// of [`connect`] and [`connect_any`].
    pub ws: Config,
    /// Subprotocols to offer, in preference order. Empty by default.
    pub protocols: Vec<String>,
    /// Extra request headers, such as `Origin`, `Authorization` or `Cookie`. The headers
    /// of the handshake itself (`Host`, `Upgrade`, `Connection` and `Sec-WebSocket-*`) are
    /// rejected. Empty by default.
    pub headers: HeaderMap,
    /// permessage-deflate settings to offer, or `None` to offer no compression. The
    /// connection compresses only if the server accepts. Default:
    /// `Some(DeflateConfig::default())`.
    pub compression: Option<DeflateConfig>,
    /// TLS settings for `wss://` URLs: trusted CA certificates, and the development-only
    /// switch that turns certificate verification off. Default: [`ClientTls::default`],
    /// which verifies against the bundled Mozilla roots.
    pub tls: ClientTls,
    /// HTTP version that carries the WebSocket. Default: [`HttpVersion::Http1`].
    pub http_version: HttpVersion,
}

/// HTTP version that carries a client WebSocket.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HttpVersion {
    /// An HTTP/1.1 `Upgrade` on a connection of its own (RFC 6455). Over TLS, ALPN
    /// offers `http/1.1`.
    #[default]
    Http1,
    /// An extended CONNECT stream of an HTTP/2 connection (RFC 8441). Over TLS, ALPN
    /// offers `h2`. Over plain TCP, the client speaks HTTP/2 with prior knowledge, so the
    /// server must accept that (`h2c` without an upgrade).
    Http2,
    /// An extended CONNECT stream of an HTTP/3 connection over QUIC (RFC 9220), for
    /// `wss://` URLs only, since QUIC always runs TLS. ALPN offers `h3`.
    Http3,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            ws: Config::default(),
            protocols: Vec::new(),
            headers: HeaderMap::new(),
            compression: Some(DeflateConfig::default()),
            tls: ClientTls::default(),
            http_version: HttpVersion::default(),
        }
    }
}

/// Opens a WebSocket connection to a `ws://host[:port]/path?query` URL.
///
/// Connects over TCP (port 80 unless the URL names one), sends the HTTP/1.1 upgrade
/// request and verifies the response, all within `cfg.ws.handshake_timeout`. Bytes that
/// arrive right after the response head are kept for the WebSocket. IPv6 literal hosts
/// are written in brackets, as in `ws://[::1]:8080/`.
///
/// Returns the WebSocket and the server's response (status and headers), from which the
/// agreed subprotocol is also available as [`WebSocket::protocol`] and the agreed
/// compression as [`WebSocket::compression`].
///
/// # Errors
///
/// - [`Error::Url`] for a URL that is not `ws://` with a host. `wss://` is rejected
///   because the result has no room for TLS: use [`connect_any`] for it.
/// - [`Error::ReservedHeader`] for a handshake header in `cfg.headers`.
/// - [`Error::Io`] if connecting, writing or reading fails.
/// - [`Error::InvalidResponse`] for a response head that is malformed, larger than
///   16 KiB, or cut off by the server closing the connection.
/// - [`Error::Handshake`] if the response does not accept the upgrade, or accepts
///   compression with parameters that do not fit the offer.
/// - [`Error::HandshakeTimeout`] if all of this takes longer than the handshake timeout.
/// - [`Error::UnsupportedHttpVersion`] if `cfg.http_version` is not
///   [`HttpVersion::Http1`], because the result has no room for an HTTP/2 stream: use
///   [`connect_any`] or [`Client`] for it.
pub async fn connect(
    url: &str,
    cfg: ClientConfig,
) -> Result<(WebSocket<TcpStream>, Response<()>), Error> {
    let target = Target::parse(url)?;
    target.require_plain(url, "client::connect_any")?;
    require_http1(cfg.http_version, "client::connect_any or client::Client")?;
    check_headers(&cfg.headers)?;
    with_handshake_timeout(url, cfg.ws.handshake_timeout, async {
        let stream = connect_tcp(&target).await?;
        handshake(stream, &target, cfg).await
    })
    .await
}

/// Opens a WebSocket connection to a `ws://` or `wss://` URL.
///
/// Works like [`connect`], and for `wss://` (port 443 unless the URL names one) runs a TLS
/// handshake with ALPN `http/1.1` before the upgrade request. The server certificate is
/// verified against `cfg.tls` and must match the URL's host name or IP address. The TCP
/// connect, the TLS handshake and the upgrade together must finish within
/// `cfg.ws.handshake_timeout`.
///
/// With `cfg.http_version` set to [`HttpVersion::Http2`], this dials a new HTTP/2
/// connection (ALPN `h2` over TLS, prior knowledge over plain TCP), waits for the
/// server's SETTINGS and opens the WebSocket with an extended CONNECT request. The
/// connection closes when the WebSocket ends. Use [`Client`] to share one connection.
///
/// # Errors
///
/// The errors of [`connect`], and:
/// - [`Error::Tls`] if the TLS handshake fails, for example with an untrusted or expired
///   certificate or one for another host.
/// - [`Error::TlsConfig`] if `cfg.tls` is unusable, for example with no trusted roots.
/// - Over HTTP/2, the errors of [`Client::connect`].
pub async fn connect_any(
    url: &str,
    cfg: ClientConfig,
) -> Result<(WebSocket<ClientStream>, Response<()>), Error> {
    let target = Target::parse(url)?;
    check_headers(&cfg.headers)?;
    if cfg.http_version == HttpVersion::Http3 {
        let client =
            crate::h3::H3Client::new(&cfg.tls, cfg.ws.handshake_timeout).map_err(Error::from)?;
        return with_handshake_timeout(url, cfg.ws.handshake_timeout, async {
            client
                .connect_wrapped(url, &cfg, |tunnel| ClientStream::Http3(Box::new(tunnel)))
                .await
                .map_err(Error::from)
        })
        .await;
    }
    if cfg.http_version == HttpVersion::Http2 {
        return with_handshake_timeout(url, cfg.ws.handshake_timeout, async {
            let connection = http2::Http2Connection::dial(&target, &cfg).await?;
            connection.open(&target, cfg).await
        })
        .await;
    }
    let tls = if target.secure {
        let connector = TlsConnector::from(cfg.tls.rustls_config(tls::ALPN_HTTP1)?);
        Some((connector, tls::server_name(&target.connect_host)?))
    } else {
        None
    };
    with_handshake_timeout(url, cfg.ws.handshake_timeout, async {
        let tcp = connect_tcp(&target).await?;
        let stream = match tls {
            Some((connector, server_name)) => {
                let tls = connector
                    .connect(server_name, tcp)
                    .await
                    .map_err(Error::Tls)?;
                ClientStream::Tls(Box::new(tls))
            }
            None => ClientStream::Plain(tcp),
        };
        handshake(stream, &target, cfg).await
    })
    .await
}

async fn connect_tcp(target: &Target) -> Result<TcpStream, Error> {
    let stream = TcpStream::connect((target.connect_host.as_str(), target.port)).await?;
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(error = %err, "cannot set TCP_NODELAY");
    }
    Ok(stream)
}

/// Transport of a client WebSocket from [`connect_any`] or [`Client`]: plain TCP for
/// `ws://`, TLS over TCP for `wss://`, or a stream of an HTTP/2 or HTTP/3 connection.
#[derive(Debug)]
pub enum ClientStream {
    /// A `ws://` connection over HTTP/1.1.
    Plain(TcpStream),
    /// A `wss://` connection over HTTP/1.1. Boxed because the TLS state is much larger
    /// than a `TcpStream`.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// A stream of an HTTP/2 connection, over TLS or plain TCP.
    Http2(Box<Http2Stream>),
    /// A stream of an HTTP/3 connection over QUIC.
    Http3(Box<crate::h3::H3Stream>),
}

impl ClientStream {
    /// Returns the underlying TCP stream, for addresses and socket options, or `None` for
    /// an HTTP/2 stream, whose connection task owns the TCP stream, and for an HTTP/3
    /// stream, which runs over UDP.
    pub fn tcp(&self) -> Option<&TcpStream> {
        match self {
            ClientStream::Plain(tcp) => Some(tcp),
            ClientStream::Tls(tls) => Some(tls.get_ref().0),
            ClientStream::Http2(_) | ClientStream::Http3(_) => None,
        }
    }
}

delegate_async_io!(ClientStream {
    Plain,
    Tls,
    Http2,
    Http3
});

/// Runs the client handshake for the `ws://` URL `url` over `stream`, a connection that
/// the caller has already opened to the URL's host, for example from a chosen source
/// address or through a proxy tunnel.
///
/// `url` supplies the `Host` header and the request target. Its host and port are not
/// connected to. Otherwise this works like [`connect`]: the request, the response check
/// and bytes after the response head are handled the same way, all within
/// `cfg.ws.handshake_timeout`. Socket options such as `TCP_NODELAY` are left to the
/// caller.
///
/// This runs no TLS, so `wss://` URLs are rejected. To reach a TLS server, run the TLS
/// handshake on `stream` first and pass the URL with `ws://`.
///
/// # Errors
///
/// The errors of [`connect`], where [`Error::Io`] comes from writing or reading `stream`.
pub async fn connect_with_stream<S>(
    stream: S,
    url: &str,
    cfg: ClientConfig,
) -> Result<(WebSocket<S>, Response<()>), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let target = Target::parse(url)?;
    target.require_plain(url, "a ws:// URL with a stream that already runs TLS")?;
    require_http1(cfg.http_version, "client::connect_any or client::Client")?;
    check_headers(&cfg.headers)?;
    with_handshake_timeout(
        url,
        cfg.ws.handshake_timeout,
        handshake(stream, &target, cfg),
    )
    .await
}

/// Rejects an HTTP version other than HTTP/1.1 in a function that supports only that,
/// naming `instead`.
fn require_http1(version: HttpVersion, instead: &str) -> Result<(), Error> {
    if version != HttpVersion::Http1 {
        return Err(Error::UnsupportedHttpVersion(format!(
            "{version:?} is not supported by this function; use {instead}"
        )));
    }
    Ok(())
}

/// Rejects headers in `ClientConfig::headers` that the handshake sets itself.
fn check_headers(headers: &HeaderMap) -> Result<(), Error> {
    match headers.keys().find(|name| RESERVED_HEADERS.contains(name)) {
        Some(name) => Err(Error::ReservedHeader(name.clone())),
        None => Ok(()),
    }
}

/// Awaits `handshake`, failing with [`Error::HandshakeTimeout`] after `timeout`.
async fn with_handshake_timeout<T>(
    url: &str,
    timeout: std::time::Duration,
    handshake: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(timeout, handshake).await {
        Ok(result) => result,
        Err(_) => {
            tracing::debug!(url, ?timeout, "websocket handshake timed out");
            Err(Error::HandshakeTimeout)
        }
    }
}

/// The parts of a `ws://` URL that the handshake needs.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// Host to connect to, without IPv6 brackets.
    connect_host: String,
    port: u16,
    /// Value of the `Host` header: the host as written in the URL, and the port if the URL
    /// names one.
    host_header: String,
    /// Request target: path and query, `/` if the URL has no path.
    path: String,
    /// Whether the URL is `wss://`.
    secure: bool,
}

impl Target {
    fn parse(url: &str) -> Result<Target, Error> {
        let uri: Uri = url
            .parse()
            .map_err(|err| Error::Url(format!("cannot parse {url:?}: {err}")))?;
        let secure = match uri.scheme_str() {
            Some(scheme) if scheme.eq_ignore_ascii_case("ws") => false,
            Some(scheme) if scheme.eq_ignore_ascii_case("wss") => true,
            Some(scheme) => {
                return Err(Error::Url(format!(
                    "{url:?} has scheme {scheme:?}, expected ws://host[:port]/path or \
                     wss://host[:port]/path"
                )));
            }
            None => {
                return Err(Error::Url(format!(
                    "{url:?} has no scheme, expected ws://host[:port]/path"
                )));
            }
        };
        let authority = uri.authority().ok_or_else(|| {
            Error::Url(format!(
                "{url:?} has no host, expected ws://host[:port]/path"
            ))
        })?;
        if authority.as_str().contains('@') {
            return Err(Error::Url(format!(
                "{url:?} contains user information, pass credentials in ClientConfig::headers instead"
            )));
        }
        let host = authority.host();
        if host.is_empty() {
            return Err(Error::Url(format!("{url:?} has an empty host")));
        }

        let connect_host = host
            .strip_prefix('[')
            .and_then(|inner| inner.strip_suffix(']'))
            .unwrap_or(host)
            .to_owned();
        let port = authority
            .port_u16()
            .unwrap_or(if secure { 443 } else { 80 });
        let host_header = match authority.port_u16() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let path = uri
            .path_and_query()
            .map(|path| path.as_str())
            .filter(|path| !path.is_empty())
            .unwrap_or("/")
            .to_owned();
        Ok(Target {
            connect_host,
            port,
            host_header,
            path,
            secure,
        })
    }

    /// Rejects a `wss://` target in a function that runs no TLS, naming `instead`.
    fn require_plain(&self, url: &str, instead: &str) -> Result<(), Error> {
        if self.secure {
            return Err(Error::Url(format!(
                "{url:?} uses wss://, which this function does not support; use {instead}"
            )));
        }
        Ok(())
    }
}

/// Sends the upgrade request over `stream` and checks the response.
async fn handshake<S>(
    mut stream: S,
    target: &Target,
    cfg: ClientConfig,
) -> Result<(WebSocket<S>, Response<()>), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = ClientRequest::new(cfg.protocols).with_deflate(cfg.compression);
    let headers = request.try_headers(&target.host_header)?;
    let head = encode_request_head(&target.path, &headers, &cfg.headers);
    stream.write_all(&head).await?;
    tracing::trace!(path = %target.path, bytes = head.len(), "sent websocket upgrade request");

    let (response, already_read) = read_response_head(&mut stream).await?;
    let negotiated = request.verify(response.status(), response.headers())?;
    tracing::debug!(
        host = %target.host_header,
        path = %target.path,
        protocol = negotiated.protocol.as_deref(),
        compression = negotiated.deflate.map(|deflate| deflate.params.to_string()),
        "websocket connected"
    );

    let mut ws_config = cfg.ws;
    ws_config.proto.deflate = negotiated.deflate;
    let mut ws = WebSocket::from_raw(stream, Role::Client, ws_config, already_read.freeze());
    ws.set_protocol(negotiated.protocol);
    Ok((ws, response))
}

/// Writes the request line and headers of the upgrade request.
fn encode_request_head(path: &str, headers: &HeaderMap, extra: &HeaderMap) -> Vec<u8> {
    let mut line = String::with_capacity(32 + path.len());
    // Writing to a String cannot fail.
    let _ = write!(line, "GET {path} HTTP/1.1\r\n");
    let mut head = line.into_bytes();
    for (name, value) in headers.iter().chain(extra.iter()) {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Reads and parses the response head. Returns it with the bytes that followed it.
async fn read_response_head<S>(stream: &mut S) -> Result<(Response<()>, BytesMut), Error>
where
    S: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if buf.len() >= MAX_RESPONSE_HEAD {
            return Err(Error::InvalidResponse(format!(
                "response head is larger than {MAX_RESPONSE_HEAD} bytes"
            )));
        }
        // Never read past the limit, so that the buffer stays bounded.
        let room = MAX_RESPONSE_HEAD - buf.len();
        buf.reserve(room.min(4096));
        let read = (&mut *stream).take(room as u64).read_buf(&mut buf).await?;
        if read == 0 {
            return Err(Error::InvalidResponse(
                "server closed the connection before the response head was complete".to_owned(),
            ));
        }

        if let Some((response, head_len)) = parse_response_head(&buf)? {
            let rest = buf.split_off(head_len);
            return Ok((response, rest));
        }
    }
}

/// Parses a complete response head from `buf`. Returns `None` while it is incomplete.
fn parse_response_head(buf: &[u8]) -> Result<Option<(Response<()>, usize)>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut parsed = httparse::Response::new(&mut headers);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::InvalidResponse(format!(
                "response has more than {MAX_RESPONSE_HEADERS} headers"
            )));
        }
        Err(err) => {
            return Err(Error::InvalidResponse(format!(
                "malformed response head: {err}"
            )));
        }
    };

    let code = parsed.code.unwrap_or_default();
    let status = StatusCode::from_u16(code)
        .map_err(|_| Error::InvalidResponse(format!("invalid status code {code}")))?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };

    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    let map = response.headers_mut();
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| {
            Error::InvalidResponse(format!("invalid header name {:?}", header.name))
        })?;
        let value = HeaderValue::from_bytes(header.value).map_err(|_| {
            Error::InvalidResponse(format!("invalid value of header {:?}", header.name))
        })?;
        map.append(name, value);
    }
    Ok(Some((response, head_len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_parses_host_port_and_path() {
        let target = Target::parse("ws://127.0.0.1:9001/chat?room=lobby").unwrap();
        assert_eq!(target.connect_host, "127.0.0.1");
        assert_eq!(target.port, 9001);
        assert_eq!(target.host_header, "127.0.0.1:9001");
        assert_eq!(target.path, "/chat?room=lobby");
    }

    #[test]
    fn target_defaults_port_and_path() {
        let target = Target::parse("ws://localhost").unwrap();
        assert_eq!(target.connect_host, "localhost");
        assert_eq!(target.port, 80);
        assert_eq!(target.host_header, "localhost");
        assert_eq!(target.path, "/");
    }

    #[test]
    fn target_strips_ipv6_brackets() {
        let target = Target::parse("ws://[::1]:8080/echo").unwrap();
        assert_eq!(target.connect_host, "::1");
        assert_eq!(target.port, 8080);
        assert_eq!(target.host_header, "[::1]:8080");
        assert_eq!(target.path, "/echo");
    }

    #[test]
    fn target_parses_wss_with_default_port() {
        let target = Target::parse("wss://example.com/feed").unwrap();
        assert!(target.secure);
        assert_eq!(target.port, 443);
        assert_eq!(target.host_header, "example.com");
        assert_eq!(target.path, "/feed");
    }

    #[test]
    fn plain_connect_rejects_wss() {
        let target = Target::parse("wss://example.com/").unwrap();
        let err = target
            .require_plain("wss://example.com/", "client::connect_any")
            .unwrap_err();
        assert!(err.to_string().contains("client::connect_any"), "{err}");
    }

    #[test]
    fn target_rejects_other_urls() {
        for url in [
            "http://127.0.0.1/",
            "127.0.0.1:80",
            "/path",
            "ws://user:pw@127.0.0.1/",
            "not a url",
        ] {
            let result = Target::parse(url);
            assert!(matches!(result, Err(Error::Url(_))), "{url}: {result:?}");
        }
    }

    #[test]
    fn request_head_lists_all_headers() {
        let request = ClientRequest::new(vec!["chat".to_owned()]);
        let headers = request.try_headers("127.0.0.1:9001").unwrap();
        let mut extra = HeaderMap::new();
        extra.insert("origin", HeaderValue::from_static("http://127.0.0.1"));
        let head = String::from_utf8(encode_request_head("/ws", &headers, &extra)).unwrap();
        assert!(head.starts_with("GET /ws HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("host: 127.0.0.1:9001\r\n"), "{head}");
        assert!(head.contains("sec-websocket-protocol: chat\r\n"), "{head}");
        assert!(head.contains("origin: http://127.0.0.1\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
    }

    #[test]
    fn response_head_parses_and_reports_length() {
        let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00";
        let (response, len) = parse_response_head(raw).unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(response.headers()["upgrade"], "websocket");
        assert_eq!(len, raw.len() - 2);
        assert!(parse_response_head(b"HTTP/1.1 101 Swi").unwrap().is_none());
        assert!(matches!(
            parse_response_head(b"HTTP/1.1 abc\r\n\r\n"),
            Err(Error::InvalidResponse(_))
        ));
    }
}

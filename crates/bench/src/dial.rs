//! Opening benchmark connections, from the default source address through
//! [`pylon_ws::client::connect`] or from a chosen one with a handshake run here.
//!
//! Binding the source address matters past about 28,000 connections to one server
//! address and port: Linux gives each source address its own ephemeral port range
//! (`net.ipv4.ip_local_port_range`, 32768-60999 by default), so spreading connections
//! over 127.0.0.1, 127.0.0.2, ... multiplies the number that fit.

use std::io;
use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use pylon_proto::handshake::ClientRequest;
use pylon_ws::client::{self, ClientConfig};
use pylon_ws::{Config, Error, Role, WebSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Maximum size of the server's response head, in bytes; the same limit as
/// `pylon_ws::client`.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Maximum number of headers in the server's response.
const MAX_RESPONSE_HEADERS: usize = 64;

/// A `ws://` URL resolved once, for connections that bind their source address.
#[derive(Clone, Debug)]
pub(crate) struct Endpoint {
    url: String,
    addrs: Vec<SocketAddr>,
    host_header: String,
    path: String,
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
        Ok(Endpoint {
            url: url.to_owned(),
            addrs,
            host_header,
            path,
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

/// Opens a WebSocket to `url` with `pylon_ws::client::connect`, within
/// `config.handshake_timeout`.
pub(crate) async fn connect(url: &str, config: &Config) -> Result<WebSocket<TcpStream>, Error> {
    let client_config = ClientConfig {
        ws: config.clone(),
        ..ClientConfig::default()
    };
    let (ws, _response) = client::connect(url, client_config).await?;
    Ok(ws)
}

/// Opens a WebSocket to `endpoint` from `source` (port chosen by the kernel), within
/// `config.handshake_timeout`.
pub(crate) async fn connect_from(
    endpoint: &Endpoint,
    source: IpAddr,
    config: &Config,
) -> Result<WebSocket<TcpStream>, Error> {
    let addr = endpoint
        .addr_for(source)
        .map_err(|err| Error::Url(err.to_string()))?;
    let timeout = config.handshake_timeout;
    match tokio::time::timeout(timeout, handshake_from(endpoint, addr, source, config)).await {
        Ok(result) => result,
        Err(_) => Err(Error::HandshakeTimeout),
    }
}

async fn handshake_from(
    endpoint: &Endpoint,
    addr: SocketAddr,
    source: IpAddr,
    config: &Config,
) -> Result<WebSocket<TcpStream>, Error> {
    let socket = if source.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    let mut stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;

    let request = ClientRequest::new(Vec::new());
    let headers = request.try_headers(&endpoint.host_header)?;
    stream
        .write_all(&encode_request_head(&endpoint.path, &headers))
        .await?;

    let (status, response_headers, rest) = read_response_head(&mut stream).await?;
    request.verify_response(status, &response_headers)?;
    Ok(WebSocket::from_raw(
        stream,
        Role::Client,
        config.clone(),
        rest.freeze(),
    ))
}

fn encode_request_head(path: &str, headers: &HeaderMap) -> Vec<u8> {
    let mut head = format!("GET {path} HTTP/1.1\r\n").into_bytes();
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Reads the response head. Returns its status and headers with the bytes that followed
/// it, which are already WebSocket frames.
async fn read_response_head(
    stream: &mut TcpStream,
) -> Result<(StatusCode, HeaderMap, BytesMut), Error> {
    let mut buf = BytesMut::with_capacity(1024);
    loop {
        if buf.len() >= MAX_RESPONSE_HEAD {
            return Err(Error::InvalidResponse(format!(
                "response head is larger than {MAX_RESPONSE_HEAD} bytes"
            )));
        }
        let room = MAX_RESPONSE_HEAD - buf.len();
        buf.reserve(room.min(4096));
        let read = (&mut *stream).take(room as u64).read_buf(&mut buf).await?;
        if read == 0 {
            return Err(Error::InvalidResponse(
                "server closed the connection before the response head was complete".to_owned(),
            ));
        }
        if let Some((status, headers, head_len)) = parse_response_head(&buf)? {
            let rest = buf.split_off(head_len);
            return Ok((status, headers, rest));
        }
    }
}

fn parse_response_head(buf: &[u8]) -> Result<Option<(StatusCode, HeaderMap, usize)>, Error> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut parsed = httparse::Response::new(&mut slots);
    let head_len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => {
            return Err(Error::InvalidResponse(format!(
                "malformed response head: {err}"
            )));
        }
    };
    let code = parsed.code.unwrap_or_default();
    let status = StatusCode::from_u16(code)
        .map_err(|_| Error::InvalidResponse(format!("invalid status code {code}")))?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| Error::InvalidResponse(format!("invalid header {:?}", header.name)))?;
        let value = HeaderValue::from_bytes(header.value).map_err(|_| {
            Error::InvalidResponse(format!("invalid value of header {:?}", header.name))
        })?;
        headers.append(name, value);
    }
    Ok(Some((status, headers, head_len)))
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
    fn response_head_parses_with_trailing_frame() {
        let raw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x00";
        let (status, headers, len) = parse_response_head(raw).unwrap().unwrap();
        assert_eq!(status, StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(headers["upgrade"], "websocket");
        assert_eq!(len, raw.len() - 2);
        assert!(parse_response_head(b"HTTP/1.1 101 Swi").unwrap().is_none());
    }

    #[test]
    fn refused_connect_gets_hint() {
        let err = Error::Io(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert_eq!(failure_kind(&err), "connection refused");
        let text = describe_failure(&err, "ws://127.0.0.1:9/ws/echo");
        assert!(text.contains("ws://127.0.0.1:9/ws/echo"), "{text}");
        assert!(text.contains("is a server listening"), "{text}");
    }

    #[test]
    fn open_file_limit_is_classified() {
        let err = Error::Io(io::Error::from_raw_os_error(EMFILE));
        assert_eq!(failure_kind(&err), "too many open files");
    }
}

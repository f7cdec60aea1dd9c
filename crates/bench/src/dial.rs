//! Opening benchmark connections, from the default source address through
//! [`pylon_ws::client::connect`] or from a chosen one through
//! [`pylon_ws::client::connect_with_stream`].
//!
//! Binding the source address matters past about 28,000 connections to one server
//! address and port: Linux gives each source address its own ephemeral port range
//! (`net.ipv4.ip_local_port_range`, 32768-60999 by default), so spreading connections
//! over 127.0.0.1, 127.0.0.2, ... multiplies the number that fit.

use std::io;
use std::net::{IpAddr, SocketAddr};

use anyhow::Context;
use http::Uri;
use pylon_ws::client::{self, ClientConfig};
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

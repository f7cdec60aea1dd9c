//! WebSockets over HTTP/3 (RFC 9220): extended CONNECT with `:protocol = websocket` on a
//! QUIC connection, through the in-project HTTP/3 layer [`pylon_h3`].
//!
//! Server: build a QUIC endpoint with [`server_endpoint`], accept each connection with
//! [`H3Connection::accept`], take requests from [`H3Connection::next_request`], route
//! them on [`H3Request::path`], and [`H3Request::accept`] them into a
//! [`WebSocket<H3Stream>`] with the [`ServerConfig`] of the route. A request that fails
//! the handshake checks gets its error response (400, 403 or 426) there.
//!
//! Client: [`connect_h3`] opens one WebSocket on a new QUIC connection, and [`H3Client`]
//! keeps one connection per server and opens many WebSockets on it. [`H3Client::tunnel`]
//! returns the raw byte stream of an extended CONNECT, for tools that write WebSocket
//! frames themselves.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use pylon_h3::{
    ClientConnection, Code, IncomingRequest, Protocol, RequestStream, ServerConnection,
};
use pylon_proto::Role;
use pylon_proto::handshake::{self, CONNECT_PROTOCOL, ClientRequest, HandshakeError};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tracing::{debug, info};

pub use pylon_h3::H3Stream;

use crate::WebSocket;
use crate::client::ClientConfig;
use crate::server::ServerConfig;
use crate::tls::ClientTls;

/// An error of a WebSocket over HTTP/3.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum H3Error {
    /// The HTTP/3 layer failed: a protocol error, a reset stream, a closed connection, or
    /// a server without extended CONNECT ([`pylon_h3::Error::ConnectProtocolDisabled`]).
    #[error(transparent)]
    Http3(#[from] pylon_h3::Error),
    /// The WebSocket handshake failed, for example with a non-2xx status.
    #[error("websocket handshake over HTTP/3 failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The TLS settings are unusable.
    #[error("invalid TLS configuration for HTTP/3: {0}")]
    TlsConfig(String),
    /// The URL is not an `https://` or `wss://` URL with a host.
    #[error("invalid HTTP/3 websocket url: {0}")]
    Url(String),
    /// The UDP socket of the QUIC endpoint could not be opened.
    #[error("failed to open a QUIC endpoint on {addr}: {source}")]
    Endpoint {
        /// The local address.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The QUIC handshake failed or the connection could not start.
    #[error("QUIC connection to {addr} failed: {reason}")]
    Connect {
        /// The server address.
        addr: SocketAddr,
        /// What failed.
        reason: String,
    },
    /// Resolving the host name failed.
    #[error("failed to resolve {host}: {source}")]
    Resolve {
        /// The host name.
        host: String,
        /// The resolver error.
        source: std::io::Error,
    },
    /// The QUIC and HTTP/3 handshakes did not finish within `Config::handshake_timeout`.
    #[error("websocket handshake over HTTP/3 timed out after {0:?}")]
    HandshakeTimeout(Duration),
}

/// QUIC keep-alive interval of both sides. A WebSocket that sends nothing, with pings
/// off or less frequent than the idle timeout, still keeps its connection open, as a TCP
/// connection would.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// QUIC idle timeout of both sides: a peer that sends nothing, not even the
/// acknowledgments of keep-alives, for this long is gone.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Returns the QUIC transport settings of Pylon's HTTP/3 endpoints: quinn 0.11 defaults
/// (100 concurrent streams each way) with [`KEEP_ALIVE_INTERVAL`] and [`IDLE_TIMEOUT`].
/// Receive window of each QUIC stream, as over HTTP/2 (`Http2Config`). quinn 0.11 sets no
/// connection-wide window by default, so this bounds what one connection whose
/// WebSockets are not read can make the peer buffer: 100 streams of 256 KiB, 25 MiB, where
/// quinn's 1.25 MB default allowed about 125 MB. A connection-wide window would bound it
/// further, but QUIC flow control also covers the HEADERS of new requests, so unread
/// streams would then stall every new WebSocket on the connection.
const STREAM_RECEIVE_WINDOW: u32 = 256 * 1024;

fn transport_config() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport.stream_receive_window(quinn::VarInt::from_u32(STREAM_RECEIVE_WINDOW));
    transport.keep_alive_interval(Some(KEEP_ALIVE_INTERVAL));
    // 60 s fits a QUIC varint of milliseconds, so the conversion cannot fail.
    if let Ok(timeout) = quinn::IdleTimeout::try_from(IDLE_TIMEOUT) {
        transport.max_idle_timeout(Some(timeout));
    }
    transport
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the QUIC server settings: TLS 1.3 only (QUIC requires it), ALPN `h3`, and the
/// ring provider, presenting `cert_chain` (leaf first) signed by `key`.
///
/// # Errors
///
/// [`H3Error::TlsConfig`] if the key does not match the certificate.
pub fn server_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<quinn::ServerConfig, H3Error> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| H3Error::TlsConfig(error.to_string()))?
        .with_no_client_auth()
        .with_single_cert(cert_chain, key)
        .map_err(|error| {
            H3Error::TlsConfig(format!(
                "invalid server certificate or key (check that the key belongs to the certificate): {error}"
            ))
        })?;
    tls.alpn_protocols = vec![pylon_h3::ALPN.to_vec()];
    let crypto =
        QuicServerConfig::try_from(tls).map_err(|error| H3Error::TlsConfig(error.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}

/// Builds the QUIC server settings like [`server_config`], presenting the certificates
/// of an existing TLS server configuration, so that a TCP listener and a QUIC listener
/// of one server show the same certificate. Only the certificate resolver of `tcp` is
/// used; versions (TLS 1.3 only) and ALPN (`h3`) are set here.
///
/// # Errors
///
/// [`H3Error::TlsConfig`] if the ring provider lacks the TLS 1.3 suite QUIC starts with.
pub fn server_config_from_tls(tcp: &rustls::ServerConfig) -> Result<quinn::ServerConfig, H3Error> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|error| H3Error::TlsConfig(error.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::clone(&tcp.cert_resolver));
    tls.alpn_protocols = vec![pylon_h3::ALPN.to_vec()];
    let crypto =
        QuicServerConfig::try_from(tls).map_err(|error| H3Error::TlsConfig(error.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport_config()));
    Ok(config)
}

/// Opens a QUIC server endpoint on UDP `addr`.
///
/// # Errors
///
/// [`H3Error::Endpoint`] if the UDP socket cannot be bound.
pub fn server_endpoint(
    addr: SocketAddr,
    config: quinn::ServerConfig,
) -> Result<quinn::Endpoint, H3Error> {
    quinn::Endpoint::server(config, addr).map_err(|source| H3Error::Endpoint { addr, source })
}

/// One HTTP/3 connection on the server, yielding validated WebSocket requests.
pub struct H3Connection {
    inner: ServerConnection,
    /// How long sending a response may take; see [`H3Connection::accept`].
    response_timeout: Duration,
}

impl H3Connection {
    /// Completes the QUIC handshake of an incoming connection and starts HTTP/3 on it,
    /// within `timeout`.
    ///
    /// `timeout` also bounds the sending of each error response (400, 403, 404, 426),
    /// whose stream is reset with H3_REQUEST_CANCELLED when the peer does not take it in
    /// time, for instance because it grants no flow control credit.
    ///
    /// # Errors
    ///
    /// [`H3Error::Connect`] if the QUIC handshake fails, [`H3Error::HandshakeTimeout`]
    /// if it takes too long, [`H3Error::Http3`] if HTTP/3 cannot start.
    pub async fn accept(incoming: quinn::Incoming, timeout: Duration) -> Result<Self, H3Error> {
        let addr = incoming.remote_address();
        let start = async {
            let quic = incoming.await.map_err(|error| H3Error::Connect {
                addr,
                reason: error.to_string(),
            })?;
            let inner = ServerConnection::new(quic, pylon_h3::Config::default()).await?;
            Ok::<_, H3Error>(inner)
        };
        let inner = tokio::time::timeout(timeout, start)
            .await
            .map_err(|_| H3Error::HandshakeTimeout(timeout))??;
        debug!(remote = %addr, "HTTP/3 connection accepted");
        Ok(Self {
            inner,
            response_timeout: timeout,
        })
    }

    /// Returns the next WebSocket request, or `None` once the connection is closed.
    ///
    /// Requests that break the HTTP/3 rules (RFC 9114 section 4.3) were already reset
    /// with H3_MESSAGE_ERROR. Requests that cannot be a WebSocket on any route are not
    /// returned. A task of their own sends their error response: 400 for a method other
    /// than CONNECT or a missing or unknown `:protocol`, and 426 with
    /// `Sec-WebSocket-Version: 13` for another version.
    /// Route the rest on [`H3Request::path`].
    pub async fn next_request(&mut self) -> Option<H3Request> {
        // Origins and compression depend on the route, so they are checked in accept.
        let route_independent = handshake::ServerConfig::default();
        loop {
            let IncomingRequest { request, stream } = self.inner.accept().await?;
            let protocol = request
                .extensions()
                .get::<Protocol>()
                .map(|protocol| protocol.0.clone());
            let checked = handshake::validate_connect_request(
                request.method(),
                protocol.as_deref(),
                request.uri(),
                request.headers(),
                &route_independent,
            );
            match checked {
                Ok(_) => {
                    return Some(H3Request {
                        request,
                        stream,
                        response_timeout: self.response_timeout,
                    });
                }
                Err(error) => {
                    info!(
                        remote = %self.inner.quic().remote_address(),
                        uri = %request.uri(),
                        %error,
                        label = error.label(),
                        "websocket over HTTP/3 rejected"
                    );
                    let (parts, body) = error.response().into_parts();
                    // A peer that does not read the response must not hold up the
                    // requests behind it.
                    tokio::spawn(respond_with_body(
                        stream,
                        Response::from_parts(parts, ()),
                        body.into(),
                        self.response_timeout,
                    ));
                }
            }
        }
    }

    /// Starts a graceful shutdown with GOAWAY: open WebSockets go on, new requests are
    /// rejected.
    ///
    /// # Errors
    ///
    /// [`H3Error::Http3`] if GOAWAY cannot be sent.
    pub async fn shutdown(&self) -> Result<(), H3Error> {
        Ok(self.inner.shutdown().await?)
    }

    /// Returns the QUIC connection.
    pub fn quic(&self) -> &quinn::Connection {
        self.inner.quic()
    }
}

/// Sends a final response with a body on a request stream and ends it, within `timeout`.
/// Failures are logged, because the peer may already be gone. A response that is not
/// sent in time resets the stream with H3_REQUEST_CANCELLED, so that a peer that grants
/// no flow control credit cannot keep the stream, and with it the connection, open.
async fn respond_with_body(
    mut stream: RequestStream,
    response: Response<()>,
    body: Bytes,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, stream.send_response(&response)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            debug!(%error, "failed to send an HTTP/3 error response");
            return;
        }
        Err(_) => {
            debug!(
                ?timeout,
                "timed out sending an HTTP/3 error response; resetting the stream"
            );
            stream.reset(Code::H3_REQUEST_CANCELLED);
            return;
        }
    }
    let mut tunnel = stream.into_tunnel();
    let finish = async {
        if !body.is_empty() {
            tunnel.write_all(&body).await?;
        }
        tunnel.shutdown().await
    };
    match tokio::time::timeout_at(deadline, finish).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => debug!(%error, "failed to finish an HTTP/3 error response"),
        Err(_) => {
            debug!(
                ?timeout,
                "timed out sending an HTTP/3 error response; resetting the stream"
            );
            tunnel.reset(Code::H3_REQUEST_CANCELLED);
        }
    }
}

/// A request on an HTTP/3 connection whose response is not sent yet.
#[derive(Debug)]
pub struct H3Request {
    request: Request<()>,
    stream: RequestStream,
    /// The bound on sending an error response, from [`H3Connection::accept`].
    response_timeout: Duration,
}

impl H3Request {
    /// Returns the request path, without the query.
    pub fn path(&self) -> &str {
        self.request.uri().path()
    }

    /// Returns the request, with its headers and full URI.
    pub fn request(&self) -> &Request<()> {
        &self.request
    }

    /// Validates the request as a WebSocket extended CONNECT (RFC 9220) with `config`,
    /// sends the 200 response and returns the WebSocket.
    ///
    /// A request that fails the checks gets its error response here: 400 for a missing
    /// or unknown `:protocol` or a method other than CONNECT, 426 with
    /// `Sec-WebSocket-Version: 13` for another version, 403 for a rejected origin.
    /// Sending the 200 response may take `config.ws.handshake_timeout`, and the stream
    /// is then reset with H3_REQUEST_CANCELLED.
    ///
    /// # Errors
    ///
    /// [`H3Error::Handshake`] for a rejected request, [`H3Error::Http3`] if the response
    /// cannot be sent, [`H3Error::HandshakeTimeout`] if it is not sent in time.
    pub async fn accept(mut self, config: &ServerConfig) -> Result<WebSocket<H3Stream>, H3Error> {
        let protocol = self
            .request
            .extensions()
            .get::<Protocol>()
            .map(|protocol| protocol.0.clone());
        let accept = match handshake::validate_connect_request(
            self.request.method(),
            protocol.as_deref(),
            self.request.uri(),
            self.request.headers(),
            &config.handshake,
        ) {
            Ok(accept) => accept,
            Err(error) => {
                debug!(uri = %self.request.uri(), %error, "websocket over HTTP/3 rejected");
                let (parts, body) = error.response().into_parts();
                respond_with_body(
                    self.stream,
                    Response::from_parts(parts, ()),
                    body.into(),
                    self.response_timeout,
                )
                .await;
                return Err(H3Error::Handshake(error));
            }
        };
        let timeout = config.ws.handshake_timeout;
        match tokio::time::timeout(timeout, self.stream.send_response(&accept.response())).await {
            Ok(result) => result?,
            Err(_) => {
                self.stream.reset(Code::H3_REQUEST_CANCELLED);
                return Err(H3Error::HandshakeTimeout(timeout));
            }
        }
        let mut ws_config = config.ws.clone();
        ws_config.proto.deflate = accept.deflate;
        let tunnel = self.stream.into_tunnel();
        debug!(
            stream = tunnel.id(),
            path = self.request.uri().path(),
            "websocket over HTTP/3 accepted"
        );
        let mut ws = WebSocket::from_raw(tunnel, Role::Server, ws_config, Bytes::new());
        ws.set_protocol(accept.protocol);
        Ok(ws)
    }

    /// Sends `response` as it is, without the WebSocket checks of [`H3Request::accept`],
    /// and returns the raw stream of the request. After a 2xx response to the extended
    /// CONNECT, the stream is the tunnel, so that a tool that writes WebSocket frames
    /// itself, such as a scripted test server, can respond with any status and headers.
    /// After another status, writes to the stream are the response body.
    ///
    /// # Errors
    ///
    /// [`H3Error::Http3`] if the response headers are invalid or cannot be sent.
    pub async fn respond(mut self, response: &Response<()>) -> Result<H3Stream, H3Error> {
        self.stream.send_response(response).await?;
        let tunnel = self.stream.into_tunnel();
        debug!(
            stream = tunnel.id(),
            status = response.status().as_u16(),
            path = self.request.uri().path(),
            "raw response sent on an HTTP/3 request"
        );
        Ok(tunnel)
    }

    /// Answers with `status` and a plain-text `reason`, for example 404 for an unknown
    /// path.
    pub async fn reject(self, status: StatusCode, reason: &str) {
        let response = Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(())
            .unwrap_or_default();
        let body = Bytes::from(format!("{reason}\n"));
        respond_with_body(self.stream, response, body, self.response_timeout).await;
    }
}

/// The parts of an `https://` or `wss://` URL that a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    host: String,
    port: u16,
    /// `https://authority/path?query`, the request URI.
    uri: Uri,
}

impl Target {
    fn parse(url: &str) -> Result<Self, H3Error> {
        let uri: Uri = url
            .parse()
            .map_err(|error| H3Error::Url(format!("cannot parse {url:?}: {error}")))?;
        match uri.scheme_str() {
            Some(scheme)
                if scheme.eq_ignore_ascii_case("wss") || scheme.eq_ignore_ascii_case("https") => {}
            _ => {
                return Err(H3Error::Url(format!(
                    "{url:?} is not a wss:// or https:// URL; HTTP/3 always runs over TLS"
                )));
            }
        }
        let authority = uri
            .authority()
            .ok_or_else(|| H3Error::Url(format!("{url:?} has no host")))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(443);
        let path = uri.path_and_query().map_or("/", |path| path.as_str());
        // RFC 9220 section 3: a wss:// URL is requested with :scheme https.
        let uri = Uri::builder()
            .scheme("https")
            .authority(authority.as_str())
            .path_and_query(path)
            .build()
            .map_err(|error| H3Error::Url(format!("{url:?}: {error}")))?;
        Ok(Self { host, port, uri })
    }
}

/// H3_NO_ERROR, the application error code of a graceful close (RFC 9114 section 8.1).
const H3_NO_ERROR: u32 = 0x100;

/// An HTTP/3 client that keeps one QUIC connection per server, so many WebSockets to the
/// same server share it. Clones share the pool.
#[derive(Clone)]
pub struct H3Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    tls: Arc<QuicClientConfig>,
    endpoints: tokio::sync::Mutex<HashMap<bool, quinn::Endpoint>>,
    connections: tokio::sync::Mutex<HashMap<(String, u16), ClientConnection>>,
    timeout: Duration,
}

impl std::fmt::Debug for H3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Client").finish_non_exhaustive()
    }
}

impl H3Client {
    /// Creates a client that verifies servers with `tls` and gives up on a QUIC and
    /// HTTP/3 handshake after `handshake_timeout`.
    ///
    /// # Errors
    ///
    /// [`H3Error::TlsConfig`] if `tls` is unusable, for example with no trusted roots.
    pub fn new(tls: &ClientTls, handshake_timeout: Duration) -> Result<Self, H3Error> {
        let rustls = tls
            .rustls_config(pylon_h3::ALPN)
            .map_err(|error| H3Error::TlsConfig(error.to_string()))?;
        let tls = QuicClientConfig::try_from(rustls)
            .map_err(|error| H3Error::TlsConfig(error.to_string()))?;
        Ok(Self {
            inner: Arc::new(ClientInner {
                tls: Arc::new(tls),
                endpoints: tokio::sync::Mutex::new(HashMap::new()),
                connections: tokio::sync::Mutex::new(HashMap::new()),
                timeout: handshake_timeout,
            }),
        })
    }

    /// Closes every QUIC connection of the pool with H3_NO_ERROR and waits, at most
    /// `timeout`, until the peers were notified.
    ///
    /// QUIC runs in the process, not in the kernel, so a process that exits right after
    /// its last WebSocket ended may never send the stream's end or the connection close,
    /// and the server then waits for its own timeouts. Call this before exiting.
    pub async fn close(&self, timeout: Duration) {
        self.inner.connections.lock().await.clear();
        let endpoints: Vec<quinn::Endpoint> = self
            .inner
            .endpoints
            .lock()
            .await
            .values()
            .cloned()
            .collect();
        for endpoint in &endpoints {
            endpoint.close(quinn::VarInt::from_u32(H3_NO_ERROR), b"");
        }
        let idle = async {
            for endpoint in &endpoints {
                endpoint.wait_idle().await;
            }
        };
        if tokio::time::timeout(timeout, idle).await.is_err() {
            debug!(?timeout, "QUIC endpoints did not finish closing in time");
        }
    }

    /// Returns a local endpoint for the address family of `remote`.
    async fn endpoint(&self, remote: SocketAddr) -> Result<quinn::Endpoint, H3Error> {
        let mut endpoints = self.inner.endpoints.lock().await;
        if let Some(endpoint) = endpoints.get(&remote.is_ipv6()) {
            return Ok(endpoint.clone());
        }
        let local: SocketAddr = if remote.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let endpoint = quinn::Endpoint::client(local).map_err(|source| H3Error::Endpoint {
            addr: local,
            source,
        })?;
        endpoints.insert(remote.is_ipv6(), endpoint.clone());
        Ok(endpoint)
    }

    /// Returns the pooled HTTP/3 connection to the target, opening one if there is none
    /// or the last one is closed or received GOAWAY.
    async fn connection(&self, target: &Target) -> Result<ClientConnection, H3Error> {
        let key = (target.host.clone(), target.port);
        // NOTE: the pool stays locked during a QUIC handshake, so that concurrent
        // requests to one server share one new connection. Requests to other servers
        // wait for that handshake too.
        let mut connections = self.inner.connections.lock().await;
        if let Some(connection) = connections.get(&key) {
            if connection.is_usable() {
                return Ok(connection.clone());
            }
            connections.remove(&key);
        }
        let connection = tokio::time::timeout(self.inner.timeout, self.open(target))
            .await
            .map_err(|_| H3Error::HandshakeTimeout(self.inner.timeout))??;
        connections.insert(key, connection.clone());
        Ok(connection)
    }

    async fn open(&self, target: &Target) -> Result<ClientConnection, H3Error> {
        let addr = tokio::net::lookup_host((target.host.as_str(), target.port))
            .await
            .map_err(|source| H3Error::Resolve {
                host: target.host.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| H3Error::Resolve {
                host: target.host.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            })?;
        let endpoint = self.endpoint(addr).await?;
        let mut config = quinn::ClientConfig::new(self.inner.tls.clone());
        let mut transport = transport_config();
        // A server must not open bidirectional streams (RFC 9114 section 6.1).
        transport.max_concurrent_bidi_streams(0u32.into());
        config.transport_config(Arc::new(transport));
        let connect_error = |reason: String| H3Error::Connect { addr, reason };
        let quic = endpoint
            .connect_with(config, addr, &target.host)
            .map_err(|error| connect_error(error.to_string()))?
            .await
            .map_err(|error| connect_error(error.to_string()))?;
        debug!(remote = %addr, "HTTP/3 connection opened");
        Ok(ClientConnection::new(quic, pylon_h3::Config::default()).await?)
    }

    /// Opens an extended CONNECT with `:protocol = websocket` to `url` and returns the
    /// response and the raw tunnel, without checking the response. Raw WebSocket frames
    /// can be written to the tunnel; `headers` are sent as they are, so include
    /// `sec-websocket-version: 13` for a WebSocket server.
    ///
    /// # Errors
    ///
    /// [`H3Error::Url`] for a bad URL, [`H3Error::Http3`] with
    /// [`pylon_h3::Error::ConnectProtocolDisabled`] if the server did not enable extended
    /// CONNECT, and the connection errors of [`H3Client`].
    pub async fn tunnel(
        &self,
        url: &str,
        headers: HeaderMap,
    ) -> Result<(Response<()>, H3Stream), H3Error> {
        let target = Target::parse(url)?;
        let connection = self.connection(&target).await?;
        let mut request = Request::new(());
        *request.method_mut() = Method::CONNECT;
        *request.uri_mut() = target.uri.clone();
        *request.headers_mut() = headers;
        let timeout = self.inner.timeout;
        let response = tokio::time::timeout(
            timeout,
            connection.connect(&request, Some(CONNECT_PROTOCOL)),
        )
        .await
        .map_err(|_| H3Error::HandshakeTimeout(timeout))??;
        Ok(response)
    }

    /// Opens a WebSocket to `url` over HTTP/3, on the pooled connection to its server.
    /// Offers the subprotocols and compression of `config`, adds `config.headers`, and
    /// checks the response as RFC 9220 requires (a 2xx status, offered subprotocol and
    /// extension parameters).
    ///
    /// # Errors
    ///
    /// The errors of [`H3Client::tunnel`], and [`H3Error::Handshake`] for a non-2xx
    /// response or one that does not fit the offer.
    pub async fn connect(
        &self,
        url: &str,
        config: &ClientConfig,
    ) -> Result<(WebSocket<H3Stream>, Response<()>), H3Error> {
        self.connect_wrapped(url, config, |tunnel| tunnel).await
    }

    /// Works like [`H3Client::connect`], with the tunnel wrapped by `wrap` before the
    /// WebSocket takes it, so that [`crate::client::ClientStream`] can carry it.
    pub(crate) async fn connect_wrapped<S>(
        &self,
        url: &str,
        config: &ClientConfig,
        wrap: impl FnOnce(H3Stream) -> S,
    ) -> Result<(WebSocket<S>, Response<()>), H3Error>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let offer = ClientRequest::new(config.protocols.clone()).with_deflate(config.compression);
        let mut headers = offer.connect_headers()?;
        for (name, value) in &config.headers {
            headers.append(name, value.clone());
        }
        let (response, tunnel) = self.tunnel(url, headers).await?;
        let negotiated = offer.verify_connect(response.status(), response.headers())?;
        let mut ws_config = config.ws.clone();
        ws_config.proto.deflate = negotiated.deflate;
        let mut ws = WebSocket::from_raw(wrap(tunnel), Role::Client, ws_config, Bytes::new());
        ws.set_protocol(negotiated.protocol);
        Ok((ws, response))
    }
}

/// Opens one WebSocket to a `wss://` or `https://` URL over HTTP/3 on a new QUIC
/// connection, verified with `config.tls`. Use [`H3Client`] to share a connection among
/// many WebSockets.
///
/// # Errors
///
/// The errors of [`H3Client::new`] and [`H3Client::connect`].
pub async fn connect_h3(
    url: &str,
    config: ClientConfig,
) -> Result<(WebSocket<H3Stream>, Response<()>), H3Error> {
    let client = H3Client::new(&config.tls, config.ws.handshake_timeout)?;
    client.connect(url, &config).await
}

/// Opens the raw tunnel of an extended CONNECT with `:protocol = websocket` and
/// `Sec-WebSocket-Version: 13` to `url` on a new QUIC connection, for tools that write
/// WebSocket frames themselves, such as a conformance driver. The response is returned
/// unchecked.
///
/// # Errors
///
/// The errors of [`H3Client::new`] and [`H3Client::tunnel`].
pub async fn open_tunnel(
    url: &str,
    tls: &ClientTls,
    timeout: Duration,
) -> Result<(Response<()>, H3Stream), H3Error> {
    let client = H3Client::new(tls, timeout)?;
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::SEC_WEBSOCKET_VERSION,
        http::HeaderValue::from_static("13"),
    );
    client.tunnel(url, headers).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_from_wss_url() {
        let target = Target::parse("wss://localhost:8443/ws/chat?room=a").unwrap();
        assert_eq!(target.host, "localhost");
        assert_eq!(target.port, 8443);
        assert_eq!(
            target.uri.to_string(),
            "https://localhost:8443/ws/chat?room=a"
        );
    }

    #[test]
    fn target_default_port_and_ipv6() {
        let target = Target::parse("https://[::1]/").unwrap();
        assert_eq!(target.host, "::1");
        assert_eq!(target.port, 443);
    }

    #[test]
    fn target_rejects_plain_schemes() {
        assert!(matches!(
            Target::parse("ws://localhost/"),
            Err(H3Error::Url(_))
        ));
        assert!(matches!(
            Target::parse("http://localhost/"),
            Err(H3Error::Url(_))
        ));
    }
}

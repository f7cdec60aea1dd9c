//! `pylon serve`: one node serving the web pages, the WebSocket endpoints, health checks and
//! metrics on one TCP listener, over HTTP/1.1 and HTTP/2 (ALPN `h2` with TLS, prior
//! knowledge without), and with TLS also the WebSocket endpoints over HTTP/3 on the same
//! port number over UDP.

mod h3;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use pylon_chat::{ChatConfig, ChatService, MemoryBroker, Outbound, OutboundError, SqliteStore};
use pylon_proto::DeflateConfig;
use pylon_proto::handshake::OriginPolicy;
use pylon_ws::server::{Http2Stream, ServerConfig, TlsStream, Transport};
use pylon_ws::tls::{ReloadableCert, TlsAcceptor};
use pylon_ws::{CloseCode, FullPolicy, Message, Sender, TrySendError, WebSocket};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tracing::{Instrument, Span, debug, debug_span, info, info_span, warn};

use crate::ServeArgs;
use crate::metrics::Metrics;
use crate::web;

/// Outbound queue length of a chat connection, in messages. A client that falls this far
/// behind is closed with 1013 and recovers the backlog from history when it reconnects.
const CHAT_OUTBOUND_CAPACITY: usize = 1024;

/// Shared state of a running node.
struct Node {
    chat: ChatService,
    metrics: Metrics,
    chat_ws: ServerConfig,
    echo_ws: ServerConfig,
    /// False once the node drains, so `/readyz` takes it out of a load balancer.
    ready: AtomicBool,
    /// Turns true when the node drains, which shuts HTTP connections down gracefully:
    /// GOAWAY on HTTP/2, and no further keep-alive requests on HTTP/1.1.
    draining: watch::Sender<bool>,
    next_conn_id: AtomicU64,
    /// Outbound handles of every open WebSocket, used to close them all on shutdown.
    sockets: Mutex<HashMap<u64, Sender>>,
    /// Woken whenever a WebSocket leaves `sockets`.
    socket_closed: Notify,
    /// `Alt-Svc` header of HTTP responses, set when HTTP/3 listens.
    alt_svc: OnceLock<header::HeaderValue>,
}

/// Runs a node until SIGTERM or Ctrl-C, then drains it.
pub(crate) async fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Every option is checked before the node starts, so a bad value never surfaces at shutdown.
    let drain_timeout = args.drain_timeout()?;
    let data_dir = args.resolve_data_dir()?;
    std::fs::create_dir_all(&data_dir).with_context(|| {
        format!(
            "failed to create data directory {}; pass a writable --data-dir",
            data_dir.display()
        )
    })?;
    let db_path = data_dir.join("chat.sqlite3");
    let store = SqliteStore::open(&db_path)
        .with_context(|| format!("failed to open chat store {}", db_path.display()))?;
    let chat = ChatService::new(
        ChatConfig::default(),
        Arc::new(store),
        Arc::new(MemoryBroker::new()),
    );

    let (echo_ws, chat_ws) = websocket_configs(&args)?;
    let tls = tls_acceptor(&args)?;

    let node = Arc::new(Node {
        chat,
        metrics: Metrics::new(),
        chat_ws,
        echo_ws,
        ready: AtomicBool::new(true),
        draining: watch::channel(false).0,
        next_conn_id: AtomicU64::new(1),
        sockets: Mutex::new(HashMap::new()),
        socket_closed: Notify::new(),
        alt_svc: OnceLock::new(),
    });

    let listener = TcpListener::bind(args.listen).await.with_context(|| {
        format!(
            "failed to listen on {}; pick a free address with --listen",
            args.listen
        )
    })?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(address = %local, scheme, data_dir = %data_dir.display(), "pylon node listening");
    info!("open {scheme}://{local}/chat in a browser for the chat");
    let http3 = h3::start(&node, local, tls.as_ref(), args.no_http3)?;

    tokio::select! {
        () = accept_loop(&node, listener, tls) => {}
        signal = shutdown_signal() => {
            info!(signal, "shutting down: no new connections");
        }
    }
    if let Some(http3) = &http3 {
        http3.shutdown();
    }
    drain(&node, drain_timeout).await;
    if let Some(http3) = http3 {
        http3.close().await;
    }
    info!("pylon node stopped");
    Ok(())
}

/// Builds the WebSocket settings of the echo and chat endpoints from the command line.
fn websocket_configs(args: &ServeArgs) -> anyhow::Result<(ServerConfig, ServerConfig)> {
    let mut proto = pylon_proto::Config::default();
    proto.limits.max_message_size = args.max_message_size;
    proto.limits.max_frame_size = args.max_message_size;
    let ws = pylon_ws::Config {
        proto,
        ping_interval: args.ping_interval()?,
        pong_timeout: args.pong_timeout()?,
        handshake_timeout: args.handshake_timeout()?,
        ..pylon_ws::Config::default()
    };
    let deflate = (!args.no_compression).then(|| DeflateConfig {
        max_window_bits: args.compression_window_bits,
        ..DeflateConfig::default()
    });
    let handshake = pylon_proto::handshake::ServerConfig {
        origins: if args.allow_origins.is_empty() {
            OriginPolicy::Any
        } else {
            OriginPolicy::AllowList(args.allow_origins.clone())
        },
        deflate,
        ..Default::default()
    };
    let echo = ServerConfig {
        handshake: handshake.clone(),
        ws: ws.clone(),
    };
    // A chat node holds many mostly idle connections, and a compressor with context
    // takeover keeps about 250 to 380 KB per connection between messages. Resetting the
    // contexts after every message keeps idle chat connections free of them, at the cost
    // of a new context per compressed message.
    let chat_handshake = pylon_proto::handshake::ServerConfig {
        deflate: handshake.deflate.map(|deflate| DeflateConfig {
            no_context_takeover: true,
            peer_no_context_takeover: true,
            ..deflate
        }),
        ..handshake
    };
    let chat = ServerConfig {
        handshake: chat_handshake,
        ws: pylon_ws::Config {
            outbound_capacity: CHAT_OUTBOUND_CAPACITY,
            full_policy: FullPolicy::Close(CloseCode::TRY_AGAIN_LATER),
            ..ws
        },
    };
    Ok((echo, chat))
}

/// Builds the TLS acceptor from `--tls-cert` and `--tls-key`, or from a certificate
/// generated for `--tls-self-signed`. Returns `None` for plain HTTP.
fn tls_acceptor(args: &ServeArgs) -> anyhow::Result<Option<TlsAcceptor>> {
    if args.tls_self_signed {
        let cert = pylon_ws::tls::self_signed_localhost()?;
        info!(
            names = ?pylon_ws::tls::LOCALHOST_NAMES,
            sha256_fingerprint = %cert.sha256_fingerprint(),
            "generated a self-signed TLS certificate for this run"
        );
        return Ok(Some(cert.acceptor()?));
    }
    match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let reloadable = ReloadableCert::from_pem_files(cert, key)?;
            let config = pylon_ws::tls::server_config_with_resolver(reloadable.clone())?;
            info!(
                cert = %cert.display(),
                sha256_fingerprint = %reloadable.fingerprint(),
                "serving HTTPS and WSS; send SIGHUP to reload the certificate and key"
            );
            spawn_reload_on_sighup(reloadable);
            Ok(Some(TlsAcceptor::from(config)))
        }
        (None, None) => Ok(None),
        // clap requires both flags together, so this is only reached if that rule changes.
        _ => anyhow::bail!("--tls-cert and --tls-key must be given together"),
    }
}

/// Rereads the certificate and key files on every SIGHUP. Open connections keep their
/// sessions, and a failed reload keeps the current certificate.
fn spawn_reload_on_sighup(cert: Arc<ReloadableCert>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => hangup,
            Err(error) => {
                warn!(%error, "failed to install the SIGHUP handler; the certificate cannot be reloaded");
                return;
            }
        };
        tokio::spawn(async move {
            while hangup.recv().await.is_some() {
                match cert.reload() {
                    Ok(()) => info!(
                        cert = %cert.cert_path().display(),
                        sha256_fingerprint = %cert.fingerprint(),
                        "reloaded the TLS certificate"
                    ),
                    Err(error) => warn!(
                        %error,
                        sha256_fingerprint = %cert.fingerprint(),
                        "failed to reload the TLS certificate; still serving the previous one"
                    ),
                }
            }
        });
    }
    #[cfg(not(unix))]
    drop(cert);
}

async fn accept_loop(node: &Arc<Node>, listener: TcpListener, tls: Option<TlsAcceptor>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Running out of file descriptors is transient: back off instead of spinning.
                warn!(%error, "failed to accept a connection; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let node = Arc::clone(node);
        let tls = tls.clone();
        tokio::spawn(
            async move { serve_tcp(node, stream, tls).await }.instrument(info_span!("conn", %peer)),
        );
    }
}

async fn serve_tcp(node: Arc<Node>, stream: TcpStream, tls: Option<TlsAcceptor>) {
    let config = node.echo_ws.ws.clone();
    let mut draining = node.draining.subscribe();
    let is_tls = tls.is_some();
    let service = service_fn(move |req| {
        let node = Arc::clone(&node);
        async move { Ok::<_, Infallible>(route(node, req, is_tls).await) }
    });
    let shutdown = async move {
        // An error means the node is gone, which also ends the connection.
        let _ = draining.wait_for(|draining| *draining).await;
    };
    let result = match tls {
        Some(acceptor) => {
            pylon_ws::server::serve_tls_connection_until(
                stream, &acceptor, service, &config, shutdown,
            )
            .await
        }
        None => pylon_ws::server::serve_connection_until(stream, service, &config, shutdown).await,
    };
    if let Err(error) = result {
        debug!(%error, "HTTP connection ended with an error");
    }
}

/// Waits for SIGTERM or Ctrl-C and returns the name of the signal.
async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(error) => {
                warn!(%error, "failed to install the SIGTERM handler; only Ctrl-C stops the node");
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// Marks the node not ready, closes every WebSocket with 1001 and waits up to `timeout`
/// for the close handshakes to finish.
async fn drain(node: &Node, timeout: Duration) {
    node.ready.store(false, Ordering::SeqCst);
    node.draining.send_replace(true);
    let senders: Vec<Sender> = lock(&node.sockets).values().cloned().collect();
    info!(
        open = senders.len(),
        timeout_secs = timeout.as_secs_f64(),
        "closing WebSockets with 1001"
    );
    for sender in &senders {
        sender.close(CloseCode::GOING_AWAY, "server shutting down");
    }
    let all_closed = async {
        loop {
            let closed = node.socket_closed.notified();
            if lock(&node.sockets).is_empty() {
                return;
            }
            closed.await;
        }
    };
    if tokio::time::timeout(timeout, all_closed).await.is_err() {
        warn!(
            open = lock(&node.sockets).len(),
            "drain timeout reached; dropping the remaining WebSockets"
        );
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The map stays consistent even if a holder panicked: every update is a single insert or remove.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Routes one HTTP request and returns its response. `tls` tells whether the connection
/// runs TLS, which decides the stream type that a WebSocket upgrade recovers.
async fn route(node: Arc<Node>, mut req: Request<Incoming>, tls: bool) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let (route, mut response) = if is_plain_http2_connect(&req) {
        // A CONNECT without :protocol requests a TCP tunnel, which this node does not
        // proxy. Over HTTP/3 it gets 400 before routing, so it gets the same here instead
        // of the 404 of its empty path.
        debug!(uri = %req.uri(), "plain CONNECT over HTTP/2 rejected");
        let error = pylon_proto::handshake::HandshakeError::MissingProtocol;
        ("other", pylon_ws::server::reject(&error))
    } else {
        route_path(&node, &mut req, &path, tls)
    };
    node.metrics
        .http_requests
        .with_label_values(&[route, response.status().as_str()])
        .inc();
    if let Some(alt_svc) = node.alt_svc.get() {
        response
            .headers_mut()
            .insert(header::ALT_SVC, alt_svc.clone());
    }
    response
}

/// Returns whether `req` is an HTTP/2 CONNECT without the `:protocol` pseudo-header of an
/// extended CONNECT (RFC 8441).
fn is_plain_http2_connect(req: &Request<Incoming>) -> bool {
    req.version() == http::Version::HTTP_2
        && req.method() == Method::CONNECT
        && req.extensions().get::<hyper::ext::Protocol>().is_none()
}

/// Returns the route label and the response of a request for `path`.
fn route_path(
    node: &Arc<Node>,
    req: &mut Request<Incoming>,
    path: &str,
    tls: bool,
) -> (&'static str, Response<Full<Bytes>>) {
    match path {
        "/ws/echo" => ("/ws/echo", upgrade(node, req, Endpoint::Echo, tls)),
        "/ws/chat" => ("/ws/chat", upgrade(node, req, Endpoint::Chat, tls)),
        "/healthz" => (
            "/healthz",
            only_get(req).unwrap_or_else(|| text(StatusCode::OK, "ok\n")),
        ),
        "/readyz" => ("/readyz", only_get(req).unwrap_or_else(|| readiness(node))),
        "/metrics" => ("/metrics", only_get(req).unwrap_or_else(|| metrics(node))),
        // Browsers request an icon on every page. A 204 keeps those requests out of the 404s.
        "/favicon.ico" => ("/favicon.ico", empty(StatusCode::NO_CONTENT)),
        _ => match web::find(path) {
            Some(asset) => (
                asset.path,
                only_get(req).unwrap_or_else(|| {
                    response(StatusCode::OK, asset.content_type, asset.body.as_bytes())
                }),
            ),
            None => ("other", text(StatusCode::NOT_FOUND, "not found\n")),
        },
    }
}

/// Returns a 405 response for anything but GET and HEAD.
fn only_get(req: &Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        return None;
    }
    let mut resp = text(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed: use GET\n",
    );
    resp.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
    Some(resp)
}

fn readiness(node: &Node) -> Response<Full<Bytes>> {
    if node.ready.load(Ordering::SeqCst) {
        text(StatusCode::OK, "ready\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    }
}

fn metrics(node: &Node) -> Response<Full<Bytes>> {
    response(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        node.metrics.render().as_bytes(),
    )
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = status;
    resp
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    response(status, "text/plain; charset=utf-8", body.as_bytes())
}

fn response(status: StatusCode, content_type: &str, body: &[u8]) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::copy_from_slice(body)));
    *resp.status_mut() = status;
    if let Ok(value) = header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    resp
}

#[derive(Clone, Copy, Debug)]
enum Endpoint {
    Echo,
    Chat,
}

impl Endpoint {
    fn label(self) -> &'static str {
        match self {
            Endpoint::Echo => "echo",
            Endpoint::Chat => "chat",
        }
    }
}

/// Accepts or rejects a WebSocket upgrade request, and starts the connection's task once
/// hyper hands the stream over.
fn upgrade(
    node: &Arc<Node>,
    req: &mut Request<Incoming>,
    endpoint: Endpoint,
    tls: bool,
) -> Response<Full<Bytes>> {
    if !node.ready.load(Ordering::SeqCst) {
        return text(StatusCode::SERVICE_UNAVAILABLE, "server shutting down\n");
    }
    let config = match endpoint {
        Endpoint::Echo => &node.echo_ws,
        Endpoint::Chat => &node.chat_ws,
    };
    match pylon_ws::server::upgrade(req, config) {
        Ok((resp, pending)) => {
            let conn_id = node.next_conn_id.fetch_add(1, Ordering::Relaxed);
            let node = Arc::clone(node);
            let is_http2 = pending.transport() != Transport::Http1;
            // Each transport is a type parameter rather than a field, so the task of a
            // WebSocket keeps no room for its metrics label.
            match (is_http2, tls) {
                (false, false) => {
                    let span = socket_span::<H1>(conn_id, endpoint);
                    let upgraded = pending.finish::<TcpStream>();
                    spawn_socket::<_, H1>(span, node, conn_id, endpoint, upgraded);
                }
                (false, true) => {
                    let span = socket_span::<H1Tls>(conn_id, endpoint);
                    let upgraded = pending.finish::<TlsStream>();
                    spawn_socket::<_, H1Tls>(span, node, conn_id, endpoint, upgraded);
                }
                (true, false) => {
                    let span = socket_span::<H2>(conn_id, endpoint);
                    let upgraded = pending.finish::<Http2Stream>();
                    spawn_socket::<_, H2>(span, node, conn_id, endpoint, upgraded);
                }
                (true, true) => {
                    let span = socket_span::<H2Tls>(conn_id, endpoint);
                    let upgraded = pending.finish::<Http2Stream>();
                    spawn_socket::<_, H2Tls>(span, node, conn_id, endpoint, upgraded);
                }
            }
            resp
        }
        Err(error) => {
            debug!(%error, endpoint = endpoint.label(), "rejected WebSocket handshake");
            node.metrics
                .handshake_failures
                .with_label_values(&[error.label()])
                .inc();
            pylon_ws::server::reject(&error)
        }
    }
}

/// Transport of a WebSocket, as a type, with its value of the `transport` metrics label.
trait TransportLabel: Send + 'static {
    const LABEL: &'static str;
}

/// HTTP/1.1 upgrade over plain TCP.
struct H1;
/// HTTP/1.1 upgrade over TLS.
struct H1Tls;
/// HTTP/2 extended CONNECT over plain TCP (prior knowledge).
struct H2;
/// HTTP/2 extended CONNECT over TLS (ALPN `h2`).
struct H2Tls;
/// HTTP/3 extended CONNECT over QUIC.
struct H3;

impl TransportLabel for H1 {
    const LABEL: &'static str = "h1";
}
impl TransportLabel for H1Tls {
    const LABEL: &'static str = "h1_tls";
}
impl TransportLabel for H2 {
    const LABEL: &'static str = "h2";
}
impl TransportLabel for H2Tls {
    const LABEL: &'static str = "h2_tls";
}
impl TransportLabel for H3 {
    const LABEL: &'static str = "h3";
}

/// Returns the span of one WebSocket.
///
/// Each open span uses a few hundred bytes of subscriber memory, so a WebSocket has one
/// only while debug logs are on. It is a child of the HTTP connection's span, which
/// otherwise closes at the upgrade.
fn socket_span<T: TransportLabel>(conn_id: u64, endpoint: Endpoint) -> Span {
    debug_span!(
        "ws",
        conn_id,
        endpoint = endpoint.label(),
        transport = T::LABEL
    )
}

/// Spawns the task of one WebSocket over the stream type `S` and the transport `T`.
fn spawn_socket<S, T>(
    span: Span,
    node: Arc<Node>,
    conn_id: u64,
    endpoint: Endpoint,
    upgraded: impl Future<Output = Upgraded<S>> + Send + 'static,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: TransportLabel,
{
    // Boxed, so that the task keeps a pointer to the upgrade future instead of room for it
    // while the WebSocket is open.
    let upgraded = Box::pin(upgraded);
    // A task takes the size of its future's largest state, so each endpoint has a task
    // type of its own and an echo socket does not pay for the chat session.
    match endpoint {
        Endpoint::Echo => spawn_in(span, echo_socket::<S, T>(node, conn_id, upgraded)),
        Endpoint::Chat => spawn_in(span, chat_socket::<S, T>(node, conn_id, upgraded)),
    }
}

/// Spawns `task`, inside `span` unless the span is disabled. An instrumented future is 40
/// bytes larger, and tokio 1.54 rounds each task allocation up to a multiple of 128 bytes
/// on x86-64 and aarch64, so those 40 bytes can cost 128 per connection.
fn spawn_in(span: Span, task: impl Future<Output = ()> + Send + 'static) {
    if span.is_disabled() {
        tokio::spawn(task);
    } else {
        tokio::spawn(task.instrument(span));
    }
}

/// Output of `PendingUpgrade::finish`.
type Upgraded<S> = Result<WebSocket<S>, pylon_ws::Error>;

/// Sends every text and binary message back unchanged.
///
/// The loop is written out here instead of in a function of its own, and the received item
/// is unpacked at the `await`, because both save room in the future that the task keeps
/// for the life of the connection.
async fn echo_socket<S, T>(
    node: Arc<Node>,
    conn_id: u64,
    upgraded: impl Future<Output = Upgraded<S>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: TransportLabel,
{
    let Some(mut ws) = open_socket::<S, T>(&node, conn_id, Endpoint::Echo, upgraded).await else {
        return;
    };
    loop {
        let msg = match ws.recv().await {
            Some(Ok(msg)) => msg,
            Some(Err(error)) => {
                debug!(%error, "echo connection failed");
                break;
            }
            None => break,
        };
        if !matches!(msg, Message::Text(_) | Message::Binary(_)) {
            continue;
        }
        let len = msg.len();
        node.metrics.received("echo", len);
        if let Err(error) = ws.send(msg).await {
            debug!(%error, "echo send failed");
            break;
        }
        node.metrics.sent("echo", len);
    }
    close_socket::<T>(&node, conn_id, Endpoint::Echo);
}

async fn chat_socket<S, T>(
    node: Arc<Node>,
    conn_id: u64,
    upgraded: impl Future<Output = Upgraded<S>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: TransportLabel,
{
    let Some(mut ws) = open_socket::<S, T>(&node, conn_id, Endpoint::Chat, upgraded).await else {
        return;
    };
    chat(&node, conn_id, &mut ws).await;
    close_socket::<T>(&node, conn_id, Endpoint::Chat);
}

/// Waits for hyper to hand the connection over and registers the WebSocket. Returns `None`
/// if the upgrade failed.
async fn open_socket<S, T>(
    node: &Node,
    conn_id: u64,
    endpoint: Endpoint,
    upgraded: impl Future<Output = Upgraded<S>>,
) -> Option<WebSocket<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: TransportLabel,
{
    let mut ws = match upgraded.await {
        Ok(ws) => ws,
        Err(error) => {
            debug!(%error, "upgrade did not complete");
            return None;
        }
    };
    let labels = [endpoint.label(), T::LABEL];
    lock(&node.sockets).insert(conn_id, ws.sender());
    node.metrics
        .connections_total
        .with_label_values(&labels)
        .inc();
    node.metrics
        .connections_open
        .with_label_values(&labels)
        .inc();
    debug!("WebSocket open");
    Some(ws)
}

/// Unregisters a WebSocket that has ended.
fn close_socket<T: TransportLabel>(node: &Node, conn_id: u64, endpoint: Endpoint) {
    node.metrics
        .connections_open
        .with_label_values(&[endpoint.label(), T::LABEL])
        .dec();
    lock(&node.sockets).remove(&conn_id);
    node.socket_closed.notify_waiters();
    debug!("WebSocket closed");
}

/// Runs one chat session: client messages go to the chat service, which answers and
/// broadcasts through the connection's outbound queue.
async fn chat<S>(node: &Node, conn_id: u64, ws: &mut WebSocket<S>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let outbound = Arc::new(WsOutbound {
        conn_id,
        sender: ws.sender(),
        metrics: node.metrics.clone(),
    });
    let mut session = node.chat.connect(conn_id, outbound);
    while let Some(received) = ws.recv().await {
        match received {
            Ok(Message::Text(text)) => {
                node.metrics.received("chat", text.len());
                session.handle_text(text.as_str()).await;
            }
            Ok(Message::Binary(data)) => {
                node.metrics.received("chat", data.len());
                session.handle_binary(&data).await;
            }
            Ok(_) => {}
            Err(error) => {
                debug!(%error, "chat connection failed");
                break;
            }
        }
    }
    session.close().await;
}

/// Delivers chat events into a WebSocket's bounded outbound queue.
struct WsOutbound {
    conn_id: u64,
    sender: Sender,
    metrics: Metrics,
}

impl Outbound for WsOutbound {
    fn send_text(&self, text: String) -> Result<(), OutboundError> {
        let len = text.len();
        match self.sender.try_send(Message::text(text)) {
            Ok(()) => {
                self.metrics.sent("chat", len);
                Ok(())
            }
            Err(TrySendError::Full(_)) => {
                // The chat endpoint's policy closes a connection whose queue is full: the
                // client rejoins with `since` and recovers what it missed from the store.
                warn!(
                    conn_id = self.conn_id,
                    capacity = CHAT_OUTBOUND_CAPACITY,
                    "chat client reads too slowly; closing it with 1013"
                );
                self.metrics.slow_consumer_closes.inc();
                Err(OutboundError::Full)
            }
            Err(_) => Err(OutboundError::Closed),
        }
    }
}

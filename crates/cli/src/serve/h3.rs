//! HTTP/3 for `pylon serve`: with TLS on, a QUIC listener on the UDP port of the TCP
//! listener serves `/ws/echo` and `/ws/chat` as WebSockets over HTTP/3 (RFC 9220).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::StatusCode;
use http::header::HeaderValue;
use pylon_ws::h3::{H3Connection, H3Error, H3Request};
use pylon_ws::tls::TlsAcceptor;
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{Endpoint, H3, Node, socket_span, spawn_socket};

/// How long closing the QUIC endpoint waits for peers to acknowledge the close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// The QUIC listener of a node.
pub(super) struct Listener {
    endpoint: quinn::Endpoint,
    /// Set to true to send GOAWAY on every connection.
    shutdown: watch::Sender<bool>,
}

/// Starts the HTTP/3 listener on UDP `addr`, the address of the TCP listener, if TLS is on
/// and `--no-http3` is not set, and sets the node's `Alt-Svc` header. Returns `None`
/// otherwise.
pub(super) fn start(
    node: &Arc<Node>,
    addr: SocketAddr,
    tls: Option<&TlsAcceptor>,
    disabled: bool,
) -> anyhow::Result<Option<Listener>> {
    let Some(tls) = tls else {
        return Ok(None);
    };
    if disabled {
        info!("HTTP/3 is off (--no-http3)");
        return Ok(None);
    }
    let config = pylon_ws::h3::server_config_from_tls(tls.config())?;
    let endpoint = pylon_ws::h3::server_endpoint(addr, config)
        .map_err(|error| anyhow::anyhow!("{error}; pass --no-http3 to serve without HTTP/3"))?;
    let alt_svc = format!("h3=\":{}\"; ma=86400", addr.port());
    // The string is ASCII, so it is always a valid header value.
    if let Ok(value) = HeaderValue::from_str(&alt_svc) {
        let _ = node.alt_svc.set(value);
    }
    info!(address = %addr, "HTTP/3 listening on UDP");
    let (shutdown, shutdown_receiver) = watch::channel(false);
    tokio::spawn(accept_loop(
        Arc::clone(node),
        endpoint.clone(),
        shutdown_receiver,
    ));
    Ok(Some(Listener { endpoint, shutdown }))
}

impl Listener {
    /// Stops accepting QUIC connections and sends GOAWAY on the open ones, whose
    /// WebSockets go on until the drain closes them.
    pub(super) fn shutdown(&self) {
        self.endpoint.set_server_config(None);
        self.shutdown.send_replace(true);
    }

    /// Closes every QUIC connection and waits briefly for the peers to acknowledge.
    pub(super) async fn close(self) {
        self.endpoint
            .close(pylon_h3::Code::H3_NO_ERROR.into(), b"server stopped");
        if tokio::time::timeout(CLOSE_TIMEOUT, self.endpoint.wait_idle())
            .await
            .is_err()
        {
            debug!("QUIC peers did not acknowledge the close in time");
        }
    }
}

async fn accept_loop(node: Arc<Node>, endpoint: quinn::Endpoint, shutdown: watch::Receiver<bool>) {
    while let Some(incoming) = endpoint.accept().await {
        let peer = incoming.remote_address();
        let node = Arc::clone(&node);
        let shutdown = shutdown.clone();
        tokio::spawn(
            async move { serve_connection(node, incoming, shutdown).await }
                .instrument(info_span!("h3", %peer)),
        );
    }
    debug!("QUIC endpoint stopped accepting");
}

async fn serve_connection(
    node: Arc<Node>,
    incoming: quinn::Incoming,
    mut shutdown: watch::Receiver<bool>,
) {
    let timeout = node.echo_ws.ws.handshake_timeout;
    let mut connection = match H3Connection::accept(incoming, timeout).await {
        Ok(connection) => connection,
        Err(error) => {
            debug!(%error, "HTTP/3 connection failed to start");
            return;
        }
    };
    let mut goaway_sent = false;
    loop {
        tokio::select! {
            request = connection.next_request() => match request {
                Some(request) => {
                    tokio::spawn(serve_request(Arc::clone(&node), request).in_current_span());
                }
                None => break,
            },
            changed = shutdown.changed(), if !goaway_sent => {
                if changed.is_err() || *shutdown.borrow() {
                    goaway_sent = true;
                    if let Err(error) = connection.shutdown().await {
                        debug!(%error, "failed to send GOAWAY");
                    }
                }
            }
        }
    }
    debug!("HTTP/3 connection closed");
}

/// Routes one request: the WebSocket endpoints, 404 elsewhere.
async fn serve_request(node: Arc<Node>, request: H3Request) {
    let (route, endpoint) = match request.path() {
        "/ws/echo" => ("/ws/echo", Endpoint::Echo),
        "/ws/chat" => ("/ws/chat", Endpoint::Chat),
        _ => {
            count_request(&node, "other", StatusCode::NOT_FOUND);
            request.reject(StatusCode::NOT_FOUND, "not found").await;
            return;
        }
    };
    if !node.ready.load(Ordering::SeqCst) {
        count_request(&node, route, StatusCode::SERVICE_UNAVAILABLE);
        request
            .reject(StatusCode::SERVICE_UNAVAILABLE, "server shutting down")
            .await;
        return;
    }
    let config = match endpoint {
        Endpoint::Echo => &node.echo_ws,
        Endpoint::Chat => &node.chat_ws,
    };
    match request.accept(config).await {
        Ok(ws) => {
            count_request(&node, route, StatusCode::OK);
            let conn_id = node.next_conn_id.fetch_add(1, Ordering::Relaxed);
            let span = socket_span::<H3>(conn_id, endpoint);
            let upgraded = std::future::ready(Ok::<_, pylon_ws::Error>(ws));
            spawn_socket::<_, H3>(span, node, conn_id, endpoint, upgraded);
        }
        Err(H3Error::Handshake(error)) => {
            count_request(&node, route, error.status());
            node.metrics
                .handshake_failures
                .with_label_values(&[error.label()])
                .inc();
        }
        Err(error) => warn!(%error, "failed to respond to an HTTP/3 WebSocket request"),
    }
}

fn count_request(node: &Node, route: &str, status: StatusCode) {
    node.metrics
        .http_requests
        .with_label_values(&[route, status.as_str()])
        .inc();
}

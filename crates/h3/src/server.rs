//! The server side: accepting request streams and sending their responses.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use http::{Request, Response};
use quinn::{RecvStream, SendStream};
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::connection::{self, Config, Liveness, RequestGuard, Role, Shared};
use crate::error::{Code, Error, ProtocolError};
use crate::frame;
use crate::headers;
use crate::stream::H3Stream;

/// The server side of an HTTP/3 connection.
///
/// A background task accepts request streams and reads their headers concurrently, so a
/// slow or malformed request does not hold up the others. Malformed requests are reset
/// with H3_MESSAGE_ERROR and never reach [`ServerConnection::accept`].
pub struct ServerConnection {
    shared: Arc<Shared>,
    requests: mpsc::Receiver<IncomingRequest>,
    _liveness: Arc<Liveness>,
}

/// A request whose headers arrived, with the stream to send the response on.
#[derive(Debug)]
pub struct IncomingRequest {
    /// The request. An extended CONNECT carries [`crate::Protocol`] in its extensions.
    pub request: Request<()>,
    /// The stream to send the response on.
    pub stream: RequestStream,
}

/// A request stream after the request headers, before the response.
pub struct RequestStream {
    send: SendStream,
    recv: RecvStream,
    shared: Arc<Shared>,
    liveness: Arc<Liveness>,
    guard: RequestGuard,
}

impl std::fmt::Debug for RequestStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestStream")
            .field("id", &self.send.id())
            .finish_non_exhaustive()
    }
}

impl ServerConnection {
    /// Starts HTTP/3 on an accepted QUIC connection: sends SETTINGS with
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 and starts reading requests.
    ///
    /// # Errors
    ///
    /// [`Error::ConnectionLost`] or [`Error::Write`] if the control or QPACK streams
    /// cannot be opened.
    pub async fn new(quic: quinn::Connection, config: Config) -> Result<Self, Error> {
        let queue = config.max_queued_requests.max(1);
        let shared = connection::start(quic, Role::Server, config).await?;
        let (sender, requests) = mpsc::channel(queue);
        let liveness = Liveness::new(&shared.quic);
        if let Some(timeout) = shared.config.idle_connection_timeout {
            tokio::spawn(connection::close_when_idle(Arc::clone(&shared), timeout));
        }
        tokio::spawn(accept_requests(
            Arc::clone(&shared),
            Arc::downgrade(&liveness),
            sender,
        ));
        Ok(Self {
            shared,
            requests,
            _liveness: liveness,
        })
    }

    /// Returns the next request, or `None` once the connection is closed.
    pub async fn accept(&mut self) -> Option<IncomingRequest> {
        self.requests.recv().await
    }

    /// Starts a graceful shutdown: sends GOAWAY with the first request stream ID that
    /// will not be processed. Requests already accepted go on; new ones are reset with
    /// H3_REQUEST_REJECTED.
    ///
    /// # Errors
    ///
    /// [`Error::Write`] if the control stream cannot be written.
    pub async fn shutdown(&self) -> Result<(), Error> {
        self.shared.going_away.store(true, Ordering::SeqCst);
        let id = self.shared.next_request_id.load(Ordering::SeqCst);
        self.shared.send_goaway(id).await
    }

    /// Returns the QUIC connection.
    pub fn quic(&self) -> &quinn::Connection {
        &self.shared.quic
    }
}

async fn accept_requests(
    shared: Arc<Shared>,
    liveness: Weak<Liveness>,
    sender: mpsc::Sender<IncomingRequest>,
) {
    loop {
        let (mut send, mut recv) = match shared.quic.accept_bi().await {
            Ok(streams) => streams,
            Err(error) => {
                debug!(remote = %shared.quic.remote_address(), %error, "stopped accepting HTTP/3 requests");
                return;
            }
        };
        let id = quinn::VarInt::from(send.id()).into_inner();
        if shared.going_away.load(Ordering::SeqCst) {
            let _ = send.reset(Code::H3_REQUEST_REJECTED.into());
            let _ = recv.stop(Code::H3_REQUEST_REJECTED.into());
            continue;
        }
        shared.next_request_id.fetch_max(id + 4, Ordering::SeqCst);
        let guard = RequestGuard::new(&shared);
        tokio::spawn(read_request(
            Arc::clone(&shared),
            liveness.clone(),
            (send, recv),
            guard,
            sender.clone(),
        ));
    }
}

/// Reads frames up to the request's HEADERS and queues the request.
async fn read_request(
    shared: Arc<Shared>,
    liveness: Weak<Liveness>,
    (mut send, mut recv): (SendStream, RecvStream),
    guard: RequestGuard,
    sender: mpsc::Sender<IncomingRequest>,
) {
    let timeout = shared.config.request_header_timeout;
    let result = match tokio::time::timeout(timeout, read_request_headers(&shared, &mut recv)).await
    {
        Ok(result) => result,
        Err(_) => Err(Error::Stream(ProtocolError::new(
            Code::H3_REQUEST_INCOMPLETE,
            format!("request headers did not arrive within {timeout:?}"),
        ))),
    };
    match result {
        Ok(request) => {
            // Every application handle is gone, so the connection is closing anyway.
            let Some(liveness) = liveness.upgrade() else {
                return;
            };
            let stream = RequestStream {
                send,
                recv,
                shared: Arc::clone(&shared),
                liveness,
                guard,
            };
            // The receiver is gone only when the application dropped the connection.
            let _ = sender.send(IncomingRequest { request, stream }).await;
        }
        Err(Error::Stream(error)) => {
            info!(
                remote = %shared.quic.remote_address(),
                stream = %send.id(),
                code = %error.code,
                reason = %error.reason,
                "rejected an HTTP/3 request"
            );
            let _ = send.reset(error.code.into());
            let _ = recv.stop(error.code.into());
        }
        Err(Error::Connection(error)) => shared.close(&error),
        Err(error) => {
            debug!(remote = %shared.quic.remote_address(), %error, "HTTP/3 request stream failed")
        }
    }
}

async fn read_request_headers(
    shared: &Shared,
    recv: &mut RecvStream,
) -> Result<Request<()>, Error> {
    loop {
        let frame = match frame::read(
            recv,
            &[frame::HEADERS],
            shared.config.max_field_section_size,
        )
        .await
        {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                return Err(Error::Stream(ProtocolError::new(
                    Code::H3_REQUEST_INCOMPLETE,
                    "request stream ended before HEADERS",
                )));
            }
            // An oversized HEADERS frame is this request's problem, not the connection's.
            Err(Error::Connection(error)) if error.code == Code::H3_EXCESSIVE_LOAD => {
                return Err(Error::Stream(error));
            }
            Err(error) => return Err(error),
        };
        match frame.frame_type {
            frame::HEADERS => {
                let lines = connection::decode_headers(shared, &frame.payload)?;
                return headers::parse_request(lines).map_err(Error::Stream);
            }
            frame::DATA
            | frame::CANCEL_PUSH
            | frame::SETTINGS
            | frame::PUSH_PROMISE
            | frame::GOAWAY
            | frame::MAX_PUSH_ID => {
                return Err(connection::unexpected_on_request(frame.frame_type));
            }
            other if frame::is_http2_only(other) => {
                return Err(connection::unexpected_on_request(other));
            }
            // Reserved and unknown frame types before HEADERS are ignored.
            _ => {}
        }
    }
}

impl RequestStream {
    /// Sends the response headers.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidMessage`] or [`Error::HeadersTooLarge`] if the response cannot be
    /// sent, [`Error::Write`] if the stream fails.
    pub async fn send_response(&mut self, response: &Response<()>) -> Result<(), Error> {
        let lines = headers::response_lines(response)?;
        let bytes = connection::encode_headers(&self.shared, &lines)?;
        self.send.write_all(&bytes).await?;
        Ok(())
    }

    /// Sends a response with no body and ends the stream, as for a rejected request.
    ///
    /// # Errors
    ///
    /// As for [`RequestStream::send_response`].
    pub async fn send_final_response(mut self, response: &Response<()>) -> Result<(), Error> {
        self.send_response(response).await?;
        // Finishing fails only if the stream was already reset or finished.
        let _ = self.send.finish();
        let _ = self.recv.stop(Code::H3_NO_ERROR.into());
        Ok(())
    }

    /// Turns the stream into a tunnel of DATA frames, after a 2xx response to CONNECT.
    pub fn into_tunnel(self) -> H3Stream {
        H3Stream::new(self.send, self.recv, self.shared, self.liveness)
            .with_request_guard(self.guard)
    }

    /// Resets the stream in both directions with `code`.
    pub fn reset(mut self, code: Code) {
        let _ = self.send.reset(code.into());
        let _ = self.recv.stop(code.into());
    }
}

//! The client side: waiting for the server's SETTINGS and sending requests.

use std::sync::Arc;

use http::{Request, Response, StatusCode};
use tracing::debug;

use crate::connection::{self, Config, Liveness, Role, Shared};
use crate::error::{Code, Error, ProtocolError};
use crate::frame;
use crate::headers;
use crate::settings::Settings;
use crate::stream::H3Stream;

/// The client side of an HTTP/3 connection. Clones share the connection, so many
/// requests, such as many WebSockets, can run on it at once. The QUIC connection closes
/// when the last clone and the last tunnel opened on it are dropped.
#[derive(Clone)]
pub struct ClientConnection {
    shared: Arc<Shared>,
    liveness: Arc<Liveness>,
}

impl std::fmt::Debug for ClientConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConnection")
            .field("remote", &self.shared.quic.remote_address())
            .finish_non_exhaustive()
    }
}

impl ClientConnection {
    /// Starts HTTP/3 on a QUIC connection to a server and waits for the server's SETTINGS.
    ///
    /// # Errors
    ///
    /// [`Error::SettingsTimeout`] if SETTINGS do not arrive within
    /// [`Config::settings_timeout`], [`Error::ConnectionLost`] if the connection closes.
    pub async fn new(quic: quinn::Connection, config: Config) -> Result<Self, Error> {
        let timeout = config.settings_timeout;
        let shared = connection::start(quic, Role::Client, config).await?;
        tokio::spawn(reject_server_streams(Arc::clone(&shared)));
        let mut settings = shared.peer_settings.subscribe();
        let wait = async {
            loop {
                if settings.borrow_and_update().is_some() {
                    return Ok(());
                }
                tokio::select! {
                    changed = settings.changed() => {
                        // The sender is a field of `shared`, which this future borrows, so
                        // `changed` cannot return the closed error here.
                        let _ = changed;
                    }
                    error = shared.quic.closed() => return Err(Error::ConnectionLost(error)),
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result?,
            Err(_) => {
                shared
                    .quic
                    .close(Code::H3_MISSING_SETTINGS.into(), b"SETTINGS did not arrive");
                return Err(Error::SettingsTimeout(timeout));
            }
        }
        let liveness = Liveness::new(&shared.quic);
        Ok(Self { shared, liveness })
    }

    /// Returns the server's SETTINGS.
    pub fn peer_settings(&self) -> Settings {
        self.shared.peer_settings.borrow().unwrap_or_default()
    }

    /// Returns whether the connection is closed or the server sent GOAWAY, so that a pool
    /// opens a new connection.
    pub fn is_usable(&self) -> bool {
        self.shared.quic.close_reason().is_none() && self.shared.peer_goaway.borrow().is_none()
    }

    /// Returns the QUIC connection.
    pub fn quic(&self) -> &quinn::Connection {
        &self.shared.quic
    }

    /// Sends a CONNECT request and returns the final response with the tunnel stream.
    /// With `protocol` it is an extended CONNECT (RFC 9220) and the request URI needs a
    /// scheme, authority and path; without it, only an authority.
    ///
    /// A non-2xx response is returned too; the caller decides what it means, and
    /// dropping the stream ends it.
    ///
    /// # Errors
    ///
    /// [`Error::ConnectProtocolDisabled`] if `protocol` is set but the server did not
    /// enable extended CONNECT, [`Error::GoingAway`] after the server's GOAWAY,
    /// [`Error::InvalidMessage`] for a request that cannot be encoded,
    /// [`Error::Stream`] or [`Error::Connection`] for a malformed response, and
    /// [`Error::Read`] or [`Error::Write`] if the stream fails.
    pub async fn connect(
        &self,
        request: &Request<()>,
        protocol: Option<&str>,
    ) -> Result<(Response<()>, H3Stream), Error> {
        if protocol.is_some() && !self.peer_settings().enable_connect_protocol {
            return Err(Error::ConnectProtocolDisabled);
        }
        if self.shared.peer_goaway.borrow().is_some() {
            return Err(Error::GoingAway);
        }
        let lines = headers::request_lines(request, protocol)?;
        let bytes = connection::encode_headers(&self.shared, &lines)?;
        let (mut send, mut recv) = self.shared.quic.open_bi().await?;
        send.write_all(&bytes).await?;

        let response = loop {
            let result = read_response_headers(&self.shared, &mut recv).await;
            let response = match result {
                Ok(response) => response,
                Err(Error::Stream(error)) => {
                    let _ = send.reset(error.code.into());
                    let _ = recv.stop(error.code.into());
                    return Err(Error::Stream(error));
                }
                Err(Error::Connection(error)) => {
                    self.shared.close(&error);
                    return Err(Error::Connection(error));
                }
                Err(error) => return Err(error),
            };
            // Skip interim responses; 101 has no meaning in HTTP/3.
            if response.status().is_informational()
                && response.status() != StatusCode::SWITCHING_PROTOCOLS
            {
                continue;
            }
            break response;
        };
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let error = ProtocolError::new(
                Code::H3_MESSAGE_ERROR,
                "101 response is not allowed in HTTP/3",
            );
            let _ = send.reset(error.code.into());
            return Err(Error::Stream(error));
        }
        debug!(stream = %send.id(), status = %response.status(), "received HTTP/3 response");
        Ok((
            response,
            H3Stream::new(
                send,
                recv,
                Arc::clone(&self.shared),
                Arc::clone(&self.liveness),
            ),
        ))
    }
}

async fn read_response_headers(
    shared: &Shared,
    recv: &mut quinn::RecvStream,
) -> Result<Response<()>, Error> {
    loop {
        let frame = match frame::read(
            recv,
            &[frame::HEADERS],
            shared.config.max_field_section_size,
        )
        .await
        {
            Ok(Some(frame)) => frame,
            Ok(None) => return Err(Error::IncompleteResponse),
            Err(Error::Connection(error)) if error.code == Code::H3_EXCESSIVE_LOAD => {
                return Err(Error::Stream(error));
            }
            Err(error) => return Err(error),
        };
        match frame.frame_type {
            frame::HEADERS => {
                let lines = connection::decode_headers(shared, &frame.payload)?;
                return headers::parse_response(lines).map_err(Error::Stream);
            }
            frame::PUSH_PROMISE => {
                // This client never sends MAX_PUSH_ID, so no push ID is valid.
                return Err(Error::Connection(ProtocolError::new(
                    Code::H3_ID_ERROR,
                    "PUSH_PROMISE received, but no push was allowed",
                )));
            }
            frame::DATA
            | frame::CANCEL_PUSH
            | frame::SETTINGS
            | frame::GOAWAY
            | frame::MAX_PUSH_ID => {
                return Err(connection::unexpected_on_request(frame.frame_type));
            }
            other if frame::is_http2_only(other) => {
                return Err(connection::unexpected_on_request(other));
            }
            _ => {}
        }
    }
}

/// Closes the connection if the server opens a bidirectional stream, which RFC 9114
/// section 6.1 forbids.
async fn reject_server_streams(shared: Arc<Shared>) {
    if shared.quic.accept_bi().await.is_ok() {
        shared.close(&ProtocolError::new(
            Code::H3_STREAM_CREATION_ERROR,
            "server opened a bidirectional stream",
        ));
    }
}

//! The parts of an HTTP/3 connection both roles share: the local control and QPACK
//! streams, and the peer's unidirectional streams (RFC 9114 section 6.2).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::{RecvStream, SendStream};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::error::{Code, Error, ProtocolError};
use crate::frame;
use crate::qpack::{DecoderStreamParser, EncoderStreamParser};
use crate::settings::Settings;
use crate::varint;

/// Unidirectional stream types (RFC 9114 section 6.2, RFC 9204 section 4.2).
const CONTROL_STREAM: u64 = 0x00;
const PUSH_STREAM: u64 = 0x01;
const ENCODER_STREAM: u64 = 0x02;
const DECODER_STREAM: u64 = 0x03;

/// Limits and timeouts of an HTTP/3 connection.
#[derive(Debug, Clone)]
pub struct Config {
    /// The largest header section accepted, sent as SETTINGS_MAX_FIELD_SECTION_SIZE and
    /// counted as in RFC 9114 section 4.2.2. Larger requests are reset with
    /// H3_EXCESSIVE_LOAD.
    pub max_field_section_size: u64,
    /// The largest payload of a SETTINGS, GOAWAY, CANCEL_PUSH or MAX_PUSH_ID frame.
    /// Larger ones close the connection with H3_EXCESSIVE_LOAD.
    pub max_control_frame_size: u64,
    /// How long a client waits for the server's SETTINGS before a request.
    pub settings_timeout: Duration,
    /// How long a server waits for the HEADERS frame of a new request stream before it
    /// resets the stream with H3_REQUEST_INCOMPLETE.
    pub request_header_timeout: Duration,
    /// How many parsed requests a server queues before it stops reading new ones until
    /// the application accepts some.
    pub max_queued_requests: usize,
    /// How long a server keeps a connection open while no request is in progress: none
    /// whose headers are being read, none queued, and no request stream or tunnel held
    /// by the application. The connection is then closed with H3_NO_ERROR. RFC 9114
    /// section 5.1 permits servers to close idle connections, and QUIC keep-alives would
    /// otherwise hold such a connection open for good. `None` keeps it open.
    pub idle_connection_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_field_section_size: 16 * 1024,
            max_control_frame_size: 4 * 1024,
            settings_timeout: Duration::from_secs(10),
            request_header_timeout: Duration::from_secs(10),
            max_queued_requests: 64,
            idle_connection_timeout: Some(Duration::from_secs(30)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Client,
    Server,
}

/// Critical streams the peer has opened. Each may be opened once.
#[derive(Default)]
struct PeerStreams {
    control: bool,
    encoder: bool,
    decoder: bool,
}

/// State shared by the connection handle, its streams and its background tasks.
pub(crate) struct Shared {
    pub(crate) quic: quinn::Connection,
    pub(crate) role: Role,
    pub(crate) config: Config,
    pub(crate) peer_settings: watch::Sender<Option<Settings>>,
    /// The stream ID of the last GOAWAY the peer sent.
    pub(crate) peer_goaway: watch::Sender<Option<u64>>,
    control: tokio::sync::Mutex<SendStream>,
    /// The QPACK encoder and decoder streams, kept open for the life of the connection.
    _qpack_streams: Vec<SendStream>,
    peer_streams: Mutex<PeerStreams>,
    /// Set once this endpoint has sent GOAWAY.
    pub(crate) going_away: AtomicBool,
    /// The largest request stream ID the server accepted, plus 4; 0 before any.
    pub(crate) next_request_id: AtomicU64,
    /// The number of request streams in progress on a server, counted by
    /// [`RequestGuard`].
    pub(crate) open_requests: watch::Sender<usize>,
}

impl Shared {
    /// Closes the connection because the peer violated the protocol.
    pub(crate) fn close(&self, error: &ProtocolError) {
        warn!(
            remote = %self.quic.remote_address(),
            code = %error.code,
            reason = %error.reason,
            "closing HTTP/3 connection after a protocol error"
        );
        self.quic.close(error.code.into(), error.reason.as_bytes());
    }

    /// Sends GOAWAY with `id` on the control stream.
    pub(crate) async fn send_goaway(&self, id: u64) -> Result<(), Error> {
        self.going_away.store(true, Ordering::SeqCst);
        let mut payload = Vec::new();
        varint::encode(id, &mut payload);
        let mut bytes = Vec::new();
        frame::encode(frame::GOAWAY, &payload, &mut bytes);
        self.control.lock().await.write_all(&bytes).await?;
        debug!(remote = %self.quic.remote_address(), id, "sent GOAWAY");
        Ok(())
    }

    /// Handles an error of a background task: a protocol error closes the connection,
    /// anything else is logged.
    fn fail(&self, context: &str, error: Error) {
        match error {
            Error::Connection(error) | Error::Stream(error) => self.close(&error),
            Error::ConnectionLost(_) => {}
            error => debug!(remote = %self.quic.remote_address(), %error, "{context}"),
        }
    }
}

/// A token held by every handle an application has (connections, request streams and
/// tunnels). Dropping the last one closes the QUIC connection with H3_NO_ERROR, because
/// the background tasks keep their own `quinn::Connection` and would otherwise hold the
/// connection open until the idle timeout.
pub(crate) struct Liveness {
    quic: quinn::Connection,
}

impl Liveness {
    pub(crate) fn new(quic: &quinn::Connection) -> Arc<Self> {
        Arc::new(Self { quic: quic.clone() })
    }
}

impl Drop for Liveness {
    fn drop(&mut self) {
        debug!(remote = %self.quic.remote_address(), "closing HTTP/3 connection: no handle left");
        self.quic.close(Code::H3_NO_ERROR.into(), b"");
    }
}

/// Counts one request stream of a server in [`Shared::open_requests`], from its
/// acceptance until the request is rejected or the application drops the last handle of
/// it (the request stream or its tunnel).
pub(crate) struct RequestGuard {
    shared: Arc<Shared>,
}

impl RequestGuard {
    pub(crate) fn new(shared: &Arc<Shared>) -> Self {
        shared.open_requests.send_modify(|count| *count += 1);
        Self {
            shared: Arc::clone(shared),
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.shared
            .open_requests
            .send_modify(|count| *count = count.saturating_sub(1));
    }
}

/// Closes a server connection with H3_NO_ERROR once no request has been in progress for
/// `timeout`. Returns when the connection closes.
pub(crate) async fn close_when_idle(shared: Arc<Shared>, timeout: Duration) {
    let mut open_requests = shared.open_requests.subscribe();
    loop {
        tokio::select! {
            // The sender is a field of `shared`, which this task holds, so it cannot close.
            _ = open_requests.wait_for(|count| *count == 0) => {}
            _ = shared.quic.closed() => return,
        }
        tokio::select! {
            () = tokio::time::sleep(timeout) => {
                debug!(
                    remote = %shared.quic.remote_address(),
                    ?timeout,
                    "closing HTTP/3 connection: no request in progress"
                );
                shared.quic.close(Code::H3_NO_ERROR.into(), b"idle");
                return;
            }
            _ = open_requests.changed() => {}
            _ = shared.quic.closed() => return,
        }
    }
}

/// Opens the local control stream with SETTINGS and the two QPACK streams, and starts the
/// task that reads the peer's unidirectional streams.
pub(crate) async fn start(
    quic: quinn::Connection,
    role: Role,
    config: Config,
) -> Result<Arc<Shared>, Error> {
    let settings = Settings {
        qpack_max_table_capacity: 0,
        qpack_blocked_streams: 0,
        max_field_section_size: Some(config.max_field_section_size),
        enable_connect_protocol: role == Role::Server,
    };
    let mut control = quic.open_uni().await?;
    let mut bytes = Vec::new();
    varint::encode(CONTROL_STREAM, &mut bytes);
    frame::encode(frame::SETTINGS, &settings.encode(), &mut bytes);
    control.write_all(&bytes).await?;
    let mut qpack_streams = Vec::with_capacity(2);
    for stream_type in [ENCODER_STREAM, DECODER_STREAM] {
        let mut stream = quic.open_uni().await?;
        stream.write_all(&[stream_type as u8]).await?;
        qpack_streams.push(stream);
    }

    let shared = Arc::new(Shared {
        quic,
        role,
        config,
        peer_settings: watch::Sender::new(None),
        peer_goaway: watch::Sender::new(None),
        control: tokio::sync::Mutex::new(control),
        _qpack_streams: qpack_streams,
        peer_streams: Mutex::new(PeerStreams::default()),
        going_away: AtomicBool::new(false),
        next_request_id: AtomicU64::new(0),
        open_requests: watch::Sender::new(0),
    });
    tokio::spawn(accept_uni_streams(Arc::clone(&shared)));
    Ok(shared)
}

async fn accept_uni_streams(shared: Arc<Shared>) {
    loop {
        match shared.quic.accept_uni().await {
            Ok(recv) => {
                tokio::spawn(handle_uni_stream(Arc::clone(&shared), recv));
            }
            Err(error) => {
                debug!(remote = %shared.quic.remote_address(), %error, "HTTP/3 connection closed");
                return;
            }
        }
    }
}

fn critical_closed(name: &str) -> Error {
    Error::Connection(ProtocolError::new(
        Code::H3_CLOSED_CRITICAL_STREAM,
        format!("peer closed its {name} stream"),
    ))
}

/// Maps a reset of a critical stream to H3_CLOSED_CRITICAL_STREAM.
fn critical_read_error(name: &str, error: Error) -> Error {
    match error {
        Error::Read(quinn::ReadError::Reset(_)) | Error::Read(quinn::ReadError::ClosedStream) => {
            critical_closed(name)
        }
        error => error,
    }
}

async fn handle_uni_stream(shared: Arc<Shared>, mut recv: RecvStream) {
    let stream_type = match frame::read_varint(&mut recv).await {
        Ok(Some(stream_type)) => stream_type,
        Ok(None) => return,
        Err(error) => return shared.fail("reading a stream type failed", error),
    };
    let result = match stream_type {
        CONTROL_STREAM | ENCODER_STREAM | DECODER_STREAM => {
            let (name, duplicate) = {
                let mut seen = shared
                    .peer_streams
                    .lock()
                    .unwrap_or_else(|poison| poison.into_inner());
                let (name, flag) = match stream_type {
                    CONTROL_STREAM => ("control", &mut seen.control),
                    ENCODER_STREAM => ("QPACK encoder", &mut seen.encoder),
                    _ => ("QPACK decoder", &mut seen.decoder),
                };
                (name, std::mem::replace(flag, true))
            };
            if duplicate {
                Err(Error::Connection(ProtocolError::new(
                    Code::H3_STREAM_CREATION_ERROR,
                    format!("peer opened a second {name} stream"),
                )))
            } else {
                let result = match stream_type {
                    CONTROL_STREAM => read_control_stream(&shared, &mut recv).await,
                    ENCODER_STREAM => read_encoder_stream(&mut recv).await,
                    _ => read_decoder_stream(&mut recv).await,
                };
                result.map_err(|error| critical_read_error(name, error))
            }
        }
        PUSH_STREAM => Err(Error::Connection(match shared.role {
            Role::Server => ProtocolError::new(
                Code::H3_STREAM_CREATION_ERROR,
                "a client opened a push stream",
            ),
            // This client never sends MAX_PUSH_ID, so every push ID is above the maximum.
            Role::Client => {
                ProtocolError::new(Code::H3_ID_ERROR, "server pushed without MAX_PUSH_ID")
            }
        })),
        other => {
            debug!(
                stream_type = other,
                "ignoring a unidirectional stream of unknown type"
            );
            let _ = recv.stop(Code::H3_STREAM_CREATION_ERROR.into());
            Ok(())
        }
    };
    if let Err(error) = result {
        shared.fail("reading a unidirectional stream failed", error);
    }
}

async fn read_control_stream(shared: &Shared, recv: &mut RecvStream) -> Result<(), Error> {
    let buffered = [
        frame::SETTINGS,
        frame::GOAWAY,
        frame::CANCEL_PUSH,
        frame::MAX_PUSH_ID,
    ];
    let limit = shared.config.max_control_frame_size;
    let unexpected = |frame_type: u64| {
        Error::Connection(ProtocolError::new(
            Code::H3_FRAME_UNEXPECTED,
            format!("{} frame on the control stream", frame::name(frame_type)),
        ))
    };

    let first = frame::read(recv, &buffered, limit)
        .await?
        .ok_or_else(|| critical_closed("control"))?;
    if first.frame_type != frame::SETTINGS {
        return Err(Error::Connection(ProtocolError::new(
            Code::H3_MISSING_SETTINGS,
            format!(
                "first frame on the control stream is {}",
                frame::name(first.frame_type)
            ),
        )));
    }
    let settings = Settings::decode(&first.payload).map_err(Error::Connection)?;
    debug!(remote = %shared.quic.remote_address(), ?settings, "received HTTP/3 SETTINGS");
    shared.peer_settings.send_replace(Some(settings));

    let mut max_push_id: Option<u64> = None;
    loop {
        let frame = frame::read(recv, &buffered, limit)
            .await?
            .ok_or_else(|| critical_closed("control"))?;
        match frame.frame_type {
            frame::GOAWAY => {
                let id = frame::parse_single_varint(frame.frame_type, &frame.payload)
                    .map_err(Error::Connection)?;
                // A server's GOAWAY carries a client-initiated bidirectional stream ID,
                // and a later GOAWAY must not raise it.
                let id_error = |reason: String| {
                    Error::Connection(ProtocolError::new(Code::H3_ID_ERROR, reason))
                };
                if shared.role == Role::Client && id % 4 != 0 {
                    return Err(id_error(format!(
                        "GOAWAY stream ID {id} is not a client request stream"
                    )));
                }
                if let Some(previous) = *shared.peer_goaway.borrow()
                    && id > previous
                {
                    return Err(id_error(format!(
                        "GOAWAY ID {id} is above the previous {previous}"
                    )));
                }
                debug!(remote = %shared.quic.remote_address(), id, "received GOAWAY");
                shared.peer_goaway.send_replace(Some(id));
            }
            frame::MAX_PUSH_ID => {
                if shared.role == Role::Client {
                    return Err(unexpected(frame.frame_type));
                }
                let id = frame::parse_single_varint(frame.frame_type, &frame.payload)
                    .map_err(Error::Connection)?;
                if max_push_id.is_some_and(|previous| id < previous) {
                    return Err(Error::Connection(ProtocolError::new(
                        Code::H3_ID_ERROR,
                        format!("MAX_PUSH_ID {id} is below the previous one"),
                    )));
                }
                max_push_id = Some(id);
            }
            frame::CANCEL_PUSH => {
                let id = frame::parse_single_varint(frame.frame_type, &frame.payload)
                    .map_err(Error::Connection)?;
                // A server never pushes, so a client's CANCEL_PUSH needs no action. A
                // client never sends MAX_PUSH_ID, so any push ID from a server is invalid.
                if shared.role == Role::Client {
                    return Err(Error::Connection(ProtocolError::new(
                        Code::H3_ID_ERROR,
                        format!("CANCEL_PUSH for push ID {id}, but no push was allowed"),
                    )));
                }
            }
            frame::SETTINGS | frame::DATA | frame::HEADERS | frame::PUSH_PROMISE => {
                return Err(unexpected(frame.frame_type));
            }
            other if frame::is_http2_only(other) => return Err(unexpected(other)),
            // Reserved and unknown frame types are ignored; frame::read discarded them.
            _ => {}
        }
    }
}

async fn read_encoder_stream(recv: &mut RecvStream) -> Result<(), Error> {
    let mut parser = EncoderStreamParser::default();
    loop {
        let chunk = recv
            .read_chunk(1024, true)
            .await?
            .ok_or_else(|| critical_closed("QPACK encoder"))?;
        parser.feed(&chunk.bytes).map_err(Error::Connection)?;
    }
}

async fn read_decoder_stream(recv: &mut RecvStream) -> Result<(), Error> {
    let mut parser = DecoderStreamParser::default();
    loop {
        let chunk = recv
            .read_chunk(1024, true)
            .await?
            .ok_or_else(|| critical_closed("QPACK decoder"))?;
        parser.feed(&chunk.bytes).map_err(Error::Connection)?;
    }
}

/// Encodes `lines` as a HEADERS frame, checking the peer's SETTINGS_MAX_FIELD_SECTION_SIZE.
pub(crate) fn encode_headers(
    shared: &Shared,
    lines: &[crate::headers::Line],
) -> Result<Vec<u8>, Error> {
    let size = crate::headers::section_size(lines);
    if let Some(limit) = shared
        .peer_settings
        .borrow()
        .and_then(|settings| settings.max_field_section_size)
        && size > limit
    {
        return Err(Error::HeadersTooLarge { size, limit });
    }
    let section = crate::qpack::encode_field_section(
        lines
            .iter()
            .map(|(name, value)| (name.as_slice(), value.as_slice())),
    );
    let mut bytes = Vec::with_capacity(section.len() + 9);
    frame::encode(frame::HEADERS, &section, &mut bytes);
    Ok(bytes)
}

/// Decodes the payload of a HEADERS frame. A QPACK failure is a connection error; a
/// section over the size limit is an error of this stream only.
pub(crate) fn decode_headers(
    shared: &Shared,
    payload: &[u8],
) -> Result<Vec<crate::qpack::FieldLine>, Error> {
    crate::qpack::decode_field_section(payload, shared.config.max_field_section_size).map_err(
        |error| {
            if error.code == Code::H3_EXCESSIVE_LOAD {
                Error::Stream(error)
            } else {
                Error::Connection(error)
            }
        },
    )
}

/// Returns the error for a known frame type that is not allowed on a request stream
/// before the headers (RFC 9114 section 7.2).
pub(crate) fn unexpected_on_request(frame_type: u64) -> Error {
    Error::Connection(ProtocolError::new(
        Code::H3_FRAME_UNEXPECTED,
        format!(
            "{} frame on a request stream before HEADERS",
            frame::name(frame_type)
        ),
    ))
}

//! Parsing and validation of client requests.
//!
//! Requests are read field by field from a `serde_json::Value` instead of through the serde
//! derive, so that every failure maps to an exact error code and a message naming the field.
//! Unknown fields are ignored so that newer clients can add optional fields.

use serde_json::{Map, Value};

use super::{
    ClientRequest, ErrorCode, ErrorEvent, HistoryRequest, JoinRequest, LeaveRequest, SendRequest,
};
use crate::config::{ChatConfig, MAX_CLIENT_ID_BYTES};

const REQUEST_TYPES: &str = "join, send, history, leave, ping";

/// A client request that failed to parse or validate.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("{code}: {message}")]
pub struct RequestError {
    pub code: ErrorCode,
    pub message: String,
    /// `type` of the request, when it could be read.
    pub request: Option<&'static str>,
    /// Room of the request, when it could be read.
    pub room: Option<String>,
    /// `client_id` of the request, when it could be read.
    pub client_id: Option<String>,
}

impl RequestError {
    fn new(code: ErrorCode, message: String) -> Self {
        Self {
            code,
            message,
            request: None,
            room: None,
            client_id: None,
        }
    }

    /// Converts the error to the `error` event sent to the client.
    pub fn to_event(&self) -> ErrorEvent {
        ErrorEvent {
            code: self.code,
            message: self.message.clone(),
            request: self.request.map(str::to_owned),
            room: self.room.clone(),
            client_id: self.client_id.clone(),
        }
    }
}

/// Parses one client text frame and validates its fields against `config`.
///
/// The error's code and message name the problem, for example
/// `missing_field: missing field `room` in `send``.
pub fn parse_request(text: &str, config: &ChatConfig) -> Result<ClientRequest, RequestError> {
    let max_bytes = config.max_request_bytes();
    if text.len() > max_bytes {
        return Err(RequestError::new(
            ErrorCode::TooLarge,
            format!(
                "request is {} bytes, over the limit of {max_bytes} bytes",
                text.len()
            ),
        ));
    }

    let value: Value = serde_json::from_str(text).map_err(|err| {
        RequestError::new(ErrorCode::InvalidJson, invalid_json_message(text, &err))
    })?;
    let Value::Object(object) = value else {
        return Err(RequestError::new(
            ErrorCode::InvalidJson,
            format!(
                "request must be a JSON object with a `type` field, got {}",
                json_type_name(&value)
            ),
        ));
    };

    let kind = match object.get("type") {
        None | Some(Value::Null) => {
            return Err(RequestError::new(
                ErrorCode::MissingField,
                format!("missing field `type`, expected one of {REQUEST_TYPES}"),
            ));
        }
        Some(Value::String(kind)) => kind.as_str(),
        Some(other) => {
            return Err(RequestError::new(
                ErrorCode::InvalidField,
                format!(
                    "field `type` must be a string, got {}",
                    json_type_name(other)
                ),
            ));
        }
    };

    match kind {
        "join" => parse_join(Fields::new(&object, "join"), config).map(ClientRequest::Join),
        "send" => parse_send(Fields::new(&object, "send"), config).map(ClientRequest::Send),
        "history" => {
            parse_history(Fields::new(&object, "history"), config).map(ClientRequest::History)
        }
        "leave" => parse_leave(Fields::new(&object, "leave"), config).map(ClientRequest::Leave),
        "ping" => Ok(ClientRequest::Ping),
        other => Err(RequestError::new(
            ErrorCode::UnknownType,
            format!(
                "unknown request type `{}`, expected one of {REQUEST_TYPES}",
                shorten(other, 64)
            ),
        )),
    }
}

fn parse_join(fields: Fields<'_>, config: &ChatConfig) -> Result<JoinRequest, RequestError> {
    let room = fields.room(config)?;
    let with_room = |err: RequestError| RequestError {
        room: Some(room.clone()),
        ..err
    };
    let nick = fields.required_str("nick").map_err(with_room)?;
    validate_name("nick", nick, config.max_nick_len)
        .map_err(|message| fields.error(ErrorCode::InvalidNick, message))
        .map_err(with_room)?;
    let since = fields.optional_u64("since").map_err(with_room)?;
    Ok(JoinRequest {
        room: room.clone(),
        nick: nick.to_owned(),
        since,
    })
}

fn parse_send(fields: Fields<'_>, config: &ChatConfig) -> Result<SendRequest, RequestError> {
    // Both ids are read before either is checked, so that every error can carry the ones
    // that are readable.
    let client_id = fields.optional_str("client_id");
    let room = fields.room(config);
    let client_id = match client_id {
        Ok(client_id) => client_id.map(str::to_owned),
        Err(err) => {
            return Err(RequestError {
                room: room.ok(),
                ..err
            });
        }
    };
    let with_ids = |err: RequestError, room: Option<&String>| RequestError {
        room: room.cloned(),
        client_id: client_id.clone(),
        ..err
    };
    let room = room.map_err(|err| with_ids(err, None))?;
    if let Some(id) = &client_id {
        validate_client_id(id).map_err(|message| {
            with_ids(fields.error(ErrorCode::InvalidField, message), Some(&room))
        })?;
    }

    let text = fields
        .required_str("text")
        .map_err(|err| with_ids(err, Some(&room)))?;
    if text.len() > config.max_text_bytes {
        let message = format!(
            "field `text` in `send` is {} bytes, over the limit of {} bytes; split the text",
            text.len(),
            config.max_text_bytes
        );
        return Err(with_ids(
            fields.error(ErrorCode::TooLarge, message),
            Some(&room),
        ));
    }
    if text.is_empty() {
        let message = "field `text` in `send` must not be empty".to_owned();
        return Err(with_ids(
            fields.error(ErrorCode::InvalidField, message),
            Some(&room),
        ));
    }

    Ok(SendRequest {
        room,
        text: text.to_owned(),
        client_id,
    })
}

fn parse_history(fields: Fields<'_>, config: &ChatConfig) -> Result<HistoryRequest, RequestError> {
    let room = fields.room(config)?;
    let with_room = |err: RequestError| RequestError {
        room: Some(room.clone()),
        ..err
    };
    let before = fields.optional_u64("before").map_err(with_room)?;
    let limit = fields.optional_u64("limit").map_err(with_room)?;
    if limit == Some(0) {
        let message = "field `limit` in `history` must be at least 1".to_owned();
        return Err(with_room(fields.error(ErrorCode::InvalidField, message)));
    }
    Ok(HistoryRequest {
        room: room.clone(),
        before,
        limit: limit.map(|limit| usize::try_from(limit).unwrap_or(usize::MAX)),
    })
}

fn parse_leave(fields: Fields<'_>, config: &ChatConfig) -> Result<LeaveRequest, RequestError> {
    Ok(LeaveRequest {
        room: fields.room(config)?,
    })
}

/// Field accessors for one request object that produce errors naming the request type.
struct Fields<'a> {
    object: &'a Map<String, Value>,
    request: &'static str,
}

impl<'a> Fields<'a> {
    fn new(object: &'a Map<String, Value>, request: &'static str) -> Self {
        Self { object, request }
    }

    fn error(&self, code: ErrorCode, message: String) -> RequestError {
        RequestError {
            request: Some(self.request),
            ..RequestError::new(code, message)
        }
    }

    fn missing(&self, name: &str) -> RequestError {
        self.error(
            ErrorCode::MissingField,
            format!("missing field `{name}` in `{}`", self.request),
        )
    }

    fn wrong_type(&self, name: &str, expected: &str, found: &Value) -> RequestError {
        self.error(
            ErrorCode::InvalidField,
            format!(
                "field `{name}` in `{}` must be {expected}, got {}",
                self.request,
                describe_value(found)
            ),
        )
    }

    fn required_str(&self, name: &str) -> Result<&'a str, RequestError> {
        match self.object.get(name) {
            None => Err(self.missing(name)),
            Some(Value::String(value)) => Ok(value),
            Some(other) => Err(self.wrong_type(name, "a string", other)),
        }
    }

    /// Reads an optional string field. An explicit `null` counts as absent.
    fn optional_str(&self, name: &str) -> Result<Option<&'a str>, RequestError> {
        match self.object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(value)) => Ok(Some(value)),
            Some(other) => Err(self.wrong_type(name, "a string", other)),
        }
    }

    /// Reads an optional non-negative integer field. An explicit `null` counts as absent.
    fn optional_u64(&self, name: &str) -> Result<Option<u64>, RequestError> {
        match self.object.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value @ Value::Number(number)) => match number.as_u64() {
                Some(number) => Ok(Some(number)),
                None => Err(self.wrong_type(name, "a non-negative integer", value)),
            },
            Some(other) => Err(self.wrong_type(name, "a non-negative integer", other)),
        }
    }

    fn room(&self, config: &ChatConfig) -> Result<String, RequestError> {
        let room = self.required_str("room")?;
        validate_name("room name", room, config.max_room_len)
            .map_err(|message| self.error(ErrorCode::InvalidRoom, message))?;
        Ok(room.to_owned())
    }
}

/// Checks a room name or nick: not empty, at most `max_chars` characters, no control
/// characters and no leading or trailing whitespace.
fn validate_name(label: &str, value: &str, max_chars: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{label} must not be empty"));
    }
    let chars = value.chars().count();
    if chars > max_chars {
        return Err(format!(
            "{label} `{}` is {chars} characters, over the limit of {max_chars}",
            shorten(value, 16)
        ));
    }
    if let Some(control) = value.chars().find(|c| c.is_control()) {
        return Err(format!(
            "{label} must not contain control characters, found U+{:04X}",
            u32::from(control)
        ));
    }
    if value.starts_with(char::is_whitespace) || value.ends_with(char::is_whitespace) {
        return Err(format!(
            "{label} `{value}` must not start or end with whitespace"
        ));
    }
    Ok(())
}

fn validate_client_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("field `client_id` in `send` must not be empty; omit it instead".to_owned());
    }
    if id.len() > MAX_CLIENT_ID_BYTES {
        return Err(format!(
            "field `client_id` in `send` is {} bytes, over the limit of {MAX_CLIENT_ID_BYTES} bytes",
            id.len()
        ));
    }
    if let Some(control) = id.chars().find(|c| c.is_control()) {
        return Err(format!(
            "field `client_id` in `send` must not contain control characters, found U+{:04X}",
            u32::from(control)
        ));
    }
    Ok(())
}

/// Describes a JSON syntax error. serde_json reports an unpaired UTF-16 surrogate escape
/// such as `"\ud800"` as "unexpected end of hex escape" or "lone leading surrogate", so
/// that case is detected here and named.
fn invalid_json_message(text: &str, err: &serde_json::Error) -> String {
    let error_offset = byte_offset(text, err.line(), err.column());
    match find_unpaired_surrogate(text) {
        Some((offset, escape)) if offset < error_offset => {
            let (line, column) = line_and_column(text, offset);
            format!(
                "invalid JSON: a string contains the unpaired surrogate escape `{escape}` at \
                 line {line} column {column}, which is not valid Unicode; escape a character \
                 above U+FFFF as a surrogate pair, for example `\\ud83d\\ude00`"
            )
        }
        _ => format!("invalid JSON: {err}"),
    }
}

/// Converts serde_json's 1-based line and byte column into a byte offset in `text`.
fn byte_offset(text: &str, line: usize, column: usize) -> usize {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    (line_start + column).min(text.len())
}

/// Returns the 1-based line and byte column of `offset`, as serde_json counts them.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    (line, offset - line_start + 1)
}

/// Finds the first `\uXXXX` escape inside a JSON string that is a UTF-16 surrogate without
/// its other half. Returns its byte offset and its text.
fn find_unpaired_surrogate(text: &str) -> Option<(usize, &str)> {
    let bytes = text.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                in_string = !in_string;
                i += 1;
            }
            b'\\' if in_string => match bytes.get(i + 1) {
                Some(b'u') => {
                    let Some(unit) = hex_escape(text, i) else {
                        i += 2;
                        continue;
                    };
                    if (0xDC00..=0xDFFF).contains(&unit) {
                        return Some((i, &text[i..i + 6]));
                    }
                    if (0xD800..=0xDBFF).contains(&unit) {
                        let low = hex_escape(text, i + 6);
                        if !low.is_some_and(|low| (0xDC00..=0xDFFF).contains(&low)) {
                            return Some((i, &text[i..i + 6]));
                        }
                        i += 12;
                    } else {
                        i += 6;
                    }
                }
                // Any other escape is two bytes long.
                _ => i += 2,
            },
            _ => i += 1,
        }
    }
    None
}

/// Reads the code unit of a `\uXXXX` escape that starts at byte `start`.
fn hex_escape(text: &str, start: usize) -> Option<u16> {
    let escape = text.get(start..start + 6)?;
    let digits = escape.strip_prefix("\\u")?;
    if !digits.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(digits, 16).ok()
}

fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Describes a wrong field value for an error message: numbers are shown, other values by
/// their JSON type only.
fn describe_value(value: &Value) -> String {
    match value {
        Value::Number(number) => format!("{number}"),
        other => json_type_name(other).to_owned(),
    }
}

/// Cuts `value` to at most `max_chars` characters for an error message.
fn shorten(value: &str, max_chars: usize) -> String {
    match value.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}...", &value[..end]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ClientRequest, RequestError> {
        parse_request(text, &ChatConfig::default())
    }

    fn error_of(text: &str) -> RequestError {
        parse(text).expect_err("request must be rejected")
    }

    #[test]
    fn join_with_since_parses() {
        let request = parse(r#"{"type":"join","room":"lobby","nick":"ann","since":42}"#);
        assert_eq!(
            request,
            Ok(ClientRequest::Join(JoinRequest {
                room: "lobby".into(),
                nick: "ann".into(),
                since: Some(42),
            }))
        );
    }

    #[test]
    fn null_optional_fields_count_as_absent() {
        let request =
            parse(r#"{"type":"send","room":"lobby","text":"hi","client_id":null,"extra":1}"#);
        assert_eq!(
            request,
            Ok(ClientRequest::Send(SendRequest {
                room: "lobby".into(),
                text: "hi".into(),
                client_id: None,
            }))
        );
    }

    #[test]
    fn serialized_requests_parse_back() {
        let requests = [
            ClientRequest::Join(JoinRequest {
                room: "r".into(),
                nick: "n".into(),
                since: None,
            }),
            ClientRequest::Send(SendRequest {
                room: "r".into(),
                text: "t".into(),
                client_id: Some("c".into()),
            }),
            ClientRequest::History(HistoryRequest {
                room: "r".into(),
                before: Some(3),
                limit: Some(2),
            }),
            ClientRequest::Leave(LeaveRequest { room: "r".into() }),
            ClientRequest::Ping,
        ];
        for request in requests {
            assert_eq!(parse(&request.to_json()), Ok(request));
        }
    }

    #[test]
    fn missing_field_names_field_and_request() {
        let err = error_of(r#"{"type":"send","text":"hi"}"#);
        assert_eq!(err.code, ErrorCode::MissingField);
        assert_eq!(err.message, "missing field `room` in `send`");
        assert_eq!(err.request, Some("send"));
    }

    #[test]
    fn wrong_field_type_is_invalid_field() {
        let err = error_of(r#"{"type":"join","room":"lobby","nick":"ann","since":"x"}"#);
        assert_eq!(err.code, ErrorCode::InvalidField);
        assert_eq!(
            err.message,
            "field `since` in `join` must be a non-negative integer, got a string"
        );
        assert_eq!(err.room.as_deref(), Some("lobby"));

        let err = error_of(r#"{"type":"history","room":"lobby","before":-1}"#);
        assert_eq!(err.code, ErrorCode::InvalidField);
        assert!(err.message.contains("got -1"), "{}", err.message);
    }

    #[test]
    fn type_errors_have_their_own_codes() {
        assert_eq!(error_of("{}").code, ErrorCode::MissingField);
        assert_eq!(error_of(r#"{"type":7}"#).code, ErrorCode::InvalidField);
        assert_eq!(error_of(r#"{"type":"dance"}"#).code, ErrorCode::UnknownType);
        assert_eq!(error_of("[1]").code, ErrorCode::InvalidJson);
        assert_eq!(error_of("{\"type\":").code, ErrorCode::InvalidJson);
    }

    #[test]
    fn room_names_are_checked() {
        let cases = [
            (
                r#"{"type":"leave","room":""}"#,
                "room name must not be empty",
            ),
            (
                r#"{"type":"leave","room":"a\u0007b"}"#,
                "room name must not contain control characters, found U+0007",
            ),
            (
                r#"{"type":"leave","room":" lobby"}"#,
                "room name ` lobby` must not start or end with whitespace",
            ),
        ];
        for (text, message) in cases {
            let err = error_of(text);
            assert_eq!(err.code, ErrorCode::InvalidRoom, "{text}");
            assert_eq!(err.message, message, "{text}");
        }

        let long = "x".repeat(65);
        let err = error_of(&format!(r#"{{"type":"leave","room":"{long}"}}"#));
        assert_eq!(err.code, ErrorCode::InvalidRoom);
        assert!(err.message.contains("65 characters, over the limit of 64"));
    }

    #[test]
    fn name_limits_count_characters() {
        let room = "é".repeat(64);
        let request = parse(&format!(r#"{{"type":"leave","room":"{room}"}}"#));
        assert!(request.is_ok(), "{request:?}");
    }

    #[test]
    fn nicks_are_checked() {
        let err = error_of(r#"{"type":"join","room":"lobby","nick":""}"#);
        assert_eq!(err.code, ErrorCode::InvalidNick);
        assert_eq!(err.message, "nick must not be empty");
        assert_eq!(err.room.as_deref(), Some("lobby"));

        let long = "n".repeat(33);
        let err = error_of(&format!(
            r#"{{"type":"join","room":"lobby","nick":"{long}"}}"#
        ));
        assert_eq!(err.code, ErrorCode::InvalidNick);
    }

    #[test]
    fn text_limits_are_checked() {
        let config = ChatConfig::default();
        let text = "x".repeat(config.max_text_bytes + 1);
        let err = error_of(&format!(
            r#"{{"type":"send","room":"lobby","text":"{text}","client_id":"c1"}}"#
        ));
        assert_eq!(err.code, ErrorCode::TooLarge);
        assert_eq!(err.client_id.as_deref(), Some("c1"));
        assert_eq!(err.room.as_deref(), Some("lobby"));

        let err = error_of(r#"{"type":"send","room":"lobby","text":""}"#);
        assert_eq!(err.code, ErrorCode::InvalidField);

        let frame = " ".repeat(config.max_request_bytes() + 1);
        assert_eq!(error_of(&frame).code, ErrorCode::TooLarge);
    }

    #[test]
    fn escaped_text_at_limit_fits_frame() {
        let config = ChatConfig::default();
        let text = "\\u0001".repeat(config.max_text_bytes);
        let room = "r".repeat(config.max_room_len);
        let request = parse(&format!(
            r#"{{"type":"send","room":"{room}","text":"{text}"}}"#
        ));
        assert!(request.is_ok(), "{:?}", request.map(|_| ()));
    }

    #[test]
    fn client_id_is_checked() {
        let long = "c".repeat(MAX_CLIENT_ID_BYTES + 1);
        let err = error_of(&format!(
            r#"{{"type":"send","room":"lobby","text":"hi","client_id":"{long}"}}"#
        ));
        assert_eq!(err.code, ErrorCode::InvalidField);

        let err = error_of(r#"{"type":"send","room":"lobby","text":"hi","client_id":5}"#);
        assert_eq!(err.code, ErrorCode::InvalidField);
        assert_eq!(err.request, Some("send"));
        assert_eq!(err.room.as_deref(), Some("lobby"));
        assert_eq!(err.client_id, None);

        // Without a valid room, the error has no room to report.
        let err = error_of(r#"{"type":"send","text":"hi","client_id":7}"#);
        assert_eq!(err.code, ErrorCode::InvalidField);
        assert_eq!(err.room, None);
    }

    #[test]
    fn room_error_in_send_keeps_client_id() {
        let err = error_of(r#"{"type":"send","room":"","text":"hi","client_id":"c1"}"#);
        assert_eq!(err.code, ErrorCode::InvalidRoom);
        assert_eq!(err.client_id.as_deref(), Some("c1"));
    }

    #[test]
    fn unpaired_surrogate_escape_is_named() {
        let cases = [
            (
                r#"{"type":"join","room":"lobby","nick":"\ud800"}"#,
                r"\ud800",
            ),
            (
                r#"{"type":"join","room":"lobby","nick":"a\uDC00b"}"#,
                r"\uDC00",
            ),
            (
                r#"{"type":"join","room":"lobby","nick":"\ud800\u0041"}"#,
                r"\ud800",
            ),
            (
                r#"{"type":"join","room":"lobby","nick":"\\\ud800x"}"#,
                r"\ud800",
            ),
        ];
        for (text, escape) in cases {
            let err = error_of(text);
            assert_eq!(err.code, ErrorCode::InvalidJson, "{text}");
            assert!(
                err.message
                    .contains(&format!("unpaired surrogate escape `{escape}`")),
                "{text}: {}",
                err.message
            );
            assert!(
                err.message.contains("not valid Unicode"),
                "{text}: {}",
                err.message
            );
        }
    }

    #[test]
    fn surrogate_pair_escape_parses() {
        let request = parse(r#"{"type":"join","room":"lobby","nick":"\ud83d\ude00"}"#);
        let Ok(ClientRequest::Join(join)) = request else {
            panic!("{request:?}");
        };
        assert_eq!(join.nick, "\u{1f600}");
    }

    #[test]
    fn escaped_backslash_before_u_is_no_surrogate() {
        // `\\ud800` is an escaped backslash followed by the letters `ud800`, so the
        // syntax error after it is reported as it is.
        let err = error_of(r#"{"type":"join","room":"lobby","nick":"\\ud800",}"#);
        assert_eq!(err.code, ErrorCode::InvalidJson);
        assert!(!err.message.contains("surrogate"), "{}", err.message);
    }

    #[test]
    fn history_limit_zero_is_rejected() {
        let err = error_of(r#"{"type":"history","room":"lobby","limit":0}"#);
        assert_eq!(err.code, ErrorCode::InvalidField);
        assert_eq!(err.message, "field `limit` in `history` must be at least 1");
    }
}

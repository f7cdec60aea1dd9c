//! The SETTINGS frame (RFC 9114 section 7.2.4) and the settings this crate uses.

use crate::error::{Code, ProtocolError};
use crate::varint;

/// SETTINGS_QPACK_MAX_TABLE_CAPACITY (RFC 9204).
pub const QPACK_MAX_TABLE_CAPACITY: u64 = 0x01;
/// SETTINGS_MAX_FIELD_SECTION_SIZE (RFC 9114).
pub const MAX_FIELD_SECTION_SIZE: u64 = 0x06;
/// SETTINGS_QPACK_BLOCKED_STREAMS (RFC 9204).
pub const QPACK_BLOCKED_STREAMS: u64 = 0x07;
/// SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441, for HTTP/3 by RFC 9220).
pub const ENABLE_CONNECT_PROTOCOL: u64 = 0x08;

/// The settings of one endpoint. Unknown and reserved identifiers are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Settings {
    /// SETTINGS_QPACK_MAX_TABLE_CAPACITY; this crate always sends 0.
    pub qpack_max_table_capacity: u64,
    /// SETTINGS_QPACK_BLOCKED_STREAMS; this crate always sends 0.
    pub qpack_blocked_streams: u64,
    /// SETTINGS_MAX_FIELD_SECTION_SIZE, or `None` for unlimited.
    pub max_field_section_size: Option<u64>,
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL = 1.
    pub enable_connect_protocol: bool,
}

impl Settings {
    /// Encodes the payload of a SETTINGS frame. Zero values, the defaults, are sent too
    /// so that they show in a packet capture.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut put = |id: u64, value: u64| {
            varint::encode(id, &mut out);
            varint::encode(value, &mut out);
        };
        put(QPACK_MAX_TABLE_CAPACITY, self.qpack_max_table_capacity);
        put(QPACK_BLOCKED_STREAMS, self.qpack_blocked_streams);
        if let Some(size) = self.max_field_section_size {
            put(MAX_FIELD_SECTION_SIZE, size);
        }
        if self.enable_connect_protocol {
            put(ENABLE_CONNECT_PROTOCOL, 1);
        }
        out
    }

    /// Decodes the payload of a SETTINGS frame.
    ///
    /// # Errors
    ///
    /// H3_SETTINGS_ERROR for a duplicate identifier, an HTTP/2 identifier (0x02 to
    /// 0x05), or SETTINGS_ENABLE_CONNECT_PROTOCOL other than 0 or 1; H3_FRAME_ERROR for
    /// a payload that ends inside a setting.
    pub fn decode(mut payload: &[u8]) -> Result<Self, ProtocolError> {
        let truncated = || {
            ProtocolError::new(
                Code::H3_FRAME_ERROR,
                "SETTINGS payload ends inside a setting",
            )
        };
        let mut settings = Self::default();
        let mut seen: Vec<u64> = Vec::new();
        while !payload.is_empty() {
            let (id, used) = varint::decode(payload).ok_or_else(truncated)?;
            payload = &payload[used..];
            let (value, used) = varint::decode(payload).ok_or_else(truncated)?;
            payload = &payload[used..];
            if seen.contains(&id) {
                return Err(ProtocolError::new(
                    Code::H3_SETTINGS_ERROR,
                    format!("setting 0x{id:x} appears twice"),
                ));
            }
            seen.push(id);
            match id {
                QPACK_MAX_TABLE_CAPACITY => settings.qpack_max_table_capacity = value,
                QPACK_BLOCKED_STREAMS => settings.qpack_blocked_streams = value,
                MAX_FIELD_SECTION_SIZE => settings.max_field_section_size = Some(value),
                ENABLE_CONNECT_PROTOCOL => {
                    settings.enable_connect_protocol = match value {
                        0 => false,
                        1 => true,
                        _ => {
                            return Err(ProtocolError::new(
                                Code::H3_SETTINGS_ERROR,
                                format!("SETTINGS_ENABLE_CONNECT_PROTOCOL is {value}, not 0 or 1"),
                            ));
                        }
                    }
                }
                0x02..=0x05 => {
                    return Err(ProtocolError::new(
                        Code::H3_SETTINGS_ERROR,
                        format!("setting 0x{id:x} is defined only for HTTP/2"),
                    ));
                }
                // Reserved (0x1f * N + 0x21) and unknown settings are ignored.
                _ => {}
            }
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let settings = Settings {
            qpack_max_table_capacity: 0,
            qpack_blocked_streams: 0,
            max_field_section_size: Some(16_384),
            enable_connect_protocol: true,
        };
        assert_eq!(Settings::decode(&settings.encode()), Ok(settings));
    }

    #[test]
    fn reserved_and_unknown_ignored() {
        // A reserved identifier 0x21 + 0x1f and an unknown 0x33, then ENABLE_CONNECT_PROTOCOL.
        let payload = [0x40, 0x40, 0x05, 0x33, 0x01, 0x08, 0x01];
        let settings = Settings::decode(&payload).unwrap();
        assert!(settings.enable_connect_protocol);
    }

    #[test]
    fn http2_identifiers_rejected() {
        for id in 0x02..=0x05u8 {
            let error = Settings::decode(&[id, 0x00]).unwrap_err();
            assert_eq!(error.code, Code::H3_SETTINGS_ERROR, "0x{id:x}");
        }
    }

    #[test]
    fn duplicate_rejected() {
        let error = Settings::decode(&[0x06, 0x01, 0x06, 0x02]).unwrap_err();
        assert_eq!(error.code, Code::H3_SETTINGS_ERROR);
    }

    #[test]
    fn connect_protocol_value_checked() {
        let error = Settings::decode(&[0x08, 0x02]).unwrap_err();
        assert_eq!(error.code, Code::H3_SETTINGS_ERROR);
    }

    #[test]
    fn truncated_rejected() {
        let error = Settings::decode(&[0x06]).unwrap_err();
        assert_eq!(error.code, Code::H3_FRAME_ERROR);
    }
}

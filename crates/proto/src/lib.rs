//! Rakor signalling wire types: JSON messages over the `/rtc` WebSocket.
//!
//! This crate is the one source of truth for `docs/protocol.md`. Every message is a JSON object
//! tagged by `"type"`. The client's first message is [`ClientMessage::Join`] carrying
//! [`PROTOCOL_VERSION`]; the server answers [`ServerMessage::Joined`] or [`ServerMessage::Error`]
//! and closes.
//!
//! Unknown-field rule: unknown fields in a client message are **rejected** (`bad_request`), so a
//! typo never silently changes meaning. Clients must **ignore** unknown fields and unknown message
//! types from the server, so the server can add information without a version bump.

mod error;
mod ids;
mod messages;
mod time;

pub use error::{ErrorCode, ParseError};
pub use ids::{ParticipantId, TrackId};
pub use messages::*;
pub use time::rfc3339_utc_ms;

/// The protocol version this crate speaks. A `join` with another version gets
/// `unsupported_version`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest WebSocket text frame the server accepts (64 KiB). Larger frames get `frame_too_large`.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Parse one client frame, mapping every failure to a stable [`ErrorCode`].
pub fn parse_client_message(text: &str) -> Result<ClientMessage, ParseError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(ParseError::new(
            ErrorCode::FrameTooLarge,
            format!(
                "frame of {} bytes exceeds {} bytes",
                text.len(),
                MAX_FRAME_BYTES
            ),
        ));
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ParseError::new(ErrorCode::MalformedJson, format!("invalid JSON: {e}")))?;
    let Some(obj) = value.as_object() else {
        return Err(ParseError::new(
            ErrorCode::MalformedJson,
            "a message must be a JSON object",
        ));
    };
    let Some(ty) = obj.get("type").and_then(|t| t.as_str()).map(str::to_owned) else {
        return Err(ParseError::new(
            ErrorCode::BadRequest,
            "missing string field \"type\"",
        ));
    };
    if !CLIENT_MESSAGE_TYPES.contains(&ty.as_str()) {
        return Err(ParseError::new(
            ErrorCode::UnknownType,
            format!("unknown message type \"{}\"", truncate(&ty, 40)),
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        ParseError::new(
            ErrorCode::BadRequest,
            format!("invalid \"{ty}\" message: {e}"),
        )
    })
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests;

//! Stable error codes sent in `error` messages (documented in docs/protocol.md).

use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code. The wire form is the snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON, or not a JSON object.
    MalformedJson,
    /// The `type` field names no known client message.
    UnknownType,
    /// A field is missing, has the wrong type, or is not allowed.
    BadRequest,
    /// The frame is larger than 64 KiB (or a binary frame was sent).
    FrameTooLarge,
    /// The `join` asked for a protocol version the server does not speak.
    UnsupportedVersion,
    /// The token is malformed or its signature does not verify.
    InvalidToken,
    /// The token has expired.
    TokenExpired,
    /// The token is valid but for another room than the one asked for.
    WrongRoom,
    /// The message is not allowed in the connection's current state (e.g. `offer` before `join`).
    InvalidState,
    /// The participant's role does not allow this (e.g. a viewer publishing).
    Forbidden,
    /// The SDP could not be parsed or negotiated.
    InvalidSdp,
    /// The ICE candidate could not be parsed or applied.
    InvalidCandidate,
    /// A track id that this participant does not own or that does not exist.
    UnknownTrack,
    /// A participant id that is not in the room.
    UnknownParticipant,
    /// Too many messages per second on this connection.
    RateLimited,
    /// A configured limit (participants per room, tracks per participant, ...) was reached.
    LimitExceeded,
    /// The server is shutting down and accepts no new joins.
    ServerShuttingDown,
    /// An unexpected server-side failure; the message says more.
    Internal,
    /// An operator refused this site's entry from the lobby.
    Refused,
    /// The invitation is for a site that is not (or no longer) invited, or for a rakor that does
    /// not exist.
    NotInvited,
    /// The rakor of this invitation has ended.
    SessionEnded,
    /// The invitation is not valid yet (links open 30 minutes before the start).
    NotYetValid,
    /// A `join.resume` for a session that no longer exists while the same identity is connected
    /// on another, newer connection: this older connection must not take its place.
    Replaced,
    /// The invitation link was revoked by an operator or replaced by a newer one.
    LinkRevoked,
    /// An operator banned this identity from the room.
    Banned,
    /// The site waited in the lobby longer than the server allows (`limits.lobby_max_wait`)
    /// without an operator's decision; it may join again to wait again.
    LobbyTimeout,
    /// A message's content is over its limit (`chat.text` over 2,000 characters).
    TooLarge,
    /// Another participant is presenting (one screen share at a time): the screen track was
    /// not published. A host's screen share takes over instead.
    PresentationActive,
    /// A node of a cluster (`cluster.redis_url`) cannot place the room: Redis cannot be
    /// reached and the room does not live on this node. Try again later (or another node).
    ClusterUnavailable,
}

impl ErrorCode {
    /// Whether the server closes the connection after sending this error.
    pub fn is_fatal(self) -> bool {
        matches!(
            self,
            ErrorCode::UnsupportedVersion
                | ErrorCode::InvalidToken
                | ErrorCode::TokenExpired
                | ErrorCode::WrongRoom
                | ErrorCode::ServerShuttingDown
                | ErrorCode::Refused
                | ErrorCode::NotInvited
                | ErrorCode::SessionEnded
                | ErrorCode::NotYetValid
                | ErrorCode::Replaced
                | ErrorCode::LinkRevoked
                | ErrorCode::Banned
                | ErrorCode::LobbyTimeout
                | ErrorCode::ClusterUnavailable
        )
    }

    /// The wire name, e.g. `"invalid_token"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::WrongRoom => "wrong_room",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::InvalidSdp => "invalid_sdp",
            ErrorCode::InvalidCandidate => "invalid_candidate",
            ErrorCode::UnknownTrack => "unknown_track",
            ErrorCode::UnknownParticipant => "unknown_participant",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::ServerShuttingDown => "server_shutting_down",
            ErrorCode::Internal => "internal",
            ErrorCode::Refused => "refused",
            ErrorCode::NotInvited => "not_invited",
            ErrorCode::SessionEnded => "session_ended",
            ErrorCode::NotYetValid => "not_yet_valid",
            ErrorCode::Replaced => "replaced",
            ErrorCode::LinkRevoked => "link_revoked",
            ErrorCode::Banned => "banned",
            ErrorCode::LobbyTimeout => "lobby_timeout",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::PresentationActive => "presentation_active",
            ErrorCode::ClusterUnavailable => "cluster_unavailable",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A client frame that could not be turned into a [`crate::ClientMessage`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ParseError {
    pub code: ErrorCode,
    pub message: String,
}

impl ParseError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

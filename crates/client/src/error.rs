//! [`ClientError`]: everything that can go wrong for a headless participant.

use crate::assets::AssetError;
use rakor_proto::{ErrorCode, LeaveReason};

/// What failed, named by where it failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused the `join` (or sent a fatal error) with this code.
    #[error("rejected by the server: {code}: {message}")]
    Rejected { code: ErrorCode, message: String },
    /// The WebSocket could not be opened, or failed.
    #[error("websocket: {0}")]
    WebSocket(String),
    /// The server sent something the protocol does not allow at that point.
    #[error("signalling: {0}")]
    Signalling(String),
    /// The local WebRTC stack failed (SDP, ICE, tracks).
    #[error("webrtc: {0}")]
    WebRtc(#[from] webrtc::error::Error),
    /// An embedded media asset could not be parsed (a build problem, not a runtime one).
    #[error("asset: {0}")]
    Asset(#[from] AssetError),
    /// Waiting for something took longer than allowed; the text says what and what was seen.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The session has ended (server `leave`, closed socket, or a local `leave`).
    #[error("session closed{}", .reason.map(|r| format!(" ({r:?})")).unwrap_or_default())]
    Closed { reason: Option<LeaveReason> },
    /// The options are unusable (e.g. a URL that is not ws://).
    #[error("invalid options: {0}")]
    InvalidOptions(String),
}

//! Newtype identifiers used on the wire.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A participant's id in a room: `PA_` followed by 12 base-62 characters. New on every join,
/// kept across a resume.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ParticipantId(pub String);

/// A published track's id: `TR_` followed by 12 base-62 characters, unique in the server.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TrackId(pub String);

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for TrackId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ParticipantId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TrackId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

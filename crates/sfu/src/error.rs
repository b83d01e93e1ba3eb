//! Errors of the media core, and the wire error code a client gets for each ([`SfuError::code`]).

use rakor_proto::ErrorCode;

/// What failed in the media core.
#[derive(Debug, thiserror::Error)]
pub enum SfuError {
    #[error("cannot bind the media socket {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot bind the ICE-TCP listener {addr} (the media port number, for TCP; set media.ice_tcp = false to go without): {source}")]
    BindTcp {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("media socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("the media worker has stopped")]
    WorkerGone,
    #[error("room \"{0}\" is full")]
    RoomFull(String),
    #[error("the server hosts its maximum of {0} rooms")]
    TooManyRooms(usize),
    #[error("no room \"{0}\" is active")]
    UnknownRoom(String),
    #[error("no participant \"{0}\" in this room")]
    UnknownParticipant(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("this session was replaced by a newer connection of the same identity")]
    Replaced,
    #[error("nobody presents in room \"{0}\"")]
    NoPresentation(String),
}

impl SfuError {
    /// The wire error code a client gets for this failure (beside `SessionError::code` in
    /// `rakor-session` and `TokenError::code` in the server). Failures a client cannot cause or
    /// fix (the socket, the worker gone, a room that is not live) are `internal`.
    pub fn code(&self) -> ErrorCode {
        match self {
            SfuError::RoomFull(_) | SfuError::TooManyRooms(_) => ErrorCode::LimitExceeded,
            SfuError::ShuttingDown => ErrorCode::ServerShuttingDown,
            SfuError::Replaced => ErrorCode::Replaced,
            SfuError::UnknownParticipant(_) => ErrorCode::UnknownParticipant,
            SfuError::NoPresentation(_) => ErrorCode::InvalidState,
            SfuError::Bind { .. }
            | SfuError::BindTcp { .. }
            | SfuError::Io(_)
            | SfuError::WorkerGone
            | SfuError::UnknownRoom(_) => ErrorCode::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_wire_code() {
        let table = [
            (SfuError::RoomFull("r".into()), ErrorCode::LimitExceeded),
            (SfuError::TooManyRooms(3), ErrorCode::LimitExceeded),
            (SfuError::ShuttingDown, ErrorCode::ServerShuttingDown),
            (SfuError::Replaced, ErrorCode::Replaced),
            (
                SfuError::UnknownParticipant("p".into()),
                ErrorCode::UnknownParticipant,
            ),
            (SfuError::UnknownRoom("r".into()), ErrorCode::Internal),
            (SfuError::WorkerGone, ErrorCode::Internal),
            (
                SfuError::Io(std::io::Error::other("x")),
                ErrorCode::Internal,
            ),
        ];
        for (error, code) in table {
            assert_eq!(error.code(), code, "{error}");
        }
    }
}

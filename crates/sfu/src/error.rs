//! Errors of the media core.

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
}

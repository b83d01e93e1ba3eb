//! A byte stream of any transport (plain TCP, TLS) as one type, so that the one-port demux can hand
//! an accepted connection to HTTP, ICE-TCP or TURN without knowing how it arrived, and the TURN
//! server can serve plain-TCP and TLS streams with the same code.

use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};

/// Any bidirectional byte stream that can move between tasks.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> ByteStream for T {}

/// A boxed [`ByteStream`]: the demux's hand-off type.
pub type BoxedStream = Box<dyn ByteStream>;

/// How a TURN stream reached the server (for logs, metrics and the allocation's transport).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnTransport {
    /// TURN over plain TCP (RFC 6062 framing: STUN messages and ChannelData on the stream).
    Tcp,
    /// TURN over TLS (`turns:`), already decrypted when it is handed over.
    Tls,
}

/// The receiver of TURN streams: implemented by the TURN server, called by every listener that
/// recognises a TURN client (the TURN port itself, and the one-port demux after TLS). `serve`
/// must not block: it spawns the stream's task and returns.
pub trait TurnStreams: Send + Sync + 'static {
    fn serve(&self, stream: BoxedStream, peer: SocketAddr, transport: TurnTransport);
}

/// The shared handle the listeners hold (`None` where TURN is disabled).
pub type SharedTurnStreams = Arc<dyn TurnStreams>;
